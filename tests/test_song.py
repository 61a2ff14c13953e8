"""Songs edited in place (schmubert/song.py): bars and runs from the time signatures, the track choice, the window
around the edit, and the splice rules, on hand-made songs and real files of the corpus."""

from __future__ import annotations

import collections
import warnings
from pathlib import Path

import numpy as np
import pretty_midi
import pytest
import torch

from schmubert import song
from schmubert.backbones import build
from schmubert.checkpoints import checkpoint_hparams, save_model
from schmubert.diffusion import NoiseConfig
from schmubert.sample import main
from schmubert.tokens import TRACK_SETS, canonicalize, midi_to_tokens, role_of, tokens_to_notes

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"
TRIO = TRACK_SETS["trio"]
QPM, RES = 97.0, 480
FAST = ["--steps", "6", "--no-progress", "--no-wav"]


# --- songs made by hand ------------------------------------------------------------------------------------------


def make_song(path: Path, bars: int = 72, qpm: float = QPM) -> Path:
    """A Lakh trio turned into a ``bars``-bar song at ``qpm``: melody on an electric piano (GM 4), bass on GM 34,
    drums, a string pad (GM 48) holding a chord per bar, velocities that vary by bar and a key signature, CCs."""
    x = canonicalize(midi_to_tokens(sorted((CORPUS / "lakh-trio-64bar").glob("*.mid"))[0], "trio", 1024))
    x = np.concatenate([x, x[:(bars - 64) * 16]]) if bars > 64 else x[:bars * 16]
    sec = 60.0 / qpm / 4  # seconds per 16th
    pm = pretty_midi.PrettyMIDI(initial_tempo=qpm, resolution=RES)
    pm.time_signature_changes.append(pretty_midi.TimeSignature(4, 4, 0.0))
    pm.key_signature_changes.append(pretty_midi.KeySignature(2, 0.0))
    for (name, program, is_drum), notes in zip((("Lead", 4, False), ("Bass", 34, False), ("Kit", 0, True)),
                                               tokens_to_notes(x, "trio"), strict=True):
        inst = pretty_midi.Instrument(program, is_drum=is_drum, name=name)
        for start, end, pitch in notes.tolist():
            velocity = 50 + 7 * (start // 16 % 8) if name == "Lead" else 96 if name == "Bass" else (
                110 if pitch == 36 else 70)
            inst.notes.append(pretty_midi.Note(velocity, pitch, start * sec, end * sec))
        pm.instruments.append(inst)
    pad = pretty_midi.Instrument(48, name="Strings")
    pad.control_changes.append(pretty_midi.ControlChange(7, 90, 0.0))
    for b in range(bars):
        for p in (60, 64, 67):
            pad.notes.append(pretty_midi.Note(40, p, b * 16 * sec, (b + 1) * 16 * sec))
    pm.instruments.append(pad)
    pm.write(str(path))
    return path


@pytest.fixture(scope="module")
def song72(tmp_path_factory) -> Path:
    return make_song(tmp_path_factory.mktemp("song") / "song72.mid")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    denoiser = build("conv", "trio", "tiny")
    hp = checkpoint_hparams("conv", "trio", denoiser.config, NoiseConfig(timesteps=32), 1024)
    return save_model(tmp_path_factory.mktemp("model") / "tiny.ckpt", denoiser, hp)


# --- comparing files the way a user would (pretty_midi) ------------------------------------------------------------


def read(path: Path) -> pretty_midi.PrettyMIDI:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pretty_midi.PrettyMIDI(str(path))


def by_name(pm: pretty_midi.PrettyMIDI) -> dict[tuple, pretty_midi.Instrument]:
    return {(i.name, i.program, i.is_drum): i for i in pm.instruments}


def notes_of(inst, keep=lambda n: True) -> collections.Counter:
    return collections.Counter((n.pitch, round(n.start, 6), round(n.end, 6), n.velocity) for n in inst.notes
                               if keep(n))


def assert_kept(before: Path, after: Path, bars: tuple[int, int], changed: set, late: int = 0) -> dict:
    """Everything but the notes of ``changed`` instruments (names, or (name, program, is_drum) where names
    repeat) inside ``bars`` (4/4 bars from the start, ``late`` ticks after the bar lines) is identical; returns
    per changed instrument the notes that are new."""
    a, b = read(before), read(after)
    t0, t1 = (a.tick_to_time(bar * 4 * a.resolution + late) for bar in bars)
    for get in (lambda p: p.get_tempo_changes()[0].tolist(), lambda p: p.get_tempo_changes()[1].tolist(),
                lambda p: [(t.numerator, t.denominator, t.time) for t in p.time_signature_changes],
                lambda p: [(k.key_number, k.time) for k in p.key_signature_changes], lambda p: p.resolution):
        assert get(a) == get(b)
    assert b.get_end_time() == pytest.approx(a.get_end_time(), abs=1e-6)
    ia, ib = by_name(a), by_name(b)
    assert ia.keys() == ib.keys() and len(a.instruments) == len(b.instruments)
    new = {}
    for key, inst in ia.items():
        other = ib[key]
        assert [(c.number, c.value, c.time) for c in inst.control_changes] == [
            (c.number, c.value, c.time) for c in other.control_changes]
        if key[0] not in changed and key not in changed:
            assert notes_of(inst) == notes_of(other), key  # identical everywhere
            continue
        outside = lambda n: n.end <= t0 + 1e-9 or n.start >= t1 - 1e-9  # noqa: E731 - wholly outside
        assert notes_of(inst, outside) <= notes_of(other), key
        starts_before = lambda n: n.start < t0 - 1e-9  # noqa: E731
        # border rule: a note sounding into the span is kept, cut at its start
        crossing = {(n.pitch, round(n.start, 6), n.velocity) for n in inst.notes if starts_before(n) and n.end > t0}
        assert crossing <= {(n.pitch, round(n.start, 6), n.velocity) for n in other.notes}
        assert all(n.end <= t0 + 1e-6 for n in other.notes if starts_before(n))
        new[key[0]] = [n for n in other.notes if t0 - 1e-9 <= n.start < t1 - 1e-9]
        assert all(n.end <= t1 + 1e-6 for n in new[key[0]])  # a generated note ends at the span's end at the latest
    return new


def on_beat_grid(pm: pretty_midi.PrettyMIDI, notes) -> bool:
    """Every note starts on a 16th of the song's own beats (ticks, through its tempo map)."""
    return all(pm.time_to_tick(n.start) % (pm.resolution // 4) == 0 for n in notes)


# --- the CLI on a song ------------------------------------------------------------------------------------------


def test_infill_past_bar_64_of_a_97_bpm_song_keeps_everything_else(tiny, song72, tmp_path, capsys):
    assert main(["--checkpoint", str(tiny), "--out", str(tmp_path), *FAST, "--input", str(song72),
                 "--infill", "66:70"]) == 0
    out = tmp_path / "sample_000.mid"
    new = assert_kept(song72, out, (66, 70), {"Lead", "Bass", "Kit"})
    assert sum(map(len, new.values())) > 0
    pm = read(out)
    assert on_beat_grid(pm, [n for notes in new.values() for n in notes])
    said = capsys.readouterr().out
    assert "melody = #0 'Lead' (GM 4" in said and "window bars 8:72" in said and "edited bars 66:70" in said
    # velocity rule: the median of the lead's notes in the 4 bars before and after the span
    original = read(song72)
    bar_of = lambda n: original.time_to_tick(n.start) // (4 * RES)  # noqa: E731
    near = [n.velocity for n in by_name(original)[("Lead", 4, False)].notes if 62 <= bar_of(n) < 66
            or 70 <= bar_of(n) < 74]
    assert {n.velocity for n in new["Lead"]} <= {int(np.median(near))}


def test_generate_tracks_inside_bars_changes_only_that_track(tiny, song72, tmp_path):
    assert main(["--checkpoint", str(tiny), "--out", str(tmp_path), *FAST, "--input", str(song72),
                 "--infill", "40:48", "--generate-tracks", "bass"]) == 0
    new = assert_kept(song72, tmp_path / "sample_000.mid", (40, 48), {"Bass"})
    assert new["Bass"] and on_beat_grid(read(tmp_path / "sample_000.mid"), new["Bass"])


@pytest.mark.parametrize("args, bars, changed", [
    (["--continue-bars", "60"], (60, 72), {"Lead", "Bass", "Kit"}),
    (["--generate-tracks", "drums", "--start-bar", "8", "--bars", "16"], (8, 24), {"Kit"}),
    (["--interpolate", "SELF", "--start-bar", "40", "--bars", "16", "--keep-bars", "4"], (44, 56),
     {"Lead", "Bass", "Kit"}),
])
def test_every_scenario_splices_into_the_song(tiny, song72, tmp_path, args, bars, changed):
    args = [str(song72) if a == "SELF" else a for a in args]
    assert main(["--checkpoint", str(tiny), "--out", str(tmp_path), *FAST, "--input", str(song72), *args]) == 0
    assert_kept(song72, tmp_path / "sample_000.mid", bars, changed)


def test_chosen_tracks_by_name_and_index_and_the_trio_only_option(tiny, song72, tmp_path, capsys):
    args = ["--checkpoint", str(tiny), *FAST, "--input", str(song72), "--infill", "8:12"]
    assert main([*args, "--out", str(tmp_path / "a"), "--melody-track", "strings", "--bass-track", "1"]) == 0
    assert "melody = #3 'Strings' (GM 48" in capsys.readouterr().out
    assert_kept(song72, tmp_path / "a" / "sample_000.mid", (8, 12), {"Strings", "Bass", "Kit"})
    assert main([*args, "--out", str(tmp_path / "b"), "--no-whole-song"]) == 0
    trio = read(tmp_path / "b" / "sample_000.mid")
    assert [i.name for i in trio.instruments] == ["melody", "bass", "drums"]
    assert trio.get_tempo_changes()[1].tolist() == [120.0]
    assert main([*args, "--out", str(tmp_path / "c"), "--drum-track", "Lead"]) == 2
    assert "--drum-track Lead: the drums track needs a drum-channel instrument" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "c"), "--bass-track", "Tuba"]) == 2
    assert "no instrument is named 'Tuba'" in capsys.readouterr().err


# --- the module ---------------------------------------------------------------------------------------------------


def test_window_is_placed_around_the_edit_with_context_both_sides():
    run = song.Run(0, 300, 0)
    assert song.place_window(song.Run(0, 72, 0), (66, 70), 64) == (8, 72)
    assert song.place_window(run, (200, 208), 64) == (172, 236)
    assert song.place_window(run, (0, 4), 64) == (0, 64)
    assert song.place_window(song.Run(0, 20, 0), (4, 8), 64) == (0, 20)
    assert song.place_window(run, (0, 100), 64) == (0, 116)  # longer than the window: the sampler slides
    assert song.place_window(run, (20, 24), 64, start_bar=16) == (16, 80)
    with pytest.raises(ValueError, match="outside the window of --start-bar 30"):
        song.place_window(run, (20, 24), 64, start_bar=30)


def test_files_the_grid_cannot_hold_keep_clear_errors(tmp_path):
    with pytest.raises(ValueError, match=r"waltz-3-4.mid: in 3/4 time.*16 sixteenths"):
        song.read_song(CORPUS / "bad-input" / "waltz-3-4.mid")
    with pytest.raises(ValueError, match="no notes"):
        song.read_song(CORPUS / "bad-input" / "empty-no-notes.mid")
    with pytest.raises(ValueError, match="unreadable MIDI"):
        song.read_song(CORPUS / "bad-input" / "truncated.mid")
    pm = pretty_midi.PrettyMIDI(initial_tempo=100)
    pm.time_signature_changes.append(pretty_midi.TimeSignature(12, 8, 0))
    inst = pretty_midi.Instrument(0)
    inst.notes = [pretty_midi.Note(80, 60, t, t + 0.2) for t in np.arange(0, 20, 0.3)]
    pm.instruments.append(inst)
    pm.write(str(tmp_path / "jig.mid"))
    with pytest.raises(ValueError, match="in 12/8 time"):
        song.read_song(tmp_path / "jig.mid")
    # a performance without a tempo map: onsets anywhere between the beats
    pm.time_signature_changes[0] = pretty_midi.TimeSignature(4, 4, 0)
    inst.notes = [pretty_midi.Note(80, 60, t, t + 0.2) for t in np.random.default_rng(0).uniform(0, 20, 80)]
    pm.write(str(tmp_path / "free.mid"))
    free = song.read_song(tmp_path / "free.mid")
    with pytest.raises(ValueError, match="off the 16th grid"):
        song.plan_edit(free, song.choose_tracks(free, TRIO), TRIO, (2, 4), np.ones((32, 3), bool), 64)


def test_a_part_played_a_constant_few_ticks_ahead_is_on_the_grid():
    rng = np.random.default_rng(0)
    ahead = rng.integers(0, 64, 200) - 0.19  # Aicha's pad: every onset 18 of 96 ticks early
    assert not song.off_grid(ahead - np.rint(ahead)).any()
    free = rng.uniform(0, 64, 400)  # a performance: about three in four off, as before
    assert 0.65 < song.off_grid(free - np.rint(free)).mean() < 0.85
    swung = np.concatenate([np.arange(0, 64, 4.0), np.arange(0, 64, 4.0) + 8 / 3])  # eighths swung 2:1
    assert song.off_grid(swung - np.rint(swung)).mean() == pytest.approx(0.5)


def test_several_time_signatures_edit_only_the_4_4_bars(tmp_path):
    pm = pretty_midi.PrettyMIDI(initial_tempo=120, resolution=RES)  # a bar of 4/4 lasts 2 s, of 3/4 1.5 s
    pm.time_signature_changes += [pretty_midi.TimeSignature(3, 4, 0), pretty_midi.TimeSignature(4, 4, 3.0),
                                  pretty_midi.TimeSignature(3, 4, 23.0), pretty_midi.TimeSignature(4, 4, 26.0)]
    inst = pretty_midi.Instrument(0, name="Piano")
    inst.notes = [pretty_midi.Note(80, 60 + i % 12, t, t + 0.25) for i, t in enumerate(np.arange(0, 40, 0.5))]
    pm.instruments.append(inst)
    pm.write(str(tmp_path / "meters.mid"))
    s = song.read_song(tmp_path / "meters.mid")
    assert [b.meter for b in s.bars[:4]] == ["3/4", "3/4", "4/4", "4/4"]
    assert [(r.first, r.end) for r in s.runs] == [(2, 12), (14, 21)]
    assert s.runs[0].start_tick == 3 * RES * 2 and "only its 4/4 bars 2:12, 14:21" in song.editable_note(s)
    with pytest.raises(ValueError, match="not all 4/4 bars"):
        song.edit_run(s, (10, 15))
    plan = song.plan_edit(s, song.choose_tracks(s, TRIO), TRIO, (5, 7), np.ones((32, 3), bool), 64)
    assert plan.window == (2, 12) and "several time signatures (3/4 besides 4/4)" in plan.notes[0]
    out = song.write_song(plan.splice(np.zeros_like(plan.x), TRIO), tmp_path / "out.mid")
    signatures = lambda p: [(t.numerator, t.denominator, t.time) for t in p.time_signature_changes]  # noqa: E731
    assert signatures(read(out)) == signatures(read(tmp_path / "meters.mid"))
    kept = read(out).instruments[0]
    bar5 = 3.0 + 3 * 2.0  # bars 5-6 (4/4) start 9 s into the song: silenced by the all-rest take
    assert not [n for n in kept.notes if bar5 - 1e-6 <= n.start < bar5 + 4.0 - 1e-6]
    assert len(kept.notes) == len(inst.notes) - 8


def splice_random(path: Path, edit: tuple[int, int], seed: int = 0, tracks=TRIO, choices=None,
                  keep_instruments: bool = True):
    """Splice random (untrained-model-like) tokens into bars ``edit`` of a real file (roles the file lacks only
    unless ``keep_instruments``); returns the song, the assignment and the spliced Score."""
    s = song.read_song(path)
    assignment = song.choose_tracks(s, tracks, choices)
    regenerate = np.ones(((edit[1] - edit[0]) * 16, len(tracks)), bool)
    regenerate[:, [assignment[t.name] is None for t in tracks]] = not keep_instruments
    plan = song.plan_edit(s, assignment, tracks, edit, regenerate, 64)
    rng = np.random.default_rng(seed)
    tokens = plan.x.copy()
    for k, t in enumerate(tracks):
        draw = rng.integers(2, 60, len(tokens)) if not t.is_drum else rng.integers(0, 8, len(tokens))
        tokens[:, k] = np.where(plan.write[:, k] & (rng.random(len(tokens)) < 0.3), draw,
                                np.where(plan.write[:, k], 0, tokens[:, k]))
    return s, assignment, plan.splice(tokens, tracks)


@pytest.mark.parametrize("name, edit", [("multitrack-songs/Aicha.mid", (66, 70)),
                                        ("multitrack-songs/Les Yeux Revolvers.mid", (20, 28)),
                                        ("pop909/177.mid", (30, 34)),
                                        ("pop909/032.mid", (2, 6))])
def test_real_songs_keep_everything_outside_the_edit(name, edit, tmp_path):
    s, assignment, score = splice_random(CORPUS / name, edit)
    out = song.write_song(score, tmp_path / "out.mid")
    changed = {(t.name, int(t.program), bool(t.is_drum)) for i in assignment.values() if i is not None
               for t in [s.score.tracks[i]]}
    late = s.runs[0].start_tick - s.bars[s.runs[0].first].start  # POP909's 032.mid: 44 ticks after the grid
    assert late == (44 if "032" in name else 0)
    new = assert_kept(CORPUS / name, out, edit, changed, late)
    assert any(new.values())
    with pytest.raises(FileExistsError):
        song.write_song(score, out)  # never over an existing file unless asked


def test_a_role_the_song_lacks_becomes_a_new_instrument():
    s, assignment, score = splice_random(CORPUS / "pop909" / "032.mid", (2, 6), keep_instruments=False)  # no bass
    assert assignment["bass"] is None and assignment["drums"] is None
    names = [t.name for t in score.tracks]
    assert names[-2:] == ["bass (SCHmUBERT)", "drums (SCHmUBERT)"] and len(names) == len(s.score.tracks) + 2


def test_drum_hits_use_the_kits_pitches_and_velocities_by_class():
    notes = np.array([[0, 60, 36, 120], [120, 180, 42, 50], [240, 300, 44, 40], [360, 420, 36, 110]])
    s = song.Song(None, "x", [], [], 10_000, [])  # only the grid facts splice_track needs
    s.score = type("S", (), {"ticks_per_quarter": 480})()
    run = song.Run(0, 8, 0)
    row = np.zeros(128, dtype=np.int64)
    row[16 * 4] = 1 | 4  # kick + closed hi-hat in bar 4
    write = np.zeros(128, bool)
    write[16 * 4:16 * 5] = True
    out = song.splice_track(s, run, 0, notes, row, write, TRIO[2])
    added = out[out[:, 0] == 4 * 1920]
    assert sorted(added[:, 2].tolist()) == [36, 42]  # 42 is the kit's most used closed hi-hat pitch
    assert dict(zip(added[:, 2].tolist(), added[:, 3].tolist(), strict=True)) == {36: 115, 42: 45}
    assert (added[:, 1] - added[:, 0] == 60).all()  # the kit's median note length


# --- roles chosen by the evidence of the notes ----------------------------------------------------------------------


def test_roles_are_chosen_by_their_notes_not_as_the_first_of_each_gm_range(crowded_song):
    """The issue's 17-instrument song in small: the first synth bass (25 notes), drum track (2 hits) and electric
    piano (chords) of their ranges lose to the real bass, kit and monophonic lead, which the reasons name."""
    s = song.read_song(crowded_song)
    choices = song.choose_roles(s, TRIO)
    assert {role: c.index for role, c in choices.items()} == {"melody": 5, "bass": 3, "drums": 4}
    assert song.choose_tracks(s, TRIO) == {"melody": 5, "bass": 3, "drums": 4}
    assert "monophonic at 100%" in choices["melody"].reason and "median pitch A4" in choices["melody"].reason
    assert [i for i, _ in choices["bass"].runners_up] == [0] and [i for i, _ in choices["drums"].runners_up] == [1]
    lines = song.describe_choices(s, choices)
    assert lines[1].startswith("bass = #3 'Bass' (GM 33") and "runners-up: #0 'Synth Bass'" in lines[1]
    assert "(choose one with --drum-track)" in lines[2]
    asked = song.choose_roles(s, TRIO, {"bass": "Synth Bass", "drums": "none"})  # an explicit choice wins
    assert (asked["bass"].index, asked["bass"].asked, asked["drums"].index, asked["melody"].index) == (0, True, None, 5)
    assert song.describe_choices(s, asked)[1] == "bass = #0 'Synth Bass' (GM 38 Synth Bass 1, 25 notes) (as asked)"


@pytest.mark.parametrize("name, role, index, first_of_range", [
    ("In Too Deep.mid", "drums", 2, 1),  # the first drum track has 1 note, the kit 1699
    ("Mr. Blue Sky.mid", "melody", 0, 1),  # the lead is a flute (GM 73); the first of GM 0-31 a chordal piano
    ("What a Fool Believes.mid", "melody", 2, 0),  # 'Lead Voca' on an alto sax, not the piano
    ("Funkytown.mid", "bass", 0, None),  # the bass line is on GM 87, outside the bass programs
])
def test_real_songs_where_the_first_of_each_range_is_wrong(name, role, index, first_of_range):
    s = song.read_song(CORPUS / "multitrack-songs" / name)
    old = next((i for i, t in enumerate(s.score.tracks) if len(t.notes) and role_of(int(t.program), t.is_drum) == role),
               None)
    assert old == first_of_range != index
    assert song.choose_tracks(s, TRIO)[role] == index


def test_a_new_role_adds_a_scorer_and_an_unknown_one_is_refused(monkeypatch, crowded_song):
    s = song.read_song(crowded_song)
    evidence = song.song_evidence(s)

    def piano_fit(e, _):  # a polyphonic instrument: chords are its evidence
        return None if e.is_drum else song.Fit(1 - e.monophonic, f"chords at {1 - e.monophonic:.0%} of its onsets")

    monkeypatch.setitem(song.ROLE_SCORERS, "piano", piano_fit)
    chosen = song.assign_roles(evidence, ["melody", "piano"])
    assert chosen["melody"].index == 5 and chosen["piano"].index in (2, 6)
    assert "chords at 100%" in chosen["piano"].reason
    assert song.assign_roles(evidence, ["melody", "guitar"])["guitar"].index is None  # every family has a scorer
    with pytest.raises(ValueError, match="no rule chooses a kazoo instrument"):
        song.assign_roles(evidence, ["melody", "kazoo"])


def test_a_role_nothing_fits_is_none_with_the_reason():
    s = song.read_song(CORPUS / "pop909" / "032.mid")  # MELODY, BRIDGE, PIANO: no low line, no drums
    choices = song.choose_roles(s, TRIO)
    assert choices["melody"].index == 0 and "named 'MELODY'" in choices["melody"].reason
    assert choices["bass"].index is None and "no instrument fits" in choices["bass"].reason
    assert choices["drums"].index is None and "no instrument of the song can play it" in choices["drums"].reason


def test_the_cli_edits_the_instruments_that_play(tiny, crowded_song, tmp_path, capsys):
    """Bars 16-20 of the crowded song: the real parts are chosen and written; the first of each range, silent
    there, would have given the song back unchanged."""
    assert main(["--checkpoint", str(tiny), "--out", str(tmp_path), *FAST, "--input", str(crowded_song),
                 "--infill", "16:20"]) == 0
    said = capsys.readouterr().out
    assert "chosen: melody = #5 'Lead' (GM 81" in said and "chosen: drums = #4 'Kit'" in said
    new = assert_kept(crowded_song, tmp_path / "sample_000.mid", (16, 20), {"Lead", "Bass", "Kit"})
    assert all(new[name] for name in ("Lead", "Bass", "Kit"))


# --- meters: time signatures that cannot be the song's ----------------------------------------------------------------


@pytest.mark.parametrize("name, doubt", [
    ("003.mid", "it is in 2/4 throughout"),
    ("022.mid", "its time signature 1/4 makes bars of one beat"),  # 4/4 and 1/4 at tick 0
    ("043.mid", "its 2/4 at tick 2489 starts inside a bar of 4/4"),
])
def test_pop909_signatures_that_cannot_be_its_meter_are_read_from_its_notes(name, doubt):
    s = song.read_song(CORPUS / "pop909" / name)
    assert doubt in s.meter_note and "read in 4/4 from its notes instead" in s.meter_note
    assert sum(r.bars for r in s.runs) >= len(s.bars) - 1  # every bar but a pickup can be edited
    assert all(b.end - b.start == 4 * s.resolution for b in s.bars[1:])


def test_genuine_meters_keep_their_signatures_or_their_clear_error():
    assert song.read_song(CORPUS / "pop909" / "032.mid").meter_note is None  # 4/4 as its file says
    with pytest.raises(ValueError, match="in 3/4 time"):
        song.read_song(CORPUS / "bad-input" / "waltz-3-4.mid")
    with pytest.raises(ValueError, match=r"1/4 makes bars of one beat.*notes move in 3 beats to the bar"):
        song.read_song(CORPUS / "pop909" / "034.mid")  # a 1/4 file whose notes are in 3
    forced = song.read_song(CORPUS / "pop909" / "034.mid", time_signature="4/4")
    assert "read in 4/4 as asked (the file says 1/4); by its notes, first downbeat" in forced.meter_note
    assert forced.runs


def synthetic_meter(beats: int, pickup: int, bars: int = 24) -> tuple[list[np.ndarray], list[bool]]:
    """Notes in ``beats`` to the bar after a ``pickup`` of quarter notes (480 ticks each): a low note held on each
    downbeat, a chord on the other beats, a kick on the downbeat and hi-hats on every eighth."""
    bar = 480 * beats
    starts = [pickup * 480 + b * bar for b in range(bars)]
    bass = np.array([[t, t + bar - 10, 36 + b % 3 * 2, 90] for b, t in enumerate(starts)])
    chords = np.array([[t + k * 480, t + k * 480 + 200, p, 70] for t in starts for k in range(1, beats)
                       for p in (60, 64, 67)])
    drums = np.array([[t, t + 60, 36, 100] for t in starts] +
                     [[e * 240, e * 240 + 60, 42, 60] for e in range(2 * (pickup + beats * bars))])
    return [bass, chords, drums], [False, False, True]


def test_the_meter_of_the_notes_finds_the_downbeat_and_the_beats():
    four = song.music_meter(*synthetic_meter(4, pickup=1), resolution=480)
    assert (four.beats, four.downbeat) == (4, 4)  # the first downbeat a quarter in
    three = song.music_meter(*synthetic_meter(3, pickup=0), resolution=480)
    assert three.beats == 3


def test_a_pop909_song_read_from_its_notes_keeps_everything_outside_the_edit(tmp_path):
    name, edit = "pop909/022.mid", (10, 14)
    s, assignment, score = splice_random(CORPUS / name, edit)
    out = song.write_song(score, tmp_path / "out.mid")
    late = s.runs[0].start_tick - s.runs[0].first * 4 * s.resolution  # where bar 0 would start, pickup aside
    new = assert_kept(CORPUS / name, out, edit, {"MELODY"}, late)
    assert new["MELODY"] and on_beat_grid_from(read(out), new["MELODY"], s.runs[0].start_tick)


def on_beat_grid_from(pm: pretty_midi.PrettyMIDI, notes, tick: int) -> bool:
    """Every note starts on a 16th of the grid through ``tick`` (a song's first downbeat, phase included)."""
    return all((pm.time_to_tick(n.start) - tick) % (pm.resolution // 4) == 0 for n in notes)


# --- takes that change nothing ----------------------------------------------------------------------------------------


def test_a_take_that_is_the_input_says_why_silent_instruments(crowded_song):
    """The first instrument of each range, asked for, is silent in bars 16-20: a take that draws nothing there is
    the input; the warning says so and names the instruments that play there and could take the role."""
    s = song.read_song(crowded_song)
    assignment = song.choose_tracks(s, TRIO, {"melody": "2", "bass": "0", "drums": "1"})
    plan = song.plan_edit(s, assignment, TRIO, (16, 20), np.ones((64, 3), bool), 64)
    same = plan.unchanged(plan.x.copy(), TRIO, copy_prior=True)
    assert same.bars == (16, 20) and same.silent == ("melody", "bass", "drums")
    assert same.players == {"melody": [(5, 14)], "bass": [(3, 32)], "drums": [(4, 32)]}  # not the chordal pad
    cli = same.cli_message(s)
    assert cli.startswith("warning: bars 16:20 came back unchanged: the melody, bass and drums are silent there")
    assert "--melody-track 5 (#5 'Lead', 14 notes there)" in cli and "--drum-track 4 (#4 'Kit', 32 notes there)" in cli
    assert "#3 'Bass' in the bass picker (32 notes there)" in same.editor_message(s)
    take = plan.x.copy()
    take[(17 - plan.window[0]) * 16, 1] = 40  # one new bass note in bar 17: the take differs
    assert plan.unchanged(take, TRIO, copy_prior=True) is None


def test_a_take_that_is_the_input_says_why_a_copied_repeat():
    x = np.zeros((16 * 16, 3), dtype=np.int64)
    riff = np.zeros((64, 3), dtype=np.int64)
    riff[::4, 0], riff[::8, 2] = 62, 1  # a melody note each beat, a kick each half bar
    x[0:64], x[128:192] = riff, riff  # bars 8-12 repeat bars 0-4
    regenerated = np.zeros_like(x, dtype=bool)
    regenerated[128:192, [0, 2]] = True
    same = song.unchanged_take(x, x.copy(), regenerated, TRIO, copy_prior=True, lo_bar=40)
    assert same.bars == (48, 52) and same.copied_from == (40, 44) and not same.silent
    assert same.cli_message() == ("warning: bars 48:52 came back unchanged: the copy prior copied a repeated section "
                                  "back exactly (bars 40:44 hold the same notes); try a lower --copy-sharpness (e.g. "
                                  "1), another --seed, or --variation")
    plain = song.unchanged_take(x, x.copy(), regenerated, TRIO, copy_prior=False)
    assert "the model drew the same notes again" in plain.why() and "--copy-sharpness" not in plain.cli_message()
    masked = x.copy()
    masked[128:192, 0] = TRIO[0].mask_id
    assert song.unchanged_take(masked, x, regenerated, TRIO, copy_prior=True) is None  # no input to compare
