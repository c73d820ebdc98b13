"""Generation: the decode loop around the two phases of inference, and streaming.

Where it sits: it is the `KV-cache decode loop` of the data flow, around the model and the sampler:
`text → Tokenizer.encode → ids → [prefill → (sample → decode_step)*] → ids → Tokenizer.decode → text`.

The phases themselves (`prefill` fills the KV cache from the whole prompt; `decode_step` feeds one
token per row) and `DecodeState`, which holds what they share, are minigpt/prefill_decode.py. This
file is the loop that drives them (`stream`, whose steps are `decode_loop`): pick a token per row,
feed it back, and end each row at its EOS, a stop string or `max_new_tokens`. It works on ids; one
prompt's text in and text out (`stream_text`, `generate_text`), and many prompts' in batches
(`generate_texts`), are minigpt/text_generation.py.

Between the phases, minigpt/penalties.py and `minigpt/sampling.py` turn logits into tokens;
`num_beams > 1` hands the loop to minigpt/beam_search.py instead. Stop strings are found by minigpt/stop_strings.py, and
the `--explain` view (each penalty's and filter's effect, step by step) lives in minigpt/explain.py,
and `return_stats`'s timings and memory are measured by minigpt/stats.py. `stream`'s arguments
are checked before any work by minigpt/generate_args.py (`check_arguments`), and the command line
in front of this file, `minigpt generate`, is minigpt/generate_cli.py.

What this file does not do: speculative decoding, continuous batching, or prompts longer than
the context (they raise; the text functions' truncate_left=True and the CLI's --truncate-left keep
the prompt's last tokens). Continuations longer than the context are a choice (`slide`): the
context then slides over the text.
"""
from __future__ import annotations

import difflib
import functools
import inspect
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any, Callable, Generator, Iterator, Literal, Protocol, TypedDict, TypeVar, cast, overload

import torch

from minigpt.beam_search import beam_search
from minigpt.checks import check_flag, is_out_of_memory
from minigpt.generate_args import (NGRAM_EXHAUSTED, NONFINITE, PENALTY_OVERFLOW, DecodeArgs, check_arguments, textless_ids,
                                   warn_if_training)
from minigpt.prefill_decode import DecodeState
from minigpt.penalties import PenaltyCounts, ban_repeated_ngrams, penalties_on
from minigpt.row_params import Param
from minigpt.sampling import token_picker
from minigpt.stats import GenerationStats, LoopTimer
from minigpt.stop_strings import StopStrings

if TYPE_CHECKING:  # read by type checkers alone (annotations are strings here): Python 3.10's typing lacks it
    from typing_extensions import Unpack

# Host syncs ("are all rows finished?", "are the logits finite?") cost ~nothing on CPU but stall a
# GPU's queue, so there the loop looks only every few steps and trims the extra all-pad columns at
# the end. Steps between looks, by device type (1 where not listed).
SYNC_EVERY = {"cuda": 8}
# How many tokens `stream` generates when not told (generate_texts checks prompts against it too).
DEFAULT_MAX_NEW_TOKENS = 20


class TokenizerLike(Protocol):
    """What generation needs of a tokenizer (stop strings, the text functions): minigpt's
    Tokenizer, or any object with these two methods (tiktoken's Encoding, a transformers tokenizer)."""
    def encode(self, text: str, /) -> list[int]: ...
    def decode(self, ids: list[int], /) -> str: ...


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


def step_picker(sampler: str | None, seed: int | None, B: int, device: torch.device,
                sampling: dict[str, Param]) -> Callable[[torch.Tensor], torch.Tensor]:
    """How each step turns logits (B, V) into tokens (B,): the argmax (`sampler` None: greedy), or
    minigpt.sampling's `token_picker` with the fused kernel ("triton") or torch's filters and draw
    ("torch"). None of them waits on the host; a `seed` fixes every draw."""
    if sampler is None:
        return lambda logits: logits.argmax(dim=-1)  # greedy: the argmax (the filters act on draws only)
    generator = torch.Generator(device=device).manual_seed(seed) if seed is not None else None
    pick = token_picker(B, device, **sampling, generator=generator, backend=sampler)
    if sampler == "torch":
        return pick
    # The kernel answers -1 for a row of NaN/inf logits (noted by the loop): until the host raises,
    # feed an id the embedding has (-1 would be a device-side assert, which breaks the CUDA context).
    return lambda logits: pick(logits).clamp_min(0)


def stream(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    min_new_tokens: int = 0,
    do_sample: bool = False,
    temperature: float | torch.Tensor = 1.0,
    top_k: int | torch.Tensor = 0,
    top_p: float | torch.Tensor = 1.0,
    min_p: float | torch.Tensor = 0.0,
    typical_p: float | torch.Tensor = 1.0,
    epsilon_cutoff: float | torch.Tensor = 0.0,
    eta_cutoff: float | torch.Tensor = 0.0,
    repetition_penalty: float | torch.Tensor = 1.0,
    presence_penalty: float | torch.Tensor = 0.0,
    frequency_penalty: float | torch.Tensor = 0.0,
    no_repeat_ngram_size: int = 0,
    eos_token_id: int | Sequence[int] | torch.Tensor | None = None,
    pad_token_id: int | None = None,
    stop: str | Sequence[str] | None = None,
    tokenizer: TokenizerLike | None = None,
    num_beams: int = 1,
    length_penalty: float = 1.0,
    early_stopping: bool | str = False,
    num_return_sequences: int = 1,
    seed: int | None = None,
    streamer: Callable[[torch.Tensor], None] | None = None,
    sampler: str = "auto",
    compile: bool = False,
    slide: int = 0,
    return_scores: bool = False,
    return_stats: bool = False,
) -> Generator[torch.Tensor, None, torch.Tensor | tuple]:
    """Yield each step's new tokens (B·num_return_sequences,) as they are drawn (beam search, which
    picks its tokens at the end, yields none); finally *return* what `generate` returns.

    The result: a LongTensor (B·num_return_sequences, T + new), prompt included, as in
    transformers, whose argument names these are; with `return_stats=True`, `(ids, GenerationStats)`;
    with beam search's `return_scores=True`, `(ids, scores)` or `(ids, scores, GenerationStats)`,
    scores (B·num_return_sequences,) being each returned beam's, transformers' `sequences_scores`:
    the total log-probability of its new tokens (after the penalties) / new_length ** length_penalty.
    Rows that finish early are filled with pad_token_id (None: the config's pad_token_id, else the
    first EOS id, as in transformers, but one the model has: transformers pads with a list's first
    id even past the vocabulary, and fails at the embedding). Prompts are left-padded,
    `attention_mask` 0 at the pads; without one, as in transformers, the ids equal to a pad id
    named as one (pad_token_id, or the config's) that is no EOS of the call's are padding (with the
    EOS as pad, GPT-2's default, a pad that is the config's BOS (unlike transformers, which reads
    that as padding), or no pad named, every id is text: pass the mask). The text functions pass
    one prompt's all-ones mask themselves.

    Where a row ends: at an EOS (`eos_token_id=None` means the model's, <|endoftext|> for GPT-2;
    `[]` never stops on EOS), or where its text contains a `stop` string (one string or a list or
    tuple of them; text, so `tokenizer` is needed; not with beams), or after max_new_tokens.

    `input_ids` (B, T): the prompts. `min_new_tokens`: no EOS before that many tokens (stop
    strings may still end a row).

    Which tokens: `do_sample=False` is greedy; `do_sample=True` draws with the filters of
    minigpt/sampling.py, in transformers' order: `temperature` (0: greedy) → `top_k` (0: off) →
    `top_p` (1: off) → `min_p` (0: off) → `typical_p` (1: off) → `epsilon_cutoff` (0: off) →
    `eta_cutoff` (0: off; the last three sampled with torch, as the fused kernel has none of them);
    `seed` fixes every draw. Before them, the penalties of
    minigpt/penalties.py: `repetition_penalty` (1: off; on the prompt's and the new tokens),
    `presence_penalty` and `frequency_penalty` (0: off; on the new tokens alone). Each of these
    may be a (B,) tensor, one value per prompt. `no_repeat_ngram_size=n` > 0 bans every token that
    would repeat an n-gram of its row, prompt included (`ban_repeated_ngrams`). A `tokenizer` with
    fewer ids than the model has rows (a padded vocabulary: the same EOS id) bans the rest; another
    model's tokenizer is refused. `num_beams` > 1 is beam search instead (minigpt/beam_search.py:
    deterministic, with the penalties; `length_penalty` divides a beam's score by its length to
    that power, `early_stopping` says when to stop, as in transformers). `num_return_sequences`:
    rows per prompt (samples, or the best beams).

    How: `streamer(tokens)` is called with each step's tokens (not with beams). `sampler` picks the
    sampling backend ("auto" | "torch" | "triton"); `compile=True` compiles the decode step
    (minigpt/prefill_decode.py's `decode_step_for`) and, outside beam search, the penalties (one
    fused kernel a step).

    Past the context: `slide=N` > 0 lets max_new_tokens run past n_positions (only the prompt must
    fit). When the context is full, each full row's last N tokens (a row with room: all of its
    own) are prefilled again, from position 0, and decoding goes on: every token is drawn seeing
    between N and n_positions tokens.
    N = n_positions is nanoGPT's crop, the model always seeing all it can, at the price of a
    prefill per token; a smaller N prefills once every n_positions - N + 1 tokens. Not with beams.

    The arguments are checked here, at the call (a generator function would run nothing, its
    checks included, until the first `next`); the steps are `decode_loop`'s.
    """
    check_flag("compile", compile)
    check_flag("return_stats", return_stats)
    check_flag("return_scores", return_scores)
    args = check_arguments(
        model, input_ids, attention_mask, max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens,
        do_sample=do_sample,
        sampling=dict(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p, typical_p=typical_p,
                      epsilon_cutoff=epsilon_cutoff, eta_cutoff=eta_cutoff),
        penalties=dict(repetition_penalty=repetition_penalty, presence_penalty=presence_penalty,
                       frequency_penalty=frequency_penalty),
        no_repeat_ngram_size=no_repeat_ngram_size, eos_token_id=eos_token_id, pad_token_id=pad_token_id, stop=stop,
        num_beams=num_beams, length_penalty=length_penalty, early_stopping=early_stopping,
        num_return_sequences=num_return_sequences, streamer=streamer, sampler=sampler, seed=seed, slide=slide)
    if return_scores and args.num_beams == 1:
        raise ValueError("return_scores is for beam search (num_beams > 1): the score that ranked each returned beam; "
                         "greedy and sampled rows are ranked by nothing")
    warn_if_training(model, "generating")  # after check_arguments' check_model: generate(ids, model) is a TypeError
    # Built here, not in the loop, so that stop strings without their tokenizer are refused at the
    # call too. A prompt's n samples are n rows.
    stopper = StopStrings(tokenizer, args.stop, args.input_ids.size(0) * args.num_return_sequences) if args.stop else None
    # A tokenizer smaller than the model (a padded vocabulary): the ids it has no token for are never drawn.
    args.textless = textless_ids(model, tokenizer, args.input_ids.device)
    return decode_loop(model, args, stopper, streamer=streamer, compile=compile, return_scores=return_scores,
                       return_stats=return_stats)


class StreamOptions(TypedDict, total=False):
    """`stream`'s keyword arguments, less `return_scores` and `return_stats` (which decide the
    result's type: the overloads below name them) and `tokenizer` (a text function's own argument,
    which `generate` names itself): what `generate` and the text functions pass on as
    `**kwargs: Unpack[StreamOptions]`. Only a type checker reads it, to check each name and value
    there as it checks `stream`'s own (at run time `takes_stream_arguments` checks the names, and
    the names a function refuses: generate_texts' `streamer` is caught there alone).
    tests/test_generate.py keeps it equal to stream's signature."""
    max_new_tokens: int
    min_new_tokens: int
    do_sample: bool
    temperature: float | torch.Tensor
    top_k: int | torch.Tensor
    top_p: float | torch.Tensor
    min_p: float | torch.Tensor
    typical_p: float | torch.Tensor
    epsilon_cutoff: float | torch.Tensor
    eta_cutoff: float | torch.Tensor
    repetition_penalty: float | torch.Tensor
    presence_penalty: float | torch.Tensor
    frequency_penalty: float | torch.Tensor
    no_repeat_ngram_size: int
    eos_token_id: int | Sequence[int] | torch.Tensor | None
    pad_token_id: int | None
    stop: str | Sequence[str] | None
    num_beams: int
    length_penalty: float
    early_stopping: bool | str
    num_return_sequences: int
    seed: int | None
    streamer: Callable[[torch.Tensor], None] | None
    sampler: str
    compile: bool
    slide: int


F = TypeVar("F", bound=Callable[..., Any])


def takes_stream_arguments(*, refused: tuple[str, ...] = ()) -> Callable[[F], F]:
    """Decorator for the functions that pass `**kwargs` on to `stream`: `generate` below, and the
    text functions (minigpt/text_generation.py). help() and Jupyter's Shift-Tab then list stream's
    keyword arguments in place of `**kwargs` (less those in `refused`, which the function checks
    itself: it turns them down, or takes only what it can serve), and a name stream does not take is a TypeError naming the function called and the
    closest valid name (or minigpt's for a transformers name: `unknown_hint`); from stream it would be "stream() got an unexpected keyword argument",
    naming a function the caller never called. Typed as returning the function it decorates
    (`F`), so that a type checker still sees that function's parameters and result."""
    def decorate(f: F) -> F:
        own = [p for p in inspect.signature(f).parameters.values() if p.kind is not p.VAR_KEYWORD]
        own_names, streams = {p.name for p in own}, inspect.signature(stream).parameters
        passed_on = [p for p in streams.values() if p.kind is p.KEYWORD_ONLY and p.name not in own_names | set(refused)]
        # stream's keyword-only names, and the refused ones, which the function itself says why it refuses;
        # not stream's positional ones (input_ids, for a text function): it passes those itself.
        valid = own_names | {p.name for p in passed_on} | set(refused)

        @functools.wraps(f)
        def checked(*args, **kwargs):
            if unknown := sorted(kwargs.keys() - valid):
                raise TypeError(f"{f.__name__}() got an unexpected keyword argument {unknown[0]!r}; "
                                f"{unknown_hint(unknown[0], valid, f.__name__, refused)}")
            return f(*args, **kwargs)

        checked.__signature__ = inspect.signature(f).replace(parameters=own + passed_on)  # type: ignore[attr-defined]
        return cast(F, checked)
    return decorate


# transformers' generate options (GenerationConfig's fields, as of transformers 5.25, and generate's
# own arguments) that minigpt does not take, sorted: a TypeError for one says so (or names minigpt's
# equivalent, `EQUIVALENTS`), never difflib's guess, which is wrong for many (bos_token_id → eos_token_id,
# top_h → top_p). tests/test_generate.py checks it against the installed transformers' own list.
TRANSFORMERS_ONLY = frozenset({
    "assistant_confidence_threshold", "assistant_early_exit", "assistant_ensemble_weight", "assistant_lookbehind",
    "assistant_model", "assistant_tokenizer", "bad_words_ids", "begin_suppress_tokens", "bos_token_id", "cache_config",
    "cache_implementation", "compile_config", "constraints", "continuous_batching_config", "custom_generate",
    "decoder_start_token_id", "disable_compile", "diversity_penalty", "dola_layers", "encoder_no_repeat_ngram_size",
    "encoder_repetition_penalty", "exponential_decay_length_penalty", "force_words_ids", "forced_bos_token_id",
    "forced_eos_token_id", "generation_config", "guidance_scale", "is_assistant", "logits_processor", "low_memory",
    "max_cache_len", "max_length", "max_matching_ngram_size", "max_time", "min_length", "negative_prompt_attention_mask",
    "negative_prompt_ids", "num_assistant_tokens", "num_assistant_tokens_schedule", "num_beam_groups",
    "output_attentions", "output_hidden_states", "output_logits", "output_scores", "penalty_alpha",
    "prefill_chunk_size", "prefix_allowed_tokens_fn", "prompt_lookup_num_tokens", "remove_invalid_values",
    "renormalize_logits", "return_dict_in_generate", "sequence_bias", "speculation_type", "stop_strings",
    "stopping_criteria", "suppress_tokens", "synced_gpus", "target_lookbehind", "token_healing", "top_h", "use_cache",
    "use_model_defaults", "use_mtp", "watermarking_config",
})
# Those that minigpt spells otherwise (and torch's `generator`): {name: (minigpt's argument, hint)}. The
# hint is given only by a function that takes that argument (stream_text takes no return_scores).
EQUIVALENTS = {
    "stop_strings": ("stop", "minigpt's is 'stop' (with tokenizer=, as transformers' stop_strings)"),
    "max_length": ("max_new_tokens", "minigpt's is 'max_new_tokens', which counts the new tokens alone (transformers' "
                                     "max_length counts the prompt's too)"),
    "min_length": ("min_new_tokens", "minigpt's is 'min_new_tokens', which counts the new tokens alone (transformers' "
                                     "min_length counts the prompt's too)"),
    "output_scores": ("return_scores", "minigpt's is 'return_scores': with beam search, each returned beam's score "
                                       "(transformers' sequences_scores); there are no per-step scores"),
    "return_dict_in_generate": ("return_scores", "minigpt returns a tuple instead: 'return_scores' adds beam search's "
                                                 "scores, 'return_stats' the timings"),
    "generator": ("seed", "minigpt's is 'seed', an int that seeds the draws' own generator"),
}


def unknown_hint(name: str, valid: set[str], function: str, refused: Collection[str] = ()) -> str:
    """What to pass instead of keyword `name`, which `function` does not take (`valid`: the names it
    does, `refused` among them those it turns down itself): minigpt's name for another library's
    (`EQUIVALENTS`) where `function` takes it; that minigpt has no such option (`TRANSFORMERS_ONLY`);
    else the closest valid name, else help()."""
    takes, hint = EQUIVALENTS.get(name, (None, None))
    if hint and takes in valid and takes not in refused:
        return hint
    if name in TRANSFORMERS_ONLY:
        who = function if hint else "minigpt"  # (minigpt's equivalent is one `function` turns down)
        return f"that is transformers' option, which {who} does not have: see help({function}) for every argument"
    close = difflib.get_close_matches(name, sorted(valid), n=1)
    return f"did you mean {close[0]!r}?" if close else f"see help({function}) for every argument"


# The result's type depends on return_scores and return_stats: these overloads tell a type checker
# which tuple each pair of values gives (the last: flags known only at run time).
@overload
def generate(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, *,
             tokenizer: TokenizerLike | None = None, return_scores: Literal[False] = False,
             return_stats: Literal[False] = False, **kwargs: Unpack[StreamOptions]) -> torch.Tensor: ...
@overload
def generate(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, *,
             tokenizer: TokenizerLike | None = None, return_scores: Literal[True],
             return_stats: Literal[False] = False, **kwargs: Unpack[StreamOptions]) -> tuple[torch.Tensor, torch.Tensor]: ...
@overload
def generate(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, *,
             tokenizer: TokenizerLike | None = None, return_scores: Literal[False] = False,
             return_stats: Literal[True], **kwargs: Unpack[StreamOptions]) -> tuple[torch.Tensor, GenerationStats]: ...
@overload
def generate(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, *,
             tokenizer: TokenizerLike | None = None, return_scores: Literal[True], return_stats: Literal[True],
             **kwargs: Unpack[StreamOptions]) -> tuple[torch.Tensor, torch.Tensor, GenerationStats]: ...
@overload
def generate(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, *,
             tokenizer: TokenizerLike | None = None, return_scores: bool = False, return_stats: bool = False,
             **kwargs: Unpack[StreamOptions]) -> torch.Tensor | tuple[Any, ...]: ...
@takes_stream_arguments()
def generate(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
             **kwargs: Any) -> torch.Tensor | tuple[Any, ...]:
    """Continue each prompt: input_ids (B, T) → LongTensor (B·num_return_sequences, T + new).

    `generate` is `stream` run to the end; its keyword arguments are `stream`'s (help(stream)).
    """
    return run_to_end(stream(model, input_ids, attention_mask, **kwargs))


# Generation never needs gradients. Without no_grad the KV cache would join the autograd graph
# (every cache write and step is recorded, so memory grows each token) and minigpt/linear.py
# would leave its fast inference path. On a generator, the decorator turns grad off for each
# resumption only: between yields and after the end the caller's grad mode is back.
@torch.no_grad()
def decode_loop(model: torch.nn.Module, args: DecodeArgs, stopper: StopStrings | None, *,
                streamer: Callable[[torch.Tensor], None] | None, compile: bool, return_scores: bool, return_stats: bool
                ) -> Generator[torch.Tensor, None, torch.Tensor | tuple]:
    """`stream`'s steps, from its checked arguments: prefill the prompts, then decode (penalize and
    ban → pick a token per row → feed it back) until every row has ended; the result is the
    generator's *return* value. Beam search (num_beams > 1) is handed to minigpt/beam_search.py."""
    if args.num_beams > 1:
        # A generator's `return`: no step is yielded, the result travels as StopIteration.value (run_to_end reads it).
        return hand_to_beam_search(model, args, compile=compile, return_scores=return_scores, return_stats=return_stats)
    prompt_tokens = args.attention_mask.sum()  # the prompts' real tokens, counted before the n copies
    input_ids, attention_mask = one_row_per_sample(args.input_ids, args.attention_mask, args.num_return_sequences)
    device, (B, T), V, pad = input_ids.device, input_ids.shape, model.config.vocab_size, args.pad
    # A streamer or stop strings read each step's tokens on the host anyway: looking every step costs no more.
    sync_every = 1 if streamer is not None or stopper else SYNC_EVERY.get(device.type, 1)
    timer = LoopTimer(device, waits_each_step=sync_every == 1)
    state = DecodeState(model, attention_mask, args.max_new_tokens, compile, slides=args.slide > 0)
    # The loop's own buffers (seq, finished, n_drawn, finite) live on the device too and are
    # updated in place: no allocation per step.
    seq, real = sequence_buffers(input_ids, attention_mask, args.max_new_tokens, pad, args.no_repeat_ngram_size)
    out = seq[:, T:]  # (B, max_new_tokens), column s: step s's tokens (a view of seq, which the n-gram ban reads)
    # Repetition counts the prompt too, presence/frequency only what the model wrote (None: no penalty on).
    counts = PenaltyCounts(input_ids, attention_mask, V, args.penalties, compile) if penalties_on(args.penalties) else None
    pick = step_picker(args.sampler, args.seed, B, device, args.sampling)  # (B, V) logits → (B,) tokens
    eos_ids, pad_is_token = torch.tensor(args.eos, dtype=torch.long, device=device), 0 <= pad < V
    finished = torch.zeros(B, dtype=torch.bool, device=device)
    n_drawn = torch.zeros(B, dtype=torch.long, device=device)  # tokens drawn per row until it finished (one op a step)
    finite = torch.ones((), dtype=torch.bool, device=device)  # every step's logits so far: no NaN/inf
    cuts: dict[int, int] = {}  # row → generated tokens kept before its stop string

    logits = state.prefill(input_ids)  # prefill: the whole prompt in one forward → the first step's logits (B, V)
    for step in range(args.max_new_tokens):
        logits = penalize_and_ban(logits, step, args, counts, seq[:, :T + step], real, eos_ids)
        # Noted on the device every step, raised when the host looks: every step on a CPU, every few
        # on a GPU, and once more after the loop, for the steps since its last look.
        finite &= live_rows_finite(logits, finished)
        if step % sync_every == 0:
            raise_if_nonfinite(finite, counts is not None, args.no_repeat_ngram_size)
        live = ~finished
        tokens = torch.where(live, pick(logits), pad)  # (B,): finished rows only pad
        n_drawn += live
        out[:, step] = tokens
        # What the counts and the model read: the same, but a pad that is no row of the embedding
        # (a stale config EOS) as 0. A finished row's input is never read back.
        ids = tokens if pad_is_token else torch.where(live, tokens, 0)
        end_rows(finished, cuts, tokens, live, eos_ids, stopper)
        if counts:
            counts.add(ids, live)
        if step == 0:
            timer.first_token()
        with timer.handed_out():  # the caller's time with the tokens is not decoding
            if streamer is not None:
                streamer(tokens)
            yield tokens
        if step + 1 == args.max_new_tokens or (step % sync_every == sync_every - 1 and finished.all()):
            break
        # Decode one token per row; with slide > 0 and a full context, prefill each full row's
        # last `slide` tokens (a row with room: all of its own) again instead.
        logits = next_logits(state, ids, args.slide)

    timer.stop()
    raise_if_nonfinite(finite, counts is not None, args.no_repeat_ngram_size)  # in the steps since the host's last look
    # The longest row's count is the number of steps that mattered: a GPU's loop may run a few
    # all-pad steps past the end, which trim_output drops.
    new_tokens, kept_steps = torch.stack([n_drawn.sum(), n_drawn.max()]).tolist()  # one host sync
    out = trim_output(seq, T, kept_steps, cuts, pad, eos_ids)  # (B, T + kept_steps)
    if not return_stats:
        return out
    # Every row was live at the first step: its B tokens are prefill's. `step` decode forwards ran
    # after it (all of them timed, the all-pad ones included).
    return out, timer.stats(prompt_tokens=int(prompt_tokens), new_tokens=new_tokens, first_tokens=B, steps=step,
                            kv_cache_bytes=state.cache.memory_bytes(), device=device)


def hand_to_beam_search(model: torch.nn.Module, args: DecodeArgs, *, compile: bool,
                        return_scores: bool, return_stats: bool) -> torch.Tensor | tuple:
    """num_beams > 1: minigpt/beam_search.py's `beam_search` from `stream`'s checked arguments."""
    return beam_search(model, args.input_ids, args.attention_mask, max_new_tokens=args.max_new_tokens,
                       min_new_tokens=args.min_new_tokens, num_beams=args.num_beams,
                       length_penalty=args.length_penalty, early_stopping=args.early_stopping, eos=args.eos, pad=args.pad,
                       num_return_sequences=args.num_return_sequences, penalties=args.penalties,
                       no_repeat_ngram_size=args.no_repeat_ngram_size, compile=compile, return_scores=return_scores,
                       return_stats=return_stats, textless=args.textless)


def one_row_per_sample(input_ids: torch.Tensor, attention_mask: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n samples per prompt are n rows: (B, T) → (B·n, T), rows b·n ... b·n + n - 1 being prompt
    b's samples (its sampling parameters already are one per row: `per_row`).

    One prompt's n rows are views of its one row (stride 0), not copies: whatever n, nothing is
    allocated here, and the KV cache, allocated next and far larger a row, is what says that the
    rows do not fit (a copy of `-n 10**9` rows would fail first, in 16 GB of ids, with torch's
    allocator error). Several prompts' rows are copied (no stride makes row b·n + k prompt b), into buffers
    that a device unable to hold them refuses with a MemoryError naming n. (A CPU's allocator
    reserves more than it has, so there a huge n fills memory with these rows before the KV cache's
    check refuses it: seconds and GBs for 3 prompts × 20 million, where one prompt costs nothing.)"""
    if n == 1:
        return input_ids, attention_mask
    (B, T), prompts = input_ids.shape, (input_ids, attention_mask)
    if B == 1:
        return input_ids.expand(n, T), attention_mask.expand(n, T)  # (n, T) each, stride 0 over the prompt
    rows = [empty_or_none((B * n, T), t.dtype, t.device) for t in prompts]
    if any(r is None for r in rows):
        size = B * n * T * sum(t.element_size() for t in prompts)
        raise MemoryError(f"the rows do not fit: {B:,} prompts × num_return_sequences={n:,} × {T:,} tokens, ids and "
                          f"mask, are {size:,} bytes ({size / 2**30:,.1f} GiB), which {input_ids.device} could not "
                          "allocate; generate fewer rows at once (batch size, num_return_sequences)")
    for r, t in zip(rows, prompts):
        r.view(B, n, T).copy_(t[:, None])  # (B, n, T) ← (B, 1, T): row b·n + k is prompt b
    return rows[0], rows[1]


def sequence_buffers(input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int, pad: int,
                     no_repeat_ngram_size: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Each row's whole sequence, (B, T + max_new_tokens): the prompt, then pads that step s's
    token overwrites at column T + s; and which of its columns the n-gram ban may read (None without
    the ban): left pads are no tokens, the new columns are.

    The result holds every token, so these are 8 bytes per token per row (and 1 for the ban's
    mask), allocated before the first step. With `slide` nothing else bounds max_new_tokens: a size
    the device cannot allocate is a MemoryError naming it (`sequence_memory_error`), before any work.
    """
    (B, T), device = input_ids.shape, input_ids.device
    dtypes = [torch.long, torch.bool] if no_repeat_ngram_size else [torch.long]
    # Allocated at full width and filled in place: a torch.cat of the prompt and the pads would
    # hold both copies at once, twice the memory at its peak.
    buffers = [empty_or_none((B, T + max_new_tokens), dtype, device) for dtype in dtypes]
    if any(buffer is None for buffer in buffers):
        raise sequence_memory_error(B, T, max_new_tokens, sum(dtype.itemsize for dtype in dtypes), device)
    seq = buffers[0]
    seq[:, :T], seq[:, T:] = input_ids, pad
    if not no_repeat_ngram_size:
        return seq, None
    real = buffers[1]
    real[:, :T], real[:, T:] = attention_mask.bool(), True
    return seq, real


def empty_or_none(shape: tuple[int, int], dtype: torch.dtype, device: torch.device) -> torch.Tensor | None:
    """torch.empty(shape), or None where the device cannot allocate it."""
    if shape[0] * shape[1] * dtype.itemsize >= 2**63:  # past torch's int64 byte count: an overflow error, not an OOM
        return None
    try:
        return torch.empty(shape, dtype=dtype, device=device)
    except RuntimeError as e:  # torch.OutOfMemoryError on a GPU; the CPU allocator's "can't allocate memory"
        if is_out_of_memory(e):
            return None
        raise


def sequence_memory_error(B: int, T: int, max_new_tokens: int, token_bytes: int, device: torch.device) -> MemoryError:
    """The MemoryError for sequence buffers (B rows × T + max_new_tokens columns, `token_bytes` per
    token) too big for `device`: their size, and what shrinks it."""
    size = B * (T + max_new_tokens) * token_bytes
    return MemoryError(
        f"the generated ids do not fit: {B:,} row{'s' * (B != 1)} × ({T:,} prompt + max_new_tokens={max_new_tokens:,}) tokens × "
        f"{token_bytes} bytes is {size:,} bytes ({size / 2**30:,.1f} GiB), which {device} could not allocate; the result "
        "holds every token, so generate fewer tokens (max_new_tokens) or fewer rows at once (batch size, "
        "num_return_sequences)")


def penalize_and_ban(logits: torch.Tensor, step: int, args: DecodeArgs, counts: PenaltyCounts | None,
                     so_far: torch.Tensor, real: torch.Tensor | None, eos_ids: torch.Tensor) -> torch.Tensor:
    """What step `step` may draw: logits (B, V) → (B, V), penalized, with -inf on every banned id.

    transformers' order: ids with no text → penalties (`counts`) → n-gram ban → min_new_tokens'
    EOS mask (→ the filters, in `pick`). so_far (B, T + step): each row's ids, prompt included;
    real: which of the whole sequence's columns are tokens (None without the n-gram ban).
    """
    if args.textless is not None:  # ids the tokenizer has no token for: no option (before any penalty or filter)
        logits = logits.index_fill(1, args.textless, float("-inf"))
    if counts:
        logits = counts.penalize(logits)
    if args.no_repeat_ngram_size:
        logits = ban_repeated_ngrams(logits, so_far, args.no_repeat_ngram_size, real[:, :so_far.size(1)])
    if step < args.min_new_tokens and args.eos:
        logits = logits.index_fill(1, eos_ids, float("-inf"))  # too early to end: EOS is no option yet
    return logits


def live_rows_finite(logits: torch.Tensor, finished: torch.Tensor) -> torch.Tensor:
    """Whether every unfinished row still has a finite best logit (its amax over V): a bool on the
    device, no host sync. Banned tokens (-inf) are expected and pass; NaN, +inf, or every token
    banned do not.

    NaN/inf logits mean a broken model, not a token (amax propagates NaN; +inf would make the
    softmax NaN). Only live rows count: a finished row draws nothing (it pads), and the n-gram ban,
    reading its pads as tokens, may leave it no token at all while the other rows run on."""
    return (torch.isfinite(logits.amax(-1)) | finished).all()


def raise_if_nonfinite(finite: torch.Tensor, penalized: bool, no_repeat_ngram_size: int) -> None:
    """FloatingPointError unless `finite` (a host sync). Checked after the penalties, so a logit a
    penalty pushed past float range is caught too, not drawn as a token: the message names each cause."""
    if bool(finite):
        return
    message = f"{NONFINITE}, or {PENALTY_OVERFLOW}" if penalized else NONFINITE
    if no_repeat_ngram_size:
        message += f", or {NGRAM_EXHAUSTED}"
    raise FloatingPointError(message)


def end_rows(finished: torch.Tensor, cuts: dict[int, int], tokens: torch.Tensor, live: torch.Tensor,
             eos_ids: torch.Tensor, stopper: StopStrings | None) -> None:
    """Mark, in `finished` (B,), the rows this step's tokens (B,) end: at an EOS id, or at a stop
    string in a live row's text (`stopper`), which also puts row → the generated tokens it keeps in `cuts`.
    An EOS is not text: its name ("<|endoftext|>") is never searched for a stop string, which would cut it off."""
    ended = torch.isin(tokens, eos_ids)  # (B,) all False when there is no EOS id
    finished |= ended
    if stopper:  # the text is on the host: one sync a step
        for row, (token, alive) in enumerate(zip(tokens.tolist(), (live & ~ended).tolist())):
            keep = stopper.add(row, token) if alive else None
            if keep is not None:
                finished[row], cuts[row] = True, keep


def next_logits(state: DecodeState, ids: torch.Tensor, slide: int) -> torch.Tensor:
    """Decode: each row's newest token `ids` (B,) goes through the model, one token per row, for the
    next step's logits (B, V). When the context is full (slide > 0), each full row's last `slide`
    tokens (a row with room: all of its own) are prefilled again instead, from position 0, and
    decoding goes on."""
    if not state.full():
        return state.step(ids[:, None])  # (B, 1)
    return state.slide(ids, slide)


def trim_output(seq: torch.Tensor, T: int, steps: int, cuts: dict[int, int], pad: int,
                eos_ids: torch.Tensor) -> torch.Tensor:
    """The loop's sequences `seq` (B, T + max_new_tokens: the prompts, then its tokens) → the result
    (B, T + steps).

    `steps` counts the steps in which some row was unfinished: on a GPU the loop may run a few
    all-pad steps past the end, which are dropped here. `cuts` maps each row cut at a stop string
    to the generated tokens it keeps; the rest of the row becomes pads. The result is `seq` itself
    when every step ran (no copy, which would double the peak that `sequence_buffers` checked:
    the case of a huge max_new_tokens with slide), else a copy of its first T + steps columns,
    which frees `seq` (a view would hold it whole, and be no contiguous tensor).
    """
    out = seq[:, T:]
    if cuts:
        # A row cut at its stop string ends before the step that found it, so the output is as wide
        # as its longest row: a cut row's kept tokens, another's up to its EOS (or every step).
        for row, keep in cuts.items():
            out[row, keep:] = pad  # the stop string (and the start of its first token) never reaches the output
        hit = torch.isin(out[:, :steps], eos_ids)  # (B, steps)
        lengths = torch.where(hit.any(1), hit.int().argmax(1) + 1, steps).tolist()
        steps = max(cuts.get(row, length) for row, length in enumerate(lengths))
    return seq if steps == out.size(1) else seq[:, :T + steps].clone()
