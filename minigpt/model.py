"""The GPT-2 model: embeddings → pre-LayerNorm transformer blocks → final LayerNorm → tied LM head.

Where it sits: `ids → GPT (wte + wpe → blocks → ln_f → lm_head) → logits`. Parameter names follow
OpenAI / Hugging Face (`wte`, `wpe`, `h`, `ln_1`, `attn.c_attn`, ...), so loading GPT-2's weights is
a key-for-key copy (`minigpt/checkpoint.py`). Shapes use B = batch, T = time (tokens),
C = n_embd, H = n_head, D = head_dim = C / H, V = vocab_size.

The KV cache (`minigpt/kv_cache.py`) plugs into attention: during generation each layer writes
its new keys/values into the cache and attends over everything cached so far. The inputs are
checked before the computation, in `minigpt/input_checks.py`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import os
from typing import TypeVar, cast

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint
from einops import rearrange
from torch.nn.attention import SDPBackend, sdpa_kernel

from minigpt.chunked_loss import chunked_lm_loss
from minigpt.checks import check_rate
from minigpt.config import GPTConfig
from minigpt.kv_cache import KVCache, LayerKV
from minigpt.linear import Linear  # nn.Linear, faster for inference on x86 CPUs
# The inputs' checks (minigpt/input_checks.py). IGNORE_INDEX = -100: a target the loss skips, as in HF.
from minigpt.input_checks import IGNORE_INDEX, check_forward_args, check_inputs, default_positions


def _attention_backend() -> contextlib.AbstractContextManager:
    """SDPA's math backend while forward-mode AD or a torch.func transform watches the call, else
    SDPA's own pick. The fused kernels it picks (flash attention, on a CPU too) have no forward-mode
    derivative (torch.func.jvp, jacfwd, hessian, fwAD.dual_level) and no derivative of their own
    backward; the math backend is plain matmuls and a softmax, which have both. Double backward
    through plain autograd (create_graph=True) cannot be seen from here: the README gives the
    `sdpa_kernel(SDPBackend.MATH)` to wrap it in."""
    if torch.compiler.is_compiling():  # the compiler sees and differentiates the ops itself
        return contextlib.nullcontext()
    # forward_ad has no public query for its level (minigpt/linear.py reads it the same way).
    if fwAD._current_level >= 0 or torch._C._are_functorch_transforms_active():
        return sdpa_kernel(SDPBackend.MATH)
    return contextlib.nullcontext()


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where each token sees only itself and earlier tokens.

    Padding: a batch of prompts of different lengths is left-padded for generation, and the
    caller's `attn_mask` hides the pads (minigpt/prefill_decode.py: `prefill_mask`, with each
    row's positions from `positions_from_mask`). A right-padded batch (classification,
    minigpt/classifier.py) needs no mask: causally, a real token never sees the pads after it.
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.c_attn = Linear(config.n_embd, 3 * config.n_embd)  # q, k, v in one matmul
        self.c_proj = Linear(config.n_embd, config.n_embd)  # mixes the heads back together
        # A rate, not a module: SDPA (F.scaled_dot_product_attention) drops attention weights itself.
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, layer_cache: LayerKV | None = None, input_pos: torch.Tensor | None = None,
                attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        # One matmul makes q, k and v side by side: (B, T, 3C) = (B, T, [q | k | v]). Split it
        # into the three, and each C into H heads of D dims; each head attends independently.
        q, k, v = rearrange(self.c_attn(x), "b t (three h d) -> three b h t d", three=3, h=self.n_head)  # 3 × (B, H, T, D)
        if layer_cache is not None:
            # Generation: store this call's k/v in the cache (minigpt/kv_cache.py).
            k_all, v_all = layer_cache.update(input_pos, k, v)  # (B, H, max_len, D)
            if attn_mask is not None:
                # Attend over the first S cached slots, S = the mask's width (B, 1, T, S): the
                # eager loop passes only the slots filled so far, a compiled step all of them.
                S = attn_mask.size(-1)
                k, v = k_all[:, :, :S], v_all[:, :, :S]  # (B, H, S, D)
            # No mask: a prefill of unpadded prompts into an empty cache, whose keys are exactly
            # this call's k, v, so plain causal attention over them is right (and fastest).
        # Attention itself: softmax(q kᵀ / √D + mask) v. Each query's weights over the keys it may
        # see, then the weighted sum of their values. Why √D: a dot product of two D-dim vectors of
        # unit-variance entries has std √D, and larger scores would saturate the softmax (one key
        # takes all the weight, and its gradient vanishes); divided, the scores are at unit scale.
        # With no mask, SDPA's `is_causal` builds the lower-triangular mask itself (and picks a
        # fused kernel). Its triangle is anchored top-left, which is only right when queries and
        # keys start at the same position, so with a cache the caller passes an explicit mask.
        with _attention_backend():  # the math backend under forward-mode AD and torch.func
            y = F.scaled_dot_product_attention(
                q, k, v,
                attn_mask=attn_mask,
                dropout_p=self.dropout if self.training else 0.0,
                is_causal=attn_mask is None,
            )  # (B, H, T, D)
        y = rearrange(y, "b h t d -> b t (h d)")  # (B, T, C): heads side by side again
        return self.resid_dropout(self.c_proj(y))

    def extra_repr(self) -> str:
        # repr(GPT) shows resid_dropout as a module; the attention weights' rate is a float (SDPA's).
        return f"n_head={self.n_head}, dropout={self.dropout}"


class MLP(nn.Module):
    """Position-wise feed-forward: widen to mlp_width (4 × C unless n_inner), GELU, project back."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = Linear(config.n_embd, config.mlp_width)
        self.c_proj = Linear(config.mlp_width, config.n_embd)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # GPT-2 was trained with the tanh approximation of GELU; the exact erf form differs by
        # up to ~5e-4 per activation, enough to break logit parity with the released weights.
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, layer_cache: LayerKV | None = None, input_pos: torch.Tensor | None = None,
                attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        # Normalising *before* each sublayer (GPT-2's change from the original transformer) keeps
        # the residual stream x an untouched sum, which makes deep stacks train stably.
        x = x + self.attn(self.ln_1(x), layer_cache, input_pos, attn_mask)
        return x + self.mlp(self.ln_2(x))


SomeGPT = TypeVar("SomeGPT", bound="GPT")  # GPT or a subclass: `MyGPT.from_pretrained(...)` is typed as a MyGPT


class GPT(nn.Module):
    """GPT-2: token ids (B, T) → logits (B, T, V); `hidden_states` stops before the LM head."""

    def __init__(self, config: GPTConfig) -> None:
        """A model of `config`'s shape with GPT-2's random init (`GPT.from_pretrained` loads weights)."""
        super().__init__()
        if not isinstance(config, GPTConfig):  # a dict would fail as "'dict' object has no attribute 'n_embd'"
            raise TypeError(f"GPT takes a GPTConfig, got {type(config).__name__}: GPTConfig(**fields), or "
                            "GPTConfig.from_hf_dict(d) for a config.json's dict")
        # The model's own copy: set_dropout changes it, not a config the caller may build other models from.
        self.config = dataclasses.replace(config)
        # Under `with torch.device("meta")` (load_gpt) the model is shapes only. Handing
        # nn.Embedding an empty weight there skips its random init, whose meta-device version
        # imports torch's compiler (~1.5 s) for nothing; a real model keeps torch's init order.
        meta = torch.empty(()).is_meta

        def embedding(n: int) -> nn.Embedding:
            return nn.Embedding(n, config.n_embd, _weight=torch.empty(n, config.n_embd) if meta else None)

        self.transformer = nn.ModuleDict(dict(
            wte=embedding(config.vocab_size),  # token id → vector
            wpe=embedding(config.n_positions),  # position → vector
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList(Block(config) for _ in range(config.n_layer)),
            ln_f=nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon),
        ))
        self.lm_head = Linear(config.n_embd, config.vocab_size, bias=False)
        self.tie_weights()
        # load_state_dict(assign=True), the meta-device load, gives wte and lm_head a new Parameter
        # each: tied again after a load that found them tied (functions, not bound methods: the
        # model still pickles). A head someone untied keeps what the load gave it.
        self.register_load_state_dict_pre_hook(_note_tie_before_load)
        self.register_load_state_dict_post_hook(_tie_after_load)
        # Activation (gradient) checkpointing: see hidden_states. Off by default; training turns
        # it on with --gradient-checkpointing (TrainConfig).
        self.gradient_checkpointing = False
        # The loss computed a chunk of positions at a time, never holding all the logits: see
        # minigpt/chunked_loss.py. Off by default; training turns it on with --chunked-loss.
        self.chunked_loss = False
        if not meta:
            self.init_weights()

    # ---- weight tying and initialisation ------------------------------------------------------

    def tie_weights(self) -> None:
        """Make lm_head's weight wte's own Parameter. Weight tying: reading a token in (wte) and
        scoring it out (lm_head) share one matrix, which saves V × C parameters (38M of the 124M)
        and is how GPT-2 was trained. The model keeps the tie itself: `__init__` ties, and so do a
        `load_state_dict` and a `to_empty` of a tied model (assign=True, the meta-device load, would
        leave two Parameters, counted twice, stepped twice by AdamW). Call it after replacing
        `transformer.wte.weight` yourself. To untie (a head of its own, trained apart):
        `model.lm_head.weight = nn.Parameter(model.lm_head.weight.detach().clone())`."""
        self.lm_head.weight = self.transformer.wte.weight

    # The tie, said as transformers' models say it, for PEFT applied to this GPT directly: with
    # GPTConfig.to_dict's tie_word_embeddings, these are what PEFT reads to find what is tied to
    # the input embedding. Without them, merge_and_unload of trainable_token_indices on wte (or of
    # an adapter on lm_head) writes its change into the one matrix both use, and the merged model
    # computes another function.

    @property
    def _tied_weights_keys(self) -> dict[str, str]:
        """transformers 5's form (tied parameter → the parameter it is), said only while lm_head's
        weight is wte's: PEFT takes it as given, and would tie a head you untied to wte's changes.
        Compared through the modules' parameters, as PEFT may have wrapped either in its own module."""
        wte = {id(p) for p in self.transformer.wte.parameters()}
        tied = any(id(p) in wte for p in self.lm_head.parameters())
        return {"lm_head.weight": "transformer.wte.weight"} if tied else {}

    def get_input_embeddings(self) -> nn.Embedding:
        """The token embedding, `transformer.wte` (transformers' accessor, which PEFT calls)."""
        return self.transformer.wte

    def get_output_embeddings(self) -> nn.Module:
        """The LM head, `lm_head`, tied to wte unless you untied it (transformers' accessor)."""
        return self.lm_head

    def _apply(self, fn, recurse: bool = True) -> "GPT":
        # Every move or conversion (.to, .to_empty, .cuda, .half) runs through here. Those that cannot
        # convert a Parameter in place (meta → real: `to_empty`) make a new one for each module that
        # holds it, wte's and lm_head's: tie them again. Only if they were tied: a head someone untied
        # and trained would otherwise be lost without a word.
        tied = self.lm_head.weight is self.transformer.wte.weight
        super()._apply(fn, recurse)
        if tied:
            self.tie_weights()
        return self

    def init_weights(self) -> None:
        """GPT-2's random initialisation, in place: N(0, initializer_range) for the matmuls and
        embeddings, zero biases, LayerNorms at gain 1 and bias 0, the residual projections scaled
        down (`_scale_residual_projections`). `__init__` calls it, except on the meta device (shapes
        only): a model built there and moved with `to_empty(device=...)` holds uninitialised memory
        until it loads weights or calls this."""
        self.apply(self._init_module)
        self._scale_residual_projections()

    def _init_module(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def _scale_residual_projections(self) -> None:
        # Each block adds two outputs (attn, mlp) to the residual stream, 2·n_layer in all, and
        # variances add. GPT-2 shrinks the projections that write into it by 1/sqrt(2·n_layer), so
        # the 2·n_layer writes together add about the same variance whatever the depth: at init a
        # 4-layer and a 24-layer model end with the same residual scale (unscaled, the deeper
        # one's would be ~2.5× larger, √(24/4), and deeper models would start ever further off).
        std = self.config.initializer_range / math.sqrt(2 * self.config.n_layer)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=std)

    # ---- the config against the modules ------------------------------------------------------

    def check_config(self) -> None:
        """Refuse a model whose config no longer describes its modules: blocks appended or removed
        (depth up-scaling), a position table resized, heads changed on one side only. The forward
        runs the blocks and tables it holds, while the KV cache, the partial fine-tune strategy
        and a save read the config, so a disagreement makes them differ without a word, or fail
        far from the cause. The forward (without a cache), `KVCache.for_model`, `apply_strategy`
        and `save_pretrained` call it. A swapped-in attention module of another class is not checked."""
        c = self.config
        n_blocks = len(self.transformer.h)
        if n_blocks != c.n_layer:
            raise ValueError(f"model.config.n_layer is {c.n_layer} but model.transformer.h holds {n_blocks} blocks: "
                             f"set model.config.n_layer = {n_blocks}")
        # The table's rows as its weight has them (a cropped weight keeps the old num_embeddings);
        # a wpe swapped for a module without a table (no positions, rotary ones) is not checked.
        table = getattr(self.transformer.wpe, "weight", None)
        n_rows = table.shape[0] if isinstance(table, torch.Tensor) and table.dim() == 2 else c.n_positions
        if n_rows != c.n_positions:
            raise ValueError(f"model.config.n_positions is {c.n_positions} but model.transformer.wpe holds {n_rows} "
                             f"positions: set model.config.n_positions = {n_rows} (or give wpe {c.n_positions} rows)")
        for i, block in enumerate(self.transformer.h):
            attn = getattr(block, "attn", None)  # a block of another class may have none
            if isinstance(attn, CausalSelfAttention) and attn.n_head != c.n_head:
                raise ValueError(f"model.config.n_head is {c.n_head} but model.transformer.h[{i}].attn.n_head is "
                                 f"{attn.n_head}: the two must agree (the KV cache is shaped by the config): set "
                                 f"model.config.n_head = {attn.n_head}, or every attention module's n_head to {c.n_head}")

    # ---- forward ------------------------------------------------------------------------------

    def hidden_states(
        self,
        idx: torch.Tensor,
        *,
        position_ids: torch.Tensor | None = None,
        kv_cache: KVCache | None = None,
        input_pos: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Token ids (B, T) → final hidden states (B, T, C), after `ln_f`.

        Without a cache, every position attends causally to the ones before it. With a cache
        (generation), each layer writes this call's keys and values at the cache slots `input_pos`,
        and each query attends over the cached slots `attn_mask` (B, 1, T, S) lets it see: the
        prompt in one call (prefill), then one token per call (decode). `position_ids` (B, T) give
        each token's position. What each argument must be: minigpt/input_checks.py's `check_inputs`
        (with a cache, `check_cache_call`); their defaults: `default_positions`.
        """
        idx = check_inputs(self, idx, position_ids, kv_cache, input_pos, attn_mask)  # as int64
        if position_ids is None:
            # Each token's position is its cache slot (input_pos), as transformers takes it from its
            # cache position: right for unpadded rows (left-padded ones pass theirs). No cache: 0 .. T-1.
            position_ids = default_positions(self, idx, kv_cache, input_pos)  # (1, T)
        x = self.transformer.wte(idx) + self.transformer.wpe(position_ids)  # (B, T, C)
        x = self.transformer.drop(x)
        # Backward needs what each block computed on the way (LayerNorm outputs, q, k, v, the
        # 4C-wide MLP activations, dropout masks...): over a dozen (B, T, C)-sized tensors per
        # block, far more than the weights at long contexts. Checkpointing keeps only each block's
        # input and runs the block's forward again during backward: one (B, T, C) tensor per block,
        # for one more forward pass (about a third more compute). Non-reentrant checkpointing
        # restores the RNG state before it recomputes, so dropout draws the same masks again.
        recompute = self.gradient_checkpointing and self.training and torch.is_grad_enabled() and kv_cache is None
        for i, block in enumerate(self.transformer.h):
            if recompute:
                x = torch.utils.checkpoint.checkpoint(block, x, None, input_pos, attn_mask, use_reentrant=False)
            else:
                x = block(x, kv_cache.layer(i) if kv_cache is not None else None, input_pos, attn_mask)
        # Pre-LN blocks normalise what each sublayer reads, never the stream itself, whose scale
        # grows through the blocks (see _scale_residual_projections): one last LayerNorm brings it
        # to the scale the LM head (and a classifier's score) reads.
        return self.transformer.ln_f(x)  # (B, T, C)

    def forward(
        self,
        idx: torch.Tensor | None = None,  # required: None only so that a missing idx (HF's input_ids=) gets a clear error
        targets: torch.Tensor | None = None,
        *,
        logits_to_keep: int = 0,
        position_ids: torch.Tensor | None = None,
        kv_cache: KVCache | None = None,
        input_pos: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
        **unexpected,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Token ids (B, T) → (logits (B, T, V), loss).

        `loss` is the mean cross-entropy of `targets` (B, T) when given (positions labelled
        IGNORE_INDEX = -100 are skipped, as in HF), else None. With `chunked_loss` on, a call with
        targets returns (None, loss): the logits are never all held at once. Note that targets are the *next*
        tokens: callers shift, so `targets[:, t]` is the token that should follow `idx[:, t]`.
        `logits_to_keep=k` computes logits only for the last k positions (generation needs just
        the last one, and the V-wide LM head is the most expensive matmul for short inputs).
        `position_ids`, `kv_cache`, `input_pos` and `attn_mask` are generation's KV-cache
        arguments (minigpt/prefill_decode.py), passed on to `hidden_states`, which says where the
        rules for each are.
        """
        targets = check_forward_args(self, idx, targets, logits_to_keep, unexpected)  # as int64, or None
        x = self.hidden_states(idx, position_ids=position_ids, kv_cache=kv_cache, input_pos=input_pos, attn_mask=attn_mask)
        if targets is not None and self.chunked_loss:
            return None, chunked_lm_loss(self.lm_head, x, targets, IGNORE_INDEX)
        if logits_to_keep:
            x = x[:, -logits_to_keep:]  # (B, k, C)
        logits = self.lm_head(x)  # (B, T, V), or (B, k, V)
        loss = None
        if targets is not None:
            # One row per position: (B·T, V) scores against (B·T,) targets.
            loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX)
        return logits, loss

    def set_dropout(self, p: float) -> None:
        """Change the dropout rate everywhere GPT-2 applies it (embeddings, attention weights, both
        residual branches), e.g. to fine-tune a checkpoint at another rate than it was trained at:
        every `nn.Dropout` the model holds, a swapped-in module's too, and each attention's SDPA
        rate. Only the model's own: dropout that LoRA adapters add keeps its rate."""
        p = check_rate("dropout", p)  # a plain float, as GPTConfig keeps it: a NumPy rate would fail save_pretrained's JSON
        self.config.dropout = p
        # Every dropout module, by type rather than by name, so a module swapped in (a gated MLP)
        # follows too; but not those inside a LoRA adapter (minigpt/lora.py's or PEFT's: it has a lora_A).
        adapters = {d for m in self.modules() if hasattr(m, "lora_A") for d in m.modules() if isinstance(d, nn.Dropout)}
        for module in self.modules():
            if isinstance(module, nn.Dropout) and module not in adapters:
                module.p = p
            elif isinstance(getattr(module, "dropout", None), float):
                module.dropout = p  # a rate, not a module: SDPA's, on the attention weights (an attention of any class)

    def num_params(self, exclude_embeddings: bool = False) -> int:
        """Parameter count, with the tied wte/lm_head matrix counted once. `exclude_embeddings`
        drops only wpe (a lookup): wte stays, as it is also the LM head's matmul (nanoGPT's count)."""
        n = sum(p.numel() for p in self.parameters())  # .parameters() already yields tied tensors once
        if exclude_embeddings:
            n -= self.transformer.wpe.weight.numel()
        return n

    # ---- checkpoints (Hugging Face layout; the logic lives in minigpt/checkpoint.py) ----------

    @classmethod
    def from_pretrained(
        cls: type[SomeGPT], path: str | os.PathLike[str], dtype: torch.dtype | str | None = None,
        device: torch.device | str | None = None,
    ) -> SomeGPT:
        """Load a Hugging Face GPT-2 directory (`config.json` + `model.safetensors`, sharded or not),
        or OpenAI's GPT-2 by size name ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"), downloaded
        (0.5–6 GB) into checkpoints/NAME ($XDG_CACHE_HOME/minigpt/NAME, else ~/.cache/minigpt/NAME, for
        an installed wheel) the first time unless the Hugging Face cache has it (minigpt/download.py's
        `find_gpt2`); the Hub's "openai-community/gpt2" names are taken too. `dtype` (torch.bfloat16 or
        "bfloat16"; None keeps the file's) and `device` ("cuda"; "auto": the GPU if there is one)
        are optional. Called on a subclass, it builds that class."""
        from minigpt.checkpoint import load_gpt

        return cast(SomeGPT, load_gpt(path, dtype=dtype, device=device, model_class=cls))  # it builds cls, typed as GPT

    def save_pretrained(self, path: str | os.PathLike[str]) -> None:
        """Write `config.json` + `model.safetensors` so `GPT2LMHeadModel.from_pretrained` opens it."""
        from minigpt.checkpoint import save_gpt

        save_gpt(self, path)


def same_matrix(head: torch.Tensor, wte: torch.Tensor) -> bool:
    """Whether a state's lm_head.weight is its wte.weight, as a tied model's is: the same memory
    (state_dict() detaches each entry apart), or equal values (a file's explicit copy; a NaN
    equal to a NaN). Meta tensors have no values to compare: taken as tied."""
    if head.shape != wte.shape:
        return False
    if head.is_meta or wte.is_meta or (head.data_ptr() == wte.data_ptr() and head.stride() == wte.stride()):
        return True
    return torch.allclose(head.to(wte), wte, rtol=0, atol=0, equal_nan=True)


def _note_tie_before_load(model: GPT, state_dict: dict, prefix: str, *_) -> None:
    """load_state_dict's pre-hook: note whether lm_head is tied to wte, for `_tie_after_load`. A
    tied model refuses a state whose head differs from its wte (an untied model's): loading both
    into the one matrix would keep one of the two without a word. It also refuses transformers'
    own state dict (`_refuse_conv1d_layout`). Both jobs live in this one hook because a pickled
    model names its hooks and finds them by name when unpickled: a model pickled with this hook
    registered gets both (a second hook would be missing from it); renaming it breaks those pickles."""
    _refuse_conv1d_layout(model, state_dict, prefix)
    model._tied_before_load = model.lm_head.weight is model.transformer.wte.weight
    head, wte = state_dict.get(prefix + "lm_head.weight"), state_dict.get(prefix + "transformer.wte.weight")
    if model._tied_before_load and head is not None and wte is not None and not same_matrix(head, wte):
        raise ValueError("the state's lm_head.weight is not its wte.weight (an untied head), but this model "
                         "ties them: untie it first (GPT.tie_weights' docstring)")


def _refuse_conv1d_layout(model: GPT, state_dict: dict, prefix: str) -> None:
    """Refuse a state dict in transformers' layout (GPT2LMHeadModel(...).state_dict()): its Conv1D
    weights are stored (in, out), the transpose of ours. load_state_dict alone would list only the
    three that are not square as size mismatches; attn.c_proj (C, C) loads transposed without a word,
    so transposing just the listed three gives "All keys matched" and wrong logits. A block's
    attn.c_attn.weight of shape (C, 3C), where ours is (3C, C), gives the layout away."""
    c = model.config.n_embd
    for key, value in state_dict.items():
        if (key.startswith(prefix + "transformer.h.") and key.endswith(".attn.c_attn.weight")
                and tuple(getattr(value, "shape", ())) == (c, 3 * c)):
            from minigpt.checkpoint import CONV1D_SUFFIXES  # here: minigpt.checkpoint imports this module

            raise ValueError(f"{key} has shape {tuple(value.shape)}, not ({3 * c}, {c}): this is transformers' GPT-2 "
                             f"state dict, whose four Conv1D weights per block ({', '.join(CONV1D_SUFFIXES)}) are "
                             "stored transposed, (in, out). Load it with GPT.from_pretrained(folder) after "
                             "hf_model.save_pretrained(folder), or transpose all four (.t()) in every block")


def _tie_after_load(model: GPT, incompatible_keys) -> None:
    """load_state_dict's post-hook: tie lm_head to wte again if they were tied before the load
    (GPT.tie_weights says why). A head someone untied and trained would otherwise be replaced
    by wte without a word, and a resumed run would hold one Parameter fewer than its optimizer.
    (A model pickled before the pre-hook existed has no note: it was tied, as every model then.)"""
    if getattr(model, "_tied_before_load", True):
        model.tie_weights()
