"""The tokenizer files transformers writes, read as transformers reads them (or refused, by name).

Each test guards a way a directory once loaded with other ids than transformers gives, silently:
tokens added beside the vocabulary lost, settings that change ids ignored, stale files left behind.
Only the shipped checkpoints/gpt2 files and directories the tests make are used.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import warnings
from pathlib import Path

import pytest

from minigpt import Tokenizer, tokenizer_cli
from minigpt.pretokenize import str_to_token
from minigpt.tokenizer import GPT2_DIR

EOT = "<|endoftext|>"


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer.from_pretrained(GPT2_DIR)


@pytest.fixture
def transformers4_dir(tmp_path) -> Path:
    """What transformers 4 saves after add_special_tokens: vocab.json + merges.txt + tokenizer.json
    + added_tokens.json (this transformers writes only the tokenizer.json; the rest are added)."""
    from transformers import GPT2TokenizerFast

    hf = GPT2TokenizerFast.from_pretrained(GPT2_DIR)
    hf.add_special_tokens({"pad_token": "<pad>", "additional_special_tokens": ["<|user|>"]})
    hf.save_pretrained(tmp_path)
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(GPT2_DIR / name, tmp_path)
    (tmp_path / "added_tokens.json").write_text(json.dumps({"<pad>": 50257, "<|user|>": 50258}))
    return tmp_path


def test_a_transformers_4_directory_keeps_its_added_tokens(transformers4_dir):
    """Bug guarded: vocab.json + merges.txt were read first and added_tokens.json ignored, so the
    tokens added with add_special_tokens were lost (50257 tokens; transformers has 50259)."""
    from transformers import AutoTokenizer, GPT2TokenizerFast

    text = "<|user|> hi<pad>"
    hf = AutoTokenizer.from_pretrained(transformers4_dir)
    assert (len(hf), hf.encode(text)) == (50259, [50258, 23105, 50257])
    mine = Tokenizer.from_pretrained(transformers4_dir)
    assert mine.special_tokens == {EOT: 50256, "<pad>": 50257, "<|user|>": 50258}
    assert mine.encode(text, allowed_special="all") == hf.encode(text)
    # Without tokenizer.json, transformers adds added_tokens.json's tokens to vocab.json's: so does minigpt.
    (transformers4_dir / "tokenizer.json").unlink()
    hf = GPT2TokenizerFast.from_pretrained(transformers4_dir)
    mine = Tokenizer.from_pretrained(transformers4_dir)
    assert mine.vocab_size == len(hf) == 50259
    assert mine.encode(text, allowed_special="all") == hf.encode(text)


def test_tokenizer_json_is_read_before_vocab_json_as_transformers_does(tmp_path):
    """A directory holding both (transformers 4 writes both) gives what tokenizer.json says."""
    from transformers import AutoTokenizer, GPT2TokenizerFast

    GPT2TokenizerFast.from_pretrained(GPT2_DIR).save_pretrained(tmp_path)  # tokenizer.json: GPT-2's
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        small = Tokenizer.train("the cat sat on the mat. " * 20, 280, progress=False)
    small.save_pretrained(tmp_path / "small")
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(tmp_path / "small" / name, tmp_path)
    hf_ids = AutoTokenizer.from_pretrained(tmp_path).encode("the cat sat")
    assert Tokenizer.from_pretrained(tmp_path).encode("the cat sat") == hf_ids == [1169, 3797, 3332]


@pytest.mark.parametrize("file, content, problem", [
    ("added_tokens.json", {"<pad>": 50300}, "gives the added token '<pad>' the id 50300; transformers would add it at the next free id, 50257"),
    ("added_tokens.json", {EOT: 7}, "gives '<|endoftext|>' the id 7, but the vocabulary has it at 50256"),
    ("special_tokens_map.json", {"pad_token": "<pad>"}, "names '<pad>' (pad_token), which the vocabulary lacks"),
    ("tokenizer_config.json", {"pad_token": {"__type": "AddedToken", "content": "<pad>"}}, "names '<pad>' (pad_token), which the vocabulary lacks"),
])
def test_added_tokens_transformers_would_number_otherwise_are_refused(tmp_path, file, content, problem):
    """transformers appends a token it does not know at the next free id, whatever id a file gives
    it, and adds a special token a config names: minigpt refuses both rather than differ."""
    from transformers import GPT2TokenizerFast

    for name in ("vocab.json", "merges.txt"):
        shutil.copy(GPT2_DIR / name, tmp_path)
    (tmp_path / file).write_text(json.dumps(content))
    if "<pad>" in json.dumps(content):
        assert GPT2TokenizerFast.from_pretrained(tmp_path).encode("hi<pad>") == [5303, 50257]  # added at 50257
    with pytest.raises(ValueError, match=re.escape(str(tmp_path / file))) as info:
        Tokenizer.from_pretrained(tmp_path)
    assert problem in str(info.value)


def _tokenizer_json(tmp_path: Path) -> dict:
    from transformers import GPT2TokenizerFast

    GPT2TokenizerFast.from_pretrained(GPT2_DIR).save_pretrained(tmp_path)
    (tmp_path / "tokenizer_config.json").unlink()
    return json.loads((tmp_path / "tokenizer.json").read_text())


BOS_TEMPLATE = {"type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": EOT, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [{"Sequence": {"id": "A", "type_id": 0}}],
                "special_tokens": {EOT: {"id": EOT, "ids": [50256], "tokens": [EOT]}}}


@pytest.mark.parametrize("name, edit", [
    ("normalizer", lambda d: d.update(normalizer={"type": "Lowercase"})),
    ("normalizer", lambda d: d.update(normalizer={"type": "NFC"})),
    ("post_processor", lambda d: d.update(post_processor=BOS_TEMPLATE)),
    ("model.end_of_word_suffix", lambda d: d["model"].update(end_of_word_suffix="</w>")),
    ("model.continuing_subword_prefix", lambda d: d["model"].update(continuing_subword_prefix="##")),
    ("model.byte_fallback", lambda d: d["model"].update(byte_fallback=True)),
    ("model.dropout", lambda d: d["model"].update(dropout=0.5)),
])
def test_tokenizer_json_settings_that_change_ids_are_refused_by_name(tmp_path, name, edit):
    """Bug guarded: only the model and pre-tokenizer types were checked, so a lowercasing
    normalizer, a template adding a BOS, a "</w>" suffix ... were ignored and the ids differed."""
    from tokenizers import Tokenizer as HFTokenizer

    data = _tokenizer_json(tmp_path)
    text = "Hello WORLD e\u0301 café"
    before = HFTokenizer.from_str(json.dumps(data)).encode(text).ids
    edit(data)
    (tmp_path / "tokenizer.json").write_text(json.dumps(data))
    if name in ("normalizer", "post_processor", "model.end_of_word_suffix"):  # the others differ only
        # with other vocabularies (a "##" prefixed token, a missing byte) or at random (dropout)
        assert HFTokenizer.from_file(str(tmp_path / "tokenizer.json")).encode(text).ids != before
    with pytest.raises(ValueError, match=f"sets {name} "):
        Tokenizer.from_pretrained(tmp_path)


def test_tokenizer_json_settings_that_leave_the_ids_alone_still_load(tok, tmp_path):
    """GPT-2's own tokenizer.json (the Hub's): normalizer null, a ByteLevel post-processor (it
    only trims offsets), null rather than "" affixes; and transformers 5's template of the text alone."""
    data = _tokenizer_json(tmp_path)
    assert data["post_processor"]["single"] == [{"Sequence": {"id": "A", "type_id": 0}}]  # transformers 5's
    data["post_processor"] = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True}
    data["model"].update(continuing_subword_prefix=None, end_of_word_suffix=None, dropout=None)
    (tmp_path / "tokenizer.json").write_text(json.dumps(data))
    assert Tokenizer.from_pretrained(tmp_path).encode("Hello world") == tok.encode("Hello world")


def test_a_tokenizer_json_whose_model_names_no_type_is_read_as_bpe_as_tokenizers_reads_it(tok, tmp_path):
    """A tokenizer audit: files of tokenizers < 0.9, the Hub's GPT-2 tokenizer.json among them, have
    no "type" in their model (nor "use_regex" in their pre-tokenizer); that was refused as "not
    GPT-2-style byte-level BPE", so a transformers download of GPT-2 would not load."""
    from tokenizers import Tokenizer as HFTokenizer

    data = _tokenizer_json(tmp_path)
    del data["model"]["type"]
    data["pre_tokenizer"] = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True}
    (tmp_path / "tokenizer.json").write_text(json.dumps(data))
    text = "Hello world<|endoftext|> naïve  123"
    theirs = HFTokenizer.from_file(str(tmp_path / "tokenizer.json")).encode(text).ids
    assert Tokenizer.from_pretrained(tmp_path).encode(text, allowed_special="all") == theirs == tok.encode(text, allowed_special="all")
    del data["model"]["merges"]  # a vocabulary without merges is no BPE (tokenizers would read WordLevel)
    (tmp_path / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="is not GPT-2-style byte-level BPE .*; got model None"):
        Tokenizer.from_pretrained(tmp_path)


@pytest.mark.parametrize("key, hf_ids", [("add_bos_token", [50256, 15496, 995]), ("add_eos_token", [15496, 995, 50256])])
def test_a_tokenizer_config_adding_bos_or_eos_is_refused(tmp_path, key, hf_ids):
    """Bug guarded: add_bos_token was ignored, so minigpt gave [15496, 995] for 'Hello world'
    where transformers gives [50256, 15496, 995]."""
    from transformers import GPT2TokenizerFast

    for name in ("vocab.json", "merges.txt"):
        shutil.copy(GPT2_DIR / name, tmp_path)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "GPT2Tokenizer", key: True}))
    assert GPT2TokenizerFast.from_pretrained(tmp_path).encode("Hello world") == hf_ids
    with pytest.raises(ValueError, match=f"tokenizer_config.json sets {key}"):
        Tokenizer.from_pretrained(tmp_path)


def gpt2_copy(dest: Path, vocab_edit=None, merges_edit=None) -> Path:
    """checkpoints/gpt2's vocab.json + merges.txt in `dest`, each passed through its edit."""
    vocab = json.loads((GPT2_DIR / "vocab.json").read_text(encoding="utf-8"))
    merges = (GPT2_DIR / "merges.txt").read_text(encoding="utf-8")
    (dest / "vocab.json").write_text(json.dumps(vocab_edit(vocab) if vocab_edit else vocab), encoding="utf-8")
    (dest / "merges.txt").write_text(merges_edit(merges) if merges_edit else merges, encoding="utf-8")
    return dest


def test_a_merges_txt_cut_at_a_line_end_is_refused_naming_both_files(tmp_path):
    """Bug guarded: a merges.txt cut short at a line end (a mirror that announced no size or hash)
    loaded, its unmade tokens taken for special ones: encode then refused ordinary text
    ("text contains the special token 'jump'"), where transformers gives plain ids."""
    gpt2_copy(tmp_path, merges_edit=lambda m: m[:m.index("\n", 300_000) + 1])
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'vocab.json'} has 13,752 token(s) that no merge in "
                                                   f"{tmp_path / 'merges.txt'} makes") + ".*merges.txt cut short"):
        Tokenizer.from_pretrained(tmp_path)


def test_vocab_json_ids_given_twice_negative_or_missing_name_the_file_and_the_tokens(tmp_path):
    """A security audit: a vocab.json giving one id to two tokens, a negative id, a gap (id 50300),
    or a token listed twice (json keeps the last) were all "token ids must be exactly 0..N (vocab +
    special and added tokens, no gaps or duplicates)", naming neither the file nor a token."""
    vocab_file = tmp_path / "vocab.json"

    def refused(edit, match):
        gpt2_copy(tmp_path, vocab_edit=edit)
        with pytest.raises(ValueError, match=match):
            Tokenizer.from_pretrained(tmp_path)

    refused(lambda v: v | {"&": 6}, re.escape(f"{vocab_file} gives the id 6 to \"'\" and to '&'; each id is one token's"))
    refused(lambda v: v | {"!": -1}, re.escape(f"{vocab_file} gives the id -1 to '!'; ids run from 0"))
    refused(lambda v: v | {"<|endoftext|>": 50300}, re.escape("no gaps or duplicates): no token has id 50256; the next "
                                                               "id, 50300, is '<|endoftext|>'"))
    gpt2_copy(tmp_path)
    text = vocab_file.read_text(encoding="utf-8")
    vocab_file.write_text(text.replace('{"!": 0,', '{"!": 0, "!": 1,', 1), encoding="utf-8")
    with pytest.raises(ValueError, match=re.escape(f"{vocab_file} gives the key '!' two values (0 and 1); a key has one")):
        Tokenizer.from_pretrained(tmp_path)
    # The same key with the same id loses nothing, and transformers reads it (a review: it was refused).
    vocab_file.write_text(text.replace('{"!": 0,', '{"!": 0, "!": 0,', 1), encoding="utf-8")
    assert Tokenizer.from_pretrained(tmp_path).encode("Hello!") == [15496, 0]


def test_an_unmade_token_is_special_only_when_a_file_names_it_as_transformers_reads_it(tmp_path):
    """transformers encodes a vocabulary's "<|im_start|>" that no merge makes as plain text unless a
    file names it a special token; minigpt took every such token for a special one. Unnamed, it is
    refused; named (here in tokenizer_config.json), both give its id."""
    from transformers import GPT2TokenizerFast

    gpt2_copy(tmp_path, vocab_edit=lambda v: v | {"<|im_start|>": len(v)})
    with pytest.raises(ValueError, match=r"has 1 token\(s\) that no merge .* \('<\|im_start\|>'\)"):
        Tokenizer.from_pretrained(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"additional_special_tokens": ["<|im_start|>"]}))
    ids = Tokenizer.from_pretrained(tmp_path).encode("<|im_start|>hi", allowed_special="all")
    assert ids == GPT2TokenizerFast.from_pretrained(tmp_path).encode("<|im_start|>hi") == [50257, 5303]


def test_a_merge_making_a_token_vocab_json_lacks_is_refused_naming_both_files(tmp_path):
    gpt2_copy(tmp_path, vocab_edit=lambda v: {t: i for t, i in v.items() if t != "Ġthe"})
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'merges.txt'}: merge 6 (Ġt he) makes 'Ġthe', "
                                                   "which vocab.json lacks")):
        Tokenizer.from_pretrained(tmp_path)


@pytest.mark.parametrize("name", ["vocab.json", "merges.txt", "tokenizer.json"])
def test_a_git_lfs_pointer_is_named_with_the_command_that_fetches_the_file(tmp_path, name):
    """A clone without git-lfs leaves pointers: read as the files, vocab.json was "not valid JSON"
    and merges.txt three merges ("version https://...") of tokens the vocabulary lacks."""
    for f in ("vocab.json", "merges.txt"):
        shutil.copy(GPT2_DIR / f, tmp_path)
    (tmp_path / name).write_text("version https://git-lfs.github.com/spec/v1\n"
                                 "oid sha256:" + "0" * 64 + "\nsize 1042301\n")
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / name} is a Git LFS pointer") + ".*git lfs pull"):
        Tokenizer.from_pretrained(tmp_path)


def test_saving_over_a_transformers_4_directory_removes_its_added_tokens(transformers4_dir):
    """Bug guarded: save_pretrained left added_tokens.json and special_tokens_map.json behind, so
    transformers added <pad> and <|user|> to the new, smaller vocabulary (502 tokens, not 500)."""
    from transformers import AutoTokenizer

    (transformers4_dir / "special_tokens_map.json").write_text(
        json.dumps({"pad_token": "<pad>", "additional_special_tokens": ["<|user|>"], "eos_token": EOT}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        small = Tokenizer.train("the cat sat on the mat. " * 20, 280, progress=False)
    small.save_pretrained(transformers4_dir)
    assert not any((transformers4_dir / name).exists()
                   for name in ("tokenizer.json", "added_tokens.json", "special_tokens_map.json"))
    hf = AutoTokenizer.from_pretrained(transformers4_dir)
    assert (len(hf), hf.pad_token) == (small.vocab_size, EOT)  # minigpt's pad (its EOS), not the old <pad>
    assert hf.encode("the cat sat") == small.encode("the cat sat")
    assert Tokenizer.from_pretrained(transformers4_dir).vocab_size == small.vocab_size


def test_a_tokenizer_trained_by_hugging_face_with_its_special_tokens_first_is_named_saved_and_read_back(tmp_path):
    """Bug guarded: id_to_token took an id below len(vocab) for a regular token, as if special
    tokens held the last ids; Hugging Face's BpeTrainer gives them the first (0, 1). "<a b>" came
    out as '<aĠb>', and save_pretrained wrote a vocab.json that minigpt and transformers refused."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers
    from transformers import AutoTokenizer

    hf = HFTokenizer(models.BPE())
    hf.pre_tokenizer, hf.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    hf.train_from_iterator(["the cat sat on the mat. " * 20 + "a bee, a bat; 123!"], trainers.BpeTrainer(
        vocab_size=300, special_tokens=[EOT, "<a b>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    hf.save(str(tmp_path / "tokenizer.json"))
    tok = Tokenizer.from_pretrained(tmp_path)
    assert tok.special_tokens == {EOT: 0, "<a b>": 1}
    assert [tok.id_to_token(i) for i in range(tok.vocab_size)] == [hf.id_to_token(i) for i in range(hf.get_vocab_size())]
    tok.save_pretrained(tmp_path / "saved")
    text = "the cat<a b> sat on the mat<|endoftext|> a bee 42"
    ids = tok.encode(text, allowed_special="all")
    assert {0, 1} <= set(ids)  # both special tokens, at their ids
    assert Tokenizer.from_pretrained(tmp_path / "saved").encode(text, allowed_special="all") == ids
    assert AutoTokenizer.from_pretrained(tmp_path / "saved").encode(text) == hf.encode(text).ids == ids


MASK = {"content": "<mask>", "lstrip": False, "rstrip": False, "single_word": False, "normalized": False, "special": True}


def _dir_with_mask(tmp_path: Path, layout: str, mask: dict) -> Path:
    """GPT-2 plus <mask> (50257), as transformers 5 writes it (tokenizer.json's added_tokens) or
    transformers 4 (vocab.json + merges.txt, and tokenizer_config.json's added_tokens_decoder).
    (transformers takes the flags from these definitions only, not from a special_tokens_map.json.)"""
    if layout == "tokenizer.json":
        data = _tokenizer_json(tmp_path)
        data["added_tokens"].append({"id": 50257, **mask})
        (tmp_path / "tokenizer.json").write_text(json.dumps(data))
    else:
        gpt2_copy(tmp_path)
        (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "GPT2Tokenizer",
                                                                    "added_tokens_decoder": {"50257": mask}}))
    return tmp_path


@pytest.mark.parametrize("layout", ["tokenizer.json", "tokenizer_config.json"])
@pytest.mark.parametrize("flag", ["lstrip", "rstrip", "single_word"])
def test_an_added_token_that_transformers_matches_otherwise_is_refused_by_name(tmp_path, layout, flag):
    """Bug guarded: an added token's lstrip / rstrip / single_word was ignored, so minigpt gave
    'a <mask> b' [64, 220, 50257, 275] where transformers, stripping the space, gives [64, 50257, 275]."""
    from transformers import AutoTokenizer

    path = _dir_with_mask(tmp_path, layout, MASK | {flag: True})
    exact = [[64, 220, 50257, 275], [64, 50257, 65]]  # what minigpt gives, matching the exact text
    assert [AutoTokenizer.from_pretrained(path).encode(t) for t in ("a <mask> b", "a<mask>b")] != exact
    with pytest.raises(ValueError, match=re.escape(f"{path / layout} sets {flag} on the added token '<mask>'")):
        Tokenizer.from_pretrained(path)


EMPTY_TOKEN_FILES = [  # (file, its content (a vocab.json with "" at 50257 beside it where needed), the problem)
    ("tokenizer_config.json", {"pad_token": ""}, "names the empty string as a special token (pad_token)"),
    ("special_tokens_map.json", {"additional_special_tokens": [""]},
     "names the empty string as a special token (additional_special_tokens)"),
    ("added_tokens.json", {"": 50257}, "lists the empty string as an added token (id 50257)"),
    ("tokenizer.json", MASK | {"content": ""}, "lists the empty string as an added token (id 50257)"),
    ("tokenizer_config.json", {"added_tokens_decoder": {"50257": MASK | {"content": ""}}},
     "lists the empty string as an added token (id 50257)"),
]


@pytest.mark.parametrize("file, content, problem", EMPTY_TOKEN_FILES,
                         ids=["pad_token", "special_tokens_map", "added_tokens.json", "tokenizer.json", "decoder"])
def test_an_empty_special_or_added_token_is_refused_naming_its_file(tmp_path, file, content, problem):
    """Bug (a security audit): a vocab.json holding "" that tokenizer_config.json named as the
    pad_token loaded, and "" matches everywhere: encode gave ['', 'H', '', 'e', ...] for 'Hello'
    and `minigpt prepare` wrote its id as half the tokens. Each file that can name or list one
    is now refused by name (the Tokenizer constructor refuses it too, naming no file)."""
    if file == "tokenizer.json":
        _dir_with_mask(tmp_path, file, content)
    elif "added_tokens_decoder" in content:
        _dir_with_mask(tmp_path, file, content["added_tokens_decoder"]["50257"])
    else:
        gpt2_copy(tmp_path, vocab_edit=lambda v: v if file == "added_tokens.json" else v | {"": 50257})
        (tmp_path / file).write_text(json.dumps(content))
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / file} {problem}, which minigpt would match "
                                                   "between every two characters of a text")):
        Tokenizer.from_pretrained(tmp_path)


def test_transformers_never_finds_an_empty_pad_token_in_a_text_but_pads_with_it(tmp_path):
    """What the refusal above says of transformers (its GPT2TokenizerFast, tokenizers 0.23): it
    loads the directory, encodes 'Hello' as [15496] (the empty token never matched), and pads
    with its id, 50257, which decodes to nothing."""
    from transformers import GPT2TokenizerFast

    gpt2_copy(tmp_path, vocab_edit=lambda v: v | {"": 50257})
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"pad_token": ""}))
    hf = GPT2TokenizerFast.from_pretrained(tmp_path)
    assert hf("Hello")["input_ids"] == [15496] and (hf.pad_token, hf.pad_token_id) == ("", 50257)
    assert hf(["Hello", "Hello world"], padding=True)["input_ids"][0] == [15496, 50257]
    assert hf.decode([15496, 50257]) == "Hello"


@pytest.mark.parametrize("layout", ["tokenizer.json", "tokenizer_config.json"])
def test_an_added_token_with_its_flags_false_loads_as_transformers_writes_it(tmp_path, layout):
    from transformers import AutoTokenizer

    path = _dir_with_mask(tmp_path, layout, MASK)
    texts = ("a <mask> b", "a<mask>b")
    assert ([Tokenizer.from_pretrained(path).encode(t, allowed_special="all") for t in texts]
            == [AutoTokenizer.from_pretrained(path).encode(t) for t in texts] == [[64, 220, 50257, 275], [64, 50257, 65]])


def test_the_pad_and_eos_tokens_a_config_names_are_read_and_saved_as_transformers_reads_them(tmp_path):
    """Bug guarded: tokenizer_config.json's pad_token was ignored (minigpt padded with 50256 where
    transformers pads with [PAD] = 50257) and save_pretrained dropped it (transformers then read
    no pad token); its eos_token was ignored too (<|endoftext|> stayed the EOS)."""
    from transformers import AutoTokenizer, GPT2TokenizerFast

    hf = GPT2TokenizerFast.from_pretrained(GPT2_DIR)
    hf.add_special_tokens({"pad_token": "[PAD]", "eos_token": "<|end|>"})
    hf.save_pretrained(tmp_path)
    texts = ["a", "a b c<|end|>"]
    tok = Tokenizer.from_pretrained(tmp_path)
    assert (tok.pad_token_id, tok.eos_token_id) == (hf.pad_token_id, hf.eos_token_id) == (50257, 50258)
    assert tok(texts, padding=True, allowed_special="all") == dict(hf(texts, padding=True)) == {
        "input_ids": [[64, 50257, 50257, 50257], [64, 275, 269, 50258]], "attention_mask": [[1, 0, 0, 0], [1, 1, 1, 1]]}
    tok.save_pretrained(tmp_path / "saved")
    again, hf_again = Tokenizer.from_pretrained(tmp_path / "saved"), AutoTokenizer.from_pretrained(tmp_path / "saved")
    assert (hf_again.pad_token, hf_again.eos_token) == ("[PAD]", "<|end|>")
    assert again(texts, padding=True, allowed_special="all") == dict(hf_again(texts, padding=True)) == dict(hf(texts, padding=True))
    assert again.eos_token_id == hf_again.eos_token_id == 50258


def test_a_regular_token_named_as_a_special_one_is_refused_reading_and_saving(tok, tmp_path):
    """transformers takes a regular token a config names (pad_token "!") for a special one, and
    cuts it out of every text: 'Hello!!' is [15496, 0, 0], not [15496, 3228]. minigpt cannot, so
    it refuses to read such a config, or to write one for a pad_token_id set to a regular token."""
    from transformers import AutoTokenizer

    gpt2_copy(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "GPT2Tokenizer", "pad_token": "!"}))
    assert AutoTokenizer.from_pretrained(tmp_path).encode("Hello!!") == [15496, 0, 0]
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'tokenizer_config.json'} names the regular token '!' (pad_token)")):
        Tokenizer.from_pretrained(tmp_path)
    padded = Tokenizer.from_pretrained(GPT2_DIR)
    padded.pad_token_id = 0
    with pytest.raises(ValueError, match="pad_token_id 0 is the regular token '!'"):
        padded.save_pretrained(tmp_path / "saved")
    assert not (tmp_path / "saved").exists()  # refused before writing anything


# Texts where a word added with add_tokens meets others: at the start, inside a word, repeated,
# after spaces, beside a special token, and an added token holding a space.
ADDED_TEXTS = ["ROMEO: But soft", "xROMEOy", " ROMEO", "ROMEOROMEO", "  ROMEO  ROMEO ", "a hello world!",
               f"{EOT}ROMEO", "ROMEO<|endoftext|>x", "no added word here"]


def _dir_with_added_words(tmp_path: Path, layout: str) -> Path:
    """GPT-2 plus the words ROMEO (50257) and "hello world" (50258), added with add_tokens: as
    transformers 5 saves them (tokenizer.json, "special": false), or as transformers 4 lists them
    (added_tokens.json, which says nothing of specialness: transformers reads them as not special)."""
    from transformers import GPT2TokenizerFast

    if layout == "tokenizer.json":
        hf = GPT2TokenizerFast.from_pretrained(GPT2_DIR)
        hf.add_tokens(["ROMEO", "hello world"])
        hf.save_pretrained(tmp_path)
    else:
        gpt2_copy(tmp_path)
        (tmp_path / "added_tokens.json").write_text(json.dumps({"ROMEO": 50257, "hello world": 50258}))
        (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "GPT2Tokenizer"}))
    return tmp_path


@pytest.mark.parametrize("layout", ["tokenizer.json", "added_tokens.json"])
def test_words_added_with_add_tokens_are_matched_whole_not_refused_as_special(tmp_path, layout, capsys):
    """Bug guarded: a word added with transformers' add_tokens (not special) was read as a special
    token: encode("ROMEO: But soft") raised "text contains the special token 'ROMEO'" where
    transformers gives [50257, 25, 887, 2705], and with disallowed_special=() (a classifier's
    texts) it was split into BPE pieces, other ids than transformers' pipeline feeds the model."""
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(_dir_with_added_words(tmp_path, layout))
    tok = Tokenizer.from_pretrained(tmp_path)
    assert (tok.special_tokens, tok.added_tokens) == ({EOT: 50256}, {"ROMEO": 50257, "hello world": 50258})
    assert len(tok) == len(hf) == 50259
    theirs = [hf.encode(t) for t in ADDED_TEXTS]
    assert theirs[0] == [50257, 25, 887, 2705] and theirs[1] == [87, 50257, 88]
    ordinary = [t.replace(EOT, "") for t in ADDED_TEXTS]  # plain text: no special token to allow or refuse
    assert [tok.encode(t) for t in ordinary] == [hf.encode(t) for t in ordinary]
    assert [tok.encode(t, allowed_special="all") for t in ADDED_TEXTS] == theirs
    assert tok.encode_batch(ADDED_TEXTS, allowed_special="all") == theirs
    assert tok(ordinary)["input_ids"] == hf(ordinary)["input_ids"]
    # The special token is plain text here, as encode_ordinary says; the added word is still its id.
    as_text = [tok.encode(t, disallowed_special=()) for t in ADDED_TEXTS]
    assert as_text == [tok.encode_ordinary(t) for t in ADDED_TEXTS] and as_text[6][-1] == 50257
    assert [tok.decode(ids) for ids in theirs] == [hf.decode(ids) for ids in theirs] == ADDED_TEXTS
    assert tok.encode_show_work("ROMEO hi")[0] == {"chunk": "ROMEO", "steps": [["ROMEO"]], "ranks": [], "ids": [50257],
                                                    "added": True}
    assert tokenizer_cli.main(["--tokenizer", str(tmp_path), "--show-work", "ROMEO hi"]) == 0
    assert "chunk 'ROMEO'\n         added  ROMEO\n           ids  [50257]\n" in capsys.readouterr().out


def test_saved_added_words_stay_words_for_transformers(tmp_path):
    """Bug guarded: minigpt re-saved an added word as an additional special token, so transformers'
    decode(skip_special_tokens=True), a pipeline's default, dropped it from the text."""
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(_dir_with_added_words(tmp_path, "tokenizer.json"))
    Tokenizer.from_pretrained(tmp_path).save_pretrained(tmp_path / "saved")
    hf_again, again = AutoTokenizer.from_pretrained(tmp_path / "saved"), Tokenizer.from_pretrained(tmp_path / "saved")
    assert hf_again.all_special_tokens == [EOT] and again.added_tokens == {"ROMEO": 50257, "hello world": 50258}
    ids = hf.encode("ROMEO: But soft<|endoftext|>")
    assert hf_again.decode(ids, skip_special_tokens=True) == hf.decode(ids, skip_special_tokens=True) == "ROMEO: But soft"
    assert [hf_again.encode(t) for t in ADDED_TEXTS] == [hf.encode(t) for t in ADDED_TEXTS]


# Texts where an added word the vocabulary already has ("Hello", 15496; "!", 0) meets others:
# inside a word, at the start, repeated, after a space (" Hello" is one regular token, 18435),
# beside the special token and the new added words ROMEO and "lloR" (which overlaps "Hello").
REGULAR_ADDED_TEXTS = ["Hellow", "Hello", "xHelloy", "HelloHello", " Hello", "  Hello  Hello ", "say Hello!!",
                       f"Hello{EOT}Hello", f"{EOT}Hello", "HelloROMEO", "ROMEOHello", "HelloR", "HellloRx",
                       "ĠHellox", "Hel lo", "no added word here"]


@pytest.mark.parametrize("words", [["Hello"], ["Hello", "ROMEO", "lloR", "!"], ["ĠHello"]], ids="+".join)
@pytest.mark.parametrize("layout", ["tokenizer.json", "added_tokens.json", "tokenizer_config.json"])
def test_a_regular_token_added_with_add_tokens_keeps_its_id_and_is_matched_whole_as_transformers_does(
        tmp_path, words, layout):
    """Bug guarded: a word GPT-2 already has, added with transformers' add_tokens (which keeps its
    id, 15496 for "Hello", and matches its text whole wherever it stands: 'Hellow' [15496, 86], not
    BPE's [39, 5037]), was refused ("lists the regular token 'Hello' (15496) as an added token"),
    though minigpt matches added tokens whole. Read as transformers 5 saves it (tokenizer.json) or
    as transformers 4 lists it (added_tokens.json; tokenizer_config.json's added_tokens_decoder)."""
    from transformers import AutoTokenizer, GPT2TokenizerFast

    gpt2_vocab = json.loads((GPT2_DIR / "vocab.json").read_text(encoding="utf-8"))
    regular = {w: gpt2_vocab[w] for w in words if w in gpt2_vocab}  # "Hello": 15496, "!": 0, "ĠHello": 18435
    new = {w: 50257 + k for k, w in enumerate(w for w in words if w not in gpt2_vocab)}
    hf = GPT2TokenizerFast.from_pretrained(GPT2_DIR)
    assert hf.add_tokens(words) == len(words) and {w: hf.convert_tokens_to_ids(w) for w in words} == regular | new
    hf.save_pretrained(tmp_path)
    if layout != "tokenizer.json":  # the same words, listed beside vocab.json + merges.txt
        (tmp_path / "tokenizer.json").unlink()
        gpt2_copy(tmp_path)
        listed = regular | new
        if layout == "added_tokens.json":
            (tmp_path / "added_tokens.json").write_text(json.dumps(listed))
        else:
            flags = {"special": False, "normalized": True, "lstrip": False, "rstrip": False, "single_word": False}
            (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "GPT2Tokenizer", "added_tokens_decoder": {
                str(i): {"content": w, **flags} for w, i in listed.items()}}))
        hf = AutoTokenizer.from_pretrained(tmp_path)
    tok = Tokenizer.from_pretrained(tmp_path)
    assert tok.added_tokens == regular | new and len(tok) == len(hf) == 50257 + len(new)
    assert regular and all(tok.vocab[str_to_token(w)] == i for w, i in regular.items())  # still regular, same id
    theirs = [hf.encode(t) for t in REGULAR_ADDED_TEXTS]
    if "Hello" in words:
        assert theirs[0] == [15496, 86] and theirs[REGULAR_ADDED_TEXTS.index(" Hello")] == [220, 15496]
    assert [tok.encode(t, allowed_special="all") for t in REGULAR_ADDED_TEXTS] == theirs
    assert tok.encode_batch(REGULAR_ADDED_TEXTS, allowed_special="all") == theirs
    ordinary = [t for t in REGULAR_ADDED_TEXTS if EOT not in t]
    assert [tok.encode_ordinary(t) for t in ordinary] == [hf.encode(t) for t in ordinary]
    assert [tok.decode(ids) for ids in theirs] == [hf.decode(ids) for ids in theirs]
    if "ĠHello" not in words:  # (typed, "Ġ" is the token " Hello": it decodes with a space, in both)
        assert [tok.decode(ids) for ids in theirs] == REGULAR_ADDED_TEXTS
    # Saved by minigpt, transformers reads the files back to the same ids, and so does minigpt.
    tok.save_pretrained(tmp_path / "saved")
    hf_again, again = AutoTokenizer.from_pretrained(tmp_path / "saved"), Tokenizer.from_pretrained(tmp_path / "saved")
    assert [hf_again.encode(t) for t in REGULAR_ADDED_TEXTS] == theirs and hf_again.all_special_tokens == [EOT]
    assert (again.vocab, again.special_tokens, again.added_tokens) == (tok.vocab, tok.special_tokens, tok.added_tokens)


def test_a_word_a_minigpt_tokenizer_has_added_in_transformers_loads_back_in_minigpt(tmp_path):
    """Bug guarded: a tokenizer trained by minigpt, where "ROMEO" is a merged token, then extended
    in transformers with add_tokens(["ROMEO", "JULIET"]), was refused on loading ("lists the
    regular token 'ROMEO' ... as an added token"), though transformers reads it back fine."""
    from transformers import AutoTokenizer

    trained = Tokenizer.train("ROMEO: hi\nROMEO: ho\n" * 50, vocab_size=264, progress=False)  # EOT is 263
    trained.save_pretrained(tmp_path)
    hf = AutoTokenizer.from_pretrained(tmp_path)
    romeo = trained.encode("ROMEO")[0]  # a regular token, made by a merge
    assert hf.add_tokens(["ROMEO", "JULIET"]) == 2 and hf.convert_tokens_to_ids("ROMEO") == romeo  # it keeps its id
    hf.save_pretrained(tmp_path / "extended")
    tok = Tokenizer.from_pretrained(tmp_path / "extended")
    assert tok.added_tokens == {"ROMEO": romeo, "JULIET": 264} and len(tok) == len(hf) == 265
    texts = ["ROMEO: hi", "xROMEOy", "ROMEOS", "ROMEOJULIET", "ROMEOMEO", "RO MEO", f"ROMEO{EOT}ROMEO"]
    theirs = [hf.encode(t) for t in texts]
    assert [tok.encode(t, allowed_special="all") for t in texts] == theirs
    assert [tok.decode(ids) for ids in theirs] == [hf.decode(ids) for ids in theirs] == texts


@pytest.mark.parametrize("how, problem", [
    ("add_tokens(special_tokens=True)", "lists the regular token 'Hello' (15496) as a special token"),  # tokenizer.json only
    ("add_special_tokens", "names the regular token 'Hello'"),  # named in tokenizer_config.json too
    ("lstrip", "sets lstrip on the added token 'Hello'"),
    ("rstrip", "sets rstrip on the added token 'Hello'"),
    ("single_word", "sets single_word on the added token 'Hello'"),
], ids=lambda v: v if "token" not in v else "")
def test_a_regular_token_transformers_would_match_otherwise_than_an_added_word_is_refused_by_name(tmp_path, how, problem):
    """An added regular token that transformers matches as a special token (which minigpt's tables
    cannot hold: a special token is never a regular one there) or with lstrip / rstrip /
    single_word (which minigpt does for no added token) is refused, naming what. Bug guarded: the
    special one was refused as "an added token", which misnamed the problem (an added word loads)."""
    from transformers import AddedToken, GPT2TokenizerFast

    hf = GPT2TokenizerFast.from_pretrained(GPT2_DIR)
    if how == "add_tokens(special_tokens=True)":
        added = hf.add_tokens(["Hello"], special_tokens=True)
    elif how == "add_special_tokens":
        added = hf.add_special_tokens({"additional_special_tokens": ["Hello"]})
    else:
        added = hf.add_tokens([AddedToken("Hello", **{how: True})])
    assert added == 1 and hf.convert_tokens_to_ids("Hello") == 15496
    hf.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=re.escape(problem)):
        Tokenizer.from_pretrained(tmp_path)


def test_a_regular_token_added_with_normalized_false_loads_unless_an_overlapping_word_changes_the_order(tmp_path):
    """transformers matches an added token marked "normalized": false before the others. For a
    regular token alone that changes nothing ('Hellow' [15496, 86] in both); beside an added word
    that overlaps it ("xHel" in "xHello"), the orders differ, and it is refused as any such pair is."""
    from transformers import AddedToken, GPT2TokenizerFast

    texts = ["Hellow", "xHello", "say Hello!", f"Hello{EOT}Hello"]
    hf = GPT2TokenizerFast.from_pretrained(GPT2_DIR)
    hf.add_tokens([AddedToken("Hello", normalized=False)])
    hf.save_pretrained(tmp_path / "alone")
    tok = Tokenizer.from_pretrained(tmp_path / "alone")
    assert [tok.encode(t, allowed_special="all") for t in texts] == [hf.encode(t) for t in texts]
    hf.add_tokens(["xHel"])
    hf.save_pretrained(tmp_path / "overlapping")
    with pytest.raises(ValueError, match="marks 'Hello' normalized=False, and 'xHel' overlaps it"):
        Tokenizer.from_pretrained(tmp_path / "overlapping")


def test_an_added_token_spelled_like_a_regular_one_is_accepted_only_at_its_id():
    """The tables themselves: "Hello" added at 15496 is the regular token matched whole (one id,
    vocab_size unchanged); added at a new id, vocab.json could not tell the two apart. Bug guarded:
    the first was refused too, as a token spelled like a regular one."""
    gpt2 = Tokenizer.from_pretrained(GPT2_DIR)
    tok = Tokenizer(gpt2.vocab, gpt2.merges, {EOT: 50256}, added_tokens={"Hello": 15496})
    assert len(tok) == 50257 and tok.encode("Hellow") == [15496, 86] and gpt2.encode("Hellow") == [39, 5037]
    assert tok.id_to_token(15496) == "Hello" and tok.convert_tokens_to_ids("Hello") == 15496
    with pytest.raises(ValueError, match="added token 'Hello' is spelled like the regular token 15496"):
        Tokenizer(gpt2.vocab, gpt2.merges, {EOT: 50256}, added_tokens={"Hello": 50257})


def test_model_max_length_is_read_used_for_truncation_and_saved(tmp_path):
    """Bug guarded: model_max_length was neither read nor written. minigpt refused truncation=True
    without max_length though the files said 1024, and a re-save dropped the 1024, after which
    transformers' truncation=True cut nothing (its stand-in is 1e30): a pipeline on a long text
    then failed with IndexError in the position embedding."""
    from transformers import AutoTokenizer, GPT2TokenizerFast

    GPT2TokenizerFast.from_pretrained(GPT2_DIR, model_max_length=1024).save_pretrained(tmp_path)
    tok, long = Tokenizer.from_pretrained(tmp_path), "word " * 2000
    assert tok.model_max_length == 1024 and len(tok(long, truncation=True)["input_ids"]) == 1024
    (tmp_path / "bare").mkdir()
    assert Tokenizer.from_pretrained(gpt2_copy(tmp_path / "bare")).model_max_length is None  # no file names it
    GPT2TokenizerFast.from_pretrained(tmp_path / "bare").save_pretrained(tmp_path / "none")  # transformers writes 1e30
    assert Tokenizer.from_pretrained(tmp_path / "none").model_max_length is None
    tok.save_pretrained(tmp_path / "saved")
    assert AutoTokenizer.from_pretrained(tmp_path / "saved").model_max_length == 1024
    tok.model_max_length = 64  # what a checkpoint's writer sets: its model's n_positions
    tok.save_pretrained(tmp_path / "saved")
    hf = AutoTokenizer.from_pretrained(tmp_path / "saved")
    assert hf(long, truncation=True)["input_ids"] == tok(long, truncation=True)["input_ids"] == tok.encode(long)[:64]
    assert tok([long, "a"], padding="max_length")["input_ids"][1] == [64] + [50256] * 63
    with pytest.raises(ValueError, match="model_max_length must be a positive int .* got 0"):
        tok.model_max_length = 0


def test_pad_token_and_eos_token_set_by_name_change_the_ids_and_the_saved_config(tmp_path):
    """Bug guarded: transformers' idiom `tok.pad_token = "<|pad|>"` only made an attribute: padding
    still used the EOS and the saved config named <|endoftext|> as pad. An unknown name set
    eos_token_id to None without a word."""
    from transformers import AutoTokenizer, GPT2TokenizerFast

    hf = GPT2TokenizerFast.from_pretrained(GPT2_DIR)
    hf.add_special_tokens({"additional_special_tokens": ["<|pad|>", "<|end|>"]})
    hf.save_pretrained(tmp_path)
    tok = Tokenizer.from_pretrained(tmp_path)
    assert (tok.pad_token, tok.pad_token_id) == (EOT, 50256)
    tok.pad_token, tok.eos_token = "<|pad|>", "<|end|>"
    assert (tok.pad_token_id, tok.eos_token_id) == (50257, 50258)
    assert tok(["a b", "a"], padding=True)["input_ids"] == [[64, 275], [64, 50257]]
    tok.save_pretrained(tmp_path / "saved")
    hf_again = AutoTokenizer.from_pretrained(tmp_path / "saved")
    assert (hf_again.pad_token, hf_again.pad_token_id, hf_again.eos_token) == ("<|pad|>", 50257, "<|end|>")
    for role in ("pad_token", "eos_token"):
        with pytest.raises(ValueError, match=f"{role} 'Hello' is not one of this tokenizer's special tokens"):
            setattr(tok, role, "Hello")
    assert (tok.pad_token_id, tok.eos_token_id) == (50257, 50258)  # a refused name changes nothing
    tok.pad_token = None
    assert tok.pad_token_id is None and tok.pad_token is None
    for bad in (10**6, -1):  # (a reviewer's case: an id past the vocabulary was padding's output)
        with pytest.raises(ValueError, match=r"pad_token_id must be a token id in \[0, 50259\) or None"):
            tok.pad_token_id = bad
    for bad in (2.0, True):
        with pytest.raises(TypeError, match="pad_token_id must be an integer, got"):
            tok.pad_token_id = bad


@pytest.mark.parametrize("name", ["Ã¤", "ĠĠx"])
def test_a_special_token_spelled_in_the_byte_alphabet_decodes_as_transformers_decodes_it(tmp_path, name):
    """Bug guarded: a special token named in GPT-2's byte alphabet ("Ã¤" spells "ä") decoded as its
    spelling in minigpt ('aÃ¤b') and as its bytes in transformers ('aäb'). minigpt now decodes it
    as transformers does; so are added tokens ("café": the byte 0xE9, U+FFFD once decoded)."""
    from transformers import AutoTokenizer

    Tokenizer.train("a b ab " * 20, vocab_size=260, special_tokens=[EOT, name], progress=False).save_pretrained(tmp_path)
    tok, hf = Tokenizer.from_pretrained(tmp_path), AutoTokenizer.from_pretrained(tmp_path)
    ids = tok.encode(f"a{name}b", allowed_special="all")
    assert ids == hf.encode(f"a{name}b") and tok.decode(ids) == hf.decode(ids) == f"a{name.replace('Ã¤', 'ä').replace('Ġ', ' ')}b"
    hf.add_tokens(["café"])
    hf.save_pretrained(tmp_path / "added")
    ids = hf.encode("a café")
    assert Tokenizer.from_pretrained(tmp_path / "added").decode(ids) == hf.decode(ids) == "a caf\N{REPLACEMENT CHARACTER}"


def test_added_tokens_transformers_matches_in_another_order_are_refused(tmp_path):
    """Bug guarded: transformers matches the tokens marked "normalized": false first, then the rest;
    minigpt matches special tokens first, then added ones. An added token marked false that overlaps
    another ("ROMEOQ" in "xROMEOQ", which holds "xROMEO") gave transformers' [87, 50257] but
    minigpt's [50258, 48], silently."""
    from transformers import AddedToken, GPT2TokenizerFast

    hf = GPT2TokenizerFast.from_pretrained(GPT2_DIR)
    hf.add_tokens([AddedToken("ROMEOQ", normalized=False), "xROMEO"])
    hf.save_pretrained(tmp_path)
    assert hf("xROMEOQ")["input_ids"] == [87, 50257]
    with pytest.raises(ValueError, match=r"marks 'ROMEOQ' normalized=False, and 'xROMEO' overlaps it: "):
        Tokenizer.from_pretrained(tmp_path)


def test_a_special_token_marked_normalized_loads_where_no_token_overlaps_it(tmp_path):
    """The Hub's GPT-2 tokenizer.json marks <|endoftext|> "normalized": true, so transformers matches
    it after tokens marked false, such as a [PAD] added as special; with no overlap the order cannot
    change an id."""
    from transformers import AutoTokenizer, GPT2TokenizerFast

    hf = GPT2TokenizerFast.from_pretrained(GPT2_DIR)
    hf.add_special_tokens({"pad_token": "[PAD]"})
    hf.save_pretrained(tmp_path)
    data = json.loads((tmp_path / "tokenizer.json").read_text())
    eot = next(t for t in data["added_tokens"] if t["content"] == EOT)
    eot["normalized"] = True
    (tmp_path / "tokenizer.json").write_text(json.dumps(data))
    text = "a [PAD]<|endoftext|>[PAD] b"
    assert (Tokenizer.from_pretrained(tmp_path).encode(text, allowed_special="all")
            == AutoTokenizer.from_pretrained(tmp_path).encode(text) == [64, 220, 50257, 50256, 50257, 275])


def test_a_gap_in_tokenizer_json_added_ids_names_the_file_and_token(tmp_path):
    """transformers renumbers an added token whose id leaves a gap; minigpt refuses it, naming where."""
    _dir_with_added_words(tmp_path, "tokenizer.json")
    data = json.loads((tmp_path / "tokenizer.json").read_text())
    next(t for t in data["added_tokens"] if t["content"] == "hello world")["id"] = 50300
    (tmp_path / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'tokenizer.json'} gives the added token 'hello world' "
                                                   "the id 50300; transformers would add it at the next free id, 50258")):
        Tokenizer.from_pretrained(tmp_path)


def test_the_matching_order_check_looks_only_at_tokens_whose_flag_differs(monkeypatch):
    """A reviewer's catch: every pair of listed tokens was compared, 6 s for 1000 added tokens
    with transformers' default flags, where no order can differ."""
    import minigpt.tokenizer_files as files

    calls = []
    monkeypatch.setattr(files, "_overlap", lambda a, b: calls.append((a, b)) or False)
    files._refuse_other_order({}, {EOT: 50256}, {f"<extra_id_{i}>": 50257 + i for i in range(1000)}, Path("x"))
    assert calls == []


def test_a_token_added_tokens_decoder_marks_special_is_special_without_a_tokenizer_json(tmp_path):
    """tokenizer_config.json's added_tokens_decoder alone (no tokenizer.json) says which added
    tokens are special, as transformers reads it (a mutation audit: reading them as plain added
    tokens passed every test)."""
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(GPT2_DIR / name, tmp_path)
    vocab = json.loads((tmp_path / "vocab.json").read_text())
    (tmp_path / "vocab.json").write_text(json.dumps({**vocab, "<|im_start|>": 50257}))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|endoftext|>", "added_tokens_decoder": {
        "50256": {"content": "<|endoftext|>", "special": True}, "50257": {"content": "<|im_start|>", "special": True}}}))
    tok = Tokenizer.from_pretrained(tmp_path)
    assert tok.special_tokens["<|im_start|>"] == 50257 and "<|im_start|>" not in tok.added_tokens


def test_loading_thousands_of_added_tokens_takes_no_time_per_token(tmp_path, monkeypatch):
    """An audit: each added token's next free id was a max over the whole vocabulary, 1 ms a token:
    5,000 added tokens (a T5-style <extra_N> set) took 4.7 s to load. Found once now, then counted;
    the ids are transformers' (50257, 50258, ...), as before. The scan is counted, not timed: a
    time limit failed on a busy CI machine, where loading GPT-2's tokenizer alone took longer."""
    import minigpt.tokenizer_files as files
    from transformers import GPT2TokenizerFast

    extra = [f"<extra_{i}>" for i in range(5000)]
    gpt2_copy(tmp_path)
    (tmp_path / "added_tokens.json").write_text(json.dumps({t: 50257 + i for i, t in enumerate(extra)}))
    maxes = []
    monkeypatch.setattr(files, "max", lambda *a, **k: maxes.append(1) or max(*a, **k), raising=False)
    tok = Tokenizer.from_pretrained(tmp_path)
    assert len(maxes) == 1  # one scan of the vocabulary for all 5,000, not one each
    assert tok.added_tokens == {t: 50257 + i for i, t in enumerate(extra)}
    text = "a<extra_0>b <extra_4999>c<extra_12>"
    assert tok.encode(text) == GPT2TokenizerFast.from_pretrained(tmp_path).encode(text) == [64, 50257, 65, 220, 55256, 66, 50269]


def test_the_shipped_gpt2_tokenizer_opens_in_auto_tokenizer_with_gpt2s_context_length():
    """An audit: checkpoints/gpt2 had no tokenizer_config.json, so AutoTokenizer failed there (a
    misleading "install sentencepiece or tiktoken"), and model_max_length was None where the Hub's
    GPT-2 tokenizer says 1024. The file is minigpt's writer's (save_pretrained), byte for byte."""
    from transformers import AutoTokenizer

    hf, tok = AutoTokenizer.from_pretrained(GPT2_DIR), Tokenizer.from_pretrained(GPT2_DIR)
    assert hf.model_max_length == tok.model_max_length == 1024
    texts = ["Hello world", " naïve café 🙂\n\n  x", "don't STOP", "a" * 3000]
    assert [hf.encode(t) for t in texts] == [tok.encode(t) for t in texts]
    assert hf("word " * 2000, truncation=True)["input_ids"] == tok("word " * 2000, truncation=True)["input_ids"]
    assert len(tok("word " * 2000, truncation=True)["input_ids"]) == 1024
    assert (hf.eos_token_id, hf.pad_token_id) == (tok.eos_token_id, tok.pad_token_id) == (50256, 50256)


def test_the_shipped_gpt2_tokenizer_files_are_what_save_pretrained_writes_now(tok, tmp_path):
    """checkpoints/gpt2/tokenizer_config.json is generated, not hand-written: a change to what
    save_pretrained writes must regenerate it (GPT-2's vocab.json and merges.txt come out unchanged)."""
    tok.save_pretrained(tmp_path)
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        assert (tmp_path / name).read_bytes() == (GPT2_DIR / name).read_bytes(), name


def test_tokenizer_files_saved_with_a_byte_order_mark_load(tok, tmp_path):
    """A vocab.json or merges.txt saved by Notepad starts with a UTF-8 byte order mark: json refused
    it, and merges.txt's first line was no "#version" line. files.read_text now drops it for
    every reader (prepare, tokenize --train and eval read their texts through it too)."""
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        (tmp_path / name).write_bytes(b"\xef\xbb\xbf" + (GPT2_DIR / name).read_bytes())
    bom = Tokenizer.from_pretrained(tmp_path)
    assert bom.encode("Hello world") == tok.encode("Hello world") and bom.merges == tok.merges


# A child process that saves the shipped GPT-2 tokenizer into argv[1] argv[3] times, once argv[2] exists.
CONCURRENT_TOKENIZER_SAVER = """
import os, sys, time
from minigpt import Tokenizer
tok = Tokenizer.from_pretrained("gpt2")
print("ready", flush=True)
while not os.path.exists(sys.argv[2]):
    time.sleep(0.01)
for _ in range(int(sys.argv[3])):
    tok.save_pretrained(sys.argv[1])
"""


def test_two_processes_saving_a_tokenizer_into_one_folder_take_turns(tmp_path):
    """A review: every rank of a script saving its tokenizer into one folder shared atomic_path's
    temp names, so a save could fail with FileNotFoundError as the other renamed its file away.
    The save lock (files.save_lock, as a checkpoint's save takes) makes them take turns. (Without it,
    40 saves each failed 2 of 6 children in three runs: a race, which this test catches often, not always.)"""
    import subprocess
    import sys

    go = tmp_path / "go"
    children = [subprocess.Popen([sys.executable, "-c", CONCURRENT_TOKENIZER_SAVER, str(tmp_path / "tok"), str(go), "40"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    assert [c.stdout.readline() for c in children] == ["ready\n", "ready\n"]
    go.touch()
    for c in children:
        assert c.wait(timeout=120) == 0, c.stderr.read()
    assert Tokenizer.from_pretrained(tmp_path / "tok").encode("Hello world") == [15496, 995]
    assert sorted(p.name for p in (tmp_path / "tok").iterdir()) == ["merges.txt", "tokenizer_config.json", "vocab.json"]


def test_recorded_length_is_the_record_alone_and_none_where_unreadable(tmp_path):
    """`minigpt eval` reads the length a model trained on from its folder's tokenizer_config.json,
    whatever --tokenizer says. A review: it loaded the folder's whole tokenizer for it, so a folder
    whose tokenizer minigpt refuses (a WordPiece tokenizer.json) failed even with --tokenizer given."""
    from minigpt.tokenizer_files import recorded_length

    assert recorded_length(tmp_path) is None  # no file
    (tmp_path / "tokenizer.json").write_text('{"model": {"type": "WordPiece"}}')  # refused as a tokenizer: no matter
    for text, length in [('{"model_max_length": 16}', 16), ('{"model_max_length": 1e30}', None),
                         ('{"model_max_length": true}', None), ('{"model_max_length": 0}', None), ("[16]", None),
                         ("{not json", None), ("{}", None)]:
        (tmp_path / "tokenizer_config.json").write_text(text)
        assert recorded_length(tmp_path) == length, text


@pytest.mark.parametrize("failure", ["full disk at the write", "full disk at the fsync", "read-only folder"])
def test_a_tokenizer_save_that_fails_in_its_atomic_write_names_vocab_json_or_nothing(tmp_path, monkeypatch, capsys,
                                                                                      failure):
    """A code reread: the tokenizer CLI stripped ".tmp" from a failed save's file name itself, since
    files.atomic_path raised the temp file's error as it was (vocab.json.tmp). atomic_path names the
    file now: a folder made read-only refuses the temp by name, said as vocab.json. A review: a full
    disk that fails a write names no file, which atomic_path names by its folder, --out itself, and
    the CLI said it twice ("--out .../tok: tok: No space left on device"): it is said once. A later
    review: this test mocked fsync_file raising an error of no file, which the real one no longer
    raises (it names its temp): os.fsync itself fails now, and the CLI says "vocab.json: ..."."""
    import errno

    import minigpt.files

    def write_to_full_disk(path, flags, mode=0o666):  # the temp opened for writing: /dev/full's ENOSPC, no file name
        if not flags & os.O_WRONLY:
            return real_no_follow(path, flags, mode)
        return os.open("/dev/full", os.O_WRONLY)

    def full_disk_at_fsync(fd):  # as the kernel fails it: an error of an fd, naming no file
        raise OSError(errno.ENOSPC, "No space left on device")

    def read_only(path):  # as os.open refuses to create vocab.json.tmp: naming it
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    real_no_follow = minigpt.files.no_follow
    if failure == "full disk at the write":
        if not os.path.exists("/dev/full"):
            pytest.skip("no /dev/full (a device that always says the disk is full) on this system")
        monkeypatch.setattr(minigpt.files, "no_follow", write_to_full_disk)
    elif failure == "full disk at the fsync":
        monkeypatch.setattr(os, "fsync", full_disk_at_fsync)
    else:
        monkeypatch.setattr(minigpt.files, "fresh_file", read_only)
    data, out = tmp_path / "data.txt", tmp_path / "tok"
    data.write_text("the cat sat on the mat " * 20, encoding="utf-8")
    assert tokenizer_cli.main(["--train", str(data), "--vocab-size", "262", "--out", str(out)]) == 2
    said = {"full disk at the write": "No space left on device",
            "full disk at the fsync": "vocab.json: No space left on device",
            "read-only folder": "vocab.json: Permission denied"}[failure]
    err = capsys.readouterr().err
    assert f"tokenize --train: error: cannot save the tokenizer to --out {out}: {said}\n" in err and ".tmp" not in err, err


@pytest.mark.skipif(os.name == "nt", reason="symbolic links need admin rights on Windows")
@pytest.mark.parametrize("refused_with", ["ELOOP", "EMLINK"])
def test_a_link_planted_at_a_tokenizer_files_temp_is_said_of_the_temp(tmp_path, monkeypatch, capsys, request,
                                                                      refused_with):
    """A review: files.atomic_path told an error about its temp itself by its errno, ELOOP or EEXIST,
    but FreeBSD's O_NOFOLLOW refuses a link with EMLINK: a symbolic link swapped in for
    vocab.json.tmp was then said of vocab.json, the user's file ("vocab.json: is a symbolic link").
    Marked by its class now (files.NotOurFileError), it names the temp on either system, worded as
    eval's --predictions words it (files.failure_reason)."""
    import minigpt.files

    real_fsync_file = minigpt.files.fsync_file

    def swapped(path, mode=None):  # someone swaps a link in for the temp after it was written
        if path.name == "vocab.json.tmp":
            path.unlink()
            path.symlink_to(tmp_path / "elsewhere")
        return real_fsync_file(path, mode)

    if refused_with == "EMLINK":
        request.getfixturevalue("freebsd_nofollow")  # os.open refuses a link as FreeBSD's does
    monkeypatch.setattr(minigpt.files, "fsync_file", swapped)
    data, out = tmp_path / "data.txt", tmp_path / "tok"
    data.write_text("the cat sat on the mat " * 20, encoding="utf-8")
    assert tokenizer_cli.main(["--train", str(data), "--vocab-size", "262", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert (f"tokenize --train: error: cannot save the tokenizer to --out {out}: vocab.json.tmp: is a symbolic link, "
            "which minigpt does not write through (one planted there could point at any file); remove it\n") in err, err
    assert not (tmp_path / "elsewhere").exists()


@pytest.mark.parametrize("text", ['{"model": 3}', '[1, 2]', '{"model": {"type": "BPE"}, "pre_tokenizer": "ByteLevel"}'])
def test_a_tokenizer_json_that_is_no_object_where_one_belongs_is_named(tmp_path, text):
    """A review: a tokenizer.json whose model was no JSON object failed with "'int' object has no
    attribute 'get'"; it is a ValueError naming the file."""
    (tmp_path / "tokenizer.json").write_text(text)
    with pytest.raises(ValueError, match=r"tokenizer.json is not a `tokenizers` file: it, its model and its "
                                         r"pre_tokenizer must be JSON objects"):
        Tokenizer.from_pretrained(tmp_path)
