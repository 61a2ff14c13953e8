"""Polyphonic instruments as stacked voices: the voice rule, velocity bins, track-set specs, and the round trip
of every POP909 song and every multitrack song of the corpus."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from schmubert import tokens as T
from schmubert.polyphony import Part, assign_voices, encode_parts, midi_to_grid, read_parts, voice_counts

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"


def note(start, end, pitch, velocity=64):
    return [start, end, pitch, velocity]


def test_chord_goes_highest_first_into_the_lowest_voices():
    voices, overflow = assign_voices(np.array([note(0, 4, 60), note(0, 4, 67), note(0, 4, 64)]), 4)
    assert [v[:, 2].tolist() for v in voices] == [[67], [64], [60], []]
    assert overflow == 0


def test_an_ended_voice_is_free_again_and_a_sounding_one_is_not():
    # the top note ends at 2, the low one sounds to 8: the onset at 2 takes voice 0 (freed), not voice 1
    voices, _ = assign_voices(np.array([note(0, 2, 72), note(0, 8, 48), note(2, 4, 50)]), 2)
    assert voices[0][:, 2].tolist() == [72, 50]
    assert voices[1][:, 2].tolist() == [48]


def test_overflow_is_dropped_and_counted():
    chord = np.array([note(0, 4, p) for p in (60, 62, 64, 65, 67)])
    voices, overflow = assign_voices(chord, 3)
    assert overflow == 2
    assert sorted(int(v[0, 2]) for v in voices) == [64, 65, 67]  # the highest three


def test_a_restruck_pitch_ends_the_earlier_note_and_duplicates_merge():
    voices, overflow = assign_voices(np.array([note(0, 8, 60), note(4, 6, 60), note(4, 5, 60, 100)]), 2)
    notes = sorted(map(tuple, np.concatenate(voices)[:, :3].tolist()))
    assert notes == [(0, 4, 60), (4, 6, 60)]  # cut at the re-strike; of the equal onsets the longest kept
    assert overflow == 0


def test_velocity_bins_are_sixteen_wide_and_decode_inside_their_bin():
    v = np.arange(1, 128)
    bins = T.velocity_to_bin(v)
    assert bins.min() == 1 and bins.max() == T.VELOCITY_BINS
    assert T.velocity_to_bin(16) == 1 and T.velocity_to_bin(17) == 2 and T.velocity_to_bin(0) == T.NO_ONSET
    assert (T.velocity_to_bin(T.bin_to_velocity(bins)) == bins).all()
    assert np.abs(T.bin_to_velocity(bins) - v).max() <= 8


def test_specs_and_named_sets():
    pop = T.get_tracks("pop909")
    assert [t.name for t in pop][:2] == ["melody", "bridge.0"] and len(pop) == 11
    assert T.instruments(pop) == [("melody", [0]), ("bridge", [1, 2, 3, 4]), ("piano", list(range(5, 11)))]
    spec = "melody,bass,drums,piano:6,guitar:4,lead:1"
    assert T.track_set_name(T.get_tracks(spec)) == spec
    assert T.track_set_name(T.get_tracks("pop909")) == "pop909"
    assert T.get_tracks("melody,bass,drums") == T.get_tracks("trio")  # the trio's own columns, bit for bit
    for bad in ("piano:0", "drums:2", "kazoo", "piano,piano", "piano:x"):
        with pytest.raises(ValueError, match="track set"):
            T.get_tracks(bad)


def test_parts_are_taken_by_name_then_by_family():
    parts = [Part(0, "Strings", 48, False, np.array([note(0, 4, 60)])),
             Part(1, "PIANO", 0, False, np.array([note(0, 4, 60), note(0, 4, 64)])),
             Part(2, "Grand", 1, False, np.array([note(4, 8, 50)])),
             Part(3, "kit", 0, True, np.array([note(0, 1, 36, 100)]))]
    enc = encode_parts(parts, "drums,piano:2,strings:2", 16)
    assert enc.parts == {"drums": [3], "piano": [1], "strings": [0]}  # named PIANO wins over the family
    assert enc.velocity[0, 0] == T.velocity_to_bin(100)


def _roundtrip_counts(path: Path, tracks: str) -> tuple[int, int]:
    """Quantized notes of the file's chosen instruments, and how many come back with velocity in its bin.

    Notes of one instrument at the same onset and pitch (a doubled part merged into the instrument) count once:
    one channel sounds a pitch once.
    """
    enc = midi_to_grid(path, tracks)
    parts, _ = read_parts(path)
    by_index = {p.index: p for p in parts}
    track_list = T.get_tracks(tracks)
    decoded = T.tokens_to_notes(enc.tokens, track_list)
    total = back = 0
    wanted: set[tuple[int, int]] = set()
    for name, ks in T.instruments(track_list):
        if track_list[ks[0]].is_drum:
            continue
        got = Counter((int(s), int(e), int(p), int(enc.velocity[s, k])) for k in ks for s, e, p in decoded[k])
        for i in enc.parts[name]:
            notes = by_index[i].notes
            notes = notes[(notes[:, 2] >= T.MIN_PITCH) & (notes[:, 2] <= T.MAX_PITCH) & (notes[:, 0] >= 0)]
            wanted.update((s, p) for s, _, p, _ in notes.tolist())
            for s, e, p, v in notes.tolist():
                key = (s, max(e, s + 1), p, int(T.velocity_to_bin(v)))
                if got[key] > 0:
                    got[key] -= 1
                    back += 1
        total, wanted = total + len(wanted), set()
    return total, back


@pytest.mark.slow
@pytest.mark.parametrize("folder, tracks", [("pop909", "pop909"), ("multitrack-songs", "band")])
def test_every_corpus_song_comes_back_through_the_codec(folder, tracks):
    files = sorted((CORPUS / folder).glob("*.mid"))
    assert len(files) >= 12
    counts = np.array([_roundtrip_counts(f, tracks) for f in files])
    total, back = counts.sum(axis=0)
    assert total > 10_000
    assert back / total >= 0.99, f"{back}/{total} quantized notes came back"


def test_pop909_song_through_midi_and_back_is_the_same_grid(tmp_path):
    enc = midi_to_grid(CORPUS / "pop909" / "001.mid", "pop909")
    counts = voice_counts(enc.tokens, "pop909")
    assert counts["piano"].max() >= 3  # chords
    assert len(np.unique(enc.velocity[enc.velocity > 0])) >= 4  # dynamics
    pm = T.tokens_to_midi(enc.tokens, "pop909", velocity=enc.velocity)
    assert [i.name for i in pm.instruments] == ["melody", "bridge", "piano"]
    pm.write(str(tmp_path / "x.mid"))
    again = midi_to_grid(tmp_path / "x.mid", "pop909", steps=len(enc.tokens))
    np.testing.assert_array_equal(again.tokens, enc.tokens)
    np.testing.assert_array_equal(again.velocity, enc.velocity)


def test_trio_midi_is_written_as_before():
    grid = np.zeros((32, 3), dtype=np.int64)
    grid[0, 2] = 0b11  # kick + snare at one step: decoded step-major in class order, as always
    grid[0, 0] = T.pitch_to_class(60)
    pm = T.tokens_to_midi(grid, "trio")
    assert [n.pitch for n in pm.instruments[2].notes] == [36, 38]
    assert [n.velocity for n in pm.instruments[0].notes] == [T.DECODE_VELOCITY]
