"""The ceiling of every evaluation measure: real data against real data.

    python experiments/ceiling.py [--corpus ../shared/corpus] [--json]

Splits each 64-bar Lakh folder of the corpus (``lakh-melody-64bar``, ``lakh-trio-64bar``; files in sorted
order) into two halves and scores the even-numbered files (as "generated") against the odd-numbered ones (as
the reference; Variance divides by the reference's variance, so the direction matters a little): framewise
self-similarity (``selfsim``, one evaluation on the whole halves, drums pooled, the original's rules) and the
music statistics' overlaps and their summary (``compare_sets``). A model's figures are read against these: two
samples of real data do not score 1 on the metrics that compare distributions. Prints a table (or JSON).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from schmubert.evaluation import compare_sets, load_pieces, selfsim

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"
SETS = (("lakh-melody-64bar", "melody"), ("lakh-trio-64bar", "trio"))


def ceiling(folder: Path, tracks: str, workers: int = 2) -> dict:
    pieces = list(load_pieces(folder, tracks, 1024, workers=workers))
    generated, reference = pieces[::2], pieces[1::2]
    sim = selfsim(generated, reference, num_evals=1, num_pieces=len(pieces))
    stats = compare_sets(generated, reference)
    return {"pieces": len(pieces),
            "selfsim": {f: {k: sim[f][k] for k in ("consistency", "variance", "mean_gen", "mean_ref", "var_gen",
                                                  "var_ref")} for f in ("pitch", "duration")},
            "overlaps": stats["overlaps"], "summary": stats["summary"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=CORPUS, help="the corpus folder (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=2, help="processes reading MIDI files")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args()
    start = time.perf_counter()
    results = {name: ceiling(args.corpus / name, tracks, args.workers) for name, tracks in SETS}
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for name, r in results.items():
        print(f"{name} ({r['pieces']} pieces, even-numbered files against odd-numbered)")
        for feat, s in r["selfsim"].items():
            print(f"  selfsim {feat:9} consistency {s['consistency']:.3f}  variance {s['variance']:.3f}  "
                  f"mean OA {s['mean_gen']:.4f}/{s['mean_ref']:.4f}  var OA {s['var_gen']:.5f}/{s['var_ref']:.5f}")
        for stat, v in r["overlaps"].items():
            print(f"  overlap {stat:22} {'n/a' if v != v else f'{v:.3f}'}")
        print(f"  summary (mean overlap)         {r['summary']:.3f}")
    print(f"{time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
