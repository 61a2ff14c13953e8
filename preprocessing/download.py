"""``python -m preprocessing.download``: fetch the Lakh MIDI Dataset (lmd_full.tar.gz), resumable, verified.

The download goes to ``FILE.part`` and resumes from its size with an HTTP Range request; once complete it is
verified (an MD5 checksum when one is given, and always the gzip/tar integrity by streaming through every
member) and only then renamed to ``FILE``. A corrupt download is kept as ``FILE.corrupt`` and reported.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import os
import sys
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from schmubert.config import add_arguments, arg, from_args

LMD_FULL_URL = "http://hog.ee.columbia.edu/craffel/lmd/lmd_full.tar.gz"
CHUNK = 1 << 20


@dataclass
class DownloadConfig:
    output: Path = arg(Path("data/lmd"), "folder to put the archive in")
    url: str = arg(LMD_FULL_URL, "archive URL (the Lakh MIDI Dataset's official lmd_full.tar.gz)")
    md5: str | None = arg(None, "expected MD5 of the archive (none: check gzip/tar integrity only)")
    overwrite: bool = arg(False, "download again even if a verified archive is already there")
    timeout: float = arg(60.0, "seconds to wait for the server before giving up")
    progress: bool = arg(True, "show a progress bar")


class DownloadError(Exception):
    pass


def _fetch(url: str, part: Path, timeout: float, progress: bool) -> None:
    """Download ``url`` into ``part``, continuing from its current size where the server allows."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # nothing left to fetch: the part is complete
            return
        raise DownloadError(f"{url}: HTTP {err.code} {err.reason}") from err
    except (urllib.error.URLError, OSError) as err:
        raise DownloadError(f"{url}: {err}") from err
    with response:
        resumed = response.status == 206
        if not resumed:
            have = 0  # the server ignored the range: start over
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        with open(part, "ab" if resumed else "wb") as fh, tqdm(
                total=total, initial=have, unit="B", unit_scale=True, disable=not progress,
                desc=part.name, file=sys.stderr) as bar:
            while chunk := response.read(CHUNK):
                fh.write(chunk)
                bar.update(len(chunk))
    if total is not None and part.stat().st_size != total:
        raise DownloadError(f"{part}: connection closed at {part.stat().st_size} of {total} bytes; run again "
                            "to resume")


def md5sum(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify(path: Path, md5: str | None = None) -> int:
    """Check an archive: its MD5 if given, then gzip/tar integrity by reading every member.

    Returns the number of files in it; raises :class:`DownloadError` naming the file and the reason.
    """
    if md5 is not None and md5sum(path) != md5.lower():
        raise DownloadError(f"{path}: MD5 mismatch (expected {md5})")
    count = 0
    try:
        with open(path, "rb") as raw:
            is_gzip = raw.read(2) == b"\x1f\x8b"
        # gzip.open checks the CRC and length trailer, which tarfile's own stream reader skips
        stream = gzip.open(path, "rb") if is_gzip else open(path, "rb")  # noqa: SIM115 - closed below
        with stream, tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                if member.isfile():
                    handle = tar.extractfile(member)
                    while handle is not None and handle.read(CHUNK):
                        pass
                    count += 1
            while stream.read(CHUNK):  # to the end, so that the gzip trailer is checked
                pass
    except (tarfile.TarError, OSError, EOFError) as err:
        raise DownloadError(f"{path}: corrupt archive after {count} files "
                            f"({type(err).__name__}: {err})") from err
    if count == 0:
        raise DownloadError(f"{path}: archive holds no files")
    return count


def download(cfg: DownloadConfig) -> Path:
    """Fetch, verify and atomically place the archive; returns its path. Resumes a previous ``.part``."""
    cfg.output = Path(cfg.output)
    cfg.output.mkdir(parents=True, exist_ok=True)
    target = cfg.output / Path(cfg.url.split("?")[0]).name
    if target.exists() and not cfg.overwrite:
        verify(target, cfg.md5)
        return target
    part = target.with_name(target.name + ".part")
    _fetch(cfg.url, part, cfg.timeout, cfg.progress)
    try:
        verify(part, cfg.md5)
    except DownloadError:
        os.replace(part, target.with_name(target.name + ".corrupt"))
        raise
    os.replace(part, target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m preprocessing.download", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    add_arguments(parser, DownloadConfig)
    cfg = from_args(DownloadConfig, parser.parse_args(argv))
    try:
        target = download(cfg)
    except DownloadError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{target}: verified")
    return 0


if __name__ == "__main__":
    sys.exit(main())
