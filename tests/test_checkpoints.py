"""Checkpoint loading: Lightning checkpoints, half-precision weights files, ``pretrained:NAME``, defaults."""

from pathlib import Path

import numpy as np
import pytest
import torch

from schmubert import checkpoints
from schmubert.backbones import build
from schmubert.checkpoints import (
    CheckpointError,
    checkpoint_hparams,
    default_checkpoint,
    export_weights,
    held_out_pieces,
    load_model,
    save_model,
)
from schmubert.diffusion import NoiseConfig


def tiny_ckpt(root: Path, data: dict | None = None) -> Path:
    torch.manual_seed(0)
    denoiser = build("conv", "trio", "tiny", seq_len=64)
    hp = checkpoint_hparams("conv", "trio", denoiser.config, NoiseConfig(timesteps=16), 64, data=data)
    return save_model(root / "runs" / "a" / "last.ckpt", denoiser, hp)


def test_weights_file_round_trips_in_half_precision(tmp_path):
    ckpt = tiny_ckpt(tmp_path)
    weights = export_weights(ckpt, tmp_path / "w.safetensors")
    full, half = load_model(ckpt), load_model(weights)
    assert half.hparams == full.hparams and half.steps == 64 and half.diffusion.T == 16
    x = torch.randint(0, 90, (1, 64, 3))
    for a, b in zip(full.denoiser(x), half.denoiser(x), strict=True):
        torch.testing.assert_close(a, b, atol=0.05, rtol=0.02)  # fp16 weights, fp32 compute
    first = next(iter(full.denoiser.state_dict()))
    assert full.denoiser.state_dict()[first].dtype == half.denoiser.state_dict()[first].dtype == torch.float32
    with pytest.raises(FileExistsError):
        export_weights(ckpt, weights)  # never over an existing file unless asked


def test_pretrained_names_resolve_into_the_weights_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoints, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(CheckpointError, match=r"pretrained:nope: no such pretrained model; shipped: \[\]"):
        load_model("pretrained:nope")
    export_weights(tiny_ckpt(tmp_path), tmp_path / "trio.safetensors")
    assert checkpoints.pretrained_names() == ["trio"]
    assert load_model("pretrained:trio").path == tmp_path / "trio.safetensors"


def test_a_weights_file_without_metadata_is_refused(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "x.safetensors"))
    with pytest.raises(CheckpointError, match="not a SCHmUBERT weights file"):
        load_model(tmp_path / "x.safetensors")
    (tmp_path / "y.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="unreadable weights file"):
        load_model(tmp_path / "y.safetensors")


def test_default_is_the_newest_run_else_the_shipped_model(tmp_path, capsys):
    assert default_checkpoint(tmp_path / "runs", "melody") == "pretrained:melody"
    assert "using the shipped model pretrained:melody" in capsys.readouterr().err
    ckpt = tiny_ckpt(tmp_path)
    assert default_checkpoint(tmp_path / "runs", "melody") == ckpt


def test_held_out_pieces_come_from_the_dataset_or_the_bundle(tmp_path, monkeypatch):
    pieces = np.random.default_rng(0).integers(0, 90, (3, 64, 3)).astype(np.uint16)
    np.save(tmp_path / "valid.npy", pieces)
    model = load_model(tiny_ckpt(tmp_path, data={"path": str(tmp_path)}))
    found, source = held_out_pieces(model)
    assert np.array_equal(found, pieces) and source.endswith("valid.npy")
    monkeypatch.setattr(checkpoints, "WEIGHTS_DIR", tmp_path / "weights")
    from schmubert import pretrained

    pretrained.export(model.path, "trio", heldout=tmp_path / "valid.npy", directory=tmp_path / "weights")
    (tmp_path / "valid.npy").unlink()  # the shipped model must not need the dataset
    shipped = pretrained.load("trio")
    found, source = held_out_pieces(shipped)
    assert np.array_equal(found, pieces) and source.endswith("trio-heldout.npz")


def test_export_gives_a_model_with_attributes_the_summaries_it_was_trained_without(tmp_path):
    from schmubert.attributes import DATA_SUMMARIES, data_summaries
    from schmubert.tokens import get_tracks

    torch.manual_seed(0)
    denoiser = build("conv", "trio", "tiny", seq_len=64, attributes=True)
    hp = checkpoint_hparams("conv", "trio", denoiser.config, NoiseConfig(timesteps=16), 64,
                            data={"path": str(tmp_path / "gone")}, attributes={"cond_drop": 0.5})
    ckpt = save_model(tmp_path / "old.ckpt", denoiser, hp)
    with pytest.raises(CheckpointError, match=r"old.ckpt: the model stores no key_prior or outlines .*--train"):
        export_weights(ckpt, tmp_path / "w.safetensors")  # nothing to take them from: named, nothing written
    assert not (tmp_path / "w.safetensors").exists()
    train = np.random.default_rng(0).integers(0, 90, (5, 64, 3)).astype(np.uint16)
    np.save(tmp_path / "train.npy", train)
    stored = load_model(export_weights(ckpt, tmp_path / "w.safetensors", train=tmp_path / "train.npy"))
    expected = data_summaries(train.astype(np.int64), get_tracks("trio"))
    assert {k: stored.hparams["attributes"][k] for k in DATA_SUMMARIES} == expected
    assert stored.hparams["attributes"]["cond_drop"] == 0.5


def test_export_cli_writes_a_candidate_elsewhere_and_leaves_the_shipped_weights(tmp_path, monkeypatch):
    from schmubert import pretrained

    shipped = tmp_path / "weights"
    shipped.mkdir()
    monkeypatch.setattr(pretrained, "WEIGHTS_DIR", shipped)
    ckpt = tiny_ckpt(tmp_path)
    args = ["export", "--checkpoint", str(ckpt), "--name", "melody", "--no-copy-prior"]
    assert pretrained.main([*args, "--directory", str(tmp_path / "candidates" / "stage6"), "--outline", "auto",
                            "--repair", "1", "--repair-steps", "4"]) == 0
    candidate = load_model(tmp_path / "candidates" / "stage6" / "melody.safetensors")
    assert candidate.steps == 64 and candidate.sampler_defaults == {"outline": "auto", "repair": 1, "repair_steps": 4}
    assert not any(shipped.iterdir())


def test_export_ships_decoding_defaults_and_a_re_export_keeps_them(tmp_path):
    from schmubert import pretrained

    ckpt = tiny_ckpt(tmp_path)
    assert load_model(ckpt).sampler_defaults == {}
    shipped = pretrained.export(ckpt, "a", directory=tmp_path, copy_prior=False, sampler={"cfg_scale": 1.5})
    assert load_model(shipped).sampler_defaults == {"cfg_scale": 1.5}
    again = pretrained.export(shipped, "b", directory=tmp_path, copy_prior=False)  # None: keep what it ships
    assert load_model(again).sampler_defaults == {"cfg_scale": 1.5}
    outlined = pretrained.export(ckpt, "d", directory=tmp_path, copy_prior=False,
                                 sampler={"cfg_scale": 2.0, "outline": "auto"})  # and the CLI's --outline
    assert load_model(outlined).sampler_defaults == {"cfg_scale": 2.0, "outline": "auto"}
    with pytest.raises(ValueError, match=r"\['cfg_sacle'\] are neither SamplerOptions fields nor outline"):
        pretrained.export(ckpt, "c", directory=tmp_path, copy_prior=False, sampler={"cfg_sacle": 1.5})
    assert not (tmp_path / "c.safetensors").exists()
