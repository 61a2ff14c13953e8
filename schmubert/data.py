"""Reading preprocessed token arrays for training: datasets, the resumable sampler, augmentation, meta checks.

A processed dataset directory holds ``train.npy`` and ``valid.npy`` (uint16 ``(N, steps, K)``) and ``meta.json``
written by ``python -m preprocessing``. Training only reads these arrays (memory-mapped) and checks the metadata
against the model; it never touches MIDI.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, Subset

from schmubert.config import arg
from schmubert.tokens import MAX_PITCH, MIN_PITCH, NO_EVENT, NOTE_OFF, PITCH_OFFSET, STEPS_PER_BAR, Track, get_tracks

SPLITS = ("train", "valid")


class DatasetError(ValueError):
    """A processed dataset is missing or does not fit the model."""


def load_meta(data_dir: str | Path) -> dict[str, Any]:
    """``meta.json`` of a processed dataset, validated by the preprocessor that wrote it.

    Raises :class:`DatasetError` naming the folder and the fix when it is not a finished dataset.
    """
    from preprocessing.meta import load_meta as read_meta  # the format's owner

    data_dir = Path(data_dir)
    missing = [n for n in ("meta.json", *(f"{s}.npy" for s in SPLITS)) if not (data_dir / n).is_file()]
    if missing:
        raise DatasetError(f"{data_dir}: not a processed dataset (missing {', '.join(missing)}); "
                           "run `make preprocess` or `python -m preprocessing --input ... --output "
                           f"{data_dir}`")
    try:
        return read_meta(data_dir)
    except ValueError as err:
        raise DatasetError(str(err)) from err


def check_meta(meta: dict[str, Any], tracks: Sequence[Track], steps: int | None = None,
               where: str = "dataset") -> None:
    """Raise :class:`DatasetError` if a dataset's vocabulary or window length does not fit the model."""
    expected = {
        "track_names": [t.name for t in tracks],
        "num_classes": [t.num_classes for t in tracks],
        "mask_ids": [t.mask_id for t in tracks],
    }
    if steps is not None:
        expected["steps"] = steps
    problems = [f"{key} is {meta.get(key)!r}, the model needs {value!r}"
                for key, value in expected.items() if meta.get(key) != value]
    if problems:
        raise DatasetError(f"{where} does not match the model: " + "; ".join(problems))


class TokenArray(Dataset):
    """One split of a processed dataset, memory-mapped: item ``i`` is ``LongTensor[steps, K]``, or with
    ``velocity`` the pair (tokens, velocity bins) from ``{split}_velocity.npy`` beside ``{split}.npy``."""

    def __init__(self, path: str | Path, velocity: bool = False):
        self.path = Path(path)
        self.array = np.load(self.path, mmap_mode="r")  # (N, steps, K) uint16
        if self.array.ndim != 3:
            raise DatasetError(f"{self.path}: expected an (N, steps, K) array, got shape {self.array.shape}")
        self.velocity = None
        if velocity:
            vpath = self.path.with_name(f"{self.path.stem}_velocity.npy")
            if not vpath.is_file():
                raise DatasetError(f"{vpath}: missing; a velocity model needs the velocity bins of its data "
                                   "(preprocess a voice set such as --tracks pop909)")
            self.velocity = np.load(vpath, mmap_mode="r")
            if self.velocity.shape != self.array.shape:
                raise DatasetError(f"{vpath}: shape {self.velocity.shape} differs from {self.array.shape}")

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, index: int) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        tokens = torch.from_numpy(self.array[index].astype(np.int64))
        if self.velocity is None:
            return tokens
        return tokens, torch.from_numpy(self.velocity[index].astype(np.int64))


class ResumableSampler(Sampler[int]):
    """An endless stream of indices: a fresh permutation per pass, a function of ``(seed, pass)`` only.

    Global batch ``b`` of rank ``r`` holds stream items ``[(b * world + r) * batch, ... + batch)``, so the
    stream can start at any global batch (``start_batch``): a resumed run sees exactly the batches an
    uninterrupted run would have, also under DDP.
    """

    def __init__(self, num_items: int, batch_size: int, seed: int = 0, start_batch: int = 0, rank: int = 0,
                 world_size: int = 1):
        if num_items < 1:
            raise DatasetError("the training split is empty")
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.start_batch, self.rank, self.world_size = start_batch, rank, world_size

    def permutation(self, epoch: int) -> np.ndarray:
        """The order of pass ``epoch`` over the split."""
        return np.random.default_rng([self.seed, epoch]).permutation(self.num_items)

    def __iter__(self) -> Iterator[int]:
        batch, cached_epoch, perm = self.start_batch, -1, None
        while True:
            first = (batch * self.world_size + self.rank) * self.batch_size
            for pos in range(first, first + self.batch_size):
                epoch, offset = divmod(pos, self.num_items)
                if epoch != cached_epoch:
                    cached_epoch, perm = epoch, self.permutation(epoch)
                yield int(perm[offset])
            batch += 1


def transpose(x0: torch.Tensor, tracks: Sequence[Track], max_shift: int,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """Shift melody and bass of each piece by one random number of semitones, drums untouched.

    The shift is drawn uniformly from the shifts in ``[-max_shift, max_shift]`` that keep every note-on of the
    piece inside ``MIN_PITCH..MAX_PITCH``. ``x0``: ``LongTensor[B, L, K]`` -> same shape.
    """
    melodic = [k for k, t in enumerate(tracks) if not t.is_drum]
    if max_shift <= 0 or not melodic:
        return x0
    notes = x0[..., melodic]  # [B, L, M]
    is_on = (notes > NOTE_OFF) & (notes < tracks[melodic[0]].num_classes)
    has_notes = is_on.flatten(1).any(dim=1)  # [B]; a piece without notes is not shifted
    lowest = torch.where(is_on, notes, MAX_PITCH).flatten(1).amin(dim=1)  # [B] classes
    highest = torch.where(is_on, notes, 0).flatten(1).amax(dim=1)
    lo = torch.clamp(MIN_PITCH - PITCH_OFFSET - lowest, min=-max_shift, max=0) * has_notes
    hi = torch.clamp(MAX_PITCH - PITCH_OFFSET - highest, min=0, max=max_shift) * has_notes
    u = torch.rand(x0.shape[0], generator=generator, device=x0.device)
    shift = lo + (u * (hi - lo + 1)).long().clamp(max=hi - lo)  # uniform integer in [lo, hi]
    out = x0.clone()
    out[..., melodic] = torch.where(is_on, notes + shift.view(-1, 1, 1), notes)
    return out


def roll_bars(x0: torch.Tensor, enabled: bool, generator: torch.Generator | None = None) -> torch.Tensor:
    """Rotate each piece by its own random whole number of bars, its end wrapping round to its start.

    An augmentation for a small corpus: every bar keeps its neighbours, its repeats and its place in the bar grid,
    and each window is seen from as many starts as it has bars (one seam per window where its end meets its
    start). ``x0``: ``LongTensor[B, L, K]`` with L a multiple of 16 -> same shape; unchanged when not ``enabled``.
    """
    if not enabled:
        return x0
    B, L, K = x0.shape
    bars = L // STEPS_PER_BAR
    shift = torch.randint(0, bars, (B, 1), generator=generator, device=x0.device) * STEPS_PER_BAR
    index = (torch.arange(L, device=x0.device) + shift) % L  # [B, L]
    return x0.gather(1, index.unsqueeze(-1).expand(B, L, K))


def is_silent(x0: torch.Tensor) -> torch.Tensor:
    """True per piece when nothing sounds: ``[B, L, K] -> [B]``."""
    return (x0 == NO_EVENT).flatten(1).all(dim=1)


@dataclass
class DataConfig:
    data: Path = arg(Path("data/processed/demo-trio"),
                     "processed dataset directory (train.npy, valid.npy, meta.json) from `make preprocess`")
    batch_size: int = arg(64, "pieces per batch and device (the thesis used 50-64)")
    num_workers: int = arg(2, "data-loading worker processes per device")
    max_transpose: int = arg(6, "augmentation: largest transposition of melody and bass in semitones (0 = off)")
    roll_bars: bool = arg(False, "augmentation: rotate each window by a random whole number of bars (its end "
                                 "wraps to its start)")
    val_masks: int = arg(4, "validation: noise draws per held-out window (each its own t and mask); one draw "
                            "per window is too noisy to choose a checkpoint by")


class TokenDataModule(L.LightningDataModule):
    """Training and validation loaders over a processed dataset; checks its metadata against the model."""

    def __init__(self, config: DataConfig, tracks: str | Sequence[Track], steps: int | None = None,
                 seed: int = 0, start_step: int = 0, velocity: bool = False):
        """``start_step``: the batch stream starts there (plus the trainer's global step), for a run that continues
        another's schedule from its weights (``--start-step``). ``velocity``: batches are (tokens, velocity)."""
        super().__init__()
        self.config, self.tracks, self.seed, self.start_step = config, get_tracks(tracks), seed, start_step
        self.velocity = velocity
        self.meta = load_meta(config.data)
        check_meta(self.meta, self.tracks, steps, where=str(config.data))
        self.steps = int(self.meta["steps"])

    def setup(self, stage: str | None = None) -> None:
        self.train_set = TokenArray(Path(self.config.data) / "train.npy", self.velocity)
        self.valid_set = TokenArray(Path(self.config.data) / "valid.npy", self.velocity)

    def _loader(self, dataset: Dataset, **kwargs: Any) -> DataLoader:
        workers = self.config.num_workers
        return DataLoader(dataset, batch_size=self.config.batch_size, num_workers=workers,
                          persistent_workers=workers > 0, pin_memory=torch.cuda.is_available(), **kwargs)

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        sampler = ResumableSampler(
            len(self.train_set), self.config.batch_size, self.seed,
            start_batch=self.start_step + (trainer.global_step if trainer else 0),
            rank=trainer.global_rank if trainer else 0, world_size=trainer.world_size if trainer else 1)
        return self._loader(self.train_set, sampler=sampler)

    def val_dataloader(self) -> DataLoader:
        if len(self.valid_set) == 0:
            return []
        # every window val_masks times; ASD3PM seeds each validation batch by its index, so each pass over the
        # windows draws other times and masks, the same ones at every validation
        windows = Subset(self.valid_set, np.tile(np.arange(len(self.valid_set)), max(self.config.val_masks, 1)))
        trainer = self.trainer
        if trainer is not None and trainer.world_size > 1:  # we own the samplers (use_distributed_sampler=False)
            sampler = DistributedSampler(windows, trainer.world_size, trainer.global_rank, shuffle=False)
            return self._loader(windows, sampler=sampler)
        return self._loader(windows, shuffle=False)
