"""The shipped trio and melody sample exactly as they did before voice sets, meters and few-step defaults.

``tests/data/shipped_outputs.npz`` holds what ``pretrained:trio`` and ``pretrained:melody`` sampled at commit
42b3c8d (before issue 44's decoding changes) for seed 0, 12 steps, fp32 and the sampler options below (that
commit's defaults, spelled out): two new pieces and two infills of bars 16:32 of the first held-out window, each
through the sample CLI's path (decoding plan, outline, guidance, repair, copy prior). Later defaults may differ;
these options must keep giving the same tokens. The guidance scale is spelled out as each model's own: left at
None, an infill told the piece's own key is no longer guided (``schmubert.decoding``).
"""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from schmubert.checkpoints import held_out_pieces, load_model
from schmubert.decoding import guidance_scale
from schmubert.sample import SampleConfig, Scenario, decoding_plan, generate, make_attributes
from schmubert.sampling import SamplerOptions

PINNED = Path(__file__).parent / "data" / "shipped_outputs.npz"
#: The sampler defaults of commit 42b3c8d, each field given.
THEN = SamplerOptions(temperature=1.0, top_p=1.0, order="outside-in", schedule="linear", reuse=True, remask="off",
                      cfg_scale=None, cfg_interval=1.0, cfg_kinds="key", repair=2, repair_steps=32,
                      repair_kinds="all")


def scenario(model, kind: str) -> Scenario:
    L, K = model.steps, len(model.tracks)
    if kind == "uncond":
        return Scenario(np.zeros((L, K), np.int64), np.zeros((L, K), bool), "unconditional", [])
    held, _ = held_out_pieces(model)
    x = np.asarray(held[0][:L], dtype=np.int64)
    known = np.ones_like(x, dtype=bool)
    known[256:512] = False  # bars 16:32
    return Scenario(x, known, "infilling", [])


@pytest.mark.parametrize("name", ["trio", "melody"])
@pytest.mark.parametrize("kind", ["uncond", "infill"])
def test_shipped_models_sample_what_they_sampled(name, kind):
    model = load_model(f"pretrained:{name}")
    scen = scenario(model, kind)
    then = dataclasses.replace(THEN, cfg_scale=guidance_scale(model))  # the scale the model samples at
    cfg = SampleConfig(steps=12, num_samples=2, batch_size=2, seed=0, progress=False, wav=False, precision="fp32",
                       sampler=then)
    generator = torch.Generator().manual_seed(0)
    plan = decoding_plan(cfg, model, scen)
    attrs = make_attributes(cfg, model, scen, generator, plan)
    out = generate(cfg, model, scen, None, generator, attributes=attrs, plan=plan)
    expected = np.load(PINNED)[f"{name}_{kind}"]
    assert out.shape == expected.shape
    assert np.array_equal(out, expected), f"{(out != expected).mean():.2%} of the tokens differ"
