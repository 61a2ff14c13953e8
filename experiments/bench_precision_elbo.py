"""Numerics: do bf16 and fp32 training give the same held-out ELBO curve on real windows?

Trains the shipped trio's shape (``bench_precision.SHIPPED_SHAPE``) from scratch through the train CLI for
``--steps`` steps, validating every ``--val-every`` steps on the held-out split (validation is the
unconditional model, every track masked alike, stratified t, the same masks in every run). The runs:

- ``--precision`` auto (bf16-mixed where native) and 32-true with the same seed: same initial weights, same
  batches, same masks; only the arithmetic differs;
- 32-true with another seed (``--noise-seed``): the run-to-run spread that "within noise" is measured against.

It prints the validation ELBO (bits per element) of every run at every validation, and at the end the
bf16 - fp32 difference next to the fp32 seed-to-seed difference.

    python experiments/bench_precision_elbo.py --data data/processed/lakh-trio --steps 400
"""

from __future__ import annotations

import argparse
import csv
import os
import shlex
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_precision import SHIPPED_SHAPE  # noqa: E402

from schmubert import train  # noqa: E402
from schmubert.config import from_args  # noqa: E402
from schmubert.precision import training_precision  # noqa: E402


def val_curve(run: Path) -> dict[int, float]:
    """``{step: val/elbo}`` from a run's CSV log (steps counted from 1)."""
    out = {}
    with open(run / "logs" / "metrics.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row.get("val/elbo"):
                out[int(row["step"]) + 1] = float(row["val/elbo"])
    return out


def run_once(args: argparse.Namespace, precision: str, seed: int, out: Path, name: str) -> dict[int, float]:
    shape = SHIPPED_SHAPE.replace("--val-every 100000", "").replace("--warmup-steps 10", "")
    argv = [*shlex.split(shape), "--data", str(args.data), "--max-steps", str(args.steps), "--val-every",
            str(args.val_every), "--val-batches", "0", "--warmup-steps", str(args.warmup), "--lr", str(args.lr),
            "--precision", precision, "--seed", str(seed), "--out", str(out), "--name", name,
            "--progress", "lines", "--log-every", "50", "--max-transpose", "6"]
    parsed = train.parse_args(argv)
    run = train.train(from_args(train.TrainConfig, parsed), from_args(train.DataConfig, parsed),
                      from_args(train.OptimConfig, parsed), from_args(train.NoiseConfig, parsed))
    return val_curve(run)


def main(argv: list[str] | None = None) -> dict[str, dict[int, float]]:
    p = argparse.ArgumentParser(prog="python experiments/bench_precision_elbo.py",
                                description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=Path("data/processed/lakh-trio"),
                   help="processed windows with a held-out split")
    p.add_argument("--precision", default="auto", help="the low precision compared with 32-true")
    p.add_argument("--steps", type=int, default=400, help="training steps per run")
    p.add_argument("--val-every", type=int, default=100, help="validate every this many steps")
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate (the recipes')")
    p.add_argument("--warmup", type=int, default=50, help="warm-up steps")
    p.add_argument("--seed", type=int, default=0, help="seed of the compared pair")
    p.add_argument("--noise-seed", type=int, default=1, help="seed of the second fp32 run (the spread)")
    args = p.parse_args(argv)
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    low = training_precision(args.precision, "cpu")
    runs = {f"{low} seed {args.seed}": (low, args.seed), f"32-true seed {args.seed}": ("32-true", args.seed),
            f"32-true seed {args.noise_seed}": ("32-true", args.noise_seed)}
    curves = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (label, (precision, seed)) in enumerate(runs.items()):
            curves[label] = run_once(args, precision, seed, Path(tmp), f"run{i}")
    labels = list(curves)
    steps = sorted(set.intersection(*(set(c) for c in curves.values())))
    print(f"\nheld-out ELBO (bits per element) on {args.data}, shipped trio shape, batch 8\n")
    print("| step | " + " | ".join(labels) + f" | {low} - fp32 | fp32 seed spread |")
    print("|---:|" + "---:|" * (len(labels) + 2))
    for s in steps:
        a, b, c = (curves[label][s] for label in labels)
        print(f"| {s} | {a:.4f} | {b:.4f} | {c:.4f} | {a - b:+.4f} | {c - b:+.4f} |")
    return curves


if __name__ == "__main__":
    main()
