"""Fused sampling: temperature → top-k → top-p → min-p → draw, in one Triton kernel launch.

Where it sits: `... → GPT → logits → penalties → [this kernel] → next token → KV-cache decode loop`.
minigpt/sampling.py is the reference (a handful of torch ops: sort, softmax, cumsum, scatter, draw);
this file computes the same thing with one program per row, no sort and no host sync, so a decode
step on the GPU costs one small launch instead of a dozen, and can be captured in a CUDA graph.
At small batches one program per row leaves most of the GPU idle; there `fused_sample` splits
each row over several programs instead (minigpt/kernels/sampling_split.py: the same algorithm in
four short launches).

## The idea: every filter keeps an upper set of the row

Top-k keeps the logits ≥ the k-th largest; top-p keeps the most likely tokens until their mass
reaches top_p; min-p keeps the tokens with p ≥ min_p · p_max. Each keeps *every token above some
threshold*, so the whole pipeline reduces to finding thresholds on the logit axis — which needs
counts and sums over the row, never its order:

    t_k = the largest v with   count(l ≥ v)  ≥ k              (top-k; ties with the k-th all kept)
    t_p = the largest v ≥ t_k with mass(l ≥ v) ≥ top_p · mass(l ≥ t_k)     (top-p, after top-k)
    keep l ≥ max(t_k, t_p)  and  exp((l - max) / T) ≥ min_p             (min-p needs no search)

mass(l ≥ v) = Σ exp((l - max) / T) over those tokens: softmax's numerator, without normalising.

## Threshold search: bisection on the logit value

count(l ≥ v) and mass(l ≥ v) only fall as v rises, so a threshold is found like a root: bracket
it in [lo, hi) and shrink the bracket. One pass evaluates several evenly spaced pivots at once (a
(BLOCK, N_PIVOTS) compare), cutting the bracket N_PIVOTS-fold. The search is exact:
- it stops as soon as the bracket holds one element (top-k: count(l ≥ lo) == k), and then
  {l ≥ lo} is exactly the kept set;
- pivots are rounded to the logits' own dtype, so with ties (common in bf16) the bracket shrinks
  to one representable value and stops there, keeping the whole tie group.

Only the first passes read the whole vocabulary (one program, one SM, streams 50257 logits per
pass). As soon as the candidates fit a per-row scratch list of 2·BLOCK entries, they are copied
there once, and the list is loaded into registers, where every further pass is a few vector ops:
- when all logits ≥ lo fit (top_k = 50 takes one pass), the rest of both searches and the draw
  use the list alone;
- for top-p over a flat row (thousands of tokens kept), the bracket [lo, hi) alone is listed, and
  what lies above it enters as a known count and mass; the draw then reads the whole row again.
The copy is a stream compaction without atomics: count each lane's hits, one prefix sum gives each
lane its first slot, a second pass writes. Its order is fixed, so a seed always draws the same token.

The draw is inverse-CDF sampling with ONE uniform number per row from Philox (`tl.philox`, keyed
by the seed, counting on (row, offset)): cumulate the kept weights, pick the first token whose
running sum passes u · total. Any fixed order of the tokens gives a correct draw, so the full-row
case cumulates per-lane partial sums (lane j holds tokens j, j + BLOCK, ...), picks a lane, then
walks its few tokens. Seed and offset are read from device tensors: a CUDA graph replays the
kernel with new randomness when the caller bumps `offset` in place (by 1 per step).

## Why not FlashInfer's dual-pivot rejection sampling?

Rejection sampling draws from the row above a pivot, tests whether the sample survives the
filters, and raises the pivot when it does not; two pivots per round bound the rounds. It is fast
when filters are independent, but transformers' top-p is measured *after* top-k has renormalised
(`top_p · mass(l ≥ t_k)`), so the top-k threshold is needed anyway; it also consumes a variable
number of random numbers. The threshold search is deterministic in its passes, exact, and draws
with one uniform.

## What happens before and around the kernel

- Penalties (repetition, presence, frequency) are NOT fused: minigpt.sampling.penalize applies
  them with torch ops to the (B, V) counts the decode loop keeps on the device. They are
  elementwise over the row — one fused elementwise kernel under torch.compile — while fusing them
  here would add a (B, V) counts read to every one of the search's passes.
- Checks, and where they happen: shapes, dtypes, devices and strides are checked on the host on
  every call (free: tensor metadata only). Value ranges (temperature < 0 or inf, top_k < 0,
  top_p ∉ (0, 1], min_p ∉ [0, 1]) and bad logits (NaN, +inf, a row of -inf) are checked inside the
  kernel, which writes the impossible token -1 for such a row, so the hot path never syncs.
  `validate=True` (or minigpt.sampling.check_sampling_params, once before a decode loop) turns
  that into a ValueError naming the parameter, row and allowed range, at the cost of one sync.

## Ties and rounding: where the kept set can differ from transformers

- At a top-p boundary transformers keeps *some* tokens of a tie group (whichever its sort puts
  last); this kernel keeps the whole group. Top-k keeps all ties in both.
- Thresholds compare raw logits, whose order is exact; transformers compares logits / T, which
  can round two neighbouring logits together. The mass sums run in another order than torch's
  cumsum, so a token whose cumulative mass is within ~1e-6 of top_p can fall on either side.
- Tokens more than 126·ln2·T below the top logit have p < 2^-126 · p_max (fp32's smallest normal)
  and are never drawn, even when a filter would keep them.
- Temperatures in (0, 1e-6) are floored to 1e-6, as in minigpt.sampling.
- The search subtracts logits: a row whose finite logits span more than fp32's range (> 3.4e38
  apart, or a max within 1e-6 of it) overflows the bracket to inf, and its top-k/top-p set can
  come out too large. Models' logits stay within ±1e4; the torch path has no such limit.
"""
from __future__ import annotations

import numpy as np
import torch
import triton
import triton.language as tl

from minigpt import sampling

LOG2E = tl.constexpr(1.4426950408889634)  # exp(x) = exp2(x · log2 e); exp2 is the GPU's native instruction
MIN_TEMPERATURE = tl.constexpr(sampling.MIN_TEMPERATURE)  # the torch path's floor: below it, sampling is argmax anyway
UNDERFLOW_LOG2 = tl.constexpr(126.0)  # exp2(-126) is fp32's smallest normal: tokens further below never win
# A pass cuts the bracket ≥ 4-fold in value, not in representable floats: from fp32's widest span
# (< 2^129) to its finest spacing (2^-149) is 278 halvings, so 140 passes always end a search
# (at 48, neighbouring floats near 1e-38 under an 80-wide bracket stayed unseparated). Real rows
# stop after a handful.
MAX_PASSES = tl.constexpr(140)
DEFAULT_BLOCK = 1024  # elements per load; the scratch list holds 2 · BLOCK candidates
# Loads issued together per streaming step (one SM streams a whole row, so loads in flight hide
# memory latency). On an H100, 4, 8 and 16 were within ~10 % of each other: passes are compute-bound.
DEFAULT_UNROLL = 4
N_PIVOTS = tl.constexpr(4)  # pivots per pass over the whole row: each cuts the bracket 4-fold
N_PIVOTS_LIST = tl.constexpr(8)  # pivots per pass over the short list, which sits in registers: 8-fold


@triton.jit
def _round_to_input(x, GRID: tl.constexpr):
    # Round fp32 values to the logits' dtype (a no-op for fp32): pivots then lie on the grid of
    # values the logits can take, so a bracket around a tie group shrinks to it and stops.
    return x.to(GRID).to(tl.float32)


@triton.jit
def _pick(vec, j, N: tl.constexpr):
    # vec[j] as a scalar (Triton has no dynamic indexing of register tensors).
    return tl.sum(tl.where(tl.arange(0, N) == j, vec, 0), axis=0)


@triton.jit
def _pivots(lo, hi, N: tl.constexpr, GRID: tl.constexpr):
    """N pivots evenly spaced in [lo, hi), on the logits' grid; pivot 0 is lo itself: (N,)."""
    j = tl.arange(0, N)
    # An explicit fma: the split path's launches each compute these pivots and must agree to the
    # bit; `lo + (hi - lo) * f` would be fused into an fma, or not, as each kernel's compiler sees fit.
    return tl.where(j == 0, lo, _round_to_input(tl.fma(hi - lo, j.to(tl.float32) / N, lo), GRID))


@triton.jit
def _stream_count_mass(src, n, pivots, m, c2, BLOCK: tl.constexpr, UNROLL: tl.constexpr, N_PIV: tl.constexpr,
                       WITH_MASS: tl.constexpr):
    """count(l ≥ pivot) and mass(l ≥ pivot) for each pivot, over the n logits at src: (N_PIV,) each."""
    cols = tl.arange(0, BLOCK)
    cnt = tl.zeros((BLOCK, N_PIV), dtype=tl.int32)
    mass = tl.zeros((BLOCK, N_PIV), dtype=tl.float32)
    for start in range(0, n, BLOCK * UNROLL):
        for u in tl.static_range(UNROLL):  # unrolled: UNROLL loads are in flight at once
            offs = start + u * BLOCK + cols
            x = tl.load(src + offs, mask=offs < n, other=float("-inf")).to(tl.float32)  # (BLOCK,)
            above = x[:, None] >= pivots[None, :]  # (BLOCK, N_PIV)
            cnt += above.to(tl.int32)  # summed across threads once, after the loop: no sync per step
            if WITH_MASS:
                w = tl.exp2((x - m) * c2)  # exp((l - max) / T): softmax's numerator
                mass += tl.where(above, w[:, None], 0.0)
    return tl.sum(cnt, axis=0), tl.sum(mass, axis=0)


@triton.jit
def _narrow(pivots, cnt, mass, lo, hi, c_hi, m_hi, goal, target, passes,
            IS_TOP_P: tl.constexpr, N: tl.constexpr, GRID: tl.constexpr):
    """Move the bracket [lo, hi) to the last pivot still reaching the goal; say if it is done."""
    score = mass if IS_TOP_P else cnt.to(tl.float32)  # both fall as the pivot rises
    last = tl.maximum(tl.sum((score >= goal).to(tl.int32), axis=0) - 1, 0)
    new_lo = _pick(pivots, last, N)
    c_lo = _pick(cnt, last, N)
    if last < N - 1:
        hi = _pick(pivots, last + 1, N)
        c_hi = _pick(cnt, last + 1, N)
        m_hi = _pick(mass, last + 1, N)
    lo = new_lo
    mid = _round_to_input(lo + (hi - lo) * 0.5, GRID)
    # Done when one element (or one tie group: nothing representable strictly inside) is left.
    searching = (c_lo - c_hi > 1) & (mid > lo) & (mid < hi) & (passes < MAX_PASSES)
    if not IS_TOP_P:
        # Exactly k left, or (first pass) fewer than k tokens can be drawn at all: keep them all.
        searching = searching & (c_lo > target)
    return lo, hi, c_lo, c_hi, m_hi, searching


@triton.jit
def _copy_between(src, V, lo, hi, dst, dst_idx, cap, base, BLOCK: tl.constexpr, UNROLL: tl.constexpr):
    """Stream compaction: copy every logit in [lo, hi) (≤ cap of them) and its token id (its index
    at src, plus `base`) to dst.

    Lane j of the block reads tokens j, j + BLOCK, j + 2·BLOCK, ... A first pass counts each
    lane's hits; one prefix sum turns the counts into each lane's first slot; a second pass writes.
    No step needs the whole block to agree (a per-step prefix sum would), and the order is fixed,
    so the same seed draws the same token. Returns how many were copied."""
    cols = tl.arange(0, BLOCK)
    hits = tl.zeros((BLOCK,), dtype=tl.int32)
    for start in range(0, V, BLOCK * UNROLL):
        for u in tl.static_range(UNROLL):
            offs = start + u * BLOCK + cols
            x = tl.load(src + offs, mask=offs < V, other=float("-inf")).to(tl.float32)
            hits += (x >= lo) & (x < hi)
    slot = tl.cumsum(hits, axis=0) - hits  # (BLOCK,): where each lane's next hit goes
    for start in range(0, V, BLOCK * UNROLL):
        for u in tl.static_range(UNROLL):
            offs = start + u * BLOCK + cols
            x = tl.load(src + offs, mask=offs < V, other=float("-inf"))
            keep = (x.to(tl.float32) >= lo) & (x.to(tl.float32) < hi)
            tl.store(dst + slot, x, mask=keep & (slot < cap))
            tl.store(dst_idx + slot, offs + base, mask=keep & (slot < cap))
            slot += keep
    tl.debug_barrier()  # the copies, written by every thread, must be visible before anyone reads
    return tl.minimum(tl.sum(hits, axis=0), cap)


@triton.jit
def _search(src, V, scratch, scratch_idx, listed, n_c, lo, hi, c_hi, m_hi, goal, target, top_p, m, c2,
            IS_TOP_P: tl.constexpr, BLOCK: tl.constexpr, UNROLL: tl.constexpr, CAP: tl.constexpr,
            GRID: tl.constexpr):
    """Bisect [lo, hi) for the largest v with count(l ≥ v) ≥ target (top-k), or with
    mass(l ≥ v) ≥ goal (top-p; goal 0: top_p · mass(l ≥ lo), which the first pass measures).
    c_hi, m_hi are count and mass(l ≥ hi); goal is k itself (as fp32) for top-k, target is k for
    top-k and 0 for top-p. Returns (threshold, listed, n_c), where listed is 1 when every logit ≥
    the threshold is in the scratch list, 2 when only the bracket is, 0 when the list was never
    filled (the draw then streams the row), and n_c is how many entries the list holds."""
    passes = target * 0  # a tensor from the start, as loops carry it
    searching = passes == 0
    # Phase 1: stream the whole row, until the candidates fit the scratch list.
    while searching & (listed == 0):
        pivots = _pivots(lo, hi, N_PIVOTS, GRID)
        cnt, mass = _stream_count_mass(src, V, pivots, m, c2, BLOCK, UNROLL, N_PIVOTS, IS_TOP_P)
        if IS_TOP_P:
            if goal == 0:
                goal = top_p * _pick(mass, 0, N_PIVOTS)  # top_p of the mass left after top-k
        lo, hi, c_lo, c_hi, m_hi, searching = _narrow(pivots, cnt, mass, lo, hi, c_hi, m_hi, goal, target,
                                                      passes, IS_TOP_P, N_PIVOTS, GRID)
        if searching & (c_lo <= CAP):  # all candidates fit: later passes and the draw use the list
            n_c = _copy_between(src, V, lo, float("inf"), scratch, scratch_idx, CAP, 0, BLOCK, UNROLL)
            listed = listed * 0 + 1
        if IS_TOP_P:
            if searching & (c_lo > CAP) & (c_lo - c_hi <= CAP):  # the bracket alone fits: list it,
                n_c = _copy_between(src, V, lo, hi, scratch, scratch_idx, CAP, 0, BLOCK, UNROLL)
                listed = listed * 0 + 2  # and count what lies above it as a base
        passes += 1
    # Phase 2: the list, loaded once into registers; what lies above it is counted in c_base, m_base.
    c_base = tl.where(listed == 2, c_hi, 0)
    m_base = tl.where(listed == 2, m_hi, 0.0)
    xs = tl.load(scratch + tl.arange(0, CAP), mask=tl.arange(0, CAP) < n_c, other=float("-inf")).to(tl.float32)
    w = tl.exp2((xs - m) * c2)
    while searching:
        pivots = _pivots(lo, hi, N_PIVOTS_LIST, GRID)
        above = xs[:, None] >= pivots[None, :]  # (CAP, N_PIVOTS_LIST)
        cnt = tl.sum(above.to(tl.int32), axis=0) + c_base
        mass = tl.sum(tl.where(above, w[:, None], 0.0), axis=0) + m_base
        if IS_TOP_P:
            if goal == 0:
                goal = top_p * _pick(mass, 0, N_PIVOTS_LIST)
        lo, hi, c_lo, c_hi, m_hi, searching = _narrow(pivots, cnt, mass, lo, hi, c_hi, m_hi, goal, target,
                                                      passes, IS_TOP_P, N_PIVOTS_LIST, GRID)
        passes += 1
    return lo, listed, n_c


@triton.jit
def _first_past(w, goal, N: tl.constexpr):
    """Inverse CDF over weights w (N,) ≥ 0: the first index of positive weight whose running sum
    passes goal, and the goal left (≥ 0) once the weights before it are spent. A goal at or past
    the total (by rounding) gets the last positive weight. Only positive weights are candidates:
    with exact sums "the first index past goal" always has one, but rounding can leave a goal
    just below 0 (then index 0 would pass it, weight or not), and tl.cumsum on a GPU adds in a
    tree, whose running sums can dip by an ulp."""
    idx = tl.arange(0, N)
    cum = tl.cumsum(w, axis=0)
    last = tl.max(tl.where(w > 0, idx, 0), axis=0)
    i = tl.min(tl.where((cum > goal) & (w > 0), idx, last), axis=0)
    return i, tl.maximum(goal - _pick(cum - w, i, N), 0.0)


@triton.jit
def _bad_params(T, k, top_p, min_p):
    # Written as "not in range" so that NaN parameters fail too.
    return ~((T >= 0) & (T < float("inf"))) | (k < 0) | ~((top_p > 0) & (top_p <= 1)) | ~((min_p >= 0) & (min_p <= 1))


@triton.jit
def _max_scan(src, n, BLOCK: tl.constexpr, UNROLL: tl.constexpr):
    """Pass 1 over the n logits at src: the max, the first index holding it (for greedy rows), the
    smallest finite logit and the number of NaN/+inf logits."""
    cols = tl.arange(0, BLOCK)
    run_max = tl.full((BLOCK,), float("-inf"), tl.float32)
    run_arg = tl.full((BLOCK,), 0, tl.int32)
    run_min = tl.full((BLOCK,), float("inf"), tl.float32)
    n_bad = tl.zeros((BLOCK,), dtype=tl.int32)
    for start in range(0, n, BLOCK * UNROLL):
        for u in tl.static_range(UNROLL):
            offs = start + u * BLOCK + cols
            x = tl.load(src + offs, mask=offs < n, other=float("-inf")).to(tl.float32)
            better = x > run_max  # strict, so each lane keeps its first occurrence
            run_arg = tl.where(better, offs, run_arg)
            run_max = tl.where(better, x, run_max)
            run_min = tl.minimum(run_min, tl.where(x > float("-inf"), x, float("inf")))
            n_bad += ~(x < float("inf")) & (offs < n)  # NaN or +inf
    m = tl.max(run_max, axis=0)
    arg = tl.min(tl.where(run_max == m, run_arg, n), axis=0)  # torch.argmax's first occurrence
    return m, arg, tl.min(run_min, axis=0), tl.sum(n_bad, axis=0)


@triton.jit
def _above(m):
    return m + tl.maximum(tl.abs(m) * 1e-6, 1e-30)  # strictly above the max: count(l ≥ it) = 0


@triton.jit
def _uniform(seed_ptr, offset_ptr, row):
    """The row's one uniform number in [0, 1): Philox at (seed; row, offset)."""
    seed = tl.load(seed_ptr)
    offset = tl.load(offset_ptr)
    bits, _b1, _b2, _b3 = tl.philox(seed, row.to(tl.uint32), (offset & 0xFFFFFFFF).to(tl.uint32),
                                    (offset >> 32).to(tl.uint32), 0)
    return tl.uint_to_uniform_float(bits)


@triton.jit
def _log2_min_p(min_p):
    # min-p keeps (l - m) · c2 ≥ log2(min_p), i.e. p ≥ min_p · p_max; -inf (keep all) when off.
    return tl.where(min_p > 0, tl.log2(tl.maximum(min_p, 1e-30)), float("-inf"))


@triton.jit
def _kept_weight(x, t, log2_min_p, m, c2):
    """A logit's weight in the draw, exp((l - m) / T), if it is kept: l ≥ t (the top-k/top-p
    threshold) and p ≥ min_p · p_max; else 0. x: fp32 logits of any shape."""
    z = (x - m) * c2
    return tl.where((x >= t) & (z >= log2_min_p), tl.exp2(z), 0.0)


@triton.jit
def _list_weights(scratch, n_c, t, log2_min_p, m, c2, CAP: tl.constexpr):
    """The kept weights of the scratch list's entries (CAP,)."""
    i = tl.arange(0, CAP)
    x = tl.load(scratch + i, mask=i < n_c, other=float("-inf")).to(tl.float32)
    return _kept_weight(x, t, log2_min_p, m, c2)


@triton.jit
def _draw_row(src, V, t, log2_min_p, m, c2, uniform, BLOCK: tl.constexpr, UNROLL: tl.constexpr,
              MAX_CHUNKS: tl.constexpr):
    """Draw from the V logits at src (the kept tokens are not all listed): the one whose kept
    weight (l ≥ t and p ≥ min_p · p_max) crosses `uniform` · their total. Over "lanes" (lane j:
    tokens j, j + BLOCK, ...): one pass sums each lane's kept mass, u picks a lane, then a walk
    of its tokens. Returns the token's index at src."""
    cols = tl.arange(0, BLOCK)
    lane_mass = tl.zeros((BLOCK,), dtype=tl.float32)
    for start in range(0, V, BLOCK * UNROLL):
        for u in tl.static_range(UNROLL):
            offs = start + u * BLOCK + cols
            x = tl.load(src + offs, mask=offs < V, other=float("-inf")).to(tl.float32)
            lane_mass += _kept_weight(x, t, log2_min_p, m, c2)
    lane, goal = _first_past(lane_mass, uniform * tl.sum(lane_mass, axis=0), BLOCK)
    offs = lane + tl.arange(0, MAX_CHUNKS) * BLOCK
    x = tl.load(src + offs, mask=offs < V, other=float("-inf")).to(tl.float32)
    pos, _left = _first_past(_kept_weight(x, t, log2_min_p, m, c2), goal, MAX_CHUNKS)
    return lane + pos * BLOCK


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
    m, token, row_min, n_bad = _max_scan(src, V, BLOCK, UNROLL)  # pass 1
    bad = _bad_params(T, k, top_p, min_p) | (n_bad > 0) | (m == float("-inf"))

    if (T > 0) & ~bad:
        c2 = LOG2E / tl.maximum(T, MIN_TEMPERATURE)  # exp((l - m) / T) = exp2((l - m) · c2)
        # t, the threshold, starts at the underflow floor (below it a token's weight underflows
        # fp32) or the smallest logit if higher, not at -inf; each search only raises it.
        t = _round_to_input(tl.maximum(m - UNDERFLOW_LOG2 / c2, row_min), GRID)
        listed = k * 0  # 1: the candidates sit in the scratch list (2: only the top-p bracket does)
        n_c = k * 0
        zero = (k * 0).to(tl.float32)
        if (k > 0) & (k < V):
            t, listed, n_c = _search(src, V, scratch, scratch_idx, listed, n_c, t, _above(m), k * 0, zero,
                                     k.to(tl.float32), k, top_p, m, c2, False, BLOCK, UNROLL, CAP, GRID)
        if top_p < 1:
            t, listed, n_c = _search(src, V, scratch, scratch_idx, listed, n_c, t, _above(m), k * 0, zero,
                                     zero, k * 0, top_p, m, c2, True, BLOCK, UNROLL, CAP, GRID)
        log2_min_p = _log2_min_p(min_p)

        # The draw: inverse CDF with one uniform u per row from Philox at (seed; row, offset).
        uniform = _uniform(seed_ptr, offset_ptr, row)
        if listed == 1:  # every kept token is in the list
            wl = _list_weights(scratch, n_c, t, log2_min_p, m, c2, CAP)
            at, _left = _first_past(wl, uniform * tl.sum(wl, axis=0), CAP)
            token = tl.load(scratch_idx + at)
        else:
            token = _draw_row(src, V, t, log2_min_p, m, c2, uniform, BLOCK, UNROLL, MAX_CHUNKS)
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
    if logits.stride(1) != 1:
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
    checks = [("temperature", lambda v: (v >= 0) & (v < float("inf")), "[0, inf) (0 means greedy)"),
              ("top_k", lambda v: v >= 0, "[0, inf) (0 means off)"),
              ("top_p", lambda v: (v > 0) & (v <= 1), "(0, 1] (1 means off)"),
              ("min_p", lambda v: (v >= 0) & (v <= 1), "[0, 1] (0 means off)")]
    for name, ok, allowed in checks:
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
    """Filter and draw one token per row: logits (B, V) → tokens (B,) int64, in one launch (four
    when rows are split).

    temperature (B,) f32 (0 = argmax), top_k (B,) int32 (0 = off), top_p (B,) f32 (1 = off),
    min_p (B,) f32 (0 = off), seed (1,) int64, offset (1,) int64: the draw for row r uses Philox
    at (seed; r, offset), so bump `offset` by 1 each step. A row with an out-of-range parameter or
    NaN/+inf logits gets token -1; `validate=True` raises ValueError instead (one host sync).
    `splits` is the number of programs per row (a power of 2): None picks enough to fill a GPU's
    SMs at small batches (minigpt/kernels/sampling_split.py) and 1 once one program per row does.
    block_size, unroll and num_warps are tuning knobs (block_size: a power of 2; the scratch list
    holds 2 · block_size candidates per row).
    """
    from minigpt.kernels.sampling_split import MAX_SPLITS, default_splits, split_sample  # it builds on this file

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
