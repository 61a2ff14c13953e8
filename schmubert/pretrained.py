"""The pretrained models shipped with the package: ``schmubert.pretrained.load("trio")``.

Each model is ``schmubert/weights/NAME.safetensors`` (half-precision weights, hyper-parameters in the metadata)
and held-out windows ``NAME-heldout.npz``; its model card is ``docs/models/NAME.md``. Loading lives in
:mod:`schmubert.checkpoints` (every ``--checkpoint`` option takes ``pretrained:NAME``); this module is the
Python entry point and the export command that turns a training checkpoint into a shipped model::

    python -m schmubert.pretrained export --checkpoint runs/trio/checkpoints/last.ckpt --name trio \\
        --heldout data/processed/lakh-trio/valid.npy
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from schmubert.checkpoints import (
    WEIGHTS_DIR,
    CheckpointError,
    LoadedModel,
    export_weights,
    load_model,
    pretrained_names,
)
from schmubert.files import write_atomic


def names() -> list[str]:
    """The shipped model names, e.g. ``["melody", "trio"]``."""
    return pretrained_names()


def load(name: str, device: str | torch.device = "cpu") -> LoadedModel:
    """The shipped model ``name`` in eval mode on ``device`` (offline: the weights are in the package)."""
    return load_model(f"pretrained:{name}", device)


def export(checkpoint: str | Path, name: str, heldout: str | Path | None = None, overwrite: bool = False,
           directory: Path = WEIGHTS_DIR, train: str | Path | None = None) -> Path:
    """Write ``directory/NAME.safetensors`` from a training checkpoint, and ``NAME-heldout.npz`` from ``heldout``.
    ``train``: training windows for a model with attributes that stores no key distribution or outlines."""
    out = export_weights(checkpoint, directory / f"{name}.safetensors", overwrite=overwrite, train=train)
    if heldout is not None:
        pieces = np.load(heldout).astype(np.uint16)
        target = directory / f"{name}-heldout.npz"
        write_atomic(target, lambda tmp: np.savez_compressed(tmp, pieces=pieces), overwrite=overwrite)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m schmubert.pretrained", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the shipped models")
    ex = sub.add_parser("export", help="turn a training checkpoint into a shipped model")
    ex.add_argument("--checkpoint", required=True, help="a training checkpoint (.ckpt)")
    ex.add_argument("--name", required=True, help="the model's name (pretrained:NAME)")
    ex.add_argument("--heldout", type=Path, help="valid.npy of the held-out windows to ship beside the weights")
    ex.add_argument("--train", type=Path, help="train.npy to take the key distribution and outlines from, for a "
                    "model with attributes that stores none (default: its dataset's)")
    ex.add_argument("--overwrite", action="store_true", help="replace an existing shipped model of that name")
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            print("\n".join(names()) or "(no shipped models)")
        else:
            print(f"wrote {export(args.checkpoint, args.name, args.heldout, args.overwrite, train=args.train)}")
    except (CheckpointError, FileExistsError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
