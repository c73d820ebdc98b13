"""The `minigpt` front door (minigpt/cli.py): a reader that stops early ends a command quietly."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

import minigpt.cli as minigpt_cli

ROOT = Path(__file__).resolve().parent.parent  # the cwd of each run: `-m` imports this checkout's minigpt


@pytest.mark.parametrize("argv", [
    ["--help"],                                                          # the front door's own print
    ["tokenize", "Hello world"],                                         # buffered: the pipe breaks at the last flush
    ["generate", "--prompt", "ROMEO:", "--max-new-tokens", "4", "--stream"],  # breaks inside the command
], ids=["help", "tokenize", "generate"])
def test_a_closed_stdout_pipe_ends_quietly(argv):
    """As `minigpt ... | head -1`, with the reader gone before the first write: no traceback, exit
    141 (128 + SIGPIPE, as `yes | head` gives; a shell-scripting audit: it was 1, a crash's code)."""
    proc = subprocess.Popen([sys.executable, "-m", "minigpt.cli", *argv], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # the child has only the write end: its first write to stdout gets EPIPE
    err = proc.stderr.read()
    assert (proc.wait(timeout=120), err) == (141, ""), err


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full, whose every write fails with ENOSPC")
@pytest.mark.parametrize("argv", [["--version"], ["tokenize", "Hello world"]], ids=["version", "tokenize"])
def test_stdout_on_a_full_disk_is_one_line_that_names_standard_output(argv):
    """A shell-scripting audit: `minigpt tokenize hello > /dev/full` (and `--version`, `eval --json`,
    `prepare`) ended in an OSError traceback, exit 1; `train` said "[Errno 28] No space left on
    device", which sends a user to check the disk of --out. Now: one line naming standard output, exit 2."""
    with open("/dev/full", "w") as full:
        r = subprocess.run([sys.executable, "-m", "minigpt", *argv], cwd=ROOT, stdout=full, stderr=subprocess.PIPE,
                           text=True, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.endswith(": error: cannot write standard output: [Errno 28] No space left on device\n"), r.stderr
    assert r.stderr.count("\n") == 1, r.stderr


def test_stdout_whose_reader_left_or_disk_is_full_raises_what_says_so(monkeypatch):
    """The front door's stdout (`minigpt.cli.Guarded`): a closed pipe and a hung-up terminal (EIO)
    are a reader gone (ReaderLeft, which no command's `except OSError` catches), a full disk an
    OSError naming standard output; either way the rest goes to devnull, so that a command that
    reports the error itself, and Python's flush at exit, do not fail on it again. stderr's reader
    gone stops nothing (a review: `2>&1 | head -1` was a traceback once messages moved to stderr).
    Under train (`outlives`), a hung-up terminal (a crash audit: SIGHUP, an ssh session dropped,
    whose EIO on the stopping run's next line ended it unsaved) is a reader gone, and the run goes
    on; so it does on a full disk (a README audit: a run whose first step line met it stopped before
    its first checkpoint), which it keeps (`lost`) for the run to report at its end."""
    import errno

    to_devnull = []
    monkeypatch.setattr(minigpt_cli, "stdout_to_devnull", to_devnull.append)

    class Failing:
        def __init__(self, code: int) -> None:
            self.code = code

        def write(self, text: str) -> int:
            raise OSError(self.code, os.strerror(self.code))

        def fileno(self) -> int:
            return 1

    for code in (errno.EPIPE, errno.EIO):
        with pytest.raises(minigpt_cli.ReaderLeft):
            minigpt_cli.guarded(Failing(code), "stdout").write("ids: [1]\n")
    with pytest.raises(OSError, match=r"^cannot write standard output: \[Errno 28\] No space left on device$"):
        minigpt_cli.guarded(Failing(errno.ENOSPC), "stdout").write("ids: [1]\n")
    assert to_devnull == [1, 1, 1]
    assert minigpt_cli.guarded(Failing(errno.EPIPE), "stderr").write("next: ...\n") == 10  # stops nothing
    assert minigpt_cli.guarded(Failing(errno.ENOSPC), "stderr").write("note: ...\n") == 10  # nor a full disk
    assert to_devnull == [1, 1, 1, 1, 1]
    outliving = minigpt_cli.guarded(Failing(errno.EIO), "stdout", outlives=True)  # as reader_may_leave makes it
    assert outliving.write("step 6: val_loss 2.5\n") == 21 and to_devnull[-1] == 1
    full = minigpt_cli.guarded(Failing(errno.ENOSPC), "stdout", outlives=True)
    assert full.write("step 6\n") == 7 and "No space left on device" in str(full.lost)
    assert not issubclass(minigpt_cli.ReaderLeft, Exception)  # passes `except Exception` too, to main


@pytest.mark.parametrize("argv", [["tokenize"], ["eval", "checkpoints/shakespeare", "-"],
                                  ["generate", "--model", "checkpoints/shakespeare", "--prompt-file", "-"]],
                         ids=["tokenize", "eval", "generate"])
def test_a_closed_stdin_is_the_commands_one_line_error(argv, monkeypatch, capsys):
    """A shell-scripting audit: `minigpt tokenize <&-` (and `eval M -`, `generate --prompt-file -`)
    was an AttributeError traceback, `'NoneType' object has no attribute 'buffer'`: Python's
    sys.stdin is None when the shell closed it. It is the command's usual one-line error, exit 2."""
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "stdin", None)
    assert minigpt_cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"minigpt {argv[0]}: ") and "standard input is closed" in err and err.count("\n") == 1, err


def tiny_data(path: Path) -> Path:
    """Token files `minigpt train` reads: a repeated random sentence of ids below 64."""
    import json

    import numpy as np

    ids = np.resize(np.random.default_rng(0).integers(0, 63, size=37), 4600).astype(np.uint16)
    path.mkdir()
    ids[:4000].tofile(path / "train.bin")
    ids[4000:].tofile(path / "val.bin")
    (path / "meta.json").write_text(json.dumps({"vocab_size": 64, "eos_token_id": 63, "train_tokens": 4000,
                                                "val_tokens": 600, "train_bytes": 12000, "val_bytes": 1800}))
    return path


def test_a_run_whose_stderr_reader_leaves_trains_and_saves_on(tmp_path):
    """A shell-scripting audit: `minigpt train ... 2>&1 | head -c 100`: the progress bar's write to
    stderr raised BrokenPipeError at the first evaluation, which minigpt.cli.main took for stdout's
    reader gone: exit 1, quietly, the run stopped unsaved. stderr now outlives its reader as stdout
    does (train_runtime.reader_may_leave, whose sys.stderr the bar, made inside it, writes to)."""
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "minigpt.cli", "train", "--data", str(tiny_data(tmp_path / "data")), "--out", str(out),
           "--preset", "gpt2-tiny", "--n-layer", "1", "--n-embd", "32", "--n-head", "2", "--block-size", "16",
           "--batch-size", "4", "--max-iters", "4", "--eval-interval", "2", "--eval-iters", "1", "--log-interval", "1",
           "--device", "cpu"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stderr.close()  # the reader of stderr is gone before the first line
    out_text = proc.stdout.read()
    assert proc.wait(timeout=180) == 0, out_text
    assert "step 4: val_loss" in out_text and torch.load(out / "training_state.pt", weights_only=True)["step"] == 4


def test_a_run_says_its_stdout_on_a_full_disk_at_its_end_and_outlives_a_closed_stderr(monkeypatch):
    """train_runtime.run_command, also from Python or scripts/train.py (no minigpt.cli.main): a full
    disk on stdout stops nothing (a README audit: the first step line met it, and the run stopped
    before its first checkpoint), and is said at the end, naming standard output, exit 2; a closed
    stderr goes to devnull."""
    import errno

    from minigpt import train_runtime
    from minigpt.progress_bar import progress_bar

    to_devnull = []
    monkeypatch.setattr(minigpt_cli, "stdout_to_devnull", to_devnull.append)

    class Failing:
        def __init__(self, code: int, fd: int) -> None:
            self.code, self.fd = code, fd

        def write(self, text: str) -> int:
            raise OSError(self.code, os.strerror(self.code))

        def flush(self) -> None:
            pass

        def fileno(self) -> int:
            return self.fd

        def isatty(self) -> bool:
            return False

    def work():
        with progress_bar(total=2, desc="training") as bar:  # made inside: it writes to that sys.stderr
            bar.update(2)
        print("the run's last line", file=sys.stderr)
        assert to_devnull and set(to_devnull) == {2}
        print("step 2: val_loss 2.5")  # on the full disk: the run goes on
        said.append("saved")
        return {"step": 2}

    said = []
    monkeypatch.setattr(sys, "stdout", Failing(errno.ENOSPC, 1))
    monkeypatch.setattr(sys, "stderr", Failing(errno.EPIPE, 2))
    monkeypatch.setattr(train_runtime, "say_error", lambda prog, text: said.append(text))
    assert train_runtime.run_command("minigpt train", work) == minigpt_cli.FAILED
    assert said[0] == "saved" and said[1].startswith("error: cannot write standard output: [Errno 28] No space")


@pytest.mark.parametrize("argv", [["--help"], ["nonsense"], ["tokenize", "Hello world"]], ids=["help", "unknown", "tokenize"])
def test_python_dash_m_minigpt_is_the_minigpt_command(argv):
    """`python -m minigpt` runs minigpt.cli:main, as the installed `minigpt` script does."""
    def run(module: str) -> tuple[int, str, str]:
        r = subprocess.run([sys.executable, "-m", module, *argv], cwd=ROOT, capture_output=True, text=True, timeout=60)
        return r.returncode, r.stdout, r.stderr

    code, out, err = run("minigpt")
    assert out.startswith("usage: python -m minigpt COMMAND") or argv != ["--help"]  # its name: as it was run
    assert (code, out.replace("python -m minigpt", "minigpt"), err.replace("python -m minigpt", "minigpt")) == run("minigpt.cli")


def test_commands_that_run_no_model_never_import_torch_and_the_public_names_are_still_there():
    """`minigpt tokenize` took 1.8 s, 1.2 s of it torch's import, which `import minigpt` made for
    `from minigpt import GPT, generate`. Those names now come when first used; `generate` is the
    function even once its module, minigpt/generation.py, is imported (it was minigpt/generate.py,
    and `import minigpt.generate as g` gave the function, which shadowed the module)."""
    code = ("import sys; sys.argv = ['minigpt'] + sys.argv[1:]; import minigpt.cli\n"
            "try:\n    minigpt.cli.main()\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules, file=sys.stderr)")
    with tempfile.TemporaryDirectory() as d:  # prepare too: it tokenizes and writes numpy files
        Path(d, "a.txt").write_text("To be, or not to be: that is the question.\n" * 20)
        for argv in (["--help"], ["--version"], ["tokenize", "--help"], ["tokenize", "Hello world"], ["download", "--help"],
                     ["prepare", f"{d}/a.txt", "--tokenizer", "checkpoints/gpt2", "--out", f"{d}/data"]):
            r = subprocess.run([sys.executable, "-c", code, *argv], cwd=ROOT, capture_output=True, text=True, timeout=60)
            assert r.stderr.splitlines()[-1] == "False", (argv, r.stderr)
        assert Path(d, "data", "train.bin").is_file()
    check = ("import minigpt, minigpt.generation as g, minigpt.text_generation\n"
             "from minigpt import *\n"
             "assert generate is g.generate and stream is g.stream and callable(GPT) and callable(Tokenizer), generate\n"
             "assert set(minigpt.__all__) == set(minigpt._HOMES) and set(minigpt.__all__) <= set(dir(minigpt))")
    r = subprocess.run([sys.executable, "-c", check], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("argv0,expected", [
    ("/usr/bin/minigpt", "minigpt train"),                                # the installed script
    (str(ROOT / "minigpt" / "__main__.py"), "python -m minigpt train"),   # python -m minigpt
    (str(ROOT / "minigpt" / "cli.py"), "minigpt train"),                  # python -m minigpt.cli
    ("scripts/train.py", "train.py"),                                     # python scripts/train.py, as argparse names a script
    ("/usr/bin/pytest", "minigpt train"),                                 # Python code calling main(argv)
    ("train.py", "train.py"),                                             # python train.py, inside scripts/
])
def test_a_command_names_itself_as_it_was_run(argv0, expected, monkeypatch):
    from minigpt.cli import prog

    monkeypatch.chdir(ROOT / "scripts" if argv0 == "train.py" else ROOT)
    monkeypatch.setattr(sys, "argv", [argv0])
    assert prog("train") == expected


def test_a_script_shows_its_own_name_in_usage_and_errors():
    r = subprocess.run([sys.executable, "scripts/eval.py", "no-model", "no-file.txt"], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.startswith("eval.py: error: "), r.stderr
    r = subprocess.run([sys.executable, "scripts/eval.py", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.stdout.startswith("usage: eval.py "), r.stdout


@pytest.mark.parametrize("name", ["generate", "train"])
def test_a_gpu_benchmark_on_a_machine_without_cuda_says_so_in_one_line(name, monkeypatch, capsys):
    """`minigpt bench generate|train --device cuda` without CUDA: exit 2 and one line, no traceback."""
    from minigpt import bench

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(sys, "argv", sys.argv[:])  # bench.main sets sys.argv for the script
    assert bench.main([name, "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"bench_{name}.py: error: device cuda: CUDA is not available" in err, err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only answer")
def test_gpu_check_without_a_gpu_stops_with_one_line_instead_of_reporting_skipped_tests_ok(tmp_path):
    """scripts/gpu_check.sh on a machine without CUDA: exit 2 and say so, no step run ("tests=ok" of all skips)."""
    r = subprocess.run(["bash", "scripts/gpu_check.sh"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "OUT": str(tmp_path)})
    assert r.returncode == 2, r.stdout + r.stderr
    assert "gpu_check: no CUDA device" in r.stderr and "== tests" not in r.stdout, r.stdout + r.stderr


def test_bench_tokenizer_without_its_texts_names_the_missing_file(tmp_path, monkeypatch, capsys):
    """The default texts live in /work/shared/data; elsewhere, an argparse error names the file and --data."""
    from minigpt import bench

    monkeypatch.setattr(sys, "argv", sys.argv[:])
    assert bench.main(["tokenizer", "--data", str(tmp_path / "missing.txt"), "--extra"]) == 2
    err = capsys.readouterr().err
    assert f"bench_tokenizer.py: error: no such file: {tmp_path / 'missing.txt'}" in err and "Traceback" not in err, err


@pytest.mark.parametrize("argv, oracle", [(["tokenizer", "--help"], "tiktoken"),
                                          (["generate", "--model", str(ROOT / "checkpoints" / "shakespeare")], "transformers")])
def test_a_benchmark_without_its_reference_says_which_extra_to_install(argv, oracle, monkeypatch, capsys):
    """A checkout installed without the `test` extra (a packaging audit): `minigpt bench tokenizer
    --help` ended in a ModuleNotFoundError traceback. It says in one line what to install.
    (bench_generate.py imports transformers only where it times it: its --help and --memory need none.)"""
    from minigpt import bench
    from minigpt.cli import prog

    monkeypatch.setattr(sys, "argv", sys.argv[:])
    monkeypatch.setitem(sys.modules, oracle, None)  # `import tiktoken` then fails as if it were not installed
    name = argv[0]
    if name == "generate":
        assert bench.main([name, "--help"]) == 0 and "--memory" in capsys.readouterr().out
    assert bench.main(argv) == 2
    err = capsys.readouterr().err
    assert err == f"{prog('bench')} {name}: error: needs {oracle}, of the test extra: pip install -e '.[test]'\n", err
    assert prog("bench") == "minigpt bench"  # (named before the script's argv replaced it, and argv put back)


def test_version_names_this_minigpt_and_where_it_is(capsys):
    """`minigpt --version`: the version pyproject.toml reads from minigpt.__version__, and the
    package's folder, to tell this minigpt from PyPI's project of the same name."""
    import minigpt

    assert minigpt_cli.main(["--version"]) == 0
    assert capsys.readouterr().out == f"minigpt {minigpt.__version__} ({Path(minigpt.__file__).parent})\n"


def test_bench_in_an_installed_package_runs_no_site_packages_scripts(monkeypatch, capsys):
    """An installed package has no scripts/ beside it: `minigpt bench` then says benchmarks need
    a checkout (--help too, exit 0), and never runs a site-packages/scripts/bench_*.py, another
    distribution's (a packaging audit: it did)."""
    from minigpt import bench

    monkeypatch.setattr(bench, "SCRIPTS", None)
    assert bench.main(["--help"]) == 0
    assert "source checkout (an installed package has none)" in capsys.readouterr().out
    assert bench.main(["generate"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "benchmarks are the scripts/bench_*.py of a source checkout" in err, err


def test_a_gpt2_download_that_cannot_write_its_cache_is_one_line(tmp_path, monkeypatch, capsys):
    """`minigpt generate --model gpt2` where the download cache cannot be made (a home that is not
    writable, a file in its place): exit 2 and the OSError in one line, as the other commands do,
    not a traceback (it caught FileNotFoundError only)."""
    import minigpt.download
    from minigpt import generate_cli

    (tmp_path / "afile").write_text("")
    monkeypatch.setattr(minigpt.download, "DOWNLOADS", tmp_path / "afile")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    assert generate_cli.main(["--model", "gpt2", "--prompt", "hi", "--max-new-tokens", "1"]) == 2
    err = capsys.readouterr().err  # "...: downloading it", then the error
    assert "Traceback" not in err and "afile is a file, not a directory" in err.splitlines()[-1], err


@pytest.mark.parametrize("command", ["generate", "eval"])
@pytest.mark.parametrize("cuda,device", [(True, "cuda"), (False, "cpu")])
def test_device_auto_is_the_gpu_when_there_is_one(command, cuda, device, monkeypatch, tmp_path):
    """`--device` defaults to auto in every command, as in `minigpt train`: a user with a GPU gets it
    without asking. The model is never loaded: the loader records the device it was given."""
    from minigpt.checkpoint import resolve_device
    from minigpt.cli import run_command
    from minigpt.model import GPT

    asked = []

    def from_pretrained(path, dtype=None, device=None):
        asked.append(str(resolve_device(device)))  # what the real loader does with it first
        raise ValueError("not loaded in this test")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(GPT, "from_pretrained", from_pretrained)
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "text.txt").write_text("To be, or not to be")
    args = {"generate": ["--model", str(tmp_path)], "eval": [str(tmp_path), str(tmp_path / "text.txt")]}[command]
    assert run_command([command, *args]) == 2
    assert asked == [device]


def test_an_unknown_command_is_a_usage_error_with_exit_2(capsys):
    """Mutant C1: an unknown command exited 1 (a failure) instead of 2 (bad usage, as argparse)."""
    assert minigpt_cli.main(["nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'nope'" in err and "commands:" in err


@pytest.mark.parametrize("argv", [["nope"], ["bench", "nope"], ["generate", "--model", "nope"],
                                  ["generate", "--max-new-tokens", "0"], ["tokenize", "--tokenizer", "nope", "hi"]],
                         ids=["unknown-command", "bench", "generate-model", "generate-flag", "tokenize"])
def test_every_commands_one_line_failure_reads_prog_error_message(argv, capsys):
    """An audit: `generate`, `bench` and an unknown command said `minigpt generate: nope not found`,
    without the `error:` tag that every other command's failure (and argparse's) carries, so one
    pattern (`PROG: error: MESSAGE`) could not find them all in a log."""
    assert minigpt_cli.main(argv) == minigpt_cli.FAILED
    first = capsys.readouterr().err.splitlines()[0]
    command = argv[0] if argv[0] in minigpt_cli.COMMANDS else ""
    assert first.startswith(f"{minigpt_cli.prog(command)}: error: "), first


def lines_matching(pattern: str, *folders: str) -> list[str]:
    """`file:line` of each line of the .py files in `folders` (of this checkout) that `pattern` finds."""
    return [f"{path.relative_to(ROOT)}:{number}" for folder in folders for path in sorted((ROOT / folder).glob("*.py"))
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if re.search(pattern, line)]


def test_a_failure_said_in_one_line_exits_with_cli_failed_not_a_literal_2():
    """An audit: exit code 2 (README's "a failure said in one line") is `cli.FAILED`, but 18 places
    in minigpt/ and 3 in scripts/ wrote a literal 2, which a reader cannot tell from any other 2 or find by name."""
    assert lines_matching(r"\breturn 2\b|\bcode(, consequence)? = 2\b", "minigpt", "scripts") == []


def test_the_dtype_names_have_one_home():
    """An audit: the names --dtype takes were written out in four places (checkpoint.DTYPE_NAMES,
    TrainConfig's check, export_checkpoint.py's and bench_train.py's choices), free to drift
    apart. The others build theirs from checkpoint.DTYPE_NAMES."""
    listed = lines_matching(r"[\"']float32[\"'], [\"']bfloat16[\"']|[\"']bfloat16[\"'], [\"']float16[\"']",
                            "minigpt", "scripts")
    assert [line for line in listed if not line.startswith("minigpt/checkpoint.py:")] == []


def test_dash_h_prints_the_usage_like_dash_dash_help(capsys):
    """Mutant C2: `minigpt -h` was taken for an unknown command named '-h'."""
    for flag in ("-h", "--help"):
        assert minigpt_cli.main([flag]) == 0
        out = capsys.readouterr().out
        assert "commands:" in out and "tokenize" in out


def test_a_command_that_succeeds_exits_0(capsys):
    """Mutant C3: the dispatcher turned a command's 0 into another code (`or 1`)."""
    assert minigpt_cli.main(["tokenize", "Hello world"]) == 0
    assert "[15496, 995]" in capsys.readouterr().out


@pytest.fixture(scope="module")
def small_context_model(tmp_path_factory):
    """A 2-layer model with a 64-token context: shorter than the benchmarks' default prompts."""
    from minigpt import GPT, GPTConfig

    path = tmp_path_factory.mktemp("small_context")
    torch.manual_seed(0)
    GPT(GPTConfig(n_layer=2, n_head=2, n_embd=64, n_positions=64)).save_pretrained(path)
    return path


def test_bench_generate_fits_its_prompts_to_a_small_context(small_context_model, monkeypatch, capsys):
    """A 64-token context: the bf16 drift prompt (256 tokens) was not cut to it, and the run failed
    after all its timings. Now it is cut, as are the default TTFT lengths."""
    from minigpt import bench

    monkeypatch.setattr(sys, "argv", sys.argv[:])
    threads = torch.get_num_threads()
    try:  # --threads 1: steadier ratios on a shared machine
        assert bench.main(["generate", "--model", str(small_context_model), "--repeats", "1", "--new-tokens", "8",
                           "--batches", "1", "--threads", "1"]) == 0
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert ", 1 CPU threads, " in out.splitlines()[0], out
    assert "TTFT, 64-token prompt" in out and "TTFT, 256-token" not in out, out
    assert "bf16 vs fp32 logits (64-token prompt)" in out, out
    # On a CPU the KV-cache lines carry no "peak memory": the process's peak RSS was the same for every line.
    assert "equal)\nKV cache, bfloat16" in out and "peak memory" not in out, out


def test_bench_generate_samples_on_both_sides_with_top_k_and_top_p(small_context_model, monkeypatch, capsys):
    """--top-k and --top-p: every TPOT run samples (do_sample) with them on both sides, and the
    header says so."""
    from minigpt import bench

    monkeypatch.setattr(sys, "argv", sys.argv[:])
    threads = torch.get_num_threads()
    try:
        assert bench.main(["generate", "--model", str(small_context_model), "--repeats", "1", "--new-tokens", "8",
                           "--batches", "1", "--threads", "1", "--no-bf16", "--ttft-lengths", "8",
                           "--top-k", "5", "--top-p", "0.9"]) == 0
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert "; sampled with top_k 5, top_p 0.9 in every TPOT run" in out.splitlines()[0], out
    assert "TPOT" in out, out


@pytest.mark.parametrize("flags,named", [
    (["--ttft-lengths", "8,65"], "--ttft-lengths 65 exceeds the model's context n_positions=64"),
    (["--new-tokens", "50"], "--new-tokens must be in [2, 49]"),
    (["--threads", "-1"], "--threads must be ≥ 0, got -1"),
    (["--top-p", "0"], "--top-p must be in (0, 1] (1 means off), got 0.0"),  # the library's check, as generate's
    (["--top-p", "nan"], "--top-p must be in (0, 1] (1 means off), got nan"),
    (["--top-k", "-1"], "--top-k must be in [0, inf) (0 means off), got -1"),
])
def test_bench_generate_refuses_lengths_past_the_context_before_any_timing(small_context_model, flags, named,
                                                                           monkeypatch, capsys):
    from minigpt import bench

    monkeypatch.setattr(sys, "argv", sys.argv[:])
    argv = ["generate", "--model", str(small_context_model), "--repeats", "1", "--new-tokens", "8", "--batches", "1"]
    assert bench.main(argv + flags) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and f"bench_generate.py: error: {named}" in err, (out, err)


def test_bench_generate_says_a_context_too_short_for_its_decode_runs(tmp_path, monkeypatch, capsys):
    """A 16-position model: its TPOT runs (a 16-token prompt, then 2 new tokens at least) cannot fit,
    which --new-tokens' range said as "[2, 1]" (a reader's audit)."""
    from minigpt import GPT, GPTConfig, bench

    torch.manual_seed(0)
    GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, n_positions=16)).save_pretrained(tmp_path / "m")
    monkeypatch.setattr(sys, "argv", sys.argv[:])
    assert bench.main(["generate", "--model", str(tmp_path / "m"), "--repeats", "1", "--batches", "1",
                       "--ttft-lengths", "8"]) == 2
    err = capsys.readouterr().err
    assert ("bench_generate.py: error: the model's context n_positions=16 is too short for a TPOT run: its 16-token "
            "prompt and 2 new tokens need 17 positions") in err, err


@pytest.mark.parametrize("env,arrow", [({}, "→"), ({"PYTHONIOENCODING": "ascii:replace"}, "?")],
                         ids=["utf-8", "PYTHONIOENCODING"])
def test_text_redirected_to_a_file_is_utf8_whatever_the_locale(env, arrow):
    """Python encodes a redirected stdout in the locale's encoding (Windows: a code page such as
    cp1252); here the C locale's ASCII stands in for it, where `minigpt tokenize`'s summary
    ("5 characters → 1 token") failed on its arrow. A file or pipe gets UTF-8, unless
    PYTHONIOENCODING says otherwise."""
    base = {k: v for k, v in os.environ.items() if k not in ("PYTHONIOENCODING", "PYTHONUTF8")}
    r = subprocess.run([sys.executable, "-m", "minigpt", "tokenize", "Hello"], cwd=ROOT, capture_output=True,
                       timeout=60, env={**base, "LC_ALL": "C", "PYTHONCOERCECLOCALE": "0", "PYTHONUTF8": "0", **env})
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    assert f"5 characters {arrow} 1 token" in r.stdout.decode("utf-8"), r.stdout


def test_only_redirected_streams_are_made_utf8(monkeypatch):
    """A mutation audit: utf8_when_redirected leaves a terminal's encoding alone (the terminal
    decodes what it gets in its own), and reconfigures stderr as well as stdout."""
    import io

    class Terminal(io.TextIOWrapper):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("PYTHONIOENCODING", raising=False)
    monkeypatch.setattr(sys, "stdout", Terminal(io.BytesIO(), encoding="cp1252"))
    monkeypatch.setattr(sys, "stderr", io.TextIOWrapper(io.BytesIO(), encoding="cp1252"))
    minigpt_cli.utf8_when_redirected()
    assert (sys.stdout.encoding, sys.stderr.encoding) == ("cp1252", "utf-8")


# A C locale whose encoding is ASCII, as on a bare container or under cron: LC_ALL wins over
# Python's own coercion to C.UTF-8, and PYTHONUTF8=0 keeps UTF-8 mode off.
C_LOCALE = {"LC_ALL": "C", "LANG": "C", "PYTHONCOERCECLOCALE": "0", "PYTHONUTF8": "0"}


def minigpt_in_c_locale(args: list[str], cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    """`python -m minigpt ARGS` under the C locale. Non-ASCII arguments reach it as their UTF-8
    bytes, which it cannot decode: Python holds them as lone surrogates ("é" is "\\udcc3\\udca9")."""
    base = {k: v for k, v in os.environ.items() if k not in ("PYTHONIOENCODING", "PYTHONUTF8")}
    return subprocess.run([sys.executable, "-m", "minigpt", *args], cwd=cwd, env={**base, **C_LOCALE}, timeout=120,
                          **kwargs)


def test_a_non_ascii_path_under_the_c_locale_is_printed_as_its_bytes(tmp_path):
    """A portability audit: under LC_ALL=C, `tokenize --train` and `prepare` died at their last
    print, after the work, on a path holding "é": utf8_when_redirected reconfigured the redirected
    stdout as UTF-8 with errors="strict", which refuses the surrogates such a path is held as.
    stdout now writes them back as the bytes they were (surrogateescape), and an error naming a
    missing "é" file is printed (escaped), where it was a fatal "lost sys.stderr"."""
    (tmp_path / "dir é").mkdir()
    (tmp_path / "dir é" / "t.txt").write_text("the cat sat on the mat. a dog sat on the log.\n" * 200, encoding="utf-8")
    train = minigpt_in_c_locale(["tokenize", "--train", "dir é/t.txt", "--vocab-size", "300", "--out", "dir é/tok"],
                                tmp_path, capture_output=True)
    assert train.returncode == 0, train.stderr.decode("utf-8", "replace")
    assert train.stdout.decode().endswith("to dir é/tok\n")
    # (stderr, a message's stream, escapes the bytes the C locale cannot encode: see the README's Install)
    assert "next: minigpt prepare FILES --tokenizer 'dir \\udcc3\\udca9/tok' --out DATA_DIR\n" in train.stderr.decode()
    prepare = minigpt_in_c_locale(["prepare", "dir é/t.txt", "--tokenizer", "dir é/tok", "--out", "dir é/data"],
                                  tmp_path, capture_output=True)
    assert prepare.returncode == 0, prepare.stderr.decode("utf-8", "replace")
    assert prepare.stdout.decode().endswith("val tokens to dir é/data\n")
    assert "next: minigpt train --data 'dir \\udcc3\\udca9/data' --out OUT_DIR\n" in prepare.stderr.decode()
    missing = minigpt_in_c_locale(["prepare", "dir é/missing.txt", "--tokenizer", "dir é/tok", "--out", "dir é/d2"],
                                  tmp_path, capture_output=True)
    err = missing.stderr.decode()
    assert missing.returncode == 2 and "Traceback" not in err and "lost sys.stderr" not in err, err
    assert r"dir \udcc3\udca9/missing.txt" in err, err  # backslashreplace, Python's own for stderr


def test_text_typed_under_the_c_locale_is_read_as_the_utf8_it_was_typed_in(tmp_path):
    """A portability audit: under LC_ALL=C, `minigpt tokenize "héllo 日本 🎉"` encoded each byte of
    "é", "日本" and "🎉" as a character of its own (the surrogates Python holds them as): 6 ids
    where the text has 11, other ids without a word; `--prompt` and `--stop` were read so too.
    Typed text is now read as the UTF-8 it was typed in (`typed_text`)."""
    from minigpt import Tokenizer
    from minigpt.files import typed_text

    text = "héllo 日本 🎉"
    r = minigpt_in_c_locale(["tokenize", text], tmp_path, capture_output=True)
    assert r.returncode == 0, r.stderr.decode("utf-8", "replace")
    assert f"ids:    {Tokenizer.from_pretrained('gpt2').encode(text)}\n" in r.stdout.decode("utf-8")
    assert "10 characters → 11 tokens" in r.stdout.decode("utf-8")
    assert typed_text("--stop", "Rom\udcc3\udca9o") == "Roméo" and typed_text("--prompt", text) == text
    with pytest.raises(ValueError, match="--prompt is not UTF-8 text: byte 0xe9 at offset 3"):
        typed_text("--prompt", "caf\udce9")  # a Latin-1 "é" typed: no UTF-8


def test_special_tokens_typed_under_the_c_locale_are_the_utf8_they_were_typed_in(tmp_path):
    """A third review: `tokenize --train --special "<|é|>" --eos "<|é|>"` under LC_ALL=C trained, then
    failed at the save with a raw "surrogates not allowed": the tokens are typed text, as TEXT is."""
    from minigpt import Tokenizer

    (tmp_path / "t.txt").write_text("the cat sat on the mat. a dog sat on the log.\n" * 200, encoding="utf-8")
    r = minigpt_in_c_locale(["tokenize", "--train", "t.txt", "--vocab-size", "300", "--special", "<|é|>", "--eos", "<|é|>",
                             "--out", "tok"], tmp_path, capture_output=True)
    assert r.returncode == 0, r.stderr.decode("utf-8", "replace")
    tok = Tokenizer.from_pretrained(tmp_path / "tok")
    assert "<|é|>" in tok.special_tokens and tok.eos_token == "<|é|>"


def test_redirected_stdout_writes_a_paths_bytes_back_and_stderr_escapes_what_it_cannot_encode(monkeypatch):
    """A portability audit: `reconfigure(encoding="utf-8")` alone resets errors to "strict", so a
    path held as surrogates (a C locale's undecodable bytes) killed the print that named it, on
    stdout and on stderr alike. A terminal that is not UTF-8 (ASCII) now escapes what it cannot
    show instead of raising: `minigpt tokenize "hello world"` died there on its token 'Ġworld'."""
    import io

    class Terminal(io.TextIOWrapper):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("PYTHONIOENCODING", raising=False)
    for stdout in (io.TextIOWrapper(io.BytesIO(), encoding="ascii"), io.TextIOWrapper(io.BytesIO(), encoding="utf-8")):
        stderr = io.TextIOWrapper(io.BytesIO(), encoding="ascii")
        monkeypatch.setattr(sys, "stdout", stdout)
        monkeypatch.setattr(sys, "stderr", stderr)
        minigpt_cli.utf8_when_redirected()
        print("dir \udcc3\udca9 Ġ")
        print("dir \udcc3\udca9 Ġ", file=sys.stderr)
        sys.stdout.flush(), sys.stderr.flush()
        assert stdout.buffer.getvalue() == "dir é Ġ\n".encode()
        assert stderr.buffer.getvalue() == "dir \\udcc3\\udca9 Ġ\n".encode()
    terminal = Terminal(io.BytesIO(), encoding="ascii")
    monkeypatch.setattr(sys, "stdout", terminal)
    minigpt_cli.utf8_when_redirected()
    print(['hello', 'Ġworld'])
    sys.stdout.flush()
    assert (terminal.encoding, terminal.buffer.getvalue()) == ("ascii", b"['hello', '\\u0120world']\n")


def test_an_ascii_terminal_shows_tokenize_s_tokens_escaped(tmp_path):
    """A portability audit: README's first command, `minigpt tokenize "hello world"`, on a terminal
    under LC_ALL=C (ASCII) was a UnicodeEncodeError traceback on the token 'Ġworld'."""
    import pty

    main_fd, terminal_fd = pty.openpty()
    try:
        r = minigpt_in_c_locale(["tokenize", "hello world"], tmp_path, stdout=terminal_fd, stderr=subprocess.PIPE)
    finally:
        os.close(terminal_fd)
    shown = b""
    while True:
        try:
            chunk = os.read(main_fd, 4096)
        except OSError:  # EIO: the terminal's other end is closed and all it said is read
            break
        if not chunk:
            break
        shown += chunk
    os.close(main_fd)
    assert r.returncode == 0, r.stderr.decode("utf-8", "replace")
    assert b"tokens: ['hello', '\\u0120world']" in shown, shown


def test_a_warning_is_one_line_in_the_commands_words(tmp_path):
    """A review: a config.json's warning (here a pad_token_id past the vocabulary, dropped) came out
    as Python shows one, `/usr/bin/minigpt:8: UserWarning: ...` and the line `sys.exit(main())`:
    the caller's line, which for a command is its console script. It is the command's own line now."""
    import json
    import shutil

    ck = tmp_path / "ck"
    shutil.copytree(ROOT / "checkpoints" / "shakespeare", ck)
    config = json.loads((ck / "config.json").read_text())
    (ck / "config.json").write_text(json.dumps(config | {"pad_token_id": config["vocab_size"]}))
    done = subprocess.run([sys.executable, "-m", "minigpt", "generate", "--model", str(ck), "--prompt", "ROMEO:",
                           "--max-new-tokens", "2", "--temperature", "0"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert (f"python -m minigpt generate: warning: {ck / 'config.json'} sets pad_token_id {config['vocab_size']}, "
            "which is no token of this model") in done.stderr
    assert "UserWarning" not in done.stderr and "sys.exit" not in done.stderr and "runpy" not in done.stderr


@pytest.mark.parametrize("argv,code", [
    (["train", "--out", "OUT"], 2),            # refused (no --data): said on a stderr nobody reads, still exit 2
    (["tokenize", "--json", "hello"], 0),      # messages lost, the result out
], ids=["train", "tokenize"])
def test_a_stderr_the_shell_closed_or_whose_reader_left_changes_no_exit_code(argv, code, tmp_path):
    """A review: with stderr's descriptor closed under a live sys.stderr (what `2>&-` gives behind
    some launchers: a plain interpreter makes sys.stderr None), writes failed with EBADF, and with
    `2>&1 | head -1` with EPIPE; either escaped as a traceback nobody saw, exit 1, where the
    command's own code is due. A stderr on a full disk is the same: nothing can be said there."""
    argv = [str(tmp_path / "out") if a == "OUT" else a for a in argv]
    closing = "import os, sys; os.close(2); from minigpt.cli import main; sys.exit(main(sys.argv[1:]))"
    closed = subprocess.run([sys.executable, "-c", closing, *argv], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert closed.returncode == code, closed.stdout
    with open("/dev/full", "w") as full:
        assert subprocess.run([sys.executable, "-m", "minigpt", *argv], cwd=ROOT, stdout=subprocess.PIPE, stderr=full,
                              timeout=120).returncode == code
    proc = subprocess.Popen([sys.executable, "-m", "minigpt", *argv], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    proc.stderr.close()  # its reader gone before the first message
    out = proc.stdout.read()
    assert proc.wait(timeout=120) == code and "Traceback" not in out, out


def as_a_user_who_cannot_write(tmp_path: Path) -> tuple[list[str], Path]:
    """How to run Python as a user for whom folder `ro` (made here, mode 0o555) is read-only, as a
    read-only mount in a container is: root writes through any mode, so as root the run drops that
    right (setpriv, as test_checkpoint's read-only save does). Returns the command's start and `ro`."""
    import shutil

    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    ro.chmod(0o555)  # (mkdir's mode goes through the umask)
    if os.geteuid() != 0:
        return [sys.executable], ro
    if not shutil.which("setpriv"):
        pytest.skip("as root, a folder's mode stops a write only with the right to override it dropped (setpriv)")
    drop = ["--inh-caps=-dac_override,-fowner", "--bounding-set=-dac_override,-fowner"]
    return ["setpriv", *drop, sys.executable], ro


def test_tokenize_train_into_a_folder_it_cannot_write_is_refused_before_training(tmp_path):
    """A deployment audit (a read-only container): `minigpt tokenize --train FILES --out DIR` into a
    folder it may not write trained the whole BPE first, then ended in a 15-line OSError traceback,
    exit 1. Now one line naming --out and the folder, exit 2, before training (whose bars would show)."""
    python, ro = as_a_user_who_cannot_write(tmp_path)
    (tmp_path / "a.txt").write_text("hello world, the quick brown fox\n" * 20)
    done = subprocess.run([*python, "-m", "minigpt", "tokenize", "--train", str(tmp_path / "a.txt"), "--vocab-size",
                           "262", "--out", str(ro / "tok")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [f"python -m minigpt tokenize --train: error: --out {ro / 'tok'}: {ro} cannot be "
                                        "written (no permission, or a read-only file system); choose another --out"]
    assert not (ro / "tok").exists()


def test_predictions_into_a_folder_it_cannot_write_are_refused_before_scoring(tmp_path):
    """A deployment audit: `eval --predictions preds.tsv` in a read-only working directory scored the
    whole file, then failed naming preds.tsv.tmp, a file the user never named; check_predictions_path,
    which runs before the model loads, promised to refuse a path that could not take the file."""
    python, ro = as_a_user_who_cannot_write(tmp_path)
    (tmp_path / "t.tsv").write_text("good\t1\n")
    check = "import sys; from minigpt.evaluate import check_predictions_path; check_predictions_path(*sys.argv[1:])"
    done = subprocess.run([*python, "-c", check, str(ro / "preds.tsv"), str(tmp_path / "t.tsv")], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and (f"ValueError: --predictions {ro / 'preds.tsv'}: {ro} cannot be written "
                                     "(no permission, or a read-only file system)") in done.stderr, done.stderr
    assert ".tmp" not in done.stderr


def test_a_download_folder_it_cannot_write_is_named_with_what_to_set(tmp_path):
    """A deployment audit: with HOME unwritable (`docker run --user UID` gives HOME=/), `minigpt
    download gpt2` said only "[Errno 13] Permission denied: '/.cache'", and GPT.from_pretrained("gpt2")
    raised it bare: nothing said it was minigpt's download folder, from $HOME, nor what to set. Now
    it says so before the network is asked (the address here answers nothing)."""
    python, ro = as_a_user_who_cannot_write(tmp_path)
    downloads = ro / ".cache" / "minigpt"  # an installed minigpt's config.DOWNLOADS under HOME=ro
    # (config.py's line for an installed package: the folder and its source, found from the environment)
    fetch = ("import sys, minigpt.config as c, minigpt.download as d; "
             "d.DOWNLOADS, d.DOWNLOADS_SOURCE = c.user_cache_source('minigpt'); "
             "sys.exit(d.main(['gpt2', '--base-url', 'http://127.0.0.1:9']))")
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    done = subprocess.run([*python, "-c", fetch], cwd=ROOT, env={**env, "HOME": str(ro)},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        f"minigpt download: error: {downloads / 'gpt2'} is in minigpt's download folder, {downloads} "
        f"($HOME/.cache/minigpt, HOME being {ro}), and {ro} cannot be written (no "
        "permission, or a read-only file system): set XDG_CACHE_HOME to a folder you can write, or download it "
        "elsewhere with `minigpt download gpt2 --out DIR` and load DIR"]


@pytest.mark.parametrize("value, draws", [("1", False), ("0", False), ("", True)], ids=["1", "0-as-tqdm", "empty"])
def test_tqdm_disable_silences_a_bar_whose_caller_passed_disable_false(value, draws, monkeypatch):
    """An audit: README says TQDM_DISABLE=1 silences every bar, but tqdm takes its TQDM_* variables
    as defaults only, so the bars made with `disable=not progress` (train, eval, BPE training)
    drew anyway. progress_bar now lets the variable win; its value reads as tqdm reads it (any
    non-empty string, "0" too, disables; empty does not)."""
    import io

    from minigpt.progress_bar import progress_bar

    monkeypatch.setenv("TQDM_DISABLE", value)
    stream = io.StringIO()
    with progress_bar(total=2, file=stream, disable=False) as bar:
        bar.update(2)
    assert ("2/2" in stream.getvalue()) == draws, stream.getvalue()


def test_tqdm_disable_silences_the_bars_of_a_command(tmp_path):
    """The same audit, from the shell: `TQDM_DISABLE=1 minigpt tokenize --train` still drew the
    BPE training bars (and eval its windows, train its steps). Without the variable the same
    command draws them, so the check would see a bar if one came."""
    (tmp_path / "a.txt").write_text("The quick brown fox jumps over the lazy dog. " * 60)

    def bar_lines(env: dict[str, str], out: str) -> list[str]:
        cmd = [sys.executable, "-m", "minigpt", "tokenize", "--train", str(tmp_path / "a.txt"), "--vocab-size", "280",
               "--out", str(tmp_path / out)]
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120, env={**os.environ, **env})
        assert done.returncode == 0, done.stderr
        return [line for line in done.stderr.replace("\r", "\n").splitlines() if "%|" in line]

    assert bar_lines({"TQDM_DISABLE": ""}, "drawn"), "the command drew no bar to silence: the check checks nothing"
    assert bar_lines({"TQDM_DISABLE": "1"}, "quiet") == []


@pytest.mark.parametrize("command", ["generate", "train"])
def test_compile_without_a_cxx_compiler_is_one_line_with_exit_2(command, tmp_path):
    """An audit: on a machine without a working C++ compiler (no g++; here $CXX names none), --compile
    failed at its first compiled call with Inductor's traceback, 112-125 lines ending in
    "InvalidCxxCompiler". Now it is minigpt's one line, exit 2: generate's through cli.run_command,
    train's through train_runtime.run_command (which says it once under torchrun)."""
    from minigpt import GPT, GPTConfig

    if command == "generate":
        torch.manual_seed(0)
        GPT(GPTConfig(vocab_size=4096, n_positions=64, n_embd=32, n_layer=1, n_head=2, eos_token_id=4095,
                      bos_token_id=4095)).save_pretrained(tmp_path / "model")
        argv = ["generate", "--model", str(tmp_path / "model"), "--tokenizer", str(ROOT / "checkpoints" / "shakespeare"),
                "--prompt", "Hi", "--max-new-tokens", "2", "--temperature", "0"]
    else:
        argv = ["train", "--data", str(tiny_data(tmp_path / "data")), "--out", str(tmp_path / "out"), "--preset",
                "gpt2-tiny", "--n-layer", "1", "--n-embd", "32", "--n-head", "2", "--n-positions", "16", "--batch-size",
                "4", "--max-iters", "2", "--eval-interval", "2", "--eval-iters", "1", "--device", "cpu"]
    # A cache of its own: a kernel built earlier (by a run with a compiler) would be reused, built by none.
    env = {**os.environ, "CXX": str(tmp_path / "no-such-g++"), "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")}
    r = subprocess.run([sys.executable, "-m", "minigpt", *argv, "--compile"], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=300)
    errors = [line for line in r.stderr.splitlines() if "error" in line.lower() or "Traceback" in line]
    assert r.returncode == 2 and errors == [
        f"python -m minigpt {command}: error: --compile needs a working C++ compiler to build its CPU kernels, and $CXX "
        f"({tmp_path / 'no-such-g++'}) does not run: install one (e.g. g++) or point $CXX at it, or drop --compile"], r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.splitlines()) < 6, r.stderr


def test_compile_with_a_cxx_compiler_that_cannot_build_is_one_line_with_exit_2(tmp_path):
    """A compile audit: a compiler that runs but cannot build the kernels (g++ where Python's headers
    are not installed, common with a system Python) failed with Inductor's 115-line traceback
    ending in CppCompileError, exit 1. Now it is minigpt's one line, naming the compiler's error,
    exit 2 (train's --compile meets the same error through the same `cli.no_cxx_compiler`)."""
    from minigpt import GPT, GPTConfig

    torch.manual_seed(0)
    GPT(GPTConfig(vocab_size=4096, n_positions=64, n_embd=32, n_layer=1, n_head=2, eos_token_id=4095,
                  bos_token_id=4095)).save_pretrained(tmp_path / "model")
    cxx = tmp_path / "g++"  # it answers --version as g++ does, and fails every build as g++ without Python.h does
    cxx.write_text('#!/bin/sh\ncase "$1" in --version) echo "g++ (GCC) 13.2.0";; *) echo "main.cpp:95:10: fatal error: '
                   'Python.h: No such file or directory" >&2; exit 1;; esac\n')
    cxx.chmod(0o755)
    env = {**os.environ, "CXX": str(cxx), "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")}
    argv = ["generate", "--model", str(tmp_path / "model"), "--tokenizer", str(ROOT / "checkpoints" / "shakespeare"),
            "--prompt", "Hi", "--max-new-tokens", "2", "--temperature", "0", "--compile"]
    r = subprocess.run([sys.executable, "-m", "minigpt", *argv], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 2 and r.stderr.strip() == (
        f"python -m minigpt generate: error: --compile needs a working C++ compiler to build its CPU kernels, and $CXX "
        f"({cxx}) failed to build them: fatal error: Python.h: No such file or directory (Python.h is in Python's "
        "headers: install them, e.g. python3-dev on Debian or Ubuntu); fix its setup or point $CXX at another, or drop "
        "--compile"), r.stderr


@pytest.mark.parametrize("output, said, headers", [
    ("/tmp/t/main.cpp:95:10: fatal error: Python.h: No such file or directory\ncompilation terminated.",
     "fatal error: Python.h: No such file or directory", True),
    ("/usr/bin/ld: cannot find -lgomp: No such file or directory\ncollect2: error: ld returned 1 exit status",
     "/usr/bin/ld: cannot find -lgomp: No such file or directory", False),
    ("ld: library not found for -lomp\nclang: error: linker command failed with exit code 1", "ld: library not found for -lomp", False),
    ('x.h:1:2: warning: #warning "strerror: old" [-Wcpp]\nIn file included from /usr/include/python3.11/Python.h:12,\n'
     "main.cpp:3:1: error: 'constexpr' does not name a type", "error: 'constexpr' does not name a type", False),
    ("main.cpp(95): fatal error C1083: Cannot open include file: 'Python.h': No such file or directory",
     "fatal error C1083: Cannot open include file: 'Python.h': No such file or directory", True),
    ("cab.obj : error LNK2019: unresolved external symbol __imp_PyModule_Create2 referenced in function x\n"
     "cab.pyd : fatal error LNK1120: 1 unresolved externals", "error LNK2019: unresolved external symbol "
     "__imp_PyModule_Create2 referenced in function x", False),
    ('Undefined symbols for architecture arm64:\n  "_omp_get_max_threads", referenced from:\n      _kernel in main.o\n'
     "ld: symbol(s) not found for architecture arm64\nclang: error: linker command failed with exit code 1",
     'Undefined symbols for architecture arm64: "_omp_get_max_threads", referenced from:', False),
    ("g++: internal compiler error: Killed signal terminated program cc1plus",
     "internal compiler error: Killed signal terminated program cc1plus", False),
    ("something odd\n  its last words  \n", "its last words", False),
    ("", "it said nothing", False),
])
def test_a_compiler_that_cannot_build_is_named_by_the_line_that_says_why(output, said, headers):
    """A review: the line for a compiler that fails to build the kernels is its first error, read
    from the word "error" on, or, where that is a linker's "it failed" (collect2, clang), the line
    before it; a warning that holds "strerror:" is no error; the python3-dev hint only where
    Python.h is missing, not where an error comes from a file it includes."""
    class CppCompileError(RuntimeError):  # found by its class name, as Inductor's is
        def __init__(self, output: str) -> None:
            super().__init__("C++ compile error")
            self.output = output

    line = minigpt_cli.no_cxx_compiler(CppCompileError(output))
    after = " (Python.h is in Python's headers" if headers else "; fix its setup"
    assert f"failed to build them: {said}{after}" in line
    assert ("python3-dev" in line) == headers


def test_no_cxx_compiler_names_the_compiler_torch_tried(monkeypatch):
    """A review: the line for --compile without a C++ compiler said g++ was the default, which it is
    not on macOS (torch's default is clang++ there). It names the compiler Inductor's config names
    (loaded by then), or, without that config, the default on each platform."""
    from types import SimpleNamespace

    class InvalidCxxCompiler(RuntimeError):  # found by its class name, as Inductor's is
        pass

    try:
        try:
            raise InvalidCxxCompiler("no compiler")
        except InvalidCxxCompiler as cause:
            raise RuntimeError("InductorError") from cause
    except RuntimeError as e:
        error = e
    monkeypatch.delenv("CXX", raising=False)
    config = SimpleNamespace(cpp=SimpleNamespace(cxx=(None, "clang++")))  # as torch's is on macOS
    monkeypatch.setitem(sys.modules, "torch._inductor.config", config)
    assert "and clang++ (torch's default; $CXX names another) does not run" in minigpt_cli.no_cxx_compiler(error)
    monkeypatch.delitem(sys.modules, "torch._inductor.config")
    assert ("and the default C++ compiler (g++; clang++ on macOS; $CXX names another) does not run"
            in minigpt_cli.no_cxx_compiler(error))
    monkeypatch.setenv("CXX", "/opt/bin/c++")
    assert "and $CXX (/opt/bin/c++) does not run" in minigpt_cli.no_cxx_compiler(error)
