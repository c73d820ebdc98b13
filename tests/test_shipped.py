"""The small Shakespeare model shipped in checkpoints/shakespeare works out of the box."""
import os
import subprocess
import sys
from pathlib import Path

import torch

import minigpt
from minigpt import GPT, Tokenizer

SHIPPED = Path(__file__).resolve().parent.parent / "checkpoints" / "shakespeare"


def test_shipped_files_are_complete():
    for name in ("config.json", "model.safetensors", "vocab.json", "merges.txt", "log.jsonl", "loss.png"):
        assert (SHIPPED / name).is_file(), f"checkpoints/shakespeare/{name} is missing"
    size = sum(f.stat().st_size for f in SHIPPED.iterdir())
    assert size < 12e6, f"the shipped checkpoint should stay a few MB, it is {size / 1e6:.1f} MB"


def test_minigpt_generate_cli_produces_text(tmp_path):
    # The README's second command, run as a user would: no --model, so the shipped default is used.
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "minigpt.cli", "generate", "--prompt", "ROMEO:", "--max-new-tokens", "20", "--seed", "0"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ROMEO:"), out.stdout
    assert len(out.stdout.strip()) > len("ROMEO:") + 10, f"too little text came back: {out.stdout!r}"


def test_shipped_checkpoint_matches_transformers():
    import transformers  # a test dependency: missing, this must fail, not skip
    ours = GPT.from_pretrained(SHIPPED, dtype=torch.float32)
    hf = transformers.GPT2LMHeadModel.from_pretrained(SHIPPED, dtype=torch.float32).eval()
    tok = Tokenizer.from_pretrained(SHIPPED)
    ids = torch.tensor([tok.encode("First Citizen:\nBefore we proceed any further, hear me speak.\n")])
    with torch.no_grad():
        a, _ = ours(ids)
        b = hf(ids).logits
    diff = (a - b).abs().max().item()
    print(f"shipped checkpoint: max |logits Δ| vs transformers = {diff:.2e}")
    assert diff <= 5e-5  # measured 8.6e-6 (its logits reach ~14)


def test_shipped_tokenizer_round_trips():
    tok = Tokenizer.from_pretrained(SHIPPED)
    assert tok.vocab_size == 4096
    for text in ["ROMEO:\nBut, soft! what light through yonder window breaks?", "  odd  spacing\t\n\n", "naïve café — ünïcödé 🙂"]:
        assert tok.decode(tok.encode(text)) == text
    assert tok.eos_token_id == GPT.from_pretrained(SHIPPED).config.eos_token_id


def test_shipped_tokenizer_files_are_what_save_pretrained_writes_now(tmp_path):
    """A docs audit: the shipped tokenizer_config.json predated pad_token and model_max_length, so
    truncation=True was refused and transformers could not pad, unlike a checkpoint trained now."""
    tok = Tokenizer.from_pretrained(SHIPPED)
    assert tok.model_max_length == GPT.from_pretrained(SHIPPED).config.n_positions
    tok.save_pretrained(tmp_path)
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        assert (tmp_path / name).read_bytes() == (SHIPPED / name).read_bytes(), name


def test_readme_paths_to_the_shipped_checkpoints_work_from_any_directory(tmp_path, monkeypatch):
    """README names the shipped checkpoints checkpoints/shakespeare and checkpoints/gpt2; where no
    such path is in the working directory (an installed minigpt, elsewhere), they are the package's
    own, for the loaders and for train's and finetune's --init and --tokenizer."""
    from minigpt.config import CHECKPOINTS
    from minigpt.finetune_config import FinetuneConfig

    monkeypatch.chdir(tmp_path)
    assert GPT.from_pretrained("checkpoints/shakespeare").config.n_layer == 4
    assert Tokenizer.from_pretrained("checkpoints/gpt2").encode("Hello world") == [15496, 995]
    cfg = FinetuneConfig(init="checkpoints/shakespeare", tokenizer="checkpoints/gpt2", data="a.txt")
    assert (cfg.init, cfg.tokenizer) == (str(CHECKPOINTS / "shakespeare"), str(CHECKPOINTS / "gpt2"))
    (tmp_path / "checkpoints" / "shakespeare").mkdir(parents=True)  # one of the user's own: theirs
    assert FinetuneConfig(init="checkpoints/shakespeare", data="a.txt").init == str(tmp_path / "checkpoints" / "shakespeare")


def test_a_wheel_runs_without_the_checkout(tmp_path):
    """`pip install .` (not -e) gives a package that finds its shipped checkpoints inside itself,
    and sends GPT-2 downloads to a user cache, not into site-packages. A wheel of pure Python is a
    zip: unpacked onto PYTHONPATH, it is what pip would install; run from elsewhere, the checkout's
    checkpoints/ cannot be what it finds."""
    import shutil
    import zipfile

    # Built from a copy of what the wheel is made of: setuptools writes build/ beside pyproject.toml.
    repo, src = Path(__file__).resolve().parent.parent, tmp_path / "src"
    for part in ("pyproject.toml", "README.md", "LICENSE", *(f"checkpoints/gpt2/{f}" for f in
                                                            ("LICENSE", "vocab.json", "merges.txt", "tokenizer_config.json"))):
        (src / part).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(repo / part, src / part)
    for part in ("minigpt", "checkpoints/shakespeare"):
        shutil.copytree(repo / part, src / part, ignore=shutil.ignore_patterns("__pycache__"))
    (src / "checkpoints/shakespeare/model.safetensors.partial").write_bytes(b"left by a stopped copy")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                            "-w", str(tmp_path / "wheel"), str(src)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    (wheel,) = (tmp_path / "wheel").glob("minigpt-*.whl")
    zipfile.ZipFile(wheel).extractall(tmp_path / "site")
    # The shipped files, listed in pyproject.toml; not whatever else lies in the folder (a packaging
    # audit: a stray model.safetensors.partial went into the wheel).
    shipped = {p.name for p in (tmp_path / "site" / "minigpt" / "checkpoints" / "shakespeare").iterdir()}
    assert shipped - {"__init__.py"} == {p.name for p in SHIPPED.iterdir() if not p.name.endswith(".partial")}
    assert "model.safetensors.partial" not in shipped
    # Its license as an SPDX expression, with minigpt's text and OpenAI's for GPT-2's files (a
    # packager's audit: a TOML table, which setuptools deprecates, and no text of minigpt's own).
    (info,) = (tmp_path / "site").glob("minigpt-*.dist-info")
    assert "License-Expression: MIT" in (info / "METADATA").read_text()
    assert f"\nVersion: {minigpt.__version__}\n" in (info / "METADATA").read_text()  # pyproject reads it from there
    assert (info / "licenses" / "LICENSE").is_file() and (info / "licenses" / "checkpoints" / "gpt2" / "LICENSE").is_file()
    (tmp_path / "cwd").mkdir()
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site"), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    check = ("import minigpt, minigpt.config as c; from minigpt import Tokenizer; "
             "t = Tokenizer.from_pretrained('gpt2'); "
             "print(minigpt.__file__, c.CHECKPOINTS, c.DOWNLOADS, t.model_max_length, t.encode('Hello world'))")
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=300, cwd=tmp_path / "cwd", env=env)
    assert out.returncode == 0, out.stderr
    site = tmp_path / "site" / "minigpt"
    assert out.stdout.split() == [str(site / "__init__.py"), str(site / "checkpoints"),
                                  str(tmp_path / "cache" / "minigpt"), "1024", "[15496,", "995]"]
    cmd = [sys.executable, "-m", "minigpt", "generate", "--prompt", "ROMEO:", "--max-new-tokens", "5", "--seed", "0"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path / "cwd", env=env)
    assert out.returncode == 0, out.stderr  # the default model, checkpoints/shakespeare, found in the package
    assert out.stdout.startswith("ROMEO:"), out.stdout
    # README's commands name the shipped checkpoints as checkpoints/...: an installed package takes
    # them for its own where no such path is here (a packager's audit: "does not exist").
    (tmp_path / "cwd" / "a.txt").write_text("To be, or not to be: that is the question.\n" * 40)
    for cmd in (["generate", "--model", "checkpoints/shakespeare", "--prompt", "ROMEO:", "--max-new-tokens", "2"],
                ["prepare", "a.txt", "--tokenizer", "checkpoints/gpt2", "--out", "data"],
                ["eval", "checkpoints/shakespeare", "a.txt"]):
        out = subprocess.run([sys.executable, "-m", "minigpt", *cmd], capture_output=True, text=True, timeout=300,
                             cwd=tmp_path / "cwd", env=env)
        assert out.returncode == 0, (cmd, out.stderr)
    # checkpoints/gpt2 is the package's tokenizer only: GPT-2's weights go to the user cache, never
    # into site-packages (a reviewer's case: the hint said `minigpt download gpt2 --out <site-packages>`).
    out = subprocess.run([sys.executable, "-m", "minigpt", "generate", "--model", "checkpoints/gpt2"], capture_output=True,
                         text=True, timeout=300, cwd=tmp_path / "cwd", env=env)
    assert out.returncode == 2 and "minigpt download gpt2, then --model gpt2" in out.stderr, out.stderr
    assert str(tmp_path / "site") not in out.stderr.split("to fetch")[1], out.stderr
    # Benchmarks are the checkout's scripts: site-packages/scripts, were another distribution to
    # put one there, is not run (a packaging audit: it was), and bench --help says why there are none.
    (tmp_path / "site" / "scripts").mkdir()
    (tmp_path / "site" / "scripts" / "bench_x.py").write_text("print('foreign')\n")
    for cmd, code in ((["bench", "--help"], 0), (["bench", "x"], 2)):
        out = subprocess.run([sys.executable, "-m", "minigpt", *cmd], capture_output=True, text=True, timeout=300,
                             cwd=tmp_path / "cwd", env=env)
        assert out.returncode == code and "foreign" not in out.stdout, (cmd, out.stdout, out.stderr)
        assert "an installed package has none" in out.stdout + out.stderr, (cmd, out.stdout, out.stderr)


def test_triton_is_asked_for_only_where_it_has_wheels():
    """Triton has wheels for Linux only: an extra that asks for it elsewhere fails the whole
    install (`pip install .[gpu]` on Windows did), so each asks with a Linux marker."""
    import re

    pyproject = (Path(__file__).resolve().parent.parent / "pyproject.toml").read_text()
    tritons = re.findall(r'"(triton[^"]*)"', pyproject)  # (tomllib would need Python 3.11)
    assert tritons and all(r.endswith("; sys_platform == 'linux'") for r in tritons), tritons


def test_an_sdist_carries_what_its_tests_need(tmp_path):
    """setuptools puts tests/test_*.py into an sdist on its own, but not conftest.py (its fixtures
    and offline settings), BENCHMARKS.md (read by tests/test_docs.py) or scripts/ (run by
    tests/test_scripts.py): MANIFEST.in adds them (a packaging audit: 14 tests failed from an sdist)."""
    import shutil
    import tarfile

    repo, src = Path(__file__).resolve().parent.parent, tmp_path / "src"
    # The checkout's files, not what .gitignore leaves out: GPT-2s downloaded into checkpoints/ (up to
    # 12 GB, an audit found copied on every run) and runs' outputs. Outside a git checkout (the tests
    # of an unpacked sdist), every file but the usual leftovers.
    try:  # (the checkout's own top: one unpacked inside another repository is listed by that one, or not at all)
        top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=repo, capture_output=True, text=True)
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=repo,
                                capture_output=True, text=True)
    except FileNotFoundError:  # no git
        top = listed = subprocess.CompletedProcess([], 1)
    if top.returncode == 0 and Path(top.stdout.strip()).resolve() == repo and listed.returncode == 0:
        for name in filter(None, listed.stdout.split("\0")):
            if (repo / name).is_file():  # (a file deleted but not yet committed is still listed)
                (src / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(repo / name, src / name)
    else:
        shutil.copytree(repo, src, ignore=shutil.ignore_patterns(".git", "__pycache__", "*.egg-info", "build", "out",
                                                                 "data", ".hypothesis", ".pytest_cache"))
    (src / "scripts" / "__pycache__").mkdir()  # as the tests that load a script leave behind
    (src / "scripts" / "__pycache__" / "train.cpython-311.pyc").write_bytes(b"")
    (src / "scripts" / "results.csv").write_text("a benchmark's output\n")  # scripts are *.py and *.sh only
    (src / "checkpoints" / "shakespeare" / "model.safetensors.partial").write_bytes(b"")
    build = subprocess.run([sys.executable, "-c", "from setuptools import build_meta; print(build_meta.build_sdist('dist'))"],
                           capture_output=True, text=True, timeout=300, cwd=src)
    assert build.returncode == 0, build.stderr
    with tarfile.open(src / "dist" / build.stdout.split()[-1]) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    assert {"tests/conftest.py", "BENCHMARKS.md", "scripts/bench_generate.py", "tests/test_shipped.py"} <= names
    assert not [name for name in names if name.endswith((".pyc", ".csv", ".partial"))], "stray files in the sdist"
