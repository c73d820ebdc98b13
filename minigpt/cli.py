"""`minigpt COMMAND ...`: one entry point in front of each module's own `main(argv)`.

Each command lives beside the code it drives (e.g. `minigpt generate` is `minigpt.generate_cli.main`,
in front of minigpt/generation.py), and is imported only when used. `import minigpt` imports no
torch until a model's name is used (minigpt/__init__.py), so `minigpt --help`, `--version`,
`tokenize`, `prepare` and `download` never wait for it (a command that runs a model imports torch first,
even for its own --help).
"""
from __future__ import annotations

import errno
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


# How a command ends, as a shell reports it (README, "Exit codes"): 0 done; 2 a failure said in one
# line (bad usage or input, a missing file, the network, a full disk); 1 a crash with a traceback,
# a bug; 128 + N on signal N (130 Ctrl-C, 143 SIGTERM). A reader of stdout that left stops the
# command with 141, 128 + SIGPIPE (13): what a C tool killed by SIGPIPE gives (`yes | head`), so a
# `set -o pipefail` script sees minigpt's pipes end as it sees theirs.
FAILED = 2
READER_LEFT = 128 + 13


class ReaderLeft(BaseException):
    """A write to standard output whose reader has gone: a closed pipe (`minigpt ... | head -1`), or
    a hung-up terminal. A BaseException, as KeyboardInterrupt is, so that no command's `except
    OSError` takes it for an error to report: the command stops, and `main` ends it quietly."""


class StdoutError(OSError):
    """Standard output could not be written (`> /dev/full`, a full disk). Its message says so: the
    system's "[Errno 28] No space left on device" alone sends a user to check the disk of --out."""


def reader_gone(error: OSError) -> bool:
    """Whether a write failed as its reader went: a closed pipe, a hung-up terminal (EIO), or a
    stream the shell closed (`2>&-`: EBADF, where Python did not make it None); not a full disk,
    which is an error to report."""
    return isinstance(error, BrokenPipeError) or error.errno in (errno.EIO, errno.EBADF)


class Guarded:
    """sys.stdout or sys.stderr while a command runs, whose failed write is told apart:
    - its reader gone (`reader_gone`): the rest goes to devnull, so that neither a later write nor
      Python's flush at exit fails again. On stdout the command stops (ReaderLeft: exit 141), unless
      it `outlives` its reader (train and finetune, which train and save on: train_runtime's
      `reader_may_leave`). On stderr nothing stops: only messages were lost (`2>&1 | head -1`).
    - anything else (a full disk): on stdout a StdoutError that says it was standard output, the
      rest to devnull too; one that `outlives` its stdout keeps it (`lost`) for the end of its work
      instead, which then reports it. On stderr, as a reader gone: a message that cannot be written
      cannot say why either, and the command's work and exit code stand."""

    def __init__(self, stream, name: str, outlives: bool = False) -> None:
        self.stream, self.name, self.outlives = stream, name, outlives
        self.lost: StdoutError | None = None

    def write(self, text: str) -> int:
        try:
            return self.stream.write(text)
        except OSError as e:
            self.failed(e)
            return len(text)

    def flush(self) -> None:
        try:
            self.stream.flush()
        except OSError as e:
            self.failed(e)

    def failed(self, error: OSError) -> None:
        stdout_to_devnull(self.stream.fileno())
        if self.name == "stderr":
            return
        if not reader_gone(error):
            self.lost = StdoutError(f"cannot write standard output: {error}")
            if not self.outlives:
                raise self.lost from error
        if not self.outlives:
            raise ReaderLeft()

    def __getattr__(self, name):  # fileno, isatty, encoding, ...: the stream's own
        return getattr(self.stream, name)


def guarded(stream, name: str, outlives: bool = False) -> Guarded:
    """`stream` (sys.stdout or sys.stderr) as a Guarded, a Guarded one's own stream rewrapped; a
    stream the shell closed (`>&-`, `2>&-`) is devnull, as a reader gone: Python makes it None, or
    (some launchers) keeps a stream on the closed descriptor."""
    stream = stream.stream if isinstance(stream, Guarded) else stream
    return Guarded(open(os.devnull, "w") if stream is None or closed(stream) else stream, name, outlives)


def closed(stream) -> bool:
    """Whether `stream` writes to a file descriptor that is closed. One without a descriptor (a
    notebook's, pytest's capture: fileno raises io.UnsupportedOperation) is not."""
    try:
        os.fstat(stream.fileno())
    except (AttributeError, ValueError):  # no descriptor (io.UnsupportedOperation is a ValueError), or closed in Python
        return False
    except OSError:
        return True
    return False


def main(argv: list[str] | None = None) -> int:
    """Run one command and return its exit code (`FAILED`, `READER_LEFT`); a reader that stops early
    (`minigpt --help | head -1`) ends it quietly.

    Python ignores SIGPIPE, so writing to a pipe nobody reads raises BrokenPipeError: in the
    middle of a command, or at exit when Python flushes stdout. The Python docs' recipe (signal
    module, "Note on SIGPIPE") is to catch it; it is done once here (`Guarded`), instead of in every
    command: a closed stdout stops the command (exit 141), a closed stderr stops nothing (only its
    messages are lost), and a BrokenPipeError of a socket is no reader gone."""
    argv = sys.argv[1:] if argv is None else argv
    utf8_when_redirected()
    streams = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = guarded(sys.stdout, "stdout"), guarded(sys.stderr, "stderr")
    try:
        try:
            return run_command(argv)
        finally:
            sys.stdout.flush()  # so a failed write shows up here, not as a traceback at exit
    except ReaderLeft:
        return READER_LEFT
    except StdoutError as e:  # met where the command does not catch an OSError (its last print, most often)
        command = argv[0] if argv and argv[0] in COMMANDS else ""
        print(f"{prog(command)}: error: {e}", file=sys.stderr)
        return FAILED
    finally:
        sys.stdout, sys.stderr = streams


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
        print(f"{prog('')}: error: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return FAILED
    module = importlib.import_module(COMMANDS[name][0])
    with warnings_as_lines(name):
        try:
            return module.main(rest) or 0
        except Exception as e:
            if (message := no_cxx_compiler(e)) is None:
                raise
            print(f"{prog(name)}: error: {message}", file=sys.stderr)
            return FAILED


def no_cxx_compiler(error: BaseException) -> str | None:
    """The one line for --compile without a working C++ compiler, or None for any other error.

    Inductor, torch.compile's code generator, writes a CPU model's kernels in C++ and builds them
    with $CXX, or torch's default (`tried_cxx`). Without one, the first compiled call failed with a
    100-line traceback ending in an InductorError caused by InvalidCxxCompiler; with one that runs
    but cannot build them (most often: Python's headers are not installed, and the kernels' glue
    includes Python.h), by CppCompileError. The cause is found by its class name along the chain
    of causes: naming the class would import torch._inductor, a private module and a slow import,
    into every command."""
    seen = set()
    while error is not None and id(error) not in seen:  # (a chain may loop back on itself)
        if type(error).__name__ == "InvalidCxxCompiler":
            return (f"--compile needs a working C++ compiler to build its CPU kernels, and {tried_cxx()} does not run: "
                    "install one (e.g. g++) or point $CXX at it, or drop --compile")
        if type(error).__name__ == "CppCompileError":
            said = compiler_error(str(getattr(error, "output", "")))
            missing = re.search(r"Python\.h.*(No such file|not found)", said)
            headers = " (Python.h is in Python's headers: install them, e.g. python3-dev on Debian or Ubuntu)" if missing else ""
            return (f"--compile needs a working C++ compiler to build its CPU kernels, and {tried_cxx()} failed to build "
                    f"them: {said}{headers}; fix its setup or point $CXX at another, or drop --compile")
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def compiler_error(output: str) -> str:
    """The line of a C++ compiler's output that says why it failed: its first error, from the word
    "error" on (the file and line before it name Inductor's temporary file), else its last line.
    A linker's closing line ("collect2: error: ld returned 1", clang's "linker command failed")
    says only that it failed: the line that names what was missing is taken instead, else the
    line before it."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for i, line in enumerate(lines):
        # (MSVC numbers its errors, C1083 or LNK2019; g++ may fail inside itself: "internal compiler error")
        if found := re.search(r"\b((fatal|internal compiler) )?error\b( [A-Z]+\d+)?:", line):
            if re.search(r"ld returned|linker command failed", line):
                missing = [j for j, seen in enumerate(lines) if re.search(LINKER_MISSING, seen)]
                if missing:  # (ld64 names the symbols on the lines after "Undefined symbols ...:")
                    j = missing[0]
                    return lines[j] + (f" {lines[j + 1]}" if lines[j].endswith(":") and j + 1 < i else "")
                return lines[i - 1] if i else line
            return line[found.start():]
    return lines[-1] if lines else "it said nothing"


# What a linker says it could not find: GNU ld, ld64 (macOS), and their libraries.
LINKER_MISSING = r"undefined reference|Undefined symbols|cannot find|library not found|unresolved external"


def tried_cxx() -> str:
    """The C++ compiler Inductor tried, in words. Its config's `cpp.cxx` names it ($CXX, read when the
    config loaded, or torch's default: g++, but clang++ on macOS); the config is loaded by the time
    Inductor fails, and looked up, not imported. Where it is not, or names no one plain compiler,
    the words say what torch's default is on each platform."""
    cxx = os.environ.get("CXX")
    config = sys.modules.get("torch._inductor.config")
    chosen = getattr(getattr(config, "cpp", None), "cxx", None)  # (None, "g++"): the None is a conda download's
    names = [c for c in (chosen if isinstance(chosen, (tuple, list)) else [chosen]) if isinstance(c, str)]
    if cxx and (names == [cxx] or len(names) != 1):
        return f"$CXX ({cxx})"
    if len(names) != 1:
        return "the default C++ compiler (g++; clang++ on macOS; $CXX names another)"
    return f"{names[0]} (torch's default; $CXX names another)"


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
    # `python -m minigpt.cli` runs this file as __main__, a second copy of the module: its main
    # would raise its own ReaderLeft, which minigpt.train_runtime (importing minigpt.cli) could
    # not catch. So the package's copy runs, the one every other module imports.
    from minigpt.cli import main as package_main

    sys.exit(package_main())
