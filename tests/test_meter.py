"""Meters other than 4/4 (issue 42, item 4): PAD in the grid, the codec in time, the rule for a file's time
signatures, the noise process, the scenarios, the backbones' meter embeddings and the augmentation."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pretty_midi
import pytest
import symusic
import torch

from schmubert import conditioning, meter
from schmubert.backbones import architectures, build, from_config
from schmubert.checkpoints import read_weights
from schmubert.diffusion import AbsorbingDiffusion, NoiseConfig
from schmubert.meter import Bar, Layout, MeterError, layout_of, signature_bars
from schmubert.sampling import sample
from schmubert.tokens import (
    MELODIC_MASK,
    NO_EVENT,
    NOTE_OFF,
    PAD_COMPOUND,
    PAD_CONT_SIMPLE,
    PAD_SIMPLE,
    canonicalize,
    get_tracks,
    mask_ids,
    pad_ids,
    pad_mask,
    tokens_to_midi,
)

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpus"
WALTZ = CORPUS / "bad-input" / "waltz-3-4.mid"
TPQ = 480


def midi_bytes(pm: pretty_midi.PrettyMIDI) -> bytes:
    buf = io.BytesIO()
    pm.write(buf)
    return buf.getvalue()


def mixed_meter_file() -> tuple[bytes, list[tuple[int, int, int]], np.ndarray]:
    """Two bars each of 3/4, 4/4, 6/8, 5/4, then 4/4: a piano of two voices (a held line tied over every bar
    line, and short chords) and a melody. Returns the bytes, the signatures in 16ths and the piano's notes
    ``(N, 3)`` in 16ths."""
    score = symusic.Score(TPQ)
    signatures = [(0, 3, 4), (24, 4, 4), (56, 6, 8), (80, 5, 4), (120, 4, 4)]
    for step, num, den in signatures:
        score.time_signatures.append(symusic.TimeSignature(step * TPQ // 4, num, den))
    piano, melody = symusic.Track("piano", 0, False), symusic.Track("melody", 73, False)
    notes = []
    for i, step in enumerate(range(0, 150, 6)):
        notes.append((step + 2, step + 9, 48 + i % 12))  # 7 sixteenths: crosses bar lines
        notes.append((step, step + 1, 72 + i % 5))
    for start, end, pitch in notes:
        piano.notes.append(symusic.Note(start * TPQ // 4, (end - start) * TPQ // 4, pitch, 64))
    for step in range(0, 150, 4):
        melody.notes.append(symusic.Note(step * TPQ // 4, TPQ // 2, 60 + step % 7, 90))
    score.tracks.extend([piano, melody])
    return score.dumps_midi(), signatures, np.array(sorted(notes), dtype=np.int64)


def written_signatures(pm: pretty_midi.PrettyMIDI) -> list[tuple[int, int, int]]:
    step = 60 / 120 / 4
    return [(round(ts.time / step), ts.numerator, ts.denominator) for ts in pm.time_signature_changes]


# --- the codec --------------------------------------------------------------------------------------------------


def test_waltz_is_read_in_three_and_written_back_in_time():
    grid = meter.midi_to_grid(WALTZ, "melody")
    assert grid.layout.counts() == {"3/4": 80} and not grid.ignored
    x = grid.tokens
    pad = pad_mask(x, "melody")[:, 0].reshape(-1, 16)
    assert pad[:, 12:].all() and not pad[:, :12].any()
    assert (x[pad.reshape(-1), 0] == MELODIC_MASK + 1 + PAD_SIMPLE).all()
    pm = tokens_to_midi(x, "melody")
    assert written_signatures(pm) == [(0, 3, 4)]
    src = symusic.Score(str(WALTZ)).tracks[0].notes.numpy()
    scale = 4 / symusic.Score(str(WALTZ)).ticks_per_quarter
    want = np.stack([np.rint(src["time"] * scale), np.rint((src["time"] + src["duration"]) * scale)], 1)
    got = np.array([[n.start * 8, n.end * 8] for n in pm.instruments[0].notes])  # 8 sixteenths per second
    np.testing.assert_allclose(got, want)  # every note where it was, in 16ths of time: PAD takes none
    again = meter.midi_to_grid(midi_bytes(pm), "melody")
    np.testing.assert_array_equal(again.tokens, x)


@pytest.mark.parametrize("tracks", ["melody,piano:2", "pop909"])
def test_mixed_meters_round_trip_with_their_signatures(tracks):
    data, signatures, piano = mixed_meter_file()
    grid = meter.midi_to_grid(data, tracks)
    lay = grid.layout
    assert lay.lengths[:10].tolist() == [12, 12, 16, 16, 12, 12, 16, 4, 16, 4]
    assert lay.kinds[:10].tolist() == [0, 0, 0, 0, PAD_COMPOUND, PAD_COMPOUND, 0, PAD_CONT_SIMPLE, 0,
                                       PAD_CONT_SIMPLE]
    read = layout_of(grid.tokens, tracks)
    assert np.array_equal(read.lengths, lay.lengths) and np.array_equal(read.kinds, lay.kinds)
    pm = tokens_to_midi(grid.tokens, tracks, velocity=grid.velocity)
    assert written_signatures(pm) == signatures
    again = meter.midi_to_grid(midi_bytes(pm), tracks)
    np.testing.assert_array_equal(again.tokens, grid.tokens)
    np.testing.assert_array_equal(again.velocity, grid.velocity)
    # the piano's notes in time, ties over the bar lines of the short and long bars included
    inst = next(i for i in pm.instruments if i.name == "piano")
    got = sorted((round(n.start * 8), round(n.end * 8), n.pitch) for n in inst.notes)
    assert got == [tuple(n) for n in piano.tolist()]
    np.testing.assert_array_equal(canonicalize(grid.tokens, tracks), grid.tokens)


def test_pad_steps_sound_nothing_and_a_held_note_goes_on_after_them():
    x = np.zeros((64, 1), dtype=np.int64)
    x[12:16] = MELODIC_MASK + 1  # bar 0 in 3/4
    x[8] = 60 - 19  # a note on beat 3, held through the bar line
    x[18] = NOTE_OFF  # ... for 2 steps of bar 1
    (note,) = tokens_to_midi(x, "melody").instruments[0].notes
    assert (round(note.start * 8), round(note.end * 8)) == (8, 14)  # 4 steps in bar 0, 2 in bar 1
    drums = np.zeros((64, 3), dtype=np.int64)
    drums[12:16] = pad_ids("trio")
    drums[[0, 16], 2] = 1
    pm = tokens_to_midi(drums, "trio")
    assert [round(n.start * 8) for n in pm.instruments[2].notes] == [0, 12]  # bar 1 starts after 12 steps
    assert written_signatures(pm) == [(0, 3, 4), (12, 4, 4)]


def test_a_grid_whose_pad_is_not_a_bar_layout_is_a_clear_error():
    x = np.zeros((32, 1), dtype=np.int64)
    x[4:8] = MELODIC_MASK + 1  # PAD inside a bar
    with pytest.raises(MeterError, match="last steps of a slot"):
        tokens_to_midi(x, "melody")
    y = np.zeros((32, 3), dtype=np.int64)
    y[12:16, 0] = MELODIC_MASK + 1  # PAD on one track only
    with pytest.raises(MeterError, match="every column"):
        layout_of(y, "trio")


# --- a file's time signatures ---------------------------------------------------------------------------------


def bars_of(signatures, end_quarters=64):
    bars, ignored = signature_bars([(q * TPQ, n, d) for q, n, d in signatures], TPQ, end_quarters * TPQ)
    return Layout.of_bars(bars).counts(), ignored


def test_signature_rule():
    assert bars_of([(0, 1, 4)]) == ({"4/4": 16}, ["bars of 1/4, shorter than 2 quarters"])  # POP909's 1/4
    assert bars_of([(0, 1, 4), (0, 4, 4)]) == ({"4/4": 16}, [])  # the last at a tick wins
    assert bars_of([(0, 2, 4)]) == ({"4/4": 16}, ["2/4 throughout, read in 4/4"])
    assert bars_of([(0, 4, 4), (8, 2, 4), (10, 4, 4)], 62) == ({"4/4": 15, "2/4": 1}, [])  # 2/4 beside 4/4 is kept
    assert bars_of([(0, 3, 4), (1, 4, 4)])[1] == ["a signature lasting less than one of its bars"]
    counts, ignored = bars_of([(0, 4, 4), (5.1875, 2, 4)])  # POP909's 043.mid: 2/4 off the 16th grid
    assert counts == {"4/4": 16} and ignored == ["a signature off the 16th grid"]
    assert bars_of([(0, 6, 8)], 12) == ({"6/8": 4}, [])
    assert bars_of([(1, 3, 4)], 13) == ({"1/4": 1, "3/4": 4}, [])  # a pickup keeps its length
    with pytest.raises(MeterError, match="does not fit"):
        bars_of([(0, 9, 4)])


def test_pop909_six_eight_file_is_read_in_six_eight():
    grid = meter.midi_to_grid(CORPUS / "pop909" / "203.mid", "pop909")
    assert set(grid.layout.counts()) == {"6/8"}
    one_four = meter.midi_to_grid(CORPUS / "pop909" / "014.mid", "pop909")  # 1/4 throughout: read in 4/4
    assert set(one_four.layout.counts()) == {"4/4"} and one_four.ignored
    assert not pad_mask(one_four.tokens, "pop909").any()


# --- noise process, scenarios, sampler ---------------------------------------------------------------------------


def padded_batch(tracks="trio", B=4, L=64, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    track_list = get_tracks(tracks)
    x = torch.stack([torch.randint(0, t.num_classes, (B, L), generator=g) for t in track_list], -1)
    x[:, 12:16] = torch.tensor(pad_ids(track_list)) + PAD_SIMPLE  # bar 0: 3/4
    x[:, 40:48] = torch.tensor(pad_ids(track_list)) + PAD_SIMPLE  # bar 2: 2/4
    return x


def test_pad_is_never_masked_nor_in_the_loss():
    d = AbsorbingDiffusion(mask_ids("trio"), NoiseConfig(timesteps=10, schedule="all"))
    x0 = padded_batch()
    pad = d.pad(x0)
    x_t, mask = d.q_sample(x0, torch.full((4,), 10))  # t = T: everything else masked
    assert not mask[pad].any() and mask[~pad].all() and torch.equal(x_t[pad], x0[pad])
    t = torch.full((4,), 5)
    g = torch.Generator().manual_seed(1)
    logits = [torch.randn(4, 64, c, generator=g) for c in (90, 90, 512)]
    moved = [lg.clone() for lg in logits]
    for lg in moved:
        lg[:, 12:16] += 100 * torch.randn(lg[:, 12:16].shape, generator=g)
        lg[:, 40:48] = -1e4
    everything = torch.ones_like(mask)  # even a mask that names PAD leaves it out
    a, b = d.loss(logits, x0, everything, t), d.loss(moved, x0, everything, t)
    assert torch.equal(a.loss, b.loss) and torch.equal(a.elbo_per_sample, b.elbo_per_sample)
    real = (~pad).flatten(1).sum(1).double()
    ce = d.masked_cross_entropy(logits, x0, everything & ~pad).double()
    torch.testing.assert_close(a.elbo_per_sample.double(), (ce * 10 / 5 / (real * np.log(2))).float().double())


def test_scenarios_keep_pad_and_the_sampler_never_draws_it():
    tracks = get_tracks("trio")
    torch.manual_seed(0)
    model = build("conv", tracks, "tiny", seq_len=64, meter=True).eval()
    d = AbsorbingDiffusion(mask_ids(tracks))
    x = padded_batch(B=2)
    pad = pad_mask(x, tracks)
    for known in (conditioning.unconditional(x.shape, pad=pad), conditioning.infill(x.shape, [(0, 3)], pad=pad),
                  conditioning.keep_pad(conditioning.regenerate_tracks(x.shape, [0, 1]), x, tracks),
                  conditioning.continuation(x.shape, 1, pad=pad), conditioning.interpolation(x.shape, 1, 1, pad=pad)):
        assert known[pad].all()
        stats: dict = {}
        out = sample(model, d, x, known, 8, torch.Generator().manual_seed(0), stats=stats, order="random")
        assert torch.equal(out[pad], x[pad])  # kept
        assert not pad_mask(out, tracks)[~pad].any() and (out < torch.tensor(mask_ids(tracks))).logical_or(pad).all()
        assert torch.equal(out[known], x[known])


# --- backbones ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", architectures())
@pytest.mark.parametrize("tracks", ["trio", "melody,bass,drums,piano:3"])
def test_meter_backbones_read_pad_and_start_as_the_plain_model(arch, tracks):
    track_list = get_tracks(tracks)
    torch.manual_seed(0)
    plain = build(arch, track_list, "tiny", seq_len=256).eval()
    metered = build(arch, track_list, "tiny", seq_len=256, meter=True).eval()
    missing = metered.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert missing and all(".meter." in k for k in missing)
    x = torch.stack([torch.randint(0, t.num_classes, (2, 256)) for t in track_list], -1)
    with torch.no_grad():
        for a, b in zip(plain(x), metered(x), strict=True):  # 4/4 input: the zero-initialised modules add nothing
            assert torch.equal(a, b)
        xp = x.clone()
        xp[:, 12:16] = torch.tensor(pad_ids(track_list)) + PAD_SIMPLE
        xp[:, 52:64] = torch.tensor(pad_ids(track_list)) + PAD_COMPOUND  # a bar of 4 steps (1/4)
        out = metered(xp)
        assert [o.shape for o in out] == [(2, 256, t.num_classes) for t in track_list]
        assert all(torch.isfinite(o).all() for o in out)
        with pytest.raises(ValueError, match="built without meter"):
            plain(xp)
        # trained meter modules see the meter: the output changes with the bar's kind
        for p in metered.parameters():
            if p.dim() and not p.any():
                torch.nn.init.normal_(p, std=0.1)
        xq = xp.clone()
        xq[:, 12:16] = torch.tensor(pad_ids(track_list)) + PAD_COMPOUND
        assert not torch.equal(metered(xp)[0][:, :12], metered(xq)[0][:, :12])


@pytest.mark.parametrize("path", [ROOT / "schmubert" / "weights" / "trio.safetensors",
                                  ROOT / "schmubert" / "weights" / "melody.safetensors"])
def test_shipped_state_dict_keys_are_unchanged(path):
    state, hp = read_weights(path)
    model = from_config(hp["arch"], hp["tracks"], hp["backbone"])
    assert not model.config.meter
    assert set(model.state_dict()) == set(state)
    assert all("meter" not in k for k in state)


def test_the_pop909_part_loads_with_its_meter_and_attributes():
    """The committed part the pop909 model continues from (--init) builds exactly the backbone it was saved from."""
    state, hp = read_weights(ROOT / "experiments" / "parts" / "pop909-part4.safetensors")
    model = from_config(hp["arch"], hp["tracks"], hp["backbone"])
    assert model.config.meter and model.config.attributes and model.config.velocity
    assert set(model.state_dict()) == set(state)


# --- augmentation and likelihood ---------------------------------------------------------------------------------


def test_shorten_bars_makes_three_four_and_two_four_bars():
    tracks = get_tracks("trio")
    x0 = torch.from_numpy(np.load(ROOT / "schmubert" / "weights" / "trio-heldout.npz")["pieces"][:4].astype(np.int64))
    same, v = meter.shorten_bars(x0, None, tracks, 0.0)
    assert same is x0 and v is None
    torch.manual_seed(0)
    out, vel = meter.shorten_bars(x0, torch.ones_like(x0), tracks, 0.5)
    lengths = np.concatenate([layout_of(p.numpy(), tracks).lengths for p in out])
    assert set(lengths.tolist()) == {8, 12, 16} and 0.3 < (lengths < 16).mean() < 0.7
    assert torch.equal(vel == 0, pad_mask(out, tracks))
    for piece in out.numpy():  # the real steps are those of the piece, note-offs where something sounds
        np.testing.assert_array_equal(canonicalize(piece, tracks), piece)
    kept = ~pad_mask(out, tracks)
    changed = (out != x0) & kept
    assert (out[changed] == NO_EVENT).all() and (x0[changed] == NOTE_OFF).all()


def test_elbo_scores_only_real_elements():
    from schmubert.evaluation.likelihood import elbo

    tracks = get_tracks("trio")
    d = AbsorbingDiffusion(mask_ids(tracks), NoiseConfig(timesteps=16))
    data = padded_batch(B=3, L=64).numpy()
    pad = torch.from_numpy(pad_mask(data, tracks))
    seen = []

    def denoiser(x_t):
        seen.append(x_t)
        return [torch.zeros(*x_t.shape[:2], t.num_classes) for t in tracks]

    for estimator in ("count", "time"):  # uniform logits: log2 C of each real element, on average
        res = elbo(denoiser, d, data, samples_per_piece=8, batch_size=4, estimator=estimator)
        np.testing.assert_allclose(res.bits, np.mean(np.log2([90, 90, 512])), rtol=0.05)
    for x_t in seen:  # PAD shown where it is, never masked
        assert torch.equal(pad_mask(x_t, tracks), pad[:1].expand_as(x_t))


def test_layout_bars_and_signatures():
    lay = Layout.of_bars([Bar(12), Bar(16), Bar(12, True), Bar(20), Bar(14)])
    assert [b.meter for b in lay.bars()] == ["3/4", "4/4", "6/8", "5/4", "7/8"]
    assert lay.signatures() == [(0, 3, 4), (12, 4, 4), (28, 6, 8), (40, 5, 4), (60, 7, 8)]
    assert lay.to_real(np.array([0, 12, 15, 16, 48, 64, 80, 96])).tolist() == [0, 12, 12, 12, 40, 56, 60, 74]


def test_the_sampler_keeps_pad_even_where_a_caller_marks_it_unknown():
    tracks = get_tracks("trio")
    torch.manual_seed(0)
    model = build("conv", tracks, "tiny", seq_len=64, meter=True).eval()
    d = AbsorbingDiffusion(mask_ids(tracks))
    x = padded_batch(B=2)
    pad = pad_mask(x, tracks)
    for order in ("random", "outside-in", "confidence"):
        out = sample(model, d, x, torch.zeros_like(pad), 8, torch.Generator().manual_seed(0), order=order)
        assert torch.equal(out[pad], x[pad]) and not pad_mask(out, tracks)[~pad].any()


def test_pad_is_no_context_for_the_outside_in_order():
    from schmubert.sampling import context_distance

    tracks = get_tracks("trio")
    x = padded_batch(B=1)
    pad = pad_mask(x, tracks)
    known = pad.clone()
    known[:, :16] = True  # bar 0 kept
    with_pad = context_distance(known)
    real = context_distance(known & ~pad)
    padded_bars = pad.any(-1).view(1, -1, 16).any(-1)[0].nonzero().flatten().tolist()
    assert padded_bars and all(with_pad[0, b * 16, 0] == 0 for b in padded_bars)  # PAD alone would count
    assert all(real[0, b * 16, 0] == b for b in padded_bars if b > 0)  # the distance to bar 0


def test_the_copy_prior_never_proposes_pad():
    from schmubert.copy_prior import CopyPrior, CopyPriorConfig

    tracks = get_tracks("trio")
    torch.manual_seed(0)
    model = CopyPrior(build("conv", tracks, "tiny", seq_len=64, meter=True).eval(), mask_ids(tracks),
                      CopyPriorConfig())
    x = padded_batch(B=1)
    pad = pad_mask(x, tracks)
    x_t = torch.where(pad, x, torch.tensor(mask_ids(tracks)))  # everything masked but PAD
    with torch.no_grad():
        logits = model(x_t)
    plain = model.denoiser(x_t)
    for lg, p in zip(logits, plain, strict=True):  # nothing visible to copy: the network's own distribution
        torch.testing.assert_close(lg, torch.log_softmax(p.float(), -1))
