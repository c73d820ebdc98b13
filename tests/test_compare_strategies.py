"""scripts/compare_strategies.py tabulates the best val figures, with their steps, beside the final ones."""
from __future__ import annotations

import importlib.util
from pathlib import Path

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


def test_a_failing_run_is_one_error_line_not_a_traceback(tmp_path, capsys):
    """`minigpt finetune` prints its own error; the script adds which strategy failed and exits 1."""
    assert compare.main(["--init", str(tmp_path / "missing"), "--task", "classify", "--data", str(tmp_path),
                         "--out", str(tmp_path / "out"), "--strategies", "frozen"]) == 1
    assert "compare_strategies.py: error: the frozen run failed (exit 2)" in capsys.readouterr().err


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


def test_a_flag_the_script_sets_per_run_is_refused_after_the_separator(tmp_path, capsys):
    """--lr after -- ran every strategy at that lr while the table showed each one's --lrs value."""
    import pytest

    for flag in (["--lr", "1e-5"], ["--strat=full"], ["--min-lr", "0"]):
        with pytest.raises(SystemExit):
            compare.main(["--init", "x", "--task", "lm", "--data", "y", "--out", str(tmp_path), "--", "--max-iters", "3", *flag])
        assert f"{flag[0]} after -- would override what this script sets for each run" in capsys.readouterr().err
    assert compare.main(["--init", str(tmp_path / "missing"), "--task", "lm", "--data", "y", "--out", str(tmp_path / "o"),
                         "--strategies", "lora", "--", "--lr-decay-iters", "5"]) == 1  # not a clash: the run itself starts (and fails)
