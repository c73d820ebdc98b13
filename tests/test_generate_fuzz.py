"""Differential fuzzing of generate(): hypothesis draws deterministic decoding problems (greedy or
beam search, EOS ids, pads, min_new_tokens, repetition penalty, n-gram ban) on tiny random-weight
models, and minigpt must give transformers' tokens for each prompt alone, and the same tokens for
it inside a left-padded batch. The hand-written cases are tests/test_generate.py; this file looks
between them. HYPOTHESIS_PROFILE=explore (tests/conftest.py) draws new examples per run.

Sampling is left out: the two libraries draw from different random streams.
"""
import math
from contextlib import contextmanager

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from minigpt.generation import generate
from test_generate import left_padded, sharpened_pair, tiny_config

# The smallest gap between two scores trusted to rank the same in both libraries: their float32
# logits differ by ~5e-5 here (other kernels, other summation orders), so a closer call is a coin
# toss that may go either way, not a bug.
MARGIN = 1e-3
# Both libraries mark an impossible beam candidate by adding -1e9 to its score. Below this such
# scores are ranked by float rounding alone (-1e9 + x rounds to -1e9), so their order is no signal.
DEAD = -1e8
EXAMPLES = 200  # ~8 s on 2 idle cores (11 s with the imports); the deterministic profile draws the same ones


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models, hundreds of small generate calls: a second torch thread only adds waiting
    (as in tests/test_train_reference.py)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Twins(dict):
    """Models by name, shown by name: a failing example prints its arguments, this one too."""

    def __repr__(self) -> str:
        return f"Twins({', '.join(self)})"


@pytest.fixture(scope="module")
def models():
    """Three sharpened minigpt/transformers twins: varied text (test_generate's `pair`), text that
    repeats itself (so the n-gram ban and the repetition penalty act), and a 12-token vocabulary
    (where the ban runs out of tokens and beams out of continuations)."""
    return Twins(varied=sharpened_pair(tiny_config()), looping=sharpened_pair(tiny_config(initializer_range=0.1)),
                 small=sharpened_pair(tiny_config(vocab_size=12)))


def draw_problem(data, model) -> tuple[list[list[int]], dict]:
    """Prompts (1-4, of 1-8 tokens) and generate's keyword arguments for them."""
    V = model.config.vocab_size
    prompts = data.draw(st.lists(st.lists(st.integers(0, V - 1), min_size=1, max_size=8), min_size=1, max_size=4),
                        "prompts")
    max_new = data.draw(st.integers(1, 10), "max_new_tokens")
    # EOS ids the model makes (taken from its plain greedy text) end rows early; others rarely do.
    made = generate(model, *left_padded(prompts), max_new_tokens=max_new, eos_token_id=[])[:, -max_new:]
    eos = data.draw(st.lists(st.sampled_from(sorted(set(made.flatten().tolist()))) | st.integers(0, V - 1),
                             max_size=3, unique=True), "eos")
    beams = data.draw(st.integers(1, 4), "num_beams")
    kw = dict(max_new_tokens=max_new, min_new_tokens=data.draw(st.just(0) | st.integers(0, max_new), "min_new_tokens"),
              eos_token_id=eos[0] if len(eos) == 1 else eos,
              repetition_penalty=data.draw(st.sampled_from([1.0, 0.8, 1.3, 2.0]), "repetition_penalty"),
              no_repeat_ngram_size=data.draw(st.integers(0, 3), "no_repeat_ngram_size"),
              # No pad 0 with beams: transformers' beam search reads pad_token_id 0 as "none" and pads
              # with the first EOS id instead (`pad_token_id or eos_token_id[0]`); minigpt pads with 0.
              pad_token_id=data.draw(st.none() | st.integers(0 if beams == 1 else 1, V - 1), "pad_token_id"))
    if beams > 1:
        kw.update(num_beams=beams, num_return_sequences=data.draw(st.integers(1, beams), "num_return_sequences"),
                  length_penalty=data.draw(st.sampled_from([-1.0, 0.0, 0.6, 1.0, 2.0]), "length_penalty"),
                  early_stopping=data.draw(st.sampled_from([False, True, "never"]), "early_stopping"))
    return prompts, kw


def eos_ids(kw: dict) -> list[int]:
    return [kw["eos_token_id"]] if isinstance(kw["eos_token_id"], int) else kw["eos_token_id"]


def pads_as(kw: dict, model) -> int:
    """The id rows are padded with: pad_token_id, else the first EOS id, else the config's (none ends)."""
    return kw["pad_token_id"] if kw["pad_token_id"] is not None else (eos_ids(kw) + [model.config.eos_token_id])[0]


def for_transformers(kw: dict) -> dict:
    """generate's arguments as transformers takes them: minigpt's "no EOS" is [], transformers' None."""
    return dict(kw, eos_token_id=eos_ids(kw) or None)


@contextmanager
def ranking_gaps():
    """While transformers' beam search runs, record the smallest gap between neighbours in every
    ranking it makes (each torch.topk: candidates, running beams, finished hypotheses), down to one
    past the cut, since which side of the cut a score falls on matters as much as the order."""
    gaps = [math.inf]
    topk = torch.topk

    def recording(input, k, *args, **kwargs):
        top = topk(input, min(k + 1, input.size(-1)), *args, **kwargs).values  # sorted, best first
        both_real = top[..., 1:] > DEAD  # (then the better neighbour is real too)
        if both_real.any():
            gaps[0] = min(gaps[0], (top[..., :-1] - top[..., 1:])[both_real].min().item())
        return topk(input, k, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch, "topk", recording)
        yield gaps


def transformers_alone(hf, prompt: list[int], kw: dict) -> tuple[torch.Tensor, float, bool]:
    """transformers on one unpadded prompt → (its output, the smallest gap any of its choices was
    made by, whether it ran out of tokens and answered anyway: greedy takes id 0 at a step whose
    every score is -inf, beam search returns leftovers scored about DEAD).

    The gaps are those of the scores each choice was made from, after the penalty, the ban and
    min_new_tokens (test_generate's margin helpers read the model's raw logits, which the
    penalty can bring into a tie). minigpt's scores differ from these by float rounding alone
    until the first token where the two part, so a wide gap everywhere here rules rounding out."""
    ids = torch.tensor([prompt])
    run = dict(attention_mask=torch.ones_like(ids), do_sample=False, output_scores=True, return_dict_in_generate=True)
    if "num_beams" not in kw:
        out = hf.generate(ids, **run, **for_transformers(kw))
        top2 = torch.cat(out.scores).topk(2, dim=-1).values  # (steps, 2): what each step's argmax saw
        exhausted = torch.isneginf(top2[:, 0])
        live = top2[:int(exhausted.int().argmax()) if exhausted.any() else None]  # the steps before it ran out
        return out.sequences, min((live[:, 0] - live[:, 1]).tolist(), default=math.inf), bool(exhausted.any())
    with ranking_gaps() as gaps:
        out = hf.generate(ids, **run, **for_transformers(kw))
    # A leftover is scored about DEAD (a candidate that was not allowed to finish), or DEAD / its
    # length ** length_penalty (a dead beam's that ended); a length is up to the first EOS, else all.
    hit = torch.isin(out.sequences[:, len(prompt):], torch.tensor(eos_ids(kw)))
    lengths = torch.where(hit.any(1), (hit.cumsum(1) == 0).sum(1) + 1, kw["max_new_tokens"])  # (new may be 0 wide)
    scores = out.sequences_scores
    return out.sequences, gaps[0], bool(((scores <= DEAD) | (scores * lengths ** kw["length_penalty"] <= DEAD)).any())


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
@torch.no_grad()
def test_generate_equals_transformers_alone_and_batched(models, data):
    model, hf = models[data.draw(st.sampled_from(sorted(models)), "model")]
    prompts, kw = draw_problem(data, model)
    theirs = [transformers_alone(hf, p, kw) for p in prompts]
    assume(all(gap > MARGIN for _, gap, _ in theirs))  # a near-tie: either answer is right

    ours = []
    for prompt, (expected, _, exhausted) in zip(prompts, theirs):
        one = torch.tensor([prompt]), torch.ones(1, len(prompt), dtype=torch.long)  # (a pad id in it is text)
        if exhausted:  # where transformers answers anyway, minigpt raises (tests/test_generate.py)
            with pytest.raises(FloatingPointError, match="no_repeat_ngram_size banned every token|fewer than"):
                generate(model, *one, **kw)
        else:
            ours.append(generate(model, *one, **kw))
            assert torch.equal(ours[-1], expected), f"prompt {prompt}"

    ids, mask = left_padded(prompts)
    if any(exhausted for *_, exhausted in theirs):  # a batch holding such a prompt raises too
        first = next(b for b, (*_, exhausted) in enumerate(theirs) if exhausted)
        with pytest.raises(FloatingPointError, match=f"prompt {first}:" if "num_beams" in kw else "banned every token"):
            generate(model, ids, mask, **kw)
        return
    batched = generate(model, ids, mask, **kw)
    T, pad, n = ids.size(1), pads_as(kw, model), kw.get("num_return_sequences", 1)
    for b, (prompt, alone) in enumerate(zip(prompts, ours)):  # each prompt's n rows: as alone, then pads
        rows, new = batched[b * n:(b + 1) * n], alone[:, len(prompt):]
        assert torch.equal(rows[:, T:T + new.size(1)], new), f"prompt {b} of {prompts}"
        assert (rows[:, T + new.size(1):] == pad).all(), f"prompt {b} of {prompts}"
    # transformers on the batch too, but for the penalty and the ban: it counts left pads as tokens
    # there (minigpt does not; tests/test_generate.py's pad tests say why).
    if kw["repetition_penalty"] == 1.0 and not kw["no_repeat_ngram_size"]:
        assert torch.equal(batched, hf.generate(ids, attention_mask=mask, do_sample=False, **for_transformers(kw)))
