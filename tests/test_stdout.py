"""What each command prints where: results on stdout, every message (warning:, note:, next:, a
summary of the data read) on stderr, so `minigpt train ... > result.txt` and a pipe into `jq` or
`tail -1` read results alone. And path flags expand a leading `~` as the shell would."""
from __future__ import annotations

import json
import re
from pathlib import Path

import minigpt.data
import minigpt.tokenizer_cli
from minigpt.pretrain import main as train_main
from test_sft import _run as sft_run
from test_sft import base  # noqa: F401 (a fixture)
from test_train import make_data

GPT2_DIR = Path(__file__).resolve().parent.parent / "checkpoints" / "gpt2"
STEP_LINE = re.compile(r"step \d+: ")


def assert_results_only(out: str) -> None:
    """train's and finetune's stdout: step lines, then the result as one JSON line, last."""
    *steps, last = out.splitlines()
    assert all(STEP_LINE.match(line) for line in steps), out
    assert isinstance(json.loads(last), dict), out


def test_train_says_its_warnings_and_notes_on_stderr(tmp_path, capsys):
    """A shell user's audit: `note: positions ... never train`, `warning: warmup_iters ... > max_iters`
    and `warning: --lr 0` were printed on stdout, between the step lines and the result JSON."""
    data = make_data(tmp_path / "data")
    flags = ["--data", str(data), "--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--n-positions", "32",
             "--block-size", "16", "--batch-size", "4", "--eval-iters", "1", "--eval-interval", "2", "--device", "cpu"]
    assert train_main([*flags, "--out", str(tmp_path / "out"), "--max-iters", "2", "--warmup-iters", "5",
                       "--lr", "0", "--min-lr", "0"]) == 0
    out, err = capsys.readouterr()
    assert_results_only(out)
    for said in ("note: positions 16-31 of this fresh model never train", "warning: warmup_iters (5) > max_iters (2)",
                 "warning: --lr 0: no step changes the weights", "next: minigpt generate"):
        assert said in err


def test_a_resumed_train_says_what_it_resumes_on_stderr(tmp_path, capsys):
    """A shell user's audit: the resume's line, its "settings that differ" warning and the note on
    the learning rate's schedule went to stdout."""
    data = make_data(tmp_path / "data")
    flags = ["--data", str(data), "--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--n-positions", "16",
             "--block-size", "16", "--batch-size", "4", "--eval-iters", "1", "--eval-interval", "2", "--device", "cpu",
             "--warmup-iters", "1", "--out", str(tmp_path / "out")]
    assert train_main([*flags, "--max-iters", "2"]) == 0
    capsys.readouterr()
    assert train_main(["--out", str(tmp_path / "out"), "--resume", "--max-iters", "4"]) == 0
    out, err = capsys.readouterr()
    assert_results_only(out)
    for said in (f"resuming the run in {tmp_path / 'out'} at step 2 of 4",
                 "warning: resuming with settings that differ from the saved run", "note: the learning rate of step 3"):
        assert said in err


def test_finetune_says_its_data_summary_and_notes_on_stderr(base, tmp_path, capsys):  # noqa: F811 (the fixture)
    """A shell user's audit: finetune's `sft: N train / M val examples` and `sft: note: ...` lines
    (and the strategy's summary) went to stdout, before the step lines and the result JSON."""
    pairs = tmp_path / "spaced.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": f"{c}: ", "completion": f}) + "\n"
                             for c, f in {"red": "apple", "green": "lime"}.items()))
    assert sft_run(base, tmp_path / "o", "--data", str(pairs), "--val-data", str(pairs), "--max-iters", "1") == 0
    out, err = capsys.readouterr()
    assert_results_only(out)
    for said in ("sft: 2 train / 2 val examples", "sft: note: 2 train prompts end in a space", "strategy lora: training"):
        assert said in err


def test_prepare_prints_what_it_wrote_and_says_next_on_stderr(tmp_path, capsys):
    """A shell user's audit: prepare's `next: minigpt train ...` hint was on stdout, where train's
    own `next:` is on stderr."""
    (tmp_path / "a.txt").write_text("the cat sat on the mat.\n" * 200)
    assert minigpt.data.main([str(tmp_path / "a.txt"), "--tokenizer", str(GPT2_DIR), "--out", str(tmp_path / "d")]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[-1] == f"wrote 1,448 train and 154 val tokens to {tmp_path / 'd'}" and "next:" not in out
    assert f"next: minigpt train --data {tmp_path / 'd'} --out OUT_DIR" in err


def test_tokenize_train_prints_what_it_saved_and_says_next_and_notes_on_stderr(tmp_path, capsys):
    """A shell user's audit: `tokenize --train`'s `next:` hint and its notes (a vocabulary smaller
    than asked for) were on stdout, beside the line saying what it saved."""
    (tmp_path / "a.txt").write_text("ab ab ab\n")
    assert minigpt.tokenizer_cli.main(["--train", str(tmp_path / "a.txt"), "--vocab-size", "300", "--out",
                                       str(tmp_path / "tok")]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("saved a tokenizer of ") and len(out.splitlines()) == 1
    assert "next: minigpt prepare FILES" in err and "note: only " in err


def test_path_flags_expand_a_leading_tilde(tmp_path, monkeypatch, capsys):
    """A shell user's audit: bash leaves `--out=~/x` as typed (a `~` after `=` is not a word's
    start), and prepare made a folder named `~` in the working directory, reporting "to ~/x"."""
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir(), cwd.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    (home / "a.txt").write_text("the cat sat on the mat.\n" * 200)
    assert minigpt.data.main(["~/a.txt", f"--tokenizer={GPT2_DIR}", "--out=~/d"]) == 0
    assert (home / "d" / "meta.json").is_file() and not (cwd / "~").exists()
    assert f"to {home / 'd'}\n" in capsys.readouterr().out
    assert minigpt.tokenizer_cli.main(["--train", "~/a.txt", "--vocab-size", "260", "--out=~/tok"]) == 0
    assert (home / "tok" / "vocab.json").is_file() and not (cwd / "~").exists()
    assert minigpt.tokenizer_cli.main(["--tokenizer=~/tok", "--json", "cat"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["characters"] == 3
    assert minigpt.tokenizer_cli.main(["--tokenizer", "./~", "cat"]) == 2  # `./~` is a folder named `~`: left as typed
    assert "~" in capsys.readouterr().err


def test_train_finetune_eval_and_download_path_flags_expand_a_leading_tilde(tmp_path, monkeypatch, capsys):
    """The same audit's `--out=~/x`, for the commands whose flags come from a config dataclass
    (train_config.PATH_FIELDS) and for eval's and download's own."""
    import minigpt.download
    import minigpt.evaluate
    from minigpt.finetune_config import FinetuneConfig
    from minigpt.train_config import TrainConfig, parse_config

    monkeypatch.setenv("HOME", str(tmp_path))
    train = parse_config(TrainConfig, ["--data=~/d", "--out=~/o", "--init=~/i"], "train", "")
    assert (train.data, train.out, train.init) == (f"{tmp_path}/d", f"{tmp_path}/o", f"{tmp_path}/i")
    tune = parse_config(FinetuneConfig, ["--task", "classify", "--data", "~/t.tsv", "--val-data=~/v.tsv",
                                         "--tokenizer=~/tok", "--init", "gpt2", "--out=~/o"], "finetune", "")
    assert (tune.data, tune.val_data, tune.tokenizer, tune.init) == (
        f"{tmp_path}/t.tsv", f"{tmp_path}/v.tsv", f"{tmp_path}/tok", "gpt2")
    def offline(name, out, **kwargs):
        raise OSError(f"offline: nothing written to {out}")

    monkeypatch.setattr(minigpt.download, "download_gpt2", offline)
    assert minigpt.download.main(["gpt2", "--out=~/g"]) == 2
    assert f"nothing written to {tmp_path}/g\n" in capsys.readouterr().err
    # eval: its text file (read first) named by its expanded path, not as `~/t.txt`
    assert minigpt.evaluate.main(["~/m", "~/t.txt"]) == 2
    assert f"text file {tmp_path}/t.txt does not exist" in capsys.readouterr().err


def test_scripts_path_flags_expand_a_leading_tilde(tmp_path, monkeypatch, capsys):
    """The same audit's `--out=~/x`, for the benchmark and comparison scripts, whose path flags were
    left out: bench_tokenizer looked for a file in a folder named `~`, compare_strategies wrote its
    runs under one."""
    import importlib.util

    import pytest

    def script(name):
        spec = importlib.util.spec_from_file_location(name, GPT2_DIR.parent.parent / "scripts" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir(), cwd.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(cwd)
    with pytest.raises(SystemExit):
        script("bench_tokenizer").main(["--data=~/a.txt", "--extra=~/b.txt"])
    assert f"no such file: {home}/a.txt, {home}/b.txt" in capsys.readouterr().err
    assert script("bench_generate").main(["--model=~/m"]) == 2
    assert f"checkpoint directory {home}/m does not exist" in capsys.readouterr().err
    (home / "i").mkdir()
    (home / "i" / "config.json").write_text("{}")  # (inputs that pass the script's own check: the run itself fails)
    (home / "d").write_text("To be, or not to be.\n")
    assert script("compare_strategies").main(["--init=~/i", "--task=lm", "--data=~/d", "--out=~/o", "--strategies=full"]) != 0
    assert f"--out {home}/o/full" in capsys.readouterr().out
    assert not (cwd / "~").exists()


def test_json_lines_escape_the_line_breaks_json_keeps_raw():
    """A review: generate's --prompts-file escaped U+2028, U+2029 and U+0085, but eval's
    --predictions (and --json, tokenize --json) wrote them raw, and str.splitlines() broke a record
    in three. files.json_line writes every JSON line of minigpt's output."""
    from minigpt.files import json_line

    line = json_line({"label": "a\u2028b\u2029c\u0085d", "é": "日本"})
    assert line.splitlines() == [line] and json.loads(line) == {"label": "a\u2028b\u2029c\u0085d", "é": "日本"}
    assert "日本" in line  # UTF-8 as it is, not escaped
