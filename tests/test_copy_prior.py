"""The copy prior: other bars proposing their tokens, a proper mixture, fitted to copy, carried by checkpoints."""

import math

import numpy as np
import pytest
import torch

from schmubert import copy_prior, pretrained
from schmubert.backbones import build
from schmubert.checkpoints import checkpoint_hparams, load_model, save_model
from schmubert.copy_prior import CopyParams, CopyPrior, CopyPriorConfig
from schmubert.diffusion import AbsorbingDiffusion, NoiseConfig
from schmubert.tokens import mask_ids

TRIO = mask_ids("trio")  # [90, 90, 512]: each track's mask id, which is also its number of classes


class Uniform(torch.nn.Module):
    """A denoiser that knows nothing: equal logits for every class."""

    tracks = "a stand-in"

    def __init__(self, classes=TRIO):
        super().__init__()
        self.classes = classes
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # where the sampler and fit look for the device

    def forward(self, x_t, attrs=None):
        return [torch.zeros(*x_t.shape[:2], c) + 0 * self.anchor for c in self.classes]


def random_piece(bars: int, generator: torch.Generator) -> torch.Tensor:
    """``[1, bars * 16, 3]`` tokens, each element drawn from a handful of classes."""
    return torch.randint(0, 6, (1, bars * 16, 3), generator=generator)


def test_a_bar_repeated_elsewhere_is_copied_and_a_lone_bar_is_the_network():
    g = torch.Generator().manual_seed(0)
    x0 = random_piece(4, g)
    x0[:, 32:48] = x0[:, 0:16]  # bar 2 repeats bar 0
    x_t = x0.clone()
    x_t[0, 37, 0] = TRIO[0]  # one element of bar 2 masked
    model = CopyPrior(Uniform(), TRIO, CopyPriorConfig())
    log_p = model(x_t)
    assert log_p[0][0, 37, x0[0, 37, 0]].exp() > 0.9  # the network alone: 1/90
    everything = torch.full_like(x0, 0) + torch.tensor(TRIO)  # nothing visible: no bar to copy from
    for lp, c in zip(model(everything), TRIO, strict=True):
        torch.testing.assert_close(lp, torch.full_like(lp, -math.log(c)))


def test_the_bar_that_agrees_where_visible_outweighs_one_that_does_not():
    g = torch.Generator().manual_seed(1)
    x0 = random_piece(3, g)
    x0[:, 16:32] = x0[:, 0:16]
    x0[:, 32:48] = x0[:, 0:16]
    x0[0, 32:48, 0] = (x0[0, 0:16, 0] + 1) % 6  # bar 2 differs from bar 0 on the melody
    x_t = x0.clone()
    x_t[0, 16:24, 1] = TRIO[1]  # the first half of bar 1's bass is masked; its melody agrees with bar 0 only
    log_copy, _ = copy_prior.copy_log_probs(x_t, x_t != torch.tensor(TRIO), TRIO, CopyParams(CopyPriorConfig(), 3))
    # bar 2's bass equals bar 0's, so both proposals agree: the bass is copied whichever bar wins
    assert log_copy[1][0, 16:24].argmax(-1).tolist() == x0[0, 0:8, 1].tolist()
    x_t[0, 16:32, 0] = TRIO[0]  # now the melody of bar 1: bars 0 and 2 propose different notes
    x_t[0, 16:32, 1] = x0[0, 16:32, 1]
    log_copy, _ = copy_prior.copy_log_probs(x_t, x_t != torch.tensor(TRIO), TRIO, CopyParams(CopyPriorConfig(), 3))
    differ = x0[0, 0:16, 0] != x0[0, 32:48, 0]
    p_bar0 = log_copy[0][0, 16:32].exp().gather(-1, x0[0, 0:16, 0, None])[:, 0]
    assert differ.all() and torch.allclose(p_bar0, torch.full_like(p_bar0, 0.5), atol=1e-4)  # a tie: no evidence
    # tell it: bar 1's drums agree with bar 0's and not with bar 2's
    x0[0, 32:48, 2] = (x0[0, 0:16, 2] + 1) % 6
    x_t[0, 32:48, 2] = x0[0, 32:48, 2]
    log_copy, _ = copy_prior.copy_log_probs(x_t, x_t != torch.tensor(TRIO), TRIO, CopyParams(CopyPriorConfig(), 3))
    p_bar0 = log_copy[0][0, 16:32].exp().gather(-1, x0[0, 0:16, 0, None])[:, 0]
    assert (p_bar0 > 0.99).all()


def test_a_masked_bar_after_a_repeat_is_proposed_what_followed_the_original():
    """Bars A B C D A ?: the masked bar after the second A is proposed B when the neighbours' similarity counts."""
    g = torch.Generator().manual_seed(5)
    x0 = random_piece(6, g)
    x0[:, 64:80] = x0[:, 0:16]
    x_t = x0.clone()
    x_t[0, 80:96] = torch.tensor(TRIO)
    visible = x_t != torch.tensor(TRIO)

    def share_of_b(context):
        config = CopyPriorConfig(context=context, period=[0.0] * 4)
        log_copy, _ = copy_prior.copy_log_probs(x_t, visible, TRIO, CopyParams(config, 3))
        return log_copy[0][0, 80:96].exp().gather(-1, x0[0, 16:32, 0, None]).mean()

    assert share_of_b([0.0, 1.0, 0.0, 0.0]) > 0.99  # bar 4 equals bar 0, so bar 5 follows as bar 1 did
    assert share_of_b([0.0] * 4) < 0.5  # without: every other bar alike


def test_the_mixture_is_a_distribution_and_both_paths_agree():
    g = torch.Generator().manual_seed(2)
    x0 = random_piece(8, g).repeat(2, 1, 1)
    x0[:, 64:96] = x0[:, 0:32]
    masked = torch.rand(x0.shape, generator=g) < 0.5
    x_t = torch.where(masked, torch.tensor(TRIO), x0)
    params = CopyParams(CopyPriorConfig(), 3)
    out = CopyPrior(Uniform(), TRIO, CopyPriorConfig())(x_t)
    log_copy, gate = copy_prior.copy_log_probs(x_t, ~masked, TRIO, params)
    for k, lp in enumerate(out):
        torch.testing.assert_close(lp.logsumexp(-1), torch.zeros(lp.shape[:2]), atol=1e-5, rtol=0)
        network = torch.full_like(lp, -math.log(TRIO[k]))  # the uniform network's log-probabilities
        mixed = torch.logaddexp(gate[..., k, 0, None] + network, gate[..., k, 1, None] + log_copy[k])
        torch.testing.assert_close(lp, mixed, atol=1e-5, rtol=1e-5)  # probability space = log space
    assert (gate[..., 1].exp() > 0.5).any()  # the copy matters here: a repeated half
    of_x0, gate_x0 = copy_prior.copy_log_prob_of(x0, x_t, ~masked, params)
    gathered = torch.stack([lc.gather(-1, x0[..., k, None])[..., 0] for k, lc in enumerate(log_copy)], -1)
    torch.testing.assert_close(gathered, of_x0)
    assert torch.equal(gate, gate_x0)


def test_pieces_of_any_length_and_a_single_bar():
    g = torch.Generator().manual_seed(3)
    for steps in (16, 40, 100):
        x_t = torch.randint(0, 6, (1, steps, 3), generator=g)
        x_t[0, ::3, 0] = TRIO[0]
        out = CopyPrior(Uniform(), TRIO, CopyPriorConfig())(x_t)
        assert [lp.shape for lp in out] == [(1, steps, c) for c in TRIO]
        assert all(torch.isfinite(lp.logsumexp(-1)).all() for lp in out)


def test_fitting_learns_to_copy_pieces_made_of_one_repeated_bar():
    """Each piece is one random bar repeated 8 times; a uniform network scores log2(90) bits per melody
    element, a fitted copy prior far less. The fit starts from a prior that never copies (gate ~ 0)."""
    g = torch.Generator().manual_seed(4)
    bars = torch.randint(2, 90, (12, 16, 1), generator=g)
    pieces = bars.repeat(1, 8, 1).numpy()
    diffusion = AbsorbingDiffusion([90], NoiseConfig(timesteps=32))
    never = CopyPriorConfig(gate_bias=[-12.0], gate_evidence=0.0, gate_candidates=0.0)
    result = copy_prior.fit(Uniform([90]), diffusion, pieces, infill=(2, 4), samples_per_piece=4, iterations=40,
                            lr=0.2, init=never)
    assert result.before["full"] == pytest.approx(math.log2(90), abs=1e-3)
    assert set(result.after) == {"full", "infill"}
    assert result.after["full"] < 2.0 and result.after["infill"] < 1.0, result


def test_checkpoints_carry_a_copy_prior_and_loading_can_leave_it_out(tmp_path):
    torch.manual_seed(0)
    denoiser = build("conv", "trio", "tiny", seq_len=64)
    fitted = CopyPriorConfig(match=0.5, gate_bias=[-1.0, -2.0, -3.0])
    hp = checkpoint_hparams("conv", "trio", denoiser.config, NoiseConfig(timesteps=16), 64,
                            copy_prior=copy_prior.as_hparams(fitted))
    ckpt = save_model(tmp_path / "c.ckpt", denoiser, hp)
    model = load_model(ckpt)
    assert model.uses_copy_prior and model.denoiser.params.config() == fitted
    assert model.denoiser.num_parameters() == denoiser.num_parameters()  # what it wraps answers for it
    assert model.denoiser.tracks == denoiser.tracks and not model.conditional
    plain = load_model(ckpt, copy_prior=False)
    assert not plain.uses_copy_prior and set(plain.denoiser.state_dict()) == set(denoiser.state_dict())
    x = torch.randint(0, 6, (1, 64, 3))
    x[0, 20:30] = torch.tensor(TRIO)
    mixed, alone = model.denoiser(x), plain.denoiser(x)
    assert not torch.allclose(mixed[0][0, 20:30], torch.log_softmax(alone[0][0, 20:30], -1))


def test_export_fits_the_copy_prior_on_the_held_out_windows(tmp_path):
    torch.manual_seed(0)
    denoiser = build("conv", "trio", "tiny", seq_len=64)
    hp = checkpoint_hparams("conv", "trio", denoiser.config, NoiseConfig(timesteps=16), 64)
    ckpt = save_model(tmp_path / "c.ckpt", denoiser, hp)
    with pytest.raises(ValueError, match="--heldout"):
        pretrained.export(ckpt, "x", directory=tmp_path)
    rng = np.random.default_rng(0)
    heldout = np.tile(rng.integers(0, 6, (4, 16, 3)), (1, 4, 1)).astype(np.uint16)  # bars repeating
    np.save(tmp_path / "valid.npy", heldout)
    out = pretrained.export(ckpt, "x", heldout=tmp_path / "valid.npy", directory=tmp_path)
    model = load_model(out)
    assert model.uses_copy_prior and model.hparams["copy_prior"]["gate_bias"] != CopyPriorConfig().gate_bias
    assert not load_model(pretrained.export(ckpt, "y", directory=tmp_path, copy_prior=False)).uses_copy_prior
    assert not load_model(pretrained.export(out, "z", directory=tmp_path, copy_prior=False)).uses_copy_prior


def test_sharpening_follows_the_best_bar_and_is_undone_after_the_block():
    """Bars A A' B A: A' differs from A at melody steps 0 and 1, the last bar's melody step 0 is masked and its step
    1 agrees with A. Bar 0 proposes A's note, bar 1 another; a sharper prior gives bar 0 more of the copy."""
    g = torch.Generator().manual_seed(6)
    x0 = random_piece(4, g)
    x0[:, 16:32] = x0[:, 0:16]
    x0[0, 16:18, 0] = (x0[0, 0:2, 0] + 1) % 6
    x0[:, 48:64] = x0[:, 0:16]
    x_t = x0.clone()
    x_t[0, 48, 0] = TRIO[0]
    model = CopyPrior(Uniform(), TRIO, CopyPriorConfig())
    wrapped = torch.nn.Sequential(model)  # sharpened finds it inside other modules

    def p_of_a():
        return model(x_t)[0][0, 48, x0[0, 0, 0]].exp()

    plain = p_of_a()
    with copy_prior.sharpened(wrapped, 4.0):
        sharp = p_of_a()
    assert sharp > plain + 0.05 and model.sharpness == 1.0 and torch.equal(p_of_a(), plain)
    with pytest.raises(ValueError, match="sharpness"):
        with copy_prior.sharpened(wrapped, 0.0):
            pass
