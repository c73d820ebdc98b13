"""`minigpt bench NAME [ARGS]`: run `scripts/bench_NAME.py` from a source checkout.

Benchmarks are scripts, not library code: each prints a table with a reference (transformers,
tiktoken, ...) measured in the same run. This command only finds and runs them.
"""
from __future__ import annotations

import runpy
import sys
from pathlib import Path

from minigpt.config import _PACKAGED

# The checkout's scripts/, beside the package. An installed package (its checkpoints inside it,
# config.py's _PACKAGED) has none: site-packages/scripts would be another distribution's folder.
SCRIPTS = None if _PACKAGED.is_dir() else Path(__file__).resolve().parent.parent / "scripts"


# What the benchmarks import beside minigpt: their references (transformers, tiktoken, tokenizers) and
# triton, all in the `test` extra.
ORACLES = ("transformers", "tiktoken", "tokenizers", "triton")


def available() -> list[str]:
    return sorted(p.stem.removeprefix("bench_") for p in SCRIPTS.glob("bench_*.py"))


def main(argv: list[str] | None = None) -> int:
    from minigpt.cli import FAILED, prog

    argv = sys.argv[1:] if argv is None else argv
    usage = f"usage: {prog('bench')} NAME [--help | ARGS...]"
    if SCRIPTS is None or not SCRIPTS.is_dir():
        where = "an installed package has none" if SCRIPTS is None else f"none at {SCRIPTS}"
        note = f"benchmarks are the scripts/bench_*.py of a source checkout ({where})"
        if not argv or argv[0] in ("-h", "--help"):
            print(f"{usage}\n\n{note}")
            return 0
        print(f"{prog('bench')}: error: {note}", file=sys.stderr)
        return FAILED
    names = available()
    if not argv or argv[0] in ("-h", "--help"):
        print(f"{usage}\n\nbenchmarks: " + ", ".join(names))
        return 0
    name, rest = argv[0], argv[1:]
    if name not in names:
        print(f"{prog('bench')}: error: unknown benchmark {name!r}; choose one of {names}", file=sys.stderr)
        return FAILED
    script, who, argv_before = SCRIPTS / f"bench_{name}.py", f"{prog('bench')} {name}", sys.argv
    sys.argv = [str(script), *rest]  # the script's argparse reads them (and names itself from argv[0])
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as e:  # the script's own exit status
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except ModuleNotFoundError as e:
        if e.name not in ORACLES:
            raise  # a module of minigpt's own missing is a bug: its traceback says where
        print(f"{who}: error: needs {e.name}, of the test extra: pip install -e '.[test]'", file=sys.stderr)
        return FAILED
    finally:
        sys.argv = argv_before
    return 0
