"""A GPT-2 sequence classifier: the pretrained transformer reads the text, a small head labels it.

Where it sits: `ids → GPT.hidden_states (wte + wpe → blocks → ln_f) → pool one vector per text
→ score → logits (B, num_labels)`. The LM head is simply not used: classification replaces
"which token comes next" with "which label fits". Fine-tuning (`minigpt/finetune.py`) decides
which of these weights train.

Pooling. GPT-2 attends causally, so only the *last* real token has seen the whole text: its hidden
state is the natural summary, and it is what Hugging Face's `GPT2ForSequenceClassification` uses.
Mean pooling (average over real tokens) is offered as an alternative. Batches must be
right-padded (real tokens, then padding): with causal attention a real token never looks at the
pads to its right, so the backbone needs no attention mask at all. Called with ids alone, the
classifier finds the padding from `pad_token_id` as HF does (the rightmost non-pad token is the last
real one), so `clf(ids)` and `clf(ids, mask)` agree on a right-padded batch, as HF's do.

Checkpoints use HF's layout: `transformer.*` (the GPT-2 weights), `score.weight` (num_labels, C),
no bias, and config.json with `architectures: [GPT2ForSequenceClassification]`, `id2label` and
`pad_token_id`, so `transformers` opens it and computes the same logits (one text at a time
where config.json's pad_token_id is null: transformers refuses a larger batch then). Two options here are
minigpt extensions that HF's class does not have: mean pooling and an MLP head (`hidden` layers,
saved as `score.0.weight`, ...). They are recorded under `minigpt_head` in config.json; minigpt
reloads them exactly. transformers cannot reproduce them, so it must not take their weights for its
own `score`: an MLP head has other names, and a mean-pooled head is saved as `mean_pool_score.*`
(`MEAN_HEAD`). transformers then reports them UNEXPECTED and `score.weight` MISSING (newly
initialised) in its load report, instead of pooling the last token through the mean head silently.
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import TypeVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from minigpt.checkpoint import (CONV1D_SUFFIXES, IGNORED_SUFFIXES, as_held, check_checkpoint_dir, check_config_fits_weights,
                                check_layout, is_classifier_checkpoint, one_dtype, read_tensors, resolve_device,
                                resolve_dtype, stored_shapes, weight_files, write_checkpoint, wrong_shape)
from minigpt.checks import as_count, first_few
from minigpt.config import GPTConfig, shipped_path
from minigpt.files import read_json
from minigpt.model import GPT

POOLINGS = ("last", "mean")
# Where a mean-pooled head's tensors are saved, in place of `score.`: HF's class pools the last token
# and would take a `score.weight` as its own, giving other logits without a word. minigpt also reads
# a mean-pooled head under `score.`, as it saved one before.
MEAN_HEAD = "mean_pool_score."


SomeClassifier = TypeVar("SomeClassifier", bound="GPTClassifier")  # GPTClassifier or a subclass: from_pretrained builds it


class GPTClassifier(nn.Module):
    """A GPT backbone (`gpt`, its LM head unused) + a `score` head: ids (B, T) → logits (B, num_labels).

    Options (keyword-only):
      pooling: "last" (default, HF's) reads each text's last real token, the only one that has
        seen the whole text; "mean" averages the real tokens (a minigpt extension).
      hidden: the hidden widths of an MLP head, e.g. (256,) for Linear(C, 256) → GELU →
        Linear(256, num_labels); () (default) is one Linear(C, num_labels), HF's `score`.
      id2label: {class id: name} for ids 0 .. num_labels-1, e.g. {0: "neg", 1: "pos"}: a dict,
        not a list. None names them "LABEL_0", "LABEL_1", ... as HF does.
      pad_token_id: the id that pads a batch. forward uses it only to find each row's padding in
        ids without an attention_mask, but save_pretrained writes it to config.json, where it
        decides transformers' pooling for every batch. None takes the config's pad, else its first
        EOS (<|endoftext|> in GPT-2): the first that is a token of the model. With none, every
        token is real (a padded batch needs its attention_mask), and transformers reads the saved
        checkpoint one text at a time ("Cannot handle batch sizes > 1", mask or not): for one it
        can batch, pass `pad_token_id=tokenizer.pad_token_id` (or the EOS), as finetune does.

    The whole classifier starts in its backbone's mode: eval mode (dropout off) around a
    `GPT.from_pretrained` model, as `GPTClassifier.from_pretrained` returns one, train mode around
    a fresh `GPT(config)`; a submodule of the backbone set to another mode is set to it too. Call
    `clf.train()` before fine-tuning (minigpt's train loop does).
    """

    def __init__(
        self,
        gpt: GPT,
        num_labels: int,
        *,
        pooling: str = "last",
        hidden: tuple[int, ...] = (),
        id2label: dict[int, str] | None = None,
        pad_token_id: int | None = None,
    ) -> None:
        """Wrap `gpt` with a new `score` head for `num_labels` ≥ 2 classes; the options are in the class docstring."""
        super().__init__()
        num_labels = as_count("num_labels", num_labels)
        if num_labels < 2:
            raise ValueError(f"num_labels must be an integer ≥ 2, got {num_labels!r}")
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; choose one of {POOLINGS}")
        # A tuple of ints: "256" would be read as the characters "2", "5", "6", and 256.0 (or 256)
        # would fail inside torch with an error that names no argument.
        if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Iterable):
            raise TypeError(f"hidden must be a tuple of ints, the head's hidden widths (such as (512, 256); () for "
                            f"one linear layer), got {hidden!r}")
        hidden = tuple(as_count(f"hidden[{i}]", h) for i, h in enumerate(hidden))
        if any(h <= 0 for h in hidden):
            raise ValueError(f"hidden layer widths must be positive, got {list(hidden)}")
        if id2label is not None and sorted(id2label) != list(range(num_labels)):
            raise ValueError(f"id2label must name labels 0..{num_labels - 1}, got keys {sorted(id2label)}")
        self.gpt = gpt
        self.config: GPTConfig = gpt.config
        self.num_labels, self.pooling, self.hidden = num_labels, pooling, tuple(hidden)
        self.id2label = id2label or {i: f"LABEL_{i}" for i in range(num_labels)}  # HF's default names
        # GPT-2 has no pad token; the usual choice is <|endoftext|>. HF uses it to find each row's
        # last real token; minigpt uses the attention mask, or derives one from it when none is given.
        V = self.config.vocab_size  # a pad no id can equal is never found: padded rows would pool a pad
        pad_token_id = None if pad_token_id is None else as_count("pad_token_id", pad_token_id)
        if pad_token_id is not None and not 0 <= pad_token_id < V:
            raise ValueError(f"pad_token_id must be a token id in [0, vocab_size={V}) or None, got {pad_token_id!r}: "
                             "padding is found where the ids equal it")
        if pad_token_id is None:  # the config's pad, else its first EOS: the first that is one of the model's tokens
            # GPT-2's 50256 kept by a smaller vocabulary is no token: no id can equal it, and
            # config.json would name a pad beside a null EOS (to_hf_dict writes such ids as null).
            candidates = [self.config.pad_token_id, *self.config.eos_ids]
            pad_token_id = next((t for t in candidates if t is not None and 0 <= t < V), None)
        self.pad_token_id = pad_token_id
        widths = (self.config.n_embd, *self.hidden)
        layers: list[nn.Module] = []
        for w_in, w_out in zip(widths, widths[1:]):
            layers += [nn.Linear(w_in, w_out), nn.GELU(approximate="tanh")]
        # The last layer has no bias, as in HF's `score`: a bias per label only shifts the prior.
        final = nn.Linear(widths[-1], num_labels, bias=False)
        self.score = nn.Sequential(*layers, final) if layers else final
        for m in self.score.modules():  # HF's init: normal(0, initializer_range), zero biases
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=self.config.initializer_range)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        self.score.to(device=gpt.lm_head.weight.device, dtype=gpt.lm_head.weight.dtype)
        # The new head is in train mode, as every new module; a loaded backbone is in eval mode. One
        # mode for the whole: else clf.training says True while the backbone's dropout is off.
        self.train(gpt.training)

    @property
    def label2id(self) -> dict[str, int]:
        """Each class's id by its name: id2label turned round (config.json holds both, as HF's does)."""
        return {name: i for i, name in self.id2label.items()}

    def pool(self, h: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Hidden states (B, T, C) and a right-padded mask (B, T) → one vector per row (B, C)."""
        lengths = attention_mask.sum(dim=1)  # (B,) real tokens per row
        if self.pooling == "last":
            return h[torch.arange(h.size(0), device=h.device), lengths - 1]  # (B, C)
        m = attention_mask.unsqueeze(-1).to(h.dtype)  # (B, T, 1)
        return (h * m).sum(dim=1) / lengths.unsqueeze(-1).to(h.dtype)  # (B, C)

    def mask_from_padding(self, idx: torch.Tensor) -> torch.Tensor:
        """The mask HF's GPT2ForSequenceClassification implies when given only ids: each row is real
        up to its rightmost token that is not `pad_token_id`, padding after it. So the last-token
        pool is exactly HF's: a row with no pad ends at its last token, and a row of nothing but pad
        keeps token 0 (HF's argmax of all zeros). Mean pooling averages over the same tokens. Like
        HF, a text's own trailing `<|endoftext|>` (the usual pad) counts as padding: pass a mask to
        keep it. Without a `pad_token_id` every token is real, each row read to its last token: HF
        does so for a single row and refuses a batch of more ("Cannot handle batch sizes > 1"),
        which minigpt reads whole, as rows of one length need no padding."""
        if idx.dim() != 2 or idx.size(1) == 0 or self.pad_token_id is None:
            return torch.ones_like(idx)  # a wrong shape, or no tokens at all, is reported by _check_inputs
        positions = torch.arange(idx.size(1), device=idx.device)  # (T,)
        last = (positions * (idx != self.pad_token_id)).argmax(dim=1, keepdim=True)  # (B, 1)
        return (positions <= last).long()  # (B, T): 1…1 0…0

    def forward(
        self,
        idx: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Token ids (B, T), mask (B, T) of 1 = real / 0 = pad → (logits (B, num_labels), loss).

        Without a mask, padding is found from `pad_token_id` as HF finds it (`mask_from_padding`).
        `loss` is the mean cross-entropy against `labels` (B,) when given, else None.
        """
        for name, t in (("idx", idx), ("attention_mask", attention_mask), ("labels", labels)):
            if t is not None and not isinstance(t, torch.Tensor):  # a list would fail as "has no attribute 'dim'"
                raise TypeError(f"{name} must be a tensor, got {type(t).__name__}: torch.tensor(...)")
        if attention_mask is None:
            attention_mask = self.mask_from_padding(idx)
        _check_inputs(idx, attention_mask, labels, self.num_labels)
        h = self.gpt.hidden_states(idx)  # (B, T, C)
        # A frozen half-precision backbone may feed a float32 head (the one part that trains, kept
        # in the dtype the optimizer needs): the pooled vector takes the head's dtype, as a matmul
        # wants one dtype on both sides. (Under autocast the head's matmul runs in its dtype anyway.)
        head_dtype = next(self.score.parameters()).dtype
        logits = self.score(self.pool(h, attention_mask).to(head_dtype))  # (B, num_labels)
        # int32 labels are fine too (HF takes them); cross_entropy wants int64 class ids.
        loss = None if labels is None else F.cross_entropy(logits.float(), labels.long())
        return logits, loss

    # ---- checkpoints in Hugging Face's GPT2ForSequenceClassification layout ---------------------

    def save_pretrained(self, path: str | os.PathLike) -> None:
        """Write config.json + model.safetensors, as `save_gpt` does (`write_checkpoint`: never new
        weights beside an old config)."""
        with torch.device("meta"):  # the layout's own tensor names, from a classifier of shapes only
            plain = GPTClassifier(GPT(self.config), self.num_labels, hidden=self.hidden)
        state, layout = self.state_dict(), plain.state_dict()
        check_layout(self.gpt, state, layout, "gpt.lm_head.weight")  # LoRA adapters (the head's too), a resized or missing tensor
        tensors = {}
        for key, t in state.items():
            key = key.removeprefix("gpt.")  # gpt.transformer.h.0... → transformer.h.0..., as in HF
            if key == "lm_head.weight":
                continue  # the tied wte; a classifier has no LM head
            if key.startswith("transformer.") and key.endswith(CONV1D_SUFFIXES):
                t = t.t()  # Linear (out, in) → HF's Conv1D (in, out)
            if self.pooling == "mean" and key.startswith("score."):
                key = MEAN_HEAD + key.removeprefix("score.")  # not HF's name: see MEAN_HEAD
            tensors[key] = t.detach().contiguous().cpu()
        write_checkpoint(path, tensors, lambda config: self.config.save_json(config, architecture="GPT2ForSequenceClassification", extra={
            "num_labels": self.num_labels,
            "id2label": {str(i): name for i, name in self.id2label.items()},
            "label2id": self.label2id,
            "pad_token_id": self.pad_token_id,
            "torch_dtype": str(self.gpt.lm_head.weight.dtype).removeprefix("torch."),
            "minigpt_head": {"pooling": self.pooling, "hidden": list(self.hidden)},
        }))

    @classmethod
    def from_pretrained(cls: type[SomeClassifier], path: str | os.PathLike[str], dtype: torch.dtype | str | None = None,
                        device: torch.device | str | None = None) -> SomeClassifier:
        """Load a classifier saved by minigpt or by transformers' GPT2ForSequenceClassification.
        `device="auto"` is the GPU when there is one, as for GPT.from_pretrained."""
        path, dtype, device = Path(shipped_path(path)), resolve_dtype(dtype), resolve_device(device)
        check_checkpoint_dir(path)
        if not is_classifier_checkpoint(path):
            raise ValueError(f"{path} is not a GPT2ForSequenceClassification checkpoint (its config.json's "
                             "architectures); load a language model with GPT.from_pretrained (to start a classifier "
                             "from it: GPTClassifier(GPT.from_pretrained(path), num_labels=N))")
        d = read_json(path / "config.json")
        id2label = read_id2label(d, path / "config.json")
        num_labels = len(id2label) if id2label else d.get("num_labels", 2)
        if num_labels == 1 or d.get("problem_type") == "regression":  # else "num_labels must be an integer ≥ 2"
            raise ValueError(f"{path} is a regression model (num_labels={num_labels}, one score per text); minigpt's "
                             "classifier predicts one of 2 or more labels")
        if d.get("problem_type") not in (None, "single_label_classification"):  # multi-label: a sigmoid per label
            raise ValueError(f"{path} is a {d['problem_type']} model (problem_type in its config.json); minigpt's "
                             "classifier predicts one label per text (a softmax over them)")
        head, config = d.get("minigpt_head", {}), GPTConfig.from_hf_dict(d, source=str(path / "config.json"))
        check_config_fits_weights(path, config, stored_shapes(weight_files(path)))  # before a wrong n_layer is built
        with torch.device("meta"):  # shapes only; the real tensors are assigned below
            model = cls(GPT(config), num_labels, pooling=head.get("pooling", "last"),
                        hidden=tuple(head.get("hidden", ())), id2label=id2label)
        # The checkpoint's pad_token_id as it is, None included (transformers' default: such a checkpoint
        # pools each row's last token), not the constructor's <|endoftext|> default: that would cut a text
        # ending in <|endoftext|> short, and give other logits than transformers for it. (One that is no
        # token of the model was dropped by GPTConfig.from_hf_dict.)
        model.pad_token_id = config.pad_token_id
        state = {}
        for key, t in read_tensors(weight_files(path)):
            if key.endswith(IGNORED_SUFFIXES):
                continue
            if key.startswith("transformer.") and key.endswith(CONV1D_SUFFIXES):
                t = t.t()  # Conv1D (in, out) → Linear (out, in)
            if model.pooling == "mean" and key.startswith(MEAN_HEAD):
                key = "score." + key.removeprefix(MEAN_HEAD)
            key = key if key.startswith("score") else "gpt." + key
            if key in state:  # a mean head under both its names (or a tensor in two shards): one would be dropped unseen
                why = f" (a mean-pooled head is read from {MEAN_HEAD}* or from score.*, not both)" \
                    if key.startswith("score") else ""
                raise ValueError(f"{path} holds tensor {key.removeprefix('gpt.')!r} twice{why}")
            if not t.is_floating_point():  # as load_gpt: as_held would turn integer "weights" into floats
                raise ValueError(f"tensor {key.removeprefix('gpt.')!r} in {path} has dtype {t.dtype}; the weights are floating point")
            state[key] = as_held(t, dtype, device, f"tensor {key.removeprefix('gpt.')!r} in {path}")  # (no copy unless converted, as load_gpt)
        shapes = {key: t.shape for key, t in model.state_dict().items() if key != "gpt.lm_head.weight"}
        if set(state) != set(shapes):
            missing, unexpected = sorted(set(shapes) - set(state)), sorted(set(state) - set(shapes))
            missing, unexpected = ([k.removeprefix("gpt.") for k in keys] for keys in (missing, unexpected))  # the file's names
            raise ValueError(f"{path} does not match its config.json: missing {first_few(missing, quoted=True)}, "
                             f"unexpected {first_few(unexpected, quoted=True)}")
        for key, t in state.items():  # as load_gpt: the first wrong shape by name, not torch's list of them
            if t.shape != shapes[key]:
                raise wrong_shape(key.removeprefix("gpt."), path, t.shape, shapes[key])
        state = one_dtype(state, "gpt.transformer.wte.weight", path, prefix="gpt.")
        model.load_state_dict(state, strict=False, assign=True)  # (the GPT ties lm_head to the new wte: GPT.tie_weights)
        return model.eval()


def _check_inputs(idx: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor | None, num_labels: int) -> None:
    """Each mask row must be 1…1 0…0 with at least one 1 (the pooling and the maskless backbone rely
    on it), and each label in [0, num_labels). The checks run where the tensors are and are read
    back together: on a GPU, every read is a host sync that stalls the queue, so one, not four.
    Shapes and dtypes are known on the host, so they are checked first, for free."""
    if idx.dim() != 2:
        raise ValueError(f"idx must be token ids of shape (batch, time), got shape {tuple(idx.shape)}")
    # A mask of another shape would broadcast or index silently: its lengths would pool the wrong token.
    if attention_mask.shape != idx.shape:
        raise ValueError(f"attention_mask must have idx's shape {tuple(idx.shape)}, got {tuple(attention_mask.shape)}")
    if attention_mask.is_floating_point() or attention_mask.is_complex():
        raise TypeError(f"attention_mask must be an integer or bool tensor (1 = real token, 0 = pad), got {attention_mask.dtype}")
    if labels is not None:
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise TypeError(f"labels must be integer class ids, got {labels.dtype}")
        if labels.shape != idx.shape[:1]:
            raise ValueError(f"labels must have shape (batch,) = {tuple(idx.shape[:1])}, one class id per row, got {tuple(labels.shape)}")
    no_labels = torch.zeros(1, dtype=torch.long, device=attention_mask.device)
    labels = no_labels if labels is None else labels
    not_binary, left_padded, empty_row, bad_label = torch.stack([
        ((attention_mask != 0) & (attention_mask != 1)).any(),
        (attention_mask[:, 1:] > attention_mask[:, :-1]).any(),
        (attention_mask.sum(dim=1) == 0).any(),
        ((labels < 0) | (labels >= num_labels)).any(),
    ]).tolist()
    if not_binary:
        raise ValueError("attention_mask must hold only 0 (pad) and 1 (real token)")
    if left_padded:
        raise ValueError("attention_mask is not right-padded (a real token follows a pad); "
                         "tokenize classification batches with padding_side='right'")
    if empty_row:
        raise ValueError("a row of the batch has no real tokens (empty text?)")
    if bad_label:
        bad = labels[(labels < 0) | (labels >= num_labels)].unique().tolist()
        raise ValueError(f"labels must be in [0, {num_labels}), got {bad}")


def read_id2label(config: dict, source: Path) -> dict[int, str] | None:
    """config.json's label names by id; None where it names none: transformers leaves id2label out
    for the default two labels, and other writers put null or {} there (transformers reads both as
    num_labels' default names)."""
    raw = config.get("id2label")
    if raw is None or raw == {}:
        return None
    try:
        return {int(i): name for i, name in raw.items()}
    except (AttributeError, TypeError, ValueError):
        raise ValueError(f"{source}: id2label must map label ids to names ({{\"0\": \"negative\", ...}}), "
                         f"got {raw!r}") from None
