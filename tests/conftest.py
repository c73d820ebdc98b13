"""Shared test settings: one torch thread, `transformers` (the oracle in many tests) quiet and
offline, hypothesis deterministic, autograd on after every test, and under pytest-xdist (README's
`-n 2`) the interpreted kernel tests first."""
import os

# One torch thread per test process. The tests run tiny models: thousands of small ops, each a
# parallel region that waits for all of torch's threads, so a second thread only adds waiting, and
# on a busy 2-core CI runner each region spins for a core another process holds
# (tests/test_finetune.py took 114 s with torch's default threads, 63 s with one, on 2 shared cores).
# OMP_NUM_THREADS is set here, before anything imports torch (pytest imports conftest.py before the
# test files, and its plugins hypothesis, pytest-benchmark and anyio import no torch), so that the
# subprocesses the tests start (`python -m minigpt ...`) inherit it too; torch.set_num_threads below
# holds for this process even if something imported torch first. MINIGPT_TEST_THREADS=N runs the
# tests with N threads instead; 0 leaves torch's default (or your own OMP_NUM_THREADS). Tests that
# need a thread count of their own set it (tests/test_train_reference.py's one_thread fixture).
TEST_THREADS = os.environ.get("MINIGPT_TEST_THREADS", "1")
if not TEST_THREADS.isdecimal():
    raise ValueError(f"MINIGPT_TEST_THREADS must be a whole number of torch threads (0: torch's default), "
                     f"got {TEST_THREADS!r}")
if TEST_THREADS != "0":
    os.environ["OMP_NUM_THREADS"] = TEST_THREADS

# Tests never reach the network: the HF oracle models are built from configs with random weights.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

# The bar tests check what a bar draws, so a tester's TQDM_DISABLE (common in CI logs) would fail
# them: minigpt lets it silence every bar (minigpt/progress_bar.py's `quiet_by_env`), and tqdm reads
# its TQDM_* variables when it is imported, so it is dropped here, before anything imports tqdm.
# The tests of TQDM_DISABLE itself set it (monkeypatch, or a subprocess's env).
os.environ.pop("TQDM_DISABLE", None)

# Property tests draw the same examples on every run (no random seed, no example database), so a
# failure reproduces and a pass means the same thing each time. HYPOTHESIS_PROFILE=explore draws
# new examples per run, for hunting beyond the fixed set.
from hypothesis import settings  # noqa: E402

settings.register_profile("deterministic", derandomize=True, database=None)
settings.register_profile("explore")
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "deterministic"))

def _patch_triton_language_once_per_launch():
    """Triton's CPU interpreter (TRITON_INTERPRET=1) swaps interpreted stand-ins into
    triton.language at each kernel launch, and again at every call of a @triton.jit helper inside
    it, though they are in place by then: ~1 ms a call, over half the time of tests/
    test_fused_sampling.py, whose kernels call helpers thousands of times. Here a helper's call
    swaps only modules this launch has not swapped yet (triton.language.core, for triton's own
    Philox); the launch's restore starts the next launch afresh. Speed only: the same stand-ins
    run. Where triton's internals differ (another version), nothing is changed."""
    from triton.runtime import interpreter
    import triton.language as tl

    patch_lang = getattr(interpreter, "_patch_lang", None)
    if patch_lang is None or not hasattr(interpreter, "_LangPatchScope"):
        return
    swapped = set()  # ids of the language modules the running launch has swapped

    def patch_lang_once(fn):
        langs = {id(value) for value in fn.__globals__.values() if value is tl or value is tl.core}
        if langs and langs <= swapped:
            return interpreter._LangPatchScope()  # nothing to swap, nothing to restore
        scope = patch_lang(fn)
        swapped.update(langs)
        restore = scope.restore

        def restore_and_forget():
            swapped.clear()
            restore()

        scope.restore = restore_and_forget
        return scope

    interpreter._patch_lang = patch_lang_once


if os.environ.get("TRITON_INTERPRET") == "1":
    import importlib.util  # noqa: E402

    if importlib.util.find_spec("triton") is not None:
        _patch_triton_language_once_per_launch()


import contextlib  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

if TEST_THREADS != "0":
    torch.set_num_threads(int(TEST_THREADS))


@pytest.fixture(autouse=True)
def _autograd_is_left_on():
    """A test (or the code it calls) that turns autograd off for good fails here, itself: once
    (bench_generate's main called torch.set_grad_enabled(False)), 119 later training tests failed
    far away, with "element 0 of tensors does not require grad"."""
    yield
    if not torch.is_grad_enabled():
        torch.set_grad_enabled(True)
        pytest.fail("the test left autograd off (torch.set_grad_enabled(False) outside a with block)")


_HOLD_OUT_DIR = """
import sys, time
from pathlib import Path
from minigpt.run_dir import run_dir_lock
with run_dir_lock(sys.argv[1]):
    Path(sys.argv[2]).touch()  # "holding it now"
    time.sleep(120)
"""


@pytest.fixture
def another_run_holds():
    """another_run_holds(out): a `with` block during which another process holds OUT_DIR, as a
    live run does (minigpt/run_dir.py's run_dir_lock); it is killed at the end of the block."""
    @contextlib.contextmanager
    def holds(out: Path):
        holding = out.parent / f"{out.name}.holding"
        holder = subprocess.Popen([sys.executable, "-c", _HOLD_OUT_DIR, str(out), str(holding)])
        try:
            for _ in range(600):
                if holding.exists() or holder.poll() is not None:
                    break
                time.sleep(0.1)
            assert holding.exists(), "the holder never took the lock"
            yield
        finally:
            holder.kill()
            holder.wait()

    return holds


@pytest.fixture
def freebsd_nofollow(monkeypatch):
    """os.open refusing a symbolic link under O_NOFOLLOW as FreeBSD does, with EMLINK (Linux: ELOOP):
    an error about a link must not be told by its errno alone."""
    import errno

    real_open = os.open

    def freebsd_open(path, flags, mode=0o777, **kwargs):
        try:
            return real_open(path, flags, mode, **kwargs)
        except OSError as e:
            if e.errno != errno.ELOOP:
                raise
            raise OSError(errno.EMLINK, "Too many links", path) from None

    monkeypatch.setattr(os, "open", freebsd_open)


@pytest.fixture(autouse=True)
def _packed_copies_whatever_memory_is_free(monkeypatch):
    """minigpt.linear leaves out a packed copy the machine has no room for, with a warning
    (`room_for`): on a busy CI machine that would change which path a test takes, and the warning
    would fail the tests that turn warnings into errors. Tests pack as on a machine that does not
    say what is free; tests/test_linear.py sets `memory` itself to test room_for."""
    import minigpt.linear as linear

    monkeypatch.setattr(linear, "memory", lambda: None)


def save_tiny_base(root: Path, corpus: str, vocab_size: int) -> Path:
    """What the fine-tuning tests start from, written into `root`: base/, a tiny pretrained-looking
    model (a seeded gpt2-tiny GPT in HF layout) with a tokenizer of `vocab_size` trained on `corpus`,
    and cls.tsv, a header then two labels of short sentences. Returns `root`. (A plain function, not
    a fixture: each test file's module-scoped fixture calls it with its own corpus.)"""
    from minigpt import GPT, GPTConfig
    from minigpt.tokenizer import Tokenizer

    tok = Tokenizer.train(corpus, vocab_size)
    torch.manual_seed(0)
    GPT(GPTConfig.gpt2("gpt2-tiny", vocab_size=tok.vocab_size, bos_token_id=tok.eos_token_id,
                       eos_token_id=tok.eos_token_id)).save_pretrained(root / "base")
    tok.save_pretrained(root / "base")
    rows = [f"the speech was {w} indeed\t{y}" for y, words in enumerate((["bad", "poor"], ["good", "fine"])) for w in words]
    (root / "cls.tsv").write_text("sentence\tlabel\n" + "\n".join(rows * 10) + "\n")
    return root


def pytest_collection_modifyitems(config, items):
    """The interpreted kernel tests (tests/test_fused_sampling.py's subprocess: about six minutes of
    one core) go first, so that under README's `-n 2 --dist worksteal` the other process runs the
    rest beside them, and takes back tests queued behind them, rather than waiting at the end.
    Without -n (no pytest-xdist worker collects) the tests keep their order: `pytest -x` stops at a
    failure without running those six minutes first."""
    if not hasattr(config, "workerinput"):
        return
    items.sort(key=lambda item: item.originalname != "test_kernel_on_cpu_under_triton_interpreter")  # (stable)
