"""Measure a shipped model and write its model card: ``docs/models/NAME.md`` (+ JSON, two piano rolls).

Figures, all on the held-out windows the model ships with (or ``--data``):
- the negative ELBO and the infilling NLL of bars 16:48 given the rest (bits per element, count estimator);
- the context diagnostic: cross-entropy per masked element at mask rates 5/30/60/95%, per track;
- ``--samples`` unconditional samples and as many infillings of bars 16:48 of held-out windows, at ``--steps``
  reverse steps, at the sample CLI's default precision and, for a model with attributes, told what the CLI
  tells (a new piece a training window's outline where the model ships them, else a key drawn from the
  training keys; an infill its held-out window's key): framewise self-similarity and the
  music-statistics overlap against the held-out windows, and the same of the held-out windows against the
  training windows (the ceiling); a piano roll of each kind, and MIDI + WAV of them under ``--listen``.

    python experiments/model_card.py --name trio --data data/processed/lakh-trio --trained "..."
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from schmubert import conditioning, decoding
from schmubert.checkpoints import held_out_pieces, load_model
from schmubert.copy_prior import sharpened
from schmubert.evaluation import bar_region, compare_sets, context_curve, elbo, format_context, selfsim
from schmubert.render import save_pianoroll, write_wav
from schmubert.sampling import fast_denoiser, sample
from schmubert.tokens import STEPS_PER_BAR, tokens_to_midi, track_set_name

INFILL = (16, 48)


def likelihoods(denoiser, model, pieces: np.ndarray, samples_per_piece: int) -> dict[str, float]:
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    full = elbo(denoiser, model.diffusion, pieces, samples_per_piece=samples_per_piece, generator=g())
    region = bar_region(model.steps, len(model.tracks), INFILL)
    infill = elbo(denoiser, model.diffusion, pieces, samples_per_piece=samples_per_piece, region=region,
                  generator=g())
    return {"elbo": full.bits, "elbo_se": full.std_error, "infill_nll": infill.bits,
            "infill_se": infill.std_error, "ratio": infill.bits / full.bits}


def likelihood_row(what: str, lk: dict[str, float]) -> str:
    return (f"| {what} | {lk['elbo']:.3f} +- {lk['elbo_se']:.3f} | {lk['infill_nll']:.3f} +- {lk['infill_se']:.3f} "
            f"| {lk['ratio']:.2f} |")


def generate(model, pieces: np.ndarray, n: int, steps: int, infill: bool, seed: int) -> tuple[np.ndarray, float]:
    """``n`` samples ``(n, L, K)``: unconditional, or bars 16:48 of the first ``n`` held-out windows regenerated."""
    shape = (n, model.steps, len(model.tracks))
    x = torch.as_tensor(np.asarray(pieces[:n], dtype=np.int64)) if infill else torch.zeros(shape, dtype=torch.long)
    known = conditioning.infill(shape, [INFILL]) if infill else conditioning.unconditional(shape)
    generator = torch.Generator().manual_seed(seed)
    plan = cli_plan(model, infill)  # told as the sample CLI tells: a new piece the model's outline, an infill its key
    told = decoding.told(plan, model, n, model.steps // STEPS_PER_BAR, x, generator)
    began = time.perf_counter()
    denoiser = fast_denoiser(model.denoiser, "auto")
    with sharpened(denoiser, plan.copy_sharpness):
        out = sample(denoiser, model.diffusion, x, known, steps, generator, plan.sampler, attributes=told)
    out = conditioning.preserve_note_ends(x, known, out, model.tracks)
    return out.numpy(), (time.perf_counter() - began) / n


def quality(generated: np.ndarray, reference: np.ndarray) -> dict[str, Any]:
    sim = selfsim(list(generated), list(reference))
    stats = compare_sets(list(generated), list(reference))
    return {"selfsim": {k: sim[k] for k in sim if isinstance(sim[k], dict)}, "stats_summary": stats["summary"],
            "stats": stats["overlaps"]}


def listen(model, tokens: np.ndarray, known: np.ndarray | None, stem: Path, title: str, audio: bool = True
           ) -> None:
    """``stem.png`` (a piano roll, ``~known`` shaded) and, with ``audio``, ``stem.mid`` and ``stem.wav``."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    save_pianoroll(tokens, model.tracks, stem.with_suffix(".png"), None if known is None else ~known, title,
                   overwrite=True)
    if not audio:
        return
    pm = tokens_to_midi(tokens, model.tracks)
    pm.write(str(stem.with_suffix(".mid")))
    write_wav(pm, stem.with_suffix(".wav"), overwrite=True, quiet=True)


def selfsim_row(name: str, q: dict[str, Any]) -> str:
    s = q["selfsim"]
    cells = [f"{s[a][b]:.3f}" for a in ("pitch", "duration") for b in ("consistency", "variance")]
    return f"| {name} | " + " | ".join(cells) + f" | {q['stats_summary']:.3f} |"


def cli_plan(model, infill: bool) -> decoding.Plan:
    """The decoding plan the sample CLI resolves with its defaults for a new piece or an infill of ``model`` (bars
    16:48 of every track: each keeps bars of its own)."""
    return decoding.resolve(decoding.Request(new_piece=not infill, anything_known=infill, in_context=infill), model)


def decoding_text(model) -> str:
    """The sample CLI's decoding defaults for ``model``, as the card states them."""
    new, infill = cli_plan(model, False), cli_plan(model, True)
    own = " (the model's own default)" if "cfg_scale" in model.sampler_defaults else ""
    guided = f"guidance scale {new.guidance_scale:g}{own}, " if model.conditional else ""
    if new.outlined:
        guided += "new pieces told a training window's outline (the model's own default), "
    return (f"{new.sampler.order} order, {guided}copy sharpness {new.copy_sharpness:g} for new pieces and "
            f"{infill.copy_sharpness:g} for infills")


def card(name: str, model, fig: dict[str, Any], args: argparse.Namespace) -> str:
    hp, lk = model.hparams, fig["likelihood"]
    data = hp.get("data") or {}
    names = [t.name for t in model.tracks]
    lines = [
        f"# pretrained:{name}", "",
        f"A {track_set_name(model.tracks)} model ({', '.join(names)}) of the SCHmUBERT toolkit: "
        f"`{hp['arch']}` backbone, {model.denoiser.num_parameters():,} parameters, half-precision weights "
        f"({Path(model.path).stat().st_size / 1e6:.1f} MB). Load it with `--checkpoint pretrained:{name}` or "
        f"`schmubert.pretrained.load(\"{name}\")`.", "",
        "## Data", "",
        f"Training: {data.get('counts', {}).get('train', '?')} windows of 64 bars, held out: "
        f"{data.get('counts', {}).get('valid', '?')} (split by file), from the Lakh MIDI Dataset windows of the "
        "public SCHmUBERT repository (Colin Raffel, CC-BY 4.0; plassma/symbolic-music-discrete-diffusion, MIT). "
        f"The held-out windows ship beside the weights (`{name}-heldout.npz`).", "",
        "## Training", "",
        f"- Recipe: `{(hp.get('provenance') or {}).get('recipe') or '(none)'}`; optimisation: "
        f"`{json.dumps(hp.get('optim'))}`",
        f"- Backbone: `{json.dumps(hp['backbone'])}`",
        f"- Noise: `{json.dumps(hp['noise'])}`, transposition augmentation +-{hp.get('max_transpose', 0)}"
        + (", windows rotated by whole bars" if hp.get("roll_bars") else ""),
        f"- Steps, hardware, time: {args.trained}",
        f"- Reproduce: `{args.reproduce}`", "",
        "## Held-out likelihood (bits per element)", "",
        "| model | negative ELBO | infilling NLL, bars 16:48 | NLL / ELBO |", "|---|---|---|---|",
        likelihood_row("with its copy prior (what every command uses)" if "network" in fig else "the network", lk),
        *([likelihood_row("the network alone (`--no-copy-prior`)", fig["network"])] if "network" in fig else []),
        "",
        f"From `python -m schmubert.evaluate elbo --checkpoint pretrained:{name} --data <held-out> --json` "
        f"(count estimator, {args.samples_per_piece} samples per piece, {fig['pieces']} pieces).", "",
        *([copy_prior_note(hp)] if "network" in fig else []),
        "## Context diagnostic", "",
        "Cross-entropy per masked element (bits) with each element masked at the given rate: far lower at 5% "
        "than at 95% means the model uses its context.", "", "```", format_context(fig["context"], names), "```",
        "",
        f"## Samples against the held-out windows ({args.samples} each, {args.steps} steps, the sample CLI's "
        f"defaults: {decoding_text(model)})", "",
        "| set | pitch consistency | pitch variance | duration consistency | duration variance | statistics "
        "overlap |", "|---|---|---|---|---|---|",
        selfsim_row("unconditional samples", fig["unconditional"]),
        selfsim_row("infilled bars 16:48 (whole pieces)", fig["infill"]),
        selfsim_row("held-out vs training windows (ceiling)", fig["ceiling"]), "",
        f"Seconds per sample on this machine (CPU, {torch.get_num_threads()} thread(s), batch {args.samples}): "
        "unconditional "
        f"{fig['seconds']['unconditional']:.1f}, infilling {fig['seconds']['infill']:.1f}.", "",
        "Per-statistic overlaps (unconditional): " + ", ".join(
            f"{k} {v:.2f}" for k, v in fig["unconditional"]["stats"].items() if v == v), "",
        f"![unconditional sample]({name}-unconditional.png)", "",
        f"![bars 16:48 infilled (shaded)]({name}-infill.png)", "",
    ]
    if args.listening:
        lines += ["## Listening notes", "", args.listening, ""]
    return "\n".join(lines)


def copy_prior_note(hp: dict[str, Any]) -> str:
    return ("The copy prior (`schmubert/copy_prior.py`) mixes the network's predictions with the tokens of the "
            "piece's other bars, weighted by how alike the bars and their neighbours are where both are visible. "
            "Its gates were fitted on these held-out windows, so the first row is optimistic: fitted on one "
            "half of them and scored on the other (both ways), see `experiments/README.md`, \"The copy prior\"; "
            "its weights of the neighbours and distances, the choice of the bar to copy, on the training windows "
            "(\"Whole bars, and choosing the source bar\"). "
            f"Fitted values: `{json.dumps(hp['copy_prior'])}`.\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--name", required=True, help="shipped model name (pretrained:NAME)")
    p.add_argument("--data", type=Path, help="processed dataset (train.npy for the ceiling; valid.npy held out)")
    p.add_argument("--samples", type=int, default=16, help="samples per kind (default: 16)")
    p.add_argument("--steps", type=int, default=128, help="reverse steps per sample (default: 128)")
    p.add_argument("--samples-per-piece", type=int, default=4, help="ELBO samples per piece (default: 4)")
    p.add_argument("--trained", default="(not given)", help="training steps, hardware and time, for the card")
    p.add_argument("--reproduce", default="(not given)", help="the command that reproduces the model")
    p.add_argument("--listening", default="", help="what the samples look and sound like, for the card")
    p.add_argument("--out", type=Path, default=Path("docs/models"), help="card folder (default: docs/models)")
    p.add_argument("--listen", type=Path, default=Path("samples/model-card"), help="MIDI/WAV of the rolls")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    model = load_model(f"pretrained:{args.name}")
    pieces = np.load(args.data / "valid.npy").astype(np.int64) if args.data else held_out_pieces(model)[0]
    fig: dict[str, Any] = {"pieces": len(pieces)}
    fig["likelihood"] = likelihoods(model.denoiser, model, pieces, args.samples_per_piece)
    if model.uses_copy_prior:
        fig["network"] = likelihoods(model.denoiser.denoiser, model, pieces, args.samples_per_piece)
    print(json.dumps({k: fig[k] for k in ("likelihood", "network") if k in fig}), flush=True)
    fig["context"] = context_curve(model.denoiser, pieces, [t.mask_id for t in model.tracks],
                                   generator=torch.Generator().manual_seed(0))
    print(format_context(fig["context"], [t.name for t in model.tracks]), flush=True)
    uncond, s_u = generate(model, pieces, args.samples, args.steps, infill=False, seed=1)
    infill, s_i = generate(model, pieces, args.samples, args.steps, infill=True, seed=2)
    fig["seconds"] = {"unconditional": s_u, "infill": s_i}
    fig["unconditional"], fig["infill"] = quality(uncond, pieces), quality(infill, pieces)
    train = np.load(args.data / "train.npy", mmap_mode="r")[:len(pieces) * 4] if args.data else pieces
    fig["ceiling"] = quality(pieces, np.asarray(train, dtype=np.int64))
    shape = (1, model.steps, len(model.tracks))
    known = conditioning.infill(shape, [INFILL])[0].numpy()
    listen(model, uncond[0], None, args.out / f"{args.name}-unconditional", f"pretrained:{args.name}, unconditional",
           audio=False)  # the card keeps only the pictures
    listen(model, infill[0], known, args.out / f"{args.name}-infill",
           f"pretrained:{args.name}, bars {INFILL[0]}:{INFILL[1]} infilled", audio=False)
    for i in range(min(4, args.samples)):  # more to listen to, not committed
        listen(model, uncond[i], None, args.listen / f"{args.name}-unconditional-{i}", "unconditional")
        listen(model, infill[i], known, args.listen / f"{args.name}-infill-{i}", "infill 16:48")
    (args.out / f"{args.name}.json").write_text(json.dumps(fig, indent=1, default=float))
    (args.out / f"{args.name}.md").write_text(card(args.name, model, fig, args))
    print(f"wrote {args.out / (args.name + '.md')}; listen to {args.listen}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
