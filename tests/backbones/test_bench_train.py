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
