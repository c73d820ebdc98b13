"""The fused sampling kernel (minigpt/kernels/sampling.py) against transformers' warpers.

Oracle: TemperatureLogitsWarper → TopKLogitsWarper → TopPLogitsWarper → MinPLogitsWarper, row by
row. The kernel keeps whole tie groups at the top-p boundary where transformers keeps part of one
(documented in the kernel), so "kept" below means transformers' kept set plus the tokens tied
with its smallest member.

Where it runs: on CUDA when there is a GPU, and always on CPU under Triton's interpreter. The
interpreter has to be switched on (TRITON_INTERPRET=1) before triton is first imported, and this
process may not be able to (another test may have imported triton; a GPU run needs the compiler),
so unless it already runs interpreted, this file re-runs itself in a subprocess with
TRITON_INTERPRET=1 for the CPU cases: they run in every environment, and are never skipped.
The interpreter is slow (~0.05 s a row, a split row several times that), hence small vocabularies and a few hundred draws on CPU.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
DEVICES = ["cpu"] if INTERPRETED else (["cuda"] if torch.cuda.is_available() else [])
DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def on_devices(test):
    """Run `test` once per device this process can run the kernel on (none: it isn't collected)."""
    test = pytest.mark.parametrize("device", DEVICES)(test)
    test.__test__ = bool(DEVICES)
    return test


if not INTERPRETED:
    def test_kernel_on_cpu_under_triton_interpreter():
        if importlib.util.find_spec("triton") is None:
            if sys.platform == "linux":  # CI: `pip install -e .[test]` brings triton; never skip there
                pytest.fail("triton is not installed: pip install -e '.[test]' (or pip install triton)")
            pytest.skip(f"triton has no wheels for {sys.platform}")
        env = {**os.environ, "TRITON_INTERPRET": "1"}
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__]
        # 2-3 minutes on 2 idle cores; the limit leaves room for a busy CI machine (an audit saw the
        # same run take 20+ minutes with the cores shared ten ways), and a run past it shows how far it got.
        try:
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
        except subprocess.TimeoutExpired as e:
            out = e.stdout or b""  # bytes, or text: Python's docs and run() disagree on which
            out = out.decode(errors="replace") if isinstance(out, bytes) else out
            pytest.fail(f"the interpreted kernel tests ran past {e.timeout} s; their output so far:\n{out[-4000:]}")
        print(done.stdout[-4000:], done.stderr[-2000:])
        assert done.returncode == 0, "the CPU (interpreted) kernel tests failed; output above"
        assert " passed" in done.stdout and "skipped" not in done.stdout


# ---- the oracle ---------------------------------------------------------------------------------


def reference_probs(row: torch.Tensor, temperature: float, top_k: int, top_p: float, min_p: float) -> torch.Tensor:
    """transformers' warpers on one fp32 row (V,) → the distribution the draw must follow (V,)."""
    from transformers.generation.logits_process import (MinPLogitsWarper, TemperatureLogitsWarper,
                                                        TopKLogitsWarper, TopPLogitsWarper)

    scores = TemperatureLogitsWarper(temperature)(None, row[None].clone())
    if top_k > 0:
        scores = TopKLogitsWarper(top_k)(None, scores)
    if top_p < 1:
        scores = TopPLogitsWarper(top_p)(None, scores)
    if min_p > 0:
        scores = MinPLogitsWarper(min_p)(None, scores)
    return scores[0].softmax(-1)


def kept_with_ties(row: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """transformers' kept set, completed with the tokens tied with its smallest logit: (V,) bool."""
    return row >= row[probs > 0].min()


def params(rows: list[tuple[float, int, float, float]], device: str) -> dict[str, torch.Tensor]:
    t, k, p, m = zip(*rows)
    return dict(temperature=torch.tensor(t, dtype=torch.float32, device=device),
                top_k=torch.tensor(k, dtype=torch.int32, device=device),
                top_p=torch.tensor(p, dtype=torch.float32, device=device),
                min_p=torch.tensor(m, dtype=torch.float32, device=device))


def seed_offset(seed: int, offset: int, device: str) -> dict[str, torch.Tensor]:
    return dict(seed=torch.tensor([seed], device=device), offset=torch.tensor([offset], device=device))


def random_logits(B: int, V: int, *, seed: int, ties: bool = False) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, V, generator=g) * 2.5
    return (x * 2).round() / 2 if ties else x  # steps of 0.5: many exact ties, also at the top


def use_stratified_uniforms(monkeypatch) -> None:
    """Interpreter only: the kernels draw row r with the uniform (r + 1/2) / seed instead of a
    random one, so n copies of a row with seed=n draw from n evenly spaced uniforms: the draw is
    inverse-CDF sampling, so each token comes round(n · p) times, ±1, and a token of mass p ≥ 1/n
    at least once. An exact check, no statistical slack, with few rows (the interpreter is slow).
    The interpreter looks `row_uniform` up when the kernel runs, so it can be swapped here; a GPU
    compiles it in."""
    import triton
    import triton.language as tl

    from minigpt.kernels import sampling, sampling_split

    @triton.jit
    def stratified_uniform(seed_ptr, offset_ptr, row):  # seed = n: row r's uniform is (r + 1/2) / n
        return (row.to(tl.float32) + 0.5) / tl.load(seed_ptr).to(tl.float32)

    monkeypatch.setattr(sampling, "row_uniform", stratified_uniform)
    monkeypatch.setattr(sampling_split, "row_uniform", stratified_uniform)


# (temperature, top_k, top_p, min_p) per row: every filter alone, mixed, and the edge cases.
ROWS = [
    (1.0, 0, 1.0, 0.0),      # temperature only: the whole row
    (0.7, 10, 1.0, 0.0),     # top-k
    (1.0, 0, 0.8, 0.0),      # top-p
    (1.3, 0, 1.0, 0.2),      # min-p
    (0.8, 20, 0.9, 0.05),    # all three
    (1.0, 10_000, 1.0, 0.0),  # top_k > V: keeps everything
    (1.0, 0, 1e-6, 0.0),     # tiny top_p: only the top token (and its ties)
    (0.0, 5, 0.5, 0.1),      # temperature 0: argmax, filters ignored
    (2.0, 3, 0.99, 0.0),     # hot but narrow
    (0.5, 0, 0.95, 0.5),     # top-p then a strict min-p
]


# ---- tests ----------------------------------------------------------------------------------------


@on_devices
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("splits", [1, 4], ids=["one-program", "split"])
def test_tokens_lie_in_the_kept_set_and_greedy_rows_take_the_argmax(device: str, dtype: torch.dtype, ties: bool,
                                                                    splits: int):
    from minigpt.kernels.sampling import fused_sample

    V = 300 if device == "cpu" else 50257
    logits = random_logits(len(ROWS), V, seed=1, ties=ties).to(dtype)
    row32 = logits.float()
    p = params(ROWS, device)
    for seed in range((2 if splits == 1 else 1) if device == "cpu" else 20):  # the interpreter is slow
        tokens = fused_sample(logits.to(device), **p, **seed_offset(seed, 0, device), splits=splits).cpu()
        for r, (t, k, top_p, min_p) in enumerate(ROWS):
            if t == 0:
                assert tokens[r] == row32[r].argmax(), "greedy rows take the first argmax"
                continue
            kept = kept_with_ties(row32[r], reference_probs(row32[r], t, k, top_p, min_p))
            assert kept[tokens[r]], f"row {r} {ROWS[r]}: token {int(tokens[r])} is filtered out"


@st.composite
def sampling_cases(draw):
    """A tiny batch: any vocabulary size from 1, ties or not, any dtype, any in-range parameters."""
    V = draw(st.integers(1, 80))
    B = draw(st.integers(1, 3))
    rows = [(draw(st.sampled_from([0.0, 0.3, 1.0, 2.5])), draw(st.integers(0, V + 3)),
             draw(st.sampled_from([1e-9, 0.3, 0.9, 1.0])), draw(st.sampled_from([0.0, 0.1, 1.0]))) for _ in range(B)]
    logits = random_logits(B, V, seed=draw(st.integers(0, 2**16)), ties=draw(st.booleans()))
    # splits: one program per row, or a row split (each slice ≥ 1 logit); block 16: a 32-entry
    # list, which the candidates often overflow (the searches then stream the row).
    splits = min(draw(st.sampled_from([1, 2, 4])), 1 << (V.bit_length() - 1))
    knobs = dict(splits=splits, block_size=draw(st.sampled_from([None, 16])))
    return logits.to(draw(st.sampled_from(DTYPES))), rows, draw(st.integers(0, 2**40)), knobs


@on_devices
# On a GPU each new shape/dtype/knob mix compiles the kernels anew (~1 s): fewer examples there.
@settings(max_examples=40 if INTERPRETED else 20, deadline=None, derandomize=True)
@given(case=sampling_cases())
def test_property_any_parameters_draw_a_kept_token(device: str, case):
    from minigpt.kernels.sampling import fused_sample

    logits, rows, seed, knobs = case
    tokens = fused_sample(logits.to(device), **params(rows, device), **seed_offset(seed, seed // 3, device),
                          **knobs).cpu()
    row32 = logits.float()
    for r, (t, k, top_p, min_p) in enumerate(rows):
        if t == 0:
            assert tokens[r] == row32[r].argmax()
        else:
            assert kept_with_ties(row32[r], reference_probs(row32[r], t, k, top_p, min_p))[tokens[r]], rows[r]


@on_devices
@pytest.mark.parametrize("splits", [1, 4], ids=["one-program", "split"])
def test_full_row_path_with_many_chunks(device: str, splits: int):
    # A block much smaller than the row: the searches stream the row in chunks before the
    # candidates fit the scratch list, and rows without filters draw from the whole row. Split:
    # the histograms leave brackets too full for the list, and the finish program streams too.
    from minigpt.kernels.sampling import fused_sample

    V = 1000
    logits = random_logits(len(ROWS) + 1, V, seed=2, ties=True) * 0.3  # flat: thousands of candidates
    rows = ROWS + [(1.0, 500, 0.95, 0.0)]  # top-k keeps half the row: far more than the list holds
    p = params(rows, device)
    for seed in range(1 if device == "cpu" else 2):
        tokens = fused_sample(logits.to(device), **p, **seed_offset(seed, 7, device), block_size=32,
                              splits=splits).cpu()
        for r, (t, k, top_p, min_p) in enumerate(rows):
            if t == 0:
                assert tokens[r] == logits[r].argmax()
            else:
                assert kept_with_ties(logits[r], reference_probs(logits[r], t, k, top_p, min_p))[tokens[r]]


def chi_square_p_value(counts: torch.Tensor, probs: torch.Tensor) -> float:
    """P(χ² ≥ observed) for counts against probs; tokens expecting < 5 draws are pooled."""
    n = counts.sum()
    expected = probs.double() * n
    big = expected >= 5
    obs = torch.cat([counts[big].double(), counts[~big].double().sum()[None]])
    exp = torch.cat([expected[big], expected[~big].sum()[None]])
    if exp[-1] < 5:  # fold a too-small pool into the smallest cell
        obs, exp = obs[:-1].clone(), exp[:-1].clone()
        obs[exp.argmin()] += counts[~big].sum()
        exp[exp.argmin()] += expected[~big].sum()
    stat = ((obs - exp) ** 2 / exp).sum()
    dof = len(exp) - 1
    return float(torch.special.gammaincc(torch.tensor(dof / 2.0), stat / 2))


# (row, split, flat): the split cases cover each way the split path draws. On a GPU each draws
# 200k times. The interpreter is slow (~0.05 s a row, a split row several times that), so on CPU a few hundred
# draws check that Philox's uniforms give the reference distribution, on one program's two draws
# and one split draw; the flat rows' ways to draw (a bracket listed) are checked exactly on CPU by
# test_stratified_uniforms_draw_each_token_its_exact_share, and the split top-k one's kept set by
# the tests above.
DRAWS = {
    "filtered": ((0.7, 12, 0.9, 0.02), False, False),
    "whole-row": ((1.5, 0, 1.0, 0.0), False, False),
    "top-p-bracket": ((1.0, 0, 0.9, 0.0), False, True),  # a flat row: the bracket listed, the tokens
    # above it drawn by lane from the masses the search measured; then with a min-p that cuts above
    # the bracket, so those masses are too large and the draw reads the row instead
    "top-p-bracket-min-p": ((1.0, 0, 0.9, 0.8), False, True),
    "split-filtered": ((0.7, 12, 0.9, 0.02), True, False),  # top-k's candidates all listed
    "split-min-p": ((1.5, 0, 1.0, 0.05), True, False),  # no search: a slice by min-p's mass, then a token
    "split-top-p-bracket": ((1.0, 0, 0.9, 0.0), True, True),  # a flat row: top-p's bracket listed, the
}                                                                 # tokens above it drawn by slice

@on_devices
@pytest.mark.parametrize("name", [n for n in DRAWS if not INTERPRETED or n in ("filtered", "whole-row", "split-min-p")])
def test_draws_follow_the_reference_distribution(device: str, name: str):
    # One row repeated N times: Philox counts on the row index, so each copy is an independent draw.
    from minigpt.kernels.sampling import fused_sample

    row, split, flat = DRAWS[name]
    V = 64 if device == "cpu" else 50257
    splits = (2 if device == "cpu" else 32) if split else 1
    logits = random_logits(1, V, seed=3)
    if device != "cpu":  # a peaked row, so that expected counts stay ≥ 5 on a large vocabulary; or a flat one
        logits = logits * (0.03 if flat else 2)
    probs = reference_probs(logits[0], *row)
    # On CPU, about 8 draws per kept token, at most 200 or 400.
    kept = int((probs > 0).sum())
    N = min(200 if split else 400, max(100, 8 * kept)) if device == "cpu" else 200_000
    # expand after the move: a view with row stride 0 (a copy of N rows would be 40 GB on a GPU)
    tokens = fused_sample(logits.to(device).expand(N, V), **params([row] * N, device),
                          **seed_offset(1234, 0, device), splits=splits).cpu()
    counts = torch.bincount(tokens, minlength=V)
    assert counts[probs == 0].sum() == 0, "drew a token the filters remove"
    p_value = chi_square_p_value(counts, probs)
    print(f"{row}: {int((probs > 0).sum())} tokens kept, {N} draws, chi-square p = {p_value:.3f}")
    assert p_value > 1e-3


if importlib.util.find_spec("triton") is not None:  # (a kernel's globals must be module globals)
    import triton
    import triton.language as tl

    from minigpt.kernels.draw import first_past

    @triton.jit
    def _two_draws(w1_ptr, w2_ptr, goal, out_ptr, left_ptr):
        i, left = first_past(tl.load(w1_ptr + tl.arange(0, 2)), goal, 2)
        j, _ = first_past(tl.load(w2_ptr + tl.arange(0, 4)), left, 4)
        tl.store(out_ptr, i)
        tl.store(out_ptr + 1, j)
        tl.store(left_ptr, left)

    @triton.jit
    def _one_draw(w_ptr, goal, out_ptr):
        i, _left = first_past(tl.load(w_ptr + tl.arange(0, 4)), goal, 4)
        tl.store(out_ptr, i)


@on_devices
def test_the_inverse_cdf_never_picks_a_zero_weight(device: str):
    """first_past (minigpt/kernels/draw.py), the inverse-CDF pick of every draw (twice when it picks
    a lane or slice, then a token in it), must pick a positive weight whatever the rounding.
    Weights [7e-8, 1] with goal 1e-7: 1 + 7e-8 rounds up to 1 + 2^-23, so "the goal left after
    the weights before" comes out as 1e-7 - 2^-23 < 0, and the next draw, over [0, 0, 5, 0],
    would pass that goal at index 0, a weight of 0."""
    out, left = torch.empty(2, dtype=torch.int32, device=device), torch.empty(1, device=device)
    w1, w2 = torch.tensor([7e-8, 1.0], device=device), torch.tensor([0.0, 0.0, 5.0, 0.0], device=device)
    _two_draws[(1,)](w1, w2, 1e-7, out, left)
    assert out.tolist() == [1, 2] and left.item() >= 0
    # first_past's own guard, which the clamp of `left` above keeps from being reached: a goal
    # below 0 (a GPU's tree cumsum can dip by an ulp) still picks a positive weight; and a goal
    # equal to a running sum goes past it, to the next token (a kernel mutation audit).
    for weights, goal, index in (([0.0, 0.0, 5.0, 0.0], -1e-7, 2), ([1.0, 1.0, 1.0, 1.0], 1.0, 1)):
        _one_draw[(1,)](torch.tensor(weights, device=device), goal, out)
        assert out[0].item() == index, (weights, goal)


@on_devices
def test_greedy_takes_the_first_of_tied_maxima(device: str):
    """Temperature 0 is the argmax, the first of tied maxima as torch.argmax and transformers take:
    3 and 19 share a lane (block 16), 40 lies in another slice (a kernel mutation audit: a later
    tie won within a lane, or across slices, and T = 0 run as a tiny T drew among the ties)."""
    from minigpt.kernels.sampling import fused_sample

    x = torch.zeros(8, 64)
    x[:, 3] = x[:, 19] = x[:, 40] = 5.0
    for splits in (1, 2):
        tokens = fused_sample(x.to(device), **params([(0.0, 0, 1.0, 0.0)] * 8, device), **seed_offset(0, 0, device),
                              block_size=16, splits=splits)
        assert tokens.tolist() == [3] * 8, splits


@on_devices
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # the interpreter's NumPy: (l - m) · c2 → -inf, as meant
def test_a_temperature_below_1e_6_weighs_tokens_exactly(device: str):
    """The kernel took c2 = log2(e) / max(T, 1e-6): logits 5 and 5 + 2 ulp drew the lower 25% of
    the time at T = 1e-7, where softmax gives it 0.0072%, and 28% at T = 5e-7, where it gives 13%.
    Only c2's finiteness needs a floor (fp32's smallest normal): at T = 1e-30, and at a subnormal
    1e-44 handed to the kernel directly, 64 logits 1 ulp apart give their max, one program or split."""
    from minigpt.kernels.sampling import fused_sample

    five = torch.tensor(5.0)
    up = torch.nextafter(five, torch.tensor(9.0))
    row = torch.stack([five, torch.nextafter(up, torch.tensor(9.0))])  # 9.5e-7 apart
    N = 200 if device == "cpu" else 100_000  # draws per temperature
    temperatures = (1e-7, 5e-7)
    rows = [(t, 0, 1.0, 0.0) for t in temperatures for _ in range(N)]
    tokens = fused_sample(row.expand(2 * N, 2).to(device), **params(rows, device), **seed_offset(0, 0, device)).cpu()
    for t, drawn in zip(temperatures, tokens.view(2, N)):
        p = (row.double() / t).softmax(-1)[0].item()  # the lower token's
        count, se = int((drawn == 0).sum()), (N * p * (1 - p)) ** 0.5
        print(f"T = {t}: the lower token {count} times in {N}, expected {N * p:.2f} ± {se:.2f}")
        assert abs(count - N * p) <= 4 * se, (t, count, N * p)

    ulp = torch.finfo(torch.float32).eps * 4  # fp32's spacing in [4, 8): 2^-21
    steps = five + ulp * torch.randperm(64, generator=torch.Generator().manual_seed(0))  # 5 + j ulp, shuffled
    tiny = [(t, k, top_p, 0.0) for t in (1e-30, 1e-44) for k, top_p in ((0, 1.0), (3, 0.9))]
    logits = steps.expand(len(tiny), 64).to(device)
    for splits in (1, 2):
        drawn = fused_sample(logits, **params(tiny, device), **seed_offset(0, 0, device), splits=splits).tolist()
        assert drawn == [int(steps.argmax())] * len(tiny), (splits, drawn)


@on_devices
def test_offsets_2_to_the_31_apart_draw_from_other_streams(device: str):
    """The offset is 64 bits, all of them Philox's counter: a stream 2^31 steps on is another."""
    from minigpt.kernels.sampling import fused_sample

    x = torch.zeros(16, 128, device=device)
    p = params([(1.0, 0, 1.0, 0.0)] * 16, device)
    a = fused_sample(x, **p, **seed_offset(0, 5, device))
    b = fused_sample(x, **p, **seed_offset(0, 5 + 2**31, device))
    assert not torch.equal(a, b)


@on_devices
@pytest.mark.parametrize("splits", [1, 4], ids=["one-program", "split"])
def test_the_search_separates_neighbouring_floats_far_below_the_bracket(device: str, splits: int):
    """A pass cuts the bracket 2- to 8-fold in *value*, not in representable floats. The two top
    logits here are neighbouring floats just above fp32's smallest normal (2^-126, 2^-149 apart)
    and the bracket starts ~80 wide: ~155 halvings, over 50 passes. A search stopped early
    (MAX_PASSES was 48) keeps both, so top_k=1 (or a tiny top_p) drew the smaller one too."""
    from minigpt.kernels.sampling import fused_sample

    tiny = torch.finfo(torch.float32).tiny
    row = torch.full((16,), -80.0)
    row[3], row[9] = tiny, torch.nextafter(torch.tensor(tiny), torch.tensor(1.0))
    B = 2 if device == "cpu" else 16
    logits = row.expand(B, -1).contiguous().to(device)
    for k, top_p in ((1, 1.0), (0, 1e-6)):
        p = params([(1.0, k, top_p, 0.0)] * B, device)
        tokens = fused_sample(logits, **p, **seed_offset(0, 0, device), splits=splits).cpu()
        assert tokens.tolist() == [9] * B, f"top_k={k}, top_p={top_p}: {tokens.tolist()}"


if INTERPRETED:
    # (setting, reads by one program, reads by a row split 32 ways: each slice once per launch
    # that streams it). One program: the max, the search passes over the row, the copy (its
    # counts come from the last search pass), and a draw that reads the row only when the search
    # listed nothing, or min-p cuts above the listed bracket. Split: the stats and histogram
    # launches (the second histogram level only when a search is on), the first level's second
    # look at its slice for min-p's mass (only with min-p on), the copy's count and write (only
    # when there is something to list).
    READS = {
        "top-p": ((1.0, 0, 0.9, 0.0), 4, 5),  # one program: the max, 2 search passes, the copy
        "all": ((0.8, 50, 0.9, 0.05), 3, 6),  # one program: the max, one top-k pass, the copy
        "temperature": ((1.0, 0, 1.0, 0.0), 2, 2),  # the max, the draw / the stats, one histogram level
        "top-p-min-p": ((1.0, 0, 0.9, 0.9), 5, 6),  # min-p cuts above top-p's listed bracket
    }

    @pytest.mark.parametrize("splits", [1, 32], ids=["one-program", "split"])
    @pytest.mark.parametrize("name", READS)
    def test_each_path_reads_the_row_as_often_as_its_docs_say(monkeypatch, name: str, splits: int):
        """The kernels stream each row from memory several times, and on a GPU their time goes
        with the number of passes (BENCHMARKS.md): count them, on the interpreter's loads of the
        logits, for bench_sampling.py's row (V = 50257, N(0, 2²)). A draw's walk inside one lane
        or slice reads a few more logits, not a pass."""
        import minigpt.kernels.search as search

        setting, one_program, split = READS[name]
        most = one_program if splits == 1 else split
        logits = random_logits(1, 50257, seed=0) * 0.8
        slivers = []  # a smooth row is no sliver: no pass spaces its pivots by floats (a mutation audit)
        monkeypatch.setattr(search, "pivots_in_floats", lambda *a, f=search.pivots_in_floats: slivers.append(a) or f(*a))
        passes, _tokens = reads_of_the_row(monkeypatch, logits, setting, splits=splits)
        print(f"{setting}, {splits} program(s) per row: {passes:.2f} passes over the row")
        assert most <= passes <= most + 1 / 16
        assert not slivers

    def test_a_search_whose_passes_leave_every_candidate_in_goes_back_to_even_pivots(monkeypatch):
        """Pivots placed by interpolation, with the midpoint among them, cut the bracket at least
        2-fold; evenly spaced ones 4-fold. Here the top 200 logits are two groups of neighbouring
        floats at fp32's smallest normal, ~80 above the rest, and the list holds 32: the search
        streams the row ~155 halvings deep to separate the groups, and interpolation, with every
        candidate in a sliver of the bracket, misses every time. A pass that leaves every
        candidate in sends the next one back to even pivots: 80 reads of the row, as evenly
        spaced pivots alone took (135 at the midpoint's 2-fold)."""
        tiny = torch.finfo(torch.float32).tiny
        row = torch.full((1000,), -80.0)
        row[:100], row[100:200] = tiny, torch.nextafter(torch.tensor(tiny), torch.tensor(1.0))
        logits = row[torch.randperm(1000, generator=torch.Generator().manual_seed(0))][None].contiguous()
        for setting in [(1.0, 100, 1.0, 0.0), (1.0, 0, 0.3, 0.0)]:  # top-k, top-p: the top group alone
            passes, tokens = reads_of_the_row(monkeypatch, logits, setting, block_size=16, splits=1)
            assert logits[0, tokens[0]] == logits.max(), setting
            assert passes < 100, f"{setting}: {passes:.1f} reads of the row"

    @pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
    @pytest.mark.parametrize("splits", [1, 8], ids=["one-program", "split"])
    def test_a_tie_group_at_zero_ends_the_search_in_a_few_passes(monkeypatch, splits: int, dtype: torch.dtype):
        """A tie group no list can hold, at logit 0.0 (an all-zero row; half a row): no pivot can
        split it, so the bracket closes on it until nothing representable is left inside. Spaced
        evenly in value, that went on through fp32's ever finer floats near 0: 64 reads of the row
        for top-p, 79 for top-k, 126 for both. Spaced evenly in the bracket's floats, ≤ 16 passes
        close any bracket. The list's passes in registers likewise: 60 tokens tied at 0.0 under
        top-k 50 are listed by the first pass, then took 50 passes over the list; now 12-13 in all.
        bf16 too; fp16 splits values (a reviewer: spaced by fp32's floats, its pivots all rounded
        to 0.0 and the search ran to its 300-pass limit), as fp16's floats end at 6e-8."""
        import minigpt.kernels.search as search
        from minigpt.kernels.sampling import fused_sample

        g = torch.Generator().manual_seed(0)
        rows = {"zeros": torch.zeros(4096),
                "half zeros": torch.cat([torch.zeros(2048), torch.randn(2048, generator=g) - 3])}
        for name, row in rows.items():  # (fp16: fp32's floats near 0 all round to 0.0, so it splits values)
            logits = row[torch.randperm(4096, generator=g)][None].to(dtype).contiguous()
            # (each bound: the most reads measured, + 1; top-k's: 23 under Triton 3.9's interpreter, 24
            # under 3.8's, the Triton torch 2.14.1 pins: fp32, one program, half zeros)
            for setting, most in [((1.0, 0, 0.9, 0.0), 22), ((1.0, 100, 1.0, 0.0), 25), ((0.8, 50, 0.9, 0.05), 40)]:
                passes, tokens = reads_of_the_row(monkeypatch, logits, setting, splits=splits)
                assert logits[0, tokens[0]] == 0.0, (name, setting)
                assert passes <= most, f"{name}, {setting}: {passes:.1f} reads of the row"
        list_passes = []
        narrow = search._narrow  # each pass of a search, over the row or the list, ends in one call
        monkeypatch.setattr(search, "_narrow", lambda *a: list_passes.append(a) or narrow(*a))
        row = torch.cat([torch.zeros(60), torch.randn(4036, generator=g) - 6])
        logits = row[torch.randperm(4096, generator=g)][None].to(dtype).contiguous()
        tokens = fused_sample(logits, **params([(1.0, 50, 1.0, 0.0)], "cpu"), **seed_offset(0, 0, "cpu"), splits=splits)
        assert logits[0, tokens[0]] == 0.0
        assert len(list_passes) <= 14, f"{len(list_passes)} passes in all"

    def reads_of_the_row(monkeypatch, logits: torch.Tensor, setting, **knobs) -> tuple[float, torch.Tensor]:
        """fused_sample on one row, and how many times it read the row: the interpreter's loads
        of the logits, over V."""
        from triton.runtime.interpreter import InterpreterBuilder

        from minigpt.kernels.sampling import fused_sample

        begin, end = logits.data_ptr(), logits.data_ptr() + logits.nbytes
        read = []
        load = InterpreterBuilder.create_masked_load

        def counted_load(self, ptrs, mask, *args):
            read.append(int(((ptrs.data >= begin) & (ptrs.data < end) & mask.data).sum()))
            return load(self, ptrs, mask, *args)

        monkeypatch.setattr(InterpreterBuilder, "create_masked_load", counted_load)
        tokens = fused_sample(logits, **params([setting], "cpu"), **seed_offset(0, 0, "cpu"), **knobs)
        return sum(read) / logits.shape[1], tokens


@on_devices
def test_split_search_lists_a_bracket_whose_top_it_did_not_measure(device: str):
    """The search copies a bracket's candidates using each lane's count in it, which its last pass
    over the row measured: at the bracket's top too, unless that top came from the split path's
    plan (a histogram pivot) and no pass has moved it. Then the copy counts the lanes itself
    (search.py's lanes_between). This row reaches that case: at T = 100 the weights are nearly
    equal, and top_p = 0.1 puts the threshold in the top quarter of the plan's bracket, which
    holds 126 tokens, more than the 32-entry list; its top quarter holds 26, and 10 lie above."""
    from minigpt.kernels.sampling import fused_sample

    row = torch.cat([torch.tensor([0.0]), torch.linspace(-5, -0.1, 9),  # above the bracket
                     torch.linspace(-9.88, -9.85, 26),  # the bracket's top quarter: [-9.883, -9.844)
                     torch.linspace(-10, -9.89, 100),  # the rest of the bracket [-10, -9.844)
                     torch.full((120,), -20.0)])  # the floor
    B, V = 64, row.numel()
    logits = row[torch.randperm(V, generator=torch.Generator().manual_seed(0))].expand(B, V).contiguous()
    setting = (100.0, 0, 0.1, 0.0)
    kept = kept_with_ties(logits[0], reference_probs(logits[0], *setting))
    assert 10 < int(kept.sum()) < 10 + 26
    tokens = fused_sample(logits.to(device), **params([setting] * B, device), **seed_offset(5, 0, device),
                          splits=2, block_size=16).cpu()
    assert kept[tokens].all(), sorted(set(tokens.tolist()) - set(kept.nonzero().flatten().tolist()))
    # ... and reach its bottom: a list copied with wrong counts (its slots shifted, some lost) left
    # a threshold 8 tokens too high. The 4 lowest kept tokens weigh 1/6 of the kept mass.
    assert logits[0][tokens].min() <= logits[0][kept].sort().values[3]
    # ... and its top: the 10 tokens above the bracket, which the draw reaches through the lanes'
    # masses the search measured (lanes_between's), hold ~40% of the kept mass.
    assert (logits[0][tokens] > -9.8).sum() >= 10


# The row of the next test: its first search pass (one program: pivots 0, 2.03, 4.06, 6.09), or the
# split path's plan (16 pivots from 0 to 8.125, then 16 in [5.586, 6.094)), brackets [·, 6.094),
# with 30 tokens above it (8.0 and 29 at 6.1) and 31 in it (6.092, and 30 at 6.091): more
# candidates than a 32-entry list holds, a bracket that fits. (setting, copies): top-p keeps
# 6.092, not the 6.091s; top-p reaches the 6.091s; the first with a min-p that keeps only the
# max; top-k 40 (the 61 down to the 6.091s) then the first's top-p.
LISTED_BRACKET = [((2.0, 0, 0.506, 0.0), 8), ((2.0, 0, 0.75, 0.0), 8), ((1.0, 0, 0.5445, 0.2), 4),
                  ((2.0, 40, 0.5138, 0.0), 8)]


@on_devices
@pytest.mark.parametrize("splits", [1, 4], ids=["one-program", "split"])
def test_a_listed_top_p_bracket_and_the_tokens_above_it(device: str, splits: int):
    """When top-p's candidates overflow the list, only its bracket [lo, hi) is listed; what lies
    above it enters as a count and a mass (search.py's c_base, m_base; the draw's lane or slice
    masses), and the plan of the split path must agree across its launches. A kernel mutation
    audit found five one-line changes no test saw, each caught here:
    - the list's counts without c_base: the search's stopping rule (c_lo - c_hi ≤ 1, c_hi still
      the row's count while every list pass picks the top eighth) stopped at once, 1/8 of the
      bracket below its top, keeping the 6.091s (~48% of the mass drawn);
    - min-p's cut tested against the bracket's top without c2 = log2(e) / T (one program: whether
      to draw from the list and lanes, or the row; split: a slice's mass above the list or
      min-p's): at T = 1 a cut 1.6 below the max, above the top (1.9 below), drew the 6.1s;
    - split: level 0's histogram with pivots up to the max, not above it, as the plan reads
      them: its pivot 12, 6.094, measured at 6.0, moved the bracket above the 6.091s, never drawn;
    - split: the top of a bracket in level 1's last sixteenth read one level-0 column too low,
      so the copy's slots (count at lo minus count at the top) came out empty;
    - split: top-k's plan listing a bracket (only top-p's may): top-p then searched the list
      without what lies above it, and kept the 6.091s."""
    from minigpt.kernels.sampling import fused_sample

    row = torch.cat([torch.tensor([8.0]), torch.full((29,), 6.1), torch.tensor([6.092]), torch.full((30,), 6.091),
                     torch.zeros(20)])
    V = row.numel()
    row = row[torch.randperm(V, generator=torch.Generator().manual_seed(0))]
    scale = 1 if device == "cpu" else 32
    settings = [setting for setting, copies in LISTED_BRACKET for _ in range(copies * scale)]
    tokens = fused_sample(row.expand(len(settings), V).contiguous().to(device), **params(settings, device),
                          **seed_offset(0, 0, device), splits=splits, block_size=16).cpu()
    drawn = {}
    for setting, token in zip(settings, tokens.tolist()):
        drawn.setdefault(setting, []).append(row[token].item())
    for (setting, _copies), n_kept in zip(LISTED_BRACKET, (31, 61, 1, 31)):
        kept = kept_with_ties(row, reference_probs(row, *setting))
        assert int(kept.sum()) == n_kept, setting
        values = drawn[setting]
        assert min(values) >= row[kept].min(), f"{setting}: drew {sorted(set(values))}, below the kept set"
        if n_kept == 61:
            assert min(values) < 6.092, f"{setting}: the 6.091s (~48% of the mass) were never drawn"


@on_devices
@pytest.mark.parametrize("V, splits", [(6, 1), (2048, 1), (64, 2)])
def test_top_p_drops_a_tail_whose_mass_is_exactly_1_minus_top_p(device: str, V: int, splits: int, monkeypatch):
    """Masses .5, .25, .125, .0625, .03125, .03125 (-inf up to V): the kernel's weights exp2((l - m) · c2)
    come out exact powers of 2, so the mass above a token reaches top_p .5, .75, .875 exactly. There
    transformers drops the tail (cumulative mass ≤ 1 - top_p) and keeps 1, 2, 3 tokens; so does the
    kernel, one program or split: every draw lies in that set and each of its tokens is drawn. (A
    mutation audit found no test with such a row for the torch path; tests/test_sampling.py's test of
    the same name covers it. The kernel's rounding can move a cut within ~1e-6 of the mass, see its
    docstring, but these sums are exact.) On a CPU the uniforms are stratified, 8 rows per top_p
    (`use_stratified_uniforms`): each kept token is drawn its exact share, ±1, and a wrongly kept next
    token, whose share (1/15 at top_p .875, more at the others) is over the 1/16 between the top
    uniform 15/16 and 1, would be drawn. On a GPU, 1000 random draws per top_p."""
    from minigpt.kernels.sampling import fused_sample

    row = torch.full((V,), float("-inf"))
    row[:6] = torch.tensor([0.5, 0.25, 0.125, 0.0625, 0.03125, 0.03125]).log()
    stratified = device == "cpu"  # the interpreter: ~0.05 s a row
    if stratified:
        use_stratified_uniforms(monkeypatch)
    n = 8 if stratified else 1000  # rows per top_p
    for top_p, n_kept in [(0.5, 1), (0.75, 2), (0.875, 3)]:
        setting = (1.0, 0, top_p, 0.0)
        probs = reference_probs(row, *setting)
        assert int(probs.count_nonzero()) == n_kept, top_p  # transformers' set
        tokens = fused_sample(row.expand(n, V).contiguous().to(device), **params([setting] * n, device),
                              **seed_offset(n if stratified else 0, 0, device), splits=splits).cpu()
        assert sorted(set(tokens.tolist())) == list(range(n_kept)), top_p
        if stratified:
            counts = torch.bincount(tokens, minlength=V).double()
            assert (counts - n * probs.double()).abs().max() <= 1, (top_p, counts[:6].tolist())


@on_devices
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("splits", [1, 4], ids=["one-program", "split"])
def test_top_k_1_keeps_one_of_two_neighbouring_half_precision_logits(device: str, dtype: torch.dtype, splits: int):
    """Found by a random search under the interpreter: the two top logits 22.75 and 22.875 are
    neighbours in bf16, and top_k=1 (or a tiny top_p) kept both. The bracket's top started 1e-6
    above the max, a value bf16 cannot hold, and the search ends when the midpoint of [lo, hi),
    rounded to bf16, is lo or hi. A GPU rounds to nearest, and the midpoint of [22.75, 22.875 +
    1e-6) went up to 22.875; Triton's interpreter truncates, so it fell back to 22.75 and the
    search stopped with both tokens in. The top now starts on the logits' grid, as every pivot
    does, which ends searches right whichever way the rounding goes."""
    from minigpt.kernels.sampling import fused_sample

    top = torch.tensor(22.875, dtype=dtype)
    below = (top.view(torch.int16) - 1).view(dtype)  # the next value down in this dtype
    row = torch.full((16,), -3.0, dtype=dtype)
    row[5], row[11] = below, top
    B = 2
    logits = row.expand(B, -1).contiguous().to(device)
    for k, top_p in ((1, 1.0), (0, 1e-9), (0, 0.1)):
        p = params([(0.3, k, top_p, 0.0)] * B, device)
        tokens = fused_sample(logits, **p, **seed_offset(0, 0, device), splits=splits).cpu()
        assert tokens.tolist() == [11] * B, f"top_k={k}, top_p={top_p}: {tokens.tolist()}"


@on_devices
@pytest.mark.parametrize("splits", [1, 4], ids=["one-program", "split"])
def test_a_max_near_its_dtypes_largest_value_still_narrows(device: str, splits: int):
    """Found by an audit: the bracket's top, m + |m| / 64 rounded to the logits' dtype, overflowed
    to inf for fp16 maxima ≥ 64512 (and fp32/bf16 within 1.6% of 3.4e38); under an infinite top
    the first pass ended the search, and top_k=1 or a tiny top_p kept the runner-up too. The top
    is now the dtype's next value above m there. (At the largest finite value itself there is
    none: the kernel's docstring says so.)"""
    from minigpt.kernels.sampling import fused_sample

    for dtype, m, second in ((torch.float16, 64512.0, 64480.0), (torch.float16, 65472.0, 65440.0),
                             (torch.bfloat16, 3.3e38, 3.2e38), (torch.float32, 3.3e38, 3.25e38)):
        row = torch.full((40,), 100.0, dtype=dtype)
        row[7], row[9] = m, second
        logits = row.expand(2, -1).contiguous().to(device)
        for k, top_p in ((1, 1.0), (0, 1e-9)):
            p = params([(1000.0, k, top_p, 0.0)] * 2, device)
            tokens = fused_sample(logits, **p, **seed_offset(1, 0, device), splits=splits).cpu()
            assert tokens.tolist() == [7, 7], f"{dtype} max {m}, top_k={k}, top_p={top_p}: {tokens.tolist()}"


if INTERPRETED:
    # name: (setting, row, block_size). The flat rows, with a 32-entry list they overflow, are
    # DRAWS' bracket cases: top-p's bracket listed, the tokens above it drawn by lane (one program)
    # or by slice (split) from the masses the search measured; then with a min-p that cuts above
    # the bracket, so those masses are too large and the draw reads the row instead.
    STRATIFIED = {
        "T": (ROWS[0], "peaked", None),
        "all": (ROWS[4], "peaked", None),
        "top-p+min-p": (ROWS[9], "peaked", None),
        "top-p-bracket": ((1.0, 0, 0.9, 0.0), "flat", 16),
        "top-p-bracket-min-p": ((1.0, 0, 0.9, 0.8), "flat", 16),
    }

    @pytest.mark.parametrize("splits", [1, 4], ids=["one-program", "split"])
    @pytest.mark.parametrize("name", STRATIFIED)
    def test_stratified_uniforms_draw_each_token_its_exact_share(monkeypatch, splits: int, name: str):
        """An exact check of the distribution, no statistical slack (a kernel audit's harness): the
        draw is inverse-CDF sampling of one uniform per row, so n copies of a row given the uniforms
        (r + 1/2) / n, r = 0 .. n-1, must draw each token round(n · p) times, ±1, p transformers',
        and a token the filters remove never (`use_stratified_uniforms`)."""
        from minigpt.kernels import sampling

        use_stratified_uniforms(monkeypatch)
        setting, shape, block_size = STRATIFIED[name]
        n = 64
        row = random_logits(1, 48, seed=11)[0] if shape == "peaked" else random_logits(1, 64, seed=3)[0] * 0.3
        tokens = sampling.fused_sample(row.expand(n, -1), **params([setting] * n, "cpu"), **seed_offset(n, 0, "cpu"),
                                       splits=splits, block_size=block_size)
        counts = torch.bincount(tokens, minlength=row.numel()).double()
        want = n * reference_probs(row, *setting).double()
        print(f"{setting}, splits {splits}: max |count - n·p| = {(counts - want).abs().max():.3f}")
        assert (counts - want).abs().max() <= 1
        assert counts[want == 0].sum() == 0, "drew a token the filters remove"


@on_devices
@pytest.mark.parametrize("splits", [1, 4], ids=["one-program", "split"])
def test_same_seed_same_tokens_and_offset_moves_the_stream(device: str, splits: int):
    from minigpt.kernels.sampling import fused_sample

    V = 128 if device == "cpu" else 50257
    logits = random_logits(8, V, seed=4).to(device) * 0.5
    p = {**params([(1.0, 0, 0.95, 0.0)] * 8, device), "splits": splits}
    first = fused_sample(logits, **p, **seed_offset(7, 3, device))
    again = fused_sample(logits, **p, **seed_offset(7, 3, device))
    next_step = fused_sample(logits, **p, **seed_offset(7, 4, device))
    other_seed = fused_sample(logits, **p, **seed_offset(8, 3, device))
    assert torch.equal(first, again)
    assert not torch.equal(first, next_step) and not torch.equal(first, other_seed)


@on_devices
@pytest.mark.parametrize("splits", [1, 4], ids=["one-program", "split"])
def test_bad_values_give_token_minus_one_or_a_clear_error(device: str, splits: int):
    from minigpt.kernels.sampling import fused_sample

    V = 64
    rows = [(1.0, 0, 1.0, 0.0), (-0.5, 0, 1.0, 0.0), (1.0, -1, 1.0, 0.0), (1.0, 0, 0.0, 0.0),
            (1.0, 0, 1.5, 0.0), (1.0, 0, 1.0, 2.0), (float("nan"), 0, 1.0, 0.0), (1.0, 0, 1.0, 0.0),
            (1.0, 0, 1.0, 0.0), (float("inf"), 0, 1.0, 0.0)]
    logits = random_logits(len(rows), V, seed=5)
    logits[7, 3] = float("nan")
    logits[8] = float("-inf")
    tokens = fused_sample(logits.to(device), **params(rows, device), **seed_offset(0, 0, device), splits=splits).cpu()
    assert tokens[0] >= 0 and (tokens[1:] == -1).all(), tokens
    for bad_row, message in [(1, "temperature must be in"), (2, "top_k must be in"), (3, "top_p must be in"),
                             (5, "min_p must be in"), (7, "NaN or \\+inf"), (8, "all -inf"), (9, "temperature must be in")]:
        with pytest.raises(ValueError, match=message):
            fused_sample(logits[[0, bad_row]].to(device), **params([rows[0], rows[bad_row]], device),
                         **seed_offset(0, 0, device), validate=True, splits=splits)


@on_devices
def test_shapes_dtypes_and_devices_are_checked_before_launch(device: str):
    from minigpt.kernels.sampling import fused_sample

    logits = torch.randn(2, 16, device=device)
    good = {**params([(1.0, 0, 1.0, 0.0)] * 2, device), **seed_offset(0, 0, device)}
    cases = [
        (logits[0], {}, "logits must be \\(B, V\\)"),
        (logits.double(), {}, "logits must be float32, bfloat16 or float16"),
        (logits.t().contiguous().t(), {}, "contiguous along the vocabulary"),
        (logits, {"top_k": good["top_k"].long()}, "top_k must be a torch.int32 tensor of shape \\(2,\\)"),
        (logits, {"temperature": good["temperature"][:1]}, "temperature must be a torch.float32 tensor"),
        (logits, {"seed": torch.tensor([0, 1], device=device)}, "seed must be a torch.int64 tensor of shape \\(1,\\)"),
        (logits, {"top_p": 0.9}, "top_p must be a torch.float32 tensor of shape \\(2,\\), got float"),
    ]
    for x, change, message in cases:
        with pytest.raises((ValueError, TypeError), match=message):
            fused_sample(x, **{**good, **change})
    with pytest.raises(ValueError, match="block_size must be a power of 2"):
        fused_sample(logits, **good, block_size=100)
    for splits in (0, 3, 32):
        with pytest.raises(ValueError, match="splits must be a power of 2 in \\[1, min\\(V=16, 64\\)\\]"):
            fused_sample(logits, **good, splits=splits)
    with pytest.raises(ValueError, match="splits must be a power of 2 in \\[1, min\\(V=300, 64\\)\\]"):
        fused_sample(torch.randn(2, 300, device=device), **good, splits=128)
    # A one-token vocabulary strided along it (an audit's torch.randn(1, 2).t(), which the torch
    # path takes) was refused as "contiguous along the vocabulary", a stride no read uses.
    from minigpt.sampling import sample

    assert sample(torch.randn(1, 2, device=device).t(), backend="triton").tolist() == [0, 0]


def test_rows_are_split_only_while_one_program_per_row_leaves_sms_idle(monkeypatch):
    if importlib.util.find_spec("triton") is None:
        pytest.skip(f"triton has no wheels for {sys.platform}")  # the interpreter test above fails instead
    from minigpt.kernels import sampling_split

    class H100:
        multi_processor_count = 132

    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: H100())
    # Not the per-shape cache: this GPU is made up.
    monkeypatch.setattr(sampling_split, "graph_splits", sampling_split.graph_splits.__wrapped__)
    graph_splits = sampling_split.graph_splits
    cuda = torch.device("cuda")
    # S = the largest power of 2 ≤ min(132 // B, V // 1024, 64), and 1 below 16 (measured on an H200)
    assert [graph_splits(B, 50257, cuda) for B in (1, 2, 4, 5, 8, 9, 64, 256)] == [32, 32, 32, 16, 16, 1, 1, 1]
    assert graph_splits(1, 3000, cuda) == 1  # slices of ≥ 1024 logits: at most 2, too few to pay
    assert graph_splits(1, 16 * 1024 - 1, cuda) == 1  # 15 slices of 1024: too few
    assert graph_splits(1, 32 * 1024 - 1, cuda) == 16  # 31: split 16 ways
    assert graph_splits(0, 50257, cuda) == 1  # an empty batch: nothing to split (it divided by B)
    # fused_sample's default: split only while a CUDA graph records (or torch.compile traces) the
    # call; eager calls pay Python per launch, and one launch beats five.
    for capturing, expected in [(True, 32), (False, 1)]:
        monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: capturing)
        assert sampling_split.default_splits(1, 50257, cuda) == expected
    assert sampling_split.default_splits(1, 50257, torch.device("cpu")) == 1  # the interpreter: one program per row


def test_an_interpreter_that_cannot_run_says_which_versions_to_install(monkeypatch):
    """Triton ≤ 3.6's interpreter fails on NumPy ≥ 2.4 with "only 0-dimensional arrays can be
    converted to Python scalars" (checked with triton 3.6.0 / numpy 2.4.6; 3.7.0 runs): fused_sample
    names the versions instead."""
    if importlib.util.find_spec("triton") is None:
        pytest.skip(f"triton has no wheels for {sys.platform}")  # the interpreter test above fails instead
    from minigpt.kernels import sampling

    monkeypatch.setattr(sampling, "_fused_sample_kernel", object())  # anything but a JITFunction: "interpreted"
    monkeypatch.setattr(sampling.tl.random, "philox", object())  # and triton's own helpers interpreted too
    args = dict(temperature=torch.ones(1), top_k=torch.zeros(1, dtype=torch.int32), top_p=torch.ones(1),
                min_p=torch.zeros(1), seed=torch.zeros(1, dtype=torch.long), offset=torch.zeros(1, dtype=torch.long))
    monkeypatch.setattr(sampling.triton, "__version__", "3.6.0")
    monkeypatch.setattr(sampling.np, "__version__", "2.4.6")
    with pytest.raises(RuntimeError, match=r"Triton 3\.6\.0's CPU interpreter cannot run with NumPy 2\.4\.6.*"
                                           r"install triton>=3\.7 or numpy<2\.4"):
        sampling._check_inputs(torch.zeros(1, 8), args)
    for triton_version, numpy_version in [("3.7.0", "2.4.6"), ("3.6.0", "2.3.5"), ("3.10.1", "2.5.0")]:
        monkeypatch.setattr(sampling.triton, "__version__", triton_version)
        monkeypatch.setattr(sampling.np, "__version__", numpy_version)
        sampling._check_inputs(torch.zeros(1, 8), args)  # these versions run: no error


def test_the_test_extra_asks_for_a_triton_whose_interpreter_runs_with_any_numpy(monkeypatch):
    """An install audit: the `test` extra asked for triton>=3.3, and with it any NumPy, so pip could
    pair Triton 3.3 with NumPy 2.4, where the interpreter these tests run on a CPU cannot run (and
    fused_sample refuses). Its floor must be a Triton that fused_sample lets run with NumPy ≥ 2.4."""
    import re
    from pathlib import Path

    if importlib.util.find_spec("triton") is None:
        pytest.skip(f"triton has no wheels for {sys.platform}")  # the interpreter test above fails instead
    from minigpt.kernels import sampling

    pyproject = (Path(__file__).resolve().parent.parent / "pyproject.toml").read_text()
    test_extra = re.search(r"^test = \[(.*?)\]\s*$", pyproject, re.DOTALL | re.MULTILINE)  # (tomllib: Python 3.11)
    assert test_extra, "no `test = [...]` extra in pyproject.toml"
    floor = re.search(r'"triton>=([0-9.]+)', test_extra.group(1))
    assert floor, f"the test extra asks for no triton>=: {test_extra.group(1)}"
    monkeypatch.setattr(sampling.triton, "__version__", floor.group(1))
    monkeypatch.setattr(sampling.np, "__version__", "2.4.0")  # the extra puts no ceiling on NumPy
    assert not sampling._interpreter_breaks_on_numpy(), f"triton>={floor.group(1)} allows an interpreter that fails"


if not INTERPRETED:
    def test_an_interpreter_switched_on_after_triton_was_imported_is_named():
        """A kernel audit: following the CPU error's advice with triton already imported (minigpt's
        kernels interpreted, triton's Philox compiled) failed with "Cannot call @triton.jit'd outside
        of the scope of a kernel". It now says to set TRITON_INTERPRET=1 before triton is imported."""
        if importlib.util.find_spec("triton") is None:
            pytest.skip(f"triton has no wheels for {sys.platform}")  # the interpreter test above fails instead
        code = ("import triton, torch, os; os.environ['TRITON_INTERPRET'] = '1'\n"
                "from minigpt.sampling import sample\n"
                "try:\n    sample(torch.randn(1, 8), seed=0, backend='triton')\n"
                "except RuntimeError as e:\n    print(e)\n")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                              env={k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"})
        assert "TRITON_INTERPRET=1 was set after triton was imported: set it before" in done.stdout, done.stderr[-2000:]
