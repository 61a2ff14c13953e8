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
def dataset_writer():
    """``dataset_writer(directory, tracks, train, valid)``: :func:`write_dataset` for tests in any folder (a plain
    ``from conftest import`` finds whichever conftest pytest imported last)."""
    return write_dataset


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



def write_crowded_song(path: Path, bars: int = 24) -> Path:
    """The situation of a 17-instrument pop song in small (120 bpm, 4/4): before each real part, an instrument of
    the same General MIDI range that plays only at the start, so the first of each range is silent from bar 8
    on: #0 a synth bass (GM 38) of 25 notes, #1 a drum track of 2 hits, #2 an electric piano (GM 4) playing
    chords; then the real parts, #3 a finger bass (GM 33) in eighths, #4 a kit, #5 a monophonic lead (GM 81),
    and #6 a string pad (GM 48) holding a chord per bar."""
    import pretty_midi

    sec = 0.125  # a 16th at 120 bpm
    pm = pretty_midi.PrettyMIDI(initial_tempo=120.0, resolution=480)
    pm.time_signature_changes.append(pretty_midi.TimeSignature(4, 4, 0.0))

    def part(name: str, program: int, notes, is_drum: bool = False) -> None:
        inst = pretty_midi.Instrument(program, is_drum=is_drum, name=name)
        inst.notes = [pretty_midi.Note(90, p, s * sec, e * sec) for s, e, p in notes]
        pm.instruments.append(inst)

    part("Synth Bass", 38, [(4 * q, 4 * q + 3, 36 + q % 5) for q in range(25)])
    part("Drums 2", 0, [(0, 1, 49), (8, 9, 49)], is_drum=True)
    part("E.Piano", 4, [(8 * h, 8 * h + 7, p + 2 * (h % 2)) for h in range(8) for p in (60, 64, 67)])
    part("Bass", 33, [(2 * e, 2 * e + 2, (40, 40, 47, 45)[e // 8 % 4]) for e in range(8 * bars)])
    part("Kit", 0, [(s, s + 1, 36 if s % 16 in (0, 8) else 38 if s % 16 in (4, 12) else 42)
                    for s in range(0, 16 * bars, 2)], is_drum=True)
    melody = (67, 69, 71, 72, 74, 72, 71, 69, 67, 64, 65, 67)
    part("Lead", 81, [(4 * q, 4 * q + 3, melody[q % len(melody)]) for q in range(4 * bars) if q % 8 != 7])
    part("Strings", 48, [(16 * b, 16 * b + 16, p) for b in range(bars) for p in (55, 60, 64)])
    pm.write(str(path))
    return path


@pytest.fixture(scope="session")
def crowded_song(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """:func:`write_crowded_song`: the first instrument of each GM range is silent in bars 8-24."""
    return write_crowded_song(tmp_path_factory.mktemp("crowded") / "crowded.mid")
