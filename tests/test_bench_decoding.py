"""experiments/bench_decoding.py: settings parse into sampler options and each prints one table row."""

import numpy as np
import pytest
import torch

from schmubert.backbones import build
from schmubert.checkpoints import checkpoint_hparams, load_model, save_model
from schmubert.diffusion import NoiseConfig
from schmubert.sample import SampleConfig
from schmubert.tokens import TRACK_SETS


def test_settings_parse_into_typed_sampler_fields(experiment):
    parse = experiment("bench_decoding").parse_setting
    assert parse("default") == ("default", {})
    assert parse("cool:temperature=0.8,top_p=0.9,steps=32,reuse=false,order=confidence") == (
        "cool", {"temperature": 0.8, "top_p": 0.9, "steps": 32, "reuse": False, "order": "confidence"})
    assert parse("plain:outline=none") == ("plain", {"outline": "none"})
    assert parse("sharp:copy_sharpness=4") == ("sharp", {"copy_sharpness": 4.0})
    assert parse("old:repair_steps=32,schedule=linear,cfg_scale=1") == (  # optional and Literal fields
        "old", {"repair_steps": 32, "schedule": "linear", "cfg_scale": 1.0})
    with pytest.raises(ValueError, match="'warmth=2' is not FIELD=VALUE"):
        parse("x:warmth=2")


def tiny(path, steps):
    torch.manual_seed(0)
    denoiser = build("conv", "trio", "tiny", seq_len=steps)
    return save_model(path, denoiser, checkpoint_hparams("conv", "trio", denoiser.config,
                                                         NoiseConfig(timesteps=steps), steps))


def test_prints_a_row_per_setting(tmp_path, capsys, corpus_pieces, experiment):
    np.save(tmp_path / "held.npy", corpus_pieces("trio", 3)[:, :256].astype(np.uint16))
    argv = ["--checkpoint", str(tiny(tmp_path / "m.ckpt", 256)), "--data", str(tmp_path / "held.npy"),
            "--samples", "2", "--riff-pieces", "0", "--settings", "a:steps=2;b:steps=3,temperature=0.5",
            "--json", str(tmp_path / "rows.json")]
    assert experiment("bench_decoding").main(argv) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| setting | pc entropy | scale | notes/bar | mean")
    assert [r.split("|")[1].strip() for r in rows[1:]] == ["a", "b"]
    assert rows[1].split("|")[7].strip() == "-"  # no riff copy asked
    assert (tmp_path / "rows.json").is_file()


def test_a_reference_set_adds_the_held_out_ceiling_row(tmp_path, capsys, corpus_pieces, experiment):
    pieces = corpus_pieces("trio", 4)[:, :256].astype(np.uint16)
    np.save(tmp_path / "held.npy", pieces[:2])
    np.save(tmp_path / "ref.npy", pieces[2:])
    argv = ["--checkpoint", str(tiny(tmp_path / "m.ckpt", 256)), "--data", str(tmp_path / "held.npy"),
            "--reference", str(tmp_path / "ref.npy"), "--samples", "2", "--riff-pieces", "0", "--settings",
            "a:steps=2", "--json", str(tmp_path / "rows.json")]
    assert experiment("bench_decoding").main(argv) == 0
    rows = [line.split("|") for line in capsys.readouterr().out.splitlines() if line.startswith("| ")][1:]
    assert [r[1].strip() for r in rows] == ["held-out data", "a"]
    bench = experiment("bench_decoding")
    expected = bench.statistics_row(pieces[:2].astype(np.int64), pieces[2:].astype(np.int64), "trio")
    assert rows[0][5].strip() == f"**{expected['mean3']:.2f}**"  # the held-out windows against the reference
    assert rows[0][10].strip() == "-"  # data are not sampled


def test_riff_copy_counts_the_repeated_bars_of_the_infilled_span(tmp_path, corpus_pieces, experiment):
    riff = experiment("bench_riff_copy")
    held = corpus_pieces("trio", 1).astype(np.int64)  # one 64-bar window
    held[0, 16 * 20:16 * 22] = held[0, 16 * 2:16 * 4]  # bars 20-21 repeat bars 2-3 on every track
    model = load_model(tiny(tmp_path / "m.ckpt", 1024))
    cfg = SampleConfig(steps=2, num_samples=1, batch_size=1, progress=False, wav=False)
    result, total, floor, windows = riff.riff_copy(model, held, cfg, (16, 48), 4, 0, unit="track")
    repeated = riff.repeated(held[0], (16, 48), list(model.tracks))
    assert windows == 1 and repeated[20:22].all() and total[:, 3].sum() == repeated.sum()
    assert 0 <= result["onsets"] <= 1 and 0 <= result["exact"] <= 1


def test_a_whole_bar_repeats_only_when_every_track_does(experiment):
    riff = experiment("bench_riff_copy")
    tracks = list(TRACK_SETS["trio"])
    x = np.zeros((64 * 16, 3), dtype=np.int64)  # silence on every track
    for bar in range(64):  # every bar its own melody note, bass note and drum hits: nothing repeats
        x[bar * 16, :] = [bar + 20, bar + 10, bar + 1]
    x[20 * 16:21 * 16] = x[2 * 16:3 * 16]  # bar 20 repeats bar 2 on every track
    x[30 * 16:31 * 16, 1] = x[5 * 16:6 * 16, 1]  # bar 30 repeats bar 5's bass only
    x[40 * 16:41 * 16] = x[25 * 16:26 * 16]  # bar 40 repeats bar 25, inside the span: not outside it
    assert np.flatnonzero(riff.repeated_bars(x, (16, 48), tracks)).tolist() == [20]
    assert np.argwhere(riff.repeated(x, (16, 48), tracks)).tolist() == [[20, 0], [20, 1], [20, 2], [30, 1]]
    assert riff.repeat_count("bar", x, (16, 48), tracks) == 1
    assert riff.repeat_count("track", x, (16, 48), tracks) == 4
    infilled = x.copy()
    assert riff.whole_bars_exact(x, infilled, riff.repeated_bars(x, (16, 48), tracks)).tolist() == [1, 1]
    infilled[20 * 16 + 5, 2] = 7  # one extra drum hit: the bar is no longer exact on every track
    assert riff.whole_bars_exact(x, infilled, riff.repeated_bars(x, (16, 48), tracks)).tolist() == [0, 1]
