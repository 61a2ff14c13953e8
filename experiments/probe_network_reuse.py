"""Probe: how much an infill owes to the network's passes after its first (issue 44).

The sampler calls the denoiser, the network with its copy prior mixed in, at every reverse step. With the
sampler's ``network_every`` N the network is computed only on every N-th step and its last logits are reused in
between, while the copy prior is mixed in afresh at every step from the piece as drawn so far
(:func:`schmubert.copy_prior.reusing_network`). For each setting ``STEPS:N`` it infills held-out windows by the
sample CLI's path (the editor's decoding: the piece's own key, no guidance, outside-in, copy sharpness 8) and
prints the network passes per piece, the riff copy of ``bench_riff_copy.py`` (bars 16:48; for a gap of some
tracks, ``--tracks``, the same on their own repeated bars and the original onsets drawn again in their other
bars), the statistics overlap of the drawn gap bars with the original ones, and the share of drawn tokens equal
to those of the first setting at the same seeds.

    python experiments/probe_network_reuse.py --checkpoint pretrained:trio --settings 8:1,8:8,8:2,12:3,4:1
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_decoding import config_for, statistics_row  # noqa: E402
from bench_riff_copy import held_out, repeated, riff_copy, score  # noqa: E402

from schmubert import conditioning  # noqa: E402
from schmubert.checkpoints import LoadedModel, load_model  # noqa: E402
from schmubert.copy_prior import CopyPrior  # noqa: E402
from schmubert.sample import Scenario, generate, make_attributes  # noqa: E402
from schmubert.tokens import STEPS_PER_BAR  # noqa: E402


def infills(model: LoadedModel, pieces: np.ndarray, fields: dict, span: tuple[int, int], tracks, seed: int
            ) -> tuple[np.ndarray, np.ndarray]:
    """Each window of ``pieces`` infilled over ``span`` (``tracks``: None, all) at seed ``seed + i``; the outputs
    ``(N, L, K)`` and the known mask ``(L, K)``."""
    args = argparse.Namespace(steps=fields["steps"], batch_size=1, seed=seed, precision="auto")
    cfg = config_for(fields, args, 1)
    outs, known = [], None
    for i, x in enumerate(pieces):
        generator = torch.Generator().manual_seed(seed + i)
        known = conditioning.infill((1, *x.shape), [span], tracks)[0].numpy()
        scen = Scenario(x, known, "infill", [])
        outs.append(generate(cfg, model, scen, None, generator, attributes=make_attributes(cfg, model, scen,
                                                                                              generator))[0])
    return np.stack(outs), known


def instrument_riff(originals: np.ndarray, outs: np.ndarray, span: tuple[int, int], drawn: list[int],
                    tracks) -> str:
    """Of the drawn tracks: the share of the onsets of their repeated bars reproduced and of those bars exact,
    and the share of the original onsets drawn again in their other gap bars."""
    tracks = list(tracks)
    total, other = np.zeros(4, np.int64), np.zeros(4, np.int64)
    for x, out in zip(originals, outs, strict=True):
        which = np.zeros((len(x) // STEPS_PER_BAR, len(tracks)), dtype=bool)
        which[:, drawn] = repeated(x, span, tracks)[:, drawn]
        rest = np.zeros_like(which)
        rest[span[0]:span[1], drawn] = ~which[span[0]:span[1], drawn]
        total += score(x, out, which, tracks).sum(0)
        other += score(x, out, rest, tracks).sum(0)
    return (f"{total[0] / max(total[1], 1):.1%} / {total[2] / max(total[3], 1):.1%} (other bars' onsets "
            f"{other[0] / max(other[1], 1):.1%})")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python experiments/probe_network_reuse.py",
                                description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("--checkpoint", default="pretrained:trio", help="a model with a copy prior")
    p.add_argument("--settings", default="8:1,8:8,8:2,12:3,4:1", help="STEPS:N, comma-separated (N: the network "
                   "is computed every N-th step); the first is the reference of the equal-token share")
    p.add_argument("--pieces", type=int, default=32, help="held-out windows for the gap statistics")
    p.add_argument("--riff-pieces", type=int, default=16)
    p.add_argument("--span", default="16:48", help="the gap, in bars")
    p.add_argument("--tracks", default=None, help="the gap's track indices, comma-separated (default: all)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    model = load_model(args.checkpoint)
    if not isinstance(model.denoiser, CopyPrior):
        raise SystemExit(f"{args.checkpoint} carries no copy prior: reusing its network would draw blind")
    held = held_out(model, None, args.checkpoint)
    span = conditioning.parse_bar_range(args.span)
    tracks = None if args.tracks is None else [int(k) for k in args.tracks.split(",")]
    gap = slice(span[0] * STEPS_PER_BAR, span[1] * STEPS_PER_BAR)
    print("| steps | network every | passes per piece | riff onsets / exact / track-bars | gap overlap | "
          "gap notes/bar (original) | equal drawn tokens |")
    print("|---:|---:|---:|---|---:|---:|---:|")
    first = None
    for setting in args.settings.split(","):
        steps, every = (int(v) for v in setting.split(":"))
        fields = {"steps": steps, "cfg_interval": 0, "network_every": every}
        riff = "-"
        outs, known = infills(model, held[:args.pieces], fields, span, tracks, args.seed)
        if tracks is not None:  # the drawn instrument's repeated bars, and its onsets elsewhere against the original
            riff = instrument_riff(held[:args.pieces], outs, span, tracks, model.tracks)
        elif args.riff_pieces:
            cfg = config_for(fields, argparse.Namespace(steps=steps, batch_size=16, seed=args.seed,
                                                        precision="auto"), 1)
            r, *_ = riff_copy(model, held, cfg, span, args.riff_pieces, args.seed)
            riff = f"{r['onsets']:.1%} / {r['exact']:.1%} / {r['track_exact']:.1%}"
        stats = statistics_row(outs[:, gap], held[:args.pieces, gap], model.tracks)
        drawn = ~known
        first = outs if first is None else first
        equal = float((outs[:, drawn] == first[:, drawn]).mean())
        print(f"| {steps} | {every} | {math.ceil(steps / every)} | {riff} | {stats['mean3']:.3f} | "
              f"{stats['notes_per_bar_mean']:.2f} ({stats['notes_per_bar_data']:.2f}) | {equal:.3f} |", flush=True)

if __name__ == "__main__":
    main()
