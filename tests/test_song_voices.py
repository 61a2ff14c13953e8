"""Editing a song in place with a voice-set model (issue 42, item 5): a polyphonic instrument's notes go into its
voices by the voice rule, with velocity bins; the regenerated bars are written back into the song's own
instrument, and nothing else of the song changes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pretty_midi
import pytest
import symusic
import torch

from schmubert import song
from schmubert.backbones import build
from schmubert.checkpoints import checkpoint_hparams, save_model
from schmubert.diffusion import NoiseConfig
from schmubert.polyphony import assign_voices
from schmubert.sample import main
from schmubert.tokens import STEPS_PER_BAR, bin_to_velocity, get_tracks, velocity_to_bin

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "corpus"
FOOL = CORPUS / "multitrack-songs" / "What a Fool Believes.mid"  # #0 'Piano' (chords), #2 'Lead Voca', #6 'Halo Pad'
POP = CORPUS / "pop909" / "001.mid"  # MELODY, BRIDGE, PIANO; 1/4 signatures, read in 4/4 from its notes
FAST = ["--steps", "6", "--no-progress", "--no-wav"]
POP909 = get_tracks("pop909")
BIN_VELOCITIES = set(bin_to_velocity(np.arange(1, 9)).tolist())


@pytest.fixture(scope="module")
def pop909_model(tmp_path_factory) -> Path:
    """A tiny untrained pop909 conv model that predicts velocity (64-bar window, T = 32)."""
    root = tmp_path_factory.mktemp("pop909-model")
    torch.manual_seed(0)
    denoiser = build("conv", "pop909", "tiny", velocity=True)
    hp = checkpoint_hparams("conv", "pop909", denoiser.config, NoiseConfig(timesteps=32), 1024,
                            data={"path": str(root)})
    return save_model(root / "last.ckpt", denoiser, hp)


def edit(model: Path, out: Path, path: Path, *args: str) -> int:
    return main(["--checkpoint", str(model), "--out", str(out), *FAST, "--input", str(path), *args])


def notes(track: symusic.Track) -> np.ndarray:
    """(N, 4) start, end, pitch, velocity in ticks, sorted."""
    n = track.notes.numpy()
    out = np.stack([n["time"], n["time"] + n["duration"], n["pitch"], n["velocity"]], axis=1).astype(np.int64)
    return out[np.lexsort((out[:, 1], out[:, 2], out[:, 0]))] if len(out) else out.reshape(0, 4)


def edited_ticks(path: Path, bars: tuple[int, int]) -> tuple[int, int]:
    """Ticks ``a .. b`` of song bars ``bars`` as the splice places them (the grid's phase included)."""
    s = song.read_song(path)
    run = s.run_of(bars[0])
    steps = np.array([(bars[0] - run.first) * STEPS_PER_BAR, (bars[1] - run.first) * STEPS_PER_BAR])
    a, b = song.step_to_tick(s, run, steps)
    return int(a), int(b)


def assert_only_inside(before_path: Path, after_path: Path, edited: int, bars: tuple[int, int]) -> np.ndarray:
    """Everything of the song but instrument ``edited`` inside ``bars`` is identical tick for tick; returns the
    edited instrument's notes that start inside the bars (checked to lie inside them)."""
    before, after = symusic.Score(str(before_path)), symusic.Score(str(after_path))
    assert [(t.time, t.qpm) for t in after.tempos] == [(t.time, t.qpm) for t in before.tempos]
    assert ([(t.time, t.numerator, t.denominator) for t in after.time_signatures]
            == [(t.time, t.numerator, t.denominator) for t in before.time_signatures])
    assert [(k.time, k.key) for k in after.key_signatures] == [(k.time, k.key) for k in before.key_signatures]
    assert len(after.tracks) == len(before.tracks)
    for i, (x, y) in enumerate(zip(before.tracks, after.tracks, strict=True)):
        assert (x.name, x.program, x.is_drum) == (y.name, y.program, y.is_drum)
        assert len(x.controls) == len(y.controls) and len(x.pitch_bends) == len(y.pitch_bends)
        if i != edited:
            assert np.array_equal(notes(x), notes(y)), f"instrument #{i} changed"
    a, b = edited_ticks(before_path, bars)
    old, new = notes(before.tracks[edited]), notes(after.tracks[edited])
    outside = lambda n: n[(n[:, 0] < a) | (n[:, 0] >= b)]  # noqa: E731
    kept, expected = outside(new), outside(old).copy()
    expected[(expected[:, 0] < a) & (expected[:, 1] > a), 1] = a  # the border rule: cut at the edit's start
    expected = expected[np.lexsort((expected[:, 1], expected[:, 2], expected[:, 0]))]
    assert np.array_equal(kept, expected), "a note outside the edited bars changed"
    inside = new[(new[:, 0] >= a) & (new[:, 0] < b)]
    assert (inside[:, 1] <= b).all() and (inside[:, 1] > inside[:, 0]).all()
    return inside


def test_infilling_a_multitrack_song_s_piano_writes_only_its_bars_with_drawn_velocities(pop909_model, tmp_path,
                                                                                       capsys):
    assert edit(pop909_model, tmp_path, FOOL, "--infill", "26:32", "--generate-tracks", "piano") == 0
    out = capsys.readouterr().out
    assert "chosen: piano = #0 'Piano' (GM 0 Acoustic Grand Piano, 1688 notes)" in out
    assert "chosen: melody = #2 'Lead Voca'" in out
    new = assert_only_inside(FOOL, tmp_path / "sample_000.mid", 0, (26, 32))
    assert len(new) > 0
    assert set(new[:, 3].tolist()) <= BIN_VELOCITIES  # the model's bins, not the neighbours' median
    assert len(set(new[:, 3].tolist())) > 1
    starts = new[:, 0]
    for pitch in set(new[:, 2].tolist()):  # one pitch sounds once: no overlap of the same pitch
        same = new[new[:, 2] == pitch]
        assert (same[1:, 0] >= same[:-1, 1]).all()
    assert len(starts) >= len(np.unique(starts))


def test_track_picks_the_song_s_instrument_for_a_role(pop909_model, tmp_path, capsys):
    assert edit(pop909_model, tmp_path, FOOL, "--infill", "26:32", "--generate-tracks", "piano",
                "--track", "piano=6") == 0
    assert "chosen: piano = #6 'Halo Pad' (GM 94 Pad 7 (halo), 431 notes) (as asked)" in capsys.readouterr().out
    new = assert_only_inside(FOOL, tmp_path / "sample_000.mid", 6, (26, 32))  # the piano #0 is left as it was
    assert len(new) > 0 and set(new[:, 3].tolist()) <= BIN_VELOCITIES


def test_a_pop909_song_s_piano_in_place_with_its_named_instruments(pop909_model, tmp_path, capsys):
    assert edit(pop909_model, tmp_path, POP, "--infill", "8:12", "--generate-tracks", "piano", "--seed", "3") == 0
    out = capsys.readouterr().out
    for role, index in (("melody", 0), ("bridge", 1), ("piano", 2)):
        assert f"chosen: {role} = #{index} '{role.upper()}'" in out
    new = assert_only_inside(POP, tmp_path / "sample_000.mid", 2, (8, 12))
    assert len(new) > 0 and set(new[:, 3].tolist()) <= BIN_VELOCITIES


def test_an_accompaniment_longer_than_the_window_slides_it_with_velocity(pop909_model, tmp_path):
    """--generate-tracks piano over a whole song (more bars than the model's window): every bar is written."""
    assert edit(pop909_model, tmp_path, POP, "--generate-tracks", "bridge") == 0
    s = song.read_song(POP)
    run = max(s.runs, key=lambda r: r.bars)
    assert run.bars > 64
    new = assert_only_inside(POP, tmp_path / "sample_000.mid", 1, (run.first, run.end))
    assert set(new[:, 3].tolist()) <= BIN_VELOCITIES
    a, b = edited_ticks(POP, (run.first, run.end))
    assert new[:, 0].max() > a + (b - a) * 3 // 4  # the last windows were drawn too


def test_a_role_the_song_lacks_becomes_a_new_instrument(pop909_model, crowded_song, tmp_path, capsys):
    """The crowded song has no second piano-family instrument: its bridge is new, the rest stays."""
    assert edit(pop909_model, tmp_path, crowded_song, "--infill", "4:8", "--generate-tracks", "bridge") == 0
    assert "bridge = none" in capsys.readouterr().out
    before, after = symusic.Score(str(crowded_song)), symusic.Score(str(tmp_path / "sample_000.mid"))
    assert [t.name for t in after.tracks] == [t.name for t in before.tracks] + ["bridge (SCHmUBERT)"]
    for x, y in zip(before.tracks, after.tracks, strict=False):
        assert np.array_equal(notes(x), notes(y))
    a, b = edited_ticks(crowded_song, (4, 8))
    new = notes(after.tracks[-1])
    assert ((new[:, 0] >= a) & (new[:, 1] <= b)).all() and set(new[:, 3].tolist()) <= BIN_VELOCITIES


# --- choosing the instrument of a polyphonic role -----------------------------------------------------------------


def write_issue_song(path: Path, bars: int = 16) -> Path:
    """The issue's song in small: an unnamed electric piano (GM 4) playing two-note chords in a melodic register
    through the song (the trio's most melody-like instrument), a sparse low unnamed lead (GM 81), a bass, a kit."""
    sec = 0.125
    pm = pretty_midi.PrettyMIDI(initial_tempo=120.0, resolution=480)

    def part(name: str, program: int, spec, is_drum: bool = False) -> None:
        inst = pretty_midi.Instrument(program, is_drum=is_drum, name=name)
        inst.notes = [pretty_midi.Note(90, p, s * sec, e * sec) for s, e, p in spec]
        pm.instruments.append(inst)

    part("Track 1", 81, [(16 * b + 4 * q, 16 * b + 4 * q + 3, 50 + q) for b in range(0, bars, 3) for q in (0, 2)])
    part("Track 2", 4, [(4 * q, 4 * q + 3, p + q % 4) for q in range(4 * bars) for p in (67, 71)])
    part("Track 3", 33, [(4 * q, 4 * q + 3, 40 + q % 3) for q in range(4 * bars)])
    part("Track 4", 0, [(s, s + 1, 36 if s % 8 == 0 else 42) for s in range(0, 16 * bars, 2)], is_drum=True)
    pm.write(str(path))
    return path


def test_a_chordal_electric_piano_is_the_piano_not_the_melody(tmp_path):
    s = song.read_song(write_issue_song(tmp_path / "issue.mid"))
    assert song.choose_tracks(s, get_tracks("trio"))["melody"] == 1  # the trio has only a melody to give it
    chosen = song.choose_roles(s, POP909)
    assert chosen["piano"].index == 1 and "notes per onset" in chosen["piano"].reason
    assert chosen["melody"].index == 0
    assert chosen["bridge"].index is None


def test_a_named_instrument_wins_its_role_and_the_trio_s_roles_are_as_before(crowded_song):
    s = song.read_song(crowded_song)
    assert song.choose_tracks(s, get_tracks("trio")) == {"melody": 5, "bass": 3, "drums": 4}
    assert song.choose_tracks(s, POP909) == {"melody": 5, "bridge": None, "piano": 2}  # #2 'E.Piano' plays chords
    band = song.choose_tracks(s, get_tracks("melody,bass,drums,piano:6,strings:4"))
    assert band == {"melody": 5, "bass": 3, "drums": 4, "piano": 2, "strings": 6}


# --- the grid and the splice of voices ----------------------------------------------------------------------------


def test_a_polyphonic_instrument_is_read_into_its_voices_with_its_velocity_bins():
    s = song.read_song(POP)
    assignment = song.choose_tracks(s, POP909)
    run = s.runs[0]
    tokens, velocity = song.grid_encode(s, assignment, POP909, run, (run.first + 8, run.first + 24))
    piano = [k for k, t in enumerate(POP909) if t.instrument == "piano"]
    onsets = (tokens[:, piano] > 1) & (tokens[:, piano] < 90)
    assert onsets.sum(axis=1).max() >= 3  # chords: several voices start at one step
    assert ((velocity[:, piano] > 0) == onsets).all()  # a bin exactly where a voice starts a note
    # the voices hold what the voice rule keeps of the piano's notes in those bars, with their bins
    n = s.notes_ticks[assignment["piano"]]
    step = song.tick_to_step(s, run, n[:, :2]) - 8 * STEPS_PER_BAR
    inside = (step[:, 0] >= 0) & (step[:, 0] < 16 * STEPS_PER_BAR)
    voices, _ = assign_voices(np.concatenate([step[inside], n[inside, 2:]], axis=1), len(piano))
    got = sorted((int(s0), int(tokens[s0, k]) + 19, int(velocity[s0, k])) for k in piano
                 for s0 in np.flatnonzero(onsets[:, piano.index(k)]))
    want = sorted((int(v[0]), int(v[2]), int(velocity_to_bin(v[3]))) for voice in voices for v in voice)
    assert got == want


def test_voices_splice_into_one_instrument_one_pitch_at_a_time_with_their_bins():
    tracks = [t for t in POP909 if t.instrument == "piano"][:2]
    s = song.Song(None, "x", [], [], 100_000, [])  # only the grid facts splice_track needs
    s.score = type("S", (), {"ticks_per_quarter": 480})()
    run = song.Run(0, 8, 0)
    rows = np.zeros((128, 2), dtype=np.int64)
    rows[16, 0], rows[24, 0] = 60 - 19, 1  # voice 0: C4 from step 16 to 24
    rows[16, 1], rows[20, 1], rows[28, 1] = 64 - 19, 60 - 19, 1  # voice 1: E4, then C4 struck again at 20
    bins = np.zeros_like(rows)
    bins[16, 0], bins[16, 1], bins[20, 1] = 8, 2, 5
    write = np.zeros(128, bool)
    write[16:32] = True
    old = np.array([[0, 2000, 48, 70], [2000, 2100, 50, 71], [4000, 4100, 52, 72]])  # a note sounds into the span
    out = song.splice_track(s, run, 0, old, rows, write, tracks, velocity=bins)
    assert out.tolist() == [[0, 1920, 48, 70],  # cut at the span's start
                            [1920, 2400, 60, 120], [1920, 2400, 64, 24],  # C4 ends where voice 1 strikes it
                            [2400, 3360, 60, 72],
                            [4000, 4100, 52, 72]]
