"""How one instrument of a voice-set grid accompanies the melody: per-piece statistics, and a generated set's
against a reference set's (issue 43, item 3).

A grid is ``(steps, K)`` tokens of a track set with polyphonic instruments (default ``pop909``: melody, bridge of 4
voices, piano of 6); ``velocity`` beside it is ``(steps, K)`` velocity bins (``tokens.velocity_to_bin``: 1..8,
``NO_ONSET`` where nothing starts). An instrument's notes are the notes of all its voice columns pooled
(``tokens.tokens_to_notes``, as ``stats.voice_statistics`` pools them). PAD steps (``schmubert.meter``: the steps of
a bar's slot past its end) are absent: no note starts there, nothing sounds there (a note held over them sounds on
at the next real step), and a bar is a bar of the grid's slot layout (a 5/4 bar's two slots are one bar).

Per piece, of the instrument (``accompaniment_statistics``; NaN where undefined, e.g. an instrument without notes):

- ``notes_per_onset``: the mean number of notes the instrument starts at a step where it starts any;
- ``polyphony``: the mean number of its notes sounding at a step where any sounds; ``polyphony_1`` ..
  ``polyphony_6+``: the share of those sounding steps with 1, 2, 3, 4, 5, 6 or more notes
  (:func:`polyphony_distribution`);
- ``pitch_class_entropy``: entropy in bits of the pitch-class histogram of its notes (``stats.entropy_bits``);
- ``scale_consistency``: the largest share of its notes in one major or natural-minor scale
  (``stats.scale_consistency``);
- ``onsets_per_bar``: the steps where it starts a note, per bar;
- ``velocity_mean``, ``velocity_spread``: mean and standard deviation (population) of the MIDI velocities of its
  notes (each bin at its centre, ``tokens.bin_to_velocity``); NaN without velocity, or where no note has a bin;

and its agreement with the melody (:func:`key_agreement`, :func:`chord_tone_agreement`):

- ``key_agreement``: the share of the instrument's notes whose pitch class lies in the scale of the melody's key,
  the key estimated from the melody alone by the project's own estimator (``attributes.estimate_key``:
  Krumhansl-Kessler profiles against the melody's duration-weighted pitch-class histogram; a major key's scale is
  its major scale, a minor key's its natural minor, ``stats.SCALES``);
- ``chord_tone_agreement``: on the strong beats (steps 0 and 8 of each 16-step slot, beats 1 and 3 of a 4/4 bar;
  real steps only) where both the melody and the instrument sound (a note started there or held), the share of
  the melody's sounding pitch classes that are among the pitch classes the instrument sounds at that step.

A set (:func:`set_accompaniment_statistics`) is per statistic a float array ``[N]``; two sets are compared
(:func:`compare_accompaniment`) per statistic by the overlap of their histograms (``stats.histogram_overlap``:
1 = the same distribution, 0 = disjoint) and by their means.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch

from schmubert.attributes import KEY_NULL, estimate_key
from schmubert.evaluation.stats import (
    HISTOGRAM_BINS,
    SCALES,
    entropy_bits,
    histogram_overlap,
    scale_consistency,
    sounding_counts,
    summary_overlap,
    value_summary,
)
from schmubert.meter import layout_of
from schmubert.tokens import (
    NO_ONSET,
    STEPS_PER_BAR,
    Track,
    bin_to_velocity,
    get_tracks,
    instruments,
    pad_mask,
    tokens_to_notes,
)

#: Pitch classes per octave.
PITCH_CLASSES = 12
#: Polyphony levels told apart by :func:`polyphony_distribution`: 1, 2, ..., and this many notes or more.
POLYPHONY_LEVELS = 6
#: The strong beats of a 16-step slot: beats 1 and 3 of a 4/4 bar (steps 0 and 8).
STRONG_BEATS = (0, STEPS_PER_BAR // 2)
#: The names of the polyphony shares: ``polyphony_1`` .. ``polyphony_6+``.
POLYPHONY_SHARES = tuple(f"polyphony_{n}" for n in range(1, POLYPHONY_LEVELS)) + (f"polyphony_{POLYPHONY_LEVELS}+",)
#: The statistics of :func:`accompaniment_statistics`, in order.
ACCOMPANIMENT_STATISTICS = ("notes_per_onset", "polyphony", *POLYPHONY_SHARES, "pitch_class_entropy",
                            "scale_consistency", "onsets_per_bar", "velocity_mean", "velocity_spread",
                            "key_agreement", "chord_tone_agreement")
#: The statistics read from velocity bins.
VELOCITY_STATISTICS = ("velocity_mean", "velocity_spread")
NAN = float("nan")


# --- an instrument's notes --------------------------------------------------------------------------------------


def instrument_columns(tracks: str | Sequence[Track], name: str) -> list[int]:
    """The columns of instrument ``name`` of a set (all its voices); ValueError naming the set's instruments."""
    columns = dict(instruments(tracks))
    if name not in columns:
        raise ValueError(f"no instrument {name!r} in the track set (it has {', '.join(columns)})")
    return columns[name]


def instrument_notes(grid: np.ndarray, tracks: str | Sequence[Track], name: str,
                     velocity: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The notes of instrument ``name`` of a grid ``(steps, K)``, its voices pooled: ``(N, 3)`` (start step, end
    step, pitch) and their velocity bins ``(N,)`` (``NO_ONSET`` without ``velocity (steps, K)``). PAD and mask ids
    start no note."""
    track_list = get_tracks(tracks)
    columns = instrument_columns(track_list, name)
    per_column = tokens_to_notes(np.asarray(grid), track_list)
    notes = np.concatenate([per_column[k] for k in columns]).reshape(-1, 3)
    bins = (np.concatenate([np.asarray(velocity)[per_column[k][:, 0], k] for k in columns]).astype(np.int64)
            if velocity is not None else np.full(len(notes), NO_ONSET, dtype=np.int64))
    return notes, bins


def real_steps(grid: np.ndarray, tracks: str | Sequence[Track]) -> np.ndarray:
    """``(steps,)`` bool: the steps of a grid ``(steps, K)`` that are not PAD."""
    return ~pad_mask(np.asarray(grid), tracks).any(axis=1)


def bar_count(grid: np.ndarray, tracks: str | Sequence[Track]) -> int:
    """The bars of a grid ``(steps, K)`` by its slot layout (a 5/4 bar's two slots are one), at least 1."""
    return max(1, len(layout_of(np.asarray(grid), tracks).bars()))


def pitch_class_roll(notes: np.ndarray, steps: int, real: np.ndarray | None = None) -> np.ndarray:
    """``(steps, 12)`` bool: the pitch classes of ``notes (N, 3)`` sounding at each step; none where ``real
    (steps,)`` is False (PAD)."""
    count = np.zeros((steps + 1, PITCH_CLASSES), dtype=np.int64)
    pcs = notes[:, 2] % PITCH_CLASSES
    np.add.at(count, (np.minimum(notes[:, 0], steps), pcs), 1)
    np.add.at(count, (np.minimum(notes[:, 1], steps), pcs), -1)
    roll = np.cumsum(count, axis=0)[:steps] > 0
    return roll if real is None else roll & np.asarray(real)[:, None]


# --- statistics of one instrument ---------------------------------------------------------------------------------


def notes_per_onset(notes: np.ndarray, steps: int) -> float:
    """The mean number of ``notes (N, 3)`` starting at a step where any starts; NaN without notes."""
    starts = np.bincount(notes[:, 0], minlength=steps)
    return float(starts[starts > 0].mean()) if len(notes) else NAN


def polyphony_distribution(notes: np.ndarray, steps: int, real: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """Of the (real) steps where any of ``notes (N, 3)`` sounds: the share ``(POLYPHONY_LEVELS,)`` with 1, 2, ...,
    5, 6 or more sounding notes, and the mean number sounding (``polyphony``). NaN without a sounding step."""
    played = sounding_counts(notes, steps, real)
    played = played[played > 0]
    if not len(played):
        return np.full(POLYPHONY_LEVELS, NAN), NAN
    levels = np.minimum(played, POLYPHONY_LEVELS) - 1
    return np.bincount(levels, minlength=POLYPHONY_LEVELS) / len(played), float(played.mean())


def pitch_class_entropy(notes: np.ndarray) -> float:
    """Entropy in bits of the pitch-class histogram of ``notes (N, 3)`` (0 .. log2 12); NaN without notes."""
    return entropy_bits(np.bincount(notes[:, 2] % PITCH_CLASSES, minlength=PITCH_CLASSES))


def onsets_per_bar(notes: np.ndarray, bars: int) -> float:
    """The steps where any of ``notes (N, 3)`` starts, per bar (0 without notes)."""
    return len(np.unique(notes[:, 0])) / max(bars, 1)


def velocity_figures(bins: np.ndarray) -> tuple[float, float]:
    """``(mean, standard deviation)`` of the MIDI velocities of the notes' velocity bins ``(N,)`` (each bin at its
    centre, ``tokens.bin_to_velocity``; ``NO_ONSET`` bins left out); NaN where no note has a bin."""
    bins = np.asarray(bins)
    known = bins[bins != NO_ONSET]
    if not len(known):
        return NAN, NAN
    velocities = bin_to_velocity(known).astype(np.float64)
    return float(velocities.mean()), float(velocities.std())


# --- agreement with the melody -----------------------------------------------------------------------------------


def melody_key(grid: np.ndarray, tracks: str | Sequence[Track], melody: str = "melody") -> int:
    """The key id (``attributes``: 0..11 major on C..B, 12..23 minor; ``KEY_NULL`` without notes) that
    ``attributes.estimate_key`` (Krumhansl-Kessler on the duration-weighted pitch-class histogram) finds in the
    melody's columns of a grid ``(steps, K)`` alone."""
    track_list = get_tracks(tracks)
    columns = instrument_columns(track_list, melody)
    x0 = torch.as_tensor(np.asarray(grid)[:, columns].astype(np.int64))[None]  # [1, steps, melody columns]
    return int(estimate_key(x0, [track_list[k] for k in columns])[0])


def key_agreement(notes: np.ndarray, key: int) -> float:
    """The share of ``notes (N, 3)`` whose pitch class lies in the scale of ``key`` (its major or natural-minor
    scale, ``stats.SCALES[key]``); NaN without notes or with ``KEY_NULL``."""
    if not len(notes) or key == KEY_NULL:
        return NAN
    return float(SCALES[key][notes[:, 2] % PITCH_CLASSES].mean())


def strong_beats(steps: int, real: np.ndarray | None = None) -> np.ndarray:
    """``(steps,)`` bool: steps 0 and 8 of every 16-step slot (:data:`STRONG_BEATS`) that are real (not PAD)."""
    strong = np.isin(np.arange(steps) % STEPS_PER_BAR, STRONG_BEATS)
    return strong if real is None else strong & np.asarray(real)


def chord_tone_agreement(melody_notes: np.ndarray, notes: np.ndarray, steps: int,
                         real: np.ndarray | None = None) -> float:
    """On the strong beats (:func:`strong_beats`) where both ``melody_notes`` and ``notes`` (each ``(N, 3)``) sound,
    the share of the melody's sounding pitch classes that are among the pitch classes ``notes`` sound there:
    ``sum_s |M_s & A_s| / sum_s |M_s|`` over those steps ``s``, with ``M_s`` / ``A_s`` the sets of pitch classes
    the melody / the instrument sounds at ``s`` (started there or held). NaN where there is no such step."""
    mel = pitch_class_roll(melody_notes, steps, real)
    acc = pitch_class_roll(notes, steps, real)
    both = strong_beats(steps, real) & mel.any(axis=1) & acc.any(axis=1)
    total = int(mel[both].sum())
    return int((mel[both] & acc[both]).sum()) / total if total else NAN


# --- a piece, a set, and two sets -------------------------------------------------------------------------------


def accompaniment_statistics(grid: np.ndarray, velocity: np.ndarray | None = None,
                             tracks: str | Sequence[Track] = "pop909", instrument: str = "piano",
                             melody: str = "melody") -> dict[str, float]:
    """The statistics of :data:`ACCOMPANIMENT_STATISTICS` (module docstring) of ``instrument`` in one grid
    ``(steps, K)`` of ``tracks``, with its velocity bins ``(steps, K)`` if given; NaN where undefined."""
    grid = np.asarray(grid)
    steps, real = len(grid), real_steps(grid, tracks)
    notes, bins = instrument_notes(grid, tracks, instrument, velocity)
    melody_notes, _ = instrument_notes(grid, tracks, melody)
    shares, polyphony = polyphony_distribution(notes, steps, real)
    velocity_mean, velocity_spread = velocity_figures(bins)
    return {
        "notes_per_onset": notes_per_onset(notes, steps),
        "polyphony": polyphony,
        **{name: float(share) for name, share in zip(POLYPHONY_SHARES, shares, strict=True)},
        "pitch_class_entropy": pitch_class_entropy(notes),
        "scale_consistency": scale_consistency(notes[:, 2]),
        "onsets_per_bar": onsets_per_bar(notes, bar_count(grid, tracks)),
        "velocity_mean": velocity_mean,
        "velocity_spread": velocity_spread,
        "key_agreement": key_agreement(notes, melody_key(grid, tracks, melody)),
        "chord_tone_agreement": chord_tone_agreement(melody_notes, notes, steps, real),
    }


def set_accompaniment_statistics(pieces: Iterable[np.ndarray], velocity: Iterable[np.ndarray] | None = None,
                                 tracks: str | Sequence[Track] = "pop909", instrument: str = "piano",
                                 melody: str = "melody") -> dict[str, np.ndarray]:
    """:func:`accompaniment_statistics` of each grid of ``pieces`` (e.g. ``[N, steps, K]``) with its velocity bins
    (``[N, steps, K]``, or None): ``{statistic: float array [N]}``, NaN where undefined."""
    pieces = list(pieces)
    velocities = [None] * len(pieces) if velocity is None else list(velocity)
    rows = [accompaniment_statistics(grid, vel, tracks, instrument, melody)
            for grid, vel in zip(pieces, velocities, strict=True)]
    return {name: np.array([r[name] for r in rows], dtype=np.float64) for name in ACCOMPANIMENT_STATISTICS}


def compare_accompaniment(generated: dict[str, np.ndarray], reference: dict[str, np.ndarray],
                          bins: int = HISTOGRAM_BINS) -> dict[str, dict[str, float]]:
    """Per statistic present in both sets (``{name: [N]}``, as :func:`set_accompaniment_statistics`): the
    generated and reference ``mean``, ``std`` and ``defined`` counts (``mean_gen`` ... ``defined_ref``) and the
    ``overlap`` of their histograms (``stats.histogram_overlap``, in [0, 1]; NaN where the reference never
    defines it)."""
    out = {}
    for name in (n for n in generated if n in reference):
        gen, ref = value_summary(np.asarray(generated[name])), value_summary(np.asarray(reference[name]))
        out[name] = {**{f"{k}_gen": v for k, v in gen.items()}, **{f"{k}_ref": v for k, v in ref.items()},
                     "overlap": histogram_overlap(np.asarray(generated[name]), np.asarray(reference[name]), bins)}
    return out


def mean_overlap(compared: dict[str, dict[str, float]]) -> float:
    """The mean of the defined overlaps of :func:`compare_accompaniment`'s result (``stats.summary_overlap``)."""
    return summary_overlap({name: row["overlap"] for name, row in compared.items()})


__all__ = ["ACCOMPANIMENT_STATISTICS", "POLYPHONY_LEVELS", "POLYPHONY_SHARES", "STRONG_BEATS", "VELOCITY_STATISTICS",
           "accompaniment_statistics", "bar_count", "chord_tone_agreement", "compare_accompaniment",
           "instrument_columns", "instrument_notes", "key_agreement", "mean_overlap", "melody_key",
           "notes_per_onset", "onsets_per_bar", "pitch_class_entropy", "pitch_class_roll", "polyphony_distribution",
           "real_steps", "set_accompaniment_statistics", "strong_beats", "velocity_figures"]
