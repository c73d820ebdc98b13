"""Text in, text out: one prompt's continuation as text, streamed piece by piece or whole.

Where it sits: the two ends of the data flow, around the decode loop of minigpt/generate.py:
`text → Tokenizer.encode → ids → stream (prefill → decode loop) → ids → Tokenizer.decode → text`.

Tokens are not characters: one UTF-8 character may be spelled over several tokens, and a stop
string may begin inside a token. So `stream_text` holds back text until it is final (a
half-spelled character, or what could be the start of a stop string), and `generate_text` cuts
each sequence at the character where its first stop string begins, not at a token boundary.
What the text functions do not do: several prompts at once (that is a left-padded batch for
`generate`, which returns ids).
"""
from __future__ import annotations

import numbers
from typing import Iterator

import torch

from minigpt.generate import run_to_end, stream
from minigpt.generate_args import eos_list
from minigpt.stats import GenerationStats
from minigpt.stop_strings import first_stop, stop_list


def prompt_ids(tokenizer, prompt: str | list[int]) -> torch.Tensor:
    """One prompt, as text or its token ids (a list, or a 1-D tensor or NumPy array, or a (1, T)
    one as the tokenizer's `return_tensors="pt"` gives) → ids (1, T).

    The text-in functions continue *one* prompt; several prompts are a padded batch for
    `generate`, so a list of texts (or a (B > 1, T) array) is refused here by name instead of
    failing inside torch.
    """
    if isinstance(prompt, str):
        return torch.tensor([tokenizer.encode(prompt)], dtype=torch.long)
    shape = getattr(prompt, "shape", None)  # a tensor or an array
    if shape is not None and (len(shape) == 1 or (len(shape) == 2 and shape[0] == 1)):
        prompt = prompt.reshape(-1).tolist()
    if not isinstance(prompt, (list, tuple)) or not all(isinstance(t, numbers.Integral) for t in prompt):
        got = f"shape {tuple(shape)}" if shape is not None else type(prompt).__name__
        raise TypeError(f"prompt must be one text (str) or its token ids (a list of ints, or a 1-D or (1, T) tensor), got {got}; "
                        "for several prompts pass a left-padded batch to generate()")
    return torch.tensor([list(prompt)], dtype=torch.long)


def stream_text(model: torch.nn.Module, tokenizer, prompt: str | list[int], **kwargs) -> Iterator[str]:
    """Continue one prompt, yielding text pieces as tokens arrive (what `minigpt generate --stream`
    prints); finally *return* what `generate` returns. `kwargs` are `stream`'s.

    `prompt` is text or its token ids: ids cut from a longer prompt (--truncate-left) must be
    passed as they are, as their decoded text need not re-encode to the same ids.
    Text is held back while it ends in an incomplete UTF-8 character or could be the start of a
    stop string, so a stop string never appears, even in part. EOS ends the text silently.
    Arguments are checked at the call, as `stream` checks its own.
    """
    for name in ("num_beams", "num_return_sequences"):  # beams are chosen only at the end; n samples are n texts
        if kwargs.get(name, 1) > 1:
            raise ValueError(f"stream_text streams one sequence token by token, so {name} > 1 is not "
                             f"supported: use generate({name}=...) and decode its rows")
    ids, stops, eos = text_args(model, tokenizer, prompt, kwargs)
    return text_pieces(stream(model, ids, tokenizer=tokenizer, **kwargs), tokenizer, stops, eos)


def text_args(model: torch.nn.Module, tokenizer, prompt: str | list[int], kwargs: dict) -> tuple[torch.Tensor, list[str], set[int]]:
    """What both text functions need beside `stream`'s own arguments: the prompt's ids (1, T), and
    the stop strings and EOS ids that end the text."""
    return prompt_ids(tokenizer, prompt), stop_list(kwargs.get("stop")), set(eos_list(model, kwargs.get("eos_token_id")))


def text_pieces(steps: Iterator[torch.Tensor], tokenizer, stops: list[str], eos: set[int]) -> Iterator[str]:
    """`stream_text`'s pieces: one row's tokens from `steps` → the text that is final so far."""
    new: list[int] = []
    sent, ended = 0, False  # characters already yielded; EOS or a stop string seen
    while True:
        try:
            token = int(next(steps)[0])
        except StopIteration as end:
            if not ended:
                yield tokenizer.decode(new)[sent:]
            return end.value
        if ended:
            continue
        if token in eos:  # the text is over: what was held back (a stop string's possible start) is final
            yield tokenizer.decode(new)[sent:]
            ended = True
            continue
        new.append(token)
        text = tokenizer.decode(new)
        cut = first_stop(text, stops)
        if cut >= 0:
            yield text[sent:cut]
            ended = True
            continue
        ready = len(text)
        while ready > sent and text[ready - 1] == "\ufffd":  # maybe a character still being spelled out
            ready -= 1
        # Then hold back what could begin a stop string, judged on the whole characters: with
        # "User：" as the stop, "User" followed by a half-spelled "：" must wait too.
        whole = text[:ready]
        ready -= max((k for s in stops for k in range(1, len(s)) if whole.endswith(s[:k])), default=0)
        if ready > sent:
            yield text[sent:ready]
            sent = ready


def generate_text(model: torch.nn.Module, tokenizer, prompt: str | list[int],
                  **kwargs) -> list[str] | tuple[list[str], GenerationStats]:
    """Continue one prompt; return the new text of each sequence (`num_return_sequences` samples,
    or that many of the best beams, best first). `kwargs` are `stream`'s; with return_stats=True
    the result is `(texts, GenerationStats)`.

    Each text ends before its first EOS or stop string, cut at the character as `stream_text`
    cuts it (`cut_text`).
    """
    ids, stops, eos = text_args(model, tokenizer, prompt, kwargs)
    texts, stats = row_texts(model, tokenizer, ids, None, stops, eos, kwargs)
    return (texts, stats) if stats is not None else texts


def row_texts(model: torch.nn.Module, tokenizer, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
              stops: list[str], eos: set[int], kwargs: dict) -> tuple[list[str], GenerationStats | None]:
    """Run `stream` on left-padded prompts (B, T) → each output row's new text (B·n rows: a prompt's
    n sequences one after another), and the stats if `kwargs` asked for them.

    The texts come from the tokens as they were drawn, not from `generate`'s ids: those can only
    end at a whole token, and the one holding the start of a stop string may begin with text to keep.
    """
    steps = stream(model, input_ids, attention_mask, tokenizer=tokenizer, **kwargs)
    drawn: list[torch.Tensor] = []  # each step's (rows,) tokens; beam search yields none (its beams are chosen at the end)
    result = run_to_end(steps, drawn.append)
    out, stats = result if kwargs.get("return_stats") else (result, None)
    prompt_len = max(input_ids.size(1), 1)  # an empty prompt became <|endoftext|>
    rows = torch.stack(drawn, 1).tolist() if drawn else out[:, prompt_len:].tolist()  # (rows, new)
    return [cut_text(row, tokenizer, stops, eos) for row in rows], stats


def cut_text(row: list[int], tokenizer, stops: list[str], eos: set[int]) -> str:
    """One row's new tokens → its text: the tokens before the first EOS, decoded, then cut at the
    character where the earliest stop string begins. (A row that ended early is followed by pads:
    EOS, or anything after its stop string, so they never reach the text.)"""
    end = next((i for i, t in enumerate(row) if t in eos), len(row))  # the first EOS, or none
    text = tokenizer.decode(row[:end])
    cut = first_stop(text, stops)
    return text[:cut] if cut >= 0 else text
