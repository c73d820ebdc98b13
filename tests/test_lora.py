"""LoRA adapters: start as a no-op, train only A/B, and merge into plain weights exactly."""
import json
import re
import tempfile

import pytest
import torch
import torch.nn as nn

from minigpt import GPT, GPTConfig
from minigpt.finetune import apply_strategy
from minigpt.lora import LoRALinear, inject_lora, merge_lora

CFG = GPTConfig.gpt2("gpt2-tiny", vocab_size=97, bos_token_id=0, eos_token_id=0)


def _model(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(CFG).eval()


def test_inject_wraps_targets_and_starts_as_identity():
    model = _model()
    idx = torch.randint(0, CFG.vocab_size, (2, 9))
    before = model(idx)[0]
    names = inject_lora(model, ("c_attn", "mlp.c_proj"), rank=4, alpha=8)
    assert names == [f"transformer.h.{i}.{m}" for i in range(CFG.n_layer) for m in ("attn.c_attn", "mlp.c_proj")]
    assert isinstance(model.transformer.h[0].attn.c_attn, LoRALinear)
    assert isinstance(model.transformer.h[0].attn.c_proj, nn.Linear)  # "mlp.c_proj" does not match attn.c_proj
    after = model(idx)[0]
    assert torch.equal(before, after), "B starts at zero, so the wrapped model computes exactly the same"


def test_merged_equals_unmerged_and_saves_as_plain_gpt():
    model = _model()
    inject_lora(model, rank=4, alpha=16)
    with torch.no_grad():  # a trained-looking adapter: B nonzero
        for m in model.modules():
            if isinstance(m, LoRALinear):
                m.lora_B.normal_(std=0.05)
    idx = torch.randint(0, CFG.vocab_size, (2, 11))
    unmerged = model(idx)[0]
    merge_lora(model)
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    merged = model(idx)[0]
    diff = (merged - unmerged).abs().max().item()
    print(f"max |merged - unmerged| = {diff:.2e}")
    assert diff < 3e-6  # measured 4.6e-7
    assert (unmerged - _model()(idx)[0]).abs().max() > 1e-3, "the adapter must actually change the output"
    with tempfile.TemporaryDirectory() as d:  # merged model has the plain GPT-2 key set
        model.save_pretrained(d)
        assert torch.equal(GPT.from_pretrained(d)(idx)[0], merged)
    # An audit: the merged layers stayed frozen, though the model is "a plain GPT again": each
    # parameter trains or not as it did before the adapters came.
    assert all(p.requires_grad for p in model.parameters())


def test_a_save_merges_for_its_time_only_and_copies_no_model(tmp_path, monkeypatch):
    """A finetuner audit: each LoRA checkpoint merged a deep copy of the model, a second model on
    the training device. `lora_merged` saves what merge_lora(deepcopy) saved, bit for bit, without
    copying the model; afterwards the model is exactly as before (the same adapter modules, the
    pretrained weights bit for bit), also when the save fails."""
    import copy

    from minigpt.finetune import export
    from minigpt.lora import lora_merged
    from minigpt.tokenizer import Tokenizer

    model = _model()
    inject_lora(model, rank=4, alpha=16)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, LoRALinear):
                m.lora_B.normal_(std=0.05)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    adapters = [m for m in model.modules() if isinstance(m, LoRALinear)]
    trains = {n: p.requires_grad for n, p in model.named_parameters()}  # the base weights frozen, A and B not
    merge_lora(copy.deepcopy(model)).save_pretrained(tmp_path / "copy")
    deepcopy = copy.deepcopy

    def no_module_copies(x, memo=None):  # export copies no module now (dataclasses' asdict copies the config)
        assert not isinstance(x, nn.Module), "a module was copied"
        return deepcopy(x, memo)

    monkeypatch.setattr(copy, "deepcopy", no_module_copies)
    export(model, tmp_path / "export", Tokenizer.train("a few words here and there " * 20, 270, progress=False),
           model.config.n_positions)
    assert (tmp_path / "copy" / "model.safetensors").read_bytes() == (tmp_path / "export" / "model.safetensors").read_bytes()
    assert [m for m in model.modules() if isinstance(m, LoRALinear)] == adapters
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert {n: p.requires_grad for n, p in model.named_parameters()} == trains
    with pytest.raises(OSError):
        with lora_merged(model):
            assert not any(isinstance(m, LoRALinear) for m in model.modules())
            raise OSError("disk full")
    assert [m for m in model.modules() if isinstance(m, LoRALinear)] == adapters
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_merging_keeps_what_apply_strategy_froze_frozen():
    model = _model()
    apply_strategy(model, "lora", lora_rank=4)
    merge_lora(model)
    assert not any(p.requires_grad for p in model.parameters())  # lora freezes the whole backbone


def test_adapters_follow_the_mode_of_the_model_they_join():
    """Injected into an eval-mode model (as GPT.from_pretrained returns), the adapters' dropout is off."""
    model = _model()  # in eval mode
    inject_lora(model, rank=4, dropout=0.5)
    assert not any(m.training for m in model.modules())
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, LoRALinear):
                m.lora_B.normal_(std=0.05)
    idx = torch.randint(0, CFG.vocab_size, (2, 11))
    unmerged = model(idx)[0]
    assert torch.equal(unmerged, model(idx)[0]), "eval mode: no dropout, so the same output every call"
    diff = (merge_lora(model)(idx)[0] - unmerged).abs().max().item()
    print(f"dropout 0.5, eval mode: max |merged - unmerged| = {diff:.2e}")
    assert diff < 3e-6  # measured 4.6e-7
    model = _model().train()
    inject_lora(model, rank=4, dropout=0.5)
    assert all(m.training for m in model.modules())


def test_lora_dropout_drops_the_adapters_input_as_peft_does():
    """In training mode the update is scaling · B·A·dropout(x): the adapters see dropped inputs,
    the frozen base layer the whole x (PEFT's LoRA; dropping the update's output would differ)."""
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(8, 6), rank=2, alpha=4.0, dropout=0.5).train()
    nn.init.normal_(layer.lora_B)
    x = torch.randn(3, 8)
    torch.manual_seed(1)
    out = layer(x)
    torch.manual_seed(1)
    dropped = nn.functional.dropout(x, 0.5, training=True)
    torch.testing.assert_close(out, layer.base(x) + layer.scaling * (dropped @ layer.lora_A.t() @ layer.lora_B.t()))


def test_bad_lora_arguments():
    with pytest.raises(ValueError, match="match no nn.Linear"):
        inject_lora(_model(), ("q_proj",))
    with pytest.raises(ValueError, match="rank must be positive"):
        inject_lora(_model(), rank=0)
    with pytest.raises(ValueError, match="exceeds"):
        inject_lora(_model(), rank=CFG.n_embd + 1)
    with pytest.raises(ValueError, match=r"LoRA alpha \(--lora-alpha\) must be a finite number > 0, got nan"):  # else every output is NaN
        inject_lora(_model(), alpha=float("nan"))
    model = _model()
    with pytest.raises(ValueError, match=r"cannot adapt \['lm_head'\]: its weight is tied"):
        inject_lora(model, ("lm_head", "c_attn"))  # merging into lm_head would change wte too
    assert not any(isinstance(m, LoRALinear) for m in model.modules()), "refused before wrapping anything"
    inject_lora(model)
    with pytest.raises(ValueError, match="already has LoRA adapters"):
        inject_lora(model)


def test_targets_as_one_string_and_a_rank_that_is_no_int():
    """inject_lora(model, "c_attn") split the string into its characters (apply_strategy did not);
    rank=2.5 failed in torch.empty ("empty() takes 1 positional argument")."""
    assert inject_lora(_model(), "c_attn", rank=2) == [f"transformer.h.{i}.attn.c_attn" for i in range(CFG.n_layer)]
    assert inject_lora(_model(), "c_attn, mlp.c_fc", rank=2) == inject_lora(_model(), ("c_attn", "mlp.c_fc"), rank=2)
    for rank in (2.5, True, "2"):
        model = _model()
        with pytest.raises(TypeError, match=f"LoRA rank must be an integer, got (the bool )?{re.escape(repr(rank))}"):
            inject_lora(model, rank=rank)
        assert not any(isinstance(m, LoRALinear) for m in model.modules())
    with pytest.raises(TypeError, match="LoRA rank must be an integer, got 2.5"):
        apply_strategy(_model(), "lora", lora_rank=2.5)


def test_a_rank_too_big_for_a_later_layer_changes_nothing():
    """Layers of different sizes (here an MLP narrower than the residual stream): the rank was
    checked layer by layer while wrapping, so the first layers were wrapped (and, through
    apply_strategy, the model frozen) before a later one refused it."""
    from minigpt.finetune import apply_strategy

    torch.manual_seed(0)
    model = GPT(GPTConfig.gpt2("gpt2-tiny", vocab_size=64, n_inner=32))  # c_attn (192, 64), c_fc (32, 64)
    with pytest.raises(ValueError, match=r"LoRA rank 48 exceeds transformer.h.0.mlp.c_fc's smaller side min\(64, 32\)"):
        inject_lora(model, rank=48)
    with pytest.raises(ValueError, match="LoRA rank 48 exceeds"):
        apply_strategy(model, "lora", lora_rank=48)
    assert not any(isinstance(m, LoRALinear) for m in model.modules()) and all(p.requires_grad for p in model.parameters())
    apply_strategy(model, "lora", lora_rank=16, verbose=False)  # a rank that fits: not "already has LoRA adapters"


def test_saving_unmerged_adapters_is_refused(tmp_path):
    """Their tensors have no name in GPT-2's layout: the file would load nowhere, so say so."""
    from minigpt.classifier import GPTClassifier

    model = _model()
    inject_lora(model)
    with pytest.raises(ValueError, match="merge them first with minigpt.lora.merge_lora"):
        model.save_pretrained(tmp_path / "lm")
    with pytest.raises(ValueError, match="merge them first"):
        GPTClassifier(model, num_labels=2).save_pretrained(tmp_path / "classifier")
    assert not (tmp_path / "lm").exists() and not (tmp_path / "classifier").exists()


LORA_CFG = GPTConfig.gpt2("gpt2-tiny", vocab_size=97, bos_token_id=0, eos_token_id=0)


def test_targets_match_whole_name_components_not_a_name_suffix():
    """Bug guarded: matching targets with a plain `name.endswith(t)` made "proj" select every
    c_proj and "fc" select mlp.c_fc, wrapping layers the user never named (and changing what
    trains) instead of refusing a target that names no layer."""
    torch.manual_seed(0)
    model = GPT(LORA_CFG).eval()
    for partial in (("proj",), ("fc",), ("attn",)):
        with pytest.raises(ValueError, match="match no nn.Linear"):
            inject_lora(model, partial, rank=2)
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    assert inject_lora(model, ("c_fc",), rank=2) == [f"transformer.h.{i}.mlp.c_fc" for i in range(LORA_CFG.n_layer)]


def test_update_is_scaled_by_alpha_over_rank_and_a_full_rank_update_is_allowed():
    """Mutants R7-8/R7-9: the layer computes base(x) + (alpha / r)·x·(B@A)ᵀ, the paper's scaling (not
    rsLoRA's alpha / sqrt(r), which changes every adapter's step size); and a rank equal to the
    smaller side (a full-rank update) is allowed, as the error's "exceeds" says: only a larger one is refused."""
    torch.manual_seed(0)
    base = nn.Linear(8, 6)
    layer = LoRALinear(base, rank=6, alpha=3.0)  # r = min(8, 6)
    nn.init.normal_(layer.lora_B)
    x = torch.randn(4, 8)
    assert layer.scaling == 0.5
    torch.testing.assert_close(layer(x), base(x) + 0.5 * x @ (layer.lora_B @ layer.lora_A).t())
    with pytest.raises(ValueError, match=r"LoRA rank 7 exceeds the layer's smaller side min\(8, 6\)"):
        LoRALinear(nn.Linear(8, 6), rank=7, alpha=1.0)


def test_inject_passes_its_dropout_on_and_freezes_only_the_wrapped_layers():
    """Mutants R7-10/R7-14: inject_lora built its adapters without the dropout asked for (the
    default 0: --lora-dropout ignored), or left the wrapped base weight trainable (the frozen W
    would then train too, on a model not frozen by finetune.apply_strategy). The rest of the
    model is left as it was."""
    model = _model().train()
    inject_lora(model, ("c_attn",), rank=4, dropout=0.25)
    lora = [m for m in model.modules() if isinstance(m, LoRALinear)]
    assert len(lora) == CFG.n_layer and all(m.dropout.p == 0.25 for m in lora)
    assert not any(p.requires_grad for m in lora for p in m.base.parameters())
    assert all(m.lora_A.requires_grad and m.lora_B.requires_grad for m in lora)
    assert model.transformer.h[0].mlp.c_fc.weight.requires_grad and model.transformer.wte.weight.requires_grad
    with pytest.raises(ValueError, match=r"LoRA dropout must be in \[0, 1\), got 1.0"):  # mutant R7-11: 1.0 drops every input
        inject_lora(_model(), dropout=1.0)


def test_target_string_with_a_stray_comma_and_find_lora_targets_taking_a_string():
    """Mutants R10-37/R10-40: "c_attn," (a trailing comma, as a shell line may leave) gave an empty
    target name beside c_attn; find_lora_targets, which finetune_config calls on its own, split a
    one-string target into its characters."""
    from minigpt.lora import find_lora_targets, target_names

    assert target_names("c_attn, ") == target_names(" c_attn ,,") == ("c_attn",)
    expected = [f"transformer.h.{i}.attn.c_attn" for i in range(CFG.n_layer)]
    assert inject_lora(_model(), "c_attn,", rank=2) == expected
    assert find_lora_targets(_model(), "c_attn", 2, 4.0, 0.0) == expected


def test_a_target_that_names_no_layer_is_refused_beside_ones_that_do():
    """Bug: find_lora_targets refused targets only when none of them matched, so a typo beside a
    good name (`--lora-targets attn.c_attn,attn.cproj`) silently trained without the second
    projection's adapters, while every other ignored option is refused."""
    model = _model()
    with pytest.raises(ValueError, match=r"LoRA target\(s\) \['attn.cproj'\] match no nn.Linear"):
        inject_lora(model, ("attn.c_attn", "attn.cproj"), rank=2)
    assert not any(isinstance(m, LoRALinear) for m in model.modules()), "refused before wrapping anything"


@pytest.mark.parametrize("alpha", [0.0, 0, -16.0, float("inf")])
def test_an_alpha_that_cannot_scale_a_trained_update_is_refused(alpha):
    """Bug: --lora-alpha 0 was accepted. The update is scaled by alpha / r = 0, so B's gradient is
    0 too: B stays 0, and the "fine-tuned" weights were --init's, bit for bit. Refused with the
    flag and the range; a negative alpha (the same update, its sign flipped) is refused as a slip."""
    model = _model()
    with pytest.raises(ValueError, match=r"LoRA alpha \(--lora-alpha\) must be a finite number > 0, got "):
        inject_lora(model, alpha=alpha)
    assert not any(isinstance(m, LoRALinear) for m in model.modules()), "refused before wrapping anything"
    layer = LoRALinear(nn.Linear(8, 6), rank=2, alpha=1e-3)  # any positive alpha trains
    layer(torch.randn(3, 8)).sum().backward()
    assert layer.lora_B.grad.abs().sum() > 0



@pytest.mark.parametrize("kwargs, match", [(dict(alpha="16"), "LoRA alpha must be a number, got '16'"),
                                           (dict(dropout=None), "LoRA dropout must be a number, got None")])
def test_an_alpha_or_dropout_that_is_no_number_is_named(kwargs, match):
    """An audit: alpha="16" failed in math.isfinite ("must be real number, not str")."""
    with pytest.raises(TypeError, match=match):
        inject_lora(_model(), **kwargs)


def test_a_target_that_names_no_layer_is_told_the_names_that_can_take_adapters():
    """The error lists the layers within a block, dotted as a target names them, and not lm_head,
    which is tied to wte and refused (it once listed ['c_attn', 'c_fc', 'c_proj', 'lm_head'])."""
    with pytest.raises(ValueError) as e:
        inject_lora(_model(), "q_proj", rank=2)
    assert "the layers that can take adapters are ['attn.c_attn', 'attn.c_proj', 'mlp.c_fc', 'mlp.c_proj']" in str(e.value)


def _adapted(seed: int = 0, targets=("attn.c_attn", "mlp.c_proj")) -> GPT:
    """A model with adapters whose B is not 0, so that they change its logits."""
    model = _model(seed)
    inject_lora(model, targets, rank=4, alpha=8.0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, LoRALinear):
                m.lora_B.normal_(0, 0.5)
    return model


def test_saved_adapters_load_back_onto_the_base_as_the_same_model(tmp_path):
    """save_adapters writes A and B alone; load_adapters on a fresh copy of the base gives the
    adapted model's logits, before and after merging."""
    from minigpt.lora import load_adapters, save_adapters

    adapted, ids = _adapted(), torch.randint(0, CFG.vocab_size, (2, 9))
    save_adapters(adapted, tmp_path / "adapter", base="my-base")
    base = _model()
    names = load_adapters(base, tmp_path / "adapter")
    assert len(names) == 2 * CFG.n_layer and all(isinstance(base.get_submodule(n), LoRALinear) for n in names)
    with torch.no_grad():
        torch.testing.assert_close(base(ids)[0], adapted(ids)[0], rtol=0, atol=0)
        torch.testing.assert_close(merge_lora(base)(ids)[0], adapted(ids)[0], rtol=1e-5, atol=1e-5)
    size = (tmp_path / "adapter" / "adapter_model.safetensors").stat().st_size
    adapters = sum(m.lora_A.numel() + m.lora_B.numel() for m in adapted.modules() if isinstance(m, LoRALinear))
    assert size < adapters * 4 + 4096  # the adapters' fp32 values and a header, not the model


def _hf_base(tmp_path):
    """transformers' GPT-2 at CFG's shape, and minigpt's load of it."""
    import transformers

    hf_cfg = transformers.GPT2Config(n_layer=CFG.n_layer, n_head=CFG.n_head, n_embd=CFG.n_embd, vocab_size=CFG.vocab_size,
                                     n_positions=CFG.n_positions, bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(hf_cfg).save_pretrained(tmp_path / "base")
    return transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "base").eval(), GPT.from_pretrained(tmp_path / "base")


def test_adapters_go_both_ways_between_minigpt_and_peft(tmp_path):
    """The adapter files are PEFT's: PEFT puts minigpt's on transformers' GPT-2 (whose Conv1D keeps
    W as (in, out): fan_in_fan_out), and minigpt reads PEFT's, with the same logits either way."""
    import peft

    from minigpt.lora import load_adapters, save_adapters

    ids = torch.randint(0, CFG.vocab_size, (2, 9))
    hf, ours = _hf_base(tmp_path)
    inject_lora(ours, ("attn.c_attn", "mlp.c_proj"), rank=4, alpha=8.0, dropout=0.1)
    ours.eval()
    with torch.no_grad():
        for m in ours.modules():
            if isinstance(m, LoRALinear):
                m.lora_B.normal_(0, 0.5)
    save_adapters(ours, tmp_path / "ours", base=str(tmp_path / "base"))
    theirs = peft.PeftModel.from_pretrained(hf, tmp_path / "ours").eval()
    assert theirs.peft_config["default"].lora_dropout == 0.1
    with torch.no_grad():
        torch.testing.assert_close(theirs(ids).logits, ours(ids)[0], rtol=1e-4, atol=1e-4)

    hf2, base = _hf_base(tmp_path)  # the other way: PEFT trains (here: random B), minigpt loads
    peft_model = peft.get_peft_model(hf2, peft.LoraConfig(r=2, lora_alpha=6, target_modules=["c_proj"], fan_in_fan_out=True))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    peft_model.save_pretrained(tmp_path / "theirs")
    assert len(load_adapters(base, tmp_path / "theirs")) == 2 * CFG.n_layer  # c_proj: attn's and mlp's
    with torch.no_grad():
        torch.testing.assert_close(base.eval()(ids)[0], peft_model.eval()(ids).logits, rtol=1e-4, atol=1e-4)


def test_set_dropout_passes_over_peft_adapters_and_numpy_settings_save(tmp_path):
    """Reviews: set_dropout took every module with a lora_A for minigpt's LoRALinear, and failed on
    PEFT's ("'Linear' object has no attribute 'dropout'"); and a NumPy alpha or dropout passed the
    checks but was kept, so save_adapters failed ("Object of type float32 is not JSON serializable")."""
    import numpy as np
    import peft

    from minigpt.lora import save_adapters

    model = peft.inject_adapter_in_model(peft.LoraConfig(r=2, lora_dropout=0.5, target_modules=["c_attn"]), _model())
    model.set_dropout(0.2)
    assert sorted({m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)}) == [0.2, 0.5]
    model = _model()
    inject_lora(model, ("c_attn",), rank=2, alpha=np.float32(4.0), dropout=np.float32(0.1))
    save_adapters(model, tmp_path / "a", base="gpt2")
    settings = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert (settings["lora_alpha"], settings["lora_dropout"]) == (4.0, pytest.approx(0.1))


def test_adapter_files_that_do_not_fit_are_refused_and_change_nothing(tmp_path):
    """A missing tensor, a wrong rank, a PEFT option minigpt's LoRA does not compute, or a folder of
    no adapters: each named, and the model is left without adapters."""
    import json

    from safetensors.torch import load_file, save_file

    from minigpt.lora import load_adapters, save_adapters

    save_adapters(_adapted(), tmp_path / "a")
    config, weights = tmp_path / "a" / "adapter_config.json", tmp_path / "a" / "adapter_model.safetensors"
    tensors, settings = load_file(str(weights)), json.loads(config.read_text())

    def refused(match, tensors=tensors, **changes):
        save_file(tensors, str(weights))
        config.write_text(json.dumps({**settings, **changes}))
        model = _model()
        with pytest.raises((ValueError, TypeError), match=match):
            load_adapters(model, tmp_path / "a")
        assert not any(isinstance(m, LoRALinear) for m in model.modules())

    first = next(iter(tensors))
    refused(r"missing 'base_model\.model\.transformer\.h\.0\.attn\.c_attn\.lora_A\.weight', unexpected none$",
            tensors={k: v for k, v in tensors.items() if k != first})
    refused(r"lora_A\.weight has shape \(4, 64\); transformer\.h\.0\.attn\.c_attn with rank 2 needs \(2, 64\)", r=2)
    refused(r"sets use_dora=True: minigpt's LoRA", use_dora=True)
    refused(r"sets bias='all'", bias="all")
    refused(r"not a LoRA adapter's config \(peft_type 'IA3'", peft_type="IA3")
    refused(r"LoRA targets \['lm_head'\] match no|LoRA cannot adapt \['lm_head'\]", target_modules=["lm_head"])
    with pytest.raises(FileNotFoundError, match="holds no adapter_config.json: not a folder of LoRA adapters"):
        load_adapters(_model(), tmp_path)
    with pytest.raises(ValueError, match="the model has no LoRA adapters to save"):
        save_adapters(_model(), tmp_path / "b")
    config.write_text(json.dumps(settings))  # saved with no base (save_adapters' base=None)
    with pytest.raises(FileNotFoundError, match=r"holds LoRA adapters alone, and its adapter_config\.json names no base "
                                                r"model \(base_model_name_or_path\): load the base, then minigpt\.lora\.load_adapters"):
        GPT.from_pretrained(tmp_path / "a")


def test_an_adapter_weights_file_that_cannot_be_read_is_named_as_the_base_weights_are(tmp_path, capsys):
    """An audit: a truncated adapter_model.safetensors or a Git LFS pointer there was safetensors' own
    traceback ("header too large"), where the same damage to model.safetensors is one line; int64
    tensors loaded silently, cast by copy_; and a FIFO or a link to /dev/zero was "holds no
    adapter_model.safetensors". Each is now a ValueError naming the file, and `minigpt generate` one
    line with exit status 2, as for the base's weights."""
    import os

    from safetensors.torch import load_file, save_file

    from minigpt.generate_cli import main as generate_main
    from minigpt.lora import load_adapters, save_adapters

    _model().save_pretrained(tmp_path / "base")
    folder = tmp_path / "adapter"
    save_adapters(_adapted(), folder, base=str(tmp_path / "base"))
    weights = folder / "adapter_model.safetensors"
    good = weights.read_bytes()
    cases = {"truncated": (good[:500], r"adapter_model\.safetensors is not a readable safetensors file \(truncated or corrupt\?\)"),
             "LFS pointer": (b"version https://git-lfs.github.com/spec/v1\noid sha256:" + b"0" * 64 + b"\nsize 9999\n",
                             r"adapter_model\.safetensors is a Git LFS pointer, not the file itself: .*git lfs pull"),
             "int64": (None, r"tensor 'base_model\.model\.transformer\.h\.0\.attn\.c_attn\.lora_A\.weight' in "
                             r".*adapter_model\.safetensors has dtype torch\.int64; LoRA's A and B are floating point")}
    for case, (content, match) in cases.items():
        if content is None:
            weights.write_bytes(good)
            save_file({k: (v * 1000).to(torch.int64) for k, v in load_file(str(weights)).items()}, str(weights))
        else:
            weights.write_bytes(content)
        model = _model()
        with pytest.raises(ValueError, match=match):
            load_adapters(model, folder)
        assert not any(isinstance(m, LoRALinear) for m in model.modules()), case
    assert generate_main(["--model", str(folder), "--prompt", "a", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "has dtype torch.int64; LoRA's A and B are floating point" in err, err
    if hasattr(os, "mkfifo"):  # (Windows has none)
        weights.unlink()
        os.mkfifo(weights)
        with pytest.raises(ValueError, match=r"adapter_model\.safetensors is not a regular file \(a device, FIFO or socket\)"):
            load_adapters(_model(), folder)


def test_a_folder_of_adapters_loads_as_its_base_with_them_merged_in(tmp_path, monkeypatch, capsys):
    """A left-alone item: `GPT.from_pretrained(OUT/adapter)` and `minigpt generate --model
    OUT/adapter` were refused with how to load the adapters by hand. As transformers with PEFT does,
    such a folder now loads its base (adapter_config.json's base_model_name_or_path, read from the
    working directory when relative) with the adapters on it, here merged: a plain GPT; its tokenizer
    is the base's. PEFT's own adapter folders load so too, and a base that does not load is named."""
    import json
    import shutil

    from minigpt.evaluate import main as eval_main
    from minigpt.generate_cli import main as generate_main
    from minigpt.lora import save_adapters
    from minigpt.tokenizer import Tokenizer, model_tokenizer

    tok = Tokenizer.train("a small text, a small text", vocab_size=260)
    cfg = GPTConfig.gpt2("gpt2-tiny", vocab_size=tok.vocab_size, bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    GPT(cfg).save_pretrained(tmp_path / "base")
    tok.save_pretrained(tmp_path / "base")
    adapted = GPT.from_pretrained(tmp_path / "base")
    inject_lora(adapted, ("attn.c_attn", "mlp.c_proj"), rank=4, alpha=8.0)
    with torch.no_grad():
        for m in adapted.modules():
            if isinstance(m, LoRALinear):
                m.lora_B.normal_(0, 0.5)
    monkeypatch.chdir(tmp_path)
    save_adapters(adapted, tmp_path / "adapter", base="base")  # relative, as `--init base` records it
    loaded = GPT.from_pretrained(tmp_path / "adapter")
    assert type(loaded) is GPT and not any(isinstance(m, LoRALinear) for m in loaded.modules()) and not loaded.training
    ids = torch.randint(0, cfg.vocab_size, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids)[0], adapted(ids)[0], rtol=1e-5, atol=1e-5)
        assert not torch.equal(loaded(ids)[0], GPT.from_pretrained("base")(ids)[0])  # the adapters are in
    assert GPT.from_pretrained(tmp_path / "adapter", dtype="bfloat16").transformer.wte.weight.dtype == torch.bfloat16
    assert model_tokenizer(tmp_path / "adapter").encode("a small text") == Tokenizer.from_pretrained("base").encode("a small text")
    assert generate_main(["--model", "adapter", "--prompt", "a small", "--max-new-tokens", "3", "--temperature", "0",
                          "--device", "cpu"]) == 0
    assert capsys.readouterr().out.startswith("a small")
    (tmp_path / "t.txt").write_text("a small text, a small text, a small text")
    assert eval_main(["adapter", "t.txt", "--device", "cpu", "--json"]) == 0 and eval_main(["base", "t.txt", "--json"]) == 0
    scores = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert scores[0]["tokens"] == scores[1]["tokens"] and scores[0]["nll"] != scores[1]["nll"]  # the base's tokenizer

    config = tmp_path / "adapter" / "adapter_config.json"
    settings = json.loads(config.read_text())
    config.write_text(json.dumps({**settings, "base_model_name_or_path": "gone"}))
    with pytest.raises(FileNotFoundError, match=r"adapter holds LoRA adapters for the base model 'gone' \(its "
                                                r"adapter_config\.json's base_model_name_or_path\), which did not load: "
                                                r"checkpoint directory gone does not exist"):
        GPT.from_pretrained(tmp_path / "adapter")
    assert generate_main(["--model", "adapter", "--prompt", "a", "--device", "cpu"]) == 2
    assert "adapters for the base model 'gone'" in capsys.readouterr().err
    config.write_text(json.dumps({**settings, "base_model_name_or_path": str(tmp_path / "adapter")}))
    with pytest.raises(ValueError, match=r"name base models that loop back \(.*adapter → .*adapter\)"):
        GPT.from_pretrained(tmp_path / "adapter")
    # A review: two folders naming each other were a RecursionError (loading, and finding the tokenizer).
    shutil.copytree(tmp_path / "adapter", tmp_path / "other")
    config.write_text(json.dumps({**settings, "base_model_name_or_path": "other"}))
    (tmp_path / "other" / "adapter_config.json").write_text(json.dumps({**settings, "base_model_name_or_path": "adapter"}))
    for load in (GPT.from_pretrained, model_tokenizer):
        with pytest.raises(ValueError, match=r"the LoRA adapters in adapter name base models that loop back "
                                             r"\(adapter → other → adapter\): fix base_model_name_or_path"):
            load("adapter")


@pytest.mark.parametrize("targets", [["c_attn"], ["c_attn", "q_proj", "v_proj"]])
def test_a_peft_adapter_folder_loads_as_transformers_loads_it(tmp_path, targets):
    """transformers (with PEFT installed) opens an adapter folder as its base with the adapters on;
    GPT.from_pretrained of the same folder gives the same logits. A config that also names other
    architectures' layers (q_proj, v_proj: an audit found it refused) loads as PEFT loads it."""
    import peft
    import transformers

    hf, _ = _hf_base(tmp_path)
    peft_model = peft.get_peft_model(hf, peft.LoraConfig(r=2, lora_alpha=6, target_modules=targets, fan_in_fan_out=True))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    peft_model.save_pretrained(tmp_path / "theirs")  # base_model_name_or_path: tmp_path / "base"
    assert sorted(json.loads((tmp_path / "theirs" / "adapter_config.json").read_text())["target_modules"]) == sorted(targets)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "theirs").eval()
    ids = torch.randint(0, CFG.vocab_size, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(GPT.from_pretrained(tmp_path / "theirs")(ids)[0], theirs(ids).logits, rtol=1e-4, atol=1e-4)


@pytest.mark.skipif(not hasattr(__import__("signal"), "SIGXFSZ"), reason="a file size limit (ulimit -f) is POSIX's")
def test_adapters_over_the_file_size_limit_fail_as_the_oserror_they_are(tmp_path):
    """A review: save_adapters wrote with safetensors' save_file, whose failed write (a full disk,
    a file over `ulimit -f`) is a SafetensorError, which `minigpt finetune` does not report as a
    failed save (it printed a traceback, and not which checkpoint stands). It now writes as a
    checkpoint's weights are written: the system's OSError, and nothing left behind."""
    import errno
    import resource

    from minigpt.lora import save_adapters

    model = _adapted()
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))  # (Python ignores SIGXFSZ: a write fails with EFBIG)
    try:
        with pytest.raises(OSError) as failed:
            save_adapters(model, tmp_path / "adapter")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert failed.value.errno == errno.EFBIG and list((tmp_path / "adapter").iterdir()) == []


def test_merge_lora_is_typed_as_returning_the_model_it_was_given():
    """An audit: merge_lora was typed `(nn.Module) -> nn.Module`, so README's
    `merge_lora(clf).save_pretrained(...)` was a type error (nn.Module has no save_pretrained). It
    returns its argument, typed with a TypeVar bound to nn.Module: the caller's GPT stays a GPT."""
    import typing

    from minigpt.lora import M

    hints = typing.get_type_hints(merge_lora)
    assert hints["model"] is M and hints["return"] is M and M.__bound__ is nn.Module
    model = _model()
    inject_lora(model, rank=2)
    assert merge_lora(model) is model and not any(isinstance(m, LoRALinear) for m in model.modules())


def test_help_on_lora_linear_init_says_what_its_arguments_are():
    """An audit: LoRALinear.__init__ had no docstring, so help() showed nn.Module's "Initialize
    internal Module state" and nothing of rank, alpha or dropout."""
    doc = LoRALinear.__init__.__doc__
    assert doc is not None and "`alpha / rank`" in doc and "`dropout`" in doc


# ---- PEFT applied to minigpt's GPT, and adapters moved between minigpt and PEFT ------------------

def _randomize_trainable(peft_model) -> None:
    """Trained-looking adapters: every trainable PEFT tensor (LoRA's A and B, token rows) random."""
    with torch.no_grad():
        for p in peft_model.parameters():
            if p.requires_grad:
                p.normal_(0, 0.1)


@pytest.mark.parametrize("untie", [False, True])
def test_peft_sees_that_lm_head_is_tied_to_wte(untie):
    """An audit: PEFT could not see that lm_head is wte, so merge_and_unload of trainable_token_indices
    on wte wrote the new rows into the one matrix that both use, and the merged model's logits were
    8.0 off the adapted one's. GPT now says the tie as transformers' models do
    (get_input_embeddings, get_output_embeddings, _tied_weights_keys, config.to_dict's
    tie_word_embeddings): PEFT ties the head's token rows to wte's, and the merge changes nothing.
    A head untied by hand is left as PEFT finds it (its rows not changed: they are not wte's)."""
    import peft

    model = _model()
    assert model.get_input_embeddings() is model.transformer.wte and model.get_output_embeddings() is model.lm_head
    assert model.config.to_dict()["tie_word_embeddings"] is True
    if untie:
        model.lm_head.weight = nn.Parameter(model.lm_head.weight.detach().clone())
    head = model.lm_head.weight.detach().clone()
    pm = peft.get_peft_model(model, peft.LoraConfig(r=4, target_modules=["c_attn"], trainable_token_indices={"wte": [5, 7]}))
    _randomize_trainable(pm)
    ids = torch.randint(0, CFG.vocab_size, (2, 9))
    ids[:, ::3] = 5
    with torch.no_grad():
        adapted = pm(ids)[0]
        merged = pm.merge_and_unload()
        diff = (merged(ids)[0] - adapted).abs().max().item()
    print(f"{'untied' if untie else 'tied'} head: max |merged - adapted| = {diff:.2e}")
    assert diff < 1e-5  # measured 1.9e-06 (8.0 before)
    assert (merged.lm_head.weight is merged.transformer.wte.weight) != untie
    if untie:
        assert torch.equal(merged.lm_head.weight, head)


def test_peft_warns_when_all_linear_adapts_the_tied_lm_head():
    """An audit: target_modules="all-linear" adapts lm_head on minigpt's GPT (PEFT leaves the output
    embedding out only on transformers' models), and merge_and_unload then changed wte too, with no
    word. PEFT now sees the tie and warns at the merge; README says to list the targets."""
    import peft

    pm = peft.get_peft_model(_model(), peft.LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    assert "lm_head" in pm.targeted_module_names
    with pytest.warns(UserWarning, match=r"tie_word_embeddings=True` and the tied_target_modules=\['lm_head'\]"):
        pm.merge_and_unload()


@pytest.mark.parametrize("init", ["pissa", "pissa_niter_4", "olora", "corda", "lora_ga", "loftq"])
def test_adapters_made_over_rewritten_base_weights_are_refused(tmp_path, init):
    """An audit: load_adapters (and GPT.from_pretrained of the folder) put a PiSSA or OLoRA adapter's
    A and B over the original weights, though PEFT had subtracted the first B·A from them when it
    made the adapter: logits 0.23 off, with no word. Such an init_lora_weights is refused by name,
    with PEFT's way to save the adapter as a plain LoRA."""
    from minigpt.lora import load_adapters, save_adapters

    save_adapters(_adapted(), tmp_path / "a")
    config = tmp_path / "a" / "adapter_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "init_lora_weights": init}))
    model = _model()
    with pytest.raises(ValueError, match=rf"sets init_lora_weights='{init}': PEFT changed the base weights when it made "
                                         r"these adapters.*path_initial_model_for_weight_conversion"):
        load_adapters(model, tmp_path / "a")
    assert not any(isinstance(m, LoRALinear) for m in model.modules())


def test_a_pissa_adapter_saved_as_plain_lora_loads_right(tmp_path):
    """The way out that the refusal names works: PEFT's save_pretrained with
    path_initial_model_for_weight_conversion writes a PiSSA adapter as a plain LoRA of the original
    base (init_lora_weights true, twice the rank), which minigpt loads with PEFT's logits; the
    adapter saved as PiSSA is refused. Other inits that leave W alone (eva, mica...) still load."""
    import peft

    from minigpt.lora import load_adapters, save_adapters

    hf, base = _hf_base(tmp_path)
    pm = peft.get_peft_model(hf, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"], init_lora_weights="pissa"))
    pm.peft_config["default"].init_lora_weights = True  # the first adapters, saved as PEFT's docs say
    pm.save_pretrained(tmp_path / "init")
    pm.peft_config["default"].init_lora_weights = "pissa"
    _randomize_trainable(pm)
    pm.save_pretrained(tmp_path / "pissa")
    pm.save_pretrained(tmp_path / "plain", path_initial_model_for_weight_conversion=str(tmp_path / "init"))
    with pytest.raises(ValueError, match="sets init_lora_weights='pissa'"):
        load_adapters(_hf_base(tmp_path)[1], tmp_path / "pissa")
    assert len(load_adapters(base, tmp_path / "plain")) == CFG.n_layer
    ids = torch.randint(0, CFG.vocab_size, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(base.eval()(ids)[0], pm.eval()(input_ids=ids).logits, rtol=1e-4, atol=1e-4)
    save_adapters(_adapted(), tmp_path / "a")
    config = tmp_path / "a" / "adapter_config.json"
    for init in (True, False, "gaussian", "eva", "orthogonal", "mica"):
        config.write_text(json.dumps({**json.loads(config.read_text()), "init_lora_weights": init}))
        assert len(load_adapters(_model(), tmp_path / "a")) == 2 * CFG.n_layer


@pytest.mark.parametrize("option", ["velora_config", "monteclora_config", "kasa_config", "arrow_config", "use_bdlora"])
def test_peft_variants_with_weights_of_their_own_are_refused_by_name(tmp_path, option):
    """An audit: a KaSA, BD-LoRA, VeLoRA... adapter failed only as a tensor-name mismatch, or (where
    its tensors were LoRA's) would load as a plain LoRA: each is now refused by its option."""
    from minigpt.lora import load_adapters, save_adapters

    save_adapters(_adapted(), tmp_path / "a")
    config = tmp_path / "a" / "adapter_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), option: {"some": "setting"}}))
    with pytest.raises(ValueError, match=rf"sets {option}=.*computes no other adapter"):
        load_adapters(_model(), tmp_path / "a")


def test_saved_adapters_open_with_peft_on_minigpt_and_on_transformers(tmp_path):
    """An audit: save_adapters wrote task_type CAUSAL_LM, and PEFT's PeftModel.from_pretrained of the
    folder onto minigpt's GPT failed ("'GPT' object has no attribute 'prepare_inputs_for_generation'":
    CAUSAL_LM's wrapper needs transformers' generation hooks). It writes null: both libraries open
    it with the adapted logits, and transformers still generates through the adapters."""
    import peft

    from minigpt.lora import save_adapters

    hf, adapted = _hf_base(tmp_path)
    inject_lora(adapted, ("attn.c_attn", "mlp.c_proj"), rank=4, alpha=8.0)
    with torch.no_grad():
        for m in adapted.modules():
            if isinstance(m, LoRALinear):
                m.lora_B.normal_(0, 0.5)
    save_adapters(adapted, tmp_path / "adapter", base=str(tmp_path / "base"))
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["task_type"] is None
    ids = torch.randint(0, CFG.vocab_size, (2, 9))
    on_gpt = peft.PeftModel.from_pretrained(GPT.from_pretrained(tmp_path / "base"), tmp_path / "adapter").eval()
    on_hf = peft.PeftModel.from_pretrained(hf, tmp_path / "adapter").eval()
    with torch.no_grad():
        want = adapted.eval()(ids)[0]
        torch.testing.assert_close(on_gpt(ids)[0], want, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(on_hf(input_ids=ids).logits, want, rtol=1e-4, atol=1e-4)
    out = on_hf.generate(input_ids=ids, max_new_tokens=3, do_sample=False, pad_token_id=0)
    assert out.shape == (2, 12) and torch.equal(out[:, 9], want[:, -1].argmax(-1))  # the first token greedy, adapted
    # A review: with task_type null alone, PEFT's auto loaders could not tell the base's class
    # ("Cannot infer the auto class from the config"); auto_mapping says it, as PEFT writes it.
    auto = peft.AutoPeftModelForCausalLM.from_pretrained(tmp_path / "adapter").eval()
    with torch.no_grad():
        torch.testing.assert_close(auto(input_ids=ids).logits, want, rtol=1e-4, atol=1e-4)


def test_config_to_dict_says_what_peft_set_of_the_tie():
    """A review: PEFT sets config.tie_word_embeddings = False when it merges an adapter on an untied
    lm_head, and to_dict kept saying True: the config contradicted itself."""
    cfg = GPTConfig(n_layer=1, n_head=2, n_embd=8, vocab_size=16, n_positions=8)
    assert cfg.to_dict()["tie_word_embeddings"] is True
    cfg.tie_word_embeddings = False  # as PEFT's merge writes it
    assert cfg.to_dict()["tie_word_embeddings"] is False


def test_peft_records_the_base_a_gpt_was_loaded_from(tmp_path):
    """An audit: adapters PEFT saved from a GPT loaded with GPT.from_pretrained(path) had
    base_model_name_or_path null (PEFT reads model.name_or_path, which minigpt never set), so the
    folder alone did not load ("names no base model"). load_gpt sets it to the path as given."""
    import peft

    _, base = _hf_base(tmp_path)
    assert base.name_or_path == str(tmp_path / "base")
    assert GPTConfig.from_pretrained("openai-community/gpt2-medium") == GPTConfig.gpt2("gpt2-medium")  # what PEFT reads
    pm = peft.get_peft_model(base, peft.LoraConfig(r=2, lora_alpha=4, target_modules=["c_attn"]))
    _randomize_trainable(pm)
    pm.save_pretrained(tmp_path / "adapter")
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"] == str(tmp_path / "base")
    loaded = GPT.from_pretrained(tmp_path / "adapter")
    assert loaded.name_or_path == str(tmp_path / "adapter")  # the merged model that folder loads as
    ids = torch.randint(0, CFG.vocab_size, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids)[0], pm.eval()(ids)[0], rtol=1e-5, atol=1e-5)


def test_exclude_modules_narrows_the_targets_as_in_peft(tmp_path):
    """An audit: an adapter file with PEFT's exclude_modules (which only leaves layers out of the
    targets) was refused as if it computed another adapter. It is applied as PEFT applies it: a
    layer it names, by its last parts or (one string) a regular expression, takes no adapter."""
    import peft

    from minigpt.lora import load_adapters, peft_targets

    model = _model()
    names = [f"transformer.h.{i}.{m}" for i in range(CFG.n_layer) for m in ("attn.c_attn", "mlp.c_proj")]
    assert peft_targets(model, {"target_modules": ["c_attn", "c_proj"], "exclude_modules": ["attn.c_proj"]}) == names
    assert peft_targets(model, {"target_modules": ["c_attn", "c_proj"], "exclude_modules": r".*attn\.c_proj"}) == names
    # A target naming no layer beside ones that do is passed over, with exclude_modules or without (as PEFT
    # reads a config written for several architectures); naming none at all is refused by those names.
    assert peft_targets(model, {"target_modules": ["c_attn", "q_proj"], "exclude_modules": ["attn.c_proj"]}) == names[::2]
    assert peft_targets(model, {"target_modules": ["c_attn", "q_proj"]}) == ["c_attn"]
    assert peft_targets(model, {"target_modules": ["q_proj", "v_proj"], "exclude_modules": ["x"]}) == ["q_proj", "v_proj"]
    # A review: a target naming a module that is no Linear (wte, attn) is kept, for find_lora_targets to refuse
    # by name (as PEFT refuses it), not passed over; exclude_modules that leave nothing say so.
    for extra in ({}, {"exclude_modules": ["mlp.c_proj"]}):
        assert peft_targets(model, {"target_modules": ["c_attn", "wte", "q_proj"], **extra}) == ["c_attn", "wte"]
    with pytest.raises(ValueError, match=r"exclude_modules \['c_attn'\] leaves out every layer that target_modules "
                                         r"\['c_attn', 'q_proj'\] names"):
        peft_targets(model, {"target_modules": ["c_attn", "q_proj"], "exclude_modules": ["c_attn"]})
    pm = peft.get_peft_model(_model(), peft.LoraConfig(r=2, target_modules="all-linear", exclude_modules=["lm_head"]))
    _randomize_trainable(pm)
    pm.save_pretrained(tmp_path / "adapter")  # target_modules lists lm_head, exclude_modules leaves it out
    assert len(load_adapters(model, tmp_path / "adapter")) == 4 * CFG.n_layer
    ids = torch.randint(0, CFG.vocab_size, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(model(ids)[0], pm.eval()(ids)[0], rtol=1e-5, atol=1e-5)
