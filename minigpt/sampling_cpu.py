"""Sampling on a CPU: the filters on the few largest logits (the short list), not the whole row.

Where it sits: inside minigpt/sampling.py's filters and `token_picker`, on a CPU only; what is
computed does not change, only how much of the row it takes.

Top-k and top-p keep a few tokens of GPT-2's 50,257, and the stages after them (min-p, and the
draw's noise: one value per token) need only those. On a CPU, where each pass over the whole row
costs, the picker takes what top-k (or top-p's head) has already gathered, the largest logits, as
a short list, and runs the rest on it: top-k's K tokens (`top_k_shortlist`), or top-p's whole head
with the dropped ones at -inf (`top_p_cut_in_head`). With neither, min-p alone may list the few
tokens within its reach of the max (`min_p_shortlist`). With top_k 50, a nucleus of hundreds or
min-p 0.1, that is several times less work a step (scripts/bench_sampling_cpu.py). Each function
here asks "does the list hold every kept token?" with a host sync: free on a CPU, too dear per
step on a GPU, where the fused kernel is the fast path anyway and the whole row goes through.
`top_k_top_p_on_cpu` in minigpt/sampling.py puts them together.
"""
from __future__ import annotations

import torch

from minigpt.row_params import Param, as_column

# Top-p's heads. Sorting GPT-2's 50,257 logits takes 3 ms on a CPU, a fifth of the 124M model's
# decode step in bf16, while a nucleus is mostly tens to hundreds of tokens: torch.topk finds the
# largest 1024 in ~0.5 ms, the largest 8192 in ~0.9 ms (scripts/bench_sampling_cpu.py times them).
# A nucleus past the first head tries the second when it may fit it. (On a GPU the sort is cheap,
# and the head's "did it fit?" test would make the host wait.) TOP_P_HEAD is also the longest
# short list top-k or min-p makes (top_k_shortlist, min_p_shortlist): past it, the whole row.
TOP_P_HEAD = 1024
TOP_P_SECOND_HEAD = 8192


def top_p_cut_in_head(logits: torch.Tensor, p: float | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """apply_top_p's cut (B, 1), found among the TOP_P_HEAD largest logits of each row alone, or
    else among the TOP_P_SECOND_HEAD largest, with that head (values descending, and their ids:
    each (B, head size)); or None when a row's nucleus may not fit either (or the row is no longer
    than the head): then the whole row is sorted.
    `p` is top_p as `as_column` gives it: a number, or (B, 1).

    The sort's test, counted from the top: a token stays while its tail (its own mass and all the
    mass ranked below it: the row's total less the mass ranked above) is > 1 - top_p. The sums are
    float64; they part from the sort's float32 running sum by rounding alone (~1e-7 of the mass:
    ≤ 6e-8 on random rows of 50257).
    Tied tokens have equal probabilities, so the order topk gives them changes no sum.
    """
    if logits.size(-1) <= TOP_P_HEAD:  # (a short list's top-p, on K ≤ TOP_P_HEAD logits, comes here first)
        return None
    probs = logits.float().softmax(dim=-1)
    total = probs.sum(dim=-1, keepdim=True, dtype=torch.float64)
    for size in (TOP_P_HEAD, TOP_P_SECOND_HEAD):
        head, ids = logits.topk(size, dim=-1)  # descending, (B, size)
        head_probs = probs.gather(1, ids).double()
        above = head_probs.cumsum(dim=-1) - head_probs  # the mass ranked above each token
        tail = total - above
        kept = (tail > 1 - p).sum(dim=-1, keepdim=True).clamp(min=1)  # 0 when 1 - top_p rounds to 1, or NaNs: keep the top
        # The head holds the cut when its last token goes, when every token below it is -inf, or top_p is 1 (no cut).
        found = (kept < size) | (head[:, -1:] == float("-inf")) | (p >= 1)
        if bool(found.all()):  # a host sync, which costs nothing on a CPU
            cut = head.gather(1, kept - 1).masked_fill(tail[:, :1].isnan(), float("-inf"))  # a NaN or +inf logit: keep all, as the sort does
            if isinstance(p, torch.Tensor):
                cut = torch.where(p < 1, cut, float("-inf"))  # top_p = 1: keep all
            return cut, head, ids
        if size == TOP_P_SECOND_HEAD:
            return None  # past both heads: the sort
        # Every token past the head is at most as likely as its last: a row whose nucleus goes on
        # needs at least (mass still to cover) / (that probability) more. Try the second head only
        # if that many fit in it (a flat row's nucleus of tens of thousands goes straight to the sort).
        more = (total - (1 - p) - (above[:, -1:] + head_probs[:, -1:])) / head_probs[:, -1:]
        if not bool((found | (size + more < TOP_P_SECOND_HEAD)).all()) or logits.size(-1) <= TOP_P_SECOND_HEAD:
            return None  # (a row no longer than the second head is sorted whole: no cheaper)


def top_k_shortlist(logits: torch.Tensor, top_k: Param) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The tokens top-k keeps, as (values, ids), each (B, K): the K largest logits, descending, at
    -inf past a row's own k-th value, and their vocabulary ids. K is the largest k of any row, or
    more where ties with a row's k-th value (which top-k keeps whole) reach past it. None when
    there is no short list to make: top-k off in some row, or more than TOP_P_HEAD tokens kept (a
    large k, or -inf logits among a row's top k). `logits` are after the temperature: top-k
    compares those, as apply_top_k does."""
    if logits.size(0) == 0:  # no rows: nothing for max() to reduce
        return None
    if isinstance(top_k, torch.Tensor):
        k = top_k.to(device=logits.device, dtype=torch.long).reshape(-1, 1)  # (B, 1)
        if bool((k <= 0).any()):  # a host sync: free on a CPU
            return None
        K = int(k.max())
    else:
        k = K = int(top_k)
    if not 0 < K <= min(TOP_P_HEAD, logits.size(-1) - 1):
        return None
    values, ids = logits.topk(K, dim=-1)  # descending
    kth = values.gather(1, k - 1) if isinstance(k, torch.Tensor) else values[:, -1:]  # (B, 1): each row's k-th
    n_kept = int((logits >= kth).sum(dim=-1).max())  # > K when a tie group reaches past the K (common in bf16)
    if n_kept > TOP_P_HEAD:
        return None
    if n_kept > K:
        values, ids = logits.topk(n_kept, dim=-1)  # every row's kept tokens are among the n_kept largest
    return values.masked_fill(values < kth, float("-inf")), ids


def min_p_shortlist(logits: torch.Tensor, min_p: Param) -> tuple[torch.Tensor, torch.Tensor] | None:
    """A short list holding every token min-p may keep: those within ln(1 / min_p) of their row's
    max (softmax's p ≥ min_p · p_max, in logits), counted with a little slack for the softmax's
    rounding; the list is the K largest logits, K the most any row keeps, and apply_min_p on it
    then makes the exact cut. (values, ids), each (B, K), or None: min-p off in some row, or more
    than TOP_P_HEAD tokens within reach (a flat row)."""
    m = torch.as_tensor(as_column(min_p, logits))  # () or (B, 1)
    if not bool((m > 0).all()) or logits.size(0) == 0:
        return None
    top = logits.amax(dim=-1, keepdim=True)
    # The slack ≫ fp32's rounding of top + log(min_p), while min_p · p_max is a normal float (≥ 1e-38;
    # below, tokens of p < 1e-38 · p_max the list misses would be drawn once in 1e38 anyway).
    floor = top + m.log() - (1e-4 + 1e-6 * top.abs())
    K = int((logits >= floor).sum(dim=-1).max())
    if not 0 < K <= TOP_P_HEAD:  # 0: every row NaN (their tokens are -1 anyway)
        return None
    return logits.topk(K, dim=-1)
