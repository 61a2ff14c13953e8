import math

import pytest
import torch

from schmubert.backbones.layers import (
    Attention,
    Block,
    InputEmbedding,
    TrackEmbedding,
    TrackHeads,
    attend,
    check_length,
    init_weights,
)
from schmubert.tokens import get_tracks


def test_attention_matches_explicit_softmax_attention():
    torch.manual_seed(0)
    attn = Attention(width=16, heads=4).eval()
    h = torch.randn(2, 10, 16)
    q, k, v = attn.qkv(h).view(2, 10, 3, 4, 4).permute(2, 0, 3, 1, 4)
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(4), dim=-1)
    expected = attn.proj((weights @ v).transpose(1, 2).reshape(2, 10, 16))
    torch.testing.assert_close(attn(h), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_bf16_attention_matches_float_attention_forward_and_backward(device):
    """bf16 on CPU takes attend's own path (two matmuls around a softmax); it must agree with float SDPA."""
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, 64, 32, device=device, requires_grad=True) for _ in range(3))
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    expected.square().sum().backward()
    grads = [x.grad.clone() for x in (q, k, v)]
    low = [x.detach().bfloat16().requires_grad_() for x in (q, k, v)]
    out = attend(*low)
    out.float().square().sum().backward()
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), expected, rtol=0.05, atol=0.05)
    for x, grad in zip(low, grads, strict=True):
        torch.testing.assert_close(x.grad.float(), grad, rtol=0.1, atol=0.1)


def test_attention_dropout_drops_attention_weights_in_bf16_too():
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, 2, 16, 8).bfloat16() for _ in range(3))
    assert not torch.equal(attend(q, k, v, dropout_p=0.5), attend(q, k, v))


def test_attention_is_permutation_equivariant_without_positions():
    torch.manual_seed(0)
    block = Block(width=16, heads=2).eval()
    h = torch.randn(1, 8, 16)
    perm = torch.randperm(8)
    torch.testing.assert_close(block(h)[:, perm], block(h[:, perm]), rtol=1e-5, atol=1e-5)


def test_width_must_divide_into_heads():
    with pytest.raises(ValueError, match="divisible"):
        Attention(width=10, heads=3)


def test_embeddings_and_heads_follow_each_track_vocabulary():
    tracks = get_tracks("trio")
    emb = TrackEmbedding(tracks, 8)
    assert [e.num_embeddings for e in emb.embeddings] == [91, 91, 513]
    heads = TrackHeads(tracks, 8)
    assert [h.out_features for h in heads.heads] == [90, 90, 512]
    x_t = torch.tensor([[[90, 90, 512]]])  # the mask ids embed fine
    out = heads(InputEmbedding(tracks, 8, 8, max_len=4)(x_t))
    assert [tuple(o.shape) for o in out] == [(1, 1, 90), (1, 1, 90), (1, 1, 512)]


def test_init_preserves_the_signal_scale_with_zero_biases():
    torch.manual_seed(0)
    layer = torch.nn.Sequential(torch.nn.Linear(256, 64), torch.nn.LayerNorm(64))
    emb = TrackEmbedding(get_tracks("melody"), 32)
    init_weights(layer)
    init_weights(emb)
    assert abs(layer[0].weight.std().item() - 256**-0.5) < 0.005  # LeCun: 1/sqrt(fan_in)
    assert layer[0].bias.abs().sum() == 0 and (layer[1].weight == 1).all()
    assert abs(emb.embeddings[0].weight.std().item() - 1.0) < 0.1
    h = layer[0](torch.randn(4096, 256))
    assert 0.9 < h.std().item() < 1.1  # a unit-scale input keeps its scale


def test_check_length_message_names_the_model():
    check_length(64, 1024, 32, "M")
    with pytest.raises(ValueError, match="M: sequence length 48 must be a positive multiple of 32"):
        check_length(48, 1024, 32, "M")


def test_attention_dropout_applies_only_when_asked():
    torch.manual_seed(0)
    h = torch.randn(1, 16, 16)
    plain = Block(width=16, heads=2, dropout=0.0, attn_dropout=0.0).train()
    torch.testing.assert_close(plain(h), plain(h))
    dropped = Block(width=16, heads=2, dropout=0.0, attn_dropout=0.5).train()
    assert not torch.allclose(dropped(h), dropped(h))
