"""Framewise self-similarity (Mittal et al. 2021; thesis 4.7; spec section 5).

A piece's notes are put into the bar of their onset; frames are 4 bars wide with a 2-bar hop. Each frame
gets a Gaussian for the pitches and one for the durations (in 16th steps) of its notes: mean and standard
deviation (population, ddof=0) + 1e-6; a frame without notes is N(1, 1e-6). The overlapping area (OA) of
consecutive frames' Gaussians is averaged over the piece, separately for pitch and duration. Over a set of
pieces, the mean and variance (ddof=0) of those per-piece values are compared with a reference set:

    Consistency = max(0, 1 - |mean_gen - mean_ref| / mean_ref)
    Variance    = max(0, 1 - |var_gen - var_ref| / var_ref)

These follow the original implementation (``utils/eval_utils.py`` of the thesis repository):

- Bars are counted up to the end of the last note, ``last_end // 16 + 1``, not from the grid's length, and
  every full frame is used: ``(bars - 4) // 2 + 1`` frames. A 64-bar piece whose last note ends on the final
  barline (step 1024) has 65 bars and 31 frames, as does one ending inside bar 63; a piece that ends at bar 40
  has 19 frames, however long its grid. Trailing silence adds no frames.
- A piece without any note scores overlap 0 for pitch and duration and stays in the mean and variance
  (``silent="zero"``), so a model that emits silence is penalised. ``silent="drop"`` instead leaves such
  pieces out (this package's earlier behaviour, not the original's); either way they are counted.
- A piece with notes but fewer than two frames (its notes end before bar 6) has no adjacent frames; the
  original's code returns NaN for it, which turns the whole set's result into NaN. Here it follows the same
  rule as a silent piece (0, or left out with ``silent="drop"``) and is counted separately.
- Drums are pooled with the melodic tracks as 1-step notes at their representative pitch (the original's
  choice), or excluded (``drums="exclude"``).

Everything is vectorized over pieces and frames: notes are decoded per piece with :mod:`schmubert.tokens`, the
frame statistics are then one ``bincount`` over (piece, frame) and the OA one array expression.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from tqdm import tqdm

from schmubert.tokens import STEPS_PER_BAR, Track, get_tracks, tokens_to_notes

DrumMode = Literal["include", "exclude"]
SilentMode = Literal["zero", "drop"]
FEATURES = ("pitch", "duration")
FRAME_BARS = 4
HOP_BARS = 2
STD_EPS = 1e-6
EMPTY_MEAN = 1.0


def _ndtr(x: np.ndarray) -> np.ndarray:
    """Standard normal CDF, vectorized (float64)."""
    return torch.special.ndtr(torch.from_numpy(np.asarray(x, dtype=np.float64))).numpy()


def overlap_area(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> np.ndarray:
    """Overlapping area of N(mu1, sigma1^2) and N(mu2, sigma2^2), elementwise, exact closed form.

    The pdfs intersect where a quadratic vanishes; the OA is 1 minus the CDF differences at the (up to two)
    intersection points; equal variances have one intersection, the midpoint. Same value as
    :meth:`statistics.NormalDist.overlap`. Inputs broadcast; ``sigma > 0``.
    """
    mu1, s1, mu2, s2 = np.broadcast_arrays(*(np.asarray(a, np.float64) for a in (mu1, sigma1, mu2, sigma2)))
    # order so that X has the smaller sigma (ties: smaller mean), as NormalDist does
    swap = (s2 < s1) | ((s2 == s1) & (mu2 < mu1))
    mx, sx = np.where(swap, mu2, mu1), np.where(swap, s2, s1)
    my, sy = np.where(swap, mu1, mu2), np.where(swap, s1, s2)
    vx, vy = sx * sx, sy * sy
    dv, dm = vy - vx, np.abs(my - mx)
    # nearly equal variances: the equal-variance form (error O(dv/v) < 1e-9), avoids cancellation in the roots
    equal = np.abs(dv) <= 1e-9 * (vx + vy)
    oa_equal = 1.0 - (2.0 * _ndtr(dm / (2.0 * sx)) - 1.0)  # 1 - erf(dm / (2 sqrt2 sx))
    safe_dv = np.where(equal, 1.0, dv)
    a = mx * vy - my * vx
    b = sx * sy * np.sqrt(dm * dm + dv * np.log(vy / vx))
    x1, x2 = (a + b) / safe_dv, (a - b) / safe_dv

    def cdf_gap(x: np.ndarray) -> np.ndarray:
        return np.abs(_ndtr((x - my) / sy) - _ndtr((x - mx) / sx))

    oa_unequal = 1.0 - (cdf_gap(x1) + cdf_gap(x2))
    return np.clip(np.where(equal, oa_equal, oa_unequal), 0.0, 1.0)


def num_frames(last_end: int) -> int:
    """Full 4-bar frames at a 2-bar hop of a piece whose last note ends at step ``last_end`` (0: no notes).

    The original's rule: ``last_end // 16 + 1`` bars, ``(bars - 4) // 2 + 1`` frames (31 for a piece that
    ends anywhere in bar 63 or on its closing barline; 19 for one ending at bar 40; 0 if shorter than a frame).
    """
    if last_end <= 0:
        return 0
    bars = int(last_end) // STEPS_PER_BAR + 1
    return max(0, (bars - FRAME_BARS) // HOP_BARS + 1)


def grid_tracks(grid: np.ndarray, tracks: str | Sequence[Track] | None = None) -> tuple[Track, ...]:
    """The tracks of a grid ``(steps, K)``: given, or inferred from K (1 = melody, 3 = trio)."""
    if tracks is not None:
        return get_tracks(tracks)
    k = np.shape(grid)[1]
    if k not in (1, 3):
        raise ValueError(f"cannot infer the tracks of a grid with K={k}; pass tracks")
    return get_tracks("melody" if k == 1 else "trio")


def piece_notes(grid: np.ndarray, tracks: str | Sequence[Track] | None = None, drums: DrumMode = "include",
                use_tracks: Sequence[str] | None = None) -> np.ndarray:
    """Pooled notes of one grid ``(steps, K)`` as ``(N, 3)``: onset step, duration (steps), pitch.

    ``drums="exclude"`` leaves the drum track out; ``use_tracks`` (track names) keeps only those tracks.
    """
    grid = np.asarray(grid)
    track_list = grid_tracks(grid, tracks)
    per_track = tokens_to_notes(grid, track_list)
    kept = [n for n, tr in zip(per_track, track_list, strict=True)
            if (drums == "include" or not tr.is_drum) and (use_tracks is None or tr.name in use_tracks)]
    notes = np.concatenate(kept) if kept else np.zeros((0, 3), dtype=np.int64)
    return np.stack([notes[:, 0], notes[:, 1] - notes[:, 0], notes[:, 2]], axis=1)


@dataclass
class FrameGaussians:
    """Per-frame Gaussians of a set of pieces; arrays ``[N, F, 2]`` (feature axis: pitch, duration)."""

    mean: np.ndarray
    std: np.ndarray
    frames: np.ndarray  # [N] number of frames of each piece (from its last note's end)
    notes: np.ndarray  # [N] number of notes of each piece


def frame_gaussians(pieces: Iterable[np.ndarray], tracks: str | Sequence[Track] | None = None,
                    drums: DrumMode = "include", use_tracks: Sequence[str] | None = None,
                    progress: bool = False) -> FrameGaussians:
    """Fit pitch and duration Gaussians to every frame of every piece (pieces may differ in length); a piece's
    frames run up to its last note's end (:func:`num_frames`)."""
    rows, frame_counts, note_counts = [], [], []
    for i, grid in enumerate(tqdm(pieces, desc="decoding", disable=not progress, leave=False)):
        notes = piece_notes(grid, tracks, drums, use_tracks)
        frame_counts.append(num_frames(int((notes[:, 0] + notes[:, 1]).max()) if len(notes) else 0))
        note_counts.append(len(notes))
        rows.append(np.concatenate([np.full((len(notes), 1), i), notes], axis=1))
    n, fmax = len(frame_counts), max(frame_counts, default=0)
    mean = np.full((n, fmax, 2), EMPTY_MEAN)
    std = np.full((n, fmax, 2), STD_EPS)
    if n and fmax:
        notes = np.concatenate(rows).astype(np.int64)  # [M, 4]: piece, onset, duration, pitch
        idx, values = _frame_members(notes, np.asarray(frame_counts), fmax)
        size = n * fmax
        count = np.bincount(idx, minlength=size)
        mu = _sums(idx, values, size) / np.maximum(count, 1)[:, None]
        # second pass over squared deviations: exactly 0 for a frame of equal values
        sd = np.sqrt(_sums(idx, (values - mu[idx]) ** 2, size) / np.maximum(count, 1)[:, None]) + STD_EPS
        filled = (count > 0)[:, None]
        mean = np.where(filled, mu, EMPTY_MEAN).reshape(n, fmax, 2)
        std = np.where(filled, sd, STD_EPS).reshape(n, fmax, 2)
    return FrameGaussians(mean, std, np.asarray(frame_counts), np.asarray(note_counts))


def _frame_members(notes: np.ndarray, frame_counts: np.ndarray, fmax: int) -> tuple[np.ndarray, np.ndarray]:
    """Each note once per frame containing its onset bar: flat (piece, frame) index ``[M']`` and its
    (pitch, duration) ``[M', 2]``. Bar b lies in frames b // hop - j for j = 0 .. width / hop - 1."""
    piece, bar = notes[:, 0], notes[:, 1] // STEPS_PER_BAR
    values = notes[:, [3, 2]].astype(np.float64)
    idx, vals = [], []
    for j in range(FRAME_BARS // HOP_BARS):
        frame = bar // HOP_BARS - j
        ok = (frame >= 0) & (frame < frame_counts[piece])
        idx.append(piece[ok] * fmax + frame[ok])
        vals.append(values[ok])
    return np.concatenate(idx), np.concatenate(vals)


def _sums(idx: np.ndarray, values: np.ndarray, size: int) -> np.ndarray:
    """Per-index sums of ``values [M, 2]``: ``[size, 2]``."""
    return np.stack([np.bincount(idx, values[:, f], minlength=size) for f in range(values.shape[1])], axis=1)


def piece_overlaps(gaussians: FrameGaussians, silent: SilentMode = "zero") -> np.ndarray:
    """Mean OA of consecutive frames per piece, ``[N, 2]`` (pitch, duration).

    A piece without two frames (no notes, or notes ending before bar 6) scores 0 (``silent="zero"``, the
    original's rule for silent pieces) or NaN (``silent="drop"``: left out of the set statistics).
    """
    if silent not in ("zero", "drop"):
        raise ValueError(f"silent must be 'zero' or 'drop', not {silent!r}")
    m, s = gaussians.mean, gaussians.std
    fill = 0.0 if silent == "zero" else np.nan
    if m.shape[1] < 2:
        return np.full((len(m), 2), fill)
    oa = overlap_area(m[:, :-1], s[:, :-1], m[:, 1:], s[:, 1:])  # [N, F-1, 2]
    pair_ok = np.arange(m.shape[1] - 1)[None, :] < (gaussians.frames - 1)[:, None]  # [N, F-1]
    pairs = pair_ok.sum(1)
    per_piece = (oa * pair_ok[..., None]).sum(1) / np.maximum(pairs, 1)[:, None]
    per_piece[pairs == 0] = fill  # also every piece without notes: it has no frames
    return per_piece


def overlaps(pieces: Iterable[np.ndarray], tracks: str | Sequence[Track] | None = None,
             drums: DrumMode = "include", use_tracks: Sequence[str] | None = None, silent: SilentMode = "zero",
             progress: bool = False) -> np.ndarray:
    """Per-piece mean OA ``[N, 2]`` (pitch, duration) of a set of grids; pieces without notes (or too short for
    two frames) score 0, or NaN with ``silent="drop"`` (see :func:`piece_overlaps`)."""
    return piece_overlaps(frame_gaussians(pieces, tracks, drums, use_tracks, progress), silent)


def relative_similarity(value: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """max(0, 1 - |value - reference| / reference): the form of both Consistency and Variance."""
    value, reference = np.asarray(value, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        sim = 1.0 - np.abs(value - reference) / reference
    sim = np.where(reference > 0, sim, np.where(value == reference, 1.0, 0.0))
    return np.maximum(0.0, sim)


def consistency_variance(generated: np.ndarray, reference: np.ndarray) -> dict[str, dict[str, float]]:
    """Consistency and Variance of per-piece OAs ``[N, 2]`` against a reference ``[M, 2]`` (NaN rows dropped).

    Returns ``{"pitch": {"consistency", "variance", "mean_gen", "var_gen", "mean_ref", "var_ref"}, "duration":
    {...}}``.
    """
    gen = generated[~np.isnan(generated).any(1)]
    ref = reference[~np.isnan(reference).any(1)]
    if len(gen) == 0 or len(ref) == 0:
        raise ValueError("self-similarity needs at least one scored piece in each set (with silent='drop', "
                         "pieces without notes or shorter than two frames are left out)")
    mg, vg, mr, vr = gen.mean(0), gen.var(0), ref.mean(0), ref.var(0)
    cons, var = relative_similarity(mg, mr), relative_similarity(vg, vr)
    return {
        feat: {"consistency": float(cons[f]), "variance": float(var[f]), "mean_gen": float(mg[f]),
               "var_gen": float(vg[f]), "mean_ref": float(mr[f]), "var_ref": float(vr[f])}
        for f, feat in enumerate(FEATURES)
    }


def _draw(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of ``k`` pieces out of ``n``: all of them when ``k >= n``, else a random subset."""
    return np.arange(n) if k >= n else rng.choice(n, size=k, replace=False)


def evaluate_overlaps(generated: np.ndarray, reference: np.ndarray, num_evals: int = 1,
                      num_pieces: int = 1000, seed: int = 0) -> dict:
    """Repeat :func:`consistency_variance` ``num_evals`` times on ``num_pieces`` drawn from each set.

    A set with at most ``num_pieces`` pieces is used whole in every evaluation (so a set against itself scores
    exactly 1). Returns the per-feature mean of each quantity plus ``*_std`` (std over evaluations) and
    ``evaluations``.
    """
    rng = np.random.default_rng(seed)
    runs = [consistency_variance(generated[_draw(len(generated), num_pieces, rng)],
                                 reference[_draw(len(reference), num_pieces, rng)]) for _ in range(num_evals)]
    out: dict = {}
    for feat in FEATURES:
        out[feat] = {}
        for key in runs[0][feat]:
            vals = np.array([r[feat][key] for r in runs])
            out[feat][key] = float(vals.mean())
            out[feat][key + "_std"] = float(vals.std())
    out["evaluations"] = num_evals
    return out


def _undefined_counts(gaussians: FrameGaussians) -> tuple[int, int]:
    """(pieces without notes, pieces with notes but fewer than two frames)."""
    silent = gaussians.notes == 0
    return int(silent.sum()), int((~silent & (gaussians.frames < 2)).sum())


def selfsim(generated: Iterable[np.ndarray], reference: Iterable[np.ndarray],
            tracks: str | Sequence[Track] | None = None, drums: DrumMode = "include",
            use_tracks: Sequence[str] | None = None, silent: SilentMode = "zero", num_evals: int = 1,
            num_pieces: int = 1000, seed: int = 0, progress: bool = False) -> dict:
    """Consistency and Variance (pitch, duration) of a generated set against a reference set of grids.

    The result of :func:`evaluate_overlaps` plus ``pieces_gen``/``pieces_ref`` (pieces read),
    ``silent_gen``/``silent_ref`` (pieces without notes) and ``short_gen``/``short_ref`` (notes, but fewer
    than two frames); those score 0 (``silent="zero"``, the original's rule) or are left out (``"drop"``).
    """
    out: dict = {}
    per_set = {}
    for name, pieces in (("gen", generated), ("ref", reference)):
        gaussians = frame_gaussians(pieces, tracks, drums, use_tracks, progress)
        per_set[name] = piece_overlaps(gaussians, silent)
        out[f"pieces_{name}"] = len(per_set[name])
        out[f"silent_{name}"], out[f"short_{name}"] = _undefined_counts(gaussians)
    out = {**evaluate_overlaps(per_set["gen"], per_set["ref"], num_evals, num_pieces, seed), **out}
    out.update(drums=drums, silent=silent)
    return out
