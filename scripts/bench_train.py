"""Training speed: tokens/s of forward + backward + AdamW, minigpt vs transformers' GPT2LMHeadModel.

    python scripts/bench_train.py                              # CPU: small (4 layers, 256 wide) and 124M
    python scripts/bench_train.py --device cuda --dtype bfloat16 --compile --batch-size 16 --block-size 1024

Both models get the same shape, the same dropout and the same random batches, and are timed in
the same run, one step of each in turn (so a noisy neighbour slows both alike); the figure is the
median step ("fastest" compares the fastest steps, the least disturbed on a shared machine).
Three rows per config separate the model from the optimizer:
  transformers   GPT2LMHeadModel (SDPA attention) + torch.optim.AdamW with its defaults
  minigpt        minigpt.GPT + the same AdamW
  minigpt+train  minigpt.GPT + the optimizer `minigpt train` builds (fused AdamW, decay groups)
On a GPU it also reports MFU: achieved FLOP/s (6·N + 12·L·C·T per token) / the GPU's bf16 peak,
and each row's peak memory: what its step allocates above the memory held before it (every row's
weights and optimizer state), i.e. activations, gradients and temporaries. The table at the end is
Markdown, as BENCHMARKS.md keeps it. `--gradient-checkpointing` adds two rows, the same steps with
activation checkpointing on: `transformers+ckpt` (its `activation_checkpointing_enable`, non-reentrant
as minigpt's) and `minigpt+train+ckpt`; their MFU still counts the model's FLOPs, not the recomputed forward.
`--chunked-loss` adds `minigpt+train+chunk` (`minigpt train --chunked-loss`: the logits, the loss and
their gradients a chunk of positions at a time), and with --gradient-checkpointing `minigpt+train+ckpt+chunk`, both switches.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from contextlib import nullcontext

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from minigpt import GPT, GPTConfig
from minigpt.checkpoint import DTYPE_NAMES, resolve_device
from minigpt.checks import check_rate
from minigpt.cli import FAILED
from minigpt.optimizer import build_optimizer
from minigpt.stats import gpt_flops_per_token, peak_flops
from minigpt.train_config import TrainConfig

CONFIGS = {"small": dict(n_layer=4, n_head=4, n_embd=256), "124M": dict(n_layer=12, n_head=12, n_embd=768)}


def hf_model(c: GPTConfig) -> GPT2LMHeadModel:
    hf_config = GPT2Config(
        vocab_size=c.vocab_size, n_positions=c.n_positions, n_embd=c.n_embd, n_layer=c.n_layer, n_head=c.n_head,
        resid_pdrop=c.dropout, embd_pdrop=c.dropout, attn_pdrop=c.dropout, attn_implementation="sdpa",
    )
    return GPT2LMHeadModel(hf_config)


def make_step(model, optimizer, loss_of, autocast):
    def step(x):
        with autocast:
            loss = loss_of(model, x)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def set_checkpointing(model, on: bool) -> None:
    """Activation checkpointing on or off in minigpt's GPT or transformers' model (non-reentrant in both)."""
    if isinstance(model, GPT):
        model.gradient_checkpointing = on
        return
    renamed = hasattr(model, "activation_checkpointing_enable")  # transformers 5's name for gradient_checkpointing_*
    if not on:
        (model.activation_checkpointing_disable if renamed else model.gradient_checkpointing_disable)()
    elif renamed:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def switched_on(step, model, checkpointing: bool = False, chunked_loss: bool = False):
    """`step` with activation checkpointing and/or minigpt's chunked loss on in `model` while it runs."""
    def run(x):
        set_checkpointing(model, checkpointing)
        if chunked_loss:
            model.chunked_loss = True
        try:
            step(x)
        finally:
            set_checkpointing(model, False)
            if chunked_loss:
                model.chunked_loss = False

    return run


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", default="small,124M",
                   help=f"comma-separated, from {', '.join(sorted(CONFIGS))} (default: small,124M)")
    p.add_argument("--batch-size", type=int, default=4, help="windows per step (default: 4)")
    p.add_argument("--block-size", type=int, default=256, help="tokens per window (default: 256)")
    p.add_argument("--steps", type=int, default=5, help="timed steps per model, the median is reported (default: 5)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per model first (default: 1)")
    p.add_argument("--dropout", type=float, default=0.1, help="on both sides (default: 0.1, as GPT-2 trained)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    # No float16: its small gradients underflow to 0 without a GradScaler, which these plain steps do not run.
    p.add_argument("--dtype", default="float32", choices=[name for name in DTYPE_NAMES if name != "float16"],
                   help="autocast dtype")
    p.add_argument("--compile", action="store_true", help="torch.compile both models")
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave as is)")
    p.add_argument("--gradient-checkpointing", action="store_true",
                   help="also time both models with each block recomputed in backward (two more rows)")
    p.add_argument("--chunked-loss", action="store_true",
                   help="also time minigpt with its loss computed a chunk of positions at a time (one more row, two with "
                        "--gradient-checkpointing)")
    return p.parse_args(argv)


def check_flags(args: argparse.Namespace) -> list[str]:
    """The configs to run; ValueError naming the flag out of range, before any model is built
    (else --steps 0 fails at the median of no times, after every step ran)."""
    for flag, value, least in [("--steps", args.steps, 1), ("--batch-size", args.batch_size, 1),
                               ("--block-size", args.block_size, 1), ("--warmup", args.warmup, 0),
                               ("--threads", args.threads, 0)]:
        if value < least:
            raise ValueError(f"{flag} must be ≥ {least}, got {value}")
    check_rate("--dropout", args.dropout)
    names = args.configs.split(",")
    for name in names:
        if name not in CONFIGS:
            raise ValueError(f"--configs: unknown config {name!r} in {args.configs!r}; choose from {', '.join(sorted(CONFIGS))}")
    return names


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        names = check_flags(args)
        device = resolve_device(args.device)  # "cuda" without a GPU: one line, not torch's assertion
    except ValueError as e:
        print(f"bench_train.py: error: {e}", file=sys.stderr)
        return FAILED
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = device.type == "cuda"
    print(f"device={device} dtype={args.dtype} compile={args.compile} batch={args.batch_size}x{args.block_size} "
          f"dropout={args.dropout} threads={torch.get_num_threads()} torch={torch.__version__}")
    if cuda:
        print("peak MB: the most a step allocated above what was held before it (every row's model and "
              "optimizer state): its activations, gradients and temporaries, over the timed steps")
    columns = ["config", "model", "ms/step", "spread", "tokens/s", "vs transformers (median)", "(fastest steps)"]
    columns += ["MFU", "peak MB"] if cuda else []
    for name in names:
        rows = time_config(name, args, device)
        # BENCHMARKS.md's table, after the config's progress lines (a run cut short keeps the
        # configs it finished); the rows of several configs go under one header there.
        print("\n| " + " | ".join(columns) + " |\n|---|---|" + "---:|" * (len(columns) - 2))
        for row in rows:
            print("| " + " | ".join(row[:len(columns)]) + " |", flush=True)
    return 0


def time_config(name: str, args: argparse.Namespace, device: torch.device) -> list[list[str]]:
    """Time every row of one config, one step of each in turn; its table rows, as text cells."""
    dtype = DTYPE_NAMES[args.dtype]
    autocast = torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else nullcontext()
    cuda = device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    tokens = args.batch_size * args.block_size
    c = GPTConfig(**CONFIGS[name], n_positions=max(1024, args.block_size), dropout=args.dropout)
    torch.manual_seed(0)
    ours, hf = GPT(c).to(device).train(), hf_model(c).to(device).train()
    if args.compile:
        ours_fwd, hf_fwd = torch.compile(ours), torch.compile(hf)
    else:
        ours_fwd, hf_fwd = ours, hf
    ours_loss = lambda m, x: m(x[:, :-1], x[:, 1:])[1]  # noqa: E731  (minigpt: targets pre-shifted)
    # HF shifts inside: it gets the same block_size tokens as minigpt (block_size + 1 would not
    # fit n_positions at block_size 1024), so both forward passes cost the same.
    hf_loss = lambda m, x: m(x[:, :-1], labels=x[:, :-1]).loss  # noqa: E731
    # "minigpt" shares HF's optimizer recipe; "minigpt+train" uses train.py's own.
    steps = {
        "transformers": make_step(hf_fwd, torch.optim.AdamW(hf.parameters(), lr=1e-4), hf_loss, autocast),
        "minigpt": make_step(ours_fwd, torch.optim.AdamW(ours.parameters(), lr=1e-4), ours_loss, autocast),
        "minigpt+train": make_step(ours_fwd, build_optimizer(ours, TrainConfig(lr=1e-4), device), ours_loss, autocast),
    }
    # The same models, with memory switches on for these steps only.
    if args.gradient_checkpointing:
        steps["transformers+ckpt"] = switched_on(steps["transformers"], hf, checkpointing=True)
        steps["minigpt+train+ckpt"] = switched_on(steps["minigpt+train"], ours, checkpointing=True)
    if args.chunked_loss:
        steps["minigpt+train+chunk"] = switched_on(steps["minigpt+train"], ours, chunked_loss=True)
        if args.gradient_checkpointing:
            steps["minigpt+train+ckpt+chunk"] = switched_on(steps["minigpt+train"], ours, True, True)
    g = torch.Generator().manual_seed(0)
    batches = [torch.randint(c.vocab_size, (args.batch_size, args.block_size + 1), generator=g).to(device)
               for _ in range(args.steps + args.warmup)]
    times: dict[str, list[float]] = {k: [] for k in steps}
    peak_mb: dict[str, float] = {}  # CUDA only: each row's own peak, over its timed steps
    for i, x in enumerate(batches):
        took = {}
        for label, step in steps.items():  # interleaved: each round times every model once
            sync()
            if cuda:  # the peak above what is held now: every row's weights and optimizer state are resident
                torch.cuda.reset_peak_memory_stats()
                held = torch.cuda.memory_allocated()
            t0 = time.perf_counter()
            step(x)
            sync()
            took[label] = time.perf_counter() - t0
            if i >= args.warmup:
                times[label].append(took[label])
                if cuda:  # (a warmup step also allocates AdamW's state, which then stays held)
                    peak_mb[label] = max(peak_mb.get(label, 0.0), (torch.cuda.max_memory_allocated() - held) / 2**20)
        # Each round as it ends: a compiled first round takes minutes, and a run cut short
        # (a time limit) still shows what it measured.
        kind = "warmup" if i < args.warmup else "timed"
        print(f"  {name} {kind} step {i + 1}/{len(batches)}: " + ", ".join(f"{k} {v * 1e3:.0f} ms" for k, v in took.items()),
              flush=True)
    peak = peak_flops(device)
    flops = gpt_flops_per_token(c, args.block_size) * tokens
    ref, ref_min = statistics.median(times["transformers"]), min(times["transformers"])
    rows = []
    for label, ts in times.items():
        t = statistics.median(ts)
        spread = (max(ts) - min(ts)) / t  # how noisy the machine was: (slowest - fastest) / median
        # "fastest steps": the ratio of the fastest steps, least disturbed by other processes.
        rows.append([name if not rows else "", label, f"{t * 1e3:.1f}", f"{spread:.0%}", f"{tokens / t:,.0f}",
                     f"{ref / t:.2f}×", f"{ref_min / min(ts):.2f}×",
                     f"{flops / t / peak:.1%}" if peak else "-", f"{peak_mb[label]:,.0f}" if label in peak_mb else "-"])
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
