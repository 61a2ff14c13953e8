"""Per-file results cached in a work folder beside the output, so an interrupted run resumes.

Each finished batch is two files: ``batch-NNNNN.npy`` (all its windows, uint16 ``(n, steps, K)``) and
``batch-NNNNN.json`` (per file: sha256, name, reason, window count, rows, window digests), the JSON written
last, atomically: a batch without its JSON does not exist. ``options.json`` holds the extraction options; a
work folder made with other options is discarded.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from preprocessing.extract import FileResult
from schmubert.files import write_atomic


def atomic_write_bytes(path: Path, data: bytes) -> None:
    write_atomic(path, lambda tmp: tmp.write_bytes(data), overwrite=True)


@dataclass
class CachedFile:
    sha256: str
    name: str
    reason: str | None
    detail: str
    rows: list[list[int]]
    keys: list[str]  # hex digests
    batch: int
    offset: int  # first row in the batch array
    voices: dict[str, list[int]] = field(default_factory=dict)  # instrument -> [notes, overflow]
    meters: dict[str, int] = field(default_factory=dict)  # voice sets with --meter: bars per meter
    ignored: list[str] = field(default_factory=list)  # why time signatures were ignored


class WorkCache:
    def __init__(self, folder: Path, options: dict):
        self.folder = Path(folder)
        stamp = self.folder / "options.json"
        if stamp.exists() and json.loads(stamp.read_text()) != options:
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        if not stamp.exists():
            atomic_write_bytes(stamp, json.dumps(options, sort_keys=True).encode())
        self.files: dict[str, CachedFile] = {}
        self.arrays: dict[int, np.ndarray] = {}
        for meta in sorted(self.folder.glob("batch-*.json")):
            self._load(int(meta.stem.split("-")[1]), json.loads(meta.read_text()))
        self.next_batch = max(self.arrays, default=-1) + 1

    def _load(self, batch: int, entries: list[dict]) -> None:
        self.arrays[batch] = np.load(self.folder / f"batch-{batch:05d}.npy", mmap_mode="r")
        for e in entries:
            self.files[e["sha256"]] = CachedFile(e["sha256"], e["name"], e["reason"], e["detail"], e["rows"],
                                                 e["keys"], batch, e["offset"], e.get("voices", {}),
                                                 e.get("meters", {}), e.get("ignored", []))

    def add_batch(self, results: list[FileResult]) -> None:
        batch = self.next_batch
        self.next_batch += 1
        steps_k = results[0].windows.shape[1:] if results else (0, 0)
        grids = [r.windows for r in results if len(r.windows)]
        array = np.concatenate(grids) if grids else np.zeros((0, *steps_k), dtype=np.uint16)
        write_atomic(self.folder / f"batch-{batch:05d}.npy", lambda tmp: np.save(tmp, array), overwrite=True)
        entries, offset = [], 0
        for r in results:
            entries.append({"sha256": r.sha256, "name": r.name, "reason": r.reason, "detail": r.detail,
                            "rows": [list(map(int, row)) for row in r.rows],
                            "keys": [k.hex() for k in r.keys], "voices": r.voices,
                            **({"meters": r.meters, "ignored": r.ignored} if r.meters else {}),
                            "offset": offset})
            offset += len(r.windows)
        atomic_write_bytes(self.folder / f"batch-{batch:05d}.json", json.dumps(entries).encode())
        self._load(batch, entries)

    def windows(self, entry: CachedFile) -> np.ndarray:
        """``(n, steps, K)`` windows of one cached file (a memory-mapped view)."""
        return self.arrays[entry.batch][entry.offset:entry.offset + len(entry.rows)]

    def remove(self) -> None:
        self.arrays.clear()
        shutil.rmtree(self.folder, ignore_errors=True)
