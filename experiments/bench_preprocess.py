"""Preprocessing throughput on the spec-section-8 workload: the 12 multitrack songs + the first 200 POP909
files (212 files), trio and melody mode, 2 worker processes. Prints files/s and windows/s.

Reference (spec section 8): the original note-seq pipeline read these 212 files in about 4 s with 2 workers
(~52 files/s) and found 15 trio windows (1-bar hop, first 5 windows per file); the target is >= 104 files/s.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from preprocessing import PreprocessConfig, run

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "corpus"
ORIGINAL_FILES_PER_S = 52.0


def workload(folder: Path) -> int:
    files = sorted((CORPUS / "multitrack-songs").glob("*.mid"))
    files += sorted((CORPUS / "pop909").glob("*.mid"))[:200]
    for f in files:
        shutil.copy(f, folder / f.name)
    return len(files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default: 2)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per mode; the best is shown")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in"
        src.mkdir()
        n = workload(src)
        print(f"{n} files, {args.workers} workers, best of {args.repeats}")
        for tracks, hop in (("trio", 8), ("trio", 1), ("melody", 8)):
            best, meta = float("inf"), None
            for r in range(args.repeats):
                cfg = PreprocessConfig(tracks=tracks, input=src, output=Path(tmp) / f"{tracks}{hop}-{r}",
                                       workers=args.workers, hop_bars=hop, progress=False)
                t0 = time.perf_counter()
                meta = run(cfg)
                best = min(best, time.perf_counter() - t0)
            c = meta["counts"]
            windows = c["train"] + c["valid"]
            print(f"{tracks:<7} hop {hop:>2}: {best:6.2f} s  {n / best:7.1f} files/s  "
                  f"{windows / best:8.1f} windows/s  ({windows} windows from {c['files_used']} files, "
                  f"{c['duplicates_removed']} duplicates removed)  x{n / best / ORIGINAL_FILES_PER_S:.1f} "
                  f"vs the original's {ORIGINAL_FILES_PER_S:.0f} files/s")


if __name__ == "__main__":
    main()
