"""Training callbacks beside the LightningModule: sampling previews logged as piano rolls and MIDI."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging, WeightAveraging
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only


class FinalCheckpoint(L.Callback):
    """Write ``last.ckpt`` when training ends (max steps or max time), so ``last`` is never behind the model,
    and ``interrupted.ckpt`` when it is interrupted (Ctrl-C, an error); ``--resume last`` takes the newer one.

    Placed before ``EMAWeightAveraging`` in the callback list, it saves while the averaged and the raw weights
    are still apart, so the checkpoint resumes exactly.
    """

    def __init__(self, folder: str | Path, last: str = "last", interrupted: str = "interrupted"):
        self.last = Path(folder) / f"{last}.ckpt"
        self.interrupted = Path(folder) / f"{interrupted}.ckpt"

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trainer.save_checkpoint(self.last)
        if trainer.is_global_zero:
            self.interrupted.unlink(missing_ok=True)  # stale once a later run completed

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        trainer.save_checkpoint(self.interrupted)


def sampling_module(trainer: L.Trainer, pl_module: L.LightningModule) -> L.LightningModule:
    """The module whose weights are sampled from: the averaged copy that Lightning's weight averaging
    (``EMAWeightAveraging``) keeps during training, if the trainer has one, else ``pl_module`` (raw weights).

    Lightning offers no public accessor for the copy; ``WeightAveraging._average_model`` is an ``AveragedModel``
    whose ``module`` is a full copy of the LightningModule with the averaged weights, on the module's device.
    """
    for callback in trainer.callbacks:
        average = getattr(callback, "_average_model", None) if isinstance(callback, WeightAveraging) else None
        if average is not None:
            return average.module
    return pl_module


class SamplePreview(L.Callback):
    """Every ``every`` steps, sample ``count`` unconditional pieces and write/log them (PNG + MIDI).

    Sampling uses the EMA weights when training averages them (:func:`sampling_module`; place this callback
    after ``EMAWeightAveraging`` so the average includes the current step). Files go to ``directory/step-N/``;
    with a wandb logger the piano rolls are logged as images too.
    """

    def __init__(self, every: int, count: int = 2, steps: int = 64, directory: str | Path = "samples",
                 seed: int = 0):
        self.every, self.count, self.steps = every, count, steps
        self.directory, self.seed = Path(directory), seed

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = trainer.global_step
        if step > 0 and step % self.every == 0:
            self.preview(trainer, pl_module, step)

    @rank_zero_only
    def preview(self, trainer: L.Trainer, pl_module: L.LightningModule, step: int) -> None:
        from schmubert.render import save_pianoroll
        from schmubert.sampling import sample
        from schmubert.tokens import tokens_to_midi

        model = sampling_module(trainer, pl_module)
        steps, K = pl_module.hparams.steps, len(pl_module.track_list)
        device = next(model.parameters()).device
        x = torch.zeros(self.count, steps, K, dtype=torch.long, device=device)
        known = torch.zeros_like(x, dtype=torch.bool)
        generator = torch.Generator(device).manual_seed(self.seed)
        was_training = model.training
        model.eval()
        try:
            pieces = sample(model.denoiser, model.diffusion, x, known, min(self.steps, steps), generator)
        finally:
            model.train(was_training)
        folder = self.directory / f"step-{step}"
        folder.mkdir(parents=True, exist_ok=True)
        images, midis = [], []
        for i, piece in enumerate(pieces.cpu().numpy()):
            midis.append(folder / f"sample-{i}.mid")
            tokens_to_midi(piece, pl_module.track_list).write(str(midis[-1]))
            images.append(str(save_pianoroll(piece, pl_module.track_list, folder / f"sample-{i}.png")))
        if isinstance(trainer.logger, WandbLogger):  # images on the dashboard, MIDI among the run's files
            trainer.logger.log_image(key="samples", images=images, step=step)
            for path in midis:
                trainer.logger.experiment.save(str(path), base_path=str(self.directory.parent), policy="now")


class LogLines(L.Callback):
    """Plain progress lines every ``every`` steps, for logs that are not a terminal (the live bar is off there).

    ``step 1200/5000  loss 0.3412  val/elbo 1.402  lr 8.1e-04  3.2 steps/s  12.5 min``
    """

    def __init__(self, every: int, stream: Any = None):
        self.every = max(1, every)
        self.stream = stream
        self._start = 0.0
        self._last: tuple[float, int] = (0.0, 0)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.monotonic()
        self._last = (self._start, trainer.global_step)

    @rank_zero_only
    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = trainer.global_step
        if step % self.every and step != trainer.max_steps:
            return
        now = time.monotonic()
        rate = (step - self._last[1]) / max(now - self._last[0], 1e-9)
        self._last = (now, step)
        metrics = trainer.callback_metrics
        offset = getattr(pl_module, "schedule_step", step) - step  # a run that continues another's schedule
        parts = [f"step {offset + step}/{offset + trainer.max_steps}"]
        for key in ("train/loss", "val/elbo"):
            if key in metrics:
                parts.append(f"{key.removeprefix('train/')} {float(metrics[key]):.4f}")
        if trainer.optimizers:
            parts.append(f"lr {trainer.optimizers[0].param_groups[0]['lr']:.1e}")
        parts += [f"{rate:.2f} steps/s", f"{(now - self._start) / 60:.1f} min"]
        print("  ".join(parts), file=self.stream or sys.stdout, flush=True)


def warmup_ema_avg_fn(decay: float, warmup: bool = True) -> Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor]:
    """EMA update ``d * ema + (1 - d) * current`` with ``d = min(decay, (1 + n) / (10 + n))`` after ``n`` updates.

    The ramp keeps the average close to recent weights early on: without it a 0.999 average of a 500-step run is
    still 60% its random initial weights.
    """

    @torch.no_grad()
    def update(ema: torch.Tensor, current: torch.Tensor, num_averaged: Any) -> torch.Tensor:
        n = float(num_averaged)
        d = min(decay, (1 + n) / (10 + n)) if warmup else decay
        return d * ema + (1 - d) * current

    return update


class WarmupEMA(EMAWeightAveraging):
    """Lightning's ``EMAWeightAveraging``, the decay ramped up over the first updates (:func:`warmup_ema_avg_fn`)."""

    def __init__(self, decay: float, update_every_n_steps: int = 1, warmup: bool = True, **kwargs: Any):
        super().__init__(decay=decay, update_every_n_steps=update_every_n_steps, **kwargs)
        self._kwargs["avg_fn"] = warmup_ema_avg_fn(decay, warmup)
