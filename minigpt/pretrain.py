"""Pretraining: `minigpt train`, a GPT language model trained from DATA_DIR's token files.

Where it sits: `minigpt prepare` (minigpt/data.py) → train.bin / val.bin → random windows (x, y)
→ **a GPT (`build_model`: a fresh preset, or --init) and its next-token loss** → `train_loop`
(minigpt/train.py) → checkpoints in HF layout, with the data's tokenizer → `minigpt generate --model OUT_DIR`.

This file is one of the training loop's two drivers, beside minigpt/finetune.py (`minigpt
finetune`): each builds a model, a batch source and a loss, and hands them to `train_loop`,
which knows nothing about language modelling. The run's flags are `TrainConfig`'s fields
(minigpt/train_config.py).
"""
from __future__ import annotations

import copy
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from minigpt.checkpoint import is_classifier_checkpoint
from minigpt.checks import check_flag
from minigpt.classifier import GPTClassifier
from minigpt.cli import prog
from minigpt.config import GPTConfig, gpt2_name, shipped_path
from minigpt.data import DATA_FILES, data_fingerprint, load_splits, read_meta, sample_batch
from minigpt.model import GPT
from minigpt.tokenizer import Tokenizer
from minigpt.tokenizer_files import TOKENIZER_FILES, recorded_length
from minigpt.resume import saved_step
from minigpt.run_dir import MOVED_DATA_HINT, check_out_dir, is_rank_0, run_dir_lock
from minigpt.run_log import is_opening, read_log
from minigpt.stats import gpt_flops_per_token
from minigpt.train import lm_loss, train_loop
from minigpt.train_config import DEFAULT_PRESET, TrainConfig, parse_config
from minigpt.train_runtime import run_command


def check_vocabulary(config: GPTConfig, init: str, vocab_size: int, eos_token_id: int | None,
                     finetune_tokenizer: str | None = None, finetune: bool = False) -> None:
    """Refuse to train the --init model on the ids of another tokenizer.

    An id is only a row number: a model fed another tokenizer's ids trains without an error, on
    tokens that mean something else to it, and its checkpoint pairs one vocabulary's weights
    with another's vocab.json. The config tells the size and the <|endoftext|> id
    (`GPTConfig.fits_tokenizer`); a tokenizer of the same size is compared with the one saved
    beside the weights, if any (`check_same_tokenizer`). `minigpt train` reads the tokenizer of
    its prepared data; `minigpt finetune` (`finetune`) reads --tokenizer (`finetune_tokenizer`),
    else --init's own.
    """
    if not finetune:
        tokenizer, fix = "the data's tokenizer", f"Tokenize with the --init model's own tokenizer (the vocab.json + merges.txt in {init})"
    elif finetune_tokenizer:
        tokenizer, fix = f"--tokenizer {finetune_tokenizer}", "Drop --tokenizer (the tokenizer is then read from --init), or pass the model's own"
    else:
        tokenizer, fix = f"the tokenizer files in --init {init}", "Pass the model's own tokenizer with --tokenizer"
    if why := config.tokenizer_mismatch(vocab_size, eos_token_id, f"--init {init}", tokenizer):
        raise ValueError(f"{why}. {fix}")


def tokenizer_tables_differ(tokenizer: Tokenizer, model_dir: str | Path) -> list[str]:
    """The tables ("vocab", "merges", "special_tokens", "added_tokens") in which `tokenizer` differs
    from the one saved in `model_dir` (a GPT-2 size by name: the shipped checkpoints/gpt2's); [] when
    none does, or when the folder holds no tokenizer files (they tell nothing). A folder whose files
    cannot be read fails as Tokenizer.from_pretrained does (OSError, ValueError)."""
    if not gpt2_name(str(model_dir)) and not any((Path(model_dir) / name).is_file() for name in TOKENIZER_FILES):
        return []
    own = Tokenizer.from_pretrained(model_dir)
    return [name for name in ("vocab", "merges", "special_tokens", "added_tokens") if getattr(own, name) != getattr(tokenizer, name)]


def check_same_tokenizer(tokenizer: Tokenizer, model_dir: str | Path, what: str, fix: str) -> None:
    """Refuse `tokenizer` (`what`) when the one saved beside a model's weights in `model_dir`
    differs: same size, other tokens (two tokenizers trained on other texts). A GPT-2 size by name
    has the shipped checkpoints/gpt2's; a folder without tokenizer files tells nothing."""
    if differ := tokenizer_tables_differ(tokenizer, model_dir):
        raise ValueError(f"{what} is not the tokenizer of the model in {model_dir} (their {', '.join(differ)} differ), so "
                         f"its ids would mean other tokens to the model's weights. {fix}")


def check_data_dir(data: Path, resume: bool = False) -> None:
    """Refuse a --data that is a file, with what --data is and the command that makes one: a text
    file given as --data would otherwise be "no meta.json in input.txt". With --resume, a --data
    that is gone is most often the saved run's, moved since."""
    if data.name in DATA_FILES and (data.parent / "meta.json").is_file():  # e.g. data/mine/train.bin
        raise ValueError(f"--data {data} is a file of the prepared data in {data.parent}: --data is that folder; "
                         f"pass --data {data.parent}")
    if data.is_file():
        raise ValueError(f"--data {data} is a file; --data is the folder `minigpt prepare` writes (train.bin, val.bin, "
                         f"meta.json). Tokenize the text into one first: `minigpt prepare {data} --tokenizer "
                         f"checkpoints/gpt2 --out data/{data.stem}`, then --data data/{data.stem}")
    if not data.exists():
        moved = MOVED_DATA_HINT if resume else ""
        raise FileNotFoundError(f"--data {data} does not exist: it is the folder `minigpt prepare` writes "
                                f"(train.bin, val.bin, meta.json){moved}")


def check_meta_fits_tokenizer(meta: dict, tokenizer: Tokenizer, data: Path) -> None:
    """Refuse a meta.json whose vocab_size is smaller than its data's tokenizer's (DATA_DIR/tokenizer),
    or whose eos_token_id is another.

    The model is built from meta.json's, and the tokenizer goes into every checkpoint beside it: a
    meta.json edited or left by another `minigpt prepare` trained without a word, into a checkpoint
    that `minigpt generate` then refused (model and tokenizer disagree on <|endoftext|>), or a
    model with fewer rows than its tokenizer has ids. A larger vocab_size is a padded vocabulary
    (nanoGPT's 50304 for GPT-2's 50257: a multiple of 64 for the matmuls), which generate takes."""
    problems = []
    if meta["vocab_size"] < tokenizer.vocab_size:
        problems.append(f"vocab_size {meta['vocab_size']}, fewer ids than the {tokenizer.vocab_size} of")
    if "eos_token_id" in meta and meta["eos_token_id"] != tokenizer.eos_token_id:  # (one written by hand may lack it)
        problems.append(f"eos_token_id {meta['eos_token_id']}, where it is {tokenizer.eos_token_id} in")
    if problems:
        raise ValueError(f"{data / 'meta.json'} says {problems[0]} the data's tokenizer ({data / 'tokenizer'}): they come "
                         "from two runs of `minigpt prepare`, or meta.json was edited; prepare the data again (a "
                         "larger vocab_size, a padded vocabulary, is taken)")


def check_block_size(block_size: int, n_positions: int) -> None:
    """A training window must fit the model's positions: it has no embeddings beyond them."""
    if not 1 <= block_size <= n_positions:
        raise ValueError(f"block_size {block_size} must be in [1, n_positions={n_positions}] (the model has no position "
                         "embeddings beyond that)")


def crop_hint(cfg: TrainConfig, source: str) -> str:
    """What an --n-positions given with --init (`source`: its weights) meant, as nanoGPT's crop_block_size:
    shorter windows, which nanoGPT makes by shrinking the position table, and --block-size makes here
    with the table kept. A longer context than the model's is no window it takes: its context is said."""
    context = init_positions(source)
    if context is None:  # neither a config.json nor a GPT-2 size: nothing to compare with
        return ""
    if cfg.n_positions < context:
        return f"; to train on shorter windows, use --block-size {cfg.n_positions} (the model keeps its position table)"
    return f"; the model's context is {context} positions, the longest window --block-size takes"


def init_positions(source: str) -> int | None:
    """The context (n_positions) of the --init model `source`: its config.json's, or a GPT-2 size's by name."""
    config = Path(source) / "config.json"
    if config.is_file():
        with warnings.catch_warnings():  # its size alone is read here: the load parses it again, and warns then
            warnings.simplefilter("ignore")
            return GPTConfig.from_json(config).n_positions
    name = gpt2_name(source)
    return GPTConfig.gpt2(name).n_positions if name else None


def trained_length(cfg: TrainConfig, block_size: int, n_positions: int) -> int:
    """The length a run's model is trained on, which its checkpoints record as their tokenizer's
    model_max_length (`minigpt eval` scores windows no longer). A fresh model (no --init) trains
    only the positions of its windows: past --block-size its position embeddings stay random,
    unless an earlier session of the run had longer ones (`session_windows`: a resume with a
    shorter --block-size leaves trained what they trained). An --init model learned its positions
    before, as far as its own record says (`recorded_length`: all of them, unless it was such a
    fresh model), or this run's windows reach. A resumed run reads the record its own checkpoint
    took from --init: that folder may have moved or gone since, and the run's record must not
    change between its sessions."""
    if not cfg.init:
        before = session_windows(Path(cfg.out)) if cfg.resume else None
    else:
        before = recorded_length(cfg.out if cfg.resume else shipped_path(cfg.init)) or n_positions
    return min(n_positions, max(block_size, before or 0))


def session_windows(out: Path) -> int | None:
    """The longest --block-size the run in `out` trained kept steps with: the settings of its log's
    opening records (a start's, each resume's) before its saved step; None where the log says none.
    The log, not the checkpoint's record: a checkpoint of an earlier minigpt recorded a fresh
    model's whole context there."""
    step = saved_step(out)
    try:
        # At one step, the last opening is the one the steps after it ran under: an earlier one there
        # is a session that died before its next checkpoint (its steps thrown away; the log keeps its record).
        ran = {r["step"]: r["config"].get("block_size") for r in read_log(out) if is_opening(r) and r["step"] < (step or 0)}
    except (OSError, ValueError, AttributeError, KeyError, TypeError):  # no log, or not one minigpt wrote
        return None
    return max((n for n in ran.values() if isinstance(n, int) and not isinstance(n, bool)), default=None)


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the block with torch's CPU generator seeded with `seed`, and give the caller's random
    state back after it: new weights depend on the seed alone, and a long-lived process that trains
    in it draws, after the run, what it would have drawn without it (train_loop forks it too).
    New weights are made on the CPU, whatever torch's default device (train_loop moves them), so
    the CPU's generator is the one to seed; CUDA's are left alone (torch.manual_seed would seed
    them, or, before CUDA starts, leave that seed queued for when it does, past the fork)."""
    with torch.random.fork_rng(devices=[]), torch.device("cpu"):
        torch.random.default_generator.manual_seed(seed)
        yield


def build_model(cfg: TrainConfig, vocab_size: int, eos_token_id: int | None = None,
                weights: str | Path | None = None, classifier_init: bool = False) -> GPT | GPTClassifier:
    """A fresh GPT from the preset and overrides, or the --init checkpoint, for data whose
    tokenizer has `vocab_size` ids and `<|endoftext|>` = `eos_token_id`. `weights`: a resumed
    run's own checkpoint (OUT_DIR), loaded in --init's place; without --init, the model the flags
    build must have its shape. `classifier_init` (finetune's classify task): an --init classifier
    is loaded as one (`GPTClassifier`, its head kept); otherwise it is refused.

    A fresh model takes both: a new vocabulary puts `<|endoftext|>` elsewhere than GPT-2's 50256,
    and generation stops on what config.json says. An --init model must already match them.
    A --block-size the model cannot take is refused from its config, before the weights are made
    or loaded (gpt2-xl's are 6 GB).
    """
    if cfg.init:
        shape = [f"--{k.replace('_', '-')}" for k in ("preset", "n_layer", "n_head", "n_embd", "n_positions")
                 if getattr(cfg, k) is not None]
        if shape:
            crop = crop_hint(cfg, weights or cfg.init) if cfg.n_positions is not None else ""
            raise ValueError(f"{', '.join(shape)} cannot change the shape of the --init checkpoint {cfg.init}; "
                             f"drop {'them' if len(shape) > 1 else 'it'}{crop}")
        source = weights or cfg.init
        is_classifier = is_classifier_checkpoint(source)
        if is_classifier and not classifier_init:  # in train's words (GPT.from_pretrained's refusal names the classifier loader)
            instead = (" (e.g. the one the classifier was fine-tuned from); `minigpt finetune --task classify` goes on "
                       "training a classifier" if cfg.COMMAND == "finetune" else "")
            raise ValueError(f"--init {cfg.init} is a classifier (GPT2ForSequenceClassification); training starts from a "
                             f"language model (GPT2LMHeadModel){instead}")
        if cfg.block_size and (Path(source) / "config.json").is_file():  # (a GPT-2 name: checked once it is found)
            with warnings.catch_warnings():  # its size alone is read here: the load below parses it again, and warns then
                warnings.simplefilter("ignore")
                check_block_size(cfg.block_size, GPTConfig.from_json(Path(source) / "config.json").n_positions)
        with warnings.catch_warnings():
            if not is_rank_0():  # every process loads the same file: rank 0 alone says what is odd in it, as it prints the notes
                warnings.simplefilter("ignore")
            # fp32 master weights, even from a float16 checkpoint
            model = (GPTClassifier if is_classifier else GPT).from_pretrained(source, dtype=torch.float32)
        gpt = model.gpt if is_classifier else model
        check_vocabulary(gpt.config, cfg.init, vocab_size, eos_token_id, getattr(cfg, "tokenizer", None),
                         cfg.COMMAND == "finetune")
        gpt.config.replace_stale_eos(eos_token_id)  # GPT-2's id, as older minigpt wrote: the data's is right
        if cfg.dropout is not None:  # dropout is not a weight: the checkpoint's rate is only a default
            gpt.set_dropout(cfg.dropout)
        return model.train()
    overrides = {k: getattr(cfg, k) for k in ("n_layer", "n_head", "n_embd", "n_positions", "dropout") if getattr(cfg, k) is not None}
    # GPT-2 uses the same token to begin and end a document; a tokenizer without one gives None
    # (null in config.json), not the preset's 50256, which a large vocabulary has as another token.
    overrides.update(bos_token_id=eos_token_id, eos_token_id=eos_token_id)
    config = GPTConfig.gpt2(cfg.preset or DEFAULT_PRESET, vocab_size=vocab_size, **overrides)
    if weights and (Path(weights) / "config.json").is_file():  # a resumed run: its flags must build the model it saved
        saved = GPTConfig.from_json(Path(weights) / "config.json")
        # (n_head above all: the same weights split into other heads load without an error, into another model)
        if differ := [f"{k} {getattr(saved, k)} → {getattr(config, k)}" for k in ("n_layer", "n_head", "n_embd", "n_positions")
                      if getattr(saved, k) != getattr(config, k)]:
            raise ValueError(f"--resume: the run in {weights} trains a model these flags do not build ({', '.join(differ)}): "
                             "a resumed run keeps its model's shape. Drop the flags that change it (--preset, --n-layer, "
                             "--n-head, --n-embd, --n-positions), or start a new run with another --out")
    if cfg.block_size:
        check_block_size(cfg.block_size, config.n_positions)
    with seeded(cfg.seed):  # the initial weights depend only on the seed
        return GPT(config)


def pretrain(cfg: TrainConfig, *, progress: bool = True) -> dict[str, float]:
    """Train a GPT language model on DATA_DIR's token files (see the module docstring).
    progress=False: no progress bar, step lines or closing line (train_loop's `progress`).
    `cfg` is left as it was passed: the run settles its own copy, which it saves and logs.
    """
    # The run settles settings in its config (--block-size from the model, --auto-resume into
    # --resume or not), so that the config it saves names them for --resume. On a copy: the
    # caller's, reused for another run, would carry this one's values.
    check_flag("progress", progress)  # before the data and model are read, not at train_loop
    cfg = copy.copy(cfg)  # a copy, not dataclasses.replace: train_loop's copy says why
    if not cfg.data:
        raise ValueError("--data (data= in Python) is required: the DATA_DIR that `minigpt prepare` wrote")
    data = Path(cfg.data)
    check_data_dir(data, cfg.resume)
    with run_dir_lock(cfg.out):  # one run at a time in OUT_DIR, from its first look at it
        # After the data's checks: --resume on a run killed before its first checkpoint starts it again
        # here, setting its log aside, which a run that then fails at once should not have done.
        # (A bare --resume with no run to continue was refused by parse_config, before --data was missed.)
        check_out_dir(cfg)
        meta = read_meta(data)
        tokenizer_dir = data / "tokenizer"
        tokenizer = Tokenizer.from_pretrained(tokenizer_dir) if tokenizer_dir.is_dir() else None
        if tokenizer is not None:  # before a model is built from meta.json's vocab_size (none: data prepared by hand)
            check_meta_fits_tokenizer(meta, tokenizer, data)
        # A resumed run takes its weights from its training_state.pt. The model it loads them into
        # comes from the run's own checkpoint in OUT_DIR (written just before that state), not from
        # --init, which may have moved since or (a GPT-2 name) left the download cache.
        model = build_model(cfg, meta["vocab_size"], meta.get("eos_token_id"), weights=cfg.out if cfg.resume else None)
        block_size = cfg.block_size = cfg.block_size or model.config.n_positions
        check_block_size(block_size, model.config.n_positions)  # (a GPT-2 size by name: known only now)
        trained = trained_length(cfg, block_size, model.config.n_positions)
        # Said when the run starts (a resumed run said it then).
        if not cfg.init and trained < model.config.n_positions and not cfg.resume and is_rank_0():
            recorded = (f". Its checkpoints save {block_size} as their tokenizer's model_max_length, so `minigpt eval` "
                        f"scores windows of {block_size} tokens and transformers' truncation=True cuts there"
                        if tokenizer is not None else "")  # (data prepared without a tokenizer: none is saved)
            print(f"note: positions {block_size}-{model.config.n_positions - 1} of this fresh model never train "
                  f"(--block-size {block_size}): text generated or scored past {block_size} tokens reads random position "
                  f"embeddings. --n-positions {block_size} makes a model of that context{recorded}", file=sys.stderr)
        vocab = model.config.vocab_size
        tokens = load_splits(data, meta, vocab, block_size + 1)

        def get_batch(split: str, rng: torch.Generator):
            return sample_batch(tokens[split], block_size, cfg.batch_size, rng)

        if tokenizer is not None and (cfg.resume or cfg.init):  # the weights learned the ids of the one saved with them
            check_same_tokenizer(tokenizer, cfg.out if cfg.resume else cfg.init, f"the data's tokenizer ({tokenizer_dir})",
                                 "Prepare the data with the model's own tokenizer (its vocab.json + merges.txt)"
                                 + (", or start a new run" if cfg.resume else ""))

        # The data's tokenizer goes with every checkpoint, so `minigpt generate --model OUT_DIR` (and
        # transformers) find it, with the length the model was trained on as its model_max_length:
        # transformers' truncation=True then cuts a text to what the model can read, and `minigpt
        # eval` takes it as its default window.
        def save_fn(m: GPT, path: Path) -> None:
            m.save_pretrained(path)
            if tokenizer is not None:
                tokenizer.model_max_length = trained
                tokenizer.save_pretrained(path)

        bytes_per_token = meta["val_bytes"] / meta["val_tokens"] if meta.get("val_bytes") else None
        return train_loop(
            model, cfg, get_batch, lm_loss, save_fn,
            bytes_per_token=bytes_per_token,
            flops_per_token=gpt_flops_per_token(model.config, block_size),
            data_fingerprint=data_fingerprint(tokens, meta["vocab_size"]),
            progress=progress,
        )


def main(argv: list[str] | None = None) -> int:
    about = "Pretrain a GPT on token files from `minigpt prepare`. Run under torchrun for DDP."
    return run_command(prog("train"), lambda: pretrain(parse_config(TrainConfig, argv, prog("train"), about)))
