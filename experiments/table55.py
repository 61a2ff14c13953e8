"""Reproduce the protocol of thesis Table 5.5 for one checkpoint: framewise self-similarity, unconditional and
infilling (bars 16-48), against validation pieces, mean and standard deviation over several evaluations.

    python experiments/table55.py --checkpoint runs/x/checkpoints/last.ckpt --output results/table55 \\
        [--data data/trio] [--num-pieces 1000] [--num-evals 20] [--sample-steps 1024]

Each evaluation draws ``--num-pieces`` validation pieces (never training pieces) and

- unconditional: samples as many pieces from nothing, scored against that draw;
- infilling: keeps the drawn pieces outside bars 16..47, samples those bars, scored against the drawn pieces;
- validation: a second independent draw of validation pieces scored against the first (the "Validation data"
  row; needs at least twice ``--num-pieces`` validation pieces to be independent, else it overlaps).

Writes ``table55.md`` (our rows beside the thesis' rows from spec section 5), ``table55.png`` (bar chart) and
``table55.json`` to ``--output`` (refuses to overwrite without ``--overwrite``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from schmubert.config import add_arguments, arg, from_args, to_dict
from schmubert.evaluation import evaluate_overlaps, overlaps
from schmubert.files import write_atomic

METRICS = ("pitch C", "pitch Var", "duration C", "duration Var")
SETTINGS = ("unconditional", "infilling")
#: Thesis Table 5.5 (spec section 5): (pitch C, pitch Var, duration C, duration Var) per setting.
THESIS_ROWS = {
    "MDMVAE melody (Mittal et al.)": ((0.99, 0.90, 0.96, 0.92), (0.97, 0.87, 0.97, 0.80)),
    "Conv. Transformer melody": ((0.992, 0.920, 0.993, 0.937), (0.997, 0.970, 0.996, 0.970)),
    "U-Transformer melody": ((0.952, 0.930, 0.977, 0.932), (0.950, 0.943, 0.984, 0.972)),
    "Hierarchical melody": ((0.995, 0.890, 0.973, 0.900), (0.992, 0.921, 0.977, 0.913)),
    "Conv. Transformer trio": ((0.996, 0.893, 0.990, 0.896), (0.997, 0.964, 0.995, 0.924)),
    "Validation data": ((1.00, 0.96, 1.00, 0.96), (1.00, 0.96, 1.00, 0.91)),
}


@dataclass
class Table55Config:
    checkpoint: Path = arg(None, "checkpoint (.ckpt) to evaluate")
    output: Path = arg(Path("results/table55"), "folder for table55.md, table55.png and table55.json")
    data: Path | None = arg(None, "processed dataset folder with valid.npy (default: the checkpoint's)")
    num_pieces: int = arg(1000, "pieces per set per evaluation (the thesis: 1000)")
    num_evals: int = arg(20, "evaluations, each with freshly sampled pieces (the thesis: 20)")
    sample_steps: int | None = arg(None, "reverse sampling steps S (default: the model's T)")
    infill: str = arg("16:48", "bars START:STOP sampled in the infilling setting")
    drums: str = arg("include", "include or exclude drums in the metric")
    batch_size: int = arg(16, "sampling batch size")
    device: str = arg("cuda" if torch.cuda.is_available() else "cpu", "torch device")
    seed: int = arg(0, "seed of draws and sampling")
    overwrite: bool = arg(False, "replace existing outputs")


def sample_pieces(model, x0: np.ndarray, known: torch.Tensor, steps: int, batch_size: int,
                  generator: torch.Generator) -> np.ndarray:
    """Sample every unknown element of ``x0 [N, L, K]`` in batches; returns int64 ``[N, L, K]``."""
    from schmubert.sampling import sample

    out = []
    for lo in tqdm(range(0, len(x0), batch_size), desc="sampling", leave=False):
        x = torch.as_tensor(x0[lo: lo + batch_size].astype(np.int64), device=model.device)
        out.append(sample(model.denoiser, model.diffusion, x, known[: len(x)].to(model.device), steps,
                          generator).cpu().numpy())
    return np.concatenate(out)


def one_evaluation(model, valid: np.ndarray, cfg: Table55Config, rng: np.random.Generator,
                   generator: torch.Generator) -> dict[str, list[float]]:
    from schmubert import conditioning

    n, (L, K) = min(cfg.num_pieces, len(valid)), valid.shape[1:]
    order = rng.permutation(len(valid))
    ref = np.asarray(valid[np.sort(order[:n])], dtype=np.int64)
    other = order[n: 2 * n] if len(valid) >= 2 * n else rng.choice(len(valid), n, replace=False)
    val2 = np.asarray(valid[np.sort(other)], dtype=np.int64)
    steps = cfg.sample_steps or model.diffusion.T
    shape = (cfg.batch_size, L, K)
    uncond = sample_pieces(model, np.zeros_like(ref), conditioning.unconditional(shape), steps,
                           cfg.batch_size, generator)
    infilled = sample_pieces(model, ref, conditioning.infill(shape, [conditioning.parse_bar_range(cfg.infill)]), steps,
                             cfg.batch_size, generator)
    ref_oa = overlaps(ref, model.tracks, cfg.drums)
    rows = {"unconditional": overlaps(uncond, model.tracks, cfg.drums),
            "infilling": overlaps(infilled, model.tracks, cfg.drums),
            "validation": overlaps(val2, model.tracks, cfg.drums)}
    out = {}
    for name, gen_oa in rows.items():
        r = evaluate_overlaps(gen_oa, ref_oa, 1, n)
        out[name] = [r["pitch"]["consistency"], r["pitch"]["variance"], r["duration"]["consistency"],
                     r["duration"]["variance"]]
    return out


def markdown(ours: dict[str, np.ndarray], cfg: Table55Config, model) -> str:
    head = ("| model | " + " | ".join(f"{s[:5]}. {m}" for s in SETTINGS for m in METRICS) + " |\n"
            + "|---" * (1 + 2 * len(METRICS)) + "|\n")
    lines = [f"| {name} (thesis) | " + " | ".join(f"{v:.3f}" for row in rows for v in row) + " |"
             for name, rows in THESIS_ROWS.items()]

    def cells(values: np.ndarray) -> list[str]:
        return [f"{m:.3f} ± {s:.3f}" for m, s in zip(values.mean(0), values.std(0), strict=True)]

    lines.append(f"| **{model.path.name} (ours)** | " + " | ".join(cells(ours["unconditional"])
                                                               + cells(ours["infilling"])) + " |")
    lines.append("| validation data (ours) | " + " | ".join(cells(ours["validation"]) * 2) + " |")
    note = (f"\n\nOurs: mean ± std over {cfg.num_evals} evaluations of {cfg.num_pieces} pieces against "
            f"validation pieces; infilling bars {cfg.infill}; drums {cfg.drums}; checkpoint sha256 "
            f"{model.sha256[:12]}. The validation row compares two draws of validation pieces (the same in "
            "both settings). Thesis rows: Table 5.5 (20 evaluations of 1000 pieces).\n")
    return head + "\n".join(lines) + note


def bar_chart(ours: dict[str, np.ndarray], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    x = np.arange(len(METRICS))
    for ax, (s, setting) in zip(axes, enumerate(SETTINGS), strict=True):
        series = [("ours", ours[setting].mean(0), ours[setting].std(0)),
                  ("thesis conv. trio", np.array(THESIS_ROWS["Conv. Transformer trio"][s]), None),
                  ("thesis conv. melody", np.array(THESIS_ROWS["Conv. Transformer melody"][s]), None),
                  ("validation (ours)", ours["validation"].mean(0), ours["validation"].std(0))]
        width = 0.8 / len(series)
        for i, (label, mean, std) in enumerate(series):
            ax.bar(x + (i - (len(series) - 1) / 2) * width, mean, width, yerr=std, label=label, capsize=2)
        ax.set_xticks(x, METRICS)
        ax.set_title(setting)
        ax.set_ylim(0, 1.05)
    axes[0].set_ylabel("score (1 = like the reference)")
    axes[1].legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"), overwrite=True)
    plt.close(fig)


def write_text(path: Path, text: str) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(text), overwrite=True)  # --overwrite was checked up front


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser, Table55Config)
    cfg = from_args(Table55Config, parser.parse_args(argv))
    from schmubert.checkpoints import load_model
    from schmubert.evaluation.pieces import load_array

    outputs = [cfg.output / f"table55.{ext}" for ext in ("md", "png", "json")]
    if not cfg.overwrite and any(p.exists() for p in outputs):
        print(f"error: {cfg.output} already holds table55 outputs; pass --overwrite", file=sys.stderr)
        return 2
    if cfg.checkpoint is None:
        print("error: --checkpoint is required", file=sys.stderr)
        return 2
    model = load_model(cfg.checkpoint, cfg.device)
    data = Path(cfg.data or model.hparams.get("data", {}).get("path", ""))
    valid = load_array(data / "valid.npy" if data.is_dir() else data)
    rng, generator = np.random.default_rng(cfg.seed), torch.Generator().manual_seed(cfg.seed)
    start = time.perf_counter()
    runs = [one_evaluation(model, valid, cfg, rng, generator)
            for _ in tqdm(range(cfg.num_evals), desc="evaluations")]
    ours = {k: np.array([r[k] for r in runs]) for k in runs[0]}
    cfg.output.mkdir(parents=True, exist_ok=True)
    write_text(outputs[0], markdown(ours, cfg, model))
    bar_chart(ours, outputs[1])
    write_text(outputs[2], json.dumps({"config": to_dict(cfg), "metrics": list(METRICS),
                                         "evaluations": {k: v.tolist() for k, v in ours.items()},
                                         "seconds": time.perf_counter() - start}, indent=2))
    print(outputs[0].read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
