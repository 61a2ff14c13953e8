"""Input files as a stream of ``(name, bytes)``: a folder searched recursively, or a ``.tar.gz`` read as a
stream (never unpacked to disk), such as the Lakh ``lmd_full.tar.gz``."""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from pathlib import Path

MIDI_SUFFIXES = (".mid", ".midi")


def is_midi_name(name: str) -> bool:
    return name.lower().endswith(MIDI_SUFFIXES)


def is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith((".tar.gz", ".tgz", ".tar"))


def folder_files(path: Path) -> list[Path]:
    """Every ``.mid``/``.midi`` below ``path`` (any case), in a stable order."""
    return sorted(p for p in path.rglob("*") if p.is_file() and is_midi_name(p.name))


def count_inputs(path: Path, limit: int | None = None) -> int | None:
    """How many files :func:`iter_inputs` will give (``None`` for an archive: unknown without reading it)."""
    if is_archive(path):
        return limit
    n = len(folder_files(path))
    return n if limit is None else min(n, limit)


def iter_inputs(path: str | Path, limit: int | None = None) -> Iterator[tuple[str, bytes]]:
    """``(name, bytes)`` of each MIDI file; names are relative to the folder or the archive root.

    Raises ``ValueError`` naming the path if it is neither a folder nor a readable archive. An unreadable
    single file is given as empty bytes (it is then counted as unreadable, not fatal).
    """
    path = Path(path)
    if limit == 0:
        return
    if path.is_dir():
        files = folder_files(path)
        for p in files[:limit] if limit is not None else files:
            try:
                data = p.read_bytes()
            except OSError:
                data = b""
            yield str(p.relative_to(path)), data
    elif is_archive(path):
        yield from _iter_tar(path, limit)
    else:
        raise ValueError(f"{path}: not a folder or a .tar.gz archive of MIDI files")


def _iter_tar(path: Path, limit: int | None) -> Iterator[tuple[str, bytes]]:
    count = 0
    try:
        with tarfile.open(path, mode="r|*") as tar:
            for member in tar:
                if not member.isfile() or not is_midi_name(member.name):
                    continue
                handle = tar.extractfile(member)
                yield member.name, handle.read() if handle is not None else b""
                count += 1
                if limit is not None and count >= limit:
                    return
    except (tarfile.TarError, OSError, EOFError) as err:
        raise ValueError(f"{path}: unreadable archive after {count} files "
                         f"({type(err).__name__}: {err})") from err
