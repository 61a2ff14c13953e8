"""Smoke test of experiments/bench_train.py on the tiny presets (no timing asserted)."""

import torch


def test_bench_reports_one_row_per_configuration(capsys, experiment):
    bench = experiment("bench_train")
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


def test_bf16_mfu_is_against_the_fp32_peak_where_bf16_is_emulated(monkeypatch, experiment):
    """An AVX2 CPU emulates bf16 50x below its fp32 rate; a step's MFU against that peak read 892%."""
    bench = experiment("bench_train")
    measured = []
    monkeypatch.setattr(bench, "matmul_peak", lambda dtype, device: measured.append(dtype) or 1.0)
    cfg = bench.BenchConfig()
    for native in (True, False):
        monkeypatch.setattr(bench, "native_bf16", lambda device, native=native: native)
        bench.peak_flops(cfg, "cpu", bf16=True)
        bench.peak_flops(cfg, "cpu", bf16=False)
    assert measured == [torch.bfloat16, torch.float32, torch.float32, torch.float32]
