"""Learning byte-level BPE merges from text (what `Tokenizer.train` runs).

Where it sits: before everything else. Training text → merges (+ vocab) → `Tokenizer` → encode.

BPE training repeats one step: find the most frequent adjacent pair of tokens, and make it a new
token. Done naively (recount every pair in the whole text after each merge) that costs
O(merges × text). Three ideas make it fast:
1. **Count unique chunks.** Merges never cross a pre-tokenized chunk, so the text becomes a table
   {chunk: how often it occurs}; Shakespeare's 1.1 MB has only ~15k distinct chunks.
2. **Update pair counts incrementally, only beside the merge sites.** An index pair → {chunks
   holding it} means a merge visits only the chunks that hold the pair, and in each only the pairs
   that overlap a merged occurrence change: its left neighbour, itself, its right neighbour ("x a b
   y" → "x X y" swaps (x, a), (a, b), (b, y) for (x, X), (X, y)). `list.index` finds the sites at C
   speed, so a merge costs Python work per site, not per symbol of a long chunk (`merge_words`).
3. **A heap of pair counts** gives the most frequent pair in O(log n). Entries are never updated in
   place: a changed count is pushed again, and stale entries are skipped when popped.
Ties are broken deterministically: equal counts → the smallest (left id, right id) pair wins (a tuple
compare), which may hold a newer token: after a+b, (c, ab) = (66, 256) beats (d, e) = (67, 68).
`count_chunks` builds that table, `count_pairs` the first pair counts, `merge_words` one
merge's updates, and `train_bpe` is the loop; `train_tokenizer` (`Tokenizer.train`'s
body) checks the arguments and hands them the text: one file at a time, special tokens cut out.

Not handled: min-frequency cut-offs, dropout, and a single file larger than memory (each file is
read whole; the table of chunks is what grows with the corpus; a text with no line break to cut
at is split whole, at ~16x its size). A merge still copies each chunk that holds the pair (in C,
a slice at a time) and searches it for the pair's left token, so one very long chunk stays slower
than many short ones: 1,000 merges on 50 kB of letters without a space ran ~20× faster once the
updates were limited to the merge sites (0.8 s against 18.7 s before, one after the other on a
2-core Intel Xeon). Pure Python: Hugging Face's Rust trainer is faster
on most texts (BENCHMARKS.md#tokenizer has the ratios).
"""
from __future__ import annotations

import heapq
import os
import re
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

from minigpt.checks import as_count, check_flag
from minigpt.files import read_text
from minigpt.pretokenize import (BYTE_TO_CHAR, CHAR_TO_BYTE, safe_pieces, special_token_regex, split_text, str_to_token,
                                 without_surrogates)
from minigpt.progress_bar import progress_bar

# The 256 single bytes get GPT-2's ids (the order of its bytes_to_unicode table: '!' is 0), so a
# trained tokenizer's ids 0-255 mean what they mean in GPT-2.
GPT2_BYTE_IDS = {bytes([b]): i for i, b in enumerate(BYTE_TO_CHAR)}


def merge_sites(ids: list[int], pair: tuple[int, int]) -> list[int]:
    """Where `pair` merges in `ids`: the start of each occurrence, left to right, never overlapping
    ("aaa" has one site for (a, a), at 0: merging gives "aa" "a"). `list.index` finds each next
    left id at C speed, so a long chunk costs Python work per site, not per symbol."""
    left, right = pair
    sites, i, last = [], 0, len(ids) - 1
    try:
        while True:
            i = ids.index(left, i)
            if i < last and ids[i + 1] == right:
                sites.append(i)
                i += 2
            else:
                i += 1
    except ValueError:  # no `left` after i
        return sites


def merge_at(ids: list[int], sites: list[int], new_id: int) -> list[int]:
    """`ids` with the pair that starts at each of `sites` replaced by `new_id`, copied a slice at a time."""
    out, done = [], 0
    for s in sites:
        out += ids[done:s]
        out.append(new_id)
        done = s + 2
    out += ids[done:]
    return out


def pairs_touching(ids: list[int], starts: list[int], width: int) -> list[tuple[int, int]]:
    """The adjacent pairs of `ids` that overlap a span of `width` symbols starting at one of `starts`,
    each once. Merging the pair at s changes the pairs that start at s-1, s and s+1 (left neighbour,
    the pair, right neighbour): width 2, in the old chunk. In the new chunk the merged token at p is
    in the pairs that start at p-1 and p: width 1. Spans side by side share the pair between them:
    "a b a b" → "X X" loses (a, b) twice and (b, a) once, and gains (X, X) once."""
    last = len(ids) - 2  # where the last pair starts
    pair_starts = {k for s in starts for k in range(s - 1, s + width) if 0 <= k <= last}
    return [(ids[k], ids[k + 1]) for k in pair_starts]


# count_chunks splits text this many characters at a time: split_text's list holds every chunk of
# what it is given as a str of its own (~16x the text's bytes), so a whole 33 MB file at once
# peaked at 540 MB; a piece's list is small, and the table of distinct chunks is all that stays.
COUNT_PIECE_CHARS = 1 << 20


def count_chunks(texts: Iterable[str], special_tokens: Sequence[str] = (), *, total_bytes: int | None = None,
                 progress: bool = True) -> Counter[str]:
    """{chunk: how often it occurs} over the texts, cut by GPT-2's pre-tokenizer (`split_text`) as
    encoding will cut them, with the special tokens cut out first (no merge may learn from their text).

    Each text is split piece by piece, at safe cuts (minigpt/pretokenize.py's `safe_pieces`: never
    inside a chunk, nor inside a special token), so the counts are those of the whole text. A bar
    counts the UTF-8 bytes done, of `total_bytes` (the files' sizes; None: no total known)."""
    check_flag("progress", progress)  # before the counting: "no" would read as True
    cut = special_token_regex(special_tokens) if special_tokens else None
    counts: Counter[str] = Counter()
    with progress_bar(total=total_bytes, desc="counting chunks", unit="B", unit_scale=True, disable=not progress) as bar:
        for text in texts:
            for piece in safe_pieces(text, COUNT_PIECE_CHARS, special_tokens):
                for part in cut.split(piece) if cut else (piece,):
                    counts.update(split_text(part))
                bar.update(len(piece.encode("utf-8")))
        if total_bytes is not None:  # a file's "\r\n" is read as "\n", a byte order mark dropped: its text is shorter than its bytes
            bar.update(total_bytes - bar.n)
    return counts


def count_pairs(words: list[list[int]], freqs: list[int]) -> tuple[dict[tuple[int, int], int], dict[tuple[int, int], set[int]]]:
    """Each adjacent pair's count over the words (a word weighs its frequency), and the index
    pair → {indices of the words that hold it}: the state that `merge_words` keeps up to date."""
    pair_counts: dict[tuple[int, int], int] = defaultdict(int)
    where: dict[tuple[int, int], set[int]] = defaultdict(set)
    for w, (word, freq) in enumerate(zip(words, freqs)):
        for pair in zip(word, word[1:]):
            pair_counts[pair] += freq
            where[pair].add(w)
    return pair_counts, where


def merge_words(words: list[list[int]], freqs: list[int], where: dict[tuple[int, int], set[int]],
                pair: tuple[int, int], new_id: int) -> dict[tuple[int, int], int]:
    """Merge `pair` into `new_id` in the words that hold it (rewritten in place) and return how the
    pair counts change. Only the pairs next to a merge site change; the rest of a word is not read.

    Sites are kept as positions, never found again by looking for `new_id`: that id may already
    stand elsewhere in the word (two merges that make the same bytes share one id, see `train_bpe`).
    `where` gains each word under its new pairs. A word that lost a pair stays listed under it (when
    that pair merges, `merge_sites` finds nothing there), and `pair`'s own list is used up."""
    delta: dict[tuple[int, int], int] = defaultdict(int)
    for w in where.pop(pair, ()):
        word, freq = words[w], freqs[w]
        sites = merge_sites(word, pair)
        if not sites:
            continue  # stale: an earlier merge took this word's occurrences
        new_word = merge_at(word, sites, new_id)
        for p in pairs_touching(word, sites, width=2):
            delta[p] -= freq
        merged = [s - n for n, s in enumerate(sites)]  # each site before shortens the word by one
        for p in pairs_touching(new_word, merged, width=1):
            delta[p] += freq
            where[p].add(w)
        words[w] = new_word
    return delta


def train_bpe(
    counts: dict[str, int], vocab_size: int, *, progress: bool = True
) -> tuple[dict[bytes, int], list[tuple[bytes, bytes]]]:
    """Learn merges until the vocab (the 256 bytes + merged tokens) has `vocab_size` tokens.

    counts: {chunk: how often it occurs}, as `count_chunks` gives it. Returns (vocab: token bytes
    → id, merges in rank order). If two different merges produce the same bytes (e.g. "a"+"bc"
    and "ab"+"c"), the second reuses the first one's id, as Hugging Face's trainer does.
    """
    check_flag("progress", progress)  # before the merges: "no" would read as True
    words = [[GPT2_BYTE_IDS[bytes([b])] for b in chunk.encode("utf-8")] for chunk in counts]
    freqs = list(counts.values())
    vocab = dict(GPT2_BYTE_IDS)
    id_bytes = {i: t for t, i in vocab.items()}

    pair_counts, where = count_pairs(words, freqs)
    heap = [(-count, pair) for pair, count in pair_counts.items()]  # (-count, pair): max count, then min ids
    heapq.heapify(heap)

    merges: list[tuple[bytes, bytes]] = []
    bar = progress_bar(total=vocab_size - len(vocab), desc="BPE merges", unit="merge", disable=not progress)
    while len(vocab) < vocab_size and heap:
        neg_count, pair = heapq.heappop(heap)
        if pair_counts.get(pair) != -neg_count:
            continue  # stale: this pair's count changed after the entry was pushed
        merged = id_bytes[pair[0]] + id_bytes[pair[1]]
        merges.append((id_bytes[pair[0]], id_bytes[pair[1]]))
        if merged not in vocab:
            vocab[merged] = len(vocab)
            id_bytes[vocab[merged]] = merged
            bar.update()
        new_id = vocab[merged]

        delta = merge_words(words, freqs, where, pair, new_id)
        for p, d in delta.items():
            if d == 0:
                continue
            pair_counts[p] += d
            if pair_counts[p] > 0:
                heapq.heappush(heap, (-pair_counts[p], p))
            else:
                del pair_counts[p]  # gone from every word (the merged pair itself ends here)
    bar.close()
    return vocab, merges


def train_tokenizer(
    text_or_files: str | os.PathLike | Sequence[str | os.PathLike],
    vocab_size: int,
    special_tokens: Sequence[str],
    *,
    progress: bool,
) -> tuple[dict[bytes, int], list[tuple[bytes, bytes]], dict[str, int]]:
    """`Tokenizer.train`'s work (its docstring has the arguments): (vocab, merges, special tokens),
    what `Tokenizer(...)` takes. Special tokens get the ids after the vocab's."""
    check_flag("progress", progress)  # before any file is read: "no" would read as True
    if isinstance(special_tokens, str):  # list("<s>") would be three special tokens, refused only after training
        raise TypeError(f"special_tokens takes a list of strings, got the string {special_tokens!r}: pass [{special_tokens!r}]")
    specials = list(special_tokens)
    if not all(isinstance(s, str) and s for s in specials) or len(set(specials)) != len(specials):
        raise ValueError(f"special_tokens must be distinct non-empty strings, got {specials!r}")
    # One spelled like a byte's token ("!", "a", "Ġ": every vocabulary has those) could not be told
    # from it in vocab.json: refused now (Tokenizer's own check), not after the training.
    if clash := next((s for s in specials if set(s) <= CHAR_TO_BYTE.keys() and len(str_to_token(s)) == 1), None):
        raise ValueError(f"special token {clash!r} is spelled like the regular token of the byte {str_to_token(clash)!r}: "
                         "vocab.json could not tell them apart; choose another text, such as <|...|>")
    if isinstance(text_or_files, (bytes, bytearray)):  # else iterated as file names: "expected str ..., not int"
        raise TypeError("the training text is bytes: pass it as a str (decode it first), or pass file paths")
    vocab_size = as_count("vocab_size", vocab_size)
    if vocab_size < 256 + len(specials):
        raise ValueError(
            f"vocab_size must be an int >= 256 + {len(specials)} (the byte alphabet and the special tokens), "
            f"got {vocab_size!r}"
        )
    if isinstance(text_or_files, str):
        texts, files, total_bytes = [without_surrogates(text_or_files)], [], None
    else:
        files = [text_or_files] if isinstance(text_or_files, os.PathLike) else list(text_or_files)
        check_training_files(files)  # all of them now, not after counting the ones before
        texts, total_bytes = map(read_text, files), sum(map(os.path.getsize, files))  # one file in memory at a time
    counts = count_chunks(texts, specials, total_bytes=total_bytes, progress=progress)
    if not counts and vocab_size > 256 + len(specials):  # merges asked for, and no text: a wrong file, surely
        source = f" ({', '.join(map(str, files))})" if files else ""
        raise ValueError(f"the training text{source} is empty (special tokens aside): there is nothing to learn "
                         f"{vocab_size - 256 - len(specials)} merges from")
    vocab, merges = train_bpe(counts, vocab_size - len(specials), progress=progress)
    if len(vocab) + len(specials) < vocab_size:  # legal (a tiny text), but a small vocabulary can surprise
        hint = ""
        if isinstance(text_or_files, str) and os.path.isfile(text_or_files):  # the likeliest cause
            hint = f" (a str is the text itself: to train on the file {text_or_files!r}, pass Path({text_or_files!r}))"
        warnings.warn(f"only {len(vocab) + len(specials)} of the {vocab_size} tokens asked for: the text has no more "
                      f"pairs to merge{hint}", stacklevel=3)  # stacklevel: the caller of Tokenizer.train
    return vocab, merges, {s: len(vocab) + i for i, s in enumerate(specials)}


def check_training_files(files: Sequence[str | os.PathLike]) -> None:
    """FileNotFoundError (IsADirectoryError) naming the first of `files` that is not a file. A str
    that reads like a text (`looks_like_text`) is more likely a text passed where paths go: said so."""
    for f in files:
        if os.path.isdir(f):
            raise IsADirectoryError(f"training file {f} is a directory; name the text files in it")
        if not os.path.isfile(f):
            hint = ""
            if looks_like_text(f):
                hint = ("; it looks like a text, not a path: a list is read as file paths. To train on texts "
                        "in memory, pass them as one str, e.g. '\\n'.join(texts)")
            raise FileNotFoundError(f"training file {f} does not exist{hint}")


def looks_like_text(f: str | os.PathLike) -> bool:
    """Whether a training "file" that does not exist reads like a text given in its place
    (`Tokenizer.train(["the cat sat", "a dog"])`): a str holding a line break, or a space with
    neither a folder separator nor an extension. A Path never does (the CLI's FILES are Paths), nor
    a plausible path with a space in it ("my data/input.txt"), where Python advice would mislead."""
    if not isinstance(f, str):
        return False
    if "\n" in f or "\r" in f:
        return True
    has_separator = "/" in f or os.sep in f
    has_extension = re.search(r"\.\w+$", f) is not None  # ".txt"; a sentence's last "." is none
    return " " in f and not has_separator and not has_extension
