"""The recipe study: which training recipe learns fastest per CPU-minute on a few thousand 64-bar windows.

Each candidate is a named recipe (``schmubert.recipes``) plus overrides; it trains for ``--steps`` optimizer steps
(a cosine decay ends there) with validation every ``--val-every`` steps, and the study prints the held-out ELBO
(bits per element, EMA weights) against training minutes, then the context diagnostic of the final model:
cross-entropy per masked element at mask rates 5/30/60/95% per track (a model that uses its context is far
better at 5%).

    python experiments/bench_recipe.py --data data/processed/lakh-trio --steps 600
    python experiments/bench_recipe.py --candidates base,cosine --steps 300 --json results/recipe.json

Timings are wall-clock on this machine; run it on an otherwise idle machine and compare candidates of one run.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

from schmubert import train
from schmubert.checkpoints import load_model
from schmubert.evaluation.context import context_curve, format_context

# name -> (recipe, overrides of its options)
CANDIDATES: dict[str, tuple[str, dict[str, Any]]] = {
    "base": ("cpu-base", {}),
    "cosine": ("cpu-base", {"decay": "cosine", "lr": 2e-3}),
    "no-dropout": ("cpu-base", {"decay": "cosine", "lr": 2e-3, "set": ["dropout=0.0"]}),
    "deeper": ("cpu-base", {"decay": "cosine", "lr": 2e-3, "set": ["depth=8"]}),
    "wider": ("cpu-base", {"decay": "cosine", "lr": 2e-3, "set": ["width=320", "heads=5", "depth=6"]}),
    "batch16": ("cpu-base", {"decay": "cosine", "lr": 2e-3, "batch_size": 16}),
    "no-transpose": ("cpu-base", {"decay": "cosine", "lr": 2e-3, "max_transpose": 0}),
    "schedule-all": ("cpu-base", {"decay": "cosine", "lr": 2e-3, "schedule": "all"}),
    # the scaling study (issue 18): the shipped trio's shape (conv small + bar attention, bf16 where native)
    # against 1.5x its width (8.8M parameters, 17.5 MB in fp16: the largest conv of this depth under the
    # shipped weights' ~20 MB; heads of 64 channels, as the matrix units like)
    "bars": ("cpu-base", {"decay": "cosine", "lr": 2e-3, "set": ["bar_depth=2"]}),
    "wide-bars": ("cpu-base", {"decay": "cosine", "lr": 2e-3, "set": ["bar_depth=2", "width=384", "heads=6"]}),
}


class ValidationClock(L.Callback):
    """Records ``(minutes of training, step, val/elbo)`` at every validation."""

    def __init__(self) -> None:
        self.start = 0.0
        self.points: list[tuple[float, int, float]] = []

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start = time.monotonic()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if "val/elbo" in trainer.callback_metrics:
            minutes = (time.monotonic() - self.start) / 60
            self.points.append((minutes, trainer.global_step, float(trainer.callback_metrics["val/elbo"])))


def run_candidate(name: str, data: Path, steps: int, val_every: int, out: Path, tracks: str) -> dict[str, Any]:
    recipe, overrides = CANDIDATES[name]
    argv = ["--recipe", recipe, "--tracks", tracks, "--data", str(data), "--max-steps", str(steps),
            "--val-every", str(val_every), "--out", str(out), "--name", name, "--progress", "lines",
            "--log-every", str(val_every)]
    args = train.parse_args(argv)
    for key, value in overrides.items():
        setattr(args, key, value)
    config = train.from_args(train.TrainConfig, args)
    data_cfg, optim = train.from_args(train.DataConfig, args), train.from_args(train.OptimConfig, args)
    noise = train.from_args(train.NoiseConfig, args)
    clock = ValidationClock()
    directory = train.train(config, data_cfg, optim, noise, extra_callbacks=[clock])
    model = load_model(directory / "checkpoints" / "last.ckpt")
    valid = np.load(data / "valid.npy")
    curve = context_curve(model.denoiser, valid, [t.mask_id for t in model.tracks],
                          generator=torch.Generator().manual_seed(0))
    return {"name": name, "recipe": recipe, "overrides": overrides, "points": clock.points,
            "parameters": model.denoiser.num_parameters(), "context": curve,
            "tracks": [t.name for t in model.tracks]}


def print_results(results: list[dict[str, Any]]) -> None:
    print("\nheld-out ELBO (bits per element, EMA weights) against training minutes")
    print(f"{'candidate':<14}{'params':>11}  {'min':>6} {'step':>6} {'ELBO':>7}   trajectory (min: ELBO)")
    for r in results:
        minutes, step, elbo = r["points"][-1]
        path = "  ".join(f"{m:.1f}:{e:.3f}" for m, _, e in r["points"])
        print(f"{r['name']:<14}{r['parameters']:>11,}  {minutes:6.1f} {step:6d} {elbo:7.3f}   {path}")
    print("\ncontext diagnostic: cross-entropy per masked element (bits) at each mask rate, final model")
    for r in results:
        print(f"-- {r['name']}")
        print(format_context({float(k): v for k, v in r["context"].items()}, r["tracks"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/processed/lakh-trio"),
                        help="processed dataset (default: data/processed/lakh-trio)")
    parser.add_argument("--tracks", default="trio", choices=["trio", "melody"], help="track set (default: trio)")
    parser.add_argument("--candidates", default=",".join(CANDIDATES),
                        help=f"comma-separated candidates (default: all: {','.join(CANDIDATES)})")
    parser.add_argument("--steps", type=int, default=600, help="optimizer steps per candidate (default: 600)")
    parser.add_argument("--val-every", type=int, default=100, help="validate every N steps (default: 100)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    names = [n for n in args.candidates.split(",") if n]
    unknown = sorted(set(names) - set(CANDIDATES))
    if unknown:
        parser.error(f"unknown candidates {unknown}; expected some of {sorted(CANDIDATES)}")
    results = []
    with tempfile.TemporaryDirectory(prefix="recipe-study-") as tmp:
        for name in names:
            results.append(run_candidate(name, args.data, args.steps, args.val_every, Path(tmp), args.tracks))
            print_results(results)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
