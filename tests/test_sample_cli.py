import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from schmubert import attributes as A
from schmubert.backbones import build
from schmubert.checkpoints import checkpoint_hparams, save_model
from schmubert.diffusion import NoiseConfig
from schmubert.sample import main
from schmubert.tokens import STEPS_PER_BAR, canonicalize, get_tracks, midi_to_tokens, tokens_to_midi, tokens_to_notes

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "corpus"
BAR = STEPS_PER_BAR
FAST = ["--steps", "6", "--no-progress", "--no-wav"]
A_TRIO = get_tracks("trio")


@pytest.fixture(scope="module")
def song(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """A real 64-bar trio written back canonically, and its tokens."""
    x = canonicalize(midi_to_tokens(sorted((CORPUS / "lakh-trio-64bar").glob("*.mid"))[0], "trio", 1024))
    path = tmp_path_factory.mktemp("songs") / "song.mid"
    tokens_to_midi(x, "trio").write(str(path))
    return path, x


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, song) -> Path:
    """A tiny untrained trio transformer (64-bar window, T = 32) whose 'validation set' holds two pieces."""
    root = tmp_path_factory.mktemp("model")
    np.save(root / "valid.npy", np.stack([song[1], song[1][::-1]]).astype(np.uint16))
    torch.manual_seed(0)
    denoiser = build("transformer", "trio", "tiny")
    hp = checkpoint_hparams("transformer", "trio", denoiser.config, NoiseConfig(timesteps=32), 1024,
                            data={"path": str(root)})
    return save_model(root / "runs" / "tiny" / "checkpoints" / "last.ckpt", denoiser, hp)


def run(ckpt, out, *args):
    return main(["--checkpoint", str(ckpt), "--out", str(out), *FAST, *args])


def tokens(path, bars=64):
    return midi_to_tokens(path, "trio", bars * BAR)


def test_infill_leaves_everything_outside_the_bars_identical(ckpt, song, tmp_path):
    path, x = song
    assert run(ckpt, tmp_path, "--input", str(path), "--infill", "32:48") == 0
    y = tokens(tmp_path / "sample_000.mid")
    outside = np.ones(len(x), bool)
    outside[32 * BAR:48 * BAR] = False
    assert np.array_equal(y[outside], x[outside])
    assert not np.array_equal(y[~outside], x[~outside])
    for before, after in zip(tokens_to_notes(x, "trio"), tokens_to_notes(y, "trio"), strict=True):
        keep = lambda n: n[(n[:, 1] <= 32 * BAR) | (n[:, 0] >= 48 * BAR)]
        assert {tuple(n) for n in keep(before)} <= {tuple(n) for n in after}
    record = json.loads((tmp_path / "sample_000.json").read_text())
    assert record["scenario"] == "infill" and record["regenerated_elements"] == 16 * BAR * 3
    assert len(record["checkpoint_sha256"]) == 64 and record["seed"] == 0
    assert (tmp_path / "sample_000.png").read_bytes()[:4] == b"\x89PNG"


def test_infills_fill_outside_in_by_default(ckpt, song, tmp_path, monkeypatch):
    import schmubert.sampling as sampling

    distances = []
    real = sampling.outside_in_reveal

    def spy(masked, distance, step, generator):
        distances.append(distance[masked].min().item())  # the nearest bar still masked, per step
        return real(masked, distance, step, generator)

    monkeypatch.setattr(sampling, "outside_in_reveal", spy)
    path, _ = song
    assert run(ckpt, tmp_path, "--input", str(path), "--infill", "32:48") == 0
    # 6 steps over bars 32:48: the edge bars (1 bar from the context) first, the middle ones (up to 8) last
    assert distances == sorted(distances) and distances[0] == 1 and distances[-1] > 4
    assert json.loads((tmp_path / "sample_000.json").read_text())["options"]["sampler"]["order"] == "outside-in"


def test_sampler_options_reach_the_sampler_and_the_record(ckpt, song, tmp_path):
    path, x = song
    args = ["--input", str(path), "--infill", "16:48", "--order", "confidence", "--schedule", "cosine",
            "--remask", "cap", "--remask-eta", "0.1", "--remask-order", "confidence"]
    assert run(ckpt, tmp_path, *args) == 0
    y = tokens(tmp_path / "sample_000.mid")
    outside = np.ones(len(x), bool)
    outside[16 * BAR:48 * BAR] = False
    assert np.array_equal(y[outside], x[outside])
    sampler = json.loads((tmp_path / "sample_000.json").read_text())["options"]["sampler"]
    assert sampler["schedule"] == "cosine" and sampler["remask"] == "cap" and sampler["remask_eta"] == 0.1


def test_bf16_precision_samples(ckpt, tmp_path):
    from schmubert.precision import native_bf16
    if not native_bf16(torch.device("cpu")):
        pytest.skip("this CPU has no native bf16")
    assert run(ckpt, tmp_path, "--bars", "4", "--precision", "bf16") == 0
    record = json.loads((tmp_path / "sample_000.json").read_text())
    assert record["options"]["precision"] == "bf16"


def test_accompaniment_keeps_the_given_track(ckpt, song, tmp_path):
    path, x = song
    assert run(ckpt, tmp_path, "--input", str(path), "--generate-tracks", "bass,drums", "--num-samples", "2",
               "--batch-size", "2") == 0
    for i in range(2):
        y = tokens(tmp_path / f"sample_{i:03d}.mid")
        assert np.array_equal(y[:, 0], x[:, 0])
        assert not np.array_equal(y[:, 1:], x[:, 1:])


def test_long_continuation_keeps_the_start(ckpt, song, tmp_path):
    path, x = song
    args = ["--input", str(path), "--continue-bars", "16", "--bars", "96", "--hop", "32"]
    assert run(ckpt, tmp_path, *args) == 0
    y = tokens(tmp_path / "sample_000.mid", 96)
    assert np.array_equal(y[:16 * BAR], x[:16 * BAR])
    assert json.loads((tmp_path / "sample_000.json").read_text())["bars"] == 96


def test_same_seed_same_output(ckpt, tmp_path):
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        assert run(ckpt, tmp_path, "--name", name, "--seed", str(seed), "--order", "confidence") == 0
    a, b, c = (tokens(tmp_path / f"{n}_000.mid") for n in "abc")
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_validation_piece_when_no_input_and_interpolation(ckpt, song, tmp_path):
    path, x = song
    assert run(ckpt, tmp_path, "--interpolate", str(path), "--keep-bars", "8") == 0
    y = tokens(tmp_path / "sample_000.mid")
    assert np.array_equal(y[-8 * BAR:], x[-8 * BAR:])  # the end of the second piece
    record = json.loads((tmp_path / "sample_000.json").read_text())
    assert "valid.npy" in record["sources"][0] and record["scenario"] == "interpolation"


def test_newest_checkpoint_and_guidance_record(ckpt, tmp_path):
    runs = ckpt.parents[2]
    out = tmp_path / "g"
    args = ["--runs", str(runs), "--out", str(out), *FAST, "--bars", "8", "--note-density", "4"]
    assert main(args) == 0
    record = json.loads((out / "sample_000.json").read_text())
    assert record["checkpoint"] == str(ckpt) and record["scenario"] == "unconditional"
    assert record["note_density"]["mse"] < 8  # unguided, the untrained model plays ~15 onsets a bar: mse ~130


def test_a_short_piece_is_drawn_on_the_whole_window_not_over_known_silence(ckpt, tmp_path, monkeypatch):
    import schmubert.sample as sample_cli

    seen = {}
    real = sample_cli.sample_long

    def spy(denoiser, diffusion, x, known, *args, **kwargs):
        seen["known"] = known.clone()
        return real(denoiser, diffusion, x, known, *args, **kwargs)

    monkeypatch.setattr(sample_cli, "sample_long", spy)
    assert run(ckpt, tmp_path, "--bars", "8") == 0  # a 64-bar model
    assert seen["known"].shape[1] == 64 * STEPS_PER_BAR and not seen["known"].any()  # nothing told to be silent
    after = tokens(tmp_path / "sample_000.mid")[8 * STEPS_PER_BAR:]  # and cut to the 8 bars asked:
    assert after[:, :2].max() <= 1 and not after[:, 2].any()  # no note-on or hit after them (note-offs may end)


def test_refuses_to_overwrite(ckpt, tmp_path, capsys):
    assert run(ckpt, tmp_path, "--bars", "4") == 0
    assert run(ckpt, tmp_path, "--bars", "4") == 2
    assert "--overwrite" in capsys.readouterr().err
    assert run(ckpt, tmp_path, "--bars", "4", "--overwrite") == 0


@pytest.mark.parametrize("args, message", [
    (["--input", str(CORPUS / "bad-input" / "zero-bytes.mid"), "--infill", "0:1"], "zero-bytes.mid"),
    (["--input", str(CORPUS / "bad-input" / "text-not-midi.mid"), "--infill", "0:1"], "unreadable MIDI"),
    (["--infill", "60:70"], "outside the piece"),
    (["--infill", "32-48"], "bad bar range"),
    (["--generate-tracks", "piano"], "no track piano"),
    (["--continue-bars", "80"], "--continue-bars 80"),
    (["--infill", "1:2", "--continue-bars", "4"], "choose one"),
    (["--infill", "1:2", "--remask-loop", "0.5"], "re-masking rate"),
    ([], "would be ignored"),
])
def test_bad_input_exits_with_its_message(ckpt, song, tmp_path, capsys, args, message):
    if "--input" not in args:
        args = ["--input", str(song[0]), *args]
    assert run(ckpt, tmp_path, *args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_bad_checkpoints(tmp_path, capsys):
    wrong = tmp_path / "wrong.ckpt"
    torch.save({"state_dict": {}}, wrong)
    assert run(wrong, tmp_path) == 2
    assert "not a SCHmUBERT" in capsys.readouterr().err



def test_no_run_falls_back_to_the_shipped_model_and_says_so(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("schmubert.checkpoints.WEIGHTS_DIR", tmp_path / "no-weights")
    assert main(["--runs", str(tmp_path / "nothing"), "--out", str(tmp_path), "--tracks", "melody", *FAST]) == 2
    err = capsys.readouterr().err
    assert "using the shipped model pretrained:melody" in err and "pretrained:melody: no such pretrained" in err


def test_subprocess_help_and_error():
    cli = [sys.executable, "-m", "schmubert.sample"]
    help_run = subprocess.run([*cli, "--help"], capture_output=True, text=True)
    assert help_run.returncode == 0 and "examples:" in help_run.stdout and "--infill" in help_run.stdout
    assert "--variation" in help_run.stdout and "--time-signature NUM/DEN" in help_run.stdout
    bad = subprocess.run([*cli, "--checkpoint", "missing.ckpt"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip() == "error: missing.ckpt: checkpoint not found"


# --- takes that change nothing, meters from the notes ------------------------------------------------------------


class Echo:
    """``generate_takes`` giving the input back as its first ``echoes`` takes (as a copy prior copying a repeated
    section or a silent instrument drawing nothing can), then drawing; ``calls``: the (seed, copy sharpness) of
    each."""

    def __init__(self, real, echoes: int = 1):
        self.real, self.echoes, self.calls = real, echoes, []

    def __call__(self, cfg, model, scen, *args, **kwargs):
        self.calls.append((cfg.seed, cfg.copy_sharpness))
        out, velocity = self.real(cfg, model, scen, *args, **kwargs)
        return (np.repeat(scen.x[None], len(out), axis=0) if len(self.calls) <= self.echoes else out), velocity


@pytest.fixture
def echo(monkeypatch) -> Echo:
    import schmubert.sample as sample_cli

    fake = Echo(sample_cli.generate_takes)
    monkeypatch.setattr(sample_cli, "generate_takes", fake)
    return fake


def test_a_take_that_changes_nothing_warns_and_variation_draws_again(ckpt, song, tmp_path, capsys, echo):
    path, x = song
    assert run(ckpt, tmp_path / "a", "--input", str(path), "--infill", "8:12") == 0
    out, err = capsys.readouterr()
    assert err.startswith("warning: bars 8:12 came back unchanged: the model drew the same notes again; try another "
                          "--seed, or --variation")
    assert json.loads((tmp_path / "a" / "sample_000.json").read_text())["unchanged"].startswith("bars 8:12 came back")
    assert np.array_equal(tokens(tmp_path / "a" / "sample_000.mid"), x)  # the file came back as it was
    echo.calls.clear()
    assert run(ckpt, tmp_path / "b", "--input", str(path), "--infill", "8:12", "--variation") == 0
    out, err = capsys.readouterr()
    assert ("variation: sample 0 came back unchanged; drawn again with seed 1 (1 try): it differs from the input "
            "now") in out and "warning" not in err
    assert echo.calls == [(0, None), (1, 4.0)]  # the next seed, half the default copy sharpness of an infill
    record = json.loads((tmp_path / "b" / "sample_000.json").read_text())
    assert record["variation"] == {"seed": 1, "copy_sharpness": None, "tries": 1} and "unchanged" not in record
    assert not np.array_equal(tokens(tmp_path / "b" / "sample_000.mid")[8 * BAR:12 * BAR], x[8 * BAR:12 * BAR])


def test_variation_gives_up_after_its_tries_and_still_warns(ckpt, song, tmp_path, capsys, echo):
    from schmubert.sample import VARIATION_TRIES

    echo.echoes = VARIATION_TRIES + 1
    assert run(ckpt, tmp_path, "--input", str(song[0]), "--infill", "8:12", "--variation") == 0
    out, err = capsys.readouterr()
    assert "drawn again with seed 3 (3 tries): still unchanged" in out and "warning: bars 8:12" in err
    assert [seed for seed, _ in echo.calls] == [0, 1, 2, 3] and echo.calls[-1][1] == 1.0


def test_none_is_an_instrument_choice_not_the_default():
    """``--melody-track none`` leaves the song's melody out (it was read as no option: the evidence's choice)."""
    from schmubert.config import from_args
    from schmubert.sample import SampleConfig, parser

    cfg = from_args(SampleConfig, parser().parse_args(["--melody-track", "none", "--bass-track", "3", "--steps",
                                                       "none"]))
    assert (cfg.melody_track, cfg.bass_track, cfg.drum_track, cfg.steps) == ("none", "3", None, None)


def test_pop909_songs_are_read_in_4_4_from_their_notes(ckpt, tmp_path, capsys):
    pop = CORPUS / "pop909"
    assert run(ckpt, tmp_path / "a", "--input", str(pop / "022.mid"), "--infill", "10:12") == 0
    assert "note: 022.mid: its time signature 1/4 makes bars of one beat" in capsys.readouterr().out
    assert run(ckpt, tmp_path / "b", "--input", str(pop / "034.mid"), "--infill", "10:12") == 2
    assert "notes move in 3 beats to the bar" in capsys.readouterr().err
    assert run(ckpt, tmp_path / "b", "--input", str(pop / "034.mid"), "--infill", "10:12",
               "--time-signature", "4/4") == 0
    assert "note: 034.mid: read in 4/4 as asked (the file says 1/4)" in capsys.readouterr().out


# --- attributes (schmubert.attributes) ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def cond_ckpt(tmp_path_factory, song) -> Path:
    """A tiny untrained conditional trio transformer whose training keys were all E:minor."""
    root = tmp_path_factory.mktemp("cond-model")
    torch.manual_seed(0)
    denoiser = build("transformer", "trio", "tiny", attributes=True)
    prior = [0.0] * A.KEY_IDS
    prior[A.parse_key("E:minor")] = 1.0
    hp = checkpoint_hparams("transformer", "trio", denoiser.config, NoiseConfig(timesteps=32), 1024,
                            attributes={"cond_drop": 0.3, "key_prior": prior})
    return save_model(root / "cond.ckpt", denoiser, hp)


@pytest.fixture(scope="module")
def outlined_ckpt(tmp_path_factory, song) -> tuple[Path, list[dict]]:
    """``cond_ckpt``'s model storing the outlines of two training pieces (the song, and the song without its
    melody), and those outlines' first 8 bars as the JSON record describes them."""
    root = tmp_path_factory.mktemp("outlined-model")
    torch.manual_seed(0)
    denoiser = build("transformer", "trio", "tiny", attributes=True)
    quiet = song[1].copy()
    quiet[:, 0] = 0
    pieces = np.stack([song[1], quiet])
    hp = checkpoint_hparams("transformer", "trio", denoiser.config, NoiseConfig(timesteps=32), 1024,
                            attributes={"cond_drop": 0.3, **A.data_summaries(pieces, A_TRIO)})
    own = A.Attributes.compute(torch.as_tensor(pieces).long(), A_TRIO).bars(0, 8)
    return save_model(root / "outlined.ckpt", denoiser, hp), [A.describe(own, i) for i in range(2)]


def told(out, index=0):
    return json.loads((out / f"sample_{index:03d}.json").read_text())["told"]


def test_new_pieces_are_told_a_training_outline_and_what_is_asked_replaces_its_part(outlined_ckpt, song, tmp_path):
    ckpt, outlines = outlined_ckpt
    assert outlines[0]["onsets"][0] != outlines[1]["onsets"][0] == [0] * 8  # the second has no melody
    assert run(ckpt, tmp_path / "a", "--bars", "8", "--num-samples", "6", "--outline", "auto") == 0
    drawn = [told(tmp_path / "a", i) for i in range(6)]
    assert all(d in outlines for d in drawn) and len({json.dumps(d) for d in drawn}) == 2
    assert run(ckpt, tmp_path / "b", "--bars", "8", "--outline", "auto", "--key", "D:minor", "--density",
               "melody=3@0:2") == 0
    asked = told(tmp_path / "b")
    base = next(o for o in outlines if o["onsets"][1] == asked["onsets"][1])  # the outline it drew
    assert asked["key"] == "D:minor" and asked["onsets"][0] == [3, 3] + base["onsets"][0][2:]
    assert asked["register"] == base["register"]
    assert run(ckpt, tmp_path / "c", "--bars", "8") == 0  # the default: no outline
    assert told(tmp_path / "c")["onsets"] == [[None] * 8] * 3
    assert run(ckpt, tmp_path / "d", "--input", str(song[0]), "--infill", "2:4", "--outline", "auto") == 0
    assert told(tmp_path / "d")["onsets"] == [[None] * 64] * 3  # a given piece is its own outline


def test_a_model_that_ships_outlines_tells_them_to_pieces_asked_nothing_unless_told_none(outlined_ckpt, tmp_path):
    from schmubert.checkpoints import SAMPLER_HPARAM

    ckpt, outlines = outlined_ckpt
    state = torch.load(ckpt, weights_only=False)
    state["hyper_parameters"][SAMPLER_HPARAM] = {"outline": "auto"}
    torch.save(state, tmp_path / "ships-outlines.ckpt")
    assert run(tmp_path / "ships-outlines.ckpt", tmp_path / "a", "--bars", "8", "--num-samples", "2") == 0
    assert told(tmp_path / "a") in outlines
    record = json.loads((tmp_path / "a" / "sample_000.json").read_text())
    assert record["options"]["outline"] == "auto"  # the choice it made, not 'model'
    assert run(tmp_path / "ships-outlines.ckpt", tmp_path / "b", "--bars", "8", "--outline", "none") == 0
    assert told(tmp_path / "b")["onsets"] == [[None] * 8] * 3
    assert run(tmp_path / "ships-outlines.ckpt", tmp_path / "c", "--bars", "8", "--key", "D:minor") == 0
    assert told(tmp_path / "c")["onsets"] == [[None] * 8] * 3  # its choice was for pieces told nothing
    assert run(tmp_path / "ships-outlines.ckpt", tmp_path / "d", "--bars", "8", "--key", "D:minor",
               "--outline", "auto") == 0
    assert told(tmp_path / "d") in [{**o, "key": "D:minor"} for o in outlines]


def told_key(out, index=0):
    return json.loads((out / f"sample_{index:03d}.json").read_text())["key"]["told"]


@pytest.mark.parametrize("option", [["--key", "D:minor"], ["--density", "melody=4"], ["--register", "bass=40"]])
def test_asking_an_old_checkpoint_for_attributes_names_it(ckpt, tmp_path, capsys, option):
    assert run(ckpt, tmp_path, "--bars", "4", *option) == 2
    err = capsys.readouterr().err
    assert str(ckpt) in err and "trained without attributes" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("name", ["trio", "melody"])
def test_the_shipped_models_take_a_key(tmp_path, name):
    out = tmp_path / name
    assert main(["--checkpoint", f"pretrained:{name}", "--out", str(out), "--key", "D:minor", "--bars", "8",
                 *FAST]) == 0
    assert told_key(out) == "D:minor"


def test_repair_holds_an_asked_key_but_not_a_drawn_or_estimated_one():
    from dataclasses import replace

    from schmubert.decoding import held_kinds
    from schmubert.sampling import SamplerOptions

    options = SamplerOptions(repair=2)
    assert held_kinds(options, key_asked=True).repaired_kinds() == A.KINDS
    assert held_kinds(options, key_asked=False).repaired_kinds() == ("onsets", "register", "dynamics")
    assert held_kinds(replace(options, repair_kinds="key"), key_asked=False).repaired_kinds() == ()


def test_old_checkpoints_sample_as_before_without_attributes(ckpt, tmp_path):
    from schmubert.checkpoints import load_model

    model = load_model(ckpt)
    assert not model.denoiser.conditional
    assert run(ckpt, tmp_path, "--bars", "4") == 0
    assert "key" not in json.loads((tmp_path / "sample_000.json").read_text())


def test_key_is_told_drawn_from_the_training_keys_or_the_inputs(cond_ckpt, song, tmp_path):
    assert run(cond_ckpt, tmp_path / "a", "--bars", "8", "--num-samples", "2") == 0
    assert told_key(tmp_path / "a") == told_key(tmp_path / "a", 1) == "E:minor"  # the stored distribution
    assert run(cond_ckpt, tmp_path / "b", "--bars", "8", "--key", "Db:minor", "--cfg-scale", "1.5") == 0
    assert told_key(tmp_path / "b") == "C#:minor"
    assert run(cond_ckpt, tmp_path / "c", "--bars", "8", "--key", "none") == 0
    assert told_key(tmp_path / "c") == "none"
    assert run(cond_ckpt, tmp_path / "d", "--input", str(song[0]), "--infill", "2:4") == 0
    own = A.key_name(int(A.estimate_key(torch.as_tensor(song[1])[None].long(), A_TRIO)[0]))
    assert told_key(tmp_path / "d") == own


def test_a_model_s_own_guidance_scale_is_the_default_and_an_asked_one_wins(tmp_path):
    torch.manual_seed(0)
    denoiser = build("transformer", "trio", "tiny", attributes=True)
    torch.nn.init.normal_(denoiser.inputs.embed.attributes.out.weight)  # zero at init: the key would do nothing
    hp = checkpoint_hparams("transformer", "trio", denoiser.config, NoiseConfig(timesteps=32), 1024,
                            attributes={"cond_drop": 0.3, "key_prior": [1.0] * A.KEY_IDS})
    plain = save_model(tmp_path / "plain.ckpt", denoiser, hp)  # ships none: the sampler's 2
    unguided = save_model(tmp_path / "own.ckpt", denoiser, {**hp, "sampler": {"cfg_scale": 0.0}})

    def sampled(ckpt, name, *args):
        assert run(ckpt, tmp_path / name, "--bars", "4", "--repair", "0", *args) == 0
        record = json.loads((tmp_path / name / "sample_000.json").read_text())
        return tokens(tmp_path / name / "sample_000.mid", 4), record["options"]["sampler"]["cfg_scale"]

    own, own_scale = sampled(unguided, "own")
    asked, _ = sampled(plain, "asked", "--cfg-scale", "0")
    default, _ = sampled(plain, "default")
    overridden, overridden_scale = sampled(unguided, "overridden", "--cfg-scale", "2")
    assert own_scale == 0.0 and overridden_scale == 2.0  # the record says which scale drew the piece
    assert np.array_equal(own, asked) and np.array_equal(overridden, default)
    assert not np.array_equal(own, default)  # guidance changes the untrained model's draws


def test_density_and_register_targets_land_in_their_bars(cond_ckpt, song):
    from schmubert.checkpoints import load_model
    from schmubert.sample import SampleConfig, Scenario, make_attributes, make_guidance

    model = load_model(cond_ckpt)
    scen = Scenario(np.zeros((8 * BAR, 3), dtype=np.int64), np.zeros((8 * BAR, 3), dtype=bool), "unconditional", [])
    cfg = SampleConfig(num_samples=2, key="D:minor", density=["melody=12@2:4", "drums=4"],
                       register=["bass=E2@0:2"])
    attrs = make_attributes(cfg, model, scen)
    assert attrs.shape == (2, 8, 3) and attrs.key.tolist() == [14, 14]
    assert attrs.onsets[0, :, 0].tolist() == [A.ONSETS_NULL] * 2 + [12] * 2 + [A.ONSETS_NULL] * 4
    assert attrs.onsets[0, :, 2].tolist() == [4] * 8
    assert attrs.register[0, :, 1].tolist() == [6, 6] + [A.REGISTER_NULL] * 6
    # --note-density keeps its meaning: on a conditional model it is the onsets attribute, not gradient guidance
    cfg = SampleConfig(note_density=6, density_tracks=["melody", "bass"])
    assert make_guidance(cfg, model) is None
    assert (make_attributes(cfg, model, scen).onsets[0, :, :2] == 3).all()


@pytest.mark.parametrize("args, message", [(["--key", "H:major"], "unknown key 'H:major'"),
                                           (["--density", "piano=3"], "no track 'piano'"),
                                           (["--register", "drums=40"], "drums have no register"),
                                           (["--density", "melody=3@0:99"], "past the piece's 8 bars")])
def test_bad_attribute_targets_are_clear(cond_ckpt, tmp_path, capsys, args, message):
    assert run(cond_ckpt, tmp_path, "--bars", "8", *args) == 2
    assert message in capsys.readouterr().err


def test_a_model_with_a_copy_prior_samples_with_it_by_default_and_without_when_asked(song, tmp_path, capsys):
    from schmubert.copy_prior import NEW_PIECE_SHARPNESS, SAMPLING_SHARPNESS, CopyPriorConfig, as_hparams

    torch.manual_seed(0)
    denoiser = build("transformer", "trio", "tiny")
    hp = checkpoint_hparams("transformer", "trio", denoiser.config, NoiseConfig(timesteps=32), 1024,
                            copy_prior=as_hparams(CopyPriorConfig()))
    copying = save_model(tmp_path / "copying.ckpt", denoiser, hp)
    args = ["--input", str(song[0]), "--infill", "8:12", "--no-whole-song"]

    def record(out):
        return json.loads((out / "sample_000.json").read_text())

    assert run(copying, tmp_path / "on", *args) == 0
    on = record(tmp_path / "on")
    assert on["copy_prior"] and on["copy_sharpness"] == SAMPLING_SHARPNESS == 8  # an infill copies sharply ...
    assert run(copying, tmp_path / "new", "--bars", "8") == 0
    assert record(tmp_path / "new")["copy_sharpness"] == NEW_PIECE_SHARPNESS == 4  # ... a new piece less
    assert run(copying, tmp_path / "asked", "--bars", "8", "--copy-sharpness", "5") == 0
    assert record(tmp_path / "asked")["copy_sharpness"] == 5
    assert run(copying, tmp_path / "off", *args, "--no-copy-prior") == 0
    assert not record(tmp_path / "off")["copy_prior"] and record(tmp_path / "off")["copy_sharpness"] is None
    assert not np.array_equal(tokens(tmp_path / "on" / "sample_000.mid"), tokens(tmp_path / "off" / "sample_000.mid"))
    assert run(copying, tmp_path / "bad", *args, "--copy-sharpness", "0") == 2
    assert "copy sharpness must be > 0" in capsys.readouterr().err


def test_a_pop909_velocity_model_accompanies_a_held_out_melody_with_chords_and_dynamics(tmp_path):
    """--generate-tracks bridge,piano names instruments (all their voices); the melody and its velocities come
    back as they were, the new notes carry drawn velocity bins."""
    import pretty_midi

    from schmubert.polyphony import midi_to_grid

    root = tmp_path / "model"
    root.mkdir()
    enc = midi_to_grid(CORPUS / "pop909" / "001.mid", "pop909", steps=1024)
    np.save(root / "valid.npy", enc.tokens[None].astype(np.uint16))
    np.save(root / "valid_velocity.npy", enc.velocity[None].astype(np.uint8))
    torch.manual_seed(0)
    denoiser = build("conv", "pop909", "tiny", velocity=True)
    hp = checkpoint_hparams("conv", "pop909", denoiser.config, NoiseConfig(timesteps=32), 1024,
                            data={"path": str(root)})
    ckpt = save_model(root / "last.ckpt", denoiser, hp)
    assert main(["--checkpoint", str(ckpt), "--out", str(tmp_path / "out"), *FAST,
                 "--generate-tracks", "bridge,piano"]) == 0
    pm = pretty_midi.PrettyMIDI(str(tmp_path / "out" / "sample_000.mid"))
    assert [i.name for i in pm.instruments] == ["melody", "bridge", "piano"]
    melody = [(round(n.start * 8), n.pitch, n.velocity) for n in pm.instruments[0].notes]
    kept = tokens_to_midi(enc.tokens, "pop909", velocity=enc.velocity).instruments[0].notes
    assert melody == [(round(n.start * 8), n.pitch, n.velocity) for n in kept]
    piano = pm.instruments[2].notes
    assert len({n.velocity for n in piano}) >= 4
    assert max(sum(1 for m in piano if m.start == n.start) for n in piano) >= 2  # chords
    assert main(["--checkpoint", str(ckpt), "--generate-tracks", "kazoo", "--out", str(tmp_path / "x")]) == 2
