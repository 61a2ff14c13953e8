"""Benchmark: a pop909 model's piano accompaniment against held-out POP909 songs (issue 43, item 3).

For a voice-set checkpoint (melody, bridge, piano) it generates, through the sample CLI's own path
(:func:`schmubert.sample.decoding_plan`, :func:`~schmubert.sample.make_attributes` and
:func:`~schmubert.sample.generate_takes`, the tokens and the velocity bins; settings as ``bench_decoding.py``'s):

- ``accompany``: for ``--pieces`` held-out windows of ``--data`` (spread over the held-out songs: each song's first
  window, then each song's second, ... by ``meta.json``'s ``sources``; for a model without meter only windows
  without PAD, which it cannot read), cut to the model's window, the melody
  column kept (notes and velocity bins), the other instruments (bridge and piano) drawn; nothing of the songs'
  own accompaniment reaches the model (those columns are blanked first, so a model with attributes is told the
  key the melody shows, as for a melody-only file);
- ``uncond``: ``--pieces`` new pieces, as ``bench_decoding.py`` makes them;

and measures ``--instrument`` (default the piano) with :mod:`schmubert.evaluation.accompaniment`: per statistic
the generated pieces' mean, the held-out windows' mean (all windows of ``--data``, cut to the model's window) and
the overlap of the two distributions (1 = the same, 0 = disjoint; few pieces cap it, see ``bench_decoding.py``),
then per scenario the mean overlap and the agreement with the melody (key and chord-tone agreement) of the
generated pieces against the figures of the songs whose melodies were accompanied, as a relative difference
(``(generated - songs) / songs``). A first row, ``training windows``, measures as many real training windows
(spread over the training songs) the same way: the overlap real music reaches at this many pieces. A model
without velocity is not judged on the velocity statistics.

    python experiments/bench_pop909.py --checkpoint runs/cpu-pop909-attrs/checkpoints/last.ckpt
    python experiments/bench_pop909.py --checkpoint experiments/parts/pop909-part4.safetensors --pieces 32 \\
        --scenarios accompany --settings "default;t0.9:temperature=0.9" --json pop909.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_decoding import config_for, parse_setting  # noqa: E402

from schmubert import conditioning  # noqa: E402
from schmubert.checkpoints import LoadedModel, load_model  # noqa: E402
from schmubert.evaluation.accompaniment import (  # noqa: E402
    VELOCITY_STATISTICS,
    compare_accompaniment,
    instrument_columns,
    mean_overlap,
    set_accompaniment_statistics,
)
from schmubert.sample import (  # noqa: E402
    Scenario,
    decoding_plan,
    generate_takes,
    make_attributes,
    predicts_velocity,
    reads_meter,
)
from schmubert.sampling import DEFAULT_STEPS  # noqa: E402
from schmubert.tokens import instruments, pad_mask  # noqa: E402

SCENARIOS = ("accompany", "uncond")
#: The agreement figures compared with the accompanied songs' own.
AGREEMENTS = ("key_agreement", "chord_tone_agreement")


@dataclass
class HeldOut:
    """Held-out windows ``tokens`` ``(N, L, K)`` and their velocity bins (None without), cut to the model's
    window, and the song each window comes from ``(N,)`` (-1 where unknown)."""

    tokens: np.ndarray
    velocity: np.ndarray | None
    songs: np.ndarray


def load_held_out(data: Path, steps: int, split: str = "valid", in_memory: bool = True) -> HeldOut:
    """``data/{split}.npy`` (and ``{split}_velocity.npy``, ``meta.json``'s sources where present), cut to
    ``steps``: int64 arrays, or the files' memory maps (``in_memory`` False: for picking a few of many)."""
    if not (data / f"{split}.npy").is_file():
        raise SystemExit(f"{data}: no {split}.npy (a processed pop909 dataset: python -m preprocessing --tracks "
                         "pop909 ...)")

    def read(path: Path) -> np.ndarray:
        mapped = np.load(path, mmap_mode="r")[:, :steps]
        return mapped.astype(np.int64) if in_memory else mapped

    tokens = read(data / f"{split}.npy")
    vel_path = data / f"{split}_velocity.npy"
    velocity = read(vel_path) if vel_path.is_file() else None
    meta = json.loads((data / "meta.json").read_text()) if (data / "meta.json").is_file() else {}
    rows = (meta.get("sources") or {}).get(split) or []
    songs = np.array([r[0] for r in rows], dtype=np.int64) if len(rows) == len(tokens) else np.full(len(tokens), -1)
    return HeldOut(tokens, velocity, songs)


def real_music(data: Path, steps: int, n: int) -> tuple[np.ndarray, np.ndarray | None] | None:
    """``n`` training windows spread over the training songs, tokens ``(n, L, K)`` and velocity bins: what real
    music scores against the held-out windows at this many pieces (the ceiling of the overlaps); None without a
    ``train.npy``."""
    if not (data / "train.npy").is_file():
        return None
    train = load_held_out(data, steps, "train", in_memory=False)
    chosen = spread_windows(train.songs, n)
    return (np.asarray(train.tokens[chosen], dtype=np.int64),
            None if train.velocity is None else np.asarray(train.velocity[chosen], dtype=np.int64))


def spread_windows(songs: np.ndarray, n: int) -> np.ndarray:
    """The indices of ``n`` windows spread over the songs ``songs (N,)``: each song's first window (in order),
    then each song's second, ...; the first ``n`` where the songs are unknown (-1)."""
    rank = np.zeros(len(songs), dtype=np.int64)
    seen: dict[int, int] = {}
    for i, song in enumerate(songs.tolist()):
        rank[i] = seen.get(song, 0) if song >= 0 else i
        seen[song] = rank[i] + 1
    return np.lexsort((np.arange(len(songs)), rank))[:n]


def usable_windows(held: HeldOut, model: LoadedModel) -> np.ndarray:
    """``(N,)`` bool: the held-out windows the model can read (a model without meter: those without PAD)."""
    if reads_meter(model):
        return np.ones(len(held.tokens), dtype=bool)
    return ~pad_mask(held.tokens, model.tracks).any(axis=(1, 2))


def check_model(model: LoadedModel, args: argparse.Namespace) -> list[int]:
    """The columns drawn when accompanying (every instrument but ``--melody``); SystemExit where the model's set
    lacks ``--instrument`` or ``--melody``."""
    try:
        instrument_columns(model.tracks, args.instrument)
        melody = instrument_columns(model.tracks, args.melody)
    except ValueError as err:
        raise SystemExit(f"{args.checkpoint}: {err}") from None
    return [k for _, ks in instruments(model.tracks) for k in ks if k not in melody]


def accompany_scenario(x: np.ndarray, velocity: np.ndarray | None, model: LoadedModel, drawn: list[int],
                       source: str) -> Scenario:
    """The accompaniment of one window ``x (L, K)``: the ``drawn`` columns unknown and blanked (their PAD kept
    known), the others and their velocity bins ``(L, K)`` known."""
    pad = torch.as_tensor(pad_mask(x, model.tracks))[None]
    known = conditioning.regenerate_tracks((1, *x.shape), drawn, pad=pad)[0].numpy()
    return Scenario(np.where(known, x, 0), known, "accompaniment", [source],
                    velocity=None if velocity is None else np.where(known, velocity, 0))


def sample_pieces(model: LoadedModel, scen: Scenario, fields: dict[str, Any], args: argparse.Namespace, n: int,
                  generator: torch.Generator) -> tuple[np.ndarray, np.ndarray | None]:
    """``n`` pieces of ``scen`` as the sample CLI makes them: tokens ``(n, L, K)`` and velocity bins (or None)."""
    cfg = config_for(fields, args, n)
    plan = decoding_plan(cfg, model, scen)
    attrs = make_attributes(cfg, model, scen, generator, plan)
    return generate_takes(cfg, model, scen, None, generator, attributes=attrs, plan=plan)


def accompany(model: LoadedModel, held: HeldOut, chosen: np.ndarray, fields: dict[str, Any],
              args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray | None]:
    """The accompaniments of the ``chosen`` held-out windows' melodies: tokens ``(n, L, K)`` and velocity bins."""
    drawn = check_model(model, args)
    generator = torch.Generator().manual_seed(args.seed)
    tokens, velocity = [], []
    for i in chosen.tolist():
        scen = accompany_scenario(held.tokens[i], None if held.velocity is None else held.velocity[i], model, drawn,
                                  f"valid[{i}]")
        x, v = sample_pieces(model, scen, fields, args, 1, generator)
        tokens.append(x)
        velocity.append(v)
    return np.concatenate(tokens), None if velocity[0] is None else np.concatenate(velocity)


def unconditional(model: LoadedModel, held: HeldOut, chosen: np.ndarray, fields: dict[str, Any],
                  args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray | None]:
    """``len(chosen)`` new pieces ``(n, L, K)`` and their velocity bins, as ``bench_decoding.py`` makes them."""
    L, K = model.steps, len(model.tracks)
    scen = Scenario(np.zeros((L, K), np.int64), np.zeros((L, K), bool), "unconditional", [])
    return sample_pieces(model, scen, fields, args, len(chosen), torch.Generator().manual_seed(args.seed))


RUNNERS = {"accompany": accompany, "uncond": unconditional}


# --- figures ----------------------------------------------------------------------------------------------------


def defined_mean(values: np.ndarray) -> float:
    """The mean of the defined (not NaN) values; NaN where none is."""
    ok = np.asarray(values)[~np.isnan(values)]
    return float(ok.mean()) if len(ok) else float("nan")


def relative_difference(generated: float, songs: float) -> float:
    """``(generated - songs) / songs``; NaN where either is undefined or the songs' figure is 0."""
    return (generated - songs) / songs if np.isfinite(generated) and np.isfinite(songs) and songs else float("nan")


def judged(statistics: dict[str, np.ndarray], velocity: bool) -> dict[str, np.ndarray]:
    """The statistics a run is judged on: without velocity (model or data), not the velocity ones."""
    return {k: v for k, v in statistics.items() if velocity or k not in VELOCITY_STATISTICS}


def run_row(generated: dict[str, np.ndarray], reference: dict[str, np.ndarray], songs: dict[str, np.ndarray],
            velocity: bool) -> dict[str, Any]:
    """One run's figures: per statistic generated against ``reference`` (means, overlap), the mean overlap, and
    the agreements against the accompanied ``songs``' own."""
    compared = compare_accompaniment(judged(generated, velocity), judged(reference, velocity))
    agreement = {}
    for name in AGREEMENTS:
        gen, own = defined_mean(generated[name]), defined_mean(songs[name])
        agreement[name] = {"generated": gen, "songs": own, "relative_difference": relative_difference(gen, own)}
    return {"statistics": compared, "overlaps": {k: r["overlap"] for k, r in compared.items()},
            "mean_overlap": mean_overlap(compared), "agreement": agreement}


def fmt(value: float, digits: int = 2) -> str:
    return "-" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def print_tables(rows: list[dict[str, Any]]) -> None:
    """The statistics table (one row per statistic, a generated and an overlap column per run) and the summary."""
    names = list(rows[0]["statistics"]) if rows else []
    runs = [f"{r['scenario']} {r['setting']}" for r in rows]
    print("| statistic | held-out | " + " | ".join(f"{run} | overlap" for run in runs) + " |")
    print("|---|---:|" + "---:|---:|" * len(rows))
    for name in names:
        cells = " | ".join(f"{fmt(r['statistics'][name]['mean_gen'])} | {fmt(r['statistics'][name]['overlap'])}"
                           for r in rows)
        print(f"| {name} | {fmt(rows[0]['statistics'][name]['mean_ref'])} | {cells} |")
    print("\n| scenario | setting | pieces | mean overlap | key agreement (songs) | rel. diff | chord-tone agreement "
          "(songs) | rel. diff | s/piece |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        key, chord = (r["agreement"][name] for name in AGREEMENTS)
        print(f"| {r['scenario']} | {r['setting']} | {r['pieces']} | **{fmt(r['mean_overlap'])}** "
              f"| {fmt(key['generated'])} ({fmt(key['songs'])}) | {fmt(key['relative_difference'], 3)} "
              f"| {fmt(chord['generated'])} ({fmt(chord['songs'])}) | {fmt(chord['relative_difference'], 3)} "
              f"| {fmt(r['seconds_per_piece'])} |")


# --- command line -----------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python experiments/bench_pop909.py", description=__doc__.splitlines()[0],
                                allow_abbrev=False)
    p.add_argument("--checkpoint", required=True, help="a pop909 model: .ckpt, .safetensors or pretrained:NAME")
    p.add_argument("--data", type=Path, default=Path("data/processed/pop909"),
                   help="a processed pop909 dataset: its valid.npy (held-out windows), valid_velocity.npy and "
                        "meta.json (the songs of the windows)")
    p.add_argument("--pieces", type=int, default=16,
                   help="held-out melodies accompanied, and new pieces drawn, per scenario and setting")
    p.add_argument("--scenarios", default=",".join(SCENARIOS),
                   help=f"comma-separated, of {', '.join(SCENARIOS)}")
    p.add_argument("--settings", default="default",
                   help="NAME:FIELD=VALUE,... settings separated by ';' (as bench_decoding.py's), e.g. "
                        "'default;t0.9:temperature=0.9'")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="reverse steps unless a setting says "
                                                                     "(default: the sample CLI's)")
    p.add_argument("--batch-size", type=int, default=16, help="new pieces sampled together (an accompaniment is "
                                                              "sampled one window at a time)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"], help="as the sample CLI's")
    p.add_argument("--seed", type=int, default=0, help="random seed (the same for every scenario and setting)")
    p.add_argument("--instrument", default="piano", help="the instrument measured (an instrument of the set)")
    p.add_argument("--melody", default="melody", help="the instrument kept and agreed with (an instrument of the "
                                                      "set)")
    p.add_argument("--json", type=Path, default=None, help="also write every figure to this JSON file")
    args = p.parse_args(argv)
    bad = [s for s in args.scenarios.split(",") if s not in SCENARIOS]
    if bad:
        p.error(f"--scenarios: {', '.join(bad)} is not one of {', '.join(SCENARIOS)}")
    if args.pieces < 1:
        p.error("--pieces must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = [parse_setting(s) for s in args.settings.split(";") if s.strip()]
    model = load_model(args.checkpoint)
    check_model(model, args)
    held = load_held_out(args.data, model.steps)
    usable = np.flatnonzero(usable_windows(held, model))
    chosen = usable[spread_windows(held.songs[usable], args.pieces)]
    measure = {"tracks": model.tracks, "instrument": args.instrument, "melody": args.melody}
    reference = set_accompaniment_statistics(held.tokens, held.velocity, **measure)
    songs = {k: v[chosen] for k, v in reference.items()}
    velocity = predicts_velocity(model) and held.velocity is not None
    skipped = (f", not the {len(held.tokens) - len(usable)} windows with PAD: the model reads no meter"
               if len(usable) < len(held.tokens) else "")
    print(f"{args.checkpoint}: {args.instrument} of {len(chosen)} pieces per scenario and setting against the "
          f"{len(held.tokens)} held-out windows of {args.data} ({model.steps} steps; accompanied: "
          f"{len(np.unique(held.songs[chosen]))} songs{skipped}); {args.steps} steps"
          f"{'' if velocity else '; velocity statistics left out (no velocity in the model or the data)'}\n")
    rows = []
    ceiling = real_music(args.data, model.steps, len(chosen))
    if ceiling is not None:  # the same figures of real music, as many pieces
        rows.append({"scenario": "training windows", "setting": "-", "fields": {}, "pieces": len(ceiling[0]),
                     "seconds_per_piece": 0.0,
                     **run_row(set_accompaniment_statistics(*ceiling, **measure), reference, songs, velocity)})
    for scenario in args.scenarios.split(","):
        for name, fields in settings:
            began = time.perf_counter()
            tokens, vel = RUNNERS[scenario](model, held, chosen, fields, args)
            seconds = time.perf_counter() - began
            generated = set_accompaniment_statistics(tokens, vel, **measure)
            rows.append({"scenario": scenario, "setting": name, "fields": fields, "pieces": len(tokens),
                         "seconds_per_piece": seconds / len(tokens),
                         **run_row(generated, reference, songs, velocity)})
            print(f"{scenario} {name}: {len(tokens)} pieces in {seconds:.1f} s", file=sys.stderr, flush=True)
    print_tables(rows)
    if args.json is not None:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         "accompanied": chosen.tolist(), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
