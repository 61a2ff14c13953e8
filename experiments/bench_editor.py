"""Benchmark: editor latency from "diffuse" to the updated roll, 16 bars x 3 tracks at the editor's steps.

Three figures per repeat and setting, from one editor server on this machine:

- ``sampler``: the sampling run itself (the job's own clock: the known mask, the sampler, note ends);
- ``api``: POST /api/sample, polling /api/jobs/{id} every 80 ms as the page does, until the finished piece
  (tokens and notes as JSON) has arrived: what any API client waits;
- ``browser``: in headless Chromium, from the click on Diffuse to the redrawn roll (the page's own
  ``editor.lastLatencyMs``); only where Debian's ``chromium`` and ``chromium-driver`` and selenium are installed.

Sampling speed does not depend on the weights, so without ``--checkpoint`` (and no checkpoint under ``runs/``)
a randomly initialised model of ``--arch``/``--preset`` stands in (``pretrained:trio`` is conv ``small``; the
paper preset is the thesis' size); the model used is printed.

``--settings`` compares sampling requests in the same run: ``NAME:FIELD=VALUE,...`` separated by ``;``, the
fields those of ``POST /api/sample`` (``default``: the editor's own).

    python experiments/bench_editor.py --checkpoint pretrained:trio
    python experiments/bench_editor.py --checkpoint pretrained:trio --bars 8 --no-browser \\
        --settings "before-44:steps=32,schedule=linear,cfg_interval=1,repair_steps=32,cfg_scale=1.5;default"
    python experiments/bench_editor.py --preset small --repeats 3
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch

from schmubert.backbones import build, describe
from schmubert.checkpoints import CheckpointError, checkpoint_hparams, find_latest_checkpoint, load_model, save_model
from schmubert.diffusion import NoiseConfig
from schmubert.editor.server import start_background
from schmubert.tokens import STEPS_PER_BAR

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
BAR = STEPS_PER_BAR


def model_for(args: argparse.Namespace, tmp: Path):
    path = args.checkpoint
    if path is None:
        try:
            path = find_latest_checkpoint(args.runs)
        except CheckpointError:
            path = None
    if path is not None:
        return load_model(path), f"checkpoint {path}"
    torch.manual_seed(0)
    denoiser = build(args.arch, "trio", args.preset)
    hp = checkpoint_hparams(args.arch, "trio", denoiser.config, NoiseConfig(), 1024)
    model = load_model(save_model(tmp / "random.ckpt", denoiser, hp))
    return model, f"random weights, {describe(denoiser)}"


def parse_setting(text: str) -> tuple[str, dict[str, Any]]:
    """``"old:steps=32,schedule=linear"`` -> ``("old", {"steps": 32, "schedule": "linear"})`` (numbers as JSON)."""
    name, _, rest = text.strip().partition(":")
    fields: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"setting {text!r}: {item!r} is not FIELD=VALUE")
        try:
            fields[key] = json.loads(value)
        except json.JSONDecodeError:
            fields[key] = value
    return name or "default", fields


def api_latency(url: str, tokens: dict, regions: list, fields: dict[str, Any]) -> tuple[float, float]:
    """(api seconds, sampler seconds) of one run through the HTTP API with the request ``fields``."""
    with httpx.Client(base_url=url, timeout=600) as client:
        began = time.perf_counter()
        r = client.post("/api/sample", json={"tokens": tokens, "regions": regions, **fields})
        r.raise_for_status()
        job = r.json()
        while True:
            state = client.get(f"/api/jobs/{job['job']}").json()
            if state["state"] not in ("queued", "running"):
                break
            time.sleep(0.08)
        seconds = time.perf_counter() - began
    if state["state"] != "done":
        raise RuntimeError(f"run ended {state['state']}: {state.get('error')}")
    return seconds, state["seconds"]


def browser_latencies(url: str, midi: Path, bars: tuple[int, int], steps: int | None, repeats: int) -> list[float]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        driver.get(url)
        WebDriverWait(driver, 30).until(lambda d: d.execute_script("return document.body.dataset.ready"))
        driver.find_element(By.ID, "file").send_keys(str(midi))
        WebDriverWait(driver, 30).until(lambda d: d.execute_script("return editor.panels[0].name") == midi.name)
        if steps is not None:
            box = driver.find_element(By.ID, "steps")
            box.clear()
            box.send_keys(str(steps))
        out = []
        for i in range(repeats):
            driver.execute_script(f"editor.panels[0].selectBars({bars[0]}, {bars[1]})")
            driver.find_element(By.ID, "diffuse").click()
            WebDriverWait(driver, 600).until(lambda d, n=i + 1: d.execute_script("return editor.runs") == n)
            out.append(driver.execute_script("return editor.lastLatencyMs") / 1000)
        return out
    finally:
        driver.quit()


def summary(values: list[float]) -> str:
    return f"median {statistics.median(values):7.3f} s   min {min(values):7.3f} s   (n = {len(values)})"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", type=Path, default=None, help="trio checkpoint (default: newest under --runs, "
                                                                  "else random weights)")
    p.add_argument("--runs", type=Path, default=Path("runs"))
    p.add_argument("--arch", default="conv")
    p.add_argument("--preset", default="paper")
    p.add_argument("--input", type=Path, default=CORPUS / "lakh-trio-64bar" / "sample_0.mid")
    p.add_argument("--start-bar", type=int, default=24, help="first of the 16 regenerated bars")
    p.add_argument("--bars", type=int, default=16)
    p.add_argument("--steps", type=int, default=None, help="the browser's steps box (default: the editor's)")
    p.add_argument("--settings", default="default", help="NAME:FIELD=VALUE,... requests separated by ';'")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--browser", action=argparse.BooleanOptionalAction, default=None,
                   help="also measure in headless Chromium (default: when it is installed)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model, what = model_for(args, Path(tmp))
        print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads; model: {what}")
        names = [t.name for t in model.tracks]
        bars = (args.start_bar, args.start_bar + args.bars)
        settings = [parse_setting(s) for s in args.settings.split(";") if s.strip()]
        print(f"regenerating bars {bars[0]}-{bars[1]} of {', '.join(names)} ({args.bars * BAR * len(names)} "
              f"elements) of {args.input.name}")
        srv = start_background(model)
        try:
            with httpx.Client(base_url=srv.url, timeout=60) as client:
                r = client.post("/api/load", params={"name": args.input.name}, content=args.input.read_bytes(),
                                headers={"content-type": "application/octet-stream"})
                r.raise_for_status()
                tokens = r.json()["piece"]["tokens"]
            regions = [{"track": n, "start": bars[0] * BAR, "end": bars[1] * BAR} for n in names]
            api_latency(srv.url, tokens, regions, {"steps": 2})  # warm-up
            for name, fields in settings:
                runs = [api_latency(srv.url, tokens, regions, fields) for _ in range(args.repeats)]
                print(f"{name} {json.dumps(fields)}")
                print(f"  sampler  {summary([s for _, s in runs])}")
                print(f"  api      {summary([a for a, _ in runs])}")
                overhead = [a - s for a, s in runs]
                print(f"           api - sampler: mean {np.mean(overhead):.3f} s (polling, JSON, decoding notes)")
            browser = args.browser
            if browser is None:
                browser = bool(shutil.which("chromium") and shutil.which("chromedriver"))
            if browser:
                print(f"browser  {summary(browser_latencies(srv.url, args.input, bars, args.steps, args.repeats))}")
            else:
                print("browser  skipped (needs chromium, chromium-driver and selenium)")
        finally:
            srv.stop()


if __name__ == "__main__":
    main()
