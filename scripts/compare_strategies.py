"""Fine-tuning strategies side by side: one base model, one dataset, the same budget for each.

    python scripts/compare_strategies.py --init checkpoints/shakespeare --task classify \
        --data data/sst2 --out out/compare -- \
        --max-examples 4000 --max-val-examples 872 --max-iters 300 --batch-size 16 --block-size 64

data/sst2 is GLUE's SST-2 folder (train.tsv, dev.tsv; README.md's fine-tuning section says where
to get it); this project's machines keep their own split of it in ../shared/data/sst2 (BENCHMARKS.md).

Each strategy runs as its own `minigpt finetune` process (so its peak memory is its own), with
the same steps, batch, context and data; everything after `--` is passed to every run
(a strategy's own options, such as --lora-rank, only to its run, and --gradient-checkpointing to every
run but frozen's; the flags the script sets itself,
--lr and --strategy among them, are refused there). Each
strategy keeps its usual learning rate (--lrs): a new head or a LoRA adapter starts from zero
or random and wants a larger step than pretrained weights do.
Writes OUT/compare.md (the table) and OUT/compare.png, and prints the table:
trainable parameters, AdamW state, peak memory, tokens/s (median of the logged intervals,
padding included), then the best val loss with its step and the final val loss, and for classify
the best and final val accuracy the same way.
The best figure is what a strategy reaches on this budget, so strategies are compared (and
plotted) on it; the final one beside it, and the best one's step, show whether a strategy fell
back by the end (overfitting) or was still improving. OUT/STRATEGY/best keeps the weights of the
best val loss; those of the best accuracy are kept only if its step is the best loss's or the last.
On CPU "peak memory" is the process's peak RSS, which includes Python, torch and the data
(compare the differences between rows); on a GPU it is CUDA's peak allocation.

Each run starts fresh: an OUT/STRATEGY this script made before (OUT/compare_runs.json lists them)
is deleted first. Any other OUT/STRATEGY that is not empty is refused unless --overwrite, and one
that holds --init or --data always is. An --init or --data that no run could start from is refused
once, as `minigpt finetune` refuses it, before OUT is made. A run that fails does not stop the
others; the table then shows the runs that finished, and the script exits 1 (2 when every run
failed with exit 2: finetune's bad input or usage, as the exit codes in README.md say).
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from minigpt.cli import FAILED
from minigpt.files import atomic_path, atomic_write_text, no_follow, read_json, user_path
from minigpt.finetune import check_finetune_inputs
from minigpt.finetune_config import FROZEN_LM_ERROR, STRATEGIES, STRATEGY_OPTIONS, FinetuneConfig
from minigpt.train_config import add_config_flags, as_flag

DEFAULT_LRS = "frozen=1e-3,lora=1e-3,partial=3e-4,full=1e-4"
# What this script sets for each run. Given again after `--`, a flag would win (argparse keeps the
# last value; a prefix such as --strat counts too) while the table still showed the script's
# value: every row labelled with its own lr, say, but all run at the one passed through.
OWN_FLAGS = ("--init", "--task", "--data", "--strategy", "--lr", "--min-lr", "--out")
# Which OUT/STRATEGY directories this script made: the only ones it deletes without --overwrite.
RUNS_FILE = "compare_runs.json"


def finetune_flags() -> list[str]:
    """Every flag `minigpt finetune` has, from the same dataclass its parser is built from."""
    parser = argparse.ArgumentParser(add_help=False)
    add_config_flags(parser, FinetuneConfig)
    return [flag for action in parser._actions for flag in action.option_strings]


def full_flag_names(passthrough: list[str]) -> list[str]:
    """`passthrough` with each abbreviated flag written out (--lora-r 4 → --lora-rank 4).

    argparse in `minigpt finetune` accepts any unique prefix, but `flags_for` sorts flags by their
    full names: an abbreviation of another strategy's option slipped through to a run that then
    refused it, which ended the whole comparison. A flag finetune does not have, or a prefix of
    several, is a ValueError naming it, before any run starts."""
    known, out = finetune_flags(), []
    for arg in passthrough:
        flag, eq, value = arg.partition("=")
        if arg.startswith("--") and flag not in known:
            matches = [k for k in known if k.startswith(flag)]
            if len(matches) != 1:
                raise ValueError(f"{flag} after -- is {'ambiguous: ' + ', '.join(matches) if matches else 'not a flag of minigpt finetune'}; "
                                 "give the full flag name")
            arg = matches[0] + eq + value
        out.append(arg)
    return out


def flags_for(strategy: str, passthrough: list[str]) -> list[str]:
    """The flags after `--` that `strategy` reads: `minigpt finetune` refuses one that its strategy
    would ignore (--lora-rank for partial, --n-trainable-blocks for lora, ...), but one command line
    here serves every run, so each run gets only its own strategy's options. --gradient-checkpointing
    goes to every run but frozen's, which trains no block to recompute (finetune refuses it there)."""
    switches = {"train_embeddings", "gradient_checkpointing"}  # boolean flags, --x or --no-x: no value follows them
    takers = {name: {owner} for name, owner in STRATEGY_OPTIONS.items()}  # option → the strategies that read it
    takers["gradient_checkpointing"] = set(STRATEGIES) - {"frozen"}
    foreign = {}  # flag → option, for the options this strategy does not read
    for name, owners in takers.items():
        if strategy not in owners:
            foreign[as_flag(name)] = name
            if name in switches:
                foreign[as_flag(name, False)] = name
    kept, args = [], iter(passthrough)
    for arg in args:
        flag, inline, _ = arg.partition("=")
        if flag not in foreign:
            kept.append(arg)
        elif foreign[flag] not in switches and not inline:
            next(args, None)  # drop its value too
    return kept


def made_here(out: Path) -> list[str]:
    """The strategies whose OUT/STRATEGY this script made (RUNS_FILE), [] if none."""
    return read_json(out / RUNS_FILE).get("strategies", []) if (out / RUNS_FILE).exists() else []


def check_run_dirs(strategies: list[str], args) -> None:
    """Refuse, before any run starts, an OUT/STRATEGY that a fresh run may not delete (ValueError naming it).

    It used to be deleted unchecked: with --init or --data inside it (the model to start from,
    lost), or for a strategy named ".." (OUT's parent). Now one that holds --init or --data is
    always refused, and one this script did not make (not empty, not in RUNS_FILE) unless --overwrite."""
    out, mine = Path(args.out), made_here(Path(args.out))
    for s in strategies:
        run = (out / s).resolve()
        for name, path in (("--init", args.init), ("--data", args.data)):
            if run == Path(path).resolve() or run in Path(path).resolve().parents:
                raise ValueError(f"{out / s} holds {name} {path}, and a fresh {s} run deletes that directory first: "
                                 "choose another --out")
        if (out / s).is_symlink() or (run.exists() and not run.is_dir()):
            raise ValueError(f"{out / s} is a file or a link, where the {s} run's directory goes: choose another --out")
        if run.is_dir() and any(run.iterdir()) and s not in mine and not args.overwrite:
            raise ValueError(f"{out / s} already exists and is not a run of this script (not listed in {out / RUNS_FILE}); "
                             f"a fresh {s} run would delete it: pass --overwrite to allow that, or choose another --out")


def run_strategy(strategy: str, lr: float, args, passthrough: list[str]) -> dict:
    out = Path(args.out) / strategy
    mine = made_here(Path(args.out))
    if out.exists():  # check_run_dirs allowed it: a fresh run each time, never resume a stale one by accident
        shutil.rmtree(out)
    if strategy not in mine:  # recorded before the run makes the directory, so a killed run is still ours
        atomic_write_text(Path(args.out) / RUNS_FILE, json.dumps({"strategies": [*mine, strategy]}) + "\n")
    cmd = [sys.executable, "-m", "minigpt.cli", "finetune", "--init", args.init, "--task", args.task,
           "--data", args.data, "--strategy", strategy, "--lr", str(lr), "--min-lr", str(lr / 10),
           "--out", str(out), *flags_for(strategy, passthrough)]
    print("$ minigpt", " ".join(cmd[3:]), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    summary = json.loads((out / "finetune_summary.json").read_text(encoding="utf-8"))
    return summary | {"lr": lr, "wall_s": time.perf_counter() - t0}


def table(rows: list[dict], task: str) -> str:
    """A Markdown table with one row per run's finetune_summary.json (plus its lr and wall_s)."""
    head = ["strategy", "lr", "trainable params", "trainable %", "AdamW state (MiB)", f"peak memory (MiB, {rows[0]['peak_memory_kind']})",
            "tokens/s", "best val loss (step)", "final val loss"]
    head += ["best val accuracy (step)", "final val accuracy"] if task == "classify" else []
    head += ["wall s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["strategy"], f"{r['lr']:g}", f"{r['trainable_params']:,}", f"{100 * r['trainable_params'] / r['total_params']:.2f}",
                 f"{r['optimizer_state_bytes'] / 2**20:.1f}", f"{r['peak_memory_mib']:.0f}", f"{r['tokens_per_s']:,.0f}",
                 f"{r['best_val_loss']:.4f} ({r['best_val_loss_step']})", f"{r['val_loss']:.4f}"]
        if task == "classify":
            cells += [f"{r['best_val_accuracy']:.3f} ({r['best_val_accuracy_step']})", f"{r['val_accuracy']:.3f}"]
        cells += [f"{r['wall_s']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows: list[dict], task: str, path: Path) -> None:
    """Bar charts of the table's main columns, written atomically to `path` (a PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = ("best_val_accuracy", "best val accuracy") if task == "classify" else ("best_val_loss", "best val loss")
    panels = [("trainable_params", "trainable parameters", True), ("peak_memory_mib", "peak memory (MiB)", False),
              ("tokens_per_s", "tokens/s", False), (*metric, False)]
    names = [r["strategy"] for r in rows]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.6))
    for ax, (key, title, log) in zip(axes, panels):
        ax.bar(names, [r[key] for r in rows], color="tab:blue")
        ax.set_title(title)
        if log:
            ax.set_yscale("log")
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    with atomic_path(Path(path)) as tmp, open(tmp, "wb", opener=no_follow) as f:
        fig.savefig(f, dpi=100, format="png")  # (a file object has no suffix: name the format)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    own, passthrough = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="Arguments after -- go to every `minigpt finetune` run; a strategy's own options (--lora-rank, --n-trainable-blocks, ...) only to its run.")
    parser.add_argument("--init", required=True, type=user_path, help="base model directory (HF layout, with tokenizer files)")
    parser.add_argument("--task", choices=("lm", "classify", "sft"), required=True)
    parser.add_argument("--data", required=True, type=user_path, help="lm: a text file, or a DATA_DIR `minigpt prepare` wrote with the "
                        "--init model's tokenizer (from several text files, say); classify: a TSV file or a directory; "
                        "sft: a JSON Lines file of prompt/completion pairs (its --val-data after --)")
    parser.add_argument("--out", required=True, type=user_path, help="one sub-directory per strategy, plus compare.md and compare.png")
    parser.add_argument("--strategies", default=None, help="comma-separated (default: all that fit the task)")
    parser.add_argument("--lrs", default=DEFAULT_LRS, help=f"strategy=lr pairs (default: {DEFAULT_LRS})")
    parser.add_argument("--overwrite", action="store_true",
                        help="delete an OUT/STRATEGY this script did not make (never one holding --init or --data)")
    args = parser.parse_args(own)
    clash = [a for a in passthrough if a.startswith("--") and any(f.startswith(a.partition("=")[0]) for f in OWN_FLAGS)]
    if clash:
        parser.error(f"{' '.join(clash)} after -- would override what this script sets for each run, and the table would "
                     "not show it: give --init/--task/--data/--out before --, learning rates as --lrs (min lr = lr / 10), "
                     "strategies as --strategies")
    try:
        lrs = {k.strip(): float(v) for k, v in (pair.split("=") for pair in args.lrs.split(","))}
    except ValueError:  # no "=", or not a number
        parser.error(f"--lrs takes strategy=lr pairs such as {DEFAULT_LRS}, got {args.lrs!r}")
    default = ["frozen", "lora", "partial", "full"] if args.task == "classify" else ["lora", "partial", "full"]
    strategies = args.strategies.split(",") if args.strategies else default
    # Each name becomes a directory under OUT that is deleted before its run: only known names.
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown:
        parser.error(f"--strategies: unknown strategy {', '.join(map(repr, unknown))}; choose from {', '.join(STRATEGIES)}")
    if len(set(strategies)) < len(strategies):
        parser.error(f"--strategies names a strategy twice ({args.strategies}): its second run would delete the first")
    if args.task in ("lm", "sft") and "frozen" in strategies:
        parser.error(FROZEN_LM_ERROR)
    missing = [s for s in strategies if s not in lrs]
    if missing:
        parser.error(f"no learning rate for {missing} in --lrs")
    try:
        passthrough = full_flag_names(passthrough)
        check_run_dirs(strategies, args)
    except ValueError as e:
        parser.error(str(e))
    # Once here, not once per run: each run would import torch to say the same line, and OUT be made for nothing.
    try:
        check_finetune_inputs(FinetuneConfig(init=args.init, task=args.task, data=args.data, strategy=strategies[0]))
    except (OSError, ValueError) as e:
        print(f"compare_strategies.py: error: {e}", file=sys.stderr)
        return FAILED

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, failed = [], {}  # failed: strategy → its run's exit code
    for s in strategies:  # a failed run does not stop the others: its row is missing, the rest are compared
        try:
            rows.append(run_strategy(s, lrs[s], args, passthrough))
        except subprocess.CalledProcessError as e:  # the run printed its own error above: no traceback on top
            print(f"compare_strategies.py: error: the {s} run failed (exit {e.returncode}); its output is above",
                  file=sys.stderr)
            failed[s] = e.returncode
    if not rows:  # nothing to tabulate: an earlier compare.md stays as it was
        return FAILED if set(failed.values()) == {FAILED} else 1  # every run refused its input: so is the comparison's
    text = table(rows, args.task)
    note = f"\n\nFailed (no row): {', '.join(failed)}." if failed else ""
    command = "python scripts/compare_strategies.py " + " ".join(argv)
    atomic_write_text(out / "compare.md", f"Base `{args.init}`, task {args.task} on `{args.data}`.\n\n```\n{command}\n```\n\n"
                                          f"{text}{note}\n")
    plot(rows, args.task, out / "compare.png")
    print(text + note)
    print(f"wrote {out / 'compare.md'} and {out / 'compare.png'}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
