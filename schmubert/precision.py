"""Arithmetic precision: where bfloat16 is native, and what ``auto`` means for training and sampling.

bf16 is the default wherever the hardware multiplies it natively: a CUDA device that supports it, or a CPU with
AVX512-BF16 or AMX (oneDNN's bf16 kernels). There, a dense bf16 matmul runs 4-6x faster than fp32 on the CPUs
this project measured; elsewhere bf16 is emulated and slower, so ``auto`` stays fp32. Training in bf16 is
Lightning's ``bf16-mixed``: master weights, optimizer state, gradients, loss and EMA stay float32, only the
denoiser's forward (and so its backward) runs under autocast.
"""

from __future__ import annotations

from typing import Literal

import torch

#: Sampling precisions (the sample CLI's ``--precision``): the denoiser under bf16 autocast, or float32.
SamplePrecision = Literal["auto", "fp32", "bf16"]


def native_bf16(device: torch.device | str) -> bool:
    """Whether bfloat16 matmuls run natively on ``device``: a CUDA device that says so, or a CPU with AVX512-BF16
    or AMX."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return device.type == "cpu" and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def training_device(accelerator: str) -> torch.device:
    """The device a Lightning ``accelerator`` choice trains on (``auto``: the GPU when there is one)."""
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def training_precision(choice: str, accelerator: str = "auto") -> str:
    """The Lightning precision for ``choice``: ``auto`` is ``bf16-mixed`` where bf16 is native on the training
    device, else ``32-true``; any other value is passed through."""
    if choice != "auto":
        return choice
    return "bf16-mixed" if native_bf16(training_device(accelerator)) else "32-true"


def sampling_precision(choice: str, device: torch.device | str) -> Literal["fp32", "bf16"]:
    """``fp32`` or ``bf16`` for ``choice`` on ``device``: ``auto`` is bf16 where it is native."""
    if choice == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    if choice not in ("fp32", "bf16"):
        raise ValueError(f"unknown precision {choice!r}; expected auto, fp32 or bf16")
    return choice  # type: ignore[return-value]
