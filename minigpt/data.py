"""Token files for training: text → ids on disk once, then random windows read memory-mapped.

Where it sits: text files → `Tokenizer.encode_batch` → `train.bin` / `val.bin` (this file, once)
→ `sample_batch` → (x, y) windows → GPT → loss (`minigpt train`, minigpt/pretrain.py, driving
minigpt/train.py's loop, every step).

Why a file of ids instead of text: tokenizing is slow and training reads the same data many
times, so it is done once. The ids are stored as raw uint16 (GPT-2's 50,257 ids fit in 16 bits,
half the bytes of int32), and training opens them with `np.memmap`: the OS pages in only the
windows a batch touches, so a corpus far larger than RAM trains just as well.

A DATA_DIR written by `minigpt prepare` holds:
    train.bin, val.bin   uint16 token ids, documents separated by <|endoftext|>
    val.txt              the held-out text itself, for `minigpt eval MODEL DATA_DIR/val.txt`
    meta.json            vocab size, <|endoftext|>'s id, the files' dtype, token and byte counts (bytes/token
                         gives bits per byte), sources, val_fraction
    tokenizer/           the tokenizer's files, copied into every checkpoint trained on it

Not handled: vocabularies over 65,536 ids (they would need uint32 files).
"""
from __future__ import annotations

import argparse
import codecs
import hashlib
import json
import os
import re
import shlex
import sys
from collections.abc import Collection, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np

from minigpt.checks import check_flag, is_int
from minigpt.files import (NO_LOCKS, atomic_path, atomic_write_text, file_lock, no_follow, not_utf8, read_json, read_text,
                           refuse_nul_bytes, stored_path, user_path)
from minigpt.pretokenize import last_safe_cut_before, safe_cut_at, safe_piece_bounds, splits_one_of
from minigpt.progress_bar import progress_bar
from minigpt.tokenizer import Tokenizer

if TYPE_CHECKING:  # torch is imported where batches are made (sample_batch): `minigpt prepare`, and `tokenize
    import torch   # --train` reading MAX_VOCAB, need not wait 1-2 s for its import

TOKEN_DTYPE = np.uint16
MAX_VOCAB = np.iinfo(TOKEN_DTYPE).max + 1  # 65,536 ids fit in uint16
CHUNK_CHARS = 1 << 22  # text handed to encode_batch 4M characters at a time (it spreads each over all cores)
CHECK_TOKENS = 1 << 24  # ids scanned per block when checking a file against vocab_size
UTF8_CHECK_BYTES = 1 << 20  # an input's bytes decoded per block when checking that it is UTF-8 (check_input)
# What marks a directory as prepared data: `prepare` without overwrite refuses one, since runs
# trained on it would find other data under its name.
DATA_FILES = ("train.bin", "val.bin", "val.txt", "meta.json", "tokenizer")
# Held by a `prepare` for its --out (`prepare_lock`); the name `minigpt train` locks its OUT_DIR with.
LOCK_FILE = ".lock"
# A token file's hash reads all of its ids up to 64 blocks of 64Ki (4M ids, 8 MiB), and beyond that
# 64 such blocks spread evenly over it: cheap at any size, as a resumed run computes it every time.
HASH_BLOCKS, HASH_BLOCK_TOKENS = 64, 1 << 16
# Said by `main` and by `minigpt tokenize --train` of a tokenizer without an eos_token: nothing in
# train.bin then tells where one file's text ends and the next begins.
NO_EOS_WARNING = ("has no end-of-document token (eos_token): `minigpt prepare` joins the files with no boundary "
                  "between them, and a model trained on them never learns to stop")


# ---- preparing: text → train.bin / val.bin ------------------------------------------------------


def encode_chunks(tokenizer, text: str, chunk_chars: int = CHUNK_CHARS, start: int = 0, end: int | None = None):
    """Yield (chunk, ids) for each ~chunk_chars piece of text[start:end], cut where the cut cannot
    change the ids (minigpt/pretokenize.py's `safe_piece_bounds`): the ids joined are tokenizer.encode(text[start:end]) with
    special tokens allowed (<|endoftext|> written in the text becomes its id). No cut falls inside
    a special or added token (one whose text holds a newline could otherwise be cut in two).
    Each chunk is sliced as it is encoded, so no copy of text[start:end] is made."""
    end = len(text) if end is None else end
    for a, b in safe_piece_bounds(text, chunk_chars, whole_tokens(tokenizer), start, end):
        chunk = text[a:b]
        yield chunk, tokenizer.encode_batch([chunk], allowed_special="all")[0]  # on every core


def whole_tokens(tokenizer) -> list[str]:
    """The tokens a text holds whole, which BPE does not make: special and added ones."""
    return [*getattr(tokenizer, "special_tokens", ()), *getattr(tokenizer, "added_tokens", ())]


def encode_text(tokenizer, text: str, chunk_chars: int = CHUNK_CHARS) -> list[int]:
    return [i for _, ids in encode_chunks(tokenizer, text, chunk_chars) for i in ids]


def _cut_point(text: str, val_fraction: float, special_tokens: Collection[str] = ()) -> int | None:
    """Where the validation part of one file starts, at a line break: the first safe cut
    (minigpt.pretokenize.SAFE_CUT) at or after (1 - val_fraction) of its characters, so both parts
    encode to exactly the ids of the whole. Else (none there, or only the file's final "\\n", which
    would hold out a blank line) the last one before that point, if the held-out part stays under
    twice its share. None where no such cut leaves text, not only whitespace, on both sides: a file
    of one line, or of a few short ones (`split_points` then holds it out whole, or trains on it).
    No cut falls inside one of `special_tokens`, which would then be encoded as plain text on both sides."""
    target = int(len(text) * (1 - val_fraction))
    before = last_safe_cut_before(text, target, special_tokens)
    if before is not None and len(text) - before >= 2 * (len(text) - target):
        before = None  # a header line and one long line: it would hold out nearly all of the file
    for cut in (safe_cut_at(text, target, special_tokens), before):
        if cut is not None and _has_text(text, 0, cut) and _has_text(text, cut, len(text)):
            return cut
    return None


_NON_SPACE = re.compile(r"\S")


def _has_text(text: str, start: int, end: int) -> bool:
    """Whether text[start:end] holds anything but whitespace (searched in place: no copy of the part)."""
    return _NON_SPACE.search(text, start, end) is not None


def _cut_inside_line(text: str, n_val: float, special_tokens: Collection[str] = ()) -> int:
    """Where to cut about the last `n_val` characters off a text that has no line break to cut at:
    at the last space before that point, so that no word is cut in two, if the held-out part stays
    under twice n_val; else at that very character (a text without spaces: minified JSON, Chinese).
    Never inside one of `special_tokens`."""
    point = int(len(text) - n_val)
    space = text.rfind(" ", max(1, int(len(text) - 2 * n_val) + 1), point + 1)  # (-1: none in that stretch)
    cut = point if space == -1 else space
    while cut < len(text) and splits_one_of(text, cut, special_tokens):
        cut += 1  # past the special token it would cut
    return cut


def split_points(paths: list[Path], val_fraction: float, special_tokens: Collection[str] = ()) -> list[int]:
    """Where each file's validation part starts, as an offset into its text: its length where none
    of it is held out, 0 where all of it is.

    A file with a line break to cut at (`_cut_point`) gives its last val_fraction or so: every
    source is in both splits. The others (one line, or a few short ones: a folder of reviews or
    tweets) are not cut at a line break, since their tail would be the end of a line or a blank.
    A large one, twice their val_fraction share of characters or more (a fifth of them at 0.1: a
    one-line dump), is cut inside its line at its own val_fraction
    (`_cut_inside_line`). The small ones are held out whole, the last of them, until they make up
    val_fraction of the small ones' characters (one that would overshoot that more than it falls
    short without it trains whole). So a big file beside many small ones neither fills validation
    alone nor leaves the small ones none. Large is decided once, against all of them: a few files
    of about one size are all large, each cut in its line (a folder of three tweets gives no whole
    file of 10%).

    Each file is read here, one at a time, and again when it is encoded: which files are held out
    whole depends on all of them, and reading is fast beside encoding."""
    lengths, points, uncut = [], [], []
    for i, p in enumerate(paths):
        text = read_text(p)
        cut = _cut_point(text, val_fraction, special_tokens)
        lengths.append(len(text))
        points.append(len(text) if cut is None else cut)
        if cut is None:
            uncut.append(i)
        del text  # before the next file is read
    uncut_share = val_fraction * sum(lengths[i] for i in uncut)  # characters the uncut files hold out
    large = [i for i in uncut if lengths[i] >= 2 * uncut_share]
    small = [i for i in uncut if lengths[i] < 2 * uncut_share]
    share, held = val_fraction * sum(lengths[i] for i in small), 0  # what the small ones hold out, whole
    for i in reversed(small):
        if held >= share:
            break
        if held + lengths[i] - share < share - held:  # held out if that brings `held` nearer the share
            points[i], held = 0, held + lengths[i]
    for i in large:
        text = read_text(paths[i])
        cut = _cut_inside_line(text, val_fraction * len(text), special_tokens)
        if _has_text(text, 0, cut) and _has_text(text, cut, len(text)):
            points[i] = cut
    return points


def prepare(inputs: list[str | os.PathLike], tokenizer, out_dir: str | os.PathLike, val_fraction: float = 0.1,
            overwrite: bool = False, allow_json: bool = False, progress: bool = True) -> dict:
    """Tokenize text files into out_dir/{train,val}.bin + meta.json; return the meta dict.

    An out_dir that already holds prepared data (any of DATA_FILES) is refused unless `overwrite`:
    runs trained on it would find other data under the same name. An empty or new out_dir, or one
    holding only other files, is fine. One prepare at a time writes an out_dir: another one there
    (a job launched twice) is refused at once (`prepare_lock`).

    The last `val_fraction` of *each* file goes to validation, cut at a line break, so every source
    is represented in both splits; files with no line break to cut at (one line, or a few short
    ones) are held out whole instead, the last ones (`split_points`). Each file's part of each split
    ends with <|endoftext|>, which marks document boundaries for the model (in train, also where a
    file's val tail was cut off, mid-document); a part whose text already ends with <|endoftext|>
    gets no second one (an empty document). A split far from `val_fraction` of the tokens (under
    half or over twice it) is warned about on stderr.

    Files of JSON records are refused (`check_not_json`) unless `allow_json`: they would be
    trained on as text, braces, keys and escapes included.

    progress=False: no "tokenizing" bar (a caller that draws its own, or none: finetune's).

    out_dir/val.txt gets the held-out text as it was read (the files' tails one after another,
    with no <|endoftext|> between them; read in text mode, so "\\r\\n" is "\\n" there): its bytes are
    meta's val_bytes, so the bits per byte `minigpt eval` reports on it are over the validation
    text itself (all of it but the first token, which nothing predicts), and nothing has to work
    out again where the cut fell.
    """
    check_flag("progress", progress)  # "no" would read as True
    if not 0 < val_fraction < 1:  # 0 would leave val.bin empty, and training evaluates on it
        raise ValueError(f"val_fraction must be in (0, 1): training evaluates on the held-out part; got {val_fraction}")
    if tokenizer.vocab_size > MAX_VOCAB:
        raise ValueError(f"vocab_size {tokenizer.vocab_size} does not fit uint16 token files (max {MAX_VOCAB})")
    if isinstance(inputs, (str, bytes, os.PathLike)):  # iterating one path would give its characters
        raise TypeError(f"inputs must be a list of text files, got one {type(inputs).__name__} {inputs!r}: pass [{inputs!r}]")
    paths = [Path(p) for p in inputs]
    if not paths:
        raise ValueError("no input files given")
    for p in paths:  # every one now: a bad last file was found only after tokenizing all the others
        check_input(p)
        if not allow_json:
            check_not_json(p)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():  # mkdir would say only "File exists"
        raise FileExistsError(f"output directory {out} is a file; the data goes into a directory "
                              "(train.bin, val.bin, val.txt, meta.json, tokenizer/)")
    # The folders this prepare makes (--out, and any missing above it): a prepare refused (too
    # little text, a full disk, Ctrl-C) leaves none of them behind, empty.
    made = [p for p in (out, *out.absolute().parents) if not p.exists()]
    try:
        return _prepare(paths, tokenizer, out, val_fraction, overwrite, progress)
    except BaseException:
        for folder in made:  # deepest first
            with suppress(OSError):  # only an empty folder goes: another prepare's, or its files, stay
                folder.rmdir()
        raise


def _prepare(paths: list[Path], tokenizer, out: Path, val_fraction: float, overwrite: bool, progress: bool) -> dict:
    """`prepare`'s work, its inputs checked."""
    # Held from the look at what `out` holds until meta.json is written: two prepares there at once
    # would both pass that look, then share the temp files (train.bin.tmp, ...) and each rename the
    # other's half-written data into place.
    with prepare_lock(out):
        found = [name for name in DATA_FILES if (out / name).exists()]
        if found and not overwrite:  # before any work, as `minigpt train` refuses an OUT_DIR that holds a run
            raise FileExistsError(f"{out} already holds prepared data ({', '.join(found)}), which runs may have been "
                                  "trained on: choose another --out, or pass --overwrite to replace it (to add a corpus "
                                  "to it, prepare all the files together into a new --out)")
        n_tokens, n_bytes = write_token_files(paths, tokenizer, out, val_fraction, progress)
        warn_if_far_from_fraction(n_tokens, val_fraction)
        tokenizer.save_pretrained(out / "tokenizer")
        meta = {
            "vocab_size": tokenizer.vocab_size,
            "eos_token_id": tokenizer.eos_token_id,
            "dtype": np.dtype(TOKEN_DTYPE).name,
            "train_tokens": n_tokens["train"],
            "val_tokens": n_tokens["val"],
            "train_bytes": n_bytes["train"],  # UTF-8 bytes of the text, for bits per byte
            "val_bytes": n_bytes["val"],
            "sources": [stored_path(p) for p in paths],
            "val_fraction": val_fraction,
        }
        atomic_write_text(out / "meta.json", json.dumps(meta, indent=2) + "\n")
    return meta


@contextmanager
def prepare_lock(out: Path) -> Iterator[None]:
    """Hold out/.lock (minigpt/files.py's `file_lock`, made with `out` if need be) for one prepare,
    or refuse at once, naming it, when another process holds it. The lock dies with its process:
    a killed prepare leaves none behind. On a file system without locks (`files.NO_LOCKS`: an NFS
    mount without its lock service, Lustre without flock), prepare goes on unguarded, with a
    warning, and leaves no lock file."""
    def busy() -> None:
        raise FileExistsError(f"{out} is in use by another `minigpt prepare`, still going (its process holds "
                              f"{out / LOCK_FILE}): wait for it to end, or choose another --out")

    with ExitStack() as held:
        try:
            held.enter_context(file_lock(out / LOCK_FILE, busy))
        except OSError as e:
            if e.errno not in NO_LOCKS:  # (busy's refusal, or a folder it may not make or write)
                raise
            print(f"warning: cannot lock {out / LOCK_FILE} ({e.strerror}): nothing keeps another prepare out of {out}",
                  file=sys.stderr)
            (out / LOCK_FILE).unlink(missing_ok=True)  # no one holds a lock where there are none
        yield


def val_share(n_tokens: dict) -> float:
    """The share of the tokens held out for validation."""
    return n_tokens["val"] / (n_tokens["train"] + n_tokens["val"])


def warn_if_far_from_fraction(n_tokens: dict, val_fraction: float) -> None:
    """Say on stderr when validation holds under half or over twice val_fraction of the tokens: the
    cuts follow line breaks and whole files, which a corpus of a few files may not offer near it
    (each part's <|endoftext|> counts too, which weighs in files of a few tokens)."""
    share = val_share(n_tokens)
    if val_fraction / 2 <= share <= 2 * val_fraction:
        return
    print(f"warning: validation holds {n_tokens['val']:,} tokens, {share:.1%} of them, far from the --val-fraction "
          f"{val_fraction:g} asked: the files give no closer cut (each is cut at a line break near its last "
          f"{val_fraction:g}; files without one are held out whole, the last ones); its val loss is noisier if "
          "small, and training has less text if large", file=sys.stderr)


def write_token_files(paths: list[Path], tokenizer, out: Path, val_fraction: float,
                      progress: bool = True) -> tuple[dict, dict]:
    """Encode each file into out/train.bin and out/val.bin, its held-out text into out/val.txt;
    return the token and UTF-8 byte counts of each split (progress: the bar). See `prepare`."""
    check_flag("progress", progress)  # before any file is read: "no" would read as True
    # Ids go to disk chunk by chunk, and each split is encoded from offsets into the file's text,
    # one chunk sliced at a time: memory holds one file's text (and, while it is read, its bytes
    # too) and one chunk's ids. (Slicing each split, then listing its chunks, held ~3 copies.)
    n_tokens = {"train": 0, "val": 0}
    n_bytes = {"train": 0, "val": 0}
    eos = tokenizer.eos_token_id
    points = split_points(paths, val_fraction, whole_tokens(tokenizer))  # no cut falls inside a special token
    total = sum(p.stat().st_size for p in paths)
    # Each file is written under a temp name and renamed into place once all are complete (the
    # files close first, then each atomic_path renames); if anything fails, the temp files go.
    with (
        atomic_path(out / "train.bin") as train_tmp,
        atomic_path(out / "val.bin") as val_tmp,
        atomic_path(out / "val.txt") as val_text_tmp,
        # no_follow: each temp file is atomic_path's new one, never a link swapped in for it since
        open(train_tmp, "wb", opener=no_follow) as f_train,
        open(val_tmp, "wb", opener=no_follow) as f_val,
        open(val_text_tmp, "w", encoding="utf-8", newline="", opener=no_follow) as f_val_text,  # newline="": "\n" stays one byte
        progress_bar(total=total, unit="B", unit_scale=True, desc="tokenizing", disable=not progress) as bar,
    ):
        files = {"train": f_train, "val": f_val}
        for p, cut in zip(paths, points):
            text = read_text(p)
            for split, start, end in (("train", 0, cut), ("val", cut, len(text))):
                if start == end:
                    continue
                last = None  # the part's last id
                for chunk, ids in encode_chunks(tokenizer, text, CHUNK_CHARS, start, end):
                    write_ids(files[split], ids)
                    if split == "val":
                        f_val_text.write(chunk)
                    chunk_bytes = len(chunk.encode("utf-8"))
                    n_tokens[split] += len(ids)
                    n_bytes[split] += chunk_bytes
                    bar.update(chunk_bytes)
                    last = ids[-1] if ids else last
                if eos is not None and last != eos:  # end of document, unless the text ends with its own
                    write_ids(files[split], [eos])
                    n_tokens[split] += 1
            del text  # before the next file is read: else two files' text are held at once
        bar.update(total - bar.n)  # a file's "\r\n" is read as "\n", a byte order mark dropped: its text is shorter than its bytes
        for split in ("train", "val"):  # refused now (nothing is written), not by `train` at its first batch
            if n_tokens[split] == 0:
                raise ValueError(f"{split}.bin would hold no tokens: the input is too short to split into a training "
                                 f"part and the last {val_fraction:g} of it held out; give more text")
    return n_tokens, n_bytes


def write_ids(f: BinaryIO, ids: Sequence[int]) -> None:
    """Append `ids` to the token file `f` as TOKEN_DTYPE. Through the file's own write, not numpy's
    `tofile`: on a full disk `tofile` says "[Errno 5] 617834 requested and 524288 written", where the
    write says what happened, "[Errno 28] No space left on device" (ENOSPC)."""
    f.write(np.asarray(ids, dtype=TOKEN_DTYPE).tobytes())


def check_input(path: Path) -> None:
    """Raise, naming `path`, unless it is a file prepare can tokenize: one that exists, is not a
    directory or empty, and is UTF-8 throughout. The UTF-8 check decodes UTF8_CHECK_BYTES at a
    time (an incremental decoder carries a character cut between two blocks over), so a corpus
    larger than memory is checked too; the error is read_text's (minigpt/files.py's `not_utf8`), offset and all."""
    if path.is_dir():
        raise IsADirectoryError(f"input {path} is a directory; prepare reads text files (name the files in it)")
    if not path.is_file():
        raise FileNotFoundError(f"input file {path} does not exist")
    if path.stat().st_size == 0:
        raise ValueError(f"input file {path} is empty")
    decoder, done = codecs.getincrementaldecoder("utf-8")(), 0  # done: the file's bytes before this block
    with open(path, "rb") as f:
        while True:
            block = f.read(UTF8_CHECK_BYTES)
            held = len(decoder.getstate()[0])  # the start of a character that the last block cut off
            try:
                text = decoder.decode(block, final=not block)  # b"": the end, where a cut-off character is an error
            except UnicodeDecodeError as e:  # e.start counts from the held bytes
                raise not_utf8(path, e, at=done - held) from None
            if done == 0:  # a token file of small ids, or UTF-16 text, is valid UTF-8 full of NULs
                refuse_nul_bytes(path, text)
            if not block:
                return
            done += len(block)


JSON_SUFFIXES = (".json", ".jsonl")


def check_not_json(path: Path) -> None:
    """Refuse, naming `path`, a file of JSON records: one named .json or .jsonl, or one whose every
    non-blank line in its first UTF8_CHECK_BYTES is a JSON object (JSON Lines by any name).
    prepare reads text, and would train on '{"text": "BRUTUS:\\nCome' as it stands, braces, keys
    and escapes included. Text that merely starts with "{" (code, LaTeX) passes: such lines are
    not JSON objects, or not all of them; so do lines of quoted sentences, which are JSON strings
    but text all the same. Not handled: a file whose first line alone is longer than UTF8_CHECK_BYTES."""
    found = json_file(path)
    if found is None:
        return
    # The jq filter that prints its text: an array's records, a string per line, or an object's key.
    # From the file's first character, not `text_head`'s, which is empty for a first line past its size.
    with open(path, encoding="utf-8-sig", errors="ignore") as f:
        first = f.read(4096).lstrip()[:1]
    query = ".[].text" if first == "[" else "." if first == '"' else ".text"
    out = path.with_suffix(".txt")
    out = shlex.quote(str(out if out != path else path.with_name(f"{path.stem}_text.txt")))  # (`> path` would empty it first)
    raise ValueError(f"input {path} {found}: prepare reads plain text, and would train on the braces, keys and escapes "
                     f"as text. Extract the text first, e.g. `jq -r '{query}' {shlex.quote(str(path))} > {out}` (text: "
                     f"the key that holds it), and prepare {out}; to train on the JSON itself, prepare it with "
                     "`minigpt prepare --allow-json` (for `minigpt finetune`, then give that --out as --data)")


def json_file(path: Path) -> str | None:
    """How `path` is a file of JSON records, in words ("is a .jsonl file", "holds JSON Lines ..."),
    or None where it is not one (`check_not_json`)."""
    if path.suffix.lower() in JSON_SUFFIXES:
        return f"is a {path.suffix} file"
    try:
        head = text_head(path)
    except UnicodeDecodeError:  # no text at all: the caller's UTF-8 check names the byte
        return None
    return "holds JSON Lines (each line of its start is a JSON object)" if all_json_objects(head) else None


def text_head(path: Path) -> str:
    """The first UTF8_CHECK_BYTES of `path` as text, whole lines only unless that is all of it
    (check_input has found the file UTF-8)."""
    with open(path, "rb") as f:
        head = f.read(UTF8_CHECK_BYTES)
        if f.read(1):  # more follows: drop the last line, which the block may have cut
            head = head[: head.rfind(b"\n") + 1]  # (a "\n" byte is never inside a UTF-8 character)
    return head.decode("utf-8-sig")


def all_json_objects(text: str) -> bool:
    """Whether every non-blank line of `text` is a JSON object, and there is one at least."""
    lines = [line for line in text.splitlines() if line.strip()]
    return bool(lines) and all(is_json_object(line) for line in lines)


def is_json_object(line: str) -> bool:
    """Whether `line` is one JSON object: a record of JSON Lines, not a line of text."""
    if not line.lstrip().startswith("{"):  # (most text: no parse at all)
        return False
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:  # (json.JSONDecodeError is one)
        return False


# ---- reading: memory-mapped ids → random (x, y) windows ----------------------------------------


def read_meta(data_dir: str | os.PathLike) -> dict:
    """DATA_DIR/meta.json, checked to be `prepare`'s: a vocab_size that uint16 ids can hold, an
    eos_token_id among its ids (or null), token files of TOKEN_DTYPE (the only dtype `load_tokens`
    reads: uint32 ids read as uint16 would be garbage), and each other field of the type `prepare`
    writes (`META_FIELDS`). A field's error names the file and the field: trusted as it was, a huge
    vocab_size built a model until memory ran out, and a mistyped count was a TypeError mid-run."""
    path = Path(data_dir) / "meta.json"
    if not path.exists():
        raise FileNotFoundError(f"no meta.json in {data_dir}: prepare the data with `minigpt prepare` first (uint16 token "
                                'files made elsewhere, as nanoGPT\'s prepare.py: write {"vocab_size": N, "eos_token_id": ID} '
                                "beside them, and the tokenizer's files into tokenizer/ there, for the checkpoints to carry)")
    try:
        meta = read_json(path)
    except ValueError as e:  # not UTF-8, or not JSON: read_json's message names the file
        raise ValueError(f"{e}; prepare the data again with `minigpt prepare`") from None
    if not isinstance(meta, dict) or not is_int(meta.get("vocab_size")):  # training needs the vocabulary size
        raise ValueError(f"{path} has no integer vocab_size: it is not the meta.json `minigpt prepare` writes")
    again = "prepare the data again with `minigpt prepare`"
    vocab_size = meta["vocab_size"]
    if not 1 <= vocab_size <= MAX_VOCAB:  # (prepare refuses a larger vocabulary)
        raise ValueError(f"{path} says vocab_size {vocab_size:,}, outside [1, {MAX_VOCAB:,}]: its token files hold uint16 "
                         f"ids, which number at most {MAX_VOCAB:,}; {again}")
    eos = meta.get("eos_token_id")  # (values are shown as meta.json writes them: null, "x")
    if eos is not None and not (is_int(eos) and 0 <= eos < vocab_size):  # (null: a tokenizer without one)
        raise ValueError(f"{path} says eos_token_id {json.dumps(eos)}, which is no id of its vocabulary [0, {vocab_size:,}) "
                         f"(or null, for a tokenizer without one); {again}")
    dtype = np.dtype(TOKEN_DTYPE).name
    if meta.get("dtype", dtype) != dtype:  # (no dtype at all: written by hand, or before meta.json named it)
        raise ValueError(f"{path} says the token files hold {meta['dtype']!r} ids; minigpt reads only {dtype}, what "
                         f"`minigpt prepare` writes (its vocabularies have at most {MAX_VOCAB:,} ids, which fit 16 bits): "
                         f"{again}")
    for field, (fits, what) in META_FIELDS.items():
        if field in meta and not fits(meta[field]):
            raise ValueError(f"{path} says {field} {json.dumps(meta[field])[:80]}, where `minigpt prepare` writes {what}; {again}")
    return meta


# The other fields of meta.json, as `prepare` writes them: a test, and its words. Each is checked
# only when present: a meta.json written by hand may hold vocab_size alone.
META_FIELDS = {
    "train_tokens": (lambda v: is_int(v) and v >= 1, "an integer >= 1 (train.bin's count of ids)"),
    "val_tokens": (lambda v: is_int(v) and v >= 1, "an integer >= 1 (val.bin's count of ids)"),
    "train_bytes": (lambda v: is_int(v) and v >= 0, "an integer >= 0 (the UTF-8 bytes of the train text)"),
    "val_bytes": (lambda v: is_int(v) and v >= 0, "an integer >= 0 (the UTF-8 bytes of the val text)"),
    "sources": (lambda v: isinstance(v, list) and all(isinstance(name, str) for name in v), "a list of file names"),
    "val_fraction": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 1, "a number in (0, 1)"),
}


def load_tokens(path: str | os.PathLike, vocab_size: int, min_tokens: int = 2) -> np.memmap:
    """Open a uint16 token file memory-mapped, after checking it can feed training.

    Every id is checked against vocab_size once here: a bad id would otherwise surface as an
    out-of-range embedding lookup deep inside the model (on a GPU, an opaque device assert).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"token file {path} does not exist")
    if path.stat().st_size == 0:
        raise ValueError(f"token file {path} is empty")
    if path.stat().st_size % np.dtype(TOKEN_DTYPE).itemsize:
        raise ValueError(f"token file {path} has an odd number of bytes; expected uint16 ids")
    tokens = np.memmap(path, dtype=TOKEN_DTYPE, mode="r")
    if len(tokens) < min_tokens:
        raise ValueError(f"token file {path} holds {len(tokens)} tokens; need at least {min_tokens} (block_size + 1, one window "
                         "and its next token): lower --block-size, or use more text (for val.bin, also a larger --val-fraction)")
    for i in range(0, len(tokens), CHECK_TOKENS):
        top = int(tokens[i : i + CHECK_TOKENS].max())
        if top >= vocab_size:
            raise ValueError(f"token file {path} holds token id {top}, outside the model's vocabulary [0, {vocab_size})")
    return tokens


def load_splits(data_dir: str | os.PathLike, meta: dict, vocab_size: int, min_tokens: int = 2) -> dict[str, np.memmap]:
    """train.bin and val.bin of a prepared directory, each checked by `load_tokens` and against the
    token count meta.json gives it: `prepare` renames its .bin files into place before it writes
    meta.json, so a run stopped in between leaves files of two runs side by side."""
    tokens = {}
    for split in ("train", "val"):
        path = Path(data_dir) / f"{split}.bin"
        tokens[split] = load_tokens(path, vocab_size, min_tokens)
        expected = meta.get(f"{split}_tokens")
        if expected is not None and expected != len(tokens[split]):
            raise ValueError(f"{path} holds {len(tokens[split]):,} tokens, but meta.json says {expected:,}: they come from two "
                             "runs of `minigpt prepare` (one stopped before it wrote meta.json?); prepare the data again")
    return tokens


def tokens_hash(tokens: np.ndarray) -> str:
    """A hash of a token file's ids: of all of them, or, past HASH_BLOCKS blocks, of HASH_BLOCKS
    blocks from its first id to its last. Not handled: in a file that large, a change that keeps
    the token count and falls wholly between the blocks (prepare's token counts catch most edits)."""
    h = hashlib.blake2b(digest_size=8)
    n, block = len(tokens), HASH_BLOCK_TOKENS
    starts = range(0, n, block) if n <= HASH_BLOCKS * block else np.linspace(0, n - block, HASH_BLOCKS, dtype=np.int64)
    for s in starts:
        ids = np.asarray(tokens[s : s + block])
        if ids.size and 0 <= ids.min() and ids.max() < MAX_VOCAB:  # the ids, not how they are stored: in int64
            ids = ids.astype(TOKEN_DTYPE)  # (a train_loop caller's arrays) they hash as prepare's uint16 files do
        h.update(np.ascontiguousarray(ids).tobytes())
    return h.hexdigest()


def data_fingerprint(tokens: dict[str, np.ndarray], vocab_size: int) -> dict:
    """What a resumed run checks its data against (minigpt/resume.py's `check_data`): the
    vocabulary size, and each token file's count and hash. No path or time: a prepared folder
    copied or moved elsewhere is the same data."""
    fingerprint: dict = {"vocab_size": vocab_size}
    fingerprint.update({f"{split}.bin tokens": len(t) for split, t in tokens.items()})
    fingerprint.update({f"{split}.bin hash": tokens_hash(t) for split, t in tokens.items()})
    return fingerprint


def sample_batch(tokens: np.ndarray, block_size: int, batch_size: int, rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """batch_size random windows: x = tokens[s : s+T], y = tokens[s+1 : s+T+1] (the next tokens).

    All randomness comes from `rng`, which the training loop derives from (seed, step): the
    step number is the sampler's whole state, so a resumed run reads exactly the same windows.
    """
    import torch

    if not 1 <= block_size < len(tokens):  # 0 or less gave empty (B, 0) batches; too long, a bare randint error
        raise ValueError(f"block_size must be in [1, {len(tokens) - 1}]: a window is block_size + 1 of the "
                         f"{len(tokens)} tokens (the inputs, then the next token), got {block_size}")
    starts = torch.randint(len(tokens) - block_size, (batch_size,), generator=rng).tolist()
    window = np.stack([tokens[s : s + block_size + 1] for s in starts]).astype(np.int64)  # (B, T+1)
    w = torch.from_numpy(window)
    return w[:, :-1], w[:, 1:]  # (B, T) each


# ---- CLI: `minigpt prepare` ---------------------------------------------------------------------


def data_files_stamp(out: Path) -> dict[str, tuple[int, int]]:
    """(inode, modification time) of each of DATA_FILES in `out`: how `main` tells whether a prepare
    it stopped had written any (each file is renamed into place whole, a new inode). os.path.exists,
    not Path.exists: an --out it may not read is prepare's error to report, not a traceback here."""
    return {name: (st.st_ino, st.st_mtime_ns) for name in DATA_FILES if os.path.exists(out / name) and (st := os.stat(out / name))}


def main(argv: list[str] | None = None) -> int:
    from minigpt.cli import FAILED, prog

    parser = argparse.ArgumentParser(prog=prog("prepare"), description="Tokenize text files into train.bin / val.bin for `minigpt train`.")
    parser.add_argument("inputs", nargs="+", type=user_path, help="UTF-8 text files")
    parser.add_argument("--tokenizer", required=True, type=user_path, help="tokenizer directory (vocab.json + merges.txt, or tokenizer.json), e.g. checkpoints/gpt2")
    parser.add_argument("--out", required=True, type=user_path, help="DATA_DIR to write train.bin, val.bin, val.txt, meta.json, tokenizer/")
    parser.add_argument("--val-fraction", type=float, default=0.1,
                        help="share of each file held out for validation, cut at a line break; files without one are held "
                             "out whole, the last ones (default 0.1)")
    parser.add_argument("--overwrite", action="store_true", help="replace the prepared data already in --out (refused otherwise)")
    parser.add_argument("--allow-json", action="store_true",
                        help="tokenize .json/.jsonl files and JSON lines as they are, braces and keys included (refused otherwise)")
    args = parser.parse_args(argv)
    before = data_files_stamp(Path(args.out))
    try:
        tokenizer = Tokenizer.from_pretrained(args.tokenizer)
        if tokenizer.eos_token_id is None:  # said before the tokenizing, which may take minutes
            print(f"{parser.prog}: warning: the tokenizer {args.tokenizer} {NO_EOS_WARNING}; give it one: "
                  "`minigpt tokenize --train FILES --eos TOKEN`, or eos_token in its tokenizer_config.json", file=sys.stderr)
        meta = prepare(args.inputs, tokenizer, args.out, args.val_fraction, args.overwrite, args.allow_json)
    except (ValueError, OSError) as e:  # OSError: a missing input, or a --out it may not write
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return FAILED
    except KeyboardInterrupt:  # Ctrl-C on a long corpus: one line that says what --out holds, not a traceback
        if data_files_stamp(Path(args.out)) == before:  # stopped while tokenizing: the temp files are gone
            print(f"\n{parser.prog}: interrupted; nothing written (what {args.out} held is kept)", file=sys.stderr)
        else:  # stopped among the renames and meta.json: the new files beside the old
            print(f"\n{parser.prog}: interrupted while writing {args.out}, which now holds part of this run's data: "
                  "prepare it again, with --overwrite", file=sys.stderr)
        return 130  # 128 + SIGINT, as a shell reports a command killed by Ctrl-C
    n_tokens = {"train": meta["train_tokens"], "val": meta["val_tokens"]}
    print(f"held out {val_share(n_tokens):.1%} of the tokens for validation (--val-fraction {args.val_fraction:g})")
    print(f"wrote {meta['train_tokens']:,} train and {meta['val_tokens']:,} val tokens to {args.out}")
    print(f"next: minigpt train --data {shlex.quote(args.out)} --out OUT_DIR", file=sys.stderr)  # quoted: ready to paste
    return 0
