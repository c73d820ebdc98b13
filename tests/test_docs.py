"""README.md and BENCHMARKS.md stay true to the code: the names the tour of the code points at are
defined where it says, every flag the docs type exists on the command they type it on, and a
`--help` line's "(default: X)" is the flag's default."""
from __future__ import annotations

import argparse
import importlib
import inspect
import re
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

import pytest

from minigpt.cli import COMMANDS, usage

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
DOCS = {name: (ROOT / name).read_text(encoding="utf-8") for name in ("README.md", "BENCHMARKS.md")}
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
OTHER_TOOLS_FLAGS = {"--index-url", "--force-reinstall", "--no-deps", "--config-settings", "--nproc", "--shutdown-timeout", "--monitor-interval", "--dist", "--deselect"}  # pip's, torchrun's and pytest's, in commands beside minigpt's


def module_of(path: str) -> str:
    return path.removesuffix(".py").replace("/", ".")


def resolve(module: str, dotted: str):
    """The object `module.dotted` names, or None."""
    obj = importlib.import_module(module)
    for part in dotted.split("."):
        obj = getattr(obj, part, None)
    return obj


def tour_references() -> list[tuple[str, str, list[str]]]:
    """(file, name, the row's files) for each `name` the tour's "where" column cites after a file."""
    tour = README.split("## A tour of the code")[1].split("\n## ")[0]
    refs = []
    for row in (line for line in tour.splitlines() if line.startswith("| ") and "`minigpt/" in line):
        where = row.rsplit(" | ", 1)[1]
        files = re.findall(r"`(minigpt/[\w/]+\.py)`", where)
        for m in re.finditer(r"`(minigpt/[\w/]+\.py)`(.*?)(?=`minigpt/[\w/]+\.py`|$)", where):
            refs += [(m.group(1), name, files) for name in re.findall(r"`([A-Za-z_][\w.]*)`", m.group(2))]
    return refs


def test_the_tour_of_the_code_names_what_each_file_defines():
    """Each `name` cited after `minigpt/file.py` is defined there (not just imported), or, in the
    parentheses that point elsewhere ("what `apply_strategy` refuses"), in another file of the row or
    minigpt's top level; an attribute or argument (`wte`, `logits_to_keep`) is in the file. A method
    (`Tokenizer.encode_batch`) is where its class is defined, not in a file whose function it calls."""
    refs = tour_references()
    assert len(refs) > 100, f"the tour's table was not found or not parsed: {len(refs)} names"
    wrong = []
    for path, name, row_files in refs:
        assert (ROOT / path).is_file(), f"the tour names {path}, which does not exist"
        source = (ROOT / path).read_text(encoding="utf-8")
        obj = resolve(module_of(path), name)
        if obj is not None:
            defined_in = getattr(obj, "__module__", None)
            if (inspect.isfunction(obj) or inspect.isclass(obj)) and defined_in != module_of(path):
                wrong.append(f"{path}: {name} is imported there, defined in {defined_in}")
            continue
        if "." in name and not name.startswith("minigpt."):  # a method is its class's file's, not a caller's
            wrong.append(f"{path}: {name} is not defined there")
            continue
        elsewhere = [m for m in [*map(module_of, row_files), "minigpt"] if resolve(m, name) is not None]
        if not elsewhere and not re.search(rf"\b{re.escape(name.split('.')[-1])}\b", source):
            wrong.append(f"{path}: {name} is not there")
    assert not wrong, "README's tour points at names that moved:\n" + "\n".join(wrong)


def command_help(command: str) -> str:
    out = StringIO()
    with redirect_stdout(out), pytest.raises(SystemExit):
        importlib.import_module(COMMANDS[command][0]).main(["--help"])
    return out.getvalue()


@pytest.fixture(scope="module")
def flags() -> dict[str, set[str]]:
    """The flags of each `minigpt` command and of each scripts/*.py (its own, and the command's it runs)."""
    found = {f"minigpt {name}": set(FLAG.findall(command_help(name))) for name in COMMANDS if name != "bench"}
    found["minigpt"] = set(FLAG.findall(usage()))  # the command's own: --help, --version
    commands_by_module = {module: name for name, (module, _) in COMMANDS.items()}
    for script in (ROOT / "scripts").glob("*.py"):
        source = script.read_text(encoding="utf-8")
        own = set(re.findall(r"add_argument\(\s*\"(--[\w-]+)\"", source))
        for module in re.findall(r"from (minigpt\.\w+) import (?:main|train_main)\b", source):
            own |= found[f"minigpt {commands_by_module[module]}"]
        found[f"scripts/{script.name}"] = own
    return found


def typed_commands(text: str) -> list[tuple[str, str]]:
    """(command, its arguments) for each `minigpt CMD ...` or `scripts/NAME.py ...` in code blocks
    (a line, with its backslash continuations, comments cut; fenced or indented) and in inline `code` spans."""
    blocks = re.findall(r"```[^\n]*\n(.*?)```", text, re.S)
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    blocks += re.findall(r"^    (\S.*)$", prose, re.M)  # an indented code block's lines
    lines = [line.split(" #")[0] for block in blocks for line in block.replace("\\\n", " ").splitlines()]
    spans = re.findall(r"`([^`\n]+(?:\n[^`\n]+)?)`", prose)
    head = re.compile(r"(minigpt (?:%s)\b|scripts/\w+\.py)(.*)" % "|".join(COMMANDS), re.S)
    return [m.groups() for m in map(head.search, lines + spans) if m]


@pytest.mark.parametrize("doc", DOCS)
def test_every_flag_the_docs_type_exists_on_that_command(doc, flags):
    typed = typed_commands(DOCS[doc])
    assert len(typed) > 10, f"too few commands found in {doc}: {typed}"
    wrong = []
    for command, args in typed:
        args, _, passed_on = args.partition(" -- ")  # compare_strategies.py passes these to `minigpt finetune`
        for command, args in [(command, args), ("minigpt finetune", passed_on)]:
            wrong += [f"{command}: {flag}" for flag in FLAG.findall(args) if flag not in flags[command] | OTHER_TOOLS_FLAGS]
    everywhere = set().union(*flags.values()) | OTHER_TOOLS_FLAGS
    wrong += [f"{flag} (in the text): no command has it" for flag in sorted(set(FLAG.findall(DOCS[doc])) - everywhere)]
    assert not wrong, f"{doc} names flags its commands do not have:\n" + "\n".join(wrong)


@pytest.mark.parametrize("command", [name for name in COMMANDS if name != "bench"])
def test_a_help_line_default_is_the_flag_default(command, monkeypatch):
    """A hand-written "(default: 200)" changes with `default=200`. Defaults in words ("the model's
    n_positions") and those of None (worked out later: the help says how) are not compared."""
    def capture(parser, *args, **kwargs):
        raise _Parser(parser)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", capture)
    with pytest.raises(_Parser) as got:
        importlib.import_module(COMMANDS[command][0]).main([])
    wrong = []
    for action in got.value.args[0]._actions:
        said = re.search(r"\(default:? ([^\s);]+)\)", action.help or "")  # a value, not words
        if said and action.default not in (None, argparse.SUPPRESS) and said.group(1) != str(action.default):
            wrong.append(f"{action.option_strings}: help says {said.group(1)!r}, the default is {action.default!r}")
    assert not wrong, "\n".join(wrong)


class _Parser(Exception):
    """Carries a command's parser out of its main, which builds it and parses at once."""


def test_every_name_the_docs_import_from_minigpt_is_a_public_name():
    """An audit: README told readers to take stream_text from `minigpt.text_generation` (`from minigpt
    import stream_text` was an ImportError) though the other text functions came from minigpt. Each
    `from minigpt import ...` the docs write, in code or in prose, names something in minigpt.__all__."""
    import minigpt

    imported = {name.strip() for doc in DOCS.values()
                for names in re.findall(r"^from minigpt import ([\w, ]+)$|`from minigpt import ([\w, ]+)`", doc, re.M)
                for name in ",".join(names).split(",") if name.strip()}
    assert {"GPT", "Tokenizer", "stream", "stream_text"} <= imported, f"the imports were not found: {imported}"
    assert imported <= set(minigpt.__all__), f"not importable from minigpt: {imported - set(minigpt.__all__)}"
