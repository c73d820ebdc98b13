"""The draw: one token from the kept set, by inverse-CDF sampling with one uniform number per row.

Where it sits: the last step of the fused sampler's kernels (minigpt/kernels/sampling.py, one
program per row; minigpt/kernels/sampling_split.py, a row over several programs):
`logits → max scan → threshold search (minigpt/kernels/search.py) → [draw] → token`.
The search leaves t, the top-k/top-p threshold. A token is kept when l ≥ t and p ≥ min_p · p_max
(min-p needs no search: one compare per token), and weighs exp((l - max) / T), softmax's
numerator, never normalised: the draw compares running sums with u · their total.

The draw is inverse-CDF sampling with ONE uniform number per row from Philox (`tl.philox`, keyed
by the seed, counting on (row, offset)): cumulate the kept weights, pick the first token whose
running sum passes u · total. Any fixed order of the tokens gives a correct draw, so the full-row
case cumulates per-lane partial sums (lane j holds tokens j, j + BLOCK, ...), picks a lane, then
walks its few tokens. Seed and offset are read from device tensors: a CUDA graph replays the
kernel with new randomness when the caller bumps `offset` in place (by 1 per step).

The pieces: `row_uniform` (u), `first_past` (the pick, which every draw makes), `kept_weight`
(l ≥ t and min-p's test), `list_weights` (the scratch list's weights), `walk_lane` (a token inside
a lane), `draw_listed` (from the list, and from the lanes' masses above it that the search
measured) and `draw_row` (lane, then token, over the whole row, when the search left neither).
"""
from __future__ import annotations

import triton
import triton.language as tl

from minigpt.kernels.search import pick


@triton.jit
def first_past(w, goal, N: tl.constexpr):
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
    return i, tl.maximum(goal - pick(cum - w, i, N), 0.0)


@triton.jit
def row_uniform(seed_ptr, offset_ptr, row):
    """The row's one uniform number in [0, 1): Philox at (seed; row, offset)."""
    seed = tl.load(seed_ptr)
    offset = tl.load(offset_ptr)
    bits, _b1, _b2, _b3 = tl.philox(seed, row.to(tl.uint32), (offset & 0xFFFFFFFF).to(tl.uint32),
                                    (offset >> 32).to(tl.uint32), 0)
    return tl.uint_to_uniform_float(bits)


@triton.jit
def min_p_cutoff(min_p):
    # min-p's cutoff on kept_weight's log2 scale: it keeps (l - m) · c2 ≥ log2(min_p), i.e.
    # p ≥ min_p · p_max; -inf (keep all) when min-p is off. (A min_p below 1e-30 acts as 1e-30,
    # so log2 never sees 0: it drops only tokens of p < 1e-30 · p_max, as the kernel's docstring says.)
    return tl.where(min_p > 0, tl.log2(tl.maximum(min_p, 1e-30)), float("-inf"))


@triton.jit
def kept_weight(x, t, log2_min_p, m, c2):
    """A logit's weight in the draw, exp((l - m) / T), if it is kept: l ≥ t (the top-k/top-p
    threshold) and p ≥ min_p · p_max; else 0. x: fp32 logits of any shape."""
    z = (x - m) * c2
    return tl.where((x >= t) & (z >= log2_min_p), tl.exp2(z), 0.0)


@triton.jit
def list_weights(scratch, n_c, t, log2_min_p, m, c2, CAP: tl.constexpr):
    """The kept weights of the scratch list's entries (CAP,)."""
    i = tl.arange(0, CAP)
    x = tl.load(scratch + i, mask=i < n_c, other=float("-inf")).to(tl.float32)
    return kept_weight(x, t, log2_min_p, m, c2)


@triton.jit
def walk_lane(src, V, lane, t, log2_min_p, m, c2, goal, BLOCK: tl.constexpr, MAX_CHUNKS: tl.constexpr):
    """The token of `lane` (tokens lane, lane + BLOCK, ...) at which its running kept weight passes
    goal: its index at src."""
    offs = lane + tl.arange(0, MAX_CHUNKS) * BLOCK
    x = tl.load(src + offs, mask=offs < V, other=float("-inf")).to(tl.float32)
    pos, _left = first_past(kept_weight(x, t, log2_min_p, m, c2), goal, MAX_CHUNKS)
    return lane + pos * BLOCK


@triton.jit
def draw_row(src, V, t, log2_min_p, m, c2, uniform, BLOCK: tl.constexpr, UNROLL: tl.constexpr,
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
            lane_mass += kept_weight(x, t, log2_min_p, m, c2)
    lane, goal = first_past(lane_mass, uniform * tl.sum(lane_mass, axis=0), BLOCK)
    return walk_lane(src, V, lane, t, log2_min_p, m, c2, goal, BLOCK, MAX_CHUNKS)


@triton.jit
def draw_listed(src, V, scratch, scratch_idx, n_c, t, log2_min_p, m, c2, list_top, lane_above, uniform,
                CAP: tl.constexpr, BLOCK: tl.constexpr, MAX_CHUNKS: tl.constexpr):
    """Draw without reading the row: every kept token is in the scratch list (lane_above all 0), or
    the list holds top-p's bracket [t, list_top) and lane_above (BLOCK,) each lane's mass of the
    tokens ≥ list_top, all kept (the caller checks that min-p's cut lies below list_top). The list
    comes first in the running sum, then the lanes; a lane's few tokens are walked. Returns the
    token id."""
    wl = list_weights(scratch, n_c, t, log2_min_p, m, c2, CAP)
    list_mass = tl.sum(wl, axis=0)
    above = tl.sum(lane_above, axis=0)
    goal = uniform * (list_mass + above)
    if (goal < list_mass) | (above == 0):
        at, _left = first_past(wl, goal, CAP)
        token = tl.load(scratch_idx + at)
    else:
        lane, left = first_past(lane_above, goal - list_mass, BLOCK)
        token = walk_lane(src, V, lane, list_top, float("-inf"), m, c2, left, BLOCK, MAX_CHUNKS)
    return token
