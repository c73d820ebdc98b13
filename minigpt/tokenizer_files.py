"""Tokenizer files: Hugging Face's GPT-2 layout and tiktoken's ranks, read and written.

Where it sits: disk ↔ `Tokenizer` (its from_pretrained / save_pretrained / from_tiktoken call these).

The formats, all storing the same two things (the vocabulary and the merges, in rank order):
- vocab.json: {"Ġthe": 262, ...}, each token written in GPT-2's byte-level alphabet (see
  minigpt/pretokenize.py's `bytes_to_unicode`); merges.txt: "#version: 0.2", then one merge per line ("Ġ t"), rank 0 first.
- tokenizer.json: the `tokenizers` library's single file; transformers 5 saves only this one.
- gpt2.tiktoken: "base64(token bytes) rank" per line. It has no merges: they are recovered.
"""
from __future__ import annotations

import base64
import json
import os
from pathlib import Path

from minigpt.config import gpt2_name
from minigpt.files import atomic_write_text, read_json, read_text
from minigpt.pretokenize import CHAR_TO_BYTE, str_to_token, token_to_str
from minigpt.tokenizer import GPT2_DIR, Tokenizer

# What a Tokenizer is built from: token bytes → id, merges in rank order, special text → id.
TokenizerParts = tuple[dict[bytes, int], list[tuple[bytes, bytes]], dict[str, int]]


def read_hf(path: str | os.PathLike) -> TokenizerParts:
    """vocab.json + merges.txt from a directory, or else its tokenizer.json. A GPT-2 size by name
    ("gpt2", ..., "gpt2-xl", when no such directory exists) means the GPT-2 files shipped in
    checkpoints/gpt2: the four share one tokenizer. Tokens that are neither a single byte nor made
    by a merge are the special tokens (GPT-2: <|endoftext|> = 50256)."""
    path = GPT2_DIR if gpt2_name(path) else Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"tokenizer directory {path} does not exist" if not path.exists() else
                                f"{path} is a file; a tokenizer is a directory with vocab.json + merges.txt")
    config = path / "tokenizer_config.json"
    if config.is_file() and isinstance(settings := read_json(config), dict) and settings.get("add_prefix_space"):
        raise ValueError(f"{config} sets add_prefix_space: transformers puts a space before the text ('Hello' → "
                         "' Hello'), which minigpt does not do, so the ids would differ; set it to false")
    if (path / "vocab.json").is_file() and (path / "merges.txt").is_file():
        vocab_file, merges_file = path / "vocab.json", path / "merges.txt"
        str_vocab = read_json(vocab_file)
        if not isinstance(str_vocab, dict):
            raise ValueError(f"{path / 'vocab.json'} must map each token to its id (a JSON object), got {type(str_vocab).__name__}")
        lines = read_text(path / "merges.txt").splitlines()
        str_merges = [line.split(" ") for line in lines if line and not line.startswith("#version")]
    elif (path / "tokenizer.json").is_file():
        vocab_file = merges_file = path / "tokenizer.json"
        str_vocab, str_merges = _read_tokenizer_json(path / "tokenizer.json")
    else:
        for have, lacks in (("vocab.json", "merges.txt"), ("merges.txt", "vocab.json")):
            if (path / have).is_file():
                raise FileNotFoundError(f"{path} has {have} but no {lacks}: a tokenizer needs both (or a tokenizer.json)")
        raise FileNotFoundError(f"{path} holds neither vocab.json + merges.txt nor tokenizer.json")
    for s, i in str_vocab.items():  # a float id (64.0) would pass the constructor's check, then come out of encode
        if not isinstance(i, int) or isinstance(i, bool):
            raise ValueError(f"{vocab_file} gives the token {s!r} the id {i!r}; ids must be integers")
    for rank, merge in enumerate(str_merges):  # else Python's "too many values to unpack" or KeyError: '€'
        if not (isinstance(merge, list) and len(merge) == 2 and all(isinstance(t, str) and t for t in merge)
                and set("".join(merge)) <= CHAR_TO_BYTE.keys()):
            raise ValueError(f"{merges_file}: merge {rank} is {' '.join(map(str, merge)) if isinstance(merge, list) else merge!r}; "
                             "a merge is two tokens in GPT-2's byte-level alphabet, one space between ('Ġ t')")
    merges = [(str_to_token(a), str_to_token(b)) for a, b in str_merges]
    made = {bytes([b]) for b in range(256)} | {a + b for a, b in merges}
    vocab, special = {}, {}
    for s, i in str_vocab.items():
        token = str_to_token(s) if all(c in CHAR_TO_BYTE for c in s) else None
        if token in made:
            vocab[token] = i
        else:
            special[s] = i
    return vocab, merges, special


def _read_tokenizer_json(file: Path) -> tuple[dict[str, int], list[list[str]]]:
    """vocab (added tokens included) and merges from a `tokenizers` file, if it is GPT-2-style BPE."""
    data = read_json(file)
    model, pre = data.get("model") or {}, data.get("pre_tokenizer") or {}
    if model.get("type") != "BPE" or pre.get("type") != "ByteLevel" or pre.get("add_prefix_space") or not pre.get("use_regex", True):
        raise ValueError(
            f"{file} is not GPT-2-style byte-level BPE (model BPE, ByteLevel pre-tokenizer with GPT-2's "
            f"regex, add_prefix_space false); got model {model.get('type')!r}, pre_tokenizer {pre}"
        )
    vocab = model["vocab"] | {t["content"]: t["id"] for t in data.get("added_tokens", [])}
    merges = [m.split(" ") if isinstance(m, str) else m for m in model["merges"]]  # "a b" in older files
    return vocab, merges


def write_hf(tok: Tokenizer, path: str | os.PathLike) -> None:
    """vocab.json + merges.txt (GPT2TokenizerFast opens them) and tokenizer_config.json naming the
    special tokens. Each file is written atomically. A tokenizer.json already there (transformers 5
    saves one) is removed: transformers reads it before vocab.json, so it would load the old tokenizer."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    vocab = {tok.id_to_token(i): i for i in range(tok.vocab_size)}
    merges = "".join(f"{token_to_str(a)} {token_to_str(b)}\n" for a, b in tok.merges)
    eos = "<|endoftext|>" if tok.eos_token_id is not None else None
    config = {
        "tokenizer_class": "GPT2Tokenizer",
        "add_prefix_space": False,
        "bos_token": eos,
        "eos_token": eos,
        "unk_token": eos,
        "additional_special_tokens": [s for s in tok.special_tokens if s != eos],
    }
    atomic_write_text(path / "vocab.json", json.dumps(vocab))  # ASCII-escaped, byte for byte like GPT-2's file
    atomic_write_text(path / "merges.txt", "#version: 0.2\n" + merges)
    atomic_write_text(path / "tokenizer_config.json", json.dumps(config, indent=2) + "\n")
    (path / "tokenizer.json").unlink(missing_ok=True)


def read_tiktoken(file: str | os.PathLike, special_tokens: dict[str, int] | None = None) -> TokenizerParts:
    """tiktoken's ranks; the default special token is <|endoftext|> right after them (GPT-2: 50256).

    The merges are recovered by replaying BPE on each token's bytes with only lower-ranked tokens
    allowed: the last step joins exactly two parts, and that pair is the token's merge."""
    ranks: dict[bytes, int] = {}
    for line in Path(file).read_text(encoding="ascii").splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        parts = [bytes([b]) for b in token]
        while len(parts) > 2:
            pair_ranks = [ranks.get(a + b, rank) for a, b in zip(parts, parts[1:])]
            i = min(range(len(pair_ranks)), key=pair_ranks.__getitem__)
            if pair_ranks[i] >= rank:
                break
            parts[i : i + 2] = [parts[i] + parts[i + 1]]
        if len(parts) == 2:
            merges.append((parts[0], parts[1]))
    if special_tokens is None:
        special_tokens = {"<|endoftext|>": len(ranks)}
    return ranks, merges, special_tokens
