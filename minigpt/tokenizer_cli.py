"""`minigpt tokenize`: encode text and show BPE at work, or train a new tokenizer.

Where it sits: the command line in front of minigpt/tokenizer.py (`Tokenizer.encode`,
`encode_show_work`) and minigpt/bpe_train.py (`Tokenizer.train`). Training has two doors with the
same flags: `minigpt tokenize --train FILES` (`main`) and scripts/train_tokenizer.py FILES
(`train_main`); both end in `train_and_save`.
"""
from __future__ import annotations

import argparse
import shlex
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from minigpt.cli import FAILED, prog
from minigpt.files import STDIN, failure_reason, json_line, read_text_or_stdin, typed_text, unwritable, user_path
from minigpt.tokenizer import Tokenizer
from minigpt.tokenizer_files import TOKENIZER_FILES

# What training asks for when --vocab-size / --special / --eos are not given.
TRAIN_VOCAB_SIZE = 4096
TRAIN_SPECIALS = ("<|endoftext|>",)
TRAIN_EOS = "<|endoftext|>"  # the end of a document, when it is one of the special tokens
EOS_HELP = (f"which special token ends a document: `minigpt prepare` writes it between files, and a model "
            f"learns to stop on it (default {TRAIN_EOS} when it is one of --special)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=prog("tokenize"),
        description="Encode text and print its ids and tokens (--show-work: every BPE merge step), "
        "or train a new tokenizer with --train FILES --vocab-size N --out DIR.",
    )
    parser.add_argument("text", nargs="?", help="text to encode, as given (default: read standard input, as prepare "
                        "reads a file: UTF-8, with \\r\\n and a lone \\r as \\n); special tokens in it "
                        "(<|endoftext|>) are encoded as their ids, where Tokenizer.encode refuses them unless allowed")
    parser.add_argument("--tokenizer", type=user_path, help="tokenizer directory to encode with (default: GPT-2's, shipped)")
    parser.add_argument("--show-work", action="store_true", help="print each chunk and every merge step")
    parser.add_argument("--json", action="store_true",
                        help='print one JSON object instead of text, for scripts: {"ids": [...], "tokens": [...], "characters": N}')
    parser.add_argument("--train", nargs="+", type=user_path, metavar="FILE", help="train a tokenizer on these text files")
    parser.add_argument("--vocab-size", type=int,
                        help=f"with --train: vocabulary size, special tokens included (default {TRAIN_VOCAB_SIZE})")
    parser.add_argument("--special", nargs="*", help=f"with --train: special tokens (default {' '.join(TRAIN_SPECIALS)})")
    parser.add_argument("--eos", metavar="TOKEN", help=f"with --train: {EOS_HELP}")
    parser.add_argument("--out", type=user_path, help="with --train: directory to save the tokenizer to")
    parser.add_argument("--overwrite", action="store_true",
                        help="with --train: replace the tokenizer already in --out (refused otherwise)")
    args = parser.parse_args(argv)
    if args.train:
        if not args.out:
            parser.error("--train needs --out DIR")
        if args.text is not None or args.show_work or args.json or args.tokenizer is not None:
            parser.error("--train learns a new tokenizer from FILES: a text to encode, --show-work, --json and --tokenizer "
                         "(the one to encode with) go without --train")
        return train_and_save(
            prog("tokenize --train"), [Path(f) for f in args.train],
            TRAIN_VOCAB_SIZE if args.vocab_size is None else args.vocab_size,
            TRAIN_SPECIALS if args.special is None else args.special,  # `--special` alone: none
            Path(args.out), args.overwrite, args.eos,
        )
    if args.vocab_size is not None or args.special is not None or args.eos is not None or args.out or args.overwrite:
        parser.error("--vocab-size, --special, --eos, --out and --overwrite go with --train FILES")
    if args.show_work and args.json:
        parser.error("--show-work prints the merge steps as text, which have no JSON form: give --show-work or --json")
    try:
        tok = Tokenizer.from_pretrained(args.tokenizer or "gpt2")
        # Standard input as UTF-8, whatever the locale: bytes in another encoding are an error
        # that says so, not U+FFFD encoded without a word (or a traceback).
        text = read_text_or_stdin(STDIN) if args.text is None else typed_text("TEXT", args.text)
    except (ValueError, OSError) as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return FAILED
    if args.show_work:
        # "all", as the ids below: `<|endoftext|>` typed here is that token in both views.
        for work in tok.encode_show_work(text, allowed_special="all"):
            print(f"chunk {work['chunk']!r}")
            kind = "special" if work.get("special") else "added" if work.get("added") else "bytes"
            print(f"    {kind:>10}  {' '.join(work['steps'][0])}")
            for rank, step in zip(work["ranks"], work["steps"][1:]):
                print(f"    rank {rank:>5}  {' '.join(step)}")
            print(f"    {'ids':>10}  {work['ids']}")
        return 0
    ids = tok.encode(text, allowed_special="all")
    tokens = [tok.id_to_token(i) for i in ids]
    if args.json:  # as `minigpt eval --json`: one object, its text as UTF-8 (Ġ, not \u0120)
        print(json_line({"ids": ids, "tokens": tokens, "characters": len(text)}))
        return 0
    print("ids:   ", ids)
    print("tokens:", tokens)
    print(f"{len(text)} character{'s' * (len(text) != 1)} → {len(ids)} token{'s' * (len(ids) != 1)}")
    return 0


def train_main(argv: list[str] | None = None) -> int:
    """`python scripts/train_tokenizer.py FILES --vocab-size N --out DIR` (= `minigpt tokenize --train`)."""
    parser = argparse.ArgumentParser(prog=prog("tokenize --train"),
                                     description="Train a byte-level BPE tokenizer (GPT-2 style) on text files.")
    parser.add_argument("files", nargs="+", type=user_path, help="UTF-8 text files to learn from")
    parser.add_argument("--vocab-size", type=int, default=TRAIN_VOCAB_SIZE,
                        help=f"tokens in total, specials included (default {TRAIN_VOCAB_SIZE})")
    parser.add_argument("--special", nargs="*", default=TRAIN_SPECIALS,
                        help=f"special tokens (default {' '.join(TRAIN_SPECIALS)})")
    parser.add_argument("--eos", metavar="TOKEN", help=EOS_HELP)
    parser.add_argument("--out", type=user_path, required=True, help="directory for vocab.json + merges.txt")
    parser.add_argument("--overwrite", action="store_true", help="replace the tokenizer already in --out (refused otherwise)")
    args = parser.parse_args(argv)
    return train_and_save(parser.prog, [Path(f) for f in args.files], args.vocab_size, args.special, Path(args.out),
                          args.overwrite, args.eos)



def train_and_save(name: str, files: list[Path], vocab_size: int, special: Sequence[str], out: Path,
                   overwrite: bool = False, eos: str | None = None) -> int:
    """Train on `files`, save to `out`. A bad argument or file is an error line that starts with
    `name` (the command as the user ran it), and exit status 2. A tokenizer already in `out` is
    replaced only with `overwrite`: in a model's directory, the model would be left with another
    vocabulary than the one it was trained on. `eos`: the special token that ends a document (None:
    TRAIN_EOS if it is one of `special`, else none, with a warning)."""
    # Checked now, not after minutes of training. The tokens are typed text: UTF-8 whatever the locale.
    try:
        special = [typed_text("--special", token) for token in special]
        eos = None if eos is None else typed_text("--eos", eos)
    except ValueError as e:
        print(f"{name}: error: {e}", file=sys.stderr)
        return FAILED
    if out.exists() and not out.is_dir():
        print(f"{name}: error: --out {out} is a file; the tokenizer is saved to a directory", file=sys.stderr)
        return FAILED
    if (problem := unwritable(out)) is not None:  # now, not after minutes of training
        print(f"{name}: error: --out {out}: {problem}; choose another --out", file=sys.stderr)
        return FAILED
    found = [f for f in TOKENIZER_FILES if (out / f).exists()]
    if found and not overwrite:
        print(f"{name}: error: {out} already holds a tokenizer ({', '.join(found)}); choose another --out, or pass "
              "--overwrite to replace it", file=sys.stderr)
        return FAILED
    if eos is not None and eos not in special:
        print(f"{name}: error: --eos {eos} is not one of the special tokens ({' '.join(special) or 'none'}); "
              "add it to --special", file=sys.stderr)
        return FAILED
    if eos is None and TRAIN_EOS in special:
        eos = TRAIN_EOS
    if eos is None:
        from minigpt.data import NO_EOS_WARNING  # (here: numpy's import, only for training)

        print(f"{name}: warning: the tokenizer {NO_EOS_WARNING}; name one of --special with --eos TOKEN", file=sys.stderr)
    warn_if_prepare_cannot_use(name, vocab_size)
    try:
        with warnings.catch_warnings(record=True) as notes:  # printed as notes after the result
            warnings.simplefilter("always")
            tok = Tokenizer.train(files, vocab_size, special)
    except (ValueError, OSError) as e:  # a missing file, a vocab_size below 256 + specials, ...
        print(f"{name}: error: {e}", file=sys.stderr)
        return FAILED
    tok.eos_token = tok.pad_token = eos  # as Tokenizer(..., eos_token=eos) sets them: padding uses the EOS
    try:
        tok.save_pretrained(out)
    except OSError as e:  # what `unwritable` cannot foresee: a full disk, a folder made read-only since
        # Which file failed (vocab.json: files.atomic_path names it so, not by its temp file, unless the
        # temp itself is at fault: a link planted at vocab.json.tmp). A full disk met by a write names
        # no file, and atomic_path names the folder for it: --out itself, said already. One met by the
        # fsync names the file (files.fsync_file): "vocab.json: No space left on device".
        print(f"{name}: error: cannot save the tokenizer to --out {out}: {failure_reason(e, out)}", file=sys.stderr)
        return FAILED
    specials = ", ".join(tok.special_tokens) or "none"
    print(f"saved a tokenizer of {tok.vocab_size:,} tokens ({len(tok.merges):,} merges; special tokens: {specials}; "
          f"end of document: {tok.eos_token or 'none'}) to {out}")
    print(f"next: minigpt prepare FILES --tokenizer {shlex.quote(str(out))} --out DATA_DIR", file=sys.stderr)  # quoted: ready to paste
    for note in notes:  # e.g. a vocabulary smaller than asked for: the text ran out of pairs
        print(f"note: {note.message}", file=sys.stderr)
    return 0


def warn_if_prepare_cannot_use(name: str, vocab_size: int) -> None:
    """Before training, a warning on stderr if the vocabulary would be too large for `minigpt prepare`
    (not refused: a tokenizer has other uses, but minutes of training should not end in a surprise)."""
    from minigpt.data import MAX_VOCAB, TOKEN_DTYPE  # (here: numpy's import, only for training)

    if vocab_size > MAX_VOCAB:
        print(f"{name}: warning: --vocab-size {vocab_size:,} is over {MAX_VOCAB:,}: `minigpt prepare` cannot use this "
              f"tokenizer (its token files store {TOKEN_DTYPE.__name__} ids); training it anyway", file=sys.stderr)
