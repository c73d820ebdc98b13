"""Checking GPT's inputs before the computation: every error names the argument and what it must be.

Where it sits: minigpt/model.py's `GPT.forward` calls `check_forward_args` first, then
`GPT.hidden_states` calls `check_inputs` (and `default_positions` when no position_ids are given)
before the embeddings: `model(idx, ...) → check_forward_args → check_inputs → wte + wpe → blocks`.
Without these, a wrong input fails deep inside torch without a name ("index out of range", on a
GPU a device-side assert that breaks the CUDA context), or runs and computes something else.

What is checked: the model's config against its modules (`GPT.check_config`, without a cache);
the ids' type and shape (integer (B, T)) and, without a cache, their range (`check_ids`); targets
(`checked_targets`); the mask's dtype and shape, and that it is causal; position ids against the
context; a call with a KV cache, against the contract `check_cache_call` states in full.
Shapes are always checked (the host knows them). Values only where they can be read without
cost (`_values_readable`): on a CPU, outside torch.compile and vmap; on a GPU the callers check
(generate's prompts, the token files train reads).

What it does not check: the ids of a call with a cache (`check_inputs` says why).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # for the type hints only: minigpt/model.py imports this module
    from minigpt.kv_cache import KVCache
    from minigpt.model import GPT

IGNORE_INDEX = -100  # a target the loss skips (padding, prompt or context tokens), as in HF and cross_entropy


def _values_readable(t: torch.Tensor) -> bool:
    """Whether a check may read `t`'s values on the host. Only on a CPU: on a GPU it would make
    every call wait for the device (there the callers check: generate's prompts, the token files
    train reads). Not under torch.compile, whose graph would break on it (fullgraph=True fails),
    nor for a tensor that torch.func's vmap batches: it holds a batch of values where the check
    reads one (`.item()` and boolean-mask indexing fail on it). Under grad or jvp alone the checks run."""
    return t.device.type == "cpu" and not torch.compiler.is_compiling() and not _batched_by_vmap(t)


def _batched_by_vmap(t: torch.Tensor) -> bool:
    """Whether vmap batches `t` at some level of torch.func's wrappers (grad inside vmap wraps the
    batched tensor again: each transform adds its own)."""
    functorch = torch._C._functorch
    while functorch.is_functorch_wrapped_tensor(t):
        if functorch.is_batchedtensor(t):
            return True
        t = functorch.get_unwrapped(t)
    return False


def _as_long_ids(ids: torch.Tensor, name: str) -> torch.Tensor:
    """Token ids of any integer dtype as int64, which the embedding, the checks and cross_entropy
    all take (uint16, minigpt's own .bin token files, fails in all three), or a TypeError naming
    `name`: float ids would be truncated, bool ones are no ids."""
    if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor of token ids (B, T), got {ids.dtype}")
    return ids.long()


# What GPT.forward takes instead of the Hugging Face keywords people reach for first.
HF_FORWARD_KEYWORDS = {
    "input_ids": "pass the ids positionally, model(ids), as GPT.forward's idx",
    "attention_mask": "right-pad the batch (causal attention never looks at the pads after a real token); for a "
                      "left-padded one, pass position_ids=positions_from_mask(mask) and attn_mask=prefill_mask(mask) "
                      "(minigpt.prefill_decode), or use minigpt.generate, which takes an attention_mask",
    "labels": "targets are already shifted by one, model(ids[:, :-1], targets=ids[:, 1:]), with -100 where no loss is wanted",
    "past_key_values": "use minigpt.generate, which keeps a KV cache itself (minigpt/kv_cache.py)",
    "inputs_embeds": "for gradients with respect to the embeddings, register a forward hook on model.transformer.wte "
                     "that returns out.detach().requires_grad_() and read that tensor's .grad after backward",
    "output_hidden_states": "register forward hooks on model.transformer.h[i], whose outputs are transformers' "
                            "hidden_states[i + 1] (its last is taken after ln_f: model.hidden_states(ids))",
}


def unexpected_forward_keywords(unexpected: dict) -> str:
    """GPT.forward's TypeError for keywords it does not take: what it does take, and for
    transformers' keywords, what to do instead."""
    names = ", ".join(map(repr, unexpected))
    hints = "".join(f"; {name}: {HF_FORWARD_KEYWORDS[name]}" for name in unexpected if name in HF_FORWARD_KEYWORDS)
    return (f"GPT.forward() got unexpected keyword argument(s) {names}. It takes idx (B, T), targets (B, T) "
            f"(the next tokens, already shifted), logits_to_keep, and generation's KV-cache arguments position_ids, kv_cache, input_pos, attn_mask{hints}")


def check_forward_args(model: GPT, idx: torch.Tensor | None, targets: torch.Tensor | None, logits_to_keep: int,
                       unexpected: dict) -> torch.Tensor | None:
    """`GPT.forward`'s own arguments: no keyword it does not take, idx given, logits_to_keep ≥ 0,
    targets (`checked_targets`) only with every position's logits and one per position of idx.
    Returns the targets as int64, or None. idx itself is checked with `hidden_states`' inputs."""
    if unexpected or idx is None:  # transformers' keywords (input_ids, attention_mask, labels, ...): say what to use here
        raise TypeError(unexpected_forward_keywords(unexpected) if unexpected
                        else "GPT.forward() needs idx, the token ids (B, T): model(ids)")
    if logits_to_keep < 0:  # x[:, --k:] would silently keep the wrong positions
        raise ValueError(f"logits_to_keep must be ≥ 0 (0: every position), got {logits_to_keep}")
    if targets is not None:
        targets = checked_targets(model, targets)
        if logits_to_keep:  # the loss scores every position
            raise ValueError(f"targets need every position's logits: leave logits_to_keep at 0 when passing targets "
                             f"(got logits_to_keep={logits_to_keep})")
        if targets.shape != idx.shape:
            raise ValueError(f"targets must have idx's shape {tuple(idx.shape)}, one per position, got {tuple(targets.shape)}")
    return targets


def check_ids(model: GPT, ids: torch.Tensor, size: str, what: str, hint: str) -> None:
    """Ids outside [0, config.<size>) would fail inside an embedding as a bare "index out of
    range" (on a GPU, as a device-side assert that breaks the CUDA context). Checked where the
    values can be read (`_values_readable`)."""
    if not ids.numel() or not _values_readable(ids):
        return
    lo, hi = (int(v) for v in torch.aminmax(ids))
    if lo < 0 or hi >= getattr(model.config, size):
        raise ValueError(f"{what} must be in [0, {size}={getattr(model.config, size)}) for this model, "
                         f"got {lo if lo < 0 else hi} ({hint})")


def checked_targets(model: GPT, targets: torch.Tensor) -> torch.Tensor:
    """Targets as cross_entropy takes them (int64), after the checks it would fail without naming
    them ("expected scalar type Long", "Target 64 is out of bounds"; on a GPU a device-side assert)."""
    if not isinstance(targets, torch.Tensor):
        raise TypeError(f"targets must be an integer tensor of token ids (B, T), got {type(targets).__name__}")
    targets = _as_long_ids(targets, "targets")
    if targets.numel() and _values_readable(targets):
        V = model.config.vocab_size
        bad = targets[(targets != IGNORE_INDEX) & ((targets < 0) | (targets >= V))]
        if bad.numel():
            raise ValueError(f"targets must be token ids in [0, vocab_size={V}) or {IGNORE_INDEX} (a position not "
                             f"scored), got {int(bad[0])}")
    return targets


def check_cache_call(model: GPT, idx: torch.Tensor, kv_cache: KVCache, input_pos: torch.Tensor | None,
                     attn_mask: torch.Tensor | None) -> None:
    """A call with a KV cache, checked against its contract (stated here in full; the docstrings
    of `GPT.hidden_states` and `GPT.forward`, and README, point here):

    - `kv_cache` fits the model (`KVCache.check_fits`) and holds one row per row of idx (B, T).
    - `input_pos` (T,), int64: the cache slots in [0, max_len) this call writes its k, v into.
    - `attn_mask` (B, 1, T, S), bool: which of the first S cached slots each query sees. It is
      causal by slot (the token written at slot input_pos[t] sees no later slot) and lets each
      token see its own. For T tokens after P cached ones (k draft tokens to verify) it is
      `prefill_mask(attention_mask)[:, :, P:]`, attention_mask (B, P + T) marking the real tokens
      (minigpt/prefill_decode.py). No mask only for a prefill into slots 0 .. T-1: attention then
      sees this call's keys alone.
    - `position_ids` (B, T) give each token's position; left-padded rows need them (their
      positions lag their slots: `positions_from_mask`). Not given: `input_pos` (`default_positions`).

    Unchecked, a wrong call fails inside index_copy_, or (a decode step with no mask) runs,
    attending to nothing cached. The cache's layout and the shapes are checked at every call (the
    host knows them); the slots' values and the mask's where they can be read (`_values_readable`).
    prefill_decode.py's callers always pass what is asked here."""
    kv_cache.check_fits(model)
    B, T = idx.shape
    if kv_cache.batch_size != B:
        raise ValueError(f"kv_cache holds {kv_cache.batch_size} rows, idx has {B}: one cache per batch "
                         f"(KVCache.for_model(model, {B}, max_len))")
    if not isinstance(input_pos, torch.Tensor) or input_pos.dtype != torch.long or input_pos.shape != (T,):
        got = f"{input_pos.dtype} of shape {tuple(input_pos.shape)}" if isinstance(input_pos, torch.Tensor) \
            else type(input_pos).__name__
        raise ValueError(f"with a kv_cache, input_pos must be the slots this call writes, an int64 tensor of shape "
                         f"({T},); got {got}")
    if attn_mask is not None and attn_mask.size(-1) > kv_cache.max_len:
        raise ValueError(f"attn_mask is {attn_mask.size(-1)} slots wide, the cache holds {kv_cache.max_len}")
    if not _values_readable(input_pos):
        return
    lo, hi = (int(v) for v in torch.aminmax(input_pos))
    if lo < 0 or hi >= kv_cache.max_len:
        raise ValueError(f"input_pos must be slots in [0, {kv_cache.max_len}) of this cache, got "
                         f"{lo if lo < 0 else hi}" + (": the cache is full" if lo >= 0 else ""))
    if attn_mask is None and not torch.equal(input_pos, torch.arange(T)):
        raise ValueError("a call past cache slot 0 needs attn_mask (B, 1, T, S), as decode_step passes it: without "
                         "one, attention sees only this call's keys (right for a prefill into slots 0 .. T-1)")
    if attn_mask is not None and hi >= attn_mask.size(-1):
        raise ValueError(f"attn_mask is {attn_mask.size(-1)} slots wide and hides slot {hi}, which this call "
                         "writes: a token must see itself")
    if attn_mask is not None and _values_readable(attn_mask):
        # As without a cache, the mask must be causal, here by slot: the token written at slot
        # input_pos[t] sees no later slot (a draft token its own later drafts, or stale slots).
        later = torch.arange(attn_mask.size(-1)) > input_pos[:, None]  # (T, S): slots after query t's
        seen = attn_mask[:, 0] & later  # (B, T, S)
        if seen.any():
            b, t, s = (int(i) for i in seen.nonzero()[0])
            raise ValueError(f"attn_mask lets the token at slot {int(input_pos[t])} (query {t}, row {b}) see slot {s}, "
                             "a later one: a token may see only its own slot and earlier ones. For T tokens "
                             "after P cached ones, pass prefill_mask(attention_mask)[:, :, P:], attention_mask "
                             "(B, P + T) marking the real tokens (unpadded: torch.ones(B, P + T))")


def check_inputs(model: GPT, idx: torch.Tensor, position_ids: torch.Tensor | None, kv_cache: KVCache | None,
                 input_pos: torch.Tensor | None, attn_mask: torch.Tensor | None) -> torch.Tensor:
    """`GPT.hidden_states`' inputs checked; returns the ids as int64."""
    # Without a cache only, so that decode steps stay cheap: KVCache.for_model runs it once when it
    # builds a cache. A cache built otherwise (KVCache(...), or for_model on another model with the
    # same config) meets only check_fits, which compares it with the layout the config gives, not the
    # config with the model's modules.
    if kv_cache is None:
        model.check_config()
    if not isinstance(idx, torch.Tensor):  # a list would fail as "'list' object has no attribute 'dim'"
        raise TypeError(f"idx must be a tensor of token ids (B, T), got {type(idx).__name__}: torch.tensor(ids)")
    idx = _as_long_ids(idx, "idx")
    if idx.dim() != 2:
        raise ValueError(f"idx must be token ids of shape (B, T), got shape {tuple(idx.shape)} "
                         "(one sequence: idx[None])")
    if attn_mask is not None:  # SDPA would broadcast a padding mask (B, T), or read a float one as added scores
        B, T = idx.shape
        if attn_mask.dtype != torch.bool or attn_mask.dim() != 4 or attn_mask.shape[1:3] != (1, T) \
                or attn_mask.size(0) not in (1, B):
            raise ValueError(f"attn_mask must be a bool tensor (B, 1, T, S): which keys each query may see, as "
                             f"prefill_mask(attention_mask) makes it; got {attn_mask.dtype} of shape "
                             f"{tuple(attn_mask.shape)} for idx of shape {(B, T)}")
    # Positions of another shape would broadcast (one position for every token), and positions past
    # the context fail in wpe as a bare "index out of range", a cache or not.
    if position_ids is not None:
        B, T = idx.shape
        if position_ids.dim() != 2 or position_ids.size(1) != T or position_ids.size(0) not in (1, B):
            raise ValueError(f"position_ids must be (B, T) or (1, T), each token's position, got shape "
                             f"{tuple(position_ids.shape)} for idx of shape {(B, T)}")
        check_ids(model, position_ids, "n_positions", "position_ids", "a position past the context")
    # With a cache, the call's slots and mask are checked, not its ids: generation checks its
    # prompts once and feeds back ids drawn from the vocabulary, and a check each decode step would
    # cost every step. A direct cached call with an id out of range fails in wte (an IndexError on a
    # CPU, a device-side assert on a GPU). Without a cache, the ids and the mask are checked.
    if kv_cache is not None:
        check_cache_call(model, idx, kv_cache, input_pos, attn_mask)
        return idx
    if input_pos is not None:  # slots of no cache: ignored, it would give model(idx)'s logits without a word
        raise ValueError("input_pos names the KV-cache slots a call writes, and there is no kv_cache: pass "
                         "kv_cache= to write one, or position_ids= to give the tokens other positions")
    check_ids(model, idx, "vocab_size", "token ids", "from another tokenizer? a pad id that is no token?")
    # Without a cache the mask replaces the causal one: it must hide every later token too.
    # Its values are read where they can be (`_values_readable`), as the ids'.
    if attn_mask is not None and (attn_mask.size(-1) != idx.size(1) or (
            _values_readable(attn_mask) and bool(attn_mask.triu(1).any()))):
        raise ValueError("attn_mask lets a token see later tokens: without a KV cache it replaces the causal "
                         "mask, so it must be causal (B, 1, T, T), as prefill_mask(attention_mask) makes it")
    return idx


def default_positions(model: GPT, idx: torch.Tensor, kv_cache: KVCache | None,
                      input_pos: torch.Tensor | None) -> torch.Tensor:
    """The position ids (1, T) of a call that gives none, checked against the context: with a
    cache the slots it writes, `input_pos` (a decode step's token is at its slot's position, not
    at 0), without one 0 .. T-1."""
    if kv_cache is not None:
        positions = input_pos[None]  # (1, T)
        check_ids(model, positions, "n_positions", "position_ids (with a kv_cache and none given: input_pos)",
                  "a position past the context")
        return positions
    T = idx.size(1)
    if T > model.config.n_positions:
        raise ValueError(f"sequence length {T} exceeds the model's context n_positions={model.config.n_positions}")
    return torch.arange(T, device=idx.device).unsqueeze(0)  # (1, T)
