"""`minigpt tokenize`: encode text and show BPE at work, or train a new tokenizer.

Where it sits: the command line in front of minigpt/tokenizer.py (`Tokenizer.encode`,
`encode_show_work`) and minigpt/bpe_train.py (`--train`, which hands its flags to bpe_train's
`main`, also run by scripts/train_tokenizer.py).
"""
from __future__ import annotations

import argparse
import sys

from minigpt.tokenizer import Tokenizer


def main(argv: list[str] | None = None) -> int:
    from minigpt.cli import prog

    parser = argparse.ArgumentParser(
        prog=prog("tokenize"),
        description="Encode text and print its ids and tokens (--show-work: every BPE merge step), "
        "or train a new tokenizer with --train FILES --vocab-size N --out DIR.",
    )
    parser.add_argument("text", nargs="?", help="text to encode (default: read standard input)")
    parser.add_argument("--tokenizer", help="tokenizer directory to encode with (default: GPT-2's, shipped)")
    parser.add_argument("--show-work", action="store_true", help="print each chunk and every merge step")
    parser.add_argument("--train", nargs="+", metavar="FILE", help="train a tokenizer on these text files")
    parser.add_argument("--vocab-size", type=int, help="with --train: vocabulary size, special tokens included (default 4096)")
    parser.add_argument("--special", nargs="*", help="with --train: special tokens (default <|endoftext|>)")
    parser.add_argument("--out", help="with --train: directory to save the tokenizer to")
    args = parser.parse_args(argv)
    if args.train:
        if not args.out:
            parser.error("--train needs --out DIR")
        if args.text is not None or args.show_work or args.tokenizer is not None:
            parser.error("--train learns a new tokenizer from FILES: a text to encode, --show-work and --tokenizer "
                         "(the one to encode with) go without --train")
        from minigpt.bpe_train import main as train_main

        # Only the flags given: bpe_train's parser holds the defaults and checks the values.
        given = [*(["--vocab-size", str(args.vocab_size)] if args.vocab_size is not None else []),
                 *(["--special", *args.special] if args.special is not None else [])]
        return train_main([*args.train, *given, "--out", args.out])
    if args.vocab_size is not None or args.special is not None or args.out:
        parser.error("--vocab-size, --special and --out go with --train FILES")
    try:
        tok = Tokenizer.from_pretrained(args.tokenizer or "gpt2")
    except (ValueError, OSError) as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    text = sys.stdin.read() if args.text is None else args.text
    if args.show_work:
        for work in tok.encode_show_work(text):
            print(f"chunk {work['chunk']!r}")
            print(f"    {'bytes':>10}  {' '.join(work['steps'][0])}")
            for rank, step in zip(work["ranks"], work["steps"][1:]):
                print(f"    rank {rank:>5}  {' '.join(step)}")
            print(f"    {'ids':>10}  {work['ids']}")
        return 0
    ids = tok.encode(text, allowed_special="all")
    print("ids:   ", ids)
    print("tokens:", [tok.id_to_token(i) for i in ids])
    print(f"{len(text)} characters → {len(ids)} token{'s' * (len(ids) != 1)}")
    return 0
