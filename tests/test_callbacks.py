"""Training callbacks: sample previews use the EMA weights when training averages them."""

from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging

import schmubert.sampling
from schmubert.callbacks import SamplePreview, sampling_module
from schmubert.diffusion import NoiseConfig
from schmubert.module import ASD3PM


@pytest.fixture
def module():
    torch.manual_seed(0)
    return ASD3PM.create("transformer", "trio", "tiny", NoiseConfig(), steps=64)


def ema_callback(module):
    ema = EMAWeightAveraging(decay=0.9)
    ema.setup(SimpleNamespace(), module, "fit")  # creates the averaged copy, as at the start of fit
    with torch.no_grad():  # make the average differ from the raw weights
        for p in ema._average_model.module.parameters():
            p.add_(1.0)
    return ema


def test_sampling_module_is_the_ema_copy_when_training_averages(module):
    ema = ema_callback(module)
    averaged = sampling_module(SimpleNamespace(callbacks=[ema]), module)
    assert averaged is ema._average_model.module and averaged is not module
    raw, avg = next(module.denoiser.parameters()), next(averaged.denoiser.parameters())
    assert torch.equal(avg, raw + 1.0)
    assert sampling_module(SimpleNamespace(callbacks=[]), module) is module  # no EMA: the raw weights


def test_preview_samples_with_the_ema_weights(module, tmp_path, monkeypatch):
    ema = ema_callback(module)
    used = []

    def fake_sample(denoiser, diffusion, x, known, steps, generator):
        used.append((denoiser, denoiser.training, steps))
        return torch.zeros_like(x)

    monkeypatch.setattr(schmubert.sampling, "sample", fake_sample)
    preview = SamplePreview(every=5, count=1, steps=4, directory=tmp_path)
    module.train()
    trainer = SimpleNamespace(callbacks=[ema, preview], global_step=5, logger=None)
    preview.on_train_batch_end(trainer, module, None, None, 0)
    assert used == [(ema._average_model.module.denoiser, False, 4)]  # the EMA copy, in eval mode
    assert module.training  # the raw module is left as it was
    assert {p.name for p in (tmp_path / "step-5").iterdir()} == {"sample-0.mid", "sample-0.png"}
    preview.on_train_batch_end(SimpleNamespace(callbacks=[preview], global_step=10, logger=None), module,
                               None, None, 0)
    assert used[-1][0] is module.denoiser  # without EMA, the raw weights


def test_warmup_ema_follows_recent_weights_early_and_the_decay_later():
    from schmubert.callbacks import warmup_ema_avg_fn

    update = warmup_ema_avg_fn(0.999)
    ema, one = torch.zeros(1), torch.ones(1)
    assert update(ema, one, 0).item() == pytest.approx(0.9)  # d = 1/10
    assert update(ema, one, 10_000).item() == pytest.approx(0.001)  # d = decay
    assert warmup_ema_avg_fn(0.999, warmup=False)(ema, one, 0).item() == pytest.approx(0.001)


def test_warmup_ema_callback_ramps_the_average_lightning_builds():
    from torch.optim.swa_utils import AveragedModel

    from schmubert.callbacks import WarmupEMA

    callback = WarmupEMA(0.999)
    layer = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(layer.weight)
    average = AveragedModel(layer, use_buffers=True, **callback._kwargs)  # as WeightAveraging.setup builds it
    layer.weight.data.fill_(1.0)
    average.update_parameters(layer)  # the first update copies the weights
    layer.weight.data.fill_(2.0)
    average.update_parameters(layer)  # then d = (1 + 1) / (10 + 1)
    assert average.module.weight.item() == pytest.approx(2 / 11 * 1 + 9 / 11 * 2)
