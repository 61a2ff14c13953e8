"""experiments/bench_control.py runs against any checkpoint and prints its markdown table."""

import numpy as np
import torch

from schmubert.backbones import build
from schmubert.checkpoints import checkpoint_hparams, save_model
from schmubert.diffusion import NoiseConfig


def tiny(path, **overrides):
    torch.manual_seed(0)
    denoiser = build("conv", "trio", "tiny", seq_len=256, **overrides)
    return save_model(path, denoiser, checkpoint_hparams("conv", "trio", denoiser.config,
                                                         NoiseConfig(timesteps=256), 256))


def test_prints_a_row_per_guidance_scale(tmp_path, capsys, corpus_pieces, experiment):
    np.save(tmp_path / "held.npy", corpus_pieces("trio", 4)[:, :256].astype(np.uint16))
    ckpt = tiny(tmp_path / "cond.ckpt", attributes=True)
    argv = ["--checkpoint", str(ckpt), "--samples", "2", "--steps", "2", "--scales", "0,1.5", "--keys",
            "C:major,D:minor", "--density", "4,8", "--register", "melody=C5,bass=E2", "--held-out",
            str(tmp_path / "held.npy"), "--json", str(tmp_path / "rows.json")]
    assert experiment("bench_control").main(argv) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert lines[0].startswith("| cfg scale | key | key/rel | density +-1 | per target | register +-3 | stats")
    assert lines[1].split("|")[5].strip().count("/") == 1  # two density targets: a share each
    assert [line.split("|")[1].strip() for line in lines[1:]] == ["0", "1.5"]
    assert (tmp_path / "rows.json").is_file()


def test_refuses_a_model_without_attributes(tmp_path, capsys, experiment):
    assert experiment("bench_control").main(["--checkpoint", str(tiny(tmp_path / "plain.ckpt"))]) == 2
    assert "trained without attributes" in capsys.readouterr().err


def test_the_key_alone_when_no_density_or_register_is_asked(tmp_path, capsys, corpus_pieces, experiment):
    np.save(tmp_path / "held.npy", corpus_pieces("trio", 2)[:, :256].astype(np.uint16))
    ckpt = tiny(tmp_path / "cond.ckpt", attributes=True)
    argv = ["--checkpoint", str(ckpt), "--samples", "1", "--steps", "2", "--scales", "2", "--keys", "C:major",
            "--density", "", "--register", "", "--held-out", str(tmp_path / "held.npy")]
    assert experiment("bench_control").main(argv) == 0
    row = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 2 ")][0].split("|")
    assert row[4].strip() == "nan" and row[5].strip() == "" and row[6].strip() == "nan"


def test_outline_tells_each_key_run_a_training_outline_with_the_asked_key(tmp_path, corpus_pieces, experiment,
                                                                          monkeypatch):
    from schmubert import attributes as A
    from schmubert.tokens import get_tracks

    pieces = corpus_pieces("trio", 2)[:, :256].astype(np.int64)
    np.save(tmp_path / "held.npy", pieces.astype(np.uint16))
    torch.manual_seed(0)
    denoiser = build("conv", "trio", "tiny", seq_len=256, attributes=True)
    hp = checkpoint_hparams("conv", "trio", denoiser.config, NoiseConfig(timesteps=256), 256,
                            attributes={"cond_drop": 0.5, **A.data_summaries(pieces, get_tracks("trio"))})
    ckpt = save_model(tmp_path / "outlined.ckpt", denoiser, hp)
    bench = experiment("bench_control")
    told, real = [], bench.generate
    monkeypatch.setattr(bench, "generate", lambda model, attrs, *rest: real(model, told.append(attrs) or attrs, *rest))
    argv = ["--checkpoint", str(ckpt), "--samples", "2", "--steps", "2", "--scales", "2", "--keys", "D:minor",
            "--density", "", "--register", "", "--held-out", str(tmp_path / "held.npy")]
    assert bench.main(argv) == 0 and bench.main([*argv, "--outline"]) == 0
    plain, outlined = told
    assert (plain.key == A.parse_key("D:minor")).all() and (outlined.key == A.parse_key("D:minor")).all()
    assert (plain.onsets == A.ONSETS_NULL).all()
    own = A.Attributes.compute(torch.as_tensor(pieces), get_tracks("trio"))
    assert all(any(torch.equal(o, p) for p in own.onsets) for o in outlined.onsets)  # a training window's
