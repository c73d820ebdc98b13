"""Fused sampling for small batches: each row split over S programs, in five short launches.

Where it sits: `minigpt.kernels.sampling.fused_sample` calls `split_sample` when the batch is too
small to fill the GPU with one program per row. search.py explains the algorithm (thresholds
found by a bracket search on the logit axis, a short list of candidates) and draw.py the inverse-CDF
draw; this file spreads the passes that read the whole row over many programs.

## Why split a row

One program runs on one SM (streaming multiprocessor: a GPU's cores come in these). With about as
many rows as SMs (an H100 has 132), one program per row fills the GPU, but at batch 1 one SM makes
every pass over 50257 logits while the rest idles, and the torch pipeline, whose sort spreads over
the whole GPU, keeps up with it. Here each row is cut into S slices of L = ⌈V / S⌉ logits
(default_splits keeps L ≥ MIN_SLICE: 1571 at batch 1, where S = 32; it splits only into S ≥
MIN_SPLITS slices, so at batch 1–8 on a 132-SM GPU, and only in a CUDA graph), one program per
slice:

1. `_stats_kernel` (B, S): each slice's max, first argmax, smallest finite logit, NaN/+inf count.
2. `_hist_kernel` (B, S), launched twice: the first passes of the threshold search (search.py),
   spread over the slices. Level 0: with the row's max known, each slice's count(l ≥ p_j) and
   mass(l ≥ p_j) at N_HIST = 16 pivots p_j spaced evenly from the underflow floor to the max;
   also each slice's mass that min-p keeps (a second look at the slice, with min-p on). Level 1:
   every program adds up level 0's histograms, picks the bracket holding the top-k threshold (or
   the top-p one), and measures 16 pivots inside it. Two levels of 16 leave a bracket 1/256 of
   the range, comparing each logit with 32 pivots; one level would need 256 for that.
3. `_copy_kernel` (B, S): every program reads off the plan from both levels (`_plan`): the
   bracket, and whether its candidates fit the scratch list. Each program then copies its
   slice's candidates to the list, at an offset that the histograms also give: the slices before
   it own the slots before it.
4. `_finish_kernel` (B,): one program per row reads off the same plan, ends both searches on the
   list, in registers (phase 2 of search.py's `find_threshold`), and draws. When the kept set
   reaches above the listed bracket (top-p over a flat row keeps thousands of tokens), the draw
   picks the list or a slice by their masses (the histograms hold each slice's mass above the
   bracket), then a token inside the slice. Rows with nothing to search (temperature alone, or
   with min-p) list nothing: the draw picks a slice by its kept mass, then a token inside it.

The launches after the histograms must agree on the plan exactly: a bracket one pivot off would
read list slots nobody wrote. Sums of floats depend on their order, and `tl.sum`'s order follows
the thread layout, so the launch's number of warps. So a slice's histogram masses are stored as
integers (units of 2^-32 of the max's weight, MASS_SCALE): integer sums are the same in any
order, and each launch adds the S slices up as one tile. (The mass min-p keeps per slice stays
fp32: only the finish launch reads it.) The pivots are not stored: every launch recomputes
them from the same stats with the same code (`_row`, `pivots_in`, `_narrow_level`).

Each launch reads one slice, or the row's 2·S·N_HIST histogram values, so a row costs a few short
launches however long it is. A row whose candidates do not fit the list (a huge top_k, a tie
group thousands strong) is no special case: the finish program goes on with the threshold search
from the narrowed bracket, streaming the row, and draws as one program per row does (from the
bracket it lists and the lanes' masses above it, or else from the whole row). That is slower,
with the same answer.

Same semantics and checks as the one-program path. The draw uses the same uniform (Philox at
seed; row, offset) but adds up the kept weights in another order, so a seed can draw another
token here than it does at a batch size that runs one program per row.
"""
from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from minigpt.kernels.draw import draw_listed, draw_row, first_past, kept_weight, list_weights, min_p_cutoff, row_uniform
from minigpt.kernels.search import (LOG2E, MIN_TEMPERATURE, UNDERFLOW_LOG2, above_max, bad_params, copy_between,
                                    find_threshold, lanes_between, max_scan, pick, pivots_in, round_to_input,
                                    stream_count_mass)

N_HIST = tl.constexpr(16)  # pivots per histogram level; two levels leave 1/256 of the row's range
HIST_BLOCK = 256  # logits per step of a histogram pass: (256, 16) compares stay in registers
# Histogram masses are stored as integers, in units of 2^-32 of the max's weight: then the S slices'
# masses add up to the same sum in every kernel that reads them, whatever order tl.sum takes.
MASS_SCALE = tl.constexpr(4294967296.0)
MIN_SLICE = 1024  # logits per slice at least: shorter slices would cost more in launches than they save
MAX_SPLITS = 64  # the plan reads 2·S·N_HIST histogram values in every program that needs it
# Split only into this many slices or more. On an H200 (BENCHMARKS.md), with a one-level 128-pivot
# histogram, the split path's time grew with the slice's length (about 42, 60, 95 and 166 µs at
# S = 32, 16, 8 and 4), while one program per row took 37 µs with every filter on and 68–84 µs for
# top-p alone: S = 32 (batch 1) won for top-p and lost by 5 µs with every filter on; S = 16
# (batch 5–8) won by 24 µs for top-p and lost by 22 with every filter on; S ≤ 8 lost to both. The
# histogram (18 of 39 µs at S = 32; at S = 16 its slices are twice as long) now compares each
# logit with 2 × 16 pivots instead of 128, which is why batch 5–8 splits now: not yet timed on a
# GPU (gpu_check.sh's splits step times each S).
MIN_SPLITS = 16


@triton.jit
def _row(row, V, temperature_ptr, top_k_ptr, top_p_ptr, min_p_ptr, stats_f, stats_i,
         S: tl.constexpr, GRID: tl.constexpr):
    """A row's parameters and, from its S slices' stats, its max, first argmax, whether it is bad,
    c2 = log2(e) / T and the underflow floor: what every launch after the first starts from.
    stats_f (B, S, 2) fp32: slice max, smallest finite logit; stats_i (B, S, 2) int32: slice
    argmax (an index into the row), NaN/+inf count."""
    T = tl.load(temperature_ptr + row)
    k = tl.load(top_k_ptr + row)
    top_p = tl.load(top_p_ptr + row)
    min_p = tl.load(min_p_ptr + row)
    at = (row * S + tl.arange(0, S)) * 2
    slice_max, slice_min = tl.load(stats_f + at), tl.load(stats_f + at + 1)
    slice_arg, slice_bad = tl.load(stats_i + at), tl.load(stats_i + at + 1)
    m = tl.max(slice_max, axis=0)
    token = tl.min(tl.where(slice_max == m, slice_arg, V), axis=0)  # the first slice's first max
    bad = bad_params(T, k, top_p, min_p) | (tl.sum(slice_bad, axis=0) > 0) | (m == float("-inf"))
    c2 = LOG2E / tl.maximum(tl.where(bad, 1.0, T), MIN_TEMPERATURE)  # (bad rows: no division by inf)
    floor = round_to_input(tl.maximum(m - UNDERFLOW_LOG2 / c2, tl.min(slice_min, axis=0)), GRID)
    return T, k, top_p, min_p, m, token, bad, c2, floor


@triton.jit
def _slice_column(hist, row, col, S: tl.constexpr):
    """Column col of the row's S slices' histograms: (S,). A slice holds 2·N_HIST values, level 0's
    pivots then level 1's; col = 2·N_HIST stands for "above the max", where every slice holds 0."""
    slices = tl.arange(0, S)
    at = (row.to(tl.int64) * S + slices) * (2 * N_HIST) + col  # (int64: B·S·N_HIST can pass 2^31)
    return tl.load(hist + at, mask=slices * 0 + col < 2 * N_HIST, other=0)


@triton.jit
def _level_sums(hist_cnt, hist_mass, row, level, S: tl.constexpr):
    """The row's count(l ≥ p_j) and mass(l ≥ p_j) at one level's N_HIST pivots: its S slices'
    histograms added up, as one (S, N_HIST) tile."""
    at = (row.to(tl.int64) * S + tl.arange(0, S)[:, None]) * (2 * N_HIST) + level * N_HIST + tl.arange(0, N_HIST)[None, :]
    C = tl.sum(tl.load(hist_cnt + at), axis=0)
    M = tl.sum(tl.load(hist_mass + at), axis=0).to(tl.float32) / MASS_SCALE
    return C, M


@triton.jit
def _narrow_level(C, M, lo, hi, c_hi, m_hi, topk, goal, GRID: tl.constexpr):
    """A level's bracket: its pivots are evenly spaced in [lo, hi) (pivots_in); the new bracket runs
    from the last still reaching the goal (index j) to the next one, or to hi. Returns it as
    lo, hi, count(l ≥ lo), count and mass(l ≥ hi), and j."""
    pivots = pivots_in(lo, hi, N_HIST, GRID)
    score = tl.where(topk, C.to(tl.float32), M)  # both fall as the pivot rises
    j = tl.maximum(tl.sum((score >= goal).to(tl.int32), axis=0) - 1, 0)
    inside = j + 1 < N_HIST  # the next pivot, not hi, tops the new bracket
    hi = tl.where(inside, pick(pivots, j + 1, N_HIST), hi)
    c_hi = tl.where(inside, pick(C, j + 1, N_HIST), c_hi)
    m_hi = tl.where(inside, pick(M, j + 1, N_HIST), m_hi)
    return pick(pivots, j, N_HIST), hi, pick(C, j, N_HIST), c_hi, m_hi, j


@triton.jit
def _first_level(hist_cnt, hist_mass, row, k, V, top_p, m, floor, S: tl.constexpr, GRID: tl.constexpr):
    """What level 0 (pivots from the floor to above the max) says: whether a search is needed at
    all, whether top-k searches (top-k on, and fewer than the tokens above the floor), the goal
    (k, or top_p · the mass above the floor), and the bracket that level 1 cuts again."""
    C, M = _level_sums(hist_cnt, hist_mass, row, 0, S)
    topk = (k > 0) & (k < V) & (pick(C, 0, N_HIST) > k)
    goal = tl.where(topk, k.to(tl.float32), top_p * pick(M, 0, N_HIST))
    lo, hi, _c_lo, c_hi, m_hi, j0 = _narrow_level(C, M, floor, above_max(m, GRID), k * 0, 0.0, topk, goal, GRID)
    return topk | (top_p < 1), topk, goal, lo, hi, c_hi, m_hi, j0


@triton.jit
def _top_column(j0, j1):
    """The histograms' column (_slice_column) at the top of the plan's bracket: level 1's next
    pivot, or, when the bracket reaches level 1's top, level 0's (or above the max)."""
    return tl.where(j1 + 1 < N_HIST, N_HIST + j1 + 1, tl.where(j0 + 1 < N_HIST, j0 + 1, 2 * N_HIST))


@triton.jit
def _plan(hist_cnt, hist_mass, row, k, V, top_p, m, floor, S: tl.constexpr, CAP: tl.constexpr, GRID: tl.constexpr):
    """What the row's histograms say, the same in every program that reads them:
    listed  1: list every logit ≥ lo (all candidates of both searches fit); 2: list [lo, hi) (top-p's
            bracket; what lies above is counted in c_hi, m_hi); 0: too many, search by streaming
    topk    whether a top-k search is needed (top-k off, or k ≥ the tokens above the floor: it is not)
    lo, hi, c_hi, m_hi   the first search's bracket, cut by both levels, and count and mass(l ≥ hi)
    goal    top-p's goal when top-k is off: top_p · the mass above the floor (0 when top-k runs
            first: top-p then measures its goal from the top-k threshold)
    c_lo    count(l ≥ lo), so how many entries the list holds: c_lo (listed 1) or c_lo - c_hi (2)
    columns the histograms' columns (_slice_column) at lo and at hi"""
    search, topk, goal, lo, hi, c_hi, m_hi, j0 = _first_level(hist_cnt, hist_mass, row, k, V, top_p, m, floor,
                                                              S, GRID)
    C, M = _level_sums(hist_cnt, hist_mass, row, 1, S)  # (all 0 with no search)
    lo, hi, c_lo, c_hi, m_hi, j1 = _narrow_level(C, M, lo, hi, c_hi, m_hi, topk, goal, GRID)
    listed = tl.where(search & (c_lo <= CAP), 1, tl.where(search & ~topk & (c_lo - c_hi <= CAP), 2, 0))
    return listed, topk, lo, hi, c_lo, c_hi, m_hi, tl.where(topk, 0.0, goal), N_HIST + j1, _top_column(j0, j1)


@triton.jit
def _stats_kernel(logits_ptr, stride_row, V, L, stats_f, stats_i, S: tl.constexpr, BLOCK: tl.constexpr):
    row, s = tl.program_id(0), tl.program_id(1)
    start = s * L
    m, arg, smallest, n_bad = max_scan(logits_ptr + row.to(tl.int64) * stride_row + start,
                                       tl.minimum(V - start, L), BLOCK, 1)
    at = (row * S + s) * 2
    tl.store(stats_f + at, m)
    tl.store(stats_f + at + 1, smallest)
    tl.store(stats_i + at, arg + start)
    tl.store(stats_i + at + 1, n_bad)


@triton.jit
def _hist_kernel(logits_ptr, stride_row, V, L, temperature_ptr, top_k_ptr, top_p_ptr, min_p_ptr, stats_f, stats_i,
                 hist_cnt, hist_mass, keep_mass, LEVEL: tl.constexpr, S: tl.constexpr, BLOCK: tl.constexpr):
    """Program (row, s): its slice's count(l ≥ p_j) and mass(l ≥ p_j) at N_HIST pivots p_j, spaced
    evenly from the floor to above the max (LEVEL 0), or inside the bracket level 0 picked (LEVEL 1)."""
    row, s = tl.program_id(0), tl.program_id(1)
    GRID: tl.constexpr = logits_ptr.dtype.element_ty
    T, k, top_p, min_p, m, _token, bad, c2, floor = _row(row, V, temperature_ptr, top_k_ptr, top_p_ptr, min_p_ptr,
                                                         stats_f, stats_i, S, GRID)
    if (T > 0) & ~bad:
        lo, hi, search = floor, above_max(m, GRID), True
        if LEVEL == 1:
            search, _topk, _goal, lo, hi, _c_hi, _m_hi, _j0 = _first_level(hist_cnt, hist_mass, row, k, V, top_p,
                                                                           m, floor, S, GRID)
        start = s * L
        n = tl.minimum(V - start, L)
        src = logits_ptr + row.to(tl.int64) * stride_row + start
        cnt, mass = tl.zeros((N_HIST,), dtype=tl.int32), tl.zeros((N_HIST,), dtype=tl.float32)
        if search:  # (temperature or min-p alone need no level 1: it is written as 0s, which `_plan` reads and drops)
            lane_cnt, lane_mass = stream_count_mass(src, n, pivots_in(lo, hi, N_HIST, GRID), m, c2, BLOCK, 1,
                                                    N_HIST, True)
            cnt, mass = tl.sum(lane_cnt, axis=0), tl.sum(lane_mass, axis=0)
        at = (row.to(tl.int64) * S + s) * (2 * N_HIST) + LEVEL * N_HIST + tl.arange(0, N_HIST)
        tl.store(hist_cnt + at, cnt)
        tl.store(hist_mass + at, (mass * MASS_SCALE).to(tl.int64))
        if LEVEL == 0:
            # The slice's mass that min-p keeps: the draw's per-slice mass when min-p's threshold
            # lies above the listed bracket (or, with nothing to search, above the floor). Min-p
            # off, that is all the mass above the floor, which the histogram has: no second look.
            kept_mass = pick(mass, 0, N_HIST)
            if min_p > 0:
                log2_min_p = min_p_cutoff(min_p)
                kept = tl.zeros((BLOCK,), dtype=tl.float32)
                for i in range(0, n, BLOCK):
                    offs = i + tl.arange(0, BLOCK)
                    x = tl.load(src + offs, mask=offs < n, other=float("-inf")).to(tl.float32)
                    kept += kept_weight(x, floor, log2_min_p, m, c2)
                kept_mass = tl.sum(kept, axis=0)
            tl.store(keep_mass + row * S + s, kept_mass)


@triton.jit
def _copy_kernel(logits_ptr, stride_row, V, L, temperature_ptr, top_k_ptr, top_p_ptr, min_p_ptr, stats_f, stats_i,
                 hist_cnt, hist_mass, scratch_ptr, scratch_idx_ptr, S: tl.constexpr, CAP: tl.constexpr,
                 BLOCK: tl.constexpr):
    """Program (row, s) writes its slice's candidates to list slots [before, before + n_slice[s])
    of scratch (B, CAP) and scratch_idx (B, CAP): the slices of a row write disjoint slots."""
    row, s = tl.program_id(0), tl.program_id(1)
    GRID: tl.constexpr = logits_ptr.dtype.element_ty
    T, k, top_p, min_p, m, _token, bad, c2, floor = _row(row, V, temperature_ptr, top_k_ptr, top_p_ptr, min_p_ptr,
                                                         stats_f, stats_i, S, GRID)
    if (T > 0) & ~bad:
        listed, _topk, lo, hi, _c_lo, _c_hi, _m_hi, _goal, lo_column, top_column = _plan(
            hist_cnt, hist_mass, row, k, V, top_p, m, floor, S, CAP, GRID)
        if listed > 0:
            at_lo = _slice_column(hist_cnt, row, lo_column, S)  # (S,): each slice's count(l ≥ lo)
            n_slice = tl.where(listed == 1, at_lo, at_lo - _slice_column(hist_cnt, row, top_column, S))
            before = tl.sum(tl.where(tl.arange(0, S) < s, n_slice, 0), axis=0)  # slots of earlier slices
            start = s * L
            at = row.to(tl.int64) * CAP + before
            src = logits_ptr + row.to(tl.int64) * stride_row + start
            n, top = tl.minimum(V - start, L), tl.where(listed == 1, float("inf"), hi)
            hits, _mass = lanes_between(src, n, lo, top, m, c2, BLOCK, 1, False)
            copy_between(src, n, lo, top, hits, scratch_ptr + at, scratch_idx_ptr + at,
                         pick(n_slice, s, S), start, BLOCK, 1)  # never past its own slots


@triton.jit
def _finish_kernel(logits_ptr, stride_row, V, L, temperature_ptr, top_k_ptr, top_p_ptr, min_p_ptr, seed_ptr,
                   offset_ptr, stats_f, stats_i, hist_cnt, hist_mass, keep_mass, scratch_ptr, scratch_idx_ptr, out_ptr,
                   S: tl.constexpr, CAP: tl.constexpr, BLOCK: tl.constexpr, UNROLL: tl.constexpr,
                   MAX_CHUNKS: tl.constexpr, SLICE_CHUNKS: tl.constexpr):
    row = tl.program_id(0)
    src = logits_ptr + row.to(tl.int64) * stride_row
    scratch = scratch_ptr + row.to(tl.int64) * CAP
    scratch_idx = scratch_idx_ptr + row.to(tl.int64) * CAP
    GRID: tl.constexpr = logits_ptr.dtype.element_ty
    T, k, top_p, min_p, m, token, bad, c2, floor = _row(row, V, temperature_ptr, top_k_ptr, top_p_ptr, min_p_ptr,
                                                        stats_f, stats_i, S, GRID)
    if (T > 0) & ~bad:
        listed, topk, lo, hi, c_lo, c_hi, m_hi, goal, _lo_column, top_column = _plan(
            hist_cnt, hist_mass, row, k, V, top_p, m, floor, S, CAP, GRID)
        n_c = tl.where(listed == 1, c_lo, tl.where(listed == 2, c_lo - c_hi, 0))  # what the copy listed
        planned, list_hi = listed, hi  # what the copy listed, and its bracket's top (the searches move hi)
        t = floor
        # What a search that streams the row (planned == 0) lists: top-p's bracket up to `top`, and
        # each lane's mass above it.
        top, lanes = above_max(m, GRID), tl.zeros((BLOCK,), dtype=tl.float32)
        if topk:
            t, listed, n_c, top, lanes = find_threshold(
                src, V, scratch, scratch_idx, listed, n_c, lo, hi, c_hi, m_hi, k.to(tl.float32), k, top_p, m, c2,
                False, BLOCK, UNROLL, CAP, GRID)
            lo, hi, c_hi, m_hi = t, above_max(m, GRID), k * 0, m_hi * 0  # top-p goes on from the top-k threshold
        if top_p < 1:
            t, listed, n_c, top, lanes = find_threshold(
                src, V, scratch, scratch_idx, listed, n_c, lo, hi, c_hi, m_hi, goal, k * 0, top_p, m, c2,
                True, BLOCK, UNROLL, CAP, GRID)

        # The draw: one uniform, over the kept tokens in the list, then those above it (by slice).
        log2_min_p = min_p_cutoff(min_p)
        uniform = row_uniform(seed_ptr, offset_ptr, row)
        if (planned == 0) & (listed != 1) & (topk | (top_p < 1)):
            # The search streamed the row and did not list every kept token: from its listed bracket
            # and the lanes above it, as one program per row draws, unless min-p cuts above the
            # bracket or nothing was listed; then from the whole row.
            if (listed == 2) & ((top - m) * c2 >= log2_min_p):
                token = draw_listed(src, V, scratch, scratch_idx, n_c, t, log2_min_p, m, c2, top, lanes, uniform,
                                    CAP, BLOCK, MAX_CHUNKS)
            else:
                token = draw_row(src, V, t, log2_min_p, m, c2, uniform, BLOCK, UNROLL, MAX_CHUNKS)
        else:
            # Kept above the list (none when it holds them all): every token ≥ its top (or, with no
            # search, ≥ the floor) that min-p keeps. Per slice, that mass is a histogram column, or
            # min-p's kept mass when the min-p threshold lies higher still.
            wl = list_weights(scratch, n_c, t, log2_min_p, m, c2, CAP)
            list_mass = tl.sum(wl, axis=0)
            above_from = tl.where(planned == 2, list_hi, floor)
            at = tl.where(planned == 2, top_column, 0)
            column = _slice_column(hist_mass, row, at, S).to(tl.float32) / MASS_SCALE
            # Min-p drops a token at above_from (the test kept_weight applies, and it rises with
            # the logit): then it drops every listed token too, and the mass above is min-p's.
            by_min_p = (above_from - m) * c2 < log2_min_p
            above = tl.where(by_min_p, tl.load(keep_mass + row * S + tl.arange(0, S)), column)  # (S,)
            above = tl.where(listed == 1, 0.0, above)
            goal_u = uniform * (list_mass + tl.sum(above, axis=0))
            # Nothing kept above the list: the list, even when uniform · list_mass rounds up to
            # list_mass (first_past over the all-zero slices would divide by a zero mass).
            if (goal_u < list_mass) | (tl.sum(above, axis=0) == 0):
                at, _left = first_past(wl, goal_u, CAP)
                token = tl.load(scratch_idx + at)
            else:
                s, left = first_past(above, goal_u - list_mass, S)
                # A token of slice s, by the same test its mass was summed with (min-p's kept
                # mass, or a histogram column: l ≥ the pivot), at the fraction of it left.
                t_walk = tl.where(by_min_p, floor, above_from)
                log2_walk = tl.where(by_min_p, log2_min_p, float("-inf"))
                start = s * L
                token = start + draw_row(src + start, tl.minimum(V - start, L), t_walk, log2_walk, m, c2,
                                         left / pick(above, s, S), BLOCK, UNROLL, SLICE_CHUNKS)
    tl.store(out_ptr + row, tl.where(bad, -1, token).to(tl.int64))


def default_splits(B: int, V: int, device: torch.device) -> int:
    """Programs per row for fused_sample(splits=None): `graph_splits` inside a compiled step or a
    CUDA graph, else 1. Called eagerly, each launch costs tens of µs of Python (Triton's launcher),
    and the split path's five launches cost more than one program per row (BENCHMARKS.md: 180 µs
    against 64 at batch 1 on an H200)."""
    if device.type != "cuda":
        return 1
    graphed = torch.compiler.is_compiling() or torch.cuda.is_current_stream_capturing()
    return graph_splits(B, V, device) if graphed else 1


@functools.lru_cache(maxsize=64)  # called every decode step: ask the driver once per shape
def graph_splits(B: int, V: int, device: torch.device) -> int:
    """Programs per row in a CUDA graph: enough to fill the GPU's SMs at the smallest batches, 1
    above them."""
    if B == 0:  # (an empty batch has no rows to split)
        return 1
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    s = min(sms // B, V // MIN_SLICE, MAX_SPLITS)
    # A power of 2 (a tl.arange length), and at least MIN_SPLITS: fewer, longer slices lost.
    return 1 << (s.bit_length() - 1) if s >= MIN_SPLITS else 1


def split_sample(logits: torch.Tensor, p: dict[str, torch.Tensor], splits: int, block: int, unroll: int,
                 num_warps: int) -> torch.Tensor:
    """The five launches for logits (B, V) with `splits` programs per row; fused_sample checks the
    inputs and calls this. block, unroll and num_warps are those of the finishing program."""
    B, V = logits.shape
    S, L, cap, dev = splits, triton.cdiv(V, splits), 2 * block, logits.device
    stats_f = torch.empty((B, S, 2), dtype=torch.float32, device=dev)  # slice max, smallest finite logit
    stats_i = torch.empty((B, S, 2), dtype=torch.int32, device=dev)  # slice argmax, NaN/+inf count
    # Per row, slice and level (0, 1): count(l ≥ p_j), and mass(l ≥ p_j) in units of 2^-32.
    hist_cnt = torch.empty((B, S, 2, N_HIST.value), dtype=torch.int32, device=dev)
    hist_mass = torch.empty((B, S, 2, N_HIST.value), dtype=torch.int64, device=dev)
    keep_mass = torch.empty((B, S), dtype=torch.float32, device=dev)  # per slice: the mass min-p keeps
    scratch = torch.empty((B, cap), dtype=logits.dtype, device=dev)
    scratch_idx = torch.empty((B, cap), dtype=torch.int32, device=dev)
    out = torch.empty(B, dtype=torch.int64, device=dev)
    rows = (logits, logits.stride(0), V, L, p["temperature"], p["top_k"], p["top_p"], p["min_p"])
    slice_block = min(1024, triton.next_power_of_2(L))
    _stats_kernel[(B, S)](logits, logits.stride(0), V, L, stats_f, stats_i, S=S, BLOCK=slice_block)
    for level in (0, 1):
        _hist_kernel[(B, S)](*rows, stats_f, stats_i, hist_cnt, hist_mass, keep_mass, LEVEL=level, S=S,
                             BLOCK=HIST_BLOCK, num_warps=8)
    _copy_kernel[(B, S)](*rows, stats_f, stats_i, hist_cnt, hist_mass, scratch, scratch_idx, S=S, CAP=cap,
                         BLOCK=slice_block, num_warps=8)
    _finish_kernel[(B,)](*rows, p["seed"], p["offset"], stats_f, stats_i, hist_cnt, hist_mass, keep_mass, scratch,
                         scratch_idx, out, S=S, CAP=cap, BLOCK=block, UNROLL=unroll,
                         MAX_CHUNKS=triton.next_power_of_2(triton.cdiv(V, block)),
                         SLICE_CHUNKS=triton.next_power_of_2(triton.cdiv(L, block)),
                         num_warps=num_warps)
    return out
