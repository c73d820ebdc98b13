"""Fused sampling for small batches: each row split over S programs, in four short launches.

Where it sits: `minigpt.kernels.sampling.fused_sample` calls `split_sample` when the batch is too
small to fill the GPU with one program per row. search.py explains the algorithm (thresholds
found by bisection on the logit axis, a short list of candidates) and draw.py the inverse-CDF
draw; this file spreads the passes that read the whole row over many programs.

## Why split a row

One program runs on one SM. With about as many rows as SMs (an H100 has 132), one program per row
fills the GPU, but at batch 1 one SM makes every pass over 50257 logits while the rest idles,
and the torch pipeline, whose sort spreads over the whole GPU, keeps up with it. Here each row is
cut into S slices of L = ⌈V / S⌉ logits (default_splits keeps L ≥ MIN_SLICE: 1571 at batch 1,
where S = 32; it splits only into S ≥ MIN_SPLITS slices, so at batch 1–4 on a 132-SM GPU, and only
in a CUDA graph), one program per slice:

1. `_stats_kernel` (B, S): each slice's max, first argmax, smallest finite logit, NaN/+inf count.
2. `_hist_kernel` (B, S): with the row's max known, each slice's count(l ≥ p_j) and mass(l ≥ p_j)
   at N_HIST pivots p_j spaced evenly from the underflow floor to the max. It is the first pass
   of the threshold search (search.py), at 128 pivots instead of 4. Also each slice's mass that
   min-p keeps (a second look at the slice, with min-p on; off, it is the mass above the floor).
3. `_copy_kernel` (B, S): every program sums the row's S histograms and reads off the plan
   (`_plan`): the pivot bracket holding the top-k threshold (or the top-p one), and whether its
   candidates fit the scratch list. Each program then copies its slice's candidates to the list,
   at an offset that the histograms also give: the slices before it own the slots before it.
4. `_finish_kernel` (B,): one program per row reads off the same plan, ends both searches on the
   list, in registers (phase 2 of search.py's `find_threshold`), and draws. When the kept set
   reaches above the listed bracket (top-p over a flat row keeps thousands of tokens), the draw
   picks the list or a slice by their masses (the histograms hold each slice's mass above the
   bracket), then a token inside the slice. Rows with nothing to search (temperature alone, or
   with min-p) list nothing: the draw picks a slice by its kept mass, then a token inside it.

The copy and finish launches must agree on the plan exactly: a bracket one pivot off would read
list slots nobody wrote. So the histograms are added up slice by slice in a loop, a fixed order,
not by `tl.sum`, whose order follows the thread layout and so the launch's number of warps. The
pivots are not stored: the histogram, copy and finish launches each recompute them from the
same stats with the same code (`_row`, `pivots_in`).

Each launch reads one slice, or the S·N_HIST histogram values, so a row costs a few short
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

N_HIST = tl.constexpr(128)  # histogram pivots: the bracket they leave is 1/128 of the row's range
HIST_BLOCK = 64  # logits per step of the histogram pass: (64, 128) compares stay in registers
MIN_SLICE = 1024  # logits per slice at least: shorter slices would cost more in launches than they save
MAX_SPLITS = 64  # the plan reads S·N_HIST histogram values in every program that needs it
# Split only into this many slices or more. On an H200 (BENCHMARKS.md) the split path's time grew
# with the slice's length (about 42, 60, 95 and 166 µs at S = 32, 16, 8 and 4), while one program
# per row took 37 µs with every filter on and 68–84 µs for top-p alone: S = 32 (batch 1) won for
# top-p and lost by 5 µs with every filter on; S = 16 (batch 8) won by 24 µs for top-p and lost by
# 22 with every filter on; S ≤ 8 lost to both.
MIN_SPLITS = 32


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
def _slice_column(hist, row, j, S: tl.constexpr):
    """Pivot j's histogram value in each of the row's S slices: (S,); 0 for j = N_HIST (above the max)."""
    slices = tl.arange(0, S)
    return tl.load(hist + (row.to(tl.int64) * S + slices) * N_HIST + j, mask=slices * 0 + j < N_HIST, other=0)


@triton.jit
def _plan(hist_cnt, hist_mass, row, k, V, top_p, m, floor, S: tl.constexpr, CAP: tl.constexpr, GRID: tl.constexpr):
    """What the row's histograms say, the same in every program that reads them:
    listed  1: list every logit ≥ lo (all candidates of both searches fit); 2: list [lo, hi) (top-p's
            bracket; what lies above is counted in c_hi, m_hi); 0: too many, search by streaming
    topk    whether a top-k search is needed (top-k off, or k ≥ the tokens above the floor: it is not)
    lo, hi, c_hi, m_hi   the first search's bracket, and count and mass(l ≥ hi)
    goal    top-p's goal when top-k is off: top_p · the mass above the floor (0 when top-k runs
            first: top-p then measures its goal from the top-k threshold)
    j_lo    the pivot index of lo; n_slice (S,) each slice's entries in the list"""
    j = tl.arange(0, N_HIST)
    C = tl.zeros((N_HIST,), dtype=tl.int32)  # the row's count(l ≥ p_j) and mass(l ≥ p_j),
    M = tl.zeros((N_HIST,), dtype=tl.float32)  # added up slice by slice: a fixed order
    for s in range(S):
        C += tl.load(hist_cnt + (row.to(tl.int64) * S + s) * N_HIST + j)  # (int64: B·S·N_HIST can pass 2^31)
        M += tl.load(hist_mass + (row.to(tl.int64) * S + s) * N_HIST + j)
    pivots = pivots_in(floor, above_max(m, GRID), N_HIST, GRID)
    topk = (k > 0) & (k < V) & (pick(C, 0, N_HIST) > k)
    goal = tl.where(topk, k.to(tl.float32), top_p * pick(M, 0, N_HIST))
    # The last pivot still reaching the goal (both counts and masses fall as the pivot rises).
    score = tl.where(topk, C.to(tl.float32), M)
    j_lo = tl.maximum(tl.sum((score >= goal).to(tl.int32), axis=0) - 1, 0)
    lo = pick(pivots, j_lo, N_HIST)
    hi = tl.where(j_lo + 1 < N_HIST, pick(pivots, j_lo + 1, N_HIST), above_max(m, GRID))
    c_lo, c_hi, m_hi = pick(C, j_lo, N_HIST), pick(C, j_lo + 1, N_HIST), pick(M, j_lo + 1, N_HIST)
    search = topk | (top_p < 1)
    listed = tl.where(search & (c_lo <= CAP), 1, tl.where(search & ~topk & (c_lo - c_hi <= CAP), 2, 0))
    at_lo = _slice_column(hist_cnt, row, j_lo, S)  # (S,): count(l ≥ lo) per slice
    at_hi = _slice_column(hist_cnt, row, j_lo + 1, S)
    n_slice = tl.where(listed == 1, at_lo, tl.where(listed == 2, at_lo - at_hi, 0))
    return listed, topk, lo, hi, c_hi, m_hi, tl.where(topk, 0.0, goal), j_lo, n_slice


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
                 hist_cnt, hist_mass, keep_mass, S: tl.constexpr, BLOCK: tl.constexpr):
    row, s = tl.program_id(0), tl.program_id(1)
    GRID: tl.constexpr = logits_ptr.dtype.element_ty
    T, k, top_p, min_p, m, _token, bad, c2, floor = _row(row, V, temperature_ptr, top_k_ptr, top_p_ptr, min_p_ptr,
                                                         stats_f, stats_i, S, GRID)
    if (T > 0) & ~bad:
        start = s * L
        n = tl.minimum(V - start, L)
        src = logits_ptr + row.to(tl.int64) * stride_row + start
        pivots = pivots_in(floor, above_max(m, GRID), N_HIST, GRID)
        lane_cnt, lane_mass = stream_count_mass(src, n, pivots, m, c2, BLOCK, 1, N_HIST, True)
        cnt, mass = tl.sum(lane_cnt, axis=0), tl.sum(lane_mass, axis=0)
        at = (row.to(tl.int64) * S + s) * N_HIST + tl.arange(0, N_HIST)
        tl.store(hist_cnt + at, cnt)
        tl.store(hist_mass + at, mass)
        # The slice's mass that min-p keeps: the draw's per-slice mass when min-p's threshold lies
        # above the listed bracket (or, with nothing to search, above the floor). Min-p off, that
        # is all the mass above the floor, which the histogram has: no second pass over the slice.
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
        listed, _topk, lo, hi, _c_hi, _m_hi, _goal, _j_lo, n_slice = _plan(
            hist_cnt, hist_mass, row, k, V, top_p, m, floor, S, CAP, GRID)
        if listed > 0:
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
        listed, topk, lo, hi, c_hi, m_hi, goal, j_lo, n_slice = _plan(
            hist_cnt, hist_mass, row, k, V, top_p, m, floor, S, CAP, GRID)
        n_c = tl.sum(n_slice, axis=0)
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
            column = _slice_column(hist_mass, row, tl.where(planned == 2, j_lo + 1, 0), S)
            # Min-p drops a token at above_from (the test kept_weight applies, and it rises with
            # the logit): then it drops every listed token too, and the mass above is min-p's.
            by_min_p = (above_from - m) * c2 < log2_min_p
            above = tl.where(by_min_p, tl.load(keep_mass + row * S + tl.arange(0, S)), column)  # (S,)
            above = tl.where(listed == 1, 0.0, above)
            goal_u = uniform * (list_mass + tl.sum(above, axis=0))
            if goal_u < list_mass:
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
    and the split path's four launches cost more than one program per row (BENCHMARKS.md: 180 µs
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
    """The four launches for logits (B, V) with `splits` programs per row; fused_sample checks the
    inputs and calls this. block, unroll and num_warps are those of the finishing program."""
    B, V = logits.shape
    S, L, cap, dev = splits, triton.cdiv(V, splits), 2 * block, logits.device
    stats_f = torch.empty((B, S, 2), dtype=torch.float32, device=dev)  # slice max, smallest finite logit
    stats_i = torch.empty((B, S, 2), dtype=torch.int32, device=dev)  # slice argmax, NaN/+inf count
    hist_cnt = torch.empty((B, S, N_HIST.value), dtype=torch.int32, device=dev)  # count(l ≥ p_j) per slice
    hist_mass = torch.empty((B, S, N_HIST.value), dtype=torch.float32, device=dev)  # mass(l ≥ p_j) per slice
    keep_mass = torch.empty((B, S), dtype=torch.float32, device=dev)  # per slice: the mass min-p keeps
    scratch = torch.empty((B, cap), dtype=logits.dtype, device=dev)
    scratch_idx = torch.empty((B, cap), dtype=torch.int32, device=dev)
    out = torch.empty(B, dtype=torch.int64, device=dev)
    rows = (logits, logits.stride(0), V, L, p["temperature"], p["top_k"], p["top_p"], p["min_p"])
    slice_block = min(1024, triton.next_power_of_2(L))
    _stats_kernel[(B, S)](logits, logits.stride(0), V, L, stats_f, stats_i, S=S, BLOCK=slice_block)
    _hist_kernel[(B, S)](*rows, stats_f, stats_i, hist_cnt, hist_mass, keep_mass, S=S, BLOCK=HIST_BLOCK, num_warps=8)
    _copy_kernel[(B, S)](*rows, stats_f, stats_i, hist_cnt, hist_mass, scratch, scratch_idx, S=S, CAP=cap,
                         BLOCK=slice_block, num_warps=8)
    _finish_kernel[(B,)](*rows, p["seed"], p["offset"], stats_f, stats_i, hist_cnt, hist_mass, keep_mass, scratch,
                         scratch_idx, out, S=S, CAP=cap, BLOCK=block, UNROLL=unroll,
                         MAX_CHUNKS=triton.next_power_of_2(triton.cdiv(V, block)),
                         SLICE_CHUNKS=triton.next_power_of_2(triton.cdiv(L, block)),
                         num_warps=num_warps)
    return out
