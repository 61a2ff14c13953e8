"""``--track ROLE=INDEX|NAME`` picks a song's instrument for any role of the model's set (``--melody-track``,
``--bass-track``, ``--drum-track`` are its aliases), and no CLI of the package takes an abbreviated option."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

from schmubert.backbones import build
from schmubert.checkpoints import checkpoint_hparams, save_model
from schmubert.config import from_args
from schmubert.diffusion import NoiseConfig
from schmubert.sample import SampleConfig, main, parser

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "corpus"
FOOL = CORPUS / "multitrack-songs" / "What a Fool Believes.mid"
FAST = ["--steps", "6", "--no-progress", "--no-wav"]


def tiny(root: Path, tracks: str, arch: str, **options) -> Path:
    torch.manual_seed(0)
    denoiser = build(arch, tracks, "tiny", **options)
    hp = checkpoint_hparams(arch, tracks, denoiser.config, NoiseConfig(timesteps=32), 1024, data={"path": str(root)})
    return save_model(root / f"{tracks}.ckpt", denoiser, hp)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {"trio": tiny(root, "trio", "transformer"), "pop909": tiny(root, "pop909", "conv", velocity=True)}


def test_track_is_repeatable_and_the_old_options_stay():
    cfg = from_args(SampleConfig, parser().parse_args(["--track", "piano=8", "--track", "melody=Vocals",
                                                       "--bass-track", "none"]))
    assert cfg.track == ["piano=8", "melody=Vocals"] and cfg.bass_track == "none"
    assert "ROLE=INDEX|NAME" in parser().format_help()


@pytest.mark.parametrize("args, message", [
    (["--track", "kazoo=3"], "--track kazoo=3: the model (pop909) has no role 'kazoo'; its roles are melody, "
                             "bridge, piano"),
    (["--track", "piano"], "--track piano: expected ROLE=INDEX|NAME"),
    (["--track", "piano=0", "--track", "piano=6"], "--track piano=0 and --track piano=6: two instruments asked "
                                                   "for the piano"),
    (["--melody-track", "2", "--track", "melody=5"], "--melody-track 2 and --track melody=5: two instruments"),
    (["--bass-track", "1"], "--bass-track 1: the model (pop909) has no role 'bass'"),
    (["--track", "piano=0", "--track", "bridge=Piano"], "one instrument was chosen for two tracks: --track "
                                                        "bridge=Piano and --track piano=0 both choose #0 'Piano'"),
    (["--track", "piano=Tuba"], "--track piano=Tuba: no instrument is named 'Tuba'"),
    (["--track", "piano=99"], "--track piano=99: What a Fool Believes.mid has instruments #0-#"),
    (["--track", "piano=8"], "--track piano=8: the piano track needs an instrument off the drum channel"),
])
def test_bad_track_choices_are_clear_errors_naming_the_option(models, tmp_path, capsys, args, message):
    assert main(["--checkpoint", str(models["pop909"]), "--out", str(tmp_path), *FAST, "--input", str(FOOL),
                 "--infill", "26:28", *args]) == 2
    assert message in capsys.readouterr().err


def test_track_and_its_alias_choose_alike_on_a_trio_model(models, tmp_path, capsys):
    """--track bass=3 is --bass-track 3 bit for bit (the trio's path, one option more)."""
    args = ["--checkpoint", str(models["trio"]), *FAST, "--input", str(FOOL), "--infill", "26:28"]
    assert main([*args, "--out", str(tmp_path / "a"), "--bass-track", "3"]) == 0
    assert main([*args, "--out", str(tmp_path / "b"), "--track", "bass=3"]) == 0
    out = capsys.readouterr().out
    assert out.count("chosen: bass = #3 'Sq Lead' (GM 80 Lead 1 (square), 929 notes) (as asked)") == 2
    assert (tmp_path / "a" / "sample_000.mid").read_bytes() == (tmp_path / "b" / "sample_000.mid").read_bytes()
    assert main([*args, "--out", str(tmp_path / "c"), "--track", "piano=0"]) == 2
    assert "--track piano=0: the model (trio) has no role 'piano'; its roles are melody, bass, drums" in \
        capsys.readouterr().err


# --- no abbreviations ---------------------------------------------------------------------------------------------


def parsers() -> dict[str, argparse.ArgumentParser]:
    """Every parser of the package's CLIs (the subcommands' own included)."""
    import preprocessing.__main__ as preprocess
    from schmubert import evaluate, train
    from schmubert.editor import server

    out = {"sample": parser(), "train": train.build_parser(), "preprocess": preprocess.build_parser(),
           "editor": server.parser(), "evaluate": evaluate.build_parser()}
    for action in out["evaluate"]._actions:
        if isinstance(action, argparse._SubParsersAction):
            out.update({f"evaluate {name}": p for name, p in action.choices.items()})
    return out


def test_every_parser_refuses_abbreviations():
    for name, p in parsers().items():
        assert p.allow_abbrev is False, name


@pytest.mark.parametrize("module, argv", [
    ("train", ["--arc", "conv"]),  # --arch
    ("train", ["--track", "pop909"]),  # was taken as --tracks
    ("preprocess", ["--input", "x", "--output", "y", "--track", "pop909"]),
    ("sample", ["--num", "2"]),  # --num-samples
    ("evaluate", ["stats", "--reference", "a.npy", "--generated", "b", "--track", "trio"]),
])
def test_an_abbreviated_option_is_an_error(module, argv, capsys):
    p = parsers()[module]
    with pytest.raises(SystemExit) as exit_:
        p.parse_args(argv)
    assert exit_.value.code == 2 and "unrecognized arguments" in capsys.readouterr().err


@pytest.mark.parametrize("main_of, argv", [
    ("schmubert.demo", ["--minute", "1"]),  # --minutes
    ("schmubert.pretrained", ["export", "--checkpoint", "x", "--name", "y", "--heldo", "z"]),  # --heldout
    ("preprocessing.download", ["--out", "x"]),  # --output
])
def test_the_other_entry_points_refuse_abbreviations_too(main_of, argv, capsys):
    import importlib

    module = importlib.import_module(main_of)
    with pytest.raises(SystemExit) as exit_:
        module.main(argv)
    assert exit_.value.code == 2 and "unrecognized arguments" in capsys.readouterr().err
