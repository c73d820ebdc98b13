"""Penalties: push down the tokens a row has already used, before any filter sees the logits.

Where it sits: `... → GPT → logits → penalties → n-gram ban → filters (temperature, top-k, top-p,
min-p, typical, epsilon, eta) → draw → ...`; the filters and the draw are minigpt/sampling.py.

- Repetition (CTRL's: Keskar et al. 2019, arXiv:1909.05858; as in transformers) shrinks a seen
  token's logit; presence and frequency (OpenAI's) subtract a flat cost for having appeared, plus
  one per occurrence. `penalize` applies all three to token counts (B, V), which the decode loop
  keeps on the device and bumps each step (`PenaltyCounts`; `token_counts` builds counts from
  ids); `apply_penalties` is the checked form, on ids.
- The n-gram ban (`ban_repeated_ngrams`, transformers' `no_repeat_ngram_size`) gives -inf to every
  token that would repeat an n-gram of the row.

Each parameter is a Python number or a (B,) tensor, one value per row (a `Param`,
minigpt/row_params.py). These stay torch ops on the GPU too: the fused sampling kernel
(minigpt/kernels/sampling.py) runs after them, not with them; with compile=True the decode loop
runs `penalize` compiled, as one fused elementwise kernel (`compiled_penalize`).
What this file does not do: DRY penalties, or transformers' `sequence_bias` (a bias on given tokens).
"""
from __future__ import annotations

import functools
import math
from typing import Callable

import torch

from minigpt.checks import as_count
from minigpt.row_params import Param, as_column, as_tensor, check_logits, check_param, is_on, per_row


def token_counts(ids: torch.Tensor, vocab_size: int, mask: torch.Tensor | None = None) -> torch.Tensor:
    """How often each token occurs in each row: ids (B, T) → counts (B, V) int32 (mask 0 = skip)."""
    ones = torch.ones_like(ids, dtype=torch.int32) if mask is None else mask.to(torch.int32)
    return torch.zeros(ids.size(0), vocab_size, dtype=torch.int32, device=ids.device).scatter_add_(1, ids, ones)


def penalize(
    logits: torch.Tensor,
    seen: torch.Tensor,
    generated: torch.Tensor,
    *,
    repetition_penalty: Param = 1.0,
    presence_penalty: Param = 0.0,
    frequency_penalty: Param = 0.0,
) -> torch.Tensor:
    """Penalties from token counts (B, V): `seen` for repetition, `generated` for presence/frequency.

    The decode loop keeps both counts on the device and bumps them each step, which is cheaper
    than re-reading every id so far (`apply_penalties` is the ids-based form).
    """
    x = logits.float()
    r = as_column(repetition_penalty, x)
    # Repetition (CTRL, as in transformers): shrink a seen token's logit towards "less likely" —
    # divide a positive logit, multiply a negative one (dividing a negative would *raise* it).
    x = torch.where(seen > 0, torch.where(x < 0, x * r, x / r), x)
    # Presence and frequency (OpenAI): a flat cost for having appeared, plus one per occurrence.
    presence, frequency = as_column(presence_penalty, x), as_column(frequency_penalty, x)
    return x - presence * (generated > 0) - frequency * generated


@functools.cache  # one compiled function per process: dynamo keeps its graphs per input shape
def compiled_penalize() -> Callable[..., torch.Tensor]:
    """`penalize` compiled (torch.compile, fullgraph): its dozen elementwise ops over (B, V) become
    one fused kernel, where eagerly each is a kernel launch of its own on every decode step (the
    loop uses it with compile=True). The loop passes every parameter as a (B,) tensor
    (row_params.as_tensor), so one graph serves numbers and per-row values alike, whatever they are."""
    return torch.compile(penalize, fullgraph=True)


class PenaltyCounts:
    """What the decode loop keeps for the penalties: each row's token counts (B, V) on the device,
    `seen` (the prompt's real tokens and the generated ones: repetition, as in transformers) and
    `generated` (the generated ones alone: presence and frequency, as in OpenAI's API). `penalize`
    applies the penalties to a step's logits; `add` counts the step's tokens (B,) of the live rows.
    Bumped in place, a step costs two scatters, not a recount of every id so far."""

    def __init__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, vocab_size: int,
                 penalties: dict[str, Param], compile: bool = False) -> None:
        self.seen = token_counts(input_ids, vocab_size, attention_mask)  # (B, V): left pads are no tokens
        self.generated = torch.zeros_like(self.seen)
        self.penalties, self.penalize_fn = penalties, penalize
        if compile:  # one fused kernel a step, not a dozen; every value a tensor: one graph for all
            self.penalize_fn = compiled_penalize()
            B, device = input_ids.size(0), input_ids.device
            self.penalties = {name: as_tensor(value, B, device) for name, value in penalties.items()}

    def penalize(self, logits: torch.Tensor) -> torch.Tensor:
        return self.penalize_fn(logits, self.seen, self.generated, **self.penalties)

    def add(self, ids: torch.Tensor, live: torch.Tensor) -> None:
        one = live[:, None].int()  # (B, 1): a finished row's pad is not counted
        self.seen.scatter_add_(1, ids[:, None], one)  # counts (B, V) += 1 at each row's new token
        self.generated.scatter_add_(1, ids[:, None], one)


def check_rows(ids: torch.Tensor, B: int, dims: str = "(B, T)") -> None:
    """ids `dims`, one row per row of logits: a shape check only (no host sync, as this runs every
    decode step). One row against a batch would be broadcast by scatter_, silently."""
    if not isinstance(ids, torch.Tensor) or ids.dim() != 2 or ids.size(0) != B:
        got = tuple(ids.shape) if isinstance(ids, torch.Tensor) else type(ids).__name__
        raise ValueError(f"ids must be {dims} with the logits' B={B} rows, got {got}")


def apply_penalties(
    logits: torch.Tensor,
    ids: torch.Tensor,
    *,
    repetition_penalty: Param = 1.0,
    presence_penalty: Param = 0.0,
    frequency_penalty: Param = 0.0,
) -> torch.Tensor:
    """Penalise the tokens in `ids` (B, T): logits (B, V) → fp32 logits (B, V).

    `generate` counts prompt + generated ids for the repetition penalty (as transformers does) but
    only the generated ids for presence/frequency (as OpenAI does: they price what the *model*
    repeats, not the words the user wrote), and calls `penalize` on those two counts. Here one
    `ids` feeds all three.
    """
    check_logits(logits)
    B, V = logits.shape
    check_rows(ids, B)
    if ids.numel() and not 0 <= int(ids.min()) <= int(ids.max()) < V:
        raise ValueError(f"ids must be token ids in [0, {V}) (the logits' vocabulary), got {int(ids.min())}..{int(ids.max())}")
    check_penalties(repetition_penalty, presence_penalty, frequency_penalty)
    rows = per_row(B, repetition_penalty=repetition_penalty, presence_penalty=presence_penalty,
                   frequency_penalty=frequency_penalty)
    counts = token_counts(ids, V)
    return penalize(logits, counts, counts, **rows)


def ban_repeated_ngrams(logits: torch.Tensor, ids: torch.Tensor, n: int, mask: torch.Tensor | None = None) -> torch.Tensor:
    """No n-gram twice (transformers' `no_repeat_ngram_size`): a token that would complete an
    n-gram already in the row gets -inf. logits (B, V), each row's ids so far (B, L) → logits (B, V).

    The next token completes the n-gram (last n - 1 ids, token). It repeats one when an earlier
    window of n ids starts with those n - 1 ids, so each such window bans its own last id. n = 1
    bans every id the row holds; n = 0 is off. The ids are the prompt's and the generated ones, as
    in transformers. Vectorised: the L - n + 1 windows come from `unfold`, and are all compared
    with the row's last n - 1 ids at once, with no host sync; it re-reads the row each step (cheap
    next to a forward pass).

    `mask` (B, L), 0 = pad: a window (or the row's last n - 1 ids) holding a pad is no n-gram, so
    pads never form or complete one, and a left-padded row is banned as it would be alone. Here it
    differs from transformers, which counts left pads as tokens (a padded row of the pad id p bans p
    after p for n = 2); on unpadded rows the two agree exactly. An id ≥ V bans nothing.
    """
    check_logits(logits)  # shapes only, below: this runs every decode step, so no host sync
    B, V = logits.shape
    check_rows(ids, B, "(B, L)")
    if mask is not None and (not isinstance(mask, torch.Tensor) or mask.shape != ids.shape):
        got = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"mask must have the ids' shape {tuple(ids.shape)}, got {got}")
    n = as_count("n (no_repeat_ngram_size)", n)  # a 0-d integer tensor too, as generate takes it
    if n < 0:  # -1 would turn the ban off silently
        raise ValueError(f"n (no_repeat_ngram_size) must be an integer ≥ 0 (0 means off), got {n!r}")
    L = ids.size(1)
    if n < 1 or L < n:  # off, or no complete n-gram yet
        return logits
    windows = ids.unfold(1, n, 1)  # (B, L - n + 1, n): window w is ids[:, w : w + n]
    last = ids[:, L - n + 1:]  # (B, n - 1): the start of the n-gram the next token completes
    # The n-gram being completed is in no window yet: its last id is the one still to choose.
    matches = (windows[..., :-1] == last[:, None]).all(-1)  # (B, L - n + 1)
    if mask is not None:
        real = mask.bool()
        matches &= real.unfold(1, n, 1).all(-1) & real[:, L - n + 1:].all(-1, keepdim=True)
    # Each matching window bans its last id. The others (and ids ≥ V) scatter True into a spare
    # column V, cut off below: scattering `matches` itself, one window's False could clear another's ban.
    banned = torch.zeros(B, V + 1, dtype=torch.bool, device=logits.device)
    banned.scatter_(1, torch.where(matches, windows[..., -1].clamp(max=V), V), True)
    return logits.masked_fill(banned[:, :V], float("-inf"))


# ---- which penalties are on, and their checks ------------------------------------------------

# Each penalty's "off" value: dividing by 1 and subtracting 0 change nothing.
PENALTIES_OFF = {"repetition_penalty": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0}


def penalties_on(penalties: dict[str, Param]) -> bool:
    """Whether any penalty changes the logits, so a decode loop without any keeps no counts.
    A tensor counts as on without looking at its values (that would be a host sync)."""
    return any(is_on(v, PENALTIES_OFF[k]) for k, v in penalties.items())


# OpenAI's API accepts presence and frequency penalties in this range; beyond it text degenerates.
PENALTY_RANGE = (-2.0, 2.0)


def check_penalties(repetition_penalty: Param = 1.0, presence_penalty: Param = 0.0, frequency_penalty: Param = 0.0) -> None:
    """Raise ValueError for an out-of-range penalty."""
    lo, hi = PENALTY_RANGE
    check_param("repetition_penalty", repetition_penalty, lambda r: (r > 0) & (r < math.inf), "(0, inf) (1 means off)")
    check_param("presence_penalty", presence_penalty, lambda x: (x >= lo) & (x <= hi), f"[{lo}, {hi}]")
    check_param("frequency_penalty", frequency_penalty, lambda x: (x >= lo) & (x <= hi), f"[{lo}, {hi}]")
