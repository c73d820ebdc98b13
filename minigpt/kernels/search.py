"""Threshold search: the top-k and top-p thresholds of a row of logits, by bracketing, never a sort.

Where it sits: inside the fused sampler's kernels, between reading the row and the draw:
`logits → [max scan → top-k search → top-p search] → draw (minigpt/kernels/draw.py) → token`.
The kernels are minigpt/kernels/sampling.py (one program per row, which explains how the pieces
fit) and minigpt/kernels/sampling_split.py (a row over several programs); this file holds the
@triton.jit helpers they share, each called from inside a kernel.

## The idea: every filter keeps an upper set of the row

Top-k keeps the logits ≥ the k-th largest; top-p keeps the most likely tokens until their mass
reaches top_p; min-p keeps the tokens with p ≥ min_p · p_max. Each keeps *every token above some
threshold*, so the whole pipeline reduces to finding thresholds on the logit axis — which needs
counts and sums over the row, never its order:

    t_k = the largest v with   count(l ≥ v)  ≥ k              (top-k; ties with the k-th all kept)
    t_p = the largest v ≥ t_k with mass(l ≥ v) ≥ top_p · mass(l ≥ t_k)     (top-p, after top-k)
    keep l ≥ max(t_k, t_p)  and  exp((l - max) / T) ≥ min_p             (min-p needs no search)

mass(l ≥ v) = Σ exp((l - max) / T) over those tokens: softmax's numerator, without normalising.

## Threshold search: bracketing on the logit value

count(l ≥ v) and mass(l ≥ v) only fall as v rises, so a threshold is found like a root: bracket
it in [lo, hi) and shrink the bracket. One pass evaluates several pivots at once (a (BLOCK,
N_PIVOTS) compare) and keeps the sub-bracket where the score crosses the goal. The search is exact:
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
  what lies above it enters as a known count and mass.
The copy is a stream compaction without atomics: from each lane's count of hits, one prefix sum
gives each lane its first slot, and one pass writes. Its order is fixed, so a seed always draws
the same token.

A pass counts and sums per lane (lane j: tokens j, j + BLOCK, ...), and the search keeps the
lanes' figures at the new bracket's ends. So the copy needs no counting pass of its own, and the
draw gets, for free, each lane's mass above a listed bracket: it picks the list or a lane, then
walks that lane's few tokens, without reading the row again. Top-p over 50257 N(0, 2²) logits
thus reads the row four times (the max, two search passes, the copy), where evenly spaced pivots
took three or four search passes, and counting and drawing anew two more reads
(tests/test_fused_sampling.py counts them).

## Where the pivots go: interpolation, with bisection as a floor

Evenly spaced pivots cut the bracket 4-fold per pass whatever the row, but a pass measures more
than which sub-bracket won: the scores at its ends. Over thousands of tokens, score(v) is smooth,
so the goal's crossing can be estimated, as the secant method does for a root. The estimate
interpolates linearly in z = Φ⁻¹(1 - score / total), the z-score at which a normal's upper tail
holds that fraction of the row: for a normal row z is exactly linear in v (its count, and its mass
too: exp(l / T) times a normal is a normal); on the shipped model's rows it did better, in a
simulation, than log(score) or the fraction's logit. The next pass puts two pivots at est ± d,
with d such that [est - d, est + d) holds about 70% of the list at the estimated density of
tokens there: if the estimate is right, that pass lists the bracket. The first pass knows
nothing yet and spaces its pivots evenly.

An estimate can be far off (heavy tails, ties, a row of a few clusters), so the midpoint is a
pivot too: every sub-bracket of {lo, mid, est - d, est + d} is at most half the old one, and a
pass never does worse than bisection (Brent's method guards the secant the same way). A pass that
leaves every token of the bracket in says the tokens sit in a sliver of it (a tie group, say),
where interpolation knows nothing: the next pass spaces its pivots evenly again, among the
bracket's floats rather than its values. Halving a value bracket around a tie at 0.0 (an all-zero
row) would go on through fp32's ever finer floats down to 1e-45, 64 passes over the row. fp32 has
2^32 floats, so 4 pivots among them (a 4-fold cut of their count) close any bracket within 16
passes (`pivots_in_floats`; fp16, whose floats end at 6e-8, closes within ~15 by values). On the
list in registers passes are cheap, and they keep 8 evenly spaced pivots (no interpolation): in
value, or in floats after a pass that left every candidate in.

## Where the search starts: the first pass

`max_scan` reads the row once: its max m (every weight exp((l - m) / T) is measured from it, so
none overflows), the first index holding it (a greedy row stops there), its smallest finite logit,
and its NaN/+inf count: with `bad_params` (a parameter out of range), that says which rows get
token -1. The search's bracket then starts at [floor, above_max): the top is a value of the
logits' dtype a step above m (m + |m| / 64, rounded; the dtype's next value where that overflows),
the floor the underflow point m - 126·ln2·T (below it a weight underflows fp32), or the smallest
logit if higher.
"""
from __future__ import annotations

import triton
import triton.language as tl

from minigpt import sampling

# A token's weight exp((l - m) / T) is computed as exp2((l - m) · c2), c2 = LOG2E / max(T, MIN_TEMPERATURE);
# both kernels derive c2 and the search's floor (m - UNDERFLOW_LOG2 / c2) from these three.
LOG2E = tl.constexpr(1.4426950408889634)  # exp(x) = exp2(x · log2 e); exp2 is the GPU's native instruction
# The torch path's floor, fp32's smallest normal (1.2e-38): all it has to do here is keep c2 finite
# (any T > LOG2E / 3.4e38 = 4.2e-39 would), as (l - m) ≤ 0 is measured from the max and never overflows
# (a weight is exact to fp32's rounding for every T above it). At the floor, the search's floor m - UNDERFLOW_LOG2 / c2
# is within 1e-36 of m: it rounds to m for any m far from 0, and the searches start on the max's tie group.
MIN_TEMPERATURE = tl.constexpr(sampling.MIN_TEMPERATURE)
UNDERFLOW_LOG2 = tl.constexpr(126.0)  # exp2(-126) is fp32's smallest normal: tokens further below never win
# A pass over the row at least halves the bracket in value (a list pass cuts it 8-fold), not in
# representable floats: from fp32's widest span (< 2^129) to its finest spacing (2^-149) is 278
# halvings, so 300 passes always end a search (at 48, neighbouring floats near 1e-38 under an
# 80-wide bracket stayed unseparated). Real rows stop after a handful.
MAX_PASSES = tl.constexpr(300)
N_PIVOTS = tl.constexpr(4)  # pivots per pass over the whole row
N_PIVOTS_LIST = tl.constexpr(8)  # pivots per pass over the short list, which sits in registers: 8-fold


@triton.jit
def max_scan(src, n, BLOCK: tl.constexpr, UNROLL: tl.constexpr):
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
def above_max(m, GRID: tl.constexpr):
    # Strictly above the max (count(l ≥ it) = 0), and on the logits' grid, as every pivot is: a
    # bracket's top the logits' dtype cannot hold would end a search too early (_narrow's test).
    # A step of |m| / 64 is ≥ 2 of bf16's, so rounding (to nearest on a GPU, truncating in Triton's
    # interpreter) never lands back on m; near 0, 1e-7 is more than fp16's smallest step (6e-8).
    top = round_to_input(m + tl.maximum(tl.abs(m) * 0.015625, 1e-7), GRID)
    # Within |m| / 64 of the dtype's largest value (fp16: m ≥ 64512; fp32 and bf16: 3.3e38) that
    # step overflows to inf, under which the first pass would end the search: take the dtype's
    # next value above m instead (inf only for m at the largest value itself).
    return tl.where(top == float("inf"), next_up(m, GRID), top)


@triton.jit
def next_up(x, GRID: tl.constexpr):
    """The next value of the logits' dtype above x (finite, > 0, on that grid): its bits + 1."""
    if GRID == tl.float32:
        return (x.to(tl.int32, bitcast=True) + 1).to(tl.float32, bitcast=True)
    else:  # fp16 and bf16: 16-bit patterns
        return (x.to(GRID).to(tl.int16, bitcast=True) + 1).to(GRID, bitcast=True).to(tl.float32)


@triton.jit
def bad_params(T, k, top_p, min_p):
    # Written as "not in range" so that NaN parameters fail too.
    return ~((T >= 0) & (T < float("inf"))) | (k < 0) | ~((top_p > 0) & (top_p <= 1)) | ~((min_p >= 0) & (min_p <= 1))


@triton.jit
def round_to_input(x, GRID: tl.constexpr):
    # Round fp32 values to the logits' dtype (a no-op for fp32): pivots then lie on the grid of
    # values the logits can take, so a bracket around a tie group shrinks to it and stops.
    return x.to(GRID).to(tl.float32)


@triton.jit
def pick(vec, j, N: tl.constexpr):
    # vec[j] as a scalar (Triton has no dynamic indexing of register tensors).
    return tl.sum(tl.where(tl.arange(0, N) == j, vec, 0), axis=0)


@triton.jit
def pivots_in(lo, hi, N: tl.constexpr, GRID: tl.constexpr):
    """N pivots evenly spaced in [lo, hi), on the logits' grid; pivot 0 is lo itself: (N,)."""
    j = tl.arange(0, N)
    # An explicit fma: the split path's launches each compute these pivots and must agree to the
    # bit; `lo + (hi - lo) * f` would be fused into an fma, or not, as each kernel's compiler sees fit.
    return tl.where(j == 0, lo, round_to_input(tl.fma(hi - lo, j.to(tl.float32) / N, lo), GRID))


@triton.jit
def float_key(x):
    # fp32's bits as an int32 that orders like the values: a positive float's bits already do; a
    # negative one's count up as it falls, so flip all but the sign bit. -0.0 and 0.0 are neighbours.
    b = x.to(tl.int32, bitcast=True)
    return tl.where(b < 0, b ^ 0x7FFFFFFF, b)


@triton.jit
def pivots_in_floats(lo, hi, N: tl.constexpr, GRID: tl.constexpr):
    """N pivots evenly spaced in the *floats* of [lo, hi), not in its values, on the logits' grid;
    pivot 0 is lo itself: (N,). For a bracket that holds a tie group or a sliver of neighbouring
    floats: around 0.0, fp32's floats grow ever denser (down to 1e-45), and evenly spaced values
    would halve the bracket ~150 times to close on the tie; there are only 2^32 floats, so cutting
    their count 4-fold closes any bracket in 16 passes. bf16 shares fp32's exponents, and its
    floats are fp32's rounded. fp16's are not: they end at 6e-8, where halving values closes any
    bracket in ~15 passes anyway, and fp32's floats below it would all round to 0.0, pivots
    that cut nothing: fp16 keeps evenly spaced values."""
    if GRID == tl.float16:
        return pivots_in(lo, hi, N, GRID)
    lo_key = float_key(lo).to(tl.int64)
    key = lo_key + (float_key(hi).to(tl.int64) - lo_key) * tl.arange(0, N) // N
    b = key.to(tl.int32)
    back = tl.where(b < 0, b ^ 0x7FFFFFFF, b).to(tl.float32, bitcast=True)  # keys → floats: float_key is its own inverse
    return tl.where(tl.arange(0, N) == 0, lo, round_to_input(back, GRID))


@triton.jit
def upper_z(s, total):
    """Φ⁻¹(1 - s / total): the z at which a normal's upper tail holds the fraction s / total of it,
    by Abramowitz & Stegun 26.2.23 (error < 5e-4: plenty for placing a pivot). 0 < s < total."""
    f = s / total
    t = tl.sqrt(-2.0 * tl.log(tl.minimum(f, (total - s) / total)))
    z = t - (2.515517 + t * (0.802853 + t * 0.010328)) / (1.0 + t * (1.432788 + t * (0.189269 + t * 0.001308)))
    return tl.where(f < 0.5, z, -z)


@triton.jit
def guided_pivots(lo, hi, s_lo, s_hi, c_lo, c_hi, s_all, c_all, goal, m, CAP: tl.constexpr, GRID: tl.constexpr):
    """The next pass's pivots over the row (N_PIVOTS = 4), placed around where the score (count
    or mass: s_lo, s_hi at the bracket's ends, s_all the first pass's total) should reach the
    goal, and the midpoint: {lo, mid, est - d, est + d}, sorted, on the logits' grid."""
    # A token's score above v falls like a normal's tail (exactly so for a normal row, whose
    # weighted mass is normal too): interpolate linearly in z = upper_z(score). A bracket's top
    # above the max scores 0, so there the max itself stands in: count and mass (its weight) ≥ 1.
    above = hi > m
    top = tl.where(above, m, hi)
    s_top = tl.where(above, 1.0, s_hi)
    c_top = tl.where(above, 1.0, c_hi.to(tl.float32))
    total, c_total = s_all * 1.000001, c_all.to(tl.float32) * 1.000001  # (> every score: the tail stays < 1)
    z_lo = upper_z(s_lo, total)
    f = (upper_z(goal, total) - z_lo) / (upper_z(s_top, total) - z_lo)
    f = tl.where(f < 1, tl.where(f > 0, f, 0.0), 1.0)  # (a NaN, from 0 / 0, goes to 1)
    est = tl.where(lo < top, lo + (top - lo) * f, lo)
    # d: the tokens in [est - d, est + d) should fill ~70% of the list, at the count's density
    # there (the same model, on counts), so that one more pass lists them if est is right; at
    # most a 16th of the bracket, where the density is low and the estimate rough.
    zc_lo = upper_z(c_lo.to(tl.float32), c_total)
    slope = (upper_z(c_top, c_total) - zc_lo) / (top - lo)  # dz/dv
    zc = zc_lo + slope * (est - lo)
    # Tokens per unit of logit: c_total · φ(zc) · dz/dv, φ the normal's density.
    density = c_total * 0.39894228 * tl.exp(-0.5 * zc * zc) * slope
    d = 0.35 * CAP / density
    d = tl.where((d > 0) & (d < (hi - lo) * 0.0625), d, (hi - lo) * 0.0625)  # (NaN and inf too)
    a, b = tl.maximum(est - d, lo), tl.minimum(est + d, hi)
    # With the midpoint among the pivots, every sub-bracket is at most half the old one, however
    # far est misses: the guided pass never does worse than bisection.
    mid = lo + (hi - lo) * 0.5
    j = tl.arange(0, N_PIVOTS)
    p = tl.where(j == 1, tl.minimum(mid, a), tl.where(j == 2, tl.maximum(a, tl.minimum(mid, b)), tl.maximum(mid, b)))
    return tl.where(j == 0, lo, round_to_input(p, GRID))


@triton.jit
def stream_count_mass(src, n, pivots, m, c2, BLOCK: tl.constexpr, UNROLL: tl.constexpr, N_PIV: tl.constexpr,
                      WITH_MASS: tl.constexpr):
    """count(l ≥ pivot) and mass(l ≥ pivot) for each pivot, over the n logits at src, per lane (lane
    j: tokens j, j + BLOCK, ...): (BLOCK, N_PIV) each; tl.sum(·, axis=0) gives the row's. The
    search keeps a lane's counts to copy its candidates without counting them again."""
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
    return cnt, mass


@triton.jit
def column(lanes, j, N: tl.constexpr):
    # lanes[:, j]: one pivot's per-lane counts or masses, (BLOCK,).
    return tl.sum(tl.where(tl.arange(0, N)[None, :] == j, lanes, 0), axis=1)


@triton.jit
def _narrow(pivots, cnt, mass, lo, hi, c_hi, m_hi, goal, target, passes,
            IS_TOP_P: tl.constexpr, N: tl.constexpr, GRID: tl.constexpr):
    """Move the bracket [lo, hi) to the last pivot still reaching the goal (index `last`: lo is
    pivots[last], hi pivots[last + 1] if there is one); say if the search is done."""
    score = mass if IS_TOP_P else cnt.to(tl.float32)  # both fall as the pivot rises
    last = tl.maximum(tl.sum((score >= goal).to(tl.int32), axis=0) - 1, 0)
    new_lo = pick(pivots, last, N)
    c_lo = pick(cnt, last, N)
    if last < N - 1:
        hi = pick(pivots, last + 1, N)
        c_hi = pick(cnt, last + 1, N)
        m_hi = pick(mass, last + 1, N)
    lo = new_lo
    mid = round_to_input(lo + (hi - lo) * 0.5, GRID)
    # Done when one element (or one tie group: nothing representable strictly inside) is left.
    searching = (c_lo - c_hi > 1) & (mid > lo) & (mid < hi) & (passes < MAX_PASSES)
    if not IS_TOP_P:
        # Exactly k left, or (first pass) fewer than k tokens can be drawn at all: keep them all.
        searching = searching & (c_lo > target)
    return lo, hi, c_lo, c_hi, m_hi, searching, last


@triton.jit
def lanes_between(src, V, lo, hi, m, c2, BLOCK: tl.constexpr, UNROLL: tl.constexpr, WITH_MASS: tl.constexpr):
    """Per lane: how many logits lie in [lo, hi), and (WITH_MASS) the mass of those ≥ hi: (BLOCK,)
    each. One pass over the row, for a bracket that no search pass has just measured."""
    cols = tl.arange(0, BLOCK)
    hits = tl.zeros((BLOCK,), dtype=tl.int32)
    mass_above = tl.zeros((BLOCK,), dtype=tl.float32)
    for start in range(0, V, BLOCK * UNROLL):
        for u in tl.static_range(UNROLL):
            offs = start + u * BLOCK + cols
            x = tl.load(src + offs, mask=offs < V, other=float("-inf")).to(tl.float32)
            hits += (x >= lo) & (x < hi)
            if WITH_MASS:
                mass_above += tl.where(x >= hi, tl.exp2((x - m) * c2), 0.0)
    return hits, mass_above


@triton.jit
def copy_between(src, V, lo, hi, hits, dst, dst_idx, cap, base, BLOCK: tl.constexpr, UNROLL: tl.constexpr):
    """Stream compaction: copy every logit in [lo, hi) (≤ cap of them) and its token id (its index
    at src, plus `base`) to dst, in one pass over the row.

    Lane j of the block reads tokens j, j + BLOCK, j + 2·BLOCK, ... `hits` (BLOCK,) is each lane's
    count in [lo, hi): the search's last pass measured it (or `lanes_between` counts it). One
    prefix sum turns the counts into each lane's first slot, then the pass writes. No step needs
    the whole block to agree (a per-step prefix sum would), and the order is fixed, so the same
    seed draws the same token. Returns how many were copied."""
    cols = tl.arange(0, BLOCK)
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
def find_threshold(src, V, scratch, scratch_idx, listed, n_c, lo, hi, c_hi, m_hi, goal, target, top_p, m, c2,
                   IS_TOP_P: tl.constexpr, BLOCK: tl.constexpr, UNROLL: tl.constexpr, CAP: tl.constexpr,
                   GRID: tl.constexpr):
    """Narrow [lo, hi) down to the largest v with count(l ≥ v) ≥ target (top-k), or with
    mass(l ≥ v) ≥ goal (top-p; goal 0: top_p · mass(l ≥ lo), which the first pass measures).
    c_hi, m_hi are count and mass(l ≥ hi); goal is k itself (as fp32) for top-k, target is k for
    top-k and 0 for top-p. Returns (threshold, listed, n_c, list_top, lane_above):
    - listed is 1 when every logit ≥ the threshold is in the scratch list, 2 when only the bracket
      [·, list_top) is, 0 when the list was never filled (the draw then streams the row);
    - n_c is how many entries the list holds;
    - lane_above (BLOCK,): when this call listed the bracket, each lane's mass(l ≥ list_top), what
      the draw needs of the tokens above the list without reading the row again; else 0."""
    passes = target * 0  # a tensor from the start, as loops carry it
    searching = passes == 0
    list_top = hi
    # Each lane's count and mass(l ≥ hi), known (1) while hi is above the max or a pivot of this
    # search's passes; the caller's hi (the split path's plan) is neither.
    lane_c_hi = tl.zeros((BLOCK,), dtype=tl.int32)
    lane_m_hi = tl.zeros((BLOCK,), dtype=tl.float32)
    known = (hi > m).to(tl.int32)
    # Phase 1: stream the whole row, until the candidates fit the scratch list. The first pass
    # spaces its pivots evenly; later ones are placed by what the passes before measured, unless
    # the last pass left every token of the bracket in: they sit in a sliver of it (a tie group,
    # neighbouring floats far below a wide bracket), where the interpolation knows nothing: then
    # pivots evenly spaced among its floats, not its values, close it within 16 passes.
    c_lo, s_lo, s_all, c_all = c_hi, m_hi, m_hi, c_hi  # (their types; the first pass sets them)
    sliver = passes != 0  # False, as a tensor: a loop-carried variable must be one from the start
    while searching & (listed == 0):
        if passes == 0:
            pivots = pivots_in(lo, hi, N_PIVOTS, GRID)
        elif sliver:
            pivots = pivots_in_floats(lo, hi, N_PIVOTS, GRID)
        else:
            s_hi = m_hi if IS_TOP_P else c_hi.to(tl.float32)
            pivots = guided_pivots(lo, hi, s_lo, s_hi, c_lo, c_hi, s_all, c_all, goal, m, CAP, GRID)
        lane_cnt, lane_mass = stream_count_mass(src, V, pivots, m, c2, BLOCK, UNROLL, N_PIVOTS, IS_TOP_P)
        cnt, mass = tl.sum(lane_cnt, axis=0), tl.sum(lane_mass, axis=0)
        score = mass if IS_TOP_P else cnt.to(tl.float32)
        if passes == 0:  # the totals the guided pivots measure scores against
            s_all, c_all = pick(score, 0, N_PIVOTS), pick(cnt, 0, N_PIVOTS)
        if IS_TOP_P:
            if goal == 0:
                goal = top_p * pick(mass, 0, N_PIVOTS)  # top_p of the mass left after top-k
        in_bracket = c_lo - c_hi
        lo, hi, c_lo, c_hi, m_hi, searching, last = _narrow(pivots, cnt, mass, lo, hi, c_hi, m_hi, goal, target,
                                                            passes, IS_TOP_P, N_PIVOTS, GRID)
        s_lo = pick(score, last, N_PIVOTS)
        sliver = c_lo - c_hi == in_bracket
        lane_c_lo = column(lane_cnt, last, N_PIVOTS)
        if IS_TOP_P:
            if last < N_PIVOTS - 1:  # hi moved to a pivot of this pass
                lane_c_hi = column(lane_cnt, last + 1, N_PIVOTS)
                lane_m_hi = column(lane_mass, last + 1, N_PIVOTS)
                known = known * 0 + 1
        # The copy needs each lane's count in the bracket, which this pass has just measured.
        if searching & (c_lo <= CAP):  # all candidates fit: later passes and the draw use the list
            n_c = copy_between(src, V, lo, float("inf"), lane_c_lo, scratch, scratch_idx, CAP, 0, BLOCK, UNROLL)
            listed = listed * 0 + 1
        if IS_TOP_P:
            if searching & (c_lo > CAP) & (c_lo - c_hi <= CAP):  # the bracket alone fits: list it,
                hits = lane_c_lo - lane_c_hi
                if known == 0:
                    hits, lane_m_hi = lanes_between(src, V, lo, hi, m, c2, BLOCK, UNROLL, True)
                n_c = copy_between(src, V, lo, hi, hits, scratch, scratch_idx, CAP, 0, BLOCK, UNROLL)
                list_top = hi
                listed = listed * 0 + 2  # and count what lies above it as a base
        passes += 1
    # Phase 2: the list, loaded once into registers; what lies above it is counted in c_base, m_base.
    # Its pivots are evenly spaced, in value, or in floats after a list pass that left every candidate in.
    c_base = tl.where(listed == 2, c_hi, 0)
    m_base = tl.where(listed == 2, m_hi, 0.0)
    xs = tl.load(scratch + tl.arange(0, CAP), mask=tl.arange(0, CAP) < n_c, other=float("-inf")).to(tl.float32)
    w = tl.exp2((xs - m) * c2)
    sliver = passes < 0  # False, as a tensor (as in phase 1)
    while searching:
        if sliver:
            pivots = pivots_in_floats(lo, hi, N_PIVOTS_LIST, GRID)
        else:
            pivots = pivots_in(lo, hi, N_PIVOTS_LIST, GRID)
        above = xs[:, None] >= pivots[None, :]  # (CAP, N_PIVOTS_LIST)
        cnt = tl.sum(above.to(tl.int32), axis=0) + c_base
        mass = tl.sum(tl.where(above, w[:, None], 0.0), axis=0) + m_base
        if IS_TOP_P:
            if goal == 0:
                goal = top_p * pick(mass, 0, N_PIVOTS_LIST)
        in_bracket = c_lo - c_hi
        lo, hi, c_lo, c_hi, m_hi, searching, _last = _narrow(pivots, cnt, mass, lo, hi, c_hi, m_hi, goal, target,
                                                             passes, IS_TOP_P, N_PIVOTS_LIST, GRID)
        sliver = c_lo - c_hi == in_bracket
        passes += 1
    return lo, listed, n_c, list_top, tl.where(listed == 2, lane_m_hi, 0.0)
