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

from minigpt.checks import first_few
from minigpt.config import gpt2_name, shipped_path
from minigpt.files import atomic_write_text, read_json, read_regular_text, refuse_lfs_pointer, save_lock
from minigpt.pretokenize import CHAR_TO_BYTE, str_to_token, token_to_str
from minigpt.tokenizer import GPT2_DIR, Tokenizer

# GPT2Tokenizer's default bos, eos and unk token: special without a file naming it.
EOT = "<|endoftext|>"
# The files a tokenizer is read from (`read_hf`): a directory holding one of them holds a
# tokenizer, perhaps a model's, whose ids it defines.
TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer.json")
# What a Tokenizer is built from: token bytes → id, merges in rank order, special text → id.
TokenizerParts = tuple[dict[bytes, int], list[tuple[bytes, bytes]], dict[str, int]]
# The settings a Tokenizer takes by name (its keyword arguments), with GPT2Tokenizer's defaults.
SETTINGS = {"eos_token": EOT, "pad_token": None, "padding_side": "right", "truncation_side": "right",
            "model_max_length": None}
# What read_hf gives: the parts, and the keyword arguments (SETTINGS and added_tokens).
TokenizerPartsAndSettings = tuple[dict[bytes, int], list[tuple[bytes, bytes]], dict[str, int], dict[str, object]]
# transformers' model_max_length when the files give none (its VERY_LARGE_INTEGER): no limit.
NO_MAX_LENGTH = int(1e30)
# What an empty special or added token is to transformers (tokenizers 0.23), which minigpt refuses to mimic.
EMPTY_TOKEN = ("transformers loads it but never finds it in a text (as pad_token, its id pads rows and decodes "
               "to nothing); remove it, or name a token that has a text")


def read_hf(path: str | os.PathLike) -> TokenizerPartsAndSettings:
    """A directory's tokenizer.json, or else its vocab.json + merges.txt, plus added_tokens.json:
    what transformers' GPT2TokenizerFast reads, in its order. A GPT-2 size by name ("gpt2", ...,
    "gpt2-xl", when no such directory exists) means the GPT-2 files shipped in checkpoints/gpt2:
    the four share one tokenizer. Tokens that are neither a single byte nor made by a merge are the
    special tokens (GPT-2: <|endoftext|> = 50256), if a file names them as such (as transformers
    needs; <|endoftext|> is its default), or the added ones, if a file lists them as added but not
    special (transformers' `add_tokens`): any other, which transformers would never give, is
    refused, and a merge that makes a token the vocabulary lacks too. A regular token listed as
    added (add_tokens(["Hello"]) on GPT-2) keeps its id and is an added token too, matched whole
    wherever it stands, as transformers matches it; listed as special, it is refused. Settings that would make
    transformers give other ids (a prefix space, a BOS/EOS added to every text, a normalizer, an
    added token's lstrip, rstrip or single_word, a regular token named as a special one, ...) are
    refused, by name: minigpt does none of them, and a tokenizer that silently gives other ids is
    worse than none. Returns the Tokenizer's parts and its SETTINGS: {"eos_token": ..., ...}, with
    "added_tokens": {text: id}."""
    path = GPT2_DIR if gpt2_name(path) else Path(shipped_path(path))
    if not path.is_dir():
        raise FileNotFoundError(f"tokenizer directory {path} does not exist" if not path.exists() else
                                f"{path} is a file; a tokenizer is a directory with vocab.json + merges.txt")
    config = _read_config(path / "tokenizer_config.json")
    vocab_file, merges_file, str_vocab, str_merges, listed_special = _read_vocab_and_merges(path)
    for s, i in str_vocab.items():  # a float id (64.0) would pass the constructor's check, then come out of encode
        if not isinstance(i, int) or isinstance(i, bool):
            raise ValueError(f"{vocab_file} gives the token {s!r} the id {i!r}; ids must be integers")
    # Named with the file here: Tokenizer's own check of all the ids cannot say which file gave one.
    owners = {}
    for s, i in str_vocab.items():
        if i < 0 or i in owners:
            raise ValueError(f"{vocab_file} gives the id {i} to {s!r}" + (f" and to {owners[i]!r}; each id is one token's"
                             if i in owners else "; ids run from 0"))
        owners[i] = s
    str_vocab, listed_beside = _add_added_tokens(str_vocab, path, config)
    listed_special |= {token: special or listed_special.get(token, False)  # special if either list says so
                       for token, special in listed_beside.items()}
    named = _named_special_tokens(config, path)
    settings = _settings(config, path)
    _refuse_named_tokens_not_in(str_vocab, named)
    merges = _merges_from(str_merges, merges_file)
    made = {bytes([b]) for b in range(256)} | {a + b for a, b in merges}
    named_tokens = {EOT} | {token for _, _, token in named}  # named anywhere: special, whatever a list says
    vocab, special, added_tokens, unnamed = _sort_tokens(str_vocab, made, listed_special, named_tokens, path)
    _refuse_other_order(_normalized_flags(path, config), special, added_tokens, path)
    if lacking := {t for t in made - vocab.keys() if len(t) > 1}:  # (a missing byte: Tokenizer names it)
        rank, (a, b) = next((r, m) for r, m in enumerate(merges) if m[0] + m[1] in lacking)
        raise ValueError(f"{merges_file}: merge {rank} ({token_to_str(a)} {token_to_str(b)}) makes "
                         f"{token_to_str(a + b)!r}, which {vocab_file.name} lacks: are the two files from one tokenizer?")
    for file, key, token in named:
        if token not in special:  # (a token the vocabulary lacks was refused above)
            raise ValueError(f"{file} names the regular token {token!r} ({key}): transformers then takes it for a "
                             "special token and cuts it out of every text (pad_token '!' makes 'Hello!!' "
                             "[15496, 0, 0], not [15496, 3228]), which minigpt does not do; name a special token")
    # A token neither a byte, nor made by a merge, nor named special is one transformers never gives
    # (it encodes "<|im_start|>" as plain text); minigpt would take it for a special token. Most
    # often merges.txt lost its end (a download from a mirror that announced no size or hash).
    if unnamed := sorted(unnamed, key=str_vocab.get):
        raise ValueError(f"{vocab_file} has {len(unnamed):,} token(s) that no merge in {merges_file} makes and no "
                         f"file names as a special token ({first_few(unnamed, quoted=True)}): transformers would "
                         f"never give their ids. Is {merges_file.name} cut short, or from another tokenizer?")
    return vocab, merges, special, settings | {"added_tokens": added_tokens}


def _read_vocab_and_merges(path: Path) -> tuple[Path, Path, dict[str, int], list, dict[str, bool]]:
    """The files the vocabulary and the merges come from, the vocabulary ({"Ġthe": 262, ...}), the
    merges as read (each should be two tokens: read_hf checks them) and the added tokens that
    tokenizer.json lists (→ whether special). tokenizer.json first, as transformers reads it: in a
    transformers 4 directory it sits beside vocab.json + merges.txt, and holds the tokens added
    with add_special_tokens too."""
    if (path / "tokenizer.json").is_file():
        str_vocab, str_merges, listed_special = _read_tokenizer_json(path / "tokenizer.json")
        return path / "tokenizer.json", path / "tokenizer.json", str_vocab, str_merges, listed_special
    vocab_file, merges_file = path / "vocab.json", path / "merges.txt"
    if not (vocab_file.is_file() and merges_file.is_file()):
        for have, lacks in (("vocab.json", "merges.txt"), ("merges.txt", "vocab.json")):
            if (path / have).is_file():
                raise FileNotFoundError(f"{path} has {have} but no {lacks}: a tokenizer needs both (or a tokenizer.json)")
        raise FileNotFoundError(f"{path} holds neither vocab.json + merges.txt nor tokenizer.json")
    str_vocab = read_json(vocab_file, unique_keys=True)
    if not isinstance(str_vocab, dict):
        raise ValueError(f"{vocab_file} must map each token to its id (a JSON object), got {type(str_vocab).__name__}")
    refuse_lfs_pointer(merges_file)  # it would read as three merges, "version https://..." the first
    lines = read_regular_text(merges_file).splitlines()
    # Tuples, not lists: Python's cycle collector stops tracking a tuple of strings, where 50,000
    # lists would have it walk every object of the process (torch's too) once a load, ~0.06 s.
    str_merges = [tuple(line.split(" ")) for line in lines if line and not line.startswith("#version")]
    return vocab_file, merges_file, str_vocab, str_merges, {}


def _merges_from(str_merges: list, merges_file: Path) -> list[tuple[bytes, bytes]]:
    """The merges as token bytes, each checked to be two tokens in GPT-2's byte-level alphabet
    (else Python's "too many values to unpack" or an encode error, naming no file)."""
    try:  # converted first, and checked one by one only if that fails: the checks took longer than the rest
        merges = [(str_to_token(a), str_to_token(b)) for a, b in str_merges]  # a token not a str: AttributeError or TypeError
        if all(a and b for a, b in merges) and all(type(merge) in (tuple, list) for merge in str_merges):
            return merges
    except (ValueError, TypeError, AttributeError):
        pass  # a bad merge: the loop below names it
    for rank, merge in enumerate(str_merges):
        if not (isinstance(merge, (tuple, list)) and len(merge) == 2 and all(isinstance(t, str) and t for t in merge)
                and set("".join(merge)) <= CHAR_TO_BYTE.keys()):
            shown = " ".join(map(str, merge)) if isinstance(merge, (tuple, list)) else merge
            raise ValueError(f"{merges_file}: merge {rank} is {shown!r}; "
                             "a merge is two tokens in GPT-2's byte-level alphabet, one space between ('Ġ t')")
    return [(str_to_token(a), str_to_token(b)) for a, b in str_merges]


def _sort_tokens(str_vocab: dict[str, int], made: set[bytes], listed_special: dict[str, bool], named_tokens: set[str],
                 path: Path) -> tuple[dict[bytes, int], dict[str, int], dict[str, int], list[str]]:
    """The vocabulary's tokens sorted into a Tokenizer's tables: regular (token bytes → id: a single
    byte, or `made` by a merge), special (text → id: named as such by a config file, or listed as
    special), added (text → id: listed, not special) and unnamed (text: none of these, which
    read_hf refuses). A regular token listed as added is both regular and added, at its one id;
    listed as special, it is refused here, naming the directory."""
    vocab, special, added_tokens, unnamed = {}, {}, {}, []
    for s, i in str_vocab.items():
        try:
            token = str_to_token(s)
        except ValueError:  # a character outside the byte-level alphabet: no regular token
            token = None
        if token in made:
            vocab[token] = i
            if s in listed_special and s not in named_tokens:  # (named: read_hf refuses it, with its file)
                # transformers' add_tokens(["Hello"]) of a word GPT-2 has keeps its id (15496) and
                # matches its text whole wherever it stands ('Hellow' is [15496, 86], not BPE's
                # [39, 5037]), as minigpt matches every added token. A special token, though, is
                # never a regular one in minigpt (its encode refuses a special token's text).
                if listed_special[s]:
                    raise ValueError(f"{path} lists the regular token {s!r} ({i}) as a special token: transformers "
                                     "then matches it whole wherever it stands ('Hellow' [15496, 86], not [39, 5037]) "
                                     "and drops it from decode(skip_special_tokens=True), but a minigpt "
                                     "special token is never a regular one too; add it as a word (add_tokens, not "
                                     "special), or remove it from the added tokens")
                added_tokens[s] = i
        elif s in named_tokens or listed_special.get(s):
            special[s] = i
        elif s in listed_special:  # listed, not special: a word added with transformers' add_tokens
            added_tokens[s] = i
        else:
            unnamed.append(s)
    return vocab, special, added_tokens, unnamed


# tokenizer_config.json switches that make transformers add to every text; minigpt adds nothing.
_ADDS_TO_EVERY_TEXT = {
    "add_prefix_space": "puts a space before the text ('Hello' → ' Hello')",
    "add_bos_token": "puts bos_token before every text (GPT-2: [50256, 15496, 995] for 'Hello world')",
    "add_eos_token": "puts eos_token after every text",
}
# An added token's flags that make transformers find it, or cut the text around it, otherwise than
# where its exact text stands, which is all minigpt matches. False (transformers' default) is fine.
_MATCHES_OTHERWISE = {
    "lstrip": "takes the spaces before it into the token ('a <mask>' gives no ' ' token)",
    "rstrip": "takes the spaces after it into the token ('<mask> b' gives 'b', not ' b')",
    "single_word": "matches it only as a whole word ('a<mask>b' stays plain text)",
}
# The config keys that name special tokens; transformers adds any the vocabulary lacks, at new ids.
_SPECIAL_KEYS = ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token", "mask_token",
                 "additional_special_tokens", "extra_special_tokens")


def _read_config(file: Path) -> dict:
    """tokenizer_config.json's settings ({} without one), refusing those that change every text's ids."""
    settings = read_json(file) if file.is_file() else {}
    settings = settings if isinstance(settings, dict) else {}
    for key, effect in _ADDS_TO_EVERY_TEXT.items():
        if settings.get(key):
            raise ValueError(f"{file} sets {key}: transformers {effect}, which minigpt does not do, "
                             "so the ids would differ; set it to false")
    return settings


def recorded_length(folder: str | os.PathLike) -> int | None:
    """The model_max_length a checkpoint's tokenizer_config.json records: the length its model was
    trained on (a fresh model pretrained on shorter windows, a classifier's --block-size), else its
    context. None where the folder records none, or its file cannot be read: a record to heed, not
    a tokenizer to load (a folder's other files may be ones minigpt refuses, with --tokenizer given)."""
    try:
        value = read_json(Path(folder) / "tokenizer_config.json").get("model_max_length")
    except (OSError, ValueError, AttributeError):  # missing, unreadable, or not a JSON object
        return None
    ok = isinstance(value, int) and not isinstance(value, bool) and 0 < value < NO_MAX_LENGTH
    return value if ok else None


def _refuse_other_matching(file: Path, entry: object) -> None:
    """ValueError if an added token's entry ({"content": "<mask>", "lstrip": true, ...}) sets a
    flag of _MATCHES_OTHERWISE: the ids would differ wherever the token meets a space or a letter."""
    for flag, effect in _MATCHES_OTHERWISE.items():
        if isinstance(entry, dict) and entry.get(flag):
            raise ValueError(f"{file} sets {flag} on the added token {entry.get('content')!r}: transformers {effect}, "
                             "which minigpt does not do, so the ids would differ; set it to false")


def _add_added_tokens(str_vocab: dict[str, int], path: Path, config: dict) -> tuple[dict[str, int], dict[str, bool]]:
    """The vocabulary plus the tokens transformers 4 lists beside it (added_tokens.json, and the
    config's added_tokens_decoder: what add_tokens and add_special_tokens added), and those tokens'
    names → whether a list marks them special (added_tokens.json says nothing)."""
    listed, special = [], {}
    if (file := path / "added_tokens.json").is_file():
        data = read_json(file)
        if not isinstance(data, dict):
            raise ValueError(f"{file} must map each added token to its id (a JSON object), got {type(data).__name__}")
        listed += [(file, token, i) for token, i in data.items()]
    decoder = config.get("added_tokens_decoder")  # {"50257": {"content": "<pad>", "special": true, ...}}
    if isinstance(decoder, dict):
        for i, entry in decoder.items():
            _refuse_other_matching(path / "tokenizer_config.json", entry)
            token = entry.get("content") if isinstance(entry, dict) else entry
            listed.append((path / "tokenizer_config.json", token, int(i) if str(i).isdigit() else i))
            special[token] = isinstance(entry, dict) and bool(entry.get("special"))
    vocab = _add_at_next_ids(str_vocab, listed)
    return vocab, {token: special.get(token, False) for _, token, _ in listed}


def _add_at_next_ids(vocab: dict[str, int], listed: list[tuple[Path, object, object]]) -> dict[str, int]:
    """The vocabulary plus the listed (file, token, id)s. transformers appends a token it does not
    know at the next free id whatever id the file gives, so a file whose ids are not exactly that
    (a gap, a clash) is refused rather than read with ids transformers would not use."""
    vocab = dict(vocab)
    next_id = None  # the next free id: found once (a max over 50,000 ids per added token took 1 ms each), then counted
    for file, token, i in sorted(listed, key=lambda x: x[2] if isinstance(x[2], int) else -1):
        if not isinstance(i, int) or isinstance(i, bool) or not isinstance(token, str):
            raise ValueError(f"{file} gives the added token {token!r} the id {i!r}; ids must be integers")
        if token == "":
            raise ValueError(f"{file} lists the empty string as an added token (id {i}), which minigpt would "
                             f"match between every two characters of a text; {EMPTY_TOKEN}")
        if vocab.get(token, i) != i:
            raise ValueError(f"{file} gives {token!r} the id {i}, but the vocabulary has it at {vocab[token]}")
        if token not in vocab:
            next_id = max(vocab.values(), default=-1) + 1 if next_id is None else next_id
            if i != next_id:
                raise ValueError(f"{file} gives the added token {token!r} the id {i}; transformers would add "
                                 f"it at the next free id, {next_id}, so the ids would differ")
            vocab[token] = i
            next_id += 1
    return vocab


def _special_tokens_map(path: Path) -> dict:
    settings = read_json(path / "special_tokens_map.json") if (path / "special_tokens_map.json").is_file() else {}
    return settings if isinstance(settings, dict) else {}


def _settings(config: dict, path: Path) -> dict[str, str | None]:
    """SETTINGS as transformers reads them: special_tokens_map.json's tokens over tokenizer_config.json's,
    and GPT2Tokenizer's defaults where neither names one (a null names none)."""
    settings = dict(SETTINGS)
    for file, given in ((path / "tokenizer_config.json", config), (path / "special_tokens_map.json", _special_tokens_map(path))):
        for key in SETTINGS.keys() & given.keys():
            value = given[key]
            if key.endswith("_side"):
                if value not in (None, "left", "right"):
                    raise ValueError(f"{file} sets {key} {value!r}; it must be 'left' or 'right'")
                settings[key] = value or SETTINGS[key]
            elif key == "model_max_length":
                if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                    raise ValueError(f"{file} sets model_max_length {value!r}; it must be a positive int")
                settings[key] = value if value is not None and value < NO_MAX_LENGTH else None
            else:  # a token: its text, or transformers 4's AddedToken dict
                settings[key] = value.get("content") if isinstance(value, dict) else value if isinstance(value, str) else None
    return settings


def _named_special_tokens(config: dict, path: Path) -> list[tuple[Path, str, str]]:
    """(file, key, token) for each special token that tokenizer_config.json or
    special_tokens_map.json names (pad_token: "<pad>")."""
    named = []
    for file, settings in ((path / "tokenizer_config.json", config), (path / "special_tokens_map.json", _special_tokens_map(path))):
        for key in _SPECIAL_KEYS:
            value = settings.get(key)
            values = value if isinstance(value, list) else list(value.values()) if key == "extra_special_tokens" and isinstance(value, dict) else [value]
            for v in values:
                token = v.get("content") if isinstance(v, dict) else v  # transformers 4 writes AddedToken dicts
                if token == "":
                    raise ValueError(f"{file} names the empty string as a special token ({key}), which minigpt "
                                     f"would match between every two characters of a text; {EMPTY_TOKEN}")
                if isinstance(token, str):
                    named.append((file, key, token))
    return named


def _refuse_named_tokens_not_in(str_vocab: dict[str, int], named: list[tuple[Path, str, str]]) -> None:
    """A special token named in tokenizer_config.json or special_tokens_map.json that the
    vocabulary lacks is added by transformers at a new id; minigpt would not know it."""
    for file, key, token in named:
        if token not in str_vocab:
            raise ValueError(f"{file} names {token!r} ({key}), which the vocabulary lacks: transformers "
                             "would add it at a new id; add it to the vocabulary, or remove it from the file")


def _read_tokenizer_json(file: Path) -> tuple[dict[str, int], list[list[str]], dict[str, bool]]:
    """vocab (added tokens included), merges and the added tokens (→ whether special) from a `tokenizers` file, if it is
    GPT-2-style BPE and nothing in it changes ids on the way (a normalizer, a template adding tokens, ...)."""
    data = read_json(file, unique_keys=True)  # (a token given twice in model.vocab would lose one)
    model, pre = (data.get("model") or {}, data.get("pre_tokenizer") or {}) if isinstance(data, dict) else (None, None)
    if not isinstance(model, dict) or not isinstance(pre, dict):
        raise ValueError(f"{file} is not a `tokenizers` file: it, its model and its pre_tokenizer must be JSON objects")
    # Files of tokenizers < 0.9 (the Hub's own GPT-2 tokenizer.json among them) name no model type;
    # tokenizers reads a model with a vocab dict and a merges list as BPE, and so does this.
    kind = model.get("type") or ("BPE" if isinstance(model.get("vocab"), dict) and isinstance(model.get("merges"), list) else None)
    if kind != "BPE" or pre.get("type") != "ByteLevel" or pre.get("add_prefix_space") or not pre.get("use_regex", True):
        raise ValueError(
            f"{file} is not GPT-2-style byte-level BPE (model BPE, ByteLevel pre-tokenizer with GPT-2's "
            f"regex, add_prefix_space false); got model {kind!r}, pre_tokenizer {pre}"
        )
    changes = {  # each one changes the ids `tokenizers` gives; minigpt implements none of them
        "normalizer": data.get("normalizer") not in (None, {"type": "Sequence", "normalizers": []}),  # rewrites the text first
        "post_processor": not _adds_nothing(data.get("post_processor")),  # adds tokens (a BOS) to every text
        "model.end_of_word_suffix": bool(model.get("end_of_word_suffix")),  # "</w>" on each word's last token
        "model.continuing_subword_prefix": bool(model.get("continuing_subword_prefix")),  # "##" on inner tokens
        "model.byte_fallback": bool(model.get("byte_fallback")),  # <0x41> tokens for unknown bytes
        "model.dropout": bool(model.get("dropout")),  # skips merges at random: ids differ run to run
        "model.ignore_merges": bool(model.get("ignore_merges")),  # a word in the vocab is taken whole, unmerged
    }
    if bad := [name for name, changed in changes.items() if changed]:
        shown = {name: data.get(name) if "." not in name else model.get(name.split(".")[1]) for name in bad}
        raise ValueError(f"{file} sets {', '.join(bad)} ({shown}), which changes the ids; minigpt does "
                         "not implement it, so it would give other ids than transformers")
    for entry in data.get("added_tokens", []):
        _refuse_other_matching(file, entry)
    vocab = _add_at_next_ids(model["vocab"], [(file, t.get("content"), t.get("id")) for t in data.get("added_tokens", [])])
    merges = [m.split(" ") if isinstance(m, str) else m for m in model["merges"]]  # "a b" in older files
    return vocab, merges, {t["content"]: bool(t.get("special")) for t in data.get("added_tokens", [])}


def _normalized_flags(path: Path, config: dict) -> dict[str, bool]:
    """Each listed token's "normalized" flag (the config's added_tokens_decoder; tokenizer.json's
    added_tokens, which transformers reads instead when there is one)."""
    entries = list((config.get("added_tokens_decoder") or {}).values())
    if (path / "tokenizer.json").is_file():
        entries += read_json(path / "tokenizer.json").get("added_tokens", [])
    return {e["content"]: bool(e["normalized"]) for e in entries if isinstance(e, dict) and "normalized" in e}


def _overlap(a: str, b: str) -> bool:
    """Whether one text can hold a and b sharing characters: one inside the other, or an end of
    one the start of the other."""
    return a in b or b in a or any(a.endswith(b[:k]) or b.endswith(a[:k]) for k in range(1, min(len(a), len(b))))


def _refuse_other_order(normalized: dict[str, bool], special: dict[str, int], added: dict[str, int], path: Path) -> None:
    """transformers matches the tokens whose "normalized" is false first (by default the special
    ones), then the others; minigpt the special tokens first, then the added ones. Where the two
    orders differ for two tokens that can overlap in a text, the ids would differ: refused."""
    def first(t: str, hf: bool) -> int:  # 1: matched in the first pass
        return int(not normalized.get(t, t not in special)) if hf else int(t in special)

    whole = special | added
    # Only a token whose pass differs (most files have none) can change the order of a pair.
    for odd in (t for t in whole if first(t, True) != first(t, False)):
        for u in whole:
            if u != odd and _overlap(odd, u) and first(odd, True) - first(u, True) != first(odd, False) - first(u, False):
                raise ValueError(f"{path} marks {odd!r} normalized={normalized[odd]}, and {u!r} overlaps it: "
                                 "transformers matches the tokens marked false first, then the rest, where minigpt "
                                 "matches special tokens first, then added ones, so the ids would differ")


def _adds_nothing(processor: dict | None) -> bool:
    """Whether a post_processor leaves the ids alone: none, ByteLevel (it only trims offsets), a
    template whose single-text form is the text alone (what transformers 5 writes for GPT-2), or a
    sequence of these. Pairs of texts, which minigpt never encodes, are not looked at."""
    if processor is None or processor.get("type") == "ByteLevel":
        return True
    if processor.get("type") == "TemplateProcessing":
        return all(set(piece) == {"Sequence"} for piece in processor.get("single", []))
    if processor.get("type") == "Sequence":
        return all(_adds_nothing(p) for p in processor.get("processors", []))
    return False


# What transformers reads beside vocab.json + merges.txt + tokenizer_config.json, and write_hf does not write.
_STALE_FILES = ("tokenizer.json", "added_tokens.json", "special_tokens_map.json")


def write_hf(tok: Tokenizer, path: str | os.PathLike) -> None:
    """vocab.json + merges.txt (GPT2TokenizerFast opens them) and tokenizer_config.json naming the
    special tokens, the EOS, the pad token (the EOS by default), a padding or truncation side
    other than "right", the model_max_length if known, and the added tokens as not special
    (added_tokens_decoder). Each file is written atomically. The files of a tokenizer saved there before by
    transformers are removed, once the new ones are written: it reads tokenizer.json before
    vocab.json (so it would load the old tokenizer), and adds the tokens that added_tokens.json and
    special_tokens_map.json name (transformers 4 writes them), which the new vocabulary may lack."""
    path = Path(path)
    eos, pad = tok.eos_token if tok.eos_token_id is not None else None, tok.pad_token_id
    if pad is not None and pad != tok.eos_token_id and pad not in tok.special_tokens.values():
        kind = "added (not special)" if pad in tok.added_tokens.values() else "regular"
        raise ValueError(f"pad_token_id {pad} is the {kind} token {tok.id_to_token(pad)!r}: transformers would take a "
                         "pad_token named in tokenizer_config.json for a special token, and cut it out of every text; "
                         "pad with a special token, or the EOS")
    path.mkdir(parents=True, exist_ok=True)
    vocab = {tok.id_to_token(i): i for i in range(tok.vocab_size)}
    merges = "".join(f"{token_to_str(a)} {token_to_str(b)}\n" for a, b in tok.merges)
    bos = EOT if EOT in tok.special_tokens else None  # GPT2Tokenizer's, also its unk_token: neither changes an id
    config = {
        "tokenizer_class": "GPT2Tokenizer",
        "add_prefix_space": False,
        "bos_token": bos,
        "eos_token": eos,
        "unk_token": bos,
    }
    if pad is not None:  # the EOS too (minigpt's default): transformers then pads as minigpt does, where it has no pad
        config["pad_token"] = tok.id_to_token(pad)  # token of its own (and cannot batch a classifier's texts)
    config |= {side: "left" for side in ("padding_side", "truncation_side") if getattr(tok, side) == "left"}
    if tok.model_max_length is not None:  # else transformers' truncation=True cuts nothing
        config["model_max_length"] = tok.model_max_length
    named = {bos, eos, config.get("pad_token")}
    config["additional_special_tokens"] = [s for s in tok.special_tokens if s not in named]
    if tok.added_tokens:  # vocab.json alone would make them regular tokens, which BPE never gives
        config["added_tokens_decoder"] = {str(i): {"content": s, "special": False, "normalized": True, "lstrip": False,
                                                   "rstrip": False, "single_word": False} for s, i in tok.added_tokens.items()}
    with save_lock(path):  # two saves at once would share each file's temp name (files.atomic_path)
        atomic_write_text(path / "vocab.json", json.dumps(vocab))  # ASCII-escaped, byte for byte like GPT-2's file
        atomic_write_text(path / "merges.txt", "#version: 0.2\n" + merges)
        atomic_write_text(path / "tokenizer_config.json", json.dumps(config, indent=2) + "\n")
        for stale in _STALE_FILES:
            (path / stale).unlink(missing_ok=True)


def read_tiktoken(file: str | os.PathLike, special_tokens: dict[str, int] | None = None) -> TokenizerParts:
    """tiktoken's ranks; the default special token is <|endoftext|> right after them (GPT-2: 50256).

    The merges are recovered by replaying BPE on each token's bytes with only lower-ranked tokens
    allowed: the last step joins exactly two parts, and that pair is the token's merge."""
    ranks: dict[bytes, int] = {}
    for lineno, line in enumerate(Path(file).read_text(encoding="ascii").splitlines(), 1):
        if not line:
            continue
        try:  # another file's line would fail as "too many values to unpack"; bad base64 would decode to wrong bytes
            token, rank = line.split()
            ranks[base64.b64decode(token, validate=True)] = int(rank)
        except ValueError:  # (base64's binascii.Error is one)
            raise ValueError(f"{file}:{lineno}: expected '<base64 token> <rank>' (a tiktoken file), got {line[:40]!r}") from None
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
