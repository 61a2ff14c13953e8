"""File-level rules: tempo and time-signature splits, 4/4 filtering, monophonization, pitch range, drums."""

from __future__ import annotations

import numpy as np
import pytest
from midi_builder import bars_of_notes, build_midi

from preprocessing.segments import SkipFile, read_score, split_segments


def segments_of(data: bytes, **kw):
    return split_segments(read_score(data), **kw)


def test_tempo_change_splits_and_each_segment_starts_at_zero():
    # 10 bars at 120 qpm, then a tempo change at bar 10 (step 160) and 6 more bars
    notes = bars_of_notes(0, 16)
    segs, other = segments_of(build_midi([{"notes": notes}], tempos=[(0, 120.0), (160, 90.0)]))
    assert other == 0 and [s.bars for s in segs] == [10, 6]
    second = segs[1].parts[0].notes
    assert second[0, 0] == 0 and len(second) == 6 * 4  # quantized against its own start
    assert segs[1].start_tick == 160 * 120


def test_repeated_equal_tempo_does_not_split_and_no_split_option():
    data = build_midi([{"notes": bars_of_notes(0, 8)}], tempos=[(0, 120.0), (64, 120.0), (96, 100.0)])
    assert [s.bars for s in segments_of(data)[0]] == [6, 2]
    assert [s.bars for s in segments_of(data, split_on_tempo=False)[0]] == [8]


def test_first_tempo_event_after_the_start_is_a_change_from_the_default_120():
    data = build_midi([{"notes": bars_of_notes(0, 8)}], tempos=[(64, 100.0)])
    assert [s.bars for s in segments_of(data)[0]] == [4, 4]
    same = build_midi([{"notes": bars_of_notes(0, 8)}], tempos=[(64, 120.0)])
    assert [s.bars for s in segments_of(same)[0]] == [8]


def test_time_signature_split_keeps_only_16_steps_per_bar():
    # 4 bars 4/4, then 3/4 from step 64 to the end
    data = build_midi([{"notes": bars_of_notes(0, 8)}], time_signatures=[(0, 4, 4), (64, 3, 4)])
    segs, other = segments_of(data)
    assert [s.bars for s in segs] == [4] and other == 1


def test_waltz_has_no_44_segment_and_missing_time_signature_counts_as_44():
    waltz = build_midi([{"notes": bars_of_notes(0, 4)}], time_signatures=[(0, 3, 4)])
    assert segments_of(waltz) == ([], 1)
    bare = build_midi([{"notes": bars_of_notes(0, 4)}], time_signatures=None)
    segs, _ = segments_of(bare)
    assert [s.bars for s in segs] == [4]


def test_monophonize_highest_pitch_wins_and_later_onset_ends_note():
    notes = [(0, 8, 60), (0, 8, 67), (0, 8, 64), (4, 12, 55)]
    part = segments_of(build_midi([{"notes": notes}]))[0][0].parts[0]
    np.testing.assert_array_equal(part.notes, [[0, 4, 67], [4, 12, 55]])


def test_pitch_range_and_zero_length():
    notes = [(0, 4, 20), (4, 8, 109), (8, 8, 60), (12, 16, 108), (16, 20, 21)]
    part = segments_of(build_midi([{"notes": notes}]))[0][0].parts[0]
    np.testing.assert_array_equal(part.notes, [[8, 9, 60], [12, 16, 108], [16, 20, 21]])


def test_drums_keep_mapped_onsets_only():
    hits = [(0, 2, 36), (0, 1, 42), (4, 8, 38), (8, 9, 25), (12, 13, 59)]  # 25 is not in the map
    part = segments_of(build_midi([{"drum": True, "notes": hits}]))[0][0].parts[0]
    assert part.is_drum
    np.testing.assert_array_equal(part.notes, [[0, 1, 36], [0, 1, 42], [4, 5, 38], [12, 13, 59]])


@pytest.mark.parametrize(("tick", "step"), [(50, 4), (70, 5), (130, 5)])
def test_off_grid_onsets_round_to_nearest_step(tick, step):
    score = read_score(build_midi([{"notes": [(0, 4, 60), (12, 16, 62)]}]))
    score.tracks[0].notes[0].time = 4 * 120 + tick  # one quarter (4 steps) plus tick/120 steps
    assert split_segments(score)[0][0].parts[0].notes[0, 0] == step


def test_unreadable_and_empty():
    with pytest.raises(SkipFile, match="unreadable"):
        read_score(b"not a midi file", "x.mid")
    with pytest.raises(SkipFile, match="no notes"):
        segments_of(build_midi([{"notes": []}]))


def test_a_stray_note_far_out_makes_the_file_too_long_not_a_memory_blowup():
    notes = bars_of_notes(0, 4) + [(16 * 100_000, 16 * 100_000 + 1, 60)]  # one note 100k bars later
    with pytest.raises(SkipFile) as err:
        segments_of(build_midi([{"notes": notes}]), max_bars=4096)
    assert err.value.reason == "too long" and "100000 bars" in str(err.value)
    assert segments_of(build_midi([{"notes": bars_of_notes(0, 8)}]), max_bars=8)[0][0].bars == 8
