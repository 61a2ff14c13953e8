"""The far-copy probe: can a backbone learn to copy from other bars (the long-range context infilling needs)?

Each piece is one random bar of melody tokens (16 steps, each uniform over the 88 pitches) repeated over the
whole window, so a masked step is predictable only from the same step of another bar; its own neighbours carry
nothing (uniform: log2(90) = 6.49 bits, the 90 classes at init). Every optimizer step draws a fresh batch, so
the model cannot memorise pieces: it has to learn the copy rule. Prints the cross-entropy per masked step
(bits) against steps and seconds for each candidate, e.g.

    python experiments/bench_far_copy.py --candidates transformer,conv --steps 600

Cheap (minutes per candidate on one core) and decisive: run it before a long training run on real data.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from typing import Any

import torch
import torch.nn.functional as F

from schmubert.backbones import build
from schmubert.tokens import get_tracks

BAR = 16

# name -> (architecture, preset, backbone overrides)
CANDIDATES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "transformer": ("transformer", "small", {}),
    "conv": ("conv", "small", {}),
    "conv-patch1": ("conv", "small", {"patch": 1}),
    "conv-bars": ("conv", "small", {"bar_depth": 2}),
    "hierarchical": ("hierarchical", "small", {}),
    "utransformer": ("utransformer", "small", {}),
}


def far_copy_batch(batch: int, length: int, generator: torch.Generator) -> torch.Tensor:
    """``x0 [B, L, 1]``: one random bar of pitch tokens per piece, repeated ``L / 16`` times."""
    melody = get_tracks("melody")[0]
    bars = torch.randint(2, melody.num_classes, (batch, BAR), generator=generator)
    return bars.repeat(1, length // BAR)[..., None]


def masked_ce_bits(model: torch.nn.Module, x0: torch.Tensor, rate: float, generator: torch.Generator) -> torch.Tensor:
    """Cross-entropy (bits) over the elements masked at ``rate``."""
    mask = torch.rand(x0.shape, generator=generator) < rate
    mask[0, 0, 0] = True  # never an empty mask
    x_t = torch.where(mask, get_tracks("melody")[0].mask_id, x0)
    return F.cross_entropy(model(x_t)[0][mask[..., 0]], x0[mask]) / math.log(2)


def run(name: str, args: argparse.Namespace) -> list[tuple[int, float, float]]:
    arch, preset, overrides = CANDIDATES[name]
    torch.manual_seed(args.seed)
    g = torch.Generator().manual_seed(args.seed)
    model = build(arch, "melody", preset, seq_len=args.length, **overrides)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    warmup = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / args.warmup))
    points, start, recent = [], time.monotonic(), []
    for step in range(1, args.steps + 1):
        loss = masked_ce_bits(model, far_copy_batch(args.batch_size, args.length, g), args.rate, g)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        warmup.step()
        recent.append(loss.item())
        if step % args.every == 0:
            points.append((step, time.monotonic() - start, sum(recent) / len(recent)))
            recent = []
            print(f"{name:<14} step {step:5d} {points[-1][1]:7.0f} s  {points[-1][2]:.3f} bits", flush=True)
    return points


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--candidates", default=",".join(CANDIDATES), help="comma-separated (default: all)")
    p.add_argument("--steps", type=int, default=600, help="optimizer steps per candidate (default: 600)")
    p.add_argument("--length", type=int, default=256, help="window length L in steps (default: 256, 16 bars)")
    p.add_argument("--batch-size", type=int, default=8, help="pieces per step (default: 8)")
    p.add_argument("--rate", type=float, default=0.3, help="mask rate (default: 0.3)")
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (default: 1e-3)")
    p.add_argument("--warmup", type=int, default=100, help="linear warm-up steps (default: 100)")
    p.add_argument("--every", type=int, default=100, help="print the mean loss every N steps (default: 100)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    names = [n for n in args.candidates.split(",") if n]
    unknown = sorted(set(names) - set(CANDIDATES))
    if unknown:
        p.error(f"unknown candidates {unknown}; expected some of {sorted(CANDIDATES)}")
    torch.set_num_threads(args.threads)
    results = {name: run(name, args) for name in names}
    print(f"\nfar copy: CE per masked step (bits; uniform 6.49), mean over each {args.every} steps")
    print(f"{'candidate':<14}{'s/step':>8}  " + " ".join(f"{s:>6d}" for s, _, _ in results[names[0]]))
    for name, points in results.items():
        per_step = points[-1][1] / points[-1][0]
        print(f"{name:<14}{per_step:8.3f}  " + " ".join(f"{ce:6.2f}" for _, _, ce in points))
    return 0


if __name__ == "__main__":
    sys.exit(main())
