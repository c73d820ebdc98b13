"""minigpt on Windows, checked on Linux: the package imports and generates without the POSIX-only
modules (fcntl, resource), and the Windows branches of files.file_lock and stats.peak_memory_bytes
do what they should with the calls they make.

These tests check the logic, not real Windows semantics: CI has no Windows. A fake `msvcrt` (and a
fake `ctypes.windll`) answers as the documentation says the real one does, and records the calls;
whether Windows really answers so is not tested here.
"""
from __future__ import annotations

import ctypes
import errno
import io
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import minigpt.files as files
import minigpt.stats as stats
from minigpt.progress_bar import LOG_REFRESH_S, progress_bar
from minigpt.run_dir import RunInUse, run_dir_lock
from minigpt.run_log import PLOT_FILE, draw_curves

ROOT = Path(__file__).resolve().parent.parent

WITHOUT_POSIX_MODULES = """
import sys
sys.modules["fcntl"] = sys.modules["resource"] = None  # as on Windows: importing either raises ImportError
from types import SimpleNamespace

import torch
import minigpt
from minigpt import GPT, GPTConfig, Tokenizer, generate
from minigpt.cli import main

out = sys.argv[1]
tokenizer = Tokenizer.train("the cat sat on the mat. " * 20, 260, progress=False)
eos = tokenizer.eos_token_id
torch.manual_seed(0)
model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, n_positions=32, n_embd=16, n_layer=1, n_head=2,
                      bos_token_id=eos, eos_token_id=eos))
ids = generate(model, torch.tensor([tokenizer.encode("the cat")]), max_new_tokens=4)
assert ids.shape == (1, len(tokenizer.encode("the cat")) + 4), ids.shape
# Windows' byte locks (a save takes one: files.save_lock), granted at once (tests below check
# their use); only for the save: a module named msvcrt makes subprocess, imported later, take Windows'.
sys.modules["msvcrt"] = SimpleNamespace(LK_UNLCK=0, LK_LOCK=1, LK_NBLCK=2, locking=lambda fd, mode, nbytes: None)
model.save_pretrained(out)  # atomic writes, without fcntl
tokenizer.save_pretrained(out)
del sys.modules["msvcrt"]

# `minigpt generate` measures peak memory (printed with --stats): Windows' way, with psapi faked.
import ctypes
ctypes.windll = SimpleNamespace(psapi=SimpleNamespace(GetProcessMemoryInfo=lambda process, counters, cb: 1))
sys.exit(main(["generate", "--model", out, "--prompt", "the cat", "--max-new-tokens", "4", "--seed", "0"]))
"""


def test_minigpt_imports_and_generates_without_fcntl_and_resource(tmp_path):
    """Bug guarded: files.py imported fcntl, and stats.py resource, at the top, so `import minigpt`
    failed on Windows before anything ran (checkpoint → download → files). The save takes its lock
    the Windows way, with msvcrt (faked, granted at once); peak memory is measured the Windows way."""
    run = subprocess.run([sys.executable, "-c", WITHOUT_POSIX_MODULES, str(tmp_path / "tiny")], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("the cat"), run.stdout


class FakeMsvcrt:
    """msvcrt.locking as file_lock calls it (the real module's constants), recorded in `events`.
    The first `held` non-blocking tries fail as Windows fails them while another process holds the
    byte: EACCES, a PermissionError."""

    LK_UNLCK, LK_LOCK, LK_NBLCK = 0, 1, 2
    NAMES = {LK_UNLCK: "unlock", LK_LOCK: "lock", LK_NBLCK: "try"}

    def __init__(self, events: list[str], held: int) -> None:
        self.events, self.held, self.fds = events, held, set()

    def locking(self, fd: int, mode: int, nbytes: int) -> None:
        assert nbytes == 1 and os.fstat(fd)  # the first byte, of an open file
        self.fds.add(fd)
        if mode == self.LK_NBLCK and self.held:
            self.held -= 1
            self.events.append("try: held")
            raise PermissionError(errno.EACCES, "Permission denied")
        self.events.append(self.NAMES[mode])


@pytest.fixture
def windows(monkeypatch):
    """windows(held=N): file_lock takes its Windows branch, with a FakeMsvcrt whose first N tries
    find the lock held; returns the fake (its `events`: the calls, and "busy" when busy() ran)."""
    def make(held: int = 0) -> FakeMsvcrt:
        fake = FakeMsvcrt([], held)
        monkeypatch.setattr(files, "fcntl", None)  # as on Windows
        monkeypatch.setattr(files, "WINDOWS_RETRY_S", 0)
        monkeypatch.setitem(sys.modules, "msvcrt", fake)
        return fake

    return make


def test_windows_lock_held_by_another_calls_busy_then_waits_and_takes_it(tmp_path, windows):
    fake = windows(held=2)  # busy() once, then a retry that still finds it held
    lock = tmp_path / "new folder" / ".lock"
    with files.file_lock(lock, lambda: fake.events.append("busy")):
        fake.events.append("holding")
        assert lock.exists()
    assert fake.events == ["try: held", "busy", "try: held", "try", "holding", "unlock"]
    assert not lock.exists()  # released, then removed: no one else had it open
    for fd in fake.fds:
        with pytest.raises(OSError):
            os.fstat(fd)  # closed


def test_windows_open_denied_while_the_holder_deletes_the_file_is_tried_again(tmp_path, windows, monkeypatch):
    """A reviewer: on Windows, opening a lock file at the instant its last holder deletes it is
    denied (a PermissionError, as for a file pending deletion), which escaped file_lock as a
    traceback instead of a wait. It is tried again; a folder that denies it for good still fails."""
    fake = windows()
    real_open, denials = os.open, [1]

    def open_denied_once(path, *args):
        if denials and Path(path).name == ".lock":
            denials.pop()
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *args)

    monkeypatch.setattr(os, "open", open_denied_once)
    with files.file_lock(tmp_path / ".lock", lambda: fake.events.append("busy")):
        fake.events.append("holding")
    assert fake.events == ["try", "holding", "unlock"]
    monkeypatch.setattr(os, "open", lambda path, *a: (_ for _ in ()).throw(PermissionError(errno.EACCES, "denied")))
    with pytest.raises(PermissionError):
        with files.file_lock(tmp_path / ".lock", lambda: None):
            pass


def test_windows_lock_refused_by_busy_takes_nothing(tmp_path, windows):
    fake = windows(held=1)
    (tmp_path / ".lock").touch()  # the holder's

    def refuse():
        raise RunInUse("in use")

    with pytest.raises(RunInUse), files.file_lock(tmp_path / ".lock", refuse):
        pytest.fail("the lock was taken")
    assert fake.events == ["try: held"]
    assert (tmp_path / ".lock").exists()  # still the holder's


def test_windows_release_keeps_the_file_a_waiter_has_open(tmp_path, windows, monkeypatch):
    """On Windows a file open in another process cannot be removed (PermissionError): the waiter
    that has it open takes the lock on it, and removes it in turn."""
    fake = windows()
    lock = tmp_path / ".lock"
    unlink = Path.unlink

    def open_elsewhere(path, missing_ok=False):
        if path == lock:
            raise PermissionError(errno.EACCES, "The process cannot access the file", str(path))
        unlink(path, missing_ok)

    monkeypatch.setattr(type(lock), "unlink", open_elsewhere)
    with files.file_lock(lock, lambda: pytest.fail("not held")):
        pass
    assert fake.events == ["try", "unlock"] and lock.exists()
    with files.file_lock(lock, lambda: pytest.fail("not held")):  # the next one reuses the file
        pass
    assert fake.events == ["try", "unlock", "try", "unlock"]


def test_windows_run_dir_lock_refuses_a_run_dir_in_use(tmp_path, windows):
    """run_dir_lock's RunInUse, through the Windows branch: busy() raises, no waiting."""
    fake = windows(held=1)
    with pytest.raises(RunInUse, match="in use by another run"), run_dir_lock(tmp_path / "run"):
        pytest.fail("the run went on")
    with run_dir_lock(tmp_path / "run"):  # and once it is free
        assert (tmp_path / "run" / ".lock").exists()
    assert fake.events == ["try: held", "try", "unlock"] and not (tmp_path / "run" / ".lock").exists()


def test_windows_peak_memory_is_the_peak_working_set(monkeypatch):
    """Bug guarded: peak memory came from resource.getrusage, which Windows lacks. There it is the
    peak working set, from GetProcessMemoryInfo (psapi), here faked."""
    def get_process_memory_info(process, counters, cb):
        assert process.value == ctypes.c_void_p(-1).value  # GetCurrentProcess()'s pseudo-handle
        assert cb == counters._obj.cb == 2 * 4 + 8 * ctypes.sizeof(ctypes.c_size_t)  # PROCESS_MEMORY_COUNTERS
        counters._obj.PeakWorkingSetSize = 300 * 2**20
        return 1

    monkeypatch.setattr(stats, "resource", None)  # as on Windows
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setattr(ctypes, "windll", SimpleNamespace(psapi=SimpleNamespace(GetProcessMemoryInfo=get_process_memory_info)),
                        raising=False)
    assert stats.peak_memory_bytes(torch.device("cpu")) == 300 * 2**20
    assert "peak memory 300 MiB" in str(stats.GenerationStats(peak_memory_bytes=300 * 2**20))


@pytest.mark.parametrize("platform, expected", [("linux", 5000 * 1024), ("darwin", 5000)])
def test_peak_rss_unit_follows_the_platform(monkeypatch, platform, expected):
    """ru_maxrss is in KiB on Linux but in bytes on macOS (Linux reads /proc's VmHWM first, where it can)."""
    getrusage = lambda who: SimpleNamespace(ru_maxrss=5000)  # noqa: E731
    monkeypatch.setattr(stats, "_linux_peak_rss", lambda: None)  # no /proc
    monkeypatch.setattr(stats, "resource", SimpleNamespace(getrusage=getrusage, RUSAGE_SELF=0))
    monkeypatch.setattr(sys, "platform", platform)
    assert stats.peak_memory_bytes(torch.device("cpu")) == expected


def test_a_lock_refused_or_denied_closes_its_file_and_posix_does_not_retry_a_denial(tmp_path, windows, monkeypatch):
    """A mutation audit: a Windows lock that busy() refuses closes the file it opened (an fd left
    open would keep the lock file from being removed, there); on POSIX, a denied open (a folder
    not writable) is raised at once: the retry is Windows' alone."""
    fake = windows(held=1)

    def refuse():
        raise RunInUse("in use")

    with pytest.raises(RunInUse), files.file_lock(tmp_path / ".lock", refuse):
        pass
    assert fake.fds
    for fd in fake.fds:
        with pytest.raises(OSError):
            os.fstat(fd)  # closed
    monkeypatch.setattr(files, "fcntl", object())  # POSIX again (the denial comes before any flock)
    opens = []

    def denied(path, *args):
        opens.append(path)
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(os, "open", denied)
    with pytest.raises(PermissionError), files.file_lock(tmp_path / ".lock", lambda: None):
        pass
    assert len(opens) == 1


def test_a_save_goes_on_unguarded_only_where_there_are_no_locks(tmp_path, monkeypatch):
    """A review: save_lock took any error in taking the lock (EMFILE: too many open files) for a
    file system without locks, went on unguarded and removed the lock file another save held. Only
    ENOLCK/EOPNOTSUPP (no locks here: the file goes) and a folder it may not write (its own write
    says so) go on; anything else is raised."""
    def failing(code):
        def file_lock(lock, busy):
            lock.touch()
            raise OSError(code, os.strerror(code))
        return file_lock

    for code, goes_on in ((errno.ENOLCK, True), (errno.EACCES, True), (errno.EMFILE, False)):
        monkeypatch.setattr(files, "file_lock", failing(code))
        ran = []
        if goes_on:
            with files.save_lock(tmp_path):
                ran.append(code)
            assert ran == [code]
        else:
            with pytest.raises(OSError, match="Too many open files"), files.save_lock(tmp_path):
                ran.append(code)
            assert ran == []
        assert (tmp_path / files.SAVE_LOCK_NAME).exists() == (code != errno.ENOLCK), code  # removed where no one can hold it
        (tmp_path / files.SAVE_LOCK_NAME).unlink(missing_ok=True)


# ---- a non-UTF-8 locale, and output to a log ----------------------------------------------------


def test_a_curve_is_drawn_for_a_run_dir_whose_path_python_holds_as_surrogates(tmp_path):
    """A portability audit: under LC_ALL=C a run's --out "dir é" is held as "dir \\udcc3\\udca9",
    and draw_curves put it in the plot's title as it was: matplotlib cannot draw a surrogate, so
    loss.png was never drawn. The title is the path's bytes read as UTF-8. (This process is UTF-8:
    the surrogates stand for the same bytes, so they name the same folder.)"""
    out = tmp_path / "dir \udcc3\udca9"
    out.mkdir()
    draw_curves([{"step": 1, "loss": 3.0}, {"step": 2, "loss": 2.5, "val_loss": 2.7}], out)
    assert (tmp_path / "dir é" / PLOT_FILE).stat().st_size > 0


def test_a_run_under_the_c_locale_trains_into_a_non_ascii_out_dir(tmp_path):
    """A portability audit: `minigpt train --out "dir é/run"` under LC_ALL=C died at its first
    evaluation: the curve's title could not be drawn (a path held as surrogates), then the warning
    that named the path could not be printed (stderr was reconfigured strict)."""
    base = {k: v for k, v in os.environ.items() if k not in ("PYTHONIOENCODING", "PYTHONUTF8")}
    env = {**base, "LC_ALL": "C", "LANG": "C", "PYTHONCOERCECLOCALE": "0", "PYTHONUTF8": "0"}
    (tmp_path / "dir é").mkdir()
    (tmp_path / "dir é" / "t.txt").write_text("ROMEO: the cat sat on the mat.\nJULIET: a dog sat on the log.\n" * 300)
    commands = [
        ["prepare", "dir é/t.txt", "--tokenizer", str(ROOT / "checkpoints" / "shakespeare"), "--out", "dir é/data"],
        ["train", "--data", "dir é/data", "--out", "dir é/run", "--n-layer", "1", "--n-head", "2", "--n-embd", "16",
         "--n-positions", "16", "--batch-size", "2", "--max-iters", "2", "--warmup-iters", "1", "--eval-interval", "1",
         "--eval-iters", "1", "--device", "cpu"],
    ]
    for command in commands:
        r = subprocess.run([sys.executable, "-m", "minigpt", *command], cwd=tmp_path, env=env, capture_output=True,
                           timeout=300)
        err = r.stderr.decode("utf-8", "replace")
        assert r.returncode == 0 and "not drawn" not in err, err
    assert (tmp_path / "dir é" / "run" / PLOT_FILE).is_file()


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def redraws(stream: io.StringIO, steps: int, seconds_per_step: float, monkeypatch) -> int:
    """How many times a progress_bar on `stream` draws itself over `steps` updates, each
    `seconds_per_step` apart on a fake clock: its carriage returns."""
    import tqdm.std

    now = [0.0]
    monkeypatch.setattr(tqdm.std, "time", lambda: now[0])  # the clock a bar reads (bound when it is made)
    monkeypatch.setattr(tqdm.std.tqdm, "monitor_interval", 0)  # no monitor thread, which reads the real clock
    with progress_bar(total=steps, file=stream) as bar:
        for _ in range(steps):
            now[0] += seconds_per_step
            bar.update(1)
    return stream.getvalue().count("\r")


def test_a_bar_redraws_rarely_into_a_file_and_as_before_on_a_terminal(monkeypatch):
    """A portability audit: with stderr to a file, every redraw of a bar is kept (a carriage return
    and the new state): a 200-step run wrote 205 of them, a 100k-step one ~100k. Into a file a bar
    now redraws every LOG_REFRESH_S at most, and still shows its first and last states; on a
    terminal it redraws as tqdm does by default."""
    steps, seconds = 200, 0.5  # 100 s
    into_file = redraws(io.StringIO(), steps, seconds, monkeypatch)
    assert into_file <= 2 + steps * seconds / LOG_REFRESH_S + 1, into_file
    assert redraws(Terminal(), steps, seconds, monkeypatch) >= steps


def test_a_notebooks_bar_and_tqdms_own_interval_are_left_as_tqdm_has_them(monkeypatch):
    """A review: a Jupyter cell's stream (ipykernel's OutStream) says it is no terminal, so its bars
    sat at their first state for 30 s; and TQDM_MININTERVAL, tqdm's own setting, lost to the 30 s.
    A notebook's stream redraws as a terminal does, and tqdm's settings win where they are set."""
    Notebook = type("OutStream", (io.StringIO,), {"__module__": "ipykernel.iostream"})  # isatty() False, as ipykernel's
    steps, seconds = 200, 0.5
    assert redraws(Notebook(), steps, seconds, monkeypatch) >= steps
    monkeypatch.setenv("TQDM_MININTERVAL", "1")
    monkeypatch.setenv("TQDM_MAXINTERVAL", "1")
    bar = progress_bar(total=1, file=io.StringIO())
    assert (bar.mininterval, bar.maxinterval) == (0.1, 10)  # tqdm's defaults here: its env setting was read at its import
    bar.close()


def test_training_s_bar_is_not_redrawn_at_each_log_record(tmp_path, capsys):
    """A portability audit: training's bar took each log record's numbers with set_postfix, which
    redraws at once, whatever the bar's interval: a record every step was a redraw every step in a
    log. The numbers now wait for the bar's next redraw (and its last state shows them)."""
    from test_train import make_data, tiny_cfg

    from minigpt.pretrain import pretrain

    pretrain(tiny_cfg(make_data(tmp_path / "data"), tmp_path / "out", max_iters=12, log_interval=1, eval_interval=0))
    err = capsys.readouterr().err
    assert err.count("\r") < 8, err  # its first and last states, cleared and redrawn around the evaluation: 5
    assert re.search(r"training: 100%.*loss=", err.split("\r")[-1]), err


def test_every_progress_bar_is_made_by_progress_bar():
    """One place decides how a bar redraws (into a file: rarely): no module makes a tqdm of its own."""
    own = [f"{path.relative_to(ROOT)}:{n}" for path in sorted((ROOT / "minigpt").rglob("*.py"))
           if path.name != "progress_bar.py"
           for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if re.search(r"\btqdm\(", line)]
    assert own == [], own
