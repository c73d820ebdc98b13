"""Checkpoint layouts and failures: shards, key prefixes, lm_head, legacy buffers, clear errors,
atomic saves and the memory claim of `load_gpt` (one copy of the weights, never two)."""
from __future__ import annotations

import gc
import importlib.util
import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import GPT2Config, GPT2LMHeadModel, GPT2Model

import minigpt.checkpoint as checkpoint
import minigpt.files
from minigpt import GPT, GPTConfig
from minigpt.files import atomic_path

SMALL = dict(vocab_size=500, n_positions=64, n_embd=32, n_layer=2, n_head=4, bos_token_id=499, eos_token_id=499)
IDX = torch.randint(0, SMALL["vocab_size"], (2, 40), generator=torch.Generator().manual_seed(0))


def hf_small(cls=GPT2LMHeadModel, seed: int = 0):
    torch.manual_seed(seed)
    return cls(GPT2Config(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **SMALL)).eval()


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory) -> Path:
    """A small HF GPT2LMHeadModel checkpoint (keys prefixed with `transformer.`)."""
    path = tmp_path_factory.mktemp("hf")
    hf_small().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def reference(hf_dir) -> torch.Tensor:
    with torch.no_grad():
        return GPT.from_pretrained(hf_dir)(IDX)[0]


def read_state(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(path / "model.safetensors", framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def edited_copy(src: Path, dest: Path, edit) -> Path:
    """Copy a checkpoint with its tensors passed through `edit(state) -> state`."""
    dest.mkdir(exist_ok=True)
    (dest / "config.json").write_text((src / "config.json").read_text())
    save_file(edit(read_state(src)), str(dest / "model.safetensors"), metadata={"format": "pt"})
    return dest


def logits_of(path: Path) -> torch.Tensor:
    with torch.no_grad():
        return GPT.from_pretrained(path)(IDX)[0]


# ---- layouts that must load ---------------------------------------------------------------------



def write_safetensors(tensors: dict[str, torch.Tensor], dest) -> None:
    """One safetensors file, by the writer minigpt's saves stream through, atomically as they write."""
    with atomic_path(dest) as tmp, open(tmp, "wb") as f:
        checkpoint.stream_safetensors(tensors, f)

def test_sharded_index_loads(tmp_path, reference):
    hf_small().save_pretrained(tmp_path, max_shard_size="20KB")
    shards = sorted(p.name for p in tmp_path.glob("model-*.safetensors"))
    assert (tmp_path / "model.safetensors.index.json").exists() and len(shards) > 2, shards
    assert torch.equal(logits_of(tmp_path), reference)


def test_keys_without_transformer_prefix(tmp_path, hf_dir, reference):
    # HF's headless GPT2Model writes "h.0.attn..." (as OpenAI's released files do); same seed,
    # same weights, so minigpt must tie its head to wte and give the same logits.
    hf_small(GPT2Model).save_pretrained(tmp_path)
    assert not any(k.startswith("transformer.") for k in read_state(tmp_path))
    assert torch.equal(logits_of(tmp_path), reference)


def test_explicit_lm_head_equal_to_wte_loads(tmp_path, hf_dir, reference):
    def add_head(s):
        return s | {"lm_head.weight": s["transformer.wte.weight"].clone()}

    assert torch.equal(logits_of(edited_copy(hf_dir, tmp_path, add_head)), reference)


def test_explicit_lm_head_that_differs_is_refused(tmp_path, hf_dir):
    def add_head(s):
        return s | {"lm_head.weight": s["transformer.wte.weight"] + 1e-3}

    with pytest.raises(ValueError, match="lm_head.weight that differs from wte.weight"):
        GPT.from_pretrained(edited_copy(hf_dir, tmp_path, add_head))


def test_a_tied_head_stored_only_as_lm_head_is_wte(tmp_path, reference):
    """safetensors' save_model keeps one name of a tied pair, here lm_head.weight and no
    transformer.wte.weight; transformers loads that file, and so does minigpt, taking wte from it."""
    from safetensors.torch import save_model

    model = hf_small()
    model.config.save_pretrained(tmp_path)
    save_model(model, str(tmp_path / "model.safetensors"))
    assert "transformer.wte.weight" not in read_state(tmp_path) and "lm_head.weight" in read_state(tmp_path)
    assert torch.equal(logits_of(tmp_path), reference)


def test_legacy_attention_buffers_are_ignored(tmp_path, hf_dir, reference):
    n = SMALL["n_positions"]

    def add_buffers(s):  # what old HF files carry: the causal mask and its fill value
        for i, prefix in enumerate(["", "transformer."]):  # OpenAI's files have no prefix
            s[f"{prefix}h.{i}.attn.bias"] = torch.tril(torch.ones(n, n)).view(1, 1, n, n)
            s[f"{prefix}h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
        return s

    assert torch.equal(logits_of(edited_copy(hf_dir, tmp_path, add_buffers)), reference)


# The config.json of openai-community/gpt2 on the Hub, as written by an old transformers.
HUB_GPT2_CONFIG = {
    "activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"], "attn_pdrop": 0.1,
    "bos_token_id": 50256, "embd_pdrop": 0.1, "eos_token_id": 50256, "initializer_range": 0.02,
    "layer_norm_epsilon": 1e-05, "model_type": "gpt2", "n_ctx": 1024, "n_embd": 768, "n_head": 12,
    "n_layer": 12, "n_positions": 1024, "resid_pdrop": 0.1, "summary_activation": None,
    "summary_first_dropout": 0.1, "summary_proj_to_labels": True, "summary_type": "cls_index",
    "summary_use_proj": True, "task_specific_params": {"text-generation": {"do_sample": True, "max_length": 50}},
    "vocab_size": 50257,
}


def test_hub_gpt2_config_reads_as_the_gpt2_preset():
    assert GPTConfig.from_hf_dict(HUB_GPT2_CONFIG) == GPTConfig.gpt2("gpt2", dropout=0.1)


def test_differing_dropout_rates_say_which_one_is_used(tmp_path):
    """minigpt has one dropout rate for HF's three; a checkpoint whose rates differ is told, not
    silently trained with another model's dropout."""
    hf = GPT2LMHeadModel(GPT2Config(**SMALL, resid_pdrop=0.1, embd_pdrop=0.0, attn_pdrop=0.0))
    hf.save_pretrained(tmp_path)
    with pytest.warns(UserWarning, match=r"embd_pdrop=0\.0, attn_pdrop=0\.0; .* uses resid_pdrop=0\.1 for all three"):
        model = GPT.from_pretrained(tmp_path)
    assert model.config.dropout == 0.1


def test_absent_dropout_rates_default_as_in_transformers():
    assert GPTConfig.from_hf_dict({"model_type": "gpt2"}).dropout == GPT2Config().resid_pdrop == 0.1


def test_a_config_json_number_too_long_to_read_names_the_file(tmp_path):
    """A checkpoint fixer's note: "n_layer": 99...9 (5,000 digits) gave Python's "Exceeds the limit
    (4300 digits) for integer string conversion", naming no file."""
    (tmp_path / "config.json").write_text('{"model_type": "gpt2", "n_layer": ' + "9" * 5000 + "}")
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'config.json'} is not valid JSON: Exceeds the limit")):
        GPT.from_pretrained(tmp_path)


@pytest.mark.parametrize("rate", ["0.1", True, None, [0.1]])
def test_a_dropout_rate_that_is_no_number_is_named(rate):
    """A security audit: config.json's "resid_pdrop": "0.1" loaded (float() reads the string), and
    true loaded as a rate of 1.0 refused only as "dropout must be in [0, 1)"."""
    with pytest.raises(ValueError, match=r"^config.json: resid_pdrop must be a number \(a dropout rate in \[0, 1\)\), "
                                         f"got {re.escape(repr(rate))}$"):
        GPTConfig.from_hf_dict({"model_type": "gpt2", "resid_pdrop": rate, "embd_pdrop": rate, "attn_pdrop": rate})


@pytest.mark.parametrize("name", ["gpt2", "gpt2-xl", "gpt2-tiny"])
def test_config_json_round_trips_through_transformers(tmp_path, name):
    config = GPTConfig.gpt2(name, dropout=0.1)
    config.save_json(tmp_path / "config.json")
    hf = GPT2Config.from_pretrained(tmp_path)
    assert (hf.n_layer, hf.n_head, hf.n_embd, hf.n_positions, hf.vocab_size, hf.resid_pdrop) == (
        config.n_layer, config.n_head, config.n_embd, config.n_positions, config.vocab_size, 0.1)
    hf.save_pretrained(tmp_path / "hf")
    assert GPTConfig.from_json(tmp_path / "hf") == config


@pytest.mark.parametrize("kwargs,match", [
    (dict(n_embd=30, n_head=4), r"n_embd \(30\) must be divisible by n_head \(4\)"),
    (dict(n_layer=0), "n_layer must be positive"),
    (dict(n_head=0), "n_head must be positive"),  # checked before n_embd % n_head divides by it
    (dict(n_inner=0), "n_inner must be positive, or None"),
    (dict(dropout=1.0), r"dropout must be in \[0, 1\)"),
])
def test_invalid_config_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GPTConfig(**kwargs)


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown preset 'gpt3'; choose one of"):
        GPTConfig.gpt2("gpt3")


# ---- clear errors -------------------------------------------------------------------------------


def test_missing_tensor(tmp_path, hf_dir):
    def drop(s):
        del s["transformer.h.1.mlp.c_fc.bias"]
        return s

    with pytest.raises(ValueError, match=r"missing 1 tensor\(s\): 'transformer.h.1.mlp.c_fc.bias'$"):
        GPT.from_pretrained(edited_copy(hf_dir, tmp_path, drop))


def test_a_long_list_of_tensors_in_an_error_says_how_many_more(tmp_path, hf_dir):
    """A reread: checkpoint.py built its lists of tensor names four ways, the first 4 or 5 then
    " ..." or ", ...", or (a subclass's own tensors) nothing: a list cut short read as the whole.
    Each now names the first five, then how many more (checks.first_few), each name quoted as the
    other tensor errors quote one (a review: bare here, in brackets or quoted elsewhere)."""
    def drop_block_0(s):
        return {k: t for k, t in s.items() if not k.startswith("transformer.h.0.")}

    with pytest.raises(ValueError, match=r"is missing 12 tensor\(s\): 'transformer.h.0.attn.c_attn.bias', "
                                         r"('transformer.h.0.\S+', ){4}\.\.\. and 7 more$"):
        GPT.from_pretrained(edited_copy(hf_dir, tmp_path / "drop", drop_block_0))

    class Many(GPT):
        def __init__(self, config):
            super().__init__(config)
            for i in range(7):
                self.register_buffer(f"b{i}", torch.ones(()), persistent=False)

    with pytest.raises(ValueError, match=r"Many holds 'b0', 'b1', 'b2', 'b3', 'b4', \.\.\. and 2 more, which GPT-2's"):
        Many.from_pretrained(hf_dir)
    with pytest.raises(ValueError, match=r"no place for: 'a', 'b', 'c', 'd', 'e', \.\.\. and 1 more$"):
        checkpoint.refuse_extra_tensors(set("abcdef"))
    with pytest.raises(ValueError, match=r"would not load back: 'a', 'b', 'c', 'd', 'e', \.\.\. and 2 more$"):
        checkpoint.refuse_missing_tensors(set("abcdefg"))
    layout = GPT(GPTConfig(**SMALL)).state_dict()
    resized = {k: torch.zeros(1) for k in sorted(layout)[:8]}  # 8 tensors of the wrong shape
    with pytest.raises(ValueError, match=r"\(7 more tensor\(s\) differ too: ('\S+', ){5}\.\.\. and 2 more\)"):
        checkpoint.refuse_resized_tensors(resized, layout)


def test_unexpected_tensor(tmp_path, hf_dir):
    def add(s):
        return s | {"transformer.h.0.attn.q_proj.weight": torch.zeros(3)}

    with pytest.raises(ValueError, match="unexpected tensor 'transformer.h.0.attn.q_proj.weight'"):
        GPT.from_pretrained(edited_copy(hf_dir, tmp_path, add))


def test_same_tensor_twice_is_refused(tmp_path, hf_dir):
    def dup(s):
        return s | {"ln_f.weight": s["transformer.ln_f.weight"].clone()}

    with pytest.raises(ValueError, match="'transformer.ln_f.weight' appears twice"):
        GPT.from_pretrained(edited_copy(hf_dir, tmp_path, dup))


def test_wrong_shape_names_tensor_and_both_shapes(tmp_path, hf_dir):
    def shrink(s):
        s["transformer.wpe.weight"] = s["transformer.wpe.weight"][:10]
        return s

    with pytest.raises(ValueError) as e:
        GPT.from_pretrained(edited_copy(hf_dir, tmp_path, shrink))
    msg = str(e.value)
    print(msg)
    assert "transformer.wpe.weight" in msg and "(10, 32)" in msg and "(64, 32)" in msg


def test_mixed_dtypes_load_as_one_and_integer_weights_are_named(tmp_path, hf_dir, reference):
    """dtype=None keeps the stored dtype: with a float16 tensor among float32 ones the model
    must still be one dtype (mixed, its first matmul failed: 'expected ... Float but found Half')."""
    def half_ln(s):
        return s | {"transformer.h.1.ln_2.bias": s["transformer.h.1.ln_2.bias"].half()}

    model = GPT.from_pretrained(edited_copy(hf_dir, tmp_path / "mixed", half_ln))
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    with torch.no_grad():
        assert torch.allclose(model(IDX)[0], reference, atol=1e-3)

    def int_ln(s):
        return s | {"transformer.h.1.ln_2.bias": s["transformer.h.1.ln_2.bias"].long()}

    with pytest.raises(ValueError, match="tensor 'transformer.h.1.ln_2.bias' has dtype torch.int64"):
        GPT.from_pretrained(edited_copy(hf_dir, tmp_path / "int", int_ln))


def test_a_wrong_shape_is_said_transposed_only_of_a_conv1d_weight(tmp_path, hf_dir):
    """A mutation audit: the shape error's "(after transposing it: a Conv1D weight)" was pinned for
    no tensor. A LayerNorm's weight is held as stored; c_attn's weight is a Conv1D's, held transposed."""
    for name, shape, said in (("transformer.h.0.ln_1.weight", (31,), "has shape (31,), but"),
                              ("transformer.h.0.attn.c_attn.weight", (32, 95), "has shape (95, 32) (after transposing it: "
                                                                               "a Conv1D weight), but")):
        folder = edited_copy(hf_dir, tmp_path / name, lambda s: s | {name: torch.zeros(shape)})
        with pytest.raises(ValueError) as caught:
            GPT.from_pretrained(folder)
        assert f"tensor {name!r} in {folder} {said} its config.json expects" in str(caught.value)


def test_config_of_another_size_gives_shape_error(tmp_path, hf_dir):
    """Named by the folder: a runner audit's errors said neither which checkpoint's tensor nor
    which config.json ("config.json sets tie_word_embeddings=false")."""
    edited_copy(hf_dir, tmp_path, lambda s: s)
    cfg = json.loads((tmp_path / "config.json").read_text()) | {"n_embd": 64}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=rf"in {re.escape(str(tmp_path))} has shape .* but its config.json expects"):
        GPT.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(cfg | {"tie_word_embeddings": False}))
    with pytest.raises(ValueError, match=rf"^{re.escape(str(tmp_path / 'config.json'))} sets tie_word_embeddings=false"):
        GPT.from_pretrained(tmp_path)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_truncated_or_corrupt_safetensors(tmp_path, hf_dir, damage):
    edited_copy(hf_dir, tmp_path, lambda s: s)
    f = tmp_path / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes({"truncate": data[: len(data) // 2], "garbage": os.urandom(4096), "empty": b""}[damage])
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        GPT.from_pretrained(tmp_path)


# What `git clone` of a Hub repository leaves without git-lfs: a pointer in place of each large file.
LFS_POINTER = ("version https://git-lfs.github.com/spec/v1\n"
               "oid sha256:248dfc3911869ec493c76e65bf2fcf7f615828b0254c12b473182f0f81d3a707\nsize 548105171\n")


@pytest.mark.parametrize("name", ["model.safetensors", "config.json"])
def test_a_git_lfs_pointer_is_named_with_the_command_that_fetches_the_file(tmp_path, hf_dir, name):
    """Read as the file itself, a pointer gave "not a readable safetensors file ... header too large"."""
    edited_copy(hf_dir, tmp_path, lambda s: s)
    (tmp_path / name).write_text(LFS_POINTER)
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / name} is a Git LFS pointer, not the file itself") +
                       ".*git lfs pull"):
        GPT.from_pretrained(tmp_path)


@pytest.mark.parametrize("change,match", [
    ({"model_type": "llama"}, "model_type='llama'"),
    ({"model_type": None}, "model_type=None"),
    ({"activation_function": "gelu"}, "activation_function='gelu'"),
    ({"tie_word_embeddings": False}, "tie_word_embeddings=false"),
    ({"scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx"),
    ({"scale_attn_weights": False}, "scale_attn_weights=false"),  # mutant R7-4: unscaled attention, other logits
])
def test_config_that_is_not_gpt2(tmp_path, hf_dir, change, match):
    edited_copy(hf_dir, tmp_path, lambda s: s)
    cfg = json.loads((tmp_path / "config.json").read_text()) | change
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=re.escape(match)):
        GPT.from_pretrained(tmp_path)


# GPT2Config's boolean options that minigpt reads, and the values its GPT-2 computes with.
GPT2_BOOLS = {"scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False, "add_cross_attention": False,
              "tie_word_embeddings": True, "reorder_and_upcast_attn": False}


@pytest.mark.parametrize("value", [0, 1, None, "false", "true"])
@pytest.mark.parametrize("name", GPT2_BOOLS)
def test_a_bool_option_that_is_no_json_bool_is_refused_naming_its_value(name, value):
    """An audit: scale_attn_weights 0, null and "false" loaded, as scaled attention (an older
    transformers runs 0 and null unscaled; transformers 5 refuses them), and
    scale_attn_by_inverse_layer_idx "false" was refused as a file that "sets ...=true"."""
    with pytest.raises(ValueError, match="^" + re.escape(f"config.json sets {name}={json.dumps(value)}, which is no "
                                                         "JSON bool: write true or false") + "$"):
        GPTConfig.from_hf_dict({"model_type": "gpt2", name: value})


def test_a_bool_option_from_python_that_json_cannot_write_is_still_named():
    """A review: the message quoted the value with json.dumps, which raised TypeError ("Object of
    type bool is not JSON serializable") for NumPy's bool, from a dict built in Python."""
    import numpy as np

    with pytest.raises(ValueError, match=r"^config.json sets scale_attn_weights=.*True.*, which is no JSON bool"):
        GPTConfig.from_hf_dict({"model_type": "gpt2", "scale_attn_weights": np.bool_(True)})


@pytest.mark.parametrize("name", GPT2_BOOLS)
def test_a_bool_option_loads_with_gpt2s_value_and_names_another(name):
    """Absent or GPT-2's value, each option loads (reorder_and_upcast_attn either way: it only
    rounds transformers' eager attention); the other value is refused, the error naming it as the file has it."""
    config = GPTConfig.from_hf_dict({"model_type": "gpt2"})
    assert GPTConfig.from_hf_dict({"model_type": "gpt2", name: GPT2_BOOLS[name]}) == config
    other = not GPT2_BOOLS[name]
    if name == "reorder_and_upcast_attn":
        assert GPTConfig.from_hf_dict({"model_type": "gpt2", name: other}) == config
        return
    with pytest.raises(ValueError, match=f"^config.json sets {name}={json.dumps(other)}, asking for .*, which "
                                         "minigpt's GPT-2 does not implement$"):
        GPTConfig.from_hf_dict({"model_type": "gpt2", name: other})



@pytest.mark.parametrize("change", [{"n_layer": 1.0}, {"n_head": "2"}, {"eos_token_id": 2.5}])
def test_a_config_json_value_of_the_wrong_type_is_a_value_error_naming_the_file(tmp_path, change):
    """A size or id of the wrong type in config.json is the file's fault: a ValueError, which every
    command says in one line (GPTConfig's own TypeError went out as a traceback, a review found)."""
    GPT(GPTConfig(vocab_size=300, n_positions=16, n_embd=16, n_layer=1, n_head=2)).save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text()) | change
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    name, value = next(iter(change.items()))
    with pytest.raises(ValueError, match=re.escape(f"config.json: {name} must be an integer") + f".*got {value!r}"):
        GPT.from_pretrained(tmp_path)

def test_config_json_that_is_not_json(tmp_path):
    (tmp_path / "config.json").write_text("{oops")
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'config.json'} is not valid JSON")):
        GPTConfig.from_json(tmp_path)


def test_a_classifier_is_refused_by_name_not_by_its_score_tensor(tmp_path):
    """A finetune --task classify checkpoint (GPT2ForSequenceClassification) given where a language
    model is wanted: GPT.from_pretrained, and so `minigpt generate --model`, say what it is."""
    from minigpt.classifier import GPTClassifier

    GPTClassifier(GPT(GPTConfig(**SMALL)), num_labels=2).save_pretrained(tmp_path / "clf")
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'clf'} is a classifier (GPT2ForSequenceClassification)")):
        GPT.from_pretrained(tmp_path / "clf")
    run = subprocess.run([sys.executable, "-m", "minigpt", "generate", "--model", str(tmp_path / "clf"), "--prompt", "a"],
                         capture_output=True, text=True)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "is a classifier (GPT2ForSequenceClassification), not a language model" in run.stderr


def test_path_that_does_not_exist(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        GPT.from_pretrained(tmp_path / "nowhere")
    GPT(GPTConfig.gpt2("gpt2-tiny")).save_pretrained(tmp_path / "tiny")
    with pytest.raises(NotADirectoryError, match=re.escape(f"{tmp_path / 'tiny' / 'config.json'} is a file; a checkpoint is the "
                                                        f"directory that holds config.json and model.safetensors ({tmp_path / 'tiny'}?)")):
        GPT.from_pretrained(tmp_path / "tiny" / "config.json")  # a file of the checkpoint, not the checkpoint
    with pytest.raises(FileNotFoundError, match=re.escape(f"minigpt download gpt2-xl --out {tmp_path / 'gpt2-xl'}")):
        GPT.from_pretrained(tmp_path / "gpt2-xl")


def test_shipped_gpt2_directory_without_weights_says_how_to_get_them():
    """checkpoints/gpt2 ships GPT-2's tokenizer files but not its weights: README's first
    `GPT.from_pretrained("checkpoints/gpt2")` must say how to fetch them, into that directory."""
    shipped = Path(__file__).resolve().parent.parent / "checkpoints" / "gpt2"
    if (shipped / "config.json").exists():
        pytest.skip("GPT-2's weights were downloaded here")
    with pytest.raises(FileNotFoundError, match=re.escape(f"minigpt download gpt2 --out {shipped}")):
        GPT.from_pretrained(shipped)


def test_unknown_or_missing_device_is_named(hf_dir):
    with pytest.raises(ValueError, match="'gpu' is not a device"):
        GPT.from_pretrained(hf_dir, device="gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device cuda: CUDA is not available"):
            GPT.from_pretrained(hf_dir, device="cuda")
    assert GPT.from_pretrained(hf_dir, device="cpu").transformer.wte.weight.device.type == "cpu"


def test_directory_without_config_or_weights(tmp_path, hf_dir):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        GPT.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text((hf_dir / "config.json").read_text())
    with pytest.raises(FileNotFoundError, match="neither model.safetensors nor model.safetensors.index.json$"):
        GPT.from_pretrained(tmp_path)
    # transformers' older pickle format is named, with the way to convert it.
    (tmp_path / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"; it holds pytorch_model.bin, PyTorch's pickle format, which minigpt "
                                                r"does not read: re-save it as safetensors with transformers"):
        GPT.from_pretrained(tmp_path)


def test_weight_files_lists_each_shard_once_and_prefers_a_single_file(tmp_path):
    hf_small().save_pretrained(tmp_path, max_shard_size="20KB")
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())["weight_map"]
    shards = checkpoint.weight_files(tmp_path)
    assert len(shards) > 1 and shards == sorted(tmp_path / s for s in set(index.values()))
    (tmp_path / "model.safetensors").write_bytes(shards[0].read_bytes())  # a single file wins, as in transformers
    assert checkpoint.weight_files(tmp_path) == [tmp_path / "model.safetensors"]


def test_missing_shard_and_bad_index(tmp_path):
    hf_small().save_pretrained(tmp_path, max_shard_size="20KB")
    next(tmp_path.glob("model-*.safetensors")).unlink()
    with pytest.raises(FileNotFoundError, match=r"shard model-\d+-of-\d+.safetensors listed in"):
        GPT.from_pretrained(tmp_path)
    (tmp_path / "model.safetensors.index.json").write_text('{"metadata": {}}')
    with pytest.raises(ValueError, match="needs a 'weight_map' object"):
        GPT.from_pretrained(tmp_path)


def test_an_index_that_is_not_utf8_is_named_on_load_and_replaced_on_save(tmp_path):
    """A model.safetensors.index.json that is not UTF-8 (a shard name in Latin-1) is a ValueError
    naming the file when loaded, not a bare UnicodeDecodeError, and a save over it succeeds and
    removes it (it raised that same UnicodeDecodeError after writing the new weights)."""
    model = GPT(GPTConfig(**SMALL)).eval()
    model.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    index = tmp_path / "model.safetensors.index.json"
    index.write_bytes(b'{"weight_map": {"x": "caf\xe9.safetensors"}}')
    with pytest.raises(ValueError, match=rf"{re.escape(str(index))} is not UTF-8 text: byte 0xe9"):
        GPT.from_pretrained(tmp_path)
    model.save_pretrained(tmp_path)
    assert not index.exists()
    assert torch.equal(logits_of(tmp_path), model(IDX)[0].detach())


# ---- saving -------------------------------------------------------------------------------------


def test_save_renames_every_file_into_place(tmp_path, monkeypatch):
    renames = []
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (renames.append((Path(src), Path(dst))), real_replace(src, dst)))
    GPT(GPTConfig(**SMALL)).save_pretrained(tmp_path)
    # Every file in the checkpoint arrived by a rename from a temp name beside it, the weights first.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    assert [dst.name for _, dst in renames[-2:]] == ["model.safetensors", "config.json"]
    assert all(src.parent == dst.parent == tmp_path and src.name == dst.name + ".tmp" for src, dst in renames)


def test_failed_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    torch.manual_seed(1)
    old = GPT(GPTConfig(**SMALL)).eval()
    old.save_pretrained(tmp_path)
    expected = old(IDX)[0].detach()

    calls = []
    real_numpy = torch.Tensor.numpy

    def disk_fills_up(self, *args, **kwargs):  # stream_safetensors turns each tensor into bytes here
        calls.append(1)
        if len(calls) == 5:
            partial = tmp_path / "model.safetensors.tmp"
            assert partial.stat().st_size > 0  # the crash really is midway through the file
            raise OSError(28, "No space left on device")
        return real_numpy(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "numpy", disk_fills_up)
    with pytest.raises(OSError, match="No space left"):
        GPT(GPTConfig(**SMALL)).save_pretrained(tmp_path)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]  # no temp files
    assert torch.equal(logits_of(tmp_path), expected)


def test_an_untied_head_that_differs_from_wte_is_refused_not_dropped(tmp_path):
    """GPT-2's layout has no lm_head of its own: a head untied (a new Parameter) and changed would
    be lost by the save, and the reloaded model give other logits. An untied copy still equal to wte
    loses nothing and saves."""
    model = GPT(GPTConfig(**SMALL)).eval()
    model.lm_head.weight = torch.nn.Parameter(model.transformer.wte.weight.detach().clone())
    model.save_pretrained(tmp_path / "equal")
    assert torch.equal(logits_of(tmp_path / "equal"), model(IDX)[0].detach())
    with torch.no_grad():
        model.lm_head.weight.mul_(2)
    with pytest.raises(ValueError, match="lm_head.weight is no longer tied to transformer.wte.weight and differs"):
        model.save_pretrained(tmp_path / "changed")
    assert not (tmp_path / "changed").exists()


def test_a_save_failing_at_its_config_never_leaves_new_weights_under_the_old_config(tmp_path, monkeypatch):
    """The new model has the old one's shapes (n_head and layer_norm_epsilon differ), so new weights
    beside the old config.json would load without an error and give wrong logits. A failure while
    the config is written keeps the old checkpoint; one between the two renames (a kill) leaves
    weights without a config.json, which is refused saying why."""
    torch.manual_seed(1)
    old = GPT(GPTConfig(**SMALL)).eval()
    old.save_pretrained(tmp_path)
    expected = old(IDX)[0].detach()
    new = GPT(GPTConfig(**SMALL | {"n_head": 8, "layer_norm_epsilon": 1e-3})).eval()

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(GPTConfig, "save_json", disk_full)
    with pytest.raises(OSError, match="No space left"):
        new.save_pretrained(tmp_path)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    assert torch.equal(logits_of(tmp_path), expected)

    save_killed_before_the_config(new, tmp_path, monkeypatch)
    with pytest.raises(FileNotFoundError, match="holds weights but no config.json: a save that was interrupted"):
        GPT.from_pretrained(tmp_path)


@pytest.mark.parametrize("failure", [KeyboardInterrupt(), OSError(28, "No space left on device")], ids=["ctrl-c", "enospc"])
def test_a_save_failing_while_its_weights_are_made_durable_keeps_the_previous_checkpoint(tmp_path, monkeypatch, failure):
    """A checkpoint audit: the old config.json and generation_config.json went before the new files'
    fsync (the slow part of a save), so a Ctrl-C or an ENOSPC there (NFS, quotas) left the new
    weights' temp file removed, the old weights without a config: no checkpoint at all."""
    import minigpt.files as files

    hf_small().save_pretrained(tmp_path)  # with a generation_config.json, whose ids transformers reads first
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    real_fsync = os.fsync

    def fails_on_the_weights(fd):
        if os.readlink(f"/proc/self/fd/{fd}").endswith("model.safetensors.tmp"):
            raise failure
        return real_fsync(fd)

    monkeypatch.setattr(files.os, "fsync", fails_on_the_weights)
    with pytest.raises(type(failure)):
        GPT(GPTConfig(**SMALL | {"n_head": 8})).save_pretrained(tmp_path)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_saving_over_a_transformers_checkpoint_removes_its_generation_config(tmp_path):
    """transformers writes generation_config.json, whose token ids its generate takes over
    config.json's: left behind, it would stop the new model's texts at the old model's EOS."""
    hf_small().save_pretrained(tmp_path)
    assert json.loads((tmp_path / "generation_config.json").read_text())["eos_token_id"] == 499
    GPT(GPTConfig(**SMALL | {"vocab_size": 300, "bos_token_id": 299, "eos_token_id": 299})).save_pretrained(tmp_path)
    assert not (tmp_path / "generation_config.json").exists()
    assert GPT2LMHeadModel.from_pretrained(tmp_path).generation_config.eos_token_id == 299


def test_streamed_safetensors_match_the_library(tmp_path):
    tensors = {
        "f32": torch.randn(3, 5),
        "transposed": torch.randn(4, 6).t(),  # not contiguous: written as its transpose's values
        "bf16": torch.randn(7).bfloat16(),
        "f16": torch.randn(2, 2).half(),
        "i64": torch.arange(5),
        "bool": torch.tensor([True, False, True]),
        "scalar": torch.tensor(-1e4),
    }
    write_safetensors(tensors, tmp_path / "ours.safetensors")
    save_file({k: t.contiguous() for k, t in tensors.items()}, str(tmp_path / "lib.safetensors"), metadata={"format": "pt"})
    read = {}
    for name in ("ours", "lib"):
        with safe_open(tmp_path / f"{name}.safetensors", framework="pt") as f:
            read[name] = {k: f.get_tensor(k) for k in f.keys()}
            assert f.metadata() == {"format": "pt"}
    assert read["ours"].keys() == tensors.keys()
    for k, t in tensors.items():
        assert read["ours"][k].dtype == t.dtype and torch.equal(read["ours"][k], t) and torch.equal(read["lib"][k], t), k
    header_len = int.from_bytes((tmp_path / "ours.safetensors").read_bytes()[:8], "little")
    assert header_len % 8 == 0  # tensor data starts aligned
    with pytest.raises(ValueError, match="cannot save tensor 'c' of dtype torch.complex64"):
        write_safetensors({"c": torch.zeros(2, dtype=torch.complex64)}, tmp_path / "bad.safetensors")
    assert not (tmp_path / "bad.safetensors").exists()


def test_temp_files_left_by_a_killed_save_are_harmless(tmp_path):
    torch.manual_seed(3)
    model = GPT(GPTConfig(**SMALL)).eval()
    model.save_pretrained(tmp_path)
    # What a save killed mid-write (SIGKILL, power cut) leaves: temp files beside the real ones.
    (tmp_path / "model.safetensors.tmp").write_bytes(b"\0" * 123)
    (tmp_path / "config.json.tmp").write_text("{")
    assert torch.equal(logits_of(tmp_path), model(IDX)[0].detach())  # the loader never reads them
    model.save_pretrained(tmp_path)  # and the next save reuses, then removes, those names
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]


def test_writes_killed_with_sigkill_leave_one_temp_file_and_the_next_write_clears_it(tmp_path):
    """SIGKILL runs no `finally`: each killed write leaves its temp, but always under one name."""
    import signal

    dest = tmp_path / "big.bin"
    writer = ("import sys, time; from pathlib import Path; from minigpt.files import atomic_path\n"
              "with atomic_path(Path(sys.argv[1])) as tmp, open(tmp, 'wb') as f:\n"
              "    f.write(b'x' * 100_000); f.flush(); print('written', flush=True); time.sleep(60)\n")
    for _ in range(2):  # two crashes mid-write
        proc = subprocess.Popen([sys.executable, "-c", writer, str(dest)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline() == "written\n"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert [p.name for p in tmp_path.iterdir()] == ["big.bin.tmp"] and not dest.exists()
    with atomic_path(dest) as tmp, open(tmp, "wb") as f:
        f.write(b"ok")
    assert [p.name for p in tmp_path.iterdir()] == ["big.bin"] and dest.read_bytes() == b"ok"


def test_failed_config_write_keeps_previous_config(tmp_path, monkeypatch):
    GPT(GPTConfig(**SMALL)).save_pretrained(tmp_path)
    before = (tmp_path / "config.json").read_text()

    def read_only(path, flags, mode=0o666):  # the temp file opened so that its write fails, as a full disk's would
        return os.open(path, os.O_RDONLY)

    monkeypatch.setattr(minigpt.files, "no_follow", read_only)
    with pytest.raises(OSError, match="Bad file descriptor"):
        GPTConfig(**SMALL).save_json(tmp_path / "config.json")
    monkeypatch.undo()
    assert (tmp_path / "config.json").read_text() == before
    assert not list(tmp_path.glob("*.tmp"))


def test_save_over_sharded_checkpoint_replaces_it(tmp_path):
    hf_small().save_pretrained(tmp_path, max_shard_size="20KB")
    torch.manual_seed(2)
    new = GPT(GPTConfig(**SMALL)).eval()
    new.save_pretrained(tmp_path)
    assert not (tmp_path / "model.safetensors.index.json").exists()
    assert not list(tmp_path.glob("model-*.safetensors"))  # old shards removed
    assert torch.equal(logits_of(tmp_path), new(IDX)[0].detach())


# ---- memory -------------------------------------------------------------------------------------


def live_tensor_bytes() -> int:
    """Bytes of all distinct CPU tensor storages reachable from Python objects right now."""
    seen: dict[int, int] = {}
    with warnings.catch_warnings():  # isinstance() pokes deprecated torch attributes on the way
        warnings.simplefilter("ignore")
        for obj in gc.get_objects():
            if isinstance(obj, torch.Tensor) and obj.device.type == "cpu":
                try:
                    s = obj.untyped_storage()
                    seen[s.data_ptr()] = s.nbytes()
                except RuntimeError:  # a FakeTensor left by an earlier torch.compile: no memory
                    continue
    return sum(seen.values())


def test_loading_holds_one_copy_of_the_weights(tmp_path, monkeypatch):
    """What this proves: (1) loading never runs a random init (the model is built on "meta"),
    (2) when the weights are handed to the model, the live CPU tensors add up to one copy of the
    checkpoint (not two), and (3) the model's parameters *are* the tensors read from the file
    (assigned, not copied). It does not see allocator overhead or page-cache pages: safetensors
    hands out tensors backed by the memory-mapped file, and the weights stay file pages (shared,
    reclaimable), the Conv1D ones as transposed views. Measured with /proc/self/status on GPT-2
    124M's shape (498 MB): +1 MiB of private memory (RssAnon) after the load, where making the
    transposed weights contiguous copies took +325 MiB."""
    config = GPTConfig(vocab_size=4096, n_positions=256, n_embd=256, n_layer=4, n_head=4)  # 4.3M params, 17 MB
    model = GPT(config)
    model.save_pretrained(tmp_path)
    n_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    del model
    gc.collect()

    real_normal = torch.nn.init.normal_

    def no_random_init(tensor, *args, **kwargs):  # initialising "meta" tensors costs nothing
        assert tensor.is_meta, "loading must not initialise random weights in real memory"
        return real_normal(tensor, *args, **kwargs)

    monkeypatch.setattr(torch.nn.init, "normal_", no_random_init)
    seen = {}
    real_load_state_dict = GPT.load_state_dict

    def spy(self, state, *args, **kwargs):
        seen["live"] = live_tensor_bytes() - baseline
        seen["ptrs"] = {k: t.data_ptr() for k, t in state.items()}
        return real_load_state_dict(self, state, *args, **kwargs)

    monkeypatch.setattr(GPT, "load_state_dict", spy)
    baseline = live_tensor_bytes()
    loaded = GPT.from_pretrained(tmp_path)
    print(f"checkpoint {n_bytes / 2**20:.1f} MiB; live tensors while assigning {seen['live'] / 2**20:.1f} MiB")
    assert 0.99 * n_bytes <= seen["live"] <= 1.05 * n_bytes
    for k, p in loaded.state_dict().items():
        if k != "lm_head.weight":
            assert p.data_ptr() == seen["ptrs"][k], f"{k} was copied on assign"


def test_a_weight_that_needs_no_conversion_is_not_copied_and_training_gives_it_memory_of_its_own(hf_dir):
    """Loaded as stored, a Conv1D weight is its transposed view into the file: copying the 124M
    model's took 0.27 of its 0.35 s load (and as much memory again). Converted to another dtype it
    is one contiguous copy. Training makes each weight contiguous first (prepare_model): trained
    on the views, 124M's steps ran 3-14% longer on a CPU."""
    from minigpt.train import prepare_model
    from minigpt.train_config import TrainConfig
    from minigpt.train_runtime import Runtime

    stored = read_state(hf_dir)["transformer.h.0.attn.c_attn.weight"]  # Conv1D: (in, out)
    as_stored = GPT.from_pretrained(hf_dir, dtype=None)
    w = as_stored.transformer.h[0].attn.c_attn.weight
    assert not w.is_contiguous() and w.t().is_contiguous() and torch.equal(w.t(), stored)  # a view, not a copy
    converted = GPT.from_pretrained(hf_dir, dtype=torch.bfloat16).transformer.h[0].attn.c_attn.weight
    assert converted.is_contiguous() and torch.equal(converted, stored.t().bfloat16())
    trained = prepare_model(as_stored, TrainConfig(), Runtime(rank=0, world=1, device=torch.device("cpu"), dtype=torch.float32))
    assert all(p.is_contiguous() for p in trained.parameters())
    assert torch.equal(trained.transformer.h[0].attn.c_attn.weight, stored.t())
    with torch.no_grad():  # the same model, by its logits (up to the summation order of another layout)
        assert torch.allclose(trained(IDX)[0], GPT.from_pretrained(hf_dir, dtype=None)(IDX)[0], rtol=0, atol=1e-5)


def test_loading_does_not_import_the_compiler(hf_dir):
    """nn.Embedding's random init on the "meta" device imports torch._dynamo (~1.5 s of every
    `minigpt generate`); the loader must skip it. A fresh interpreter, since this one has it."""
    code = (f"import sys; from minigpt import GPT; GPT.from_pretrained({str(hf_dir)!r}); "
            "print('torch._dynamo' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_export_script_casts_copies_the_tokenizer_and_errors_cleanly(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("export_checkpoint", Path(__file__).parents[1] / "scripts" / "export_checkpoint.py")
    export = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(export)
    src = tmp_path / "src"
    GPT(GPTConfig(**SMALL)).save_pretrained(src)
    assert export.main([str(src), str(tmp_path / "half"), "--dtype", "float16"]) == 0  # no tokenizer: weights alone
    assert next(GPT.from_pretrained(tmp_path / "half", dtype=None).parameters()).dtype == torch.float16
    # In place it would replace the weights it casts (float32 lost for good): refused, the source kept.
    assert export.main([str(src), str(src), "--dtype", "float16"]) == 2
    assert next(GPT.from_pretrained(src, dtype=None).parameters()).dtype == torch.float32
    assert export.main([str(tmp_path / "missing"), str(tmp_path / "out")]) == 2
    assert "missing does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("eos, stale", [(4095, False), (0, False), (50256, True), (4096, True), (-1, True),
                                        ([4095], False), ([0, 4095], False), ([4095, 50256], True)])
def test_an_eos_id_that_is_no_row_of_the_model_is_stale(eos, stale):
    """Stale: GPT-2's id in a smaller vocabulary (older minigpt wrote it), or a negative id: then
    only the tokenizer's size is compared. A list (some HF configs hold one) is several EOS ids,
    stale only if one of them is; it was called stale whole, so the CLI swapped it for the
    tokenizer's EOS with a false warning. A tokenizer whose <|endoftext|> is one of them fits."""
    config = GPTConfig(vocab_size=4096, eos_token_id=eos)
    assert config.has_stale_eos == stale
    assert config.eos_ids == (eos if isinstance(eos, list) else [eos])
    fits = stale or 4095 in config.eos_ids  # an in-range id that differs: another tokenizer
    assert config.fits_tokenizer(4096, 4095) == fits
    assert not config.fits_tokenizer(300, 299)  # the size still counts


def test_an_empty_list_of_eos_ids_is_refused_by_name():
    """[] would load and fail at the first generate: its first id pads finished rows."""
    with pytest.raises(ValueError, match=re.escape("eos_token_id must be an int or a non-empty list of ints, got []")):
        GPTConfig(eos_token_id=[])


INDEXED = dict(vocab_size=500, n_positions=64, n_embd=32, n_layer=2, n_head=4, bos_token_id=499, eos_token_id=499)


def test_saving_over_an_index_that_names_model_safetensors_keeps_the_new_weights(tmp_path):
    """Guards against _remove_stale_shards deleting every file the old index lists, the name it
    has just written included: some Hub repos ship a model.safetensors.index.json whose weight_map
    points at "model.safetensors" itself. Saving over such a directory must leave the new
    model.safetensors in place (losing it would lose the trained weights), and must never delete
    a listed "shard" outside the directory."""
    torch.manual_seed(0)
    old = GPT(GPTConfig(**INDEXED)).eval()
    old.save_pretrained(tmp_path / "ckpt")
    outside = tmp_path / "outside.safetensors"
    outside.write_bytes(b"not mine")
    (tmp_path / "ckpt" / "model-00002-of-00002.safetensors").write_bytes(b"old shard")
    index = {"metadata": {}, "weight_map": {"transformer.wte.weight": "model.safetensors",
                                            "transformer.wpe.weight": "model-00002-of-00002.safetensors",
                                            "transformer.ln_f.weight": "../outside.safetensors"}}
    (tmp_path / "ckpt" / "model.safetensors.index.json").write_text(json.dumps(index))
    torch.manual_seed(1)
    new = GPT(GPTConfig(**INDEXED)).eval()
    new.save_pretrained(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "model.safetensors").exists()
    assert not (tmp_path / "ckpt" / "model.safetensors.index.json").exists()
    assert not (tmp_path / "ckpt" / "model-00002-of-00002.safetensors").exists()
    assert outside.read_bytes() == b"not mine"
    # The weights themselves: outputs may differ in the last bit, as the loaded Conv1D weights
    # are transposed views, which some CPUs' matmul sums in another order.
    loaded = GPT.from_pretrained(tmp_path / "ckpt").state_dict()
    assert all(torch.equal(loaded[name], w) for name, w in new.state_dict().items())


def test_a_float16_checkpoint_with_a_float32_final_layernorm_loads_as_float16(tmp_path, hf_dir):
    """Mutant R7-29: the one dtype of a mixed file was taken from another tensor than wte (the bulk
    of the weights): a float16 export that keeps its final LayerNorm in float32 loaded as float32
    throughout, twice the memory and not the file's dtype."""
    def half_but_ln_f(s):
        return {k: t if k.startswith("transformer.ln_f.") else t.half() for k, t in s.items()}

    model = GPT.from_pretrained(edited_copy(hf_dir, tmp_path, half_but_ln_f))
    assert {p.dtype for p in model.parameters()} == {torch.float16}


def test_dtype_and_device_names_as_written_elsewhere_are_taken(hf_dir):
    """Mutants R7-30/R7-31: str(torch.bfloat16) is "torch.bfloat16" (what a config or a log
    holds), taken as "bfloat16" is; and device "auto" is the CPU where there is no GPU."""
    assert checkpoint.resolve_dtype("torch.bfloat16") is torch.bfloat16
    assert next(GPT.from_pretrained(hf_dir, dtype="torch.float16").parameters()).dtype == torch.float16
    assert checkpoint.resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")


def test_tensor_data_starts_8_byte_aligned_whatever_the_header_length(tmp_path):
    """Mutant R7-32: the header was padded by len % 8 instead of -len % 8, aligned only when its
    length happened to be 0 or 4 mod 8 (as in test_streamed_safetensors_match_the_library). Names
    of 1..8 characters give headers of every length mod 8."""
    for n in range(1, 9):
        write_safetensors({"x" * n: torch.arange(3.0)}, tmp_path / f"{n}.safetensors")
        data = (tmp_path / f"{n}.safetensors").read_bytes()
        assert int.from_bytes(data[:8], "little") % 8 == 0, n
        with safe_open(tmp_path / f"{n}.safetensors", framework="pt") as f:
            assert torch.equal(f.get_tensor("x" * n), torch.arange(3.0))


def test_replace_stale_eos_takes_the_tokenizers_id_as_begin_and_end():
    """Mutant R7-3 (caught before only by a slow training run): a stale <|endoftext|> id (GPT-2's
    50256 in a 4,096-token model) is replaced by the tokenizer's, for bos too (GPT-2 uses one token
    for both); a valid one, or no tokenizer id, is kept."""
    config = GPTConfig(vocab_size=4096)
    assert config.replace_stale_eos(4095)
    assert (config.bos_token_id, config.eos_token_id) == (4095, 4095) and not config.has_stale_eos
    assert not config.replace_stale_eos(7) and config.eos_token_id == 4095
    assert not GPTConfig(vocab_size=4096).replace_stale_eos(None)


def test_an_unknown_device_is_answered_with_every_device_name_taken(hf_dir):
    """Mutant R9-41: the list of devices in the error lacked "auto", which the CLIs' --device
    default is and resolve_device takes."""
    with pytest.raises(ValueError, match="'gpu' is not a device: use auto, cpu, cuda, cuda:N or mps$"):
        GPT.from_pretrained(hf_dir, device="gpu")
    assert GPT.from_pretrained(hf_dir, device="auto").transformer.wte.weight.device.type in ("cpu", "cuda", "mps")


@pytest.mark.parametrize("cls_name", ["GPT2DoubleHeadsModel", "GPT2ForTokenClassification", "GPT2ForQuestionAnswering"])
def test_another_gpt2_class_loads_as_its_language_model_without_its_task_head(tmp_path, cls_name):
    """An audit: such checkpoints were refused ("unexpected tensor 'multiple_choice_head.summary.bias'
    ... GPT-2 has no such weight"), naming no architecture, though transformers' GPT2LMHeadModel
    loads them: the same body, and the LM head tied to wte. Now the head is left out, with a warning."""
    import transformers

    hf_small(getattr(transformers, cls_name)).save_pretrained(tmp_path)
    with pytest.warns(UserWarning, match=f"is a {cls_name}: its task head .* is left out"):
        ours = GPT.from_pretrained(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # transformers' own note on the weights it does not use
        theirs = GPT2LMHeadModel.from_pretrained(tmp_path).eval()
    assert torch.allclose(ours(IDX)[0], theirs(IDX).logits, atol=1e-5)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(config | {"architectures": ["GPT2Mystery"]}))
    with pytest.raises(ValueError, match=r"GPT-2 has no such weight \(config.json's architectures: GPT2Mystery\)"):
        GPT.from_pretrained(tmp_path)


def test_a_failed_write_names_the_folder_it_was_writing(tmp_path):
    """A full disk fails in write(), whose error names no file: a run stopped on a bare "[Errno 28]
    No space left on device" (an audit, on a 3 MB tmpfs). atomic_path adds the folder (nested
    atomic_paths cannot tell whose write failed, but share it); the old file stays."""
    dest = tmp_path / "model.safetensors"
    dest.write_bytes(b"old")
    with pytest.raises(OSError) as e:
        with atomic_path(tmp_path / "config.json"), atomic_path(dest) as tmp:  # nested, as save_pretrained's are
            tmp.write_bytes(b"half")
            raise OSError(28, "No space left on device")  # as write() raises it
    assert str(e.value) == f"[Errno 28] No space left on device: '{tmp_path}'"  # the folder being written, once
    assert e.value.errno == 28 and dest.read_bytes() == b"old" and not tmp.exists()


def test_a_short_write_without_an_errno_is_named_too(tmp_path):
    """numpy's tofile fails a short write as OSError("N requested and M written"), no errno, no file
    (`minigpt prepare` under a file-size limit said only that): named EIO, with the folder."""
    with pytest.raises(OSError) as e:
        with atomic_path(tmp_path / "train.bin"):
            raise OSError("301967 requested and 100000 written")
    assert e.value.errno == 5 and str(e.value) == f"[Errno 5] 301967 requested and 100000 written: '{tmp_path}'"



@pytest.mark.parametrize("where", ["making the temp", "writing it", "fsync", "chmod on its fd", "rename"])
def test_a_failed_write_names_the_file_asked_for_not_its_temp(tmp_path, monkeypatch, where):
    """A code reread: an error naming atomic_path's temp file (a folder made read-only: "[Errno 13]
    Permission denied: '.../vocab.json.tmp'") came out as it was, so each caller stripped ".tmp"
    itself. atomic_path names `dest`, keeping the errno (and so the class), the text and the
    original as the cause, wherever the write failed; the old file stays. A review: a call on the
    temp's file descriptor (fsync_file's os.chmod(fd), refused by a mount that allows no chmod),
    whose error CPython names by the fd, an int, escaped as a TypeError from os.fsdecode."""
    import errno

    dest = tmp_path / "vocab.json"
    dest.write_text("old")  # so the new file keeps its mode: fsync_file chmods the temp's fd
    tmp = minigpt.files.temp_path(dest)

    def fail(path, *args):  # as the OS fails a call on the temp file: naming it (by its fd, for a call on one)
        raise PermissionError(errno.EACCES, "Permission denied", path if isinstance(path, int) else str(path))

    if where == "making the temp":
        monkeypatch.setattr(minigpt.files, "fresh_file", fail)
    if where == "fsync":
        monkeypatch.setattr(minigpt.files, "fsync_file", fail)
    if where == "chmod on its fd":
        monkeypatch.setattr(os, "chmod", fail)
        monkeypatch.setattr(os, "supports_fd", os.supports_fd | {fail})  # (so fsync_file takes the fd's path)
    if where == "rename":
        def refused(src, dst):  # as os.replace fails: naming both files
            raise PermissionError(errno.EACCES, "Permission denied", str(src), None, str(dst))

        monkeypatch.setattr(os, "replace", refused)
    with pytest.raises(OSError) as e:
        with atomic_path(dest) as written:
            if where == "writing it":
                fail(written)
    assert str(e.value) == f"[Errno 13] Permission denied: '{dest}'" and type(e.value) is PermissionError
    assert e.value.filename == str(dest) and e.value.filename2 is None and e.value.errno == errno.EACCES
    cause = e.value.__cause__
    assert isinstance(cause, PermissionError) and (isinstance(cause.filename, int) or str(tmp) in str(cause))
    assert dest.read_text() == "old" and not tmp.exists()


def test_a_nested_write_s_error_names_its_own_file_and_another_file_s_is_left_alone(tmp_path):
    """One `with` over two atomic_paths (a checkpoint's save): the inner one's temp is named by the
    inner file, which the outer one leaves as it is, as it does an error about any other file. (A
    folder made read-only names the file it refused; a full disk names none: the test above it.)"""
    import errno

    config, weights, other = tmp_path / "config.json", tmp_path / "model.safetensors", tmp_path / "other.txt"
    for failed, named in ((minigpt.files.temp_path(weights), weights), (minigpt.files.temp_path(config), config),
                          (other, other)):
        with pytest.raises(OSError) as e:
            with atomic_path(config), atomic_path(weights):
                raise PermissionError(errno.EACCES, "Permission denied", str(failed))
        assert str(e.value) == f"[Errno 13] Permission denied: '{named}'", failed
    assert sorted(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.name == "nt", reason="symbolic links need admin rights on Windows")
@pytest.mark.parametrize("planted", ["a link at the temp", "a link made between removal and creation"])
def test_an_error_about_the_temp_itself_names_the_temp(tmp_path, monkeypatch, planted):
    """A review: atomic_path named `dest` in every error about its temp, so a link planted at the temp
    (no_follow's ELOOP, at the fsync) or one made there as fresh_file removed the old temp (its
    EEXIST) said "... is a symbolic link ...; remove it: '.../model.safetensors'": the user's own
    file. And the temp's name was added to no_follow's and fresh_file's text for it, which other
    callers then said twice ("log.jsonl is a symbolic link ...: '.../log.jsonl'"). Such an error
    names the temp, in the text it had."""
    import errno

    dest = tmp_path / "model.safetensors"
    dest.write_text("my checkpoint")
    tmp, victim = minigpt.files.temp_path(dest), tmp_path / "victim.txt"
    if planted == "a link made between removal and creation":
        real_unlink = Path.unlink

        def unlink_then_plant(self, missing_ok=False):
            real_unlink(self, missing_ok=missing_ok)
            if self == tmp:
                self.symlink_to(victim)

        monkeypatch.setattr(Path, "unlink", unlink_then_plant)
        expected = (errno.EEXIST, "appeared between its removal and its creation as a new temp file: another process "
                                  "is writing this folder")
    else:
        expected = (errno.ELOOP, "is a symbolic link, which minigpt does not write through (one planted there could "
                                 "point at any file); remove it")
    with pytest.raises(OSError) as e:
        with atomic_path(dest) as written:
            written.unlink()
            written.symlink_to(victim)
    assert (e.value.errno, e.value.strerror, e.value.filename) == (*expected, str(tmp)), e.value
    assert dest.read_text() == "my checkpoint" and not victim.exists()


@pytest.mark.skipif(os.name == "nt", reason="symbolic links need admin rights on Windows")
def test_a_link_at_the_temp_refused_with_freebsds_errno_still_names_the_temp(tmp_path, freebsd_nofollow):
    """A review: atomic_path told an error about the temp itself by its errno (ELOOP, EEXIST), but
    FreeBSD's O_NOFOLLOW refuses a link with EMLINK: there the link at the temp was said of `dest`,
    the user's own file. no_follow and fresh_file now mark such errors by their class
    (NotOurFileError), whatever the errno."""
    import errno

    dest = tmp_path / "model.safetensors"
    dest.write_text("my checkpoint")
    tmp = minigpt.files.temp_path(dest)
    with pytest.raises(minigpt.files.NotOurFileError) as e:
        with atomic_path(dest) as written:
            written.unlink()
            written.symlink_to(tmp_path / "victim.txt")
    assert (e.value.errno, e.value.filename) == (errno.EMLINK, str(tmp)), e.value
    assert e.value.strerror.startswith("is a symbolic link") and dest.read_text() == "my checkpoint"


def test_an_error_naming_a_file_descriptor_is_not_taken_for_the_temps(tmp_path):
    """A review: atomic_path took every error that names an fd (an int) for its temp's and said it of
    `dest`, the caller's own too (an os.fchmod of another file in the `with` body). Only
    fsync_file calls on the temp's fd, and it names the temp's path now: an fd is left as it is."""
    import errno

    dest = tmp_path / "vocab.json"
    with pytest.raises(PermissionError) as e:
        with atomic_path(dest):
            raise PermissionError(errno.EACCES, "Permission denied", 7)  # the caller's own fd, say
    assert e.value.filename == 7 and not dest.exists()


def test_fsync_file_names_its_file_in_an_error_of_a_call_on_its_fd(tmp_path, monkeypatch):
    """A review: os.fsync's error names no file, os.chmod(fd)'s names the fd: fsync_file let both out
    as they were, so atomic_path had to guess whose they were. It names its path now, and
    atomic_path says a full disk at the fsync of vocab.json's temp as vocab.json's."""
    import errno

    def full_disk(fd):  # as the kernel fails an fsync: no file name
        raise OSError(errno.ENOSPC, "No space left on device")

    path = tmp_path / "vocab.json.tmp"
    path.write_text("{}")
    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError) as e:
        minigpt.files.fsync_file(path)
    assert (e.value.errno, e.value.strerror, e.value.filename) == (errno.ENOSPC, "No space left on device", str(path))
    with pytest.raises(OSError) as e:
        with atomic_path(tmp_path / "vocab.json") as tmp:
            tmp.write_text("{}")
    assert e.value.filename == str(tmp_path / "vocab.json") and e.value.errno == errno.ENOSPC


@pytest.mark.parametrize("named, said", [
    (None, "No space left on device"),  # a write that names no file
    (".", "No space left on device"),  # the destination itself
    ("..", "No space left on device"),  # its folder: atomic_path's name for a full disk
    ("vocab.json", "vocab.json: No space left on device"),
    ("vocab.json.tmp", "vocab.json.tmp: No space left on device"),  # the temp itself at fault
])
def test_failure_reason_names_a_file_other_than_the_destination_and_its_folder(tmp_path, named, said):
    """files.failure_reason, which eval's --predictions and the tokenizer CLI share: a CLI line names
    the destination already, so the error's file is added only where it is another."""
    import errno

    out = tmp_path / "out"
    filename = None if named is None else os.path.normpath(out / named)  # (named relative to the destination)
    assert minigpt.files.failure_reason(OSError(errno.ENOSPC, "No space left on device", filename), out) == said


def test_a_save_killed_between_its_renames_keeps_a_loadable_checkpoint_when_the_config_is_the_same(tmp_path, monkeypatch):
    """A training run saves the same model (the same config.json) at every checkpoint: a kill between
    the weights' rename and the config's must leave new weights beside that config, not no config."""
    torch.manual_seed(1)
    model = GPT(GPTConfig(**SMALL)).eval()
    model.save_pretrained(tmp_path)
    with torch.no_grad():
        model.transformer.wte.weight.mul_(2)  # a training step later
    save_killed_before_the_config(model, tmp_path, monkeypatch)
    assert torch.equal(logits_of(tmp_path), model(IDX)[0].detach())


def save_killed_before_the_config(model: GPT, path: Path, monkeypatch) -> None:
    """model.save_pretrained(path), killed between the weights' rename and the config's."""
    real_replace = os.replace

    def killed_before_the_config(src, dst):
        if Path(dst).name == "config.json":
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", killed_before_the_config)
    with pytest.raises(KeyboardInterrupt):
        model.save_pretrained(path)
    monkeypatch.undo()


def test_save_records_the_weights_dtype_for_transformers(tmp_path):
    """config.json's torch_dtype is the saved weights' dtype: transformers' dtype="auto" loads by it
    (a mutation audit: "float32" always passed every test)."""
    model = GPT(GPTConfig(vocab_size=64, n_positions=16, n_embd=32, n_layer=1, n_head=2, bos_token_id=63,
                          eos_token_id=63)).to(torch.float16)
    checkpoint.save_gpt(model, tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["torch_dtype"] == "float16"
    assert GPT2LMHeadModel.from_pretrained(tmp_path, dtype="auto").dtype == torch.float16


def test_atomic_path_fsyncs_the_temp_file_before_renaming_it(tmp_path, monkeypatch):
    """The rename is atomic, but without an fsync first a power cut can leave the new name on
    empty blocks (a mutation audit: a flush instead passed every test)."""
    import minigpt.files as files

    calls = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(files.os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(files.os, "replace", lambda a, b: (calls.append(("replace", str(a))), real_replace(a, b))[1])
    dest = tmp_path / "x.bin"
    with atomic_path(dest) as tmp:
        tmp.write_bytes(b"data")
    assert calls == ["fsync", ("replace", str(dest) + ".tmp")]
    assert dest.read_bytes() == b"data"


# ---- saves that meet each other, saves killed midway, tensors resized by hand ---------------------

# A child process that saves one of two models into one folder `repeat` times, once the parent says
# go (a file appears): both children's saves then overlap, as every rank of a hand-written DDP
# script calling save_pretrained would. The two differ in n_head and layer_norm_epsilon only, so a
# config.json from one beside the other's weights would load without an error.
CONCURRENT_SAVER = """
import sys, time, torch
from pathlib import Path
from minigpt import GPT, GPTConfig
which, path, go, repeat = int(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
torch.manual_seed(which)
model = GPT(GPTConfig(**%r | {"n_head": 2 * which, "layer_norm_epsilon": 1e-5 * 10 ** which}))
print("ready", flush=True)
deadline = time.time() + 60  # the parent failed before saying go: do not wait forever
while not go.exists():
    if time.time() > deadline:
        sys.exit("no go")
    time.sleep(0.001)
for _ in range(repeat):
    model.save_pretrained(path)
"""


def test_two_processes_saving_into_one_folder_leave_one_whole_checkpoint(tmp_path):
    """An audit: two saves into one folder at once shared atomic_path's fixed temp names, so one
    failed with FileNotFoundError, or left weights without a config.json, or one's weights under the
    other's config. The save lock makes the second wait: every save succeeds and the folder always
    holds one whole checkpoint, its config that of its weights."""
    small = SMALL | {"vocab_size": 4000, "n_embd": 64}  # ~1 MB of weights: long enough saves to overlap
    go = tmp_path / "go"
    children = [subprocess.Popen([sys.executable, "-c", CONCURRENT_SAVER % small, str(which), str(tmp_path / "ck"),
                                  str(go), "15"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for which in (1, 2)]
    assert [c.stdout.readline() for c in children] == ["ready\n", "ready\n"]
    go.touch()
    for c in children:
        assert c.wait(timeout=120) == 0, c.stderr.read()
    loaded = GPT.from_pretrained(tmp_path / "ck")
    which = loaded.config.n_head // 2  # whose config it is: the last saver's
    torch.manual_seed(which)
    saved = GPT(GPTConfig(**small | {"n_head": 2 * which, "layer_norm_epsilon": 1e-5 * 10 ** which}))
    assert loaded.config.layer_norm_epsilon == saved.config.layer_norm_epsilon
    assert all(torch.equal(t, saved.state_dict()[k]) for k, t in loaded.state_dict().items())  # its weights too
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["config.json", "model.safetensors"]  # no lock, no temp


# A child process whose save is SIGKILLed (as by a power cut or the OOM killer) at a rename of the
# checkpoint's: before the weights' ("model.safetensors") or between them and the config's ("config.json").
KILLED_SAVER = """
import os, signal, sys, torch
from minigpt import GPT, GPTConfig
real_replace = os.replace
def replace(src, dst):
    if str(dst).endswith(sys.argv[2]):
        os.kill(os.getpid(), signal.SIGKILL)
    real_replace(src, dst)
os.replace = replace
torch.manual_seed(2)
GPT(GPTConfig(**%r)).save_pretrained(sys.argv[1])
"""


@pytest.mark.parametrize("killed_at", ["model.safetensors", "config.json"])
def test_a_save_killed_at_its_renames_says_how_to_finish_it(tmp_path, killed_at):
    """An audit: a save SIGKILLed after it removed the old config.json left its new files whole
    under temp names, but the loader said "save the model again", impossible once the process is
    dead. It names the rename(s) that finish the save, which then loads the new model; when a later
    save killed while writing its weights left a newer model.safetensors.tmp, nothing pairs.
    A review: the `mv` printed was not quoted, so in a folder whose name holds a space it failed;
    here it is run as printed, by the shell (on Windows, which has no mv, the renames are in words)."""
    new, folder = SMALL | {"n_layer": 3}, tmp_path / "my run"
    GPT(GPTConfig(**SMALL)).save_pretrained(folder)  # the old checkpoint: its config.json differs
    killed = subprocess.run([sys.executable, "-c", KILLED_SAVER % new, str(folder), killed_at])
    assert killed.returncode == -9
    renames = [("model.safetensors.tmp", "model.safetensors")] * (killed_at == "model.safetensors") + \
        [("config.json.tmp", "config.json")]
    if os.name == "nt":
        finish = "; then ".join(f'rename "{folder / src}" to "{folder / dst}"' for src, dst in renames)
    else:
        finish = " && ".join(f"mv '{folder / src}' '{folder / dst}'" for src, dst in renames)
    with pytest.raises(FileNotFoundError, match="killed before its last step") as e:
        GPT.from_pretrained(folder)
    assert f"({finish})" in str(e.value), str(e.value)

    if killed_at == "model.safetensors":  # a later save killed while writing its weights: no pair now
        weights_tmp, config_tmp = folder / "model.safetensors.tmp", folder / "config.json.tmp"
        later = config_tmp.stat().st_mtime_ns + 1_000_000_000
        os.utime(weights_tmp, ns=(later, later))
        with pytest.raises(FileNotFoundError, match=r"interrupted before its last step \(save the model again\)"):
            GPT.from_pretrained(folder)
        os.utime(weights_tmp, ns=(config_tmp.stat().st_mtime_ns,) * 2)
    if os.name == "nt":
        for src, dst in renames:
            os.replace(folder / src, folder / dst)
    else:
        subprocess.run(finish, shell=True, check=True)
    torch.manual_seed(2)
    assert torch.equal(logits_of(folder), GPT(GPTConfig(**new)).eval()(IDX)[0].detach())


@pytest.mark.parametrize("module, field", [("wte", "vocab_size"), ("wpe", "n_positions")])
def test_a_tensor_resized_by_hand_is_refused_naming_the_config_field(tmp_path, module, field):
    """An audit: a vocabulary grown by hand (wte (501, 32), config vocab_size 500) saved without a
    word, and neither minigpt nor transformers could load the checkpoint. The save refuses before
    writing anything, naming the tensor, both shapes and the field; with the field set, it loads."""
    model = GPT(GPTConfig(**SMALL))
    setattr(model.transformer, module, torch.nn.Embedding(SMALL[field] + 1, SMALL["n_embd"]))
    model.tie_weights()  # re-tied, as a resize must
    with pytest.raises(ValueError, match=re.escape(
            f"tensor 'transformer.{module}.weight' has shape ({SMALL[field] + 1}, 32), but the model's config gives "
            f"it ({SMALL[field]}, 32); ") + r".*: config\." + f"{field} = {SMALL[field] + 1}$"):
        model.save_pretrained(tmp_path / "ck")
    assert not (tmp_path / "ck").exists()
    setattr(model.config, field, SMALL[field] + 1)
    model.save_pretrained(tmp_path / "ck")
    assert torch.equal(logits_of(tmp_path / "ck"), model.eval()(IDX)[0].detach())


def test_a_bias_free_model_is_refused_at_save_time_naming_the_missing_tensors(tmp_path):
    """An audit: a nanoGPT-style bias=False model (no Linear or LayerNorm biases) saved without a
    word, and minigpt then refused its own checkpoint ("missing 12 tensor(s)"). The save refuses
    first, naming the tensors and the fix; with zero biases it saves, and loads with its logits."""
    model = GPT(GPTConfig(**SMALL)).eval()
    for block in model.transformer.h:
        for layer in (block.attn.c_attn, block.attn.c_proj, block.mlp.c_fc, block.mlp.c_proj, block.ln_1, block.ln_2):
            layer.bias = None
    with pytest.raises(ValueError, match=re.escape("the model lacks 12 tensor(s) that GPT-2's checkpoint layout holds, "
                                                   "so the checkpoint would not load back: 'transformer.h.0.attn.c_attn.bias'")
                       + r".*give each bias-free layer zeros before saving"):
        model.save_pretrained(tmp_path / "ck")
    assert not (tmp_path / "ck").exists()
    for block in model.transformer.h:
        for layer in (block.attn.c_attn, block.attn.c_proj, block.mlp.c_fc, block.mlp.c_proj, block.ln_1, block.ln_2):
            layer.bias = torch.nn.Parameter(torch.zeros(layer.weight.shape[0]))
    model.save_pretrained(tmp_path / "ck")
    assert torch.equal(logits_of(tmp_path / "ck"), model(IDX)[0].detach())


def test_from_pretrained_on_a_subclass_builds_that_subclass(tmp_path):
    """An audit: MyGPT.from_pretrained(...) returned a plain GPT, so a subclass's own forward (a
    logit cap here) was gone after a reload. It builds the class it is called on; the checkpoint
    is still GPT-2's (save_gpt always writes GPT2LMHeadModel, which transformers opens)."""

    class CappedGPT(GPT):
        def forward(self, idx=None, targets=None, **kwargs):
            logits, loss = super().forward(idx, targets, **kwargs)
            return logits.clamp(-0.01, 0.01), loss

    CappedGPT(GPTConfig(**SMALL)).save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["architectures"] == ["GPT2LMHeadModel"]
    model = CappedGPT.from_pretrained(tmp_path)
    assert type(model) is CappedGPT and model(IDX)[0].abs().max() <= 0.01
    assert type(GPT.from_pretrained(tmp_path)) is GPT
    # A folder of LoRA adapters alone loads its base as that class too (lora.load_adapted).
    from minigpt.lora import inject_lora, save_adapters

    inject_lora(model, ("attn.c_attn",), rank=2, alpha=4.0)
    save_adapters(model, tmp_path / "adapters", base=str(tmp_path))
    assert type(CappedGPT.from_pretrained(tmp_path / "adapters")) is CappedGPT


def test_a_subclass_with_tensors_of_its_own_is_refused_at_load_naming_them(tmp_path):
    """A review: a subclass whose __init__ registers a buffer (not in GPT-2's file) was returned
    with it on the meta device, and its first forward failed with "Tensor on device meta"."""

    class Scaled(GPT):
        def __init__(self, config):
            super().__init__(config)
            self.logit_scale = torch.nn.Parameter(torch.ones(()))  # (a review: blamed on the file, "missing 1 tensor")
            self.register_buffer("temperature", torch.ones(()), persistent=False)

    GPT(GPTConfig(**SMALL)).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"Scaled holds 'logit_scale', 'temperature', which GPT-2's checkpoint does not: .*"
                                         r"model = Scaled\(gpt.config\); model.load_state_dict\(gpt.state_dict\(\), strict=False\)"):
        Scaled.from_pretrained(tmp_path)
    gpt = GPT.from_pretrained(tmp_path)  # the remedy the error gives
    model = Scaled(gpt.config)
    model.load_state_dict(gpt.state_dict(), strict=False)
    assert torch.equal(model(IDX)[0], gpt(IDX)[0])


def test_a_classifier_is_saved_with_the_checks_a_language_model_is(tmp_path):
    """A review: GPTClassifier.save_pretrained kept its own copy of the save checks, without the
    missing-tensor and n_layer ones: a bias-free classifier saved and was refused at load, and
    an appended block was named as 16 "extra" tensors."""
    from minigpt.classifier import GPTClassifier

    clf = GPTClassifier(GPT(GPTConfig(**SMALL)), num_labels=2)
    clf.gpt.transformer.h[0].ln_1.bias = None
    with pytest.raises(ValueError, match=r"lacks 1 tensor\(s\) .*: 'gpt.transformer.h.0.ln_1.bias'"):
        clf.save_pretrained(tmp_path / "a")
    clf = GPTClassifier(GPT(GPTConfig(**SMALL)), num_labels=2)
    clf.gpt.transformer.h.append(clf.gpt.transformer.h[0])
    with pytest.raises(ValueError, match=r"n_layer is 2 but model.transformer.h holds 3 blocks"):
        clf.save_pretrained(tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


# ---- hostile or broken checkpoints --------------------------------------------------------------


def sharded_copy(src: Path, dest: Path, shard_of) -> Path:
    """A copy of the checkpoint `src` as shards: each tensor goes to the shard `shard_of(name)`
    names (written at dest / that name, which may lie outside `dest`), listed in an index."""
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "config.json").write_text((src / "config.json").read_text())
    state, shards = read_state(src), {}
    for name, t in state.items():
        shards.setdefault(shard_of(name), {})[name] = t
    for shard, tensors in shards.items():
        save_file(tensors, str(dest / shard))
    index = {"metadata": {}, "weight_map": {name: shard_of(name) for name in state}}
    (dest / "model.safetensors.index.json").write_text(json.dumps(index))
    return dest


@pytest.mark.parametrize("where", ["parent", "absolute"])
def test_a_shard_outside_the_checkpoint_folder_is_refused(tmp_path, hf_dir, where):
    """A security audit: an index whose weight_map named "../outside.safetensors" or an absolute
    path loaded that file, wherever it lay. Now a ValueError naming the index and the entry, as
    transformers refuses it (a name with a root or a "..")."""
    outside = "../outside.safetensors" if where == "parent" else str(tmp_path / "outside.safetensors")
    folder = sharded_copy(hf_dir, tmp_path / "ck", lambda name: outside if ".h.1." in name else "a.safetensors")
    assert (tmp_path / "outside.safetensors").is_file()  # the shard is there: only its place is wrong
    with pytest.raises(ValueError, match=re.escape(f"{folder / 'model.safetensors.index.json'} lists tensor ")
                       + r"'transformer\.h\.1\..*' in shard " + re.escape(repr(outside)) + ", which points outside"):
        GPT.from_pretrained(folder)


@pytest.mark.parametrize("shard", [5, "", "subdir", ["a.safetensors"]])
def test_a_shard_name_that_is_no_file_name_is_a_value_error_naming_the_entry(tmp_path, hf_dir, shard):
    """An audit: {"x": 5} in a weight_map went out as "TypeError: unsupported operand type(s) for /:
    'PosixPath' and 'int'", and "" or a folder's name as "No such device (os error 19)", naming no file."""
    folder = edited_copy(hf_dir, tmp_path / "ck", lambda s: s)
    (folder / "model.safetensors").unlink()
    (folder / "subdir").mkdir()
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"x": shard}}))
    with pytest.raises(ValueError, match=re.escape(f"{folder / 'model.safetensors.index.json'} lists tensor 'x' in shard {shard!r}")):
        GPT.from_pretrained(folder)
    GPT(GPTConfig(**SMALL)).save_pretrained(folder)  # and a save over such an index replaces it
    assert not (folder / "model.safetensors.index.json").exists() and (folder / "subdir").is_dir()


def test_shards_linked_into_a_blobs_folder_as_in_the_hugging_face_cache_load(tmp_path, hf_dir, reference):
    """The shard check reads the names, not where they resolve: in the Hugging Face cache every
    file of a model's folder is a symlink into blobs/ beside it, and such a folder must load."""
    sharded_copy(hf_dir, tmp_path / "blobs", lambda name: "h1" if ".h.1." in name else "rest")
    snapshot = tmp_path / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    for name, blob in [("config.json", "config.json"), ("model.safetensors.index.json", "index"),
                       ("a.safetensors", "rest"), ("b.safetensors", "h1")]:
        (snapshot / name).symlink_to(Path("../../blobs") / blob)
    index = json.loads((tmp_path / "blobs" / "model.safetensors.index.json").read_text())
    index["weight_map"] = {name: "b.safetensors" if ".h.1." in name else "a.safetensors" for name in index["weight_map"]}
    (tmp_path / "blobs" / "index").write_text(json.dumps(index))
    assert torch.equal(logits_of(snapshot), reference)


def test_a_tensor_in_two_shards_names_both(tmp_path, hf_dir):
    """An audit: a tensor in two shards was reported as "appears twice (with and without the
    'transformer.' prefix?)", the wrong cause; the error names the two shards."""
    folder = sharded_copy(hf_dir, tmp_path, lambda name: "b.safetensors" if ".h.1." in name else "a.safetensors")
    state = read_state(hf_dir)
    save_file({k: t for k, t in state.items() if ".h.1." not in k} | {"transformer.h.1.ln_1.bias": state["transformer.h.1.ln_1.bias"]},
              str(folder / "a.safetensors"))
    with pytest.raises(ValueError, match=re.escape("tensor 'transformer.h.1.ln_1.bias' is in two shards of "
                                                   f"{folder}, a.safetensors and b.safetensors")):
        GPT.from_pretrained(folder)


def test_a_broken_link_to_the_weights_says_where_it_points(tmp_path, hf_dir):
    """An audit: a dangling model.safetensors symlink was reported as "has neither model.safetensors
    nor model.safetensors.index.json"; the error says it is a broken link, and to where."""
    folder = edited_copy(hf_dir, tmp_path / "ck", lambda s: s)
    (folder / "model.safetensors").unlink()
    (folder / "model.safetensors").symlink_to(tmp_path / "gone.safetensors")
    with pytest.raises(FileNotFoundError, match=re.escape(f"{folder / 'model.safetensors'} is a broken symbolic link: "
                                                          f"it points to {tmp_path / 'gone.safetensors'}")):
        GPT.from_pretrained(folder)


def test_a_config_json_with_more_layers_than_the_weights_fails_before_a_model_is_built(tmp_path, hf_dir, monkeypatch):
    """An audit: config.json's n_layer=20000 over 2 blocks' weights took 54 s and 1 GB before "missing
    239976 tensor(s)" (10**6: over 10 minutes and 8 GB), since the model was built on the meta device
    first. The files' headers are compared with config.json first; no model is built at all."""
    edited_copy(hf_dir, tmp_path, lambda s: s)
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(cfg | {"n_layer": 10**6}))

    def no_model(config):
        raise AssertionError(f"a model of {config.n_layer} blocks was built before the weights were looked at")

    monkeypatch.setattr(checkpoint, "GPT", no_model)
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'config.json'} has n_layer=1000000, but the weights in "
                                                   f"{tmp_path} hold blocks h.0 to h.1")):
        GPT.from_pretrained(tmp_path)


@pytest.mark.parametrize("change, name, expected", [
    ({"n_embd": 10**9, "n_head": 1}, "transformer.wte.weight", (500, 10**9)),
    ({"n_positions": 10**12}, "transformer.wpe.weight", (10**12, 32))])
def test_embedding_sizes_are_checked_against_the_header_before_building(tmp_path, hf_dir, change, name, expected):
    """An audit: config.json's n_embd=10**9 gave torch's "RuntimeError: Storage size calculation
    overflowed", naming no file: building the model came before comparing its shapes with the file's."""
    edited_copy(hf_dir, tmp_path, lambda s: s)
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(cfg | change))
    with pytest.raises(ValueError, match=re.escape(f"tensor {name!r} in {tmp_path} has shape ") + r"\(\d+, 32\)"
                       + re.escape(f", but its config.json expects {expected}")):
        GPT.from_pretrained(tmp_path)


def test_sizes_torch_cannot_hold_are_a_config_error_naming_the_file(tmp_path, hf_dir):
    """With no embedding in the file to compare n_embd against, building the model is where a size
    past torch's shows: its RuntimeError ("Storage size calculation overflowed") named no file."""
    edited_copy(hf_dir, tmp_path, lambda s: {k: t for k, t in s.items() if "wte" not in k and "wpe" not in k})
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(cfg | {"n_embd": 10**9, "n_head": 1}))
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'config.json'} gives the model tensors too large for torch")):
        GPT.from_pretrained(tmp_path)


def test_float8_weights_are_refused_at_load_with_the_dtype_to_pass(tmp_path, hf_dir):
    """An audit: float8 weights loaded as float8 and failed at the first forward with
    '"add_stub" not implemented for Float8_e4m3fn'. Refused at load, naming the tensor, its dtype
    and the dtype= that casts them; loaded with it, the model runs. A float8 dtype= is refused too."""
    folder = edited_copy(hf_dir, tmp_path, lambda s: {k: t.to(torch.float8_e4m3fn) for k, t in s.items()})
    with pytest.raises(ValueError, match=re.escape("tensor 'transformer.wte.weight' has dtype torch.float8_e4m3fn")
                       + ".*dtype=torch.bfloat16"):
        GPT.from_pretrained(folder)
    with torch.no_grad():
        assert torch.isfinite(GPT.from_pretrained(folder, dtype=torch.bfloat16)(IDX)[0]).all()
    with pytest.raises(ValueError, match="dtype must be one of torch.float32, .* got torch.float8_e5m2"):
        GPT.from_pretrained(folder, dtype=torch.float8_e5m2)


@pytest.mark.parametrize("architectures", [5, ["GPT2LMHeadModel", 3], {"a": 1}])
def test_architectures_that_are_not_class_names_are_a_value_error_naming_the_field(tmp_path, hf_dir, architectures):
    """An audit: "architectures": 5 in config.json went out as "TypeError: argument of type 'int' is
    not iterable". One name alone, not in a list, is taken as transformers takes it."""
    edited_copy(hf_dir, tmp_path, lambda s: s)
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(cfg | {"architectures": architectures}))
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'config.json'}: architectures must be a list of model "
                                                   f"class names such as [\"GPT2LMHeadModel\"], got {architectures!r}")):
        GPT.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="architectures must be a list"):
        checkpoint.is_classifier_checkpoint(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(cfg | {"architectures": "GPT2LMHeadModel"}))
    assert GPT.from_pretrained(tmp_path).config.n_layer == SMALL["n_layer"]


# ---- files planted in a checkpoint folder: links at the temp names, FIFOs, devices, deep JSON ------------


@pytest.mark.skipif(os.name == "nt", reason="symbolic links need admin rights on Windows")
def test_a_symlink_planted_at_a_temp_name_is_never_written_through(tmp_path):
    """A security audit: the temp names are fixed (model.safetensors.tmp), and a save opened them with
    "wb", which follows a symbolic link: one planted there had the save overwrite the file it pointed
    at, and leave model.safetensors a link to it. The temp is now made afresh (O_EXCL)."""
    victim = tmp_path / "victim.txt"
    victim.write_text("another user's file\n")
    out = tmp_path / "out"
    out.mkdir()
    for name in ("model.safetensors.tmp", "config.json.tmp", "config.json.tmp.tmp"):
        (out / name).symlink_to(victim)
    GPT(GPTConfig(**SMALL)).save_pretrained(out)
    data = tmp_path / "data"  # atomic_path's other writers (prepare's train.bin, a run's state) open its temp by name
    data.mkdir()
    (data / "train.bin.tmp").symlink_to(victim)
    with atomic_path(data / "train.bin") as tmp, open(tmp, "wb") as f:
        f.write(b"tokens")
    assert victim.read_text() == "another user's file\n"
    assert sorted((p.name, p.is_symlink()) for p in out.iterdir()) == [("config.json", False), ("model.safetensors", False)]
    assert (data / "train.bin").read_bytes() == b"tokens" and not (data / "train.bin").is_symlink()


@pytest.mark.skipif(os.name == "nt", reason="symbolic links need admin rights on Windows")
def test_a_symlink_planted_while_a_temp_is_made_or_written_fails_the_write_and_writes_nothing_through_it(tmp_path, monkeypatch):
    """The fix for the planted link above removes what is at the temp name, then creates the file:
    a link planted in between must make the creation fail (O_EXCL), not be opened; and a temp
    replaced by a link while it is written must not be renamed into place (fsync_file refuses it)."""
    import errno

    import minigpt.files as files

    victim = tmp_path / "victim.txt"
    victim.write_text("another user's file\n")
    dest = tmp_path / "model.safetensors"
    real_unlink = Path.unlink

    def unlink_then_plant(self, missing_ok=False):
        real_unlink(self, missing_ok=missing_ok)
        if self.name.endswith(".tmp") and not self.exists():
            self.symlink_to(victim)

    monkeypatch.setattr(Path, "unlink", unlink_then_plant)
    with pytest.raises(files.NotOurFileError, match="appeared between its removal and its creation") as e:
        files.fresh_file(files.temp_path(dest))
    assert e.value.errno == errno.EEXIST
    monkeypatch.undo()
    (tmp_path / "model.safetensors.tmp").unlink()
    with pytest.raises(OSError, match="is a symbolic link, which minigpt does not write through"):
        with atomic_path(dest) as tmp:
            tmp.unlink()
            tmp.symlink_to(victim)  # swapped in by someone else, between the temp's making and its rename
    assert victim.read_text() == "another user's file\n" and not dest.exists() and not dest.is_symlink()


@pytest.mark.skipif(os.name == "nt", reason="symbolic links need admin rights on Windows")
def test_an_error_about_what_is_at_a_name_says_the_name_first_and_a_taken_temp_is_a_file_exists_error(tmp_path,
                                                                                                     monkeypatch):
    """A review: NotOurFileError's strerror is a bare reason ("is a symbolic link, ...; remove it"),
    worded for failure_reason's CLI lines, so printed as str(e) elsewhere (train's log.jsonl, a
    download's .partial) it read "[Errno 40] is a symbolic link ...: '/x/log.jsonl'", its subject
    last. str(e) names the file first now, strerror staying bare. And fresh_file's EEXIST was a
    FileExistsError before it became a NotOurFileError: `except FileExistsError` caught it no more."""
    import errno

    import minigpt.files as files

    link = tmp_path / "log.jsonl"
    link.symlink_to(tmp_path / "victim.txt")
    with pytest.raises(files.NotOurFileError) as e:
        files.no_follow(link, os.O_WRONLY | os.O_CREAT)
    assert str(e.value) == (f"{link}: is a symbolic link, which minigpt does not write through (one planted there could "
                            "point at any file); remove it")
    assert e.value.strerror.startswith("is a symbolic link") and files.failure_reason(e.value, tmp_path).startswith(
        "log.jsonl: is a symbolic link")
    # Built without a file or a reason, it words itself as OSError does (a review: "None: None").
    assert str(files.NotOurFileError("gone")) == "gone"
    assert str(files.NotOurFileError(errno.ELOOP, "is a link")) == f"[Errno {errno.ELOOP}] is a link"

    partial = tmp_path / "gpt2.safetensors.partial"
    real_unlink = Path.unlink

    def unlink_then_plant(self, missing_ok=False):  # another process makes the file just after its removal
        real_unlink(self, missing_ok=missing_ok)
        self.write_text("theirs")

    monkeypatch.setattr(Path, "unlink", unlink_then_plant)
    with pytest.raises(FileExistsError) as e:
        files.fresh_file(partial)
    assert isinstance(e.value, files.NotOurFileError) and e.value.errno == errno.EEXIST
    assert str(e.value).startswith(f"{partial}: appeared between its removal and its creation as a new temp file")


@pytest.mark.skipif(os.name == "nt", reason="symbolic links need admin rights on Windows")
def test_a_symlinked_log_or_lock_file_is_refused_by_name(tmp_path):
    """A security audit: append_log opened log.jsonl with "a" and file_lock its .lock with O_CREAT,
    both following a symbolic link: one planted in a run's folder had records appended to any file."""
    from minigpt.files import file_lock
    from minigpt.run_log import LOG_FILE, append_log

    victim = tmp_path / "victim.txt"
    victim.write_text("another user's file\n")
    (tmp_path / LOG_FILE).symlink_to(victim)
    (tmp_path / "run.lock").symlink_to(victim)
    with pytest.raises(OSError, match=re.escape(f"{tmp_path / LOG_FILE}: is a symbolic link, which minigpt does not "
                                                "write through (one planted there could point at any file); remove it")):
        append_log(tmp_path, {"step": 1})
    with pytest.raises(OSError, match=re.escape(f"{tmp_path / 'run.lock'}: is a symbolic link")):
        with file_lock(tmp_path / "run.lock", busy=lambda: None):
            pass
    assert victim.read_text() == "another user's file\n"


@pytest.mark.skipif(os.name == "nt", reason="POSIX permission bits")
def test_a_save_keeps_the_permission_bits_of_the_files_it_replaces(tmp_path):
    """A security audit: a checkpoint its owner made private (chmod 600) became world-readable
    (0o644, the umask's default) at the next save, since each file is a new one renamed into place.
    It keeps the old file's bits now, config.json too when it changes (the old one goes before the
    rename); a new file gets the default as before."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(**SMALL))
    model.save_pretrained(tmp_path)
    default = {f: (tmp_path / f).stat().st_mode & 0o777 for f in ("config.json", "model.safetensors")}
    assert default == dict.fromkeys(default, 0o666 & ~current_umask())
    for f in default:
        os.chmod(tmp_path / f, 0o600)
    model.save_pretrained(tmp_path)  # the same config.json: kept
    GPT(GPTConfig(**{**SMALL, "n_layer": 1})).save_pretrained(tmp_path)  # another: the old one goes first
    assert {f: (tmp_path / f).stat().st_mode & 0o777 for f in default} == dict.fromkeys(default, 0o600)


def test_a_save_over_read_only_files_replaces_them_and_keeps_them_read_only(tmp_path):
    """A review: the mode kept from a read-only file (0o444: copied from read-only media) was given
    to the temp file before its last open for writing, so saving over such a checkpoint, in a folder
    of the user's own, failed with "Permission denied" on a temp file the user never made. Root
    writes through any mode, so as root the save runs with that right dropped (setpriv), where it
    can; else the test checks only the modes kept."""
    import shutil

    GPT(GPTConfig(**SMALL)).save_pretrained(tmp_path)
    for f in ("config.json", "model.safetensors"):
        os.chmod(tmp_path / f, 0o444)
    save = ["-c", "import sys, torch; from minigpt import GPT, GPTConfig; torch.manual_seed(1); "
                  f"GPT(GPTConfig(**{SMALL!r}, n_inner=8)).save_pretrained(sys.argv[1])", str(tmp_path)]
    drop = ["--inh-caps=-dac_override,-fowner", "--bounding-set=-dac_override,-fowner"]
    as_user = ["setpriv", *drop, sys.executable] if os.geteuid() == 0 and shutil.which("setpriv") else [sys.executable]
    done = subprocess.run([*as_user, *save], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert GPTConfig.from_json(tmp_path).n_inner == 8  # replaced
    assert {(tmp_path / f).stat().st_mode & 0o777 for f in ("config.json", "model.safetensors")} == {0o444}


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_deeply_nested_json_is_a_value_error_naming_the_file(tmp_path, hf_dir):
    """A security audit: a config.json of 100,000 nested "[" ended the load in a bare RecursionError
    traceback; read_json caught only ValueError."""
    folder = edited_copy(hf_dir, tmp_path, lambda s: s)
    (folder / "config.json").write_text('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(ValueError, match=re.escape(f"{folder / 'config.json'} is not valid JSON for minigpt: it nests "
                                                   "arrays or objects too deeply")):
        GPT.from_pretrained(folder)


@pytest.mark.skipif(os.name == "nt", reason="no FIFOs or /dev/null links on Windows")
def test_a_fifo_or_device_in_a_checkpoint_folder_is_refused_by_name(tmp_path, hf_dir):
    """A security audit: config.json linked to /dev/zero was read into memory without end, and a FIFO
    named model.safetensors hung the load (weight_files asked only exists()). Files of a model folder
    must be regular files now (a device here: /dev/null, which without the check read as empty JSON)."""
    folder = edited_copy(hf_dir, tmp_path, lambda s: s)
    (folder / "model.safetensors").unlink()
    os.mkfifo(folder / "model.safetensors")
    with pytest.raises(ValueError, match=re.escape(f"{folder / 'model.safetensors'} is not a regular file (a device, "
                                                   "FIFO or socket)")):
        checkpoint.weight_files(folder)
    (folder / "config.json").unlink()
    (folder / "config.json").symlink_to(os.devnull)
    with pytest.raises(ValueError, match=re.escape(f"{folder / 'config.json'} is not a regular file")):
        GPT.from_pretrained(folder)


def test_a_json_file_larger_than_the_cap_is_refused_before_it_is_parsed(tmp_path, monkeypatch):
    """A security audit: read_json read any size into memory (a config.json of many GB, or /dev/zero
    behind a link that a size check alone would miss, ran the machine out of memory). The cap is far
    above any real tokenizer.json; here it is made small to test it."""
    import minigpt.files as files

    monkeypatch.setattr(files, "MAX_FOLDER_TEXT_BYTES", 16)
    (tmp_path / "config.json").write_text('{"n_layer": 1}')  # 14 bytes: read
    assert files.read_json(tmp_path / "config.json") == {"n_layer": 1}
    (tmp_path / "config.json").write_text('{"n_layer": 1, "n_head": 2}')
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'config.json'} holds more than 16 bytes")):
        files.read_json(tmp_path / "config.json")
    # A review: read(cap + 1) set the cap aside for every read (256 MiB for a 1 kB file, a MemoryError
    # under `ulimit -v`); the file's own size is what is read now.
    import tracemalloc

    monkeypatch.setattr(files, "MAX_FOLDER_TEXT_BYTES", 2**28)
    tracemalloc.start()
    files.read_json(tmp_path / "config.json")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 2**20, f"{peak:,} bytes at the peak of reading a 27-byte file"


def test_a_loop_of_links_at_a_saved_files_name_is_replaced_as_anything_there_is(tmp_path):
    """A review: kept_mode followed links to read the mode to keep, and a link to itself
    (config.json -> config.json) made the save fail with ELOOP, where whatever is at the name is
    replaced. No mode to keep there: the umask's default."""
    (tmp_path / "config.json").symlink_to("config.json")
    GPT(GPTConfig(**SMALL)).save_pretrained(tmp_path)
    assert not (tmp_path / "config.json").is_symlink() and GPTConfig.from_json(tmp_path).n_layer == SMALL["n_layer"]


def test_a_weight_past_float16s_range_is_refused_at_a_float16_load(tmp_path, hf_dir):
    """An audit: GPT.from_pretrained(dtype=torch.float16) turned a weight of 1e5 into inf without a
    word (the model's logits NaN), where scripts/export_checkpoint.py refused the same cast. The
    load now makes the export's check (one function), naming the tensor and advising bfloat16."""
    def big(state):
        state["transformer.h.1.mlp.c_fc.weight"][0, 3] = -1e5
        return state

    path = edited_copy(hf_dir, tmp_path, big)
    with pytest.raises(ValueError, match=r"tensor 'transformer.h.1.mlp.c_fc.weight' in .* holds 100000 \(its largest "
                                         r"\|value\|\), past float16's largest finite value 65504: loaded as float16 "
                                         r"it would be inf; load it as bfloat16"):
        GPT.from_pretrained(path, dtype=torch.float16)
    for dtype in (torch.bfloat16, None):  # float32's range: loads, finite
        assert all(torch.isfinite(p).all() for p in GPT.from_pretrained(path, dtype=dtype).parameters())

    def mixed(state):  # a float16 file keeping one float32 LayerNorm, of 1e5 (a review: cast to inf at dtype=None)
        state = {k: t.half() for k, t in state.items()}
        state["transformer.h.0.ln_2.weight"] = torch.full_like(state["transformer.h.0.ln_2.weight"], 1e5, dtype=torch.float32)
        return state

    with pytest.raises(ValueError, match=r"tensor 'transformer.h.0.ln_2.weight' in .*mixed holds 100000 .* past float16's"):
        GPT.from_pretrained(edited_copy(hf_dir, tmp_path / "mixed", mixed))


@pytest.mark.parametrize("name", ["e", "pi", "half", "int8", "auto", "float"])
def test_a_dtype_name_is_looked_up_in_a_table_and_echoed(name, hf_dir):
    """An audit: a dtype name was any attribute of torch, so dtype="e" was refused as "got
    2.718281828459045" (torch.e). Names are now looked up in checkpoint.COMPUTE_DTYPE_NAMES (the
    CLI's DTYPE_NAMES and float64), the error echoes the string given, and "auto" (transformers' word
    for the file's dtype) is told that None is minigpt's."""
    auto = r"; dtype=None keeps the weights' stored dtype" if name == "auto" else ""
    with pytest.raises(ValueError, match=rf"dtype must be one of float32, bfloat16, float16, float64 \(or a "
                                         rf"torch.dtype, or None: the file's\), got '{name}'{auto}"):
        GPT.from_pretrained(hf_dir, dtype=name)
    assert checkpoint.resolve_dtype("float64") is torch.float64
    assert {n: checkpoint.resolve_dtype(n) for n in checkpoint.DTYPE_NAMES} == checkpoint.DTYPE_NAMES


def test_the_meta_device_gives_a_model_of_shapes_only_as_the_classifiers_loader_does(tmp_path):
    """A loader audit: GPT.from_pretrained(path, device="meta") said the checkpoint lacked every
    tensor of GPT-2's ("built on the meta device to load it, they have no values"), where
    GPTClassifier.from_pretrained gave a model of shapes only. Both do now."""
    from minigpt.classifier import GPTClassifier

    config = GPTConfig(vocab_size=50, n_positions=16, n_embd=16, n_layer=1, n_head=2)
    GPT(config).save_pretrained(tmp_path / "lm")
    GPTClassifier(GPT(config), num_labels=3).save_pretrained(tmp_path / "cls")
    lm, cls = GPT.from_pretrained(tmp_path / "lm", device="meta"), GPTClassifier.from_pretrained(tmp_path / "cls", device="meta")
    for model in (lm, cls):
        assert all(t.is_meta for t in [*model.parameters(), *model.buffers()])
    assert lm.lm_head.weight is lm.transformer.wte.weight and lm.transformer.wte.weight.shape == (50, 16)
    assert cls.score.weight.shape == (3, 16)
    # A review: a head that is not wte is refused on the meta device too (its values are compared as stored).
    hf = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_positions=16, n_embd=16, n_layer=1, n_head=2))
    state = {k: v.clone().contiguous() for k, v in hf.state_dict().items()}
    state["lm_head.weight"] = state["transformer.wte.weight"] + 1
    hf.config.save_pretrained(tmp_path / "untied")
    save_file(state, tmp_path / "untied" / "model.safetensors", metadata={"format": "pt"})
    for device in (None, "meta"):
        with pytest.raises(ValueError, match="has an lm_head.weight that differs from wte.weight"):
            GPT.from_pretrained(tmp_path / "untied", device=device)
