"""Sampling speed on a CPU: minigpt's torch sampler against transformers' warpers, same run.

    python scripts/bench_sampling_cpu.py                     # batch 1 and 8, vocab 50257
    python scripts/bench_sampling_cpu.py --batch 1 --repeats 21 --threads 1

One draw per row from logits (B, V), two ways, interleaved so both see the same machine load:
- minigpt: the per-step function `generate`'s decode loop calls (minigpt.sampling.token_picker,
  backend "torch"): temperature, top-k, top-p (on a CPU: the cut looked for among the 1024, then
  8192, largest logits first), min-p, the exponential race; min-p and the race run on the short list
  top-k or top-p's head gathered, or min-p alone made, when every kept token is on it
  (`top_k_top_p_on_cpu`, `min_p_shortlist`);
- transformers: its Temperature/TopK/TopP/MinP warpers, softmax, torch.multinomial.
Each figure is the median over --repeats runs of --calls calls, in µs per call. A second table
times the parts the sampler's docs quote, on the same logits: the whole-row sort that top-p
skips, the heads it takes instead (torch.topk of TOP_P_HEAD, then of TOP_P_SECOND_HEAD for a
nucleus past the first), and the race's noise by torch's `exponential_` (what minigpt drew
before, and what torch.multinomial draws) and by `exponential_noise` (what it draws on a CPU
now: the same values).

A top-p step's cost depends on how many tokens its nucleus holds, so the logits are N(0, s²) for
a few spreads s, from a peaked row (top-p 0.9 keeps a handful of tokens) to a flat one (tens of
thousands, as from a randomly initialised model); the table gives the median count of tokens the
config's filters keep (with top-k 50 first, at most 50; min-p 0.1 keeps those within ln 10 of the max).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from transformers.generation.logits_process import (LogitsProcessorList, MinPLogitsWarper, TemperatureLogitsWarper,
                                                    TopKLogitsWarper, TopPLogitsWarper)

from minigpt.sampling import exponential_noise, filter_logits, token_picker
from minigpt.sampling_cpu import TOP_P_HEAD, TOP_P_SECOND_HEAD

CONFIGS = {  # name: (temperature, top_k, top_p, min_p); the first two as in scripts/bench_sampling.py
    "top-p": (1.0, 0, 0.9, 0.0),        # top-p alone: nothing narrows the row before it
    "all": (0.8, 50, 0.9, 0.05),       # every filter on
    "min-p": (1.0, 0, 1.0, 0.1),       # min-p alone (its own short list on a CPU)
}
SPREADS = (6.0, 4.0, 3.0, 1.0)  # top-p 0.9 alone keeps a median of ~10–40, ~200–400, ~2,000 and ~30,000 of 50,257


def transformers_picker(temperature: float, top_k: int, top_p: float, min_p: float, generator: torch.Generator):
    """transformers' sampling step: its warpers in its order, then softmax and multinomial."""
    warpers = LogitsProcessorList([TemperatureLogitsWarper(temperature)])
    if top_k:
        warpers.append(TopKLogitsWarper(top_k))
    if top_p < 1:
        warpers.append(TopPLogitsWarper(top_p))
    if min_p:
        warpers.append(MinPLogitsWarper(min_p))
    return lambda logits: torch.multinomial(warpers(None, logits).softmax(dim=-1), 1, generator=generator)


def time_us(fn, logits: torch.Tensor, calls: int) -> float:
    """µs per call over `calls` calls back to back."""
    t0 = time.perf_counter()
    for _ in range(calls):
        fn(logits)
    return (time.perf_counter() - t0) / calls * 1e6


def parts_us(B: int, V: int, repeats: int, calls: int) -> dict[str, float]:
    """Median µs per call of each part the docs quote, on (B, V) N(0, 4²) logits."""
    logits = torch.randn(B, V, generator=torch.Generator().manual_seed(B)) * 4
    g = torch.Generator().manual_seed(0)
    parts = {
        "sort (the whole row)": lambda x: x.sort(dim=-1),
        f"topk({min(TOP_P_HEAD, V)}) (the head)": lambda x: x.topk(min(TOP_P_HEAD, V), dim=-1),
        f"topk({min(TOP_P_SECOND_HEAD, V)}) (the second head)": lambda x: x.topk(min(TOP_P_SECOND_HEAD, V), dim=-1),
        "exponential_ (torch's noise)": lambda x: torch.empty(x.shape).exponential_(generator=g),
        "exponential_noise (minigpt's)": lambda x: exponential_noise(x.shape, "cpu", g),
    }
    return {name: statistics.median(time_us(fn, logits, calls) for _ in range(repeats)) for name, fn in parts.items()}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8], help="batch sizes (default 1 8)")
    ap.add_argument("--vocab", type=int, default=50257, help="logits per row (default: GPT-2's 50257)")
    ap.add_argument("--repeats", type=int, default=11, help="timed runs per figure, the median is reported (default 11)")
    ap.add_argument("--calls", type=int, default=10, help="calls per timed run (default 10)")
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave as is)")
    args = ap.parse_args(argv)
    for name, value in (("--repeats", args.repeats), ("--calls", args.calls), ("--vocab", args.vocab),
                        ("--batch", min(args.batch))):
        if value < 1:
            ap.error(f"{name} must be ≥ 1, got {value}")
    if args.threads < 0:  # torch's own error is a traceback
        ap.error(f"--threads must be ≥ 0 (0: leave as is), got {args.threads}")
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, vocab {args.vocab}, "
          f"median of {args.repeats} runs of {args.calls} calls; µs per call\n")
    print("| config | batch | spread | tokens kept (median) | minigpt µs | transformers µs | speed-up |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, (temperature, top_k, top_p, min_p) in CONFIGS.items():
        for B in args.batch:
            for spread in SPREADS:
                logits = torch.randn(B, args.vocab, generator=torch.Generator().manual_seed(B)) * spread
                params = dict(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p)
                kept = int(filter_logits(logits, **params).isfinite().sum(dim=-1).float().median())
                g_ours, g_theirs = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
                ours = token_picker(B, "cpu", **params, generator=g_ours, backend="torch")
                theirs = transformers_picker(temperature, top_k, top_p, min_p, g_theirs)
                ours(logits), theirs(logits)  # warm-up
                times = {"ours": [], "theirs": []}
                for _ in range(args.repeats):
                    times["ours"].append(time_us(ours, logits, args.calls))
                    times["theirs"].append(time_us(theirs, logits, args.calls))
                a, b = statistics.median(times["ours"]), statistics.median(times["theirs"])
                print(f"| {name} | {B} | {spread:g} | {kept} | {a:.0f} | {b:.0f} | {b / a:.1f}x |")
    print("\n| part | " + " | ".join(f"batch {B} µs" for B in args.batch) + " |")
    print("|---|" + "---:|" * len(args.batch))
    timed = [parts_us(B, args.vocab, args.repeats, args.calls) for B in args.batch]
    for name in timed[0]:
        print(f"| {name} | " + " | ".join(f"{t[name]:.0f}" for t in timed) + " |")


if __name__ == "__main__":
    main()
