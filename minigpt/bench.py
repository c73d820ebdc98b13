"""`minigpt bench NAME [ARGS]`: run `scripts/bench_NAME.py` from a source checkout.

Benchmarks are scripts, not library code: each prints a table with a reference (transformers,
tiktoken, ...) measured in the same run. This command only finds and runs them.
"""
from __future__ import annotations

import runpy
import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def available() -> list[str]:
    return sorted(p.stem.removeprefix("bench_") for p in SCRIPTS.glob("bench_*.py"))


def main(argv: list[str] | None = None) -> int:
    from minigpt.cli import prog

    argv = sys.argv[1:] if argv is None else argv
    if not SCRIPTS.is_dir():
        print(f"{prog('bench')}: no scripts/ folder at {SCRIPTS}; benchmarks run from a source checkout", file=sys.stderr)
        return 2
    names = available()
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: {prog('bench')} NAME [--help | ARGS...]\n\nbenchmarks: " + ", ".join(names))
        return 0
    name, rest = argv[0], argv[1:]
    if name not in names:
        print(f"{prog('bench')}: unknown benchmark {name!r}; choose one of {names}", file=sys.stderr)
        return 2
    script = SCRIPTS / f"bench_{name}.py"
    sys.argv = [str(script), *rest]
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as e:  # the script's own exit status
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return 0
