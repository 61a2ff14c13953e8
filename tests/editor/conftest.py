"""Fixtures of the editor tests: a tiny random trio model (fast) and a running editor server."""

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
