"""`minigpt COMMAND ...`: one entry point in front of each module's own `main(argv)`.

Each command lives beside the code it drives (e.g. `minigpt generate` is `minigpt.generate_cli.main`,
in front of minigpt/generation.py), and is imported only when used. `import minigpt` imports no
torch until a model's name is used (minigpt/__init__.py), so `minigpt --help`, `--version`,
`tokenize`, `prepare` and `download` never wait for it (a command that runs a model imports torch first,
even for its own --help).
"""
from __future__ import annotations

import importlib
import os
import re
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from minigpt.files import stdout_to_devnull

COMMANDS = {
    "generate": ("minigpt.generate_cli", "generate text from a prompt (default model: checkpoints/shakespeare)"),
    "train": ("minigpt.pretrain", "pretrain a GPT on prepared token files"),
    "finetune": ("minigpt.finetune", "fine-tune a model: frozen, partial, full or LoRA"),
    "prepare": ("minigpt.data", "tokenize text files into train.bin / val.bin"),
    "tokenize": ("minigpt.tokenizer_cli", "encode text and show BPE's work, or train a tokenizer"),
    "eval": ("minigpt.evaluate", "perplexity of a language model on a text file, or a classifier's accuracy on a labelled TSV"),
    "bench": ("minigpt.bench", "run a benchmark script from scripts/"),
    "download": ("minigpt.download", "download GPT-2 weights from the Hugging Face Hub"),
}


def in_flags(message: str, names: Sequence[str]) -> str:
    """A library function's message in a command's words: each argument name of `names` (those the
    command's flags set: generate_cli's FLAG_ARGS, evaluate's) becomes its flag, and `name=value`
    becomes `--flag value`, as typed: "min_new_tokens must be in [0, max_new_tokens=2]" →
    "--min-new-tokens must be in [0, --max-new-tokens 2]". Whole names only: "stop" in "--stop" or
    "stopping" stays."""
    pattern = r"(?<![\w.-])(" + "|".join(names) + r")(?!\w)(=?)"
    return re.sub(pattern, lambda m: "--" + m[1].replace("_", "-") + " " * bool(m[2]), message)


@contextmanager
def flag_words(names: Sequence[str]) -> Iterator[None]:
    """Pass on the value errors of the library calls inside `in_flags` (the same error, its message
    renamed). Only around such calls: a file name or a message of the command's own ("at
    temperature 1") holds no argument name to rename."""
    try:
        yield
    except (ValueError, FloatingPointError) as e:
        e.args = (in_flags(str(e), names),)
        raise


def prog(command: str) -> str:
    """The name a command's usage and error lines give it: the way the user ran it, as argparse
    names a script. `minigpt train`, `python -m minigpt train`, or `train.py` for
    `python scripts/train.py` (a script's path is sys.argv[0]; Python code that calls a command's
    `main(argv)`, the tests' too, gets `minigpt train`)."""
    script = Path(sys.argv[0]).absolute()  # `python train.py` run inside scripts/ too
    if script.name == "__main__.py" and script.parent.name == "minigpt":
        return f"python -m minigpt {command}".rstrip()
    if script.suffix == ".py" and script.parent.name == "scripts":
        return script.name
    return f"minigpt {command}".rstrip()


def usage() -> str:
    lines = [f"usage: {prog('COMMAND')} [--help] [--version] ...", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run one command; a reader that stops early (`minigpt --help | head -1`) ends it quietly.

    Python ignores SIGPIPE, so writing to a pipe nobody reads raises BrokenPipeError: in the
    middle of a command, or at exit when Python flushes stdout. This is the Python docs' recipe
    (signal module, "Note on SIGPIPE"), once here instead of in every command.
    """
    utf8_when_redirected()
    try:
        try:
            return run_command(sys.argv[1:] if argv is None else argv)
        finally:
            sys.stdout.flush()  # so a closed pipe shows up here, not as a traceback at exit
    except BrokenPipeError:
        stdout_to_devnull(sys.stdout.fileno())  # Python flushes stdout again on exit
        return 1  # as Python itself exits on EPIPE


def utf8_when_redirected() -> None:
    """Write UTF-8 to a file or pipe, whatever the locale, and never die on a character the output
    cannot hold.

    Generated text is any Unicode, and Python encodes a redirected stdout in the locale's encoding:
    on Windows a code page such as cp1252, where `minigpt generate > out.txt` would fail on the first
    character outside it. So a file or pipe gets UTF-8, with an error handler for what even UTF-8
    cannot encode: lone surrogates, which is how Python holds the bytes of a path (argv, a file
    name) that the locale could not decode ("é" under LC_ALL=C is "\\udcc3\\udca9").
    - stdout: surrogateescape writes those bytes back as they were, so a path printed is the
      path (`wrote ... to dir é`), as a script reading the output needs it.
    - stderr: backslashreplace, Python's own choice for stderr (`reconfigure(encoding=...)` alone
      would reset it to strict): an error message always gets out, its path escaped if need be.
    A terminal keeps its own encoding (it decodes what it gets in it); one that is not UTF-8 (an
    ASCII terminal under LC_ALL=C) gets backslashreplace, so `minigpt tokenize "hello world"`
    prints its token 'Ġworld' as '\\u0120world' instead of a UnicodeEncodeError. PYTHONIOENCODING,
    when set, is the user's choice and is left alone."""
    if os.environ.get("PYTHONIOENCODING"):
        return
    for stream, errors in ((sys.stdout, "surrogateescape"), (sys.stderr, "backslashreplace")):
        if not hasattr(stream, "reconfigure"):  # replaced by something that is not a text file (a test's)
            continue
        if not stream.isatty():
            stream.reconfigure(encoding="utf-8", errors=errors)
        elif stream.encoding.lower() not in ("utf-8", "utf8"):
            stream.reconfigure(errors="backslashreplace")


def run_command(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if argv[0] == "--version":  # which minigpt this is (PyPI's "minigpt" is another project)
        import minigpt

        print(f"minigpt {minigpt.__version__} ({Path(minigpt.__file__).parent})")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"{prog('')}: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    with warnings_as_lines(name):
        return module.main(rest) or 0


@contextmanager
def warnings_as_lines(command: str) -> Iterator[None]:
    """A warning as one line in the command's words, `minigpt generate: warning: ...`, as its errors
    are. Python's own shows a file and line of code: for a warning aimed at the caller's line
    (`caller_stacklevel`), the console script's `sys.exit(main())`, which tells a user nothing."""
    def show(message, category, filename, lineno, file=None, line=None) -> None:
        kind = "" if category is UserWarning else f" ({category.__name__})"  # e.g. torch's FutureWarning
        print(f"{prog(command)}: warning: {message}{kind}", file=file or sys.stderr)

    shown, warnings.showwarning = warnings.showwarning, show
    try:
        yield
    finally:
        warnings.showwarning = shown


if __name__ == "__main__":
    sys.exit(main())
