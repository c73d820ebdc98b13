"""Training: the loop that turns batches into better weights.

Where it sits: a driver's batches (x, y, ...) → model → loss → backward → AdamW → checkpoint in
HF layout. Its two drivers are minigpt/pretrain.py (`minigpt train`: a GPT on token files from
minigpt/data.py) and minigpt/finetune.py (`minigpt finetune`).

`train_loop` knows nothing about language modelling. It takes a model, a batch source and a loss,
and does what a long run needs: learning-rate schedule, gradient accumulation and clipping, mixed
precision, DDP, periodic eval, logs and a loss-curve PNG, atomic checkpoints with exact resume,
Ctrl-C and NaN handling. Each driver builds its own model, batches and loss, and calls it.

Exact resume without saving RNG states: every random draw is seeded from (seed, step, ...). At
step s, micro-step m of process `rank` is the global micro-batch g = m·world + rank; its batch is
drawn with a generator seeded by `seed_for(seed, TRAIN_STREAM, s, g)`, and its dropout masks from
`seed_for(seed, DROPOUT_STREAM, s, g)`. So the step number *is* the RNG state and the data position,
and a resumed run, or a run on a different number of processes, draws exactly the same numbers.

The config of a run (`TrainConfig`) and the command-line flags built from its fields are
minigpt/train_config.py; the optimizer (AdamW's weight-decay groups) and the learning-rate
schedule are minigpt/optimizer.py. What a run leaves in OUT_DIR (checkpoints, training_state.pt), and
how `--resume` reads it back, are minigpt/run_dir.py and minigpt/resume.py; its log.jsonl and loss.png are minigpt/run_log.py. Its processes (torchrun / DDP)
and device, how a signal stops it, and its exit codes are minigpt/train_runtime.py.
"""
from __future__ import annotations

import copy
import math
import shlex
import sys
import threading
import time
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from tqdm import tqdm

from minigpt import linear
from minigpt.checks import caller_stacklevel, check_flag
from minigpt.classifier import GPTClassifier
from minigpt.files import read_json
from minigpt.model import GPT
from minigpt.optimizer import HALF_WEIGHTS_ERROR, build_optimizer, lr_at
from minigpt.progress_bar import progress_bar
from minigpt.resume import read_state, restore
from minigpt.run_dir import STATE_FILE, check_out_dir, drop_previous_best, frozen_weights, run_dir_lock, save_best, save_checkpoint
from minigpt.run_log import LOG_FILE, append_log, evaluated_at, opening_record, plot_log, read_log, reported_at
from minigpt.stats import peak_flops
from minigpt.tokenizer_files import TOKENIZER_FILES
from minigpt.train_config import TrainConfig
from minigpt.train_runtime import (Runtime, Stopped, StopSignal, TrainingDiverged, on_rank_0, setup_runtime,
                                   tf32_matmuls)

# Seed streams, so the draws of batches, eval batches and dropout never coincide.
TRAIN_STREAM, EVAL_STREAM, DROPOUT_STREAM = 0, 1, 2
# float16's GradScaler skips a step whose gradients hold inf or NaN and halves its loss scale, so a
# run of skipped steps is routine only while the scale finds its level (a few in a row, from its start
# at 2^16, and one now and then when it tries a larger scale). After this many in a row the scale has
# fallen 2^20 (about a million-fold: from 2^16 to 2^-4), and gradients that overflow still are no
# rounding matter but NaN or inf themselves: the run has diverged, and would only go on skipping.
MAX_SKIPPED_IN_A_ROW = 20


# ---- the pieces of one step ---------------------------------------------------------------------


def seed_for(*parts: int) -> int:
    """A well-mixed 64-bit seed from a tuple of ints (seed, stream, step, ...)."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1, np.uint64)[0])


def lm_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy; y holds the next tokens (B, T), IGNORE_INDEX (-100) = skip."""
    return model(x, y)[1]


# ---- the loop -----------------------------------------------------------------------------------

Batch = tuple[torch.Tensor, ...]


@torch.no_grad()
def estimate_val_loss(model: nn.Module, cfg, get_batch, loss_fn, rt: Runtime) -> float:
    """Mean loss over cfg.eval_iters val batches, the same batches every time (seeded by index),
    so two evaluations differ only because the weights did. Processes split the batches. The
    model and each module inside it are given back in their modes (`mode_given_back`)."""
    total = torch.zeros(2, device=rt.device)  # (sum of losses, count)
    with mode_given_back(model):
        model.eval()
        for k in range(rt.rank, cfg.eval_iters, rt.world):
            rng = torch.Generator().manual_seed(seed_for(cfg.seed, EVAL_STREAM, k))
            batch = on_device(get_batch("val", rng), rt)
            with rt.autocast():
                total += torch.stack([loss_fn(model, *batch).float(), torch.ones((), device=rt.device)])
    if rt.world > 1:
        dist.all_reduce(total)
    return (total[0] / total[1]).item()


def on_device(batch, rt: Runtime) -> list[torch.Tensor]:
    """get_batch's `batch` on the run's device. Anything but a tuple or list of tensors is refused
    here, naming get_batch: torch's own error ("'int' object has no attribute 'to'") names neither,
    and a single tensor would be split into its rows as if they were the batch's tensors."""
    if isinstance(batch, (tuple, list)) and batch and all(isinstance(t, torch.Tensor) for t in batch):
        return [rt.to_device(t) for t in batch]
    if not isinstance(batch, (tuple, list)):
        got = f"a {type(batch).__name__}"
    elif not batch:
        got = f"an empty {type(batch).__name__}"
    else:
        got = f"a {type(batch).__name__} holding {', '.join(type(t).__name__ for t in batch)}"
    raise TypeError(f"get_batch returned {got}: it must return a tuple (or list) of tensors, e.g. (x, y), which the "
                    "loop moves to the device and passes on as loss_fn(model, *batch)")


def evaluate(run: Run) -> dict[str, float]:
    """One evaluation: `eval_fn`'s metrics (on the plain model `run.raw`), and unless they hold a
    val_loss of their own (a classifier's, over every val example), the val loss of the compiled
    model `run.fwd` on cfg.eval_iters batches; when that loss is in nats per token (`run.loss_unit`),
    its perplexity, and its bits per byte if `bytes_per_token` is known. Of a loss in another unit
    neither: exp() of it means nothing, and nor does dividing it by ln 2 and bytes per token."""
    record = eval_fn_metrics(run.eval_fn, run.raw) if run.eval_fn is not None else {}
    if "val_loss" in record:  # (a loss per example, not per token: no perplexity)
        return {"val_loss": record.pop("val_loss"), **record}
    metrics = {"val_loss": estimate_val_loss(run.fwd, run.cfg, run.get_batch, run.loss_fn, run.rt)}
    if run.loss_unit != "nats/token":
        return {**metrics, **record}
    # exp() overflows a float past ~709: a diverged loss logs a huge perplexity, not an error.
    metrics["val_ppl"] = math.exp(min(metrics["val_loss"], 700))
    if run.bytes_per_token:
        # nats/token → bits/token (÷ ln 2) → bits/byte (÷ bytes per token): comparable across
        # tokenizers, unlike perplexity.
        metrics["val_bpb"] = metrics["val_loss"] / math.log(2) / run.bytes_per_token
    return {**metrics, **record}


def eval_fn_metrics(eval_fn: Callable[[nn.Module], dict[str, float]], raw: nn.Module) -> dict[str, float]:
    """eval_fn's metrics, with `raw` in eval mode (no dropout noise; a BatchNorm normalises by its
    running statistics and does not update them from val data) and no autograd graph built, as
    `estimate_val_loss` measures; raw and each module inside it are given back in their modes after
    (`mode_given_back`). Autocast is eval_fn's to choose (the sft task's runs under the run's dtype;
    the classify task's scores in float32, as eval does)."""
    with mode_given_back(raw), torch.no_grad():
        raw.eval()
        record = eval_fn(raw)
    return plain_metrics(record)


def plain_metrics(record) -> dict[str, float]:
    """eval_fn's `record` as the log takes it: a dict of real numbers by name, a 0-d tensor or a
    NumPy scalar taken as its Python number. Anything else is refused here, naming eval_fn, where
    it failed later as a JSON error (a tensor) or a format error (a string) naming neither."""
    if not isinstance(record, dict):
        raise TypeError(f"eval_fn returned {repr(record)[:40]} (a {type(record).__name__}): it must return a dict of "
                        "metrics by name, e.g. {'val_accuracy': 0.91}")
    if "step" in record:
        raise ValueError("eval_fn's metrics hold 'step', the loop's own key in each log record (the step evaluated): "
                         "give that metric another name")
    metrics = {}
    for name, value in record.items():
        if isinstance(value, (torch.Tensor, np.ndarray, np.generic)) and value.ndim == 0:
            value = value.item()  # a float or an int (a bool or a complex number: refused below)
        if not isinstance(name, str) or isinstance(value, bool) or not isinstance(value, (int, float)):
            shown = f"a tensor of shape {tuple(value.shape)}" if hasattr(value, "shape") else repr(value)[:40]
            raise TypeError(f"eval_fn's metric {name!r} is {shown} ({type(value).__name__}): each metric must be a "
                            "real number (int or float; a 0-d tensor or a NumPy scalar is taken as one) named by "
                            "a string")
        metrics[name] = value
    return metrics


def train_step(model, optimizer, scaler, get_batch, loss_fn, cfg, rt: Runtime, step: int) -> tuple[float, float | None, int]:
    """One optimizer step: cfg.grad_accum micro-batches → averaged gradients → clip → AdamW.

    Returns (mean loss over the global batch, gradient norm before clipping (None when grad_clip
    is 0: then it is measured only for the divergence check), tokens seen by all processes).
    Raises TrainingDiverged *before* the update if the loss, or the gradient norm (a NaN gradient
    can come from a finite loss), is NaN or inf. Under float16's GradScaler a gradient that is not
    finite is routine: the scaler skips the update and lowers its scale, and `train_and_log`
    counts those skips (`skipped_by_scaler`).
    """
    lr = lr_at(step, cfg)
    for group in optimizer.param_groups:
        group["lr"] = lr
    micro_steps = cfg.grad_accum // rt.world
    loss_sum, tokens = torch.zeros((), device=rt.device), 0
    for m in range(micro_steps):
        # Micro-batch m of process r is the global micro-batch m·world + r, and its batch and its
        # dropout masks are seeded by that number, so N processes with grad_accum A draw the same
        # batches and masks as one process with the same A.
        micro_batch = m * rt.world + rt.rank
        rng = torch.Generator().manual_seed(seed_for(cfg.seed, TRAIN_STREAM, step, micro_batch))
        torch.manual_seed(seed_for(cfg.seed, DROPOUT_STREAM, step, micro_batch))  # its dropout masks
        batch = on_device(get_batch("train", rng), rt)
        tokens += batch[0].numel() * rt.world  # (a language model's token ids; for other batches, batch[0]'s elements)
        # DDP all-reduces gradients during backward; before the last micro-step that is wasted
        # work, so no_sync() (around the forward *and* the backward) skips it.
        last = m == micro_steps - 1
        with model.no_sync() if rt.world > 1 and not last else nullcontext():
            with rt.autocast():
                loss = loss_fn(model, *batch)
            # Dividing by micro_steps makes the summed gradients a mean over this process's
            # micro-batches; DDP's all-reduce then averages over processes.
            scaler.scale(loss / micro_steps).backward()
        loss_sum += loss.detach().float()
    if rt.world > 1:
        dist.all_reduce(loss_sum)
    grad_norm = torch.zeros_like(loss_sum)  # 0: not measured (float16 without clipping: its scaler checks)
    # Clipping: one unlucky batch can give a gradient many times the usual size, and one step along
    # it would throw the weights far from where training had brought them; scaled down to norm
    # grad_clip, the step keeps its direction but not its size.
    if cfg.grad_clip:
        scaler.unscale_(optimizer)  # clip the true gradients, not the fp16-scaled ones
        params = [p for g in optimizer.param_groups for p in g["params"]]
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
    elif not scaler.is_enabled():  # measured all the same, for the check below (only a clipped run logs it)
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        grad_norm = torch.nn.utils.get_total_norm(grads).to(loss_sum)
    # The one host sync per step reads both numbers. With float16's GradScaler an inf gradient
    # is routine (the scaler skips that step and lowers its scale), so only the loss counts then.
    loss_total, norm = torch.stack([loss_sum, grad_norm.float()]).tolist()
    train_loss = loss_total / cfg.grad_accum
    if not math.isfinite(train_loss):
        raise TrainingDiverged(f"loss is {train_loss} at step {step + 1}; stopping before the update")
    if not math.isfinite(norm) and not scaler.is_enabled():
        raise TrainingDiverged(f"the gradient norm is {norm} at step {step + 1} (the loss, {train_loss:.4g}, is "
                               "finite); stopping before the update")
    scaler.step(optimizer)  # skips the update if fp16 gradients overflowed
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return train_loss, norm if cfg.grad_clip else None, tokens


# The GPT's switches that save memory (TrainConfig's flags of the same names: checkpointing pays
# for it in compute, the chunked loss does not), and what each does, for the error when the
# model being trained holds no GPT to switch.
MEMORY_SWITCHES = {"gradient_checkpointing": "recomputes a GPT's blocks",
                   "chunked_loss": "computes a GPT's language-model loss in chunks"}


def gpts_in(model: nn.Module, what: str) -> list[GPT]:
    """Every GPT inside `model` (a classifier holds one), for a setting `what` says; none is an error."""
    gpts = [m for m in model.modules() if isinstance(m, GPT)]
    if not gpts:
        raise ValueError(f"{what}, but the {type(model).__name__} being trained holds no GPT")
    return gpts


def switch_on(model: nn.Module, name: str) -> None:
    """Turn the memory switch `name` on in every GPT inside `model`."""
    for gpt in gpts_in(model, f"{name} {MEMORY_SWITCHES[name]}"):
        setattr(gpt, name, True)


def prepare_model(model: nn.Module, cfg, rt: Runtime) -> nn.Module:
    """The model on its device, with cfg's memory switches and dropout (a model from Python may not
    have them: `minigpt train` has set dropout already)."""
    model = model.to(rt.device)
    # A loaded model's Conv1D weights are transposed views into its checkpoint file (load_gpt
    # copies nothing it need not convert). Training writes every weight each step, and gradients
    # take their weight's layout: trained on the views, 124M's first step on a CPU took 1.2 s
    # longer (the file's pages copied one by one as written), and each later one 3-14% longer.
    for p in model.parameters():
        if not p.is_contiguous():
            p.data = p.data.contiguous()
    for name in MEMORY_SWITCHES:
        if getattr(cfg, name):
            switch_on(model, name)
    if cfg.dropout is not None:
        for gpt in gpts_in(model, f"dropout={cfg.dropout} is a GPT's dropout rate"):
            gpt.set_dropout(cfg.dropout)
    return model


def unwrapped(model: nn.Module) -> nn.Module:
    """`model` itself, or the module inside it when it is torch.compile's wrapper (an OptimizedModule,
    which keeps it as `_orig_mod`). Told by that attribute: the wrapper's class lives in a private
    torch module, and importing it would import torch's compiler into every run."""
    inner = getattr(model, "_orig_mod", None)
    return inner if isinstance(inner, nn.Module) else model


def for_training(raw: nn.Module, cfg, rt: Runtime, given: nn.Module) -> tuple[nn.Module, nn.Module]:
    """(fwd, model): `raw` compiled if cfg.compile (fwd, what evaluation calls), then wrapped in DDP
    under torchrun (model, what a training step calls: its backward all-reduces the gradients).
    Compiled first, then wrapped, as DDP expects. Without cfg.compile, fwd is the model train_loop
    was `given`: raw itself, or torch.compile(raw), which then runs as the caller compiled it. With
    cfg.compile, raw is compiled once (not the caller's wrapper again)."""
    fwd = torch.compile(raw) if cfg.compile else given
    if rt.world == 1:
        return fwd, fwd
    from torch.nn.parallel import DistributedDataParallel as DDP

    return fwd, DDP(fwd, device_ids=[rt.device.index] if rt.device.type == "cuda" else None)


def open_out_dir(out: Path, cfg, rt: Runtime) -> None:
    """OUT_DIR made (a resumed run's log was cut back to its checkpoint by `restore`), and rank 0's
    word on settings that train, but not as meant. Rank 0 alone writes OUT_DIR; on_rank_0 tells the
    others when that fails, for one error, not a traceback each."""
    on_rank_0(rt, lambda: out.mkdir(parents=True, exist_ok=True))
    if rt.is_main and cfg.warmup_iters > cfg.max_iters:  # legal (a short test run), but rarely what was meant
        print(f"warning: warmup_iters ({cfg.warmup_iters}) > max_iters ({cfg.max_iters}): the learning rate only "
              f"reaches {lr_at(cfg.max_iters - 1, cfg):.3g} of --lr {cfg.lr:g}; lower --warmup-iters (warmup_iters= in "
              "Python)", file=sys.stderr)
    if rt.is_main and cfg.lr == 0:  # legal (a check that a run ends where it began), and a run that trains nothing
        print("warning: --lr 0: no step changes the weights (the run only evaluates them); give --lr (and --min-lr) > 0 "
              "(lr=, min_lr= in Python) to train", file=sys.stderr)
    # linear.py's tests: an x86 CPU with oneDNN (ONEDNN) whose oneDNN has no bf16 kernels (ONEDNN_BF16:
    # AVX-512) emulates each bf16 matmul (a gpt2-tiny run on an AVX2 AMD EPYC: 3.5k tokens/s against
    # 30k in float32). Elsewhere (MINIGPT_ONEDNN=0, an ARM CPU) the flags do not tell: nothing is said.
    if (rt.is_main and rt.device.type == "cpu" and rt.dtype == torch.bfloat16
            and linear.ONEDNN and not linear.ONEDNN_BF16):
        print("note: --dtype bfloat16 on this CPU, which has no AVX-512: its bf16 matmuls are emulated, several times "
              "slower than float32's; --dtype float32 trains faster here", file=sys.stderr)


def handoff(out: Path, raw: nn.Module) -> str:
    """The line a finished run ends with: where its weights are, and the commands that take them
    next. best/ (the lowest val loss) is what to use; OUT_DIR holds the last step's weights. A
    classifier is scored on a labelled TSV file and generates nothing; a model saved without a
    tokenizer (data prepared without one) needs --tokenizer."""
    best = out / "best"
    said = []
    if (best / "metrics.json").is_file():  # (none when no evaluation improved on +inf: every val loss NaN)
        record = read_json(best / "metrics.json")
        accuracy = f", val accuracy {record['val_accuracy']:.4g}" if "val_accuracy" in record else ""
        said.append(f"best: {best} (step {record['step']}, val loss {record['val_loss']:.4g}{accuracy})")
    model_dir = best if said else out
    said.append(f"latest: {out}")
    model = shlex.quote(str(model_dir))
    if not any((model_dir / name).is_file() for name in TOKENIZER_FILES):
        model += " --tokenizer TOKENIZER_DIR"
    if isinstance(raw, GPTClassifier):
        said.append(f"next: minigpt eval {model} FILE.tsv")
    elif isinstance(raw, GPT):
        said.append(f"next: minigpt generate --model {model}, minigpt eval {model} FILE")
    return "; ".join(said)


def diverged(e: TrainingDiverged, last_saved: int | None, out: Path, rt: Runtime) -> TrainingDiverged:
    """A NaN/inf loss, told with what is kept and what to try."""
    # (Not "the last good one": its weights were finite, but its val loss may have been rising already.)
    kept = (f"the last checkpoint, saved at step {last_saved}, before the run went non-finite, is in {out}"
            if last_saved is not None else "no checkpoint was saved yet")
    # (advice for bf16/fp16 runs only)
    precision = ", or --dtype float32 (dtype='float32' in Python)" if rt.dtype != torch.float32 else ""
    return TrainingDiverged(f"{e}; {kept}. Try a lower --lr (lr= in Python){precision}.")


def stopped_at_once(out: Path) -> str:
    """What OUT_DIR holds after a second Ctrl-C, which stops the run wherever it is, perhaps in the
    middle of a checkpoint: read from the disk, since the stop may have come after the training
    state's rename but before the loop knew it had saved."""
    state, said = out / STATE_FILE, "stopped at once by a second Ctrl-C"
    if state.exists():
        step = read_state(state, map_location="cpu", mmap=True)["step"]
        return (f"{said}: {state} holds step {step}, the last checkpoint written whole (each of its files is replaced "
                "atomically, the training state last); continue from it with --resume (resume=True in Python)")
    if not out.is_dir() or {p.name for p in out.iterdir()} <= {".lock"}:  # (run_dir_lock removes the dir it made)
        return f"{said}, before anything was saved: the same command starts the run again"
    if (out / LOG_FILE).exists():  # the evidence --resume takes for a run to start again (`restart_unsaved_run`)
        return (f"{said}, before the run's first checkpoint: the same command with --resume (resume=True in Python) "
                "starts it again from step 0")
    # Part of a first checkpoint and no log: as a model someone put there, which nothing overwrites.
    return (f"{said}, while the run's first checkpoint was written, before any log record: {out} holds part of it but "
            f"no {STATE_FILE}, so neither the same command nor --resume takes it for this run's; delete {out}, then "
            "give the same command")


# ---- the run: train_loop, then the steps it takes, in their order -----------------------------


def train_loop(
    model: nn.Module,
    cfg: TrainConfig,
    get_batch: Callable[[str, torch.Generator], Batch],
    loss_fn: Callable[..., torch.Tensor] = lm_loss,
    save_fn: Callable[[nn.Module, Path], None] | None = None,
    *,
    eval_fn: Callable[[nn.Module], dict[str, float]] | None = None,
    bytes_per_token: float | None = None,
    flops_per_token: float | None = None,
    data_fingerprint: dict | None = None,
    loss_unit: str | None = None,
    progress: bool = True,
) -> dict[str, float]:
    """Train `model` for cfg.max_iters optimizer steps; return the final metrics.

    `model` may come compiled, torch.compile(model): the wrapper runs the steps and evaluations, and
    the module inside is what is saved, restored, and given to save_fn and eval_fn (its weights'
    names without the wrapper's `_orig_mod.` prefix, so the eager model resumes the run).

    get_batch(split, rng) -> tuple (or list) of tensors (usually (x, y)); split is "train" or "val",
        and every random choice must come from `rng` (that is what makes resume exact). The
        elements of batch[0] are what tokens_per_s counts (a language model's token ids).
    loss_fn(model, *batch) -> scalar loss. Under DDP `model` is the DDP wrapper, so call its
        forward (model(...)), not another method, or gradients will not be synchronised. With
        `lm_loss` itself (the default), or `bytes_per_token` given (a loss per token), evaluations
        log the perplexity (val_ppl) and loss.png's axis says nats/token; of another loss of the
        caller's, the loop knows no unit (unless `loss_unit` names it), and logs neither.
    save_fn(model, dir) writes an exportable checkpoint into dir, which exists (default:
        model.save_pretrained; a model without one is refused before any step).
    eval_fn(model) -> extra metrics (e.g. accuracy): a dict of real numbers by name (a 0-d tensor
        or NumPy scalar is taken as its number; "step" is the loop's), run at each evaluation on
        every process at once, so it may split its work and all-reduce (finetune's classify scores
        do). It runs as the sampled val loss does: the model in eval mode (no dropout; BatchNorm
        uses its running statistics), under torch.no_grad() (autocast is its own to choose), and
        each module's mode is given back after. A val_loss among them replaces the loss of
        cfg.eval_iters sampled val batches (and best/ follows it; a val loss that is not finite
        never makes best/, and is warned of once).
    bytes_per_token turns a val loss in nats per token into bits per byte; flops_per_token gives MFU on a GPU.
    data_fingerprint (e.g. minigpt/data.py's `data_fingerprint`) is saved with each checkpoint, and
        --resume refuses data whose fingerprint differs (minigpt/resume.py's `check_data`).
    loss_unit names what a loss of the caller's is measured in (finetune's classify task: "nats per
        text"), for the opening log record and loss.png's axis; None (the default): the unit the
        loop knows (`known_loss_unit`). "nats/token" logs a perplexity too, and bits per byte with
        bytes_per_token; under another unit bytes_per_token is not used (it converts nats per token only).
    progress=False: no progress bar, no step lines on stdout and no closing line on stderr (the log
        has it all), for a caller whose stdout is its own channel; warnings, notes and a stop's
        messages are still said, on stderr.
    Raises Stopped (a KeyboardInterrupt) after saving on Ctrl-C/SIGTERM, TrainingDiverged on a NaN/inf loss
    (or gradient norm), or after float16's loss scaler skipped MAX_SKIPPED_IN_A_ROW updates in a row.
    A run that ends says on stderr (rank 0; not with progress=False) where its weights are and what to run next (`handoff`).
    The signal handlers it sets (in the main thread only), the caller's random state and TF32
    switches, and the mode of the model and of each module inside it are given back when it ends,
    however it ends (a layer with running statistics the caller froze in eval mode stays so:
    `training_modes`). One run at a time in a process: a second one started while one runs is
    warned of (`CountedRun`).

    Of cfg it reads the training settings, and the model's own that a built model can still take:
    dropout (set on every GPT inside `model`) and the memory switches. The fields that build a
    model and its data (preset, n_layer, n_head, n_embd, n_positions, init, data, block_size) are `minigpt
    train`'s (minigpt/pretrain.py): here the model comes built and get_batch makes the batches.
    `cfg` is left as it was passed: --auto-resume is settled (into --resume or a new run) on a copy.
    """
    check_flag("progress", progress)  # "no" would read as True
    if loss_unit is not None and not isinstance(loss_unit, str):  # (it is written to the log as it is given)
        raise TypeError(f"loss_unit must be a string naming the loss's unit, e.g. 'nats per text', or None (the unit "
                        f"the loop knows), got {loss_unit!r} ({type(loss_unit).__name__})")
    # A copy, not dataclasses.replace, here and in pretrain and finetune: replace runs the config's
    # checks again, which the config they settled may fail (allow_new_data, once --auto-resume found
    # no run), and it resets each init=False field to its default: a FinetuneConfig's n_layer set by
    # a caller (cfg.n_layer = 4) would vanish, not be refused. (Shallow: a run assigns its settled
    # fields, never changes one in place.)
    cfg = copy.copy(cfg)
    check_float32_weights(model)
    rt = setup_runtime(cfg)
    # The module itself, saved and restored; fwd and model (below) run it. Given torch.compile(model),
    # the module inside: the wrapper's state dict names each weight `_orig_mod.<name>`, a checkpoint
    # that the model alone could not load.
    raw = prepare_model(unwrapped(model), cfg, rt)
    check_trainable(raw)
    check_save_fn(raw, save_fn)
    frozen = frozen_weights(raw)  # what a strategy froze: --init's, as loaded now; no checkpoint saves them again
    out = Path(cfg.out)
    optimizer = build_optimizer(raw, cfg, rt.device)
    scaler = torch.amp.GradScaler(rt.device.type, enabled=rt.dtype == torch.float16)
    with run_dir_lock(out):  # one run at a time in OUT_DIR (held already under minigpt train/finetune)
        check_out_dir(cfg)
        # Where the run starts (changed None: a fresh start, whose scale is a fresh scaler's: no host sync).
        start, changed = (resume(out, raw, optimizer, scaler, cfg, rt, data_fingerprint, frozen) if cfg.resume
                          else (Progress(scale=scaler.get_scale()), None))
        open_out_dir(out, cfg, rt)
        fwd, model = for_training(raw, cfg, rt, given=model)
        unit = loss_unit if loss_unit is not None else known_loss_unit(loss_fn, bytes_per_token)
        speaks = rt.is_main and progress
        bar = progress_bar(total=cfg.max_iters, initial=start.step, desc="training", disable=not speaks, dynamic_ncols=True)
        run = Run(cfg=cfg, rt=rt, out=out, raw=raw, fwd=fwd, model=model, optimizer=optimizer, scaler=scaler,
                  get_batch=get_batch, loss_fn=loss_fn, save_fn=save_fn or (lambda m, d: m.save_pretrained(d)),
                  eval_fn=eval_fn, bytes_per_token=bytes_per_token, loss_unit=unit, flops_per_token=flops_per_token,
                  peak=peak_flops(rt.device), data_fingerprint=data_fingerprint, frozen=frozen, bar=bar, speaks=speaks,
                  opening=opening_record(cfg, rt, start.step, changed, loss_unit=unit) if rt.is_main else None)
        # Each micro-step seeds torch's global generator for its dropout masks (train_step); forking it
        # gives the caller's random state back when the loop ends, as if it had never run. TF32's
        # switches, turned on for the run on a GPU, are given back too, and so is the model's mode
        # (a model given in eval mode is in eval mode after).
        caller_rng = torch.random.fork_rng(devices=[rt.device] if rt.device.type == "cuda" else [])
        try:
            with (CountedRun(), caller_rng, tf32_matmuls(rt.device), mode_given_back(raw),
                  StopSignal() as stop_signal, bar):
                training_modes(model, raw)
                metrics = run_steps(run, start, stop_signal)  # (which moves `start` on, step by step)
        except KeyboardInterrupt as e:  # not Stopped: a second Ctrl-C, which stops at once (StopSignal)
            if not isinstance(e, Stopped) and rt.is_main:
                print(stopped_at_once(out), file=sys.stderr)
            raise
    if speaks:  # on stderr: stdout's last line is the result, one JSON line for scripts (train_runtime's run_command)
        print(handoff(out, raw), file=sys.stderr)
    return metrics


def training_modes(model: nn.Module, raw: nn.Module) -> None:
    """Put `model` (raw, or its compiled or DDP wrapper) in training mode for the run, but for a
    layer with running statistics that the caller left in eval mode inside a model in training mode
    (model.train(); model.bn.eval(): a frozen BatchNorm): it stays in eval mode, its statistics
    untouched, where model.train() alone moved them. Only such layers: a backbone from
    `from_pretrained` (in eval mode) inside the caller's own wrapper trains with its dropout on, as
    before. A model given in eval mode trains whole. Each evaluation gives these modes back after
    (`mode_given_back`)."""
    frozen = [m for m in raw.modules() if not m.training and getattr(m, "track_running_stats", False)] if raw.training else []
    model.train()
    for module in frozen:
        module.training = False  # (not module.eval(), which recurses into the children)


@contextmanager
def mode_given_back(model: nn.Module) -> Iterator[None]:
    """Give `model` and each module inside it back in the mode it came in (its .training), however
    the block ends: the loop trains the model in training mode, and a model given in eval mode came
    back with dropout on, so the caller's next generate() sampled differently each call. Each
    module's own: model.train(was) sets every module inside to the top's mode, and a frozen
    BatchNorm left in eval mode inside a training model (model.train(); model.bn.eval()) came back
    training, its running statistics updated by the caller's next batch."""
    was_training = {module: module.training for module in model.modules()}
    try:
        yield
    finally:
        for module, training in was_training.items():
            module.training = training  # (not module.train(training), which recurses into the children)


class CountedRun:
    """A train_loop counted, while it runs, among those running in this process: one that starts
    while another runs is warned of.

    Two runs at once (a sweep in threads) are silently not reproducible: both draw from torch's
    one global generator (each micro-step seeds it for its dropout masks, `train_step`; a fork of it
    restores it when a run ends, rewinding the other run's draws too; `minigpt.pretrain.seeded`
    seeds it for new weights). A generator of each run's own would be a larger change than this
    warning; separate processes are the fix."""

    running = 0  # train_loops running in this process now (a class attribute: one count for all threads)
    lock = threading.Lock()

    def __enter__(self) -> "CountedRun":
        with CountedRun.lock:
            if CountedRun.running:  # (warned before counting: a warning made an error leaves this run uncounted)
                # (Said of "a training run": pretrain's and finetune's callers never called train_loop themselves.)
                warnings.warn(f"a training run (train_loop) started while {CountedRun.running} other run(s) train in "
                              "this process: they share torch's global random generator (dropout masks, new weights), "
                              "so neither run is reproducible; train each run in a process of its own (multiprocessing, "
                              "or one command each)", stacklevel=caller_stacklevel())
            CountedRun.running += 1
        return self

    def __exit__(self, *exc) -> None:
        with CountedRun.lock:
            CountedRun.running -= 1


def check_float32_weights(model: nn.Module) -> None:
    """Refuse half-precision weights to train, before any work: the CLI trains float32 weights; a
    model from Python may not be."""
    half = sorted({str(p.dtype).removeprefix("torch.") for p in model.parameters()
                   if p.requires_grad and p.dtype in (torch.float16, torch.bfloat16)})
    if half:
        raise ValueError(HALF_WEIGHTS_ERROR.format(dtype=" and ".join(half)))


def check_trainable(model: nn.Module) -> None:
    """Refuse a model with nothing to train, before any work: its first backward failed inside torch
    ("element 0 of tensors does not require grad"), naming neither the model nor why."""
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError(f"the {type(model).__name__} given to train_loop has no parameter that requires grad, so "
                         "there is nothing to train: it has no parameters, or all are frozen (requires_grad=False)")


def check_save_fn(model: nn.Module, save_fn) -> None:
    """Refuse, before any step, a run whose checkpoints could not be saved: without a save_fn the
    default is model.save_pretrained, which a plain nn.Module lacks. Found at the first evaluation,
    it lost every step trained and left a half-written best.new/."""
    if save_fn is None and not callable(getattr(model, "save_pretrained", None)):
        raise TypeError(f"save_fn is not given, and its default, model.save_pretrained, is missing: the "
                        f"{type(model).__name__} given to train_loop has none. Pass save_fn(model, dir), which writes "
                        "the model into the folder dir (a Path that exists), e.g. "
                        "lambda m, d: torch.save(m.state_dict(), d / 'model.pt')")


def known_loss_unit(loss_fn, bytes_per_token: float | None) -> str | None:
    """What the loss is measured in, when the loop knows without being told (train_loop's `loss_unit`):
    nats per token for `lm_loss`, or where the caller gives `bytes_per_token` (which turns a loss
    per token into bits per byte); for another loss of the caller's, None (no perplexity, and
    loss.png's axis says "loss" alone)."""
    return "nats/token" if loss_fn is lm_loss or bytes_per_token else None


@dataclass
class Run:
    """What the steps of a run share, set once before the first: `train_loop`'s arguments and what
    it built from them."""

    cfg: TrainConfig
    rt: Runtime
    out: Path
    raw: nn.Module  # the model itself: saved, restored, and what eval_fn gets
    fwd: nn.Module  # raw, compiled if cfg.compile (or as given, compiled): what evaluation runs
    model: nn.Module  # fwd, wrapped in DDP under torchrun: what a training step runs
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    get_batch: Callable[[str, torch.Generator], Batch]
    loss_fn: Callable[..., torch.Tensor]
    save_fn: Callable[[nn.Module, Path], None]
    eval_fn: Callable[[nn.Module], dict[str, float]] | None
    bytes_per_token: float | None
    # What the loss is measured in ("nats/token"; None: not known), decided once in train_loop: the
    # opening log record says it (loss.png's axis reads it there), and "nats/token" logs a perplexity.
    loss_unit: str | None
    flops_per_token: float | None
    peak: float | None  # the GPU's peak FLOP/s, for MFU (None: not known)
    data_fingerprint: dict | None
    frozen: dict | None  # `frozen_weights(raw)`: the names and digest of the weights that do not train
    bar: tqdm  # the progress bar (rank 0's, unless progress=False; disabled on the others)
    speaks: bool  # whether the step lines are printed: rank 0, unless train_loop's progress=False
    # The start's or resume's record (run_log.py's `opening_record`), until the run's first write to
    # its log (`log`) puts it there; rank 0's alone, None on the others and once written.
    opening: dict | None


@dataclass
class Progress:
    """Where a run stands. A checkpoint saves the step, the best val loss, the loss sums since the
    last log record and float16's counts of skipped updates (`resume` reads them back, and counts that
    checkpoint as the last saved); the rest start afresh."""

    # float16: the loss scale after the last step, which the next one's is compared with (a lower one:
    # that step was skipped). Read once a step: each read is a host sync. No default: before the
    # first step it must be the run's scaler's (a fresh one's 2^16, or the one a resume restored);
    # a default, left unset, would miss a skip at the first step (1.0) or count kept steps as skips.
    scale: float
    step: int = 0  # optimizer steps done
    best: float = math.inf  # the lowest val loss yet (best/ holds its weights)
    last_saved: int | None = None  # the step of the last checkpoint (None: none yet)
    # Since the last log record, whose loss is the mean over its steps and tokens/s the rate:
    loss_since: float = 0.0
    steps_since: int = 0
    tokens_since: int = 0
    time_since: float = 0.0
    # float16's skipped updates (`skipped_by_scaler`): since the last log record, and in a row now;
    # and whether the run kept one. Saved, all three, so a resumed run goes on as the unbroken run:
    # its next record counts the skips before the resume too, and the row of skips that stops a run
    # (MAX_SKIPPED_IN_A_ROW, or every step skipped) is the same row across a resume.
    skipped_since: int = 0
    skipped_in_a_row: int = 0
    kept_one: bool = False
    warned_not_finite: bool = False  # a val loss not finite was warned of (`evaluate_and_save`: once a run)


def resume(out: Path, raw: nn.Module, optimizer, scaler, cfg, rt: Runtime, data_fingerprint: dict | None,
           frozen: dict | None) -> tuple[Progress, dict]:
    """--resume: the weights, optimizer and scaler read back from OUT_DIR's checkpoint (minigpt/resume.py's
    `restore`, which refuses a run that differs); where the run stood, and the settings this resume
    changed from the saved run's ({name: (saved, now)})."""
    step, best, (loss_since, steps_since), (skipped_since, in_a_row, kept_one), changed, opening = restore(
        out, raw, optimizer, scaler, cfg, rt, data_fingerprint, frozen)
    if rt.is_main:  # (after restore's notes: the resume goes ahead)
        for note in machine_notes(opening, rt, cfg.grad_accum):
            print(note, file=sys.stderr)
    # The scale the checkpoint's scaler reached (restored: no host sync, the scaler has scaled nothing since).
    return Progress(scale=scaler.get_scale(), step=step, best=best, last_saved=step, loss_since=loss_since,
                    steps_since=steps_since, skipped_since=skipped_since, skipped_in_a_row=in_a_row,
                    kept_one=kept_one), changed


def machine_notes(last: dict | None, rt: Runtime, grad_accum: int) -> list[str]:
    """Notes for a resume that runs otherwise than the steps before its checkpoint did (`last`, the
    log's last opening record before the checkpoint's step, says how: run_log.py's `opening_record`;
    restore returns it, read from the log it keeps, and None where the log has none): a CPU run on
    another number of torch threads, or a run on another number of processes with more than 2
    micro-batches a step. Either rounds its sums otherwise, so the resumed run is no longer bitwise
    the uninterrupted one: said, not refused."""
    if last is None:
        return []
    notes = []
    threads, world = last.get("threads"), last.get("world_size")  # (absent from logs of an earlier minigpt)
    # The last opening record speaks for the steps since it only: an earlier stretch may have run otherwise.
    since = "the run's steps so far" if last["step"] == 0 else f"the steps since step {last['step']}"
    if (rt.device.type == "cpu" and str(last.get("device")) == "cpu" and threads is not None
            and threads != torch.get_num_threads()):
        notes.append(f"note: {since} ran with {threads} torch thread{'s' * (threads != 1)}, this resume "
                     f"with {torch.get_num_threads()}: a matmul splits its sums by thread count, so the losses may match an "
                     f"uninterrupted run's only up to rounding; set OMP_NUM_THREADS={threads} (or "
                     f"torch.set_num_threads({threads})) for a bitwise resume")
    # Two micro-batches' gradients are one addition on 1 process or 2 (and halving them is exact), so a
    # resume on another count stays bitwise; with more, the processes split the sum otherwise (each sums
    # its own, then the all-reduce sums theirs in its own order), rounding it otherwise.
    if world is not None and world != rt.world and grad_accum > 2:
        notes.append(f"note: {since} ran on {world} process{'es' * (world != 1)}, this resume on {rt.world}: "
                     f"a step's {grad_accum} micro-batch gradients are summed in another order (each process sums its "
                     "own, then the all-reduce sums the processes'), so the losses may match an uninterrupted run's only "
                     f"up to rounding; resume on {world} for a bitwise one")
    return notes


def run_steps(run: Run, progress: Progress, stop_signal: StopSignal) -> dict[str, float]:
    """The loop: a training step (and every cfg.log_interval a log record), every cfg.eval_interval
    an evaluation and a checkpoint (and every cfg.save_interval a checkpoint alone), until
    cfg.max_iters, the last one evaluated. A signal stops it
    after the step under way (and the evaluation due there, or under way), saved; during the last
    step, the run ends as if none had come."""
    cfg = run.cfg
    metrics: dict[str, float] = {"step": progress.step}
    stop_signal.progress = progress  # a signal's message names the checkpoint that stands
    # A run resumed at the step where it had stopped, before its final evaluation: end it as a
    # run of max_iters steps ends (`--resume --max-iters S` on a run stopped at S).
    if progress.step == cfg.max_iters and not evaluated_at(run.out, progress.step):
        metrics = end_stopped_run(run, progress)
    elif progress.step == cfg.max_iters:  # done: killed after its last checkpoint, perhaps before its curve
        on_rank_0(run.rt, lambda: plot_log(run.out))
        metrics = reported_at(run.out, progress.step)  # the result line it ended with, again
    while progress.step < cfg.max_iters:
        metrics = train_and_log(run, progress)
        if (cfg.eval_interval and progress.step % cfg.eval_interval == 0) or progress.step == cfg.max_iters:
            metrics.update(evaluate_and_save(run, progress))
        elif cfg.save_interval and progress.step % cfg.save_interval == 0:
            save_between_evaluations(run, progress)
        # Asked after the evaluation, so a stop that came during one (a long one, on a big val set)
        # stops here, at the checkpoint it just saved, not after one more step.
        stop = stop_signal.agreed(run.rt)  # every process stops at the same step
        if stop and progress.last_saved != progress.step:
            save_between_evaluations(run, progress)
        if stop and progress.step < cfg.max_iters:  # a stop during the last step: the run is done, whole
            if run.rt.is_main:
                run.bar.write(f"interrupted: saved step {progress.step} to {run.out}; continue with --resume "
                              "(resume=True in Python)", file=sys.stderr)
            raise Stopped(stop)
    metrics["best_val_loss"] = progress.best
    return metrics


def train_and_log(run: Run, progress: Progress) -> dict[str, float]:
    """One training step, counted in `progress`; every cfg.log_interval steps, and at the last, a
    log record of the steps since the last one. Returns the step's metrics (the record's if one)."""
    cfg = run.cfg
    t0 = time.perf_counter()
    try:
        train_loss, grad_norm, tokens = train_step(run.model, run.optimizer, run.scaler, run.get_batch, run.loss_fn,
                                                   cfg, run.rt, progress.step)
    except TrainingDiverged as e:
        raise diverged(e, progress.last_saved, run.out, run.rt) from None
    progress.step += 1
    step = progress.step
    # float16: the scale's fall is a host sync after the update's kernels (as train_step's loss check
    # is one before them); without a scaler, get_scale is a constant.
    if skipped_by_scaler(run.scaler, progress) or (step == cfg.max_iters and progress.skipped_in_a_row
                                                   and not progress.kept_one):
        n, every = progress.skipped_in_a_row, "" if progress.kept_one else ", every step this run made"
        why = ("the model diverged, or the data or the loss holds a NaN" if n >= MAX_SKIPPED_IN_A_ROW else
               "nothing was learned; the scale may not have found its level in so few steps: train longer")
        raise diverged(TrainingDiverged(
            f"float16's loss scaler skipped the updates of steps {step - n + 1}-{step} ({n} in a row{every}): their "
            f"gradients held inf or NaN while the scale fell 2^{n}-fold, to {progress.scale:g} ({why}); "
            "--dtype bfloat16 (dtype='bfloat16' in Python) has float32's range and needs no scaler"),
            progress.last_saved, run.out, run.rt) from None
    progress.time_since += time.perf_counter() - t0
    progress.tokens_since += tokens
    progress.loss_since += train_loss
    progress.steps_since += 1
    run.bar.update(1)
    metrics = {"step": step, "loss": train_loss, "lr": lr_at(step - 1, cfg)}
    if step % cfg.log_interval == 0 or step == cfg.max_iters:
        metrics["loss"] = progress.loss_since / progress.steps_since  # mean since the last record: a smoother curve
        metrics["tokens_per_s"] = progress.tokens_since / progress.time_since
        if grad_norm is not None:
            metrics["grad_norm"] = grad_norm
        if run.scaler.is_enabled():  # float16: the updates skipped since the last record, and where the scale is
            metrics["skipped_steps"], metrics["loss_scale"] = progress.skipped_since, progress.scale
        if run.peak and run.flops_per_token:
            metrics["mfu"] = run.flops_per_token * metrics["tokens_per_s"] / (run.peak * run.rt.world)
        progress.tokens_since, progress.time_since, progress.loss_since, progress.steps_since = 0, 0.0, 0.0, 0
        progress.skipped_since = 0
        # refresh=False: shown at the bar's next redraw, not forced now (a log would get one per record)
        run.bar.set_postfix({k: f"{v:.3g}" for k, v in metrics.items() if k != "step"}, refresh=False)
        if run.rt.is_main:
            log(run, metrics)
    return metrics


def skipped_by_scaler(scaler: torch.amp.GradScaler, progress: Progress) -> bool:
    """Count the step just taken in `progress` if float16's GradScaler skipped its update; True when
    that makes MAX_SKIPPED_IN_A_ROW in a row. `scaler.step` skips without a word; its `update` then
    halves the scale (after a kept step it keeps it, or doubles it), so a scale lower than the one
    after the step before (`progress.scale`) is the one public sign of a skip. Without float16 the
    scaler is off, its scale 1.0: never lower."""
    scale_before, progress.scale = progress.scale, scaler.get_scale()
    if progress.scale >= scale_before:
        progress.skipped_in_a_row, progress.kept_one = 0, True
        return False
    progress.skipped_since += 1
    progress.skipped_in_a_row += 1
    return progress.skipped_in_a_row >= MAX_SKIPPED_IN_A_ROW


def end_stopped_run(run: Run, progress: Progress) -> dict[str, float]:
    """Resumed at its last step, where the run had stopped without ending (`--resume --max-iters S`
    after a stop at step S): no step runs, and the run ends as a run of S steps does, with the
    record of the steps since the last one, an evaluation and a checkpoint. (That record lacks
    tokens/s and the gradient norm, which were not saved.)"""
    metrics: dict[str, float] = {"step": progress.step}
    if progress.steps_since:  # (its lr is the last step's, kept in the optimizer's state: the run's schedule, not cfg's)
        metrics = {"step": progress.step, "loss": progress.loss_since / progress.steps_since,
                   "lr": run.optimizer.param_groups[0]["lr"]}
        progress.loss_since, progress.steps_since = 0.0, 0
        on_rank_0(run.rt, lambda: log(run, metrics))
    metrics.update(evaluate_and_save(run, progress))
    return metrics


def evaluate_and_save(run: Run, progress: Progress) -> dict[str, float]:
    """An evaluation at the current step: best/ if it is the best yet, its log record, the
    checkpoint and the curve. Returns the record."""
    record = {"step": progress.step, **evaluate(run)}
    if run.speaks:  # shown as it comes (on stdout, as the CLI documents), not only in log.jsonl
        run.bar.write(f"step {progress.step}: " + ", ".join(f"{k} {v:.4g}" for k, v in record.items() if k != "step"))
    finite = math.isfinite(record["val_loss"])
    if not finite and not progress.warned_not_finite and run.rt.is_main:  # else best/ just stays behind, unsaid
        run.bar.write(f"warning: val_loss is {record['val_loss']} at step {progress.step}: best/ is not updated while the "
                      "val loss is not finite (said once)", file=sys.stderr)
        progress.warned_not_finite = True
    improved = finite and record["val_loss"] < progress.best
    if improved:
        progress.best = record["val_loss"]

    def write() -> None:
        if improved:  # (the best/ it replaces is kept until the checkpoint below is whole: run_dir.py's `save_best`)
            save_best(run.out, run.raw, run.save_fn, record)
        # Logged before the checkpoint: a crash between the two then resumes from the previous
        # checkpoint and writes the record again; the other order would lose it.
        log(run, record)
        checkpoint(run, progress)
        drop_previous_best(run.out)
        plot_log(run.out)

    on_rank_0(run.rt, write)
    progress.last_saved = progress.step
    return record


def save_between_evaluations(run: Run, progress: Progress) -> None:
    """A checkpoint between evaluations (a stop, or --save-interval), and the curve up to here, not
    only to the last evaluation. It resumes as exactly as one at an evaluation: the step, the
    optimizer and the losses since the last log record are the whole state."""
    def write() -> None:
        # A run is known by its log (run_dir.py's `unsaved_run`): one stopped before its first record
        # gets one holding its opening record, so a kill during this first checkpoint leaves a run that
        # --resume restarts.
        open_log(run)
        checkpoint(run, progress)
        if any("loss" in r for r in read_log(run.out)):  # (a curve of no point is no curve)
            plot_log(run.out)

    on_rank_0(run.rt, write)
    progress.last_saved = progress.step


def log(run: Run, record: dict) -> None:
    """Append `record` to the run's log (rank 0's work), after the run's opening record if it is the
    run's first write there (`open_log`)."""
    open_log(run)
    append_log(run.out, record)


def open_log(run: Run) -> None:
    """Write the start's or resume's record (run.opening) to the log, once, at the run's first write
    there: not when the run begins, so a run that dies before its first record leaves no log, and
    its OUT_DIR takes the same command again (a log marks a run that only --resume restarts:
    run_dir.py's `unsaved_run`). A resume's comes after `restore` cut the log back to its checkpoint."""
    if run.opening is not None:
        append_log(run.out, run.opening)
        run.opening = None


def checkpoint(run: Run, progress: Progress) -> None:
    """Save the run at its current step (rank 0's work: minigpt/run_dir.py's `save_checkpoint`)."""
    save_checkpoint(run.out, run.raw, run.save_fn, run.optimizer, run.scaler, progress.step, progress.best, run.cfg,
                    (progress.loss_since, progress.steps_since), run.data_fingerprint, run.frozen,
                    scaler_skips=(progress.skipped_since, progress.skipped_in_a_row, progress.kept_one))
