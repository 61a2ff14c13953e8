import math

import pytest
import torch
from torch import nn

from schmubert import attributes as A
from schmubert import conditioning
from schmubert.diffusion import REVEAL_SCHEDULES, AbsorbingDiffusion, NoiseConfig, masked_fraction
from schmubert.sampling import (
    ORDERS,
    SamplerOptions,
    context_distance,
    draw,
    noise_levels,
    plan_steps,
    predict_logits,
    sample,
    sample_long,
    top_p_filter,
    window_starts,
)
from schmubert.tokens import TRACK_SETS, mask_ids, tokens_to_midi

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


@pytest.mark.parametrize("order", ORDERS)
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


@pytest.mark.parametrize("order", ORDERS)
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


@pytest.mark.parametrize("order", ORDERS)
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


class Recording(nn.Module):
    """Zero logits edited in place by ``shape(logits)``; records every ``x_t`` it sees in ``seen``."""

    def __init__(self, shape):
        super().__init__()
        self.p = nn.Parameter(torch.zeros(()))
        self.shape, self.seen = shape, []

    def forward(self, x_t):
        self.seen.append(x_t.clone())
        logits = [torch.zeros(*x_t.shape[:2], t.num_classes) for t in TRIO]
        self.shape(logits)
        return logits


def test_confidence_reveals_most_certain_first():
    _, diff, x = make(B=1, L=32)

    def peak(logits):
        logits[0][0, 5, 7] = 50.0

    peaked = Recording(peak)
    out = sample(peaked, diff, x, conditioning.unconditional(x.shape), steps=96, generator=gen(),
                 order="confidence")
    # 96 elements over 96 steps: one per step, the certain one first
    assert (peaked.seen[1] != diff.mask_value()).sum() == 1
    assert peaked.seen[1][0, 5, 0] == 7 and out[0, 5, 0] == 7


def test_context_distance_counts_bars_to_the_nearest_bar_with_anything_known():
    known = torch.zeros(2, 80, 2, dtype=torch.bool)  # 5 bars
    known[0, :16, 0] = True  # bar 0, one track
    known[0, 70, 1] = True  # one element of bar 4
    assert context_distance(known)[0, ::16, 0].tolist() == [0, 1, 2, 1, 0]
    assert torch.equal(context_distance(known)[..., 0], context_distance(known)[..., 1])  # any track counts
    assert context_distance(known)[1].unique().tolist() == [5]  # nothing known: one level, the random order


def test_outside_in_fills_the_bars_next_to_the_context_first():
    den, diff, x = make(B=1, L=80)  # 5 bars; bars 1..3 infilled: 3 bars x 16 steps x 3 tracks = 144 elements
    known = conditioning.infill(x.shape, [(1, 4)])
    mask = diff.mask_value()
    out = sample(den, diff, x, known, steps=12, generator=gen(), order="outside-in", reuse=False,
                 schedule="linear")
    revealed = [(x_t != mask).view(5, 16, 3) for x_t in den.inputs[1:]] + [(out != mask).view(5, 16, 3)]
    for now in revealed:  # 12 elements per step: bars 1 and 3 (96) in the first 8 steps, bar 2 only after
        edges = now[[1, 3]].float().mean()
        assert not now[2].any() or edges == 1.0
    assert revealed[7][[1, 3]].all() and not revealed[7][2].any()
    assert torch.equal(out[known], x[known]) and (out != mask).all()


def test_random_order_reveals_about_one_over_t():
    den, diff, x = make(B=4, L=256)
    sample(den, diff, x, conditioning.unconditional(x.shape), steps=4, generator=gen(), schedule="linear")
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
    with pytest.raises(ValueError, match="schedule"):
        sample(den, diff, x, known, 4, schedule="zigzag")
    with pytest.raises(ValueError, match="remask"):
        sample(den, diff, x, known, 4, remask="sometimes")
    with pytest.raises(ValueError, match="re-masking rate"):
        sample(den, diff, x, known, 8, remask_loop=0.25)
    with pytest.raises(ValueError, match="fewer than 2"):
        sample(den, diff, x, known, 4, remask="cap", remask_loop=0.75)


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


# --- the original sampler's output, pinned ------------------------------------------------------------------


class Fixed(nn.Module):
    """Logits a fixed function of position, class and input: no weights drawn, so the pin holds on any seed."""

    def __init__(self):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))

    def forward(self, x_t):
        B, L, K = x_t.shape
        pos = torch.arange(L, dtype=torch.float32).view(1, L, 1)
        ctx = (x_t.float().sum(-1, keepdim=True) % 97) / 97  # [B, L, 1]
        out = []
        for k, t in enumerate(TRIO):
            c = torch.arange(t.num_classes, dtype=torch.float32).view(1, 1, -1)
            out.append(3 * torch.sin(0.37 * c * (k + 1) + 0.11 * pos + 2 * ctx) + 0.5 * torch.cos(0.05 * c))
        return out


PINNED = {  # main@322a14b outputs of Fixed, 2 x 16 x 3 tokens flattened, by (order, top_p, steps)
    ("random", 1.0, 8): (
        "0 0 0 3 4 5 6 8 10 9 12 15 85 9 12 1 42 470 1 52 373 67 17 63 89 19 141 16 75 63 47 40 476 33 44 486 "
        "15 48 101 33 52 158 81 56 496 14 60 481 48 64 80 51 68 85 54 72 90 57 76 95 65 17 375 3 43 39 70 2 "
        "238 17 86 356 86 32 397 18 77 118 19 14 103 83 18 141 34 22 90 82 26 418 17 30 503 66 34 327 "
    ),
    ("random", 1.0, 200): (
        "0 0 0 3 4 5 6 8 10 9 12 15 18 1 237 36 50 356 34 10 124 53 76 29 17 18 442 87 44 396 18 40 480 16 44 "
        "180 63 48 118 64 52 412 14 56 345 83 60 83 48 64 80 51 68 85 54 72 90 57 76 95 2 7 233 84 51 137 69 "
        "0 498 0 76 159 0 17 418 0 74 181 64 14 238 64 18 40 14 22 503 13 26 458 33 30 236 82 34 260 "
    ),
    ("random", 0.9, 8): (
        "0 0 0 3 4 5 6 8 10 9 12 15 86 8 12 1 41 470 1 51 373 67 16 63 86 18 141 16 75 62 34 40 476 33 44 486 "
        "15 48 101 33 52 158 81 56 497 13 60 482 48 64 80 51 68 85 54 72 90 57 76 95 56 17 379 3 42 39 70 2 "
        "239 16 86 357 86 31 397 18 77 118 18 14 107 83 18 136 34 22 90 82 26 418 17 30 503 66 34 328 "
    ),
    ("random", 0.9, 200): (
        "0 0 0 3 4 5 6 8 10 9 12 15 17 0 238 36 50 356 34 9 124 52 76 29 17 17 447 86 43 396 17 40 480 16 44 "
        "180 63 48 118 63 52 412 14 56 345 83 60 84 48 64 80 51 68 85 54 72 90 57 76 95 2 2 233 84 44 136 69 "
        "0 502 0 76 159 0 17 418 0 74 181 65 14 238 52 18 35 14 22 503 13 26 458 33 30 236 82 34 260 "
    ),
    ("confidence", 1.0, 8): (
        "0 0 0 3 4 5 6 8 10 9 12 15 38 77 221 53 35 46 34 11 379 35 44 261 36 19 135 81 59 209 28 40 235 80 "
        "44 129 33 48 379 14 52 123 47 56 11 47 60 118 48 64 80 51 68 85 54 72 90 57 76 95 55 9 487 38 9 39 "
        "85 43 498 66 51 255 1 26 383 1 18 475 86 14 509 81 18 244 13 22 373 81 26 277 15 30 197 30 34 111 "
    ),
    ("confidence", 1.0, 200): (
        "0 0 0 3 4 5 6 8 10 9 12 15 65 52 131 82 70 497 84 70 379 72 1 381 49 42 221 33 51 510 31 40 45 16 44 "
        "208 15 48 39 14 52 123 32 56 379 47 60 197 48 64 80 51 68 85 54 72 90 57 76 95 14 35 254 18 25 373 "
        "35 43 261 85 35 232 67 1 111 84 1 487 20 14 118 50 18 277 66 22 11 29 26 474 49 30 244 14 34 129 "
    ),
    ("confidence", 0.9, 8): (
        "0 0 0 3 4 5 6 8 10 9 12 15 33 19 226 52 34 41 36 10 379 34 69 260 47 52 131 82 44 209 18 40 129 80 "
        "44 232 32 48 379 14 52 123 47 56 11 46 60 118 48 64 80 51 68 85 54 72 90 57 76 95 53 9 487 36 9 255 "
        "0 36 34 85 43 379 86 25 476 1 17 509 83 14 498 66 18 244 13 22 373 81 26 277 15 30 202 30 34 111 "
    ),
    ("confidence", 0.9, 200): (
        "0 0 0 3 4 5 6 8 10 9 12 15 37 1 380 84 69 39 82 69 379 65 43 221 64 76 497 33 44 131 31 40 40 16 44 "
        "213 14 48 508 14 52 123 31 56 379 47 60 197 48 64 80 51 68 85 54 72 90 57 76 95 14 34 373 83 19 255 "
        "66 36 476 85 36 11 1 1 260 52 17 118 19 14 491 34 18 277 47 22 111 18 26 129 48 30 248 14 34 236 "
    ),
}


def pinned_case():
    B, L = 2, 16
    x = torch.stack([(torch.arange(B * L).view(B, L) * (k + 3)) % t.num_classes for k, t in enumerate(TRIO)], -1)
    known = torch.zeros_like(x, dtype=torch.bool)
    known[:, :4] = True
    known[:, 10:, 1] = True
    return x, known, AbsorbingDiffusion(mask_ids("trio"), NoiseConfig(timesteps=64))


@pytest.mark.parametrize("case", sorted(PINNED))
def test_the_linear_schedule_reproduces_the_original_sampler_bit_for_bit(case):
    order, top_p, steps = case  # the defaults before issue 44 but for the order (cosine is the default now)
    x, known, diff = pinned_case()
    out = sample(Fixed(), diff, x, known, steps, gen(7), order=order, top_p=top_p, schedule="linear")
    assert out.flatten().tolist() == [int(v) for v in PINNED[case].split()]
    # the same with the options spelled out: linear schedule, re-masking off
    opts = SamplerOptions(order=order, top_p=top_p, schedule="linear", remask="off")
    assert torch.equal(sample(Fixed(), diff, x, known, steps, gen(7), opts), out)


# --- unmasking schedules ------------------------------------------------------------------------------------


@pytest.mark.parametrize("schedule", REVEAL_SCHEDULES)
@pytest.mark.parametrize("steps", [1, 2, 7, 64])
def test_every_schedule_reveals_everything_by_the_last_step(schedule, steps):
    rates = [AbsorbingDiffusion.reveal_probability(s, steps, schedule) for s in range(steps, 0, -1)]
    assert rates[-1] == 1.0 and all(0 < r <= 1 for r in rates)
    n = torch.tensor([1000, 7, 0])
    left = n.clone()
    for s in range(steps, 0, -1):
        left -= AbsorbingDiffusion.reveal_count(left, s, steps, schedule)
        assert (left >= 0).all()
    assert (left == 0).all()
    for order in ORDERS:
        den, diff, x = make(B=2, L=32)
        out = sample(den, diff, x, conditioning.unconditional(x.shape), steps, gen(), order=order,
                     schedule=schedule, reuse=False)
        assert (out != diff.mask_value()).all()


def test_schedules_follow_their_masked_fraction():
    # remaining time 3/4 after the first of 4 steps: linear 0.75, cosine sin(3 pi / 8), square 1 - 1/16
    expected = {"linear": 0.75, "cosine": 0.9239, "square": 0.9375}
    for schedule, fraction in expected.items():
        assert masked_fraction(0.75, schedule) == pytest.approx(fraction, abs=1e-4)
        den, diff, x = make(B=4, L=256)
        sample(den, diff, x, conditioning.unconditional(x.shape), steps=4, generator=gen(), schedule=schedule)
        masked_after_first = (den.inputs[1] == diff.mask_value()).float().mean()
        assert abs(masked_after_first - fraction) < 0.03
        assert masked_fraction(0.0, schedule) == 0.0 and masked_fraction(1.0, schedule) == 1.0


def test_schedule_is_orthogonal_to_order():
    den, diff, x = make(B=1, L=64)  # 192 elements; cosine's first of 8 steps reveals 192 (1 - sin(7 pi/16)) = 4
    sample(den, diff, x, conditioning.unconditional(x.shape), 8, gen(), order="confidence", schedule="cosine")
    assert (den.inputs[1] != diff.mask_value()).sum() == 4


# --- ReMDM re-masking ---------------------------------------------------------------------------------------

REMASKING = [dict(remask="cap", remask_eta=0.1), dict(remask="rescale", remask_eta=0.5),
             dict(remask="cap", remask_eta=0.1, remask_order="confidence"),
             dict(remask="cap", remask_eta=0.2, remask_loop=0.25, remask_loop_level=0.2)]


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("options", REMASKING, ids=lambda o: "-".join(str(v) for v in o.values()))
def test_remasking_never_changes_a_known_element_and_leaves_no_mask(order, options):
    den, diff, x = make(B=2, L=64)
    known = conditioning.infill(x.shape, [(1, 3)]) & ~conditioning.regenerate_tracks(x.shape, [2])
    stats = {}
    out = sample(den, diff, x, known, 32, gen(), order=order, stats=stats, **options)
    assert stats["remasked"] > 0, "re-masking took place"
    assert torch.equal(out[known], x[known])
    assert (out != diff.mask_value()).all()
    mask = diff.mask_value()
    generated_then_masked = torch.zeros_like(known)
    for before, after in zip(den.inputs, den.inputs[1:], strict=False):
        assert torch.equal(after[known], x[known])
        generated_then_masked |= (before != mask) & (after == mask)
    assert generated_then_masked.any() and not generated_then_masked[known].any()


def test_remasking_off_draws_nothing_extra_and_zero_eta_changes_nothing_but_the_rates():
    den, diff, x = make()
    known = conditioning.unconditional(x.shape)
    stats = {}
    sample(den, diff, x, known, 16, gen(), remask="cap", remask_eta=0.0, stats=stats)
    assert stats["remasked"] == 0


def test_plan_keeps_the_schedule_in_expectation():
    opts = SamplerOptions(remask="cap", remask_eta=0.05)
    masked = 1.0
    plan = plan_steps(AbsorbingDiffusion(mask_ids("trio")), 16, opts)
    levels, _ = noise_levels(16, opts)
    for step, after in zip(plan, levels[1:], strict=True):
        masked = masked * (1 - step.reveal) + (1 - masked) * step.remask  # expected masked fraction
        assert masked == pytest.approx(after, abs=1e-9)
        assert step.remask <= 0.05
    assert plan[0].remask == 0.0 and plan[-1].remask == 0.0 and plan[-1].reveal == 1.0


def test_loop_holds_the_masked_fraction_and_remasks_only_there():
    opts = SamplerOptions(remask="cap", remask_eta=0.1, remask_loop=0.25, remask_loop_level=0.3)
    levels, looping = noise_levels(32, opts)
    assert len(levels) == 33 and sum(looping) == 8
    assert all(a == b == 0.3 for a, b, on in zip(levels, levels[1:], looping, strict=False) if on)
    plan = plan_steps(AbsorbingDiffusion(mask_ids("trio")), 32, opts)
    assert [s.remask > 0 for s in plan] == looping
    for s in plan:
        if s.remask:
            assert s.remask == 0.1 and s.reveal == pytest.approx(0.1 * 0.7 / 0.3)


def test_confidence_remasking_picks_the_least_probable_draws():
    _, diff, x = make(B=1, L=32)

    def unsure(logits):  # certain everywhere except element (3, track 0)
        for lg in logits:
            lg[..., 1] = 30.0
        logits[0][0, 3, 1] = 0.0

    den = Recording(unsure)
    sample(den, diff, x, conditioning.unconditional(x.shape), 48, gen(), remask="cap", remask_eta=0.02,
           remask_order="confidence", order="random")
    mask = diff.mask_value()
    remasked = [(a != mask) & (b == mask) for a, b in zip(den.seen, den.seen[1:], strict=False)]
    steps_with_remasks = 0
    for before, r in zip(den.seen, remasked, strict=False):
        if r.any() and before[0, 3, 0] != mask[0]:  # whenever it was generated, the unsure one goes first
            assert r[0, 3, 0]
            steps_with_remasks += 1
    assert steps_with_remasks >= 2


def test_linear_confidence_count_is_the_original_division():
    # the original confidence order revealed round(n / step) in float32; a product with 1/step differs at some
    # halves (e.g. n = 91, step = 14), which would change outputs
    n = torch.arange(0, 3 * 1024 + 1)
    differs = 0
    for step in range(2, 257):
        count = AbsorbingDiffusion.reveal_count(n, step)
        assert torch.equal(count, torch.round(n.float() / step).long())
        differs += int((count != torch.round(n.float() * (1.0 / step)).long()).sum())
    assert differs > 0


def test_mask_ids_marked_known_are_filled_too():
    den, diff, x = make()
    x = x.clone()
    x[0, 3] = diff.mask_value()  # a caller (an API client) sends mask ids in the "known" part
    out = sample(den, diff, x, torch.ones_like(x, dtype=torch.bool), steps=4, generator=gen())
    assert not (out == diff.mask_value()).any()
    keep = torch.ones_like(x, dtype=torch.bool)
    keep[0, 3] = False
    assert torch.equal(out[keep], x[keep])


# --- attributes and classifier-free guidance ----------------------------------------------------------------


class KeyedDenoiser(CountingDenoiser):
    """A conditional stand-in: the key's embedding is added to every step; records the attributes it is told."""

    def __init__(self):
        super().__init__()
        self.key = nn.Embedding(A.KEY_IDS, 16)
        self.told = []
        self.tracks = TRIO  # as backbones have them: what repair computes attributes with

    def forward(self, x_t, attrs=None):
        self.calls += 1
        self.inputs.append(x_t.clone())
        self.told.append(attrs)
        h = sum(e(x_t[..., k]) for k, e in enumerate(self.embed))
        if attrs is not None:
            h = h + self.key(attrs.key)[:, None]
        return [head(h) for head in self.heads]


def keyed(B=2, L=64, seed=0):
    _, diff, x = make(B, L, seed)
    torch.manual_seed(seed)
    return KeyedDenoiser().eval(), diff, x


D_MINOR = A.parse_key("D:minor")


def told(B, L, key=D_MINOR):
    return A.Attributes.null(B, L // 16, 3).with_key(key)


@pytest.mark.parametrize("order", ORDERS)
def test_guidance_scale_zero_is_exactly_the_conditional_sampler(order):
    den, diff, x = keyed()
    known = conditioning.infill(x.shape, [(1, 3)])
    attrs = told(2, 64)
    guided = sample(den, diff, x, known, 16, generator=gen(4), attributes=attrs, cfg_scale=0.0, order=order,
                    repair=0)  # repair draws again what misses its key: a second pass the plain model has not
    assert all(t.shape == (2, 4, 3) for t in den.told)  # one pass of B per step, never 2B
    plain = sample(Conditioned(den, attrs), diff, x, known, 16, generator=gen(4), order=order)
    assert torch.equal(guided, plain)


@pytest.mark.parametrize("interval", [0.0, 0.25, 0.5, 1.0])
def test_guidance_interval_guides_only_the_first_steps(interval):
    den, diff, x = keyed()
    known = conditioning.infill(x.shape, [(1, 3)])
    stats = {}
    sample(den, diff, x, known, 16, generator=gen(4), attributes=told(2, 64), cfg_scale=2.0, repair=0,
           cfg_interval=interval, reuse=False, stats=stats)
    batches = [t.shape[0] for t in den.told]
    guided = math.ceil(16 * interval)
    assert batches == [4] * guided + [2] * (16 - guided)  # [x_t; x_t] while guided, then B pieces
    assert stats["calls"] == 16


def test_guidance_interval_zero_is_the_conditional_sampler():
    den, diff, x = keyed()
    known = conditioning.infill(x.shape, [(1, 3)])
    attrs = told(2, 64)
    none = sample(den, diff, x, known, 16, generator=gen(4), attributes=attrs, cfg_scale=2.0, cfg_interval=0.0,
                  repair=0)
    plain = sample(den, diff, x, known, 16, generator=gen(4), attributes=attrs, cfg_scale=0.0, repair=0)
    assert torch.equal(none, plain)
    with pytest.raises(ValueError, match="cfg_interval"):
        sample(den, diff, x, known, 4, generator=gen(4), attributes=attrs, cfg_scale=2.0, cfg_interval=1.5)


class Conditioned(nn.Module):
    """The conditional model with fixed attributes, seen by the sampler as an unconditional denoiser."""

    def __init__(self, den, attrs):
        super().__init__()
        self.den, self.attrs = den, attrs

    def forward(self, x_t):
        return self.den(x_t, self.attrs)


@pytest.mark.parametrize("order", ORDERS)
def test_known_tokens_never_change_under_guidance(order):
    den, diff, x = keyed()
    known = conditioning.infill(x.shape, [(1, 3)])
    out = sample(den, diff, x, known, 12, generator=gen(), attributes=told(1, 64), cfg_scale=3.0, order=order,
                 cfg_interval=1.0)
    assert torch.equal(out[known], x[known]) and (out != diff.mask_value()).all()
    for x_t, attrs in zip(den.inputs, den.told, strict=True):
        assert x_t.shape[0] == 4 and torch.equal(x_t[:2], x_t[2:])  # one batched pass: [x_t; x_t]
        assert attrs.key.tolist() == [14, 14, A.KEY_NULL, A.KEY_NULL]  # [told; null]
        assert torch.equal(x_t[:2][known], x[known])


def test_guided_logits_mix_conditional_and_unconditional():
    den, _, x = keyed()
    attrs = told(2, 64)
    w = 2.5
    guided = predict_logits(den, x, attrs, w)
    cond, uncond = den(x, attrs), den(x, attrs.null_like())
    for g, c, u in zip(guided, cond, uncond, strict=True):
        torch.testing.assert_close(g, c + w * (c - u))
    assert all(torch.equal(a, b) for a, b in zip(predict_logits(den, x, None, w), den(x), strict=True))


def test_guided_kinds_null_only_themselves_in_the_unconditional_half():
    den, diff, x = keyed()
    attrs = told(2, 64)
    attrs.onsets[:, :, 0] = 5  # melody asked for 5 onsets per bar, and D minor
    sample(den, diff, x, conditioning.unconditional(x.shape), 6, generator=gen(), attributes=attrs,
           cfg_scale=2.0, cfg_kinds="key", cfg_interval=1.0)
    for told_now in den.told:
        assert told_now.key.tolist() == [14, 14, A.KEY_NULL, A.KEY_NULL]  # the key is guided
        assert (told_now.onsets[:, :, 0] == 5).all()  # the onsets condition both halves
    den.told.clear()
    sample(den, diff, x, conditioning.unconditional(x.shape), 6, generator=gen(), attributes=attrs,
           cfg_scale=2.0, cfg_kinds="onsets,register", cfg_interval=1.0)
    assert all(t.key.tolist() == [14] * 4 and (t.onsets[2:] == A.ONSETS_NULL).all() for t in den.told)


def test_guidance_is_skipped_when_no_guided_kind_is_told():
    den, diff, x = keyed()
    attrs = A.Attributes.null(2, 4, 3)
    attrs.onsets[:, :, 0] = 5  # only onsets told, only the key guided: one pass of B per step
    sample(den, diff, x, conditioning.unconditional(x.shape), 6, generator=gen(), attributes=attrs,
           cfg_scale=2.0, cfg_kinds="key")
    assert den.told and all(t.shape[0] == 2 for t in den.told)
    with pytest.raises(ValueError, match="cfg_kinds 'tempo'"):
        sample(den, diff, x, conditioning.unconditional(x.shape), 6, attributes=attrs, cfg_kinds="tempo")


def test_a_model_s_defaults_fill_only_what_was_left_unset():
    from schmubert.sampling import DEFAULT_CFG_SCALE, SamplerOptions

    assert SamplerOptions().guidance_scale() == DEFAULT_CFG_SCALE == 2.0
    shipped = {"cfg_scale": 1.5, "not_a_field": 1}
    assert SamplerOptions().with_defaults(shipped).guidance_scale() == 1.5
    assert SamplerOptions(cfg_scale=0.0).with_defaults(shipped).guidance_scale() == 0.0  # the user's wins
    assert SamplerOptions(cfg_scale=3.0).with_defaults({}).cfg_scale == 3.0


def test_attributes_must_fit_the_piece():
    den, diff, x = keyed()
    with pytest.raises(ValueError, match="do not fit pieces"):
        sample(den, diff, x, conditioning.unconditional(x.shape), 4, attributes=told(2, 128))
    with pytest.raises(ValueError, match="cfg_scale must be finite"):
        sample(den, diff, x, conditioning.unconditional(x.shape), 4, attributes=told(2, 64),
               cfg_scale=float("nan"))


def test_long_generation_tells_each_window_its_own_bars():
    den, diff, x = keyed(B=1, L=160)
    attrs = told(1, 160)
    attrs.onsets[0, :, 0] = torch.arange(10)  # bar i of the melody asks for i onsets
    sample_long(den, diff, x, conditioning.unconditional(x.shape), 4, generator=gen(), window=64, hop=32,
                attributes=attrs)
    windows = {tuple(a.onsets[0, :, 0].tolist()) for a in den.told}
    assert windows == {(0, 1, 2, 3), (2, 3, 4, 5), (4, 5, 6, 7), (6, 7, 8, 9)}


def redrawn(told_attrs, first, known):
    """The generated elements of ``first`` that repair must draw again: its bars (and pieces) that miss."""
    key_miss, bar_miss = A.misses(told_attrs, first, TRIO)
    bars = bar_miss.repeat_interleave(16, dim=1)[:, :first.shape[1]]
    return ~known & (key_miss[:, None, None] | bars)


def test_repair_draws_again_only_the_generated_elements_that_missed():
    den, diff, x = keyed(B=4, L=64)
    known = conditioning.infill(x.shape, [(1, 3)])
    attrs = told(4, 64)
    attrs.onsets[:, :, 0] = 3
    first = sample(den, diff, x, known, 8, generator=gen(1), attributes=attrs, cfg_scale=0.0, repair=0)
    stats = {}
    again = sample(den, diff, x, known, 8, generator=gen(1), attributes=attrs, cfg_scale=0.0, repair=1,
                   tracks=TRIO, stats=stats)
    redo = redrawn(attrs, first, known)
    assert redo.any() and stats["repaired"] == int(redo.sum())
    assert torch.equal(again[~redo], first[~redo])  # the same first pass; known and followed bars stay
    assert not torch.equal(again[redo], first[redo])
    assert torch.equal(again[known], x[known])


class Coin(nn.Module):
    """Each melody step a note-on of C4 or a hold, at even odds, whatever it is told: 8 +- 2 onsets per bar."""

    def __init__(self):
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(()))

    def forward(self, x_t, attrs=None):
        logits = [torch.full((*x_t.shape[:2], t.num_classes), -1e9) for t in TRIO]
        logits[0][..., [0, 60 - 19]] = 0.0
        for lg in logits[1:]:
            lg[..., 0] = 0.0
        return logits


def test_repair_rounds_bring_bars_to_their_told_onsets():
    diff = AbsorbingDiffusion(mask_ids("trio"), NoiseConfig(timesteps=64))
    x = torch.zeros(4, 256, 3, dtype=torch.long)
    attrs = A.Attributes.null(4, 16, 3)
    attrs.onsets[:, :, 0] = 8

    def followed(rounds):
        out = sample(Coin(), diff, x, conditioning.unconditional(x.shape), 4, generator=gen(), attributes=attrs,
                     repair=rounds, tracks=TRIO)
        return float((~A.misses(attrs, out, TRIO)[1][..., 0]).float().mean())

    # P(|Binomial(16, 1/2) - 8| <= 1) = 0.55; each round draws the misses again: 1 - 0.45^4 = 0.96 after 3
    assert followed(0) < 0.75 < 0.85 < followed(3)


class Trackless(nn.Module):
    """A conditional denoiser that does not say its tracks."""

    def __init__(self, den):
        super().__init__()
        self.den = den

    def forward(self, x_t, attrs=None):
        return self.den(x_t, attrs)


def test_repair_needs_the_tracks_and_sane_rounds():
    den, diff, x = keyed()
    with pytest.raises(ValueError, match="repair needs the model's tracks"):
        sample(Trackless(den), diff, x, conditioning.unconditional(x.shape), 4, attributes=told(2, 64), repair=1)
    sample(Trackless(den), diff, x, conditioning.unconditional(x.shape), 4, attributes=told(2, 64), repair=0)
    with pytest.raises(ValueError, match="repair must be >= 0"):
        sample(den, diff, x, conditioning.unconditional(x.shape), 4, attributes=told(2, 64), repair=-1)


def test_repair_holds_only_the_repaired_kinds():
    den, diff, x = keyed(B=4, L=64)
    known = conditioning.infill(x.shape, [(1, 3)])
    attrs = told(4, 64)  # D minor, which random tokens rarely are
    first = sample(den, diff, x, known, 8, generator=gen(1), attributes=attrs, cfg_scale=0.0, repair=0)
    assert A.misses(attrs, first, TRIO)[0].any()
    stats = {}
    same = sample(den, diff, x, known, 8, generator=gen(1), attributes=attrs, cfg_scale=0.0, repair=2,
                  repair_kinds="onsets,register", tracks=TRIO, stats=stats)
    assert torch.equal(same, first) and stats["repaired"] == 0
    with pytest.raises(ValueError, match="repair_kinds 'tempo'"):
        sample(den, diff, x, known, 8, attributes=attrs, repair=1, repair_kinds="tempo", tracks=TRIO)
    assert SamplerOptions(repair_kinds="none").repaired_kinds() == ()
    assert SamplerOptions().repaired_kinds() == A.KINDS


# --- polyphonic instruments --------------------------------------------------------------------------------


def test_sounding_follows_holds_until_an_event():
    from schmubert.sampling import sounding

    c = 60 - 19
    row = torch.tensor([[0, c, 0, 0, 1, 0, c + 2, 90, 0]])  # 90 = mask: ends the note, sounds nothing
    assert sounding(row).tolist() == [[0, c, c, c, 0, 0, c + 2, 0, 0]]


def test_a_voice_is_never_offered_a_pitch_another_voice_sounds():
    from schmubert.backbones import build
    from schmubert.sampling import exclusive_pitches

    tracks = "melody,piano:3"
    x_t = torch.full((1, 4, 4), 90)
    x_t[0, 0, 1] = 60 - 19  # piano voice 0 strikes C4 at step 0 and holds it
    x_t[0, 1:, 1] = 0
    uniform = lambda k, where: torch.full((int(where.sum()), 90), 1 / 90)
    rows = exclusive_pitches(uniform, x_t, [[1, 2, 3]])
    everywhere = torch.ones(1, 4, dtype=torch.bool)
    p = rows(2, everywhere)
    assert (p[:, 60 - 19] == 0).all() and torch.allclose(p.sum(-1), torch.ones(4))
    assert (rows(0, everywhere)[:, 60 - 19] > 0).all()  # the melody is another instrument
    assert (rows(1, everywhere)[:, 60 - 19] > 0).all()  # the voice that sounds it may go on
    # an untrained model's piece, written to MIDI, never sounds one pitch twice at once in the piano
    model = build("conv", tracks, "tiny", seq_len=64).eval()
    out = sample(model, AbsorbingDiffusion(mask_ids(tracks)), torch.zeros(2, 64, 4, dtype=torch.long),
                 torch.zeros(2, 64, 4, dtype=torch.bool), 4, torch.Generator().manual_seed(0))
    piano = tokens_to_midi(out[0].numpy(), tracks).instruments[1]
    assert len(piano.notes) > 10
    for pitch in {n.pitch for n in piano.notes}:
        spans = sorted((n.start, n.end) for n in piano.notes if n.pitch == pitch)
        assert all(end <= nxt for (_, end), (nxt, _) in zip(spans, spans[1:], strict=False))


def test_hold_bounds_find_holds_past_the_limit_and_onsets_locked_into_silence():
    from schmubert.sampling import hold_bounds

    c = 60 - 19
    row = torch.tensor([[0, c, 0, 0, 0, 0, 0, 90, 0, 1, 0, 0, 0, 0, 0, 0]])  # 90 = mask: an event to come
    must_end, cannot_start = hold_bounds(row, 3)
    assert must_end.int().tolist() == [[0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0]]
    # a note-on at 1 would hold to the mask at 7 (6 steps); at 9..12 to the window's end; at 13 only 3
    assert cannot_start.int().tolist() == [[0, 1, 1, 1, 0, 0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0]]


def test_end_long_notes_ends_a_generated_note_at_the_limit_only():
    from schmubert.sampling import end_long_notes

    c = 60 - 19
    x = torch.tensor([[0, c, 0, 0, 0, 0, 0, c + 2, 0, 0, 1, 0]])[..., None]
    generated = torch.ones_like(x, dtype=torch.bool)
    assert end_long_notes(x, generated, [0], 3)[..., 0].tolist() == [[0, c, 0, 0, 1, 0, 0, c + 2, 0, 0, 1, 0]]
    generated[0, 4, 0] = False  # a kept hold stays: the note ends at the first generated one after the limit
    assert end_long_notes(x, generated, [0], 3)[..., 0].tolist() == [[0, c, 0, 0, 0, 1, 0, c + 2, 0, 0, 1, 0]]
    assert torch.equal(end_long_notes(x, generated, [], 3), x)  # only the voice columns asked


def test_a_voice_never_holds_a_drawn_note_longer_than_max_hold():
    from schmubert.backbones import build
    from schmubert.tokens import get_tracks, instruments, tokens_to_notes

    tracks = "melody,piano:3"

    class Holding(torch.nn.Module):  # an untrained model that mostly holds: its voices' notes run for bars
        def __init__(self):
            super().__init__()
            self.net = build("conv", tracks, "tiny", seq_len=128).eval()
            self.tracks = self.net.tracks

        def forward(self, x_t):
            return [logits + torch.eye(90)[0] * 8.0 for logits in self.net(x_t)]

    model = Holding()
    diffusion = AbsorbingDiffusion(mask_ids(tracks))
    x, known = torch.zeros(4, 128, 4, dtype=torch.long), torch.zeros(4, 128, 4, dtype=torch.bool)

    def longest(out, columns):
        notes = [tokens_to_notes(piece.numpy(), get_tracks(tracks)) for piece in out]
        return max(e - s for piece in notes for k in columns for s, e, _ in piece[k])

    voices = dict(instruments(get_tracks(tracks)))["piano"]
    free = sample(model, diffusion, x, known, 8, torch.Generator().manual_seed(0))
    bounded = sample(model, diffusion, x, known, 8, torch.Generator().manual_seed(0), max_hold=16)
    assert longest(free, voices) > 16 and longest(bounded, voices) <= 16
    assert torch.equal(free[..., 0], bounded[..., 0])  # a monophonic track is never bounded
    assert SamplerOptions().hold_limit() == 0 and SamplerOptions(max_hold=8).hold_limit() == 8


def test_a_velocity_model_draws_a_bin_for_every_onset_it_writes_and_keeps_known_ones():
    from schmubert.backbones import build
    from schmubert.tokens import get_tracks, instrument_index, is_onset

    tracks = "pop909"
    model = build("conv", tracks, "tiny", seq_len=64, velocity=True).eval()
    diffusion = AbsorbingDiffusion(mask_ids(tracks), groups=instrument_index(tracks))
    x = torch.zeros(2, 64, 11, dtype=torch.long)
    x[:, 0, 0], x[:, 8, 0] = 60 - 19, 62 - 19  # a known melody with its velocities
    velocity = torch.zeros_like(x)
    velocity[:, 0, 0], velocity[:, 8, 0] = 7, 2
    known = torch.zeros_like(x, dtype=torch.bool)
    known[..., 0] = True
    out, drawn = sample(model, diffusion, x, known, 8, torch.Generator().manual_seed(0), velocity=velocity)
    onset = torch.stack([is_onset(out[..., k], t) for k, t in enumerate(get_tracks(tracks))], dim=-1)
    assert onset[..., 5:].sum() > 10  # the untrained piano starts notes
    assert (drawn[onset] >= 1).all() and (drawn[onset] <= 8).all() and (drawn[~onset] == 0).all()
    assert drawn[:, 0, 0].tolist() == [7, 7] and drawn[:, 8, 0].tolist() == [2, 2]
    again = sample(model, diffusion, x, known, 8, torch.Generator().manual_seed(0), velocity=velocity)
    assert torch.equal(again[1], drawn)  # the generator drives the velocity draws too
    with pytest.raises(ValueError, match="does not predict velocity"):
        sample(build("conv", tracks, "tiny", seq_len=64).eval(), diffusion, x, known, 2, velocity=velocity)
