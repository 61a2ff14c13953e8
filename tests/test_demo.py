"""``make demo`` end to end, shortened: every scenario from the shipped models, then a brief fine-tuning run."""

import json

import pytest

from schmubert import demo
from schmubert.checkpoints import pretrained_names

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore")]


def test_demo_samples_every_scenario_and_fine_tunes(trio_dataset, tmp_path):
    assert {"trio", "melody"} <= set(pretrained_names())
    cfg = demo.DemoConfig(data=trio_dataset, minutes=0.05, batch_size=2, sample_steps=4, num_samples=1,
                          out=tmp_path / "runs", samples=tmp_path / "samples")
    run = demo.run(cfg)
    assert (run / "checkpoints" / "last.ckpt").is_file()
    for name in [*demo.SCENARIOS, "finetuned-trio-infill-bars-32-48"]:
        folder = cfg.samples / name
        assert (folder / f"{name}_000.mid").is_file() and (folder / f"{name}_000.png").is_file(), name
        record = json.loads((folder / f"{name}_000.json").read_text())
        assert record["steps"] == 4
    for name in ("trio-unconditional", "melody-unconditional"):  # the shipped default: a training outline
        record = json.loads((cfg.samples / name / f"{name}_000.json").read_text())
        assert record["options"]["outline"] == "auto" and any(n is not None for n in record["told"]["onsets"][0])
    shipped = json.loads((cfg.samples / "trio-infill-bars-32-48" / "trio-infill-bars-32-48_000.json").read_text())
    assert shipped["checkpoint"].endswith("trio.safetensors") and "heldout" in shipped["sources"][0]
