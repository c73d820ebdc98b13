"""`minigpt download` against a fake Hub on 127.0.0.1 that speaks the `resolve` protocol:
small files answer HEAD with their git blob hash as ETag, model.safetensors redirects to a "CDN"
path with X-Linked-Size / X-Linked-Etag (sha256), and the CDN honours Range requests. The server
can drop a transfer midway, ignore Range, or announce a wrong hash."""
from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

import minigpt.download as download
from minigpt import GPT, GPTConfig
from minigpt.cli import main as cli_main
from minigpt.download import DownloadError, download_gpt2, holds_weights, main

REPO = "/openai-community/gpt2/resolve/main/"
RENAMED = "/old-name/gpt2/resolve/main/"  # answers with a relative redirect to REPO


class FakeHub:
    """What the server serves and how it misbehaves; `requests` records (method, path, Range)."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.cut_after: dict[str, int] = {}  # file → drop the connection after N bytes, once
        self.cut_every: dict[str, int] = {}  # file → drop every GET's connection after N more bytes
        self.busy: dict[str, int] = {}  # file → answer its GET with this HTTP 5xx, once
        self.busy_head: dict[str, int] = {}  # file → answer the Hub's HEAD with this HTTP 5xx, once
        self.ignore_range = False
        self.wrong_sha256 = False
        self.no_etag = False  # a mirror that announces no hashes at all
        self.no_linked_size = False  # an LFS redirect without X-Linked-Size
        self.weak_etag = False  # small files' ETag as W/"...", a weak validator
        self.redirect: dict[str, str] = {}  # request path → the Location a 302 sends it to, for HEAD and GET
        self.content_type: dict[str, str] = {}  # request path → the Content-Type of its answer
        self.announced_size: dict[str, str] = {}  # file → the size the server announces instead of the true one
        self.trailing: dict[str, int] = {}  # file → junk bytes the CDN sends after it, with no Content-Length
        self.paused: dict[str, threading.Event] = {}  # file → send its first bytes, then wait for the event
        self.trickle: dict[str, list[tuple[int, float]]] = {}  # file → per GET, (N, s): its first N bytes one per s seconds
        self.requests: list[tuple[str, str, str | None]] = []


def make_handler(hub: FakeHub):
    class Handler(BaseHTTPRequestHandler):
        timeout = 10  # a stuck client cannot hold a server thread for long

        def log_message(self, *args) -> None:  # keep test output clean
            pass

        def do_HEAD(self) -> None:
            self.respond(body=False)

        def do_GET(self) -> None:
            self.respond(body=True)

        def respond(self, body: bool) -> None:
            hub.requests.append((self.command, self.path, self.headers.get("Range")))
            port = self.server.server_address[1]
            if self.path in hub.redirect:
                self.send_response(302)
                self.send_header("Location", hub.redirect[self.path])
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if self.path.startswith(RENAMED) and self.path.removeprefix(RENAMED) in hub.files:
                self.send_response(307)  # a renamed repo: a relative redirect to its new name
                self.send_header("Location", REPO + self.path.removeprefix(RENAMED))
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if self.path.startswith(REPO) and self.path.removeprefix(REPO) in hub.files:
                name = self.path.removeprefix(REPO)
                if not body and name in hub.busy_head:
                    return self.send_error(hub.busy_head.pop(name))
                data = hub.files[name]
                if name == "model.safetensors":  # an LFS file: redirect to the CDN with size + sha256
                    sha = "0" * 64 if hub.wrong_sha256 else hashlib.sha256(data).hexdigest()
                    self.send_response(302)
                    self.send_header("Location", f"http://127.0.0.1:{port}/cdn/{name}")
                    if not hub.no_linked_size:
                        self.send_header("X-Linked-Size", hub.announced_size.get(name, str(len(data))))
                    if not hub.no_etag:
                        self.send_header("X-Linked-Etag", f'"{sha}"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                git_sha1 = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
                return self.send_bytes(data, body, etag=None if hub.no_etag else git_sha1)
            if self.path.startswith("/cdn/") and self.path.removeprefix("/cdn/") in hub.files:
                name = self.path.removeprefix("/cdn/")
                if body and name in hub.busy:
                    return self.send_error(hub.busy.pop(name))
                return self.send_bytes(hub.files[name], body, cut=hub.cut_after.pop(name, None) if body else None,
                                       pause=hub.paused.get(name) if body else None,
                                       every=hub.cut_every.get(name) if body else None)
            self.send_error(404)

        def send_bytes(self, data: bytes, body: bool, etag: str | None = None, cut: int | None = None,
                       pause: threading.Event | None = None, every: int | None = None) -> None:
            start = 0
            name = self.path.rsplit("/", 1)[-1]
            rng = self.headers.get("Range")
            if rng and not hub.ignore_range:
                start = int(rng.removeprefix("bytes=").removesuffix("-"))
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            if every is not None and start + every < len(data):
                cut = start + every
            if name not in hub.trailing:
                self.send_header("Content-Length", hub.announced_size.get(name, str(len(data) - start)))
            if self.path in hub.content_type:
                self.send_header("Content-Type", hub.content_type[self.path])
            if etag:
                self.send_header("ETag", f'W/"{etag}"' if hub.weak_etag else f'"{etag}"')
            self.end_headers()
            if body and pause:
                self.wfile.write(data[start:start + 100])
                self.wfile.flush()
                pause.wait(timeout=30)
                start += 100
            if body and hub.trickle.get(name):
                n, gap = hub.trickle[name].pop(0)
                try:
                    for i in range(start, start + n):
                        self.wfile.write(data[i:i + 1])
                        time.sleep(gap)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up on it: what is tested
                    return
                start += n
            if body:
                self.wfile.write(data[start:] if cut is None else data[start:cut])
            if body and name in hub.trailing:
                try:
                    self.wfile.write(b"\0" * hub.trailing[name])
                except (BrokenPipeError, ConnectionResetError):  # the client stopped reading: what is tested
                    pass
            if cut is not None:
                self.close_connection = True  # hang up mid-transfer

    return Handler


@pytest.fixture(autouse=True)
def online():
    """Downloads here go to the fake Hub on 127.0.0.1 (or to a port of it where nothing listens),
    never out to the network: conftest's HF_HUB_OFFLINE=1, which a download now refuses, is lifted.
    A test of offline mode sets it again. (A MonkeyPatch of its own: a test's `monkeypatch.undo()`
    leaves it lifted.)"""
    with pytest.MonkeyPatch.context() as mp:
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
            mp.delenv(name, raising=False)
        yield


@pytest.fixture
def hub(tmp_path_factory):
    """A tiny real checkpoint served on a random free port of 127.0.0.1, stopped after the test."""
    src = tmp_path_factory.mktemp("hub")
    torch.manual_seed(0)
    GPT(GPTConfig(vocab_size=96, n_positions=32, n_embd=16, n_layer=1, n_head=2)).save_pretrained(src)
    files = {f.name: f.read_bytes() for f in src.iterdir()}
    files["vocab.json"] = json.dumps({chr(33 + i): i for i in range(96)}).encode()
    files["merges.txt"] = b"#version: 0.2\n"
    fake = FakeHub(files)
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(fake))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def note_as_from_the_hub(partial: Path, hub: FakeHub) -> None:
    """Write the source note a download of this hub's file would have left beside `partial`."""
    name = partial.name.removesuffix(".partial")
    download.source_note(partial).write_text(download._identity(download.remote_file(hub.url + REPO + name)))


def assert_downloaded(out: Path, hub: FakeHub) -> None:
    assert sorted(p.name for p in out.iterdir()) == sorted(download.FILES)  # no .partial left behind
    for name, data in hub.files.items():
        assert (out / name).read_bytes() == data, name
    GPT.from_pretrained(out)  # and it is a loadable checkpoint


def test_downloads_every_file_and_verifies_it(hub, tmp_path, capsys):
    out = tmp_path / "gpt2"
    assert main(["gpt2", "--out", str(out), "--base-url", hub.url]) == 0
    assert_downloaded(out, hub)
    gets = [path for method, path, _ in hub.requests if method == "GET"]
    assert gets == [REPO + f for f in download.FILES[:3]] + ["/cdn/model.safetensors"]
    assert "load it with GPT.from_pretrained" in capsys.readouterr().out


def test_hf_endpoint_points_at_a_mirror_and_base_url_overrides_it(hub, tmp_path, monkeypatch):
    """README: `--base-url` or `$HF_ENDPOINT` points the download at a mirror; the flag wins."""
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    assert main(["gpt2", "--out", str(tmp_path / "env")]) == 0
    assert_downloaded(tmp_path / "env", hub)
    gets = len(hub.requests)
    with socket.socket() as s:  # a port that nothing listens on: the environment's mirror is down
        s.bind(("127.0.0.1", 0))
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{s.getsockname()[1]}")
        assert main(["gpt2", "--out", str(tmp_path / "flag"), "--base-url", hub.url, "--retries", "0"]) == 0
    assert_downloaded(tmp_path / "flag", hub)
    assert len(hub.requests) > gets  # the flag's server was asked


def test_hashes_the_server_announces_are_what_is_checked(hub):
    small = download.remote_file(hub.url + REPO + "config.json")
    big = download.remote_file(hub.url + REPO + "model.safetensors")
    assert (small.hash_kind, small.size) == ("git-sha1", len(hub.files["config.json"]))
    assert (big.hash_kind, big.size) == ("sha256", len(hub.files["model.safetensors"]))
    assert big.digest == hashlib.sha256(hub.files["model.safetensors"]).hexdigest()
    assert big.url == hub.url + "/cdn/model.safetensors"


def test_cut_transfer_is_resumed_with_a_range_request(hub, tmp_path):
    size = len(hub.files["model.safetensors"])
    hub.cut_after["model.safetensors"] = size // 2
    download_gpt2("gpt2", tmp_path, base_url=hub.url, retries=1, progress=False)
    assert_downloaded(tmp_path, hub)
    cdn = [rng for method, path, rng in hub.requests if path.startswith("/cdn/")]
    assert cdn == [None, f"bytes={size // 2}-"]  # the retry asked only for the missing half


def test_a_busy_server_is_retried_and_a_missing_file_is_not(hub, tmp_path, capsys):
    hub.busy["model.safetensors"] = 503  # a CDN's passing hiccup
    download_gpt2("gpt2", tmp_path / "a", base_url=hub.url, retries=1, progress=False)
    assert_downloaded(tmp_path / "a", hub)
    assert "model.safetensors: HTTP 503" in capsys.readouterr().err
    hub.busy_head["config.json"] = 503  # the Hub's own answer (the HEAD) was not retried
    download_gpt2("gpt2", tmp_path / "h", base_url=hub.url, retries=1, progress=False)
    assert_downloaded(tmp_path / "h", hub)
    assert "config.json: HTTP Error 503: Service Unavailable; asking again (retry 1 of 1)" in capsys.readouterr().err
    hub.busy["model.safetensors"] = 404  # the same answer next time: no retry
    with pytest.raises(DownloadError, match="answered HTTP 404"):
        download_gpt2("gpt2", tmp_path / "b", base_url=hub.url, retries=3, progress=False)
    assert "retrying" not in capsys.readouterr().err


def test_partial_download_resumes_on_the_next_run(hub, tmp_path, capsys):
    size = len(hub.files["model.safetensors"])
    hub.cut_after["model.safetensors"] = 1000
    assert main(["gpt2", "--out", str(tmp_path), "--base-url", hub.url, "--retries", "0"]) == 2
    err = capsys.readouterr().err
    assert f"after 1,000 of {size:,} bytes" in err and "Run the same command again" in err
    assert (tmp_path / "model.safetensors.partial").stat().st_size == 1000
    assert not (tmp_path / "model.safetensors").exists()

    hub.requests.clear()
    assert main(["gpt2", "--out", str(tmp_path), "--base-url", hub.url]) == 0
    assert_downloaded(tmp_path, hub)
    assert [m for m, _, _ in hub.requests] == ["HEAD"] * 4 + ["GET"]  # finished files were skipped
    assert hub.requests[-1][2] == "bytes=1000-"


def test_a_local_write_error_is_not_retried_as_a_dropped_connection(hub, tmp_path, capsys, monkeypatch):
    def unwritable(path, *args, **kwargs):  # what open() raises in a directory the user cannot write
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(download, "open", unwritable, raising=False)
    assert main(["gpt2", "--out", str(tmp_path), "--base-url", hub.url]) == 2
    err = capsys.readouterr().err
    assert "Permission denied" in err and "config.json.partial" in err and "Traceback" not in err
    assert "retry" not in err and "resume" not in err  # retrying cannot help, and there is nothing to resume
    assert [m for m, _, _ in hub.requests] == ["HEAD", "GET"]


@pytest.mark.skipif(sys.platform != "linux", reason="a file size limit (RLIMIT_FSIZE) stands in for the full disk")
def test_a_full_disk_says_what_makes_room_and_that_a_rerun_resumes(hub, tmp_path, capsys):
    """A download audit: a full disk (or `ulimit -f`) mid-file ended with "error: [Errno 27] File
    too large" alone. It names the .partial, what makes room, and that running the same command
    again resumes from it, which it does. (Python ignores SIGXFSZ: a write past the limit fails.)"""
    import resource

    small = max(len(data) for name, data in hub.files.items() if name != "model.safetensors")
    limit = small + 1024
    assert len(hub.files["model.safetensors"]) > limit, "the test wants the weights to pass the limit"
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        code = main(["gpt2", "--out", str(tmp_path), "--base-url", hub.url])
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    err = capsys.readouterr().err.strip().splitlines()[-1]
    partial = tmp_path / "model.safetensors.partial"
    assert code == 2 and err == (f"minigpt download: error: writing {partial} failed: File too large; allow bigger "
                                 "files (`ulimit -f`), then run the same command again to resume from it"), err
    assert partial.stat().st_size == limit
    hub.requests.clear()
    assert main(["gpt2", "--out", str(tmp_path), "--base-url", hub.url]) == 0
    assert_downloaded(tmp_path, hub)
    assert hub.requests[-1][2] == f"bytes={limit}-"


def test_server_that_ignores_range_gets_a_fresh_download(hub, tmp_path):
    (tmp_path / "model.safetensors.partial").write_bytes(b"x" * 500)  # junk from an earlier run
    note_as_from_the_hub(tmp_path / "model.safetensors.partial", hub)
    hub.ignore_range = True
    download_gpt2("gpt2", tmp_path, base_url=hub.url, progress=False)
    assert_downloaded(tmp_path, hub)
    assert ("GET", "/cdn/model.safetensors", "bytes=500-") in hub.requests  # asked, and answered whole


def test_sha256_mismatch_is_an_error_and_keeps_nothing(hub, tmp_path, capsys):
    hub.wrong_sha256 = True
    assert main(["gpt2", "--out", str(tmp_path), "--base-url", hub.url]) == 2
    err = capsys.readouterr().err
    assert "sha256 mismatch for model.safetensors" in err and "Traceback" not in err
    assert not (tmp_path / "model.safetensors").exists() and not (tmp_path / "model.safetensors.partial").exists()


def test_git_sha1_mismatch_on_a_small_file(hub, tmp_path, monkeypatch):
    real = download.remote_file

    def lying(url):  # the server's ETag no longer matches what it sends
        r = real(url)
        if url.endswith("config.json"):
            r.digest = "f" * 40
        return r

    monkeypatch.setattr(download, "remote_file", lying)
    with pytest.raises(DownloadError, match="git-sha1 mismatch for config.json"):
        download_gpt2("gpt2", tmp_path, base_url=hub.url, progress=False)


def test_a_server_without_hashes_is_said_to_be_unchecked(hub, tmp_path, capsys):
    hub.no_etag = True
    download_gpt2("gpt2", tmp_path, base_url=hub.url, progress=False)
    assert_downloaded(tmp_path, hub)
    err = capsys.readouterr().err
    assert all(f"{name}: the server announced no sha256 or git hash; only its size and format were checked" in err
               for name in download.FILES)


def test_offline_gives_one_clear_line(tmp_path, capsys):
    """Exit 2, as every command's failure said in one line: a shell-scripting audit found `download`
    alone exiting 1 on a network failure, the code of a crash (README, "Exit codes")."""
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "gpt2"
    assert main(["gpt2", "--out", str(out), "--base-url", f"http://127.0.0.1:{port}"]) == 2
    err = capsys.readouterr().err
    print(err)
    assert "cannot reach" in err and "Are you offline?" in err and "Traceback" not in err
    assert not out.exists(), "nothing was fetched: no empty directory is left behind"


def test_http_error_names_the_url(hub, tmp_path):
    del hub.files["merges.txt"]
    out = tmp_path / "gpt2"
    with pytest.raises(DownloadError, match=r"merges.txt answered HTTP 404"):
        download_gpt2("gpt2", out, base_url=hub.url, progress=False)
    # What was fetched stays, checked, as a .partial (nothing renamed in before every file is
    # checked), and the next run takes it without asking for it again.
    assert (out / "config.json.partial").exists() and not (out / "config.json").exists()
    hub.files["merges.txt"] = b"#version: 0.2\n"
    hub.requests.clear()
    download_gpt2("gpt2", out, base_url=hub.url, progress=False)
    assert not any(m == "GET" and p.endswith("config.json") for m, p, _ in hub.requests)
    assert sorted(p.name for p in out.iterdir()) == sorted(download.FILES)


def test_bad_arguments(tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["gpt3"])
    assert e.value.code == 2
    with pytest.raises(DownloadError, match="unknown model 'gpt3'"):
        download_gpt2("gpt3", tmp_path)
    with pytest.raises(SystemExit):
        main(["gpt2", "--retries", "-1"])
    assert main(["gpt2", "--out", str(tmp_path), "--base-url", "notaurl"]) == 2  # not "unknown url type"
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(DownloadError, match="a_file is a file; the checkpoint needs a directory"):
        download_gpt2("gpt2", tmp_path / "a_file", base_url="http://127.0.0.1:9")  # before any connection


def test_entry_points(capsys):
    with pytest.raises(SystemExit) as e:
        cli_main(["download", "--help"])
    assert e.value.code == 0 and "gpt2-xl" in capsys.readouterr().out
    script = Path(__file__).parents[1] / "scripts" / "download_gpt2.py"
    r = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "--base-url" in r.stdout


def test_a_complete_partial_file_is_not_asked_for_again(hub, tmp_path):
    """Guards against `have > size` for `have >= size` in _get: a .partial that already holds every
    byte (a run killed after the transfer, before the hash check and rename) would be requested
    again with "Range: bytes=SIZE-", which a real CDN answers with 416 Range Not Satisfiable: the
    download would then fail on every rerun instead of finishing."""
    data = hub.files["model.safetensors"]
    (tmp_path / "model.safetensors.partial").write_bytes(data)
    note_as_from_the_hub(tmp_path / "model.safetensors.partial", hub)
    assert main(["gpt2", "--out", str(tmp_path), "--base-url", hub.url]) == 0
    assert_downloaded(tmp_path, hub)
    assert not any(m == "GET" and p == "/cdn/model.safetensors" for m, p, _ in hub.requests)


def test_an_existing_file_of_another_size_is_downloaded_again(hub, tmp_path, capsys):
    """Guards against skipping any file that exists: a model.safetensors or config.json of another
    size than the Hub announces (another model's, a truncated copy) must be replaced by the
    verified download, not kept with "already there, skipping"."""
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"junk")
    assert main(["gpt2", "--out", str(tmp_path), "--base-url", hub.url]) == 0
    assert_downloaded(tmp_path, hub)
    # Said, not silent (a download audit: a model of the user's in --out was replaced without a word).
    size = len(hub.files["config.json"])
    assert f"config.json is already there, but it has 2 bytes where the server announces {size:,}: downloading it again" \
        in capsys.readouterr().err


def test_a_redirect_without_x_linked_size_has_an_unknown_size_not_its_own_content_length(hub, tmp_path):
    """Mutant R8-16: the size of an LFS file came from the 302's own Content-Length (0, the length of
    the redirect's empty body) when the Hub sent no X-Linked-Size. The size is then unknown, and the
    file still downloads and verifies by its sha256; with the redirect's 0 as its size, nothing
    would be fetched and the empty file would fail the hash check."""
    hub.no_linked_size = True
    big = download.remote_file(hub.url + REPO + "model.safetensors")
    assert (big.size, big.hash_kind) == (None, "sha256")
    download_gpt2("gpt2", tmp_path, base_url=hub.url, progress=False)
    assert_downloaded(tmp_path, hub)


def test_a_short_body_of_a_file_the_hub_gave_no_size_for_is_a_dropped_connection(hub, tmp_path, capsys):
    """A download audit: with neither X-Linked-Size nor a hash, a GET cut short was accepted as the
    file (http.client returns a short body without an error), and every rerun then skipped it. The
    GET's own Content-Length says how long the body is."""
    hub.no_linked_size = hub.no_etag = True
    hub.cut_after["model.safetensors"] = 1000
    download_gpt2("gpt2", tmp_path, base_url=hub.url, retries=1, progress=False)
    assert_downloaded(tmp_path, hub)
    size = len(hub.files["model.safetensors"])
    assert f"model.safetensors: the connection closed after 1,000 of {size:,} bytes; resuming (retry 1 of 1)" \
        in capsys.readouterr().err


def test_http_500_from_the_hub_is_retried_as_any_5xx(hub, tmp_path, capsys):
    """Mutant R8-18: `e.code <= 500` for `e.code < 500` in fetch: an HTTP 500 to the Hub's HEAD
    (a server error, as passing as a 503) was raised at once instead of being asked again."""
    hub.busy_head["config.json"] = 500
    download_gpt2("gpt2", tmp_path, base_url=hub.url, retries=1, progress=False)
    assert_downloaded(tmp_path, hub)
    assert "config.json: HTTP Error 500: Internal Server Error; asking again (retry 1 of 1)" in capsys.readouterr().err


def test_a_file_of_unknown_size_is_skipped_on_a_rerun(hub, tmp_path, capsys, monkeypatch):
    """Mutant R8-19: `remote.size == size` for `remote.size in (None, size)` in fetch: with a
    server that announces no size, every rerun downloaded every file again. A FILE exists only
    once verified, so a rerun skips it, size known or not."""
    real = download.remote_file

    def sizeless(url):
        r = real(url)
        r.size = None
        return r

    monkeypatch.setattr(download, "remote_file", sizeless)
    download_gpt2("gpt2", tmp_path, base_url=hub.url, progress=False)
    assert_downloaded(tmp_path, hub)
    capsys.readouterr()
    hub.requests.clear()
    download_gpt2("gpt2", tmp_path, base_url=hub.url, progress=False)
    assert [m for m, _, _ in hub.requests] == ["HEAD"] * 4  # nothing fetched again
    assert capsys.readouterr().err.count("is already there, skipping") == 4


def test_a_rerun_says_what_it_checked_and_fetches_a_file_the_server_hashes_otherwise(hub, tmp_path, capsys, monkeypatch):
    """Bug guarded: a rerun skipped every file saying "it was checked when it was downloaded", also
    files from a mirror that had announced neither a size nor a hash (a truncated merges.txt
    stayed, "checked"). Each skip now says what was checked, and a file is hashed again when the
    server announces a hash: one that differs is downloaded again."""
    real = download.remote_file

    def sizeless(url):
        r = real(url)
        r.size = None
        return r

    hub.no_etag = True
    monkeypatch.setattr(download, "remote_file", sizeless)
    download_gpt2("gpt2", tmp_path, base_url=hub.url, progress=False)
    capsys.readouterr()
    download_gpt2("gpt2", tmp_path, base_url=hub.url, progress=False)
    err = capsys.readouterr().err
    assert err.count("is already there, skipping (unchecked: the server announces neither its size nor a hash)") == 4, err
    assert "was checked" not in err
    monkeypatch.undo()

    hub.no_etag = False
    config = bytearray((tmp_path / "config.json").read_bytes())
    config[-2] ^= 1  # same size, another byte: what the mirror sent was not the Hub's file
    (tmp_path / "config.json").write_bytes(config)
    hub.requests.clear()
    download_gpt2("gpt2", tmp_path, base_url=hub.url, progress=False)
    err = capsys.readouterr().err
    assert "config.json is already there, but its git-sha1 is not the one the server announces: downloading it again" in err
    assert "model.safetensors is already there, skipping (its sha256 is the one the server announces)" in err
    assert [p for m, p, _ in hub.requests if m == "GET"] == [REPO + "config.json"]
    assert_downloaded(tmp_path, hub)


def test_a_directory_the_user_made_is_kept_when_nothing_could_be_fetched(tmp_path, capsys):
    """Mutant R8-20: the clean-up after a failed download removed any empty --out directory, also one
    the user had made beforehand; only a directory the download itself created may go."""
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "mine"
    out.mkdir()
    assert main(["gpt2", "--out", str(out), "--base-url", f"http://127.0.0.1:{port}", "--retries", "0"]) == 2
    assert "cannot reach" in capsys.readouterr().err
    assert out.is_dir()


def test_a_relative_redirect_of_a_renamed_repo_is_followed_from_the_hub_address(hub):
    """Mutant R8-32: a relative Location ("/new-name/...", what the Hub answers for a renamed repo) was
    used as the next URL as it is, without the Hub's address: the next HEAD failed. It is joined to
    the address asked, for a small file and for an LFS file (whose own redirect then goes to the CDN)."""
    small = download.remote_file(hub.url + RENAMED + "config.json")
    big = download.remote_file(hub.url + RENAMED + "model.safetensors")
    assert (small.url, small.hash_kind, small.size) == (hub.url + REPO + "config.json", "git-sha1", len(hub.files["config.json"]))
    assert (big.url, big.hash_kind, big.size) == (hub.url + "/cdn/model.safetensors", "sha256", len(hub.files["model.safetensors"]))


def test_a_weak_etag_is_still_the_git_hash_that_is_checked(hub, tmp_path, capsys):
    """Mutant R8-33: the "W/" of a weak ETag (W/"<sha1>", as the Hub may send for small files) was
    kept, so the hash was not recognised and the files were said to be unchecked."""
    hub.weak_etag = True
    small = download.remote_file(hub.url + REPO + "config.json")
    data = hub.files["config.json"]
    assert (small.hash_kind, small.digest) == ("git-sha1", hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest())
    download_gpt2("gpt2", tmp_path, base_url=hub.url, progress=False)
    assert_downloaded(tmp_path, hub)
    assert "announced no sha256 or git hash" not in capsys.readouterr().err


def test_a_partial_file_longer_than_announced_is_refused_even_without_a_hash(hub, tmp_path, capsys):
    """Mutant R8-48: the size check after the transfer caught only a short file (`got < size`): a
    .partial left longer than the server announces (the file changed on the Hub since the killed
    run) was renamed into place when the server sent no hash to catch it. It is deleted instead."""
    data = hub.files["model.safetensors"]
    (tmp_path / "model.safetensors.partial").write_bytes(data + b"stale tail")
    hub.no_etag = True
    note_as_from_the_hub(tmp_path / "model.safetensors.partial", hub)
    assert main(["gpt2", "--out", str(tmp_path), "--base-url", hub.url]) == 2
    err = capsys.readouterr().err
    assert (f"model.safetensors has {len(data) + 10:,} bytes but the server announced {len(data):,}; deleted it" in err
            and "Traceback" not in err)
    assert not (tmp_path / "model.safetensors").exists() and not (tmp_path / "model.safetensors.partial").exists()


def test_ctrl_c_exits_130_and_says_how_to_resume(tmp_path, capsys, monkeypatch):
    """Mutant R8-49: a Ctrl-C during the download exited 1, a failed download's code then, not 130
    (128 + SIGINT, as a shell reports an interrupted command)."""
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(download, "download_gpt2", interrupted)
    assert main(["gpt2", "--out", str(tmp_path)]) == 130
    assert "interrupted; run the same command again to resume" in capsys.readouterr().err


def test_two_downloads_into_one_directory_take_turns(hub, tmp_path, capsys):
    """Bug guarded: two downloads into one directory (two shells, two scripts loading "gpt2") wrote
    one model.safetensors.partial at once, and both failed, blaming the server's hash or with a raw
    "No such file or directory". The second now waits for the first, then skips what it fetched."""
    hub.paused["model.safetensors"] = threading.Event()  # the first download stalls in the weights
    failed = []

    def run():
        try:
            download_gpt2("gpt2", tmp_path, base_url=hub.url, progress=False)
        except Exception as e:
            failed.append(e)

    first, second = threading.Thread(target=run), threading.Thread(target=run)
    first.start()
    deadline = time.monotonic() + 30
    while ("GET", "/cdn/model.safetensors", None) not in hub.requests and time.monotonic() < deadline:
        time.sleep(0.01)
    second.start()
    deadline, err = time.monotonic() + 10, ""
    while "waiting for it to finish" not in err and time.monotonic() < deadline:
        time.sleep(0.01)
        err += capsys.readouterr().err
    hub.paused["model.safetensors"].set()
    first.join(timeout=30)
    second.join(timeout=30)
    assert f"another download into {tmp_path} is running; waiting for it to finish" in err
    assert failed == []
    assert_downloaded(tmp_path, hub)  # and the lock file is gone
    assert [m for m, _, _ in hub.requests].count("GET") == len(download.FILES)  # each file fetched once


@pytest.fixture
def by_name(tmp_path, monkeypatch):
    """Where a GPT-2 name is looked up, moved into tmp_path: checkpoints/ (`ck`) and the Hugging Face
    cache (`hf`); run from an empty directory, so no `./gpt2` is found first."""
    monkeypatch.setattr(download, "DOWNLOADS", tmp_path / "ck")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    for name in ("WORLD_SIZE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    return tmp_path


def hf_cache_entry(cache: Path, repo: str, model: GPT) -> Path:
    """What transformers leaves in its cache: refs/main names the commit, snapshots/COMMIT holds the files."""
    (cache / repo / "refs").mkdir(parents=True)
    (cache / repo / "refs" / "main").write_text("c0ffee\n")
    model.save_pretrained(cache / repo / "snapshots" / "c0ffee")
    return cache / repo / "snapshots" / "c0ffee"


def same_weights(a: GPT, b: GPT) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_a_gpt2_name_is_found_in_checkpoints_then_the_hf_cache_and_else_downloaded(hub, by_name, monkeypatch, capsys):
    """README: GPT.from_pretrained("gpt2") (any of the four, or the Hub's openai-community/NAME)
    loads checkpoints/NAME once it holds the weights, else transformers' cached copy, and only
    then downloads into checkpoints/NAME, as `minigpt download NAME` does."""
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    torch.manual_seed(1)
    cached = GPT(GPTConfig(vocab_size=96, n_positions=32, n_embd=16, n_layer=1, n_head=2))
    hf_cache_entry(by_name / "hf", "models--openai-community--gpt2", cached)
    hf_cache_entry(by_name / "hf", "models--gpt2-medium", cached)  # the cache of a transformers from before 2024
    assert same_weights(GPT.from_pretrained("gpt2"), cached)
    assert same_weights(GPT.from_pretrained("openai-community/gpt2-medium"), cached)
    assert hub.requests == []  # nothing was asked of the Hub
    shutil.rmtree(by_name / "hf")
    served = GPT.from_pretrained("openai-community/gpt2")  # now downloaded...
    assert "gpt2 is neither in" in capsys.readouterr().err
    assert_downloaded(by_name / "ck" / "gpt2", hub)
    assert same_weights(served, GPT.from_pretrained(by_name / "ck" / "gpt2"))
    asked = len(hub.requests)
    GPT.from_pretrained("gpt2")  # ...and then found in checkpoints/gpt2: the Hub is not asked again
    assert len(hub.requests) == asked
    (by_name / "cwd" / "gpt2").mkdir()  # a directory of that name wins over the name, as in transformers
    with pytest.raises(FileNotFoundError, match="no config.json in gpt2"):
        GPT.from_pretrained("gpt2")


@pytest.mark.parametrize("variable, value", [("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "true")])
def test_offline_mode_finds_a_gpt2_name_but_never_fetches_it(hub, by_name, monkeypatch, variable, value):
    """The variables that make huggingface_hub and transformers stay offline do so for minigpt too."""
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv(variable, value)
    asked = len(hub.requests)
    with pytest.raises(DownloadError, match=rf"gpt2 is neither in .* and \${variable} is set \(offline mode\)"):
        GPT.from_pretrained("gpt2")
    assert len(hub.requests) == asked and not (by_name / "ck" / "gpt2").exists()
    cached = GPT(GPTConfig(vocab_size=96, n_positions=32, n_embd=16, n_layer=1, n_head=2))
    hf_cache_entry(by_name / "hf", "models--openai-community--gpt2", cached)
    assert same_weights(GPT.from_pretrained("gpt2"), cached)  # what is on this machine is still found


def test_hf_hub_offline_set_to_0_wins_over_transformers_offline(hub, by_name, monkeypatch):
    """A download audit: huggingface_hub reads HF_HUB_OFFLINE, and TRANSFORMERS_OFFLINE only when
    that is unset, so HF_HUB_OFFLINE=0 keeps it online; minigpt took either one that was true."""
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    GPT.from_pretrained("gpt2")
    assert holds_weights(by_name / "ck" / "gpt2")


def test_a_sharded_checkpoint_is_found_by_name_and_the_error_names_the_cache_it_searched(by_name, monkeypatch):
    """An audit of the four sizes: transformers shards a save over its max_shard_size (5 GB in
    transformers 4: gpt2-xl), and a sharded checkpoints/NAME or cache snapshot was passed over
    for want of model.safetensors: offline, "neither in ... nor in the cache"; online, a second
    download beside the shards. And that error now names the cache folder it looked in."""
    from transformers import GPT2Config, GPT2LMHeadModel

    (by_name / "weights only").mkdir()
    (by_name / "weights only" / "model.safetensors").write_bytes(b"")
    assert not download.holds_weights(by_name / "weights only")  # no config.json: no checkpoint (a mutation audit)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DownloadError, match=re.escape(f"nor in the Hugging Face cache ({by_name / 'hf'})")):
        GPT.from_pretrained("gpt2")
    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config(vocab_size=96, n_positions=32, n_embd=16, n_layer=2, n_head=2))
    for where in (by_name / "hf" / "models--gpt2" / "snapshots" / "c0ffee", by_name / "ck" / "gpt2"):
        hf.save_pretrained(where, max_shard_size="10KB")
        assert (where / "model.safetensors.index.json").is_file() and not (where / "model.safetensors").exists()
        (by_name / "hf" / "models--gpt2" / "refs").mkdir(parents=True, exist_ok=True)
        (by_name / "hf" / "models--gpt2" / "refs" / "main").write_text("c0ffee\n")
        assert download.find_gpt2("gpt2") == where  # checkpoints/gpt2, once there, comes first
        model = GPT.from_pretrained("gpt2")
        assert torch.equal(model.transformer.wte.weight, hf.transformer.wte.weight)


def test_minigpt_download_alone_writes_where_a_name_is_looked_up(hub, by_name, capsys):
    assert main(["gpt2", "--base-url", hub.url]) == 0
    assert_downloaded(by_name / "ck" / "gpt2", hub)
    assert "load it with GPT.from_pretrained('gpt2')" in capsys.readouterr().out


def test_a_gpt2_name_runs_from_the_command_line_with_the_shipped_tokenizer(by_name, capsys):
    """`minigpt generate --model gpt2` and `minigpt eval gpt2`: the model by name, and the tokenizer
    by name too (the four sizes share checkpoints/gpt2's, which a cached snapshot may lack)."""
    from minigpt.generate_cli import main as generate_main

    torch.manual_seed(0)
    snapshot = hf_cache_entry(by_name / "hf", "models--openai-community--gpt2-xl",
                              GPT(GPTConfig(n_positions=32, n_embd=16, n_layer=1, n_head=2)))  # GPT-2's 50257 tokens
    assert not (snapshot / "vocab.json").exists()
    assert generate_main(["--model", "gpt2-xl", "--prompt", "Hello", "--max-new-tokens", "3", "--temperature", "0"]) == 0
    assert capsys.readouterr().out.startswith("Hello")
    (by_name / "text.txt").write_text("Hello world, hello again.")
    assert cli_main(["eval", "gpt2-xl", str(by_name / "text.txt")]) == 0
    assert "perplexity" in capsys.readouterr().out


def test_a_gpt2_name_that_cannot_be_fetched_is_one_line_and_torchrun_is_told_to_fetch_first(by_name, monkeypatch, capsys):
    from minigpt.generate_cli import main as generate_main

    with socket.socket() as s:  # a port that was free a moment ago: the Hub cannot be reached
        s.bind(("127.0.0.1", 0))
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{s.getsockname()[1]}")
    assert generate_main(["--model", "gpt2-medium", "--prompt", "Hi"]) == 2
    err = capsys.readouterr().err
    assert "gpt2-medium is neither in" in err and "cannot reach" in err and "Are you offline?" in err, err
    assert "Traceback" not in err
    (by_name / "text.txt").write_text("Hello world")
    assert cli_main(["finetune", "--init", "gpt2", "--data", str(by_name / "text.txt"), "--out", str(by_name / "ft")]) == 2
    err = capsys.readouterr().err  # the name was looked up, not refused as a missing directory
    assert "gpt2 is neither in" in err and "cannot reach" in err and "Traceback" not in err, err
    monkeypatch.setenv("WORLD_SIZE", "2")  # every process of a torchrun would fetch it into one directory at once
    with pytest.raises(DownloadError, match="fetch it before torchrun starts: minigpt download gpt2-large"):
        GPT.from_pretrained("gpt2-large")
    monkeypatch.setenv("WORLD_SIZE", "two")  # a review: int()'s own "invalid literal", which names no variable
    with pytest.raises(ValueError, match="WORLD_SIZE='two' is set, not a whole number"):
        GPT.from_pretrained("gpt2-large")


def test_the_hf_cache_is_found_where_huggingface_hub_puts_it(by_name, monkeypatch):
    """$HF_HUB_CACHE, else $HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub (~/.cache by default)."""
    model = GPT(GPTConfig(vocab_size=96, n_positions=32, n_embd=16, n_layer=1, n_head=2))
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.delenv("HF_HOME", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(by_name / "xdg"))
    xdg = hf_cache_entry(by_name / "xdg" / "huggingface" / "hub", "models--openai-community--gpt2", model)
    assert download.hf_cache_snapshot("gpt2") == xdg
    monkeypatch.setenv("HF_HOME", str(by_name / "home"))
    assert download.hf_cache_snapshot("gpt2") is None  # HF_HOME moves the whole cache
    home = hf_cache_entry(by_name / "home" / "hub", "models--openai-community--gpt2", model)
    assert download.hf_cache_snapshot("gpt2") == home
    monkeypatch.setenv("HF_HUB_CACHE", str(by_name / "hf"))
    assert download.hf_cache_snapshot("gpt2") is None
    (home / "model.safetensors").unlink()  # a snapshot without the weights (an older pytorch_model.bin only) is no copy
    monkeypatch.setenv("HF_HUB_CACHE", str(by_name / "home" / "hub"))
    assert download.hf_cache_snapshot("gpt2") is None
    # ...but it is said (a download audit: "neither ... nor in the Hugging Face cache" sent the user
    # to fetch the same pytorch_model.bin again), offline by GPT-2's name and by any Hub repo id.
    (home / "pytorch_model.bin").write_bytes(b"pickle")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    said = f"the Hugging Face cache holds gpt2 as pytorch_model.bin only ({home}), PyTorch's pickle format, which minigpt does not read"
    with pytest.raises(DownloadError, match=re.escape(said)):
        GPT.from_pretrained("gpt2")
    other = hf_cache_entry(by_name / "home" / "hub", "models--someone--tiny-gpt2", model)
    (other / "model.safetensors").rename(other / "pytorch_model.bin")
    with pytest.raises(FileNotFoundError, match=re.escape("(the Hugging Face cache holds someone/tiny-gpt2 as pytorch_model.bin only")):
        GPT.from_pretrained("someone/tiny-gpt2")


CACHE_VARS = ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME", "HUGGINGFACE_CO_STAGING")


def test_the_hf_cache_folder_is_the_one_huggingface_hub_uses(by_name, monkeypatch):
    """Bug guarded: `~` and $VARS in HF_HOME / HF_HUB_CACHE were taken literally (a Dockerfile's ENV
    line leaves them so), and the older HUGGINGFACE_HUB_CACHE was ignored, so a cache that
    transformers uses was not found. Compared with huggingface_hub's own answer, for each setting."""
    settings = [{}, {"XDG_CACHE_HOME": "~/xdg"}, {"HF_HOME": "~/home"}, {"HF_HOME": "$HOME/home"},
                {"HF_HOME": "~/home", "HUGGINGFACE_HUB_CACHE": "$HOME/legacy"},
                {"HUGGINGFACE_HUB_CACHE": "/legacy", "HF_HUB_CACHE": "~/hub"}]
    home = str(by_name / "user")
    env = {k: v for k, v in os.environ.items() if k not in CACHE_VARS} | {"HOME": home}
    code = ("import importlib, json, os, sys\nimport huggingface_hub.constants as c\n"
            "for s in json.loads(sys.argv[1]):\n"
            "    os.environ.update(s); importlib.reload(c); print(c.HF_HUB_CACHE)\n"
            "    for k in s: del os.environ[k]\n")
    r = subprocess.run([sys.executable, "-c", code, json.dumps(settings)], env=env, capture_output=True, text=True, timeout=60)
    theirs = r.stdout.splitlines()
    assert len(theirs) == len(settings), r.stderr
    monkeypatch.setenv("HOME", home)
    ours = []
    for setting in settings:
        for var in CACHE_VARS:
            monkeypatch.delenv(var, raising=False)
        for var, value in setting.items():
            monkeypatch.setenv(var, value)
        ours.append(str(download.hf_hub_cache()))
    print("\n".join(f"{s}: {p}" for s, p in zip(settings, ours)))
    assert ours == theirs
    assert ours[2] == f"{home}/home/hub"  # `~` expanded, not a folder named "~"
    snapshot = hf_cache_entry(by_name / "user" / "home" / "hub", "models--openai-community--gpt2",
                              GPT(GPTConfig(vocab_size=96, n_positions=32, n_embd=16, n_layer=1, n_head=2)))
    for var in CACHE_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", "~/home")
    assert download.hf_cache_snapshot("gpt2") == snapshot


def test_minigpt_s_own_cache_reads_xdg_cache_home_as_the_spec_says(tmp_path, monkeypatch):
    """A packager's audit: XDG_CACHE_HOME='~/.cache' (a Dockerfile's ENV leaves `~` as typed) sent
    an installed minigpt's downloads to a folder named "~" in the working directory, and with no
    home directory at all (a container run as a user /etc/passwd lacks) `import minigpt` failed."""
    from minigpt.config import user_cache_source

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()  # (a home that does not exist is none: see the test below)
    for xdg, cache in (("~/c", tmp_path / "home" / "c"), ("$HOME/d", tmp_path / "home" / "d"), ("/abs/e", Path("/abs/e")),
                       ("relative", tmp_path / "home" / ".cache"), ("", tmp_path / "home" / ".cache")):
        monkeypatch.setenv("XDG_CACHE_HOME", xdg)
        assert user_cache_source()[0] == cache, xdg
    monkeypatch.delenv("XDG_CACHE_HOME")

    def no_home():
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setattr(Path, "home", no_home)
    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path))  # (where its cache-UID folder is)
    assert user_cache_source()[0].parent == tmp_path



@pytest.mark.parametrize("home", ["xdg", "$HOME", "passwd", "none"])
def test_an_unwritable_download_folder_says_where_it_came_from_as_config_found_it(tmp_path, monkeypatch, home):
    """A code reread: check_writable read XDG_CACHE_HOME again to say where minigpt's download folder
    came from, a second copy of config.user_cache_source's rules, and could not tell a home from
    /etc/passwd from none at all ("your home's .cache/minigpt, or with no home the temp directory's
    cache-UID/minigpt"). config.user_cache_source says both the folder and its source, for both."""
    from minigpt.config import user_cache_source

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    if home == "xdg":
        monkeypatch.setenv("XDG_CACHE_HOME", "~/c")
    if home in ("passwd", "none"):
        monkeypatch.delenv("HOME")
        monkeypatch.setattr(Path, "home", lambda: tmp_path / "pw")  # the user's /etc/passwd entry
    if home == "none":
        def no_home():
            raise RuntimeError("Could not determine home directory.")

        monkeypatch.setattr(Path, "home", no_home)
        monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path))
    folder, source = user_cache_source("minigpt")
    expected = {"xdg": (tmp_path / "home" / "c", "$XDG_CACHE_HOME/minigpt"),
                "$HOME": (tmp_path / "home" / ".cache", f"$HOME/.cache/minigpt, HOME being {tmp_path / 'home'}"),
                "passwd": (tmp_path / "pw" / ".cache", "your home's .cache/minigpt"),
                "none": (tmp_path / f"cache-{os.getuid()}",
                         "the temp directory's cache-UID/minigpt, there being no home directory")}[home]
    assert (folder, source) == (expected[0] / "minigpt", expected[1])
    monkeypatch.setattr(download, "DOWNLOADS", folder)
    monkeypatch.setattr(download, "DOWNLOADS_SOURCE", source)  # (as config.py finds them at import)
    monkeypatch.setattr(download, "unwritable", lambda out: f"{out.parent} cannot be written")
    with pytest.raises(DownloadError) as e:
        download.check_writable(folder / "gpt2")
    assert str(e.value) == (f"{folder / 'gpt2'} is in minigpt's download folder, {folder} ({expected[1]}), and {folder} "
                            "cannot be written: set XDG_CACHE_HOME to a folder you can write, or download it elsewhere "
                            "with `minigpt download gpt2 --out DIR` and load DIR")

@pytest.mark.parametrize("hashes", [True, False])
def test_the_start_of_another_file_is_not_resumed(hub, tmp_path, capsys, hashes):
    """An audit left the first bytes of another model's model.safetensors as the .partial (a
    download of gpt2-medium into the folder, interrupted, then one of gpt2): the download asked for
    the rest of its own file and appended it. With hashes it failed only after the whole rest came
    ("sha256 mismatch"); from a mirror that announces none, the spliced file was taken and loaded
    as a model neither file holds. A .partial is resumed only when its note names this very file."""
    hub.no_etag = not hashes
    other = b"\x00" * 6000  # another file's start: no note (an older minigpt), or another file's note
    (tmp_path / "model.safetensors.partial").write_bytes(other)
    if hashes:
        download.source_note(tmp_path / "model.safetensors.partial").write_text(
            download._identity(download.RemoteFile("x", 10**9, "sha256", "f" * 64)))
    assert main(["gpt2", "--out", str(tmp_path), "--base-url", hub.url]) == 0
    assert_downloaded(tmp_path, hub)
    assert "model.safetensors.partial is the start of another file than the one the server announces now: " \
           "starting over" in capsys.readouterr().err
    assert ("GET", "/cdn/model.safetensors", None) in hub.requests  # from the first byte, no Range


def test_a_dropped_line_that_makes_progress_is_retried_until_done(hub, tmp_path, capsys):
    """An audit's line dropped every 3 MB: the retries were counted per file in total, so a 13 MB
    file failed at 12 MB with every retry spent, though each try got further. They are counted in
    a row without progress: a dead line still fails after --retries."""
    size = len(hub.files["model.safetensors"])
    hub.cut_every["model.safetensors"] = size // 5 + 1  # five tries, each one further
    download_gpt2("gpt2", tmp_path / "a", base_url=hub.url, retries=1, progress=False)
    assert_downloaded(tmp_path / "a", hub)
    assert [m for m, p, _ in hub.requests if p == "/cdn/model.safetensors"].count("GET") == 5
    hub.cut_every["model.safetensors"] = 0  # hangs up before a byte: no progress, ever
    with pytest.raises(DownloadError, match="downloading model.safetensors failed"):
        download_gpt2("gpt2", tmp_path / "b", base_url=hub.url, retries=1, progress=False)


def test_another_models_folder_is_replaced_whole_and_kept_whole_until_then(hub, tmp_path, capsys):
    """An audit downloaded gpt2 into a folder holding another model: the four files were replaced,
    but its generation_config.json stayed and set the token ids (the model's own tokenizer was then
    refused), its tokenizer.json won over the new vocab.json + merges.txt, and a download that
    failed midway left the new config.json beside the old weights ("tensor ... has shape (96,) ...
    expects (192,)"). Now nothing is renamed in until every file is checked, and the files that
    would override the download go with the model they came with."""
    old = tmp_path / "old"
    torch.manual_seed(1)
    GPT(GPTConfig(vocab_size=96, n_positions=32, n_embd=32, n_layer=1, n_head=2, eos_token_id=13)).save_pretrained(old)
    (old / "generation_config.json").write_text(json.dumps({"eos_token_id": 13, "bos_token_id": 11}))
    (old / "tokenizer.json").write_text("{}")
    (old / "notes.txt").write_text("mine")
    before = {p.name: p.read_bytes() for p in old.iterdir()}
    hub.busy["model.safetensors"] = 404  # fails after config.json, vocab.json and merges.txt
    with pytest.raises(DownloadError, match="answered HTTP 404"):
        download_gpt2("gpt2", old, base_url=hub.url, progress=False)
    assert all((old / name).read_bytes() == data for name, data in before.items()), "the old model is untouched"
    GPT.from_pretrained(old)  # and still loads
    download_gpt2("gpt2", old, base_url=hub.url, progress=False)
    err = capsys.readouterr().err
    assert "removing generation_config.json, tokenizer.json (another model's" in err
    assert sorted(p.name for p in old.iterdir()) == sorted([*download.FILES, "notes.txt"])
    assert all((old / name).read_bytes() == hub.files[name] for name in download.FILES)
    assert GPT.from_pretrained(old).config.n_embd == 16


def test_a_folder_that_held_none_of_the_four_keeps_its_other_files(hub, tmp_path):
    """`minigpt download gpt2` in a checkout writes into checkpoints/gpt2, which ships the tokenizer
    (vocab.json, merges.txt and a tokenizer_config.json): no model is replaced there, so nothing
    of the folder's own goes."""
    (tmp_path / "tokenizer_config.json").write_text('{"model_max_length": 1024}')
    (tmp_path / "vocab.json").write_bytes(hub.files["vocab.json"])
    download_gpt2("gpt2", tmp_path, base_url=hub.url, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*download.FILES, "tokenizer_config.json"])


def test_loading_a_folder_whose_download_stopped_says_to_run_it_again(hub, tmp_path):
    """An audit loaded a folder whose download had been cut: "has neither model.safetensors nor
    model.safetensors.index.json", not a word of the .partial beside it."""
    hub.cut_after["model.safetensors"] = 1000
    with pytest.raises(DownloadError):
        download_gpt2("gpt2", tmp_path, base_url=hub.url, retries=0, progress=False)
    with pytest.raises(FileNotFoundError, match=r"holds the .partial files of a download that stopped: run the same "
                                                r"minigpt download again to finish it\)"):
        GPT.from_pretrained(tmp_path)


def test_another_hub_model_is_read_from_the_hf_cache_by_its_repo_id(hub, by_name, monkeypatch, capsys):
    """An audit: transformers loads any Hub repo it cached ("sshleifer/tiny-gpt2", a bare
    "distilgpt2") by its id, offline too; minigpt took such an id for a directory and said only
    "does not exist". The cache's snapshot is read (never fetched: downloads are for the four
    GPT-2 sizes), and a name that is in neither place still gets "does not exist"."""
    from minigpt.generate_cli import main as generate_main

    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    torch.manual_seed(0)
    cached = GPT(GPTConfig(n_positions=32, n_embd=16, n_layer=1, n_head=2))  # GPT-2's 50257 tokens
    hf_cache_entry(by_name / "hf", "models--sshleifer--tiny-gpt2", cached)
    hf_cache_entry(by_name / "hf", "models--distilgpt2", cached)
    assert same_weights(GPT.from_pretrained("sshleifer/tiny-gpt2"), cached)
    assert same_weights(GPT.from_pretrained("distilgpt2"), cached)
    assert generate_main(["--model", "sshleifer/tiny-gpt2", "--tokenizer", "gpt2", "--prompt", "Hello",
                          "--max-new-tokens", "2", "--temperature", "0"]) == 0
    assert capsys.readouterr().out.startswith("Hello")
    for missing in ("sshleifer/other-gpt2", "out/run1"):  # a relative path looks like a repo id too
        with pytest.raises(FileNotFoundError, match=f"checkpoint directory {missing} does not exist"):
            GPT.from_pretrained(missing)
    assert hub.requests == []  # nothing was asked of the Hub
    (by_name / "cwd" / "distilgpt2").mkdir()  # a directory of that name wins over the name, as in transformers
    with pytest.raises(FileNotFoundError, match="no config.json in distilgpt2"):
        GPT.from_pretrained("distilgpt2")


def test_a_repo_id_not_in_the_cache_is_told_how_to_fetch_it_and_a_path_is_not(by_name):
    """What `download_hint` adds for a checkpoint directory that does not exist (minigpt/checkpoint.py):
    a name that could be a Hub repo id is told where minigpt looked, which models it downloads
    itself, and how to fetch any other; one that can only be a path, or exists, is told nothing."""
    hint = download.hub_hint("sshleifer/other-gpt2")
    assert f"nor is a Hub model of that name in the Hugging Face cache, {by_name / 'hf'}" in hint
    assert "minigpt downloads only OpenAI's GPT-2 sizes (gpt2, gpt2-medium, gpt2-large, gpt2-xl)" in hint
    assert "`hf download sshleifer/other-gpt2`" in hint and "or pass an existing local directory" in hint
    assert "`hf download out/run1`" in download.hub_hint("out/run1")
    with pytest.raises(FileNotFoundError, match=r"checkpoint directory sshleifer/other-gpt2 does not exist \(nor is a Hub model"):
        GPT.from_pretrained("sshleifer/other-gpt2")  # the loader's error carries the hint
    (by_name / "cwd" / "out" / "run1").mkdir(parents=True)
    for not_an_id in ("out/run1", "out/run1/best", str(by_name / "abs"), "./run1", "org--x/name", "a/../b"):
        assert download.hub_hint(not_an_id) == "", not_an_id


def test_a_missing_path_is_said_not_to_exist_on_a_machine_without_a_home_directory(by_name, monkeypatch):
    """Every checkpoint path that does not exist is now looked up in the Hugging Face cache, whose
    default folder is under the home directory: Path.home() raised RuntimeError ("Could not
    determine home directory") where there is none, a container run as a user /etc/passwd lacks."""
    def no_home() -> Path:
        raise RuntimeError("Could not determine home directory.")

    for var in CACHE_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(Path, "home", no_home)
    with pytest.raises(FileNotFoundError, match="checkpoint directory out/run1 does not exist"):
        GPT.from_pretrained("out/run1")


def test_a_missing_data_path_is_never_taken_for_a_hub_model_in_the_cache(by_name):
    """A review: every missing config path was looked up in the Hugging Face cache, so a mistyped
    --data data/mine, with a Hub repo "data/mine" cached, became that model's snapshot and failed
    as "no meta.json in .../snapshots/...". Only a model's or a tokenizer's path (--init,
    --tokenizer) is a Hub id; data paths stay as typed, for their own "does not exist"."""
    from minigpt.train_config import TrainConfig

    snapshot = hf_cache_entry(by_name / "hf", "models--data--mine", GPT(GPTConfig(n_positions=32, n_embd=16, n_layer=1, n_head=2)))
    cfg = TrainConfig(data="data/mine", init="data/mine", out=str(by_name / "out"))
    assert cfg.data == "data/mine" and cfg.init == str(snapshot)


# A hostile or broken server, as an audit played one (a fake Hub answering every request the same way).
PORTAL_PAGE = b"<html><body>Please log in to the hotel wifi</body></html>\n"


@pytest.mark.parametrize("scheme", ["file", "data", "ftp"])
def test_a_redirect_off_the_web_is_refused_before_anything_is_written(hub, tmp_path, scheme):
    """An audit: a Hub answering 302 Location: file:///etc/hostname got that file copied in as all
    four (file:///dev/zero filled the disk); urllib's opener follows file:, data: and ftp: too."""
    secret = tmp_path / "secret"
    secret.write_text("this machine's own file")
    location = {"file": secret.as_uri(), "data": "data:,not-gpt2", "ftp": "ftp://127.0.0.1:9/gpt2"}[scheme]
    hub.redirect[REPO + "config.json"] = location
    out = tmp_path / "gpt2"
    with pytest.raises(DownloadError) as e:
        download_gpt2("gpt2", out, base_url=hub.url, retries=0, progress=False)
    assert str(e.value) == (f"{hub.url}{REPO}config.json redirects the download to {location!r}; refused: minigpt "
                            "downloads only http:// and https:// addresses")
    assert not out.exists()  # nothing written, not even the folder


def test_a_cdn_redirect_off_the_web_is_refused_and_local_files_cannot_be_opened(hub, tmp_path):
    """An audit: the download's opener (urllib's build_opener) held file:, ftp: and data: handlers;
    a CDN's own redirect to ftp:// was followed. The opener now has the web's handlers alone."""
    hub.redirect["/cdn/model.safetensors"] = "ftp://127.0.0.1:9/model.safetensors"
    with pytest.raises(DownloadError, match=f"{hub.url}/cdn/model.safetensors redirects the download to "
                                            "'ftp://127.0.0.1:9/model.safetensors'; refused"):
        download_gpt2("gpt2", tmp_path, base_url=hub.url, retries=0, progress=False)
    assert not any((tmp_path / name).exists() for name in download.FILES)  # none took its final name
    with pytest.raises(download.URLError, match="unknown url type: file"):
        download._opener(follow=True).open(tmp_path.as_uri())  # even past refuse_non_web


def test_a_captive_portal_s_html_page_is_refused_and_the_command_fails(hub, tmp_path, capsys):
    """An audit: a Wi-Fi login page (200, text/html, a Content-Length, no ETag) for every address
    was written under all four names and the command said "gpt2 is in ...", exit 0."""
    hub.no_etag = True
    hub.files = {name: PORTAL_PAGE for name in hub.files}
    hub.content_type = {path: "text/html; charset=utf-8" for path in [REPO + "config.json", REPO + "vocab.json",
                                                                     REPO + "merges.txt", "/cdn/model.safetensors"]}
    out = tmp_path / "gpt2"
    assert main(["gpt2", "--out", str(out), "--base-url", hub.url, "--retries", "0"]) == 2
    err = capsys.readouterr().err
    assert (f"error: {hub.url}{REPO}config.json answered with an HTML page (text/html; charset=utf-8), not the file"
            in err and "Traceback" not in err)
    assert not out.exists()


def test_an_html_answer_to_the_get_keeps_what_was_fetched_before(hub, tmp_path):
    """An audit: an HTML page was taken for the file wherever it came from; the CDN's GET (whose
    HEAD was the Hub's redirect) is refused too, and the half fetched by an earlier run stays."""
    data = hub.files["model.safetensors"]
    partial = tmp_path / "model.safetensors.partial"
    partial.write_bytes(data[:1000])
    note_as_from_the_hub(partial, hub)
    hub.content_type["/cdn/model.safetensors"] = "text/html"
    with pytest.raises(DownloadError, match=f"{hub.url}/cdn/model.safetensors answered with an HTML page"):
        download_gpt2("gpt2", tmp_path, base_url=hub.url, progress=False)
    assert partial.read_bytes() == data[:1000]
    del hub.content_type["/cdn/model.safetensors"]
    hub.requests.clear()
    download_gpt2("gpt2", tmp_path, base_url=hub.url, progress=False)
    assert_downloaded(tmp_path, hub)
    assert hub.requests[-1] == ("GET", "/cdn/model.safetensors", "bytes=1000-")  # resumed, not fetched again


@pytest.mark.parametrize(("name", "content", "problem"), [
    ("config.json", PORTAL_PAGE, "is not valid JSON"),
    ("vocab.json", b'["not", "a", "vocabulary"]', "is JSON but not an object"),
    ("merges.txt", PORTAL_PAGE, 'does not start with "#version"'),
    ("model.safetensors", PORTAL_PAGE, "does not start with a safetensors header"),
])
def test_a_file_no_hash_vouches_for_must_have_its_format(hub, tmp_path, name, content, problem):
    """An audit: from a server that announces no hash, any bytes were taken for the four files (an
    HTML page sent without its Content-Type too). Each file's format is checked now; one that fails
    never takes its final name, and the files fetched before it stay fetched for the rerun."""
    good = hub.files[name]
    hub.no_etag = True
    hub.files[name] = content
    url = hub.url + REPO + name if name != "model.safetensors" else hub.url + "/cdn/model.safetensors"
    with pytest.raises(DownloadError) as e:
        download_gpt2("gpt2", tmp_path, base_url=hub.url, progress=False)
    assert str(e.value) == (f"{name} from {url} {problem}, so it is not GPT-2's {name} (the server announced no "
                            "hash to check it by); deleted it, nothing was replaced")
    assert not any((tmp_path / file).exists() for file in download.FILES)
    before = download.FILES[:download.FILES.index(name)]
    assert all((tmp_path / f"{file}.partial").read_bytes() == hub.files[file] for file in before)
    hub.files[name] = good
    hub.requests.clear()
    download_gpt2("gpt2", tmp_path, base_url=hub.url, progress=False)
    assert_downloaded(tmp_path, hub)
    assert not any(method == "GET" and path == REPO + file for method, path, _ in hub.requests for file in before)


def test_a_file_already_there_without_its_format_is_fetched_again(hub, tmp_path, capsys):
    """An audit's HTML page, left by an earlier run under a final name, was skipped on a rerun against
    a server announcing no hash where its size matched (or the server announced none)."""
    download_gpt2("gpt2", tmp_path, base_url=hub.url, progress=False)
    hub.no_etag = True
    (tmp_path / "merges.txt").write_bytes(b"x" * len(hub.files["merges.txt"]))  # the size the server announces
    download_gpt2("gpt2", tmp_path, base_url=hub.url, progress=False)
    assert_downloaded(tmp_path, hub)
    assert (f'{tmp_path / "merges.txt"} is already there, but it does not start with "#version": downloading it again'
            in capsys.readouterr().err)


@pytest.mark.parametrize(("name", "header", "value"), [("config.json", "Content-Length", "lots"),
                                                      ("config.json", "Content-Length", "-5"),
                                                      ("model.safetensors", "X-Linked-Size", "-5")])
def test_a_size_that_is_no_number_is_an_error_naming_the_url(hub, tmp_path, name, header, value):
    """An audit: "Content-Length: lots" gave a raw ValueError traceback from int(), and "-5" was
    taken as a size."""
    hub.announced_size[name] = value
    with pytest.raises(DownloadError) as e:
        download_gpt2("gpt2", tmp_path, base_url=hub.url, retries=0, progress=False)
    assert str(e.value) == f"{hub.url}{REPO}{name} announced {header}: {value!r}, which is not a size in bytes"


def test_a_file_bigger_than_the_free_disk_is_refused_before_it_is_fetched(hub, tmp_path):
    """An audit: a size of 10**15 bytes was fetched until the connection closed, then resumed, and
    only failed as a dropped connection; gpt2-xl (6 GB) on a small disk would fill it first."""
    hub.announced_size["model.safetensors"] = str(10**15)
    with pytest.raises(DownloadError, match=f"{hub.url}/cdn/model.safetensors announces 1,000,000,000,000,000 bytes "
                                            "for model.safetensors, 1,000,000,000,000,000 still to fetch, but .* has "
                                            "[0-9,]+ bytes free"):
        download_gpt2("gpt2", tmp_path, base_url=hub.url, retries=0, progress=False)
    assert not (tmp_path / "model.safetensors.partial").exists()
    assert not any(path.startswith("/cdn/") for _, path, _ in hub.requests)


def discarded_sizes(monkeypatch) -> list[int]:
    """The sizes of the .partial files the download discards, in order (the list fills as it runs)."""
    sizes, real_discard = [], download.discard

    def discard(partial: Path) -> None:
        sizes.append(partial.stat().st_size)
        real_discard(partial)

    monkeypatch.setattr(download, "discard", discard)
    return sizes


def test_a_server_sending_more_than_it_announced_is_cut_off(hub, tmp_path, monkeypatch):
    """An audit: a body longer than the size announced (and with no Content-Length to end it) was
    written to the end before the size check refused it: a stream without end filled the disk."""
    data = hub.files["model.safetensors"]
    hub.trailing["model.safetensors"] = 16 * download.CHUNK
    sizes = discarded_sizes(monkeypatch)
    with pytest.raises(DownloadError, match=f"model.safetensors has [0-9,]+ bytes but the server announced {len(data):,}"):
        download_gpt2("gpt2", tmp_path, base_url=hub.url, progress=False)
    assert len(data) < sizes[0] <= len(data) + download.CHUNK  # stopped at the first read past the size


def test_a_symlink_planted_as_a_partial_file_or_its_note_is_never_written_through(hub, tmp_path):
    """A security audit planted out/config.json.partial -> a file of another user's: the download
    truncated and overwrote that file, then renamed the link into place as config.json. FILE.partial
    and its note are made afresh with O_EXCL | O_NOFOLLOW, and a link is never resumed (here one
    whose note names the very file the server announces)."""
    out = tmp_path / "out"
    out.mkdir()
    victims = {name: tmp_path / f"victim-{name}" for name in ("config.json.partial", "model.safetensors.partial",
                                                             "vocab.json.partial.source")}
    for name, victim in victims.items():
        victim.write_text(f"precious data in {name}'s target")
        (out / name).symlink_to(victim)
    note_as_from_the_hub(out / "model.safetensors.partial", hub)
    download_gpt2("gpt2", out, base_url=hub.url, progress=False)
    assert_downloaded(out, hub)
    assert not any((out / name).is_symlink() for name in download.FILES)
    for name, victim in victims.items():
        assert victim.read_text() == f"precious data in {name}'s target", name


def test_a_resumed_partial_file_is_opened_only_if_it_is_a_regular_file_not_a_link(tmp_path):
    """A security audit: a FILE.partial resumed was opened with open(..., "ab"), which follows a
    link put there after resumable_bytes looked; O_NOFOLLOW refuses it (ELOOP)."""
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    (tmp_path / "model.safetensors.partial").symlink_to(victim)
    remote = download.RemoteFile("http://127.0.0.1:9/cdn/model.safetensors", 100, None, None)
    with pytest.raises(OSError) as e:
        download._open_partial(remote, tmp_path / "model.safetensors.partial", have=8)
    assert e.value.errno == errno.ELOOP
    assert victim.read_bytes() == b"precious"


@pytest.mark.parametrize(("name", "bound"), [("config.json", "MAX_SMALL_FILE"), ("model.safetensors", "max_weights_size")])
def test_an_endless_body_of_a_file_with_no_size_announced_is_stopped_at_a_bound(hub, tmp_path, monkeypatch, name, bound):
    """A security audit's mirror announced no size and no hash and sent config.json without end:
    3.5 GB were written in 25 s with no error. A file with no size announced is stopped at a bound
    no GPT-2 file reaches, deleted, and the error names the file, the bound and the address."""
    limit = 64 << 10
    assert len(hub.files[name]) < limit  # the tiny model's real file passes; its endless tail does not
    monkeypatch.setattr(download, bound, limit if bound == "MAX_SMALL_FILE" else lambda size: limit)
    hub.no_etag = hub.no_linked_size = True
    hub.trailing[name] = 64 * limit
    sizes = discarded_sizes(monkeypatch)
    url = f"{hub.url}{'/cdn/' if name == 'model.safetensors' else REPO}{name}"
    with pytest.raises(DownloadError) as e:
        download_gpt2("gpt2", tmp_path / "out", base_url=hub.url, progress=False)
    assert str(e.value) == (f"{url} announced no size for {name} and sent more than {limit:,} bytes, more than GPT-2's "
                            f"{name} can have; stopped, and deleted what came")
    assert limit < sizes[0] <= limit + download.CHUNK
    assert not (tmp_path / "out" / f"{name}.partial").exists()


def test_the_weights_bound_holds_each_gpt2_s_real_file_with_margin():
    """The bound on model.safetensors when no size is announced (the audit above) comes from the
    preset of the size fetched: above the Hub's real files (which hold each block's causal mask
    too), and not so far above that a gpt2 download may write gpt2-xl's 6 GB."""
    # openai-community/NAME's model.safetensors in bytes (gpt2-medium's and gpt2-large's to 3 digits)
    hub_sizes = {"gpt2": 548_105_171, "gpt2-medium": 1_520_000_000, "gpt2-large": 3_250_000_000, "gpt2-xl": 6_431_878_936}
    for name, size in hub_sizes.items():
        assert size < download.max_weights_size(name) < 2 * size, name
    assert download.max_weights_size("gpt2") < hub_sizes["gpt2-medium"]


def test_a_trickling_server_fails_the_attempt_and_spends_a_retry_though_the_file_grew(hub, tmp_path, monkeypatch):
    """A security audit's mirror sent one byte every 20 s: the download never ended (TIMEOUT_S is
    per socket read, and read(CHUNK) waited for a whole MiB). A transfer under MIN_WINDOW_BYTES per
    RATE_WINDOW_S fails the attempt, and counts against --retries though the file grew, or a
    trickle would be retried forever. A later run resumes."""
    monkeypatch.setattr(download, "RATE_WINDOW_S", 0.3)
    monkeypatch.setattr(download, "MIN_WINDOW_BYTES", 1000)
    # Two GETs send 40 bytes at 20 B/s, then (if still asked) the rest; a third would get it all at once.
    hub.trickle["model.safetensors"] = [(40, 0.05)] * 2
    with pytest.raises(DownloadError, match=r"downloading model.safetensors failed: .*/cdn/model.safetensors sent "
                                            r"[0-9] bytes in 0.3 s, under the 1,000 taken: stalled"):
        download_gpt2("gpt2", tmp_path, base_url=hub.url, retries=1, progress=False)
    gets = [rng for m, p, rng in hub.requests if (m, p) == ("GET", "/cdn/model.safetensors")]
    assert len(gets) == 2 and gets[0] is None and gets[1] is not None  # the retry resumed: it grew, yet was counted
    download_gpt2("gpt2", tmp_path, base_url=hub.url, progress=False)
    assert_downloaded(tmp_path, hub)


@contextmanager
def trickling_server(answer: bytes, trickle: bytes, quick_head: bool = False) -> Iterator[str]:
    """A server on 127.0.0.1 (its URL yielded) that answers each request with `answer`, then sends
    `trickle` over and over, a byte every 0.05 s, until the client cuts it off or 5 s passed (so a
    download it holds ends, and with it the test). With `quick_head` a HEAD gets an empty 200 at once."""
    listener, stop, threads = socket.create_server(("127.0.0.1", 0)), threading.Event(), []
    listener.settimeout(0.05)
    deadline = time.monotonic() + 5

    def answer_one(conn: socket.socket) -> None:
        with conn:
            try:
                if conn.recv(65536).startswith(b"HEAD") and quick_head:
                    return conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")  # no size, no hash
                conn.sendall(answer)
                i = 0
                while not stop.wait(0.05) and time.monotonic() < deadline:
                    conn.sendall(trickle[i % len(trickle):][:1])
                    i += 1
            except OSError:
                pass  # the client cut the connection

    def serve() -> None:
        while not stop.is_set():
            try:
                conn = listener.accept()[0]
            except TimeoutError:
                continue
            threads.append(threading.Thread(target=answer_one, args=(conn,)))
            threads[-1].start()

    server = threading.Thread(target=serve)
    server.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        server.join()
        listener.close()
        for thread in threads:
            thread.join()


def threads() -> set[threading.Thread]:
    """This process's threads, less tqdm's monitor: the first bar a process makes starts it, a
    disabled one too (download_gpt2(progress=False)), and it lives on, so a test that met the first
    bar (alone, or first in its pytest-xdist worker) saw it as a thread the download left behind."""
    return {thread for thread in threading.enumerate() if thread.name != "tqdm_monitor"}


@pytest.mark.parametrize("answer, trickle, stalled", [
    # A chunked body's trailer lines, without end: read1 reads them all before it returns.
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n", b"X: a\r\n",
     r"sent 0 bytes in 0\.3 s, under the 65,536 taken"),
    # A chunk-size line, a digit at a time: read1 reads the line before it returns.
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", b"0",
     r"sent nothing of the file within 0\.6 s \(headers included\)"),
    # The GET's own headers.
    (b"HTTP/1.1 200 OK\r\nX-Pad: ", b"a", r"sent nothing of the file within 0\.6 s \(headers included\)"),
])
def test_a_server_that_trickles_inside_one_read_is_cut_off_as_a_stall_and_retried(tmp_path, monkeypatch, capsys,
                                                                                   answer, trickle, stalled):
    """Audits: a server that trickled a header line, a chunked body's trailer lines or a chunk-size
    line held the download forever: TIMEOUT_S starts afresh with each byte, and http.client reads
    each of those inside one call (read1 too), so no check between reads is ever reached. The
    attempt's `_Watchdog` cuts the connection under the read: a stall, retried, naming the file; no
    thread is left."""
    monkeypatch.setattr(download, "TIMEOUT_S", 0.2)  # a byte every 0.05 s: never a socket timeout
    monkeypatch.setattr(download, "RATE_WINDOW_S", 0.3)  # the body's first byte within 0.6 s
    before = threads()
    start = time.monotonic()
    with trickling_server(answer, trickle, quick_head=True) as url:
        with pytest.raises(DownloadError) as e:
            download_gpt2("gpt2", tmp_path / "out", base_url=url, retries=1, progress=False)
        assert time.monotonic() - start < 3  # two attempts of a few windows each, not the server's 5 s
    assert re.fullmatch(rf"downloading config\.json failed: {url}{REPO}config\.json {stalled}: stalled\. Run the "
                        rf"same command again to resume from {re.escape(str(tmp_path))}/out/config\.json\.partial",
                        str(e.value))
    assert re.search(rf"config\.json: {url}{REPO}config\.json {stalled}: stalled; resuming \(retry 1 of 1\)",
                     capsys.readouterr().err)
    assert threads() <= before


def test_a_server_that_trickles_its_headers_is_cut_off_as_a_stall_and_retried(tmp_path, monkeypatch, capsys):
    """An audit: a server that sent "HTTP/1.1 200 OK\\r\\nX-Pad: " and then a byte every few seconds
    held the download forever. The Hub's HEAD answer, like every answer, must bring its headers (and
    for a GET the body's first byte) within HEADERS_WINDOWS × RATE_WINDOW_S; a stall is retried."""
    monkeypatch.setattr(download, "TIMEOUT_S", 0.2)
    monkeypatch.setattr(download, "RATE_WINDOW_S", 0.3)
    before = threads()
    start = time.monotonic()
    with trickling_server(b"HTTP/1.1 200 OK\r\nX-Pad: ", b"a") as url:
        with pytest.raises(DownloadError) as e:
            download_gpt2("gpt2", tmp_path / "out", base_url=url, retries=1, progress=False)
        assert time.monotonic() - start < 3
    stalled = rf"{url}{REPO}config\.json sent nothing of the file within 0\.6 s \(headers included\): stalled"
    assert re.fullmatch(rf"asking for config\.json failed: {stalled}\. Run the same command again to retry", str(e.value))
    assert re.search(rf"config\.json: {stalled}; asking again \(retry 1 of 1\)", capsys.readouterr().err)
    assert threads() <= before


def test_a_proxy_that_trickles_its_connect_answer_is_cut_off_as_a_stall(tmp_path, monkeypatch):
    """A review: an https:// download through a proxy reads the proxy's answer to CONNECT inside
    http.client's connect, before any request is sent; a proxy that trickled its header lines held
    the download forever. The socket is watched from the moment it is made; the error names the
    file's address, not the proxy's."""
    monkeypatch.setattr(download, "TIMEOUT_S", 0.2)
    monkeypatch.setattr(download, "RATE_WINDOW_S", 0.3)
    monkeypatch.setenv("no_proxy", "")
    before = threads()
    start = time.monotonic()
    with trickling_server(b"HTTP/1.1 200 Connection established\r\n", b"X: a\r\n") as proxy:
        monkeypatch.setenv("https_proxy", proxy)
        with pytest.raises(DownloadError) as e:
            download_gpt2("gpt2", tmp_path / "out", base_url="https://127.0.0.1:9", retries=0, progress=False)
        assert time.monotonic() - start < 2
    assert str(e.value) == (f"asking for config.json failed: https://127.0.0.1:9{REPO}config.json sent nothing of the "
                            "file within 0.6 s (headers included): stalled. Run the same command again to retry")
    assert threads() <= before


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="no uids (Windows): the temp directory is the user's own")
def test_the_cache_in_the_shared_temp_directory_is_private_and_refused_unless_it_is(tmp_path, monkeypatch):
    """A security audit: with no home directory an installed minigpt kept GPT-2 in
    TMP/cache-UID, a name anyone can make first in a shared /tmp, and loaded a checkpoint another
    user planted there. A download or a lookup there makes the folder with mode 0o700, and refuses
    it unless it is this user's alone, with an error saying what to set; `import minigpt` makes
    nothing and refuses nothing (it would stop every command, downloading or not)."""
    from minigpt.config import check_temp_cache, temp_cache, user_cache_source

    def no_home():
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setattr(Path, "home", no_home)
    monkeypatch.setattr(tempfile, "gettempdir", lambda: str(tmp_path))
    uid = os.getuid()
    cache = tmp_path / f"cache-{uid}"
    downloads = user_cache_source("minigpt")[0]  # config.DOWNLOADS of an installed minigpt
    assert downloads == cache / "minigpt" and not cache.exists()
    monkeypatch.setattr(download, "DOWNLOADS", downloads)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a lookup only: find_gpt2 checks before it looks
    with pytest.raises(download.DownloadError, match="offline mode"):
        download.find_gpt2("gpt2")
    assert cache.stat().st_mode & 0o777 == 0o700
    check_temp_cache(downloads / "gpt2")  # it is there now, and ours: taken
    check_temp_cache(tmp_path / "elsewhere")  # a folder outside it is not its to judge
    fix = "cannot be trusted: set XDG_CACHE_HOME (or HOME) to a folder of your own"
    cache.chmod(0o777)
    with pytest.raises(PermissionError, match=re.escape(f"{cache}, the cache folder used when there is no home "
                                                        f"directory, is writable by other users (mode 0o777), so what "
                                                        f"is in it {fix}")):
        download.find_gpt2("gpt2")
    cache.rmdir()
    (tmp_path / "mine").mkdir(mode=0o700)
    cache.symlink_to(tmp_path / "mine")
    monkeypatch.delenv("HF_HUB_OFFLINE")  # (a download is refused at once in offline mode)
    with pytest.raises(PermissionError, match=re.escape(f"is not a directory, so what is in it {fix}")):
        download.download_gpt2("gpt2", base_url="http://127.0.0.1:9")
    monkeypatch.setattr(os, "getuid", lambda: uid + 1)  # another user's uid: the folder made (as us) is not theirs
    with pytest.raises(PermissionError, match=re.escape(f"cache-{uid + 1}, the cache folder used when there is no home "
                                                        f"directory, belongs to uid {uid}, not to you (uid {uid + 1})")):
        check_temp_cache(temp_cache() / "minigpt" / "gpt2")


def test_the_download_folder_s_source_is_the_one_it_was_found_from_at_import(tmp_path, monkeypatch):
    """A code reread: config.DOWNLOADS was found at import, but check_writable worked out its source
    when the error came, from the environment as it was then. A caller that set XDG_CACHE_HOME after
    `import minigpt` read that the folder came from $XDG_CACHE_HOME, which it did not. config.py
    finds both at once (DOWNLOADS_SOURCE)."""
    folder = tmp_path / "home" / ".cache" / "minigpt"
    monkeypatch.setattr(download, "DOWNLOADS", folder)
    monkeypatch.setattr(download, "DOWNLOADS_SOURCE", "$HOME/.cache/minigpt, HOME being /home/ada")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "later"))  # set after import: not where DOWNLOADS is
    monkeypatch.setattr(download, "unwritable", lambda out: "no room")
    with pytest.raises(DownloadError, match=re.escape(f"{folder} ($HOME/.cache/minigpt, HOME being /home/ada), and no room")):
        download.check_writable(folder / "gpt2")


def test_find_gpt2_takes_a_name_alone_and_fetches_as_minigpt_download_does(tmp_path, monkeypatch, capsys):
    """An audit: find_gpt2 took a `progress=` switch that no caller ever passed (dead code a reader
    must still follow). It takes the name alone, and a size it cannot find is fetched as `minigpt
    download NAME` fetches it, progress bar and all (download_gpt2's defaults)."""
    calls = []
    monkeypatch.setattr(download, "DOWNLOADS", tmp_path)
    monkeypatch.setattr(download, "hf_cache_snapshot", lambda name: None)  # not in the Hugging Face cache either
    monkeypatch.setattr(download, "download_gpt2", lambda *args, **kwargs: calls.append((args, kwargs)) or args[1])
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "WORLD_SIZE", "RANK"):
        monkeypatch.delenv(name, raising=False)
    assert download.find_gpt2("gpt2") == tmp_path / "gpt2"
    assert calls == [(("gpt2", tmp_path / "gpt2"), {})]
    assert "downloading it" in capsys.readouterr().err


@pytest.mark.parametrize("variable, value", [("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "true")])
def test_minigpt_download_in_offline_mode_is_refused_before_the_network_or_a_folder(hub, tmp_path, monkeypatch, capsys,
                                                                                    variable, value):
    """A deployment audit: `minigpt download gpt2` under HF_HUB_OFFLINE=1 still went to the network
    (a DNS lookup, in a container that has none), left an empty cache folder, and its error asked
    "Are you offline?" without a word of the variable. find_gpt2 honoured it; the download itself
    now does too, naming it."""
    monkeypatch.setenv(variable, value)
    out = tmp_path / "cache" / "gpt2"
    assert main(["gpt2", "--out", str(out), "--base-url", hub.url]) == 2
    err = capsys.readouterr().err
    assert f"download: error: ${variable} is set (offline mode, as huggingface_hub and transformers read it)" in err, err
    assert hub.requests == [] and not (tmp_path / "cache").exists()


@pytest.mark.parametrize("marks", [("training_state.pt", "log.jsonl", "best/"), ("log.jsonl",)])
def test_a_training_run_s_folder_is_refused_and_a_model_s_is_still_replaced_or_resumed(hub, tmp_path, capsys, marks):
    """An audit ran `minigpt download gpt2 --out RUN_DIR` on a training run's OUT_DIR: its weights
    and config.json were replaced without a word, exit 0, beside the training_state.pt and log.jsonl
    they belonged to, where every other command that writes an --out refuses an occupied one. Now
    a run (its state, log or best/) is refused before the network is asked; a model's folder, a
    finished download's included, is replaced and a cut download resumed as before, without torch."""
    run = tmp_path / "run"
    torch.manual_seed(1)
    GPT(GPTConfig(vocab_size=96, n_positions=32, n_embd=32, n_layer=1, n_head=2)).save_pretrained(run)
    for mark in marks:
        (run / "best").mkdir() if mark == "best/" else (run / mark).write_text("{}\n")
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    assert main(["gpt2", "--out", str(run), "--base-url", hub.url]) == 2
    err = capsys.readouterr().err
    assert f"download: error: --out {run} holds a training run ({', '.join(marks)}), whose weights and config.json the " \
           "download would replace: choose another --out, or move those files away" in err, err
    assert hub.requests == [] and {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before

    hub.cut_after["model.safetensors"] = 1000  # a model's folder: a cut download of it, then the rest
    model = tmp_path / "model"
    GPT(GPTConfig(vocab_size=96, n_positions=32, n_embd=32, n_layer=1, n_head=2)).save_pretrained(model)
    assert main(["gpt2", "--out", str(model), "--base-url", hub.url, "--retries", "0"]) == 2
    assert (model / "model.safetensors.partial").exists()
    look = ("import sys; from pathlib import Path; from minigpt.download import check_not_a_run\n"
            f"check_not_a_run(Path({str(model)!r})); print('torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", look], capture_output=True, text=True, timeout=60)
    assert r.stdout == "False\n", r.stderr  # a model's folder is told apart without importing torch
    assert main(["gpt2", "--out", str(model), "--base-url", hub.url]) == 0
    assert_downloaded(model, hub)
