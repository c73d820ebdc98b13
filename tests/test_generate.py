"""generate(): greedy and beam search token for token equal to transformers; per-row EOS, stop
strings and min_new_tokens; streaming; errors; the compiled decode step."""
import copy
import importlib
import inspect
import io
import json
import math
import re
import shutil
import sys
import typing
import warnings

import numpy as np
from types import SimpleNamespace

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LogitsProcessor, LogitsProcessorList

from minigpt import GPT, GPTConfig, Tokenizer
from minigpt.checkpoint import CONV1D_SUFFIXES
from minigpt.generation import GenerationStats, generate, sequence_buffers, stream
from minigpt.stats import LoopTimer
from minigpt.prefill_decode import DecodeState, prefill_mask
from minigpt.penalties import ban_repeated_ngrams
from minigpt.stop_strings import StopStrings, first_stop
from minigpt.text_generation import cut_text, generate_text, generate_texts, stream_text, text_pieces

PAD = 1  # not 0: transformers' beam search pads with EOS when pad_token_id is 0 (falsy)


class ByteTokenizer:
    """Token id = byte value (ids ≥ 256 are specials): enough to test stop strings and streaming
    without tokenizer files, and every multi-character stop string spans token boundaries."""

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode_bytes(self, ids) -> bytes:
        return bytes(i for i in ids if i < 256)

    def decode(self, ids) -> str:
        return self.decode_bytes(ids).decode("utf-8", errors="replace")


class DigitsTokenizer(ByteTokenizer):
    """Each id as three decimal digits ("hi" = 104 105 → "104105"): tokens of several characters."""

    def decode_bytes(self, ids) -> bytes:
        return "".join(f"{i:03d}" for i in ids).encode()


def sharpened_pair(config: GPTConfig, scale: float = 10.0, seed: int = 0):
    """Random-weight minigpt GPT and the same weights in transformers.

    A large init (initializer_range 0.4) lets the blocks, not the token's own embedding, decide
    the next token, so greedy text varies instead of repeating one id. Scaling ln_f's gain scales
    every logit (logits = ln_f(h) · wte), which sharpens the distribution so rounding noise cannot
    flip an argmax; tests assert the top-2 margin they rely on.
    """
    torch.manual_seed(seed)
    model = GPT(config).eval()
    with torch.no_grad():
        model.transformer.ln_f.weight.mul_(scale)
    # The transformers twin, built in memory (no 500 MB file round trip for the 124M config).
    with torch.device("meta"):
        hf = GPT2LMHeadModel(GPT2Config(**config.to_hf_dict()))
    state = {k: (t.t() if k.endswith(CONV1D_SUFFIXES) else t) for k, t in model.state_dict().items()}
    hf.load_state_dict(state, strict=True, assign=True)  # Conv1D keeps weights as (in, out)
    return model, hf.eval()


def tiny_config(**overrides) -> GPTConfig:
    return GPTConfig.gpt2("gpt2-tiny", **{"vocab_size": 300, "initializer_range": 0.4, **overrides})


@pytest.fixture(scope="module")
def pair():
    return sharpened_pair(tiny_config())


def eos_from(model, ids, mask, row: int, step: int) -> int:
    """A token that greedy decoding makes in `row` at `step`: used as EOS so rows end early."""
    return int(generate(model, ids, mask, max_new_tokens=step + 1, eos_token_id=[])[row, -1])


def left_padded(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    T = max(len(r) for r in rows)
    ids = torch.tensor([[PAD] * (T - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (T - len(r)) + [1] * len(r) for r in rows])
    return ids, mask


def teacher_forced_logits(model: GPT, ids: torch.Tensor, mask: torch.Tensor, new: torch.Tensor,
                          compile: bool) -> torch.Tensor:
    """The decode loop's logits (B, S, V) when it is fed `new` (B, S): prefill, then a step per token."""
    state = DecodeState(model, mask, new.size(1), compile)
    logits = [state.prefill(ids)]
    for s in range(new.size(1) - 1):
        logits.append(state.step(new[:, s:s + 1]).clone())  # (a CUDA graph's next replay overwrites its output)
    return torch.stack(logits, 1)


def assert_compiled_matches_eager_in_bf16(model: GPT, ids: torch.Tensor, mask: torch.Tensor, eager: torch.Tensor,
                                          compiled: torch.Tensor) -> None:
    """bf16 tokens of the compiled loop against the eager loop's, greedy.

    Tokens cannot be identical in every case, and the test says which: a compiled kernel adds up
    a LayerNorm's or a matmul's terms in another order than eager's, so a bf16 logit can round
    one step (of bf16's 8-bit mantissa) up or down, and where eager's two best logits tie or
    nearly tie, the other one can win. So, fed eager's tokens, every compiled step's logits must
    lie within 4 such steps of eager's (emulate_precision_casts keeps Inductor rounding where eager
    rounds: on a CPU 2.5 steps at most, 8 without it), and the tokens must be equal up to each
    row's first step whose two best logits lie within that distance of each other."""
    T = ids.size(1)
    new = eager[:, T:]
    ref = teacher_forced_logits(model, ids, mask, new, compile=False)  # (B, S, V)
    got = teacher_forced_logits(model, ids, mask, new, compile=True)
    diff = (got - ref).abs().amax(-1)  # (B, S): the step's largest logit difference
    step = 2.0 ** (torch.floor(torch.log2(ref.abs().amax(-1))) - 7)  # bf16's spacing at the step's largest logit
    print(f"compiled vs eager bf16 logits: up to {(diff / step).max().item():.1f} bf16 steps apart")
    assert (diff <= 4 * step).all()
    top2 = ref.topk(2, dim=-1).values
    near_tie = top2[..., 0] - top2[..., 1] <= 2 * diff  # where the other logit can round past the best one
    for row in range(ids.size(0)):
        differ = (compiled[row, T:] != new[row]).nonzero()
        if len(differ):
            first = differ[0].item()
            assert near_tie[row, first], f"row {row} differs at step {first}, where eager's best logit led clearly"


def min_top2_margin(model: GPT, sequences: torch.Tensor, masks: torch.Tensor, prompt_len: int) -> float:
    """Smallest gap between the two largest logits over every generated step (no cache): the
    margin by which each greedy choice beat the runner-up."""
    worst = float("inf")
    for seq, mask in zip(sequences, masks):
        real = seq[mask.bool()][None]  # the row without its pads
        logits, _ = model(real)
        n_prompt = int(mask[:prompt_len].sum())
        top2 = logits[0, n_prompt - 1:-1].topk(2, dim=-1).values
        worst = min(worst, (top2[:, 0] - top2[:, 1]).min().item())
    return worst


PROMPTS = [[5, 17, 42, 99, 7, 250, 3], [64, 8], [120, 33, 201, 14]]


@torch.no_grad()
def test_greedy_equals_transformers_batched_and_alone(pair):
    model, hf = pair
    ids, mask = left_padded(PROMPTS)
    eos = eos_from(model, ids, mask, row=1, step=6)  # so some rows end early
    ours = generate(model, ids, mask, max_new_tokens=24, eos_token_id=eos, pad_token_id=PAD)
    theirs = hf.generate(ids, attention_mask=mask, max_new_tokens=24, do_sample=False, eos_token_id=eos,
                         pad_token_id=PAD)
    out_mask = torch.cat([mask, torch.ones(len(PROMPTS), ours.size(1) - ids.size(1), dtype=torch.long)], 1)
    margin = min_top2_margin(model, ours, out_mask, ids.size(1))
    print(f"min top-2 logit margin {margin:.3g}; ours {tuple(ours.shape)}, transformers {tuple(theirs.shape)}")
    assert margin > 1e-3
    assert torch.equal(ours, theirs)
    assert (ours[:, ids.size(1):] == eos).any(), "the test wants at least one row to hit EOS"
    for b, prompt in enumerate(PROMPTS):  # each prompt alone continues exactly as in the batch
        alone = generate(model, torch.tensor([prompt]), max_new_tokens=24, eos_token_id=eos, pad_token_id=PAD)
        new = alone[0, len(prompt):].tolist()
        assert ours[b, ids.size(1):ids.size(1) + len(new)].tolist() == new


@torch.no_grad()
def test_a_left_padded_batch_without_its_mask_is_read_as_transformers_reads_it(pair):
    """An interop audit: ids left-padded with a pad id that is no EOS, passed without their mask,
    decoded the pads as text, silently (other tokens than each prompt alone). transformers infers
    the mask from the pad id; so does minigpt now, greedy and beam. With the EOS as pad (GPT-2's
    default) nothing is inferred: an <|endoftext|> in a prompt is text."""
    model, hf = pair
    ids, mask = left_padded(PROMPTS)
    for kw in (dict(max_new_tokens=8), dict(max_new_tokens=6, num_beams=3, num_return_sequences=2)):
        ours = generate(model, ids, pad_token_id=PAD, eos_token_id=[299], **kw)
        assert torch.equal(ours, generate(model, ids, mask, pad_token_id=PAD, eos_token_id=[299], **kw))
        assert torch.equal(ours, hf.generate(ids, do_sample=False, pad_token_id=PAD, eos_token_id=299, **kw))
    as_eos = generate(model, ids, pad_token_id=PAD, eos_token_id=PAD, max_new_tokens=4)  # PAD is text here
    assert torch.equal(as_eos, generate(model, ids, torch.ones_like(ids), pad_token_id=PAD, eos_token_id=PAD,
                                        max_new_tokens=4))
    assert not torch.equal(as_eos, generate(model, ids, mask, pad_token_id=PAD, eos_token_id=PAD, max_new_tokens=4))
    # The call's EOS ids decide, not the config's (an oracle's audit: a pad that is the config's EOS was
    # read as text even with eos_token_id naming another id, where transformers infers the padding).
    before = model.config.eos_token_id, hf.generation_config.eos_token_id
    model.config.eos_token_id, hf.generation_config.eos_token_id = PAD, PAD
    try:
        ours = generate(model, ids, pad_token_id=PAD, eos_token_id=[299], max_new_tokens=6)
        assert torch.equal(ours, generate(model, ids, mask, pad_token_id=PAD, eos_token_id=[299], max_new_tokens=6))
        assert torch.equal(ours, hf.generate(ids, do_sample=False, pad_token_id=PAD, eos_token_id=299, max_new_tokens=6))
    finally:
        model.config.eos_token_id, hf.generation_config.eos_token_id = before
    # A pad that is the config's BOS is text, as a prompt may open with it (a reader's audit: the
    # docstrings said "as in transformers", which reads it as padding; minigpt needs the mask).
    before = model.config.bos_token_id
    model.config.bos_token_id = PAD
    try:
        ours = generate(model, ids, pad_token_id=PAD, eos_token_id=[299], max_new_tokens=4)
        assert torch.equal(ours, generate(model, ids, torch.ones_like(ids), pad_token_id=PAD, eos_token_id=[299],
                                          max_new_tokens=4))
    finally:
        model.config.bos_token_id = before
    # A prompt that ends in the pad id, without a mask: the error says the mask was inferred.
    with pytest.raises(ValueError, match=r"left-padded .*; with no attention_mask given, the ids equal to "
                                         r"pad_token_id 1 are taken for padding: pass the mask"):
        generate(model, torch.tensor([[5, PAD]]), pad_token_id=PAD, max_new_tokens=2)


@torch.no_grad()
def test_a_model_that_names_no_pad_reads_every_prompt_id_as_text(pair):
    """A runner's audit: with neither pad_token_id nor a pad in the config, the stand-in pad that
    fills finished rows (0 for a model without EOS; the config's EOS with eos_token_id=[]) was
    taken for padding in ids given without a mask: a leading 0 or <|endoftext|> vanished from the
    prompt, and a prompt ending in it was refused as right-padded. transformers infers no mask then."""
    model, hf = pair
    saved = (model.config.bos_token_id, model.config.eos_token_id, model.config.pad_token_id,
             hf.generation_config.bos_token_id, hf.generation_config.eos_token_id, hf.generation_config.pad_token_id)
    try:
        for ids in (torch.tensor([[0, 5, 17, 42]]), torch.tensor([[5, 17, 0]])):
            model.config.bos_token_id = model.config.eos_token_id = model.config.pad_token_id = None
            hf.generation_config.bos_token_id = hf.generation_config.eos_token_id = hf.generation_config.pad_token_id = None
            ours = generate(model, ids, max_new_tokens=6)
            assert torch.equal(ours, generate(model, ids, torch.ones_like(ids), max_new_tokens=6))
            assert torch.equal(ours, hf.generate(ids, do_sample=False, max_new_tokens=6))
            model.config.eos_token_id = 0  # its EOS, no stopping: 0 is still text
            assert torch.equal(generate(model, ids, eos_token_id=[], max_new_tokens=6), ours)
    finally:
        (model.config.bos_token_id, model.config.eos_token_id, model.config.pad_token_id, hf.generation_config.bos_token_id,
         hf.generation_config.eos_token_id, hf.generation_config.pad_token_id) = saved


def test_the_text_functions_never_take_a_prompt_id_for_a_pad():
    """A reviewer's catch: generate_text and stream_text passed `stream` no mask, so once a mask-less
    call took a pad id that is no EOS for padding, a checkpoint whose pad_token_id is a token of text
    (0, "!") lost every "!" of a one-prompt text ("Hi! there" went on as "Hi there"), and "Hello!"
    was refused as not left-padded. One prompt has no pads: its text is all text, as generate_texts has it."""
    tok = ByteTokenizer()
    model = GPT(tiny_config(vocab_size=256, pad_token_id=ord("!"))).eval()
    for prompt in ("Hi! there", "Hello!"):
        ids = torch.tensor([tok.encode(prompt)])
        want = tok.decode(generate(model, ids, torch.ones_like(ids), max_new_tokens=6, eos_token_id=[])[0, ids.size(1):])
        kw = dict(max_new_tokens=6, eos_token_id=[])
        assert generate_text(model, tok, prompt, **kw) == ["".join(stream_text(model, tok, prompt, **kw))] == [want]
        assert generate_texts(model, tok, [prompt], **kw) == [[want]]
    # The mask a caller passes anyway (a reviewer's case: "got multiple values for 'attention_mask'").
    ones = torch.ones(1, len(tok.encode("Hello!")), dtype=torch.long)
    assert generate_text(model, tok, "Hello!", attention_mask=ones, **kw) == generate_text(model, tok, "Hello!", **kw)
    assert "".join(stream_text(model, tok, "Hello!", attention_mask=ones, **kw)) == generate_text(model, tok, "Hello!", **kw)[0]
    with pytest.raises(ValueError, match="attention_mask has a 0, but one prompt has no padding"):
        generate_text(model, tok, "Hello!", attention_mask=ones * 0, **kw)
    with pytest.raises(TypeError, match="generate_texts pads each batch and makes its attention_mask itself"):
        generate_texts(model, tok, ["Hello!"], attention_mask=ones, **kw)


def test_checkpoint_token_ids_are_the_ones_transformers_generates_with(pair, tmp_path):
    """Bugs guarded (an audit): a checkpoint's ids were read from config.json alone, and only some
    of them. Its pad_token_id was ignored (finished rows were padded with EOS), a
    generation_config.json beside it was never read (transformers' generate takes its ids over
    config.json's), and a null eos_token_id became GPT-2's 50256 (a real token of a vocabulary of
    50257 or more: test_model's test_null_token_ids_mean_no_such_token), where transformers never stops."""
    model, hf = pair
    ids, mask = left_padded(PROMPTS)
    eos, eos2 = eos_from(model, ids, mask, row=1, step=3), eos_from(model, ids, mask, row=2, step=5)

    def both() -> tuple[torch.Tensor, torch.Tensor]:
        ours = generate(GPT.from_pretrained(tmp_path), ids, mask, max_new_tokens=8)
        theirs = GPT2LMHeadModel.from_pretrained(tmp_path).eval().generate(ids, attention_mask=mask, max_new_tokens=8)
        return ours, theirs

    hf.config.update(dict(eos_token_id=eos, pad_token_id=PAD))
    hf.generation_config.update(eos_token_id=eos, pad_token_id=PAD)
    hf.save_pretrained(tmp_path)
    ours, theirs = both()
    assert torch.equal(ours, theirs) and (ours[:, ids.size(1):] == PAD).any()  # a row ended, padded with PAD
    gen = json.loads((tmp_path / "generation_config.json").read_text())
    (tmp_path / "generation_config.json").write_text(json.dumps(gen | {"eos_token_id": [eos, eos2]}))
    ours, theirs = both()
    assert torch.equal(ours, theirs) and (ours[:, ids.size(1):] == eos2).any()
    # An id the file lacks is none, not config.json's: no pad_token_id there, so rows are padded with EOS.
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [eos, eos2]}))
    ours, theirs = both()
    assert torch.equal(ours, theirs) and not (ours[:, ids.size(1):] == PAD).any()
    (tmp_path / "generation_config.json").unlink()
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(config | {"eos_token_id": None, "bos_token_id": None}))
    ours, theirs = both()
    assert torch.equal(ours, theirs) and ours.size(1) == ids.size(1) + 8  # no EOS: no row ends
    assert GPT.from_pretrained(tmp_path).config.eos_ids == []


@torch.no_grad()
def test_greedy_equals_transformers_124m():
    model, hf = sharpened_pair(GPTConfig.gpt2("gpt2", initializer_range=0.4))
    ids, mask = left_padded([[464, 2068, 7586, 21831], [40, 1101]])
    ours = generate(model, ids, mask, max_new_tokens=6, eos_token_id=[], pad_token_id=PAD)
    theirs = hf.generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=False, pad_token_id=PAD,
                         eos_token_id=None)
    out_mask = torch.cat([mask, torch.ones(2, 6, dtype=torch.long)], 1)
    margin = min_top2_margin(model, ours, out_mask, ids.size(1))
    print(f"124M: min top-2 margin {margin:.3g}")
    assert margin > 1e-3 and torch.equal(ours, theirs)


@torch.no_grad()
def test_repetition_penalty_and_min_new_tokens_equal_transformers(pair):
    model, hf = pair
    ids = torch.tensor([PROMPTS[0], PROMPTS[0][::-1]])  # unpadded: transformers also penalises pad ids
    eos = eos_from(model, ids, None, row=0, step=2)
    kw = dict(max_new_tokens=16, min_new_tokens=10, repetition_penalty=1.5, eos_token_id=eos, pad_token_id=PAD)
    ours = generate(model, ids, **kw)
    theirs = hf.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, **kw)
    assert torch.equal(ours, theirs)
    assert not (ours[:, ids.size(1):ids.size(1) + 10] == eos).any()


def penalized_greedy(model: GPT, prompt: list[int], steps: int, rep: float, presence: float, freq: float) -> list[int]:
    """A cache-free greedy loop over one unpadded row, with the penalties written out from token
    counts: repetition on prompt and generated tokens, presence/frequency on generated ones only."""
    seq, new = list(prompt), []
    for _ in range(steps):
        logits = model(torch.tensor([seq]))[0][0, -1].clone()
        for tok in set(seq):
            logits[tok] = logits[tok] * rep if logits[tok] < 0 else logits[tok] / rep
        for tok in set(new):
            logits[tok] -= presence + freq * new.count(tok)
        seq.append(int(logits.argmax()))
        new.append(seq[-1])
    return new


@torch.no_grad()
def test_penalties_count_what_readme_says_and_never_pads(pair):
    """README: repetition_penalty counts prompt and generated tokens, presence/frequency only
    generated ones, and pads are never counted. The pad id is a token the short row generates
    (and its prompt lacks), so a counted pad would penalise it and change that row's text."""
    model, _ = pair
    kw = dict(repetition_penalty=1.3, presence_penalty=0.8, frequency_penalty=0.4)
    expected = [penalized_greedy(model, p, 10, *kw.values()) for p in PROMPTS]
    pad = next(t for t in expected[1] if t not in PROMPTS[1])  # PROMPTS[1] is the shortest: most padded
    T = max(map(len, PROMPTS))
    ids = torch.tensor([[pad] * (T - len(p)) + p for p in PROMPTS])
    mask = torch.tensor([[0] * (T - len(p)) + [1] * len(p) for p in PROMPTS])
    ours = generate(model, ids, mask, max_new_tokens=10, eos_token_id=[], pad_token_id=pad, **kw)
    assert ours[:, T:].tolist() == expected
    plain = generate(model, ids, mask, max_new_tokens=10, eos_token_id=[], pad_token_id=pad)
    assert not torch.equal(plain, ours), "the penalties must change the text for this test to prove anything"


@torch.no_grad()
def test_presence_and_frequency_do_not_count_the_prompt(pair):
    """A prompt of one token repeated, which greedy decoding continues with that same token: at the
    first step nothing is generated yet, so presence/frequency penalties (OpenAI's: generated tokens
    only) must leave it first. Counting the prompt would charge it 2 + 2·8 and pick another."""
    model, _ = pair
    t = next(t for t in range(300) if generate(model, torch.tensor([[t] * 8]), max_new_tokens=1, eos_token_id=[])[0, -1] == t)
    out = generate(model, torch.tensor([[t] * 8]), max_new_tokens=1, eos_token_id=[], presence_penalty=2.0,
                   frequency_penalty=2.0)
    assert out[0, -1].item() == t


@torch.no_grad()
def test_min_new_tokens_lets_eos_come_exactly_after_that_many(pair):
    """min_new_tokens=s masks EOS at steps 0..s-1 only: a token greedy decoding first makes at step
    s, taken as EOS, ends the text right there (s tokens, then EOS); with s + 1 it may not."""
    model, _ = pair
    ids = torch.tensor([PROMPTS[0]])
    free = generate(model, ids, max_new_tokens=12, eos_token_id=[])[0, ids.size(1):].tolist()
    s = next(i for i in range(2, 12) if free[i] not in free[:i])  # a token first made at step s ≥ 2
    kw = dict(max_new_tokens=12, eos_token_id=free[s], pad_token_id=PAD)
    assert generate(model, ids, min_new_tokens=s, **kw)[0, ids.size(1):].tolist() == free[:s + 1]
    assert generate(model, ids, min_new_tokens=s + 1, **kw)[0, ids.size(1) + s].item() != free[s]


@pytest.mark.parametrize("early_stopping", [False, True, "never"])
@torch.no_grad()
def test_beam_search_equals_transformers(pair, early_stopping):
    model, hf = pair
    ids, mask = left_padded(PROMPTS)
    eos = eos_from(model, ids, mask, row=0, step=3)
    kw = dict(max_new_tokens=12, num_beams=4, length_penalty=0.6, early_stopping=early_stopping,
              eos_token_id=eos, pad_token_id=PAD, num_return_sequences=2)
    ours = generate(model, ids, mask, **kw)
    theirs = hf.generate(ids, attention_mask=mask, do_sample=False, **kw)
    print(f"early_stopping={early_stopping}: ours {tuple(ours.shape)}, transformers {tuple(theirs.shape)}")
    assert torch.equal(ours, theirs)
    assert (ours[:, ids.size(1):] == eos).any(), "the test wants finished hypotheses that end in EOS"


@pytest.mark.parametrize("early_stopping, num_beams, row, step, length_penalty", [
    (False, 2, 0, 1, 0.6), (False, 4, 1, 0, -1.0), ("never", 2, 0, 2, 0.6), (True, 2, 0, 0, 0.6), (True, 4, 0, 2, 2.0),
])
@torch.no_grad()
def test_beam_search_equals_transformers_where_hypotheses_finish_early(pair, early_stopping, num_beams, row, step,
                                                                       length_penalty):
    """An EOS that some beam makes at an early step, every beam returned: finished hypotheses of
    several lengths are ranked by the length penalty (over new tokens only), only the top K
    candidates may finish, and "never" judges a running beam at its best possible length."""
    model, hf = pair
    ids, mask = left_padded(PROMPTS)
    kw = dict(max_new_tokens=10, num_beams=num_beams, length_penalty=length_penalty, early_stopping=early_stopping,
              eos_token_id=eos_from(model, ids, mask, row=row, step=step), pad_token_id=PAD,
              num_return_sequences=num_beams)
    assert torch.equal(generate(model, ids, mask, **kw), hf.generate(ids, attention_mask=mask, do_sample=False, **kw))


@pytest.mark.parametrize("prompt", [[189, 7, 41, 275], [267, 85, 183, 278], [232, 219, 288, 244]])
@torch.no_grad()
def test_beam_search_with_more_eos_ids_than_beams_equals_transformers(pair, prompt):
    """(A mutation audit: this case alone tells 8 candidates from 2·K = 4.) Three EOS ids for two beams: transformers ranks max(2, 1 + n_eos)·K = 8 candidates a step, so
    two beams still run when the three EOS ids are the first step's three best candidates (2·K = 4
    would keep one live beam and one dead one, and lose the runner-up's line). EOS = those three."""
    model, hf = pair
    ids = torch.tensor([prompt])
    eos = model(ids)[0][0, -1].topk(3).indices.tolist()
    kw = dict(max_new_tokens=5, num_beams=2, length_penalty=1.0, early_stopping="never", eos_token_id=eos,
              pad_token_id=PAD, num_return_sequences=2)
    ours = generate(model, ids, torch.ones_like(ids), **kw)
    theirs = hf.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, **kw)
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize("num_beams", [2, 4])
@torch.no_grad()
def test_beam_search_min_new_tokens_lets_eos_come_exactly_after_that_many(pair, num_beams):
    """min_new_tokens=s bans EOS at steps 0..s-1 in beam search too, as in transformers: EOS is the
    token greedy decoding makes at step s - 1, the last step it is banned at."""
    model, hf = pair
    ids, mask = left_padded(PROMPTS)
    greedy = generate(model, ids[:1], mask[:1], max_new_tokens=6, eos_token_id=[])[0, ids.size(1):].tolist()
    for s in (1, 2, 3):
        kw = dict(max_new_tokens=8, min_new_tokens=s, num_beams=num_beams, eos_token_id=greedy[s - 1], pad_token_id=PAD,
                  num_return_sequences=num_beams, length_penalty=1.0, early_stopping=False)
        ours = generate(model, ids, mask, **kw)
        theirs = hf.generate(ids, attention_mask=mask, do_sample=False, **kw)
        assert torch.equal(ours, theirs), f"min_new_tokens={s}"


@pytest.mark.parametrize("kw", [
    dict(length_penalty=0.6, early_stopping=False, row=0, step=3),
    dict(length_penalty=2.0, early_stopping="never", row=0, step=1),
    dict(length_penalty=-1.0, early_stopping=True, row=1, step=0, repetition_penalty=1.4, no_repeat_ngram_size=2),
], ids=["favours short", "favours long, never", "penalties and the ban"])
@torch.no_grad()
def test_beam_scores_equal_transformers_sequences_scores(pair, kw):
    """return_scores=True gives each returned beam's score, transformers' `sequences_scores`
    (output_scores=True, return_dict_in_generate=True): the total log-probability of its new tokens,
    after the penalties and the ban, / new_length ** length_penalty. Hypotheses of several lengths
    (an early EOS) check the length each is divided by."""
    model, hf = pair
    ids, mask = left_padded(PROMPTS)
    row, step = kw.pop("row"), kw.pop("step")
    kw.update(max_new_tokens=10, num_beams=4, num_return_sequences=3, pad_token_id=PAD,
              eos_token_id=eos_from(model, ids, mask, row=row, step=step))
    ours, scores = generate(model, ids, mask, return_scores=True, **kw)
    theirs = hf.generate(ids, attention_mask=mask, do_sample=False, output_scores=True, return_dict_in_generate=True,
                         **kw)
    assert torch.equal(ours, theirs.sequences)
    assert scores.shape == (len(PROMPTS) * 3,) and scores.dtype == torch.float32
    # the same sums in another order (the penalties', the cache's): float32 rounding, ~1e-5 of the score
    torch.testing.assert_close(scores, theirs.sequences_scores, rtol=1e-4, atol=1e-5)
    lengths = (ours[:, ids.size(1):] != PAD).sum(1)
    assert lengths.unique().numel() > 1, "the test wants hypotheses of several lengths"
    for prompt_scores in scores.view(len(PROMPTS), 3):  # best first
        assert prompt_scores.tolist() == sorted(prompt_scores.tolist(), reverse=True)


@torch.no_grad()
def test_return_scores_comes_before_the_stats_and_is_for_beams_only(pair):
    """With return_stats too, the result is (ids, scores, stats), as the docstring orders them, and
    the ids and scores are those of the call without stats. Greedy and sampled rows have no score
    that ranked them: return_scores without beams is refused by name, as a non-bool flag is."""
    model, _ = pair
    ids, mask = left_padded(PROMPTS)
    kw = dict(max_new_tokens=6, num_beams=3, num_return_sequences=2, pad_token_id=PAD)
    out, scores = generate(model, ids, mask, return_scores=True, **kw)
    out2, scores2, stats = generate(model, ids, mask, return_scores=True, return_stats=True, **kw)
    assert torch.equal(out, out2) and torch.equal(scores, scores2) and isinstance(stats, GenerationStats)
    assert torch.equal(generate(model, ids, mask, **kw), out)  # no scores asked: the ids alone, as before
    with pytest.raises(ValueError, match=r"return_scores is for beam search \(num_beams > 1\)"):
        generate(model, ids, mask, return_scores=True, max_new_tokens=3)
    with pytest.raises(ValueError, match="return_scores is for beam search"):
        generate(model, ids, mask, return_scores=True, do_sample=True, num_return_sequences=2, max_new_tokens=3)
    with pytest.raises((TypeError, ValueError), match="return_scores"):
        generate(model, ids, mask, return_scores="yes", **kw)


@torch.no_grad()
def test_early_stopping_as_a_numpy_or_tensor_bool_is_that_bool_and_1_is_refused(pair):
    """Beam search tests `early_stopping is True`: np.True_, torch.tensor(True) and 1 passed the
    check (they == True) and then acted as False, a silent wrong answer. The booleans are taken as
    bools; 1 and 0 are refused by name (transformers takes them, and also reads 1 as False)."""
    model, _ = pair
    ids, mask = left_padded(PROMPTS)
    kw = dict(max_new_tokens=10, num_beams=2, num_return_sequences=2, length_penalty=2.0, pad_token_id=PAD,
              eos_token_id=eos_from(model, ids, mask, row=1, step=0))
    true, false = generate(model, ids, mask, early_stopping=True, **kw), generate(model, ids, mask, early_stopping=False, **kw)
    assert true.shape != false.shape or not torch.equal(true, false), "the modes must differ for this test to prove anything"
    for flag in (np.True_, torch.tensor(True)):
        assert torch.equal(generate(model, ids, mask, early_stopping=flag, **kw), true)
    assert torch.equal(generate(model, ids, mask, early_stopping=np.False_, **kw), false)
    for flag in (1, 0, "True"):
        with pytest.raises(ValueError, match=f"early_stopping must be True, False or 'never', got {flag!r}"):
            generate(model, ids, mask, early_stopping=flag, **kw)


@torch.no_grad()
def scripted_beam_search(pair, monkeypatch, script: list[torch.Tensor], ids: torch.Tensor, **kwargs):
    """Beam search by minigpt and by transformers on scripted logits: call n (the prefill, then
    each step) gives script[n] (the last one from then on), (B·K, V), to both. Returns (ours, theirs)."""
    import minigpt.prefill_decode as pd

    model, hf = pair
    calls = iter(range(10**6))

    def logits() -> torch.Tensor:
        return script[min(next(calls), len(script) - 1)].clone()

    real_prefill, real_step = pd.DecodeState.prefill, pd.DecodeState.step  # still run: they fill the cache
    monkeypatch.setattr(pd.DecodeState, "prefill", lambda self, x: (real_prefill(self, x), logits())[1])
    monkeypatch.setattr(pd.DecodeState, "step", lambda self, t: (real_step(self, t), logits())[1])
    ours = generate(model, ids, num_beams=2, pad_token_id=PAD, **kwargs)

    class Scripted(LogitsProcessor):  # the same log-probs for transformers' beam search
        def __call__(self, input_ids, scores):
            return torch.log_softmax(script[min(input_ids.size(1) - ids.size(1), len(script) - 1)], -1)

    theirs = hf.generate(ids, attention_mask=torch.ones_like(ids), num_beams=2, pad_token_id=PAD, do_sample=False,
                         logits_processor=LogitsProcessorList([Scripted()]), **kwargs)
    return ours, theirs


def beam_logits(V: int, rows: list[dict[int, float]]) -> torch.Tensor:
    """(len(rows), V) logits of -30 but for the {token: logit} of each row."""
    t = torch.full((len(rows), V), -30.0)
    for i, row in enumerate(rows):
        for token, value in row.items():
            t[i, token] = value
    return t


def test_a_prompt_that_can_no_longer_improve_takes_no_new_hypotheses(pair, monkeypatch):
    """transformers' rule (early_stopping=False): once no running beam of a prompt can beat its
    worst finished hypothesis at the current length, the prompt takes no new ones, even one that
    a strong length penalty would rank higher later. Scripted logits make the case: prompt 0's
    only beam ends at once in both EOS ids (log p ≈ -0.7 each), its running beams are far behind
    (-8), so it can no longer improve; prompt 1 runs on. At step 1 an EOS after -8 would score
    -8 / 2⁴ = -0.5 > -0.7, but must not enter. transformers, fed the same log-probs, agrees.
    Rows 0-1 of each call's logits are prompt 0's beams, rows 2-3 prompt 1's."""
    V, even = pair[0].config.vocab_size, {t: 0.0 for t in range(20, 30)}  # prompt 1: ten even tokens, no EOS
    first = beam_logits(V, [{10: 0.0, 11: 0.0, 20: -7.3, 21: -7.3}, {}, even, {}])  # both EOS ids at ~-0.7
    later = beam_logits(V, [{10: 0.0}, {10: 0.0}, even, even])  # prompt 0's running beams: EOS all but certain
    ids = torch.tensor([[3, 4], [5, 6]])
    ours, theirs = scripted_beam_search(pair, monkeypatch, [first, later], ids, max_new_tokens=3, num_return_sequences=2,
                                        length_penalty=4.0, early_stopping=False, eos_token_id=[10, 11])
    pads = [PAD] * (ours.size(1) - 3)  # the output is as wide as prompt 1's longest hypothesis
    assert ours[:2, 2:].tolist() == [[10, *pads], [11, *pads]]  # the step-0 hypotheses, not [20 or 21, 10]
    assert torch.equal(ours, theirs)


def test_a_prompt_that_could_no_longer_improve_stays_so(pair, monkeypatch):
    """Mutant (an audit): "can no longer improve" is for good in transformers. Recomputed at each
    step instead, prompt 0 took new hypotheses again once its running beams (here: token 30, then
    EOS) looked good under length_penalty 4: [[21, 30, 10], [20, 30, 10]] for transformers' [[11], [10]]."""
    V, even = pair[0].config.vocab_size, {t: 0.0 for t in range(20, 30)}
    script = [beam_logits(V, [{10: 0.0, 11: 0.0, 20: -7.3, 21: -7.3}, {}, even, {}]),
              beam_logits(V, [{30: 0.0}, {30: 0.0}, even, even]),
              beam_logits(V, [{10: 0.0}, {10: 0.0}, even, even])]
    ours, theirs = scripted_beam_search(pair, monkeypatch, script, torch.tensor([[3, 4], [5, 6]]), max_new_tokens=4,
                                        num_return_sequences=2, length_penalty=4.0, early_stopping=False, eos_token_id=[10, 11])
    assert ours[:2, 2:4].tolist() == [[11, PAD], [10, PAD]]
    assert torch.equal(ours, theirs)


def test_early_stopping_never_with_a_negative_length_penalty_judges_by_the_current_length(pair, monkeypatch):
    """Mutant (an audit): with early_stopping="never", transformers judges whether a beam can still
    improve at max_new_tokens only when length_penalty > 0 (a longer beam then scores higher); for
    ≤ 0 at the current length. Judged at max_new_tokens for any penalty, beam search stopped too
    early here: [20, 10] as its second hypothesis, where transformers gives [20, 25, 10]."""
    V = pair[0].config.vocab_size
    script = [beam_logits(V, [{20: -0.5, 10: -1.0, 21: -2.0}, {}]),
              beam_logits(V, [{25: -0.3, 10: -1.0}, {22: -0.1}]),
              beam_logits(V, [{10: -0.1, 26: -3.0}, {23: -0.1}]),
              beam_logits(V, [{10: -0.1}, {10: -0.1}])]
    ours, theirs = scripted_beam_search(pair, monkeypatch, script, torch.tensor([[3, 4]]), max_new_tokens=5,
                                        num_return_sequences=2, length_penalty=-1.0, early_stopping="never", eos_token_id=10)
    assert ours[:, 2:].tolist() == [[10, PAD, PAD], [20, 25, 10]]
    assert torch.equal(ours, theirs)


@torch.no_grad()
def test_beam_search_penalties_never_count_pads():
    """As in sampling: the repetition penalty counts a beam's prompt and new tokens, never its left
    pads. The pad id is a token the short row's best beam makes, so a counted pad would change it.
    A softer model than `pair`'s, so that a penalty can change which beams win."""
    model, _ = sharpened_pair(tiny_config(), scale=1.0)
    kw = dict(max_new_tokens=6, num_beams=3, eos_token_id=[], repetition_penalty=3.0)
    alone = [generate(model, torch.tensor([p]), **kw)[0, len(p):].tolist() for p in PROMPTS]
    pad = next(t for t in alone[1] if t not in PROMPTS[1])  # PROMPTS[1] is the shortest: most padded
    T = max(map(len, PROMPTS))
    ids = torch.tensor([[pad] * (T - len(p)) + p for p in PROMPTS])
    mask = torch.tensor([[0] * (T - len(p)) + [1] * len(p) for p in PROMPTS])
    assert generate(model, ids, mask, pad_token_id=pad, **kw)[:, T:].tolist() == alone


def test_beam_log_probs_count_presence_and_frequency_over_new_tokens_only():
    """As in sampling: repetition counts a beam's prompt and new tokens, presence and frequency
    only the new ones (the prompt is the first `prompt_len` ids)."""
    from minigpt.beam_search import next_log_probs

    beam_ids = torch.tensor([[1, 2, 3, 3]])  # prompt [1, 2], then 3 twice
    kw = dict(no_repeat_ngram_size=0, banned_eos=None)
    plain = next_log_probs(torch.zeros(1, 6), beam_ids, 2, torch.ones(1, 4, dtype=torch.bool), penalties={}, **kw)
    for penalty, touched in ({"presence_penalty": 1.0}, {3}), ({"frequency_penalty": 0.5}, {3}), ({"repetition_penalty": 2.0}, {1, 2, 3}):
        logp = next_log_probs(torch.zeros(1, 6), beam_ids, 2, torch.ones(1, 4, dtype=torch.bool), penalties=penalty, **kw)
        assert {t for t in range(6) if logp[0, t] < plain[0, t]} == touched, penalty


@torch.no_grad()
def test_beam_search_takes_one_penalty_per_prompt(pair):
    """A (B,) penalty tensor is one value per prompt, as in sampling; beam search runs B·K rows,
    so each prompt's value must follow it to its K beams."""
    model, _ = pair
    ids, mask = left_padded(PROMPTS)
    kw = {"max_new_tokens": 6, "num_beams": 3, "eos_token_id": []}
    per_prompt = {"repetition_penalty": torch.tensor([1.0, 1.5, 2.0]), "presence_penalty": torch.tensor([0.0, 1.0, 2.0])}
    batched = generate(model, ids, mask, **kw, **per_prompt)
    for b in range(len(PROMPTS)):
        alone = generate(model, ids[b:b + 1], mask[b:b + 1], **kw, **{k: float(v[b]) for k, v in per_prompt.items()})
        assert torch.equal(batched[b:b + 1], alone)


# ---- no_repeat_ngram_size: transformers' n-gram ban (minigpt/penalties.py's ban_repeated_ngrams) ----------


@pytest.fixture(scope="module")
def looping_pair():
    """A model whose greedy text repeats itself (107 107 107 ...: a smaller init than `pair`'s
    lets each token's own embedding weigh more), so that an n-gram ban has n-grams to ban."""
    return sharpened_pair(tiny_config(initializer_range=0.1))


# Unpadded (see below); the last row ends in PAD's id as text, so the tests pass all-ones masks
# (without a mask, a pad id that is no EOS marks padding, as transformers infers).
NGRAM_PROMPTS = torch.tensor([PROMPTS[0], PROMPTS[0][::-1], PROMPTS[2] + PROMPTS[1] + [1]])


def banned_top2_margin(model: GPT, sequences: torch.Tensor, prompt_len: int, n: int) -> float:
    """`min_top2_margin` among the tokens the n-gram ban leaves, for unpadded rows."""
    worst = float("inf")
    for seq in sequences:
        logits = model(seq[None])[0][0]  # (L, V)
        for t in range(prompt_len, seq.size(0)):
            top2 = ban_repeated_ngrams(logits[t - 1:t], seq[None, :t], n).topk(2, dim=-1).values[0]
            worst = min(worst, (top2[0] - top2[1]).item())
    return worst


def rows_repeating_an_ngram(out: torch.Tensor, mask: torch.Tensor, n: int) -> int:
    """How many rows of `out` hold some n-gram twice among their real tokens (the prompt's mask, then all new)."""
    mask = torch.cat([mask, torch.ones(out.size(0), out.size(1) - mask.size(1), dtype=torch.long)], 1)
    grams = [[tuple(row[i:i + n]) for i in range(len(row) - n + 1)] for row in
             (seq[m.bool()].tolist() for seq, m in zip(out, mask))]
    return sum(len(set(g)) < len(g) for g in grams)


@pytest.mark.parametrize("n, extra", [(1, {}), (2, {}), (3, {}), (2, dict(repetition_penalty=1.5, min_new_tokens=12))],
                         ids=["1", "2", "3", "2+penalty+min_new_tokens"])
@torch.no_grad()
def test_no_repeat_ngram_size_equals_transformers(looping_pair, n, extra):
    """Greedy decoding with the n-gram ban gives transformers' tokens, also beside its neighbours
    in the order of processors (repetition penalty → n-gram ban → min_new_tokens' EOS mask). The
    prompts are unpadded: transformers counts left pads as tokens (minigpt does not)."""
    model, hf = looping_pair
    ids, T = NGRAM_PROMPTS, NGRAM_PROMPTS.size(1)
    eos = eos_from(model, ids, None, row=0, step=2) if extra else None
    kw = dict(max_new_tokens=24, pad_token_id=PAD, **extra)
    ours = generate(model, ids, torch.ones_like(ids), no_repeat_ngram_size=n, eos_token_id=[] if eos is None else eos, **kw)
    theirs = hf.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, no_repeat_ngram_size=n,
                         eos_token_id=eos, **kw)
    margin = banned_top2_margin(model, ours, T, n) if not extra else float("inf")  # (the margin ignores the penalty)
    print(f"n={n}: min top-2 margin among unbanned tokens {margin:.3g}; ours {ours[0, T:].tolist()}")
    assert margin > 1e-3
    assert torch.equal(ours, theirs)
    plain = generate(model, ids, torch.ones_like(ids), eos_token_id=[] if eos is None else eos, **kw)
    assert not torch.equal(ours, plain), "the ban must change the text for this test to prove anything"
    assert rows_repeating_an_ngram(plain, torch.ones_like(ids), n) and not rows_repeating_an_ngram(
        ours[:, :T + 12 if extra else None], torch.ones_like(ids), n)  # (past an EOS come pads)


@pytest.mark.parametrize("n, length_penalty, early_stopping", [(1, 0.6, False), (2, 1.0, True), (3, -1.0, "never")])
@torch.no_grad()
def test_beam_search_with_no_repeat_ngram_size_equals_transformers(looping_pair, n, length_penalty, early_stopping):
    """Each beam bans what would repeat an n-gram of its own ids, as transformers' beam search does
    (every beam returned: a ban from another beam's ids would change the runners-up first)."""
    model, hf = looping_pair
    ids = NGRAM_PROMPTS
    kw = dict(max_new_tokens=12, num_beams=4, length_penalty=length_penalty, early_stopping=early_stopping,
              eos_token_id=eos_from(model, ids, None, row=0, step=3), pad_token_id=PAD, num_return_sequences=4)
    ours = generate(model, ids, torch.ones_like(ids), no_repeat_ngram_size=n, **kw)
    theirs = hf.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, no_repeat_ngram_size=n, **kw)
    print(f"n={n}: ours {tuple(ours.shape)}, transformers {tuple(theirs.shape)}")
    assert torch.equal(ours, theirs)
    plain = generate(model, ids, torch.ones_like(ids), **kw)
    assert ours.shape != plain.shape or not torch.equal(ours, plain), "the ban must change some beam"


@pytest.mark.parametrize("num_beams", [1, 3])
@pytest.mark.parametrize("n", [1, 2])
@torch.no_grad()
def test_no_repeat_ngram_size_never_counts_pads(looping_pair, n, num_beams):
    """A left-padded batch continues each prompt as it would alone. The pad id is the first token
    the shortest (most padded) prompt makes alone: were pads tokens, n = 1 would ban it at once."""
    model, _ = looping_pair
    kw = dict(max_new_tokens=8, num_beams=num_beams, eos_token_id=[], no_repeat_ngram_size=n)
    alone = [generate(model, torch.tensor([p]), **kw)[0, len(p):].tolist() for p in PROMPTS]
    pad = alone[1][0]  # PROMPTS[1] is the shortest
    T = max(map(len, PROMPTS))
    ids = torch.tensor([[pad] * (T - len(p)) + p for p in PROMPTS])
    mask = torch.tensor([[0] * (T - len(p)) + [1] * len(p) for p in PROMPTS])
    assert generate(model, ids, mask, pad_token_id=pad, **kw)[:, T:].tolist() == alone


@pytest.mark.parametrize("sampler", ["torch", "triton"])
@torch.no_grad()
def test_sampled_text_never_repeats_an_ngram(looping_pair, monkeypatch, sampler):
    """Sampling, with torch's draw or the fused kernel's (a stand-in here, which draws from the
    logits it is given): the ban reaches the logits before the draw, so no row holds an n-gram
    twice, its prompt included; without the ban this model's samples do."""
    if sampler == "triton":
        def fake_fused_sample(logits, **params):  # an exponential race over the logits, as the kernel's
            return (logits.softmax(-1) / torch.empty_like(logits).exponential_()).argmax(-1)

        use_fake_kernel(monkeypatch, fake_fused_sample)
    model, _ = looping_pair
    ids, mask = left_padded(PROMPTS)
    kw = dict(max_new_tokens=30, do_sample=True, seed=0, sampler=sampler, eos_token_id=[], pad_token_id=PAD,
              num_return_sequences=3)
    masks = mask.repeat_interleave(3, 0)
    assert rows_repeating_an_ngram(generate(model, ids, mask, **kw), masks, 2) == 9
    for n in (2, 3):
        assert rows_repeating_an_ngram(generate(model, ids, mask, no_repeat_ngram_size=n, **kw), masks, n) == 0


@torch.no_grad()
def test_a_row_the_ngram_ban_leaves_no_token_is_an_error_naming_it():
    """n = 1 on a prompt that holds every token of an 8-token vocabulary bans them all: no token to
    give (transformers' greedy would take id 0), so an error that names the ban, not the model."""
    model = GPT(tiny_config(vocab_size=8)).eval()
    with pytest.raises(FloatingPointError, match="or no_repeat_ngram_size banned every token of a row"):
        generate(model, torch.arange(8)[None], max_new_tokens=2, eos_token_id=[], no_repeat_ngram_size=1)


@torch.no_grad()
def test_beams_the_ngram_ban_leaves_no_token_are_an_error_not_leftovers():
    """n = 1 on a prompt of 6 ids of an 8-token vocabulary: every beam has run out after 2 new
    tokens, so no hypothesis reaches max_new_tokens. Beam search returned the leftovers of its
    slots instead (transformers does too, scored -1e9), which changed with the batch around the
    prompt; now it is an error naming the ban, as in greedy decoding. So is asking for more
    hypotheses than there are continuations. (Found by tests/test_generate_fuzz.py's fuzzing.)"""
    torch.manual_seed(0)
    model = GPT(tiny_config(vocab_size=8)).eval()
    kw = dict(num_beams=2, no_repeat_ngram_size=1, eos_token_id=[])
    with pytest.raises(FloatingPointError, match="beam search found fewer than 1 hypothesis for prompt 1: "
                                                 "no_repeat_ngram_size banned every token"):
        generate(model, *left_padded([[6], [0, 1, 2, 3, 4, 5]]), max_new_tokens=4, **kw)
    assert generate(model, torch.tensor([[0, 1, 2, 3, 4, 5]]), max_new_tokens=2, **kw).shape == (1, 8)
    # Nine hypotheses of one token from eight ids: the ninth returned row was leftovers too.
    with pytest.raises(FloatingPointError, match="for prompt 0: a vocabulary of 8 has fewer than "
                                                 "num_return_sequences=9 continuations of max_new_tokens=1"):
        generate(model, torch.tensor([[1, 2]]), max_new_tokens=1, num_beams=9, num_return_sequences=9, eos_token_id=[3])
    assert generate(model, torch.tensor([[1, 2]]), max_new_tokens=2, num_beams=9, num_return_sequences=9,
                    eos_token_id=[3]).shape == (9, 4)


@torch.no_grad()
def test_a_dead_beams_hypothesis_is_a_leftover_not_a_result():
    """n = 1 on a prompt of 10 ids of a 12-token vocabulary leaves two continuations, 9 and 11, so 3
    hypotheses cannot be had. Beam search returned a third anyway: a candidate of a dead beam (one
    of the prompt's K - 1 copies, scored -1e9) that ended among the top K, which transformers also
    counts as finished, so the check for leftovers passed it; its tokens repeated a live beam's.
    (Found by tests/test_generate_fuzz.py: transformers returned it scored -1e9.)"""
    torch.manual_seed(0)
    model = GPT(tiny_config(vocab_size=12)).eval()
    prompt = torch.tensor([[3, 4, 6, 10, 0, 1, 2, 5, 7, 8]])
    kw = dict(num_beams=4, no_repeat_ngram_size=1, eos_token_id=[], length_penalty=2.0)
    for max_new_tokens in (1, 2):  # dead at step 0 (the copies), and a dead beam kept running to step 1
        out = generate(model, prompt, max_new_tokens=max_new_tokens, num_return_sequences=2, **kw)
        assert sorted(out[:, 10].tolist()) == [9, 11]
        with pytest.raises(FloatingPointError, match="fewer than 3 hypotheses for prompt 0: no_repeat_ngram_size "
                                                     ".* or left fewer than 3 distinct continuations"):
            generate(model, prompt, max_new_tokens=max_new_tokens, num_return_sequences=3, **kw)


@torch.no_grad()
def test_a_finished_row_whose_pads_leave_no_token_is_no_error():
    """Only a row still writing can run out of tokens. A finished row is fed its pads, which the
    n-gram ban reads as its tokens: here row 0 (6 of an 8-token vocabulary, then its EOS) bans every
    id once the pad (the 8th) joins it, while row 1 runs on. That used to raise; the batch must give
    what each row gives alone. (Found by tests/test_generate_fuzz.py's differential fuzzing.)"""
    torch.manual_seed(0)
    model = GPT(tiny_config(vocab_size=8)).eval()
    kw = dict(max_new_tokens=3, no_repeat_ngram_size=1)
    row0 = list(range(6))
    # Row 0's first token, made its EOS: row 0 ends at once. (A 3rd token would leave it none.)
    eos = int(generate(model, torch.tensor([row0]), max_new_tokens=1, eos_token_id=[], no_repeat_ngram_size=1)[0, 6])
    pad = ({6, 7} - {eos}).pop()  # the one id row 0 has not used
    kw.update(eos_token_id=eos, pad_token_id=pad)
    row1 = next([t] for t in range(8) if t != pad and eos not in generate(model, torch.tensor([[t]]), **kw)[0, 1:])  # 3 steps
    ids, mask = torch.tensor([row0, [pad] * 5 + row1]), torch.tensor([[1] * 6, [0] * 5 + [1]])
    out = generate(model, ids, mask, **kw)
    assert out[0, 6:].tolist() == [eos, pad, pad]
    assert out[1, 5:].tolist() == generate(model, torch.tensor([row1]), **kw)[0].tolist()


@torch.no_grad()
def test_explain_names_the_ngram_ban_when_it_leaves_no_token():
    """--explain's table would otherwise show NaN odds and draw token -1: the same error as generate's."""
    from minigpt.explain import explain

    model = GPT(tiny_config(vocab_size=8)).eval()
    with pytest.raises(FloatingPointError, match="after the n-gram ban: no_repeat_ngram_size banned every token"):
        explain(model, DigitsTokenizer(), list(range(8)), steps=1, temperature=0, no_repeat_ngram_size=1, out=io.StringIO())


@torch.no_grad()
def test_explain_names_bad_steps_top_and_tensor_parameters():
    """An audit: top=10**6 or -1 failed in torch.topk ("selected index k out of range"), a tensor
    temperature in the table's format string, steps=2.5 inside range()."""
    from minigpt.explain import explain

    model, tok = GPT(tiny_config(vocab_size=8)).eval(), DigitsTokenizer()
    explain(model, tok, [1, 2], steps=1, top=10**6, out=io.StringIO())  # every token shown: 8 candidates
    for kw, error, message in [(dict(top=-1), ValueError, "steps and top must be ≥ 1, got steps=1, top=-1"),
                               (dict(steps=0), ValueError, "steps and top must be ≥ 1, got steps=0, top=5"),
                               (dict(steps=2.5), TypeError, "steps must be an integer, got 2.5"),
                               (dict(temperature=torch.tensor([0.5, 0.5])), TypeError,
                                "explain takes one number per parameter (it runs one prompt), got a tensor for temperature")]:
        with pytest.raises(error, match=re.escape(message)):
            explain(model, tok, [1, 2], **{"steps": 1, **kw}, out=io.StringIO())


@torch.no_grad()
def test_explain_shows_the_ngram_ban_and_draws_what_generate_draws(looping_pair):
    """--explain's n-gram stage comes after the penalties; greedy takes the argmax after it, and a
    draw draws from it, as generate does."""
    from minigpt.explain import explain

    model, _ = looping_pair
    ids = torch.tensor([PROMPTS[0]])
    for temperature, kw in ((0.0, {}), (1.0, dict(do_sample=True, seed=3, sampler="torch"))):
        printed = io.StringIO()
        text = explain(model, DigitsTokenizer(), PROMPTS[0], steps=8, temperature=temperature, seed=kw.get("seed"),
                       no_repeat_ngram_size=2, out=printed)
        banned = generate(model, ids, max_new_tokens=8, eos_token_id=[], no_repeat_ngram_size=2, **kw)[0, 7:].tolist()
        assert text == DigitsTokenizer().decode(banned)
        assert banned != generate(model, ids, max_new_tokens=8, eos_token_id=[], **kw)[0, 7:].tolist()
        header = printed.getvalue().split("\nstep ")[1].splitlines()[1].split()
        assert header[:5] == ["token", "raw", "penalties", "no-repeat", "2"]
    # Some candidate the ban removed: likely before it (column "penalties"), dropped ("-") after it.
    rows = [line.split() for line in printed.getvalue().splitlines() if line.startswith(("→ '", "  '"))]
    assert any(float(row[-6]) > 0.5 and row[-5] == "-" for row in rows)


def test_explain_draws_what_generate_draws_through_the_top_k_shortlist():
    """With top-k on, generate's step on a CPU filters and draws among the k largest logits alone
    (minigpt.sampling_cpu.top_k_shortlist), so its noise has k values a step, not V: explain must draw
    through the same per-step function to give the same tokens for a seed (it drew its own noise
    over the whole row, and matched only where few tokens were kept)."""
    from minigpt.explain import explain

    torch.manual_seed(0)
    model = GPT(tiny_config()).eval()
    params = dict(temperature=1.5, top_k=40, top_p=0.98)  # flat: many tokens kept each step
    ids = torch.tensor([PROMPTS[0]])
    for seed in (0, 1):
        text = explain(model, DigitsTokenizer(), PROMPTS[0], steps=20, seed=seed, out=io.StringIO(), **params)
        drawn = generate(model, ids, max_new_tokens=20, do_sample=True, seed=seed, sampler="torch", eos_token_id=[],
                         **params)[0, ids.size(1):].tolist()
        assert text == DigitsTokenizer().decode(drawn)


@torch.no_grad()
def test_explain_bans_ngrams_after_the_penalties_as_generate_does(looping_pair):
    """The n-gram stage starts from the penalized logits, not the raw ones: with a repetition
    penalty that changes the text, --explain's greedy text is still generate's."""
    from minigpt.explain import explain

    model, _ = looping_pair
    ids, kw = torch.tensor([PROMPTS[0]]), dict(no_repeat_ngram_size=2, repetition_penalty=1.5)
    text = explain(model, DigitsTokenizer(), PROMPTS[0], steps=8, temperature=0, out=io.StringIO(), **kw)
    expected = generate(model, ids, max_new_tokens=8, eos_token_id=[], **kw)[0, 7:].tolist()
    assert text == DigitsTokenizer().decode(expected)
    assert expected != generate(model, ids, max_new_tokens=8, eos_token_id=[], no_repeat_ngram_size=2)[0, 7:].tolist()


def test_cli_no_repeat_ngram_size_reaches_every_mode(tiny_checkpoint, capsys, monkeypatch):
    """--no-repeat-ngram-size applies to greedy, sampled and beam search text and to --explain, so no
    mode refuses it; a negative size is refused by name."""
    gen_cli = importlib.import_module("minigpt.generate_cli")  # where main looks up the text functions
    seen = []
    for name in ("stream_text", "generate_text"):
        real = getattr(gen_cli, name)
        monkeypatch.setattr(gen_cli, name, lambda *a, real=real, **kw: seen.append(kw["no_repeat_ngram_size"]) or real(*a, **kw))
    base = ["--model", str(tiny_checkpoint), "--prompt", "To be", "--max-new-tokens", "4", "--no-repeat-ngram-size"]
    for mode in (["--temperature", "0"], ["--seed", "1"], ["--num-beams", "2"], ["-n", "2", "--seed", "1"]):
        assert gen_cli.main(base + ["2"] + mode) == 0
    assert seen == [2, 2, 2, 2]
    assert gen_cli.main(base + ["3", "--explain", "--temperature", "0"]) == 0
    assert "no-repeat 3" in capsys.readouterr().out
    assert gen_cli.main(base + ["-1"]) == 2
    assert "--no-repeat-ngram-size must be ≥ 0 (0 means off), got -1" in capsys.readouterr().err


@torch.no_grad()
def test_per_row_eos_pads_and_loop_ends_when_all_finished(pair):
    model, _ = pair
    ids, mask = left_padded(PROMPTS)
    free = generate(model, ids, mask, max_new_tokens=30, eos_token_id=[])[:, ids.size(1):]
    eos = int(free[0, 2])  # row 0 makes this token at step 2: make it the EOS
    out = generate(model, ids, mask, max_new_tokens=30, eos_token_id=eos, pad_token_id=PAD)[:, ids.size(1):]
    for b in range(len(PROMPTS)):
        row = free[b].tolist()
        end = row.index(eos) + 1 if eos in row else 30
        assert out[b, :end].tolist() == row[:end]  # identical until its own EOS ...
        assert (out[b, end:] == PAD).all()  # ... then only padding
    ends = [r.index(eos) + 1 if eos in r else 30 for r in free.tolist()]
    assert out.size(1) == max(ends)  # stops once the last row is done


@torch.no_grad()
def test_stop_strings_per_row_across_token_boundaries(pair):
    model, _ = pair
    tok = ByteTokenizer()
    ids, mask = left_padded(PROMPTS)
    free = generate(model, ids, mask, max_new_tokens=20, eos_token_id=[])[:, ids.size(1):]
    text0 = tok.decode_bytes(free[0].tolist())
    stop = text0[3:5].decode("latin-1")  # 2 bytes = 2 tokens: always spans a token boundary
    stop_bytes = stop.encode("utf-8")
    out = generate(model, ids, mask, max_new_tokens=20, eos_token_id=[], pad_token_id=PAD, stop=[stop],
                   tokenizer=tok)[:, ids.size(1):]
    keeps = []
    for b in range(len(PROMPTS)):
        full = free[b].tolist()
        text = tok.decode_bytes(full)
        keep = len(text[:text.find(stop_bytes)]) if stop_bytes in text else len(full)
        assert out[b, :keep].tolist() == full[:keep]
        assert (out[b, keep:] == PAD).all()
        assert stop_bytes not in tok.decode_bytes([t for t in out[b].tolist() if t != PAD])
        keeps.append(keep)
    assert out.size(1) == max(keeps)  # as wide as the longest row: no column of pads alone


@torch.no_grad()
def test_stop_string_in_the_first_token_leaves_the_prompt_alone(pair):
    """One prompt whose first new token holds the stop string: the output is the prompt, with no
    pad column after it (the stop string is cut, and no row needs the step that found it)."""
    model, _ = pair
    tok = ByteTokenizer()
    prompts = PROMPTS + [tok.encode(text) for text in ("Hello", "abc", "xyz", "The", "0123")]
    firsts = [(p, generate(model, torch.tensor([p]), max_new_tokens=1, eos_token_id=[])[0, -1].item()) for p in prompts]
    prompt, first = next((p, t) for p, t in firsts if 32 <= t < 127)  # a printable ASCII byte: one character
    ids = torch.tensor([prompt])
    out = generate(model, ids, max_new_tokens=10, eos_token_id=[], pad_token_id=PAD, stop=chr(first),
                   tokenizer=tok)
    assert torch.equal(out, ids)


@torch.no_grad()
def test_a_stop_string_that_begins_in_the_prompt_ends_nothing(pair):
    """Stop strings are looked for in the new text only (README; transformers' stop_strings would
    end at the first token here): the prompt's last byte plus the first new one."""
    model, _ = pair
    tok = ByteTokenizer()
    ids = torch.tensor([tok.encode("Hello")])
    free = generate(model, ids, max_new_tokens=5, eos_token_id=[])
    stop = tok.decode_bytes([ids[0, -1].item(), free[0, ids.size(1)].item()]).decode("latin-1")
    assert stop not in tok.decode_bytes(free[0, ids.size(1):].tolist()).decode("latin-1")  # (else it would end)
    assert torch.equal(generate(model, ids, max_new_tokens=5, eos_token_id=[], stop=stop, tokenizer=tok), free)


@torch.no_grad()
def test_a_row_cut_at_a_stop_string_beside_a_row_ended_by_eos_keeps_that_eos(pair):
    """Row 0 is cut at a stop string at step j, row 1 ends with EOS at step e > j: the output is
    as wide as row 1 with its EOS, which the width computed from the stop cut alone would drop."""
    model, _ = pair
    ids, mask = left_padded(PROMPTS[:2])
    T = ids.size(1)
    r0, r1 = generate(model, ids, mask, max_new_tokens=20, eos_token_id=[])[:, T:].tolist()
    # A printable byte c first made by row 0 at step j, which row 1 does not make before its EOS;
    # the EOS: a token first made by row 1 at step e > j, which row 0 does not make up to step j.
    j, c, e = next((j, c, e) for j, c in enumerate(r0) if 32 <= c < 127 and c not in r0[:j]
                   for e in range(j + 1, 20) if r1[e] not in r1[:e] + r0[:j + 1] and c not in r1[:e + 1])
    out = generate(model, ids, mask, max_new_tokens=20, eos_token_id=r1[e], pad_token_id=PAD, stop=chr(c),
                   tokenizer=ByteTokenizer())
    assert out.size(1) == T + e + 1 and out[1, T:].tolist() == r1[:e + 1]
    assert out[0, T:T + j].tolist() == r0[:j] and (out[0, T + j:] == PAD).all()


def test_an_eos_is_never_searched_for_a_stop_string(pair):
    """An audit: a row's EOS went through the stop-string search, so a stop string in the EOS's own
    text (GPT-2's "<|endoftext|>" holds "text", "<", ...) cut the row before its EOS, which the ids
    then lacked. A row that draws an EOS ends there, with it, as transformers ends it."""
    model, _ = pair
    ids = torch.tensor([PROMPTS[0]])
    T = ids.size(1)
    r = generate(model, ids, max_new_tokens=20, eos_token_id=[])[0, T:].tolist()
    e = next(e for e in range(1, 20) if 32 <= r[e] < 127 and r[e] not in r[:e])  # a printable byte, new at step e
    out = generate(model, ids, max_new_tokens=20, eos_token_id=r[e], pad_token_id=PAD, stop=chr(r[e]),
                   tokenizer=ByteTokenizer())
    assert out[0, T:].tolist() == r[:e + 1]


def test_a_stop_string_holding_a_lone_surrogate_is_refused_at_the_call_by_name(pair):
    """A server audit: stop="\\ud800" (what json.loads gives for an escaped half of a pair) failed
    deep in the loop with UnicodeEncodeError (stop_strings.py encoding it to bytes), after the
    prompt's prefill. It is refused at the call: a ValueError naming stop, or which of the list."""
    model, _ = pair
    tok, ids = ByteTokenizer(), torch.tensor([[104, 105]])
    lone = r"holds the lone surrogate '\\u{}' at position {}, which no UTF-8 text holds, so it could never match"
    with pytest.raises(ValueError, match=r"^stop '\\ud800' " + lone.format("d800", 0)):
        generate(model, ids, max_new_tokens=3, stop="\ud800", tokenizer=tok)
    with pytest.raises(ValueError, match=r"^stop\[1\] 'a\\udcff' " + lone.format("dcff", 1)):
        stream(model, ids, max_new_tokens=3, stop=["x", "a\udcff"], tokenizer=tok)  # at the call: no next() needed
    with pytest.raises(ValueError, match=r"^stop\[0\] '\\ud83d' " + lone.format("d83d", 0)):
        stream_text(model, tok, "hi", max_new_tokens=3, stop=["\ud83d"])
    with pytest.raises(ValueError, match=r"^stop '\\udfff' " + lone.format("dfff", 0)):
        generate_texts(model, tok, ["hi"], max_new_tokens=3, stop="\udfff")
    # A pair, as JSON decodes one, is one character: taken.
    free = generate_text(model, tok, "hi", max_new_tokens=3)
    assert "😀" not in free[0] and generate_text(model, tok, "hi", max_new_tokens=3, stop=json.loads(r'"\ud83d\ude00"')) == free


def test_a_stop_string_that_starts_a_token_keeps_the_token_before_it():
    """Tokens of two characters each: "cd" is a whole token, so "ab" before it stays (the byte-per-
    token test tokenizer cannot show where a stop string starts on a token boundary)."""
    class TwoCharTokenizer:
        table = {0: b"ab", 1: b"cd", 2: b"e"}

        def decode_bytes(self, ids: list[int]) -> bytes:
            return b"".join(self.table[i] for i in ids)

    stops = StopStrings(TwoCharTokenizer(), ["cd"], batch_size=1)
    assert stops.add(0, 0) is None
    assert stops.add(0, 1) == 1  # keep "ab", cut "cd"
    stops = StopStrings(TwoCharTokenizer(), ["bc"], batch_size=1)
    assert stops.add(0, 0) is None and stops.add(0, 1) == 0  # "ab" holds the stop string's start: cut too


@torch.no_grad()
def test_stream_text_matches_generate_and_hides_stop(pair):
    model, _ = pair
    tok = ByteTokenizer()
    prompt = "hi"
    full = generate(model, torch.tensor([tok.encode(prompt)]), max_new_tokens=15, eos_token_id=[])
    text = tok.decode(full[0, 2:].tolist())
    pieces = list(stream_text(model, tok, prompt, max_new_tokens=15, eos_token_id=[]))
    assert "".join(pieces) == text and len(pieces) > 1
    stop = text[5:7]
    pieces = list(stream_text(model, tok, prompt, max_new_tokens=15, eos_token_id=[], stop=[stop]))
    assert "".join(pieces) == text[:text.find(stop)]
    assert all(stop[0] not in p or stop not in p for p in pieces)


@torch.no_grad()
def test_stream_text_gives_what_it_held_back_when_eos_ends_the_text(pair):
    """Text held back as a stop string's possible start (here a character, and a half-spelled one
    before it) is final once EOS comes: it was dropped, so --stream lost the text's end."""
    model, _ = pair
    tok = ByteTokenizer()
    free = generate(model, torch.tensor([tok.encode("hi")]), max_new_tokens=15, eos_token_id=[])[0, 2:].tolist()
    k = next(i for i in range(1, 15) if free[i - 1] < 128 and free[i] not in free[:i])  # EOS after an ASCII byte
    kw = dict(max_new_tokens=15, eos_token_id=free[k], stop=chr(free[k - 1]) + "\x01")  # never written whole
    text = tok.decode(free[:k])
    assert generate_text(model, tok, "hi", **kw) == [text]
    assert "".join(stream_text(model, tok, "hi", **kw)) == text


@torch.no_grad()
def test_generate_text_cuts_each_sample_at_its_stop_string_as_stream_text_does(pair):
    """n samples: each text is its row's tokens as drawn, up to EOS, cut at the stop string's first
    character (generate's ids end a row at a whole token). One sample: stream_text's text."""
    model, _ = pair
    tok = DigitsTokenizer()  # 3 characters a token: a stop string can start inside one
    kw = dict(max_new_tokens=15, do_sample=True, seed=3, eos_token_id=[], pad_token_id=PAD)
    rows = generate(model, torch.tensor([tok.encode("hi")]), num_return_sequences=3, **kw)[:, 2:]
    free = [tok.decode(row) for row in rows.tolist()]
    assert generate_text(model, tok, "hi", num_return_sequences=3, **kw) == free
    stop = free[0][4:6]
    texts, stats = generate_text(model, tok, "hi", num_return_sequences=3, stop=stop, return_stats=True, **kw)
    assert texts == [text[:text.find(stop)] if stop in text else text for text in free]
    assert texts[0] and len(texts[0]) % 3  # the cut falls inside a token: ids alone would lose its start
    assert isinstance(stats, GenerationStats)
    eos = rows[1, 5].item()  # row 1's sixth token ends its text (and any earlier one of the same id)
    ended = generate_text(model, tok, "hi", num_return_sequences=3, **{**kw, "eos_token_id": eos})
    assert ended[1] == tok.decode(rows[1, :rows[1].tolist().index(eos)].tolist())
    one = dict(kw, num_return_sequences=1, stop=stop)
    assert generate_text(model, tok, "hi", **one) == ["".join(stream_text(model, tok, "hi", **one))]


@torch.no_grad()
def test_eos_token_id_may_be_a_tensor_or_a_numpy_integer(pair):
    """A (n,) tensor of EOS ids ended the rows but not generate_text's texts (its set held 0-d
    tensors, never equal to an int token); a NumPy or 0-d tensor id failed as "not iterable"."""
    model, _ = pair
    tok = ByteTokenizer()
    kw = dict(max_new_tokens=15, do_sample=True, seed=3, pad_token_id=PAD, num_return_sequences=2)
    rows = generate(model, torch.tensor([tok.encode("hi")]), eos_token_id=[], **kw)[:, 2:]
    eos = int(rows[0, 4])
    texts = generate_text(model, tok, "hi", eos_token_id=eos, **kw)
    assert len(texts[0]) < 15  # row 0 ends at its EOS
    for same in (torch.tensor([eos]), torch.tensor(eos), np.int64(eos), [np.int64(eos)]):
        assert generate_text(model, tok, "hi", eos_token_id=same, **kw) == texts
        assert "".join(stream_text(model, tok, "hi", eos_token_id=same, **{**kw, "num_return_sequences": 1})) == \
            generate_text(model, tok, "hi", eos_token_id=eos, **{**kw, "num_return_sequences": 1})[0]


@torch.no_grad()
def test_a_checkpoint_whose_config_lists_several_eos_ids_stops_on_any_as_transformers_does(tmp_path):
    """An audit: a config.json whose eos_token_id is a list (some HF configs hold one) loaded, then
    generate failed with "'<=' not supported between 'int' and 'list'" (eos_list put the list in a
    list). Each id now ends a row, the first pads finished rows, and greedy and beams are
    transformers' own, as is generate_text's cut."""
    model, hf = sharpened_pair(tiny_config())
    ids, mask = left_padded(PROMPTS)
    free = generate(model, ids, mask, max_new_tokens=12, eos_token_id=[])[:, ids.size(1):].tolist()
    # Row 0 makes `second` at step 1, row 1 makes `first` at step 2, neither the other's before it.
    second, first = free[0][1], free[1][2]
    assert second not in free[1][:3] and first not in free[0][:2], "the test wants each row to end at its own id"
    hf.config.eos_token_id = hf.generation_config.eos_token_id = [first, second]
    hf.save_pretrained(tmp_path)  # as transformers writes it: config.json holds the list
    assert json.loads((tmp_path / "config.json").read_text())["eos_token_id"] == [first, second]
    loaded = GPT.from_pretrained(tmp_path).eval()
    assert loaded.config.eos_ids == [first, second] and not loaded.config.has_stale_eos
    ours = generate(loaded, ids, mask, max_new_tokens=12)
    # transformers pads with the first EOS id when no pad_token_id is given; minigpt does too.
    theirs = hf.generate(ids, attention_mask=mask, max_new_tokens=12, do_sample=False, pad_token_id=first)
    assert torch.equal(ours, theirs)
    assert ours[0, ids.size(1) + 1] == second and ours[1, ids.size(1) + 2] == first  # each row ended at its id...
    assert (ours[0, ids.size(1) + 2:] == first).all()  # ...and row 0 is padded with the first
    kw = dict(max_new_tokens=10, num_beams=3, num_return_sequences=3)
    ours = generate(loaded, ids, mask, **kw)
    theirs = hf.generate(ids, attention_mask=mask, do_sample=False, pad_token_id=first, **kw)
    assert torch.equal(ours, theirs)
    assert {first, second} <= set(ours[:, ids.size(1):].flatten().tolist()), "the test wants beams ended by each id"
    text = generate_text(loaded, DigitsTokenizer(), PROMPTS[0], max_new_tokens=12)[0]
    assert text == DigitsTokenizer().decode(free[0][:1])  # the text ends before the second id, unshown


@torch.no_grad()
def test_a_config_eos_list_that_names_a_stale_id_first_pads_with_an_id_the_model_has(pair):
    """A runner's audit: config.json's eos_token_id [60000, 243] in a 50,257-token model (an id of
    another vocabulary first) ended a row at 243, then padded it with 60000, which no tokenizer of
    the model decodes ("unknown token id 60000"). The pad is now the first EOS the model has (for
    greedy and beams alike); a stale EOS alone still pads, as no row can end on it."""
    model, _ = pair
    ids, mask = left_padded(PROMPTS)
    free = generate(model, ids, mask, max_new_tokens=6, eos_token_id=[])[:, ids.size(1):]
    ender, stale, V = int(free[0, 1]), model.config.vocab_size + 50, model.config.vocab_size
    config = copy.deepcopy(model.config)
    listed = copy.copy(model)
    listed.config = config
    config.eos_token_id, config.pad_token_id = [stale, ender], None
    for kw in (dict(), dict(num_beams=2)):
        out = generate(listed, ids, mask, max_new_tokens=6, **kw)[:, ids.size(1):]
        assert out.max() < V, kw
        assert out[0, 1] == ender and (out[0, 2:] == ender).all(), kw  # row 0 ended at its id, padded with it
    config.eos_token_id = stale  # stale alone: nothing ends, nothing pads (the model reads such a pad as 0)
    assert torch.equal(generate(listed, ids, mask, max_new_tokens=6)[:, ids.size(1):], free)


@torch.no_grad()
def test_generate_text_returns_the_best_beams_best_first(pair):
    model, _ = pair
    tok = ByteTokenizer()
    kw = dict(max_new_tokens=8, num_beams=3, num_return_sequences=2, eos_token_id=[])
    rows = generate(model, torch.tensor([tok.encode("hi")]), **kw)[:, 2:]
    assert generate_text(model, tok, "hi", **kw) == [tok.decode(row) for row in rows.tolist()]


def test_stream_text_holds_back_half_characters_and_stop_string_prefixes(pair, monkeypatch):
    """Scripted tokens (one byte each): "é" arrives as two tokens and "€" as three, so a piece must
    never end in half a character (U+FFFD); "b" may start the stop string "bc", so it waits until
    the next token shows it does not; the stop string itself is never shown."""
    import minigpt.text_generation as module

    model, _ = pair
    script = list("aé€b".encode()) + list(b"dxbcz")

    def scripted_stream(model, ids, **kwargs):
        for token in script:
            yield torch.tensor([token])
        return ids

    monkeypatch.setattr(module, "stream", scripted_stream)
    pieces = list(stream_text(model, ByteTokenizer(), "hi", stop=["bc"]))
    assert "".join(pieces) == "aé€bdx"
    assert not any("\ufffd" in p for p in pieces)
    assert not any(p.endswith("b") for p in pieces)  # "b" waited for "d": it could have begun "bc"
    assert pieces[:3] == ["a", "é", "€"]  # each character as soon as it is whole
    # A stop string whose next character is still half-spelled: "User" waited while "：" (3 bytes,
    # 3 tokens here) arrived; it was shown, as nothing then looked like the stop string's start.
    script[:] = list("hi\nUser：bye".encode())
    pieces = list(stream_text(model, ByteTokenizer(), "hi", stop=["User："]))
    assert "".join(pieces) == "hi\n" and not any("U" in p for p in pieces)
    script[:] = list("A: 你好\n用户：再见".encode())
    assert "".join(stream_text(model, ByteTokenizer(), "hi", stop="用户：")) == "A: 你好\n"
    assert "".join(stream_text(model, ByteTokenizer(), "hi", stop="用户！")) == "A: 你好\n用户：再见"  # no stop: all of it


def test_stream_text_never_yields_an_empty_piece(pair, monkeypatch):
    """A piece is some text: the end of the tokens, an EOS, or a stop string right after a piece
    each yielded a last "" (a loop printing the pieces got one empty piece more)."""
    import minigpt.text_generation as module

    model, _ = pair
    script = []

    def scripted_stream(model, ids, **kwargs):
        for token in script:
            yield torch.tensor([token])
        return ids

    monkeypatch.setattr(module, "stream", scripted_stream)
    for tokens, kw in ((b"ab", {}), (b"ab!c", dict(eos_token_id=ord("!"))), (b"abcd", dict(stop="c")),
                       (b"ab", dict(stop="bc"))):  # "b" is held back, then given at the end
        script[:] = list(tokens)
        assert list(stream_text(model, ByteTokenizer(), "hi", **kw)) == ["a", "b"], (tokens, kw)
    script[:] = list(b"cd")  # a stop string at the very start: no text, so no piece at all
    assert list(stream_text(model, ByteTokenizer(), "hi", stop="c")) == []
    monkeypatch.undo()
    pieces = list(stream_text(model, ByteTokenizer(), "hi", max_new_tokens=15, eos_token_id=[]))
    assert pieces and "" not in pieces


def test_a_stop_string_at_the_very_start_of_the_text_leaves_no_text(pair, monkeypatch):
    """A stop string found at character 0 is a cut too (index 0 is not "not found"): both text
    functions return "", not the whole text with the stop string in it."""
    import minigpt.text_generation as module

    model, _ = pair

    def scripted_stream(model, ids, attention_mask=None, **kwargs):
        for token in b"ab cd":
            yield torch.tensor([token])
        return torch.cat([ids, torch.tensor([list(b"ab cd")])], 1)

    monkeypatch.setattr(module, "stream", scripted_stream)
    assert "".join(stream_text(model, ByteTokenizer(), "hi", stop="ab")) == ""
    assert generate_text(model, ByteTokenizer(), "hi", stop="ab") == [""]
    assert generate_text(model, ByteTokenizer(), "hi", stop=" c") == ["ab"]


@pytest.mark.parametrize("kwargs", [{"num_beams": 2}, {"num_return_sequences": 2, "do_sample": True}])
def test_stream_text_refuses_what_it_cannot_stream(pair, kwargs):
    """Beam search picks its text only at the end, and stream_text streams one sequence: both
    yielded '' (or row 0 only) without a word."""
    model, _ = pair
    with pytest.raises(ValueError, match="stream_text streams one sequence"):
        stream_text(model, ByteTokenizer(), "hi", max_new_tokens=4, **kwargs)  # at the call: no next() needed


@pytest.mark.parametrize("kwargs, advice", [
    ({"num_beams": 2}, "use generate_text(num_beams=...), which returns each sequence's text"),
    ({"num_return_sequences": 2, "do_sample": True}, "use generate_text(num_return_sequences=...)"),
    ({"return_scores": True}, "use generate_text(num_beams=..., return_scores=True)"),
    ({"length_penalty": 2.0}, "use generate_text(num_beams=..., length_penalty=...)"),
    ({"early_stopping": True}, "use generate_text(num_beams=..., early_stopping=...)"),
    ({"early_stopping": "never"}, "use generate_text(num_beams=..., early_stopping=...)"),
])
def test_stream_text_shows_no_option_it_refuses_and_points_to_generate_text(pair, kwargs, advice):
    """An audit: help(stream_text) listed num_beams, num_return_sequences and return_scores, which it
    refuses, and the refusal said "use generate(...) and decode its rows" where generate_text returns
    the texts (return_scores got stream's "is for beam search (num_beams > 1)", which stream_text refuses).
    A second audit: it still listed length_penalty and early_stopping, beam search's too, and a value
    of either got stream's warning "pass num_beams > 1", which stream_text refuses."""
    model, _ = pair
    shown = inspect.signature(stream_text).parameters
    refused = {"num_beams", "num_return_sequences", "return_scores", "attention_mask", "length_penalty", "early_stopping"}
    assert not refused & shown.keys()
    assert {"max_new_tokens", "stop", "return_stats"} <= shown.keys()
    with pytest.raises(ValueError, match=re.escape(advice)):
        stream_text(model, ByteTokenizer(), "hi", max_new_tokens=4, **kwargs)
    one = {"num_beams": 1, "num_return_sequences": 1, "return_scores": False,  # what the CLI passes: still taken
           "length_penalty": 1.0, "early_stopping": False}
    assert "".join(stream_text(model, ByteTokenizer(), "hi", max_new_tokens=4, **one)) == \
        generate_text(model, ByteTokenizer(), "hi", max_new_tokens=4)[0]


def test_stream_text_takes_beam_searchs_settings_at_streams_own_defaults():
    """A review: stream_text wrote stream's defaults for length_penalty and early_stopping out again
    (1.0, False), a copy that a change of stream's would leave behind, refusing the value the CLI
    passes. A later review: generate_args.warn_unused_beam_settings held a third copy. One table,
    generate_args.BEAM_SETTINGS_OFF (generation.py imports generate_args, so it cannot read stream's
    signature), serves both, and is held to stream's defaults here."""
    import minigpt.text_generation
    from minigpt.generate_args import BEAM_SETTINGS_OFF, warn_unused_beam_settings

    defaults = inspect.signature(stream).parameters
    assert BEAM_SETTINGS_OFF == {name: defaults[name].default for name in ("length_penalty", "early_stopping")}
    assert minigpt.text_generation.BEAM_SETTINGS_OFF is BEAM_SETTINGS_OFF
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_unused_beam_settings(1, *BEAM_SETTINGS_OFF.values())  # at the defaults: nothing to warn of
    with pytest.warns(UserWarning, match=re.escape("length_penalty=2.0 is for beam search, which num_beams=1 does not run")):
        warn_unused_beam_settings(1, 2.0, BEAM_SETTINGS_OFF["early_stopping"])


@pytest.mark.parametrize("value", ["no", 1])
def test_stream_text_says_a_return_scores_that_is_no_switch_is_no_switch(pair, value):
    """A review: stream_text read return_scores="no" (or 1) as True and refused it as beam search's
    ("use generate_text(num_beams=..., return_scores=True)"), where stream says "return_scores must
    be True or False": it says so too, before anything else."""
    model, _ = pair
    with pytest.raises(TypeError, match=re.escape(f"return_scores must be True or False, got {value!r}")):
        stream_text(model, ByteTokenizer(), "hi", max_new_tokens=4, return_scores=value)


def test_stream_text_is_imported_from_minigpt_as_the_other_text_functions_are():
    """An audit: `from minigpt import stream_text` was an ImportError, while stream, generate_text and
    generate_texts came from minigpt; editors read the TYPE_CHECKING imports, so they must name every public name too."""
    import ast
    import minigpt
    from minigpt import stream_text as imported

    assert imported is stream_text and "stream_text" in minigpt.__all__
    tree = ast.parse(inspect.getsource(minigpt))
    checked = next(n for n in tree.body if isinstance(n, ast.If) and ast.unparse(n.test) == "TYPE_CHECKING")
    typed = {(a.name, n.module) for n in checked.body for a in n.names}
    assert typed == set(minigpt._HOMES.items()) and set(minigpt.__all__) == set(minigpt._HOMES)


@pytest.mark.parametrize("kwargs, match", [
    # An audit: "must be real number, not str", "only one element tensors can be converted to Python scalars".
    ({"num_beams": 2, "length_penalty": "1"}, "length_penalty must be a number (one for every beam), got '1'"),
    ({"num_beams": 2, "length_penalty": None}, "length_penalty must be a number (one for every beam), got None"),
    ({"num_beams": 2, "length_penalty": torch.tensor([1.0, 2.0])}, "length_penalty must be a number"),
    ({"streamer": 5}, "streamer must be a function, called with each step's tokens (B,), got 5"),  # failed after the prefill
])
def test_an_argument_of_the_wrong_type_is_named_at_the_call(pair, kwargs, match):
    model, _ = pair
    with pytest.raises(TypeError, match=re.escape(match)):
        stream(model, torch.tensor([PROMPTS[0]]), max_new_tokens=4, **kwargs)
    with pytest.raises(TypeError, match=re.escape('num_beams must be an integer, got \'2\'')):
        stream_text(model, ByteTokenizer(), "hi", max_new_tokens=4, num_beams="2")  # not "'>' not supported"


def test_stream_checks_its_arguments_at_the_call(pair):
    """A bad argument raises where stream/stream_text is called, not at the first next() (where a
    generator function would run its checks), so the traceback points at the mistake."""
    model, _ = pair
    ids = torch.tensor([[1, 2, 3]])
    with pytest.raises(ValueError, match="top_p"):
        stream(model, ids, do_sample=True, top_p=2.0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        stream_text(model, ByteTokenizer(), "hi", max_new_tokens=0)
    with pytest.raises(TypeError, match="prompt must be one text"):
        stream_text(model, ByteTokenizer(), ["hi", "there"])


@torch.no_grad()
def test_text_functions_take_one_prompt_as_text_ids_or_a_tensor(pair):
    """A list of texts is refused by name (it failed inside torch.tensor: "too many dimensions
    'str'"); a 1-D tensor of ids is one prompt, as its list is (it failed converting to an index),
    and so is a (1, T) one, as `tok(text, return_tensors="pt")` gives; (2, T) is two prompts."""
    from minigpt.explain import explain

    model, _ = pair
    tok, kw = ByteTokenizer(), dict(max_new_tokens=4, eos_token_id=[])
    text = generate_text(model, tok, "hi", **kw)
    assert generate_text(model, tok, tok.encode("hi"), **kw) == text
    assert generate_text(model, tok, torch.tensor(tok.encode("hi")), **kw) == text
    assert generate_text(model, tok, np.array(tok.encode("hi")), **kw) == text  # a NumPy array, as before its check
    assert "".join(stream_text(model, tok, torch.tensor(tok.encode("hi")), **kw)) == text[0]
    assert generate_text(model, tok, torch.tensor([tok.encode("hi")]), **kw) == text  # (1, T): one prompt too
    for call in (lambda p: generate_text(model, tok, p, **kw), lambda p: list(stream_text(model, tok, p, **kw)),
                 lambda p: explain(model, tok, p, steps=2, out=io.StringIO())):
        with pytest.raises(TypeError, match="prompt must be one text .* got list; for several prompts"):
            call(["hi", "there"])
        with pytest.raises(TypeError, match=r"got shape \(2, 2\); for several prompts"):
            call(torch.ones(2, 2, dtype=torch.long))


@torch.no_grad()
def test_stop_as_one_string_is_one_stop_string(pair):
    """stop="xx" means stop=["xx"] (as in transformers), not a stop at every "x"."""
    model, _ = pair
    tok = ByteTokenizer()
    ids, kw = torch.tensor([tok.encode("hi")]), dict(max_new_tokens=15, eos_token_id=[])
    free = generate(model, ids, **kw)
    text = tok.decode(free[0, 2:].tolist())
    ch = next(c for c in text if c.isascii())  # a character the model writes: it stopped char-split stops
    stop = ch * 16  # longer than the 15 new tokens (1 byte each): never written
    assert torch.equal(generate(model, ids, stop=stop, tokenizer=tok, **kw), free)
    assert "".join(stream_text(model, tok, "hi", stop=stop, **kw)) == text


@torch.no_grad()
def test_stop_strings_work_with_a_tokenizer_that_decodes_only_text(pair):
    """transformers' tokenizers (its generate takes one for stop strings) have no decode_bytes:
    stop=... with one failed with AttributeError. Text decoding finds the same stop."""
    class TextOnly:  # encode and decode, as GPT2TokenizerFast has them
        def encode(self, text: str) -> list[int]:
            return ByteTokenizer().encode(text)

        def decode(self, ids) -> str:
            return ByteTokenizer().decode(ids)

    model, _ = pair
    ids, kw = torch.tensor([ByteTokenizer().encode("hi")]), dict(max_new_tokens=15, eos_token_id=[], pad_token_id=PAD)
    text = ByteTokenizer().decode(generate(model, ids, **kw)[0, 2:].tolist())
    stop = next(text[i:i + 2] for i in range(3, 13) if text[i:i + 2].isascii())  # two ASCII characters it writes
    out = generate(model, ids, stop=stop, tokenizer=TextOnly(), **kw)
    assert torch.equal(out, generate(model, ids, stop=stop, tokenizer=ByteTokenizer(), **kw))
    assert ByteTokenizer().decode(out[0, 2:].tolist()) == text[:text.find(stop)]


@torch.no_grad()
def test_streamer_and_stream_yield_each_step(pair):
    model, _ = pair
    ids, mask = left_padded(PROMPTS)
    seen = []
    out = generate(model, ids, mask, max_new_tokens=5, eos_token_id=[], streamer=seen.append)
    assert torch.equal(torch.stack(seen, 1), out[:, ids.size(1):])
    steps = list(stream(model, ids, mask, max_new_tokens=5, eos_token_id=[]))
    assert torch.equal(torch.stack(steps, 1), out[:, ids.size(1):])


@torch.enable_grad()  # as a caller who forgot torch.no_grad(), like README's example
def test_generation_never_records_autograd_and_keeps_callers_grad_mode(pair):
    """With grad on, the KV cache would join the autograd graph and memory grow every token: every
    entry point runs the model without grad, and hands the caller's grad mode back between yields."""
    from minigpt.explain import explain

    model, _ = pair
    in_forward = []
    hook = model.register_forward_hook(lambda *_: in_forward.append(torch.is_grad_enabled()))
    try:
        ids = torch.tensor([PROMPTS[0]])
        generate(model, ids, max_new_tokens=4, eos_token_id=[])
        generate(model, ids, max_new_tokens=4, eos_token_id=[], num_beams=2)
        explain(model, ByteTokenizer(), "hi", steps=2, out=io.StringIO())
        for _ in stream(model, ids, max_new_tokens=4, eos_token_id=[]):
            assert torch.is_grad_enabled()
        for _ in stream_text(model, ByteTokenizer(), "hi", max_new_tokens=4, eos_token_id=[]):
            assert torch.is_grad_enabled()
    finally:
        hook.remove()
    assert len(in_forward) > 10 and not any(in_forward)
    assert torch.is_grad_enabled()


@torch.no_grad()
def test_sampling_seed_reproduces_and_num_return_sequences(pair):
    model, _ = pair
    ids, mask = left_padded(PROMPTS)
    kw = dict(do_sample=True, temperature=torch.tensor([0.7, 1.0, 1.3]), top_k=50, top_p=0.9,
              max_new_tokens=10, eos_token_id=[], presence_penalty=0.5, frequency_penalty=0.3)
    a = generate(model, ids, mask, seed=7, **kw)
    assert torch.equal(a, generate(model, ids, mask, seed=7, **kw))
    assert not torch.equal(a, generate(model, ids, mask, seed=8, **kw))
    many = generate(model, ids, mask, seed=7, num_return_sequences=3, **kw)
    assert many.shape == (9, ids.size(1) + 10)
    assert torch.equal(many[0::3, :ids.size(1)], ids)


@torch.no_grad()
def test_a_greedy_row_among_sampled_ones_decodes_as_greedy_decoding_does_on_tied_logits():
    """Two tokens with the same embedding row tie exactly at the top (GPT-2 ties wte and the LM
    head). A temperature-0 row of a mixed batch took the tied token that top-p kept (the later
    one), not the argmax greedy decoding takes (the first)."""
    model, _ = sharpened_pair(tiny_config())
    ids = torch.tensor([PROMPTS[2]])
    first = int(generate(model, ids, max_new_tokens=1, eos_token_id=[])[0, -1])
    twin = first - 1  # a lower id: greedy now takes it, and the sort in top-p kept the other
    model.transformer.wte.weight[twin] = model.transformer.wte.weight[first]  # logits[first] == logits[twin]
    greedy = generate(model, ids, max_new_tokens=3, eos_token_id=[])
    assert int(greedy[0, ids.size(1)]) == twin
    both = ids.repeat(2, 1)
    mixed = generate(model, both, max_new_tokens=3, eos_token_id=[], do_sample=True, seed=0,
                     temperature=torch.tensor([0.0, 1.0]), top_p=0.1)
    assert torch.equal(mixed[0], greedy[0])


@torch.no_grad()
def test_empty_prompt_starts_from_endoftext(pair, monkeypatch):
    model, _ = pair
    eot = model.config.eos_token_id % model.config.vocab_size
    monkeypatch.setattr(model.config, "bos_token_id", eot)  # the tiny vocabulary has no id 50256; undone after
    empty = generate(model, torch.zeros(1, 0, dtype=torch.long), max_new_tokens=5, eos_token_id=[])
    assert torch.equal(empty, generate(model, torch.tensor([[eot]]), max_new_tokens=5, eos_token_id=[]))


@torch.no_grad()
def test_stats_are_filled(pair):
    model, _ = pair
    ids, mask = left_padded(PROMPTS)
    out, stats = generate(model, ids, mask, max_new_tokens=8, eos_token_id=[], return_stats=True)
    assert isinstance(stats, GenerationStats) and stats.new_tokens == 3 * 8
    assert stats.ttft_s > 0 and stats.tpot_s > 0 and stats.tokens_per_s > 0 and stats.peak_memory_bytes > 0
    c = model.config
    assert stats.kv_cache_bytes == 2 * c.n_layer * 3 * 64 * c.n_embd * 4  # 7 + 8 tokens → one 64-slot bucket
    _, beams = generate(model, ids, mask, max_new_tokens=8, eos_token_id=[], num_beams=4, return_stats=True)
    assert beams.new_tokens == 3 * 8  # per prompt, not per beam: beams are candidates, not output
    for beams in (1, 2):  # one new token is all prefill: no decode step
        _, one = generate(model, ids, mask, max_new_tokens=1, num_beams=beams, return_stats=True)
        assert one.tpot_s == one.tokens_per_s == 0 and "TPOT - (no decode step)" in str(one)
    # Decode steps that drew nothing new (a GPU's loop runs a few past the rows' end) still have a TPOT.
    assert "TPOT 2.00 ms | 0.0 tok/s" in str(GenerationStats(tpot_s=0.002, tokens_per_s=0.0))
    # Both loops' formula: 3 rows, 5 steps after prefill's first token in 0.1 s, 10 of them drawn after it.
    timer = LoopTimer(torch.device("cpu"))
    timer.t_start, timer.t_first, timer.t_end = 1.0, 1.25, 1.35
    m = timer.stats(prompt_tokens=7, new_tokens=13, first_tokens=3, steps=5, kv_cache_bytes=64, device=torch.device("cpu"))
    assert (m.ttft_s, m.tpot_s, m.tokens_per_s) == pytest.approx((0.25, 0.02, 100.0))


@pytest.fixture
def fake_clock(monkeypatch):
    """fake_clock(s): moves the clock that generation's stats read (minigpt/stats.py's `time`) s
    seconds ahead, as if s seconds passed there, without waiting them: a test of what the stats
    count can spend 10 s where it would otherwise sleep."""
    import time

    import minigpt.stats

    ahead = [0.0]  # seconds the fake clock is ahead of the real one
    monkeypatch.setattr(minigpt.stats, "time", SimpleNamespace(perf_counter=lambda: time.perf_counter() + ahead[0]))

    def advance(seconds: float) -> None:
        ahead[0] += seconds

    return advance


def test_a_loop_that_looks_every_few_steps_reads_the_clock_only_at_its_phases(pair, monkeypatch):
    """A GPU's loop looks at the device every SYNC_EVERY steps, and each clock reading waits for the
    GPU (LoopTimer.now: torch.cuda.synchronize). It reads the clock at the start, the first token
    and the end alone: reading it around each hand-over too would be a sync per step (a mutation
    audit: that passed every test, as a CPU's loop waits each step anyway). Simulated on the CPU."""
    import time

    import minigpt.generation
    import minigpt.stats

    reads = []
    monkeypatch.setattr(minigpt.stats, "time", SimpleNamespace(perf_counter=lambda: reads.append(1) or time.perf_counter()))
    model, _ = pair
    ids, mask = left_padded(PROMPTS)
    for sync_every, expected in (({}, 3 + 2 * 16), ({"cpu": 8}, 3)):  # a CPU's: around each of the 16 hand-overs too
        monkeypatch.setattr(minigpt.generation, "SYNC_EVERY", sync_every)
        reads.clear()
        generate(model, ids, mask, max_new_tokens=16, eos_token_id=[], return_stats=True)
        assert len(reads) == expected, sync_every


def test_the_callers_time_between_tokens_is_not_decode_time(pair, fake_clock, monkeypatch):
    """A benchmarking audit: a `stream` consumer that slept 20 ms a token made TPOT 31 ms where
    generate's was 10 ms: the time outside the loop (the consumer's, a streamer's) counted as
    decoding. The host waits for every step on a CPU, so it is left out exactly. On the fake clock
    each forward takes 1 s and the caller waits 10 s a token: TPOT is the 1 s (and the real ms),
    so it fails both if the caller's time is counted and if a step's own time is left out."""
    step_s, wait_s = 1.0, 10.0
    model, _ = pair
    forward = model.forward

    def timed_forward(*args, **kwargs):  # a step's own work: in TPOT
        fake_clock(step_s)
        return forward(*args, **kwargs)

    ids, mask = left_padded(PROMPTS)
    kw = dict(max_new_tokens=6, eos_token_id=[], return_stats=True)
    generate(model, ids, mask, **kw)  # warm: a process's first call packs the weights (minigpt/linear.py)
    monkeypatch.setattr(model, "forward", timed_forward)
    steps = stream(model, ids, mask, **kw)
    while True:
        try:
            next(steps)
        except StopIteration as end:
            _, consumed = end.value
            break
        fake_clock(wait_s)
    _, streamed = generate(model, ids, mask, streamer=lambda tokens: fake_clock(wait_s), **kw)
    _, plain = generate(model, ids, mask, **kw)
    print(f"TPOT: plain {plain.tpot_s:.3f} s, consumed {consumed.tpot_s:.3f}, streamer {streamed.tpot_s:.3f}")
    # Counted, the waits would add 10 s · 6 waits / 5 steps to each TPOT; a real step takes milliseconds.
    for stats in (plain, consumed, streamed):
        assert step_s <= stats.tpot_s < step_s + wait_s / 2, stats


@torch.no_grad()
def test_beam_search_ttft_includes_the_first_tokens_choice(pair, fake_clock, monkeypatch):
    """A numbers audit: beam search read TTFT's clock right after prefill, so the first token's
    choice (scoring and picking candidates) was timed as decoding, unlike sampling's TTFT. On the
    fake clock each choice takes 10 s: TTFT holds the first one, the decode steps the two others."""
    import minigpt.beam_search as beam_search

    choice_s = 10.0
    model, _ = pair
    real = beam_search.best_candidates

    def slow(*args, **kwargs):
        fake_clock(choice_s)
        return real(*args, **kwargs)

    monkeypatch.setattr(beam_search, "best_candidates", slow)
    ids, mask = left_padded(PROMPTS)
    _, stats = generate(model, ids, mask, max_new_tokens=3, num_beams=2, eos_token_id=[], return_stats=True)
    assert choice_s <= stats.ttft_s < 2 * choice_s and stats.tpot_s >= choice_s, stats


@torch.no_grad()
def test_stats_count_each_prompt_once_and_only_the_tokens_drawn(pair):
    """n samples of a prompt are one prompt; a sample that ended early adds no pads to `new`."""
    model, _ = pair
    ids, mask = left_padded(PROMPTS)
    real = sum(map(len, PROMPTS))  # 13: the pads are not prompt tokens
    kw = dict(max_new_tokens=8, do_sample=True, seed=0, pad_token_id=PAD, return_stats=True)
    out, stats = generate(model, ids, mask, num_return_sequences=4, eos_token_id=[], **kw)
    assert (stats.prompt_tokens, stats.new_tokens) == (real, 3 * 4 * 8)  # 12 samples of 8 tokens
    new = out[:, ids.size(1):]
    eos = int(new[5, 2])  # sample 5 draws it third: it (and any row drawing it earlier) ends early
    out, stats = generate(model, ids, mask, num_return_sequences=4, eos_token_id=eos, **kw)
    drawn = [row.index(eos) + 1 if eos in row else 8 for row in out[:, ids.size(1):].tolist()]  # EOS included
    assert drawn[5] == 3 and stats.prompt_tokens == real and stats.new_tokens == sum(drawn) < 3 * 4 * 8


@pytest.mark.parametrize("kwargs, match", [
    # The limits that would fit: the prompt reads 7 + 123 - 1 positions, so 6 prompt tokens or 122 new ones.
    (dict(max_new_tokens=123), r"prompt length 7 \+ max_new_tokens 123 - 1 = 129 exceeds the model's context "
                               r"n_positions=128 .*: with 123 new tokens a prompt can have at most 6; shorten the prompt "
                               r"\(truncate_left=True of generate_text, stream_text and generate_texts, or the CLI's --truncate-left, keeps its last tokens\) or generate fewer tokens \(at most "
                               r"122 with this prompt\)"),
    # No prompt leaves room for 129: no cut of it could help, so --truncate-left is not suggested.
    (dict(max_new_tokens=129), r"^(?!.*truncate).*: max_new_tokens can be at most 128 \(after a 1-token prompt, 122 "
                               r"after this one\); generate fewer tokens, or let the context slide \(slide=N keeps its "
                               r"last N tokens when it is full\)$"),
    (dict(num_beams=0), "num_beams"),
    (dict(do_sample=True, top_p=1.5), "top_p"),
    (dict(do_sample=True, temperature=-1.0), "temperature"),
    (dict(num_beams=2, do_sample=True), "num_beams > 1"),
    (dict(num_return_sequences=2), "num_return_sequences"),
    (dict(stop=["x"]), "tokenizer"),
    (dict(stop=["x", ""], tokenizer=ByteTokenizer()), "non-empty string"),  # "" is in every text: it would stop at once
    (dict(min_new_tokens=50), "min_new_tokens"),
    (dict(max_new_tokens=-5), "max_new_tokens must be ≥ 1, got -5"),  # not a min_new_tokens range naming -5
    (dict(input_ids=torch.tensor([[5, 300, 7]])), r"vocab_size=300\), got token id 300"),
    (dict(input_ids=torch.tensor([[5, 7], [-1, 7]]), num_beams=2), r"vocab_size=300\), got token id -1"),
    ({"do_sample": True, "top_k": torch.tensor([5, 7])}, r"top_k has 2 values.* one per prompt \(row of logits\): 1"),
    ({"num_beams": 2, "repetition_penalty": torch.tensor([1.5, 1.2])}, r"repetition_penalty has 2 values.* 1"),
    ({"sampler": "trition"}, "sampler must be 'auto', 'torch' or 'triton', got 'trition'"),  # greedy, yet checked
    ({"do_sample": True, "sampler": "triton"}, "sampler='triton' runs on CUDA tensors, got cpu"),  # this device lacks it
    ({"pad_token_id": -5}, r"pad_token_id -5 is not a token id of this model: ids are 0 \.\. 299"),
    ({"eos_token_id": [3, 300]}, "eos_token_id 300 is not a token id"),
    ({"num_beams": 2, "length_penalty": float("nan")}, "length_penalty must be a finite number, got nan"),
    ({"num_beams": 2, "early_stopping": "sometimes"}, "early_stopping must be True, False or 'never', got 'sometimes'"),
    ({"do_sample": True, "top_k": torch.tensor([2.5])}, "top_k must be an integer"),  # not silently 2
    ({"no_repeat_ngram_size": -1}, r"no_repeat_ngram_size must be ≥ 0 \(0 means off\), got -1"),
])
def test_bad_arguments_raise(pair, kwargs, match, monkeypatch):
    """Each at the call of stream (so of generate too), before any step runs."""
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # with it the kernel would run on the CPU
    model, _ = pair
    kwargs.setdefault("max_new_tokens", 20)
    ids = kwargs.pop("input_ids", torch.tensor([PROMPTS[0]]))
    with pytest.raises(ValueError, match=match):
        stream(model, ids, **kwargs)


@torch.no_grad()
def test_the_limits_a_context_error_names_do_fit(pair):
    """max_new_tokens 123 after a 7-token prompt overflows n_positions=128 by one; the error names
    the limits (test_bad_arguments_raise): 6 prompt tokens, or 122 new ones, and 128 after 1 token."""
    model, _ = pair
    ids = torch.tensor([PROMPTS[0]])  # 7 tokens
    kw = dict(eos_token_id=[])
    assert generate(model, ids, max_new_tokens=122, **kw).shape == (1, 7 + 122)
    assert generate(model, ids[:, 1:], max_new_tokens=123, **kw).shape == (1, 6 + 123)
    assert generate(model, ids[:, :1], max_new_tokens=128, **kw).shape == (1, 1 + 128)


@torch.no_grad()
def test_a_batch_padded_to_the_context_fits_as_its_longest_prompt_does(pair):
    """Pads take cache slots, not positions: a batch padded to a fixed length (padding="max_length")
    was refused as if its pads were prompt tokens ("prompt length 128 + max_new_tokens 8")."""
    model, _ = pair
    ids, mask = left_padded(PROMPTS)  # 7 columns
    n_positions, extra = model.config.n_positions, model.config.n_positions - ids.size(1)
    padded = torch.cat([torch.full((3, extra), PAD), ids], 1)  # (3, 128): as long as the context
    padded_mask = torch.cat([torch.zeros(3, extra, dtype=torch.long), mask], 1)
    kw = dict(max_new_tokens=8, eos_token_id=[], pad_token_id=PAD)
    out = generate(model, padded, padded_mask, **kw)
    assert torch.equal(out[:, n_positions:], generate(model, ids, mask, **kw)[:, ids.size(1):])
    with pytest.raises(ValueError, match=r"prompt length 7 \+ max_new_tokens 123 - 1 = 129 exceeds"):
        generate(model, padded, padded_mask, max_new_tokens=123)  # the longest prompt's own tokens count
    beams = dict(kw, num_beams=2, max_new_tokens=4)
    assert torch.equal(generate(model, padded, padded_mask, **beams)[:, n_positions:],
                       generate(model, ids, mask, **beams)[:, ids.size(1):])


@pytest.mark.parametrize("name, value", [("max_new_tokens", 3.0), ("max_new_tokens", None), ("min_new_tokens", 1.5),
                                         ("num_beams", 2.0), ("num_return_sequences", 2.0),
                                         ("no_repeat_ngram_size", 2.5), ("max_new_tokens", True),
                                         ("num_beams", True), ("max_new_tokens", torch.tensor(True))])
def test_a_count_that_is_not_an_integer_is_named(pair, name, value):
    """3.0 failed inside torch.full ("argument 'size' failed to unpack"), None in a comparison,
    and 1.5 passed as a count of tokens; integers of NumPy or 0-d tensors are integers too."""
    model, _ = pair
    kwargs = {"max_new_tokens": 3, "do_sample": name == "num_return_sequences", name: value}
    with pytest.raises(TypeError, match=rf"{name} must be an integer, got (the bool )?{re.escape(str(value))}"):
        generate(model, torch.tensor([PROMPTS[0]]), **kwargs)
    assert generate(model, torch.tensor([PROMPTS[0]]), max_new_tokens=torch.tensor(3)).shape == (1, 10)


@pytest.mark.parametrize("name, value, message", [
    ("pad_token_id", 5.0, "pad_token_id must be an integer, got 5.0"),
    ("eos_token_id", 5.0, "eos_token_id must be an integer or a list of them, got 5.0"),
    ("eos_token_id", "5", "eos_token_id must be an integer or a list of them, got '5'"),
    ("eos_token_id", [5, 1.5], "eos_token_id must be an integer, got 1.5"),
    ("seed", 1.5, "seed must be an integer, got 1.5"),
    ("seed", "1", "seed must be an integer, got '1'"),
    ("seed", True, "seed must be an integer, got the bool True"),
    ("pad_token_id", True, "pad_token_id must be an integer, got the bool True"),
    ("eos_token_id", True, "eos_token_id must be an integer, got the bool True"),
    ("eos_token_id", [2, False], "eos_token_id must be an integer, got the bool False"),
])
def test_a_token_id_or_seed_that_is_not_an_integer_is_named(pair, name, value, message):
    """pad_token_id=5.0 passed the range check and failed in the embedding, eos_token_id=5.0 as
    "'float' object is not iterable", and seed=1.5 in torch's manual_seed ("expected a long"). A bool
    passed as 1 (True) or 0."""
    model, _ = pair
    with pytest.raises(TypeError, match=re.escape(message)):
        generate(model, torch.tensor([PROMPTS[0]]), max_new_tokens=3, do_sample=True, **{name: value})
    assert generate(model, torch.tensor([PROMPTS[0]]), max_new_tokens=3, do_sample=True, seed=np.int64(1),
                    pad_token_id=torch.tensor(5)).shape == (1, 10)


def test_a_seed_past_64_bits_is_named_and_every_64_bit_seed_is_taken(pair):
    """An audit: seed=2**70 failed in torch's manual_seed with "Overflow when unpacking long long",
    naming no argument, from generate and from sampling.sample."""
    from minigpt.explain import explain
    from minigpt.sampling import sample

    model, _ = pair
    for seed in (2**64, -2**63 - 1, 2**70):
        with pytest.raises(ValueError, match=re.escape(f"seed must fit in 64 bits (-2**63 .. 2**64 - 1), got {seed}")):
            generate(model, torch.tensor([PROMPTS[0]]), max_new_tokens=3, do_sample=True, seed=seed)
        for call in (lambda: sample(torch.randn(2, 8), seed=seed),  # and the paths that seed before generate (a reviewer)
                     lambda: generate_texts(model, ByteTokenizer(), ["a", "b"], max_new_tokens=2, do_sample=True,
                                            seed=seed, batch_size=1),
                     lambda: explain(model, ByteTokenizer(), "a", steps=2, seed=seed, out=io.StringIO())):
            with pytest.raises(ValueError, match="seed must fit in 64 bits"):
                call()
    for seed in (-2**63, -1, 2**64 - 1):
        assert generate(model, torch.tensor([PROMPTS[0]]), max_new_tokens=3, do_sample=True, seed=seed).shape == (1, 10)
        assert sample(torch.randn(2, 8), seed=seed).shape == (2,)


@pytest.mark.parametrize("stop", [["\n", 5], 5, [b"x"]])
def test_a_stop_that_is_not_strings_is_named(pair, stop):
    """stop=["\n", 5] failed with an AttributeError deep in StopStrings."""
    model, _ = pair
    with pytest.raises(TypeError, match="stop must be a string or a list of strings, got"):
        generate_text(model, ByteTokenizer(), "hi", max_new_tokens=3, stop=stop)


@torch.no_grad()
def test_a_0d_tensor_parameter_acts_as_the_number(pair):
    """torch.tensor(0.7) is one value for every row, as 0.7 is (a (B,) tensor gives one per prompt)."""
    model, _ = pair
    ids, mask = left_padded(PROMPTS)
    for kw, tensors in [({"do_sample": True, "seed": 0, "num_return_sequences": 2}, {"temperature": 0.7, "top_p": 0.9}),
                        ({"num_beams": 2}, {"repetition_penalty": 1.3})]:
        as_numbers = generate(model, ids, mask, max_new_tokens=5, eos_token_id=[], **kw, **tensors)
        as_tensors = generate(model, ids, mask, max_new_tokens=5, eos_token_id=[], **kw,
                              **{k: torch.tensor(v) for k, v in tensors.items()})
        assert torch.equal(as_numbers, as_tensors)


def test_right_padding_and_nan_logits_raise(pair):
    model, _ = pair
    with pytest.raises(ValueError, match=r"attention_mask has shape \(1, 2\), but input_ids has \(1, 3\)"):
        generate(model, torch.tensor([[1, 2, 3]]), torch.tensor([[1, 1]]), max_new_tokens=2)
    with pytest.raises(ValueError, match=r"attention_mask has shape \(2, 3\), but input_ids has \(1, 3\)"):
        generate(model, torch.tensor([1, 2, 3]), torch.ones(2, 3, dtype=torch.long), max_new_tokens=2)  # as given
    for mask in ([[1, 1, 1]], np.ones((1, 3))):  # an audit: "'list' object has no attribute 'dim'"
        with pytest.raises(TypeError, match=rf"attention_mask must be a tensor \(B, T\) of 0 \(pad\) and 1 \(token\), "
                                            rf"got {type(mask).__name__}: torch.tensor\(mask\)"):
            generate(model, torch.tensor([[1, 2, 3]]), mask, max_new_tokens=2)
    one = generate(model, torch.tensor([[1, 2, 3]]), torch.tensor([1, 1, 1]), max_new_tokens=2)  # (T,) mask, one prompt
    assert torch.equal(one, generate(model, torch.tensor([[1, 2, 3]]), max_new_tokens=2))
    with pytest.raises(ValueError, match=r"attention_mask must hold 0 \(padding\) or 1 \(token\), got 2"):
        generate(model, torch.tensor([[1, 2, 3]]), torch.tensor([[1, 2, 1]]), max_new_tokens=2)
    with pytest.raises(ValueError, match=r"attention_mask must hold 0 \(padding\) or 1 \(token\), got 0.5"):
        generate(model, torch.tensor([[1, 2, 3]]), torch.tensor([[0.5, 1.0, 1.0]]), max_new_tokens=2)  # not silently 0
    float_mask = generate(model, torch.tensor([[1, 2, 3]]), torch.tensor([[0.0, 1.0, 1.0]]), max_new_tokens=2)
    assert torch.equal(float_mask, generate(model, torch.tensor([[1, 2, 3]]), torch.tensor([[0, 1, 1]]), max_new_tokens=2))
    with pytest.raises(TypeError, match="input_ids must be an integer tensor of token ids, got torch.float32"):
        generate(model, torch.tensor([[1.7, 2.0]]), max_new_tokens=2)  # not silently token 1
    with pytest.raises(TypeError, match="input_ids must be an integer tensor of token ids, got torch.bool"):
        generate(model, torch.tensor([[True, False]]), max_new_tokens=2)  # a mask: not silently ids 1, 0
    with pytest.raises(ValueError, match="left-padded"):
        generate(model, torch.tensor([[1, 2, 0]]), torch.tensor([[1, 1, 0]]), max_new_tokens=2)
    broken, _ = sharpened_pair(tiny_config())
    with torch.no_grad():
        broken.transformer.h[0].mlp.c_fc.weight[0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="NaN"):
        generate(broken, torch.tensor([PROMPTS[0]]), max_new_tokens=2)
    from minigpt.explain import explain

    with pytest.raises(FloatingPointError, match="NaN"):  # not a table of nan and a "drawn" token
        explain(broken, ByteTokenizer(), PROMPTS[0], steps=2, out=io.StringIO())


def use_fake_kernel(monkeypatch, fused_sample) -> None:
    """sampler="triton" on the CPU, with `fused_sample` standing in for the kernel (the real one runs
    under Triton's interpreter only in a fresh process: tests/test_fused_sampling.py)."""
    import importlib.machinery
    import sys
    import types

    module = types.ModuleType("minigpt.kernels.sampling")
    module.__spec__ = importlib.machinery.ModuleSpec("minigpt.kernels.sampling", None)
    module.fused_sample = fused_sample
    monkeypatch.setitem(sys.modules, "minigpt.kernels.sampling", module)
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # lets sampler="triton" run on the CPU


def test_a_stream_draws_nothing_before_its_first_step(pair, monkeypatch):
    """stream checks its arguments at the call but draws nothing there: the fused kernel's seed and
    offset are made at the first step. So a stream made under inference_mode steps outside it (an
    in-place `offset += 1` on an inference tensor raised), and torch.manual_seed between the call
    and the first step fixes an unseeded draw (the seed was drawn from the RNG at the call)."""
    seeds = []

    def fake_fused_sample(logits, seed, offset, **params):  # records the Philox key it was given
        seeds.append(int(seed))
        return logits.argmax(-1)

    use_fake_kernel(monkeypatch, fake_fused_sample)
    model, _ = pair
    ids, kw = torch.tensor([PROMPTS[0]]), dict(max_new_tokens=3, do_sample=True, sampler="triton", eos_token_id=[])
    with torch.inference_mode():
        steps = stream(model, ids, **kw)
    torch.manual_seed(0)
    assert len(list(steps)) == 3 and len(set(seeds)) == 1  # one key for the whole stream
    torch.manual_seed(0)
    list(stream(model, ids, **kw))
    assert seeds[3] == seeds[0]  # the same RNG state at the first draw: the same key


@torch.no_grad()
@pytest.mark.parametrize("sampling", [dict(), dict(do_sample=True), dict(do_sample=True, sampler="triton")],
                         ids=["greedy", "torch", "triton"])
def test_nan_logits_between_the_hosts_looks_are_an_error_not_a_token(pair, monkeypatch, sampling):
    """On a GPU the host looks at the logits only every few steps (SYNC_EVERY): NaN logits after
    its last look were drawn from without a word, and the fused kernel's answer to them, token -1,
    was fed to the embedding (a device-side assert; on this CPU stand-in an IndexError). Here the
    CPU loop looks as seldom as a GPU's, and the model's logits turn NaN at step 3 of 5."""
    gen = importlib.import_module("minigpt.generation")
    monkeypatch.setitem(gen.SYNC_EVERY, "cpu", 8)
    real_step = gen.DecodeState.step
    monkeypatch.setattr(gen.DecodeState, "step", lambda self, tokens: real_step(self, tokens) * (
        float("nan") if self.slot == self.mask.size(1) + 3 else 1.0))  # slot T + 2 feeds step 3

    def fake_fused_sample(logits, **kwargs):  # as the kernel: -1 for a row of NaN/inf logits
        return torch.where(torch.isfinite(logits).all(-1), logits.argmax(-1), -1)

    use_fake_kernel(monkeypatch, fake_fused_sample)
    model, _ = pair
    ids, mask = left_padded(PROMPTS)
    kw = dict(max_new_tokens=5, eos_token_id=[], pad_token_id=PAD, **sampling)
    with pytest.raises(FloatingPointError, match="NaN/inf logits"):
        generate(model, ids, mask, **kw)
    assert generate(model, ids, mask, **{**kw, "max_new_tokens": 3}).shape == (3, 7 + 3)  # NaN never reached


@torch.no_grad()
@pytest.mark.parametrize("do_sample", [False, True])
def test_a_penalty_pushing_a_logit_past_float_range_is_named(pair, do_sample):
    """A repetition_penalty near 0 divides a seen token's positive logit past float range (+inf): no
    token either. The loop checks the logits after the penalties, so its error names them too."""
    model, _ = pair
    ids, mask = left_padded(PROMPTS)
    with pytest.raises(FloatingPointError, match="NaN/inf logits .*, or a penalty pushed a logit past float range"):
        generate(model, ids, mask, max_new_tokens=3, do_sample=do_sample, repetition_penalty=1e-45)
    from minigpt.explain import explain  # --explain showed tables of nan and "drew" a token

    with pytest.raises(FloatingPointError, match="NaN/inf logits after the penalties: a penalty pushed"):
        explain(model, ByteTokenizer(), "hi there", steps=2, repetition_penalty=1e-45, out=io.StringIO())


@torch.no_grad()
def test_compiled_decode_step_same_tokens_no_recompiles(pair):
    """compile=True: tokens identical to eager, and one graph serves every step and every prompt
    length in the same cache bucket (error_on_recompile turns a recompile into a failure)."""
    import torch._dynamo

    model, _ = pair
    torch._dynamo.reset()
    ids, mask = left_padded(PROMPTS)
    eager = generate(model, ids, mask, max_new_tokens=12, eos_token_id=[])
    compiled = generate(model, ids, mask, max_new_tokens=12, eos_token_id=[], compile=True)
    assert torch.equal(eager, compiled)  # fp32: this model's top-2 margins (> 1e-3) dwarf any rounding
    longer, longer_mask = left_padded([p + [9, 10] for p in PROMPTS])  # 9 + 12 tokens: still the 64 bucket
    with torch._dynamo.config.patch(error_on_recompile=True):
        again = generate(model, longer, longer_mask, max_new_tokens=12, eos_token_id=[], compile=True)
        # The n-gram ban runs in the loop, outside the compiled step: the same graph serves it.
        banned = generate(model, ids, mask, max_new_tokens=12, eos_token_id=[], no_repeat_ngram_size=1, compile=True)
    assert torch.equal(again, generate(model, longer, longer_mask, max_new_tokens=12, eos_token_id=[]))
    assert torch.equal(banned, generate(model, ids, mask, max_new_tokens=12, eos_token_id=[], no_repeat_ngram_size=1))


@torch.no_grad()
def test_a_batch_padded_past_the_context_compiles_one_step_per_64_slots_not_per_max_new_tokens(pair):
    """A compile audit: prompts left-padded past the context (padding="max_length" at n_positions, say)
    had a cache of exactly the slots they need, so each max_new_tokens compiled a new step (15 s each
    on a CPU, the 64-graph limit at last). Their cache is a bucket now: a multiple of 64 slots, the
    137 + 10 - 1 to 137 + 20 - 1 slots here all 192."""
    import torch._dynamo

    model, _ = pair
    torch._dynamo.reset()
    ids, mask = left_padded([[PAD] * (model.config.n_positions + 2) + PROMPTS[0], PROMPTS[1]])  # 137 slots wide
    mask[0, : model.config.n_positions + 2] = 0
    runs = {10: generate(model, ids, mask, max_new_tokens=10, eos_token_id=[], compile=True)}
    with torch._dynamo.config.patch(error_on_recompile=True):
        runs |= {n: generate(model, ids, mask, max_new_tokens=n, eos_token_id=[], compile=True) for n in (11, 20)}
    for n, compiled in runs.items():
        assert torch.equal(compiled, generate(model, ids, mask, max_new_tokens=n, eos_token_id=[]))


@torch.no_grad()
def test_compiled_loop_runs_the_penalties_as_one_compiled_function(pair, monkeypatch):
    """compile=True also compiles the penalties (a dozen elementwise ops, eagerly a kernel launch
    each per step): the eager loop's tokens, sampled, with a per-row tensor and numbers among the
    values; new values reuse the graph (numbers go in as tensors, never baked into it)."""
    import importlib

    import torch._dynamo

    model, _ = pair
    torch._dynamo.reset()
    ids, mask = left_padded(PROMPTS)
    run = dict(max_new_tokens=12, eos_token_id=[], do_sample=True, seed=3, top_k=20)
    penalties = dict(repetition_penalty=torch.tensor([1.0, 1.5, 3.0]), presence_penalty=0.8, frequency_penalty=0.4)
    other = dict(repetition_penalty=1.2, presence_penalty=torch.tensor([0.0, 2.0, 0.5]), frequency_penalty=0.0)
    eager, eager_other = (generate(model, ids, mask, **run, **p) for p in (penalties, other))
    assert not torch.equal(eager, generate(model, ids, mask, **run))  # penalties strong enough to change the draws
    # The loop's eager `penalize` is not called when compiled (the compiled one, made first, wraps the original).
    penalties_module = importlib.import_module("minigpt.penalties")
    penalties_module.compiled_penalize()
    monkeypatch.setattr(penalties_module, "penalize", None)
    assert torch.equal(generate(model, ids, mask, **run, **penalties, compile=True), eager)
    with torch._dynamo.config.patch(error_on_recompile=True):
        assert torch.equal(generate(model, ids, mask, **run, **other, compile=True), eager_other)


@torch.no_grad()
@pytest.mark.skipif(torch.__version__ < "2.13", reason="on a CPU, torch 2.12's compiled bf16 step measured 7.6 roundings "
                    "from eager's here (4 allowed), and older torch refuses to compile it")
def test_compiled_decode_step_in_bf16_rounds_like_eager(pair):
    """bf16: the compiled step's logits within a few bf16 roundings of eager's, and the same tokens
    but at near-ties (assert_compiled_matches_eager_in_bf16 says why not always)."""
    import torch._dynamo

    model = copy.deepcopy(pair[0]).to(torch.bfloat16)
    torch._dynamo.reset()
    ids, mask = left_padded(PROMPTS)
    eager = generate(model, ids, mask, max_new_tokens=24, eos_token_id=[])
    compiled = generate(model, ids, mask, max_new_tokens=24, eos_token_id=[], compile=True)
    assert_compiled_matches_eager_in_bf16(model, ids, mask, eager, compiled)


@torch.no_grad()
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_compiled_half_precision_step_on_a_cpu_before_torch_2_12_is_refused_clearly(pair, monkeypatch, dtype):
    """Torch 2.7 to 2.11 fail to compile the bf16 step on a CPU, deep in Inductor ("CppVecOverrides.to_dtype()
    got an unexpected keyword argument 'use_compute_types'"); generate says what to do instead, before any
    work, and the eager step still runs."""
    from torch.torch_version import TorchVersion

    model = copy.deepcopy(pair[0]).to(dtype)
    ids, mask = left_padded(PROMPTS)
    monkeypatch.setattr(torch, "__version__", TorchVersion("2.11.0"))
    with pytest.raises(ValueError, match=r"compile=True \(--compile\) with a torch\.(bfloat16|float16) model on a CPU needs "
                                           r"torch >= 2\.12 \(this is 2\.11\.0.*compile=False.*float32"):
        generate(model, ids, mask, max_new_tokens=2, compile=True)
    assert generate(model, ids, mask, max_new_tokens=2).shape == (len(PROMPTS), ids.size(1) + 2)  # eager runs


@torch.no_grad()
def test_compiled_decode_step_past_dynamo_recompile_limit(pair, monkeypatch):
    """Each (batch size, cache bucket) compiles its own graph, and dynamo's recompile limit (8 by
    default) counts them all per process: with fullgraph=True the 9th batch size was an error.
    The loop's first step now runs under minigpt's own limit; past that, the error says what to do.
    Here dynamo's limit is 1, so a second batch size would have hit it."""
    import torch._dynamo

    from minigpt import prefill_decode

    model, _ = pair
    torch._dynamo.reset()
    monkeypatch.setattr(prefill_decode, "RECOMPILE_LIMIT", 2)
    ids, mask = left_padded(PROMPTS)  # batch 3
    # dynamo's own patch, not monkeypatch: pytest ≥ 9.2 undoes a setattr on an object that serves the
    # attribute from elsewhere (dynamo's config module) by deleting it, and dynamo's config then
    # says "recompile_limit does not exist" to every later compile in the run.
    with torch._dynamo.config.patch(recompile_limit=1):
        for rows in (ids, ids[:1]):  # two batch sizes: two graphs, the second past dynamo's limit
            compiled = generate(model, rows, max_new_tokens=3, eos_token_id=[], compile=True)
            assert torch.equal(compiled, generate(model, rows, max_new_tokens=3, eos_token_id=[]))
        with pytest.raises(RuntimeError, match=r"already holds 2 compiled decode steps.*torch._dynamo.reset\(\)"):
            generate(model, ids[:2], max_new_tokens=3, eos_token_id=[], compile=True)
    torch._dynamo.reset()


def sliding_reference(model: GPT, prompt: list[int], max_new_tokens: int, keep: int, eos: int) -> list[int]:
    """Greedy decoding past the context, written plainly: no cache, the whole context through the
    model at every step; once the context outgrows n_positions it restarts from its last `keep`
    tokens (keep = n_positions: nanoGPT's `idx[:, -block_size:]` crop)."""
    seq, start = list(prompt), 0
    for _ in range(max_new_tokens):
        if len(seq) - start > model.config.n_positions:
            start = len(seq) - keep
        logits, _ = model(torch.tensor([seq[start:]]))
        seq.append(int(logits[0, -1].argmax()))
        if seq[-1] == eos:
            break
    return seq


@torch.no_grad()
@pytest.mark.parametrize("keep", [16, 11, 1])
def test_slide_goes_past_the_context_as_a_plain_crop_does(keep):
    """slide=keep: max_new_tokens past n_positions, each row's tokens those of `sliding_reference`
    run alone, in a left-padded batch whose rows fill the context at different steps (a row with
    room keeps all its context at the batch's slides, as it would alone), with one row ending at
    an EOS on the way (its pads fed on)."""
    model = GPT(tiny_config(n_positions=16)).eval()
    prompts = [[5, 9, 200], list(range(40, 56)), [7]]  # the second fills the context: it slides at once
    ids, mask = left_padded(prompts)
    eos = int(generate(model, ids, mask, max_new_tokens=26, slide=keep, eos_token_id=[])[2, -1])  # row 2's 26th token
    out = generate(model, ids, mask, max_new_tokens=40, slide=keep, eos_token_id=eos, pad_token_id=0)
    T = ids.size(1)
    for row, prompt in enumerate(prompts):
        expected = sliding_reference(model, prompt, 40, keep, eos)[len(prompt):]
        assert out[row, T:T + len(expected)].tolist() == expected, f"row {row}"
        assert (out[row, T + len(expected):] == 0).all()
    assert len(sliding_reference(model, prompts[2], 40, keep, eos)) < len(prompts[2]) + 40  # the EOS row ended early
    # The same tokens with the compiled step, which keeps its buffers across slides.
    if keep == 11:
        torch._dynamo.reset()
        assert torch.equal(generate(model, ids, mask, max_new_tokens=40, slide=keep, eos_token_id=eos, pad_token_id=0,
                                    compile=True), out)


@torch.no_grad()
@pytest.mark.parametrize("T", [60, 70])
def test_a_row_with_pads_inside_it_slides_as_it_would_alone(T):
    """A review: at a slide, a row with room was prefilled again from its last context + 1 columns
    as if they were all tokens. With a pad inside the row (a mask with an inner zero, or a pad id
    inside a prompt whose mask is inferred) the pad was read as a token and the row's first token
    dropped: from the slide on, its tokens were not its own. Each row's tokens are now counted
    from its end. Row 1 needs no slide alone; in the batch, row 0 fills the context first. T = 70:
    the batch's pads also push it past n_positions = 64."""
    model, hf = sharpened_pair(tiny_config(n_positions=64))
    g = torch.Generator().manual_seed(1)
    ids, mask = torch.full((2, T), PAD), torch.zeros(2, T, dtype=torch.long)
    for row, n in enumerate((60, 30)):
        ids[row, T - n:], mask[row, T - n:] = torch.randint(2, 300, (n,), generator=g), 1
    ids[1, T - 20], mask[1, T - 20] = PAD, 0  # a pad inside row 1
    both = generate(model, ids, mask, max_new_tokens=20, slide=8, eos_token_id=[], pad_token_id=PAD)
    alone = generate(model, ids[1:], mask[1:], max_new_tokens=20, eos_token_id=[], pad_token_id=PAD)
    theirs = hf.generate(ids[1:], attention_mask=mask[1:], max_new_tokens=20, do_sample=False, eos_token_id=None,
                         pad_token_id=PAD)
    assert both[1, T:].tolist() == alone[0, T:].tolist() == theirs[0, T:].tolist()


@torch.no_grad()
@pytest.mark.parametrize("keep", [24, 28, 32])  # row 0 (30 + 14 tokens) slides twice at keep >= 22
def test_a_row_with_a_pad_inside_it_keeps_its_own_tokens_slide_after_slide(keep):
    """A second review: the first mend counted a row's tokens in the sequence's columns, which a
    slide's packed prefill no longer lines up with the cache's slots: from the second slide on, the
    pad was read again and the first token lost. A slide now reads the ids the cache's slots were
    fed (DecodeState.slot_ids). A row whose pad is inside it slides as the same row without it, as
    `sliding_reference` (no cache) reads it, alone and beside a row that slides more often."""
    model = GPT(tiny_config(n_positions=32)).eval()
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(2, 300, (2, 30), generator=g)
    mask = torch.ones(2, 30, dtype=torch.long)
    mask[1, :18] = 0  # row 1: 12 columns, ...
    ids[1, 27], mask[1, 27] = PAD, 0  # ... a pad inside them
    for rows in ([0, 1], [1]):  # beside row 0 (30 tokens: its slides come first), and alone
        out = generate(model, ids[rows], mask[rows], max_new_tokens=14, slide=keep, eos_token_id=[], pad_token_id=PAD)
        for i, row in enumerate(rows):
            real = ids[row][mask[row].bool()].tolist()
            assert out[i, 30:].tolist() == sliding_reference(model, real, 14, keep, eos=-1)[len(real):], (rows, row)


def test_slide_is_checked_and_the_prompt_must_still_fit():
    model = GPT(tiny_config(n_positions=16)).eval()
    prompt = torch.tensor([[1, 2, 3]])
    for bad in (17, -1):
        with pytest.raises(ValueError, match=r"slide must be 0 \(off\) or in \[1, n_positions=16\], got "):
            generate(model, prompt, max_new_tokens=20, slide=bad)
    with pytest.raises(TypeError, match="slide must be an integer"):
        generate(model, prompt, max_new_tokens=20, slide=2.5)
    with pytest.raises(ValueError, match="slide is not supported with num_beams > 1"):
        generate(model, prompt, max_new_tokens=20, slide=8, num_beams=2)
    with pytest.raises(ValueError, match="prompt length 17 exceeds the model's context n_positions=16: even when the "
                                         "context slides the prompt must fit"):
        generate(model, torch.ones(1, 17, dtype=torch.long), max_new_tokens=20, slide=8)
    # A batch padded wider than the context fits as its rows do, sliding or not.
    ids, mask = left_padded([[1] * 16, [2]])
    wide = torch.cat([torch.zeros(2, 4, dtype=torch.long), ids], 1), torch.cat([torch.zeros(2, 4, dtype=torch.long), mask], 1)
    with torch.no_grad():
        assert torch.equal(generate(model, *wide, max_new_tokens=30, slide=8, eos_token_id=[])[:, 4:],
                           generate(model, ids, mask, max_new_tokens=30, slide=8, eos_token_id=[]))


def test_a_sliding_max_new_tokens_too_big_for_its_ids_is_a_memory_error_naming_it(monkeypatch):
    """A server audit: with slide, max_new_tokens=10**12 failed before the first token with the
    allocator's "you tried to allocate 8000000000000 bytes" (RuntimeError), and past 2**63 bytes
    with torch's overflow: the (B, T + max_new_tokens) ids the result needs are allocated up front.
    Both are now a MemoryError that says the size and what shrinks it, as the KV cache's is."""
    model = GPT(tiny_config(n_positions=16)).eval()
    prompt = torch.tensor([[1, 2, 3]] * 2)
    real_empty = torch.empty

    def refusing(shape, *args, **kwargs):  # the CPU allocator's refusal, without risking a real 8 TB malloc
        if isinstance(shape, tuple) and shape[0] * shape[1] > 10**9:
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
                               "memory: you tried to allocate 16000000000048 bytes")
        return real_empty(shape, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(torch, "empty", refusing)
        with pytest.raises(MemoryError, match=r"^the generated ids do not fit: 2 rows × \(3 prompt \+ "
                                              r"max_new_tokens=1,000,000,000,000\) tokens × 8 bytes is "
                                              r"16,000,000,000,048 bytes \(14,901\.2 GiB\), which cpu could not "
                                              r"allocate; the result holds every token, so generate fewer tokens "
                                              r"\(max_new_tokens\) or fewer rows at once \(batch size, "
                                              r"num_return_sequences\)$"):
            generate(model, prompt, max_new_tokens=10**12, slide=8)
    # Past torch's int64 byte count (its own error an overflow), with the n-gram ban's 1-byte mask.
    with pytest.raises(MemoryError, match=r"^the generated ids do not fit: 1 row × \(3 prompt \+ "
                                          r"max_new_tokens=4,611,686,018,427,387,904\) tokens × 9 bytes is "):
        next(stream(model, prompt[:1], max_new_tokens=2**62, slide=8, no_repeat_ngram_size=2))
    with monkeypatch.context() as m:  # any other failure stays what it is
        m.setattr(torch, "empty", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("another failure")))
        with pytest.raises(RuntimeError, match="another failure"):
            sequence_buffers(prompt, torch.ones_like(prompt), 5, 0, 0)
    # The buffers allocated at full width hold what the torch.cat did: the loop's tokens, as before.
    with torch.no_grad():
        expected = [sliding_reference(model, [1, 2, 3], 30, 8, -1)] * 2
        assert generate(model, prompt, max_new_tokens=30, slide=8, eos_token_id=[]).tolist() == expected


def test_a_huge_num_return_sequences_is_refused_by_the_kv_cache_before_any_copy_of_the_prompts(monkeypatch):
    """Bug (a security audit): `minigpt generate -n 1000000000` died in one_row_per_sample's
    repeat_interleave (16 GB for the ids, as much for the mask: the allocator's RuntimeError)
    before the KV cache's check that says what does not fit. One prompt's n rows are now views of
    it, so the KV cache refuses first; several prompts' rows are refused naming n before a copy."""
    from minigpt.generation import one_row_per_sample

    model = GPT(tiny_config()).eval()
    prompt, n = torch.tensor([[1, 2, 3]]), 10**12

    def refusing(real):  # the CPU allocator's refusal past 10**9 elements, without risking a real huge malloc
        def allocate(shape, *args, **kwargs):
            if isinstance(shape, tuple) and math.prod(shape) > 10**9:
                raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 10**15 bytes")
            return real(shape, *args, **kwargs)
        return allocate

    monkeypatch.setattr(torch, "zeros", refusing(torch.zeros))  # the KV cache's
    monkeypatch.setattr(torch, "empty", refusing(torch.empty))  # empty_or_none's
    ids, mask = one_row_per_sample(prompt, torch.ones_like(prompt), n)
    assert ids.shape == mask.shape == (n, 3) and ids.untyped_storage().nbytes() == 3 * 8  # the prompt's memory
    with pytest.raises(MemoryError, match=r"^the KV cache does not fit: 1,000,000,000,000 rows × "):
        generate(model, prompt, max_new_tokens=2, do_sample=True, num_return_sequences=n)
    with pytest.raises(MemoryError, match=r"^the rows do not fit: 2 prompts × num_return_sequences=1,000,000,000,000 "
                                          r"× 3 tokens, ids and mask, are 96,000,000,000,000 bytes \(89,407\.0 GiB\), "
                                          r"which cpu could not allocate; generate fewer rows at once"):
        generate(model, prompt.repeat(2, 1), max_new_tokens=2, do_sample=True, num_return_sequences=n)
    # Several prompts' rows, copied, are each prompt n times over, in order.
    ids, mask = one_row_per_sample(torch.tensor([[1, 2], [3, 4]]), torch.tensor([[0, 1], [1, 1]]), 2)
    assert ids.tolist() == [[1, 2], [1, 2], [3, 4], [3, 4]] and mask.tolist() == [[0, 1], [0, 1], [1, 1], [1, 1]]


def test_a_prefill_out_of_memory_says_what_did_not_fit_and_what_shrinks_it(tiny_checkpoint, monkeypatch, capsys):
    """An audit: generate(ids of 16 × 1024, max_new_tokens=1) on a model whose KV cache fit but whose
    prefill did not died with the CPU allocator's bare RuntimeError (a GPU's: OutOfMemoryError), and
    `minigpt generate` printed its whole traceback (exit 1), where a cache too big is one line. The
    prefill's failure is now a MemoryError naming rows × prompt tokens and what shrinks it."""
    import minigpt.prefill_decode as prefill_decode
    from minigpt.generate_cli import main

    allocator = RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: "
                             "you tried to allocate 150994944 bytes. Error code 12 (Cannot allocate memory)")

    def failing(error):  # the prefill's activations refused (a real one would need GBs and risk the OOM killer)
        def prefill(*args):
            raise error
        return prefill

    model = GPT(tiny_config()).eval()
    monkeypatch.setattr(prefill_decode, "prefill", failing(allocator))
    with pytest.raises(MemoryError, match=r"^the prefill does not fit: 2 rows × 3 prompt tokens, read at once, ran out of "
                                          r"memory on cpu, beside the KV cache \(0 MiB\) it fills, .*generate fewer rows at "
                                          r"once \(batch size, num_return_sequences, num_beams; -n on the command line\) or "
                                          r"from a shorter prompt, or in bfloat16$") as caught:
        generate(model, torch.tensor([[1, 2, 3]] * 2), max_new_tokens=1)
    assert caught.value.__cause__ is allocator  # chained: the allocator's own words stay in the traceback
    monkeypatch.setattr(prefill_decode, "prefill", failing(RuntimeError("another failure")))
    with pytest.raises(RuntimeError, match="^another failure$"):  # any other error stays what it is
        generate(model, torch.tensor([[1, 2, 3]]), max_new_tokens=1)
    monkeypatch.setattr(prefill_decode, "prefill", failing(allocator))
    capsys.readouterr()
    assert main(["--model", str(tiny_checkpoint), "--prompt", "To be", "-n", "3", "--seed", "0", "--max-new-tokens", "4"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error: the prefill does not fit: 3 rows × " in err and "Traceback" not in err


def test_the_result_is_the_loops_buffer(monkeypatch):
    """A review: the MemoryError checked the ids' buffer once, but the result was a torch.cat of the
    prompt and the loop's tokens (a second buffer at the end, after all the work). The result is
    now a view of the buffer (a smaller copy only when rows ended before half of it). (A slide reads
    the ids of the cache's slots, which the state keeps: no copy of the sequence so far.)"""
    import minigpt.generation

    model = GPT(tiny_config(n_positions=16)).eval()
    prompt = torch.tensor([[1, 2, 3]] * 2)
    made = []
    real_buffers = minigpt.generation.sequence_buffers
    monkeypatch.setattr(minigpt.generation, "sequence_buffers", lambda *a: made.append(real_buffers(*a)) or made[-1])
    out = generate(model, prompt, max_new_tokens=40, slide=8, eos_token_id=[], pad_token_id=10**6 % 300)
    assert out.shape == (2, 43) and out.data_ptr() == made[-1][0].data_ptr()  # the buffer itself: no second copy
    for step in (1, 30):  # rows that end early, before and after half of max_new_tokens (a third review: a view
        eos = int(out[0, 3 + step])  # of the buffer, not contiguous, and holding it whole, was returned past half)
        early = generate(model, prompt[:1], max_new_tokens=40, slide=8, eos_token_id=eos)
        assert early.size(1) <= 3 + step + 1 and early.is_contiguous()
        assert early.untyped_storage().nbytes() == early.numel() * 8  # a copy of the kept columns, not the buffer


def test_a_stop_string_of_u_fffd_waits_for_a_whole_character_with_a_transformers_tokenizer():
    """A review: StopStrings reads another library's tokenizer through its text, where a character
    half spelled is U+FFFD: `stop="\\ufffd"` ended a row at "caf" + the first byte of "é", where
    minigpt's own tokenizer (raw bytes) went on to "café!". The half-spelled end is left out until
    it is whole, as the text functions leave it out."""
    from transformers import GPT2TokenizerFast

    from minigpt.tokenizer import GPT2_DIR

    hf = GPT2TokenizerFast.from_pretrained(GPT2_DIR)
    ids = hf.encode("caf") + [hf.convert_tokens_to_ids("Ã"), hf.convert_tokens_to_ids("©")] + hf.encode("!")
    assert hf.decode(ids) == "café!" and hf.decode(ids[:-2]).endswith("\ufffd")
    stops = StopStrings(hf, ["\ufffd"], batch_size=1)
    assert [stops.add(0, token) for token in ids] == [None] * len(ids)
    stops = StopStrings(hf, ["é!"], batch_size=1)
    assert [stops.add(0, token) for token in ids][-1] == len(ids) - 3  # "caf" kept: é's first byte starts the stop
    # A third review: the cut counted the half-spelled "é" as 3 bytes (U+FFFD's), so a stop after it
    # kept "caf" alone, and "é", wholly before the stop, was lost from the ids.
    ids = hf.encode("caf") + [hf.convert_tokens_to_ids("Ã"), hf.convert_tokens_to_ids("©")] + hf.encode(" stop")
    stops = StopStrings(hf, [" stop"], batch_size=1)
    assert [stops.add(0, token) for token in ids][-1] == len(ids) - len(hf.encode(" stop"))  # "café" kept
    # A stream audit: invalid bytes (a U+FFFD that stays) before a stop string begun mid-character were
    # stripped with the half character's U+FFFD, so the token holding the stop's first bytes was kept too.
    own = Tokenizer.from_pretrained(GPT2_DIR)
    byte_id = {raw: i for i in range(256) if len(raw := own.decode_bytes([i])) == 1}  # GPT-2's 256 one-byte tokens
    ids = [byte_id[b"\xe9"], byte_id[b"\xad"], *hf.encode("\U0001F62F")]  # e9 ad (invalid), then 😯 (f0 9f 98 | af)
    assert len(ids) == 4 and hf.decode(ids) == "\ufffd\U0001F62F"
    stops = StopStrings(hf, ["\U0001F62F"], batch_size=1)
    assert [stops.add(0, token) for token in ids][-1] == 2  # the two invalid bytes, wholly before the stop string


TRITON_SNIPPET = """
import torch
from minigpt import GPT, GPTConfig
from minigpt.generation import generate
torch.manual_seed(0)
model = GPT(GPTConfig.gpt2("gpt2-tiny", vocab_size=300, initializer_range=0.4)).eval()
ids = torch.randint(0, 300, (2, 5))
kw = dict(max_new_tokens=3, do_sample=True, temperature=torch.tensor([0.0, 0.8]), top_k=20, top_p=0.9,
          seed=3, sampler="triton", eos_token_id=[])
with torch.no_grad():
    a, b = generate(model, ids, **kw), generate(model, ids, **kw)
    greedy = generate(model, ids[:1], max_new_tokens=3, eos_token_id=[])
assert torch.equal(a, b), "same seed, same tokens"
assert torch.equal(a[0], greedy[0]), "the temperature-0 row is greedy"
print("ok", a.tolist())
"""


def test_generate_with_triton_sampler_in_interpreter():
    """sampler="triton" drives the fused kernel (minigpt/kernels/sampling.py) through generate.
    Triton's CPU interpreter must be on before triton is imported, hence a fresh process."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run([sys.executable, "-c", TRITON_SNIPPET], env=env, capture_output=True, text=True, timeout=300)
    print(done.stdout, done.stderr[-2000:])
    assert done.returncode == 0 and done.stdout.startswith("ok")


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A random tiny model beside a tokenizer trained on a few lines: what `minigpt generate` loads."""
    from minigpt import Tokenizer

    path = tmp_path_factory.mktemp("ckpt")
    tok = Tokenizer.train("To be, or not to be, that is the question.\n" * 20, vocab_size=280,
                          special_tokens=["<|endoftext|>"])
    tok.save_pretrained(path)
    torch.manual_seed(0)
    eot = tok.eos_token_id
    GPT(tiny_config(vocab_size=tok.vocab_size, bos_token_id=eot, eos_token_id=eot)).save_pretrained(path)
    return path


@torch.no_grad()
@pytest.mark.parametrize("several", [False, True], ids=["one id", "a list"])
def test_explain_text_ends_silently_at_eos_as_generate_does(several):
    """The text --explain prints after its tables is the text generate prints: EOS ends it, unshown.
    A config's list of EOS ids ends it at any of them (it compared the token with the list: never)."""
    from minigpt.explain import explain

    model, _ = sharpened_pair(tiny_config())
    ids = torch.tensor([PROMPTS[0]])
    free = generate(model, ids, max_new_tokens=3, eos_token_id=[])[0, ids.size(1):].tolist()
    # greedy makes EOS at step 2 (in a list, as its second id: one greedy never makes first)
    model.config.eos_token_id = [next(t for t in range(300) if t not in free), free[2]] if several else free[2]
    shown = explain(model, ByteTokenizer(), PROMPTS[0], steps=3, temperature=0, out=io.StringIO())
    assert shown == ByteTokenizer().decode(free[:2])


@torch.no_grad()
def test_explain_shows_each_sampling_stage_and_draws_what_generate_draws():
    """README: --explain prints each stage's probabilities, and the same seed draws the same tokens
    as generate(sampler="torch"). Every printed number equals softmax of minigpt.penalties' and
    minigpt.sampling's stages, recomputed here from a full forward pass in the documented order
    (penalize → temperature → top-k → top-p → min-p; the last is filter_logits of the penalized
    logits), and the token drawn at each step is generate's, with penalties and every filter on."""
    import re

    from minigpt.explain import explain
    from minigpt.penalties import penalize, token_counts
    from minigpt.sampling import apply_min_p, apply_temperature, apply_top_k, apply_top_p, filter_logits

    torch.manual_seed(0)
    model = GPT(tiny_config()).eval()  # unsharpened: every filter keeps several tokens
    params = dict(temperature=0.8, top_k=40, top_p=0.9, min_p=0.05)
    penalties = dict(repetition_penalty=1.3, presence_penalty=0.5, frequency_penalty=0.3)
    prompt, steps, seed = PROMPTS[0], 5, 3
    printed = io.StringIO()
    text = explain(model, DigitsTokenizer(), prompt, steps=steps, seed=seed, out=printed, **params, **penalties)
    ids = torch.tensor([prompt])
    drawn = generate(model, ids, max_new_tokens=steps, do_sample=True, seed=seed, sampler="torch",
                     eos_token_id=[], **params, **penalties)[0, ids.size(1):].tolist()
    assert text == DigitsTokenizer().decode(drawn)  # the returned text: the same tokens in the same order
    greedy = generate(model, ids, max_new_tokens=steps, eos_token_id=[])[0, ids.size(1):].tolist()
    assert drawn != greedy  # the seed decided something: a draw, not an argmax

    tables = printed.getvalue().split("\nstep ")[1:]
    assert len(tables) == steps
    worst, kept_counts = 0.0, []
    for step, table in enumerate(tables):
        head, header, *rows = table.strip("\n").splitlines()
        kept, token = re.fullmatch(rf"{step}: (\d+) of 300 tokens kept; drew '(\d{{3}})'", head).groups()
        assert int(token) == drawn[step]
        assert header.split() == ["token", "raw", "penalties", "temperature", "0.8", "top-k", "40", "top-p", "0.9",
                                  "min-p", "0.05"]
        # The stages, recomputed from scratch: a full forward of prompt + tokens drawn so far.
        seq = torch.tensor([prompt + drawn[:step]])
        raw = model(seq)[0][:, -1].float()  # (1, V)
        seen, generated = token_counts(seq, 300), token_counts(seq[:, len(prompt):], 300)
        stages = [raw, penalize(raw, seen, generated, **penalties)]
        stages.append(apply_temperature(stages[-1], params["temperature"]))
        stages.append(apply_top_k(stages[-1], params["top_k"]))
        stages.append(apply_top_p(stages[-1], params["top_p"]))
        stages.append(apply_min_p(stages[-1], params["min_p"]))
        assert torch.equal(stages[-1], filter_logits(stages[1], **params))
        probs = torch.stack([s.softmax(-1)[0] for s in stages], 1)  # (V, 6)
        assert int(kept) == int(torch.isfinite(stages[-1]).sum())
        kept_counts.append(int(kept))
        marked = []
        for row in rows:
            mark, cand, *numbers = re.fullmatch(r"([→ ]) '(\d{3})'" + r"\s+([\d.]+|-)" * 6, row).groups()
            marked += [int(cand)] * (mark == "→")
            # "-": dropped by that stage (its logit -inf), which no kept token is however unlikely.
            assert all((n == "-") == bool(stages[i][0, int(cand)] == float("-inf")) for i, n in enumerate(numbers))
            shown = torch.tensor([0.0 if n == "-" else float(n) for n in numbers])
            worst = max(worst, (shown - probs[int(cand)]).abs().max().item())
        assert marked == [drawn[step]]
        # The rows: the top candidates before any stage and after the last (those the filters kept:
        # topk of fewer than 5 kept tokens added arbitrary ones of probability 0), and the token drawn.
        top5 = set(probs[:, 0].topk(5).indices.tolist()) | {i for i in probs[:, -1].topk(5).indices.tolist()
                                                            if probs[i, -1] > 0}
        assert {int(re.search(r"'(\d{3})'", r)[1]) for r in rows} == top5 | {drawn[step]}
    print(f"tokens {drawn}, kept per step {kept_counts}, max |printed - recomputed| {worst:.1e}")
    assert worst < 1e-4  # the table rounds to 4 decimals (5e-5), plus the KV cache's float noise
    assert max(kept_counts) > 1  # some step had a real choice to make


def test_cli_greedy_stream_equals_plain_and_explain(tiny_checkpoint, capsys):
    from minigpt.generate_cli import main

    base = ["--model", str(tiny_checkpoint), "--prompt", "To be", "--max-new-tokens", "8", "--temperature", "0"]
    assert main(base) == 0
    plain = capsys.readouterr().out
    assert main(base + ["--stream", "--stats"]) == 0
    streamed = capsys.readouterr()
    assert streamed.out == plain and plain.startswith("To be")
    assert "TTFT" in streamed.err and "tok/s" in streamed.err
    assert main(base + ["--explain", "--max-new-tokens", "2"]) == 0
    shown = capsys.readouterr().out
    assert "step 0: greedy (temperature 0)" in shown and "penalties" in shown and "→" in shown
    assert "top-k" not in shown  # greedy draws nothing: no filter stage to show


def test_cli_takes_a_checkpoint_whose_config_names_gpt2s_eos(tiny_checkpoint, tmp_path, capsys):
    """Older minigpt wrote GPT-2's <|endoftext|> (50256) into a smaller model's config.json. Its own
    tokenizer still fits; EOS and the pad of a finished row are the tokenizer's, with a warning."""
    from minigpt.generate_cli import main

    old = tmp_path / "old"
    shutil.copytree(tiny_checkpoint, old)
    config = json.loads((old / "config.json").read_text())
    (old / "config.json").write_text(json.dumps({**config, "eos_token_id": 50256, "bos_token_id": 50256}))
    assert main(["--model", str(old), "--prompt", "To be", "--max-new-tokens", "20", "-n", "2", "--seed", "0",
                 "--stop", "o"]) == 0  # a row ends at its stop string and is padded: with 50256, an index error
    assert "names eos_token_id = 50256, which this 280-token model does not have; using the tokenizer's (279)" \
        in capsys.readouterr().err
    # A list with one stale id names that one: the model does have the other.
    (old / "config.json").write_text(json.dumps({**config, "eos_token_id": [279, 50256], "bos_token_id": 50256}))
    assert main(["--model", str(old), "--prompt", "To be", "--max-new-tokens", "3", "--seed", "0"]) == 0
    assert "names eos_token_id = [279, 50256], whose 50256 this 280-token model does not have" in capsys.readouterr().err
    # null (no EOS): the tokenizer's too, and an empty prompt starts from it.
    (old / "config.json").write_text(json.dumps({**config, "eos_token_id": None, "bos_token_id": None}))
    assert main(["--model", str(old), "--prompt", "", "--max-new-tokens", "3", "--seed", "0"]) == 0
    assert "names no EOS (eos_token_id null); using the tokenizer's (279)" in capsys.readouterr().err


@pytest.mark.parametrize("beams", [[], ["--num-beams", "2"]], ids=["sampled", "beams"])
def test_cli_takes_a_config_listing_several_eos_ids_without_a_stale_warning(tiny_checkpoint, tmp_path, capsys, beams):
    """An audit: a list of EOS ids (as some HF configs hold) was stale whole, so the CLI replaced it
    by the tokenizer's <|endoftext|>, dropping the others, with a warning that the model had no such
    token. A list of ids the model has is now its EOS ids: no warning, and a text ends at any."""
    from minigpt.generate_cli import main

    listed = tmp_path / "listed"
    shutil.copytree(tiny_checkpoint, listed)
    config = json.loads((listed / "config.json").read_text())
    (listed / "config.json").write_text(json.dumps({**config, "eos_token_id": [279, 10]}))
    sampled = [] if beams else ["--seed", "0"]
    assert main(["--model", str(listed), "--prompt", "To be", "--max-new-tokens", "8", *sampled, *beams]) == 0
    out = capsys.readouterr()
    assert "warning" not in out.err and out.out.startswith("To be")


def test_cli_stop_takes_backslash_n_as_a_newline():
    """A shell passes `--stop "\\n"` as a backslash and an n; the newline is what was meant."""
    from minigpt.generate_cli import build_parser, unescape

    assert unescape(r"\r\n\n|\t|\\n|\q|é") == "\r\n\n|\t|\\n|\\q|é"  # \\ is one backslash; others stay
    assert build_parser().parse_args(["--stop", r"\n\n", "--stop", "x"]).stop == ["\n\n", "x"]


def test_cli_prints_n_samples_or_the_best_beams(tiny_checkpoint, capsys):
    from minigpt.generate_cli import main

    base = ["--model", str(tiny_checkpoint), "--prompt", "To be", "--max-new-tokens", "6"]
    assert main(base + ["-n", "3", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert [line for line in out.splitlines() if line.startswith("---")] == [f"--- sample {i} of 3 ---" for i in (1, 2, 3)]
    assert out.count("To be") == 3
    assert main(base + ["--num-beams", "3", "--num-return-sequences", "2"]) == 0
    assert re.search(r"^--- beam 2 of 2 \(score -?\d+\.\d{4}\) ---$", capsys.readouterr().out, re.M)
    assert main(base + ["-n", "2", "--stream"]) == 2
    assert "with --num-return-sequences > 1 drop --stream" in capsys.readouterr().err
    assert main(base + ["-n", "2", "--explain"]) == 2
    assert "it does not take --num-return-sequences" in capsys.readouterr().err
    for flags, message in ((["-n", "0"], "--num-return-sequences must be ≥ 1, got 0"),
                           (["--num-beams", "2", "-n", "3"], "--num-return-sequences 3 must be in [1, --num-beams 2]"),
                           (["-n", "2", "--temperature", "0"], "--temperature 0 is greedy: its 2 texts would be one")):
        assert main(base + flags) == 2  # before the model loads
        assert message in capsys.readouterr().err


# The one line `minigpt generate` writes to stderr when it drew the seed itself (group 1: the seed).
DRAWN_SEED_LINE = r"minigpt generate: seed (\d+) \(drawn; add --seed \1 to draw the same output again\)"


def test_cli_shows_the_seed_it_drew_and_that_seed_draws_the_same_output(tiny_checkpoint, capsys):
    """A reproducibility audit: sampling without --seed drew from torch's unseeded RNG and never said
    which seed, so a good sample could not be drawn again. Now the CLI draws a seed, uses it, and
    shows it as one line on stderr (stdout stays the text alone); the same flags with --seed N print
    the same bytes, with nothing on stderr. Greedy and beam search draw nothing, so show no seed."""
    from minigpt.generate_cli import main

    base = ["--model", str(tiny_checkpoint), "--prompt", "To be", "--max-new-tokens", "8"]
    for flags in ([], ["--stream"], ["-n", "2"], ["--explain", "--max-new-tokens", "2"]):
        assert main(base + flags) == 0
        out, err = capsys.readouterr()
        shown = re.fullmatch(DRAWN_SEED_LINE + "\n", err)
        assert shown, (flags, err)
        seed = int(shown.group(1))
        assert 0 <= seed < 2**63  # a value --seed takes
        assert main(base + flags + ["--seed", str(seed)]) == 0
        assert capsys.readouterr() == (out, ""), flags
    for flags in (["--temperature", "0"], ["--num-beams", "2"]):
        assert main(base + flags) == 0
        assert capsys.readouterr().err == "", flags


def test_cli_early_stopping_reaches_beam_search(tiny_checkpoint, capsys, monkeypatch):
    """generate's three early_stopping modes were out of the CLI's reach (it had --length-penalty
    but no --early-stopping); like --length-penalty, the flag needs beams."""
    gen_cli = importlib.import_module("minigpt.generate_cli")  # where main looks up generate_text

    seen, real = [], gen_cli.generate_text
    monkeypatch.setattr(gen_cli, "generate_text", lambda *a, **kw: seen.append(kw["early_stopping"]) or real(*a, **kw))
    base = ["--model", str(tiny_checkpoint), "--prompt", "To be", "--max-new-tokens", "4"]
    for word in ("true", "false", "never"):
        assert gen_cli.main(base + ["--num-beams", "2", "--early-stopping", word]) == 0
    assert seen == [True, False, "never"] and [type(mode) for mode in seen] == [bool, bool, str]
    capsys.readouterr()
    assert gen_cli.main(base + ["--early-stopping", "true"]) == 2
    assert "--early-stopping says when beam search ends: it needs --num-beams > 1" in capsys.readouterr().err
    assert gen_cli.main(base + ["--explain", "--early-stopping", "never"]) == 2
    assert "it does not take --early-stopping" in capsys.readouterr().err


def test_cli_ctrl_c_keeps_the_streamed_text_and_ends_in_one_line(tiny_checkpoint, capsys, monkeypatch):
    """Ctrl-C stops a long --stream: what was printed stays, then one line and exit 130, as
    `minigpt download` does (it was a KeyboardInterrupt traceback)."""
    gen_cli = importlib.import_module("minigpt.generate_cli")  # where main looks up stream_text

    def interrupted(*args, **kwargs):
        yield " first"
        raise KeyboardInterrupt

    monkeypatch.setattr(gen_cli, "stream_text", interrupted)
    # Without --stream too (a runner's audit: the text so far was thrown away, 0 bytes on stdout).
    for streaming in (["--stream"], []):
        try:
            code = gen_cli.main(["--model", str(tiny_checkpoint), "--prompt", "To be", *streaming, "--max-new-tokens", "50"])
        except KeyboardInterrupt:  # caught here, or it would stop the whole test run
            pytest.fail("Ctrl-C left main as a KeyboardInterrupt traceback")
        assert code == 130
        out, err = capsys.readouterr()
        assert out == "To be first" and err == "\nminigpt generate: interrupted\n", streaming


def test_cli_text_that_is_no_utf8_is_refused_or_escaped(tiny_checkpoint, tmp_path, capsys):
    """A runner's audit: a --prompts-file line with a lone surrogate escape ("\\ud800", a string cut
    through an emoji) was generated, then its output line failed to print (exit 2, every later line
    lost) or went out as bytes that are no UTF-8; --prompt's non-UTF-8 argv bytes failed the same
    way, after the work. Now the line is escaped JSON that joins back to its input, and --prompt is
    refused before the model loads."""
    from minigpt.generate_cli import main

    path = tmp_path / "p.jsonl"
    path.write_text('"ab\\ud800cd"\n{"prompt": "x", "id": "\\udc80"}\n"plain \u00e9"\n', encoding="utf-8")
    assert main(["--model", str(tiny_checkpoint), "--prompts-file", str(path), "--max-new-tokens", "3"]) == 0
    lines = capsys.readouterr().out.encode("utf-8").decode("utf-8").splitlines()  # (strict: valid UTF-8)
    records = [json.loads(line) for line in lines]
    assert [{k: v for k, v in r.items() if k != "texts"} for r in records] == \
        [{"prompt": "ab\ud800cd"}, {"prompt": "x", "id": "\udc80"}, {"prompt": "plain \u00e9"}]
    assert "\u00e9" in lines[2] and "\\ud800" in lines[0]  # escaped only where it must be
    bad = b"caf\xe9".decode("utf-8", "surrogateescape")  # what Python makes of such argv bytes
    assert main(["--model", str(tiny_checkpoint), "--prompt", bad]) == 2
    assert "--prompt is not UTF-8 text: byte 0xe9 at offset 3" in capsys.readouterr().err


def test_cli_prompts_file_lines_hold_no_raw_line_separators(tiny_checkpoint, tmp_path, capsys):
    """A shell user's audit: a prompt holding U+2028, U+2029 or U+0085 came back raw in its output
    line (JSON allows them), and str.splitlines() (and JavaScript) read that one record as several
    lines. Now they are escaped; other text stays readable UTF-8."""
    from minigpt.generate_cli import main

    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"prompt": "a\u2028b\u0085c\u2029d \u00e9", "id": 1}) + "\n", encoding="utf-8")
    assert main(["--model", str(tiny_checkpoint), "--prompts-file", str(path), "--max-new-tokens", "3",
                 "--temperature", "0"]) == 0
    out = capsys.readouterr().out
    assert len(out.splitlines()) == 1 and "\\u2028" in out and "\\u0085" in out and "\\u2029" in out and "\u00e9" in out
    assert json.loads(out)["prompt"] == "a\u2028b\u0085c\u2029d \u00e9"


def test_cli_ctrl_c_while_a_prompt_is_read_from_standard_input_ends_in_one_line(tiny_checkpoint, capsys, monkeypatch):
    """`--prompt-file -` waits on standard input; Ctrl-C there fell outside main's Ctrl-C handler,
    a KeyboardInterrupt traceback (a refactor's reader noticed)."""
    gen_cli = importlib.import_module("minigpt.generate_cli")

    def interrupted(path):
        raise KeyboardInterrupt

    monkeypatch.setattr(gen_cli, "read_text_or_stdin", interrupted)
    for flag in ("--prompt-file", "--prompts-file"):
        try:
            code = gen_cli.main(["--model", str(tiny_checkpoint), flag, "-"])
        except KeyboardInterrupt:
            pytest.fail(f"Ctrl-C during {flag} - left main as a KeyboardInterrupt traceback")
        assert code == 130 and capsys.readouterr().err == "\nminigpt generate: interrupted\n"


@torch.no_grad()
def test_a_pad_that_is_no_token_of_the_model_is_never_fed_to_it(pair):
    """The tests' config keeps GPT-2's EOS (50256) in a 300-token model, as old checkpoints did, so
    the default pad is no row of the embedding: finished rows are padded with it in the output,
    but what they feed the model is an id it has."""
    model, _ = pair
    tok = ByteTokenizer()
    kw = dict(max_new_tokens=12, do_sample=True, seed=0, eos_token_id=[], num_return_sequences=2)
    for penalties in ({}, {"repetition_penalty": 1.3, "frequency_penalty": 0.5}):  # the counts skip it too
        texts = generate_text(model, tok, "hi", **kw, **penalties)
        # Two characters row 0 writes (not first) and row 1 never does: row 0 ends early, row 1 runs on.
        pairs = [texts[0][i:i + 2] for i in range(1, len(texts[0]) - 1)]
        stop = next(p for p in pairs if p.isascii() and p.isprintable() and p not in texts[1])
        out = generate(model, torch.tensor([tok.encode("hi")]), stop=stop, tokenizer=tok, **kw, **penalties)
        assert (out == model.config.eos_token_id).any()  # row 0 ended at its stop string and was padded


@pytest.mark.parametrize("config_eos", [50256, "vocab_size"], ids=["gpt2s", "the first id past the vocabulary"])
@torch.no_grad()
def test_text_of_a_row_padded_with_an_eos_the_model_does_not_have_ends_at_its_stop_string(config_eos):
    """With eos_token_id=[], a row cut at its stop string is padded with the config's EOS, which a
    model trained without <|endoftext|> does not have (GPT-2's 50256 in a 260-token vocabulary, or
    exactly vocab_size): the text functions must end the row there, not hand the pad to the
    tokenizer (a ValueError)."""
    from minigpt import Tokenizer

    tok = Tokenizer.train("ab\nab ab\nba abba\n" * 20, vocab_size=270, special_tokens=[], progress=False)
    torch.manual_seed(0)
    eos = tok.vocab_size if config_eos == "vocab_size" else config_eos
    model = GPT(GPTConfig.gpt2("gpt2-tiny", vocab_size=tok.vocab_size, eos_token_id=eos, bos_token_id=eos)).eval()
    assert tok.eos_token_id is None and model.config.eos_token_id >= tok.vocab_size
    kw = dict(max_new_tokens=20, do_sample=True, seed=0, num_return_sequences=3, eos_token_id=[])
    whole = generate_text(model, tok, "ab", **kw)
    stop = next(c for c in whole[0][2:] if c.isprintable() and c.strip())  # row 0 stops early, so pads follow
    cut = generate_text(model, tok, "ab", stop=stop, **kw)
    assert cut == [t[:t.index(stop)] if stop in t else t for t in whole]
    assert len(cut[0]) < len(whole[0])


@torch.no_grad()
def test_min_new_tokens_with_a_config_eos_the_model_does_not_have(pair):
    """That EOS (50256 in a 300-token model) can end no row, and min_new_tokens has nothing to
    mask: sampling and beams run as with eos_token_id=[] (it was an IndexError in index_fill)."""
    model, _ = pair
    ids = torch.tensor([PROMPTS[0]])
    for kw in (dict(do_sample=True, seed=0), dict(num_beams=2)):
        out = generate(model, ids, max_new_tokens=6, min_new_tokens=3, **kw)
        assert torch.equal(out, generate(model, ids, max_new_tokens=6, min_new_tokens=3, eos_token_id=[], **kw))


def test_an_empty_prompt_needs_a_begin_token_the_model_has():
    """A model trained with a tokenizer without <|endoftext|> keeps GPT-2's 50256 as bos_token_id:
    an empty prompt (or an all-pad row) was an "input_ids must be in [0, 300)" about ids never given."""
    model = GPT(GPTConfig(vocab_size=300, n_layer=1, n_head=1, n_embd=16, n_positions=32)).eval()
    for ids, mask in ((torch.zeros(1, 0, dtype=torch.long), None), (torch.tensor([[5, 6], [0, 0]]), torch.tensor([[1, 1], [0, 0]]))):
        with pytest.raises(ValueError, match="an empty prompt starts from bos_token_id=50256, which is no token of this "
                                             "model's 300-token vocabulary"):
            generate(model, ids, mask, max_new_tokens=2)
    model.config.bos_token_id = 299
    assert generate(model, torch.zeros(1, 0, dtype=torch.long), max_new_tokens=2)[0, 0] == 299


def test_cli_errors_name_the_problem(tiny_checkpoint, tmp_path, capsys):
    from minigpt.generate_cli import main

    assert main(["--model", str(tmp_path / "nope"), "--prompt", "x"]) == 2
    assert f"{tmp_path / 'nope'} not found; pass --model DIR with config.json and model.safetensors" in capsys.readouterr().err
    assert main(["--model", str(tiny_checkpoint / "config.json"), "--prompt", "x"]) == 2
    assert (f"--model {tiny_checkpoint / 'config.json'} is a file; a checkpoint is the directory that holds config.json "
            f"and model.safetensors ({tiny_checkpoint}?)") in capsys.readouterr().err
    (tmp_path / "gpt2").mkdir()  # as the shipped checkpoints/gpt2: tokenizer files, no weights
    assert main(["--model", str(tmp_path / "gpt2"), "--prompt", "x"]) == 2
    assert f"minigpt download gpt2 --out {tmp_path / 'gpt2'}" in capsys.readouterr().err
    assert main(["--model", str(tiny_checkpoint), "--prompt-file", str(tmp_path / "missing.txt")]) == 2
    assert "--prompt-file" in (err := capsys.readouterr().err) and "missing.txt" in err
    # More new tokens than the context holds: the limit, and no --truncate-left, which no cut could help.
    for extra in ([], ["--truncate-left"], ["--explain"], ["--prompt", "", "--num-beams", "2"]):
        assert main(["--model", str(tiny_checkpoint), "--prompt", "To be", "--max-new-tokens", "500", *extra]) == 2
        err = capsys.readouterr().err
        assert "--max-new-tokens 500 leaves no room for a prompt in the model's context n_positions=128: generate at " \
               "most 128 tokens" in err and "truncate" not in err, extra
    assert "or let the context slide (--slide N)" in err  # (the last of them)
    # --slide: past the context; only the prompt must fit (so --max-new-tokens is not what to lower).
    assert main(["--model", str(tiny_checkpoint), "--prompt", "To be", "--max-new-tokens", "300", "--slide", "64",
                 "--temperature", "0"]) == 0
    assert main(["--model", str(tiny_checkpoint), "--prompt", "z" * 130, "--max-new-tokens", "300", "--slide", "64"]) == 2
    assert "the prompt is 130 tokens, but the model's context n_positions=128 must hold the whole prompt, even with " \
           "--slide: shorten it, or keep its last 128 tokens (--truncate-left)" in capsys.readouterr().err
    assert main(["--model", str(tiny_checkpoint), "--explain", "--slide", "64"]) == 2
    assert "it does not take --slide" in capsys.readouterr().err
    assert main(["--model", str(tiny_checkpoint), "--prompt", "To be"]) == 2  # 200 new tokens: the default is named
    assert "--max-new-tokens 200 (the default) leaves no room for a prompt" in capsys.readouterr().err
    # A long prompt: what would fit, --truncate-left among it (--max-new-tokens 10 leaves room for 119).
    assert main(["--model", str(tiny_checkpoint), "--prompt", "z" * 125, "--max-new-tokens", "10"]) == 2
    assert "the prompt is 125 tokens, but with --max-new-tokens 10 the model's context n_positions=128 has room for " \
           "119: shorten it, generate at most 4 tokens, or keep its last 119 tokens (--truncate-left)" in capsys.readouterr().err
    assert main(["--model", str(tiny_checkpoint), "--prompt", "z" * 125, "--max-new-tokens", "4", "--temperature", "0"]) == 0
    assert main(["--model", str(tiny_checkpoint), "--prompt", "To be", "--max-new-tokens", "125",
                 "--truncate-left", "--temperature", "0"]) == 0
    assert main(["--model", str(tiny_checkpoint), "--prompt", "To be", "--max-new-tokens", "129", "--truncate-left"]) == 2
    assert "--max-new-tokens 129 leaves no room for a prompt" in capsys.readouterr().err  # not "use --truncate-left"
    assert main(["--model", str(tiny_checkpoint), "--prompt", "To be", "--max-new-tokens", "128",
                 "--truncate-left", "--temperature", "0"]) == 0  # the last prompt token, then 128 new ones
    assert main(["--model", str(tiny_checkpoint), "--num-beams", "2", "--top-k", "5", "--top-p", "0.9"]) == 2
    assert "it draws nothing, so --top-k, --top-p would do nothing" in capsys.readouterr().err
    assert main(["--model", str(tiny_checkpoint), "--temperature", "0", "--min-p", "0.1", "--max-new-tokens", "2"]) == 2
    assert "--temperature 0 is greedy: it takes the most likely token and draws nothing, so --min-p would do nothing" in capsys.readouterr().err
    # With --explain too (an audit: its table showed a filter greedy ignores, the token taken at 0.0000).
    assert main(["--model", str(tiny_checkpoint), "--temperature", "0", "--top-k", "5", "--explain", "--max-new-tokens", "2"]) == 2
    assert "--temperature 0 is greedy: it takes the most likely token and draws nothing, so --top-k would do nothing" \
        in capsys.readouterr().err
    assert main(["--model", str(tiny_checkpoint), "--explain", "--num-beams", "2", "--stop", "x"]) == 2
    assert "--explain shows one sampled sequence; it does not take --num-beams, --stop" in capsys.readouterr().err
    assert main(["--model", str(tiny_checkpoint), "--explain", "--stats"]) == 2  # not silently without its stats
    assert "it does not take --stats" in capsys.readouterr().err
    assert main(["--model", str(tiny_checkpoint), "--explain", "--compile", "--sampler", "torch"]) == 2
    assert "it does not take --compile, --sampler" in capsys.readouterr().err
    assert main(["--model", str(tiny_checkpoint), "--num-beams", "2", "--stream"]) == 2
    assert "nothing to --stream" in capsys.readouterr().err
    for mode in (["--temperature", "0"], ["--num-beams", "2"]):  # deterministic: a seed or a sampler would change nothing
        assert main(["--model", str(tiny_checkpoint), "--seed", "0", *mode]) == 2
        assert "--seed sets how tokens are drawn, but" in capsys.readouterr().err
        assert main(["--model", str(tiny_checkpoint), "--seed", "0", "--sampler", "torch", *mode]) == 2
        assert "--seed and --sampler set how tokens are drawn, but" in capsys.readouterr().err
    assert main(["--model", str(tiny_checkpoint), "--sampler", "torch", "--num-beams", "2"]) == 2
    assert "--sampler sets how tokens are drawn, but beam search draws nothing: drop it" in capsys.readouterr().err
    assert main(["--model", str(tiny_checkpoint), "--length-penalty", "2"]) == 2  # not silently without beams
    assert "--length-penalty scores finished beams: it needs --num-beams > 1" in capsys.readouterr().err
    from minigpt import Tokenizer

    mixed = tmp_path / "mixed"  # the model of one checkpoint beside another's tokenizer: nonsense or a decode error
    shutil.copytree(tiny_checkpoint, mixed)
    Tokenizer.from_pretrained("gpt2").save_pretrained(mixed)  # GPT-2's, as shipped
    assert main(["--model", str(mixed), "--prompt", "To be", "--max-new-tokens", "2"]) == 2
    assert f"the model {mixed} has a 280-token vocabulary (EOS = 279), but the tokenizer in {mixed} has 50257 " \
           "(EOS = 50256): its ids would mean other tokens to the model; pass --tokenizer with the model's own " \
           "tokenizer" in capsys.readouterr().err


def test_cli_tokenizer_flag_serves_a_model_saved_without_one(tiny_checkpoint, tmp_path, capsys):
    """`model.save_pretrained(dir)` writes config.json and model.safetensors only: generate took its
    tokenizer from --model alone, so such a model could not be run. --tokenizer DIR names it (as eval
    and finetune take it), checked to be the model's own; the error without it points to the flag."""
    from minigpt.generate_cli import main

    bare = tmp_path / "bare"
    GPT.from_pretrained(tiny_checkpoint).save_pretrained(bare)
    assert sorted(p.name for p in bare.iterdir()) == ["config.json", "model.safetensors"]
    args = ["--prompt", "To be", "--max-new-tokens", "5", "--temperature", "0"]
    assert main(["--model", str(bare), *args]) == 2
    assert f"{bare} holds neither vocab.json + merges.txt nor tokenizer.json: for a model saved without its tokenizer, " \
           "pass --tokenizer DIR (GPT-2's, shipped: --tokenizer gpt2)" in capsys.readouterr().err
    assert main(["--model", str(tiny_checkpoint), *args]) == 0
    whole = capsys.readouterr().out
    assert main(["--model", str(bare), "--tokenizer", str(tiny_checkpoint), *args]) == 0
    assert capsys.readouterr().out == whole
    assert main(["--model", str(bare), "--tokenizer", "gpt2", *args]) == 2  # GPT-2's is not this model's
    assert f"the model {bare} has a 280-token vocabulary (EOS = 279), but the tokenizer in gpt2 has 50257" in \
        capsys.readouterr().err
    assert main(["--model", str(bare), "--tokenizer", str(tmp_path / "none"), *args]) == 2
    assert f"tokenizer directory {tmp_path / 'none'} does not exist" in capsys.readouterr().err
    path = tmp_path / "p.jsonl"  # --prompts-file reads with it too
    path.write_text('"To be"\n', encoding="utf-8")
    assert main(["--model", str(bare), "--tokenizer", str(tiny_checkpoint), "--prompts-file", str(path),
                 "--max-new-tokens", "5", "--temperature", "0"]) == 0
    assert json.loads(capsys.readouterr().out)["texts"] == [whole[len("To be"):-1]]


@pytest.mark.parametrize("argv, message", [
    (["--length-penalty", "1.0"], "--length-penalty scores finished beams: it needs --num-beams > 1"),
    (["--early-stopping", "false"], "--early-stopping says when beam search ends: it needs --num-beams > 1"),
    (["--num-beams", "2", "--temperature", "0.8"], "it draws nothing, so --temperature would do nothing: drop it"),
    (["--num-beams", "2", "--top-k", "0", "--top-p", "1"], "so --top-k, --top-p would do nothing: drop them"),
    (["--temperature", "0", "--top-p", "1.0"], "and draws nothing, so --top-p would do nothing: drop it"),
    # Typical can drop the most likely token, but greedy draws nothing for it to filter.
    (["--temperature", "0", "--typical-p", "0.5"], "it takes the most likely token and draws nothing, so --typical-p "
                                                   "would do nothing: drop it"),
    (["--num-beams", "2", "--typical-p", "0.5"], "it draws nothing, so --typical-p would do nothing: drop it"),
    (["--temperature", "0", "--epsilon-cutoff", "0.01", "--eta-cutoff", "0.01"],
     "and draws nothing, so --epsilon-cutoff, --eta-cutoff would do nothing: drop them"),
    (["--explain", "--num-beams", "1", "-n", "1"], "it does not take --num-beams, --num-return-sequences"),
    # Not ignored but unsupported: refused by its flag's name, not by generate's "do_sample, stop strings and streamer".
    (["--num-beams", "2", "--stop", "x"], "--stop is not supported with beam search (--num-beams > 1)"),
    # An audit: generate's "slide is not supported with num_beams > 1", in Python's names.
    (["--num-beams", "2", "--slide", "4"], "generate: error: --slide is not supported with beam search (--num-beams > 1): beam "
                                           "search keeps its beams in one context; drop --slide, or use --num-beams 1"),
    (["--num-beams", "2", "--slide", "0"], "--slide is not supported with beam search"),  # typed: refused at any value
])
def test_cli_refuses_a_flag_its_mode_ignores_even_at_its_default(tiny_checkpoint, capsys, argv, message):
    """A typed flag is refused whatever its value: `--num-beams 2 --temperature 0.8` ran as if the
    temperature did something (0.8 is the default), and so did `--length-penalty 1.0` without beams."""
    from minigpt.generate_cli import main, typed_flags

    assert main(["--model", str(tiny_checkpoint), "--max-new-tokens", "2", *argv]) == 2
    assert message in capsys.readouterr().err
    assert typed_flags(["--stop", "a", "--stop", "b", "-n", "1", "--stream"]) == {"stop", "num_return_sequences", "stream"}
    assert typed_flags([]) == set()


@pytest.mark.parametrize("argv, message", [
    (["--slide", "1000"], "--slide must be 0 (off) or in [1, n_positions=128], got 1000"),
    (["--min-new-tokens", "5"], "--min-new-tokens must be in [0, --max-new-tokens 2], got 5"),  # both flags
    (["--top-p", "0"], "--top-p must be in (0, 1] (1 means off), got 0.0"),
    (["--top-k", "-1"], "--top-k must be in [0, inf) (0 means off), got -1"),
    (["--min-p", "2"], "--min-p must be in [0, 1] (0 means off), got 2.0"),
    (["--typical-p", "0"], "--typical-p must be in (0, 1] (1 means off), got 0.0"),
    (["--typical-p", "1.5"], "--typical-p must be in (0, 1] (1 means off), got 1.5"),
    (["--epsilon-cutoff", "1"], "--epsilon-cutoff must be in [0, 1) (0 means off), got 1.0"),
    (["--eta-cutoff", "-0.1"], "--eta-cutoff must be in [0, 1) (0 means off), got -0.1"),
    (["--sampler", "triton", "--eta-cutoff", "0.01"], "--sampler 'triton' has no --eta-cutoff filter (--eta-cutoff 0.01)"),
    # The fused kernel has no typical filter: refused, not skipped.
    (["--sampler", "triton", "--typical-p", "0.5"], "--sampler 'triton' has no --typical-p filter (--typical-p 0.5): "
                                                    "use --sampler 'torch' or 'auto'"),
    (["--temperature", "-1"], "--temperature must be in [0, inf) (0 means greedy), got -1.0"),
    (["--num-beams", "0"], "--num-beams must be ≥ 1, got 0"),
    (["--max-new-tokens", "0"], "--max-new-tokens must be ≥ 1, got 0"),
    (["--no-repeat-ngram-size", "-1"], "--no-repeat-ngram-size must be ≥ 0 (0 means off), got -1"),
    (["--repetition-penalty", "0"], "--repetition-penalty must be in (0, inf) (1 means off), got 0.0"),
    (["--presence-penalty", "3"], "--presence-penalty must be in [-2.0, 2.0], got 3.0"),
    (["--num-beams", "2", "--length-penalty", "nan"], "--length-penalty must be a finite number, got nan"),
    (["--num-return-sequences", "0"], "--num-return-sequences must be ≥ 1, got 0"),
    (["--sampler", "triton"], "--sampler 'triton' runs on CUDA tensors, got cpu"),
    (["--explain", "--top-p", "0"], "--top-p must be in (0, 1] (1 means off), got 0.0"),  # explain's own checks
    (["--prompts-file", "p.jsonl", "--top-p", "0"], "--top-p must be in (0, 1]"),  # generate_texts' checks
    # (before any batch: it said "seed must fit ..." after the progress bar had started; an end-to-end audit)
    (["--prompts-file", "p.jsonl", "--seed", str(2**70)], f"--seed must fit in 64 bits (-2**63 .. 2**64 - 1), got {2**70}"),
])
def test_cli_names_a_bad_value_by_its_flag(tiny_checkpoint, tmp_path, monkeypatch, capsys, argv, message):
    """An audit: a value generate refuses was reported in its Python names ("slide must be 0 (off) or
    in [1, n_positions=256]"), where every other refusal of this command names flags. generate's own
    message is unchanged; the CLI names each argument by its flag, and a value after it as typed."""
    from minigpt.generate_cli import FLAG_ARGS, build_parser, main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # set, --sampler triton runs on the CPU, interpreted
    (tmp_path / "p.jsonl").write_text('"To be"\n', encoding="utf-8")
    assert main(["--model", str(tiny_checkpoint), "--max-new-tokens", "2", *argv]) == 2
    err = capsys.readouterr().err
    assert f"generate: error: {message}" in err
    assert not re.search(rf"(?<![\w-]){argv[-2].lstrip('-').replace('-', '_')}(?!\w)", err)  # no Python name left
    assert set(FLAG_ARGS) <= {a.dest for a in build_parser()._actions}  # each a flag of this command


def test_cli_tokenizer_hint_names_a_path_that_works_beside_a_gpt2_folder(tmp_path, capsys, monkeypatch):
    """An audit: with a ./gpt2 folder (a model saved there, no tokenizer), the hint said "--tokenizer
    gpt2", which then named that folder too, not the shipped tokenizer: the hint failed as it was
    followed. Where the name is taken, the hint gives the shipped tokenizer's path, which works."""
    from minigpt.generate_cli import main
    from minigpt.tokenizer import GPT2_DIR

    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    GPT(tiny_config(vocab_size=50257)).save_pretrained("gpt2")  # GPT-2's vocabulary: its tokenizer fits
    args = ["--model", "gpt2", "--prompt", "hi", "--max-new-tokens", "2", "--temperature", "0"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"pass --tokenizer DIR (GPT-2's, shipped: --tokenizer {GPT2_DIR})" in err
    assert main([*args, "--tokenizer", "gpt2"]) == 2  # the old hint: ./gpt2 again
    assert "gpt2 holds neither vocab.json + merges.txt nor tokenizer.json" in capsys.readouterr().err
    assert main([*args, "--tokenizer", str(GPT2_DIR)]) == 0  # the hint, followed
    assert capsys.readouterr().out.startswith("hi")


def test_cli_prompt_may_hold_endoftext_and_explain_prints_the_text(tiny_checkpoint, capsys):
    """The CLI prompt is the user's own text: <|endoftext|> in it is the special token, not an error."""
    from minigpt.generate_cli import main

    args = ["--model", str(tiny_checkpoint), "--max-new-tokens", "3", "--temperature", "0"]
    assert main(args + ["--prompt", "<|endoftext|>To be"]) == 0
    assert capsys.readouterr().out.startswith("<|endoftext|>To be")
    assert main(args + ["--prompt", "To be", "--explain"]) == 0
    out = capsys.readouterr().out
    assert "greedy (temperature 0): took the most likely" in out
    greedy = main(args + ["--prompt", "To be"]) == 0 and capsys.readouterr().out.strip()
    assert out.rstrip().endswith(greedy)  # the table per step, then the text it drew


def test_cli_truncate_left_cut_inside_a_character(tiny_checkpoint, capsys):
    """--truncate-left keeps the prompt's last ids. Here the cut falls inside 🙂 (4 byte tokens):
    decoding the kept ids gives U+FFFD (3 bytes each), so re-encoding that text came out longer
    than the context allows."""
    from minigpt.generate_cli import main

    prompt = "🙂🙂" + "z" * 117  # 125 byte tokens; 128 positions + 1 - 10 new tokens keep the last 119
    args = ["--model", str(tiny_checkpoint), "--prompt", prompt, "--max-new-tokens", "10"]
    for extra in (["--temperature", "0"], ["--temperature", "0", "--stream"], ["--num-beams", "2"]):
        assert main(args + ["--truncate-left"] + extra) == 0, capsys.readouterr().err
        assert "z" * 117 in capsys.readouterr().out  # the kept prompt, then the new text
    assert main(args + ["--truncate-left", "--explain", "--max-new-tokens", "2", "--temperature", "0"]) == 0, \
        capsys.readouterr().err


@pytest.fixture(scope="module")
def gpt2_tok():
    from minigpt.tokenizer import GPT2_DIR, Tokenizer

    return Tokenizer.from_pretrained(GPT2_DIR)


def test_a_long_stop_string_is_found_beside_a_short_one(gpt2_tok):
    """Guards against sizing the decoded tail by the *shortest* stop string (min for max): with
    stop=["\\n", "STOP"], "STOP" written one letter per token would never be seen, since only the
    last token would be decoded each step, and generation would run past it."""
    stops = StopStrings(gpt2_tok, ["\n", "STOP"], batch_size=1)
    letters = [gpt2_tok.encode(c)[0] for c in "go STOP"]
    found = [stops.add(0, t) for t in letters]
    assert found[:-1] == [None] * (len(letters) - 1)
    assert found[-1] == 3  # keep "g", "o", " ": the tokens wholly before "STOP"


def test_the_earliest_of_several_stop_strings_cuts_the_text(gpt2_tok):
    """Guards against first_stop returning the *last* stop string found (max for min): when one
    token completes two stop strings at once (GPT-2 writes " hello" as one token; stop=["o", "ll"]),
    the text must be cut at the earlier one, as the caller asked for the text before any stop string."""
    assert first_stop("Say hello", ["o", "ll"]) == 6
    assert first_stop("Say hi", ["o", "ll"]) == -1
    ids = gpt2_tok.encode("Say hello world")
    assert gpt2_tok.decode([ids[1]]) == " hello"  # one token holds both stops
    pieces = text_pieces(iter(torch.tensor([i]) for i in ids), gpt2_tok, ["o", "ll"], eos=set())
    assert "".join(pieces) == "Say he"


def test_a_stop_string_that_does_not_occur_never_hides_one_that_does(gpt2_tok):
    """first_stop must skip the stop strings absent from the text: their find() is -1, and taking
    it as the earliest start would leave the text uncut though "ll" is in it."""
    assert first_stop("Say hello", ["zz", "ll"]) == 6
    ids = gpt2_tok.encode("Say hello world")
    pieces = text_pieces(iter(torch.tensor([i]) for i in ids), gpt2_tok, ["zz", "ll"], eos=set())
    assert "".join(pieces) == "Say he"


# Byte tokens of characters, whole, cut short (b"\xe2\x82": half a "€") or no UTF-8 (b"\xff").
STREAM_PARTS = [b"a", b"b", b"\n", "\u20ac".encode(), "\U0001f600".encode(), b"\xe2\x82", b"\xff"]


@settings(max_examples=300, deadline=None)
@example(ids=list(b"ab\nab"), stops=["b\n"], eos_at=9)  # a stop begun in text held back a step before
@given(ids=st.lists(st.sampled_from(STREAM_PARTS), max_size=16).map(lambda parts: list(b"".join(parts))),
       stops=st.lists(st.sampled_from(["b\n", "\u20aca", "a", "\n\n", "\U0001f600", "ab\u20ac", "b\u20ac\n"]),
                      max_size=2),
       eos_at=st.integers(0, 70))
def test_streamed_pieces_are_the_whole_text_cut_at_its_first_stop(ids, stops, eos_at):
    """text_pieces decodes only the tokens since the text last ended on a whole character (a
    runner's audit: decoding the whole text each step made a 100k-token --slide stream slower with
    every token). Its pieces must still join to the text decoded whole, cut at the first stop
    string or EOS, with characters spelled over several tokens, bytes that are no UTF-8, and stops
    spanning tokens."""
    tok, eos = ByteTokenizer(), 300
    stream_ids = ids[:eos_at] + [eos] + ids[eos_at:]
    pieces = list(text_pieces(iter(torch.tensor([i]) for i in stream_ids), tok, stops, eos={eos}))
    text = tok.decode(ids[:eos_at])
    cut = first_stop(text, stops)
    assert "".join(pieces) == (text if cut < 0 else text[:cut]) and all(pieces)


@settings(max_examples=300, deadline=None)
@given(ids=st.lists(st.sampled_from(STREAM_PARTS), max_size=12).map(lambda parts: list(b"".join(parts))),
       stops=st.lists(st.sampled_from(["\ufffd", "a\ufffd", "\ufffdb", "\u20ac", "b"]), min_size=1, max_size=2),
       eos_at=st.integers(0, 50))
def test_a_stop_string_holding_u_fffd_cuts_streamed_and_whole_texts_alike(ids, stops, eos_at):
    """A server audit: with stop="\\ufffd", stream_text yielded nothing where generate_text returned
    the whole text. A character spelled over several tokens decodes as U+FFFD until its last byte
    comes, and text_pieces (and cut_text's search for the shortest prefix) searched that passing
    U+FFFD. Both now search the whole characters only; the U+FFFD of bytes that are no UTF-8, or
    of a character cut short at the end, stays and cuts."""
    tok, eos = ByteTokenizer(), 300
    stream_ids = ids[:eos_at] + [eos] + ids[eos_at:]
    streamed = "".join(text_pieces(iter(torch.tensor([i]) for i in stream_ids), tok, stops, eos={eos}))
    assert streamed == cut_text(stream_ids, tok, stops, {eos}, eos + 1)


@pytest.mark.parametrize("text, expected", [("café ☕".encode(), "café ☕"),  # é and ☕ spelled over 2 and 3 tokens
                                            (b"a\xffb", "a"),                 # no UTF-8: U+FFFD for good
                                            (b"ab\xe2\x82", "ab")])           # half a "€" at the end: final
def test_a_half_spelled_character_is_no_u_fffd_stop(text, expected):
    """The cases of the test above, by hand: only a U+FFFD that stays in the text matches "\\ufffd"."""
    tok, ids = ByteTokenizer(), list(text)
    assert "".join(text_pieces(iter(torch.tensor([i]) for i in ids), tok, ["\ufffd"], eos=set())) == expected
    assert cut_text(ids, tok, ["\ufffd"], set(), 256) == expected


def test_a_long_stream_decodes_only_its_newest_tokens():
    """The cost per token must not grow with the text: each step decodes a few tokens, not all."""
    lengths = []

    class Counting(ByteTokenizer):
        def decode(self, ids) -> str:
            lengths.append(len(ids))
            return super().decode(ids)

    ids = list("Ça va? ".encode() * 300)  # (Ç is 2 bytes: one decode spans both)
    pieces = text_pieces(iter(torch.tensor([i]) for i in ids), Counting(), ["Ça va!"], eos=set())
    assert "".join(pieces) == bytes(ids).decode() and max(lengths) <= 2


def test_stop_strings_cut_at_the_earliest_one_when_one_token_completes_two():
    """With stop=["b", "ab"], the token "b" completes both: the row must be cut where "ab" begins
    (keep 1 token, "x"), not where "b" does, which would keep "a", the start of a stop string."""
    stops = StopStrings(ByteTokenizer(), ["b", "ab"], batch_size=1)
    assert [stops.add(0, t) for t in b"xab"] == [None, None, 1]


def test_a_stop_string_spelled_by_fewer_tokens_than_its_bytes_keeps_what_is_before_it():
    """The tail decoded is the last len(stop bytes) tokens; with multi-byte tokens the row may hold
    fewer than that, and the tokens to keep count from the row's start, not from len(row) - window."""
    class TwoCharTokenizer:
        table = {0: b"ab", 1: b"cd", 2: b"e"}

        def decode_bytes(self, ids: list[int]) -> bytes:
            return b"".join(self.table[i] for i in ids)

    stops = StopStrings(TwoCharTokenizer(), ["abcd"], batch_size=1)
    assert [stops.add(0, t) for t in (2, 0, 1)] == [None, None, 1]  # keep "e"
    stops = StopStrings(TwoCharTokenizer(), ["abcd"], batch_size=1)
    assert [stops.add(0, t) for t in (0, 1)] == [None, 0]


def test_a_non_ascii_stop_string_is_found_with_a_tokenizer_that_decodes_only_text():
    """A tokenizer without decode_bytes (transformers') is searched through its text's UTF-8 bytes,
    as the stop strings are: "é" is found once both of its bytes are written."""
    class TextOnly:
        def decode(self, ids) -> str:
            return ByteTokenizer().decode(ids)

    stops = StopStrings(TextOnly(), ["é"], batch_size=1)
    assert [stops.add(0, t) for t in "café".encode()] == [None, None, None, None, 3]


def test_prefill_mask_lets_every_query_see_at_least_one_key():
    """Guards against dropping the own-slot term from prefill_mask: a left pad's query then sees no
    key at all, and softmax over an all -inf row is 0/0 = NaN on backends that do not special-case
    it (eager attention, older SDPA kernels); the NaN then spreads through the pad's keys/values.
    (torch 2.13's CPU SDPA returns 0 for such rows, which hides the bug from end-to-end tests.)"""
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1], [0, 0, 0, 1]])
    m = prefill_mask(mask)  # (B, 1, T, T)
    assert m.shape == (3, 1, 4, 4) and m.any(-1).all()
    assert torch.equal(m[0, 0, 3], torch.tensor([False, False, True, True]))  # real query: real keys up to itself
    assert not m[0, 0, 1, 0]  # a pad query never sees another pad
    scores = torch.randn(3, 1, 4, 4).masked_fill(~m, float("-inf"))
    assert not scores.softmax(-1).isnan().any()


@torch.no_grad()
def test_a_row_ended_by_a_given_eos_is_padded_with_that_eos_when_no_pad_is_given(pair):
    """Bug guarded: pad_token_id=None fell back to the config's EOS instead of the first id of the
    eos_token_id the caller gave, so a finished row was padded with another token (here GPT-2's
    50256, which is no id of this 300-token model and would crash an embedding lookup)."""
    model, _ = pair
    ids, mask = left_padded(PROMPTS)
    eos = eos_from(model, ids, mask, row=1, step=1)
    out = generate(model, ids, mask, max_new_tokens=6, eos_token_id=[eos, 299])
    new = out[:, ids.size(1):].tolist()
    ended = [r for r in new if eos in r and r.index(eos) < len(r) - 1]
    assert ended, "the chosen EOS must end some row early"
    for r in ended:
        assert r[r.index(eos):] == [eos] * (len(r) - r.index(eos))  # pads are the given EOS, eos[0]
    assert int(out.max()) < model.config.vocab_size


@torch.no_grad()
def test_a_prompts_parameter_reaches_each_of_its_samples(pair):
    """Bug guarded: per_row spreading a (B,) parameter over the n samples with `repeat` (p0 p1 p0 p1)
    instead of `repeat_interleave` (p0 p0 p1 p1): the rows are prompt-major, so prompt 0's second
    sample took prompt 1's temperature. Here prompt 0 is greedy (temperature 0): all its samples
    must be the greedy continuation."""
    model, _ = pair
    ids, mask = left_padded(PROMPTS[:2])
    greedy = generate(model, ids, mask, max_new_tokens=6, eos_token_id=[])
    out = generate(model, ids, mask, max_new_tokens=6, eos_token_id=[], do_sample=True, seed=0,
                   temperature=torch.tensor([0.0, 5.0]), num_return_sequences=3)
    for r in range(3):
        assert torch.equal(out[r], greedy[0]), f"sample {r} of the greedy prompt was sampled"
    assert not all(torch.equal(out[3 + r], greedy[1]) for r in range(3))  # prompt 1's are sampled (t = 5)


def test_num_return_sequences_may_not_exceed_num_beams(pair):
    """Bug guarded: beam search returns at most num_beams hypotheses per prompt; asking for more
    (num_return_sequences = num_beams + 1) must be refused at the call, not return a short or
    repeated batch whose rows no longer line up with the prompts."""
    model, _ = pair
    with pytest.raises(ValueError, match="num_return_sequences=3 must be in \\[1, num_beams\\]"):
        generate(model, torch.tensor([PROMPTS[0]]), max_new_tokens=3, num_beams=2, num_return_sequences=3)
    assert generate(model, torch.tensor([PROMPTS[0]]), max_new_tokens=3, num_beams=2,
                    num_return_sequences=2, eos_token_id=[]).shape == (2, len(PROMPTS[0]) + 3)


@torch.no_grad()
def test_a_per_prompt_penalty_tensor_penalises_as_the_number_does(pair):
    """Bug guarded: with penalties given as (B,) tensors the sampling/greedy loop kept no token
    counts (penalties_on ignored tensors), so the penalty did nothing: greedy text with
    repetition_penalty=torch.tensor([2., 2., 2.]) must equal the one with 2.0, and differ from none."""
    model, _ = pair
    ids, mask = left_padded(PROMPTS)
    kw = dict(max_new_tokens=12, eos_token_id=[])
    plain = generate(model, ids, mask, **kw)
    for name, value in (("repetition_penalty", 2.0), ("frequency_penalty", 1.5)):
        as_number = generate(model, ids, mask, **kw, **{name: value})
        assert not torch.equal(as_number, plain), f"{name} must change this greedy text"
        as_tensor = generate(model, ids, mask, **kw, **{name: torch.full((3,), value)})
        assert torch.equal(as_tensor, as_number), name


@pytest.mark.parametrize("name, value, off", [("typical_p", 0.2, 1.0), ("epsilon_cutoff", 0.3, 0.0),
                                              ("eta_cutoff", 0.3, 0.0)])
def test_a_filter_after_min_p_per_prompt_draws_as_the_number_does_and_changes_the_draws(pair, name, value, off):
    """typical_p, epsilon_cutoff and eta_cutoff reach the decode loop's draw: one value per prompt
    (a (B,) tensor, spread over its samples) draws what the number does with the same seed, and
    differs from no filter (this model is sharp: a floor of 0.3 is one that changes its draws); a
    tensor of the off value draws as no filter does."""
    model, _ = pair
    ids, mask = left_padded(PROMPTS)
    kw = dict(max_new_tokens=12, eos_token_id=[], do_sample=True, seed=4, num_return_sequences=2)
    plain = generate(model, ids, mask, **kw)
    as_number = generate(model, ids, mask, **kw, **{name: value})
    assert not torch.equal(as_number, plain)
    assert torch.equal(generate(model, ids, mask, **kw, **{name: torch.full((3,), value)}), as_number)
    assert torch.equal(generate(model, ids, mask, **kw, **{name: torch.full((3,), off)}), plain)


@torch.no_grad()
def test_the_streamer_sees_what_the_output_holds_after_a_row_ends(pair):
    """Bug guarded: the streamer was handed each step's drawn tokens before finished rows were
    replaced by pads, so a caller printing the stream saw text after EOS that `generate` never
    returns. Its tokens must be exactly the output's new columns, pads included."""
    model, _ = pair
    ids, mask = left_padded(PROMPTS)
    eos = eos_from(model, ids, mask, row=0, step=1)
    seen = []
    out = generate(model, ids, mask, max_new_tokens=6, eos_token_id=eos, pad_token_id=299, streamer=seen.append)
    new = out[:, ids.size(1):]
    assert (new == 299).any(), "some row must end early and be padded"
    assert torch.equal(torch.stack(seen, 1), new)


def test_the_fused_sampler_moves_its_random_stream_every_step(monkeypatch):
    """Bug guarded: the Triton picker keyed every step's Philox stream with the same (seed, offset),
    so each step reused the previous step's random numbers (correlated draws; a flat distribution
    repeats one token). The offset must advance by one per step, the seed stay fixed."""
    from minigpt.sampling import token_picker

    calls = []

    def fake_fused_sample(logits, temperature, top_k, top_p, min_p, seed, offset):
        calls.append((int(seed), int(offset)))
        return logits.argmax(-1)

    use_fake_kernel(monkeypatch, fake_fused_sample)
    pick = token_picker(2, torch.device("cpu"), temperature=1.0, top_k=0, top_p=1.0, min_p=0.0,
                        generator=torch.Generator().manual_seed(3), backend="triton")
    for _ in range(3):
        pick(torch.randn(2, 10))
    assert [o for _, o in calls] == [0, 1, 2]
    assert len({s for s, _ in calls}) == 1


@torch.no_grad()
def test_generate_text_with_beams_from_an_empty_prompt_skips_only_the_start_token(pair, monkeypatch):
    """Bug guarded: an empty prompt becomes one <|endoftext|> token, so generate_text's beams (whose
    text comes from `generate`'s ids, not from streamed steps) must skip max(len, 1) prompt columns;
    skipping 0 read that start token as the first new token, which is EOS: every text came back ''."""
    from minigpt.text_generation import generate_text
    model, _ = pair
    monkeypatch.setattr(model.config, "bos_token_id", 299)
    monkeypatch.setattr(model.config, "eos_token_id", 299)
    tok = ByteTokenizer()
    texts = generate_text(model, tok, "", max_new_tokens=5, num_beams=2, num_return_sequences=2)
    ids = generate(model, torch.tensor([[299]]), max_new_tokens=5, num_beams=2, num_return_sequences=2)
    expected = []
    for row in ids[:, 1:].tolist():
        row = row[:row.index(299)] if 299 in row else row
        expected.append(tok.decode(row))
    assert texts == expected and any(texts)


@torch.no_grad()
def test_explain_greedy_takes_the_first_tied_top_token_as_generate_does():
    """Bug guarded: at temperature 0, --explain drew the argmax of the *filtered* logits; top-p keeps
    only one of two exactly tied top tokens (the later id), so explain's greedy text differed from
    generate's, which takes the first argmax of the unfiltered logits."""
    import io

    from minigpt.explain import explain
    model, _ = sharpened_pair(tiny_config())
    prompt = PROMPTS[2]
    first = int(generate(model, torch.tensor([prompt]), max_new_tokens=1, eos_token_id=[])[0, -1])
    twin = first - 1
    model.transformer.wte.weight[twin] = model.transformer.wte.weight[first]  # logits[first] == logits[twin]
    greedy = generate(model, torch.tensor([prompt]), max_new_tokens=2, eos_token_id=[])[0, len(prompt):].tolist()
    assert greedy[0] == twin
    printed = io.StringIO()
    with pytest.warns(UserWarning, match="temperature=0 decodes greedily, taking the most likely token, so top_p=0.1 is ignored") as w:
        text = explain(model, DigitsTokenizer(), prompt, steps=2, temperature=0, top_p=0.1, out=printed)
    assert w[0].filename == __file__  # the caller's line, not @torch.no_grad()'s frame in torch (a review)
    assert text == "".join(f"{t:03d}" for t in greedy)
    assert "top-p" not in printed.getvalue()  # a stage greedy never reads is not shown (an audit: it was)


def test_one_right_padded_row_in_a_batch_is_refused(pair):
    """Bug guarded: the left-padding check must hold for *every* row (`.all()`); with `.any()` a
    batch whose other rows are fine let a right-padded row through, and that row then continued
    from its pads (its newest token is not in the shared last slot) without any error."""
    model, _ = pair
    ids = torch.tensor([[1, 5, 6], [5, 6, 1]])
    mask = torch.tensor([[0, 1, 1], [1, 1, 0]])  # row 0 left-padded, row 1 right-padded
    with pytest.raises(ValueError, match="left-padded"):
        generate(model, ids, mask, max_new_tokens=2)


def test_explain_runs_no_decode_step_after_the_last_token(monkeypatch):
    """Mutant R8-34: `step == steps` for `step + 1 == steps` in explain's loop: after the last token
    it ran one more decode step (a forward pass over the cache) whose logits nothing uses. One
    prefill, then a step for each token but the last: steps - 1 of them."""
    import minigpt.explain as explain_mod

    calls = []

    class CountingState(explain_mod.DecodeState):
        def step(self, *args, **kwargs):
            calls.append(1)
            return super().step(*args, **kwargs)

    monkeypatch.setattr(explain_mod, "DecodeState", CountingState)
    model, _ = sharpened_pair(tiny_config())
    ids = torch.tensor([PROMPTS[0]])
    free = generate(model, ids, max_new_tokens=4, eos_token_id=[])[0, ids.size(1):].tolist()
    model.config.eos_token_id = next(t for t in range(model.config.vocab_size) if t not in free)  # no early end
    text = explain_mod.explain(model, ByteTokenizer(), PROMPTS[0], steps=4, temperature=0, out=io.StringIO())
    assert text == ByteTokenizer().decode(free)
    assert len(calls) == 3


def test_explain_seed_0_is_a_seed():
    """Mutant R8-52: `if seed` for `if seed is not None`: seed 0 was taken for "no seed", so
    `--explain --seed 0` drew from the global generator, neither reproducible nor generate's draw."""
    from minigpt.explain import explain

    torch.manual_seed(0)
    model = GPT(tiny_config()).eval()
    ids = torch.tensor([PROMPTS[0]])
    drawn = generate(model, ids, max_new_tokens=8, do_sample=True, seed=0, sampler="torch",
                     eos_token_id=[])[0, ids.size(1):].tolist()
    torch.manual_seed(12345)  # the global generator somewhere else than seed 0's
    text = explain(model, DigitsTokenizer(), PROMPTS[0], steps=8, seed=0, out=io.StringIO())
    assert text == DigitsTokenizer().decode(drawn)


def test_explain_blames_the_model_not_a_penalty_for_its_nan_logits():
    """Mutant R8-64: explain's check of the model's own logits was lost; a broken model's NaN was
    then caught only after the penalties, whose message blames "a penalty pushed a logit past float
    range" with every penalty off. The error names the model."""
    from minigpt.explain import explain

    broken, _ = sharpened_pair(tiny_config())
    with torch.no_grad():
        broken.transformer.h[0].mlp.c_fc.weight[0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match=r"^the model produced NaN/inf logits \(check the weights"):
        explain(broken, ByteTokenizer(), PROMPTS[0], steps=2, out=io.StringIO())


def test_context_errors_at_the_edges_of_the_prompt_length(pair):
    """Mutants R9-36/R9-37: a 1-token prompt was told "(after a 1-token prompt, 128 after this
    one)", the same limit twice; a prompt of exactly n_positions tokens lost its "(at most 1 with
    this prompt)", the one count of new tokens it can still take."""
    model, _ = pair
    with pytest.raises(ValueError, match=r": max_new_tokens can be at most 128 \(after a 1-token prompt\); generate fewer "
                                         r"tokens, or let the context slide"):
        stream(model, torch.tensor([[5]]), max_new_tokens=129)
    with pytest.raises(ValueError, match=r"a prompt can have at most 127; .* or generate fewer tokens \(at most 1 with this prompt\)$"):
        stream(model, torch.full((1, 128), 5), max_new_tokens=2)


@pytest.mark.parametrize("kwargs", [{}, {"num_beams": 2}, {"do_sample": True}])
def test_a_transformers_model_or_a_batch_of_no_rows_is_refused_by_name(pair, kwargs):
    """An audit: transformers' GPT2LMHeadModel failed with "'GPT2Config' object has no attribute
    'eos_ids'", and a (0, T) batch with torch's "cannot compute aminmax over an empty dimension"."""
    model, hf = pair
    with pytest.raises(TypeError, match=r"^minigpt.generate takes a minigpt GPT, got GPT2LMHeadModel \(config GPT2Config\): "
                                        r"load the checkpoint with minigpt.GPT.from_pretrained\(dir\)"):
        generate(hf, torch.tensor([PROMPTS[0]]), max_new_tokens=2, **kwargs)
    with pytest.raises(TypeError, match=r"got Linear: load"):  # no config at all
        stream(torch.nn.Linear(2, 2), torch.tensor([PROMPTS[0]]), max_new_tokens=2, **kwargs)
    for shape in [(0, 5), (0, 0)]:
        with pytest.raises(ValueError, match=rf"^input_ids has no rows \(shape {re.escape(str(shape))}\): give at least one prompt"):
            generate(model, torch.zeros(shape, dtype=torch.long), max_new_tokens=2, **kwargs)


def test_explain_refuses_a_transformers_model_by_name(pair):
    """An audit: explain (generate --explain's view) did not check the model as generate does, so
    transformers' GPT2LMHeadModel failed inside it ("'GPT2Config' object has no attribute ...")."""
    from minigpt.explain import explain

    _, hf = pair
    with pytest.raises(TypeError, match=r"^minigpt.generate takes a minigpt GPT, got GPT2LMHeadModel \(config GPT2Config\): "
                                        r"load the checkpoint with minigpt.GPT.from_pretrained\(dir\)"):
        explain(hf, None, [1, 2], steps=2, out=io.StringIO())


def test_a_prompt_longer_than_the_context_is_not_told_to_generate_fewer_tokens(pair):
    """An audit: a 129-token prompt with max_new_tokens=1 (the fewest there is) was told "with 1 new
    tokens ... or generate fewer tokens": no count of new tokens fits a prompt the context cannot hold."""
    model, _ = pair
    for new in (1, 5):
        with pytest.raises(ValueError) as error:
            stream(model, torch.full((1, 129), 5), max_new_tokens=new)
        assert "fewer" not in str(error.value) and str(error.value).endswith(
            f"a prompt can have at most {129 - new}; shorten the prompt (truncate_left=True of generate_text, stream_text and generate_texts, or the CLI's --truncate-left, keeps its last tokens)")
    with pytest.raises(ValueError, match=r"with 1 new token a prompt can have at most 128; shorten the prompt"):
        stream(model, torch.full((1, 129), 5), max_new_tokens=1)


def test_cli_too_long_prompt_advice_at_the_edges(tiny_checkpoint, tmp_path, capsys):
    """Mutants R9-31/R9-32/R9-33: a --tokenizer DIR that is missing got the advice to pass
    --tokenizer DIR; room for one token was "keep its last 1 tokens"; a prompt of exactly
    n_positions tokens was not told that 1 new token would still fit."""
    from minigpt.generate_cli import main

    assert main(["--model", str(tiny_checkpoint), "--tokenizer", str(tmp_path / "none"), "--prompt", "x"]) == 2
    assert "does not exist" in (err := capsys.readouterr().err) and "pass --tokenizer" not in err
    assert main(["--model", str(tiny_checkpoint), "--prompt", "z" * 125, "--max-new-tokens", "128"]) == 2
    assert "has room for 1: shorten it, generate at most 4 tokens, or keep its last token (--truncate-left)" in \
        capsys.readouterr().err
    assert main(["--model", str(tiny_checkpoint), "--prompt", "z" * 128, "--max-new-tokens", "10"]) == 2
    assert "the prompt is 128 tokens, but with --max-new-tokens 10 the model's context n_positions=128 has room for " \
           "119: shorten it, generate at most 1 token, or keep" in capsys.readouterr().err


def test_too_long_prompt_with_slide_does_not_blame_max_new_tokens(tiny_checkpoint, capsys):
    """An end-to-end audit: with --slide the context holds the prompt whatever --max-new-tokens, yet
    a prompt longer than the context was told "with --max-new-tokens 10 ... has room for 128"."""
    from minigpt.generate_cli import main
    from minigpt.text_generation import generate_texts

    assert main(["--model", str(tiny_checkpoint), "--prompt", "z" * 130, "--max-new-tokens", "10", "--slide", "8"]) == 2
    err = capsys.readouterr().err
    assert "the prompt is 130 tokens, but the model's context n_positions=128 must hold the whole prompt, even with " \
           "--slide: shorten it, or keep its last 128 tokens (--truncate-left)" in err and "--max-new-tokens" not in err
    model, tokenizer = GPT.from_pretrained(tiny_checkpoint), Tokenizer.from_pretrained(tiny_checkpoint)
    with pytest.raises(ValueError, match=r"prompts\[1\] is 130 tokens, but the model's context n_positions=128 must "
                                         r"hold the whole prompt, even when it slides \(slide=8\)"):
        generate_texts(model, tokenizer, ["z", "z" * 130], max_new_tokens=10, slide=8)


def test_generating_with_dropout_on_warns():
    """A Python-API audit: after train_loop (or model.train()) a model generates with dropout on,
    so greedy tokens changed from call to call, silently. It still runs as asked, with a warning;
    in eval mode, or with no dropout to apply, there is none."""
    import warnings

    model = GPT(GPTConfig.gpt2("gpt2-tiny", vocab_size=64, dropout=0.1))
    ids = torch.tensor([[1, 2, 3]])
    with pytest.warns(UserWarning, match=r"generating with the model in training mode: dropout is on, .* model.eval\(\)"):
        generate(model.train(), ids, max_new_tokens=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        generate(model.eval(), ids, max_new_tokens=2)
        model.set_dropout(0.0)
        generate(model.train(), ids, max_new_tokens=2)


@pytest.mark.parametrize("kw, named", [
    (dict(temperature=0.7), ["temperature=0.7", "do_sample=False", "do_sample=True"]),
    (dict(top_k=5, top_p=0.9, min_p=0.1), ["top_k=5, top_p=0.9, min_p=0.1 are ignored"]),
    (dict(num_beams=2, top_k=5, temperature=0.5), ["beam search (num_beams=2)", "temperature=0.5, top_k=5 are"]),
    (dict(do_sample=True, temperature=0, top_p=0.5), ["temperature=0 decodes greedily", "top_p=0.5 is ignored"]),
    (dict(temperature=torch.tensor([0.5, 1.0])), ["temperature=(a tensor)"]),
    (dict(top_k=torch.tensor([5, 3])), ["top_k=(a tensor) is ignored", "or drop it"]),  # Mutants R10-24/R10-30
    (dict(top_p=0.9, min_p=0.1), ["top_p=0.9, min_p=0.1 are ignored", "or drop them"]),
    (dict(length_penalty=0.5), ["length_penalty=0.5 is for beam search, which num_beams=1 does not run", "drop it"]),
    (dict(do_sample=True, early_stopping=True, length_penalty=2.0),  # (an audit: these were dropped without a word)
     ["length_penalty=2.0 and early_stopping=True are for beam search", "pass num_beams > 1, or drop them"]),
])
def test_sampling_parameters_the_mode_ignores_are_warned_about_at_the_users_call(pair, kw, named):
    """As transformers warns: greedy decoding and beam search draw nothing, so a temperature or a
    filter there would silently do nothing; nor do beam search's settings without beams. The
    warning points at this file (the user's call)."""
    model, _ = pair
    ids = torch.tensor([PROMPTS[0], PROMPTS[0]])
    with pytest.warns(UserWarning) as caught:
        generate(model, ids, max_new_tokens=2, eos_token_id=[], **kw)
    assert len(caught) == 1 and caught[0].filename == __file__
    for text in named:
        assert text in str(caught[0].message)


def test_sampling_parameters_that_do_something_are_not_warned_about(pair):
    model, _ = pair
    ids = torch.tensor([PROMPTS[0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for kw in (dict(), dict(temperature=0), dict(seed=3), dict(num_beams=2, seed=3),
                   dict(num_beams=2, length_penalty=0.5, early_stopping="never"), dict(do_sample=True, temperature=0.7, top_k=5, top_p=0.9, min_p=0.1, seed=0),
                   dict(do_sample=True, temperature=torch.tensor([0.0]), top_p=0.5, seed=0)):
            generate(model, ids, max_new_tokens=2, eos_token_id=[], **kw)


def test_the_dropout_warning_points_at_the_users_call():
    """Mutant R10-8 (a bug): the training-mode warning used a fixed stacklevel=3, which is the
    user's line for stream() and perplexity() but minigpt/generation.py for generate() (generate →
    stream → warn), so the warning named minigpt's line, and Python's once-per-location default
    showed it once for all of a program's generate calls. It now names the user's call, as the
    ignored-sampling warning does."""
    from minigpt.evaluate import perplexity

    model = GPT(GPTConfig.gpt2("gpt2-tiny", vocab_size=64, dropout=0.1)).train()
    ids = torch.tensor([[1, 2, 3]])
    for call in (lambda: generate(model, ids, max_new_tokens=2), lambda: list(stream(model, ids, max_new_tokens=2)),
                 lambda: perplexity(model, torch.randint(0, 64, (40,)))):
        with pytest.warns(UserWarning, match="training mode") as caught:
            call()
        assert [w.filename for w in caught] == [__file__]


class SmallByteTokenizer(ByteTokenizer):
    """The first 256 ids of a larger model's vocabulary (<|endoftext|> = 0): the model's other rows
    are a padded vocabulary's, no token, which decode refuses (as minigpt's Tokenizer does)."""

    vocab_size, eos_token_id = 256, 0

    def decode_bytes(self, ids) -> bytes:
        if any(i >= self.vocab_size for i in ids):
            raise ValueError(f"unknown token id in {ids}")
        return super().decode_bytes(ids)


@torch.no_grad()
def test_ids_past_the_tokenizers_vocabulary_are_never_drawn():
    """A padded vocabulary (nanoGPT pads 50,257 to 50,304) fits its tokenizer, but its extra rows
    still get finite logits: a draw could land on one, and decoding it failed mid-generation
    ("unknown token id"). With the tokenizer known, every mode bans them; without it, ids are ids."""
    from minigpt.explain import explain

    model, _ = sharpened_pair(tiny_config(eos_token_id=0, bos_token_id=0), scale=1.0)
    tok = SmallByteTokenizer()
    model.transformer.ln_f.bias.fill_(1.0)  # make a padded row the model's favourite (weights tied: wte's too)
    model.lm_head.weight[290] = 5.0
    ids = torch.tensor([[65, 66, 67]])
    assert (generate(model, ids, max_new_tokens=4, eos_token_id=[])[:, 3:] == 290).all(), "the test needs row 290 to win"
    for kw in (dict(), dict(do_sample=True, seed=0, temperature=2.0), dict(num_beams=3, num_return_sequences=3)):
        out = generate(model, ids, max_new_tokens=4, eos_token_id=[], tokenizer=tok, **kw)
        assert (out < 256).all(), kw
        generate_text(model, tok, "ABC", max_new_tokens=4, stop=["\n"] if "num_beams" not in kw else None, **kw)
    assert list(stream_text(model, tok, "ABC", max_new_tokens=4, do_sample=True, seed=1))
    explain(model, tok, "ABC", steps=3, seed=0, out=io.StringIO())


def test_another_models_tokenizer_is_refused_not_taken_for_a_padded_vocabulary():
    """An audit: `generate(model, ids, tokenizer=tok)` with a smaller tokenizer of another model
    (here 256 ids whose EOS, 0, is not the model's 63) banned every id past 256, silently confining
    the model to its first ids, where the text functions refuse that pair. Now it is refused too;
    the model's own padded vocabulary (EOS 0 in both) still bans only its extra rows."""
    model, _ = sharpened_pair(tiny_config(eos_token_id=63, bos_token_id=63), scale=1.0)
    ids = torch.tensor([[65, 66, 67]])
    with pytest.raises(ValueError, match=r"^tokenizer: the model has a .*-token vocabulary \(EOS = 63\), but the "
                                         r"tokenizer has 256 \(EOS = 0\).*pass the model's own tokenizer"):
        generate(model, ids, max_new_tokens=2, tokenizer=SmallByteTokenizer(), stop="\n")
    larger = SimpleNamespace(vocab_size=model.config.vocab_size + 100, eos_token_id=63)  # (a mutation audit)
    with pytest.raises(ValueError, match="^tokenizer: .* its ids would mean other tokens"):
        generate(model, ids, max_new_tokens=2, tokenizer=larger)


def test_in_flags_renames_whole_argument_names_only():
    """cli.in_flags (a mutation audit: its lookbehind was untested): an argument name becomes its
    flag, name=value becomes `--flag value`; a name inside another word, after a dot, or already a
    flag stays as it is."""
    from minigpt.cli import in_flags
    from minigpt.generate_cli import FLAG_ARGS

    def words(message: str) -> str:
        return in_flags(message, FLAG_ARGS)

    assert words("early_stopping must be True, False or 'never'") == "--early-stopping must be True, False or 'never'"
    assert words("min_new_tokens must be in [0, max_new_tokens=2]") == "--min-new-tokens must be in [0, --max-new-tokens 2]"
    untouched = "torch.manual_seed; batch_seed 2; --stop x; stopping; seeds"
    assert words(untouched) == untouched


# ---- the CLI's flags reach generate (a mutation audit: --stop, --seed and the sampling defaults
# could be dropped, and a pair of flags swapped, with every test passing) ----


def test_cli_flags_reach_generate_each_as_its_own_argument():
    from minigpt.generate_cli import build_parser, generate_kwargs

    flags = ["--temperature", "0.7", "--top-k", "11", "--top-p", "0.85", "--min-p", "0.03", "--typical-p", "0.8",
             "--epsilon-cutoff", "0.001", "--eta-cutoff", "0.002",
             "--repetition-penalty", "1.15", "--presence-penalty", "0.25", "--frequency-penalty", "0.5",
             "--no-repeat-ngram-size", "3", "--max-new-tokens", "17", "--min-new-tokens", "4", "--seed", "9",
             "--stop", "END"]
    sampling, kwargs = generate_kwargs(build_parser().parse_args(flags))
    assert sampling == dict(temperature=0.7, top_k=11, top_p=0.85, min_p=0.03, typical_p=0.8, epsilon_cutoff=0.001,
                            eta_cutoff=0.002, repetition_penalty=1.15,
                            presence_penalty=0.25, frequency_penalty=0.5, no_repeat_ngram_size=3)
    assert {k: kwargs[k] for k in ("max_new_tokens", "min_new_tokens", "seed", "do_sample")} == \
        dict(max_new_tokens=17, min_new_tokens=4, seed=9, do_sample=True)
    assert kwargs["stop"] in ("END", ["END"])
    _, beams = generate_kwargs(build_parser().parse_args(["--num-beams", "3", "--length-penalty", "0.6"]))
    assert (beams["num_beams"], beams["length_penalty"], beams["do_sample"]) == (3, 0.6, False)


def test_cli_sampling_defaults_are_the_documented_ones():
    """README's generate section: temperature 0.8, no top-k, top-p, min-p, typical, epsilon or eta."""
    from minigpt.generate_cli import build_parser

    args = build_parser().parse_args([])
    assert (args.temperature, args.top_k, args.top_p, args.min_p, args.typical_p, args.epsilon_cutoff,
            args.eta_cutoff) == (0.8, 0, 1.0, 0.0, 1.0, 0.0, 0.0)


def test_cli_seed_makes_a_sampled_text_reproducible(tiny_checkpoint, capsys):
    from minigpt.generate_cli import main

    argv = ["--model", str(tiny_checkpoint), "--prompt", "To be", "--max-new-tokens", "24", "--temperature", "1.5",
            "--seed", "3"]
    texts = []
    for global_seed in (0, 1):  # another global RNG state each time: only --seed can make them agree
        torch.manual_seed(global_seed)
        assert main(argv) == 0
        texts.append(capsys.readouterr().out)
    assert texts[0] == texts[1]


def test_cli_stop_string_ends_the_printed_text(tiny_checkpoint, capsys):
    from minigpt.generate_cli import main

    base = ["--model", str(tiny_checkpoint), "--prompt", "To be", "--max-new-tokens", "30", "--temperature", "0"]
    assert main(base) == 0
    full = capsys.readouterr().out
    new = full[full.index("To be") + len("To be"):]
    stop = new.strip()[4:6]  # two characters from inside the greedy text
    assert len(stop) == 2 and "\\" not in stop
    assert main(base + ["--stop", stop]) == 0
    cut = capsys.readouterr().out
    assert len(cut) < len(full) and stop not in cut[cut.index("To be") + len("To be"):]
    # An empty one is named in the flag's words, not as generate's Python list ['a', ''] (a stream audit).
    assert main(base + ["--stop", stop, "--stop", ""]) == 2
    assert "--stop '' is empty: a stop string needs at least one character (--stop number 2 of 2)" in capsys.readouterr().err


def test_switches_must_be_bools_and_sampling_parameters_no_bools(pair):
    """An API audit: flags were read by truthiness (do_sample="False" sampled, compile="yes"
    compiled, truncate_left="no" truncated), True passed for a temperature or top_p of 1 (where
    top_k=True was refused), and generate(ids, model) failed as "'Tensor' object has no attribute
    'training'" before the model was checked."""
    from minigpt import generate_texts
    from minigpt.sampling import sample

    model, _ = pair
    ids = torch.tensor([[5, 17]])
    for flag, value in (("do_sample", "False"), ("compile", "yes"), ("return_stats", "no")):
        with pytest.raises(TypeError, match=f"^{flag} must be True or False, got '{value}'"):
            generate(model, ids, max_new_tokens=2, **{flag: value})
    with pytest.raises(TypeError, match="^truncate_left must be True or False, got 'no'"):
        generate_texts(model, ByteTokenizer(), ["hi"], truncate_left="no")
    for name in ("temperature", "top_p", "min_p", "repetition_penalty"):
        with pytest.raises(TypeError, match=f"^{name} must be a number, got the bool True"):
            generate(model, ids, max_new_tokens=2, do_sample=True, **{name: True})
    with pytest.raises(TypeError, match="^temperature must be a number, got the bool"):
        sample(torch.zeros(2, 5), temperature=torch.tensor([True, False]))
    with pytest.raises(TypeError, match="^minigpt.generate takes a minigpt GPT, got Tensor"):
        generate(ids, model)
    assert generate(model, ids, max_new_tokens=2, do_sample=np.bool_(False)).shape == (1, 4)  # NumPy's bool is one


def test_cli_explain_errors_name_its_flags_and_offer_no_slide(tiny_checkpoint, capsys):
    """An audit: `--explain --max-new-tokens 0` said "steps and top must be ≥ 1, got steps=0, top=5"
    (explain's arguments, no flags), and a --max-new-tokens past the context advised --slide, which
    --explain refuses."""
    from minigpt.generate_cli import main

    for n in ("0", "-1"):
        assert main(["--model", str(tiny_checkpoint), "--explain", "--max-new-tokens", n]) == 2
        err = capsys.readouterr().err
        assert f"--max-new-tokens must be ≥ 1, got {n}" in err and "steps" not in err and "top" not in err
    assert main(["--model", str(tiny_checkpoint), "--prompt", "To be", "--explain", "--max-new-tokens", "500"]) == 2
    err = capsys.readouterr().err
    assert "--max-new-tokens 500 leaves no room for a prompt" in err and "--slide" not in err


def test_cli_eos_warning_names_generation_config_json_where_the_ids_come_from(tiny_checkpoint, tmp_path, capsys):
    """An audit: config.json named the EOS, but a generation_config.json without it (whose ids are
    read over config.json's, as transformers reads them) left the model none, and the warning told
    the user to fix config.json."""
    from minigpt.generate_cli import main

    model = tmp_path / "model"
    shutil.copytree(tiny_checkpoint, model)
    assert json.loads((model / "config.json").read_text())["eos_token_id"] == 279
    (model / "generation_config.json").write_text(json.dumps({"pad_token_id": 279}))
    assert main(["--model", str(model), "--prompt", "To be", "--max-new-tokens", "2", "--temperature", "0"]) == 0
    assert (f"warning: {model}/generation_config.json names no EOS (eos_token_id null or left out; the ids come from "
            "it, not config.json); using the tokenizer's (279). Set eos_token_id and bos_token_id in "
            "generation_config.json to silence this") in capsys.readouterr().err


def test_generate_and_the_text_functions_show_streams_arguments_in_their_signature():
    """An audit: help() and Jupyter's Shift-Tab showed `(…, **kwargs)` for generate and the text
    functions, whose docstrings said "see `stream` for every argument". Their signatures now list
    stream's keyword arguments, with its defaults; generate_texts leaves out the streamer it refuses,
    stream_text the options of several sequences (test_stream_text_shows_no_option_it_refuses...)."""
    import inspect

    streams = {name: p for name, p in inspect.signature(stream).parameters.items() if p.kind is p.KEYWORD_ONLY}
    refused = {generate: set(), generate_text: set(), generate_texts: {"streamer"},
               stream_text: {"num_beams", "num_return_sequences", "return_scores", "length_penalty", "early_stopping"}}
    for f in (generate, generate_text, generate_texts, stream_text):
        params = inspect.signature(f).parameters
        assert not any(p.kind is p.VAR_KEYWORD for p in params.values()), f.__name__
        # The text functions take the tokenizer themselves, second and positional.
        passed_on = streams.keys() - ({"tokenizer"} if f is not generate else set()) - refused[f]
        assert all(params[name].kind is params[name].KEYWORD_ONLY and params[name].default == streams[name].default
                   for name in passed_on), f.__name__
    assert list(inspect.signature(generate_text).parameters)[:3] == ["model", "tokenizer", "prompt"]
    assert "streamer" not in inspect.signature(generate_texts).parameters
    assert inspect.signature(generate_texts).parameters["batch_size"].default == 8  # its own arguments stay


@pytest.mark.parametrize("call", ["generate", "generate_text", "generate_texts", "stream_text"])
def test_an_unknown_keyword_in_kwargs_names_the_function_called_and_the_closest_name(pair, call):
    """An audit: generate(m, x, max_new_token=5) said "stream() got an unexpected keyword argument",
    naming a function the caller never called, and no fix. The function called is named, with the
    closest valid name; a name close to none points to help()."""
    model, _ = pair
    f = {"generate": generate, "generate_text": generate_text, "generate_texts": generate_texts,
         "stream_text": stream_text}[call]
    args = (model, torch.tensor([PROMPTS[0]])) if f is generate else \
        (model, ByteTokenizer(), ["hi"] if f is generate_texts else "hi")
    with pytest.raises(TypeError, match=rf"^{call}\(\) got an unexpected keyword argument 'max_new_token'; "
                                        r"did you mean 'max_new_tokens'\?$"):
        f(*args, max_new_token=5)
    with pytest.raises(TypeError, match=rf"^{call}\(\) got an unexpected keyword argument 'zzz'; see help\({call}\)"):
        f(*args, zzz=5)
    if f is not generate:  # a review: stream's positional input_ids, which a text function passes itself, got
        # "stream() got multiple values for argument 'input_ids'"
        with pytest.raises(TypeError, match=rf"^{call}\(\) got an unexpected keyword argument 'input_ids'"):
            f(*args, input_ids=torch.tensor([PROMPTS[0]]))


@pytest.mark.parametrize("name, hint", [
    ("stop_strings", r"minigpt's is 'stop' \(with tokenizer=, as transformers' stop_strings\)$"),
    ("max_length", r"minigpt's is 'max_new_tokens', which counts the new tokens alone \(transformers' max_length counts "
                   r"the prompt's too\)$"),
    ("min_length", r"minigpt's is 'min_new_tokens', which counts the new tokens alone"),
    ("output_scores", r"minigpt's is 'return_scores': with beam search, each returned beam's score"),
    ("return_dict_in_generate", r"minigpt returns a tuple instead: 'return_scores' adds beam search's scores"),
    ("generator", r"minigpt's is 'seed'"),  # difflib's guess was 'temperature'
    ("begin_suppress_tokens", r"that is transformers' option, which minigpt does not have: see help\(generate\)"),
])
def test_a_transformers_keyword_names_minigpts_own(pair, name, hint):
    """An audit: README says the argument names are transformers.generate's, but stop_strings=["x"]
    and max_length=10 got "see help(generate) for every argument" (difflib finds no name close),
    and begin_suppress_tokens a wrong guess ('min_new_tokens'). transformers' names that minigpt
    spells otherwise now name minigpt's; those it has no option for say so."""
    model, _ = pair
    with pytest.raises(TypeError, match=rf"^generate\(\) got an unexpected keyword argument '{name}'; {hint}"):
        generate(model, torch.tensor([PROMPTS[0]]), **{name: 1})


def test_every_transformers_option_minigpt_lacks_is_named_not_guessed(pair):
    """A review: difflib guessed wrong for many of transformers' names (bos_token_id → 'eos_token_id',
    top_h → 'top_p', output_attentions → 'attention_mask'), and stream_text was told to pass
    return_scores, which it refuses. transformers is the oracle: each of its generate options that
    minigpt's generate does not take names minigpt's equivalent or says minigpt has none (a name
    missing from generation.py's TRANSFORMERS_ONLY, as transformers grows, fails here)."""
    import inspect

    from transformers import GenerationConfig

    model, tok = pair
    # GenerationConfig's fields (less its bookkeeping) and generate's own arguments beside them.
    options = set(GenerationConfig().to_dict()) - {"_from_model_config", "transformers_version"} | {
        "streamer", "stopping_criteria", "logits_processor", "prefix_allowed_tokens_fn", "synced_gpus",
        "assistant_model", "assistant_tokenizer", "negative_prompt_ids", "negative_prompt_attention_mask",
        "custom_generate", "generation_config", "use_model_defaults"}
    guessed = []
    for name in sorted(options - set(inspect.signature(generate).parameters)):
        with pytest.raises(TypeError, match=rf"^generate\(\) got an unexpected keyword argument '{name}'; ") as caught:
            generate(model, torch.tensor([PROMPTS[0]]), **{name: 1})
        if not re.search(r"; (minigpt's is '|minigpt returns |that is transformers' option, which minigpt does not have)",
                         str(caught.value)):
            guessed.append(name)
    assert not guessed, f"add to generation.py's TRANSFORMERS_ONLY: {guessed}"
    # An equivalent that the function called turns down is not offered.
    for name in ("output_scores", "return_dict_in_generate"):
        with pytest.raises(TypeError, match=rf"^stream_text\(\) got an unexpected keyword argument '{name}'; that is "
                                            r"transformers' option, which stream_text does not have: see help\(stream_text\)"):
            stream_text(model, tok, "hi", **{name: True})
    with pytest.raises(TypeError, match=r"'output_scores'; minigpt's is 'return_scores'"):
        generate_text(model, tok, "hi", output_scores=True)


def test_a_nanogpt_file_prompt_is_warned_about(tiny_checkpoint, tmp_path, monkeypatch, capsys):
    """An audit: nanoGPT's sample.py reads --start=FILE:prompt.txt from the file; minigpt's --prompt
    "FILE:prompt.txt" generated from those 15 characters without a word. Where the file exists, a
    warning names --prompt-file (the text is still what was typed)."""
    from minigpt.generate_cli import main

    monkeypatch.chdir(tmp_path)
    base = ["--model", str(tiny_checkpoint), "--max-new-tokens", "1", "--temperature", "0"]
    assert main([*base, "--prompt", "FILE:prompt.txt"]) == 0  # no such file: plain text, no warning
    assert "warning" not in capsys.readouterr().err
    (tmp_path / "prompt.txt").write_text("To be")
    assert main([*base, "--prompt", "FILE:prompt.txt"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("FILE:prompt.txt")
    assert ("minigpt generate: warning: --prompt 'FILE:prompt.txt' is the text itself; to read prompt.txt, pass "
            "--prompt-file prompt.txt") in err


# ---- static types of the public API (checked at run time: no type checker in the suite) ----

def test_stream_options_are_streams_keyword_arguments():
    """An audit: `takes_stream_arguments` was typed `Callable[[Callable], Callable]`, so pyright and
    mypy saw generate and the text functions as `(...) -> Unknown`, and a misspelt keyword passed
    unseen. Their `**kwargs: Unpack[StreamOptions]` now names stream's keywords: it must stay equal
    to stream's signature (less the ones each overload names itself)."""
    from minigpt.generation import StreamOptions

    keywords = {p.name: p.annotation for p in inspect.signature(stream).parameters.values() if p.kind is p.KEYWORD_ONLY}
    named = {"tokenizer", "return_scores", "return_stats"}
    assert set(StreamOptions.__annotations__) == keywords.keys() - named
    hints = typing.get_type_hints(StreamOptions)
    assert all(hints[name] == typing.get_type_hints(stream)[name] for name in StreamOptions.__annotations__)


def result_type(x) -> str:
    """A result's type, written as the overloads write it: "tuple[torch.Tensor, GenerationStats]"."""
    if isinstance(x, tuple):
        return "tuple[" + ", ".join(map(result_type, x)) + "]"
    if isinstance(x, list):
        return f"list[{result_type(x[0])}]"
    return {torch.Tensor: "torch.Tensor"}.get(type(x), type(x).__name__)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="typing.get_overloads is Python 3.11's")
@pytest.mark.parametrize("name", ["generate", "generate_text", "generate_texts", "stream_text"])
def test_each_overload_restates_its_function_and_types_what_it_returns(name):
    """An audit: the results were typed as unions (`Tensor | tuple`), so README's `ids[:, T:]` needed a
    cast, and `stream_text` was an `Iterator[str]` that returns a value. The overloads give each
    return_scores / return_stats pair its result type: checked here against what each call returns,
    and (a review) each overload's other parameters against the function's own, so they cannot drift."""
    import minigpt.text_generation
    from minigpt.generation import run_to_end
    from minigpt.tokenizer import GPT2_DIR

    f = getattr(minigpt.text_generation, name, None) or generate
    decides = {"return_scores", "return_stats", "tokenizer", "kwargs"}
    own = [p for p in inspect.signature(f.__wrapped__).parameters.values() if p.name not in decides]
    model = GPT(GPTConfig(n_layer=1, n_embd=32, n_head=2, n_positions=64)).eval()
    tok, ids = Tokenizer.from_pretrained(GPT2_DIR), torch.tensor([[464, 3290]])
    call = {"generate": lambda **kw: generate(model, ids, **kw),
            "generate_text": lambda **kw: minigpt.text_generation.generate_text(model, tok, "The", **kw),
            "generate_texts": lambda **kw: minigpt.text_generation.generate_texts(model, tok, ["The", "A"], **kw),
            "stream_text": lambda **kw: run_to_end(minigpt.text_generation.stream_text(model, tok, "The", **kw))}[name]
    *typed, fallback = typing.get_overloads(f)
    assert fallback.__annotations__["return_stats"] == "bool"  # the last: flags known only at run time
    for overload in typing.get_overloads(f):
        assert [p for p in inspect.signature(overload).parameters.values() if p.name not in decides] == own
    for overload in typed:
        flags = {k: v == "Literal[True]" for k, v in overload.__annotations__.items() if k.startswith("return_")}
        beams = dict(num_beams=2, num_return_sequences=2) if name != "stream_text" else {}
        got = result_type(call(max_new_tokens=3, **beams, **flags))
        declared = overload.__annotations__["return"]
        assert (f"Generator[str, None, {got}]" if name == "stream_text" else got) == declared, (flags, declared)


@torch.no_grad()
def test_beam_search_where_every_id_is_an_eos_ends_each_prompt_at_its_first_token():
    """A generation audit: with a vocabulary whose every id is an EOS (V=3, eos [0, 1, 2]) beam search
    asked topk for more candidates than the K·V there are: "selected index k out of range" from
    torch (transformers fails the same way). Every candidate ends: each prompt's best one is returned."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=3, n_positions=16, n_embd=16, n_layer=1, n_head=2)).eval()
    ids = torch.tensor([[0, 1], [2, 2]])
    out, scores = generate(model, ids, max_new_tokens=3, num_beams=4, num_return_sequences=2, eos_token_id=[0, 1, 2],
                           return_scores=True)
    assert out.shape == (4, 3) and torch.equal(out[:, :2], ids.repeat_interleave(2, 0))
    logp = model(ids)[0][:, -1].log_softmax(-1)  # one token each: a hypothesis's score is its token's log-probability
    torch.testing.assert_close(scores, logp.topk(2, -1).values.flatten())
    assert torch.equal(out[:, 2], logp.topk(2, -1).indices.flatten())
    # More sequences than the 3 one-token hypotheses there are: a reason, not an empty one (a review).
    with pytest.raises(FloatingPointError, match="found fewer than 4 hypotheses for prompt 0: fewer than 4 distinct "
                                                 "hypotheses could be made before every beam ended"):
        generate(model, ids, max_new_tokens=3, num_beams=4, num_return_sequences=4, eos_token_id=[0, 1, 2])


@torch.no_grad()
def test_explain_labels_byte_tokens_apart_and_counts_only_real_tokens(gpt2_tok):
    """A teaching-view audit: (1) tokens holding part of a UTF-8 character all showed as '�' (😀 is
    two such tokens); (2) a vocabulary padded past the tokenizer's (nanoGPT's 50,304) read "50257 of
    50304 tokens kept" with no filter on; (3) the stage names rounded (top-p 0.9999999 read "top-p 1",
    an active filter shown as off) and a long one ran into its neighbour ("penaltiestemperature 0.125")."""
    import io

    from minigpt.explain import explain, token_label

    assert gpt2_tok.encode("😀") == [47249, 222]
    assert [token_label(gpt2_tok, i) for i in (47249, 222)] == [r"b'\xf0\x9f\x98'", r"b'\x80'"]
    assert token_label(gpt2_tok, gpt2_tok.encode(" hi")[0]) == "' hi'" and token_label(gpt2_tok, 222) != token_label(gpt2_tok, 223)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50304, n_positions=16, n_embd=16, n_layer=1, n_head=2,
                          eos_token_id=50256, bos_token_id=50256)).eval()
    printed = io.StringIO()
    explain(model, gpt2_tok, "Hi", steps=1, seed=0, temperature=0.125, top_p=0.9999999, out=printed)
    step, header = printed.getvalue().split("\n")[1:3]
    assert "of 50257 tokens kept (47 ids of the model's 50304 are no token, never drawn)" in step, step
    assert header.split() == ["token", "raw", "penalties", "temperature", "0.125", "top-k", "0", "top-p", "0.9999999",
                              "min-p", "0.0"], header
    rows = printed.getvalue().split("\n")[3:8]
    assert all(len(row) == len(header) for row in rows), [header, *rows]  # each name above its numbers (a review)
    # More candidates asked for than the tokenizer has: the ids that are no token are not rows (a review: decode failed).
    tok = Tokenizer.train("First Citizen: before we proceed any further, hear me speak. " * 20, 265, progress=False)
    small = GPT(GPTConfig(vocab_size=320, n_positions=16, n_embd=16, n_layer=1, n_head=2, eos_token_id=264,
                          bos_token_id=264)).eval()
    printed = io.StringIO()
    explain(small, tok, "Fi", steps=1, seed=0, top=300, top_k=3, out=printed)
    assert len(printed.getvalue().splitlines()) == 3 + 265  # a blank line, the step, the header, then a row per token
    # A mutation audit: the rest pinned. The token that is "�" itself reads so, not as its bytes, and another
    # library's tokenizer (no decode_bytes) is read by its text; each stage's name keeps its value whole; a kept
    # token whose probability rounds to 0 reads 0.0000, and '-' is for a dropped one alone.
    from transformers import GPT2TokenizerFast

    from minigpt.tokenizer import GPT2_DIR

    assert token_label(gpt2_tok, 4210) == "'\ufffd'" == token_label(GPT2TokenizerFast.from_pretrained(GPT2_DIR), 47249)
    small = GPT(GPTConfig(vocab_size=265, n_positions=16, n_embd=16, n_layer=1, n_head=2, eos_token_id=264,
                          bos_token_id=264)).eval()
    printed = io.StringIO()
    explain(small, tok, "Fi", steps=1, seed=0, temperature=0.9999999, typical_p=0.9999999, top=1, out=printed)
    assert "temperature 0.9999999" in printed.getvalue() and "typical 0.9999999" in printed.getvalue()
    printed = io.StringIO()
    explain(small, tok, "Fi", steps=1, seed=0, temperature=1e-6, top=3, out=printed)
    step, _, *rows = printed.getvalue().strip("\n").split("\n")
    assert "265 of 265 tokens kept" in step and rows[1].split()[-4:] == ["0.0000"] * 4, rows
