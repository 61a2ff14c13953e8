"""The pretrained models shipped with the package: ``schmubert.pretrained.load("trio")``.

Each model is ``schmubert/weights/NAME.safetensors`` (half-precision weights, hyper-parameters in the metadata)
and held-out windows ``NAME-heldout.npz``; its model card is ``docs/models/NAME.md``. Loading lives in
:mod:`schmubert.checkpoints` (every ``--checkpoint`` option takes ``pretrained:NAME``); this module is the
Python entry point and the export command that turns a training checkpoint into a shipped model (and fits the
copy prior it ships with on the held-out windows, :mod:`schmubert.copy_prior`)::

    python -m schmubert.pretrained export --checkpoint runs/trio/checkpoints/last.ckpt --name trio \\
        --heldout data/processed/lakh-trio/valid.npy
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from schmubert.checkpoints import (
    SAMPLER_HPARAM,
    WEIGHTS_DIR,
    CheckpointError,
    LoadedModel,
    export_weights,
    load_model,
    pretrained_names,
    training_windows_path,
)
from schmubert.copy_prior import HPARAM, FitResult, as_hparams, fit
from schmubert.files import write_atomic
from schmubert.sampling import SAMPLER_FIELDS, fast_denoiser

#: What a model may ship decoding defaults for: the sampler's options and the sample CLI's ``--outline``.
DEFAULT_FIELDS = SAMPLER_FIELDS | {"outline"}


def names() -> list[str]:
    """The shipped model names, e.g. ``["melody", "trio"]``."""
    return pretrained_names()


def load(name: str, device: str | torch.device = "cpu") -> LoadedModel:
    """The shipped model ``name`` in eval mode on ``device`` (offline: the weights are in the package)."""
    return load_model(f"pretrained:{name}", device)


def export(checkpoint: str | Path, name: str, heldout: str | Path | None = None, overwrite: bool = False,
           directory: Path = WEIGHTS_DIR, train: str | Path | None = None, copy_prior: bool = True,
           progress: bool = False, sampler: dict[str, Any] | None = None) -> Path:
    """Write ``directory/NAME.safetensors`` from a training checkpoint, and ``NAME-heldout.npz`` from ``heldout``.
    ``train``: training windows (default: its dataset's) for a model with attributes that stores no key
    distribution or outlines, and for the copy prior's choice of source. ``copy_prior``: fit the copy prior on
    the ``heldout`` windows (and ``train``'s, where they are on this machine) and ship it with the weights
    (False: ship none, not even one the checkpoint inherited). ``sampler``: decoding defaults to ship
    (:data:`DEFAULT_FIELDS`: :class:`~schmubert.sampling.SamplerOptions` fields and ``outline``, e.g.
    ``{"cfg_scale": 1.5}``; None: keep the checkpoint's, if any)."""
    unknown = set(sampler or {}) - DEFAULT_FIELDS
    if unknown:
        raise ValueError(f"sampler defaults {sorted(unknown)} are neither SamplerOptions fields nor outline")
    extra: dict[str, Any] = {HPARAM: None}
    if sampler is not None:
        extra[SAMPLER_HPARAM] = dict(sampler)
    if copy_prior:
        if heldout is None:
            raise ValueError("the copy prior is fitted on held-out windows: pass --heldout (or --no-copy-prior)")
        fitted = fit_copy_prior(checkpoint, np.load(heldout), train, progress)
        extra[HPARAM] = as_hparams(fitted.config)
        print(f"copy prior on {heldout}: negative ELBO {fitted.before['full']:.4f} -> {fitted.after['full']:.4f}, "
              f"infilling NLL {fitted.before.get('infill', float('nan')):.4f} -> "
              f"{fitted.after.get('infill', float('nan')):.4f} bits per element (the windows it was fitted on)")
        if fitted.sources is not None:
            print(f"copy prior's choice of source on {fitted.sources['examples']} gap bars of the training windows: "
                  f"top-scored bar right {fitted.sources['top_right_before']:.1%} -> "
                  f"{fitted.sources['top_right_after']:.1%}")
    out = export_weights(checkpoint, directory / f"{name}.safetensors", overwrite=overwrite, train=train,
                         extra=extra)
    if heldout is not None:
        pieces = np.load(heldout).astype(np.uint16)
        target = directory / f"{name}-heldout.npz"
        write_atomic(target, lambda tmp: np.savez_compressed(tmp, pieces=pieces), overwrite=overwrite)
    return out


def fit_copy_prior(checkpoint: str | Path, pieces: np.ndarray, train: str | Path | None = None,
                   progress: bool = False) -> FitResult:
    """The copy prior of the network in ``checkpoint`` (any copy prior it carries is ignored), fitted on held-out
    ``pieces`` at the sampling precision of this machine, its choice of source on the training windows ``train``
    (default: the checkpoint's dataset's ``train.npy``; by likelihood alone, with a note, where they are not on
    this machine)."""
    model = load_model(checkpoint, copy_prior=False)
    path = training_windows_path(model.hparams, train)
    windows = np.load(path, mmap_mode="r") if path is not None and path.is_file() else None
    if windows is None:
        print(f"note: no training windows ({path or 'the checkpoint names no dataset'}): the copy prior's bar "
              f"scores are fitted by likelihood alone (pass --train DATA/train.npy)")
    for name, found in (("held-out", pieces), ("training", windows)):
        if found is not None and found.shape[1:] != (model.steps, len(model.tracks)):
            raise ValueError(f"{name} windows of shape {found.shape[1:]} do not fit the model "
                             f"({model.steps}, {len(model.tracks)})")
    return fit(fast_denoiser(model.denoiser, "auto"), model.diffusion, pieces.astype(np.int64), train=windows,
               progress=progress)


def shipped_defaults(args: argparse.Namespace) -> dict[str, Any] | None:
    """The decoding defaults ``export``'s options ask to ship (None where none: keep the checkpoint's)."""
    chosen = {"cfg_scale": args.cfg_scale, "outline": args.outline, "repair": args.repair,
              "repair_steps": args.repair_steps, "max_hold": args.max_hold}
    return {k: v for k, v in chosen.items() if v is not None} or None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m schmubert.pretrained", description=__doc__.splitlines()[0],
                                     allow_abbrev=False)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the shipped models", allow_abbrev=False)
    ex = sub.add_parser("export", help="turn a training checkpoint into a shipped model", allow_abbrev=False)
    ex.add_argument("--checkpoint", required=True, help="a training checkpoint (.ckpt)")
    ex.add_argument("--name", required=True, help="the model's name (pretrained:NAME)")
    ex.add_argument("--heldout", type=Path, help="valid.npy of the held-out windows to ship beside the weights")
    ex.add_argument("--train", type=Path, help="train.npy to fit the copy prior's choice of source on, and to take "
                    "the key distribution and outlines from for a model with attributes that stores none (default: "
                    "its dataset's)")
    ex.add_argument("--copy-prior", action=argparse.BooleanOptionalAction, default=True,
                    help="fit the copy prior (schmubert/copy_prior.py) on the --heldout and --train windows and "
                         "ship it")
    ex.add_argument("--cfg-scale", type=float, help="the model's default classifier-free guidance scale, used "
                    "where a user sets none (chosen by measurement, experiments/README.md; default: the sampler's, "
                    "2)")
    ex.add_argument("--repair", type=int, help="the model's default repair rounds (chosen by measurement, "
                    "experiments/README.md; default: the sampler's, 2)")
    ex.add_argument("--repair-steps", type=int, help="the model's default reverse steps of a repair round (chosen "
                    "by measurement, experiments/README.md; default: the sampler's, 8)")
    ex.add_argument("--max-hold", type=int, help="the longest a drawn note of a polyphonic instrument's voice may "
                    "hold, in 16th steps (SamplerOptions.max_hold; default: unbounded)")
    ex.add_argument("--outline", choices=["auto", "none"], help="what the model's new pieces are told where a "
                    "user sets no --outline (chosen by measurement, experiments/README.md; default: none)")
    ex.add_argument("--overwrite", action="store_true", help="replace an existing shipped model of that name")
    ex.add_argument("--directory", type=Path, default=WEIGHTS_DIR, help="write NAME.safetensors and its held-out "
                    "windows there instead of the package's weights (a candidate to measure before it replaces "
                    "the shipped model)")
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            print("\n".join(names()) or "(no shipped models)")
        else:
            args.directory.mkdir(parents=True, exist_ok=True)
            out = export(args.checkpoint, args.name, args.heldout, args.overwrite, directory=args.directory,
                         train=args.train, copy_prior=args.copy_prior, progress=True,
                         sampler=shipped_defaults(args))
            print(f"wrote {out}")
    except (CheckpointError, FileExistsError, OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
