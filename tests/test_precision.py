"""What ``auto`` precision means for training and sampling, and where bf16 counts as native."""

import pytest
import torch

from schmubert import precision
from schmubert.precision import native_bf16, sampling_precision, training_precision


@pytest.mark.parametrize("native, expected", [(True, "bf16-mixed"), (False, "32-true")])
def test_auto_training_precision_is_bf16_mixed_exactly_where_bf16_is_native(monkeypatch, native, expected):
    seen = []
    monkeypatch.setattr(precision, "native_bf16", lambda device: seen.append(torch.device(device).type) or native)
    assert training_precision("auto", "cpu") == expected
    assert seen == ["cpu"]


def test_a_given_training_precision_is_passed_through():
    for choice in ("32-true", "bf16-mixed", "16-mixed", "bf16-true"):
        assert training_precision(choice, "cpu") == choice


def test_auto_trains_on_the_gpu_only_when_there_is_one(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert precision.training_device("auto").type == "cpu"
    assert precision.training_device("cpu").type == "cpu"
    assert precision.training_device("gpu").type == "cuda"


@pytest.mark.parametrize("native, expected", [(True, "bf16"), (False, "fp32")])
def test_auto_sampling_precision_follows_the_device(monkeypatch, native, expected):
    monkeypatch.setattr(precision, "native_bf16", lambda device: native)
    assert sampling_precision("auto", "cpu") == expected
    assert sampling_precision("fp32", "cpu") == "fp32" and sampling_precision("bf16", "cpu") == "bf16"
    with pytest.raises(ValueError, match="fp16"):
        sampling_precision("fp16", "cpu")


def test_a_device_that_is_absent_or_not_real_is_not_native_bf16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert native_bf16("cuda") is False
    assert native_bf16("meta") is False
