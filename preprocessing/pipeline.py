"""The batch run: stream files to worker processes, cache per-file results, split by file, deduplicate, and
write ``train.npy``/``valid.npy``/``meta.json`` atomically."""

from __future__ import annotations

import hashlib
import itertools
import json
import multiprocessing
import os
import shutil
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
from tqdm import tqdm

import schmubert
from preprocessing.cache import CachedFile, WorkCache, atomic_write_bytes
from preprocessing.config import PreprocessConfig
from preprocessing.extract import FileResult, process_file
from preprocessing.segments import UNREADABLE_REASON
from preprocessing.sources import count_inputs, iter_inputs
from schmubert.tokens import STEPS_PER_BAR, get_tracks, is_legacy

DUPLICATE_FILE = "duplicate file"
UNREADABLE = UNREADABLE_REASON  # repeated empty inputs share one hash but are not duplicates
_WORKER_CFG: PreprocessConfig | None = None


def _init_worker(cfg: PreprocessConfig) -> None:
    global _WORKER_CFG
    _WORKER_CFG = cfg


def _work(task: tuple[str, bytes, str]) -> FileResult:
    name, data, sha = task
    return process_file(name, data, _WORKER_CFG, sha)


def valid_score(sha256: str, seed: int | None) -> float:
    """A number in [0, 1) fixed by the file's content (and the seed, if one is given)."""
    key = sha256 if seed is None else hashlib.sha256(f"{seed}:{sha256}".encode()).hexdigest()
    return int(key[:16], 16) / 2**64


OUTPUT_FILES = frozenset({"train.npy", "valid.npy", "meta.json"})


def check_output(out: Path, overwrite: bool) -> None:
    """Refuse to replace an existing output unless asked (a clear one-line error), and never replace anything
    but a finished output: ``--overwrite`` removes the whole folder, so a folder holding other files (the
    input MIDI, say) or a plain file is refused even then."""
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return
    finished = (out.is_dir() and (out / "meta.json").is_file()
                and {p.name for p in out.iterdir()} <= OUTPUT_FILES)
    if not overwrite:
        what = "a finished output" if finished else "not empty"
        raise FileExistsError(f"{out}: {what}; pass --overwrite to replace it")
    if not finished:
        raise FileExistsError(f"{out}: not a preprocessing output (it holds more than {sorted(OUTPUT_FILES)}); "
                              "refusing to replace it even with --overwrite")


def _batched(items: Iterable, size: int) -> Iterator[list]:
    it = iter(items)
    while batch := list(itertools.islice(it, size)):
        yield batch


class _Runner:
    """Maps tasks over a process pool (or in this process when ``workers == 0``)."""

    def __init__(self, cfg: PreprocessConfig):
        self.cfg = cfg
        self.pool = (multiprocessing.get_context().Pool(cfg.workers, _init_worker, (cfg,))
                     if cfg.workers > 0 else None)

    def map(self, tasks: list[tuple[str, bytes, str]]) -> Iterator[FileResult]:
        if self.pool is None:
            return (process_file(n, d, self.cfg, s) for n, d, s in tasks)
        chunk = max(1, min(16, len(tasks) // (4 * self.cfg.workers)))
        return self.pool.imap_unordered(_work, tasks, chunksize=chunk)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool.join()


def collect(cfg: PreprocessConfig, cache: WorkCache) -> tuple[list[str], Counter]:
    """Process every input not yet cached; returns the input hashes in stream order and the counts of inputs
    skipped before parsing: repeated files, and repeated empty (unreadable) ones, which all share a hash."""
    seen: dict[str, None] = {}
    repeated: Counter = Counter()
    bar = tqdm(total=count_inputs(cfg.input, cfg.limit), unit="file", disable=not cfg.progress,
               desc=f"preprocess {cfg.tracks}", file=sys.stderr)
    runner = _Runner(cfg)
    try:
        for batch in _batched(iter_inputs(cfg.input, cfg.limit), cfg.batch_files):
            tasks = []
            for name, data in batch:
                sha = hashlib.sha256(data).hexdigest()
                if sha in seen:
                    repeated[UNREADABLE if not data else DUPLICATE_FILE] += 1
                    bar.update()
                    continue
                seen[sha] = None
                if sha in cache.files:
                    bar.update()
                else:
                    tasks.append((name, data, sha))
            results = []
            for result in runner.map(tasks):
                results.append(result)
                bar.update()
            if results:
                cache.add_batch(results)
    finally:
        runner.close()
        bar.close()
    return list(seen), repeated


def split_files(used: list[CachedFile], cfg: PreprocessConfig) -> dict[str, str]:
    """sha256 -> ``"train"``/``"valid"`` by content hash; at least one valid file when the fraction is > 0
    and two or more files yield windows."""
    scores = {f.sha256: valid_score(f.sha256, cfg.seed) for f in used}
    split = {sha: "valid" if s < cfg.valid_fraction else "train" for sha, s in scores.items()}
    if cfg.valid_fraction > 0 and len(used) >= 2 and "valid" not in split.values():
        split[min(scores, key=scores.get)] = "valid"
    return split


def _plan(used: list[CachedFile], split: dict[str, str], dedup: bool) -> tuple[dict[str, list], int]:
    """Which rows go where: per split a list of ``(file, row index)``, first occurrence kept."""
    keep: dict[str, list] = {"train": [], "valid": []}
    seen: set[str] = set()
    removed = 0
    for f in used:
        for i, key in enumerate(f.keys):
            if dedup and key in seen:
                removed += 1
                continue
            seen.add(key)
            keep[split[f.sha256]].append((f, i))
    return keep, removed


def _write_arrays(tmp: Path, cache: WorkCache, keep: dict[str, list], shape: tuple[int, int],
                  file_index: dict[str, int], velocity: bool = False) -> dict[str, list]:
    """``{split}.npy`` (uint16 ``(N, steps, K)``) and, with ``velocity``, ``{split}_velocity.npy`` (uint8
    velocity bins of the same elements, stored after the tokens in the cached windows)."""
    sources: dict[str, list] = {}
    steps, k = shape
    for name, rows in keep.items():
        tokens = np.lib.format.open_memmap(tmp / f"{name}.npy", mode="w+", dtype=np.uint16,
                                           shape=(len(rows), steps, k))
        vel = (np.lib.format.open_memmap(tmp / f"{name}_velocity.npy", mode="w+", dtype=np.uint8,
                                         shape=(len(rows), steps, k)) if velocity else None)
        for j, (f, i) in enumerate(rows):
            window = cache.windows(f)[i]
            tokens[j] = window[:, :k]
            if vel is not None:
                vel[j] = window[:, k:]
        for array in (tokens, vel):
            if array is not None:
                array.flush()
        del tokens, vel
        sources[name] = [[file_index[f.sha256], *f.rows[i]] for f, i in rows]
    return sources


def _publish(tmp: Path, out: Path) -> None:
    """Rename the finished temp folder into place (the old output, if any, only goes once the new is in)."""
    old = out.with_name(out.name + f".old{os.getpid()}")
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


def voice_report(used: list[CachedFile]) -> dict[str, dict]:
    """Per instrument of a voice set: its notes in the used files, those dropped for want of a free voice
    (``schmubert.polyphony``), and the share kept. Empty for the trio and melody."""
    totals: dict[str, list[int]] = {}
    for f in used:
        for name, (notes, overflow) in f.voices.items():
            t = totals.setdefault(name, [0, 0])
            t[0], t[1] = t[0] + notes, t[1] + overflow
    return {name: {"notes": n, "overflow": o, "kept": round(1 - o / n, 5) if n else 1.0}
            for name, (n, o) in totals.items()}


def meter_report(used: list[CachedFile]) -> dict[str, dict]:
    """Voice sets read with ``--meter``: bars per meter and files per meter over the used files, and files per
    reason some of their time signatures were ignored (``schmubert.meter``)."""
    bars: Counter = Counter()
    files: Counter = Counter()
    ignored: Counter = Counter()
    for f in used:
        bars.update(f.meters)
        files.update(f.meters.keys())
        ignored.update(f.ignored)
    return {"bars": dict(bars.most_common()), "files": dict(files.most_common()),
            "signatures_ignored": dict(ignored.most_common())}


def run(cfg: PreprocessConfig) -> dict:
    """Preprocess ``cfg.input`` into ``cfg.output``; returns the meta dict that was written."""
    out = cfg.output
    check_output(out, cfg.overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    cache = WorkCache(out.with_name(out.name + ".work"), {**cfg.extraction_options(),
                                                          "version": schmubert.__version__})
    order, repeated = collect(cfg, cache)
    files = sorted((cache.files[sha] for sha in order), key=lambda f: f.sha256)
    used = [f for f in files if f.rows]
    split = split_files(used, cfg)
    keep, removed = _plan(used, split, cfg.dedup)
    tracks = get_tracks(cfg.tracks)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    file_index = {f.sha256: i for i, f in enumerate(used)}
    velocity = not is_legacy(tracks)
    sources = _write_arrays(tmp, cache, keep, (cfg.bars * STEPS_PER_BAR, len(tracks)), file_index, velocity)
    reasons = Counter(f.reason for f in files if not f.rows) + repeated
    meta = {
        "tracks": cfg.tracks, "track_names": [t.name for t in tracks],
        "num_classes": [t.num_classes for t in tracks], "mask_ids": [t.mask_id for t in tracks],
        "bars": cfg.bars, "steps_per_bar": STEPS_PER_BAR, "steps": cfg.bars * STEPS_PER_BAR,
        "dtype": "uint16", "velocity": velocity, "options": cfg.to_json(), "version": schmubert.__version__,
        "files": [{"sha256": f.sha256, "name": f.name, "split": split[f.sha256]} for f in used],
        "row_fields": ["file", "segment", "start_bar", *[t.name for t in tracks]],
        "sources": sources,
        "counts": {
            "files_seen": len(order) + sum(repeated.values()), "files_used": len(used),
            "files_train": sum(s == "train" for s in split.values()),
            "files_valid": sum(s == "valid" for s in split.values()),
            "windows_found": sum(len(f.rows) for f in used), "duplicates_removed": removed,
            "train": len(keep["train"]), "valid": len(keep["valid"]),
            "skipped": dict(sorted(reasons.items(), key=lambda kv: -kv[1])),
            "voices": voice_report(used),
            **({"meters": meter_report(used)} if velocity and cfg.meter else {}),
        },
        "skip_details": {f.name: f.detail for f in files if not f.rows and f.detail}
        if len(files) <= 10_000 else {},
    }
    atomic_write_bytes(tmp / "meta.json", json.dumps(meta, indent=1).encode())
    _publish(tmp, out)
    cache.remove()
    return meta


def summary_table(meta: dict) -> str:
    """The end-of-run table: files seen/used, windows per split, and every skip reason with its count."""
    c = meta["counts"]
    lines = [f"{'files seen':<44}{c['files_seen']:>10}", f"{'files used':<44}{c['files_used']:>10}"]
    lines += [f"  skipped: {reason:<34}{n:>10}" for reason, n in c["skipped"].items()]
    lines += [f"{'windows found':<44}{c['windows_found']:>10}",
              f"{'duplicate windows removed':<44}{c['duplicates_removed']:>10}",
              f"{'train windows':<44}{c['train']:>10}  ({c['files_train']} files)",
              f"{'valid windows':<44}{c['valid']:>10}  ({c['files_valid']} files)"]
    if c.get("meters"):
        lines.append(f"{'bars by meter':<44}" + ", ".join(f"{m} {n}" for m, n in c["meters"]["bars"].items()))
    return "\n".join(lines)
