"""Fused sampling: temperature → top-k → top-p → min-p → draw, in one Triton kernel launch.

Where it sits: `... → GPT → logits → penalties → [this kernel] → next token → KV-cache decode loop`.
minigpt/sampling.py is the reference (a handful of torch ops: topk or sort, softmax, cumsum,
masked_fill, the exponential race);
this file computes the same thing with one program per row, no sort and no host sync, so a decode
step on the GPU costs one small launch instead of a dozen, and can be captured in a CUDA graph.
At batch 1–8 one program per row leaves most of the GPU idle; there, inside a CUDA graph (where
launches cost almost nothing), `fused_sample` splits each row over several programs instead
(minigpt/kernels/sampling_split.py: the same algorithm in five short launches).

The algorithm lives in two files of @triton.jit helpers, which sampling_split.py shares:
- minigpt/kernels/search.py: every filter keeps the logits above a threshold, so the kernel finds
  the top-k and top-p thresholds by a bracket search on the logit value (counts and masses above a
  few pivots per pass, placed by interpolation, then a short list of candidates in registers),
  never a sort;
- minigpt/kernels/draw.py: the draw, inverse-CDF sampling with one Philox uniform per row.
This file is the kernel that runs them in order (max scan → top-k search → top-p search → draw)
with one program per row, and its host side: the checks, the launch, `validate=True`.

## Why not FlashInfer's dual-pivot rejection sampling?

Rejection sampling draws from the row above a pivot, tests whether the sample survives the
filters, and raises the pivot when it does not; two pivots per round bound the rounds. It is fast
when filters are independent, but transformers' top-p is measured *after* top-k has renormalised
(`top_p · mass(l ≥ t_k)` in search.py's notation), so the top-k threshold is needed anyway; it
also consumes a variable number of random numbers. The threshold search is deterministic in its
passes, exact, and draws with one uniform.

## What happens before and around the kernel

- Penalties (repetition, presence, frequency) are NOT fused: minigpt.penalties.penalize applies
  them with torch ops to the (B, V) counts the decode loop keeps on the device, before this
  kernel. They are elementwise over the row, so torch.compile makes them one small fused kernel
  (`generate(..., compile=True)` runs them so: penalties.compiled_penalize; eagerly they are a
  dozen small ones), while fusing them here would add a (B, V) counts read to every one of the
  search's passes.
- Checks, and where they happen: shapes, dtypes, devices and strides are checked on the host on
  every call (free: tensor metadata only). Value ranges (temperature < 0 or inf, top_k < 0,
  top_p ∉ (0, 1], min_p ∉ [0, 1]) and bad logits (NaN, +inf, a row of -inf) are checked inside the
  kernel, which writes the impossible token -1 for such a row, so the hot path never syncs.
  `validate=True` turns a -1 into a ValueError naming the first such row and why (the parameter,
  its value and allowed range, or the bad logits), at the cost of one sync per call.
  minigpt.sampling.check_sampling_params checks the parameters alone, without the kernel: called
  once before a decode loop, it pays its host syncs (for tensor parameters) once, not per step;
  its ValueError names the parameter and its allowed range, not a row.

## Ties and rounding: where the kept set can differ from transformers

- At a top-p boundary transformers keeps *some* tokens of a tie group (whichever its sort puts
  last); this kernel keeps the whole group, as minigpt.sampling's apply_top_p does. Top-k keeps
  all ties in all three.
- Thresholds compare raw logits, whose order is exact; transformers compares logits / T, which
  can round two neighbouring logits together. The mass sums run in another order than torch's
  cumsum, so a token whose cumulative mass is within ~1e-6 of top_p can fall on either side.
- Tokens more than 126·ln2·T below the top logit have p < 2^-126 · p_max (fp32's smallest normal)
  and are never drawn, even when a filter would keep them.
- The draw compares fp32 running sums with u · total, u one fp32 uniform per row: each token's
  chance is resolved to about 2^-24 of the mass summed before it. A long tail of tokens each far
  below that is drawn as often as a whole as it should be, but not each token in its own share
  (the torch path's race gives every token its own uniform: float64 on a CPU, and on a GPU the
  one torch's `exponential_` draws for a float32 tensor).
- Any positive temperature weighs tokens by exp((l - m) / T) to fp32's rounding, however small
  (1e-7 included): l - m ≤ 0 never overflows. Only below fp32's smallest normal, 1.2e-38, is T
  taken as 1.2e-38, as in minigpt.sampling, so that c2 = log2(e) / T stays finite. min_p values
  in (0, 1e-30) act as 1e-30 (its log2 is taken), which only drops tokens of p < 1e-30 · p_max.
  The parameters are float32: `sample` brings larger or smaller positive values into its range
  first (minigpt.sampling's `triton_params`); called directly, the kernel refuses inf.
- The search subtracts logits: a row whose finite logits span more than fp32's range (> 3.4e38
  apart), or whose max is its dtype's largest finite value (fp16's 65504: a model that overflowed),
  overflows the bracket to inf, and its top-k/top-p set can come out too large. Models' logits
  stay within ±1e4. Dividing by the temperature overflows neither path: where |m / T| is large,
  the torch path too divides l - m, not l (minigpt.sampling's apply_temperature).
"""
from __future__ import annotations

import numpy as np
import torch
import triton
import triton.language as tl

from minigpt import sampling
from minigpt.kernels.draw import draw_listed, draw_row, min_p_cutoff, row_uniform
from minigpt.kernels.sampling_split import MAX_SPLITS, default_splits, split_sample
from minigpt.kernels.search import (LOG2E, MIN_TEMPERATURE, UNDERFLOW_LOG2, above_max, bad_params, find_threshold,
                                    max_scan, round_to_input)

DEFAULT_BLOCK = 1024  # elements per load; the scratch list holds 2 · BLOCK candidates
# Loads issued together per streaming step (one SM streams a whole row, so loads in flight hide
# memory latency). On an H100, 4, 8 and 16 were within ~10 % of each other: passes are compute-bound.
DEFAULT_UNROLL = 4


@triton.jit
def _fused_sample_kernel(
    logits_ptr, stride_row, V, temperature_ptr, top_k_ptr, top_p_ptr, min_p_ptr, seed_ptr, offset_ptr,
    out_ptr, scratch_ptr, scratch_idx_ptr,
    BLOCK: tl.constexpr, UNROLL: tl.constexpr, CAP: tl.constexpr, MAX_CHUNKS: tl.constexpr,
):
    """One program per row, grid (B,). logits (B, V) fp32/bf16/fp16, row r at logits_ptr + r · stride_row,
    contiguous along V; temperature, top_p, min_p (B,) fp32; top_k (B,) int32; seed, offset (1,)
    int64; out (B,) int64. scratch (B, CAP) in the logits' dtype and scratch_idx (B, CAP) int32
    are the rows' short lists (logit, token id), CAP = 2 · BLOCK. MAX_CHUNKS: tokens per lane in
    the full-row draw (⌈V / BLOCK⌉), rounded up to a power of 2 for tl.arange."""
    row = tl.program_id(0)
    src = logits_ptr + row.to(tl.int64) * stride_row
    scratch = scratch_ptr + row.to(tl.int64) * CAP
    scratch_idx = scratch_idx_ptr + row.to(tl.int64) * CAP
    GRID: tl.constexpr = logits_ptr.dtype.element_ty

    T = tl.load(temperature_ptr + row)
    k = tl.load(top_k_ptr + row)
    top_p = tl.load(top_p_ptr + row)
    min_p = tl.load(min_p_ptr + row)
    m, token, row_min, n_bad = max_scan(src, V, BLOCK, UNROLL)  # pass 1
    bad = bad_params(T, k, top_p, min_p) | (n_bad > 0) | (m == float("-inf"))

    if (T > 0) & ~bad:
        c2 = LOG2E / tl.maximum(T, MIN_TEMPERATURE)  # exp((l - m) / T) = exp2((l - m) · c2)
        # t, the threshold, starts at the underflow floor (below it a token's weight underflows
        # fp32) or the smallest logit if higher, not at -inf; each search only raises it.
        t = round_to_input(tl.maximum(m - UNDERFLOW_LOG2 / c2, row_min), GRID)
        listed = k * 0  # 1: the candidates sit in the scratch list (2: only the top-p bracket does)
        n_c = k * 0
        zero = (k * 0).to(tl.float32)
        top = above_max(m, GRID)  # every search's bracket starts as [t, top)
        list_top = top  # the listed bracket's top, and each lane's mass above it (top-p)
        lane_above = tl.zeros((BLOCK,), dtype=tl.float32)
        if (k > 0) & (k < V):
            t, listed, n_c, list_top, lane_above = find_threshold(
                src, V, scratch, scratch_idx, listed, n_c, t, top, k * 0, zero, k.to(tl.float32), k, top_p,
                m, c2, False, BLOCK, UNROLL, CAP, GRID)
        if top_p < 1:
            t, listed, n_c, list_top, lane_above = find_threshold(
                src, V, scratch, scratch_idx, listed, n_c, t, top, k * 0, zero, zero, k * 0, top_p,
                m, c2, True, BLOCK, UNROLL, CAP, GRID)
        log2_min_p = min_p_cutoff(min_p)

        # The draw: inverse CDF with one uniform u per row from Philox at (seed; row, offset). From
        # the list (and the lanes above it) when the search listed the kept tokens, unless min-p
        # cuts above the listed bracket (then the lanes' masses hold tokens min-p drops).
        uniform = row_uniform(seed_ptr, offset_ptr, row)
        if (listed == 1) | ((listed == 2) & ((list_top - m) * c2 >= log2_min_p)):
            token = draw_listed(src, V, scratch, scratch_idx, n_c, t, log2_min_p, m, c2, list_top, lane_above,
                                uniform, CAP, BLOCK, MAX_CHUNKS)
        else:
            token = draw_row(src, V, t, log2_min_p, m, c2, uniform, BLOCK, UNROLL, MAX_CHUNKS)
    tl.store(out_ptr + row, tl.where(bad, -1, token).to(tl.int64))


def _block_size(V: int, block_size: int | None) -> int:
    if block_size is None:  # half of V's next power of 2: then for V ≤ 2048 the list holds the whole row
        return max(16, min(DEFAULT_BLOCK, triton.next_power_of_2(V) // 2))
    if block_size < 16 or block_size & (block_size - 1):
        raise ValueError(f"block_size must be a power of 2 ≥ 16, got {block_size}")
    return block_size


def _check_inputs(logits: torch.Tensor, params: dict[str, torch.Tensor]) -> None:
    # Metadata only (no host sync): what a launch needs to read the right memory.
    if logits.dim() != 2:
        raise ValueError(f"logits must be (B, V), got shape {tuple(logits.shape)}")
    if logits.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise TypeError(f"logits must be float32, bfloat16 or float16, got {logits.dtype}")
    # One column's stride is never used (torch calls such a view contiguous, and will not copy it).
    if logits.size(1) > 1 and logits.stride(1) != 1:
        raise ValueError("logits must be contiguous along the vocabulary (stride(1) == 1)")
    B = logits.size(0)
    expected = {"temperature": ((B,), torch.float32), "top_k": ((B,), torch.int32), "top_p": ((B,), torch.float32),
                "min_p": ((B,), torch.float32), "seed": ((1,), torch.int64), "offset": ((1,), torch.int64)}
    for name, (shape, dtype) in expected.items():
        t = params[name]
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != shape or t.dtype != dtype:
            got = f"{tuple(t.shape)} {t.dtype}" if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"{name} must be a {dtype} tensor of shape {shape}, got {got}")
        if t.device != logits.device:
            raise ValueError(f"{name} is on {t.device} but logits are on {logits.device}")
        if not t.is_contiguous():
            raise ValueError(f"{name} must be contiguous")
    interpreted = not isinstance(_fused_sample_kernel, triton.runtime.JITFunction)
    if logits.device.type != "cuda" and not interpreted:
        raise ValueError(f"fused_sample runs on CUDA tensors, got {logits.device.type}; on CPU, set "
                         "TRITON_INTERPRET=1 before importing triton to run it in Triton's interpreter")
    if interpreted and isinstance(tl.random.philox, triton.runtime.JITFunction):
        # minigpt's kernels were made after TRITON_INTERPRET=1 was set, triton's own helpers
        # (Philox, cumsum) before: the interpreter cannot call them ("@triton.jit'd outside of a kernel").
        raise RuntimeError("TRITON_INTERPRET=1 was set after triton was imported: set it before (in the shell, or "
                           "before any import of triton, torch._inductor or minigpt.kernels)")
    if interpreted and _interpreter_breaks_on_numpy():
        raise RuntimeError(f"Triton {triton.__version__}'s CPU interpreter cannot run with NumPy {np.__version__} "
                           "(it turns 1-element arrays into scalars, which NumPy 2.4 forbids); "
                           "install triton>=3.7 or numpy<2.4")


def _interpreter_breaks_on_numpy() -> bool:
    """Triton ≤ 3.6's interpreter fails on any loop over a runtime bound once NumPy is ≥ 2.4."""
    def version(v: str) -> tuple[int, int]:
        major, minor = v.split(".")[:2]
        return int(major), int(minor)
    return version(triton.__version__) < (3, 7) and version(np.__version__) >= (2, 4)


def _explain_invalid(logits: torch.Tensor, p: dict[str, torch.Tensor], rows: torch.Tensor) -> str:
    """Why the kernel refused these rows (host side, only on the error path)."""
    r = int(rows[0])
    for name, (ok, allowed) in sampling.PARAM_RANGES.items():  # the torch path's ranges and words
        if name not in p:  # typical_p, epsilon_cutoff, eta_cutoff: filters the kernel does not run
            continue
        v = p[name][r]
        if not bool(ok(v)):
            return f"{name} must be in {allowed}, got {v.item()} in row {r}"
    x = logits[r].float()
    if x.isnan().any() or (x == float("inf")).any():
        return f"logits row {r} contains NaN or +inf"
    return f"logits row {r} is all -inf: no token can be drawn"


def fused_sample(
    logits: torch.Tensor,
    temperature: torch.Tensor,
    top_k: torch.Tensor,
    top_p: torch.Tensor,
    min_p: torch.Tensor,
    seed: torch.Tensor,
    offset: torch.Tensor,
    *,
    validate: bool = False,
    splits: int | None = None,
    block_size: int | None = None,
    unroll: int | None = None,
    num_warps: int | None = None,
) -> torch.Tensor:
    """Filter and draw one token per row: logits (B, V) → tokens (B,) int64, in one launch (five
    when rows are split).

    temperature (B,) f32 (0 = argmax), top_k (B,) int32 (0 = off), top_p (B,) f32 (1 = off),
    min_p (B,) f32 (0 = off), seed (1,) int64, offset (1,) int64: the draw for row r uses Philox
    at (seed; r, offset), so bump `offset` by 1 each step. A row with an out-of-range parameter,
    NaN/+inf logits or no finite logit at all gets token -1; `validate=True` raises ValueError instead (one host sync).
    `splits` is the number of programs per row (a power of 2): None picks, inside a compiled step
    or a CUDA graph, enough to fill a GPU's SMs at batch 1–8 (minigpt/kernels/sampling_split.py's
    default_splits, measured on an H200) and 1 above; called eagerly, 1.
    block_size, unroll and num_warps are tuning knobs (block_size: a power of 2; the scratch list
    holds 2 · block_size candidates per row).
    """
    params = dict(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p, seed=seed, offset=offset)
    _check_inputs(logits, params)
    B, V = logits.shape
    block = _block_size(V, block_size)
    unroll = unroll or min(DEFAULT_UNROLL, triton.cdiv(V, block))
    # Tuning defaults, not requirements: scripts/bench_sampling.py --variants times other choices.
    num_warps = num_warps or (16 if block >= 1024 else 4)
    splits = default_splits(B, V, logits.device) if splits is None else splits
    if splits < 1 or splits & (splits - 1) or splits > min(V, MAX_SPLITS):
        raise ValueError(f"splits must be a power of 2 in [1, min(V={V}, {MAX_SPLITS})], got {splits}")
    if splits > 1:
        out = split_sample(logits, params, splits, block, unroll, num_warps)
    else:
        out = torch.empty(B, dtype=torch.int64, device=logits.device)
        scratch = torch.empty((B, 2 * block), dtype=logits.dtype, device=logits.device)  # the short list's logits
        scratch_idx = torch.empty((B, 2 * block), dtype=torch.int32, device=logits.device)  # ... and token ids
        _fused_sample_kernel[(B,)](
            logits, logits.stride(0), V, temperature, top_k, top_p, min_p, seed, offset, out, scratch, scratch_idx,
            BLOCK=block, UNROLL=unroll, CAP=2 * block, MAX_CHUNKS=triton.next_power_of_2(triton.cdiv(V, block)),
            num_warps=num_warps,
        )
    if validate:
        rows = (out < 0).nonzero().flatten()
        if rows.numel():
            raise ValueError(_explain_invalid(logits, params, rows))
    return out
