"""Training speed through the train CLI at each precision, on the shipped trio's shape, and MFU against the chip.

Each run is ``python -m schmubert.train`` (in-process, :func:`schmubert.train.train`) with the same options but
``--precision``; a callback times every training step end to end (data, forward, loss, backward, clipping,
optimizer, EMA: everything Lightning does between two batches). Runs alternate between the precisions
``--repeats`` times so a change of machine load hits both; the figure is the median step after ``--warmup``.
The dense matmul peak of fp32 and bf16 is measured in the same run (``bench_train.matmul_peak``) and MFU is the
model FLOPs per step (counted once, ``FlopCounterMode``) over the step time over the peak of the step's dtype.

    python experiments/bench_precision.py --data data/processed/lakh-trio
    python experiments/bench_precision.py --options="--arch conv --preset small --batch-size 32"
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import matmul_peak  # noqa: E402

from schmubert import train  # noqa: E402
from schmubert.config import add_arguments, arg, from_args  # noqa: E402
from schmubert.precision import training_precision  # noqa: E402

#: The shipped trio's shape: conv small with two blocks of bar attention and attributes, batch 8, the recipes'
#: loader.
SHIPPED_SHAPE = ("--arch conv --tracks trio --preset small --set bar_depth=2 --set attributes=true "
                 "--batch-size 8 --num-workers 0 "
                 "--ema-every 1 --logger csv --sample-every 0 --val-every 100000 --warmup-steps 10")


@dataclass
class PrecisionBenchConfig:
    """Options of the precision benchmark."""

    data: Path = arg(Path("data/processed/demo-trio"), "processed windows to train on (make preprocess)")
    precisions: list[str] = arg(["auto", "32-true"], "training precisions to compare (--precision values)")
    options: str = arg(SHIPPED_SHAPE, "the other train CLI options, one string")
    steps: int = arg(24, "training steps per run")
    warmup: int = arg(6, "first steps of a run left out of its median")
    repeats: int = arg(2, "runs per precision, alternating")
    threads: int = arg(0, "torch CPU threads (0 = the cores this process may use)")


class StepClock(L.Callback):
    """Seconds between consecutive ends of training batches, and the model FLOPs of one step."""

    def __init__(self) -> None:
        self.ends: list[float] = []
        self.flops = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        self.ends.append(time.perf_counter())
        if len(self.ends) == 2:  # counted once the model is built and on its device
            self.flops = count_step_flops(pl_module, batch)
            self.ends.append(time.perf_counter())  # the count's own time is not a step

    def step_seconds(self, warmup: int) -> list[float]:
        ends = self.ends[:2] + self.ends[3:]
        return [b - a for a, b in zip(ends, ends[1:], strict=False)][warmup:]


def count_step_flops(module, x0: torch.Tensor) -> int:  # noqa: ANN001
    """Model FLOPs of one forward + backward on ``x0`` (bf16 autocast, so attention counts as its matmuls)."""
    from torch.utils.flop_counter import FlopCounterMode

    d = module.diffusion
    t = d.sample_t(x0.shape[0], x0.device)
    x_t, mask = d.q_sample(x0, t)
    with FlopCounterMode(display=False) as counter, torch.autocast(x0.device.type, dtype=torch.bfloat16):
        d.loss(module.denoiser(x_t), x0, mask, t).loss.backward()
    module.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def run_once(cfg: PrecisionBenchConfig, precision: str, out: Path, index: int) -> tuple[list[float], int]:
    argv = [*shlex.split(cfg.options), "--data", str(cfg.data), "--max-steps", str(cfg.steps),
            "--precision", precision, "--out", str(out), "--name", f"run{index}", "--progress", "lines",
            "--log-every", str(10**6)]
    args = train.parse_args(argv)
    clock = StepClock()
    train.train(from_args(train.TrainConfig, args), from_args(train.DataConfig, args),
                from_args(train.OptimConfig, args), from_args(train.NoiseConfig, args), extra_callbacks=[clock])
    return clock.step_seconds(cfg.warmup), clock.flops


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser, PrecisionBenchConfig)
    cfg = from_args(PrecisionBenchConfig, parser.parse_args(argv))
    torch.set_num_threads(cfg.threads or len(os.sched_getaffinity(0)))
    resolved = {p: training_precision(p, "cpu") for p in cfg.precisions}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads; precisions "
          + ", ".join(f"{p} = {r}" for p, r in resolved.items()))
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    print(f"dense matmul peak (2048^3, measured now): fp32 {peaks['fp32'] / 1e9:,.0f}, "
          f"bf16 {peaks['bf16'] / 1e9:,.0f} GFLOP/s")
    times: dict[str, list[float]] = {p: [] for p in cfg.precisions}
    flops = 0
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(cfg.repeats):
            for i, p in enumerate(cfg.precisions):
                seconds, flops = run_once(cfg, p, Path(tmp), r * len(cfg.precisions) + i)
                times[p] += seconds
    medians = {p: statistics.median(s) for p, s in times.items()}
    slowest = max(medians.values())
    print(f"\n{'precision':<11}{'runs as':<12}{'s/step':>8}{'speed-up':>10}{'GFLOP/s':>9}{'MFU':>7}")
    for p, s in medians.items():
        dtype = "bf16" if "bf16" in resolved[p] else "fp32"
        print(f"{p:<11}{resolved[p]:<12}{s:>8.3f}{slowest / s:>9.2f}x{flops / s / 1e9:>9.0f}"
              f"{flops / s / peaks[dtype]:>7.1%}")
    print(f"model FLOPs per step: {flops / 1e9:.1f} G; steps timed per precision: "
          f"{len(next(iter(times.values())))}")
    return medians


if __name__ == "__main__":
    main()
