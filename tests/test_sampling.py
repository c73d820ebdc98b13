"""Sampling: filters and penalties equal transformers' warpers; draws follow the filtered distribution."""
import importlib.util
import math
import re

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from transformers.generation.logits_process import (
    EpsilonLogitsWarper,
    EtaLogitsWarper,
    MinPLogitsWarper,
    NoRepeatNGramLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
    TypicalLogitsWarper,
)

import minigpt.penalties
import minigpt.sampling
from minigpt.penalties import apply_penalties, ban_repeated_ngrams, penalties_on
from minigpt.sampling import (
    apply_epsilon,
    apply_eta,
    apply_min_p,
    apply_temperature,
    apply_top_k,
    apply_top_p,
    apply_typical_p,
    filter_logits,
    kernel_seed,
    resolve_backend,
    sample,
)
from test_generate import use_fake_kernel

V = 1000


def random_logits(seed: int, B: int = 6, V: int = V, ties: bool = False) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, V, generator=g) * 3
    return x.round() if ties else x  # rounding to integers makes many exact ties


def assert_same_filter(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    kept, kept_hf = torch.isfinite(ours), torch.isfinite(theirs)
    assert torch.equal(kept, kept_hf), f"kept sets differ in {(kept != kept_hf).sum().item()} tokens"
    diff = (ours[kept] - theirs[kept]).abs().max().item()
    print(f"kept {kept.sum().item()} tokens, max |diff| {diff:.2e}")
    assert diff == 0.0


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("t", [0.3, 1.0, 2.5])
def test_temperature_matches_transformers(t, ties):
    x = random_logits(0, ties=ties)
    assert_same_filter(apply_temperature(x, t), TemperatureLogitsWarper(t)(None, x.clone()))


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("k", [1, 5, 50, V, V + 7])  # V + 7: top_k larger than the vocabulary
def test_top_k_matches_transformers(k, ties):
    x = random_logits(1, ties=ties)
    assert_same_filter(apply_top_k(x, k), TopKLogitsWarper(k)(None, x.clone()))
    # per-row k as a tensor gives the same answer
    assert_same_filter(apply_top_k(x, torch.full((x.size(0),), k)), TopKLogitsWarper(k)(None, x.clone()))


def transformers_top_p(x: torch.Tensor, p: float) -> torch.Tensor:
    """TopPLogitsWarper's answer, with the tie group at its cut kept whole, as minigpt keeps it:
    transformers keeps whichever tokens of that group its (unstable) sort puts last."""
    theirs = TopPLogitsWarper(p)(None, x.clone())
    cut = torch.where(theirs.isfinite(), x, float("inf")).amin(dim=-1, keepdim=True)  # its smallest kept logit
    return x.masked_fill(x < cut, float("-inf"))


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("p", [1e-9, 0.05, 0.5, 0.9, 0.999])  # 1e-9: tiny top_p keeps just the top
def test_top_p_matches_transformers(p, ties):
    x = random_logits(2, ties=ties)
    assert_same_filter(apply_top_p(x, p), transformers_top_p(x, p))
    assert_same_filter(apply_top_p(x, torch.full((x.size(0),), p)), transformers_top_p(x, p))
    if not ties:  # without ties, exactly transformers' own answer
        assert_same_filter(apply_top_p(x, p), TopPLogitsWarper(p)(None, x.clone()))


def test_a_tie_group_at_the_top_p_cut_is_kept_whole():
    """Four tokens of p = 0.25: transformers keeps two of them for top_p = 0.5 (it drops a token
    when the mass *before* it is ≥ top_p, not only > top_p) and one for 0.25, where minigpt keeps
    the whole group, as top-k keeps ties. Past the group the cut is transformers'."""
    x = torch.zeros(1, 4)
    for p, theirs in ((0.5, 2), (0.75, 3), (0.25, 1), (0.5000001, 3)):
        assert TopPLogitsWarper(p)(None, x.clone()).isfinite().sum().item() == theirs
        assert apply_top_p(x, p).isfinite().all()
    x = torch.tensor([[3.0, 0.0, 0.0, 0.0, -1.0]])  # p ≈ 0.85, 3 × 0.047, 0.017
    assert apply_top_p(x, 0.8).isfinite().tolist() == [[True, False, False, False, False]]
    assert apply_top_p(x, 0.9).isfinite().tolist() == [[True, True, True, True, False]]
    assert apply_top_p(x, 0.99).isfinite().all()


def gpt2_sized_logits(seed: int, B: int, spread: float, ties: bool = False) -> torch.Tensor:
    """(B, 50257) logits: N(0, spread²), rounded to integers (many exact ties) if `ties`. A spread of
    5 leaves a nucleus of tens to hundreds of tokens, 1 one of thousands (past TOP_P_HEAD)."""
    x = torch.randn(B, 50257, generator=torch.Generator().manual_seed(seed)) * spread
    return x.round() if ties else x


@pytest.mark.parametrize("ties", [False, True])
def test_top_p_on_a_cpu_finds_the_cut_among_the_largest_logits(ties):
    """On a CPU apply_top_p looks for the cut among the TOP_P_HEAD largest logits (torch.topk),
    then, for a nucleus past them that may fit, among the TOP_P_SECOND_HEAD largest, before it
    sorts the whole row: the kept sets are transformers' (ties kept whole), in rows where either
    head holds the cut and in rows where neither does (the whole row sorted), mixed in a batch,
    per-row top_p of 1 included."""
    from minigpt.sampling_cpu import TOP_P_HEAD, TOP_P_SECOND_HEAD, top_p_cut_in_head

    peaked, mid, flat = (gpt2_sized_logits(0, 4, 5.0, ties), gpt2_sized_logits(1, 2, 3.0, ties),
                         gpt2_sized_logits(1, 2, 1.0, ties))
    # The head that holds the cut (None: neither), and top_p: (0.99 keeps up to ~1,200 tokens of `peaked`)
    for x, head, ps in ((peaked, TOP_P_HEAD, (0.5, 0.9)), (mid, TOP_P_SECOND_HEAD, (0.9,)), (flat, None, (0.9,)),
                        (torch.cat([peaked, mid]), TOP_P_SECOND_HEAD, (0.9,)), (torch.cat([peaked, flat]), None, (0.9,))):
        for p in ps:
            in_head = top_p_cut_in_head(x, p)
            assert (in_head[1].size(1) if in_head is not None else None) == head, (head, p)
            kept = apply_top_p(x, p).isfinite()
            assert torch.equal(kept, transformers_top_p(x, p).isfinite())
            assert head == TOP_P_HEAD or kept.sum(-1).max() > TOP_P_HEAD
            assert head is not None or kept.sum(-1).max() > TOP_P_SECOND_HEAD
    rows = torch.tensor([0.9, 1.0, 0.5, 1.0])
    kept = apply_top_p(peaked, rows).isfinite()
    assert torch.equal(kept[0], transformers_top_p(peaked[:1], 0.9).isfinite()[0])
    assert torch.equal(kept[2], transformers_top_p(peaked[2:3], 0.5).isfinite()[0])
    assert kept[[1, 3]].all()  # top_p = 1 drops nothing, though 0-mass tokens lie below the head


def test_a_flat_rows_nucleus_goes_straight_to_the_sort_without_the_second_head(monkeypatch):
    """A nucleus past the first head tries the second only if it may fit there: every token past
    the head is at most as likely as its last, which bounds how many more the nucleus needs. A flat
    row (~30,000 tokens in top-p 0.9) skips the second topk; a row of ~2,000 takes it."""
    from minigpt.sampling_cpu import TOP_P_SECOND_HEAD, top_p_cut_in_head

    sizes = []
    topk = torch.Tensor.topk
    monkeypatch.setattr(torch.Tensor, "topk", lambda self, k, *a, **kw: sizes.append(k) or topk(self, k, *a, **kw))
    assert top_p_cut_in_head(gpt2_sized_logits(1, 2, 1.0), 0.9) is None
    assert sizes == [1024]
    sizes.clear()
    assert top_p_cut_in_head(gpt2_sized_logits(1, 2, 3.0), 0.9) is not None
    assert sizes == [1024, TOP_P_SECOND_HEAD]


def test_top_p_in_the_head_agrees_with_the_whole_sort_on_many_rows():
    """The head's cut is counted from the top (the mass ranked above a token < top_p), the sort's
    from the bottom (the mass of a token and everything below > 1 - top_p): the same cut but for
    float rounding. Over 64 rows × 3 top_p both give the same kept set; a row where they part must
    have its cut within 1e-6 of top_p in float64."""
    from minigpt.sampling_cpu import top_p_cut_in_head

    x = gpt2_sized_logits(2, 64, 4.0)  # nuclei of 1 to 670 tokens
    probs = x.double().softmax(-1).sort(dim=-1, descending=True).values
    above = probs.cumsum(-1) - probs
    for p in (0.3, 0.8, 0.9):
        head = x.masked_fill(x < top_p_cut_in_head(x, p)[0], float("-inf")).isfinite()
        whole = transformers_top_p(x, p).isfinite()
        parted = (head != whole).any(-1)
        near = ((above - p).abs() < 1e-6).any(-1)
        assert not (parted & ~near).any(), f"top_p {p}: rows {parted.nonzero().flatten().tolist()} part"


def on_the_row(values: torch.Tensor, ids: torch.Tensor | None, V: int) -> torch.Tensor:
    """top_k_top_p_on_cpu's answer as (B, V) logits: a short list scattered back to its ids."""
    return values if ids is None else torch.full((values.size(0), V), float("-inf")).scatter(1, ids, values)


@pytest.mark.parametrize("ties", [False, True])
def test_on_a_cpu_min_p_and_the_draw_run_on_the_short_list_top_k_or_top_p_gathered(ties):
    """On a CPU the picker runs min-p and the draw on a short list (`top_k_top_p_on_cpu`): the
    largest logits top-k gathered (top-p then runs on them too), or top-p's head when the nucleus
    fits it. Kept set and probabilities are those of the filters over the whole row: for one k and
    a k per row (each row's own k-th value ends its list), for top-p alone, per-row top_p too. With
    ties (integer logits), top-k's tie group with the k-th value goes on the list whole, and ties
    at the top-p cut inside it are kept whole, as over the whole row."""
    from minigpt.sampling import top_k_top_p_on_cpu

    x = gpt2_sized_logits(3, 6, 4.0, ties)  # nuclei of top-p 0.9 well inside the head
    settings = [(k, p, m) for k in (1, 50, 300, torch.tensor([50, 1, 7, 300, 50, 2]))
                for p, m in ((1.0, 0.0), (0.9, 0.0), (0.9, 0.05), (0.3, 0.2))]
    settings += [(0, p, m) for p in (0.9, 0.3, torch.tensor([0.9, 0.5, 0.2, 0.9, 0.8, 0.6])) for m in (0.0, 0.1)]
    for k, p, m in settings:
        values, ids = top_k_top_p_on_cpu(apply_temperature(x, 0.8), k, p)
        assert ids is not None, (k, p)
        listed = on_the_row(apply_min_p(values, m), ids, x.size(1))
        whole = filter_logits(x, temperature=0.8, top_k=k, top_p=p, min_p=m)
        assert torch.equal(listed.isfinite(), whole.isfinite()), (k, p, m)
        torch.testing.assert_close(listed.softmax(-1), whole.softmax(-1), rtol=0, atol=1e-6)


def test_the_short_list_takes_top_ks_ties_whole_and_gives_way_when_the_filters_keep_more():
    """Top-k keeps every token tied with the k-th value, so the list grows to hold them. When a
    row keeps more than TOP_P_HEAD tokens (-inf logits among its top k), top-k is off in some row,
    a row's nucleus reaches past top-p's head, its top_p is 1, or top-p's cut is tied with tokens
    past the head, the filters run on the whole row (ids None), and what they keep can be drawn."""
    from minigpt.sampling import top_k_top_p_on_cpu
    from minigpt.sampling_cpu import TOP_P_HEAD, top_k_shortlist

    x = torch.tensor([[5.0, 3, 3, 3, 1, 0]])
    values, ids = top_k_shortlist(x, 2)  # k = 2 keeps 4 tokens: 5 and three 3s
    assert ids.sort().values.tolist() == [[0, 1, 2, 3]] and values.isfinite().all()
    N = 20_000
    counts = torch.bincount(sample(x.expand(N, -1), top_k=2, seed=5), minlength=6)
    assert counts[4:].sum() == 0 and (counts[1:4] > 0).all()  # each of the tied 3s is drawn
    assert torch.allclose(counts[:4] / N, filter_logits(x, top_k=2).softmax(-1)[0, :4], atol=0.015)
    assert top_k_shortlist(x.expand(2, -1), torch.tensor([4, 0])) is None  # top-k off in row 1
    assert top_k_shortlist(x, 0) is None and top_k_shortlist(x, 6) is None  # off; keeps the whole row
    row = gpt2_sized_logits(0, 1, 3.0)
    assert top_k_shortlist(row, TOP_P_HEAD + 1) is None  # not short
    row[0, 10:] = float("-inf")  # 10 finite logits: top_k 50 keeps all 50,257
    assert top_k_shortlist(row, 50) is None

    peaked, flat = gpt2_sized_logits(0, 2, 5.0), gpt2_sized_logits(1, 1, 1.0)
    assert top_k_top_p_on_cpu(peaked, 0, 0.9)[1] is not None
    for x, p in ((flat, 0.9), (peaked, torch.tensor([0.9, 1.0])), (peaked, 1.0)):  # past the head; top_p 1
        values, ids = top_k_top_p_on_cpu(x, 0, p)
        assert ids is None and torch.equal(values, apply_top_p(x, p))
    # Ten likely tokens, then 2,990 tied at 0.0: top-p 0.995 cuts inside the tie group, which
    # reaches past the head, and keeps it whole: tokens far past the head's 1024 are drawn.
    x = torch.zeros(1, 3000)
    x[0, :10] = 10.0
    values, ids = top_k_top_p_on_cpu(x, 0, 0.995)
    assert ids is None and values.isfinite().all()
    tokens = sample(x.expand(5000, -1), top_p=0.995, seed=6)
    assert (tokens >= TOP_P_HEAD + 10).sum() > 10  # ~30 expected


@pytest.mark.parametrize("ties", [False, True])
def test_min_p_without_a_list_from_top_k_or_top_p_makes_its_own(ties):
    """With no short list from top-k or top-p (both off, or top-p's nucleus past its head), min-p
    lists the tokens within ln(1 / min_p) of the row's max (`min_p_shortlist`), and apply_min_p on
    the list keeps what it keeps over the whole row: per-row min_p too, and rows of large logits,
    where top + log(min_p) rounds (fp32's step at 3e4 is 0.002)."""
    from minigpt.sampling import top_k_top_p_on_cpu
    from minigpt.sampling_cpu import min_p_shortlist

    x = gpt2_sized_logits(5, 4, 4.0, ties)
    for rows in (x, x + 3e4, x - 1e4):
        for m in (1e-3, 0.05, 0.3, 1.0, torch.tensor([0.05, 0.5, 1e-3, 0.2])):
            values, ids = min_p_shortlist(rows, m)
            listed = on_the_row(apply_min_p(values, m), ids, rows.size(1))
            assert torch.equal(listed.isfinite(), apply_min_p(rows, m).isfinite()), m
    flat = gpt2_sized_logits(6, 2, 1.0)  # top-p 0.9 keeps ~30,000: no list; min-p 0.5 keeps a handful
    values, ids = top_k_top_p_on_cpu(flat, 0, 0.9)
    assert ids is None
    values, ids = min_p_shortlist(values, 0.5)
    assert ids.size(1) < 100
    whole = filter_logits(flat, top_p=0.9, min_p=0.5)
    assert torch.equal(on_the_row(apply_min_p(values, 0.5), ids, flat.size(1)).isfinite(), whole.isfinite())
    assert min_p_shortlist(x, torch.tensor([0.1, 0.0, 0.1, 0.1])) is None  # min-p off in a row
    assert min_p_shortlist(flat, 0.01) is None  # thousands within ln(100) of the max: not short
    assert min_p_shortlist(x, 0.0) is None
    bad = torch.full((2, 3000), float("nan"))
    assert min_p_shortlist(bad, 0.1) is None and sample(bad, min_p=0.1, seed=0).tolist() == [-1, -1]


def test_the_short_list_parts_from_the_whole_row_only_at_a_top_p_cut_within_rounding():
    """The short list is too short for top-p's head, so its cut is the sort's float32 running sum,
    where the whole row on a CPU takes the head's float64 sums: the same cut but for float rounding.
    Over 64 rows × 2 top_k × 3 top_p the kept sets agree; a row where they
    part must have a token whose mass ranked above it is within 1e-6 of top_p (found by a review:
    top_p 0.5212814966903457 over one row of 200 kept 5 tokens on the whole row and 4 on the list)."""
    from minigpt.sampling import top_k_top_p_on_cpu

    x = gpt2_sized_logits(4, 64, 4.0)
    for k in (50, 200):
        probs = apply_top_k(x, k).double().softmax(-1).sort(dim=-1, descending=True).values
        above = probs.cumsum(-1) - probs  # the mass ranked above each token, in the top-k's row
        for p in (0.3, 0.8, 0.9):
            listed = on_the_row(*top_k_top_p_on_cpu(x, k, p), x.size(1)).isfinite()
            parted = (listed != filter_logits(x, top_k=k, top_p=p).isfinite()).any(-1)
            near = ((above - p).abs() < 1e-6).any(-1)
            assert not (parted & ~near).any(), f"top_k {k}, top_p {p}: rows {parted.nonzero().flatten().tolist()}"


@pytest.mark.parametrize("kwargs", [{}, dict(min_p=0.1)])
def test_a_float64_logit_past_float32s_range_marks_its_row_bad(kwargs):
    """The filters compute in fp32, where 1e300 is inf: the row is bad, -1 as from the kernel (the
    check looked at the fp64 logits, and a drawn token came back, found by a review)."""
    x = torch.randn(2, 300, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x[0, 7] = 1e300
    tokens = sample(x, seed=0, **kwargs)
    assert tokens[0] == -1 and tokens[1] >= 0


@pytest.mark.parametrize("top_k", [5, torch.tensor([], dtype=torch.long)])
def test_sample_of_no_rows_with_top_k_gives_no_tokens(top_k):
    """A batch of no rows gives no tokens, as without top-k (the short list's max() had nothing to reduce)."""
    assert sample(torch.empty(0, 2000), top_k=top_k, seed=0).shape == (0,)


def test_a_greedy_row_beside_sampled_ones_takes_the_first_tied_top_through_the_shortlist():
    """With per-row temperature, greedy rows take the whole row's first argmax, as without a short
    list: topk need not list tied tokens by index, and the first of them must win."""
    x = torch.zeros(3, 200)
    x[:, [7, 150, 90]] = 4.0  # three tied top tokens; the first is 7
    tokens = sample(x, temperature=torch.tensor([0.0, 1.0, 0.0]), top_k=3, seed=1)
    assert tokens[0] == 7 and tokens[2] == 7 and tokens[1] in (7, 90, 150)


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("m", [0.0, 0.01, 0.2, 1.0])
def test_min_p_matches_transformers(m, ties):
    x = random_logits(3, ties=ties)
    assert_same_filter(apply_min_p(x, m), MinPLogitsWarper(m)(None, x.clone()))


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("m", [1e-9, 0.05, 0.2, 0.5, 0.9, 0.999])  # 1e-9: the most typical token alone
def test_typical_p_matches_transformers(m, ties):
    """TypicalLogitsWarper keeps a tie group at its cut whole (it drops only distances past the
    cut's), so minigpt's kept set is its own, ties or not; per-row values give the same answer."""
    x = random_logits(11, ties=ties)
    assert_same_filter(apply_typical_p(x, m), TypicalLogitsWarper(m)(None, x.clone()))
    assert_same_filter(apply_typical_p(x, torch.full((x.size(0),), m)), TypicalLogitsWarper(m)(None, x.clone()))


def test_typical_p_can_drop_the_most_likely_token_and_1_is_off():
    """What sets typical apart from top-p: in a flat-topped row the top token is less typical than
    its neighbours (its -log p is far below the entropy) and can go. A per-row 1 keeps every token,
    even those of no mass."""
    x = torch.tensor([[4.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0]])  # p ≈ 0.45, then 9 × 0.06
    kept = apply_typical_p(x, 0.5).isfinite()[0]
    assert not kept[0] and kept[1:].all()
    assert torch.equal(kept, TypicalLogitsWarper(0.5)(None, x.clone()).isfinite()[0])
    tail = torch.tensor([[0.0, -200.0, float("-inf")]])  # exp(-200) is 0 in float32
    assert torch.equal(apply_typical_p(tail, torch.tensor([1.0])), tail)
    assert apply_typical_p(tail, 1.0) is tail


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("cutoff", [1e-4, 3e-3, 0.02, 0.3, 0.99])  # 0.99: the top token alone
def test_epsilon_and_eta_match_transformers(cutoff, ties):
    """EpsilonLogitsWarper and EtaLogitsWarper, as a number and per row; both keep a tie group at
    the top whole (their min_tokens_to_keep=1 keeps every token tied with the largest)."""
    x = random_logits(12, ties=ties)
    rows = torch.full((x.size(0),), cutoff)
    for ours, theirs, name in ((apply_epsilon, EpsilonLogitsWarper, "epsilon"), (apply_eta, EtaLogitsWarper, "eta")):
        want = theirs(cutoff)(None, x.clone())
        assert_same_filter(ours(x, cutoff), want), name
        assert_same_filter(ours(x, rows), want), name


def test_eta_floor_follows_the_rows_entropy_and_0_is_off():
    """What sets eta apart from epsilon: a flat row (high entropy) gets a lower floor, so its many
    plausible tokens stay where epsilon's fixed floor drops them. A per-row 0 keeps every token."""
    flat = torch.zeros(1, 100)  # p = 0.01 each; H = ln 100, so eta's floor is min(0.02, √0.02/100) ≈ 0.0014
    assert apply_eta(flat, 0.02).isfinite().all()
    assert apply_epsilon(flat, 0.02).isfinite().sum() == 100  # all tied with the top: kept (min_tokens_to_keep)
    peaked = torch.tensor([[5.0, 1.0, 0.0, 0.0, -1.0]])  # p ≈ .967 .018 .007 .007 .002; H ≈ 0.18: the floor is η
    assert apply_eta(peaked, 0.01).isfinite()[0].tolist() == [True, True, False, False, False]
    x = random_logits(13, B=2)
    assert torch.equal(apply_eta(x, torch.zeros(2)), x) and torch.equal(apply_epsilon(x, torch.zeros(2)), x)


def test_the_whole_filter_chain_matches_transformers_order_with_epsilon_and_eta():
    x = random_logits(14)
    theirs = x.clone()
    for warper in (TemperatureLogitsWarper(0.9), TopKLogitsWarper(60), TopPLogitsWarper(0.95), MinPLogitsWarper(0.01),
                   TypicalLogitsWarper(0.9), EpsilonLogitsWarper(3e-3), EtaLogitsWarper(3e-3)):
        theirs = warper(None, theirs)
    ours = filter_logits(x, temperature=0.9, top_k=60, top_p=0.95, min_p=0.01, typical_p=0.9, epsilon_cutoff=3e-3,
                         eta_cutoff=3e-3)
    assert_same_filter(ours, theirs)


@pytest.mark.parametrize("kwargs, name", [(dict(epsilon_cutoff=1.0), "epsilon_cutoff"), (dict(eta_cutoff=-0.1), "eta_cutoff"),
                                          (dict(eta_cutoff=float("nan")), "eta_cutoff"),
                                          (dict(epsilon_cutoff=torch.tensor([0.1, 1.0])), "epsilon_cutoff")])
def test_epsilon_and_eta_outside_0_1_are_refused(kwargs, name):
    """[0, 1): 1 would drop every token but the top one's ties, as transformers refuses it."""
    with pytest.raises(ValueError, match=rf"{name} must be in \[0, 1\) \(0 means off\)"):
        sample(random_logits(0, B=2), **kwargs)
    with pytest.raises(ValueError, match=name):
        (apply_epsilon if name == "epsilon_cutoff" else apply_eta)(random_logits(0), 1.5)


def test_the_triton_backend_refuses_epsilon_and_eta(monkeypatch):
    """The fused kernel has neither filter: refused by name, as typical is; "auto" samples them with torch."""
    use_fake_kernel(monkeypatch, lambda logits, *args, **kwargs: logits.argmax(-1))
    x = random_logits(0, B=2)
    for kwargs in (dict(epsilon_cutoff=0.01), dict(eta_cutoff=torch.tensor([0.0, 0.0]))):
        with pytest.raises(ValueError, match=rf"backend='triton' has no {next(iter(kwargs))} filter"):
            sample(x, **kwargs, backend="triton")
    assert resolve_backend("auto", torch.device("cuda"), sampling=dict(eta_cutoff=0.01)) == "torch"


def test_filter_chain_matches_transformers_order():
    x = random_logits(4)
    theirs = x.clone()
    for warper in (TemperatureLogitsWarper(0.7), TopKLogitsWarper(40), TopPLogitsWarper(0.8), MinPLogitsWarper(0.05),
                   TypicalLogitsWarper(0.6)):
        theirs = warper(None, theirs)
    assert_same_filter(filter_logits(x, temperature=0.7, top_k=40, top_p=0.8, min_p=0.05, typical_p=0.6), theirs)


def test_per_row_parameters_equal_rowwise_scalars():
    x = random_logits(5, B=4)
    params = dict(temperature=[0.5, 1.0, 2.0, 0.0], top_k=[0, 3, 100, 7], top_p=[1.0, 0.5, 0.9, 0.2],
                  min_p=[0.0, 0.1, 0.0, 0.3], typical_p=[0.5, 1.0, 0.9, 0.2])
    batched = filter_logits(x, **{k: torch.tensor(v) for k, v in params.items()})
    for i in range(4):
        row = filter_logits(x[i:i + 1], **{k: v[i] for k, v in params.items()})
        assert torch.equal(batched[i:i + 1], row)


@pytest.mark.parametrize("penalty", [0.5, 1.3, 2.0])
def test_repetition_penalty_matches_transformers(penalty):
    x = random_logits(6, ties=True)
    ids = torch.randint(0, V, (x.size(0), 30), generator=torch.Generator().manual_seed(0))
    ours = apply_penalties(x, ids, repetition_penalty=penalty)
    theirs = RepetitionPenaltyLogitsProcessor(penalty)(ids, x.clone())
    print(f"max |diff| {(ours - theirs).abs().max().item():.2e}")
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 9])
def test_ngram_ban_matches_transformers(n):
    """Random rows of every length from 0 to 12 (n = 9 is longer than most) over a 4-token
    vocabulary, so n-grams repeat often, and one row 0 1 2 0 1 2 ... that repeats every n-gram:
    the banned tokens are transformers', exactly."""
    g = torch.Generator().manual_seed(n)
    banned = 0
    for L in range(13):
        ids = torch.randint(0, 4, (5, L), generator=g)
        ids[0] = torch.arange(L) % 3
        x = torch.randn(5, 4, generator=g)
        ours = ban_repeated_ngrams(x, ids, n)
        assert torch.equal(ours, NoRepeatNGramLogitsProcessor(n)(ids, x.clone())), f"L={L}"
        banned += int(torch.isinf(ours).sum())
    print(f"n={n}: {banned} bans")
    assert banned > 0
    assert ban_repeated_ngrams(x, ids, 0) is x  # 0 is off


def test_ngram_ban_never_counts_pads():
    """Pads (mask 0) form no n-gram and complete none: each left-padded row is banned as its real
    tokens alone would be (by transformers). The pads are ids of the same 3-token vocabulary, so
    counted as tokens (transformers' way, the mask dropped) they ban more; an id past the
    vocabulary (a pad that is no token) bans nothing."""
    g = torch.Generator().manual_seed(0)
    differs = 0
    for trial in range(40):
        n, B, L = 1 + trial % 3, 4, 8
        ids = torch.randint(0, 3, (B, L), generator=g)
        real_len = torch.randint(0, L + 1, (B,), generator=g)
        mask = (torch.arange(L) >= L - real_len[:, None]).long()  # (B, L): left-padded
        x = torch.randn(B, 3, generator=g)
        ours = ban_repeated_ngrams(x, ids, n, mask)
        for b in range(B):
            alone = ids[b:b + 1, L - int(real_len[b]):]
            assert torch.equal(ours[b:b + 1], NoRepeatNGramLogitsProcessor(n)(alone, x[b:b + 1].clone())), (trial, b)
        differs += not torch.equal(ours, ban_repeated_ngrams(x, ids, n))
    assert differs > 5, "the pads must matter for this test to prove anything"
    x = torch.randn(1, 3)
    for past in (3, 50256):  # the spare column, and a stale config EOS far past it (a finished row's pad)
        assert torch.equal(ban_repeated_ngrams(x, torch.tensor([[past, past, past]]), 2), x)
        assert torch.equal(ban_repeated_ngrams(x, torch.tensor([[1, past, 1]]), 2), x)  # 1 past: past is banned, nothing
    # A pad among the last n - 1 ids (a mask with a hole): the n-gram the next token would complete
    # holds a pad, so it repeats none, though 7 9 5 (real) starts with the pad's id and 9.
    x, ids = torch.randn(1, 10), torch.tensor([[5, 7, 9, 5, 7, 9]])
    assert torch.isinf(ban_repeated_ngrams(x, ids, 3)[0, 5])  # unmasked: 7 9 → 5 would repeat
    assert torch.equal(ban_repeated_ngrams(x, ids, 3, torch.tensor([[1, 1, 1, 1, 0, 1]])), x)


def test_ngram_ban_names_ids_mask_and_n_that_do_not_fit():
    """ids of one row against 3 rows of logits banned in row 0 only (scatter_ broadcast them); a
    mask of another shape was taken; n = -1 turned the ban off without a word."""
    x, ids = torch.zeros(3, 10), torch.tensor([[1, 1, 1]])
    with pytest.raises(ValueError, match=r"ids must be \(B, L\) with the logits' B=3 rows, got \(1, 3\)"):
        ban_repeated_ngrams(x, ids, 2)
    with pytest.raises(ValueError, match=r"ids must be \(B, L\).*got list"):
        ban_repeated_ngrams(x, [[1, 1, 1]] * 3, 2)
    with pytest.raises(ValueError, match=r"mask must have the ids' shape \(3, 3\), got \(3, 2\)"):
        ban_repeated_ngrams(x, ids.expand(3, 3), 2, torch.ones(3, 2))
    with pytest.raises(ValueError, match=r"n \(no_repeat_ngram_size\) must be an integer ≥ 0"):
        ban_repeated_ngrams(x, ids.expand(3, 3), -1)
    for n in (True, 2.0):  # a TypeError, as generate's no_repeat_ngram_size gives
        with pytest.raises(TypeError, match=r"n \(no_repeat_ngram_size\) must be an integer, got"):
            ban_repeated_ngrams(x, ids.expand(3, 3), n)
    with pytest.raises(ValueError, match=r"logits must be \(B, V\)"):
        ban_repeated_ngrams(torch.zeros(10), ids, 2)


def test_presence_and_frequency_penalties_follow_openai_formula():
    x = random_logits(7, B=2, V=10)
    ids = torch.tensor([[3, 3, 3, 1], [0, 9, 9, 5]])
    ours = apply_penalties(x, ids, presence_penalty=0.5, frequency_penalty=0.25)
    expected = x.clone()
    for b in range(2):
        for tok in set(ids[b].tolist()):
            count = ids[b].tolist().count(tok)
            expected[b, tok] -= 0.5 + 0.25 * count
    assert torch.allclose(ours, expected)


@pytest.mark.parametrize("kwargs, name", [
    (dict(temperature=-0.1), "temperature"), (dict(top_k=-1), "top_k"), (dict(top_p=0.0), "top_p"),
    (dict(top_p=1.5), "top_p"), (dict(min_p=-0.1), "min_p"), (dict(min_p=1.1), "min_p"),
    (dict(top_p=torch.tensor([0.5, 0.0])), "top_p"),
    # inf and NaN: the range's open end, and a value that fails every comparison.
    (dict(temperature=float("inf")), "temperature"), (dict(temperature=torch.tensor([1.0, float("inf")])), "temperature"),
    (dict(temperature=float("nan")), "temperature"), (dict(top_p=float("nan")), "top_p"),
    (dict(min_p=torch.tensor([0.1, float("nan")])), "min_p"),
    (dict(typical_p=0.0), "typical_p"), (dict(typical_p=1.5), "typical_p"), (dict(typical_p=float("nan")), "typical_p"),
    (dict(typical_p=torch.tensor([0.5, 0.0])), "typical_p"),
])
def test_out_of_range_parameters_raise(kwargs, name):
    with pytest.raises(ValueError, match=name):
        filter_logits(random_logits(0, B=2), **kwargs)
    with pytest.raises(ValueError, match=name):
        sample(random_logits(0, B=2), **kwargs)


@pytest.mark.parametrize("f, name, value", [
    (apply_temperature, "temperature", -1), (apply_temperature, "temperature", float("nan")),
    (apply_temperature, "temperature", float("inf")), (apply_top_k, "top_k", -1), (apply_top_k, "top_k", float("nan")),
    (apply_top_p, "top_p", 1.5), (apply_top_p, "top_p", float("nan")), (apply_top_p, "top_p", 0),
    (apply_min_p, "min_p", 2.0), (apply_min_p, "min_p", -0.5), (apply_min_p, "min_p", float("nan")),
    (apply_typical_p, "typical_p", 0), (apply_typical_p, "typical_p", 1.5), (apply_typical_p, "typical_p", float("nan")),
])
def test_each_public_filter_checks_a_number_it_is_given(f, name, value):
    """Called alone, the filters took any number: min_p=2 set every token to -inf (the draw then
    gave token 0), top_p=1.5 or NaN and temperature=-1 or NaN changed nothing, top_k=-1 was off."""
    with pytest.raises(ValueError, match=rf"{name} must be in .*, got {value}"):
        f(random_logits(0, B=2), value)


@pytest.mark.parametrize("value, error", [(2.5, ValueError), (0.5, ValueError), (True, TypeError)])
def test_apply_top_k_refuses_a_count_that_is_not_whole(value, error):
    """A reviewer's catch: the integer check lived in check_sampling_params alone, so apply_top_k
    kept 2 tokens for 2.5, 1 for True, and failed in torch for 0.5. (A bool is a TypeError, as for
    every integer argument; a whole float such as 2.0 is a top_k.)"""
    with pytest.raises(error, match="top_k must be an integer"):
        apply_top_k(random_logits(0, B=2), value)


@pytest.mark.parametrize("shape", [(7,), (2, 3, 7)])
def test_logits_that_are_not_one_row_per_sequence_are_named(shape):
    """(V,) and (B, T, V) logits failed inside top-p's scatter ("index 2 is out of bounds"), or
    with temperature alone drew from the wrong axis without a word."""
    x = torch.randn(shape)
    with pytest.raises(ValueError, match=rf"logits must be \(B, V\).*got {re.escape(str(shape))}"):
        filter_logits(x, top_p=0.5)
    with pytest.raises(ValueError, match=r"logits must be \(B, V\)"):
        sample(x, seed=0)
    with pytest.raises(ValueError, match=r"logits must be \(B, V\)"):
        apply_penalties(x, torch.zeros(1, 3, dtype=torch.long), repetition_penalty=1.2)
    with pytest.raises(ValueError, match=r"ids must be \(B, T\) with the logits' B=2 rows, got \(3,\)"):
        apply_penalties(torch.randn(2, 7), torch.zeros(3, dtype=torch.long), repetition_penalty=1.2)
    with pytest.raises(ValueError, match=r"ids must be \(B, T\) with the logits' B=2 rows, got list"):
        apply_penalties(torch.randn(2, 7), [[1, 2], [3, 4]], repetition_penalty=1.2)  # not "no attribute 'dim'"


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_a_row_of_bad_logits_gets_token_minus_one_as_from_the_kernel(temperature):
    """NaN, +inf or all -inf: the fused kernel answers -1; the torch backend drew token 0 (the
    first NaN's index, or argmax of nothing) as if it were a token."""
    x = random_logits(0, B=4)
    good = sample(x, temperature=temperature, top_k=5, seed=0)
    x[1, 3], x[2, 7], x[3] = float("nan"), float("inf"), float("-inf")
    assert sample(x, temperature=temperature, top_k=5, seed=0).tolist() == [good[0].item(), -1, -1, -1]


def test_numpy_numbers_are_numbers_and_lists_are_named():
    """np.float64(0.9) as top_p failed inside top-p ("bitwise_and_cpu not implemented for 'Float'",
    NumPy took over the `&`); a list failed as "'>=' not supported between 'list' and 'int'"."""
    x = random_logits(0, B=2)
    params = dict(temperature=0.7, top_k=40, top_p=0.9, min_p=0.05)
    as_numpy = {"temperature": np.float64(0.7), "top_k": np.int64(40), "top_p": np.float64(0.9), "min_p": np.float32(0.05)}
    assert torch.equal(filter_logits(x, **as_numpy), filter_logits(x, **params))
    assert torch.equal(sample(x, seed=1, **as_numpy), sample(x, seed=1, **params))
    ids = torch.tensor([[1, 2], [3, 3]])
    assert torch.equal(apply_penalties(x, ids, repetition_penalty=np.float64(1.3), presence_penalty=np.float32(0.5)),
                       apply_penalties(x, ids, repetition_penalty=1.3, presence_penalty=float(np.float32(0.5))))
    with pytest.raises(ValueError, match="top_k must be an integer, got 2.5"):
        sample(x, top_k=np.float32(2.5))  # not silently 2, as a Python 2.5 is not
    with pytest.raises(TypeError, match="top_k must be an integer, got the bool True"):
        sample(x, top_k=True)  # not silently 1
    with pytest.raises(TypeError, match="seed must be an integer, got the bool True"):
        sample(x, seed=True)
    with pytest.raises(TypeError, match=r"temperature must be a number, or a \(B,\) tensor .* got list"):
        sample(x, temperature=[0.5, 1.0])
    with pytest.raises(TypeError, match=r"repetition_penalty must be a number, .* got ndarray"):
        apply_penalties(x, ids, repetition_penalty=np.array([1.1, 1.2]))


def test_per_row_tensor_of_the_wrong_length_is_named():
    with pytest.raises(ValueError, match=r"temperature has 3 values \(shape \(3,\)\).*: 2"):
        sample(random_logits(0, B=2), temperature=torch.tensor([1.0, 0.5, 0.7]))


@pytest.mark.parametrize("kwargs, name", [(dict(repetition_penalty=0.0), "repetition_penalty"),
                                          (dict(repetition_penalty=float("inf")), "repetition_penalty"),
                                          (dict(repetition_penalty=float("nan")), "repetition_penalty"),
                                          (dict(presence_penalty=3.0), "presence_penalty"),
                                          (dict(presence_penalty=float("nan")), "presence_penalty"),
                                          (dict(frequency_penalty=torch.tensor([float("nan")])), "frequency_penalty"),
                                          (dict(frequency_penalty=-2.5), "frequency_penalty")])
def test_out_of_range_penalties_raise(kwargs, name):
    with pytest.raises(ValueError, match=name):
        apply_penalties(random_logits(0, B=2), torch.zeros(2, 3, dtype=torch.long), **kwargs)


def test_temperature_zero_is_argmax_and_seed_reproduces():
    x = random_logits(8, B=16)
    assert torch.equal(sample(x, temperature=0.0), x.argmax(-1))
    mixed = torch.tensor([0.0, 1.0] * 8)
    a = sample(x, temperature=mixed, top_p=0.9, seed=123)
    assert torch.equal(a[::2], x.argmax(-1)[::2])  # greedy rows stay greedy among sampled ones
    assert torch.equal(a, sample(x, temperature=mixed, top_p=0.9, seed=123))
    draws = torch.stack([sample(x, seed=s) for s in range(5)])
    assert len({tuple(d.tolist()) for d in draws}) > 1  # different seeds, different tokens


def two_close_logits() -> torch.Tensor:
    """The audit's row: 5 and 5 + 2 ulp (9.5e-7 apart), (2,). At T = 1e-7 they are 9.5 apart."""
    five = torch.tensor(5.0)
    up = torch.nextafter(five, torch.tensor(9.0))
    return torch.stack([five, torch.nextafter(up, torch.tensor(9.0))])


def assert_drawn_as_often(tokens: torch.Tensor, token: int, p: float) -> None:
    """`token` drawn within 4 standard errors of p · N times in the N draws `tokens`."""
    N, count = tokens.numel(), int((tokens == token).sum())
    se = math.sqrt(N * p * (1 - p))
    print(f"token {token}: {count} of {N} draws, expected {N * p:.1f} ± {se:.1f}")
    assert abs(count - N * p) <= 4 * se, f"token {token} drawn {count} times in {N}, expected {N * p:.1f} ± {se:.1f}"


def test_a_temperature_below_1e_6_draws_from_its_own_softmax():
    """Temperatures below 1e-6 were raised to MIN_TEMPERATURE = 1e-6: at T = 1e-7 the lower of
    5 and 5 + 2 ulp came 27% of the time, not softmax's 0.0072%. Plain fp32 division would not do
    either: 5 / 1e-7 = 5e7, where fp32's values are 4 apart, rounds the gap 9.5 to 8 (0.034%).
    The filters, the whole-row draw and the CPU picker's short list (top-k) all follow the exact p."""
    row, T = two_close_logits(), 1e-7
    p_lower = (row.double() / T).softmax(-1)[0].item()  # 7.2e-5
    assert filter_logits(row[None], temperature=T).softmax(-1)[0, 0].item() == pytest.approx(p_lower, rel=1e-4)
    N = 200_000
    assert_drawn_as_often(sample(row.expand(N, 2), temperature=T, seed=0), 0, p_lower)
    listed = torch.cat([row, torch.tensor([-30.0])])  # top-k 2 of 3: the short list (top_k_shortlist)
    assert_drawn_as_often(sample(listed.expand(N, 3), temperature=T, top_k=2, seed=1), 0, p_lower)
    per_row = torch.full((N,), T)
    assert_drawn_as_often(sample(row.expand(N, 2), temperature=per_row, top_p=0.99999, seed=2), 0, p_lower)


@pytest.mark.parametrize("t", [1e-30, 1e-40, 1e-45, 1e-300, torch.full((64,), 1e-30), torch.full((64,), 1e-40)])
def test_a_tiny_temperature_is_the_argmax_without_nan(t):
    """A temperature of 1e-30 makes 5 / T overflow fp32 (inf - inf = NaN in the softmax), and 1e-50
    is 0 in fp32; below fp32's smallest normal (1e-40, a subnormal) T is taken as 1.2e-38, a number
    or a (B,) tensor alike. Each is the argmax, even of logits 2 ulp apart, which the old floor at
    1e-6 drew 27% of the time from the lower one."""
    row = two_close_logits()
    filtered = filter_logits(row[None], temperature=t if isinstance(t, float) else t[:1], top_p=0.5, min_p=0.1)
    assert not filtered.isnan().any() and filtered[0].argmax() == 1
    assert sample(row.expand(64, 2), temperature=t, seed=0).tolist() == [1] * 64
    x = random_logits(10, B=2)
    assert torch.equal(sample(x, temperature=t if isinstance(t, float) else t[:2], seed=0), x.argmax(-1))


def test_a_tensor_temperature_leaves_greedy_rows_alone_and_floors_a_tiny_t_as_a_number_does():
    """A mutation audit: apply_temperature's per-row path was pinned only through filter_logits,
    which puts greedy rows back afterwards. Its own result: a row of temperature 0 left as it is
    (its docstring), and a T below fp32's smallest normal taken as MIN_TEMPERATURE, as a number is:
    logits 1e-39 apart at T = 1e-40 weigh 0.52 / 0.48 either way (unfloored, 0.99995 / 0.00005)."""
    x = torch.tensor([[2.0, 1.0, 0.5], [2.0, 1.0, 0.5]])
    scaled = apply_temperature(x, torch.tensor([0.0, 0.5]))
    assert torch.equal(scaled[0], x[0]) and torch.equal(scaled[1], apply_temperature(x[1:], 0.5)[0])
    close = torch.tensor([[0.0, -1e-39]])
    as_number = apply_temperature(close, 1e-40).softmax(-1)
    assert torch.equal(apply_temperature(close, torch.tensor([1e-40])).softmax(-1), as_number)
    assert as_number[0, 0].item() == pytest.approx(0.5213, abs=1e-3)


@pytest.mark.parametrize("name, value, kept", [("epsilon_cutoff", 0.25, [0, 1]), ("eta_cutoff", 0.5, [0, 1]),
                                               ("eta_cutoff", 0.1, [0, 1, 2]), ("typical_p", 0.3, [1])])
def test_each_filter_after_min_p_reaches_the_draw_under_its_own_name(name, value, kept):
    """A mutation audit: token_picker's draw got epsilon_cutoff's value as eta_cutoff's and the
    reverse, and every test passed (they checked that a filter changes the draws, not which). The
    tokens drawn are exactly the ones filter_logits keeps under that name, on the CPU's short-list
    path and on the whole row (top-k 3 of 3 lists them all)."""
    logits = torch.tensor([0.5, 0.3, 0.2]).log().expand(3000, 3)
    assert (filter_logits(logits[:1], **{name: value})[0] > float("-inf")).nonzero().flatten().tolist() == kept
    for listed in (dict(), dict(top_k=3)):
        drawn = sample(logits, **{name: value}, **listed, seed=0)
        assert sorted(set(drawn.tolist())) == kept, listed


@pytest.mark.parametrize("filters, listed", [(dict(top_k=50), 50), (dict(top_p=0.5), 1024), (dict(min_p=0.3), None),
                                             (dict(top_p=0.5, min_p=0.3), 1024), (dict(), 4000)])
def test_the_cpu_picker_draws_noise_for_its_short_list_only(monkeypatch, filters, listed):
    """A mutation audit: the CPU's short list (top-k's, top-p's head of TOP_P_HEAD = 1024, or the
    one min-p makes alone) could be skipped for the whole row, or min-p's list dropped, and every
    test passed: the distribution is the same. What it saves is noise and a draw over the whole
    row: one noise value per listed token (None: min-p's few), the whole row's only unfiltered."""
    shapes = []
    noise = minigpt.sampling.exponential_noise
    monkeypatch.setattr(minigpt.sampling, "exponential_noise", lambda shape, *a: shapes.append(tuple(shape)) or noise(shape, *a))
    logits = torch.randn(2, 4000, generator=torch.Generator().manual_seed(0)) * 3
    sample(logits, temperature=0.9, **filters, seed=0)
    assert len(shapes) == 1 and shapes[0][0] == 2 and (shapes[0][1] == listed if listed else shapes[0][1] < 50), shapes


def test_a_small_temperature_keeps_bad_rows_bad_and_masked_tokens_masked():
    """A small T divides a row measured from its max, (l - max) / T (it was floored at 1e-6: l / 1e-6).
    The rows `sample` calls bad stay as they were, and bad: NaN, +inf or all -inf give -1 (shifted,
    a +inf row would turn into inf - inf = NaN); a -inf token stays -inf."""
    x = torch.tensor([[1.0, float("-inf"), 2.0], [float("nan"), 1.0, 2.0], [float("inf"), 1.0, 2.0], [float("-inf")] * 3])
    scaled = apply_temperature(x, 1e-30)
    assert torch.equal(scaled[0], torch.tensor([-1.0, float("-inf"), 0.0]) / 1e-30)
    assert scaled[1].isnan()[0] and scaled[2, 0] == float("inf") and (scaled[3] == float("-inf")).all()
    assert sample(x, temperature=1e-30, seed=0).tolist() == [2, -1, -1, -1]


def test_a_greedy_row_takes_the_first_of_tied_top_tokens_whatever_the_filters():
    """A greedy row takes the first of its tied top tokens, 1 here, as scalar temperature 0, the
    kernel and transformers' greedy decoding do. Per-row temperature 0 took the argmax of the
    *filtered* logits, and top-p then kept one of the ties (whichever its sort put last: token 2).
    Greedy rows are not filtered; a sampled row's top-p keeps both ties."""
    x = torch.tensor([[1.0, 4, 4, 2], [1.0, 4, 4, 2]])
    for top_p in (0.1, 0.6):
        assert sample(x, temperature=torch.tensor([0.0, 0.0]), top_p=top_p).tolist() == [1, 1]
        assert sample(x, temperature=0.0, top_p=top_p).tolist() == [1, 1]
    assert torch.equal(filter_logits(x, temperature=torch.tensor([0.0, 1.0]), top_p=0.1)[0], x[0])  # greedy row: as is
    assert filter_logits(x, temperature=torch.tensor([0.0, 1.0]), top_p=0.1)[1].isinf().sum() == 2  # sampled row: filtered


@pytest.mark.parametrize("kwargs", [dict(), dict(temperature=0.7, top_k=5), dict(top_p=0.8), dict(min_p=0.2),
                                    dict(temperature=0.8, top_k=9, top_p=0.95, min_p=0.05), dict(typical_p=0.6),
                                    dict(temperature=0.8, top_k=9, top_p=0.95, min_p=0.05, typical_p=0.7),
                                    dict(epsilon_cutoff=0.02), dict(eta_cutoff=0.02),
                                    dict(temperature=0.8, top_k=9, typical_p=0.9, epsilon_cutoff=0.01, eta_cutoff=0.01)])
@pytest.mark.parametrize("V", [12, 1100])
def test_empirical_frequencies_follow_filtered_distribution(kwargs, V):
    """Chi-square goodness of fit: 40 000 draws (one batched call) against the filtered probabilities.
    With top-k, or top-p over a row longer than TOP_P_HEAD (V 1100: twelve likely tokens and 1088
    near-impossible ones), the draw runs on a short list (`top_k_top_p_on_cpu`)."""
    logits = torch.randn(1, 12, generator=torch.Generator().manual_seed(9)) * 1.5
    logits = torch.cat([logits, torch.full((1, V - 12), -30.0)], dim=1)
    probs = filter_logits(logits, **kwargs).softmax(-1)[0]
    N = 40_000
    tokens = sample(logits.expand(N, -1), seed=2024, **kwargs)
    counts = torch.bincount(tokens, minlength=V).double()
    kept = probs > 0
    assert counts[~kept].sum() == 0, "a filtered-out token was drawn"
    expected = probs[kept].double() * N
    chi2 = ((counts[kept] - expected) ** 2 / expected).sum()
    dof = int(kept.sum()) - 1
    p_value = torch.special.gammaincc(torch.tensor(dof / 2, dtype=torch.double), chi2 / 2).item() if dof else 1.0
    print(f"{kwargs}: chi2={chi2.item():.2f}, dof={dof}, p={p_value:.3f}")
    assert p_value > 1e-3


logit_rows = st.lists(st.floats(-20, 20, allow_nan=False, width=32), min_size=1, max_size=40)


@settings(max_examples=80, deadline=None)
@given(row=logit_rows, t=st.floats(0, 3), k=st.integers(0, 50), p=st.floats(1e-6, 1.0), m=st.floats(0, 1),
       seed=st.integers(0, 2**31))
@example(row=[0.0, -1.401298464324817e-45], t=2.0, k=0, p=0.5, m=0.0, seed=0)  # a tie only after dividing by T
def test_property_draw_lies_in_kept_set(row, t, k, p, m, seed):
    x = torch.tensor([row])
    filtered = filter_logits(x, temperature=t, top_k=k, top_p=p, min_p=m)
    kept = torch.isfinite(filtered)[0]
    assert kept.any(), "every filter must keep at least one token"
    # A top token always survives: any one of the tied tops of the logits the filters read, x / T,
    # where two neighbours of x can round together (found: [0.0, -1.4e-45] at T=2 is a tie, and
    # top-p 0.5 keeps either, as transformers' sort does).
    scaled = apply_temperature(x, t)[0]
    assert scaled[kept].max() == scaled.max(), "a top token always survives (any one of tied tops)"
    if k:
        assert kept.sum() >= min(k, len(row)) or p < 1 or m > 0  # top-k alone keeps ≥ k (more on ties)
    token = sample(x, temperature=t, top_k=k, top_p=p, min_p=m, seed=seed)
    if t == 0:
        assert token[0] == x[0].argmax()  # greedy: the first of the top tokens, filters aside
    else:
        assert kept[token[0]]


def test_backend_resolution(monkeypatch):
    cpu = torch.device("cpu")
    assert resolve_backend("auto", cpu) == "torch"
    with pytest.raises(ValueError, match="backend"):
        resolve_backend("cuda", cpu)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="triton"):
        resolve_backend("triton", cpu)
    if importlib.util.find_spec("triton") is not None:
        # Triton's interpreter is on for "true", "ON", "yes" too (an audit's "true" was refused here).
        for on in ("1", "true", "ON", "yes"):
            monkeypatch.setenv("TRITON_INTERPRET", on)
            assert resolve_backend("triton", cpu) == "triton"


def test_an_infinite_top_k_or_an_empty_vocabulary_is_named():
    """An audit: top_k=inf passed the range check ("[0, inf)") and failed as "cannot convert float
    infinity to integer"; logits of no vocabulary failed inside argmax, or, on the kernel, as a
    complaint about splits no one passed."""
    with pytest.raises(ValueError, match=r"top_k must be in \[0, inf\) \(0 means off\), got inf"):
        sample(random_logits(0, B=2), top_k=math.inf)
    with pytest.raises(ValueError, match=r"logits have no vocabulary: shape \(2, 0\), V = 0"):
        sample(torch.zeros(2, 0))


def test_triton_backend_dispatch_passes_agreed_signature(monkeypatch):
    """sample(backend="triton") hands the kernel (B,) parameter tensors and (1,) seed/offset tensors."""
    seen = {}

    def fake_fused_sample(logits, temperature, top_k, top_p, min_p, seed, offset):
        seen.update(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p, seed=seed, offset=offset)
        return logits.argmax(-1)

    use_fake_kernel(monkeypatch, fake_fused_sample)
    x = random_logits(10, B=3)
    out = sample(x, temperature=0.5, top_k=torch.tensor([0, 2, 5]), top_p=0.9, seed=1, backend="triton")
    assert torch.equal(out, x.argmax(-1))
    assert seen["temperature"].dtype == torch.float32 and seen["temperature"].shape == (3,)
    assert seen["top_k"].dtype == torch.int32 and seen["top_k"].tolist() == [0, 2, 5]
    assert seen["seed"].shape == (1,) and seen["seed"].dtype == torch.int64
    assert seen["offset"].shape == (1,) and seen["offset"].dtype == torch.int64


def test_triton_backend_brings_legal_parameters_into_float32_as_the_torch_path_reads_them(monkeypatch):
    """A kernel audit: the parameters were cast to float32 as they were, so a temperature of 1e-50
    became 0 (greedy, where the torch path samples at its floor, MIN_TEMPERATURE), 1e39 became inf (refused:
    a RuntimeError, or -1 from a float64 tensor), and top_p 1e-46 became 0 (-1)."""
    seen = {}

    def fake_fused_sample(logits, temperature, top_k, top_p, min_p, seed, offset):
        seen.update(temperature=temperature, top_p=top_p)
        return logits.argmax(-1)

    use_fake_kernel(monkeypatch, fake_fused_sample)
    fp32 = torch.finfo(torch.float32)
    temperatures, top_ps = [1e-50, 1e39, 0.0, 0.7], [1e-46, 1.0, 0.5, 1e-46]
    wanted = ([fp32.tiny, fp32.max, 0.0, torch.tensor(0.7).item()], [fp32.tiny, 1.0, 0.5, fp32.tiny])
    sample(random_logits(10, B=4), temperature=torch.tensor(temperatures, dtype=torch.float64),
           top_p=torch.tensor(top_ps, dtype=torch.float64), seed=1, backend="triton")  # one per row
    assert (seen["temperature"].tolist(), seen["top_p"].tolist()) == wanted
    assert seen["temperature"].dtype == seen["top_p"].dtype == torch.float32
    for i, (temperature, top_p) in enumerate(zip(temperatures, top_ps)):  # as numbers
        sample(random_logits(10, B=1), temperature=temperature, top_p=top_p, seed=1, backend="triton")
        assert (seen["temperature"].item(), seen["top_p"].item()) == (wanted[0][i], wanted[1][i])


def test_triton_backend_takes_the_logits_the_torch_backend_takes(monkeypatch):
    """A kernel audit: float64 logits and a transposed view, which the torch backend samples, were
    refused by the kernel ("logits must be float32, bfloat16 or float16", "contiguous along the
    vocabulary"), so on a GPU, where "auto" picks the kernel, a call that worked on CPU raised.
    They now reach it as float32, contiguous, with the same values."""
    seen = []

    def fake_fused_sample(logits, **params):
        assert logits.dtype in (torch.float32, torch.bfloat16, torch.float16) and logits.stride(-1) == 1
        seen.append(logits)
        return logits.argmax(-1)

    use_fake_kernel(monkeypatch, fake_fused_sample)
    x = random_logits(11, B=3)
    for logits in (x.double(), x.t().contiguous().t()):
        assert torch.equal(sample(logits, top_p=0.9, seed=1, backend="triton"), x.argmax(-1))
        assert torch.equal(seen.pop(), x)


def test_per_row_parameters_of_the_wrong_length_are_named_by_every_entry_point():
    """filter_logits and apply_penalties failed inside torch ("The size of tensor a (2) must match..."),
    and ids outside the vocabulary with an indexing error; sample named the parameter."""
    x = random_logits(0, B=2)
    for kwargs in (dict(top_p=torch.tensor([0.5, 0.9, 0.1])), dict(top_k=torch.tensor([1, 2, 3]))):
        name = next(iter(kwargs))
        with pytest.raises(ValueError, match=f"{name} has 3 values .* one per prompt \\(row of logits\\): 2"):
            filter_logits(x, **kwargs)
    ids = torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="repetition_penalty has 3 values"):
        apply_penalties(x, ids, repetition_penalty=torch.tensor([2.0, 2.0, 2.0]))
    for bad in (-1, x.size(1)):
        with pytest.raises(ValueError, match=f"ids must be token ids in \\[0, {x.size(1)}\\)"):
            apply_penalties(x, ids.fill_(bad), repetition_penalty=2.0)
    assert apply_penalties(x, ids.fill_(1), repetition_penalty=torch.tensor(2.0)).shape == x.shape  # 0-d: every row


def test_the_kernels_top_k_is_capped_not_wrapped_around():
    """The fused kernel takes k as int32: 2**32 + 1 became 1 (greedy) and 2**31 an overflow error,
    where any k ≥ V keeps every token."""
    from minigpt.sampling import triton_params

    for top_k in (2**31, torch.tensor([2**32 + 1, 5])):
        k = triton_params(2, "cpu", temperature=1.0, top_k=top_k, top_p=1.0, min_p=0.0)["top_k"]
        assert k.dtype == torch.int32 and int(k[0]) == torch.iinfo(torch.int32).max


def test_a_per_row_top_p_of_1_drops_nothing_not_even_a_token_of_zero_mass():
    """top_p = 1 is off in a (B,) tensor as it is as a number: a token 200 below the top (its fp32
    probability underflows to 0) keeps its finite logit (the comment at sampling.py's drop_sorted)."""
    x = torch.tensor([[0.0, -200.0, 1.0], [0.0, -200.0, 1.0]])
    batched = filter_logits(x, top_p=torch.tensor([1.0, 0.5]))
    assert torch.equal(batched[:1], filter_logits(x[:1], top_p=1.0))
    assert torch.isfinite(batched[0]).all()


def test_top_p_and_min_p_compute_in_float32_on_half_logits():
    """The module's promise, fp32 math whatever the logits' dtype, held for filter_logits only: in
    bf16, GPT-2's 50,257 probabilities summed up kept 33 tokens too many or too few here."""
    x = random_logits(3, B=4, V=50257).bfloat16()
    for f, p in ((apply_top_p, 0.9), (apply_min_p, 0.05)):
        assert torch.equal(f(x, p).isinf(), f(x.float(), p).isinf())


@pytest.mark.parametrize("has_triton", [True, False])
def test_auto_backend_is_triton_only_on_cuda_with_triton_installed(monkeypatch, has_triton):
    """Bug guarded: 'auto' must pick the fused kernel only on a CUDA device *and* when triton
    imports; a wrong condition sent a CPU-only install (no triton, the default `pip install`)
    to the Triton kernel, which then failed to import at the first sampled token."""
    real = importlib.util.find_spec
    monkeypatch.setattr(minigpt.sampling.importlib.util, "find_spec",
                        lambda name, *a: (real("torch") if has_triton else None) if name == "triton" else real(name, *a))
    assert resolve_backend("auto", torch.device("cpu")) == "torch"
    assert resolve_backend("auto", torch.device("cuda")) == ("triton" if has_triton else "torch")
    # The kernel has no typical filter: auto samples it with torch, on CUDA too.
    assert resolve_backend("auto", torch.device("cuda"), sampling=dict(typical_p=0.9)) == "torch"
    assert resolve_backend("auto", torch.device("cuda"), sampling=dict(typical_p=1.0)) == ("triton" if has_triton else "torch")


def test_the_triton_backend_refuses_typical_p_it_would_skip(monkeypatch):
    """The fused kernel runs temperature, top-k, top-p and min-p: asked for typical too, it would
    draw from an untypical distribution without a word, so sampler="triton" refuses it by name."""
    use_fake_kernel(monkeypatch, lambda logits, *args, **kwargs: logits.argmax(-1))
    x = random_logits(0, B=2)
    for typical_p in (0.9, torch.tensor([1.0, 1.0])):
        with pytest.raises(ValueError, match=r"backend='triton' has no typical_p filter \(typical_p=.*\): use backend='torch' or 'auto'"):
            sample(x, typical_p=typical_p, backend="triton")
    assert sample(x, typical_p=1.0, backend="triton").shape == (2,)
    assert sample(x, typical_p=0.9, backend="auto", seed=0).shape == (2,)


def test_a_tensor_penalty_counts_as_on():
    """Bug guarded: penalties_on must treat any tensor penalty as on (it cannot look at the values
    without a host sync); skipping tensors made the decode loop keep no counts, so a per-prompt
    repetition_penalty=torch.tensor([...]) was silently ignored."""
    off = dict(repetition_penalty=1.0, presence_penalty=0.0, frequency_penalty=0.0)
    assert not penalties_on(off)
    assert penalties_on({**off, "repetition_penalty": torch.tensor([1.3, 1.0])})
    assert penalties_on({**off, "presence_penalty": torch.tensor([0.0])})  # a tensor is on, whatever it holds
    assert penalties_on({**off, "frequency_penalty": 0.5})


def test_the_penalties_are_still_importable_from_sampling():
    """The penalties moved to minigpt/penalties.py; minigpt.sampling.apply_penalties (the original API)
    and the other names the README showed there must stay the same functions."""
    for name in ["apply_penalties", "penalize", "ban_repeated_ngrams"]:
        assert getattr(minigpt.sampling, name) is getattr(minigpt.penalties, name)


def test_the_kernels_seed_is_drawn_from_the_callers_seed(monkeypatch):
    """Bug guarded: kernel_seed drawing its int64 from torch's global RNG instead of the seeded
    generator, so sample(backend="triton", seed=...) (and generate(seed=...) on CUDA) drew other
    tokens on every call: the seed fixed nothing."""
    seeds = []

    def fake_fused_sample(logits, temperature, top_k, top_p, min_p, seed, offset):
        seeds.append(int(seed))
        return logits.argmax(-1)

    use_fake_kernel(monkeypatch, fake_fused_sample)
    x = torch.randn(2, 10)
    for seed in (1, 1, 2):
        torch.manual_seed(len(seeds))  # the global RNG moves between calls: the seed alone must decide
        sample(x, seed=seed, backend="triton")
    assert seeds[0] == seeds[1] != seeds[2]
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(kernel_seed(g1, "cpu"), kernel_seed(g2, "cpu"))


def test_top_p_keeps_a_row_of_bad_logits_whole_whichever_path_finds_the_cut():
    """A row with a +inf or NaN logit has NaN probabilities: the whole-row sort keeps every token
    (`sample` then marks the row -1); the head's cut was +inf there, dropping every finite token,
    so the answer depended on whether another row of the batch forced the sort (a review)."""
    x = torch.randn(2, 50257, generator=torch.Generator().manual_seed(0)) * 5
    x[0, 7], x[1, 5] = float("inf"), float("nan")
    alone = apply_top_p(x, 0.9)  # peaked rows: the cut is found among the 1024 largest
    flat = torch.randn(1, 50257, generator=torch.Generator().manual_seed(1))  # its nucleus forces the whole sort
    beside_flat = apply_top_p(torch.cat([x, flat]), 0.9)[:2]
    assert torch.equal(alone.isfinite(), beside_flat.isfinite())
    assert alone.isfinite().sum(-1).tolist() == [50256, 50256]


def test_the_race_on_a_cpu_never_hands_a_negligible_token_the_win():
    """Token 0 holds all but 4.7e-9 of the mass. A float32 uniform is exactly 0 once in 2^24, and
    E = 0 (clamped to tiny) wins the race whatever its token's p: with float32 uniforms 50,256 ×
    2^-24 = 0.3% of these draws took a token of p ≈ 1e-13 (a review); float64 ones, as
    torch's exponential_ draws, make it once in 2^53."""
    x = torch.zeros(64, 50257)
    x[:, 0] = 30.0
    g = torch.Generator().manual_seed(0)
    drawn = torch.cat([sample(x, generator=g) for _ in range(50)])
    assert (drawn == 0).all(), f"{(drawn != 0).sum().item()} of {drawn.numel()} draws took a token of p ≈ 1e-13"


def test_the_noise_on_a_cpu_is_the_values_exponential_gives_for_the_same_seed():
    """exponential_noise's docstring (and BENCHMARKS.md): on a CPU it computes -log(1 - U) from
    float64 uniforms in vectorized passes, the values torch's scalar exponential_ gives."""
    from minigpt.sampling import exponential_noise

    g1, g2 = torch.Generator().manual_seed(11), torch.Generator().manual_seed(11)
    ours = exponential_noise((3, 5000), "cpu", g1)
    torch_s = torch.empty(3, 5000).exponential_(generator=g2).clamp_min_(torch.finfo(torch.float32).tiny)
    assert torch.equal(ours, torch_s)


@pytest.mark.parametrize("V", [50, 5000])  # 5000: past TOP_P_HEAD, so top-p's cut is sought in a CPU head
@pytest.mark.parametrize("f, value", [(apply_top_k, 1), (apply_top_k, 5), (apply_top_k, 10**6), (apply_top_p, 0.5),
                                      (apply_top_p, 0.9), (apply_min_p, 0.3), (apply_temperature, 0.5),
                                      (apply_typical_p, 0.5)])
def test_each_filter_works_along_the_last_dim_whatever_comes_before_it(f, value, V):
    """apply_top_k and apply_top_p assumed (B, V): on a model's (B, T, V) logits top_k=1 kept 0 to 3
    tokens a position and a k past V about half of them, other k failed on a broadcast, top-p on
    "index 40 is out of bounds", and (V,) logits raised IndexError. Each filter now equals itself
    applied to every row alone, as min-p and temperature did already."""
    x = torch.randn(2, 3, V, generator=torch.Generator().manual_seed(0)) * 3  # (B, T, V)
    by_row = torch.stack([torch.stack([f(x[b, t][None], value)[0] for t in range(3)]) for b in range(2)])
    assert torch.equal(f(x, value), by_row)
    assert torch.equal(f(x[1, 2], value), by_row[1, 2])  # (V,)
    if f is apply_top_k:
        assert (f(x, value).isfinite().sum(-1) == min(value, V)).all()


@pytest.mark.parametrize("f, name, value", [(apply_top_k, "top_k", torch.tensor([1, 2])),
                                            (apply_top_p, "top_p", torch.tensor([0.5, 0.9])),
                                            (apply_min_p, "min_p", torch.tensor([0.1, 0.2])),
                                            (apply_temperature, "temperature", torch.tensor([0.5, 2.0])),
                                            (apply_typical_p, "typical_p", torch.tensor([0.5, 0.9]))])
def test_a_per_row_parameter_needs_one_row_of_logits_per_value(f, name, value):
    """A (B,) tensor parameter is shaped (B, 1) against the vocabulary: over (B, T, V) logits with
    B == T it lined up with T and filtered each position with another row's value, without a word.
    It is refused there, by name; (B, V) logits take it as before, and a 0-d tensor, with no
    vocabulary to filter, is named too."""
    x = torch.randn(2, 2, 10)
    with pytest.raises(ValueError, match=rf"{name} as a tensor holds one value per row of \(B, V\) logits.*\(2, 2, 10\)"):
        f(x, value)
    assert f(x[:, -1], value).shape == (2, 10)
    with pytest.raises(ValueError, match="logits must have a vocabulary dim.*0-d"):
        f(torch.tensor(1.0), 0.5 if name != "top_k" else 1)


def exact_mass_row(masses: list[float], V: int) -> torch.Tensor:
    """(1, V) logits: the log of `masses` (binary fractions summing to 1, so that the softmax and its
    cumulative sums come out exact), then -inf up to V (no mass: the sums stay exact)."""
    x = torch.full((1, V), float("-inf"))
    x[0, :len(masses)] = torch.tensor(masses).log()
    return x


@pytest.mark.parametrize("V", [6, 2048])  # 2048: past TOP_P_HEAD, so on a CPU the cut is sought in a head
@pytest.mark.parametrize("top_p, n_kept", [(0.5, 1), (0.75, 2), (0.875, 3)])
def test_top_p_drops_a_tail_whose_mass_is_exactly_1_minus_top_p(V, top_p, n_kept):
    """Masses .5, .25, .125, .0625, .03125, .03125: cumulated from the least likely they reach
    1 - top_p exactly, and transformers drops that tail (cum ≤ 1 - top_p), keeping 1, 2, 3 tokens.
    No test had such a row: a mutation audit's `cum < 1 - p` in top_p_cut_by_sort (the sort, V 6)
    and `tail >= 1 - p` in top_p_cut_in_head (the CPU head, V 2048) each kept one token more and
    passed every test. apply_top_p (top_p a number or per row) and `sample`'s CPU path keep what
    TopPLogitsWarper keeps, and the draws take each kept token."""
    from minigpt.sampling_cpu import TOP_P_HEAD, top_p_cut_in_head

    x = exact_mass_row([0.5, 0.25, 0.125, 0.0625, 0.03125, 0.03125], V)
    assert (top_p_cut_in_head(x, top_p) is not None) == (V > TOP_P_HEAD)  # the path this V is meant to take
    theirs = TopPLogitsWarper(top_p)(None, x.clone())
    assert theirs.isfinite()[0].nonzero().flatten().tolist() == list(range(n_kept))
    assert_same_filter(apply_top_p(x, top_p), theirs)
    assert_same_filter(apply_top_p(x, torch.tensor([top_p])), theirs)
    tokens = sample(x.expand(2000, V), top_p=top_p, seed=0)
    assert sorted(set(tokens.tolist())) == list(range(n_kept))


@pytest.mark.parametrize("typical_p, kept", [(0.25, [1]), (0.75, [0, 1])])
def test_typical_p_keeps_up_to_the_token_whose_mass_reaches_typical_p_exactly(typical_p, kept):
    """Masses .5, .25, .125, .125: the entropy is 1.213 nats, so by typicality |-log p - H| the order
    is .25 (0.17), .5 (0.52), then the .125s (0.87), and the mass cumulates to .25, .75, 1, 1:
    exactly typical_p. transformers keeps up to and including the token that reaches it; no test
    had a row where the mass lands on typical_p, and a mutation audit's `cum <= mass` in
    apply_typical_p (which keeps the next token too: 2 and 4 tokens) passed every test.
    apply_typical_p and `sample`'s CPU path keep what TypicalLogitsWarper keeps."""
    x = exact_mass_row([0.5, 0.25, 0.125, 0.125], 4)
    theirs = TypicalLogitsWarper(typical_p)(None, x.clone())
    assert theirs.isfinite()[0].nonzero().flatten().tolist() == kept
    assert_same_filter(apply_typical_p(x, typical_p), theirs)
    tokens = sample(x.expand(2000, 4), typical_p=typical_p, seed=0)
    assert sorted(set(tokens.tolist())) == kept


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_every_public_filter_and_draw_compute_in_float32_on_half_logits(dtype):
    """An audit: the module promises fp32 math whatever the logits' dtype, but apply_temperature
    (and the other public filters, and draw) computed on bf16 logits in bf16: logits / 0.7 rounded
    to 8 bits moved kept probabilities by up to 8.6%. Each now gives, on half logits, exactly what
    it gives on the same values in fp32, in fp32; fp32 logits come back uncopied where unchanged."""
    x = (random_logits(5, B=4, V=5000) + 10).to(dtype)  # logits around 10: bf16's steps there are 1/16
    filters = [(apply_temperature, 0.7), (apply_top_k, 50), (apply_top_p, 0.9), (apply_min_p, 0.05),
               (apply_typical_p, 0.9), (apply_epsilon, 3e-4), (apply_eta, 3e-4)]
    for f, value in filters:
        ours = f(x, value)
        assert ours.dtype == torch.float32 and torch.equal(ours, f(x.float(), value)), f.__name__
    noise = minigpt.sampling.exponential_noise(x.shape, "cpu", torch.Generator().manual_seed(0))
    scaled = apply_temperature(x, 0.7).to(dtype)  # half logits to draw from: their softmax in fp32
    assert torch.equal(minigpt.sampling.draw(scaled, noise, 1.0), minigpt.sampling.draw(scaled.float(), noise, 1.0))
    same = x.float()
    assert apply_top_k(same, 0) is same  # fp32 in, an off filter: no copy
