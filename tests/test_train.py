import dataclasses
import math
import subprocess
import sys

import pytest
import torch

from schmubert.checkpoints import load_model
from schmubert.train import main, parse_overrides

pytestmark = pytest.mark.filterwarnings("ignore")


def options(data, out, *extra):
    return ["--arch", "transformer", "--tracks", "trio", "--preset", "tiny", "--data", str(data),
            "--logger", "csv", "--out", str(out), "--batch-size", "4", "--num-workers", "0",
            "--sample-every", "0", "--val-batches", "1", "--warmup-steps", "2", "--accelerator", "cpu",
            "--ema-every", "1", *map(str, extra)]


def test_cli_trains_tiny_model_on_cpu_and_writes_a_loadable_checkpoint(trio_dataset, tmp_path):
    cmd = [sys.executable, "-m", "schmubert.train", *options(trio_dataset, tmp_path, "--max-steps", 5,
                                                             "--val-every", 5)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "transformer-trio-tiny"
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert list((run / "checkpoints").glob("best-step5-elbo*.ckpt"))
    model = load_model(run / "checkpoints" / "last.ckpt")
    assert model.steps == 1024 and [t.name for t in model.tracks] == ["melody", "bass", "drums"]
    logits = model.denoiser(torch.zeros(1, 1024, 3, dtype=torch.long))
    assert [lg.shape for lg in logits] == [(1, 1024, 90), (1, 1024, 90), (1, 1024, 512)]


def state(path):
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    return ckpt["state_dict"], ckpt["current_model_state"], ckpt["global_step"]


def test_resumed_run_matches_an_uninterrupted_one(trio_dataset, tmp_path):
    assert main(options(trio_dataset, tmp_path, "--max-steps", 7, "--val-every", 3, "--name", "straight")) == 0
    assert main(options(trio_dataset, tmp_path, "--max-steps", 4, "--val-every", 3, "--name", "cut")) == 0
    assert main(options(trio_dataset, tmp_path, "--max-steps", 7, "--val-every", 3, "--name", "cut",
                        "--resume", "last")) == 0
    ema_a, raw_a, step_a = state(tmp_path / "straight" / "checkpoints" / "last.ckpt")
    ema_b, raw_b, step_b = state(tmp_path / "cut" / "checkpoints" / "last.ckpt")
    assert step_a == step_b == 7
    for key in raw_a:
        assert torch.equal(raw_a[key], raw_b[key]), key
        assert torch.equal(ema_a[key], ema_b[key]), key
    assert any(not torch.equal(ema_a[k], raw_a[k]) for k in raw_a)  # EMA weights are really an average


def test_fresh_run_never_reuses_a_run_folder(trio_dataset, tmp_path):
    (tmp_path / "transformer-trio-tiny").mkdir()
    assert main(options(trio_dataset, tmp_path, "--max-steps", 1, "--val-every", 1)) == 0
    assert (tmp_path / "transformer-trio-tiny-1" / "checkpoints" / "last.ckpt").is_file()
    assert not any((tmp_path / "transformer-trio-tiny").iterdir())


def test_missing_or_mismatched_dataset_is_a_clear_error(melody_dataset, tmp_path, capsys):
    assert main(options(tmp_path / "absent", tmp_path, "--max-steps", 1)) == 2
    assert "make preprocess" in capsys.readouterr().err
    assert main(options(melody_dataset, tmp_path, "--max-steps", 1)) == 2
    assert "does not match the model" in capsys.readouterr().err


def test_backbone_overrides_parse_and_unknown_ones_fail(trio_dataset, tmp_path, capsys):
    assert parse_overrides(["depth=3", "dropout=0.1", "name=x"]) == {"depth": 3, "dropout": 0.1, "name": "x"}
    assert main(options(trio_dataset, tmp_path, "--max-steps", 1, "--set", "nonsense=1")) == 2
    assert "nonsense" in capsys.readouterr().err


def test_two_process_cpu_ddp_in_bf16_mixed(trio_dataset, tmp_path):
    """The GPU default rehearsed on CPU: bf16-mixed, fused AdamW with gradient clipping, EMA, DDP (gloo)."""
    cmd = [sys.executable, "-m", "schmubert.train",
           *options(trio_dataset, tmp_path, "--max-steps", 2, "--val-every", 2, "--devices", 2, "--strategy", "ddp",
                    "--precision", "bf16-mixed", "--grad-clip", 1.0)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "distributed_backend=gloo" in proc.stderr + proc.stdout
    assert "bf16-mixed" in proc.stderr + proc.stdout  # Lightning names the precision it uses
    assert (tmp_path / "transformer-trio-tiny" / "checkpoints" / "last.ckpt").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["transformer-trio-tiny"]  # both processes, one run folder


def test_wandb_logs_offline_without_account_and_previews_are_written(trio_dataset, tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    args = options(trio_dataset, tmp_path, "--max-steps", 2, "--val-every", 2, "--sample-every", 2,
                   "--sample-count", 1, "--sample-steps", 4)
    args[args.index("--logger") + 1] = "wandb"
    assert main(args) == 0
    run = tmp_path / "transformer-trio-tiny"
    assert list((run / "wandb").glob("offline-run-*/*.wandb"))
    assert list((run / "wandb").glob("offline-run-*/files/samples/step-2/sample-0.mid"))
    assert {p.name for p in (run / "samples" / "step-2").iterdir()} == {"sample-0.mid", "sample-0.png"}


def test_a_recipe_sets_defaults_that_the_command_line_overrides(trio_dataset):
    from schmubert.recipes import get_recipe
    from schmubert.train import parse_args

    base = get_recipe("cpu-base").options
    args = parse_args(["--recipe", "cpu-base", "--data", str(trio_dataset)])
    assert (args.lr, args.batch_size, args.preset, args.ema_decay) == (base["lr"], base["batch_size"],
                                                                        base["preset"], base["ema_decay"])
    args = parse_args(["--recipe", "cpu-base", "--lr", "0.01", "--set", "depth=2"])
    assert args.lr == 0.01 and args.set[-1] == "depth=2"
    assert get_recipe("cpu-base").options.get("set", []) == list(base.get("set", []))  # not mutated
    with pytest.raises(SystemExit):
        parse_args(["--recipe", "no-such-recipe"])


def test_redirected_training_logs_plain_lines_not_a_bar(trio_dataset, tmp_path):
    cmd = [sys.executable, "-m", "schmubert.train", *options(trio_dataset, tmp_path, "--max-steps", 6,
                                                             "--val-every", 3, "--log-every", 3)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("step ")]
    assert [ln.split()[1] for ln in lines] == ["3/6", "6/6"]
    assert "val/elbo" in lines[-1] and "steps/s" in lines[-1]
    assert "\r" not in proc.stdout + proc.stderr


def test_init_fine_tunes_from_given_weights(trio_dataset, tmp_path):
    from schmubert.backbones import build
    from schmubert.checkpoints import checkpoint_hparams, save_model
    from schmubert.copy_prior import CopyPriorConfig
    from schmubert.diffusion import NoiseConfig

    torch.manual_seed(1)
    start = build("conv", "trio", "tiny", depth=1)
    prior = {**dataclasses.asdict(CopyPriorConfig()), "match": 0.7}
    init = save_model(tmp_path / "start.ckpt", start, checkpoint_hparams(
        "conv", "trio", start.config, NoiseConfig(timesteps=64), 1024, copy_prior=prior))
    # --arch/--preset of the options are ignored: the weights decide the model; lr 0 keeps them unchanged
    argv = options(trio_dataset, tmp_path, "--init", init, "--max-steps", 2, "--val-every", 2, "--lr", 0,
                   "--name", "tuned")
    assert main(argv) == 0
    last = tmp_path / "tuned" / "checkpoints" / "last.ckpt"
    assert load_model(last).uses_copy_prior  # inherited from --init until export fits its own
    tuned = load_model(last, copy_prior=False)
    assert tuned.hparams["copy_prior"] == prior
    assert tuned.hparams["arch"] == "conv" and tuned.hparams["backbone"]["depth"] == 1
    assert tuned.diffusion.T == 64 and tuned.hparams["provenance"]["init"] == str(init)
    for key, value in start.state_dict().items():
        torch.testing.assert_close(tuned.denoiser.state_dict()[key], value)


def logged_lrs(run):
    import csv

    with open(run / "logs" / "metrics.csv") as fh:
        return [float(row["lr-AdamW"]) for row in csv.DictReader(fh) if row.get("lr-AdamW")]


def step_lines(capsys):
    return [ln.split()[1] for ln in capsys.readouterr().out.splitlines() if ln.startswith("step ")]


def test_a_schedule_trains_in_parts_continued_from_exported_weights(trio_dataset, tmp_path, capsys, monkeypatch):
    from schmubert import module
    from schmubert.checkpoints import export_weights
    from schmubert.module import OptimConfig, lr_factor

    schedule = ["--decay", "cosine", "--lr", "1e-3", "--min-lr-ratio", "0.1", "--max-steps", 8, "--log-every", 1]
    assert main(options(trio_dataset, tmp_path, *schedule, "--stop-step", 3, "--val-every", 3, "--name", "a")) == 0
    assert step_lines(capsys) == ["1/3", "2/3", "3/3"]  # the first part stops at step 3 ...
    optim = OptimConfig(lr=1e-3, warmup_steps=2, decay="cosine", min_lr_ratio=0.1)
    assert logged_lrs(tmp_path / "a") == pytest.approx([1e-3 * lr_factor(s, optim, 8) for s in range(3)])  # ... of 8
    weights = export_weights(tmp_path / "a" / "checkpoints" / "last.ckpt", tmp_path / "a.safetensors")
    assert load_model(weights).hparams["provenance"]["schedule_step"] == 3  # the export says where it got to

    seeded, step_seed = [], module.step_seed
    monkeypatch.setattr(module, "step_seed", lambda seed, step, rank: seeded.append(step) or step_seed(seed, step,
                                                                                                          rank))
    assert main(options(trio_dataset, tmp_path, "--init", weights, "--start-step", 3, *schedule, "--val-every", 5,
                        "--name", "b")) == 0
    assert [s for s in seeded if s >= 0] == [3, 4, 5, 6, 7]  # training steps' seeds (validation's are negative)
    assert step_lines(capsys) == ["4/8", "5/8", "6/8", "7/8", "8/8"]  # counted on the schedule, five steps trained
    last = tmp_path / "b" / "checkpoints" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=False)["global_step"] == 5
    assert load_model(last).hparams["provenance"]["schedule_step"] == 8
    lrs = logged_lrs(tmp_path / "b")
    assert lrs == pytest.approx([1e-3 * lr_factor(s, dataclasses.replace(optim, start_step=3), 8) for s in range(5)])
    # by hand: half-way up the new warm-up at a third of the decay; then the schedule's floor at its last step
    assert lrs[0] == pytest.approx(0.5 * 1e-3 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 3))))
    assert lrs[-1] == pytest.approx(1e-4)


def test_start_and_stop_steps_outside_the_schedule_are_refused(trio_dataset, tmp_path, capsys):
    assert main(options(trio_dataset, tmp_path, "--start-step", 2, "--max-steps", 4)) == 2
    assert "--init" in capsys.readouterr().err
    _, init = plain_conv_checkpoint(tmp_path)
    assert main(options(trio_dataset, tmp_path, "--init", init, "--start-step", 4, "--max-steps", 4)) == 2
    assert "nothing left to train" in capsys.readouterr().err
    assert main(options(trio_dataset, tmp_path, "--init", init, "--start-step", 2, "--stop-step", 2,
                        "--max-steps", 4)) == 2
    assert "nothing left to train" in capsys.readouterr().err
    assert main(options(trio_dataset, tmp_path, "--stop-step", 5, "--max-steps", 4)) == 2
    assert "past --max-steps 4" in capsys.readouterr().err


def plain_conv_checkpoint(tmp_path):
    from schmubert.backbones import build
    from schmubert.checkpoints import checkpoint_hparams, save_model
    from schmubert.diffusion import NoiseConfig

    torch.manual_seed(1)
    start = build("conv", "trio", "tiny", depth=1)
    path = save_model(tmp_path / "start.ckpt", start,
                      checkpoint_hparams("conv", "trio", start.config, NoiseConfig(timesteps=64), 1024))
    return start, path


def test_init_with_set_adds_bar_attention_and_keeps_the_loaded_weights(trio_dataset, tmp_path):
    start, init = plain_conv_checkpoint(tmp_path)
    argv = options(trio_dataset, tmp_path, "--init", init, "--set", "bar_depth=1", "--max-steps", 2,
                   "--val-every", 2, "--lr", 0, "--name", "bars")
    assert main(argv) == 0
    tuned = load_model(tmp_path / "bars" / "checkpoints" / "last.ckpt")
    assert tuned.hparams["backbone"]["bar_depth"] == 1 and tuned.denoiser.bars is not None
    for key, value in start.state_dict().items():
        torch.testing.assert_close(tuned.denoiser.state_dict()[key], value)
    # the new branch starts as a zero update, so the fine-tuned model begins as the loaded one
    x_t = torch.randint(0, 90, (1, 256, 3))
    for a, b in zip(tuned.denoiser.eval()(x_t), start.eval()(x_t), strict=True):
        torch.testing.assert_close(a, b)


def test_init_with_set_that_reshapes_loaded_layers_names_the_file(trio_dataset, tmp_path, capsys):
    _, init = plain_conv_checkpoint(tmp_path)
    argv = options(trio_dataset, tmp_path, "--init", init, "--set", "width=128", "--max-steps", 1)
    assert main(argv) != 0
    err = capsys.readouterr().err
    assert "start.ckpt" in err and "do not fit" in err and "blocks.0.attn" in err


def test_fine_tune_noise_keeps_the_models_options_except_those_given():
    from schmubert.diffusion import NoiseConfig
    from schmubert.train import fine_tune_noise

    loaded = {"timesteps": 64, "schedule": "all", "track_prob": 0.5, "time_sampling": "uniform"}  # no span_prob
    assert fine_tune_noise(loaded, NoiseConfig()) == NoiseConfig(timesteps=64, schedule="all")
    given = NoiseConfig(timesteps=1024, span_prob=0.5)
    assert fine_tune_noise(loaded, given) == NoiseConfig(timesteps=64, schedule="all", span_prob=0.5)


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed", "32-true"])
def test_every_precision_trains_with_gradient_clipping_and_resumes(trio_dataset, tmp_path, precision):
    """bf16-mixed with the fused optimizer crashed in Lightning's clipping; 16-mixed needs an unfused one."""
    args = options(trio_dataset, tmp_path, "--max-steps", 2, "--val-every", 2, "--precision", precision,
                   "--grad-clip", 0.1, "--name", "run")
    assert main(args) == 0
    assert main([*args[:-4], "--max-steps", "3", "--val-every", "3", "--name", "run", "--resume", "last"]) == 0
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 3
    assert all(v.dtype == torch.float32 for v in ckpt["state_dict"].values() if v.is_floating_point())


def test_compiled_training_writes_the_plain_models_checkpoint(trio_dataset, tmp_path):
    assert main(options(trio_dataset, tmp_path, "--max-steps", 2, "--val-every", 2, "--compile")) == 0
    model = load_model(tmp_path / "transformer-trio-tiny" / "checkpoints" / "last.ckpt")
    assert not any("_orig_mod" in k for k in model.denoiser.state_dict())


def test_init_with_set_attributes_starts_as_the_loaded_model_and_stores_the_key_prior_and_outlines(
        trio_dataset, tmp_path):
    from schmubert.attributes import KEY_IDS, Attributes, estimate_key
    from schmubert.data import TokenArray

    start, init = plain_conv_checkpoint(tmp_path)
    argv = options(trio_dataset, tmp_path, "--init", init, "--set", "attributes=true", "--cond-drop", 0.25,
                   "--max-steps", 2, "--val-every", 2, "--lr", 0, "--name", "cond")
    assert main(argv) == 0
    tuned = load_model(tmp_path / "cond" / "checkpoints" / "last.ckpt")
    assert tuned.denoiser.conditional and tuned.hparams["attributes"]["cond_drop"] == 0.25
    prior = tuned.hparams["attributes"]["key_prior"]
    train = TokenArray(trio_dataset / "train.npy")
    keys = estimate_key(torch.stack([train[i] for i in range(len(train))]), tuned.tracks)
    assert len(prior) == KEY_IDS and prior == (torch.bincount(keys, minlength=KEY_IDS) / len(train)).tolist()
    outlines = tuned.hparams["attributes"]["outlines"]
    assert outlines["shape"] == [len(train), 64, 3] and outlines["key"] == keys.tolist()
    x0 = torch.stack([train[0], train[1]])[:, :256]
    x_t = torch.where(torch.rand(x0.shape) < 0.5, tuned.diffusion.mask_value(), x0)
    told = Attributes.compute(x0, tuned.tracks)
    for a, b in zip(tuned.denoiser.eval()(x_t, told), start.eval()(x_t), strict=True):
        torch.testing.assert_close(a, b)
