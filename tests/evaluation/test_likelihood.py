"""Held-out likelihood: exact weights, oracle = 0, exact values for constant CE, agreement across seeds."""

import math

import numpy as np
import pytest
import torch

from schmubert.conditioning import parse_bar_range
from schmubert.diffusion import AbsorbingDiffusion, NoiseConfig
from schmubert.evaluation.likelihood import bar_region, elbo, infill_nll
from schmubert.tokens import mask_ids

T = 64


def data_melody(n=6, steps=256, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.choice([0, 0, 0, 1, 41, 43, 45], size=(n, steps, 1))
    return x.astype(np.uint16)


def diffusion(tracks="melody"):
    return AbsorbingDiffusion(mask_ids(tracks), NoiseConfig(timesteps=T, schedule="all"))


def oracle_for(x0):
    """Huge logits at the true class of the (single, repeated) piece x0 [L, K]."""
    def denoiser(x_t):
        return [torch.nn.functional.one_hot(torch.as_tensor(x0[:, k], dtype=torch.long), c).float()
                .mul(1e4).expand(len(x_t), -1, -1) for k, c in enumerate([90])]
    return denoiser


@pytest.mark.parametrize("estimator", ["count", "time"])
def test_perfect_model_has_zero_elbo(estimator):
    x = np.repeat(data_melody(1), 4, axis=0)
    res = elbo(oracle_for(x[0].astype(np.int64)), diffusion(), x, samples_per_piece=8, estimator=estimator)
    assert res.bits == 0.0
    assert infill_nll(oracle_for(x[0].astype(np.int64)), diffusion(), x, bars=(4, 12)).bits == 0.0


def uniform(x_t):
    return [torch.zeros(*x_t.shape[:2], 90)]


def test_constant_cross_entropy_gives_it_exactly_per_element():
    x = data_melody()
    assert elbo(uniform, diffusion(), x, samples_per_piece=4).bits == pytest.approx(math.log2(90), rel=1e-6)
    infill = infill_nll(uniform, diffusion(), x, bars=(4, 8), samples_per_piece=4)
    assert infill.bits == pytest.approx(math.log2(90), rel=1e-6) and infill.elements == 4 * 16
    # the time estimator is unbiased but noisy: within a few standard errors
    time = elbo(uniform, diffusion(), x, samples_per_piece=64, estimator="time")
    assert time.bits == pytest.approx(math.log2(90), abs=0.15)


def mask_aware(x_t):
    """Like a trained model: more certain the less is masked (CE per masked element depends on the count)."""
    frac = (x_t[..., 0] == 90).float().mean(1).view(-1, 1, 1)
    logits = torch.full((*x_t.shape[:2], 90), -4.0)
    logits[..., [0, 1, 41, 43, 45]] = 0.0
    logits[..., 0] = 3.0 * (1 - frac[..., 0])
    return [logits]


def test_estimators_agree_and_count_estimates_agree_across_seeds():
    # every element the same class: the CE of a masked element depends only on how many are masked, so the
    # count estimator's only noise is the draw of the count, which stratification makes negligible
    x = np.zeros((8, 256, 1), dtype=np.uint16)
    runs = [elbo(mask_aware, diffusion(), x, samples_per_piece=64, batch_size=128,
                 generator=torch.Generator().manual_seed(s)).bits for s in range(3)]
    assert max(runs) - min(runs) < 0.001
    time = [elbo(mask_aware, diffusion(), x, samples_per_piece=64, batch_size=128, estimator="time",
                 generator=torch.Generator().manual_seed(s)).bits for s in range(3)]
    assert np.mean(time) == pytest.approx(np.mean(runs), abs=0.05)
    assert np.std(time) > np.std(runs)


def test_time_estimator_matches_diffusion_loss_elbo():
    """With one t for a whole batch, our time estimate equals AbsorbingDiffusion.loss(...).elbo_per_sample."""
    x = torch.as_tensor(data_melody(n=3).astype(np.int64))
    d = diffusion()
    t = torch.full((3,), 17)
    x_t, mask = d.q_sample(x, t, torch.Generator().manual_seed(0))
    expected = d.loss(mask_aware(x_t), x, mask, t).elbo_per_sample
    ce = d.masked_cross_entropy(mask_aware(x_t), x, mask)
    np.testing.assert_allclose(ce * T / 17 / (x.shape[1] * math.log(2)), expected, rtol=1e-6)


def test_regions_and_bad_input():
    region = bar_region(1024, 3, (16, 48))
    assert region.sum() == 32 * 16 * 3 and region[256:768].all() and not region[:256].any()
    assert parse_bar_range("16:48") == (16, 48)
    with pytest.raises(ValueError, match="START:END"):
        parse_bar_range("16-48")
    with pytest.raises(ValueError, match="outside the piece"):
        bar_region(256, 1, (8, 20))


def test_reported_monte_carlo_error_predicts_the_spread_across_seeds():
    x = data_melody(n=12, steps=128)
    runs = [elbo(mask_aware, diffusion(), x, samples_per_piece=8, batch_size=96,
                 generator=torch.Generator().manual_seed(s)) for s in range(16)]
    spread = np.std([r.bits for r in runs], ddof=1)
    reported = np.mean([r.monte_carlo_error for r in runs])
    assert spread > 0 and 0.5 < reported / spread < 2, (reported, spread)


def test_conditional_models_are_scored_told_nothing_unless_asked(corpus_pieces):
    from schmubert.backbones import build

    torch.manual_seed(0)
    model = build("transformer", "trio", "tiny", attributes=True, seq_len=256).eval()
    with torch.no_grad():
        torch.nn.init.normal_(model.inputs.embed.attributes.out.weight)
    diff = AbsorbingDiffusion(mask_ids("trio"), NoiseConfig(timesteps=256))
    data = corpus_pieces("trio", 2)[:, :256]
    told_nothing = elbo(model, diff, data, samples_per_piece=2).bits
    unconditional = elbo(lambda x_t: model(x_t, None), diff, data, samples_per_piece=2).bits
    own = elbo(model, diff, data, samples_per_piece=2, attributes="own").bits
    assert told_nothing == unconditional and own != told_nothing
    with pytest.raises(ValueError, match="'null' or 'own'"):
        elbo(model, diff, data, attributes="mine")
