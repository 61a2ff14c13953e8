"""Shared test fixtures: the corpus beside the checkout (../shared/corpus) and small processed datasets."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from schmubert.tokens import STEPS_PER_BAR, get_tracks, midi_to_tokens

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "corpus"


@pytest.fixture(scope="session")
def corpus() -> Path:
    assert CORPUS.is_dir(), f"the test corpus is expected at {CORPUS} (../shared/corpus beside the checkout)"
    return CORPUS


def write_dataset(directory: Path, tracks: str, train: np.ndarray, valid: np.ndarray) -> Path:
    """A processed dataset directory in the preprocessor's format (arrays + the meta keys training checks)."""
    directory.mkdir(parents=True, exist_ok=True)
    np.save(directory / "train.npy", train.astype(np.uint16))
    np.save(directory / "valid.npy", valid.astype(np.uint16))
    track_list = get_tracks(tracks)
    steps = train.shape[1]
    meta = {"tracks": tracks, "track_names": [t.name for t in track_list],
            "num_classes": [t.num_classes for t in track_list], "mask_ids": [t.mask_id for t in track_list],
            "bars": steps // STEPS_PER_BAR, "steps_per_bar": STEPS_PER_BAR, "steps": steps,
            "counts": {"train": len(train), "valid": len(valid)}, "options": {}, "version": "test",
            "sources": {"train": [], "valid": []}}
    (directory / "meta.json").write_text(json.dumps(meta))
    return directory


def corpus_tokens(corpus: Path, tracks: str, n: int) -> np.ndarray:
    folder = corpus / ("lakh-trio-64bar" if tracks == "trio" else "lakh-melody-64bar")
    files = sorted(folder.glob("*.mid"))[:n]
    return np.stack([midi_to_tokens(f, tracks, steps=1024) for f in files])


@pytest.fixture(scope="session")
def trio_dataset(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 training and 8 validation 64-bar trios from the Lakh corpus."""
    x = corpus_tokens(corpus, "trio", 24)
    return write_dataset(tmp_path_factory.mktemp("trio-data"), "trio", x[:16], x[16:])


@pytest.fixture(scope="session")
def melody_dataset(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    x = corpus_tokens(corpus, "melody", 24)
    return write_dataset(tmp_path_factory.mktemp("melody-data"), "melody", x[:16], x[16:])


@pytest.fixture(scope="session")
def corpus_pieces(corpus: Path):
    """``corpus_pieces(tracks, n)``: the first n 64-bar pieces of the Lakh corpus as ``(n, 1024, K)``."""
    return lambda tracks, n: corpus_tokens(corpus, tracks, n)


@pytest.fixture(scope="session")
def experiment():
    """``experiment("bench_control")``: a script of ``experiments/`` loaded as a module (its folder on the path, as
    when it runs, so scripts can import each other)."""
    folder = REPO / "experiments"

    def load(name: str):
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
        spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
        return module

    return load

