"""Accompaniment statistics of one instrument of a voice set: hand-built grids with known figures, PAD and empty
instruments, and POP909's own piano on four held-out songs."""

from pathlib import Path

import numpy as np
import pytest

from schmubert.attributes import parse_key
from schmubert.evaluation.accompaniment import (
    ACCOMPANIMENT_STATISTICS,
    POLYPHONY_SHARES,
    accompaniment_statistics,
    compare_accompaniment,
    mean_overlap,
    melody_key,
    set_accompaniment_statistics,
)
from schmubert.meter import Bar, Layout, expand
from schmubert.polyphony import encode_instrument, midi_to_grid
from schmubert.tokens import (
    DEFAULT_STEPS,
    STEPS_PER_BAR,
    bin_to_velocity,
    encode_melodic,
    get_tracks,
    instruments,
    is_pad,
    velocity_to_bin,
)

#: melody, bridge of 4 voices, piano of 6
TRACKS = get_tracks("pop909")
COLUMNS = dict(instruments(TRACKS))
BARS = 2
C_MAJOR_TRIAD = (60, 64, 67)
#: the melody of each bar in quarter notes: C5 E5 G5 C5, then C5 F5 D5 B4 (step 8 of bar 1: D, no chord tone)
MELODY = ((72, 76, 79, 72), (72, 77, 74, 71))
QUARTER = 4
SOFT, LOUD = 40, 100  # MIDI velocities at the centre of their bins


def grid_of(melody: np.ndarray, piano: np.ndarray, steps: int = BARS * STEPS_PER_BAR) -> tuple[np.ndarray, np.ndarray]:
    """A pop909 grid ``(steps, 11)`` and its velocity bins from a melody's and a piano's notes ``(N, 4)`` (start,
    end, pitch, velocity); the bridge is silent."""
    grid = np.zeros((steps, len(TRACKS)), dtype=np.int64)
    velocity = np.zeros_like(grid)
    grid[:, COLUMNS["melody"][0]] = encode_melodic(melody[:, :3], steps)
    velocity[melody[:, 0], COLUMNS["melody"][0]] = velocity_to_bin(melody[:, 3])
    piano_cols = COLUMNS["piano"]
    grid[:, piano_cols], velocity[:, piano_cols], overflow = encode_instrument(
        piano, [TRACKS[k] for k in piano_cols], steps)
    assert overflow == 0
    return grid, velocity


def melody_notes() -> np.ndarray:
    return np.array([(16 * b + QUARTER * q, 16 * b + QUARTER * (q + 1), pitch, 80)
                     for b, bar in enumerate(MELODY) for q, pitch in enumerate(bar)])


def chords(pitches=C_MAJOR_TRIAD, velocities=(SOFT, LOUD)) -> np.ndarray:
    """``pitches`` as a quarter-note chord on beats 1 and 3 (steps 0 and 8) of each bar, the chords' velocities
    alternating over ``velocities``."""
    onsets = [16 * b + beat for b in range(BARS) for beat in (0, 8)]
    return np.array([(s, s + QUARTER, p, velocities[i % len(velocities)]) for i, s in enumerate(onsets)
                     for p in pitches])


def test_a_c_major_triad_on_beats_1_and_3_under_a_melody_in_c():
    grid, velocity = grid_of(melody_notes(), chords())
    assert melody_key(grid, TRACKS) == parse_key("C:major")
    stats = accompaniment_statistics(grid, velocity)
    assert set(stats) == set(ACCOMPANIMENT_STATISTICS)
    assert stats["notes_per_onset"] == 3
    assert stats["polyphony"] == 3
    assert [stats[name] for name in POLYPHONY_SHARES] == [0, 0, 1, 0, 0, 0]
    assert stats["onsets_per_bar"] == 2  # two chord steps per bar
    assert stats["pitch_class_entropy"] == pytest.approx(np.log2(3))
    assert stats["scale_consistency"] == 1
    assert stats["key_agreement"] == 1
    # strong beats: bar 0 C over the triad, G over it; bar 1 C over it, D not: 3 of 4 melody notes
    assert stats["chord_tone_agreement"] == pytest.approx(3 / 4)
    # the chords alternate 40 and 100, bins 3 and 7, decoded at their centres 40 and 104
    soft, loud = bin_to_velocity(velocity_to_bin(np.array([SOFT, LOUD])))
    assert stats["velocity_mean"] == pytest.approx((soft + loud) / 2)
    assert stats["velocity_spread"] == pytest.approx((loud - soft) / 2)


def test_an_out_of_key_piano_agrees_less_with_the_melody():
    in_key = accompaniment_statistics(*grid_of(melody_notes(), chords()))
    # C# F# G# is outside C major: half the piano's chords now out of key
    mixed = np.concatenate([chords(), chords((61, 66, 68))])
    mixed[:, 0] += np.where(np.arange(len(mixed)) < len(mixed) // 2, 0, 4)  # the foreign chord on beats 2 and 4
    mixed[:, 1] = mixed[:, 0] + 2
    out = accompaniment_statistics(*grid_of(melody_notes(), mixed))
    assert out["key_agreement"] == pytest.approx(0.5) and in_key["key_agreement"] == 1
    wrong = accompaniment_statistics(*grid_of(melody_notes(), chords((61, 66, 68))))
    assert wrong["key_agreement"] == 0
    assert wrong["chord_tone_agreement"] == 0  # no melody note's pitch class in the chord


def test_chord_tone_agreement_counts_held_notes_and_skips_beats_where_one_side_is_silent():
    melody = melody_notes()
    piano = chords()
    piano[:, 1] = piano[:, 0] + 2 * QUARTER  # each chord held until the next: the piano sounds throughout
    grid, _ = grid_of(melody[melody[:, 0] < STEPS_PER_BAR], piano)  # the melody only in bar 0
    assert accompaniment_statistics(grid)["chord_tone_agreement"] == 1  # bar 1's beats have no melody
    late = piano.copy()
    late[:, 0] += 1  # the chords start just after the beats, held from there: nothing sounds on them
    late[:, 1] = late[:, 0] + 2
    grid, _ = grid_of(melody, late)
    assert np.isnan(accompaniment_statistics(grid)["chord_tone_agreement"])


def test_pad_steps_are_absent():
    """A 3/4 bar (12 steps, PAD 12..15 of its slot) and a 4/4 bar: a triad held from step 0 over the PAD into the
    next bar, and one note at steps 8..12 of bar 1. Sounding steps: 12 + 4 with three notes, 4 with one."""
    layout = Layout.of_bars([Bar(12), Bar(STEPS_PER_BAR)])
    triad = np.array([(0, 16, p, 80) for p in C_MAJOR_TRIAD])  # real steps: to bar 1's step 4
    single = np.array([(20, 24, 72, 80)])
    real, _ = grid_of(np.array([(0, 20, 72, 80)]), np.concatenate([triad, single]), layout.real_steps)
    grid = expand(real, layout, TRACKS)
    assert is_pad(grid[12:16, 0], TRACKS[0]).all()
    stats = accompaniment_statistics(grid)
    assert [stats[name] for name in POLYPHONY_SHARES] == pytest.approx([4 / 20, 0, 16 / 20, 0, 0, 0])
    assert stats["polyphony"] == pytest.approx((16 * 3 + 4) / 20)
    assert stats["notes_per_onset"] == 2  # 3 notes at step 0, 1 at step 24: PAD ids start nothing
    assert stats["onsets_per_bar"] == 1  # 2 onset steps in 2 bars
    assert stats["chord_tone_agreement"] == 1  # the melody's C over the triad at steps 0, 8 and 16 (held)


def test_an_instrument_without_notes_gives_nan_and_velocity_statistics_need_bins():
    grid, velocity = grid_of(melody_notes(), np.zeros((0, 4), dtype=np.int64))
    stats = accompaniment_statistics(grid, velocity)
    assert all(np.isnan(stats[name]) for name in ACCOMPANIMENT_STATISTICS if name != "onsets_per_bar")
    assert stats["onsets_per_bar"] == 0
    grid, velocity = grid_of(np.zeros((0, 4), dtype=np.int64), chords())
    no_melody = accompaniment_statistics(grid)
    assert np.isnan(no_melody["key_agreement"]) and np.isnan(no_melody["chord_tone_agreement"])
    assert np.isnan(no_melody["velocity_mean"]) and np.isnan(no_melody["velocity_spread"])  # no velocity given
    assert no_melody["notes_per_onset"] == 3
    bridge = accompaniment_statistics(grid, velocity, instrument="bridge")
    assert np.isnan(bridge["notes_per_onset"])
    with pytest.raises(ValueError, match="no instrument 'guitar'"):
        accompaniment_statistics(grid, instrument="guitar")


def test_sets_compare_by_overlap():
    pieces = [grid_of(melody_notes(), chords()), grid_of(melody_notes(), chords((61, 66, 68)))]
    tokens, velocity = np.stack([p[0] for p in pieces]), np.stack([p[1] for p in pieces])
    same = set_accompaniment_statistics(tokens, velocity)
    assert same["key_agreement"].tolist() == [1, 0]
    compared = compare_accompaniment(same, same)
    assert set(compared) == set(ACCOMPANIMENT_STATISTICS)
    assert all(row["overlap"] == pytest.approx(1) for row in compared.values())
    other = set_accompaniment_statistics(tokens[:1].repeat(2, axis=0), velocity[:1].repeat(2, axis=0))
    apart = compare_accompaniment(other, same)
    assert apart["key_agreement"]["overlap"] == pytest.approx(0.5)
    assert apart["key_agreement"]["mean_gen"] == 1 and apart["key_agreement"]["mean_ref"] == 0.5
    assert 0 <= mean_overlap(apart) < 1


#: The first four held-out songs of data/processed/pop909 (meta.json's valid split).
HELD_OUT_SONGS = ("099.mid", "100.mid", "132.mid", "160.mid")


def test_pop909s_own_piano_plays_chords_in_the_melodys_key(corpus: Path):
    """The first 64-bar window of each of four held-out songs, read through the codec."""
    encoded = [midi_to_grid(corpus / "pop909" / name, "pop909") for name in HELD_OUT_SONGS]
    stats = set_accompaniment_statistics([e.tokens[:DEFAULT_STEPS] for e in encoded],
                                         [e.velocity[:DEFAULT_STEPS] for e in encoded])
    figures = {name: float(np.nanmean(values)) for name, values in stats.items()}
    print({name: round(value, 3) for name, value in figures.items()})
    assert figures["notes_per_onset"] > 1.2
    assert figures["key_agreement"] > 0.7
    assert 0 < figures["chord_tone_agreement"] < 1
    assert 1 <= figures["velocity_mean"] <= 127 and figures["velocity_spread"] > 0
