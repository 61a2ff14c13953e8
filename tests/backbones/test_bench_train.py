"""Smoke test of experiments/bench_train.py on the tiny presets (no timing asserted)."""

import importlib.util
import sys
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parents[2] / "experiments" / "bench_train.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_train", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_bench_reports_one_row_per_configuration(capsys):
    bench = load_bench()
    threads = torch.get_num_threads()
    try:
        rows = bench.main(["--archs", "conv,utransformer", "--presets", "tiny", "--tracks", "trio",
                           "--steps", "1", "--batch-size", "2", "--seq-len", "256", "--device", "cpu",
                           "--threads", "1", "--overrides", "dropout=0.0", "--precisions", "bf16,fp32"])
    finally:
        torch.set_num_threads(threads)
    assert [(r["arch"], r["preset"], r["tracks"], r["batch"], r["precision"]) for r in rows] == [
        ("conv", "tiny", "trio", 2, "bf16"), ("conv", "tiny", "trio", 2, "fp32"),
        ("utransformer", "tiny", "trio", 2, "bf16"), ("utransformer", "tiny", "trio", 2, "fp32")]
    for r in rows:
        assert r["s_step"] > 0 and r["tflop_step"] > 0 and 0 < r["mfu"] < 1.5
        assert r["elem_s"] == 2 * 256 * 3 / r["s_step"]
    out = capsys.readouterr().out
    assert "s/step" in out and "utransformer" in out and "matmul peak" in out
