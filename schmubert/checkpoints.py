"""Loading trained models for inference (sampling, evaluation) from Lightning checkpoints.

A SCHmUBERT checkpoint is a Lightning checkpoint written by :class:`schmubert.module.ASD3PM` with

- ``checkpoint["schmubert"]``: ``{"kind": "asd3pm", "version": ...}`` (how a checkpoint of the wrong kind is told),
- ``checkpoint["hyper_parameters"]``: ``arch``, ``tracks``, ``backbone`` (the backbone config as a dict),
  ``noise`` (the :class:`~schmubert.diffusion.NoiseConfig` as a dict), ``steps`` (window length L), ``data``
  (the dataset's ``meta.json`` summary),
- ``checkpoint["state_dict"]``: ``denoiser.*`` weights; when training used EMA these are the EMA weights
  (Lightning's ``EMAWeightAveraging`` puts the average there and the raw weights under ``current_model_state``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from schmubert.backbones import Backbone, from_config
from schmubert.diffusion import AbsorbingDiffusion, NoiseConfig
from schmubert.files import write_atomic
from schmubert.tokens import Track, get_tracks, mask_ids

CHECKPOINT_KIND = "asd3pm"
DENOISER_PREFIX = "denoiser."


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable or not a SCHmUBERT model."""


@dataclass
class LoadedModel:
    denoiser: Backbone  # in eval mode, on the requested device
    diffusion: AbsorbingDiffusion
    tracks: tuple[Track, ...]
    steps: int  # the window length L the model was trained on
    hparams: dict[str, Any]
    path: Path
    sha256: str = field(repr=False)

    @property
    def device(self) -> torch.device:
        return next(self.denoiser.parameters()).device


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def find_latest_checkpoint(root: str | Path) -> Path:
    """The newest ``*.ckpt`` below ``root``; :class:`CheckpointError` if there is none."""
    root = Path(root)
    found = sorted(root.rglob("*.ckpt"), key=lambda p: p.stat().st_mtime) if root.exists() else []
    if not found:
        raise CheckpointError(f"no checkpoint (*.ckpt) found under {root}; train one first "
                              "(python -m schmubert.train) or pass --checkpoint")
    return found[-1]


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The raw checkpoint dict, checked to be a SCHmUBERT ASD3PM checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(err).__name__}: {err})") from err
    if not isinstance(ckpt, dict) or ckpt.get("schmubert", {}).get("kind") != CHECKPOINT_KIND:
        raise CheckpointError(f"{path}: not a SCHmUBERT {CHECKPOINT_KIND} checkpoint")
    return ckpt


def load_model(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild the denoiser (EMA weights when present) and its noise process from a checkpoint."""
    path = Path(path)
    ckpt = read_checkpoint(path)
    hp = ckpt["hyper_parameters"]
    tracks = get_tracks(hp["tracks"])
    denoiser = from_config(hp["arch"], tracks, hp["backbone"])
    state = {k[len(DENOISER_PREFIX):]: v for k, v in ckpt["state_dict"].items() if k.startswith(DENOISER_PREFIX)}
    denoiser.load_state_dict(state)
    denoiser.to(device).eval()
    diffusion = AbsorbingDiffusion(mask_ids(tracks), NoiseConfig(**hp["noise"]))
    return LoadedModel(denoiser, diffusion, tracks, int(hp["steps"]), hp, path, file_sha256(path))


def checkpoint_hparams(arch: str, tracks: str, backbone: Any, noise: NoiseConfig, steps: int,
                       data: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """The ``hyper_parameters`` block every SCHmUBERT checkpoint carries (see the module docstring)."""
    from schmubert.config import to_dict

    backbone = backbone if isinstance(backbone, dict) else to_dict(backbone)
    return {"arch": arch, "tracks": tracks, "backbone": backbone, "noise": to_dict(noise), "steps": steps,
            "data": data or {}, **extra}


def save_model(path: str | Path, denoiser: Backbone, hparams: dict[str, Any]) -> Path:
    """Write a minimal inference checkpoint (no optimizer state) atomically; loadable by :func:`load_model`."""
    from schmubert import __version__

    ckpt = {
        "schmubert": {"kind": CHECKPOINT_KIND, "version": __version__},
        "hyper_parameters": hparams,
        "state_dict": {DENOISER_PREFIX + k: v.detach().cpu() for k, v in denoiser.state_dict().items()},
    }
    return write_atomic(path, lambda tmp: torch.save(ckpt, tmp), overwrite=True)
