"""``preprocessing.download`` against a local HTTP server (never the internet): resume, verify, corruption."""

from __future__ import annotations

import hashlib
import http.server
import io
import random
import tarfile
import threading

import pytest

from preprocessing.download import DownloadConfig, DownloadError, download, main


def make_archive() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for i in range(3):
            data = random.Random(i).randbytes(20_000)  # incompressible: the archive is ~60 kB
            info = tarfile.TarInfo(f"lmd_full/{i}.mid")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class Handler(http.server.BaseHTTPRequestHandler):
    payload = b""
    ranges: list = []

    def do_GET(self):  # noqa: N802 - http.server API
        start = 0
        header = self.headers.get("Range")
        type(self).ranges.append(header)
        if header:
            start = int(header.split("=")[1].split("-")[0])
            if start >= len(self.payload):
                self.send_response(416)
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(self.payload) - 1}/{len(self.payload)}")
        else:
            self.send_response(200)
        body = self.payload[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    Handler.ranges = []
    yield f"http://127.0.0.1:{httpd.server_address[1]}/lmd_full.tar.gz"
    httpd.shutdown()
    httpd.server_close()


def config(tmp_path, url, **kw):
    return DownloadConfig(**{"output": tmp_path, "url": url, "progress": False, "timeout": 10, **kw})


def test_fresh_download_is_verified_and_placed(tmp_path, server):
    Handler.payload = make_archive()
    md5 = hashlib.md5(Handler.payload).hexdigest()
    target = download(config(tmp_path, server, md5=md5))
    assert target.read_bytes() == Handler.payload and not (tmp_path / "lmd_full.tar.gz.part").exists()
    download(config(tmp_path, server))  # already there and verified: nothing fetched
    assert Handler.ranges == [None]


def test_partial_download_resumes_with_range(tmp_path, server):
    Handler.payload = make_archive()
    (tmp_path / "lmd_full.tar.gz.part").write_bytes(Handler.payload[:1000])
    target = download(config(tmp_path, server))
    assert Handler.ranges == ["bytes=1000-"] and target.read_bytes() == Handler.payload


def test_corrupt_archive_and_wrong_md5_are_detected(tmp_path, server):
    good = make_archive()
    Handler.payload = good[:30_000] + bytes(1000) + good[31_000:]  # damaged in the middle
    with pytest.raises(DownloadError, match="corrupt archive"):
        download(config(tmp_path, server))
    assert (tmp_path / "lmd_full.tar.gz.corrupt").exists() and not (tmp_path / "lmd_full.tar.gz").exists()
    Handler.payload = good
    assert main(["--output", str(tmp_path), "--url", server, "--md5", "0" * 32, "--no-progress"]) == 1
    assert not (tmp_path / "lmd_full.tar.gz").exists()


def test_unreachable_server_fails_clearly(tmp_path):
    with pytest.raises(DownloadError, match="127.0.0.1"):
        download(config(tmp_path, "http://127.0.0.1:9/lmd_full.tar.gz", timeout=2))
