"""The token codec: round trips over the whole 64-bar corpora, decoded notes, random grids, mask tokens."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pretty_midi
import pytest
import symusic

from schmubert.tokens import (
    DRUM_CLASS_PITCHES,
    DRUM_MASK,
    MELODIC_MASK,
    canonicalize,
    get_tracks,
    midi_to_tokens,
    tokens_to_midi,
    tokens_to_notes,
)

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"
SETS = {"trio": "lakh-trio-64bar", "melody": "lakh-melody-64bar"}


def corpus_files(tracks: str) -> list[Path]:
    files = sorted((CORPUS / SETS[tracks]).glob("*.mid"))
    assert len(files) == 1000, f"expected the 1000-file corpus at {CORPUS / SETS[tracks]}"
    return files


def source_notes(path: Path) -> list[tuple[int, bool, np.ndarray]]:
    """Per track of the file as written: program, is_drum, ``(N, 3)`` (start, end, pitch) in 16th steps."""
    score = symusic.Score(str(path))
    scale = 4 / score.ticks_per_quarter
    out = []
    for track in score.tracks:
        n = track.notes.numpy()
        notes = np.stack([n["time"] * scale, (n["time"] + n["duration"]) * scale, n["pitch"]], axis=1)
        order = np.lexsort((notes[:, 2], notes[:, 0]))
        out.append((track.program, track.is_drum, np.rint(notes[order]).astype(np.int64)))
    return out


@pytest.mark.parametrize("tracks", ["trio", "melody"])
def test_whole_corpus_round_trips_and_decodes_to_the_same_notes(tracks):
    k = len(get_tracks(tracks))
    for path in corpus_files(tracks):
        x = midi_to_tokens(path, tracks)
        assert x.shape == (1024, k), path
        decoded = tokens_to_midi(x, tracks)
        np.testing.assert_array_equal(midi_to_tokens(decoded, tracks), x, err_msg=str(path))
        notes = tokens_to_notes(x, tracks)
        for (program, is_drum, src), inst, got in zip(source_notes(path), decoded.instruments, notes,
                                                      strict=True):
            assert (inst.program, inst.is_drum) == (program, is_drum), path
            if is_drum:  # drums: onsets and (representative) pitches
                got = got[np.lexsort((got[:, 2], got[:, 0]))]
                np.testing.assert_array_equal(got[:, [0, 2]], src[:, [0, 2]], err_msg=str(path))
            else:
                np.testing.assert_array_equal(got, src, err_msg=str(path))


def random_grid(rng: np.random.Generator, tracks: str, steps: int = 1024) -> np.ndarray:
    """A random valid grid: sparse note-ons, note-offs and drum hits, canonicalized."""
    track_list = get_tracks(tracks)
    grid = np.zeros((steps, len(track_list)), dtype=np.int64)
    for k, track in enumerate(track_list):
        events = rng.random(steps) < 0.3
        if track.is_drum:
            grid[events, k] = rng.integers(1, track.num_classes, events.sum())
        else:
            grid[events, k] = rng.integers(1, track.num_classes, events.sum())
    grid[-40:] = 0  # silent last bars: the default length must still be 1024
    return canonicalize(grid, tracks)


@pytest.mark.parametrize("tracks", ["trio", "melody"])
def test_random_grids_round_trip_through_memory_and_files(tmp_path, tracks):
    rng = np.random.default_rng(0)
    for i in range(20):
        x = random_grid(rng, tracks)
        pm = tokens_to_midi(x, tracks)
        np.testing.assert_array_equal(midi_to_tokens(pm, tracks), x)
        if i < 5:
            pm.write(str(tmp_path / f"{i}.mid"))
            np.testing.assert_array_equal(midi_to_tokens(tmp_path / f"{i}.mid", tracks), x)
    longer = random_grid(rng, tracks, steps=2048)
    longer[-16:] = 0
    longer[-17] = 1  # a note-off in the last step before the silent bar keeps the length at 2047 -> 128 bars
    longer = canonicalize(longer, tracks)
    np.testing.assert_array_equal(midi_to_tokens(tokens_to_midi(longer, tracks), tracks, steps=2048), longer)


def test_mask_tokens_never_become_notes():
    rng = np.random.default_rng(1)
    x = random_grid(rng, "trio")
    masked = x.copy()
    hide = rng.random(x.shape) < 0.5
    masked[hide] = np.array([MELODIC_MASK, MELODIC_MASK, DRUM_MASK])[np.nonzero(hide)[1]]
    pm = tokens_to_midi(masked, "trio")
    for k, inst in enumerate(pm.instruments):
        assert all(0 <= n.pitch <= 127 for n in inst.notes)
        onsets = {round(n.start * 8) for n in inst.notes}  # 120 qpm: 8 steps per second
        assert not onsets & set(np.flatnonzero(hide[:, k]).tolist())
    drum_pitches = {n.pitch for n in pm.instruments[2].notes}
    assert drum_pitches and drum_pitches <= set(DRUM_CLASS_PITCHES)
    all_masked = np.broadcast_to(np.array([MELODIC_MASK, MELODIC_MASK, DRUM_MASK]), (1024, 3))
    assert all(len(n) == 0 for n in tokens_to_notes(all_masked, "trio"))


def test_path_and_pretty_midi_readers_agree():
    for tracks in SETS:
        for path in corpus_files(tracks)[:15]:
            np.testing.assert_array_equal(midi_to_tokens(path, tracks),
                                          midi_to_tokens(pretty_midi.PrettyMIDI(str(path)), tracks))


def test_unreadable_file_names_the_file(tmp_path):
    bad = tmp_path / "bad.mid"
    bad.write_bytes(b"text")
    with pytest.raises(ValueError, match="bad.mid: unreadable MIDI"):
        midi_to_tokens(bad)


def test_tokens_to_notes_rejects_ambiguous_grids_clearly():
    with pytest.raises(ValueError, match="K=2"):
        tokens_to_notes(np.zeros((16, 2), dtype=np.int64))
    with pytest.raises(ValueError, match="K=3"):
        tokens_to_notes(np.zeros((16, 3), dtype=np.int64), "melody")
    row = np.zeros(16, dtype=np.int64)
    row[0] = 60 - 19
    np.testing.assert_array_equal(tokens_to_notes(row)[0], [[0, 16, 60]])  # a 1-D row is one melody track
