"""The evaluate CLI: selfsim/stats on arrays, MIDI and bad files; elbo on a tiny checkpoint."""

import json
import shutil

import numpy as np
import pytest

from schmubert.backbones import build
from schmubert.checkpoints import checkpoint_hparams, save_model
from schmubert.diffusion import NoiseConfig
from schmubert.evaluate import main


@pytest.fixture(scope="module")
def trio_npy(corpus, tmp_path_factory):
    from schmubert.evaluation import load_pieces

    grids = np.stack(list(load_pieces(corpus / "lakh-trio-64bar", "trio", 1024).subset(range(20))))
    path = tmp_path_factory.mktemp("sets") / "trios.npy"
    np.save(path, grids.astype(np.uint16))
    return path


def run_json(capsys, *argv):
    assert main([*argv, "--json", "--no-progress"]) == 0
    return json.loads(capsys.readouterr().out)


def test_selfsim_of_a_set_against_itself_is_one(trio_npy, capsys):
    out = run_json(capsys, "selfsim", "--reference", str(trio_npy), "--generated", str(trio_npy),
                   "--num-evals", "3")
    for feat in ("pitch", "duration"):
        assert out[feat]["consistency"] == 1.0 and out[feat]["variance"] == 1.0
    assert out["pieces_ref"] == 20 and out["evaluations"] == 3


def test_selfsim_reads_midi_folders_and_skips_bad_files(corpus, trio_npy, tmp_path, capsys):
    folder = tmp_path / "gen"
    folder.mkdir()
    for name in ("sample_0.mid", "sample_1.mid", "sample_10.mid"):
        shutil.copy(corpus / "lakh-trio-64bar" / name, folder)
    shutil.copy(corpus / "bad-input" / "truncated.mid", folder)
    assert main(["selfsim", "--reference", str(trio_npy), "--generated", str(folder), "--drums", "exclude",
                 "--workers", "1", "--json", "--no-progress"]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert out["pieces_gen"] == 3 and out["skipped_gen"] == 1 and 0 < out["pitch"]["consistency"] <= 1
    assert "truncated.mid" in captured.err and "1 file(s) skipped" in captured.err


def test_stats_table_and_json(trio_npy, tmp_path, capsys):
    assert main(["stats", "--reference", str(trio_npy), "--generated", str(trio_npy), "--no-progress"]) == 0
    table = capsys.readouterr().out
    for name in ("notes_per_bar", "drum_consistency", "groove_consistency", "scale_consistency", "summary"):
        assert name in table
    out = run_json(capsys, "stats", "--reference", str(trio_npy), "--generated", str(trio_npy))
    assert out["summary"] == 1.0 and all(v == 1.0 for v in out["overlaps"].values())
    melodies = tmp_path / "melodies.npy"
    np.save(melodies, np.load(trio_npy)[:, :, :1])  # no drum track: drum consistency undefined, null in JSON
    out = run_json(capsys, "stats", "--reference", str(melodies), "--generated", str(melodies))
    assert out["overlaps"]["drum_consistency"] is None and out["summary"] == 1.0


def test_missing_input_is_a_one_line_error(tmp_path, capsys):
    assert main(["selfsim", "--reference", str(tmp_path / "nope"), "--generated", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "nope" in err and "\n" not in err


def test_elbo_on_a_tiny_checkpoint(trio_npy, tmp_path, capsys):
    denoiser = build("transformer", "trio", "tiny")
    ckpt = save_model(tmp_path / "tiny.ckpt", denoiser, checkpoint_hparams(
        "transformer", "trio", denoiser.config, NoiseConfig(), 1024))
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(trio_npy, data / "valid.npy")
    common = ["--checkpoint", str(ckpt), "--data", str(data), "--max-pieces", "2", "--samples-per-piece", "2",
              "--batch-size", "4", "--device", "cpu"]
    full = run_json(capsys, "elbo", *common)
    assert full["pieces"] == 2 and full["elements_per_piece"] == 1024 * 3 and full["bits_per_element"] > 0.5
    infill = run_json(capsys, "elbo", *common, "--infill", "16:48")
    assert infill["elements_per_piece"] == 32 * 16 * 3 and infill["infill"] == [16, 48]
    assert main(["elbo", "--checkpoint", str(tmp_path / "missing.ckpt"), "--data", str(data)]) == 2


def test_elbo_scores_a_carried_copy_prior_unless_told_not_to(trio_npy, tmp_path, capsys):
    from schmubert.copy_prior import CopyPriorConfig, as_hparams

    denoiser = build("transformer", "trio", "tiny")
    ckpt = save_model(tmp_path / "tiny.ckpt", denoiser, checkpoint_hparams(
        "transformer", "trio", denoiser.config, NoiseConfig(), 1024, copy_prior=as_hparams(CopyPriorConfig())))
    common = ["--checkpoint", str(ckpt), "--data", str(trio_npy), "--max-pieces", "2", "--samples-per-piece", "2",
              "--batch-size", "4", "--device", "cpu"]
    mixed = run_json(capsys, "elbo", *common)
    alone = run_json(capsys, "elbo", *common, "--no-copy-prior")
    assert mixed["copy_prior"] and not alone["copy_prior"]
    assert mixed["bits_per_element"] < alone["bits_per_element"]  # real music repeats: an untrained net gains


def test_context_command_reports_every_rate_and_track(tmp_path, capsys):
    import torch

    torch.manual_seed(0)
    denoiser = build("conv", "trio", "tiny", seq_len=64)
    np.save(tmp_path / "valid.npy", np.zeros((2, 64, 3), dtype=np.uint16))
    ckpt = save_model(tmp_path / "m.ckpt", denoiser, checkpoint_hparams(
        "conv", "trio", denoiser.config, NoiseConfig(timesteps=8), 64, data={"path": str(tmp_path)}))
    assert main(["context", "--checkpoint", str(ckpt), "--rates", "0.1,0.9", "--json", "--device", "cpu"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["bits"]) == {"0.1", "0.9"} and set(out["bits"]["0.1"]) == {"melody", "bass", "drums"}
    assert out["data"].endswith("valid.npy") and out["pieces"] == 2
