"""scripts/export_checkpoint.py replaces nothing it was not asked to, and ships the tokenizer that
src holds, in whichever of minigpt's formats src holds it (vocab.json + merges.txt, or tokenizer.json)."""
from __future__ import annotations

import importlib.util
import json
import shutil
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


def test_a_gpt2_size_by_name_exports_with_the_tokenizer_of_the_copy_found(tmp_path, tok, monkeypatch, capsys):
    """An audit: `export_checkpoint.py gpt2 DST` read the weights from the Hugging Face cache (as
    GPT.from_pretrained("gpt2") finds them) but looked for the tokenizer in ./gpt2, so it exported
    the weights alone with a warning. A copy without tokenizer files takes the shipped GPT-2 one."""
    from minigpt import download

    monkeypatch.setattr(download, "DOWNLOADS", tmp_path / "ck")  # no checkpoints/gpt2 with weights
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # found, never fetched
    repo = tmp_path / "hf" / "models--openai-community--gpt2"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("c0ffee\n")
    snapshot = checkpoint(repo / "snapshots" / "c0ffee", tok)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")  # no ./gpt2 here
    assert export.main(["gpt2", "with_tok"]) == 0
    assert "no tokenizer" not in capsys.readouterr().err
    assert Tokenizer.from_pretrained("with_tok").encode(TEXT) == tok.encode(TEXT)
    for name in ("vocab.json", "merges.txt"):
        (snapshot / name).unlink()
    assert export.main(["gpt2", "shipped_tok"]) == 0
    assert "no tokenizer" not in capsys.readouterr().err
    assert Tokenizer.from_pretrained("shipped_tok").vocab_size == Tokenizer.from_pretrained("gpt2").vocab_size == 50257
    assert export.main(["gpt2", str(snapshot), "--overwrite"]) == 2  # the copy found is src, whatever its name
    assert "is src" in capsys.readouterr().err


def test_a_weight_past_float16s_range_is_refused_not_written_as_inf(tmp_path, tok, capsys):
    """An audit: a weight of 1e5 became inf in a float16 export (exit 0), and the model gave NaN logits."""
    src = checkpoint(tmp_path / "src", tok)
    model = GPT.from_pretrained(src, dtype=None)
    with torch.no_grad():
        model.transformer.h[0].mlp.c_fc.weight[0, 0] = -1e5
    model.save_pretrained(src)
    assert export.main([str(src), str(tmp_path / "dst")]) == 2
    assert ("error: transformer.h.0.mlp.c_fc.weight holds 100000 (its largest |value|), past float16's largest "
            "finite value 65504: it would be written as inf; export with --dtype bfloat16") in capsys.readouterr().err
    assert not (tmp_path / "dst").exists()
    assert export.main([str(src), str(tmp_path / "dst"), "--dtype", "bfloat16"]) == 0
    exported = GPT.from_pretrained(tmp_path / "dst", dtype=None)
    assert next(exported.parameters()).dtype == torch.bfloat16
    assert all(torch.isfinite(p).all() for p in exported.parameters())
    ids = torch.tensor([tok.encode(TEXT)[:16]])
    assert torch.allclose(exported.float()(ids)[0], model(ids)[0], atol=0.1)  # the same model, at bfloat16's precision
    with torch.no_grad():  # a src broken already is named so, with no dtype to suggest
        model.transformer.h[0].mlp.c_fc.weight[0, 0] = float("nan")
    model.save_pretrained(src)
    assert export.main([str(src), str(tmp_path / "dst2")]) == 2
    assert "src's transformer.h.0.mlp.c_fc.weight holds NaN or inf already" in capsys.readouterr().err
    assert not (tmp_path / "dst2").exists()


def test_generation_config_is_copied_and_config_json_keeps_its_own_token_ids(tmp_path, tok):
    """An audit: the export dropped src's generation_config.json (transformers' generate made 20
    greedy tokens where src's sampled 7), and wrote generate's token ids into config.json, so a
    pad_token_id set on the config after the model was built, as is common (and so missing from
    generation_config.json), came out null. Both files now come out as src has them."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config(vocab_size=tok.vocab_size, n_positions=16, n_embd=16, n_layer=1, n_head=2,
                                    bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id))
    hf.config.pad_token_id = 7
    hf.generation_config.update(do_sample=True, top_k=5, max_new_tokens=7)
    src, dst = tmp_path / "src", tmp_path / "dst"
    hf.save_pretrained(src)
    tok.save_pretrained(src)
    assert "pad_token_id" not in (src / "generation_config.json").read_text()
    assert export.main([str(src), str(dst), "--dtype", "float32"]) == 0
    assert (dst / "generation_config.json").read_bytes() == (src / "generation_config.json").read_bytes()
    theirs = {d: GPT2LMHeadModel.from_pretrained(d) for d in (src, dst)}
    for kind in ("config", "generation_config"):  # transformers reads each of dst's files as src's
        ids = {d: [getattr(getattr(m, kind), f"{t}_token_id") for t in ("bos", "eos", "pad")] for d, m in theirs.items()}
        assert ids[dst] == ids[src], kind
    assert theirs[dst].config.pad_token_id == 7
    assert GPT.from_pretrained(dst).config == GPT.from_pretrained(src).config  # generate's ids: no pad, as transformers
    ids = torch.tensor([tok.encode("To be")])
    assert theirs[dst].generate(ids, attention_mask=torch.ones_like(ids)).size(1) == ids.size(1) + 7  # 7 sampled
    # The copy is another model's for the next export: --overwrite needed, and gone when src has none.
    plain = checkpoint(tmp_path / "plain", tok)
    assert export.main([str(plain), str(dst)]) == 2
    assert export.main([str(plain), str(dst), "--overwrite"]) == 0
    assert not (dst / "generation_config.json").exists()
    (tmp_path / "gen_only").mkdir()  # the export would remove it too
    (tmp_path / "gen_only" / "generation_config.json").write_bytes((src / "generation_config.json").read_bytes())
    assert export.main([str(plain), str(tmp_path / "gen_only")]) == 2


def test_lora_adapters_alone_export_merged_with_their_bases_tokenizer(tmp_path, tok, capsys):
    """An audit: a LoRA run's adapter/ (the adapters alone, no tokenizer files) exported the merged
    weights without a tokenizer, though generate reads it with its base's. And a dst that is a file
    was a raw "[Errno 17] File exists"."""
    from minigpt.lora import inject_lora, save_adapters

    base = checkpoint(tmp_path / "base", tok)
    model = GPT.from_pretrained(base)
    inject_lora(model, ["c_attn"], rank=2, alpha=4)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    save_adapters(model, tmp_path / "adapter", base=str(base))
    assert export.main([str(tmp_path / "adapter"), str(tmp_path / "dst"), "--dtype", "float32"]) == 0
    assert "warning" not in capsys.readouterr().err
    assert Tokenizer.from_pretrained(tmp_path / "dst").encode(TEXT[:40]) == tok.encode(TEXT[:40])
    ids = torch.tensor([tok.encode(TEXT[:40])])
    with torch.no_grad():
        torch.testing.assert_close(GPT.from_pretrained(tmp_path / "dst")(ids)[0], model.eval()(ids)[0])
    # Adapters whose base is adapters alone too take the tokenizer of the first base along the chain with one.
    shutil.copytree(tmp_path / "adapter", tmp_path / "adapter2")
    config = tmp_path / "adapter2" / "adapter_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "base_model_name_or_path": str(tmp_path / "adapter")}))
    assert export.main([str(tmp_path / "adapter2"), str(tmp_path / "dst3"), "--dtype", "float32"]) == 0
    assert Tokenizer.from_pretrained(tmp_path / "dst3").encode(TEXT[:40]) == tok.encode(TEXT[:40])
    (tmp_path / "file").write_text("")
    assert export.main([str(base), str(tmp_path / "file")]) == 2
    assert f"dst {tmp_path / 'file'} is no directory (a file, or a link to none)" in capsys.readouterr().err
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    assert export.main([str(base), str(tmp_path / "dangling")]) == 2
    assert f"dst {tmp_path / 'dangling'} is no directory" in capsys.readouterr().err
    # A review: adapters whose base's tokenizer is broken are refused, as the base is, not exported without it.
    (tmp_path / "base" / "vocab.json").unlink()
    assert export.main([str(tmp_path / "adapter"), str(tmp_path / "dst2")]) == 2
    assert "merges.txt" in capsys.readouterr().err and not (tmp_path / "dst2").exists()


def test_adapters_on_a_gpt2_size_take_its_tokenizer_and_bases_that_loop_are_refused(tmp_path, monkeypatch):
    """A mutation audit: resolve_src's walk along the adapters' bases was pinned for folders only.
    Adapters whose base is a GPT-2 size by name take the shipped tokenizer (the sizes share one),
    before any weights are read; bases that loop back are refused, not followed for ever."""
    def adapters(name: str, base: str) -> Path:
        (tmp_path / name).mkdir()
        (tmp_path / name / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "base_model_name_or_path": base,
                                                                         "target_modules": ["c_attn"], "r": 2}))
        return tmp_path / name

    monkeypatch.chdir(tmp_path)  # (where no ./gpt2-medium folder stands for the size)
    _, tokenizer = export.resolve_src(str(adapters("medium", "gpt2-medium")))
    assert tokenizer is not None and tokenizer.vocab_size == 50257
    adapters("a", str(tmp_path / "b"))
    adapters("b", str(tmp_path / "a"))
    with pytest.raises(ValueError, match="name base models that loop back"):
        export.resolve_src(str(tmp_path / "a"))
