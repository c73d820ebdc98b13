"""Download OpenAI's GPT-2 from the Hugging Face Hub, using only the standard library for HTTP.

Where it sits: before everything else. Hub → checkpoints/NAME/{config.json, model.safetensors,
vocab.json, merges.txt} → `GPT.from_pretrained` and `Tokenizer.from_pretrained`. A size named
where a directory is expected (`GPT.from_pretrained("gpt2")`, `--model gpt2-xl`) is looked up by
`find_gpt2`: checkpoints/NAME, then the Hugging Face cache, and only then fetched. (checkpoints/ is
the checkout's; a package installed from a wheel uses ~/.cache/minigpt instead: config.DOWNLOADS.)
Any other Hub model ("sshleifer/tiny-gpt2", "distilgpt2") is only read, from the Hugging Face
cache where transformers left it (`find_hub_model`, which config.shipped_path asks); never fetched.

How one file is fetched (the Hub's `resolve` protocol, as huggingface_hub uses it):
1. HEAD {base}/{repo}/resolve/main/{file}, *without* following redirects, tells the size and hash:
   - big files (stored with git-LFS) answer 302 → a CDN, with `X-Linked-Size` and `X-Linked-Etag`,
     which is the sha256 of the content;
   - small files (stored in git itself) answer 200 with `Content-Length` and an `ETag` that is
     git's blob hash: sha1(b"blob {size}\\0" + content).
2. GET the file into FILE.partial, beside a note (FILE.partial.source) of the size and hash it is
   the start of. If a FILE.partial of the same file is already there, ask only for the rest with
   `Range: bytes={have}-` and append (a server that ignores Range answers 200: start over).
   Both are made afresh, never written through a symbolic link planted there (`_open_partial`); a file
   the Hub gave no size for stops at a bound no GPT-2 file reaches (MAX_SMALL_FILE,
   `max_weights_size`), and an attempt that gets nothing of the body within HEADERS_WINDOWS ×
   RATE_WINDOW_S (its headers included), or then fewer than MIN_WINDOW_BYTES per RATE_WINDOW_S,
   fails as stalled and is retried (`_Watchdog`).
3. Check the size, then the hash (whichever of the two the ETag is). A server that announces no
   hash (a mirror; a captive portal's login page, answered for every address) gets each file's
   content checked instead (`content_problem`): it must at least be a file of the kind its name says.
4. Once every file is checked, rename each FILE.partial → FILE, config.json last, so a download
   that fails leaves the folder's previous model whole. A rerun skips a FILE whose size and hash
   are still the server's (hashed again: a mirror that announced no hash may have sent another
   file), and says which it checked.

Only http:// and https:// addresses are opened, the Hub's redirects included: urllib alone would
also open file://, ftp:// and data: (a hostile server's "302 Location: file:///dev/zero" would fill the
disk). An answer that is an HTML page (Content-Type: text/html) is never one of the four files.
A dropped connection, or a server error (HTTP 5xx: a busy Hub or CDN), is retried (the GET
resumed) a few times in a row within one run, counted afresh each time the file grew; if it keeps
failing, the .partial file stays and running the same command again picks up where it stopped. A
4xx (a wrong name, a private repo) would answer the same, so it is not.
Two downloads into one directory take turns (`download_lock`): the second waits, then skips.
Not handled: private repos (no token is sent) and revisions other than `main`.
"""
from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import re
import shutil
import socket
import ssl
import stat
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.parse import urljoin, urlsplit

from minigpt.checks import check_flag
from minigpt.config import (CHECKPOINTS, DOWNLOADS, DOWNLOADS_SOURCE, GPT2_SIZES, INDEX_NAME, LOG_FILE, PICKLE_NAME, STATE_FILE,
                            WEIGHTS_NAME, GPTConfig, check_temp_cache)
from minigpt.files import BINARY, MAKE_ROOM, file_lock, fresh_file, no_follow, unwritable, user_path
from minigpt.progress_bar import progress_bar

MODELS = {name: f"openai-community/{name}" for name in GPT2_SIZES}
FILES = ("config.json", "vocab.json", "merges.txt", "model.safetensors")  # small ones first: fail fast
DEFAULT_BASE_URL = "https://huggingface.co"
BASE_URL_ENV = "HF_ENDPOINT"  # the variable huggingface_hub reads too, e.g. for a mirror
TIMEOUT_S = 30.0  # per socket operation, not per file
CHUNK = 1 << 20  # at most 1 MiB per read: few syscalls on a fast line
# The slowest transfer taken (`_Watchdog`): fewer than MIN_WINDOW_BYTES of the body in a
# RATE_WINDOW_S fails the attempt (`StalledError`), as does no body byte within HEADERS_WINDOWS
# windows (the proxy's, each redirect's and the file's status lines and headers). TIMEOUT_S alone
# lets a server that sends one byte every 20 s hold a download forever. 64 KiB a minute (~1 KiB/s)
# would take 6 days for gpt2's 548 MB: a stalled or hostile server, not a slow line.
RATE_WINDOW_S = 60.0
MIN_WINDOW_BYTES = 64 << 10
HEADERS_WINDOWS = 2
# The most a file the server announces no size for may grow to, so that an endless body cannot
# fill the disk: GPT-2's config.json is 1 kB, vocab.json 1.0 MB, merges.txt 0.46 MB; the
# weights' bound depends on the size fetched (`max_weights_size`).
MAX_SMALL_FILE = 8 << 20
REDIRECTS = (301, 302, 303, 307, 308)
WEB_SCHEMES = ("http", "https")  # the only addresses opened: see refuse_non_web
SAFETENSORS_HEADER_LEN = 8  # a safetensors file starts with its JSON header's length, a little-endian u64
LOCK_NAME = ".minigpt-download.lock"  # in the directory being downloaded into, while a download runs
# Files another model's folder may hold that would override what the download fetches: a
# tokenizer.json wins over vocab.json + merges.txt, and the others set token ids. Replaced with
# that model, they go (the download fetches none of them: GPT-2's are the four files' defaults).
OVERRIDES = ("generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
             "added_tokens.json")


class DownloadError(OSError):
    """A failure the user can act on; `main` prints it as one line, without a traceback (as every
    command does an OSError)."""


class StalledError(TimeoutError):
    """An attempt the `_Watchdog` cut: no body within HEADERS_WINDOWS × RATE_WINDOW_S, or then slower than
    MIN_WINDOW_BYTES per RATE_WINDOW_S. `fetch` retries it as a timeout, but counts it as a failed
    attempt even though the file grew (a trickle always grows it)."""


@dataclass
class RemoteFile:
    url: str  # where to GET it: the CDN address for LFS files
    size: int | None  # bytes, from X-Linked-Size or Content-Length
    hash_kind: str | None  # "sha256", "git-sha1", or None if the server gave no usable hash
    digest: str | None  # hex


def refuse_non_web(url: str, server: str | None = None) -> None:
    """Raise a DownloadError unless `url` is an http:// or https:// address; `server` is the address
    that redirected there, if one did. urllib opens file://, ftp:// and data: addresses too, so a
    hostile or broken server's redirect would copy a file of this machine in as the model."""
    if urlsplit(url).scheme.lower() in WEB_SCHEMES:
        return
    where = f"{server} redirects the download to {url!r}" if server else f"the address {url!r} is not a web address"
    raise DownloadError(f"{where}; refused: minigpt downloads only http:// and https:// addresses")


def refuse_html(headers, url: str) -> None:
    """Raise a DownloadError if an answer is an HTML page: none of the four files is one, but a captive
    portal (hotel or airport Wi-Fi) or a proxy's error page answers 200 with one for every address."""
    content_type = headers.get("Content-Type") or ""
    if content_type.split(";")[0].strip().lower() == "text/html":
        raise DownloadError(f"{url} answered with an HTML page ({content_type}), not the file: a Wi-Fi login "
                            "page or a proxy's error page? Open any web page in a browser first, or set a mirror "
                            f"with ${BASE_URL_ENV} (or minigpt download's --base-url)")


def parse_size(value: str, header: str, url: str) -> int:
    """A size header's value in bytes; a DownloadError naming `url` when it is no whole number."""
    if not re.fullmatch(r"[0-9]+", value.strip()):  # ASCII digits alone: int() takes "-5", "+5" and "1_000" too
        raise DownloadError(f"{url} announced {header}: {value!r}, which is not a size in bytes")
    return int(value)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # let the 3xx surface as an HTTPError: its headers carry the size and hash


class _WebRedirect(urllib.request.HTTPRedirectHandler):
    """Follows a redirect to http:// or https:// alone. (urllib's own refuses file:// and data:
    itself, with an HTTPError, but follows ftp://.)"""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        refuse_non_web(newurl, server=req.full_url)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_attempt = threading.local()  # .watchdog: the `_Watchdog` of the attempt this thread runs, if any


class _Watchdog:
    """One download attempt's clock (`with _Watchdog(url) as watchdog:` around a HEAD or a GET, the
    reader adding what it gets to `watchdog.got`). A thread looks every RATE_WINDOW_S: it allows
    HEADERS_WINDOWS windows before the first body byte, then wants MIN_WINDOW_BYTES a window; else
    it marks the attempt stalled and shuts down every socket the attempt opened, and the `with`
    raises StalledError, whatever the cut read raised. A check made between reads would never be
    reached: http.client reads status lines, headers, chunk-size lines and trailers inside one
    call (read1 included), a line at a time, and TIMEOUT_S starts afresh with each byte, so a
    server that trickles any of them holds that call forever."""

    def __init__(self, url: str) -> None:
        self.url, self.got, self.stalled = url, 0, None
        self._sockets: list[socket.socket] = []
        self._lock, self._done = threading.Lock(), threading.Event()
        self._thread = threading.Thread(target=self._watch, name="minigpt download watchdog", daemon=True)

    def __enter__(self) -> _Watchdog:
        _attempt.watchdog = self
        self._thread.start()
        return self

    def __exit__(self, kind, error, traceback) -> None:
        _attempt.watchdog = None
        self._done.set()
        self._thread.join()  # no thread outlives the attempt
        if self.stalled and (kind is None or issubclass(kind, Exception)):  # (a Ctrl-C goes up as it is)
            raise StalledError(self.stalled) from None  # the cut read fails in one of many ways, or not at all

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            if self.stalled:
                self._cut(sock)  # opened after the cut (a redirect's next hop)

    def _watch(self) -> None:
        windows, last = 0, 0
        while not self._done.wait(RATE_WINDOW_S):
            windows, got = windows + 1, self.got
            if not got and windows >= HEADERS_WINDOWS:
                stalled = f"{self.url} sent nothing of the file within {windows * RATE_WINDOW_S:g} s (headers included)"
            elif last and got - last < MIN_WINDOW_BYTES:
                stalled = f"{self.url} sent {got - last:,} bytes in {RATE_WINDOW_S:g} s, under the {MIN_WINDOW_BYTES:,} taken"
            else:
                last = got  # (the window the body started in is only part of one: the rate counts from the next)
                continue
            with self._lock:
                self.stalled = f"{stalled}: stalled"
                for sock in self._sockets:
                    self._cut(sock)
            return

    @staticmethod
    def _cut(sock: socket.socket) -> None:
        try:  # socket.socket's own: an SSLSocket's would also drop its TLS state under the read
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
        except OSError:
            pass  # closed already, or detached into the TLS socket that is registered too


def _watched(sock: socket.socket) -> socket.socket:
    if (watchdog := getattr(_attempt, "watchdog", None)) is not None:
        watchdog.watch(sock)
    return sock


class _WatchedConnection:
    """An http.client connection whose sockets the attempt's `_Watchdog` can cut: the TCP one as it
    is made (a proxy's CONNECT answer is read before connect returns), and the TLS one around it."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        create = self._create_connection
        self._create_connection = lambda *a, **k: _watched(create(*a, **k))

    def connect(self) -> None:
        super().connect()
        _watched(self.sock)


class _HTTPConnection(_WatchedConnection, http.client.HTTPConnection):
    pass


class _HTTPSConnection(_WatchedConnection, http.client.HTTPSConnection):
    pass


class _HTTPHandler(urllib.request.HTTPHandler):
    def do_open(self, http_class, req, **kwargs):
        return super().do_open(_HTTPConnection, req, **kwargs)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def do_open(self, http_class, req, **kwargs):
        return super().do_open(_HTTPSConnection, req, **kwargs)


def _opener(follow: bool) -> urllib.request.OpenerDirector:
    """An opener for http:// and https:// alone: urllib's build_opener's handlers, all but the file,
    ftp and data ones (so an address that slipped past refuse_non_web fails as "unknown url type"),
    whose connections the attempt's `_Watchdog` watches."""
    proxies = {scheme: url for scheme, url in urllib.request.getproxies().items() if scheme in WEB_SCHEMES}
    opener = urllib.request.OpenerDirector()
    for handler in (urllib.request.ProxyHandler(proxies), urllib.request.UnknownHandler(),
                    _HTTPHandler(), _HTTPSHandler(),
                    urllib.request.HTTPDefaultErrorHandler(), _WebRedirect() if follow else _NoRedirect(),
                    urllib.request.HTTPErrorProcessor()):
        opener.add_handler(handler)
    return opener


def _open(url: str, headers: dict[str, str] | None = None, method: str = "GET", follow: bool = True):
    refuse_non_web(url)
    request = urllib.request.Request(url, headers={"User-Agent": "minigpt", **(headers or {})}, method=method)
    return _opener(follow).open(request, timeout=TIMEOUT_S)


def remote_file(url: str) -> RemoteFile:
    """Ask the Hub for a file's size, hash and download address (step 1 above)."""
    for _ in range(5):  # at most 5 relative redirects (renamed repos): a redirect loop must end
        try:
            # identity: a compressed answer would report the compressed size
            with _Watchdog(url), _open(url, {"Accept-Encoding": "identity"}, method="HEAD", follow=False) as resp:
                headers, location = resp.headers, None
        except HTTPError as e:
            if e.code not in REDIRECTS:
                raise
            headers, location = e.headers, e.headers.get("Location")
        if location and location.startswith("/"):
            url = urljoin(url, location)  # a relative redirect: the repo was renamed; ask again there
            continue
        break
    if location:  # checked before anything is written: the GET goes there
        refuse_non_web(target := urljoin(url, location), server=url)
    else:
        refuse_html(headers, url)
        target = url
    size = None
    if headers.get("X-Linked-Size"):  # an LFS file's, on the redirect
        size = parse_size(headers["X-Linked-Size"], "X-Linked-Size", url)
    elif headers.get("Content-Length") and not location:  # (a redirect's own is only that of its short body)
        size = parse_size(headers["Content-Length"], "Content-Length", url)
    etag = (headers.get("X-Linked-Etag") or headers.get("ETag") or "").removeprefix("W/").strip('"').lower()
    kind = "sha256" if re.fullmatch(r"[0-9a-f]{64}", etag) else "git-sha1" if re.fullmatch(r"[0-9a-f]{40}", etag) else None
    return RemoteFile(url=target, size=size, hash_kind=kind, digest=etag if kind else None)


def file_digest(path: Path, hash_kind: str) -> str:
    h = hashlib.sha256() if hash_kind == "sha256" else hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def source_note(partial: Path) -> Path:
    """FILE.partial.source: which file FILE.partial is the start of (`_get` writes it first)."""
    return partial.with_name(partial.name + ".source")


def resumable_bytes(remote: RemoteFile, partial: Path) -> int:
    """How much of an earlier run's `partial` to keep: all of it when its note names the file the
    server announces now (its size and hash), else nothing. The start of another file (another
    model's, fetched into this folder before; the Hub's file since replaced) would get this file's
    tail appended: a hash mismatch only after the whole rest came, or, from a mirror that
    announces no hash, a spliced file taken. A file of unknown size is never resumed, nor a
    symbolic link (`_open_partial` replaces it)."""
    if remote.size is None or partial.is_symlink() or not partial.is_file() or partial.stat().st_size == 0:
        return 0
    note = source_note(partial)
    if note.is_file() and note.read_text(encoding="utf-8") == _identity(remote):
        return partial.stat().st_size
    print(f"{partial} is the start of another file than the one the server announces now: starting over",
          file=sys.stderr)
    return 0


def _identity(remote: RemoteFile) -> str:
    return json.dumps({"size": remote.size, "hash_kind": remote.hash_kind, "digest": remote.digest})


def _create(path: Path) -> int:
    """A new empty file at `path` (minigpt/files.py's `fresh_file`: a link planted there is removed,
    never written through), open for writing."""
    fresh_file(path)
    return no_follow(path, os.O_WRONLY | BINARY)


def _open_partial(remote: RemoteFile, partial: Path, have: int):
    """`partial` open to append to: the `have` bytes of `remote` an earlier run left, or with `have`
    0 a new empty file, beside a new note naming `remote` (emptied first, then noted: a note never
    names bytes of another file). Never through a symbolic link: anyone who can write the folder
    could plant FILE.partial -> another file, which the download would overwrite, then rename the
    link into place as FILE."""
    if have:
        f = os.fdopen(no_follow(partial, os.O_WRONLY | os.O_APPEND | BINARY), "ab")
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):  # (a device node, say: never appended to)
            f.close()
            raise DownloadError(f"{partial} is not a regular file; remove it and run again")
        return f
    f = os.fdopen(_create(partial), "ab")
    try:
        with os.fdopen(_create(source_note(partial)), "w", encoding="utf-8") as note:
            note.write(_identity(remote))
    except BaseException:
        f.close()
        raise
    return f


def _get(remote: RemoteFile, partial: Path, progress: bool, max_size: int) -> None:
    """Step 2: GET into `partial`, appending to what is there if it is this file's and the server
    honours Range. A file whose size the Hub did not announce stops at `max_size` bytes."""
    have = resumable_bytes(remote, partial)
    if remote.size is not None:
        check_room(remote, partial, have)
    with _open_partial(remote, partial, have) as f:
        if remote.size is not None and have >= remote.size:
            return  # complete already (or too long: the size check will say so)
        with _Watchdog(remote.url) as watchdog, _open(remote.url, {"Range": f"bytes={have}-"} if have else {}) as resp:
            refuse_html(resp.headers, remote.url)  # before a byte is written: what is there stays
            if resp.status != 206:
                have = 0  # the whole file is coming: start over
                f.seek(0)
                f.truncate()
            expected = remote.size
            if expected is None and resp.headers.get("Content-Length"):  # the Hub announced none; the GET's own says
                expected = have + parse_size(resp.headers["Content-Length"], "Content-Length", remote.url)
            # More than the Hub announced is cut off for the size check to refuse; with no size from
            # the Hub, the GET's own is the server's word again, so `max_size` bounds it.
            limit = max_size if remote.size is None else remote.size
            with progress_bar(total=expected, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
                              desc=partial.name.removesuffix(".partial"), disable=not progress) as bar:
                # read1: what has come, up to CHUNK, not a whole CHUNK: the bar moves on a slow line
                while chunk := resp.read1(CHUNK):
                    watchdog.got += len(chunk)
                    f.write(chunk)
                    bar.update(len(chunk))
                    if f.tell() > limit:
                        break  # before an endless body fills the disk
    got = partial.stat().st_size
    if remote.size is None and got > max_size:
        discard(partial)  # no GPT-2 file is that big: nothing worth resuming
        name = partial.name.removesuffix(".partial")
        raise DownloadError(f"{remote.url} announced no size for {name} and sent more than {max_size:,} bytes, more "
                            f"than GPT-2's {name} can have; stopped, and deleted what came")
    if expected is not None and got < expected:
        # http.client returns a short body without an error when the server hangs up early.
        raise ConnectionError(f"the connection closed after {got:,} of {expected:,} bytes")


def check_room(remote: RemoteFile, partial: Path, have: int) -> None:
    """Raise a DownloadError, before anything is written, if the rest of a file of known size cannot fit
    on the disk `partial` is on (gpt2-xl is 6 GB; a broken server may announce petabytes). A
    `partial` that is not resumed (`have` 0) is emptied first, so its bytes count as free."""
    free = shutil.disk_usage(partial.parent).free
    if have == 0 and partial.is_file():
        free += partial.stat().st_size
    if remote.size - have > free:
        raise DownloadError(f"{remote.url} announces {remote.size:,} bytes for {partial.name.removesuffix('.partial')}, "
                            f"{remote.size - have:,} still to fetch, but {partial.parent} has {free:,} bytes free")


def max_weights_size(name: str) -> int:
    """The most bytes model.safetensors of GPT-2 `name` may have when the server announces no size.
    Its float32 parameters come from the preset (gpt2-xl: 1.56 G, 6.2 GB); × 1.5 because the Hub's
    file also holds each block's 1024 × 1024 float32 causal mask (4 MiB: +10% for gpt2, +3% for
    gpt2-xl, whose file is 6.43 GB) and a JSON header, the rest being margin."""
    c = GPTConfig.gpt2(name)
    per_block = 12 * c.n_embd**2 + 13 * c.n_embd  # attention 4·C² + MLP 8·C² weights; biases and LayerNorms 13·C
    params = (c.vocab_size + c.n_positions) * c.n_embd + c.n_layer * per_block + 2 * c.n_embd  # + wte, wpe; ln_f
    return params * 4 * 3 // 2


def fetch(url: str, dest: Path, retries: int = 3, progress: bool = True, max_size: int = MAX_SMALL_FILE) -> Path | None:
    """Download `url` for `dest` (steps 1–3), resuming after dropped connections: returns the
    checked DEST.partial, for the caller to rename into place (`finish`), or None when `dest` is
    the server's file already. A file the server announces no size for may have `max_size` bytes."""
    check_flag("progress", progress)  # before the network: "no" would read as True
    for attempt in range(retries + 1):  # the Hub itself may be busy (5xx) or drop the connection too
        try:
            remote = remote_file(url)
            break
        except (HTTPError, ConnectionError, TimeoutError, http.client.HTTPException) as e:
            if isinstance(e, StalledError) and attempt == retries:
                raise DownloadError(f"asking for {dest.name} failed: {e}. Run the same command again to retry") from None
            if (isinstance(e, HTTPError) and e.code < 500) or attempt == retries:
                raise
            print(f"{dest.name}: {e}; asking again (retry {attempt + 1} of {retries})", file=sys.stderr)
            time.sleep(attempt)
    if dest.exists() and remote.size in (None, dest.stat().st_size):
        # Hashed again, not trusted: it may have come from a mirror that announced no hash.
        if remote.hash_kind is None and (problem := content_problem(dest)) is not None:
            print(f"{dest} is already there, but it {problem}: downloading it again", file=sys.stderr)
        elif remote.hash_kind is None:
            checked = ("its size matches; the server announces no hash to check" if remote.size is not None
                       else "unchecked: the server announces neither its size nor a hash")
            print(f"{dest} is already there, skipping ({checked})", file=sys.stderr)
            return None
        if file_digest(dest, remote.hash_kind) == remote.digest:
            print(f"{dest} is already there, skipping (its {remote.hash_kind} is the one the server announces)", file=sys.stderr)
            return None
        print(f"{dest} is already there, but its {remote.hash_kind} is not the one the server announces: "
              "downloading it again", file=sys.stderr)
    elif dest.exists():  # (another model's, or a truncated copy: said, since the download replaces it)
        print(f"{dest} is already there, but it has {dest.stat().st_size:,} bytes where the server announces "
              f"{remote.size:,}: downloading it again", file=sys.stderr)
    partial = dest.with_name(dest.name + ".partial")
    attempt = 0  # failures in a row since the file last grew
    while True:
        had = partial.stat().st_size if partial.is_file() else 0
        try:
            _get(remote, partial, progress, max_size)
            break
        except HTTPError as e:
            if e.code < 500 or attempt == retries:  # a 4xx will answer the same; a 5xx (a busy CDN) often passes
                raise
            print(f"{dest.name}: HTTP {e.code} {e.reason}; retrying ({attempt + 1} of {retries})", file=sys.stderr)
        # Only network failures are worth a retry: reset, timeout, short read. A local OSError
        # (permission denied, disk full) would fail the same way again (below).
        except (URLError, ConnectionError, TimeoutError, ssl.SSLError, http.client.HTTPException) as e:
            if not isinstance(e, StalledError) and partial.is_file() and partial.stat().st_size > had:
                attempt = 0  # it got further: a flaky line, not a dead one (gpt2-xl is 6 GB)
            if attempt == retries:
                raise DownloadError(f"downloading {dest.name} failed: {e}. Run the same command again to "
                                    f"resume from {partial}") from None
            print(f"{dest.name}: {e}; resuming (retry {attempt + 1} of {retries})", file=sys.stderr)
        except OSError as e:  # local: no retry. Want of room is said with what to do, and that a rerun resumes
            if e.errno in MAKE_ROOM:
                raise DownloadError(f"writing {partial} failed: {e.strerror}; {MAKE_ROOM[e.errno]}, then run the "
                                    "same command again to resume from it") from None
            raise
        time.sleep(attempt)  # back off a little more each time
        attempt += 1
    got = partial.stat().st_size
    if remote.size is not None and got != remote.size:
        discard(partial)
        raise DownloadError(f"{dest.name} has {got:,} bytes but the server announced {remote.size:,}; "
                            f"deleted it, run again to download it afresh")
    if not remote.hash_kind:  # a mirror may send no usable ETag: check what can be, say what was not
        if (problem := content_problem(partial)) is not None:
            discard(partial)  # never renamed into place: the folder's earlier files, and the other .partial, stay
            raise DownloadError(f"{dest.name} from {remote.url} {problem}, so it is not GPT-2's {dest.name} (the server "
                                f"announced no hash to check it by); deleted it, nothing was replaced")
        checked = ("only its size and format were checked" if remote.size is not None
                   else "only its format was checked, not its size")
        print(f"{dest.name}: the server announced no sha256 or git hash; {checked}", file=sys.stderr)
    else:
        digest = file_digest(partial, remote.hash_kind)
        if digest != remote.digest:
            discard(partial)  # corrupt: resuming from it would never verify
            raise DownloadError(f"{remote.hash_kind} mismatch for {dest.name}: the server says {remote.digest}, "
                                f"the download hashes to {digest}; deleted it, run again to retry")
    return partial


def content_problem(path: Path) -> str | None:
    """What shows that `path` (a FILE.partial, or FILE) is not the GPT-2 file FILE names, or None:
    the JSON files are JSON objects, merges.txt starts with "#version", model.safetensors starts
    with its header. Only a cheap look at the format, for files no hash vouches for: a login page,
    an error page or a truncated JSON file fails it; another GPT-2's file of the same kind passes."""
    name = path.name.removesuffix(".partial")
    with open(path, "rb") as f:
        if name.endswith(".json"):
            try:
                if isinstance(json.loads(f.read()), dict):
                    return None
            except ValueError:  # (UnicodeDecodeError is one too)
                return "is not valid JSON"
            return "is JSON but not an object"
        if name == "merges.txt":
            return None if f.read(len(b"#version")) == b"#version" else 'does not start with "#version"'
        if name == WEIGHTS_NAME:
            length = int.from_bytes(f.read(SAFETENSORS_HEADER_LEN), "little")
            if not 2 <= length <= path.stat().st_size - SAFETENSORS_HEADER_LEN:
                return "does not start with a safetensors header"
            try:
                return None if isinstance(json.loads(f.read(length)), dict) else "has a safetensors header that is not an object"
            except ValueError:
                return "has a safetensors header that is not valid JSON"
    return None


def discard(partial: Path) -> None:
    partial.unlink(missing_ok=True)
    source_note(partial).unlink(missing_ok=True)


def finish(out: Path, fetched: dict[str, Path]) -> None:
    """Step 4: rename every checked FILE.partial into place, config.json last (a kill between two
    renames leaves weights beside the config they were fetched with, or a config.json loading
    refuses by the shapes). Where they replace another model's files, that model's files that would
    override them go first (OVERRIDES); a folder that held none of the four keeps what it has (the
    shipped checkpoints/gpt2 holds the tokenizer, and its tokenizer_config.json)."""
    replacing = any((out / name).exists() for name in fetched)
    if replacing and (gone := [name for name in OVERRIDES if (out / name).is_file()]):
        print(f"{out}: removing {', '.join(gone)} (another model's: they would override the files downloaded)",
              file=sys.stderr)
        for name in gone:
            (out / name).unlink()
    for name in sorted(fetched, key=lambda name: name == "config.json"):
        os.replace(fetched[name], out / name)
        source_note(fetched[name]).unlink(missing_ok=True)


@contextmanager
def download_lock(out: Path) -> Iterator[None]:
    """Hold the lock on downloading into `out` (minigpt/files.py's `file_lock`): a second download
    there (another shell, a second script calling GPT.from_pretrained("gpt2")) waits for the first
    to finish and then skips what it fetched, instead of both writing one FILE.partial."""
    def busy() -> None:
        print(f"another download into {out} is running; waiting for it to finish", file=sys.stderr)

    with file_lock(out / LOCK_NAME, busy):
        yield


def download_gpt2(name: str, out: str | os.PathLike | None = None, base_url: str | None = None,
                  retries: int = 3, progress: bool = True) -> Path:
    """Fetch GPT-2 `name` into `out` (default DOWNLOADS/NAME: checkpoints/NAME in a checkout); returns the directory.
    Refused at once, before any folder is made, in offline mode ($HF_HUB_OFFLINE, `offline_variable`),
    where `out` holds a training run (`check_not_a_run`) or where it cannot be written (`check_writable`)."""
    check_flag("progress", progress)  # before the network: "no" would read as True
    if name not in MODELS:
        raise DownloadError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    base_url = (base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL).rstrip("/")
    if not base_url.startswith(("http://", "https://")):
        raise DownloadError(f"the Hub address must start with http:// or https://, got {base_url!r} "
                            f"(from --base-url or ${BASE_URL_ENV})")
    if (offline := offline_variable()) is not None:  # before any folder is made, or the network asked
        raise DownloadError(f"${offline} is set (offline mode, as huggingface_hub and transformers read it), and "
                            f"downloading {name} needs the network: unset it (or set HF_HUB_OFFLINE=0) to download")
    out = Path(out) if out is not None else DOWNLOADS / name  # where find_gpt2 looks first
    check_temp_cache(out)
    if out.exists() and not out.is_dir():
        raise DownloadError(f"--out {out} is a file; the checkpoint needs a directory")
    check_not_a_run(out)
    check_writable(out)
    created = not out.exists()
    try:
        with download_lock(out):
            fetched = {}  # file name → its checked .partial
            for file in FILES:
                url = f"{base_url}/{MODELS[name]}/resolve/main/{file}"
                try:
                    max_size = max_weights_size(name) if file == WEIGHTS_NAME else MAX_SMALL_FILE
                    if (partial := fetch(url, out / file, retries=retries, progress=progress, max_size=max_size)) is not None:
                        fetched[file] = partial
                except HTTPError as e:
                    raise DownloadError(f"{url} answered HTTP {e.code} {e.reason}") from None
                except (URLError, ConnectionError, TimeoutError, http.client.HTTPException) as e:
                    reason = getattr(e, "reason", e)  # URLError wraps the socket error: refused, DNS failure, ...
                    raise DownloadError(f"cannot reach {base_url} ({reason}). Are you offline? Downloading GPT-2 "
                                        f"needs internet access; a mirror can be set with ${BASE_URL_ENV} (or "
                                        f"minigpt download's --base-url).") from None
            finish(out, fetched)
    except BaseException:
        # Nothing fetched (offline, a wrong URL): leave no empty directory behind, or loading it would
        # say "has neither model.safetensors ..." instead of "does not exist (to fetch it: ...)".
        # Anything fetched (a checked .partial, or a part of one) stays for the next run to skip or resume.
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        raise
    return out


def check_not_a_run(out: Path) -> None:
    """Refuse, before the network is asked, an `out` that holds a training run (`minigpt train` or
    `finetune`'s OUT_DIR): the download would replace its config.json and model.safetensors, the
    run's latest weights, beside the training_state.pt and log.jsonl they belong to. Every other
    command that writes an --out refuses a folder its files would replace. Another model's folder
    is replaced (README), and a download's own folder, finished or cut short, holds config.json and
    model.safetensors too: so a run is known by what no download writes, its state, log or best/."""
    if found := [name for name in (STATE_FILE, LOG_FILE, "best/") if (out / name).exists()]:
        raise DownloadError(f"--out {out} holds a training run ({', '.join(found)}), whose weights and config.json the "
                            "download would replace: choose another --out, or move those files away")


def offline_variable() -> str | None:
    """The variable that puts minigpt in offline mode (find, never fetch), as huggingface_hub reads
    it (so transformers too), or None. The first variable set decides, so HF_HUB_OFFLINE=0 keeps a
    TRANSFORMERS_OFFLINE=1 from applying."""
    offline = next((v for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE") if os.environ.get(v)), None)
    return offline if offline and os.environ[offline].upper() in ("1", "ON", "YES", "TRUE") else None


def check_writable(out: Path) -> None:
    """Refuse, before the network is asked, a folder `out` that could not be made or written
    (`files.unwritable`). For minigpt's own download folder (DOWNLOADS: a name loaded with
    GPT.from_pretrained("gpt2") lands there), the error says where that folder comes from and what
    to change: `[Errno 13] Permission denied: '/nonexistent'` alone tells neither."""
    if (problem := unwritable(out)) is None:
        return
    if out != DOWNLOADS / out.name:
        raise DownloadError(f"--out {out}: {problem}; choose another --out")
    elsewhere = f"download it elsewhere with `minigpt download {out.name} --out DIR` and load DIR"
    if DOWNLOADS == CHECKPOINTS:
        raise DownloadError(f"{out} is in minigpt's download folder, the checkout's {DOWNLOADS}, and {problem}: {elsewhere}")
    raise DownloadError(f"{out} is in minigpt's download folder, {DOWNLOADS} ({DOWNLOADS_SOURCE}), and {problem}: set "
                        f"XDG_CACHE_HOME to a folder you can write, or {elsewhere}")


def hf_hub_cache() -> Path:
    """The Hugging Face cache's folder, found as huggingface_hub finds it (its constants.py):
    $HF_HUB_CACHE, else the older $HUGGINGFACE_HUB_CACHE, else $HF_HOME/hub, else
    $XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub; with `~` and $VARS expanded, as
    a Dockerfile's ENV line or a systemd unit leaves them. Without a home directory "~" stays "~"
    (os.path.expanduser's answer, and huggingface_hub's), not Path.home()'s RuntimeError: every
    checkpoint path that does not exist is looked up here (config.shipped_path)."""
    def expand(p: str | os.PathLike) -> str:
        return os.path.expandvars(os.path.expanduser(p))

    home = expand(os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache") / "huggingface")
    return Path(expand(os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE") or Path(home) / "hub"))


def hf_cache_snapshot(repo_id: str, holds: Callable[[Path], bool] | None = None) -> Path | None:
    """Hub repo `repo_id` ("sshleifer/tiny-gpt2", a bare "distilgpt2", or a GPT-2 size) as
    transformers downloaded it: the Hugging Face cache's (`hf_hub_cache`) snapshot of `main`, if it
    holds the weights (`holds_weights`, or what `holds` looks for). The cache keeps one folder per
    repo id as it was asked for (models--ORG--NAME); refs/main names the commit whose snapshot
    folder holds the files."""
    hub = hf_hub_cache()
    # A GPT-2 size under either of its Hub names: openai-community/NAME since 2024, NAME before.
    for repo in (f"openai-community/{repo_id}", repo_id) if repo_id in GPT2_SIZES else (repo_id,):
        folder = hub / ("models--" + repo.replace("/", "--"))
        ref = folder / "refs" / "main"
        snapshot = folder / "snapshots" / ref.read_text(encoding="utf-8").strip() if ref.is_file() else None
        if snapshot and (holds or holds_weights)(snapshot):
            return snapshot
    return None


def pickled_only(repo_id: str) -> str:
    """Where the Hugging Face cache holds `repo_id` in pytorch_model.bin alone (as transformers
    before 4.30 cached many models), which minigpt does not read, how to make it readable, as a
    clause for an error that would otherwise say the model is not in the cache; "" elsewhere."""
    snapshot = hf_cache_snapshot(repo_id, lambda p: (p / "config.json").is_file() and (p / PICKLE_NAME).is_file())
    if snapshot is None:
        return ""
    return (f"; the Hugging Face cache holds {repo_id} as {PICKLE_NAME} only ({snapshot}), PyTorch's pickle format, which minigpt "
            f"does not read: re-save it as safetensors with transformers (GPT2LMHeadModel.from_pretrained(\"{repo_id}\")"
            ".save_pretrained(DIR)) and load DIR")


# A Hub repo id, as huggingface_hub's validate_repo_id takes one: "NAME" or "ORG/NAME", each of
# letters, digits, "_", "-" and ".", starting and ending with a letter or digit, and no "--" or ".."
# (the cache's folder names use "--" as the separator).
_HUB_PART = r"\w(?:[\w.-]*\w)?"
HUB_REPO_ID = re.compile(rf"(?:{_HUB_PART}/)?{_HUB_PART}")


def hub_repo_id(path: str | os.PathLike) -> str | None:
    """`path` as a Hugging Face Hub repo id, when it could be one ("sshleifer/tiny-gpt2",
    "distilgpt2", but also a relative "out/run1"); None for what cannot ("./out", "/abs/dir",
    "out/run1/best")."""
    name = str(path)
    return name if HUB_REPO_ID.fullmatch(name) and "--" not in name and ".." not in name else None


def find_hub_model(path: str | os.PathLike) -> Path | None:
    """The Hugging Face cache's snapshot of the Hub model `path` names (`hub_repo_id`), as
    transformers finds it offline; None when `path` is no repo id or the cache lacks it. Only read:
    minigpt downloads OpenAI's four GPT-2 sizes alone (`find_gpt2`)."""
    return hf_cache_snapshot(repo) if (repo := hub_repo_id(path)) else None


def hub_hint(path: str | os.PathLike) -> str:
    """What a checkpoint directory that does not exist is told when its name could be a Hub repo
    id (`hub_repo_id`): where minigpt looked, what it downloads itself, and how to fetch the rest.
    A name that is no repo id ("/abs/run1", "out/run1/best"), or a path that exists, is told nothing."""
    if Path(path).exists() or (repo := hub_repo_id(path)) is None:
        return ""
    if pickled := pickled_only(repo):
        return f" ({pickled.removeprefix('; ')})"
    return (f" (nor is a Hub model of that name in the Hugging Face cache, {hf_hub_cache()}: minigpt downloads only "
            f"OpenAI's GPT-2 sizes ({', '.join(GPT2_SIZES)}) and reads any other Hub model from that cache, so fetch "
            f"it first with `hf download {repo}` (older huggingface_hub: `huggingface-cli download {repo}`) or "
            f"transformers; or pass an existing local directory)")


def holds_weights(path: Path) -> bool:
    """A checkpoint's files are there: config.json, and the weights in one file or in shards
    (model.safetensors.index.json names them: transformers shards a save over its max_shard_size)."""
    return (path / "config.json").is_file() and any(
        (path / name).is_file() for name in (WEIGHTS_NAME, INDEX_NAME))


def find_gpt2(name: str) -> Path:
    """The directory of GPT-2 `name` (one of the four sizes) on this machine: DOWNLOADS/NAME
    (checkpoints/NAME in a checkout) once it holds the weights (`minigpt download NAME` puts them
    there), else the Hugging Face cache's copy; else it is downloaded there now, as `minigpt
    download NAME` would."""
    local = DOWNLOADS / name
    check_temp_cache(local)
    if holds_weights(local):
        return local
    if (cached := hf_cache_snapshot(name)) is not None:
        return cached
    if (offline := offline_variable()) is not None:  # find, never fetch
        raise DownloadError(f"{name} is neither in {local} nor in the Hugging Face cache ({hf_hub_cache()}), and ${offline} is set "
                            f"(offline mode): unset it to download, or fetch it elsewhere with minigpt download {name}"
                            f"{pickled_only(name)}")
    from minigpt.run_dir import env_rank  # (a model's loading: torch is imported anyway)

    if env_rank()[1] > 1:  # under torchrun every process would fetch it into one place at once
        raise DownloadError(f"{name} is neither in {local} nor in the Hugging Face cache ({hf_hub_cache()}); fetch it before "
                            f"torchrun starts: minigpt download {name}")
    print(f"{name} is neither in {local} nor in the Hugging Face cache ({hf_hub_cache()}): downloading it", file=sys.stderr)
    return download_gpt2(name, local)


def main(argv: list[str] | None = None) -> int:
    from minigpt.cli import FAILED, prog

    parser = argparse.ArgumentParser(
        prog=prog("download"),
        description="Download GPT-2 (config.json, model.safetensors, vocab.json, merges.txt) from the "
                    "Hugging Face Hub, resuming partial downloads and checking each file's size and hash.")
    parser.add_argument("name", choices=list(MODELS), help="which GPT-2")
    parser.add_argument("--out", type=user_path, help=f"directory to write (default: {DOWNLOADS}/NAME, where GPT.from_pretrained(NAME) and --model NAME look)")
    parser.add_argument("--base-url", help=f"Hub address (default: ${BASE_URL_ENV} or {DEFAULT_BASE_URL})")
    parser.add_argument("--retries", type=int, default=3, help="resume attempts per file after a dropped connection, in a row without progress (default: 3)")
    args = parser.parse_args(argv)
    if args.retries < 0:
        parser.error(f"--retries must be >= 0, got {args.retries}")
    try:
        out = download_gpt2(args.name, args.out, base_url=args.base_url, retries=args.retries)
    except (DownloadError, OSError) as e:  # OSError: a local problem such as a full disk
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return FAILED
    except KeyboardInterrupt:
        print(f"\n{parser.prog}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    by = repr(args.name) if out.resolve() == (DOWNLOADS / args.name).resolve() else repr(str(out))  # find_gpt2 looks there
    print(f"{args.name} is in {out}; load it with GPT.from_pretrained({by})")
    return 0
