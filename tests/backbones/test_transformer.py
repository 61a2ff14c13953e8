import pytest
import torch

from schmubert.backbones import build


@pytest.mark.parametrize("tracks", ["melody", "trio"])
def test_transformer_maps_tokens_to_per_track_logits(tracks):
    model = build("transformer", tracks, "tiny").eval()
    K = len(model.tracks)
    x_t = torch.stack([torch.randint(0, t.vocab_size, (2, 1024)) for t in model.tracks], dim=-1)
    logits = model(x_t)
    assert [tuple(lg.shape) for lg in logits] == [(2, 1024, t.num_classes) for t in model.tracks]
    assert len(logits) == K and all(torch.isfinite(lg).all() for lg in logits)


def test_transformer_is_bidirectional():
    torch.manual_seed(0)
    model = build("transformer", "melody", "tiny").eval()
    x_t = torch.randint(0, 91, (1, 64, 1))
    changed = x_t.clone()
    changed[0, -1, 0] = (x_t[0, -1, 0] + 1) % 91
    # a change at the last step reaches the first step's logits
    assert not torch.allclose(model(x_t)[0][0, 0], model(changed)[0][0, 0])


def test_transformer_rejects_too_long_input():
    model = build("transformer", "melody", "tiny", seq_len=64)
    with pytest.raises(ValueError, match="seq_len=64"):
        model(torch.zeros(1, 128, 1, dtype=torch.long))
