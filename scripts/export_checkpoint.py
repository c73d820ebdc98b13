"""Copy a checkpoint for shipping: weights cast to --dtype (float16 halves the size), plus its tokenizer files.

    python scripts/export_checkpoint.py out/shakespeare/run/best checkpoints/shakespeare --dtype float16

The result is a normal Hugging Face GPT-2 directory; `GPT.from_pretrained(dir, dtype=torch.float32)`
upcasts it again for CPU work. A classifier (`minigpt finetune --task classify`) is exported as a
classifier, which `GPTClassifier.from_pretrained` (or transformers' GPT2ForSequenceClassification)
opens.
"""
import argparse
import shutil
import sys
from pathlib import Path

import torch

from minigpt import GPT
from minigpt.checkpoint import is_classifier_checkpoint
from minigpt.classifier import GPTClassifier

TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer_config.json")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", help="checkpoint directory to read")
    parser.add_argument("dst", help="directory to write (created)")
    parser.add_argument("--dtype", default="float16", choices=["float32", "bfloat16", "float16"],
                        help="dtype of the written weights (default: float16)")
    args = parser.parse_args(argv)
    try:
        kind = GPTClassifier if is_classifier_checkpoint(args.src) else GPT  # (GPT would refuse a `score` head)
        model = kind.from_pretrained(args.src, dtype=getattr(torch, args.dtype))
        model.save_pretrained(args.dst)
        for name in TOKENIZER_FILES:
            src, dst = Path(args.src) / name, Path(args.dst) / name
            if src.exists() and not (dst.exists() and src.samefile(dst)):  # dst = src casts in place: nothing to copy
                shutil.copy(src, dst)
    except (OSError, ValueError) as e:  # no such directory, not a checkpoint, a dst that is a file or may not be written
        print(f"export_checkpoint.py: error: {e}", file=sys.stderr)
        return 2
    print(f"exported {sum(p.numel() for p in model.parameters()):,} parameters as {args.dtype} to {args.dst}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
