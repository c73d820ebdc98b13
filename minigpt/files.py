"""Reading and writing files safely: every file minigpt writes is written atomically, and every
text it reads is UTF-8, with errors that name the file.

Where it sits: under everything that touches the disk (checkpoints, config.json, tokenizer files,
token files, a run's logs and state). `atomic_path` is why a crash or Ctrl-C never leaves half a
checkpoint where a whole one was; `file_lock` is how one process at a time writes a folder (a
download's, a run's).
"""
from __future__ import annotations

import codecs
import errno
import io
import json
import math
import os
import stat
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path

try:
    import fcntl  # POSIX: file_lock's flock
except ImportError:  # Windows has no flock: file_lock locks a byte with msvcrt instead
    fcntl = None


@contextmanager
def atomic_path(dest: Path) -> Iterator[Path]:
    """Yield a temp path beside `dest`, a new empty file; once the caller has written it, move it over `dest`.

    A reader sees either the old file or the complete new one, never half of one: `os.replace`
    is atomic on POSIX and Windows. The fsync makes the data durable *before* the rename, else a
    power cut could leave the new name pointing at an empty file. If writing fails, the temp
    file is removed and `dest` is untouched. A killed process (SIGKILL, power cut) runs no
    cleanup and leaves its temp file; the name is fixed per target (`dest` + ".tmp"), not random,
    so the next write of `dest` removes that same file and makes it afresh (`fresh_file`): crashes
    never pile up temps, and a directory holds at most one per file minigpt writes there. The price: two
    processes writing one `dest` at once share the temp and spoil each other's write, so a writer
    that may have company holds a lock around it (`save_lock`, as checkpoint.py's `write_checkpoint`
    and a tokenizer's save do). The new file keeps the permission bits of the `dest` it replaces
    (`kept_mode`, read now: the caller may remove `dest` before the rename, as `write_checkpoint`
    does an old config.json): a checkpoint its owner made private (chmod 600) stays private.
    """
    tmp, mode = temp_path(dest), kept_mode(dest)
    try:
        fresh_file(tmp)  # outside the inner try: a name it could not make is not ours to remove
        try:
            yield tmp
            fsync_file(tmp, mode)
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
    except OSError as e:
        # A failed write names no file ("[Errno 28] No space left on device", numpy's "N requested
        # and M written"): name the folder. Not the file: one `with` over several atomic_paths (a
        # checkpoint's, data.py's) cannot tell whose write failed, but they share a folder.
        if e.filename is None:
            raise OSError(e.errno or errno.EIO, e.strerror or str(e), str(dest.parent)) from e
        # One that names the temp file (a folder made read-only: vocab.json.tmp) names `dest` instead,
        # the file the user asked for: the temp is no name they typed, and is gone by now. The errno
        # stays, so the error keeps its class (EACCES: a PermissionError). (os.replace's error also
        # names dest, as its filename2.) Another file's error (a nested atomic_path's) is left as it is,
        # and so is one about what is at the temp's name (`NotOurFileError`: a link planted there):
        # named `dest`, it would call the user's own file a link.
        if is_about_temp(e, tmp) and not isinstance(e, NotOurFileError):
            raise OSError(e.errno, e.strerror, str(dest)) from e
        raise


class NotOurFileError(OSError):
    """What is at a path is no file of this process's to write: a symbolic link (`no_follow`), or a
    file that appeared where `fresh_file` makes a new one. The error is about that name itself, not
    about writing through it, so `atomic_path` leaves it naming its temp. Marked by its class where
    it is raised, not by its errno, which differs by system (a link refused by O_NOFOLLOW is ELOOP on
    Linux, EMLINK on FreeBSD)."""

    def __str__(self) -> str:
        # OSError's own reads "[Errno 40] is a symbolic link, ...; remove it: '/run/log.jsonl'", the
        # subject last: named first, the sentence reads as one wherever str(e) is printed (a CLI's
        # `error: {e}`, a log). `strerror` stays the bare reason, for `failure_reason`'s CLI lines.
        if self.filename is None or not self.strerror:  # (built without them: OSError's own words)
            return super().__str__()
        return f"{self.filename}: {self.strerror}"


class TempTakenError(NotOurFileError, FileExistsError):
    """`fresh_file`'s: a file appeared at the temp's name between its removal and its creation. A
    FileExistsError too (EEXIST), so that `except FileExistsError` still catches it, as it caught
    os.open's own error before."""


def is_about_temp(e: OSError, tmp: Path) -> bool:
    """Whether `e` names the temp file `tmp` by its path. An error of a call on a file descriptor
    names the fd, an int, which says nothing of whose file it is (the caller's `with` body may raise
    one of its own): atomic_path's own calls on the temp's fd are `fsync_file`'s, which names its path."""
    return isinstance(e.filename, (str, bytes, os.PathLike)) and Path(os.fsdecode(e.filename)) == tmp


def failure_reason(e: OSError, dest: Path) -> str:
    """Why writing `dest` (a file, or a folder of files) failed, for a CLI line that names `dest`
    already: "<file name>: <reason>" (vocab.json, or a temp: a link planted at p.jsonl.tmp), or the
    reason alone where the error names `dest` itself, its folder (`atomic_path`'s name for an error
    of no file: a write to a full disk), or nothing. A full disk met at the fsync names the file
    (`fsync_file`): "vocab.json: No space left on device". The file by its name alone: the files
    written for `dest` lie in it or beside it."""
    reason = e.strerror or str(e)
    if not isinstance(e.filename, (str, bytes, os.PathLike)):
        return reason
    failed = Path(os.fsdecode(e.filename))
    return reason if failed in (dest, dest.parent) else f"{failed.name}: {reason}"


# A write that failed for want of room, and what makes room: a full disk or quota, a file over the
# size limit (`ulimit -f`, or the file system's), and the full disk minigpt/run_dir.py's
# `save_checkpoint` guesses behind torch's EIO (a download's and a training run's advice).
MAKE_ROOM = {errno.ENOSPC: "free space", errno.EIO: "free space", errno.EFBIG: "allow bigger files (`ulimit -f`)",
             **({errno.EDQUOT: "free space within your quota"} if hasattr(errno, "EDQUOT") else {})}


def temp_path(dest: Path) -> Path:
    """The name `atomic_path` writes `dest` under before renaming it: what a killed write leaves."""
    return dest.with_name(dest.name + ".tmp")


# Opened with O_NOFOLLOW, a symbolic link at the path itself is an error (ELOOP), not followed.
# Windows has no such flag (nor symbolic links that a user may make without admin rights).
NO_FOLLOW = getattr(os, "O_NOFOLLOW", 0)
# os.open's flag for bytes read and written as they are: Windows would turn \n into \r\n (POSIX has none).
BINARY = getattr(os, "O_BINARY", 0)


def fresh_file(path: Path) -> None:
    """Make `path` a new, empty file of this process's own. The temp names are fixed, so anyone who
    may write the folder can plant something there first: a symbolic link to another file (which a
    plain open(path, "wb") would overwrite, through the link), or a file of theirs. So whatever is
    there (most often the temp a killed write left) is removed, and O_CREAT | O_EXCL creates the
    file or fails: it never opens one that is there, link or not, if one is planted in between. A
    writer that opens the temp again by name opens it with `no_follow` (as `write_checkpoint` does),
    so that a link swapped in after this is refused too."""
    path.unlink(missing_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | NO_FOLLOW, 0o666)  # 0o666: less the umask, as open()
    except FileExistsError:
        raise TempTakenError(errno.EEXIST, "appeared between its removal and its creation as a new temp file: "
                             "another process is writing this folder", str(path)) from None
    os.close(fd)


def no_follow(path: str | os.PathLike, flags: int, mode: int = 0o666) -> int:
    """os.open(path, flags), refusing a symbolic link at `path` instead of writing through it to
    wherever it points (a log.jsonl, a lock, a temp file that someone replaced with a link). Also an
    `opener` for open(): open(path, "a", opener=no_follow)."""
    try:
        return os.open(path, flags | NO_FOLLOW, mode)
    except OSError as e:
        if os.path.islink(path):
            raise NotOurFileError(e.errno, "is a symbolic link, which minigpt does not write through (one planted there "
                          "could point at any file); remove it", os.fspath(path)) from None
        raise


def kept_mode(dest: Path) -> int | None:
    """The permission bits a file written over `dest` keeps: dest's own (rwx for user, group and
    others), when it is a regular file, or a symbolic link to one (the link is replaced, its target
    left as it was, but a private target's file stays private); None (the umask's default) for a
    new file. Not setuid, setgid or sticky: those are no checkpoint's."""
    try:
        st = os.stat(dest)
    except OSError:  # none there, a broken link, a loop of links (ELOOP), a target we may not read: no mode to keep
        return None
    return stat.S_IMODE(st.st_mode) & 0o777 if stat.S_ISREG(st.st_mode) else None


SAVE_LOCK_NAME = ".minigpt-save.lock"  # in a folder, while a save writes it
# What flock says on a file system that has no locks: an NFS mount without its lock service
# (ENOLCK), others (EOPNOTSUPP), Lustre mounted without flock (ENOSYS). Work goes on unguarded there.
NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS)


@contextmanager
def save_lock(path: Path) -> Iterator[None]:
    """One save into the directory `path` at a time (checkpoint.py's `write_checkpoint`, a
    tokenizer's files: every rank of a script may save into one folder): a second waits for the
    first's lock. Where the file system has no locks (`NO_LOCKS`) the save goes on unguarded, as a
    training run does there (run_dir warns of it); a
    folder it may not write (EACCES, EPERM, EROFS) fails at the save's own first write, with that
    error. Any other error (EMFILE: too many open files) is raised: a save that went on unguarded
    beside another would spoil both."""
    with ExitStack() as held:
        try:
            held.enter_context(file_lock(path / SAVE_LOCK_NAME, busy=lambda: None))  # busy: wait for the other save
        except OSError as e:
            if e.errno not in (*NO_LOCKS, errno.EACCES, errno.EPERM, errno.EROFS):
                raise
            if e.errno in NO_LOCKS:  # no one holds a lock where there are none: no file left
                with suppress(OSError):
                    (path / SAVE_LOCK_NAME).unlink()
        yield


def fsync_file(path: Path, mode: int | None = None) -> None:
    """Make the file's data durable (on disk, not only in the page cache) before it is renamed, and
    with `mode`, give it those permission bits (`kept_mode`). A symbolic link put in its place is
    refused (`no_follow`), so no link is ever renamed into place."""
    fd = no_follow(path, os.O_RDWR)
    try:
        os.fsync(fd)
        if mode is not None:  # last: a read-only mode (0o444) would refuse the next open for writing
            os.chmod(fd if os.chmod in os.supports_fd else path, mode)  # Windows (before 3.13) changes modes by path only
    except OSError as e:
        # A call on an fd names no file: os.fsync's error has no name (a full disk: ENOSPC), and
        # os.chmod(fd)'s names the fd, an int. Named by the path, `atomic_path` knows it for its temp.
        raise OSError(e.errno or errno.EIO, e.strerror or str(e), str(path)) from e
    finally:
        os.close(fd)


WINDOWS_RETRY_S = 0.1  # how often a waiter on Windows tries the lock again
WINDOWS_OPEN_TRIES = 20  # denied opens, in all (20 × WINDOWS_RETRY_S = 2 s), before a denial is taken as real (a folder we may not write)


@contextmanager
def file_lock(lock: Path, busy: Callable[[], None]) -> Iterator[None]:
    """Hold an exclusive lock on the file `lock` (made, with its folder, if need be) for the `with`
    block. When another process holds it, busy() is called first: it raises, to refuse, or returns,
    to wait for the lock. The lock is the OS's, held through an open file, so it dies with its
    process: a killed holder leaves no stale lock (at most the file, which the next holder reuses).

    On POSIX it is an flock: a whole-file lock the kernel keeps on the open file. The file goes
    when the lock is released, so one who opened it just before then holds a removed file: each
    lock is checked to be on the file that is there, and taken again if not.
    Windows has no flock; msvcrt.locking locks the file's first byte instead. There an open file
    cannot be removed, so the file goes after the lock, and only if no one else has it open (a
    waiter, who then takes it): whoever releases it last removes it."""
    denied = 0
    while True:
        lock.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = no_follow(lock, os.O_RDWR | os.O_CREAT, 0o644)  # a planted link to another file: refused
        except FileNotFoundError:  # the last holder removed the folder as it ended: make it again
            continue
        except PermissionError:
            # Windows denies opening a file its holder is deleting, for that instant: open it anew.
            # Not for long: a folder that is not writable denies it for good.
            denied += 1
            if fcntl or denied > WINDOWS_OPEN_TRIES:
                raise
            time.sleep(WINDOWS_RETRY_S)
            continue
        try:
            (_flock if fcntl else _lock_first_byte)(fd, busy)
        except BaseException:
            os.close(fd)
            raise
        try:
            if os.path.samestat(os.fstat(fd), os.stat(lock)):
                break
        except FileNotFoundError:
            pass  # its holder removed it as it finished
        os.close(fd)
    try:
        yield
    finally:
        if fcntl:
            lock.unlink(missing_ok=True)  # before the lock goes, so no one locks a file about to go
            os.close(fd)
        else:
            _unlock_first_byte(fd, lock)


def _flock(fd: int, busy: Callable[[], None]) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        busy()
        fcntl.flock(fd, fcntl.LOCK_EX)


def _lock_first_byte(fd: int, busy: Callable[[], None]) -> None:
    import msvcrt  # Windows only

    try:
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # a byte past the end of a file may be locked too
        return
    except PermissionError:  # EACCES: another open file holds it
        busy()
    while True:  # polled: the blocking LK_LOCK gives up, raising, after 10 tries a second apart
        time.sleep(WINDOWS_RETRY_S)
        with suppress(PermissionError):
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return


def _unlock_first_byte(fd: int, lock: Path) -> None:
    import msvcrt  # Windows only

    try:
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
    finally:
        os.close(fd)
    with suppress(PermissionError):  # a waiter has it open, and holds it now: it removes it in turn
        lock.unlink(missing_ok=True)


def stdout_to_devnull(fd: int) -> None:
    """Send what is left to write to `fd` (stdout or stderr, whose reader has gone: a closed pipe)
    to devnull, so that no later write or Python's flush at exit fails on it."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)  # fd is devnull now; this descriptor was only the way there


# The byte order mark some editors (Notepad) write first. In UTF-8 it marks nothing (there is one
# byte order) and it is no part of the text: trained on, or scored by `minigpt eval`, it would be
# three bytes of noise before the first word; JSON refuses it.
BOM = "\ufeff"


def read_text(path: str | os.PathLike) -> str:
    """A UTF-8 text file's contents, without a byte order mark at its start; a file in another
    encoding is a ValueError that names it (Python's own error gives only the byte and its position)."""
    return decoded(path, Path(path).read_bytes())


def decoded(path: str | os.PathLike, data: bytes) -> str:
    """The text of `data`, file `path`'s bytes, as a text-mode read gives it: UTF-8, a CRLF and a
    lone CR ending a line as a LF does, and without a byte order mark at its start."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise not_utf8(path, e) from None
    return text.replace("\r\n", "\n").replace("\r", "\n").removeprefix(BOM)


# The most a JSON or text file of a model or tokenizer folder may hold. The largest real ones are
# tokenizer.json files of a few hundred thousand tokens (tens of MB); merges.txt is a few MB, config.json
# and an index KBs. A file far past that is no real one (a forged config.json of many GB), and would
# be read into memory until it ran out.
MAX_FOLDER_TEXT_BYTES = 256 * 2**20


def check_regular_file(path: str | os.PathLike) -> None:
    """Refuse a `path` that exists but is no regular file (after links): a folder, or a device, FIFO or
    socket, from which a read never ends (/dev/zero), or waits forever for a writer (a FIFO). For
    the files of a model or tokenizer folder, which come from anyone; a text to train on or a prompt
    may be a pipe (`<(...)`, /dev/stdin), and `read_text` reads those."""
    p = Path(path)
    if p.is_dir():  # the error open() gives a folder
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    if p.exists() and not p.is_file():
        raise not_regular(path)


def not_regular(path: str | os.PathLike) -> ValueError:
    return ValueError(f"{path} is not a regular file (a device, FIFO or socket); minigpt reads only regular files here")


def read_regular_text(path: str | os.PathLike) -> str:
    """`read_text` for a file of a model or tokenizer folder: a regular file (`check_regular_file`) of
    at most `MAX_FOLDER_TEXT_BYTES`, else a ValueError that names it. The file is checked once more on the
    descriptor that reads it (opened without waiting, as a FIFO open would), so one swapped for a
    FIFO or a device between the check and the open is refused too."""
    check_regular_file(path)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | BINARY)
    with open(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise not_regular(path)
        # Its size, then the whole file: read(cap + 1) would set the cap's 256 MiB aside even for a
        # 1 kB config.json.
        if st.st_size > MAX_FOLDER_TEXT_BYTES:
            raise ValueError(f"{path} holds more than {MAX_FOLDER_TEXT_BYTES:,} bytes, more than any real file of "
                             "its kind: not reading it into memory")
        data = f.read()
    return decoded(path, data)


STDIN = "-"  # the path a command reads as its standard input (a pipe), as cat and friends do


def source_name(path: str | os.PathLike) -> str | os.PathLike:
    """How an error names what was read: the path, or "standard input" for "-"."""
    return "standard input" if str(path) == STDIN else path


def read_text_or_stdin(path: str | os.PathLike) -> str:
    """`read_text`, or standard input's text for "-", read in the same text mode ("\\r\\n" → "\\n"), and
    without a byte order mark too. A closed standard input is an OSError that says so, which each
    command reports as it reports an unreadable file."""
    if str(path) != STDIN:
        return read_text(path)
    if sys.stdin is None:  # Python's stdin when the shell closed it (`<&-`), or a pythonw program's
        raise OSError("standard input is closed (`<&-`): give the text on it, from a pipe or `< FILE`")
    stdin = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8")
    try:
        return stdin.read().removeprefix(BOM)
    except UnicodeDecodeError as e:
        raise not_utf8(source_name(path), e) from None
    finally:
        stdin.detach()  # else the wrapper, once collected, would close the process's stdin with it


# The byte order marks a UTF-16 or UTF-32 file starts with (Windows' "Unicode" is UTF-16 LE), by
# the iconv name that converts it. UTF-32 LE's starts with UTF-16 LE's, so it is looked for first.
BYTE_ORDER_MARKS = {"utf-32": (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE), "utf-16": (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)}


def stored_path(path: str | os.PathLike) -> str:
    """A path as a file or a picture shows it (meta.json's sources, which a resumed fine-tuning run
    compares; a loss curve's title): its bytes read as UTF-8, any byte that is not UTF-8 written
    as \\xNN. str(path) would hold such bytes, and under a non-UTF-8 locale (LC_ALL=C) every
    non-ASCII one, as lone surrogates ("é" as "\\udcc3\\udca9"), which JSON writes as such and
    matplotlib cannot draw; this is the same string whatever the locale, and loses nothing."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


# Characters JSON lets a string hold raw that other line readers take for a line end: Python's
# str.splitlines() (U+0085 NEXT LINE, U+2028 LINE SEPARATOR, U+2029 PARAGRAPH SEPARATOR) and
# JavaScript before ES2019 (the last two). Escaped, a record stays one line for every reader.
LINE_BREAKS_JSON_KEEPS = {"\u0085": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def json_line(record: dict) -> str:
    """One line of JSON, as every JSON line minigpt writes (log.jsonl, generate's --prompts-file,
    eval's --predictions and --json, train's result): strict JSON, a number that is not finite as
    null (`finite_or_null`), its text as UTF-8, not escaped, unless it holds a lone surrogate (a
    "\\ud800" escape in the input: a string cut through an emoji), which no UTF-8 can hold: then
    all of it is escaped, so the line is still valid and joins back to its input.
    The three line breaks JSON keeps raw (LINE_BREAKS_JSON_KEEPS) are escaped either way: json.dumps
    writes them only inside strings, where their escape is the same text."""
    record = finite_or_null(record)
    line = json.dumps(record, ensure_ascii=False, allow_nan=False)
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(record, allow_nan=False)
    for raw, escaped in LINE_BREAKS_JSON_KEEPS.items():
        line = line.replace(raw, escaped)
    return line


def unwritable(folder: Path) -> str | None:
    """Why `folder` (made with its parents if missing) could not be written, or None: its nearest
    existing parent is a file, or may not be written. Asked before long work (training a tokenizer,
    a download), not where it would fail at its end. os.access sees a read-only file system (a
    container's read-only mount) as well as the permission bits."""
    above = next(p for p in (folder.absolute(), *folder.absolute().parents) if p.exists())  # ("/" at worst)
    if not above.is_dir():
        return f"{above} is a file, not a directory"
    if not os.access(above, os.W_OK | os.X_OK):
        return f"{above} cannot be written (no permission, or a read-only file system)"
    return None


def finite_or_null(value):
    """`value` with every float that is not finite, at any depth of dicts and lists, replaced by None.
    json.dumps writes NaN and ±inf as NaN and Infinity, which are no JSON: `jq` 1.6 and JavaScript's
    JSON.parse refuse the whole line (a skipped fp16 step's grad norm, a diverged model's perplexity)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_null(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_null(v) for v in value]
    return value


def user_path(value: str) -> str:
    """A path flag's value (argparse's `type=`) with a leading `~` or `~user` expanded, as the shell
    expands it at the start of a word. Only there: bash leaves `--out=~/x` as typed (the `~` is
    not at the word's start), and so does Make, so minigpt would make a folder named `~` in the
    working directory. Nothing else changes (`./~` stays a folder named `~`)."""
    return os.path.expanduser(value)


def typed_text(flag: str, value: str) -> str:
    """A text typed on the command line (a prompt, a stop string), as it was typed: UTF-8.

    Python decodes argv in the locale's encoding, and holds the bytes it cannot decode as lone
    surrogates: under LC_ALL=C (without Python's UTF-8 mode) "é" arrives as "\\udcc3\\udca9", and
    tokenized so it would be other tokens without a word. Those bytes, read as UTF-8, are the text;
    bytes that are no UTF-8 are refused, naming the flag. (A path is left as Python holds it: open()
    encodes it back to the same bytes.)"""
    try:
        return value.encode("utf-8", "surrogateescape").decode("utf-8")
    except UnicodeDecodeError as e:
        raise not_utf8(flag, e) from None
    except UnicodeEncodeError as e:  # a surrogate that no byte was: no text at all
        raise ValueError(f"{flag} holds a lone surrogate ({e.object[e.start]!r}), which is no text") from None


# The bytes that are C1 control characters in latin1 (ISO-8859-1), and printable in Windows-1252
# (’ “ ” – € ... at 0x80-0x9F), which Excel and Notepad on Windows write: met in a text, they tell
# cp1252, and converted as latin1 they would become invisible controls that minigpt reads as text.
# (Five of 0x80-0x9F are no character in cp1252 either, and iconv -f cp1252 refuses them.)
CP1252_ONLY = frozenset(range(0x80, 0xA0)) - {0x81, 0x8D, 0x8F, 0x90, 0x9D}


# Bytes that text holds next to none of: NUL and the other C0 controls but tab, newline, vertical
# tab, form feed, carriage return and escape (ESC, 0x1b, begins the ANSI colour codes of a terminal
# log), and DEL. A token file is full of them: a uint16 id below 8,192 (GPT-2's commonest tokens) has
# a high byte below 0x20.
CONTROL_BYTES = frozenset(range(0x20)) - frozenset(b"\t\n\v\f\r\x1b") | {0x7F}
BINARY_SAMPLE = 4096  # the bytes looked at, from the start of what was decoded
BINARY_SHARE = 0.1  # more of those than this share of them, and it is no text


def looks_binary(data: bytes) -> bool:
    """Whether `data` (the first bytes of a file) is no text in any encoding: many of its bytes are
    control bytes. The content alone decides: a latin1 text named x.bin is text in another
    encoding, and `token_file_hint` adds what a .bin of a prepared folder is."""
    sample = data[:BINARY_SAMPLE]
    return sum(b in CONTROL_BYTES for b in sample) > BINARY_SHARE * len(sample)


def utf16_without_bom(data: bytes) -> str | None:
    """"utf-16le" or "utf-16be" where `data` (a file's first bytes) is UTF-16 text without a byte
    order mark, else None. Such text of Latin letters is half NUL bytes, the high byte of nearly
    every character, at every odd offset (LE) or every even one (BE); read in that byte order it
    has few control characters. A GPT-2 token file has fewer NULs (only ids below 256 have one);
    a nanoGPT character-level one (uint16 ids below 65) has as many, but its low bytes, read as
    characters, are the controls 0x00-0x1f (a space is id 1). Not handled: UTF-16 text of other
    scripts (Cyrillic, CJK), whose high bytes are no NULs; it gets the latin1 guess."""
    sample = data[:BINARY_SAMPLE // 2 * 2]  # whole characters of two bytes
    for encoding, high_bytes in (("utf-16le", sample[1::2]), ("utf-16be", sample[0::2])):
        if high_bytes.count(0) > (1 - BINARY_SHARE) * len(high_bytes):
            text = sample.decode(encoding, "replace")
            controls = sum(ord(c) in CONTROL_BYTES for c in text)
            return encoding if controls <= BINARY_SHARE * len(text) else None
    return None


def refuse_nul_bytes(name: str | os.PathLike, text: str) -> None:
    """Refuse `text` (a file's start, decoded) of which more than BINARY_SHARE are NUL characters.
    Bytes below 0x80 are valid UTF-8, so a nanoGPT character-level train.bin (uint16 ids below 65:
    every other byte is NUL) or UTF-16 text of Latin letters decodes without an error, and would be
    tokenized, or scored by `minigpt eval`, as text. Real text holds no NULs; a stray one or two
    pass, as they always did."""
    sample = text[:BINARY_SAMPLE]
    if sample.count("\0") > BINARY_SHARE * len(sample):
        data = sample.encode("utf-8")
        if found := utf16_without_bom(data):
            raise ValueError(utf16_message(name, found))
        raise ValueError(f"{name} looks like a binary (token) file, not text (a tenth or more of its first characters "
                         f"are NUL bytes){token_file_hint(name)}")


def utf16_message(name: str | os.PathLike, encoding: str) -> str:
    """What to say of a file of UTF-16 text without a byte order mark (`utf16_without_bom`)."""
    shown = {"utf-16le": "UTF-16 LE", "utf-16be": "UTF-16 BE"}[encoding]
    return (f"{name} looks like {shown} text without a byte order mark, not UTF-8 (a NUL byte every other byte); "
            f"convert it first (e.g. iconv -f {encoding} -t utf-8)")


def token_file_hint(name: str | os.PathLike) -> str:
    """For a .bin beside a meta.json (a prepared data folder): which text to pass instead."""
    folder = Path(name).parent
    if not (str(name).endswith(".bin") and (folder / "meta.json").is_file()):
        return "; pass a text file"
    val_txt = f", e.g. {folder / 'val.txt'}" if (folder / "val.txt").is_file() else ""
    return f"; it holds the token ids of the data prepared in {folder}: pass the text they came from{val_txt}"


def without_cut_character(data: bytes) -> bytes:
    """`data` without a UTF-8 character begun at its end and not finished there: its lead byte in the
    last 3 says how many bytes it needs (110xxxxx two, 1110xxxx three, 11110xxx four)."""
    for k in range(1, min(4, len(data)) + 1):
        byte = data[-k]
        if byte < 0x80:  # ASCII: nothing begun after it
            return data
        if byte >= 0xC0:  # a lead byte
            return data[:-k] if k < (2 if byte < 0xE0 else 3 if byte < 0xF0 else 4) else data
    return data


def not_utf8(name: str | os.PathLike, e: UnicodeDecodeError, at: int = 0) -> ValueError:
    """A ValueError naming the text (a file, a flag) that is not UTF-8, the first bad byte, and the
    fix. `at`: where the bytes decoded start in the text (a block of a file read piece by piece).
    Where they are the text's start (at 0), a line past the first is named too (on the first, the
    offset is the column); a later block cannot tell how many lines came before it.
    The fix names the encoding that a byte order mark at the start tells, or UTF-16's byte order that
    its NULs tell (`utf16_without_bom`); else it is a guess from the bytes that are no UTF-8: cp1252
    if one of them is in `CP1252_ONLY` (the first may be an é, which both encodings have, before a
    dash that only cp1252 has), else latin1. (0x80-0x9F are
    also the inner bytes of UTF-8's own characters, “ is E2 80 9C: those do not count.) A file that
    is no text at all (`looks_binary`: a .bin of token ids, most often) gets no encoding advice:
    no conversion makes it text."""
    found = at == 0 and next((enc for enc, boms in BYTE_ORDER_MARKS.items() if e.object.startswith(boms)), None)
    if found:
        return ValueError(f"{name} is {found.upper()} text, not UTF-8 (it starts with a {found.upper()} byte order mark); "
                          f"convert it first (e.g. iconv -f {found} -t utf-8)")
    # Only at the start: a later block may begin at an odd offset, and UTF-16 text fails in its first block.
    found = at == 0 and utf16_without_bom(e.object)
    if found:
        return ValueError(utf16_message(name, found))
    byte = e.object[e.start]
    if looks_binary(e.object):
        return ValueError(f"{name} looks like a binary (token) file, not text (byte {byte:#04x} at offset {at + e.start})"
                          f"{token_file_hint(name)}")
    # Each byte that does not decode becomes one surrogate U+DC80..U+DCFF: those are the stray ones
    # (but a character cut in two at the end of a block read piece by piece is not stray).
    decoded = without_cut_character(e.object).decode("utf-8", "surrogateescape")
    stray = {ord(c) - 0xDC00 for c in set(decoded) if "\udc80" <= c <= "\udcff"}
    guess = "cp1252" if stray & CP1252_ONLY else "latin1"
    # Lines end at "\n", "\r\n" or a lone "\r", as a text-mode read (read_text) takes them.
    before = e.object[:e.start]
    line = before.count(b"\n") + before.count(b"\r") - before.count(b"\r\n") + 1
    where = f" line {line}" if at == 0 and line > 1 else ""
    return ValueError(f"{name}{where} is not UTF-8 text: byte {byte:#04x} at offset {at + e.start}; "
                      f"convert it first (e.g. iconv -f {guess} -t utf-8)")


def read_json(path: str | os.PathLike, unique_keys: bool = False) -> object:
    """A JSON file's contents; a file that is not JSON (or not UTF-8) is a ValueError that names it
    (json's own error gives only a line and column). With `unique_keys`, so is an object that gives
    one key two values, which json takes silently, the last winning (a vocab.json would lose a
    token's id); a key repeated with its value loses nothing, and transformers reads it too."""
    repeated = []  # said once json is done: an error raised inside it would read as invalid JSON

    def pairs_once(pairs: list[tuple[str, object]]) -> dict:
        contents = dict(pairs)
        if len(contents) < len(pairs):  # a key given twice (rare): which, and with another value?
            seen = {}
            for key, value in pairs:
                if key in seen and seen[key] != value:
                    repeated.append(f"{path} gives the key {key!r} two values ({seen[key]!r} and {value!r}); a key has one")
                seen[key] = value
        return contents

    text = read_regular_text(path)
    try:
        contents = json.loads(text, object_pairs_hook=pairs_once if unique_keys else None)
    except ValueError as e:  # JSONDecodeError, or a number of more digits than int() reads (4,300)
        refuse_lfs_pointer(path)
        raise ValueError(f"{path} is not valid JSON: {e}") from None
    except RecursionError:  # json recurses once per [ or {: a file of 100,000 "[" overflows Python's stack
        raise ValueError(f"{path} is not valid JSON for minigpt: it nests arrays or objects too deeply "
                         f"(Python's json reads at most about {sys.getrecursionlimit()} levels)") from None
    if repeated:
        raise ValueError(repeated[0])
    return contents


# How a Git LFS pointer file starts: what `git clone` of a Hub repository leaves in place of each
# large file when git-lfs is not installed (about 130 bytes naming the real file's sha256 and size).
LFS_POINTER = b"version https://git-lfs.github.com/spec/v1"


def refuse_lfs_pointer(path: str | os.PathLike) -> None:
    """Raise a ValueError saying how to fetch the file if `path` is a Git LFS pointer: read as the
    file itself it fails with a puzzling error (a safetensors header "too large", invalid JSON)."""
    with open(path, "rb") as f:
        if f.read(len(LFS_POINTER)) == LFS_POINTER:
            raise ValueError(f"{path} is a Git LFS pointer, not the file itself: the repository was cloned without "
                             f"git-lfs; fetch the files with `git lfs install && git lfs pull` in {Path(path).parent}")


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` as UTF-8, atomically, and as it is on every system: text mode on Windows
    would write each "\\n" as "\\r\\n" (a saved merges.txt would no longer be GPT-2's, byte for byte)."""
    with atomic_path(Path(path)) as tmp, open(tmp, "w", encoding="utf-8", newline="", opener=no_follow) as f:
        f.write(text)
