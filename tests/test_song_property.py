"""Nothing lost, as a property over real songs (issue 45): a quick subset of experiments/bench_song_edits.py.

In-place edits of real songs through the sample CLI, each checked outside its edit by an independent reader
(experiments/song_diff.py, mido); the checker and the property are shown to fail on a splice that loses a note.
"""

import collections

import mido
import pytest

from schmubert import song

pytestmark = pytest.mark.slow

SONGS = "multitrack-songs"


@pytest.fixture(scope="module")
def bench(experiment):
    return experiment("bench_song_edits")


@pytest.fixture(scope="module")
def diff(experiment):
    return experiment("song_diff")


def edits(bench, corpus, crowded):
    """An infill of every track with the bass set to none (a new instrument), a POP909 song read in 4/4 from its
    notes with the melody model, an accompaniment of two tracks, and an edit of instruments silent there (a no-op
    the CLI must warn of)."""
    Edit = bench.Edit
    return [Edit(corpus / SONGS / "Mr. Blue Sky.mid", "trio", "infill", (8, 12), ("melody", "bass", "drums"),
                 choices=(("bass", "none"),)),
            Edit(corpus / "pop909" / "022.mid", "melody", "infill", (10, 13), ("melody",)),
            Edit(corpus / SONGS / "Girls Just Want to Have Fun.mid", "trio", "accompaniment", (20, 26),
                 ("bass", "drums")),
            Edit(crowded, "trio", "infill", (16, 20), ("melody", "bass", "drums"),
                 choices=(("melody", "2"), ("bass", "0"), ("drums", "1")))]


def test_edits_of_real_songs_lose_nothing_and_warn_of_every_no_op(bench, corpus, crowded_song):
    outcomes = [bench.run_edit(e, 4, seed, {}) for seed, e in enumerate(edits(bench, corpus, crowded_song))]
    assert [o.status for o in outcomes] == ["written"] * 4, [o.reason for o in outcomes]
    for o in outcomes:
        assert o.diff.clean, (o.edit.describe(), o.diff.lost_notes[:3], o.diff.stray_notes[:3], o.diff.other)
        assert o.warned == o.diff.same_inside, o.edit.describe()  # a no-op is warned, a change is not
        assert not o.ignored, o.edit.describe()  # the instruments asked for (none included) are the ones edited
    assert outcomes[-1].diff.same_inside  # the silent instruments stay silent: the no-op happened, and was warned
    counts = bench.Counts()
    for o in outcomes:
        counts.add(o)
    table = bench.table({"quick": counts})
    assert "| **lost notes** | **0** |" in table and "| no-ops (warned / unwarned) | 1 (1 / 0) |" in table


def test_a_splice_that_loses_a_note_outside_the_edit_is_caught(bench, corpus, crowded_song, monkeypatch):
    real = song.splice_track
    monkeypatch.setattr(song, "splice_track", lambda *args, **kwargs: real(*args, **kwargs)[1:])  # its first note
    outcome = bench.run_edit(edits(bench, corpus, crowded_song)[0], 4, 0, {})
    assert outcome.status == "written" and len(outcome.diff.lost_notes) == 2  # melody and drums (bass is new)
    assert not outcome.diff.clean


def write(path, events):
    mid = mido.MidiFile(ticks_per_beat=480)
    track = mido.MidiTrack([mido.MetaMessage("track_name", name="Lead"), *events])
    mid.tracks.append(track)
    mid.save(str(path))
    return path


def test_the_checker_sees_every_kind_of_change_outside_the_cells_and_none_inside(diff, tmp_path):
    song_events = [mido.MetaMessage("set_tempo", tempo=500000), mido.Message("program_change", program=80),
                   mido.Message("control_change", control=7, value=100),
                   mido.Message("note_on", note=60, velocity=90), mido.Message("note_off", note=60, time=960),
                   mido.Message("note_on", note=62, velocity=90, time=960), mido.Message("note_off", note=62, time=480),
                   mido.Message("note_on", note=64, velocity=90, time=480), mido.Message("note_off", note=64, time=480)]
    before = diff.read(write(tmp_path / "a.mid", song_events))
    lead = ("Lead", False)
    cell = diff.Cell(lead, 1920, 2880)  # the note at 1920 (62) is regenerated
    assert before.notes == collections.Counter({(lead, 0, 960, 60, 90): 1, (lead, 1920, 2400, 62, 90): 1,
                                                (lead, 2880, 3360, 64, 90): 1})
    same_but_inside = [*song_events[:5], mido.Message("note_on", note=67, velocity=70, time=960),
                       mido.Message("note_off", note=67, time=480), *song_events[7:]]
    inside = diff.compare(before, diff.read(write(tmp_path / "b.mid", same_but_inside)), [cell])
    assert inside.clean and not inside.same_inside
    changed = [mido.MetaMessage("set_tempo", tempo=400000), *song_events[1:3],
               mido.Message("control_change", control=10, value=64),
               mido.Message("note_on", note=60, velocity=91), *song_events[4:]]
    outside = diff.compare(before, diff.read(write(tmp_path / "c.mid", changed)), [cell])
    assert outside.other["tempos"] == 2 and outside.other["controls"] == 1
    assert outside.lost_notes == [(lead, 0, 960, 60, 90)] and outside.stray_notes == [(lead, 0, 960, 60, 91)]
    assert diff.compare(before, before, [cell]).same_inside
