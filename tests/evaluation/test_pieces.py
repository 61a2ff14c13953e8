"""Reading sets of pieces: MIDI files at a fixed length or at their own length, silent files, bad files."""

import statistics

import numpy as np
import pytest

from schmubert.evaluation.pieces import load_pieces, own_steps
from schmubert.evaluation.selfsim import overlaps
from schmubert.evaluation.stats import piece_statistics
from schmubert.tokens import STEPS_PER_BAR, pitch_to_class, tokens_to_midi


def forty_bar_melody() -> np.ndarray:
    """Whole-bar notes: 60 in bars 0-38, 64 in bar 39 (the last ends at step 640); grid (640, 1)."""
    row = np.zeros(40 * STEPS_PER_BAR, dtype=np.int64)
    row[::STEPS_PER_BAR] = pitch_to_class(60)
    row[39 * STEPS_PER_BAR] = pitch_to_class(64)
    return row[:, None]


@pytest.fixture
def forty_bar_file(tmp_path):
    path = tmp_path / "forty.mid"
    tokens_to_midi(forty_bar_melody(), "melody").write(str(path))
    return path


def test_a_40_bar_file_read_at_its_own_length_is_40_bars(forty_bar_file):
    assert own_steps(forty_bar_file) == 640
    grid = load_pieces(forty_bar_file, "melody", steps=None)[0]
    np.testing.assert_array_equal(grid, forty_bar_melody())
    assert load_pieces(forty_bar_file, "melody", steps=1024)[0].shape == (1024, 1)  # an explicit length pads
    # 19 frames, 18 pairs: 17 alike, one N(60, 0) vs N(61, sqrt 3) (see test_selfsim)
    nd = statistics.NormalDist
    last = nd(61, np.sqrt(3) + 1e-6).overlap(nd(60, 1e-6))
    np.testing.assert_allclose(overlaps([grid])[0], [(17 + last) / 18, 1.0], atol=1e-9)
    stats = piece_statistics(grid)
    assert stats["notes_per_bar"] == 1.0 and stats["empty_bar_rate"] == 0.0  # 40 notes in 40 bars, not 64


def test_a_silent_file_is_a_silent_piece_not_a_skip(tmp_path):
    path = tmp_path / "silent.mid"
    tokens_to_midi(np.zeros((1024, 1), dtype=np.int64), "melody").write(str(path))
    assert own_steps(path) == STEPS_PER_BAR  # at least one bar
    pieces = load_pieces(path, "melody", steps=None)
    assert len(pieces) == 1 and not pieces.skipped and not pieces[0].any()
    np.testing.assert_array_equal(overlaps(list(pieces)), [[0.0, 0.0]])


def test_bad_files_are_skipped_with_their_reason(corpus):
    pieces = load_pieces(corpus / "bad-input", "trio", steps=None)
    reasons = dict(pieces.skipped)
    assert any("truncated.mid" in f for f in reasons) and all(f in r for f, r in reasons.items())
    assert len(pieces) + len(pieces.skipped) == len(list((corpus / "bad-input").glob("*.mid")))
