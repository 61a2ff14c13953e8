import pytest
import torch

from schmubert import conditioning
from schmubert.backbones import build
from schmubert.diffusion import AbsorbingDiffusion
from schmubert.guidance import (
    NoteDensityGuidance,
    bar_density,
    density_error,
    one_hot_known,
    token_bar_density,
)
from schmubert.sampling import sample
from schmubert.tokens import TRACK_SETS, mask_ids

TRIO = TRACK_SETS["trio"]


def uniform_probs(B=1, L=32):
    return [torch.full((B, L, t.num_classes), 1.0 / t.num_classes) for t in TRIO]


def test_bar_density_counts_expected_onsets():
    probs = uniform_probs()
    density = bar_density(probs, TRIO, [0])
    assert density.shape == (1, 2)
    assert torch.allclose(density, torch.full((1, 2), 16 * 88 / 90))
    drums = bar_density(probs, TRIO, [2])
    assert torch.allclose(drums, torch.full((1, 2), 16 * 511 / 512))


def test_known_elements_count_with_their_value():
    probs = uniform_probs(L=16)
    x_t = torch.zeros(1, 16, 3, dtype=torch.long)
    x_t[0, :4, 0] = 40  # four known note-ons, the rest known no-event ...
    masked = torch.zeros(1, 16, 3, dtype=torch.bool)
    masked[0, 8:, 0] = True  # ... except 8 masked steps
    density = bar_density(one_hot_known(probs, x_t, masked), TRIO, [0])
    assert torch.allclose(density, torch.tensor([[4 + 8 * 88 / 90]]))


def test_token_bar_density_and_error():
    x = torch.zeros(32, 3, dtype=torch.long)
    x[[0, 4, 8], 0] = 50
    x[[2], 0] = 1  # a note-off is no onset
    x[[0, 16, 17], 2] = 3
    assert token_bar_density(x, TRIO, [0]).tolist() == [3, 0]
    assert token_bar_density(x, TRIO, [0, 2]).tolist() == [4, 2]
    err = density_error(x, TRIO, 3)
    assert err["mse"] == pytest.approx(4.5) and err["exact"] == 0.5


@pytest.mark.parametrize("update", ["multiplicative", "additive"])
def test_step_moves_probabilities_toward_target(update):
    probs = uniform_probs(L=16)
    x_t = torch.tensor(mask_ids("trio")).expand(1, 16, 3)
    masked = torch.ones(1, 16, 3, dtype=torch.bool)
    scale = 0.5 if update == "multiplicative" else 0.01
    guide = NoteDensityGuidance(TRIO, target=4.0, scale=scale, update=update)
    moved = guide(probs, x_t, masked)
    before, after = bar_density(probs, TRIO, [0]), bar_density(moved, TRIO, [0])
    assert after.item() < before.item()
    assert torch.allclose(moved[0].sum(-1), torch.ones(1, 16)) and (moved[0] >= 0).all()
    assert torch.equal(moved[1], probs[1])  # unguided tracks untouched
    if update == "multiplicative":  # the relative odds of pitches are kept
        ratio = moved[0][0, 0, 2:] / probs[0][0, 0, 2:]
        assert torch.allclose(ratio, ratio[0].expand_as(ratio))


def test_multiplicative_step_stays_finite_for_a_large_scale():
    probs = uniform_probs(L=16)
    x_t = torch.tensor(mask_ids("trio")).expand(1, 16, 3)
    masked = torch.ones(1, 16, 3, dtype=torch.bool)
    moved = NoteDensityGuidance(TRIO, target=0.0, scale=10.0)(probs, x_t, masked)[0]
    assert torch.isfinite(moved).all() and torch.allclose(moved.sum(-1), torch.ones(1, 16))
    assert bar_density([moved], TRIO[:1], [0]).item() < 1.0  # pushed hard toward no onsets


def test_bad_options():
    with pytest.raises(ValueError, match="outside"):
        NoteDensityGuidance(TRIO, 8, track_ids=(3,))
    with pytest.raises(ValueError, match="update"):
        NoteDensityGuidance(TRIO, 8, update="sideways")


@pytest.mark.parametrize("target", [8.0, 3.0])
def test_guidance_moves_sampled_density_to_target(target):
    """On an untrained tiny transformer (its melody is ~15.6 onsets per bar unguided)."""
    torch.manual_seed(0)
    denoiser = build("transformer", "trio", "tiny").eval()
    diffusion = AbsorbingDiffusion(mask_ids("trio"))
    x = torch.zeros(2, 128, 3, dtype=torch.long)
    known = conditioning.unconditional(x.shape)
    unguided = sample(denoiser, diffusion, x, known, 32, torch.Generator().manual_seed(0))
    guided = sample(denoiser, diffusion, x, known, 32, torch.Generator().manual_seed(0),
                    guidance=NoteDensityGuidance(TRIO, target))
    before, after = density_error(unguided, TRIO, target), density_error(guided, TRIO, target)
    assert before["mse"] > 20
    assert after["mse"] < 1.0 and abs(after["mean_density"] - target) < 0.6
