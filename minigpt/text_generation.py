"""Text in, text out: one prompt's continuation as text, streamed piece by piece or whole, and
many prompts' continuations, run in batches.

Where it sits: the two ends of the data flow, around the decode loop of minigpt/generation.py:
`text → Tokenizer.encode → ids → stream (prefill → decode loop) → ids → Tokenizer.decode → text`.

Tokens are not characters: one UTF-8 character may be spelled over several tokens, and a stop
string may begin inside a token. So `stream_text` holds back text until it is final (a
half-spelled character, or what could be the start of a stop string), and `generate_text` cuts
each sequence at the character where its first stop string begins, not at a token boundary.
`generate_texts` does the same for a list of prompts: it sorts them by length (less padding),
runs them `batch_size` at a time as left-padded batches, and cuts every row as `generate_text`
does (`cut_text`), so each prompt's greedy or beam texts are the ones it gets alone.
What the text functions do not do: stream several prompts, or hand back a batch before the last
one is done (`generate_texts` returns all texts at the end, in the prompts' order).
"""
from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Generator, Literal, overload

import torch
from tqdm import tqdm

from minigpt.generation import DEFAULT_MAX_NEW_TOKENS, StreamOptions, TokenizerLike, run_to_end, stream, takes_stream_arguments
from minigpt.checks import as_count, check_flag
from minigpt.generate_args import BEAM_SETTINGS_OFF, check_model, eos_list, prompt_room
from minigpt.penalties import PENALTIES_OFF
from minigpt.progress_bar import given_or_new_bar
from minigpt.sampling import SAMPLING_DEFAULTS, check_seed
from minigpt.stats import GenerationStats
from minigpt.stop_strings import first_stop, stop_list
from minigpt.tokenizer_batch import pad_rows

if TYPE_CHECKING:  # read by type checkers alone (annotations are strings here): Python 3.10's typing lacks it
    from typing_extensions import Unpack


def prompt_ids(tokenizer, prompt: str | list[int], name: str = "prompt") -> torch.Tensor:
    """One prompt, as text or its token ids (a list, or a 1-D tensor or NumPy array, or a (1, T)
    one as the tokenizer's `return_tensors="pt"` gives) → ids (1, T).

    The text-in functions continue *one* prompt; several prompts are a padded batch for
    `generate`, so a list of texts (or a (B > 1, T) array) is refused here by name instead of
    failing inside torch. `name` is the prompt's in errors (`generate_texts`' prompts[i]).
    """
    if isinstance(prompt, str):
        return torch.tensor([encode_prompt(tokenizer, prompt, name)], dtype=torch.long)
    shape = getattr(prompt, "shape", None)  # a tensor or an array
    if shape is not None and (len(shape) == 1 or (len(shape) == 2 and shape[0] == 1)):
        prompt = prompt.reshape(-1).tolist()
    if not isinstance(prompt, (list, tuple)) or not all(isinstance(t, numbers.Integral) for t in prompt):
        got = f"shape {tuple(shape)}" if shape is not None else type(prompt).__name__
        raise TypeError(f"prompt must be one text (str) or its token ids (a list of ints, or a 1-D or (1, T) tensor), got {got}; "
                        "for several prompts pass a left-padded batch to generate()")
    return torch.tensor([list(prompt)], dtype=torch.long)


def encode_prompt(tokenizer, text: str, name: str = "prompt") -> list[int]:
    """A text prompt's ids, as `tokenizer.encode` gives them: a special token's name in the text is
    refused, as tiktoken refuses it. The tokenizer's advice then, "pass allowed_special=...", is an
    argument of encode that the text functions do not take, so the error is said again with advice
    that works from them: encode the prompt yourself, and pass its ids."""
    try:
        return tokenizer.encode(text)
    except ValueError:
        specials = getattr(tokenizer, "special_tokens", None) or {}  # name → id (minigpt's Tokenizer)
        found = [(text.find(token), -len(token), token) for token in specials if token in text]
        if not found:  # another refusal: as the tokenizer says it
            raise
        position, _, token = min(found)  # the first in the text (the longest, of names that start there)
        raise ValueError(
            f"{name} contains the special token {token!r} at position {position}, which the text functions do not "
            f"encode from text: encode the prompt yourself and pass its ids, "
            f"tokenizer.encode(prompt, allowed_special={{{token!r}}}) for it as id {specials[token]} (or "
            f"allowed_special='all'), or tokenizer.encode_ordinary(prompt) for it as plain text") from None


# As `generate`'s overloads (minigpt/generation.py): the generator's return value with return_stats.
@overload
def stream_text(model: torch.nn.Module, tokenizer: TokenizerLike, prompt: str | list[int], *, truncate_left: bool = False,
                return_stats: Literal[False] = False,
                **kwargs: Unpack[StreamOptions]) -> Generator[str, None, torch.Tensor]: ...
@overload
def stream_text(model: torch.nn.Module, tokenizer: TokenizerLike, prompt: str | list[int], *, truncate_left: bool = False,
                return_stats: Literal[True],
                **kwargs: Unpack[StreamOptions]) -> Generator[str, None, tuple[torch.Tensor, GenerationStats]]: ...
@overload
def stream_text(model: torch.nn.Module, tokenizer: TokenizerLike, prompt: str | list[int], *, truncate_left: bool = False,
                return_stats: bool = False,
                **kwargs: Unpack[StreamOptions]) -> Generator[str, None, torch.Tensor | tuple[Any, ...]]: ...
# What stream_text turns down itself (so help() does not list them): a mask other than all ones,
# and the options of several sequences (beam search's among them), whose texts generate_text returns.
@takes_stream_arguments(refused=("attention_mask", "num_beams", "num_return_sequences", "return_scores", *BEAM_SETTINGS_OFF))
def stream_text(model: torch.nn.Module, tokenizer: TokenizerLike, prompt: str | list[int], *, truncate_left: bool = False,
                **kwargs: Any) -> Generator[str, None, torch.Tensor | tuple[Any, ...]]:
    """Continue one prompt, yielding text pieces (never "") as tokens arrive (what `minigpt generate
    --stream` prints); finally *return* what `generate` returns. `kwargs` are `stream`'s.

    `prompt` is text or its token ids: ids cut from a longer prompt must be passed as they are, as
    their decoded text need not re-encode to the same ids (`truncate_left=True` cuts it here, as
    `generate_text` does).
    Text is held back while it ends in an incomplete UTF-8 character or could be the start of a
    stop string, so a stop string never appears, even in part. EOS ends the text silently.
    Arguments are checked at the call, as `stream` checks its own. One sequence streams: beam
    search (num_beams, return_scores, length_penalty, early_stopping) chooses its text only at the
    end, and n samples are n texts; `generate_text` returns those texts.
    """
    for name in ("num_beams", "num_return_sequences"):  # 1, the default, is taken: one sequence
        if as_count(name, kwargs.get(name, 1)) > 1:  # ("2" would fail in the comparison)
            raise ValueError(f"stream_text streams one sequence token by token, so {name} > 1 is not "
                             f"supported: use generate_text({name}=...), which returns each sequence's text")
    check_flag("return_scores", kwargs.get("return_scores", False))  # "no" is no switch, before it is read as True
    if kwargs.get("return_scores"):  # (stream's own message would ask for num_beams > 1, which is refused here)
        raise ValueError("stream_text streams one sequence token by token, so return_scores (beam search's) is not "
                         "supported: use generate_text(num_beams=..., return_scores=True), which returns the beams' texts")
    # Beam search's settings, at `stream`'s defaults (what `minigpt generate --stream` passes), are
    # taken: they change nothing. Any other value would get stream's "pass num_beams > 1" warning
    # (`warn_unused_beam_settings`, which reads the same BEAM_SETTINGS_OFF), refused here instead.
    for name, off in BEAM_SETTINGS_OFF.items():
        if kwargs.get(name, off) != off:
            raise ValueError(f"stream_text streams one sequence token by token, so {name} (beam search's) is not "
                             f"supported: use generate_text(num_beams=..., {name}=...), which returns the beams' texts")
    ids, stops, eos = text_args(model, tokenizer, prompt, kwargs, truncate_left)
    # One prompt, no padding: its mask is all ones (no id of it is taken for a pad, as a mask-less
    # `stream` would take a pad id that is no EOS).
    steps = stream(model, ids, attention_mask=torch.ones_like(ids), tokenizer=tokenizer, **kwargs)
    return text_pieces(steps, tokenizer, stops, eos)


def text_args(model: torch.nn.Module, tokenizer, prompt: str | list[int], kwargs: dict,
              truncate_left: bool = False) -> tuple[torch.Tensor, list[str], set[int]]:
    """What both text functions need beside `stream`'s own arguments: the prompt's ids (1, T), and
    the stop strings and EOS ids that end the text. `truncate_left=True` (theirs, not `stream`'s)
    keeps the prompt's last tokens that fit the context, as `generate_texts` and --truncate-left do."""
    check_model(model)
    check_flag("truncate_left", truncate_left)
    mask = kwargs.pop("attention_mask", None)  # one prompt has no pads: its mask is all ones (passed by the caller)
    if mask is not None and not bool(torch.as_tensor(mask).all()):
        raise ValueError("attention_mask has a 0, but one prompt has no padding: give the prompt itself; for a padded "
                         "batch, generate takes input_ids and attention_mask")
    start = check_tokenizer(model, tokenizer, kwargs)
    ids = starting(prompt_ids(tokenizer, prompt)[0].tolist(), start)
    if truncate_left:
        max_new = as_count("max_new_tokens", kwargs.get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS))
        ids = fit_context([ids], model, max_new, True, as_count("slide", kwargs.get("slide", 0)))[0]
    return torch.tensor([ids], dtype=torch.long), stop_list(kwargs.get("stop")), set(eos_list(model, kwargs.get("eos_token_id")))


def tokenizer_ids(model: torch.nn.Module, tokenizer) -> tuple[int | None, int | None]:
    """(end, start): the ids the text functions take from the tokenizer, after checking that it is
    the model's own (`GPTConfig.fits_tokenizer`): another's ids mean other tokens to the model, and
    a larger one's ids would fail only at the decode, after all the work. (A tokenizer that only
    encodes and decodes, with no vocab_size, is taken on trust: (None, None).)

    end: the tokenizer's <|endoftext|> when the model's config names no EOS it has (`has_stale_eos`:
    a preset given another vocab_size keeps GPT-2's 50256), so its texts end there, as the CLI's
    do; else None, the config's own EOS.
    start: the id an empty prompt starts from when the config's bos_token_id is no id of the model
    (null, or GPT-2's 50256 that older minigpt checkpoints keep for both ids): the tokenizer's
    <|endoftext|>, as the CLI starts from; else None, `stream` starts from the config's own.
    The model's config is left as it is; it is the caller's."""
    if not (callable(getattr(tokenizer, "encode", None)) and callable(getattr(tokenizer, "decode", None))):
        # A name ("gpt2") would fail as str.encode's "unknown encoding: hi", None as an AttributeError.
        load = f": load it with Tokenizer.from_pretrained({tokenizer!r})" if isinstance(tokenizer, str) else ""
        raise TypeError(f"tokenizer must be a Tokenizer (Tokenizer.from_pretrained(...)), or an object with encode and "
                        f"decode, got {type(tokenizer).__name__} {tokenizer!r}{load}")
    config, size, eos = model.config, getattr(tokenizer, "vocab_size", None), getattr(tokenizer, "eos_token_id", None)
    if size is None:
        return None, None
    if why := config.tokenizer_mismatch(size, eos):
        raise ValueError(f"{why}; pass the model's own tokenizer")
    end = eos if config.has_stale_eos else None
    return end, (eos if eos is not None and not config.has_bos else None)


def check_tokenizer(model: torch.nn.Module, tokenizer, kwargs: dict) -> int | None:
    """`tokenizer_ids` for the text functions, which pass `stream`'s arguments on as `kwargs`: the
    end id goes into them as eos_token_id, unless the caller gave one; returns the start id."""
    end, start = tokenizer_ids(model, tokenizer)
    if kwargs.get("eos_token_id") is None and end is not None:
        kwargs["eos_token_id"] = end
    return start


def starting(ids: list[int], start: int | None) -> list[int]:
    """One prompt's ids, an empty one given `start` (`tokenizer_ids`') as its only token: what
    `stream` would make of it, had the config a begin token the model has."""
    return [start] if not ids and start is not None else ids


def text_pieces(steps: Generator[torch.Tensor, None, torch.Tensor | tuple[Any, ...]], tokenizer: TokenizerLike,
                stops: list[str], eos: set[int]) -> Generator[str, None, torch.Tensor | tuple[Any, ...]]:
    """`stream_text`'s pieces: one row's tokens from `steps` → the text that is final so far, in
    pieces that are never empty: a step that makes no text final yields nothing.

    Each step decodes only the tokens since the text last ended on a whole character, and looks
    for stop strings only where a new one can be: decoding the whole text each step made a long
    stream (--slide, 100k tokens) slower with every token. Text that ends on a whole character
    decodes the same alone as with more bytes after it (UTF-8 starts afresh there)."""
    # The text from character `start` on is `window` (decoded, whole characters) + the decoding of
    # `tokens`; what lies before `start` is shown. No stop string can begin in shown text: what
    # could begin one is held back (below) until the text shows it is none.
    start, window, tokens = 0, "", []
    sent, ended = 0, False  # characters already yielded; EOS or a stop string seen
    while True:
        try:
            token = int(next(steps)[0])
        except StopIteration as end:
            # What was held back is final now, its last characters too: searched whole, as `cut_text` searches.
            if not ended and (rest := until_stop((window + tokenizer.decode(tokens))[sent - start:], stops)):
                yield rest
            return end.value
        if ended:
            continue
        if token in eos:  # the text is over: what was held back (a stop string's possible start) is final
            if rest := until_stop((window + tokenizer.decode(tokens))[sent - start:], stops):
                yield rest
            ended = True
            continue
        tokens.append(token)
        tail = tokenizer.decode(tokens)
        text, shown = window + tail, sent - start  # (indices in `text` count from `start`)
        # The whole characters: a U+FFFD at the end may be a character still being spelled out,
        # neither shown nor searched (a stop string "\ufffd" would match it, and the finished text need not hold it).
        whole = text[:max(len(whole_characters(text)), shown)]
        if (cut := first_stop(whole[shown:], stops)) >= 0:
            if cut > 0:
                yield text[shown:shown + cut]
            ended = True
            continue
        # Then hold back what could begin a stop string, judged on the whole characters: with
        # "User：" as the stop, "User" followed by a half-spelled "：" must wait too.
        ready = len(whole) - max((k for s in stops for k in range(1, len(s)) if whole.endswith(s[:k])), default=0)
        if ready > shown:
            yield text[shown:ready]
            sent = start + ready
        if not tail.endswith("\ufffd"):  # whole characters: decode from here on, keep what is not shown
            start, window, tokens = sent, text[sent - start:], []


# As `generate`'s overloads (minigpt/generation.py): which tuple each return_scores, return_stats pair gives.
@overload
def generate_text(model: torch.nn.Module, tokenizer: TokenizerLike, prompt: str | list[int], *, truncate_left: bool = False,
                  return_scores: Literal[False] = False, return_stats: Literal[False] = False,
                  **kwargs: Unpack[StreamOptions]) -> list[str]: ...
@overload
def generate_text(model: torch.nn.Module, tokenizer: TokenizerLike, prompt: str | list[int], *, truncate_left: bool = False,
                  return_scores: Literal[True], return_stats: Literal[False] = False,
                  **kwargs: Unpack[StreamOptions]) -> tuple[list[str], list[float]]: ...
@overload
def generate_text(model: torch.nn.Module, tokenizer: TokenizerLike, prompt: str | list[int], *, truncate_left: bool = False,
                  return_scores: Literal[False] = False, return_stats: Literal[True],
                  **kwargs: Unpack[StreamOptions]) -> tuple[list[str], GenerationStats]: ...
@overload
def generate_text(model: torch.nn.Module, tokenizer: TokenizerLike, prompt: str | list[int], *, truncate_left: bool = False,
                  return_scores: Literal[True], return_stats: Literal[True],
                  **kwargs: Unpack[StreamOptions]) -> tuple[list[str], list[float], GenerationStats]: ...
@overload
def generate_text(model: torch.nn.Module, tokenizer: TokenizerLike, prompt: str | list[int], *, truncate_left: bool = False,
                  return_scores: bool = False, return_stats: bool = False,
                  **kwargs: Unpack[StreamOptions]) -> list[str] | tuple[Any, ...]: ...
@takes_stream_arguments(refused=("attention_mask",))  # one prompt's is all ones: any other, refused
def generate_text(model: torch.nn.Module, tokenizer: TokenizerLike, prompt: str | list[int], *, truncate_left: bool = False,
                  **kwargs: Any) -> list[str] | tuple[Any, ...]:
    """Continue one prompt; return the new text of each sequence (`num_return_sequences` samples,
    or that many of the best beams, best first). `kwargs` are `stream`'s; with return_stats=True
    the result is `(texts, GenerationStats)`, with beam search's return_scores=True `(texts, scores)`
    (each beam's score, a float: `stream`'s), with both `(texts, scores, GenerationStats)`. A prompt
    too long for the context is an error, or with `truncate_left=True` keeps its last tokens (as
    `generate_texts`, and the CLI's --truncate-left).

    Each text ends before its first EOS or stop string, cut at the character as `stream_text`
    cuts it (`cut_text`).
    """
    ids, stops, eos = text_args(model, tokenizer, prompt, kwargs, truncate_left)
    texts, scores, stats = row_texts(model, tokenizer, ids, torch.ones_like(ids), stops, eos, kwargs)  # one prompt: no pads
    return with_extras(texts, scores, stats)


def with_extras(result, scores, stats):
    """The text functions' result as `generate` composes its own: `result`, then the scores and
    the stats, each where it was asked for (not None)."""
    extras = tuple(x for x in (scores, stats) if x is not None)
    return (result, *extras) if extras else result


def row_texts(model: torch.nn.Module, tokenizer, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
              stops: list[str], eos: set[int], kwargs: dict
              ) -> tuple[list[str], list[float] | None, GenerationStats | None]:
    """Run `stream` on left-padded prompts (B, T) → each output row's new text (B·n rows: a prompt's
    n sequences one after another), and the beams' scores and the stats if `kwargs` asked for them.

    The texts come from the tokens as they were drawn, not from `generate`'s ids: those can only
    end at a whole token, and the one holding the start of a stop string may begin with text to keep.
    """
    steps = stream(model, input_ids, attention_mask, tokenizer=tokenizer, **kwargs)
    drawn: list[torch.Tensor] = []  # each step's (rows,) tokens; beam search yields none (its beams are chosen at the end)
    result = run_to_end(steps, drawn.append)
    out, *extras = result if isinstance(result, tuple) else (result,)
    scores = extras.pop(0).tolist() if kwargs.get("return_scores") else None
    stats = extras.pop(0) if extras else None
    prompt_len = max(input_ids.size(1), 1)  # an empty prompt became <|endoftext|>
    rows = torch.stack(drawn, 1).tolist() if drawn else out[:, prompt_len:].tolist()  # (rows, new)
    return [cut_text(row, tokenizer, stops, eos, model.config.vocab_size) for row in rows], scores, stats


def cut_text(row: list[int], tokenizer, stops: list[str], eos: set[int], vocab_size: int) -> str:
    """One row's new tokens → its text: the tokens before the first EOS, decoded, then cut at the
    character where the earliest stop string begins. (A row that ended early is followed by pads:
    EOS, or anything after its stop string, so they never reach the text.)

    An id ≥ the model's `vocab_size` ends the text too: the model never draws one, so it is a pad,
    the config's EOS of a model that has no such token (with `eos_token_id=[]` it is no EOS here,
    and the tokenizer could not decode it)."""
    end = next((i for i, t in enumerate(row) if t in eos or t >= vocab_size), len(row))  # the first EOS or pad
    text = tokenizer.decode(row[:end])
    if first_stop(text, stops) < 0:
        return text
    # The loop ended the row at the first token whose text holds a stop string. What follows it are
    # pads (while other rows ran on): a pad_token_id that is a token has text, which could complete
    # a longer stop string that starts earlier. So cut the text the row had when it stopped: the
    # shortest prefix holding a stop in its whole characters, as `text_pieces` searches them (once
    # one does, every longer one does; a half-spelled character's U+FFFD would not stay).
    lo, hi = 1, end
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if first_stop(whole_characters(tokenizer.decode(row[:mid])), stops) >= 0 else (mid + 1, hi)
    text = tokenizer.decode(row[:lo])
    return until_stop(text if lo == end else whole_characters(text), stops)


def whole_characters(text: str) -> str:
    """Decoded text less the U+FFFD it ends in: the part that more tokens cannot change. A character
    spelled over several tokens decodes as U+FFFD until its last byte comes (UTF-8 starts afresh
    after a whole character, so what comes before it stays as it is)."""
    return text.rstrip("\ufffd")


def until_stop(text: str, stops: list[str]) -> str:
    """`text` up to its earliest stop string (all of it, without one)."""
    cut = first_stop(text, stops)
    return text if cut < 0 else text[:cut]


# Sampling parameters that `stream` takes as one value per prompt ((B,) tensors): `generate_texts`
# takes them per prompt of the whole list and hands each batch its own.
PER_PROMPT = (*SAMPLING_DEFAULTS, *PENALTIES_OFF)


class PromptTooLong(ValueError):
    """A prompt of `generate_texts` that leaves no room for `max_new_tokens` in the context: which
    one (`index` in the list), its `length` in tokens and the `room` there is (the CLI names the line)."""

    def __init__(self, index: int, length: int, room: int, max_new_tokens: int, n_positions: int,
                 slide: int = 0) -> None:
        self.index, self.length, self.room = index, length, room
        cut = "shorten it{}, or keep each prompt's last tokens (truncate_left=True)"
        if slide:  # the room is the whole context whatever max_new_tokens: only the prompt is too long
            super().__init__(f"prompts[{index}] is {length} tokens, but the model's context n_positions={n_positions} "
                             f"must hold the whole prompt, even when it slides (slide={slide}): {cut.format('')}")
            return
        # Fewer new tokens help only a prompt that fits the context alone.
        fewer = f", generate fewer tokens (at most {n_positions + 1 - length} for this prompt)" if length <= n_positions else ""
        super().__init__(f"prompts[{index}] is {length} tokens, but with max_new_tokens {max_new_tokens} the model's "
                         f"context n_positions={n_positions} has room for {room}: {cut.format(fewer)}")


# As `generate`'s overloads (minigpt/generation.py): which tuple each return_scores, return_stats pair gives.
@overload
def generate_texts(model: torch.nn.Module, tokenizer: TokenizerLike, prompts: Sequence[str | list[int]], *, batch_size: int = 8,
                   truncate_left: bool = False, progress: bool | tqdm = False,
                   return_scores: Literal[False] = False, return_stats: Literal[False] = False,
                   **kwargs: Unpack[StreamOptions]) -> list[list[str]]: ...
@overload
def generate_texts(model: torch.nn.Module, tokenizer: TokenizerLike, prompts: Sequence[str | list[int]], *, batch_size: int = 8,
                   truncate_left: bool = False, progress: bool | tqdm = False,
                   return_scores: Literal[True], return_stats: Literal[False] = False,
                   **kwargs: Unpack[StreamOptions]) -> tuple[list[list[str]], list[list[float]]]: ...
@overload
def generate_texts(model: torch.nn.Module, tokenizer: TokenizerLike, prompts: Sequence[str | list[int]], *, batch_size: int = 8,
                   truncate_left: bool = False, progress: bool | tqdm = False,
                   return_scores: Literal[False] = False, return_stats: Literal[True],
                   **kwargs: Unpack[StreamOptions]) -> tuple[list[list[str]], list[GenerationStats]]: ...
@overload
def generate_texts(model: torch.nn.Module, tokenizer: TokenizerLike, prompts: Sequence[str | list[int]], *, batch_size: int = 8,
                   truncate_left: bool = False, progress: bool | tqdm = False,
                   return_scores: Literal[True], return_stats: Literal[True],
                   **kwargs: Unpack[StreamOptions]) -> tuple[list[list[str]], list[list[float]], list[GenerationStats]]: ...
@overload
def generate_texts(model: torch.nn.Module, tokenizer: TokenizerLike, prompts: Sequence[str | list[int]], *, batch_size: int = 8,
                   truncate_left: bool = False, progress: bool | tqdm = False,
                   return_scores: bool = False, return_stats: bool = False,
                   **kwargs: Unpack[StreamOptions]) -> list[list[str]] | tuple[Any, ...]: ...
@takes_stream_arguments(refused=("streamer", "attention_mask"))  # its batches run sorted by length: a streamer would see them out of order
def generate_texts(model: torch.nn.Module, tokenizer: TokenizerLike, prompts: Sequence[str | list[int]], *, batch_size: int = 8,
                   truncate_left: bool = False, progress: bool | tqdm = False,
                   **kwargs: Any) -> list[list[str]] | tuple[Any, ...]:
    """Continue many prompts, `batch_size` at a time: for each prompt, in the order given, the new
    texts of its `num_return_sequences` samples (or best beams), cut as `generate_text` cuts them.
    `kwargs` are `stream`'s; a sampling parameter may be a tensor with one value per prompt. With
    return_stats=True the result is `(texts, [GenerationStats of each batch])`; with beam search's
    return_scores=True `(texts, scores)`, scores[i] the scores of prompts[i]'s beams; with both
    `(texts, scores, stats)`.

    Each prompt is text or its token ids. Prompts are sorted by length, so a batch holds prompts of
    about one length (little padding), and left-padded; a padded row decodes as it would alone, so
    greedy and beam texts are each prompt's own. Sampled texts depend on the batch the prompt lands
    in: a `seed` makes one call reproducible (each batch draws from its own seed, derived from
    it), not equal across batch sizes. A prompt too long for the context is a `PromptTooLong`
    error naming it, checked before any batch runs; `truncate_left=True` keeps its last tokens
    instead (as the CLI's --truncate-left). `progress=True` shows a bar on stderr (a tqdm bar given is
    moved on instead, so that several calls can share one).
    """
    if isinstance(prompts, (str, torch.Tensor)) or not isinstance(prompts, Sequence):
        hint = " (for one prompt, use generate_text or pass [prompt])" if isinstance(prompts, str) else \
            " (a padded batch of ids goes to generate)" if isinstance(prompts, torch.Tensor) else ""
        raise TypeError(f"prompts must be a list of prompts, got {type(prompts).__name__}{hint}")
    if prompts and all(isinstance(t, numbers.Integral) for t in prompts):  # one prompt's ids, not a list of prompts
        raise TypeError("prompts is a list of ints: one prompt's token ids; pass a list of prompts ([ids])")
    check_model(model)
    batch_size = as_count("batch_size", batch_size)
    if batch_size < 1:
        raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
    if "attention_mask" in kwargs:  # (else "got multiple values for 'attention_mask'", from deep inside)
        raise TypeError("generate_texts pads each batch and makes its attention_mask itself: give the prompts alone "
                        "(for ids you padded, generate takes input_ids and attention_mask)")
    if kwargs.get("streamer") is not None:
        raise ValueError("generate_texts runs the prompts sorted by length, so a streamer would see rows out of order: "
                         "stream a left-padded batch with stream() instead")
    start = check_tokenizer(model, tokenizer, kwargs)
    encoded, V = [], model.config.vocab_size
    for i, prompt in enumerate(prompts):
        try:
            encoded.append(starting(prompt_ids(tokenizer, prompt, f"prompts[{i}]")[0].tolist(), start))
        except TypeError:
            raise TypeError(f"prompts[{i}] must be one text (str) or its token ids (a list of ints), "
                            f"got {type(prompt).__name__}") from None
        ids = encoded[-1]  # before any batch runs: a bad id in a later batch was found after the earlier ones had run
        if ids and not 0 <= min(ids) <= max(ids) < V:
            bad = min(ids) if min(ids) < 0 else max(ids)
            raise ValueError(f"prompts[{i}] holds token id {bad}, but the model's ids are 0 .. {V - 1}")
    check_flag("truncate_left", truncate_left)
    encoded = fit_context(encoded, model, as_count("max_new_tokens", kwargs.get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS)),
                          truncate_left, as_count("slide", kwargs.get("slide", 0)))
    per_prompt = {}
    for name in PER_PROMPT:
        value = kwargs.get(name)
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            if value.shape != (len(prompts),):
                raise ValueError(f"{name} has shape {tuple(value.shape)}; one value per prompt is ({len(prompts)},)")
            per_prompt[name] = value
    stops, eos = stop_list(kwargs.get("stop")), set(eos_list(model, kwargs.get("eos_token_id")))
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))  # stable: equal lengths keep their order
    starts = range(0, len(order), batch_size)
    seeds = batch_seeds(kwargs.get("seed"), len(starts))
    texts: list[list[str]] = [[] for _ in prompts]
    scores: list[list[float]] = [[] for _ in prompts]
    all_stats: list[GenerationStats] = []
    with given_or_new_bar(progress, total=len(prompts), desc="generating", unit="prompt") as bar:
        for start, seed in zip(starts, seeds):
            batch = order[start:start + batch_size]
            input_ids, attention_mask = left_pad([encoded[i] for i in batch])
            picked = torch.tensor(batch)
            batch_kwargs = {**kwargs, "seed": seed, **{name: value[picked] for name, value in per_prompt.items()}}
            rows, row_scores, stats = row_texts(model, tokenizer, input_ids, attention_mask, stops, eos, batch_kwargs)
            n = len(rows) // len(batch)  # rows b·n ... b·n + n - 1 are the batch's prompt b
            for b, i in enumerate(batch):
                texts[i] = rows[b * n:(b + 1) * n]
                scores[i] = row_scores[b * n:(b + 1) * n] if row_scores is not None else []
            if stats is not None:
                all_stats.append(stats)
            bar.update(len(batch))
    return with_extras(texts, scores if kwargs.get("return_scores") else None,
                       all_stats if kwargs.get("return_stats") else None)


def fit_context(encoded: list[list[int]], model: torch.nn.Module, max_new_tokens: int, truncate_left: bool,
                slide: int = 0) -> list[list[int]]:
    """Check every prompt against the context before any work: raise `PromptTooLong` naming the first
    that does not fit, or with truncate_left keep its last tokens (the ids themselves, as the CLI does).
    With `slide` > 0 only the prompt must fit (`stream`'s slide)."""
    n_positions = model.config.n_positions
    room = prompt_room(max_new_tokens, n_positions, slide)  # the longest prompt that fits
    if room <= 0 < max_new_tokens:  # no prompt fits, and no cut could help
        raise ValueError(f"max_new_tokens {max_new_tokens} leaves no room for a prompt in the model's context "
                         f"n_positions={n_positions}: generate at most {n_positions} tokens (after a 1-token prompt; "
                         "the last new token is never fed back), or let the context slide (slide=N)")
    if max_new_tokens < 1:
        return encoded  # not a count of tokens: `stream` names it
    for i, ids in enumerate(encoded):
        if max(len(ids), 1) > room:  # an empty prompt is one token: <|endoftext|>
            if not truncate_left:
                raise PromptTooLong(i, len(ids), room, max_new_tokens, n_positions, slide)
            encoded[i] = ids[-room:]
    return encoded


def batch_seeds(seed: int | None, n: int) -> list[int | None]:
    """One seed per batch: the first is `seed` itself (one batch draws as `generate_text` would), the
    others are drawn from it, so that equal prompts in two batches do not get equal samples."""
    if seed is None:
        return [None] * n
    rest = torch.randint(2**62, (max(n - 1, 0),), generator=torch.Generator().manual_seed(check_seed(seed))).tolist()
    return [seed, *rest][:n]


def left_pad(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id lists → input_ids and attention_mask (B, T), pads on the left so that every prompt's
    last token sits in the last column. The pad id is 0, any id the model has: the mask keeps it out."""
    ids, mask = pad_rows(rows, 0, "left")
    return torch.tensor(ids, dtype=torch.long), torch.tensor(mask, dtype=torch.long)  # (B, T) each
