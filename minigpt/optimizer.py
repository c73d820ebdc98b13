"""The optimizer of a training run: AdamW, its two weight-decay groups, and the learning-rate schedule.

Where it sits: in each step of the training loop (minigpt/train.py's `train_step`): loss →
backward → gradients (clipped) → **AdamW at lr_at(step)** → new weights. Fine-tuning
(minigpt/finetune.py) uses the same optimizer on the parameters its strategy leaves trainable.

AdamW keeps two moments per parameter (8 bytes in fp32), divides each step by the running RMS
of the gradient, so every weight moves by about lr whatever its gradient's scale, and applies
weight decay *decoupled* from that normalisation (shrinking the weight itself, not adding to
the gradient). Which weights decay, and why the weights to train must stay in float32, is below.
"""
from __future__ import annotations

import math
from types import SimpleNamespace
from typing import TYPE_CHECKING

import torch
import torch.nn as nn

if TYPE_CHECKING:  # type hints only: minigpt/resume.py, which train_config.py imports, imports this module
    from minigpt.train_config import TrainConfig

# AdamW moves each weight by about lr per step (its update is normalised to ~1), but a 16-bit
# float holds a weight only to 1 part in 2**8 (bfloat16) or 2**11 (float16): a smaller change
# rounds away. In bfloat16 at lr 6e-4 a LayerNorm gain (1.0, spacing 2**-7) never moves at all.
# Mixed precision keeps float32 master weights and runs only the math in 16 bits (autocast).
HALF_WEIGHTS_ERROR = ("the weights to train are {dtype}: AdamW's small updates (about lr each) round away in {dtype} "
                      "(float16 also overflows to NaN), so weights would silently not train. Keep them in float32 "
                      "(model.float(), or GPT.from_pretrained(path, dtype=torch.float32)) and get 16-bit speed from "
                      "autocast: TrainConfig(dtype='bfloat16'), --dtype bfloat16 on the command line")


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to cfg.lr, then cosine decay to cfg.min_lr at lr_decay_iters, then flat.

    Warmup: Adam's second-moment estimates are noise for the first steps, so large steps then
    can throw the weights somewhere bad. Cosine: big steps while far from a minimum, small ones
    near it.
    """
    decay_end = cfg.lr_decay_iters or cfg.max_iters
    if step < cfg.warmup_iters:
        return cfg.lr * (step + 1) / cfg.warmup_iters
    if step >= decay_end:
        return cfg.min_lr
    progress = (step - cfg.warmup_iters) / max(1, decay_end - cfg.warmup_iters)
    return cfg.min_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (cfg.lr - cfg.min_lr)


def schedule_note(step: int, saved: dict, cfg: TrainConfig) -> str | None:
    """What a resumed run's settings do to the learning rate where it resumes, when they change it
    (None when they do not): `saved` is the saved run's config, `step` the step it reached.

    The usual case is `--resume --max-iters N` to train longer with --lr-decay-iters unset: the
    cosine then ends at the new max_iters, stretched over the longer run, so the learning rate
    goes back up where the run resumes. That is a choice, not an error; the note says so and how
    to keep the saved schedule instead (or, when --lr, --min-lr or --warmup-iters changed too,
    that they changed it).
    """
    before = SimpleNamespace(**{k: saved.get(k, getattr(cfg, k)) for k in ("lr", "min_lr", "warmup_iters", "lr_decay_iters", "max_iters")})
    old, new = lr_at(step, before), lr_at(step, cfg)
    if old == new:
        return None
    note = f"note: the learning rate of step {step + 1}, the first one resumed, is {new:.3g}; the saved run's schedule gave {old:.3g}"
    if cfg.lr_decay_iters is None and before.lr_decay_iters is None and cfg.max_iters != before.max_iters:
        note += (f": with --lr-decay-iters unset the cosine ends at --max-iters, now {cfg.max_iters} instead of "
                 f"{before.max_iters}; ")
        # With a new --lr (say) too, --lr-decay-iters alone keeps the cosine's end, not the schedule.
        others = [f"--{k.replace('_', '-')} {getattr(cfg, k):g} (was {getattr(before, k):g})"
                  for k in ("lr", "min_lr", "warmup_iters") if getattr(cfg, k) != getattr(before, k)]
        if others:
            note += (f"--lr-decay-iters {before.max_iters} would keep that end where it was, but not the saved schedule, "
                     f"which {', '.join(others)} changed too")
        else:
            note += (f"pass --lr-decay-iters {before.max_iters} to keep the saved schedule (then --min-lr for every step "
                     f"after {before.max_iters})")
    return note


def build_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW over the trainable parameters, in two weight-decay groups.

    Decayed: the matrices of the matmuls (attention and MLP weights, any head's Linear, and
    LoRA's adapters A and B, whose decay pulls the update B@A towards 0: the pretrained weights).
    Not decayed: biases and LayerNorm gains (one number per channel: shrinking them towards 0
    only fights the normalisation) and embeddings (wte, wpe), as in minGPT (nanoGPT and
    transformers' Trainer decay them: a convention, not a law). The reason given is a lookup
    table's: decoupled decay shrinks *every* row at every step, while a row gets a gradient only
    when it is looked up (wpe's late positions, in short batches). That holds for wpe; wte is also
    the tied LM head, so through the softmax every row of it gets some gradient at every step.
    Frozen parameters (requires_grad=False) are left out, so the optimizer holds no state for them.
    """
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 and id(p) not in embeddings else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # betas: beta2 = 0.95 (GPT-3's, nanoGPT's), not Adam's 0.999: the second moment then averages
    # over ~20 steps, not ~1000, so it follows a language model's noisy, spiky gradients quickly
    # enough that a burst of large ones does not take steps sized for the quiet before it.
    # The fused kernel updates every tensor in one pass instead of a chain of elementwise ops.
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=device.type in ("cpu", "cuda"))
