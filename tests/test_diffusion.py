import math

import pytest
import torch

from schmubert.diffusion import AbsorbingDiffusion, NoiseConfig
from schmubert.tokens import mask_ids

TRIO_MASKS = mask_ids("trio")


def diffusion(schedule="all", T=1024, **kw):
    return AbsorbingDiffusion(TRIO_MASKS, NoiseConfig(timesteps=T, schedule=schedule, **kw))


def zeros(B=64, L=1024, K=3):
    return torch.zeros(B, L, K, dtype=torch.long)


@pytest.mark.parametrize("t", [1, 100, 512, 900, 1024])
def test_empirical_mask_rate_matches_t_over_T(t):
    d = diffusion("all")
    x0 = zeros()
    x_t, mask = d.q_sample(x0, torch.full((64,), t), generator=torch.Generator().manual_seed(t))
    rate = mask.float().mean().item()
    n = mask.numel()
    p = t / 1024
    assert abs(rate - p) < 5 * math.sqrt(p * (1 - p) / n) + 1e-9
    # masked elements carry their track's mask id, the others are unchanged
    assert torch.equal(x_t[mask], torch.tensor(TRIO_MASKS).expand_as(x_t)[mask])
    assert (x_t[~mask] == 0).all()


def test_t_equal_T_masks_everything_all_schedule():
    d = diffusion("all")
    _, mask = d.q_sample(zeros(4), torch.full((4,), 1024))
    assert mask.all()


def test_tracks_schedule_masks_a_nonempty_subset_and_leaves_others_intact():
    d = diffusion("tracks")
    B = 4000
    x0 = zeros(B, 16, 3)
    _, mask = d.q_sample(x0, torch.full((B,), 1024), generator=torch.Generator().manual_seed(0))
    per_track = mask.all(dim=1)  # at t=T a selected track is fully masked
    untouched = ~mask.any(dim=1)
    assert torch.equal(per_track, ~untouched)  # each track is all-or-nothing at t = T
    assert per_track.any(dim=1).all()  # never the empty subset
    codes = (per_track.long() * torch.tensor([1, 2, 4])).sum(dim=1)
    counts = torch.bincount(codes, minlength=8)
    assert counts[0] == 0
    assert (counts[1:] - B / 7).abs().max() < 5 * math.sqrt(B / 7)  # the 7 subsets uniformly


def test_mixed_schedule_uses_subsets_with_track_prob():
    d = diffusion("mixed", track_prob=0.25)
    B = 4000
    _, mask = d.q_sample(zeros(B, 16, 3), torch.full((B,), 1024), generator=torch.Generator().manual_seed(1))
    all_masked = mask.all(dim=(1, 2)).float().mean().item()
    # 'all' with prob 0.75, plus the full subset {m, b, d} in 1/7 of the 'tracks' draws
    assert abs(all_masked - (0.75 + 0.25 / 7)) < 0.03


def test_melody_ignores_track_schedule():
    d = AbsorbingDiffusion(mask_ids("melody"), NoiseConfig(schedule="tracks"))
    _, mask = d.q_sample(zeros(8, 64, 1), torch.full((8,), 1024))
    assert mask.all()


def test_stratified_times_cover_every_stratum():
    d = diffusion(T=64)
    t = d.sample_t(64, generator=torch.Generator().manual_seed(3), stratified=True)
    assert sorted(t.tolist()) == list(range(1, 65))
    t = d.sample_t(1000)
    assert t.min() >= 1 and t.max() <= 64


def uniform_logits(B, L):
    return [torch.zeros(B, L, c) for c in (90, 90, 512)]


def test_loss_hand_computed_for_uniform_logits():
    d = diffusion(T=1024)
    B, L, K = 2, 32, 3
    x0 = zeros(B, L, K)
    mask = torch.zeros(B, L, K, dtype=torch.bool)
    mask[0, :4, 0] = True  # 4 melody elements
    mask[1, :2, 2] = True  # 2 drum elements
    t = torch.tensor([256, 512])
    out = d.loss(uniform_logits(B, L), x0, mask, t)
    ce = torch.tensor([4 * math.log(90), 2 * math.log(512)])
    per_el = math.log(2) * L * K
    elbo = ce * 1024 / t / per_el
    loss = (1 - t / 1024) * ce / per_el
    assert torch.allclose(out.elbo_per_sample, elbo.float())
    assert out.elbo.item() == pytest.approx(elbo.mean().item(), rel=1e-6)
    assert out.loss.item() == pytest.approx(loss.mean().item(), rel=1e-6)


def test_loss_ignores_unmasked_elements():
    d = diffusion()
    B, L = 3, 64
    gen = torch.Generator().manual_seed(0)
    x0 = torch.stack([torch.randint(0, c, (B, L), generator=gen) for c in (90, 90, 512)], dim=-1)
    t = torch.tensor([100, 500, 1000])
    _, mask = d.q_sample(x0, t, generator=gen)
    logits = [torch.randn(B, L, c, generator=gen) for c in (90, 90, 512)]
    base = d.loss(logits, x0, mask, t)
    changed = [torch.where(mask[..., k, None], lg, lg + 10 * torch.randn_like(lg)) for k, lg in enumerate(logits)]
    same = d.loss(changed, x0, mask, t)
    assert torch.allclose(base.elbo_per_sample, same.elbo_per_sample)
    moved = [torch.where(mask[..., k, None], lg + 10 * torch.randn_like(lg), lg) for k, lg in enumerate(logits)]
    assert not torch.allclose(base.elbo_per_sample, d.loss(moved, x0, mask, t).elbo_per_sample)


def test_perfect_prediction_has_zero_loss():
    d = diffusion()
    x0 = torch.randint(0, 90, (2, 16, 3))
    x0[..., 2] = torch.randint(0, 512, (2, 16))
    t = torch.tensor([10, 1000])
    _, mask = d.q_sample(x0, t)
    logits = [torch.nn.functional.one_hot(x0[..., k], c).float() * 1e4 for k, c in enumerate((90, 90, 512))]
    out = d.loss(logits, x0, mask, t)
    assert out.elbo.item() == pytest.approx(0.0, abs=1e-6)


def test_reveal_probability_ends_with_everything_revealed():
    assert AbsorbingDiffusion.reveal_probability(1) == 1.0
    assert AbsorbingDiffusion.reveal_probability(4) == 0.25
    with pytest.raises(ValueError):
        AbsorbingDiffusion.reveal_probability(0)


def test_mask_count_law_matches_the_sum_over_t():
    n, timesteps = 5, 4
    p = diffusion(T=timesteps).mask_count_law(n)
    brute = [m / n * sum(math.comb(n, m) * (t / timesteps) ** m * (1 - t / timesteps) ** (n - m) / t
                         for t in range(1, timesteps + 1)) for m in range(n + 1)]
    assert p == pytest.approx(brute, rel=1e-12)
    assert p[0] == 0 and diffusion().mask_count_law(3072).sum() == pytest.approx(1.0, abs=1e-9)


def test_span_schedule_masks_one_run_of_whole_bars_inside_the_window():
    diffusion = AbsorbingDiffusion(mask_ids("trio"), NoiseConfig(schedule="all", span_prob=1.0, max_span_bars=8))
    x0 = torch.zeros(64, 1024, 3, dtype=torch.long)
    t = torch.full((64,), diffusion.T)  # everything that may be masked is
    _, mask = diffusion.q_sample(x0, t, generator=torch.Generator().manual_seed(0))
    bars = mask.view(64, 64, 16, 3)
    assert (bars.all(dim=(2, 3)) == bars.any(dim=(2, 3))).all()  # whole bars, every track
    for row in bars.any(dim=(2, 3)):
        masked = row.nonzero().flatten()
        assert 1 <= len(masked) <= 8 and (masked.diff() == 1).all()  # one run of at most 8 bars
    lengths = bars.any(dim=(2, 3)).sum(1)
    assert lengths.min() == 1 and lengths.max() == 8  # every length occurs over 64 samples


def test_span_prob_sets_the_share_of_span_samples_and_zero_is_the_original():
    x0 = torch.zeros(2000, 64, 1, dtype=torch.long)
    t = torch.full((2000,), 1024)
    half = AbsorbingDiffusion([90], NoiseConfig(span_prob=0.5))
    _, mask = half.q_sample(x0, t, generator=torch.Generator().manual_seed(0))
    assert abs((~mask.all(dim=(1, 2))).float().mean().item() - 0.5) < 0.05
    _, mask = half.q_sample(x0, t, generator=torch.Generator().manual_seed(0), span_prob=0.0)
    assert mask.all()  # validation's call: everywhere
    _, mask = AbsorbingDiffusion([90]).q_sample(x0, t, generator=torch.Generator().manual_seed(0))
    assert mask.all()


def test_track_masking_takes_the_voices_of_an_instrument_together():
    from schmubert.tokens import instrument_index

    diffusion = AbsorbingDiffusion(mask_ids("pop909"), NoiseConfig(schedule="tracks"), instrument_index("pop909"))
    chosen = diffusion.track_selection(512, generator=torch.Generator().manual_seed(0))
    assert (chosen[:, 1:5] == chosen[:, 1:2]).all() and (chosen[:, 5:] == chosen[:, 5:6]).all()
    assert chosen.any(1).all()  # never nothing
    patterns = {tuple(row) for row in chosen[:, [0, 1, 5]].tolist()}
    assert len(patterns) == 7  # every non-empty subset of the 3 instruments
