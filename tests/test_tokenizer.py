"""minigpt's BPE tokenizer against tiktoken (GPT-2's ids) and transformers (files it saves).

Everything here uses only files shipped in the repo (checkpoints/gpt2) and text the tests make.
"""
from __future__ import annotations

import base64
import importlib
import inspect
import io
import json
import multiprocessing
import os
import pkgutil
import random
import re
import signal
import string
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import tiktoken
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import minigpt.pretokenize as pretokenize
import minigpt.tokenizer as tokmod
import minigpt.tokenizer_batch as batchmod
import minigpt.tokenizer_cli as climod
from minigpt import Tokenizer
from minigpt.pretokenize import BYTE_TO_CHAR, GPT2_SPLIT_PATTERN, split_text, str_to_token, token_to_str
from minigpt.tokenizer import GPT2_DIR

REPO = Path(__file__).resolve().parent.parent
EOT = "<|endoftext|>"

TRICKY = [
    "",
    "Hello world",
    " Hello  world ",
    "don't won't I'm we've they're she'll he'd it's",
    "DON'T WON'T I'M WE'VE THEY'RE SHE'LL HE'D IT'S",  # contractions are case-sensitive
    "Don'T dOn't 's 't 're 'x ''s",
    "a  b   c    d\te\t\tf\n\ng\n\n\nh \n i\r\n",
    "   leading and trailing   ",
    "\n",
    "  \n\n  \t ",
    "x\u00a0y\u2003z\u3000w\u0085v",  # non-breaking, em and ideographic spaces, NEL
    "0 1 12 123 1234 12345 3.14159 1,000,000 2024-06-01 ١٢٣ ½ Ⅻ",
    "🙂 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 ❤️ 🇯🇵",  # emoji, skin tone, ZWJ sequences, flags
    "日本語のテキスト 中文文本 한국어 텍스트",
    "e\u0301 a\u0308 n\u0303 Z\u0351\u0358\u0362 ก่ำ",  # combining marks
    "\x00\x01\x07\x08\x1b\x1c\x1f\x7f tab\ttab bell\x07",  # control characters
    "Ñandú ÆØÅ straße İstanbul ǅ",
    "<|endoftext|>".replace("|", "¦"),
    "http://example.com/path?q=1&r=2#frag user@mail.org",
    "def f(x):\n    return x ** 2  # square\n",
    "!!!??? ... --- *** $$$ ```",
    "Ġ Ċ ĠĠ",  # the byte-level alphabet's own characters
    "\ufeff\u200b\u200d\ufffd\U0010ffff",
]


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer.from_pretrained(GPT2_DIR)


@pytest.fixture(scope="module")
def enc() -> tiktoken.Encoding:
    """An r50k_base-equivalent encoding built from the shipped files: GPT-2's split pattern,
    ranks from vocab.json (byte-decoded), and <|endoftext|> = 50256."""
    vocab = json.loads((GPT2_DIR / "vocab.json").read_text(encoding="utf-8"))
    ranks = {str_to_token(s): i for s, i in vocab.items() if s != EOT}
    return tiktoken.Encoding("gpt2-shipped", pat_str=GPT2_SPLIT_PATTERN, mergeable_ranks=ranks, special_tokens={EOT: 50256})


def real_text() -> str:
    files = sorted([*REPO.glob("minigpt/*.py"), *REPO.glob("*.md"), REPO / "checkpoints/gpt2/LICENSE"])
    text = "\n".join(f.read_text(encoding="utf-8") for f in files)
    return text.replace(EOT, "")  # special-token text has its own test


# ---- the byte-level alphabet ----


def test_byte_alphabet_matches_gpt2_vocab():
    vocab = json.loads((GPT2_DIR / "vocab.json").read_text(encoding="utf-8"))
    assert len(set(BYTE_TO_CHAR.values())) == 256 and all(c.isprintable() for c in BYTE_TO_CHAR.values())
    assert BYTE_TO_CHAR[ord(" ")] == "Ġ" and BYTE_TO_CHAR[ord("\n")] == "Ċ"
    assert [vocab[c] for c in BYTE_TO_CHAR.values()] == list(range(256))  # the table's order is GPT-2's ids


@given(st.binary(max_size=40))
def test_tokens_spell_and_read_back_through_the_alphabet(token):
    """token_to_str and str_to_token (str.translate through Latin-1) against the table, character
    by character; a character outside the alphabet is refused, not read as its own code (a plain
    space would otherwise read as byte 0x20, which GPT-2 spells 'Ġ')."""
    spelled = "".join(BYTE_TO_CHAR[b] for b in token)
    assert token_to_str(token) == spelled and str_to_token(spelled) == token
    for outside in (" ", "\n", "\x00", "\xad", "€", "ń"):  # 'ń' (U+0144): just past the table's last, 256 + 67
        assert outside not in BYTE_TO_CHAR.values()
        with pytest.raises(ValueError):
            str_to_token(spelled + outside)


# ---- same ids as tiktoken ----


@pytest.mark.parametrize("text", TRICKY)
def test_tricky_strings_match_tiktoken(tok, enc, text):
    ids = tok.encode(text)
    assert ids == enc.encode_ordinary(text), f"{text!r}: minigpt {ids} vs tiktoken {enc.encode_ordinary(text)}"
    assert tok.decode(ids) == text


def test_real_text_matches_tiktoken(tok, enc):
    text = real_text()
    ids, ref = tok.encode(text), enc.encode_ordinary(text)
    mismatches = sum(a != b for a, b in zip(ids, ref)) + abs(len(ids) - len(ref))
    print(f"{len(text)} characters, {len(ids)} tokens, {mismatches} mismatches vs tiktoken")
    assert ids == ref
    assert tok.decode(ids) == text


# Short strings over all of Unicode, with extra weight on the characters GPT-2's rules care about.
# Left out: surrogates (no UTF-8, no round trip; tested on their own) and code points this Python's Unicode database
# calls unassigned (Cn). Newer Unicode versions assign some of them, and the `regex` module and
# tiktoken's Rust regex ship different versions: U+323B0 is a letter to one and not the other,
# which changes how "\U000323b0'm" splits (4,657 such code points here; on every assigned one the
# two agree, checked over all of them in "a{c}'m {c}1 {c}").
_interesting = st.sampled_from(list(" \t\n\r\x0b\x0c\u00a0\u3000'sStdlmrv0123456789.,!?-é😀\u200d\u0301日"))
unicode_text = st.text(st.one_of(st.characters(blacklist_categories=("Cs", "Cn")), _interesting), max_size=16)


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(unicode_text)
def test_hypothesis_unicode_matches_tiktoken_and_round_trips(tok, enc, text):
    ids = tok.encode_ordinary(text)
    assert ids == enc.encode_ordinary(text)
    assert tok.decode(ids) == text


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(st.characters(max_codepoint=127), max_size=24))
def test_ascii_fast_path_splits_like_gpt2_pattern(text):
    assert text.isascii()
    assert split_text(text) == pretokenize._SPLIT.findall(text)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(st.sampled_from("aeinrst é😀"), min_size=1, max_size=120))
def test_long_chunk_merging_is_the_rescan_merging(tok, enc, text):
    """_merge_long_chunk (a heap, for chunks over _LONG_CHUNK bytes) makes the same merges as merge_chunk's
    plain rescan."""
    for chunk in split_text(text):
        ids = [tok._byte_ids[b] for b in chunk.encode()]
        rescan: list = []  # asking for the steps keeps merge_chunk on its rescan, whatever the length
        heap = tokmod._merge_long_chunk(ids.copy(), tok._ranks, tok._merged_id)
        assert heap == tokmod.merge_chunk(ids, tok._ranks, tok._merged_id, rescan)
    assert tok.encode_ordinary(text) == enc.encode_ordinary(text)


@pytest.mark.parametrize("word", ["a" * 20_000, "ACGT" * 5_000, "".join(random.Random(0).choices(string.ascii_letters, k=20_000))])
def test_a_very_long_word_encodes_fast_and_as_tiktoken(tok, enc, word):
    start = time.perf_counter()
    ids = tok.encode_ordinary(word)  # one 20 kB chunk: a rescan after each merge took ~10 s
    seconds = time.perf_counter() - start
    print(f"{len(word)} characters: {seconds:.3f} s")
    assert ids == enc.encode_ordinary(word)
    assert seconds < 2.0


@pytest.mark.parametrize("text", ["\ud800", "a\udfffb", "\ud83d\ude00 pair", "x\udcff\n" * 3000])
def test_surrogates_are_encoded_as_tiktoken_does(tok, enc, text):
    # No UTF-8 for them; tiktoken joins a pair into its character and makes a lone one U+FFFD.
    assert tok.encode(text) == tok.encode_ordinary(text) == enc.encode(text)
    assert tok.encode(f"{text}{EOT}", allowed_special="all") == enc.encode(f"{text}{EOT}", allowed_special="all")


# ---- special tokens: tiktoken's policy ----


def test_special_token_policy(tok, enc):
    text = f"one{EOT}two"
    with pytest.raises(ValueError, match="allowed_special"):
        tok.encode(text)  # raises by default, like tiktoken
    assert tok.encode(text, allowed_special={EOT}) == enc.encode(text, allowed_special={EOT})
    assert tok.encode(text, allowed_special="all")[1] == tok.eos_token_id == 50256
    assert tok.encode_ordinary(text) == enc.encode_ordinary(text)  # as plain text: '<', '|', 'end', ...
    assert 50256 not in tok.encode_ordinary(text)
    assert tok.decode(tok.encode(text, allowed_special="all")) == text
    with pytest.raises(ValueError, match="allowed_special must be"):
        tok.encode(text, allowed_special={"<|endoftxt|>"})  # a typo is an error, not a silent no-op
    with pytest.raises(ValueError, match="allowed_special must be"):
        tok.encode(text, allowed_special=EOT)  # a bare string, not a set


@pytest.mark.parametrize("text", ["one<|endoftext|>two", "<|endoftext|>", "plain"])
def test_disallowed_special_and_decode_errors_follow_tiktoken(tok, enc, text):
    # disallowed_special=() lets a not-allowed special token's text through as plain text.
    assert tok.encode(text, disallowed_special=()) == enc.encode(text, disallowed_special=())
    assert tok.encode(text, allowed_special="all", disallowed_special=()) == enc.encode(text, allowed_special="all")
    assert tok.encode_batch([text], disallowed_special=()) == [enc.encode(text, disallowed_special=())]
    assert tok([text], disallowed_special=())["input_ids"] == [enc.encode(text, disallowed_special=())]
    if EOT in text:  # named in both: disallowed wins, as in tiktoken
        with pytest.raises(ValueError, match="disallowed_special"):
            tok.encode(text, allowed_special={EOT}, disallowed_special={EOT})
    with pytest.raises(ValueError, match="disallowed_special must be"):
        tok.encode(text, disallowed_special={"<|endoftxt|>"})
    with pytest.raises(ValueError, match="allowed_special must be 'all' or a set"):
        tok.encode(text, allowed_special=None)  # a ValueError that names the argument, not "not iterable"


def test_decode_of_float_ids_says_they_are_floats_not_a_batch(tok):
    """An audit: a float tensor's ids got the advice for a (B, T) batch."""
    with pytest.raises(TypeError, match=r"got floats \(\[1.0, 2.0\]...\): a float tensor\? .long\(\) it"):
        tok.decode(torch.tensor([1.0, 2.0]))
    with pytest.raises(TypeError, match=r"for a batch \(B, T\), decode each row: tok.batch_decode\(ids\)"):
        tok.decode([[1, 2], [3]])
    with pytest.raises(TypeError, match=r"decode takes int ids, got bools \(\[True, False\]...\): an attention mask\?"):
        tok.decode(torch.tensor([True, False]))  # not silently ids 1 and 0


def test_decode_takes_tiktokens_errors_argument(tok, enc):
    cut = tok.encode("’")[:1]  # the first of the 3 bytes of one character
    assert tok.decode(cut) == enc.decode(cut) == "\ufffd"  # errors="replace" by default
    assert tok.decode(cut, errors="ignore") == enc.decode(cut, errors="ignore") == ""
    with pytest.raises(UnicodeDecodeError):
        tok.decode(cut, errors="strict")


def test_batch_decode_refuses_decodes_errors_in_its_skip_special_tokens_slot(tok):
    """An audit: batch_decode(rows, "strict"), decode's order, took "strict" for skip_special_tokens
    (a truthy str): it dropped <|endoftext|> and replaced the broken character instead of raising."""
    cut = tok.encode("🙂")[:1] + [tok.eos_token_id]  # half an emoji, then <|endoftext|>
    with pytest.raises(TypeError, match=r"errors is a keyword: batch_decode\(rows, errors='strict'\)"):
        tok.batch_decode([cut], "strict")
    with pytest.raises(UnicodeDecodeError):
        tok.batch_decode([cut], errors="strict")
    assert tok.batch_decode([cut], True) == ["\ufffd"]  # transformers' order, batch_decode(rows, True), still works
    assert tok.batch_decode([cut], False, errors="ignore") == [EOT]
    with pytest.raises(TypeError, match="positional"):  # transformers' third is clean_up_tokenization_spaces: not errors
        tok.batch_decode([cut], False, "strict")


@pytest.mark.parametrize("bad", ["no", "False", [], 0.5, None])
def test_decode_and_batch_decode_refuse_a_skip_special_tokens_that_is_no_bool(tok, bad):
    """A review: only a str in batch_decode's skip_special_tokens slot was caught, and always read as
    decode's `errors`; decode(ids, skip_special_tokens="no") took the truthy "no" and dropped
    <|endoftext|>, and batch_decode(rows, skip_special_tokens=[]) kept it. Both refuse what is no bool
    (checks.check_flag), the "errors is a keyword" hint only for a codec error handler's name."""
    ids = tok.encode("Hi") + [tok.eos_token_id]
    refused = f"skip_special_tokens must be True or False, got {bad!r}"
    with pytest.raises(TypeError, match=re.escape(refused) + "$"):
        tok.decode(ids, skip_special_tokens=bad)
    with pytest.raises(TypeError, match=re.escape(refused) + "$"):
        tok.batch_decode([ids], bad)
    with pytest.raises(TypeError, match=re.escape(refused) + "$"):
        tok.batch_decode([], skip_special_tokens=bad)  # an empty batch too: no row's decode to refuse it
    with pytest.raises(TypeError, match=re.escape("got 'ignore'; errors is a keyword: batch_decode(rows, errors='ignore')")):
        tok.batch_decode([ids], "ignore")
    assert tok.decode(ids, skip_special_tokens=np.bool_(True)) == "Hi"  # a NumPy bool is a bool


def test_decode_skips_special_tokens_and_batch_decode_decodes_rows_as_transformers_does(tmp_path):
    """An audit: transformers' decode(ids, skip_special_tokens=True) was a TypeError, and there was no
    batch_decode, so a right-padded batch decoded to 'Hi<|endoftext|>' with no built-in way to drop
    the padding. Both now give transformers' text: special tokens dropped, added words (not special) kept."""
    from transformers import GPT2TokenizerFast

    hf = GPT2TokenizerFast.from_pretrained(GPT2_DIR)
    hf.add_tokens(["ROMEO"])
    hf.add_special_tokens({"additional_special_tokens": ["<|user|>"]})
    hf.save_pretrained(tmp_path)
    tok = Tokenizer.from_pretrained(tmp_path)
    assert (tok.added_tokens, tok.special_tokens) == ({"ROMEO": 50257}, {EOT: 50256, "<|user|>": 50258})
    texts = ["Hi", f"<|user|>ROMEO: hello{EOT}there", "caf\u00e9 🙂"]
    ids = [hf.encode(t) for t in texts]
    for skip in (False, True):
        assert [tok.decode(i, skip_special_tokens=skip) for i in ids] == [hf.decode(i, skip_special_tokens=skip) for i in ids]
        assert tok.batch_decode(ids, skip) == hf.batch_decode(ids, skip)
    assert tok.decode(ids[1], skip_special_tokens=True) == "ROMEO: hellothere"
    batch = tok(texts, padding=True, return_tensors="pt", allowed_special="all")["input_ids"]  # (3, T), padded with EOT
    assert tok.batch_decode(batch)[0] == "Hi" + EOT * (batch.shape[1] - 1) == hf.batch_decode(batch)[0]
    assert tok.batch_decode(batch, skip_special_tokens=True) == hf.batch_decode(batch, skip_special_tokens=True)
    assert tok.batch_decode(batch.numpy(), skip_special_tokens=True)[0] == "Hi"
    with pytest.raises(TypeError, match=r"skip_special_tokens is a keyword: decode\(ids, skip_special_tokens=True\)"):
        tok.decode(ids[0], True)  # transformers' second argument; minigpt's is tiktoken's errors


# ---- errors ----


def test_bad_input_errors(tok):
    with pytest.raises(TypeError, match="str"):
        tok.encode(b"bytes")
    with pytest.raises(TypeError, match="str"):
        tok.encode(None)
    with pytest.raises(ValueError, match=r"unknown token id 50257 at position 1; ids must be in \[0, 50257\)"):
        tok.decode([1, 50257])
    with pytest.raises(ValueError, match="unknown token id -1"):
        tok.decode([-1])
    with pytest.raises(ValueError, match=r"vocab_size must be an int >= 256 \+ 1"):
        Tokenizer.train("some text", vocab_size=256)
    with pytest.raises(TypeError, match="list of str"):
        tok.encode_batch("one string")
    with pytest.raises(TypeError, match="list of str"):
        tok(None, padding=True)
    with pytest.raises(ValueError, match="unknown token id -1"):
        tok.id_to_token(-1)  # not the last id (<|endoftext|>), as a list index would give
    with pytest.raises(ValueError, match="unknown token id 50257"):
        tok.id_to_token(50257)
    for mixed in ([1, 2.5], [1, None], [1, "a"]):  # every id is checked, not only the first
        with pytest.raises(TypeError, match="int ids"):
            tok.decode(mixed)
    with pytest.raises(TypeError, match="max_length must be an integer, got the bool True"):
        tok(["a"], truncation=True, max_length=True)
    with pytest.raises(FileNotFoundError, match="tokenizer directory .*no_such_dir does not exist"):
        Tokenizer.from_pretrained(REPO / "no_such_dir")
    with pytest.raises(FileNotFoundError, match="neither vocab.json"):
        Tokenizer.from_pretrained(REPO / "minigpt")  # a directory, but no tokenizer in it

def test_every_gpt2_size_by_name_is_the_shipped_tokenizer(tmp_path, monkeypatch):
    """GPT-2's four sizes share one tokenizer: each name, as transformers takes it (the Hub's
    openai-community/NAME too), loads checkpoints/gpt2's files, unless a directory of that name is here."""
    shipped = Tokenizer.from_pretrained(REPO / "checkpoints" / "gpt2")
    for name in ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "openai-community/gpt2-xl"):
        tok = Tokenizer.from_pretrained(name)
        assert (tok.encode("Hello world"), tok.vocab_size) == ([15496, 995], 50257) and tok.merges == shipped.merges, name
    monkeypatch.chdir(tmp_path)
    (tmp_path / "gpt2-medium").mkdir()  # a directory of that name wins, as it does for transformers
    with pytest.raises(FileNotFoundError, match="neither vocab.json"):
        Tokenizer.from_pretrained("gpt2-medium")
    with pytest.raises(FileNotFoundError, match="tokenizer directory gpt2-small does not exist"):
        Tokenizer.from_pretrained("gpt2-small")  # not one of the four


def test_a_tokenizer_directory_missing_one_of_its_two_files_names_it(tmp_path):
    (tmp_path / "vocab.json").write_text((REPO / "checkpoints" / "gpt2" / "vocab.json").read_text())
    with pytest.raises(FileNotFoundError, match="has vocab.json but no merges.txt: a tokenizer needs both"):
        Tokenizer.from_pretrained(tmp_path)
    (tmp_path / "vocab.json").rename(tmp_path / "merges.txt")
    with pytest.raises(FileNotFoundError, match="has merges.txt but no vocab.json"):
        Tokenizer.from_pretrained(tmp_path)


def test_decode_joins_bytes_before_utf8(tok):
    ids = tok.encode("🙂")
    assert len(ids) > 1  # one emoji, several byte-level tokens
    assert tok.decode(ids) == "🙂"
    assert tok.decode(ids[:1]) == "\ufffd"  # a cut-off UTF-8 sequence decodes to U+FFFD, never raises
    assert tok.decode(torch.tensor(ids)) == "🙂"
    with pytest.raises(TypeError, match="for a batch"):  # (1, T), as generate returns it
        tok.decode(torch.tensor([ids]))
    assert tok.decode(list(torch.tensor(ids))) == tok.decode(list(np.array(ids))) == "🙂"  # 0-d tensors, numpy ints
    assert tok.decode(torch.tensor(ids[0])) == tok.decode(ids[0]) == tok.decode(ids[:1])  # one id, e.g. from argmax


def test_one_id_is_anything_with_index_that_is_no_sequence(tok):
    """A typing audit: decode, decode_bytes and convert_ids_to_tokens take one id, typed as
    SupportsIndex (an int, a NumPy int, a 0-d tensor); an object with __index__ alone was refused
    by decode ("decode takes one sequence of int ids")."""
    class Id:
        def __index__(self) -> int:
            return 15496

    assert tok.decode(Id()) == tok.decode(np.int64(15496)) == tok.decode(15496) == "Hello"
    assert tok.decode_bytes(Id()) == b"Hello"
    assert tok.convert_ids_to_tokens(Id()) == tok.convert_ids_to_tokens(np.int64(15496)) == "Hello"
    assert tok.convert_ids_to_tokens(torch.tensor([15496])) == ["Hello"]  # a 1-D tensor has __index__ too: several


# ---- files ----


def test_save_load_round_trip_and_transformers_reads_gpt2(tok, tmp_path):
    from transformers import GPT2TokenizerFast

    tok.save_pretrained(tmp_path)
    assert (tmp_path / "vocab.json").read_bytes() == (GPT2_DIR / "vocab.json").read_bytes()
    assert (tmp_path / "merges.txt").read_bytes() == (GPT2_DIR / "merges.txt").read_bytes()
    again = Tokenizer.from_pretrained(tmp_path)
    assert again.vocab == tok.vocab and again.merges == tok.merges and again.special_tokens == {EOT: 50256}
    hf = GPT2TokenizerFast.from_pretrained(tmp_path)
    text = real_text() + "".join(TRICKY)
    assert hf.encode(text) == tok.encode(text)
    assert len(tok) == len(hf) == tok.vocab_size == 50257  # len(tok): ids, special tokens included


def test_reads_tokenizer_json_as_transformers_5_saves_it(tok, tmp_path):
    from transformers import GPT2TokenizerFast

    GPT2TokenizerFast.from_pretrained(GPT2_DIR).save_pretrained(tmp_path)
    for name in ("vocab.json", "merges.txt"):  # transformers 4 writes them too; read tokenizer.json alone
        (tmp_path / name).unlink(missing_ok=True)
    loaded = Tokenizer.from_pretrained(tmp_path)
    assert loaded.vocab == tok.vocab and loaded.merges == tok.merges and loaded.special_tokens == {EOT: 50256}


def test_a_damaged_tokenizer_file_is_named(tmp_path):
    """json's own message ("Expecting property name ... line 1 column 2") names no file."""
    (tmp_path / "merges.txt").write_text("#version: 0.2\n")
    for text, problem in (("{oops", "is not valid JSON"), ("[1, 2]", "must map each token to its id")):
        (tmp_path / "vocab.json").write_text(text)
        with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'vocab.json'} {problem}")):
            Tokenizer.from_pretrained(tmp_path)


def test_a_tokenizer_config_with_add_prefix_space_is_refused_not_read_with_other_ids(tmp_path):
    from transformers import GPT2TokenizerFast

    for name in ("vocab.json", "merges.txt"):
        (tmp_path / name).write_bytes((GPT2_DIR / name).read_bytes())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"add_prefix_space": True}))
    assert GPT2TokenizerFast.from_pretrained(tmp_path).encode("Hello") == [18435]  # " Hello", not "Hello" (15496)
    with pytest.raises(ValueError, match="add_prefix_space"):
        Tokenizer.from_pretrained(tmp_path)


def test_from_tiktoken_recovers_gpt2_merges(tok, tmp_path):
    lines = [f"{base64.b64encode(t).decode()} {i}" for t, i in tok.vocab.items()]
    (tmp_path / "gpt2.tiktoken").write_text("\n".join(lines) + "\n")
    loaded = Tokenizer.from_tiktoken(tmp_path / "gpt2.tiktoken")
    assert loaded.merges == tok.merges and loaded.special_tokens == {EOT: 50256}
    # special_tokens= (a code audit: no test passed it): ids after the ranks', checked like any vocabulary's.
    chat = Tokenizer.from_tiktoken(tmp_path / "gpt2.tiktoken", special_tokens={EOT: 50256, "<|im_end|>": 50257})
    assert len(chat) == 50258 and chat.encode("<|im_end|>", allowed_special="all") == [50257]
    with pytest.raises(ValueError, match="id 100 is given to both"):
        Tokenizer.from_tiktoken(tmp_path / "gpt2.tiktoken", special_tokens={EOT: 100})


@pytest.mark.parametrize("line", ["To be, or not to be", "!!!! 0", "YQ== zero"])
def test_a_line_that_is_no_tiktoken_entry_is_named_with_its_line_number(tmp_path, line):
    """An audit: a text file failed as "too many values to unpack (expected 2)", bad base64 as
    "vocab lacks 256 of the 256 single-byte tokens"."""
    (tmp_path / "t.tiktoken").write_text(f"{base64.b64encode(b'a').decode()} 0\n{line}\n")
    with pytest.raises(ValueError, match=rf"t.tiktoken:2: expected '<base64 token> <rank>' \(a tiktoken file\), "
                                         rf"got {re.escape(repr(line))}"):
        Tokenizer.from_tiktoken(tmp_path / "t.tiktoken")


# ---- training ----


def test_textbook_merges():
    # Wikipedia's example: aaabdaaabac → ZabdZabac (Z=aa) → ZYdZYac (Y=ab) → XdXac (X=ZY).
    tok = Tokenizer.train("aaabdaaabac", vocab_size=256 + 3, special_tokens=[], progress=False)
    assert tok.merges == [(b"a", b"a"), (b"a", b"b"), (b"aa", b"ab")]
    assert [tok.id_to_token(i) for i in tok.encode("aaabdaaabac")] == ["aaab", "d", "aaab", "a", "c"]


def test_training_breaks_ties_towards_the_smallest_pair_of_ids():
    """README: ties go to the smallest (left id, right id) pair, so training is deterministic.
    In "zyzy abab" every merge is a tie, and the text's order is the opposite of the ids' order
    (GPT-2's byte ids: 'a' 64 < 'z' 89 < ' ' 220; merged tokens get 256, 257, ...)."""
    tok = Tokenizer.train("zyzy abab", vocab_size=256 + 5, special_tokens=[], progress=False)
    assert tok.merges == [
        (b"a", b"b"),  # count 2, as "zy": a < z
        (b"z", b"y"),  # count 2 (the rest are 1 now)
        (b" ", b"ab"),  # (220, 256): older than (256, 256) "ab ab" and (257, 257) "zy zy"
        (b"zy", b"zy"),  # (257, 257) before (258, 256) " ab ab": the first token decides
        (b" ab", b"ab"),
    ]


def test_a_tie_goes_to_the_smaller_left_id_even_when_the_pair_holds_the_newest_token():
    """A reader's audit: the docs said ties went to "the pair of older tokens"; the left id decides
    first. After a+b (256), (c, ab) = (66, 256) and (d, e) = (67, 68) tie at 2: (c, ab) wins."""
    tok = Tokenizer.train("cab\ncab\nde\nde\nab", vocab_size=256 + 2, special_tokens=[], progress=False)
    assert tok.merges == [(b"a", b"b"), (b"c", b"ab")]


def test_training_is_deterministic_and_transformers_agrees(tmp_path):
    from transformers import GPT2TokenizerFast

    text = real_text()
    a = Tokenizer.train(text, vocab_size=600, progress=False)
    b = Tokenizer.train(text, vocab_size=600, progress=False)
    assert a.merges == b.merges and a.vocab == b.vocab
    assert a.vocab_size == 600 and a.eos_token_id == 599
    assert [a.vocab[bytes([b])] for b in BYTE_TO_CHAR] == list(range(256))  # GPT-2's byte ids
    a.save_pretrained(tmp_path)
    hf = GPT2TokenizerFast.from_pretrained(tmp_path)
    assert hf.eos_token_id == a.eos_token_id
    sample = text[:20000] + "".join(TRICKY)
    ids = a.encode(sample)
    assert hf.encode(sample) == ids
    assert a.decode(ids) == sample
    assert Tokenizer.from_pretrained(tmp_path).encode(sample) == ids


def test_training_cuts_out_special_tokens_and_reads_files(tmp_path):
    path = tmp_path / "data.txt"
    path.write_text(f"ab ab ab{EOT}ab cd{EOT}", encoding="utf-8")
    tok = Tokenizer.train([path], vocab_size=260, progress=False)
    assert all(EOT.encode() not in t for t in tok.vocab)  # no merge reaches into the special token
    assert tok.encode(f"ab{EOT}", allowed_special="all") == [tok.vocab[b"ab"], tok.eos_token_id]
    small = Tokenizer.train("ab", vocab_size=1000, progress=False)  # runs out of pairs: stops early
    assert small.merges == [(b"a", b"b")] and small.vocab_size == 256 + 1 + 1


def test_a_special_token_that_begins_another_does_not_hide_it():
    """Specials are matched longest first: with <|x|> and <|x|>2, "<|x|>2" is the second one, not
    the first followed by "2" (an alternation tries its branches in order)."""
    tok = Tokenizer.train("hello world", vocab_size=260, special_tokens=["<|x|>", "<|x|>2"], progress=False)
    assert tok.encode("<|x|>2<|x|>", allowed_special="all") == [tok.special_tokens["<|x|>2"], tok.special_tokens["<|x|>"]]


def test_training_cuts_out_the_longer_of_two_special_tokens_as_encoding_does():
    """Training cut special tokens out in the order given, so with <|a|> listed first it read
    "<|a|>x" as <|a|> then the text "x", and learned the merge (x, q) from it, where encode finds
    <|a|>x whole. Both now cut longest first (pretokenize.special_token_regex): "p" and "q" are
    left apart, with no pair to merge."""
    with pytest.warns(UserWarning, match="no more pairs to merge"):
        tok = Tokenizer.train("p<|a|>xq", vocab_size=256 + 2 + 1, special_tokens=["<|a|>", "<|a|>x"], progress=False)
    assert tok.merges == []


def test_training_counts_each_file_piece_by_piece_and_learns_the_same_merges(tmp_path, monkeypatch, capsys):
    """An audit: training split each whole file at once (every chunk a str of its own, all at once:
    a 33 MB corpus peaked at 540 MB), and read every file before counting any, with no bar. Now
    split_text never sees more than a piece, the merges are those of the whole text (the cuts are
    safe: never inside a chunk, nor inside a special token holding a newline), and a bar counts bytes."""
    import minigpt.bpe_train as bpe_train

    special = "<|a\nb|>"
    files = [tmp_path / "a.txt", tmp_path / "b.txt"]
    files[0].write_text(real_text()[:60000], encoding="utf-8")
    files[1].write_text((f"x{special}y\n{EOT}".join(TRICKY) + "\n") * 20, encoding="utf-8")
    whole = Tokenizer.train(files, 700, [EOT, special], progress=False)  # pieces of 1M characters: each file is one

    longest = []
    monkeypatch.setattr(bpe_train, "split_text", lambda text: longest.append(len(text)) or split_text(text))
    monkeypatch.setattr(bpe_train, "COUNT_PIECE_CHARS", 500)
    pieces = Tokenizer.train(files, 700, [EOT, special])
    assert len(longest) > 100 and max(longest) < 2000  # a piece: 500 characters and on to the line's end
    assert pieces.merges == whole.merges and pieces.vocab == whole.vocab
    assert pieces.special_tokens == whole.special_tokens
    bar = capsys.readouterr().err.split("\r")  # the bar's states: the last one's bytes are the files' bytes
    assert re.match(r"counting chunks: 100%.* (\S+)/\1 .*B/s", [line for line in bar if line.startswith("counting")][-1])


def test_training_on_a_list_of_texts_says_that_a_list_holds_file_paths(tmp_path):
    """An audit: `Tokenizer.train(["the cat sat", "a dog"], ...)` failed with a bare FileNotFoundError
    (each text read as a path). A missing "path" with a space or a line break in it is more likely
    a text: the error says so, and how to train on texts; every file is checked before any is read."""
    with pytest.raises(FileNotFoundError, match=r"training file the cat sat does not exist; it looks like a text, not "
                                                r"a path: a list is read as file paths. To train on texts in memory, "
                                                r"pass them as one str, e.g. '\\n'.join\(texts\)"):
        Tokenizer.train(["the cat sat", "a dog"], 300, progress=False)
    with pytest.raises(FileNotFoundError, match=r"training file .*missing.txt does not exist$"):
        Tokenizer.train([tmp_path / "missing.txt"], 300, progress=False)
    (tmp_path / "a.txt").write_bytes(b"caf\xe9")  # not UTF-8: refused only once read, but the missing file first
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        Tokenizer.train([tmp_path / "a.txt", tmp_path / "missing.txt"], 300, progress=False)
    with pytest.raises(IsADirectoryError, match=r"training file .* is a directory; name the text files in it"):
        Tokenizer.train([tmp_path], 300, progress=False)
    assert Tokenizer.train("\n".join(["the cat sat", "a dog"]), 260, progress=False).vocab_size == 260


def naive_merge(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """The textbook merge, a symbol at a time, left to right ("aaa" → "aa" "a"): the reference for bpe_train's."""
    out, i = [], 0
    while i < len(ids):
        if ids[i:i + 2] == list(pair):
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


@settings(max_examples=300, deadline=None)
@given(words=st.lists(st.lists(st.integers(0, 2), max_size=12), min_size=1, max_size=6),
       freqs=st.lists(st.integers(1, 3), min_size=6, max_size=6),
       merges=st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4), st.integers(0, 5)), max_size=8))
@example(words=[[0, 1, 0, 1]], freqs=[1] * 6, merges=[(0, 1, 3)])  # "a b a b" → "X X": (b, a) lost once
@example(words=[[0, 0, 0, 0], [0, 0, 0]], freqs=[2, 1] + [1] * 4, merges=[(0, 0, 3), (3, 3, 4)])  # "aaaa" → "XX" → "Y"
@example(words=[[3, 0, 1, 3]], freqs=[1] * 6, merges=[(0, 1, 3)])  # a reused id: 3 already stands in the word
def test_incremental_pair_counts_equal_a_full_recount_after_every_merge(words, freqs, merges):
    """train_bpe updates the pair counts only around each merge site (it used to subtract and re-add
    every pair of every word that held the merged pair). After every merge, the counts kept so must
    equal a recount of the rewritten words, on chunks with repeats ("abab", "aaaa") and merges into
    an id that already stands in the word (two merges giving the same bytes share one id)."""
    from minigpt.bpe_train import count_pairs, merge_words

    freqs = freqs[:len(words)]
    pair_counts, where = count_pairs(words, freqs)
    for left, right, new_id in merges:
        expected = [naive_merge(word, (left, right), new_id) for word in words]
        for pair, change in merge_words(words, freqs, where, (left, right), new_id).items():
            pair_counts[pair] += change
        assert words == expected
        assert {p: c for p, c in pair_counts.items() if c} == count_pairs(words, freqs)[0]
        assert all(w in where[p] for w, word in enumerate(words) for p in zip(word, word[1:]))  # no word lost from the index


def cjk_like_text(n_lines: int, *, punctuation: bool, seed: int = 0) -> str:
    """Chinese-like text as the audit built it: characters drawn from 3,000 (Zipf-like weights), no
    spaces, so a line is one long pre-tokenized chunk unless punctuation cuts it every 8-30 characters."""
    rng = random.Random(seed)
    chars = [chr(0x4E00 + i) for i in range(3000)]
    weights = [1 / (i + 1) for i in range(3000)]
    def clause() -> str:
        return "".join(rng.choices(chars, weights, k=rng.randint(8, 30))) + (rng.choice("，。、！？") if punctuation else "")
    return "".join("".join(clause() for _ in range(rng.randint(3, 10))) + "\n" for _ in range(n_lines))


@pytest.mark.parametrize("punctuation", [True, False], ids=["clauses", "long-lines"])
def test_training_learns_hugging_face_bpe_trainers_merges_on_cjk_like_text(punctuation):
    """The incremental pair updates must not change a single merge: on Chinese-like text (3-byte
    characters, lines of up to 300 characters as one chunk) with repeats, the merges are those of
    Hugging Face's BpeTrainer, in order."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import models, pre_tokenizers, trainers

    text = cjk_like_text(60, punctuation=punctuation) + "abab aaaa ababab aaaaaaa\n" * 5
    hf = HFTokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.train_from_iterator([text], trainers.BpeTrainer(vocab_size=700, special_tokens=[EOT], show_progress=False,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    hf_merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in json.loads(hf.to_str())["model"]["merges"]]
    ours = Tokenizer.train(text, vocab_size=700, progress=False)
    assert len(ours.merges) > 300
    assert [(token_to_str(a), token_to_str(b)) for a, b in ours.merges] == hf_merges


def test_a_merge_changes_only_the_pair_counts_beside_its_sites(monkeypatch):
    """A merge rewrote every chunk holding the pair symbol by symbol in Python, and re-counted all
    its pairs: on one 50 kB chunk of ASCII without a space, 300 merges took 90-140x as long as one
    (each merge cost as much as the first count). Now it updates the pairs beside its sites only:
    at most 5 a site (the left neighbour, the pair and the right neighbour go; two pairs with the
    new token come). Counted, not timed, so a busy machine cannot fail it."""
    import minigpt.bpe_train as bpe

    rng = random.Random(0)
    chunk = "".join(rng.choices([chr(c) for c in range(33, 127)], k=50_000))
    changes, merge_words = [], bpe.merge_words

    def counted(words, freqs, where, pair, new_id):
        sites = sum(len(bpe.merge_sites(words[w], pair)) for w in where.get(pair, ()))
        delta = merge_words(words, freqs, where, pair, new_id)
        changes.append((len(delta), sites))
        return delta

    monkeypatch.setattr(bpe, "merge_words", counted)
    bpe.train_bpe({chunk: 1}, 256 + 300, progress=False)
    assert len(changes) == 300 and all(0 < changed <= 5 * sites for changed, sites in changes), changes[:5]
    assert sum(changed for changed, _ in changes) < 20_000  # a full recount: ~8,000 distinct pairs each merge


# ---- bulk path ----


def test_encode_batch_is_identical_to_encode(tok, monkeypatch):
    docs = [real_text(), "", "short", *TRICKY, "x\n" * 5000 + "end"]
    expected = [tok.encode(d) for d in docs]
    assert tok.encode_batch(docs) == expected  # small input: encoded in this process
    assert tok.encode_batch(d for d in docs) == expected  # a generator is read once, not emptied by a check
    # Force the process pool on this small input, and cut documents into small pieces.
    monkeypatch.setattr(batchmod, "MIN_PARALLEL_CHARS", 0)
    monkeypatch.setattr(batchmod, "PIECE_CHARS", 1000)
    fresh = Tokenizer.from_pretrained(GPT2_DIR)
    assert fresh.encode_batch(docs, num_workers=2) == expected  # this process + 1 forked worker
    assert fresh.encode_batch(docs, num_workers=3) == expected


def test_full_chunk_cache_is_cleared_not_wrong(monkeypatch):
    monkeypatch.setattr(tokmod._ChunkCache, "MAX_ENTRIES", 8)
    small_cache = Tokenizer.from_pretrained(GPT2_DIR)
    text = real_text()[:20000]
    assert small_cache.encode(text) == Tokenizer.from_pretrained(GPT2_DIR).encode(text)
    assert len(small_cache._cache) <= 8


def test_safe_pieces_do_not_change_ids(tok):
    text = "a \n\nb\n c\n\n\n  d.\nee\n" * 300
    pieces = pretokenize.safe_pieces(text, 50)
    assert len(pieces) > 10 and "".join(pieces) == text
    assert sum((tok.encode(p) for p in pieces), []) == tok.encode(text)


# ---- model input ----


def test_call_pads_truncates_and_masks(tok):
    texts = ["Hello world", "Hi"]
    hello, hi = tok.encode(texts[0]), tok.encode(texts[1])
    right = tok(texts, padding=True, return_tensors="pt")
    assert right["input_ids"].dtype == torch.long and right["input_ids"].shape == (2, len(hello))
    assert right["input_ids"][1].tolist() == hi + [50256] * (len(hello) - len(hi))
    assert right["attention_mask"].tolist() == [[1] * len(hello), [1] * len(hi) + [0] * (len(hello) - len(hi))]
    left = tok(texts, padding=True, padding_side="left", return_tensors="pt")
    assert left["input_ids"][1].tolist() == [50256] * (len(hello) - len(hi)) + hi
    assert left["attention_mask"][1].tolist() == [0] * (len(hello) - len(hi)) + [1] * len(hi)
    cut = tok(texts, padding="max_length", truncation=True, max_length=1, return_tensors="pt")
    assert cut["input_ids"].tolist() == [hello[:1], hi[:1]]
    # padding=True pads to the longest text, max_length only caps it (HF's meaning): not to max_length.
    capped = tok(texts, padding=True, truncation=True, max_length=len(hello) + 5)
    assert capped["input_ids"] == right["input_ids"].tolist() and capped["attention_mask"] == right["attention_mask"].tolist()
    assert tok("Hello world") == {"input_ids": hello, "attention_mask": [1] * len(hello)}
    with pytest.raises(ValueError, match="padding=True"):
        tok(texts, return_tensors="pt")
    with pytest.raises(ValueError, match="padding_side"):
        tok(texts, padding=True, padding_side="middle")
    with pytest.raises(ValueError, match="max_length"):  # no length known (the shipped GPT-2's is 1024)
        Tokenizer(tok.vocab, tok.merges, tok.special_tokens)(texts, truncation=True)
    assert tok(texts, truncation="do_not_truncate", max_length=1)["input_ids"] == [hello, hi]  # HF's name for False
    for strategy in ("longest_first", "only_first"):  # with one text per row, both cut it
        assert tok(texts, truncation=strategy, max_length=1)["input_ids"] == [hello[:1], hi[:1]]
    with pytest.raises(ValueError, match="truncation must be"):
        tok(texts, truncation="only_second", max_length=1)


def test_padding_and_truncation_sides_are_attributes_as_in_transformers(tmp_path):
    """Bug guarded: `tok.padding_side = "left"` (the transformers habit, before generation) was
    silently ignored: tok(texts, padding=True) still padded on the right. Both sides are now
    attributes, checked when set, that tok(...) uses unless given padding_side; saved and read back."""
    from transformers import AutoTokenizer, GPT2TokenizerFast

    mine, hf = Tokenizer.from_pretrained(GPT2_DIR), GPT2TokenizerFast.from_pretrained(GPT2_DIR)
    hf.pad_token = hf.eos_token
    texts = ["Hello world, again", "Hi"]
    for side in ("left", "right", "left"):
        mine.padding_side = mine.truncation_side = hf.padding_side = hf.truncation_side = side
        for kwargs in (dict(padding=True), dict(truncation=True, max_length=2), dict(padding=True, padding_side="right")):
            assert mine(texts, **kwargs) == dict(hf(texts, **kwargs)), (side, kwargs)
    assert mine(texts, padding=True)["input_ids"][1][-1] == mine.encode("Hi")[-1]  # left: the last column is real
    mine.save_pretrained(tmp_path)
    for again in (Tokenizer.from_pretrained(tmp_path), AutoTokenizer.from_pretrained(tmp_path)):
        assert (again.padding_side, again.truncation_side) == ("left", "left")
    for name in ("padding_side", "truncation_side"):
        with pytest.raises(ValueError, match=f"{name} must be 'left' or 'right', got 'lft'"):
            setattr(mine, name, "lft")
    assert Tokenizer.from_pretrained(GPT2_DIR).padding_side == "right"



def test_truncation_side_per_call_and_unknown_keywords_name_what_call_takes(tok):
    """tok(texts, truncation_side="left") raised model_inputs()' bare 'unexpected keyword argument'
    (so did pad_to_multiple_of=8): truncation_side is taken per call, as padding_side is, and leaves
    the attribute alone; other keywords are a TypeError naming Tokenizer.__call__ and what it takes."""
    texts = ["Hello world, again", "Hi"]
    left = tok(texts, truncation=True, max_length=2, truncation_side="left")
    assert left["input_ids"] == [tok.encode(texts[0])[-2:], tok.encode(texts[1])] and tok.truncation_side == "right"
    with pytest.raises(ValueError, match="truncation_side must be 'left' or 'right', got 'lft'"):
        tok(texts, truncation=True, max_length=2, truncation_side="lft")
    for keyword in ("pad_to_multiple_of", "return_attention_mask"):
        with pytest.raises(TypeError, match=rf"^Tokenizer.__call__\(\) got unexpected keyword argument\(s\) '{keyword}'; "
                                            "it takes texts and padding, padding_side, truncation_side, truncation, max_length"):
            tok(texts, padding=True, **{keyword: 8})


@pytest.mark.parametrize("method, home", [(Tokenizer.__call__, batchmod.model_inputs),
                                          (Tokenizer.encode_batch, batchmod.encode_batch)])
def test_call_and_encode_batch_show_the_keywords_they_take(method, home):
    """An audit: help(tok) and editors showed `(texts, **kwargs)` for both, hiding padding,
    max_length, num_workers, ...: they spell out the keywords of the function they hand over to,
    with its defaults and annotations (Tokenizer.__call__ also passes other keywords on, to be refused by name)."""
    def keywords(function):
        return [(p.name, p.default, p.annotation) for p in inspect.signature(function).parameters.values()
                if p.kind in (p.KEYWORD_ONLY, p.VAR_KEYWORD)]
    assert keywords(method) == keywords(home) and len(keywords(home)) >= 3


# ---- teaching hook and CLI ----


def test_show_work_ends_in_encode_ids(tok):
    work = tok.encode_show_work("Hello lower")
    assert [w["chunk"] for w in work] == ["Hello", " lower"]
    assert work[1]["steps"][0] == ["Ġ", "l", "o", "w", "e", "r"]  # starts from bytes
    assert work[1]["steps"][-1] == ["Ġlower"]  # ends as one token
    ranks = work[1]["ranks"]
    assert len(ranks) == len(work[1]["steps"]) - 1 and ranks == sorted(ranks)  # replays training's order
    assert sum((w["ids"] for w in work), []) == tok.encode("Hello lower")
    hello = tok.encode_show_work(" hello")[0]  # the docstring's example, GPT-2's own merge order
    assert hello["steps"][1:3] == [["Ġ", "he", "l", "l", "o"], ["Ġ", "he", "ll", "o"]]
    assert hello["ranks"] == [2, 41, 83, 5712, 23492] and hello["ids"] == [23748]


def test_show_work_gives_encodes_ids_for_special_tokens_when_allowed(tok, capsys):
    """`minigpt tokenize TEXT` encodes `<|endoftext|>` as id 50256 (allowed_special="all"), but
    `--show-work TEXT` split it into plain-text chunks ('<|', 'endoftext', '|>'): one command, two
    tokenizations of the same text. Now --show-work shows the ids the plain view prints."""
    text = "a<|endoftext|>b"
    work = tok.encode_show_work(text, allowed_special="all")
    assert sum((w["ids"] for w in work), []) == tok.encode(text, allowed_special="all") == [64, 50256, 65]
    assert work[1] == {"chunk": "<|endoftext|>", "steps": [["<|endoftext|>"]], "ranks": [], "ids": [50256],
                       "special": True}
    assert sum((w["ids"] for w in tok.encode_show_work(text)), []) == tok.encode_ordinary(text)  # the default: plain text
    assert climod.main(["--show-work", text]) == 0
    out = capsys.readouterr().out
    assert "[50256]" in out and "'endoftext'" not in out


def test_cli_encodes_and_trains(tmp_path, capsys):
    assert climod.main(["Hello world"]) == 0
    assert "[15496, 995]" in capsys.readouterr().out  # GPT-2's ids for "Hello world"
    assert climod.main(["--show-work", " lower"]) == 0
    assert "Ġlower" in capsys.readouterr().out
    data = tmp_path / "data.txt"
    data.write_text("the cat sat on the mat " * 50, encoding="utf-8")
    assert climod.main(["--train", str(data), "--vocab-size", "262", "--out", str(tmp_path / "tok")]) == 0
    assert Tokenizer.from_pretrained(tmp_path / "tok").vocab_size == 262
    # --special reaches the trainer (it was not a flag of `tokenize --train`), and so does its default.
    assert climod.main(["--train", str(data), "--vocab-size", "270", "--special", "<|endoftext|>", "<|sep|>",
                        "--out", str(tmp_path / "tok2")]) == 0
    two = Tokenizer.from_pretrained(tmp_path / "tok2")
    assert two.special_tokens == {"<|endoftext|>": 268, "<|sep|>": 269} and two.vocab_size == 270
    assert climod.main(["--train", str(data), "--out", str(tmp_path / "tok3")]) == 0  # the default size, 4096:
    assert "the text has no more pairs to merge" in capsys.readouterr().err  # ... far more than this text has


def test_cli_training_warns_when_prepare_could_not_use_the_vocabulary(tmp_path, capsys):
    """An audit: `tokenize --train --vocab-size 70000` trained without a word, and `minigpt prepare`
    then refused the tokenizer (its token files are uint16: 65,536 ids at most). Warned before
    training now (not refused: a tokenizer has other uses); 65,536 itself fits."""
    data = tmp_path / "data.txt"
    data.write_text("the cat sat on the mat " * 20, encoding="utf-8")
    assert climod.main(["--train", str(data), "--vocab-size", "65537", "--out", str(tmp_path / "big")]) == 0
    assert ("tokenize --train: warning: --vocab-size 65,537 is over 65,536: `minigpt prepare` cannot use this tokenizer "
            "(its token files store uint16 ids); training it anyway") in capsys.readouterr().err
    assert climod.train_main([str(data), "--vocab-size", "65536", "--out", str(tmp_path / "fits")]) == 0
    assert "warning" not in capsys.readouterr().err


def test_cli_training_refuses_to_replace_a_tokenizer_unless_told(tmp_path, capsys):
    """Found by an audit: `tokenize --train --out DIR` replaced the vocab.json + merges.txt in DIR,
    a model's directory too, which left the model with a vocabulary it was not trained on."""
    data = tmp_path / "data.txt"
    data.write_text("the cat sat on the mat " * 50, encoding="utf-8")
    model_dir = tmp_path / "model"
    Tokenizer.from_pretrained("gpt2").save_pretrained(model_dir)
    before = (model_dir / "vocab.json").read_bytes()
    for main in (climod.main, climod.train_main):  # `minigpt tokenize --train` and scripts/train_tokenizer.py
        assert main(["--train" if main is climod.main else "--vocab-size=262", str(data), "--out", str(model_dir)]) == 2
        assert f"{model_dir} already holds a tokenizer (vocab.json, merges.txt)" in capsys.readouterr().err
        assert (model_dir / "vocab.json").read_bytes() == before
    assert climod.main(["--train", str(data), "--vocab-size", "262", "--out", str(model_dir), "--overwrite"]) == 0
    assert Tokenizer.from_pretrained(model_dir).vocab_size == 262


def test_cli_errors_name_the_problem(tmp_path, capsys):
    assert climod.main(["--tokenizer", str(tmp_path / "nope"), "hi"]) == 2
    assert f"tokenizer directory {tmp_path / 'nope'} does not exist" in capsys.readouterr().err
    assert climod.main(["--train", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "tok")]) == 2
    assert "missing.txt" in capsys.readouterr().err
    (tmp_path / "a.txt").write_text("hello there")
    assert climod.main(["--train", str(tmp_path / "a.txt"), "--vocab-size", "100", "--out", str(tmp_path / "tok")]) == 2
    assert "vocab_size must be an int >= 256 + 1" in capsys.readouterr().err
    assert climod.main(["--train", str(tmp_path / "a.txt"), "--vocab-size", "1000", "--out", str(tmp_path / "tok")]) == 0
    assert "no more pairs to merge" in capsys.readouterr().err
    assert climod.main(["--train", str(tmp_path / "a.txt"), "--out", str(tmp_path / "a.txt")]) == 2  # before training
    assert f"--out {tmp_path / 'a.txt'} is a file" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # a training flag without --train would be silently ignored
        climod.main(["--vocab-size", "1000", "hi"])
    assert "--vocab-size, --special, --eos, --out and --overwrite go with --train" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # ... and so would a text to encode with --train
        climod.main(["some text", "--train", str(tmp_path / "a.txt"), "--out", str(tmp_path / "nope")])
    assert "--train learns a new tokenizer from FILES: a text to encode, --show-work, --json and --tokenizer" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # ... and a tokenizer to encode with, which --train would not read
        climod.main(["--train", str(tmp_path / "a.txt"), "--tokenizer", "gpt2", "--out", str(tmp_path / "nope")])
    assert "--tokenizer (the one to encode with) go without --train" in capsys.readouterr().err
    assert not (tmp_path / "nope").exists()


def test_training_on_a_file_that_is_not_utf8_names_it(tmp_path):
    (tmp_path / "latin1.txt").write_bytes("café au lait\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1.txt is not UTF-8 text: byte 0xe9 at offset 3"):
        Tokenizer.train([tmp_path / "latin1.txt"], vocab_size=300)


def test_training_with_special_tokens_given_as_one_string_is_refused_before_training():
    """Bug guarded: special_tokens="<s>" became ["<", "s", ">"], refused only after the whole
    training, as a token "spelled like the regular token 27"."""
    with pytest.raises(TypeError, match=r"got the string '<s>': pass \['<s>'\]"):
        Tokenizer.train("hello world " * 50, 300, special_tokens="<s>", progress=False)


def test_training_on_an_empty_text_is_refused_when_merges_are_asked_for(tmp_path):
    """An audit: an empty file trained "successfully" into a byte-level tokenizer with no merges,
    with only a note. Merges asked from no text mean a wrong file: an error naming it. A byte-level
    tokenizer (no merges asked) still trains from nothing."""
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(ValueError, match=r"training text \(.*empty.txt\) is empty \(special tokens aside\): there is "
                                         r"nothing to learn 43 merges from"):
        Tokenizer.train([tmp_path / "empty.txt"], vocab_size=300, progress=False)
    with pytest.raises(ValueError, match="the training text is empty"):
        Tokenizer.train(EOT * 3, vocab_size=300, progress=False)
    assert Tokenizer.train("", vocab_size=257, progress=False).vocab_size == 257


@pytest.mark.parametrize("special", ["Ġ", "a", "Ġb"])
def test_a_special_token_spelled_like_a_regular_one_is_refused(special, monkeypatch):
    """vocab.json would hold the same key twice, and the saved tokenizer would not load again. One
    spelled like a byte's token is refused before training (a tokenizer audit: after it, on a text
    with every "a" cut out); one like a merged token ("Ġb", " b") only once the merges are known."""
    import minigpt.bpe_train as bpe_train

    if len(special) == 1:
        monkeypatch.setattr(bpe_train, "train_bpe", lambda *a, **k: pytest.fail("trained before the check"))
    with pytest.raises(ValueError, match=f"special token '{special}' is spelled like the regular token"):
        Tokenizer.train("a b a b\n" * 10, vocab_size=300, special_tokens=[special])


def test_training_on_bytes_says_to_pass_a_str():
    """A tokenizer audit: bytes were iterated as file names, "expected str, bytes or os.PathLike object, not int"."""
    with pytest.raises(TypeError, match="the training text is bytes: pass it as a str"):
        Tokenizer.train(b"hello world", 300, progress=False)


def test_show_work_and_training_take_text_with_surrogates_as_encode_does(tok):
    text = "a\udcffb \ud83d\ude00"  # a lone surrogate (a non-UTF-8 byte from sys.argv), then a pair
    assert [i for w in tok.encode_show_work(text) for i in w["ids"]] == tok.encode(text)
    trained = Tokenizer.train(text * 20, vocab_size=260)
    assert trained.decode(trained.encode(text)) == "a\ufffdb \U0001f600"


def test_call_edge_cases_give_hf_shapes_and_the_right_advice(tok):
    empty = tok([], padding=True, return_tensors="pt")
    assert empty["input_ids"].shape == empty["attention_mask"].shape == (0, 0)
    with pytest.raises(ValueError, match="pass truncation=True too: padding to max_length never cuts"):
        tok(["hello there world", "a"], padding="max_length", max_length=2, return_tensors="pt")


def test_the_process_pool_encodes_special_tokens_as_asked(tok, monkeypatch):
    """Guards against the forked workers not getting encode's allowed_special / disallowed_special
    (only this process's share honouring them): `minigpt prepare` encodes a big corpus with
    allowed_special="all" on every core, and its workers would then raise on <|endoftext|> (or,
    with disallowed_special=(), encode it differently from this process's pieces)."""
    monkeypatch.setattr(batchmod, "MIN_PARALLEL_CHARS", 0)  # force the pool on a small input
    monkeypatch.setattr(batchmod, "PIECE_CHARS", 20)
    docs = ["a story.\nThe end.<|endoftext|>Next one.\n" * 40, "x<|endoftext|>y\n" * 30]
    for kwargs in (dict(allowed_special="all"), dict(allowed_special={"<|endoftext|>"}), dict(disallowed_special=())):
        expected = [tok.encode(d, **kwargs) for d in docs]
        assert tok.encode_batch(docs, num_workers=2, **kwargs) == expected
        assert tok.encode_batch(docs, num_workers=3, **kwargs) == expected
    assert expected[0].count(50256) == 0  # disallowed_special=(): plain text, no special id


def test_a_special_token_holding_a_newline_is_never_cut_across_processes(tok, monkeypatch):
    """Guards against spreading a document over processes by cutting it at line breaks when a
    special token's own text holds one (chat formats: "<|im\\nend|>"): a cut inside it would
    encode its halves as plain text instead of the special id."""
    special = "<|im\nend|>"
    chat = Tokenizer(tok.vocab, tok.merges, {"<|endoftext|>": 50256, special: 50257})
    monkeypatch.setattr(batchmod, "MIN_PARALLEL_CHARS", 0)
    monkeypatch.setattr(batchmod, "PIECE_CHARS", 8)
    docs = [f"user says hi{special}assistant answers{special}" * 50, f"a{special}b" * 50]
    expected = [chat.encode(d, allowed_special="all") for d in docs]
    assert [ids.count(50257) for ids in expected] == [100, 50]
    assert chat.encode_batch(docs, allowed_special="all", num_workers=2) == expected


def test_an_added_token_is_its_id_everywhere_and_never_cut_across_processes(tok, monkeypatch):
    """An added token (a word, not special) is its id in encode_ordinary and in encode_batch's
    pool, even one holding a newline, which a cut at a line break could split in two."""
    word = "ROM\nEO"
    added = Tokenizer(tok.vocab, tok.merges, {"<|endoftext|>": 50256}, added_tokens={word: 50257})
    monkeypatch.setattr(batchmod, "MIN_PARALLEL_CHARS", 0)
    monkeypatch.setattr(batchmod, "PIECE_CHARS", 8)
    docs = [f"x{word}y\n" * 50, "no word here\n" * 10]
    expected = [added.encode_ordinary(d) for d in docs]
    assert expected[0][:4] == [87, 50257, 88, 198] and expected[0].count(50257) == 50
    assert added.encode_batch(docs, num_workers=2) == expected == [added.encode(d) for d in docs]
    assert added.decode(expected[0]) == docs[0] and added.id_to_token(50257) == word


@pytest.mark.parametrize("added, problem", [
    ({"<|endoftext|>": 50257}, "'<|endoftext|>' is both a special token and an added one"),
    ({"Ġthe": 50257}, "added token 'Ġthe' is spelled like the regular token 262"),
    ({"ROMEO": 50258}, r"token ids must be exactly 0..50257"),
])
def test_added_tokens_that_cannot_be_told_apart_are_refused(tok, added, problem):
    with pytest.raises(ValueError, match=problem):
        Tokenizer(tok.vocab, tok.merges, {"<|endoftext|>": 50256}, added_tokens=added)


@pytest.mark.parametrize("kind", ["special", "added"])
def test_an_empty_special_or_added_token_is_refused(tok, kind):
    """Bug (a security audit): the empty string was taken as a special (or added) token, and the
    empty text matches everywhere, so encode put its id between every two characters ('Hello' →
    ['', 'H', '', 'e', ...]) and `minigpt prepare` wrote it as half of every token file."""
    tables = {"special_tokens": {"<|endoftext|>": 50256}, "added_tokens": {}}
    tables[f"{kind}_tokens"][""] = 50257
    with pytest.raises(ValueError, match=f"the {kind} token with id 50257 is the empty string, which would match "
                                         "between every two characters"):
        Tokenizer(tok.vocab, tok.merges, **tables)


def test_tokenizer_json_keeps_special_tokens_added_beside_the_bpe_vocabulary(tmp_path):
    """Bug guarded: tokenizer.json's `added_tokens` (special tokens a user added, e.g. a chat
    marker, which `tokenizers` keeps outside model.vocab) were ignored, so a tokenizer saved by
    transformers 5 lost them: "<|user|>" became ordinary text and vocab_size shrank by one."""
    from transformers import GPT2TokenizerFast

    hf = GPT2TokenizerFast.from_pretrained(GPT2_DIR)
    hf.add_special_tokens({"additional_special_tokens": ["<|user|>"]})
    hf.save_pretrained(tmp_path)
    for name in ("vocab.json", "merges.txt"):  # read tokenizer.json alone, as transformers 5 writes it
        (tmp_path / name).unlink(missing_ok=True)
    tok = Tokenizer.from_pretrained(tmp_path)
    assert tok.special_tokens == {"<|endoftext|>": 50256, "<|user|>": 50257}
    assert tok.encode("hi<|user|>", allowed_special="all") == hf.encode("hi<|user|>") == [5303, 50257]


def test_pair_counts_weigh_each_chunk_by_how_often_it_occurs():
    """Mutant B1: train_bpe counted each distinct chunk's pairs once (`+= 1`), not `+= freq`.
    In "ab cd cd cd" the chunk " cd" occurs 3 times, so (c, d) (count 3) must merge first; counted
    per distinct chunk every pair has count 1 and the tie goes to (a, b)."""
    tok = Tokenizer.train("ab cd cd cd", vocab_size=256 + 2, special_tokens=[], progress=False)
    assert tok.merges == [(b"c", b"d"), (b" ", b"cd")]


def test_special_tokens_are_cut_out_of_the_training_text():
    """Mutant B6: Tokenizer.train skipped cutting the special tokens out of the text, so BPE learned
    merges inside "<|endoftext|>" ("en", "ext", ...). With it cut out only "ab" is left to merge."""
    tok = Tokenizer.train(f"ab{EOT}" * 10 + "ab", vocab_size=256 + 6, progress=False)
    assert tok.merges == [(b"a", b"b")]
    assert tok.special_tokens == {EOT: 257}


def test_special_with_no_values_trains_without_special_tokens(tmp_path):
    """Mutants B7/T1: `--special` given with no values means no special tokens; the trainer (or
    `minigpt tokenize --train`, which forwards it) fell back to the default <|endoftext|>."""
    from minigpt import tokenizer_cli

    data = tmp_path / "data.txt"
    data.write_text("the cat sat on the mat " * 20, encoding="utf-8")
    assert tokenizer_cli.train_main([str(data), "--vocab-size", "260", "--special", "--out", str(tmp_path / "a")]) == 0
    a = Tokenizer.from_pretrained(tmp_path / "a")
    assert a.special_tokens == {} and a.vocab_size == 260
    assert tokenizer_cli.main(["--train", str(data), "--vocab-size", "260", "--special", "--out", str(tmp_path / "b")]) == 0
    b = Tokenizer.from_pretrained(tmp_path / "b")
    assert b.special_tokens == {} and b.vocab_size == 260


def test_no_note_about_running_out_of_pairs_when_the_vocab_is_full(tmp_path, capsys):
    """Mutant B8: the "no more pairs to merge" note compared merges with vocab_size - 256, forgetting
    the special tokens, so a tokenizer trained to its full size was said to have run out of pairs."""
    from minigpt import tokenizer_cli

    data = tmp_path / "data.txt"
    data.write_text("the cat sat on the mat " * 20, encoding="utf-8")
    assert tokenizer_cli.train_main([str(data), "--vocab-size", "262", "--out", str(tmp_path / "a")]) == 0
    assert Tokenizer.from_pretrained(tmp_path / "a").vocab_size == 262
    assert "no more pairs" not in capsys.readouterr().err


def test_a_stale_heap_entry_with_an_old_higher_count_is_skipped():
    """Mutant B10: the heap's stale check became `pair not in pair_counts`, so a pair whose count
    dropped (c,b: 2 → 1 once "bb" took a b in " cbbbc") was merged on its old count.
    After (b, b), every pair counts 1 and the tie goes to (b, c): b 65 < c 66."""
    tok = Tokenizer.train("cb cbbbc", vocab_size=256 + 2, special_tokens=[], progress=False)
    assert tok.merges == [(b"b", b"b"), (b"b", b"c")]


def test_show_work_with_train_is_refused(tmp_path, capsys):
    """Mutant T3: `tokenize --train ... --show-work` was accepted and --show-work silently ignored."""
    (tmp_path / "a.txt").write_text("hello there")
    with pytest.raises(SystemExit):
        climod.main(["--train", str(tmp_path / "a.txt"), "--show-work", "--out", str(tmp_path / "tok")])
    assert "--show-work" in capsys.readouterr().err
    assert not (tmp_path / "tok").exists()


def test_encode_turns_special_token_text_into_its_id(capsys):
    """Mutant T4: `minigpt tokenize` encoded without allowed_special="all", so a text holding
    <|endoftext|> raised instead of showing GPT-2's id 50256."""
    assert climod.main([f"Hi{EOT}"]) == 0
    assert "50256" in capsys.readouterr().out


def test_special_without_train_is_refused(capsys):
    """Mutant T5: `--special` without --train was silently ignored instead of a usage error."""
    with pytest.raises(SystemExit):
        climod.main(["--special", "<|sep|>", "--", "hi"])
    assert "go with --train" in capsys.readouterr().err


def test_an_empty_text_argument_is_encoded_not_read_from_stdin(monkeypatch, capsys):
    """Mutant T6: `minigpt tokenize ""` read standard input instead of encoding the empty text."""
    monkeypatch.setattr("sys.stdin", io.StringIO("from stdin"))
    assert climod.main([""]) == 0
    out = capsys.readouterr().out
    assert "0 characters → 0 tokens" in out and "from stdin" not in out


def test_tokenize_json_prints_one_object_for_scripts(capsys):
    """A shell user's audit: `minigpt tokenize TEXT` printed its tokens as a Python list's repr
    (`['it', "'s"]`), which no JSON reader takes, and had no --json; and "1 characters"."""
    assert climod.main(["--json", 'it\'s "q" é']) == 0
    assert json.loads(capsys.readouterr().out) == {"ids": [270, 338, 366, 80, 1, 38251],
                                                   "tokens": ["it", "'s", "Ġ\"", "q", "\"", "ĠÃ©"], "characters": 10}
    assert climod.main(["x"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "1 character → 1 token"
    for refused in (["--json", "--show-work", "x"], ["--json", "--train", "a.txt", "--out", "tok"]):
        with pytest.raises(SystemExit):
            climod.main(refused)
        assert "--json" in capsys.readouterr().err


def test_tokenize_reads_standard_input_as_utf8_and_names_other_bytes(tok, monkeypatch, capsys):
    """An audit: `minigpt tokenize` read stdin in the locale's encoding: Latin-1 bytes were encoded
    as U+FFFD without a word under C.UTF-8, and were a raw UnicodeDecodeError traceback with
    PYTHONIOENCODING=utf-8. Stdin is UTF-8 now, whatever the locale, and other bytes an error line."""
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"caf\xe9\n"), encoding="utf-8", errors="replace"))
    assert climod.main([]) == 2
    assert capsys.readouterr().err.endswith("tokenize: error: standard input is not UTF-8 text: byte 0xe9 at offset 3; "
                                            "convert it first (e.g. iconv -f latin1 -t utf-8)\n")
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO("café\r\n".encode()), encoding="latin-1"))
    assert climod.main([]) == 0  # a locale that is not UTF-8 does not turn "é" into "Ã©"
    assert f"ids:    {tok.encode('café' + chr(10))}" in capsys.readouterr().out


def test_tokenize_says_stdin_reads_line_ends_as_prepare_does_and_an_argument_is_as_given(tok, monkeypatch, capsys):
    """An audit: "a\r\nb" gave 4 ids as an argument and 3 from a pipe, and --help said neither.
    Standard input is read as prepare reads a file (\r\n and \r become \n), an argument as given,
    and --help says so."""
    assert climod.main(["a\r\nb"]) == 0
    assert f"ids:    {tok.encode('a' + chr(13) + chr(10) + 'b')}" in capsys.readouterr().out
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"a\r\nb\rc"), encoding="utf-8"))
    assert climod.main([]) == 0
    assert f"ids:    {tok.encode('a' + chr(10) + 'b' + chr(10) + 'c')}" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        climod.main(["--help"])
    assert " ".join(capsys.readouterr().out.split()).count(
        "text to encode, as given (default: read standard input, as prepare reads a file: UTF-8, with \\r\\n and a lone "
        "\\r as \\n)") == 1


def test_call_refuses_padding_options_it_cannot_honour(tok):
    with pytest.raises(ValueError, match="max_length must be a positive int, got 0"):
        tok(["a"], truncation=True, max_length=0)
    unknown_length = Tokenizer(tok.vocab, tok.merges, tok.special_tokens)  # no model_max_length (the shipped GPT-2's is 1024)
    with pytest.raises(ValueError, match=r"^padding='max_length' needs max_length=N"):
        unknown_length(["a"], padding="max_length")  # no length to pad to
    assert len(tok(["a"], padding="max_length")["input_ids"][0]) == 1024  # the shipped GPT-2's, as transformers pads
    # An audit: HF's common call said "padding='max_length'", which the caller never passed.
    with pytest.raises(ValueError, match=r"^truncation=True needs max_length=N .*config.n_positions"):
        unknown_length(["a", "bb"], padding=True, truncation=True)
    with pytest.raises(ValueError, match="padding must be"):
        tok(["a", "bb"], padding="left")  # a padding_side given as padding: not silently unpadded


def test_two_threads_encoding_batches_at_once_each_get_their_own_ids(tok, monkeypatch):
    """Bug guarded: encode_batch handed its job (the tokenizer, the special tokens allowed) to its
    forked workers through a module global, so a second thread setting it before the first one's
    workers were forked got its ids encoded with the other's settings: silently wrong ids. Here
    both threads meet where the old code had set the global and not yet forked, as a race can."""
    monkeypatch.setattr(batchmod, "MIN_PARALLEL_CHARS", 0)  # force the pool on a small input
    monkeypatch.setattr(batchmod, "PIECE_CHARS", 20)
    meet, get_context = threading.Barrier(2, timeout=30), multiprocessing.get_context

    def get_context_once_both_are_here(method: str):
        meet.wait()
        return get_context(method)

    monkeypatch.setattr(multiprocessing, "get_context", get_context_once_both_are_here)
    docs = ["a story.<|endoftext|>The end.\n" * 40] * 2
    asks = [dict(allowed_special="all"), dict(disallowed_special=())]  # <|endoftext|> as 50256, or as plain text
    got = [None, None]

    def encode(i: int) -> None:
        try:
            got[i] = tok.encode_batch(docs, num_workers=2, **asks[i])
        except Exception as e:  # a thread's exception would only be printed
            got[i] = e

    threads = [threading.Thread(target=encode, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert got == [[tok.encode(d, **ask) for d in docs] for ask in asks]


def test_one_threads_interrupted_encode_batch_leaves_another_threads_workers_alone(tok, monkeypatch, tmp_path):
    """An audit: a Ctrl-C in one thread's encode_batch killed every child this process had gained
    since that call's pool was made, the workers of another thread's encode_batch started
    meanwhile too, whose call then failed with BrokenProcessPool. Here thread A is interrupted
    (KeyboardInterrupt in its own share of the work) once thread B's pool is up, B's workers wait
    until A's cleanup is over, and B must still get its ids."""
    monkeypatch.setattr(batchmod, "MIN_PARALLEL_CHARS", 0)  # force the pool on a small input
    monkeypatch.setattr(batchmod, "PIECE_CHARS", 20)
    docs = {"A": ["a story.\n" * 40], "B": ["the end.\n" * 40]}
    want_b = [tok.encode(d) for d in docs["B"]]
    encode, parent = tok.encode_ordinary, os.getpid()
    a_working, b_workers_up = threading.Event(), threading.Event()
    a_cleaned_up = tmp_path / "a-cleaned-up"  # a file, which B's forked workers see too

    def encode_in_step(piece: str) -> list[int]:
        if os.getpid() != parent:  # a worker: B's hold their pieces until A's cleanup is over
            deadline = time.monotonic() + 30
            while "end" in piece and not a_cleaned_up.exists() and time.monotonic() < deadline:
                time.sleep(0.01)
        elif threading.current_thread().name == "A":  # A's own share: Ctrl-C, once B's pool is up
            a_working.set()
            b_workers_up.wait(30)
            raise KeyboardInterrupt
        else:  # B's own share: its workers were started when its pieces were handed out
            b_workers_up.set()
        return encode(piece)

    monkeypatch.setattr(tok, "encode_ordinary", encode_in_step)
    got = {}

    def run(name: str) -> None:
        if name == "B":
            a_working.wait(30)  # B's pool starts after A's: its workers are children A's call did not have
        try:
            got[name] = tok.encode_batch(docs[name], num_workers=2)
        except BaseException as e:  # a thread's exception would only be printed
            got[name] = e
        if name == "A":
            a_cleaned_up.touch()

    threads = [threading.Thread(target=run, args=(name,), name=name) for name in "AB"]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert isinstance(got["A"], KeyboardInterrupt), got["A"]
    assert got["B"] == want_b, got["B"]


def test_kill_own_workers_takes_python_3_14s_public_kill_workers_where_there_is_one():
    """A review: the workers were found through the executor's private `_processes` alone, though
    Python 3.14 has the public `kill_workers()`; it is now taken where present, `_processes` before
    3.14 (None once the pool is shut down: nothing to kill)."""
    class Worker:
        killed = False

        def kill(self):
            self.killed = True

    class Pool314:  # 3.14's executor, as kill_own_workers sees it: its record is no business of ours
        called = False

        def kill_workers(self):
            self.called = True

    class OlderPool:
        def __init__(self, processes):
            self._processes = processes

    pool = Pool314()
    batchmod.kill_own_workers(pool)
    assert pool.called
    worker = Worker()
    batchmod.kill_own_workers(OlderPool({123: worker}))
    assert worker.killed
    batchmod.kill_own_workers(OlderPool(None))  # shut down already: no error


_KILLED_WORKER = """
import os, signal, sys
import minigpt.tokenizer_batch as batchmod
from minigpt import Tokenizer
batchmod.MIN_PARALLEL_CHARS = 0
tok, parent = Tokenizer.from_pretrained("gpt2"), os.getpid()
encode = tok.encode_ordinary
def encode_or_die(piece):
    if os.getpid() != parent and "KILL" in piece:
        os.kill(os.getpid(), signal.SIGKILL)  # what the out-of-memory killer does
    return encode(piece)
tok.encode_ordinary = encode_or_die
try:
    tok.encode_batch(["hello world\\n" * 2000, "KILL\\n" * 2000, "bye\\n" * 2000] * 4, num_workers=3)
except Exception as e:
    sys.exit(f"{type(e).__name__}: {e}")
"""


def test_a_worker_killed_for_memory_is_an_error_naming_num_workers_not_a_hang():
    """Bug guarded: multiprocessing.Pool replaced a worker that died (the OOM killer's SIGKILL) and
    waited forever for the ids it had taken, so encode_batch (and `minigpt prepare`) hung. Run in a
    subprocess with a timeout, so that the bug coming back fails this test instead of hanging the suite."""
    done = subprocess.run([sys.executable, "-c", _KILLED_WORKER], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("BrokenProcessPool: encode_batch: a worker process died (killed, e.g. by the "
                                  "out-of-memory killer)"), done.stderr
    assert "num_workers=N" in done.stderr


_PARENT_KILLED = """
import random, string
from minigpt import Tokenizer
rng = random.Random(0)  # made-up words: no chunk cache hit, so the workers are busy for seconds
words = ["".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 9))) for _ in range(300_000)]
text = "\\n".join(" ".join(words[i : i + 10]) for i in range(0, len(words), 10))
Tokenizer.from_pretrained("gpt2").encode_batch([text], num_workers=3)
"""


def _children(pid: int) -> list[int]:
    """The processes whose parent is `pid`, read from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "(command name)", which may hold spaces
        except OSError:  # ended while listed
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    """Whether `pid` runs: a zombie (ended, not yet reaped by whoever adopted it) does not."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's; elsewhere not covered")
def test_encode_batch_workers_die_with_a_killed_parent():
    """An audit: SIGKILL (or SIGTERM) of `minigpt prepare` left its forked encode workers waiting
    forever on the pool's pipes, ~290 MB each: a forked worker holds both ends of them, so it never
    sees end-of-file. Each worker now asks the kernel for SIGKILL when its parent dies (prctl
    PR_SET_PDEATHSIG). The parent here is killed while its workers encode."""
    parent = subprocess.Popen([sys.executable, "-c", _PARENT_KILLED], stderr=subprocess.DEVNULL)
    workers = []
    try:
        deadline = time.monotonic() + 60
        while len(workers) < 2 and time.monotonic() < deadline and parent.poll() is None:
            time.sleep(0.05)
            workers = _children(parent.pid)
        assert len(workers) == 2, f"the pool did not start 2 workers (found {workers}; parent exit {parent.poll()})"
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 5
        while any(map(_alive, workers)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(map(_alive, workers)), f"workers {[w for w in workers if _alive(w)]} outlived their killed parent"
    finally:
        parent.kill()
        for w in filter(_alive, workers):  # the bug back: end them here, not leave them hung
            os.kill(w, signal.SIGKILL)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the workers are forked")
def test_an_encode_worker_dies_of_sigterm_whatever_its_parents_handler():
    """A review: a worker forked under `minigpt prepare`'s SIGTERM handler (one that raises
    KeyboardInterrupt, as Ctrl-C) kept it, so the SIGTERM a ProcessPoolExecutor ends its broken
    pool's workers with did not end them, and prepare hung 2 runs in 6 in pool.shutdown. A worker
    now starts with the default action for SIGTERM and SIGHUP (here, in a forked child)."""
    read, write = os.pipe()
    before = signal.signal(signal.SIGTERM, lambda *args: None)  # a parent's handler
    try:
        child = os.fork()
        if child == 0:  # the worker: _start_worker as the pool runs it, then report
            try:
                batchmod._start_worker(len, os.getppid())
                os.write(write, b"1" if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL else b"0")
            finally:
                os._exit(0)
    finally:
        signal.signal(signal.SIGTERM, before)
    os.waitpid(child, 0)
    assert os.read(read, 1) == b"1", "the forked worker kept its parent's SIGTERM handler"
    os.close(read), os.close(write)


def test_encode_batch_with_one_worker_encodes_in_this_process(tok, monkeypatch):
    """num_workers=1 (a one-core machine) means no pool: a pool of 0 workers cannot start."""
    monkeypatch.setattr(batchmod, "MIN_PARALLEL_CHARS", 0)
    docs = ["Hello world", "x\n" * 50]
    assert tok.encode_batch(docs, num_workers=1) == [tok.encode(d) for d in docs]


def test_tokenizer_json_added_token_with_a_space_is_a_special_token(tmp_path):
    """An added token holding a character outside the byte-level alphabet (a plain space) is not
    a BPE token, so it must be read as a special token, not fail in str_to_token."""
    from transformers import GPT2TokenizerFast

    hf = GPT2TokenizerFast.from_pretrained(GPT2_DIR)
    hf.add_special_tokens({"additional_special_tokens": ["<|im end|>"]})
    hf.save_pretrained(tmp_path)
    for name in ("vocab.json", "merges.txt"):
        (tmp_path / name).unlink(missing_ok=True)
    assert Tokenizer.from_pretrained(tmp_path).special_tokens == {"<|endoftext|>": 50256, "<|im end|>": 50257}


def test_tokenizer_json_that_is_not_gpt2_style_bpe_is_refused_and_use_regex_defaults_on(tok, tmp_path):
    from transformers import GPT2TokenizerFast

    GPT2TokenizerFast.from_pretrained(GPT2_DIR).save_pretrained(tmp_path)
    for name in ("vocab.json", "merges.txt"):
        (tmp_path / name).unlink(missing_ok=True)
    data = json.loads((tmp_path / "tokenizer.json").read_text())
    data["pre_tokenizer"].pop("use_regex", None)  # older files leave it out: it defaults to on (GPT-2's regex)
    (tmp_path / "tokenizer.json").write_text(json.dumps(data))
    assert Tokenizer.from_pretrained(tmp_path).merges == tok.merges
    for part, change in (("model", {"type": "WordPiece"}), ("pre_tokenizer", {"use_regex": False})):
        (tmp_path / "tokenizer.json").write_text(json.dumps({**data, part: {**data[part], **change}}))
        with pytest.raises(ValueError, match="is not GPT-2-style byte-level BPE"):
            Tokenizer.from_pretrained(tmp_path)


def test_saved_tokenizer_config_names_the_added_special_tokens(tok, tmp_path):
    """transformers reads the extra special tokens from tokenizer_config.json: without them a
    reloaded "<|user|>" would be plain text to it."""
    from transformers import GPT2TokenizerFast

    chat = Tokenizer(tok.vocab, tok.merges, {"<|endoftext|>": 50256, "<|user|>": 50257})
    chat.save_pretrained(tmp_path)
    assert GPT2TokenizerFast.from_pretrained(tmp_path).encode("hi<|user|>") == [5303, 50257]


def test_train_cli_asks_for_4096_tokens_by_default(tmp_path, capsys):
    """Mutant R8-53: --vocab-size's default (4096, as its help and the README say) was another
    number. A small text runs out of pairs long before, and the note names the size asked for."""
    from minigpt import tokenizer_cli

    data = tmp_path / "data.txt"
    data.write_text("the cat sat on the mat " * 20, encoding="utf-8")
    assert tokenizer_cli.train_main([str(data), "--out", str(tmp_path / "a")]) == 0
    tok = Tokenizer.from_pretrained(tmp_path / "a")
    assert f"note: only {tok.vocab_size} of the 4096 tokens asked for" in capsys.readouterr().err


@pytest.mark.parametrize("merges", [["a b", "c d", "a b"], ["a b", "b c", "a b"], ["b c", "a b", "b c"]])
def test_a_merges_file_that_lists_a_pair_twice_encodes_as_hugging_face_does(tmp_path, merges):
    """Bug guarded: "no rank" was len(ranks), the number of *distinct* pairs. A merges.txt that
    lists a pair twice keeps the later rank (as HF's does), which then equalled "no rank", so that
    pair never merged. Short chunks (rescan) and long ones (heap) both."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import pre_tokenizers
    from tokenizers.models import BPE

    vocab = {pretokenize.BYTE_TO_CHAR[b]: b for b in range(256)}
    for merge in dict.fromkeys(merges):
        vocab[merge.replace(" ", "")] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    hf = HFTokenizer(BPE.from_file(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt")))
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok = Tokenizer.from_pretrained(tmp_path)
    for text in ("abcd ab", "abcabc", "x" * 20 + "abcd" * 5):
        assert tok.encode(text) == hf.encode(text).ids, text
    pair = merges[0].replace(" ", "")
    assert tok.encode(pair) == [vocab[pair]]  # the repeated pair merges


def test_train_warns_when_the_vocabulary_comes_out_smaller_and_names_a_file_passed_as_text(tmp_path, monkeypatch):
    """A str is the training text itself. `Tokenizer.train("data/a.txt", 300)` trained on those 10
    characters and silently returned 262 tokens: the API now warns, as the CLI's note does, and
    names the file the str looks like."""
    monkeypatch.chdir(tmp_path)
    Path("a.txt").write_text("the cat sat on the mat " * 20, encoding="utf-8")
    with pytest.warns(UserWarning, match=r"only \d+ of the 300 tokens asked for: the text has no more pairs to merge "
                                         r"\(a str is the text itself: to train on the file 'a.txt', pass Path\('a.txt'\)\)"):
        Tokenizer.train("a.txt", 300, progress=False)
    with pytest.warns(UserWarning, match=r"of the 4096 tokens asked for: the text has no more pairs to merge$"):
        Tokenizer.train(Path("a.txt"), 4096, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Tokenizer.train(Path("a.txt"), 260, progress=False)  # enough pairs: no warning


def test_show_work_shows_the_merges_of_a_long_chunk_too(tok):
    """Mutant R9-25: merge_chunk sent every chunk over _LONG_CHUNK bytes to the heap, which records
    no steps, also when show_work asked for them: a long word showed its bytes, then its ids."""
    word = " internationalization" + "internationalization" * 2  # 61 bytes: past _LONG_CHUNK
    assert len(word.encode()) > tokmod._LONG_CHUNK
    work = tok.encode_show_work(word)[0]
    assert len(work["steps"]) == len(work["ranks"]) + 1 > 2 and work["ranks"] == sorted(work["ranks"])
    assert work["ids"] == tok.encode(word) and len(work["steps"][-1]) == len(work["ids"])


def test_the_small_vocabulary_warning_points_at_the_callers_line_and_the_cli_note_survives_w_ignore(tmp_path, capsys):
    """Mutants R9-28/R9-29: the warning named a line inside minigpt (stacklevel 2), not the call of
    Tokenizer.train; and the CLI recorded it under the interpreter's filters, so `python -W ignore`
    (or PYTHONWARNINGS=ignore) lost the note about the smaller vocabulary."""
    (tmp_path / "a.txt").write_text("the cat sat on the mat " * 20, encoding="utf-8")
    with pytest.warns(UserWarning, match="of the 4096 tokens asked for") as record:
        Tokenizer.train(tmp_path / "a.txt", 4096, progress=False)
    assert [w.filename for w in record] == [__file__]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert climod.main(["--train", str(tmp_path / "a.txt"), "--out", str(tmp_path / "tok")]) == 0
    assert "note: only " in capsys.readouterr().err


def test_encode_batch_names_the_text_and_its_position_of_a_disallowed_special_token(tok, monkeypatch):
    """Guards against the process pool checking each piece, not each text: a worker's error gave
    the special token's position inside its piece (42232 for one at 600000) and no text's index."""
    monkeypatch.setattr(batchmod, "MIN_PARALLEL_CHARS", 0)  # force the pool on a small input
    monkeypatch.setattr(batchmod, "PIECE_CHARS", 20)
    doc = "a story.\nThe end.\n" * 40
    docs = ["hi", doc + EOT + doc]
    for workers in (1, 2):
        with pytest.raises(ValueError, match=re.escape(f"texts[1] contains the special token '{EOT}' at position {len(doc)}.")):
            tok.encode_batch(docs, num_workers=workers)
    assert tok.encode_batch(docs, num_workers=2, disallowed_special=()) == [tok.encode_ordinary(d) for d in docs]
    with pytest.raises(ValueError, match=re.escape(f"text contains the special token '{EOT}' at position 2.")):
        tok.encode("hi" + EOT)  # encode's own message is unchanged


def test_max_length_alone_truncates_as_in_transformers(tok):
    """Guards against `tok(texts, max_length=N)` ignoring max_length (truncation defaulted to
    False): transformers truncates when max_length is given without padding and truncation is
    left out, so such a batch came back longer than asked, e.g. past the model's block size."""
    from transformers import GPT2TokenizerFast

    hf = GPT2TokenizerFast.from_pretrained(GPT2_DIR)
    hf.pad_token = hf.eos_token
    texts = ["Hello world there", "Hi"]
    for kwargs in (dict(max_length=2), dict(max_length=2, truncation=False), dict(max_length=2, padding=True),
                   dict(max_length=4, padding="max_length"), dict()):
        assert tok(texts, **kwargs) == dict(hf(texts, **kwargs)), kwargs
    assert tok(texts, max_length=2)["input_ids"] == [tok.encode(texts[0])[:2], tok.encode(texts[1])]


@pytest.mark.parametrize("merges, vocab_edit, problem", [
    ("a b c", {}, r"merges.txt: merge 0 is 'a b c'; a merge is two tokens"),
    ("ab", {}, r"merges.txt: merge 0 is 'ab'; a merge is two tokens"),
    ("a b ", {}, r"merges.txt: merge 0 is 'a b '; a merge is two tokens"),
    ("€ a", {}, r"merges.txt: merge 0 is '€ a'; a merge is two tokens"),
    ("", {"a": 64.0}, r"vocab.json gives the token 'a' the id 64.0; ids must be integers"),
    ("", {"a": "64"}, r"vocab.json gives the token 'a' the id '64'; ids must be integers"),
])
def test_a_malformed_merge_or_id_is_named_with_its_file(tmp_path, merges, vocab_edit, problem):
    """Guards against Python's own errors for a damaged vocab.json / merges.txt ("too many values
    to unpack", KeyError: '€', "'<' not supported between 'str' and 'int'"), none naming a file,
    and against a float id (64.0) being taken: encode then returned [64.0, ...]."""
    vocab = {BYTE_TO_CHAR[b]: i for i, b in enumerate(BYTE_TO_CHAR)} | {"ab": 256}
    (tmp_path / "vocab.json").write_text(json.dumps(vocab | vocab_edit), encoding="utf-8")
    (tmp_path / "merges.txt").write_text(f"#version: 0.2\n{merges or 'a b'}\n", encoding="utf-8")
    with pytest.raises(ValueError, match=re.escape(problem)):
        Tokenizer.from_pretrained(tmp_path)


def test_saving_over_a_transformers_tokenizer_json_leaves_transformers_the_new_tokenizer(tok, tmp_path):
    """Guards against save_pretrained leaving a tokenizer.json (what transformers 5 saves) beside
    the new vocab.json + merges.txt: transformers reads tokenizer.json first, so AutoTokenizer
    loaded the old tokenizer (GPT-2's 'Hello world' = [15496, 995]) and gave other ids."""
    from transformers import AutoTokenizer, GPT2TokenizerFast

    GPT2TokenizerFast.from_pretrained(GPT2_DIR).save_pretrained(tmp_path)
    assert (tmp_path / "tokenizer.json").is_file()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        small = Tokenizer.train("the cat sat on the mat. " * 20, 280, progress=False)
    small.save_pretrained(tmp_path)
    assert AutoTokenizer.from_pretrained(tmp_path).encode("the cat sat") == small.encode("the cat sat")
    assert Tokenizer.from_pretrained(tmp_path).encode("the cat sat") == small.encode("the cat sat")


def _encode_in_a_daemon(tok: Tokenizer, docs: list[str], queue) -> None:
    try:
        queue.put(tok.encode_batch(docs, num_workers=2))
    except Exception as e:  # sent back to the test: a daemon's traceback would only be printed
        queue.put(f"{type(e).__name__}: {e}")


def test_encode_batch_in_a_daemon_process_encodes_in_that_process(tok, monkeypatch):
    """Guards against encode_batch starting a Pool inside a daemon process (a torch DataLoader
    worker, a Pool worker), which raised "daemonic processes are not allowed to have children"."""
    monkeypatch.setattr(batchmod, "MIN_PARALLEL_CHARS", 0)  # what would start the pool on a big batch
    docs = ["Hello world\n" * 20, "a daemon's text"]
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_encode_in_a_daemon, args=(tok, docs, queue), daemon=True)
    child.start()
    got = queue.get(timeout=60)
    child.join()
    assert got == [tok.encode(d) for d in docs]



def public_docstrings():
    """(name, docstring) of every public module, function, class and method of the minigpt package."""
    import minigpt

    for info in pkgutil.walk_packages(minigpt.__path__, "minigpt."):
        if info.name.endswith("__main__"):
            continue  # importing it runs the CLI
        try:
            module = importlib.import_module(info.name)
        except ImportError:
            if info.name.startswith("minigpt.kernels."):
                continue  # Triton kernels, where triton is not installed
            raise
        yield info.name, module.__doc__
        for name, obj in vars(module).items():
            if name.startswith("_") or getattr(obj, "__module__", None) != info.name:
                continue  # private, or imported from elsewhere
            yield f"{info.name}.{name}", obj.__doc__
            if inspect.isclass(obj):
                for attr, member in vars(obj).items():
                    if not attr.startswith("_") or attr in ("__init__", "__call__"):
                        yield f"{info.name}.{name}.{attr}", inspect.getdoc(member)


def test_no_docstring_holds_a_raw_carriage_return():
    """A "\\r\\n" written unescaped in a docstring holds a real carriage return and newline:
    help() broke the line there (Tokenizer.train, files.atomic_write_text and read_text_or_stdin
    did). Written "\\\\r\\\\n" in the source, help() shows the four characters."""
    docs = dict(public_docstrings())
    assert "minigpt.tokenizer.Tokenizer.train" in docs and "minigpt.files.atomic_write_text" in docs  # the walk reaches them
    assert [name for name, doc in docs.items() if doc and "\r" in doc] == []


def hf_names(tok) -> dict:
    """What a transformers user reads off a tokenizer: the special tokens by role, and the vocabulary."""
    names = ("bos_token", "bos_token_id", "eos_token", "eos_token_id", "unk_token", "unk_token_id", "pad_token",
             "pad_token_id", "all_special_tokens", "all_special_ids")
    return {name: getattr(tok, name) for name in names} | {"vocab": tok.get_vocab()}


def test_the_names_transformers_users_reach_for_match_gpt2_tokenizer_fast(tmp_path):
    """An audit: Tokenizer had eos_token_id and pad_token_id but no bos_token(_id), unk_token_id,
    all_special_ids / all_special_tokens, get_vocab or convert_ids_to_tokens / convert_tokens_to_ids.
    Each now gives what GPT2TokenizerFast gives on the shipped GPT-2 files, and on a tokenizer with
    a pad token, another special token and an added word, saved and read back by transformers."""
    from transformers import GPT2TokenizerFast

    mine, hf = Tokenizer.from_pretrained(GPT2_DIR), GPT2TokenizerFast.from_pretrained(GPT2_DIR)
    assert hf_names(mine) == hf_names(hf)
    ids = mine.encode("Hello world<|endoftext|> ROMEO", allowed_special="all")
    for args in ((ids,), (ids, True), (ids[1],), (50256, True), (torch.tensor(ids),)):
        assert mine.convert_ids_to_tokens(*args) == hf.convert_ids_to_tokens(*args), args
    assert mine.convert_ids_to_tokens(np.int64(995)) == "Ġworld"  # one id, as a NumPy int (transformers: a TypeError)
    tokens = ["Hello", "Ġworld", "<|endoftext|>", "Gworld", "€", " world", ""]  # the last four are no tokens: unk, 50256
    assert mine.convert_tokens_to_ids(tokens) == hf.convert_tokens_to_ids(tokens)
    assert [mine.convert_tokens_to_ids(t) for t in tokens] == [hf.convert_tokens_to_ids(t) for t in tokens]

    extended = Tokenizer(mine.vocab, mine.merges, {**mine.special_tokens, "<pad>": 50257, "<|sep|>": 50258},
                         added_tokens={"ROMEO": 50259}, pad_token="<pad>")
    extended.save_pretrained(tmp_path)
    assert hf_names(extended) == hf_names(GPT2TokenizerFast.from_pretrained(tmp_path))
    assert extended.all_special_tokens == ["<|endoftext|>", "<pad>", "<|sep|>"]
    assert extended.convert_ids_to_tokens([50259, 50258, 11], skip_special_tokens=True) == ["ROMEO", ","]


def test_token_lookups_name_what_has_no_token_where_there_is_no_unk_token():
    """Without <|endoftext|> (a tokenizer trained with no special tokens) there is no bos or unk
    token: a string that is no token is a KeyError naming it, not some id; an id outside the
    vocabulary is a ValueError (transformers gives None), and a token that is no string a TypeError."""
    tok = Tokenizer.train("ab ab ba abba " * 20, vocab_size=258, special_tokens=[], progress=False)
    assert (tok.bos_token, tok.bos_token_id, tok.unk_token_id, tok.all_special_ids) == (None, None, None, [])
    assert tok.convert_tokens_to_ids(tok.convert_ids_to_tokens([0, 257])) == [0, 257]
    with pytest.raises(KeyError, match="'Gab' is no token of this tokenizer, which has no unk_token"):
        tok.convert_tokens_to_ids(["a", "Gab"])
    with pytest.raises(ValueError, match=r"unknown token id 258; ids must be in \[0, 258\)"):
        tok.convert_ids_to_tokens(258)
    with pytest.raises(TypeError, match="tokens are strings .* got 5; for ids, convert_ids_to_tokens"):
        tok.convert_tokens_to_ids([5])


# Lines as corpora write them: trailing spaces before "\n" (SST-2, raw WikiText end every line in
# " \n"), "\r\n", tabs, no-break spaces, blank lines, and <|endoftext|> between documents.
_line_parts = st.sampled_from(["a", "b", "é", "日", "'s", ".", "1", " ", "  ", "\t", "\u00a0", "\n", "\r\n", " \n", "\n\n", EOT])
lines_text = st.lists(_line_parts, max_size=14).map("".join)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines_text)
def test_every_safe_cut_keeps_the_chunks_and_ids_of_the_whole_text(tok, enc, text):
    """SAFE_CUT also cuts before a "\\n" that a non-space follows (else a text whose lines end in " \\n"
    had no cut: prepare split its validation text mid-word and encoded a file in one piece). Guards
    that every such cut, and the old one after a non-space, splits into exactly the chunks of the
    whole text, and gives the ids tiktoken gives the whole, special tokens as plain text and as ids."""
    for cut in (m.start() for m in pretokenize.SAFE_CUT.finditer(text)):
        head, tail = text[:cut], text[cut:]
        assert split_text(head) + split_text(tail) == split_text(text), (text, cut)
        assert tok.encode_ordinary(head) + tok.encode_ordinary(tail) == enc.encode_ordinary(text), (text, cut)
        if pretokenize.is_safe_cut(text, cut, [EOT]):  # what encoding with special tokens cuts at
            ids = tok.encode(head, allowed_special="all") + tok.encode(tail, allowed_special="all")
            assert ids == enc.encode(text, allowed_special="all"), (text, cut)


def test_no_safe_cut_after_whitespace_before_a_newline_that_a_special_token_follows(tok, enc):
    """A special token is cut out before the text is split, so the "\\n" before it ends a stretch of
    text, where `\\s+(?!\\S)` takes " \\n\\n" whole: cut before the last "\\n", the ids would change.
    Guards safe_cut_at (and so safe_pieces, prepare's val split) against cutting there."""
    text = "a \n\n<|endoftext|>b\nc"
    assert pretokenize.SAFE_CUT.match(text, 3) and not pretokenize.is_safe_cut(text, 3, [EOT])
    assert tok.encode(text[:3], allowed_special="all") + tok.encode(text[3:], allowed_special="all") != enc.encode(text, allowed_special="all")
    assert pretokenize.safe_cut_at(text, 1, [EOT]) == 18  # the next one, after "b"
    assert pretokenize.safe_cut_at(text, 1) == 3  # without the special token, "<" is text: safe
    pieces = pretokenize.safe_pieces(text, 1, [EOT])
    assert "".join(pieces) == text
    assert sum((tok.encode(p, allowed_special="all") for p in pieces), []) == enc.encode(text, allowed_special="all")


def test_a_byte_order_mark_is_not_trained_on_nor_encoded_from_standard_input(tmp_path, monkeypatch, capsys):
    """An audit: a UTF-8 byte order mark (Notepad) was stripped by `generate --prompt-file` but read
    as text by `tokenize --train` (its bytes counted as a chunk) and by `tokenize` on standard input
    (ids 171, 119, 123 first). files.read_text and read_text_or_stdin drop it now."""
    text = "the cat sat on the mat\n" * 40
    (tmp_path / "bom.txt").write_bytes(b"\xef\xbb\xbf" + text.encode())
    (tmp_path / "plain.txt").write_text(text)
    with pytest.warns(UserWarning, match="no more pairs to merge"):  # every pair merged: the mark's would show
        trained = [Tokenizer.train([tmp_path / name], 280, [], progress=False) for name in ("bom.txt", "plain.txt")]
    assert trained[0].merges == trained[1].merges
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"\xef\xbb\xbfHello world")))
    assert climod.main([]) == 0
    assert "ids:    [15496, 995]" in capsys.readouterr().out


def test_cli_training_names_the_eos_with_eos_and_warns_without_one(tmp_path, capsys):
    """An audit: `tokenize --train --special "<s>" "</s>"` saved a tokenizer with no EOS without a
    word, and `minigpt prepare` then joined the files with no boundary (a model trained on them never
    stops). --eos names which special token ends a document; with none, a warning says what follows."""
    data = tmp_path / "data.txt"
    data.write_text("the cat sat on the mat " * 50, encoding="utf-8")
    train = ["--train", str(data), "--vocab-size", "270", "--special", "<s>", "</s>"]
    assert climod.main([*train, "--eos", "</s>", "--out", str(tmp_path / "eos")]) == 0
    assert "warning" not in capsys.readouterr().err
    named = Tokenizer.from_pretrained(tmp_path / "eos")
    assert (named.eos_token, named.eos_token_id, named.pad_token_id) == ("</s>", 269, 269)
    assert climod.main([*train, "--out", str(tmp_path / "none")]) == 0
    assert ("tokenize --train: warning: the tokenizer has no end-of-document token (eos_token): `minigpt prepare` joins "
            "the files with no boundary between them, and a model trained on them never learns to stop; name one of "
            "--special with --eos TOKEN") in capsys.readouterr().err
    assert Tokenizer.from_pretrained(tmp_path / "none").eos_token is None
    assert climod.train_main([str(data), "--vocab-size", "270", "--out", str(tmp_path / "default")]) == 0
    assert "warning" not in capsys.readouterr().err  # <|endoftext|>, the default special token, is the EOS
    assert Tokenizer.from_pretrained(tmp_path / "default").eos_token == "<|endoftext|>"
    assert climod.main([*train, "--eos", "<|endoftext|>", "--out", str(tmp_path / "bad")]) == 2  # before training
    assert "--eos <|endoftext|> is not one of the special tokens (<s> </s>); add it to --special" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    with pytest.raises(SystemExit):  # without --train it would be silently ignored
        climod.main(["--eos", "</s>", "hi"])


def test_cli_training_says_what_it_saved_in_words_and_the_next_command(tmp_path, capsys):
    """An audit: `tokenize --train` ended with a repr ("saved Tokenizer(vocab_size=262, merges=6,
    special_tokens={...}) to tok") and no word of what to run next."""
    data = tmp_path / "data.txt"
    data.write_text("the cat sat on the mat " * 50, encoding="utf-8")
    assert climod.main(["--train", str(data), "--vocab-size", "263", "--out", str(tmp_path / "tok")]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[-1] == (f"saved a tokenizer of 263 tokens (6 merges; special tokens: <|endoftext|>; end of "
                                    f"document: <|endoftext|>) to {tmp_path / 'tok'}")
    assert err.splitlines()[-1] == f"next: minigpt prepare FILES --tokenizer {tmp_path / 'tok'} --out DATA_DIR"  # a message


def test_tokenize_train_s_next_command_quotes_its_out(tmp_path, capsys):
    """A portability audit: `--out 'my tok'` printed "next: minigpt prepare FILES --tokenizer my tok",
    which the shell reads as two arguments. Quoted now, as train's own hint is (shlex.quote)."""
    (tmp_path / "a.txt").write_text("the cat sat on the mat\n" * 50)
    assert climod.main(["--train", str(tmp_path / "a.txt"), "--vocab-size", "270", "--out", str(tmp_path / "my tok")]) == 0
    assert f"next: minigpt prepare FILES --tokenizer '{tmp_path}/my tok' --out DATA_DIR" in capsys.readouterr().err


def test_a_missing_path_with_a_space_gets_no_advice_for_texts(tmp_path, capsys):
    """A portability audit: `minigpt tokenize --train "my data/input.txt"`, a file that does not
    exist, was said to "look like a text, not a path ... pass them as one str, e.g.
    '\\n'.join(texts)": Python advice for a CLI user, about a plausible path. That hint is for a str
    that reads like a text (a line break; a space with no folder and no extension) only."""
    assert climod.main(["--train", "my data/input.txt", "--vocab-size", "300", "--out", str(tmp_path / "tok")]) == 2
    assert capsys.readouterr().err.endswith("error: training file my data/input.txt does not exist\n")
    for path in ("my data/input.txt", "notes 2024.txt", Path("the cat sat")):
        with pytest.raises(FileNotFoundError, match=r"does not exist$"):
            Tokenizer.train([path], 300, progress=False)
    for text in ("The cat sat on the mat.", "the cat\nsat"):
        with pytest.raises(FileNotFoundError, match="it looks like a text, not a path"):
            Tokenizer.train([text], 300, progress=False)


def test_the_chunk_cache_stays_under_its_byte_budget(enc, monkeypatch):
    """An audit of a long-lived service: the chunk cache was capped by its number of entries alone,
    so 20,000 distinct 2,000-letter words kept 270 MB (the cap allowed ~5.7 GB). The kept chunks'
    bytes stay under MAX_BYTES (made small here), a clear() by hand included; the ids are
    tiktoken's either way."""
    gpt2 = Tokenizer.from_pretrained(GPT2_DIR)  # its own cache, which the budget below clears
    monkeypatch.setattr(tokmod._ChunkCache, "MAX_BYTES", 1000)
    rng = random.Random(0)
    for _ in range(200):
        text = " ".join("".join(rng.choices(string.ascii_lowercase, k=rng.randint(1, 400))) for _ in range(5))
        assert gpt2.encode(text) == enc.encode(text)
        assert gpt2._cache.held_bytes == sum(len(chunk.encode()) for chunk in gpt2._cache) <= 1000
    gpt2._cache.clear()
    assert gpt2._cache.held_bytes == 0


@pytest.mark.skipif(sys.version_info < (3, 11), reason="typing.get_overloads is Python 3.11's")
def test_convert_tokens_and_ids_are_typed_by_what_they_are_given(tok):
    """An audit: convert_ids_to_tokens and convert_tokens_to_ids were typed as returning unions
    (`str | list[str]`), so README's `tok.convert_ids_to_tokens([15496, 995])[0]` needed a cast for
    a type checker. Overloads now say one id gives a token and several a list (and the reverse)."""
    import typing

    assert tok.convert_ids_to_tokens(15496) == "Hello"
    assert tok.convert_ids_to_tokens([15496, 995]) == ["Hello", "Ġworld"]
    assert tok.convert_tokens_to_ids("Hello") == 15496
    assert tok.convert_tokens_to_ids(["Hello", "Ġworld"]) == [15496, 995]

    def results(f):
        return [o.__annotations__["return"] for o in typing.get_overloads(f)]
    # Several ids first: a tensor, typed as neither one id nor several, is taken as several (tests/test_typing.py).
    assert results(Tokenizer.convert_ids_to_tokens) == ["list[str]", "str"]
    assert results(Tokenizer.convert_tokens_to_ids) == ["int", "list[int]"]


def test_public_signatures_name_their_types():
    """An audit: public signatures had a bare `os.PathLike` (PathLike of what?), an untyped `dict`
    from `tok(...)` and perplexity's untyped `model`: a type checker's Unknown in user code."""
    import typing

    from minigpt import GPT
    from minigpt.evaluate import perplexity
    from minigpt.generation import TokenizerLike, stream

    assert typing.get_type_hints(Tokenizer.__call__)["return"] == dict[str, typing.Any]
    assert typing.get_type_hints(Tokenizer.from_pretrained)["path"] == str | os.PathLike[str]
    assert typing.get_type_hints(GPT.from_pretrained)["path"] == str | os.PathLike[str]
    assert typing.get_type_hints(perplexity)["model"] is GPT
    assert typing.get_type_hints(stream)["tokenizer"] == TokenizerLike | None


def test_cli_training_whose_save_fails_is_one_error_line(tmp_path, capsys, monkeypatch):
    """A deployment audit: a tokenizer whose save failed after training (a full disk, a folder made
    read-only meanwhile) ended `tokenize --train` in an OSError traceback, exit 1, where every
    other failure of the command is one line and exit 2."""
    import errno

    def full_disk(self, path):  # as files.atomic_path fails: naming the file that failed, never its temp
        raise OSError(errno.ENOSPC, "No space left on device", str(path / "vocab.json"))

    monkeypatch.setattr(Tokenizer, "save_pretrained", full_disk)
    data = tmp_path / "data.txt"
    data.write_text("the cat sat on the mat " * 20, encoding="utf-8")
    assert climod.main(["--train", str(data), "--vocab-size", "262", "--out", str(tmp_path / "tok")]) == 2
    err = capsys.readouterr().err
    assert (f"tokenize --train: error: cannot save the tokenizer to --out {tmp_path / 'tok'}: vocab.json: No space left on device\n"
            in err and "Traceback" not in err and ".tmp" not in err), err
