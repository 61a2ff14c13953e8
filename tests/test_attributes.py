import json

import numpy as np
import pytest
import torch

from schmubert import attributes as A
from schmubert.attributes import Attributes
from schmubert.data import transpose
from schmubert.tokens import NOTE_OFF, PITCH_OFFSET, STEPS_PER_BAR, get_tracks

TRIO = get_tracks("trio")
MELODY = get_tracks("melody")


def on(pitch):
    return pitch - PITCH_OFFSET


def melody_grid(events, bars=1):
    """``[1, bars*16, 1]`` melody tokens with ``events`` {step: token}."""
    x = torch.zeros(1, bars * STEPS_PER_BAR, 1, dtype=torch.long)
    for step, token in events.items():
        x[0, step, 0] = token
    return x


def scale_piece(tonic_pitch, steps=[0, 2, 4, 5, 7, 9, 11], note_len=4, bars=4):  # noqa: B006
    """A melody playing the scale on ``tonic_pitch`` upwards, each note ``note_len`` steps, repeated."""
    events, step, i = {}, 0, 0
    while step < bars * STEPS_PER_BAR:
        events[step] = on(tonic_pitch + steps[i % len(steps)])
        step, i = step + note_len, i + 1
    return melody_grid(events, bars)


def test_c_major_scale_is_c_major_and_names_round_trip():
    assert A.key_name(int(A.estimate_key(scale_piece(60), MELODY)[0])) == "C:major"
    harmonic_a_minor = [0, 2, 3, 5, 7, 8, 11, 0]  # the tonic twice, the leading tone raised
    assert A.key_name(int(A.estimate_key(scale_piece(57, harmonic_a_minor), MELODY)[0])) == "A:minor"
    for key in range(A.KEY_IDS):
        assert A.parse_key(A.key_name(key)) == key


@pytest.mark.parametrize("text, name", [("D:minor", "D:minor"), ("C#:major", "C#:major"), ("Db", "C#:major"),
                                        ("bb:min", "A#:minor"), ("none", "none"), ("E", "E:major")])
def test_parses_key_names(text, name):
    assert A.key_name(A.parse_key(text)) == name


def test_bad_key_names_are_clear():
    with pytest.raises(ValueError, match="unknown key 'H:major'"):
        A.parse_key("H:major")
    with pytest.raises(ValueError, match="unknown key"):
        A.parse_key("C:dorian")


def test_relative_keys():
    assert A.key_name(A.relative_key(A.parse_key("D:minor"))) == "F:major"
    assert A.key_name(A.relative_key(A.parse_key("C:major"))) == "A:minor"
    assert A.relative_key(A.KEY_NULL) == A.KEY_NULL


def test_key_moves_with_a_transposition(corpus_pieces):
    x0 = torch.from_numpy(corpus_pieces("trio", 12)).long()
    shifted = transpose(x0, TRIO, 6, torch.Generator().manual_seed(1))
    melodic = x0[..., :2] > NOTE_OFF
    # one shift per piece, read back from its notes
    per_piece = [int((shifted[i, ..., :2] - x0[i, ..., :2])[melodic[i]][0]) for i in range(len(x0))]
    assert len(set(per_piece)) > 2
    before, after = A.estimate_key(x0, TRIO), A.estimate_key(shifted, TRIO)
    for b, a, s in zip(before.tolist(), after.tolist(), per_piece, strict=True):
        assert a // 12 == b // 12 and a % 12 == (b + s) % 12  # same mode, tonic moved by the shift


def test_key_ignores_drums_and_is_null_without_melodic_notes():
    x = torch.zeros(1, 32, 3, dtype=torch.long)
    x[0, ::4, 2] = 1  # kicks only
    assert int(A.estimate_key(x, TRIO)[0]) == A.KEY_NULL
    x[0, 0, 1] = on(40)  # one bass E held to the end
    assert A.key_name(int(A.estimate_key(x, TRIO)[0])).startswith("E:")


def test_pitch_classes_are_weighted_by_how_long_they_sound():
    # C on at 0 (3 steps until the note-off at 3), silence, E on at 4 held 2 steps, G on at 6 sounding to step 15
    x = melody_grid({0: on(60), 3: NOTE_OFF, 4: on(64), 6: on(67)})
    hist = A.sounding_pitch_classes(x, MELODY)[0]
    assert hist.tolist() == [3, 0, 0, 0, 2, 0, 0, 10, 0, 0, 0, 0]


def test_onsets_and_register_per_bar_counted_by_hand():
    x = torch.zeros(1, 3 * STEPS_PER_BAR, 3, dtype=torch.long)
    # bar 0: melody 60, 64, 67 (3 onsets, mean 63.67); bass 40 held from bar 0 into bar 1 (1 onset, mean 40)
    for step, pitch in ((0, 60), (4, 64), (8, 67)):
        x[0, step, 0] = on(pitch)
    x[0, 0, 1] = on(40)
    # bar 1: melody note-off only (0 onsets, empty register); drums hit at 4 steps, one with two classes
    x[0, 16, 0] = NOTE_OFF
    x[0, [16, 20, 24, 28], 2] = torch.tensor([1, 2, 1, 3])
    # bar 2: melody 72 and 84 (mean 78); bass 28 and 31 (mean 29.5)
    x[0, 32, 0], x[0, 40, 0] = on(72), on(84)
    x[0, 32, 1], x[0, 33, 1] = on(28), on(31)
    a = Attributes.compute(x, TRIO)
    assert a.onsets[0].tolist() == [[3, 1, 0], [0, 0, 4], [2, 2, 0]]
    mean = A.bar_mean_pitch(x, TRIO)[0]
    torch.testing.assert_close(mean[0, :2], torch.tensor([191 / 3, 40.0]))
    assert torch.isnan(mean[1, 0]) and torch.isnan(mean[:, 2]).all()
    # bins of 3 semitones from 21: 63.67 -> 14, 40 -> 6, 78 -> 19, 29.5 -> 2; no notes -> EMPTY; drums -> NULL
    E, N = A.REGISTER_EMPTY, A.REGISTER_NULL
    assert a.register[0].tolist() == [[14, 6, N], [E, E, N], [19, 2, N]]
    assert A.register_center(14) == 64.5


def test_masks_count_as_no_event():
    x = melody_grid({0: on(60), 5: MELODY[0].mask_id})
    assert A.bar_onsets(x, MELODY)[0].tolist() == [[1]]


def test_drop_nulls_each_kind_at_its_rate_independently():
    B = 20_000
    a = Attributes(torch.zeros(B, dtype=torch.long), torch.ones(B, 2, 3, dtype=torch.long),
                   torch.ones(B, 2, 3, dtype=torch.long))
    d = A.drop(a, 0.3, torch.Generator().manual_seed(0))
    key = d.key == A.KEY_NULL
    onsets = (d.onsets == A.ONSETS_NULL).all(dim=(1, 2))
    register = (d.register == A.REGISTER_NULL).all(dim=(1, 2))
    for gone in (key, onsets, register):
        assert abs(gone.float().mean() - 0.3) < 0.015
    # a piece drops a kind whole (all bars and tracks) or not at all
    assert ((d.onsets == A.ONSETS_NULL).any(dim=(1, 2)) == onsets).all()
    assert abs((key & onsets).float().mean() - 0.09) < 0.01  # independent kinds
    per_kind = A.drop(a, {"key": 1.0, "onsets": 0.0}, torch.Generator().manual_seed(0))
    assert (per_kind.key == A.KEY_NULL).all() and (per_kind.onsets == 1).all() and (per_kind.register == 1).all()
    assert A.drop(a, 0.0).key.eq(0).all()


def test_null_and_shapes():
    n = Attributes.null(2, 4, 3)
    assert n.is_null() and n.shape == (2, 4, 3) and n.key.tolist() == [A.KEY_NULL] * 2
    assert Attributes.cat([n, n.null_like()]).shape == (4, 4, 3)
    assert n.rows(0, 1).expand(5).shape == (5, 4, 3)
    assert n.pad_bars(6).shape == (2, 6, 3) and n.bars(1, 3).shape == (2, 2, 3)
    with pytest.raises(ValueError, match="whole bars"):
        Attributes.compute(torch.zeros(1, 20, 3, dtype=torch.long), TRIO)


def test_targets_parse_and_land_in_their_bars_and_tracks():
    assert A.parse_target("melody=8") == A.BarTarget("melody", 8.0)
    assert A.parse_target("bass=E2@8:16", pitch=True) == A.BarTarget("bass", 40.0, 8, 16)
    assert A.parse_pitch("C4") == 60 and A.parse_pitch("Bb3") == 58 and A.parse_pitch("F#2") == 42
    for bad in ("melody", "melody=8@4", "melody=8@5:2"):
        with pytest.raises(ValueError, match="TRACK=VALUE|bar range"):
            A.parse_target(bad)
    a = A.apply_targets(Attributes.null(1, 4, 3), TRIO, [A.parse_target("drums=20@1:2")],
                        [A.parse_target("bass=40", pitch=True)])
    assert a.onsets[0, :, 2].tolist() == [A.ONSETS_NULL, 16, A.ONSETS_NULL, A.ONSETS_NULL]  # clipped to 16
    assert a.register[0, :, 1].tolist() == [6] * 4 and (a.register[0, :, 0] == A.REGISTER_NULL).all()
    with pytest.raises(ValueError, match="no track 'piano'"):
        A.apply_targets(a, TRIO, [A.BarTarget("piano", 3)])
    with pytest.raises(ValueError, match="drums have no register"):
        A.apply_targets(a, TRIO, [], [A.BarTarget("drums", 40)])
    with pytest.raises(ValueError, match="past the piece's 4 bars"):
        A.apply_targets(a, TRIO, [A.BarTarget("melody", 3, 2, 9)])


def test_key_distribution_and_draws(corpus_pieces):
    pieces = corpus_pieces("trio", 20)
    prior = A.key_distribution(pieces, TRIO)
    assert len(prior) == A.KEY_IDS and abs(sum(prior) - 1) < 1e-6
    keys = A.estimate_key(torch.from_numpy(pieces).long(), TRIO)
    assert np.allclose(prior, np.bincount(keys.numpy(), minlength=A.KEY_IDS) / 20)
    one_key = [0.0] * A.KEY_IDS
    one_key[A.parse_key("D:minor")] = 1.0
    assert A.draw_keys(one_key, 5, torch.Generator().manual_seed(0)).tolist() == [14] * 5


def test_outlines_are_the_attributes_of_evenly_spaced_pieces_and_draw_whole_rows(corpus_pieces):
    pieces = corpus_pieces("trio", 12)
    bank = A.outline_bank(pieces, TRIO, max_outlines=4)
    assert bank["shape"] == [4, 64, 3]
    json.dumps(bank)  # fits a model's hyper-parameters
    kept = Attributes.compute(torch.from_numpy(pieces[[0, 4, 7, 11]]).long(), TRIO)  # evenly spaced over 12
    drawn = A.draw_outlines(bank, 40, torch.Generator().manual_seed(0))
    assert drawn.shape == (40, 64, 3)
    rows = set()
    for i in range(40):  # each draw is one kept piece's key, onsets and register together
        match = [j for j in range(4) if drawn.select(torch.tensor([i])).equals(kept.select(torch.tensor([j])))]
        assert len(match) == 1
        rows.add(match[0])
    assert rows == {0, 1, 2, 3}
    with pytest.raises(ValueError, match="no pieces"):
        A.outline_bank(pieces[:0], TRIO)


def test_without_nulls_only_the_named_kinds():
    told = A.Attributes.null(2, 4, 3).with_key(A.parse_key("D:minor"))
    told.onsets[:, :, 0] = 5
    told.register[:, :, 1] = 7
    no_key = told.without(["key"])
    assert (no_key.key == A.KEY_NULL).all() and torch.equal(no_key.onsets, told.onsets)
    assert torch.equal(no_key.register, told.register) and not no_key.equals(told)
    assert told.without(A.KINDS).is_null() and told.without([]).equals(told)
    with pytest.raises(ValueError, match="unknown attribute kinds"):
        told.without(["tempo"])


def test_misses_names_what_a_piece_does_not_have_within_the_tolerances():
    # bar 0: 3 onsets, mean 63.67 (bin 14); bar 1: nothing; bar 2: 1 onset at 72 (bin 17); a short 4th bar of 8 steps
    x = melody_grid({0: on(60), 4: on(64), 8: on(67), 32: on(72)}, bars=3)
    x = torch.cat([x, torch.zeros(1, 8, 1, dtype=torch.long)], dim=1)
    told = Attributes.null(1, 4, 1)
    assert [m.any().item() for m in A.misses(told, x, MELODY)] == [False, False]  # nothing told never misses
    told.onsets[0, :, 0] = torch.tensor([4, 1, 1, 1])  # each within +-1 of what is played
    told.register[0, :, 0] = torch.tensor([15, A.REGISTER_EMPTY, A.REGISTER_EMPTY, A.REGISTER_NULL])
    key, bars = A.misses(told, x, MELODY)
    # bar 0: bin 14 for 15 follows; bar 1: empty as told; bar 2: notes where an empty bar was told
    assert bars[0, :, 0].tolist() == [False, False, True, False]
    told.onsets[0, 0, 0] = 5  # 3 played, 5 told
    assert A.misses(told, x, MELODY)[1][0, :, 0].tolist() == [True, False, True, False]
    told.onsets[0, 0, 0] = 4
    told.register[0, 0, 0] = 16  # two bins off
    assert A.misses(told, x, MELODY)[1][0, 0, 0]
    c_major = scale_piece(60)
    assert not A.misses(Attributes.null(1, 4, 1).with_key(A.parse_key("C:major")), c_major, MELODY)[0].item()
    assert A.misses(Attributes.null(1, 4, 1).with_key(A.parse_key("D:minor")), c_major, MELODY)[0].item()
    assert not key.item()


def test_select_picks_rows():
    a = Attributes.null(3, 2, 1).with_key(torch.tensor([0, 1, 2]))
    assert a.select(torch.tensor([2, 0])).key.tolist() == [2, 0]
