"""The context diagnostic: cross-entropy per masked element at fixed mask rates, per track.

A model that uses its context predicts a masked element far better when 95% of the piece is visible (mask rate
5%) than when almost nothing is (95%); a model that has only learned the marginal distribution scores the same
at every rate. This is the cheapest check that training learns music rather than token frequencies.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from schmubert.evaluation.likelihood import Denoiser

RATES = (0.05, 0.3, 0.6, 0.95)


@torch.no_grad()
def context_curve(denoiser: Denoiser, x0: torch.Tensor | np.ndarray, mask_ids: Sequence[int],
                  rates: Sequence[float] = RATES, generator: torch.Generator | None = None,
                  batch_size: int = 8, device: str | torch.device = "cpu") -> dict[float, list[float]]:
    """Mean cross-entropy (bits) per masked element, ``{rate: [bits of track 0, ..., track K-1]}``.

    x0: ``[N, L, K]`` pieces; each element of every track is masked independently with probability ``rate``.
    """
    x0 = np.asarray(x0)  # converted batch by batch (a memory-mapped valid.npy stays on disk)
    mask_value = torch.tensor(list(mask_ids), dtype=torch.long)
    out: dict[float, list[float]] = {}
    for rate in rates:
        total = torch.zeros(x0.shape[-1], dtype=torch.float64)
        count = torch.zeros(x0.shape[-1], dtype=torch.float64)
        for start in range(0, len(x0), batch_size):
            batch = torch.as_tensor(np.asarray(x0[start:start + batch_size]), dtype=torch.long)
            mask = torch.rand(batch.shape, generator=generator) < rate  # [B, L, K]
            x_t = torch.where(mask, mask_value, batch)
            logits = denoiser(x_t.to(device))
            for k, lg in enumerate(logits):
                ce = F.cross_entropy(lg.float().cpu().flatten(0, 1), batch[..., k].flatten(), reduction="none")
                m = mask[..., k].flatten()
                total[k] += ce[m].double().sum()
                count[k] += m.sum()
        out[float(rate)] = (total / count.clamp_min(1) / math.log(2)).tolist()
    return out


def format_context(curve: dict[float, list[float]], track_names: Sequence[str]) -> str:
    """A small table: one row per track, one column per mask rate."""
    rates = sorted(curve)
    lines = ["track    " + "".join(f"{f'{r:.0%}':>9}" for r in rates)]
    for k, name in enumerate(track_names):
        lines.append(f"{name:<9}" + "".join(f"{curve[r][k]:9.3f}" for r in rates))
    return "\n".join(lines)
