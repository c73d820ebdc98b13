"""Generation: the two phases of inference, the decode loop around them, and streaming.

Where it sits: it is the `KV-cache decode loop` of the data flow, around the model and the sampler:
`text → Tokenizer.encode → ids → [prefill → (sample → decode_step)*] → ids → Tokenizer.decode → text`.

1. `prefill` runs the whole prompt through the model in one pass (a big, parallel matmul) and
   fills the KV cache (minigpt/kv_cache.py). Its time is the time to first token (TTFT).
2. `decode_step` feeds one new token per row, attending to everything cached. Each step reads
   every weight once to produce B tokens, so at small batch it is bound by memory bandwidth, not
   arithmetic; its time is the time per output token (TPOT).

`DecodeState` holds what the phases share (the cache, the readable slots, the positions); the
decode loop (`stream`, whose steps are `decode_loop`), beam search and `--explain` each drive one.
This file works on ids; one prompt's text in and text out (`stream_text`, `generate_text`) is
minigpt/text_generation.py.

Batches of prompts are *left*-padded, so every row's newest token sits in the same cache slot and
one `input_pos` serves the batch. Pads are hidden by the attention mask, and position ids come
from the mask (cumsum - 1), so a padded row still starts at position 0, as if it were alone.
Between the phases, `minigpt/sampling.py` turns logits into tokens; `num_beams > 1` hands the
loop to minigpt/beam_search.py instead. Stop strings are found by minigpt/stop_strings.py, and
the `--explain` view (each penalty's and filter's effect, step by step) lives in minigpt/explain.py,
and `return_stats`'s timings and memory are measured by minigpt/stats.py. `stream`'s arguments
are checked before any work by minigpt/generate_args.py (`check_arguments`), and the command line
in front of this file, `minigpt generate`, is minigpt/generate_cli.py.

What this file does not do: speculative decoding, continuous batching, or prompts longer than
the context (they raise; the CLI's --truncate-left keeps the prompt's last tokens).
"""
from __future__ import annotations

import weakref
from typing import Callable, Iterator

import torch

from minigpt.generate_args import NONFINITE, PENALTY_OVERFLOW, DecodeArgs, check_arguments, tokens_fed
from minigpt.kv_cache import KVCache, cache_length
from minigpt.sampling import (
    Param,
    draw,
    exponential_noise,
    filter_unchecked,
    kernel_seed,
    penalize,
    penalties_on,
    token_counts,
    triton_params,
)
from minigpt.stats import Clock, GenerationStats
from minigpt.stop_strings import StopStrings

# ---- the two phases ---------------------------------------------------------------------------


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


# One compiled decode step per model, reused across calls (dynamo caches graphs per input shape).
_COMPILED: "weakref.WeakKeyDictionary[torch.nn.Module, Callable]" = weakref.WeakKeyDictionary()


def decode_step_for(model: torch.nn.Module, cache: KVCache, compile: bool) -> Callable:
    """The decode step a loop should call: `decode_step` itself, or compiled.

    Compiled: torch.compile with fullgraph=True (a graph break is an error, not a silent slow
    path) and dynamic=False. Shapes are static, because the cache is bucketed and the loop passes
    the whole cache width, so every step and every prompt length within a bucket reuse one graph:
    one per (batch size, bucket). On CUDA, mode="reduce-overhead" records the step as a CUDA graph
    that replays all its kernel launches with one call; the graph writes the cache in place, so
    its buffers are marked static (their address is baked into the graph). On a CPU it runs about
    as fast as the eager step (minigpt/linear.py's oneDNN call stays in the graph as a custom op):
    compiling is meant for GPUs.
    """
    if not compile:
        return decode_step
    if model not in _COMPILED:
        cuda = model.transformer.wte.weight.is_cuda
        _COMPILED[model] = torch.compile(decode_step, fullgraph=True, dynamic=False,
                                         mode="reduce-overhead" if cuda else None)
    if cache.layer(0).k.is_cuda:
        cache.mark_static()
    compiled = _COMPILED[model]

    def step(*args) -> torch.Tensor:
        # A new step begins: the previous step's outputs (already consumed) may be overwritten.
        torch.compiler.cudagraph_mark_step_begin()
        return compiled(*args)

    return step


class DecodeState:
    """What the decode phase keeps between steps, allocated once and updated in place on the device
    (no allocation per step, and the same buffers every step, as a compiled step needs):

    - `cache`: the KV cache, sized for the prompt plus `max_new_tokens` (`cache_length`'s bucket);
    - `key_valid` (B, max_len) bool: which cache slots hold a real token (left pads never do);
    - `position_ids` (B, 1): each row's next position (a left-padded row is behind its slot);
    - `input_pos` (1,): the next cache slot, one for the whole batch (prompts are left-padded).

    `prefill(input_ids)` is phase 1; each `step(tokens)` is phase 2 for one token per row.
    """

    def __init__(self, model: torch.nn.Module, attention_mask: torch.Tensor, max_new_tokens: int,
                 compile: bool = False) -> None:
        (B, T), device = attention_mask.shape, attention_mask.device
        self.model, self.mask, self.compile = model, attention_mask, compile
        self.cache = KVCache.for_model(model, B, cache_length(tokens_fed(T, max_new_tokens), model.config.n_positions))
        self.step_fn = decode_step_for(model, self.cache, compile)
        self.key_valid = torch.zeros(B, self.cache.max_len, dtype=torch.bool, device=device)  # (B, max_len)
        self.key_valid[:, :T] = attention_mask.bool()
        self.position_ids = positions_from_mask(attention_mask)[:, -1:] + 1  # (B, 1)
        self.input_pos = torch.tensor([T], device=device)  # (1,)
        self.slot = T  # input_pos as the host knows it: widths are set without reading the device

    def prefill(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Phase 1: the prompts (B, T) → the last position's logits (B, V) fp32."""
        return prefill(self.model, input_ids, self.mask, self.cache)

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Phase 2: one new token per row (B, 1) → logits (B, V) fp32; then move one slot on."""
        self.key_valid[:, self.slot] = True  # the new token's slot becomes readable
        width = self.cache.max_len if self.compile else self.slot + 1  # compiled: fixed width, one graph for all steps
        logits = self.step_fn(self.model, tokens, self.cache, self.input_pos, self.position_ids,
                              self.key_valid[:, :width])
        self.slot += 1
        self.input_pos += 1
        self.position_ids += 1
        return logits


# ---- the decode loop ---------------------------------------------------------------------------

# Host syncs ("are all rows finished?", "are the logits finite?") cost ~nothing on CPU but stall a
# GPU's queue, so there the loop looks only every few steps and trims the extra all-pad columns at
# the end. Steps between looks, by device type (1 where not listed).
SYNC_EVERY = {"cuda": 8}


def generate(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
             **kwargs) -> torch.Tensor | tuple[torch.Tensor, GenerationStats]:
    """Continue each prompt: input_ids (B, T) → LongTensor (B·num_return_sequences, T + new).

    `generate` is `stream` run to the end; see `stream` for every argument.
    """
    return run_to_end(stream(model, input_ids, attention_mask, **kwargs))


def run_to_end(steps: Iterator, each: Callable | None = None):
    """Step a generator to its end, handing each item to `each`; return the generator's *return*
    value (which a for loop would drop: `stream`'s result is its return value)."""
    while True:
        try:
            item = next(steps)
        except StopIteration as end:
            return end.value
        if each is not None:
            each(item)


def token_picker(sampler: str | None, seed: int | None, B: int, device: torch.device,
                 temperature: Param, top_k: Param, top_p: Param, min_p: Param) -> Callable[[torch.Tensor], torch.Tensor]:
    """How each step turns logits (B, V) into tokens (B,): the argmax (`sampler` None: greedy),
    Triton's fused kernel ("triton") or torch's filters and draw ("torch"). None of them waits on
    the host; a `seed` fixes every draw."""
    if sampler is None:
        return lambda logits: logits.argmax(dim=-1)  # greedy: the argmax, which no filter changes
    generator = torch.Generator(device=device).manual_seed(seed) if seed is not None else None
    if sampler == "torch":
        def pick(logits: torch.Tensor) -> torch.Tensor:
            noise = exponential_noise(logits.shape, device, generator)
            return draw(filter_unchecked(logits, temperature, top_k, top_p, min_p), noise, temperature)

        return pick
    from minigpt.kernels.sampling import fused_sample  # imported here: triton is optional

    kernel_args = triton_params(B, device, temperature, top_k, top_p, min_p)
    # The kernel keys Philox with this int64 (drawn from `seed`, so a seed fixes the stream).
    kernel_args["seed"] = kernel_seed(generator, device)
    kernel_args["offset"] = torch.zeros(1, dtype=torch.long, device=device)  # +1 per step: a fresh stream

    def fused_pick(logits: torch.Tensor) -> torch.Tensor:
        tokens = fused_sample(logits, **kernel_args)
        kernel_args["offset"] += 1
        # The kernel answers -1 for a row of NaN/inf logits (noted by the loop): until the host raises,
        # feed an id the embedding has (-1 would be a device-side assert, which breaks the CUDA context).
        return tokens.clamp_min(0)

    return fused_pick


def stream(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    max_new_tokens: int = 20,
    min_new_tokens: int = 0,
    do_sample: bool = False,
    temperature: float | torch.Tensor = 1.0,
    top_k: int | torch.Tensor = 0,
    top_p: float | torch.Tensor = 1.0,
    min_p: float | torch.Tensor = 0.0,
    repetition_penalty: float | torch.Tensor = 1.0,
    presence_penalty: float | torch.Tensor = 0.0,
    frequency_penalty: float | torch.Tensor = 0.0,
    eos_token_id: int | list[int] | None = None,
    pad_token_id: int | None = None,
    stop: str | list[str] | None = None,
    tokenizer=None,
    num_beams: int = 1,
    length_penalty: float = 1.0,
    early_stopping: bool | str = False,
    num_return_sequences: int = 1,
    seed: int | None = None,
    streamer: Callable[[torch.Tensor], None] | None = None,
    sampler: str = "auto",
    compile: bool = False,
    return_stats: bool = False,
) -> Iterator[torch.Tensor]:
    """Yield each step's new tokens (B,) as they are drawn; finally *return* what `generate` returns.

    That result is a LongTensor (B·num_return_sequences, T + new), prompt included, as in
    transformers, whose argument names these are. Rows that finish early (EOS, a stop string) are
    filled with pad_token_id. `eos_token_id=None` means the model's (<|endoftext|> for GPT-2) and
    `[]` never stops on EOS. `stop` is one string or a list of them: a row ends when its text
    contains one (text, so `tokenizer` is needed). `do_sample=False` is greedy. Sampling parameters
    may be (B,) tensors, one value per prompt. `streamer(tokens)` is called with each step's (B,)
    tokens. `sampler` picks the sampling backend ("auto" | "torch" | "triton"), `compile=True`
    compiles the decode step (`decode_step_for`). With `return_stats=True` the result is
    `(ids, GenerationStats)`.

    The arguments are checked here, at the call (a generator function would run nothing, its
    checks included, until the first `next`); the steps are `decode_loop`'s.
    """
    args = check_arguments(
        model, input_ids, attention_mask, max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens,
        do_sample=do_sample, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
        repetition_penalty=repetition_penalty, presence_penalty=presence_penalty, frequency_penalty=frequency_penalty,
        eos_token_id=eos_token_id, pad_token_id=pad_token_id, stop=stop, num_beams=num_beams,
        length_penalty=length_penalty, early_stopping=early_stopping, num_return_sequences=num_return_sequences,
        streamer=streamer, sampler=sampler, seed=seed)
    # Built here, not in the loop, so that stop strings without their tokenizer are refused at the
    # call too. A prompt's n samples are n rows.
    stopper = StopStrings(tokenizer, args.stop, args.input_ids.size(0) * args.num_return_sequences) if args.stop else None
    return decode_loop(model, args, stopper, streamer=streamer, compile=compile, return_stats=return_stats)


# Generation never needs gradients. Without no_grad the KV cache would join the autograd graph
# (every cache write and step is recorded, so memory grows each token) and minigpt/linear.py
# would leave its fast inference path. On a generator, the decorator turns grad off for each
# resumption only: between yields and after the end the caller's grad mode is back.
@torch.no_grad()
def decode_loop(model: torch.nn.Module, args: DecodeArgs, stopper: StopStrings | None, *,
                streamer: Callable[[torch.Tensor], None] | None, compile: bool, return_stats: bool) -> Iterator[torch.Tensor]:
    """`stream`'s steps, from its checked arguments: prefill, then pick a token per row → feed it
    back, until every row has ended; beam search (num_beams > 1) is handed to minigpt/beam_search.py."""
    if args.num_beams > 1:
        from minigpt.beam_search import beam_search  # imported here: beam_search.py builds on this module

        return beam_search(model, args.input_ids, args.attention_mask, max_new_tokens=args.max_new_tokens,
                           min_new_tokens=args.min_new_tokens, num_beams=args.num_beams,
                           length_penalty=args.length_penalty, early_stopping=args.early_stopping, eos=args.eos, pad=args.pad,
                           num_return_sequences=args.num_return_sequences, penalties=args.penalties, compile=compile,
                           return_stats=return_stats)
    # The checked arguments, under the names the loop reads.
    input_ids, attention_mask, eos, pad, penalties = args.input_ids, args.attention_mask, args.eos, args.pad, args.penalties
    max_new_tokens, min_new_tokens = args.max_new_tokens, args.min_new_tokens
    prompt_tokens = attention_mask.sum()  # the prompts' real tokens, counted before the n copies
    if args.num_return_sequences > 1:  # n samples per prompt: each prompt n times (its parameters already are)
        n = args.num_return_sequences
        # (B, T) → (B·n, T): rows b·n ... b·n + n - 1 are prompt b's samples
        input_ids, attention_mask = input_ids.repeat_interleave(n, 0), attention_mask.repeat_interleave(n, 0)

    device, B, V = input_ids.device, input_ids.size(0), model.config.vocab_size
    clock = Clock(device)
    t_start = clock()
    state = DecodeState(model, attention_mask, max_new_tokens, compile)
    # The loop's own state, on the device too and updated in place: no allocation per step.
    out = torch.full((B, max_new_tokens), pad, dtype=torch.long, device=device)  # column s: step s's tokens
    penalized = penalties_on(penalties)
    if penalized:  # repetition counts the prompt too; presence/frequency only what the model wrote
        seen = token_counts(input_ids, V, attention_mask)  # (B, V)
        generated = torch.zeros_like(seen)
    pick = token_picker(args.sampler, args.seed, B, device, **args.sampling)  # (B, V) logits → (B,) tokens
    eos_ids = torch.tensor(eos, dtype=torch.long, device=device)
    pad_is_token = 0 <= pad < V
    finished = torch.zeros(B, dtype=torch.bool, device=device)
    n_drawn = torch.zeros(B, dtype=torch.long, device=device)  # tokens drawn per row until it finished (one op a step)
    nonfinite = torch.zeros((), dtype=torch.bool, device=device)  # some step's logits held NaN/inf
    # Checked after the penalties, so a logit a penalty pushed past float range is caught too, not
    # drawn as a token: the message names both causes.
    nonfinite_error = f"{NONFINITE}, or {PENALTY_OVERFLOW}" if penalized else NONFINITE
    cuts: dict[int, int] = {}  # row → generated tokens kept before its stop string
    # A streamer or stop strings read each step's tokens on the host anyway: looking every step costs no more.
    sync_every = 1 if streamer is not None or stopper else SYNC_EVERY.get(device.type, 1)

    logits = state.prefill(input_ids)  # (B, V)
    for step in range(max_new_tokens):
        if penalized:
            logits = penalize(logits, seen, generated, **penalties)
        if step < min_new_tokens and eos:
            logits = logits.index_fill(1, eos_ids, float("-inf"))  # too early to end: EOS is no option yet
        # NaN/inf logits mean a broken model, not a token (amax propagates NaN; +inf would make the
        # softmax NaN). Noted on the device every step, raised when the host looks: every step on a
        # CPU, every few on a GPU, and once more after the loop, for the steps since its last look.
        nonfinite |= ~torch.isfinite(logits.amax(-1)).all()
        if step % sync_every == 0 and bool(nonfinite):
            raise FloatingPointError(nonfinite_error)
        tokens = pick(logits)  # (B,)
        live = ~finished
        n_drawn += live
        tokens = torch.where(live, tokens, pad)  # finished rows only pad
        out[:, step] = tokens
        # What the counts and the model read: the same, but a pad that is no row of the embedding
        # (a stale config EOS) as 0. A finished row's input is never read back.
        ids = tokens if pad_is_token else torch.where(live, tokens, 0)
        if eos:
            finished |= torch.isin(tokens, eos_ids)
        if penalized:  # counts (B, V) += 1 at each live row's new token: ids[:, None] is (B, 1)
            seen.scatter_add_(1, ids[:, None], live[:, None].int())
            generated.scatter_add_(1, ids[:, None], live[:, None].int())
        if stopper:
            for row, (token, alive) in enumerate(zip(tokens.tolist(), live.tolist())):
                keep = stopper.add(row, token) if alive else None
                if keep is not None:
                    finished[row], cuts[row] = True, keep
        if step == 0:
            t_first = clock()
        if streamer is not None:
            streamer(tokens)
        yield tokens
        if step + 1 == max_new_tokens or (step % sync_every == sync_every - 1 and finished.all()):
            break
        logits = state.step(ids[:, None])  # the next step: one token per row, (B, 1)

    t_end = clock()
    if bool(nonfinite):  # in the steps since the host's last look
        raise FloatingPointError(nonfinite_error)
    # The longest row's count is the number of steps that mattered: a GPU's loop may run a few
    # all-pad steps past the end, which trim_output drops.
    new_tokens, kept_steps = torch.stack([n_drawn.sum(), n_drawn.max()]).tolist()  # one host sync
    out = trim_output(input_ids, out, kept_steps, cuts, pad, eos_ids)  # (B, T + kept_steps)
    if not return_stats:
        return out
    # Every row was live at the first step: its B tokens are prefill's. `step` decode forwards ran
    # after it (all of them timed, the all-pad ones included).
    return out, GenerationStats.measured(prompt_tokens=int(prompt_tokens), new_tokens=new_tokens, first_tokens=B,
                                         steps=step, t_start=t_start, t_first=t_first, t_end=t_end,
                                         kv_cache_bytes=state.cache.memory_bytes(), device=device)


def trim_output(input_ids: torch.Tensor, out: torch.Tensor, steps: int, cuts: dict[int, int], pad: int,
                eos_ids: torch.Tensor) -> torch.Tensor:
    """The prompts (B, T) and the loop's tokens `out` (B, max_new_tokens) → the result (B, T + steps).

    `steps` counts the steps in which some row was unfinished: on a GPU the loop may run a few
    all-pad steps past the end, which are dropped here. `cuts` maps each row cut at a stop string
    to the generated tokens it keeps; the rest of the row becomes pads.
    """
    if cuts:
        # A row cut at its stop string ends before the step that found it, so the output is as wide
        # as its longest row: a cut row's kept tokens, another's up to its EOS (or every step).
        for row, keep in cuts.items():
            out[row, keep:] = pad  # the stop string (and the start of its first token) never reaches the output
        hit = torch.isin(out[:, :steps], eos_ids)  # (B, steps)
        lengths = torch.where(hit.any(1), hit.int().argmax(1) + 1, steps).tolist()
        steps = max(cuts.get(row, length) for row, length in enumerate(lengths))
    return torch.cat([input_ids, out[:, :steps]], dim=1)  # (B, T + steps)
