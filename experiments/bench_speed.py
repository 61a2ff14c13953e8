"""Benchmark: where sampling time goes, and what it costs in network evaluations (issue 44).

For each scenario it runs the sample CLI's own path (:func:`schmubert.sample.generate`: the model's decoding
defaults, its precision, the copy prior, outlines, guidance and repair) and prints:

- ``NFE``: sampling time over the time of one forward pass of the same network at the same batch and precision,
  in the same run: what the issue counts ("network evaluations per piece"); a guided pass of 2B pieces counts
  about 2;
- ``calls``: the sampler's own count of denoiser calls (a guided call is one call of twice the batch);
- the time by phase, exclusive, as shares of the total: ``network`` (the backbone, the conditional or only
  half of a guided pass), ``guidance`` (the other half of guided passes), ``copy prior`` (mixing its scores in),
  ``repair`` (the repair rounds' own network and sampler time, apart), ``attributes`` (the plan, keys, outlines),
  ``sampler`` (everything else in the reverse process: draws, reveals, masks, Python) and, for the song edit,
  ``song I/O`` (reading, role choice, splicing, writing).

Scenarios: ``uncond`` (a new 64-bar piece), ``infill`` (bars 16:48 of held-out windows, every track), ``song``
(a ten-bar edit of a real multitrack song through ``schmubert.sample.run``) and ``editor`` (the editor's job:
16 bars x every track of a held-out window at the editor's steps). ``--settings`` as in
``bench_decoding.py`` (``NAME:FIELD=VALUE,...;...``) compares decoding settings in the same run.

    python experiments/bench_speed.py --checkpoint pretrained:trio
    python experiments/bench_speed.py --checkpoint pretrained:melody --scenarios uncond,infill \\
        --settings "default;s32:steps=32"
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_decoding import config_for, parse_setting  # noqa: E402
from bench_riff_copy import held_out  # noqa: E402

import schmubert.copy_prior as copy_prior_module  # noqa: E402
import schmubert.sample as sample_module  # noqa: E402
import schmubert.sampling as sampling_module  # noqa: E402
from schmubert.checkpoints import LoadedModel, load_model  # noqa: E402
from schmubert.sample import Scenario, generate  # noqa: E402
from schmubert.sampling import DEFAULT_STEPS, EDITOR_STEPS, fast_denoiser  # noqa: E402
from schmubert.tokens import STEPS_PER_BAR  # noqa: E402

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
SONG = CORPUS / "multitrack-songs"
SCENARIOS = ("uncond", "infill", "song", "editor")


class Phases:
    """Exclusive wall time per phase: entering or leaving a phase charges the time since the last event to the
    phase that was running. Phases entered inside a repair round are charged to ``repair`` as a whole."""

    def __init__(self) -> None:
        self.stack = ["sampler"]
        self.seconds: dict[str, float] = defaultdict(float)
        self.last = time.perf_counter()

    def charge(self) -> float:
        """Charge the time since the last event to the running phase; returns it."""
        now = time.perf_counter()
        spent, self.last = now - self.last, now
        self.seconds[self.stack[-1]] += spent
        return spent

    def push(self, name: str) -> None:
        self.charge()
        self.stack.append("repair" if self.stack[-1] == "repair" else name)

    def pop(self) -> float:
        spent = self.charge()
        self.stack.pop()
        return spent

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self.push(name)
        try:
            yield
        finally:
            self.pop()


def backbone_of(denoiser: torch.nn.Module) -> torch.nn.Module:
    """The network itself under the copy prior and precision wrappers (each holds it as ``.denoiser``)."""
    while "denoiser" in denoiser._modules:
        denoiser = denoiser._modules["denoiser"]
    return denoiser


@contextlib.contextmanager
def patched(module: Any, name: str, replacement: Any) -> Iterator[None]:
    original = getattr(module, name)
    setattr(module, name, replacement)
    try:
        yield
    finally:
        setattr(module, name, original)


def timed(phases: Phases, phase: str, fn: Any) -> Any:
    def run(*args, **kwargs):
        with phases.phase(phase):
            return fn(*args, **kwargs)
    return run


@contextlib.contextmanager
def instrumented(net: torch.nn.Module, phases: Phases, batch: int) -> Iterator[dict]:
    """Charge ``net``'s passes (of a pass over more than ``batch`` pieces, half to guidance), the copy prior's
    mixing, repair rounds, attribute work and model loading to their phases for the duration of the block.
    Yields counts: ``passes`` (backbone passes), ``pieces`` (pieces passed through it)."""
    counts = {"passes": 0, "pieces": 0}

    def before(module, args):
        phases.push("network")

    def after(module, args, out):
        pieces = args[0].shape[0]
        counts["passes"] += 1
        counts["pieces"] += pieces
        top = phases.stack[-1]
        spent = phases.pop()
        if pieces > batch and top == "network":  # a guided pass [x_t; x_t]: its second half is guidance
            phases.seconds["network"] -= spent / 2
            phases.seconds["guidance"] += spent / 2

    runs = {"n": 0}
    reverse, sample_fn = sampling_module.reverse, sampling_module.sample

    def reverse_timed(*args, **kwargs):  # the first reverse run of a sample() call is the piece, the rest repair
        runs["n"] += 1
        return reverse(*args, **kwargs) if runs["n"] == 1 else timed(phases, "repair", reverse)(*args, **kwargs)

    def sample_timed(*args, **kwargs):
        runs["n"] = 0
        return sample_fn(*args, **kwargs)

    hooks = [net.register_forward_pre_hook(before), net.register_forward_hook(after)]
    with contextlib.ExitStack() as stack:
        for module, name, phase in ((copy_prior_module, "mix_log_probs", "copy prior"),
                                    (sample_module, "make_attributes", "attributes"),
                                    (sample_module, "decoding_plan", "attributes"),
                                    (sample_module, "load_model", "start-up")):
            stack.enter_context(patched(module, name, timed(phases, phase, getattr(module, name))))
        stack.enter_context(patched(sampling_module, "reverse", reverse_timed))
        stack.enter_context(patched(sampling_module, "sample", sample_timed))
        stack.enter_context(patched(sample_module, "sample", sample_timed))
        try:
            yield counts
        finally:
            for h in hooks:
                h.remove()


@torch.no_grad()
def forward_seconds(denoiser: torch.nn.Module, x: torch.Tensor, repeats: int = 5) -> float:
    """The median of ``repeats`` forward passes of ``denoiser`` on ``x`` (after one warm-up)."""
    denoiser(x)
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        denoiser(x)
        times.append(time.perf_counter() - began)
    return statistics.median(times)


# --- scenarios ----------------------------------------------------------------------------------------------


def run_pieces(model: LoadedModel, scen: Scenario, fields: dict[str, Any], args: argparse.Namespace,
               steps: int | None = None) -> None:
    """``args.batch`` pieces of ``scen`` as the sample CLI makes them (plan, attributes, generate)."""
    cfg = config_for({"steps": steps or args.steps, **fields}, args, args.batch)
    generator = torch.Generator().manual_seed(args.seed)
    plan = sample_module.decoding_plan(cfg, model, scen)
    attrs = sample_module.make_attributes(cfg, model, scen, generator, plan)
    generate(cfg, model, scen, None, generator, attributes=attrs, plan=plan)


def uncond(model: LoadedModel, fields: dict, args: argparse.Namespace) -> None:
    L, K = model.steps, len(model.tracks)
    run_pieces(model, Scenario(np.zeros((L, K), np.int64), np.zeros((L, K), bool), "unconditional", []),
               fields, args)


def infill(model: LoadedModel, fields: dict, args: argparse.Namespace, bars: tuple[int, int] = (16, 48),
           steps: int | None = None) -> None:
    held = held_out(model, None, args.checkpoint)
    x = np.asarray(held[0][: model.steps], dtype=np.int64)
    known = np.ones_like(x, dtype=bool)
    known[bars[0] * STEPS_PER_BAR: bars[1] * STEPS_PER_BAR] = False
    run_pieces(model, Scenario(x, known, "infilling", []), fields, args, steps)


def editor(model: LoadedModel, fields: dict, args: argparse.Namespace) -> None:
    """The editor's job as it samples: 16 bars x every track at the editor's steps."""
    infill(model, fields, args, (24, 40), fields.get("steps", EDITOR_STEPS))


def song_edit(model: LoadedModel, fields: dict, args: argparse.Namespace) -> None:
    """A ten-bar edit of a real song through the sample CLI (reading, role choice, splicing, writing)."""
    song = sorted(SONG.glob("*.mid"))[0]
    with tempfile.TemporaryDirectory() as out:
        argv = ["--checkpoint", args.checkpoint, "--input", str(song), "--infill", "20:30", "--out", out,
                "--num-samples", str(args.batch), "--batch-size", str(args.batch), "--no-wav", "--no-progress",
                "--seed", str(args.seed), "--steps", str(fields.get("steps", args.steps))]
        for k, v in fields.items():
            if k != "steps":
                argv += [f"--{k.replace('_', '-')}", str(v)]
        loaded = patched(sample_module, "load_model", lambda *a, **k: model)  # the model the hooks watch
        with contextlib.redirect_stdout(None), loaded:
            sample_module.main(argv)


RUNNERS = {"uncond": uncond, "infill": infill, "song": song_edit, "editor": editor}


def measure(model: LoadedModel, scenario: str, fields: dict[str, Any], args: argparse.Namespace,
            forward: float, net: torch.nn.Module) -> dict[str, Any]:
    """One scenario at one setting: seconds, NFE, backbone passes and the phase shares."""
    phases = Phases()
    began = time.perf_counter()
    with instrumented(net, phases, args.batch) as counts:
        phases.last = time.perf_counter()
        RUNNERS[scenario](model, fields, args)
        phases.charge()
    seconds = time.perf_counter() - began
    spent = dict(phases.seconds)
    if scenario == "song":  # the song run's time outside the phases is the CLI's: reading, splicing, writing
        spent["song I/O"] = spent.pop("sampler", 0.0)
    return {"seconds": seconds, "nfe": (seconds - spent.get("start-up", 0.0)) / forward, **counts,
            "phases": spent}


PHASES = ("network", "guidance", "copy prior", "repair", "attributes", "sampler", "song I/O", "start-up")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python experiments/bench_speed.py", description=__doc__.splitlines()[0],
                                allow_abbrev=False)
    p.add_argument("--checkpoint", default="pretrained:trio", help=".ckpt, .safetensors or pretrained:NAME")
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"comma-separated, of {SCENARIOS}")
    p.add_argument("--settings", default="default", help="NAME:FIELD=VALUE,... settings separated by ';' "
                                                         "(as bench_decoding.py's)")
    p.add_argument("--batch", type=int, default=16, help="pieces sampled together (the forward pass's batch)")
    p.add_argument("--steps", type=int, default=None, help="reverse steps unless a setting says "
                                                           "(default: the sample CLI's)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"], help="as the sample CLI's")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    args.batch_size = args.batch
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.steps = args.steps or DEFAULT_STEPS
    model = load_model(args.checkpoint)
    settings = [parse_setting(s) for s in args.settings.split(";") if s.strip()]
    denoiser = fast_denoiser(backbone_of(model.denoiser), config_for({}, args, 1).precision)
    x = torch.full((args.batch, model.steps, len(model.tracks)), 0, dtype=torch.long)
    forward = forward_seconds(denoiser, x)
    print(f"{args.checkpoint}: one forward pass of the network at batch {args.batch} ({model.steps} steps x "
          f"{len(model.tracks)} tracks, precision {args.precision}): {forward * 1000:.0f} ms; NFE = sampling "
          f"seconds / that, per batch of {args.batch} pieces\n")
    print("| scenario | setting | s per batch | NFE | backbone passes (pieces / batch) | "
          + " | ".join(PHASES) + " |")
    print("|---|---|---:|---:|---:|" + "---:|" * len(PHASES))
    for scenario in args.scenarios.split(","):
        for name, fields in settings:
            r = measure(model, scenario, fields, args, forward, backbone_of(model.denoiser))
            total = sum(r["phases"].values())
            shares = " | ".join(f"{r['phases'].get(ph, 0.0) / total:.0%}" if ph in r["phases"] else "-"
                                for ph in PHASES)
            print(f"| {scenario} | {name} | {r['seconds']:.1f} | **{r['nfe']:.0f}** | {r['passes']} "
                  f"({r['pieces'] / args.batch:.0f}) | {shares} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
