"""The end-to-end demo behind ``make demo``: music from the shipped models, and a short fine-tuning run.

1. The shipped trio model (``pretrained:trio``) infills bars 32-48 of a held-out piece, writes bass and drums
   for a given melody, continues the first 16 bars, and generates unconditionally; the shipped melody model
   (``pretrained:melody``) infills, continues and generates melodies. Each writes MIDI, a piano-roll PNG, a WAV
   when FluidSynth is there and a JSON record, under ``samples/demo/<scenario>/``.
2. Training still shows: the trio model is fine-tuned on the bundled demo corpus for ``--minutes`` (half a
   minute by default), and the fine-tuned model infills bars 32-48 once more.

``make demo`` runs ``make preprocess`` first, which writes ``data/processed/demo-trio``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from schmubert import sample, train
from schmubert.config import add_arguments, arg, from_args
from schmubert.data import DataConfig
from schmubert.diffusion import NoiseConfig
from schmubert.module import OptimConfig


@dataclass
class DemoConfig:
    data: Path = arg(Path("data/processed/demo-trio"), "processed demo dataset (from `make preprocess`)")
    minutes: float = arg(0.5, "fine-tuning time budget in minutes (0: skip the fine-tuning); half a minute keeps "
                         "make demo under 5 minutes on 2 cores without native bf16 (4 min 54 s at 1)")
    batch_size: int = arg(8, "fine-tuning batch size")
    sample_steps: int = arg(128, "reverse diffusion steps per sample")
    num_samples: int = arg(2, "samples per scenario")
    out: Path = arg(Path("runs"), "fine-tuning output folder (the run goes to OUT/demo-finetune, or -N)")
    samples: Path = arg(Path("samples/demo"), "where the demo samples go (replaced on every demo run)")
    seed: int = arg(0, "random seed")


# scenario -> (model, sample CLI options); inputs are held-out pieces shipped with each model
SCENARIOS = {
    "trio-infill-bars-32-48": ("pretrained:trio", ["--infill", "32:48"]),
    "trio-accompaniment-bass-drums": ("pretrained:trio", ["--generate-tracks", "bass,drums"]),
    "trio-continuation-from-bar-16": ("pretrained:trio", ["--continue-bars", "16"]),
    "trio-unconditional": ("pretrained:trio", []),
    "melody-infill-bars-32-48": ("pretrained:melody", ["--infill", "32:48"]),
    "melody-continuation-from-bar-16": ("pretrained:melody", ["--continue-bars", "16"]),
    "melody-unconditional": ("pretrained:melody", []),
}


def sample_scenario(cfg: DemoConfig, name: str, checkpoint: str | Path, options: list[str]) -> None:
    argv = ["--checkpoint", str(checkpoint), "--steps", str(cfg.sample_steps), "--num-samples",
            str(cfg.num_samples), "--seed", str(cfg.seed), "--out", str(cfg.samples / name), "--name", name,
            "--overwrite", "--device", "cpu", "--no-progress", *options]
    if sample.main(argv) != 0:
        raise RuntimeError(f"sampling failed for the {name} demo")


def fine_tune(cfg: DemoConfig) -> Path:
    seconds = int(cfg.minutes * 60)
    run_config = train.TrainConfig(
        init="pretrained:trio", max_steps=100_000, val_every=50, val_batches=0, sample_every=0,
        max_time=f"00:00:{seconds // 60:02d}:{seconds % 60:02d}", out=cfg.out, name="demo-finetune",
        logger="csv", seed=cfg.seed, log_every=10, progress="lines")
    data = DataConfig(data=cfg.data, batch_size=cfg.batch_size, num_workers=0, max_transpose=6)
    optim = OptimConfig(lr=2e-4, warmup_steps=20, ema_decay=0.99, ema_every=1)
    return train.train(run_config, data, optim, NoiseConfig())


def run(cfg: DemoConfig) -> Path | None:
    for name, (checkpoint, options) in SCENARIOS.items():
        sample_scenario(cfg, name, checkpoint, options)
    directory = None
    if cfg.minutes > 0:
        directory = fine_tune(cfg)
        sample_scenario(cfg, "finetuned-trio-infill-bars-32-48", directory / "checkpoints" / "last.ckpt",
                        ["--infill", "32:48"])
    print(f"\ndemo done: samples (MIDI, PNG, WAV, JSON) in {cfg.samples}/"
          + (f", fine-tuned model in {directory}" if directory else ""))
    return directory


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m schmubert.demo", description=__doc__.splitlines()[0],
                                     allow_abbrev=False)
    add_arguments(parser, DemoConfig)
    run(from_args(DemoConfig, parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
