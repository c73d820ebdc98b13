"""Sliding-window perplexity equals the same computation with transformers' GPT2LMHeadModel."""
from __future__ import annotations

import io
import json
import math
import os
import re
import sys
from pathlib import Path

import pytest
import torch
from tqdm import tqdm
from transformers import GPT2LMHeadModel

from minigpt import GPT, GPTConfig, evaluate
from minigpt.classifier import GPTClassifier
from minigpt.evaluate import main, perplexity, sliding_window_nll
from minigpt.tokenizer import Tokenizer

GPT2_DIR = Path(__file__).resolve().parent.parent / "checkpoints" / "gpt2"
TEXT = "\n".join(f"Line {i}: the quick brown fox jumps over the lazy dog, {i * i} times." for i in range(8)) + "\n"  # ~130 tokens


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A tiny random GPT with GPT-2's vocabulary, saved with the GPT-2 tokenizer."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model")
    GPT(GPTConfig.gpt2("gpt2-tiny", n_positions=32, n_embd=32, n_head=2)).save_pretrained(path)
    Tokenizer.from_pretrained(GPT2_DIR).save_pretrained(path)
    return path


def hf_sliding_window(model: GPT2LMHeadModel, ids: torch.Tensor, max_length: int, stride: int) -> tuple[float, int]:
    """The loop of HF's perplexity guide, run on transformers' model: labels -100 on each
    window's context, the model's own (shifted) loss, weighted by the tokens it really scored."""
    seq_len, nll_sum, n_tokens, prev_end = ids.size(1), 0.0, 0, 0
    for begin in range(0, seq_len, stride):
        end = min(begin + max_length, seq_len)
        trg_len = end - prev_end
        input_ids = ids[:, begin:end]
        target_ids = input_ids.clone()
        target_ids[:, :-trg_len] = -100
        with torch.no_grad():
            loss = model(input_ids, labels=target_ids).loss
        scored = int((target_ids[:, 1:] != -100).sum())  # the label shift drops position 0
        nll_sum += loss.item() * scored
        n_tokens += scored
        prev_end = end
        if end == seq_len:
            break
    return nll_sum, n_tokens


@pytest.mark.parametrize("max_length, stride", [(32, 32), (32, 16), (24, 5)])
def test_matches_transformers(model_dir, max_length, stride):
    ids = torch.tensor(Tokenizer.from_pretrained(model_dir).encode(TEXT))
    ours = sliding_window_nll(GPT.from_pretrained(model_dir), ids, max_length, stride)
    hf = hf_sliding_window(GPT2LMHeadModel.from_pretrained(model_dir).eval(), ids[None], max_length, stride)
    print(f"max_length={max_length} stride={stride}: ours {ours[0] / ours[1]:.7f}, HF {hf[0] / hf[1]:.7f} nats/token over {ours[1]} tokens")
    assert ours[1] == hf[1]
    assert ours[0] / ours[1] == pytest.approx(hf[0] / hf[1], abs=2e-6)  # measured ≤ 2e-7 (of ~10.8)


@pytest.mark.parametrize("stride", [3, 31, 32])
def test_every_token_is_scored_once(model_dir, stride):
    """Overlapping windows score every token but the first once. Disjoint ones (stride =
    max_length) cannot score each window's first token: nothing before it is in the window."""
    ids = torch.arange(150)
    n_windows = math.ceil(150 / 32)
    expected = 149 if stride < 32 else 150 - n_windows
    _, count, scored = sliding_window_nll(GPT.from_pretrained(model_dir), ids, 32, stride)
    assert count == expected == int(scored.sum())
    unscored = [0] if stride < 32 else list(range(0, 150, 32))  # the first token; or each window's first
    assert (~scored).nonzero().flatten().tolist() == unscored


def test_cli_refuses_another_tokenizer_but_takes_a_padded_vocabulary(model_dir, tmp_path, capsys):
    """A smaller tokenizer scores silently but meaninglessly (its ids are other tokens to the model),
    unless the model's vocabulary is the same one padded (nanoGPT's 50,304): same <|endoftext|> id."""
    (tmp_path / "t.txt").write_text(TEXT)
    other = tmp_path / "other_tok"  # 300 tokens, <|endoftext|> = 299
    Tokenizer.train(TEXT * 4, 300).save_pretrained(other)
    assert main([str(model_dir), str(tmp_path / "t.txt"), "--tokenizer", str(other)]) == 2
    assert (f"the model {model_dir} has a 50257-token vocabulary (EOS = 50256), but the tokenizer in {other} has 300 "
            "(EOS = 299): its ids would mean other tokens to the model") in capsys.readouterr().err
    padded = tmp_path / "padded"
    GPT(GPTConfig.gpt2("gpt2-tiny", vocab_size=50304, n_positions=32, n_embd=32, n_head=2)).save_pretrained(padded)
    assert main([str(padded), str(tmp_path / "t.txt"), "--tokenizer", str(model_dir)]) == 0
    assert "perplexity" in capsys.readouterr().out


@pytest.mark.parametrize("n, stride", [(150, 3), (150, 16), (150, 32), (20, 8), (32, 16), (33, 16)])
def test_progress_bar_total_is_the_windows_that_run(model_dir, capsys, n, stride):
    """The bar ends at its total: every window it counts is one the loop finished (a `break` out of
    the last one would leave a real tqdm one short of its total)."""
    windows = max(math.ceil((n - 32) / stride), 0) + 1
    sliding_window_nll(GPT.from_pretrained(model_dir), torch.arange(n), 32, stride, progress=True)
    err = capsys.readouterr().err  # (a file, not a terminal: the bar's first and last states)
    assert "windows: 100%" in err and f" {windows}/{windows} " in err, err


def test_perplexity_moves_a_bar_given_on_and_refuses_what_is_no_progress(model_dir):
    """An audit: perplexity(progress=tqdm()) failed with tqdm's own "bool() undefined when iterable ==
    total == None" (it read the bar as a bool), a bar with a total was left alone while a second bar
    drew, and progress="yes" was taken for True. Now it takes what generate_texts takes: a bar given
    is moved on by one per window, its total the caller's; anything but a bool or a bar is named."""
    model, ids = GPT.from_pretrained(model_dir), torch.arange(150)
    alone = perplexity(model, ids, 32, 16)
    shared = tqdm(file=io.StringIO())  # no total: the caller counts windows across several texts
    assert perplexity(model, ids, 32, 16, progress=shared) == alone
    perplexity(model, ids[:40], 32, 16, progress=shared)
    assert shared.n == 9 + 2 and shared.total is None  # windows starting at 0, 16, ..., 128; then at 0 and 16
    for bad in ("yes", 1, None):
        with pytest.raises(TypeError, match=re.escape(f"progress must be True or False, got {bad!r}")):
            perplexity(model, ids, 32, 16, progress=bad)


def test_every_progress_argument_refuses_what_is_no_bool_with_one_message(model_dir):
    """An audit: perplexity and generate_texts refused progress="yes", but Tokenizer.train,
    sft_val_loss, classifier_scores, train_loop, pretrain and finetune took it for True (and None,
    0, 1 as bools): each read `progress` its own way. Now each checks it as checks.check_flag does,
    with its message (perplexity and generate_texts, which also take a bar to move on, through
    given_or_new_bar); the training calls before any data or model is read. A review: the
    download's (download_gpt2, fetch), BPE training's steps (train_tokenizer, count_chunks,
    train_bpe) and score_examples still read it as a truth value: they check it first too. A later
    review: Tokenizer.train's and train_tokenizer's calls here trained on a text, so nothing showed
    that the check comes before a file is read: they name a file that does not exist now (as
    data.write_token_files, prepare's step, which read its files before it checked)."""
    from minigpt import generate_texts
    from minigpt.bpe_train import count_chunks, train_bpe, train_tokenizer
    from minigpt.data import write_token_files
    from minigpt.classify_data import score_examples
    from minigpt.download import download_gpt2, fetch
    from minigpt.finetune import FinetuneConfig, finetune
    from minigpt.pretrain import pretrain
    from minigpt.sft_data import SftExamples, sft_val_loss
    from minigpt.train import TrainConfig, train_loop

    model, tok = GPT.from_pretrained(model_dir), Tokenizer.from_pretrained(model_dir)
    torch.manual_seed(0)
    clf = GPTClassifier(GPT(GPTConfig.gpt2("gpt2-tiny", vocab_size=97, n_positions=16, n_embd=32, n_head=2)), 2).eval()
    examples = SftExamples(rows=[[1, 2, 3, 4]], prompt_lens=[2], cut=0, dropped=0, longest=4)
    calls = {
        "perplexity": lambda p: perplexity(model, torch.arange(40), 32, 16, progress=p),
        "generate_texts": lambda p: generate_texts(model, tok, ["a"], max_new_tokens=1, progress=p),
        # (before any file is read: the files named need not exist)
        "Tokenizer.train": lambda p: Tokenizer.train([Path("nowhere.txt")], 260, progress=p),
        "sft_val_loss": lambda p: sft_val_loss(model, examples, 0, 1, progress=p),
        "classifier_scores": lambda p: evaluate.classifier_scores(clf, [[1, 2]], [0], 0, 1, progress=p),
        # (before any data is read: the config's data folder need not exist)
        "train_loop": lambda p: train_loop(model, TrainConfig(), lambda split, g: None, progress=p),
        "pretrain": lambda p: pretrain(TrainConfig(data="nowhere"), progress=p),
        "finetune": lambda p: finetune(FinetuneConfig(init="nowhere", data="nowhere"), progress=p),
        # (before the network: the address is never asked)
        "download_gpt2": lambda p: download_gpt2("gpt2", out="nowhere", base_url="http://localhost:9", progress=p),
        "fetch": lambda p: fetch("http://localhost:9/x", Path("nowhere"), progress=p),
        "train_tokenizer": lambda p: train_tokenizer([Path("nowhere.txt")], 260, [], progress=p),
        "write_token_files": lambda p: write_token_files([Path("nowhere.txt")], tok, Path("nowhere"), 0.1, progress=p),
        "count_chunks": lambda p: count_chunks([TEXT], progress=p),
        "train_bpe": lambda p: train_bpe({"ab": 2}, 260, progress=p),
        "score_examples": lambda p: score_examples(clf, [[1, 2]], [0], 0, 1, progress=p),
    }
    for name, call in calls.items():
        with pytest.raises(TypeError) as refused:
            call("yes")
        assert str(refused.value) == "progress must be True or False, got 'yes'", name


def test_the_bar_tests_draw_under_a_testers_tqdm_disable():
    """An audit: with TQDM_DISABLE=1 in the tester's environment (common in CI), 13 bar tests failed,
    as minigpt lets the variable silence every bar and tqdm reads it at import. tests/conftest.py
    drops it before tqdm is imported: a process that loads conftest first, as pytest does, with the
    variable set, still draws a bar."""
    import subprocess

    code = ("import io, sys; sys.path.insert(0, 'tests'); import conftest  # noqa\n"
            "from minigpt.progress_bar import progress_bar\n"
            "stream = io.StringIO()\n"
            "with progress_bar(total=2, file=stream) as bar:\n"
            "    bar.update(2)\n"
            "print(stream.getvalue())\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parent.parent, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "TQDM_DISABLE": "1"})
    assert done.returncode == 0, done.stderr
    assert "2/2" in done.stdout, done.stdout


def test_cli_and_errors(model_dir, tmp_path, capsys, monkeypatch):
    (tmp_path / "t.txt").write_text(TEXT)
    tok, model = Tokenizer.from_pretrained(model_dir), GPT.from_pretrained(model_dir)
    ids = torch.tensor(tok.encode(TEXT))
    # Bits per byte spread the nats over the bytes of the scored tokens: all but the first with
    # overlapping windows, all but each window's first with disjoint ones (stride = max_length).
    for max_length, unscored in ((None, [0]), (8, range(0, len(ids), 8))):
        flags = ["--stride", "8"] + (["--max-length", str(max_length)] if max_length else [])
        assert main([str(model_dir), str(tmp_path / "t.txt"), "--device", "cpu", *flags]) == 0
        out = capsys.readouterr().out
        expected = perplexity(model, ids, max_length, stride=8)
        scored_bytes = len(TEXT.encode()) - sum(len(tok.decode_bytes([int(ids[i])])) for i in unscored)
        assert f"perplexity {expected['ppl']:.4f}" in out
        assert f"{expected['nll_sum'] / math.log(2) / scored_bytes:.4f} bits/byte" in out
    assert main([str(model_dir), str(tmp_path / "missing.txt")]) == 2
    assert "missing.txt does not exist" in capsys.readouterr().err
    # "-" reads standard input (`cat t.txt | minigpt eval MODEL -`): the same score as the file's.
    assert main([str(model_dir), str(tmp_path / "t.txt"), "--device", "cpu"]) == 0
    from_file = capsys.readouterr().out
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(TEXT.encode()), encoding="utf-8"))
    assert main([str(model_dir), "-", "--device", "cpu"]) == 0
    assert capsys.readouterr().out == from_file
    assert main([str(model_dir), str(tmp_path)]) == 2
    assert f"text file {tmp_path} is a directory" in capsys.readouterr().err
    assert main([str(model_dir), os.devnull]) == 2  # (it said "does not exist": an audit)
    assert f"text file {os.devnull} is not a regular file" in capsys.readouterr().err
    assert main([str(tmp_path / "no_model"), str(tmp_path / "t.txt")]) == 2  # the model is named, not a tokenizer
    assert f"checkpoint directory {tmp_path / 'no_model'} does not exist" in capsys.readouterr().err
    small = tmp_path / "small_vocab"  # a model whose vocabulary is smaller than the tokenizer's
    GPT(GPTConfig.gpt2("gpt2-tiny", vocab_size=300, n_positions=32, n_embd=32, n_head=2)).save_pretrained(small)
    assert main([str(small), str(tmp_path / "t.txt"), "--tokenizer", str(model_dir)]) == 2  # not an IndexError
    assert (f"the model {small} has a 300-token vocabulary (no EOS), but the tokenizer in {model_dir} has 50257 "
            "(EOS = 50256)") in capsys.readouterr().err
    GPTClassifier(GPT.from_pretrained(model_dir), num_labels=2).save_pretrained(tmp_path / "clf")  # what finetune --task classify writes
    assert main([str(tmp_path / "clf"), str(tmp_path / "t.txt")]) == 2  # a classifier is scored on a TSV (test_classifier_*)
    assert (f"t.txt:1: expected 'text<TAB>label', found no tab in {TEXT.splitlines()[0][:60]!r}: {tmp_path / 'clf'} is "
            "a classifier, scored on labelled examples") in capsys.readouterr().err
    model = GPT.from_pretrained(model_dir)
    with pytest.raises(ValueError, match=r"max_length must be in \[2, n_positions=32\]"):
        perplexity(model, ids, max_length=33)
    with pytest.raises(ValueError, match=r"stride must be in \[1, max_length=32\], got 40"):
        perplexity(model, ids, stride=40)
    with pytest.raises(ValueError, match=r"stride must be in \[1, max_length=32\], got 0"):  # not "the default"
        perplexity(model, ids, stride=0)
    with pytest.raises(ValueError, match=r"max_length must be in \[2, n_positions=32\] .*, got 0"):
        perplexity(model, ids, max_length=0)
    with pytest.raises(ValueError, match=r"a 1-token window scores nothing\), got 1"):  # was a ZeroDivisionError
        perplexity(model, ids, max_length=1)
    with pytest.raises(ValueError, match="at least 2 tokens"):
        perplexity(model, ids[:1])
    assert math.isfinite(expected["ppl"])


@torch.no_grad()
def test_default_stride_is_half_the_window_and_scores_every_token_but_the_first():
    """Guards against the default stride (documented: max_length // 2) becoming max_length:
    disjoint windows score each window's first token with no context and skip it entirely, so
    `minigpt eval` without --stride would report a different (worse) perplexity over fewer tokens."""
    torch.manual_seed(0)
    model = GPT(GPTConfig.gpt2("gpt2-tiny", vocab_size=50, n_positions=16)).eval()
    ids = torch.randint(0, 50, (40,), generator=torch.Generator().manual_seed(1))
    default = perplexity(model, ids, max_length=8)
    half = perplexity(model, ids, max_length=8, stride=4)
    assert default == half
    assert default["tokens"] == 39  # with stride < max_length every token but the first is scored
    assert perplexity(model, ids, max_length=8, stride=8)["tokens"] < 39
    assert math.isclose(default["ppl"], math.exp(default["nll"]))


def test_ids_as_the_tokenizer_returns_them_and_bad_ids_are_named():
    """A (1, N) tensor (the tokenizer's return_tensors="pt") failed in torch.cat ("Tensors must
    have same number of dimensions"), a list with an AttributeError, float ids in the embedding."""
    torch.manual_seed(0)
    model = GPT(GPTConfig.gpt2("gpt2-tiny", vocab_size=50, n_positions=16)).eval()
    ids = torch.randint(0, 50, (20,), generator=torch.Generator().manual_seed(1))
    assert perplexity(model, ids[None], max_length=8) == perplexity(model, ids, max_length=8)
    for bad, error, message in [(ids.tolist(), TypeError, "ids must be a tensor of token ids, (N,) or (1, N); got list"),
                                (ids.float(), TypeError, "ids must be an integer tensor of token ids, got torch.float32"),
                                (ids.view(2, 10), ValueError, "ids must be (N,) or (1, N): one text's token ids, got shape (2, 10)"),
                                (ids + 40, ValueError, "ids must be in [0, vocab_size=50), got token id")]:
        with pytest.raises(error, match=re.escape(message)):
            perplexity(model, bad, max_length=8)


def test_token_bytes_must_be_the_models_table_of_byte_lengths():
    """token_bytes was indexed unchecked: a longer table (another tokenizer's) gave a plausible
    wrong bpb, negative counts a negative one, a shorter table a bare IndexError and an all-zero
    one a ZeroDivisionError."""
    model = GPT(GPTConfig.gpt2("gpt2-tiny", vocab_size=50, n_positions=16)).eval()
    ids = torch.randint(0, 50, (20,), generator=torch.Generator().manual_seed(1))
    result = perplexity(model, ids, max_length=8, token_bytes=torch.full((50,), 2))
    assert result["bpb"] == pytest.approx(result["nll_sum"] / math.log(2) / (2 * result["tokens"]))
    for bad, message in [(torch.ones(60, dtype=torch.long), "token_bytes must be a (50,) tensor, each token's length "
                          "in bytes (the model's vocab_size=50; 0 for ids past its tokenizer's), got shape (60,)"),
                         (torch.ones(10, dtype=torch.long), "got shape (10,)"), ([1] * 50, "got list"),
                         (torch.full((50,), -1), "token_bytes must be ≥ 0 (each token's length in bytes), got -1"),
                         (torch.zeros(50, dtype=torch.long), "token_bytes gives the scored tokens 0 bytes in all")]:
        with pytest.raises(ValueError, match=re.escape(message)):
            perplexity(model, ids, max_length=8, token_bytes=bad)


@pytest.mark.parametrize("name, value", [("stride", True), ("stride", 2.5), ("max_length", 8.5), ("max_length", "8")])
def test_a_window_size_that_is_not_an_integer_is_named(name, value):
    """stride=True ran as stride 1, and 2.5 or max_length=8.5 failed inside range() ("'float'
    object cannot be interpreted as an integer")."""
    model = GPT(GPTConfig.gpt2("gpt2-tiny", vocab_size=50, n_positions=16)).eval()
    with pytest.raises(TypeError, match=rf"{name} must be an integer, got .*{value}"):
        perplexity(model, torch.arange(20), **{"max_length": 8, name: value})


@torch.no_grad()
def test_a_bfloat16_model_sums_its_nll_in_float32():
    """Mutant R7-26: cross-entropy on the model's own bfloat16 logits rounds every log-softmax and
    the sum to 8 bits of mantissa (up to 0.5 nats off at a sum of ~250); `minigpt eval --dtype
    bfloat16` must score the bfloat16 model's logits in float32."""
    torch.manual_seed(0)
    model = GPT(GPTConfig.gpt2("gpt2-tiny", vocab_size=50, n_positions=64)).to(torch.bfloat16).eval()
    ids = torch.randint(0, 50, (64,), generator=torch.Generator().manual_seed(1))
    nll_sum, count, _ = sliding_window_nll(model, ids, 64, 64)
    expected = torch.nn.functional.cross_entropy(model(ids[None])[0][0, :-1].float(), ids[1:], reduction="sum").item()
    assert count == 63 and nll_sum == pytest.approx(expected, rel=1e-6)


def test_bits_per_byte_count_utf8_bytes_not_characters(model_dir, tmp_path, capsys):
    """Mutant R7-27: each token's length was taken as characters of its decoded text, not bytes, so
    bits per byte came out too high on any non-ASCII text (and a token holding part of a
    character counted as one replacement character)."""
    text = "naïve café — déjà vu, señor! Ünïcödé ☃ 日本語\n" * 3
    (tmp_path / "u.txt").write_text(text, encoding="utf-8")
    tok, model = Tokenizer.from_pretrained(model_dir), GPT.from_pretrained(model_dir)
    ids = torch.tensor(tok.encode(text))
    assert main([str(model_dir), str(tmp_path / "u.txt"), "--device", "cpu", "--stride", "8"]) == 0
    nll_sum = perplexity(model, ids, stride=8)["nll_sum"]
    scored_bytes = len(text.encode()) - len(tok.decode_bytes([int(ids[0])]))  # all but the first token's
    assert scored_bytes < len(text.encode()) and len(text) < len(text.encode()) - 20
    assert f"{nll_sum / math.log(2) / scored_bytes:.4f} bits/byte" in capsys.readouterr().out


def test_scoring_with_dropout_on_warns():
    """A Python-API audit: perplexity of a model left in training mode (dropout 0.1) came out higher
    and different on every call, silently; it now warns, and in eval mode it does not."""
    import warnings

    from minigpt import GPT, GPTConfig
    from minigpt.evaluate import perplexity

    model = GPT(GPTConfig.gpt2("gpt2-tiny", vocab_size=64, dropout=0.1))
    ids = torch.randint(0, 64, (40,))
    with pytest.warns(UserWarning, match=r"scoring with the model in training mode: dropout is on"):
        perplexity(model.train(), ids)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        perplexity(model.eval(), ids)


def test_ids_at_the_vocabulary_edges_and_complex_ids_are_named():
    """Mutants R10-11/R10-13/R10-14: an id equal to vocab_size passed the range check (and failed in
    the embedding); a negative id was reported as the largest id instead of itself; complex ids
    passed the dtype check."""
    model = GPT(GPTConfig.gpt2("gpt2-tiny", vocab_size=50, n_positions=16)).eval()
    ids = torch.tensor([0, 3, 49, 7])
    perplexity(model, ids, max_length=4)  # 0 and vocab_size - 1 are ids
    with pytest.raises(ValueError, match=re.escape("ids must be in [0, vocab_size=50), got token id 50")):
        perplexity(model, torch.tensor([1, 50, 2]), max_length=4)
    with pytest.raises(ValueError, match=re.escape("ids must be in [0, vocab_size=50), got token id -3")):
        perplexity(model, torch.tensor([1, -3, 49]), max_length=4)
    with pytest.raises(TypeError, match="ids must be an integer tensor of token ids, got torch.complex64"):
        perplexity(model, ids.to(torch.complex64), max_length=4)
    with pytest.raises(TypeError, match="ids must be an integer tensor of token ids, got torch.bool"):
        perplexity(model, ids > 5, max_length=4)


@pytest.mark.parametrize("dtype", [torch.int32, torch.int16, torch.uint8, torch.uint16])
def test_every_integer_dtype_of_ids_scores_as_int64(dtype):
    """int32 failed in cross_entropy ("expected target dtype to be Long"), int16 and uint8 in the
    embedding, and uint16, the dtype of minigpt's own token files, in the range check ("min_all
    not implemented for UInt16")."""
    model = GPT(GPTConfig.gpt2("gpt2-tiny", vocab_size=50, n_positions=16)).eval()
    ids = torch.randint(0, 50, (20,), generator=torch.Generator().manual_seed(1))
    assert perplexity(model, ids.to(dtype), max_length=8) == perplexity(model, ids, max_length=8)


def test_cli_refuses_a_nan_score(model_dir, tmp_path, capsys):
    """A model with a NaN weight printed "perplexity nan ..." and exited 0, which a script takes for
    a score; generate raises on such logits. eval now says why and exits 2."""
    (tmp_path / "t.txt").write_text(TEXT)
    model = GPT.from_pretrained(model_dir)
    with torch.no_grad():
        model.transformer.ln_f.weight[0] = float("nan")
    model.save_pretrained(tmp_path / "nan")
    Tokenizer.from_pretrained(model_dir).save_pretrained(tmp_path / "nan")
    assert main([str(tmp_path / "nan"), str(tmp_path / "t.txt"), "--device", "cpu"]) == 2
    captured = capsys.readouterr()
    assert "perplexity" not in captured.out
    assert "the loss is nan: the model produced NaN/inf logits" in captured.err


def test_a_mean_loss_past_exps_range_scores_an_infinite_perplexity(model_dir, tmp_path, capsys):
    """A reader's audit: math.exp of a mean loss above ~709.78 nats (a diverged model's) raised an
    OverflowError, a traceback from `minigpt eval`; training's log already guarded it."""
    (tmp_path / "t.txt").write_text(TEXT)
    model = GPT.from_pretrained(model_dir)
    with torch.no_grad():
        model.transformer.ln_f.weight.mul_(1e6)  # logits spread over ~1e4: most tokens' loss is in the thousands
    model.save_pretrained(tmp_path / "diverged")
    Tokenizer.from_pretrained(model_dir).save_pretrained(tmp_path / "diverged")
    assert main([str(tmp_path / "diverged"), str(tmp_path / "t.txt"), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    nll = float(out.split("nll ")[1].split()[0])
    assert out.startswith("perplexity inf  nll ") and 709 < nll < math.inf, out
    assert main([str(tmp_path / "diverged"), str(tmp_path / "t.txt"), "--device", "cpu", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)  # strict JSON (no Infinity): the perplexity is null, nll the same
    assert record["perplexity"] is None and f"{record['nll']:.4f}" == f"{nll:.4f}"


def test_json_gives_a_language_models_scores_as_the_text_does(model_dir, tmp_path, capsys):
    """An item carried for sessions: scripts had to parse eval's text line. --json prints one object
    with the same figures, at full precision."""
    (tmp_path / "t.txt").write_text(TEXT)
    args = [str(model_dir), str(tmp_path / "t.txt"), "--device", "cpu", "--stride", "8"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert main([*args, "--json"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1, out
    record = json.loads(out)
    assert set(record) == {"model", "file", "perplexity", "nll", "bits_per_byte", "tokens"}
    assert record["model"] == str(model_dir) and record["file"] == str(tmp_path / "t.txt")
    assert text == (f"perplexity {record['perplexity']:.4f}  nll {record['nll']:.4f} nats/token  "
                    f"{record['bits_per_byte']:.4f} bits/byte  ({record['tokens']:,} tokens scored)\n")
    ids = torch.tensor(Tokenizer.from_pretrained(model_dir).encode(TEXT))
    assert record["nll"] == pytest.approx(perplexity(GPT.from_pretrained(model_dir), ids, stride=8)["nll"], rel=1e-6)


def test_cli_hints_tokenizer_for_a_model_saved_without_one(model_dir, tmp_path, capsys):
    """`model.save_pretrained(dir)` writes no tokenizer; eval said only that the directory holds none,
    where generate also names --tokenizer."""
    (tmp_path / "t.txt").write_text(TEXT)
    GPT.from_pretrained(model_dir).save_pretrained(tmp_path / "bare")
    assert main([str(tmp_path / "bare"), str(tmp_path / "t.txt"), "--device", "cpu"]) == 2
    assert "for a model saved without its tokenizer, pass --tokenizer DIR" in capsys.readouterr().err
    assert main([str(tmp_path / "bare"), str(tmp_path / "t.txt"), "--device", "cpu", "--tokenizer", str(model_dir)]) == 0


def test_ctrl_c_ends_eval_in_one_line(model_dir, tmp_path, capsys, monkeypatch):
    """An end-to-end audit: Ctrl-C on a long text printed a 57-line traceback, where generate,
    train, finetune and download end in one line and exit 130."""
    (tmp_path / "t.txt").write_text(TEXT)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluate, "perplexity", interrupted)
    try:
        code = main([str(model_dir), str(tmp_path / "t.txt"), "--device", "cpu"])
    except KeyboardInterrupt:  # caught here, or it would stop the whole test run
        pytest.fail("Ctrl-C left eval as a KeyboardInterrupt traceback")
    assert code == 130 and capsys.readouterr().err.endswith("eval: interrupted\n")


def test_cli_errors_name_the_flags_not_perplexitys_arguments(model_dir, tmp_path, capsys):
    """An audit: `minigpt eval --stride 100 --max-length 16` said "stride must be in [1,
    max_length=16]", perplexity's argument names; the CLI's errors name its flags. (The Python API
    keeps its own names: test_cli_and_errors.)"""
    (tmp_path / "t.txt").write_text(TEXT)
    for flags, error in ((["--stride", "100", "--max-length", "16"], "--stride must be in [1, --max-length 16], got 100"),
                         (["--max-length", "1"], "--max-length must be in [2, n_positions=32] (a window's first token")):
        assert main([str(model_dir), str(tmp_path / "t.txt"), "--device", "cpu", *flags]) == 2
        err = capsys.readouterr().err
        assert f"error: {error}" in err and "max_length" not in err


def test_the_default_window_is_the_length_a_fresh_model_trained_on(model_dir, tmp_path, capsys):
    """An eval audit: a model pretrained from scratch on windows shorter than its context (its
    tokenizer's model_max_length, as pretraining saves it) was scored in n_positions windows, whose
    later positions never trained, without a word. The default window is that length, from the
    model folder's own tokenizer whatever --tokenizer says, and said; an explicit --max-length is
    kept, with a warning where it is longer."""
    (tmp_path / "t.txt").write_text(TEXT)
    short = tmp_path / "short"  # model_dir's 32-position model, trained on 16-token windows
    GPT.from_pretrained(model_dir).save_pretrained(short)
    tok = Tokenizer.from_pretrained(model_dir)
    tok.model_max_length = 16
    tok.save_pretrained(short)
    model, ids = GPT.from_pretrained(short), torch.tensor(tok.encode(TEXT))
    for extra in ([], ["--tokenizer", str(GPT2_DIR)]):
        assert main([str(short), str(tmp_path / "t.txt"), "--device", "cpu", "--json", *extra]) == 0
        captured = capsys.readouterr()
        assert json.loads(captured.out)["nll"] == pytest.approx(perplexity(model, ids, max_length=16)["nll"], rel=1e-6)
        assert (f"note: windows of 16 tokens, the length {short} was trained on (its tokenizer's model_max_length; "
                "positions 16-31 of its 32 never trained)") in captured.err
    assert main([str(short), str(tmp_path / "t.txt"), "--device", "cpu", "--json", "--max-length", "32"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["nll"] == pytest.approx(perplexity(model, ids, max_length=32)["nll"], rel=1e-6)
    assert f"warning: --max-length 32 is longer than the 16 tokens {short} was trained on" in captured.err
    assert main([str(model_dir), str(tmp_path / "t.txt"), "--device", "cpu"]) == 0  # GPT-2's 1024: the context, unsaid
    assert "windows of" not in capsys.readouterr().err


# A labelled file as fine-tuning reads it: a header, then text<TAB>label; one text is longer than
# the classifier's 6 tokens, one holds "<|endoftext|>" (its characters, as in fine-tuning).
TSV_LINES = ["sentence\tlabel", "a charming and often affecting journey .\t2", "the plot is a mess\t0",
             "fine\t1", "unflinchingly bleak and desperate , from its first scene to its very last\t0",
             "quiet <|endoftext|> film\t2", "it works\t1", "no\t0", "a triumph\t2", "meh , mostly\t1", "dull\t0"]
CLF_TOKENS = 6  # the classifier's tokenizer model_max_length: fine-tuning's --block-size


@pytest.fixture(scope="module")
def classifier_dir(model_dir, tmp_path_factory) -> Path:
    """A random 4-label classifier on the tiny GPT, saved with its tokenizer as finetune saves it
    (model_max_length = the run's --block-size). No example in TSV_LINES is labelled 3."""
    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("clf")
    GPTClassifier(GPT.from_pretrained(model_dir), num_labels=4,
                  id2label={0: "neg", 1: "neutral", 2: "pos", 3: "other"}).save_pretrained(path)
    tok = Tokenizer.from_pretrained(model_dir)
    tok.model_max_length = CLF_TOKENS
    tok.save_pretrained(path)
    return path


@torch.no_grad()
def direct_classifier_scores(path: Path, lines: list[str]) -> dict[int, list[tuple[float, int]]]:
    """Each example scored alone, without batches: label → [(its loss, the class predicted)]."""
    clf, tok = GPTClassifier.from_pretrained(path), Tokenizer.from_pretrained(path)
    scores: dict[int, list[tuple[float, int]]] = {}
    for line in lines[1:]:
        text, label = line.rsplit("\t", 1)
        ids = torch.tensor([tok.encode(text, disallowed_special=())[:CLF_TOKENS]])  # (1, T)
        logits, loss = clf(ids, torch.ones_like(ids), torch.tensor([int(label)]))
        scores.setdefault(int(label), []).append((loss.item(), int(logits.argmax())))
    return scores


def test_classifier_is_scored_on_a_tsv_as_one_example_at_a_time(classifier_dir, tmp_path, capsys, monkeypatch):
    """An audit: `minigpt eval CLASSIFIER FILE` was refused, so the only built-in test accuracy was
    --val-data during fine-tuning, which then chose best/ on the test set. eval now reports a
    classifier's accuracy and mean loss on a TSV, overall and per class, equal to scoring each
    example alone, with the classes each class's examples were taken for (its row of the confusion
    matrix, by name: a data audit found "taken for 0: 5", an id to look up); texts are cut to the
    tokenizer's model_max_length, as fine-tuning cut them, and the scoring shows a progress bar."""
    (tmp_path / "test.tsv").write_text("\n".join(TSV_LINES) + "\n")
    direct = direct_classifier_scores(classifier_dir, TSV_LINES)
    every = [(loss, predicted == label) for label, scores in direct.items() for loss, predicted in scores]
    bars, score_examples = [], evaluate.score_examples
    monkeypatch.setattr(evaluate, "score_examples", lambda **kw: bars.append(kw["progress"]) or score_examples(**kw))
    assert main([str(classifier_dir), str(tmp_path / "test.tsv"), "--device", "cpu", "--batch-size", "3"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    right = sum(ok for _, ok in every)
    assert lines[0] == (f"accuracy {right / len(every):.4f}  loss {sum(loss for loss, _ in every) / len(every):.4f} "
                        f"nats/example  ({right} of {len(every)} examples right)")
    names = ("neg", "neutral", "pos", "other")
    for label, name in enumerate(names[:3]):
        n, ok = len(direct[label]), sum(predicted == label for _, predicted in direct[label])
        loss = sum(loss for loss, _ in direct[label]) / n
        wrong = [predicted for _, predicted in direct[label] if predicted != label]
        mistaken = ", ".join(f"{names[other]}: {wrong.count(other)}" for other in sorted(set(wrong)))
        assert lines[1 + label] == (f"  class {label} ({name}): accuracy {ok / n:.4f}  loss {loss:.4f}  ({ok} of {n} right"
                                    + (f"; taken for {mistaken})" if wrong else ")"))
    assert any("taken for" in line for line in lines[1:4]), lines  # (the tiny model gets some wrong)
    assert lines[4] == "  class 3 (other): no examples" and len(lines) == 5
    assert bars == [True]
    # --json: the same figures, every class in order, the one the file lacks with 0 examples.
    assert main([str(classifier_dir), str(tmp_path / "test.tsv"), "--device", "cpu", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert (record["right"], record["examples"]) == (right, len(every))
    assert record["accuracy"] == pytest.approx(right / len(every))
    assert record["loss"] == pytest.approx(sum(loss for loss, _ in every) / len(every), rel=1e-5)
    assert [(c["id"], c["label"]) for c in record["classes"]] == [(0, "neg"), (1, "neutral"), (2, "pos"), (3, "other")]
    for label, c in enumerate(record["classes"][:3]):
        predicted = [p for _, p in direct[label]]
        assert c["examples"] == len(predicted) and c["right"] == predicted.count(label)
        assert c["predicted"] == {record["classes"][p]["label"]: predicted.count(p) for p in sorted(set(predicted))}
    assert record["classes"][3] == {"id": 3, "label": "other", "examples": 0, "right": 0, "accuracy": None,
                                    "loss": None, "predicted": {}}
    # The journey's, the bleak one's and the one with "<|endoftext|>" (9 tokens as characters) are cut.
    assert f"3 of {len(every)} texts are longer than {CLF_TOKENS} tokens" in captured.err


def test_classifier_scores_sum_the_classes_to_the_whole():
    """The overall figures are fine-tuning's val scores (score_examples), and the classes' figures
    add up to them: examples, right answers, and the loss weighted by each class's size."""
    from minigpt.classify_data import score_examples

    torch.manual_seed(0)
    clf = GPTClassifier(GPT(GPTConfig.gpt2("gpt2-tiny", vocab_size=97, n_positions=16, n_embd=32, n_head=2)), 3).eval()
    ids = [torch.randint(1, 97, (n,)).tolist() for n in (3, 9, 1, 5, 7, 2, 4)]
    labels = [0, 2, 1, 0, 2, 2, 0]
    result = evaluate.classifier_scores(clf, ids, labels, pad_id=0, batch_size=2)
    whole = score_examples(model=clf, ids=ids, labels=labels, pad_id=0, batch_size=2)
    assert result["loss"] == pytest.approx(whole["loss"], abs=1e-6) and result["accuracy"] == whole["accuracy"]
    assert [c["examples"] for c in result["classes"].values()] == [3, 1, 3]
    assert sum(c["right"] for c in result["classes"].values()) == result["right"] == round(whole["accuracy"] * 7)
    by_size = sum(c["loss"] * c["examples"] for c in result["classes"].values()) / 7
    assert by_size == pytest.approx(whole["loss"], abs=1e-6)
    assert [sum(c["predicted"]) for c in result["classes"].values()] == [3, 1, 3]
    with pytest.raises(ValueError, match="one label per example"):
        evaluate.classifier_scores(clf, ids, labels[:-1], pad_id=0, batch_size=2)


def test_eval_refuses_the_other_kind_of_models_flags_and_files(model_dir, classifier_dir, tmp_path, capsys):
    """A window flag given to a classifier, or a classifier's --batch-size to a language model,
    would be ignored; a plain text has no labels to score a classifier on, and a TSV's perplexity
    would pass for the model's: each is refused and names what to do instead. A review finding: an
    out-of-range class id was named without its line (`five.tsv's labels [5]`); file:line now."""
    (tmp_path / "t.txt").write_text(TEXT)
    (tmp_path / "t.tsv").write_text("\n".join(TSV_LINES) + "\n")
    (tmp_path / "five.tsv").write_text("good\t1\nbad\t5\n")
    clf, lm, tsv = str(classifier_dir), str(model_dir), str(tmp_path / "t.tsv")
    for argv, error in (
        ([clf, tsv, "--stride", "8"], f"--stride sets a language model's sliding window; {clf} is a classifier"),
        ([clf, tsv, "--max-length", "8"], "drop --max-length"),
        ([clf, tsv, "--batch-size", "0"], "--batch-size must be ≥ 1, got 0"),
        ([clf, str(tmp_path / "t.txt")], f"t.txt:1: expected 'text<TAB>label', found no tab in {TEXT.splitlines()[0][:60]!r}: "
                                         f"{clf} is a classifier, scored on labelled examples"),
        ([clf, "-"], "standard input is not read for it: save the lines to a file"),
        ([clf, str(tmp_path / "missing.tsv")], "TSV file " + str(tmp_path / "missing.tsv") + " does not exist"),
        ([clf, str(tmp_path / "five.tsv")], "five.tsv:2: label 5 is out of range: with num_labels=4, labels must be in [0, 4)"),
        ([lm, tsv], f"t.tsv is a .tsv file (text<TAB>label, what a classifier is scored on), but {lm} is a language model"),
        ([lm, str(tmp_path / "t.txt"), "--batch-size", "4"], f"a classifier's or a file of sft pairs'; {lm} is a language model and {tmp_path / 't.txt'} no pairs file "
         "(JSON Lines of prompt and completion), so it is scored in windows of --max-length tokens: drop --batch-size"),
    ):
        assert main([*argv, "--device", "cpu"]) == 2, argv
        err = capsys.readouterr().err
        assert "eval: error: " in err and error in err, (argv, err)


def test_classifier_eval_reads_the_file_once(classifier_dir, tmp_path, monkeypatch, capsys):
    """A review finding: `minigpt eval CLASSIFIER FILE` read the whole file to look for a tab, then
    read_tsv read it again. It reads it once; read_tsv's own error tells a plain text (no tab)."""
    import minigpt.classify_data as classify_data
    import minigpt.files as files

    (tmp_path / "t.tsv").write_text("\n".join(TSV_LINES) + "\n")
    reads, read_text = [], files.read_text
    for module in (files, classify_data):  # (classify_data holds its own name for it)
        monkeypatch.setattr(module, "read_text", lambda path: reads.append(str(path)) or read_text(path))
    assert main([str(classifier_dir), str(tmp_path / "t.tsv"), "--device", "cpu"]) == 0
    assert reads.count(str(tmp_path / "t.tsv")) == 1  # (the model's and tokenizer's files are read through it too)


def test_classifier_eval_reads_named_labels_through_the_models_label2id(classifier_dir, tmp_path, capsys):
    """A classifier-tuning audit: a TSV labelled with names was refused ("label is not an integer").
    Its names are the model's classes by config.json's label2id, so the report is the one its class
    ids give; a name the model lacks is refused by file and line, with the model's names."""
    names = {"0": "neg", "1": "neutral", "2": "pos"}
    named = [TSV_LINES[0]] + [f"{text}\t{names[label]}" for text, label in (line.rsplit("\t", 1) for line in TSV_LINES[1:])]
    (tmp_path / "ids.tsv").write_text("\n".join(TSV_LINES) + "\n")
    (tmp_path / "names.tsv").write_text("\n".join(named) + "\n")
    reports = []
    for file in ("ids.tsv", "names.tsv"):
        assert main([str(classifier_dir), str(tmp_path / file), "--device", "cpu"]) == 0
        reports.append(capsys.readouterr().out)
    assert reports[0] == reports[1] and "class 2 (pos)" in reports[1]
    (tmp_path / "names.tsv").write_text("\n".join(named + ["so good\tpositive", "great\tpositive"]) + "\n")
    assert main([str(classifier_dir), str(tmp_path / "names.tsv"), "--device", "cpu"]) == 2
    assert (f"names.tsv:12: label 'positive' is none of the labels of {classifier_dir}: 'neg', 'neutral', 'pos', 'other'"
            in capsys.readouterr().err)


def test_classifier_texts_are_cut_to_the_models_own_record_whatever_tokenizer_is_given(classifier_dir, tmp_path, capsys):
    """An eval audit: given --tokenizer (even GPT-2's own files, the model's vocabulary), eval cut the
    texts to that tokenizer's model_max_length (1024, so the model's context), not to fine-tuning's
    --block-size, which only the model folder's tokenizer files record, and the accuracy changed
    without a word. The cut is the folder's record whatever --tokenizer says; a folder without
    tokenizer files has none, so --tokenizer's (else the context) is used and a note says which."""
    (tmp_path / "t.tsv").write_text("\n".join(TSV_LINES) + "\n")
    tsv = str(tmp_path / "t.tsv")
    runs = []
    for extra in ([], ["--tokenizer", str(GPT2_DIR)]):
        assert main([str(classifier_dir), tsv, "--device", "cpu", *extra]) == 0
        runs.append(capsys.readouterr())
    reports = [run.out for run in runs]
    assert reports[0] == reports[1]
    for run in runs:
        assert (f"3 of 10 texts are longer than {CLF_TOKENS} tokens (fine-tuning's --block-size, as {classifier_dir} "
                "records it)") in run.err
    bare = tmp_path / "bare"  # the weights alone, as save_pretrained writes them
    GPTClassifier.from_pretrained(classifier_dir).save_pretrained(bare)
    assert main([str(bare), tsv, "--device", "cpu", "--tokenizer", str(classifier_dir)]) == 0
    captured = capsys.readouterr()
    assert captured.out == reports[0]
    assert (f"note: {bare} records no model_max_length (fine-tuning's --block-size, in its tokenizer_config.json): each "
            f"text is cut to {CLF_TOKENS} tokens, the model_max_length of --tokenizer {classifier_dir}") in captured.err
    assert main([str(bare), tsv, "--device", "cpu", "--tokenizer", str(GPT2_DIR)]) == 0  # GPT-2's 1024: the context
    assert "each text is cut to 32 tokens, the model's context, n_positions" in capsys.readouterr().err


def test_classifier_predictions_join_back_to_the_input_lines(classifier_dir, tmp_path, capsys):
    """A data audit: a classifier's eval gave no prediction per example, so none could be joined back
    to the input rows without the README's Python snippet. `--predictions FILE` writes one JSON line
    per example, in the file's order, with its line number in the TSV (the header and a blank line
    skipped, not counted off), its label and prediction by name, and each class's probability: the
    predictions are each example's scored alone, agree with the report's counts, and sum to 1."""
    lines = TSV_LINES[:4] + ["", "très bien , vraiment\t2"] + TSV_LINES[4:]  # a blank line, and a text not ASCII
    (tmp_path / "test.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "predictions.jsonl"
    argv = [str(classifier_dir), str(tmp_path / "test.tsv"), "--device", "cpu", "--batch-size", "3"]
    assert main([*argv, "--predictions", str(out), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    predictions = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    names = [c["label"] for c in record["classes"]]
    clf, tok = GPTClassifier.from_pretrained(classifier_dir), Tokenizer.from_pretrained(classifier_dir)
    examples = [lineno for lineno, line in enumerate(lines, start=1) if line and lineno > 1]  # not the header
    assert [p["line"] for p in predictions] == examples  # every example, in the file's order
    for p in predictions:
        text, label = lines[p["line"] - 1].rsplit("\t", 1)  # the input row it joins back to
        assert p["label"] == names[int(label)]
        assert list(p["probabilities"]) == names and sum(p["probabilities"].values()) == pytest.approx(1, abs=1e-12)
        assert p["prediction"] == max(names, key=p["probabilities"].get)
        ids = torch.tensor([tok.encode(text, disallowed_special=())[:CLF_TOKENS]])  # (1, T): the example alone
        with torch.no_grad():
            alone = clf(ids, torch.ones_like(ids))[0][0].softmax(-1)  # (num_labels,)
        assert list(p["probabilities"].values()) == pytest.approx(alone.tolist(), abs=1e-5)
    assert sum(p["label"] == p["prediction"] for p in predictions) == record["right"] == round(record["accuracy"] * len(examples))
    for c in record["classes"]:  # each row of the confusion matrix, from the predictions
        taken = [p["prediction"] for p in predictions if p["label"] == c["label"]]
        assert c["predicted"] == {name: taken.count(name) for name in names if name in taken}
    # Without --json the report is the same text as without --predictions: nothing of the file on stdout.
    assert main(argv) == 0
    report = capsys.readouterr().out
    assert main([*argv, "--predictions", str(out)]) == 0
    assert capsys.readouterr().out == report


def test_predictions_are_utf8_names_and_a_bad_path_is_refused_before_scoring(model_dir, classifier_dir, tmp_path, capsys):
    """--predictions writes the model's label names as UTF-8, not as \\u escapes, and numbers the lines
    as the file does, with a header or without; a path that could not
    take the file is refused, naming it, before the model loads: standard output (where the report
    goes), the TSV itself (its lines would be overwritten), a directory, a missing folder; and the
    flag is a classifier's only."""
    torch.manual_seed(2)
    named = tmp_path / "named"
    GPTClassifier(GPT.from_pretrained(model_dir), num_labels=2, id2label={0: "négatif", 1: "positif"}).save_pretrained(named)
    Tokenizer.from_pretrained(model_dir).save_pretrained(named)
    tsv = tmp_path / "t.tsv"
    tsv.write_text("texte\tétiquette\npas bon du tout\tnégatif\nexcellent film\tpositif\n", encoding="utf-8")
    out = tmp_path / "p.jsonl"
    assert main([str(named), str(tsv), "--device", "cpu", "--predictions", str(out)]) == 0
    capsys.readouterr()
    written = out.read_bytes().decode("utf-8")
    assert '"label": "négatif"' in written and "\\u" not in written
    assert [json.loads(line)["line"] for line in written.splitlines()] == [2, 3]
    tsv.write_text("pas bon du tout\tnégatif\nexcellent film\tpositif\n", encoding="utf-8")  # no header
    assert main([str(named), str(tsv), "--device", "cpu", "--predictions", str(out)]) == 0
    assert [json.loads(line)["line"] for line in out.read_text(encoding="utf-8").splitlines()] == [1, 2]
    (tmp_path / "t.txt").write_text(TEXT)
    for model, file, dest, error in (
        (named, tsv, "-", "--predictions - would mix the predictions into the report on standard output"),
        (named, tsv, str(tsv), f"--predictions {tsv} is the TSV file being scored, which it would overwrite"),
        (named, tsv, str(tmp_path), f"--predictions {tmp_path} is a directory: give a file name"),
        (named, tsv, str(tmp_path / "no" / "p.jsonl"), f"the folder {tmp_path / 'no'} does not exist"),
        (model_dir, tmp_path / "t.txt", str(out), f"{model_dir} is a language model: drop --predictions"),
    ):
        assert main([str(model), str(file), "--device", "cpu", "--predictions", dest]) == 2, dest
        err = capsys.readouterr().err
        assert "eval: error: " in err and error in err, (dest, err)
    assert tsv.read_text(encoding="utf-8").startswith("pas bon du tout\t")  # untouched


def test_a_character_level_token_file_is_not_scored_as_text(model_dir, tmp_path, capsys):
    """A review: `minigpt eval MODEL nanodata/char/val.bin` printed perplexity 11647942 over 39,999
    tokens: nanoGPT's character ids (uint16 below 65) are every one a valid UTF-8 byte, half of them NUL.
    A text of more than a tenth NULs is refused as prepare refuses it, from a file or standard input."""
    text = "First Citizen:\nBefore we proceed any further, hear me speak.\n" * 20
    stoi = {c: i for i, c in enumerate(sorted(set(text)))}
    (tmp_path / "val.bin").write_bytes(bytes(b for c in text for b in (stoi[c], 0)))  # uint16, little-endian
    assert main([str(model_dir), str(tmp_path / "val.bin"), "--device", "cpu"]) == 2
    assert "val.bin looks like a binary (token) file, not text (a tenth or more of its first characters are NUL bytes); pass a text file" in capsys.readouterr().err


def test_predictions_that_cannot_be_written_are_named_as_given_not_by_the_temp_file(classifier_dir, tmp_path, capsys,
                                                                                   monkeypatch):
    """A deployment audit: a --predictions file whose write failed after scoring (a full disk, a
    folder made read-only) was named by the temp file the atomic write makes, `p.jsonl.tmp`, a file
    the user never named. The error names --predictions as given, then the OS's reason alone
    (e.strerror): a full disk fails the temp's fsync, which files.fsync_file names by the temp and
    files.atomic_path by p.jsonl itself, and neither the temp nor its folder is said after the file."""
    import errno

    def full_disk(fd):  # as the kernel fails the fsync of p.jsonl.tmp: no file name
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    (tmp_path / "test.tsv").write_text("\n".join(TSV_LINES) + "\n", encoding="utf-8")
    out = tmp_path / "p.jsonl"
    assert main([str(classifier_dir), str(tmp_path / "test.tsv"), "--device", "cpu", "--predictions", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"eval: error: cannot write --predictions {out}: No space left on device\n" in err and ".tmp" not in err, err
    assert not out.exists()


@pytest.mark.skipif(os.name == "nt", reason="symbolic links need admin rights on Windows")
def test_a_link_planted_at_the_predictions_temp_is_said_of_the_temp_not_of_the_file(classifier_dir, tmp_path, capsys,
                                                                                    monkeypatch):
    """A review: a symbolic link swapped in for p.jsonl.tmp while it was written came out as "cannot
    write --predictions .../p.jsonl: is a symbolic link, ...; remove it": the user's own file called
    a link, as write_predictions said e.strerror alone and the temp's name was only e.filename. The
    error's file is named where it is not --predictions itself (files.failure_reason)."""
    import minigpt.files as files

    real_fsync_file = files.fsync_file

    def swapped(path, mode=None):  # someone swaps a link in for the temp after it was written
        path.unlink()
        path.symlink_to(tmp_path / "elsewhere")
        return real_fsync_file(path, mode)

    monkeypatch.setattr(files, "fsync_file", swapped)
    (tmp_path / "test.tsv").write_text("\n".join(TSV_LINES) + "\n", encoding="utf-8")
    out = tmp_path / "p.jsonl"
    assert main([str(classifier_dir), str(tmp_path / "test.tsv"), "--device", "cpu", "--predictions", str(out)]) == 2
    err = capsys.readouterr().err
    assert (f"eval: error: cannot write --predictions {out}: p.jsonl.tmp: is a symbolic link, which minigpt does not "
            "write through (one planted there could point at any file); remove it\n") in err, err
    assert not out.exists() and not (tmp_path / "elsewhere").exists()


@pytest.mark.parametrize("recorded, expected", [(None, None), (1024, None), (2048, None), (64, 64), (1, 1)])
def test_shorter_trained_length_is_a_record_shorter_than_the_context(recorded, expected):
    """A reread: the length a model was trained on, as it bounds a window (window_length), a pair
    (pairs_report) or a classifier's text (cut_length), was worked out three ways (`min(record or
    n, n)`, `record is not None and record < n`, twice). One helper now: the record where it is
    shorter than the context, else None (the model trained every position, or records nothing)."""
    assert evaluate.shorter_trained_length(recorded, n_positions=1024) == expected
