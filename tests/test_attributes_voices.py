"""Attributes of voice sets (per instrument, a polyphonic instrument's voices together) and the dynamics attribute:
computed by hand on a small grid, carried through the embedding of every backbone, repaired per instrument, told
through the sample CLI, and learned by a tiny model."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from schmubert import attributes as A
from schmubert.attributes import Attributes
from schmubert.backbones import architectures, build
from schmubert.backbones.layers import AttributeEmbedding, TrackEmbedding
from schmubert.checkpoints import checkpoint_hparams, save_model
from schmubert.diffusion import NoiseConfig
from schmubert.module import ASD3PM
from schmubert.tokens import PITCH_OFFSET, VELOCITY_MASK, get_tracks
from schmubert.train import load_into

#: melody (one column) and a piano of three voices: columns melody, piano.0, piano.1, piano.2; instruments 2
SET = get_tracks("melody,piano:3")


def on(pitch: int) -> int:
    return pitch - PITCH_OFFSET


def hand_grid() -> tuple[torch.Tensor, torch.Tensor]:
    """Two bars ``[1, 32, 4]`` and their velocity bins.

    Bar 0: the melody plays 72 (bin 4) and 76 (bin 5); the piano a chord 60/64/67 (bins 5, 5, 6) at step 0 and
    62/65 (bins 7, 7) at step 8 while its third voice holds. Bar 1: the melody rests; the piano plays three voices
    on every beat (12 note-ons), voice 0 at bin 8, the others of unknown velocity.
    """
    x = torch.zeros(1, 32, 4, dtype=torch.long)
    v = torch.zeros(1, 32, 4, dtype=torch.long)
    x[0, 0, 0], v[0, 0, 0] = on(72), 4
    x[0, 4, 0], v[0, 4, 0] = on(76), 5
    x[0, 8, 0] = 1  # note-off
    for k, (pitch, vel) in enumerate([(60, 5), (64, 5), (67, 6)]):
        x[0, 0, 1 + k], v[0, 0, 1 + k] = on(pitch), vel
    for k, (pitch, vel) in enumerate([(62, 7), (65, 7)]):
        x[0, 8, 1 + k], v[0, 8, 1 + k] = on(pitch), vel
    for step in (16, 20, 24, 28):
        for k, pitch in enumerate((48, 55, 64)):
            x[0, step, 1 + k] = on(pitch)
        v[0, step, 1], v[0, step, 2:] = 8, VELOCITY_MASK
    return x, v


def test_onsets_register_and_dynamics_of_an_instrument_count_all_its_voices():
    x, v = hand_grid()
    a = Attributes.compute(x, SET, v)
    assert a.voices == (1, 3) and a.onsets.shape == (1, 2, 2) and a.shape == (1, 2, 4)
    # melody: 2 note-ons, mean 74; piano: 5 note-ons (exact below 9), mean 63.6; bar 1: 12 note-ons -> bin [12, 14)
    assert a.onsets[0].tolist() == [[2, 5], [0, 10]]
    assert A.onset_range(10, 3) == (12, 14)
    assert a.register[0].tolist() == [[(74 - 21) // 3, int((63.6 - 21) // 3)],
                                      [A.REGISTER_EMPTY, int((sum((48, 55, 64)) / 3 - 21) // 3)]]
    # dynamics: melody centres 56, 72 -> mean 64 -> bin 4 (mp); piano 72, 72, 88, 104, 104 -> 88 -> bin 6 (f);
    # bar 1: only voice 0's bin 8 is known (fff); the silent melody has none
    assert a.dynamics[0].tolist() == [[3, 5], [A.DYNAMICS_NULL, 7]]
    assert [A.DYNAMICS_MARKS[i] for i in a.dynamics[0, 0].tolist()] == ["mp", "f"]
    assert (Attributes.compute(x, SET).dynamics == A.DYNAMICS_NULL).all()  # no velocity, no dynamics
    assert A.describe(a)["onsets"] == [[2, 0], [5, "12-13"]] and A.describe(a)["dynamics"][1] == ["f", "fff"]
    assert "dynamics" not in A.describe(Attributes.compute(x, SET))


def test_voice_onset_bins_widen_with_the_count_and_one_column_instruments_keep_exact_counts():
    counts = torch.tensor([[0, 1, 8, 9, 10, 31, 32, 96]]).T.expand(-1, 2)  # [8, 2]: a melody and a piano
    ids = A.onset_bins(counts, (1, 6))
    assert ids[:, 1].tolist() == [0, 1, 8, 8, 9, 15, 16, 16]
    assert ids[:, 0].tolist() == [0, 1, 8, 9, 10, 16, 16, 16]
    assert A.onset_range(16, 6) == (32, None) and len(A.VOICE_ONSET_EDGES) == A.ONSETS_NULL


def test_per_column_attributes_become_per_instrument_and_targets_name_instruments():
    told = Attributes.null(1, 2, 4)  # what Attributes.null(n, bars, len(tracks)) gives
    a = A.apply_targets(told, SET, [A.parse_target("piano=12@1:2")], [A.parse_target("piano=C4", pitch=True)],
                        [A.parse_target("piano=mf@0:1", dynamics=True), A.parse_target("melody=100", dynamics=True)])
    assert a.voices == (1, 3) and a.shape == (1, 2, 4) and a.num_instruments == 2
    assert a.onsets[0, :, 1].tolist() == [A.ONSETS_NULL, 10]
    assert a.dynamics[0].tolist() == [[6, 4], [6, A.DYNAMICS_NULL]]  # 100 -> bin 7 (ff), mf -> bin 5
    assert A.parse_target("piano=mf", dynamics=True).value == A.dynamics_velocity(4) == 72
    with pytest.raises(ValueError, match="'piano.1' is a voice of 'piano'"):
        A.apply_targets(told, SET, [A.BarTarget("piano.1", 3)])
    with pytest.raises(ValueError, match="unknown dynamics 'loud'"):
        A.parse_target("piano=loud", dynamics=True)
    differ = Attributes.null(1, 2, 4)
    differ.onsets[0, 0, 2] = 3
    with pytest.raises(ValueError, match="differs between the voices of piano"):
        A.for_tracks(differ, SET)
    assert A.for_tracks(Attributes.null(1, 2, 2), SET).voices == (1, 3)
    with pytest.raises(ValueError, match="do not fit the track set"):
        A.for_tracks(Attributes.null(1, 2, 3), SET)


def test_misses_mark_every_voice_of_an_instrument_bar_that_misses_and_dynamics_need_velocities():
    x, v = hand_grid()
    told = A.apply_targets(Attributes.null(1, 2, SET), SET, [A.BarTarget("piano", 2, 1, 2)])
    key, bars = A.misses(told, x, SET)
    assert not key.any() and bars.shape == (1, 2, 4)
    assert bars[0].tolist() == [[False] * 4, [False, True, True, True]]  # bar 1 of the piano: all three voices
    for mark, miss in (("pp", True), ("f", False), ("ff", False), ("fff", True)):  # have f: +-1 bin holds
        asked = A.apply_targets(Attributes.null(1, 2, SET), SET, dynamics=[A.parse_target(f"piano={mark}@0:1",
                                                                                          dynamics=True)])
        assert A.misses(asked, x, SET, v)[1][0, 0].tolist() == [False] + [miss] * 3
        assert not A.misses(asked, x, SET)[1].any()  # without the velocities the dynamics cannot be judged
    silent = A.apply_targets(Attributes.null(1, 2, SET), SET, dynamics=[A.BarTarget("melody", 10, 1, 2)])
    assert not A.misses(silent, x, SET, v)[1].any()  # a bar without onsets has no dynamics to miss


def test_key_is_estimated_over_all_voices():
    x, _ = hand_grid()
    piano_only = x.clone()
    piano_only[..., 0] = 0
    assert A.estimate_key(piano_only, SET)[0] != A.KEY_NULL


def test_drop_keeps_the_old_draws_and_drops_dynamics_on_its_own_numbers():
    B = 4000
    ones = torch.ones(B, 2, 2, dtype=torch.long)
    a = Attributes(torch.zeros(B, dtype=torch.long), ones, ones, voices=(1, 3))
    d = A.drop(a, 0.3, torch.Generator().manual_seed(0))
    u = torch.rand((3, B), generator=torch.Generator().manual_seed(0))  # the draws of the three kinds before
    assert torch.equal(d.key == A.KEY_NULL, u[0] < 0.3) and torch.equal(d.onsets[:, 0, 0] == A.ONSETS_NULL, u[1] < 0.3)
    assert d.voices == (1, 3) and (d.dynamics == A.DYNAMICS_NULL).all()
    told = Attributes(a.key, ones, ones, ones * 4, voices=(1, 3))
    d = A.drop(told, {"dynamics": 0.5}, torch.Generator().manual_seed(0))
    gone = (d.dynamics == A.DYNAMICS_NULL).all(dim=(1, 2))
    assert abs(gone.float().mean() - 0.5) < 0.03 and (d.key == 0).all()


def test_outlines_of_a_velocity_voice_set_keep_instruments_and_dynamics():
    x, v = hand_grid()
    pieces, vel = x.expand(3, -1, -1).numpy(), v.expand(3, -1, -1).numpy()
    bank = A.outline_bank(pieces, SET, velocity=vel)
    assert bank["shape"] == [3, 2, 2] and bank["voices"] == [1, 3] and "dynamics" in bank
    json.dumps(bank)
    drawn = A.draw_outlines(bank, 5, torch.Generator().manual_seed(0))
    assert drawn.shape == (5, 2, 4) and drawn.voices == (1, 3)
    assert torch.equal(drawn.dynamics[0], Attributes.compute(x, SET, v).dynamics[0])
    joined = Attributes.cat_bars([drawn, drawn]).bars(0, 3)
    assert joined.onsets.shape == (5, 3, 2) and joined.voices == (1, 3)
    assert "dynamics" not in A.outline_bank(pieces, SET) and "voices" not in A.outline_bank(
        np.zeros((2, 32, 3), dtype=np.int64), get_tracks("trio"))


# --- the embedding, for every backbone ---------------------------------------------------------------------


def random_grid(tracks, batch=2, length=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randint(0, t.vocab_size, (batch, length), generator=g) for t in tracks], dim=-1)


def told_everything(tracks, x_t, seed=1):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.stack([torch.randint(0, t.num_classes, x_t.shape[:2], generator=g) for t in tracks], -1)
    return Attributes.compute(x0, tracks, torch.randint(1, 9, x_t.shape, generator=g))


def attribute_module(model) -> AttributeEmbedding:
    return next(m for m in model.modules() if isinstance(m, AttributeEmbedding))


@pytest.mark.parametrize("arch", architectures())
def test_a_voice_set_model_takes_attributes_per_instrument_and_starts_as_the_model_without(arch):
    torch.manual_seed(0)
    tracks = get_tracks("pop909")
    plain = build(arch, "pop909", "tiny", seq_len=64, velocity=True).eval()
    model = build(arch, "pop909", "tiny", seq_len=64, velocity=True, attributes=True).eval()
    load_into(model, plain.state_dict(), "plain", allow_new=True)
    x_t, vel = random_grid(tracks), torch.randint(0, 10, (2, 64, 11))
    told = told_everything(tracks, x_t)
    assert told.onsets.shape == (2, 4, 3) and told.tells_dynamics()
    out = model(x_t, told, vel)
    assert [tuple(lg.shape) for lg in out] == [(2, 64, 90)] * 11 and len(out.velocity) == 11
    for a, b in zip(plain(x_t, velocity=vel), out, strict=True):  # zero at init: the same function
        assert torch.equal(a, b)
    emb = attribute_module(model)
    assert emb.num_tracks == 3 and emb.dynamics.weight.shape[0] == 3 * A.DYNAMICS_IDS
    with torch.no_grad():
        emb.dynamics_out.weight.normal_()
    louder = told.without(["key", "onsets", "register"])
    assert not torch.allclose(model(x_t, louder, vel)[5], model(x_t, None, vel)[5])  # dynamics reach the piano


@pytest.mark.parametrize("arch", architectures())
def test_a_model_without_velocity_refuses_dynamics_clearly(arch):
    tracks = get_tracks("pop909")
    model = build(arch, "pop909", "tiny", seq_len=64, attributes=True).eval()
    x_t = random_grid(tracks)
    told = told_everything(tracks, x_t)
    model(x_t, told.without(["dynamics"]))
    assert attribute_module(model).dynamics is None
    with pytest.raises(ValueError, match="built without velocity, so it has no dynamics"):
        model(x_t, told)


@pytest.mark.parametrize("tracks", ["trio", "melody"])
def test_one_column_sets_keep_their_attribute_weights(tracks):
    """The shipped trio and melody (and every checkpoint of them) have exactly these attribute tensors."""
    model = build("transformer", tracks, "tiny", attributes=True)
    K, E = len(model.tracks), model.config.emb_dim
    shapes = {k.split("attributes.")[1]: tuple(v.shape) for k, v in model.state_dict().items() if "attributes." in k}
    assert shapes == {"key.weight": (25, E), "onsets.weight": (K * 18, E), "register.weight": (K * 32, E),
                      "out.weight": (E, E), "out.bias": (E,)}


def test_an_instruments_bar_attributes_reach_only_its_slot_and_bar():
    emb = TrackEmbedding(SET, 8, attributes=True, velocity=True)
    torch.nn.init.normal_(emb.attributes.out.weight)
    torch.nn.init.normal_(emb.attributes.dynamics_out.weight)
    x_t = torch.zeros(1, 32, 4, dtype=torch.long)
    null = Attributes.null(1, 2, SET)
    for kind, value in (("onsets", 12), ("dynamics", 6)):
        told = null._map_bars(torch.clone)
        getattr(told, kind)[0, 1, 1] = value  # bar 1 of the piano
        changed = (emb(x_t, told) != emb(x_t, null)).any(-1)[0]  # [L, S]
        assert changed.shape == (32, 2) and changed[16:, 1].all() and changed.sum() == 16


# --- through the sample CLI, and learned ------------------------------------------------------------------


def velocity_model(tmp_path, velocity=True):
    torch.manual_seed(0)
    denoiser = build("conv", "melody,piano:3", "tiny", seq_len=64, velocity=velocity, attributes=True)
    hp = checkpoint_hparams("conv", "melody,piano:3", denoiser.config, NoiseConfig(timesteps=16), 64)
    return save_model(tmp_path / f"v{int(velocity)}.ckpt", denoiser, hp)


def test_the_sample_cli_tells_a_velocity_model_dynamics_and_refuses_them_without(tmp_path, capsys):
    from schmubert.sample import main

    ckpt = velocity_model(tmp_path)
    args = ["--bars", "4", "--steps", "4", "--num-samples", "1", "--no-wav", "--no-progress", "--device", "cpu"]
    assert main(["--checkpoint", str(ckpt), "--out", str(tmp_path / "out"), *args, "--dynamics", "piano=ff@1:3",
                 "--dynamics", "melody=40", "--density", "piano=12"]) == 0
    record = json.loads((tmp_path / "out" / "sample_000.json").read_text())
    assert record["told"]["dynamics"] == [["p"] * 4, [None, "ff", "ff", None]]
    assert record["told"]["onsets"][1] == ["12-13"] * 4
    assert main(["--checkpoint", str(velocity_model(tmp_path, velocity=False)), "--out", str(tmp_path / "no"),
                 *args, "--dynamics", "piano=ff"]) == 2
    assert "without velocity" in capsys.readouterr().err
    assert main(["--checkpoint", str(ckpt), "--out", str(tmp_path / "bad"), *args, "--dynamics", "piano=loud"]) == 2
    assert "unknown dynamics 'loud'" in capsys.readouterr().err


L, BATCH, STEPS = 64, 16, 150


def dynamic_melodies(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``[n, L, 1]`` melodies (a random note every other step) whose bars each have one random velocity bin."""
    x0 = torch.zeros(n, L, 1, dtype=torch.long)
    x0[:, ::2, 0] = torch.randint(on(60), on(72), (n, L // 2), generator=generator)
    level = torch.randint(1, 9, (n, L // 16), generator=generator).repeat_interleave(16, dim=1)
    return x0, torch.where(x0[..., 0] > 1, level, 0)[..., None]


def velocity_bits(model: ASD3PM, x0: torch.Tensor, v0: torch.Tensor, attrs: Attributes | None) -> float:
    """Cross-entropy (bits) of the onsets' velocity bins when every element is masked."""
    x_t = torch.full_like(x0, model.diffusion.mask_value()[0])
    with torch.no_grad():
        logits = model.denoiser.eval()(x_t, attrs, torch.full_like(x0, VELOCITY_MASK)).velocity[0]
    onset = x0[..., 0] > 1
    return float(F.cross_entropy(logits[onset], v0[..., 0][onset]) / math.log(2))


def test_a_tiny_velocity_model_learns_to_follow_the_dynamics_it_is_told():
    """Each bar's velocity is one of 8 bins at random: told nothing, 3 bits per onset at best; told the bar's
    dynamics (computed from the velocities, as in training), close to 0."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    model = ASD3PM.create("transformer", "melody", "tiny", NoiseConfig(timesteps=L), L,
                          backbone_overrides={"attributes": True, "velocity": True}, attributes={"cond_drop": 0.3})
    x_check, v_check = dynamic_melodies(128, g)
    told = Attributes.compute(x_check, model.track_list, v_check)
    assert torch.equal(told.dynamics[..., 0] + 1, v_check[:, ::16, 0])  # one bin per bar: the dynamics is it
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(STEPS):
        x0, v0 = dynamic_melodies(BATCH, g)
        t = model.diffusion.sample_t(BATCH)
        x_t, mask = model.diffusion.q_sample(x0, t)
        loss = model.step_loss(x_t, mask, t, x0, v0, model.training_attributes(x0, v0)).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    conditional, null = velocity_bits(model, x_check, v_check, told), velocity_bits(model, x_check, v_check, None)
    # measured (seed 0, 150 steps): told 0.03 bits per onset, told nothing 3.30 (log2 8 = 3.0)
    assert conditional < 1.0 and null > conditional + 1.5, (conditional, null)


def test_bench_control_measures_a_voice_set_instrument_and_its_dynamics(tmp_path, capsys, experiment):
    argv = ["--checkpoint", str(velocity_model(tmp_path)), "--samples", "2", "--steps", "2", "--scales", "0",
            "--keys", "C:major", "--density", "12", "--density-track", "piano", "--register", "piano=C4",
            "--dynamics", "piano=p,melody=ff", "--json", str(tmp_path / "rows.json")]
    assert experiment("bench_control").main(argv) == 0
    row = json.loads((tmp_path / "rows.json").read_text())["rows"][0]
    assert all(0 <= row[k] <= 1 for k in ("density_within_1", "register_within_3", "dynamics_within_1"))


def test_training_a_velocity_voice_set_stores_outlines_per_instrument_with_dynamics(tmp_path, dataset_writer):
    from schmubert.checkpoints import load_model
    from schmubert.train import main

    x, v = hand_grid()
    pieces = torch.cat([x, x], dim=1).expand(6, -1, -1).numpy()  # 4 bars
    velocity = torch.cat([v, v], dim=1).expand(6, -1, -1).numpy()
    data = dataset_writer(tmp_path / "data", "melody,piano:3", pieces[:4], pieces[4:])
    np.save(data / "train_velocity.npy", velocity[:4].astype(np.uint8))
    np.save(data / "valid_velocity.npy", velocity[4:].astype(np.uint8))
    argv = ["--arch", "transformer", "--tracks", "melody,piano:3", "--preset", "tiny", "--data", str(data),
            "--logger", "csv", "--out", str(tmp_path / "runs"), "--batch-size", "2", "--num-workers", "0",
            "--sample-every", "0", "--val-batches", "1", "--warmup-steps", "2", "--accelerator", "cpu",
            "--set", "velocity=true", "--set", "attributes=true", "--max-steps", "2", "--val-every", "2",
            "--name", "voices"]
    assert main(argv) == 0
    model = load_model(tmp_path / "runs" / "voices" / "checkpoints" / "last.ckpt")
    bank = model.hparams["attributes"]["outlines"]
    assert bank["shape"] == [4, 4, 2] and bank["voices"] == [1, 3]
    drawn = A.draw_outlines(bank, 1)
    assert torch.equal(drawn.dynamics[0], Attributes.compute(torch.as_tensor(pieces[:1]), SET,
                                                             torch.as_tensor(velocity[:1])).dynamics[0])


def test_repair_redraws_the_bars_that_miss_their_dynamics():
    from schmubert.diffusion import AbsorbingDiffusion
    from schmubert.sampling import sample
    from schmubert.tokens import mask_ids

    torch.manual_seed(0)
    tracks = get_tracks("melody,piano:3")
    model = build("conv", tracks, "tiny", seq_len=64, velocity=True, attributes=True).eval()
    diffusion = AbsorbingDiffusion(mask_ids(tracks))
    x = torch.zeros(2, 64, 4, dtype=torch.long)
    known = torch.zeros_like(x, dtype=torch.bool)
    velocity = torch.zeros_like(x)
    told = told_everything(tracks, x).without(["key", "onsets", "register"])  # dynamics alone
    stats: dict = {}
    sample(model, diffusion, x, known, 4, torch.Generator().manual_seed(0), attributes=told, tracks=tracks,
           velocity=velocity, cfg_scale=0.0, repair=1, repair_steps=2, stats=stats)
    assert stats["repaired"] > 0  # an untrained model misses told dynamics; repair redraws those bars
    stats = {}
    sample(model, diffusion, x, known, 4, torch.Generator().manual_seed(0), attributes=told, tracks=tracks,
           velocity=velocity, cfg_scale=0.0, repair=1, repair_steps=2, stats=stats, repair_kinds="key,onsets")
    assert stats["repaired"] == 0  # dynamics not held: nothing to redraw
