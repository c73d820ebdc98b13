"""Copy a checkpoint for shipping: weights cast to --dtype (float16 halves the size), plus its tokenizer.

    python scripts/export_checkpoint.py out/shakespeare/run/best checkpoints/shakespeare --dtype float16 --overwrite

The result is a normal Hugging Face GPT-2 directory; `GPT.from_pretrained(dir, dtype=torch.float32)`
upcasts it again for CPU work. A classifier (`minigpt finetune --task classify`) is exported as a
classifier, which `GPTClassifier.from_pretrained` (or transformers' GPT2ForSequenceClassification)
opens.

The tokenizer is read as minigpt reads it (vocab.json + merges.txt, or else tokenizer.json) and
written as vocab.json + merges.txt + tokenizer_config.json; a src without one exports the weights
alone, saying so. A dst that already holds a checkpoint or tokenizer files is refused unless
--overwrite, and dst may never be src (export to a new directory, then swap them).
"""
import argparse
import sys
from pathlib import Path

import torch

from minigpt import GPT
from minigpt.checkpoint import INDEX_NAME, PICKLE_NAME, WEIGHTS_NAME, is_classifier_checkpoint
from minigpt.classifier import GPTClassifier
from minigpt.tokenizer import Tokenizer
from minigpt.tokenizer_files import TOKENIZER_FILES

# What a checkpoint directory holds: an export replaces these, so finding one in dst needs --overwrite.
MODEL_FILES = ("config.json", WEIGHTS_NAME, INDEX_NAME, PICKLE_NAME)
# A tokenizer's files (tokenizer_files.TOKENIZER_FILES: a stale tokenizer.json counts, as transformers
# would read it before the exported vocab.json; write_hf removes it) and its settings.
DST_TOKENIZER_FILES = (*TOKENIZER_FILES, "tokenizer_config.json")


def check_dst(src: Path, dst: Path, dtype: str, has_tokenizer: bool, overwrite: bool) -> None:
    """Refuse a dst whose files the export would replace or leave mismatched (ValueError naming them).

    It used to be written over unchecked: another model there was replaced without a word, and its
    tokenizer.json stayed beside the new weights (transformers then loaded GPT-2's 50257 tokens for
    a 4096-token model)."""
    # Resolved: "new/../src" is src too, though "new" does not exist yet (save_pretrained makes it),
    # as are a relative path and a symlink to it.
    if dst.resolve() == src.resolve():
        raise ValueError(f"dst {dst} is src: the export would replace src's weights with their {dtype} cast, and "
                         "the precision it drops is lost for good; export to another directory")
    if not dst.is_dir():
        return  # missing: created; a file: save_pretrained says so
    found = [name for name in (*MODEL_FILES, *DST_TOKENIZER_FILES) if (dst / name).exists()]
    if found and not overwrite:
        raise ValueError(f"dst {dst} already holds a checkpoint or tokenizer ({', '.join(found)}); pass --overwrite "
                         "to replace it, or choose another dst")
    stale = [name for name in found if name in DST_TOKENIZER_FILES]
    if stale and not has_tokenizer:
        raise ValueError(f"src {src} has no tokenizer, so dst's ({', '.join(stale)}) would stay beside weights it may "
                         "not fit; remove those files from dst, or choose another dst")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", help="checkpoint directory to read")
    parser.add_argument("dst", help="directory to write (created)")
    parser.add_argument("--dtype", default="float16", choices=["float32", "bfloat16", "float16"],
                        help="dtype of the written weights (default: float16)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the checkpoint and tokenizer files a dst already holds")
    args = parser.parse_args(argv)
    src, dst = Path(args.src), Path(args.dst)
    has_tokenizer = any((src / name).exists() for name in TOKENIZER_FILES)
    try:
        check_dst(src, dst, args.dtype, has_tokenizer, args.overwrite)
        kind = GPTClassifier if is_classifier_checkpoint(src) else GPT  # (GPT would refuse a `score` head)
        model = kind.from_pretrained(src, dtype=getattr(torch, args.dtype))
        # Read before anything is written: a src whose tokenizer is broken (merges.txt without its
        # vocab.json, say) leaves dst untouched.
        tokenizer = Tokenizer.from_pretrained(src) if has_tokenizer else None
        model.save_pretrained(dst)
        if tokenizer is not None:
            tokenizer.save_pretrained(dst)  # atomically, and removes a stale tokenizer.json
    except (OSError, ValueError) as e:  # no such directory, not a checkpoint, a dst that is a file or may not be written
        print(f"export_checkpoint.py: error: {e}", file=sys.stderr)
        return 2
    print(f"exported {sum(p.numel() for p in model.parameters()):,} parameters as {args.dtype} to {dst}")
    if tokenizer is None:
        print(f"export_checkpoint.py: warning: {src} has no tokenizer (vocab.json + merges.txt, or tokenizer.json): "
              f"exported the weights only; give {dst} the tokenizer they were trained with", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
