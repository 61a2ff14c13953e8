"""Does a polyphonic model learn what we want? A synthetic task trained through the CLI, in each backbone.

Pieces in a voice track set (default ``pop909``: melody, bridge of 4 voices, piano of 6): the piano plays one
random 3- or 4-note chord per bar, held for the bar, and every odd bar repeats the bar before it; the melody
and the bridge are random. The task: infill the piano (all its voices) in the odd bars and give back the
chord of the bar before. A model that reads the voices of an instrument as one chord gets the pitch set
right; chance is below 1%.

    python experiments/synthetic_poly.py --archs conv,transformer,hierarchical,utransformer

Writes the data to ``--out`` (``train.npy``, ``valid.npy``, ``meta.json`` as preprocessing does), trains each
backbone with ``python -m schmubert.train`` (preset ``tiny``), infills the held-out pieces with the sampler and
prints, per backbone, the share of odd bars whose piano chord (pitch set and onset at the bar start) equals
the bar before.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from schmubert import __version__
from schmubert.checkpoints import find_latest_checkpoint, load_model
from schmubert.polyphony import encode_instrument
from schmubert.sampling import sample
from schmubert.tokens import STEPS_PER_BAR, get_tracks, instruments, tokens_to_notes, track_set_name

CHORD_ROOTS = np.arange(48, 72)  # C3..B4
SHAPES = ((0, 4, 7), (0, 3, 7), (0, 4, 7, 11), (0, 3, 7, 10), (0, 5, 7), (0, 4, 7, 10))


def synthetic_piece(rng: np.random.Generator, tracks: str, bars: int) -> np.ndarray:
    """One piece ``(bars * 16, K)``: chords repeated in bar pairs on the piano, random other instruments."""
    track_list = get_tracks(tracks)
    steps = bars * STEPS_PER_BAR
    grid = np.zeros((steps, len(track_list)), dtype=np.int64)
    for name, ks in instruments(track_list):
        notes = []
        for bar in range(bars):
            start = bar * STEPS_PER_BAR
            if name == "piano":
                if bar % 2 == 0:
                    chord = rng.integers(len(CHORD_ROOTS)), rng.integers(len(SHAPES))
                pitches = CHORD_ROOTS[chord[0]] + np.array(SHAPES[chord[1]])
                notes += [(start, start + STEPS_PER_BAR, p, 80) for p in pitches]
            else:  # one note per quarter (the melody) or a dyad per half bar (a group)
                every = 4 if len(ks) == 1 else 8
                for s in range(start, start + STEPS_PER_BAR, every):
                    for p in rng.choice(np.arange(60, 84), size=1 if len(ks) == 1 else 2, replace=False):
                        notes.append((s, s + every, int(p), 80))
        rows, _, _ = encode_instrument(np.array(notes).reshape(-1, 4), [track_list[k] for k in ks], steps)
        grid[:, ks] = rows
    return grid


def write_data(out: Path, tracks: str, bars: int, train: int, valid: int, seed: int) -> None:
    """The synthetic set as a preprocessing output folder."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    track_list = get_tracks(tracks)
    for split, n in (("train", train), ("valid", valid)):
        pieces = np.stack([synthetic_piece(rng, tracks, bars) for _ in range(n)])
        np.save(out / f"{split}.npy", pieces.astype(np.uint16))
    meta = {"tracks": tracks, "track_names": [t.name for t in track_list],
            "num_classes": [t.num_classes for t in track_list], "mask_ids": [t.mask_id for t in track_list],
            "bars": bars, "steps_per_bar": STEPS_PER_BAR, "steps": bars * STEPS_PER_BAR, "dtype": "uint16",
            "options": {"synthetic": "experiments/synthetic_poly.py", "seed": seed}, "version": __version__,
            "sources": {}, "counts": {"train": train, "valid": valid}}
    (out / "meta.json").write_text(json.dumps(meta, indent=1))


def chord_at(grid: np.ndarray, tracks: str, bar: int) -> frozenset[int]:
    """The pitches the piano starts at the first step of ``bar``."""
    track_list = get_tracks(tracks)
    ks = dict(instruments(track_list))["piano"]
    notes = tokens_to_notes(grid, track_list)
    return frozenset(int(p) for k in ks for s, _, p in notes[k] if s == bar * STEPS_PER_BAR)


def evaluate(run: Path, data: Path, tracks: str, steps: int, seed: int) -> float:
    """Share of odd bars whose infilled piano chord equals the bar before (the task)."""
    model = load_model(find_latest_checkpoint(run), copy_prior=False)
    x0 = torch.from_numpy(np.load(data / "valid.npy").astype(np.int64))
    ks = dict(instruments(model.tracks))["piano"]
    odd = (torch.arange(x0.shape[1]) // STEPS_PER_BAR) % 2 == 1
    known = torch.ones_like(x0, dtype=torch.bool)
    known[:, odd, ks[0]:ks[-1] + 1] = False
    with torch.no_grad():
        out = sample(model.denoiser, model.diffusion, x0, known, steps, torch.Generator().manual_seed(seed))
    bars = x0.shape[1] // STEPS_PER_BAR
    hits = [chord_at(out[i].numpy(), tracks, b) == chord_at(x0[i].numpy(), tracks, b - 1)
            for i in range(len(x0)) for b in range(1, bars, 2)]
    return float(np.mean(hits))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--archs", default="conv", help="comma-separated backbones (default: conv)")
    p.add_argument("--tracks", default="pop909", help="a voice track set with a piano (default: pop909)")
    p.add_argument("--bars", type=int, default=8, help="bars per piece (default: 8)")
    p.add_argument("--train", type=int, default=512, help="training pieces (default: 512)")
    p.add_argument("--valid", type=int, default=32, help="held-out pieces (default: 32)")
    p.add_argument("--max-steps", type=int, default=1500, help="training steps per backbone (default: 1500)")
    p.add_argument("--set", nargs="*", default=["emb_dim=64"], help="backbone overrides for every backbone "
                   "(default: emb_dim=64; the tiny preset's 16 is too narrow for an instrument's pooled voices)")
    p.add_argument("--arch-set", nargs="*", default=["conv:bar_depth=2"], help="further overrides for one "
                   "backbone, ARCH:FIELD=VALUE (default: conv:bar_depth=2, bar attention as the shipped models)")
    p.add_argument("--span-prob", type=float, default=0.5, help="training samples masked in a span of bars, as "
                   "infilling is (default: 0.5, as the shipped recipes)")
    p.add_argument("--sample-steps", type=int, default=32, help="reverse steps of the infill (default: 32)")
    p.add_argument("--out", type=Path, default=Path("runs/synthetic-poly"), help="data and runs folder")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    tracks = track_set_name(get_tracks(args.tracks))
    data = args.out / "data"
    arch_sets: dict[str, list[str]] = {}
    for o in args.arch_set:
        name, _, override = o.partition(":")
        arch_sets.setdefault(name, []).append(override)
    write_data(data, tracks, args.bars, args.train, args.valid, args.seed)
    print(f"{'arch':14s} {'steps':>6s} {'chord copied':>13s}")
    for arch in args.archs.split(","):
        run = args.out / arch
        shutil.rmtree(run, ignore_errors=True)  # this script's own run of an earlier call
        subprocess.run([sys.executable, "-m", "schmubert.train", "--arch", arch, "--tracks", tracks,
                        "--preset", "tiny", "--data", str(data), "--max-steps", str(args.max_steps),
                        "--warmup-steps", "50", "--lr", "1e-3", "--batch-size", "16", "--sample-every", "0",
                        "--ema-decay", "0.99", "--ema-every", "1",  # weights that keep up with a short run
                        "--span-prob", str(args.span_prob),
                        "--logger", "csv", "--out", str(args.out), "--name", arch,
                        "--seed", str(args.seed), "--progress", "lines",
                        *(f"--set={o}" for o in [*args.set, *arch_sets.get(arch, [])])],
                       check=True)
        print(f"{arch:14s} {args.max_steps:6d} {evaluate(run, data, tracks, args.sample_steps, args.seed):13.3f}",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
