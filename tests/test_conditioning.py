import pytest
import torch

from schmubert import conditioning as c
from schmubert.tokens import get_tracks

SHAPE = (2, 64 * 16, 3)


def test_unconditional_knows_nothing():
    assert not c.unconditional(SHAPE).any()


def test_infill_masks_exactly_the_bars_on_all_tracks():
    known = c.infill(SHAPE, [(32, 48)])
    assert not known[:, 32 * 16:48 * 16].any()
    assert known[:, :32 * 16].all() and known[:, 48 * 16:].all()


def test_infill_several_ranges_and_selected_tracks():
    known = c.infill(SHAPE, [(0, 1), (10, 12)], track_ids=[0])
    assert (~known).sum() == 2 * 3 * 16
    assert not known[:, 10 * 16:12 * 16, 0].any() and known[:, :, 1:].all()


@pytest.mark.parametrize("rng", [(60, 65), (-1, 4), (5, 5)])
def test_range_outside_the_piece_is_an_error(rng):
    with pytest.raises(ValueError, match="outside the piece"):
        c.infill(SHAPE, [rng])


def test_in_context_asks_that_every_generated_track_keeps_bars_of_its_own():
    trio = get_tracks("trio")
    x = torch.zeros(64, 3, dtype=torch.long)
    assert c.in_context(c.infill((1, 64, 3), [(1, 3)])[0], x, trio)  # a gap in every track
    assert c.in_context(c.continuation((1, 64, 3), 2)[0], x, trio)
    assert not c.in_context(c.regenerate_tracks((1, 64, 3), [1, 2])[0], x, trio)  # bass and drums drawn whole
    assert not c.in_context(c.unconditional((1, 64, 3))[0], x, trio)
    known = c.regenerate_tracks((1, 64, 3), [1])[0]
    x[48:, :] = torch.tensor([t.pad_id for t in trio])  # a short last bar: PAD is known but tells nothing
    assert not c.in_context(known | (x > torch.tensor([t.mask_id for t in trio])), x, trio)


def test_parse_bar_range():
    assert c.parse_bar_range("32:48") == (32, 48)
    for bad in ("32-48", "a:b", "48:32", "3"):
        with pytest.raises(ValueError, match="bar range"):
            c.parse_bar_range(bad)


def test_regenerate_tracks_keeps_the_others():
    known = c.regenerate_tracks(SHAPE, [1, 2])
    assert known[..., 0].all() and not known[..., 1:].any()
    with pytest.raises(ValueError, match="outside"):
        c.regenerate_tracks(SHAPE, [3])


def test_continuation_keeps_the_start():
    known = c.continuation(SHAPE, 16)
    assert known[:, :256].all() and not known[:, 256:].any()
    with pytest.raises(ValueError):
        c.continuation(SHAPE, 65)


def test_interpolation_keeps_both_ends_and_joins_pieces():
    known = c.interpolation(SHAPE, 8, 4)
    assert known[:, :128].all() and known[:, -64:].all() and not known[:, 128:-64].any()
    with pytest.raises(ValueError):
        c.interpolation(SHAPE, 32, 32)
    a, b = torch.zeros(64 * 16, 3, dtype=torch.long), torch.ones(64 * 16, 3, dtype=torch.long)
    x = c.join_for_interpolation(a, b, 8, 4)
    assert (x[:-64] == 0).all() and (x[-64:] == 1).all()


def test_preserve_note_ends_keeps_the_note_before_a_span():
    from schmubert.tokens import TRACK_SETS

    x = torch.zeros(1, 32, 3, dtype=torch.long)
    x[0, 10, 0], x[0, 16, 0] = 50, 1  # a note ending where the span starts
    x[0, 10, 1] = 40  # bass note held into the span: no event at 16
    known = c.infill((1, 32, 3), [(1, 2)])
    out = x.clone()
    out[0, 16:, :2] = 0  # the sampler held on
    fixed = c.preserve_note_ends(x, known, out, TRACK_SETS["trio"])
    assert fixed[0, 16, 0] == 1  # note-off restored
    assert fixed[0, 16, 1] == 0  # a held note may go on
    out[0, 16, 0] = 60
    assert c.preserve_note_ends(x, known, out, TRACK_SETS["trio"])[0, 16, 0] == 60  # a new onset ends it too
