"""Benchmark: seconds per 64-bar trio for each unmasking order and S in {1024, 256, 64}, batch 1 and 16.

A configuration is run in full when its estimated time fits ``--budget`` seconds; otherwise the sampler runs
with a stand-in that replays one real output (the same control flow, reveals and draws, so the same number
of denoiser calls) and the time is ``sampler overhead + calls x measured forward time``, marked ``est``.
The original implementation needs about 280 s per 1024-step trio (conv paper preset, 0.27 s per forward at
batch 1 on 2 CPU cores, spec section 8); the last column is that divided by ours.

    python experiments/bench_sample.py                     # conv paper preset, CPU (and CUDA when present)
    python experiments/bench_sample.py --preset small --budget 120
    python experiments/bench_sample.py --modes fp32,bf16,compile,compile+bf16 --steps 64 --batch 1,16
    python experiments/bench_sample.py --checkpoint pretrained:trio --modes fp32,bf16 --steps 128 --orders random

``--modes`` also times the denoiser under bf16 autocast (only where the device runs bf16 natively) and
``torch.compile`` (its first call, the compile, is timed apart), each for the sampler at every S.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from schmubert.backbones import build, describe
from schmubert.checkpoints import load_model
from schmubert.conditioning import unconditional
from schmubert.diffusion import AbsorbingDiffusion
from schmubert.precision import native_bf16
from schmubert.sampling import fast_denoiser, sample
from schmubert.tokens import mask_ids

ORIGINAL_SECONDS = 280.0  # per 1024-step trio, batch 1, CPU (spec section 8)
L, TRACKS = 1024, "trio"


class Replay(nn.Module):
    """Returns one precomputed output: the sampler's own cost without the network's."""

    def __init__(self, logits: list[torch.Tensor], device: torch.device):
        super().__init__()
        self.logits = logits
        self.anchor = nn.Parameter(torch.zeros((), device=device))

    def forward(self, x_t: torch.Tensor) -> list[torch.Tensor]:
        return self.logits


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def forward_seconds(model: nn.Module, x: torch.Tensor, repeats: int) -> tuple[float, list[torch.Tensor]]:
    """The fastest of ``repeats`` forward passes (the least disturbed by other load on shared cores)."""
    logits = model(x)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        sync(x.device)
        began = time.perf_counter()
        logits = model(x)
        sync(x.device)
        best = min(best, time.perf_counter() - began)
    return best, logits


def timed_sample(model: nn.Module, diffusion, x, steps: int, order: str) -> tuple[float, int]:
    stats: dict = {}
    sync(x.device)
    began = time.perf_counter()
    sample(model, diffusion, x, unconditional(x.shape, x.device), steps, torch.Generator().manual_seed(0),
           order=order, stats=stats)
    sync(x.device)
    return time.perf_counter() - began, stats["calls"]


def mode_model(model: nn.Module, mode: str, device: torch.device) -> nn.Module | None:
    """The denoiser for a mode 'fp32', 'bf16', 'compile' or 'compile+bf16'; None where bf16 is not native."""
    bf16 = "bf16" in mode
    if bf16 and not native_bf16(device):
        print(f"  {mode}: skipped, {device} has no native bf16")
        return None
    return fast_denoiser(model, "bf16" if bf16 else "fp32", compile="compile" in mode)


def bench_device(args: argparse.Namespace, device: torch.device) -> None:
    torch.manual_seed(0)
    if args.checkpoint:
        model = load_model(args.checkpoint, device).denoiser.eval()
    else:
        model = build(args.arch, TRACKS, args.preset).to(device).eval()
    diffusion = AbsorbingDiffusion(mask_ids(TRACKS))
    print(f"\n{describe(model)} on {device}")
    print(f"{'mode':>12} {'batch':>5} {'order':>10} {'S':>5} {'calls':>6} {'first s':>8} {'fwd s':>8} "
          f"{'s/trio':>9} {'how':>4} {'orig/ours':>9}")
    for mode in args.modes:
        runner = mode_model(model, mode, device)
        if runner is None:
            continue
        for batch in args.batch:
            x = torch.zeros(batch, L, 3, dtype=torch.long, device=device)
            x_mask = x + torch.tensor(mask_ids(TRACKS), device=device)
            began = time.perf_counter()
            with torch.no_grad():
                runner(x_mask)  # the first call (compiles when compiling)
            sync(device)
            first = time.perf_counter() - began
            fwd, logits = forward_seconds(runner, x_mask, args.repeats)
            replay = Replay([lg.float() for lg in logits], device)
            for order in args.orders:
                for steps in args.steps:
                    if steps * fwd <= args.budget:
                        seconds, calls = timed_sample(runner, diffusion, x, steps, order)
                        how = "run"
                    else:
                        overhead, calls = timed_sample(replay, diffusion, x, steps, order)
                        seconds, how = overhead + calls * fwd, "est"
                    per_trio = seconds / batch
                    print(f"{mode:>12} {batch:>5} {order:>10} {steps:>5} {calls:>6} {first:>8.2f} {fwd:>8.4f} "
                          f"{per_trio:>9.3f} {how:>4} {ORIGINAL_SECONDS / per_trio:>9.1f}", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default="", help="time this trio model (a checkpoint or pretrained:NAME) "
                   "instead of a fresh --arch/--preset one")
    p.add_argument("--arch", default="conv")
    p.add_argument("--preset", default="paper")
    p.add_argument("--steps", type=lambda s: [int(v) for v in s.split(",")], default=[1024, 256, 64])
    p.add_argument("--batch", type=lambda s: [int(v) for v in s.split(",")], default=[1, 16])
    p.add_argument("--orders", type=lambda s: s.split(","), default=["random", "confidence"])
    p.add_argument("--modes", type=lambda s: s.split(","), default=["fp32"],
                   help="fp32, bf16 (autocast), compile, compile+bf16 (default: fp32)")
    p.add_argument("--devices", type=lambda s: s.split(","), default=None, help="default: cpu (+cuda)")
    p.add_argument("--budget", type=float, default=60.0, help="longest full run per configuration (seconds)")
    p.add_argument("--repeats", type=int, default=3, help="forward passes timed (the fastest counts)")
    args = p.parse_args()
    devices = args.devices or ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")
    for name in devices:
        bench_device(args, torch.device(name))


if __name__ == "__main__":
    main()
