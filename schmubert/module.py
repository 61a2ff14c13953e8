"""The ASD3PM LightningModule: a thin shell that masks a batch, calls the diffusion loss and logs.

The noise process lives in :mod:`schmubert.diffusion`, the networks in :mod:`schmubert.backbones`, the data in
:mod:`schmubert.data`; EMA (Lightning's ``EMAWeightAveraging``), checkpointing and sampling previews are callbacks
configured by :mod:`schmubert.train`.

Every training step reseeds the global RNG from ``(seed, schedule step, rank)``: the masks, times, augmentation
and dropout of step ``n`` are the same whether or not the run was interrupted before it. The schedule step is the
global step, plus ``--start-step`` in a run that continues another from its exported weights.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import lightning as L
import numpy as np
import torch

from schmubert import __version__
from schmubert.attributes import DATA_SUMMARIES, Attributes, data_summaries, drop
from schmubert.backbones import from_config, make_config
from schmubert.checkpoints import CHECKPOINT_KIND, checkpoint_hparams
from schmubert.config import arg
from schmubert.data import roll_bars, transpose
from schmubert.diffusion import AbsorbingDiffusion, LossOutput, NoiseConfig
from schmubert.meter import shorten_bars
from schmubert.tokens import VELOCITY_MASK, Track, get_tracks, instrument_index, is_onset, mask_ids


@dataclass
class OptimConfig:
    lr: float = arg(5e-4, "Adam learning rate after warm-up (thesis: 5e-4)")
    warmup_steps: int = arg(10_000, "linear learning-rate warm-up steps (thesis: 10k)")
    decay: Literal["constant", "cosine", "inverse_sqrt"] = arg(
        "constant", "learning rate after warm-up: 'constant' (thesis), 'cosine' to --min-lr-ratio at --max-steps, "
        "or 'inverse_sqrt' (lr * sqrt(warmup / step))")
    min_lr_ratio: float = arg(0.1, "with --decay cosine, the final learning rate as a fraction of --lr")
    weight_decay: float = arg(0.0, "AdamW weight decay (0 = plain Adam)")
    grad_clip: float = arg(1.0, "clip the gradient norm to this value (0 = off)")
    ema_decay: float = arg(0.995, "EMA decay of the weights used for validation, sampling and checkpoints")
    ema_every: int = arg(10, "update the EMA weights every this many steps (thesis: 10)")
    ema_warmup: bool = arg(True, "ramp the EMA decay up as min(decay, (1 + n) / (10 + n)) over its first n "
                           "updates, so the average of a short run is not its initial weights")
    start_step: int = arg(0, "continue a run from this step of its schedule, with --init from its weights (an "
                          "export records the step it reached): the learning-rate decay, the batches and the "
                          "per-step seeds pick up there, as that run's would have (give its --max-steps: the "
                          "schedule's length); the optimizer's moments start fresh, so the first --warmup-steps "
                          "ramp up again")


@dataclass
class CondConfig:
    """Training of a conditional model (backbone option ``attributes=true``, e.g. ``--set attributes=true``)."""

    cond_drop: float = arg(0.3, "probability that each attribute kind (key, onsets, register; dynamics for a "
                           "model with velocity) of a training piece is replaced by its null id, independently "
                           "per piece and kind: one model is then unconditional, partly and fully conditional "
                           "(classifier-free guidance)")


def step_seed(seed: int, step: int, rank: int) -> int:
    """A 63-bit seed that depends only on the run seed, the global step and the process rank."""
    return int(np.random.SeedSequence([seed, step + 2**31, rank]).generate_state(2, np.uint64)[0] >> 1)


def lr_factor(step: int, optim: OptimConfig, total_steps: int | None) -> float:
    """Learning rate at optimizer step ``step`` of this run as a fraction of ``optim.lr``: linear warm-up over the
    run's first ``warmup_steps``, times the decay read at ``optim.start_step + step`` of a schedule of
    ``total_steps``."""
    ramp = min(1.0, (step + 1) / max(1, optim.warmup_steps))
    return ramp * decay_factor(optim.start_step + step, optim, total_steps)


def decay_factor(step: int, optim: OptimConfig, total_steps: int | None) -> float:
    """The decay after the warm-up at schedule step ``step`` (1 during the warm-up and for 'constant')."""
    warmup = max(1, optim.warmup_steps)
    if step + 1 < warmup or optim.decay == "constant":
        return 1.0
    if optim.decay == "inverse_sqrt":
        return math.sqrt(warmup / (step + 1))
    if optim.decay == "cosine":
        if total_steps is None:
            raise ValueError("--decay cosine needs --max-steps")
        progress = min(1.0, (step + 1 - warmup) / max(1, total_steps - warmup))
        return optim.min_lr_ratio + (1 - optim.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    raise ValueError(f"unknown learning-rate decay {optim.decay!r}")


#: A training batch: tokens ``[B, L, K]``, or tokens and velocity bins ``[B, L, K]`` from a set with velocity.
Batch = torch.Tensor | tuple[torch.Tensor, torch.Tensor] | list[torch.Tensor]


def split_batch(batch: Batch) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(x0, v0)`` of a batch (``v0`` None without velocity data)."""
    return (batch, None) if isinstance(batch, torch.Tensor) else (batch[0], batch[1])


def onsets(x0: torch.Tensor, tracks: Sequence[Track]) -> torch.Tensor:
    """``BoolTensor[B, L, K]``: where each column of ``x0`` starts a note (``tokens.is_onset``)."""
    return torch.stack([is_onset(x0[..., k], t) for k, t in enumerate(tracks)], dim=-1)


class ASD3PM(L.LightningModule):
    """Absorbing-state discrete diffusion over ``(B, L, K)`` token grids with a registered backbone."""

    def __init__(self, arch: str, tracks: str, backbone: dict[str, Any], noise: dict[str, Any], steps: int,
                 optim: dict[str, Any] | None = None, max_transpose: int = 0, roll_bars: bool = False,
                 seed: int = 0,
                 data: dict[str, Any] | None = None, provenance: dict[str, Any] | None = None,
                 attributes: dict[str, Any] | None = None, copy_prior: dict[str, Any] | None = None):
        """``provenance``: where the run came from (``recipe``, ``init`` weights), kept for model cards.
        ``copy_prior``: the fitted copy prior sampling mixes in (:mod:`schmubert.copy_prior`; training never
        uses it): a fine-tuned model inherits that of its ``--init`` weights until export fits its own.
        ``attributes``: the :class:`CondConfig` fields and, once training started, what unconditional sampling
        draws from: ``key_prior`` (the training split's key distribution) and ``outlines`` (the attributes of up to
        ``MAX_OUTLINES`` training windows, :func:`schmubert.attributes.outline_bank`)."""
        super().__init__()
        self.save_hyperparameters()
        self.track_list = get_tracks(tracks)
        self.denoiser = from_config(arch, tracks, backbone)
        self.diffusion = AbsorbingDiffusion(mask_ids(tracks), NoiseConfig(**noise), instrument_index(tracks))
        self.optim = OptimConfig(**(optim or {}))
        #: the learning-rate schedule's length (``schmubert.train`` sets --max-steps; None: the trainer's max steps
        #: after ``optim.start_step``)
        self.schedule_steps: int | None = None
        self.cond = CondConfig(**{k: v for k, v in (attributes or {}).items() if k not in DATA_SUMMARIES})
        config = self.denoiser.config
        if getattr(config, "meter_augment", 0.0) > 0 and not getattr(config, "meter", False):
            raise ValueError("backbone option meter_augment needs meter=true (--set meter=true)")

    @classmethod
    def create(cls, arch: str, tracks: str, preset: str, noise: NoiseConfig, steps: int,
               optim: OptimConfig | None = None, backbone_overrides: dict[str, Any] | None = None,
               **kwargs: Any) -> ASD3PM:
        """A new model from a backbone preset; hyper-parameters in the checkpoint format."""
        backbone = make_config(arch, tracks, preset, **(backbone_overrides or {}))
        hp = checkpoint_hparams(arch, tracks, backbone, noise, steps, optim=vars(optim or OptimConfig()), **kwargs)
        return cls(**hp)

    def forward(self, x_t: torch.Tensor, attrs: Attributes | None = None) -> list[torch.Tensor]:
        return self.denoiser(x_t, attrs)

    @property
    def schedule_step(self) -> int:
        """The step of the run's schedule: ``optim.start_step`` (a run continued with ``--init``) + this run's."""
        return self.optim.start_step + self.global_step

    @property
    def conditional(self) -> bool:
        return self.denoiser.conditional

    def training_attributes(self, x0: torch.Tensor, v0: torch.Tensor | None = None) -> Attributes | None:
        """The attributes of the augmented batch (per instrument; the dynamics from its velocity bins ``v0`` for
        a model with velocity), each kind dropped to null at ``cond_drop`` (None: no model attributes)."""
        if not self.conditional:
            return None
        velocity = v0 if self.denoiser.predicts_velocity else None
        return drop(Attributes.compute(x0, self.track_list, velocity), self.cond.cond_drop)

    def on_fit_start(self) -> None:
        """A conditional model stores its training split's key distribution and outlines (with dynamics, from a
        velocity model's data) before its first checkpoint."""
        stored = self.hparams.get("attributes") or {}
        datamodule = getattr(self.trainer, "datamodule", None)
        if not self.conditional or all(stored.get(k) for k in DATA_SUMMARIES) or datamodule is None:
            return
        if not hasattr(datamodule, "train_set"):
            datamodule.setup("fit")
        velocity = datamodule.train_set.velocity if self.denoiser.predicts_velocity else None
        self.hparams["attributes"] = {**dataclasses.asdict(self.cond), **stored,
                                      **data_summaries(datamodule.train_set.array, self.track_list, velocity)}

    # --- steps -----------------------------------------------------------------------------------------------
    def on_train_batch_start(self, batch: Batch, batch_idx: int) -> None:
        torch.manual_seed(step_seed(self.hparams.seed, self.schedule_step, self.global_rank))

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        x0, v0 = self.augment(*split_batch(batch))
        t = self.diffusion.sample_t(x0.shape[0], x0.device)
        x_t, mask = self.diffusion.q_sample(x0, t)
        out = self.step_loss(x_t, mask, t, x0, v0, self.training_attributes(x0, v0))
        self.log("train/loss", out.loss, prog_bar=True)
        self.log("train/elbo", out.elbo)
        if out.velocity_elbo is not None:
            self.log("train/velocity_elbo", out.velocity_elbo)
        return out.loss

    def augment(self, x0: torch.Tensor, v0: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Bars rolled (velocity with its tokens), pitches transposed and, for a meter model with
        ``meter_augment``, 4/4 bars shortened to 3/4 or 2/4 (``schmubert.meter.shorten_bars``), as configured."""
        K = x0.shape[-1]
        both = roll_bars(x0 if v0 is None else torch.cat([x0, v0], dim=-1), self.hparams.roll_bars)
        x0 = transpose(both[..., :K], self.track_list, self.hparams.max_transpose)
        v0 = None if v0 is None else both[..., K:]
        return shorten_bars(x0, v0, self.track_list, getattr(self.denoiser.config, "meter_augment", 0.0))

    def step_loss(self, x_t: torch.Tensor, mask: torch.Tensor, t: torch.Tensor, x0: torch.Tensor,
                  v0: torch.Tensor | None, attrs: Attributes | None = None) -> LossOutput:
        """The loss of one masked batch; a velocity model is shown the velocities where the tokens are known and
        learns those of the masked onsets (masked together with their tokens)."""
        if not self.denoiser.predicts_velocity:
            logits = self.denoiser(x_t) if attrs is None else self.denoiser(x_t, attrs)
            return self.diffusion.loss(logits, x0, mask, t)
        if v0 is None:
            raise ValueError("a velocity model needs velocity data ({split}_velocity.npy beside the tokens)")
        v_t = torch.where(mask, VELOCITY_MASK, v0)
        logits = self.denoiser(x_t, attrs, v_t)
        return self.diffusion.loss(logits, x0, mask, t, v0, onsets(x0, self.track_list))

    def on_validation_batch_start(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        torch.manual_seed(step_seed(self.hparams.seed, -1 - batch_idx, self.global_rank))

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        """Validation measures the unconditional model: every track masked alike, stratified t, every attribute
        null (a piece's own attributes would tell its answer)."""
        x0, v0 = split_batch(batch)
        t = self.diffusion.sample_t(x0.shape[0], x0.device, stratified=True)
        x_t, mask = self.diffusion.q_sample(x0, t, schedule="all", span_prob=0.0)
        out = self.step_loss(x_t, mask, t, x0, v0)
        if out.velocity_elbo is not None:
            self.log("val/velocity_elbo", out.velocity_elbo, sync_dist=True, batch_size=x0.shape[0])
        self.log("val/loss", out.loss, prog_bar=True, sync_dist=True, batch_size=x0.shape[0])
        self.log("val/elbo", out.elbo, prog_bar=True, sync_dist=True, batch_size=x0.shape[0])

    # --- optimisation ----------------------------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, Any]:
        # fused: one kernel for all parameters, on CPU and GPU; not with fp16's loss scaler, which must unscale
        # the gradients before they are clipped (a fused optimizer unscales inside its step)
        fused = self._trainer is None or self._trainer.precision != "16-mixed"
        opt = torch.optim.AdamW(self.parameters(), lr=self.optim.lr, weight_decay=self.optim.weight_decay,
                                fused=fused, foreach=None if fused else True)
        run_steps = self._trainer.max_steps if self._trainer is not None else -1
        total = self.schedule_steps or (self.optim.start_step + run_steps if run_steps > 0 else None)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(step, self.optim, total))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def configure_gradient_clipping(self, optimizer: torch.optim.Optimizer, gradient_clip_val: Any = None,
                                    gradient_clip_algorithm: Any = None) -> None:
        """Clip the gradient norm to ``optim.grad_clip`` (0 = off).

        Done here rather than by the Trainer: Lightning's mixed-precision plugin refuses to clip for any fused
        optimizer, although bf16 has no loss scaler and its gradients are the true ones when this runs (under
        fp16 the plugin has unscaled them, the optimizer being unfused then, see ``configure_optimizers``).
        """
        if self.optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.parameters(), self.optim.grad_clip, foreach=True)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["schmubert"] = {"kind": CHECKPOINT_KIND, "version": __version__}
