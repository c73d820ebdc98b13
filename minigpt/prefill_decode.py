"""The two phases of inference: prefill the prompt, then decode one token at a time.

Where it sits: inside the `KV-cache decode loop` of the data flow (minigpt/generation.py), around
the model and its cache (minigpt/kv_cache.py):
`ids → [prefill → (sample → decode_step)*] → ids`.

1. `prefill` runs the whole prompt through the model in one pass (a big, parallel matmul) and
   fills the KV cache. Its time is the time to first token (TTFT).
2. `decode_step` feeds one new token per row, attending to everything cached. Each step reads
   every weight once to produce B tokens, so at small batch it is bound by memory bandwidth, not
   arithmetic; its time is the time per output token (TPOT).

`DecodeState` holds what the phases share (the cache, the readable slots, the positions), so a
loop only calls `prefill` once and `step` per token: the decode loop (minigpt/generation.py), beam
search (minigpt/beam_search.py) and `--explain` (minigpt/explain.py) each drive one.
`decode_step_for` gives the step compiled (torch.compile; a CUDA graph on a GPU). Past the
context (`generate(slide=N)`), `DecodeState.slide` starts the cache again from the last tokens.

Batches of prompts are *left*-padded, so every row's newest token sits in the same cache slot and
one `input_pos` serves the batch. Pads are hidden by the attention mask, and position ids come
from the mask (cumsum - 1), so a padded row still starts at position 0, as if it were alone.

What this file does not do: choose tokens (minigpt/sampling.py), or decide when to stop
(minigpt/generation.py).
"""
from __future__ import annotations

import weakref
from typing import Callable

import torch

from minigpt.checks import is_out_of_memory
from minigpt.generate_args import tokens_fed
from minigpt.kv_cache import KVCache, cache_length


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids (B, T) from a 0/1 mask: each row counts only its real tokens, from 0.

    Left pads get position 0 too (clamped); they are masked out, so their value is never seen.
    """
    return (attention_mask.long().cumsum(-1) - 1).clamp_min(0)


def prefill_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Which key slot each prompt query may see: (B, 1, T, T) bool, True = attend.

    Causal by slot (query i sees keys ≤ i) and only real keys (not pads). Each query may always
    see its own slot, so a pad query has ≥ 1 key and its softmax never turns into 0/0 = NaN.
    """
    T = attention_mask.size(-1)
    idx = torch.arange(T, device=attention_mask.device)
    causal = idx[None, :] <= idx[:, None]  # (T, T): key index ≤ query index
    keys_real = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T)
    own_slot = torch.eye(T, dtype=torch.bool, device=attention_mask.device)
    return (causal & keys_real) | own_slot  # (B, 1, T, T)


def prefill(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, cache: KVCache) -> torch.Tensor:
    """Phase 1: the whole prompt (B, T) in one pass; fills cache slots [0, T) → last logits (B, V) fp32."""
    T = input_ids.size(1)
    unpadded = bool(attention_mask.all())
    logits, _ = model(
        input_ids,
        logits_to_keep=1,  # only the last position's logits are needed: skips a (T-1) × V matmul
        position_ids=positions_from_mask(attention_mask),
        kv_cache=cache,
        input_pos=torch.arange(T, device=input_ids.device),
        # Unpadded prompts need no mask: plain causal attention, SDPA's fastest path.
        attn_mask=None if unpadded else prefill_mask(attention_mask),
    )
    return logits[:, -1].float()


def decode_step(
    model: torch.nn.Module,
    tokens: torch.Tensor,
    cache: KVCache,
    input_pos: torch.Tensor,
    position_ids: torch.Tensor,
    key_valid: torch.Tensor,
) -> torch.Tensor:
    """Phase 2: one new token per row (B, 1), written at slot `input_pos` (1,) → logits (B, V) fp32.

    `key_valid` (B, S) marks the cache slots each row may attend to (the new slot included);
    attention reads the first S slots. `position_ids` (B, 1) is each row's position.
    """
    logits, _ = model(tokens, position_ids=position_ids, kv_cache=cache, input_pos=input_pos,
                      attn_mask=key_valid[:, None, None, :])  # (B, 1, 1, S)
    return logits[:, -1].float()


def prefill_too_big(input_ids: torch.Tensor, cache: KVCache) -> MemoryError:
    """The error for a prefill whose activations its device could not allocate beside the KV cache
    (which did fit): the prefill reads every prompt token of every row at once, so for a moment it
    holds their activations too (124M, fp32: 0.6 times the cache; a shallow model, more than the
    cache: BENCHMARKS.md, `scripts/bench_generate.py --memory`)."""
    (B, T), dtype = input_ids.shape, cache.layers[0].k.dtype
    return MemoryError(
        f"the prefill does not fit: {B:,} row{'s' * (B != 1)} × {T:,} prompt tokens, read at once, ran out of memory on "
        f"{cache.device}, beside the KV cache ({cache.memory_bytes() / 2**20:,.0f} MiB) it fills, as it briefly holds "
        "the activations of every prompt token at once; generate fewer rows at once (batch size, num_return_sequences, num_beams; "
        "-n on the command line) or from a shorter prompt" + (", or in bfloat16" if dtype.itemsize > 2 else ""))


# One compiled decode step per model, reused across calls (dynamo, torch.compile's
# Python-to-graph capture, caches graphs per input shape).
_COMPILED: "weakref.WeakKeyDictionary[torch.nn.Module, Callable]" = weakref.WeakKeyDictionary()


def decode_step_for(model: torch.nn.Module, cache: KVCache, compile: bool) -> Callable:
    """The decode step a loop should call: `decode_step` itself, or compiled with torch.compile,
    fullgraph=True (a graph break is an error, not a silent slow path) and dynamic=False. Shapes are
    static (a bucketed cache, read at its whole width), so one graph serves every step and prompt
    length of a bucket: one per (batch size, bucket), up to `RECOMPILE_LIMIT` per process. On CUDA
    the step is a CUDA graph (one launch replays all its kernels) that writes the cache in place, so
    its buffers are marked static. On a CPU it runs about as fast as the eager step: it is for GPUs."""
    if not compile:
        return decode_step
    check_compile_dtype(model.transformer.wte.weight)
    if model not in _COMPILED:
        cuda = model.transformer.wte.weight.is_cuda
        # triton.cudagraphs is what mode="reduce-overhead" sets (torch.compile takes a mode or options).
        # emulate_precision_casts: a fused kernel rounds to bf16 where eager ops do, rather than keep fp32
        # inside, so tokens are eager's but for near-ties (README, "Compiled decode step": measured bounds).
        _COMPILED[model] = torch.compile(decode_step, fullgraph=True, dynamic=False,
                                         options={"triton.cudagraphs": cuda, "emulate_precision_casts": True})
    if cache.device.type == "cuda":
        cache.mark_static()
    compiled = _COMPILED[model]
    first = True

    def step(*args) -> torch.Tensor:
        nonlocal first
        # A new step begins: the previous step's outputs (already consumed) may be overwritten.
        torch.compiler.cudagraph_mark_step_begin()
        if not first:  # later steps have the first one's shapes: they never compile
            return compiled(*args)
        first = False
        return first_step(compiled, args)

    return step


def check_compile_dtype(weight: torch.Tensor) -> None:
    """A clear error, not Inductor's traceback, where torch cannot compile this step: bf16 or fp16
    on a CPU before torch 2.12, whose CPU code generator fails on emulate_precision_casts' rounding
    ("CppVecOverrides.to_dtype() got an unexpected keyword argument 'use_compute_types'", seen on
    torch 2.7 to 2.11)."""
    # torch.__version__ is a TorchVersion: it compares as a version ("2.9.1" < "2.12"), not as a string.
    if weight.is_cpu and weight.dtype in (torch.bfloat16, torch.float16) and torch.__version__ < "2.12":
        raise ValueError(f"compile=True (--compile) with a {weight.dtype} model on a CPU needs torch >= 2.12 (this is "
                         f"{torch.__version__}, whose CPU compiler fails on it): upgrade torch, decode eagerly "
                         "(compile=False; on a CPU about as fast), or use float32")


# Graphs one process may hold for the decode step: dynamo's default (8) counts every (model,
# batch size, bucket) ever compiled, and with fullgraph=True the 9th is an error, not a fallback.
RECOMPILE_LIMIT = 64


def first_step(compiled: Callable, args: tuple) -> torch.Tensor:
    """A loop's first step, the only one that may compile a new graph: under a raised limit."""
    limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
    try:
        with torch._dynamo.config.patch(recompile_limit=limit):
            return compiled(*args)
    except torch._dynamo.exc.FailOnRecompileLimitHit as e:
        raise RuntimeError(
            f"compile=True: this process already holds {limit} compiled decode steps, one per (model, batch "
            "size, cache bucket); call torch._dynamo.reset() to drop them, or raise "
            "torch._dynamo.config.recompile_limit") from e


class DecodeState:
    """What the decode phase keeps between steps, allocated once and updated in place on the device
    (no allocation per step, and the same buffers every step, as a compiled step needs):

    - `cache`: the KV cache, sized for the tokens fed, the prompt plus `max_new_tokens` - 1 (the
      last new token is never fed back: `tokens_fed`), rounded up to `cache_length`'s bucket;
    - `key_valid` (B, max_len) bool: which cache slots hold a real token (left pads never do);
    - `position_ids` (B, 1): each row's next position (a left-padded row is behind its slot);
    - `input_pos` (1,): the next cache slot, one for the whole batch (prompts are left-padded);
    - `slot` (int): `input_pos` as the host knows it, so widths are set without reading the device;
    - `next_position` (int): the longest row's next position, as the host knows it, tracked where
      the slots do not bound it (`tracks_positions`): with `slides`, for `full()`, and in a cache
      that left pads push past the context, whose bucket has slots past the rows' last position;
    - `slot_ids` (B, max_len), with `slides` only: the token id each slot was fed, which a slide
      prefills again.

    `prefill(input_ids)` is phase 1; each `step(tokens)` is phase 2 for one token per row.

    With `slides=True` the decode may go on past the context: the cache stops at the context (or
    at the prompts' slots, rounded up to a multiple of 64: `cache_length`), and when it is `full()`,
    `slide(tokens, keep)` starts it again from the last tokens, with the newest instead of a `step`.

    No API rolls a state back; by hand (outside what minigpt tests), back n tokens: lower `slot`,
    `next_position`, `input_pos` and `position_ids` by n, then set `key_valid[:, slot:]` to False
    (the lowered `slot`). The stale cache slots are then overwritten, never attended to.
    """

    def __init__(self, model: torch.nn.Module, attention_mask: torch.Tensor, max_new_tokens: int,
                 compile: bool = False, slides: bool = False) -> None:
        (B, T), device = attention_mask.shape, attention_mask.device
        n_positions = model.config.n_positions
        slots = tokens_fed(T, max_new_tokens)
        if slides:  # no more slots than the context has positions, or than the prompts' pads take
            slots = min(slots, max(T, n_positions))
        self.model, self.compile, self.slides, self.max_new_tokens = model, compile, slides, max_new_tokens
        self.cache = KVCache.for_model(model, B, cache_length(slots, n_positions))
        # In a cache of at most n_positions slots no row's position can pass the context (pads take
        # slots, not positions); in a longer one the rows' positions, not its slots, end the steps.
        self.tracks_positions = slides or self.cache.max_len > n_positions
        self.step_fn = decode_step_for(model, self.cache, compile)
        self.key_valid = torch.zeros(B, self.cache.max_len, dtype=torch.bool, device=device)  # (B, max_len)
        self.position_ids = torch.empty(B, 1, dtype=torch.long, device=device)  # (B, 1)
        self.input_pos = torch.empty(1, dtype=torch.long, device=device)  # (1,)
        self.slot_ids = torch.zeros(B, self.cache.max_len, dtype=torch.long, device=device) if slides else None
        # The longest row's length, read (one sync) only where the positions are tracked.
        self.start(attention_mask, longest=int(attention_mask.sum(-1).max()) if self.tracks_positions else 0)

    def start(self, attention_mask: torch.Tensor, longest: int) -> None:
        """Point the state at prompts (B, T) in slots [0, T), the longest `longest` tokens, before
        their prefill. The buffers are updated in place, not replaced, so a compiled step keeps
        using the same ones after a slide."""
        T = attention_mask.size(1)
        self.mask = attention_mask
        self.key_valid.zero_()
        self.key_valid[:, :T] = attention_mask.bool()
        self.position_ids.copy_(positions_from_mask(attention_mask)[:, -1:] + 1)
        self.input_pos.fill_(T)
        self.slot = T  # input_pos, on the host
        self.next_position = longest

    def prefill(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Phase 1: the prompts (B, T) → the last position's logits (B, V) fp32. Out of memory, a
        MemoryError that says what did not fit and what shrinks it, as the KV cache's does."""
        if self.slot_ids is not None:
            self.slot_ids[:, :input_ids.size(1)] = input_ids
        try:
            return prefill(self.model, input_ids, self.mask, self.cache)
        except RuntimeError as err:
            if not is_out_of_memory(err):
                raise
            raise prefill_too_big(input_ids, self.cache) from err

    def full(self) -> bool:
        """Whether a sliding decode must slide before its next token (`no_room`). Without `slides`
        generate checked its arguments to fit, and `step` refuses a step with no slot or position
        left (`no_room`) in any loop."""
        return self.slides and self.no_room()

    def no_room(self) -> bool:
        """Whether the next token has no room: every slot is written, or the longest row is at the
        context's last position (where the positions are tracked). Host ints: no sync."""
        at_context_end = self.tracks_positions and self.next_position == self.model.config.n_positions
        return self.slot == self.cache.max_len or at_context_end

    def slide(self, tokens: torch.Tensor, keep: int) -> torch.Tensor:
        """The context is full: start again from the tokens in the cache and the newest, `tokens`
        (one per row, not yet fed: what `step` would have taken). A full row keeps its last `keep`
        tokens; a row with room keeps all of its context, so it goes on as it would alone (where it
        would not yet slide). Their prefill, left-padded, gives the next logits (B, V), as `step`
        would have.

        The model's positions are absolute, so kept tokens cannot keep theirs (past the end): they
        are read again from position 0, which is why this is a new prefill, not a cache shift.
        """
        if self.slot_ids is None:
            raise ValueError("DecodeState.slide needs a state made with slides=True (which keeps the ids of its slots)")
        tokens = self._checked_tokens(tokens, "slide").long()  # (B, 1)
        if not (isinstance(keep, int) and 1 <= keep <= self.model.config.n_positions):
            raise ValueError(f"DecodeState.slide keeps 1 to n_positions={self.model.config.n_positions} tokens of a full "
                             f"row, got keep={keep!r}")
        context = self.position_ids[:, 0]  # each row's tokens in the cache: the newest one's position
        kept = torch.where(context == self.model.config.n_positions, keep, context + 1)  # (B,)
        width = int(kept.max())  # (one sync per slide)
        # The slots' ids and the newest, and which are tokens. A row's pads may be inside it (a mask
        # with inner zeros), so its last `kept` tokens are found by counting them from its end, then
        # gathered to its right end, left-padded as a prompt is.
        ids = torch.cat([self.slot_ids[:, :self.slot], tokens], 1)  # (B, slot + 1)
        real = torch.cat([self.key_valid[:, :self.slot], torch.ones_like(tokens, dtype=torch.bool)], 1)
        later = real.flip(1).cumsum(1).flip(1)  # the row's tokens at or after each column
        chosen = real & (later <= kept[:, None])
        columns = chosen.long().argsort(dim=1, stable=True)[:, -width:]  # (B, width): the chosen last, in order
        self.start(chosen.gather(1, columns).long(), longest=width)
        return self.prefill(ids.gather(1, columns))

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Phase 2: one new token per row, (B, 1) or (B,) as `minigpt.sampling.sample` gives them →
        logits (B, V) fp32; then move one slot on. Tokens it refuses (their shape, their dtype)
        change no state, nor does a step past the cache's last slot or the context (`full_cache_error`)."""
        if self.no_room():  # before the state changes
            raise self.full_cache_error()
        tokens = self._checked_tokens(tokens)  # before the state changes
        self.key_valid[:, self.slot] = True  # the new token's slot becomes readable
        if self.slot_ids is not None:
            self.slot_ids[:, self.slot] = tokens[:, 0]
        width = self.cache.max_len if self.compile else self.slot + 1  # compiled: fixed width, one graph for all steps
        logits = self.step_fn(self.model, tokens, self.cache, self.input_pos, self.position_ids,
                              self.key_valid[:, :width])
        self.slot += 1
        self.next_position += 1
        self.input_pos += 1
        self.position_ids += 1
        return logits

    def full_cache_error(self) -> ValueError:
        """Why a hand-written loop's step has no slot left: the cache holds what `max_new_tokens`
        asked for (rounded up to a bucket: `cache_length`); and what to do instead, where a row's
        position says whether the context ended too. (Without this check the step failed on an index
        out of bounds, naming no cause.)"""
        n_positions, max_len = self.model.config.n_positions, self.cache.max_len
        if self.slides:  # (sized by the first prompts and the context, refilled by each slide)
            return ValueError(f"DecodeState.step: no room for the next token (the KV cache's {max_len} slots are all "
                              "written, or a row is at the context's end); full() says so first: call slide() then, "
                              "as generate(slide=N) does")
        if self.slot < max_len:  # a cache that left pads push past the context, with slots left
            return ValueError(f"DecodeState.step: the longest row is at the model's context end (n_positions="
                              f"{n_positions}); to go on past it, generate(slide=N) slides the context")
        T = self.mask.size(1)
        sized = (f"sized for the prompts' {T} slots (left pads included) + the max_new_tokens={self.max_new_tokens} "
                 "given to DecodeState, less 1 (the last new token is never fed back)")
        if max_len > tokens_fed(T, self.max_new_tokens):
            sized += ", rounded up to " + ("the context" if max_len == n_positions else
                                           "a multiple of 64" if max_len > n_positions else "a power of two")
        # The positions, not the slot count: a left-padded batch has more slots than positions.
        if int(self.position_ids.max()) >= n_positions:  # (one sync, on the way to an error)
            instead = (f"the model's context ends here (n_positions={n_positions}); to go on past it, "
                       "generate(slide=N) slides the context")
        else:
            instead = "build the DecodeState with a larger max_new_tokens for more steps"
        return ValueError(f"DecodeState.step: the KV cache is full: its {max_len} slots, {sized}, are all written; "
                          f"{instead}")

    def _checked_tokens(self, tokens: torch.Tensor, method: str = "step") -> torch.Tensor:
        """`step`'s (or `slide`'s) tokens as (B, 1) integer ids. One token per row, so a (B,) vector
        is unambiguous here; checked before the model, whose own check would read (B,) as one row
        of B tokens."""
        B = self.key_valid.size(0)
        if not isinstance(tokens, torch.Tensor) or tokens.shape not in ((B,), (B, 1)):
            got = f"shape {tuple(tokens.shape)}" if isinstance(tokens, torch.Tensor) else type(tokens).__name__
            raise ValueError(f"DecodeState.{method} takes one token per row of its {B}: ids of shape ({B},), as "
                             f"sample() gives them, or ({B}, 1); got {got}")
        if tokens.is_floating_point() or tokens.is_complex() or tokens.dtype == torch.bool:
            raise TypeError(f"DecodeState.{method} takes integer token ids, got {tokens.dtype}")
        return tokens.view(B, 1)
