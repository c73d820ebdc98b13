"""Fine-tuning: start from a pretrained GPT-2 and decide which of its weights may change.

Where it sits: `GPT.from_pretrained(dir)` → `apply_strategy` (which parameters train) → the
training loop (`minigpt/train.py`) → `save_pretrained` in Hugging Face layout. Two tasks:
`lm` (keep predicting the next token, on new text) and `classify` (`minigpt/classifier.py`: a
new head labels each text).

The four classic strategies, cheapest first:
- frozen:  the pretrained model is fixed; only a *new* head trains, on the model's features
           (a linear probe, or a small MLP). For `lm` there is no new head, the LM head is the
           pretrained `wte`, so `frozen` would train nothing and is refused.
- lora:    every pretrained weight is fixed; low-rank adapters on the attention/MLP projections
           train (`minigpt/lora.py`), and are merged into the weights when saved.
- partial: the last N blocks and `ln_f` train, the rest is frozen. GPT-2 ties the LM head to the
           input embedding `wte`: one matrix, used at the bottom and at the top. By default it
           stays frozen. `train_embeddings=True` trains it, which for `lm` trains the output layer
           *and* changes how every input token is embedded (they cannot be separated without
           untying, which HF's GPT-2 layout cannot store), and makes the backward pass run all
           the way down to the embedding instead of stopping at the lowest trainable block.
- full:    everything trains.
The optimizer only ever sees trainable parameters, so its state (AdamW keeps two fp32 moments
per parameter: 8 bytes each) shrinks with the strategy, and so does memory for gradients.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch.nn as nn

from minigpt.classifier import GPTClassifier
from minigpt.lora import DEFAULT_TARGETS, inject_lora
from minigpt.model import GPT

STRATEGIES = ("frozen", "partial", "full", "lora")
ADAMW_BYTES_PER_PARAM = 8  # exp_avg + exp_avg_sq, one fp32 each


@dataclass
class StrategySummary:
    strategy: str
    trainable: int  # parameters with requires_grad
    total: int  # all parameters (tied wte/lm_head counted once, LoRA adapters included)

    @property
    def optimizer_bytes(self) -> int:
        return ADAMW_BYTES_PER_PARAM * self.trainable

    def __str__(self) -> str:
        return (f"strategy {self.strategy}: training {self.trainable:,} of {self.total:,} parameters "
                f"({100 * self.trainable / self.total:.2f}%); AdamW state {self.optimizer_bytes / 2**20:.2f} MiB")


def apply_strategy(
    model: GPT | GPTClassifier,
    strategy: str,
    *,
    n_trainable_blocks: int = 1,
    train_embeddings: bool = False,
    lora_rank: int = 8,
    lora_alpha: float = 16.0,
    lora_dropout: float = 0.0,
    lora_targets: tuple[str, ...] = DEFAULT_TARGETS,
    verbose: bool = True,
) -> StrategySummary:
    """Set `requires_grad` on `model` for `strategy` (in place; "lora" also inserts adapters).

    The task follows from the model: a `GPT` is fine-tuned as a language model, a
    `GPTClassifier` as a classifier, whose head (`score`) always trains because it is new.
    `n_trainable_blocks` (0..n_layer) and `train_embeddings` apply to "partial" only; the
    `lora_*` arguments to "lora" only. Prints and returns the trainable/total counts.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {STRATEGIES}")
    is_classifier = isinstance(model, GPTClassifier)
    gpt = model.gpt if is_classifier else model
    n_layer = gpt.config.n_layer
    if strategy == "partial" and not 0 <= n_trainable_blocks <= n_layer:
        raise ValueError(f"n_trainable_blocks must be in [0, {n_layer}] (the model has {n_layer} blocks), got {n_trainable_blocks}")
    if train_embeddings and strategy != "partial":
        raise ValueError(f"train_embeddings applies to the 'partial' strategy only, not {strategy!r} "
                         "('full' always trains wte; 'frozen' and 'lora' never do)")
    if strategy == "frozen" and not is_classifier:
        raise ValueError("strategy 'frozen' trains only a new head, and the lm task has none (its LM head is the "
                         "pretrained, tied wte): nothing would train. Use 'lora', 'partial' or 'full' for lm")

    model.requires_grad_(strategy == "full")
    if strategy == "partial":
        # Blocks are counted from the top: features near the output are the most task-specific.
        for block in gpt.transformer.h[n_layer - n_trainable_blocks:]:
            block.requires_grad_(True)
        gpt.transformer.ln_f.requires_grad_(True)
        if train_embeddings:
            gpt.transformer.wte.requires_grad_(True)  # also the LM head: the same Parameter
    elif strategy == "lora":
        inject_lora(gpt, lora_targets, rank=lora_rank, alpha=lora_alpha, dropout=lora_dropout)  # new A, B train
    if is_classifier:
        model.score.requires_grad_(True)

    params = list(model.parameters())  # yields the tied wte/lm_head once
    summary = StrategySummary(strategy, sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params))
    if verbose:
        print(summary)
    return summary


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """What the optimizer should hold: frozen parameters get no AdamW state at all."""
    return [p for p in model.parameters() if p.requires_grad]


def read_tsv(path: str | Path) -> tuple[list[str], list[int]]:
    """A classification file: one `text<TAB>label` per line, label an integer id.

    A first line whose label is not an integer (e.g. `sentence<TAB>label`, as in SST-2) is a
    header and is skipped; blank lines are skipped. Anything else malformed is an error naming
    the line, never a silently dropped example.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"TSV file {path} does not exist")
    texts, labels = [], []
    first = True
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        is_first, first = first, False
        text, tab, label = line.rpartition("\t")  # the label is the last field; text may hold tabs
        if not tab:
            raise ValueError(f"{path}:{lineno}: expected 'text<TAB>label', found no tab in {line[:60]!r}")
        try:
            label_id = int(label)
        except ValueError:
            if is_first:
                continue  # the header
            raise ValueError(f"{path}:{lineno}: label {label!r} is not an integer class id") from None
        if label_id < 0:
            raise ValueError(f"{path}:{lineno}: label {label_id} is negative; class ids are 0, 1, 2, ...")
        if not text.strip():
            raise ValueError(f"{path}:{lineno}: empty text")
        texts.append(text.strip())
        labels.append(label_id)
    if not texts:
        raise ValueError(f"{path} holds no examples (expected lines of 'text<TAB>label')")
    return texts, labels
