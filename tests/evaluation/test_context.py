import math

import numpy as np
import pytest
import torch

from schmubert.evaluation.context import context_curve, format_context
from schmubert.tokens import get_tracks

TRIO = get_tracks("trio")
MASK_IDS = [t.mask_id for t in TRIO]


def pieces(n=4, length=32):
    rng = np.random.default_rng(0)
    return np.stack([rng.integers(0, t.num_classes, (n, length)) for t in TRIO], axis=-1)


def uniform_denoiser(x_t):
    return [torch.zeros(*x_t.shape[:2], t.num_classes) for t in TRIO]


def test_a_model_without_context_scores_the_same_at_every_rate():
    curve = context_curve(uniform_denoiser, pieces(), MASK_IDS, generator=torch.Generator().manual_seed(0))
    assert sorted(curve) == [0.05, 0.3, 0.6, 0.95]
    for bits in curve.values():
        assert bits == pytest.approx([math.log2(90), math.log2(90), math.log2(512)])


def test_a_model_that_reads_its_neighbours_is_better_at_low_rates():
    """Each step's answer is the next step's token: visible when that neighbour is not masked."""
    x0 = np.repeat(pieces(32, 32), 2, axis=1)  # every token held for two steps

    def neighbour(x_t):
        out = []
        for k, t in enumerate(TRIO):
            ids = x_t[..., k]
            pair = torch.where(torch.arange(ids.shape[1]) % 2 == 0, ids.roll(-1, 1), ids.roll(1, 1))
            logits = torch.zeros(*ids.shape, t.num_classes)
            seen = pair != t.mask_id
            logits[seen] = torch.nn.functional.one_hot(pair[seen], t.num_classes).float() * 20
            out.append(logits)
        return out

    curve = context_curve(neighbour, x0, MASK_IDS, rates=(0.05, 0.95), generator=torch.Generator().manual_seed(0))
    assert all(lo < 0.2 * hi for lo, hi in zip(curve[0.05], curve[0.95], strict=True)), curve
    table = format_context(curve, [t.name for t in TRIO])
    assert table.splitlines()[0].split() == ["track", "5%", "95%"] and "drums" in table
