"""Training-step benchmark of every backbone and preset: params, s/step, elements/s, peak memory, FLOPs, MFU.

One step = ``AbsorbingDiffusion.q_sample`` + forward + ``diffusion.loss(...).loss.backward()`` + gradient clipping
+ fused Adam step, timed after warm-up, under bf16 autocast or in float32 (``--precisions``; ``auto`` is bf16
where it is native, as training's default). On CPU the peak memory is the process' peak resident set (reset per
run where Linux allows); on GPU it is ``torch.cuda.max_memory_allocated``. Model FLOPs per step are counted once
with ``torch.utils.flop_counter.FlopCounterMode`` (matmuls, convolutions and attention, forward + backward).
MFU = achieved FLOP/s / the dense matmul peak of the step's dtype: on CPU measured in the same run
(:func:`matmul_peak`, 2048^3 with the same threads; for bf16 on a CPU that emulates it, the fp32 peak), on GPU
``--peak-flops``.

    python experiments/bench_train.py --archs conv --presets small --tracks trio --overrides bar_depth=2
    python experiments/bench_train.py --device cuda --compile          # on a GPU machine

Reference (spec section 8, original code, 2 CPU cores): conv trio paper, batch 4: 4.0 s/step; 4 layers of
width 256 (our ``small``): 0.54 s/step at batch 8, 0.016 s per forward at batch 1.
"""

from __future__ import annotations

import argparse
import ast
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch.utils.flop_counter import FlopCounterMode

from schmubert.backbones import build
from schmubert.config import add_arguments, arg, from_args
from schmubert.diffusion import AbsorbingDiffusion
from schmubert.precision import native_bf16
from schmubert.tokens import mask_ids

Device = Literal["auto", "cpu", "cuda"]


@dataclass
class BenchConfig:
    """Options of the training-step benchmark."""

    archs: list[str] = arg(["transformer", "conv", "hierarchical", "utransformer"], "backbones to time")
    presets: list[str] = arg(["tiny", "small", "paper"], "presets to time")
    tracks: list[str] = arg(["melody", "trio"], "track sets to time")
    batch_size: int = arg(0, "batch size; 0 = 8 for tiny/small and 4 for paper on CPU, 32 everywhere on GPU")
    seq_len: int = arg(1024, "steps per piece L")
    steps: int = arg(3, "timed training steps per configuration")
    warmup: int = arg(1, "untimed training steps before timing")
    device: Device = arg("auto", "'cpu', 'cuda', or 'auto' (CPU, and the GPU too when there is one)")
    threads: int = arg(0, "CPU threads for torch; 0 = the cores this process may use")
    precisions: list[str] = arg(["auto", "fp32"], "step arithmetic: bf16 (autocast), fp32, or auto (bf16 where "
                                "native, as training's default)")
    compile: bool = arg(False, "torch.compile the backbone")
    fused_adam: bool = arg(True, "use Adam's fused implementation (CPU and GPU): one kernel per step")
    peak_flops: float = arg(989e12, "the GPU's dense bf16 peak FLOP/s for MFU (H100/H200 SXM: 989e12)")
    overrides: list[str] = arg([], "backbone config overrides key=value, e.g. attn_dropout=0.2,depth=4")
    forward_b1: bool = arg(True, "also time one eval forward pass at batch 1 (the cost of a sampling step)")


def parse_overrides(items: list[str]) -> dict:
    """``["depth=4", "attn_dropout=0.2"]`` -> ``{"depth": 4, "attn_dropout": 0.2}``."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"bench_train: override {item!r} is not key=value")
        out[key] = ast.literal_eval(value)
    return out


def default_batch(preset: str, device: str) -> int:
    return 32 if device == "cuda" else (4 if preset == "paper" else 8)


def reset_cpu_peak() -> None:
    """Reset the process' peak RSS (VmHWM) where the kernel allows it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def cpu_peak_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


class Step:
    """One training step of ``model`` on random pieces ``x0 [B, L, K]``."""

    def __init__(self, model: torch.nn.Module, tracks: str, batch: int, seq_len: int, device: str,
                 compile_: bool, fused_adam: bool = True, bf16: bool = False):
        self.bf16 = bf16
        self.model = model.to(device).train()
        self.net = torch.compile(self.model) if compile_ else self.model
        self.diffusion = AbsorbingDiffusion(mask_ids(tracks))
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=5e-4, fused=fused_adam)
        self.x0 = torch.stack([torch.randint(0, t.num_classes, (batch, seq_len), device=device)
                               for t in self.model.tracks], dim=-1)
        self.device = device

    def __call__(self) -> None:
        t = self.diffusion.sample_t(self.x0.shape[0], self.device)
        x_t, mask = self.diffusion.q_sample(self.x0, t)
        with torch.autocast(self.device, dtype=torch.bfloat16, enabled=self.bf16):
            logits = self.net(x_t)
        self.diffusion.loss(logits, self.x0, mask, t).loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0, foreach=True)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def forward_b1(self) -> None:
        self.model.eval()
        with torch.no_grad(), torch.autocast(self.device, dtype=torch.bfloat16, enabled=self.bf16):
            self.net(self.x0[:1])
        self.model.train()


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn, repeats: int, device: str) -> float:
    """Mean wall-clock seconds per call of ``fn`` (0 for no repeats)."""
    return timed_wall_and_cpu(fn, repeats, device)[0]


def timed_wall_and_cpu(fn, repeats: int, device: str) -> tuple[float, float]:
    """Mean wall-clock and process CPU seconds per call of ``fn``.

    On a shared machine the CPU seconds of a single-threaded run are close to its wall time on an idle one.
    """
    if repeats < 1:
        return 0.0, 0.0
    sync(device)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        fn()
    sync(device)
    return (time.perf_counter() - wall) / repeats, (time.process_time() - cpu) / repeats


def matmul_peak(dtype: torch.dtype, device: str = "cpu", n: int = 2048, repeats: int = 0) -> float:
    """Measured dense matmul FLOP/s of ``n x n`` by ``n x n`` in ``dtype`` on ``device`` (the best of a few)."""
    a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
    a @ b
    repeats = repeats or max(3, int(4e11 / (2 * n**3)) if device == "cuda" else 3)
    best = min(timed(lambda: a @ b, repeats, device) for _ in range(3))
    return 2 * n**3 / best


def count_flops(step: Step) -> int:
    """Model FLOPs of one training step (forward + backward), counted on the uncompiled model.

    On CPU counted under bf16 autocast, whose attention is plain matmuls: the counter does not see PyTorch's CPU
    attention kernel, so an fp32 count would leave attention out."""
    net, step.net = step.net, step.model
    bf16, step.bf16 = step.bf16, step.bf16 or step.device == "cpu"
    with FlopCounterMode(display=False) as counter:
        step()
    step.net, step.bf16 = net, bf16
    return counter.get_total_flops()


def bench_one(cfg: BenchConfig, arch: str, preset: str, tracks: str, device: str, bf16: bool,
              peak: float) -> dict:
    torch.manual_seed(0)
    batch = cfg.batch_size or default_batch(preset, device)
    model = build(arch, tracks, preset, **{"seq_len": cfg.seq_len, **parse_overrides(cfg.overrides)})
    params = model.num_parameters()
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    else:
        reset_cpu_peak()
    step = Step(model, tracks, batch, cfg.seq_len, device, cfg.compile, cfg.fused_adam, bf16)
    flops = count_flops(step)  # eager, so compiled runs still warm up below
    timed(step, cfg.warmup, device)
    seconds, cpu_seconds = timed_wall_and_cpu(step, cfg.steps, device)
    memory = torch.cuda.max_memory_allocated() if device == "cuda" else cpu_peak_bytes()
    fwd = timed(step.forward_b1, 3, device) if cfg.forward_b1 else float("nan")
    elements = batch * cfg.seq_len * len(model.tracks)
    mfu = flops / seconds / peak
    row = dict(arch=arch, preset=preset, tracks=tracks, device=device, precision="bf16" if bf16 else "fp32",
               params=params, batch=batch,
               s_step=seconds, elem_s=elements / seconds, peak_gib=memory / 2**30, tflop_step=flops / 1e12,
               tflops=flops / seconds / 1e12, mfu=mfu, fwd_b1=fwd, cpu_s_step=cpu_seconds)
    del step, model
    return row


HEADER = (f"{'arch':<13}{'preset':<7}{'tracks':<7}{'device':<7}{'prec':<5}{'params':>12}{'batch':>6}{'s/step':>9}"
          f"{'cpu s':>8}"
          f"{'elem/s':>10}{'peak GiB':>9}{'TFLOP/step':>11}{'TFLOP/s':>9}{'MFU':>7}{'fwd B=1 s':>10}")


def format_row(r: dict) -> str:
    mfu = f"{r['mfu']:.1%}"
    return (f"{r['arch']:<13}{r['preset']:<7}{r['tracks']:<7}{r['device']:<7}{r['precision']:<5}{r['params']:>12,}"
            f"{r['batch']:>6}"
            f"{r['s_step']:>9.3f}{r['cpu_s_step']:>8.2f}{r['elem_s']:>10.0f}{r['peak_gib']:>9.2f}{r['tflop_step']:>11.3f}"
            f"{r['tflops']:>9.2f}{mfu:>7}{r['fwd_b1']:>10.4f}")


def devices(choice: Device) -> list[str]:
    if choice == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench_train: --device cuda but no CUDA device is available")
    if choice == "auto":
        return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
    return [choice]


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser, BenchConfig)
    cfg = from_args(BenchConfig, parser.parse_args(argv))
    torch.set_num_threads(cfg.threads or len(os.sched_getaffinity(0)))
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    load = Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "?"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, load average {load}"
          + (f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""))
    rows = []
    for device in devices(cfg.device):
        modes = sorted({bf16_mode(p, device) for p in cfg.precisions}, reverse=True)
        peaks = {bf16: peak_flops(cfg, device, bf16) for bf16 in modes}
        emulated = device == "cpu" and not native_bf16(device)
        print(f"{device} dense matmul peak (2048^3, measured now): "
              + ", ".join(f"{'bf16' if b else 'fp32'}{' (emulated here: the fp32 peak)' if b and emulated else ''} "
                          f"{p / 1e9:,.0f} GFLOP/s" for b, p in peaks.items()))
        print(HEADER, flush=True)
        for arch in cfg.archs:
            for preset in cfg.presets:
                for tracks in cfg.tracks:
                    for bf16 in modes:
                        rows.append(bench_one(cfg, arch, preset, tracks, device, bf16, peaks[bf16]))
                        print(format_row(rows[-1]), flush=True)
    return rows


def bf16_mode(precision: str, device: str) -> bool:
    """Whether ``precision`` (auto, bf16, fp32) runs the step in bf16 on ``device``."""
    if precision not in ("auto", "bf16", "fp32"):
        raise SystemExit(f"bench_train: unknown precision {precision!r}; expected auto, bf16 or fp32")
    return precision == "bf16" or (precision == "auto" and native_bf16(device))


def peak_flops(cfg: BenchConfig, device: str, bf16: bool) -> float:
    """The MFU denominator: measured on CPU, ``--peak-flops`` (bf16) on GPU.

    A CPU without native bf16 (no AVX512-BF16 or AMX) emulates it far below its fp32 rate (AMD EPYC, AVX2: 1.2
    against 61 GFLOP/s on 512^3), and a step's small matmuls and fp32 parts then run faster than that emulated
    peak: its bf16 rows are measured against the fp32 peak, the fastest this machine multiplies."""
    if device == "cuda":
        return cfg.peak_flops if bf16 else cfg.peak_flops / 2  # TF32 is half the bf16 rate on H100/H200
    return matmul_peak(torch.bfloat16 if bf16 and native_bf16(device) else torch.float32, device)


if __name__ == "__main__":
    main()
