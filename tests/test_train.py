"""The training loop (minigpt/train.py), mostly driven by `minigpt train` (minigpt/pretrain.py): it
learns, resumes bit for bit, scales to 2 processes, saves atomically, stops cleanly on NaN and
rejects bad input with a clear message."""
from __future__ import annotations

import argparse
import contextlib
import errno
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field, fields, make_dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import minigpt.files
import minigpt.optimizer
import minigpt.resume
import minigpt.run_dir
import minigpt.run_log
import minigpt.train as train
import minigpt.train_runtime as train_runtime
from minigpt.checkpoint import INDEX_NAME
from minigpt import GPT, GPTConfig, Tokenizer
from minigpt.data import load_tokens, sample_batch
from minigpt.run_dir import STATE_FILE, settle_best
from minigpt.run_log import read_log
from minigpt.optimizer import lr_at
from minigpt.stats import gpt_flops_per_token, peak_flops
from minigpt.pretrain import build_model, pretrain
from minigpt.pretrain import main as train_main
from minigpt.train_runtime import TrainingDiverged
from minigpt.train_config import TrainConfig, add_config_flags, flag, parse_config

VOCAB = 64


def make_data(path: Path, n_train: int = 4000, n_val: int = 600, top_id: int | None = None) -> Path:
    """A learnable corpus: a fixed random 'sentence' of ids repeated, so the next token is
    predictable from the previous two and a tiny model's loss falls fast."""
    rng = np.random.default_rng(0)
    sentence = rng.integers(0, VOCAB - 1, size=37)
    ids = np.resize(sentence, n_train + n_val).astype(np.uint16)
    if top_id is not None:
        ids[5] = top_id
    path.mkdir(parents=True, exist_ok=True)
    ids[:n_train].tofile(path / "train.bin")
    ids[n_train:].tofile(path / "val.bin")
    meta = {"vocab_size": VOCAB, "eos_token_id": VOCAB - 1, "train_tokens": n_train, "val_tokens": n_val, "train_bytes": 3 * n_train, "val_bytes": 3 * n_val}
    (path / "meta.json").write_text(json.dumps(meta))
    return path


def add_tokenizer(data: Path, tokenizer: Tokenizer) -> Path:
    """Give make_data's DATA_DIR a tokenizer/, as `minigpt prepare` does, with meta.json's vocab_size
    and eos_token_id made its own (pretrain refuses a meta.json that disagrees with its tokenizer)."""
    tokenizer.save_pretrained(data / "tokenizer")
    meta = json.loads((data / "meta.json").read_text())
    meta.update(vocab_size=tokenizer.vocab_size, eos_token_id=tokenizer.eos_token_id)
    (data / "meta.json").write_text(json.dumps(meta))
    return data


def tiny_cfg(data: Path, out: Path, cls: type = TrainConfig, **kw) -> TrainConfig:
    base = dict(
        data=str(data), out=str(out), preset="gpt2-tiny", n_layer=2, n_head=2, n_embd=32, block_size=16,
        batch_size=4, grad_accum=2, max_iters=12, lr=3e-3, min_lr=3e-4, warmup_iters=3,
        eval_interval=6, eval_iters=2, log_interval=3, device="cpu", dropout=0.1, seed=7,
    )
    return cls(**{**base, **kw})


def test_logged_tokens_per_s_counts_every_step_since_the_last_record(tmp_path, monkeypatch):
    """Mutant (a mutation audit): tokens/s (and MFU from it) divided the last step's tokens by the
    time of every step since the last record, log_interval times too low; no test looked. With a
    clock that takes 0.5 s a step, each record of 3 steps says batch_size * block_size * grad_accum / 0.5."""
    import minigpt.train as train

    ticks = iter(range(10**6))  # train.py reads the clock twice a step, at its start and its end
    monkeypatch.setattr(train, "time", SimpleNamespace(perf_counter=lambda: 0.5 * next(ticks)))
    cfg = tiny_cfg(make_data(tmp_path / "data"), tmp_path / "out", max_iters=6, log_interval=3, eval_interval=0)
    pretrain(cfg)
    rates = [r["tokens_per_s"] for r in read_log(tmp_path / "out") if "tokens_per_s" in r]
    assert rates == [cfg.batch_size * cfg.block_size * cfg.grad_accum / 0.5] * 2


def step_records(out: Path) -> list[dict]:
    """OUT_DIR's log records of the run's steps: without its opening records (a start's, each
    resume's: run_log.py's `opening_record`), which differ between runs that trained alike."""
    return [r for r in read_log(out) if "run" not in r]


def final_state(out: Path) -> dict:
    return torch.load(out / STATE_FILE, weights_only=True)


def test_loss_goes_down_and_outputs_are_written(tmp_path):
    data = make_data(tmp_path / "data")
    cfg = tiny_cfg(data, tmp_path / "out", max_iters=60, eval_interval=20, lr=1e-2, dropout=0.0)
    result = pretrain(cfg)
    log = [json.loads(line) for line in (tmp_path / "out" / "log.jsonl").read_text().splitlines()]
    train_losses = [r["loss"] for r in log if "loss" in r]
    val_losses = [r["val_loss"] for r in log if "val_loss" in r]
    print(f"train loss {train_losses[0]:.3f} → {train_losses[-1]:.3f}; val loss {val_losses}")
    assert train_losses[0] > 0.9 * math.log(VOCAB)  # starts near chance: ln(64)
    assert train_losses[-1] < 0.5 * train_losses[0]
    assert val_losses[-1] < val_losses[0]
    assert result["val_bpb"] == pytest.approx(result["val_loss"] / math.log(2) / 3)
    out = tmp_path / "out"
    for name in ("config.json", "model.safetensors", STATE_FILE, "loss.png", "best/model.safetensors", "best/metrics.json"):
        assert (out / name).exists(), name
    # The exported checkpoint is the trained model, in HF layout that minigpt (and HF) reopen.
    model = GPT.from_pretrained(out)
    assert model.config.eos_token_id == model.config.bos_token_id == VOCAB - 1  # the data's <|endoftext|>, not GPT-2's 50256
    state = final_state(out)["model"]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())


def test_lr_schedule_warms_up_then_decays_to_min():
    cfg = TrainConfig(lr=1.0, min_lr=0.1, warmup_iters=10, max_iters=110)
    assert lr_at(0, cfg) == pytest.approx(0.1)
    assert lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(60, cfg) == pytest.approx(0.55)  # halfway down the cosine
    assert lr_at(110, cfg) == pytest.approx(0.1) == lr_at(500, cfg)
    lrs = [lr_at(s, cfg) for s in range(10, 110)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_the_val_loss_averages_eval_iters_distinct_batches_the_same_at_every_evaluation():
    """estimate_val_loss seeds val batch k by (seed, EVAL_STREAM, k): eval_iters different batches
    (not one batch eval_iters times), and the same ones at every evaluation."""
    import contextlib
    from types import SimpleNamespace

    from minigpt.train import estimate_val_loss

    drawn = []

    def get_batch(split, rng):
        assert split == "val"
        x = torch.randint(0, 2**31, (1,), generator=rng)
        drawn.append(int(x))
        return (x.double(),)

    cfg = SimpleNamespace(eval_iters=4, seed=7)
    rt = SimpleNamespace(rank=0, world=1, device=torch.device("cpu"), to_device=lambda t: t,
                         autocast=contextlib.nullcontext)
    loss = estimate_val_loss(torch.nn.Linear(1, 1), cfg, get_batch, lambda model, x: x.sum(), rt)
    first, drawn[:] = list(drawn), []
    assert len(set(first)) == 4, "four distinct val batches, not one four times"
    assert loss == pytest.approx(sum(first) / 4, rel=1e-6)
    estimate_val_loss(torch.nn.Linear(1, 1), cfg, get_batch, lambda model, x: x.sum(), rt)
    assert drawn == first, "the same batches at the next evaluation"


def test_weight_decay_groups():
    model = GPT(GPTConfig.gpt2("gpt2-tiny", vocab_size=VOCAB))
    opt = train.build_optimizer(model, TrainConfig(weight_decay=0.1), torch.device("cpu"))
    names = {id(p): n for n, p in model.named_parameters()}
    decay = {names[id(p)] for p in opt.param_groups[0]["params"]}
    no_decay = {names[id(p)] for p in opt.param_groups[1]["params"]}
    assert decay == {n for n in names.values() if n.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight"))}
    assert {"transformer.wte.weight", "transformer.wpe.weight", "transformer.ln_f.weight", "transformer.h.0.attn.c_attn.bias"} <= no_decay
    assert len(decay) + len(no_decay) == len(names)  # the tied lm_head is wte: counted once


def test_lr_peaks_at_lr_exactly_at_the_end_of_warmup_and_follows_lr_decay_iters():
    """The last warmup step and the first cosine step both run at lr, never above it; with
    lr_decay_iters set, min_lr is reached there, not at max_iters."""
    cfg = TrainConfig(lr=1.0, min_lr=0.1, warmup_iters=10, max_iters=1000, lr_decay_iters=110)
    assert lr_at(9, cfg) == lr_at(10, cfg) == pytest.approx(1.0)
    assert max(lr_at(s, cfg) for s in range(1000)) == pytest.approx(1.0)
    assert lr_at(60, cfg) == pytest.approx(0.55) and lr_at(110, cfg) == pytest.approx(0.1) == lr_at(999, cfg)


def test_optimizer_groups_carry_their_weight_decay_and_the_betas():
    model = GPT(GPTConfig.gpt2("gpt2-tiny", vocab_size=VOCAB))
    opt = train.build_optimizer(model, TrainConfig(weight_decay=0.3, beta1=0.8, beta2=0.99), torch.device("cpu"))
    assert [g["weight_decay"] for g in opt.param_groups] == [0.3, 0.0]  # matmul weights; the rest
    assert all(g["betas"] == (0.8, 0.99) for g in opt.param_groups)


def test_optimizer_leaves_frozen_parameters_out():
    model = GPT(GPTConfig.gpt2("gpt2-tiny", vocab_size=VOCAB))
    model.transformer.h[0].requires_grad_(False)
    opt = train.build_optimizer(model, TrainConfig(), torch.device("cpu"))
    held = {id(p) for g in opt.param_groups for p in g["params"]}
    assert held == {id(p) for p in model.parameters() if p.requires_grad} and len(held) < len(list(model.parameters()))


def test_mfu_peak_is_found_by_gpu_name_and_flops_per_token_follow_palm(monkeypatch):
    """MFU's two factors: the GPU's bf16 peak, the most specific name first ("H100 PCIe" is not an
    SXM H100), none off CUDA or for an unlisted GPU; and 6 FLOPs per parameter (wpe left out)
    plus attention's 12 · n_layer · n_embd · T."""
    for name, peak in (("NVIDIA H100 PCIe", 756e12), ("NVIDIA H100 NVL", 835e12), ("NVIDIA H100 80GB HBM3", 989e12),
                       ("NVIDIA L4", 121e12), ("NVIDIA L40S", 362e12), ("NVIDIA L40", 181e12),  # not the L4's
                       ("NVIDIA H200 NVL", 835e12), ("NVIDIA H200", 989e12), ("NVIDIA A100-SXM4-80GB", 312e12),
                       ("Tesla T4", None)):
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None, name=name: name)
        assert peak_flops(torch.device("cuda")) == peak, name
    assert peak_flops(torch.device("cpu")) is None
    n = 124_439_808 - 1024 * 768  # GPT-2 124M's parameters (wte counted once, as the tied head) less wpe
    assert gpt_flops_per_token(GPTConfig.gpt2("gpt2"), 1024) == 6 * n + 12 * 12 * 768 * 1024


def _interrupt_at_batch(monkeypatch, n_calls: int, signum: int = signal.SIGINT) -> None:
    """Send ourselves a signal (SIGINT: a real Ctrl-C) while the n-th training batch is drawn."""
    calls = {"n": 0}
    real = sample_batch

    def sample(tokens, *args):
        if len(tokens) > 1000:  # the train split
            calls["n"] += 1
            if calls["n"] == n_calls:
                signal.raise_signal(signum)
        return real(tokens, *args)

    monkeypatch.setattr("minigpt.pretrain.sample_batch", sample)


def test_a_stop_during_the_last_step_ends_the_run_as_finished(tmp_path, monkeypatch, capsys):
    """An end-to-end audit: Ctrl-C during the last step let the run evaluate and save at max_iters,
    then said "interrupted: ... continue with --resume", exit 130 and no summary, for a run that
    was whole (`minigpt train ... && next` stopped there). It now ends as a finished run does."""
    data = make_data(tmp_path / "data")
    _interrupt_at_batch(monkeypatch, 3)  # step 2 of 2 (2 micro-batches a step)
    try:
        metrics = pretrain(tiny_cfg(data, tmp_path / "out", max_iters=2))
    except KeyboardInterrupt:  # (Stopped is one: caught here, or it would stop the whole test run)
        pytest.fail("a stop during the last step ended a finished run as interrupted")
    assert metrics["step"] == 2 and "val_loss" in metrics and "interrupted" not in capsys.readouterr().err
    assert json.loads((tmp_path / "out" / "best" / "metrics.json").read_text())["step"] == 2


def test_a_stop_during_an_evaluation_stops_right_after_it(tmp_path, monkeypatch, capsys):
    """An end-to-end audit: Ctrl-C during an evaluation (a long one, on a big val set) waited for it
    to end, then ran one more training step before it saved and stopped. The evaluation's own
    checkpoint is now the stop's: no step after it."""
    data = make_data(tmp_path / "data")
    train_batches, val_batches, real = [], [], sample_batch

    def sample(tokens, *args):
        if len(tokens) > 1000:  # the train split
            train_batches.append(1)
        else:
            val_batches.append(1)
            if len(val_batches) == 1:  # step 6's evaluation (the first), at its first val batch
                signal.raise_signal(signal.SIGINT)
        return real(tokens, *args)

    monkeypatch.setattr("minigpt.pretrain.sample_batch", sample)
    with pytest.raises(KeyboardInterrupt) as stopped:
        pretrain(tiny_cfg(data, tmp_path / "out"))
    assert stopped.value.signum == signal.SIGINT
    assert len(train_batches) == 12 and final_state(tmp_path / "out")["step"] == 6
    said = capsys.readouterr().err
    assert f"interrupted: saved step 6 to {tmp_path / 'out'}; continue with --resume (resume=True in Python)" in said


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_saves_and_resume_is_bitwise_exact(tmp_path, monkeypatch, capfd, signum):
    data = make_data(tmp_path / "data")
    pretrain(tiny_cfg(data, tmp_path / "straight"))
    handlers_before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    # Ctrl-C (or torchrun's SIGTERM) during the 5th step's first micro-batch (call 9, with
    # grad_accum=2): the step finishes, is saved, and the loop stops; --resume runs steps 6..12.
    _interrupt_at_batch(monkeypatch, 9, signum)
    with pytest.raises(KeyboardInterrupt) as stopped:
        pretrain(tiny_cfg(data, tmp_path / "resumed"))
    assert stopped.value.signum == signum  # `minigpt train` exits with 128 + it: 130 for Ctrl-C, 143 for SIGTERM
    assert final_state(tmp_path / "resumed")["step"] == 5
    # The signal's message knows the loop's progress (a review: nothing checked that the loop hands
    # it over): before the first checkpoint (step 6), nothing stands.
    assert "to stop at once: nothing is saved yet)" in capfd.readouterr().err
    assert (tmp_path / "resumed" / "loss.png").exists()  # drawn at the stop too: the first evaluation (step 6) never came
    # The loop's handlers are gone again: whatever was installed before (SIG_IGN, for one, when
    # the suite runs as a background job) is back.
    assert {s: signal.getsignal(s) for s in handlers_before} == handlers_before
    monkeypatch.undo()
    with pytest.raises(FileExistsError, match="--resume"):
        pretrain(tiny_cfg(data, tmp_path / "resumed"))
    pretrain(tiny_cfg(data, tmp_path / "resumed", resume=True))

    a, b = final_state(tmp_path / "straight"), final_state(tmp_path / "resumed")
    assert a["step"] == b["step"] == 12
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for i, s in a["optimizer"]["state"].items():
        assert all(torch.equal(s[k], b["optimizer"]["state"][i][k]) for k in s)
    assert load_file(tmp_path / "straight" / "model.safetensors").keys() == load_file(tmp_path / "resumed" / "model.safetensors").keys()
    log = [r["step"] for r in step_records(tmp_path / "resumed")]
    assert log == sorted(log)  # no records duplicated by the restart

    def losses(run: str) -> list:  # each record's train loss: the mean since the record before
        return [(r["step"], r.get("loss"), r.get("val_loss")) for r in step_records(tmp_path / run)]
    assert losses("straight") == losses("resumed")  # step 6's mean spans steps 4-6 across the restart too


def test_resume_at_the_step_a_run_stopped_ends_it_there_as_a_run_of_that_length(tmp_path, monkeypatch, capsys):
    """Bug (an audit): `--resume --max-iters S` on a run stopped (SIGTERM) at step S, to end it
    there, ran no step and so ended nothing: no final evaluation, best/ and the returned metrics
    stale, the train record of the steps since the last one lost, and a note about "the learning
    rate of step S+1, the first one resumed", a step that never ran. It now ends as a run of S
    steps does: the same log records (but tokens/s and the gradient norm, not saved), best/ and
    checkpoint. A second such resume has nothing left to do."""
    data = make_data(tmp_path / "data")
    pretrain(tiny_cfg(data, tmp_path / "straight", max_iters=5, lr_decay_iters=12))
    _interrupt_at_batch(monkeypatch, 9, signal.SIGTERM)  # during step 5: saved at 5, between evaluations (every 6)
    with pytest.raises(KeyboardInterrupt):
        pretrain(tiny_cfg(data, tmp_path / "stopped", lr_decay_iters=12))
    monkeypatch.undo()
    capsys.readouterr()
    assert train_main(["--out", str(tmp_path / "stopped"), "--resume", "--max-iters", "5"]) == 0
    out, err = capsys.readouterr()
    assert "the first one resumed" not in err

    def log(run: str) -> list:
        return [(r["step"], r.get("loss"), r.get("lr"), r.get("val_loss")) for r in step_records(tmp_path / run)]
    records = log("straight")  # ..., step 5's train record (the mean of steps 4-5), step 5's evaluation
    assert log("stopped") == records and [(r[0], r[3] is None) for r in records[-2:]] == [(5, True), (5, False)]
    metrics = json.loads(out.strip().splitlines()[-1])
    assert metrics["step"] == 5 and metrics["val_loss"] == metrics["best_val_loss"] == records[-1][3]
    best = json.loads((tmp_path / "stopped" / "best" / "metrics.json").read_text())
    assert best == json.loads((tmp_path / "straight" / "best" / "metrics.json").read_text()) and best["step"] == 5
    a, b = final_state(tmp_path / "straight"), final_state(tmp_path / "stopped")
    assert a["step"] == b["step"] == 5 and b["log_partial"] == [0.0, 0]
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert train_main(["--out", str(tmp_path / "stopped"), "--resume", "--max-iters", "5"]) == 0
    assert log("stopped") == log("straight")  # evaluated already: nothing written again


@pytest.mark.parametrize("error,code", [
    (train_runtime.Stopped(signal.SIGTERM), 143), (train_runtime.Stopped(signal.SIGINT), 130), (KeyboardInterrupt(), 130),
    (TrainingDiverged("loss is nan"), 1), (ValueError("bad input"), 2), (FileNotFoundError("no data"), 2)])
def test_exit_codes_say_how_a_run_ended(error, code, capsys):
    """128 + the signal, as a shell reports a killed command: a scheduler that sent SIGTERM sees 143.
    A failure is one line, `PROG: error: MESSAGE` (a review: a diverged run's had no `error:`)."""
    def work():
        raise error

    assert train_runtime.run_command("minigpt train", work) == code
    out, err = capsys.readouterr()
    assert out == ""  # no result line
    if code in (1, 2):
        assert err.startswith(f"minigpt train: error: {error}"), err


def test_a_missing_cxx_compiler_is_one_line_from_run_command_itself(capsys):
    """An audit: --compile without a working C++ compiler ended in Inductor's 125-line traceback.
    run_command says it in one line, exit 2, itself, not only minigpt.cli's main around it: a torchrun
    worker, which ends inside run_command, never gets back there (it printed the traceback, once a
    process). The error is torch's InductorError caused by InvalidCxxCompiler, told by that name."""
    class InvalidCxxCompiler(RuntimeError):  # (torch._inductor.exc's, as the chain shows it)
        pass

    def work():
        try:
            raise InvalidCxxCompiler("No working C++ compiler found in torch._inductor.config.cpp.cxx: (None, 'g++')")
        except InvalidCxxCompiler as e:
            raise RuntimeError("InductorError: InvalidCxxCompiler: No working C++ compiler found") from e

    assert train_runtime.run_command("minigpt train", work) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("minigpt train: error: --compile needs a working C++ compiler") and err.count("\n") == 1


def test_a_process_group_of_the_caller_is_left_alone(tmp_path, capsys):
    """run_command closes (and, for a torchrun worker, ends the process of) only a group that its
    work joined: a script that made its own group, then called a command's main, goes on with it."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        assert train_runtime.run_command("minigpt train", lambda: {"step": 1}) == 0  # returned: the process goes on
        assert dist.is_initialized()
        assert json.loads(capsys.readouterr().out) == {"step": 1}
    finally:
        dist.destroy_process_group()


def test_an_interrupt_before_the_first_log_record_saves_without_a_curve(tmp_path, monkeypatch):
    _interrupt_at_batch(monkeypatch, 1)  # step 1 of 12; the first record comes at step 3
    with pytest.raises(KeyboardInterrupt):
        pretrain(tiny_cfg(make_data(tmp_path / "data"), tmp_path / "out"))
    assert final_state(tmp_path / "out")["step"] == 1
    # A log that holds the start's record alone, which marks OUT_DIR as a run's: a crash's audit found
    # a SIGKILL during this first checkpoint (a scheduler's grace period running out) left weights
    # that --resume and --auto-resume refused as "a model"; now they start the run again. No curve:
    # the log holds no loss to draw.
    assert [r["run"] for r in read_log(tmp_path / "out")] == ["start"] and not (tmp_path / "out" / "loss.png").exists()
    (tmp_path / "out" / "training_state.pt").unlink()  # what the kill leaves: the state is written last
    monkeypatch.undo()
    pretrain(tiny_cfg(tmp_path / "data", tmp_path / "out", auto_resume=True))
    assert final_state(tmp_path / "out")["step"] == 12


def test_a_run_configured_with_path_objects_resumes(tmp_path):
    """TrainConfig(out=Path(...)) from Python: the saved state held a PosixPath, which
    torch.load(weights_only=True) refuses, so --resume called the state unreadable."""
    data = make_data(tmp_path / "data")
    cfg = {**vars(tiny_cfg(data, tmp_path / "out", max_iters=2)), "out": tmp_path / "out", "data": data}
    pretrain(TrainConfig(**cfg))
    pretrain(TrainConfig(**{**cfg, "max_iters": 3, "resume": True}))
    assert final_state(tmp_path / "out")["step"] == 3


def test_train_config_keeps_every_path_as_a_str(tmp_path):
    """A typing audit: TrainConfig(out=Path(...)) kept the PosixPath while data and init became str
    (a missing path, as given). Every path is a str now, as the command line gives it; one that is
    no path is a TypeError naming its field."""
    cfg = TrainConfig(out=tmp_path / "out", data=tmp_path, init=tmp_path / "missing")
    assert (cfg.out, cfg.data, cfg.init) == (str(tmp_path / "out"), str(tmp_path), str(tmp_path / "missing"))
    for bad in (3, b"out"):
        with pytest.raises(TypeError, match=re.escape(f"out must be a path (a str or a pathlib.Path), got {bad!r}")):
            TrainConfig(out=bad)
    with pytest.raises(TypeError, match="init must be a path"):
        TrainConfig(init=7)


def test_a_second_ctrl_c_stops_at_once_without_saving(tmp_path, monkeypatch):
    """README: Ctrl-C finishes the step and saves; pressed twice, it stops at once. Both signals
    arrive during step 8: the first alone would save step 8, the second raises there and then,
    so the last checkpoint stays the step-6 one (eval_interval 6)."""
    data = make_data(tmp_path / "data")
    calls = {"n": 0}
    real = sample_batch

    def sample(tokens, *args):
        if len(tokens) > 1000:  # the train split
            calls["n"] += 1
            if calls["n"] == 15:  # step 8's first micro-batch (grad_accum 2)
                signal.raise_signal(signal.SIGINT)
                assert calls["n"] == 15  # the first Ctrl-C only sets a flag: we are still here
                signal.raise_signal(signal.SIGINT)
                raise AssertionError("the second Ctrl-C did not stop the run")
        return real(tokens, *args)

    monkeypatch.setattr("minigpt.pretrain.sample_batch", sample)
    # The second Ctrl-C gets the handler from before the run: Python's, as in a terminal (a
    # suite run as a background job starts with SIGINT ignored).
    outer = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        handlers_before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        with pytest.raises(KeyboardInterrupt):
            pretrain(tiny_cfg(data, tmp_path / "out"))
        assert {s: signal.getsignal(s) for s in handlers_before} == handlers_before
    finally:
        signal.signal(signal.SIGINT, outer)
    assert calls["n"] == 15 and final_state(tmp_path / "out")["step"] == 6


@pytest.mark.parametrize("second,at_step", [("during the step", 8), ("while saving", 8), ("during the step", 4),
                                            ("during the step", 2), ("while saving", 2)])
def test_a_second_ctrl_c_says_which_checkpoint_stands(tmp_path, monkeypatch, capsys, second, at_step):
    """An end-to-end audit: a second Ctrl-C (pressed again while the run finished its step, or
    saved) ended `minigpt train` with exit 130 and not a word. It now says what the disk holds:
    the last checkpoint written whole (each file is replaced atomically, the state last), here
    step 6's, whether it came during step 8 or while step 8's checkpoint was being written (its
    model files were, its state was not); or that there is none yet."""
    data, out = make_data(tmp_path / "data"), tmp_path / "out"
    real_sample, real_save = sample_batch, torch.save

    def sample(tokens, *args):
        if len(tokens) > 1000:  # the train split
            sample.calls += 1
            if sample.calls == 2 * at_step - 1:  # the step's first micro-batch (grad_accum 2)
                signal.raise_signal(signal.SIGINT)  # the first only asks for a stop
                if second == "during the step":
                    signal.raise_signal(signal.SIGINT)
        return real_sample(tokens, *args)

    def save(state, *args, **kwargs):
        if isinstance(state, dict) and state.get("step") == at_step:  # its training state, after its model files
            signal.raise_signal(signal.SIGINT)
        return real_save(state, *args, **kwargs)

    sample.calls = 0
    monkeypatch.setattr("minigpt.pretrain.sample_batch", sample)
    monkeypatch.setattr(torch, "save", save)
    cfg = {k: v for k, v in vars(tiny_cfg(data, out)).items() if v is not None and v is not False}
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in cfg.items()]
    outer = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal (see the test above)
    try:
        assert train_main(flags) == 130
    finally:
        signal.signal(signal.SIGINT, outer)
    said = capsys.readouterr().err.splitlines()[-1]
    monkeypatch.setattr("minigpt.pretrain.sample_batch", real_sample)  # (not undo(): conftest's patches stay)
    monkeypatch.setattr(torch, "save", real_save)
    if not out.exists():  # before the first log record (a trainer's audit: it was told to --resume, which found no run)
        assert at_step < 3
        assert said == "stopped at once by a second Ctrl-C, before anything was saved: the same command starts the run again"
        assert train_main(flags) == 0
        return
    if not (out / STATE_FILE).exists() and not (out / "log.jsonl").exists():  # its first checkpoint half written
        assert (at_step, second) == (2, "while saving")
        assert said == (f"stopped at once by a second Ctrl-C, while the run's first checkpoint was written, before any "
                        f"log record: {out} holds part of it but no {STATE_FILE}, so neither the same command nor "
                        f"--resume takes it for this run's; delete {out}, then give the same command"), said
        assert train_main(flags) == 2 and train_main([*flags, "--resume"]) == 2  # (as it says)
        shutil.rmtree(out)
        assert train_main(flags) == 0
        return
    if not (out / STATE_FILE).exists():  # before a first checkpoint was whole (its model files perhaps written)
        assert at_step < 6
        assert said == ("stopped at once by a second Ctrl-C, before the run's first checkpoint: the same command with "
                        "--resume (resume=True in Python) starts it again from step 0"), said
        assert train_main([*flags, "--resume"]) == 0
        return
    if at_step < 6:  # the stop's own checkpoint, whole (a reviewer's case: it was said that nothing was saved)
        assert final_state(out)["step"] == at_step
        assert said.startswith(f"stopped at once by a second Ctrl-C: {out / STATE_FILE} holds step {at_step}"), said
        return
    assert final_state(out)["step"] == 6
    assert said == (f"stopped at once by a second Ctrl-C: {out / STATE_FILE} holds step 6, the last checkpoint written "
                    "whole (each of its files is replaced atomically, the training state last); continue from it with "
                    "--resume (resume=True in Python)"), said

def test_grad_clip_clips_the_global_norm_and_logs_it_before_clipping(tmp_path, monkeypatch):
    """--grad-clip scales all gradients together to a global norm ≤ grad_clip before AdamW
    steps; log.jsonl's grad_norm is the norm before clipping."""
    data = make_data(tmp_path / "data")
    clip = 0.05
    seen = []  # (step, global norm of the gradients AdamW is handed)
    real_build = train.build_optimizer

    def spying_build(model, cfg, device):
        opt = real_build(model, cfg, device)
        real_step = opt.step

        def step(*args, **kwargs):
            grads = [p.grad for g in opt.param_groups for p in g["params"] if p.grad is not None]
            seen.append(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item())
            return real_step(*args, **kwargs)

        opt.step = step
        return opt

    monkeypatch.setattr(train, "build_optimizer", spying_build)
    pretrain(tiny_cfg(data, tmp_path / "out", grad_clip=clip, max_iters=6))
    logged = {r["step"]: r["grad_norm"] for r in map(json.loads, (tmp_path / "out" / "log.jsonl").read_text().splitlines())
              if "grad_norm" in r}
    print(f"grad norms before clipping {logged}, after {[f'{n:.4f}' for n in seen]}")
    assert len(seen) == 6 and sorted(logged) == [3, 6]
    for step, before in logged.items():
        assert before > clip  # else this run proves nothing about clipping
        assert seen[step - 1] == pytest.approx(clip, rel=1e-4)
    seen.clear()
    pretrain(tiny_cfg(data, tmp_path / "off", grad_clip=0.0, max_iters=3))  # 0: off, and nothing logged
    assert seen[-1] > clip
    assert not any("grad_norm" in r for r in map(json.loads, (tmp_path / "off" / "log.jsonl").read_text().splitlines()))


def test_best_keeps_the_earliest_of_equal_val_losses(tmp_path, monkeypatch):
    """best/ and finetune's best_val_loss_step ("the earliest on a tie") agree on a tie (a mutation
    audit: best/ moving on `<=` passed every test)."""
    data = make_data(tmp_path / "data")
    scripted = iter([3.0, 1.0, 1.0])
    monkeypatch.setattr(train, "estimate_val_loss", lambda *args: next(scripted))
    pretrain(tiny_cfg(data, tmp_path / "out", max_iters=12, eval_interval=4))
    assert json.loads((tmp_path / "out" / "best" / "metrics.json").read_text())["step"] == 8


def test_best_holds_the_checkpoint_of_the_lowest_val_loss(tmp_path, monkeypatch):
    """best/ is the model at the evaluation with the lowest val loss, not the last or the first.
    The val losses are scripted (3, 1, 2 at steps 4, 8, 12), so the best is step 8's model: the
    final model of the same run stopped at step 8 (same schedule through lr_decay_iters)."""
    data = make_data(tmp_path / "data")
    scripted = iter([3.0, 1.0, 2.0])
    monkeypatch.setattr(train, "estimate_val_loss", lambda *args: next(scripted))
    kw = dict(eval_interval=4, lr_decay_iters=12, dropout=0.0)
    pretrain(tiny_cfg(data, tmp_path / "out", max_iters=12, **kw))
    best = json.loads((tmp_path / "out" / "best" / "metrics.json").read_text())
    assert (best["step"], best["val_loss"]) == (8, 1.0)
    monkeypatch.setattr(train, "estimate_val_loss", lambda *args: 1.0)
    pretrain(tiny_cfg(data, tmp_path / "eight", max_iters=8, **kw))
    a, b = load_file(tmp_path / "out" / "best" / "model.safetensors"), load_file(tmp_path / "eight" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    last = load_file(tmp_path / "out" / "model.safetensors")
    assert not all(torch.equal(a[k], last[k]) for k in a)


def test_a_run_without_resume_leaves_a_checkpoint_and_its_log_alone(tmp_path):
    """Without --resume, a run refuses an OUT_DIR holding a checkpoint or a run's files (it would
    replace the weights and start a new log.jsonl), and --out equal to --init; an empty OUT_DIR,
    or one holding only unrelated files, is fine."""
    data = make_data(tmp_path / "data")
    model = tmp_path / "model"  # a shipped model: weights and the log of the run that made them
    GPT(GPTConfig(vocab_size=VOCAB, n_positions=32, n_embd=32, n_layer=1, n_head=2, bos_token_id=VOCAB - 1,
                        eos_token_id=VOCAB - 1)).save_pretrained(model)
    (model / "log.jsonl").write_text(json.dumps({"step": 99, "val_loss": 0.01}) + "\n")
    before = {f.name: f.read_bytes() for f in model.iterdir()}
    init = dict(init=str(model), preset=None, n_layer=None, n_head=None, n_embd=None, block_size=16, max_iters=2)
    with pytest.raises(FileExistsError, match=re.escape(f"--out {model} is the --init checkpoint")):
        pretrain(tiny_cfg(data, model, **init))
    with pytest.raises(FileExistsError, match=re.escape(f"{model} already holds a checkpoint or a run (log.jsonl, config.json, "
                                                        "model.safetensors); it is not a run that --resume can continue")):
        pretrain(tiny_cfg(data, model, max_iters=2))
    assert {f.name: f.read_bytes() for f in model.iterdir()} == before
    crashed = tmp_path / "crashed"  # a run that died before its first checkpoint: only its log
    crashed.mkdir()
    (crashed / "log.jsonl").write_text(json.dumps({"step": 3, "loss": 4.0}) + "\n")
    with pytest.raises(FileExistsError, match=re.escape(f"{crashed} holds no checkpoint: its run logged up to step 3 and "
                                                        "stopped before saving its first one")):
        pretrain(tiny_cfg(data, crashed, max_iters=2))
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine\n")
    pretrain(tiny_cfg(data, out, **init))
    assert (out / "notes.txt").read_text() == "mine\n" and (out / STATE_FILE).exists()


def test_resume_drops_a_torn_last_log_record(tmp_path):
    """A crash mid-write leaves half a record, without its newline, at the end of log.jsonl."""
    data = make_data(tmp_path / "data")
    out = tmp_path / "out"
    pretrain(tiny_cfg(data, out, max_iters=6))
    with open(out / "log.jsonl", "a") as f:
        f.write('{"step": 7, "lo')
    pretrain(tiny_cfg(data, out, resume=True))
    steps = [r["step"] for r in step_records(out)]
    assert steps == [3, 6, 6, 9, 12, 12]  # train records every 3 steps, evaluations every 6


def test_resume_names_the_file_and_line_of_a_damaged_log_record(tmp_path, capsys):
    """Bug (an audit): a log.jsonl damaged in its middle (not a torn last record, which a crash
    leaves) failed --resume with json's bare "Unterminated string starting at: line 1 column 13",
    naming neither the file nor its line."""
    data, out = make_data(tmp_path / "data"), tmp_path / "out"
    pretrain(tiny_cfg(data, out, max_iters=6))
    lines = (out / "log.jsonl").read_text().splitlines(keepends=True)
    (out / "log.jsonl").write_text(lines[0] + '{"step": 6, "lo\n' + "".join(lines[2:]))
    capsys.readouterr()
    assert train_main(["--out", str(out), "--resume", "--max-iters", "9"]) == 2
    err = capsys.readouterr().err
    assert f"{out / 'log.jsonl'}, line 2, is not a log record" in err and "mend or delete that line" in err
    assert "Traceback" not in err
    (out / "log.jsonl").write_text(lines[0] + "[6]\n" + "".join(lines[2:]))  # JSON, but not a record
    assert train_main(["--out", str(out), "--resume", "--max-iters", "9"]) == 2
    assert f"{out / 'log.jsonl'}, line 2, is not a log record" in capsys.readouterr().err


def test_a_crash_right_after_a_checkpoint_keeps_its_evaluation_in_the_log(tmp_path, monkeypatch):
    """Killed just after the step-6 checkpoint is saved: resume starts after step 6, so the
    evaluation of step 6 must already be in log.jsonl (it is never written again)."""
    data = make_data(tmp_path / "data")
    out = tmp_path / "out"
    real_save = train.save_checkpoint

    def save_then_die(out, raw, save_fn, optimizer, scaler, step, *args, **kwargs):
        real_save(out, raw, save_fn, optimizer, scaler, step, *args, **kwargs)
        raise SystemExit("killed")  # as kill -9 right after the state's rename

    monkeypatch.setattr(train, "save_checkpoint", save_then_die)
    with pytest.raises(SystemExit):
        pretrain(tiny_cfg(data, out))
    monkeypatch.undo()
    pretrain(tiny_cfg(data, out, resume=True))
    steps = [r["step"] for r in step_records(out)]
    assert steps == [3, 6, 6, 9, 12, 12]  # train records every 3 steps, evaluations every 6


def test_a_kill_between_a_new_best_and_its_checkpoint_resumes_with_the_best_the_state_knows(tmp_path, monkeypatch, capsys):
    """Bug (a trainer's audit): best/ was replaced at an evaluation before the state that records
    it was saved. Killed in between, the run resumed from the step before, with best/ holding the
    weights of steps it threw away (its metrics.json claiming a val loss no kept step had) and the
    best it knew of gone. Now the best/ it replaces waits as best.prev/ and comes back."""
    data = make_data(tmp_path / "data")
    out = tmp_path / "out"
    real_save = train.save_checkpoint
    scripted = iter([3.0, 2.0])  # steps 4 and 8: each a new best
    monkeypatch.setattr(train, "estimate_val_loss", lambda *args: next(scripted))
    kept = {}

    def die_at_step_8(out, raw, save_fn, optimizer, scaler, step, *args, **kwargs):
        if step == 8:
            raise SystemExit("killed")  # as kill -9 after best/ and the log record, before the checkpoint
        real_save(out, raw, save_fn, optimizer, scaler, step, *args, **kwargs)
        kept.update({f.name: f.read_bytes() for f in (out / "best").iterdir()})

    monkeypatch.setattr(train, "save_checkpoint", die_at_step_8)
    with pytest.raises(SystemExit):
        pretrain(tiny_cfg(data, out, eval_interval=4, max_iters=12))
    assert json.loads((out / "best" / "metrics.json").read_text())["step"] == 8 and (out / "best.prev").is_dir()
    monkeypatch.setattr(train, "save_checkpoint", real_save)
    monkeypatch.setattr(train, "estimate_val_loss", lambda *args: 9.0)  # no new best after the resume
    capsys.readouterr()
    pretrain(tiny_cfg(data, out, eval_interval=4, max_iters=12, resume=True))
    assert ("note: best/ held the evaluation at step 8, after the saved step 4 this run resumes from: the best/ before it "
            "(step 4) is put back") in capsys.readouterr().err
    assert {f.name: f.read_bytes() for f in (out / "best").iterdir()} == kept and not (out / "best.prev").exists()


def test_training_refuses_data_of_another_tokenizer_of_the_same_size(tmp_path):
    """Bug (a trainer's audit): only the vocabulary size and the EOS id were compared, so --init
    (or a resume with --allow-new-data) on data of another tokenizer of that size trained on, the
    ids meaning other tokens to the weights, and saved them beside the other vocab.json. Now the
    data's tokenizer is compared with the one saved beside the weights."""
    def data_with(name, text):
        data = make_data(tmp_path / name)  # the same ids: only the tokenizers differ
        return add_tokenizer(data, Tokenizer.train(text, vocab_size=258, progress=False))

    ours, theirs = data_with("ours", "ab" * 50), data_with("theirs", "cd" * 50)  # merges a+b, c+d
    pretrain(tiny_cfg(ours, tmp_path / "run", max_iters=6))
    init = dict(init=str(tmp_path / "run"), preset=None, n_layer=None, n_head=None, n_embd=None, max_iters=2)
    pretrain(tiny_cfg(ours, tmp_path / "ok", **init))  # its own tokenizer: trains
    with pytest.raises(ValueError, match=re.escape(f"the data's tokenizer ({theirs / 'tokenizer'}) is not the tokenizer of "
                                                   f"the model in {tmp_path / 'run'} (their vocab, merges differ)")):
        pretrain(tiny_cfg(theirs, tmp_path / "other", **init))
    with pytest.raises(ValueError, match="the data's tokenizer .* is not the tokenizer of the model"):
        pretrain(tiny_cfg(theirs, tmp_path / "run", max_iters=8, resume=True, allow_new_data=True))


def test_settle_best_puts_back_what_the_saved_state_knows(tmp_path):
    """Each moment a kill can leave best/ at (minigpt/run_dir.py's `save_best`), resumed at step 4."""
    def best_dir(name, step):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(json.dumps({"step": step}))

    def steps():
        return {name: json.loads((tmp_path / name / "metrics.json").read_text())["step"]
                for name in ("best", "best.new", "best.prev") if (tmp_path / name).exists()}

    best_dir("best", 4), best_dir("best.new", 8)  # killed while best.new/ was written
    assert settle_best(tmp_path, 4) is None and steps() == {"best": 4}
    (tmp_path / "best").rename(tmp_path / "best.prev"), best_dir("best.new", 8)  # between the two renames
    assert settle_best(tmp_path, 4) is None and steps() == {"best": 4}
    (tmp_path / "best").rename(tmp_path / "best.prev"), best_dir("best", 4)  # after the state, before best.prev/ went
    assert settle_best(tmp_path, 4) is None and steps() == {"best": 4}
    shutil.rmtree(tmp_path / "best"), best_dir("best", 8)  # a first best, its state never saved (a stop saved step 4)
    assert "it is removed (there was none before it)" in settle_best(tmp_path, 4) and steps() == {}


def test_bare_resume_continues_with_the_saved_settings(tmp_path, capsys):
    """`--resume` alone restores every setting of the saved run (shape, batch, schedule, ...);
    a flag given again overrides its saved value: here --max-iters, to go on from 4 to 8 steps.
    The result equals one straight run of 8 steps."""
    data = make_data(tmp_path / "data")
    flags = ["--data", str(data), "--preset", "gpt2-tiny", "--n-layer", "2", "--n-head", "2", "--n-embd", "32",
             "--block-size", "16", "--batch-size", "4", "--grad-accum", "2", "--lr", "3e-3", "--min-lr", "3e-4",
             "--warmup-iters", "2", "--lr-decay-iters", "8", "--eval-interval", "4", "--eval-iters", "2",
             "--log-interval", "2", "--device", "cpu", "--seed", "7"]
    assert train_main([*flags, "--max-iters", "8", "--out", str(tmp_path / "straight")]) == 0
    assert train_main([*flags, "--max-iters", "4", "--out", str(tmp_path / "first")]) == 0
    (tmp_path / "first").rename(tmp_path / "resumed")  # a run moved elsewhere is the same run
    capsys.readouterr()
    assert train_main(["--out", str(tmp_path / "resumed"), "--resume", "--max-iters", "8"]) == 0
    printed = capsys.readouterr().err
    assert "max_iters" in printed and "block_size" not in printed and "'out'" not in printed  # only what was given
    a, b = final_state(tmp_path / "straight"), final_state(tmp_path / "resumed")
    assert a["step"] == b["step"] == 8 and b["config"]["block_size"] == 16
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


def test_resume_with_a_new_weight_decay_or_betas_trains_with_them(tmp_path):
    """Bug: `--resume --weight-decay 0.5 --beta2 0.5` warned that they differ and saved them in the
    config, but optimizer.load_state_dict brought the saved groups' 0.1 and (0.9, 0.95) back, so the
    run went on with those. Now the optimizer keeps the settings it was built with (the no-decay
    group at 0) and takes only the per-parameter state (moments, step) from the saved run."""
    data, first = make_data(tmp_path / "data"), tmp_path / "first"
    pretrain(tiny_cfg(data, first, max_iters=4, eval_interval=4))
    saved = final_state(first)["optimizer"]
    new = dict(max_iters=6, eval_interval=4, resume=True, weight_decay=0.5, beta1=0.8, beta2=0.5)
    cfg = tiny_cfg(data, first, **new)
    model = build_model(cfg, VOCAB, VOCAB - 1)
    optimizer = minigpt.optimizer.build_optimizer(model, cfg, torch.device("cpu"))
    rt = train_runtime.setup_runtime(cfg)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    assert minigpt.resume.restore(first, model, optimizer, scaler, cfg, rt)[0] == 4
    groups = [(g["weight_decay"], g["betas"], g["eps"]) for g in optimizer.param_groups]
    assert groups == [(0.5, (0.8, 0.5), 1e-8), (0.0, (0.8, 0.5), 1e-8)]
    state = optimizer.state_dict()["state"]
    for i, s in saved["state"].items():  # the moments and the step are the saved run's
        assert all(torch.equal(s[k], state[i][k]) for k in s), i
    # Through the CLI's path: the new settings change the update (an unchanged resume is the
    # bitwise-exact one of test_interrupt_saves_and_resume_is_bitwise_exact).
    for name in ("same", "changed"):
        shutil.copytree(first, tmp_path / name)
    pretrain(tiny_cfg(data, tmp_path / "same", max_iters=6, eval_interval=4, resume=True))
    pretrain(tiny_cfg(data, tmp_path / "changed", **new))
    same, changed = final_state(tmp_path / "same"), final_state(tmp_path / "changed")
    assert [(g["weight_decay"], g["betas"]) for g in changed["optimizer"]["param_groups"]] == [(0.5, (0.8, 0.5)), (0.0, (0.8, 0.5))]
    assert [(g["weight_decay"], g["betas"]) for g in same["optimizer"]["param_groups"]] == [(0.1, (0.9, 0.95)), (0.0, (0.9, 0.95))]
    assert changed["optimizer"]["state"][0]["step"] == same["optimizer"]["state"][0]["step"] == 6
    assert not torch.equal(changed["model"]["transformer.h.0.attn.c_attn.weight"], same["model"]["transformer.h.0.attn.c_attn.weight"])


def test_resume_refuses_data_other_than_the_runs_unless_told(tmp_path, capsys):
    """The audit's case: data prepared again into the same folder (other text), then `--resume`
    trained on it without a word. The training state records the data's fingerprint; a resume
    names what differs and refuses, keeping the run as it was, unless --allow-new-data (for that
    invocation only). A copy of the run's data elsewhere, with new times, is the same data."""
    data, out = make_data(tmp_path / "data"), tmp_path / "out"
    assert train_main(["--data", str(data), "--out", str(out), "--preset", "gpt2-tiny", "--n-layer", "1", "--n-head", "2",
                       "--n-embd", "32", "--block-size", "16", "--batch-size", "2", "--eval-iters", "1",
                       "--warmup-iters", "1", "--max-iters", "2", "--device", "cpu"]) == 0
    assert final_state(out)["data"]["train.bin tokens"] == 4000
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in data.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    make_data(data, n_train=3000, n_val=500)  # prepared again, from other text
    capsys.readouterr()
    assert train_main(["--out", str(out), "--resume", "--max-iters", "3"]) == 2
    assert (f"--data {data} is not the data the run in {out} trained on (train.bin tokens: 4,000 then, 3,000 now; "
            "val.bin tokens: 600 then, 500 now); resume with the run's data, or pass --allow-new-data (allow_new_data=True "
            "in Python) to go on with this data\n") in capsys.readouterr().err
    assert final_state(out)["step"] == 2
    assert train_main(["--out", str(out), "--resume", "--max-iters", "3", "--data", str(copy)]) == 0  # the run's data, copied
    ids = np.fromfile(copy / "train.bin", dtype=np.uint16)
    ids[100] = (ids[100] + 1) % VOCAB
    ids.tofile(copy / "train.bin")  # the same count, another id: only the hash tells
    capsys.readouterr()
    assert train_main(["--out", str(out), "--resume", "--max-iters", "4", "--data", str(copy)]) == 2
    assert re.search(r"\(train.bin hash: [0-9a-f]{16} then, [0-9a-f]{16} now\)", capsys.readouterr().err)
    assert train_main(["--out", str(out), "--resume", "--max-iters", "4", "--data", str(data), "--allow-new-data"]) == 0
    printed = capsys.readouterr().err
    assert "note: --allow-new-data: going on with data other than the run's (train.bin tokens: 4,000 then, 3,000 now;" in printed
    assert "allow_new_data" not in printed  # not reported as a changed setting
    assert final_state(out)["step"] == 4 and final_state(out)["data"]["train.bin tokens"] == 3000
    make_data(data)  # changed once more: the flag held for one resume only
    assert train_main(["--out", str(out), "--resume", "--max-iters", "5"]) == 2
    assert "(train.bin tokens: 3,000 then, 4,000 now;" in capsys.readouterr().err
    with pytest.raises(ValueError, match=re.escape("allow_new_data applies to --resume (or --auto-resume) only")):
        tiny_cfg(data, tmp_path / "new", allow_new_data=True)


def test_a_state_saved_before_data_fingerprints_resumes_with_a_note(tmp_path, capsys):
    data, out = make_data(tmp_path / "data"), tmp_path / "out"
    pretrain(tiny_cfg(data, out, max_iters=2))
    state = final_state(out)
    del state["data"]
    torch.save(state, out / STATE_FILE)
    capsys.readouterr()
    pretrain(tiny_cfg(data, out, max_iters=3, resume=True))
    assert (f"note: {out / STATE_FILE} records no fingerprint of its data (saved by an earlier minigpt), so the data is not "
            "checked against the run's; the next checkpoint records it") in capsys.readouterr().err
    assert final_state(out)["data"]["train.bin tokens"] == 4000


def test_training_longer_says_what_happens_to_the_schedule(tmp_path, capsys):
    """`--resume --max-iters N` with --lr-decay-iters unset stretches the cosine to the new end, so
    the learning rate goes back up where the run resumes (the audit saw 6.2e-5 at step 30 become
    9.8e-5 at step 35). It is a choice, so not refused: a note gives both rates and how to keep
    the saved schedule, --lr-decay-iters at the first run's max_iters (min_lr from there on)."""
    data = make_data(tmp_path / "data")
    for out in ("stretched", "kept"):
        pretrain(tiny_cfg(data, tmp_path / out, max_iters=6, eval_interval=0, log_interval=1))
    capsys.readouterr()
    pretrain(tiny_cfg(data, tmp_path / "stretched", max_iters=12, eval_interval=0, log_interval=1, resume=True))
    stretched = tiny_cfg(data, tmp_path / "x", max_iters=12)
    assert (f"note: the learning rate of step 7, the first one resumed, is {lr_at(6, stretched):.3g}; the saved run's schedule "
            "gave 0.0003: with --lr-decay-iters unset the cosine ends at --max-iters, now 12 instead of 6; pass --lr-decay-iters 6 "
            "to keep the saved schedule (then --min-lr for every step after 6)\n") in capsys.readouterr().err
    pretrain(tiny_cfg(data, tmp_path / "kept", max_iters=12, lr_decay_iters=6, eval_interval=0, log_interval=1, resume=True))
    assert "note: the learning rate" not in capsys.readouterr().err  # the same schedule: nothing to say

    def lrs(run: str) -> list[float]:
        return [r["lr"] for r in map(json.loads, (tmp_path / run / "log.jsonl").read_text().splitlines()) if "lr" in r]
    assert lrs("stretched")[6] == lr_at(6, stretched) > 2 * lrs("stretched")[5]  # back up, above the saved run's last step
    assert lrs("kept")[:6] == lrs("stretched")[:6] and lrs("kept")[6:] == [3e-4] * 6  # min_lr from the saved run's end on


def test_a_resume_on_another_thread_count_says_it_is_no_longer_bitwise(tmp_path, capsys):
    """An audit: README promises a bitwise resume "with the same number of threads", and the log's
    opening records hold each stretch's count, but a resume on another count (a matmul splits its
    sums by it) lost exactness without a word. Now a note names both counts and how to match them;
    a resume on the count the run last ran with says nothing. A review: the note said "the run's
    steps so far" for a resume of a resume, which knows only the last stretch's count."""
    data, out = make_data(tmp_path / "data"), tmp_path / "out"
    note = ("note: {} ran with {} torch thread{}, this resume with {}: a matmul splits its sums by thread count, so "
            "the losses may match an uninterrupted run's only up to rounding; set OMP_NUM_THREADS={} (or "
            "torch.set_num_threads({})) for a bitwise resume\n")
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        pretrain(tiny_cfg(data, out, max_iters=2, eval_interval=0))
        torch.set_num_threads(2)
        capsys.readouterr()
        pretrain(tiny_cfg(data, out, max_iters=3, eval_interval=0, resume=True))
        assert note.format("the run's steps so far", 1, "", 2, 1, 1) in capsys.readouterr().err
        pretrain(tiny_cfg(data, out, max_iters=4, eval_interval=0, resume=True))  # step 3 ran with 2, as this resume
        assert "torch thread" not in capsys.readouterr().err
        torch.set_num_threads(1)  # steps 1-2 ran with 1, as this resume; the log's last record (step 3's) says 2
        pretrain(tiny_cfg(data, out, max_iters=5, eval_interval=0, resume=True))
        assert note.format("the steps since step 3", 2, "s", 1, 2, 2) in capsys.readouterr().err
    finally:
        torch.set_num_threads(threads)


def test_a_resume_on_another_number_of_processes_is_noted_past_two_micro_batches(tmp_path, capsys):
    """A review: a resume on another number of processes was always said to be no longer bitwise,
    but 2 processes with --grad-accum 2 resumed on 1 ended torch.equal to an uninterrupted 1-process
    run (two gradients are one addition either way; with --grad-accum 4, 4 processes and 1 differed
    by 1e-6, tried with torchrun). Only a run of more than 2 micro-batches a step gets the note."""
    data, out = make_data(tmp_path / "data"), tmp_path / "out"
    pretrain(tiny_cfg(data, out, max_iters=2, eval_interval=0))  # grad_accum=2
    records = read_log(out)
    records[0]["world_size"] = 2  # as torchrun's 2 processes would have logged it
    (out / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    capsys.readouterr()
    pretrain(tiny_cfg(data, out, max_iters=3, eval_interval=0, resume=True))
    assert "process" not in capsys.readouterr().err
    one_process = train_runtime.Runtime(rank=0, world=1, device=torch.device("cpu"), dtype=torch.float32)
    assert train.machine_notes(records[0], one_process, grad_accum=4) == [
        "note: the run's steps so far ran on 2 processes, this resume on 1: a step's 4 micro-batch gradients are summed "
        "in another order (each process sums its own, then the all-reduce sums the processes'), so the losses may match "
        "an uninterrupted run's only up to rounding; resume on 2 for a bitwise one"]
    assert train.machine_notes(records[0], one_process, grad_accum=2) == []


def test_a_warmup_longer_than_the_run_is_warned_about(tmp_path, capsys):
    pretrain(tiny_cfg(make_data(tmp_path / "data"), tmp_path / "out", max_iters=2))  # warmup_iters=3
    assert "warning: warmup_iters (3) > max_iters (2): the learning rate only reaches 0.002 of --lr 0.003" \
        in capsys.readouterr().err


def test_resume_without_a_run_is_an_error(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="no training_state.pt"):
        pretrain(tiny_cfg(make_data(tmp_path / "data"), tmp_path / "out", resume=True))
    # A bare --resume (the saved run would supply --data) says that there is no run, not that --data is missing.
    assert train_main(["--out", str(tmp_path / "out"), "--resume"]) == 2
    assert "--resume: no training_state.pt in" in capsys.readouterr().err
    from minigpt import finetune  # the same for fine-tuning, not "--init MODEL_DIR is required"

    assert finetune.main(["--out", str(tmp_path / "out"), "--resume"]) == 2
    assert "--resume: no training_state.pt in" in capsys.readouterr().err


def test_a_run_killed_before_its_first_checkpoint_starts_again_with_resume(tmp_path, capsys):
    """Bug: a run killed before its first checkpoint (step --eval-interval, 200 by default) left
    only its log.jsonl: --resume said "no training_state.pt", and the same command without it said
    the directory "already holds a run", so only cleaning it by hand went on. Now --resume starts
    the run again from step 0 with the flags given (none were saved), its log kept aside as
    log.lost.jsonl, never mixed with the new one; without --resume (the run may still be going)
    and with a bare --resume (no settings to start from) the error says what happened and what to
    type. The killed run's directory is built by hand: the records kill -9 at step 15 leaves."""
    data, out = make_data(tmp_path / "data"), tmp_path / "out"
    flags = ["--data", str(data), "--preset", "gpt2-tiny", "--n-layer", "2", "--n-head", "2", "--n-embd", "32",
             "--block-size", "16", "--batch-size", "4", "--max-iters", "4", "--warmup-iters", "2", "--eval-interval", "4",
             "--eval-iters", "2", "--log-interval", "2", "--device", "cpu", "--seed", "7"]
    out.mkdir()
    lost = "".join(json.dumps({"step": s, "loss": 4.0 - s / 100}) + "\n" for s in range(2, 16, 2)) + '{"step": 16, "lo'
    (out / "log.jsonl").write_text(lost)

    assert train_main([*flags, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert (f"{out} holds no checkpoint: its run logged up to step 14 and stopped before saving its first one "
            "(training_state.pt, saved every --eval-interval (or --save-interval) steps), so there is nothing to "
            "resume") in err
    assert "give the same command with --resume (resume=True in Python; its log is then kept as log.lost.jsonl)" in err
    assert train_main(["--out", str(out), "--resume"]) == 2
    assert "its settings were not saved either: to start it again from step 0 (its log set aside), give the flags " \
           "that started it with --resume" in capsys.readouterr().err
    assert sorted(os.listdir(out)) == ["log.jsonl"] and (out / "log.jsonl").read_text() == lost

    assert train_main([*flags, "--out", str(out), "--resume"]) == 0
    assert (f"note: --resume: {out} holds no checkpoint: its run logged up to step 14 and stopped before saving its first "
            "one") in capsys.readouterr().err
    assert (out / "log.lost.jsonl").read_text() == lost
    assert [r["step"] for r in step_records(out)] == [2, 4, 4]
    assert train_main([*flags, "--out", str(tmp_path / "straight")]) == 0  # the same flags, a new directory
    a, b = final_state(tmp_path / "straight"), final_state(out)
    assert a["step"] == b["step"] == 4 and all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert b["config"]["resume"] is False  # what ran was a new run

    # Killed again early, after an earlier restart: a --resume that lacks --data fails before it
    # sets anything aside (an audit: the log was renamed, and "starting it again" printed, before
    # --data was missed); the next --resume starts again, keeping both logs.
    again = tmp_path / "again"
    again.mkdir()
    (again / "log.jsonl").write_text(lost)
    (again / "log.lost.jsonl").write_text("earlier\n")
    assert train_main(["--out", str(again), "--resume", "--max-iters", "4"]) == 2  # not bare, but lacks --data
    failed = capsys.readouterr()
    assert "--data (data= in Python) is required" in failed.err and "note: --resume" not in failed.out
    assert sorted(os.listdir(again)) == ["log.jsonl", "log.lost.jsonl"] and (again / "log.jsonl").read_text() == lost
    assert train_main([*flags, "--out", str(again), "--resume"]) == 0
    assert (again / "log.lost.jsonl").read_text() == "earlier\n" and (again / "log.lost.2.jsonl").read_text() == lost
    assert final_state(again)["step"] == 4


def test_a_run_killed_while_saving_its_first_checkpoint_starts_again_with_resume(tmp_path, monkeypatch, capsys):
    """Bug (an audit): killed while saving its first checkpoint (best/, config.json and
    model.safetensors written, training_state.pt not yet), a run could be neither resumed
    ("--resume: no training_state.pt") nor started again ("not a run that --resume can
    continue"). Such a run is now told by its evidence: no training_state.pt, no loss.png (drawn
    after each one) and a log that ends at its first evaluation; --resume starts it again, the
    unfinished checkpoint moved to checkpoint.lost/ (never deleted: a finished run's model with its
    training_state.pt and loss.png deleted by hand looks the same). A run that got further is not: a finished run whose
    training_state.pt was deleted (and its loss.png too) is refused, its model kept."""
    data, out = make_data(tmp_path / "data"), tmp_path / "out"
    # As `minigpt prepare` writes it: each checkpoint holds it (a reviewer's case: the restart was
    # refused, "holds a tokenizer").
    add_tokenizer(data, Tokenizer.train("ab", vocab_size=257, progress=False))
    flags = ["--data", str(data), "--preset", "gpt2-tiny", "--n-layer", "2", "--n-head", "2", "--n-embd", "32",
             "--block-size", "16", "--batch-size", "4", "--max-iters", "8", "--warmup-iters", "2", "--eval-interval", "4",
             "--eval-iters", "2", "--log-interval", "2", "--device", "cpu", "--seed", "7"]

    def killed(obj, f, *args, **kwargs):
        raise SystemExit("killed")  # as kill -9 while the first training_state.pt is written

    monkeypatch.setattr(torch, "save", killed)
    with pytest.raises(SystemExit):
        train_main([*flags, "--out", str(out)])
    monkeypatch.undo()
    (out / "training_state.pt.tmp").write_bytes(b"half a state")  # what a kill leaves (no cleanup runs)
    left = sorted(os.listdir(out))
    assert {"best", "config.json", "model.safetensors", "log.jsonl"} <= set(left) and STATE_FILE not in left
    log = (out / "log.jsonl").read_text()
    assert [r["step"] for r in step_records(out)] == [2, 4, 4]  # the last: the first evaluation

    capsys.readouterr()
    assert train_main([*flags, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert (f"{out} holds no checkpoint: its run logged up to step 4 and stopped while saving its first one (it left "
            "best/, config.json, model.safetensors, but not training_state.pt, saved every --eval-interval (or "
            "--save-interval) steps)") in err
    assert "give the same command with --resume" in err and sorted(os.listdir(out)) == left
    assert train_main([*flags, "--out", str(out), "--resume"]) == 0
    assert ("; its log is kept as log.lost.jsonl; what it had saved of its first checkpoint (best/, config.json, "
            "model.safetensors, vocab.json, merges.txt, tokenizer_config.json) is moved to checkpoint.lost/: the same "
            "flags save it again"
            ) in capsys.readouterr().err
    assert sorted(os.listdir(out / "checkpoint.lost")) == ["best", "config.json", "merges.txt", "model.safetensors",
                                                          "tokenizer_config.json", "vocab.json"]
    assert (out / "log.lost.jsonl").read_text() == log
    assert train_main([*flags, "--out", str(tmp_path / "straight")]) == 0
    a, b = final_state(tmp_path / "straight"), final_state(out)
    assert a["step"] == b["step"] == 8 and all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])

    # A finished run whose training_state.pt (and loss.png) was deleted: its log goes on past its
    # first evaluation, so it is no unsaved run; --resume and a new run are both refused, the model kept.
    finished = tmp_path / "straight"
    (finished / STATE_FILE).unlink()
    (finished / "loss.png").unlink()
    kept = sorted(os.listdir(finished))
    capsys.readouterr()
    assert train_main([*flags, "--out", str(finished), "--resume"]) == 2
    assert (f"--resume: no training_state.pt in {finished}, so the run there cannot be continued (it holds log.jsonl, "
            f"config.json, model.safetensors, best/: a run that saved checkpoints, or a model); to train its weights "
            f"further, start a new run from them with --init {finished}") in capsys.readouterr().err
    assert train_main([*flags, "--out", str(finished)]) == 2
    assert "it is not a run that --resume can continue (no training_state.pt)" in capsys.readouterr().err
    assert sorted(os.listdir(finished)) == kept
    # A model (config.json + model.safetensors, no log, no best/) is no run either.
    model = tmp_path / "model"
    model.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(finished / name, model / name)
    assert train_main([*flags, "--out", str(model), "--resume"]) == 2
    assert "so the run there cannot be continued" in capsys.readouterr().err
    assert sorted(os.listdir(model)) == ["config.json", "model.safetensors"]


def test_auto_resume_continues_a_run_or_starts_one(tmp_path, monkeypatch, capsys):
    """--auto-resume (for commands run again as they were: torchrun --max-restarts, a scheduler's
    requeue) starts a run in an empty OUT_DIR, continues one stopped there (bitwise as an
    unbroken run), starts again one killed before its first checkpoint, has nothing to do in a
    finished one, and refuses an OUT_DIR that holds something else, as a new run does. (Before,
    the same command could not serve: without --resume it refused the run it had saved, and
    --resume refused an empty OUT_DIR.)"""
    data = make_data(tmp_path / "data")
    flags = ["--data", str(data), "--preset", "gpt2-tiny", "--n-layer", "2", "--n-head", "2", "--n-embd", "32",
             "--block-size", "16", "--batch-size", "4", "--grad-accum", "2", "--max-iters", "12", "--warmup-iters", "3",
             "--eval-interval", "6", "--eval-iters", "2", "--log-interval", "3", "--device", "cpu", "--dropout", "0.1",
             "--seed", "7", "--auto-resume"]
    assert train_main([*flags, "--out", str(tmp_path / "straight")]) == 0
    out = tmp_path / "out"
    _interrupt_at_batch(monkeypatch, 9, signal.SIGTERM)  # during step 5: saved at 5
    assert train_main([*flags, "--out", str(out)]) == 143
    monkeypatch.undo()
    assert train_main([*flags, "--out", str(out)]) == 0
    a, b = final_state(tmp_path / "straight"), final_state(out)
    assert a["step"] == b["step"] == 12 and all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert (out / "log.jsonl").read_text().count("val_loss") == 2
    assert train_main([*flags, "--out", str(out)]) == 0  # finished: nothing to do
    assert final_state(out)["step"] == 12 and (out / "log.jsonl").read_text().count("val_loss") == 2

    killed = tmp_path / "killed"  # before its first checkpoint: its log alone
    killed.mkdir()
    (killed / "log.jsonl").write_text(json.dumps({"step": 3, "loss": 4.0}) + "\n")
    capsys.readouterr()
    # (An end-to-end audit: what --auto-resume said here, it said of --resume, a flag not given.)
    assert train_main(["--out", str(killed), "--auto-resume"]) == 2  # no flags to start it again with
    assert capsys.readouterr().err.startswith(f"minigpt train: error: --auto-resume: {killed} holds no checkpoint")
    assert train_main([*flags, "--out", str(killed)]) == 0
    assert f"note: --auto-resume: {killed} holds no checkpoint: its run logged up to step 3" in capsys.readouterr().err
    assert (killed / "log.lost.jsonl").exists() and final_state(killed)["step"] == 12

    model = tmp_path / "model"  # no run: refused as without --auto-resume, and left alone
    GPT(GPTConfig(vocab_size=VOCAB, n_positions=32, n_embd=32, n_layer=1, n_head=2)).save_pretrained(model)
    assert train_main([*flags, "--out", str(model)]) == 2
    assert "already holds a checkpoint or a run (config.json, model.safetensors)" in capsys.readouterr().err
    # From Python too, where no command line decided it: train_loop's OUT_DIR check does.
    pretrain(tiny_cfg(data, tmp_path / "python", max_iters=6, auto_resume=True))
    pretrain(tiny_cfg(data, tmp_path / "python", auto_resume=True))
    assert final_state(tmp_path / "python")["step"] == 12


# `minigpt train` whose rank 1 crashes once at each of two points: in step 2 (before the first
# checkpoint) and in step 7 (after the one of step 6). Each process draws 2 train batches a step
# and 1 val batch an evaluation; a file beside OUT_DIR marks a crash as done.
CRASHING_TRAIN = """
import os, sys
from pathlib import Path
import minigpt.pretrain as pretrain

out = Path(sys.argv[sys.argv.index("--out") + 1])
if os.environ["RANK"] == "1":
    calls, real = [], pretrain.sample_batch

    def sample(*args):
        calls.append(1)
        for n, mark in ((3, "crashed-in-step-2"), (14, "crashed-in-step-7")):
            if len(calls) == n and not (out.parent / mark).exists():
                (out.parent / mark).touch()
                os._exit(1)
        return real(*args)

    pretrain.sample_batch = sample
sys.exit(pretrain.main(sys.argv[1:]))
"""


def test_auto_resume_lets_the_same_torchrun_command_go_on_after_a_crash(tmp_path):
    """Bug (an audit): torchrun's own restarts (--max-restarts) could not be used: the restarted
    workers ran the same command again and failed with "already holds a checkpoint ... pass
    --resume", and with --resume a first start failed on the empty OUT_DIR. With --auto-resume the
    same command, run again after a worker crashed before the first checkpoint, starts the run
    again (rank 0 alone judges OUT_DIR; rank 1 starts anew), after it resumes, and the run ends
    where one process does (as test_ddp_two_processes_match_one_with_accumulation). torchrun's
    restarts are stood for by running the command again: its re-rendezvous with gloo on CPU failed
    now and then here ("connectFullMesh failed ... Connection refused"), with any script."""
    data = make_data(tmp_path / "data")
    flags = ["--data", str(data), "--preset", "gpt2-tiny", "--n-layer", "2", "--n-head", "2", "--n-embd", "32",
             "--block-size", "16", "--batch-size", "2", "--grad-accum", "4", "--max-iters", "12", "--eval-interval", "6",
             "--eval-iters", "2", "--log-interval", "1", "--warmup-iters", "1", "--lr", "3e-3", "--dropout", "0.1",
             "--device", "cpu", "--auto-resume"]
    script = tmp_path / "crashing_train.py"
    script.write_text(CRASHING_TRAIN)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script), *flags,
           "--out", str(tmp_path / "ddp")]
    runs = [subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=120)
            for _ in range(3)]
    assert [r.returncode != 0 for r in runs] == [True, True, False], runs[-1].stdout + runs[-1].stderr
    assert "already holds" not in "".join(r.stderr for r in runs)
    assert "holds no checkpoint: its run logged up to step 1 and stopped before" in runs[1].stderr  # started again
    assert "note: --resume" not in runs[2].stderr and (tmp_path / "ddp" / "log.lost.jsonl").exists()
    pretrain(TrainConfig(**{**vars(parse_config(TrainConfig, flags, "t", "")), "out": str(tmp_path / "one")}))
    a, b = final_state(tmp_path / "ddp"), final_state(tmp_path / "one")
    diff = max((a["model"][k] - b["model"][k]).abs().max().item() for k in a["model"])
    print(f"DDP(2), crashed twice, vs 1 process: max |Δw| = {diff:.2e}")
    assert a["step"] == b["step"] == 12 and diff < 1e-5
    steps = [[r["step"] for r in step_records(tmp_path / run)] for run in ("ddp", "one")]
    assert steps[0] == steps[1]


def test_resume_with_the_other_command_names_the_right_one(tmp_path, capsys):
    """A pretraining run resumed with `minigpt finetune` said "--init MODEL_DIR is required"."""
    out = tmp_path / "out"
    pretrain(tiny_cfg(make_data(tmp_path / "data"), out, max_iters=2))
    from minigpt import finetune

    capsys.readouterr()
    assert finetune.main(["--out", str(out), "--resume"]) == 2
    assert f"{out} holds a run of `minigpt train`; continue it with `minigpt train --out {out} --resume`" in capsys.readouterr().err


def test_resume_with_a_model_of_another_shape_is_a_one_line_error(tmp_path, capsys):
    """--n-head too (a trainer's audit): the same weights split into 4 heads instead of 2 loaded
    without an error, with only a warning, and trained on as another model."""
    data, out = make_data(tmp_path / "data"), tmp_path / "out"
    pretrain(tiny_cfg(data, out, max_iters=3))
    for given, change in ((["--n-layer", "3"], "n_layer 2 → 3"), (["--n-head", "4"], "n_head 2 → 4")):
        capsys.readouterr()
        assert train_main(["--out", str(out), "--resume", *given, "--max-iters", "6"]) == 2
        err = capsys.readouterr().err
        assert f"--resume: the run in {out} trains a model these flags do not build ({change})" in err and "Traceback" not in err
        assert final_state(out)["step"] == 3 and json.loads((out / "config.json").read_text())["n_head"] == 2


def test_resume_of_a_fresh_run_with_init_says_the_run_had_no_init(tmp_path, capsys):
    """Bug: `--resume --init DIR` on a run trained from fresh weights failed with "--preset,
    --n-layer, ... cannot change the shape of the --init checkpoint; drop them": flags the user
    never typed (they came from the saved run), while the flag to drop was --init."""
    data, out = make_data(tmp_path / "data"), tmp_path / "out"
    pretrain(tiny_cfg(data, out, max_iters=3))
    capsys.readouterr()
    assert train_main(["--out", str(out), "--resume", "--init", str(out), "--max-iters", "6"]) == 2
    err = capsys.readouterr().err
    assert "started from fresh weights (no --init)" in err and "drop --init" in err and "--n-layer" not in err
    assert final_state(out)["step"] == 3


def test_resume_with_max_iters_below_the_saved_step_is_an_error(tmp_path, capsys):
    """--max-iters is the run's total: fewer steps than the run has done would train nothing,
    and say so, instead of exiting 0 as if it had trained."""
    data, out = make_data(tmp_path / "data"), tmp_path / "out"
    pretrain(tiny_cfg(data, out, max_iters=3))
    capsys.readouterr()
    assert train_main(["--out", str(out), "--resume", "--max-iters", "2"]) == 2
    err = capsys.readouterr().err
    assert "--max-iters 2 is below the step the saved run reached (3)" in err and "Traceback" not in err
    assert "resuming with settings" not in err  # (a trainer's audit: a warning about resuming, then a refusal)
    assert train_main(["--out", str(out), "--resume"]) == 0  # a finished run resumed as it was: nothing to do, no error


def test_an_out_dir_that_cannot_be_written_is_a_one_line_error(tmp_path, capsys):
    """Read-only, or below a file: one line naming the path (as root, whom a read-only mode does
    not stop, a read-only filesystem would stand in for it). Below a file it said only "[Errno 20]
    Not a directory: '.../file/out/sub'" (an audit): now it names --out and the file in the way,
    before any work."""
    data = make_data(tmp_path / "data")
    (tmp_path / "file").write_text("")
    out = tmp_path / "file" / "out" / "sub"
    assert train_main(["--data", str(data), "--out", str(out), "--max-iters", "1"]) == 2
    err = capsys.readouterr().err
    assert f"--out {out} is below {tmp_path / 'file'}, which is a file, not a directory" in err and "Traceback" not in err


def test_resume_from_an_unreadable_state_is_a_one_line_error(tmp_path, capsys):
    data, out = make_data(tmp_path / "data"), tmp_path / "out"
    out.mkdir()
    (out / "training_state.pt").write_bytes(b"not a checkpoint")
    assert train_main(["--data", str(data), "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "training_state.pt is not a readable training state" in err and "Traceback" not in err
    torch.save({"model": {}}, out / "training_state.pt")  # a torch file, but not one minigpt wrote
    assert train_main(["--data", str(data), "--out", str(out), "--resume"]) == 2
    assert "is not a training state saved by minigpt: it lacks best_val_loss, config" in capsys.readouterr().err


def test_failed_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    data = make_data(tmp_path / "data")
    out = tmp_path / "out"
    pretrain(tiny_cfg(data, out, max_iters=6))
    before = final_state(out)

    # The next save dies halfway through writing the state file (as if killed mid-write).
    real_save = torch.save

    def dying_save(obj, f, *a, **kw):
        f.write(b"half a checkpoint")  # (save_checkpoint hands torch.save the temp file, open)
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(OSError, match="disk full"):
        pretrain(tiny_cfg(data, out, max_iters=12, resume=True))
    monkeypatch.setattr(torch, "save", real_save)

    after = final_state(out)  # still loads, still the step-6 state
    assert after["step"] == 6
    assert all(torch.equal(before["model"][k], after["model"][k]) for k in before["model"])
    GPT.from_pretrained(out)  # the HF files are whole too
    pretrain(tiny_cfg(data, out, max_iters=12, resume=True))  # and the run continues from it
    assert final_state(out)["step"] == 12


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="names an fd's file through Linux's /proc")
def test_checkpoint_files_reach_the_disk_before_their_rename(tmp_path, monkeypatch):
    """Each file is fsynced under its temp name before the rename: else a power cut could leave
    the new name pointing at a file whose data never reached the disk."""
    data = make_data(tmp_path / "data")
    # pretrain writes the data's tokenizer into every checkpoint (bytes alone: no merges).
    add_tokenizer(data, Tokenizer.train("ab", vocab_size=257, progress=False))
    synced, renamed = set(), set()
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        synced.add(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    def replace(src, dst):
        if Path(dst).name in (STATE_FILE, "vocab.json", "loss.png"):
            assert str(src) in synced, f"{src} renamed to {dst} without an fsync"
            renamed.add(Path(dst).name)
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    pretrain(tiny_cfg(data, tmp_path / "out", max_iters=1, eval_iters=1))
    assert renamed == {STATE_FILE, "vocab.json", "loss.png"}
    # With the length the model trained on as its limit (an interop audit: none was written, so
    # transformers' truncation=True never cut a text to what the model reads).
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(tmp_path / "out").model_max_length == 16  # the fresh model's --block-size


@pytest.mark.parametrize("grad_clip", [1.0, 0.0], ids=["clipped", "unclipped"])
@pytest.mark.parametrize("where, message", [
    ("loss", r"loss is nan at step 8"),
    ("gradient", r"gradient norm is nan at step 8 \(the loss, .*, is finite\)"),
])
def test_nan_stops_before_the_update_with_a_clear_message(tmp_path, where, message, grad_clip):
    """A NaN loss, or a NaN in the backward pass alone (clipping would spread it to every weight),
    stops the run before the update, naming the last checkpoint, which stays clean. Without
    clipping too (an audit: the norm was measured only to clip, so the NaN update went in). (An
    end-to-end audit: it was called "the last good checkpoint", whatever its val loss had been.)"""
    data = make_data(tmp_path / "data")
    out = tmp_path / "out"
    calls = {"n": 0}

    def poisoned(model, x, y):
        calls["n"] += model.training
        logits, _ = model(x)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten())
        if calls["n"] > 14:  # from step 8's micro-batches on
            if where == "loss":
                return loss * float("nan")
            logits.register_hook(lambda g: g * float("nan"))  # the gradient flowing into the logits
        return loss

    cfg = tiny_cfg(data, out, grad_clip=grad_clip)
    model = build_model(cfg, VOCAB)
    tokens = load_tokens(data / "train.bin", VOCAB, 17)
    with pytest.raises(TrainingDiverged, match=message + r".*; the last checkpoint, saved at step 6, before the run went non-finite, is in") as error:
        train.train_loop(model, cfg, lambda split, rng: sample_batch(tokens, 16, 4, rng), poisoned)
    assert str(error.value).endswith("Try a lower --lr (lr= in Python).")  # not "or --dtype float32": this run is float32
    assert final_state(out)["step"] == 6
    assert all(torch.isfinite(t).all() for t in final_state(out)["model"].values())


def test_accumulated_micro_batches_average_their_gradients(tmp_path):
    """grad_accum=2 on one batch twice is one step on that batch: the gradient is the mean over
    micro-batches (loss / micro-steps), so the logged loss, the gradient norm (which clipping
    reads) and the weights are those of grad_accum=1."""
    data = make_data(tmp_path / "data")
    tokens = load_tokens(data / "train.bin", VOCAB, 17)
    fixed = sample_batch(tokens, 16, 4, torch.Generator().manual_seed(0))
    runs = {}
    for accum in (1, 2):
        cfg = tiny_cfg(data, tmp_path / str(accum), grad_accum=accum, max_iters=3, log_interval=1, eval_interval=0,
                       dropout=0.0)
        model = build_model(cfg, VOCAB)
        train.train_loop(model, cfg, lambda split, rng: fixed)
        runs[accum] = [json.loads(line) for line in (tmp_path / str(accum) / "log.jsonl").read_text().splitlines()], model
    (one, m1), (two, m2) = runs[1], runs[2]
    for a, b in zip([r for r in one if "grad_norm" in r], [r for r in two if "grad_norm" in r], strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5) and a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
    for p1, p2 in zip(m1.parameters(), m2.parameters()):
        torch.testing.assert_close(p1, p2, rtol=1e-4, atol=1e-6)


def test_each_micro_batch_draws_its_own_dropout_masks(tmp_path):
    """Dropout is seeded by (step, global micro-batch): micro-batches of one step, and the same
    micro-batch of two steps, must not share masks. The loss function reads the stream they use."""
    data = make_data(tmp_path / "data")
    tokens = load_tokens(data / "train.bin", VOCAB, 17)
    draws = []

    def loss_fn(model, x, y):
        if model.training:
            draws.append(torch.rand(1).item())  # the next number of the stream the dropout masks come from
        return train.lm_loss(model, x, y)

    cfg = tiny_cfg(data, tmp_path / "out", grad_accum=3, max_iters=3, eval_interval=0)
    train.train_loop(build_model(cfg, VOCAB), cfg, lambda split, rng: sample_batch(tokens, 16, 4, rng), loss_fn)
    assert len(draws) == 9 and len(set(draws)) == 9


def test_a_save_fn_that_writes_a_file_into_its_dir_gets_a_dir_that_exists(tmp_path):
    """A docs audit: README's "Reusing the loop" takes any save_fn(model, dir); one that writes a
    file into dir (not save_pretrained, which makes it) died at the first best/ with torch's
    "Parent directory .../best does not exist", losing every step trained."""
    data = make_data(tmp_path / "data")
    tokens = load_tokens(data / "train.bin", VOCAB, 17)
    cfg = tiny_cfg(data, tmp_path / "out", max_iters=2, eval_interval=2)
    train.train_loop(build_model(cfg, VOCAB), cfg, lambda split, rng: sample_batch(tokens, 16, 4, rng),
                     save_fn=lambda m, d: torch.save(m.state_dict(), d / "weights.pt"))
    assert (tmp_path / "out" / "best" / "weights.pt").is_file() and (tmp_path / "out" / "weights.pt").is_file()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_weights_are_refused_before_any_work(tmp_path, dtype):
    """A 16-bit weight cannot hold AdamW's small updates: in bfloat16 at lr 6e-4 a LayerNorm gain
    (1.0) never moves. The message points to float32 weights with autocast instead."""
    data = make_data(tmp_path / "data")
    cfg = tiny_cfg(data, tmp_path / "out")
    model = build_model(cfg, VOCAB).to(dtype)
    tokens = load_tokens(data / "train.bin", VOCAB, 17)
    name = str(dtype).removeprefix("torch.")
    with pytest.raises(ValueError, match=rf"^the weights to train are {name}: .*TrainConfig\(dtype='bfloat16'\)"):
        train.train_loop(model, cfg, lambda split, rng: sample_batch(tokens, 16, 4, rng))
    assert not (tmp_path / "out").exists()
    model.requires_grad_(False)  # frozen 16-bit weights are fine: nothing updates them
    model.transformer.ln_f.float().requires_grad_(True)
    train.train_loop(model, tiny_cfg(data, tmp_path / "out", max_iters=1), lambda split, rng: sample_batch(tokens, 16, 4, rng))


def test_train_loop_gives_the_callers_random_state_back(tmp_path):
    """Each micro-step seeds torch's global generator for its dropout masks. Before, train_loop left
    it at its last seed, so whatever seed a caller set before, their next draws (a sampled
    generate() without a seed, say) came out the same; the loop now restores the caller's state."""
    data = make_data(tmp_path / "data")
    tokens = load_tokens(data / "train.bin", VOCAB, 17)
    cfg = tiny_cfg(data, tmp_path / "out", max_iters=2)
    model = build_model(cfg, VOCAB)  # (which seeds the weights' init: before the caller's seed)
    torch.manual_seed(100)
    expected = torch.rand(3)
    torch.manual_seed(100)
    train.train_loop(model, cfg, lambda split, rng: sample_batch(tokens, 16, 4, rng))
    assert torch.equal(torch.rand(3), expected)


def test_bfloat16_autocast_trains_float32_weights_on_cpu(tmp_path):
    """README: TrainConfig(dtype="bfloat16") runs the math in bfloat16 under autocast while the
    weights stay float32. On CPU the matmuls come out in bfloat16, the run completes, the loss
    falls, and the weights, AdamW's moments and the saved checkpoint are all float32."""
    data = make_data(tmp_path / "data")
    out = tmp_path / "out"
    cfg = tiny_cfg(data, out, max_iters=30, eval_interval=15, log_interval=5, lr=1e-2, dropout=0.0, dtype="bfloat16")
    model = build_model(cfg, VOCAB)
    tokens = load_tokens(data / "train.bin", VOCAB, 17)
    matmul_dtypes = set()
    hook = model.transformer.h[0].attn.c_attn.register_forward_hook(lambda m, i, o: matmul_dtypes.add(o.dtype))
    train.train_loop(model, cfg, lambda split, rng: sample_batch(tokens, 16, 4, rng))
    hook.remove()
    assert matmul_dtypes == {torch.bfloat16}  # autocast was on, in training and in evaluation
    losses = [r["loss"] for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if "loss" in r]
    print(f"bfloat16 autocast: train loss {[f'{x:.3f}' for x in losses]}")
    assert losses[0] > 0.9 * math.log(VOCAB) and losses[-1] < 0.6 * losses[0]
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    state = final_state(out)
    assert {t.dtype for t in state["model"].values()} == {torch.float32}
    assert {s[k].dtype for s in state["optimizer"]["state"].values() for k in ("exp_avg", "exp_avg_sq")} == {torch.float32}
    assert {t.dtype for t in load_file(out / "model.safetensors").values()} == {torch.float32}


@pytest.mark.parametrize(
    "change, kind, error",
    [
        (dict(block_size=129), ValueError, r"block_size 129 must be in \[1, n_positions=128\]"),
        (dict(data="missing"), FileNotFoundError, r"--data missing does not exist: it is the folder `minigpt prepare` writes"),
        (dict(grad_accum=0), ValueError, "grad_accum must be >= 1, got 0"),
        (dict(block_size=0), ValueError, r"block_size must be >= 1 \(unset: the model's n_positions\), got 0"),  # 0 meant "the full context"
        (dict(lr_decay_iters=-5), ValueError, r"lr_decay_iters \(-5\) must be > warmup_iters \(3\)"),  # min_lr right after warmup
        (dict(min_lr=0.01), ValueError, r"min_lr \(0.01\) must be <= lr \(0.003\)"),
        (dict(beta2=1.0), ValueError, r"beta2 must be in \[0, 1\), got 1.0"),
        (dict(seed=-1), ValueError, "seed must be >= 0, got -1"),
        # Not a NaN loss later, blamed on "try a lower --lr" (or torch's "Invalid learning rate").
        (dict(lr=math.nan), ValueError, "lr must be a finite number, got nan"),
        (dict(lr=math.inf), ValueError, "lr must be a finite number, got inf"),
        (dict(min_lr=math.nan), ValueError, "min_lr must be a finite number, got nan"),
        (dict(weight_decay=math.nan), ValueError, "weight_decay must be a finite number, got nan"),
        (dict(grad_clip=math.nan), ValueError, "grad_clip must be a finite number, got nan"),
        (dict(dtype="float16"), ValueError, "float16 needs a GPU"),
        (dict(device="gpu"), ValueError, "'gpu' is not a device"),
    ],
)
def test_bad_config_errors(tmp_path, change, kind, error):
    make_data(tmp_path / "data")
    with pytest.raises(kind, match=error) as raised:
        pretrain(TrainConfig(**{**vars(tiny_cfg(tmp_path / "data", tmp_path / "out")), **change}))
    assert raised.type is kind  # not a subclass standing in for it


@pytest.mark.parametrize("change, error", [
    (dict(warmup_iters=100, lr_decay_iters=100), r"lr_decay_iters \(100\) must be > warmup_iters \(100\)"),  # no cosine at all
    (dict(dropout=1.0), r"dropout must be in \[0, 1\), got 1.0"),  # every activation zeroed
    (dict(warmup_iters=-1), "warmup_iters must be >= 0, got -1"),  # a negative lr in the first steps
])
def test_config_refuses_values_at_the_edge_of_their_range(change, error):
    with pytest.raises(ValueError, match=error):
        TrainConfig(**change)


@pytest.mark.parametrize("change, error", [
    (dict(batch_size=4.0), "batch_size must be an integer, got 4.0"),  # would fail in torch.randint with an overload list
    (dict(max_iters=2.5), "max_iters must be an integer, got 2.5"),
    (dict(eval_interval=True), "eval_interval must be an integer, got the bool True"),
    (dict(block_size="8"), "block_size must be an integer, got '8'"),
    (dict(seed=None), "seed must be an integer, got None"),
])
def test_config_refuses_counts_that_are_not_ints(change, error):
    with pytest.raises(TypeError, match=re.escape(error)):
        TrainConfig(**change)
    TrainConfig(batch_size=np.int64(4), block_size=None)  # a NumPy int is an int; None means "unset"


def test_bad_data_errors(tmp_path):
    data = make_data(tmp_path / "data", top_id=VOCAB)
    with pytest.raises(ValueError, match=rf"token id {VOCAB}, outside the model's vocabulary \[0, {VOCAB}\)"):
        pretrain(tiny_cfg(data, tmp_path / "out"))
    data = make_data(tmp_path / "d2")
    (data / "val.bin").unlink()
    with pytest.raises(FileNotFoundError, match="val.bin does not exist"):
        pretrain(tiny_cfg(data, tmp_path / "out2"))
    (data / "train.bin").write_bytes(b"")
    with pytest.raises(ValueError, match="train.bin is empty"):
        pretrain(tiny_cfg(data, tmp_path / "out3"))
    (data / "train.bin").write_bytes(np.arange(10, dtype=np.uint16).tobytes())
    with pytest.raises(ValueError, match=r"holds 10 tokens; need at least 17 \(block_size \+ 1, one window and its next token\): lower --block-size"):
        pretrain(tiny_cfg(data, tmp_path / "out4"))


def test_data_that_is_a_file_is_refused_with_what_data_is(tmp_path, capsys):
    """`minigpt train --data input.txt` said "no meta.json in input.txt": now it says what --data
    is, and the prepare command that makes one from the text (or the folder, for a file inside one)."""
    (tmp_path / "input.txt").write_text("Hello world.\n")
    assert train_main(["--data", str(tmp_path / "input.txt"), "--out", str(tmp_path / "out"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert (f"--data {tmp_path / 'input.txt'} is a file; --data is the folder `minigpt prepare` writes (train.bin, val.bin, "
            f"meta.json). Tokenize the text into one first: `minigpt prepare {tmp_path / 'input.txt'} --tokenizer "
            "checkpoints/gpt2 --out data/input`, then --data data/input") in err and "Traceback" not in err
    data = make_data(tmp_path / "data")
    with pytest.raises(ValueError, match=rf"--data {data / 'train.bin'} is a file of the prepared data in {data}: "
                                         rf"--data is that folder; pass --data {data}$"):
        pretrain(tiny_cfg(data / "train.bin", tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_init_starts_from_a_checkpoint(tmp_path, capsys):
    torch.manual_seed(1)
    start = GPT(GPTConfig(vocab_size=VOCAB, n_positions=32, n_embd=32, n_layer=1, n_head=2, bos_token_id=VOCAB - 1, eos_token_id=VOCAB - 1))
    start.save_pretrained(tmp_path / "start")
    data = make_data(tmp_path / "data")
    # lr = 0: the run must end exactly where --init began (and not at the preset's random init).
    init = dict(init=str(tmp_path / "start"), preset=None, n_layer=None, n_head=None, n_embd=None)
    pretrain(tiny_cfg(data, tmp_path / "out", **init, lr=0.0, min_lr=0.0, max_iters=2, dropout=0.2))
    # (said, since a run that trains nothing looks like any other: a fine-tuner's audit)
    assert "warning: --lr 0: no step changes the weights" in capsys.readouterr().err
    ended = GPT.from_pretrained(tmp_path / "out")
    assert ended.config.n_layer == 1 and ended.config.dropout == 0.2
    assert all(torch.equal(ended.state_dict()[k], v) for k, v in start.state_dict().items())
    with pytest.raises(ValueError, match=r"block_size 33 must be in \[1, n_positions=32\]"):
        pretrain(tiny_cfg(data, tmp_path / "out2", **{**init, "block_size": 33}))
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\), got 1.5"):  # set on the modules: GPTConfig never sees it
        pretrain(tiny_cfg(data, tmp_path / "out2", **{**init, "dropout": 1.5}))
    with pytest.raises(ValueError, match="--n-layer cannot change the shape of the --init checkpoint .*; drop it$"):
        pretrain(tiny_cfg(data, tmp_path / "out2", **{**init, "n_layer": 3}))
    from minigpt.classifier import GPTClassifier  # what finetune --task classify writes: named, not "unexpected tensor 'score.weight'"

    GPTClassifier(start, num_labels=2).save_pretrained(tmp_path / "clf")
    with pytest.raises(ValueError, match=re.escape(f"--init {tmp_path / 'clf'} is a classifier (GPT2ForSequenceClassification)")):
        pretrain(tiny_cfg(data, tmp_path / "out2", **{**init, "init": str(tmp_path / "clf")}))


@pytest.mark.parametrize("vocab_size, eos, refused", [
    (VOCAB, VOCAB - 1, False),  # the data's own vocabulary
    (VOCAB + 64, VOCAB - 1, False),  # padded: the same ids and <|endoftext|>, and rows no id reaches
    (VOCAB, 50256, False),  # an id the model has no row for (older minigpt wrote GPT-2's): the size decides
    (VOCAB, VOCAB // 2, True),  # the same size by chance, but another <|endoftext|>: another tokenizer
    (50257, 50256, True),  # GPT-2 itself beside a 64-token vocabulary
    (VOCAB // 2, VOCAB // 2 - 1, True),  # too few rows for the data's ids
])
def test_init_refuses_data_from_another_tokenizer(tmp_path, vocab_size, eos, refused):
    GPT(GPTConfig(vocab_size=vocab_size, n_positions=32, n_embd=32, n_layer=1, n_head=2, bos_token_id=eos,
                        eos_token_id=eos)).save_pretrained(tmp_path / "start")
    cfg = tiny_cfg(make_data(tmp_path / "data"), tmp_path / "out", init=str(tmp_path / "start"), preset=None, n_layer=None, n_head=None,
                   n_embd=None, max_iters=1, eval_iters=1)
    if refused:
        message = (f"--init {tmp_path / 'start'} has a {vocab_size}-token vocabulary (EOS = {eos}), "
                   f"but the data's tokenizer has {VOCAB} (EOS = {VOCAB - 1})")
        with pytest.raises(ValueError, match=re.escape(message)):
            pretrain(cfg)
        assert not (tmp_path / "out").exists()
    else:
        pretrain(cfg)
        config = GPT.from_pretrained(tmp_path / "out").config
        assert config.vocab_size == vocab_size and config.eos_token_id == config.bos_token_id == VOCAB - 1


def test_resume_from_another_directory_finds_relative_data_and_init(tmp_path, monkeypatch, capsys):
    """--data and --init typed relative to where the run started: a bare --resume run elsewhere
    (say, a job script that cd's somewhere else) still finds them, as the saved config holds them
    absolute."""
    GPT(GPTConfig(vocab_size=VOCAB, n_positions=32, n_embd=32, n_layer=1, n_head=2)).save_pretrained(tmp_path / "start")
    make_data(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    flags = ["--data", "data", "--init", "start", "--block-size", "16", "--batch-size", "2", "--eval-iters", "1", "--warmup-iters", "1",
             "--device", "cpu"]
    assert train_main([*flags, "--out", "run", "--max-iters", "2"]) == 0
    assert final_state(tmp_path / "run")["config"]["init"] == str(tmp_path / "start")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert train_main(["--out", str(tmp_path / "run"), "--resume", "--max-iters", "3"]) == 0
    assert final_state(tmp_path / "run")["step"] == 3
    # A run saved before paths were kept absolute, resumed where it started: its relative --data
    # is the path that is now absolute, not a changed setting to warn about.
    state = final_state(tmp_path / "run")
    state["config"].update(data="../data", init="../start")
    torch.save(state, tmp_path / "run" / STATE_FILE)
    capsys.readouterr()
    assert train_main(["--out", str(tmp_path / "run"), "--resume", "--max-iters", "4"]) == 0
    assert "(saved, now): {'max_iters': (3, 4)}\n" in capsys.readouterr().err


def test_preset_with_init_is_refused_and_the_default_preset_builds_gpt2_mini(tmp_path, capsys):
    """--preset's default is None, so a preset given with --init is seen (and refused) instead of
    being silently ignored; a fresh model without one is still gpt2-mini."""
    GPT(GPTConfig(vocab_size=VOCAB, n_positions=32, n_embd=32, n_layer=1, n_head=2)).save_pretrained(tmp_path / "start")
    data = make_data(tmp_path / "data")
    code = train_main(["--data", str(data), "--out", str(tmp_path / "out"), "--init", str(tmp_path / "start"), "--preset", "gpt2-tiny"])
    assert code == 2
    assert f"--preset cannot change the shape of the --init checkpoint {tmp_path / 'start'}" in capsys.readouterr().err
    fresh = build_model(TrainConfig(), VOCAB).config
    mini = GPTConfig.gpt2("gpt2-mini")
    assert (fresh.n_layer, fresh.n_head, fresh.n_embd, fresh.n_positions) == (mini.n_layer, mini.n_head, mini.n_embd, mini.n_positions)


def test_a_fresh_model_for_a_tokenizer_without_eos_has_none_whatever_its_vocabulary():
    """Bug guarded (an audit): a fresh model kept the preset's 50256 when the data's tokenizer had no
    <|endoftext|>. Below 50257 ids that id is no row (written as null); in a larger vocabulary it is
    an ordinary token, on which generation then stopped and from which an empty prompt started."""
    for vocab in (VOCAB, 60_000):
        config = build_model(TrainConfig(preset="gpt2-tiny"), vocab).config
        assert (config.bos_token_id, config.eos_token_id, config.to_hf_dict()["eos_token_id"]) == (None, None, None)
    assert build_model(TrainConfig(preset="gpt2-tiny"), 60_000, 59_999).config.eos_ids == [59_999]


def test_export_script_errors_are_one_line_and_a_classifier_exports_as_one(tmp_path, capsys):
    """scripts/export_checkpoint.py ships a run's best/ (scripts/train_shakespeare.sh): a --dst that
    is a file was a traceback. A classifier was refused (found by an audit: no way to ship one in
    float16); it is exported as a classifier, with the same logits up to float16's rounding."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("export_checkpoint", Path(__file__).parents[1] / "scripts" / "export_checkpoint.py")
    export = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(export)
    GPT(GPTConfig(vocab_size=VOCAB, n_positions=32, n_embd=32, n_layer=1, n_head=2)).save_pretrained(tmp_path / "src")
    (tmp_path / "file").write_text("")
    assert export.main([str(tmp_path / "src"), str(tmp_path / "file")]) == 2
    assert f"export_checkpoint.py: error: dst {tmp_path / 'file'} is no directory (a file, or a link to none)" \
        in capsys.readouterr().err
    from minigpt.classifier import GPTClassifier

    torch.manual_seed(0)
    clf = GPTClassifier(GPT.from_pretrained(tmp_path / "src"), num_labels=3, hidden=(16,)).eval()
    clf.save_pretrained(tmp_path / "clf")
    assert export.main([str(tmp_path / "clf"), str(tmp_path / "out")]) == 0
    assert "as float16" in capsys.readouterr().out
    half = GPTClassifier.from_pretrained(tmp_path / "out", dtype=None)
    assert next(half.parameters()).dtype == torch.float16 and half.hidden == (16,) and half.num_labels == 3
    ids = torch.randint(0, VOCAB, (2, 8))
    with torch.no_grad():
        assert torch.allclose(half.float()(ids)[0], clf(ids)[0], atol=1e-2)


def test_cli_flags_cover_every_config_field(capsys):
    with pytest.raises(SystemExit):
        train_main(["--help"])
    text = capsys.readouterr().out
    for f in fields(TrainConfig):
        assert "--" + f.name.replace("_", "-") in text
    flat = " ".join(text.split())  # argparse wraps the help to the terminal's width
    assert "(default: gpt2-mini; not with --init" in flat  # --preset's None stands for gpt2-mini
    assert "(default: None)" not in flat  # a None default's help says what happens instead
    cfg = parse_config(TrainConfig, ["--lr", "0.01", "--compile", "--n-layer", "3"], "t", "")
    assert (cfg.lr, cfg.compile, cfg.n_layer, cfg.dropout) == (0.01, True, 3, None)


def test_gradient_checkpointing_trains_to_bitwise_the_same_weights(tmp_path, monkeypatch):
    """--gradient-checkpointing recomputes each block in backward, with the same dropout masks:
    the run ends with exactly the weights and losses of a run without it."""
    data = make_data(tmp_path / "data")
    on = []
    forward = GPT.hidden_states

    def spy(self, *args, **kw):
        on.append(self.gradient_checkpointing and self.training)
        return forward(self, *args, **kw)

    monkeypatch.setattr(GPT, "hidden_states", spy)
    assert parse_config(TrainConfig, ["--gradient-checkpointing"], "t", "").gradient_checkpointing
    pretrain(tiny_cfg(data, tmp_path / "ckpt", max_iters=6, gradient_checkpointing=True))
    assert any(on)
    pretrain(tiny_cfg(data, tmp_path / "plain", max_iters=6))
    a, b = final_state(tmp_path / "ckpt"), final_state(tmp_path / "plain")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in b["model"])
    strip = [[{k: v for k, v in r.items() if k != "tokens_per_s"} for r in step_records(tmp_path / run)] for run in ("ckpt", "plain")]
    assert strip[0] == strip[1]


def test_chunked_loss_trains_to_the_same_weights_up_to_rounding(tmp_path, monkeypatch):
    """--chunked-loss (here 24 positions a chunk: 3 chunks of a 4×16 batch, the last one short)
    changes only the order the loss is summed in: 6 steps with dropout end at the plain run's
    weights and logged losses, to fp32 rounding."""
    import minigpt.chunked_loss

    monkeypatch.setattr(minigpt.chunked_loss, "LOSS_CHUNK_LOGITS", VOCAB * 24)
    data = make_data(tmp_path / "data")
    assert parse_config(TrainConfig, ["--chunked-loss"], "t", "").chunked_loss
    pretrain(tiny_cfg(data, tmp_path / "chunked", max_iters=6, chunked_loss=True))
    pretrain(tiny_cfg(data, tmp_path / "plain", max_iters=6))
    a, b = final_state(tmp_path / "chunked"), final_state(tmp_path / "plain")
    assert a["config"]["chunked_loss"] and not b["config"]["chunked_loss"]
    assert all(torch.allclose(a["model"][k], b["model"][k], atol=1e-5) for k in b["model"])
    logs = [step_records(tmp_path / run) for run in ("chunked", "plain")]
    for x, y in zip(*logs, strict=True):
        assert x.keys() == y.keys() and all(x[k] == pytest.approx(y[k], rel=1e-5) for k in x if k != "tokens_per_s")


def test_memory_switches_reach_a_gpt_inside_the_model_and_need_one():
    from minigpt.classifier import GPTClassifier

    gpt = GPT(GPTConfig.gpt2("gpt2-tiny", vocab_size=VOCAB))
    train.switch_on(GPTClassifier(gpt, num_labels=2), "gradient_checkpointing")
    assert gpt.gradient_checkpointing and not gpt.chunked_loss
    with pytest.raises(ValueError, match="gradient_checkpointing recomputes a GPT's blocks, but the Linear being trained holds no GPT"):
        train.switch_on(torch.nn.Linear(2, 2), "gradient_checkpointing")
    with pytest.raises(ValueError, match="chunked_loss computes a GPT's language-model loss in chunks, but the Linear"):
        train.switch_on(torch.nn.Linear(2, 2), "chunked_loss")


def test_train_loop_sets_the_configs_dropout_on_the_model_it_is_given(tmp_path):
    """An audit: TrainConfig(dropout=...) reached only models `minigpt train` built; train_loop from
    Python trained the model at the rate it was built with, silently. It now sets the rate on every
    GPT inside the model (a classifier's too), and a model holding no GPT is told it has none."""
    from minigpt.classifier import GPTClassifier

    data = make_data(tmp_path / "data")
    tokens = load_tokens(data / "train.bin", VOCAB, 17)
    gpt = GPT(GPTConfig.gpt2("gpt2-tiny", vocab_size=VOCAB, n_layer=1, dropout=0.1))
    train.train_loop(gpt, tiny_cfg(data, tmp_path / "lm", max_iters=1, dropout=0.0),
                     lambda split, rng: sample_batch(tokens, 16, 4, rng))
    assert gpt.transformer.drop.p == 0.0 and gpt.config.dropout == 0.0
    assert all(b.attn.dropout == b.mlp.dropout.p == 0.0 for b in gpt.transformer.h)
    clf = GPTClassifier(GPT(GPTConfig.gpt2("gpt2-tiny", vocab_size=VOCAB, n_layer=1)), num_labels=2)
    assert train.gpts_in(clf, "x") == [clf.gpt] and train.gpts_in(gpt, "x") == [gpt]
    with pytest.raises(ValueError, match="dropout=0.2 is a GPT's dropout rate, but the Linear being trained holds no GPT"):
        train.train_loop(torch.nn.Linear(2, 2), tiny_cfg(data, tmp_path / "lin", dropout=0.2), lambda split, rng: None)


def test_add_config_flags_uses_flag_help_and_skips_fixed_fields(capsys):
    @dataclass
    class Config:
        width: int = flag(3, "how wide")
        shape: str | None = field(default=None, init=False)  # fixed: no flag

    parser = argparse.ArgumentParser()
    add_config_flags(parser, Config)
    assert "how wide (default: 3)" in parser.format_help() and "--shape" not in parser.format_help()
    assert vars(parser.parse_args(["--width", "5"])) == {"width": 5}
    with pytest.raises(SystemExit):
        parser.parse_args(["--shape", "x"])
    assert "unrecognized arguments: --shape" in capsys.readouterr().err


def torchrun(*args: str, script: Path | None = None, fails: bool = False) -> subprocess.CompletedProcess:
    """`minigpt ARGS` (or `python SCRIPT ARGS`) under torchrun: 2 CPU processes (gloo), one thread
    each; must succeed (or, with `fails`, fail)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    program = [str(script)] if script else ["-m", "minigpt.cli"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *program, *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert (proc.returncode != 0) == fails, proc.stdout + proc.stderr
    return proc


def test_a_run_whose_stdout_reader_leaves_trains_and_saves_on(tmp_path):
    """An end-to-end audit: `minigpt train ... | head -1` ended the run at its first step line with
    "error: [Errno 32] Broken pipe", exit 2, before its first checkpoint. A reader that leaves now
    takes the rest of stdout with it, to devnull: the run trains to its end and saves."""
    data, out = make_data(tmp_path / "data"), tmp_path / "out"
    cmd = [sys.executable, "-m", "minigpt.cli", "train", "--data", str(data), "--out", str(out), "--preset", "gpt2-tiny",
           "--n-layer", "1", "--n-embd", "32", "--n-head", "2", "--block-size", "16", "--batch-size", "4",
           "--max-iters", "4", "--eval-interval", "2", "--eval-iters", "1", "--log-interval", "1", "--device", "cpu"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # the reader is gone before the first line
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 0 and "Broken pipe" not in err and "Traceback" not in err, err
    assert json.loads((out / "best" / "metrics.json").read_text())["step"] == 4
    assert torch.load(out / "training_state.pt", weights_only=True)["step"] == 4


def one_error(proc: subprocess.CompletedProcess, message: str) -> None:
    """A failed torchrun said why once: one error line, from one process, and no traceback of a
    process that failed only because its peer had (torchrun's own report of the failure aside)."""
    errors = [line for line in proc.stderr.splitlines() if " error: " in line]
    assert len(errors) == 1 and message in errors[0], proc.stderr
    assert "[rank1]" not in proc.stderr and "Connection closed by peer" not in proc.stderr, proc.stderr


def test_an_error_under_torchrun_is_said_once(tmp_path):
    """Bugs (an audit): under torchrun each process printed the same error (a missing --data twice),
    and an error of rank 0 alone (--out below a file, met at its first write) was followed by
    rank 1's ~30-line gloo traceback ("Connection closed by peer"), as rank 1 went on to DDP's
    first collective. Checks every process can make are made by every process, before any
    collective, and the machine's first process alone prints; what rank 0 writes alone, it
    reports to the others (a damaged log.jsonl, found when a resume truncates it)."""
    data = make_data(tmp_path / "data")
    flags = ["--preset", "gpt2-tiny", "--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--block-size", "16",
             "--batch-size", "2", "--grad-accum", "2", "--max-iters", "2", "--eval-iters", "2", "--device", "cpu"]
    one_error(torchrun("train", *flags, "--data", str(tmp_path / "none"), "--out", str(tmp_path / "o"), fails=True),
              f"--data {tmp_path / 'none'} does not exist")
    (tmp_path / "file").write_text("")
    one_error(torchrun("train", *flags, "--data", str(data), "--out", str(tmp_path / "file" / "o"), fails=True),
              f"--out {tmp_path / 'file' / 'o'} is below {tmp_path / 'file'}, which is a file")
    torchrun("train", *flags, "--data", str(data), "--out", str(tmp_path / "run"))
    one_error(torchrun("train", *flags, "--data", str(data), "--out", str(tmp_path / "run"), fails=True),
              "already holds a checkpoint or a run")  # judged by rank 0 alone: the other is stopped waiting for it
    (tmp_path / "run" / "log.jsonl").write_text("not a record\n")
    one_error(torchrun("train", "--out", str(tmp_path / "run"), "--resume", "--max-iters", "3", fails=True),
              "log.jsonl, line 1, is not a log record")


RANK_1_FAILS = """
import errno, os, sys
import minigpt.pretrain

real, calls = minigpt.pretrain.sample_batch, [0]


def sample(tokens, *args):  # rank 1 alone fails, drawing its third batch (step 2)
    calls[0] += 1
    if os.environ["RANK"] == "1" and calls[0] == 3:
        if sys.argv[1] == "io":
            raise OSError(errno.EIO, "Input/output error", "train.bin")
        raise RuntimeError("a bug in rank 1's step")
    return real(tokens, *args)


minigpt.pretrain.sample_batch = sample
sys.exit(minigpt.pretrain.main(sys.argv[2:]))
"""


def test_an_error_of_one_process_alone_is_said_once_naming_its_rank(tmp_path):
    """An end-to-end audit: under torchrun only the machine's first process printed errors, so an
    error that rank 1 alone met in a step (an I/O error reading its batch) said nothing of itself,
    below rank 0's gloo traceback ("Connection closed by peer") from the collective it waited in.
    Now the error is said once, by the process that met it, naming its rank; and rank 0, failing
    only because its peer had, says nothing. A bug (an uncaught error) is said by its traceback."""
    script = tmp_path / "rank_1_fails.py"
    script.write_text(RANK_1_FAILS)
    flags = ["--data", str(make_data(tmp_path / "data")), "--preset", "gpt2-tiny", "--n-layer", "1", "--n-head", "2",
             "--n-embd", "32", "--block-size", "16", "--batch-size", "2", "--grad-accum", "2", "--max-iters", "4",
             "--eval-iters", "2", "--device", "cpu"]
    proc = torchrun("io", *flags, "--out", str(tmp_path / "io"), script=script, fails=True)
    one_error(proc, "minigpt train (rank 1): error: [Errno 5] Input/output error: 'train.bin'")
    assert "[rank0]" not in proc.stderr, proc.stderr  # (torchrun's own traceback of the failure aside)
    assert root_cause(proc) == ("1", "2")
    assert any(line.startswith("minigpt train (rank 1): error:") for line in proc.stderr.splitlines())  # (not after a bar)
    proc = torchrun("bug", *flags, "--out", str(tmp_path / "bug"), script=script, fails=True)
    assert "RuntimeError: a bug in rank 1's step" in proc.stderr, proc.stderr
    assert "[rank0]" not in proc.stderr and "Connection closed by peer" not in proc.stderr, proc.stderr
    # torchrun's report names the process that failed (a trainer's audit: rank 0, failing only as its
    # collective broke, ended first and was named, exit 2, rank 1 killed by SIGTERM in its teardown).
    assert root_cause(proc) == ("1", "1")


def root_cause(proc: subprocess.CompletedProcess) -> tuple[str, str]:
    """(rank, exit code) of torchrun's "Root Cause (first observed failure)"."""
    report = proc.stderr.split("Root Cause (first observed failure)")[1]
    rank, code = (re.search(rf"{key}\s*: (-?\d+)", report)[1] for key in ("rank", "exitcode"))
    return rank, code


def test_ddp_two_processes_match_one_with_accumulation(tmp_path):
    """torchrun with 2 gloo processes and grad_accum=4 (2 micro-batches each) ends where one
    process with grad_accum=4 does: same batches, same dropout masks, same averaged gradients."""
    data = make_data(tmp_path / "data")
    flags = ["--data", str(data), "--preset", "gpt2-tiny", "--n-layer", "2", "--n-head", "2", "--n-embd", "32",
             "--block-size", "16", "--batch-size", "2", "--grad-accum", "4", "--max-iters", "4", "--eval-interval", "0",
             "--eval-iters", "2", "--warmup-iters", "1", "--lr", "3e-3", "--dropout", "0.1", "--device", "cpu"]
    torchrun("train", *flags, "--out", str(tmp_path / "ddp"))
    pretrain(TrainConfig(**{**vars(parse_config(TrainConfig, flags, "t", "")), "out": str(tmp_path / "one")}))
    a = load_file(tmp_path / "ddp" / "model.safetensors")
    b = load_file(tmp_path / "one" / "model.safetensors")
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    print(f"DDP(2) vs 1 process: max |Δw| = {diff:.2e}")
    assert diff < 1e-5
    # The logged loss is the mean over the global batch: all-reduced, then divided by grad_accum.
    logs = [[r for r in map(json.loads, (tmp_path / run / "log.jsonl").read_text().splitlines()) if "grad_norm" in r]
            for run in ("ddp", "one")]
    assert len(logs[0]) == len(logs[1]) > 0
    for a, b in zip(*logs):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5) and a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)


# Run by each of 2 torchrun processes: train_loop on DATA with DDP spied on. Each event is logged in
# order: entering DDP.no_sync, a training forward (and whether DDP will sync its backward), and a
# gradient bucket all-reduced (DDP's default all-reduce, through a comm hook that logs each call).
NO_SYNC_PROBE = """
import contextlib, json, os, sys
import torch.distributed as dist
from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook
from torch.nn.parallel import DistributedDataParallel as DDP
import minigpt.train as train
from minigpt.data import load_tokens, sample_batch
from minigpt.pretrain import build_model
from minigpt.train_config import TrainConfig

data, out = sys.argv[1:3]
events = []
real_init, real_no_sync = DDP.__init__, DDP.no_sync

def init(self, *args, **kwargs):
    real_init(self, *args, **kwargs)
    self.register_comm_hook(None, lambda state, bucket: events.append("all-reduce") or allreduce_hook(state, bucket))

@contextlib.contextmanager
def no_sync(self):
    events.append("no_sync")
    with real_no_sync(self):
        yield

def loss_fn(model, x, y):
    if model.training:
        events.append(f"forward sync={model.require_backward_grad_sync}")
    return train.lm_loss(model, x, y)

DDP.__init__, DDP.no_sync = init, no_sync
tokens = load_tokens(os.path.join(data, "train.bin"), 64, 17)
per_run = {}
for grad_accum in (2, 6):  # 1 and 3 micro-steps per process
    cfg = TrainConfig(out=os.path.join(out, str(grad_accum)), preset="gpt2-tiny", n_layer=1, n_head=2, n_embd=32,
                      batch_size=2, grad_accum=grad_accum, max_iters=2, warmup_iters=1, eval_interval=0,
                      eval_iters=1, device="cpu")
    events.clear()
    train.train_loop(build_model(cfg, 64), cfg, lambda split, rng: sample_batch(tokens, 16, 2, rng), loss_fn)
    per_run[grad_accum] = list(events)
with open(os.path.join(out, f"events{dist.get_rank()}.json"), "w") as f:
    json.dump(per_run, f)
dist.barrier()
dist.destroy_process_group()
# As minigpt/train_runtime.py's workers do: skip the interpreter's teardown, where gloo's C++ side
# now and then aborts a finished process ("terminate called without an active exception").
sys.stdout.flush()
sys.stderr.flush()
os._exit(0)
"""


def test_ddp_all_reduces_gradients_only_on_the_last_micro_step(tmp_path):
    """README: under torchrun, gradients are all-reduced only on the last micro-step (no_sync()
    around the others). Two gloo processes log every DDP event: with 3 micro-steps per process,
    each optimizer step enters no_sync for the first 2 (their backward all-reduces nothing) and
    all-reduces the tiny model's one gradient bucket after the 3rd forward; with 1 micro-step
    there is nothing to skip and no_sync is never entered."""
    data = make_data(tmp_path / "data")
    script = tmp_path / "probe.py"
    script.write_text(NO_SYNC_PROBE)
    torchrun(str(data), str(tmp_path / "out"), script=script)
    one_step = {"2": ["forward sync=True", "all-reduce"],
                "6": ["no_sync", "forward sync=False", "no_sync", "forward sync=False", "forward sync=True", "all-reduce"]}
    for rank in (0, 1):
        events = json.loads((tmp_path / "out" / f"events{rank}.json").read_text())
        print(f"rank {rank}, one optimizer step: {events['6'][:6]}")
        assert events == {k: v * 2 for k, v in one_step.items()}  # max_iters=2 steps, the same each


@pytest.mark.parametrize("device, bf16_supported, expected", [
    ("cpu", True, torch.float32),  # 'auto' is bf16 on a GPU only: never on a CPU
    ("cpu", False, torch.float32),
    ("cuda", True, torch.bfloat16),
    ("cuda", False, torch.float32),  # a GPU without bf16 (V100, T4): fp32, not emulated bf16
])
def test_dtype_auto_is_bfloat16_only_on_a_gpu_that_supports_it(monkeypatch, device, bf16_supported, expected):
    """Bug guarded: `dtype='auto'` must pick bfloat16 only where the device is CUDA *and* the GPU
    supports it; an `or` (or a missing device check) trained a CPU run under bf16 autocast (slow
    and less precise) or asked a pre-Ampere GPU for bf16."""
    monkeypatch.setattr(train_runtime, "resolve_device", lambda d: torch.device(device))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16_supported)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    rt = train_runtime.setup_runtime(TrainConfig(dtype="auto"))
    assert rt.device.type == device and rt.dtype == expected


def test_tf32_is_on_for_a_gpu_run_only_and_given_back_after(tmp_path, monkeypatch, request):
    """An audit of the Python API: setup_runtime turned TF32 on for good on a GPU, so a notebook's
    own float32 matmuls after train_loop ran at TF32's 10-bit mantissa. It is now on while the run
    runs (train_loop's `tf32_matmuls`), the caller's setting restored after, even on an error;
    through torch's new switch (fp32_precision), so a caller who used it does not get "mix of the
    legacy and new APIs" (a reviewer), and one who used the old allow_tf32 can still read it.
    (Setting the switches needs no GPU. Torch < 2.9 has only allow_tf32, which it then sets.)"""
    matmul = torch.backends.cuda.matmul
    new_switch = hasattr(matmul, "fp32_precision")
    switch, off, on = ("fp32_precision", "ieee", "tf32") if new_switch else ("allow_tf32", False, True)
    # Put back after the test by hand: pytest ≥ 9.2's monkeypatch would undo its setattr by deleting
    # the attribute, which torch serves through __getattr__ (an error at teardown).
    before = getattr(matmul, switch)
    request.addfinalizer(lambda: setattr(matmul, switch, before))
    for caller in ("fp32_precision", "allow_tf32") if new_switch else ("allow_tf32",):
        setattr(matmul, caller, "ieee" if caller == "fp32_precision" else False)
        with train_runtime.tf32_matmuls(torch.device("cpu")):
            assert getattr(matmul, switch) == off
        with pytest.raises(RuntimeError, match="inside"), train_runtime.tf32_matmuls(torch.device("cuda")):
            assert getattr(matmul, switch) == on
            raise RuntimeError("inside")
        assert getattr(matmul, switch) == off and matmul.allow_tf32 is False, caller
    entered = []  # train_loop runs its steps inside it, on the run's device

    @contextlib.contextmanager
    def spy(device):
        entered.append(device)
        yield

    monkeypatch.setattr(train, "tf32_matmuls", spy)
    pretrain(tiny_cfg(make_data(tmp_path / "data"), tmp_path / "out", max_iters=2))
    assert entered == [torch.device("cpu")]




def out_cfg(out, init=None, resume=False):
    return SimpleNamespace(out=out, init=init, resume=resume, auto_resume=False, COMMAND="train")


@pytest.mark.parametrize("name", [INDEX_NAME, "log.jsonl", "config.json", "model.safetensors", "training_state.pt"])
def test_check_out_dir_refuses_each_run_file(tmp_path, name):
    """Mutants R3/R5: RUN_FILES lost model.safetensors.index.json (a sharded checkpoint) or log.jsonl
    (another run's log), so a run without --resume would overwrite that directory."""
    (tmp_path / name).write_text("{}")
    with pytest.raises(FileExistsError, match=name.replace(".", r"\.")):
        minigpt.run_dir.check_out_dir(out_cfg(str(tmp_path)))
    (tmp_path / name).unlink()
    (tmp_path / "notes.txt").write_text("unrelated")
    minigpt.run_dir.check_out_dir(out_cfg(str(tmp_path)))  # unrelated files are fine


def test_out_equal_to_init_is_refused_however_it_is_spelled(tmp_path, monkeypatch):
    """Mutant R4: --out compared with --init as typed (no resolve()), so `--init model --out ./x/../model`
    or a relative vs absolute path went through to overwrite the weights it starts from."""
    (tmp_path / "model").mkdir()
    (tmp_path / "x").mkdir()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileExistsError, match="is the --init checkpoint"):
        minigpt.run_dir.check_out_dir(out_cfg("x/../model", init=str(tmp_path / "model")))


def test_an_out_that_is_a_file_is_refused_by_name_before_any_work(tmp_path):
    """Bug: --out naming a file passed check_out_dir, and the run failed only after loading its
    data and model, with `[Errno 17] File exists: 'x'` (finetune --task lm: `Not a directory: 'x/data'`)."""
    (tmp_path / "x").write_text("notes")
    for resume in (False, True):
        with pytest.raises(FileExistsError, match="--out .*x is a file; OUT_DIR is a directory"):
            minigpt.run_dir.check_out_dir(out_cfg(str(tmp_path / "x"), resume=resume))
    assert (tmp_path / "x").read_text() == "notes"


def test_plot_log_draws_the_val_curve(tmp_path, monkeypatch):
    """Mutant R2: plot_log looked the val loss up under the wrong key, so loss.png had no val curve."""
    from matplotlib.axes import Axes

    drawn = {}
    real = Axes.plot

    def plot(self, *args, label=None, **kw):
        drawn[label] = (list(args[0]), list(args[1]))
        return real(self, *args, label=label, **kw)

    monkeypatch.setattr(Axes, "plot", plot)
    records = [{"step": 1, "loss": 5.0}, {"step": 2, "loss": 4.0, "val_loss": 4.5}, {"step": 4, "loss": 3.0, "val_loss": 3.5}]
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    minigpt.run_log.plot_log(tmp_path)
    assert drawn == {"train": ([1, 2, 4], [5.0, 4.0, 3.0]), "val": ([2, 4], [4.5, 3.5])}
    assert (tmp_path / "loss.png").read_bytes()[:4] == b"\x89PNG"
    # A classifier's log (a finetuner audit: its accuracy was not drawn): accuracy beside the losses.
    records[1]["val_accuracy"], records[2]["val_accuracy"] = 0.6, 0.7
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    minigpt.run_log.plot_log(tmp_path)
    assert drawn["val accuracy"] == ([2, 4], [0.6, 0.7])


def test_stop_signal_handles_sigterm_and_sigint_and_restores_them():
    """Mutants S2/S6: StopSignal left its handler installed after the run (a later Ctrl-C in the same
    process was swallowed), or did not catch SIGTERM (what torchrun/schedulers send: no save)."""
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    with train_runtime.StopSignal() as stop:
        for sig in (signal.SIGINT, signal.SIGTERM):
            assert signal.getsignal(sig) == stop._handle
        signal.raise_signal(signal.SIGTERM)  # recorded, not fatal
        assert stop.signum == signal.SIGTERM
        assert signal.getsignal(signal.SIGTERM) == before[signal.SIGTERM]  # a second one acts at once
    assert {sig: signal.getsignal(sig) for sig in before} == before


def test_the_first_signal_is_the_one_kept():
    """Mutant S4: `self.signum = signum` let a later different signal (SIGTERM after Ctrl-C)
    overwrite the first, changing the exit code the run reports."""
    with train_runtime.StopSignal() as stop:
        assert signal.getsignal(signal.SIGTERM) == stop._handle  # else SIGTERM below would kill pytest
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGTERM)
        assert stop.signum == signal.SIGINT
    # The second Ctrl-C gets the handler from before: Python's, as in a terminal (a suite run as a
    # background job starts with SIGINT ignored, and then nothing would be raised below).
    outer = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with train_runtime.StopSignal() as stop:  # the first Ctrl-C alone only sets the flag
            signal.raise_signal(signal.SIGINT)
            assert stop.signum == signal.SIGINT
            with pytest.raises(KeyboardInterrupt):  # the second gets Python's handler: stops at once
                signal.raise_signal(signal.SIGINT)
    finally:
        signal.signal(signal.SIGINT, outer)


def test_a_training_state_without_its_grad_scaler_is_refused_by_name(tmp_path):
    """Mutant R7-36: read_state did not require "scaler", so such a file failed later in restore
    with a bare KeyError instead of naming the file and what it lacks."""
    state = {"config": {}, "model": {}, "optimizer": {"state": {}, "param_groups": []}, "step": 3, "best_val_loss": 1.0}
    torch.save(state, tmp_path / STATE_FILE)
    with pytest.raises(ValueError, match=rf"{STATE_FILE} is not a training state saved by minigpt: it lacks scaler$"):
        minigpt.resume.read_state(tmp_path / STATE_FILE)
    torch.save(state | {"scaler": {}}, tmp_path / STATE_FILE)
    assert minigpt.resume.read_state(tmp_path / STATE_FILE)["step"] == 3


# A training_state.pt whose fields hold other types (a security audit's probe_state.py): each was
# a TypeError, KeyError or AttributeError from wherever the field was first used, naming no file.
WRONG_FIELDS = [
    ("step", "2", r"its step \('2'\) is not an integer >= 0"),
    ("step", -3, r"its step \(-3\) is not an integer >= 0"),
    ("step", True, r"its step \(True\) is not an integer >= 0"),
    ("best_val_loss", "x", r"its best_val_loss \('x'\) is not a number"),
    ("best_val_loss", math.nan, r"its best_val_loss \(nan\) is not a number"),
    ("optimizer", {}, r"its optimizer \(a dict of 0 entries\) is not an optimizer's state_dict"),
    ("optimizer", {"state": {}, "param_groups": [{"lr": 1.0}]}, r"its optimizer \(a dict of 2 entries\) is not"),
    ("optimizer", {"state": {0: {"exp_avg": "x"}}, "param_groups": [{"params": [0]}]}, r"its optimizer \(a dict of 2 "),
    ("config", "x", r"its config \('x'\) is not a dict of the run's settings by name"),
    ("model", {"w": "x"}, r"its model \(a dict of 1 entries\) is not a dict of the weights' tensors by name"),
    ("scaler", None, r"its scaler \(None\) is not a grad scaler's state_dict"),
    ("data", 5, r"its data \(5\) is not the data's fingerprint \(a dict, or None\)"),
    ("log_partial", "x", r"its log_partial \('x'\) is not \[sum of train losses, steps\]"),
    ("log_partial", [1.0, -1], r"its log_partial \(a list of 2 entries\) is not"),
    ("scaler_skips", [1, 0, 1], r"its scaler_skips \(a list of 3 entries\) is not \[skipped since the last log record"),
    ("command", 3, r"its command \(3\) is not the name of a command"),
]


@pytest.mark.parametrize("field, value, said", WRONG_FIELDS, ids=[f"{f}={v!r}" for f, v, _ in WRONG_FIELDS])
def test_a_training_state_field_of_the_wrong_type_is_refused_naming_the_file_and_the_field(tmp_path, field, value, said):
    """Bug (a security audit): read_state checked only that the fields were there, so a wrongly
    typed one gave a raw traceback ("'<' not supported", KeyError 'param_groups', "not enough
    values to unpack") from wherever --resume first used it. Each is now refused by read_state."""
    state = {"config": {}, "model": {}, "optimizer": {"state": {}, "param_groups": []}, "scaler": {}, "step": 3,
             "best_val_loss": math.inf, "command": "train", "log_partial": [0.0, 0], "data": None}
    torch.save(state, tmp_path / STATE_FILE)
    assert minigpt.resume.read_state(tmp_path / STATE_FILE)["step"] == 3  # the untouched state is read
    torch.save(state | {field: value}, tmp_path / STATE_FILE)
    with pytest.raises(ValueError, match=rf"^{re.escape(str(tmp_path / STATE_FILE))} is damaged: {said}.*"
                                         rf"start a new run from them with --init {re.escape(str(tmp_path))}"):
        minigpt.resume.read_state(tmp_path / STATE_FILE)


def test_a_training_state_holding_an_object_is_refused_without_torchs_advice_to_unpickle_it(tmp_path):
    """Bug (an audit of untrusted files): a training_state.pt holding a pickled object was refused
    (weights_only), but the message ended with torch's advice, "Re-running torch.load with
    weights_only set to False will likely succeed": for a foreign file, the way to run its code.
    Now it names the file and the object's class, and says why it is not unpickled."""
    state = {"config": {}, "model": {}, "optimizer": {"state": {}, "param_groups": []}, "scaler": {}, "step": 3,
             "best_val_loss": math.inf, "planted": argparse.Namespace(run="code")}
    torch.save(state, tmp_path / STATE_FILE)
    with pytest.raises(ValueError) as refused:
        minigpt.resume.read_state(tmp_path / STATE_FILE)
    assert str(refused.value) == (f"{tmp_path / STATE_FILE} is not a training state saved by minigpt: it holds an object "
                                  "of class argparse.Namespace; not unpickling it, which could run any code the file holds")
    assert "weights_only" not in str(refused.value)


def test_a_training_state_that_is_an_lfs_pointer_or_random_bytes_is_not_said_to_hold_code(tmp_path):
    """Bug (a review): every UnpicklingError got the wording for a pickled object ("could run any
    code"), but a Git LFS pointer or random bytes fail as one too ("Unsupported operand 118"). The
    pointer is named as such; other bytes are not a readable state, with torch's finding, not its advice."""
    path = tmp_path / STATE_FILE
    path.write_bytes(b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 12345\n")
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))} is a Git LFS pointer, not the file itself") as refused:
        minigpt.resume.read_state(path)
    path.write_bytes(bytes(range(249, 256)) * 500)  # opcode 249: no pickle opcode
    with pytest.raises(ValueError) as refused_too:
        minigpt.resume.read_state(path)
    assert str(refused_too.value) == f"{path} is not a readable training state (UnpicklingError: Unsupported operand 249)"
    for said in (str(refused.value), str(refused_too.value)):
        assert "any code" not in said and "weights_only" not in said


def test_resume_names_the_file_and_the_setting_of_a_wrongly_typed_value_in_the_saved_config(tmp_path, capsys):
    """Bug (an audit of untrusted files): a training_state.pt whose saved config sets lr="0.1" (edited
    by hand, or written by another program) crashed `train --resume` with the config's traceback,
    "TypeError: lr must be a number, got '0.1'", naming no file. Now one line names the file and the
    setting, exit 2. A flag typed that the config refuses beside a saved setting is the flag's error."""
    data, out = make_data(tmp_path / "data"), tmp_path / "out"
    pretrain(tiny_cfg(data, out, max_iters=2, eval_interval=2, eval_iters=1))
    intact = (out / STATE_FILE).read_bytes()
    capsys.readouterr()
    assert train_main(["--out", str(out), "--resume", "--max-iters", "3", "--lr", "1e-5"]) == 2  # below the saved min_lr
    err = capsys.readouterr().err
    assert "error: min_lr (0.0003) must be <= lr (1e-05)" in err and "damaged" not in err
    state = torch.load(out / STATE_FILE, weights_only=True)
    torch.save({**state, "config": {**state["config"], "lr": "0.1"}}, out / STATE_FILE)
    assert train_main(["--out", str(out), "--resume", "--max-iters", "3"]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == (
        f"minigpt train: error: {out / STATE_FILE} is damaged: its config's lr ('0.1') is not a number, "
        f"so the run cannot be resumed; to train its weights further, start a new run from them with --init {out} and "
        "another --out")
    assert "Traceback" not in err
    (out / STATE_FILE).write_bytes(intact)
    assert train_main(["--out", str(out), "--resume", "--max-iters", "3"]) == 0


def test_resume_refuses_a_saved_setting_by_its_type_or_by_the_saved_settings_alone_not_by_the_errors_words(tmp_path, capsys):
    """Bug (a reread): whether the saved config was at fault was guessed from the config error's words
    (a saved setting's name in it, no typed flag's). A setting the config does not type-check
    (device=5, preset=5) was then refused as "5 is not a device", naming no file; a damaged lr with
    --lr typed over it reached restore and ended in "TypeError: unsupported operand type(s) for /:
    'str' and 'int'". Now each saved setting's type is checked where the state is read, naming the
    file and the setting; a right type out of range is the file's when the saved settings alone fail
    the config's checks too, and a flag typed that fails them keeps its own error."""
    data, out = make_data(tmp_path / "data"), tmp_path / "out"
    pretrain(tiny_cfg(data, out, max_iters=2, eval_interval=2, eval_iters=1))
    state = torch.load(out / STATE_FILE, weights_only=True)
    for setting, flags, said in [
            ({"device": 5}, [], "its config's device (5) is not a string,"),
            ({"preset": 5}, [], "its config's preset (5) is not a string or None,"),
            ({"lr": "0.1"}, ["--lr", "0.01"], "its config's lr ('0.1') is not a number,"),
            ({"block_size": [16]}, [], "its config's block_size (a list of 1 entries) is not an integer or None,"),
            ({"eval_iters": 0}, ["--seed", "3"], "its config is refused (eval_iters must be >= 1, got 0),")]:
        torch.save({**state, "config": {**state["config"], **setting}}, out / STATE_FILE)
        capsys.readouterr()
        assert train_main(["--out", str(out), "--resume", "--max-iters", "3", *flags]) == 2, setting
        err = capsys.readouterr().err
        assert err.splitlines()[-1] == (f"minigpt train: error: {out / STATE_FILE} is damaged: {said} so the run cannot be "
                                        f"resumed; to train its weights further, start a new run from them with --init "
                                        f"{out} and another --out"), err
    # A switch an older minigpt saved as 0 or 1 is still one; a flag typed that the saved settings refuse is its own error.
    torch.save({**state, "config": {**state["config"], "compile": 0}}, out / STATE_FILE)
    assert train_main(["--out", str(out), "--resume", "--max-iters", "3", "--min-lr", "1"]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == ("minigpt train: error: min_lr (1.0) must be <= lr (0.003): the cosine decays from lr "
                                    "down to min_lr; lower --min-lr (min_lr= in Python)")
    assert train_main(["--out", str(out), "--resume", "--max-iters", "3"]) == 0


def test_a_config_subclass_with_fields_of_its_own_resumes_and_a_falsy_path_is_refused_when_built(tmp_path):
    """A review of the typed resume check: it read each field's annotation as a string, so a user's
    own TrainConfig subclass (README: train_loop with your own model), whose annotations are types
    where its module has no `from __future__ import annotations`, crashed every resume ("type object
    'int' has no attribute 'startswith'"). And init=False built a config, trained, and was then
    refused on resume as damaged: a value the config takes must resume, and init=False is now
    refused when the config is built."""
    data, out = make_data(tmp_path / "data"), tmp_path / "out"
    MyConfig = make_dataclass(  # annotations as types, as in a module without future annotations
        "MyConfig", [("hidden", int, 128), ("note", str, "x"), ("layers", list[int], field(default_factory=list))],
        bases=(TrainConfig,))
    pretrain(tiny_cfg(data, out, cls=MyConfig, max_iters=2, eval_interval=2, eval_iters=1, layers=[4, 2]))
    resumed = tiny_cfg(data, out, cls=MyConfig, max_iters=3, eval_interval=3, eval_iters=1, layers=[4, 2], resume=True)
    pretrain(resumed)
    assert [r["step"] for r in read_log(out) if "val_loss" in r][-1] == 3
    with pytest.raises(TypeError, match=r"^init must be a path \(a str or a pathlib.Path\), got False$"):
        TrainConfig(data=str(data), init=False)
    with pytest.raises(TypeError, match=r"^preset must be a str, got 5 \(GPTConfig preset of a fresh model: gpt2, "):
        TrainConfig(data=str(data), preset=5)
    from minigpt.finetune_config import FinetuneConfig

    with pytest.raises(TypeError, match=r"^val_data must be a path \(a str or a pathlib.Path\), got False$"):
        FinetuneConfig(data=str(data), init="x", val_data=False)
    with pytest.raises(TypeError, match=r"^head_hidden must be a str, got 0 \(classify: comma-separated hidden widths of an MLP head "):
        FinetuneConfig(data=str(data), init="x", task="classify", head_hidden=0)
    Tagged = make_dataclass("Tagged", [("tag", "str", "x")], bases=(TrainConfig,))  # a str field with no help
    with pytest.raises(TypeError, match=r"^tag must be a str, got 5$"):
        Tagged(data=str(data), tag=5)


def test_a_run_out_of_cpu_memory_ends_in_one_line_with_exit_2(tmp_path, monkeypatch, capsys):
    """Bug (an audit): `minigpt train --batch-size 1000000000` ended in the CPU allocator's
    traceback (RuntimeError: "... DefaultCPUAllocator: can't allocate memory: you tried to allocate
    ..."), exit 1. Out of memory is a setting to change: one line saying which, exit 2, as for a
    GPU's torch.OutOfMemoryError. (The allocation is faked: a real one would take the machine's
    memory.) Any other RuntimeError is a bug, and keeps its traceback."""
    import minigpt.pretrain

    said = ("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you tried to "
            "allocate 8000000000 bytes. Error code 12 (Cannot allocate memory)")

    def too_big(*args):
        raise RuntimeError(said)

    monkeypatch.setattr(minigpt.pretrain, "sample_batch", too_big)
    flags = ["--data", str(make_data(tmp_path / "data")), "--out", str(tmp_path / "out"), "--preset", "gpt2-tiny",
             "--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--block-size", "16", "--batch-size", "1000000000",
             "--max-iters", "2", "--device", "cpu"]
    capsys.readouterr()
    assert train_main(flags) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == (
        "minigpt train: error: out of memory (DefaultCPUAllocator: can't allocate memory: you tried to allocate "
        "8000000000 bytes. Error code 12 (Cannot allocate memory)): the model, its AdamW state (8 bytes a weight that "
        "trains) and a batch's activations must fit: use a smaller model (--n-layer, --n-embd; finetune: --strategy "
        "lora, or frozen for classify), --dtype bfloat16, a smaller --batch-size (a larger --grad-accum keeps the batch "
        "per step) or --block-size, or turn on --gradient-checkpointing")
    assert "Traceback" not in err

    def gpu_full():
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB.")

    assert train_runtime.run_command("minigpt train", gpu_full) == 2
    assert "error: out of memory (CUDA out of memory. Tried to allocate 2.00 GiB.): the model, its AdamW" in capsys.readouterr().err

    def a_bug():
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    with pytest.raises(RuntimeError, match="mat1 and mat2"):
        train_runtime.run_command("minigpt train", a_bug)


def test_resume_refuses_adamw_moments_of_another_shape_naming_the_parameter(tmp_path):
    """Bug (a security audit): the optimizer state's shapes were never checked, and the fused CPU
    AdamW checks none either: a moment smaller than its parameter crashed --resume with a segfault
    (heap overrun), a larger one trained on silently. (The larger one here: the smaller would kill
    the test process too, without the fix.) Now refused before any step, naming the parameter."""
    data, out = make_data(tmp_path / "data"), tmp_path / "out"
    pretrain(tiny_cfg(data, out, max_iters=2))
    state = final_state(out)
    name = "transformer.h.0.attn.c_attn.weight"  # the first parameter of the decayed group: id 0
    assert tuple(state["model"][name].shape) == (96, 32)  # nn.Linear's (out, in)
    state["optimizer"]["state"][0]["exp_avg"] = torch.zeros(192, 32)
    torch.save(state, out / STATE_FILE)
    with pytest.raises(ValueError, match=re.escape(f"{out / STATE_FILE} is damaged: its optimizer state for {name} holds "
                                                   "exp_avg of shape (192, 32), where the parameter's shape is (96, 32)")):
        pretrain(tiny_cfg(data, out, max_iters=4, resume=True))
    assert final_state(out)["step"] == 2  # nothing trained, nothing saved


def _tiny_optimizer_state():
    """A gpt2-tiny model, its optimizer after one step, and that optimizer's state_dict."""
    torch.manual_seed(0)
    model = GPT(GPTConfig.gpt2("gpt2-tiny", vocab_size=VOCAB, n_layer=1, n_head=2, n_embd=32))
    optimizer = train.build_optimizer(model, TrainConfig(), torch.device("cpu"))
    model(torch.zeros(1, 4, dtype=torch.long), targets=torch.zeros(1, 4, dtype=torch.long))[1].backward()
    optimizer.step()
    return model, optimizer, optimizer.state_dict()


DAMAGED_MOMENTS = {
    "smaller": (lambda s: s[0].update(exp_avg=torch.zeros(1)), r"holds exp_avg of shape \(1,\), where the parameter's shape"),
    "larger": (lambda s: s[0].update(exp_avg_sq=torch.zeros(192, 32)), r"holds exp_avg_sq of shape \(192, 32\)"),
    "step of 2 numbers": (lambda s: s[0].update(step=torch.zeros(2)), r"holds step of shape \(2,\), where a step's shape is \(\)"),
    "negative step": (lambda s: s[0].update(step=torch.tensor(-1.0)), r"holds step -1.0, where it counts the steps"),
    "moment missing": (lambda s: s[0].pop("exp_avg_sq"), r"lacks exp_avg_sq"),
    "no group's id": (lambda s: s.update({999: {}}), r"is for parameter 999, which none of its param_groups lists"),
}


@pytest.mark.parametrize("damage", DAMAGED_MOMENTS)
def test_optimizer_state_that_does_not_fit_its_parameters_is_named(tmp_path, damage):
    """Bug (a security audit): load_state_dict checks no shape, and the fused AdamW kernel reads and
    writes as many numbers as the parameter holds (shape (1,): "free(): invalid size", the process
    aborted). check_optimizer_state refuses each kind of misfit, naming the parameter."""
    model, optimizer, saved = _tiny_optimizer_state()
    minigpt.resume.check_optimizer_state(optimizer, model, tmp_path / STATE_FILE)  # as saved: it fits
    mutate, said = DAMAGED_MOMENTS[damage]
    mutate(saved["state"])
    optimizer.load_state_dict(saved)
    with pytest.raises(ValueError, match=rf"{STATE_FILE} is damaged: its optimizer state "
                                         rf"(for transformer.h.0.attn.c_attn.weight )?{said}"):
        minigpt.resume.check_optimizer_state(optimizer, model, tmp_path / STATE_FILE)


@pytest.mark.parametrize("field, value, said", [("eos_token_id", 5, "eos_token_id 5, where it is 256 in"),
                                                ("vocab_size", 200, "vocab_size 200, fewer ids than the 257 of")])
def test_training_refuses_a_meta_json_that_disagrees_with_its_tokenizer(tmp_path, field, value, said):
    """Bug (a security audit): meta.json's vocab_size and eos_token_id built the model unchecked. An
    eos_token_id of 5 beside a tokenizer whose <|endoftext|> is 256 trained, into a checkpoint
    `minigpt generate` then refused; now refused before a model is built, naming both. A larger
    vocab_size, a padded vocabulary, trains as before (a review: it was refused too)."""
    data = add_tokenizer(make_data(tmp_path / "data"), Tokenizer.train("ab", vocab_size=257, progress=False))
    meta = json.loads((data / "meta.json").read_text())
    edited = meta | {field: value}
    if field == "vocab_size":  # (one written by hand, without eos_token_id: 256 would be past its ids)
        del edited["eos_token_id"]
    (data / "meta.json").write_text(json.dumps(edited))
    with pytest.raises(ValueError, match=re.escape(f"{data / 'meta.json'} says {said} the data's tokenizer "
                                                   f"({data / 'tokenizer'}): they come from two runs of")):
        pretrain(tiny_cfg(data, tmp_path / "out", max_iters=1))
    assert not (tmp_path / "out" / STATE_FILE).exists()
    (data / "meta.json").write_text(json.dumps(meta | {"vocab_size": 320}))  # padded to a multiple of 64
    assert pretrain(tiny_cfg(data, tmp_path / "padded", max_iters=1))["step"] == 1


def test_train_loop_from_python_resumes_a_run_with_no_fingerprint_and_only_the_switches_asked_for(tmp_path, capsys):
    """Mutants R9-6/R9-8: train_loop switched every memory switch on, asked for or not (a model
    trained plainly came back with chunked_loss on: its forward with targets returned no logits);
    and check_data lost its `now is None` return, so train_loop called from Python, with no
    data_fingerprint, could not resume a run `minigpt train` saved (None merged as a dict), and
    noted, for a run it saved itself, a fingerprint that it would never check anyway."""
    data, out = make_data(tmp_path / "data"), tmp_path / "out"
    pretrain(tiny_cfg(data, out, max_iters=2))  # records the data's fingerprint
    tokens = load_tokens(data / "train.bin", VOCAB, 17)
    for step in (3, 4):  # resumes a state with a fingerprint, then one train_loop saved without
        cfg = tiny_cfg(data, out, max_iters=step, resume=True)
        model = build_model(cfg, VOCAB)
        capsys.readouterr()
        train.train_loop(model, cfg, lambda split, rng: sample_batch(tokens, 16, 4, rng))
        assert final_state(out)["step"] == step and final_state(out)["data"] is None
        assert "fingerprint" not in capsys.readouterr().err
        assert not model.chunked_loss and not model.gradient_checkpointing


def test_check_data_names_what_the_saved_fingerprint_has_and_the_data_now_lacks(tmp_path):
    """Mutant R9-9: check_data compared only the entries of the data now, so one the saved run's
    fingerprint has and this data's lacks (a split gone) was no difference. (Every driver gives
    both splits today: this is the function's own contract.)"""
    saved = {"vocab_size": 64, "train.bin tokens": 4000, "val.bin tokens": 600}
    cfg = SimpleNamespace(data="d", allow_new_data=False)
    assert minigpt.resume.check_data(tmp_path, saved, dict(saved), cfg) is None
    with pytest.raises(ValueError, match=r"\(val.bin tokens: 600 then, None now\)"):
        minigpt.resume.check_data(tmp_path, saved, {k: v for k, v in saved.items() if k != "val.bin tokens"}, cfg)


def test_only_the_main_process_prints_the_resume_notes(tmp_path, capsys):
    """Mutant R9-14: restore printed its notes (the schedule's, --allow-new-data's) on every
    process, not on rank 0 alone as its warning: under torchrun, each note once per process."""
    data, out = make_data(tmp_path / "data"), tmp_path / "out"
    pretrain(tiny_cfg(data, out, max_iters=4))
    cfg = tiny_cfg(data, out, max_iters=8, resume=True)  # the cosine stretched: step 5's rate changes
    model = build_model(cfg, VOCAB)
    optimizer = train.build_optimizer(model, cfg, torch.device("cpu"))
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    capsys.readouterr()
    for is_main in (True, False):
        rt = SimpleNamespace(device=torch.device("cpu"), is_main=is_main)
        minigpt.resume.restore(out, model, optimizer, scaler, cfg, rt)
        assert ("note: the learning rate of step 5" in capsys.readouterr().err) == is_main


def test_the_schedule_note_explains_the_stretched_cosine_only_when_both_runs_leave_lr_decay_iters_unset():
    """Mutants R9-21/R9-22: the note's "with --lr-decay-iters unset the cosine ends at --max-iters;
    pass --lr-decay-iters OLD_MAX" was given when this run sets --lr-decay-iters (then the cosine
    ends there, not at --max-iters), or when the saved run had set it (OLD_MAX was not its end)."""
    from minigpt.optimizer import schedule_note

    base = dict(lr=1e-3, min_lr=1e-4, warmup_iters=2, max_iters=6, lr_decay_iters=None)
    stretched = schedule_note(4, base, TrainConfig(**{**base, "max_iters": 12}))
    assert stretched.endswith("pass --lr-decay-iters 6 to keep the saved schedule (then --min-lr for every step after 6)")
    for saved, now in ((base, {"max_iters": 12, "lr_decay_iters": 9}), ({**base, "lr_decay_iters": 10}, {"max_iters": 12})):
        note = schedule_note(4, saved, TrainConfig(**{**base, **now}))
        assert note.startswith("note: the learning rate of step 5, the first one resumed, is ") and "--lr-decay-iters" not in note
    # An end-to-end audit: with a new --lr too, the note said --lr-decay-iters 6 would keep the saved
    # schedule, which the new --lr had changed.
    for change, said in (({"lr": 2e-3}, "--lr 0.002 (was 0.001)"),
                         ({"lr": 2e-3, "warmup_iters": 1}, "--lr 0.002 (was 0.001), --warmup-iters 1 (was 2)")):
        note = schedule_note(4, base, TrainConfig(**{**base, "max_iters": 12, **change}))
        assert note.endswith("now 12 instead of 6; --lr-decay-iters 6 would keep that end where it was, but not the saved "
                             f"schedule, which {said} changed too"), note


def test_data_named_as_a_prepared_file_outside_prepared_data_is_called_a_file(tmp_path):
    """Mutant R9-45: --data named like a file of prepared data (val.txt, say) was called "a file of
    the prepared data in its folder" without that folder's meta.json: a text file of one's own."""
    (tmp_path / "val.txt").write_text("Hello world.\n")
    with pytest.raises(ValueError, match=rf"^--data {tmp_path / 'val.txt'} is a file; --data is the folder `minigpt prepare`"):
        pretrain(tiny_cfg(tmp_path / "val.txt", tmp_path / "out"))


def test_a_second_run_in_an_out_dir_in_use_is_refused_and_a_killed_run_holds_it_no_more(tmp_path, capsys,
                                                                                       another_run_holds):
    """Bug (an audit): two runs in one OUT_DIR (a job launched twice, a requeue while the first
    still ran) both passed every check and trained side by side: a log with steps twice, and
    crashes on each other's temporary files. A run now holds OUT_DIR/.lock (an flock) while it
    runs: another is refused before it writes anything, as a new run, --resume or --auto-resume,
    by `minigpt train` or train_loop; and the lock dies with its process, so a killed run is resumed."""
    data, out = make_data(tmp_path / "data"), tmp_path / "out"
    pretrain(tiny_cfg(data, out, max_iters=6))  # a saved run, which a second process now holds as if it ran on

    def files() -> dict[str, bytes]:  # (but the lock's own, which the holder made)
        return {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != ".lock"}

    before = files()
    with another_run_holds(out):  # killed at the end, as a crash or kill -9 ends a run
        refused = f"{out.resolve()} is in use by another run, still going"
        for resume in ("--resume", "--auto-resume"):
            flags = ["--data", str(data), "--out", str(out), resume, "--max-iters", "12", "--device", "cpu"]
            assert train_main(flags) == 2
            assert refused in capsys.readouterr().err
        with pytest.raises(FileExistsError, match=refused):
            pretrain(tiny_cfg(data, out, max_iters=12, resume=True))
        with pytest.raises(FileExistsError, match=refused):  # train_loop from Python takes it too
            train.train_loop(GPT(GPTConfig(vocab_size=VOCAB, n_positions=16, n_embd=32, n_layer=1, n_head=2)),
                             tiny_cfg(data, out, resume=True), lambda split, rng: None)
        assert files() == before  # nothing written
    metrics = pretrain(tiny_cfg(data, out, max_iters=12, resume=True))  # the lock went with its process
    assert metrics["step"] == 12 and not (out / ".lock").exists()  # (the killed holder's file, taken and removed)


def test_best_follows_new_val_data_but_not_new_train_data(tmp_path, capsys):
    """Bug (an audit): after `--resume --allow-new-data` on other val data, the run kept its best
    val loss, measured on the old texts, and best/ could stay the old data's model however the
    new one scored. Other val data now starts best/ over, with a note; other train data alone
    (the same val texts, comparable losses) keeps it. The saved best is made unbeatable here, as
    a far easier val set would make it."""
    data, out = make_data(tmp_path / "data"), tmp_path / "out"
    pretrain(tiny_cfg(data, out, max_iters=6))

    def unbeatable() -> None:
        state = torch.load(out / STATE_FILE, weights_only=False)
        state["best_val_loss"] = -1.0
        torch.save(state, out / STATE_FILE)

    def best_step() -> int:
        return json.loads((out / "best" / "metrics.json").read_text())["step"]

    unbeatable()
    ids = np.fromfile(data / "train.bin", dtype=np.uint16)
    ids[100] = (ids[100] + 1) % VOCAB
    ids.tofile(data / "train.bin")  # other train data, the same val data
    capsys.readouterr()
    pretrain(tiny_cfg(data, out, max_iters=12, resume=True, allow_new_data=True))
    assert best_step() == 6 and "the val data differs" not in capsys.readouterr().err
    unbeatable()
    make_data(data, n_val=500)  # other val data
    pretrain(tiny_cfg(data, out, max_iters=18, resume=True, allow_new_data=True))
    assert ("note: the val data differs from the run's, whose best val loss (-1) measured other data: best/ follows "
            "this data's val loss from here") in capsys.readouterr().err
    assert best_step() == 18


def test_a_resume_measured_otherwise_before_any_evaluation_has_no_best_to_start_over(tmp_path, monkeypatch, capsys):
    """A mutation audit: best/ starts over when a resume measures val loss otherwise, but a run
    stopped before its first evaluation has no best val loss to set aside, and no note says
    "its best val loss (inf) is not comparable"."""
    data = make_data(tmp_path / "data")
    _interrupt_at_batch(monkeypatch, 9, signal.SIGTERM)  # during step 5: saved at 5, before the first evaluation (6)
    with pytest.raises(KeyboardInterrupt):
        pretrain(tiny_cfg(data, tmp_path / "stopped"))
    monkeypatch.undo()
    capsys.readouterr()
    assert train_main(["--out", str(tmp_path / "stopped"), "--resume", "--eval-iters", "3", "--max-iters", "6"]) == 0
    out = capsys.readouterr().err
    assert "resuming with settings that differ" in out and "not comparable" not in out, out


def test_a_run_ended_at_its_stop_logs_the_lr_its_last_step_ran_at(tmp_path, monkeypatch, capsys):
    """Bug (an audit): ending a run stopped at step S with `--resume --max-iters S` logged the lr
    of step S under the new, shorter schedule (whose decay then ends at S), not the lr step S
    ran at, under the run's schedule of 12 steps."""
    data = make_data(tmp_path / "data")
    _interrupt_at_batch(monkeypatch, 9, signal.SIGTERM)  # during step 5: saved at 5, between evaluations (every 6)
    with pytest.raises(KeyboardInterrupt):
        pretrain(tiny_cfg(data, tmp_path / "stopped"))
    monkeypatch.undo()
    assert train_main(["--out", str(tmp_path / "stopped"), "--resume", "--max-iters", "5"]) == 0
    record = [r for r in read_log(tmp_path / "stopped") if r["step"] == 5 and "loss" in r][-1]
    ran_at = lr_at(4, tiny_cfg(data, tmp_path / "stopped"))  # step 5 is lr_at(4): steps count from 0 there
    assert record["lr"] == pytest.approx(ran_at, rel=1e-12)
    assert ran_at != pytest.approx(lr_at(4, tiny_cfg(data, tmp_path / "stopped", max_iters=5)))  # (the schedules differ there)


def test_a_new_run_refuses_an_out_dir_holding_a_tokenizer(tmp_path):
    """Bug (an audit): a new run into a directory holding only a tokenizer (transformers'
    tokenizer.json + tokenizer_config.json) took it for unrelated files: its checkpoints replaced
    tokenizer_config.json and wrote the data's vocab.json + merges.txt beside the old
    tokenizer.json, which transformers and minigpt read first: silently other ids."""
    data, out = make_data(tmp_path / "data"), tmp_path / "out"
    out.mkdir()
    (out / "tokenizer.json").write_text("{}")
    (out / "tokenizer_config.json").write_text("{}")
    with pytest.raises(FileExistsError, match=re.escape(f"{out} holds a tokenizer (tokenizer.json, tokenizer_config.json), "
                                                        "which the run's checkpoints would replace")):
        pretrain(tiny_cfg(data, out, max_iters=2))
    assert sorted(p.name for p in out.iterdir()) == ["tokenizer.json", "tokenizer_config.json"]  # untouched


def test_a_bare_resume_after_the_data_moved_says_to_pass_data(tmp_path, capsys):
    """An audit: it said only "--data ... does not exist", where --data with the new place resumes."""
    data, out = make_data(tmp_path / "data"), tmp_path / "out"
    pretrain(tiny_cfg(data, out, max_iters=2))
    data.rename(tmp_path / "moved")
    capsys.readouterr()
    assert train_main(["--out", str(out), "--resume", "--max-iters", "3"]) == 2
    assert "; if the run's data has moved, pass --data with where it is now" in capsys.readouterr().err
    assert train_main(["--out", str(out), "--resume", "--max-iters", "3", "--data", str(tmp_path / "moved")]) == 0


def test_a_bare_resume_needs_no_init_checkpoint_and_ends_as_an_unbroken_run(tmp_path):
    """An audit: a run started with --init could not resume once that checkpoint had moved
    ("checkpoint directory ... does not exist"), though training_state.pt holds every weight it
    needs; it read --init only to overwrite it. It now loads the run's own checkpoint in OUT_DIR."""
    GPT(GPTConfig(vocab_size=VOCAB, n_positions=32, n_embd=32, n_layer=1, n_head=2, bos_token_id=VOCAB - 1,
                  eos_token_id=VOCAB - 1)).save_pretrained(tmp_path / "start")
    data = make_data(tmp_path / "data")
    flags = ["--data", str(data), "--init", str(tmp_path / "start"), "--block-size", "16", "--batch-size", "2",
             "--eval-iters", "1", "--eval-interval", "2", "--warmup-iters", "1", "--dropout", "0.1", "--device", "cpu"]
    assert train_main([*flags, "--out", str(tmp_path / "whole"), "--max-iters", "4"]) == 0
    assert train_main([*flags, "--out", str(tmp_path / "broken"), "--max-iters", "2"]) == 0
    (tmp_path / "start").rename(tmp_path / "moved")
    assert train_main(["--out", str(tmp_path / "broken"), "--resume", "--max-iters", "4"]) == 0
    whole, resumed = final_state(tmp_path / "whole")["model"], final_state(tmp_path / "broken")["model"]
    assert whole.keys() == resumed.keys() and all(torch.equal(whole[k], resumed[k]) for k in whole)


def test_a_block_size_the_model_cannot_take_is_refused_before_its_weights_are_made(tmp_path, monkeypatch):
    """An audit: --block-size above n_positions was checked once the model was built or loaded
    (3 s and 1.4 GB for gpt2-medium; gpt2-xl's 6 GB). It is read from the config first now."""
    data = make_data(tmp_path / "data")
    GPT(GPTConfig(vocab_size=VOCAB, n_positions=32, n_embd=32, n_layer=1, n_head=2, bos_token_id=VOCAB - 1,
                  eos_token_id=VOCAB - 1)).save_pretrained(tmp_path / "start")

    class NoWeights:  # stands for GPT: making or loading weights fails the test
        def __init__(self, *args, **kwargs):
            raise AssertionError("weights made before the block size was checked")

        @classmethod
        def from_pretrained(cls, *args, **kwargs):
            raise AssertionError("weights loaded before the block size was checked")

    monkeypatch.setattr("minigpt.pretrain.GPT", NoWeights)
    init = dict(init=str(tmp_path / "start"), preset=None, n_layer=None, n_head=None, n_embd=None)
    with pytest.raises(ValueError, match=r"block_size 33 must be in \[1, n_positions=32\]"):
        pretrain(tiny_cfg(data, tmp_path / "a", **{**init, "block_size": 33}))
    with pytest.raises(ValueError, match=r"block_size 129 must be in \[1, n_positions=128\]"):  # gpt2-tiny's 128
        pretrain(tiny_cfg(data, tmp_path / "b", block_size=129))


def test_a_fresh_model_trained_on_shorter_windows_is_told_and_n_positions_makes_it_that_long(tmp_path, capsys):
    """An audit: gpt2-tiny trained with --block-size 16 kept n_positions 128, and positions 16-127
    never trained (eval scored 128-token windows, generate ran past 16 tokens on random position
    embeddings) without a word. A note says so, and --n-positions makes the model that long."""
    data = make_data(tmp_path / "data")
    pretrain(tiny_cfg(data, tmp_path / "long", max_iters=1))
    assert ("note: positions 16-127 of this fresh model never train (--block-size 16): text generated or scored past 16 "
            "tokens reads random position embeddings. --n-positions 16 makes a model of that context") in capsys.readouterr().err
    pretrain(tiny_cfg(data, tmp_path / "long", max_iters=2, resume=True))  # said once, when the run started (an audit)
    assert "note: positions" not in capsys.readouterr().err
    pretrain(tiny_cfg(data, tmp_path / "short", max_iters=1, n_positions=16))
    assert "note: positions" not in capsys.readouterr().err
    assert GPT.from_pretrained(tmp_path / "short").config.n_positions == 16
    init = dict(init=str(tmp_path / "short"), preset=None, n_layer=None, n_head=None, n_embd=None)
    with pytest.raises(ValueError, match="--n-positions cannot change the shape of the --init checkpoint"):
        pretrain(tiny_cfg(data, tmp_path / "again", **init, n_positions=32))


def test_a_fresh_model_records_its_block_size_as_its_tokenizers_model_max_length(tmp_path, capsys):
    """An eval audit: gpt2-tiny trained from scratch with --block-size 16 saved n_positions (128) as
    its tokenizer's model_max_length, so `minigpt eval` scored 128-token windows, 112 positions of which
    never trained, and transformers' truncation=True cut there too. The block size is saved instead,
    by a resumed run as well (here over a checkpoint that says 128, as one saved before the fix did),
    and the note says so. A run from --init keeps what its model learned before, as the --init
    records it (a review: a fresh short-window model as --init gave its copy 128), or its own
    windows where they reach further; a resumed one keeps what it recorded."""
    data = add_tokenizer(make_data(tmp_path / "data"), Tokenizer.train("ab", vocab_size=257, progress=False))
    out = tmp_path / "fresh"
    pretrain(tiny_cfg(data, out, max_iters=1, eval_iters=1))
    assert ("--n-positions 16 makes a model of that context. Its checkpoints save 16 as their tokenizer's "
            "model_max_length, so `minigpt eval` scores windows of 16 tokens") in capsys.readouterr().err
    assert Tokenizer.from_pretrained(out).model_max_length == 16
    saved = json.loads((out / "tokenizer_config.json").read_text())
    (out / "tokenizer_config.json").write_text(json.dumps({**saved, "model_max_length": 128}))
    pretrain(tiny_cfg(data, out, max_iters=2, eval_iters=1, resume=True))
    assert Tokenizer.from_pretrained(out).model_max_length == 16
    init = dict(init=str(out), preset=None, n_layer=None, n_head=None, n_embd=None)
    pretrain(tiny_cfg(data, tmp_path / "from_init", max_iters=1, eval_iters=1, **init))
    assert "note: positions" not in capsys.readouterr().err
    assert Tokenizer.from_pretrained(tmp_path / "from_init").model_max_length == 16  # as the --init records
    pretrain(tiny_cfg(data, tmp_path / "longer", max_iters=1, eval_iters=1, block_size=32, **init))
    assert Tokenizer.from_pretrained(tmp_path / "longer").model_max_length == 32  # this run's windows reach further
    out.rename(tmp_path / "moved")  # a resumed run keeps its own record, its --init gone (a review: it fell to 128)
    pretrain(tiny_cfg(data, tmp_path / "from_init", max_iters=2, eval_iters=1, resume=True, **init))
    assert Tokenizer.from_pretrained(tmp_path / "from_init").model_max_length == 16
    (tmp_path / "moved").rename(out)
    (out / "tokenizer_config.json").write_text(json.dumps({**saved, "model_max_length": 128}))
    pretrain(tiny_cfg(data, tmp_path / "from_full", max_iters=1, eval_iters=1, **init))
    assert Tokenizer.from_pretrained(tmp_path / "from_full").model_max_length == 128  # all of gpt2-tiny's positions


def test_loss_curves_start_the_val_curve_over_where_a_resume_measures_it_otherwise():
    """A trainer's audit: a resume with another --batch-size said its val loss was not comparable
    (best/ started over), but loss.png joined the val points on either side with one line, and
    showed no resume. The val curves (loss, and a classifier's accuracy) start over there, in the
    same colour and legend entry; each resume is a dotted line; train loss stays one line."""
    from minigpt.run_log import curves

    records = [{"step": 0, "run": "start", "config": {}}, {"step": 1, "loss": 3.0}, {"step": 2, "loss": 2.8, "val_loss": 2.9,
               "val_accuracy": 0.5}, {"step": 2, "run": "resume", "config": {}}, {"step": 2, "best_reset": True},
               {"step": 3, "loss": 2.7}, {"step": 4, "loss": 2.6, "val_loss": 2.1, "val_accuracy": 0.6},
               {"step": 6, "loss": 2.5, "val_loss": 2.0, "val_accuracy": 0.7}]
    left, right = curves(records, "run").axes
    lines = [(list(line.get_xdata()), line.get_label(), line.get_color()) for line in left.lines]
    train, val_before, val_after, resume = lines
    assert train[:2] == ([1, 2, 3, 4, 6], "train")
    assert (val_before[0], val_after[0]) == ([2], [4, 6]) and val_before[2] == val_after[2]
    assert val_before[1] == "val" and val_after[1].startswith("_")  # one legend entry
    assert resume[0] == [2, 2] and resume[1] == "resume"
    assert [list(line.get_xdata()) for line in right.lines] == [[2], [4, 6]]
    assert [t.get_text() for t in left.get_legend().get_texts()] == ["train", "val", "resume", "val accuracy"]
    # A reset at a step evaluated after it (a stopped run resumed to end at that step, `end_stopped_run`):
    # the log's order, not the step, says which side a point is on (a review).
    records = [{"step": 2, "loss": 3.0, "val_loss": 2.9}, {"step": 4, "best_reset": True},
               {"step": 4, "run": "resume", "config": {}}, {"step": 4, "val_loss": 2.5}]
    (left,) = curves(records, "run").axes
    assert [list(line.get_xdata()) for line in left.lines if line.get_marker() == "o"] == [[2], [4]]


def test_a_resume_with_shorter_windows_keeps_the_length_its_earlier_sessions_trained(tmp_path):
    """A trainer's audit: a fresh model trained 60 steps on 64-token windows, resumed for 2 more on
    32, recorded 32 as its model_max_length, so `minigpt eval` scored 32-token windows and said
    positions 32-63 never trained. The longest windows of the run's sessions are kept (its log's
    opening records), but not those of a session whose steps were thrown away (killed before its
    checkpoint: its opening lies at the saved step)."""
    data = add_tokenizer(make_data(tmp_path / "data"), Tokenizer.train("ab", vocab_size=257, progress=False))
    out = tmp_path / "run"
    pretrain(tiny_cfg(data, out, max_iters=2, eval_iters=1, block_size=32))
    pretrain(tiny_cfg(data, out, max_iters=3, eval_iters=1, block_size=16, resume=True))
    assert Tokenizer.from_pretrained(out).model_max_length == 32
    short = tmp_path / "short"
    pretrain(tiny_cfg(data, short, max_iters=2, eval_iters=1, block_size=16))
    with (short / "log.jsonl").open("a") as f:  # a session at 48 that saved nothing, as a kill leaves it
        f.write(json.dumps({"step": 2, "run": "resume", "config": {"block_size": 48}}) + "\n")
    pretrain(tiny_cfg(data, short, max_iters=3, eval_iters=1, block_size=24, resume=True))
    assert Tokenizer.from_pretrained(short).model_max_length == 24
    # Past that step too (a review): the 48's record stays in the log, at step 2, before the 24's.
    pretrain(tiny_cfg(data, short, max_iters=4, eval_iters=1, block_size=20, resume=True))
    assert Tokenizer.from_pretrained(short).model_max_length == 24


def test_a_training_state_that_cannot_be_written_is_one_line_naming_it(tmp_path, monkeypatch, capsys):
    """A reviewer's full disk: torch.save's zip writer failed it as a RuntimeError ("[enforce fail
    at inline_container.cc:672] . unexpected pos ..."), which ended the run in a traceback naming no file."""
    def full(obj, f, *args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 12544 vs 12438")

    monkeypatch.setattr(torch, "save", full)
    data, out = make_data(tmp_path / "data"), tmp_path / "out"
    assert train_main(["--data", str(data), "--out", str(out), "--preset", "gpt2-tiny", "--n-layer", "1", "--n-head", "2",
                       "--n-embd", "32", "--block-size", "16", "--max-iters", "2", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "error: [Errno 5] could not write it (" in err and f"is the disk full?: '{out / STATE_FILE}'" in err, err
    assert "Traceback" not in err and not (out / STATE_FILE).exists()


def test_the_run_lock_leaves_nothing_behind_and_goes_without_flock(tmp_path, monkeypatch, capsys):
    """A reviewer: a run refused at once left the parents it made for OUT_DIR (the lock made
    them first), and a file system without flock (ENOLCK) stopped every run. Now the directories
    made go again if empty, and without flock the run goes on unguarded, with a warning."""
    data = make_data(tmp_path / "data")
    with pytest.raises(ValueError, match="block_size 999 must be in"):
        pretrain(tiny_cfg(data, tmp_path / "nest" / "a" / "b", block_size=999))
    assert not (tmp_path / "nest").exists()

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(minigpt.files.fcntl, "flock", no_locks)
    out = tmp_path / "out"
    assert pretrain(tiny_cfg(data, out, max_iters=2))["step"] == 2
    assert f"warning: cannot lock {out.resolve() / '.lock'} (No locks available)" in capsys.readouterr().err
    assert not (out / ".lock").exists()


def test_a_run_refused_as_in_use_has_touched_nothing_of_the_live_run(tmp_path, capsys, another_run_holds):
    """The lock is taken at `minigpt train`'s first look at OUT_DIR, before check_out_dir: a
    --resume given while a run still goes before its first checkpoint would otherwise take it for
    one that died, and set its live log aside as log.lost.jsonl (a mutation audit's case)."""
    data, out = make_data(tmp_path / "data"), tmp_path / "out"
    out.mkdir()
    log = json.dumps({"step": 2, "loss": 5.0}) + "\n"
    (out / "log.jsonl").write_text(log)  # a run still before its first checkpoint
    with another_run_holds(out):
        assert train_main(["--data", str(data), "--out", str(out), "--resume", "--preset", "gpt2-tiny",
                           "--max-iters", "2", "--device", "cpu"]) == 2
        assert "is in use by another run, still going" in capsys.readouterr().err
        assert (out / "log.jsonl").read_text() == log and not list(out.glob("log.lost*.jsonl"))


def test_no_best_reset_note_before_any_evaluation(tmp_path, monkeypatch, capsys):
    """Other val data on --resume --allow-new-data starts best/ over, with a note; a run stopped
    before its first evaluation has no best to start over, and printed "best val loss (inf)"."""
    data, out = make_data(tmp_path / "data"), tmp_path / "out"
    _interrupt_at_batch(monkeypatch, 5, signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        pretrain(tiny_cfg(data, out, eval_interval=100))
    monkeypatch.undo()
    assert final_state(out)["best_val_loss"] == math.inf
    make_data(data, n_val=500)  # other val data
    capsys.readouterr()
    pretrain(tiny_cfg(data, out, eval_interval=100, max_iters=4, resume=True, allow_new_data=True))
    assert "best/ follows" not in capsys.readouterr().err


def test_the_run_lock_is_taken_on_the_file_that_is_there(tmp_path, monkeypatch):
    """A run's lock file goes as the run ends. One who opened it just before then, and locked it
    just after, holds a lock on a removed file, while a third locks the new one: both would run.
    run_dir_lock checks that the file it locked is the one there (a mutation audit found that
    untested): here the file is removed between the open and the flock, as such a holder would."""
    out = tmp_path / "out"
    out.mkdir()
    real, raced = minigpt.files.fcntl.flock, []

    def racing(fd, operation):
        if not raced:
            raced.append(1)
            (out / ".lock").unlink()  # the last holder, ending
        return real(fd, operation)

    monkeypatch.setattr(minigpt.files.fcntl, "flock", racing)
    other = ("import sys; from minigpt.run_dir import run_dir_lock\n"
             "with run_dir_lock(sys.argv[1]):\n    print('the other run got in')")
    with minigpt.run_dir.run_dir_lock(out):
        assert raced
        proc = subprocess.run([sys.executable, "-c", other, str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "is in use by another run" in proc.stderr, proc.stdout + proc.stderr


def test_the_run_lock_is_taken_when_the_last_holder_removed_the_folder_meanwhile(tmp_path, monkeypatch):
    """A run's lock removes the folders it made as it ends: one who made the folder just before,
    and opens its lock file just after, found no folder, and its run went on unguarded (a
    reader's simulation). The folder is made again, and the lock taken."""
    out, real, raced = tmp_path / "out", os.open, []

    def racing(path, *args, **kwargs):
        if not raced:
            raced.append(1)
            out.rmdir()  # the last holder, ending
        return real(path, *args, **kwargs)

    monkeypatch.setattr(minigpt.files.os, "open", racing)
    with minigpt.run_dir.run_dir_lock(out):
        monkeypatch.undo()
        assert raced and (out / ".lock").exists()


def test_a_run_killed_after_its_last_checkpoint_before_its_curve_gets_the_curve_on_resume(tmp_path):
    """The last checkpoint saves training_state.pt, then draws loss.png: a kill between the two
    left a finished run whose curve stops at the evaluation before (or is missing), and --resume,
    finding nothing to train, never drew it."""
    cfg = tiny_cfg(make_data(tmp_path / "data"), tmp_path / "out", eval_interval=0)
    pretrain(cfg)
    (tmp_path / "out" / "loss.png").unlink()  # what the kill leaves
    pretrain(tiny_cfg(tmp_path / "data", tmp_path / "out", eval_interval=0, resume=True))
    assert (tmp_path / "out" / "loss.png").exists()


# ---- torchrun's arithmetic, one process standing in for one of two (a mutation audit: each of
# these could be wrong with every DDP test passing) ----


def test_train_step_counts_the_tokens_of_every_process(tmp_path):
    """tokens_per_s (and MFU from it) is the whole run's: one process of 2 counts both processes'
    tokens. A one-process gloo group stands in for torchrun's (train_step's only collective is an
    all_reduce)."""
    import torch.distributed as dist

    from minigpt.optimizer import build_optimizer
    from minigpt.train_runtime import Runtime

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        cfg = TrainConfig(preset="gpt2-tiny", n_layer=1, n_head=2, n_embd=32, batch_size=2, grad_accum=2,
                          block_size=8, device="cpu")  # 2 micro-batches in all: 1 per process
        model = build_model(cfg, 64)
        rt = Runtime(rank=0, world=2, device=torch.device("cpu"), dtype=torch.float32)
        def batch(split, rng):
            return (torch.randint(64, (2, 8), generator=rng), torch.randint(64, (2, 8), generator=rng))
        _, _, tokens = train.train_step(model, build_optimizer(model, cfg, rt.device),
                                        torch.amp.GradScaler("cpu", enabled=False), batch, train.lm_loss, cfg, rt, step=0)
        assert tokens == 2 * 8 * 2  # this process's micro-batch, times the 2 processes
    finally:
        dist.destroy_process_group()


def test_mfu_is_the_runs_flops_over_the_peak_of_all_its_gpus(tmp_path, monkeypatch):
    """Under torchrun tokens_per_s counts every process's tokens, so MFU divides by every GPU's
    peak: 2 processes at 50% each log 0.5, not 1.0. One process of 2 runs here, on a 'GPU' whose
    peak is patched in."""
    import torch.distributed as dist

    from minigpt.train_runtime import Runtime

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        monkeypatch.setattr(train, "setup_runtime", lambda cfg: Runtime(0, 2, torch.device("cpu"), torch.float32))
        monkeypatch.setattr(train, "peak_flops", lambda device: 1e9)
        cfg = TrainConfig(out=str(tmp_path / "out"), preset="gpt2-tiny", n_layer=1, n_head=2, n_embd=32, batch_size=2,
                          grad_accum=2, block_size=8, max_iters=1, warmup_iters=1, eval_interval=0, eval_iters=1,
                          log_interval=1, device="cpu")
        tokens = np.arange(1000) % 64
        train.train_loop(build_model(cfg, 64), cfg, lambda split, rng: sample_batch(tokens, 8, 2, rng), train.lm_loss,
                         flops_per_token=1e6)
        rec = [r for r in read_log(tmp_path / "out") if "mfu" in r][0]
        assert rec["mfu"] == pytest.approx(1e6 * rec["tokens_per_s"] / (2 * 1e9))
    finally:
        dist.destroy_process_group()


def test_processes_that_all_got_sigterm_agree_on_sigterm(monkeypatch):
    """torchrun forwards SIGTERM to every worker: the agreed signal is SIGTERM (exit 143), and
    SIGTERM outranks another's Ctrl-C. The all_reduce stands in for the peer's value, combining as
    the op asks (SUM would agree on 30, exit 158)."""
    from minigpt.train_runtime import Runtime, StopSignal

    rt = Runtime(rank=0, world=2, device=torch.device("cpu"), dtype=torch.float32)
    for mine, peer, agreed in ((15, 15, 15), (2, 15, 15), (15, 2, 15), (0, 2, 2), (0, 0, 0)):
        def all_reduce(t, op, peer=peer):
            both = torch.stack([t, torch.tensor(float(peer), dtype=t.dtype)])
            t.copy_(both.max() if op == train_runtime.dist.ReduceOp.MAX else both.sum())
        monkeypatch.setattr(train_runtime.dist, "all_reduce", all_reduce)
        stop = StopSignal()
        stop.signum = mine
        assert stop.agreed(rt) == agreed, (mine, peer)


def test_each_process_evaluates_its_own_share_of_the_val_batches(monkeypatch):
    """Under torchrun process r of W evaluates val batches r, r + W, ...: together every batch once
    (the all_reduce that adds the shares is left out: each process's own share is checked)."""
    from minigpt.train_runtime import Runtime

    monkeypatch.setattr(train.dist, "all_reduce", lambda t: None)
    cfg = TrainConfig(eval_iters=5, seed=0)
    seeds = {train.seed_for(cfg.seed, train.EVAL_STREAM, k): k for k in range(cfg.eval_iters)}
    for rank, expected in ((0, [0, 2, 4]), (1, [1, 3])):
        drawn = []
        def get_batch(split, rng):
            return drawn.append(seeds[rng.initial_seed()]) or (torch.zeros(1, 2, dtype=torch.long),) * 2
        def loss_fn(model, x, y):
            return torch.tensor(float(drawn[-1]))  # batch k's loss is k
        loss = train.estimate_val_loss(torch.nn.Linear(1, 1), cfg, get_batch, loss_fn,
                                       Runtime(rank, 2, torch.device("cpu"), torch.float32))
        assert drawn == expected and loss == pytest.approx(sum(expected) / len(expected))


def test_rank_0_raises_its_own_error_under_torchrun(monkeypatch):
    """on_rank_0: rank 0 says why its work failed (a full disk); the others get PeerFailed, which
    prints nothing."""
    from minigpt.train_runtime import Runtime, on_rank_0

    monkeypatch.setattr(train_runtime.dist, "broadcast", lambda t, src: None)  # rank 0 sends; nothing to receive

    def work():
        raise OSError(28, "No space left on device", "out")

    with pytest.raises(OSError, match="No space left"):
        on_rank_0(Runtime(0, 2, torch.device("cpu"), torch.float32), work)


def test_torchrun_prints_the_result_once(tmp_path):
    """The result is one JSON line on stdout, from rank 0 only (every rank's train_loop returns the metrics)."""
    data = make_data(tmp_path / "data")
    proc = torchrun("train", "--data", str(data), "--preset", "gpt2-tiny", "--n-layer", "1", "--n-head", "2",
                    "--n-embd", "32", "--block-size", "16", "--batch-size", "2", "--grad-accum", "2", "--max-iters", "1",
                    "--eval-interval", "0", "--eval-iters", "1", "--device", "cpu", "--out", str(tmp_path / "out"))
    results = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(results) == 1 and json.loads(results[0])["step"] == 1, proc.stdout


# ---- a stray RANK, a peer killed, no matplotlib, the --resume of Python callers (an audit) ----


@pytest.mark.parametrize("env, said", [
    ({"RANK": "1"}, "RANK=1 is set but WORLD_SIZE is not (or is 1): unset RANK, or launch with torchrun"),
    ({"RANK": "1", "WORLD_SIZE": "1"}, "RANK=1 is set but WORLD_SIZE is not (or is 1)"),
    ({"RANK": "2", "WORLD_SIZE": "2"}, "RANK=2 is set, outside 0..1 (WORLD_SIZE=2)"),
    ({"WORLD_SIZE": "two"}, "WORLD_SIZE='two' is set, not a whole number"),
])
def test_a_stray_rank_is_refused_before_any_work(tmp_path, monkeypatch, capsys, env, said):
    """An audit: a RANK left in the environment of a plain run (no torchrun) made it "rank 1" of a
    run of one process: it trained, wrote nothing (rank 0 alone writes OUT_DIR) and exited 0."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    out = tmp_path / "out"
    assert train_main(["--data", str(make_data(tmp_path / "data")), "--out", str(out), "--preset", "gpt2-tiny",
                       "--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--block-size", "16", "--max-iters", "2",
                       "--device", "cpu"]) == 2
    assert f"minigpt train: error: {said}" in capsys.readouterr().err
    assert not out.exists()


def test_one_gpu_index_under_torchrun_is_refused(tmp_path, monkeypatch, capsys):
    """An audit: under torchrun `--device cuda:1` was silently replaced by each process's
    cuda:LOCAL_RANK. It is refused before the processes join (so no GPU is needed to see it)."""
    for name, value in {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(name, value)
    out = tmp_path / "out"
    assert train_main(["--data", str(make_data(tmp_path / "data")), "--out", str(out), "--preset", "gpt2-tiny",
                       "--grad-accum", "2", "--device", "cuda:1"]) == 2
    err = capsys.readouterr().err
    assert "error: --device cuda:1: under torchrun each process takes the GPU of its LOCAL_RANK; pass --device cuda" in err
    assert not out.exists()


def test_a_plain_run_says_its_errors_whatever_local_rank_a_shell_left(tmp_path, monkeypatch, capsys):
    """An audit: with a stray LOCAL_RANK=1 a plain run's error (a missing --data) was not said at
    all, exit code 2 and no word: LOCAL_RANK picks the process that speaks only under torchrun."""
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert train_main(["--data", str(tmp_path / "none"), "--out", str(tmp_path / "out"), "--device", "cpu"]) == 2
    assert f"--data {tmp_path / 'none'} does not exist" in capsys.readouterr().err


RANK_1_KILLED = """
import os, signal, sys
import minigpt.pretrain

real, calls = minigpt.pretrain.sample_batch, [0]


def sample(tokens, *args):  # rank 1 is killed at once, as by the OOM killer, after its first checkpoint
    calls[0] += 1
    if os.environ["RANK"] == "1" and calls[0] == 6:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(tokens, *args)


minigpt.pretrain.sample_batch = sample
sys.exit(minigpt.pretrain.main(sys.argv[1:]))
"""


def test_a_peer_killed_without_a_word_is_said_in_one_line_with_what_is_left(tmp_path):
    """An audit: a torchrun worker SIGKILLed (the OOM killer) could say nothing, and the process
    whose collective it broke printed ~30 lines of gloo's traceback ("Read error ...: Connection
    reset by peer"), not what was saved. Now that process says in one line that a peer is gone
    and that the last checkpoint stands, for --resume."""
    script = tmp_path / "rank_1_killed.py"
    script.write_text(RANK_1_KILLED)
    out = tmp_path / "out"
    proc = torchrun("--data", str(make_data(tmp_path / "data")), "--preset", "gpt2-tiny", "--n-layer", "1",
                    "--n-head", "2", "--n-embd", "32", "--block-size", "16", "--batch-size", "2", "--grad-accum", "2",
                    "--max-iters", "8", "--eval-interval", "2", "--eval-iters", "1", "--device", "cpu",
                    "--out", str(out), script=script, fails=True)
    said = [line for line in proc.stderr.splitlines() if "another process of this run ended" in line]
    assert said == ["minigpt train (rank 0): " + train_runtime.PEER_LOST], proc.stderr
    assert "by peer" not in proc.stderr and "pair.cc" not in proc.stderr, proc.stderr
    assert root_cause(proc) == ("1", "-9")  # torchrun's report names the process killed
    assert torch.load(out / STATE_FILE, weights_only=True)["step"] >= 2  # the checkpoint the line says stands


def test_a_run_without_matplotlib_trains_on_without_its_curve(tmp_path, monkeypatch, capsys):
    """An audit: without matplotlib (or with one that fails to import) a run died at its first
    evaluation with a traceback. loss.png is a side product (log.jsonl holds the numbers): the run
    says once that it is not drawn, and trains to its end."""
    monkeypatch.setattr(minigpt.run_log, "_curve_skipped", set())
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` raises ImportError
    out = tmp_path / "out"
    pretrain(tiny_cfg(make_data(tmp_path / "data"), out))  # evaluations at steps 6 and 12
    warnings = [line for line in capsys.readouterr().err.splitlines() if "loss.png is not drawn" in line]
    assert len(warnings) == 1 and "matplotlib" in warnings[0], warnings
    assert final_state(out)["step"] == 12 and not (out / "loss.png").exists()


def test_a_curve_that_cannot_be_saved_is_skipped_with_its_figure_closed(tmp_path, monkeypatch, capsys):
    """The other side of the audit above: a failure while saving loss.png (a full disk) is a warning
    too, and leaves neither a loss.png nor an open figure (pyplot would keep one per evaluation)."""
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    def full_disk(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(minigpt.run_log, "_curve_skipped", set())
    monkeypatch.setattr(Figure, "savefig", full_disk)
    (tmp_path / "log.jsonl").write_text(json.dumps({"step": 1, "loss": 5.0}) + "\n")
    minigpt.run_log.plot_log(tmp_path)
    assert "No space left on device" in capsys.readouterr().err
    assert not (tmp_path / "loss.png").exists() and plt.get_fignums() == []


def test_an_out_dir_holding_a_run_names_resume_for_python_callers_too(tmp_path):
    """An audit: `pretrain` or `finetune` called from Python a second time on the same OUT_DIR was
    told to "pass --resume", a flag Python has not: the config field is resume=True."""
    (tmp_path / STATE_FILE).write_text("{}")
    with pytest.raises(FileExistsError, match=re.escape("pass --resume (resume=True in Python) to continue")):
        minigpt.run_dir.check_out_dir(out_cfg(str(tmp_path)))


def test_a_resume_refusal_shows_an_empty_setting_as_quotes():
    """A review: a run saved with no hidden head layer (--head-hidden "") was named "a --head-hidden
    run", its value lost in the double space."""
    from minigpt.train_config import refuse_changes

    with pytest.raises(ValueError, match=r'the run in out is a --head-hidden "" run, .*: drop --head-hidden 8,'):
        refuse_changes("out", {"head_hidden": ""}, {"head_hidden": "8"}, ("head_hidden",))


# ---- what a finished run says, and a note on emulated bf16 (an end-to-end audit) ----


def test_a_finished_run_names_best_and_the_next_commands_on_stderr(tmp_path, capsys):
    """An audit: `minigpt train` ended with the JSON result alone, naming neither best/ nor its
    step and val loss, nor what to run next. The result stays stdout's last line (scripts parse it);
    the line for people is on stderr. The test data has no tokenizer, so the commands need one."""
    data, out = make_data(tmp_path / "data"), tmp_path / "out"
    cfg = {k: v for k, v in vars(tiny_cfg(data, out, max_iters=4, eval_interval=2)).items() if v is not None and v is not False}
    assert train_main([f"--{k.replace('_', '-')}={v}" for k, v in cfg.items()]) == 0
    said = capsys.readouterr()
    best = json.loads((out / "best" / "metrics.json").read_text())
    model = f"{out / 'best'} --tokenizer TOKENIZER_DIR"
    assert said.err.splitlines()[-1] == (f"best: {out / 'best'} (step {best['step']}, val loss {best['val_loss']:.4g}); "
                                         f"latest: {out}; next: minigpt generate --model {model}, minigpt eval {model} FILE")
    assert json.loads(said.out.splitlines()[-1])["best_val_loss"] == best["val_loss"]
    # Resumed as it was, done (a trainer's audit): the same result line again, not {"step", "best_val_loss"} alone.
    assert train_main(["--out", str(out), "--resume"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == said.out.splitlines()[-1]


def test_handoff_names_only_what_the_run_left(tmp_path):
    """A classifier is scored on a labelled TSV file and generates nothing; without best/ (no
    evaluation improved on +inf) the commands take OUT_DIR; a model saved with its tokenizer needs
    no --tokenizer; a path with a space is quoted for the shell."""
    from minigpt.classifier import GPTClassifier

    gpt = GPT(GPTConfig(vocab_size=VOCAB, n_positions=32, n_embd=32, n_layer=1, n_head=2))
    out = tmp_path / "my run"
    (out / "best").mkdir(parents=True)
    (out / "vocab.json").write_text("{}")
    assert train.handoff(out, gpt) == (f"latest: {out}; next: minigpt generate --model '{out}', minigpt eval '{out}' FILE")
    (out / "best" / "metrics.json").write_text(json.dumps({"step": 6, "val_loss": 0.51234, "val_accuracy": 0.875}))
    (out / "best" / "vocab.json").write_text("{}")
    assert train.handoff(out, GPTClassifier(gpt, 2)) == (f"best: {out / 'best'} (step 6, val loss 0.5123, val accuracy "
                                                         f"0.875); latest: {out}; next: minigpt eval '{out / 'best'}' FILE.tsv")


@pytest.mark.parametrize("native", [False, True])
def test_bf16_on_a_cpu_that_emulates_it_says_float32_is_faster(tmp_path, monkeypatch, capsys, native):
    """An audit: --dtype bfloat16 on a CPU without AVX-512 (an AVX2 AMD EPYC) trained ~9x slower
    than float32, and nothing said so. linear.py's ONEDNN_BF16 (oneDNN has bf16 kernels here) decides."""
    import minigpt.linear as linear

    monkeypatch.setattr(linear, "ONEDNN", True)  # an x86 CPU with oneDNN, as the audit's (whatever runs the test)
    monkeypatch.setattr(linear, "ONEDNN_BF16", native)
    pretrain(tiny_cfg(make_data(tmp_path / "data"), tmp_path / "out", max_iters=1, dtype="bfloat16"))
    notes = [line for line in capsys.readouterr().err.splitlines() if "emulated" in line]
    assert notes == ([] if native else ["note: --dtype bfloat16 on this CPU, which has no AVX-512: its bf16 matmuls are "
                                        "emulated, several times slower than float32's; --dtype float32 trains faster here"])


def _best_dirs(out: Path) -> dict[str, int | None]:
    """The best/ folders in OUT_DIR, each with the step of its metrics.json (None: none to read)."""
    return {p.name: minigpt.run_dir.best_step(p) for p in out.glob("best*")}


@pytest.mark.parametrize("prev", [True, False])
def test_a_kill_at_any_moment_of_settle_best_keeps_the_best_the_state_knows(tmp_path, monkeypatch, prev):
    """A crash audit: a resume at step 4, finding best/ from step 8 (its state never saved),
    deleted best/ in place and then put best.prev/ (step 4) back. Killed inside that delete, it
    left best/ without its metrics.json, which the next resume took for a best/ the state knows
    of: it deleted best.prev/, the real best. Now best/ is renamed out of the way (best.stale/)
    first. Here a kill at each rename and each delete of settle_best (a delete killed after its
    first file), then a resume: best/ is step 4's whole (or, with no best.prev/, none), alone."""
    class Killed(BaseException):
        pass

    rename, rmtree = Path.rename, shutil.rmtree
    for kill_at in range(1, 20):
        out = tmp_path / str(kill_at)
        for name, step in [("best", 8), ("best.prev", 4)] if prev else [("best", 8)]:
            (out / name).mkdir(parents=True)
            (out / name / "metrics.json").write_text(json.dumps({"step": step}))
            (out / name / "model.safetensors").write_text(f"weights of step {step}")
        ops = []

        def killed_rename(self, target):
            ops.append("rename")
            if len(ops) == kill_at:
                raise Killed
            return rename(self, target)

        def killed_rmtree(path, ignore_errors=False):
            ops.append("rmtree")
            if len(ops) == kill_at and Path(path).exists():
                (Path(path) / "metrics.json").unlink(missing_ok=True)  # the first file a delete takes
                raise Killed
            return rmtree(path, ignore_errors=ignore_errors)

        monkeypatch.setattr(Path, "rename", killed_rename)
        monkeypatch.setattr(shutil, "rmtree", killed_rmtree)
        with contextlib.suppress(Killed):
            settle_best(out, 4)
        monkeypatch.undo()
        settle_best(out, 4)  # the next resume
        assert _best_dirs(out) == ({"best": 4} if prev else {}), (kill_at, ops)
        if prev:
            assert (out / "best" / "model.safetensors").read_text() == "weights of step 4"
        if kill_at > len(ops):  # settle_best ran through without a kill: every moment was tried
            break


def test_settle_best_puts_back_best_prev_over_a_half_deleted_best(tmp_path):
    """The state an earlier minigpt's kill left (above): best/ without metrics.json beside
    best.prev/. best/ is the half-deleted one: best.prev/ comes back, and the note says so. A
    best/ without metrics.json and no best.prev/ is all there is: it stays. Each other moment of
    a kill: a best.stale/ (half-deleted, or whole before best.prev/ came back) goes."""
    (tmp_path / "best").mkdir(), (tmp_path / "best.prev").mkdir()
    (tmp_path / "best" / "model.safetensors").write_text("half deleted")
    (tmp_path / "best.prev" / "metrics.json").write_text(json.dumps({"step": 4}))
    assert settle_best(tmp_path, 4) == ("note: best/ was left half-deleted (it has no readable metrics.json): the "
                                        "best/ before it (step 4) is put back")
    assert _best_dirs(tmp_path) == {"best": 4}
    (tmp_path / "best.stale").mkdir()  # killed while a resume deleted it
    assert settle_best(tmp_path, 4) is None and _best_dirs(tmp_path) == {"best": 4}
    (tmp_path / "best").rename(tmp_path / "best.prev"), (tmp_path / "best.stale").mkdir()  # between the renames
    (tmp_path / "best.stale" / "metrics.json").write_text(json.dumps({"step": 8}))
    assert settle_best(tmp_path, 4) is None and _best_dirs(tmp_path) == {"best": 4}
    (tmp_path / "best" / "metrics.json").unlink()  # no best.prev/ beside it: nothing better to put back
    assert settle_best(tmp_path, 4) is None and _best_dirs(tmp_path) == {"best": None}


def test_a_stop_signal_is_said_at_once_by_rank_0_alone(capfd, monkeypatch):
    """A crash audit: the first Ctrl-C was only recorded, and 17 s of silence followed (the step
    under way, then the checkpoint: minutes for a big model), so users pressed it again, which
    stops at once and loses those steps. Now it is said as it comes (the handler has run once
    raise_signal returns), on a line of its own; under torchrun by rank 0 alone, as every
    process gets a terminal's Ctrl-C."""
    with train_runtime.StopSignal():
        signal.raise_signal(signal.SIGTERM)
        assert capfd.readouterr().err == ("\nSIGTERM: the run stops after the step under way, once it is saved (send "
                                          "SIGTERM again to stop at once: the last checkpoint written whole stands)\n")
    with train_runtime.StopSignal() as stop:
        stop._handle(signal.SIGINT, None)  # (raised, a Ctrl-C would reach pytest's handler when the suite runs as a job)
        assert "\nCtrl-C: the run stops after the step under way, once it is saved (press Ctrl-C again to stop at " \
               "once: " in capfd.readouterr().err
    with train_runtime.StopSignal() as stop:  # once the loop runs, it names the checkpoint that stands
        stop.progress = train.Progress(scale=1.0, step=7, best=1.0, last_saved=5)
        stop._handle(signal.SIGINT, None)
        assert "stop at once: the last checkpoint written whole, step 5, stands)\n" in capfd.readouterr().err
        stop.signum, stop.progress = 0, train.Progress(scale=1.0, step=3, best=1.0)
        stop._handle(signal.SIGTERM, None)
        assert "stop at once: nothing is saved yet)\n" in capfd.readouterr().err
    monkeypatch.setenv("RANK", "1"), monkeypatch.setenv("WORLD_SIZE", "2")
    with train_runtime.StopSignal():
        signal.raise_signal(signal.SIGTERM)
        assert capfd.readouterr().err == ""


def test_a_bare_resume_where_nothing_was_saved_says_what_to_run(tmp_path, capsys):
    """A crash audit: a run killed while it started, before it saved anything, then --resume'd
    was told only "there is no run to continue there". It now says the command to give."""
    assert train_main(["--out", str(tmp_path / "none"), "--resume"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"minigpt train: error: --resume: no {STATE_FILE} in {tmp_path / 'none'}; there is no run to continue there, as "
        "nothing was saved there: give the same command without --resume (resume=False in Python), or, in a script that "
        "may run again, with --auto-resume (auto_resume=True in Python), which starts the run or continues it")


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="a file size limit (ulimit -f) is POSIX's")
def test_a_training_state_over_the_file_size_limit_says_so_not_disk_full(tmp_path):
    """A crash audit: a training state over `ulimit -f` (EFBIG) was reported as torch's "unexpected
    pos" and the guess "is the disk full?". The state is now written through a file of ours,
    whose failed write keeps the system's own error, and that is the one said.

    A review then found a real run's error naming its folder, not training_state.pt: closing the
    file flushed the bytes still buffered, failed again, and that error (no filename) replaced
    ours; or torch.save wrote its last bytes into the buffer only, and the close alone failed. So
    a GPT's state (many tensors, where one Linear's passed by luck), cut at several sizes."""
    import resource

    model = GPT(GPTConfig(vocab_size=VOCAB, n_positions=16, n_embd=32, n_layer=2, n_head=2))
    optimizer = torch.optim.AdamW(model.parameters())
    cfg = tiny_cfg(tmp_path, tmp_path)

    def save(out: Path) -> None:
        minigpt.run_dir.save_checkpoint(out, model, lambda m, d: None, optimizer,
                                        torch.amp.GradScaler("cpu", enabled=False), 1, math.inf, cfg,
                                        scaler_skips=(0, 0, True))

    save(tmp_path)
    size = (tmp_path / STATE_FILE).stat().st_size
    # (the last: within a buffer's 8 KiB of the end, torch.save returns and only the flush fails)
    for limit in (4096, size // 3, size // 2, size - 1000, size - 3000):
        out = tmp_path / f"limit{limit}"
        out.mkdir()
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))  # (Python ignores SIGXFSZ: a write fails with EFBIG)
        try:
            with pytest.raises(OSError) as failed:
                save(out)
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        assert failed.value.errno == errno.EFBIG and failed.value.filename == str(out / STATE_FILE), limit
        assert "disk full" not in str(failed.value) and not (out / STATE_FILE).exists()


@pytest.mark.parametrize("error", ["torch's", "ENOSPC"])
def test_a_save_that_fails_for_want_of_space_says_which_checkpoint_stands(tmp_path, monkeypatch, capsys, error):
    """A crash audit: a full disk at step 12's save (its training state, or best.new/) ended the run
    with the error alone, saying nothing of what was kept. It now names the checkpoint that stands
    (step 6, each of its files replaced whole) and what to do: free space, then --resume."""
    data, out = make_data(tmp_path / "data"), tmp_path / "out"
    real_save, real_save_best = torch.save, train.save_best

    def full(state, *args, **kwargs):
        if isinstance(state, dict) and state.get("step") == 12:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 12544 vs 12438")
        return real_save(state, *args, **kwargs)

    def full_best(out_dir, *args):
        if args[-1]["step"] == 12:
            raise OSError(errno.ENOSPC, "No space left on device", str(out_dir / "best.new"))
        return real_save_best(out_dir, *args)

    if error == "torch's":
        monkeypatch.setattr(torch, "save", full)
    else:
        monkeypatch.setattr(train, "save_best", full_best)
    cfg = {k: v for k, v in vars(tiny_cfg(data, out, dropout=0.0)).items() if v is not None and v is not False}
    assert train_main([f"--{k.replace('_', '-')}={v}" for k, v in cfg.items()]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.endswith(f"; the last checkpoint written whole, step 6 in {out}, stands: free space, then continue from "
                        "it with --resume"), err
    assert final_state(out)["step"] == 6
    monkeypatch.undo()
    assert train_runtime.what_stands(OSError(errno.EACCES, "Permission denied", str(out / STATE_FILE))) == ""
    assert train_runtime.what_stands(OSError(errno.ENOSPC, "No space left on device", str(tmp_path))) == ""  # no run
    # The first checkpoint's save failed (a trainer's audit: `ulimit -f` said "File too large" alone):
    # no checkpoint stands, and --resume starts the run again.
    (out / STATE_FILE).unlink()
    assert train_runtime.what_stands(OSError(errno.EFBIG, "File too large", str(out / STATE_FILE))) == (
        f"; the run in {out} has no checkpoint written whole yet: allow bigger files (`ulimit -f`), then run the same "
        "command with --resume, which starts it again")


@pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="Windows has no SIGUSR1 or SIGHUP")
def test_sigusr1_stops_the_run_saved_and_an_ignored_sighup_stays_ignored(tmp_path, monkeypatch, capfd):
    """A crash audit: only SIGINT and SIGTERM stopped a run gracefully; SIGUSR1 (Slurm's warning
    before its time limit, `sbatch --signal=USR1@T`) and SIGHUP (an ssh session dropped) killed
    it at once, unsaved. Both now stop it as SIGTERM does: saved after the step under way, said,
    exit 128 + the signal (138). A SIGHUP ignored (`nohup`) is left ignored. The message names the
    checkpoint that stands, step 4 (--save-interval's): a review found nothing checked it."""
    data, out = make_data(tmp_path / "data"), tmp_path / "out"
    _interrupt_at_batch(monkeypatch, 9, signal.SIGUSR1)  # during step 5 (grad_accum 2)
    cfg = {k: v for k, v in vars(tiny_cfg(data, out, save_interval=4)).items() if v is not None and v is not False}
    assert train_main([f"--{k.replace('_', '-')}={v}" for k, v in cfg.items()]) == 128 + signal.SIGUSR1
    assert final_state(out)["step"] == 5
    said = capfd.readouterr()
    assert ("\nSIGUSR1: the run stops after the step under way, once it is saved (send SIGUSR1 again to stop at "
            "once: the last checkpoint written whole, step 4, stands)") in said.err, said.err
    assert "interrupted: saved step 5" in said.err
    before = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with train_runtime.StopSignal():
            assert signal.getsignal(signal.SIGHUP) == signal.SIG_IGN
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        with train_runtime.StopSignal() as stop:
            signal.raise_signal(signal.SIGHUP)  # recorded, not fatal
            assert stop.signum == signal.SIGHUP
    finally:
        signal.signal(signal.SIGHUP, before)


def test_save_interval_checkpoints_between_evaluations_and_a_crash_resumes_from_one_exactly(tmp_path, monkeypatch):
    """A crash audit: checkpoints came only with evaluations, so with rare or long ones (a
    classifier scores its whole val set) a crash lost up to --eval-interval steps. --save-interval
    saves between them, without evaluating; a run that crashes after one resumes from it and ends
    bitwise as an unbroken run."""
    data = make_data(tmp_path / "data")
    cfg = dict(eval_interval=6, save_interval=4)
    pretrain(tiny_cfg(data, tmp_path / "straight", **cfg))
    saved, real_checkpoint = [], train.checkpoint
    monkeypatch.setattr(train, "checkpoint", lambda run, progress: (saved.append(progress.step), real_checkpoint(run, progress)))
    calls, real_sample = {"n": 0}, sample_batch

    def crash_in_step_10(tokens, *args):  # (2 micro-batches a step: call 19 is step 10's first)
        if len(tokens) > 1000:
            calls["n"] += 1
            if calls["n"] == 19:
                raise MemoryError("a crash")
        return real_sample(tokens, *args)

    monkeypatch.setattr("minigpt.pretrain.sample_batch", crash_in_step_10)
    with pytest.raises(MemoryError):
        pretrain(tiny_cfg(data, tmp_path / "crashed", **cfg))
    assert saved == [4, 6, 8] and final_state(tmp_path / "crashed")["step"] == 8  # 4 and 8 without an evaluation
    monkeypatch.undo()
    pretrain(tiny_cfg(data, tmp_path / "crashed", resume=True, **cfg))
    a, b = final_state(tmp_path / "straight"), final_state(tmp_path / "crashed")
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])

    def records(run: str) -> list:
        return [(r["step"], r.get("loss"), r.get("val_loss")) for r in step_records(tmp_path / run)]
    assert records("straight") == records("crashed")
    with pytest.raises(ValueError, match="save_interval must be >= 0, got -1"):
        tiny_cfg(data, tmp_path / "x", save_interval=-1)


def test_a_process_that_leaves_an_error_before_joining_to_another_waits_for_it(monkeypatch, capsys):
    """CI: an error every torchrun process meets before they join (a missing --data) is said by the
    machine's first process alone. The others returned at once, and torchrun, which ends the rest
    when one ends, now and then ended the first before it had said it: no error line at all. The
    quiet ones now wait PEER_EXIT_GRACE_S first; the one that says it does not wait."""
    slept = []
    monkeypatch.setattr(train_runtime.time, "sleep", slept.append)

    def fails():
        raise FileNotFoundError("--data none.txt does not exist")

    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank, said in (("1", False), ("0", True)):
        monkeypatch.setenv("RANK", rank), monkeypatch.setenv("LOCAL_RANK", rank)
        slept.clear()
        assert train_runtime.run_command("minigpt finetune", fails) == 2
        assert ("error: --data none.txt does not exist" in capsys.readouterr().err) == said
        assert slept == ([] if said else [train_runtime.PEER_EXIT_GRACE_S])


# ---- the log's opening records: how each start and resume of a run was run ----------------------


def test_a_run_logs_how_it_was_started_and_how_each_resume_changed_it(tmp_path):
    """Bug (a reproducibility audit): a run folder said nothing readable of how it was made (no
    minigpt version or commit, torch version, device, thread count, command line or time: only
    training_state.pt, a pickle, held the settings), and a resume with new flags rewrote those
    settings with nothing in the log to mark it: steps 1-6 ran at --lr 3e-3, the state then said
    1e-3. Now log.jsonl opens each start and each resume with a record of them, a resume's with the
    settings it changed, after the records of the checkpoint it resumes."""
    from datetime import datetime, timedelta, timezone

    data, out = make_data(tmp_path / "data"), tmp_path / "out"
    pretrain(tiny_cfg(data, out, max_iters=6))
    pretrain(tiny_cfg(data, out, max_iters=9, lr=1e-3, resume=True))
    log = read_log(out)
    assert [(r["step"], r.get("run")) for r in log] == [(0, "start"), (3, None), (6, None), (6, None), (6, "resume"),
                                                        (9, None), (9, None)]
    start, resumed = log[0], log[4]
    assert "changed" not in start and resumed["changed"] == {"max_iters": [6, 9], "lr": [3e-3, 1e-3]}
    assert start["config"] == {**resumed["config"], "max_iters": 6, "lr": 3e-3, "resume": False}
    assert resumed["config"] == minigpt.run_log.plain_config(tiny_cfg(data, out, max_iters=9, lr=1e-3, resume=True))
    git = minigpt.run_log.git_commit()  # this checkout's commit (and -dirty, perhaps); None for an installed minigpt
    for record in (start, resumed):
        assert record["command"] == "train" and "argv" not in record  # (a sweep's one argv: none of its runs' flags)
        assert record["minigpt"] == minigpt.__version__ and record["torch"] == torch.__version__ and record["git"] == git
        assert (record["device"], record["dtype"], record["world_size"]) == ("cpu", "float32", 1)
        assert record["threads"] == torch.get_num_threads()
        assert timedelta(0) <= datetime.now(timezone.utc) - datetime.fromisoformat(record["time"]) < timedelta(minutes=10)
    json.dumps(log, allow_nan=False)  # plain JSON, as any reader of JSON Lines takes it


def test_a_run_whose_log_has_no_opening_records_still_resumes(tmp_path):
    """A log an earlier minigpt wrote, without opening records, resumes as before: its records are
    kept as they were, and the resume's record comes after them (no start record is made up)."""
    data, out = make_data(tmp_path / "data"), tmp_path / "out"
    pretrain(tiny_cfg(data, out, max_iters=6))
    old = [r for r in read_log(out) if "run" not in r]
    (out / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in old))
    pretrain(tiny_cfg(data, out, max_iters=9, resume=True))
    log = read_log(out)
    assert log[:len(old)] == old and [r.get("run") for r in log[len(old):]] == ["resume", None, None]
    assert log[len(old)]["changed"] == {"max_iters": [6, 9]} and final_state(out)["step"] == 9


def test_git_commit_names_the_checkout_minigpt_runs_from_and_nothing_else(tmp_path, monkeypatch):
    """The opening record's git field: the commit checked out, with "-dirty" once a tracked file of
    the package (minigpt/) differs from it, not a shipped checkpoint or script beside it; a
    checkout at a path with a space (a review: the output was split at whitespace, giving None);
    None (never an error) outside a checkout, in a folder inside another project's repository
    (minigpt installed in a venv there), and without git. Its git status takes no index lock."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed: git_commit's None without it is checked below, with PATH emptied")
    git_commit = minigpt.run_log.git_commit
    assert git_commit(tmp_path) is None
    repo = tmp_path / "my repo"
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "minigpt").mkdir()
    (repo / "minigpt" / "a.py").write_text("1\n")
    (repo / "log.jsonl").write_text("{}\n")
    subprocess.run([*git, "add", "minigpt/a.py", "log.jsonl"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "a"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    assert git_commit(repo) == head
    (repo / "notes.txt").write_text("untracked\n")  # not code that ran
    (repo / "log.jsonl").write_text("{}\n{}\n")  # tracked, but no code: a shipped file regenerated
    assert git_commit(repo) == head
    (repo / "minigpt" / "a.py").write_text("2\n")
    assert git_commit(repo) == head + "-dirty"
    (repo / "minigpt" / "a.py").write_text("1\n")  # its content again, its stat new: plain git status would refresh
    index = (repo / ".git" / "index").stat().st_mtime_ns
    assert git_commit(repo) == head
    assert (repo / ".git" / "index").stat().st_mtime_ns == index  # not refreshed: no lock taken, no race with the user's git
    (repo / "site-packages").mkdir()
    assert git_commit(repo / "site-packages") is None
    monkeypatch.setenv("PATH", str(tmp_path / "no-git-here"))
    assert git_commit(repo) is None
    rt = train_runtime.Runtime(0, 1, torch.device("cpu"), torch.float32)
    assert minigpt.run_log.opening_record(tiny_cfg(tmp_path, tmp_path / "out"), rt, 0, None)["git"] is None


def _opening_records(tmp_path) -> tuple[dict, dict]:
    """A start's and a resume's opening records, as a run writes them."""
    rt = train_runtime.Runtime(0, 1, torch.device("cpu"), torch.float32)
    cfg = tiny_cfg(tmp_path, tmp_path / "out")
    return (minigpt.run_log.opening_record(cfg, rt, 0, None),
            minigpt.run_log.opening_record(cfg, rt, 6, {"lr": (3e-3, 1e-3)}))


# The records of a run's steps: train records every 3 steps, evaluations at 6 (where it was resumed) and 9.
STEP_RECORDS = [{"step": 3, "loss": 4.0, "lr": 2e-3, "tokens_per_s": 100.0},
                {"step": 6, "loss": 3.0, "lr": 3e-3, "tokens_per_s": 120.0}, {"step": 6, "val_loss": 3.2, "val_ppl": 24.5},
                {"step": 9, "loss": 2.5, "lr": 1e-3, "tokens_per_s": 110.0}, {"step": 9, "val_loss": 2.9, "val_ppl": 18.2}]


def _best_evaluations(out: Path) -> dict:
    from minigpt import finetune

    return finetune.best_evaluations(read_log(out))


def _summary_figures(out: Path) -> dict:
    from minigpt import finetune

    cfg = SimpleNamespace(out=str(out), task="lm", strategy="full")
    rt = train_runtime.Runtime(0, 1, torch.device("cpu"), torch.float32)
    summary = finetune.write_summary(cfg, rt, 9, SimpleNamespace(trainable=1, total=2, optimizer_bytes=8))
    return {k: v for k, v in summary.items() if k != "peak_memory_mib"}  # (the process's, growing)


def _curves(out: Path, monkeypatch) -> dict:
    from matplotlib.axes import Axes

    drawn, real = {}, Axes.plot

    def plot(self, *args, label=None, **kw):
        drawn[label] = (list(args[0]), list(args[1]))
        return real(self, *args, label=label, **kw)

    with monkeypatch.context() as patched:
        patched.setattr(Axes, "plot", plot)
        minigpt.run_log.plot_log(out)
    return drawn


# Each reader of log.jsonl, and how many of the run's records (opening records included) its log holds.
LOG_READERS = {
    "records_of_state": (8, lambda out, _: [r for r in minigpt.run_log.records_of_state(out, 6) if "run" not in r]),
    "comparable_evaluations": (8, lambda out, _: minigpt.run_log.comparable_evaluations(read_log(out))),
    "evaluated_at": (8, lambda out, _: [minigpt.run_log.evaluated_at(out, step) for step in (0, 3, 6, 9)]),
    "best_evaluations": (8, lambda out, _: _best_evaluations(out)),
    "write_summary": (8, lambda out, _: _summary_figures(out)),
    "plot_log": (8, _curves),
    # A run stopped before its first record, killed while it saved its first checkpoint: its log
    # holds the start's record alone (an empty log, before opening records).
    "unsaved_story": (1, lambda out, _: minigpt.run_dir.unsaved_story(out, ["log.jsonl"]).replace(str(out), "OUT")),
    "unsaved_run": (4, lambda out, _: minigpt.run_dir.unsaved_run(out)),
}


@pytest.mark.parametrize("reader", LOG_READERS)
def test_every_reader_of_the_log_passes_over_its_opening_records(tmp_path, monkeypatch, reader):
    """The opening records (a start's, a resume's) are a new kind of record in log.jsonl, with no
    loss and no evaluation: each reader of the log finds in it what it found without them. The one
    that did not: the story of a run killed in its first checkpoint said it "logged up to step 0"."""
    start, resume = _opening_records(tmp_path)
    records, read = LOG_READERS[reader]
    run = [start, *STEP_RECORDS[:3], resume, *STEP_RECORDS[3:]][:records]
    found = []
    for name, log in (("with", run), ("without", [r for r in run if "run" not in r])):
        (tmp_path / name).mkdir()
        (tmp_path / name / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log))
        found.append(read(tmp_path / name, monkeypatch))
    assert found[0] == found[1]
    assert found[0] not in ([], {}, None)  # (a reader that found nothing in either would pass unseen)


@pytest.mark.parametrize("command", ["train", "finetune"])
def test_a_nanogpt_underscored_flag_is_answered_with_its_dashed_name(command, tmp_path, capsys):
    """An audit: nanoGPT's configurator spells flags --max_iters=10, and argparse's "unrecognized
    arguments" after a screen of usage gave no hint that minigpt's is --max-iters."""
    from minigpt.finetune import main as finetune_main

    main = {"train": train_main, "finetune": finetune_main}[command]
    init = ["--init", str(tmp_path / "m")] if command == "finetune" else []
    with pytest.raises(SystemExit) as e:
        main([*init, "--data", str(tmp_path / "d"), "--out", str(tmp_path / "o"), "--max_iters=10", "--no_compile", "--x_y"])
    assert e.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"minigpt {command}: error: unrecognized arguments: --max_iters=10 --no_compile --x_y; "
        "did you mean --max-iters, --no-compile?")


def test_n_positions_with_init_points_at_block_size_for_shorter_windows(tmp_path, capsys):
    """An audit: nanoGPT's crop_block_size has no minigpt flag, and the --n-positions refusal said only
    "drop it"; --block-size N trains on shorter windows of the same model (train and finetune say so)."""
    from minigpt.finetune import main as finetune_main

    GPT(GPTConfig(vocab_size=VOCAB, n_positions=128, n_embd=32, n_layer=1, n_head=2)).save_pretrained(tmp_path / "m")
    cfg = tiny_cfg(make_data(tmp_path / "data"), tmp_path / "o", init=str(tmp_path / "m"), preset=None, n_layer=None,
                   n_head=None, n_embd=None, n_positions=64)
    with pytest.raises(ValueError, match=r"--n-positions cannot change the shape of the --init checkpoint .*; drop it; to "
                                         r"train on shorter windows, use --block-size 64 \(the model keeps its position table\)$"):
        build_model(cfg, VOCAB)
    with pytest.raises(SystemExit):
        finetune_main(["--init", str(tmp_path / "m"), "--data", str(tmp_path / "data"), "--out", str(tmp_path / "o"),
                       "--n-positions", "64"])
    assert capsys.readouterr().err.strip().endswith(
        "--n-positions 64: fine-tuning takes the model's shape from the --init checkpoint, which fixes it; drop this flag; "
        "to train on shorter windows, use --block-size N (the model keeps its position table)")


def test_n_positions_past_the_init_models_context_names_that_context(tmp_path):
    """A review: a 256-position model given --n-positions 1024 was told "use --block-size 1024",
    which the model refuses in turn. The hint is for shorter windows only; a longer or equal
    --n-positions is told the model's context."""
    GPT(GPTConfig(vocab_size=VOCAB, n_positions=128, n_embd=32, n_layer=1, n_head=2)).save_pretrained(tmp_path / "m")
    data = make_data(tmp_path / "data")
    for asked in (128, 1024):
        cfg = tiny_cfg(data, tmp_path / "o", init=str(tmp_path / "m"), preset=None, n_layer=None, n_head=None,
                       n_embd=None, n_positions=asked)
        with pytest.raises(ValueError, match=r"; drop it; the model's context is 128 positions, the longest window "
                                             r"--block-size takes$"):
            build_model(cfg, VOCAB)


@pytest.mark.parametrize("typed, answer", [
    ("--compile=False", "argument --compile/--no-compile: ignored explicit argument 'False'; a true/false flag takes no "
                        "value: use --no-compile"),
    ("--compile=1", "argument --compile/--no-compile: ignored explicit argument '1'; a true/false flag takes no value: "
                    "use --compile"),
    ("--gradient_checkpointing=True", "unrecognized arguments: --gradient_checkpointing=True; did you mean "
                                      "--gradient-checkpointing?"),
    ("--gradient_checkpointing=false", "unrecognized arguments: --gradient_checkpointing=false; did you mean "
                                       "--no-gradient-checkpointing?"),
    ("--compile=maybe", "argument --compile/--no-compile: ignored explicit argument 'maybe'; a true/false flag takes no "
                        "value: use --compile or --no-compile"),
    # (a second review: --no-compile=yes was read as --compile's value, and answered "use --compile")
    ("--no-compile=yes", "argument --compile/--no-compile: ignored explicit argument 'yes'; a true/false flag takes no "
                         "value: use --no-compile"),
])
def test_a_value_given_to_a_true_false_flag_is_answered_with_its_spelling(typed, answer, tmp_path, capsys):
    """A review: nanoGPT's README runs `--compile=False` on a CPU, which argparse answered with a bare
    "ignored explicit argument 'False'", and the underscore hint led into the same error
    (--gradient_checkpointing=True: "did you mean --gradient-checkpointing?", which takes no =True)."""
    with pytest.raises(SystemExit) as e:
        train_main(["--data", str(tmp_path / "d"), "--out", str(tmp_path / "o"), typed])
    assert e.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"minigpt train: error: {answer}"


def test_the_underscore_hint_skips_what_follows_a_double_dash_and_refused_flags(tmp_path, capsys):
    """A review: `minigpt train -- --max-iters 5` was asked "did you mean --max-iters?", what was typed
    (after "--", argparse reads no flag), and finetune's --n_positions=64 was pointed at
    --n-positions, which finetune refuses: it gets that refusal now."""
    from minigpt.finetune import main as finetune_main

    with pytest.raises(SystemExit):
        train_main(["--data", str(tmp_path / "d"), "--", "--max-iters", "5"])
    assert capsys.readouterr().err.splitlines()[-1] == (
        "minigpt train: error: unrecognized arguments: -- --max-iters 5; the arguments after `--` are not read as "
        "flags: drop the `--`")
    with pytest.raises(SystemExit):
        finetune_main(["--init", str(tmp_path / "m"), "--n_positions=64", "--max_iters=3"])
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.startswith("minigpt finetune: error: unrecognized arguments: --n_positions=64 --max_iters=3; did you mean "
                           "--max-iters?; --n-positions: fine-tuning takes the model's shape from the --init checkpoint"), last


def test_pretrain_gives_the_callers_random_state_back_and_its_weights_depend_on_the_seed_alone(tmp_path):
    """An audit of a long-lived service: build_model seeded torch's global generator for the new
    weights outside train_loop's fork and left it so, and every in-process run left the caller's
    next unseeded draw the same. It is seeded in a fork now; the run itself is unchanged (the
    losses below are those before the change, whatever the caller's state)."""
    data = make_data(tmp_path / "data")
    for caller_seed in (1, 2):
        torch.manual_seed(caller_seed)
        before = torch.get_rng_state()
        metrics = pretrain(tiny_cfg(data, tmp_path / f"out{caller_seed}", max_iters=4, eval_interval=4))
        assert torch.equal(torch.get_rng_state(), before)
        assert (metrics["loss"], metrics["val_loss"]) == pytest.approx((3.919919967651367, 3.8139142990112305), rel=1e-5)


@pytest.mark.parametrize("name", ["resume", "auto_resume", "allow_new_data", "compile", "gradient_checkpointing",
                                  "chunked_loss"])
@pytest.mark.parametrize("value", ["False", "no", 1, None])
def test_train_config_switches_must_be_bools(name, value):
    """An audit: TrainConfig(resume="False", compile="no", gradient_checkpointing="off") kept the
    strings, which read as True: a switch that is no bool is a TypeError naming it, as generate's are."""
    with pytest.raises(TypeError, match=rf"^{name} must be True or False, got {re.escape(repr(value))}$"):
        TrainConfig(**{name: value})


def test_train_config_keeps_rates_as_plain_floats():
    """An audit: TrainConfig(lr=np.float32(1e-3)) trained a step, then failed writing log.jsonl
    ("Object of type float32 is not JSON serializable"); lr="3e-4" failed as "must be real number,
    not str", naming no field. A rate is a real number, kept as a plain float, or a TypeError naming it."""
    cfg = TrainConfig(lr=np.float32(1e-3), min_lr=np.float64(1e-4), weight_decay=0, dropout=np.float32(0.25))
    assert [type(v) for v in (cfg.lr, cfg.min_lr, cfg.weight_decay, cfg.dropout)] == [float] * 4
    assert json.loads(json.dumps({"lr": cfg.lr}))["lr"] == pytest.approx(1e-3)
    for name, value in [("lr", "3e-4"), ("beta2", True), ("grad_clip", None), ("dropout", "0.1"),
                        ("lr", torch.tensor(1e-3))]:
        with pytest.raises(TypeError, match=rf"^{name} must be a number, got "):
            TrainConfig(**{name: value})


def test_train_config_keeps_switches_as_plain_bools_and_resumes_an_older_runs_int_switch(tmp_path):
    """A review: a NumPy bool passed the switch check and was kept, and log.jsonl's JSON failed on
    it after the first steps; and a run an older minigpt saved with gradient_checkpointing=0 (taken
    as given then) could not be resumed bare, its saved 0 now refused as no bool."""
    cfg = TrainConfig(chunked_loss=np.True_, compile=np.False_)
    assert (cfg.chunked_loss, cfg.compile) == (True, False) and type(cfg.chunked_loss) is bool
    for many in (np.array([True, False]), torch.tensor([True, False])):  # no one switch: refused by name
        with pytest.raises(TypeError, match=r"^compile must be True or False, got "):
            TrainConfig(compile=many)
    json.dumps(minigpt.run_log.plain_config(cfg))
    data = make_data(tmp_path / "data")
    pretrain(tiny_cfg(data, tmp_path / "out", max_iters=2, eval_interval=2, eval_iters=1))
    state = torch.load(tmp_path / "out" / STATE_FILE, weights_only=True)
    state["config"]["gradient_checkpointing"] = 0
    torch.save(state, tmp_path / "out" / STATE_FILE)
    resumed = parse_config(TrainConfig, ["--out", str(tmp_path / "out"), "--resume"], "train", "")
    assert resumed.gradient_checkpointing is False


def test_apply_strategy_switches_must_be_bools():
    """An audit: apply_strategy(model, "partial", train_embeddings="False") trained wte, the string
    reading as True; verbose="no" printed. Each is a TypeError naming it, before the model changes."""
    from minigpt.finetune import apply_strategy
    from minigpt.finetune_config import FinetuneConfig

    model = GPT(GPTConfig(vocab_size=100, n_positions=16, n_layer=2, n_head=2, n_embd=32))
    with pytest.raises(TypeError, match=r"^train_embeddings must be True or False, got 'False'$"):
        apply_strategy(model, "partial", train_embeddings="False", verbose=False)
    with pytest.raises(TypeError, match=r"^verbose must be True or False, got 'no'$"):
        apply_strategy(model, "full", verbose="no")
    assert all(p.requires_grad for p in model.parameters())  # as built: nothing was frozen or unfrozen
    with pytest.raises(TypeError, match=r"^train_embeddings must be True or False, got 'no'$"):
        FinetuneConfig(init="gpt2", data="x.txt", strategy="partial", train_embeddings="no")


def strict_json(line: str):
    """json.loads refusing NaN and Infinity, as jq and JavaScript's JSON.parse refuse them."""
    def refuse(constant):
        raise ValueError(f"not strict JSON: {constant}")
    return json.loads(line, parse_constant=refuse)


K = train.MAX_SKIPPED_IN_A_ROW


@pytest.mark.parametrize("max_iters, poisoned, stops", [
    (25, range(1, K + 1), "steps 1-20 \\(20 in a row, every step this run made\\)"), (25, range(1, K), None),
    (25, [*range(1, 11), *range(12, 22)], None),  # 20 skipped, not in a row (a review: the row's count was never reset in a test)
    (10, range(1, 11), "steps 1-10 \\(10 in a row, every step this run made\\)")],  # a review: a short run ended exit 0, untrained
    ids=["K in a row", "K-1 in a row", "K apart", "every step of a short run"])
def test_float16_steps_its_scaler_skips_are_logged_and_too_many_in_a_row_stop_the_run(tmp_path, monkeypatch,
                                                                                       max_iters, poisoned, stops):
    """An audit: float16's GradScaler skips a step whose gradients hold NaN without a word, and the
    divergence check is off under it, so a run whose every gradient was NaN ended with exit 0, its
    weights never updated; its log.jsonl also held "grad_norm": NaN, which strict JSON refuses. Now
    each record counts the skipped steps and gives the loss scale, a non-finite number is null, and
    MAX_SKIPPED_IN_A_ROW skips in a row stop the run as diverged (one fewer does not), as does a run
    that ends with none of its updates kept. float16 is refused on a CPU, so the runtime a GPU would
    get is patched in (CPU autocast and GradScaler run it)."""
    monkeypatch.setattr(train, "setup_runtime", lambda cfg: train_runtime.Runtime(0, 1, torch.device("cpu"), torch.float16))
    data, out = make_data(tmp_path / "data"), tmp_path / "out"
    cfg = tiny_cfg(data, out, dtype="float16", grad_accum=1, max_iters=max_iters, log_interval=5, eval_interval=0, dropout=0.0)
    model = build_model(cfg, VOCAB)
    before = model.transformer.h[0].mlp.c_fc.weight.detach().clone()
    calls = {"n": 0}

    def poison(model, x, y):  # a NaN gradient (from a finite loss) in the steps `poisoned`
        calls["n"] += model.training
        logits, loss = model(x, y)
        if calls["n"] in poisoned:
            logits.register_hook(lambda g: g * float("nan"))
        return loss

    tokens = load_tokens(data / "train.bin", VOCAB, 17)
    run = lambda: train.train_loop(model, cfg, lambda split, rng: sample_batch(tokens, 16, 4, rng), poison)  # noqa: E731
    if stops:
        with pytest.raises(TrainingDiverged, match=rf"float16's loss scaler skipped the updates of {stops}: .* fell "
                                                   rf"2\^{len(poisoned)}-fold, to {2.0 ** (16 - len(poisoned)):g} .*--dtype "
                                                   r"bfloat16 \(dtype='bfloat16' in Python\) has float32's range"):
            run()
        assert torch.equal(model.transformer.h[0].mlp.c_fc.weight.detach(), before)  # never updated
    else:
        run()
        assert not torch.equal(model.transformer.h[0].mlp.c_fc.weight.detach(), before)  # trains once the NaN stops
    records = [strict_json(line) for line in (out / "log.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    skipped = [sum(s in poisoned for s in range(r["step"] - 4, r["step"] + 1)) for r in steps]
    assert [r["skipped_steps"] for r in steps] == skipped
    assert steps[0]["grad_norm"] is None and steps[0]["loss_scale"] == 2.0 ** (16 - 5)  # halved at each skip, from 2^16
    if not stops:
        assert math.isfinite(steps[-1]["grad_norm"])
    assert f"{K} skipped in a row" in (Path(__file__).parent.parent / "README.md").read_text()  # the constant's figure


def test_a_resumed_float16_run_whose_few_steps_are_skipped_is_no_divergence(tmp_path, monkeypatch):
    """A review: a healthy float16 run resumed for one more step, which the scaler skipped (its
    scale finding its level), was stopped as "every step this run made" skipped, exit 1: a resumed
    run has trained before, and only MAX_SKIPPED_IN_A_ROW in a row stop it."""
    import dataclasses

    monkeypatch.setattr(train, "setup_runtime", lambda cfg: train_runtime.Runtime(0, 1, torch.device("cpu"), torch.float16))
    data, out = make_data(tmp_path / "data"), tmp_path / "out"
    cfg = tiny_cfg(data, out, dtype="float16", grad_accum=1, max_iters=3, log_interval=1, eval_interval=0, dropout=0.0)
    tokens = load_tokens(data / "train.bin", VOCAB, 17)

    def poisoned(model, x, y):  # the resumed run's one step: a NaN gradient
        logits, loss = model(x, y)
        if model.training:
            logits.register_hook(lambda g: g * float("nan"))
        return loss

    batches = lambda split, rng: sample_batch(tokens, 16, 4, rng)  # noqa: E731
    train.train_loop(build_model(cfg, VOCAB), cfg, batches)
    train.train_loop(build_model(cfg, VOCAB), dataclasses.replace(cfg, resume=True, max_iters=4), batches, poisoned)
    assert [r["skipped_steps"] for r in read_log(out) if "loss" in r][-1] == 1


def test_a_non_finite_number_is_logged_as_null_and_no_best_val_loss(tmp_path):
    """An audit: log.jsonl held NaN and Infinity, which jq and JSON.parse refuse. They are null now;
    an evaluation whose val loss is null is never the best one (min() cannot compare None)."""
    minigpt.run_log.append_log(tmp_path, {"step": 1, "loss": 2.0, "grad_norm": float("inf")})
    minigpt.run_log.append_log(tmp_path, {"step": 2, "val_loss": float("nan"), "val_ppl": float("nan"),
                                          "nested": [float("-inf"), 1.5]})
    minigpt.run_log.append_log(tmp_path, {"step": 3, "val_loss": 1.0})
    lines = (tmp_path / "log.jsonl").read_text().splitlines()
    assert [strict_json(line) for line in lines] == [
        {"step": 1, "loss": 2.0, "grad_norm": None},
        {"step": 2, "val_loss": None, "val_ppl": None, "nested": [None, 1.5]},
        {"step": 3, "val_loss": 1.0}]
    assert [r["step"] for r in minigpt.run_log.comparable_evaluations(read_log(tmp_path))] == [3]


# ---- train_loop's promise to models that are not GPTs (an audit of the loop's contract) ----------

MLP_W = torch.randn(4, 1, generator=torch.Generator().manual_seed(5))  # the target: y = x @ MLP_W


def mlp(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))


def mlp_batch(split, rng):
    x = torch.randn(8, 4, generator=rng)
    return x, x @ MLP_W


def mse(model, x, y):
    return torch.nn.functional.mse_loss(model(x), y)


def save_state(model, folder):
    torch.save(model.state_dict(), folder / "model.pt")


def mlp_cfg(out: Path, **kw) -> TrainConfig:
    return TrainConfig(**{**dict(out=str(out), max_iters=4, eval_interval=2, log_interval=2, eval_iters=1,
                                 warmup_iters=1, device="cpu"), **kw})


def test_eval_fn_runs_in_eval_mode_without_grad_and_gives_the_mode_back(tmp_path):
    """An audit: eval_fn ran with the model in training mode and grad on, where the sampled val loss
    runs in eval mode under no_grad: dropout noise in its metric (two calls on the same data gave
    13.1 and 11.4), a BatchNorm's running statistics updated from val data, and a graph built for
    nothing. It runs now as estimate_val_loss does (its autocast its own: a review found the
    loop's changed classify's float32 scores), and the model trains on in training mode after it."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.BatchNorm1d(16), torch.nn.Dropout(0.5),
                                torch.nn.Linear(16, 1))
    x = torch.randn(64, 4)
    seen, trained_in = [], set()

    def eval_fn(m):
        stats = m[1].running_mean.clone()
        first, second = m(x), m(x)
        seen.append({"training": m.training, "grad": torch.is_grad_enabled(), "dtype": first.dtype,
                     "same twice": torch.equal(first, second), "stats kept": torch.equal(stats, m[1].running_mean)})
        return {"val_mean": first.float().mean()}

    def loss_fn(m, xb, yb):
        if torch.is_grad_enabled():  # a training step's (the sampled val loss runs under no_grad)
            trained_in.add(m.training)
        return mse(m, xb, yb)

    train.train_loop(model, mlp_cfg(tmp_path / "out", dtype="bfloat16"), mlp_batch, loss_fn, save_state, eval_fn=eval_fn)
    assert seen == [{"training": False, "grad": False, "dtype": torch.float32, "same twice": True,
                     "stats kept": True}] * 2
    assert trained_in == {True}  # the steps after the first evaluation trained in training mode again


def test_a_model_without_save_pretrained_needs_a_save_fn_before_any_step(tmp_path):
    """An audit: with save_fn left at its default, model.save_pretrained, a model without one (a GPT
    inside a module of one's own) trained to its first evaluation, then died with torch's
    AttributeError, losing every step and leaving a half-written best.new/. Refused before any step."""
    drawn = []

    def get_batch(split, rng):
        drawn.append(split)
        return mlp_batch(split, rng)

    with pytest.raises(TypeError, match=r"^save_fn is not given, and its default, model.save_pretrained, is missing: "
                                        r"the Sequential given to train_loop has none"):
        train.train_loop(mlp(), mlp_cfg(tmp_path / "out"), get_batch, mse)
    assert drawn == [] and not (tmp_path / "out").exists()


@pytest.mark.parametrize("metric, logged", [(torch.tensor(0.5), 0.5), (np.float32(0.5), 0.5), (np.int64(3), 3)])
def test_eval_fn_metrics_of_0d_tensors_and_numpy_scalars_are_logged_as_numbers(tmp_path, metric, logged):
    """An audit: a metric eval_fn returned as a 0-d tensor or a NumPy scalar (an accuracy computed
    in torch, say) failed the first evaluation's log record with json's "Object of type Tensor is
    not JSON serializable", after training to it. It is logged as its number now."""
    train.train_loop(mlp(), mlp_cfg(tmp_path / "out"), mlp_batch, mse, save_state,
                     eval_fn=lambda m: {"val_acc": metric})
    assert [r["val_acc"] for r in read_log(tmp_path / "out") if "val_acc" in r] == [logged, logged]
    assert json.loads((tmp_path / "out" / "best" / "metrics.json").read_text())["val_acc"] == logged


@pytest.mark.parametrize("returned, error, said", [
    (0.5, TypeError, "eval_fn returned 0.5 (a float): it must return a dict of metrics by name"),
    (None, TypeError, "eval_fn returned None (a NoneType): it must return a dict"),
    ({"note": "hello"}, TypeError, "eval_fn's metric 'note' is 'hello' (str): each metric must be a real number"),
    ({"val_loss": "0.5"}, TypeError, "eval_fn's metric 'val_loss' is '0.5' (str)"),
    ({"val_acc": torch.ones(3)}, TypeError, "eval_fn's metric 'val_acc' is a tensor of shape (3,) (Tensor)"),
    ({"ok": True}, TypeError, "eval_fn's metric 'ok' is True (bool)"),
    ({"step": 99, "val_acc": 0.5}, ValueError, "eval_fn's metrics hold 'step', the loop's own key"),
])
def test_eval_fn_results_that_are_not_a_dict_of_real_numbers_are_refused_naming_eval_fn(tmp_path, returned, error, said):
    """An audit: eval_fn's result went unchecked. A float or None failed as "argument of type 'float'
    is not iterable", a string as "Unknown format code 'g'", naming neither eval_fn nor the metric;
    and a "step" among the metrics silently replaced the step evaluated (the run returned step 99
    after 4 steps)."""
    with pytest.raises(error, match="^" + re.escape(said)):
        train.train_loop(mlp(), mlp_cfg(tmp_path / "out"), mlp_batch, mse, save_state, eval_fn=lambda m: returned)


def test_a_val_loss_that_is_not_finite_is_warned_of_once_and_never_becomes_best(tmp_path, capsys):
    """An audit: eval_fn's val loss NaN at every evaluation left no best/ and no word of why. A
    warning says it once; a val loss of -inf (no loss is below it) does not become best/ either."""
    losses = iter([float("nan"), float("-inf"), float("nan")])
    train.train_loop(mlp(), mlp_cfg(tmp_path / "out", max_iters=6), mlp_batch, mse, save_state,
                     eval_fn=lambda m: {"val_loss": next(losses)})
    err = capsys.readouterr().err
    assert err.count("warning: val_loss") == 1
    assert "warning: val_loss is nan at step 2: best/ is not updated while the val loss is not finite" in err
    assert not (tmp_path / "out" / "best").exists()


def test_a_python_resume_refused_names_what_a_python_caller_set(tmp_path):
    """A review: a Python caller of train_loop, refused on resume, read only flags: "--max-iters 2 is
    below ...: --max-iters counts the whole run", and, its data_fingerprint differing with no
    cfg.data, "--data  is not the data ..." (an empty name). They name the config field, and the
    data_fingerprint argument where there is no --data."""
    import dataclasses

    cfg = mlp_cfg(tmp_path / "out")
    train.train_loop(mlp(), cfg, mlp_batch, mse, save_state, data_fingerprint={"rows": 100}, progress=False)
    resume = dataclasses.replace(cfg, resume=True)
    with pytest.raises(ValueError, match=r"--max-iters \(max_iters= in Python\) counts the whole run"):
        train.train_loop(mlp(), dataclasses.replace(resume, max_iters=2), mlp_batch, mse, save_state,
                         data_fingerprint={"rows": 100}, progress=False)
    with pytest.raises(ValueError) as refused:
        train.train_loop(mlp(), dataclasses.replace(resume, max_iters=6), mlp_batch, mse, save_state,
                         data_fingerprint={"rows": 200}, progress=False)
    assert str(refused.value).startswith(f"the data (data_fingerprint=) differs from the data the run in {tmp_path / 'out'} "
                                         "trained on (rows: 100 then, 200 now); resume with the run's data, or pass "
                                         "--allow-new-data (allow_new_data=True in Python)")


def test_a_python_resume_with_other_frozen_weights_names_the_model_given_not_init(tmp_path):
    """An audit: resuming from Python, with a model whose frozen weights differ (built from another
    seed), was told to "Give --init the checkpoint the run started from", a flag a Python caller
    never gave. It is told that the model given must hold the same frozen weights."""
    def frozen_mlp(seed):
        model = mlp(seed)
        model[0].requires_grad_(False)
        return model

    out = tmp_path / "out"
    train.train_loop(frozen_mlp(0), mlp_cfg(out, max_iters=2), mlp_batch, mse, save_state)
    with pytest.raises(ValueError, match="the model given to train_loop holds now") as error:
        train.train_loop(frozen_mlp(1), mlp_cfg(out, resume=True), mlp_batch, mse, save_state)
    assert "the model given must hold the same frozen weights as the run's (built from the same seed" in str(error.value)
    assert "--init" not in str(error.value)
    train.train_loop(frozen_mlp(0), mlp_cfg(out, resume=True), mlp_batch, mse, save_state)  # the same seed resumes
    assert final_state(out)["step"] == 4


def _ylabel(out: Path, monkeypatch) -> str:
    """The y-axis label plot_log gives OUT_DIR's loss.png."""
    from matplotlib.axes import Axes

    said, real = {}, Axes.set

    def set_(self, **kw):
        said.update(kw)
        return real(self, **kw)

    with monkeypatch.context() as patched:
        patched.setattr(Axes, "set", set_)
        minigpt.run_log.plot_log(out)
    return said["ylabel"]


def test_only_the_lm_loss_logs_a_perplexity_and_draws_nats_per_token(tmp_path, monkeypatch):
    """An audit: a run of an MLP on an MSE loss logged val_ppl (exp of a squared error) and drew its
    loss.png with the axis "loss (nats/token)". The loop knows the unit of `lm_loss` alone (the
    default): with it a run logs val_ppl and says nats/token; with a loss of the caller's, neither,
    even with an accuracy among its metrics (a review: then the axis said "nats per text", a
    classifier's words), and eval_fn runs under no autocast of the loop's (classify scores in float32)."""
    def accuracy(model):
        assert not torch.is_autocast_enabled("cpu") and not torch.is_grad_enabled() and not model.training
        return {"val_accuracy": 0.5}

    train.train_loop(mlp(), mlp_cfg(tmp_path / "mlp", dtype="bfloat16"), mlp_batch, mse, save_state, eval_fn=accuracy)
    records = read_log(tmp_path / "mlp")
    assert records[0]["loss_unit"] is None and not any("val_ppl" in r for r in records)
    assert [r["val_accuracy"] for r in records if "val_accuracy" in r] == [0.5, 0.5]  # steps 2 and 4
    assert _ylabel(tmp_path / "mlp", monkeypatch) == "loss"

    data = make_data(tmp_path / "data")
    tokens = load_tokens(data / "train.bin", VOCAB, 17)
    cfg = tiny_cfg(data, tmp_path / "lm", max_iters=2, eval_interval=2)
    train.train_loop(build_model(cfg, VOCAB), cfg, lambda split, rng: sample_batch(tokens, 16, 4, rng))
    records = read_log(tmp_path / "lm")
    assert records[0]["loss_unit"] == "nats/token" and [r["step"] for r in records if "val_ppl" in r] == [2]
    assert _ylabel(tmp_path / "lm", monkeypatch) == "loss (nats/token)"


@pytest.mark.parametrize("opening, label", [
    ({"run": "start", "command": "finetune", "config": {"task": "classify"}, "loss_unit": "nats per text"},
     "loss (nats per text)"),
    # Logs of earlier versions: a classify run's recorded no unit (null, or older still, no field).
    ({"run": "start", "command": "finetune", "config": {"task": "classify"}, "loss_unit": None}, "loss (nats per text)"),
    ({"run": "start", "command": "finetune", "config": {"task": "classify"}}, "loss (nats per text)"),
    ({"run": "start", "command": "train", "config": {}}, "loss (nats/token)"),  # a log older than loss_unit: minigpt's own
    ({"run": "start", "command": "train", "config": {}, "loss_unit": None}, "loss")])
def test_loss_png_names_the_unit_of_the_runs_loss(tmp_path, monkeypatch, opening, label):
    """A review: the axis said "nats per text" for any run with an accuracy (a classifier's words
    for an MLP's squared error); it is the unit recorded, or for a log written before the record
    had one, as it was drawn then: a classify run's in nats per text, any other in nats/token."""
    for record in ({"step": 0, **opening}, {"step": 2, "loss": 1.5}, {"step": 2, "val_loss": 1.4, "val_accuracy": 0.5}):
        minigpt.run_log.append_log(tmp_path, record)
    assert _ylabel(tmp_path, monkeypatch) == label


def test_a_loss_unit_given_to_train_loop_is_recorded_and_drawn(tmp_path, monkeypatch):
    """A code reread: the unit of a loss the loop does not know was decided in two places, the log's
    opening record (null for finetune's classify task) and loss.png's drawing (which said "nats per
    text" for a config whose task was classify). Now the caller names it (train_loop's loss_unit=),
    the opening record holds it, and the drawing reads it there alone; it is no nats/token, so no
    perplexity is logged."""
    train.train_loop(mlp(), mlp_cfg(tmp_path), mlp_batch, mse, save_state, loss_unit="squared error")
    records = read_log(tmp_path)
    assert records[0]["loss_unit"] == "squared error" and not any("val_ppl" in r for r in records)
    assert _ylabel(tmp_path, monkeypatch) == "loss (squared error)"


@pytest.mark.parametrize("get_batch, said", [
    (lambda split, rng: dict(zip("xy", mlp_batch(split, rng))), "get_batch returned a dict: it must return a tuple"),
    (lambda split, rng: torch.randn(8, 5, generator=rng), "get_batch returned a Tensor: it must return a tuple"),
    (lambda split, rng: (*mlp_batch(split, rng), 3), "get_batch returned a tuple holding Tensor, Tensor, int: it must"),
    (lambda split, rng: (), "get_batch returned an empty tuple: it must return a tuple (or list) of tensors"),
])
def test_a_batch_that_is_not_a_tuple_of_tensors_is_refused_naming_get_batch(tmp_path, get_batch, said):
    """An audit: a get_batch that returned a dict or a tuple holding an int failed inside torch
    ("'int' object has no attribute 'to'"), naming neither get_batch nor the batch; a single tensor
    was split into its rows and trained on as if they were the batch's tensors."""
    with pytest.raises(TypeError, match="^" + re.escape(said)):
        train.train_loop(mlp(), mlp_cfg(tmp_path / "out"), get_batch, lambda m, *batch: mse(m, *batch[:2]), save_state)


@pytest.mark.parametrize("model", [mlp().requires_grad_(False), torch.nn.Identity()], ids=["frozen", "no parameters"])
def test_a_model_with_nothing_to_train_is_refused_before_any_step(tmp_path, model):
    """An audit: a model with no parameter that requires grad (all frozen, or none at all) failed
    its first backward inside torch ("element 0 of tensors does not require grad"). Refused now
    before any work, naming the model."""
    with pytest.raises(ValueError, match=f"^the {type(model).__name__} given to train_loop has no parameter that "
                                         "requires grad"):
        train.train_loop(model, mlp_cfg(tmp_path / "out"), mlp_batch, lambda m, x, y: m(x).sum(), save_state)
    assert not (tmp_path / "out").exists()


def test_to_device_pins_only_a_cpu_tensor(monkeypatch):
    """From reading: on a GPU, Runtime.to_device pinned every tensor, and pinning one that get_batch
    made on the GPU already raises ("cannot pin 'torch.cuda.FloatTensor'"). Only a CPU tensor is
    pinned now. (Stand-ins for tensors: this runs without a GPU, whose own check is in the report.)"""
    def tensor(device: str, pinned: list):
        return SimpleNamespace(device=torch.device(device), to=lambda *args, **kw: (args, kw),
                               pin_memory=lambda: pinned.append(device) or tensor(device, pinned))

    rt = train_runtime.Runtime(0, 1, torch.device("cuda", 0), torch.float32)
    pinned = []
    assert rt.to_device(tensor("cpu", pinned)) == ((torch.device("cuda", 0),), {"non_blocking": True})
    assert rt.to_device(tensor("cuda:0", pinned)) == ((torch.device("cuda", 0),), {})
    assert pinned == ["cpu"]


def test_a_float16_step_reads_the_loss_scale_once_and_a_resume_compares_with_the_restored_one(tmp_path, monkeypatch):
    """A code reread: each float16 step read the scaler's scale twice, before the step and after it
    (each read an .item(), a host sync on a GPU), and each log record a third time. Now a step reads
    it once, after its update, and compares it with the step before's; the run reads it once at its
    start (no sync: the scaler has scaled nothing yet), where a resume finds the scale restored from
    its checkpoint: a resumed run whose kept steps compared with a fresh 2^16 would count them skipped."""
    import dataclasses
    import inspect

    monkeypatch.setattr(train, "setup_runtime", lambda cfg: train_runtime.Runtime(0, 1, torch.device("cpu"), torch.float16))
    read = torch.amp.GradScaler.get_scale
    by_train = {"n": 0}

    def counted(scaler):  # the reads of train.py's own (a checkpoint's scaler.state_dict() reads it too)
        by_train["n"] += inspect.currentframe().f_back.f_code.co_filename == train.__file__
        return read(scaler)

    monkeypatch.setattr(torch.amp.GradScaler, "get_scale", counted)

    def poison_first_two(model, x, y):  # steps 1 and 2 of the first run: NaN gradients, so 2 skips
        out = model(x)
        if model.training and poison_first_two.left:
            poison_first_two.left -= 1
            out.register_hook(lambda g: g * float("nan"))
        return torch.nn.functional.mse_loss(out, y)

    poison_first_two.left = 2
    cfg = mlp_cfg(tmp_path / "o", dtype="float16", max_iters=3, log_interval=1, eval_interval=0)
    model = mlp()
    train.train_loop(model, cfg, mlp_batch, poison_first_two, save_state)
    assert by_train["n"] == 1 + 3  # the start's, and one a step
    steps = [r for r in read_log(tmp_path / "o") if "loss" in r]
    assert [(r["skipped_steps"], r["loss_scale"]) for r in steps] == [(1, 2.0**15), (1, 2.0**14), (0, 2.0**14)]

    by_train["n"] = 0
    train.train_loop(model, dataclasses.replace(cfg, resume=True, max_iters=5), mlp_batch, poison_first_two, save_state)
    assert by_train["n"] == 1 + 2
    resumed = [r for r in read_log(tmp_path / "o") if "loss" in r][3:]
    assert [(r["skipped_steps"], r["loss_scale"]) for r in resumed] == [(0, 2.0**14), (0, 2.0**14)]


def test_a_float16_log_record_that_spans_a_resume_counts_the_skips_before_it(tmp_path, monkeypatch):
    """A review: float16's count of skipped updates since the last log record was not saved (the loss
    sums were), so a record whose steps spanned a resume (a crash after a --save-interval checkpoint)
    said 0 skipped where the unbroken run said 1. The counts are saved with the checkpoint now, and a
    resumed run's record is the unbroken run's."""
    import dataclasses

    monkeypatch.setattr(train, "setup_runtime", lambda cfg: train_runtime.Runtime(0, 1, torch.device("cpu"), torch.float16))

    def poison_first(model, x, y):  # step 1: NaN gradients, so the scaler skips it
        out = model(x)
        if model.training and poison_first.left:
            poison_first.left -= 1
            out.register_hook(lambda g: g * float("nan"))
        return torch.nn.functional.mse_loss(out, y)

    def run(out: Path, crash: bool) -> list[tuple]:
        poison_first.left = 1
        get_batch = down_in_step_3(crash)

        cfg = mlp_cfg(out, dtype="float16", max_iters=4, log_interval=4, eval_interval=0, save_interval=2)
        model = mlp()
        try:
            train.train_loop(model, cfg, get_batch, poison_first, save_state, progress=False)
        except OSError:
            train.train_loop(model, dataclasses.replace(cfg, resume=True), mlp_batch, poison_first, save_state,
                             progress=False)
        return [(r["step"], r["skipped_steps"], r["loss_scale"]) for r in read_log(out) if "skipped_steps" in r]

    unbroken = run(tmp_path / "unbroken", crash=False)
    assert unbroken == [(4, 1, 2.0**15)]
    assert run(tmp_path / "resumed", crash=True) == unbroken
    assert final_state(tmp_path / "resumed")["scaler_skips"] == [0, 0, True]  # (the record at step 4 took the count)


def down_in_step_3(crash: bool):
    """mlp_batch, or with `crash` a get_batch whose machine goes down in step 3, after step 2's checkpoint."""
    train_batches = {"n": 0}

    def get_batch(split, rng):
        train_batches["n"] += split == "train"
        if crash and train_batches["n"] == 3:
            raise OSError("the machine went down")
        return mlp_batch(split, rng)

    return get_batch


def test_a_float16_row_of_skipped_steps_goes_on_across_a_resume(tmp_path, monkeypatch):
    """A review: of the three skip counts a checkpoint saves (`save_checkpoint`'s scaler_skips), only
    the one since the last log record was tested; a resume that dropped the row's length or whether
    the run kept an update yet went untested. A float16 run whose every step is skipped, crashed
    after step 2's checkpoint and resumed, stops as the unbroken run does: "steps 1-4 (4 in a row,
    every step this run made)". Dropped, the resumed run counted a row of 2 (steps 3-4), or, told
    it had kept an update, ended without a word, untrained."""
    import dataclasses

    monkeypatch.setattr(train, "setup_runtime", lambda cfg: train_runtime.Runtime(0, 1, torch.device("cpu"), torch.float16))

    def poison(model, x, y):  # every training step: NaN gradients, so the scaler skips it
        out = model(x)
        if model.training:
            out.register_hook(lambda g: g * float("nan"))
        return torch.nn.functional.mse_loss(out, y)

    def run(out: Path, crash: bool) -> str:
        get_batch = down_in_step_3(crash)

        cfg = mlp_cfg(out, dtype="float16", max_iters=4, log_interval=4, eval_interval=0, save_interval=2)
        with pytest.raises(TrainingDiverged) as stop:
            try:
                train.train_loop(mlp(), cfg, get_batch, poison, save_state, progress=False)
            except OSError:
                assert final_state(out)["scaler_skips"] == [2, 2, False]  # (what the resume must read back)
                train.train_loop(mlp(), dataclasses.replace(cfg, resume=True), mlp_batch, poison, save_state,
                                 progress=False)
        return str(stop.value)

    unbroken = run(tmp_path / "unbroken", crash=False)
    assert "steps 1-4 (4 in a row, every step this run made)" in unbroken
    assert run(tmp_path / "resumed", crash=True) == unbroken.replace("unbroken", "resumed")


def test_save_checkpoint_has_no_default_for_the_skip_counts_it_saves():
    """A review: save_checkpoint's scaler_skips defaulted to (0, 0, False), "no update kept yet",
    while `restore` reads a state without them as kept_one = step > 0: a caller that left it out
    saved a run at step 1000 as one that never trained. It is a required argument now."""
    import inspect

    parameter = inspect.signature(minigpt.run_dir.save_checkpoint).parameters["scaler_skips"]
    assert parameter.default is inspect.Parameter.empty


def test_a_progress_is_built_with_its_scale():
    """A review: Progress.scale defaulted to 1.0, a trap for a Progress built without it (a float16
    run's first step compares its scale with it: a skip there was missed). It has no default now:
    train_loop gives a fresh run its scaler's scale and a resume the one it restored."""
    with pytest.raises(TypeError, match="scale"):
        train.Progress(step=3)
    assert train.Progress(scale=2.0**16).scale == 2.0**16


def test_a_loss_in_another_unit_logs_no_bits_per_byte_and_loss_unit_must_be_a_string(tmp_path):
    """A review: with loss_unit= naming another unit than nats per token, a bytes_per_token given
    still turned the val loss into "val_bpb" (nats/token ÷ ln 2 ÷ bytes/token, of a loss that is no
    nats/token); and loss_unit=True was taken and logged as the unit. Bits per byte are logged only
    for a loss in nats per token now, and a loss_unit that is not a string (or None) is refused by name."""
    train.train_loop(mlp(), mlp_cfg(tmp_path / "a"), mlp_batch, mse, save_state, loss_unit="squared error",
                     bytes_per_token=3.0, progress=False)
    evaluations = [r for r in read_log(tmp_path / "a") if "val_loss" in r]
    assert evaluations and not any("val_bpb" in r or "val_ppl" in r for r in evaluations)
    train.train_loop(mlp(), mlp_cfg(tmp_path / "b"), mlp_batch, mse, save_state, bytes_per_token=3.0, progress=False)
    assert all("val_bpb" in r for r in read_log(tmp_path / "b") if "val_loss" in r)  # a loss per token: known, converted
    with pytest.raises(TypeError, match=r"^loss_unit must be a string .*got True \(bool\)"):
        train.train_loop(mlp(), mlp_cfg(tmp_path / "c"), mlp_batch, mse, save_state, loss_unit=True)
    assert not (tmp_path / "c").exists()  # refused before any work


def test_each_modules_own_mode_is_given_back_not_only_the_models(tmp_path):
    """A review: the model's mode was given back with model.train(was), which sets every module
    inside to the top's mode, so a frozen BatchNorm left in eval mode inside a training model
    (model.train(); model.bn.eval(), the usual fine-tuning pattern) came back training, its running
    statistics then updated by the caller's next batch. Each module's own mode is given back now: by
    train_loop, and by each evaluation (eval_fn's and the sampled val loss)."""
    def mixed() -> torch.nn.Module:
        model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.BatchNorm1d(16), torch.nn.Linear(16, 1))
        model.train()
        model[1].eval()  # frozen statistics
        return model

    def modes(model: torch.nn.Module) -> list[bool]:
        return [m.training for m in model.modules()]

    model = mixed()
    train.train_loop(model, mlp_cfg(tmp_path / "out"), mlp_batch, mse, save_state, progress=False)
    assert modes(model) == [True, True, False, True]

    model = mixed()
    assert train.eval_fn_metrics(lambda m: {"training": int(m.training)}, model) == {"training": 0}
    assert modes(model) == [True, True, False, True]
    rt = train_runtime.Runtime(0, 1, torch.device("cpu"), torch.float32)
    train.estimate_val_loss(model, mlp_cfg(tmp_path / "unused"), mlp_batch, mse, rt)
    assert modes(model) == [True, True, False, True]


def test_a_batchnorm_left_in_eval_mode_keeps_its_running_statistics_through_a_run(tmp_path):
    """A review: train_loop gave each module's mode back at the end, but trained with model.train(),
    which sets every module inside to training mode, so a BatchNorm the caller froze (model.train();
    model.bn.eval()) moved its running statistics at each step. The run trains each module in the
    mode the caller left it, evaluations included; a model given in eval mode trains whole."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.BatchNorm1d(16), torch.nn.Dropout(0.1),
                                torch.nn.Linear(16, 1))
    model.train()
    model[1].eval()  # frozen statistics
    model[1].requires_grad_(False)
    model[2].eval()  # as a backbone from from_pretrained (in eval mode) inside the caller's own wrapper
    before = {name: t.clone() for name, t in model[1].state_dict().items()}
    dropout_modes = []
    model[2].register_forward_pre_hook(lambda m, args: dropout_modes.append(m.training))
    # max_iters=4, eval_interval=2: an evaluation at step 2, then more steps after it
    train.train_loop(model, mlp_cfg(tmp_path / "frozen"), mlp_batch, mse, save_state, progress=False)
    assert all(torch.equal(t, before[name]) for name, t in model[1].state_dict().items())
    # A review: only a layer with running statistics keeps its eval mode; dropout trains as before.
    assert True in dropout_modes and not model[2].training  # (on in the steps, given back in eval mode)

    model.eval()  # given in eval mode: every module trains, the BatchNorm's statistics too
    train.train_loop(model, mlp_cfg(tmp_path / "whole"), mlp_batch, mse, save_state, progress=False)
    assert model[1].num_batches_tracked.item() == 4
    assert not model.training and not model[1].training  # (given back in eval mode)


def test_drawing_loss_png_leaves_the_callers_matplotlib_backend_and_figures_alone(tmp_path):
    """An audit: draw_curves called matplotlib.use("Agg") and drew through pyplot, so a notebook or
    GUI that called train_loop lost its own backend for good (inline plots and plt.show() stopped
    showing). It draws on a Figure of its own now: pyplot's backend and open figures are as before."""
    import matplotlib
    import matplotlib.pyplot as plt

    before = matplotlib.get_backend()
    matplotlib.use("svg")  # a caller's backend other than Agg, one that needs no display
    try:
        callers = plt.figure()
        records = [{"step": 1, "loss": 5.0}, {"step": 2, "loss": 4.0, "val_loss": 4.5, "val_accuracy": 0.6}]
        minigpt.run_log.draw_curves(records, tmp_path)
        assert matplotlib.get_backend() == "svg" and plt.get_fignums() == [callers.number]
        assert (tmp_path / "loss.png").read_bytes()[:4] == b"\x89PNG"
    finally:
        plt.close("all")
        matplotlib.use(before)


# ---- train_loop as a library call: quiet on request, the model's mode, one run a process, Python's names ----


def test_progress_false_keeps_stdout_and_stderr_free_of_the_runs_progress(tmp_path, capsys):
    """A library audit: train_loop wrote its step lines on stdout (tqdm.write's default), its bar and
    its closing line on stderr, and nothing turned them off: a service whose stdout is its channel
    got "step 2: val_loss ..." in it. progress=False (the name generate_texts, perplexity and
    Tokenizer.train use) turns off all three; the log holds every record all the same."""
    train.train_loop(mlp(), mlp_cfg(tmp_path / "loud"), mlp_batch, mse, save_state)
    loud = capsys.readouterr()
    assert "step 2: val_loss" in loud.out and f"latest: {tmp_path / 'loud'}" in loud.err  # the default: as before

    train.train_loop(mlp(), mlp_cfg(tmp_path / "quiet"), mlp_batch, mse, save_state, progress=False)
    quiet = capsys.readouterr()
    assert quiet.out == "" and "training" not in quiet.err and "latest:" not in quiet.err
    assert [r["step"] for r in read_log(tmp_path / "quiet") if "val_loss" in r] == [2, 4]

    data = make_data(tmp_path / "data")
    pretrain(tiny_cfg(data, tmp_path / "lm", max_iters=2, eval_interval=2), progress=False)
    said = capsys.readouterr()
    assert said.out == "" and "training" not in said.err and "latest:" not in said.err


@pytest.mark.parametrize("fails", [False, True])
def test_train_loop_gives_a_model_given_in_eval_mode_back_in_eval_mode(tmp_path, fails):
    """A library audit: train_loop left a model given in eval mode in training mode, dropout on, so
    the caller's next generate() warned and sampled differently each call. Its mode is given back as
    the random state is, when the run ends and when it fails (here get_batch's error at step 2)."""
    model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Dropout(0.2), torch.nn.Linear(16, 1)).eval()
    batches = []

    def get_batch(split, rng):
        batches.append(split)
        if fails and len(batches) == 2:
            raise OSError("the data went away")
        return mlp_batch(split, rng)

    with pytest.raises(OSError) if fails else contextlib.nullcontext():
        train.train_loop(model, mlp_cfg(tmp_path / "out"), get_batch, mse, save_state, progress=False)
    assert not model.training and not model[1].training


def test_a_train_loop_started_while_another_runs_in_the_process_is_warned_of(tmp_path):
    """A threads audit: two runs at once in one process (a sweep in threads) gave other losses than
    the same runs one after the other, without a word: both draw from torch's one global generator
    (dropout masks, new weights). The second run to start is warned; runs one after the other are not."""
    import threading
    import warnings

    first_in, second_in = threading.Event(), threading.Event()
    errors = []

    def batches(started: threading.Event, wait_for: threading.Event | None):
        def get_batch(split, rng):
            started.set()
            if wait_for is not None:  # the first run holds its first step until the second has started
                wait_for.wait(timeout=60)
            return mlp_batch(split, rng)
        return get_batch

    def run(out: str, get_batch) -> None:
        try:
            train.train_loop(mlp(), mlp_cfg(tmp_path / out, max_iters=2), get_batch, mse, save_state, progress=False)
        except Exception as e:  # (a thread's error would be lost: the test reports it)
            errors.append(e)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run("a", mlp_batch)
        run("b", mlp_batch)
        assert not caught  # one after the other: no warning
        first = threading.Thread(target=run, args=("c", batches(first_in, second_in)))
        first.start()
        assert first_in.wait(timeout=60)  # the first run is in its loop ...
        second = threading.Thread(target=run, args=("d", batches(second_in, None)))
        second.start()  # ... when the second starts
        first.join()
        second.join()
    assert not errors
    assert [str(w.message)[:85] for w in caught] == [
        "a training run (train_loop) started while 1 other run(s) train in this process: they "]
    assert "neither run is reproducible" in str(caught[0].message) and train.CountedRun.running == 0


def test_train_loops_warnings_name_the_python_argument_beside_the_flag(tmp_path, capsys):
    """A library audit: train_loop's warnings named the CLI's flags alone ("lower --warmup-iters"),
    which a Python caller does not pass; each names the TrainConfig field too."""
    train.train_loop(mlp(), mlp_cfg(tmp_path / "out", max_iters=2, warmup_iters=3, lr=0.0, min_lr=0.0), mlp_batch, mse,
                     save_state, progress=False)
    err = capsys.readouterr().err
    assert "lower --warmup-iters (warmup_iters= in Python)" in err
    assert "give --lr (and --min-lr) > 0 (lr=, min_lr= in Python) to train" in err


def test_messages_a_python_caller_meets_name_the_config_field_too(tmp_path):
    """An audit: a TrainConfig or train_loop called from Python was told to "lower --min-lr", or to
    give the command "without --resume (or ... with --auto-resume)": flags a Python caller has not.
    The remedy names the config field beside the flag now."""
    with pytest.raises(ValueError, match=re.escape("lower --min-lr (min_lr= in Python)")):
        mlp_cfg(tmp_path / "out", lr=0.1, min_lr=1.0)
    with pytest.raises(FileNotFoundError, match=re.escape("without --resume (resume=False in Python), or, in a script "
                                                          "that may run again, with --auto-resume (auto_resume=True in Python)")):
        train.train_loop(mlp(), mlp_cfg(tmp_path / "none", resume=True), mlp_batch, mse, save_state, progress=False)
    # A review found more: the diverged run's advice, the second Ctrl-C's, pretrain's missing data.
    float16 = train_runtime.Runtime(0, 1, torch.device("cpu"), torch.float16)
    assert str(train.diverged(TrainingDiverged("loss is nan at step 3"), None, tmp_path, float16)).endswith(
        "Try a lower --lr (lr= in Python), or --dtype float32 (dtype='float32' in Python).")
    train.train_loop(mlp(), mlp_cfg(tmp_path / "ran"), mlp_batch, mse, save_state, progress=False)
    assert train.stopped_at_once(tmp_path / "ran").endswith("continue from it with --resume (resume=True in Python)")
    with pytest.raises(ValueError, match=re.escape("--data (data= in Python) is required")):
        pretrain(TrainConfig(out=str(tmp_path / "p")), progress=False)


def test_pretrain_and_train_loop_leave_the_callers_config_as_it_was(tmp_path):
    """An audit: pretrain(cfg) wrote the settings it settles into the caller's TrainConfig (block_size
    from the model, auto_resume into resume), and so did train_loop (auto_resume), so a config reused
    for another run carried this one's. Each settles a copy now, which the log and the saved state
    record. train_loop's copy runs no check again: pretrain's settled config, allow_new_data with an
    --auto-resume that found no run, is one a new TrainConfig refuses."""
    import dataclasses

    data = make_data(tmp_path / "data")
    cfg = tiny_cfg(data, tmp_path / "lm", block_size=None, n_positions=16, max_iters=2, eval_interval=2,
                   auto_resume=True, allow_new_data=True)
    passed = dataclasses.asdict(cfg)
    pretrain(cfg, progress=False)
    assert dataclasses.asdict(cfg) == passed
    for settled in (read_log(tmp_path / "lm")[0]["config"], final_state(tmp_path / "lm")["config"]):
        assert (settled["block_size"], settled["resume"], settled["auto_resume"]) == (16, False, False)

    cfg = mlp_cfg(tmp_path / "mlp", auto_resume=True)
    passed = dataclasses.asdict(cfg)
    train.train_loop(mlp(), cfg, mlp_batch, mse, save_state, progress=False)
    assert dataclasses.asdict(cfg) == passed
    assert (read_log(tmp_path / "mlp")[0]["config"]["resume"], final_state(tmp_path / "mlp")["config"]["auto_resume"]) == \
        (False, False)


def test_train_config_keeps_a_torch_device_and_dtype_by_name(tmp_path):
    """A types audit: TrainConfig(device=torch.device("cpu")) was taken, then train_loop failed
    writing log.jsonl ("Object of type device is not JSON serializable"); dtype=torch.float32, which
    GPT.from_pretrained takes, was refused. Both are kept by name now, and such a config trains and
    logs; a dtype training does not run in (float64) is refused by its name, as before."""
    cfg = mlp_cfg(tmp_path / "out", device=torch.device("cpu"), dtype=torch.float32)
    assert (cfg.device, cfg.dtype) == ("cpu", "float32")
    assert TrainConfig(device=torch.device("cuda", 1), dtype=torch.half).device == "cuda:1"
    assert TrainConfig(dtype=torch.bfloat16).dtype == "bfloat16"
    with pytest.raises(ValueError, match="dtype must be one of auto, float32, bfloat16, float16, got 'float64'"):
        TrainConfig(dtype=torch.float64)
    train.train_loop(mlp(), cfg, mlp_batch, mse, save_state, progress=False)
    logged = read_log(tmp_path / "out")
    assert (logged[0]["config"]["device"], logged[0]["config"]["dtype"]) == ("cpu", "float32")
    assert [r["step"] for r in logged if "val_loss" in r] == [2, 4]


def test_a_compiled_model_trains_as_given_and_its_run_resumes_on_the_model_itself(tmp_path):
    """An audit: train_loop(torch.compile(model), cfg) trained, but saved the wrapper's state dict, each
    weight named `_orig_mod.<name>`, in training_state.pt, and a resume on the model itself failed,
    blaming "another model or other trainable parameters". The wrapper now runs the steps and the
    evaluations, and the module inside is what is saved, restored, and given to eval_fn and save_fn.
    (backend="eager": torch.compile traces the model, without Inductor's minutes of C++ builds.)"""
    data = make_data(tmp_path / "data")
    tokens = load_tokens(data / "train.bin", VOCAB, 17)
    cfg = tiny_cfg(data, tmp_path / "out", n_layer=1, max_iters=2, eval_interval=2)
    graphs, given_to = [], []

    def counting(gm: torch.fx.GraphModule, inputs):  # the eager backend, counting the graphs it runs
        graphs.append(gm)
        return gm.forward

    def save_fn(m, d):
        given_to.append(type(m).__name__)
        m.save_pretrained(d)

    def eval_fn(m):
        given_to.append(type(m).__name__)
        return {}

    model = build_model(cfg, VOCAB)
    train.train_loop(torch.compile(model, backend=counting), cfg, lambda split, rng: sample_batch(tokens, 16, 4, rng),
                     save_fn=save_fn, eval_fn=eval_fn, progress=False)
    assert graphs and set(given_to) == {"GPT"}  # the wrapper ran; eval_fn and save_fn got the module
    assert all(not name.startswith("_orig_mod.") for name in final_state(tmp_path / "out")["model"])
    resumed = tiny_cfg(data, tmp_path / "out", n_layer=1, max_iters=3, eval_interval=2, resume=True)
    train.train_loop(build_model(cfg, VOCAB), resumed, lambda split, rng: sample_batch(tokens, 16, 4, rng),
                     progress=False)
    assert final_state(tmp_path / "out")["step"] == 3


def test_a_compiled_model_with_cfg_compile_is_compiled_once_not_twice(tmp_path, monkeypatch):
    """An audit: with cfg.compile, train_loop compiled the torch.compile(model) it was given again, a
    wrapper around a wrapper. It compiles the module inside, once."""
    data = make_data(tmp_path / "data")
    tokens = load_tokens(data / "train.bin", VOCAB, 17)
    cfg = tiny_cfg(data, tmp_path / "out", n_layer=1, max_iters=1, eval_interval=1, compile=True)
    model = build_model(cfg, VOCAB)
    wrapper = torch.compile(model, backend="eager")
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda m: compiled.append(m) or m)  # (what train_loop compiles, run eagerly)
    train.train_loop(wrapper, cfg, lambda split, rng: sample_batch(tokens, 16, 4, rng), progress=False)
    assert len(compiled) == 1 and compiled[0] is model


def test_a_state_saved_from_a_compiled_wrapper_by_an_earlier_minigpt_resumes(tmp_path):
    """An earlier minigpt, given torch.compile(model), saved each weight under its `_orig_mod.` prefix;
    --resume refused that state as "saved from another model". Its weights are read back under the
    model's own names (resume.py's `restore`). So are the names of its frozen weights, and its digest
    is compared under the prefixed names it hashed: read as they were saved, a model with frozen
    weights never matched them, and its resume died as "saved from another model" again."""
    data = make_data(tmp_path / "data")
    tokens = load_tokens(data / "train.bin", VOCAB, 17)
    batches = lambda split, rng: sample_batch(tokens, 16, 4, rng)  # noqa: E731

    def frozen_model(cfg):  # a strategy's frozen weights: wpe does not train
        model = build_model(cfg, VOCAB)
        model.transformer.wpe.weight.requires_grad_(False)
        return model

    cfg = tiny_cfg(data, tmp_path / "out", n_layer=1, max_iters=2, eval_interval=2)
    train.train_loop(frozen_model(cfg), cfg, batches, progress=False)
    state = final_state(tmp_path / "out")
    state["model"] = {f"_orig_mod.{name}": t for name, t in state["model"].items()}
    wrapper = torch.nn.Module()  # its state dict names each weight `_orig_mod.<name>`, as the compiled wrapper's does
    wrapper._orig_mod = frozen_model(cfg)
    state["frozen"] = minigpt.run_dir.frozen_weights(wrapper)  # what the earlier minigpt saved: prefixed names, hashed so
    assert state["frozen"]["names"] == ["_orig_mod.transformer.wpe.weight"]
    torch.save(state, tmp_path / "out" / STATE_FILE)
    resumed = tiny_cfg(data, tmp_path / "out", n_layer=1, max_iters=3, eval_interval=2, resume=True)
    changed = frozen_model(cfg)  # other frozen weights than the run's: the digest still tells them apart
    with torch.no_grad():
        changed.transformer.wpe.weight.add_(1.0)
    with pytest.raises(ValueError, match="saved beside other frozen weights"):
        train.train_loop(changed, resumed, batches, progress=False)
    train.train_loop(frozen_model(cfg), resumed, batches, progress=False)
    assert final_state(tmp_path / "out")["step"] == 3


def test_a_seed_past_64_bits_is_refused_by_name_not_by_torch(tmp_path, capsys):
    """An audit: `minigpt train --seed 18446744073709551616` ended in torch's bare "Overflow when
    unpacking long long" once the run started, where generate names --seed and its range. The
    config now refuses a seed past 2**64 - 1 in the form of its other checks; 2**64 - 1 itself
    is a seed torch takes."""
    with pytest.raises(ValueError, match=re.escape(f"seed must be <= 2**64 - 1 (torch's generators take a 64-bit seed), "
                                                   f"got {2**64}")):
        TrainConfig(seed=2**64)
    assert TrainConfig(seed=2**64 - 1).seed == 2**64 - 1
    assert train_main(["--data", str(tmp_path), "--out", str(tmp_path / "out"), "--seed", str(2**64)]) == 2
    err = capsys.readouterr().err
    assert "error: seed must be <= 2**64 - 1" in err and "Overflow" not in err, err
    assert not (tmp_path / "out").exists()


def test_train_and_finetune_help_name_mps_and_compile_on_a_cpu(capsys):
    """An audit: train's and finetune's --help (one set of flags) said --device takes "cpu, cuda,
    cuda:N or auto", though mps is taken, as generate's help says, and that --compile is for a
    GPU, though README says it runs on a CPU with a C++ compiler."""
    from minigpt.finetune import main as finetune_main

    for main in (train_main, finetune_main):
        with pytest.raises(SystemExit):
            main(["--help"])
        flat = " ".join(capsys.readouterr().out.split())  # argparse wraps the help to the terminal's width
        assert "--device DEVICE cpu, cuda, cuda:N, mps or auto: cuda when available (default: auto)" in flat, main
        assert "torch.compile the model (slow to start; on a CPU it needs a C++ compiler: g++, clang++ on macOS, or $CXX)" in flat
