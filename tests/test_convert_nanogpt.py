"""scripts/convert_nanogpt.py: a nanoGPT ckpt.pt becomes a minigpt checkpoint that computes what
nanoGPT's model.py computes, but for the GELU (nanoGPT's exact one, minigpt's tanh approximation)."""
from __future__ import annotations

import argparse
import importlib.util
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from minigpt import GPT
from minigpt.tokenizer import Tokenizer

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "convert_nanogpt.py"
spec = importlib.util.spec_from_file_location("convert_nanogpt", SCRIPT)
convert = importlib.util.module_from_spec(spec)
spec.loader.exec_module(convert)

N_LAYER, N_HEAD, N_EMBD, BLOCK_SIZE = 2, 2, 64, 32


def nanogpt_state(vocab_size: int, bias: bool) -> dict[str, torch.Tensor]:
    """A random state dict under nanoGPT model.py's names (nn.Linear's (out, in) weights). Biases and
    LayerNorm gains are random too, so a weight copied to the wrong place changes the logits."""
    C, g = N_EMBD, torch.Generator().manual_seed(0)

    def rand(*shape: int, mean: float = 0.0) -> torch.Tensor:
        return mean + 0.02 * torch.randn(*shape, generator=g)

    state = {"transformer.wte.weight": rand(vocab_size, C), "transformer.wpe.weight": rand(BLOCK_SIZE, C)}
    shapes = {"ln_1": (C,), "attn.c_attn": (3 * C, C), "attn.c_proj": (C, C), "ln_2": (C,), "mlp.c_fc": (4 * C, C),
              "mlp.c_proj": (C, 4 * C)}
    for i in range(N_LAYER):
        for name, shape in shapes.items():
            p = f"transformer.h.{i}.{name}"
            state[f"{p}.weight"] = rand(*shape, mean=1.0 if name.startswith("ln") else 0.0)
            if bias:
                state[f"{p}.bias"] = rand(shape[0])
        # The causal-mask buffer nanoGPT registers when PyTorch has no flash attention: not a weight.
        state[f"transformer.h.{i}.attn.bias"] = torch.tril(torch.ones(BLOCK_SIZE, BLOCK_SIZE)).view(1, 1, BLOCK_SIZE, BLOCK_SIZE)
    state["transformer.ln_f.weight"] = rand(C, mean=1.0)
    if bias:
        state["transformer.ln_f.bias"] = rand(C)
    state["lm_head.weight"] = state["transformer.wte.weight"]  # nanoGPT ties them
    return state


def save_nanogpt_ckpt(path: Path, vocab_size: int = 50304, bias: bool = True) -> dict[str, torch.Tensor]:
    """What nanoGPT's train.py saves: the compiled model's state dict ("_orig_mod." keys), an AdamW
    state after one step, model_args, config, iter_num and best_val_loss (a tensor). Returns the state."""
    state = nanogpt_state(vocab_size, bias)
    params = [torch.nn.Parameter(t.clone()) for t in list(state.values())[:3]]
    optimizer = torch.optim.AdamW(params, lr=6e-4, betas=(0.9, 0.95))
    with torch.enable_grad():  # (a test may run under no_grad)
        sum(p.sum() for p in params).backward()
    optimizer.step()
    model_args = dict(n_layer=N_LAYER, n_head=N_HEAD, n_embd=N_EMBD, block_size=BLOCK_SIZE, bias=bias,
                      vocab_size=vocab_size, dropout=0.0)
    config = {"out_dir": "out", "eval_interval": 2000, "compile": True, "dtype": "bfloat16", "learning_rate": 6e-4}
    torch.save({"model": {f"_orig_mod.{k}": v for k, v in state.items()}, "optimizer": optimizer.state_dict(),
                "model_args": model_args, "iter_num": 100, "best_val_loss": torch.tensor(2.5), "config": config}, path)
    return state


def nanogpt_logits(state: dict[str, torch.Tensor], ids: torch.Tensor, gelu: str) -> torch.Tensor:
    """nanoGPT model.py's forward, written out on its state dict: the reference. gelu="none" is
    nanoGPT's own (nn.GELU(), exact), "tanh" minigpt's. A bias=False model's biases are None."""
    B, T = ids.shape
    C = N_EMBD
    x = state["transformer.wte.weight"][ids] + state["transformer.wpe.weight"][:T]  # (B, T, C)
    for i in range(N_LAYER):
        p = f"transformer.h.{i}."
        ln_1 = F.layer_norm(x, (C,), state[p + "ln_1.weight"], state.get(p + "ln_1.bias"), 1e-5)
        q, k, v = F.linear(ln_1, state[p + "attn.c_attn.weight"], state.get(p + "attn.c_attn.bias")).split(C, dim=2)
        q, k, v = (t.view(B, T, N_HEAD, C // N_HEAD).transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, C)
        x = x + F.linear(y, state[p + "attn.c_proj.weight"], state.get(p + "attn.c_proj.bias"))
        ln_2 = F.layer_norm(x, (C,), state[p + "ln_2.weight"], state.get(p + "ln_2.bias"), 1e-5)
        h = F.gelu(F.linear(ln_2, state[p + "mlp.c_fc.weight"], state.get(p + "mlp.c_fc.bias")), approximate=gelu)
        x = x + F.linear(h, state[p + "mlp.c_proj.weight"], state.get(p + "mlp.c_proj.bias"))
    x = F.layer_norm(x, (C,), state["transformer.ln_f.weight"], state.get("transformer.ln_f.bias"), 1e-5)
    return F.linear(x, state["lm_head.weight"])  # (B, T, vocab_size)


@torch.no_grad()
def test_a_compiled_nanogpt_checkpoint_converts_key_for_key(tmp_path, capsys):
    """There was no way from nanoGPT's ckpt.pt to a minigpt checkpoint: `--model out/ckpt.pt` was refused.
    The converted model gives nanoGPT's logits but for the GELU, and gets GPT-2's tokenizer."""
    state = save_nanogpt_ckpt(tmp_path / "ckpt.pt")
    assert convert.main([str(tmp_path), str(tmp_path / "conv")]) == 0  # nanoGPT's out_dir, as well as its ckpt.pt
    ids = torch.randint(0, 50257, (2, BLOCK_SIZE), generator=torch.Generator().manual_seed(1))
    got, _ = GPT.from_pretrained(tmp_path / "conv").eval()(ids)  # (logits, loss)
    assert got.shape == (2, BLOCK_SIZE, 50304)
    same_gelu = (got - nanogpt_logits(state, ids, gelu="tanh")).abs().max().item()
    exact_gelu = (got - nanogpt_logits(state, ids, gelu="none")).abs().max().item()
    with capsys.disabled():  # the measured difference, shown by pytest -s
        print(f"max |logit diff| vs nanoGPT: {exact_gelu:.2e} (its exact GELU), {same_gelu:.2e} (the same tanh GELU)")
    assert same_gelu < 1e-5  # every weight in its place: float rounding only
    assert 0 < exact_gelu < 1e-3  # the GELUs differ, slightly
    tok = Tokenizer.from_pretrained(tmp_path / "conv")
    assert tok.vocab_size == 50257 and tok.decode(tok.encode("ROMEO: hi")) == "ROMEO: hi"
    assert "converted" in capsys.readouterr().out


@torch.no_grad()
def test_a_bias_false_character_model_gets_zero_biases_and_no_tokenizer(tmp_path, capsys):
    """nanoGPT's bias=False has no bias tensors (LayerNorms' included): zeros compute the same. Its
    65-character vocabulary (meta.pkl) is not converted, and the script says so."""
    state = save_nanogpt_ckpt(tmp_path / "ckpt.pt", vocab_size=65, bias=False)
    assert convert.main([str(tmp_path / "ckpt.pt"), str(tmp_path / "conv")]) == 0
    ids = torch.randint(0, 65, (1, BLOCK_SIZE), generator=torch.Generator().manual_seed(1))
    model = GPT.from_pretrained(tmp_path / "conv").eval()
    assert (model(ids)[0] - nanogpt_logits(state, ids, gelu="tanh")).abs().max() < 1e-5
    assert model.config.eos_token_id is None  # a character vocabulary has no <|endoftext|>
    assert not (tmp_path / "conv" / "vocab.json").exists()
    assert "meta.pkl, which is not converted" in capsys.readouterr().err


def test_a_pickle_holding_more_than_weights_is_refused_not_unpickled(tmp_path, capsys):
    """ckpt.pt is a pickle: one holding an object (which unpickling would build, running its code)
    is refused by weights_only=True, and nothing is written."""
    torch.save({"model": {}, "model_args": {}, "config": argparse.Namespace(lr=1.0)}, tmp_path / "ckpt.pt")
    assert convert.main([str(tmp_path / "ckpt.pt"), str(tmp_path / "conv")]) == 2
    assert "ckpt.pt holds an object of class argparse.Namespace; not unpickling it" in capsys.readouterr().err
    assert not (tmp_path / "conv").exists()
    (tmp_path / "ckpt.pt").write_text("hello")  # no pickle at all
    assert convert.main([str(tmp_path / "ckpt.pt"), str(tmp_path / "conv")]) == 2
    assert "ckpt.pt is no file torch.save wrote, or one cut short" in capsys.readouterr().err


def test_a_missing_checkpoint_is_named_not_given_as_a_raw_errno(tmp_path, capsys):
    """An audit: `convert_nanogpt.py /nonexistent out` said "[Errno 2] No such file or directory:
    '/nonexistent'", where every other command names what is missing ("checkpoint directory X does
    not exist"); an out_dir without ckpt.pt said the same of a path never typed. Nothing is written."""
    assert convert.main([str(tmp_path / "nonexistent"), str(tmp_path / "conv")]) == 2
    err = capsys.readouterr().err
    assert err == (f"convert_nanogpt.py: error: nanoGPT checkpoint {tmp_path / 'nonexistent'} does not exist: it is the "
                   "ckpt.pt nanoGPT's train.py writes, or the out_dir that holds it\n"), err
    (tmp_path / "out_dir").mkdir()
    assert convert.main([str(tmp_path / "out_dir"), str(tmp_path / "conv")]) == 2
    err = capsys.readouterr().err
    assert f"nanoGPT checkpoint {tmp_path / 'out_dir'} is a directory without a ckpt.pt" in err and "Errno" not in err
    assert not (tmp_path / "conv").exists()


def test_an_out_that_holds_a_checkpoint_is_kept_without_overwrite(tmp_path, capsys):
    save_nanogpt_ckpt(tmp_path / "ckpt.pt", vocab_size=65)
    assert convert.main([str(tmp_path / "ckpt.pt"), str(tmp_path / "conv")]) == 0
    before = (tmp_path / "conv" / "model.safetensors").read_bytes()
    assert convert.main([str(tmp_path / "ckpt.pt"), str(tmp_path / "conv")]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (tmp_path / "conv" / "model.safetensors").read_bytes() == before
    assert convert.main([str(tmp_path / "ckpt.pt"), str(tmp_path / "conv"), "--overwrite"]) == 0
    # An audit: a BPE model's tokenizer left in out stayed beside a character model converted over it.
    save_nanogpt_ckpt(tmp_path / "bpe.pt", vocab_size=50304)
    assert convert.main([str(tmp_path / "bpe.pt"), str(tmp_path / "conv"), "--overwrite"]) == 0
    before = (tmp_path / "conv" / "model.safetensors").read_bytes()
    capsys.readouterr()
    assert convert.main([str(tmp_path / "ckpt.pt"), str(tmp_path / "conv"), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "holds a 50257-token tokenizer (vocab.json, merges.txt) that would stay beside a 65-id" in err, err
    assert (tmp_path / "conv" / "model.safetensors").read_bytes() == before
    # A review: one that fits (the user's own, as the warning asks for) stays, as before.
    Tokenizer.train("First Citizen: " * 50, 256 + 9, progress=False).save_pretrained(tmp_path / "own")
    save_nanogpt_ckpt(tmp_path / "small.pt", vocab_size=300)
    assert convert.main([str(tmp_path / "small.pt"), str(tmp_path / "own")]) == 0
    assert "warning" not in capsys.readouterr().err  # it is not the weights alone
    assert Tokenizer.from_pretrained(tmp_path / "own").vocab_size == 265
    save_nanogpt_ckpt(tmp_path / "exact.pt", vocab_size=265)  # as many ids as tokens fits too (a mutation audit)
    assert convert.main([str(tmp_path / "exact.pt"), str(tmp_path / "own"), "--overwrite"]) == 0
    assert "warning" not in capsys.readouterr().err and Tokenizer.from_pretrained(tmp_path / "own").vocab_size == 265
    (tmp_path / "half").mkdir()  # a vocab.json alone (its merges.txt gone): no tokenizer, refused too (a review)
    (tmp_path / "half" / "vocab.json").write_text("{}")
    assert convert.main([str(tmp_path / "ckpt.pt"), str(tmp_path / "half")]) == 2
    assert "holds tokenizer files that cannot be read (vocab.json)" in capsys.readouterr().err
    # A review: a BPE model replaces OUT's tokenizer, so a broken one there is no matter (it was a traceback).
    (tmp_path / "half" / "vocab.json").unlink()
    (tmp_path / "half" / "tokenizer.json").write_text('{"model": 3}')
    assert convert.main([str(tmp_path / "bpe.pt"), str(tmp_path / "half")]) == 0
    assert Tokenizer.from_pretrained(tmp_path / "half").vocab_size == 50257


@pytest.mark.parametrize("missing", ["block_size", "vocab_size"])
def test_model_args_without_a_shape_are_named(tmp_path, capsys, missing):
    save_nanogpt_ckpt(tmp_path / "ckpt.pt", vocab_size=65)
    saved = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    del saved["model_args"][missing]
    torch.save(saved, tmp_path / "ckpt.pt")
    assert convert.main([str(tmp_path / "ckpt.pt"), str(tmp_path / "conv")]) == 2
    assert f"lack {missing}" in capsys.readouterr().err


def test_a_nanogpt_ckpt_passed_as_a_checkpoint_names_the_converter(tmp_path):
    """An audit: `--init out/ckpt.pt` was told "is a file ... (out?)", and `--model out` "no config.json":
    a parent that holds no checkpoint either. A pickle, or a folder holding nanoGPT's ckpt.pt, names
    the converter; a file beside no config.json suggests no parent."""
    save_nanogpt_ckpt(tmp_path / "ckpt.pt", vocab_size=65)
    with pytest.raises(NotADirectoryError, match=r"ckpt.pt is a PyTorch pickle, not a checkpoint directory \(config.json "
                                                 r"\+ model.safetensors\); if it is nanoGPT's, convert it: python "
                                                 r"\S+scripts/convert_nanogpt.py \S+ckpt.pt NEW_DIR$") as e:
        GPT.from_pretrained(tmp_path / "ckpt.pt")
    # A review: the command named the script relative to the checkout, and failed from anywhere else.
    command = str(e.value).split("convert it: ")[1].replace("NEW_DIR", str(tmp_path / "new"))
    done = subprocess.run(shlex.split(command.replace("python", shlex.quote(sys.executable), 1)), cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    with pytest.raises(FileNotFoundError, match=r"no config.json in \S+: not a model checkpoint \(it holds nanoGPT's "
                                                r"ckpt.pt; convert it: python \S+scripts/convert_nanogpt.py \S+ NEW_DIR\)$"):
        GPT.from_pretrained(tmp_path)
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(NotADirectoryError, match=r"notes.txt is a file, not a checkpoint directory \(config.json \+ "
                                                 r"model.safetensors\)$"):
        GPT.from_pretrained(tmp_path / "notes.txt")


def test_a_token_file_named_bin_is_not_called_a_pytorch_pickle(tmp_path):
    """A review: `generate --model misc/train.bin` was told "is a PyTorch pickle ... convert it" by its
    .bin suffix alone; a token file is no pickle. The first bytes tell (a torch.save zip starts b"PK")."""
    (tmp_path / "train.bin").write_bytes(bytes(range(1, 65)) * 8)
    with pytest.raises(NotADirectoryError, match=r"train.bin is a file, not a checkpoint directory \(config.json \+ "
                                                 r"model.safetensors\)$"):
        GPT.from_pretrained(tmp_path / "train.bin")
    torch.save({"model": {}}, tmp_path / "pytorch_model.bin")
    with pytest.raises(NotADirectoryError, match=r"pytorch_model.bin is a PyTorch pickle"):
        GPT.from_pretrained(tmp_path / "pytorch_model.bin")
