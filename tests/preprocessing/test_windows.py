"""Window rules: the trio activity rule, the melody gap rule, the hop, and window encoding."""

from __future__ import annotations

import numpy as np
from midi_builder import bars_of_notes, build_midi

from preprocessing.config import PreprocessConfig
from preprocessing.extract import extract, process_file
from preprocessing.windows import active_bars, melody_spans, runs, sounding_bars, window_starts
from schmubert.tokens import MELODY, midi_to_tokens


def notes_in_bars(bars):
    return np.array([(b * 16, b * 16 + 4, 60) for b in bars]).reshape(-1, 3)


def test_sounding_counts_held_notes_and_activity_margin():
    held = np.array([[0, 40, 60]])  # bars 0, 1, 2
    np.testing.assert_array_equal(sounding_bars(held, 5), [1, 1, 1, 0, 0])
    active = active_bars(notes_in_bars([5]), 12, margin=2)
    np.testing.assert_array_equal(np.flatnonzero(active), [3, 4, 5, 6, 7])
    assert not active_bars(notes_in_bars([]), 4, 2).any()
    assert active_bars(notes_in_bars([0]), 2, margin=5).all()  # margin wider than the segment


def test_runs_and_hop():
    assert runs(np.array([0, 1, 1, 0, 1], bool)) == [(1, 3), (4, 5)]
    assert window_starts([(0, 20), (30, 33)], bars=8, hop=4) == [0, 4, 8, 12]
    assert window_starts([(2, 10)], bars=8, hop=1) == [2]


def test_melody_gap_rule():
    # bars 0-3 notes, 1 full bar rest, bars 5-9 notes -> two melodies; a rest shorter than a bar does not cut
    notes = np.array([(b * 16, b * 16 + 16, 60) for b in [0, 1, 2, 3]] + [(b * 16, b * 16 + 4, 62)
                                                                        for b in range(5, 10)])
    assert melody_spans(notes, gap_bars=1, segment_bars=10) == [(0, 4), (5, 10)]
    assert melody_spans(notes, gap_bars=2, segment_bars=10) == [(0, 10)]


def trio(bars_melody, bars_bass, bars_drums, extra=()):
    return build_midi([
        {"program": 0, "notes": [n for b in bars_melody for n in bars_of_notes(b, 1)]},
        {"program": 33, "notes": [n for b in bars_bass for n in bars_of_notes(b, 1, pitch=40)]},
        {"drum": True, "notes": [n for b in bars_drums for n in bars_of_notes(b, 1, pitch=36, length=1)]},
        *extra])


def test_trio_activity_rule_allows_short_rests_only():
    cfg = PreprocessConfig(tracks="trio", bars=8, hop_bars=1)
    full = list(range(12))
    # the bass rests 3 bars (bars 4-6): within 2 bars of a sounding bar everywhere -> still active;
    # the last segment may run activity_bars (2) silent bars past the end: 14 bars, starts 0..6
    windows, rows = extract(trio(full, [0, 1, 2, 3, 7, 8, 9, 10, 11], full), cfg)
    assert [r[1] for r in rows] == [0, 1, 2, 3, 4, 5, 6]
    # a 7-bar rest (bars 3-9) leaves bars 5-7 inactive: no 8 active bars remain on either side
    assert process_file("x", trio(full, [0, 1, 2, 10, 11], full), cfg).reason == "no all-active span"
    # with no margin the 3-bar rest breaks every window, and nothing runs past the end
    cfg0 = PreprocessConfig(tracks="trio", bars=8, hop_bars=1, activity_bars=0)
    result = process_file("x", trio(full, [0, 1, 2, 3, 7, 8, 9, 10, 11], full), cfg0)
    assert result.reason == "no all-active span"


def test_trio_every_combination_and_encoding_matches_codec(tmp_path):
    cfg = PreprocessConfig(tracks="trio", bars=8, hop_bars=8)
    second_melody = {"program": 5, "notes": bars_of_notes(0, 8, pitch=72)}
    data = trio(range(8), range(8), range(8), extra=[second_melody])
    windows, rows = extract(data, cfg)
    assert sorted(r[2:] for r in rows) == [(0, 1, 2), (3, 1, 2)]  # two melody choices, same bass and drums
    first = windows[[r[2] for r in rows].index(0)]
    (tmp_path / "x.mid").write_bytes(data)
    expected = midi_to_tokens(tmp_path / "x.mid", "trio", steps=128)  # first instrument of each role
    np.testing.assert_array_equal(first, expected)
    assert first[0, 0] == 60 - 19 and first[2, 0] == 1  # note-on, then its note-off after 2 steps


def test_melody_mode_uses_each_melody_instrument_and_skips_bass():
    cfg = PreprocessConfig(tracks="melody", bars=4, hop_bars=2)
    data = trio(range(8), range(8), range(8), extra=[{"program": 10, "notes": bars_of_notes(0, 3, pitch=70)}])
    windows, rows = extract(data, cfg)
    assert [(r[1], r[2]) for r in rows] == [(0, 0), (2, 0), (4, 0)]  # the 3-bar melody is too short
    assert windows[0].shape == (64, 1) and windows[0].max() < MELODY.num_classes


def test_window_that_starts_mid_note_starts_silent():
    cfg = PreprocessConfig(tracks="melody", bars=2, hop_bars=1)
    data = build_midi([{"notes": [(0, 24, 60), (24, 48, 62), (48, 64, 64)]}])
    windows, rows = extract(data, cfg)
    assert [r[1] for r in rows] == [0, 1, 2]
    assert windows[1][0, 0] == 0 and windows[1][8, 0] == 62 - 19
