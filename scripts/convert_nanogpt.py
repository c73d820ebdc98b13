"""Convert a nanoGPT checkpoint (its out_dir/ckpt.pt) into a checkpoint directory minigpt loads.

    python scripts/convert_nanogpt.py out-shakespeare/ckpt.pt checkpoints/nano
    minigpt generate --model checkpoints/nano --prompt "ROMEO:"

nanoGPT's model.py names its parameters as GPT-2 does (transformer.wte, transformer.h.0.attn.c_attn,
..., lm_head) and keeps nn.Linear's (out, in) weights, as minigpt does: the conversion is a
key-for-key copy. What it changes on the way:
- `_orig_mod.` goes: torch.compile puts it before every key of a compiled model (nanoGPT compiles
  by default), and no uncompiled model has such names.
- `attn.bias` goes: no weight, but the causal mask nanoGPT keeps as a buffer when PyTorch lacks
  flash attention; minigpt's attention builds its own.
- GPTConfig comes from the checkpoint's model_args, nanoGPT's block_size becoming n_positions.
- A `bias=False` model has no biases, in its Linears nor its LayerNorms: each becomes zeros, which
  computes exactly what the missing bias did.
- load_state_dict(strict=True): a key missing or left over is an error, not a weight left random.
- config.json + model.safetensors are written by minigpt's own save, atomically: a conversion that
  stops half way leaves no half checkpoint.

The tokenizer: a vocabulary of 50,257 ids or more is GPT-2's BPE (nanoGPT pads it to 50,304, a
multiple of 64, for faster matmuls; generation never draws the padding ids), and the tokenizer
shipped in checkpoints/gpt2 is written beside the weights. A smaller one is the character-level
vocabulary of nanoGPT's data/DATASET/meta.pkl, which this does not convert: the weights are written
alone, and the script says so (one already in out with more tokens than the model, left by an
earlier conversion of a GPT-2 model, is refused: it would not fit them).

Not the same logits: nanoGPT's MLP uses the exact GELU (nn.GELU(), with erf), minigpt's GPT-2 the
tanh approximation GPT-2 was trained with. On a tiny random nanoGPT-shaped model the logits differ
by at most 1.5e-5 (tests/test_convert_nanogpt.py measures it); a trained model's larger activations
differ more, though the two GELUs never differ by more than ~5e-4 at any input.

ckpt.pt is a pickle, and unpickling can run any code the file holds. So it is read with
torch.load(weights_only=True), which builds only tensors and plain Python values: what nanoGPT's
train.py saves (model, optimizer state, model_args, config, iter_num, best_val_loss) is all such.
A file that holds anything else is refused, not unpickled.
"""
import argparse
import pickle
import re
import sys
from pathlib import Path

import torch

from minigpt import GPT, GPTConfig
from minigpt.checkpoint import WEIGHTS_NAME
from minigpt.cli import FAILED
from minigpt.tokenizer import Tokenizer
from minigpt.tokenizer_files import TOKENIZER_FILES

COMPILED_PREFIX = "_orig_mod."  # what torch.compile's wrapper module puts before each key
SHAPE_ARGS = ("n_layer", "n_head", "n_embd", "block_size", "vocab_size")  # of model_args, the ones the shape needs
GPT2_VOCAB = 50257  # GPT-2's BPE vocabulary; nanoGPT's padded 50,304 holds it


def read_nanogpt(ckpt: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """model_args and the model's state dict from nanoGPT's ckpt.pt (or the out_dir holding it)."""
    if not ckpt.exists():  # (else torch's "[Errno 2] No such file or directory: ...", which names no argument)
        raise FileNotFoundError(f"nanoGPT checkpoint {ckpt} does not exist: it is the ckpt.pt nanoGPT's train.py writes, "
                                "or the out_dir that holds it")
    if ckpt.is_dir():
        if not (ckpt / "ckpt.pt").is_file():
            raise FileNotFoundError(f"nanoGPT checkpoint {ckpt} is a directory without a ckpt.pt: is it nanoGPT's out_dir?")
        ckpt = ckpt / "ckpt.pt"
    try:
        saved = torch.load(ckpt, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # weights_only met an object: torch names its class in its long advice
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        what = f"an object of class {found[1]}" if found else "more than tensors and plain Python values"
        raise ValueError(f"{ckpt} holds {what}; not unpickling it, which could run any code the file holds. Save only "
                         "what nanoGPT's train.py saves (model, model_args, ...) and convert that") from None
    except (EOFError, KeyError, RuntimeError) as e:  # what a file cut short, or no torch.save file at all, gives
        raise ValueError(f"{ckpt} is no file torch.save wrote, or one cut short ({type(e).__name__}: {e})") from None
    if not isinstance(saved, dict) or not {"model", "model_args"} <= saved.keys():
        raise ValueError(f"{ckpt} is no nanoGPT checkpoint: nanoGPT's train.py saves a dict with 'model' and 'model_args'")
    if missing := [name for name in SHAPE_ARGS if name not in saved["model_args"]]:
        raise ValueError(f"{ckpt}'s model_args lack {', '.join(missing)}: is it nanoGPT's?")
    state = {k.removeprefix(COMPILED_PREFIX): v for k, v in saved["model"].items()}
    state = {k: v for k, v in state.items() if not k.endswith(".attn.bias")}  # the causal mask, no weight
    return saved["model_args"], state


def to_minigpt(model_args: dict, state: dict[str, torch.Tensor]) -> GPT:
    """The GPT that `state` (nanoGPT's keys, without the prefix) is the weights of."""
    vocab_size = model_args["vocab_size"]
    endoftext = GPT2_VOCAB - 1 if vocab_size >= GPT2_VOCAB else None  # a character vocabulary has no <|endoftext|>
    config = GPTConfig(vocab_size=vocab_size, n_positions=model_args["block_size"], n_embd=model_args["n_embd"],
                       n_layer=model_args["n_layer"], n_head=model_args["n_head"], dropout=model_args.get("dropout", 0.0),
                       bos_token_id=endoftext, eos_token_id=endoftext)
    model = GPT(config)
    if not model_args.get("bias", True):  # bias=False: every bias is zero, which adds nothing
        state = {**{k: torch.zeros_like(v) for k, v in model.state_dict().items() if k.endswith(".bias")}, **state}
    model.load_state_dict(state, strict=True)
    return model


def tokenizer_size(path: Path) -> int:
    """The number of tokens of the tokenizer in `path`; 0 where none can be read."""
    try:
        return Tokenizer.from_pretrained(path).vocab_size
    except (OSError, ValueError):
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ckpt", help="nanoGPT's ckpt.pt, or the out_dir that holds it")
    parser.add_argument("out", help="directory to write config.json + model.safetensors (and the tokenizer) to")
    parser.add_argument("--overwrite", action="store_true", help="replace a checkpoint that out already holds")
    args = parser.parse_args(argv)
    out = Path(args.out)
    try:
        if not args.overwrite and ((out / "config.json").exists() or (out / WEIGHTS_NAME).exists()):
            raise ValueError(f"{out} already holds a checkpoint; pass --overwrite to replace it, or choose another out")
        model_args, state = read_nanogpt(Path(args.ckpt))
        model = to_minigpt(model_args, state)
        # A character model gets no tokenizer: one already in out that has more tokens than the model
        # (GPT-2's, from a BPE model converted there before, then --overwrite), or that cannot be read,
        # would stay beside weights it does not fit, and transformers would load it. One the user gave
        # the model, that fits it, stays.
        held = [name for name in TOKENIZER_FILES if (out / name).exists()]
        size = tokenizer_size(out) if held and model.config.vocab_size < GPT2_VOCAB else 0  # (a BPE model's: replaced)
        if model.config.vocab_size < GPT2_VOCAB and held and not 0 < size <= model.config.vocab_size:
            which = f"a {size}-token tokenizer" if size else "tokenizer files that cannot be read"
            raise ValueError(f"{out} holds {which} ({', '.join(held)}) that would stay beside a "
                             f"{model.config.vocab_size}-id character-level model it does not fit; remove those "
                             "files from it, or choose another out")
        model.save_pretrained(out)
        if model.config.vocab_size >= GPT2_VOCAB:
            tokenizer = Tokenizer.from_pretrained("gpt2")  # the shipped checkpoints/gpt2
            tokenizer.model_max_length = model.config.n_positions
            tokenizer.save_pretrained(out)
    except (OSError, ValueError, RuntimeError) as e:  # no file, not nanoGPT's, keys that do not fit
        print(f"convert_nanogpt.py: error: {e}", file=sys.stderr)
        return FAILED
    print(f"converted {sum(p.numel() for p in model.parameters()):,} parameters to {out}")
    if model.config.vocab_size < GPT2_VOCAB and not size:  # (size: of a tokenizer that fits, left in OUT)
        print(f"convert_nanogpt.py: warning: a {model.config.vocab_size}-id vocabulary is nanoGPT's character-level "
              f"meta.pkl, which is not converted: {out} holds the weights alone, and minigpt generate needs a "
              "tokenizer for them", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
