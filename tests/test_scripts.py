"""The scripts in scripts/ (shell drivers and benchmarks): their arguments are checked before any work.

A benchmark's or driver's bad flag must cost one `error:` line and exit 2, not a traceback after
minutes of timing, a spent GPU lease, or (train_shakespeare.sh) the shipped checkpoint overwritten.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("arg,code", [("--help", 0), ("-h", 0), ("--vocab=300", 2)])
def test_train_shakespeare_with_an_argument_prints_its_usage_and_changes_nothing(arg, code, tmp_path):
    """It takes its settings from the environment only: `--help` started a full run that replaced
    the shipped checkpoints/shakespeare. Now any argument prints the header and writes nothing."""
    (tmp_path / "text.txt").write_text("To be, or not to be, that is the question.\n" * 20)
    shipped = {p: p.stat().st_mtime_ns for p in (ROOT / "checkpoints" / "shakespeare").iterdir()}
    env = {**os.environ, "TEXT": str(tmp_path / "text.txt"), "WORK": str(tmp_path / "work"),
           "SHIP": str(tmp_path / "ship"), "ITERS": "1"}
    r = subprocess.run(["bash", str(ROOT / "scripts" / "train_shakespeare.sh"), arg], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == code, r.stdout + r.stderr
    usage = r.stdout if code == 0 else r.stderr
    assert usage.startswith("Reproduce the shipped model") and "TEXT=" in usage, usage
    assert sorted(p.name for p in tmp_path.iterdir()) == ["text.txt"]
    assert {p: p.stat().st_mtime_ns for p in (ROOT / "checkpoints" / "shakespeare").iterdir()} == shipped


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only answer")
def test_gpu_check_refuses_an_unknown_step_before_running_any(tmp_path):
    """`gpu_check.sh train trian` ran `train` (GPU time) before it found the typo; now every name is
    checked first, before the CUDA check itself."""
    r = subprocess.run(["bash", "scripts/gpu_check.sh", "tests", "trian"], cwd=ROOT, capture_output=True, text=True,
                       timeout=60, env={**os.environ, "OUT": str(tmp_path / "out")})
    assert r.returncode == 2 and "gpu_check: unknown step 'trian'" in r.stderr, r.stdout + r.stderr
    assert "no CUDA device" not in r.stderr and "== tests" not in r.stdout, r.stdout + r.stderr
    assert not (tmp_path / "out").exists()  # (a docs audit: its log folder was made first)
    r = subprocess.run(["bash", "scripts/gpu_check.sh", "--help"], cwd=ROOT, capture_output=True, text=True,
                       timeout=60, env={**os.environ, "OUT": str(tmp_path / "out")})
    assert r.returncode == 0 and r.stdout.startswith("Every check that needs a GPU") and "memory" in r.stdout, r.stdout + r.stderr
    assert not (tmp_path / "out").exists()


def run_bench(name: str, argv: list[str], monkeypatch, capsys) -> tuple[int, str, str]:
    """`minigpt bench NAME ARGV` in this process: (exit status, stdout, stderr)."""
    from minigpt import bench

    monkeypatch.setattr(sys, "argv", sys.argv[:])  # bench.main sets sys.argv for the script
    code = bench.main([name, *argv])
    out, err = capsys.readouterr()
    return code, out, err


def offline_gpt2(*args, **kwargs):
    from minigpt.download import DownloadError

    raise DownloadError("gpt2 is neither in checkpoints/gpt2 nor in the Hugging Face cache, and $HF_HUB_OFFLINE is set")


@pytest.mark.parametrize("model,named", [
    ("not-a-model", "no config.json in"),
    ("/nope", "checkpoint directory /nope does not exist"),
    ("gpt2", "gpt2 is neither in checkpoints/gpt2"),  # offline, GPT.from_pretrained's download refused
])
def test_bench_generate_refuses_a_model_it_cannot_load_in_one_line(model, named, tmp_path, monkeypatch, capsys):
    """A traceback before: only the device and the lengths were checked as user errors."""
    from minigpt import GPT

    (tmp_path / "not-a-model").mkdir()
    (tmp_path / "not-a-model" / "notes.txt").write_text("no checkpoint here")
    monkeypatch.chdir(tmp_path)
    if model == "gpt2":
        monkeypatch.setattr(GPT, "from_pretrained", offline_gpt2)
    code, out, err = run_bench("generate", ["--model", model, "--repeats", "1"], monkeypatch, capsys)
    assert code == 2 and out == "" and err.count("\n") == 1, (out, err)
    assert err.startswith(f"bench_generate.py: error: {named}"), err


@pytest.mark.parametrize("flags,named", [
    (["--steps", "0"], "--steps must be ≥ 1, got 0"),
    (["--batch-size", "0"], "--batch-size must be ≥ 1, got 0"),
    (["--block-size", "0"], "--block-size must be ≥ 1, got 0"),
    (["--configs", "foo"], "--configs: unknown config 'foo'"),
    (["--configs", "small,"], "--configs: unknown config ''"),
])
def test_bench_train_refuses_a_bad_flag_before_building_a_model(flags, named, monkeypatch, capsys):
    """Each was a traceback (--steps 0 after every step ran: the median of no times)."""
    code, out, err = run_bench("train", ["--configs", "small", "--batch-size", "1", "--block-size", "16", "--steps", "1",
                                         "--warmup", "0", *flags], monkeypatch, capsys)
    assert code == 2 and out == "" and err.count("\n") == 1, (out, err)
    assert err.startswith(f"bench_train.py: error: {named}"), err


def test_bench_train_help_states_its_defaults(monkeypatch, capsys):
    code, out, _ = run_bench("train", ["--help"], monkeypatch, capsys)
    out = " ".join(out.split())  # argparse wraps the help text
    assert code == 0 and "(default: small,124M)" in out and "(default: 0.1," in out, out
    assert "--device DEVICE cpu, cuda or cuda:N (default: cpu)" in out, out


def test_bench_train_prints_benchmarks_md_table(monkeypatch, capsys):
    """Rows to paste under BENCHMARKS.md's header, as the other benchmarks print theirs."""
    code, out, _ = run_bench("train", ["--configs", "small", "--batch-size", "1", "--block-size", "8", "--steps", "1",
                                       "--warmup", "0", "--dropout", "0"], monkeypatch, capsys)
    assert code == 0, out
    table = out[out.index("| config |"):].splitlines()
    assert table[0] == "| config | model | ms/step | spread | tokens/s | vs transformers (median) | (fastest steps) |"
    assert table[1] == "|---|---|---:|---:|---:|---:|---:|"
    assert [row.split(" | ")[:2] for row in table[2:]] == [["| small", "transformers"], ["| ", "minigpt"],
                                                            ["| ", "minigpt+train"]]
    assert table[2].endswith(" | 1.00× | 1.00× |"), table[2]


def script_globals(name: str) -> dict:
    """The live globals of scripts/NAME.py loaded as a module (not run): its functions see what a test sets here."""
    import runpy

    return runpy.run_path(str(ROOT / "scripts" / f"{name}.py"))["main"].__globals__


def test_bench_tokenizer_training_ratio_is_a_speed_ratio_like_the_encode_table(monkeypatch):
    """"× HF" was minigpt's seconds / HF's (> 1: slower), the opposite of the encode table's ratios."""
    bench = script_globals("bench_tokenizer")
    seconds = iter([(1.0, 1.0), (2.0, 2.0)])  # minigpt's training (timed first), then HF's BpeTrainer
    monkeypatch.setitem(bench, "median_seconds", lambda *args, **kwargs: next(seconds))
    rows = bench["bench_train"]("some text", 300, 3)
    assert rows == [("HF tokenizers BpeTrainer", "0.0", "2.00", "1.00"), ("minigpt Tokenizer.train", "0.0", "1.00", "2.00")]


def test_bench_tokenizer_times_loading_against_hf_on_the_same_files():
    """The loading table: each engine's ms, and its speed against HF tokenizers' (its own row 1.00)."""
    rows = script_globals("bench_tokenizer")["bench_load"](1)
    assert [name for name, _, _ in rows] == ["HF tokenizers BPE.from_file", "transformers GPT2TokenizerFast.from_pretrained",
                                             "minigpt Tokenizer.from_pretrained"]
    assert rows[0][2] == "1.00" and all(float(ms) > 0 and float(ratio) > 0 for _, ms, ratio in rows), rows


@pytest.mark.parametrize("cpus,chars,processes", [(2, "short", 1), (2, "long", 2), (1, "long", 1)])
def test_bench_tokenizer_labels_encode_batch_with_the_processes_that_ran(cpus, chars, processes, monkeypatch):
    """"encode_batch (2 procs)" was printed for a text that encode_batch encodes in this process
    (shorter than MIN_PARALLEL_CHARS, or on one core)."""
    import minigpt.tokenizer_batch as tokenizer_batch
    from minigpt.tokenizer_batch import MIN_PARALLEL_CHARS

    bench = script_globals("bench_tokenizer")
    monkeypatch.setattr(tokenizer_batch, "available_cpus", lambda: cpus)  # (encode_batch's own test: processes_for)
    text = "x" * (MIN_PARALLEL_CHARS - 1 if chars == "short" else MIN_PARALLEL_CHARS)
    assert bench["batch_processes"](text) == processes


@pytest.mark.parametrize("flags,named", [
    (["--repeats", "0"], "--repeats must be ≥ 1, got 0"),
    (["--vocab-size", "10"], "--vocab-size must be ≥ 257 (the 256 bytes and <|endoftext|>), got 10"),
    (["--data", "empty.txt"], "--data empty.txt is empty: the benchmark needs a text to encode"),
    (["--big-mb", "nan"], "--big-mb must be a finite number of MB, got nan"),  # (a scripts audit: a traceback)
])
def test_bench_tokenizer_refuses_a_bad_flag_before_encoding(flags, named, tmp_path, monkeypatch, capsys):
    """--repeats 0 was a traceback; --vocab-size 10 one too, after the whole encode benchmark; an
    empty --data a ZeroDivisionError."""
    (tmp_path / "text.txt").write_text("To be, or not to be, that is the question.\n")
    (tmp_path / "empty.txt").write_text("")
    monkeypatch.chdir(tmp_path)
    code, out, err = run_bench("tokenizer", ["--data", "text.txt", "--extra", *flags], monkeypatch, capsys)
    assert code == 2 and out == "" and f"bench_tokenizer.py: error: {named}\n" in err and "Traceback" not in err, err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only answer")
def test_bench_sampling_without_cuda_says_so_on_stderr_with_its_name(monkeypatch, capsys):
    """It printed "bench_sampling needs a CUDA GPU" to stdout, where a pipe to a table took it."""
    code, out, err = run_bench("sampling", [], monkeypatch, capsys)
    assert code == 2 and out == "" and err.startswith("bench_sampling.py: error: needs a CUDA GPU"), (out, err)


def test_bench_sampling_cpu_times_both_samplers_for_every_config_and_spread(monkeypatch, capsys):
    """The CPU sampling benchmark prints a row per config × batch × spread, each with both samplers'
    µs and their ratio; a vocabulary past TOP_P_HEAD (1024) takes the head path for peaked rows."""
    threads = torch.get_num_threads()
    try:
        code, out, err = run_bench("sampling_cpu", ["--batch", "1", "2", "--vocab", "2048", "--repeats", "1",
                                                    "--calls", "1", "--threads", "1"], monkeypatch, capsys)
    finally:
        torch.set_num_threads(threads)
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith(("| top-p", "| all", "| min-p"))]
    assert code == 0 and err == "" and len(rows) == 3 * 2 * 4, (out, err)
    for config, batch, spread, kept, ours, theirs, ratio in rows:
        assert 1 <= int(kept) <= 2048 and float(ours) > 0 and float(theirs) > 0 and ratio.strip().endswith("x")
    parts = {line.split("|")[1].strip(): line.split("|")[2:4] for line in out.splitlines()
             if line.startswith(("| sort", "| topk", "| exponential"))}  # the parts the docs quote, per batch
    assert list(parts) == ["sort (the whole row)", "topk(1024) (the head)", "topk(2048) (the second head)",
                           "exponential_ (torch's noise)", "exponential_noise (minigpt's)"], out
    assert all(float(us) > 0 for both in parts.values() for us in both), out


@pytest.mark.parametrize("flags,named", [(["--repeats", "0"], "--repeats must be ≥ 1, got 0"),
                                         (["--threads", "-1"], "--threads must be ≥ 0 (0: leave as is), got -1")])
def test_bench_sampling_cpu_refuses_a_bad_count(flags, named, monkeypatch, capsys):
    """--threads -1 was torch's RuntimeError, a traceback."""
    code, out, err = run_bench("sampling_cpu", flags, monkeypatch, capsys)
    assert code == 2 and out == "" and f"bench_sampling_cpu.py: error: {named}" in err, err


def test_bench_tokenizers_tiktoken_is_tiktokens_own_gpt2_encoding():
    """A benchmarking audit: the reference was built with minigpt's split pattern, ~10% slower than
    the pattern of tiktoken's own gpt2 encoding (r50k's), so every "× tiktoken" was flattering."""
    from tiktoken_ext.openai_public import r50k_pat_str

    tik, _hf = script_globals("bench_tokenizer")["engines"]()
    assert tik._pat_str == r50k_pat_str and tik.encode_ordinary("Hello world") == [15496, 995]


@pytest.mark.parametrize("flags,named", [
    (["--repetition-penalty", "0"], "--repetition-penalty must be in (0, inf) (1 means off), got 0.0"),
    (["--repetition-penalty", "nan"], "--repetition-penalty must be in (0, inf) (1 means off), got nan"),
    (["--memory", "8", "--top-p", "0.9"], "--top-p is for the timed runs, which --memory does not make: drop it, or drop --memory"),
    (["--memory", "8", "--compile", "--new-tokens", "4"],
     "--new-tokens, --compile are for the timed runs, which --memory does not make: drop them, or drop --memory"),
])
def test_bench_generate_refuses_flags_it_would_fail_on_or_leave_unused_before_any_timing(flags, named, monkeypatch, capsys):
    """A scripts audit: --repetition-penalty 0 was a traceback after the TTFT timings (minutes with
    the default 124M), and --memory left --top-p, --compile and the other flags of the timed runs
    unused without a word."""
    timed = [] if "--memory" in flags else ["--ttft-lengths", "8"]  # (refused with --memory too)
    code, out, err = run_bench("generate", ["--model", "checkpoints/shakespeare", "--repeats", "1", "--batches", "1",
                                            "--no-bf16", *timed, *flags], monkeypatch, capsys)
    assert code == 2 and out == "" and err == f"bench_generate.py: error: {named}\n", (out, err)


def test_bench_generate_says_which_sampler_it_times(monkeypatch, capsys):
    """A benchmarking audit: sampled runs took `generate`'s default sampler, the fused kernel or
    torch's depending on whether triton imports, and the output did not say which."""
    code, out, err = run_bench("generate", ["--model", "checkpoints/shakespeare", "--repeats", "1", "--new-tokens", "3",
                                            "--batches", "1", "--ttft-lengths", "8", "--no-bf16", "--top-p", "0.9",
                                            "--sampler", "torch"], monkeypatch, capsys)
    assert code == 0, err
    assert "top_p 0.9 in every TPOT run (minigpt's torch sampler)" in out and "transformers runs fp32 on a CPU" in out


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="a CPU's --memory resets the peak RSS: Linux")
def test_bench_generate_memory_gives_the_cache_and_the_prefills_peak(monkeypatch, capsys):
    """README's prefill peak beside the KV cache came from scratch scripts no one could rerun; now
    `--memory` measures it, each run in a fresh process. The cache's bytes must be the formula's,
    and the prefill's peak at least its MLP's hidden activation (B·T·4·n_embd fp32 numbers at once)."""
    import re

    from minigpt import GPTConfig

    shakespeare = str(ROOT / "checkpoints" / "shakespeare")
    code, out, err = run_bench("generate", ["--model", shakespeare, "--memory", "257", "--batches", "4"], monkeypatch, capsys)
    assert code == 2 and out == "" and "--memory 257 exceeds the model's context n_positions=256" in err, (out, err)
    # (a review) --model is read as every minigpt command reads it: a missing one is said so
    code, out, err = run_bench("generate", ["--model", str(ROOT / "nothere"), "--memory", "16"], monkeypatch, capsys)
    assert code == 2 and err == f"bench_generate.py: error: checkpoint directory {ROOT / 'nothere'} does not exist\n", err
    code, out, err = run_bench("generate", ["--model", shakespeare, "--memory", "256", "--batches", "4", "--repeats", "1",
                                            "--no-bf16", "--threads", "1"], monkeypatch, capsys)
    assert code == 0, err
    c = GPTConfig.from_pretrained(shakespeare)
    cache = 2 * c.n_layer * 4 * 256 * c.n_embd * 4  # 256 slots (a power of two ≥ 64), fp32
    assert f"256 slots: {cache / 2**20:.1f} MiB ({cache:,} bytes; 2·n_layer·B·T·n_embd·bytes = {cache:,}, equal)" in out, out
    peak = int(re.search(r"prefill's peak beyond the weights and the cache: (-?\d+) MiB", out)[1])
    # Below 64 MiB (it measures 18-20): getrusage's peak, which keeps the parent's RSS (this test
    # process's, ~1 GB in a full run), read 773 MiB.
    assert 4 * 256 * c.mlp_width * 4 / 2**20 <= peak < 64, out
    # (a review) a run killed by a signal, on Linux most likely the out-of-memory killer, is said so
    killed = lambda cmd, **kwargs: subprocess.CompletedProcess(cmd, -signal.SIGKILL, "", "")  # noqa: E731
    monkeypatch.setattr(subprocess, "run", killed)
    code, out, err = run_bench("generate", ["--model", shakespeare, "--memory", "256", "--batches", "4", "--repeats", "1",
                                            "--no-bf16"], monkeypatch, capsys)
    assert code == 2 and err == ("bench_generate.py: error: the memory run of batch 4, 256-token prompt, float32 was "
                                 "killed by SIGKILL (the kernel's out-of-memory killer?)\n"), err
