import pytest
import torch

from schmubert.backbones import build


def test_paper_preset_shape_follows_table_5_2():
    with torch.device("meta"):
        model = build("hierarchical", "melody", "paper")
    c = model.config
    assert (c.chunk, c.seq_len // c.chunk, c.low_width, c.width, c.heads) == (32, 32, 256, 512, 8)


def test_lower_encoder_sees_one_chunk_only():
    """The lower encoder runs on each chunk alone: its output for chunk 0 ignores chunk 1."""
    model = build("hierarchical", "melody", "tiny").eval()
    C = model.config.chunk
    x_t = torch.randint(0, 91, (1, 2 * C, 1))
    other = x_t.clone()
    other[0, C + 1, 0] = (x_t[0, C + 1, 0] + 1) % 91
    encode = lambda x: model.encoder(model.inputs(x).view(2, C, -1))  # noqa: E731
    torch.testing.assert_close(encode(x_t)[0], encode(other)[0])
    assert not torch.allclose(encode(x_t)[1], encode(other)[1])
    # ... but the full model passes the change to chunk 0 through the upper level
    assert not torch.allclose(model(x_t)[0][0, :C], model(other)[0][0, :C])


def test_length_must_be_whole_chunks():
    model = build("hierarchical", "melody", "tiny")
    with pytest.raises(ValueError, match="multiple of 16"):
        model(torch.zeros(1, 24, 1, dtype=torch.long))
