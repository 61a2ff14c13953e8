"""Framewise self-similarity: exact OA, hand-computed pieces, a naive reference, and real-data properties."""

import statistics

import numpy as np
import pytest

from schmubert.evaluation.pieces import load_pieces
from schmubert.evaluation.selfsim import (
    consistency_variance,
    evaluate_overlaps,
    num_frames,
    overlap_area,
    overlaps,
    piece_notes,
    selfsim,
)
from schmubert.tokens import NOTE_OFF, STEPS_PER_BAR, pitch_to_class


def melody(notes, bars):
    """A melody grid (bars*16, 1) from (start step, end step, pitch) notes."""
    row = np.zeros(bars * STEPS_PER_BAR, dtype=np.int64)
    for start, end, pitch in notes:
        row[start] = pitch_to_class(pitch)
        if end < len(row) and row[end] == 0:
            row[end] = NOTE_OFF
    return row[:, None]


def test_overlap_of_identical_gaussians_is_one():
    mu = np.array([0.0, 60.0, 1.0, -3.5])
    sigma = np.array([1.0, 1e-6, 1e-6, 7.0])
    np.testing.assert_allclose(overlap_area(mu, sigma, mu, sigma), 1.0, atol=1e-12)


def test_overlap_matches_statistics_normaldist_and_is_symmetric():
    rng = np.random.default_rng(0)
    m1, m2 = rng.normal(60, 5, 500), rng.normal(60, 5, 500)
    s1, s2 = rng.uniform(0.01, 6, 500), rng.uniform(0.01, 6, 500)
    s2[:50] = s1[:50]  # equal variances: the one-intersection case
    m2[50:100] = m1[50:100]  # equal means
    ours = overlap_area(m1, s1, m2, s2)
    nd = statistics.NormalDist
    ref = [nd(a, b).overlap(nd(c, d)) for a, b, c, d in zip(m1, s1, m2, s2, strict=True)]
    np.testing.assert_allclose(ours, ref, atol=1e-10)
    np.testing.assert_allclose(overlap_area(m2, s2, m1, s1), ours, atol=1e-12)


def test_overlap_hand_values():
    # equal sigmas one sigma... two sigmas apart: OA = 2 * Phi(-1)
    assert overlap_area(61.0, 1.0, 63.0, 1.0) == pytest.approx(0.3173105078629141, abs=1e-12)
    # far apart, tiny sigmas: no overlap
    assert overlap_area(60.0, 1e-6, 72.0, 1e-6) == pytest.approx(0.0, abs=1e-12)


def test_frame_count():
    assert num_frames(1024) == 31  # 64 bars: frames start at bars 0, 2, ..., 60
    assert num_frames(6 * STEPS_PER_BAR) == 2
    assert num_frames(3 * STEPS_PER_BAR) == 0


def test_hand_computed_piece():
    # whole-bar notes 60 (bar 0), 62 (bar 2), 64 (bar 4) in 6 bars:
    # frames bars 0-3 {60, 62}, bars 2-5 {62, 64}
    grid = melody([(0, 16, 60), (32, 48, 62), (64, 80, 64)], bars=6)
    oa = overlaps([grid])
    # pitch: N(61, 1) vs N(63, 1)
    assert oa[0, 0] == pytest.approx(2 * statistics.NormalDist().cdf(-1), abs=1e-5)
    assert oa[0, 1] == pytest.approx(1.0)  # durations all 16 steps


def test_empty_frames_and_empty_pieces():
    # notes only in bars 0-1 of 8 bars: frames {60, 60}, {}, {}
    # -> OAs 0 (note frame vs empty) and 1 (two empty)
    grid = melody([(0, 4, 60), (16, 20, 60)], bars=8)
    oa = overlaps([grid, np.zeros((8 * STEPS_PER_BAR, 1), dtype=np.int64)])
    np.testing.assert_allclose(oa[0], [0.5, 0.5], atol=1e-9)
    assert np.isnan(oa[1]).all()  # a piece without notes has no defined self-similarity


def test_drums_are_pooled_as_one_step_notes_or_excluded(corpus):
    trio = load_pieces(corpus / "lakh-trio-64bar" / "sample_0.mid", "trio", 1024)[0]
    with_drums = piece_notes(trio, drums="include")
    without = piece_notes(trio, drums="exclude")
    assert len(with_drums) > len(without) > 0
    drum_notes = len(with_drums) - len(without)
    assert (np.sort(with_drums[:, 1])[:drum_notes] == 1).all()  # drum hits last one step
    melodic_only = overlaps([trio[:, :2]], tracks=["melody", "bass"])
    np.testing.assert_array_equal(overlaps([trio], drums="exclude"), melodic_only)
    assert not np.allclose(overlaps([trio]), overlaps([trio], drums="exclude"))


def naive_overlaps(grid):
    """A direct, loop-based reading of spec section 5 with statistics.NormalDist, for comparison."""
    notes = piece_notes(grid)
    bars = len(grid) // STEPS_PER_BAR
    frames = []
    for start in range(0, bars - 4 + 1, 2):
        inside = notes[(notes[:, 0] // 16 >= start) & (notes[:, 0] // 16 < start + 4)]
        if len(inside) == 0:
            frames.append([statistics.NormalDist(1, 1e-6)] * 2)
        else:
            frames.append([statistics.NormalDist(np.mean(v), np.std(v) + 1e-6)
                           for v in (inside[:, 2], inside[:, 1])])
    pairs = zip(frames[:-1], frames[1:], strict=True)
    return np.array([[a[f].overlap(b[f]) for f in range(2)] for a, b in pairs]).mean(0)


def test_vectorized_matches_naive_reference_on_real_trios(corpus):
    pieces = list(load_pieces(corpus / "lakh-trio-64bar", "trio", 1024).subset(range(12)))
    np.testing.assert_allclose(overlaps(pieces), [naive_overlaps(p) for p in pieces], atol=1e-6)


def test_set_against_itself_scores_one():
    rng = np.random.default_rng(1)
    values = rng.uniform(0.5, 1.0, (50, 2))
    result = consistency_variance(values, values)
    assert all(result[f][k] == 1.0 for f in ("pitch", "duration") for k in ("consistency", "variance"))
    shifted = consistency_variance(values * 0.9, values)
    assert shifted["pitch"]["consistency"] == pytest.approx(0.9)
    assert shifted["pitch"]["variance"] == pytest.approx(0.81)


def test_evaluations_draw_subsets_only_when_the_set_is_larger():
    rng = np.random.default_rng(2)
    gen, ref = rng.uniform(0.5, 1, (40, 2)), rng.uniform(0.5, 1, (40, 2))
    whole = evaluate_overlaps(gen, ref, num_evals=5, num_pieces=40)
    assert whole["pitch"]["consistency_std"] == pytest.approx(0.0, abs=1e-12)
    drawn = evaluate_overlaps(gen, ref, num_evals=5, num_pieces=20, seed=3)
    assert drawn["pitch"]["consistency_std"] > 1e-6
    assert drawn == evaluate_overlaps(gen, ref, num_evals=5, num_pieces=20, seed=3)


@pytest.fixture(scope="module")
def lakh_melodies(corpus):
    return list(load_pieces(corpus / "lakh-melody-64bar", "melody", 1024, workers=2))


def test_two_halves_of_lakh_melodies_are_consistent(lakh_melodies):
    assert len(lakh_melodies) == 1000
    result = selfsim(lakh_melodies[::2], lakh_melodies[1::2])
    for feat in ("pitch", "duration"):
        assert result[feat]["consistency"] > 0.98
        assert result[feat]["variance"] > 0.8
        # the original author's training-set figures: mean OA 0.796 (pitch), 0.828 (duration)
        assert 0.75 < result[feat]["mean_ref"] < 0.87
    assert selfsim(lakh_melodies, lakh_melodies)["pitch"]["variance"] == 1.0
    # random pitches: every frame alike (uniform), so the spread of self-similarity between pieces vanishes
    rng = np.random.default_rng(0)
    noise = [np.where(p > 1, rng.integers(2, 90, p.shape), p) for p in lakh_melodies[:200]]
    assert selfsim(noise, lakh_melodies)["pitch"]["variance"] < 0.5
