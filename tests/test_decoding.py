"""schmubert.decoding: one resolution of a model's decoding defaults, the same for the sample CLI and the editor."""

import json

import numpy as np
import pytest
import torch

from schmubert import attributes as A
from schmubert import decoding, sample
from schmubert.checkpoints import held_out_pieces, load_model
from schmubert.copy_prior import NEW_PIECE_SHARPNESS, SAMPLING_SHARPNESS
from schmubert.editor import jobs
from schmubert.editor.jobs import Options, Sampler
from schmubert.sampling import SamplerOptions
from schmubert.tokens import STEPS_PER_BAR, midi_to_tokens, tokens_to_midi

BAR = STEPS_PER_BAR


@pytest.fixture(scope="module", params=["trio", "melody"])
def shipped(request):
    return load_model(f"pretrained:{request.param}")


def new_piece(model):
    """The CLI's unconditional scenario: an empty window, nothing known."""
    zeros = np.zeros((model.steps, len(model.tracks)), dtype=np.int64)
    return sample.Scenario(zeros, np.zeros_like(zeros, dtype=bool), "unconditional", [])


def infill(model, piece):
    """Bars 8:12 of every track of ``piece`` regenerated (a scenario of both front ends)."""
    known = np.ones(piece.shape, dtype=bool)
    known[8 * BAR:12 * BAR] = False
    return sample.Scenario(piece, known, "infill", [])


def held_out(model):
    return np.asarray(held_out_pieces(model)[0][0], dtype=np.int64)


def test_the_shipped_models_tell_new_pieces_their_outline_and_infills_their_key(shipped):
    new = decoding.resolve(decoding.Request(new_piece=True, anything_known=False), shipped)
    assert new.outline == "auto" and new.outlined and new.key_from == "outline" and new.key is None
    assert "key" in new.sampler.repaired_kinds()  # an outline's key is told, so it is held
    assert new.copy_sharpness == NEW_PIECE_SHARPNESS
    assert new.guidance_scale == shipped.sampler_defaults.get("cfg_scale", 2.0)
    gap = decoding.resolve(decoding.Request(new_piece=False, anything_known=True), shipped)
    assert not gap.outlined and gap.key_from == "piece" and "key" not in gap.sampler.repaired_kinds()
    assert gap.copy_sharpness == SAMPLING_SHARPNESS and gap.guidance_scale == new.guidance_scale
    assert new.describe().startswith("told a training window's outline, guidance ")
    assert gap.describe().startswith("told the piece's own key, ")


def test_an_edit_in_context_told_the_piece_s_own_key_is_not_guided_unless_asked(shipped):
    def plan(**asked):
        sampler = asked.pop("sampler", SamplerOptions())
        return decoding.resolve(decoding.Request(new_piece=False, anything_known=True, sampler=sampler, **asked),
                                shipped)

    scale = shipped.sampler_defaults.get("cfg_scale", 2.0)
    assert plan(in_context=True).guidance_scale == 0.0  # an infill: the song around it says the key
    assert plan(in_context=False).guidance_scale == scale  # an accompaniment: its tracks are drawn whole
    assert plan(in_context=True, key="D:minor").guidance_scale == scale  # an asked key is guided
    assert plan(in_context=True, sampler=SamplerOptions(cfg_scale=1.5)).guidance_scale == 1.5
    assert plan(in_context=True, sampler=SamplerOptions(cfg_kinds="key,onsets")).guidance_scale == scale
    new = decoding.resolve(decoding.Request(new_piece=True, anything_known=False, in_context=True), shipped)
    assert new.guidance_scale == scale  # a new piece's key is an outline's or drawn, not the piece's


def test_what_is_asked_wins_over_the_shipped_defaults(shipped):
    def plan(**asked):
        return decoding.resolve(decoding.Request(new_piece=True, anything_known=False, **asked), shipped)

    keyed = plan(key="D:minor")  # the outline was chosen for pieces asked nothing
    assert keyed.outline == "none" and not keyed.outlined and keyed.key_from == "asked" and keyed.key == "D:minor"
    assert plan(targets=True).outline == "none" and plan(targets=True).key_from == "drawn"
    both = plan(key="D:minor", outline="auto")
    assert both.outlined and both.key == "D:minor"
    assert plan(outline="none").key_from == "drawn" and "key" not in plan(outline="none").sampler.repaired_kinds()
    assert plan(copy_sharpness=2.0).copy_sharpness == 2.0
    assert plan(sampler=SamplerOptions(cfg_scale=0.5)).guidance_scale == 0.5
    assert decoding.guidance_scale(shipped) == plan().guidance_scale
    assert plan(sampler=SamplerOptions(repair_steps=32)).sampler.repair_step_count() == 32


def test_repair_takes_the_model_s_shipped_rounds_and_length(shipped):
    """Issue 44, by measurement: the trio ships repair rounds of 4 steps, the melody one round (each kept its
    held-out figures); what a model ships none of is the sampler's 2 rounds of 8 steps; what is asked wins."""
    expected = {"trio": (2, 4), "melody": (1, 8)}[shipped.hparams["tracks"]]
    plan = decoding.resolve(decoding.Request(new_piece=True, anything_known=False), shipped)
    assert (plan.sampler.repair_rounds(), plan.sampler.repair_step_count()) == expected
    assert (plan.record()["repair"], plan.record()["repair_steps"]) == expected
    assert f"repair {expected[0]} holding" in plan.describe()
    asked = decoding.resolve(decoding.Request(new_piece=True, anything_known=False,
                                              sampler=SamplerOptions(repair=3)), shipped)
    assert asked.sampler.repair_rounds() == 3
    assert (SamplerOptions().repair_rounds(), SamplerOptions().repair_step_count()) == (2, 8)


def test_told_draws_an_outline_or_tells_the_plan_s_key(shipped):
    bars = shipped.steps // BAR
    new = decoding.resolve(decoding.Request(new_piece=True, anything_known=False), shipped)
    told = decoding.told(new, shipped, 2, bars, generator=torch.Generator().manual_seed(0))
    assert told.shape == (2, bars, len(shipped.tracks)) and (told.onsets != A.ONSETS_NULL).any()
    piece = torch.as_tensor(held_out(shipped))[None]
    gap = decoding.resolve(decoding.Request(new_piece=False, anything_known=True), shipped)
    own = decoding.told(gap, shipped, 3, bars, piece)
    assert own.key.tolist() == [int(A.estimate_key(piece, shipped.tracks)[0])] * 3 and own.onsets.eq(
        A.ONSETS_NULL).all()
    with pytest.raises(ValueError, match="no piece was given"):
        decoding.told(gap, shipped, 1, bars)


def cli_and_editor(model, scen, cfg: sample.SampleConfig, options: Options):
    cli = sample.decoding_plan(cfg, model, scen)
    editor = decoding.resolve(options.request(scen.x, scen.known, model.tracks), model)
    return cli, editor


@pytest.mark.parametrize("cli, editor", [
    ({}, {}),
    ({"key": "D:minor"}, {"key": "D:minor"}),
    ({"key": "none"}, {"key": "any"}),
    ({"density": ["melody=4"]}, {"density": {"melody": 4.0}}),
    ({"note_density": 6.0}, {"note_density": 6.0}),
    ({"sampler": SamplerOptions(cfg_scale=1.0, repair=1)}, {"cfg_scale": 1.0, "repair": 1}),
])
@pytest.mark.parametrize("scenario", ["new piece", "infill"])
def test_the_editor_and_the_cli_resolve_the_same_plan(shipped, scenario, cli, editor):
    scen = new_piece(shipped) if scenario == "new piece" else infill(shipped, held_out(shipped))
    cli_plan, editor_plan = cli_and_editor(shipped, scen, sample.SampleConfig(**cli), Options(**editor))
    assert cli_plan == editor_plan
    asks = bool(set(cli) - {"sampler"})  # a key, none included, or targets: no outline
    assert cli_plan.outlined == (scenario == "new piece" and not asks)


def test_an_editor_piece_is_new_only_when_nothing_is_kept_and_the_lanes_are_empty(shipped):
    empty = new_piece(shipped)
    assert jobs.is_new_piece(empty.x, empty.known, shipped.tracks)
    piece = held_out(shipped)
    assert not jobs.is_new_piece(piece, empty.known, shipped.tracks)  # its own key to keep
    partly = empty.known.copy()
    partly[:BAR] = True
    assert not jobs.is_new_piece(empty.x, partly, shipped.tracks)


def test_an_editor_job_for_a_new_piece_is_the_cli_s_unconditional_sample(tmp_path, monkeypatch):
    """The shipped trio: a new piece drawn in the editor is told an outline, and with the CLI's seed and options
    it is the CLI's sample, note for note."""
    model = load_model("pretrained:trio")
    seen = []
    real = jobs.editor_attributes

    def spy(*args, **kwargs):
        seen.append(real(*args, **kwargs))
        return seen[-1]

    monkeypatch.setattr(jobs, "editor_attributes", spy)
    empty = new_piece(model)
    sampler = Sampler(model)
    try:
        job = sampler.submit(empty.x, empty.known, Options(steps=2, seed=5, repair=0))
        while not job.finished:
            job.cancel_event.wait(0.05)
    finally:
        sampler.close()
    assert job.state == "done", job.error
    told = A.describe(seen[0], 0)
    assert any(n is not None for n in told["onsets"][0])  # a training window's outline, not a key alone
    out = tmp_path / "cli"
    assert sample.main(["--checkpoint", "pretrained:trio", "--steps", "2", "--seed", "5", "--repair", "0",
                        "--out", str(out), "--no-wav", "--no-progress"]) == 0
    record = json.loads((out / "sample_000.json").read_text())
    assert record["told"] == told and record["decoding"]["outlined"]
    tokens_to_midi(job.result, "trio").write(str(tmp_path / "editor.mid"))
    assert np.array_equal(midi_to_tokens(out / "sample_000.mid", "trio", model.steps),
                          midi_to_tokens(tmp_path / "editor.mid", "trio", model.steps))


@pytest.mark.parametrize(("name", "rounds", "steps"), [("trio", 2, 4), ("melody", 1, 8)])
def test_the_sample_cli_repairs_with_the_shipped_model_s_defaults(tmp_path, name, rounds, steps):
    """A new piece through the CLI with nothing asked of the repair: the record says the model's rounds and steps;
    asked ones win."""
    for argv, expected in (([], (rounds, steps)), (["--repair", "3", "--repair-steps", "5"], (3, 5))):
        out = tmp_path / f"{name}-{len(argv)}"
        assert sample.main(["--checkpoint", f"pretrained:{name}", "--steps", "2", "--seed", "1", "--out", str(out),
                            "--no-wav", "--no-progress", *argv]) == 0
        decoded = json.loads((out / "sample_000.json").read_text())["decoding"]
        assert (decoded["repair"], decoded["repair_steps"]) == expected


def test_the_sample_cli_guides_an_infill_only_where_asked_and_an_accompaniment_always(tmp_path):
    """Through the CLI with pretrained:trio: an infill told the piece's own key runs unguided, one asked a scale
    keeps it, an accompaniment (bass and drums drawn whole) keeps the model's scale."""
    scale = load_model("pretrained:trio").sampler_defaults["cfg_scale"]
    for argv, expected in ((["--infill", "16:32"], 0.0), (["--infill", "16:32", "--cfg-scale", "1.25"], 1.25),
                           (["--generate-tracks", "bass,drums"], scale)):
        out = tmp_path / str(len(list(tmp_path.iterdir())))
        assert sample.main(["--checkpoint", "pretrained:trio", "--steps", "2", "--seed", "1", "--out", str(out),
                            "--no-wav", "--no-progress", *argv]) == 0
        assert json.loads((out / "sample_000.json").read_text())["decoding"]["guidance_scale"] == expected
