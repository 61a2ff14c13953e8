"""Benchmark: editor latency from "diffuse" to the updated roll, 16 bars x 3 tracks at the editor's steps.

Three figures per repeat, setting and server, from editor servers on this machine:

- ``sampler``: the sampling run itself (the job's own clock: the known mask, the sampler, note ends);
- ``api``: POST /api/sample, then GET /api/jobs/{id} until the finished piece (tokens and notes as JSON) has
  arrived, as the page asks: what any API client waits;
- ``browser``: in headless Chromium, from the click on Diffuse to the redrawn roll (the page's own
  ``editor.lastLatencyMs``), against the first server; only where Debian's ``chromium`` and ``chromium-driver``
  and selenium are installed.

``--servers`` (comma-separated) compares how the editor runs, in the same run:

- ``cli``: ``python -m schmubert.editor --no-browser --port 0`` in a process of its own, exactly as a user starts
  it: the jobs in its main thread, the page's long poll (``?wait=0.25``);
- ``worker-thread``: the editor as it ran before: the server in this process, the jobs in a worker thread of
  their own, polled every 80 ms as the page then did.

Sampling speed does not depend on the weights, so without ``--checkpoint`` (and no checkpoint under ``runs/``)
a randomly initialised model of ``--arch``/``--preset`` stands in (``pretrained:trio`` is conv ``small``; the
paper preset is the thesis' size); the model used is printed.

``--settings`` compares sampling requests in the same run: ``NAME:FIELD=VALUE,...`` separated by ``;``, the
fields those of ``POST /api/sample`` (``default``: the editor's own).

    python experiments/bench_editor.py --checkpoint pretrained:trio
    python experiments/bench_editor.py --checkpoint pretrained:trio --bars 8 --no-browser \\
        --servers cli,worker-thread \\
        --settings "before-44:steps=32,schedule=linear,cfg_interval=1,repair_steps=32,cfg_scale=1.5;default"
    python experiments/bench_editor.py --preset small --repeats 3
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
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


def api_latency(url: str, tokens: dict, regions: list, fields: dict[str, Any], long_poll: bool = True
                ) -> tuple[float, float]:
    """(api seconds, sampler seconds) of one run through the HTTP API with the request ``fields``; ``long_poll``:
    as the page asks now (the server answers when the run ends), else every 80 ms as it asked before."""
    with httpx.Client(base_url=url, timeout=600) as client:
        began = time.perf_counter()
        r = client.post("/api/sample", json={"tokens": tokens, "regions": regions, **fields})
        r.raise_for_status()
        job = r.json()
        while True:
            state = client.get(f"/api/jobs/{job['job']}", params={"wait": 0.25} if long_poll else None).json()
            if state["state"] not in ("queued", "running"):
                break
            if not long_poll:
                time.sleep(0.08)
        seconds = time.perf_counter() - began
    if state["state"] != "done":
        raise RuntimeError(f"run ended {state['state']}: {state.get('error')}")
    return seconds, state["seconds"]


@contextlib.contextmanager
def cli_server(checkpoint: str) -> Iterator[str]:
    """``python -m schmubert.editor`` on a free port, as a user starts it; yields its URL."""
    proc = subprocess.Popen([sys.executable, "-m", "schmubert.editor", "--no-browser", "--port", "0",
                             "--checkpoint", checkpoint], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()  # "SCHmUBERT editor: http://127.0.0.1:PORT/  (model ...)"
        found = re.search(r"(http://\S+?)/\s", line)
        if found is None:
            raise RuntimeError(f"the editor did not start: {line!r}")
        yield found.group(1)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextlib.contextmanager
def worker_thread_server(model) -> Iterator[str]:
    srv = start_background(model)
    try:
        yield srv.url
    finally:
        srv.stop()


SERVERS = ("cli", "worker-thread")


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
    p.add_argument("--servers", default="cli", help=f"comma-separated, of {SERVERS} (see above)")
    p.add_argument("--browser", action=argparse.BooleanOptionalAction, default=None,
                   help="also measure in headless Chromium (default: when it is installed)")
    args = p.parse_args()
    servers = [name.strip() for name in args.servers.split(",") if name.strip()]
    if not servers or set(servers) - set(SERVERS):
        p.error(f"--servers: {args.servers!r}; choose from {SERVERS}")
    with tempfile.TemporaryDirectory() as tmp:
        model, what = model_for(args, Path(tmp))
        checkpoint = str(args.checkpoint) if args.checkpoint is not None else str(model.path)
        print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads; model: {what}")
        names = [t.name for t in model.tracks]
        bars = (args.start_bar, args.start_bar + args.bars)
        settings = [parse_setting(s) for s in args.settings.split(";") if s.strip()]
        print(f"regenerating bars {bars[0]}-{bars[1]} of {', '.join(names)} ({args.bars * BAR * len(names)} "
              f"elements) of {args.input.name}")
        regions = [{"track": n, "start": bars[0] * BAR, "end": bars[1] * BAR} for n in names]
        browser = args.browser
        if browser is None:
            browser = bool(shutil.which("chromium") and shutil.which("chromedriver"))
        for i, server in enumerate(servers):
            started = cli_server(checkpoint) if server == "cli" else worker_thread_server(model)
            with started as url:
                measure(url, server, args, regions, settings, browser=browser and i == 0)
        if not browser:
            print("browser  skipped (needs chromium, chromium-driver and selenium)")


def measure(url: str, server: str, args: argparse.Namespace, regions: list, settings: list, browser: bool
            ) -> None:
    """Every setting ``args.repeats`` times against the server at ``url``, then in the browser if ``browser``."""
    with httpx.Client(base_url=url, timeout=60) as client:
        r = client.post("/api/load", params={"name": args.input.name}, content=args.input.read_bytes(),
                        headers={"content-type": "application/octet-stream"})
        r.raise_for_status()
        tokens = r.json()["piece"]["tokens"]
    long_poll = server == "cli"
    api_latency(url, tokens, regions, {"steps": 2}, long_poll)  # warm-up
    for name, fields in settings:
        runs = [api_latency(url, tokens, regions, fields, long_poll) for _ in range(args.repeats)]
        print(f"{server}: {name} {json.dumps(fields)}")
        print(f"  sampler  {summary([s for _, s in runs])}")
        print(f"  api      {summary([a for a, _ in runs])}")
        overhead = [a - s for a, s in runs]
        print(f"           api - sampler: mean {np.mean(overhead):.3f} s (polling, JSON, decoding notes)")
    if browser:
        bars = (args.start_bar, args.start_bar + args.bars)
        print(f"browser  {summary(browser_latencies(url, args.input, bars, args.steps, args.repeats))}")


if __name__ == "__main__":
    main()
