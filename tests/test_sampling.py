import pytest
import torch
from torch import nn

from schmubert import conditioning
from schmubert.diffusion import AbsorbingDiffusion, NoiseConfig
from schmubert.sampling import draw, sample, sample_long, top_p_filter, window_starts
from schmubert.tokens import TRACK_SETS, mask_ids

TRIO = TRACK_SETS["trio"]


class CountingDenoiser(nn.Module):
    """A stand-in backbone: per-track embeddings and heads, counting its forward calls and inputs."""

    def __init__(self, tracks=TRIO, width=16):
        super().__init__()
        self.embed = nn.ModuleList(nn.Embedding(t.vocab_size, width) for t in tracks)
        self.heads = nn.ModuleList(nn.Linear(width, t.num_classes) for t in tracks)
        self.calls = 0
        self.inputs = []

    def forward(self, x_t):
        self.calls += 1
        self.inputs.append(x_t.clone())
        h = sum(e(x_t[..., k]) for k, e in enumerate(self.embed))
        return [head(h) for head in self.heads]


def make(B=2, L=64, seed=0):
    torch.manual_seed(seed)
    den = CountingDenoiser().eval()
    diff = AbsorbingDiffusion(mask_ids("trio"), NoiseConfig(timesteps=64))
    x = torch.stack([torch.randint(0, t.num_classes, (B, L)) for t in TRIO], dim=-1)
    return den, diff, x


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("order", ["random", "confidence"])
def test_known_elements_never_change_and_no_mask_remains(order):
    den, diff, x = make()
    known = conditioning.infill(x.shape, [(1, 3)])
    out = sample(den, diff, x, known, steps=16, generator=gen(), order=order)
    assert torch.equal(out[known], x[known])
    assert (out != diff.mask_value()).all()
    for k, t in enumerate(TRIO):
        assert (out[..., k] < t.num_classes).all()
    # every denoiser input also kept the known elements
    for x_t in den.inputs:
        assert torch.equal(x_t[known], x[known])


@pytest.mark.parametrize("order", ["random", "confidence"])
def test_calls_are_steps_without_reuse_and_at_most_steps_with_reuse(order):
    den, diff, x = make()
    known = conditioning.unconditional(x.shape)
    stats = {}
    sample(den, diff, x, known, steps=32, generator=gen(), order=order, reuse=False, stats=stats)
    assert den.calls == stats["calls"] == 32
    den.calls = 0
    # many more steps than elements: most steps reveal nothing, so reuse skips calls
    sample(den, diff, x[:, :16], known[:, :16], steps=200, generator=gen(), order=order, stats=stats)
    assert den.calls == stats["calls"] < 200


def test_reuse_is_exact():
    den, diff, x = make()
    known = conditioning.infill(x.shape, [(0, 2)])
    a = sample(den, diff, x, known, steps=100, generator=gen(3), reuse=True)
    b = sample(den, diff, x, known, steps=100, generator=gen(3), reuse=False)
    assert torch.equal(a, b)


def test_reuse_calls_only_when_input_changed():
    den, diff, x = make()
    sample(den, diff, x, conditioning.unconditional(x.shape), steps=300, generator=gen())
    for a, b in zip(den.inputs, den.inputs[1:], strict=False):
        assert not torch.equal(a, b)


@pytest.mark.parametrize("order", ["random", "confidence"])
def test_same_seed_same_output_other_seed_differs(order):
    den, diff, x = make()
    known = conditioning.unconditional(x.shape)
    a = sample(den, diff, x, known, steps=8, generator=gen(1), order=order)
    b = sample(den, diff, x, known, steps=8, generator=gen(1), order=order)
    c = sample(den, diff, x, known, steps=8, generator=gen(2), order=order)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_one_step_reveals_everything_in_one_call():
    den, diff, x = make()
    out = sample(den, diff, x, conditioning.unconditional(x.shape), steps=1, generator=gen())
    assert den.calls == 1 and (out != diff.mask_value()).all()


def test_everything_known_returns_input_without_calls():
    den, diff, x = make()
    out = sample(den, diff, x, torch.ones_like(x, dtype=torch.bool), steps=8, generator=gen())
    assert torch.equal(out, x) and den.calls == 0


def test_confidence_reveals_most_certain_first():
    _, diff, x = make(B=1, L=32)

    class Peaked(nn.Module):
        def __init__(self):
            super().__init__()
            self.p = nn.Parameter(torch.zeros(()))
            self.seen = []

        def forward(self, x_t):
            self.seen.append(x_t.clone())
            logits = [torch.zeros(*x_t.shape[:2], t.num_classes) for t in TRIO]
            logits[0][0, 5, 7] = 50.0
            return logits

    peaked = Peaked()
    out = sample(peaked, diff, x, conditioning.unconditional(x.shape), steps=96, generator=gen(),
                 order="confidence")
    # 96 elements over 96 steps: one per step, the certain one first
    assert (peaked.seen[1] != diff.mask_value()).sum() == 1
    assert peaked.seen[1][0, 5, 0] == 7 and out[0, 5, 0] == 7


def test_random_order_reveals_about_one_over_t():
    den, diff, x = make(B=4, L=256)
    sample(den, diff, x, conditioning.unconditional(x.shape), steps=4, generator=gen())
    masked_after_first = (den.inputs[1] == diff.mask_value()).float().mean()
    assert abs(masked_after_first - 0.75) < 0.03  # step 4 reveals 1/4


def test_top_p_keeps_nucleus_only():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    assert torch.allclose(top_p_filter(probs, 0.7), torch.tensor([[0.625, 0.375, 0.0, 0.0]]))
    assert torch.allclose(top_p_filter(probs, 0.1), torch.tensor([[1.0, 0.0, 0.0, 0.0]]))
    assert torch.equal(top_p_filter(probs, 1.0), probs)


def test_draw_follows_probabilities():
    probs = torch.tensor([0.1, 0.0, 0.6, 0.3]).expand(20000, 4)
    counts = torch.bincount(draw(probs, torch.rand(20000, generator=gen())), minlength=4).float() / 20000
    assert counts[1] == 0
    assert torch.allclose(counts, probs[0], atol=0.02)


def test_low_temperature_is_near_greedy():
    den, diff, x = make(B=1, L=16)
    known = conditioning.unconditional(x.shape)
    out = sample(den, diff, x, known, steps=1, generator=gen(), temperature=1e-4)
    logits = den(torch.where(torch.zeros_like(x, dtype=torch.bool), x, diff.mask_value()))
    for k in range(3):
        assert torch.equal(out[..., k], logits[k].argmax(-1))


def test_bad_arguments_are_clear():
    den, diff, x = make()
    known = conditioning.unconditional(x.shape)
    with pytest.raises(ValueError, match="order"):
        sample(den, diff, x, known, 4, order="fast")
    with pytest.raises(ValueError, match="temperature"):
        sample(den, diff, x, known, 4, temperature=0)
    with pytest.raises(ValueError, match="tracks"):
        sample(den, diff, x[..., :1], known[..., :1], 4)


def test_window_starts_cover_and_end_at_the_end():
    assert window_starts(64, 64, 32) == [0]
    assert window_starts(160, 64, 32) == [0, 32, 64, 96]
    assert window_starts(100, 64, 32) == [0, 32, 36]  # every window keeps at least window - hop of context


def test_long_generation_keeps_context_and_known():
    den, diff, x = make(B=1, L=160)
    known = conditioning.continuation(x.shape, keep_bars=2)
    out = sample_long(den, diff, x, known, steps=8, generator=gen(), window=64, hop=32)
    assert torch.equal(out[known], x[known])
    assert (out != diff.mask_value()).all()
    # each later window saw the previous window's generated overlap as known context
    assert len(den.inputs) > 4
    mask = diff.mask_value()

    def starts_from(context):
        return any(torch.equal(i[:, :32], context) and (i[:, 32:] == mask).all() for i in den.inputs)

    assert starts_from(out[:, 32:64]), "the second window starts from the first window's generated overlap"
    assert starts_from(out[:, 96:128]), "so does the last"


def test_lazy_softmax_path_matches_full_probabilities():
    den, diff, x = make()
    known = conditioning.infill(x.shape, [(1, 3)])
    identity = lambda probs, x_t, masked: probs  # forces the full-probability path
    a = sample(den, diff, x, known, 16, generator=gen(5), top_p=0.9)
    b = sample(den, diff, x, known, 16, generator=gen(5), top_p=0.9, guidance=identity)
    assert torch.equal(a, b)
