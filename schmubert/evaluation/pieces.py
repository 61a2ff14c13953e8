"""Loading a set of pieces for evaluation: token arrays (``.npy``) or MIDI files, a file or a folder of them.

- ``.npy``: ``(N, steps, K)`` or ``(steps, K)`` integer grids, memory-mapped (a processed ``valid.npy``
  works as is).
- ``.mid``/``.midi``: read with :func:`schmubert.tokens.midi_to_tokens` (tracks by role), on worker processes,
  cut/padded to a given number of steps or at each file's own length in whole bars (never padded to 64 bars).

Bad files are skipped, counted and reported with their reason; a batch never dies on one file.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from schmubert.tokens import STEPS_PER_BAR, STEPS_PER_QUARTER, midi_to_tokens

MIDI_SUFFIXES = (".mid", ".midi")
ARRAY_SUFFIXES = (".npy",)


@dataclass
class PieceSet:
    """A sequence of grids ``(steps, K)``: memory-mapped arrays and/or grids read from MIDI."""

    arrays: list[np.ndarray] = field(default_factory=list)  # each (N_i, steps_i, K_i)
    grids: list[np.ndarray] = field(default_factory=list)  # single grids (steps, K) from MIDI files
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)

    def __len__(self) -> int:
        return sum(len(a) for a in self.arrays) + len(self.grids)

    def __iter__(self) -> Iterator[np.ndarray]:
        for a in self.arrays:
            for i in range(len(a)):
                yield np.asarray(a[i])
        yield from self.grids

    def __getitem__(self, index: int) -> np.ndarray:
        for a in self.arrays:
            if index < len(a):
                return np.asarray(a[index])
            index -= len(a)
        return self.grids[index]

    def subset(self, indices: Sequence[int]) -> list[np.ndarray]:
        return [self[int(i)] for i in indices]


def load_array(path: Path) -> np.ndarray:
    """A ``.npy`` of grids as ``(N, steps, K)``, memory-mapped; ``ValueError`` naming the file otherwise."""
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as err:  # numpy raises several types for broken files
        raise ValueError(f"{path}: unreadable token array ({type(err).__name__}: {err})") from err
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{path}: expected integer grids (N, steps, K) or (steps, K), got {arr.dtype} "
                         f"{arr.shape}")
    return arr


def own_steps(path: str | Path) -> int:
    """A MIDI file's length in 16th steps, rounded up to whole bars (the end of its last event), at least one
    bar (a file without notes is a silent piece, which self-similarity scores as such); ``ValueError`` naming
    the file if it cannot be read.

    :func:`schmubert.tokens.midi_to_tokens` pads a shorter file to 64 bars by default (a model's length); an
    evaluation "at each file's own length" must not, or a 40-bar file is scored over 64 bars.
    """
    import symusic

    try:
        score = symusic.Score(str(path))
    except Exception as err:
        raise ValueError(f"{path}: unreadable MIDI ({type(err).__name__}: {err})") from err
    length = int(np.ceil(score.end() * STEPS_PER_QUARTER / score.ticks_per_quarter - 1e-6))
    return max(1, -(-length // STEPS_PER_BAR)) * STEPS_PER_BAR


def _read_midi(args: tuple[Path, str, int | None]) -> tuple[np.ndarray | None, str]:
    path, tracks, steps = args
    try:
        grid = midi_to_tokens(path, tracks, own_steps(path) if steps is None else steps)
    except Exception as err:  # a bad file is reported, never fatal
        return None, str(err) if str(path) in str(err) else f"{path}: {type(err).__name__}: {err}"
    return grid, ""


def list_files(path: Path) -> list[Path]:
    """The piece files at ``path`` (a file, or a folder searched recursively), sorted."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such file or folder")
    return sorted(p for p in path.rglob("*") if p.suffix.lower() in MIDI_SUFFIXES + ARRAY_SUFFIXES)


def load_pieces(path: str | Path, tracks: str = "trio", steps: int | None = None, workers: int = 1,
                progress: bool = False) -> PieceSet:
    """All pieces under ``path``. MIDI files are read as ``tracks`` (``"trio"``/``"melody"``) with ``steps``
    steps (``None``: each file's own length in whole bars, :func:`own_steps`), on ``workers`` processes."""
    path = Path(path)
    out = PieceSet()
    files = list_files(path)
    midi = [f for f in files if f.suffix.lower() in MIDI_SUFFIXES]
    for f in files:
        if f.suffix.lower() in ARRAY_SUFFIXES:
            try:
                out.arrays.append(load_array(f))
            except ValueError as err:
                out.skipped.append((str(f), str(err)))
    jobs = [(f, tracks, steps) for f in midi]
    bar = tqdm(total=len(jobs), desc=f"reading {path.name}", disable=not progress or not jobs, leave=False)
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(workers) as pool:
            results = list(pool.map(_read_midi, jobs, chunksize=16))
        bar.update(len(jobs))
    else:
        results = []
        for job in jobs:
            results.append(_read_midi(job))
            bar.update()
    bar.close()
    for f, (grid, reason) in zip(midi, results, strict=True):
        if grid is None:
            out.skipped.append((str(f), reason))
        else:
            out.grids.append(grid)
    if len(out) == 0:
        raise ValueError(f"{path}: no readable pieces (.mid/.midi/.npy)"
                         + (f"; {len(out.skipped)} skipped" if out.skipped else ""))
    return out
