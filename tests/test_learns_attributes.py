"""Cheap proof that the conditioning wiring works: a tiny model learns to use the key it is told.

Synthetic melodies: each piece picks one of the 12 major keys and plays only the notes of its tonic triad (one
octave, a note every other step, the tonic on every beat). Told nothing, a model can only learn that any of the
12 pitch classes may come (at best log2 12 = 3.6 bits per note when every step is masked); told the key
(computed by :mod:`schmubert.attributes` from the piece, as in training), the beats are certain and the other
notes one of 3 (at best 0.8 bits per note). Training goes
through :meth:`ASD3PM.training_attributes`, the attributes dropped to null at the configured rate, so one model
must learn both.
"""

import math

import torch
import torch.nn.functional as F

from schmubert.attributes import Attributes, key_name
from schmubert.diffusion import NoiseConfig
from schmubert.module import ASD3PM
from schmubert.tokens import PITCH_OFFSET

L, BATCH, STEPS, LR = 64, 16, 150, 3e-3
TRIAD = torch.tensor([0, 4, 7])


def triad_melodies(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``[n, L, 1]`` melodies on the tonic triad of a random major key, and the tonics ``[n]``."""
    tonic = torch.randint(0, 12, (n,), generator=generator)
    degree = TRIAD[torch.randint(0, 3, (n, L // 2), generator=generator)]
    degree[:, ::2] = 0  # the tonic on every beat: an unambiguous key
    pitch = 60 + (tonic[:, None] + degree) % 12
    x0 = torch.zeros(n, L, 1, dtype=torch.long)
    x0[:, ::2, 0] = pitch - PITCH_OFFSET
    return x0, tonic


def note_bits(model: ASD3PM, x0: torch.Tensor, attrs: Attributes | None) -> float:
    """Cross-entropy (bits) of the notes when every element is masked."""
    x_t = torch.full_like(x0, model.diffusion.mask_value()[0])
    with torch.no_grad():
        logits = model.denoiser.eval()(x_t, attrs)[0]
    notes = x0[..., 0] > 1
    return float(F.cross_entropy(logits[notes], x0[..., 0][notes]) / math.log(2))


def test_a_tiny_model_learns_to_use_the_key_it_is_told():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    model = ASD3PM.create("transformer", "melody", "tiny", NoiseConfig(timesteps=L), L,
                          backbone_overrides={"attributes": True}, attributes={"cond_drop": 0.3})
    x_check, tonic = triad_melodies(256, g)
    told = Attributes.compute(x_check, model.track_list)
    assert (told.key == tonic).float().mean() > 0.95, "the estimator finds the generating key"
    assert key_name(int(told.key[0])).endswith(":major")
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    model.train()
    for _ in range(STEPS):
        x0, _ = triad_melodies(BATCH, g)
        t = model.diffusion.sample_t(BATCH)
        x_t, mask = model.diffusion.q_sample(x0, t)
        loss = model.diffusion.loss(model.denoiser(x_t, model.training_attributes(x0)), x0, mask, t).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    conditional, null = note_bits(model, x_check, told), note_bits(model, x_check, None)
    # measured (seed 0): after 50 / 150 / 300 steps conditional 2.79 / 1.53 / 1.05 bits, told nothing
    # 4.39 / 4.47 / 4.94 bits
    assert conditional < 2.0 and null > conditional + 2.0, (conditional, null)
