"""Magenta NoteSequence interop (schmubert.interop) on real files: songs keep every note, grids come back identical."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pretty_midi
import pytest

from schmubert import interop
from schmubert.tokens import midi_to_tokens, tokens_to_notes

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "corpus"  # as in conftest.py: the corpus beside the checkout
needs_note_seq = pytest.mark.skipif(importlib.util.find_spec("note_seq") is None,
                                    reason='needs note-seq: pip install "schmubert[magenta]"')
SONGS = sorted((CORPUS / "multitrack-songs").glob("*.mid")) + sorted((CORPUS / "pop909").glob("*.mid"))[:4]


def instrument_notes(pm: pretty_midi.PrettyMIDI) -> list[tuple[int, bool, str, list[tuple[int, int, int, int]]]]:
    """Per instrument with notes: (program, is_drum, name, sorted [(start tick, end tick, pitch, velocity)])."""
    return [(inst.program, inst.is_drum, inst.name,
             sorted((pm.time_to_tick(n.start), pm.time_to_tick(n.end), n.pitch, n.velocity) for n in inst.notes))
            for inst in pm.instruments if inst.notes]


def chords(notes: list[tuple[int, int, int, int]]) -> int:
    """How many onsets of one instrument start two or more notes."""
    return sum(count > 1 for count in Counter(start for start, *_ in notes).values())


def test_corpus_songs_are_found(corpus):
    assert len(SONGS) >= 14 and all(path.is_file() for path in SONGS)


@needs_note_seq
@pytest.mark.parametrize("path", SONGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_song_note_sequence_keeps_every_note(path: Path, tmp_path: Path):
    original = pretty_midi.PrettyMIDI(str(path))
    sequence = interop.song_to_note_sequence(path)
    # in: the NoteSequence holds every note with its pitch, velocity, times, program and drum flag
    tick = original.time_to_tick
    want = Counter((inst.program, inst.is_drum, n.pitch, n.velocity, tick(n.start), tick(n.end))
                   for inst in original.instruments for n in inst.notes)
    got = Counter((n.program, n.is_drum, n.pitch, n.velocity, tick(n.start_time), tick(n.end_time))
                  for n in sequence.notes)
    assert got == want
    # out: written to a MIDI file and read again, each instrument has the same notes on the same ticks
    written = tmp_path / "back.mid"
    interop.note_sequence_to_midi(sequence).write(str(written))
    back = pretty_midi.PrettyMIDI(str(written))
    assert back.resolution == original.resolution
    before, after = instrument_notes(original), instrument_notes(back)
    assert [(p, d) for p, d, _, _ in after] == [(p, d) for p, d, _, _ in before]
    assert all(a == b for (_, _, a, _), (_, _, b, _) in zip(after, before, strict=True) if b)  # names kept
    for (*_, notes_after), (*_, notes_before) in zip(after, before, strict=True):
        assert len(notes_after) == len(notes_before)
        ticks_after, ticks_before = np.array(notes_after), np.array(notes_before)
        np.testing.assert_array_equal(ticks_after[:, 2:], ticks_before[:, 2:])  # pitch, velocity
        assert np.abs(ticks_after[:, :2] - ticks_before[:, :2]).max() <= 1  # start, end within tick rounding


@needs_note_seq
def test_song_material_has_chords_drums_and_velocities():
    """The songs above are a real test: polyphony, drum tracks and varied velocities, all kept."""
    pms = [interop.note_sequence_to_midi(interop.song_to_note_sequence(p)) for p in SONGS[-4:] + SONGS[:2]]
    per_instrument = [i for pm in pms for i in instrument_notes(pm)]
    assert sum(chords(notes) for *_, notes in per_instrument) > 500
    assert any(is_drum for _, is_drum, _, _ in per_instrument)
    assert len({v for *_, notes in per_instrument for *_, v in notes}) > 20


@needs_note_seq
def test_song_from_pretty_midi_equals_song_from_path():
    path = SONGS[0]
    assert interop.song_to_note_sequence(pretty_midi.PrettyMIDI(str(path))) == interop.song_to_note_sequence(path)


@needs_note_seq
@pytest.mark.parametrize("tracks, folder", [("trio", "lakh-trio-64bar"), ("melody", "lakh-melody-64bar")])
def test_token_grid_round_trips_identically(corpus, tracks, folder):
    for path in sorted((corpus / folder).glob("*.mid"))[:4]:
        grid = midi_to_tokens(path, tracks, steps=1024)
        assert (grid != 0).any(axis=0).all(), f"{path.name}: every track should have notes"
        sequence = interop.tokens_to_note_sequence(grid, tracks)
        notes = tokens_to_notes(grid, tracks)
        assert len(sequence.notes) == sum(len(n) for n in notes)
        names = {info.instrument: info.name for info in sequence.instrument_infos}
        assert sorted(set(names.values())) == sorted({"melody"} | ({"bass", "drums"} if tracks == "trio" else set()))
        assert {(names[n.instrument], n.program, n.is_drum) for n in sequence.notes} <= {
            ("melody", 0, False), ("bass", 33, False), ("drums", 0, True)}
        back = interop.note_sequence_to_tokens(sequence, tracks)
        assert back.shape == grid.shape and back.dtype == grid.dtype
        np.testing.assert_array_equal(back, grid)


@needs_note_seq
def test_unreadable_file_is_a_value_error_naming_it(corpus):
    with pytest.raises(ValueError, match="text-not-midi.mid"):
        interop.song_to_note_sequence(corpus / "bad-input" / "text-not-midi.mid")


def test_missing_note_seq_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "note_seq", None)  # import note_seq now raises ImportError
    grid = np.zeros((64, 3), dtype=np.int64)
    for call in (lambda: interop.song_to_note_sequence(SONGS[0]), lambda: interop.tokens_to_note_sequence(grid),
                 lambda: interop.note_sequence_to_midi(None), lambda: interop.note_sequence_to_tokens(None)):
        with pytest.raises(ImportError, match=r'pip install "schmubert\[magenta\]"'):
            call()


def test_core_install_does_not_carry_note_seq():
    """note-seq (librosa, numba, pandas) is the magenta extra, not a core dependency, and nothing imports it eagerly."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert not [d for d in project["dependencies"] if d.lower().startswith(("note-seq", "note_seq", "librosa"))]
    assert any(d.startswith("note-seq") for d in project["optional-dependencies"]["magenta"])
    code = "import sys, schmubert, schmubert.tokens, schmubert.interop; assert 'note_seq' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
