"""The end-to-end demo behind ``make demo``: train a small model on the demo corpus, then sample from it.

It trains a small conv trio model on the bundled demo corpus for a few minutes on CPU, then writes infilled,
accompanied and unconditional samples (MIDI, piano-roll PNG, WAV when FluidSynth is there, JSON record).

``make demo`` runs ``make preprocess`` first, which writes ``data/processed/demo-trio``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from schmubert import sample, train
from schmubert.backbones import PRESETS, architectures
from schmubert.config import add_arguments, arg, from_args
from schmubert.data import DataConfig
from schmubert.diffusion import NoiseConfig
from schmubert.module import OptimConfig


@dataclass
class DemoConfig:
    data: Path = arg(Path("data/processed/demo-trio"), "processed demo dataset (from `make preprocess`)")
    minutes: float = arg(4.0, "training time budget in minutes")
    max_steps: int = arg(3000, "training steps at most (the time budget usually ends training first)")
    arch: str = arg("conv", "backbone architecture", choices=architectures())
    preset: str = arg("small", "backbone preset", choices=PRESETS)
    batch_size: int = arg(8, "training batch size")
    sample_steps: int = arg(256, "reverse diffusion steps per sample")
    out: Path = arg(Path("runs"), "training output folder (the run goes to OUT/demo, or demo-N)")
    samples: Path = arg(Path("samples/demo"), "where the demo samples go (replaced on every demo run)")
    seed: int = arg(0, "random seed")


SCENARIOS = {  # name -> sample CLI options
    "infill-bars-32-48": ["--infill", "32:48"],
    "accompaniment-bass-drums": ["--generate-tracks", "bass,drums"],
    "unconditional": [],
}


def run(cfg: DemoConfig) -> Path:
    minutes = int(cfg.minutes * 60)
    run_config = train.TrainConfig(
        arch=cfg.arch, tracks="trio", preset=cfg.preset, max_steps=cfg.max_steps, val_every=200, val_batches=0,
        sample_every=0, max_time=f"00:00:{minutes // 60:02d}:{minutes % 60:02d}", out=cfg.out, name="demo",
        logger="csv", seed=cfg.seed, log_every=10)
    data = DataConfig(data=cfg.data, batch_size=cfg.batch_size, num_workers=0, max_transpose=6)
    optim = OptimConfig(lr=1e-3, warmup_steps=100, ema_decay=0.99, ema_every=1)
    directory = train.train(run_config, data, optim, NoiseConfig(schedule="mixed"))
    checkpoint = directory / "checkpoints" / "last.ckpt"
    for name, options in SCENARIOS.items():
        argv = ["--checkpoint", str(checkpoint), "--steps", str(cfg.sample_steps), "--num-samples", "2",
                "--seed", str(cfg.seed), "--out", str(cfg.samples / name), "--name", name, "--overwrite",
                "--device", "cpu", *options]
        if sample.main(argv) != 0:
            raise RuntimeError(f"sampling failed for the {name} demo")
    print(f"\ndemo done: model in {directory}, samples (MIDI, PNG, JSON) in {cfg.samples}/")
    return directory


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m schmubert.demo", description=__doc__.splitlines()[0])
    add_arguments(parser, DemoConfig)
    run(from_args(DemoConfig, parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
