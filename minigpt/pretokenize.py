"""Before BPE merges anything: text as bytes, and GPT-2's cut of the text into chunks.

Where it sits: **text → bytes → chunks** → BPE merges inside each chunk (minigpt/tokenizer.py)
→ ids. These are steps 1 and 2 of the three in minigpt/tokenizer.py's docstring:
1. **The byte-level alphabet.** BPE works on UTF-8 bytes. Encoding maps the bytes straight to
   ids; the alphabet is how GPT-2's *files* (vocab.json, merges.txt) write each byte, as one
   printable character (`bytes_to_unicode`: why a space is 'Ġ'), read by minigpt/tokenizer_files.py.
2. **Pre-tokenization.** GPT-2's regex cuts the text into chunks (`split_text`); merges never
   cross a chunk boundary.
And one consequence of the pattern: where a long text can be cut so that its parts encode to
exactly the ids of the whole (`safe_pieces`), which lets encoding spread over processes.

Learning merges (minigpt/bpe_train.py) splits its training text with the same `split_text`.
What this file does not do: other split patterns (GPT-4's cl100k), Unicode normalization.
"""
from __future__ import annotations

import re
from collections.abc import Collection, Iterator

import regex

# ---- 1. The byte-level alphabet -----------------------------------------------------------------


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's table from each of the 256 byte values to one printable character.

    vocab.json and merges.txt are text files, and merges.txt separates a pair's two halves with a
    space, so a token's raw bytes cannot be written as they are: a space, a newline or a control
    byte would break the format. GPT-2 keeps the 188 printable Latin-1 bytes as themselves and moves
    the other 68 (control bytes, space, ...) to the characters 256, 257, ... in byte order. Space
    (0x20) is the 33rd byte moved, so it becomes chr(256 + 32) = 'Ġ' and " the" is stored as "Ġthe";
    newline becomes 'Ċ'. The table's order is also the order of GPT-2's first 256 ids ('!' is 0).
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    moved = [b for b in range(256) if b not in table]
    table.update({b: chr(256 + i) for i, b in enumerate(moved)})
    return table


BYTE_TO_CHAR = bytes_to_unicode()
CHAR_TO_BYTE = {c: b for b, c in BYTE_TO_CHAR.items()}


# Tokens go to and from their spelling through Latin-1, whose characters are the byte values 0-255,
# and str.translate, which maps a whole string in C (BYTE_TO_CHAR is already its table): loading
# GPT-2's files converts 150,000 tokens, in half the time a Python loop over their characters takes.
# A character outside the alphabet becomes U+0100 ('Ā', past Latin-1), which encode refuses:
# else a plain space, say, would pass through translate as byte 0x20.
_CHAR_TO_BYTE_TABLE = {ord(c): b for c, b in CHAR_TO_BYTE.items()} | {b: 0x100 for b in range(256) if chr(b) not in CHAR_TO_BYTE}


def token_to_str(token: bytes) -> str:
    """A token's bytes as written in vocab.json / merges.txt ('Ġthe')."""
    return token.decode("latin-1").translate(BYTE_TO_CHAR)


def str_to_token(s: str) -> bytes:
    """A token as vocab.json / merges.txt spell it ('Ġthe') → its bytes (b' the'). A character
    outside the byte-level alphabet (a plain space, '€') is a UnicodeEncodeError, a ValueError."""
    return s.translate(_CHAR_TO_BYTE_TABLE).encode("latin-1")


# ---- 2. Pre-tokenization: GPT-2's split pattern -----------------------------------------------

GPT2_SPLIT_BRANCHES = [
    r"'s|'t|'re|'ve|'m|'ll|'d",  # English contractions, lower case only: "don't" → "don" "'t", but "DON'T" → "DON" "'" "T"
    r" ?\p{L}+",  # a run of letters in any script, with at most one leading space: " hello", " こんにちは"
    r" ?\p{N}+",  # a run of digits / numerals, with at most one leading space: " 2024"
    r" ?[^\s\p{L}\p{N}]+",  # punctuation, symbols and emoji, with at most one leading space: " ...", " 🙂"
    r"\s+(?!\S)",  # whitespace, leaving its last space to the next word: "a   b" → "a" "  " " b"
    r"\s+",  # the rest: one whitespace character before a non-space ("\n", "\t", U+00A0; " ?" took " ")
]
GPT2_SPLIT_PATTERN = "|".join(GPT2_SPLIT_BRANCHES)
_SPLIT = regex.compile(GPT2_SPLIT_PATTERN)

# The same rules for pure-ASCII text, in the standard library's `re`, which scans about twice as
# fast as `regex`. Whitespace is spelled out: Unicode (and so GPT-2) does not count \x1c-\x1f as
# whitespace, but `re`'s \s would.
_WS = r"\t\n\x0b\x0c\r "
_ASCII_SPLIT = re.compile(
    rf"'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]+| ?[^{_WS}A-Za-z0-9]+|[{_WS}]+(?![^{_WS}])|[{_WS}]+"
)


def split_text(text: str) -> list[str]:
    """Cut text into the chunks that BPE merges inside of. The chunks cover the text exactly."""
    return (_ASCII_SPLIT if text.isascii() else _SPLIT).findall(text)


def special_token_regex(names: Collection[str]) -> regex.Pattern:
    """A regex finding any of the special tokens `names`, which are cut out of the text before it
    is split (encoding and training alike). Longest first, as tiktoken: an alternation takes its
    first branch that matches, so "<|a|>" listed before "<|a|>x" would hide the longer one."""
    return regex.compile("|".join(map(regex.escape, sorted(names, key=len, reverse=True))))


# ---- Safe cuts: encoding a long text in parts --------------------------------------------------

# Where text can be cut without changing a single token: just before a newline that follows a
# non-space character, or that a non-space character follows. No chunk of GPT-2's pattern spans
# either point, and how the text from the newline on is split depends only on what follows it (the
# pattern looks ahead, never back). So encoding the parts separately gives exactly the ids of
# encoding the whole.
# - After a non-space: only whitespace chunks hold a newline, and the character before is not one.
# - Before a non-space ("a \n" + "b", as in SST-2 or WikiText, whose lines end in " \n"): a "\n"
#   that a non-space follows always starts a chunk. `\s+(?!\S)` backtracks to stop before it (taking
#   it, the run would be followed by a non-space), no letter, number or punctuation chunk takes a
#   "\n", and `\s+`, the one branch that could take it, is tried only where `\s+(?!\S)` fails, which
#   is never after whitespace: it matches the whitespace up to the "\n".
# (Cutting *after* a newline is not safe: "a\n\nb" splits its "\n\n" as "\n" + "\n" because a
# non-space follows, but an "a\n\n" that ends a piece keeps "\n\n".)
# The one exception: where the non-space after the "\n" starts a special token (which is no text to
# the pattern): `follows_space_before_one_of`.
SAFE_CUT = re.compile(r"(?<=\S)(?=\n)|(?=\n\S)")


def safe_pieces(text: str, size: int, keep_whole: Collection[str] = ()) -> list[str]:
    """Cut text into pieces of about `size` characters or more, each ending at a SAFE_CUT, so that
    the pieces' ids joined are the text's ids; "".join(pieces) == text. Used to spread one long
    document over several processes, and by minigpt/bpe_train.py to count a corpus in parts.
    `keep_whole`: the special tokens that the text's encoding matches (a cut would turn one into
    plain text; only one whose text holds a newline can contain a SAFE_CUT), and which change
    the split of the text before them (`follows_space_before_one_of`)."""
    return [text[a:b] for a, b in safe_piece_bounds(text, size, keep_whole)]


def safe_piece_bounds(text: str, size: int, keep_whole: Collection[str] = (), start: int = 0,
                      end: int | None = None) -> Iterator[tuple[int, int]]:
    """(a, b) of each piece `safe_pieces` cuts text[start:end] into: offsets, not copies, so that
    minigpt/data.py encodes a file's split from its text without copying the split.

    The cuts are looked for in the whole text (`safe_cut_at`), which may go on past `end`, while
    text[start:end] is encoded alone. A cut's safety depends on the character after it (SAFE_CUT
    looks one ahead) and on special tokens around it; so a cut is taken only before end - 1, where
    what it sees lies inside the part. `end` itself must cut no special token in two (prepare's
    `_cut_point` never does), or one around a cut could reach past it."""
    end = len(text) if end is None else end
    while end - start > size:
        cut = safe_cut_at(text, start + size, keep_whole)
        if cut is None or cut >= end - 1:
            break
        yield start, cut
        start = cut
    yield start, end


def safe_cut_at(text: str, pos: int, keep_whole: Collection[str] = ()) -> int | None:
    """The first SAFE_CUT at or after `pos` that keeps `keep_whole` whole (`is_safe_cut`), or None."""
    for m in SAFE_CUT.finditer(text, pos):  # the lookbehind sees the character before pos too
        if is_safe_cut(text, m.start(), keep_whole):
            return m.start()
    return None


def last_safe_cut_before(text: str, pos: int, keep_whole: Collection[str] = ()) -> int | None:
    """The last safe cut (`is_safe_cut`) in text[1:pos], or None. Every cut is at a "\n", so only those are tried."""
    cut = text.rfind("\n", 0, pos)
    while cut > 0 and not is_safe_cut(text, cut, keep_whole):
        cut = text.rfind("\n", 0, cut)
    return cut if cut > 0 else None


def is_safe_cut(text: str, cut: int, keep_whole: Collection[str] = ()) -> bool:
    """Whether `cut` is a SAFE_CUT that cuts none of `keep_whole` in two (only one whose text holds
    a newline can contain a SAFE_CUT) and is not the exception of `follows_space_before_one_of`."""
    return (SAFE_CUT.match(text, cut) is not None and not splits_one_of(text, cut, keep_whole)
            and not follows_space_before_one_of(text, cut, keep_whole))


def follows_space_before_one_of(text: str, cut: int, strings: Collection[str]) -> bool:
    r"""Whether `cut` comes after whitespace, before a "\n" that one of `strings` follows. A special
    token is cut out of the text before it is split, so that "\n" ends its stretch of text, and
    `\s+(?!\S)` takes the whitespace and the "\n" as one chunk: "a \n\n<|endoftext|>" splits as
    "a" " \n\n", but cut before its last "\n", as "a" " \n" + "\n"."""
    return 0 < cut and text[cut - 1].isspace() and any(text.startswith(s, cut + 1) for s in strings)


def splits_one_of(text: str, pos: int, strings: Collection[str]) -> bool:
    """Whether cutting text at `pos` would cut an occurrence of one of `strings` in two."""
    return any(text.startswith(s, pos - k) for s in strings for k in range(1, min(len(s), pos + 1)))


def without_surrogates(text: str) -> str:
    """A str can hold surrogates, which have no UTF-8 bytes: JSON's "\\ud83d" escapes, or the bytes
    of a non-UTF-8 command line (sys.argv). tiktoken's fix-up, for the same ids: a surrogate pair
    becomes its character, a lone surrogate U+FFFD (so decode gives U+FFFD)."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
