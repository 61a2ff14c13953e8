"""Named training recipes: sets of ``python -m schmubert.train`` defaults that were measured to work.

``python -m schmubert.train --recipe cpu-trio --data data/processed/lakh-trio`` trains with every option of the
recipe as its default; any option given on the command line still wins. ``experiments/bench_recipe.py`` is the
study the recipes come from (held-out ELBO against training minutes, and the context diagnostic), and its table
is in ``experiments/README.md``.

Options are the train CLI's destination names (``lr``, ``batch_size``, ``set`` for backbone overrides, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Recipe:
    name: str
    help: str
    options: dict[str, Any] = field(default_factory=dict)


# The recipe study's shared base: conv small on a few thousand windows, on 2 CPU cores.
CPU_BASE: dict[str, Any] = {
    "arch": "conv", "preset": "small", "batch_size": 8, "num_workers": 0, "max_transpose": 6,
    "lr": 1e-3, "warmup_steps": 200, "decay": "constant", "ema_decay": 0.999, "ema_every": 1,
    "grad_clip": 1.0, "schedule": "mixed", "val_batches": 0, "sample_every": 0, "logger": "csv",
}

# What the trio's batch-16 stages (7, 8, 9) share: stage 6's span masking, attribute dropout, rotated windows
# and dropout, at the batch that moves the most elements per second here; each stage sets its peak and length.
TRIO_LONG: dict[str, Any] = {
    "tracks": "trio", "batch_size": 16, "decay": "cosine", "warmup_steps": 200, "val_every": 1000,
    "span_prob": 0.5, "cond_drop": 0.5, "roll_bars": True, "set": ["dropout=0.2"],
}
#: The options the melody's batch-32 stages (5 and 6) share: windows rotated by whole bars, stage 4's dropout.
MELODY_LONG: dict[str, Any] = {
    "tracks": "melody", "batch_size": 32, "decay": "cosine", "warmup_steps": 200, "val_every": 1000,
    "span_prob": 0.5, "cond_drop": 0.5, "roll_bars": True,
}


def _recipe(recipe: str, help: str, **options: Any) -> Recipe:  # noqa: A002
    return Recipe(recipe, help, {**CPU_BASE, **options})


RECIPES: dict[str, Recipe] = {r.name: r for r in (
    _recipe("cpu-base", "the study's baseline: conv small, batch 8, lr 1e-3 constant, EMA 0.999"),
    # the shipped models: the study's best per CPU-minute (conv small; deeper/no-dropout/cosine-2e-3 were no
    # better at equal steps and deeper is 2x slower), trained long with a cosine decay to 10% at --max-steps
    _recipe("cpu-trio", "the shipped trio model: cpu-base with a cosine decay over 5000 steps (2 CPU cores, "
            "about 70 min)", tracks="trio", decay="cosine", max_steps=5000, val_every=500, name="cpu-trio"),
    _recipe("cpu-melody", "the shipped melody model: cpu-base with a cosine decay over 5000 steps",
            tracks="melody", decay="cosine", max_steps=5000, val_every=500, name="cpu-melody"),
    # stage 2 of the shipped models: bar attention (conv bar_depth=2) added to a cpu-trio / cpu-melody model
    # with --init; the far-copy probe (experiments/bench_far_copy.py) is why: the plain conv cannot learn to
    # copy from other bars, with bar attention it does in 200 steps
    _recipe("cpu-trio-bars", "stage 2 of the shipped trio model: --init a cpu-trio model, add bar attention, "
            "cosine over 3000 steps", tracks="trio", decay="cosine", max_steps=3000, val_every=500,
            set=["bar_depth=2"], name="cpu-trio-bars"),
    _recipe("cpu-melody-bars", "stage 2 of the shipped melody model: --init a cpu-melody model, add bar "
            "attention, cosine over 3000 steps", tracks="melody", decay="cosine", max_steps=3000, val_every=500,
            set=["bar_depth=2"], name="cpu-melody-bars"),
    # stage 3: the same model taught to fill gaps of whole bars (half of the samples mask one span of 1-32
    # bars), the training counterpart of --infill
    _recipe("cpu-trio-spans", "stage 3 of the shipped trio model: --init a cpu-trio-bars model, half the "
            "samples masked in one span of bars, cosine from 5e-4 over 1200 steps", tracks="trio",
            decay="cosine", lr=5e-4, warmup_steps=100, max_steps=1200, val_every=300, span_prob=0.5,
            name="cpu-trio-spans"),
    _recipe("cpu-melody-spans", "stage 3 of the shipped melody model: as cpu-trio-spans, from a "
            "cpu-melody-bars model", tracks="melody", decay="cosine", lr=5e-4, warmup_steps=100, max_steps=1200,
            val_every=300, span_prob=0.5, name="cpu-melody-spans"),
    # stage 4: told key, onsets and register (attributes, classifier-free guidance), trained in bf16 (the
    # default where it is native: 2.25x the fp32 step on the CPUs measured) on the stage-3 model
    _recipe("cpu-trio-attrs", "stage 4 of the shipped trio model: --init a cpu-trio-spans model, add the "
            "attribute embedding (each kind dropped 30%), spans as stage 3, cosine from 5e-4 over 12000 steps",
            tracks="trio", decay="cosine", lr=5e-4, warmup_steps=200, max_steps=12000, val_every=1000,
            span_prob=0.5, set=["attributes=true"], cond_drop=0.3, name="cpu-trio-attrs"),
    # stage 5: each kind dropped half the time, so every subset of the conditions (key alone, onsets alone, ...)
    # is one eighth of training, as often as all-null; at 0.3 a key alone was 6% and the key was followed by
    # the scale but not by the Krumhansl-Kessler estimate (10/16 told D minor)
    _recipe("cpu-trio-attrs2", "stage 5 of the shipped trio model: --init a cpu-trio-attrs model, each "
            "attribute kind dropped 50% (every subset of conditions equally often), cosine from 3e-4 over "
            "15000 steps", tracks="trio", decay="cosine", lr=3e-4, warmup_steps=200, max_steps=15000,
            val_every=1000, span_prob=0.5, cond_drop=0.5, name="cpu-trio-attrs2"),
    # the melody's stage 4: the trio's stage 4 and 5 in one run (attributes, each kind dropped half the time)
    _recipe("cpu-melody-attrs", "stage 4 of the shipped melody model: --init a cpu-melody-spans model, add the "
            "attribute embedding (each kind dropped 50%), spans as stage 3, cosine from 5e-4 over 8000 steps",
            tracks="melody", decay="cosine", lr=5e-4, warmup_steps=200, max_steps=8000, val_every=1000,
            span_prob=0.5, set=["attributes=true"], cond_drop=0.5, name="cpu-melody-attrs"),
    # stage 6: against overfitting (the stage-5 model scores 1.01 bits per element on training windows and 1.27
    # on held-out ones, and its validation ELBO stopped falling half-way through stage 5): every window seen from
    # each of its 64 starts (roll_bars) and twice the dropout. Measured: validation ELBO 1.405 -> 1.354 (it had
    # risen from 1.397 over stage 5's second half), `evaluate elbo` 1.271 -> 1.256 (16 masks per piece),
    # training windows 1.009 -> 1.017: the model learns again instead of memorising, the gap stays
    _recipe("cpu-trio-roll", "stage 6 of the shipped trio model: --init a cpu-trio-attrs2 model, windows "
            "rotated by whole bars, dropout 0.2, cosine from 5e-4 over 6000 steps", tracks="trio",
            decay="cosine", lr=5e-4, warmup_steps=200, max_steps=6000, val_every=1000, span_prob=0.5,
            cond_drop=0.5, roll_bars=True, set=["dropout=0.2"], name="cpu-trio-roll"),
    # stage 7: more of stage 6 towards issue 18's 10x training FLOPs, at batch 16 (17% more elements per second
    # than batch 8 on 2 cores, bench_train; batch 32 is slower) and a lower peak learning rate. Measured
    # (`evaluate elbo`, 16 masks per piece, the network alone): held-out 1.256 -> 1.246, infilling 16:48 1.191 ->
    # 1.179, training windows 1.017 -> 0.985. The validation callback's figure (one mask per piece) rose from
    # 1.400 to 1.422 meanwhile, too noisy to choose by: the export takes last.ckpt
    _recipe("cpu-trio-long", "stage 7 of the shipped trio model: --init a cpu-trio-roll model, stage 6 at "
            "batch 16, cosine from 2e-4 over 9000 steps", **TRIO_LONG, lr=2e-4, max_steps=9000,
            name="cpu-trio-long"),
    # stage 8: stage 7 again (a warm restart at a lower peak) towards issue 18's 10x training FLOPs, as long as
    # one session's training window on 2 cores allows (121.9 min). Measured as stage 7: held-out 1.246 -> 1.241,
    # infilling 16:48 1.179 -> 1.173, training windows 0.985 -> 0.969, but its samples at the CLI's guidance 2
    # are denser still (12.2 / 12.7 notes per bar, data 9.5) and their mean overlap falls to 0.63 / 0.64. At
    # guidance 1.5 they score 0.69 / 0.70, but 1.5 costs the melody (0.76 -> 0.70, asked key 0.73 -> 0.65), so
    # it is shipped with its own default guidance 1.5 (export --cfg-scale; experiments/README.md, "Stage 8" and
    # "Stage 9")
    _recipe("cpu-trio-long2", "stage 8 of the shipped trio model (its default guidance 1.5): --init a "
            "cpu-trio-long model, stage 7 again with a cosine from 1.5e-4 over 10000 steps", **TRIO_LONG,
            lr=1.5e-4, max_steps=10000, name="cpu-trio-long2"),
    # stage 9: the rest of issue 18's 10x training FLOPs (79.8 min). Measured as stage 8: held-out 1.241 -> 1.246,
    # infilling 1.173 -> 1.178, training windows 0.969 -> 0.963, samples denser still (12.8 / 11.3 notes per
    # bar at guidance 2 / 1.5, mean overlap 0.60 / 0.64): more steps on 936 windows fit them, not music. Not
    # shipped (its export was kept on a branch, which did not last: only main is kept between sessions)
    _recipe("cpu-trio-long3", "stage 9 of the trio (measured, not shipped: it fits the training windows, not "
            "new music): --init a cpu-trio-long2 model, stage 8 again with a cosine from 1e-4 over 6000 steps",
            **TRIO_LONG, lr=1e-4, max_steps=6000, name="cpu-trio-long3"),
    # the melody's stage 5, towards issue 18's 10x (it is at 1.9x): the trio's stages 6-7 in one run (windows
    # rotated by whole bars; batch 32, the melody's most elements per second: 29.4k against 25.7k at batch 8),
    # dropout left at stage 4's (doubling it first undid stage 4's validation ELBO: 1.263 -> 1.291 at step 1000).
    # 5000 steps (~1.6 h on 2 cores at 0.8-0.9 steps per second, so that one session can train and measure it;
    # 8000 were ~3 h) bring it to 4.0x; resumable across sessions with --resume last. 84.1 min; measured
    # (`evaluate elbo`, 16 masks, the network alone): held-out 1.219 -> 1.185, infilling 16:48 1.116 -> 1.077,
    # training windows 1.196 -> 1.161; samples as close to the data (mean overlap 0.76), 4.9 notes per bar (4.5)
    _recipe("cpu-melody-long", "stage 5 of the shipped melody model: --init a cpu-melody-attrs model, windows "
            "rotated by whole bars, batch 32, cosine from 2e-4 over 5000 steps", **MELODY_LONG, lr=2e-4,
            max_steps=5000, name="cpu-melody-long"),
    # the melody's stage 6: the rest of issue 18's 10x training FLOPs on top of stage 5's 4.0x (54,800 batch-8
    # steps = 13,700 at batch 32), stage 5 again from a lower peak, as the trio's stage 8 was its stage 7 again.
    # Too long for one CPU session: ~3.6 h on 2 AMX cores (bf16, ~1.05 steps per second), ~12.7 h on 2 AVX2 cores
    # (fp32, 0.30 measured), so it trains in parts, one a session: --stop-step ends a part, the next continues
    # the schedule from the part's export (--init it, --start-step where it stopped); experiments/gpu_train.sh
    # runs it on a lent GPU (its speed there not measured). Trained in eight parts (`make melody-long2` repeats
    # them): 110, 95, 102, 69 and 78 min in fp32 on AVX2 for steps 0-7000; 64, 31 and 61 min in bf16 on
    # AVX512-BF16 for 7000-9800-11200-13700 (0.68-0.75 steps per second). The whole stage is
    # experiments/parts/melody-long2.safetensors: network-alone held-out ELBO 1.185 -> 1.145 (4.3 times its
    # 0.0094 Monte-Carlo error). With a drawn key its new pieces are denser than the data (5.4 notes per bar at
    # two seeds, data 4.9), each told a training window's outline they are not (4.6 / 4.9, mean overlap 0.75 /
    # 0.76, stage 5 0.76 / 0.71), so it ships as pretrained:melody with outlines its default (experiments/README.md,
    # "The melody's stage 6 shipped, with outlines for new pieces")
    # stage 1 of pretrained:pop909 (melody, bridge of 4 voices, piano of 6, with velocity): conv small with bar
    # attention from the start (the trio's stages 2-3 showed it is what lets infills copy a song's bars),
    # trained to infill (span masking), windows rotated by whole bars, transposed up to 6 semitones; the 2,749
    # POP909 training windows of `python -m preprocessing --tracks pop909`. Too long for one CPU session: trained
    # in parts (--stop-step, then --init the part's export with --start-step), as the melody's stage 6
    _recipe("cpu-pop909", "stage 1 of the pop909 model (trained in parts: --stop-step, then --init the part's "
            "export with --start-step): conv small with bar attention and velocity, span masking, rotated "
            "windows, batch 8, cosine from 1e-3 over 12000 steps", tracks="pop909", decay="cosine",
            max_steps=12000, val_every=1000, span_prob=0.5, roll_bars=True,
            set=["bar_depth=2", "velocity=true"], name="cpu-pop909"),
    # stage 2 of the pop909 model: the same schedule, continued (--init the last part's export, --start-step),
    # gaining what stage 1 was trained before: attributes per instrument (key, onsets, register, dynamics; each
    # kind dropped half the time, as the trio's stage 5 and the melody's stage 4) and meter (PAD read, a tenth
    # of the 4/4 bars shortened so the meter embeddings learn; POP909 itself is 98.6% 4/4). Both start at zero
    _recipe("cpu-pop909-attrs", "stage 2 of the pop909 model (in parts, as stage 1): --init a cpu-pop909 part's "
            "export with --start-step; stage 1's schedule gaining attributes per instrument (key, onsets, "
            "register, dynamics; cond_drop 0.5) and meter (meter_augment 0.1) on data preprocessed with meter",
            tracks="pop909", decay="cosine", max_steps=12000, val_every=1000, span_prob=0.5, roll_bars=True,
            cond_drop=0.5, set=["attributes=true", "meter=true", "meter_augment=0.1"], name="cpu-pop909-attrs"),
    # stage 3 of the pop909 model: stage 2 fitted its 2,774 windows from about step 3000 on (validation ELBO flat
    # at 1.153-1.168, then 1.205 in an annealed end while the training loss fell), so this stage adds
    # regularization: the trio's dropout 0.2, weight decay 0.05, a new cosine from 3e-4. --init stage 2's part 3.
    # Measured (validation ELBO): 1.205 -> 1.182 / 1.181 / 1.179 at steps 500 / 1000 / 1500 (exported as part 4),
    # then 1.193 / 1.206 at 2000 / 2500: stopped, part 4 is its best (experiments/README.md)
    _recipe("cpu-pop909-reg", "stage 3 of the pop909 model: --init a cpu-pop909-attrs part's export; stage 2 "
            "regularized (dropout 0.2, weight decay 0.05), cosine from 3e-4 over 3000 steps; its best was step "
            "1500", tracks="pop909", decay="cosine", max_steps=3000, val_every=500, span_prob=0.5, roll_bars=True,
            cond_drop=0.5, lr=3e-4, warmup_steps=200, weight_decay=0.05,
            set=["attributes=true", "meter=true", "meter_augment=0.1", "dropout=0.2"], name="cpu-pop909-reg"),
    _recipe("melody-long2", "stage 6 of the shipped melody model, trained in parts (--stop-step, then --init the "
            "part's export with --start-step): --init a cpu-melody-long model, stage 5 again with a cosine from "
            "1.5e-4 over 13700 steps (the rest of 10x)", **MELODY_LONG, lr=1.5e-4, max_steps=13700,
            name="melody-long2"),
)}


def recipe_names() -> list[str]:
    return sorted(RECIPES)


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; expected one of {recipe_names()}")
    return RECIPES[name]
