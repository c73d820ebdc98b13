"""Measuring a run: generation's time to first token, time per output token and tokens/s, memory,
and training's model FLOPs utilisation (MFU).

Where it sits: beside the decode loop (minigpt/generation.py's `decode_loop`, minigpt/beam_search.py),
which keeps a `LoopTimer`: read before prefill, after the first token and after the last step, it
returns what it measured as `GenerationStats` (`return_stats=True`, `minigpt generate --stats`); and
beside the training loop (minigpt/train.py), which logs MFU: the FLOPs its tokens/s amount to
(`gpt_flops_per_token`, which `minigpt train` passes it) over the GPU's peak (`peak_flops`). Fine-tuning reports
`peak_memory_bytes` too (minigpt/finetune.py).

Why the clock syncs the device: on a GPU, PyTorch only *queues* kernels and returns at once, so
`time.perf_counter()` alone would time the queueing, not the work. `LoopTimer` waits for the queue
to drain (`torch.cuda.synchronize()`) before it reads the time. It is read at the phase
boundaries, and around each step's hand-over to the caller only where the host waits for every
step anyway (a streamer, stop strings, a CPU): a sync per step of its own would stall the very
loop it measures.

What it does not measure: each decode step's own time (TPOT is the mean over the decode steps), or energy.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from minigpt.config import GPTConfig
from minigpt.model import GPT

try:
    import resource  # POSIX: the process's peak RSS
except ImportError:  # Windows: its peak working set instead (`_peak_working_set`)
    resource = None

# Dense bf16 tensor-core peak (FLOP/s) by GPU name, for MFU. Unknown GPUs report no MFU. The first
# key found in the device name wins, so a variant comes before the name it contains: "H200 NVL"
# before "H200", "L40S" and "L40" before "L4", "A100" before "A10".
PEAK_BF16_FLOPS = {"H200 NVL": 835e12, "H200": 989e12, "H100 PCIe": 756e12, "H100 NVL": 835e12, "H100": 989e12,
                   "A100": 312e12, "L40S": 362e12, "L40": 181e12, "L4": 121e12, "A10": 125e12, "4090": 165e12}


@dataclass
class GenerationStats:
    """Timings of one `generate` call. TTFT = prefill + first token; TPOT = mean decode step
    (with compile=True a process's first call also imports torch's compiler, in TTFT, and compiles
    the step, in TPOT: time a second call).

    `prompt_tokens` counts each prompt's real tokens once, however many samples it gets
    (num_return_sequences copies it, but it is one prompt). `new_tokens` counts every token
    drawn for a row until that row finished (its EOS or stop string included), summed over the
    samples; the pads of finished rows are not counted. `tokens_per_s` is those new tokens per
    second of decoding. Beam search counts one token per prompt per step (beams are candidates).
    The caller's time between tokens (a `streamer`, the loop over `stream`) is not counted: a slow
    consumer took 31 ms of a 10 ms TPOT (on a GPU, where only a streamer or stop strings make the
    host wait for every step, a consumer of `stream` overlaps the steps queued ahead instead).

    `peak_memory_bytes` is the process's peak so far (`peak_memory_bytes`), not this call's: for
    a CLI run, one call in its own process, that is the run's; in a long-lived process a call that
    needed little reports what an earlier one took. No global allocator statistic is reset to make it
    the call's: the caller's own measures (torch.cuda.reset_peak_memory_stats) would be lost.
    """

    prompt_tokens: int = 0
    new_tokens: int = 0
    ttft_s: float = 0.0
    tpot_s: float = 0.0
    tokens_per_s: float = 0.0
    kv_cache_bytes: int = 0
    peak_memory_bytes: int = 0

    def __str__(self) -> str:
        # One new token is all prefill: no decode step ran, so there is no TPOT to report. (Steps
        # that ran for finished rows only, as a GPU's loop may, have a TPOT and 0 new tokens.)
        decode = (f"TPOT {self.tpot_s * 1e3:.2f} ms | {self.tokens_per_s:.1f} tok/s" if self.tpot_s
                  else "TPOT - (no decode step)")
        return (f"prompt {self.prompt_tokens} tok | new {self.new_tokens} tok | TTFT {self.ttft_s * 1e3:.1f} ms | "
                f"{decode} | "
                f"KV cache {self.kv_cache_bytes / 2**20:.2f} MiB | process peak memory {self.peak_memory_bytes / 2**20:.0f} MiB")


class LoopTimer:
    """A decode loop's timings, made as the loop starts (before prefill). Each reading waits for
    queued GPU work, so a step is timed when it is really done: at the first token (`first_token`)
    and after the last step (`stop`). The caller's time between tokens (a streamer, a `stream`
    consumer) is not decoding: `handed_out` leaves it out where the host waits for every step anyway
    (`waits_each_step`; on a GPU that looks only every few steps, it overlaps the steps queued ahead)."""

    def __init__(self, device: torch.device, waits_each_step: bool = True) -> None:
        self.cuda, self.waits_each_step = device.type == "cuda", waits_each_step
        self.paused, self.t_first, self.t_end = 0.0, 0.0, 0.0
        self.t_start = self.now()

    def now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def first_token(self) -> None:
        self.t_first = self.now()

    def stop(self) -> None:
        self.t_end = self.now() - self.paused

    @contextmanager
    def handed_out(self) -> Iterator[None]:
        """Around the code that hands a step's tokens to the caller (a streamer call, a `yield`)."""
        if not self.waits_each_step:
            yield
            return
        t = self.now()
        yield  # (a call that ends here, its generator closed or the streamer raising, returns no stats)
        self.paused += self.now() - t

    def stats(self, *, prompt_tokens: int, new_tokens: int, first_tokens: int, steps: int, kv_cache_bytes: int,
              device: torch.device) -> GenerationStats:
        """What was timed, after `stop`. The `first_tokens` of the first step are prefill's work, so
        they are in TTFT; TPOT and tokens/s are over the `steps` decode forwards that followed (none
        for one token)."""
        decode_s = self.t_end - self.t_first
        return GenerationStats(prompt_tokens=prompt_tokens, new_tokens=new_tokens, ttft_s=self.t_first - self.t_start,
                               tpot_s=decode_s / steps if steps else 0.0,
                               tokens_per_s=(new_tokens - first_tokens) / decode_s if steps else 0.0,
                               kv_cache_bytes=kv_cache_bytes, peak_memory_bytes=peak_memory_bytes(device))


def peak_memory_bytes(device: torch.device) -> int:
    """The process's peak memory so far: on a GPU the CUDA allocator's peak (since the process began
    or its last torch.cuda.reset_peak_memory_stats), else the most RAM the process held at once (its
    peak RSS; on Windows, its peak working set), which minigpt never resets. Not one call's or one run's
    peak, unless that call is all the process did (a CLI command)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    if sys.platform.startswith("linux") and (own := _linux_peak_rss()) is not None:
        return own
    if resource is None:
        return _peak_working_set()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # macOS counts bytes, Linux KiB


def _linux_peak_rss() -> int | None:
    """This process's own peak RSS on Linux: /proc/self/status's VmHWM (None without /proc, as in
    some sandboxes). Not getrusage's ru_maxrss, which Linux keeps across exec: a process started by
    a bigger one (a notebook, a test runner, a service) would report its parent's peak as its own."""
    try:
        with open("/proc/self/status") as status:
            return next((int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:")), None)  # kB
    except OSError:
        return None


def _peak_working_set() -> int:
    """Windows' peak RSS: GetProcessMemoryInfo's PeakWorkingSetSize, read through ctypes."""
    import ctypes

    class Counters(ctypes.Structure):  # PROCESS_MEMORY_COUNTERS: two DWORDs, then eight SIZE_Ts
        _fields_ = [("cb", ctypes.c_uint32), ("PageFaultCount", ctypes.c_uint32),
                    *((name, ctypes.c_size_t) for name in (
                        "PeakWorkingSetSize", "WorkingSetSize", "QuotaPeakPagedPoolUsage", "QuotaPagedPoolUsage",
                        "QuotaPeakNonPagedPoolUsage", "QuotaNonPagedPoolUsage", "PagefileUsage", "PeakPagefileUsage"))]

    counters = Counters(cb=ctypes.sizeof(Counters))
    this_process = ctypes.c_void_p(-1)  # the handle GetCurrentProcess() returns
    if not ctypes.windll.psapi.GetProcessMemoryInfo(this_process, ctypes.byref(counters), counters.cb):
        raise ctypes.WinError()
    return counters.PeakWorkingSetSize


def peak_flops(device: torch.device) -> float | None:
    """The GPU's dense bf16 peak FLOP/s from PEAK_BF16_FLOPS; None off CUDA or for a GPU not listed."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16_FLOPS.items() if k in name), None)


def gpt_flops_per_token(config: GPTConfig, block_size: int) -> float:
    """Training FLOPs per token (forward + backward), as in the PaLM paper's appendix B.

    6 per parameter (2 forward, 4 backward) plus attention's scores and weighted sum, which
    grow with the context: 12 · n_layer · n_embd · T.
    """
    with torch.device("meta"):  # shapes only: count without allocating
        n = GPT(config).num_params(exclude_embeddings=True)  # wpe is a lookup, not a matmul
    return 6 * n + 12 * config.n_layer * config.n_embd * block_size
