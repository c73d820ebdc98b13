"""Data preparation and the memory-mapped batch sampler."""
from __future__ import annotations

import json
import re
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch

import minigpt.data
import minigpt.files
from minigpt.data import (data_fingerprint, encode_text, load_splits, load_tokens, main, prepare, read_meta, sample_batch, tokens_hash,
                          write_token_files)
from minigpt.files import atomic_write_text, file_lock, read_text
from minigpt.pretokenize import safe_piece_bounds, safe_pieces
from minigpt.tokenizer import Tokenizer

GPT2_DIR = Path(__file__).resolve().parent.parent / "checkpoints" / "gpt2"
EOS = 50256


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer.from_pretrained(GPT2_DIR)


def corpus(n_lines: int, seed: int) -> str:
    """Lines that exercise GPT-2's pre-tokenizer at line starts: spaces, blank lines, digits, unicode."""
    rng = np.random.default_rng(seed)
    words = ["ROMEO:", "  indented", "", "'tis", "naïve café", "123 456", "\tTab", "Hello world.", "?!", "   "]
    return "\n".join(" ".join(rng.choice(words, size=rng.integers(1, 5))) for _ in range(n_lines)) + "\n"


@pytest.mark.parametrize("chunk_chars", [1, 7, 50, 10_000])
def test_chunked_encoding_equals_whole_text_encoding(tok, chunk_chars):
    text = corpus(200, seed=chunk_chars)
    chunks = safe_pieces(text, chunk_chars)
    assert "".join(chunks) == text
    assert len(chunks) > 1 or chunk_chars > len(text)
    assert encode_text(tok, text, chunk_chars) == tok.encode(text)


def test_prepare_writes_token_files_meta_and_tokenizer(tok, tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text(corpus(300, seed=1))
    b.write_text(corpus(100, seed=2) + "end<|endoftext|>next doc\n")
    meta = prepare([a, b], tok, tmp_path / "data", val_fraction=0.2)

    train = np.fromfile(tmp_path / "data" / "train.bin", dtype=np.uint16).tolist()
    val = np.fromfile(tmp_path / "data" / "val.bin", dtype=np.uint16).tolist()
    assert meta == read_meta(tmp_path / "data")
    assert (meta["train_tokens"], meta["val_tokens"]) == (len(train), len(val))
    # train.bin holds each file's head, closed by <|endoftext|>: decoding it shows where each cut fell.
    text_a, text_b = a.read_text(), b.read_text()
    head_a, head_b, rest = tok.decode(train).split("<|endoftext|>")
    assert rest == "" and text_a.startswith(head_a) and text_b.startswith(head_b)
    cut_a, cut_b = len(head_a), len(head_b)
    # The cut is the first line break at or after 80% of the file that a non-space precedes or
    # follows: there no token spans it, so the parts encode to the ids of the whole.
    for text, cut in ((text_a, cut_a), (text_b, cut_b)):
        target = int(len(text) * 0.8)
        assert target <= cut and text[cut] == "\n" and not (text[cut - 1].isspace() and text[cut + 1].isspace())
        assert all(text[i - 1].isspace() and text[i + 1].isspace() for i in range(target, cut) if text[i] == "\n")
    # Each file gives its head to train and its tail to val, each part closed by <|endoftext|>;
    # the <|endoftext|> written in b's text becomes the special id too.
    enc = lambda t: tok.encode(t, allowed_special="all") + [EOS]  # noqa: E731
    assert train == enc(text_a[:cut_a]) + enc(text_b[:cut_b])
    assert val == enc(text_a[cut_a:]) + enc(text_b[cut_b:])
    assert val.count(EOS) == 3
    assert meta["train_bytes"] + meta["val_bytes"] == len((text_a + text_b).encode())
    assert 0.15 < meta["val_bytes"] / (meta["train_bytes"] + meta["val_bytes"]) < 0.25
    # val.txt is the held-out text itself, byte for byte what val_bytes counts.
    val_text = (tmp_path / "data" / "val.txt").read_bytes()
    assert val_text == (text_a[cut_a:] + text_b[cut_b:]).encode() and len(val_text) == meta["val_bytes"]
    # The tokenizer travels with the data, so checkpoints trained on it can ship it.
    assert Tokenizer.from_pretrained(tmp_path / "data" / "tokenizer").encode(text_a) == tok.encode(text_a)


def test_prepare_progress_false_draws_no_bar_and_takes_only_a_bool(tok, tmp_path, capsys):
    """A review: finetune(task="lm", progress=False) still drew prepare's "tokenizing" bar, as prepare
    took no progress argument. progress=False draws none now (the same data is written), and a
    progress that is no bool is refused ("no" would read as True)."""
    (tmp_path / "a.txt").write_text(corpus(100, seed=1))
    loud = prepare([tmp_path / "a.txt"], tok, tmp_path / "loud")
    assert "tokenizing" in capsys.readouterr().err
    quiet = prepare([tmp_path / "a.txt"], tok, tmp_path / "quiet", progress=False)
    assert "tokenizing" not in capsys.readouterr().err
    assert quiet == loud  # the same data, written alike
    with pytest.raises(TypeError, match="progress must be True or False, got 'no'"):
        prepare([tmp_path / "a.txt"], tok, tmp_path / "refused", progress="no")


def test_prepare_cli(tmp_path, capsys):
    (tmp_path / "in.txt").write_text(corpus(50, seed=3))
    assert main([str(tmp_path / "in.txt"), "--tokenizer", str(GPT2_DIR), "--out", str(tmp_path / "d")]) == 0
    assert "train" in capsys.readouterr().out
    assert load_tokens(tmp_path / "d" / "train.bin", 50257).max() < 50257
    assert main([str(tmp_path / "nope.txt"), "--tokenizer", str(GPT2_DIR), "--out", str(tmp_path / "d")]) == 2
    assert "nope.txt does not exist" in capsys.readouterr().err
    (tmp_path / "texts").mkdir()  # a directory exists: "does not exist" would send the user looking for a typo
    assert main([str(tmp_path / "texts"), "--tokenizer", str(GPT2_DIR), "--out", str(tmp_path / "d")]) == 2
    assert f"input {tmp_path / 'texts'} is a directory; prepare reads text files" in capsys.readouterr().err
    (tmp_path / "file").write_text("")  # --out below a file: no directory can be made there
    assert main([str(tmp_path / "in.txt"), "--tokenizer", str(GPT2_DIR), "--out", str(tmp_path / "file" / "d")]) == 2
    err = capsys.readouterr().err
    assert "Not a directory" in err and "Traceback" not in err
    # --out that is a file: said in words, not as mkdir's bare "[Errno 17] File exists".
    assert main([str(tmp_path / "in.txt"), "--tokenizer", str(GPT2_DIR), "--out", str(tmp_path / "file")]) == 2
    assert f"output directory {tmp_path / 'file'} is a file" in capsys.readouterr().err


def test_prepare_refuses_prepared_data_unless_told_to_overwrite_it(tok, tmp_path, capsys):
    """A second `minigpt prepare` into the same --out replaced the data under the runs trained on
    it without a word (and their --resume went on with it). Now it names what is there and how
    to replace it; an empty --out, or one holding other files only, is fine."""
    (tmp_path / "a.txt").write_text(corpus(50, seed=4))
    (tmp_path / "b.txt").write_text(corpus(80, seed=5))
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "notes.md").write_text("mine")
    first = prepare([tmp_path / "a.txt"], tok, tmp_path / "d")
    before = {f.name: f.read_bytes() for f in (tmp_path / "d").iterdir() if f.is_file()}
    args = [str(tmp_path / "b.txt"), "--tokenizer", str(GPT2_DIR), "--out", str(tmp_path / "d")]
    assert main(args) == 2
    assert (f"{tmp_path / 'd'} already holds prepared data (train.bin, val.bin, val.txt, meta.json, tokenizer), which runs "
            "may have been trained on: choose another --out, or pass --overwrite to replace it (to add a corpus to it, "
            "prepare all the files together into a new --out)") in capsys.readouterr().err
    assert {f.name: f.read_bytes() for f in (tmp_path / "d").iterdir() if f.is_file()} == before
    (tmp_path / "d" / "meta.json").unlink()  # any one of the files marks it (here a prepare stopped before meta.json)
    with pytest.raises(FileExistsError, match=r"holds prepared data \(train.bin, val.bin, val.txt, tokenizer\)"):
        prepare([tmp_path / "b.txt"], tok, tmp_path / "d")
    assert main([*args, "--overwrite"]) == 0
    assert read_meta(tmp_path / "d")["train_tokens"] != first["train_tokens"]
    assert (tmp_path / "d" / "notes.md").read_text() == "mine"


def test_prepare_bad_input(tok, tmp_path):
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(ValueError, match="empty.txt is empty"):
        prepare([tmp_path / "empty.txt"], tok, tmp_path / "d")
    assert not (tmp_path / "d").exists()  # refused before anything is made: no train.bin.tmp, ... left behind
    (tmp_path / "latin1.txt").write_bytes("café au lait\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1.txt is not UTF-8 text: byte 0xe9 at offset 3"):
        prepare([tmp_path / "latin1.txt"], tok, tmp_path / "d")
    (tmp_path / "t.txt").write_text("hello")
    for one in ("t.txt", tmp_path / "t.txt"):  # each character was taken for a file: "input / is a directory"
        with pytest.raises(TypeError, match=r"inputs must be a list of text files, got one .*: pass \["):
            prepare(one, tok, tmp_path / "d")


def test_every_input_is_checked_before_any_is_tokenized(tok, tmp_path, monkeypatch):
    """An audit: an empty or non-UTF-8 file was found only once every file before it was tokenized
    (minutes, on a large corpus). All are checked first now, with the same messages; the UTF-8 check
    reads blocks, and a character cut between two blocks is still one character."""
    (tmp_path / "a.txt").write_text(corpus(50, seed=4))
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "latin1.txt").write_bytes("日本 café au lait\n".encode("utf-8")[:10] + "é".encode("latin-1"))
    (tmp_path / "cut.txt").write_bytes("日本".encode("utf-8")[:-1])  # ends inside a character
    monkeypatch.setattr(minigpt.data, "encode_chunks", lambda *a: pytest.fail("tokenized before checking every input"))
    monkeypatch.setattr(minigpt.data, "UTF8_CHECK_BYTES", 4)  # "日本" is 6 bytes: cut between two blocks
    for bad, error in (("empty.txt", "input file .*empty.txt is empty"),
                       ("latin1.txt", r"latin1.txt is not UTF-8 text: byte 0xe9 at offset 10; convert it first"),
                       ("cut.txt", r"cut.txt is not UTF-8 text: byte 0xe6 at offset 3; convert it first")):
        with pytest.raises(ValueError, match=error):
            prepare([tmp_path / "a.txt", tmp_path / bad], tok, tmp_path / "d")
    (tmp_path / "cjk.txt").write_text("日本語のテキスト\n" * 3, encoding="utf-8")
    minigpt.data.check_input(tmp_path / "cjk.txt")  # UTF-8 throughout, cut mid-character by the blocks


def test_a_failed_prepare_keeps_the_previous_data(tok, tmp_path):
    """The failure comes after ids are written (a one-word file goes wholly to validation, leaving
    train.bin empty): the temp files go, the old files stay."""
    (tmp_path / "a.txt").write_text(corpus(50, seed=4))
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "hi.txt").write_text("hi")
    prepare([tmp_path / "a.txt"], tok, tmp_path / "d")
    before = {f.name: f.read_bytes() for f in (tmp_path / "d").iterdir() if f.is_file()}
    with pytest.raises(ValueError, match="train.bin would hold no tokens"):
        prepare([tmp_path / "hi.txt"], tok, tmp_path / "d", val_fraction=0.6, overwrite=True)
    assert {f.name: f.read_bytes() for f in (tmp_path / "d").iterdir() if f.is_file()} == before
    for bad in (1.0, 0.0):  # 0 would write an empty val.bin, which training then cannot evaluate on
        with pytest.raises(ValueError, match=r"val_fraction must be in \(0, 1\): training evaluates on the held-out"):
            prepare([tmp_path / "empty.txt"], tok, tmp_path / "d", val_fraction=bad)

    class Huge:
        vocab_size = 100_000

    with pytest.raises(ValueError, match="vocab_size 100000 does not fit uint16"):
        prepare([tmp_path / "empty.txt"], Huge(), tmp_path / "d")


def test_token_files_and_meta_of_two_prepares_are_refused(tok, tmp_path):
    """prepare renames its .bin files into place, then writes meta.json: a run stopped in between
    leaves new token files beside the old meta. Training would take the old vocabulary and counts
    without a word; load_splits checks each file's token count against meta's and names both."""
    (tmp_path / "a.txt").write_text(corpus(50, seed=4))
    (tmp_path / "b.txt").write_text(corpus(80, seed=5))
    old = prepare([tmp_path / "a.txt"], tok, tmp_path / "d")
    assert {s: len(t) for s, t in load_splits(tmp_path / "d", old, tok.vocab_size).items()} == \
        {"train": old["train_tokens"], "val": old["val_tokens"]}
    new = prepare([tmp_path / "b.txt"], tok, tmp_path / "d", overwrite=True)
    with pytest.raises(ValueError, match=rf"train.bin holds {new['train_tokens']:,} tokens, but meta.json says "
                                         rf"{old['train_tokens']:,}: they come from two runs of `minigpt prepare`"):
        load_splits(tmp_path / "d", old, tok.vocab_size)  # the old meta.json beside the new files


def test_tokens_hash_reads_every_id_of_a_small_file_and_spread_blocks_of_a_large_one(monkeypatch):
    """A resumed run hashes its token files every time, so past HASH_BLOCKS blocks only that many
    are read, from the first id to the last (here 3 blocks of 4 ids: 0-3, 48-51, 96-99 of 100)."""
    monkeypatch.setattr(minigpt.data, "HASH_BLOCKS", 3)
    monkeypatch.setattr(minigpt.data, "HASH_BLOCK_TOKENS", 4)
    small, large = np.arange(12, dtype=np.uint16), np.arange(100, dtype=np.uint16)

    def changed_at(ids: np.ndarray, i: int) -> bool:
        other = ids.copy()
        other[i] += 1
        return tokens_hash(other) != tokens_hash(ids)

    assert all(changed_at(small, i) for i in range(12))
    assert [i for i in range(100) if changed_at(large, i)] == [0, 1, 2, 3, 48, 49, 50, 51, 96, 97, 98, 99]
    assert tokens_hash(large[:99]) != tokens_hash(large)  # the count is in the fingerprint too, but the last block moves
    assert data_fingerprint({"train": large, "val": small}, 64) == {
        "vocab_size": 64, "train.bin tokens": 100, "val.bin tokens": 12,
        "train.bin hash": tokens_hash(large), "val.bin hash": tokens_hash(small)}
    # The ids are hashed, not their storage: a train_loop caller's int64 copy of the data (or a
    # tensor of it) resumes a run saved with prepare's uint16 files; ids past uint16 still count.
    assert tokens_hash(large.astype(np.int64)) == tokens_hash(torch.from_numpy(large.astype(np.int64))) == tokens_hash(large)
    wide = large.astype(np.int64)
    assert tokens_hash(wide + 65536) != tokens_hash(wide)


def test_sample_batch_windows_are_shifted_and_seeded():
    tokens = np.arange(1000, dtype=np.uint16)
    x, y = sample_batch(tokens, 16, 8, torch.Generator().manual_seed(3))
    assert x.shape == y.shape == (8, 16) and x.dtype == torch.int64
    assert torch.equal(y, x + 1)  # y is x one token later
    assert int(y.max()) <= 999
    x2, _ = sample_batch(tokens, 16, 8, torch.Generator().manual_seed(3))
    x3, _ = sample_batch(tokens, 16, 8, torch.Generator().manual_seed(4))
    assert torch.equal(x, x2) and not torch.equal(x, x3)
    # A file of exactly block_size + 1 tokens has exactly one window.
    x, y = sample_batch(tokens[:17], 16, 2, torch.Generator().manual_seed(0))
    assert torch.equal(x[0], torch.arange(16)) and torch.equal(x[0], x[1])


def test_sample_batch_names_a_block_size_that_gives_no_window():
    """0 or -3 gave empty (2, 0) batches that trained on nothing; a block as long as the tokens
    failed in torch ("random_ expects 'from' to be less than 'to'")."""
    tokens, rng = np.arange(10, dtype=np.uint16), torch.Generator().manual_seed(0)
    assert sample_batch(tokens, 9, 2, rng)[0].shape == (2, 9)  # the longest: 9 inputs and the 10th token
    for block_size in (0, -3, 10, 11):
        with pytest.raises(ValueError, match=rf"block_size must be in \[1, 9\]: a window is block_size \+ 1 of the 10 "
                                             rf"tokens .*got {block_size}"):
            sample_batch(tokens, block_size, 2, rng)


def test_load_tokens_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="x.bin does not exist"):
        load_tokens(tmp_path / "x.bin", 10)
    (tmp_path / "x.bin").write_bytes(b"\x01")
    with pytest.raises(ValueError, match="odd number of bytes"):
        load_tokens(tmp_path / "x.bin", 10)
    np.array([1, 2, 10], dtype=np.uint16).tofile(tmp_path / "x.bin")
    with pytest.raises(ValueError, match=r"token id 10, outside the model's vocabulary \[0, 10\)"):
        load_tokens(tmp_path / "x.bin", 10)
    assert load_tokens(tmp_path / "x.bin", 11).tolist() == [1, 2, 10]
    with pytest.raises(FileNotFoundError, match="no meta.json"):
        read_meta(tmp_path)
    (tmp_path / "meta.json").write_text(json.dumps({"vocab_size": 11}))
    assert read_meta(tmp_path)["vocab_size"] == 11
    # A damaged or foreign meta.json is named (json's own message names no file; a missing key was a KeyError).
    (tmp_path / "meta.json").write_text('{"vocab_size": 11')  # cut short
    with pytest.raises(ValueError, match=rf"{re.escape(str(tmp_path / 'meta.json'))} is not valid JSON: Expecting .*; prepare the data again"):
        read_meta(tmp_path)
    (tmp_path / "meta.json").write_text(json.dumps({"vocab": 11}))
    with pytest.raises(ValueError, match="meta.json has no integer vocab_size: it is not the meta.json `minigpt prepare` writes"):
        read_meta(tmp_path)


def test_every_block_of_a_token_file_is_checked_against_the_vocabulary(tmp_path, monkeypatch):
    """Guards against checking only the first CHECK_TOKENS ids (e.g. `tokens[:CHECK_TOKENS]`
    instead of `tokens[i : i + CHECK_TOKENS]`): on a real corpus (> 16M tokens) a bad id past the
    first block would reach the embedding lookup (on a GPU, an opaque device assert)."""
    monkeypatch.setattr(minigpt.data, "CHECK_TOKENS", 2)  # blocks of 2 ids: the bad id is in the third block
    np.array([1, 2, 3, 4, 10], dtype=np.uint16).tofile(tmp_path / "x.bin")
    with pytest.raises(ValueError, match=r"token id 10, outside the model's vocabulary \[0, 10\)"):
        load_tokens(tmp_path / "x.bin", 10)
    assert load_tokens(tmp_path / "x.bin", 11).tolist() == [1, 2, 3, 4, 10]


def test_a_file_without_a_line_break_after_the_cut_still_gives_validation_text(tok, tmp_path):
    """Guards against _cut_point falling back to the end of the text (not the target) when no safe
    cut follows it: a one-line file (minified JSON, a text without newlines) would then give
    nothing to validation, and with one such file val.bin would hold no tokens at all.
    Changed on purpose since (a data audit): it was cut at the very character, mid-word; now at
    the last space before it, by split_points (_cut_point offers only line breaks: None here)."""
    text = "the quick brown fox jumps over the lazy dog " * 40  # no newline anywhere
    (tmp_path / "one_line.txt").write_text(text)
    assert minigpt.data._cut_point(text, 0.25) is None
    cut = int(len(text) * 0.75) - 1  # 75% falls on "the": the space before it
    assert text[cut:cut + 4] == " the" and minigpt.data.split_points([tmp_path / "one_line.txt"], 0.25) == [cut]
    meta = prepare([tmp_path / "one_line.txt"], tok, tmp_path / "d", val_fraction=0.25)
    assert meta["val_bytes"] == len(text) - cut
    assert meta["val_tokens"] > 10
    assert (tmp_path / "d" / "val.txt").read_text() == text[cut:]


def test_a_val_bin_from_another_prepare_is_refused_too(tok, tmp_path):
    """Guards against load_splits checking only train.bin's token count against meta.json: a val.bin
    left by another `minigpt prepare` run would be evaluated on silently (wrong val loss, wrong bits
    per byte from meta's val_bytes)."""
    (tmp_path / "a.txt").write_text("Hello world.\nHow are you today?\n" * 50)
    meta = prepare([tmp_path / "a.txt"], tok, tmp_path / "d")
    val = np.fromfile(tmp_path / "d" / "val.bin", dtype=np.uint16)
    np.concatenate([val, val]).tofile(tmp_path / "d" / "val.bin")  # another run's val.bin
    with pytest.raises(ValueError, match=rf"val.bin holds {2 * len(val):,} tokens, but meta.json says {len(val):,}"):
        load_splits(tmp_path / "d", read_meta(tmp_path / "d"), tok.vocab_size)
    assert meta["val_tokens"] == len(val)


def test_a_token_file_of_exactly_min_tokens_is_accepted(tmp_path):
    """Guards against an off-by-one in load_tokens' size check (`<=` for `<`): a split of exactly
    block_size + 1 tokens holds one whole window (sample_batch draws it) and must train; the
    error's own text says "need at least {min_tokens}"."""
    np.arange(17, dtype=np.uint16).tofile(tmp_path / "x.bin")
    assert len(load_tokens(tmp_path / "x.bin", 50, min_tokens=17)) == 17
    with pytest.raises(ValueError, match="holds 17 tokens; need at least 18"):
        load_tokens(tmp_path / "x.bin", 50, min_tokens=18)


def test_empty_token_files_and_non_integer_vocab_sizes_are_named(tmp_path):
    """Mutants R7-39/R7-40: an empty token file reached np.memmap, whose "cannot mmap an empty file"
    names no file; a meta.json whose vocab_size is a string was taken (and compared with ints later)."""
    (tmp_path / "x.bin").write_bytes(b"")
    with pytest.raises(ValueError, match=r"token file \S+x.bin is empty"):
        load_tokens(tmp_path / "x.bin", 10)
    (tmp_path / "meta.json").write_text(json.dumps({"vocab_size": "50257"}))
    with pytest.raises(ValueError, match="meta.json has no integer vocab_size"):
        read_meta(tmp_path)


def test_a_meta_json_of_another_dtype_is_refused(tmp_path):
    """An audit: meta.json's "dtype" was written and never read, so uint32 token files loaded as
    uint16 without a word (each id became two: 5962, 0, 22307, 0, ...). Anything but uint16 is
    refused, naming it; a meta.json that names no dtype is read as uint16."""
    (tmp_path / "meta.json").write_text(json.dumps({"vocab_size": 50257, "dtype": "uint32"}))
    with pytest.raises(ValueError, match=r"meta.json says the token files hold 'uint32' ids; minigpt reads only uint16, "
                                         r"what `minigpt prepare` writes \(its vocabularies have at most 65,536 ids"):
        read_meta(tmp_path)
    for meta in ({"vocab_size": 50257, "dtype": "uint16"}, {"vocab_size": 50257}):
        (tmp_path / "meta.json").write_text(json.dumps(meta))
        assert read_meta(tmp_path) == meta


# meta.json fields that lie (a security audit's probe_meta.sh), and what read_meta now says of each.
WRONG_META = [
    ({"vocab_size": 100_000_000}, r"says vocab_size 100,000,000, outside \[1, 65,536\]: its token files hold uint16 ids"),
    ({"vocab_size": 65_537}, r"says vocab_size 65,537, outside \[1, 65,536\]"),
    ({"vocab_size": -5}, r"says vocab_size -5, outside \[1, 65,536\]"),
    ({"vocab_size": 0}, r"says vocab_size 0, outside"),
    ({"vocab_size": True}, r"has no integer vocab_size"),
    ({"eos_token_id": 300}, r"says eos_token_id 300, which is no id of its vocabulary \[0, 300\) \(or null"),
    ({"eos_token_id": -1}, r"says eos_token_id -1, which is no id"),
    ({"eos_token_id": "x"}, r'says eos_token_id "x", which is no id'),
    ({"eos_token_id": True}, r"says eos_token_id true, which is no id"),
    ({"val_tokens": None}, r"says val_tokens null, where `minigpt prepare` writes an integer >= 1 \(val.bin's count of ids\)"),
    ({"train_tokens": 0}, r"says train_tokens 0, where `minigpt prepare` writes an integer >= 1"),
    ({"val_bytes": "lots"}, r'says val_bytes "lots", where `minigpt prepare` writes an integer >= 0'),
    ({"train_bytes": 1.5}, r"says train_bytes 1.5, where"),
    ({"sources": "a.txt"}, r'says sources "a.txt", where `minigpt prepare` writes a list of file names'),
    ({"val_fraction": 1.5}, r"says val_fraction 1.5, where `minigpt prepare` writes a number in \(0, 1\)"),
]


@pytest.mark.parametrize("change, said", WRONG_META, ids=[json.dumps(c) for c, _ in WRONG_META])
def test_read_meta_refuses_a_field_of_the_wrong_type_or_range_naming_it(tmp_path, change, said):
    """Bug (a security audit): read_meta checked vocab_size's type alone (and JSON's true passed as
    an int). vocab_size 100,000,000 built a model for 2 minutes up to 21 GB of memory, printing
    nothing; -5 was refused naming no file; a null val_tokens or a string val_bytes was a TypeError
    mid-run. Each field is now checked against what `minigpt prepare` writes, naming the file."""
    meta = {"vocab_size": 300, "eos_token_id": 299, "dtype": "uint16", "train_tokens": 100, "val_tokens": 10,
            "train_bytes": 400, "val_bytes": 40, "sources": ["a.txt"], "val_fraction": 0.1}
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    assert read_meta(tmp_path) == meta  # as prepare writes it: read
    (tmp_path / "meta.json").write_text(json.dumps(meta | change))
    with pytest.raises(ValueError, match=rf"^{re.escape(str(tmp_path / 'meta.json'))} {said}"):
        read_meta(tmp_path)


def test_read_meta_takes_the_largest_vocabulary_and_a_tokenizer_without_eos(tmp_path):
    """Guards the ranges read_meta now checks against an off-by-one: 65,536 ids (all of uint16's)
    with the last as <|endoftext|>, and an eos_token_id of null (a tokenizer without one) are read."""
    for meta in ({"vocab_size": 65_536, "eos_token_id": 65_535}, {"vocab_size": 1, "eos_token_id": None}):
        (tmp_path / "meta.json").write_text(json.dumps(meta))
        assert read_meta(tmp_path) == meta


class _ByteTokenizer:
    """ids = the characters' code points; a vocabulary of exactly 65,536 ids, <|endoftext|> the last."""
    vocab_size = 65_536
    eos_token_id = 65_535

    def encode_batch(self, texts, allowed_special):
        return [[ord(c) for c in t] for t in texts]

    def save_pretrained(self, path):
        Path(path).mkdir(parents=True, exist_ok=True)


def test_a_vocabulary_of_exactly_65536_ids_fits_uint16_files(tmp_path):
    """Mutant R7-41 (`>=` for `>`): 65,536 ids (0..65,535) is the most uint16 holds, so it is
    accepted, and its largest id survives the round trip through train.bin / val.bin."""
    (tmp_path / "a.txt").write_text("hello\uffff world\nand more text here\n")
    meta = prepare([tmp_path / "a.txt"], _ByteTokenizer(), tmp_path / "d", val_fraction=0.5)
    tokens = load_splits(tmp_path / "d", meta, 65_536)
    assert int(tokens["train"].max()) == 65_535 and tokens["val"][-1] == 65_535


def test_a_file_that_goes_wholly_to_validation_adds_nothing_to_train(tok, tmp_path):
    """Mutant R7-44: an empty part (here a one-word file with no line break, held out whole)
    still got its <|endoftext|>: train.bin held an empty document, an extra <|endoftext|> after
    the previous file's, and a one-file corpus a train.bin of that lone id."""
    (tmp_path / "a.txt").write_text(corpus(50, seed=4))
    (tmp_path / "b.txt").write_text("hi")
    assert minigpt.data.split_points([tmp_path / "b.txt"], 0.6) == [0]
    meta = prepare([tmp_path / "a.txt", tmp_path / "b.txt"], tok, tmp_path / "d", val_fraction=0.6)
    train = np.fromfile(tmp_path / "d" / "train.bin", dtype=np.uint16).tolist()
    val = np.fromfile(tmp_path / "d" / "val.bin", dtype=np.uint16).tolist()
    assert train.count(EOS) == 1 and train[-1] == EOS and meta["train_tokens"] == len(train)
    hi = tok.encode("hi")
    assert val[-len(hi) - 1:] == hi + [EOS]  # the whole file, closed by <|endoftext|>, in val.bin
    # Alone, such a file leaves train.bin empty: refused now, with nothing written (found by an
    # audit: prepare succeeded, and `minigpt train` stopped on "train.bin is empty").
    (tmp_path / "e").mkdir()
    with pytest.raises(ValueError, match="train.bin would hold no tokens: the input is too short"):
        prepare([tmp_path / "b.txt"], tok, tmp_path / "e", val_fraction=0.6)
    assert list((tmp_path / "e").iterdir()) == []  # the user's folder stays, empty
    # A folder the refused prepare made goes (a trainer's audit: an empty --out was left behind).
    with pytest.raises(ValueError, match="train.bin would hold no tokens: the input is too short"):
        prepare([tmp_path / "b.txt"], tok, tmp_path / "new" / "f", val_fraction=0.6)
    assert not (tmp_path / "new").exists()  # and the folder above it that it made too (a review)


def test_no_cut_falls_inside_a_special_token_that_holds_a_newline(tok, tmp_path):
    """Guards against the validation cut and the 4M-character encoding chunks cutting at a line
    break inside a special token (chat formats: "<|im\\nend|>"): both halves were then encoded as
    plain text, so train.bin / val.bin (and `minigpt eval`'s ids) lost that special id."""
    special = "<|im\nend|>"
    chat = Tokenizer(tok.vocab, tok.merges, {"<|endoftext|>": EOS, special: EOS + 1})
    text = "".join(f"turn {i}{special}" for i in range(10))  # its only line breaks are inside the special token
    expected = chat.encode(text, allowed_special="all")
    assert expected.count(EOS + 1) == 10
    assert encode_text(chat, text, chunk_chars=3) == expected
    (tmp_path / "chat.txt").write_text(text)
    prepare([tmp_path / "chat.txt"], chat, tmp_path / "d", val_fraction=0.1)
    ids = [np.fromfile(tmp_path / "d" / f"{split}.bin", dtype=np.uint16).tolist() for split in ("train", "val")]
    assert ids[0].count(EOS + 1) + ids[1].count(EOS + 1) == 10
    assert ids[0][:-1] + ids[1][:-1] == expected  # each part closed by <|endoftext|>, the cut between two turns
    cut = minigpt.data._cut_point(text, 0.1, chat.special_tokens)
    assert text[:cut].endswith(special) and not text[cut:].startswith("\n")
    # An added token (transformers' add_tokens: text, not special) is held whole too.
    added = Tokenizer(tok.vocab, tok.merges, {"<|endoftext|>": EOS}, added_tokens={special: EOS + 1})
    assert encode_text(added, text, chunk_chars=3) == expected


def test_ctrl_c_in_prepare_is_one_line_saying_what_out_holds(tok, tmp_path, monkeypatch, capsys):
    """An audit: Ctrl-C during `minigpt prepare` printed a 45-line traceback and exited -2. Now one
    line and status 130, as `minigpt eval` and `generate` end, saying whether --out was touched:
    stopped while tokenizing, the temp files go and the data it held stays."""
    (tmp_path / "a.txt").write_text(corpus(50, seed=4))
    args = [str(tmp_path / "a.txt"), "--tokenizer", str(GPT2_DIR), "--out", str(tmp_path / "d")]
    assert main(args) == 0
    before = {f.name: f.read_bytes() for f in (tmp_path / "d").iterdir() if f.is_file()}

    def ctrl_c(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(minigpt.data, "encode_chunks", ctrl_c)
    assert main([*args, "--overwrite"]) == 130
    err = capsys.readouterr().err
    assert err.endswith(f"prepare: interrupted; nothing written (what {tmp_path / 'd'} held is kept)\n")
    assert "Traceback" not in err
    assert {f.name: f.read_bytes() for f in (tmp_path / "d").iterdir() if f.is_file()} == before
    monkeypatch.undo()
    monkeypatch.setattr(Tokenizer, "save_pretrained", ctrl_c)  # after train.bin, val.bin, val.txt are renamed
    assert main([*args, "--overwrite"]) == 130
    assert capsys.readouterr().err.endswith(f"prepare: interrupted while writing {tmp_path / 'd'}, which now holds part "
                                            "of this run's data: prepare it again, with --overwrite\n")


def test_lines_that_end_in_a_space_are_cut_at_a_line_break(tok, tmp_path):
    """An audit: SST-2 and raw WikiText end every line in " \\n", and SAFE_CUT took only a "\\n" after a
    non-space: such a file had no safe cut, so prepare cut its validation text mid-word ("...magical
    . \\nthrowba" | "ck to long gone") and encoded it in one piece (the bar stood at 0%, all its ids
    in one list). A "\\n" that a non-space follows is a safe cut too."""
    text = "".join(f"sentence number {i} , it is fine . \n" for i in range(200))
    cut = minigpt.data._cut_point(text, 0.1)
    assert int(len(text) * 0.9) <= cut < int(len(text) * 0.9) + 40 and text[cut - 2:cut + 2] == ". \ns"
    assert len(safe_pieces(text, 1_000)) > 5
    assert encode_text(tok, text, chunk_chars=1_000) == tok.encode(text)
    (tmp_path / "sst.txt").write_text(text)
    prepare([tmp_path / "sst.txt"], tok, tmp_path / "d", val_fraction=0.1)
    assert (tmp_path / "d" / "val.txt").read_text() == text[cut:]


def test_with_no_line_break_after_the_target_the_val_split_takes_the_last_one_before_it(tmp_path):
    """The README says each file's validation part is cut at a line break: a file whose last line
    is long was cut mid-line instead, at the exact character. Now at the line break before it, if
    the held-out part stays under twice its share; a header line and one long line are still cut
    mid-line, not held out whole (by split_points, since a data audit: _cut_point gives only line
    breaks; without a space to cut at, at the very character, as before)."""
    text = "short line\n" * 20 + "x" * 30  # 250 characters, the target (90%: 225) inside the last line
    assert minigpt.data._cut_point(text, 0.1) == 219  # before the last line's "\n": 31 held out, not 25
    header_and_one_line = "title\n" + "x" * 200
    assert minigpt.data._cut_point(header_and_one_line, 0.1) is None
    (tmp_path / "h.txt").write_text(header_and_one_line)
    assert minigpt.data.split_points([tmp_path / "h.txt"], 0.1) == [int(len(header_and_one_line) * 0.9)]


def test_a_byte_order_mark_is_not_prepared_as_text(tok, tmp_path):
    """An audit: a file saved by Notepad starts with a UTF-8 byte order mark, which prepare encoded
    as text (train.bin's first ids decoded to '\\ufeffFirst'). files.read_text drops it now."""
    text = corpus(50, seed=5)
    (tmp_path / "bom.txt").write_bytes(b"\xef\xbb\xbf" + text.encode())
    (tmp_path / "plain.txt").write_text(text)
    for name in ("bom", "plain"):
        prepare([tmp_path / f"{name}.txt"], tok, tmp_path / name)
    for file in ("train.bin", "val.bin", "val.txt"):
        assert (tmp_path / "bom" / file).read_bytes() == (tmp_path / "plain" / file).read_bytes(), file


def test_the_bar_ends_at_100_percent_for_a_file_with_crlf_line_ends(tok, tmp_path, capsys):
    """An audit: the bar's total is the files' bytes, but it counted the text read, where "\\r\\n"
    is "\\n": a Windows file's bar stopped at ~97%. Topped up at the end, as training's is."""
    (tmp_path / "crlf.txt").write_bytes(corpus(200, seed=6).replace("\n", "\r\n").encode())
    prepare([tmp_path / "crlf.txt"], tok, tmp_path / "d")
    bar = capsys.readouterr().err.split("\r")  # the bar's states: the last one's bytes are the file's bytes
    assert re.match(r"tokenizing: 100%.* (\S+)/\1 ", [line for line in bar if line.startswith("tokenizing")][-1])


def test_prepare_warns_when_the_tokenizer_has_no_eos(tok, tmp_path, capsys):
    """An audit: with a tokenizer that has no EOS (trained with --special "<s>" "</s>"), prepare
    wrote the files' texts one after another with no boundary, without a word: a model trained on
    them never learns to stop. One warning line now, before the tokenizing."""
    no_eos = Tokenizer(tok.vocab, tok.merges, {"<s>": EOS, "</s>": EOS + 1})
    no_eos.save_pretrained(tmp_path / "tok")
    (tmp_path / "a.txt").write_text(corpus(50, seed=7))
    assert main([str(tmp_path / "a.txt"), "--tokenizer", str(tmp_path / "tok"), "--out", str(tmp_path / "d")]) == 0
    assert (f"prepare: warning: the tokenizer {tmp_path / 'tok'} has no end-of-document token (eos_token): `minigpt "
            "prepare` joins the files with no boundary between them, and a model trained on them never learns to stop; "
            "give it one: `minigpt tokenize --train FILES --eos TOKEN`, or eos_token in its tokenizer_config.json"
            ) in capsys.readouterr().err
    assert main([str(tmp_path / "a.txt"), "--tokenizer", str(GPT2_DIR), "--out", str(tmp_path / "e")]) == 0
    assert "warning" not in capsys.readouterr().err


def test_prepare_ends_with_the_next_command(tmp_path, capsys):
    """An audit: prepare's last line said what it wrote, not what to run next (train's flags)."""
    (tmp_path / "a.txt").write_text(corpus(50, seed=8))
    assert main([str(tmp_path / "a.txt"), "--tokenizer", str(GPT2_DIR), "--out", str(tmp_path / "d")]) == 0
    assert capsys.readouterr().err.splitlines()[-1] == f"next: minigpt train --data {tmp_path / 'd'} --out OUT_DIR"


def test_a_second_prepare_into_the_same_out_is_refused_while_the_first_runs(tok, tmp_path, monkeypatch):
    """An audit: two `minigpt prepare` runs into one --out at once both passed the "already holds
    prepared data" look, then shared train.bin.tmp and the other temp names: the second failed,
    the first exited 0 with a train.bin partly the other corpus, and a meta.json that named only its
    own. Now one prepare holds --out/.lock from that look until meta.json is written, and another
    is refused at once, having written nothing."""
    (tmp_path / "a.txt").write_text(corpus(50, seed=9))
    out = tmp_path / "d"
    with file_lock(out / ".lock", busy=lambda: None):  # the first prepare, still going
        with pytest.raises(FileExistsError, match=re.escape(f"{out} is in use by another `minigpt prepare`, still going")):
            prepare([tmp_path / "a.txt"], tok, out)
        assert [f.name for f in out.iterdir()] == [".lock"]

    def write_meta_json(path, text):  # a second prepare's look, made while the first writes meta.json
        with pytest.raises(FileExistsError, match="is in use by another `minigpt prepare`"):
            prepare([tmp_path / "a.txt"], tok, out, overwrite=True)
        atomic_write_text(path, text)

    monkeypatch.setattr(minigpt.data, "atomic_write_text", write_meta_json)
    meta = prepare([tmp_path / "a.txt"], tok, out)
    assert read_meta(out) == meta and not (out / ".lock").exists()  # the lock file goes with the lock


@pytest.mark.skipif(not hasattr(minigpt.files, "fcntl"), reason="flock is POSIX's")
@pytest.mark.parametrize("code", ["ENOLCK", "EOPNOTSUPP", "ENOSYS"])
def test_prepare_goes_on_unguarded_where_the_file_system_has_no_locks(tok, tmp_path, monkeypatch, capsys, code):
    """A review: prepare's new lock stopped it with "[Errno 38] Function not implemented", naming no
    file, on a file system whose flock says ENOSYS (Lustre without flock) or EOPNOTSUPP, where it had
    worked; with ENOLCK it went on but left .lock behind. Each now warns, goes on, and leaves no lock
    file, as a save does there (files.NO_LOCKS)."""
    import errno
    import os

    def no_locks(fd, operation):
        raise OSError(getattr(errno, code), os.strerror(getattr(errno, code)))

    monkeypatch.setattr(minigpt.files.fcntl, "flock", no_locks)
    (tmp_path / "a.txt").write_text(corpus(50, seed=9))
    meta = prepare([tmp_path / "a.txt"], tok, tmp_path / "d")
    assert read_meta(tmp_path / "d") == meta and not (tmp_path / "d" / ".lock").exists()
    assert f"warning: cannot lock {tmp_path / 'd' / '.lock'} ({os.strerror(getattr(errno, code))})" in capsys.readouterr().err


def test_prepare_holds_about_one_copy_of_the_file_text(tok, tmp_path, monkeypatch):
    """An audit: prepare held ~4.5x its largest input (60 MB → 273 MB of Python heap), as it sliced
    each file into its train and val parts (a copy of the text), then listed the part's chunks (a
    second copy). Now each chunk is sliced from the text by offset as it is encoded. Measured from
    when the text is read (reading holds its bytes too, for a moment: files.read_text's) until the
    token files are written (saving the tokenizer after them holds its vocabulary's JSON)."""
    text = corpus(60_000, seed=10)
    (tmp_path / "a.txt").write_text(text)
    monkeypatch.setattr(minigpt.data, "CHUNK_CHARS", 1 << 14)  # chunks' ids small beside the text
    (tmp_path / "warm.txt").write_text(corpus(100, seed=10))  # first the imports and caches a first prepare makes
    prepare([tmp_path / "warm.txt"], tok, tmp_path / "warm")
    peaks = []

    def read_then_reset_peak(path):
        read = read_text(path)
        tracemalloc.reset_peak()
        return read

    def write_then_take_peak(*args):
        counts = write_token_files(*args)
        peaks.append(tracemalloc.get_traced_memory()[1])
        return counts

    monkeypatch.setattr(minigpt.data, "read_text", read_then_reset_peak)
    monkeypatch.setattr(minigpt.data, "write_token_files", write_then_take_peak)
    tracemalloc.start()
    try:
        prepare([tmp_path / "a.txt"], tok, tmp_path / "d")
    finally:
        tracemalloc.stop()
    print(f"peak while tokenizing: {peaks[0] / len(text):.2f}x the text's {len(text):,} characters")
    assert peaks[0] < 1.5 * len(text)
    val_text = (tmp_path / "d" / "val.txt").read_text()
    assert text.endswith(val_text) and len(val_text) > 0.09 * len(text)


def test_chunks_of_a_part_encode_as_the_part_alone(tok):
    """The chunks of text[start:end] are cut by looking at the whole text, which goes on past `end`.
    A cut at end - 1 can look safe there and not in the part: "a \\n" + "b" (a cut before a "\\n" that
    a non-space follows) ends the part " \\n", one chunk, which that cut would split. Every part of
    a small text, cut as finely as it can be, encodes to the part's own ids."""
    text = "a \nb\n\nc  \n d\n"
    for start in range(len(text)):
        for end in range(start + 1, len(text) + 1):
            bounds = list(safe_piece_bounds(text, 1, (), start, end))
            assert "".join(text[a:b] for a, b in bounds) == text[start:end]
            assert [i for a, b in bounds for i in tok.encode(text[a:b])] == tok.encode(text[start:end]), (start, end)


def test_a_file_that_ends_with_endoftext_gets_no_second_one(tok, tmp_path):
    """An audit: prepare appended <|endoftext|> after each file's part of each split, also to a file
    whose text ends with one already: val.bin read "...Third.\\n<|endoftext|><|endoftext|>", an empty
    document per file. Now a part whose last id is the EOS gets none added."""
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"{i}.txt")
        paths[-1].write_text(f"First line of doc {i}.\nSecond line of doc {i}, a bit longer than the first.\nThird.\n<|endoftext|>")
    meta = prepare(paths, tok, tmp_path / "d", val_fraction=0.3)
    train = np.fromfile(tmp_path / "d" / "train.bin", dtype=np.uint16).tolist()
    val = np.fromfile(tmp_path / "d" / "val.bin", dtype=np.uint16).tolist()
    assert "<|endoftext|><|endoftext|>" not in tok.decode(val)
    assert val.count(EOS) == train.count(EOS) == 3 and val[-1] == train[-1] == EOS
    assert (meta["train_tokens"], meta["val_tokens"]) == (len(train), len(val))


def test_a_full_disk_is_said_as_the_write_says_it_not_as_numpys_short_write(tok, tmp_path):
    """A portability audit: on a full disk `prepare` said "[Errno 5] 617834 requested and 524288
    written" (numpy's tofile, which reports a short write as EIO), where `train` says ENOSPC, "No
    space left on device". Ids go through the file's own write now, whose error is the system's.
    A file size limit stands in for the full disk: its write fails the same way, with EFBIG."""
    import errno
    import resource

    (tmp_path / "a.txt").write_text(corpus(2000, seed=9))
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (8192, hard))  # (Python ignores SIGXFSZ: a write fails with EFBIG)
    try:
        with pytest.raises(OSError) as failed:
            prepare([tmp_path / "a.txt"], tok, tmp_path / "d")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert failed.value.errno == errno.EFBIG, failed.value  # numpy's: EIO
    assert failed.value.filename == str(tmp_path / "d") and "requested" not in str(failed.value)
    assert not (tmp_path / "d").exists()  # the temp files are gone, and the folder the prepare made


def test_meta_names_a_source_by_its_bytes_read_as_utf8(tok, tmp_path):
    """A portability audit: under a C locale Python holds a path's "é" as the surrogates
    "\\udcc3\\udca9", and meta.json's "sources" stored them so ("dir \\udcc3\\udca9/t.txt"). It
    stores the path's bytes read as UTF-8, as the file system holds them. (This process is UTF-8:
    the surrogates stand for the same bytes, so they name the same file.)"""
    (tmp_path / "dir é").mkdir()
    (tmp_path / "dir é" / "t.txt").write_text(corpus(50, seed=10))
    meta = prepare([tmp_path / "dir \udcc3\udca9" / "t.txt"], tok, tmp_path / "d")
    assert meta["sources"] == [str(tmp_path / "dir é" / "t.txt")] == read_meta(tmp_path / "d")["sources"]


def test_prepare_s_next_command_quotes_its_data_dir(tmp_path, capsys):
    """A portability audit: `--out 'my data'` printed "next: minigpt train --data my data", which
    the shell reads as two arguments. Quoted now, as train's own hint is (shlex.quote)."""
    (tmp_path / "a.txt").write_text(corpus(50, seed=11))
    assert main([str(tmp_path / "a.txt"), "--tokenizer", str(GPT2_DIR), "--out", str(tmp_path / "my data")]) == 0
    assert capsys.readouterr().err.splitlines()[-1] == f"next: minigpt train --data '{tmp_path}/my data' --out OUT_DIR"


# Sentences as one-line documents (reviews, tweets): each file is a single line, without a final newline.
SENTENCES = [f"Review {i}: the {w} was {a}, and I would {v} it again." for i, (w, a, v) in enumerate(
    (w, a, v) for w in ("food", "service", "room", "film", "book") for a in ("fine", "awful", "lovely", "slow")
    for v in ("try", "skip"))]


def test_a_folder_of_one_line_files_holds_out_the_last_files_whole(tok, tmp_path):
    """A data audit: each of 300 one-line files was cut at 90% of its characters, mid-word, so
    train.bin read "...hear me s<|endoftext|>" and val.txt was glued word ends ("peak.mish?eople.").
    A file without a line break to cut at is not cut now: the last such files are held out whole,
    until they make up about --val-fraction of those files' text, and the others train whole."""
    paths = []
    for i, sentence in enumerate(SENTENCES):
        paths.append(tmp_path / f"r{i:02d}.txt")
        paths[-1].write_text(sentence)
    meta = prepare(paths, tok, tmp_path / "d", val_fraction=0.1)
    train = tok.decode(np.fromfile(tmp_path / "d" / "train.bin", dtype=np.uint16).tolist())
    val = tok.decode(np.fromfile(tmp_path / "d" / "val.bin", dtype=np.uint16).tolist())
    n_val = len(val.split("<|endoftext|>")) - 1
    assert train.split("<|endoftext|>") == SENTENCES[:-n_val] + [""]  # each file whole, in order
    assert val.split("<|endoftext|>") == SENTENCES[-n_val:] + [""]
    assert (tmp_path / "d" / "val.txt").read_text() == "".join(SENTENCES[-n_val:])
    share = meta["val_bytes"] / (meta["train_bytes"] + meta["val_bytes"])
    print(f"{n_val} of {len(SENTENCES)} files held out whole: {share:.1%} of the bytes")
    assert 0.08 < share < 0.12


def test_small_multi_line_files_give_validation_text_not_their_last_line_break(tok, tmp_path):
    """A data audit: 200 small paragraph files (a few lines each, ending in "\\n") each gave
    validation their final "\\n" alone, the only line break after 90% of them: val.bin read
    "\\n<|endoftext|>\\n<|endoftext|>...", 3.6% of the bytes where 10% was asked. A cut that leaves
    only whitespace on one side is no cut: the line break before the last line is taken where it
    holds out under twice the share, else the file is held out whole or trains whole."""
    assert minigpt.data._cut_point(("x" * 20 + "\n") * 10, 0.1) == 188  # before the last line, not its "\n" (209)
    paragraph = "ROMEO:\nIs the day so young?\nBUT:\nAy, but now.\n"
    assert minigpt.data._cut_point(paragraph, 0.1) is None  # its last line is over twice 10%
    paths = []
    for i in range(40):
        paths.append(tmp_path / f"p{i:02d}.txt")
        paths[-1].write_text(paragraph.replace("young", f"young {i}"))
    meta = prepare(paths, tok, tmp_path / "d", val_fraction=0.1)
    val = tok.decode(np.fromfile(tmp_path / "d" / "val.bin", dtype=np.uint16).tolist())
    documents = val.split("<|endoftext|>")[:-1]
    assert documents == [p.read_text() for p in paths[-len(documents):]]  # whole paragraphs, none blank
    assert 0.08 < meta["val_bytes"] / (meta["train_bytes"] + meta["val_bytes"]) < 0.12


def test_one_line_files_too_large_to_hold_out_whole_are_cut_at_a_space(tmp_path):
    """A single one-line file must still be split (it cannot be held out whole): a file of twice
    the small files' share or more is cut at its own --val-fraction, at the last space before the
    point, so no word is cut in two. Small files beside it are held out whole to make up the
    small files' own share."""
    words = "lorem ipsum dolor sit amet " * 200  # 5,400 characters, one line
    (tmp_path / "big.txt").write_text(words)
    (tmp_path / "big2.txt").write_text(words)
    [cut] = minigpt.data.split_points([tmp_path / "big.txt"], 0.1)
    assert words[cut] == " " and 0.1 <= 1 - cut / len(words) < 0.11
    # Two large ones: each gives its own 10%, neither trains whole nor goes wholly to validation.
    assert minigpt.data.split_points([tmp_path / "big.txt", tmp_path / "big2.txt"], 0.1) == [cut, cut]


def test_a_big_one_line_file_beside_many_small_ones_leaves_both_in_both_splits(tmp_path):
    """A review of the whole-file rule: 100 one-line reviews beside one big one-line dump went all
    to validation (the dump's size set the share the reviews filled) and the model never trained
    on them. The reviews hold out their own 10% whole, and the dump is cut at its own 10%."""
    words = "lorem ipsum dolor sit amet " * 2000  # 54,000 characters, one line
    (tmp_path / "dump.txt").write_text(words)
    paths = [tmp_path / "dump.txt"]
    for i in range(100):
        paths.append(tmp_path / f"review{i:03d}.txt")
        paths[-1].write_text(f"review {i}: " + "a fine film, well acted and shot " * 10)
    points = minigpt.data.split_points(paths, 0.1)
    assert words[points[0]] == " " and 0.1 <= 1 - points[0] / len(words) < 0.11
    held = [i for i, point in enumerate(points[1:]) if point == 0]
    assert held == list(range(90, 100))  # the last 10 of the 100 reviews, whole; the others train whole
    assert all(point == paths[1 + i].stat().st_size for i, point in enumerate(points[1:]) if i < 90)


def test_a_small_folder_of_one_line_files_of_mixed_sizes_is_not_all_cut_inside_lines(tmp_path):
    """A second review: deciding "large" again against what was left made each smaller file large
    in turn, so a folder of one-line reviews beside one long one had every review cut inside its
    line. Large is decided once, against all of them: the 400-character one (a fifth of the total
    or more) is cut in its line, and of the others the last that brings the share nearest is held
    out whole, the rest train whole."""
    paths = []
    for i, n in enumerate([60, 100, 140, 180, 200, 120, 80, 400]):  # 1,280 characters: a fifth is 256
        paths.append(tmp_path / f"r{i}.txt")
        paths[-1].write_text(("good film, " * 40)[:n - 1] + ".")
    points = minigpt.data.split_points(paths, 0.1)
    sizes = [path.stat().st_size for path in paths]
    assert 0 < points[7] < sizes[7]  # the long one: cut in its line
    assert points[:7] == sizes[:6] + [0]  # the others whole: the 80-character one (of 88 asked) held out


def test_prepare_of_files_with_line_breaks_is_unchanged_by_the_whole_file_rule(tok, tmp_path):
    """Guards the normal case (a few big multi-line files, each cut near its last --val-fraction at
    a line break, after or before that point) against the rules for one-line and small files
    added after a data audit: train.bin, val.bin and val.txt are byte for byte the ones prepare
    wrote before them (the hash was taken then, with this same input)."""
    import hashlib

    texts = {"a.txt": corpus(300, seed=1), "b.txt": corpus(100, seed=2) + "end<|endoftext|>next doc\n",
             "sst.txt": "".join(f"sentence number {i} , it is fine . \n" for i in range(200)),
             "long_last_line.txt": "short line\n" * 20 + "x" * 30}
    for name, text in texts.items():
        (tmp_path / name).write_text(text)
    prepare([tmp_path / name for name in texts], tok, tmp_path / "d", 0.1)
    h = hashlib.sha256()
    for name in ("train.bin", "val.bin", "val.txt"):
        h.update((tmp_path / "d" / name).read_bytes())
    assert h.hexdigest()[:16] == "43c93879ab8f59f9"


def test_prepare_says_the_share_held_out_and_warns_when_it_is_far_from_the_fraction(tmp_path, capsys):
    """A data audit: prepare held out 3.6% of a corpus where 10% was asked, without a word. The
    share held out is printed now, and one under half or over twice --val-fraction is warned about."""
    (tmp_path / "a.txt").write_text(corpus(300, seed=1))
    assert main([str(tmp_path / "a.txt"), "--tokenizer", str(GPT2_DIR), "--out", str(tmp_path / "d")]) == 0
    captured = capsys.readouterr()
    meta = read_meta(tmp_path / "d")
    share = meta["val_tokens"] / (meta["train_tokens"] + meta["val_tokens"])
    assert f"held out {share:.1%} of the tokens for validation (--val-fraction 0.1)\n" in captured.out
    assert "warning" not in captured.err
    minigpt.data.warn_if_far_from_fraction({"train": 964, "val": 36}, 0.1)
    assert capsys.readouterr().err.startswith("warning: validation holds 36 tokens, 3.6% of them, far from the "
                                              "--val-fraction 0.1 asked")
    minigpt.data.warn_if_far_from_fraction({"train": 94, "val": 6}, 0.1)  # within [0.05, 0.2]
    assert capsys.readouterr().err == ""


def test_a_json_lines_corpus_is_refused_with_how_to_extract_its_text(tok, tmp_path, capsys):
    """A data audit: a JSONL corpus ({"text": ...} per line) was prepared as text without a word,
    and the model trained on '{"text": "BRUTUS:\\nCome...'. A .json/.jsonl file, or one whose every
    line is a JSON object, is refused now, naming the jq line that extracts its text (a review: for
    an array `.[].text`, for strings `.`); --allow-json takes it as it is. Text whose lines start
    with "{" (code, LaTeX) is not JSON, nor are lines of quoted sentences (JSON strings, but text)."""
    records = "".join(json.dumps({"text": f"BRUTUS:\nCome, come {i}.", "id": i}) + "\n" for i in range(30))
    for name in ("docs.jsonl", "docs.json", "docs.txt"):  # by its name, or by its lines
        (tmp_path / name).write_text(records)
        with pytest.raises(ValueError, match=rf"input .*{name} (is a \.json|holds JSON Lines).* prepare reads plain text"):
            prepare([tmp_path / name], tok, tmp_path / "d")
    with pytest.raises(ValueError, match=r"docs.txt > \S*docs_text.txt"):  # not `> docs.txt`, which the shell empties first
        prepare([tmp_path / "docs.txt"], tok, tmp_path / "d")
    quotes = "\n".join(json.dumps(f"To be, or not to be, line {i}.") for i in range(20)) + "\n\n"
    (tmp_path / "quotes.txt").write_text(quotes)  # lines of quoted sentences: text, taken
    prepare([tmp_path / "quotes.txt"], tok, tmp_path / "q")
    (tmp_path / "quotes.jsonl").write_text(quotes)  # ... but named JSON Lines, a string a line: `jq -r .`
    with pytest.raises(ValueError, match=r"`jq -r '\.' \S*quotes.jsonl > \S*quotes.txt`"):
        prepare([tmp_path / "quotes.jsonl"], tok, tmp_path / "d")
    (tmp_path / "array.json").write_text(json.dumps([{"text": "a"}, {"text": "b"}]))
    with pytest.raises(ValueError, match=r"`jq -r '\.\[\]\.text' \S*array.json > "):
        prepare([tmp_path / "array.json"], tok, tmp_path / "d")
    args = [str(tmp_path / "docs.jsonl"), "--tokenizer", str(GPT2_DIR), "--out", str(tmp_path / "d")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"`jq -r '.text' {tmp_path / 'docs.jsonl'} > {tmp_path / 'docs.txt'}`" in err and "--allow-json" in err
    assert not (tmp_path / "d").exists()  # refused before anything is made
    assert main([*args, "--allow-json"]) == 0
    assert (tmp_path / "d" / "val.txt").read_text().endswith('", "id": 29}\n')
    code = "".join(f"{{\n  x{i} = {i};\n}}\n{{\\bf bold {i}}}\n" for i in range(30))  # starts with "{", not JSON
    (tmp_path / "code.txt").write_text(code)
    prepare([tmp_path / "code.txt"], tok, tmp_path / "e")


def test_a_cp1252_file_whose_first_bad_byte_is_latin1_too_is_told_cp1252(tmp_path):
    """A second review: the advice followed the first bad byte alone, so "café – très bon" in
    Windows-1252 (é, 0xe9, is latin1 too; the dash, 0x96, only cp1252) was told `iconv -f latin1`,
    which turns the dash into a C1 control. Any byte only cp1252 has names cp1252."""
    (tmp_path / "mixed.txt").write_bytes("café – très bon\n".encode("cp1252"))
    with pytest.raises(ValueError, match=r"byte 0xe9 at offset 3; convert it first \(e.g. iconv -f cp1252 -t utf-8\)"):
        minigpt.files.read_text(tmp_path / "mixed.txt")
    (tmp_path / "latin1.txt").write_bytes("café très bon\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"iconv -f latin1 -t utf-8"):
        minigpt.files.read_text(tmp_path / "latin1.txt")


def test_the_jq_line_for_a_one_line_json_array_past_the_checked_size_reads_its_records(tok, tmp_path):
    """A second review: the filter was chosen from the first MiB's whole lines, which a minified
    array longer than that has none of, so it got `.text` (jq: "Cannot index array"). It is chosen
    from the file's first character now."""
    (tmp_path / "big.json").write_text(json.dumps([{"text": "x" * 1000}] * 1500))  # 1.5 MB, one line
    with pytest.raises(ValueError, match=r"`jq -r '\.\[\]\.text' \S*big.json > "):
        prepare([tmp_path / "big.json"], tok, tmp_path / "d")


def test_a_utf8_file_with_a_stray_latin1_byte_is_not_told_cp1252(tmp_path):
    """A third review: the cp1252 guess searched every byte of the block, and UTF-8's own curly
    quotes hold 0x80 and 0x9C (“ is E2 80 9C), so a UTF-8 file with one pasted latin1 line was told
    `iconv -f cp1252`, which then garbled the quotes. Only the bytes that do not decode count."""
    (tmp_path / "mixed.txt").write_bytes("He said \u201chello\u201d.\n".encode() + "café\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"byte 0xe9 at offset \d+; convert it first \(e.g. iconv -f latin1 -t utf-8\)"):
        minigpt.files.read_text(tmp_path / "mixed.txt")
    # A fourth review: a block read piece by piece may end inside a UTF-8 character (“ is E2 80 9C):
    # its begun bytes are no stray cp1252 ones either.
    block = "caf".encode() + b"\xe9" + " \u201c".encode()[:-1]
    with pytest.raises(UnicodeDecodeError) as e:
        block.decode("utf-8")
    assert "iconv -f latin1" in str(minigpt.files.not_utf8("f.txt", e.value))


def test_a_token_file_read_as_text_is_told_binary_not_iconv(tok, tmp_path):
    """An audit: `minigpt eval MODEL data/val.bin` (or `prepare` of nanoGPT's train.bin) was told to
    convert it with `iconv -f cp1252`, which no token file survives. A .bin, or bytes full of control
    bytes, is named a binary file; a .bin of a prepared folder points at the text it came from."""
    (tmp_path / "a.txt").write_text(corpus(50, seed=0))
    prepare([tmp_path / "a.txt"], tok, tmp_path / "d")
    with pytest.raises(ValueError, match=rf"val.bin looks like a binary \(token\) file, not text .*; it holds the token ids of "
                                         rf"the data prepared in {re.escape(str(tmp_path / 'd'))}: pass the text they came "
                                         rf"from, e.g. {re.escape(str(tmp_path / 'd' / 'val.txt'))}$"):
        read_text(tmp_path / "d" / "val.bin")
    ids = np.array(tok.encode("ROMEO: it is the east, and Juliet is the sun. " * 40), dtype=np.uint16).tobytes()
    (tmp_path / "ids.dat").write_bytes(ids)  # another name: its NULs and control bytes tell
    with pytest.raises(ValueError, match=r"ids.dat looks like a binary \(token\) file, not text \(byte 0x\w+ at offset \d+\); "
                                         r"pass a text file$"):
        prepare([tmp_path / "ids.dat"], tok, tmp_path / "e")
    (tmp_path / "cp.txt").write_bytes("café – très bon\n".encode("cp1252"))  # a text in another encoding keeps its advice
    with pytest.raises(ValueError, match=r"iconv -f cp1252"):
        read_text(tmp_path / "cp.txt")


def test_no_meta_json_says_what_token_files_made_elsewhere_need(tmp_path):
    """An audit: nanoGPT's prepare.py writes train.bin/val.bin (uint16) that minigpt trains on with a
    hand-written meta.json, but the error only said to run `minigpt prepare`."""
    np.zeros(100, dtype=np.uint16).tofile(tmp_path / "train.bin")
    with pytest.raises(FileNotFoundError, match=r"no meta.json in .*: prepare the data with `minigpt prepare` first \(uint16 "
                                                r"token files made elsewhere, as nanoGPT's prepare.py: write "
                                                r'\{"vocab_size": N, "eos_token_id": ID\} beside them, and the '
                                                r"tokenizer's files into tokenizer/ there, for the checkpoints to carry\)"):
        read_meta(tmp_path)
    (tmp_path / "meta.json").write_text('{"vocab_size": 50257, "eos_token_id": 50256}')
    assert read_meta(tmp_path)["vocab_size"] == 50257  # that alone is enough


def char_ids(text: str) -> bytes:
    """`text` as nanoGPT's shakespeare_char prepare.py writes it: uint16 ids of its sorted characters."""
    stoi = {c: i for i, c in enumerate(sorted(set(text)))}
    return np.array([stoi[c] for c in text], dtype=np.uint16).tobytes()


def test_a_character_level_token_file_is_refused_though_it_decodes_as_utf8(tok, tmp_path):
    """A review: nanoGPT's character-level train.bin (ids below 65 as uint16: every byte below 0x80, half
    of them NUL) is valid UTF-8, so `prepare` tokenized it as text, unwarned. More than a tenth NULs is
    refused as a binary file; UTF-16 text of Latin letters (as many NULs) is told its iconv line; a
    stray NUL or two in real text still prepares."""
    text = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n" * 40
    (tmp_path / "train.bin").write_bytes(char_ids(text))
    with pytest.raises(ValueError, match=r"train.bin looks like a binary \(token\) file, not text \(a tenth or more of its first characters are NUL bytes\); "
                                         r"pass a text file$"):
        prepare([tmp_path / "train.bin"], tok, tmp_path / "a")
    for encoding in ("utf-16le", "utf-16be"):
        (tmp_path / "u16.txt").write_bytes(text.encode(encoding))
        with pytest.raises(ValueError, match=rf"u16.txt looks like UTF-16 {encoding[6:].upper()} text without a byte order "
                                             rf"mark, not UTF-8 .*iconv -f {encoding} -t utf-8\)$"):
            prepare([tmp_path / "u16.txt"], tok, tmp_path / "b")
    (tmp_path / "nul.txt").write_text(text[:200] + "\0" + text[200:] + "\0")
    prepare([tmp_path / "nul.txt"], tok, tmp_path / "c")
    assert read_meta(tmp_path / "c")["vocab_size"] == tok.vocab_size


@pytest.mark.parametrize("name, data, advice", [
    ("x.bin", ("ROMEO: it is the east, and Juliet is the sun.\n" * 50 + "café\n").encode("latin-1"), "iconv -f latin1"),
    ("log.txt", ("\x1b[1;32mINFO\x1b[0m \x1b[2m12:00\x1b[0m ok\n" * 100 + "café\n").encode("latin-1"), "iconv -f latin1"),
    ("le.txt", ("It is the east, and Juliet is the sun.\n" * 50 + "café\n").encode("utf-16le"), "iconv -f utf-16le"),
    ("be.txt", ("It is the east, and Juliet is the sun.\n" * 50 + "café\n").encode("utf-16be"), "iconv -f utf-16be"),
])
def test_text_in_another_encoding_is_not_called_binary(name, data, advice, tmp_path):
    """A review: `looks_binary` called text binary, so it got no iconv line: a .bin name alone decided
    (latin1 text named x.bin), ESC counted as a control byte (an ANSI-coloured log), and UTF-16 without
    a byte order mark is half NULs. The content decides; UTF-16's NULs at every other offset tell its byte order."""
    (tmp_path / name).write_bytes(data)
    with pytest.raises(ValueError, match=re.escape(advice)):
        read_text(tmp_path / name)
