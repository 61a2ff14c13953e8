"""Music statistics per piece and per set, and how far a generated set lies from a reference set.

Per piece (melodic = every non-drum track, pooled):

- ``notes_per_bar``: melodic note onsets per bar (mean over the piece's bars),
- ``pitch_class_entropy``: entropy in bits of the melodic pitch-class histogram (0 .. log2 12 = 3.585),
- ``pitch_range``: highest minus lowest melodic pitch, in semitones,
- ``empty_bar_rate``: fraction of bars where no track has an onset,
- ``drum_consistency``: mean Jaccard similarity of the (step, drum class) hit sets of consecutive bars, over
  the pairs where either bar has a hit (1 = the same pattern every bar). NaN without a drum track or hits.

A statistic that is undefined for a piece (no melodic notes, no drums) is NaN and left out of the set figures.
The distance of two sets for a statistic is the overlap of their histograms on shared bins (1 = identical
distributions, 0 = disjoint), plus both means and standard deviations.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from tqdm import tqdm

from schmubert.evaluation.selfsim import grid_tracks
from schmubert.tokens import NUM_DRUM_CLASSES, STEPS_PER_BAR, Track, tokens_to_notes

STATISTICS = ("notes_per_bar", "pitch_class_entropy", "pitch_range", "empty_bar_rate", "drum_consistency")
HISTOGRAM_BINS = 30


def entropy_bits(counts: np.ndarray) -> float:
    """Shannon entropy (bits) of a histogram; NaN for an empty one."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    if total == 0:
        return float("nan")
    p = counts[counts > 0] / total
    return float(-(p * np.log2(p)).sum())


def drum_consistency(row: np.ndarray) -> float:
    """Mean Jaccard similarity of consecutive bars' drum hit sets of one drum row ``(steps,)``."""
    bars = len(row) // STEPS_PER_BAR
    if bars < 2:  # no pair of consecutive bars
        return float("nan")
    row = np.asarray(row[: bars * STEPS_PER_BAR], dtype=np.int64)
    row = np.where(row < 2**NUM_DRUM_CLASSES, row, 0)  # masks are silence
    hits = ((row[:, None] >> np.arange(NUM_DRUM_CLASSES)) & 1).astype(bool).reshape(bars, -1)  # [bars, 16*9]
    inter = (hits[:-1] & hits[1:]).sum(1)
    union = (hits[:-1] | hits[1:]).sum(1)
    used = union > 0
    return float((inter[used] / union[used]).mean()) if used.any() else float("nan")


def piece_statistics(grid: np.ndarray, tracks: str | Sequence[Track] | None = None) -> dict[str, float]:
    """The statistics of one grid ``(steps, K)`` (see the module docstring)."""
    grid = np.asarray(grid)
    track_list = grid_tracks(grid, tracks)
    bars = max(1, len(grid) // STEPS_PER_BAR)
    notes = tokens_to_notes(grid, track_list)
    melodic = [n for n, tr in zip(notes, track_list, strict=True) if not tr.is_drum]
    mel = np.concatenate(melodic) if melodic else np.zeros((0, 3), dtype=np.int64)
    onset_bars = np.concatenate([n[:, 0] // STEPS_PER_BAR for n in notes]) if notes else np.zeros(0, int)
    drum_rows = [grid[:, k] for k, tr in enumerate(track_list) if tr.is_drum]
    return {
        "notes_per_bar": len(mel) / bars,
        "pitch_class_entropy": entropy_bits(np.bincount(mel[:, 2] % 12, minlength=12)),
        "pitch_range": float(np.ptp(mel[:, 2])) if len(mel) else float("nan"),
        "empty_bar_rate": 1.0 - len(np.unique(onset_bars[onset_bars < bars])) / bars,
        "drum_consistency": drum_consistency(drum_rows[0]) if drum_rows else float("nan"),
    }


def set_statistics(pieces: Iterable[np.ndarray], tracks: str | Sequence[Track] | None = None,
                   progress: bool = False) -> dict[str, np.ndarray]:
    """Per-piece statistics of a set: ``{name: float array [N]}`` (NaN where undefined)."""
    rows = [piece_statistics(g, tracks) for g in tqdm(pieces, desc="statistics", disable=not progress,
                                                      leave=False)]
    return {name: np.array([r[name] for r in rows], dtype=np.float64) for name in STATISTICS}


def histogram_overlap(a: np.ndarray, b: np.ndarray, bins: int = HISTOGRAM_BINS) -> float:
    """Overlap (sum of bin-wise minima) of the normalized histograms of ``a`` and ``b`` on shared bins."""
    a, b = a[~np.isnan(a)], b[~np.isnan(b)]
    if len(a) == 0 or len(b) == 0:
        return float("nan")
    lo, hi = min(a.min(), b.min()), max(a.max(), b.max())
    edges = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
    ha = np.histogram(a, edges)[0] / len(a)
    hb = np.histogram(b, edges)[0] / len(b)
    return float(np.minimum(ha, hb).sum())


def _summary(values: np.ndarray) -> dict[str, float]:
    ok = values[~np.isnan(values)]
    return {"mean": float(ok.mean()) if len(ok) else float("nan"),
            "std": float(ok.std()) if len(ok) else float("nan"), "defined": int(len(ok))}


def compare_statistics(generated: dict[str, np.ndarray], reference: dict[str, np.ndarray],
                       bins: int = HISTOGRAM_BINS) -> dict[str, dict[str, float]]:
    """Per statistic: generated and reference mean/std/defined counts and the histogram overlap."""
    out = {}
    for name in STATISTICS:
        gen, ref = _summary(generated[name]), _summary(reference[name])
        out[name] = {**{f"{k}_gen": v for k, v in gen.items()}, **{f"{k}_ref": v for k, v in ref.items()},
                     "overlap": histogram_overlap(generated[name], reference[name], bins)}
    return out
