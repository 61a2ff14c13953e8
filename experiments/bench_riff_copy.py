"""Riff copy: does an infill play the song's repeated bars again? (The figure a musician hears first.)

Held-out windows are searched for bars inside the infilled span (default bars 16:48) that repeat a bar outside it
(a riff, a ride pattern, a chorus copy), counted in one of two units (``--unit``):

- ``bar`` (the default, issue 18's "bars 16-48 repeat bars found outside that span"): every track of the bar
  together equals some bar outside the span;
- ``track``: each track's bar on its own equals some bar of that track outside the span (a bass riff repeats
  under a new melody).

The ``--pieces`` windows with most such bars are infilled through the sample CLI's own path (its defaults:
steps, sampler options, precision, and for a model with attributes the key estimated from the piece). Printed
per track and in total, over the track-bars, and in total over the whole bars:

- ``onsets``: the share of the repeated bars' note-ons (step and pitch) and drum hits (step and drum class)
  that the infill reproduces;
- ``exact``: the share of those bars that come back token for token (a whole bar: on every track);
- ``other bars``: the onset share on the span's track-bars that repeat nothing, for comparison (what the infill
  recovers of an original it cannot copy).

    python experiments/bench_riff_copy.py --checkpoint pretrained:trio --data data/processed/lakh-trio/valid.npy
    python experiments/bench_riff_copy.py --checkpoint runs/x/checkpoints/last.ckpt --samples 2 --steps 32
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from schmubert import conditioning
from schmubert.checkpoints import held_out_pieces, load_model
from schmubert.sample import SampleConfig, Scenario, generate, make_attributes
from schmubert.sampling import DEFAULT_STEPS
from schmubert.tokens import NOTE_OFF, STEPS_PER_BAR, Track

#: What counts as a repeated bar (module docstring).
UNITS = ("bar", "track")


def bars_of(x: np.ndarray) -> np.ndarray:
    """``(L, K)`` tokens -> ``(bars, K, 16)``."""
    return x.reshape(-1, STEPS_PER_BAR, x.shape[-1]).transpose(0, 2, 1)


def events(bar: np.ndarray, track: Track) -> set[tuple[int, int]]:
    """Note-ons ``(step, pitch class id)`` of a melodic bar, or hits ``(step, drum class)`` of a drum bar."""
    if track.is_drum:
        return {(s, c) for s, v in enumerate(bar) for c in range(9) if 0 < v < track.num_classes and v >> c & 1}
    return {(s, int(v)) for s, v in enumerate(bar) if NOTE_OFF < v < track.num_classes}


def repeated(x: np.ndarray, span: tuple[int, int], tracks: list[Track]) -> np.ndarray:
    """``(bars, K)`` bool: bars inside ``span`` with events whose tokens equal some bar of that track outside it."""
    grid = bars_of(x)
    out = np.zeros(grid.shape[:2], dtype=bool)
    outside = [b for b in range(len(grid)) if not span[0] <= b < span[1]]
    for k, track in enumerate(tracks):
        seen = {grid[b, k].tobytes() for b in outside}
        for b in range(*span):
            out[b, k] = bool(events(grid[b, k], track)) and grid[b, k].tobytes() in seen
    return out


def repeated_bars(x: np.ndarray, span: tuple[int, int], tracks: list[Track]) -> np.ndarray:
    """``(bars,)`` bool: bars inside ``span`` with events whose tokens equal, on every track at once, some bar
    outside it."""
    grid = bars_of(x)
    out = np.zeros(len(grid), dtype=bool)
    seen = {grid[b].tobytes() for b in range(len(grid)) if not span[0] <= b < span[1]}
    for b in range(*span):
        sounds = any(events(grid[b, k], track) for k, track in enumerate(tracks))
        out[b] = sounds and grid[b].tobytes() in seen
    return out


def repeated_in(unit: str, x: np.ndarray, span: tuple[int, int], tracks: list[Track]) -> np.ndarray:
    """``(bars, K)``: the repeated track-bars of ``unit`` "track", or every track of the repeated whole bars."""
    if unit == "track":
        return repeated(x, span, tracks)
    if unit == "bar":
        return np.repeat(repeated_bars(x, span, tracks)[:, None], len(tracks), axis=1)
    raise ValueError(f"unit must be 'bar' or 'track', got {unit!r}")


def repeat_count(unit: str, x: np.ndarray, span: tuple[int, int], tracks: list[Track]) -> int:
    """How many bars of ``unit`` inside ``span`` repeat: whole bars, or track-bars."""
    return int(repeated_bars(x, span, tracks).sum() if unit == "bar" else repeated(x, span, tracks).sum())


def score(original: np.ndarray, infilled: np.ndarray, which: np.ndarray, tracks: list[Track]) -> np.ndarray:
    """Per track ``[events reproduced, events, bars exact, bars]`` over the bars ``which`` marks."""
    a, b = bars_of(original), bars_of(infilled)
    out = np.zeros((len(tracks), 4), dtype=np.int64)
    for bar, k in zip(*np.nonzero(which), strict=True):
        want, got = events(a[bar, k], tracks[k]), events(b[bar, k], tracks[k])
        out[k] += [len(want & got), len(want), int(np.array_equal(a[bar, k], b[bar, k])), 1]
    return out


def whole_bars_exact(original: np.ndarray, infilled: np.ndarray, which: np.ndarray) -> np.ndarray:
    """``[bars exact on every track, bars]`` over the bars ``which (bars,)`` marks."""
    a, b = bars_of(original)[which], bars_of(infilled)[which]
    return np.array([int((a == b).all(axis=(1, 2)).sum()), len(a)], dtype=np.int64)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default="pretrained:trio")
    p.add_argument("--data", type=Path, default=None,
                   help="held-out windows (.npy); default: those the model ships with")
    p.add_argument("--pieces", type=int, default=16, help="windows with the most repeated bars to infill")
    p.add_argument("--unit", choices=UNITS, default="bar",
                   help="what repeats: a whole bar (every track at once) or each track's bar on its own")
    p.add_argument("--span", default="16:48", help="infilled bars START:END")
    p.add_argument("--samples", type=int, default=1, help="infills per window")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="reverse steps (the CLI's default)")
    p.add_argument("--temperature", type=float, default=None, help="default: the CLI's")
    p.add_argument("--top-p", type=float, default=None, help="default: the CLI's")
    p.add_argument("--cfg-scale", type=float, default=None, help="default: the CLI's")
    p.add_argument("--order", default=None, help="default: the CLI's")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def riff_copy(model, pieces: np.ndarray, cfg: SampleConfig, span: tuple[int, int], n_pieces: int, seed: int,
              unit: str = "bar") -> tuple[dict[str, float], np.ndarray, np.ndarray, int]:
    """Infill ``span`` of the ``n_pieces`` windows of ``pieces (N, L, K)`` with most repeated bars of ``unit``
    (module docstring) by the sample CLI's path at ``cfg``. Returns the totals ``{"onsets", "exact",
    "track_exact", "other"}`` (``exact``: of whole bars for unit "bar"; ``track_exact``: of the track-bars), the
    per-track counts of the repeated bars and of the other track-bars (``score``'s columns), and the number of
    windows used."""
    tracks = list(model.tracks)
    counts = np.array([repeat_count(unit, x, span, tracks) for x in pieces])
    chosen = np.argsort(-counts, kind="stable")[:n_pieces]
    chosen = chosen[counts[chosen] > 0]
    total, floor = np.zeros((len(tracks), 4), np.int64), np.zeros((len(tracks), 4), np.int64)
    whole = np.zeros(2, np.int64)
    generator = torch.Generator().manual_seed(seed)
    for i in chosen:
        x = pieces[i]
        known = conditioning.infill((1, *x.shape), [span])[0].numpy()
        scen = Scenario(x, known, "infill", [])
        attrs = make_attributes(cfg, model, scen, generator)
        which = repeated_in(unit, x, span, tracks)
        others = np.zeros_like(which)
        others[span[0]:span[1]] = ~repeated(x, span, tracks)[span[0]:span[1]]
        for out in generate(cfg, model, scen, None, generator, attributes=attrs):
            total += score(x, out, which, tracks)
            floor += score(x, out, others, tracks)
            whole += whole_bars_exact(x, out, which[:, 0])
    r, n, e, b = total.sum(0)
    exact = whole[0] / max(whole[1], 1) if unit == "bar" else e / max(b, 1)
    result = {"onsets": r / max(n, 1), "exact": exact, "track_exact": e / max(b, 1),
              "other": floor[:, 0].sum() / max(floor[:, 1].sum(), 1)}
    return result, total, floor, len(chosen)


def held_out(model, data: Path | None, name: str) -> np.ndarray:
    """The held-out windows ``(N, L, K)``: ``data`` (.npy), else those the model ships with."""
    if data is not None:
        return np.load(data).astype(np.int64)
    found = held_out_pieces(model)
    if found is None:
        raise SystemExit(f"{name} ships no held-out windows: pass --data")
    return found[0].astype(np.int64)


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse_args(argv)
    model = load_model(args.checkpoint)
    tracks = list(model.tracks)
    pieces = held_out(model, args.data, args.checkpoint)
    span = conditioning.parse_bar_range(args.span)
    cfg = SampleConfig(steps=args.steps, num_samples=args.samples, batch_size=args.samples, seed=args.seed,
                       progress=False, wav=False)
    sampler = cfg.sampler
    for name in ("temperature", "top_p", "cfg_scale", "order"):
        if getattr(args, name) is not None:
            sampler = replace(sampler, **{name: getattr(args, name)})
    cfg = replace(cfg, sampler=sampler)
    result, total, floor, windows = riff_copy(model, pieces, cfg, span, args.pieces, args.seed, args.unit)
    what = "whole bars (every track)" if args.unit == "bar" else "track-bars"
    bars = int(total[0, 3]) if args.unit == "bar" else int(total[:, 3].sum())
    print(f"{args.checkpoint}: {windows} windows, {bars} repeated {what} in bars {span[0]}:{span[1]} "
          f"({int(total[:, 3].sum())} track-bars), {args.samples} infill(s) each, S={cfg.steps}, {cfg.sampler}")
    print(f"{'track':<8}{'bars':>6}{'onsets':>9}{'exact':>8}{'other bars':>12}")
    for k, t in enumerate(tracks):
        r, n, e, b = total[k]
        print(f"{t.name:<8}{b:>6}{r / max(n, 1):>9.1%}{e / max(b, 1):>8.1%}{floor[k, 0] / max(floor[k, 1], 1):>12.1%}")
    print(f"{'all':<8}{int(total[:, 3].sum()):>6}{result['onsets']:>9.1%}{result['track_exact']:>8.1%}"
          f"{result['other']:>12.1%}")
    if args.unit == "bar":
        print(f"{'bars':<8}{bars:>6}{result['onsets']:>9.1%}{result['exact']:>8.1%}   (exact on every track)")
    return result


if __name__ == "__main__":
    main()
