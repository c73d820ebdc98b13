"""GPT-2 parity with `transformers`: the oracle is GPT2LMHeadModel with random weights.

Real GPT-2 weights cannot be downloaded here, so HF builds a model from a config, saves it with
`save_pretrained`, and minigpt must load it and produce the same logits and loss (and the other
way round). Random weights give small logits (|logit| ~ 1), so the printed max |Δ| is also shown
relative to the largest logit.
"""
from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from transformers import GPT2Config, GPT2LMHeadModel

from minigpt import GPT, GPTConfig, generate
from minigpt.config import PRESETS
from minigpt.finetune import apply_strategy
from minigpt.lora import LoRALinear, inject_lora
from minigpt.model import Block

# Bounds on max |Δ logits| in fp32 (the issue asked for 1e-4; that is too loose to prove anything:
# nanoGPT's exact-erf GELU instead of GPT-2's tanh one moves the small model's logits by 1.7e-5).
# Measured: 3e-7 for the small model (|logit| ~ 1), 4.7e-6 for 124M at T=1024; ~6x margin each.
TOL_FP32 = 2e-6
TOL_FP32_124M = 3e-5


def hf_config(**kw) -> GPT2Config:
    """An HF GPT-2 config with dropout off, so both models are deterministic."""
    return GPT2Config(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **kw)


SMALL = dict(vocab_size=1000, n_positions=128, n_embd=64, n_layer=2, n_head=4, bos_token_id=999, eos_token_id=999)


def build_pair(tmp_path_factory, name: str, **config):
    """(HF model, its save_pretrained directory, minigpt model loaded from that directory).

    HF's init leaves every LayerNorm at gain 1, bias 0, which could not tell ln_1 from ln_2 (or a
    lost bias): they are drawn at random here, as trained weights would have them."""
    torch.manual_seed(0)
    hf = GPT2LMHeadModel(hf_config(**config)).eval()
    with torch.no_grad():
        for module in hf.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.normal_(1.0, 0.3)
                module.bias.normal_(0.0, 0.3)
    path = tmp_path_factory.mktemp(name)
    hf.save_pretrained(path)
    return hf, path, GPT.from_pretrained(path)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return build_pair(tmp_path_factory, "small", **SMALL)


@pytest.fixture(scope="module")
def gpt2_124m(tmp_path_factory):
    return build_pair(tmp_path_factory, "gpt2")  # GPT2Config() defaults are the 124M gpt2


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


@torch.no_grad()
def test_layer_norm_epsilon_is_the_configs(tmp_path_factory):
    """Mutant (an audit): a LayerNorm built without config.layer_norm_epsilon (torch's default
    1e-5, which GPT-2's is too) passed every parity test; at 0.1 the logits move by ~0.6."""
    hf, _, ours = build_pair(tmp_path_factory, "eps", **SMALL, layer_norm_epsilon=0.1)
    idx = torch.randint(0, SMALL["vocab_size"], (2, 17), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(ours(idx)[0], hf(idx).logits, atol=TOL_FP32)


@torch.no_grad()
@pytest.mark.parametrize("name", ["gelu_accurate", "gelu_python_tanh"])
def test_other_names_of_the_tanh_gelu_load_as_it(tmp_path_factory, name):
    """Audits: activation_function "gelu_accurate" (and later "gelu_python_tanh") was refused, though
    transformers computes it bitwise as gelu_new, GPT-2's tanh GELU (checked here, in case a version
    changes that). An untied LM head stays refused (test_checkpoint's test_config_that_is_not_gpt2)."""
    from transformers.activations import ACT2FN

    x = torch.linspace(-30, 30, 200_001)
    for dtype in (torch.float32, torch.bfloat16):
        assert torch.equal(ACT2FN[name](x.to(dtype)), ACT2FN["gelu_new"](x.to(dtype)))
    hf, _, ours = build_pair(tmp_path_factory, name, **SMALL, activation_function=name)
    idx = torch.randint(0, SMALL["vocab_size"], (3, 17), generator=torch.Generator().manual_seed(0))
    assert max_diff(ours(idx)[0], hf(idx).logits) <= TOL_FP32


@pytest.mark.parametrize("B,T", [(1, 1), (3, 17), (2, 128)])  # 128 = the small model's full context
def test_small_logits_match_hf(small, B, T):
    hf, _, ours = small
    idx = torch.randint(0, SMALL["vocab_size"], (B, T), generator=torch.Generator().manual_seed(T))
    ref = hf(idx).logits
    logits, loss = ours(idx)
    assert loss is None and logits.shape == ref.shape == (B, T, SMALL["vocab_size"])
    d = max_diff(logits, ref)
    print(f"small B={B} T={T}: max|Δ logits| = {d:.2e} (max|logit| = {ref.abs().max():.2f})")
    assert d <= TOL_FP32


@torch.no_grad()
def test_124m_full_context_logits_and_loss_match_hf(gpt2_124m):
    hf, _, ours = gpt2_124m
    T = 1024  # the full context
    idx = torch.randint(0, 50257, (1, T), generator=torch.Generator().manual_seed(1))
    out = hf(idx, labels=idx)
    # HF shifts labels inside; minigpt takes the already-shifted next tokens (last one has none).
    targets = torch.cat([idx[:, 1:], torch.full((1, 1), -100)], dim=1)
    logits, loss = ours(idx, targets)
    d, dl = max_diff(logits, out.logits), abs(loss.item() - out.loss.item())
    print(f"gpt2 124M T={T}: max|Δ logits| = {d:.2e} (max|logit| = {out.logits.abs().max():.2f}), "
          f"|Δ loss| = {dl:.2e} (loss = {loss.item():.4f})")
    assert d <= TOL_FP32_124M
    assert dl <= 1e-5


@torch.no_grad()
def test_logits_to_keep_is_the_last_positions_of_the_full_logits(small):
    """generate's prefill asks for the last position only (logits_to_keep=1): it must be exactly
    that slice of the full forward (up to matmul rounding: the head runs on fewer rows)."""
    _, _, ours = small
    idx = torch.randint(0, SMALL["vocab_size"], (2, 20), generator=torch.Generator().manual_seed(6))
    full, _ = ours(idx)
    for k in (1, 5, 20):
        kept, _ = ours(idx, logits_to_keep=k)
        d = max_diff(kept, full[:, -k:])
        print(f"logits_to_keep={k}: max|Δ| = {d:.2e}")
        assert kept.shape == (2, k, SMALL["vocab_size"]) and d <= 1e-6, k
    with pytest.raises(ValueError, match="logits_to_keep must be ≥ 0"):  # x[:, 2:] of T positions, silently
        ours(idx, logits_to_keep=-2)


@torch.no_grad()
def test_loss_with_ignored_labels_matches_hf(small):
    hf, _, ours = small
    g = torch.Generator().manual_seed(2)
    idx = torch.randint(0, SMALL["vocab_size"], (4, 33), generator=g)
    labels = idx.clone()
    labels[torch.rand(labels.shape, generator=g) < 0.3] = -100  # e.g. padding or prompt tokens
    ref = hf(idx, labels=labels).loss
    targets = torch.cat([labels[:, 1:], torch.full((4, 1), -100)], dim=1)
    _, loss = ours(idx, targets)
    print(f"loss with -100 labels: ours {loss.item():.6f} HF {ref.item():.6f}")
    assert abs(loss.item() - ref.item()) <= 1e-5


@torch.no_grad()
def test_hf_loads_what_minigpt_saves(small, tmp_path):
    """The round trip HF → minigpt → HF gives transformers its own model back: bit-identical
    weights, the LM head tied to wte, and a config that makes the same forward pass (torch.equal
    logits). The small config proves what the 124M one did here, in a fraction of its time."""
    hf, _, ours = small
    ours.save_pretrained(tmp_path)
    reloaded = GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    ref_state = hf.state_dict()
    for name, t in reloaded.state_dict().items():
        assert torch.equal(t, ref_state[name]), name
    assert reloaded.lm_head.weight.data_ptr() == reloaded.transformer.wte.weight.data_ptr()
    idx = torch.randint(0, SMALL["vocab_size"], (2, 128), generator=torch.Generator().manual_seed(3))
    logits = reloaded(idx).logits
    assert torch.equal(logits, hf(idx).logits)
    d = max_diff(logits, ours(idx)[0])
    print(f"minigpt save → HF load: max|Δ logits| = {d:.2e} against minigpt's own")
    assert d <= TOL_FP32


def test_num_params_gpt2_preset():
    with torch.device("meta"):  # shapes only: counting needs no memory
        assert GPT(GPTConfig.gpt2("gpt2")).num_params() == 124_439_808


@pytest.mark.parametrize("name", ["gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"])
def test_num_params_match_hf_for_every_size(name):
    p = PRESETS[name]
    with torch.device("meta"):
        ours = GPT(GPTConfig.gpt2(name)).num_params()
        ref = GPT2LMHeadModel(hf_config(n_layer=p["n_layer"], n_head=p["n_head"], n_embd=p["n_embd"])).num_parameters()
    print(f"{name}: {ours:,} parameters")
    assert ours == ref


# bf16 keeps 8 bits of mantissa (relative error ~2^-9 per rounding), fp16 keeps 11 (~2^-12).
# After two blocks of matmuls those roundings add up; these bounds on max|Δ logits| relative to
# the largest fp32 logit leave a 4-6x margin over what was measured (4e-3 and 6e-4).
HALF_TOL = {torch.bfloat16: 0.02, torch.float16: 0.004}


@torch.no_grad()
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_loading_stays_close_to_fp32(small, dtype):
    hf, path, ours = small
    half = GPT.from_pretrained(path, dtype=dtype)
    assert all(p.dtype == dtype for p in half.parameters())
    assert half.lm_head.weight is half.transformer.wte.weight  # still tied
    idx = torch.randint(0, SMALL["vocab_size"], (2, 64), generator=torch.Generator().manual_seed(5))
    ref = ours(idx)[0]
    logits = half(idx)[0]
    rel = max_diff(logits, ref) / ref.abs().max().item()
    print(f"{dtype}: max|Δ logits| / max|logit| = {rel:.2e} (bound {HALF_TOL[dtype]})")
    assert logits.dtype == dtype and rel <= HALF_TOL[dtype]


@torch.no_grad()
def test_bf16_checkpoint_round_trip(small, tmp_path):
    _, path, _ = small
    half = GPT.from_pretrained(path, dtype="bfloat16")  # strings work too, as CLIs pass them
    half.save_pretrained(tmp_path)
    with safe_open(tmp_path / "model.safetensors", framework="pt") as f:
        assert f.get_tensor("transformer.wte.weight").dtype == torch.bfloat16
    again = GPT.from_pretrained(tmp_path)  # dtype=None keeps the file's dtype
    assert again.transformer.wte.weight.dtype == torch.bfloat16
    for (k, a), b in zip(half.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), k
    hf = GPT2LMHeadModel.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert torch.equal(hf.transformer.h[0].attn.c_attn.weight, half.transformer.h[0].attn.c_attn.weight.t())


def test_bad_dtype_is_refused(small):
    with pytest.raises(ValueError, match=r"dtype must be one of torch.float32, torch.bfloat16, torch.float16, "
                                         r"torch.float64 \(the dtypes torch computes a model in\), got torch.int8"):
        GPT.from_pretrained(small[1], dtype=torch.int8)


def test_gpt2_initialisation():
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=2048, n_positions=256, n_embd=256, n_layer=4, n_head=4)
    model = GPT(config)
    assert model.lm_head.weight is model.transformer.wte.weight  # tied: one matrix
    resid_std = 0.02 / (2 * config.n_layer) ** 0.5  # projections into the residual stream
    for name, p in model.named_parameters():
        if name.endswith("c_proj.weight"):
            want = resid_std
        elif name.endswith("weight") and p.dim() == 2:
            want = 0.02
        else:  # LayerNorm gains start at 1, every bias at 0
            assert torch.all(p == (1.0 if ".ln_" in name and name.endswith("weight") else 0.0)), name
            continue
        assert abs(p.std().item() / want - 1) < 0.05 and abs(p.mean().item()) < want / 10, name



def test_residual_scale_at_init_does_not_depend_on_depth():
    """What the 1/sqrt(2·n_layer) scaling is for: at init the residual stream reaching ln_f has about
    the same scale in a 4-layer and a 24-layer model (unscaled, the deeper one's is ~3× larger)."""
    def final_std(n_layer: int, scaled: bool = True) -> float:
        torch.manual_seed(0)
        model = GPT(GPTConfig(vocab_size=256, n_positions=64, n_embd=128, n_head=4, n_layer=n_layer)).eval()
        if not scaled:
            for name, p in model.named_parameters():
                if name.endswith("c_proj.weight"):
                    torch.nn.init.normal_(p, std=0.02)
        seen = []
        model.transformer.ln_f.register_forward_pre_hook(lambda module, args: seen.append(args[0].std().item()))
        with torch.no_grad():
            model(torch.randint(256, (8, 64)))
        return seen[0]

    shallow, deep = final_std(4), final_std(24)
    print(f"residual std before ln_f: {shallow:.4f} (4 layers), {deep:.4f} (24 layers)")
    assert abs(deep / shallow - 1) < 0.05
    assert final_std(24, scaled=False) / final_std(4, scaled=False) > 2  # the growth the scaling removes


def test_sequence_longer_than_context_is_refused():
    model = GPT(GPTConfig.gpt2("gpt2-tiny"))
    with pytest.raises(ValueError, match="sequence length 129 exceeds the model's context n_positions=128"):
        model(torch.zeros(1, 129, dtype=torch.long))


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(n_layer=2.0), TypeError, "n_layer must be an integer, got 2.0"),  # would fail deep in nn.ModuleList
    (dict(n_embd=64.0, n_head=2), TypeError, "n_embd must be an integer, got 64.0"),
    (dict(n_head=True), TypeError, "n_head must be an integer, got the bool True"),
    (dict(vocab_size="50257"), TypeError, "vocab_size must be an integer, got '50257'"),
    (dict(n_inner=10.5), TypeError, "n_inner must be an integer, got 10.5"),
    (dict(n_layer=0), ValueError, "n_layer must be positive, got 0"),
    (dict(dropout="0.1"), TypeError, "dropout must be a number, got '0.1'"),  # checks.check_rate
    (dict(layer_norm_epsilon=0), ValueError, "layer_norm_epsilon must be positive"),
    (dict(initializer_range=-0.02), ValueError, "initializer_range .* must be >= 0"),
    # inf: NaN weights, all-zero LayerNorm outputs (logits all 0), not an error.
    (dict(layer_norm_epsilon=float("inf")), ValueError, "layer_norm_epsilon must be positive and finite .* got inf"),
    (dict(initializer_range=float("inf")), ValueError, r"initializer_range \(the init's std\) must be >= 0 and finite, got inf"),
    (dict(initializer_range=float("nan")), ValueError, "initializer_range .* got nan"),
])
def test_config_values_of_the_wrong_type_or_range_name_the_field(kwargs, error, match):
    """A size of the wrong type is a TypeError, as every integer argument's (minigpt/checks.py);
    one out of range a ValueError naming the range."""
    with pytest.raises(error, match=match):
        GPTConfig(**kwargs)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(eos_token_id="a"), TypeError, "eos_token_id must be an integer or a list of them, got 'a'"),
    (dict(eos_token_id=5.0), TypeError, "eos_token_id must be an integer or a list of them, got 5.0"),
    (dict(eos_token_id=[5, "a"]), TypeError, "eos_token_id must be an integer or a list of them, got [5, 'a']"),
    (dict(bos_token_id=True), TypeError, "bos_token_id must be an integer, got True"),
    (dict(bos_token_id=[1]), TypeError, "bos_token_id must be an integer, got [1]"),
])
def test_config_token_ids_that_are_no_ids_name_the_field(kwargs, error, match):
    """eos_token_id="a" or 5.0 was accepted, and taken for the id that ends every text. (A negative
    id is stale, as one past the vocabulary: test_checkpoint's test_an_eos_id_that_is_no_row...)"""
    with pytest.raises(error, match=re.escape(match)):
        GPTConfig(**kwargs)


def test_config_token_ids_past_the_vocabulary_or_a_list_of_eos_ids_still_load():
    """A stale EOS (GPT-2's 50256 in a smaller vocabulary) and an HF config's list of EOS ids load."""
    assert GPTConfig.gpt2("gpt2-tiny", vocab_size=100).has_stale_eos
    d = GPTConfig.gpt2("gpt2-tiny").to_hf_dict()
    d.update(eos_token_id=[np.int64(3), 50256], bos_token_id=np.int64(7))
    config = GPTConfig.from_hf_dict(d)
    assert (config.eos_token_id, config.bos_token_id, type(config.bos_token_id)) == ([3, 50256], 7, int)
    assert not config.has_stale_eos and config.eos_ids == [3, 50256]  # both are rows of GPT-2's 50257


def test_numpy_numbers_from_a_sweep_are_plain_numbers_in_the_config(tmp_path):
    """np.int64 / np.float32 (np.arange, a grid) are the numbers they stand for; stored as int and
    float, so the model builds and config.json can be written (json cannot serialise np.int64)."""
    config = GPTConfig(vocab_size=np.int64(100), n_positions=np.int64(32), n_embd=np.int32(32), n_layer=np.int64(2),
                       n_head=np.int64(2), dropout=np.float32(0.25), layer_norm_epsilon=np.float64(1e-5))
    assert type(config.n_embd) is int and type(config.dropout) is float and config.dropout == 0.25
    GPT(config).save_pretrained(tmp_path)
    # GPT-2's 50256, no row of a 100-token model, is written as null and read back as None: no such token.
    assert GPTConfig.from_json(tmp_path) == dataclasses.replace(config, bos_token_id=None, eos_token_id=None)


def test_wrong_input_shapes_name_the_expected_shape():
    model = GPT(GPTConfig.gpt2("gpt2-tiny", vocab_size=100))
    idx = torch.zeros(2, 5, dtype=torch.long)
    with pytest.raises(ValueError, match=r"idx must be token ids of shape \(B, T\), got shape \(5,\)"):
        model(idx[0])
    with pytest.raises(ValueError, match=r"targets must have idx's shape \(2, 5\).*got \(2, 4\)"):
        model(idx, targets=idx[:, 1:])  # unshifted idx: the caller shifts both
    with pytest.raises(ValueError, match="logits_to_keep=1"):
        model(idx, targets=idx, logits_to_keep=1)  # the loss needs every position's logits
    # An audit: a list failed as "'list' object has no attribute 'dim'", a dict config as "no attribute 'n_embd'".
    with pytest.raises(TypeError, match=r"idx must be a tensor of token ids \(B, T\), got list: torch.tensor\(ids\)"):
        model([[1, 2]])
    with pytest.raises(TypeError, match=r"GPT takes a GPTConfig, got dict: GPTConfig\(\*\*fields\)"):
        GPT({"vocab_size": 10})


@pytest.mark.parametrize("keyword, hint", [
    ("attention_mask", "right-pad the batch.*minigpt.generate"),
    ("labels", r"targets=ids\[:, 1:\].*-100"),
    ("past_key_values", "minigpt.generate.*KV cache"),
    ("colour", "position_ids, kv_cache, input_pos, attn_mask$"),  # no hint: only what forward takes
])
def test_transformers_keywords_say_what_forward_takes_instead(keyword, hint):
    """model(ids, attention_mask=m), as for transformers, is a TypeError that names GPT.forward and
    what to do instead, not hidden_states' bare 'unexpected keyword argument'."""
    model = GPT(GPTConfig.gpt2("gpt2-tiny", vocab_size=100))
    idx = torch.zeros(2, 5, dtype=torch.long)
    with pytest.raises(TypeError, match=rf"^GPT.forward\(\) got unexpected keyword argument\(s\) '{keyword}'\. It takes idx.*{hint}"):
        model(idx, **{keyword: torch.ones_like(idx)})


def test_targets_are_integer_ids_or_the_ignore_index_and_int32_ones_are_taken():
    """An API audit: int32 targets (int32 idx is taken) failed in cross_entropy ("expected scalar
    type Long"), float ones or a list failed inside torch, and an id past the vocabulary as
    "Target 64 is out of bounds" (on a GPU a device-side assert)."""
    model = GPT(GPTConfig(vocab_size=64, n_positions=32, n_embd=32, n_layer=1, n_head=2))
    idx = torch.randint(0, 64, (2, 5), generator=torch.Generator().manual_seed(0))
    targets = idx.roll(-1, 1)
    targets[0, :2] = -100  # IGNORE_INDEX
    assert torch.equal(model(idx, targets=targets.int())[1], model(idx, targets=targets)[1])
    for bad, error, message in ((targets.float(), TypeError, "got torch.float32"), (targets.tolist(), TypeError, "got list"),
                                (targets.bool(), TypeError, "got torch.bool"),
                                (torch.full((2, 5), 64), ValueError, r"in \[0, vocab_size=64\) or -100 .*got 64"),
                                (torch.full((2, 5), -1), ValueError, "got -1")):
        with pytest.raises(error, match=f"targets must be .*{message}"):
            model(idx, targets=bad)


def test_an_attn_mask_that_is_no_causal_key_mask_is_refused():
    """An API audit: without a KV cache attn_mask replaces the causal mask, and a padding mask
    (B, 1, 1, T) given there let every token see the ones after it (logits off by ~0.1, silently);
    a float 0/1 mask was read as scores to add, a (B, T) one broadcast as (T, T) when B = T."""
    from minigpt.prefill_decode import positions_from_mask, prefill_mask

    model = GPT(GPTConfig(vocab_size=64, n_positions=32, n_embd=32, n_layer=1, n_head=2)).eval()
    idx = torch.randint(0, 64, (5, 5), generator=torch.Generator().manual_seed(0))
    mask = torch.tensor([[0, 0, 1, 1, 1]] + [[1] * 5] * 4)
    for bad in (mask.bool()[:, None, None, :], mask.float()[:, None, None, :], mask.bool(), prefill_mask(mask).float()):
        with pytest.raises(ValueError, match=r"attn_mask must be a bool tensor \(B, 1, T, S\)"):
            model(idx, attn_mask=bad)
    no_causality = mask.bool()[:, None, None, :].expand(5, 1, 5, 5)
    with pytest.raises(ValueError, match="attn_mask lets a token see later tokens"):
        model(idx, attn_mask=no_causality)
    # The README's recipe for a left-padded batch: each unpadded row as it is alone.
    with torch.no_grad():
        padded = model(idx, position_ids=positions_from_mask(mask), attn_mask=prefill_mask(mask))[0]
        torch.testing.assert_close(padded[1:], model(idx[1:])[0])


def test_input_pos_without_a_cache_is_refused():
    """A typing audit: `model(x, input_pos=torch.arange(5, 8))` gave exactly model(x)'s logits, the
    slots of no cache ignored, when the caller meant positions 5..7 (position_ids)."""
    model = GPT(GPTConfig(vocab_size=64, n_positions=32, n_embd=32, n_layer=1, n_head=2)).eval()
    idx = torch.randint(0, 64, (1, 3), generator=torch.Generator().manual_seed(0))
    for call in (model, model.hidden_states):
        with pytest.raises(ValueError, match=r"input_pos names the KV-cache slots .*no kv_cache: pass kv_cache= .*"
                                             r"or position_ids= to give the tokens other positions"):
            call(idx, input_pos=torch.arange(5, 8))
    with torch.no_grad():  # what the caller meant
        shifted = model(idx, position_ids=torch.arange(5, 8)[None])[0]
        assert not torch.allclose(shifted, model(idx)[0])


@pytest.mark.parametrize("bad", [100, -1, 50256])
def test_token_ids_outside_the_vocabulary_are_named(bad):
    """Not the embedding's bare 'index out of range in self': the id and the vocabulary's size."""
    model = GPT(GPTConfig.gpt2("gpt2-tiny", vocab_size=100))
    idx = torch.zeros(2, 5, dtype=torch.long)
    idx[1, 3] = bad
    with pytest.raises(ValueError, match=rf"token ids must be in \[0, vocab_size=100\) for this model, got {bad} "):
        model(idx)
    with pytest.raises(ValueError, match=rf"got {bad} "):
        model.hidden_states(idx)
    idx[1, 3] = 99
    assert model(idx)[0].shape == (2, 5, 100)


def test_position_ids_past_the_context_are_named():
    model = GPT(GPTConfig.gpt2("gpt2-tiny", vocab_size=100, n_positions=32))
    idx = torch.zeros(1, 4, dtype=torch.long)
    with pytest.raises(ValueError, match=r"position_ids must be in \[0, n_positions=32\) for this model, got 33"):
        model(idx, position_ids=torch.tensor([[30, 31, 32, 33]]))
    assert model(idx, position_ids=torch.tensor([[28, 29, 30, 31]]))[0].shape == (1, 4, 100)


@pytest.mark.parametrize("shape", [(2, 1), (1,), (3, 4), (2, 5)])
def test_position_ids_of_another_shape_are_refused_not_broadcast(shape):
    """A review: position_ids of shape (2, 1) for 2 rows of 4 tokens, or (1,), broadcast: every
    token got one position and the call ran. They must be (B, T) or (1, T)."""
    model = GPT(GPTConfig.gpt2("gpt2-tiny", vocab_size=100, n_positions=32))
    idx = torch.zeros(2, 4, dtype=torch.long)
    with pytest.raises(ValueError, match=re.escape(f"position_ids must be (B, T) or (1, T), each token's position, got "
                                                   f"shape {shape} for idx of shape (2, 4)")):
        model(idx, position_ids=torch.zeros(shape, dtype=torch.long))
    for good in [(2, 4), (1, 4)]:
        assert model(idx, position_ids=torch.zeros(good, dtype=torch.long))[0].shape == (2, 4, 100)


def test_position_ids_past_the_context_are_named_with_a_kv_cache_too():
    """A long-context audit: with a KV cache, position_ids were not checked, so one past the context
    failed in wpe as a bare "IndexError: index out of range in self" (on a GPU, a device-side assert)."""
    from minigpt.kv_cache import KVCache

    cfg = GPTConfig.gpt2("gpt2-tiny", vocab_size=100, n_positions=32)
    model = GPT(cfg).eval()
    cache = KVCache(cfg.n_layer, 1, cfg.n_head, 64, cfg.n_embd // cfg.n_head)
    idx = torch.zeros(1, 1, dtype=torch.long)
    with pytest.raises(ValueError, match=r"position_ids must be in \[0, n_positions=32\) for this model, got 32"):
        model(idx, position_ids=torch.tensor([[32]]), kv_cache=cache, input_pos=torch.tensor([0]))
    assert model(idx, position_ids=torch.tensor([[31]]), kv_cache=cache, input_pos=torch.tensor([0]))[0].shape == (1, 1, 100)


def test_set_dropout_reaches_every_place_gpt2_drops_but_lora_adapters():
    model = GPT(GPTConfig.gpt2("gpt2-tiny", vocab_size=100, dropout=0.1))
    inject_lora(model, ("c_attn",), rank=2, dropout=0.5)  # adapters keep their own rate
    lora = [m.dropout for m in model.modules() if isinstance(m, LoRALinear)]
    model.set_dropout(0.3)
    rates = [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout) and m not in lora]
    assert rates == [0.3] * (1 + 2 * 2)  # embeddings, then each block's attention and MLP residual
    assert [b.attn.dropout for b in model.transformer.h] == [0.3, 0.3]  # the attention weights' rate (SDPA)
    assert model.config.dropout == 0.3 and [d.p for d in lora] == [0.5, 0.5]
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\), got 1.0"):
        model.set_dropout(1.0)
    # An API audit: a NumPy rate was kept as it was, and save_pretrained failed on it ("Object of type
    # float32 is not JSON serializable"), at the end of a training run; a string failed as "'<=' not supported".
    model.set_dropout(np.float32(0.25))
    assert type(model.config.dropout) is float and type(model.transformer.drop.p) is float
    for bad in ("x", True, torch.tensor(0.1)):  # checks.check_rate: no number is a TypeError
        with pytest.raises(TypeError, match=r"dropout must be a number"):
            model.set_dropout(bad)


def test_a_smaller_tokenizer_without_endoftext_does_not_fit():
    """Bug guarded: a tokenizer with fewer ids than the model fits only when its <|endoftext|> is
    known and is the model's (a padded vocabulary); without the `eos_token_id is not None` check a
    4,096-token tokenizer that has no <|endoftext|> was taken as GPT-2's own, so `generate`/`eval`
    ran GPT-2 on another tokenizer's ids without a word."""
    config = GPTConfig()  # GPT-2: 50257 ids, <|endoftext|> = 50256
    assert config.fits_tokenizer(50257, None)  # the same size: the ids can be the model's
    assert config.fits_tokenizer(50000, 50256)  # padded model, same <|endoftext|>
    assert not config.fits_tokenizer(4096, None)  # smaller and nothing to compare: another tokenizer
    assert not config.fits_tokenizer(4096, 4095)


def test_n_inner_sets_the_mlp_width_as_in_transformers():
    """Bug guarded: `mlp_width` ignoring n_inner built a 4·n_embd MLP for a config.json that sets
    n_inner, so its checkpoint could not load (or a fresh model had the wrong parameter count)."""
    config = GPTConfig.gpt2("gpt2-tiny", vocab_size=97, n_inner=48)
    model = GPT(config)
    assert model.transformer.h[0].mlp.c_fc.out_features == 48
    assert model.transformer.h[0].mlp.c_proj.in_features == 48
    with torch.device("meta"):
        hf = GPT2LMHeadModel(GPT2Config(**config.to_hf_dict()))
    assert model.num_params() == sum(p.numel() for p in hf.parameters())
    assert GPTConfig.from_hf_dict(config.to_hf_dict()).mlp_width == 48


def test_token_ids_outside_the_vocabulary_are_written_as_null(tmp_path):
    """A model trained on a tokenizer without <|endoftext|> keeps GPT-2's 50256, which its 300 rows
    do not reach: config.json says null (transformers warned that 50256 lies outside the
    vocabulary), which minigpt reads back as None: no such token. An id the model has is written as it is."""
    GPT(GPTConfig.gpt2("gpt2-tiny", vocab_size=300)).save_pretrained(tmp_path / "a")
    d = json.loads((tmp_path / "a" / "config.json").read_text())
    assert (d["bos_token_id"], d["eos_token_id"]) == (None, None)
    hf = GPT2LMHeadModel.from_pretrained(tmp_path / "a")
    assert (hf.config.bos_token_id, hf.config.eos_token_id) == (None, None)  # no id it would stop on, or warn about
    config = GPT.from_pretrained(tmp_path / "a").config
    assert (config.bos_token_id, config.eos_token_id, config.has_stale_eos) == (None, None, True)
    GPT(GPTConfig.gpt2("gpt2-tiny", vocab_size=300, bos_token_id=299, eos_token_id=299)).save_pretrained(tmp_path / "b")
    assert json.loads((tmp_path / "b" / "config.json").read_text())["eos_token_id"] == 299


def test_null_token_ids_mean_no_such_token():
    """Bug guarded (an audit): a null bos/eos_token_id was read as GPT-2's 50256, which in a
    vocabulary of 50257 or more is a real token: generation stopped on it where transformers never
    stops, and an empty prompt started from it. None now means no such token, as in transformers."""
    d = GPTConfig.gpt2("gpt2-tiny").to_hf_dict() | {"bos_token_id": None, "eos_token_id": None, "pad_token_id": None}
    config = GPTConfig.from_hf_dict(d)
    assert (config.bos_token_id, config.eos_token_id, config.eos_ids, config.has_bos) == (None, None, [], False)
    assert config.has_stale_eos  # names no <|endoftext|> the model has: the CLI takes the tokenizer's
    with pytest.raises(ValueError, match="empty prompt starts from bos_token_id=None"):
        generate(GPT(config), torch.zeros(1, 0, dtype=torch.long), max_new_tokens=1)
    assert GPTConfig.from_hf_dict(d | {"bos_token_id": 7, "eos_token_id": 9}).eos_ids == [9]
    assert GPTConfig.from_hf_dict(config.to_hf_dict()) == config  # null round-trips as null


@pytest.mark.parametrize("name, value", [("pad_token_id", -7), ("eos_token_id", -1), ("eos_token_id", [50256, -1]),
                                         ("bos_token_id", -1)])
def test_a_negative_token_id_in_config_json_is_refused_naming_the_key_and_the_file(tmp_path, name, value):
    """Bug (a security audit): config.json's `"pad_token_id": -7` loaded (only its type was checked),
    and generate filled finished rows with -7, which decoding then failed on ("unknown token id
    -7"); a negative EOS loaded as a stale one. No vocabulary has a negative id: now refused."""
    (tmp_path / "config.json").write_text(json.dumps(GPTConfig.gpt2("gpt2-tiny").to_hf_dict() | {name: value}))
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'config.json'} sets {name} {value}: a token id is "
                                                   "never negative (this model's are 0 .. 50256; null names none)")):
        GPTConfig.from_json(tmp_path)


def test_a_pad_token_id_past_the_vocabulary_in_config_json_is_dropped_with_a_warning(tmp_path):
    """Bug (a security audit): a pad_token_id past the vocabulary (50257 of 50,257 ids) loaded, and
    generate filled finished rows with an id no tokenizer decodes. As a stale EOS (an id of another
    vocabulary) loads, it loads, but as none, with a warning, as transformers warns: finished rows
    are padded with the EOS. A GPT2LMHeadModel saved by transformers with a pad id in range, and
    GPT-2's own ids (pad null, bos = eos = 50256), load as they are, without a warning."""
    config_file = tmp_path / "big" / "config.json"
    config_file.parent.mkdir()
    config_file.write_text(json.dumps(GPTConfig.gpt2("gpt2-tiny").to_hf_dict() | {"pad_token_id": 50257}))
    with pytest.warns(UserWarning, match=re.escape(f"{config_file} sets pad_token_id 50257, which is no token of this "
                                                   "model (ids 0 .. 50256): ignored, so finished rows are padded "
                                                   "with the EOS")):
        config = GPTConfig.from_json(config_file)
    assert (config.pad_token_id, config.eos_token_id) == (None, 50256)
    hf_config = GPT2Config(n_layer=1, n_head=2, n_embd=32, n_positions=64)
    for pad in (None, 0, 50256):
        hf_config.pad_token_id = pad
        GPT2LMHeadModel(hf_config).save_pretrained(tmp_path / str(pad))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            config = GPT.from_pretrained(tmp_path / str(pad)).config
        assert (config.bos_token_id, config.eos_token_id, config.pad_token_id) == (50256, 50256, pad)


def test_a_bad_token_id_of_generation_config_json_names_that_file_and_warns_at_the_callers_line(tmp_path):
    """A review: an id read from generation_config.json (which wins over config.json's, as in
    transformers) was refused or warned about as config.json's, and the warning pointed at minigpt's
    own checkpoint.py, not the line that loaded the model."""
    GPT(GPTConfig(**SMALL)).save_pretrained(tmp_path)
    generation = tmp_path / "generation_config.json"
    generation.write_text(json.dumps({"eos_token_id": SMALL["vocab_size"] - 1, "pad_token_id": -1}))
    with pytest.raises(ValueError, match=re.escape(f"{generation} sets pad_token_id -1: a token id is never negative")):
        GPT.from_pretrained(tmp_path)
    generation.write_text(json.dumps({"pad_token_id": SMALL["vocab_size"]}))
    with pytest.warns(UserWarning, match=re.escape(f"{generation} sets pad_token_id {SMALL['vocab_size']}")) as caught:
        GPT.from_pretrained(tmp_path)
    assert [w.filename for w in caught] == [__file__]
    # An id of the wrong type, or an empty EOS list, there: that file named too (a runner's audit:
    # config.json was named, which holds no such value), and config.json's own errors still name it.
    for bad in ("50256", 50256.0, True, []):
        generation.write_text(json.dumps({"eos_token_id": bad}))
        with pytest.raises(ValueError, match=re.escape(f"{generation}: eos_token_id must be ")):
            GPT.from_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(config | {"n_layer": 1.5}))
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'config.json'}: n_layer must be")):
        GPT.from_pretrained(tmp_path)


def test_transformers_alias_keys_in_config_json_are_read():
    """Bug guarded (an audit): transformers' GPT2Config also reads num_attention_heads, hidden_size,
    num_hidden_layers and max_position_embeddings; minigpt ignored them and used its defaults. With
    num_attention_heads=4 for a 48-wide model it built 12 heads, which 48 divides: no error, wrong logits."""
    d = GPTConfig.gpt2("gpt2-tiny", n_embd=48).to_hf_dict()
    for alias, name in {"num_attention_heads": "n_head", "hidden_size": "n_embd", "num_hidden_layers": "n_layer",
                        "max_position_embeddings": "n_positions"}.items():
        aliased = {k: v for k, v in d.items() if k != name} | {alias: d[name] + (alias == "num_attention_heads") * 2}
        assert getattr(GPTConfig.from_hf_dict(aliased), name) == aliased[alias]
        with pytest.raises(ValueError, match=f"sets {name}=.* and its alias {alias}=.*, which disagree"):
            GPTConfig.from_hf_dict(aliased | {name: aliased[alias] + 1})


def saved_activation_bytes(model: GPT, idx: torch.Tensor) -> int:
    """Bytes of the tensors autograd keeps for backward after one training forward."""
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(idx, targets=idx)
    return total


def test_gradient_checkpointing_gives_the_same_gradients_and_keeps_far_less():
    """With dropout on, a checkpointed model recomputes each block in backward with the same
    dropout masks (the RNG state is restored), so loss and gradients are bitwise those of the
    plain model; autograd keeps one (B, T, C) input per block instead of a dozen activations."""
    torch.manual_seed(0)
    model = GPT(GPTConfig.gpt2("gpt2-tiny", vocab_size=256, n_layer=4, dropout=0.1)).train()
    idx = torch.randint(0, 256, (4, 128))

    def loss_and_grads():
        torch.manual_seed(5)  # the same dropout masks for both runs
        model.zero_grad()
        _, loss = model(idx, targets=idx)
        loss.backward()
        return loss, {n: p.grad.clone() for n, p in model.named_parameters()}

    plain_loss, plain = loss_and_grads()
    plain_bytes = saved_activation_bytes(model, idx)
    model.gradient_checkpointing = True
    loss, grads = loss_and_grads()
    kept_bytes = saved_activation_bytes(model, idx)
    print(f"saved for backward: {plain_bytes / 1e6:.1f} MB plain, {kept_bytes / 1e6:.1f} MB checkpointed")
    assert torch.equal(loss, plain_loss)
    assert all(torch.equal(grads[n], plain[n]) for n in plain)
    assert kept_bytes < plain_bytes / 5
    # An explicit attention mask (here: the causal one, with the first key hidden from all but
    # itself) reaches the recomputed blocks too.
    mask = torch.ones(128, 128, dtype=torch.bool).tril()
    mask[1:, 0] = False
    torch.manual_seed(5)
    masked = model.hidden_states(idx, attn_mask=mask[None, None])
    model.gradient_checkpointing = False
    torch.manual_seed(5)
    assert torch.equal(masked, model.hidden_states(idx, attn_mask=mask[None, None]))
    model.gradient_checkpointing = True
    torch.manual_seed(5)
    assert not torch.equal(masked, model.hidden_states(idx))
    # Only training recomputes: in eval mode (with autograd on) the blocks run plainly.
    eval_bytes = saved_activation_bytes(model.eval(), idx)
    model.gradient_checkpointing = False
    assert saved_activation_bytes(model, idx) == eval_bytes


COMPILE_IDX = torch.randint(0, 256, (2, 64), generator=torch.Generator().manual_seed(0))


def loss_and_grads(model: GPT, forward) -> tuple[float, dict[str, torch.Tensor]]:
    model.zero_grad()
    _, loss = forward(COMPILE_IDX, targets=COMPILE_IDX)
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()}


def eager_loss_and_grads() -> tuple[GPT, float, dict[str, torch.Tensor]]:
    """A 2-layer model (dropout off: compiled code draws its random numbers differently) and its
    eager, plain loss and gradients on COMPILE_IDX, what the compiled model is held to."""
    torch.manual_seed(0)
    model = GPT(GPTConfig.gpt2("gpt2-tiny", vocab_size=256, n_layer=2)).train()
    return model, *loss_and_grads(model, model)


def compiled_loss_and_grad_diff(model: GPT, plain: dict[str, torch.Tensor]) -> tuple[float, float]:
    """The compiled model's loss, and its gradients' largest difference from `plain`."""
    loss, grads = loss_and_grads(model, torch.compile(model))
    return loss, max((grads[n] - plain[n]).abs().max().item() for n in plain)


def test_gradient_checkpointing_under_torch_compile():
    """torch.compile traces through the checkpointed blocks (as `minigpt train --compile
    --gradient-checkpointing` runs them): the same loss and gradients as the eager, plain model.
    Dropout off: compiled code draws its random numbers differently."""
    model, plain_loss, plain = eager_loss_and_grads()
    model.gradient_checkpointing = True
    loss, diff = compiled_loss_and_grad_diff(model, plain)
    print(f"compiled + checkpointed vs eager: |Δloss| = {abs(loss - plain_loss):.1e}, max |Δgrad| = {diff:.1e}")
    assert loss == pytest.approx(plain_loss, abs=1e-6) and diff < 1e-5


def test_initializer_range_zero_is_a_valid_setting():
    """Mutant R7-2: the check is `>= 0`, as its error says: 0 (every weight starts at
    0) is accepted and kept as a float."""
    config = GPTConfig.gpt2("gpt2-tiny", vocab_size=64, initializer_range=0)
    assert config.initializer_range == 0.0 and type(config.initializer_range) is float
    assert all(torch.count_nonzero(b.attn.c_attn.weight) == 0 for b in GPT(config).transformer.h)


def test_chunked_loss_matches_the_plain_loss_and_keeps_no_logits(monkeypatch):
    """--chunked-loss: the positions go through the LM head and the loss a chunk at a time, their
    gradients taken in forward. The loss (skipped targets and a short last chunk included) and the
    gradients equal the plain ones up to fp32 rounding, dropout masks and all, and autograd no
    longer keeps the (B·T, V) softmax: with the blocks checkpointed too, little more than the
    weight's own gradient is kept."""
    import minigpt.chunked_loss
    import minigpt.model

    V = 2048
    monkeypatch.setattr(minigpt.chunked_loss, "LOSS_CHUNK_LOGITS", V * 100)  # 100 positions a chunk: 5 full, 1 of 12
    torch.manual_seed(0)
    model = GPT(GPTConfig.gpt2("gpt2-tiny", vocab_size=V, n_layer=2, dropout=0.1)).train()
    idx = torch.randint(0, V, (4, 128))
    targets = idx.roll(-1, dims=1)
    targets[0, :50] = targets[:, -1] = minigpt.model.IGNORE_INDEX

    def loss_and_grads():
        torch.manual_seed(5)
        model.zero_grad()
        logits, loss = model(idx, targets)
        loss.backward()
        return logits, loss, {n: p.grad.clone() for n, p in model.named_parameters()}

    logits, plain_loss, plain = loss_and_grads()
    assert logits.shape == (4, 128, V)
    model.chunked_loss = True
    logits, loss, grads = loss_and_grads()
    assert logits is None  # never all held at once, so none to return
    diff = max((grads[n] - plain[n]).abs().max().item() for n in plain)
    print(f"chunked vs plain: |Δloss| = {abs(loss.item() - plain_loss.item()):.1e}, max |Δgrad| = {diff:.1e}")
    assert loss.item() == pytest.approx(plain_loss.item(), rel=1e-6) and diff < 1e-6

    def kept(chunked: bool) -> int:
        model.chunked_loss = chunked
        total = 0

        def pack(t: torch.Tensor) -> torch.Tensor:
            nonlocal total
            total += t.numel() * t.element_size() * (not isinstance(t, torch.nn.Parameter))
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(idx, targets)
        return total

    model.gradient_checkpointing = True
    plain_bytes, chunked_bytes = kept(False), kept(True)
    softmax_bytes = 4 * 128 * V * 4  # what plain cross-entropy keeps: the fp32 log-softmax
    grad_w_bytes = model.lm_head.weight.numel() * 4  # what the chunked loss keeps from forward: ∂loss/∂W (fp32)
    print(f"kept with checkpointed blocks: {plain_bytes / 1e6:.2f} MB plain loss, {chunked_bytes / 1e6:.2f} MB chunked "
          f"({grad_w_bytes / 1e6:.2f} MB of it ∂loss/∂W)")
    assert plain_bytes > softmax_bytes > 4 * (chunked_bytes - grad_w_bytes) > 0
    # Without autograd (evaluation) the chunks simply run: the same loss as the plain forward.
    with torch.no_grad():
        model.eval()
        chunked_eval = model(idx, targets)[1]
        model.chunked_loss = False
        assert chunked_eval.item() == pytest.approx(model(idx, targets)[1].item(), rel=1e-6)


def test_evaluation_between_chunked_loss_steps_sees_the_new_head():
    """Bug guarded: the chunked loss trains lm_head.weight without a call to Linear.forward, and
    the fused AdamW minigpt trains with updates it in place without bumping its version: the
    oneDNN copy packed at the first evaluation was served at every later one (`minigpt train
    --chunked-loss` logged validation losses that stalled, and picked its best/ by them).
    minigpt/linear.py drops a weight's packed copy after every optimizer step."""
    import copy

    torch.manual_seed(0)
    model = GPT(GPTConfig.gpt2("gpt2-tiny", vocab_size=512, n_layer=1))
    model.chunked_loss = True
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, fused=True)
    idx = torch.randint(0, 512, (2, 32))
    for _ in range(3):
        model.eval()
        with torch.no_grad():
            evaluated = model(idx, idx)[1]
            fresh = copy.deepcopy(model)  # new tensors: packed anew from the weights as they are
            assert evaluated.item() == pytest.approx(fresh(idx, idx)[1].item(), rel=1e-5)
        model.train()
        model(idx, idx)[1].backward()
        opt.step()
        opt.zero_grad()


def largest_relative_diff(grads: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> float:
    """The largest difference between two sets of gradients, each relative to its tensor's largest
    value in `reference` (both sets must name the same tensors)."""
    assert grads.keys() == reference.keys()
    return max(((grads[n] - reference[n]).abs().max() / reference[n].abs().max()).item() for n in reference)


def test_chunked_loss_gradients_under_autocast_a_scaled_loss_and_a_frozen_head(monkeypatch):
    """The gradients the chunked loss takes in forward, where the plain loss's autograd would
    differ: under bf16 autocast (the matmuls in bf16, as the plain head's) they are no further
    from fp32's than the plain loss's; a loss scaled before backward (gradient accumulation
    divides it) scales them; a frozen head (wte frozen by a fine-tune) gets none, the rest the
    plain ones; with every target skipped the loss is NaN, as the plain one, and the gradients 0,
    not NaN."""
    import minigpt.chunked_loss
    from minigpt.model import IGNORE_INDEX

    V = 1024
    monkeypatch.setattr(minigpt.chunked_loss, "LOSS_CHUNK_LOGITS", V * 96)  # 96 positions a chunk: 2 full, 1 of 64
    torch.manual_seed(0)
    model = GPT(GPTConfig.gpt2("gpt2-tiny", vocab_size=V, n_layer=2)).train()
    idx = torch.randint(0, V, (2, 128))

    def grads(chunked: bool, autocast: torch.dtype | None = None, scale: float = 1.0,
              targets: torch.Tensor = idx.roll(-1, dims=1)) -> dict[str, torch.Tensor]:
        model.zero_grad(set_to_none=True)
        model.chunked_loss = chunked
        with torch.autocast("cpu", dtype=autocast or torch.float32, enabled=autocast is not None):
            loss = model(idx, targets)[1]
        (loss * scale).backward()
        return {n: p.grad / scale for n, p in model.named_parameters() if p.grad is not None}

    exact = grads(False)
    plain_err, chunked_err = (largest_relative_diff(grads(c, torch.bfloat16), exact) for c in (False, True))
    print(f"bf16 autocast vs fp32, relative to each tensor's largest: {plain_err:.1e} plain, {chunked_err:.1e} chunked")
    assert 1e-4 < chunked_err < 1.5 * plain_err  # bf16 did round (1e-4), and chunking adds nothing to it
    assert largest_relative_diff(grads(True, scale=0.25), exact) < 1e-5
    skipped = grads(True, targets=torch.full_like(idx, IGNORE_INDEX))
    assert all(torch.equal(g, torch.zeros_like(g)) for g in skipped.values())
    assert model(idx, torch.full_like(idx, IGNORE_INDEX))[1].isnan()
    model.transformer.wte.weight.requires_grad_(False)
    frozen = grads(True)
    assert "transformer.wte.weight" not in frozen and largest_relative_diff(frozen, grads(False)) < 1e-5


def test_chunked_loss_in_fp16_keeps_the_small_probabilities(monkeypatch):
    """fp16 autocast, with GradScaler's loss scale: the plain loss's backward scales the logits'
    gradient (softmax - onehot) / n by 65536 before fp16 sees it; the chunked loss forms it in
    forward, before any scale, where at 8,192 tokens and 2,048 positions a typical entry (~6e-8)
    is at the bottom of fp16's range. So its matmuls run in fp32 there: no further from fp32's
    gradients than the plain loss's (in fp16 they were 16× further)."""
    import minigpt.chunked_loss

    monkeypatch.setattr(minigpt.chunked_loss, "LOSS_CHUNK_LOGITS", 8192 * 512)  # 4 chunks
    torch.manual_seed(0)
    head = torch.nn.Linear(64, 8192, bias=False)
    x, targets = torch.randn(1, 2048, 64), torch.randint(0, 8192, (1, 2048))

    def grads(loss_fn, autocast: bool, scale: float = 65536.0) -> list[torch.Tensor]:
        head.zero_grad(set_to_none=True)
        xg = x.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.float16, enabled=autocast):
            loss = loss_fn(xg)
        (loss * scale).backward()
        return [xg.grad / scale, head.weight.grad / scale]

    def plain(xg: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(head(xg).float().flatten(0, 1), targets.flatten())

    def chunked(xg: torch.Tensor) -> torch.Tensor:
        return minigpt.chunked_loss.chunked_lm_loss(head, xg, targets, -100)

    exact = grads(plain, autocast=False)
    errors = [max(((g - e).norm() / e.norm()).item() for g, e in zip(grads(fn, autocast=True), exact))
              for fn in (plain, chunked)]
    print(f"fp16 autocast vs fp32, relative norm of the difference: {errors[0]:.1e} plain, {errors[1]:.1e} chunked")
    assert errors[1] < 1.5 * errors[0]


def test_chunked_loss_refuses_a_head_with_a_bias():
    """Its gradients are for x Wᵀ alone: a bias would be left out of training, silently."""
    from minigpt.chunked_loss import chunked_lm_loss

    x = torch.randn(1, 4, 8, requires_grad=True)
    with pytest.raises(ValueError, match="an LM head without a bias"):
        chunked_lm_loss(torch.nn.Linear(8, 16), x, torch.zeros(1, 4, dtype=torch.long), -100)


def test_chunked_loss_under_torch_compile(monkeypatch):
    """torch.compile traces the chunked loss's autograd Function, its chunk loop and all (`minigpt
    train --compile --chunked-loss`): the eager, plain model's loss and gradients."""
    import minigpt.chunked_loss

    monkeypatch.setattr(minigpt.chunked_loss, "LOSS_CHUNK_LOGITS", 256 * 48)  # 48 positions a chunk: 2 full, 1 of 32
    model, plain_loss, plain = eager_loss_and_grads()
    model.chunked_loss = True
    loss, diff = compiled_loss_and_grad_diff(model, plain)
    print(f"compiled + chunked vs eager: |Δloss| = {abs(loss - plain_loss):.1e}, max |Δgrad| = {diff:.1e}")
    assert loss == pytest.approx(plain_loss, abs=1e-6) and diff < 1e-5


def test_chunked_loss_runs_chunks_of_the_rows_its_logits_budget_allows(monkeypatch):
    """Mutants R9-2/R9-3: a chunk's rows came from LOSS_CHUNK_LOGITS over the hidden width C, not
    the vocabulary V (chunks V/C times too large: the memory the switch saves, spent again), and a
    vocabulary wider than the budget got 0 rows, not 1 (`split(0)`: no loss at all)."""
    import minigpt.chunked_loss

    V = 256
    model = GPT(GPTConfig.gpt2("gpt2-tiny", vocab_size=V, n_layer=1)).eval()  # n_embd 64: V/C = 4
    idx = torch.randint(0, V, (2, 50))
    rows = []
    model.lm_head.register_forward_hook(lambda m, args, out: rows.append(out.shape[0]))
    with torch.no_grad():
        plain = model(idx, idx)[1].item()
        model.chunked_loss = True
        for budget, chunks in ((V * 40, [40, 40, 20]), (V - 1, [1] * 100)):  # the last: 1 row, never 0
            monkeypatch.setattr(minigpt.chunked_loss, "LOSS_CHUNK_LOGITS", budget)
            rows.clear()
            loss = model(idx, idx)[1]
            assert rows == chunks and loss.item() == pytest.approx(plain, rel=1e-6)


def test_chunked_loss_leaves_a_call_without_targets_alone():
    """Mutant R9-1: `if self.chunked_loss:` without `targets is not None`: a model trained with
    --chunked-loss (the switch stays on in the object) failed on every call without targets,
    generation's and logits_to_keep's among them."""
    model = GPT(GPTConfig.gpt2("gpt2-tiny", vocab_size=64, n_layer=1)).eval()
    idx = torch.randint(0, 64, (2, 5))
    with torch.no_grad():
        expected = model(idx)[0]
        model.chunked_loss = True
        logits, loss = model(idx)
        assert loss is None and torch.equal(logits, expected)
        # The last position alone is 2 rows for the LM head: on an Intel CPU another kernel than for
        # all 10 (minigpt/linear.py keeps up to 3 rows on MKL), so equal up to float rounding.
        assert torch.allclose(model(idx, logits_to_keep=1)[0], expected[:, -1:], rtol=0, atol=1e-5)


def test_token_ids_just_past_the_vocabulary_or_negative_are_written_as_null(tmp_path):
    """Mutants R10-44/R10-45: an id equal to vocab_size, or a negative one (both stale: no row of
    the model), was written to config.json as it was instead of null; vocab_size - 1 and 0 are ids."""
    d = GPTConfig.gpt2("gpt2-tiny", vocab_size=300, bos_token_id=-1, eos_token_id=300).to_hf_dict()
    assert (d["bos_token_id"], d["eos_token_id"]) == (None, None)
    d = GPTConfig.gpt2("gpt2-tiny", vocab_size=300, bos_token_id=0, eos_token_id=299).to_hf_dict()
    assert (d["bos_token_id"], d["eos_token_id"]) == (0, 299)


def test_set_dropout_changes_only_its_own_models_config(tmp_path):
    """Bug guarded: the model kept the config it was built from, so a.set_dropout(0.0) changed the
    caller's config and every model built from it: b.config said 0.0 while b's modules still
    dropped 0.1, and b.save_pretrained wrote resid_pdrop 0.0."""
    cfg = GPTConfig.gpt2("gpt2-tiny", vocab_size=100, dropout=0.1)
    a, b = GPT(cfg), GPT(cfg)
    a.set_dropout(0.0)
    assert a.config.dropout == 0.0 and cfg.dropout == b.config.dropout == b.transformer.drop.p == 0.1
    b.save_pretrained(tmp_path)
    assert GPTConfig.from_json(tmp_path).dropout == 0.1


@pytest.mark.parametrize("keywords, hint", [
    (["input_ids"], r"'input_ids'\. It takes idx.*input_ids: pass the ids positionally, model\(ids\)"),
    (["input_ids", "attention_mask"], r"'input_ids', 'attention_mask'\..*model\(ids\).*attention_mask: right-pad"),
    ([], r"needs idx, the token ids \(B, T\): model\(ids\)"),
    (["targets"], r"needs idx"),
])
def test_transformers_input_ids_keyword_says_to_pass_the_ids_positionally(keywords, hint):
    """Bug guarded: model(**tok(texts)) or model(input_ids=ids), as for transformers, failed as
    Python's bare "missing 1 required positional argument: 'idx'", before forward could say more."""
    model = GPT(GPTConfig.gpt2("gpt2-tiny", vocab_size=100))
    idx = torch.zeros(2, 5, dtype=torch.long)
    with pytest.raises(TypeError, match=rf"^GPT.forward\(\) .*{hint}"):
        model(**{name: idx for name in keywords})  # as model(**tok(texts)) passes them


def test_targets_with_logits_to_keep_say_that_the_loss_needs_every_position():
    """Bug guarded: the error said "targets must have idx's shape (2, 15) ... got (2, 15)", a shape
    mismatch that was none: it is logits_to_keep that a call with targets must leave at 0."""
    model = GPT(GPTConfig.gpt2("gpt2-tiny", vocab_size=100))
    idx = torch.zeros(2, 15, dtype=torch.long)
    with pytest.raises(ValueError, match=r"^targets need every position's logits: leave logits_to_keep at 0 when "
                                         r"passing targets \(got logits_to_keep=1\)$"):
        model(idx, targets=idx, logits_to_keep=1)


def test_a_meta_device_load_with_assign_keeps_lm_head_tied():
    """An audit: the fast-load recipe, a model built under torch.device("meta") then
    load_state_dict(sd, assign=True), gave wte and lm_head a Parameter each: 29 parameters instead
    of 28, num_params 38M too high for 124M, and AdamW stepped the one matrix twice. Every load now
    ties them again, a state dict without lm_head.weight too (checkpoint.py's, strict=False)."""
    torch.manual_seed(0)
    cfg = GPTConfig.gpt2("gpt2-tiny", vocab_size=256, n_layer=1)
    source = GPT(cfg).eval()
    state = source.state_dict()
    idx = torch.randint(0, 256, (2, 9))
    for sd, strict in ((state, True), ({k: v for k, v in state.items() if k != "lm_head.weight"}, False)):
        with torch.device("meta"):
            model = GPT(cfg)
        model.load_state_dict(sd, strict=strict, assign=True)
        assert model.lm_head.weight is model.transformer.wte.weight
        assert len(list(model.parameters())) == len(list(source.parameters()))
        assert model.num_params() == source.num_params()
        with torch.no_grad():
            assert torch.equal(model.eval()(idx)[0], source(idx)[0])


def test_set_dropout_reaches_swapped_in_modules_by_type_not_by_name():
    """An audit: set_dropout set `block.mlp.dropout.p` by name, so an MLP swapped in without a
    `.dropout` made it fail with an AttributeError, and one whose dropout had another name kept its
    old rate without a word. It now sets every nn.Dropout the model holds."""

    class PlainMLP(torch.nn.Module):  # no dropout at all
        def __init__(self, n: int) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(n, n)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x)

    class GatedMLP(PlainMLP):  # its dropout under another name
        def __init__(self, n: int) -> None:
            super().__init__(n)
            self.drop_out = torch.nn.Dropout(0.1)

    model = GPT(GPTConfig.gpt2("gpt2-tiny", vocab_size=100, dropout=0.1))
    model.transformer.h[0].mlp, model.transformer.h[1].mlp = PlainMLP(64), GatedMLP(64)
    model.set_dropout(0.4)
    assert model.transformer.h[1].mlp.drop_out.p == 0.4
    assert {m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)} == {0.4}


def test_load_state_dict_keeps_an_untied_head_and_refuses_one_into_a_tied_model():
    """An audit: the post-load hook tied lm_head to wte again after every load, so an untied model
    loading its own state dict dropped the loaded head without a word (logits off by 0.9), and a
    resumed untied run held one Parameter fewer than its optimizer state. A load re-ties only a
    head that was tied before it; a tied model refuses a state whose head differs from its wte."""
    torch.manual_seed(0)
    cfg = GPTConfig.gpt2("gpt2-tiny", vocab_size=100, n_layer=1)
    source = GPT(cfg).eval()
    source.lm_head.weight = torch.nn.Parameter(torch.randn(100, 64) * 0.02)  # untied and changed
    state, idx = source.state_dict(), torch.randint(0, 100, (1, 8))
    for assign in (False, True):
        model = GPT(cfg).eval()
        model.lm_head.weight = torch.nn.Parameter(torch.zeros(100, 64))  # the same architecture: untied
        model.load_state_dict(state, assign=assign)
        assert model.lm_head.weight is not model.transformer.wte.weight
        assert torch.equal(model.lm_head.weight, state["lm_head.weight"])
        with torch.no_grad():
            assert torch.equal(model(idx)[0], source(idx)[0])
    with pytest.raises(ValueError, match=r"lm_head.weight is not its wte.weight \(an untied head\), but this model "
                                         r"ties them: untie it first"):
        GPT(cfg).load_state_dict(state)
    # A tied model's own state loads back tied (its entries, detached apart, share memory), and so
    # does one of meta tensors, which have no values to compare (a review: aten::equal failed on them).
    tied = GPT(cfg)
    tied.load_state_dict(GPT(cfg).state_dict())
    assert tied.lm_head.weight is tied.transformer.wte.weight
    with torch.device("meta"):
        meta = GPT(cfg)
        meta.load_state_dict(GPT(cfg).state_dict(), assign=True)
    assert meta.lm_head.weight is meta.transformer.wte.weight
    with torch.no_grad():  # a copy of a tied state whose wte holds a NaN: equal still (a review: refused)
        tied.transformer.wte.weight[0, 0] = float("nan")
    GPT(cfg).load_state_dict({k: v.clone() for k, v in tied.state_dict().items()})


def test_load_state_dict_refuses_transformers_layout_naming_all_four_conv1d_weights():
    """An audit: model.load_state_dict(GPT2LMHeadModel(...).state_dict()) listed as size mismatches
    only the three Conv1D weights that are not square; attn.c_proj.weight (C, C) is transposed too
    but fits, so a user who transposed the three listed got "All keys matched" and wrong logits.
    The load now refuses the layout itself and names all four weights and GPT.from_pretrained."""
    from minigpt.checkpoint import CONV1D_SUFFIXES

    cfg = GPTConfig(**SMALL)
    torch.manual_seed(0)
    hf = GPT2LMHeadModel(hf_config(**SMALL)).eval()
    state = hf.state_dict()
    message = (r"transformer.h.0.attn.c_attn.weight has shape \(64, 192\), not \(192, 64\): this is transformers' "
               r"GPT-2 state dict, whose four Conv1D weights per block \(" + re.escape(", ".join(CONV1D_SUFFIXES)) +
               r"\) are stored transposed, \(in, out\). Load it with GPT.from_pretrained\(folder\)")
    for strict in (True, False):
        with pytest.raises(ValueError, match=message):
            GPT(cfg).load_state_dict(state, strict=strict)
    # Transposing all four, as the message says, loads it: transformers' logits.
    ours = {key: value.t() if key.endswith(CONV1D_SUFFIXES) else value for key, value in state.items()}
    model, idx = GPT(cfg).eval(), torch.randint(0, SMALL["vocab_size"], (2, 9))
    model.load_state_dict(ours)
    with torch.no_grad():
        diff = (model(idx)[0] - hf(idx).logits).abs().max().item()
    print(f"transposed by hand vs transformers: max |Δ logits| = {diff:.2e}")
    assert diff <= TOL_FP32


def test_check_config_reads_what_the_modules_hold_and_set_dropout_any_attention():
    """A review of the config check: a position table cropped as nanoGPT's crop_block_size does it
    (a new weight, num_embeddings left as it was) was refused with advice that would break it, a
    wpe swapped for a module without a table (no positions) failed every forward with an
    AttributeError, and set_dropout missed the SDPA rate of an attention of the user's own class."""
    cfg = GPTConfig.gpt2("gpt2-tiny", vocab_size=100, n_positions=64)
    model = GPT(cfg).eval()
    model.transformer.wpe.weight = torch.nn.Parameter(model.transformer.wpe.weight[:32].detach().clone())
    model.config.n_positions = 32
    assert model(torch.zeros(1, 32, dtype=torch.long))[0].shape == (1, 32, 100)

    class NoPositions(torch.nn.Module):
        def forward(self, pos):
            return torch.zeros(())

    model.transformer.wpe = NoPositions()
    assert model(torch.zeros(1, 8, dtype=torch.long))[0].shape == (1, 8, 100)

    class MyAttention(torch.nn.Module):  # not a CausalSelfAttention: its rate is a float named dropout
        def __init__(self):
            super().__init__()
            self.dropout, self.resid_dropout = 0.1, torch.nn.Dropout(0.1)

    model.transformer.h[0].attn = MyAttention()
    model.set_dropout(0.0)
    assert model.transformer.h[0].attn.dropout == 0.0 and model.transformer.h[0].attn.resid_dropout.p == 0.0


def test_a_config_that_no_longer_describes_the_modules_is_refused_on_every_path(tmp_path):
    """An audit: with blocks appended (depth up-scaling) and config.n_layer left at 2, the forward
    ran 4 blocks, apply_strategy("partial", n_trainable_blocks=1) trained 3, generate died with a
    bare IndexError and the save named tensors but not n_layer. n_head changed on the config alone
    failed in index_copy_; n_positions raised alone, in wpe as "index out of range in self". Each
    path now says which field disagrees and what to set."""
    cfg = GPTConfig(vocab_size=100, n_positions=64, n_embd=64, n_layer=2, n_head=4)
    idx = torch.randint(0, 100, (1, 5))
    grown = GPT(cfg).eval()
    grown.transformer.h.extend([Block(cfg), Block(cfg)])
    n_layer = re.escape("model.config.n_layer is 2 but model.transformer.h holds 4 blocks: set model.config.n_layer = 4")
    for call in (lambda: grown(idx), lambda: generate(grown, idx, max_new_tokens=2, do_sample=False),
                 lambda: apply_strategy(grown, "partial", n_trainable_blocks=1, verbose=False),
                 lambda: grown.save_pretrained(tmp_path / "grown")):
        with pytest.raises(ValueError, match=n_layer):
            call()
    assert all(p.requires_grad for p in grown.parameters())  # the refused strategy changed nothing
    grown.config.n_layer = 4  # as the error says: then every path runs
    apply_strategy(grown, "partial", n_trainable_blocks=1, verbose=False)
    assert [next(b.parameters()).requires_grad for b in grown.transformer.h] == [False, False, False, True]
    assert generate(grown, idx, max_new_tokens=2, do_sample=False).shape == (1, 7)

    heads = GPT(cfg).eval()
    heads.config.n_head = 8
    with pytest.raises(ValueError, match=re.escape("model.config.n_head is 8 but model.transformer.h[0].attn.n_head is 4")):
        generate(heads, idx, max_new_tokens=2, do_sample=False)
    longer = GPT(cfg).eval()
    longer.config.n_positions = 128
    with pytest.raises(ValueError, match=re.escape("model.config.n_positions is 128 but model.transformer.wpe holds 64 "
                                                   "positions: set model.config.n_positions = 64")):
        longer(torch.randint(0, 100, (1, 100)))


def test_to_empty_keeps_lm_head_tied_and_init_weights_initialises_it():
    """An audit: `to_empty(device=...)` of a meta-device model untied lm_head from wte and left
    every weight uninitialised, with no public way to apply GPT-2's init. It stays tied, and
    init_weights() draws what a model built on the CPU draws from the same seed."""
    cfg = GPTConfig.gpt2("gpt2-tiny", vocab_size=256, n_layer=2)
    with torch.device("meta"):
        model = GPT(cfg)
    model.to_empty(device="cpu")
    assert model.lm_head.weight is model.transformer.wte.weight
    built = GPT(cfg)
    for m in (model, built):
        torch.manual_seed(3)
        m.init_weights()
    assert model.state_dict().keys() == built.state_dict().keys()
    assert all(torch.equal(t, built.state_dict()[k]) for k, t in model.state_dict().items())
    # A move keeps a tie, and makes none: a head untied on purpose stays its own.
    model.lm_head.weight = torch.nn.Parameter(model.lm_head.weight.detach().clone())
    assert model.to(torch.float64).lm_head.weight is not model.transformer.wte.weight


def softcap_hook(module, args, logits):
    """A forward hook that caps the logits, as Gemma 2 does (×5, so the change is large)."""
    return 5 * torch.tanh(logits / 5)


@pytest.mark.parametrize("head", ["forward hook", "pre-hook", "global hook", "another class"])
def test_chunked_loss_trains_what_a_hooked_or_replaced_head_computes(head, monkeypatch):
    """An audit: training with --chunked-loss reads lm_head.weight without calling lm_head, so a
    hook on it (a logit soft-cap, a probe) was skipped in training and run in evaluation: two
    objectives, silently (a loss of 6.29 trained, 6.81 evaluated). Such a head now gets the plain
    loss, with a warning: loss and gradients as with the chunked loss off, the hook run once."""
    import minigpt.chunked_loss

    monkeypatch.setattr(minigpt.chunked_loss, "LOSS_CHUNK_LOGITS", 256 * 16)  # 16 positions a chunk
    torch.manual_seed(0)
    model = GPT(GPTConfig.gpt2("gpt2-tiny", vocab_size=256, n_layer=1))
    calls = []

    def counted_softcap(module, args, logits):
        if module is model.lm_head:
            calls.append(1)
            return softcap_hook(module, args, logits)

    class SoftCapped(torch.nn.Linear):
        def forward(self, x):
            calls.append(1)
            return softcap_hook(self, (x,), super().forward(x))

    handles = []
    if head == "forward hook":
        handles.append(model.lm_head.register_forward_hook(counted_softcap))
    elif head == "pre-hook":  # halves the hidden state going in
        handles.append(model.lm_head.register_forward_pre_hook(lambda m, args: (calls.append(1), (args[0] / 2,))[1]))
    elif head == "global hook":
        handles.append(torch.nn.modules.module.register_module_forward_hook(counted_softcap))
    else:
        model.lm_head.__class__ = SoftCapped
    idx = torch.randint(0, 256, (2, 32))
    try:
        def loss_and_grads():
            model.zero_grad()
            calls.clear()
            loss = model(idx, idx)[1]
            loss.backward()
            return loss.item(), len(calls), {n: p.grad.clone() for n, p in model.named_parameters()}

        plain, plain_calls, plain_grads = loss_and_grads()
        model.chunked_loss = True
        with pytest.warns(UserWarning, match="which the chunked loss does not call in training: it computes the plain loss"):
            chunked, chunked_calls, chunked_grads = loss_and_grads()
        with torch.no_grad():
            evaluated = model(idx, idx)[1].item()
    finally:
        for handle in handles:
            handle.remove()
    assert chunked == plain == pytest.approx(evaluated, rel=1e-6) and chunked_calls == plain_calls == 1
    assert all(torch.equal(chunked_grads[n], plain_grads[n]) for n in plain_grads)


def test_a_causal_attn_mask_without_a_cache_compiles_with_fullgraph():
    """An audit: the check that a mask given without a KV cache hides later tokens read its values
    (`bool(mask.triu(1).any())`) under torch.compile too: fullgraph=True failed on the data-dependent
    branch, and on a GPU every forward waited for the host. It runs on CPU tensors outside the
    compiler only, as the ids' check; compiled, the left-padded forward matches eager."""
    from minigpt.prefill_decode import positions_from_mask, prefill_mask

    torch._dynamo.reset()
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=128, n_positions=32, n_embd=32, n_layer=1, n_head=2)).eval()
    idx = torch.randint(0, 128, (2, 8))
    mask = torch.ones(2, 8, dtype=torch.long)
    mask[1, :3] = 0
    kwargs = dict(position_ids=positions_from_mask(mask), attn_mask=prefill_mask(mask))
    with torch.no_grad():
        eager = model(idx, **kwargs)[0]
        compiled = torch.compile(model, fullgraph=True)(idx, **kwargs)[0]
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)


def tiny_model(n_layer: int = 2, dtype: torch.dtype = torch.float32) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=64, n_positions=32, n_embd=32, n_layer=n_layer, n_head=2)).to(dtype).eval()


def test_per_example_gradients_with_vmap_over_the_whole_model():
    """An interpretability audit: `vmap(grad(loss))` over `functional_call(model, ...)`, the
    torch.func recipe for per-example gradients, failed in the value checks: the targets' check
    indexes with a boolean mask and the ids' check reads `int(aminmax)`, neither of which vmap can
    batch. They are skipped under torch.func transforms; each example's gradient is the one plain
    autograd gives for that example alone."""
    from torch.func import functional_call, grad, vmap

    model = tiny_model()
    params = {name: p.detach() for name, p in model.named_parameters()}
    batch = torch.randint(0, 64, (3, 9), generator=torch.Generator().manual_seed(1))

    def loss(params, ids):  # one example, ids (T,)
        return functional_call(model, params, (ids[None, :-1],), {"targets": ids[None, 1:]})[1]

    per_example = vmap(grad(loss), in_dims=(None, 0))(params, batch)
    for i, ids in enumerate(batch):
        model.zero_grad()
        model(ids[None, :-1], targets=ids[None, 1:])[1].backward()
        for name, p in model.named_parameters():
            torch.testing.assert_close(per_example[name][i], p.grad, rtol=1e-5, atol=1e-7, msg=name)


def test_ids_past_the_vocabulary_are_named_under_torch_func_grad_as_without_it():
    """A review of the vmap fix: it skipped the value checks under every torch.func transform, so
    under `grad` alone (which reads values fine) ids past the vocabulary failed in the embedding as
    a bare IndexError. Only what vmap batches skips them now."""
    from torch.func import functional_call, grad

    model = tiny_model()
    params = {name: p.detach() for name, p in model.named_parameters()}
    bad = torch.tensor([[1, 2, 500]])
    with pytest.raises(ValueError, match=r"token ids must be in \[0, vocab_size=64\) for this model, got 500"):
        grad(lambda p: functional_call(model, p, (bad,), {"targets": torch.tensor([[2, 3, 4]])})[1])(params)


def test_forward_mode_ad_and_second_derivatives_through_attention_on_a_cpu():
    """An interpretability audit: `torch.func.jvp` (and jacfwd, hessian, fwAD.dual_level) through
    a block failed on a CPU: SDPA's flash kernel has no forward-mode derivative. Attention takes
    SDPA's math backend under them now. Double backward (a Hessian-vector product with
    create_graph=True) cannot be detected at forward time: under the README's
    `sdpa_kernel(SDPBackend.MATH)` it matches torch.func.hessian and finite differences."""
    import torch.autograd.forward_ad as fwAD
    from torch.nn.attention import SDPBackend, sdpa_kernel

    block = tiny_model(n_layer=1, dtype=torch.float64).transformer.h[0]
    gen = torch.Generator().manual_seed(2)
    x, v = torch.randn(1, 4, 32, dtype=torch.float64, generator=gen), torch.randn(1, 4, 32, dtype=torch.float64, generator=gen)
    # Reference: the full Jacobian by reverse mode (one backward per output, which the flash kernel has).
    jacobian = torch.autograd.functional.jacobian(block, x).reshape(x.numel(), x.numel())
    expected = (jacobian @ v.flatten()).reshape(x.shape)
    with torch.no_grad():
        _, tangent = torch.func.jvp(block, (x,), (v,))
    torch.testing.assert_close(tangent, expected)
    with fwAD.dual_level():
        tangent = fwAD.unpack_dual(block(fwAD.make_dual(x, v))).tangent
    torch.testing.assert_close(tangent, expected)

    def energy(x):  # a scalar function of the block's input
        return block(x).pow(2).sum()

    hessian = torch.func.hessian(energy)(x).reshape(x.numel(), x.numel())
    hvp_expected = (hessian @ v.flatten()).reshape(x.shape)
    eps = 1e-5  # central differences of the gradient, in float64: error ~eps²
    grad_at = lambda x: torch.func.grad(energy)(x)  # noqa: E731
    torch.testing.assert_close((grad_at(x + eps * v) - grad_at(x - eps * v)) / (2 * eps), hvp_expected, rtol=1e-6, atol=1e-6)
    with sdpa_kernel(SDPBackend.MATH):  # the README's workaround for double backward
        x_ = x.clone().requires_grad_()
        (g,) = torch.autograd.grad(energy(x_), x_, create_graph=True)
        (hvp,) = torch.autograd.grad((g * v).sum(), x_)
    torch.testing.assert_close(hvp, hvp_expected)


def test_torch_func_gradients_after_an_inference_call():
    """Found with the vmap fix above: once an inference call (grad off, more than 3 rows on this
    Intel CPU) had packed the weights for oneDNN, torch.func.grad over the model failed in Linear,
    which freed the packed copy through the wrapped weight's storage ("Cannot access storage of
    TensorWrapper")."""
    from torch.func import functional_call, grad

    from minigpt import linear

    model = tiny_model()
    batch = torch.randint(0, 64, (4, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        model(batch)  # packs the weights where oneDNN takes the product
    if not linear._PACKED:
        pytest.skip("nothing packed here (no x86 CPU, or MINIGPT_ONEDNN=0): the failure cannot occur")
    params = {name: p.detach() for name, p in model.named_parameters()}
    grads = grad(lambda p: functional_call(model, p, (batch[:, :-1],), {"targets": batch[:, 1:]})[1])(params)
    model(batch[:, :-1], targets=batch[:, 1:])[1].backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(grads[name], p.grad, msg=name)


@pytest.mark.parametrize("dtype", [torch.uint16, torch.int16, torch.uint8, torch.int32], ids=str)
def test_token_ids_and_targets_of_any_integer_dtype_are_taken(dtype):
    """An interpretability audit: ids as minigpt's own .bin token files hold them (uint16) failed in
    forward with torch's '"aminmax_cpu" not implemented for 'UInt16'', int16 and uint8 ones with
    the embedding's "Expected ... Long, Int", uint16 targets with '"lt_cpu" not implemented'. Any
    integer dtype is read as int64 ids now, as evaluate's check_ids and generate read them."""
    model = tiny_model()
    ids = torch.randint(0, 64, (2, 9), generator=torch.Generator().manual_seed(3))
    logits, loss = model(ids[:, :-1], targets=ids[:, 1:])
    logits_cast, loss_cast = model(ids[:, :-1].to(dtype), targets=ids[:, 1:].to(dtype))
    assert torch.equal(logits_cast, logits) and torch.equal(loss_cast, loss)
    assert torch.equal(model.hidden_states(ids.to(dtype)), model.hidden_states(ids))
    with pytest.raises(ValueError, match=r"token ids must be in \[0, vocab_size=64\) for this model, got 64 "):
        model(torch.full((1, 3), 64, dtype=dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bool], ids=str)
def test_token_ids_that_are_no_integers_name_idx_and_the_dtype(dtype):
    """An interpretability audit: float ids failed in the embedding ("Expected tensor for argument
    #1 'indices' to have one of the following scalar types: Long, Int"), while float targets got
    a clear TypeError: idx gets the same one."""
    model = tiny_model()
    with pytest.raises(TypeError, match=rf"idx must be an integer tensor of token ids \(B, T\), got {dtype}"):
        model(torch.ones(1, 3, dtype=dtype))


@pytest.mark.parametrize("keyword, hint", [
    ("inputs_embeds", r"forward hook on model\.transformer\.wte that returns out\.detach\(\)\.requires_grad_\(\)"),
    ("output_hidden_states", r"forward hooks on model\.transformer\.h\[i\].*hidden_states\[i \+ 1\].*after ln_f"),
])
def test_transformers_interpretability_keywords_name_the_hooks_to_use(keyword, hint):
    """An interpretability audit: inputs_embeds= and output_hidden_states=, transformers' routes to
    saliency and the residual stream, got a TypeError with no hint of minigpt's (forward hooks)."""
    model = tiny_model()
    idx = torch.zeros(1, 3, dtype=torch.long)
    with pytest.raises(TypeError, match=rf"^GPT.forward\(\) got unexpected keyword argument\(s\) '{keyword}'\..*{hint}"):
        model(idx, **{keyword: True})


def test_the_hooks_the_hints_name_give_what_transformers_keywords_give(small):
    """The routes the two hints above name, checked against transformers: the gradient at a hooked
    wte output is the inputs_embeds gradient, block i's output is hidden_states[i + 1], the last
    after ln_f (GPT.hidden_states)."""
    hf, _, model = small
    idx = torch.randint(0, 1000, (2, 7), generator=torch.Generator().manual_seed(4))
    captured = {}

    def leaf(module, args, out):
        captured["embeddings"] = out = out.detach().requires_grad_()
        return out

    hooks = [model.transformer.wte.register_forward_hook(leaf)]
    hooks += [block.register_forward_hook(lambda module, args, out, i=i: captured.__setitem__(i, out.detach()))
              for i, block in enumerate(model.transformer.h)]
    try:
        model(idx)[0][:, -1, 5].sum().backward()
    finally:
        for hook in hooks:
            hook.remove()
        model.zero_grad(set_to_none=True)  # the fixture's model is shared with other tests
    embeds = hf.transformer.wte(idx).detach().requires_grad_()
    out = hf(inputs_embeds=embeds, output_hidden_states=True)
    out.logits[:, -1, 5].sum().backward()
    hf.zero_grad(set_to_none=True)
    print(f"saliency max |Δ| {max_diff(captured['embeddings'].grad, embeds.grad):.2e}")
    torch.testing.assert_close(captured["embeddings"].grad, embeds.grad, rtol=1e-5, atol=1e-6)
    last = len(model.transformer.h) - 1
    for i in range(last):
        torch.testing.assert_close(captured[i], out.hidden_states[i + 1], rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(model.hidden_states(idx), out.hidden_states[last + 1], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(model.transformer.ln_f(captured[last]), out.hidden_states[last + 1], rtol=1e-5, atol=1e-5)


def test_stats_peak_memory_says_it_is_the_processs_peak_so_far():
    """An audit of a long-lived service: `--stats` / return_stats printed "peak memory" as if it were
    the call's, but it is the process's peak so far (peak RSS, or CUDA's max_memory_allocated),
    which no call resets: a call after another request's 256 MiB reports at least that. The line says so."""
    from minigpt.stats import GenerationStats, peak_memory_bytes

    model = GPT(GPTConfig(vocab_size=64, n_positions=16, n_embd=32, n_layer=1, n_head=2)).eval()
    ids = torch.zeros(1, 4, dtype=torch.long)
    big = torch.ones(2**26)  # 256 MiB, freed before the call
    big.add_(1)  # (touched: its pages count in the RSS)
    del big
    _, stats = generate(model, ids, torch.ones_like(ids), max_new_tokens=2, return_stats=True)
    assert 2**28 <= stats.peak_memory_bytes <= peak_memory_bytes(torch.device("cpu"))
    assert "process peak memory 300 MiB" in str(GenerationStats(peak_memory_bytes=300 * 2**20))


def test_peak_memory_is_the_processs_own_not_its_parents(tmp_path):
    """A review of the --memory benchmark: on Linux, getrusage's ru_maxrss survives exec, so a process
    started by a bigger one (a notebook, a test runner) reported its parent's peak as its own, in
    --stats and finetune's peak_memory_mib. The parent here holds 1 GiB; the child holds far less."""
    if not sys.platform.startswith("linux"):
        pytest.skip("ru_maxrss carries across exec on Linux only")
    held = torch.ones(2**28)  # 1 GiB, touched, so it is resident in this process when the child starts
    child = ("import torch\nfrom minigpt.stats import peak_memory_bytes\n"
             "print(peak_memory_bytes(torch.device('cpu')))")
    done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, cwd=Path(__file__).parents[1], check=True)
    del held
    assert 2**24 < int(done.stdout) < 2**29, done.stdout  # torch's own few hundred MiB, not the parent's 1 GiB


def test_repr_shows_each_attentions_heads_and_dropout_rate():
    """An audit: repr(GPT) showed resid_dropout's rate but not the attention weights' (a float for
    SDPA, not a module), nor the number of heads. set_dropout changes what it shows."""
    model = GPT(GPTConfig.gpt2("gpt2-tiny", dropout=0.1))
    assert "CausalSelfAttention(\n    n_head=4, dropout=0.1\n" in repr(model.transformer.h[0])
    model.set_dropout(0.25)
    assert repr(model.transformer.h[0].attn).startswith("CausalSelfAttention(\n  n_head=4, dropout=0.25\n")
