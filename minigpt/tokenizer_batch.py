"""Many texts at once: `Tokenizer.encode_batch` on every core, and `Tokenizer(texts, ...)`'s
padded batches for the model.

Where it sits: beside `Tokenizer.encode` (minigpt/tokenizer.py), on the way into the model:
`texts → encode_batch → ids per text → pad (left for generation, right for classification) →
input_ids + attention_mask (B, T) → GPT`.

Two ideas live here:
- **Parallel encoding without changing a single id.** BPE never merges across a chunk of the
  split regex, so text can be cut where no chunk spans the cut (`safe_pieces`), the pieces
  encoded in separate processes, and the ids joined: they are exactly the whole text's ids.
  Workers are forked, so they share the merge table instead of pickling it.
- **Padding and the attention mask.** A batch is a rectangle, so shorter texts are padded. GPT-2
  has no pad token; any id will do, because the attention mask (0 = padding), not the pad id,
  keeps padding out of attention. `pad_rows` pads ids already encoded (the classify task's
  examples, `generate_texts`' prompts), on either side.
"""
from __future__ import annotations

import ctypes
import inspect
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from functools import partial
from typing import TYPE_CHECKING, Literal

from minigpt.checks import as_count
from minigpt.pretokenize import safe_pieces
from minigpt.tokenizer import PIECE_CHARS, AllowedSpecial, check_side

if TYPE_CHECKING:
    from minigpt.tokenizer import Tokenizer

# Below this many characters, encode_batch works in this process: starting workers costs more.
MIN_PARALLEL_CHARS = 1 << 19
# In a worker process only: the encode function (the tokenizer's, with the special tokens asked
# for) its pool gave it when it started. The parent never sets it, so two threads each running
# encode_batch cannot hand each other's tokenizer to their workers.
_WORKER_JOB: Callable[[str], list[int]] | None = None


def available_cpus() -> int:
    """The cores this process may run on (its affinity mask, as taskset or a container sets it)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _start_worker(job: Callable[[str], list[int]], parent: int) -> None:
    """A worker's first step: it asks to die with `parent` (`_die_with_parent`), and keeps `job`.
    Forked, it inherits `job` as it is in the parent: nothing pickled."""
    global _WORKER_JOB
    _die_with_parent(parent)
    # The default for the stop signals: a parent's handler (`minigpt prepare` turns SIGTERM into
    # KeyboardInterrupt) would keep a worker from dying of the SIGTERM the pool ends a broken pool with.
    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_DFL)
    _WORKER_JOB = job


PR_SET_PDEATHSIG = 1  # Linux's prctl option (<linux/prctl.h>): a signal for when the parent dies


def _die_with_parent(parent: int) -> None:
    """Have the kernel SIGKILL this worker when `parent`, the process that forked it, dies.

    Why: a forked worker inherits both ends of the pool's pipes, so when the parent is killed
    outright (SIGKILL, or a SIGTERM it does not catch: no cleanup runs) the pipes stay open in the
    worker itself. It never sees end-of-file or a broken pipe, and waits on them forever, holding
    its memory. SIGKILL, not SIGTERM: a worker has nothing to clean up, and it inherits the
    parent's Python signal handlers (`minigpt prepare` turns SIGTERM into KeyboardInterrupt, which
    the pool's worker loop would catch, send back, and wait again).

    The signal comes when the *thread* that forked the worker ends: here the one in encode_batch,
    which shuts its pool down before it returns. The parent may die before the prctl, and then no
    signal comes: the worker checks that it still has the parent that forked it, and else exits.
    Linux only (prctl). Not covered elsewhere (macOS, BSD): there a worker whose parent was killed
    outright waits until it is killed by hand (Ctrl-C reaches the whole process group, workers too).
    A failed prctl (a sandbox that forbids it) leaves the worker as it was before: unguarded."""
    if not sys.platform.startswith("linux"):
        return
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # reparented already: the parent died before the prctl took effect
        os._exit(1)


def _encode_in_worker(piece: str) -> list[int]:
    return _WORKER_JOB(piece)


def processes_for(total_chars: int, num_workers: int | None = None) -> int:
    """How many processes `encode_batch` encodes `total_chars` of text with: num_workers (None or
    0: one per core), or 1 for a small batch, on a platform without fork, or in a daemon process
    (a DataLoader or Pool worker: "daemonic processes are not allowed to have children")."""
    workers = num_workers or available_cpus()
    if (workers <= 1 or total_chars < MIN_PARALLEL_CHARS or "fork" not in multiprocessing.get_all_start_methods()
            or multiprocessing.current_process().daemon):
        return 1
    return workers


def encode_batch(
    tokenizer: Tokenizer,
    texts: Iterable[str],
    *,
    allowed_special: AllowedSpecial = (),
    disallowed_special: AllowedSpecial = "all",
    num_workers: int | None = None,
) -> list[list[int]]:
    """Encode many documents on every core; the ids are exactly `[tokenizer.encode(t) for t in texts]`.

    num_workers: how many processes encode (this one included); None or 0 means one per core this
    process may use, 1 means this process alone. Worker processes are forked, so they share the
    tokenizer's merge table (and its chunk cache as filled so far) without copying or pickling it.
    Long documents are cut where the cut cannot change the ids (see safe_pieces), so one big file
    still uses every core. Small batches, platforms without fork, and daemon processes (a torch
    DataLoader worker, a Pool worker: they may not start children) are encoded in this process.
    Safe to call from several threads at once. A worker that dies (the out-of-memory killer) raises
    BrokenProcessPool, naming num_workers, rather than leave this process waiting for its ids."""
    texts = None if isinstance(texts, str) or not isinstance(texts, Iterable) else list(texts)  # a generator once
    if texts is None or not all(isinstance(t, str) for t in texts):
        raise TypeError("encode_batch takes a list of str (for one string, use encode)")
    num_workers = None if num_workers is None else as_count("num_workers", num_workers)
    if num_workers is not None and num_workers < 0:
        raise ValueError(f"num_workers must be an int >= 0 (0 or None: one process per core), got {num_workers!r}")
    # Checked here, on each whole text: a worker's error would give the position in its piece,
    # and name no text. The check done, the pieces are encoded with it off.
    allowed, disallowed = tokenizer._special_sets(allowed_special, disallowed_special)
    for i, text in enumerate(texts):
        tokenizer._refuse_disallowed(text, disallowed, f"texts[{i}]")
    encode = partial(tokenizer.encode, allowed_special=allowed, disallowed_special=()) if allowed else tokenizer.encode_ordinary
    total = sum(map(len, texts))
    workers = processes_for(total, num_workers)
    if workers == 1:
        return [encode(t) for t in texts]
    piece_chars = max(PIECE_CHARS, total // (4 * workers))  # ~4 pieces per worker balance the load
    pieces, owner = [], []
    for i, text in enumerate(texts):
        # No cut inside an allowed special token or an added one (one holding a newline could be
        # cut in two); the other special tokens are plain text here, which a safe cut never changes.
        for piece in safe_pieces(text, piece_chars, [*allowed, *tokenizer.added_tokens]):
            pieces.append(piece)
            owner.append(i)
    mine = len(pieces) // workers  # this process encodes a share too, rather than wait
    # The job reaches each worker as its initializer's argument, which fork hands over unpickled.
    # Not multiprocessing.Pool: it replaces a worker that dies and waits forever for the lost ids.
    pool = ProcessPoolExecutor(workers - 1, multiprocessing.get_context("fork"), _start_worker, (encode, os.getpid()))
    done = False
    try:
        # ~8 hand-outs per worker: few round trips, yet a worker that finishes early takes more.
        chunksize = max(1, len(pieces) // (8 * workers))
        theirs = pool.map(_encode_in_worker, pieces[mine:], chunksize=chunksize)
        results = [encode(p) for p in pieces[:mine]] + list(theirs)
        done = True
    except BrokenProcessPool as e:
        raise BrokenProcessPool(
            f"encode_batch: a worker process died (killed, e.g. by the out-of-memory killer) while {workers} "
            f"processes encoded {total:,} characters; use fewer with num_workers=N (1: this process alone), "
            "or pass fewer texts per call") from e
    finally:
        if not done:  # stopped (Ctrl-C, a signal turned into KeyboardInterrupt) or failed: the workers' results
            # are wanted no more, and a worker blocked writing one into a pipe nobody reads would keep
            # shutdown waiting on it forever. They hold nothing to save: killed.
            kill_own_workers(pool)
        pool.shutdown(cancel_futures=True)  # on an error here, workers drop what they have not started
    out: list[list[int]] = [[] for _ in texts]
    for i, ids in zip(owner, results):
        out[i] += ids
    return out


def kill_own_workers(pool: ProcessPoolExecutor) -> None:
    """Kill the worker processes `pool` started, and no others. Not the children this process gained
    since the pool was made (`multiprocessing.active_children()` before and after): those also
    take in the workers of another thread's encode_batch started meanwhile, and killing them broke
    that thread's pool (an audit: one thread's Ctrl-C failed the other's call). Python 3.14 says
    which are the pool's, and kills them, in public: `kill_workers()` (it also shuts the pool
    down, without waiting). Before it, the executor's own record, `_processes` (pid → Process, each
    added as it starts; with fork, all at the first submit; None once shut down): private, but
    plain, and the same from 3.10 on. The public way round, each worker sending its pid back
    from its initializer, costs a queue and still misses a worker interrupted before it reported."""
    kill_workers = getattr(pool, "kill_workers", None)  # Python 3.14 on
    if kill_workers is not None:
        kill_workers()
        return
    for worker in list((pool._processes or {}).values()):  # a copy: the pool's manager thread may change the dict
        worker.kill()


def pad_rows(rows: Sequence[list[int]], pad_id: int, side: Literal["left", "right"],
             width: int | None = None) -> tuple[list[list[int]], list[list[int]]]:
    """Token id lists → (ids, attention masks), each row padded with `pad_id` to `width` (default:
    the longest row; a longer row is left as it is) on `side`; mask 1 = real token, 0 = padding.

    Left padding is for generation: every prompt's last token sits in the last column, where one
    cache slot serves the whole batch. Right padding is for training and classification: real
    tokens keep positions 0..n-1 and, attention being causal, never see the pads."""
    width = max(map(len, rows), default=0) if width is None else width
    padded, masks = [], []
    for ids in rows:
        fill = max(width - len(ids), 0)
        pads, real = [pad_id] * fill, [1] * len(ids)
        padded.append(pads + ids if side == "left" else ids + pads)
        masks.append([0] * fill + real if side == "left" else real + [0] * fill)
    return padded, masks


def model_inputs(
    tokenizer: Tokenizer,
    texts: str | Sequence[str],
    *,
    padding: bool | Literal["longest", "max_length"] = False,
    padding_side: Literal["left", "right"] | None = None,
    truncation_side: Literal["left", "right"] | None = None,
    truncation: bool | Literal["longest_first", "only_first", "do_not_truncate"] | None = None,
    max_length: int | None = None,
    return_tensors: Literal["pt"] | None = None,
    allowed_special: AllowedSpecial = (),
    disallowed_special: AllowedSpecial = "all",
    **unexpected,
) -> dict:
    """`tokenizer(texts, ...)`: a batch → {"input_ids", "attention_mask"} (1 = real token, 0 = padding).

    padding=True / "longest" pads to the longest text, "max_length" to max_length (left out:
    tokenizer.model_max_length, as for truncation). Pad with
    padding_side="left" for generation, so every prompt's last token sits in the last column;
    left out, it is tokenizer.padding_side ("right" unless set). truncation=True keeps the first
    max_length tokens (the last ones with truncation_side="left", which defaults to
    tokenizer.truncation_side as padding_side does; max_length left out: the tokenizer's
    model_max_length, which its files may give, as in transformers); left out, truncation is on
    when max_length is given without padding (HF's rule: `tok(texts, max_length=8)` truncates).
    return_tensors="pt" gives (B, T) LongTensors.
    Padding uses pad_token_id: the pad token the files name, else the EOS (GPT-2 has no pad token); the
    attention mask, not the pad id, is what keeps padding out of attention. Other transformers
    arguments (pad_to_multiple_of, return_attention_mask, ...) are a TypeError that lists these."""
    if unexpected:
        raise TypeError(unexpected_call_keywords(unexpected))
    padding_side, truncation_side, truncation, max_length = call_options(
        tokenizer, padding, padding_side, truncation_side, truncation, max_length, return_tensors)
    single = isinstance(texts, str)
    batch = encode_batch(tokenizer, [texts] if single else texts, allowed_special=allowed_special,
                         disallowed_special=disallowed_special)
    if truncation:
        batch = [ids[-max_length:] if truncation_side == "left" else ids[:max_length] for ids in batch]
    masks = [[1] * len(ids) for ids in batch]
    if padding in (True, "longest", "max_length"):
        pad = tokenizer.pad_token_id
        if pad is None:
            raise ValueError("padding needs pad_token_id, and this tokenizer has no pad token and no EOS; set pad_token_id")
        batch, masks = pad_rows(batch, pad, padding_side, max_length if padding == "max_length" else None)
    if return_tensors == "pt":
        import torch  # only here: the tokenizer itself needs no torch

        if len(set(map(len, batch))) > 1:
            fix = ("truncation=True too: padding to max_length never cuts a longer text" if padding == "max_length"
                   else "padding=True (and truncation=True, max_length=N to cap it)")
            raise ValueError(f"texts encode to {min(map(len, batch))} to {max(map(len, batch))} tokens; "
                             f"a tensor needs one length: pass {fix}")
        shape = (len(batch), len(batch[0]) if batch else 0)  # (B, T), an empty batch too
        return {"input_ids": torch.tensor(batch, dtype=torch.long).reshape(shape),
                "attention_mask": torch.tensor(masks, dtype=torch.long).reshape(shape)}
    if single:
        return {"input_ids": batch[0], "attention_mask": masks[0]}
    return {"input_ids": batch, "attention_mask": masks}


def call_options(tokenizer: Tokenizer, padding, padding_side, truncation_side, truncation, max_length,
                 return_tensors) -> tuple[str, str, bool, int | None]:
    """model_inputs' options checked, each by name, and resolved: (padding_side, truncation_side,
    whether to truncate, max_length), the tokenizer's own settings where the call left one out."""
    padding_side = check_side("padding_side", tokenizer.padding_side if padding_side is None else padding_side)
    truncation_side = check_side("truncation_side", tokenizer.truncation_side if truncation_side is None else truncation_side)
    if padding not in (True, False, "longest", "max_length", "do_not_pad"):
        raise ValueError(f"padding must be True, False, 'longest' or 'max_length', got {padding!r}")
    # HF's strategy names; with one text per row, "only_first" and "longest_first" both cut it.
    if truncation is None:  # not given: HF truncates when max_length is the only length asked for
        truncation = max_length is not None and padding is False
    if truncation not in (True, False, "longest_first", "only_first", "do_not_truncate"):
        raise ValueError("truncation must be True, False, 'longest_first', 'only_first' or 'do_not_truncate', "
                         f"got {truncation!r}")
    truncation = truncation in (True, "longest_first", "only_first")
    if return_tensors not in (None, "pt"):
        raise ValueError(f"return_tensors must be 'pt' or None, got {return_tensors!r}")
    max_length = None if max_length is None else as_count("max_length", max_length)
    if max_length is not None and max_length < 1:
        raise ValueError(f"max_length must be a positive int, got {max_length!r}")
    if (truncation or padding == "max_length") and max_length is None:
        # As transformers: the length of the model the tokenizer belongs to, if its files say it.
        max_length = tokenizer.model_max_length
        if max_length is None:
            asked = "truncation=True" if truncation else "padding='max_length'"
            raise ValueError(f"{asked} needs max_length=N (the tokenizer knows no model's context length: "
                             "pass the model's config.n_positions, e.g., or set tokenizer.model_max_length)")
    return padding_side, truncation_side, truncation, max_length


def unexpected_call_keywords(unexpected: dict) -> str:
    """Tokenizer.__call__'s TypeError for keywords it does not take (transformers takes many more):
    the ones it does, read from model_inputs' signature so the list cannot go stale."""
    takes = [name for name, p in inspect.signature(model_inputs).parameters.items() if p.kind is p.KEYWORD_ONLY]
    return (f"Tokenizer.__call__() got unexpected keyword argument(s) {', '.join(map(repr, unexpected))}; "
            f"it takes texts and {', '.join(takes)}")
