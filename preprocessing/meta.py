"""Reading a preprocessed folder back: ``load_meta`` checks ``meta.json`` against the codec's vocabulary."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from schmubert.tokens import STEPS_PER_BAR, get_tracks

REQUIRED = ("tracks", "track_names", "num_classes", "mask_ids", "bars", "steps_per_bar", "steps", "options",
            "version", "sources", "counts")


def load_meta(folder: str | Path) -> dict:
    """``meta.json`` of a preprocessed folder, checked for completeness and consistency with the vocabulary.

    Raises ``ValueError`` naming the file and the reason (missing, incomplete, or not matching the codec).
    """
    path = Path(folder) / "meta.json"
    if not path.is_file():
        raise ValueError(f"{path}: missing; {folder} is not a finished preprocessing output")
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: unreadable ({err})") from err
    missing = [k for k in REQUIRED if k not in meta]
    if missing:
        raise ValueError(f"{path}: missing field(s) {missing}")
    tracks = get_tracks(meta["tracks"])
    expected = {"track_names": [t.name for t in tracks], "num_classes": [t.num_classes for t in tracks],
                "mask_ids": [t.mask_id for t in tracks], "steps_per_bar": STEPS_PER_BAR,
                "steps": meta["bars"] * STEPS_PER_BAR}
    wrong = {k: (meta[k], v) for k, v in expected.items() if meta[k] != v}
    if wrong:
        raise ValueError(f"{path}: does not match this version's vocabulary (found, expected): {wrong}")
    return meta


def load_split(folder: str | Path, split: str = "train") -> np.ndarray:
    """``(N, steps, K)`` uint16 windows of one split, memory-mapped, checked against ``meta.json``."""
    meta = load_meta(folder)
    path = Path(folder) / f"{split}.npy"
    array = np.load(path, mmap_mode="r")
    shape = (meta["counts"][split], meta["steps"], len(meta["track_names"]))
    if array.shape != shape:
        raise ValueError(f"{path}: shape {array.shape} does not match meta.json {shape}")
    return array
