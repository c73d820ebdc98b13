r"""Stop strings: end a row when its generated *text* contains a given string.

Where it sits: inside the decode loop (`stream` in minigpt/generation.py), after each step's tokens
are drawn: `... → draw → StopStrings.add → (stop the row, or go on) → Tokenizer.decode → text`.

Why this needs care:
- A stop string is text, but the model writes tokens, and their boundaries need not match the
  string's. GPT-2 can write "\n\n" as one token (628) or as two "\n" tokens (198, 198); its own
  encoder picks the two in "Hello.\n\nWorld". A stop string may also begin inside a token.
  Comparing each token with the stop strings misses these: the decoded text of the recent tokens
  must be searched.
- Bytes, not characters: one character of UTF-8 may be spelled over several tokens, so the text
  is searched as bytes, and a stop string may end in the middle of a character.
- The stop text must not reach the output: the caller asked for the text *before* it. `add`
  returns how many generated tokens lie wholly before the stop string, and the loop pads the
  rest. (The streaming side, `stream_text`, also holds back text that could be the start of a
  stop string until it knows.)

What it does not handle: text that shares a token with the stop string's start is cut with it
(ids cannot split a token), and no regular expressions, only plain strings.
"""
from __future__ import annotations

import os


def stop_list(stop: str | list[str] | None) -> list[str]:
    """The `stop` argument as a list: one string is one stop string (as in transformers), not the
    list of its characters that iterating over it would give."""
    if stop is None:
        return []
    if isinstance(stop, str):
        check_encodable("stop", stop)
        return [stop]
    stops = list(stop) if hasattr(stop, "__iter__") else None
    if stops is None or not all(isinstance(s, str) for s in stops):  # 5 would fail deep in StopStrings
        raise TypeError(f"stop must be a string or a list of strings, got {stop!r}")
    for i, s in enumerate(stops):
        check_encodable(f"stop[{i}]", s)
    return stops


def check_encodable(name: str, stop: str) -> None:
    """ValueError if `stop` holds a lone surrogate ("\\ud800"; json.loads gives one for an escaped
    half of a pair): no UTF-8 text holds one, so it could never match the generated text, and
    encoding it to bytes (StopStrings) would fail deep inside the loop."""
    try:
        stop.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"{name} {stop!r} holds the lone surrogate {stop[e.start]!r} at position {e.start}, which no "
                         "UTF-8 text holds, so it could never match: give the character itself (in JSON as a pair, "
                         "\\ud83d\\ude00 for 😀; in Python as '\\U0001f600')") from None


def first_stop(text: str, stops: list[str]) -> int:
    """Where the earliest stop string begins in `text`, or -1: the text to show is text[:that]."""
    return min((text.find(s) for s in stops if s in text), default=-1)


class StopStrings:
    """Finds stop strings in each row's generated text, even when one spans several tokens.

    It compares bytes, so a stop string may end in the middle of a multi-byte character. Every
    token is ≥ 1 byte, so a stop string that ends in the newest token lies within the last
    len(stop bytes) tokens: only that tail is decoded each step.
    """

    def __init__(self, tokenizer, stops: list[str], batch_size: int) -> None:
        if tokenizer is None:
            raise ValueError("stop strings need the tokenizer: pass tokenizer=... to generate()")
        if not stops or any(not s for s in stops):
            raise ValueError(f"stop must be a non-empty string or a list of them, got {stops!r}")
        self.stops = [s.encode("utf-8") for s in stops]
        # minigpt's Tokenizer gives a token's raw bytes. Another library's (transformers', passed as
        # its generate takes one) gives text only: its bytes, a half-spelled character as U+FFFD.
        # That is left out at the end, as the text functions leave it out (`whole_characters`),
        # until the character is whole: a stop string "\ufffd" matches only a U+FFFD that stays.
        self.own_bytes = getattr(tokenizer, "decode_bytes", None)
        self.tokenizer = tokenizer
        self.window = max(len(s) for s in self.stops)
        self.ids: list[list[int]] = [[] for _ in range(batch_size)]

    def add(self, row: int, token: int) -> int | None:
        """Append a token to `row`; if a stop string now appears, return how many generated
        tokens to keep: those wholly before the stop string. Else None."""
        ids = self.ids[row]
        ids.append(token)
        tail = ids[-self.window:]
        # Another library's tokenizer: the tail's text, less a half-spelled character at its end
        # (its U+FFFD), left out until it is whole. minigpt's gives raw bytes: nothing is left out.
        tail_text = None if self.own_bytes is not None else self.tokenizer.decode(tail)
        text = self.own_bytes(tail) if tail_text is None else tail_text.rstrip("\ufffd").encode("utf-8")
        starts = [text.find(s) for s in self.stops if s in text]
        if not starts:
            return None
        start = min(starts)
        keep = 0  # tail tokens whose bytes end at or before the stop string's first byte
        while self.end_of(tail[:keep + 1], tail_text) <= start:
            keep += 1
        return len(ids) - len(tail) + keep

    def end_of(self, ids: list[int], tail_text: str | None) -> float:
        """Where the bytes of `ids`, the tail's first tokens, end in the tail's text: their count, and
        a half-spelled character at the end counts as begun (half a byte on): it lies before a stop
        string that starts after its first byte, and belongs to one that starts there. Another
        library's tokenizer gives text (`tail_text`: the whole tail's): the ids' own text counts as
        far as it agrees with the tail's. A U+FFFD the tail spells as a character is one begun; one
        of invalid bytes is in both, and counts (`add`'s rstrip takes it for half a character too)."""
        if self.own_bytes is not None:
            return len(self.own_bytes(ids))
        text = self.tokenizer.decode(ids)
        agree = len(os.path.commonprefix([text, tail_text]))
        return len(text[:agree].encode("utf-8")) + 0.5 * (agree < len(text))
