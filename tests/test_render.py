import numpy as np
import pretty_midi
import pytest
from matplotlib.collections import LineCollection, PolyCollection
from matplotlib.colors import to_rgba

from schmubert.render import _spans, fluidsynth_available, pianoroll, save_pianoroll, write_wav
from schmubert.tokens import TRACK_SETS, tokens_to_midi

TRIO = TRACK_SETS["trio"]


def grid(L=64):
    x = np.zeros((L, 3), dtype=np.int64)
    x[0, 0], x[8, 0], x[12, 0] = 50, 1, 52
    x[0, 1] = 20
    x[[0, 4, 8], 2] = [1, 3, 512]  # kick; kick+snare; a mask draws nothing
    return x


def test_spans():
    assert _spans(np.array([0, 1, 1, 0, 1], bool)) == [(1, 3), (4, 5)]
    assert _spans(np.zeros(3, bool)) == []


def test_pianoroll_draws_tracks_in_their_colours_and_shades():
    shaded = np.zeros((64, 3), bool)
    shaded[16:32] = True
    fig = pianoroll(grid(), TRIO, shaded)
    pitch_ax, drum_ax = fig.axes
    melody, bass = [c for c in pitch_ax.collections if isinstance(c, PolyCollection)]
    bar_lines = [c for c in pitch_ax.collections if isinstance(c, LineCollection)]
    assert len(bar_lines) == 1 and len(bar_lines[0].get_segments()) == 5  # bars 0..4 of 64 steps, one collection
    assert len(melody.get_paths()) == 2 and len(bass.get_paths()) == 1
    assert np.allclose(melody.get_facecolor()[0], to_rgba("tab:red"))
    assert np.allclose(bass.get_facecolor()[0], to_rgba("tab:blue"))
    assert np.allclose(melody.get_paths()[0].vertices[:4], [[0, 68.6], [8, 68.6], [8, 69.4], [0, 69.4]])
    hits = drum_ax.collections[0].get_offsets()
    assert len(hits) == 3 and sorted(hits[:, 1].tolist()) == [0, 0, 1]
    assert [p for p in pitch_ax.patches if p.get_label() == "regenerated"]


def test_melody_only_has_one_axis():
    fig = pianoroll(grid()[:, :1], TRACK_SETS["melody"])
    assert len(fig.axes) == 1


def test_save_pianoroll_writes_png_and_refuses_to_overwrite(tmp_path):
    path = save_pianoroll(grid(), TRIO, tmp_path / "a.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(FileExistsError, match="--overwrite"):
        save_pianoroll(grid(), TRIO, path)
    save_pianoroll(grid(), TRIO, path, overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]  # no temp file left


def test_write_wav_or_notice(tmp_path, capsys):
    pm = tokens_to_midi(grid(), "trio")
    out = write_wav(pm, tmp_path / "a.wav")
    if fluidsynth_available() is None:
        assert out is not None and out.stat().st_size > 44
    else:
        assert out is None and "skipping WAV" in capsys.readouterr().out
        assert not (tmp_path / "a.wav").exists()
    assert isinstance(pm, pretty_midi.PrettyMIDI)


@pytest.mark.skipif(fluidsynth_available() is not None, reason="needs FluidSynth")
def test_write_wav_of_a_silent_piece(tmp_path):
    pm = tokens_to_midi(np.zeros((64, 3), dtype=np.int64), "trio")
    out = write_wav(pm, tmp_path / "silent.wav")
    assert out is not None and out.stat().st_size >= 44


def test_voices_of_one_instrument_share_a_colour_and_one_legend_entry():
    from schmubert.render import instrument_colours, pianoroll
    from schmubert.tokens import get_tracks

    tracks = get_tracks("pop909")
    colours = instrument_colours(tracks)
    assert set(colours) == {"melody", "bridge", "piano"} and len(set(colours.values())) == 3
    assert instrument_colours(get_tracks("melody,bass,drums,guitar:4,strings:4"))["guitar"] != \
        instrument_colours(get_tracks("melody,bass,drums,guitar:4,strings:4"))["strings"]
    grid = np.zeros((64, 11), dtype=np.int64)
    grid[0, 5:8] = [60 - 19, 64 - 19, 67 - 19]  # a piano chord over three voices
    fig = pianoroll(grid, tracks)
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["melody", "bridge", "piano"]
