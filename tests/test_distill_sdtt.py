"""experiments/distill_sdtt.py: the student's prediction is its copy prior's, the targets are SDTT's, and the
loss trains without NaN where a class has probability 0."""

import numpy as np
import torch

from schmubert.backbones import build
from schmubert.backbones.registry import call
from schmubert.copy_prior import CopyPrior, CopyPriorConfig, sharpened
from schmubert.tokens import get_tracks

TRACKS = get_tracks("trio")
MASK = torch.tensor([t.mask_id for t in TRACKS])


def prior(seed: int = 0, **config) -> CopyPrior:
    torch.manual_seed(seed)
    return CopyPrior(build("conv", "trio", "tiny", seq_len=256), [t.mask_id for t in TRACKS],
                     CopyPriorConfig(**config))


def piece(corpus_pieces, masked_bars=(4, 12)) -> torch.Tensor:
    x = torch.as_tensor(corpus_pieces("trio", 2)[:, :256].astype(np.int64))
    x[:, masked_bars[0] * 16: masked_bars[1] * 16] = MASK
    return x


def test_the_student_predicts_what_its_copy_prior_returns(corpus_pieces, experiment):
    distill = experiment("distill_sdtt")
    student, x_t = prior().eval(), piece(corpus_pieces)
    with torch.no_grad(), sharpened(student, 8.0):
        ours = distill.student_log_probs(student, x_t, None)
        theirs = call(student, x_t, None, None)
    for a, b in zip(ours, theirs, strict=True):
        likely = b > -30  # where the probability-space mix underflows, the log-space one keeps a tiny value
        assert likely.any() and torch.allclose(a[likely], b[likely], atol=1e-4)
        assert not (torch.isinf(b) & (a > -30)).any()


def test_targets_are_the_teacher_s_draws_else_its_prediction(experiment):
    distill = experiment("distill_sdtt")
    B, L = 1, 32
    before = MASK.expand(B, L, 3).clone()
    after = before.clone()
    after[0, :8, 0] = 5  # the teacher drew melody steps 0..7 in its two calls
    predicted = [torch.log_softmax(torch.randn(B, L, int(m)), -1) for m in MASK]
    calls = [(before, predicted), (before, predicted), (after, predicted)]
    x_in, target, masked = distill.targets(calls, after, MASK, 0)
    assert torch.equal(x_in, before) and masked.all()
    assert torch.equal(target[0][0, :8].argmax(-1), torch.full((8,), 5)) and torch.equal(
        target[0][0, :8].sum(-1), torch.ones(8))  # one-hot where drawn
    assert torch.allclose(target[0][0, 8:], predicted[0][0, 8:].exp())  # the teacher's distribution elsewhere
    assert torch.allclose(target[2], predicted[2].exp())


def test_the_loss_is_zero_for_the_teacher_itself(corpus_pieces, experiment):
    distill = experiment("distill_sdtt")
    student, x_t = prior().eval(), piece(corpus_pieces)
    with torch.no_grad(), sharpened(student, 8.0):
        own = [lp.exp() for lp in call(student, x_t, None, None)]
        assert float(distill.kl_loss(student, x_t, None, own, x_t == MASK)) < 1e-3


def test_a_saturated_gate_trains_without_nan(corpus_pieces, experiment):
    """Where the copy gate is all but shut off from the network (a sharp prior), the probability-space mix has
    classes of probability exactly 0, whose log made NaN gradients; the student's log-space mix does not."""
    distill = experiment("distill_sdtt")
    student, x_t = prior(gate_bias=[200.0]).eval(), piece(corpus_pieces)
    one_hot = [torch.nn.functional.one_hot(torch.zeros_like(x_t[..., k]), int(m)).float() for k, m in enumerate(MASK)]
    with sharpened(student, 8.0):
        assert any(torch.isinf(lp).any() for lp in call(student, x_t, None, None))  # the case is there
        loss = distill.kl_loss(student, x_t, None, one_hot, x_t == MASK)
        loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in student.denoiser.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
