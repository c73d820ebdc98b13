"""minigpt's Linear: nn.Linear, with inference on x86 CPUs run by oneDNN on a pre-packed weight.

Where it sits: every matmul of the model (`c_attn`, `c_proj`, `c_fc` and the LM head in
minigpt/model.py) is this Linear; nothing else in minigpt changes for it.

Why it exists: one decode step is ~all matrix × vector products (every weight, read once, for
one token per row), so their speed is the speed of generation. Left to itself, PyTorch on x86
sends fp32 products to Intel MKL, which runs its generic code on non-Intel CPUs, and bf16 ones
to oneDNN, which re-packs the weight into its blocked layout (the order its AVX-512 kernels read)
on *every* call. Packing each weight once and calling oneDNN directly makes GPT-2 124M's
decode-step products ~1.8× faster in fp32 and ~1.4× in bf16 at batch 1, ~3.3× in fp32 and ~1.6×
in bf16 at batch 8, on an AMD EPYC with AVX-512 (the two floors of scripts/bench_generate.py;
BENCHMARKS.md). On Intel CPUs MKL runs its tuned code, faster than oneDNN for fp32 products of
up to three rows (decode at batch 1 to 3): there those stay on MKL (`MKL_ROWS`). Elsewhere, on a
CPU without AVX-512 and torch on one thread, one row does (`mkl_rows`).

Same math, same parameters: outputs differ from F.linear only by float rounding (oneDNN sums in
another order). The cost is memory: while a weight serves inference its packed copy is kept
beside it (as much memory again), rebuilt when the weight changes (`packed_weight` says how it
tells), dropped at the first call with grad enabled and after every optimizer step.
"Inference" means grad off (torch.no_grad / inference_mode, as `generate` runs), not eval mode.

Which calls take plain F.linear instead is decided in `Linear.forward`: `takes_onednn`, `watched`,
`packed_weight` (and, for a compiled call, in the custom op `onednn_linear`).
"""
from __future__ import annotations

import math
import os
import platform
import warnings
import weakref
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn as nn
import torch.nn.functional as F
from torch.optim.optimizer import register_optimizer_step_post_hook
from torch.overrides import has_torch_function

# MINIGPT_ONEDNN=0 turns the oneDNN path off (plain F.linear): no packed copies at all, even where
# they would fit (`room_for` already leaves out those that would not), keeping that memory for others.
ONEDNN = (os.environ.get("MINIGPT_ONEDNN", "1") != "0" and platform.machine().lower() in ("x86_64", "amd64")
          and torch.backends.mkldnn.is_available())

# oneDNN's bf16 matmul needs AVX-512 (BW) or AVX-NE-CONVERT; without them its weight reorder raises.
# ATen's dispatch level tells the first apart; a CPU below it keeps bf16 on F.linear.
ONEDNN_BF16 = ONEDNN and torch.backends.cpu.get_cpu_capability() == "AVX512"


def cpu_vendor() -> str:
    """The CPU maker's id, e.g. "GenuineIntel" or "AuthenticAMD" ("" if the system does not say)."""
    try:
        with open("/proc/cpuinfo") as f:  # Linux
            return next((line.split(":")[1].strip() for line in f if line.startswith("vendor_id")), "")
    except OSError:
        return "GenuineIntel" if "GenuineIntel" in platform.processor() else ""  # Windows names it there


# fp32 products of at most this many rows go to MKL on Intel CPUs, where its few-row product beats
# oneDNN's: 124M's decode-step products on a Xeon took 17.3 / 17.4 / 19.0 ms with MKL against
# 19.9 / 20.4 / 21.6 with oneDNN at 1 / 2 / 3 rows, but 32.9 against 20.7 at 4 (BENCHMARKS.md:
# `scripts/bench_generate.py --batches 1,2,3,4`). 0 elsewhere: on AMD MKL's generic code is 1.8× slower,
# but for one case (`mkl_rows`).
MKL_ROWS = 3 if ONEDNN and cpu_vendor() == "GenuineIntel" else 0

# Without AVX-512 oneDNN's vectors are no wider than MKL's generic ones, and MKL's one-row product
# (matrix × vector, on one thread whatever torch's count) beats oneDNN's when oneDNN has one thread
# too: on an AVX2 AMD EPYC, MKL ran 124M's one-row decode-step products 1.25× faster than oneDNN on
# one thread, but oneDNN was 1.18× faster on two, and MKL's products of two rows or more far slower
# (the floors of scripts/bench_generate.py --threads 1 / 2, each pair from one run: BENCHMARKS.md).
ONE_ROW_MKL_ON_ONE_THREAD = ONEDNN and not MKL_ROWS and torch.backends.cpu.get_cpu_capability() != "AVX512"


def mkl_rows() -> int:
    """The most rows an fp32 inference product may have and still go to MKL (F.linear), not oneDNN:
    MKL_ROWS on Intel; elsewhere 1 where the CPU lacks AVX-512 and torch runs one thread, else 0.
    Asked at each call (torch.set_num_threads may change in between; the ask costs ~0.15 µs)."""
    if ONE_ROW_MKL_ON_ONE_THREAD and torch.get_num_threads() == 1:
        return 1
    return MKL_ROWS


class PackedCopy(NamedTuple):
    """What `packed_weight` keeps for one weight, to tell whether it changed since it was packed.
    It keeps where the fingerprint lies, not a view: a view would hold the storage, its key in
    `_PACKED`, alive."""
    version: int  # the weight's version counter then: an in-place update bumps it
    packed: torch.Tensor | None  # oneDNN's blocked copy, or None: no room for one (`room_for`)
    at: tuple[int, int]  # where the fingerprint lies (`fingerprint_at`)
    fingerprint: torch.Tensor  # those elements then (a clone): a write around the version counter changes them


# A weight's storage (its memory) → {each weight of it (`_view`): its PackedCopy}. Keyed weakly, so a
# copy dies with the memory it was packed from, and on the storage rather than the weight: a weak
# reference to a Parameter stops torch.utils.swap_tensors, which `model.to(...)` and `load_state_dict`
# use to replace parameters under torch.__future__.set_swap_module_params_on_conversion (to become
# PyTorch's default). Storages compare by identity, as a dictionary's keys must here. One storage may
# hold several weights (slices of one buffer, a matrix and its transpose): each has its copy.
_PACKED: weakref.WeakKeyDictionary[torch.UntypedStorage, dict[tuple, PackedCopy]] = weakref.WeakKeyDictionary()


def _view(w: torch.Tensor) -> tuple:
    """Which weight of its storage `w` is: where it starts (the address also moves with a storage
    moved in place, `share_memory_()`), its dtype, shape and strides."""
    return w.data_ptr(), w.dtype, w.shape, w.stride()


def fingerprint_at(w: torch.Tensor) -> tuple[int, int]:
    """Where `fingerprint` reads `w` (out, in): (n, stride) of n = min(64, rows, columns) elements on
    a diagonal across it, element i at row i·(rows // n) and column i·(columns // n). Each lies in a
    row and a column of its own, spread over the weight: a write that changes all of it changes
    them. A write to fewer than rows // n consecutive rows may miss every element read: rows // n is
    36 in 124M's c_attn, so each head's 64 rows hold one at least; in gpt2-xl it is 75, so a head's
    rows may hold none. The rows past n·(rows // n) hold none."""
    n = min(64, *w.shape)
    return n, w.size(0) // n * w.stride(0) + w.size(1) // n * w.stride(1)


def fingerprint(w: torch.Tensor, at: tuple[int, int]) -> torch.Tensor:
    """The elements of `w` at `at` (`fingerprint_at`): a view, one as_strided op."""
    n, stride = at
    return w.as_strided((n,), (stride,))


def packed_weight(w: torch.Tensor) -> torch.Tensor | None:
    """`w` in oneDNN's blocked layout, packed once and re-packed only if it changed: new storage,
    new dtype, an in-place update (its version counter), or a write around the counter that changed
    its `fingerprint` (the comment before the check says which writes it misses).
    `w` itself for a weight made under torch.inference_mode: it has no version counter to watch,
    so no copy is kept, and oneDNN packs it per call, as torch would.
    None for an empty weight, one in shared or file-mapped storage, or when the machine has no room
    for the copy (`room_for`): the caller then takes F.linear. A refusal for room is kept like a
    copy: the weight is not asked about again until it changes or `forget_packed()`."""
    if w.numel() == 0:  # (Linear(C, 0)): nothing to pack, and oneDNN refuses to
        return None
    if w.is_inference():  # no version counter: a copy could not know it is stale
        return w
    storage = w.untyped_storage()
    # In shared memory (`model.share_memory()`, torch.multiprocessing), other processes write the
    # weight in place (Hogwild training, a trainer serving its weights), and a write bumps only the
    # writer's version counter: this process would go on reading its stale copy. So no copy at all.
    # The flag is broader than that: a file-mapped storage (`torch.from_file`, even shared=False)
    # says it too, and runs on F.linear as well, slower: oneDNN's packed path is what this module is
    # for. The check is a flag read on the storage this function fetched anyway (`w.is_shared()`
    # would fetch it again).
    if storage.is_shared():
        # A copy packed before `share_memory()` (which moves the storage in place, so its key here
        # stays) would never be read again, yet live as long as the weight: dropped.
        _PACKED.pop(storage, None)
        return None
    # A new storage starts without a copy, even at a freed one's address (`model.to(torch.bfloat16).float()`
    # swaps `.data`, which keeps the version). The version counter is shared by a storage's views: a
    # write into one weight of it has the others packed again too, once.
    views = _PACKED.setdefault(storage, {})
    hit = views.get(view := _view(w))
    # The version counter misses writes that go around it: `w.data` is a new tensor over the same
    # memory with a counter of its own (autograd's escape hatch: `w.detach()` shares w's counter, and
    # so is seen), and NumPy's `w.numpy()[...] = ...` writes memory PyTorch never hears of. PEFT's
    # merge_and_unload adds its delta through `.data`, and torch.optim.swa_utils or an EMA may too.
    # A fingerprint of the weight's elements, compared at each call, catches the writes that change
    # the whole weight, but not surely one that changes part of it (a block of rows, as head pruning
    # writes; a token's row; an entry: `fingerprint_at`): call `forget_packed()` after such a write,
    # or inference keeps reading the old values. It costs ~2-5 µs a call: 124M's 49 decode-step
    # products took 1.00-1.06x as long with it, within the noise of the busy 2-core Xeon that measured
    # it. A NaN in the fingerprint never equals itself: such a weight is packed at each call, slower,
    # never stale.
    if hit is None or hit.version != w._version or not torch.equal(fingerprint(w, hit.at), hit.fingerprint):
        at = fingerprint_at(w)
        packed = torch.ops.mkldnn._reorder_linear_weight(w.detach()) if room_for(w.nbytes) else None
        hit = views[view] = PackedCopy(w._version, packed, at, fingerprint(w, at).clone())
    return hit.packed


def room_for(nbytes: int) -> bool:
    """Whether a packed copy of `nbytes` leaves the machine at least an eighth of its memory (and
    1 GiB) free. The copies double what the weights hold (gpt2-xl in fp32: 6 GB more), and a
    laptop that swaps or kills the process is worse off than one running F.linear: the weights
    that do not fit run there, with a warning, once. Where the system does not say what is
    available (`memory`), the copies are made."""
    if (known := memory()) is None:
        return True
    available, total = known
    if available - nbytes >= max(total // 8, 2**30):
        return True
    if not _PACKED_OUT_OF_ROOM:
        _PACKED_OUT_OF_ROOM.append(True)
        warnings.warn(f"only {available / 2**30:.1f} GiB of memory free: weights that do not fit a second, packed copy "
                      "run on F.linear (slower); a smaller --dtype (bfloat16) makes room, MINIGPT_ONEDNN=0 packs none")
    return False


_PACKED_OUT_OF_ROOM: list[bool] = []  # whether room_for has warned (once per process)


def memory() -> tuple[int, int] | None:
    """(bytes available, bytes in all) of the machine's memory, from Linux's /proc/meminfo
    (MemAvailable counts the page cache the kernel would give back); None elsewhere."""
    try:
        with open("/proc/meminfo") as f:
            kib = {line.split(":")[0]: int(line.split()[1]) for line in f if line.split()[-1:] == ["kB"]}
        return kib["MemAvailable"] * 1024, kib["MemTotal"] * 1024
    except (OSError, KeyError, ValueError, IndexError):
        return None


def forget_packed() -> None:
    """Drop every packed copy, so the next call packs the weights as they are now."""
    _PACKED.clear()


def _forget_stepped(optimizer: torch.optim.Optimizer, args, kwargs) -> None:
    """After any optimizer's step, drop the packed copies of the weights it updated. Fused
    optimizers (AdamW(fused=True), minigpt's on CPU) write the new values in place without
    bumping the version counter, so `packed_weight` would serve the old ones. Training through
    Linear.forward drops the copy anyway, but a weight trained outside it keeps one: the tied LM
    head under the chunked loss (minigpt/chunked_loss.py), which evaluation would otherwise read stale.
    This runs after every step of every optimizer in the process: with nothing packed (training
    alone) it returns at once."""
    if not _PACKED:
        return
    for group in optimizer.param_groups:
        for p in group["params"]:
            _PACKED.pop(p.untyped_storage(), None)


register_optimizer_step_post_hook(_forget_stepped)


# oneDNN builds a kernel for each shape it meets (a JIT-compiled primitive, ~0.25 MB whatever the
# weight's size) and keeps it in two caches of 1024 entries each: its own and that of ideep, the C++
# layer PyTorch calls it through (ONEDNN_PRIMITIVE_CACHE_CAPACITY, LRU_CACHE_CAPACITY, read once per
# process). Decode meets one shape per batch size, but prefill one per batch × prompt length: a batch
# job over prompts of every length 1..253, batch 16, met 253 row counts × 5 weight shapes = 1,265
# for a 4.3M-parameter model, so both caches filled, every call then missed and compiled again, and
# malloc's heap, fragmented by the kernels freed between large activations, grew without bound (RSS
# 0.5 → 3.5 GB over two passes; flat with F.linear). So rows past EXACT_ROWS are padded up to one of
# 8 sizes per doubling (33 → 36, 100 → 104, 1000 → 1024): 120 shapes per weight up to 65,536 rows,
# and at most 1/8 more work. The padding rows are zeros whose outputs are dropped: each output row
# depends on its own input row only.
EXACT_ROWS = 32  # up to here every row count keeps its own kernel: decode at batch 1 to 32, no padding


def padded_rows(rows: int) -> int:
    """The row count oneDNN is called with for `rows` rows: `rows` itself up to EXACT_ROWS, past it
    the next multiple of an eighth of the power of two at or below it (e.g. 65..72 → 72)."""
    if rows <= EXACT_ROWS:
        return rows
    step = 1 << (rows.bit_length() - 4)  # rows in [2^k, 2^(k+1)): step 2^(k-3), 8 sizes per doubling
    return -(-rows // step) * step


def with_padded_rows(product: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """product(x), a row-wise product (..., in) → (..., out), called with x's rows padded to `padded_rows`."""
    rows, width = math.prod(x.shape[:-1]), x.size(-1)
    padding = padded_rows(rows) - rows
    if padding == 0:
        return product(x)
    y = product(F.pad(x.reshape(rows, width), (0, 0, 0, padding)))  # (padded rows, out): zero rows at the end
    return y[:rows].view(*x.shape[:-1], y.size(-1))  # the first rows: a contiguous view


def onednn_product(x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x W^T + b by oneDNN on the packed weight, with the rows padded to `padded_rows` (shape (..., out))."""
    return with_padded_rows(lambda rows: torch.ops.mkldnn._linear_pointwise(rows, packed, bias, "none", [], ""), x)


def pads_float16(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether an eager inference call in float16 on the CPU has its rows padded before F.linear.
    PyTorch runs CPU fp16 products by oneDNN itself, with a kernel kept per row count as above (fp32
    F.linear, on MKL, keeps none): over 1,200 row counts one weight's calls took RSS 221 → 1150 MB,
    so its rows get the same 8 sizes per doubling. Not what something watches (`watched`), which
    should see the call's own rows, nor a tensor subclass, nor a compiled call (the compiler
    chooses its own kernels), nor with MINIGPT_ONEDNN=0 (plain F.linear)."""
    return (ONEDNN and x.is_cpu and x.dtype == torch.float16 and weight.dtype == torch.float16
            and type(x) is torch.Tensor and not torch.compiler.is_compiling() and not watched(x, weight))


@torch.library.custom_op("minigpt::onednn_linear", mutates_args=())
def onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x W^T + b by oneDNN on the packed weight: a custom op, opaque to torch.compile, which would
    otherwise lower the call to F.linear (MKL) again. It runs at each call, so it asks `mkl_rows`
    there (the thread count, which a compiled graph cannot ask)."""
    if x.dtype == torch.float32 and x.numel() <= mkl_rows() * x.size(-1):
        return F.linear(x, weight, bias)
    packed = packed_weight(weight)
    if packed is None:  # no room for its copy
        return F.linear(x, weight, bias)
    return onednn_product(x, packed, bias)


@onednn_linear.register_fake
def _(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return x.new_empty(*x.shape[:-1], weight.size(0))  # what the compiler needs: the output's shape


def takes_onednn(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether an inference call (grad off) goes to oneDNN rather than F.linear."""
    if not (ONEDNN and x.is_cpu and x.dtype == weight.dtype):
        return False
    # A tensor subclass (fake quantization, weight noise, a quantized weight) overrides F.linear
    # through __torch_function__, or wraps what its methods do: the oneDNN op would multiply its
    # raw data and silently skip what it adds.
    if type(x) is not torch.Tensor or (type(weight) is not nn.Parameter and type(weight) is not torch.Tensor):
        return False
    # Under CPU autocast F.linear computes in the autocast dtype (bf16); the oneDNN call would
    # bypass autocast and run in the weights' fp32, so `train --dtype bfloat16`'s evaluation, or
    # any no_grad forward under autocast, would silently not be bf16: leave those to F.linear.
    if torch.is_autocast_enabled("cpu"):
        return False
    if x.dtype == torch.bfloat16:
        return ONEDNN_BF16
    if x.dtype != torch.float32:
        return False
    # A few rows go to MKL (`mkl_rows`). The compiler cannot trace the thread count (and the helper
    # that would hold it constant, torch.compiler.assume_constant_result, imports the compiler, ~1.5 s
    # of every model load), so a compiled call asks only MKL_ROWS here, and the custom op the rest.
    rows = MKL_ROWS if torch.compiler.is_compiling() else mkl_rows()
    return x.numel() > rows * x.size(-1)


def watched(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether something that also runs with grad off watches this call through F.linear, and so
    must see F.linear itself: the oneDNN op computes the same numbers, but it has no forward-mode
    derivative, no batching rule and no FLOP count, and it is not F.linear. Checked cheapest
    first: ~1.3 µs in all (a 2-core AMD EPYC), so ~0.06 ms of a 124M decode step's ~25 (49 calls)."""
    return (
        # Forward-mode AD (fwAD.dual_level, torch.func.jvp / jacfwd) does not need grad on, and the
        # oneDNN op has no tangent formula: the tangent would come out None, or 0. (forward_ad has no
        # public query for its level.)
        fwAD._current_level >= 0
        # F.linear replaced by a function of one's own (a spy in a test, a tool's instrumentation):
        # it is ATen's own until someone assigns it.
        or F.linear is not torch._C._nn.linear
        # A TorchFunctionMode (this also says yes for a subclass argument, which takes_onednn has
        # already sent to F.linear).
        or has_torch_function((x, weight))
        # torch.func's transforms (vmap, jvp, grad) wrap the tensors they trace: vmap has no batching
        # rule for the oneDNN op (it would loop over the batch, one call per row).
        or torch._C._are_functorch_transforms_active()
        # A TorchDispatchMode: FlopCounterMode, which has no FLOP formula for the oneDNN op (it would
        # count 0), a debugging or tracing mode, which would record an op other than the model's.
        or torch._C._len_torch_dispatch_stack() > 0
        # torch.jit.trace (run under no_grad to trace for inference) must record F.linear: its tracer
        # cannot record the oneDNN op, and a packed weight would enter the trace as a constant, never
        # to follow the weight again.
        or torch.jit.is_tracing()
    )


class Linear(nn.Linear):
    """y = x W^T + b with W stored (out, in), exactly nn.Linear's parameters and state dict.

    torch.ao.quantization.quantize_dynamic quantizes none of these layers: it matches modules by exact
    type, and refuses a subclass even when named in its set. Make them plain nn.Linear first (this
    Linear adds no state): `for m in model.modules(): if type(m) is Linear: m.__class__ = nn.Linear`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():  # grad on (training, or a call outside no_grad): autograd needs F.linear
            # Free the inference copy; not under torch.func, whose wrapped weight has no storage
            # (the real one's copy stays until a plain training call), nor while torch.compile traces:
            # asked first, so the compiler never reads the global _PACKED, whose size it would guard
            # on, compiling the training step again each time an evaluation had filled or emptied it.
            if not torch.compiler.is_compiling() and _PACKED and not torch._C._are_functorch_transforms_active():
                _PACKED.pop(self.weight.untyped_storage(), None)
            return F.linear(x, self.weight, self.bias)
        if takes_onednn(x, self.weight):
            if torch.compiler.is_compiling():
                return onednn_linear(x, self.weight, self.bias)
            # Eager, unless something watches F.linear: the oneDNN product called directly, without
            # the custom op's wrapper (~10 µs a call), which only the compiler needs to see.
            if not watched(x, self.weight) and (packed := packed_weight(self.weight)) is not None:
                return onednn_product(x, packed, self.bias)
        elif pads_float16(x, self.weight):
            return with_padded_rows(lambda rows: F.linear(rows, self.weight, self.bias), x)
        return F.linear(x, self.weight, self.bias)
