"""Every backbone learns from its context: the within-beat copy task (issue: the 0.02-std init could not).

Each beat holds one random token repeated over its 4 steps, so a masked step is predictable only from the
unmasked steps beside it; the marginal is uniform over 88 pitches (6.46 bits). A tiny model trained for 300 Adam
steps on one fixed batch must reach near-zero cross-entropy on freshly masked copies of it, in float32 and under
bf16 autocast (the training default where bf16 is native) alike.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from schmubert.backbones import architectures, build
from schmubert.tokens import get_tracks

LENGTH, BEAT, BATCH, RATE, STEPS, LR = 64, 4, 8, 0.1, 300, 2e-3


def copy_task(generator: torch.Generator) -> torch.Tensor:
    """``[B, L, 1]`` melody tokens: one random pitch token per beat, held for the beat's 4 steps."""
    beats = torch.randint(2, get_tracks("melody")[0].num_classes, (BATCH, LENGTH // BEAT), generator=generator)
    return beats.repeat_interleave(BEAT, dim=1)[..., None]


def masked_ce_bits(model: torch.nn.Module, x0: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    mask = torch.rand(x0.shape, generator=generator) < RATE
    mask[0, 0, 0] = True  # never an empty mask
    x_t = torch.where(mask, get_tracks("melody")[0].mask_id, x0)
    return F.cross_entropy(model(x_t)[0][mask[..., 0]], x0[mask]) / math.log(2)


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("arch", architectures())
def test_tiny_backbone_learns_the_within_beat_copy_task(arch, precision):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    model = build(arch, "melody", "tiny", seq_len=LENGTH)
    x0 = copy_task(g)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    for _ in range(STEPS):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = masked_ce_bits(model, x0, g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        ce = torch.stack([masked_ce_bits(model, x0, g) for _ in range(4)]).mean().item()
    assert ce < 0.3, f"{arch} {precision}: {ce:.3f} bits per masked step after {STEPS} steps (uniform: 6.46)"


def far_copy_task(generator: torch.Generator, length: int = 128) -> torch.Tensor:
    """``[B, L, 1]``: one random bar of pitch tokens per piece, repeated, so only other bars tell a masked step."""
    bars = torch.randint(2, get_tracks("melody")[0].num_classes, (BATCH, 16), generator=generator)
    return bars.repeat(1, length // 16)[..., None]


@pytest.mark.slow
def test_conv_with_bar_attention_learns_to_copy_from_other_bars():
    """Fresh pieces every step, so the copy rule has to be learned (the plain conv small stays at ~6.5 bits on this
    task, 16 bars, for 600-1000 steps: experiments/bench_far_copy.py)."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    model = build("conv", "melody", "tiny", seq_len=128, bar_depth=1, bar_width=32, bar_heads=2)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    for _ in range(STEPS):
        loss = masked_ce_bits(model, far_copy_task(g), g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        ce = torch.stack([masked_ce_bits(model, far_copy_task(g), g) for _ in range(4)]).mean().item()
    assert ce < 0.3, f"{ce:.3f} bits per masked step after {STEPS} steps (uniform: 6.46)"
