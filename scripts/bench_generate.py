"""Generation speed: minigpt.generate against transformers.generate, same weights, same process.

    python scripts/bench_generate.py                          # 124M, fp32 + bf16, batch 1 and 8
    python scripts/bench_generate.py --repeats 7 --new-tokens 128 --compile
    python scripts/bench_generate.py --device cuda --compile       # on a GPU: bf16 rows vs transformers bf16
    python scripts/bench_generate.py --device cuda --compile --repetition-penalty 1.2   # penalties in every step
    python scripts/bench_generate.py --top-p 0.9 --no-bf16 --ttft-lengths 64   # sampled decode, both sides
    python scripts/bench_generate.py --top-k 50 --top-p 0.9 --no-bf16 --ttft-lengths 64
    python scripts/bench_generate.py --memory 1016 --batches 8 --no-bf16 --repeats 3 --threads 1   # memory, no timing

What it measures (each figure the median of --repeats runs, minigpt and transformers interleaved
so both see the same machine load):
- TTFT: wall time of generate(max_new_tokens=1) for 64-, 256- and 1024-token prompts (batch 1),
  those that fit the model's context (every --ttft-lengths given must fit, as must --new-tokens).
- TPOT: decode time per step for --new-tokens new tokens, from the timestamps a streamer
  records (first new token → last), at batch 1 and 8. Tokens/s = batch / TPOT. On a GPU also
  with no streamer, from wall times (the streamer's wait for each token serializes host and GPU),
  and the GPU's kernel time per step (torch.profiler), which says what bounds a step.
- The matvec floor: the bare weight matrix × activation products of one decode step (12 blocks
  + LM head, no attention, no Python around them), twice: with F.linear (PyTorch's default
  kernel, the reference's floor) and with minigpt's `Linear` (oneDNN for fp32 and bf16 on x86, see
  minigpt/linear.py). A decoder cannot beat the floor of the kernel it uses; floor/ours says how
  close minigpt's step gets to its own. Where `Linear` keeps fp32 on MKL (a few rows on an
  Intel CPU, or one row on one thread on a CPU without AVX-512), a line gives the oneDNN floor it
  passed over.
- bf16: minigpt in bfloat16 against transformers in fp32, and how far bf16 logits drift from fp32
  (on a 256-token prompt, or the whole context if it is shorter).
- The KV cache's bytes against 2·n_layer·B·max_len·n_embd·bytes, and (on a GPU) the memory
  generate allocates at its peak on top of the models already held.
- On a GPU: transformers runs in each row's dtype (on a CPU it stays fp32, the reference),
  every timestamp waits for the GPU (torch.cuda.synchronize), and the bandwidth limit of a step
  (weight bytes / copy bandwidth measured in the same run) is printed beside the floors.
- With --memory PROMPT_LENGTHS, memory instead of speed (nothing else runs): for each batch size
  and prompt length, the KV cache's bytes and the peak memory generate's prefill (max_new_tokens=1)
  takes beyond the weights and the cache: its activations, which for a moment hold every prompt
  token of every row. Each figure is the median of --repeats fresh processes, one per run, so that
  no peak carries over: on a CPU the rise of the process's peak RSS over its RSS before the call
  (Linux, which can reset that peak), on a GPU the CUDA allocator's peak over what it held before.
  "The weights" include oneDNN's packed copies (minigpt/linear.py), made by a warm-up call first.
Random weights (GPT-2 124M shapes) unless --model names a checkpoint; speed does not depend on them,
nor does memory.
"""
from __future__ import annotations

import argparse
import copy
import ctypes
import gc
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from minigpt import GPT, GPTConfig
from minigpt.checkpoint import CONV1D_SUFFIXES, resolve_device
from minigpt.cli import FAILED, flag_words
from minigpt.files import user_path
from minigpt.generation import generate
from minigpt.generate_args import tokens_fed
from minigpt.kv_cache import cache_length
from minigpt.linear import MKL_ROWS, mkl_rows, packed_weight
from minigpt.penalties import check_penalties
from minigpt.sampling import check_sampling_params, resolve_backend

if TYPE_CHECKING:  # imported in build_models: --memory never builds the twin, and the import takes seconds
    from transformers import GPT2LMHeadModel

DECODE_PROMPT = 16  # tokens of each TPOT and KV-cache run's prompt: short, so the decode steps dominate
DRIFT_PROMPT = 256  # tokens of the bf16 drift prompt, or the model's whole context if it is shorter
TTFT_LENGTHS = [64, 256, 1024]  # the default --ttft-lengths, those that fit the model's context
LABEL_WIDTH = 42  # the first column: "TPOT ours bf16 compiled, batch 1024 (ms)" and a gap


def build_model(model_dir: str | None) -> GPT:
    """The checkpoint in `model_dir`, in fp32, or random weights in GPT-2 124M's shapes."""
    if model_dir:
        return GPT.from_pretrained(model_dir, dtype=torch.float32)
    torch.manual_seed(0)
    return GPT(GPTConfig.gpt2("gpt2"))


def build_models(model_dir: str | None) -> tuple[GPT, GPT2LMHeadModel]:
    """minigpt's GPT and a transformers twin holding the very same weights."""
    from transformers import GPT2Config, GPT2LMHeadModel

    model = build_model(model_dir)
    with torch.device("meta"):
        hf = GPT2LMHeadModel(GPT2Config(**model.config.to_hf_dict()))
    # Contiguous (in, out) Conv1D weights, as GPT2LMHeadModel.from_pretrained gives them (a
    # transposed view would send transformers' addmm down a different, here slower, path).
    state = {k: (t.t().contiguous() if k.endswith(CONV1D_SUFFIXES) else t) for k, t in model.state_dict().items()}
    hf.load_state_dict(state, strict=True, assign=True)
    hf.config._attn_implementation = "sdpa"
    return model.eval(), hf.eval()


def sync(device: torch.device) -> None:
    """Wait for the GPU's queued work, so a timestamp means "done", not "launched"."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Stamps:
    """A streamer for both libraries: records when each batch of new tokens arrives."""

    def __init__(self, device: torch.device) -> None:
        self.times: list[float] = []
        self.device = device

    def __call__(self, _tokens) -> None:  # minigpt: streamer(tokens)
        sync(self.device)
        self.times.append(time.perf_counter())

    put = __call__  # transformers: streamer.put(tokens); its first call is the prompt

    def end(self) -> None:
        pass


def tpot(times: list[float]) -> float:
    return (times[-1] - times[0]) / (len(times) - 1)


def matvec_floor(model: GPT, batch: int, dtype: torch.dtype, repeats: int, kernel: str) -> float:
    """Seconds for one decode step's weight products alone: x (B, C) through every Linear once,
    with `kernel` "F.linear" (PyTorch's default), "minigpt" (minigpt.linear.Linear's forward) or
    "oneDNN" (its oneDNN call on the packed weight, whatever Linear would pick)."""
    c = model.config
    linears = []
    for block in model.transformer.h:
        linears += [block.attn.c_attn, block.attn.c_proj, block.mlp.c_fc, block.mlp.c_proj]
    device = model.lm_head.weight.device
    linears = [copy.deepcopy(m).to(dtype) for m in linears + [model.lm_head]]
    x_c = torch.randn(batch, c.n_embd, dtype=dtype, device=device)
    x_4c = torch.randn(batch, c.mlp_width, dtype=dtype, device=device)
    packed = [packed_weight(m.weight) for m in linears] if kernel == "oneDNN" else []
    if any(w is None for w in packed):  # minigpt.linear.room_for: no memory for the copies
        raise MemoryError("no memory free for oneDNN's packed weights: the oneDNN floor cannot be measured")

    def step() -> None:
        for i, m in enumerate(linears):
            x = x_c if m.in_features == c.n_embd else x_4c
            if kernel == "minigpt":
                m(x)
            elif kernel == "oneDNN":
                torch.ops.mkldnn._linear_pointwise(x, packed[i], m.bias, "none", [], "")
            else:
                F.linear(x, m.weight, m.bias)

    step()
    times = []
    for _ in range(repeats * 4):
        sync(device)
        t0 = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bandwidth_limit(model: GPT, dtype: torch.dtype) -> float:
    """Seconds to read every weight once at the device's copy bandwidth (measured: a 1 GiB copy
    reads and writes 2 GiB): no decode step of batch ≤ a few dozen can beat it."""
    device = model.lm_head.weight.device
    src = torch.empty(2**30, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    sync(device)
    copies = 10
    t0 = time.perf_counter()
    for _ in range(copies):
        dst.copy_(src)
    sync(device)
    bandwidth = 2 * src.numel() * copies / (time.perf_counter() - t0)  # bytes/s
    weight_bytes = model.num_params() * torch.empty((), dtype=dtype).element_size()
    return weight_bytes / bandwidth


def decode_times(model: GPT, hf: GPT2LMHeadModel, batch: int, new: int, repeats: int, compile: bool,
                 ours_dtype: torch.dtype, decoding: dict, sampler: str) -> tuple[float, ...]:
    """Median TPOT (s) of minigpt (in ours_dtype) and transformers (its own dtype) at this batch
    size: from a streamer's timestamps, then with no streamer, then (on a GPU) the kernel time of
    a step: (ours, theirs) three times, NaN where not measured. `decoding`: the keywords both
    `generate` calls take (repetition_penalty; with --top-p or --top-k, do_sample, top_p and top_k),
    and minigpt's draws take `sampler`'s backend.

    A streamer that waits for each step's tokens keeps the host from queueing the next step while
    the GPU runs this one, so its TPOT is host time + GPU time. With no streamer minigpt's loop
    looks at the device only every few steps, and the two overlap: TPOT = (the wall time of `new`
    tokens − that of 1) / (new − 1). On a CPU the two measures agree (nothing runs ahead)."""
    device = model.lm_head.weight.device
    ids = torch.randint(0, model.config.vocab_size, (batch, DECODE_PROMPT), generator=torch.Generator().manual_seed(batch))
    ids = ids.to(device)
    ours_model = model if ours_dtype == torch.float32 else copy.deepcopy(model).to(ours_dtype)

    def ours_run(n: int, streamer=None) -> None:
        generate(ours_model, ids, max_new_tokens=n, eos_token_id=[], streamer=streamer, compile=compile,
                 **decoding, **({"sampler": sampler} if decoding.get("do_sample") else {}))

    def theirs_run(n: int, streamer=None) -> None:
        hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                    pad_token_id=0, streamer=streamer, **{"do_sample": False, **decoding})

    def wall(run, n: int) -> float:
        sync(device)
        t0 = time.perf_counter()
        run(n)
        sync(device)
        return time.perf_counter() - t0

    times: dict[str, list[float]] = {"ours": [], "theirs": [], "ours bare": [], "theirs bare": [], "ours busy": [],
                                     "theirs busy": []}
    # Warm-up (and, with compile, the compilation itself) stays outside the timing.
    ours_run(new)
    theirs_run(4)
    for _ in range(repeats):
        s = Stamps(device)
        ours_run(new, s)
        times["ours"].append(tpot(s.times))
        s = Stamps(device)
        theirs_run(new, s)
        times["theirs"].append(tpot(s.times[1:]))  # the first put() is the prompt
        if device.type == "cuda":
            for name, run in [("ours", ours_run), ("theirs", theirs_run)]:
                times[f"{name} bare"].append((wall(run, new) - wall(run, 1)) / (new - 1))
    if device.type == "cuda":
        for name, run in [("ours", ours_run), ("theirs", theirs_run)]:
            times[f"{name} busy"].append((gpu_busy(run, new) - gpu_busy(run, 1)) / (new - 1))
    return tuple(statistics.median(t) if t else float("nan") for t in times.values())


def gpu_busy(run, n: int) -> float:
    """Seconds the GPU spends in kernels (and copies) during run(n), from torch.profiler's CUDA
    activity: set beside a step's wall time, it says whether the step waits for the GPU or the host."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        run(n)
        torch.cuda.synchronize()
    return sum(e.self_device_time_total for e in prof.key_averages()) * 1e-6  # the profiler counts µs


def ttft_times(model: GPT, hf: GPT2LMHeadModel, length: int, repeats: int) -> tuple[float, float]:
    device = model.lm_head.weight.device
    ids = torch.randint(0, model.config.vocab_size, (1, length), generator=torch.Generator().manual_seed(length))
    ids = ids.to(device)
    ours, theirs = [], []
    generate(model, ids, max_new_tokens=1, eos_token_id=[])  # warm-up
    hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=1, do_sample=False, pad_token_id=0)
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        generate(model, ids, max_new_tokens=1, eos_token_id=[])
        sync(device)
        ours.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=1, do_sample=False, pad_token_id=0)
        sync(device)
        theirs.append(time.perf_counter() - t0)
    return statistics.median(ours), statistics.median(theirs)


def kv_cache_check(model: GPT, batch: int, new: int, dtype: torch.dtype) -> str:
    """The KV cache's bytes as generate reports them, against 2·n_layer·B·max_len·n_embd·bytes; on a
    GPU also the memory the call itself allocated at its peak (cache, activations, logits).

    That peak is the allocator's peak minus what was allocated before the call: max_memory_allocated
    alone counts every model resident in the process (this script holds minigpt's, transformers' and
    their bf16 copies). A CPU has no such counter: the process's peak RSS (generate's
    `peak_memory_bytes` there) is the whole run's, the same for every line, so it is left out."""
    c, device = model.config, model.lm_head.weight.device
    ours = model if dtype == torch.float32 else copy.deepcopy(model).to(dtype)
    ids = torch.randint(0, c.vocab_size, (batch, DECODE_PROMPT), device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    _, stats = generate(ours, ids, max_new_tokens=new, eos_token_id=[], return_stats=True)
    max_len = cache_length(tokens_fed(DECODE_PROMPT, new), c.n_positions)
    expected = 2 * c.n_layer * batch * max_len * c.n_embd * torch.empty((), dtype=dtype).element_size()
    line = (f"KV cache, {str(dtype).split('.')[-1]}, batch {batch}, {max_len} slots: {stats.kv_cache_bytes / 2**20:.1f} MiB "
            f"(2·n_layer·B·T·n_embd·bytes = {expected / 2**20:.1f} MiB, "
            f"{'equal' if stats.kv_cache_bytes == expected else 'DIFFERENT'})")
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) - before
        line += f"; generate's peak allocation {peak / 2**20:.0f} MiB above the {before / 2**20:.0f} MiB already held"
    return line


def rss_now() -> int:
    """The process's resident memory now, in bytes (Linux: /proc/self/statm counts pages), after
    glibc hands back the memory it keeps from freed blocks (malloc_trim): counted here, that memory
    would be reused by the next call unseen, as if the call needed less (a bf16 run's prefill read
    below zero, in the fp32 weights the cast had freed)."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (musl): nothing kept to hand back
        pass
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def reset_peak_rss() -> None:
    """Set the process's peak RSS (VmHWM, which minigpt.stats.peak_memory_bytes reads on Linux) back
    to its RSS now, as torch.cuda.reset_peak_memory_stats does for the GPU's peak: without it, a
    peak from building the model (its init's temporaries) could hide the prefill's. Linux only."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # "5": reset the peak resident set size (Documentation/filesystems/proc.rst)


def prefill_memory(model_dir: str | None, device: torch.device, dtype: torch.dtype, batch: int, length: int) -> dict:
    """One memory run, in this process (a fresh one: `memory_rows`): generate's KV cache bytes for
    `batch` prompts of `length` tokens (max_new_tokens=1: the prefill and no decode step), the bytes
    2·n_layer·B·max_len·n_embd·bytes says it should have, and the peak memory the call took beyond
    what the process held before it (the weights) and beyond the cache: the prefill's activations."""
    model = build_model(model_dir).to(device=device, dtype=dtype)
    c = model.config
    # Warm-up, not measured: the first call packs each weight for oneDNN (more than MKL_ROWS rows,
    # hence 8 tokens) and reads weights a checkpoint maps lazily; both are the model's memory.
    warm = torch.randint(0, c.vocab_size, (1, min(8, c.n_positions)), device=device)
    generate(model, warm, max_new_tokens=1, eos_token_id=[])
    ids = torch.randint(0, c.vocab_size, (batch, length), generator=torch.Generator().manual_seed(length)).to(device)
    del warm
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    else:
        before = rss_now()
        reset_peak_rss()
    _, stats = generate(model, ids, max_new_tokens=1, eos_token_id=[], return_stats=True)
    sync(device)
    # The peak since the reset (minigpt.stats.peak_memory_bytes: CUDA's allocator peak, or the RSS's, VmHWM).
    peak = stats.peak_memory_bytes - before
    slots = cache_length(tokens_fed(length, 1), c.n_positions)
    expected = 2 * c.n_layer * batch * slots * c.n_embd * torch.empty((), dtype=dtype).element_size()
    return {"kv_cache_bytes": stats.kv_cache_bytes, "expected_bytes": expected, "slots": slots,
            "extra_bytes": peak - stats.kv_cache_bytes, "held_bytes": before}


def memory_rows(args: argparse.Namespace, device: torch.device) -> Iterator[str]:
    """For each dtype, batch size and --memory prompt length: `prefill_memory` in --repeats fresh
    processes (this script again, with --memory-child), their medians as lines to print. A fresh
    process each, so no run starts with another's allocations, caches or peak."""
    for dtype in [torch.float32] + ([] if args.no_bf16 else [torch.bfloat16]):
        name = str(dtype).split(".")[-1]
        for batch in args.batches:
            for length in args.memory:
                runs = []
                for _ in range(args.repeats):
                    cmd = [sys.executable, __file__, "--memory", str(length), "--batches", str(batch), "--device",
                           str(device), "--threads", str(args.threads), "--memory-child", name]
                    r = subprocess.run(cmd + (["--model", args.model] if args.model else []), capture_output=True, text=True)
                    if r.returncode < 0:  # a signal: on Linux, most likely the kernel's out-of-memory killer
                        raise RuntimeError(f"the memory run of batch {batch}, {length}-token prompt, {name} was killed by "
                                           f"{signal.Signals(-r.returncode).name}"
                                           + (" (the kernel's out-of-memory killer?)" if r.returncode == -signal.SIGKILL else ""))
                    if r.returncode != 0:  # e.g. the prefill's MemoryError: its last line says what did not fit
                        last = (r.stderr.strip().splitlines() or ["(no message)"])[-1]
                        raise RuntimeError(f"the memory run of batch {batch}, {length}-token prompt, {name} failed: {last}")
                    runs.append(json.loads(r.stdout.strip().splitlines()[-1]))
                cache, expected, slots = runs[0]["kv_cache_bytes"], runs[0]["expected_bytes"], runs[0]["slots"]
                extra = sorted(run["extra_bytes"] for run in runs)
                held = statistics.median([run["held_bytes"] for run in runs])
                yield (f"KV cache, {name}, batch {batch}, {length:,}-token prompt, {slots} slots: {cache / 2**20:.1f} MiB "
                       f"({cache:,} bytes; 2·n_layer·B·T·n_embd·bytes = {expected:,}, "
                       f"{'equal' if cache == expected else 'DIFFERENT'})")
                yield (f"  prefill's peak beyond the weights and the cache: {statistics.median(extra) / 2**20:.0f} MiB "
                       f"(range {extra[0] / 2**20:.0f}–{extra[-1] / 2**20:.0f}; {held / 2**20:.0f} MiB held before)")


def bf16_drift(model: GPT, length: int) -> tuple[float, float, float]:
    """Max |logit difference| bf16 vs fp32 on a `length`-token prompt, the fp32 logits' std, and the
    fraction of positions whose top-1 token agrees."""
    ids = torch.randint(0, model.config.vocab_size, (1, length), generator=torch.Generator().manual_seed(1))
    ids = ids.to(model.lm_head.weight.device)
    ref, _ = model(ids)
    low, _ = copy.deepcopy(model).to(torch.bfloat16)(ids)
    diff = (low.float() - ref).abs().max().item()
    agree = (low.argmax(-1) == ref.argmax(-1)).float().mean().item()
    return diff, ref.std().item(), agree


def counts(text: str) -> list[int]:
    """--batches, --ttft-lengths: comma-separated counts, each ≥ 1 (argparse names the flag)."""
    try:
        values = [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if min(values) < 1:
        raise argparse.ArgumentTypeError(f"each must be ≥ 1, got {text!r}")
    return values


# The flags that only the timed runs read: given with --memory, they are refused rather than left unused.
TIMED_ONLY = ("new_tokens", "ttft_lengths", "compile", "repetition_penalty", "top_p", "top_k", "sampler")


def check_flags(args: argparse.Namespace, n_positions: int) -> None:
    """ValueError naming the flag whose prompts or tokens do not fit the model's context (or
    --repeats < 1, --threads < 0), before any timing: else a run would fail after minutes of it."""
    if args.repeats < 1:
        raise ValueError(f"--repeats must be ≥ 1, got {args.repeats}")
    if args.threads < 0:
        raise ValueError(f"--threads must be ≥ 0, got {args.threads}")
    with flag_words(["repetition_penalty"]):  # the library's own check, in the flag's words
        check_penalties(args.repetition_penalty)
    if args.memory:  # the memory runs time nothing: only their prompts must fit (with the token they make)
        if max(args.memory) > n_positions:
            raise ValueError(f"--memory {max(args.memory)} exceeds the model's context n_positions={n_positions}: "
                             f"give prompt lengths ≤ {n_positions}")
        return
    with flag_words(["top_p", "top_k"]):
        check_sampling_params(top_p=args.top_p, top_k=args.top_k)
    longest = max(args.ttft_lengths)
    if longest > n_positions:
        raise ValueError(f"--ttft-lengths {longest} exceeds the model's context n_positions={n_positions}: "
                         f"give prompt lengths ≤ {n_positions}")
    # TPOT is the time between the first and the last new token, so a run needs two; the model
    # reads the prompt and every new token but the last (`tokens_fed`).
    most = n_positions - tokens_fed(DECODE_PROMPT, 0)
    if most < 2:  # else the range below reads [2, -5]
        raise ValueError(f"the model's context n_positions={n_positions} is too short for a TPOT run: its "
                         f"{DECODE_PROMPT}-token prompt and 2 new tokens need {tokens_fed(DECODE_PROMPT, 2)} positions")
    if not 2 <= args.new_tokens <= most:
        raise ValueError(f"--new-tokens must be in [2, {most}] (after the {DECODE_PROMPT}-token prompt of each TPOT run, "
                         f"in the model's context n_positions={n_positions}), got {args.new_tokens}")


@torch.no_grad()  # inference only; as a decorator, the caller's grad mode comes back (tests call main in-process)
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, type=user_path, help="checkpoint directory (default: random 124M weights)")
    p.add_argument("--repeats", type=int, default=5, help="runs per figure, the median is reported (default 5)")
    p.add_argument("--new-tokens", type=int, default=128, help="tokens decoded per TPOT run (default 128)")
    p.add_argument("--batches", type=counts, default="1,8", help="comma-separated batch sizes for TPOT (default 1,8)")
    p.add_argument("--ttft-lengths", type=counts, default=None,
                   help="comma-separated prompt lengths for TTFT (default 64,256,1024: those that fit the context)")
    p.add_argument("--no-bf16", action="store_true", help="skip every bf16 measurement (rows, logits drift, KV cache)")
    p.add_argument("--compile", action="store_true", help="also time minigpt's compiled decode step")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=int, default=0,
                   help="torch.set_num_threads (0: leave as is); on a shared machine 1 thread gives steadier ratios")
    p.add_argument("--repetition-penalty", type=float, default=1.0,
                   help="decode with this repetition penalty on both sides (default 1.0: none); with --compile, "
                        "minigpt's penalties run compiled, as one fused kernel a step")
    p.add_argument("--top-p", type=float, default=1.0,
                   help="sample (do_sample=True) with this top_p on both sides in every TPOT run (default 1.0: greedy); "
                        "transformers' sort-based top-p and torch.multinomial against minigpt's sampler")
    p.add_argument("--top-k", type=int, default=0,
                   help="sample with this top_k on both sides in every TPOT run, after which top-p (if given) "
                        "filters (default 0: off)")
    p.add_argument("--sampler", default="auto", choices=["auto", "torch", "triton"],
                   help="minigpt's sampling backend in the sampled runs (default auto: the fused Triton kernel on a "
                        "GPU where triton imports, else torch's); the header names the one timed")
    p.add_argument("--memory", type=counts, default=None, metavar="PROMPT_LENGTHS",
                   help="measure memory instead of speed: for each --batches size and each of these comma-separated "
                        "prompt lengths, the KV cache's bytes and the prefill's peak memory beyond the weights and "
                        "the cache, the median of --repeats fresh processes (on a CPU: peak RSS, Linux only)")
    p.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)  # one such process: its dtype's name
    args = p.parse_args(argv)
    if args.memory_child:  # one run of memory_rows, in its own process: a JSON line for it to read
        if args.threads:
            torch.set_num_threads(args.threads)
        print(json.dumps(prefill_memory(args.model, torch.device(args.device), getattr(torch, args.memory_child),
                                        args.batches[0], args.memory[0])))
        return 0
    sampled = args.top_p < 1 or args.top_k > 0
    # Each mistake is one line, not a traceback: "cuda" without a GPU (not torch's assertion), a
    # --model that is no checkpoint or cannot be downloaded (OSError), lengths that do not fit.
    try:
        device = resolve_device(args.device)
        if args.memory:
            timed_only = [f"--{name.replace('_', '-')}" for name in TIMED_ONLY if getattr(args, name) != p.get_default(name)]
            if timed_only:  # else silently left out of the memory runs
                one = len(timed_only) == 1
                raise ValueError(f"{', '.join(timed_only)} {'is' if one else 'are'} for the timed runs, which --memory does "
                                 f"not make: drop {'it' if one else 'them'}, or drop --memory")
            if device.type == "cpu" and not os.path.exists("/proc/self/clear_refs"):
                raise ValueError("--memory on a CPU needs Linux: a process's peak RSS is reset through /proc/self/clear_refs")
            # Loaded here only for its context length, as each run loads it (a Hub id, an adapter folder
            # on its base; a missing one said with what to do), in fp32: a float16 124M takes a GB for
            # that moment. Each run builds its own model, in a fresh process.
            check_flags(args, (build_model(args.model).config if args.model else GPTConfig.gpt2("gpt2")).n_positions)
        else:
            model, hf = build_models(args.model)
            n_positions = model.config.n_positions
            if args.ttft_lengths is None:
                args.ttft_lengths = [n for n in TTFT_LENGTHS if n <= n_positions] or [n_positions]
            check_flags(args, n_positions)
            sampler = resolve_backend(args.sampler, device, "--sampler")  # what "auto" takes here, said below
    except (ValueError, OSError) as e:
        print(f"bench_generate.py: error: {e}", file=sys.stderr)
        return FAILED
    if args.memory:
        where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{args.threads or torch.get_num_threads()} CPU threads"
        print(f"torch {torch.__version__}, {where}, median of {args.repeats} fresh processes; generate(max_new_tokens=1)'s "
              f"memory ({'the CUDA allocator' if device.type == 'cuda' else 'peak RSS'})\n")
        try:
            for line in memory_rows(args, device):
                print(line, flush=True)  # a row as soon as it is measured: a 124M row takes a minute or more
        except RuntimeError as e:
            print(f"bench_generate.py: error: {e}", file=sys.stderr)
            return FAILED
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    model, hf = model.to(device), hf.to(device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} CPU threads"
    print(f"torch {torch.__version__}, {where}, median of {args.repeats} runs; "
          f"minigpt / transformers ratios > 1 mean minigpt is faster"
          + (f"; repetition_penalty {args.repetition_penalty} in every TPOT run" if args.repetition_penalty != 1 else "")
          + (f"; sampled with top_k {args.top_k}, top_p {args.top_p} in every TPOT run (minigpt's {sampler} sampler)"
             if sampled else "")
          + ("; transformers runs fp32 on a CPU (the bf16 rows compare against it)" if device.type == "cpu" else "")
          + "\n")
    # The CPU reference is transformers in fp32; on a GPU both sides run each row's dtype.
    theirs_in = {torch.float32: hf}
    if device.type == "cuda" and not args.no_bf16:
        theirs_in[torch.bfloat16] = copy.deepcopy(hf).to(torch.bfloat16)

    print(f"{'measurement':<{LABEL_WIDTH}}{'minigpt':>12}{'transformers':>14}{'speed-up':>10}"
          f"{'F.linear floor':>16}{'minigpt floor':>15}{'floor/ours':>12}")
    for length in args.ttft_lengths:
        ours, theirs = ttft_times(model, hf, length, args.repeats)
        print(f"{f'TTFT, {length}-token prompt (ms)':<{LABEL_WIDTH}}{ours * 1e3:>12.1f}{theirs * 1e3:>14.1f}{theirs / ours:>10.2f}")
    runs = [("fp32", torch.float32, False)]
    if args.compile:
        runs.append(("fp32 compiled", torch.float32, True))
    if not args.no_bf16:
        runs.append(("bf16", torch.bfloat16, False))
        if args.compile:
            runs.append(("bf16 compiled", torch.bfloat16, True))
    if device.type == "cuda":  # the GPU target's row (bf16, compiled) first: a run cut short by a time limit keeps it
        runs.reverse()
    decoding = {"repetition_penalty": args.repetition_penalty}
    if sampled:
        decoding.update(do_sample=True, top_p=args.top_p, top_k=args.top_k)  # top_k 0 is off (transformers' default is 50)
    for batch in args.batches:
        for name, dtype, compile in runs:
            reference = theirs_in.get(dtype, hf)
            ours, theirs, ours_bare, theirs_bare, ours_busy, theirs_busy = decode_times(
                model, reference, batch, args.new_tokens, args.repeats, compile, dtype, decoding, sampler)
            plain, floor = (matvec_floor(model, batch, dtype, args.repeats, k) for k in ("F.linear", "minigpt"))
            label = f"TPOT ours {name}, batch {batch} (ms)"
            print(f"{label:<{LABEL_WIDTH}}{ours * 1e3:>12.1f}{theirs * 1e3:>14.1f}{theirs / ours:>10.2f}"
                  f"{plain * 1e3:>16.1f}{floor * 1e3:>15.1f}{floor / ours:>12.2f}")
            print(f"{'  tokens/s':<{LABEL_WIDTH}}{batch / ours:>12.1f}{batch / theirs:>14.1f}")
            if device.type == "cuda":  # (on a CPU the same figures: nothing runs ahead)
                print(f"{'  no streamer (ms)':<{LABEL_WIDTH}}{ours_bare * 1e3:>12.2f}{theirs_bare * 1e3:>14.2f}"
                      f"{theirs_bare / ours_bare:>10.2f}   (nothing waits for each token: the host queues ahead)")
                print(f"{'  GPU busy per step (ms)':<{LABEL_WIDTH}}{ours_busy * 1e3:>12.2f}{theirs_busy * 1e3:>14.2f}"
                      f"{'':>10}   (kernel time, torch.profiler: the rest of a step is the host's)")
            if device.type == "cpu" and dtype == torch.float32 and batch <= mkl_rows():
                onednn = matvec_floor(model, batch, dtype, args.repeats, "oneDNN")
                why = f"an Intel CPU, ≤ {MKL_ROWS} rows" if MKL_ROWS else "no AVX-512, one thread, one row"
                print(f"{'  oneDNN floor (ms)':<{LABEL_WIDTH}}{onednn * 1e3:>12.1f}   (minigpt keeps MKL here: {why}; "
                      "minigpt/linear.py)")
            if device.type == "cuda" and batch == 1:
                limit = bandwidth_limit(model, dtype)
                print(f"{'  bandwidth limit (ms)':<{LABEL_WIDTH}}{limit * 1e3:>12.2f}   (weight bytes / measured copy bandwidth)")
    if not args.no_bf16:
        length = min(DRIFT_PROMPT, n_positions)
        diff, std, agree = bf16_drift(model, length)
        print(f"\nbf16 vs fp32 logits ({length}-token prompt): max |diff| {diff:.3f} (fp32 logit std {std:.3f}), "
              f"top-1 agreement {agree:.1%}")
    for dtype in [torch.float32] + ([] if args.no_bf16 else [torch.bfloat16]):
        print(kv_cache_check(model, max(args.batches), args.new_tokens, dtype))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
