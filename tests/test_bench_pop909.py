"""experiments/bench_pop909.py end to end on a tiny random pop909 model with velocity: held-out melodies kept,
every accompaniment statistic compared, overlaps in [0, 1]."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from schmubert.backbones import build
from schmubert.checkpoints import checkpoint_hparams, load_model, save_model
from schmubert.diffusion import NoiseConfig
from schmubert.evaluation.accompaniment import ACCOMPANIMENT_STATISTICS
from schmubert.polyphony import midi_to_grid
from schmubert.tokens import MELODIC_CLASSES, NOTE_OFF, STEPS_PER_BAR, get_tracks, instruments

WINDOW = 64  # the tiny model's window: 4 bars
SONGS = ("099.mid", "100.mid")
#: Windows of each song start at these bars (past the intros, where melody and piano play).
START_BARS = (16, 24)


def tiny_pop909(path: Path, meter: bool = False) -> Path:
    """A randomly initialised conv pop909 model with velocity and attributes (tiny preset, 4-bar window)."""
    torch.manual_seed(0)
    denoiser = build("conv", "pop909", "tiny", seq_len=WINDOW, velocity=True, attributes=True, meter=meter)
    hp = checkpoint_hparams("conv", "pop909", denoiser.config, NoiseConfig(timesteps=16), WINDOW)
    return save_model(path, denoiser, hp)


@pytest.fixture(scope="module")
def pop909_data(corpus: Path, tmp_path_factory) -> Path:
    """valid.npy, valid_velocity.npy and meta.json's sources: 2 held-out songs, 2 windows each (song-major)."""
    folder = tmp_path_factory.mktemp("pop909-data")
    tokens, velocity, sources = [], [], []
    for song, name in enumerate(SONGS):
        encoded = midi_to_grid(corpus / "pop909" / name, "pop909")
        for bar in START_BARS:
            window = slice(bar * STEPS_PER_BAR, bar * STEPS_PER_BAR + 4 * WINDOW)
            tokens.append(encoded.tokens[window])
            velocity.append(encoded.velocity[window])
            sources.append([song, 0, bar])
    np.save(folder / "valid.npy", np.stack(tokens).astype(np.uint16))
    np.save(folder / "valid_velocity.npy", np.stack(velocity).astype(np.uint8))
    (folder / "meta.json").write_text(json.dumps({"sources": {"train": [], "valid": sources}}))
    return folder


def test_windows_spread_over_the_songs(experiment):
    spread = experiment("bench_pop909").spread_windows
    assert spread(np.array([0, 0, 0, 1, 1, 2]), 4).tolist() == [0, 3, 5, 1]
    assert spread(np.full(5, -1), 3).tolist() == [0, 1, 2]


def test_a_model_without_meter_accompanies_only_windows_without_pad(tmp_path, pop909_data, experiment):
    bench = experiment("bench_pop909")
    held = bench.load_held_out(pop909_data, WINDOW)
    tracks = get_tracks("pop909")
    held.tokens[1, 12:16] = [t.pad_id for t in tracks]  # bar 0 of window 1 in 3/4
    plain = load_model(tiny_pop909(tmp_path / "plain.ckpt"))
    assert bench.usable_windows(held, plain).tolist() == [True, False, True, True]
    metered = load_model(tiny_pop909(tmp_path / "meter.ckpt", meter=True))
    assert bench.usable_windows(held, metered).all()


def test_accompaniments_keep_the_held_out_melody_and_its_velocity(tmp_path, pop909_data, experiment):
    bench = experiment("bench_pop909")
    args = bench.parse_args(["--checkpoint", str(tiny_pop909(tmp_path / "m.ckpt")), "--data", str(pop909_data),
                             "--pieces", "2", "--steps", "2"])
    model = load_model(args.checkpoint)
    held = bench.load_held_out(args.data, model.steps)
    chosen = bench.spread_windows(held.songs, args.pieces)
    assert chosen.tolist() == [0, 2]  # one window of each song
    tokens, velocity = bench.accompany(model, held, chosen, {}, args)
    assert tokens.shape == velocity.shape == (2, WINDOW, 11)
    np.testing.assert_array_equal(tokens[..., 0], held.tokens[chosen, :, 0])
    np.testing.assert_array_equal(velocity[..., 0], held.velocity[chosen, :, 0])
    piano = dict(instruments(model.tracks))["piano"]
    onsets = (tokens[..., piano] > NOTE_OFF) & (tokens[..., piano] < MELODIC_CLASSES)
    assert ((velocity[..., piano] > 0) == onsets).all()  # the piano's note-ons carry a drawn bin, 1..8


def test_runs_end_to_end_and_writes_every_statistic(tmp_path, pop909_data, capsys, experiment):
    rows_path = tmp_path / "rows.json"
    argv = ["--checkpoint", str(tiny_pop909(tmp_path / "m.ckpt")), "--data", str(pop909_data), "--pieces", "2",
            "--steps", "2", "--batch-size", "2", "--settings", "default;t0.9:temperature=0.9", "--json",
            str(rows_path)]
    assert experiment("bench_pop909").main(argv) == 0
    rows = json.loads(rows_path.read_text())["rows"]
    assert [(r["scenario"], r["setting"]) for r in rows] == [
        ("accompany", "default"), ("accompany", "t0.9"), ("uncond", "default"), ("uncond", "t0.9")]
    for r in rows:
        assert r["pieces"] == 2
        assert set(r["statistics"]) == set(r["overlaps"]) == set(ACCOMPANIMENT_STATISTICS)
        assert all(0 <= overlap <= 1 for overlap in r["overlaps"].values()), r["overlaps"]
        assert 0 <= r["mean_overlap"] <= 1
        assert set(r["agreement"]) == {"key_agreement", "chord_tone_agreement"}
        for figures in r["agreement"].values():
            assert 0 <= figures["songs"] <= 1  # the accompanied songs' own
    out = capsys.readouterr().out
    table = [line for line in out.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| statistic | held-out | accompany default | overlap")
    assert any(line.startswith("| key_agreement |") for line in table)
    assert any(line.startswith("| uncond | t0.9 | 2 |") for line in table)


def test_refuses_a_model_without_the_instrument(tmp_path, pop909_data, experiment):
    with pytest.raises(SystemExit, match="no instrument 'guitar'"):
        experiment("bench_pop909").main(["--checkpoint", str(tiny_pop909(tmp_path / "m.ckpt")), "--data",
                                         str(pop909_data), "--instrument", "guitar"])


def test_real_training_windows_give_the_overlaps_ceiling(tmp_path, pop909_data, experiment):
    """With a train.npy the first row measures as many real training windows, one per training song first."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(pop909_data, data)
    shutil.copy(data / "valid.npy", data / "train.npy")  # real music, here the held-out windows themselves
    shutil.copy(data / "valid_velocity.npy", data / "train_velocity.npy")
    meta = json.loads((data / "meta.json").read_text())
    meta["sources"]["train"] = meta["sources"]["valid"]
    (data / "meta.json").write_text(json.dumps(meta))
    rows_path = tmp_path / "rows.json"
    argv = ["--checkpoint", str(tiny_pop909(tmp_path / "m.ckpt")), "--data", str(data), "--pieces", "2",
            "--steps", "2", "--scenarios", "accompany", "--json", str(rows_path)]
    assert experiment("bench_pop909").main(argv) == 0
    real, accompanied = json.loads(rows_path.read_text())["rows"]
    assert (real["scenario"], real["pieces"], accompanied["scenario"]) == ("training windows", 2, "accompany")
    # the windows accompanied are those same two songs' first windows: their own agreement is the songs'
    for name, figures in real["agreement"].items():
        assert figures["generated"] == pytest.approx(figures["songs"]), name
