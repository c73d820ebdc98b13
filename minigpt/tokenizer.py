"""Byte-level BPE (byte-pair encoding), GPT-2's tokenizer written from scratch: text → ids → text.

Where it sits: **text → Tokenizer.encode → ids** → GPT → logits → ... → KV-cache decode loop →
**Tokenizer.decode → text**.

Three steps turn text into ids; the first two, which happen before any merge, are
minigpt/pretokenize.py, the third is this file:
1. **Bytes.** Text is UTF-8 encoded, so every string is a sequence over 256 symbols: there is no
   "unknown token", any text (emoji, CJK, control characters) can be encoded.
2. **Pre-tokenization.** GPT-2's regex cuts the text into chunks: a word with its leading space,
   a number, a run of punctuation, whitespace. Merges never cross a chunk boundary, so " dog" is
   the same token in every sentence, and a chunk's ids can be cached.
3. **Merging.** Inside a chunk, the adjacent pair with the lowest rank (the one training learned
   first) becomes one token, again and again, until no adjacent pair has a rank.
Decoding is the reverse: ids → bytes (joined across tokens) → UTF-8 text.

Learning the merges from text lives in minigpt/bpe_train.py (`Tokenizer.train` calls it), the
file formats (vocab.json + merges.txt, tokenizer.json, tiktoken's ranks) in
minigpt/tokenizer_files.py, many texts at once (on every core; padded batches for the model) in
minigpt/tokenizer_batch.py, and the `minigpt tokenize` command in minigpt/tokenizer_cli.py.

**Special tokens** (`<|endoftext|>`, id 50256 in GPT-2) are not text; BPE never produces them.
The policy is tiktoken's: `encode` raises if the text contains a special token's text, because
text from a user or a web page should not be able to inject a document boundary. Pass
`allowed_special={"<|endoftext|>"}` (or `"all"`) to encode it as the special id, or call
`encode_ordinary` to encode it as plain text (`<`, `|`, `end`, ...). Stricter than tiktoken: a name
that is not one of the tokenizer's special tokens, in either argument, raises (tiktoken ignores it).

**Added tokens** are the other kind of token BPE never produces: words a transformers user added
with `tok.add_tokens(["ROMEO"])` (saved with "special": false). They are text, not control tokens:
encode (encode_ordinary too) always gives each its id wherever its text stands ("xROMEOy" is x,
ROMEO, y: text is never merged across it), as transformers does, and nothing refuses them.

Not handled: other split patterns (GPT-4's cl100k), Unicode normalization, `add_prefix_space`
(GPT-2 tokenizes "Hello" and " Hello" differently, and so does this).
"""
from __future__ import annotations

import codecs
import heapq
import operator
import os
from collections.abc import Collection, Iterable, Sequence
from itertools import chain, repeat
from typing import Any, Literal, SupportsIndex, TypeGuard, TypeVar, overload

import regex

from minigpt.checks import as_count, check_flag
from minigpt.config import CHECKPOINTS, gpt2_name
from minigpt.pretokenize import (CHAR_TO_BYTE, safe_pieces, special_token_regex, split_text, str_to_token, token_to_str,
                                 without_surrogates)

# GPT-2's own vocab.json + merges.txt, shipped in checkpoints/gpt2 (OpenAI's MIT notice beside them).
GPT2_DIR = CHECKPOINTS / "gpt2"

# ---- 3. Merging (steps 1 and 2, bytes and chunks, are minigpt/pretokenize.py) ---------------------
# Merging works on ids: a chunk comes in as the ids of its UTF-8 bytes. It needs two tables, which
# `Tokenizer` builds from its merges: ranks, (left id, right id) → rank (rank 0 was learned first),
# and merged_id, rank → the id of the token that merge makes.

# Chunks of more bytes than this are merged by `_merge_long_chunk`. Timed on GPT-2's merges (400
# chunks each of glued English words and of base64), `merge_chunk`'s rescan takes 0.6-0.7x the
# heap's time at 16 bytes, 0.8-1.0x at 48 and 1.2-1.6x at 128: shorter chunks, nearly all of real
# text, rescan faster. Only the heap stays fast on a 50 kB "word" (a base64 blob): O(n log n), not O(n²).
_LONG_CHUNK = 48


def merge_chunk(
    ids: list[int],
    ranks: dict[tuple[int, int], int],
    merged_id: Sequence[int],
    steps: list[tuple[int, list[int]]] | None = None,
) -> list[int]:
    """Merge one chunk's byte ids: while some adjacent pair has a rank, merge the lowest-ranked one.

    One occurrence per step, the leftmost, as tiktoken and Hugging Face do. (GPT-2's original
    code merged every occurrence of the pair at once; with merges learned by training that gives
    the same ids, since the pair's next occurrence is still the lowest rank.) `steps`, if given,
    receives (rank, ids after that merge) for every merge. Returns the merged ids; `ids` itself is
    consumed (short chunks are merged in it, long ones leave it scrambled): read the result only."""
    if len(ids) > _LONG_CHUNK and steps is None:
        return _merge_long_chunk(ids, ranks, merged_id)
    # no_rank is past every rank: the merge count, not len(ranks), which is one short per pair a
    # merges.txt lists twice (the dict keeps one entry), so equals a real rank that would never merge.
    get, no_rank = ranks.get, len(merged_id)
    pair_ranks = list(map(get, zip(ids, ids[1:]), repeat(no_rank)))  # pair i is (ids[i], ids[i + 1])
    while pair_ranks:
        rank = min(pair_ranks)
        if rank == no_rank:
            break
        i = pair_ranks.index(rank)
        new = ids[i] = merged_id[rank]
        del ids[i + 1], pair_ranks[i]
        # Only the pairs beside the new token changed: look up those two, not every pair again.
        if i > 0:
            pair_ranks[i - 1] = get((ids[i - 1], new), no_rank)
        if i < len(pair_ranks):
            pair_ranks[i] = get((new, ids[i + 1]), no_rank)
        if steps is not None:  # the teaching view: which merge, and the tokens after it
            steps.append((rank, ids.copy()))
    return ids


def _merge_long_chunk(ids: list[int], ranks: dict[tuple[int, int], int], merged_id: Sequence[int]) -> list[int]:
    """`merge_chunk` for a long chunk: the same merges in the same order, in O(n log n), not O(n²).

    `merge_chunk` scans every pair's rank for the lowest after each merge, which for a 50,000-letter
    "word" (a base64 blob, a DNA string) takes ~20 s; this, 0.06 s. Here a heap holds (rank,
    position) of every ranked pair, so the next merge is the lowest rank, leftmost, as in
    `merge_chunk`; tokens form a linked list, and a merge pushes only the two pairs it creates.
    Popped entries whose pair has changed since they were pushed are skipped."""
    nxt, prv = list(range(1, len(ids) + 1)), list(range(-1, len(ids) - 1))  # neighbours; len(ids) = none
    heap = [(r, i) for i, pair in enumerate(zip(ids, ids[1:])) if (r := ranks.get(pair)) is not None]
    heapq.heapify(heap)
    alive = [True] * len(ids)

    def push(i: int) -> None:  # the pair that starts at token i, if it has a rank
        j = nxt[i]
        if j < len(ids) and (r := ranks.get((ids[i], ids[j]))) is not None:
            heapq.heappush(heap, (r, i))

    while heap:
        rank, i = heapq.heappop(heap)
        j = nxt[i] if alive[i] else len(ids)
        if j == len(ids) or ranks.get((ids[i], ids[j])) != rank:
            continue  # stale: i or its right neighbour was merged since this entry was pushed
        ids[i], alive[j] = merged_id[rank], False  # i becomes the merged token; j is gone
        nxt[i] = nxt[j]
        if nxt[i] < len(ids):
            prv[nxt[i]] = i
        if prv[i] >= 0:
            push(prv[i])
        push(i)
    return [t for t, a in zip(ids, alive) if a]


class _ChunkCache(dict):
    """chunk → ids. Real text repeats its words, so most chunks are looked up, not merged.

    A dict subclass with `__missing__` keeps the hit path inside C (`map(cache.__getitem__, ...)`).
    Bounded twice, so encoding a huge corpus, or a long-lived service's stream of texts, cannot grow
    memory without bound: cleared when it holds MAX_ENTRIES chunks or MAX_BYTES bytes of them. The
    count alone let long chunks (base64 blobs, runs of digits) take gigabytes: 20,000 distinct
    2,000-letter chunks kept 270 MB. Long chunks are still kept: a text's repeated rules of `=` or
    runs of spaces merged each time took 69× as long."""

    MAX_ENTRIES = 1 << 19  # ~0.5M chunks: far above a book's distinct words (Shakespeare: ~15k)
    MAX_BYTES = 1 << 23  # 8 MiB of chunk text: MAX_ENTRIES chunks of 16 bytes on average

    def __init__(self, byte_ids: list[int], ranks: dict[tuple[int, int], int], merged_id: list[int]) -> None:
        super().__init__()
        self.byte_ids, self.ranks, self.merged_id = byte_ids, ranks, merged_id
        self.held_bytes = 0  # the UTF-8 bytes of the chunks kept

    def __missing__(self, chunk: str) -> tuple[int, ...]:
        byte_ids = [self.byte_ids[b] for b in chunk.encode("utf-8")]
        size = len(byte_ids)  # (merge_chunk merges the list in place)
        if len(self) >= self.MAX_ENTRIES or self.held_bytes + size > self.MAX_BYTES:
            self.clear()
        ids = self[chunk] = tuple(merge_chunk(byte_ids, self.ranks, self.merged_id))
        self.held_bytes += size
        return ids

    def clear(self) -> None:
        super().clear()
        self.held_bytes = 0


# ---- The tokenizer: its tables (checked), encode, decode, files and training ----------------------

AllowedSpecial = Collection[str] | Literal["all"]


def whole_token_bytes(text: str) -> bytes:
    """The bytes a special or added token decodes to, as transformers' ByteLevel decoder gives them:
    a text spelled wholly in GPT-2's byte alphabet (minigpt/pretokenize.py) is read in it, as a
    regular token is. For ASCII ("ROMEO", "<|endoftext|>") that is its UTF-8 anyway, but "Ã¤" is
    "ä", and "café" gives the single byte 0xE9, which decodes to U+FFFD. A text with any other
    character ("hello world": a plain space is not in the alphabet) is its UTF-8. Odd, but the
    same text transformers decodes, which is what a tokenizer loaded from its files must give."""
    return str_to_token(text) if set(text) <= CHAR_TO_BYTE.keys() else text.encode("utf-8")


# encode cuts long text into pieces of about this many characters (see safe_pieces): small
# enough that most pieces of real text are pure ASCII and take split_text's fast path.
PIECE_CHARS = 1 << 12


def is_one_id(ids: object) -> TypeGuard[SupportsIndex]:
    """Whether `ids` is one token id: an int, a NumPy int, a 0-d tensor or array (argmax's), or any
    other object with __index__ that is not a sequence (a 1-D tensor has __index__ too)."""
    return isinstance(ids, int) or getattr(ids, "ndim", None) == 0 or (
        hasattr(ids, "__index__") and not hasattr(ids, "__iter__"))


def as_id_list(ids: SupportsIndex | Iterable[int], vocab_size: int) -> list[int]:
    """What decode takes (a list, a 1-D tensor, a numpy array, or one id) as a list of plain ints,
    each checked to be a token id in [0, vocab_size); a TypeError or ValueError says what was wrong."""
    ids = ids.tolist() if hasattr(ids, "tolist") else ids
    ids = [ids] if is_one_id(ids) else ids  # one id, e.g. a 0-d tensor from argmax
    try:  # every element: numpy ints and 0-d tensors (as list(tensor) gives them) pass, 2.5 or None do not
        ids = list(ids)
        as_ints = list(map(operator.index, ids))
    except TypeError:  # a batch (B, T) comes as a list of lists; float ids (2.0) are no ids either
        floats = isinstance(ids, list) and any(isinstance(i, float) for i in ids)
        raise TypeError("decode takes one sequence of int ids (a list or a 1-D tensor)" +
                        (f", got floats ({ids[:3]!r}...): a float tensor? .long() it" if floats else
                         "; for a batch (B, T), decode each row: tok.batch_decode(ids)")) from None
    if bool in set(map(type, ids)):  # operator.index takes True for 1: a bool tensor decoded as ids 1 and 0
        raise TypeError(f"decode takes int ids, got bools ({ids[:3]!r}...): an attention mask?")
    if as_ints and (min(as_ints) < 0 or max(as_ints) >= vocab_size):
        pos, bad = next((p, i) for p, i in enumerate(as_ints) if not 0 <= i < vocab_size)
        raise ValueError(f"unknown token id {bad} at position {pos}; ids must be in [0, {vocab_size})")
    return as_ints


class _Side:
    """A "left" / "right" attribute (default "right"), checked when set: `tok.padding_side = "lft"`
    raises, naming it, rather than pad on the right without a word."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, tok: None, owner: type | None = None) -> _Side: ...
    @overload
    def __get__(self, tok: object, owner: type | None = None) -> Literal["left", "right"]: ...
    def __get__(self, tok: object | None, owner: type | None = None) -> Literal["left", "right"] | _Side:
        return self if tok is None else tok.__dict__.get(self.name, "right")  # None: asked of the class

    def __set__(self, tok: object, side: str) -> None:
        tok.__dict__[self.name] = check_side(self.name, side)


def check_side(name: str, side: str) -> str:
    """`side` if it is "left" or "right", else a ValueError naming `name` (padding_side, truncation_side)."""
    if side not in ("left", "right"):
        raise ValueError(f"{name} must be 'left' or 'right', got {side!r}")
    return side


def is_error_handler(name: str) -> bool:
    """Whether `name` is a codec error handler ("strict", "replace", "ignore", ... or one registered
    with codecs.register_error): decode's `errors`."""
    try:
        codecs.lookup_error(name)
    except LookupError:
        return False
    return True


SomeTokenizer = TypeVar("SomeTokenizer", bound="Tokenizer")  # Tokenizer or a subclass: what its constructors build


class Tokenizer:
    """A byte-level BPE tokenizer: GPT-2's own, or one trained with `Tokenizer.train`.

    vocab: token bytes → id for every regular token (the 256 single bytes and every merge's
    result); merges: the learned pairs in rank order (rank 0 merges first); special_tokens:
    text → id; added_tokens: text → id of the words a transformers user added with `add_tokens`
    (not special: encode matches each whole wherever it stands, as transformers does, and decode
    gives it as text; a word the vocabulary has, "Hello", keeps its regular id). Ids must run
    0 .. vocab_size - 1 without gaps; special and added ids may be anywhere among them (last in
    GPT-2 and in `Tokenizer.train`'s, first in a Hugging Face BpeTrainer's).
    eos_token: the special token that ends a text (generation stops on it, `minigpt prepare` puts
    it between documents): <|endoftext|> if the tokenizer has it, else none, unless named.
    pad_token: the special token padding uses (`pad_token_id`); none named, the EOS: GPT-2 has no
    pad token, and the attention mask keeps padding out anyway. Both are checked when set, as
    transformers' `tok.pad_token = "<pad>"` sets them: a name that is no special token raises.
    padding_side / truncation_side: where `tok(texts, padding=..., truncation=...)` pads and cuts,
    "right" unless set (as transformers' attributes: `tok.padding_side = "left"` for generation).
    model_max_length: the length the model the tokenizer belongs to was trained on (its context,
    unless a run trained it on shorter windows or cut its texts shorter; None: unknown), the
    max_length that `truncation=True` cuts to when none is given, as in transformers; save_pretrained
    writes it, so that transformers' `tok(text, truncation=True)` cuts there too.
    """

    padding_side = _Side()
    truncation_side = _Side()

    def __init__(
        self,
        vocab: dict[bytes, int],
        merges: Sequence[tuple[bytes, bytes]],
        special_tokens: dict[str, int] | None = None,
        *,
        added_tokens: dict[str, int] | None = None,
        eos_token: str | None = "<|endoftext|>",
        pad_token: str | None = None,
        padding_side: Literal["left", "right"] = "right",
        truncation_side: Literal["left", "right"] = "right",
        model_max_length: int | None = None,
    ) -> None:
        self.vocab = dict(vocab)
        self.merges = list(merges)
        self.special_tokens = dict(special_tokens or {})
        self.added_tokens = dict(added_tokens or {})
        self._check_tables()
        # The tokens matched as a whole, not made by BPE (no text is both: _check_tables), both ways.
        self._whole_ids = self.special_tokens | self.added_tokens
        self._whole_text = {i: s for s, i in self._whole_ids.items()}
        id_to_bytes = {i: t for t, i in self.vocab.items()} | {i: whole_token_bytes(s) for s, i in self._whole_ids.items()}
        self._id_bytes: list[bytes] = [id_to_bytes[i] for i in range(len(id_to_bytes))]  # id → bytes: decode's table
        self._byte_ids: list[int] = [self.vocab[bytes([b])] for b in range(256)]
        self._ranks, self._merged_id = self._merge_tables()
        self._cache = _ChunkCache(self._byte_ids, self._ranks, self._merged_id)
        self._special_res: dict[frozenset[str], regex.Pattern] = {}  # see _special_regex
        self._all_specials = frozenset(self.special_tokens)  # what encode refuses by default
        self._added_regex = special_token_regex(self.added_tokens) if self.added_tokens else None
        if eos_token != "<|endoftext|>" or eos_token in self.special_tokens:  # GPT-2's default may be absent
            self.eos_token = eos_token
        else:
            self._eos_token = None
        self.pad_token_id = self.eos_token_id
        if pad_token is not None:
            self.pad_token = pad_token
        self.padding_side, self.truncation_side = padding_side, truncation_side
        self.model_max_length = model_max_length

    def _check_tables(self) -> None:
        """ValueError unless vocab, special_tokens and added_tokens make one tokenizer: all 256
        single bytes in vocab, no token both special and added, none empty, the ids of all three exactly
        0 .. vocab_size - 1 (no gap, no id given twice), no special or added token spelled like a
        regular one, unless it is an added token at that regular token's id."""
        missing = [b for b in range(256) if bytes([b]) not in self.vocab]
        if missing:
            raise ValueError(f"vocab lacks {len(missing)} of the 256 single-byte tokens (e.g. byte {missing[0]})")
        if both := self.special_tokens.keys() & self.added_tokens.keys():
            raise ValueError(f"{sorted(both)[0]!r} is both a special token and an added one; it can be only one")
        # Whole tokens are found by matching their text, and the empty text matches everywhere:
        # encode would put its id between every two characters ('Hi' → ['', 'H', '', 'i', '']).
        for kind, tokens in (("special", self.special_tokens), ("added", self.added_tokens)):
            if "" in tokens:
                raise ValueError(f"the {kind} token with id {tokens['']} is the empty string, which would match "
                                 "between every two characters of a text; a special or added token needs a text")
        # The regular token's id of each special or added token spelled as vocab.json spells one.
        spelled = {text: self.vocab[token] for text in self.special_tokens | self.added_tokens
                   if set(text) <= CHAR_TO_BYTE.keys() and (token := str_to_token(text)) in self.vocab}
        # An added token at its regular token's id is that token, also matched whole: transformers'
        # add_tokens(["Hello"]) of a word GPT-2 has keeps its id, 15496. Its id is counted once.
        regular_added = {text for text, i in spelled.items() if self.added_tokens.get(text) == i}
        ids = sorted([*self.vocab.values(), *self.special_tokens.values(),
                      *(i for text, i in self.added_tokens.items() if text not in regular_added)])
        if ids != list(range(len(ids))):
            raise ValueError(f"token ids must be exactly 0..{len(ids) - 1} (vocab + special and added tokens, no gaps or "
                             f"duplicates): {self._first_bad_id(ids, regular_added)}")
        # vocab.json keys regular tokens by their Ġ-spelling and the others by their text, so any
        # other token spelled like a regular one (say "Ġ", the space byte) has no file to live in.
        if others := [text for text in spelled if text not in regular_added]:
            kind = "special" if others[0] in self.special_tokens else "added"
            raise ValueError(f"{kind} token {others[0]!r} is spelled like the regular token "
                             f"{spelled[others[0]]}: vocab.json could not tell them apart")

    def _first_bad_id(self, ids: list[int], regular_added: set[str]) -> str:
        """What is wrong with the sorted `ids` first, by the tokens: an id given twice, or one that
        no token has (a gap, or one past the end, which a token given twice leaves)."""
        tokens = [*((token_to_str(t), i) for t, i in self.vocab.items()), *self.special_tokens.items(),
                  *((text, i) for text, i in self.added_tokens.items() if text not in regular_added)]
        for expected, i in enumerate(ids):
            if i != expected:
                break
        owners = [text for text, j in tokens if j == i]
        if i < 0:
            return f"{owners[0]!r} has the negative id {i}"
        if len(owners) > 1:
            return f"id {i} is given to both {owners[0]!r} and {owners[1]!r}"
        return f"no token has id {expected}; the next id, {i}, is {owners[0]!r}"

    def _merge_tables(self) -> tuple[dict[tuple[int, int], int], list[int]]:
        """The two tables merging needs (see merge_chunk): (left id, right id) → rank, and rank → the
        id of the token that merge makes. ValueError for a merge whose token is not in vocab."""
        vocab = self.vocab
        try:  # comprehensions, checked one by one only if a lookup fails: half the time of a loop with its checks
            ranks = {(vocab[a], vocab[b]): rank for rank, (a, b) in enumerate(self.merges)}  # a pair listed twice: its last rank
            merged_id = [vocab[a + b] for a, b in self.merges]
        except KeyError:
            rank, a, b = next((rank, a, b) for rank, (a, b) in enumerate(self.merges) if not {a, b, a + b} <= vocab.keys())
            raise ValueError(f"merge {rank} ({token_to_str(a)} {token_to_str(b)}) uses a token not in the vocab") from None
        return ranks, merged_id

    @property
    def vocab_size(self) -> int:
        """How many ids the tokenizer has, special tokens included (50257 for GPT-2)."""
        return len(self._id_bytes)

    def __len__(self) -> int:
        return self.vocab_size  # `len(tok)`, as transformers' tokenizers answer it

    @property
    def eos_token_id(self) -> int | None:
        """The id of eos_token (`<|endoftext|>`, 50256 for GPT-2, unless the files name another), or
        None if this tokenizer has none."""
        return self.special_tokens.get(self.eos_token) if self.eos_token is not None else None

    # eos_token and pad_token are properties so that transformers' idiom `tok.pad_token = "<pad>"`
    # does what it says (a plain attribute would take any name and change no id), and a name that
    # is not one of the special tokens is refused, naming them.
    @property
    def eos_token(self) -> str | None:
        """The special token that ends a text (`<|endoftext|>` for GPT-2), or None."""
        return self._eos_token

    @eos_token.setter
    def eos_token(self, name: str | None) -> None:
        self._eos_token = self._special_name("eos_token", name)

    @property
    def pad_token_id(self) -> int | None:
        """The id padding uses (the EOS unless another is named), or None without one."""
        return self._pad_token_id

    @pad_token_id.setter
    def pad_token_id(self, i: int | None) -> None:  # (an id past the vocabulary would be padding's output)
        i = None if i is None else as_count("pad_token_id", i)
        if i is not None and not 0 <= i < self.vocab_size:
            raise ValueError(f"pad_token_id must be a token id in [0, {self.vocab_size}) or None, got {i!r}")
        self._pad_token_id = i

    @property
    def pad_token(self) -> str | None:
        """The text of pad_token_id (the EOS unless another is named), or None without one."""
        return None if self.pad_token_id is None else self.id_to_token(self.pad_token_id)

    @pad_token.setter
    def pad_token(self, name: str | None) -> None:
        self.pad_token_id = None if name is None else self.special_tokens[self._special_name("pad_token", name)]

    def _special_name(self, role: str, name: str | None) -> str | None:
        """`name` if it is None or one of the special tokens; else ValueError naming `role` and them."""
        if name is not None and name not in self.special_tokens:
            raise ValueError(f"{role} {name!r} is not one of this tokenizer's special tokens {list(self.special_tokens)}")
        return name

    # ---- transformers' names: the special tokens by role, the vocabulary, token ↔ id lookups ----
    # GPT2Tokenizer names <|endoftext|> as its bos_token and unk_token too, and save_pretrained writes
    # them so (minigpt/tokenizer_files.py); the files' own bos_token and unk_token are not read.

    @property
    def bos_token(self) -> str | None:
        """The token that begins a text: <|endoftext|> if the tokenizer has it (GPT-2 has no start
        token of its own: a text begins where the last one ended), else None. The model's own start
        is its config's bos_token_id, which `generate` reads."""
        return "<|endoftext|>" if "<|endoftext|>" in self.special_tokens else None

    @property
    def bos_token_id(self) -> int | None:
        """The id of bos_token (50256 for GPT-2), or None."""
        return self.special_tokens.get(self.bos_token)

    @property
    def unk_token(self) -> str | None:
        """What convert_tokens_to_ids gives for a string that is no token, as transformers does: the
        same <|endoftext|>, or None. Encoding never needs it: every text is bytes, and every byte a token."""
        return self.bos_token

    @property
    def unk_token_id(self) -> int | None:
        """The id of unk_token (50256 for GPT-2), or None."""
        return self.special_tokens.get(self.unk_token)

    @property
    def all_special_tokens(self) -> list[str]:
        """The special tokens, in transformers' order: bos, eos, unk and pad first (each once), then the others."""
        by_role = [self.bos_token, self.eos_token, self.unk_token, self.pad_token]
        return [t for t in dict.fromkeys(by_role + list(self.special_tokens)) if t in self.special_tokens]

    @property
    def all_special_ids(self) -> list[int]:
        """The ids of all_special_tokens ([50256] for GPT-2)."""
        return [self.special_tokens[t] for t in self.all_special_tokens]

    def get_vocab(self) -> dict[str, int]:
        """Every token as vocab.json spells it ('Ġworld' for b' world') → its id, special and added tokens included."""
        return {self.id_to_token(i): i for i in range(self.vocab_size)}

    # One id gives a token, several a list: the overloads tell a type checker which (as for the next method).
    # A type checker takes the first overload that fits, and a tensor or array fits both (it has __index__
    # and __iter__; its number of dimensions is no part of its type): it is typed as a list, a 0-d one too.
    @overload
    def convert_ids_to_tokens(self, ids: Iterable[int], skip_special_tokens: bool = False) -> list[str]: ...
    @overload
    def convert_ids_to_tokens(self, ids: SupportsIndex, skip_special_tokens: bool = False) -> str: ...  # an int, a NumPy int
    def convert_ids_to_tokens(self, ids: SupportsIndex | Iterable[int], skip_special_tokens: bool = False) -> str | list[str]:
        """One id → its token, as vocab.json spells it; a list (or 1-D tensor) of ids → a list of
        tokens, without the special ones if `skip_special_tokens`. As transformers', except that an
        id outside the vocabulary is a ValueError naming it (transformers gives None)."""
        if is_one_id(ids):
            return self.id_to_token(operator.index(ids))
        skipped = set(self.special_tokens.values()) if skip_special_tokens else set()
        return [self.id_to_token(i) for i in as_id_list(ids, self.vocab_size) if i not in skipped]

    @overload  # a str is also an Iterable[str]: this overload comes first, as the str check does below
    def convert_tokens_to_ids(self, tokens: str) -> int: ...  # type: ignore[overload-overlap]
    @overload
    def convert_tokens_to_ids(self, tokens: Iterable[str]) -> list[int]: ...
    def convert_tokens_to_ids(self, tokens: str | Iterable[str]) -> int | list[int]:
        """One token, spelled as vocab.json spells it ('Ġworld'), → its id; a list of them → a list.
        A string that is no token gives unk_token_id, as in transformers (50256 for GPT-2: check
        for it), or, for a tokenizer without <|endoftext|>, a KeyError naming it."""
        return self._token_id(tokens) if isinstance(tokens, str) else [self._token_id(t) for t in tokens]

    def _token_id(self, token: str) -> int:
        if not isinstance(token, str):
            raise TypeError(f"tokens are strings as vocab.json spells them ('Ġworld'), got {token!r}; "
                            "for ids, convert_ids_to_tokens")
        if token in self._whole_ids:
            return self._whole_ids[token]
        try:
            return self.vocab[str_to_token(token)]
        except (KeyError, ValueError):  # no such token, or a character no byte is spelled as (' ', '€')
            if self.unk_token_id is not None:
                return self.unk_token_id
        raise KeyError(f"{token!r} is no token of this tokenizer, which has no unk_token to give instead; "
                       "tokens are spelled as vocab.json spells them: 'Ġworld' for ' world'")

    @property
    def model_max_length(self) -> int | None:
        """The longest input the model was trained on (its n_positions, or a run's shorter windows), which
        `truncation=True` cuts to, or None."""
        return self._model_max_length

    @model_max_length.setter
    def model_max_length(self, n: int | None) -> None:
        n = None if n is None else as_count("model_max_length", n)
        if n is not None and n < 1:
            raise ValueError(f"model_max_length must be a positive int (the length the model reads) or None, got {n!r}")
        self._model_max_length = n

    def __repr__(self) -> str:
        added = f", added_tokens={self.added_tokens}" if self.added_tokens else ""
        return f"Tokenizer(vocab_size={self.vocab_size}, merges={len(self.merges)}, special_tokens={self.special_tokens}{added})"

    # ---- encode ----

    def encode_ordinary(self, text: str) -> list[int]:
        """Encode text, treating any special token's text as plain text (added tokens stay whole)."""
        if not isinstance(text, str):
            raise TypeError(f"encode takes a str, got {type(text).__name__}")
        return self._encode_cut(text, ()) if self.added_tokens else self._encode_bpe(text)

    def _encode_bpe(self, text: str) -> list[int]:
        """Encode text by BPE alone: steps 1-3, no special or added token matched."""
        # Long text goes piece by piece (cut where the ids cannot change), so that one emoji does
        # not push a whole book off split_text's ASCII fast path.
        pieces = safe_pieces(text, PIECE_CHARS) if len(text) > PIECE_CHARS else [text]
        try:
            return list(chain.from_iterable(map(self._cache.__getitem__, chain.from_iterable(map(split_text, pieces)))))
        except UnicodeEncodeError:  # surrogates (rare: checked only once the fast path has failed)
            return self._encode_bpe(without_surrogates(text))

    def encode(
        self, text: str, *, allowed_special: AllowedSpecial = (), disallowed_special: AllowedSpecial = "all"
    ) -> list[int]:
        """Encode text to ids, with tiktoken's arguments and policy (see the module docstring for why).

        A special token named in `allowed_special` (or all, with "all") becomes its id. One in
        `disallowed_special` (by default every special token not allowed) raises ValueError. One in
        neither is encoded as plain text: `disallowed_special=()` turns the check off. Added tokens
        are not special: each always becomes its id."""
        if not isinstance(text, str):
            raise TypeError(f"encode takes a str, got {type(text).__name__}")
        allowed, disallowed = self._special_sets(allowed_special, disallowed_special)
        self._refuse_disallowed(text, disallowed)
        return self._encode_cut(text, allowed) if allowed else self.encode_ordinary(text)

    # ---- special and added tokens, in the order encode meets them: which specials are allowed,
    # the refusal of the others, then the cuts around the tokens matched whole ----

    def _special_sets(self, allowed_special: AllowedSpecial,
                      disallowed_special: AllowedSpecial) -> tuple[Collection[str], frozenset[str]]:
        """encode's two arguments as (allowed, disallowed) sets of this tokenizer's special tokens."""
        if allowed_special == () and disallowed_special == "all":  # the defaults: no sets to build per call,
            return (), self._all_specials                           # which matters for many short strings
        allowed = self._special_set("allowed_special", allowed_special)
        return allowed, frozenset(self.special_tokens.keys() - allowed if disallowed_special == "all"
                                  else self._special_set("disallowed_special", disallowed_special))

    def _special_set(self, name: str, value: AllowedSpecial) -> set[str]:
        """allowed_special / disallowed_special as a set of this tokenizer's special tokens."""
        if value == "all":
            return set(self.special_tokens)
        if isinstance(value, str) or not isinstance(value, Collection) or set(value) - self.special_tokens.keys():
            raise ValueError(f"{name} must be 'all' or a set of this tokenizer's special tokens "
                             f"{set(self.special_tokens)}, got {value!r}")
        return set(value)

    def _refuse_disallowed(self, text: str, disallowed: frozenset[str], name: str = "text") -> None:
        """ValueError if `text` (called `name` in the message) holds one of the `disallowed` special tokens."""
        if disallowed and (m := self._special_regex(disallowed).search(text)):
            raise ValueError(
                f"{name} contains the special token {m.group()!r} at position {m.start()}. To encode it as "
                f"id {self.special_tokens[m.group()]}, pass allowed_special={{{m.group()!r}}} (or 'all'); "
                f"to encode it as plain text, use encode_ordinary(text) (or disallowed_special=())."
            )

    def _special_regex(self, names: frozenset[str]) -> regex.Pattern:
        """A regex finding any of `names`, longest first (built once per set)."""
        if names not in self._special_res:
            self._special_res[names] = special_token_regex(names)
        return self._special_res[names]

    def _encode_cut(self, text: str, allowed: Collection[str]) -> list[int]:
        """Encode text whose `allowed` special tokens and added tokens become their ids (see `_cut`)."""
        ids: list[int] = []
        for piece, kind in self._cut(text, allowed):
            if kind is None:
                ids += self._encode_bpe(piece)
            else:
                ids.append(self._whole_ids[piece])
        return ids

    def _cut(self, text: str, allowed: Collection[str]) -> list[tuple[str, str | None]]:
        """Text cut around the tokens matched whole, in transformers' order: the `allowed` special
        tokens first, then the added tokens in the text between them. (piece, None) is text for
        BPE, (token, "special" or "added") one such token. Text is never merged across a cut, so
        "xROMEOy" is x, ROMEO, y, as transformers gives it."""
        pieces: list[tuple[str, str | None]] = [(text, None)]
        if allowed:
            pieces = self._cut_around(pieces, self._special_regex(frozenset(allowed)), "special")
        if self.added_tokens:
            pieces = self._cut_around(pieces, self._added_regex, "added")
        return pieces

    @staticmethod
    def _cut_around(pieces: list[tuple[str, str | None]], pattern: regex.Pattern,
                    kind: str) -> list[tuple[str, str | None]]:
        """Cut each piece of plain text (kind None) around `pattern`'s matches, each then a piece
        of its own, of `kind`; the pieces already matched stay as they are."""
        out: list[tuple[str, str | None]] = []
        for piece, was in pieces:
            if was is not None:
                out.append((piece, was))
                continue
            start = 0
            for m in pattern.finditer(piece):
                out += [(piece[start : m.start()], None), (m.group(), kind)]
                start = m.end()
            out.append((piece[start:], None))
        return out

    # ---- decode, and the teaching view of encode ----

    def decode_bytes(self, ids: SupportsIndex | Iterable[int]) -> bytes:
        """The bytes of the ids, joined. Accepts a list, a 1-D tensor, a numpy array or one id."""
        return b"".join(map(self._id_bytes.__getitem__, as_id_list(ids, self.vocab_size)))

    def decode(self, ids: SupportsIndex | Iterable[int], errors: str = "replace", *, skip_special_tokens: bool = False) -> str:
        """Ids → text. The bytes are joined across tokens *before* UTF-8 decoding, because one
        character (e.g. an emoji, 4 bytes) can be split over several tokens; bytes that still do not
        form valid UTF-8 (a cut-off sequence) become U+FFFD, never an exception, unless `errors`
        (Python's codec argument, as in tiktoken) says otherwise: "strict" raises.
        skip_special_tokens: leave the special tokens out (<|endoftext|>: GPT-2's padding too), as
        transformers does; added tokens are words, and stay (transformers keeps them too)."""
        if not isinstance(errors, str):  # transformers' decode(ids, True): its 2nd argument is skip_special_tokens
            raise TypeError(f"errors is the codec's error handler ('replace', 'strict', ...), got {errors!r}; "
                            "skip_special_tokens is a keyword: decode(ids, skip_special_tokens=True)")
        check_flag("skip_special_tokens", skip_special_tokens)  # "no" is truthy: it would drop the special tokens
        if skip_special_tokens:
            specials = set(self.special_tokens.values())
            ids = [i for i in as_id_list(ids, self.vocab_size) if i not in specials]
        return self.decode_bytes(ids).decode("utf-8", errors=errors)

    def batch_decode(self, sequences: Iterable[Iterable[int]], skip_special_tokens: bool = False, *,
                     errors: str = "replace") -> list[str]:
        """`decode` of each row of a batch: a list of id lists, or a (B, T) tensor or array, as
        transformers' batch_decode takes them. A padded batch's rows end (or, padded on the left,
        start) with pad_token_id, which in GPT-2 is <|endoftext|>: skip_special_tokens=True drops
        it, and with it any <|endoftext|> the text itself holds.
        The second argument is skip_special_tokens, as in transformers (`batch_decode(rows, True)`
        ports as it is), not decode's `errors`: that one is a keyword here. transformers' third,
        clean_up_tokenization_spaces, minigpt has not (GPT-2's text is its bytes, spaces and all), so
        a third positional argument is a TypeError, never taken for another setting."""
        if isinstance(skip_special_tokens, str) and is_error_handler(skip_special_tokens):  # decode's order: (rows, "strict")
            raise TypeError(f"skip_special_tokens must be True or False, got {skip_special_tokens!r}; errors is a "
                            f"keyword: batch_decode(rows, errors={skip_special_tokens!r})")
        check_flag("skip_special_tokens", skip_special_tokens)  # as decode does, for an empty batch too
        rows = sequences.tolist() if hasattr(sequences, "tolist") else sequences
        return [self.decode(row, errors, skip_special_tokens=skip_special_tokens) for row in rows]

    def id_to_token(self, i: int) -> str:
        """One token as vocab.json writes it ('Ġthe'); special and added tokens as their text."""
        if not 0 <= i < self.vocab_size:  # a negative index would silently count from the end
            raise ValueError(f"unknown token id {i}; ids must be in [0, {self.vocab_size})")
        return self._whole_text[i] if i in self._whole_text else token_to_str(self._id_bytes[i])

    def encode_show_work(self, text: str, *, allowed_special: AllowedSpecial = ()) -> list[dict]:
        """The teaching view: for each pre-tokenized chunk, its bytes and the tokens after every merge.

        With GPT-2's merges, " hello" gives [{"chunk": " hello", "steps": [["Ġ", "h", "e", "l", "l", "o"],
        ["Ġ", "he", "l", "l", "o"], ["Ġ", "he", "ll", "o"], ["Ġhe", "ll", "o"], ["Ġhell", "o"], ["Ġhello"]],
        "ranks": [2, 41, 83, 5712, 23492], "ids": [23748]}]: the lowest-ranked pair merges first
        ("h e" is GPT-2's merge 2), and ranks[i] is the merge that made steps[i + 1].
        Special tokens are plain text (encode_ordinary) unless named in `allowed_special` (or "all",
        as `encode` takes it): each is then a chunk of its own, {"chunk": "<|endoftext|>", "steps":
        [["<|endoftext|>"]], "ranks": [], "ids": [50256], "special": True}, so the ids are encode's.
        An added token is always such a chunk, with "added": True."""
        allowed = self._special_set("allowed_special", allowed_special) if allowed_special != () else set()
        work = []
        for piece, kind in self._cut(text, allowed):
            if kind is not None:
                work.append({"chunk": piece, "steps": [[piece]], "ranks": [], "ids": [self._whole_ids[piece]], kind: True})
                continue
            for chunk in split_text(without_surrogates(piece)):
                byte_ids = [self._byte_ids[b] for b in chunk.encode("utf-8")]
                merges: list[tuple[int, list[int]]] = []
                ids = merge_chunk(byte_ids.copy(), self._ranks, self._merged_id, merges)
                steps = [byte_ids] + [s for _, s in merges]
                work.append({
                    "chunk": chunk,
                    "steps": [[self.id_to_token(i) for i in s] for s in steps],
                    "ranks": [rank for rank, _ in merges],
                    "ids": ids,
                })
        return work

    # ---- many texts at once (minigpt/tokenizer_batch.py) ----

    # Both spell out the keywords of the function they hand over to (so that help() and editors show
    # them, not **kwargs), with its defaults: a test checks the two signatures agree.

    def encode_batch(self, texts: Iterable[str], *, allowed_special: AllowedSpecial = (),
                     disallowed_special: AllowedSpecial = "all", num_workers: int | None = None) -> list[list[int]]:
        """Encode many documents on every core; the ids are exactly `[encode(t) for t in texts]`.
        Keywords: encode's `allowed_special` / `disallowed_special`, and `num_workers` (processes,
        this one included; None or 0: one per core)."""
        from minigpt.tokenizer_batch import encode_batch

        return encode_batch(self, texts, allowed_special=allowed_special, disallowed_special=disallowed_special,
                            num_workers=num_workers)

    def __call__(
        self,
        texts: str | Sequence[str],
        *,
        padding: bool | Literal["longest", "max_length"] = False,
        padding_side: Literal["left", "right"] | None = None,
        truncation_side: Literal["left", "right"] | None = None,
        truncation: bool | Literal["longest_first", "only_first", "do_not_truncate"] | None = None,
        max_length: int | None = None,
        return_tensors: Literal["pt"] | None = None,
        allowed_special: AllowedSpecial = (),
        disallowed_special: AllowedSpecial = "all",
        **unexpected,
    ) -> dict[str, Any]:
        """Encode a batch for the model, as Hugging Face users expect: {"input_ids", "attention_mask"}
        (1 = real token, 0 = padding), with HF's `padding`, `padding_side` and `truncation_side` (default:
        the attributes), `truncation`, `max_length`, `return_tensors="pt"`, and `encode`'s `allowed_special` / `disallowed_special`
        (see minigpt/tokenizer_batch.py's `model_inputs`). Other keywords (`unexpected`: transformers takes
        many more) are a TypeError that lists these."""
        from minigpt.tokenizer_batch import model_inputs

        return model_inputs(self, texts, padding=padding, padding_side=padding_side, truncation_side=truncation_side,
                            truncation=truncation, max_length=max_length, return_tensors=return_tensors,
                            allowed_special=allowed_special, disallowed_special=disallowed_special, **unexpected)

    # ---- files (formats explained in minigpt/tokenizer_files.py) ----

    @classmethod
    def from_pretrained(cls: type[SomeTokenizer], path: str | os.PathLike[str]) -> SomeTokenizer:
        """Load a directory's tokenizer.json, or else its vocab.json + merges.txt (Hugging Face's GPT-2
        layout), with any added tokens (special or not), and the eos_token, pad_token, padding_side,
        truncation_side and model_max_length its files name: what transformers reads, in its order
        (minigpt/tokenizer_files.py's `read_hf`). A GPT-2 size name ("gpt2" ... "gpt2-xl", or the
        Hub's "openai-community/gpt2"), when no such directory exists, means the shipped checkpoints/gpt2."""
        from minigpt.tokenizer_files import read_hf

        vocab, merges, special_tokens, settings = read_hf(path)
        return cls(vocab, merges, special_tokens, **settings)

    def save_pretrained(self, path: str | os.PathLike[str]) -> None:
        """Write vocab.json + merges.txt (+ tokenizer_config.json, naming eos_token, pad_token (the
        EOS unless another), a padding_side or truncation_side of "left", model_max_length if set,
        and the added tokens as not special), atomically; transformers' GPT2TokenizerFast opens the
        directory, gives the same ids, pads with the same id and truncates at the same length.
        A checkpoint's writer sets `tok.model_max_length` first: the length its model was trained on
        (minigpt/pretrain.py's `trained_length`)."""
        from minigpt.tokenizer_files import write_hf

        write_hf(self, path)

    @classmethod
    def from_tiktoken(cls: type[SomeTokenizer], file: str | os.PathLike[str],
                      special_tokens: dict[str, int] | None = None) -> SomeTokenizer:
        """Load tiktoken's ranks file (`gpt2.tiktoken`); special_tokens default to <|endoftext|>
        right after the ranks (50256 for GPT-2)."""
        from minigpt.tokenizer_files import read_tiktoken

        return cls(*read_tiktoken(file, special_tokens))

    # ---- training ----

    @classmethod
    def train(
        cls: type[SomeTokenizer],
        text_or_files: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        vocab_size: int,
        special_tokens: Sequence[str] = ("<|endoftext|>",),
        *,
        progress: bool = True,
    ) -> SomeTokenizer:
        """Learn a byte-level BPE vocabulary of `vocab_size` tokens (256 bytes + merges + specials).

        text_or_files: a str is the training text itself; a Path, or a list of paths, names UTF-8
        files, read as Python reads text ("\\r\\n" and "\\r" become "\\n", as every minigpt command
        reads its text files: pass the str to keep them). Special tokens get the last ids and never
        take part in merges (their text in the training data is cut out first). If the text runs
        out of pairs, the vocabulary ends up smaller."""
        from minigpt.bpe_train import train_tokenizer

        return cls(*train_tokenizer(text_or_files, vocab_size, special_tokens, progress=progress))


def model_tokenizer(model_dir: str | os.PathLike[str], tokenizer_dir: str | os.PathLike[str] | None = None) -> Tokenizer:
    """The tokenizer of `tokenizer_dir` (a command's --tokenizer), else the one saved beside the
    model in `model_dir`. `save_pretrained(dir)` (minigpt's or transformers') writes the weights and
    config.json only, so a model saved alone is told to pass --tokenizer: generate, eval and
    finetune say it alike. A folder of LoRA adapters alone (minigpt/lora.py's `load_adapted`)
    without tokenizer files of its own takes its base model's."""
    from minigpt.lora import adapter_base, check_adapter_chain

    if tokenizer_dir:
        return Tokenizer.from_pretrained(tokenizer_dir)
    try:
        return Tokenizer.from_pretrained(model_dir)
    except FileNotFoundError as e:
        if (base := adapter_base(model_dir)) is not None:
            check_adapter_chain(model_dir)  # (bases that loop would recurse here too)
            return model_tokenizer(base)
        shipped = "gpt2" if gpt2_name("gpt2") else GPT2_DIR  # "gpt2" names the shipped one only where no ./gpt2 exists
        raise FileNotFoundError(f"{e}: for a model saved without its tokenizer, pass --tokenizer DIR (GPT-2's, "
                                f"shipped: --tokenizer {shipped})") from None
