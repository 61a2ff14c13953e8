"""Paper presets against the thesis tables (counted on the meta device: instant, no memory)."""

import pytest
import torch

from schmubert.backbones import build, make_config

THESIS = {  # thesis tables 5.1-5.4
    ("conv", "melody"): 76_601_088,
    ("conv", "trio"): 78_303_488,
    ("hierarchical", "melody"): 56_465_664,
    ("utransformer", "melody"): 80_478_208,
}


def paper_count(arch, tracks):
    with torch.device("meta"):
        return build(arch, tracks, "paper").num_parameters()


@pytest.mark.parametrize(("arch", "tracks"), sorted(THESIS))
def test_paper_preset_within_two_percent_of_thesis(arch, tracks):
    assert abs(paper_count(arch, tracks) / THESIS[arch, tracks] - 1) < 0.02


def test_conv_melody_matches_the_original_less_its_unused_start_token():
    assert paper_count("conv", "melody") == 76_601_088 - 512


def test_conv_trio_uses_sixteen_heads_and_melody_eight():
    assert make_config("conv", "trio", "paper").heads == 16
    assert make_config("conv", "melody", "paper").heads == 8


def test_transformer_paper_is_24_blocks_of_width_512():
    config = make_config("transformer", "melody", "paper")
    assert (config.depth, config.width, config.heads, config.dropout) == (24, 512, 8, 0.2)
    # 24 blocks of 12 D^2 + 13 D parameters dominate
    assert 24 * (12 * 512**2 + 13 * 512) < paper_count("transformer", "melody") < 77_000_000
