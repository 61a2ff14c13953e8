import pytest
import torch

from schmubert.backbones import build
from schmubert.backbones.utransformer import Downsample, Upsample


def test_downsample_merges_neighbour_pairs_and_upsample_doubles():
    torch.manual_seed(0)
    h = torch.randn(2, 8, 4)
    down = Downsample(4)
    out = down(h)
    assert out.shape == (2, 4, 4)
    torch.testing.assert_close(out[0, 1], down.weight @ torch.cat([h[0, 2], h[0, 3]]) + down.bias)
    changed = h.clone()
    changed[:, 3] += 1  # step 3 belongs to pair 1
    diff = (down(changed) - out).abs().sum(-1)
    assert (diff[:, 1] > 0).all() and (diff[:, [0, 2, 3]] == 0).all()
    up = Upsample(4)(out)
    assert up.shape == (2, 8, 4)
    torch.testing.assert_close(up[:, 0], up[:, 1])


def test_paper_preset_has_24_blocks_and_16_positions_at_the_bottom():
    with torch.device("meta"):
        model = build("utransformer", "melody", "paper")
    blocks = sum(len(s) for s in (*model.down_blocks, *model.up_blocks))
    assert blocks == 24
    assert model.config.seq_len // 2**model.config.levels == 16  # thesis 4.6.4: "reduced to only 16"


def test_length_must_divide_by_two_to_the_levels():
    model = build("utransformer", "melody", "tiny", levels=3)
    with pytest.raises(ValueError, match="multiple of 8"):
        model(torch.zeros(1, 12, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="2\\^levels"):
        build("utransformer", "melody", "tiny", seq_len=1002)
