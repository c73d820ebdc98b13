"""Sampling speed on a GPU: the fused Triton kernel against the torch pipeline and transformers.

    python scripts/bench_sampling.py                                 # vocab 50257, batch 1 8 64 256, fp32 + bf16
    python scripts/bench_sampling.py --batch 1 64 --dtypes bf16 --variants   # also sweep block / warps
    python scripts/bench_sampling.py --batch 1 8 --kernels           # also each kernel's GPU µs
    python scripts/bench_sampling.py --batch 1 8 --splits 1 8 16 32 64   # graph µs at each split S

One draw per row from logits (B, V), three ways, timed in the same run:
- fused:        minigpt.kernels.sampling.fused_sample (per-row parameter tensors): in a CUDA graph
                at small batches, each row split over S programs in five launches (S in the
                table), else one launch of one program per row (eager calls always: there the
                launches' Python cost outweighs the split); "1-prog" times one program per row
                at every batch size;
- torch:        minigpt.sampling.sample(backend="torch"): top-k, sort-based top-p, min-p, the
                exponential race — the reference pipeline, about 20 small kernels;
- transformers: its Temperature/TopK/TopP/MinP warpers, softmax, torch.multinomial.
Two timings per method, each the median of --repeats runs:
- "loop": N calls back to back between two CUDA events, divided by N — what an eager Python
  decode loop pays, launch overhead included;
- "graph": the same calls captured once in a CUDA graph and replayed — the GPU time alone.
Logits are N(0, 2²) per entry (a sampling step's cost depends on the data only through the
thresholds' search, which this makes neither easy nor adversarial).
"""
from __future__ import annotations

import argparse
import statistics
import sys

import torch

from minigpt.cli import FAILED
from minigpt.sampling import sample

CONFIGS = {  # name: (temperature, top_k, top_p, min_p)
    "all": (0.8, 50, 0.9, 0.05),       # every filter on, as a chat front end might set them
    "top-p": (1.0, 0, 0.9, 0.0),        # top-p alone: the kernel's hardest case (no top-k to narrow it)
}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
VARIANTS = [(1024, 8, 16), (1024, 16, 16), (1024, 4, 16), (1024, 8, 8), (512, 16, 8), (2048, 4, 16), (2048, 8, 16),
            (2048, 8, 32)]  # (block_size, unroll, num_warps) tried by --variants


def time_us(fn, repeats: int, calls: int, graph: bool) -> float:
    """Median µs per call of fn over `repeats` runs of `calls` back-to-back calls."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    run = fn
    if graph:
        try:
            g = capture(fn, calls)
        except RuntimeError as e:  # e.g. an op that cannot be captured: report it, keep going
            print(f"  (could not capture a CUDA graph: {str(e).splitlines()[0]})")
            return float("nan")
        run = g.replay
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        if graph:
            run()
        else:
            for _ in range(calls):
                run()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) * 1e3 / calls)
    return statistics.median(times)


def kernel_us(fn, calls: int) -> dict[str, float]:
    """GPU µs per call of each kernel that fn launches (torch.profiler's CUDA activity): where a
    fused call's time goes, launch by launch, without the launches' Python cost."""
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    return {e.key: e.self_device_time_total / calls for e in prof.key_averages() if e.self_device_time_total > 0}


def capture(fn, calls: int) -> torch.cuda.CUDAGraph:
    """`calls` calls of fn recorded once in a CUDA graph."""
    g = torch.cuda.CUDAGraph()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        fn()  # warm the graph-private memory pool before capture
        with torch.cuda.graph(g, stream=stream):
            for _ in range(calls):
                fn()
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    return g


def methods(logits: torch.Tensor, config: tuple[float, int, float, float], variant: dict) -> dict:
    from transformers.generation.logits_process import (LogitsProcessorList, MinPLogitsWarper,
                                                        TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper)

    from minigpt.kernels.sampling import fused_sample  # (Triton's: imported once a GPU is known to be there)

    t, k, p, m = config
    B, dev = logits.size(0), logits.device
    rows = dict(temperature=torch.full((B,), t, device=dev), top_k=torch.full((B,), k, dtype=torch.int32, device=dev),
                top_p=torch.full((B,), p, device=dev), min_p=torch.full((B,), m, device=dev))
    seed, offset = torch.tensor([0], device=dev), torch.tensor([0], device=dev)
    warpers = LogitsProcessorList([TemperatureLogitsWarper(t)] + ([TopKLogitsWarper(k)] if k else [])
                                  + ([TopPLogitsWarper(p)] if p < 1 else []) + ([MinPLogitsWarper(m)] if m else []))
    ids = torch.zeros(B, 1, dtype=torch.long, device=dev)

    def hf() -> torch.Tensor:
        scores = warpers(ids, logits.float())  # transformers' generate casts the step's logits to fp32
        return torch.multinomial(scores.softmax(-1), 1)

    return {
        "fused": lambda: fused_sample(logits, **rows, seed=seed, offset=offset, **variant),
        "1-prog": lambda: fused_sample(logits, **rows, seed=seed, offset=offset, **{"splits": 1, **variant}),
        "torch": lambda: sample(logits, temperature=t, top_k=k, top_p=p, min_p=m, backend="torch"),
        "transformers": hf,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vocab", type=int, default=50257, help="logits per row (default: GPT-2's 50257)")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8, 64, 256], help="batch sizes (default 1 8 64 256)")
    ap.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--repeats", type=int, default=7, help="timed runs per figure, the median is reported (default: 7)")
    ap.add_argument("--calls", type=int, default=20, help="calls per timed run (default: 20)")
    ap.add_argument("--variants", action="store_true", help="also time the kernel at other block sizes / warps")
    ap.add_argument("--kernels", action="store_true",
                    help="also print each kernel's GPU µs per call (torch.profiler): split path and one program")
    ap.add_argument("--splits", type=int, nargs="+", default=[], metavar="S",
                    help="also time the fused kernel in a CUDA graph with each of these programs per row (1: one "
                         "program per row): the figures MIN_SPLITS and graph_splits are chosen by")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print(f"bench_sampling.py: error: needs a CUDA GPU; torch {torch.__version__} sees none "
              "(the torch sampler on a CPU: scripts/bench_sampling_cpu.py)", file=sys.stderr)
        return FAILED
    import transformers
    import triton

    from minigpt.kernels.sampling_split import graph_splits

    print(f"# {torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}, "
          f"transformers {transformers.__version__}; vocab {args.vocab}; µs per call, median of {args.repeats}")
    print("| config | dtype | batch | S in graph | fused loop | 1-prog loop | torch loop | transformers loop | fused graph "
          "| 1-prog graph | torch graph | transformers graph | torch/fused loop | torch/fused graph |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    g = torch.Generator(device="cuda").manual_seed(0)
    for config_name in args.configs:
        for dtype_name in args.dtypes:
            for B in args.batch:
                logits = (torch.randn(B, args.vocab, device="cuda", generator=g) * 2).to(DTYPES[dtype_name])
                fns = methods(logits, CONFIGS[config_name], {})
                assert (fns["fused"]() >= 0).all() and (fns["1-prog"]() >= 0).all()
                us = {(name, graph): time_us(fn, args.repeats, args.calls, graph)
                      for name, fn in fns.items() for graph in (False, True)}
                splits = graph_splits(B, args.vocab, logits.device)
                print(f"| {config_name} | {dtype_name} | {B} | {splits} | {us['fused', False]:.1f} "
                      f"| {us['1-prog', False]:.1f} | {us['torch', False]:.1f} | {us['transformers', False]:.1f} "
                      f"| {us['fused', True]:.1f} | {us['1-prog', True]:.1f} | {us['torch', True]:.1f} "
                      f"| {us['transformers', True]:.1f} | {us['torch', False] / us['fused', False]:.1f}x "
                      f"| {us['torch', True] / us['fused', True]:.1f}x |", flush=True)
                if args.kernels:  # the path a graph takes, and one program per row
                    for label, n in ([(f"split S={splits}", splits)] if splits > 1 else []) + [("1-prog", 1)]:
                        fn = methods(logits, CONFIGS[config_name], {"splits": n})["fused"]
                        times = kernel_us(fn, args.calls)
                        print(f"|   kernels, {label}: " + ", ".join(f"{name.split('(')[0]} {t:.1f}"
                                                                  for name, t in times.items())
                              + f" (sum {sum(times.values()):.1f} µs) |", flush=True)
                if args.splits:  # what each split would cost here, whichever one graph_splits picks
                    times = {n: time_us(methods(logits, CONFIGS[config_name], {"splits": n})["fused"], args.repeats,
                                        args.calls, True) for n in args.splits}
                    print(f"|   graph µs by S | {dtype_name} | {B} | {splits} | "
                          + ", ".join(f"S={n}: {t:.1f}" for n, t in times.items())
                          + f" (fastest S={min(times, key=times.get)}) |", flush=True)
                if args.variants:
                    for block, unroll, warps in VARIANTS:
                        variant = dict(block_size=block, unroll=unroll, num_warps=warps)
                        fn = methods(logits, CONFIGS[config_name], variant)["fused"]
                        print(f"|   variant block {block} unroll {unroll} warps {warps} | {dtype_name} | {B} | {splits} "
                              f"| {time_us(fn, args.repeats, args.calls, False):.1f} | | | | "
                              f"{time_us(fn, args.repeats, args.calls, True):.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
