"""``python -m schmubert.evaluate``: self-similarity, music statistics and held-out likelihood.

    python -m schmubert.evaluate selfsim --reference data/trio/valid.npy --generated samples/ [--json]
    python -m schmubert.evaluate stats --reference data/trio/valid.npy --generated samples/
    python -m schmubert.evaluate elbo --checkpoint runs/x/checkpoints/last.ckpt --data data/trio \
        [--infill 16:48]
    python -m schmubert.evaluate elbo --checkpoint pretrained:trio --json     # its shipped held-out windows
    python -m schmubert.evaluate context --checkpoint pretrained:trio        # does it use its context?

REF and GEN are ``.npy`` token arrays ``(N, steps, K)`` / ``(steps, K)``, MIDI files, or folders of either.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from schmubert.config import add_arguments, arg, from_args

DEFAULT_WORKERS = min(2, os.cpu_count() or 1)


@dataclass
class SetsConfig:
    """The two sets of pieces compared by ``selfsim`` and ``stats``."""

    reference: Path = arg(None, "reference set (e.g. the validation split): .npy arrays, MIDI, or a folder")
    generated: Path = arg(None, "generated set: .npy token arrays, MIDI files, or a folder of them")
    tracks: Literal["trio", "melody"] = arg("trio", "the tracks MIDI files are read as (by instrument role)")
    steps: int = arg(1024, "MIDI files are cut/padded to this many 16th steps (0 = each file's own length in "
                           "whole bars, unpadded)")
    workers: int = arg(DEFAULT_WORKERS, "processes reading MIDI files")
    json: bool = arg(False, "print machine-readable JSON instead of a table")
    progress: bool = arg(True, "show progress bars (on stderr)")


@dataclass
class SelfsimConfig(SetsConfig):
    num_evals: int = arg(20, "evaluations to average (the thesis: 20); each draws --num-pieces from each set")
    num_pieces: int = arg(1000, "pieces drawn per set per evaluation; a set no larger is used whole")
    drums: Literal["include", "exclude"] = arg("include", "pool drum hits with notes (the original) or not")
    silent: Literal["zero", "drop"] = arg("zero", "a piece without notes (or ending before bar 6): overlap 0, "
                                          "kept in mean and variance (the original), or drop it (not the original)")
    use_tracks: list[str] | None = arg(None, "only these tracks, e.g. melody (default: all)")
    seed: int = arg(0, "seed of the draws")


@dataclass
class StatsConfig(SetsConfig):
    bins: int = arg(30, "histogram bins over the reference's range for the overlap of two sets' distributions")


@dataclass
class HeldOutConfig:
    """What every model-on-held-out-data command takes (``elbo``, ``context``)."""

    checkpoint: Path | None = arg(None, "checkpoint (.ckpt, .safetensors or pretrained:NAME); default: the newest "
                                  "under runs/, else the shipped trio model")
    data: Path | None = arg(None, "processed dataset folder (its valid.npy is used) or a .npy token array; "
                            "default: the held-out windows the model ships with (or its dataset's valid.npy)")
    max_pieces: int | None = arg(None, "evaluate at most this many pieces, evenly spaced over the array")
    batch_size: int = arg(16, "denoiser batch size")
    seed: int = arg(0, "seed of the masks")
    device: str = arg("cuda" if torch.cuda.is_available() else "cpu", "torch device")
    copy_prior: bool = arg(True, "score the model with the copy prior it carries (schmubert/copy_prior.py); "
                                 "--no-copy-prior: the network alone")
    json: bool = arg(False, "print machine-readable JSON")


@dataclass
class ElboConfig(HeldOutConfig):
    infill: str | None = arg(None, "score only bars START:STOP (e.g. 16:48), the rest known: infilling NLL")
    estimator: Literal["count", "time"] = arg("count", "stratified over the mask count (low variance) or t")
    samples_per_piece: int = arg(16, "Monte-Carlo samples per piece (stratified)")
    progress: bool = arg(True, "show a progress bar (on stderr)")
    attributes: Literal["null", "own"] = arg("null", "models trained with attributes: tell nothing (null, the "
                                             "unconditional model) or each piece its own key, onsets and register "
                                             "(own: the bound given the piece's description)")


@dataclass
class ContextConfig(HeldOutConfig):
    rates: list[float] = arg([0.05, 0.3, 0.6, 0.95], "mask rates")
    max_pieces: int | None = arg(256, "score at most this many pieces, evenly spaced over the array (none: all)")
    batch_size: int = arg(8, "denoiser batch size")


def _load_set(path: Path, cfg: SetsConfig):
    from schmubert.evaluation import load_pieces

    pieces = load_pieces(path, cfg.tracks, cfg.steps or None, cfg.workers, progress=cfg.progress)
    for file, reason in pieces.skipped:
        print(f"skipped {reason if file in reason else f'{file}: {reason}'}", file=sys.stderr)
    if pieces.skipped:
        print(f"{path}: {len(pieces.skipped)} file(s) skipped, {len(pieces)} pieces read", file=sys.stderr)
    return pieces


def _json(out: dict) -> str:
    """JSON with undefined values (NaN) as null, so that strict parsers read it."""
    def clean(v):
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [clean(x) for x in v]
        return None if isinstance(v, float) and math.isnan(v) else v
    return json.dumps(clean(out), indent=2)


def _fmt(value: float, std: float | None = None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.3f}" if std is None else f"{value:.3f} ± {std:.3f}"


def run_selfsim(cfg: SelfsimConfig) -> dict:
    from schmubert.evaluation import selfsim

    ref, gen = _load_set(cfg.reference, cfg), _load_set(cfg.generated, cfg)
    out = selfsim(gen, ref, drums=cfg.drums, use_tracks=cfg.use_tracks, silent=cfg.silent,
                  num_evals=cfg.num_evals, num_pieces=cfg.num_pieces, seed=cfg.seed, progress=cfg.progress)
    out.update(reference=str(cfg.reference), generated=str(cfg.generated), skipped_ref=len(ref.skipped),
               skipped_gen=len(gen.skipped), num_pieces=cfg.num_pieces)
    if cfg.json:
        print(_json(out))
        return out
    print(f"{'':10}{'consistency':>18}{'variance':>18}{'mean OA gen/ref':>20}{'var OA gen/ref':>22}")
    for feat in ("pitch", "duration"):
        r = out[feat]
        print(f"{feat:10}{_fmt(r['consistency'], r['consistency_std']):>18}"
              f"{_fmt(r['variance'], r['variance_std']):>18}{r['mean_gen']:>10.4f}/{r['mean_ref']:.4f}"
              f"{r['var_gen']:>12.5f}/{r['var_ref']:.5f}")
    rule = "scored 0" if cfg.silent == "zero" else "left out"
    print(f"{cfg.num_evals} evaluation(s), up to {cfg.num_pieces} pieces per set; reference "
          f"{out['pieces_ref']} pieces ({out['silent_ref']} silent, {out['short_ref']} under 6 bars), generated "
          f"{out['pieces_gen']} ({out['silent_gen']} silent, {out['short_gen']} under 6 bars); those are {rule}; "
          f"drums {cfg.drums}")
    return out


def run_stats(cfg: StatsConfig) -> dict:
    from schmubert.evaluation import compare_sets

    ref, gen = _load_set(cfg.reference, cfg), _load_set(cfg.generated, cfg)
    out = compare_sets(gen, ref, bins=cfg.bins, progress=cfg.progress)
    out.update(reference=str(cfg.reference), generated=str(cfg.generated), bins=cfg.bins)
    if cfg.json:
        print(_json(out))
        return out
    print(f"{'statistic':22}{'generated':>18}{'reference':>18}{'overlap':>10}")
    for name, r in out["statistics"].items():
        print(f"{name:22}{_fmt(r['mean_gen'], r['std_gen']):>18}{_fmt(r['mean_ref'], r['std_ref']):>18}"
              f"{_fmt(r['overlap']):>10}")
    print(f"{'summary (mean overlap)':22}{'':36}{_fmt(out['summary']):>10}")
    print(f"generated {len(gen)} pieces, reference {len(ref)} pieces; mean ± std over pieces; overlap of the "
          f"two distributions ({cfg.bins} bins over the reference's range; 1 = identical); n/a = undefined")
    return out


def _validation_array(path: Path) -> np.ndarray:
    from schmubert.evaluation.pieces import load_array

    file = path / "valid.npy" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"{file}: no such file (expected a dataset folder with valid.npy, or a .npy)")
    return load_array(file)


def _model_and_held_out(cfg: HeldOutConfig):
    """The model of ``cfg.checkpoint`` and its held-out pieces (``cfg.data``, else those it ships with)."""
    from schmubert.checkpoints import default_checkpoint, held_out_pieces, load_model

    model = load_model(cfg.checkpoint or default_checkpoint("runs"), cfg.device, copy_prior=cfg.copy_prior)
    if cfg.data is None:
        found = held_out_pieces(model)
        if found is None:
            raise FileNotFoundError(f"the validation set of {model.path} is not on this machine; pass --data")
        data, cfg.data = np.asarray(found[0]), Path(found[1])
    else:
        data = _validation_array(Path(cfg.data))
    if data.shape[1:] != (model.steps, len(model.tracks)):
        raise ValueError(f"{cfg.data}: pieces are {data.shape[1:]} but the model expects "
                         f"({model.steps}, {len(model.tracks)})")
    if cfg.max_pieces and cfg.max_pieces < len(data):
        data = data[np.linspace(0, len(data) - 1, cfg.max_pieces).round().astype(int)]
    return model, data


def run_elbo(cfg: ElboConfig) -> dict:
    from schmubert.conditioning import parse_bar_range
    from schmubert.evaluation import bar_region, elbo

    model, data = _model_and_held_out(cfg)
    bars = parse_bar_range(cfg.infill) if cfg.infill else None
    region = bar_region(model.steps, len(model.tracks), bars) if bars else None
    res = elbo(model.denoiser, model.diffusion, data, samples_per_piece=cfg.samples_per_piece,
               batch_size=cfg.batch_size, estimator=cfg.estimator, region=region,
               generator=torch.Generator().manual_seed(cfg.seed), progress=cfg.progress,
               attributes=cfg.attributes)
    out = {"bits_per_element": res.bits, "std_error": res.std_error, "monte_carlo_error": res.monte_carlo_error,
           "pieces": len(res.per_piece),
           "elements_per_piece": res.elements, "samples_per_piece": res.samples_per_piece,
           "estimator": res.estimator, "infill": list(bars) if bars else None, "checkpoint": str(model.path),
           "sha256": model.sha256, "seed": cfg.seed, "data": str(cfg.data), "attributes": cfg.attributes,
           "copy_prior": model.uses_copy_prior}
    if cfg.json:
        print(json.dumps(out, indent=2))
    else:
        what = f"infilling NLL of bars {bars[0]}:{bars[1]}" if bars else "negative ELBO"
        print(f"{what}: {res.bits:.4f} bits per element (± {res.std_error:.4f} s.e. over "
              f"{len(res.per_piece)} pieces; {cfg.samples_per_piece} samples each, {cfg.estimator} "
              f"estimator); Monte Carlo error ± {res.monte_carlo_error:.4f} (other seeds land about this "
              "close; raise --samples-per-piece to shrink it)")
    return out


def run_context(cfg: ContextConfig) -> dict:
    from schmubert.evaluation import context_curve, format_context

    model, data = _model_and_held_out(cfg)
    curve = context_curve(model.denoiser, data, [t.mask_id for t in model.tracks], cfg.rates,
                          torch.Generator().manual_seed(cfg.seed), cfg.batch_size, cfg.device)
    names = [t.name for t in model.tracks]
    out = {"bits": {str(rate): dict(zip(names, bits, strict=True)) for rate, bits in curve.items()},
           "pieces": len(data), "checkpoint": str(model.path), "data": str(cfg.data), "seed": cfg.seed}
    if cfg.json:
        print(json.dumps(out, indent=2))
    else:
        print("cross-entropy per masked element (bits), every element masked at each rate (far lower at low "
              f"rates = the model uses its context); {len(data)} pieces\n{format_context(curve, names)}")
    return out


COMMANDS = {"selfsim": (SelfsimConfig, run_selfsim, "framewise self-similarity: consistency and variance"),
            "stats": (StatsConfig, run_stats, "music statistics of two sets and their overlap"),
            "elbo": (ElboConfig, run_elbo, "held-out negative ELBO / infilling NLL in bits per element"),
            "context": (ContextConfig, run_context, "cross-entropy per masked element at fixed mask rates")}
REQUIRED = {"reference", "generated"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m schmubert.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (cls, _, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text, allow_abbrev=False)
        add_arguments(p, cls)
        for action in p._actions:
            if action.dest in REQUIRED:
                action.required = True
                action.type = Path
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cls, run, _ = COMMANDS[args.command]
    try:
        run(from_args(cls, args))
    except (ValueError, FileNotFoundError) as err:  # includes CheckpointError
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
