"""One integer check (minigpt/checks.py's `as_count`) behind every public integer argument: the
same slip, a bool, a float or a string where an integer goes, is the same TypeError everywhere,
naming the argument."""
import re

import numpy as np
import pytest
import torch

from minigpt import GPT, GPTConfig, Tokenizer, generate
from minigpt.checks import as_count, check_rate
from minigpt.classifier import GPTClassifier
from minigpt.evaluate import perplexity
from minigpt.explain import explain
from minigpt.finetune import apply_strategy
from minigpt.lora import inject_lora
from minigpt.sampling import ban_repeated_ngrams, sample
from minigpt.train_config import TrainConfig

SMALL = dict(vocab_size=300, n_positions=16, n_embd=16, n_layer=1, n_head=2, bos_token_id=0, eos_token_id=0)


def _model() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(**SMALL)).eval()


def _tok() -> Tokenizer:
    return Tokenizer.train("hello world, hello there", vocab_size=260, special_tokens=[], progress=False)


PROMPT = torch.tensor([[1, 2, 3]])

# (the argument's name in the error, a call that passes `v` for it)
ENTRY_POINTS = [
    ("n_layer", lambda v: GPTConfig(**{**SMALL, "n_layer": v})),
    ("bos_token_id", lambda v: GPTConfig(**{**SMALL, "bos_token_id": v})),
    ("batch_size", lambda v: TrainConfig(batch_size=v)),
    ("rank", lambda v: inject_lora(_model(), rank=v)),
    ("n_trainable_blocks", lambda v: apply_strategy(_model(), "partial", n_trainable_blocks=v)),
    ("num_labels", lambda v: GPTClassifier(_model(), v)),
    ("pad_token_id", lambda v: GPTClassifier(_model(), 2, pad_token_id=v)),
    ("no_repeat_ngram_size", lambda v: ban_repeated_ngrams(torch.zeros(1, 10), PROMPT, v)),
    ("no_repeat_ngram_size", lambda v: generate(_model(), PROMPT, max_new_tokens=1, no_repeat_ngram_size=v)),
    ("max_new_tokens", lambda v: generate(_model(), PROMPT, max_new_tokens=v)),
    ("num_beams", lambda v: generate(_model(), PROMPT, max_new_tokens=1, num_beams=v)),
    ("pad_token_id", lambda v: generate(_model(), PROMPT, max_new_tokens=1, pad_token_id=v)),
    ("seed", lambda v: sample(torch.zeros(1, 10), seed=v)),
    ("steps", lambda v: explain(_model(), None, [1, 2], steps=v)),
    ("max_length", lambda v: perplexity(_model(), torch.arange(20), max_length=v)),
    ("vocab_size", lambda v: Tokenizer.train("some text", vocab_size=v, progress=False)),
    ("pad_token_id", lambda v: setattr(_tok(), "pad_token_id", v)),
    ("model_max_length", lambda v: setattr(_tok(), "model_max_length", v)),
    ("max_length", lambda v: _tok()(["hello"], truncation=True, max_length=v)),
    ("num_workers", lambda v: _tok().encode_batch(["hello"], num_workers=v)),
]


@pytest.mark.parametrize("value", [True, 2.0, "2"])
@pytest.mark.parametrize("name, call", ENTRY_POINTS, ids=[f"{name}-{i}" for i, (name, _) in enumerate(ENTRY_POINTS)])
def test_an_integer_argument_of_another_type_is_a_type_error_naming_it(name, call, value):
    """Before: GPTConfig(n_layer=2.0), GPTClassifier(num_labels=2.0) and ban_repeated_ngrams(n=2.0)
    were ValueErrors while TrainConfig(batch_size=2.0), inject_lora(rank=2.0) and generate's
    no_repeat_ngram_size=2.0 were TypeErrors: one slip, two exception types."""
    with pytest.raises(TypeError, match=rf"{name}\b.* must be an integer"):
        call(value)


@pytest.mark.parametrize("value", [True, "2"])
def test_top_k_refuses_a_bool_or_a_string_as_a_type_error(value):
    """top_k is the one count that takes a whole float (2.0, as transformers does), but a bool is
    a TypeError as for every other integer argument."""
    with pytest.raises(TypeError, match="top_k must be"):
        sample(torch.zeros(1, 10), top_k=value)


def test_as_count_takes_integers_of_every_kind_as_plain_ints():
    for value in (2, np.int64(2), torch.tensor(2), torch.tensor([2])):
        got = as_count("n", value)
        assert got == 2 and type(got) is int
    for value in (torch.tensor(True), np.True_, np.array(True)):
        with pytest.raises(TypeError, match=re.escape("n must be an integer, got the bool")):
            as_count("n", value)
    with pytest.raises(TypeError, match="n must be an integer, got None"):
        as_count("n", None)


def test_a_0d_tensor_ngram_size_is_taken_by_generate_and_ban_repeated_ngrams_alike():
    """generate(no_repeat_ngram_size=torch.tensor(2)) was accepted while ban_repeated_ngrams(n=
    torch.tensor(2)) was refused: both take it now, as the int it holds."""
    logits, ids = torch.zeros(1, 10), torch.tensor([[1, 2, 1]])
    assert torch.equal(ban_repeated_ngrams(logits, ids, torch.tensor(2)), ban_repeated_ngrams(logits, ids, 2))
    assert ban_repeated_ngrams(logits, ids, torch.tensor(2))[0, 2] == float("-inf")  # 1 → 2 seen: 2 banned after 1
    model = _model()
    assert torch.equal(generate(model, PROMPT, max_new_tokens=4, no_repeat_ngram_size=torch.tensor(2)),
                       generate(model, PROMPT, max_new_tokens=4, no_repeat_ngram_size=2))


# (the rate's name in the error, a call that passes `v` for it): the four places a dropout rate comes in
RATE_ENTRY_POINTS = [
    ("dropout", lambda v: GPTConfig(**{**SMALL, "dropout": v})),
    ("dropout", lambda v: _model().set_dropout(v)),
    ("dropout", lambda v: TrainConfig(dropout=v)),
    ("LoRA dropout", lambda v: inject_lora(_model(), dropout=v)),
]
RATE_IDS = ["GPTConfig", "set_dropout", "TrainConfig", "LoRA"]


@pytest.mark.parametrize("value", ["0.1", True, torch.tensor(0.1)], ids=["str", "bool", "tensor"])
@pytest.mark.parametrize("name, call", RATE_ENTRY_POINTS, ids=RATE_IDS)
def test_a_dropout_rate_of_another_type_is_the_same_type_error_everywhere(name, call, value):
    """An audit: the rule "a dropout rate is a number in [0, 1)" was written four times, and the
    same slip got different answers: GPTConfig(dropout="0.1") and set_dropout("0.1") a ValueError,
    LoRA's a TypeError, TrainConfig's Python's own "'<=' not supported" that named no argument (and
    TrainConfig took a tensor, True as out of range). One `check_rate` answers them all alike,
    naming the rate."""
    with pytest.raises(TypeError, match=rf"^{name} must be a number, got "):
        call(value)


@pytest.mark.parametrize("value", [1.0, -0.1, float("nan")])
@pytest.mark.parametrize("name, call", RATE_ENTRY_POINTS, ids=RATE_IDS)
def test_a_dropout_rate_out_of_range_is_the_same_value_error_everywhere(name, call, value):
    """The other half of `check_rate`: out of [0, 1) (NaN too, which fails every comparison) is a
    ValueError naming the rate and the range, wherever the rate comes in."""
    with pytest.raises(ValueError, match=rf"^{name} must be in \[0, 1\), got {value!r}$"):
        call(value)


def test_check_rate_takes_a_real_number_of_every_kind():
    for value in (0, 0.0, 0.5, np.float32(0.25), np.float64(0.999)):
        check_rate("dropout", value)


def test_first_few_names_the_first_five_then_says_how_many_more():
    """A reread: "the first N names" was built five ways (checkpoint.py's " ..." and ", ...",
    which never said how many were left out, or nothing at all; classify_data.py's own _first_few).
    One helper now, checks.first_few: the first n, then "... and N more"."""
    from minigpt.checks import first_few

    assert first_few(list("abcdefg")) == "a, b, c, d, e, ... and 2 more"
    assert first_few(list("abcde")) == "a, b, c, d, e"  # five are all named: nothing more to say
    assert first_few([3, 1, 4, 1], n=2) == "3, 1, ... and 2 more"  # str() of each: ints too


def test_first_few_quotes_names_a_user_would_copy_and_says_none_for_none():
    """A review: first_few's callers quoted the names themselves, each its own way (`[{first_few(
    list(map(repr, xs)))}]` in brackets, tokenizer_files' three without), and checkpoint.py not at
    all. `quoted` repr()s each name, and no names read "none": "missing none, unexpected 'x'", where
    an empty list had left "missing , unexpected"."""
    from minigpt.checks import first_few

    assert first_few(["gpt.score.weight", "very good"], quoted=True) == "'gpt.score.weight', 'very good'"
    assert first_few(list("abcdef"), quoted=True) == "'a', 'b', 'c', 'd', 'e', ... and 1 more"
    assert first_few([2, 3], quoted=True) == "2, 3"  # class ids as they are written
    assert first_few([]) == first_few([], quoted=True) == "none"
