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
from schmubert.tokens import STEPS_PER_BAR, encode_melodic


def melody(notes, bars):
    """A melody grid (bars*16, 1) from (start step, end step, pitch) notes."""
    return encode_melodic(np.array(notes), bars * STEPS_PER_BAR)[:, None]


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


def test_frame_count_follows_the_last_note_not_the_grid():
    assert num_frames(1024) == 31  # last note ends on the closing barline: 65 bars, frames at bars 0, 2, ..., 60
    assert num_frames(1023) == 31  # ends inside bar 63: 64 bars
    assert num_frames(640) == 19  # ends at bar 40: 41 bars, frames at bars 0, 2, ..., 36
    assert num_frames(79) == 1 and num_frames(80) == 2  # 5 bars: one frame; 6 bars: two
    assert num_frames(3 * STEPS_PER_BAR - 1) == 0 and num_frames(0) == 0  # 3 bars: no full frame


def test_hand_computed_piece():
    # whole-bar notes 60 (bar 0), 62 (bar 2), 64 (bar 4); the last ends at step 80: 6 bars, 2 frames:
    # bars 0-3 {60, 62}, bars 2-5 {62, 64}
    grid = melody([(0, 16, 60), (32, 48, 62), (64, 80, 64)], bars=6)
    oa = overlaps([grid])
    # pitch: N(61, 1) vs N(63, 1)
    assert oa[0, 0] == pytest.approx(2 * statistics.NormalDist().cdf(-1), abs=1e-5)
    assert oa[0, 1] == pytest.approx(1.0)  # durations all 16 steps


def test_piece_ending_at_bar_40_of_a_64_bar_grid():
    # whole-bar notes: 60 in bars 0-38, 64 in bar 39; the last ends at step 640, so 41 bars and 19 frames
    # (not the grid's 31): frames 0-17 hold only 60s, frame 18 (bars 36-39) holds 60, 60, 60, 64
    notes = [(16 * b, 16 * b + 16, 60) for b in range(39)] + [(624, 640, 64)]
    grid = melody(notes, bars=64)
    nd = statistics.NormalDist
    last = nd(61, np.sqrt(3) + 1e-6).overlap(nd(60, 1e-6))  # the one pair that differs
    oa = overlaps([grid])
    np.testing.assert_allclose(oa[0], [(17 + last) / 18, 1.0], atol=1e-9)
    assert last < 1e-4  # so the piece scores 17/18; the grid's 31 frames would add 12 frames of silence
    np.testing.assert_array_equal(overlaps([grid[:640]]), oa)  # trailing silence adds no frames


def test_trailing_silence_and_frames_without_notes():
    # notes in bars 0-1 and 7 of 8 bars: frames bars 0-3 {60, 60}, 2-5 {}, 4-7 {60}
    # -> OAs 0 (note frame vs empty frame) and 0 (empty vs note frame) for pitch and duration
    grid = melody([(0, 4, 60), (16, 20, 60), (112, 116, 60)], bars=8)
    np.testing.assert_allclose(overlaps([grid])[0], [0.0, 0.0], atol=1e-9)
    # notes only in bars 0-1: they end before bar 6, no two frames, scored like a silent piece
    short = melody([(0, 4, 60), (16, 20, 60)], bars=8)
    np.testing.assert_array_equal(overlaps([short]), [[0.0, 0.0]])
    assert np.isnan(overlaps([short], silent="drop")).all()


def test_silent_piece_scores_zero_and_stays_in_the_set():
    nd = statistics.NormalDist
    a = nd(61, 1 + 1e-6).overlap(nd(63, 1 + 1e-6))  # the pitch OA of the hand-computed piece above
    p = melody([(0, 16, 60), (32, 48, 62), (64, 80, 64)], bars=6)  # OA (a, 1)
    q = melody([(0, 16, 60), (32, 48, 60), (64, 80, 60)], bars=6)  # OA (1, 1)
    silent = np.zeros_like(p)
    np.testing.assert_allclose(overlaps([p, q, silent]), [[a, 1], [1, 1], [0, 0]], atol=1e-9)
    # generated (p, silent) = OAs (a, 1), (0, 0) against reference (p, q) = OAs (a, 1), (1, 1):
    res = selfsim([p, silent], [p, q])
    # pitch: mean a/2 vs (1+a)/2 -> consistency a/(1+a); var a^2/4 vs (1-a)^2/4 -> 1 - |2a-1|/(1-a)^2
    assert res["pitch"]["consistency"] == pytest.approx(a / (1 + a), abs=1e-6)
    assert res["pitch"]["variance"] == pytest.approx(1 - abs(2 * a - 1) / (1 - a) ** 2, abs=1e-6)
    # duration: mean 0.5 vs 1 -> 0.5; var 0.25 vs 0 -> 0
    assert res["duration"]["consistency"] == pytest.approx(0.5)
    assert res["duration"]["variance"] == 0.0
    assert (res["pieces_gen"], res["silent_gen"], res["short_gen"], res["silent_ref"]) == (2, 1, 0, 0)
    # the explicit option leaves it out: gen = (a, 1) alone
    dropped = selfsim([p, silent], [p, q], silent="drop")
    assert dropped["pitch"]["consistency"] == pytest.approx(2 * a / (1 + a), abs=1e-6)
    assert dropped["pitch"]["variance"] == 0.0  # one piece: no variance against (1-a)^2/4
    assert dropped["duration"]["consistency"] == 1.0 and dropped["silent_gen"] == 1
    with pytest.raises(ValueError, match="silent"):
        overlaps([p], silent="nan")


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
    bars = (notes[:, 0] + notes[:, 1]).max() // 16 + 1  # up to the end of the last note
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
