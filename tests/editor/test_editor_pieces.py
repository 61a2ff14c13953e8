from pathlib import Path

import numpy as np
import pytest

from schmubert import conditioning
from schmubert.editor import pieces
from schmubert.editor.pieces import PieceError, Region
from schmubert.tokens import (
    MELODIC_MASK,
    NOTE_OFF,
    STEPS_PER_BAR,
    TRACK_SETS,
    decode_melodic,
    midi_to_tokens,
    tokens_to_notes,
)

BAR = STEPS_PER_BAR
TRIO = TRACK_SETS["trio"]


def upload(path: Path, model, **kw):
    return pieces.read_upload(path.read_bytes(), path.name, model, **kw)


def test_an_upload_reads_like_the_sample_cli(trio_file, trio_model):
    up = upload(trio_file, trio_model)
    assert np.array_equal(up.tokens, midi_to_tokens(trio_file, "trio", 1024))
    assert up.warnings == [] and up.bars_in_file == 64 and up.qpm == pytest.approx(120)


@pytest.mark.parametrize("name, reason", [
    ("zero-bytes.mid", "empty"), ("text-not-midi.mid", "not a readable MIDI"), ("truncated.mid", "truncated"),
    ("corrupted-control-change.mid", "not a readable MIDI"), ("empty-no-notes.mid", "no notes")])
def test_unusable_files_say_why(corpus, trio_model, name, reason):
    with pytest.raises(PieceError, match=reason) as info:
        upload(corpus / "bad-input" / name, trio_model)
    assert str(info.value).startswith(name + ":")


def test_usable_but_odd_files_warn(corpus, trio_model, melody_model):
    bad = corpus / "bad-input"
    waltz = upload(bad / "waltz-3-4.mid", trio_model)
    assert any("3/4" in w for w in waltz.warnings)
    assert any("no bass instrument" in w for w in waltz.warnings)
    drums = upload(bad / "drums-only.mid", trio_model)
    assert drums.tokens[:, :2].max() == 0 and drums.tokens[:, 2].max() > 0
    assert any("no melody instrument" in w for w in drums.warnings)
    assert any("70 bars" in w for w in drums.warnings)
    pitches = upload(bad / "pitch-out-of-range.mid", trio_model)
    assert any("outside MIDI pitch 21-108 were dropped" in w for w in pitches.warnings)
    with pytest.raises(PieceError, match="no instrument the model can use"):
        upload(bad / "drums-only.mid", melody_model)


def test_start_bar_picks_the_window(corpus, trio_model):
    path = corpus / "bad-input" / "drums-only.mid"  # 70 bars
    whole = midi_to_tokens(path, "trio")
    up = upload(path, trio_model, start_bar=4)
    assert np.array_equal(up.tokens, whole[4 * BAR:68 * BAR])
    with pytest.raises(PieceError, match="start bar 70 is outside"):
        upload(path, trio_model, start_bar=70)


def test_json_round_trip_and_checks(trio_file):
    x = midi_to_tokens(trio_file, "trio", 1024)
    obj = pieces.piece_json(x, TRIO)
    assert np.array_equal(pieces.tokens_from_json(obj["tokens"], TRIO, 1024), x)
    assert [np.asarray(n).reshape(-1, 3).tolist() for n in obj["notes"].values()] == [
        n.tolist() for n in tokens_to_notes(x, "trio")]
    bad = dict(obj["tokens"], bass=obj["tokens"]["bass"][:-1])
    with pytest.raises(PieceError, match="tokens.bass must be a list of 1024"):
        pieces.tokens_from_json(bad, TRIO, 1024)
    with pytest.raises(PieceError, match="values must lie in 0..90"):
        pieces.tokens_from_json(dict(obj["tokens"], melody=[91] * 1024), TRIO, 1024)
    with pytest.raises(PieceError, match="outside the piece"):
        pieces.regions_from_json([{"track": "bass", "start": 10, "end": 2000}], TRIO, 1024)
    with pytest.raises(PieceError, match="needs a track"):
        pieces.regions_from_json([{"track": "piano", "start": 0, "end": 16}], TRIO, 1024)


def test_known_mask_uses_conditioning_for_bars_and_steps_for_notes():
    shape = (1, 1024, 3)
    bars = pieces.known_mask(shape, [Region(1, 32 * BAR, 48 * BAR)])
    assert bars.equal(conditioning.infill(shape, [(32, 48)], [1]))
    note = pieces.known_mask(shape, [Region(0, 100, 103), Region(2, 0, 16)])
    assert (~note).sum() == 3 + 16 and not note[0, 100:103, 0].any() and not note[0, :16, 2].any()
    x = np.zeros((1024, 3), dtype=np.int64)
    assert (pieces.masked(x, note[0].numpy(), TRIO)[100:103, 0] == MELODIC_MASK).all()


def melodic(notes, steps=128):
    """A trio grid with these melody notes (start, end, pitch) and bass/drums silent."""
    from schmubert.tokens import encode_melodic
    x = np.zeros((steps, 3), dtype=np.int64)
    x[:, 0] = encode_melodic(np.array(notes).reshape(-1, 3), steps)
    return x


def notes_of(x, k=0):
    return [tuple(n) for n in decode_melodic(x[:, k]).tolist()]


def test_transpose_moves_only_note_ons_in_the_region():
    x = melodic([(0, 4, 60), (16, 20, 62), (40, 44, 64)])
    y = pieces.transpose(x, [Region(0, 16, 32)], 5, TRIO)
    assert notes_of(y) == [(0, 4, 60), (16, 20, 67), (40, 44, 64)]
    assert np.array_equal(np.delete(y, 16, axis=0), np.delete(x, 16, axis=0))
    with pytest.raises(PieceError, match="outside MIDI pitch"):
        pieces.transpose(x, [Region(0, 0, 128)], 50, TRIO)


def test_clear_silences_the_region_and_cuts_notes_sounding_into_it():
    x = melodic([(0, 20, 60), (20, 24, 62), (40, 44, 64)])
    y = pieces.clear(x, [Region(0, 16, 32)], TRIO)
    assert notes_of(y) == [(0, 16, 60), (40, 44, 64)]
    assert y[16, 0] == NOTE_OFF


def test_paste_writes_the_source_region_elsewhere_and_keeps_the_rest():
    src = melodic([(0, 4, 60), (4, 8, 62)])
    dst = melodic([(30, 34, 70), (60, 70, 72)])
    y = pieces.paste(src, dst, [Region(0, 0, 16)], 32, TRIO)
    assert notes_of(y) == [(30, 32, 70), (32, 36, 60), (36, 40, 62), (60, 70, 72)]
    drums = np.zeros((128, 3), dtype=np.int64)
    drums[3, 2] = 5
    assert pieces.paste(drums, np.zeros_like(drums), [Region(2, 0, 16)], 16, TRIO)[19, 2] == 5


def test_shift_moves_content_and_leaves_silence_behind():
    x = melodic([(0, 4, 60), (16, 20, 62), (18, 22, 63), (64, 68, 65)])
    y = pieces.shift(x, [Region(0, 16, 32)], 16, TRIO)
    assert notes_of(y) == [(0, 4, 60), (32, 34, 62), (34, 38, 63), (64, 68, 65)]
    z = pieces.shift(x, [Region(0, 0, 16)], -8, TRIO)  # partly off the start: that part is dropped
    assert notes_of(z)[0] == (16, 18, 62)


# --- songs: instruments chosen by their notes, bars read from them -------------------------------------------------


def test_lanes_and_song_pickers_take_the_instruments_that_play(crowded_song, trio_model):
    """The first instrument of each GM range plays only at the start; the lanes, the song view and its pickers
    take the real lead, bass and kit, say why, and no longer warn that the first one is used."""
    data = crowded_song.read_bytes()
    up = pieces.read_upload(data, crowded_song.name, trio_model)
    assert not any("first one is used" in w for w in up.warnings)
    view = pieces.read_song_view(data, crowded_song.name, trio_model, 0, {})
    assert view.assignment == {"melody": 5, "bass": 3, "drums": 4}
    assert np.array_equal(up.tokens[:24 * BAR], view.original[:24 * BAR])  # the same instruments either way
    choices = view.json("s1")["choices"]
    assert choices["melody"]["text"].startswith("melody = #5 'Lead' (GM 81") and not choices["melody"]["asked"]
    assert [r["index"] for r in choices["bass"]["runners_up"]] == [0] and "monophonic" in choices["bass"]["reason"]
    asked = pieces.read_song_view(data, crowded_song.name, trio_model, 0, {"bass": "0"}).json("s2")["choices"]
    assert asked["bass"]["asked"] and asked["bass"]["text"].endswith("(as asked)")


def test_a_pop909_song_is_read_in_4_4_from_its_notes(corpus, trio_model):
    path = corpus / "pop909" / "003.mid"  # 2/4 throughout, its first downbeat 2 beats in
    view = pieces.read_song_view(path.read_bytes(), path.name, trio_model, 0, {})
    assert view.window == (1, 65) and view.assignment["melody"] == 0
    assert any("2/4 throughout" in n and "read in 4/4 from its notes" in n for n in view.notes)
    assert any("bar 0 cannot be edited; the lanes start at bar 1" in n for n in view.notes)
    forced = pieces.read_song_view((corpus / "pop909" / "034.mid").read_bytes(), "034.mid", trio_model, 4, {},
                                   "4/4")  # notes in 3: read in 4/4 only when asked
    assert any("read in 4/4 as asked" in n for n in forced.notes)
    with pytest.raises(PieceError, match="notes move in 3 beats"):
        pieces.read_song_view((corpus / "pop909" / "034.mid").read_bytes(), "034.mid", trio_model, 4, {})
