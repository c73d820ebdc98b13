"""scripts/compare_strategies.py tabulates the best val figures, with their steps, beside the final ones,
and deletes no directory it was not asked to (a run's OUT/STRATEGY is refused before any run starts)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "compare_strategies.py"
spec = importlib.util.spec_from_file_location("compare_strategies", SCRIPT)
compare = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compare)


def summary(strategy: str, **figures) -> dict:
    """A finetune_summary.json as `minigpt finetune` writes it, plus what run_strategy adds."""
    return {"strategy": strategy, "lr": 1e-3, "wall_s": 12.3, "trainable_params": 512, "total_params": 4096,
            "optimizer_state_bytes": 4096, "peak_memory_mib": 470.2, "peak_memory_kind": "process peak RSS",
            "tokens_per_s": 28867.4, **figures}


def test_table_shows_the_best_figures_with_their_steps_beside_the_final_ones(tmp_path):
    rows = [
        summary("full", val_loss=0.7, val_accuracy=0.6, best_val_loss=0.6114, best_val_loss_step=100,
                best_val_accuracy=0.653, best_val_accuracy_step=200),  # overfit: the last figures fell back
        summary("lora", val_loss=0.6529, val_accuracy=0.617, best_val_loss=0.6529, best_val_loss_step=300,
                best_val_accuracy=0.617, best_val_accuracy_step=300),  # still improving at the last step
    ]
    lines = compare.table(rows, "classify").splitlines()
    assert lines[0].split(" | ")[-5:] == ["best val loss (step)", "final val loss", "best val accuracy (step)",
                                          "final val accuracy", "wall s |"]
    assert lines[2].endswith("| 0.6114 (100) | 0.7000 | 0.653 (200) | 0.600 | 12 |")
    assert lines[3].endswith("| 0.6529 (300) | 0.6529 | 0.617 (300) | 0.617 | 12 |")
    lm = compare.table([summary("lora", val_loss=2.5, best_val_loss=2.25, best_val_loss_step=40)], "lm").splitlines()
    assert "accuracy" not in lm[0] and lm[2].endswith("| 2.2500 (40) | 2.5000 | 12 |")
    compare.plot(rows, "classify", tmp_path / "compare.png")  # plots the best accuracy
    assert (tmp_path / "compare.png").stat().st_size > 0


def inputs(tmp_path: Path, task: str = "lm") -> list[str]:
    """--init, --task and --data that pass the script's own check of them (finetune's
    `check_finetune_inputs`): a folder with a config.json, and a text file."""
    (tmp_path / "base").mkdir(exist_ok=True)
    (tmp_path / "base" / "config.json").write_text("{}")
    (tmp_path / "text.txt").write_text("To be, or not to be: that is the question.\n")
    return ["--init", str(tmp_path / "base"), "--task", task, "--data", str(tmp_path / "text.txt")]


def test_a_failing_run_is_one_error_line_not_a_traceback(tmp_path, capfd):
    """`minigpt finetune` prints its own error; the script adds which strategy failed, and exits
    2 as the run did (its input refused)."""
    assert compare.main([*inputs(tmp_path, "classify"), "--out", str(tmp_path / "out"), "--strategies", "frozen",
                         "--", "--max-iters", "0"]) == 2
    err = capfd.readouterr().err  # (capfd: the run's own error comes from its process)
    assert "max_iters must be >= 1, got 0" in err and "compare_strategies.py: error: the frozen run failed (exit 2)" in err


def test_lrs_that_are_not_pairs_are_a_usage_error(tmp_path, capsys):
    import pytest

    with pytest.raises(SystemExit):
        compare.main(["--init", "x", "--task", "lm", "--data", "y", "--out", str(tmp_path), "--lrs", "lora"])
    assert "--lrs takes strategy=lr pairs" in capsys.readouterr().err


def test_each_run_gets_only_its_own_strategys_options():
    """minigpt finetune refuses an option its strategy would ignore; one -- line serves every run."""
    flags = ["--max-iters", "30", "--lora-rank", "4", "--n-trainable-blocks", "2", "--lora-alpha=8", "--train-embeddings",
             "--batch-size", "16", "--no-train-embeddings", "--lora-targets", "attn.c_attn"]
    assert compare.flags_for("full", flags) == ["--max-iters", "30", "--batch-size", "16"]
    assert compare.flags_for("lora", flags) == ["--max-iters", "30", "--lora-rank", "4", "--lora-alpha=8", "--batch-size", "16",
                                                "--lora-targets", "attn.c_attn"]
    assert compare.flags_for("partial", flags) == ["--max-iters", "30", "--n-trainable-blocks", "2", "--train-embeddings",
                                                   "--batch-size", "16", "--no-train-embeddings"]
    # An audit: --gradient-checkpointing failed the frozen run (no block trains there to recompute).
    flags = ["--gradient-checkpointing", "--max-iters", "30", "--no-gradient-checkpointing"]
    assert compare.flags_for("frozen", flags) == ["--max-iters", "30"]
    assert all(compare.flags_for(s, flags) == flags for s in ("partial", "full", "lora"))


def test_a_flag_the_script_sets_per_run_is_refused_after_the_separator(tmp_path, capsys):
    """--lr after -- ran every strategy at that lr while the table showed each one's --lrs value."""
    import pytest

    for flag in (["--lr", "1e-5"], ["--strat=full"], ["--min-lr", "0"]):
        with pytest.raises(SystemExit):
            compare.main(["--init", "x", "--task", "lm", "--data", "y", "--out", str(tmp_path), "--", "--max-iters", "3", *flag])
        assert f"{flag[0]} after -- would override what this script sets for each run" in capsys.readouterr().err
    assert compare.main(["--init", str(tmp_path / "missing"), "--task", "lm", "--data", "y", "--out", str(tmp_path / "o"),
                         "--strategies", "lora", "--", "--lr-decay-iters", "5"]) == 2  # not a clash: the missing --data is what is refused
    assert "error: --data y does not exist" in capsys.readouterr().err


def fake_runs(monkeypatch, fail=(), code=2):
    """Replace the `minigpt finetune` processes: each run writes its summary into its --out, as a
    real one does, or fails (exit `code`) if its strategy is in `fail`. Returns the commands run."""
    import subprocess

    commands = []

    def run(cmd, check):
        commands.append(cmd)
        strategy, out = cmd[cmd.index("--strategy") + 1], Path(cmd[cmd.index("--out") + 1])
        if strategy in fail:
            raise subprocess.CalledProcessError(code, cmd)
        out.mkdir(parents=True)  # finetune would refuse a directory holding a run: check_run_dirs cleared it
        (out / "finetune_summary.json").write_text(json.dumps(summary(strategy, val_loss=2.5, best_val_loss=2.25,
                                                                      best_val_loss_step=40)))
    monkeypatch.setattr(compare.subprocess, "run", run)
    return commands


def test_a_run_directory_holding_the_init_model_or_the_data_is_never_deleted(tmp_path, monkeypatch, capsys):
    """Found by an audit: OUT/STRATEGY was deleted before anything was checked, with the --init
    model inside it. It is refused before any run starts, --overwrite or not."""
    import pytest

    commands = fake_runs(monkeypatch)
    (tmp_path / "cmp" / "full" / "best").mkdir(parents=True)
    (tmp_path / "cmp" / "full" / "best" / "model.safetensors").write_text("weights")
    (tmp_path / "text.txt").write_text("text")
    for init, data in ((tmp_path / "cmp" / "full" / "best", tmp_path / "text.txt"), (tmp_path / "m", tmp_path / "cmp" / "full")):
        with pytest.raises(SystemExit):
            compare.main(["--init", str(init), "--task", "lm", "--data", str(data), "--out", str(tmp_path / "cmp"),
                          "--strategies", "full", "--overwrite"])
        name = "--init" if init != tmp_path / "m" else "--data"
        assert f"{tmp_path / 'cmp' / 'full'} holds {name} " in capsys.readouterr().err
    assert (tmp_path / "cmp" / "full" / "best" / "model.safetensors").read_text() == "weights" and commands == []


@pytest.mark.parametrize("name, said", [("..", "unknown strategy '..'"), ("foo", "unknown strategy 'foo'"),
                                        ("lora,", "unknown strategy ''"), ("lora,lora", "names a strategy twice")])
def test_a_strategy_name_is_checked_before_its_directory_is_touched(name, said, tmp_path, capsys):
    """--strategies .. (with --lrs ..=1e-3) deleted OUT's parent; an unknown name deleted OUT/NAME
    before finetune refused it. Only the known strategies, each once, are run."""
    (tmp_path / "out" / "foo").mkdir(parents=True)
    (tmp_path / "out" / "foo" / "keep").write_text("")
    (tmp_path / "keep").write_text("")
    lrs = ",".join(f"{s}=1e-3" for s in name.split(",") if s) or "lora=1"
    with pytest.raises(SystemExit):
        compare.main(["--init", "x", "--task", "lm", "--data", "y", "--out", str(tmp_path / "out"), "--strategies", name,
                      "--lrs", lrs, "--overwrite"])
    assert said in capsys.readouterr().err
    assert (tmp_path / "keep").exists() and (tmp_path / "out" / "foo" / "keep").exists()


@pytest.mark.parametrize("task", ["lm", "sft"])
def test_frozen_with_lm_is_refused_before_any_run(tmp_path, capsys, task):
    with pytest.raises(SystemExit):
        compare.main(["--init", "x", "--task", task, "--data", "y", "--out", str(tmp_path), "--strategies", "frozen"])
    assert "strategy 'frozen' trains only a new head" in capsys.readouterr().err


def test_only_the_scripts_own_runs_are_replaced_without_overwrite(tmp_path, monkeypatch, capsys):
    """A directory the script did not make (not in OUT/compare_runs.json) is refused unless
    --overwrite; its own runs from before are replaced by fresh ones, as always."""
    commands = fake_runs(monkeypatch)
    out = tmp_path / "out"
    (out / "lora").mkdir(parents=True)
    (out / "lora" / "mine.txt").write_text("someone's work")
    argv = [*inputs(tmp_path), "--out", str(out), "--strategies", "lora,full"]
    with pytest.raises(SystemExit):
        compare.main(argv)
    assert f"{out / 'lora'} already exists and is not a run of this script" in capsys.readouterr().err
    assert (out / "lora" / "mine.txt").exists() and commands == []
    assert compare.main([*argv, "--overwrite"]) == 0
    assert not (out / "lora" / "mine.txt").exists() and json.loads((out / "compare_runs.json").read_text()) == {"strategies": ["lora", "full"]}
    (out / "full" / "stale").write_text("")
    assert compare.main(argv) == 0  # its own runs: fresh ones replace them, no --overwrite needed
    assert not (out / "full" / "stale").exists() and len(commands) == 4


def test_a_failed_run_leaves_the_table_of_the_others(tmp_path, monkeypatch, capsys):
    """One failed run ended the comparison with no table for the runs that had finished; now
    the others still run, the table holds the finished ones and says which failed, and the exit is 1."""
    fake_runs(monkeypatch, fail=("partial",))
    out = tmp_path / "out"
    assert compare.main([*inputs(tmp_path), "--out", str(out)]) == 1
    assert "the partial run failed (exit 2)" in capsys.readouterr().err
    text = (out / "compare.md").read_text()
    assert "| lora |" in text and "| full |" in text and "| partial |" not in text and "Failed (no row): partial." in text
    assert (out / "compare.png").stat().st_size > 0
    assert sorted(p.name for p in out.iterdir()) == ["compare.md", "compare.png", "compare_runs.json", "full", "lora"]  # no .tmp


def test_abbreviated_flags_are_written_out_before_they_are_sorted_by_strategy(tmp_path, monkeypatch, capsys):
    """`-- --lora-r 4` went to the partial run (flags_for knew only full names), where argparse
    expanded it to --lora-rank and refused it, failing that run."""
    assert compare.full_flag_names(["--lora-r", "4", "--max-it=3", "--no-train-emb", "-1"]) == [
        "--lora-rank", "4", "--max-iters=3", "--no-train-embeddings", "-1"]
    commands = fake_runs(monkeypatch)
    assert compare.main([*inputs(tmp_path), "--out", str(tmp_path), "--strategies", "lora,partial",
                         "--", "--lora-r", "4", "--max-it", "3"]) == 0
    assert commands[0][-4:] == ["--lora-rank", "4", "--max-iters", "3"] and commands[1][-2:] == ["--max-iters", "3"]
    for flag, said in (("--lora", "--lora after -- is ambiguous: --lora-rank, --lora-alpha"), ("--bogus", "--bogus after -- is not a flag")):
        with pytest.raises(SystemExit):
            compare.main(["--init", "x", "--task", "lm", "--data", "y", "--out", str(tmp_path), "--", flag, "1"])
        assert said in capsys.readouterr().err


@pytest.mark.parametrize("missing", ["--init", "--data"])
def test_a_missing_init_or_data_is_refused_once_before_any_run_or_folder(tmp_path, monkeypatch, capsys, missing):
    """An audit: `--init /nonexistent` started three `minigpt finetune` runs, each importing torch to
    print the same error, left OUT/compare_runs.json behind and exited 1. It is now checked once,
    as finetune checks it, in one line with exit 2, before OUT is made or any run starts."""
    commands = fake_runs(monkeypatch)
    argv = inputs(tmp_path)
    argv[argv.index(missing) + 1] = str(tmp_path / "nonexistent")
    assert compare.main([*argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"compare_strategies.py: error: {missing} {tmp_path / 'nonexistent'} does not exist") and \
        err.count("\n") == 1, err
    assert commands == [] and not (tmp_path / "out").exists()


@pytest.mark.parametrize("codes, exit_code", [((2, 2, 2), 2), ((2, 1, 2), 1)])
def test_every_run_refused_exits_2_as_they_did_and_any_other_failure_1(tmp_path, monkeypatch, capsys, codes, exit_code):
    """When every run failed with exit 2 (its input or usage refused, README's exit codes) the
    script said 1, a crash's code. Now it says 2 then; 1 still when any run failed otherwise."""
    import subprocess

    def run(cmd, check):
        strategy = cmd[cmd.index("--strategy") + 1]
        raise subprocess.CalledProcessError(codes[["lora", "partial", "full"].index(strategy)], cmd)
    monkeypatch.setattr(compare.subprocess, "run", run)
    assert compare.main([*inputs(tmp_path), "--out", str(tmp_path / "out")]) == exit_code
    assert capsys.readouterr().err.count("run failed") == 3
