"""Benchmark: sample quality against the number of reverse steps S, for each sampler variant.

For every variant (a set of :class:`schmubert.sampling.SamplerOptions`) and every S, samples ``--pieces``
pieces unconditionally and by infilling bars 16:48 of held-out windows, and prints per S:

- ``s/trio``: seconds of sampling per 64-bar trio (wall clock, batches of ``--batch-size``, this device),
- ``stats``: the overlap of the music statistics' distributions with the held-out set (1 = identical; mean
  over the statistics of :mod:`schmubert.evaluation.stats`),
- ``cons``/``var``: framewise self-similarity against the held-out set (thesis Table 5.5; mean of pitch and
  duration),
- ``H``: token entropy of the samples in bits (mean over tracks; a collapse shows as a drop below ``data``),
- for infilling, the same on the infilled bars only, plus ``cut``/``hang``: the share of melodic border
  crossings (start and end of the region, per piece and melodic track) where a note that crossed the border in
  the original was cut there, or a note rings across it that did not (raw sampler output; the sample CLI
  also rewrites a kept note's end at the region's start, see :func:`schmubert.conditioning.preserve_note_ends`).

The ``data`` row scores the held-out pieces themselves the same way: the best a sampler can do with this many
pieces, and so a noise level. ``--json`` keeps every figure; ``--plot`` draws the curve.

    python experiments/bench_quality_steps.py --checkpoint runs/tiny/checkpoints/last.ckpt \\
        --reference ../shared/corpus/lakh-trio-64bar --pieces 8 --steps 8,16 --variants random,cosine
    python experiments/bench_quality_steps.py --checkpoint pretrained:trio --pieces 64 --json curve.json
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from schmubert import conditioning
from schmubert.checkpoints import LoadedModel, held_out_pieces, load_model
from schmubert.evaluation import load_pieces, selfsim
from schmubert.evaluation.stats import compare_sets
from schmubert.files import write_atomic
from schmubert.sampling import SamplerOptions, fast_denoiser, sample
from schmubert.tokens import NO_EVENT, NOTE_OFF, STEPS_PER_BAR

STEPS = [8, 16, 32, 64, 128, 256, 1024]
INFILL_BARS = (16, 48)
#: name -> SamplerOptions fields; 'random' is the thesis' sampler (Algorithm 4).
VARIANTS: dict[str, dict] = {
    "random": {},
    "confidence": {"order": "confidence"},
    "cosine": {"schedule": "cosine"},
    "confidence-cosine": {"order": "confidence", "schedule": "cosine"},
    "remdm-cap": {"remask": "cap", "remask_eta": 0.02},
    "remdm-rescale": {"remask": "rescale", "remask_eta": 0.1},
    "remdm-conf": {"remask": "cap", "remask_eta": 0.02, "remask_order": "confidence"},
    "remdm-loop": {"remask": "cap", "remask_eta": 0.02, "remask_loop": 0.2, "remask_loop_level": 0.1},
}


# --- figures ------------------------------------------------------------------------------------------------


def stats_overlap(generated: Sequence[np.ndarray], reference: Sequence[np.ndarray], tracks) -> float:
    """The statistics' summary overlap with the reference set (:func:`schmubert.evaluation.compare_sets`)."""
    return float(compare_sets(list(generated), list(reference), tracks)["summary"])


def self_similarity(generated: Sequence[np.ndarray], reference: Sequence[np.ndarray], tracks) -> tuple[float, float]:
    """(consistency, variance) of framewise self-similarity, each the mean of pitch and duration; NaN without
    notes."""
    try:
        out = selfsim(generated, reference, tracks)
    except ValueError:  # no piece with notes
        return float("nan"), float("nan")
    return (float(np.mean([out[f]["consistency"] for f in ("pitch", "duration")])),
            float(np.mean([out[f]["variance"] for f in ("pitch", "duration")])))


def token_entropy(pieces: np.ndarray) -> float:
    """Entropy (bits) of each track's token histogram over all pieces ``(N, steps, K)``, mean over tracks."""
    out = []
    for k in range(pieces.shape[-1]):
        counts = np.bincount(pieces[..., k].ravel())
        p = counts[counts > 0] / counts.sum()
        out.append(-(p * np.log2(p)).sum())
    return float(np.mean(out))


def sounding(rows: np.ndarray) -> np.ndarray:
    """Whether a melodic note sounds at each step of token rows ``(..., steps)``: the last event is an onset."""
    steps = np.arange(rows.shape[-1])
    last = np.maximum.accumulate(np.where(rows != NO_EVENT, steps, -1), axis=-1)  # index of the last event
    event = np.take_along_axis(rows, np.maximum(last, 0), axis=-1)
    return (last >= 0) & (event > NOTE_OFF)


def border_errors(generated: np.ndarray, original: np.ndarray, tracks, start: int, end: int) -> tuple[float, float]:
    """(cut, hang): shares of the melodic border crossings at steps ``start`` and ``end`` where a note of the
    original crossing the border no longer crosses it, or a note crosses it that did not in the original.

    ``generated``/``original``: ``(N, steps, K)``; a note crosses the border at step s when it sounds at s - 1
    and the token at s is 'no event' (it holds on).
    """
    melodic = [k for k, t in enumerate(tracks) if not t.is_drum]
    cut = hang = total = 0
    for k in melodic:
        g, o = generated[..., k], original[..., k]
        for s in (start, end):
            crosses_g = sounding(g)[:, s - 1] & (g[:, s] == NO_EVENT)
            crosses_o = sounding(o)[:, s - 1] & (o[:, s] == NO_EVENT)
            cut += int((crosses_o & ~crosses_g).sum())
            hang += int((crosses_g & ~crosses_o).sum())
            total += len(g)
    return cut / total, hang / total


def figures(pieces: np.ndarray, reference: Sequence[np.ndarray], tracks) -> dict[str, float]:
    cons, var = self_similarity(list(pieces), reference, tracks)
    return {"stats": stats_overlap(list(pieces), reference, tracks), "cons": cons, "var": var,
            "H": token_entropy(pieces)}


def infill_figures(pieces: np.ndarray, originals: np.ndarray, reference: Sequence[np.ndarray], tracks
                   ) -> dict[str, float]:
    a, b = (bar * STEPS_PER_BAR for bar in INFILL_BARS)
    region = [r[a:b] for r in reference]
    cut, hang = border_errors(pieces, originals, tracks, a, b)
    inner = {f"{k}_bars": v for k, v in figures(pieces[:, a:b], region, tracks).items()}
    return {**figures(pieces, reference, tracks), **inner, "cut": cut, "hang": hang}


# --- sampling -----------------------------------------------------------------------------------------------


def run_sampler(denoiser, model: LoadedModel, x: np.ndarray, known: np.ndarray, steps: int,
                opts: SamplerOptions, batch_size: int, seed: int) -> tuple[np.ndarray, float]:
    """Samples ``(N, steps, K)`` for every row of ``x``/``known``, and the seconds it took."""
    generator = torch.Generator().manual_seed(seed)
    out, seconds = [], 0.0
    for i in range(0, len(x), batch_size):
        xb, kb = torch.as_tensor(x[i:i + batch_size]), torch.as_tensor(known[i:i + batch_size])
        began = time.perf_counter()
        result = sample(denoiser, model.diffusion, xb, kb, steps, generator, opts)
        if result.is_cuda:
            torch.cuda.synchronize(result.device)
        seconds += time.perf_counter() - began
        out.append(result.cpu().numpy())
    return np.concatenate(out), seconds


def held_out(reference: Sequence[np.ndarray], n: int, length: int, seed: int) -> np.ndarray:
    """``n`` pieces of the reference set, cut to ``length`` steps, ``(n, length, K)``."""
    usable = [i for i, r in enumerate(reference) if len(r) >= length]
    if len(usable) < n:
        raise ValueError(f"the reference set has {len(usable)} pieces of {length} steps; --pieces {n} needs more")
    picks = np.random.default_rng(seed).choice(usable, size=n, replace=False)
    return np.stack([np.asarray(reference[int(i)][:length], dtype=np.int64) for i in picks])


# --- main ---------------------------------------------------------------------------------------------------

COLUMNS = ("s/trio", "stats", "cons", "var", "H")
INFILL_COLUMNS = COLUMNS + ("stats_bars", "cons_bars", "var_bars", "H_bars", "cut", "hang")


def print_row(label: str, S: int | str, row: dict, columns: Sequence[str]) -> None:
    cells = " ".join(f"{row.get(c, float('nan')):>{max(7, len(c))}.3f}" for c in columns)
    print(f"{label:>18} {S!s:>5} {cells}", flush=True)


def print_header(scenario: str, columns: Sequence[str]) -> None:
    print(f"\n{scenario}\n{'variant':>18} {'S':>5} " + " ".join(f"{c:>{max(7, len(c))}}" for c in columns))


def reference_pieces(args: argparse.Namespace, model: LoadedModel) -> list[np.ndarray]:
    path = args.reference
    if path is None:
        found = held_out_pieces(model)
        if found is None:
            raise SystemExit(f"error: the validation set of {model.path} is not here; pass --reference")
        return [np.asarray(p, dtype=np.int64) for p in found[0]]
    names = [t.name for t in model.tracks]
    pieces = load_pieces(path, "trio" if len(names) == 3 else "melody", model.steps)
    return [np.asarray(p, dtype=np.int64) for p in pieces]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="a .ckpt, .safetensors or pretrained:NAME")
    p.add_argument("--reference", type=Path, default=None,
                   help="held-out pieces (.npy or MIDI folder); default: those the model ships with, or its valid.npy")
    p.add_argument("--pieces", type=int, default=16, help="pieces per scenario, variant and S")
    p.add_argument("--steps", type=lambda s: [int(v) for v in s.split(",")], default=STEPS)
    p.add_argument("--variants", type=lambda s: s.split(","), default=list(VARIANTS),
                   help=f"comma-separated, of {', '.join(VARIANTS)}")
    p.add_argument("--scenarios", type=lambda s: s.split(","), default=["unconditional", "infill"])
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                   help="denoiser arithmetic (auto: bf16 where native, the sample CLI's default)")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="write every figure here")
    p.add_argument("--plot", type=Path, default=None, help="write the curve (PNG) here")
    args = p.parse_args()
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"error: unknown variant(s) {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    return args


def score(scenario: str, pieces: np.ndarray, originals: np.ndarray, reference: Sequence[np.ndarray],
          tracks) -> dict[str, float]:
    if scenario == "infill":
        return infill_figures(pieces, originals, reference, tracks)
    return figures(pieces, reference, tracks)


def run_scenario(args: argparse.Namespace, scenario: str, denoiser, model: LoadedModel, originals: np.ndarray,
                 reference: Sequence[np.ndarray]) -> list[dict]:
    """Every variant and S of one scenario: printed, and returned as rows."""
    N, L, K = originals.shape
    if scenario == "infill":
        x, known = originals, conditioning.infill((N, L, K), [INFILL_BARS]).numpy()
    else:
        x, known = np.zeros((N, L, K), np.int64), np.zeros((N, L, K), bool)
    columns = INFILL_COLUMNS if scenario == "infill" else COLUMNS
    print_header(f"{scenario} ({'bars 16:48 of held-out windows' if scenario == 'infill' else 'from nothing'})",
                 columns)
    rows = [{"scenario": scenario, "variant": "data", **score(scenario, originals, originals, reference,
                                                              model.tracks)}]
    print_row("data", "-", rows[0], columns)
    for variant in args.variants:
        opts = SamplerOptions(**VARIANTS[variant])
        for S in args.steps:
            pieces, seconds = run_sampler(denoiser, model, x, known, S, opts, args.batch_size, args.seed)
            row = {"s/trio": seconds / N * 1024 / L,  # per 64-bar trio
                   **score(scenario, pieces, originals, reference, model.tracks)}
            print_row(variant, S, row, columns)
            rows.append({"scenario": scenario, "variant": variant, "S": S, **row})
    return rows


def main() -> None:
    args = parse_args()
    model = load_model(args.checkpoint, args.device)
    denoiser = fast_denoiser(model.denoiser, args.precision, args.compile)
    reference = reference_pieces(args, model)
    originals = held_out(reference, args.pieces, model.steps, args.seed)
    print(f"{args.checkpoint}: {type(model.denoiser).__name__}, {model.denoiser.num_parameters():,} parameters, "
          f"window {model.steps} steps; {args.pieces} pieces per cell; reference {len(reference)} pieces; "
          f"torch threads {torch.get_num_threads()}, device {args.device}")
    results: dict = {"checkpoint": str(args.checkpoint), "pieces": args.pieces, "variants": VARIANTS, "rows": []}
    for scenario in args.scenarios:
        results["rows"] += run_scenario(args, scenario, denoiser, model, originals, reference)
    if args.json:
        text = json.dumps(results, indent=1)
        write_atomic(args.json, lambda tmp: tmp.write_text(text), overwrite=True)
    if args.plot:
        plot(results, args.plot)


def plot(results: dict, path: Path) -> None:
    """Statistics overlap and self-similarity consistency against S, one line per variant and scenario."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key in zip(axes, ("stats", "cons"), strict=True):
        for scenario, style in (("unconditional", "-"), ("infill", "--")):
            rows = [r for r in results["rows"] if r["scenario"] == scenario]
            data = [r for r in rows if r["variant"] == "data"]
            for variant in dict.fromkeys(r["variant"] for r in rows if r["variant"] != "data"):
                vr = sorted((r for r in rows if r["variant"] == variant), key=lambda r: r["S"])
                ax.plot([r["S"] for r in vr], [r[key] for r in vr], style, marker="o", label=f"{variant} ({scenario})")
            if data:
                ax.axhline(data[0][key], color="gray", linestyle=style, linewidth=0.8)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("reverse steps S")
        ax.set_ylabel({"stats": "statistics overlap", "cons": "self-similarity consistency"}[key])
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120), overwrite=True)


if __name__ == "__main__":
    main()
