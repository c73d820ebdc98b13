"""Copy a checkpoint for shipping: weights cast to --dtype (float16 halves the size), plus its tokenizer.

    python scripts/export_checkpoint.py out/shakespeare/run/best checkpoints/shakespeare --dtype float16 --overwrite

The result is a normal Hugging Face GPT-2 directory; `GPT.from_pretrained(dir, dtype=torch.float32)`
upcasts it again for CPU work. A classifier (`minigpt finetune --task classify`) is exported as a
classifier, which `GPTClassifier.from_pretrained` (or transformers' GPT2ForSequenceClassification)
opens.

What dst gets: model.safetensors (the weights, cast); config.json, as minigpt writes it (its shape,
and src's config.json's own token ids: bos, eos, pad); src's generation_config.json, if it has one,
copied byte for byte (transformers' `generate` takes its sampling defaults and token ids from it,
over config.json's); and the tokenizer, as below. Anything else in src (a README, optimizer state)
is not copied.

src may also be one of OpenAI's four GPT-2 sizes by name (gpt2, ..., gpt2-xl), found as
`GPT.from_pretrained` finds it (checkpoints/NAME, else the Hugging Face cache, else downloaded),
or another Hub model by its repo id (ORG/NAME), read from the Hugging Face cache only.

The tokenizer is read as minigpt reads it (vocab.json + merges.txt, or else tokenizer.json) and
written as vocab.json + merges.txt + tokenizer_config.json; a src without one exports the weights
alone, saying so (a GPT-2 size takes the one shipped in checkpoints/gpt2: the four share it; LoRA
adapters alone, their base's). A dst
that already holds a checkpoint or tokenizer files is refused unless --overwrite, and dst may never
be src (export to a new directory, then swap them). A weight the cast would turn into inf (float16
tops out at 65504) is refused, and nothing is written.
"""
import argparse
import sys
from pathlib import Path

import torch

from minigpt import GPT
from minigpt.checkpoint import (DTYPE_NAMES, GENERATION_CONFIG_NAME, INDEX_NAME, PICKLE_NAME, WEIGHTS_NAME, check_cast_fits,
                                is_classifier_checkpoint)
from minigpt.classifier import GPTClassifier
from minigpt.cli import FAILED
from minigpt.config import TOKEN_IDS, GPTConfig, gpt2_name, shipped_path
from minigpt.download import find_gpt2
from minigpt.files import atomic_path, no_follow
from minigpt.lora import adapter_base, check_adapter_chain
from minigpt.tokenizer import Tokenizer
from minigpt.tokenizer_files import TOKENIZER_FILES

# What a checkpoint directory holds: an export replaces these, so finding one in dst needs --overwrite.
MODEL_FILES = ("config.json", WEIGHTS_NAME, INDEX_NAME, PICKLE_NAME, GENERATION_CONFIG_NAME)
# A tokenizer's files (tokenizer_files.TOKENIZER_FILES: a stale tokenizer.json counts, as transformers
# would read it before the exported vocab.json; write_hf removes it) and its settings.
DST_TOKENIZER_FILES = (*TOKENIZER_FILES, "tokenizer_config.json")


def resolve_src(src: str) -> tuple[Path, Tokenizer | None]:
    """The checkpoint directory `src` names, and its tokenizer (None: it has none), read before
    anything is written: a src whose tokenizer is broken (merges.txt without its vocab.json, say)
    leaves dst untouched.

    A GPT-2 size by name is found as `GPT.from_pretrained` finds it (`find_gpt2`), not looked for in
    ./gpt2: the tokenizer check and the dst-is-src check looked there, so an export of the Hugging
    Face cache's copy came out without its tokenizer. A copy without tokenizer files takes the
    shipped one, as `Tokenizer.from_pretrained(name)` reads it: the four sizes share one. A folder
    of LoRA adapters alone (a LoRA run's adapter/) takes its base's, as generate does."""
    if name := gpt2_name(src):
        path = find_gpt2(name)
        return path, Tokenizer.from_pretrained(path if has_tokenizer(path) else name)
    path = Path(shipped_path(src))  # (README's checkpoints/..., for an installed minigpt too)
    if has_tokenizer(path):
        return path, Tokenizer.from_pretrained(path)
    if adapter_base(path) is None or not (gpt2_name(end := chain_end(path)) or has_tokenizer(Path(shipped_path(end)))):
        return path, None  # no tokenizer, nor any along the adapters' bases (a base gone: loading it says so)
    return path, Tokenizer.from_pretrained(end)  # the base's, as generate reads it (a broken one is refused)


def chain_end(path: Path) -> str:
    """Where LoRA adapters alone in `path` find their tokenizer: the first of their bases (followed
    from folder to folder, as a base may be adapters alone too) that holds tokenizer files, else the last."""
    check_adapter_chain(path)  # bases that loop back would be followed for ever
    where = str(path)
    while not has_tokenizer(Path(shipped_path(where))) and (base := adapter_base(shipped_path(where))) is not None:
        where = base
    return where


def has_tokenizer(path: Path) -> bool:
    return any((path / name).exists() for name in TOKENIZER_FILES)


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
    if dst.is_symlink() and not dst.exists() or dst.exists() and not dst.is_dir():  # (a link to nothing, too)
        raise ValueError(f"dst {dst} is no directory (a file, or a link to none): choose a directory to write the "
                         "checkpoint into")
    if not dst.is_dir():
        return  # missing: created
    found = [name for name in (*MODEL_FILES, *DST_TOKENIZER_FILES) if (dst / name).exists()]
    if found and not overwrite:
        raise ValueError(f"dst {dst} already holds a checkpoint or tokenizer ({', '.join(found)}); pass --overwrite "
                         "to replace it, or choose another dst")
    stale = [name for name in found if name in DST_TOKENIZER_FILES]
    if stale and not has_tokenizer:
        raise ValueError(f"src {src} has no tokenizer, so dst's ({', '.join(stale)}) would stay beside weights it may "
                         "not fit; remove those files from dst, or choose another dst")


def keep_config_token_ids(model: GPT | GPTClassifier, src: Path) -> None:
    """Give `model` the token ids of src's own config.json back, for the config.json dst gets.

    `GPT.from_pretrained` reads the ids `generate` uses: a generation_config.json's, where there is
    one, as transformers' `generate` does. Written into config.json they replaced its own: a
    pad_token_id set on the config after the model was built (so missing from
    generation_config.json) came out null. transformers keeps each file's ids for its own use
    (`model.config`, `model.generation_config`), so dst keeps both files as src has them."""
    own = GPTConfig.from_json(src / "config.json", generation_ids=False)
    for name in TOKEN_IDS:
        setattr(model.config, name, getattr(own, name))


def check_cast_is_finite(model: torch.nn.Module, dtype: str) -> None:
    """Refuse (ValueError naming the tensor) a weight that is not finite once cast to `dtype`: a
    float16 export of a weight past 65504 was written as inf without a word, and its model gave NaN
    logits. A src whose weights are not finite to begin with is named as broken."""
    target = DTYPE_NAMES[dtype]
    # bfloat16 has float32's range (8 exponent bits) at less precision: float16 has 5.
    wider = "--dtype bfloat16 (float32's range) or --dtype float32" if dtype == "float16" else "--dtype float32"
    for name, p in model.named_parameters():
        if not torch.isfinite(p).all():
            raise ValueError(f"src's {name} holds NaN or inf already: a broken checkpoint, which no dtype can export")
        # The check a load makes (GPT.from_pretrained(..., dtype=torch.float16)), in export's words.
        check_cast_fits(name, p.detach(), target, f"it would be written as inf; export with {wider}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", help="checkpoint directory to read, a GPT-2 size by name (gpt2, ..., gpt2-xl), or another "
                        "Hub model's ORG/NAME that the Hugging Face cache holds")
    parser.add_argument("dst", help="directory to write (created)")
    parser.add_argument("--dtype", default="float16", choices=DTYPE_NAMES,
                        help="dtype of the written weights (default: float16)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the checkpoint and tokenizer files a dst already holds")
    args = parser.parse_args(argv)
    dst = Path(args.dst)
    try:
        src, tokenizer = resolve_src(args.src)  # (finding a GPT-2 size may download it: an OSError)
        check_dst(src, dst, args.dtype, tokenizer is not None, args.overwrite)
        kind = GPTClassifier if is_classifier_checkpoint(src) else GPT  # (GPT would refuse a `score` head)
        model = kind.from_pretrained(src)  # as stored: what the cast would overflow is checked first
        check_cast_is_finite(model, args.dtype)
        model.to(DTYPE_NAMES[args.dtype])
        generation = (src / GENERATION_CONFIG_NAME).read_bytes() if (src / GENERATION_CONFIG_NAME).is_file() else None
        if generation is not None:
            keep_config_token_ids(model, src)
        model.save_pretrained(dst)  # (removes a generation_config.json dst holds: another model's)
        if tokenizer is not None:
            tokenizer.save_pretrained(dst)  # atomically, and removes a stale tokenizer.json
        if generation is not None:
            # As every file is: whole or not there, and never written through a link.
            with atomic_path(dst / GENERATION_CONFIG_NAME) as tmp, open(tmp, "wb", opener=no_follow) as f:
                f.write(generation)
    except (OSError, ValueError) as e:  # no such directory, not a checkpoint, a dst that is a file or may not be written
        print(f"export_checkpoint.py: error: {e}", file=sys.stderr)
        return FAILED
    print(f"exported {sum(p.numel() for p in model.parameters()):,} parameters as {args.dtype} to {dst}")
    if tokenizer is None:
        print(f"export_checkpoint.py: warning: {src} has no tokenizer (vocab.json + merges.txt, or tokenizer.json): "
              f"exported the weights only; give {dst} the tokenizer they were trained with", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
