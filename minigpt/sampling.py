"""Sampling: turn one step's logits into the next token, one short function per strategy.

Where it sits: `... → GPT → logits → penalties → n-gram ban → filters (temperature, top-k, top-p,
min-p, typical, epsilon, eta) → draw → ...`; the penalties and the n-gram ban, which come first, are minigpt/penalties.py.
Each strategy is a pure tensor function on logits (B, V), so the decode loop (minigpt/generation.py)
can chain them without waiting on the host, and `minigpt generate --explain` can show the
distribution after every stage. The order is transformers': temperature → top-k → top-p → min-p →
typical → epsilon → eta. The seven `apply_*` filters work along the last dim, the vocabulary, so they take (V,) or a model's
(B, T, V) logits too, with a number parameter (`check_filter_input`); `filter_logits`, `draw` and
`sample` take (B, V), one row per sequence, as their per-row (B,) parameters do.

- Filters (`apply_temperature`, `apply_top_k`, `apply_top_p`, `apply_min_p`, `apply_typical_p`,
  `apply_epsilon`, `apply_eta`; `filter_logits` runs all seven in order) set unlikely tokens to -inf. Each always keeps at least one token.
- The draw (`draw`) picks one token per row: the argmax when temperature is 0, else a random draw
  by the "exponential race" argmax(p / E), E ~ Exp(1): what `torch.multinomial` does inside for
  one sample, minus its validity check, which can wait on the host.
- `token_picker` builds, once per call of `sample`, `generate` (when it samples; beam search draws
  nothing) or `--explain`, the per-step function (filters, then draw) that the loop runs every step; `sample` is the checks plus one such step. On a
  CPU, once top-k or top-p has gathered the few largest logits (the *short list*), or min-p
  finds few within its reach, it runs min-p and the draw on those alone (`top_k_top_p_on_cpu`;
  the lists themselves are minigpt/sampling_cpu.py).
- Last, the checks (`check_sampling_params`, from the table `PARAM_RANGES`) and the backend choice
  (`resolve_backend`: the torch ops here, or the fused kernel).

Every parameter is a Python number (the same for all rows) or a (B,) tensor (one per row): a
`Param`, whose checks and row spreading (`per_row`) are shared with the penalties (minigpt/row_params.py).
The math runs in fp32 whatever the logits' dtype: bf16 keeps only 8 significant bits, too few for
cumulative probabilities. Each public filter and `draw` computes on its logits cast to fp32, and
returns fp32, so chained by hand they give what `filter_logits` gives (fp32 logits are not copied).
On CUDA, `sample(backend="triton")` runs the same pipeline as one fused kernel
(minigpt/kernels/sampling.py); it has the same semantics up to rounding at the thresholds (its
docstring lists where the kept set can differ), and its own random stream; it has no typical,
epsilon or eta filter, so any of them on samples with torch (`resolve_backend`).
What this file does not do: beam search (minigpt/beam_search.py), or top-h sampling.

Adding a filter: its `apply_*` function, its place in the chain (after min-p: `after_min_p`, which
both `filter_unchecked` and `token_picker`'s CPU path call; before it: in those two), its
range in `PARAM_RANGES` and off value in `SAMPLING_DEFAULTS`, its argument in the public
signatures (`filter_logits`, `sample`, `token_picker`, minigpt/generation.py's `stream` and
`StreamOptions`, minigpt/explain.py's `explain`, and there its stage in the table) and its flag in
minigpt/generate_cli.py's parser. The rest (the checks, per-row spreading, warnings, the CLI's
refusals and per-prompt values) reads the two tables. The fused kernel runs the filters of
`KERNEL_FILTERS`; `resolve_backend` keeps any other on torch.
"""
from __future__ import annotations

import importlib.util
import math
import numbers
import os
from typing import Callable

import torch

from minigpt.checks import as_count, is_bool
from minigpt.row_params import Param, as_column, as_tensor, check_logits, check_param, is_on, per_row, shown
from minigpt.sampling_cpu import min_p_shortlist, top_k_shortlist, top_p_cut_in_head

# The penalties live in minigpt/penalties.py; they are importable from here too, as part of the
# public sampling API (minigpt.sampling.apply_penalties and its kin).
from minigpt.penalties import apply_penalties, ban_repeated_ngrams, penalize  # noqa: F401 (re-exported)

# The one floor on a positive temperature: it must stay a positive fp32 to divide by (1e-50 is 0
# there, and 0 / 0 NaN). fp32's smallest normal, 1.2e-38: a T that small is the argmax unless two
# logits lie within ~1e-36 of each other. The fused kernel takes the same floor.
MIN_TEMPERATURE = torch.finfo(torch.float32).tiny
# Rows whose |max logit / T| reaches this are divided measured from their max (apply_temperature):
# from here on fp32 spaces the quotients l / T 2^-13 apart or more, and their rounding would move
# log p by 1.2e-4, more the smaller T. Below it (logits within ±100 at any T ≥ 0.1) rows are divided
# plainly, as transformers divides them.
SHIFT_ABOVE = 2.0 ** 10


# ---- filters (transformers' order: temperature → top-k → top-p → min-p → typical → epsilon → eta) --


def apply_temperature(logits: torch.Tensor, temperature: Param) -> torch.Tensor:
    """Divide by the temperature: < 1 sharpens the distribution, > 1 flattens it.

    Any positive T gives softmax(logits / T) as exactly as fp32 allows (only a T below
    MIN_TEMPERATURE is taken as MIN_TEMPERATURE; a tiny T: `divide_from_max`). Ordinary temperatures
    divide as transformers' TemperatureLogitsWarper does, so `filter_logits` equals its warpers to
    the bit there.

    Rows with temperature 0 are left as they are: they take the argmax, which dividing would not
    change (and dividing by 0 would turn into inf/NaN).
    """
    check_number("temperature", temperature)
    check_filter_input(logits, "temperature", temperature)
    logits = logits.float()  # the math in fp32 (the module's docstring); fp32 logits: the same tensor, no copy
    t = as_column(temperature, logits)
    if not isinstance(t, torch.Tensor):
        if t == 0:
            return logits
        return divide_from_max(logits, max(t, MIN_TEMPERATURE), True)
    positive = t > 0  # (B, 1)
    return divide_from_max(logits, torch.where(positive, t.clamp_min(MIN_TEMPERATURE), 1.0), positive)  # greedy rows: / 1


def divide_from_max(logits: torch.Tensor, t: float | torch.Tensor, positive: bool | torch.Tensor) -> torch.Tensor:
    """logits / t, measured from each row's max where plain division would lose what the softmax
    needs. A small T is where plain division fails: 5 / 1e-40 overflows to inf, and the softmax's
    inf - inf is NaN; before that, 5 / 1e-7 = 5e7 lies where fp32's values are 4 apart, so a gap of
    9.5 between two quotients comes out 8 (its token 4.5× too likely). Such a row (`positive`, with
    |max / t| ≥ SHIFT_ABOVE) is divided as (l - max) / t: in [-inf, 0], never NaN, and l - max of
    two close logits is exact. The softmax and every filter after this one compare or normalise
    within a row, so the shift changes nothing they compute. Rows whose max is not finite (NaN,
    +inf, all -inf: bad rows, token -1 from `sample`) are never shifted: a +inf one would turn into NaN.
    """
    top = logits.amax(dim=-1, keepdim=True)  # (..., 1)
    shifted = positive & top.isfinite() & ((top / t).abs() >= SHIFT_ABOVE)
    if logits.device.type == "cpu" and not bool(shifted.any()):  # a host sync, free on a CPU: one pass
        return logits / t
    # In the quotient's dtype (fp32, or fp64 for a float64 tensor T), so that the division can run in
    # place: one new (B, V) tensor, as plain division makes.
    shift = torch.where(shifted, top, 0).to(torch.result_type(logits, t))
    return (logits - shift).div_(t)  # l - 0 is l: unshifted rows are plain l / T


def apply_top_k(logits: torch.Tensor, top_k: Param) -> torch.Tensor:
    """Keep the k largest logits per row (0 = off). Ties with the k-th value are all kept."""
    check_number("top_k", top_k)
    check_filter_input(logits, "top_k", top_k)
    logits = logits.float()  # fp32 math, as apply_temperature's
    V = logits.size(-1)
    if isinstance(top_k, torch.Tensor):
        k = top_k.to(device=logits.device, dtype=torch.long).reshape(-1, 1)  # (B, 1)
        k = torch.where(k > 0, k.clamp(max=V), V)
        kth = logits.sort(dim=-1, descending=True).values.gather(-1, k - 1)  # (B, 1): k differs per row
    elif top_k > 0:
        kth = torch.topk(logits, min(int(top_k), V), dim=-1).values[..., -1:]  # (..., 1): the k-th largest
    else:
        return logits
    return logits.masked_fill(logits < kth, float("-inf"))


def apply_top_p(logits: torch.Tensor, top_p: Param) -> torch.Tensor:
    """Nucleus: keep the most likely tokens whose probabilities add up to top_p (1 = off).

    transformers' arithmetic: sort ascending, cumulate, drop the tail whose cumulative mass is
    ≤ 1 - top_p; the largest token always stays, so a tiny top_p still leaves one. The cut is a
    logit value, the smallest one kept: every token tied with it stays too, as top-k keeps ties
    (transformers keeps only those its sort happens to put above the cut; the fused kernel keeps
    them all). On a CPU the cut is sought among the 1024 largest logits first, then the 8192
    largest (minigpt/sampling_cpu.py's `top_p_cut_in_head`), skipping the sort.
    """
    check_number("top_p", top_p)
    check_filter_input(logits, "top_p", top_p)
    logits = logits.float()  # fp32 math, as apply_temperature's
    if not isinstance(top_p, torch.Tensor) and top_p >= 1.0:
        return logits
    if logits.dim() != 2:  # (V,) or (B, T, V): the cut's searches below take (B, V), so give them rows
        return apply_top_p(logits.reshape(-1, logits.size(-1)), top_p).reshape(logits.shape)
    p = as_column(top_p, logits)
    in_head = top_p_cut_in_head(logits, p) if logits.device.type == "cpu" else None
    cut = in_head[0] if in_head is not None else top_p_cut_by_sort(logits, p)
    return logits.masked_fill(logits < cut, float("-inf"))


def top_p_cut_by_sort(logits: torch.Tensor, p: float | torch.Tensor) -> torch.Tensor:
    """apply_top_p's cut (B, 1), the smallest logit kept, by transformers' sort; p as `as_column` gives it."""
    sorted_logits = logits.sort(dim=-1).values  # ascending, (B, V)
    cum = sorted_logits.float().softmax(dim=-1).cumsum(dim=-1)  # mass of this token and every smaller one
    n_dropped = ((cum <= 1 - p) & (p < 1)).sum(dim=-1, keepdim=True)  # top_p = 1 drops nothing, even 0-mass tokens
    return sorted_logits.gather(1, n_dropped.clamp(max=logits.size(-1) - 1))  # the largest always stays


def apply_min_p(logits: torch.Tensor, min_p: Param) -> torch.Tensor:
    """Drop tokens less likely than min_p × the top token's probability (0 = off).

    The cut is relative to the top token, not to the mass of the tail: with p_max = 0.6 and
    min_p = 0.05, every token under 0.03 goes, however much probability the tail holds together.
    Top-p 0.9 would have to reach into that tail (hundreds of tokens) until it had 90% of the
    mass: that is where high-temperature sampling turns incoherent, and where min-p stays safe.
    The top token always passes (its ratio is 1 ≥ min_p).
    """
    check_number("min_p", min_p)
    check_filter_input(logits, "min_p", min_p)
    logits = logits.float()  # fp32 math, as apply_temperature's
    if not isinstance(min_p, torch.Tensor) and min_p <= 0.0:
        return logits
    probs = logits.softmax(dim=-1)  # (B, V)
    drop = probs < as_column(min_p, logits) * probs.amax(dim=-1, keepdim=True)
    return logits.masked_fill(drop, float("-inf"))


def apply_typical_p(logits: torch.Tensor, typical_p: Param) -> torch.Tensor:
    """Typical sampling (Meister et al., 2022): keep the tokens whose surprise, -log p, is closest to
    the row's entropy H (the surprise expected on average), until they hold typical_p of the mass
    (1 = off).

    Where top-p ranks tokens by p, typical ranks them by |-log p - H|: in a flat row (high H) the
    most likely token can be *less* typical than its neighbours and be dropped, which is the point:
    it skips the dull, over-predictable continuation as well as the tail. transformers' arithmetic
    (`TypicalLogitsWarper`): sort by that distance, cumulate the probabilities, keep up to and
    including the first token where the mass reaches typical_p. The cut is a distance, the largest
    one kept: tokens tied with it stay too (as transformers keeps them). The entropy is of the row
    as the earlier filters left it (their -inf tokens hold no mass).
    """
    check_number("typical_p", typical_p)
    check_filter_input(logits, "typical_p", typical_p)
    logits = logits.float()  # fp32 math, as apply_temperature's
    if not isinstance(typical_p, torch.Tensor) and typical_p >= 1.0:
        return logits
    mass = as_column(typical_p, logits)
    logp = logits.log_softmax(dim=-1)
    entropy = -(logp * logp.exp()).nansum(dim=-1, keepdim=True)  # nansum: a -inf token's 0 · -inf is NaN, no mass
    distance = (-logp - entropy).abs()  # a filtered (-inf) token's is inf: sorted last, never reached
    sorted_distance, order = distance.sort(dim=-1)
    cum = logits.gather(-1, order).softmax(dim=-1).cumsum(dim=-1)
    n_before = (cum < mass).sum(dim=-1, keepdim=True).clamp(max=logits.size(-1) - 1)  # before the token that reaches it
    cut = sorted_distance.gather(-1, n_before)
    if isinstance(mass, torch.Tensor):  # a row of typical_p = 1 keeps every token, even one of 0 mass
        cut = torch.where(mass < 1, cut, float("inf"))
    return logits.masked_fill(distance > cut, float("-inf"))


def apply_epsilon(logits: torch.Tensor, epsilon_cutoff: Param) -> torch.Tensor:
    """Epsilon sampling (Hewitt et al., 2022, "Truncation sampling as language model desmoothing"):
    drop every token less likely than epsilon_cutoff (0 = off), a fixed floor on p, whatever the
    row. Where top-p's cut moves with the tail's mass and min-p's with the top token, this one
    stays put: 3e-4 drops the tokens a model gives 0.03% or less, its smoothing noise. The top
    token always stays (a row whose every token is under the floor keeps its most likely), as in
    transformers' `EpsilonLogitsWarper`.
    """
    check_number("epsilon_cutoff", epsilon_cutoff)
    check_filter_input(logits, "epsilon_cutoff", epsilon_cutoff)
    logits = logits.float()  # fp32 math, as apply_temperature's
    if not isinstance(epsilon_cutoff, torch.Tensor) and epsilon_cutoff <= 0.0:
        return logits
    probs = logits.softmax(dim=-1)
    return logits.masked_fill(below_floor(logits, probs, as_column(epsilon_cutoff, logits)), float("-inf"))


def apply_eta(logits: torch.Tensor, eta_cutoff: Param) -> torch.Tensor:
    """Eta sampling (the same paper): epsilon's floor, scaled to the row's entropy H:
    min(η, √η · e^(−H)) for eta_cutoff η (0 = off). A confident row (low H) gets a floor up to η;
    a flat one (high H), where many tokens are plausible, a floor far lower, so they stay. The
    entropy is of the row as the earlier filters left it; the top token always stays, as in
    transformers' `EtaLogitsWarper`.
    """
    check_number("eta_cutoff", eta_cutoff)
    check_filter_input(logits, "eta_cutoff", eta_cutoff)
    logits = logits.float()  # fp32 math, as apply_temperature's
    if not isinstance(eta_cutoff, torch.Tensor) and eta_cutoff <= 0.0:
        return logits
    logp = logits.log_softmax(dim=-1)
    probs = logp.exp()
    entropy = -(logp * probs).nansum(dim=-1, keepdim=True)  # nansum: a -inf token's 0 · -inf is NaN, no mass
    eta = torch.as_tensor(as_column(eta_cutoff, logits), dtype=torch.float32, device=logits.device)
    return logits.masked_fill(below_floor(logits, probs, torch.minimum(eta, eta.sqrt() * (-entropy).exp())),
                              float("-inf"))


def below_floor(logits: torch.Tensor, probs: torch.Tensor, floor: float | torch.Tensor) -> torch.Tensor:
    """The tokens epsilon and eta drop: less likely than `floor`, unless tied with the top token."""
    return (probs < floor) & (logits < logits.amax(dim=-1, keepdim=True))


def after_min_p(logits: torch.Tensor, *, typical_p: Param, epsilon_cutoff: Param, eta_cutoff: Param) -> torch.Tensor:
    """The filters after min-p, in transformers' order: typical → epsilon → eta. Each reads the
    probabilities of the tokens kept so far and of no other, so on a CPU they run on the short
    list (`token_picker`), which holds them all."""
    return apply_eta(apply_epsilon(apply_typical_p(logits, typical_p), epsilon_cutoff), eta_cutoff)


def filter_logits(
    logits: torch.Tensor, *, temperature: Param = 1.0, top_k: Param = 0, top_p: Param = 1.0, min_p: Param = 0.0,
    typical_p: Param = 1.0, epsilon_cutoff: Param = 0.0, eta_cutoff: Param = 0.0,
) -> torch.Tensor:
    """logits (B, V) → fp32 logits (B, V) with every filtered-out token at -inf (≥ 1 kept per row).

    Rows with temperature 0 are greedy and come back unfiltered: `draw` takes their argmax."""
    params = dict(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p, typical_p=typical_p,
                  epsilon_cutoff=epsilon_cutoff, eta_cutoff=eta_cutoff)
    check_logits(logits)
    check_sampling_params(**params)
    return filter_unchecked(logits, **per_row(logits.size(0), **params))


def filter_unchecked(logits: torch.Tensor, *, temperature: Param, top_k: Param, top_p: Param, min_p: Param,
                     typical_p: Param, epsilon_cutoff: Param, eta_cutoff: Param) -> torch.Tensor:
    """The seven filters in order, for decode loops that checked their parameters once, before the
    first step. A Python-number parameter is still range-checked by each filter (cheap); a (B,)
    tensor one is not, as its check is a host sync, too dear per token: `filter_logits` and
    `sample` check both."""
    x = logits.float()
    filtered = apply_min_p(apply_top_p(apply_top_k(apply_temperature(x, temperature), top_k), top_p), min_p)
    filtered = after_min_p(filtered, typical_p=typical_p, epsilon_cutoff=epsilon_cutoff, eta_cutoff=eta_cutoff)
    # Greedy rows (temperature 0) come back unfiltered: the filters do not apply to them, and
    # `draw` takes their argmax, the first of tied top tokens.
    t = as_column(temperature, logits)
    if isinstance(t, torch.Tensor):
        return torch.where(t > 0, filtered, x)  # t is (B, 1)
    return filtered if t > 0 else x


# ---- the draw, and sample (filters + draw) ---------------------------------------------------


def exponential_noise(shape: tuple[int, ...], device, generator: torch.Generator | None = None) -> torch.Tensor:
    """E ~ Exp(1) per token, for the exponential race (a function of its own: both of token_picker's
    torch paths draw it, and scripts/bench_sampling_cpu.py times it against exponential_).

    On a CPU, torch's `exponential_` computes one value at a time: 7.3 ms for 8 × 50,257 tokens,
    longer than the rest of the draw. Inverting Exp(1)'s CDF, 1 - e^-E = U, gives the same values
    from the same uniforms in vectorized passes (2.3 ms; scripts/bench_sampling_cpu.py times both):
    E = -log(1 - U), U in [0, 1).
    On a GPU `exponential_` is one fast kernel, where this would be four.
    """
    if torch.device(device).type == "cpu":
        # U in float64, as exponential_ draws it: a float32 U is 0 once in 2^24, and a token with
        # E = 0 wins the race whatever its p (0.3% of unfiltered GPT-2 draws would be near-random).
        u = torch.rand(shape, generator=generator, dtype=torch.float64)
        e = u.neg_().log1p_().neg_().float()  # -log(1 - U), without forming 1 - U, which rounds off a small U
    else:
        e = torch.empty(shape, device=device).exponential_(generator=generator)
    # E is exactly 0 when U is (once in 2^53). For a filtered token p / 0 is NaN, which argmax would
    # pick; clamped, it is 0. (A kept token with so small an E still wins, as with a true Exp(1).)
    return e.clamp_min_(torch.finfo(torch.float32).tiny)


def draw(logits: torch.Tensor, noise: torch.Tensor, temperature: Param) -> torch.Tensor:
    """The exponential race: token = argmax(p / E). Returns (B,) int64.

    If E_i ~ Exp(1), then E_i / p_i ~ Exp(p_i), and the smallest of independent exponentials is
    token i with probability p_i / Σp — exactly a draw from p. `torch.multinomial(p, 1)` runs
    this same race after checking that p is a valid distribution, a check that can wait on the
    host; `sample` marks bad rows on the device instead. Rows with temperature 0 take the argmax.
    """
    logits = logits.float()  # fp32 math, as apply_temperature's
    t = as_column(temperature, logits)
    if not isinstance(t, torch.Tensor) and t == 0:
        return logits.argmax(dim=-1)
    drawn = (logits.softmax(dim=-1) / noise).argmax(dim=-1)  # (B,)
    if isinstance(t, torch.Tensor):
        return torch.where(t.reshape(-1) > 0, drawn, logits.argmax(dim=-1))
    return drawn


def check_seed(seed) -> int:
    """`seed` as an int torch.manual_seed takes: any 64-bit value, -2**63 .. 2**64 - 1 (beyond it
    torch says only "Overflow when unpacking long long"; a float, "expected a long")."""
    seed = as_count("seed", seed)
    if not -2**63 <= seed < 2**64:
        raise ValueError(f"seed must fit in 64 bits (-2**63 .. 2**64 - 1), got {seed}")
    return seed


def sample(
    logits: torch.Tensor,
    *,
    temperature: Param = 1.0,
    top_k: Param = 0,
    top_p: Param = 1.0,
    min_p: Param = 0.0,
    typical_p: Param = 1.0,
    epsilon_cutoff: Param = 0.0,
    eta_cutoff: Param = 0.0,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Filter logits (B, V) and draw one token per row → (B,) int64.

    `seed` (an int) or `generator` makes the draw reproducible; with neither, torch's global RNG
    is used. `backend="triton"` runs the fused kernel (CUDA, or CPU under TRITON_INTERPRET=1),
    which has no typical, epsilon or eta filter: "auto" samples with torch when one is on, "triton" refuses it.
    A row of bad logits (NaN, +inf, or all -inf) has no token to give: it gets -1 from either
    backend, without a host sync (check for it, or run `generate`, which raises).
    """
    params = dict(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p, typical_p=typical_p,
                  epsilon_cutoff=epsilon_cutoff, eta_cutoff=eta_cutoff)
    check_logits(logits)
    check_sampling_params(**params)
    rows = per_row(logits.size(0), **params)
    if seed is not None and generator is not None:
        raise ValueError("pass either seed or generator to sample(), not both")
    if seed is not None:
        generator = torch.Generator(device=logits.device).manual_seed(check_seed(seed))
    backend = resolve_backend(backend, logits.device, sampling=rows)
    pick = token_picker(logits.size(0), logits.device, **rows, generator=generator, backend=backend)
    tokens = pick(logits)
    if backend == "triton":
        return tokens  # the kernel marks bad rows itself
    # The kernel's answer for bad rows, rather than whatever index argmax picks among NaNs.
    # Bad as the filters see them, in fp32: an fp64 logit past fp32's range is inf there.
    return torch.where(torch.isfinite(logits.float().amax(dim=-1)), tokens, -1)


def token_picker(B: int, device: torch.device | str, *, temperature: Param, top_k: Param, top_p: Param, min_p: Param,
                 typical_p: Param = 1.0, epsilon_cutoff: Param = 0.0, eta_cutoff: Param = 0.0,
                 generator: torch.Generator | None = None,
                 backend: str = "torch") -> Callable[[torch.Tensor], torch.Tensor]:
    """The draw with its parameters prepared once: a function logits (B, V) → tokens (B,) that
    `sample` calls once and the decode loop (minigpt/generation.py) every step, without checks
    (run them first: `check_sampling_params`) and without waiting on the host.

    backend "torch": `filter_unchecked` then `draw`, the noise from `generator`'s stream; on a CPU
    the same on a short list (`pick_on_cpu`). backend "triton": the fused kernel (`fused_picker`).
    A row of bad logits gets -1 from the kernel, an arbitrary token from torch (`sample` marks it -1)."""
    if backend == "triton":
        check_kernel_runs(dict(typical_p=typical_p, epsilon_cutoff=epsilon_cutoff, eta_cutoff=eta_cutoff))
        return fused_picker(B, device, generator, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p)
    if not isinstance(temperature, torch.Tensor) and temperature == 0:
        return lambda logits: logits.argmax(dim=-1)  # greedy: the first argmax, filters skipped (as filter_unchecked does per row)
    filters = dict(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p, typical_p=typical_p,
                   epsilon_cutoff=epsilon_cutoff, eta_cutoff=eta_cutoff)

    def pick(logits: torch.Tensor) -> torch.Tensor:
        if logits.device.type == "cpu":
            return pick_on_cpu(logits, generator, **filters)
        filtered = filter_unchecked(logits, **filters)
        return draw(filtered, exponential_noise(filtered.shape, logits.device, generator), temperature)

    return pick


def pick_on_cpu(logits: torch.Tensor, generator: torch.Generator | None, *, temperature: Param, top_k: Param,
                top_p: Param, min_p: Param, typical_p: Param, epsilon_cutoff: Param, eta_cutoff: Param) -> torch.Tensor:
    """`token_picker`'s draw on a CPU: `top_k_top_p_on_cpu`, then min-p and the draw on what it gives:
    the short list top-k or top-p gathered, or else the one min-p may make (`min_p_shortlist`), or
    the whole filtered row (then the filters after min-p, which read only the kept tokens: a list
    holds them all). The same distribution as the whole row's, up to rounding at the top-p and
    min-p thresholds: the list is too short for top_p_cut_in_head, so its top-p cut is the sort's
    float32 sum (as on a GPU) where the whole row on a CPU takes the head's float64 sums, and min-p's
    softmax sums the list alone. A token within ~1e-7 of the mass from a threshold can fall on either
    side. The noise has one value per listed token."""
    values, ids = top_k_top_p_on_cpu(apply_temperature(logits.float(), temperature), top_k, top_p)
    short = min_p_shortlist(values, min_p) if ids is None else None  # no list yet: min-p may make one
    if short is not None:
        values, ids = short
    filtered = after_min_p(apply_min_p(values, min_p), typical_p=typical_p, epsilon_cutoff=epsilon_cutoff,
                           eta_cutoff=eta_cutoff)
    # The race alone (temperature 1.0 here only skips draw's greedy rows): greedy rows take the
    # whole row's first top token below, which the list's argmax, or the filtered row's, need not be.
    drawn = draw(filtered, exponential_noise(filtered.shape, logits.device, generator), 1.0)
    tokens = drawn if ids is None else ids.gather(1, drawn.unsqueeze(1)).squeeze(1)
    t = as_column(temperature, logits)
    return torch.where(t.reshape(-1) > 0, tokens, logits.argmax(dim=-1)) if isinstance(t, torch.Tensor) else tokens


def fused_picker(B: int, device: torch.device | str, generator: torch.Generator | None, *, temperature: Param,
                 top_k: Param, top_p: Param, min_p: Param) -> Callable[[torch.Tensor], torch.Tensor]:
    """`token_picker`'s backend "triton": the fused kernel (minigpt/kernels/sampling.py), whose
    counter-based Philox stream is keyed by an int64 drawn from `generator` (so a seed fixes every
    draw) and moves one offset per call. The kernel has no filter after min-p: `resolve_backend`
    picks torch when one is on."""
    from minigpt.kernels.sampling import fused_sample  # imported here: triton is optional

    kernel_args = triton_params(B, device, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p)
    kernel_args["seed"] = kernel_seed(generator, device)
    kernel_args["offset"] = torch.zeros(1, dtype=torch.long, device=device)

    def fused_pick(logits: torch.Tensor) -> torch.Tensor:
        # What the torch path takes, the kernel reads too: float64 as float32 (the kernel reads
        # 32 and 16 bits), a view strided along the vocabulary (a transpose) copied contiguous.
        if logits.dtype == torch.float64:
            logits = logits.float()
        if logits.size(-1) > 1 and logits.stride(-1) != 1:
            logits = logits.contiguous()
        tokens = fused_sample(logits, **kernel_args)
        kernel_args["offset"] += 1  # the next call: a fresh stream
        return tokens

    return fused_pick


# ---- on a CPU: top-k and top-p on the short list (minigpt/sampling_cpu.py) ----------------


def top_k_top_p_on_cpu(logits: torch.Tensor, top_k: Param, top_p: Param) -> tuple[torch.Tensor, torch.Tensor | None]:
    """apply_top_k then apply_top_p, on a short list when one holds every token they keep: then
    (values, ids), each (B, K), the K largest logits descending with the dropped ones at -inf, and
    their vocabulary ids; else on the whole row: (filtered logits (B, V), None). `logits` are after
    the temperature, as the filters see them."""
    if isinstance(top_k, torch.Tensor) or top_k > 0:
        short = top_k_shortlist(logits, top_k)
        if short is None:
            return apply_top_p(apply_top_k(logits, top_k), top_p), None
        return apply_top_p(short[0], top_p), short[1]  # the list is no longer than the head: the sort, on K logits
    if isinstance(top_p, torch.Tensor) or top_p < 1:
        p = as_column(top_p, logits)
        in_head = top_p_cut_in_head(logits, p)
        if in_head is None:  # a nucleus past the head, or a short row (apply_top_p would try the head again)
            return logits.masked_fill(logits < top_p_cut_by_sort(logits, p), float("-inf")), None
        cut, head, ids = in_head
        if not bool(((head[:, -1:] < cut) | (head[:, -1:] == float("-inf"))).all()):
            return logits.masked_fill(logits < cut, float("-inf")), None  # the cut's tie group goes on past the head
        return head.masked_fill(head < cut, float("-inf")), ids
    return logits, None


# ---- checks, and the backend choice ----------------------------------------------------------
# The entry points above (filter_logits, sample) run the checks on every call; a decode loop runs
# them once, before its first step (minigpt/generate_args.py), as a (B,) tensor's check is a host sync.

# Each filter parameter's allowed values: (test, the range as errors print it), checked in this order.
# One table for both samplers: check_sampling_params reads it, and so does the fused kernel when it
# explains a row it refused (minigpt/kernels/sampling.py's `_explain_invalid`).
PARAM_RANGES = {
    # inf is no temperature: finite logits / inf are all 0, and a masked token's -inf / inf is NaN.
    "temperature": (lambda t: (t >= 0) & (t < math.inf), "[0, inf) (0 means greedy)"),
    "top_k": (lambda k: (k >= 0) & (k < math.inf), "[0, inf) (0 means off)"),
    "top_p": (lambda p: (p > 0) & (p <= 1), "(0, 1] (1 means off)"),
    "min_p": (lambda m: (m >= 0) & (m <= 1), "[0, 1] (0 means off)"),
    "typical_p": (lambda p: (p > 0) & (p <= 1), "(0, 1] (1 means off)"),
    "epsilon_cutoff": (lambda e: (e >= 0) & (e < 1), "[0, 1) (0 means off)"),
    "eta_cutoff": (lambda e: (e >= 0) & (e < 1), "[0, 1) (0 means off)"),
}
# Each filter parameter's "off" value: at it, a parameter changes no draw (the penalties' are
# minigpt/penalties.py's PENALTIES_OFF).
SAMPLING_DEFAULTS = {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0, "typical_p": 1.0, "epsilon_cutoff": 0.0,
                     "eta_cutoff": 0.0}


def check_number(name: str, value: Param) -> None:
    """A filter's parameter given as a Python number, in its range (`PARAM_RANGES`): each public
    filter checks it, as min_p=2 would drop every token and top_p=1.5 or NaN change nothing. A
    tensor is left to `filter_logits` and `sample`: its check is a host sync, too dear per step."""
    if not isinstance(value, torch.Tensor):
        if name == "top_k":
            check_whole(value)
        check_param(name, value, *PARAM_RANGES[name])


def check_filter_input(logits: torch.Tensor, name: str, value: Param) -> None:
    """What each public filter takes: logits with a vocabulary, the last dim, whatever comes before
    it ((V,), (B, V), a model's (B, T, V)); a number `value` then applies to every row alike. A
    tensor `value` holds one per row of (B, V) logits (`as_column` makes it (B, 1)), so it needs
    those: over (B, T, V) a (B, 1) would line up with T, not B, and filter the wrong rows."""
    if logits.dim() == 0:
        raise ValueError("logits must have a vocabulary dim (the last), got a 0-d tensor: "
                         "pass (V,), (B, V) or (B, T, V) logits")
    if isinstance(value, torch.Tensor) and logits.dim() != 2:
        raise ValueError(f"{name} as a tensor holds one value per row of (B, V) logits, got logits of shape "
                         f"{tuple(logits.shape)}: pass a number, or a model's last position, logits[:, -1]")


def check_sampling_params(temperature: Param = 1.0, top_k: Param = 0, top_p: Param = 1.0, min_p: Param = 0.0,
                          typical_p: Param = 1.0, epsilon_cutoff: Param = 0.0, eta_cutoff: Param = 0.0) -> None:
    """Raise ValueError for an out-of-range sampling parameter, naming it and its allowed range."""
    values = dict(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p, typical_p=typical_p,
                  epsilon_cutoff=epsilon_cutoff, eta_cutoff=eta_cutoff)
    check_whole(top_k)  # first: its bool is "an integer", as every count's
    for name, (ok, allowed) in PARAM_RANGES.items():
        check_param(name, values[name], ok, allowed)


def check_whole(top_k: Param) -> None:
    """top_k counts tokens, so it must be whole: 2.0 will do, 2.5 will not, nor True (1 to Python)."""
    if is_bool(top_k):  # a TypeError, as every integer argument's bool (minigpt/checks.py)
        raise TypeError(f"top_k must be an integer, got the bool {top_k}")
    if isinstance(top_k, numbers.Real) and math.isfinite(top_k) and not float(top_k).is_integer():  # (NaN: the range's)
        raise ValueError(f"top_k must be an integer, got {top_k}")
    if isinstance(top_k, torch.Tensor) and top_k.is_floating_point() and not torch.equal(top_k, top_k.round()):
        raise ValueError(f"top_k must be an integer, got {top_k}")


def check_backend(backend: str, name: str = "backend") -> None:
    if backend not in ("auto", "torch", "triton"):
        raise ValueError(f"{name} must be 'auto', 'torch' or 'triton', got {backend!r}")


def resolve_backend(backend: str, device: torch.device, name: str = "backend", sampling: dict | None = None) -> str:
    """"auto" → "triton" on CUDA when the fused kernel imports and runs every filter `sampling`
    asks for (`KERNEL_FILTERS`), else "torch"; validate explicit picks. `name` is the argument's
    name in errors (`generate` calls it `sampler`)."""
    check_backend(backend, name)
    kernel_there = importlib.util.find_spec("triton") is not None  # the kernel's file ships; triton is optional
    if backend == "auto":
        return "triton" if device.type == "cuda" and kernel_there and not torch_only(sampling or {}) else "torch"
    if backend == "triton":
        check_kernel_runs(sampling or {}, name)
        if not kernel_there:
            raise ValueError(f"{name}='triton' needs the `triton` package: pip install triton (in a checkout: pip install -e '.[gpu]')")
        # Triton's own spellings of "on" (its getenv_bool): "true" turned the interpreter on and was refused here.
        if device.type != "cuda" and os.environ.get("TRITON_INTERPRET", "").lower() not in ("1", "true", "on", "yes"):
            raise ValueError(f"{name}='triton' runs on CUDA tensors, got {device.type}; "
                             "set TRITON_INTERPRET=1 (before triton is imported) to run the kernel in Triton's CPU interpreter")
    return backend


# The filters the fused kernel runs (minigpt/kernels/sampling.py); any other samples with torch.
KERNEL_FILTERS = ("temperature", "top_k", "top_p", "min_p")


def torch_only(sampling: dict) -> list[str]:
    """The filters in `sampling` (parameters by name) that are on and that the fused kernel does not
    run. On: not at its off value, or a tensor (values per row are no accident)."""
    return [name for name, value in sampling.items() if name not in KERNEL_FILTERS and is_on(value, SAMPLING_DEFAULTS[name])]


def check_kernel_runs(sampling: dict, name: str = "backend") -> None:
    """The fused kernel would skip a filter it does not run without a word, so asking it for one
    is refused (backend "auto" samples it with torch)."""
    if beyond := torch_only(sampling):
        given = ", ".join(shown(n, sampling[n]) for n in beyond)
        raise ValueError(f"{name}='triton' has no {' or '.join(beyond)} filter ({given}): use {name}='torch' or "
                         "'auto', which samples with torch")


def triton_params(B: int, device, *, temperature: Param, top_k: Param, top_p: Param, min_p: Param) -> dict:
    """The fused kernel takes every parameter as a (B,) tensor (so one CUDA graph serves all values)."""
    # The kernel's k is int32; any k ≥ V keeps every token, so a larger one is capped, not wrapped around.
    int32_max = torch.iinfo(torch.int32).max
    top_k = top_k.to(torch.long).clamp(max=int32_max) if isinstance(top_k, torch.Tensor) else min(int(top_k), int32_max)

    # Its floats are float32: a legal temperature of 1e-50 would round to 0 (greedy), 1e39 to inf
    # (refused), a top_p of 1e-46 to 0. Positive values are brought into float32's range first, as
    # the torch path would treat them: the temperature floor, the top token alone, a flat row.
    def as_float32(value: Param, smallest: float) -> torch.Tensor:
        t = as_tensor(value, B, device, torch.float64)
        return torch.where(t > 0, t.clamp(smallest, torch.finfo(torch.float32).max), t).float()

    return dict(temperature=as_float32(temperature, MIN_TEMPERATURE), top_k=as_tensor(top_k, B, device, torch.int32),
                top_p=as_float32(top_p, torch.finfo(torch.float32).tiny), min_p=as_tensor(min_p, B, device))


def kernel_seed(generator: torch.Generator | None, device: torch.device | str) -> torch.Tensor:
    """The fused kernel keys its Philox stream with an int64 tensor (a tensor, so a CUDA graph can
    hold it); drawn from `generator`, so a seed still fixes every token. (1,) int64 on `device`."""
    # Any non-negative int64 will do; 2**62, randint's exclusive bound, stays well inside int64.
    return torch.randint(0, 2**62, (1,), generator=generator, device=device)
