"""Differential tests of training: minigpt's `train` and `finetune` against a reference written
from the README, on transformers' GPT-2 and torch's AdamW.

Self-consistency tests (resume is bitwise exact, 2 processes end where 1 does) cannot see a
mistake that every run makes the same way: the loss of accumulated micro-batches scaled wrong,
gradients clipped after the step, an embedding in AdamW's weight-decay group, the cosine one
step off, the classifier pooling the wrong token, a strategy training a weight it should freeze.
So each test runs minigpt's command (`minigpt train`, `minigpt finetune`) for a few steps with
gradient accumulation, a clip small enough to act on every step, and warmup then decay inside the
run; it records the batches minigpt draws and the weights it starts from (a spy around
`train_loop`), and replays them through a reference built only from what the README promises:

- the model: `GPT2LMHeadModel` / `GPT2ForSequenceClassification` (pad_token_id set, right-padded
  batches), loaded from the same initial weights; LoRA written here by hand, W + (alpha/r)·B@A;
- the step: the mean loss of the step's micro-batches, backward, the global gradient norm clipped
  to --grad-clip, then `torch.optim.AdamW` with weight decay on the matmul weights (and LoRA's A
  and B, and the classifier's head) only, never on biases, LayerNorm gains or wte/wpe;
- the schedule: from the config's help: --lr reached at the end of a linear warmup, a cosine down
  to --min-lr at lr_decay_iters (max_iters unset), counting steps from 0.

Dropout is 0, so both forward passes are deterministic and the two runs differ only by float32
rounding: losses agree to ~1e-7 relative, gradient norms to ~1e-5, weights to 4e-6 (steps of
~1e-2). Each mistake above, injected into minigpt once, fails these tests. One test turns dropout
on, to see it act in the steps and not in evaluation.
"""
from __future__ import annotations

import copy
import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import GPT2ForSequenceClassification, GPT2LMHeadModel

import minigpt.finetune
import minigpt.pretrain
from minigpt import GPT, GPTConfig
from minigpt.data import prepare

STEPS, WARMUP, ACCUM, BATCH, BLOCK = 8, 3, 3, 4, 16
LR, MIN_LR, WEIGHT_DECAY, CLIP = 1e-2, 1e-3, 0.1, 0.02  # a clip well below the gradient norms: every step clips
N_LAYER = 3  # so that partial's "last 2 blocks" leaves one block frozen
PARTIAL = ("transformer.h.1.", "transformer.h.2.", "transformer.ln_f.")  # what --n-trainable-blocks 2 trains
RUN_FLAGS = ["--max-iters", STEPS, "--warmup-iters", WARMUP, "--grad-accum", ACCUM, "--batch-size", BATCH,
             "--block-size", BLOCK, "--lr", LR, "--min-lr", MIN_LR, "--weight-decay", WEIGHT_DECAY, "--grad-clip", CLIP,
             "--dropout", 0, "--eval-interval", 0, "--eval-iters", 2, "--log-interval", 1, "--device", "cpu",
             "--dtype", "float32"]
DECAYED = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight", "score.weight", "lora_A", "lora_B")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These runs are thousands of tiny ops, each a parallel region that waits for all of torch's
    threads: on the shared 2-core test machine, with the other core busy, 2 threads made this
    module take 130 s instead of 7 (a 32-wide model gains nothing from a second thread anyway)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A generated text, a 300-token BPE trained on it, that text prepared for `minigpt train`, a
    tiny 'pretrained' GPT with the tokenizer, and a TSV of labelled texts of varied lengths."""
    from minigpt.tokenizer import Tokenizer

    root = tmp_path_factory.mktemp("reference")
    rng = random.Random(0)
    words = ["the", "king", "queen", "speaks", "and", "all", "hear", "a", "word", "of", "peace", "war", "now"]
    text = "\n".join(" ".join(rng.choice(words) for _ in range(rng.randint(3, 12))) for _ in range(400)) + "\n"
    (root / "text.txt").write_text(text)
    tok = Tokenizer.train(text, 300)
    prepare([root / "text.txt"], tok, root / "data", val_fraction=0.1)
    torch.manual_seed(0)
    GPT(GPTConfig.gpt2("gpt2-tiny", vocab_size=tok.vocab_size, n_layer=N_LAYER, n_head=2, n_embd=32,
                       bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)).save_pretrained(root / "base")
    tok.save_pretrained(root / "base")
    # Label: does the text speak of war? Lengths of 2 to 9 words, so each batch is right-padded.
    rows = [" ".join(rng.choice(words) for _ in range(rng.randint(2, 9))) for _ in range(120)]
    (root / "cls.tsv").write_text("sentence\tlabel\n" + "".join(f"{t}\t{int('war' in t)}\n" for t in rows))
    return root


def spy_on_train_loop(monkeypatch, module) -> dict:
    """Wrap `module.train_loop` to keep a copy of the model as it starts and every batch drawn."""
    seen: dict = {"train": [], "val": []}
    real = module.train_loop

    def train_loop(model, cfg, get_batch, *args, **kwargs):
        seen["init"] = copy.deepcopy(model)

        def recorded(split, rng):
            batch = get_batch(split, rng)
            seen[split].append(batch)
            return batch

        return real(model, cfg, recorded, *args, **kwargs)

    monkeypatch.setattr(module, "train_loop", train_loop)
    return seen


def run_log(out: Path) -> tuple[list[dict], dict]:
    """log.jsonl's per-step records (log_interval 1) and its final evaluation."""
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return [r for r in records if "loss" in r], next(r for r in records if "val_loss" in r)


def reference_lr(step: int) -> float:
    """The schedule of the config's help: linear warmup from 0 reaching --lr at the end of warmup
    (step WARMUP - 1, counting from 0), then a cosine from --lr at step WARMUP to --min-lr at
    lr_decay_iters (here unset: max_iters)."""
    if step < WARMUP:
        return LR * (step + 1) / WARMUP
    return MIN_LR + (LR - MIN_LR) * (1 + math.cos(math.pi * (step - WARMUP) / (STEPS - WARMUP))) / 2


def train_reference(model: nn.Module, trainable: set[str], batches: list, loss_of) -> tuple[list[float], list[float]]:
    """The README's training step, STEPS times on minigpt's batches: returns (losses, gradient norms)."""
    for name, p in model.named_parameters():
        p.requires_grad_(name in trainable)
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [{"params": [p for n, p in params if n.endswith(DECAYED)], "weight_decay": WEIGHT_DECAY},
              {"params": [p for n, p in params if not n.endswith(DECAYED)], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=LR, betas=(0.9, 0.95), eps=1e-8)
    losses, norms = [], []
    model.train()
    for step in range(STEPS):
        for group in opt.param_groups:
            group["lr"] = reference_lr(step)
        # The step's loss is the mean over its micro-batches, so its gradient is theirs, averaged.
        loss = torch.stack([loss_of(model, b) for b in batches[step * ACCUM: (step + 1) * ACCUM]]).mean()
        opt.zero_grad()
        loss.backward()
        norm = torch.cat([p.grad.flatten() for _, p in params]).norm()
        assert norm > CLIP, "the clip should act on every step"
        for _, p in params:
            p.grad *= CLIP / norm
        opt.step()
        losses.append(loss.item())
        norms.append(norm.item())
    return losses, norms


def lm_loss(model, batch) -> torch.Tensor:
    x, y = batch
    return F.cross_entropy(model(input_ids=x).logits.flatten(0, 1), y.flatten())


def classify_loss(model, batch) -> torch.Tensor:
    idx, mask, labels = batch
    return model(input_ids=idx, attention_mask=mask, labels=labels).loss


def hf(cls, path: Path):
    """transformers' model from a checkpoint minigpt wrote (float32), dropout off."""
    return cls.from_pretrained(path, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, attn_implementation="eager")


def assert_same_run(out: Path, losses: list[float], norms: list[float], val_loss: float) -> None:
    steps, final = run_log(out)
    assert [r["step"] for r in steps] == list(range(1, STEPS + 1))
    got = torch.tensor([[r["loss"], r["grad_norm"], r["lr"]] for r in steps], dtype=torch.float64)
    want = torch.tensor([losses, norms, [reference_lr(s) for s in range(STEPS)]], dtype=torch.float64).T
    print(f"losses {[round(v, 4) for v in losses]}\nmax relative difference of loss, grad norm, lr per step: "
          f"{((got - want).abs() / want.abs()).max(dim=0).values.tolist()}; val loss {final['val_loss']:.6f} vs {val_loss:.6f}")
    torch.testing.assert_close(got, want, rtol=1e-4, atol=0)
    assert final["val_loss"] == pytest.approx(val_loss, rel=1e-5)


def assert_same_weights(got: nn.Module, want: nn.Module) -> None:
    """Every parameter within 2e-5 (a fifth of a percent of one step at lr 1e-2). The rounding
    noise measured is up to 4e-6: AdamW divides each gradient by its own RMS, so the weights
    whose gradients are tiny move by a full step, and their rounding with them."""
    got, want = dict(got.named_parameters()), dict(want.named_parameters())
    worst = max(((got[n] - want[n]).abs().max().item(), n) for n in want)
    print(f"final weights: worst max|difference| = {worst[0]:.1e} ({worst[1]})")
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=2e-5, msg=lambda m: f"{name}: {m}")


@torch.no_grad()
def val_loss_of(model: nn.Module, batches: list, loss_of) -> float:
    model.eval()
    return torch.stack([loss_of(model, b) for b in batches]).mean().item()


def check_lm_batches(seen: dict, data_dir: Path) -> None:
    """What `minigpt train` promises of its batches: ACCUM micro-batches of BATCH windows per step,
    x a window of train.bin and y the same window one token on."""
    assert len(seen["train"]) == STEPS * ACCUM
    windows = np.lib.stride_tricks.sliding_window_view(np.fromfile(data_dir / "train.bin", dtype=np.uint16), BLOCK + 1)
    known = {w.tobytes() for w in windows.astype(np.int64)}
    assert len({x.numpy().tobytes() for x, _ in seen["train"]}) == STEPS * ACCUM, "each micro-batch draws its own windows"
    for x, y in seen["train"]:
        assert x.shape == y.shape == (BATCH, BLOCK) and torch.equal(x[:, 1:], y[:, :-1])
        assert all(torch.cat([row, y[i, -1:]]).numpy().tobytes() in known for i, row in enumerate(x))


def test_pretrain_matches_the_reference(corpus, tmp_path, monkeypatch):
    """`minigpt train` on a fresh gpt2-tiny: every weight trains, the embeddings without decay."""
    seen = spy_on_train_loop(monkeypatch, minigpt.pretrain)
    out = tmp_path / "out"
    args = ["--data", corpus / "data", "--out", out, "--preset", "gpt2-tiny", "--n-layer", 2, "--n-head", 2, "--n-embd", 32,
            "--seed", 5, *RUN_FLAGS]
    assert minigpt.pretrain.main([str(a) for a in args]) == 0
    check_lm_batches(seen, corpus / "data")
    seen["init"].save_pretrained(tmp_path / "init")
    ref = hf(GPT2LMHeadModel, tmp_path / "init")
    losses, norms = train_reference(ref, {n for n, _ in ref.named_parameters()}, seen["train"], lm_loss)
    assert_same_run(out, losses, norms, val_loss_of(ref, seen["val"], lm_loss))
    assert_same_weights(hf(GPT2LMHeadModel, out), ref)


def test_dropout_is_on_in_the_steps_and_off_in_evaluation(corpus, tmp_path, monkeypatch):
    """With --dropout 0.3 the first step's loss is not the dropout-free model's, and the final val
    loss is exactly the dropout-free reference's on the trained weights and minigpt's val batches."""
    seen = spy_on_train_loop(monkeypatch, minigpt.pretrain)
    out = tmp_path / "out"
    args = ["--data", corpus / "data", "--out", out, "--preset", "gpt2-tiny", "--n-layer", 2, "--n-head", 2, "--n-embd", 32,
            *RUN_FLAGS, "--max-iters", 2, "--warmup-iters", 1, "--dropout", 0.3]
    assert minigpt.pretrain.main([str(a) for a in args]) == 0
    seen["init"].save_pretrained(tmp_path / "init")
    steps, final = run_log(out)
    start = hf(GPT2LMHeadModel, tmp_path / "init")
    torch.stack([lm_loss(start, b) for b in seen["train"][:ACCUM]]).mean().backward()
    norm = torch.cat([p.grad.flatten() for p in start.parameters()]).norm().item()
    print(f"first step's gradient norm: {steps[0]['grad_norm']:.4f} with dropout 0.3, {norm:.4f} without")
    assert abs(steps[0]["grad_norm"] / norm - 1) > 0.05
    assert final["val_loss"] == pytest.approx(val_loss_of(hf(GPT2LMHeadModel, out), seen["val"], lm_loss), rel=1e-5)


def finetune(corpus: Path, out: Path, *flags) -> None:
    run_flags = RUN_FLAGS
    if "classify" in flags:  # it scores every val example: no --eval-iters
        i = RUN_FLAGS.index("--eval-iters")
        run_flags = RUN_FLAGS[:i] + RUN_FLAGS[i + 2:]
    args = ["--init", corpus / "base", "--out", out, "--seed", 3, *run_flags, *flags]
    assert minigpt.finetune.main([str(a) for a in args]) == 0


@pytest.mark.parametrize("strategy", ["full", "partial", "partial+embeddings"])
def test_finetune_lm_matches_the_reference_and_trains_only_its_strategys_weights(corpus, tmp_path, monkeypatch, strategy):
    """partial with 2 trainable blocks of 3: h.1, h.2 and ln_f train, and wte (the tied LM head)
    only with --train-embeddings; everything else ends bitwise as it started."""
    seen = spy_on_train_loop(monkeypatch, minigpt.finetune)
    flags = {"full": [], "partial": ["--n-trainable-blocks", 2]}.get(strategy, ["--n-trainable-blocks", 2, "--train-embeddings"])
    finetune(corpus, tmp_path / "out", "--data", corpus / "text.txt", "--strategy", strategy.split("+")[0], *flags)
    check_lm_batches(seen, tmp_path / "out" / "data")
    ref = hf(GPT2LMHeadModel, corpus / "base")
    names = [n for n, _ in ref.named_parameters()]
    if strategy == "full":
        trainable = set(names)
    else:
        trainable = {n for n in names if n.startswith(PARTIAL)}
        trainable |= {"transformer.wte.weight"} if strategy == "partial+embeddings" else set()
    losses, norms = train_reference(ref, trainable, seen["train"], lm_loss)
    assert_same_run(tmp_path / "out", losses, norms, val_loss_of(ref, seen["val"], lm_loss))
    got, start = hf(GPT2LMHeadModel, tmp_path / "out"), dict(hf(GPT2LMHeadModel, corpus / "base").named_parameters())
    assert_same_weights(got, ref)
    changed = {n for n, p in got.named_parameters() if not torch.equal(p, start[n])}
    assert changed == trainable


class ReferenceLoRA(nn.Module):
    """LoRA on a transformers Conv1D (y = x @ W + b, W (in, out)), written from the paper:
    W + (alpha / r)·ΔWᵀ with ΔW = B @ A, A (r, in), B (out, r), W frozen."""

    def __init__(self, conv: nn.Module, A: torch.Tensor, B: torch.Tensor, alpha: float) -> None:
        super().__init__()
        self.conv, self.scale = conv, alpha / A.shape[0]
        self.lora_A, self.lora_B = nn.Parameter(A.clone()), nn.Parameter(B.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + self.scale * x @ (self.lora_B @ self.lora_A).T

    def merged_weight(self) -> torch.Tensor:
        return self.conv.weight + self.scale * (self.lora_B @ self.lora_A).T  # (in, out)


def test_finetune_lora_matches_a_hand_written_lora(corpus, tmp_path, monkeypatch):
    """The saved checkpoint's weights are W + (alpha/r)·B@A of the reference's trained adapters,
    on all four projections of every block, with everything else as it was."""
    seen = spy_on_train_loop(monkeypatch, minigpt.finetune)
    rank, alpha = 4, 12.0  # a scale of 3: a missing or inverted scale shows
    finetune(corpus, tmp_path / "out", "--data", corpus / "text.txt", "--strategy", "lora", "--lora-rank", rank,
             "--lora-alpha", alpha)
    start = dict(seen["init"].named_parameters())  # minigpt's adapters as they started: A random, B zero
    ref = hf(GPT2LMHeadModel, corpus / "base")
    adapters = {}
    for name in [f"transformer.h.{i}.{t}" for i in range(N_LAYER) for t in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")]:
        parent, _, child = name.rpartition(".")
        A, B = start[name + ".lora_A"], start[name + ".lora_B"]
        assert A.shape[0] == rank and not B.any()
        adapters[name] = ReferenceLoRA(ref.get_submodule(name), A.detach(), B.detach(), alpha)
        setattr(ref.get_submodule(parent), child, adapters[name])
    trainable = {n for n, _ in ref.named_parameters() if n.endswith(("lora_A", "lora_B"))}
    losses, norms = train_reference(ref, trainable, seen["train"], lm_loss)
    assert_same_run(tmp_path / "out", losses, norms, val_loss_of(ref, seen["val"], lm_loss))
    with torch.no_grad():  # merge by hand: each Conv1D gets W + (alpha/r)·(B@A)ᵀ and replaces its adapter
        for name, adapter in adapters.items():
            adapter.conv.weight.copy_(adapter.merged_weight())
            parent, _, child = name.rpartition(".")
            setattr(ref.get_submodule(parent), child, adapter.conv)
    got, start = hf(GPT2LMHeadModel, tmp_path / "out"), dict(hf(GPT2LMHeadModel, corpus / "base").named_parameters())
    assert_same_weights(got, ref)
    changed = {n for n, p in got.named_parameters() if not torch.equal(p, start[n])}
    assert changed == {name + ".weight" for name in adapters}  # the four projections' weights, not their biases


@pytest.mark.parametrize("strategy", ["full", "frozen", "partial"])
def test_finetune_classify_matches_gpt2_for_sequence_classification(corpus, tmp_path, monkeypatch, strategy):
    """The head reads the last real token of right-padded rows, as HF's does with pad_token_id set.
    The new head always trains: alone (frozen), or with the last 2 blocks and ln_f (partial)."""
    seen = spy_on_train_loop(monkeypatch, minigpt.finetune)
    scored = []  # the val examples each evaluation scores: (ids, labels)
    real_score = minigpt.finetune.score_examples

    def score_examples(model, ids, labels, *args, **kwargs):
        scored.append((ids, labels))
        return real_score(model, ids, labels, *args, **kwargs)

    monkeypatch.setattr(minigpt.finetune, "score_examples", score_examples)
    out = tmp_path / "out"
    flags = ["--n-trainable-blocks", 2] if strategy == "partial" else []
    finetune(corpus, out, "--task", "classify", "--data", corpus / "cls.tsv", "--strategy", strategy, *flags)
    pad = json.loads((corpus / "base" / "config.json").read_text())["eos_token_id"]
    idx, mask, _ = seen["train"][0]
    assert (mask == 0).any() and (idx[mask == 0] == pad).all(), "batches are right-padded with <|endoftext|>"
    seen["init"].save_pretrained(tmp_path / "init")  # the backbone and the new head as they start
    ref = hf(GPT2ForSequenceClassification, tmp_path / "init")
    assert ref.config.pad_token_id == pad
    trainable = {n for n, _ in ref.named_parameters() if strategy == "full" or (strategy == "partial" and n.startswith(PARTIAL))}
    trainable.add("score.weight")
    losses, norms = train_reference(ref, trainable, seen["train"], classify_loss)
    ids, labels = scored[-1]  # every val example, each alone here (no padding): the mean cross-entropy
    assert len(ids) > 1 and not seen["val"], "classify evaluates every val example, sampling no batch"
    val = [(torch.tensor([row]), torch.ones(1, len(row), dtype=torch.long), torch.tensor([y])) for row, y in zip(ids, labels)]
    assert_same_run(out, losses, norms, val_loss_of(ref, val, classify_loss))
    got = hf(GPT2ForSequenceClassification, out)
    assert_same_weights(got, ref)
    start = dict(hf(GPT2ForSequenceClassification, tmp_path / "init").named_parameters())
    changed = {n for n, p in got.named_parameters() if not torch.equal(p, start[n])}
    assert changed == trainable
