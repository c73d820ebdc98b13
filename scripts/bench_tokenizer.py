"""Tokenizer speed: minigpt against tiktoken and Hugging Face `tokenizers`, all in one process.

    python scripts/bench_tokenizer.py                       # tinyshakespeare + a ~10 MB concatenation
    python scripts/bench_tokenizer.py --data input.txt --extra SST-2/train.tsv SST-2/dev.tsv   # the texts elsewhere
    python scripts/bench_tokenizer.py --repeats 7 --big-mb 20

Encoding: MB/s (UTF-8 bytes per second, median of --repeats runs) and the ratio to tiktoken's
single-thread `encode_ordinary` on the whole text. Every engine's ids are checked against tiktoken.
"CPU s/MB" counts every process (encode_batch's workers included): on a machine shared with other
users, wall time can only shrink with more processes if the scheduler gives them more CPU.
"cold" is a freshly loaded tokenizer (empty chunk cache); "warm" has encoded the text once before.
encode_batch gets the whole text as one document and cuts it at exact cut points itself; its label
says how many processes encoded it (one for a text under MIN_PARALLEL_CHARS, or without fork).
Training: seconds for a 4096-token vocabulary, against `tokenizers`' BpeTrainer; "× HF" is a speed
ratio, as in the encoding table (HF's seconds / minigpt's: > 1 means minigpt is faster). Besides
--data, it trains on three ~1 MB texts made here (seeded): Chinese-like text cut by punctuation every
8-30 characters, the same with no punctuation (each line of 100-300 characters is one pre-tokenized
chunk), and random Latin words (~100k distinct chunks): where a pure-Python trainer is slowest.
Loading: milliseconds to read GPT-2's vocab.json + merges.txt into a tokenizer ready to encode,
against `tokenizers`' BPE.from_file and transformers' GPT2TokenizerFast on the same files, in this
process (torch imported, as in any minigpt command: Python's garbage collector walks its objects too).
"""
from __future__ import annotations

import argparse
import math
import os
import random
import statistics
import time
from pathlib import Path

import tiktoken
import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

from tiktoken_ext.openai_public import r50k_pat_str
from minigpt.files import user_path
from minigpt.tokenizer import GPT2_DIR, Tokenizer
from minigpt.tokenizer_batch import available_cpus, processes_for

# The project's shared data folder, beside the checkout (as scripts/train_shakespeare.sh finds it):
# this project's machines keep the data sets there; elsewhere, --data and --extra name them.
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
MIN_VOCAB = 256 + 1  # both trainers' least vocabulary: the 256 bytes and <|endoftext|>


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (encode_batch's workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def median_seconds(fn, repeats: int, setup=lambda: None) -> tuple[float, float]:
    """Median wall time and median CPU time of fn(setup()) over `repeats` runs (setup not timed)."""
    walls, cpus = [], []
    for _ in range(repeats):
        arg = setup()
        cpu, start = cpu_seconds(), time.perf_counter()
        fn(arg)
        walls.append(time.perf_counter() - start)
        cpus.append(cpu_seconds() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def engines() -> tuple[tiktoken.Encoding, tokenizers.Tokenizer]:
    gpt2 = Tokenizer.from_pretrained(GPT2_DIR)
    ranks = {t: i for t, i in gpt2.vocab.items()}
    # tiktoken's own GPT-2 encoding, as tiktoken.get_encoding("gpt2") builds it (offline here): its
    # pattern (r50k's: possessive quantifiers, one more branch) splits alike and runs ~10% faster than
    # minigpt's GPT2_SPLIT_PATTERN, which this reference used before 2026-12-06.
    tik = tiktoken.Encoding("gpt2", pat_str=r50k_pat_str, mergeable_ranks=ranks, special_tokens={"<|endoftext|>": 50256})
    hf = tokenizers.Tokenizer(models.BPE.from_file(str(GPT2_DIR / "vocab.json"), str(GPT2_DIR / "merges.txt")))
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    return tik, hf


def load_average() -> str:
    """The last minute's load average, how busy the machine was (other runs skew the speeds); Windows has none."""
    return f"{os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else "unknown"


def batch_processes(text: str) -> int:
    """How many processes encode_batch([text]) encodes with, so the label says what ran."""
    return processes_for(len(text))


def bench_encode(name: str, text: str, repeats: int, tik, hf) -> list[tuple]:
    mb = len(text.encode("utf-8")) / 1e6
    ref = tik.encode_ordinary(text)
    assert hf.encode(text).ids == ref, "HF tokenizers disagrees with tiktoken"
    fresh = lambda: Tokenizer.from_pretrained(GPT2_DIR)  # noqa: E731
    warm = fresh()
    assert warm.encode(text) == ref and warm.encode_batch([text]) == [ref], "minigpt disagrees with tiktoken"
    procs = f"{batch_processes(text)} proc" + ("s" if batch_processes(text) > 1 else "")
    runs = [
        ("tiktoken encode_ordinary (1 thread)", lambda _: tik.encode_ordinary(text), lambda: None),
        ("HF tokenizers encode", lambda _: hf.encode(text), lambda: None),
        ("minigpt encode, cold cache", lambda t: t.encode(text), fresh),
        ("minigpt encode, warm cache", lambda _: warm.encode(text), lambda: None),
        (f"minigpt encode_batch ({procs}), cold", lambda t: t.encode_batch([text]), fresh),
        (f"minigpt encode_batch ({procs}), warm", lambda _: warm.encode_batch([text]), lambda: None),
    ]
    rows = [(engine, *median_seconds(fn, repeats, setup)) for engine, fn, setup in runs]
    tik_wall, hf_wall = rows[0][1], rows[1][1]
    return [
        (name, f"{mb:.1f}", engine, f"{mb / wall:.2f}", f"{tik_wall / wall:.2f}", f"{hf_wall / wall:.2f}", f"{cpu / mb:.3f}")
        for engine, wall, cpu in rows
    ]


def bench_train(text: str, vocab_size: int, repeats: int) -> list[tuple]:
    def hf_train(_):
        tok = tokenizers.Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=["<|endoftext|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator([text], trainer)

    ours = median_seconds(lambda _: Tokenizer.train(text, vocab_size, progress=False), repeats)[0]
    theirs = median_seconds(hf_train, repeats)[0]
    mb = f"{len(text.encode('utf-8')) / 1e6:.1f}"
    return [
        ("HF tokenizers BpeTrainer", mb, f"{theirs:.2f}", "1.00"),
        ("minigpt Tokenizer.train", mb, f"{ours:.2f}", f"{theirs / ours:.2f}"),  # a speed ratio, as the encode table's
    ]


SYNTHETIC_BYTES = 1_000_000  # each made-up training text's size (UTF-8)


def made_up_text(line, seed: int) -> str:
    """Lines from line(rng) until the text holds SYNTHETIC_BYTES."""
    rng, lines, size = random.Random(seed), [], 0
    while size < SYNTHETIC_BYTES:
        lines.append(line(rng) + "\n")
        size += len(lines[-1].encode("utf-8"))
    return "".join(lines)


def training_texts() -> list[tuple[str, str]]:
    """(name, text) of the made-up texts that training is also timed on (the module docstring says why)."""
    hanzi = [chr(0x4E00 + i) for i in range(3000)]
    zipf = [1 / (i + 1) for i in range(3000)]  # a few characters common, most rare, as in real text
    def clause(rng, end: str) -> str:
        return "".join(rng.choices(hanzi, zipf, k=rng.randint(8, 30))) + end
    def cjk(rng, punctuation: bool) -> str:
        return "".join(clause(rng, rng.choice("，。、！？") if punctuation else "") for _ in range(rng.randint(3, 10)))
    latin = "abcdefghijklmnopqrstuvwxyzéàüößçñ"
    def words(rng) -> str:
        line = " ".join("".join(rng.choices(latin, k=rng.randint(2, 12))) for _ in range(rng.randint(5, 20)))
        return line + rng.choice([".", " 12345", " 👍🏽"])
    return [
        ("CJK-like, clauses", made_up_text(lambda rng: cjk(rng, punctuation=True), seed=2)),
        ("CJK-like, long lines", made_up_text(lambda rng: cjk(rng, punctuation=False), seed=2)),
        ("random words", made_up_text(words, seed=1)),
    ]


def bench_load(repeats: int) -> list[tuple]:
    """Milliseconds to load GPT-2's tokenizer files, median of `repeats`, and the speed ratio to HF's."""
    from transformers import GPT2TokenizerFast  # a test dependency, as tiktoken and tokenizers are

    files = (str(GPT2_DIR / "vocab.json"), str(GPT2_DIR / "merges.txt"))
    runs = [
        ("HF tokenizers BPE.from_file", lambda _: tokenizers.Tokenizer(models.BPE.from_file(*files))),
        ("transformers GPT2TokenizerFast.from_pretrained", lambda _: GPT2TokenizerFast.from_pretrained(GPT2_DIR)),
        ("minigpt Tokenizer.from_pretrained", lambda _: Tokenizer.from_pretrained(GPT2_DIR)),
    ]
    ms = [(name, median_seconds(fn, repeats)[0] * 1e3) for name, fn in runs]
    return [(name, f"{t:.0f}", f"{ms[0][1] / t:.2f}") for name, t in ms]


def print_table(header: tuple, rows: list[tuple]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    print(line(header))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print(line(r))


def user_file(value: str) -> Path:
    return Path(user_path(value))  # `--data=~/x` as the shell leaves it


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=user_file, default=DATA / "tinyshakespeare.txt",
                        help=f"the text to encode and train on (default: {DATA}/tinyshakespeare.txt)")
    parser.add_argument("--extra", type=user_file, nargs="*", default=[DATA / "sst2/train.tsv", DATA / "sst2/dev.tsv"],
                        help="files concatenated with --data (repeated) to build the big text (default: SST-2's train.tsv, dev.tsv)")
    parser.add_argument("--big-mb", type=float, default=10.0, help="about how big the concatenation is (MB, default 10): --data and --extra, "
                             "repeated a whole number of times, at least once")
    parser.add_argument("--repeats", type=int, default=5, help="encoding runs per figure, the median is reported (default 5; training: always 3)")
    parser.add_argument("--vocab-size", type=int, default=4096, help="vocabulary the trainers learn (default 4096)")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be ≥ 1, got {args.repeats}")
    if not math.isfinite(args.big_mb):  # (nan, inf: a repeat count no text has)
        parser.error(f"--big-mb must be a finite number of MB, got {args.big_mb}")
    if args.vocab_size < MIN_VOCAB:  # now, not after the whole encode benchmark ran
        parser.error(f"--vocab-size must be ≥ {MIN_VOCAB} (the 256 bytes and <|endoftext|>), got {args.vocab_size}")
    missing = [str(p) for p in [args.data, *args.extra] if not p.is_file()]
    if missing:  # the defaults are this project's shared data folder, absent on other machines
        parser.error(f"no such file: {', '.join(missing)} (name the texts with --data and --extra; a bare --extra "
                     "uses --data alone. Tiny Shakespeare is char-rnn's input.txt, SST-2 GLUE's: README.md says where to get them)")

    small = args.data.read_text(encoding="utf-8")
    if not small:  # every MB/s would divide by 0
        parser.error(f"--data {args.data} is empty: the benchmark needs a text to encode")
    mixed = "".join(p.read_text(encoding="utf-8") for p in [args.data, *args.extra])
    big = mixed * max(1, round(args.big_mb * 1e6 / len(mixed.encode("utf-8"))))
    tik, hf = engines()
    print(f"encode speed (MB/s, median of {args.repeats}), {available_cpus()} cpus, load average {load_average()}\n")
    rows = bench_encode(args.data.name, small, args.repeats, tik, hf) + bench_encode("concatenation", big, args.repeats, tik, hf)
    print_table(("text", "MB", "engine", "MB/s", "× tiktoken", "× HF tokenizers", "CPU s/MB"), rows)
    print(f"\ntraining a {args.vocab_size}-token vocabulary (s, median of 3)\n")
    train_rows = [(name, *row) for name, text in [(args.data.name, small), *training_texts()]
                  for row in bench_train(text, args.vocab_size, 3)]
    print_table(("text", "trainer", "MB", "seconds", "× HF"), train_rows)
    print(f"\nloading GPT-2's tokenizer (vocab.json + merges.txt; ms, median of {args.repeats})\n")
    print_table(("engine", "ms", "× HF tokenizers"), bench_load(args.repeats))
    print(f"\nload average at the end: {load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
