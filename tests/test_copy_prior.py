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


def test_a_prior_fitted_with_four_neighbours_scores_as_before():
    """Copy priors shipped before the wider context carry four context weights (bars 2 and 1 before, 1 and 2
    after) and no exact term: they load with the other neighbours at 0 and score the same."""
    legacy = CopyPriorConfig(context=[0.1, 0.2, 0.3, 0.4])
    assert legacy.context == [0.0, 0.0, 0.1, 0.2, 0.3, 0.4, 0.0, 0.0] and legacy.exact == [0.0] * 8
    g = torch.Generator().manual_seed(7)
    x_bars, _ = copy_prior.to_bars(random_piece(8, g))
    visible = torch.rand(x_bars.shape, generator=g) < 0.7
    sim = copy_prior.bar_scores(x_bars, visible, CopyParams(CopyPriorConfig(context=[0.0] * 8), 3))
    wide = copy_prior.bar_scores(x_bars, visible, CopyParams(legacy, 3))
    matches, mismatches, _ = copy_prior.bar_statistics(x_bars, visible)
    own = CopyPriorConfig().match * matches - CopyPriorConfig().mismatch * mismatches
    def shifted(a, d):  # a[:, n + d, m + d], 0 outside the piece
        out = torch.zeros_like(a)
        for n in range(a.shape[1]):
            for m in range(a.shape[2]):
                if 0 <= n + d < a.shape[1] and 0 <= m + d < a.shape[2]:
                    out[:, n, m] = a[:, n + d, m + d]
        return out

    expected = sim + sum(w * shifted(own, d) for w, d in zip([0.1, 0.2, 0.3, 0.4], (-2, -1, 1, 2), strict=True))
    torch.testing.assert_close(wide, expected)
    with pytest.raises(ValueError, match="exact needs 8"):
        CopyPriorConfig(exact=[1.0])


def test_neighbours_that_are_exact_copies_add_the_exact_weight_per_track():
    """Bars 0..5; bar 4's left neighbour (bar 3) equals bar 0 on every track, fully visible: bar 4 scores bar 1
    (whose left neighbour is bar 0) exact[-1] x 3 tracks higher than without the term; one track of bar 3 differing
    makes it x 2, one masked element of it x 2 as well (not fully visible)."""
    g = torch.Generator().manual_seed(8)
    x0 = random_piece(6, g)
    x0[:, 48:64] = x0[:, 0:16]
    x_bars, _ = copy_prior.to_bars(x0)
    visible = torch.ones_like(x_bars, dtype=torch.bool)
    visible[:, 4] = False  # bar 4: nothing visible yet
    exact = [0.0, 0.0, 0.0, 0.5, 0.0, 0.0, 0.0, 0.0]  # the neighbour one bar before

    def gain(x_b, vis):
        with_term = copy_prior.bar_scores(x_b, vis, CopyParams(CopyPriorConfig(exact=exact), 3))
        without = copy_prior.bar_scores(x_b, vis, CopyParams(CopyPriorConfig(), 3))
        return float((with_term - without)[0, 4, 1])

    assert gain(x_bars, visible) == pytest.approx(1.5)
    other = x_bars.clone()
    other[0, 3, 0, 2] = (other[0, 3, 0, 2] + 1) % 6  # bar 3's bass differs at one step
    assert gain(other, visible) == pytest.approx(1.0)
    hidden = visible.clone()
    hidden[0, 3, 5, 0] = False  # one melody step of bar 3 not yet drawn
    assert gain(x_bars, hidden) == pytest.approx(1.0)


def repeating_pieces(count: int, seed: int) -> np.ndarray:
    """``[count, 64 * 16, 3]``: each piece four random 4-bar phrases in a random order of 16 (a song's sections),
    so a bar repeats others, and which one follows from the bars before it."""
    rng = np.random.default_rng(seed)
    pieces = []
    for _ in range(count):
        phrases = rng.integers(1, 6, (4, 4 * 16, 3))
        pieces.append(np.concatenate([phrases[i] for i in rng.integers(0, 4, 16)]))
    return np.stack(pieces)


def test_source_examples_are_the_gap_bars_that_repeat_the_context():
    x = repeating_pieces(1, 0)[0]
    x[16 * 16:48 * 16] = np.arange(32 * 16 * 3).reshape(32 * 16, 3) % 5 + 100  # the gap repeats nothing ...
    x[20 * 16:21 * 16] = x[2 * 16:3 * 16]  # ... but bar 20 (bar 2)
    examples = copy_prior.source_examples(x[None])
    assert len(examples) == 4 and examples.row.tolist() == [20] * 4  # two sides, nothing / some of bar 20 visible
    left, right = examples.candidates[0], examples.candidates[2]
    assert left.nonzero().flatten().tolist() == [*range(20), *range(48, 64)]
    assert right.nonzero().flatten().tolist() == [*range(16), *range(21, 64)]
    like_bar2 = (x.reshape(64, 16, 3) == x[2 * 16:3 * 16]).all((1, 2))  # bar 2 and the bars of its phrase
    for example in range(4):
        expected = (examples.candidates[example] & torch.from_numpy(like_bar2)).nonzero().flatten().tolist()
        assert 2 in expected and examples.targets[example].nonzero().flatten().tolist() == expected
    assert (examples.matches[[0, 2], :, 4] == 0).all()  # row offset 0: nothing of bar 20 visible ...
    assert (examples.matches[[1, 3], :, 4].sum(-1) > 0).all()  # ... then some of it


def test_fitting_the_sources_learns_which_bar_comes_next():
    """A prior that weighs no neighbours picks among the bars a gap bar may repeat at chance; fitted on such songs
    it follows the bar that came after (or before) the same neighbours, on songs it was not fitted on too."""
    train, test = repeating_pieces(24, 1), repeating_pieces(8, 2)
    start = CopyPriorConfig(match=0.3, mismatch=1.0, period=[0.0] * 4)
    fitted, info = copy_prior.fit_sources(train, iterations=100, init=start)
    examples = copy_prior.source_examples(test, seed=3)
    before = copy_prior.top_source_right(CopyParams(start, 3), examples)
    after = copy_prior.top_source_right(CopyParams(fitted, 3), examples)
    assert after > before + 0.2 and after > 0.7, (before, after, info)
    assert fitted.gate_bias == start.gate_bias * 3 and fitted.gate_evidence == start.gate_evidence  # gates stay


def test_export_fits_the_choice_of_source_on_the_training_windows(tmp_path, capsys):
    torch.manual_seed(0)
    denoiser = build("conv", "trio", "tiny", seq_len=1024)
    hp = checkpoint_hparams("conv", "trio", denoiser.config, NoiseConfig(timesteps=16), 1024)
    ckpt = save_model(tmp_path / "c.ckpt", denoiser, hp)
    np.save(tmp_path / "valid.npy", repeating_pieces(2, 5).astype(np.uint16))
    np.save(tmp_path / "train.npy", repeating_pieces(6, 6).astype(np.uint16))
    plain = load_model(pretrained.export(ckpt, "a", heldout=tmp_path / "valid.npy", directory=tmp_path))
    printed = capsys.readouterr().out
    assert "no training windows" in printed and "choice of source" not in printed
    out = pretrained.export(ckpt, "b", heldout=tmp_path / "valid.npy", train=tmp_path / "train.npy",
                            directory=tmp_path)
    assert "choice of source" in capsys.readouterr().out
    fitted, likelihood_only = load_model(out).hparams["copy_prior"], plain.hparams["copy_prior"]
    assert fitted["match"] == likelihood_only["match"]  # what the choice of source cannot tell is the likelihood's
    assert fitted["exact"] != likelihood_only["exact"] and fitted["gate_bias"] != likelihood_only["gate_bias"]


class Counting(torch.nn.Module):
    """A network whose passes are counted."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner, self.passes = inner, 0

    def forward(self, x_t):
        self.passes += 1
        return self.inner(x_t)


def test_reusing_the_network_computes_it_every_nth_step_and_refreshes_the_copy_prior_each_step():
    from schmubert.sampling import sample

    torch.manual_seed(0)
    net = Counting(build("conv", "trio", "tiny", seq_len=64))
    prior = CopyPrior(net, TRIO, CopyPriorConfig(), sharpness=8.0)
    diffusion = AbsorbingDiffusion(TRIO, NoiseConfig(timesteps=64))
    x = torch.zeros(2, 64, 3, dtype=torch.long)
    x[:, ::8] = 30  # a bar repeated: the copy prior has something to propose
    known = torch.ones_like(x, dtype=torch.bool)
    known[:, 16:48] = False
    stats = {}
    out = sample(prior, diffusion, x, known, 8, torch.Generator().manual_seed(0), network_every=4, stats=stats)
    assert net.passes == 2 and stats["calls"] == 8  # the denoiser every step, its network every 4th
    assert not (out == torch.tensor(TRIO)).any() and torch.equal(out[known], x[known])
    net.passes = 0
    sample(prior, diffusion, x, known, 8, torch.Generator().manual_seed(0), network_every=100)
    sample(prior, diffusion, x, known, 8, torch.Generator().manual_seed(0), network_every=100)
    assert net.passes == 2  # each run starts with the network afresh: nothing carried from the last one
    assert prior.network_every == 1 and prior._network is None  # restored after the run
    net.passes = 0
    every = sample(prior, diffusion, x, known, 8, torch.Generator().manual_seed(0), network_every=1)
    assert net.passes == 8 and torch.equal(every, sample(prior, diffusion, x, known, 8,
                                                         torch.Generator().manual_seed(0)))


def test_reusing_the_network_needs_a_copy_prior():
    from schmubert.sampling import sample

    torch.manual_seed(0)
    net = build("conv", "trio", "tiny", seq_len=64)
    diffusion = AbsorbingDiffusion(TRIO, NoiseConfig(timesteps=64))
    x = torch.zeros(1, 64, 3, dtype=torch.long)
    known = torch.zeros_like(x, dtype=torch.bool)
    with pytest.raises(ValueError, match="needs a model with a copy prior"):
        sample(net, diffusion, x, known, 4, network_every=2)
    with pytest.raises(ValueError, match="network_every must be >= 1"):
        sample(net, diffusion, x, known, 4, network_every=0)
