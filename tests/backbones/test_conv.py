import pytest
import torch
from einops import rearrange
from torch import nn

from schmubert.backbones import build
from schmubert.backbones.conv import PatchDown, PatchUp


def test_patch_down_is_a_kernel_equals_stride_convolution():
    torch.manual_seed(0)
    down, conv = PatchDown(emb_dim=8, width=12, patch=4), nn.Conv1d(8, 12, 4, stride=4)
    with torch.no_grad():
        conv.weight.copy_(rearrange(down.weight, "d (p e) -> d e p", p=4))
        conv.bias.copy_(down.bias)
    e = torch.randn(2, 32, 8)  # [B, L, E]
    expected = rearrange(conv(rearrange(e, "b l e -> b e l")), "b d n -> b n d")
    torch.testing.assert_close(down(e), expected, rtol=1e-5, atol=1e-5)
    assert sum(p.numel() for p in down.parameters()) == sum(p.numel() for p in conv.parameters())


def test_patch_up_is_a_kernel_equals_stride_transposed_convolution():
    torch.manual_seed(0)
    up, tconv = PatchUp(width=12, emb_dim=8, patch=4), nn.ConvTranspose1d(12, 8, 4, stride=4)
    with torch.no_grad():
        up.bias.normal_()
        tconv.weight.copy_(rearrange(up.proj.weight, "(p e) d -> d e p", p=4))
        tconv.bias.copy_(up.bias)
    h = torch.randn(2, 8, 12)  # [B, N, D]
    expected = rearrange(tconv(rearrange(h, "b n d -> b d n")), "b e l -> b l e")
    torch.testing.assert_close(up(h), expected, rtol=1e-5, atol=1e-5)
    assert sum(p.numel() for p in up.parameters()) == sum(p.numel() for p in tconv.parameters())


def test_transformer_runs_over_beats():
    """With no blocks, an output step depends only on the tokens of its own beat."""
    model = build("conv", "melody", "tiny", depth=0).eval()
    x_t = torch.randint(0, 91, (1, 64, 1))
    other = x_t.clone()
    other[0, 5, 0] = (x_t[0, 5, 0] + 1) % 91  # beat 1 = steps 4..7
    diff = (model(x_t)[0] - model(other)[0]).abs().sum(-1)[0]
    assert (diff[4:8] > 0).all() and (diff[:4] == 0).all() and (diff[8:] == 0).all()


def test_seq_len_must_hold_whole_patches():
    with pytest.raises(ValueError, match="multiple of patch 4"):
        build("conv", "melody", "tiny", seq_len=1022)


def test_bar_attention_reaches_the_same_steps_of_every_bar():
    """No beat-level blocks: a changed step reaches its own beat, and through bar attention the same steps
    of every other bar, nothing else."""
    torch.manual_seed(0)
    model = build("conv", "melody", "tiny", depth=0, bar_depth=1).eval()
    torch.nn.init.normal_(model.bars.out.weight)  # starts at zero (a no-op branch); make it count
    x_t = torch.randint(0, 91, (1, 64, 1))
    other = x_t.clone()
    other[0, 5, 0] = (x_t[0, 5, 0] + 1) % 91  # beat 1 of bar 0 = steps 4..7
    diff = (model(x_t)[0] - model(other)[0]).abs().sum(-1)[0]
    reached = (torch.arange(64) % 16 >= 4) & (torch.arange(64) % 16 < 8)
    assert (diff[reached] > 0).all() and (diff[~reached] == 0).all()


def test_bar_attention_starts_as_a_zero_update():
    torch.manual_seed(0)
    plain = build("conv", "trio", "tiny").eval()
    bars = build("conv", "trio", "tiny", bar_depth=2).eval()
    missing, unexpected = bars.load_state_dict(plain.state_dict(), strict=False)
    assert unexpected == [] and all(k.startswith("bars.") for k in missing)
    x_t = torch.randint(0, 90, (2, 128, 3))
    for a, b in zip(bars(x_t), plain(x_t), strict=True):
        torch.testing.assert_close(a, b)


def test_bar_attention_needs_whole_bars():
    with pytest.raises(ValueError, match="multiple of 16"):
        build("conv", "melody", "tiny", seq_len=1000, bar_depth=1)
    model = build("conv", "melody", "tiny", seq_len=256, bar_depth=1)
    with pytest.raises(ValueError, match="multiple of 16"):
        model(torch.zeros(1, 8, 1, dtype=torch.long))
