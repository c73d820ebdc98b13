"""GPTClassifier: same logits as transformers' GPT2ForSequenceClassification, HF round trips."""
import codecs
import json
import pydoc
import shutil
import tempfile
import warnings

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import GPT2ForSequenceClassification

from minigpt import GPT, GPTConfig
from minigpt.classifier import GPTClassifier
from conftest import save_tiny_base

PAD = 0
CFG = GPTConfig.gpt2("gpt2-tiny", vocab_size=97, bos_token_id=PAD, eos_token_id=PAD)


def _batch():
    """A right-padded batch of three texts of lengths 9, 5 and 1; no real token is PAD."""
    torch.manual_seed(1)
    idx = torch.randint(1, CFG.vocab_size, (3, 9))
    mask = torch.ones_like(idx)
    mask[1, 5:] = 0
    mask[2, 1:] = 0
    return idx.masked_fill(mask == 0, PAD), mask


def _classifier(**kw) -> GPTClassifier:
    torch.manual_seed(0)
    return GPTClassifier(GPT(CFG), 3, pad_token_id=PAD, **kw).eval()


def test_logits_match_transformers_on_right_padded_batch():
    clf = _classifier(id2label={0: "neg", 1: "neutral", 2: "pos"})
    idx, mask = _batch()
    with tempfile.TemporaryDirectory() as d:
        clf.save_pretrained(d)
        config = json.load(open(f"{d}/config.json"))
        assert config["architectures"] == ["GPT2ForSequenceClassification"] and config["num_labels"] == 3
        hf = GPT2ForSequenceClassification.from_pretrained(d).eval()
    assert hf.config.num_labels == 3 and hf.config.id2label[2] == "pos" and hf.config.pad_token_id == PAD
    with torch.no_grad():
        ours, _ = clf(idx, mask)
        theirs = hf(idx, attention_mask=mask).logits
    diff = (ours - theirs).abs().max().item()
    print(f"max |minigpt - transformers| classification logits = {diff:.2e}")
    assert ours.shape == (3, 3) and diff < 1e-6  # measured 3e-8


def test_loads_a_transformers_classifier():
    hf_cfg = GPT2ForSequenceClassification.config_class(
        vocab_size=CFG.vocab_size, n_positions=CFG.n_positions, n_embd=CFG.n_embd, n_layer=CFG.n_layer,
        n_head=CFG.n_head, num_labels=2, pad_token_id=PAD, bos_token_id=PAD, eos_token_id=PAD)
    torch.manual_seed(0)
    hf = GPT2ForSequenceClassification(hf_cfg).eval()
    idx, mask = _batch()
    with tempfile.TemporaryDirectory() as d:
        hf.save_pretrained(d)
        clf = GPTClassifier.from_pretrained(d)
        converted = GPTClassifier.from_pretrained(d, dtype=torch.bfloat16).gpt.transformer.h[0].attn.c_attn.weight
    with torch.no_grad():
        diff = (clf(idx, mask)[0] - hf(idx, attention_mask=mask).logits).abs().max().item()
    print(f"max |minigpt - transformers| after loading HF's file = {diff:.2e}")
    assert diff < 1e-6  # measured 7e-8
    # As load_gpt: a Conv1D weight is a view of the file's, not a copy, unless converted (one contiguous copy).
    w = clf.gpt.transformer.h[0].attn.c_attn.weight
    assert not w.is_contiguous() and w.t().is_contiguous() and converted.is_contiguous()


def test_a_transformers_classifier_with_untied_embeddings_loads(tmp_path):
    """An audit: GPT2ForSequenceClassification saved with tie_word_embeddings=false was refused ("GPT-2
    ties lm_head to wte"), though a classifier has no lm_head to tie. It loads, with HF's logits;
    GPT.from_pretrained still refuses it, as the classifier it is."""
    hf_cfg = GPT2ForSequenceClassification.config_class(
        vocab_size=CFG.vocab_size, n_positions=CFG.n_positions, n_embd=CFG.n_embd, n_layer=CFG.n_layer,
        n_head=CFG.n_head, num_labels=3, pad_token_id=PAD, bos_token_id=PAD, eos_token_id=PAD, tie_word_embeddings=False)
    torch.manual_seed(0)
    hf = GPT2ForSequenceClassification(hf_cfg).eval()
    hf.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["tie_word_embeddings"] is False
    clf = GPTClassifier.from_pretrained(tmp_path)
    idx, mask = _batch()
    with torch.no_grad():
        assert (clf(idx, mask)[0] - hf(idx, attention_mask=mask).logits).abs().max().item() < 1e-6
    with pytest.raises(ValueError, match=r"is a classifier \(GPT2ForSequenceClassification\), not a language model"):
        GPT.from_pretrained(tmp_path)


def test_a_transformers_regression_model_is_refused_as_one(tmp_path):
    """An audit: GPT2ForSequenceClassification with num_labels=1 (a regression head) was refused
    with "num_labels must be an integer ≥ 2, got 1", naming no reason."""
    hf_cfg = GPT2ForSequenceClassification.config_class(
        vocab_size=CFG.vocab_size, n_positions=CFG.n_positions, n_embd=CFG.n_embd, n_layer=CFG.n_layer,
        n_head=CFG.n_head, num_labels=1)
    GPT2ForSequenceClassification(hf_cfg).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"is a regression model \(num_labels=1, one score per text\)"):
        GPTClassifier.from_pretrained(tmp_path)


def test_a_classifier_config_with_more_layers_than_its_weights_fails_before_a_model_is_built(tmp_path, monkeypatch):
    """A review of the checkpoint audit's fix: GPT.from_pretrained compared config.json's n_layer
    with the weights' headers before building, but GPTClassifier.from_pretrained still built a model
    of config.json's n_layer=10**6 first (minutes and GBs, as GPT's did)."""
    import minigpt.classifier as classifier

    _classifier().save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(cfg | {"n_layer": 10**6}))

    def no_model(config):
        raise AssertionError(f"a model of {config.n_layer} blocks was built before the weights were looked at")

    monkeypatch.setattr(classifier, "GPT", no_model)
    with pytest.raises(ValueError, match=f"has n_layer=1000000, but the weights in .* hold blocks h.0 to h.{CFG.n_layer - 1}"):
        GPTClassifier.from_pretrained(tmp_path)


def test_a_transformers_multi_label_model_is_refused(tmp_path):
    """A checkpoint audit: problem_type "multi_label_classification" (a sigmoid per label, any number
    of them true) loaded as a one-label softmax classifier, and an export dropped its problem_type,
    so transformers' pipeline then scored the same weights with a softmax."""
    hf_cfg = GPT2ForSequenceClassification.config_class(
        vocab_size=CFG.vocab_size, n_positions=CFG.n_positions, n_embd=CFG.n_embd, n_layer=CFG.n_layer,
        n_head=CFG.n_head, num_labels=3, problem_type="multi_label_classification")
    GPT2ForSequenceClassification(hf_cfg).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"is a multi_label_classification model \(problem_type in its config.json\)"):
        GPTClassifier.from_pretrained(tmp_path)


def test_a_transformers_classifier_without_pad_token_id_keeps_none():
    """HF's default config has no pad_token_id (GPT2ForSequenceClassification.from_pretrained("gpt2",
    num_labels=2) saves `null`): transformers then pools each row's last token, <|endoftext|> or not.
    Loading must keep None, not put <|endoftext|> in its place, which cut such a text short."""
    hf_cfg = GPT2ForSequenceClassification.config_class(
        vocab_size=CFG.vocab_size, n_positions=CFG.n_positions, n_embd=CFG.n_embd, n_layer=CFG.n_layer,
        n_head=CFG.n_head, num_labels=2, bos_token_id=PAD, eos_token_id=PAD)
    assert hf_cfg.pad_token_id is None
    torch.manual_seed(0)
    hf = GPT2ForSequenceClassification(hf_cfg).eval()
    idx = torch.tensor([[5, 6, 7, PAD]])  # a text that ends in <|endoftext|>
    with tempfile.TemporaryDirectory() as d:
        hf.save_pretrained(d)
        clf = GPTClassifier.from_pretrained(d)
        assert clf.pad_token_id is None
        clf.save_pretrained(d)  # and a round trip keeps it None
        assert json.load(open(f"{d}/config.json"))["pad_token_id"] is None
    with torch.no_grad():
        diff = (clf(idx)[0] - hf(idx).logits).abs().max().item()
    assert diff < 1e-6


@pytest.mark.parametrize("pooling,hidden", [("mean", ()), ("last", (32,)), ("mean", (32, 16))])
def test_minigpt_head_options_round_trip(pooling, hidden):
    clf = _classifier(pooling=pooling, hidden=hidden)
    idx, mask = _batch()
    with tempfile.TemporaryDirectory() as d:
        clf.save_pretrained(d)
        again = GPTClassifier.from_pretrained(d, device="auto")  # "auto", as GPT.from_pretrained takes it
    assert again.pooling == pooling and again.hidden == hidden
    again = again.to(next(clf.parameters()).device)  # (a GPU run loaded it there)
    assert torch.equal(again(idx, mask)[0], clf(idx, mask)[0])


@pytest.mark.parametrize("hidden", [(), (32,)])
def test_transformers_reports_a_mean_pooled_head_instead_of_pooling_the_last_token_through_it(tmp_path, hidden):
    """An audit: a mean-pooled head was saved as `score.weight`, which HF's class took as its own and
    pooled the last token through, with no report: other logits, silently. It is saved as
    `mean_pool_score.*`, so HF reports `score.weight` missing (newly initialised)."""
    _classifier(pooling="mean", hidden=hidden).save_pretrained(tmp_path)
    with safe_open(tmp_path / "model.safetensors", framework="pt") as f:
        head = sorted(k for k in f.keys() if not k.startswith("transformer."))
    assert head and all(k.startswith("mean_pool_score.") for k in head)
    _, info = GPT2ForSequenceClassification.from_pretrained(tmp_path, output_loading_info=True)
    assert "score.weight" in info["missing_keys"] and set(head) <= info["unexpected_keys"]


def test_an_integer_tensor_is_refused_as_load_gpt_refuses_it(tmp_path):
    """A reader's audit: the classifier's loader, written apart from load_gpt, had drifted from it:
    an integer "weight" was turned into floats without a word, where load_gpt names it."""
    _classifier().save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    save_file(tensors | {"score.weight": tensors["score.weight"].round().int()}, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=r"tensor 'score.weight' in .* has dtype torch.int32; the weights are floating point"):
        GPTClassifier.from_pretrained(tmp_path)


def test_a_mixed_dtype_classifier_names_a_weight_past_float16_as_its_file_does(tmp_path):
    """A float16 classifier file keeping one float32 LayerNorm of 1e5 is refused at dtype=None
    (checkpoint.one_dtype casts it to the bulk's float16), naming the tensor as the file does:
    'transformer.h.0.ln_2.weight', not the classifier's own 'gpt.transformer...'. A reread wants
    one_dtype to know nothing of the classifier's prefix: this pins the name through that move."""
    _classifier().save_pretrained(tmp_path)
    tensors = {k: t.half() for k, t in load_file(tmp_path / "model.safetensors").items()}
    tensors["transformer.h.0.ln_2.weight"] = torch.full(tensors["transformer.h.0.ln_2.weight"].shape, 1e5)
    save_file(tensors, tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=r"^tensor 'transformer.h.0.ln_2.weight' in .* holds 100000 .* past float16's"):
        GPTClassifier.from_pretrained(tmp_path)


@pytest.mark.parametrize("hidden", [(), (32,)])
def test_a_mean_pooled_head_saved_as_score_still_loads(tmp_path, hidden):
    """Checkpoints written before the head was renamed (`score.*` beside minigpt_head's "mean") load
    as they did, with the logits of the new file; a file holding both names is refused."""
    clf = _classifier(pooling="mean", hidden=hidden)
    clf.save_pretrained(tmp_path / "new")
    shutil.copytree(tmp_path / "new", tmp_path / "old")
    tensors = load_file(tmp_path / "new" / "model.safetensors")
    old_names = {k.replace("mean_pool_score.", "score."): t.clone() for k, t in tensors.items()}
    save_file(old_names, tmp_path / "old" / "model.safetensors")
    idx, mask = _batch()
    expected = clf(idx, mask)[0]
    for d in ("new", "old"):
        again = GPTClassifier.from_pretrained(tmp_path / d)
        assert again.pooling == "mean" and torch.equal(again(idx, mask)[0], expected)
    save_file(tensors | old_names, tmp_path / "old" / "model.safetensors")
    with pytest.raises(ValueError, match=r"holds tensor 'score\..*' twice \(a mean-pooled head is read from"):
        GPTClassifier.from_pretrained(tmp_path / "old")
    config = json.loads((tmp_path / "new" / "config.json").read_text())
    (tmp_path / "new" / "config.json").write_text(json.dumps(config | {"minigpt_head": {"pooling": "last", "hidden": list(hidden)}}))
    with pytest.raises(ValueError, match=r"does not match its config.json: missing 'score\..*unexpected 'mean_pool_score\."):
        GPTClassifier.from_pretrained(tmp_path / "new")  # the new name means mean pooling, never the last token


def test_mean_pooling_ignores_pads():
    clf = _classifier(pooling="mean")
    idx, mask = _batch()
    alone = clf(idx[1:2, :5])[0]  # row 1 without its padding
    assert torch.allclose(clf(idx, mask)[0][1], alone[0], atol=1e-6)


def test_bad_inputs():
    clf = _classifier()
    idx, mask = _batch()
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\)"):
        clf(idx, mask, labels=torch.tensor([0, 3, 1]))
    with pytest.raises(ValueError, match="labels must be in"):
        clf(idx, mask, labels=torch.tensor([0, -1, 1]))
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\), got \[-1, 3\]"):
        clf(idx, mask, labels=torch.tensor([3, -1, 1]))
    with pytest.raises(ValueError, match="not right-padded"):
        clf(idx, mask.flip(1))
    with pytest.raises(ValueError, match="only 0 \\(pad\\) and 1"):
        clf(idx, mask * 2)
    empty = mask.clone()
    empty[2] = 0
    with pytest.raises(ValueError, match="no real tokens"):
        clf(idx, empty)
    # A mask of another shape used to pool the wrong token silently (or broadcast one row's mask).
    with pytest.raises(ValueError, match=r"attention_mask must have idx's shape \(3, 9\), got \(3, 5\)"):
        clf(idx, mask[:, :5])
    with pytest.raises(ValueError, match=r"attention_mask must have idx's shape \(3, 9\), got \(1, 9\)"):
        clf(idx, mask[:1])
    with pytest.raises(TypeError, match="attention_mask must be an integer or bool tensor"):
        clf(idx, mask.float())
    with pytest.raises(ValueError, match=r"idx must be token ids of shape \(batch, time\), got shape \(9,\)"):
        clf(idx[0])
    # An audit: lists failed as "'list' object has no attribute 'dim'".
    with pytest.raises(TypeError, match=r"idx must be a tensor, got list: torch.tensor\(...\)"):
        clf(idx.tolist())
    with pytest.raises(TypeError, match="attention_mask must be a tensor, got list"):
        clf(idx, mask.tolist())
    with pytest.raises(TypeError, match="labels must be a tensor, got list"):
        clf(idx, mask, labels=[0, 1, 2])
    with pytest.raises(TypeError, match="labels must be integer class ids, got torch.float32"):
        clf(idx, mask, labels=torch.tensor([0.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match=r"labels must have shape \(batch,\) = \(3,\)"):
        clf(idx, mask, labels=torch.tensor([[0], [1], [1]]))
    int32 = clf(idx, mask, labels=torch.tensor([0, 2, 1], dtype=torch.int32))[1]  # as transformers takes them
    assert torch.equal(int32, clf(idx, mask, labels=torch.tensor([0, 2, 1]))[1])
    assert torch.equal(clf(idx, mask.bool())[0], clf(idx, mask)[0])
    with pytest.raises(ValueError, match="num_labels"):
        GPTClassifier(GPT(CFG), 1)
    with pytest.raises(ValueError, match="pooling"):
        GPTClassifier(GPT(CFG), 2, pooling="max")
    with tempfile.TemporaryDirectory() as d:
        GPT(CFG).save_pretrained(d)
        with pytest.raises(ValueError, match="not a GPT2ForSequenceClassification"):
            GPTClassifier.from_pretrained(d)


def test_a_head_with_lora_adapters_is_refused_at_save_not_written(tmp_path):
    """Only the backbone was checked for adapters: score.lora_A and co. were written, a checkpoint
    minigpt refuses and transformers loads with a random head."""
    from minigpt.lora import inject_lora

    clf = _classifier(hidden=(16,))
    clf.save_pretrained(tmp_path)
    before = (tmp_path / "model.safetensors").read_bytes()
    inject_lora(clf, targets=("score.0",), rank=2)
    with pytest.raises(ValueError, match=r"no place for: 'score\.0\.base\.bias', .*merge them first with minigpt.lora.merge_lora"):
        clf.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").read_bytes() == before  # the good checkpoint is still there


def test_loading_a_bad_classifier_checkpoint_names_the_problem(tmp_path):
    """GPTClassifier.from_pretrained had none of GPT.from_pretrained's checks."""
    from safetensors.torch import load_file, save_file

    with pytest.raises(FileNotFoundError, match="checkpoint directory .*nowhere does not exist"):
        GPTClassifier.from_pretrained(tmp_path / "nowhere")
    clf = _classifier()
    clf.save_pretrained(tmp_path / "ok")
    assert GPTClassifier.from_pretrained(tmp_path / "ok", dtype="bfloat16").score.weight.dtype == torch.bfloat16  # a CLI's name
    with pytest.raises(NotADirectoryError, match=r"ok/config.json is a file; a checkpoint is the directory"):
        GPTClassifier.from_pretrained(tmp_path / "ok" / "config.json")  # an audit: said it "does not exist"
    config = json.loads((tmp_path / "ok" / "config.json").read_text())
    (tmp_path / "null").mkdir()
    (tmp_path / "null" / "config.json").write_text(json.dumps({**config, "architectures": None}))
    with pytest.raises(ValueError, match="is not a GPT2ForSequenceClassification checkpoint"):  # not a TypeError
        GPTClassifier.from_pretrained(tmp_path / "null")
    weights = (tmp_path / "ok" / "model.safetensors").read_bytes()
    (tmp_path / "ok" / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    with pytest.raises(ValueError, match=r"model.safetensors is not a readable safetensors file \(truncated"):
        GPTClassifier.from_pretrained(tmp_path / "ok")
    (tmp_path / "ok" / "model.safetensors").write_bytes(weights)
    tensors = load_file(tmp_path / "ok" / "model.safetensors")
    save_file({k: t.half() if k != "score.weight" else t for k, t in tensors.items()}, tmp_path / "ok" / "model.safetensors")
    mixed = GPTClassifier.from_pretrained(tmp_path / "ok")  # a float32 head beside float16 weights: one dtype
    assert {p.dtype for p in mixed.parameters()} == {torch.float16}
    (tmp_path / "ok" / "config.json").write_text(json.dumps({**config, "n_embd": 2 * config["n_embd"]}))
    with pytest.raises(ValueError, match=rf"tensor '[\w.]+' in .*ok has shape \(\d+, {config['n_embd']}\).* but its "
                                         "config.json expects"):  # the first by name, not torch's list of them
        GPTClassifier.from_pretrained(tmp_path / "ok")


def test_label_names_and_pad_id_survive_a_save_load_save(tmp_path):
    """Guards against from_pretrained dropping config.json's id2label or pad_token_id (building the
    model with the defaults LABEL_i / <|endoftext|>): a fine-tuned classifier loaded and saved again
    (resume, export, a further fine-tune) would lose its label names and pad id, and transformers'
    pipeline would then report "LABEL_2" instead of "pos" and pad with another id."""
    names = {0: "neg", 1: "neutral", 2: "pos"}
    clf = GPTClassifier(GPT(GPTConfig.gpt2("gpt2-tiny", vocab_size=97, bos_token_id=0, eos_token_id=0)), 3, id2label=names, pad_token_id=5).eval()
    clf.save_pretrained(tmp_path / "a")
    again = GPTClassifier.from_pretrained(tmp_path / "a")
    assert again.id2label == names and again.num_labels == 3
    assert again.pad_token_id == 5
    again.save_pretrained(tmp_path / "b")
    d = json.loads((tmp_path / "b" / "config.json").read_text())
    assert d["id2label"] == {"0": "neg", "1": "neutral", "2": "pos"} and d["label2id"]["pos"] == 2
    assert d["pad_token_id"] == 5
    # A loader audit: "id2label": null (no names, as transformers reads it) was an AttributeError; {} was refused
    # (a mutation audit: transformers reads it as null). Ids that are no numbers are named.
    d.pop("label2id")
    for value, loads in ((None, True), ({}, True), (["neg", "pos"], False), ({"x": "neg", "y": "pos"}, False)):
        (tmp_path / "b" / "config.json").write_text(json.dumps({**d, "id2label": value, "num_labels": 3}))
        if loads:
            assert GPTClassifier.from_pretrained(tmp_path / "b").num_labels == 3
        else:
            with pytest.raises(ValueError, match=r"config.json: id2label must map label ids to names"):
                GPTClassifier.from_pretrained(tmp_path / "b")


def test_bad_head_settings_and_bool_labels_are_refused():
    """Mutants R7-15/R7-16/R7-17: a hidden width of 0 (an empty layer: constant logits), label names
    that are not 0..num_labels-1 (config.json's id2label would not match the head's rows), and bool
    labels (a mask passed as labels: cross_entropy would take them as classes 0/1) are each refused by name."""
    with pytest.raises(ValueError, match=r"hidden layer widths must be positive, got \[16, 0\]"):
        GPTClassifier(GPT(CFG), 3, hidden=(16, 0))
    for labels in (2.5, True):  # an audit: 2.5 was a bare TypeError from inside nn.Linear, naming no argument
        with pytest.raises(TypeError, match=rf"num_labels must be an integer, got (the bool )?{labels}"):
            GPTClassifier(GPT(CFG), labels)
    with pytest.raises(ValueError, match="num_labels must be an integer ≥ 2, got 1"):
        GPTClassifier(GPT(CFG), 1)
    with pytest.raises(ValueError, match=r"id2label must name labels 0..2, got keys \[0, 1\]"):
        GPTClassifier(GPT(CFG), 3, id2label={0: "neg", 1: "pos"})
    with pytest.raises(ValueError, match=r"id2label must name labels 0..1, got keys \[1, 2\]"):
        GPTClassifier(GPT(CFG), 2, id2label={1: "neg", 2: "pos"})
    for pad in (CFG.vocab_size, -1):  # an audit: GPT-2's 50256 on a small model was never found, so
        # mask_from_padding took every pad for a token and a padded row pooled a pad
        with pytest.raises(ValueError, match=rf"pad_token_id must be a token id in \[0, vocab_size={CFG.vocab_size}\) "
                                             rf"or None, got {pad}"):
            GPTClassifier(GPT(CFG), 2, pad_token_id=pad)
    for pad in (True, 1.0):
        with pytest.raises(TypeError, match=rf"pad_token_id must be an integer, got (the bool )?{pad}"):
            GPTClassifier(GPT(CFG), 2, pad_token_id=pad)
    idx, mask = _batch()
    with pytest.raises(TypeError, match="labels must be integer class ids, got torch.bool"):
        _classifier()(idx, mask, labels=torch.tensor([True, False, True]))


@torch.no_grad()
def test_the_head_takes_the_backbones_dtype():
    """Mutant R7-18: the new `score` head stayed float32 on a bfloat16 backbone, so the first
    forward failed with a dtype mismatch (and a saved checkpoint mixed dtypes)."""
    torch.manual_seed(0)
    clf = GPTClassifier(GPT(CFG).to(torch.bfloat16), 3, hidden=(16,)).eval()
    assert {p.dtype for p in clf.score.parameters()} == {torch.bfloat16}
    idx, mask = _batch()
    logits, loss = clf(idx, mask, labels=torch.tensor([0, 1, 2]))
    assert logits.shape == (3, 3) and logits.dtype == torch.bfloat16 and torch.isfinite(loss)


@pytest.mark.parametrize("loaded", [True, False], ids=["from_pretrained", "fresh"])
def test_a_new_classifier_is_all_in_its_backbones_mode(loaded, tmp_path):
    """GPT.from_pretrained returns eval mode, and the new head is in train mode: clf.training said
    True while the backbone's dropout was off. Now every submodule is in the backbone's mode."""
    gpt = GPT(CFG)
    if loaded:
        gpt.save_pretrained(tmp_path)
        gpt = GPT.from_pretrained(tmp_path)
    clf = GPTClassifier(gpt, 3, hidden=(16,))
    assert {m.training for m in clf.modules()} == {not loaded}


@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_without_a_mask_the_padding_is_found_from_pad_token_id_as_transformers_does(pooling):
    """ids alone: the rightmost non-pad token is each row's last real one, as in HF's
    GPT2ForSequenceClassification, so a right-padded batch gives the masked logits, not a pad's."""
    clf = _classifier(pooling=pooling)
    idx, mask = _batch()
    idx = torch.cat([idx, torch.full((1, 9), PAD)])  # a row of nothing but pad: HF pools token 0
    mask = torch.cat([mask, torch.tensor([[1] + [0] * 8])])
    assert (clf.mask_from_padding(idx) == mask).all()
    with torch.no_grad():
        masked, unmasked = clf(idx, mask)[0], clf(idx)[0]
    assert (masked - unmasked).abs().max().item() == 0
    if pooling == "last":  # mean pooling is a minigpt extension: transformers has nothing to compare
        with tempfile.TemporaryDirectory() as d:
            clf.save_pretrained(d)
            hf = GPT2ForSequenceClassification.from_pretrained(d).eval()
        with torch.no_grad():
            diff = (unmasked - hf(idx).logits).abs().max().item()
        assert diff < 1e-6
    with pytest.raises(ValueError, match="has no real tokens"):  # ids of no tokens (an empty text), not argmax's IndexError
        clf(torch.zeros(2, 0, dtype=torch.long))
    clf.pad_token_id = None  # no pad id: every token is real, so the last token is pooled
    assert (clf.mask_from_padding(idx) == 1).all()


def test_a_save_failing_at_its_config_keeps_the_previous_classifier(tmp_path, monkeypatch):
    """The classifier saved its weights before its config, so a save failing at the config left a
    new head beside the old config.json (an audit of save_gpt's same order). It now writes both as
    save_gpt does (checkpoint.write_checkpoint), and transformers' generation_config.json goes."""
    torch.manual_seed(0)
    old = GPTClassifier(GPT(CFG), 3).eval()
    old.save_pretrained(tmp_path)
    (tmp_path / "generation_config.json").write_text("{}")
    idx, mask = _batch()
    expected = old(idx, mask)[0].detach()

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(GPTConfig, "save_json", disk_full)
    with pytest.raises(OSError, match="No space left"):
        GPTClassifier(GPT(CFG), 3, pooling="mean").save_pretrained(tmp_path)
    monkeypatch.undo()
    # (allclose: a CPU matmul may take another kernel for the same weights; a new head differs by ~1)
    assert torch.allclose(GPTClassifier.from_pretrained(tmp_path)(idx, mask)[0], expected, atol=1e-5)
    old.save_pretrained(tmp_path)
    assert not (tmp_path / "generation_config.json").exists()


def test_accuracy_is_the_share_of_right_labels_by_hand_count(monkeypatch):
    """Mutants (an audit): the accuracy skipping the last partial batch (0.8 for 1.0 here) or dividing
    by the full batches' texts (1.25) passed every test. 5 texts in batches of 2: counted by hand,
    then with one label wrong, then split over 2 processes, whose counts add up to the whole."""
    import minigpt.classify_data as classify_data

    torch.manual_seed(0)
    clf = GPTClassifier(GPT(CFG), 2).eval()
    ids = [[3, 4, 5], [6, 7], [8, 9, 10, 11], [12], [13, 14]]
    with torch.no_grad():
        right = [int(clf(torch.tensor([r]))[0].argmax()) for r in ids]  # each text alone, unpadded
    assert classify_data.score_examples(clf, ids, right, PAD, batch_size=2)["accuracy"] == 1.0
    # Texts are scored longest first: batches (2, 0), (1, 4), (3). The shortest text, [12], is alone
    # in the last, partial batch: it is the one labelled wrong.
    one_wrong = right[:3] + [1 - right[3]] + right[4:]
    assert classify_data.score_examples(clf, ids, one_wrong, PAD, batch_size=2)["accuracy"] == 0.8
    monkeypatch.setattr(classify_data.dist, "all_reduce", lambda t: None)  # each process's own count
    shares = [classify_data.score_examples(clf, ids, one_wrong, PAD, 2, rank=r, world=2)["accuracy"] for r in (0, 1)]
    assert shares == [0.4, 0.4]  # rank 0: batches 0 and 2 (texts 2, 0, 3), 2 right; rank 1: batch 1, 2 right


def test_val_loss_is_the_mean_over_every_text_a_partial_last_batch_included():
    """score_examples' loss weighs each text once: a short last batch is not weighed as a full one
    (a mutation audit: loss × batch_size passed every test)."""
    import torch.nn.functional as F

    import minigpt.classify_data as classify_data

    torch.manual_seed(0)
    clf = GPTClassifier(GPT(CFG), 2).eval()
    ids = [[3, 4, 5], [6, 7], [8, 9, 10, 11], [12], [13, 14]]  # batches of 2: the last holds one text
    labels = [0, 1, 1, 0, 1]
    with torch.no_grad():
        each = [F.cross_entropy(clf(torch.tensor([r]))[0], torch.tensor([y])).item() for r, y in zip(ids, labels)]
    got = classify_data.score_examples(clf, ids, labels, PAD, batch_size=2)["loss"]
    assert got == pytest.approx(sum(each) / len(each), abs=1e-5)


def test_evaluation_scores_texts_longest_first_so_batches_pad_little(capsys):
    """A finetuner audit: SST-2's dev set scored in the order it was drawn, 8 texts a batch, padded
    to 2.4 times its tokens, with no progress shown (minutes per evaluation). Texts of one length
    now share a batch; the figures are those of each text scored alone; `progress` shows a bar."""
    import torch.nn.functional as F

    from minigpt.classify_data import score_examples

    torch.manual_seed(0)
    clf = GPTClassifier(GPT(CFG), 2).eval()
    ids = [[3], [4, 5, 6, 7, 8, 9], [10], [11, 12, 13, 14, 15, 16]]
    labels = [0, 1, 1, 0]
    widths = []
    clf.register_forward_pre_hook(lambda m, args: widths.append(tuple(args[0].shape)))
    got = score_examples(clf, ids, labels, PAD, batch_size=2)
    assert widths == [(2, 6), (2, 1)]  # in the order drawn: (2, 6) twice, 12 tokens of padding
    with torch.no_grad():
        each = [clf(torch.tensor([r]))[0] for r in ids]
    want = F.cross_entropy(torch.cat(each), torch.tensor(labels)).item()
    assert got["loss"] == pytest.approx(want, abs=1e-6)
    assert got["accuracy"] == sum(int(e.argmax()) == y for e, y in zip(each, labels)) / len(ids)
    assert "evaluating" not in capsys.readouterr().err
    score_examples(clf, ids, labels, PAD, batch_size=2, progress=True)
    assert "evaluating" in capsys.readouterr().err


def test_score_examples_checks_the_labels_once_up_front_and_scores_without_them():
    """A review finding: score_examples passed the labels to the model only to have them checked,
    threw the loss it computed away and took each text's again. The labels are now checked once,
    before any batch is scored, the bad ones named; the model sees ids and mask alone."""
    from minigpt.classify_data import score_examples

    torch.manual_seed(0)
    clf = GPTClassifier(GPT(CFG), 2).eval()
    ids = [[3, 4], [5], [6, 7, 8], [9]]
    arguments = []
    clf.register_forward_pre_hook(lambda m, args: arguments.append(len(args)))
    with pytest.raises(ValueError, match=r"^labels -1, 2, 5 are out of range: with num_labels=2, labels must be in "
                                         r"\[0, 2\)$"):
        score_examples(clf, ids, [0, 5, 2, -1], PAD, batch_size=2)
    assert arguments == []  # no batch scored
    got = score_examples(clf, ids, [0, 1, 1, 0], PAD, batch_size=2)
    assert arguments == [2, 2]  # (idx, mask): no labels
    assert got["right"] == sum(map(sum, (row[i : i + 1] for i, row in enumerate(got["confusion"]))))
    assert got["accuracy"] == got["right"] / 4


def test_out_of_range_labels_past_five_say_how_many_more():
    """A reread: check_labels named the first five bad labels (`bad[:5]`) and stopped, as though
    they were all; it now says how many more there are (checks.first_few). A review: it wrapped
    them in brackets ("[2, 3, ... and 2 more]"), which made a Python list of what is none."""
    from minigpt.classify_data import check_labels

    with pytest.raises(ValueError, match=r"^labels 2, 3, 4, 5, 6, \.\.\. and 2 more are out of range: with "
                                         r"num_labels=2"):
        check_labels([0, 1, 2, 3, 4, 5, 6, 7, 8], num_labels=2)


def test_one_out_of_range_label_is_said_in_the_singular():
    """A review: one bad label read "val labels 5 are out of range", a plural of one. One is "label 5
    is", several "labels 2, 5 are" (the same label on many lines is one label)."""
    from minigpt.classify_data import check_labels

    with pytest.raises(ValueError, match=r"^val label 5 is out of range: with num_labels=2, labels must be in \[0, 2\)$"):
        check_labels([0, 5, 1, 5], num_labels=2, whose="val ")
    with pytest.raises(ValueError, match=r"^val labels 2, 5 are out of range: with num_labels=2"):
        check_labels([2, 5, 1], num_labels=2, whose="val ")


def test_encode_examples_cuts_each_text_and_counts_what_it_cut(base):
    """The classify data prep fine-tuning and `minigpt eval` share (a review finding: each wrote it
    out): each text's first max_tokens ids, how many texts were longer, the longest's length;
    "<|endoftext|>" in a text is its characters; padding uses the pad token, else 0 (the mask marks it)."""
    from minigpt.classify_data import batch_pad_id, encode_examples
    from minigpt.tokenizer import Tokenizer

    tok = Tokenizer.from_pretrained(base / "base")
    texts = ["the speech was good indeed", "the", "the play <|endoftext|> was fine"]
    full = [tok.encode(text, disallowed_special=()) for text in texts]
    encoded = encode_examples(tok, texts, 3)
    assert encoded.rows == [ids[:3] for ids in full]
    assert encoded.cut == sum(len(ids) > 3 for ids in full) == 2 and encoded.longest == max(map(len, full))
    assert tok.eos_token_id not in encode_examples(tok, texts[2:], 100).rows[0]
    assert batch_pad_id(tok) == tok.eos_token_id  # GPT-2's files name no pad: the EOS pads
    tok.pad_token_id = None
    assert batch_pad_id(tok) == 0


def test_a_tsv_written_by_the_csv_module_reads_back_its_texts(tmp_path):
    """A finetuner audit: csv.writer / pandas quote a text holding a quote or a tab, doubling its
    quotes, and read_tsv kept that quoting as text ('"he said ""wow"", loved it"'). A field wholly
    CSV-quoted is unquoted now; other quotes are text; a quoted text spanning lines is refused."""
    import csv

    from minigpt.classify_data import read_tsv

    rows = [("he said \"wow\", loved it", 1), ("a\ttab inside", 0), ("\"quoted\" whole", 1), ("plain text", 0)]
    with open(tmp_path / "csv.tsv", "w", newline="") as f:
        csv.writer(f, delimiter="\t").writerows([("sentence", "label"), *rows])
    assert read_tsv(tmp_path / "csv.tsv") == ([t for t, _ in rows], [y for _, y in rows])
    with open(tmp_path / "all.tsv", "w", newline="") as f:  # every field quoted, the labels too
        csv.writer(f, delimiter="\t", quoting=csv.QUOTE_ALL).writerows([("sentence", "label"), *rows])
    assert read_tsv(tmp_path / "all.tsv") == ([t for t, _ in rows], [y for _, y in rows])
    # Not CSV quoting (inner quotes not doubled, or an opening quote alone): the quotes are the text's.
    plain = ['"great" and "bad"', '"unclosed', "it's ``fine''"]
    (tmp_path / "plain.tsv").write_text("".join(f"{t}\t1\n" for t in plain))
    assert read_tsv(tmp_path / "plain.tsv") == (plain, [1, 1, 1])
    with open(tmp_path / "lines.tsv", "w", newline="") as f:
        csv.writer(f, delimiter="\t").writerows([("good", 1), ("two\nlines", 0)])
    with pytest.raises(ValueError, match=r"lines.tsv:2: a quoted text goes on past this line .* replace the line ends"):
        read_tsv(tmp_path / "lines.tsv")


@pytest.mark.parametrize("label", [0, "negative"])
def test_a_quoted_text_holding_a_line_end_is_refused_whatever_its_label(tmp_path, label):
    """A review finding: csv.writer's `"Rating:<TAB>1<LF>Not for me, sadly."<TAB>0` was read as two
    examples, ('"Rating:', 1) and ('Not for me, sadly."', 0): the line opening the quote was let be
    because its "label" (1) was an integer, and the line closing it was never checked. A line
    opening a quote it never closes, then one closing a quote it never opened, is refused now,
    whatever the labels; a quote opened or closed alone is still the text's own."""
    import csv

    from minigpt.classify_data import read_tsv

    other = 1 if label == 0 else "positive"
    rows = [("sentence", "label"), ("good film", other), ("Rating:\t1\nNot for me, sadly.", label), ("bad film", label),
            ('Rating:\t9\n\n  10 "out of" 10\n!', other)]
    f = tmp_path / "lines.tsv"
    with open(f, "w", newline="") as out:
        csv.writer(out, delimiter="\t", lineterminator="\n").writerows(rows[:4])
    with pytest.raises(ValueError, match=r"lines.tsv:3: a quoted text goes on past this line to line 4 \('\"Rating:\\t1'\): "
                                         r"it holds a line end, .* if the quotes on lines 3 and 4 are the texts' own, CSV-quote"):
        read_tsv(f)
    with open(f, "w", newline="") as out:  # the second record alone: lines 3-6, a blank one and doubled quotes between
        csv.writer(out, delimiter="\t", lineterminator="\n").writerows([rows[0], rows[1], rows[4], rows[3]])
    with pytest.raises(ValueError, match=r"lines.tsv:3: a quoted text goes on past this line to line 6 "):
        read_tsv(f)
    # Quotes opened or closed alone, or with a lone quote between (no CSV-quoted text holds one): the texts'.
    texts = ['he is 6\'2"', '"unclosed', 'a "lone quote', 'closes"', '"opens', 'plain']
    f.write_text("".join(f"{text}\t{label}\n" for text in texts))
    assert read_tsv(f) == (texts, [label] * len(texts))


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32", "utf-32-be"])
def test_a_utf16_or_utf32_tsv_is_named_with_the_conversion_that_fits(tmp_path, encoding):
    """A finetuner audit: a UTF-16 file (Windows' "Unicode") was "not UTF-8 text: byte 0xff at
    offset 0; convert it first (e.g. iconv -f latin1 -t utf-8)": a wrong conversion. Its byte order
    mark tells the encoding, and the fix names it."""
    from minigpt.classify_data import read_tsv

    f = tmp_path / "t.tsv"
    text = "great\t1\nawful\t0\n"
    f.write_bytes(codecs.BOM_UTF32_BE + text.encode("utf-32-be") if encoding == "utf-32-be" else
                  codecs.BOM_UTF16_BE + text.encode("utf-16-be") if encoding == "utf-16-be" else text.encode(encoding))
    family = encoding.removesuffix("-be")
    with pytest.raises(ValueError, match=f"is {family.upper()} text, not UTF-8 .* iconv -f {family} -t utf-8"):
        read_tsv(f)


def _dropouts_differ(path):
    """A copy of a checkpoint whose config.json sets HF's three dropout rates to different values."""
    config = json.loads((path / "config.json").read_text())
    config.update(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.1)
    (path / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("rank,warned", [("0", 1), ("1", 0)])
def test_loading_init_warns_once_and_on_rank_0_alone(tmp_path, monkeypatch, rank, warned):
    """A runner audit: a checkpoint's "dropout rates differ" warning was printed twice by each
    process (the block-size check parsed config.json, then the load again), so 2N times under
    torchrun, where the other notes are rank 0's alone."""
    import warnings

    from minigpt.finetune_config import FinetuneConfig
    from minigpt.pretrain import build_model

    GPT(CFG).save_pretrained(tmp_path / "m")
    _dropouts_differ(tmp_path / "m")
    monkeypatch.setenv("RANK", rank)
    monkeypatch.setenv("WORLD_SIZE", "2")
    cfg = FinetuneConfig(init=str(tmp_path / "m"), data="unused.txt", block_size=16)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build_model(cfg, CFG.vocab_size, PAD)
    assert [str(w.message).count("minigpt has one dropout rate") for w in caught] == [1] * warned


CORPUS = "the speech was good indeed, and the play was fine; the speech was bad, and the play was poor.\n" * 20


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A tiny pretrained-looking model dir (HF layout + tokenizer) and a TSV of two labels."""
    return save_tiny_base(tmp_path_factory.mktemp("classify"), CORPUS, 280)


def _finetune(init, out, *extra):
    from minigpt.finetune import main

    return main(["--init", str(init), "--out", str(out), "--task", "classify", "--max-iters", "4", "--eval-interval", "2",
                 "--batch-size", "4", "--block-size", "32", "--warmup-iters", "1", *extra])


def test_finetune_evaluates_in_larger_batches_with_a_bar(base, tmp_path, monkeypatch, capsys):
    """A finetuner audit: each evaluation scored the dev set at the training batch size, the
    training bar frozen meanwhile. It takes EVAL_BATCH_SCALE times --batch-size texts a batch
    (no gradients: no activations kept for backward), with a bar of its own."""
    import minigpt.finetune as finetune

    calls = []

    def recorded(*args, **kwargs):
        calls.append((args[4], kwargs["progress"]))
        return score_examples(*args, **kwargs)

    score_examples = finetune.score_examples
    monkeypatch.setattr(finetune, "score_examples", recorded)
    assert _finetune(base / "base", tmp_path / "o", "--data", str(base / "cls.tsv"), "--strategy", "frozen") == 0
    assert calls == [(finetune.EVAL_BATCH_SCALE * 4, True)] * 2
    assert "evaluating" in capsys.readouterr().err


def test_finetune_goes_on_from_a_classifier_keeping_its_head(base, tmp_path, capsys):
    """A finetuner audit: `minigpt finetune --init CLASSIFIER --task classify` was refused ("training
    starts from a language model"), so a linear probe could not be followed by a full fine-tune.
    The classifier now goes on training, head and label names included; head options that are not
    its own are refused by name, and the lm task still refuses it, saying what works."""
    data = ("--data", str(base / "cls.tsv"))
    assert _finetune(base / "base", tmp_path / "probe", *data, "--strategy", "frozen", "--lr", "1e-2") == 0
    probe = GPTClassifier.from_pretrained(tmp_path / "probe")
    config = json.loads((tmp_path / "probe" / "config.json").read_text())
    config["id2label"], config["label2id"] = {"0": "neg", "1": "pos"}, {"neg": 0, "pos": 1}
    (tmp_path / "probe" / "config.json").write_text(json.dumps(config))
    # A tiny learning rate: the head moves by ~1e-6 from the probe's, where a new one would be drawn anew.
    assert _finetune(tmp_path / "probe", tmp_path / "full", *data, "--strategy", "full", "--lr", "1e-7", "--min-lr", "0") == 0
    full = GPTClassifier.from_pretrained(tmp_path / "full")
    assert full.id2label == {0: "neg", 1: "pos"}
    assert torch.allclose(full.score.weight, probe.score.weight, atol=1e-5)
    assert not torch.equal(full.score.weight, probe.score.weight)  # it trained
    capsys.readouterr()
    for flags, message in [(("--num-labels", "3"), "its head has --num-labels 2, not --num-labels 3; leave --num-labels unset"),
                           (("--pooling", "mean"), "its head has --pooling last, not --pooling mean; leave --pooling unset"),
                           (("--head-hidden", "8"), 'its head has --head-hidden "", not --head-hidden 8; leave --head-hidden unset')]:
        assert _finetune(tmp_path / "probe", tmp_path / "refused", *data, *flags) == 2
        assert f"--init {tmp_path / 'probe'} is a classifier, whose head goes on training: {message}" in capsys.readouterr().err
    from minigpt.finetune import main

    assert main(["--init", str(tmp_path / "probe"), "--out", str(tmp_path / "lm"), "--data", str(base / "cls.tsv")]) == 2
    assert "training starts from a language model (GPT2LMHeadModel) (e.g. the one the classifier was fine-tuned from); " \
           "`minigpt finetune --task classify` goes on training a classifier" in capsys.readouterr().err


def test_a_classifier_init_goes_on_training_its_own_pooling_and_hidden_layers_without_flags(base, tmp_path, capsys):
    """A review finding: a classifier --init trained with --pooling mean --head-hidden 8 was refused
    unless both flags were typed again (the defaults, last and no hidden layer, were compared as if
    given), one flag per refusal, the widths printed as (8,). Unset, they are now the head's own, and
    the run's saved config says so (a bare --resume goes on with it); the flags given that differ
    are refused all at once, as typed."""
    from minigpt.resume import read_state
    from minigpt.run_dir import STATE_FILE
    from minigpt.tokenizer import Tokenizer

    torch.manual_seed(0)
    GPTClassifier(GPT.from_pretrained(base / "base"), 2, pooling="mean", hidden=(8,)).save_pretrained(tmp_path / "mean")
    Tokenizer.from_pretrained(base / "base").save_pretrained(tmp_path / "mean")
    data = ("--data", str(base / "cls.tsv"))
    assert _finetune(tmp_path / "mean", tmp_path / "o", *data) == 0
    saved = read_state(tmp_path / "o" / STATE_FILE, map_location="cpu")["config"]
    assert (saved["pooling"], saved["head_hidden"]) == ("mean", "8")
    trained = GPTClassifier.from_pretrained(tmp_path / "o")
    assert (trained.pooling, trained.hidden) == ("mean", (8,))
    from minigpt.finetune import main

    assert main(["--out", str(tmp_path / "o"), "--resume", "--max-iters", "6"]) == 0
    capsys.readouterr()
    assert _finetune(tmp_path / "mean", tmp_path / "refused", *data, "--pooling", "last", "--head-hidden", "16,4") == 2
    assert ("its head has --pooling mean, --head-hidden 8, not --pooling last, --head-hidden 16,4; leave --pooling and "
            "--head-hidden unset (the head's own are then taken)") in capsys.readouterr().err


def test_read_tsv_gives_label_names_as_strings_with_the_header_rule(tmp_path):
    """A classifier-tuning audit: a TSV labelled `positive`/`negative` was refused ("label is not an
    integer"). Names now read as strings; a first line of column names is still a header (its label
    is no other line's), a one-word first example is not (its name is other lines' too), a file
    mixing ids and names is refused by line, and so is a first line that looks like a header with a
    space in it, rather than trained as a class of one example."""
    from minigpt.classify_data import read_tsv

    f = tmp_path / "named.tsv"
    f.write_text("sentence\tlabel\na fine film\tpositive\nawful\tnegative \n")
    assert read_tsv(f) == (["a fine film", "awful"], ["positive", "negative"])
    f.write_text("great\tpositive\nawful\tnegative\nfine\tpositive\n")  # no header: `great` is an example
    assert read_tsv(f) == (["great", "awful", "fine"], ["positive", "negative", "positive"])
    f.write_text('"loved it\tpositive\nawful\tnegative\nfine\tpositive\n')  # a stray quote, then a label
    assert read_tsv(f)[0][0] == '"loved it'
    for content, message in [
        ("good\tpositive\nbad\t0\nfine\tpositive\n", r":1: label 'positive' is not an integer class id \(a first line is "
                                                     r"taken for a header only when .*\), but line 2's label 0 is: "
                                                     r"a file's labels are all class ids \(0, 1, 2, ...\) or all names"),
        ("review text\tsentiment\ngood\tpositive\nbad\tnegative\nfine\tpositive\nawful\tnegative\n", r":1: label 'sentiment' is the only one no other "
                                                                    r"line has, as a header's, but a first line is taken"),
    ]:
        f.write_text(content)
        with pytest.raises(ValueError, match=message):
            read_tsv(f)



def test_a_first_line_with_a_space_in_its_label_is_an_example_and_a_skipped_header_is_said(tmp_path, capsys):
    """A data audit: the header rule looked at the text column alone, so a header-less file's first
    example `Superb!<TAB>very positive` (its label the only one of its class) was dropped as a header,
    without a word: 5 of 6 examples read. A header's label is a name without spaces too; and a line
    skipped as a header is said, once, on stderr, so that a wrong guess is seen."""
    from minigpt.classify_data import read_tsv

    f = tmp_path / "dev.tsv"
    f.write_text("Superb!\tvery positive\ndull and slow\tnegative\nnice acting\tpositive\nnot worth it\tnegative\n"
                 "worst thing ever\tvery negative\ngood fun\tpositive\n")
    texts, labels = read_tsv(f)
    assert (len(texts), texts[0], labels[0]) == (6, "Superb!", "very positive")
    assert "header" not in capsys.readouterr().err
    f.write_text("sentence\tlabel\ngood\tvery positive\nbad\tnegative\nfine\tvery positive\n")
    assert read_tsv(f) == (["good", "bad", "fine"], ["very positive", "negative", "very positive"])
    assert capsys.readouterr().err == f"{f}: skipped line 1 as a header: sentence, label\n"


def test_label_first_columns_are_diagnosed_and_a_long_list_of_labels_is_cut(tmp_path):
    """A data audit: a `label<TAB>text` file lost its first line as a header, and fine-tuning's error
    listed every training text as a "label", 40 of them on one line. Columns that look swapped
    (more distinct labels than texts, most lines a label of their own) are refused, saying so; and
    an error listing the classes names the first 5, then how many more."""
    from minigpt.classify_data import load_classification_data, read_tsv
    from minigpt.finetune import _class_ids

    f = tmp_path / "label_first.tsv"
    f.write_text("positive\tgreat movie, loved it\nnegative\tterrible acting\npositive\tsuperb fun\n"
                 "neutral\tit was ok I guess\nnegative\tboring and long\n")
    with pytest.raises(ValueError, match=r"label_first.tsv: the columns look like label<TAB>text, but classify reads "
                                         r"text<TAB>label: the labels are 5 distinct values in 5 lines \('great movie, "
                                         r"loved it', 'terrible acting', 'superb fun', 'it was ok I guess', 'boring and "
                                         r"long'\), the texts 3 \('positive', 'negative', 'neutral'\): swap the columns"):
        read_tsv(f)
    f.write_text("label\ttext\n" + "".join(f"{('negative', 'positive')[i % 2]}\ta review #{i}\n" for i in range(40)))
    with pytest.raises(ValueError, match=r"the labels are 40 distinct values in 40 lines \('a review #0', 'a review #1', "
                                         r"'a review #2', 'a review #3', 'a review #4', ... and 35 more\), the texts 2"):
        read_tsv(f)
    classes = [f"class{c}" for c in range(8)]
    train = "".join(f"text {i}\t{classes[i % 8]}\n" for i in range(24))
    cfg = _named_data(tmp_path, train, "so so\tneutral\n")
    with pytest.raises(ValueError, match=r"dev.tsv:1: label 'neutral' is none of the training split's labels, the "
                                         r"classes a new head learns: 'class0', 'class1', 'class2', 'class3', 'class4', "
                                         r"... and 3 more$"):
        _class_ids(cfg, load_classification_data(cfg), None)

def _named_data(tmp_path, train: str, dev: str | None = None, **kw):
    """The settings _classify_task reads the data from, for a train.tsv (and dev.tsv) in tmp_path."""
    from types import SimpleNamespace

    from minigpt.finetune_config import VAL_FRACTION_DEFAULT

    (tmp_path / "train.tsv").write_text(train)
    if dev is not None:
        (tmp_path / "dev.tsv").write_text(dev)
    return SimpleNamespace(**{**dict(data=str(tmp_path), val_data=None, seed=0, val_fraction=VAL_FRACTION_DEFAULT,
                                     max_examples=None, max_val_examples=None, init="clf", num_labels=None), **kw})


def test_named_labels_are_numbered_from_the_training_split_and_val_goes_through_the_same(tmp_path):
    """Names are numbered by the training split, sorted (0 negative, 1 positive), and the val split
    through the same mapping: a val name the training split lacks (no head row could learn it) is
    refused by file and line, as is a val file whose labels are ids where training's are names,
    and a --num-labels that is not the number of names."""
    from minigpt.classify_data import load_classification_data
    from minigpt.finetune import _class_ids

    train = "sentence\tlabel\ngreat\tpositive\nawful\tnegative\nfine\tpositive\n"
    cfg = _named_data(tmp_path, train, "so good\tpositive\nso bad\tnegative\n")
    data, id2label = _class_ids(cfg, load_classification_data(cfg), None)
    assert id2label == {0: "negative", 1: "positive"}
    assert dict(zip(*data["val"])) == {"so good": 1, "so bad": 0} and dict(zip(*data["train"])) == {"great": 1, "awful": 0, "fine": 1}
    cfg = _named_data(tmp_path, train, "so-so\tneutral\nso good\tpositive\nmeh\tneutral\n")
    with pytest.raises(ValueError, match=r"dev.tsv:1: label 'neutral' is none of the training split's labels, the "
                                         r"classes a new head learns: 'negative', 'positive'"):
        _class_ids(cfg, load_classification_data(cfg), None)
    cfg = _named_data(tmp_path, train, "good\t1\nbad\t0\n")
    with pytest.raises(ValueError, match=r"train.tsv's labels are names, but .*dev.tsv's are class ids: label both files alike"):
        load_classification_data(cfg)
    import minigpt.finetune as finetune

    cfg = _named_data(tmp_path, train, "so good\tpositive\n", num_labels=3)
    with pytest.raises(ValueError, match=r"--num-labels 3, but the training labels name 2 classes \(negative, positive\): "
                                         "drop --num-labels"):
        finetune._classify_task(cfg, None, None, None, False)


def test_a_classifier_init_keeps_its_label_names_and_maps_the_data_through_them(tmp_path):
    """finetune --init CLASSIFIER goes on training its head, whose rows are its classes: named data
    goes through the classifier's own label2id (here not in sorted order), not numbered anew, which
    would swap the classes silently; a name the classifier lacks is refused by file and line."""
    from minigpt.classify_data import load_classification_data
    from minigpt.finetune import _class_ids

    clf = GPTClassifier(GPT(CFG), 2, id2label={0: "positive", 1: "negative"})
    train = "great\tpositive\nawful\tnegative\nfine\tpositive\n"
    cfg = _named_data(tmp_path, train, "so bad\tnegative\n")
    data, _ = _class_ids(cfg, load_classification_data(cfg), clf)
    assert dict(zip(*data["train"])) == {"great": 0, "awful": 1, "fine": 0}
    assert data["val"] == (["so bad"], [1])
    cfg = _named_data(tmp_path, train + "so-so\tneutral\n", "so bad\tnegative\n")
    with pytest.raises(ValueError, match=r"train.tsv:4: label 'neutral' is none of the labels of --init clf, whose head "
                                         r"goes on training: 'positive', 'negative'"):
        _class_ids(cfg, load_classification_data(cfg), clf)


def test_finetune_on_named_labels_saves_them_for_transformers_and_its_pipeline(base, tmp_path, capsys):
    """A classifier-tuning audit: config.json always said LABEL_0/LABEL_1, so transformers'
    text-classification pipeline answered "LABEL_1". A run on named labels saves them as id2label
    and label2id; GPT2ForSequenceClassification reads them and the pipeline answers with them."""
    from transformers import pipeline

    text = (base / "cls.tsv").read_text().replace("\t0\n", "\tnegative\n").replace("\t1\n", "\tpositive\n")
    (tmp_path / "named.tsv").write_text(text)
    assert _finetune(base / "base", tmp_path / "o", "--data", str(tmp_path / "named.tsv"), "--strategy", "full",
                     "--lr", "1e-2") == 0
    assert "2 labels (0 negative, 1 positive)" in capsys.readouterr().err
    config = json.loads((tmp_path / "o" / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"} and config["label2id"] == {"negative": 0, "positive": 1}
    hf = GPT2ForSequenceClassification.from_pretrained(tmp_path / "o")
    assert hf.config.id2label == {0: "negative", 1: "positive"} and hf.config.label2id == {"negative": 0, "positive": 1}
    answers = pipeline("text-classification", model=str(tmp_path / "o"), device="cpu")(["the speech was good indeed",
                                                                                     "the speech was bad indeed"])
    assert {a["label"] for a in answers} <= {"negative", "positive"}, answers


def test_a_classifier_whose_vocabulary_was_grown_by_hand_is_refused_before_saving(tmp_path):
    """A review: the classifier's save checked tensor names only, so a wte grown past the config's
    vocab_size was written beside a config.json that neither minigpt nor transformers could load."""
    clf = _classifier()
    clf.gpt.transformer.wte = torch.nn.Embedding(CFG.vocab_size + 1, CFG.n_embd)
    clf.gpt.lm_head.weight = clf.gpt.transformer.wte.weight
    with pytest.raises(ValueError, match=r"tensor 'gpt\.transformer\.wte\.weight' has shape \(98, 64\).*config\.vocab_size = 98"):
        clf.save_pretrained(tmp_path / "clf")
    assert not (tmp_path / "clf").exists()


@pytest.mark.parametrize("hidden, match", [
    ("256", r"^hidden must be a tuple of ints, the head's hidden widths \(such as \(512, 256\)"),
    (256, r"^hidden must be a tuple of ints"), (None, r"^hidden must be a tuple of ints"),
    ((256.0,), r"^hidden\[0\] must be an integer, got 256.0"), ((8, "256"), r"^hidden\[1\] must be an integer, got '256'")])
def test_hidden_must_be_a_tuple_of_ints(hidden, match):
    """An audit: GPTClassifier(hidden='256') and (256.0,) failed with torch's errors (a str compared
    to an int, a float size in nn.Linear), naming no argument. They are a TypeError naming `hidden`
    (or the width) and what it takes; NumPy integers are widths too."""
    with pytest.raises(TypeError, match=match):
        _classifier(hidden=hidden)
    import numpy as np
    assert _classifier(hidden=[np.int64(8), 4]).hidden == (8, 4)


def test_a_float32_head_on_a_frozen_bfloat16_backbone_runs():
    """An audit: a bfloat16 frozen backbone under a float32 head (the one part that trains, so kept
    in float32) passed apply_strategy, then forward failed: "expected m1 and m2 to have the same
    dtype". The pooled vector now takes the head's dtype; the logits are float32, and so is the
    head's gradient."""
    from minigpt.finetune import apply_strategy

    torch.manual_seed(0)
    clf = GPTClassifier(GPT(CFG).to(torch.bfloat16), 3, hidden=(16,))
    clf.score.float()
    apply_strategy(clf, "frozen")
    idx, mask = _batch()
    logits, loss = clf(idx, mask, labels=torch.tensor([0, 1, 2]))
    loss.backward()
    assert logits.dtype == torch.float32 and torch.isfinite(loss)
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in clf.score.parameters())


def test_a_small_vocabulary_classifier_has_no_default_pad_and_saves_what_it_uses(tmp_path):
    """An audit: with GPTConfig(vocab_size=100), the default pad was the config's EOS 50256, no token
    of the model (an explicit 50256 is refused), and config.json said `pad_token_id: 50256` beside
    `bos/eos_token_id: null`; loading it warned of padding "finished rows" (generation's words) and
    kept 50256 anyway. The default is now None, saved as null, and loads as None without a warning;
    ids alone are then read whole, each row to its last token."""
    torch.manual_seed(0)
    clf = GPTClassifier(GPT(GPTConfig.gpt2("gpt2-tiny", vocab_size=100)), 2).eval()
    assert clf.config.eos_token_id == 50256 and clf.pad_token_id is None
    clf.save_pretrained(tmp_path)
    d = json.loads((tmp_path / "config.json").read_text())
    assert (d["bos_token_id"], d["eos_token_id"], d["pad_token_id"]) == (None, None, None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning at all on the way back
        again = GPTClassifier.from_pretrained(tmp_path)
    assert again.pad_token_id is None
    idx = torch.tensor([[5, 6, 7], [8, 9, 0]])
    with torch.no_grad():  # a guard only (it held before too, as no id equals 50256): every token is real
        assert torch.allclose(again(idx)[0], again(idx, torch.ones_like(idx))[0], atol=1e-6)


def test_the_default_pad_falls_back_to_the_eos_when_the_configs_own_pad_is_no_token():
    """A review: with the config's pad past the vocabulary (500 of 100) and its EOS a token (99),
    the default pad was None; the docstring's rule, the first of the config's pad and its EOS
    that is a token of the model, gives the EOS."""
    config = GPTConfig.gpt2("gpt2-tiny", vocab_size=100, eos_token_id=[700, 99], pad_token_id=500)
    assert GPTClassifier(GPT(config), 2).pad_token_id == 99
    assert GPTClassifier(GPT(GPTConfig.gpt2("gpt2-tiny", vocab_size=100, pad_token_id=7)), 2).pad_token_id == 7


def test_a_saved_pad_past_the_vocabulary_is_dropped_in_a_classifiers_words(tmp_path):
    """Older minigpt saved a small-vocabulary classifier with `pad_token_id: 50256`. GPTConfig's check
    warned that "finished rows are padded with the EOS" (generation, which a classifier never does)
    and the classifier kept 50256 all the same. Now one warning, in a classifier's terms, and None.
    (A review: the classifier's own copy of the check is gone; GPTConfig's says it for a classifier.)"""
    GPTClassifier(GPT(GPTConfig.gpt2("gpt2-tiny", vocab_size=100)), 2).save_pretrained(tmp_path)
    d = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**d, "pad_token_id": 50256}))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        clf = GPTClassifier.from_pretrained(tmp_path)
    assert [str(w.message) for w in caught] == [
        f"{tmp_path / 'config.json'} sets pad_token_id 50256, which is no token of this model (ids 0 .. 99): "
        "ignored, so ids alone are read to their last token, and a padded batch needs its attention_mask"]
    assert caught[0].filename == __file__  # the user's line, not minigpt's
    assert clf.pad_token_id is None and clf.config.pad_token_id is None
    clf.save_pretrained(tmp_path / "again")
    assert json.loads((tmp_path / "again" / "config.json").read_text())["pad_token_id"] is None


def test_a_classifier_config_json_warns_of_a_dropped_pad_in_a_classifiers_terms():
    """A review: GPTConfig.from_hf_dict warned of a classifier's pad past the vocabulary in a language
    model's terms ("finished rows are padded with the EOS"), so the classifier checked it again
    itself, with its own words; the one check now knows the file is a classifier's."""
    d = GPTConfig.gpt2("gpt2-tiny", vocab_size=100).to_hf_dict("GPT2ForSequenceClassification") | {"pad_token_id": 100}
    with pytest.warns(UserWarning, match=r"config.json sets pad_token_id 100, .*: ignored, so ids alone are read "
                                         r"to their last token, and a padded batch needs its attention_mask$"):
        assert GPTConfig.from_hf_dict(d).pad_token_id is None


def test_help_documents_the_classifiers_options():
    """An audit: help(GPTClassifier) said nothing of pooling, hidden, id2label or pad_token_id, and
    showed nn.Module's "Initialize internal Module state" for __init__. A review: it did not say that
    transformers cannot batch a checkpoint saved with no pad, nor how to save one it can."""
    text = pydoc.render_doc(GPTClassifier, renderer=pydoc.plaintext)
    for option in ('pooling: "last"', "hidden: the hidden widths", "id2label: {class id: name}",
                   "pad_token_id: the id that pads a batch", "as finetune does"):
        assert option in text
    assert "Initialize internal Module state" not in text
