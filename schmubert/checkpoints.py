"""Loading trained models for inference (sampling, evaluation) from Lightning checkpoints.

A SCHmUBERT checkpoint is a Lightning checkpoint written by :class:`schmubert.module.ASD3PM` with

- ``checkpoint["schmubert"]``: ``{"kind": "asd3pm", "version": ...}`` (how a checkpoint of the wrong kind is told),
- ``checkpoint["hyper_parameters"]``: ``arch``, ``tracks``, ``backbone`` (the backbone config as a dict),
  ``noise`` (the :class:`~schmubert.diffusion.NoiseConfig` as a dict), ``steps`` (window length L), ``data``
  (the dataset's ``meta.json`` summary); optionally ``sampler``, the decoding defaults chosen for the model by
  measurement (:class:`~schmubert.sampling.SamplerOptions` fields, e.g. ``{"cfg_scale": 1.5}``), which every
  sampling path uses where the user set nothing,
- ``checkpoint["state_dict"]``: ``denoiser.*`` weights; when training used EMA these are the EMA weights
  (Lightning's ``EMAWeightAveraging`` puts the average there and the raw weights under ``current_model_state``).

Pretrained models ship inside the package (``schmubert/weights/NAME.safetensors``: the denoiser's weights in half
precision, the same ``hyper_parameters`` as JSON in the file's metadata, and held-out windows
``NAME-heldout.npz`` beside it; the model card is ``docs/models/NAME.md``). Everything that takes a checkpoint
also takes ``pretrained:NAME``.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from schmubert.attributes import DATA_SUMMARIES, data_summaries
from schmubert.backbones import Backbone, from_config
from schmubert.copy_prior import CopyPrior
from schmubert.copy_prior import wrap as copy_prior_wrap
from schmubert.diffusion import AbsorbingDiffusion, NoiseConfig
from schmubert.files import write_atomic
from schmubert.tokens import Track, get_tracks, instrument_index, mask_ids

CHECKPOINT_KIND = "asd3pm"
DENOISER_PREFIX = "denoiser."
PRETRAINED_PREFIX = "pretrained:"
WEIGHTS_DIR = Path(__file__).parent / "weights"
METADATA_KEY = "schmubert"
SAMPLER_HPARAM = "sampler"  # the hyper-parameter holding a model's decoding defaults


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable or not a SCHmUBERT model."""


@dataclass
class LoadedModel:
    denoiser: Backbone  # in eval mode, on the requested device (in a CopyPrior when the model carries one)
    diffusion: AbsorbingDiffusion
    tracks: tuple[Track, ...]
    steps: int  # the window length L the model was trained on
    hparams: dict[str, Any]
    path: Path
    sha256: str = field(repr=False)

    @property
    def device(self) -> torch.device:
        return next(self.denoiser.parameters()).device

    @property
    def conditional(self) -> bool:
        """Whether the model was trained with attributes (takes ``attrs``; see :mod:`schmubert.attributes`)."""
        return bool(getattr(self.denoiser, "conditional", False))

    @property
    def sampler_defaults(self) -> dict[str, Any]:
        """The decoding defaults it ships with (``SamplerOptions`` fields, applied by
        :meth:`schmubert.sampling.SamplerOptions.with_defaults`, and the sample CLI's ``outline``; empty: the
        sampler's and the CLI's own)."""
        return dict(self.hparams.get(SAMPLER_HPARAM) or {})

    @property
    def uses_copy_prior(self) -> bool:
        """Whether the denoiser mixes in a fitted copy prior (:mod:`schmubert.copy_prior`)."""
        return isinstance(self.denoiser, CopyPrior)


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


def pretrained_names() -> list[str]:
    """Names of the pretrained models shipped with the package (``pretrained:NAME``)."""
    return sorted(p.stem for p in WEIGHTS_DIR.glob("*.safetensors"))


def pretrained_path(name: str) -> Path:
    """The weights file of pretrained model ``name`` (``trio``, ``melody``); CheckpointError if there is none."""
    path = WEIGHTS_DIR / f"{name}.safetensors"
    if name not in pretrained_names() or not path.is_file():  # also keeps a name from leaving the folder
        raise CheckpointError(f"pretrained:{name}: no such pretrained model; shipped: {pretrained_names()}")
    return path


def resolve(checkpoint: str | Path) -> Path:
    """A checkpoint path, with ``pretrained:NAME`` turned into the shipped weights file."""
    text = str(checkpoint)
    return pretrained_path(text[len(PRETRAINED_PREFIX):]) if text.startswith(PRETRAINED_PREFIX) else Path(text)


def default_checkpoint(runs: str | Path, tracks: str | None = None) -> str | Path:
    """The newest checkpoint under ``runs``; with none there, the pretrained model of ``tracks`` (default trio)."""
    try:
        return find_latest_checkpoint(runs)
    except CheckpointError:
        name = f"{PRETRAINED_PREFIX}{tracks or 'trio'}"
        print(f"no checkpoint under {runs}: using the shipped model {name}", file=sys.stderr)
        return name


def read_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The state dict and hyper-parameters of a ``.safetensors`` weights file written by :func:`export_weights`."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            state = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 - safe_open has no __iter__
    except Exception as err:
        raise CheckpointError(f"{path}: unreadable weights file ({type(err).__name__}: {err})") from err
    if METADATA_KEY not in meta:
        raise CheckpointError(f"{path}: not a SCHmUBERT weights file (no '{METADATA_KEY}' metadata)")
    return state, json.loads(meta[METADATA_KEY])


def read_model_state(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The denoiser's state dict and the hyper-parameters, from a Lightning checkpoint or a weights file."""
    if path.suffix == ".safetensors":
        return read_weights(path)
    ckpt = read_checkpoint(path)
    state = {k[len(DENOISER_PREFIX):]: v for k, v in ckpt["state_dict"].items() if k.startswith(DENOISER_PREFIX)}
    return state, with_schedule_step(ckpt["hyper_parameters"], ckpt.get("global_step"))


def with_schedule_step(hp: dict[str, Any], global_step: int | None) -> dict[str, Any]:
    """``hp`` whose provenance records the step of its learning-rate schedule the training run reached (its
    ``--start-step`` plus the checkpoint's global step), which an export keeps: a later run continues that
    schedule from the exported weights with ``--start-step``. Unchanged for a file without a global step."""
    if global_step is None:
        return hp
    step = int((hp.get("optim") or {}).get("start_step", 0)) + int(global_step)
    return {**hp, "provenance": {**(hp.get("provenance") or {}), "schedule_step": step}}


def load_model(path: str | Path, device: str | torch.device = "cpu", copy_prior: bool = True) -> LoadedModel:
    """Rebuild the denoiser (EMA weights when present) and its noise process from a checkpoint.

    ``path``: a Lightning ``.ckpt``, a ``.safetensors`` weights file, or ``pretrained:NAME``. ``copy_prior``: a
    model that carries a fitted copy prior gets its denoiser wrapped in it (:mod:`schmubert.copy_prior`); False
    gives the network alone (the backbone itself, e.g. to train from its weights).
    """
    path = resolve(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    state, hp = read_model_state(path)
    tracks = get_tracks(hp["tracks"])
    denoiser = from_config(hp["arch"], tracks, hp["backbone"])
    try:
        denoiser.load_state_dict(state)  # half-precision weights are cast to the model's float32
    except RuntimeError as err:
        raise CheckpointError(f"{path}: weights do not fit the model they describe ({err})") from err
    if copy_prior:
        denoiser = copy_prior_wrap(denoiser, mask_ids(tracks), hp)
    denoiser.to(device).eval()
    diffusion = AbsorbingDiffusion(mask_ids(tracks), NoiseConfig(**hp["noise"]), instrument_index(tracks))
    return LoadedModel(denoiser, diffusion, tracks, int(hp["steps"]), hp, path, file_sha256(path))


def export_weights(checkpoint: str | Path, out: str | Path, dtype: torch.dtype = torch.float16,
                   overwrite: bool = False, train: str | Path | None = None,
                   extra: dict[str, Any] | None = None) -> Path:
    """Write the denoiser of ``checkpoint`` as a ``.safetensors`` weights file (``dtype``, hparams in metadata).

    A model with attributes trained before it stored what new pieces draw from (its training split's key
    distribution and outlines) gets them from ``train`` (a ``train.npy``; default: its dataset's). ``extra``:
    hyper-parameters added or replaced (e.g. a fitted ``copy_prior``; None removes one)."""
    from safetensors.torch import save_file

    state, hp = read_model_state(resolve(checkpoint))
    hp = with_data_summaries(hp, checkpoint, train) | (extra or {})
    hp = {k: v for k, v in hp.items() if not (k in (extra or {}) and v is None)}  # an extra None removes its key
    tensors = {k: v.detach().to(dtype).contiguous() for k, v in state.items()}
    meta = {METADATA_KEY: json.dumps(hp, default=str)}
    return write_atomic(out, lambda tmp: save_file(tensors, str(tmp), metadata=meta), overwrite=overwrite)


def with_data_summaries(hp: dict[str, Any], checkpoint: str | Path, train: str | Path | None) -> dict[str, Any]:
    """``hp`` with the :data:`~schmubert.attributes.DATA_SUMMARIES` a conditional model lacks computed from the
    training windows ``train`` (default: ``train.npy`` of the dataset it was trained on)."""
    stored = hp.get("attributes") or {}
    if not hp["backbone"].get("attributes") or all(stored.get(k) for k in DATA_SUMMARIES):
        return hp
    path = training_windows_path(hp, train)
    if path is None or not path.is_file():
        raise CheckpointError(f"{checkpoint}: the model stores no {' or '.join(DATA_SUMMARIES)} and its training "
                              f"windows are not at {path}; pass them (--train DATA/train.npy)")
    computed = data_summaries(np.load(path, mmap_mode="r"), get_tracks(hp["tracks"]))
    return {**hp, "attributes": {**stored, **{k: v for k, v in computed.items() if not stored.get(k)}}}


def training_windows_path(hp: dict[str, Any], train: str | Path | None = None) -> Path | None:
    """``train`` if given, else ``train.npy`` of the dataset a checkpoint with hyper-parameters ``hp`` was trained on
    (None when it names none; the file may be missing on this machine)."""
    data = (hp.get("data") or {}).get("path")
    return Path(train) if train is not None else Path(data) / "train.npy" if data else None


def held_out_pieces(model: LoadedModel) -> tuple[np.ndarray, str] | None:
    """Held-out windows of the data the model was trained on, ``(N, steps, K)``, and where they come from.

    A shipped model carries its own (``NAME-heldout.npz``); a training checkpoint points at its dataset's
    ``valid.npy``. None when neither is on this machine.
    """
    bundled = model.path.with_name(f"{model.path.stem}-heldout.npz")
    if model.path.suffix == ".safetensors" and bundled.is_file():
        with np.load(bundled) as archive:
            return archive["pieces"].astype(np.int64), str(bundled)
    data = (model.hparams.get("data") or {}).get("path")
    valid = Path(data) / "valid.npy" if data else None
    if valid is not None and valid.is_file():
        return np.load(valid, mmap_mode="r"), str(valid)
    return None


def held_out_velocity(model: LoadedModel) -> np.ndarray | None:
    """The velocity bins ``(N, steps, K)`` of :func:`held_out_pieces` (a velocity set's
    ``valid_velocity.npy``, or ``velocity`` in a shipped model's held-out bundle); None where there are none."""
    bundled = model.path.with_name(f"{model.path.stem}-heldout.npz")
    if model.path.suffix == ".safetensors" and bundled.is_file():
        with np.load(bundled) as archive:
            return archive["velocity"].astype(np.int64) if "velocity" in archive else None
    data = (model.hparams.get("data") or {}).get("path")
    valid = Path(data) / "valid_velocity.npy" if data else None
    return np.load(valid, mmap_mode="r") if valid is not None and valid.is_file() else None


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
