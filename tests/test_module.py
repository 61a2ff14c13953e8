import pytest
import torch

from schmubert.checkpoints import CHECKPOINT_KIND
from schmubert.diffusion import NoiseConfig
from schmubert.module import ASD3PM, OptimConfig, lr_factor, step_seed

L = 64  # 4 bars keep the overfitting run to a few seconds


@pytest.fixture(scope="module")
def eight_trios(corpus_pieces):
    return torch.from_numpy(corpus_pieces("trio", 8)[:, :L]).long()


def fixed_mask_elbo(model, x0):
    """ELBO term at t = T/4 with a fixed mask: comparable before and after training."""
    d = model.diffusion
    g = torch.Generator().manual_seed(123)
    t = torch.full((len(x0),), d.T // 4)
    x_t, mask = d.q_sample(x0, t, generator=g, schedule="all")
    model.eval()
    with torch.no_grad():
        out = d.loss(model.denoiser(x_t), x0, mask, t)
    model.train()
    return out.elbo.item()


def test_tiny_model_overfits_eight_trios(eight_trios):
    torch.manual_seed(0)
    model = ASD3PM.create("transformer", "trio", "tiny", NoiseConfig(timesteps=L, schedule="all"), L)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = fixed_mask_elbo(model, eight_trios)
    for _ in range(300):
        t = model.diffusion.sample_t(len(eight_trios))
        x_t, mask = model.diffusion.q_sample(eight_trios, t)
        loss = model.diffusion.loss(model(x_t), eight_trios, mask, t).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = fixed_mask_elbo(model, eight_trios)
    assert after < before / 8, (before, after)  # measured: 7.45 -> 0.44 bits per element


def test_the_module_clips_the_gradient_norm_itself():
    """Lightning's mixed-precision plugin refuses to clip for fused optimizers, so the module clips (bf16 has no
    loss scaler: the gradients it sees are the true ones)."""
    model = ASD3PM.create("transformer", "trio", "tiny", NoiseConfig(), L, OptimConfig(grad_clip=0.5))
    for p in model.parameters():
        p.grad = torch.full_like(p, 3.0)
    opt = torch.optim.AdamW(model.parameters(), fused=True)
    model.configure_gradient_clipping(opt)
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))
    assert norm == pytest.approx(0.5, rel=1e-4)
    model.optim = OptimConfig(grad_clip=0.0)  # off: gradients untouched
    for p in model.parameters():
        p.grad = torch.full_like(p, 3.0)
    model.configure_gradient_clipping(opt)
    assert all(torch.all(p.grad == 3.0) for p in model.parameters())


def test_create_stores_everything_a_checkpoint_needs():
    model = ASD3PM.create("transformer", "melody", "tiny", NoiseConfig(), 1024, OptimConfig(lr=1e-3),
                          backbone_overrides={"depth": 1}, max_transpose=3, seed=7)
    hp = model.hparams
    assert hp.arch == "transformer" and hp.tracks == "melody" and hp.steps == 1024
    assert hp.backbone["depth"] == 1 and hp.optim["lr"] == 1e-3 and hp.noise["timesteps"] == 1024
    ckpt = {}
    model.on_save_checkpoint(ckpt)
    assert ckpt["schmubert"]["kind"] == CHECKPOINT_KIND


def test_step_seed_depends_on_seed_step_and_rank():
    seeds = {step_seed(s, n, r) for s in (0, 1) for n in (0, 1, 2) for r in (0, 1)}
    assert len(seeds) == 12 and all(0 <= s < 2**63 for s in seeds)
    assert step_seed(3, 10, 0) == step_seed(3, 10, 0)


def test_warmup_is_linear_then_flat():
    model = ASD3PM.create("transformer", "melody", "tiny", NoiseConfig(), 1024, OptimConfig(lr=1.0, warmup_steps=4))
    sched = model.configure_optimizers()["lr_scheduler"]["scheduler"]
    lrs = []
    for _ in range(6):
        lrs.append(sched.get_last_lr()[0])
        sched.optimizer.step()
        sched.step()
    assert lrs == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 1.0])


def test_decays_follow_their_formulas_after_the_warm_up():
    cosine = OptimConfig(warmup_steps=10, decay="cosine", min_lr_ratio=0.1)
    assert lr_factor(4, cosine, 110) == pytest.approx(0.5)  # warm-up
    assert lr_factor(9, cosine, 110) == pytest.approx(1.0)
    assert lr_factor(59, cosine, 110) == pytest.approx(0.55)  # half way: (1 + 0.1) / 2
    assert lr_factor(109, cosine, 110) == pytest.approx(0.1)
    assert lr_factor(500, cosine, 110) == pytest.approx(0.1)  # stays at the floor
    inv = OptimConfig(warmup_steps=100, decay="inverse_sqrt")
    assert lr_factor(399, inv, None) == pytest.approx(0.5)
    assert lr_factor(399, OptimConfig(warmup_steps=100), None) == 1.0
    with pytest.raises(ValueError, match="--decay cosine needs --max-steps"):
        lr_factor(50, cosine, None)


def test_a_continued_run_reads_the_decay_where_it_starts_and_warms_up_again():
    cosine = OptimConfig(warmup_steps=10, decay="cosine", min_lr_ratio=0.1, start_step=50)
    assert lr_factor(9, cosine, 110) == pytest.approx(0.55)  # step 59 of the schedule: half way
    assert lr_factor(4, cosine, 110) == pytest.approx(0.5 * lr_factor(54, OptimConfig(
        warmup_steps=10, decay="cosine", min_lr_ratio=0.1), 110))  # fresh moments: the warm-up ramps it
    assert lr_factor(59, cosine, 110) == pytest.approx(0.1)  # the schedule's end
    constant = OptimConfig(warmup_steps=10, start_step=50)
    assert [lr_factor(s, constant, None) for s in (0, 9, 20)] == pytest.approx([0.1, 1.0, 1.0])


def test_a_velocity_model_learns_velocity_at_masked_onsets_only():
    import numpy as np

    from schmubert.module import ASD3PM, onsets
    from schmubert.tokens import get_tracks

    model = ASD3PM.create("conv", "pop909", "tiny", NoiseConfig(), 64, backbone_overrides={"seq_len": 64,
                                                                                           "velocity": True})
    x0 = torch.zeros(2, 64, 11, dtype=torch.long)
    x0[:, ::8, 5] = 48 - 19  # piano onsets every half beat
    v0 = torch.where(onsets(x0, get_tracks("pop909")), 5, 0)
    t = torch.tensor([512, 900])
    x_t, mask = model.diffusion.q_sample(x0, t)
    out = model.step_loss(x_t, mask, t, x0, v0)
    assert out.velocity_elbo is not None and out.velocity_elbo > 0
    assert np.isfinite(out.loss.item())
    # the velocity loss counts masked onsets only: targets elsewhere do not move it, a masked onset's does
    logits = model.denoiser(x_t, velocity=torch.where(mask, 9, v0))
    onset = onsets(x0, get_tracks("pop909"))
    base = model.diffusion.loss(logits, x0, mask, t, v0, onset).velocity_elbo
    elsewhere = torch.where(mask & onset, v0, 8)
    assert torch.equal(model.diffusion.loss(logits, x0, mask, t, elsewhere, onset).velocity_elbo, base)
    moved = torch.where(mask & onset, 1, v0)
    assert not torch.equal(model.diffusion.loss(logits, x0, mask, t, moved, onset).velocity_elbo, base)
    with pytest.raises(ValueError, match="velocity data"):
        model.step_loss(x_t, mask, t, x0, None)
