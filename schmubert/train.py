"""Train an ASD3PM model: ``python -m schmubert.train --arch conv --tracks trio``.

Lightning's Trainer does the work (multi-GPU / multi-node through its strategies, bf16 wherever it is native,
see :mod:`schmubert.precision`); this module turns typed options into a model, a data module, callbacks and a
logger.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from schmubert.backbones import PRESETS, architectures
from schmubert.config import add_arguments, arg, from_args, to_dict
from schmubert.copy_prior import HPARAM
from schmubert.data import DataConfig, DatasetError, TokenDataModule
from schmubert.diffusion import NoiseConfig
from schmubert.module import ASD3PM, CondConfig, OptimConfig
from schmubert.precision import training_precision
from schmubert.recipes import get_recipe, recipe_names

INTERRUPTED = "interrupted"
RUN_DIR_ENV = "SCHMUBERT_RUN_DIR"
EXAMPLES = """examples:
  make preprocess && python -m schmubert.train --arch conv --tracks trio --preset small --max-steps 2000
  python -m schmubert.train --arch conv --tracks trio --data data/processed/trio --devices 4 --batch-size 64
  python -m schmubert.train --arch transformer --tracks melody --preset tiny --max-steps 5 --logger csv
  python -m schmubert.train --resume runs/conv-trio-paper/checkpoints/last.ckpt
  python -m schmubert.train --arch conv --set depth=8 --set width=256 ...   (override backbone fields)
  python -m schmubert.train --init pretrained:melody --set attributes=true --cond-drop 0.5 ...   (key, density,
      register conditions; see docs/attributes.md)
"""


@dataclass
class TrainConfig:
    recipe: str = arg("", "a named recipe (schmubert.recipes) whose options become the defaults: "
                      + ", ".join(recipe_names()))
    arch: str = arg("conv", "backbone architecture", choices=architectures())
    tracks: str = arg("trio", "track set: trio (melody, bass, drums), melody, pop909 (melody, bridge:4, piano:6), "
                              "band, or a spec such as 'melody,bass,drums,piano:6' (schmubert.tokens)")
    preset: str = arg("paper", "backbone size preset: " + ", ".join(PRESETS) + " for every architecture, "
                      "or one of an architecture's own (an unknown name lists them)")
    set: list[str] = arg([], "backbone config override FIELD=VALUE (repeatable, e.g. --set depth=4); with "
                           "--init it may only add modules (e.g. --set bar_depth=2), whose new weights start fresh")
    max_steps: int = arg(600_000, "optimizer steps to train, the length of the learning-rate schedule (thesis: "
                         "190k melody, 600k trio)")
    stop_step: int = arg(0, "stop at this step of the schedule (0: at --max-steps), to train a schedule longer "
                         "than one session in parts: the next part continues from this one's export with "
                         "--init and --start-step")
    max_time: str = arg("", "also stop after this wall-clock time, DD:HH:MM:SS (empty: no limit)")
    val_every: int = arg(2000, "validate (and consider a best checkpoint) every this many steps")
    val_batches: int = arg(50, "validation batches per validation run (0 = the whole validation split)")
    sample_every: int = arg(5000, "log a few samples (piano roll + MIDI) every this many steps (0 = never)")
    sample_count: int = arg(2, "pieces per sampling preview")
    sample_steps: int = arg(64, "reverse diffusion steps per sampling preview")
    accelerator: str = arg("auto", "Lightning accelerator: auto, cpu, gpu, ...")
    devices: str = arg("auto", "devices per node: auto, a count, or a list like 0,1")
    num_nodes: int = arg(1, "number of nodes (multi-node DDP, e.g. under SLURM or torchrun)")
    strategy: str = arg("auto", "Lightning strategy: auto, ddp, ddp_spawn, fsdp, ...")
    precision: str = arg("auto", "auto (bf16-mixed where bf16 is native: a GPU, or a CPU with AVX512-BF16 or "
                         "AMX; else 32-true) or a Lightning precision (32-true, bf16-mixed, 16-mixed, ...)")
    compile: bool = arg(False, "torch.compile the denoiser (inductor; slower than eager on the CPU measured in "
                        "experiments/README.md, not yet measured on a GPU)")
    out: Path = arg(Path("runs"), "output folder; the run goes to OUT/NAME (checkpoints, logs, samples)")
    name: str = arg("", "run name (default ARCH-TRACKS-PRESET; a new suffix if that folder exists)")
    resume: str = arg("", "checkpoint to resume from, or 'last' for OUT/NAME/checkpoints/last.ckpt")
    init: str = arg("", "fine-tune: start from these weights (a checkpoint, .safetensors or pretrained:NAME); "
                    "architecture, tracks and noise come from them (--arch/--preset are ignored; --set may add "
                    "modules; noise options given other than their defaults win)")
    logger: Literal["wandb", "csv"] = arg("wandb", "where metrics go: wandb (offline unless --wandb-mode "
                                           "online) or csv")
    wandb_mode: Literal["offline", "online", "disabled"] = arg("offline", "wandb mode; online needs an account")
    wandb_project: str = arg("schmubert", "wandb project name")
    seed: int = arg(0, "random seed: same seed, same run (also after --resume)")
    log_every: int = arg(50, "log training metrics every this many steps")
    progress: Literal["auto", "bar", "lines"] = arg(
        "auto", "progress display: a live bar, plain lines every --log-every steps, or auto (the bar on a "
        "terminal, lines in a redirected log)")


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["depth=4", "dropout=0.1"]`` -> ``{"depth": 4, "dropout": 0.1}`` (ints, floats, bools, strings)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set expects FIELD=VALUE, got {item!r}")
        for cast in (int, float):
            try:
                out[key] = cast(value)
                break
            except ValueError:
                continue
        else:
            out[key] = {"true": True, "false": False}.get(value.lower(), value)
    return out


def run_dir(config: TrainConfig) -> Path:
    """OUT/NAME; a fresh run never reuses an existing folder (a suffix is added instead).

    Processes that Lightning launches for the other devices inherit the folder rank 0 chose (``RUN_DIR_ENV``).
    """
    if os.environ.get(RUN_DIR_ENV):
        return Path(os.environ[RUN_DIR_ENV])
    name = config.name or f"{config.arch}-{config.tracks}-{config.preset}"
    path = config.out / name
    if config.resume:
        return path
    n = 1
    while path.exists():
        path, n = config.out / f"{name}-{n}", n + 1
    return path


def resolve_resume(config: TrainConfig, directory: Path) -> Path | None:
    """The checkpoint to resume from; 'last' is the newer of last.ckpt and an interrupted run's checkpoint."""
    if not config.resume:
        return None
    path = Path(config.resume)
    if config.resume == "last":
        found = [p for p in (directory / "checkpoints" / f"{n}.ckpt" for n in ("last", INTERRUPTED)) if p.is_file()]
        path = max(found, key=lambda p: p.stat().st_mtime) if found else directory / "checkpoints" / "last.ckpt"
    if not path.is_file():
        raise FileNotFoundError(f"--resume: checkpoint {path} not found")
    return path


def make_logger(config: TrainConfig, directory: Path) -> Any:
    from lightning.pytorch.loggers import CSVLogger, WandbLogger

    if config.logger == "csv":
        return CSVLogger(directory, name="logs", version="")
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ["WANDB_MODE"] = config.wandb_mode
    return WandbLogger(project=config.wandb_project, name=directory.name, save_dir=str(directory),
                       offline=config.wandb_mode != "online", mode=config.wandb_mode)


def make_callbacks(config: TrainConfig, optim: OptimConfig, directory: Path) -> list[Any]:
    from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint

    from schmubert.callbacks import FinalCheckpoint, LogLines, SamplePreview, WarmupEMA

    folder = directory / "checkpoints"
    callbacks = [
        ModelCheckpoint(dirpath=folder, filename="last", every_n_train_steps=config.val_every, save_top_k=1,
                        enable_version_counter=False),
        ModelCheckpoint(dirpath=folder, filename="best-step{step}-elbo{val/elbo:.4f}", monitor="val/elbo",
                        mode="min", save_top_k=1, auto_insert_metric_name=False),
        FinalCheckpoint(folder, interrupted=INTERRUPTED),  # before EMA: see its docstring
        LearningRateMonitor(logging_interval="step"),
    ]
    if optim.ema_decay > 0:
        callbacks.append(WarmupEMA(optim.ema_decay, optim.ema_every, warmup=optim.ema_warmup))
    if not use_progress_bar(config):
        callbacks.append(LogLines(config.log_every))
    if config.sample_every > 0:
        callbacks.append(SamplePreview(every=config.sample_every, count=config.sample_count,
                                       steps=config.sample_steps, directory=directory / "samples"))
    return callbacks


def use_progress_bar(config: TrainConfig) -> bool:
    """The live bar on a terminal; plain log lines when the output is redirected (no carriage-return floods)."""
    if config.progress == "auto":
        return sys.stdout.isatty() and sys.stderr.isatty()
    return config.progress == "bar"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m schmubert.train", description=__doc__.splitlines()[0],
                                     epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    for title, cls in (("run", TrainConfig), ("data", DataConfig), ("optimisation", OptimConfig),
                       ("diffusion", NoiseConfig), ("conditioning", CondConfig)):
        add_arguments(parser.add_argument_group(title), cls)
    return parser


def train(config: TrainConfig, data: DataConfig, optim: OptimConfig, noise: NoiseConfig,
          extra_callbacks: list[Any] | None = None, cond: CondConfig | None = None) -> Path:
    """Train; returns the run folder. ``extra_callbacks`` are added to the trainer's (e.g. a benchmark's timer);
    ``cond``: how a conditional model (``--set attributes=true``) is trained."""
    cond = cond or CondConfig()
    import lightning as L

    if config.arch not in architectures():
        raise ValueError(f"--arch {config.arch!r}: expected one of {architectures()}")
    directory = run_dir(config)
    resume = resolve_resume(config, directory)
    L.seed_everything(config.seed, workers=True, verbose=False)
    if resume is not None:  # the checkpoint defines the model; command-line model options are ignored
        model = ASD3PM.load_from_checkpoint(resume, map_location="cpu")
        datamodule = TokenDataModule(data, model.track_list, model.hparams.steps, seed=model.hparams.seed,
                                     start_step=model.optim.start_step)
    elif config.init:
        model, datamodule = fine_tune_model(config, data, optim, noise, cond)
    elif optim.start_step:
        raise ValueError("--start-step continues a run from its weights: give them with --init")
    else:
        datamodule = TokenDataModule(data, config.tracks, seed=config.seed)
        model = ASD3PM.create(config.arch, config.tracks, config.preset, noise, datamodule.steps, optim,
                              backbone_overrides=parse_overrides(config.set), max_transpose=data.max_transpose,
                              roll_bars=data.roll_bars,
                              seed=config.seed, data={"path": str(data.data), **summary(datamodule.meta)},
                              provenance={"recipe": config.recipe}, attributes=vars(cond))
    datamodule.velocity = model.denoiser.predicts_velocity  # a velocity model reads {split}_velocity.npy too
    optim = OptimConfig(**model.hparams.optim)  # a resumed run keeps its own optimisation settings
    stop = config.stop_step or config.max_steps
    if stop > config.max_steps:
        raise ValueError(f"--stop-step {stop} is past --max-steps {config.max_steps}, the schedule's end")
    if optim.start_step >= stop:
        raise ValueError(f"--start-step {optim.start_step} is not before the run's last step {stop}: nothing left "
                         "to train")
    model.schedule_steps = config.max_steps
    if config.compile:
        model.denoiser.compile()  # in place: parameter names and checkpoints stay those of the plain model
    trainer = L.Trainer(
        accelerator=config.accelerator, devices=_devices(config.devices), num_nodes=config.num_nodes,
        strategy=config.strategy, precision=training_precision(config.precision, config.accelerator),
        max_steps=stop - optim.start_step, max_time=config.max_time or None,
        val_check_interval=config.val_every, check_val_every_n_epoch=None,
        limit_val_batches=config.val_batches or 1.0,  # gradient clipping: ASD3PM.configure_gradient_clipping
        log_every_n_steps=config.log_every, logger=make_logger(config, directory),
        callbacks=make_callbacks(config, optim, directory) + list(extra_callbacks or []),
        enable_progress_bar=use_progress_bar(config),
        default_root_dir=directory, use_distributed_sampler=False, num_sanity_val_steps=0,
    )
    inherited = os.environ.get(RUN_DIR_ENV)
    os.environ[RUN_DIR_ENV] = str(directory)  # the DDP processes Lightning starts write to the same run
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=resume)
    finally:
        if inherited is None:
            os.environ.pop(RUN_DIR_ENV, None)
    return directory


def fine_tune_model(config: TrainConfig, data: DataConfig, optim: OptimConfig, noise: NoiseConfig,
                    cond: CondConfig | None = None) -> tuple[ASD3PM, TokenDataModule]:
    """A new run whose model is a copy of the ``--init`` weights (architecture and noise from them too; noise
    options given other than their defaults, e.g. ``--span-prob``, win, except T)."""
    from schmubert.checkpoints import checkpoint_hparams, load_model

    start = load_model(config.init, copy_prior=False)  # the network alone; its copy prior is inherited below
    hp = start.hparams
    added = parse_overrides(config.set)  # e.g. bar_depth=2: new modules on top of the loaded ones
    datamodule = TokenDataModule(data, hp["tracks"], start.steps, seed=config.seed, start_step=optim.start_step)
    model = ASD3PM(**checkpoint_hparams(
        hp["arch"], hp["tracks"], {**hp["backbone"], **added}, fine_tune_noise(hp["noise"], noise), start.steps,
        optim=vars(optim), max_transpose=data.max_transpose, roll_bars=data.roll_bars, seed=config.seed,
        data={"path": str(data.data), **summary(datamodule.meta)},
        provenance={"recipe": config.recipe, "init": str(config.init), "init_overrides": added},
        attributes=vars(cond or CondConfig()), **inherited_copy_prior(hp)))
    load_into(model.denoiser, start.denoiser.state_dict(), config.init, allow_new=bool(added))
    return model, datamodule


def inherited_copy_prior(hp: dict[str, Any]) -> dict[str, Any]:
    """The ``--init`` model's fitted copy prior, which the fine-tuned network samples with until its own is fitted
    (``python -m schmubert.pretrained export``): one fitted to its close relative."""
    return {HPARAM: hp[HPARAM]} if hp.get(HPARAM) else {}


def fine_tune_noise(loaded: dict[str, Any], given: NoiseConfig) -> NoiseConfig:
    """The loaded model's noise options, with those ``given`` other than their defaults; T stays the model's."""
    default = NoiseConfig()
    changed = {f.name: getattr(given, f.name) for f in dataclasses.fields(NoiseConfig)
               if getattr(given, f.name) != getattr(default, f.name) and f.name != "timesteps"}
    return NoiseConfig(**{**loaded, **changed})


def load_into(denoiser: torch.nn.Module, state: dict[str, torch.Tensor], source: str, allow_new: bool) -> None:
    """Copy ``state`` into ``denoiser``; parameters new to it (from ``--set``) keep their initialisation.

    Raises a ValueError naming ``source`` if a loaded tensor has no place in the new model or a different shape,
    or if parameters are missing although no ``--set`` added any.
    """
    own = denoiser.state_dict()
    misfit = sorted(k for k, v in state.items() if k not in own or own[k].shape != v.shape)
    missing = sorted(set(own) - set(state))
    problems = [f"unplaced or reshaped: {', '.join(misfit[:5])}"] if misfit else []
    if missing and not allow_new:
        problems.append(f"missing: {', '.join(missing[:5])}")
    if problems:
        raise ValueError(f"--init {source}: its weights do not fit the model (--set changed existing layers?): "
                         + "; ".join(problems))
    denoiser.load_state_dict(state, strict=False)
    if missing:
        print(f"--init {source}: {len(missing)} new tensors start from their initialisation "
              f"({', '.join(sorted({k.split('.')[0] for k in missing}))})", flush=True)


def summary(meta: dict[str, Any]) -> dict[str, Any]:
    """The dataset facts a checkpoint keeps (not the per-row sources)."""
    keys = ("tracks", "track_names", "num_classes", "mask_ids", "bars", "steps_per_bar", "steps", "version",
            "counts")
    return {k: meta[k] for k in keys if k in meta}


def _devices(value: str) -> Any:
    if value == "auto":
        return "auto"
    return [int(v) for v in value.split(",") if v] if "," in value else int(value)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the train CLI; ``--recipe NAME`` turns the recipe's options into defaults the command line overrides."""
    parser = build_parser()
    known, _ = parser.parse_known_args(argv)
    if known.recipe:
        try:
            options = get_recipe(known.recipe).options
        except ValueError as err:
            parser.error(str(err))
        parser.set_defaults(**{k: list(v) if isinstance(v, list) else v for k, v in options.items()})
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config, data = from_args(TrainConfig, args), from_args(DataConfig, args)
    optim, noise = from_args(OptimConfig, args), from_args(NoiseConfig, args)
    try:
        directory = train(config, data, optim, noise, cond=from_args(CondConfig, args))
    except (DatasetError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"run folder: {directory}")
    return 0


__all__ = ["TrainConfig", "build_parser", "main", "train", "to_dict"]

if __name__ == "__main__":
    sys.exit(main())
