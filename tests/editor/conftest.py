"""Fixtures of the editor tests: tiny random models (fast): the trio, the melody, the trio with attributes, and
the pop909 voice set (melody, bridge of 4 voices, piano of 6) with velocity, with attributes or with meter."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from schmubert.backbones import build
from schmubert.checkpoints import checkpoint_hparams, load_model, save_model
from schmubert.diffusion import NoiseConfig


def tiny_checkpoint(root: Path, tracks: str = "trio", valid: np.ndarray | None = None, **overrides) -> Path:
    """A randomly initialised conv model (tiny preset, 64-bar window, T = 64), with a validation set if given."""
    data = {}
    if valid is not None:
        np.save(root / "valid.npy", valid.astype(np.uint16))
        data = {"path": str(root)}
    torch.manual_seed(0)
    denoiser = build("conv", tracks, "tiny", **overrides)
    hp = checkpoint_hparams("conv", tracks, denoiser.config, NoiseConfig(timesteps=64), 1024, data=data)
    return save_model(root / f"tiny-{tracks}.ckpt", denoiser, hp)


@pytest.fixture(scope="session")
def trio_file(corpus: Path) -> Path:
    return sorted((corpus / "lakh-trio-64bar").glob("*.mid"))[0]


@pytest.fixture(scope="session")
def trio_model(tmp_path_factory, corpus_pieces):
    root = tmp_path_factory.mktemp("editor-model")
    return load_model(tiny_checkpoint(root, "trio", corpus_pieces("trio", 2)))


@pytest.fixture(scope="session")
def melody_model(tmp_path_factory):
    return load_model(tiny_checkpoint(tmp_path_factory.mktemp("editor-melody"), "melody"))


@pytest.fixture(scope="session")
def conditional_model(tmp_path_factory):
    """A tiny trio model with attributes (backbone option attributes=true)."""
    return load_model(tiny_checkpoint(tmp_path_factory.mktemp("editor-cond"), "trio", attributes=True))


@pytest.fixture(scope="session")
def pop909_model(tmp_path_factory):
    """A tiny pop909 model with velocity and attributes (dynamics included)."""
    return load_model(tiny_checkpoint(tmp_path_factory.mktemp("editor-pop909"), "pop909", velocity=True,
                                      attributes=True))


@pytest.fixture(scope="session")
def pop909_meter_model(tmp_path_factory):
    """A tiny pop909 model with velocity, built with meter (reads bars of other meters: PAD after a short bar)."""
    return load_model(tiny_checkpoint(tmp_path_factory.mktemp("editor-pop909-meter"), "pop909", velocity=True,
                                      meter=True))


@pytest.fixture(scope="session")
def pop909_song(corpus: Path) -> Path:
    """A POP909 song: MELODY, BRIDGE, PIANO, 74 bars in 2/4 throughout (read in 4/4 from its notes)."""
    return corpus / "pop909" / "001.mid"
