"""Music statistics per piece and per set, and how close a generated set's distributions lie to a reference's.

Per piece (melodic = every non-drum track, pooled):

- ``notes_per_bar``: melodic note onsets per bar (mean over the piece's bars),
- ``pitch_class_entropy``: entropy in bits of the melodic pitch-class histogram (0 .. log2 12 = 3.585),
- ``pitch_range``: highest minus lowest melodic pitch, in semitones,
- ``empty_bar_rate``: fraction of bars where no track has an onset,
- ``drum_consistency``: mean Jaccard similarity of the (step, drum class) hit sets of consecutive bars, over
  the pairs where either bar has a hit (1 = the same pattern every bar). NaN without a drum track or hits.
- ``groove_consistency`` (MusPy's ``groove_consistency`` with a 16-step measure; Wu & Yang 2020): each bar's
  binary onset vector over its 16 steps, all tracks and drums pooled; 1 minus the mean Hamming distance of
  consecutive bars divided by 16. As in MusPy the bars run up to the end of the last note
  (``last_end // 16 + 1``, so a piece ending on its closing barline gets one empty bar more); NaN with fewer
  than two bars.
- ``scale_consistency`` (MusPy's ``scale_consistency``; Mogren 2016): the largest fraction of melodic notes
  whose pitch class lies in one major or natural-minor scale, over the 24 scales. NaN without melodic notes.
- ``notes_per_onset``: of the polyphonic instruments (several voices, ``schmubert.polyphony``), the mean number
  of notes an instrument starts at a step where it starts any (1 = single notes, 3 = triads). NaN without a
  polyphonic instrument or its notes.
- ``polyphony``: of the polyphonic instruments, the mean number of notes sounding at a step where any sounds.

The last two (:data:`VOICE_STATISTICS`) are computed only for sets with a polyphonic instrument, so the trio's
and the melody's figures and reports are as before.

A statistic that is undefined for a piece is NaN and left out of the set figures. Two sets are compared per
statistic by the overlap of their histograms (sum of the bin-wise minima of the normalized histograms; 1 =
identical distributions, 0 = disjoint). The bins are ``bins`` equal bins over the reference's range plus one
open bin below and one above it, so a generated value outside the reference's range never overlaps, and an
outlier cannot widen the bins. The summary is the mean overlap over the statistics defined in both sets.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from tqdm import tqdm

from schmubert.evaluation.selfsim import grid_tracks
from schmubert.tokens import NUM_DRUM_CLASSES, STEPS_PER_BAR, Track, instruments, tokens_to_notes

STATISTICS = ("notes_per_bar", "pitch_class_entropy", "pitch_range", "empty_bar_rate", "drum_consistency",
              "groove_consistency", "scale_consistency")
#: The statistics of sets with a polyphonic instrument, besides :data:`STATISTICS`.
VOICE_STATISTICS = ("notes_per_onset", "polyphony")
HISTOGRAM_BINS = 30
#: The 12 major then the 12 natural-minor scales as pitch-class masks ``[24, 12]`` (MusPy's ``_get_scale``).
_MAJOR = np.array([1, 0, 1, 0, 1, 1, 0, 1, 0, 1, 0, 1], dtype=bool)
_MINOR = np.array([1, 0, 1, 1, 0, 1, 0, 1, 1, 0, 1, 0], dtype=bool)
SCALES = np.stack([np.roll(mask, root) for mask in (_MAJOR, _MINOR) for root in range(12)])


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


def groove_consistency(notes: np.ndarray) -> float:
    """MusPy's groove consistency of notes ``(N, 3)`` (start step, end step, pitch), all tracks pooled, with a
    16-step measure: ``1 - sum_i hamming(G_i, G_i+1) / (16 (T - 1))`` over ``T = last_end // 16 + 1`` bars of
    binary onset vectors ``G``; NaN if ``T < 2``."""
    last_end = int(notes[:, 1].max()) if len(notes) else 0
    bars = last_end // STEPS_PER_BAR + 1
    if bars < 2:
        return float("nan")
    onsets = np.zeros(bars * STEPS_PER_BAR, dtype=bool)
    onsets[notes[:, 0]] = True
    patterns = onsets.reshape(bars, STEPS_PER_BAR)
    return float(1.0 - np.count_nonzero(patterns[:-1] != patterns[1:]) / (STEPS_PER_BAR * (bars - 1)))


def scale_consistency(pitches: np.ndarray) -> float:
    """MusPy's scale consistency of melodic pitches ``(N,)``: the largest in-scale fraction over the 24 major
    and natural-minor scales; NaN without notes."""
    if len(pitches) == 0:
        return float("nan")
    histogram = np.bincount(np.asarray(pitches) % 12, minlength=12)
    return float((SCALES @ histogram).max() / len(pitches))


def sounding_counts(notes: np.ndarray, steps: int, real: np.ndarray | None = None) -> np.ndarray:
    """``(steps,)`` how many of ``notes (N, 3)`` sound at each step (start <= step < end); 0 where ``real
    (steps,)`` is False (PAD)."""
    count = np.zeros(steps + 1, dtype=np.int64)
    np.add.at(count, np.minimum(notes[:, 0], steps), 1)
    np.add.at(count, np.minimum(notes[:, 1], steps), -1)
    played = np.cumsum(count)[:steps]
    return played if real is None else np.where(real, played, 0)


def voice_statistics(notes: Sequence[np.ndarray], tracks: Sequence[Track], steps: int) -> tuple[float, float]:
    """``(notes_per_onset, polyphony)`` of a piece's polyphonic instruments, pooled; NaN without their notes."""
    onsets_per_step, sounding = [], []
    for _, ks in instruments(tracks):
        if len(ks) < 2:
            continue
        inst = np.concatenate([notes[k] for k in ks])
        starts = np.bincount(inst[:, 0], minlength=steps)
        onsets_per_step.append(starts[starts > 0])
        played = sounding_counts(inst, steps)
        sounding.append(played[played > 0])
    on = np.concatenate(onsets_per_step) if onsets_per_step else np.zeros(0)
    sound = np.concatenate(sounding) if sounding else np.zeros(0)
    return (float(on.mean()) if len(on) else float("nan"), float(sound.mean()) if len(sound) else float("nan"))


def piece_statistics(grid: np.ndarray, tracks: str | Sequence[Track] | None = None) -> dict[str, float]:
    """The statistics of one grid ``(steps, K)`` (see the module docstring)."""
    grid = np.asarray(grid)
    track_list = grid_tracks(grid, tracks)
    bars = max(1, len(grid) // STEPS_PER_BAR)
    notes = tokens_to_notes(grid, track_list)
    melodic = [n for n, tr in zip(notes, track_list, strict=True) if not tr.is_drum]
    mel = np.concatenate(melodic) if melodic else np.zeros((0, 3), dtype=np.int64)
    every = np.concatenate(notes) if notes else np.zeros((0, 3), dtype=np.int64)
    onset_bars = every[:, 0] // STEPS_PER_BAR
    drum_rows = [grid[:, k] for k, tr in enumerate(track_list) if tr.is_drum]
    notes_per_onset, polyphony = voice_statistics(notes, track_list, len(grid))
    return {
        "notes_per_bar": len(mel) / bars,
        "pitch_class_entropy": entropy_bits(np.bincount(mel[:, 2] % 12, minlength=12)),
        "pitch_range": float(np.ptp(mel[:, 2])) if len(mel) else float("nan"),
        "empty_bar_rate": 1.0 - len(np.unique(onset_bars[onset_bars < bars])) / bars,
        "drum_consistency": drum_consistency(drum_rows[0]) if drum_rows else float("nan"),
        "groove_consistency": groove_consistency(every),
        "scale_consistency": scale_consistency(mel[:, 2]),
        "notes_per_onset": notes_per_onset,
        "polyphony": polyphony,
    }


def statistic_names(tracks: Sequence[Track]) -> tuple[str, ...]:
    """The statistics of a track set: :data:`STATISTICS`, and :data:`VOICE_STATISTICS` with a polyphonic
    instrument."""
    voiced = any(len(ks) > 1 for _, ks in instruments(tracks))
    return STATISTICS + VOICE_STATISTICS if voiced else STATISTICS


def set_statistics(pieces: Iterable[np.ndarray], tracks: str | Sequence[Track] | None = None,
                   progress: bool = False) -> dict[str, np.ndarray]:
    """Per-piece statistics of a set: ``{name: float array [N]}`` (NaN where undefined)."""
    rows, names = [], STATISTICS
    for grid in tqdm(pieces, desc="statistics", disable=not progress, leave=False):
        names = statistic_names(grid_tracks(grid, tracks))
        rows.append(piece_statistics(grid, tracks))
    return {name: np.array([r[name] for r in rows], dtype=np.float64) for name in names}


def _histogram(values: np.ndarray, lo: float, hi: float, bins: int) -> np.ndarray:
    """Normalized counts ``[bins + 3]``: below ``lo``, ``bins`` equal bins over [lo, hi] (hi included), above,
    and undefined (NaN: e.g. a piece without notes)."""
    defined = ~np.isnan(values)
    inner = np.clip(np.floor((np.where(defined, values, lo) - lo) / (hi - lo) * bins), 0, bins - 1)
    index = np.where(values < lo, 0, np.where(values > hi, bins + 1, inner.astype(np.int64) + 1))
    index = np.where(defined, index, bins + 2)
    return np.bincount(index, minlength=bins + 3) / len(values)


def histogram_overlap(generated: np.ndarray, reference: np.ndarray, bins: int = HISTOGRAM_BINS) -> float:
    """Overlap (sum of bin-wise minima) of the normalized histograms of two samples, on ``bins`` equal bins over
    the reference's range, an open bin on either side and one for undefined values, so pieces where a statistic
    the reference has is undefined (silence, no drums) lower the overlap instead of leaving the comparison.
    NaN only where the reference never defines the statistic (drum consistency of melodies) or a set is empty."""
    ref = reference[~np.isnan(reference)]
    if len(ref) == 0 or len(generated) == 0:
        return float("nan")
    lo, hi = float(ref.min()), float(ref.max())
    if hi <= lo:  # a constant reference: one bin around its value
        lo, hi, bins = lo - 0.5, hi + 0.5, 1
    return float(np.minimum(_histogram(generated, lo, hi, bins), _histogram(reference, lo, hi, bins)).sum())


def value_summary(values: np.ndarray) -> dict[str, float]:
    """``mean``, ``std`` and the ``defined`` count of a statistic's values ``[N]`` (NaN left out)."""
    ok = values[~np.isnan(values)]
    return {"mean": float(ok.mean()) if len(ok) else float("nan"),
            "std": float(ok.std()) if len(ok) else float("nan"), "defined": int(len(ok))}


def compare_statistics(generated: dict[str, np.ndarray], reference: dict[str, np.ndarray],
                       bins: int = HISTOGRAM_BINS) -> dict[str, dict[str, float]]:
    """Per statistic: generated and reference mean/std/defined counts and the histogram overlap."""
    out = {}
    for name in (n for n in (*STATISTICS, *VOICE_STATISTICS) if n in generated and n in reference):
        gen, ref = value_summary(generated[name]), value_summary(reference[name])
        out[name] = {**{f"{k}_gen": v for k, v in gen.items()}, **{f"{k}_ref": v for k, v in ref.items()},
                     "overlap": histogram_overlap(generated[name], reference[name], bins)}
    return out


def summary_overlap(per_statistic: dict[str, float]) -> float:
    """The mean of the defined per-statistic overlaps (NaN if none is defined)."""
    values = [v for v in per_statistic.values() if not np.isnan(v)]
    return float(np.mean(values)) if values else float("nan")


def compare_sets(generated: Iterable[np.ndarray], reference: Iterable[np.ndarray],
                 tracks: str | Sequence[Track] | None = None, bins: int = HISTOGRAM_BINS,
                 progress: bool = False) -> dict:
    """How close a generated set's music statistics lie to a reference set's.

    ``generated`` and ``reference`` are iterables of token grids ``(steps, K)`` (e.g. arrays ``[N, steps, K]``);
    ``tracks`` defaults from K (1 = melody, 3 = trio). Returns ``{"overlaps": {statistic: overlap in [0, 1],
    NaN where undefined in either set}, "summary": mean of the defined overlaps, "statistics": {statistic:
    {mean_gen, std_gen, defined_gen, mean_ref, std_ref, defined_ref, overlap}}, "pieces_gen", "pieces_ref"}``.
    """
    gen = set_statistics(generated, tracks, progress)
    ref = set_statistics(reference, tracks, progress)
    per_statistic = compare_statistics(gen, ref, bins)
    per_overlap = {name: r["overlap"] for name, r in per_statistic.items()}
    return {"overlaps": per_overlap, "summary": summary_overlap(per_overlap), "statistics": per_statistic,
            "pieces_gen": len(gen[STATISTICS[0]]), "pieces_ref": len(ref[STATISTICS[0]])}
