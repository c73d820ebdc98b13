"""scripts/export_checkpoint.py replaces nothing it was not asked to, and ships the tokenizer that
src holds, in whichever of minigpt's formats src holds it (vocab.json + merges.txt, or tokenizer.json)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from minigpt import GPT, GPTConfig
from minigpt.tokenizer import Tokenizer

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "export_checkpoint.py"
spec = importlib.util.spec_from_file_location("export_checkpoint", SCRIPT)
export = importlib.util.module_from_spec(spec)
spec.loader.exec_module(export)

TEXT = "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer. " * 20


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer.train(TEXT, 300, progress=False)


def checkpoint(path: Path, tok: Tokenizer | None, vocab_size: int | None = None) -> Path:
    """A tiny float32 GPT in `path`, with `tok`'s files beside it (None: no tokenizer)."""
    torch.manual_seed(0)
    GPT(GPTConfig(vocab_size=vocab_size or tok.vocab_size, n_positions=16, n_embd=16, n_layer=1, n_head=2)).save_pretrained(path)
    if tok is not None:
        tok.save_pretrained(path)
    return path


def hf_tokenizer_json(tok: Tokenizer, path: Path) -> None:
    """`tok` saved by transformers (5 writes tokenizer.json, not vocab.json + merges.txt)."""
    from transformers import GPT2TokenizerFast

    tok.save_pretrained(path / "plain")
    GPT2TokenizerFast.from_pretrained(path / "plain").save_pretrained(path)
    for name in ("vocab.json", "merges.txt"):  # transformers 4 writes them too: keep tokenizer.json alone
        (path / name).unlink(missing_ok=True)
    assert (path / "tokenizer.json").exists()


def test_a_dst_holding_a_checkpoint_is_refused_unless_overwrite(tmp_path, tok, capsys):
    """Found by an audit: another model in dst was replaced without a word."""
    src, dst = checkpoint(tmp_path / "src", tok), checkpoint(tmp_path / "dst", None, vocab_size=99)
    before = (dst / "model.safetensors").read_bytes()
    assert export.main([str(src), str(dst)]) == 2
    assert f"dst {dst} already holds a checkpoint or tokenizer (config.json, model.safetensors); pass --overwrite" \
        in capsys.readouterr().err
    assert (dst / "model.safetensors").read_bytes() == before
    assert export.main([str(src), str(dst), "--overwrite"]) == 0
    assert GPT.from_pretrained(dst, dtype=None).config.vocab_size == tok.vocab_size
    assert Tokenizer.from_pretrained(dst).encode(TEXT) == tok.encode(TEXT)


def test_a_stale_tokenizer_json_in_dst_is_replaced_with_the_models_tokenizer(tmp_path, tok, capsys):
    """dst held GPT-2's tokenizer.json: vocab.json and merges.txt were copied beside it, and
    transformers, which reads tokenizer.json first, loaded 50257 tokens for a 300-token model."""
    from transformers import AutoTokenizer, GPT2TokenizerFast

    src, dst = checkpoint(tmp_path / "src", tok), tmp_path / "dst"
    GPT2TokenizerFast.from_pretrained(Path(export.__file__).parents[1] / "checkpoints" / "gpt2").save_pretrained(dst)
    assert export.main([str(src), str(dst)]) == 2
    assert "tokenizer.json" in capsys.readouterr().err
    assert export.main([str(src), str(dst), "--overwrite"]) == 0
    assert not (dst / "tokenizer.json").exists()
    hf = AutoTokenizer.from_pretrained(dst)
    assert len(hf) == tok.vocab_size and hf(TEXT)["input_ids"] == tok.encode(TEXT)


def test_a_tokenizer_stored_as_tokenizer_json_is_exported(tmp_path, tok):
    """Only vocab.json, merges.txt and tokenizer_config.json were copied: a src whose tokenizer
    was tokenizer.json alone exported without one."""
    src = checkpoint(tmp_path / "src", None, vocab_size=tok.vocab_size)
    hf_tokenizer_json(tok, src)
    assert export.main([str(src), str(tmp_path / "dst")]) == 0
    assert Tokenizer.from_pretrained(tmp_path / "dst").encode(TEXT) == tok.encode(TEXT)
    assert (tmp_path / "dst" / "vocab.json").exists() and not (tmp_path / "dst" / "tokenizer.json").exists()


def test_a_src_without_a_tokenizer_exports_the_weights_and_says_so(tmp_path, tok, capsys):
    src = checkpoint(tmp_path / "src", None, vocab_size=50)
    assert export.main([str(src), str(tmp_path / "dst")]) == 0
    assert f"warning: {src} has no tokenizer" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "dst").iterdir()) == ["config.json", "model.safetensors"]
    tok.save_pretrained(tmp_path / "dst")  # a dst with a tokenizer the weights may not fit: not left beside them
    assert export.main([str(src), str(tmp_path / "dst"), "--overwrite"]) == 2
    assert f"src {src} has no tokenizer, so dst's (vocab.json, merges.txt, tokenizer_config.json) would stay" \
        in capsys.readouterr().err


def test_dst_is_never_src_and_a_broken_src_writes_nothing(tmp_path, tok, capsys):
    """In place, the float32 weights were replaced by their float16 cast for good."""
    src = checkpoint(tmp_path / "src", tok)
    assert export.main([str(src), str(tmp_path / "src" / "."), "--overwrite"]) == 2
    assert f"dst {tmp_path / 'src'} is src: the export would replace src's weights with their float16 cast" \
        in capsys.readouterr().err
    assert next(GPT.from_pretrained(src, dtype=None).parameters()).dtype == torch.float32
    # src named another way is src too: relative, through a symlink, or through a folder not yet
    # made ("new/../src" was written into, without --overwrite: a mutation audit).
    (tmp_path / "link").symlink_to(src)
    for dst in ("src", str(tmp_path / "link"), str(tmp_path / "new" / ".." / "src")):
        with pytest.MonkeyPatch.context() as mp:
            mp.chdir(tmp_path)
            assert export.main([str(src), dst, "--overwrite"]) == 2, dst
        assert "is src" in capsys.readouterr().err
    assert next(GPT.from_pretrained(src, dtype=None).parameters()).dtype == torch.float32
    (src / "vocab.json").unlink()  # merges.txt alone is no tokenizer: refused before dst is made
    assert export.main([str(src), str(tmp_path / "dst")]) == 2
    assert "has merges.txt but no vocab.json" in capsys.readouterr().err
    assert not (tmp_path / "dst").exists()
    assert export.main([str(tmp_path / "missing"), str(tmp_path / "dst")]) == 2
    assert "missing does not exist" in capsys.readouterr().err
