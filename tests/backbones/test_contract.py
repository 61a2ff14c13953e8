"""The backbone contract, checked for every registered architecture."""

import dataclasses

import pytest
import torch

from schmubert.attributes import Attributes
from schmubert.backbones import PRESETS, architectures, build, from_config, make_config
from schmubert.backbones.layers import AttributeEmbedding, TrackEmbedding
from schmubert.tokens import get_tracks
from schmubert.train import load_into

ARCHS = ["conv", "hierarchical", "transformer", "utransformer"]
# the length each tiny preset must divide into: conv patch 4, hierarchical chunk 16, U 2^2 levels
TINY_LENGTH_MULTIPLE = {"conv": 4, "hierarchical": 16, "transformer": 1, "utransformer": 4}


def random_tokens(model, batch=2, length=1024, seed=0):
    g = torch.Generator().manual_seed(seed)
    rows = [torch.randint(0, t.vocab_size, (batch, length), generator=g) for t in model.tracks]
    return torch.stack(rows, dim=-1)  # [B, L, K]


def test_all_four_architectures_are_registered():
    assert architectures() == ARCHS


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("tracks", ["melody", "trio"])
def test_maps_full_length_tokens_to_logits_over_real_classes(arch, tracks):
    torch.manual_seed(0)
    model = build(arch, tracks, "tiny").eval()
    x_t = random_tokens(model)
    assert x_t.shape == (2, 1024, len(model.tracks))
    logits = model(x_t)
    assert [tuple(lg.shape) for lg in logits] == [(2, 1024, t.num_classes) for t in model.tracks]
    assert all(torch.isfinite(lg).all() for lg in logits)


@pytest.mark.parametrize("arch", ARCHS)
def test_every_parameter_gets_a_gradient(arch):
    model = build(arch, "trio", "tiny")
    loss = sum(lg.float().logsumexp(-1).mean() for lg in model(random_tokens(model, 1, 256)))
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


@pytest.mark.parametrize("arch", ARCHS)
def test_output_depends_on_far_away_tokens(arch):
    """Bidirectional: changing the last step changes the first step's logits (and vice versa)."""
    model = build(arch, "melody", "tiny").eval()
    x_t = random_tokens(model, 1, 256)
    for changed_at, read_at in ((255, 0), (0, 255)):
        other = x_t.clone()
        other[0, changed_at, 0] = (x_t[0, changed_at, 0] + 1) % 91
        assert not torch.allclose(model(x_t)[0][0, read_at], model(other)[0][0, read_at])


@pytest.mark.parametrize("arch", ARCHS)
def test_rejects_bad_lengths_and_track_counts(arch):
    model = build(arch, "melody", "tiny", seq_len=256)
    with pytest.raises(ValueError, match="seq_len=256"):
        model(torch.zeros(1, 512, 1, dtype=torch.long))
    multiple = TINY_LENGTH_MULTIPLE[arch]
    if multiple > 1:
        with pytest.raises(ValueError, match=f"multiple of {multiple}"):
            model(torch.zeros(1, multiple + 1, 1, dtype=torch.long))
    assert model(torch.zeros(1, multiple, 1, dtype=torch.long))[0].shape == (1, multiple, 90)
    with pytest.raises(ValueError, match=r"\[B, L, 1\]"):
        model(torch.zeros(1, 256, 3, dtype=torch.long))


@pytest.mark.parametrize("arch", ARCHS)
def test_shorter_inputs_work(arch):
    model = build(arch, "trio", "tiny").eval()
    logits = model(random_tokens(model, 1, 128))
    assert [lg.shape[1] for lg in logits] == [128, 128, 128]


@pytest.mark.parametrize("arch", ARCHS)
def test_rebuilds_from_config_dict(arch):
    model = build(arch, "trio", "tiny", dropout=0.0).eval()
    again = from_config(arch, "trio", dataclasses.asdict(model.config)).eval()
    again.load_state_dict(model.state_dict())
    x_t = random_tokens(model, 1, 256)
    for a, b in zip(model(x_t), again(x_t), strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("arch", ARCHS)
def test_dropout_only_in_training(arch):
    model = build(arch, "melody", "tiny", dropout=0.5)
    x_t = random_tokens(model, 1, 128)
    model.eval()
    torch.testing.assert_close(model(x_t)[0], model(x_t)[0])
    model.train()
    assert not torch.allclose(model(x_t)[0], model(x_t)[0])


@pytest.mark.parametrize("arch", ARCHS)
def test_presets_grow_from_tiny_to_paper(arch):
    with torch.device("meta"):
        counts = [build(arch, "trio", p).num_parameters() for p in ("tiny", "small", "paper")]
    assert counts == sorted(counts) and counts[0] < 1_000_000 < counts[1] < 20_000_000 < counts[2]
    assert set(PRESETS) == {"paper", "small", "tiny"}


def test_unknown_override_is_an_error():
    with pytest.raises(ValueError, match="unknown conv option"):
        make_config("conv", "melody", "tiny", no_such_field=1)


# --- the conditioning contract (schmubert.attributes) ------------------------------------------------------


def some_attributes(model, x_t, seed=0):
    """Real attributes of random notes: every kind non-null somewhere."""
    g = torch.Generator().manual_seed(seed)
    x0 = torch.stack([torch.randint(0, t.num_classes, x_t.shape[:2], generator=g) for t in model.tracks], -1)
    return Attributes.compute(x0, model.tracks)


def nudge_attribute_projection(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = model.get_submodule(attribute_module_path(model)).out
    with torch.no_grad():
        out.weight.copy_(torch.randn(out.weight.shape, generator=g))


def attribute_module_path(model):
    return next(name for name, m in model.named_modules() if isinstance(m, AttributeEmbedding))


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("tracks", ["melody", "trio"])
def test_every_backbone_accepts_the_conditions(arch, tracks):
    torch.manual_seed(0)
    model = build(arch, tracks, "tiny", attributes=True).eval()
    x_t = random_tokens(model, 2, 256)
    attrs = some_attributes(model, x_t)
    assert model.conditional and not build(arch, tracks, "tiny").conditional
    for told in (attrs, None, attrs.null_like(), attrs.rows(0, 1)):  # a batch of one is broadcast
        logits = model(x_t, told)
        assert [tuple(lg.shape) for lg in logits] == [(2, 256, t.num_classes) for t in model.tracks]
    torch.testing.assert_close(model(x_t)[0], model(x_t, attrs.null_like())[0])  # None = all null
    nudge_attribute_projection(model)
    assert not torch.allclose(model(x_t, attrs)[0], model(x_t)[0])  # once trained, the conditions matter


@pytest.mark.parametrize("arch", ARCHS)
def test_zero_initialized_attributes_compute_exactly_the_model_without(arch):
    """``--init pretrained:X --set attributes=true`` starts as the loaded model, whatever it is told."""
    torch.manual_seed(0)
    plain = build(arch, "trio", "tiny").eval()
    conditional = build(arch, "trio", "tiny", attributes=True).eval()
    load_into(conditional, plain.state_dict(), "plain", allow_new=True)
    x_t = random_tokens(plain, 2, 256)
    attrs = some_attributes(plain, x_t)
    for a, b in zip(plain(x_t), conditional(x_t, attrs), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("arch", ARCHS)
def test_the_attribute_projection_learns_from_the_first_step(arch):
    model = build(arch, "trio", "tiny", attributes=True)
    x_t = random_tokens(model, 1, 256)
    loss = sum(lg.logsumexp(-1).mean() for lg in model(x_t, some_attributes(model, x_t)))
    loss.backward()
    assert model.get_submodule(attribute_module_path(model)).out.weight.grad.abs().sum() > 0


def test_a_model_without_attributes_rejects_them_and_checks_shapes():
    model = build("transformer", "trio", "tiny")
    x_t = random_tokens(model, 1, 64)
    with pytest.raises(ValueError, match="built without attributes"):
        model(x_t, some_attributes(model, x_t))
    conditional = build("transformer", "trio", "tiny", attributes=True)
    with pytest.raises(ValueError, match="do not fit tokens of length 128"):
        conditional(random_tokens(model, 1, 128), some_attributes(model, x_t))


def test_bar_attributes_reach_only_their_bars_steps_and_track():
    emb = TrackEmbedding(get_tracks("trio"), 8, attributes=True)
    torch.nn.init.normal_(emb.attributes.out.weight)
    x_t = torch.zeros(1, 64, 3, dtype=torch.long)
    attrs = Attributes.null(1, 4, 3)
    told = Attributes(attrs.key, attrs.onsets.clone(), attrs.register)
    told.onsets[0, 1, 0] = 5  # bar 1 of the melody
    changed = (emb(x_t, told) != emb(x_t, attrs)).any(-1)[0]  # [L, K]
    assert changed[16:32, 0].all() and changed.sum() == 16
    keyed = (emb(x_t, attrs.with_key(3)) != emb(x_t, attrs)).any(-1)[0]
    assert keyed.all()  # the key reaches every step of every track


@pytest.mark.parametrize("arch", architectures())
def test_a_polyphonic_set_shares_weights_across_voices(arch):
    """pop909 (11 columns, 3 instruments) and the same set with 2 more piano voices have the same parameters:
    the number of voices is a setting; every column gets logits over its own classes."""
    small = build(arch, "melody,bridge:4,piano:6", "tiny", seq_len=64)
    more = build(arch, "melody,bridge:4,piano:8", "tiny", seq_len=64)
    assert {k: v.shape for k, v in small.state_dict().items()} == {k: v.shape for k, v in more.state_dict().items()}
    more.load_state_dict(small.state_dict())
    x_t = torch.randint(0, 91, (2, 64, 13))
    logits = more.eval()(x_t)
    assert len(logits) == 13 and all(lg.shape == (2, 64, 90) for lg in logits)
    assert not torch.allclose(logits[5], logits[6])  # two voices of one instrument predict differently


@pytest.mark.parametrize("arch", architectures())
def test_velocity_heads_predict_each_column_and_start_silent(arch):
    """A velocity model returns K velocity logits beside the token logits; its velocity embedding starts at
    zero, so the same weights without velocity inputs give the same token logits as the model without."""
    plain = build(arch, "pop909", "tiny", seq_len=64).eval()
    vel = build(arch, "pop909", "tiny", seq_len=64, velocity=True).eval()
    missing, unexpected = vel.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all("velocity" in k for k in missing)
    x_t = torch.randint(0, 91, (2, 64, 11))
    out = vel(x_t, velocity=torch.randint(0, 10, (2, 64, 11)))
    assert len(out.velocity) == 11 and all(v.shape == (2, 64, 9) for v in out.velocity)
    for a, b in zip(plain(x_t), out, strict=True):
        torch.testing.assert_close(a, b)
    assert plain(x_t).velocity is None
    with pytest.raises(ValueError, match="without velocity"):
        plain(x_t, velocity=torch.zeros_like(x_t))
