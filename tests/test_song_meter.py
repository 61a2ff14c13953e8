"""Editing a song across meter changes (issue 42, items 4 and 5, the song side): a model built with ``meter``
edits bars of any meter the slot grid holds, each bar in its slot(s) with PAD after its end, and writes the new
notes back at the song's own ticks; a model without meter keeps its 4/4 runs and says what would work."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import symusic
import torch

from schmubert import meter, song
from schmubert.backbones import build
from schmubert.checkpoints import checkpoint_hparams, save_model
from schmubert.diffusion import NoiseConfig
from schmubert.sample import keep_note_ends, main
from schmubert.tokens import NO_EVENT, NOTE_OFF, PAD_SIMPLE, PITCH_OFFSET, bin_to_velocity, get_tracks, pad_ids

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments"))
import song_diff  # noqa: E402

CORPUS = ROOT.parent / "shared" / "corpus"
WALTZ = CORPUS / "bad-input" / "waltz-3-4.mid"
AICHA = CORPUS / "multitrack-songs" / "Aicha.mid"
FAST = ["--steps", "6", "--no-progress", "--no-wav"]
BAND = "melody,bass,drums,piano:3"
BIN_VELOCITIES = set(bin_to_velocity(np.arange(1, 9)).tolist())
TPQ = 480
#: The mixed file's bars in 16ths and meters: a 3/4 bar at bar 8, a 6/8 bar at 12, a 5/4 bar (two slots) at 13.
LENGTHS = [16] * 8 + [12] + [16] * 3 + [12] + [20] + [16] * 6
METERS = [(4, 4)] * 8 + [(3, 4)] + [(4, 4)] * 3 + [(6, 8)] + [(5, 4)] + [(4, 4)] * 6


def make_model(root: Path, tracks: str, **options) -> Path:
    """A tiny untrained conv model (64-slot window, T = 32)."""
    root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    denoiser = build("conv", tracks, "tiny", **options)
    hp = checkpoint_hparams("conv", tracks, denoiser.config, NoiseConfig(timesteps=32), 1024,
                            data={"path": str(root)})
    return save_model(root / "last.ckpt", denoiser, hp)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("meter-models")
    return {"band": make_model(root / "band", BAND, velocity=True, meter=True),
            "trio": make_model(root / "trio", "trio", meter=True),
            "plain": make_model(root / "plain", "trio")}


def write_mixed(path: Path) -> Path:
    """20 bars of 4/4 with a 3/4 bar at bar 8, a 6/8 bar at 12 and a 5/4 bar at 13; 120 bpm, 90 bpm from bar 10;
    a lead of eighths with varied velocities, a bass note held through each bar, a kit on the beats, and keys
    playing three-note chords on the beats; a CC and a key signature."""
    score = symusic.Score(TPQ)
    score.tempos.extend([symusic.Tempo(0, 120.0), symusic.Tempo(sum(LENGTHS[:10]) * TPQ // 4, 90.0)])
    score.key_signatures.append(symusic.KeySignature(0, 2, 0))
    starts = np.cumsum([0, *LENGTHS])
    for i, (num, den) in enumerate(METERS):
        if i == 0 or METERS[i - 1] != (num, den):
            score.time_signatures.append(symusic.TimeSignature(int(starts[i]) * TPQ // 4, num, den))
    lead, bass = symusic.Track("Lead", 73, False), symusic.Track("Bass", 33, False)
    kit, keys = symusic.Track("Kit", 0, True), symusic.Track("Keys", 4, False)
    keys.controls.append(symusic.ControlChange(0, 7, 90))
    for b, (s0, n) in enumerate(zip(starts[:-1].tolist(), LENGTHS, strict=True)):
        for q in range(0, n, 2):
            lead.notes.append(symusic.Note((s0 + q) * TPQ // 4, TPQ // 2 - 10, 60 + (b + q) % 12, 40 + (q * 5) % 80))
        bass.notes.append(symusic.Note(s0 * TPQ // 4, n * TPQ // 4, 36 + b % 5, 90))
        for q in range(0, n, 4):
            kit.notes.append(symusic.Note((s0 + q) * TPQ // 4, TPQ // 8, 36 if q == 0 else 42, 100))
            for p in (60, 64, 67):
                keys.notes.append(symusic.Note((s0 + q) * TPQ // 4, TPQ - 20, p + b % 3, 50 + q * 3))
    score.tracks.extend([lead, bass, kit, keys])
    score.dump_midi(str(path))
    return path


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> Path:
    return write_mixed(tmp_path_factory.mktemp("mixed") / "mixed.mid")


def with_a_three_four_bar(src: Path, dst: Path, bar: int = 8, qpm: float = 127.0) -> Path:
    """A real multitrack song turned into the issue's case: bar ``bar`` loses its last beat (a 3/4 bar; notes
    starting in that beat are dropped, everything after moves a beat earlier) and the tempo is ``qpm``."""
    score = symusic.Score(str(src))
    tpq = score.ticks_per_quarter
    cut0 = (bar * 4 + 3) * tpq
    cut1 = cut0 + tpq

    def moved(t: int) -> int:
        return t - tpq if t >= cut1 else min(t, cut0)

    for track in score.tracks:
        notes = np.array([(moved(n.time), moved(n.end) - moved(n.time), n.pitch, n.velocity) for n in track.notes
                          if not cut0 <= n.time < cut1], dtype=np.int64).reshape(-1, 4)
        track.notes = symusic.Note.from_numpy(time=notes[:, 0].astype(np.int32),
                                              duration=notes[:, 1].astype(np.int32),
                                              pitch=notes[:, 2].astype(np.int8), velocity=notes[:, 3].astype(np.int8))
        controls = [symusic.ControlChange(moved(c.time), c.number, c.value) for c in track.controls
                    if not cut0 <= c.time < cut1]
        bends = [symusic.PitchBend(moved(b.time), b.value) for b in track.pitch_bends if not cut0 <= b.time < cut1]
        track.controls, track.pitch_bends = symusic.core.ControlChangeTickList(controls), \
            symusic.core.PitchBendTickList(bends)
    score.tempos = [symusic.Tempo(0, qpm)]
    score.time_signatures = [symusic.TimeSignature(0, 4, 4), symusic.TimeSignature(bar * 4 * tpq, 3, 4),
                             symusic.TimeSignature(cut0, 4, 4)]
    score.dump_midi(str(dst))
    return dst


def edit(model: Path, out: Path, path: Path, *args: str) -> int:
    return main(["--checkpoint", str(model), "--out", str(out), *FAST, "--input", str(path), *args])


def check_edit(src: Path, out: Path, edited: list[int], bars: tuple[int, int]) -> list[tuple]:
    """Everything of ``out`` outside instruments ``edited`` in song ``bars`` is ``src``'s, tick for tick (tempo
    map, time and key signatures, other instruments, velocities, CCs: experiments/song_diff.py); every new note
    starts inside the edited bars on a 16th of its own bar (the bar's real length: nothing starts where PAD is)
    and ends by their end. Returns the new notes ``(instrument, start, end, pitch, velocity)``."""
    s = song.read_song(src, metered=True)
    run = s.run_of(bars[0])
    a, b = song.bar_tick(s, run, bars[0]), song.bar_tick(s, run, bars[1])
    assert (a, b) == (s.bars[bars[0]].start, s.bars[bars[1] - 1].end)  # the song's own bar lines
    names = [(t.name.strip(), bool(t.is_drum)) for t in s.score.tracks]
    cells = [song_diff.Cell(names[i], a, b) for i in edited]
    before, after = song_diff.read(src), song_diff.read(out)
    diff = song_diff.compare(before, after, cells)
    assert diff.clean, (diff.other, diff.lost_notes[:3], diff.stray_notes[:3], diff.late_notes[:3])
    assert after.signatures == before.signatures and after.tempos == before.tempos
    # compare() allows no new note outside the cells (a note sounding into them is only cut at their start)
    new = [n for n in (after.notes - before.notes).elements() if a <= n[1] < b]
    sixteenth = s.resolution // 4
    for note in new:
        bar = next(i for i, x in enumerate(s.bars) if x.start <= note[1] < x.end)
        assert bars[0] <= bar < bars[1] and note[2] <= b
        assert (note[1] - s.bars[bar].start) % sixteenth == 0
    return new


# --- a model built with meter edits across the song's meter changes --------------------------------------------


@pytest.mark.parametrize("name, tracks", [("band", BAND), ("trio", "trio")])
def test_infill_across_meter_changes_keeps_everything_else(models, mixed, tmp_path, capsys, name, tracks):
    """Bars 6:15 cross the 3/4 bar, the 6/8 bar and the 5/4 bar (two slots) and the tempo change."""
    assert edit(models[name], tmp_path, mixed, "--infill", "6:15") == 0
    out = capsys.readouterr().out
    assert "window bars 0:20, edited bars 6:15" in out
    assert "4/4 but for the 3/4 bar at bar 8, the 6/8 bar at bar 12 and the 5/4 bar at bar 13" in out
    edited = [0, 1, 2, 3] if name == "band" else [0, 1, 2]
    new = check_edit(mixed, tmp_path / "sample_000.mid", edited, (6, 15))
    assert new
    starts = {next(i for i, x in enumerate(np.cumsum([0, *LENGTHS])[1:]) if n[1] < x * TPQ // 4) for n in new}
    assert {8, 12, 13} <= starts  # the short and the long bars were written too
    if name == "band":
        assert {n[4] for n in new if not n[0][1]} <= BIN_VELOCITIES  # the model's bins
    else:  # the trio's velocity rule; Keys is no trio role and stays as it was
        assert not [n for n in new if n[0][0] == "Keys"]


def test_the_inverse_map_writes_every_real_step_of_each_bar_at_its_own_tick(mixed):
    """A take with a note-on at every real step of the edited bars (nothing at PAD, which the sampler keeps)
    writes one note per 16th of each bar, at the bar's own ticks: 12 in the 3/4 and 6/8 bars, 20 in the 5/4."""
    s = song.read_song(mixed, metered=True)
    trio = get_tracks("trio")
    plan = song.plan_edit(s, song.choose_tracks(s, trio), trio, (7, 15), np.ones((8 * 16, 3), bool), 64)
    layout = meter.layout_of(plan.x, trio)
    assert plan.window == (0, 20) and layout.slots == 21 and layout.real_steps == sum(LENGTHS)
    assert layout.bars() == [meter.Bar(n, m == (6, 8)) for n, m in zip(LENGTHS, METERS, strict=True)]
    pad = meter.layout_of(plan.x, trio).pad_steps() >= 0
    assert plan.known[pad].all() and not plan.write[pad].any()  # PAD is known, never written
    assert (plan.x[pad] >= np.array(pad_ids(trio))).all()
    take = plan.x.copy()
    rows = np.flatnonzero(plan.write[:, 0])
    take[rows, 0] = 72 - PITCH_OFFSET
    new = plan.splice(take, trio).tracks[0].notes.numpy()
    lead = new["time"][(new["time"] >= s.bars[7].start) & (new["time"] < s.bars[14].end)]
    want = np.concatenate([np.arange(s.bars[i].start, s.bars[i].end, TPQ // 4) for i in range(7, 15)])
    assert np.array_equal(np.sort(lead), want)
    assert [int(((lead >= s.bars[i].start) & (lead < s.bars[i].end)).sum()) for i in (8, 12, 13)] == [12, 12, 20]


def test_the_waltz_is_edited_in_three(models, tmp_path, capsys):
    assert edit(models["band"], tmp_path, WALTZ, "--infill", "6:12", "--generate-tracks", "melody") == 0
    assert "bars 0:64 are in 3/4 throughout" in capsys.readouterr().out
    new = check_edit(WALTZ, tmp_path / "sample_000.mid", [0], (6, 12))
    assert new and song_diff.read(tmp_path / "sample_000.mid").signatures == {(0, 3, 4)}


def test_the_issue_s_pop_song_s_piano_across_its_three_four_bar(models, tmp_path, capsys):
    """The issue's song is not in the corpus: Aicha (13 instruments, 97 bars) with a 3/4 bar at bar 8 at 127 bpm
    stands in; its string pad #1 'Warmpad' (two notes per onset) is asked for as the piano."""
    src = with_a_three_four_bar(AICHA, tmp_path / "aicha-3-4.mid")
    s = song.read_song(src)
    assert s.bars[8].meter == "3/4" and all(b.meter == "4/4" for b in s.bars[:8] + s.bars[9:])
    assert edit(models["band"], tmp_path / "out", src, "--generate-tracks", "piano", "--track", "piano=1",
                "--infill", "6:12") == 0
    out = capsys.readouterr().out
    assert "piano = #1 'Warmpad'" in out and "edited bars 6:12" in out
    new = check_edit(src, tmp_path / "out" / "sample_000.mid", [1], (6, 12))
    assert new and {n[4] for n in new} <= BIN_VELOCITIES
    score = symusic.Score(str(tmp_path / "out" / "sample_000.mid"))
    assert [round(t.qpm) for t in score.tempos] == [127]


def test_a_meter_model_reads_a_song_in_three_from_its_notes_or_as_asked(models, mixed, tmp_path, capsys):
    s = song.read_song(CORPUS / "pop909" / "034.mid", metered=True)  # a 1/4 file whose notes move in 3
    assert "read in 3/4 from its notes instead" in s.meter_note
    assert all(b.meter == "3/4" for b in s.bars[1:]) and len(s.runs) == 1
    six = song.read_song(WALTZ, time_signature="6/8", metered=True)
    assert six.runs[0].lengths[:3] == (12, 12, 12) and all(six.runs[0].compound)
    assert edit(models["band"], tmp_path, mixed, "--time-signature", "3/4", "--infill", "2:5") == 0
    assert "read in 3/4 as asked" in capsys.readouterr().out
    other = song_diff.other_differences(song_diff.read(mixed), song_diff.read(tmp_path / "sample_000.mid"))
    assert not any(other.values())  # the file's signatures and tempo map are written back as they were


def test_a_meter_model_sees_a_4_4_song_as_a_plain_model_does():
    trio = get_tracks("trio")
    plain, metered = song.read_song(AICHA), song.read_song(AICHA, metered=True)
    assert [(r.first, r.end, r.start_tick) for r in plain.runs] == [(r.first, r.end, r.start_tick)
                                                                     for r in metered.runs]
    assert not metered.runs[0].metered
    a = song.choose_tracks(plain, trio)
    assert np.array_equal(song.grid_tokens(plain, a, trio, plain.runs[0], (10, 30)),
                          song.grid_tokens(metered, a, trio, metered.runs[0], (10, 30)))


def test_a_change_inside_a_bar_is_a_short_bar_for_a_meter_model(tmp_path):
    score = symusic.Score(TPQ)
    score.time_signatures.extend([symusic.TimeSignature(0, 4, 4), symusic.TimeSignature(6 * TPQ, 3, 4)])
    track = symusic.Track("Piano", 0, False)
    track.notes.extend([symusic.Note(t * TPQ // 2, TPQ // 2, 60 + t % 7, 80) for t in range(80)])
    score.tracks.append(track)
    score.dump_midi(str(tmp_path / "cut.mid"))
    s = song.read_song(tmp_path / "cut.mid", metered=True)
    assert s.meter_note is None and s.runs[0].lengths[:3] == (16, 8, 12)  # bar 1 of 4/4 cut to 2 beats
    assert "starts inside a bar" in song.read_song(tmp_path / "cut.mid").meter_note


# --- a model without meter: 4/4 only, and it says what would work -------------------------------------------------


def test_a_model_without_meter_refuses_and_says_what_would_work(models, mixed, tmp_path, capsys):
    assert edit(models["plain"], tmp_path, mixed, "--infill", "6:12") == 2
    err = capsys.readouterr().err
    assert ("this model reads 4/4 only; a model trained with --set meter=true edits across the 3/4 bar at bar 8; "
            "the nearest 6-bar edits that avoid it: bars 2:8 or 14:20") in err
    assert edit(models["plain"], tmp_path, WALTZ, "--infill", "6:12") == 2
    err = capsys.readouterr().err
    assert "waltz-3-4.mid: in 3/4 time" in err and "a model trained with --set meter=true edits it" in err
    assert edit(models["plain"], tmp_path, mixed, "--time-signature", "3/4", "--infill", "2:4") == 2
    assert "this model reads 4/4 only" in capsys.readouterr().err
    assert edit(models["plain"], tmp_path, mixed, "--infill", "2:6") == 0  # its 4/4 bars, as before
    check_edit(mixed, tmp_path / "sample_000.mid", [0, 1, 2], (2, 6))


def test_note_ends_are_kept_by_real_steps_not_across_pad():
    """A generated short bar's PAD is known: the slot after it is not where a kept note ends (the note before
    the slot is generated too), so no note-off is forced there; a kept bar's note still ends where it did."""
    trio = get_tracks("trio")
    x = torch.zeros(1, 32, 3, dtype=torch.long)
    x[0, 12:16] = torch.tensor(pad_ids(trio)) + PAD_SIMPLE
    x[0, 0, 0], x[0, 16, 0] = 60 - PITCH_OFFSET, 64 - PITCH_OFFSET
    known = torch.zeros(1, 32, 3, dtype=torch.bool)
    known[0, 12:16] = True  # PAD known, every real step generated
    out = x.clone()
    out[0, 16, 0] = NO_EVENT  # the model holds the note over the bar line
    assert keep_note_ends(x, known, out, trio)[0, 16, 0] == NO_EVENT
    known[0, :16] = True  # the 3/4 bar kept: its note ends at its end, as in the input
    assert keep_note_ends(x, known, out, trio)[0, 16, 0] == NOTE_OFF
