"""How a training run runs, stops and ends: its processes and device, signals, and exit codes.

Where it sits: around minigpt/train.py's `train_loop`, shared by `minigpt train` and `minigpt
finetune`: `run_command(work)` → `setup_runtime` (device, dtype; under torchrun, the process
group) → the loop, which checks `StopSignal` once a step → exit code.

- **Processes.** Under `torchrun --nproc_per_node=N`, each process reads RANK / WORLD_SIZE from
  its environment (`env_rank`, which refuses a stray RANK without torchrun) and joins one process
  group (NCCL on GPUs, gloo on CPUs); `Runtime` is what a process knows of itself: its rank, the
  world size, its device and its autocast dtype.
- **Stopping.** Ctrl-C, SIGTERM (what torchrun and job schedulers send), SIGUSR1 (Slurm's warning
  before its time limit) or SIGHUP (the terminal gone) must not stop a run in the middle of an
  update or a checkpoint write: `StopSignal` records it and says so at once, and the loop saves
  at the end of the step and raises `Stopped`. Under DDP every process stops at the same step.
- **Exit codes**, as a shell reports them: 0 done, 1 the loss diverged (`TrainingDiverged`),
  2 bad input, 128 + the signal that stopped the run (130 Ctrl-C, 143 SIGTERM, 138 SIGUSR1, 129 SIGHUP).
  A reader of stdout or stderr that goes away changes none of them (`reader_may_leave`): the run
  goes on to its end, its output to devnull.
- **Errors under torchrun** are said once: the processes of a machine check the same flags and
  files, and its first one alone prints; what rank 0 does alone (writing OUT_DIR) it reports to
  the others (`on_rank_0`), which then end quietly instead of failing in their next collective.
  An error met once the processes have joined, perhaps by one alone (its batch unreadable), is
  said by the first to meet it, naming its rank, and a peer whose collective it broke ends quietly
  (`say_error`). A process killed at once (SIGKILL: the OOM killer's) says nothing: the peer whose
  collective it broke says that it is gone, and what is left (`lost_a_peer`).
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
import traceback
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, TypeVar

import torch
import torch.distributed as dist

from minigpt.checkpoint import DTYPE_NAMES, resolve_device
from minigpt.checks import ALLOCATOR_FAILURES, is_out_of_memory
from minigpt.cli import FAILED, guarded, no_cxx_compiler
from minigpt.files import MAKE_ROOM, json_line
from minigpt.resume import saved_step
from minigpt.run_dir import env_rank, is_rank_0
from minigpt.run_log import LOG_FILE
from minigpt.train_config import TrainConfig

# ---- processes and devices ----------------------------------------------------------------------


@dataclass
class Runtime:
    """Where this process runs: its rank among `world` processes, its device and autocast dtype."""

    rank: int
    world: int
    device: torch.device
    dtype: torch.dtype

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def to_device(self, t: torch.Tensor) -> torch.Tensor:
        # A CPU tensor bound for the GPU: page-locked memory lets the copy overlap with compute. Only a
        # CPU tensor can be pinned: pinning one that get_batch made on the GPU raises "cannot pin".
        if self.device.type == "cuda" and t.device.type == "cpu":
            return t.pin_memory().to(self.device, non_blocking=True)
        return t.to(self.device)  # (a tensor already there comes back as it is)

    def autocast(self):
        if self.dtype == torch.float32:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)


@contextmanager
def tf32_matmuls(device: torch.device) -> Iterator[None]:
    """On a GPU, float32 matmuls on tensor cores (TF32: inputs rounded to a 10-bit mantissa; NVIDIA
    rates an A100 at 156 TFLOPS in TF32 against 19.5 in fp32) while the block runs; the caller's settings come back after,
    so a notebook's own float32 math after `train_loop` is as precise as before it."""
    if device.type != "cuda":
        yield
        return
    # torch ≥ 2.9 says it as fp32_precision = "tf32"; reading the older allow_tf32 once the caller
    # has used the new switch raises ("mix of the legacy and new APIs"). (GPT has no convolutions:
    # cuDNN's switch is left alone.)
    matmul = torch.backends.cuda.matmul
    switch, on = ("fp32_precision", "tf32") if hasattr(matmul, "fp32_precision") else ("allow_tf32", True)
    saved = getattr(matmul, switch)
    setattr(matmul, switch, on)
    try:
        yield
    finally:
        setattr(matmul, switch, saved)


def setup_runtime(cfg: TrainConfig) -> Runtime:
    """Pick the device and dtype; under torchrun, join the process group (NCCL on GPU, gloo on CPU)."""
    rank, world = env_rank()  # a stray RANK without torchrun is refused, not trained as a silent "rank 1"
    if cfg.grad_accum % world:  # checked before joining the process group: a bad flag needs no rendezvous
        raise ValueError(f"grad_accum ({cfg.grad_accum}) must be a multiple of the number of processes ({world})")
    if world > 1 and cfg.device.startswith("cuda:"):  # each process takes its own GPU: one index cannot be all of theirs
        raise ValueError(f"--device {cfg.device}: under torchrun each process takes the GPU of its LOCAL_RANK; pass "
                         "--device cuda, and choose the GPUs with CUDA_VISIBLE_DEVICES")
    device = resolve_device(cfg.device)  # "auto", or "cuda" on a machine without it: an error that says so
    if world > 1:
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    dtype_name = cfg.dtype
    if dtype_name == "auto":
        dtype_name = "bfloat16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "float32"
    if dtype_name == "float16" and device.type != "cuda":
        # (Not that it could not run: torch.amp.GradScaler("cpu") exists (torch 2.13 runs it). On a CPU,
        # bfloat16 does the same job with float32's range, so it needs no loss scaling at all.)
        raise ValueError("dtype float16 needs a GPU here; on CPU use bfloat16 (float32's range, no loss scaling) or float32")
    return Runtime(rank, world, device, DTYPE_NAMES[dtype_name])


# ---- how a run stops and ends ------------------------------------------------------------------

T = TypeVar("T")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or inf; the weights of the last checkpoint are kept."""


class Stopped(KeyboardInterrupt):
    """The loop stopped on a signal, after saving: a KeyboardInterrupt, so Ctrl-C is handled as
    usual, that also says which signal (`minigpt train` exits with 128 + it, as a shell reports it)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class PeerFailed(Exception):
    """Raised in the other processes when rank 0 failed at work they waited for (`on_rank_0`):
    rank 0 says why, and they end quietly (exit code 2)."""


def on_rank_0(rt: Runtime, work: Callable[[], T]) -> T | None:
    """Run `work` (writing OUT_DIR: tokens, a checkpoint) on rank 0 alone, then let every process
    know whether it failed: rank 0 raises its error, the others PeerFailed. Without this, they went
    on to their next collective, which failed on the peer gone with a screen of gloo's
    "Connection closed by peer" traceback below rank 0's one-line error. Returns what `work`
    returned on rank 0, None elsewhere."""
    result, error = None, None
    if rt.is_main:
        try:
            result = work()
        except Exception as e:  # (not a Ctrl-C: every process gets that one)
            error = e
    if rt.world > 1:
        failed = torch.tensor(float(error is not None), device=rt.device)
        dist.broadcast(failed, src=0)
        if failed.item() and not rt.is_main:
            raise PeerFailed("rank 0 failed")
    if error is not None:
        raise error
    return result


class StopSignal:
    """Ctrl-C (SIGINT), SIGTERM (what torchrun and job schedulers send), SIGUSR1 (what Slurm sends
    before its time limit, given `sbatch --signal=USR1@SECONDS`) or SIGHUP (an ssh session dropped)
    is recorded and said at once (on stderr, by rank 0): the loop saves at the end of the current
    step, never mid-update, then stops. A second signal gets the previous handler, so Ctrl-C twice
    stops at once (and `train_loop` says which checkpoint stands: the last written whole). A SIGHUP
    ignored when the run starts (`nohup`) stays ignored: that run was meant to outlive its terminal.

    Not handled: a launcher's deadline. torchrun SIGKILLs the workers still running its
    --shutdown-timeout (30 s by default) after it forwards SIGTERM, so a step and a checkpoint that
    take longer lose everything since the last checkpoint (README says what to do). Stopping at a
    micro-batch instead, dropping the step begun, would keep resume exact, but under DDP every
    process must stop at the same one: a collective and a host sync per micro-batch, where now
    there is one per step."""

    # SIGUSR1 and SIGHUP where the system has them (Windows has neither).
    SIGNALS = (signal.SIGINT, signal.SIGTERM, *(getattr(signal, name) for name in ("SIGUSR1", "SIGHUP")
                                                 if hasattr(signal, name)))

    def __init__(self) -> None:
        self.signum = 0  # the first signal received; 0 = none
        self.previous: dict[int, object] = {}
        self.speaks = False  # whether this process says that a signal came (rank 0)
        self.progress = None  # the loop's Progress (minigpt/train.py), once it runs: what the message names

    def __enter__(self) -> "StopSignal":
        if threading.current_thread() is threading.main_thread():  # only it may set handlers
            self.speaks = is_rank_0()  # (under torchrun, a Ctrl-C reaches every process: one says it)
            self.previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS if not self.nohup(sig)}
        return self

    @staticmethod
    def nohup(sig: int) -> bool:
        """Whether `sig` is a SIGHUP ignored (`nohup`), to be left so."""
        return sig == getattr(signal, "SIGHUP", None) and signal.getsignal(sig) == signal.SIG_IGN

    def _handle(self, signum, frame) -> None:
        self.signum = self.signum or signum
        signal.signal(signum, self.previous[signum])
        if self.speaks:
            self.say(signum)

    def say(self, signum: int) -> None:
        """Say that the signal came, at once: the step under way and the checkpoint after it may
        take minutes, and a Ctrl-C met with silence is pressed again, which stops at once. With
        os.write, not print: a handler runs between two bytecodes of the main thread, perhaps in
        the middle of a print to the same stream (which would raise "reentrant call")."""
        name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        again = "press Ctrl-C again" if signum == signal.SIGINT else f"send {name} again"
        # On a line of its own: the progress bar may be mid-line on the same terminal.
        stands = "the last checkpoint written whole stands"
        if self.progress is not None:  # (two ints read between two bytecodes of the loop: each whole)
            saved = self.progress.last_saved
            stands = f"the last checkpoint written whole, step {saved}, stands" if saved is not None else "nothing is saved yet"
        line = f"\n{name}: the run stops after the step under way, once it is saved ({again} to stop at once: {stands})\n"
        try:
            os.write(2, line.encode())
        except OSError:  # stderr gone (the terminal of a SIGHUP): the stop goes on unsaid
            pass

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def agreed(self, rt: Runtime) -> int:
        """The signal any process got (0 = none): all must stop at the same step, and exit alike
        (SIGTERM, 15, outranks Ctrl-C's 2)."""
        if rt.world == 1:
            return self.signum
        signum = torch.tensor(float(self.signum), device=rt.device)
        dist.all_reduce(signum, op=dist.ReduceOp.MAX)
        return int(signum.item())


@contextmanager
def reader_may_leave() -> Iterator[None]:
    """sys.stdout and sys.stderr outlive their readers while the block runs (minigpt.cli's
    `Guarded`): when one goes (`minigpt train ... | head`, `2>&1 | tee log` with the tee killed,
    the terminal of a dropped ssh session), the rest goes to devnull and the run trains and saves
    on, where the first step line's BrokenPipeError ended it before its first checkpoint (and a
    hung-up terminal's EIO, after a SIGHUP, before the checkpoint it stops with). stderr matters as
    much as stdout: the progress bar writes there (tqdm takes sys.stderr when a bar is made, so in
    the block), and so do the run's last lines. A full disk under stdout stops nothing either: the
    run trains and saves, and `run_command` reports it at the end (`Guarded.lost`)."""
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = guarded(saved[0], "stdout", outlives=True), guarded(saved[1], "stderr", outlives=True)
    try:
        yield
    finally:
        try:
            sys.stdout.flush()  # what the block wrote, while a reader gone still changes nothing (a pipe's is buffered)
        finally:
            sys.stdout, sys.stderr = saved


# The key in torchrun's store under which the processes count the errors said (`say_error`).
ERRORS_SAID = "minigpt/errors_said/"


def say_error(prog: str, text: str) -> bool:
    """Print an error (`text`) on stderr once, however many processes meet it; whether this process said it.

    Before the processes have joined (a flag, a missing file), they all met the same error, and
    the machine's first process (LOCAL_RANK 0) alone says it. After, an error may be one
    process's own (its batch unreadable, a failed step): each process counts the text in the
    store the group was made with (torchrun's), and the first to meet it says it, naming its rank.
    The count is also how a process whose collective broke learns that a peer said why
    (`peer_said_error`). Where the store cannot be reached, it is said (twice at worst, not never)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        if first_on_its_machine():
            print(f"{prog}: {text}", file=sys.stderr)
            return True
        return False
    if first_to_say(text):
        # On a line of its own: rank 0's progress bar may be mid-line on the same terminal.
        print(f"\n{prog} (rank {dist.get_rank()}): {text}", file=sys.stderr)
        return True
    return False


def first_on_its_machine() -> bool:
    """Whether this process says an error met before the processes joined: under torchrun, the
    machine's first (LOCAL_RANK 0); a plain run always, whatever LOCAL_RANK a shell left exported
    (it kept a plain run's errors unsaid, exit code 2 and no word)."""
    try:
        world = env_rank()[1]
    except ValueError:  # RANK or WORLD_SIZE is wrong: the error to say, by every process that meets it
        return True
    return world == 1 or os.environ.get("LOCAL_RANK", "0") == "0"


def first_to_say(text: str) -> bool:
    """Count an error's `text` as said, in the store of the process group; whether this process is
    the first to say it."""
    try:  # (the group's store has no public getter; torchrun's agent holds it, outliving any worker)
        store = dist.distributed_c10d._get_default_store()
        store.add(ERRORS_SAID, 1)
        return store.add(ERRORS_SAID + text, 1) == 1
    except Exception:  # (the store's host gone)
        return True


def peer_said_error() -> bool:
    """Whether, under torchrun, another process has said an error (`say_error`): this one's failure
    is then most likely its consequence, and its traceback only noise below the cause."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return False
    try:
        return dist.distributed_c10d._get_default_store().check([ERRORS_SAID])
    except Exception:
        return False


# What a collective raises on a peer process gone, its sockets closed by the kernel as it died:
# gloo's "Read error ...: Connection reset by peer", "Connection closed by peer" or a write's
# "Broken pipe"; NCCL's "remote process exited or there was a network error".
PEER_GONE = ("Connection reset by peer", "Connection closed by peer", "Broken pipe", "remote process exited")
PEER_LOST = ("error: another process of this run ended without saying why (killed? out of memory?), breaking this "
             "one's collective; the last checkpoint written whole in --out stands: continue the run with --resume")


def lost_a_peer(error: Exception) -> bool:
    """Whether `error` is a collective's failure on a peer process gone (`PEER_GONE`), one that
    could not say why (`say_error`): a SIGKILL (the OOM killer's) ends a process at once. Narrow on
    purpose, so that this process's own bug keeps its traceback: only in a process group with
    peers, only a RuntimeError (what torch.distributed raises, DistBackendError among them), and
    only one naming a lost connection."""
    return (dist.is_initialized() and dist.get_world_size() > 1 and isinstance(error, RuntimeError)
            and any(words in str(error) for words in PEER_GONE))


# How long a torchrun worker that failed only because a peer had waits before it ends: torchrun's
# report names the first process to end as the root cause, and the peer that failed (and said
# why) ends at once.
PEER_EXIT_GRACE_S = 1.0


def what_stands(error: Exception) -> str:
    """After a save that failed for want of room (`MAKE_ROOM`), the checkpoint that stands in the
    run's OUT_DIR, as a clause to add to the error, or, where the run saved none yet (its log
    started, no training_state.pt), what starts it again; "" for any other error, or a folder that
    holds no run. OUT_DIR is where the failed write was: the error names the file, or its folder
    (OUT_DIR, or best.new/ in it: minigpt/files.py's `atomic_path`, run_dir.py's `save_best`; or
    the adapter/ folder in either, a LoRA run's)."""
    if not isinstance(error, OSError) or error.errno not in MAKE_ROOM or not isinstance(error.filename, (str, bytes)):
        return ""
    out = Path(os.fsdecode(error.filename))
    out = out if out.is_dir() else out.parent
    out = out.parent if out.name == "adapter" else out  # (a LoRA run's adapters, minigpt/lora.py's ADAPTER_DIR)
    out = out.parent if out.name in ("best", "best.new") else out
    step = saved_step(out)
    if step is not None:
        return (f"; the last checkpoint written whole, step {step} in {out}, stands: {MAKE_ROOM[error.errno]}, then "
                "continue from it with --resume")
    if (out / LOG_FILE).exists():  # the first checkpoint failed: --resume starts over (run_dir.py's restart_unsaved_run)
        return (f"; the run in {out} has no checkpoint written whole yet: {MAKE_ROOM[error.errno]}, then run the same "
                "command with --resume, which starts it again")
    return ""


def out_of_memory(error: BaseException) -> str | None:
    """The one line for a run that ran out of memory on its device (a batch, a model or a block
    too big: torch.OutOfMemoryError on a GPU, the CPU allocator's failure on a CPU), or None for
    any other error. A setting to change, not a bug: no traceback."""
    if not is_out_of_memory(error):
        return None
    text = str(error).strip() or type(error).__name__
    # From the allocator's words on: what comes before is the C++ check that failed ("[enforce fail at ...]").
    start = next((text.find(words) for words in ALLOCATOR_FAILURES if words in text), 0)
    said = text[start:].splitlines()[0]
    # The model itself may be what does not fit (train --n-embd 100000000), not only a batch.
    return (f"out of memory ({said}): the model, its AdamW state (8 bytes a weight that trains) and a batch's "
            "activations must fit: use a smaller model (--n-layer, --n-embd; finetune: --strategy lora, or frozen "
            "for classify), --dtype bfloat16, a smaller --batch-size (a larger --grad-accum keeps the batch per step) "
            "or --block-size, or turn on --gradient-checkpointing")


def run_command(prog: str, work: Callable[[], dict | None]) -> int:
    """What `minigpt train` and `minigpt finetune` share around their work: exit code 0 (done), 1
    (the loss diverged; or a torchrun worker's bug, after its traceback), 2 (bad input, a file it
    cannot read or write, --compile without a C++ compiler, or out of memory: one line on stderr, no traceback;
    after a save that failed for want of room, with the checkpoint that stands, `what_stands`) or
    128 + the signal that stopped it, after the loop has saved (130 Ctrl-C, 143 SIGTERM, as a shell
    reports them); the process group closed on every path; the result as one JSON line on stdout,
    from rank 0 only. A process group that the work joined (a torchrun worker's) is closed here, and
    that process ends here, with that code; a group the caller had is left alone.

    Under torchrun an error is said once, not once a process (`say_error`)."""
    # Around all of it: a reader gone changes nothing, not even for the lines after a failed run
    # (`2>&1 | head -1` on a run refused after a warning) or the result's.
    with reader_may_leave():
        ours = not dist.is_initialized()
        result, code = None, 0
        consequence = False  # this process failed only because a peer had
        try:
            result = work()
            if dist.is_initialized():
                # Leave together: rank 0 is still writing the last checkpoint when the others finish, and
                # the group should not be torn down while a peer works in it. Not on the error paths: a
                # failed peer never comes.
                dist.barrier()
        except KeyboardInterrupt as e:  # Stopped, or a Ctrl-C outside the loop (e.g. while preparing data)
            code = 128 + getattr(e, "signum", signal.SIGINT)
        except TrainingDiverged as e:
            say_error(prog, f"error: {e}")  # one line, as exit 2's; exit 1 tells it apart
            code = 1
        except (ValueError, OSError) as e:  # OSError: a missing file, an existing run, an OUT_DIR it may not write, a full disk
            if not say_error(prog, f"error: {e}{what_stands(e)}") and not dist.is_initialized():
                # Met by every process before they joined, and said by the machine's first alone: the
                # others wait a moment, or torchrun, which ends the rest as soon as one ends, could end
                # the one saying it before it has (a race its tests lost now and then).
                time.sleep(PEER_EXIT_GRACE_S)
            code = FAILED
        except PeerFailed:  # rank 0 printed why
            code, consequence = FAILED, True
        except Exception as e:
            if message := no_cxx_compiler(e) or out_of_memory(e):  # --compile without g++: every process meets it
                say_error(prog, f"error: {message}")
                code = FAILED
            elif peer_said_error():  # a collective broken by the peer that failed (gloo's "Connection closed by peer")
                code, consequence = FAILED, True
            elif lost_a_peer(e):  # a peer killed (SIGKILL: the OOM killer, say) said nothing: this one says what is left
                say_error(prog, PEER_LOST)
                code, consequence = FAILED, True
            elif not (ours and dist.is_initialized()):
                raise
            else:  # a torchrun worker's bug: its traceback says it, and it ends at once (below), before its peers
                first_to_say(repr(e))  # (whose collective it breaks: they stay quiet)
                traceback.print_exc()
                code = 1
        finally:
            worker = ours and dist.is_initialized()
            if worker:
                dist.destroy_process_group()
        if result is not None and is_rank_0():
            print(json_line(result), flush=True)
        if code == 0 and sys.stdout.lost:  # stdout on a full disk: the run trained and saved on; said at its end,
            say_error(prog, f"error: {sys.stdout.lost}")  # here, as a torchrun worker never reaches cli.main
            code = FAILED
        if worker:
            # A torchrun worker skips the interpreter's teardown. With gloo, PyTorch's C++ teardown after
            # a finished run aborted now and then ("terminate called without an active exception",
            # SIGABRT with no Python frame on the stack; 2 of ~330 runs with 3 torchruns on 2 cores),
            # and torchrun then reports the whole run as failed. By now every file is written and
            # closed and the group is gone: only the buffered output remains to flush.
            sys.stdout.flush()
            sys.stderr.flush()
            if consequence:  # torchrun names the first process to end as the run's root cause: the one that failed
                time.sleep(PEER_EXIT_GRACE_S)
            os._exit(code)
        return code
