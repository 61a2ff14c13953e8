"""Benchmark: how well a model trained with attributes follows them, as the classifier-free guidance scale varies.

For each guidance scale w (``--scales``) it samples unconditionally (``schmubert.sampling.sample`` with the
model told only the condition under test, everything else null) and prints one markdown row:

- ``key``: for each of ``--keys`` (6 by default) ``--samples`` pieces told that key (with ``--outline``, each
  the key in place of a drawn training window's, the rest of that outline told too, as the sample CLI's
  ``--key K --outline auto`` does): the share whose estimated key
  (:func:`schmubert.attributes.estimate_key`, Krumhansl-Kessler) is the asked one; ``key/rel``: the share in the
  asked key or its relative major/minor (the same notes: D minor / F major), what "fits the key" means to a
  listener;
- ``density``: for each target of ``--density`` (onsets per bar on ``--density-track``, every bar), the share of
  bars whose onsets lie within +-1 of it, over all targets and per target (in Lakh melodies 1-3 onsets are
  33% of the bars, 5-7 26%, 9-11 6%: the default targets 2/6/10 run from common to rare);
- ``register``: for each ``TRACK=PITCH`` of ``--register`` (every bar), the share of bars whose mean note-on
  pitch lies within 3 semitones of it (a bar without notes is a miss);
- ``dynamics`` (models with velocity; ``--dynamics piano=p,piano=ff``): for each target (every bar), the share of
  bars with onsets whose dynamics (:func:`schmubert.attributes.bar_dynamics`, the bin of the mean velocity) lie
  within one bin of it.

Targets name instruments: a polyphonic instrument's density counts the note-ons of all its voices and is judged
in its onsets bins (+-1 bin, as repair judges it).
- ``stats``: the overlap of the music statistics (:func:`schmubert.evaluation.compare_sets`) of the key runs'
  samples with held-out windows (1 = the same distributions): what following the conditions costs; ``pc/scale/
  onsets``: the mean overlap of pitch-class entropy, scale consistency and notes per bar alone;
- ``s/piece``: seconds of sampling per piece (guidance runs one forward pass of twice the batch).

    python experiments/bench_control.py --checkpoint runs/cond/checkpoints/last.ckpt
    python experiments/bench_control.py --checkpoint runs/tiny-cond.ckpt --samples 4 --steps 8 --scales 0,2
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from schmubert import attributes as A
from schmubert import conditioning
from schmubert.checkpoints import LoadedModel, held_out_pieces, load_model
from schmubert.decoding import outlines
from schmubert.evaluation import compare_sets
from schmubert.sampling import SamplerOptions, fast_denoiser, sample
from schmubert.tokens import STEPS_PER_BAR, instruments

KEYS = ("C:major", "D:minor", "F#:major", "A:minor", "Bb:major", "E:minor")
#: The statistics a key and a density show in (issue 18's summary of unconditional samples).
KEY_STATISTICS = ("pitch_class_entropy", "scale_consistency", "notes_per_bar")


def generate(model: LoadedModel, told: A.Attributes, args: argparse.Namespace, scale: float, seed: int
             ) -> tuple[np.ndarray, float]:
    """``told.shape[0]`` unconditional pieces ``(N, L, K)`` told ``told``, and the seconds taken."""
    L, K = model.steps, len(model.tracks)
    out, velocities, began = [], [], time.perf_counter()
    generator = torch.Generator().manual_seed(seed)
    for lo in range(0, told.shape[0], args.batch_size):
        part = told.rows(lo, lo + args.batch_size)
        x = torch.zeros(part.shape[0], L, K, dtype=torch.long)
        options = SamplerOptions(cfg_scale=scale, temperature=args.temperature, cfg_kinds=args.cfg_kinds,
                                 repair=args.repair)
        velocity = torch.zeros_like(x) if model.denoiser.predicts_velocity else None
        y = sample(args.denoiser, model.diffusion, x, conditioning.unconditional(x.shape), args.steps, generator,
                   options, attributes=part, tracks=model.tracks, velocity=velocity)
        if velocity is not None:
            y, v = y
            velocities.append(v.cpu().numpy())
        out.append(y.cpu().numpy())
    args.velocities = np.concatenate(velocities) if velocities else None  # of the last call, for dynamics_share
    return np.concatenate(out), time.perf_counter() - began


def told_null(model: LoadedModel, n: int) -> A.Attributes:
    return A.Attributes.null(n, model.steps // STEPS_PER_BAR, model.tracks)


def instrument(model: LoadedModel, name: str) -> tuple[int, int]:
    """The index of instrument ``name`` and its number of voices."""
    groups = instruments(model.tracks)
    names = [n for n, _ in groups]
    if name not in names:
        raise ValueError(f"no instrument {name!r} (the model has {', '.join(names)})")
    return names.index(name), len(groups[names.index(name)][1])


def key_shares(model: LoadedModel, args, scale: float) -> tuple[float, float, np.ndarray, float]:
    """Share in the asked key, share in it or its relative, the samples, and the seconds."""
    keys = torch.tensor([A.parse_key(k) for k in args.keys]).repeat_interleave(args.samples)
    base = (outlines(model, len(keys), model.steps // STEPS_PER_BAR, torch.Generator().manual_seed(args.seed))
            if args.outline else told_null(model, len(keys)))
    pieces, seconds = generate(model, base.with_key(keys), args, scale, args.seed)
    got = A.estimate_key(torch.from_numpy(pieces), model.tracks)
    relative = torch.tensor([A.relative_key(int(k)) for k in keys])
    return (float((got == keys).float().mean()), float(((got == keys) | (got == relative)).float().mean()),
            pieces, seconds)


def density_share(model: LoadedModel, args, scale: float) -> tuple[float, list[float]]:
    """Share of bars within +-1 onset of their target (a polyphonic instrument: +-1 onsets bin), over all targets
    and per target."""
    hits = []
    k, voices = instrument(model, args.density_track)
    for i, target in enumerate(args.density):
        told = A.apply_targets(told_null(model, args.samples), model.tracks,
                               [A.BarTarget(args.density_track, target)])
        pieces, _ = generate(model, told, args, scale, args.seed + 100 + i)
        onsets = A.bar_onsets(torch.from_numpy(pieces), model.tracks, by_instrument=True)[..., k]
        if voices > 1:
            onsets, target = A.onset_bins(onsets, [voices]), told.onsets[0, 0, k]
        hits.append(((onsets - target).abs() <= 1).flatten())
    if not hits:  # --density "": the key alone
        return float("nan"), []
    return float(torch.cat(hits).float().mean()), [float(h.float().mean()) for h in hits]


def register_share(model: LoadedModel, args, scale: float) -> float:
    hits = []
    names = [n for n, _ in instruments(model.tracks)]
    for i, text in enumerate(args.register):
        target = A.parse_target(text, pitch=True)
        if target.track not in names:
            continue
        told = A.apply_targets(told_null(model, args.samples), model.tracks, [], [target])
        pieces, _ = generate(model, told, args, scale, args.seed + 200 + i)
        mean = A.bar_mean_pitch(torch.from_numpy(pieces), model.tracks, by_instrument=True)[
            ..., names.index(target.track)]
        hits.append(((mean - target.value).abs() <= 3).flatten())  # NaN (no notes) compares False: a miss
    return float(torch.cat(hits).float().mean()) if hits else float("nan")


def dynamics_share(model: LoadedModel, args, scale: float) -> float:
    """Share of bars with onsets whose dynamics lie within one bin of their target (NaN: no targets, or a model
    without velocity)."""
    if not model.denoiser.predicts_velocity:
        return float("nan")
    hits = []
    for i, text in enumerate(args.dynamics):
        target = A.parse_target(text, dynamics=True)
        k, _ = instrument(model, target.track)
        told = A.apply_targets(told_null(model, args.samples), model.tracks, dynamics=[target])
        pieces, _ = generate(model, told, args, scale, args.seed + 300 + i)
        have = A.bar_dynamics(torch.from_numpy(pieces), torch.from_numpy(args.velocities), model.tracks)[..., k]
        played = have != A.DYNAMICS_NULL
        hits.append(((have - told.dynamics[0, 0, k]).abs() <= 1)[played])
    return float(torch.cat(hits).float().mean()) if hits else float("nan")


def reference(model: LoadedModel, path: Path | None, n: int) -> np.ndarray | None:
    if path is not None:
        array = np.load(path / "valid.npy" if path.is_dir() else path, mmap_mode="r")
    else:
        found = held_out_pieces(model)
        if found is None:
            return None
        array = found[0]
    index = np.unique(np.linspace(0, len(array) - 1, min(n, len(array))).round().astype(int))
    return np.asarray(array[index], dtype=np.int64)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python experiments/bench_control.py", description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="a model trained with attributes (.ckpt, .safetensors, "
                                                       "pretrained:NAME)")
    p.add_argument("--scales", default="0,1,2,4", help="guidance scales w, comma-separated")
    p.add_argument("--keys", default=",".join(KEYS), help="keys asked, comma-separated")
    p.add_argument("--samples", type=int, default=16, help="pieces per key and per target")
    p.add_argument("--outline", action="store_true", help="key runs: each piece told a training window's outline "
                   "stored with the model, its key replaced by the asked one")
    p.add_argument("--density", default="2,6,10", help="onsets-per-bar targets, comma-separated ('': none)")
    p.add_argument("--density-track", default="melody", help="the instrument the density targets are asked of")
    p.add_argument("--register", default="melody=C4,melody=C5,bass=E2,bass=A2",
                   help="TRACK=PITCH register targets, comma-separated (tracks the model lacks are skipped)")
    p.add_argument("--dynamics", default="", help="INSTRUMENT=LEVEL dynamics targets of a velocity model, a mark "
                   "(ppp..fff) or a MIDI velocity, comma-separated, e.g. piano=p,piano=ff ('': none)")
    p.add_argument("--cfg-kinds", default=SamplerOptions.cfg_kinds, help="attribute kinds guidance pushes "
                   "(SamplerOptions.cfg_kinds): with 'key' a density or register told alone is followed as at "
                   "scale 0")
    p.add_argument("--repair", type=int, default=SamplerOptions.repair, help="repair rounds (SamplerOptions."
                   "repair): bars off their told onsets or register, and pieces off their told key, drawn again "
                   "(default: the model's)")
    p.add_argument("--steps", type=int, default=128, help="reverse steps per sample")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature")
    p.add_argument("--batch-size", type=int, default=16, help="pieces sampled together")
    p.add_argument("--held-out", type=Path, default=None, help="held-out windows (.npy or a processed dataset "
                   "folder) for the statistics overlap; default: the model's own held-out windows")
    p.add_argument("--reference-pieces", type=int, default=256, help="held-out pieces compared with")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                   help="denoiser arithmetic (auto: bf16 where native, the sample CLI's default)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    p.add_argument("--json", type=Path, default=None, help="also write every figure to this JSON file")
    args = p.parse_args(argv)
    args.scales = [float(s) for s in args.scales.split(",") if s]
    args.keys = [k for k in args.keys.split(",") if k]
    args.density = [float(d) for d in args.density.split(",") if d]
    args.register = [r for r in args.register.split(",") if r]
    args.dynamics = [d for d in args.dynamics.split(",") if d]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    model = load_model(args.checkpoint, args.device)
    if not model.conditional:
        print(f"error: {args.checkpoint}: this model was trained without attributes (nothing to steer)",
              file=sys.stderr)
        return 2
    args.denoiser = fast_denoiser(model.denoiser, args.precision)
    ref = reference(model, args.held_out, args.reference_pieces)
    rows = []
    repair = "the model's" if args.repair is None else args.repair
    print(f"{args.checkpoint}: {len(args.keys)} keys x {args.samples} samples, density {args.density} on "
          f"{args.density_track}, register {args.register}, dynamics {args.dynamics}, {args.steps} steps, guided "
          f"kinds {args.cfg_kinds}, repair {repair}\n")
    print("| cfg scale | key | key/rel | density +-1 | per target | register +-3 | stats | pc/scale/onsets "
          "| dynamics +-1 | s/piece |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for scale in args.scales:
        exact, relative, pieces, seconds = key_shares(model, args, scale)
        density, per_target = density_share(model, args, scale)
        register = register_share(model, args, scale)
        dynamics = dynamics_share(model, args, scale)
        compared = compare_sets(pieces, ref, model.tracks) if ref is not None else None
        stats = compared["summary"] if compared else float("nan")
        three = float(np.mean([compared["overlaps"][s] for s in KEY_STATISTICS])) if compared else float("nan")
        row = {"cfg_scale": scale, "key": exact, "key_or_relative": relative, "density_within_1": density,
               "density_within_1_per_target": dict(zip(map(str, args.density), per_target, strict=True)),
               "register_within_3": register, "dynamics_within_1": dynamics, "stats_overlap": stats,
               "pc_scale_onsets_overlap": three,
               "seconds_per_piece": seconds / len(pieces)}
        rows.append(row)
        print(f"| {scale:g} | {exact:.2f} | {relative:.2f} | {density:.2f} | "
              f"{'/'.join(f'{d:.2f}' for d in per_target)} | {register:.2f} | {stats:.2f} | "
              f"{three:.2f} | {dynamics:.2f} | {row['seconds_per_piece']:.2f} |", flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows},
                                        indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
