"""Benchmark: framewise self-similarity of 1000 64-bar trios against 1000 (the thesis' set size).

    python experiments/bench_selfsim.py [--pieces 1000] [--workers 2]

Reads ``../shared/corpus/lakh-trio-64bar`` (1000 trios) once, then times ``selfsim`` (tokens -> notes ->
frame Gaussians -> overlaps -> consistency/variance) of a perturbed copy (each piece's bars rotated randomly
and transposed) against the originals, and the cost of reading the MIDI files. Prints seconds and
pieces per second; all figures are from this one run.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from schmubert.evaluation import load_pieces, selfsim
from schmubert.tokens import STEPS_PER_BAR

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus" / "lakh-trio-64bar"


def perturb(grids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rotate each piece by a random number of bars and transpose its melodic tracks by -2..2 semitones."""
    out = grids.copy()
    for g in out:
        g[:] = np.roll(g, STEPS_PER_BAR * int(rng.integers(0, 64)), axis=0)
        shift = int(rng.integers(-2, 3))
        melodic = g[:, :2]
        on = (melodic >= 2 + 2) & (melodic < 90 - 2)
        melodic[on] += shift
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pieces", type=int, default=1000, help="pieces per set (default: 1000)")
    parser.add_argument("--workers", type=int, default=2, help="processes reading MIDI (default: 2)")
    parser.add_argument("--corpus", type=Path, default=CORPUS, help="folder of 64-bar trio MIDI files")
    args = parser.parse_args()

    t0 = time.perf_counter()
    pieces = load_pieces(args.corpus, "trio", 1024, workers=args.workers, progress=True)
    read_s = time.perf_counter() - t0
    ref = np.stack(pieces.subset(range(min(args.pieces, len(pieces)))))
    gen = perturb(ref, np.random.default_rng(0))
    n = len(ref)

    t0 = time.perf_counter()
    result = selfsim(gen, ref, num_evals=20, num_pieces=n)
    metric_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    self_result = selfsim(ref, ref, num_evals=1, num_pieces=n)
    self_s = time.perf_counter() - t0

    print(f"MIDI reading: {len(pieces)} files in {read_s:.2f} s ({len(pieces) / read_s:.0f} files/s, "
          f"{args.workers} workers)")
    print(f"selfsim {n} vs {n} trios from tokens (20 evaluations): {metric_s:.2f} s "
          f"({2 * n / metric_s:.0f} pieces/s)")
    print(f"selfsim of the set against itself: {self_s:.2f} s; consistency/variance "
          f"{self_result['pitch']['consistency']:.3f}/{self_result['pitch']['variance']:.3f}")
    print(f"end to end from MIDI: {read_s * 2 + metric_s:.1f} s (two sets read)")
    for feat in ("pitch", "duration"):
        r = result[feat]
        print(f"perturbed vs original, {feat}: consistency {r['consistency']:.3f}, "
              f"variance {r['variance']:.3f} (mean OA {r['mean_gen']:.4f} vs {r['mean_ref']:.4f}, "
              f"var {r['var_gen']:.5f} vs {r['var_ref']:.5f})")


if __name__ == "__main__":
    main()
