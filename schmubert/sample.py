"""``python -m schmubert.sample``: generate, infill, accompany, continue or interpolate music.

With ``--input song.mid`` the output is that song with only the regenerated notes replaced (:mod:`schmubert.song`:
bars of the song, the window placed around the edit, the grid on its beats, the splice rules).

Every scenario is one call of :func:`schmubert.sampling.sample` with a different known-mask; pieces longer
than the model's window slide the window with overlapping context. Each sample is written as MIDI, a
piano-roll PNG, a WAV (when FluidSynth is available) and a JSON record of options, seed and checkpoint hash.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pretty_midi
import torch
from tqdm.auto import tqdm

from schmubert import conditioning, decoding, meter, song
from schmubert.attributes import (
    Attributes,
    BarTarget,
    apply_targets,
    describe,
    estimate_key,
    key_name,
    parse_target,
)
from schmubert.checkpoints import LoadedModel, default_checkpoint, held_out_pieces, held_out_velocity, load_model
from schmubert.config import add_arguments, arg, from_args, to_dict
from schmubert.copy_prior import sharpened
from schmubert.files import write_atomic
from schmubert.guidance import NoteDensityGuidance, density_error
from schmubert.polyphony import midi_to_grid
from schmubert.precision import SamplePrecision
from schmubert.render import save_pianoroll, write_wav
from schmubert.sampling import DEFAULT_STEPS, SamplerOptions, fast_denoiser, sample, sample_long, window_starts
from schmubert.tokens import (
    NO_ONSET,
    STEPS_PER_BAR,
    Track,
    instruments,
    is_legacy,
    is_onset,
    load_midi,
    midi_length_steps,
    midi_to_tokens,
    pad_mask,
    tokens_to_midi,
    track_set_name,
)

#: Redraws ``--variation`` allows a sample whose regenerated bars came back unchanged.
VARIATION_TRIES = 3

EXAMPLES = """examples:
  python -m schmubert.sample --num-samples 4 --out samples/uncond   # unconditional, newest checkpoint
  python -m schmubert.sample --input song.mid --infill 32:48 --out samples/infill   # bars of the song
  python -m schmubert.sample --input song.mid --infill 66:70 --generate-tracks bass  # new bass in bars 66-70
  python -m schmubert.sample --input song.mid --infill 40:48 --melody-track Vocals --bass-track 3
  python -m schmubert.sample --checkpoint pretrained:pop909 --input song.mid --infill 26:32 \
      --generate-tracks piano --track piano=8 --track melody=Vocals     # a song's piano, its chords and dynamics
  python -m schmubert.sample --input pop909/003.mid --infill 8:12 --time-signature 4/4 --variation
  python -m schmubert.sample --checkpoint meter.ckpt --input song.mid --infill 6:12  # meter=true: across a 3/4 bar
  python -m schmubert.sample --input song.mid --start-bar 16 --infill 24:28,36:40   # window from bar 16
  python -m schmubert.sample --input song.mid --generate-tracks bass,drums   # accompany the melody
  python -m schmubert.sample --input song.mid --continue-bars 16             # keep 16 bars, write the rest
  python -m schmubert.sample --input a.mid --interpolate b.mid --keep-bars 16
  python -m schmubert.sample --bars 256 --hop 32                             # longer than the window
  python -m schmubert.sample --note-density 8 --steps 256 --order confidence
  python -m schmubert.sample --checkpoint runs/cond/checkpoints/last.ckpt --key D:minor --cfg-scale 1
  python -m schmubert.sample ... --density melody=12@8:16 --density bass=2 --register bass=E2 --register melody=C5@0:8
"""


@dataclass
class SampleConfig:
    """Options of ``python -m schmubert.sample``."""

    checkpoint: Path | None = arg(None, "model checkpoint (.ckpt, .safetensors or pretrained:NAME, e.g. "
                                  "pretrained:trio); default: the newest one under --runs, else the shipped "
                                  "model of --tracks")
    runs: Path = arg(Path("runs"), "training output folder searched for the newest checkpoint")
    tracks: str | None = arg(None, "the shipped model to use when there is no --checkpoint and no run: trio or "
                             "melody (default: trio)", choices=["trio", "melody"])
    input: Path | None = arg(None, "a MIDI file (song) to edit: the output is this song with only the "
                                   "regenerated tracks changed, only inside the regenerated bars (tempo map, "
                                   "other instruments, velocities and length kept); default: a random piece of "
                                   "the checkpoint's validation set")
    start_bar: int | None = arg(None, "first bar of the model's window (default: placed around the edit, with "
                                      "context on both sides where the song has it)")
    track: list[str] = arg([], "--input's instrument the model sees and writes as ROLE, any "
                               "instrument of the model's set (trio: melody, bass, drums; pop909: melody, "
                               "bridge, piano, all voices of a polyphonic one together): its index or name as "
                               "listed when sampling, or 'none'; repeatable, e.g. --track piano=8 --track "
                               "melody=Vocals (default: chosen by the notes, printed with the reason and the "
                               "runners-up; a polyphonic role such as piano prefers an instrument named like it or "
                               "of its General MIDI family that plays chords)")
    melody_track: str | None = arg(None, "--input's instrument the model sees and writes as melody (= --track "
                                         "melody=...): its index or name as listed when sampling, or 'none' "
                                         "(default: chosen by its notes, printed with the reason and the "
                                         "runners-up: the most melody-like pitched instrument, monophonic most "
                                         "of the time, in a melodic register, playing through the song)",
                                   none_is_text=True)
    bass_track: str | None = arg(None, "the same for bass (= --track bass=...; default: the lowest mostly "
                                       "monophonic line with enough notes)", none_is_text=True)
    drum_track: str | None = arg(None, "the same for drums (= --track drums=...; default: the drum-channel "
                                       "instrument with the most hits)", none_is_text=True)
    time_signature: str | None = arg(None, "with --input, read all its bars in this meter from the first "
                                           "downbeat its notes show, whatever its time signatures say (they are "
                                           "written back unchanged): 4/4 or 2/2; a model trained with --set "
                                           "meter=true also takes any meter its slot grid holds (2/4, 3/4, 6/8, "
                                           "5/4, 12/8 ...). Default: its signatures, unless they cannot be its "
                                           "meter (one-beat bars such as POP909's 1/4, 2/4 throughout, and for a "
                                           "model without meter a change inside a bar): then 4/4 from its notes, "
                                           "or, for a meter model, 3/4 where its notes move in 3, and it says so. "
                                           "A meter model edits across the song's own meter changes bar by bar; "
                                           "a model without meter edits only its 4/4 bars")
    whole_song: bool = arg(True, "with --input, write the whole song with the new notes spliced in; "
                                 "--no-whole-song writes only the model's tracks of its window at 120 bpm")
    infill: list[str] = arg([], "bar ranges START:END to regenerate (end exclusive; bars of --input, counted "
                                "from 0; of the window for a validation piece)")
    generate_tracks: list[str] = arg([], "tracks to regenerate entirely (accompaniment), e.g. bass,drums, or an "
                                         "instrument of a voice set, e.g. piano (all its voices); with --infill "
                                         "only inside the ranges; with --input, written into the song's "
                                         "instrument chosen for it (--track)")
    continue_bars: int | None = arg(None, "outpainting: keep the bars before bar N, write the rest (of the "
                                          "song, or up to --bars bars from --start-bar)")
    interpolate: Path | None = arg(None, "a second MIDI file: keep the start of the piece and the end of "
                                         "this one, generate the span between")
    keep_bars: int | None = arg(None, "with --interpolate: bars kept from each piece (default: a quarter of "
                                      "the output)")
    bars: int | None = arg(None, "bars to write (default: the model's window, or the input's length when "
                                 "shorter); more than the window slides it")
    hop: int | None = arg(None, "bars the window moves in long generation (default: half the window)")
    steps: int | None = arg(DEFAULT_STEPS, "reverse steps S, chosen from the quality-vs-steps curve in "
                            "experiments/README.md; 'none': the T the model was trained with, as the thesis")
    num_samples: int = arg(1, "number of samples to write")
    batch_size: int = arg(16, "samples generated together (on 2 CPU cores 16 at once take ~15%% less time "
                              "per sample than one at a time)")
    seed: int = arg(0, "random seed (same seed, same options: same output)")
    device: str = arg("auto", "torch device: auto, cpu, cuda, cuda:1, ...")
    precision: SamplePrecision = arg(
        "auto", "denoiser arithmetic: bf16 autocast or fp32; auto = bf16 where the device has native bf16 "
                "(AVX512-BF16 or AMX CPUs, recent GPUs), fp32 elsewhere")
    copy_prior: bool = arg(True, "mix the model's predictions with the copy prior it carries (the piece's own "
                                 "bars as a cache, fitted on held-out windows; schmubert/copy_prior.py); "
                                 "--no-copy-prior: the network alone")
    copy_sharpness: float | None = arg(None, "multiply the copy prior's bar scores by this while sampling: higher "
                                             "copies the best-matching bar more exactly (1 = the fitted prior); "
                                             "default: 8 where something of the piece is known (infill, "
                                             "continuation, accompaniment: the riff copy), 4 for new pieces (about "
                                             "as often repeated as songs; experiments/README.md)")
    compile: bool = arg(False, "torch.compile the denoiser (pays a compile on the first call of each batch "
                               "shape; see experiments/bench_sample.py --modes)")
    key: str = arg("auto", "key the model is told (models trained with attributes): TONIC[:major|:minor] with "
                   "TONIC C, C#/Db, ..., B (e.g. D:minor, Bb); 'none' for no key; 'auto': for unconditional "
                   "samples their outline's (--outline) or else one drawn from the training keys, else the key "
                   "of --input")
    outline: Literal["model", "auto", "none"] = arg(
        "model", "new pieces from a model with attributes: 'auto' tells each the key, onsets and register of a "
                 "training window drawn at random (stored with the model; --key, --density and --register "
                 "replace what they name); 'none': only a key drawn from the training keys; 'model': the "
                 "model's shipped choice where nothing is asked (--key, --density, --register), else none "
                 "(both shipped models ship auto; docs/attributes.md)")
    density: list[str] = arg([], "onsets per bar the model is told (models trained with attributes), "
                                 "TRACK=N[@START:END] (bars end exclusive, from --start-bar; drums count hit "
                                 "steps), e.g. melody=12@8:16; repeatable")
    register: list[str] = arg([], "mean pitch per bar the model is told (models trained with attributes), "
                                  "TRACK=PITCH[@START:END] with PITCH a MIDI number or a note name (C4 = 60), "
                                  "e.g. bass=E2; repeatable")
    dynamics: list[str] = arg([], "dynamics per bar the model is told (models trained with attributes and "
                                  "velocity), TRACK=LEVEL[@START:END] with LEVEL a mark ppp, pp, p, mp, mf, f, ff, "
                                  "fff or a MIDI velocity (the bar's mean velocity in 8 bins), e.g. "
                                  "piano=pp@0:8; repeatable")
    note_density: float | None = arg(None, "target onsets per bar on --density-tracks: classifier guidance (thesis "
                                     "Algorithm 6), or on a model trained with attributes its onsets attribute "
                                     "(split evenly over the tracks)")
    guidance_scale: float = arg(2.0, "guidance scale s (about 0.03 with --guidance-update additive)")
    guidance_update: Literal["multiplicative", "additive"] = arg(
        "multiplicative", "guidance step: in log space (keeps pitch odds) or the thesis' probs - s*grad")
    density_tracks: list[str] = arg(["melody"], "tracks whose onsets count toward --note-density")
    out: Path = arg(Path("samples"), "output folder")
    name: str = arg("sample", "file name prefix: NAME_000.mid, .png, .wav, .json")
    wav: bool = arg(True, "also render WAV audio when FluidSynth is available")
    variation: bool = arg(False, "ask for a take that differs from the input: a sample whose regenerated bars "
                                 "come back unchanged (the copy prior copied a repeated section, or a silent "
                                 "instrument stayed silent) is drawn again with the next seed and half the copy "
                                 f"sharpness, up to {VARIATION_TRIES} times, and says so")
    overwrite: bool = arg(False, "replace existing output files")
    progress: bool = arg(True, "show progress bars")
    sampler: SamplerOptions = field(default_factory=SamplerOptions)  # its own options, --order etc.


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m schmubert.sample", description=__doc__.splitlines()[0],
                                epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    add_arguments(p, SampleConfig, skip=("sampler",))
    add_arguments(p.add_argument_group("sampler"), SamplerOptions)
    next(a for a in p._actions if a.dest == "track").metavar = "ROLE=INDEX|NAME"
    next(a for a in p._actions if a.dest == "time_signature").metavar = "NUM/DEN"
    return p


# --- pieces -------------------------------------------------------------------------------------------------


def read_piece(path: Path | pretty_midi.PrettyMIDI, model: LoadedModel,
               choices: dict[str, song.Choice] | None = None) -> np.ndarray:
    """A MIDI file -> tokens ``(steps, K)`` for the model's tracks, each from the instrument chosen for it
    (``choices``, default :func:`schmubert.song.midi_roles`: by its notes, as for a song); ValueError naming the
    file if unusable."""
    if not is_legacy(model.tracks) and not isinstance(path, pretty_midi.PrettyMIDI):  # a voice set: as preprocessed
        return midi_to_grid(path, model.tracks).tokens
    pm = load_midi(path)
    steps = midi_length_steps(pm)
    if steps == 0:
        raise ValueError(f"{path}: no notes")
    chosen = song.with_roles(pm, choices or song.midi_roles(pm, model.tracks), model.tracks)
    return midi_to_tokens(chosen, [t.name for t in model.tracks], steps=steps)


def validation_piece(model: LoadedModel, rng: np.random.Generator) -> tuple[np.ndarray, str, np.ndarray | None]:
    """A random held-out piece of the data the model was trained on (shipped models carry theirs), and for a
    velocity model its velocity bins (None where the data has none)."""
    found = held_out_pieces(model)
    if found is None:
        raise ValueError(f"no --input given and the validation set of {model.path} is not on this machine; "
                         "pass --input song.mid")
    pieces, source = found
    index = int(rng.integers(len(pieces)))  # as pick_piece draws it
    velocity = held_out_velocity(model) if predicts_velocity(model) else None
    return (np.asarray(pieces[index], dtype=np.int64), f"{source}[{index}]",
            None if velocity is None else np.asarray(velocity[index], dtype=np.int64))


def reads_meter(model: LoadedModel) -> bool:
    """Whether the model reads PAD, meters other than 4/4 (backbone option meter, :mod:`schmubert.meter`)."""
    backbone = model.hparams.get("backbone") or {}
    if isinstance(backbone, dict) and "meter" in backbone:
        return bool(backbone["meter"])
    return any(type(m).__name__ == "MeterEmbedding" for m in model.denoiser.modules())


def time_signature(cfg: SampleConfig, model: LoadedModel) -> str | None:
    """``--time-signature`` checked against the model: 4/4 or 2/2, or for a meter model any meter whose bar the
    slot grid holds; None when not given."""
    text = cfg.time_signature
    if text is None:
        return None
    num, slash, den = text.strip().partition("/")
    if not (slash and num.isdigit() and den.isdigit()):
        raise ValueError(f"--time-signature {text}: expected NUMERATOR/DENOMINATOR, e.g. 4/4 or 3/4")
    if f"{int(num)}/{int(den)}" in ("4/4", "2/2"):
        return f"{int(num)}/{int(den)}"
    if not reads_meter(model):
        raise ValueError(f"--time-signature {text}: this model reads 4/4 only (4/4 or 2/2); a model trained with "
                         "--set meter=true reads a song in other meters")
    try:
        meter.bar_of(int(num), int(den))
    except meter.MeterError as err:
        raise ValueError(f"--time-signature {text}: {err}") from None
    return f"{int(num)}/{int(den)}"


def predicts_velocity(model: LoadedModel) -> bool:
    """Whether the model draws velocity bins with its notes (backbone option velocity)."""
    return bool(getattr(model.denoiser, "predicts_velocity", False))


def pick_piece(pieces: np.ndarray, source: str, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """A random piece of ``pieces`` ``(N, L, K)`` as int64, and ``source[index]`` naming it."""
    index = int(rng.integers(len(pieces)))
    return np.asarray(pieces[index], dtype=np.int64), f"{source}[{index}]"


def crop(tokens: np.ndarray, start_bar: int, bars: int, source: str) -> np.ndarray:
    """Bars ``start_bar .. start_bar + bars`` of a piece, padded with silence past its end."""
    have = len(tokens) // STEPS_PER_BAR
    if not 0 <= start_bar < have:
        raise ValueError(f"{source}: --start-bar {start_bar} is outside the piece (bars 0:{have})")
    part = tokens[start_bar * STEPS_PER_BAR:(start_bar + bars) * STEPS_PER_BAR]
    pad = bars * STEPS_PER_BAR - len(part)
    return np.concatenate([part, np.zeros((pad, tokens.shape[1]), dtype=part.dtype)]) if pad else part


# --- scenario -----------------------------------------------------------------------------------------------


@dataclass
class Scenario:
    x: np.ndarray  # (N, K) tokens of the output span (values where ~known are ignored)
    known: np.ndarray  # (N, K) bool
    kind: str
    sources: list[str]
    song: song.SongEdit | None = None  # where the span lies in --input, and how it is written back
    velocity: np.ndarray | None = None  # (N, K) velocity bins of the known notes (a velocity model's input)


def track_ids(names: list[str], model: LoadedModel, option: str) -> list[int]:
    """The columns of the named tracks; an instrument's name (``piano``) gives all its voices."""
    columns = {name: ks for name, ks in instruments(model.tracks)}
    columns.update({t.name: [k] for k, t in enumerate(model.tracks)})
    bad = [n for n in names if n not in columns]
    if bad:
        have = [name for name, _ in instruments(model.tracks)]
        raise ValueError(f"{option}: the checkpoint has no track {', '.join(bad)} (it has {', '.join(have)})")
    return [k for n in names for k in columns[n]]


def scenario_kind(cfg: SampleConfig) -> str:
    chosen = [k for k, on in (("infill", cfg.infill), ("accompaniment", cfg.generate_tracks),
                              ("continuation", cfg.continue_bars is not None),
                              ("interpolation", cfg.interpolate is not None)) if on]
    if {"infill", "accompaniment"} == set(chosen):
        return "infill"
    if len(chosen) > 1:
        raise ValueError("choose one of --infill/--generate-tracks, --continue-bars, --interpolate "
                         f"(got {chosen})")
    if not chosen and cfg.input is not None:
        raise ValueError(f"{cfg.input}: say what to regenerate (--infill, --generate-tracks, --continue-bars "
                         "or --interpolate); without one the input would be ignored")
    return chosen[0] if chosen else "unconditional"


def build_scenario(cfg: SampleConfig, model: LoadedModel, rng: np.random.Generator) -> Scenario:
    kind = scenario_kind(cfg)
    window_bars = model.steps // STEPS_PER_BAR
    K = len(model.tracks)
    if kind == "unconditional":
        bars = cfg.bars or window_bars
        zeros = np.zeros((bars * STEPS_PER_BAR, K), dtype=np.int64)
        return Scenario(zeros, np.zeros_like(zeros, dtype=bool), kind, [])
    if cfg.input is not None:
        return song_scenario(cfg, model, kind)
    piece, source, velocity = validation_piece(model, rng)
    start_bar = cfg.start_bar or 0
    piece_bars = len(piece) // STEPS_PER_BAR - start_bar
    fits = kind in ("infill", "accompaniment")
    bars = cfg.bars or (min(piece_bars, window_bars) if fits else window_bars)
    x = crop(piece, start_bar, bars, source)
    shape = (1, len(x), K)
    sources = [source]
    if kind in ("infill", "accompaniment"):
        tracks = track_ids(cfg.generate_tracks, model, "--generate-tracks") if cfg.generate_tracks else None
        if kind == "accompaniment":
            known = conditioning.regenerate_tracks(shape, tracks)
        else:
            ranges = [conditioning.parse_bar_range(r) for r in cfg.infill]
            for r in ranges:
                conditioning.check_range(r, min(bars, max(piece_bars, 0)))
            known = conditioning.infill(shape, ranges, tracks)
    elif kind == "continuation":
        if not 0 < cfg.continue_bars <= piece_bars or cfg.continue_bars >= bars:
            raise ValueError(f"--continue-bars {cfg.continue_bars}: must be at least 1, at most the piece's "
                             f"{piece_bars} bars and less than the {bars} bars written")
        known = conditioning.continuation(shape, cfg.continue_bars)
    else:
        other = read_piece(cfg.interpolate, model)
        keep = cfg.keep_bars if cfg.keep_bars is not None else max(1, bars // 4)
        if len(other) < keep * STEPS_PER_BAR or piece_bars < keep:
            raise ValueError(f"--keep-bars {keep}: longer than one of the pieces")
        end = other[len(other) - keep * STEPS_PER_BAR:]
        x = x.copy()
        x[len(x) - len(end):] = end
        known = conditioning.interpolation(shape, keep, keep)
        sources.append(str(cfg.interpolate))
    vel = None if velocity is None else crop(velocity, start_bar, bars, source)
    return Scenario(x, known[0].numpy(), kind, sources, velocity=vel)


def role_choices(cfg: SampleConfig, model: LoadedModel) -> dict[str, str]:
    """The song instrument asked for each role, ``{role: index, name or 'none'}``: ``--track ROLE=INDEX|NAME``
    and its aliases ``--melody-track``, ``--bass-track``, ``--drum-track``. A role the model's set lacks, a
    ``--track`` without ``=`` and two different choices for one role are ValueErrors naming the option."""
    have = song.roles(model.tracks)
    given: list[tuple[str, str, str]] = []  # (role, choice, the option as typed)
    for role, text in (("melody", cfg.melody_track), ("bass", cfg.bass_track), ("drums", cfg.drum_track)):
        if text is not None:
            given.append((role, text, f"{song.ROLE_OPTIONS[role]} {text}"))
    for item in cfg.track:
        role, eq, text = item.partition("=")
        role, text = role.strip(), text.strip()
        if not eq or not role or not text:
            raise ValueError(f"--track {item}: expected ROLE=INDEX|NAME, e.g. --track piano=8 or --track "
                             f"melody=Vocals (roles of this model: {', '.join(have)})")
        given.append((role, text, f"--track {item}"))
    out: dict[str, str] = {}
    said: dict[str, str] = {}
    for role, text, option in given:
        if role not in have:
            raise ValueError(f"{option}: the model ({track_set_name(model.tracks)}) has no role {role!r}; its roles "
                             f"are {', '.join(have)}")
        if role in out and out[role].lower() != text.lower():
            raise ValueError(f"{said[role]} and {option}: two instruments asked for the {role}; choose one")
        out[role], said[role] = text, option
    return out


def song_scenario(cfg: SampleConfig, model: LoadedModel, kind: str) -> Scenario:
    """The scenario over ``--input``: its bars, its instruments, the window placed around the edit."""
    asked = role_choices(cfg, model)
    metered, signature = reads_meter(model), time_signature(cfg, model)
    the_song = song.read_song(cfg.input, time_signature=signature, metered=metered)
    choices = song.choose_roles(the_song, model.tracks, asked)
    assignment = {role: choice.index for role, choice in choices.items()}
    K, window = len(model.tracks), model.steps // STEPS_PER_BAR
    every = list(range(K))
    ids = track_ids(cfg.generate_tracks, model, "--generate-tracks") if cfg.generate_tracks else every
    run = the_song.run_of(cfg.start_bar) if cfg.start_bar is not None else max(the_song.runs, key=lambda r: r.bars)
    if run is None:
        what, which = ("a bar the slot grid holds", "such bars") if metered else ("a 4/4 bar", "4/4 bars")
        inside = 0 <= cfg.start_bar < len(the_song.bars)
        hint = song.meter_hint(the_song, [cfg.start_bar]) if inside and not metered else ""
        raise ValueError(f"--start-bar {cfg.start_bar}: not {what} of {cfg.input} ({which}: "
                         f"{', '.join(f'{r.first}:{r.end}' for r in the_song.runs)})"
                         + (f"; {hint}" if hint else ""))
    extend = False
    if kind == "infill":
        ranges = [conditioning.parse_bar_range(r) for r in cfg.infill]
        edit = (min(r[0] for r in ranges), max(r[1] for r in ranges))
        regenerate = np.zeros(((edit[1] - edit[0]) * STEPS_PER_BAR, K), dtype=bool)
        for a, b in ranges:
            regenerate[(a - edit[0]) * STEPS_PER_BAR:(b - edit[0]) * STEPS_PER_BAR, ids] = True
    elif kind == "accompaniment":
        lo = run.first if cfg.start_bar is None else cfg.start_bar
        edit = (lo, run.end if cfg.bars is None else min(run.end, lo + cfg.bars))
        regenerate = np.zeros(((edit[1] - edit[0]) * STEPS_PER_BAR, K), dtype=bool)
        regenerate[:, ids] = True
    else:  # continuation, interpolation: from a bar to the end of the song (or of --bars)
        lo = run.first if cfg.start_bar is None else cfg.start_bar
        end = run.end if cfg.bars is None else lo + cfg.bars
        if kind == "continuation":
            start = cfg.continue_bars
            if not lo < start < end:
                raise ValueError(f"--continue-bars {start}: must lie after bar {lo} and before bar {end} of "
                                 f"{cfg.input}")
        else:
            end = lo + (cfg.bars or window)
            start = lo + (cfg.keep_bars if cfg.keep_bars is not None else max(1, (end - lo) // 4))
        edit, extend = (start, end), True
        regenerate = np.ones(((end - start) * STEPS_PER_BAR, K), dtype=bool)
    start_bar = {"continuation": None, "interpolation": lo}.get(kind, cfg.start_bar) if extend else cfg.start_bar
    plan = song.plan_edit(the_song, assignment, model.tracks, edit, regenerate, window, start_bar,
                          cfg.bars, extend)
    plan.choices = choices
    sources = [str(cfg.input)]
    if kind == "interpolation":
        keep = edit[0] - plan.window[0]
        other = song.read_song(cfg.interpolate, time_signature=signature, metered=metered)
        last = other.runs[-1]
        if last.bars < keep or len(plan.x) < 2 * keep * STEPS_PER_BAR + STEPS_PER_BAR:
            raise ValueError(f"--keep-bars {keep}: longer than one of the pieces")
        other_tokens, other_velocity = song.grid_encode(other, song.choose_tracks(other, model.tracks),
                                                        model.tracks, last, (last.end - keep, last.end))
        hi = plan.window[1]
        ours = plan.run.meter_bars(hi - keep, hi)
        if metered and last.meter_bars(last.end - keep, last.end) != ours:
            raise ValueError(f"--interpolate {cfg.interpolate}: its last {keep} bars are in "
                             f"{', '.join(b.meter for b in last.meter_bars(last.end - keep, last.end))}, the "
                             f"output's in {', '.join(b.meter for b in ours)}; the bars kept from both must "
                             "have the same meters")
        plan.x[len(plan.x) - len(other_tokens):] = other_tokens
        plan.velocity[len(plan.x) - len(other_tokens):] = other_velocity
        plan.known[len(plan.x) - len(other_tokens):] = True
        sources.append(str(cfg.interpolate))
    return Scenario(plan.x, plan.known, kind, sources, plan, plan.velocity if predicts_velocity(model) else None)


# --- running ------------------------------------------------------------------------------------------------


def output_paths(cfg: SampleConfig, index: int) -> dict[str, Path]:
    stem = cfg.out / f"{cfg.name}_{index:03d}"
    return {ext: stem.with_suffix("." + ext) for ext in ("mid", "png", "wav", "json")}


def check_outputs(cfg: SampleConfig) -> None:
    if cfg.overwrite:
        return
    for i in range(cfg.num_samples):
        for path in output_paths(cfg, i).values():
            if path.exists():
                raise ValueError(f"{path}: exists; pass --overwrite to replace it, or another --out/--name")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def make_guidance(cfg: SampleConfig, model: LoadedModel) -> NoteDensityGuidance | None:
    """Note-density classifier guidance; None without --note-density or where the model's onsets attribute
    carries it (:func:`make_attributes`)."""
    if cfg.note_density is None or model.conditional:
        return None
    ids = track_ids(cfg.density_tracks, model, "--density-tracks")
    return NoteDensityGuidance(model.tracks, cfg.note_density, cfg.guidance_scale, ids, cfg.guidance_update)


def checkpoint_name(cfg: SampleConfig, model: LoadedModel) -> str:
    given = str(cfg.checkpoint) if cfg.checkpoint is not None else str(model.path)
    return given if given == str(model.path) else f"{given} ({model.path})"


def asks_attributes(cfg: SampleConfig) -> bool:
    return cfg.key != "auto" or bool(cfg.density) or bool(cfg.register) or bool(cfg.dynamics)


def decoding_request(cfg: SampleConfig, scen: Scenario, tracks: Sequence[Track]) -> decoding.Request:
    """What ``cfg`` asks of the decoding for ``scen`` in ``tracks`` (:mod:`schmubert.decoding` applies the model's
    defaults)."""
    return decoding.Request(new_piece=scen.kind == "unconditional", anything_known=bool(scen.known.any()),
                            key=cfg.key, outline=cfg.outline,
                            targets=bool(cfg.density or cfg.register or cfg.dynamics) or cfg.note_density is not None,
                            in_context=conditioning.in_context(scen.known, scen.x, tracks),
                            copy_sharpness=cfg.copy_sharpness, sampler=cfg.sampler)


def decoding_plan(cfg: SampleConfig, model: LoadedModel, scen: Scenario) -> decoding.Plan:
    """The decoding plan of ``cfg`` for ``scen`` on ``model`` (:func:`schmubert.decoding.resolve`)."""
    return decoding.resolve(decoding_request(cfg, scen, model.tracks), model)


def make_attributes(cfg: SampleConfig, model: LoadedModel, scen: Scenario,
                    generator: torch.Generator | None = None, plan: decoding.Plan | None = None
                    ) -> Attributes | None:
    """What a model trained with attributes is told, for all ``num_samples`` ``[num_samples, bars, K]``: what
    ``plan`` (default: :func:`decoding_plan`) tells, and the asked onsets and register; None for a model without
    attributes (which may not be asked for any: a ValueError naming the checkpoint)."""
    if cfg.dynamics and not predicts_velocity(model):
        raise ValueError(f"{checkpoint_name(cfg, model)}: this model was trained without velocity, so --dynamics "
                         "cannot steer it; use a velocity model trained with attributes (docs/attributes.md)")
    if not model.conditional:
        if asks_attributes(cfg):
            raise ValueError(f"{checkpoint_name(cfg, model)}: this model was trained without attributes, so "
                             "--key, --density and --register cannot steer it; use a model trained with them "
                             "(python -m schmubert.train ... --set attributes=true; docs/attributes.md)")
        return None
    plan = plan if plan is not None else decoding_plan(cfg, model, scen)
    bars = -(-len(scen.x) // STEPS_PER_BAR)
    attrs = decoding.told(plan, model, cfg.num_samples, bars, torch.as_tensor(scen.x)[None], generator)
    density = [parse_target(t) for t in cfg.density]
    if cfg.note_density is not None:
        names = cfg.density_tracks or [model.tracks[0].name]
        density += [BarTarget(name, cfg.note_density / len(names)) for name in names]
    return apply_targets(attrs, model.tracks, density, [parse_target(t, pitch=True) for t in cfg.register],
                         [parse_target(t, dynamics=True) for t in cfg.dynamics])


def generate(cfg: SampleConfig, model: LoadedModel, scen: Scenario, guidance, generator,
             denoiser: torch.nn.Module | None = None, attributes: Attributes | None = None,
             plan: decoding.Plan | None = None) -> np.ndarray:
    """All samples ``(num_samples, N, K)`` (:func:`generate_takes` without the velocities)."""
    return generate_takes(cfg, model, scen, guidance, generator, denoiser, attributes, plan)[0]


def generate_takes(cfg: SampleConfig, model: LoadedModel, scen: Scenario, guidance, generator,
                   denoiser: torch.nn.Module | None = None, attributes: Attributes | None = None,
                   plan: decoding.Plan | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """All samples ``(num_samples, N, K)`` and, from a velocity model, their velocity bins (else None); a piece
    shorter than the model's window is generated on the whole window and cut to N (known silence after it would
    tell the model, and the copy prior, that the piece is silent: 8 unconditional bars of ``pretrained:trio``
    came out empty).
    ``attributes``: what a conditional model is told, ``[num_samples, bars of N, K]`` (padding: null).
    ``denoiser`` defaults to ``model.denoiser`` at ``cfg.precision`` (bf16 where native) and ``cfg.compile``.
    ``plan``: the sampler options and copy sharpness, the model's defaults applied (default:
    :func:`decoding_plan` of ``cfg``)."""
    denoiser = denoiser or fast_denoiser(model.denoiser, cfg.precision, cfg.compile)
    plan = plan if plan is not None else decoding_plan(cfg, model, scen)
    window = model.steps
    N, K = scen.x.shape
    pad = max(0, window - N)  # a short output still runs the model on its full window
    x = np.concatenate([scen.x, np.zeros((pad, K), dtype=np.int64)])
    known = np.concatenate([scen.known, np.zeros((pad, K), dtype=bool)])  # the padding is drawn, then dropped
    velocity = None
    if predicts_velocity(model):
        given = scen.velocity if scen.velocity is not None else np.zeros((N, K), dtype=np.int64)
        velocity = torch.as_tensor(np.concatenate([given, np.zeros((pad, K), dtype=np.int64)]))
    hop = (cfg.hop or window // STEPS_PER_BAR // 2) * STEPS_PER_BAR
    steps = cfg.steps or model.diffusion.T
    out, out_velocity = [], []
    for start in tqdm(range(0, cfg.num_samples, cfg.batch_size), desc="batches", disable=not cfg.progress):
        B = min(cfg.batch_size, cfg.num_samples - start)
        xb = torch.as_tensor(x).expand(B, -1, -1).clone()
        kb = torch.as_tensor(known).expand(B, -1, -1).clone()
        told = None if attributes is None else attributes.rows(start, start + B).pad_bars(len(x) // STEPS_PER_BAR)
        with sharpened(denoiser, plan.copy_sharpness):
            if velocity is None:
                result = sample_long(denoiser, model.diffusion, xb, kb, steps, generator,
                                     window=window, hop=hop, progress=cfg.progress, options=plan.sampler,
                                     guidance=guidance, attributes=told, tracks=model.tracks)
            elif len(x) <= window:
                result, vel = sample(denoiser, model.diffusion, xb, kb, steps, generator, plan.sampler,
                                     guidance=guidance, attributes=told, tracks=model.tracks,
                                     progress=cfg.progress, velocity=velocity.expand(B, -1, -1).clone())
                out_velocity.append(vel[:, :N].cpu().numpy())
            else:
                result, vel = sample_long_velocity(denoiser, model, xb, kb, velocity.expand(B, -1, -1).clone(),
                                                   steps, generator, window, hop, plan, guidance, told, cfg.progress)
                out_velocity.append(vel[:, :N].cpu().numpy())
        result = keep_note_ends(xb, kb, result.cpu(), model.tracks)
        out.append(result[:, :N].numpy())
    tokens = np.concatenate(out)
    if velocity is None:
        return tokens, None
    onset = np.stack([is_onset(tokens[..., k], t) for k, t in enumerate(model.tracks)], axis=-1)
    return tokens, np.where(onset, np.concatenate(out_velocity), NO_ONSET)


def keep_note_ends(x: torch.Tensor, known: torch.Tensor, out: torch.Tensor, tracks) -> torch.Tensor:
    """:func:`schmubert.conditioning.preserve_note_ends` on the real steps of a grid with PAD (``[B, L, K]``,
    one slot layout for the batch: PAD takes no time, so the step before a slot's first is its bar's last real
    step, not its PAD); as it is for a grid without PAD."""
    if not bool(pad_mask(x[0], tracks).any()):
        return conditioning.preserve_note_ends(x, known, out, tracks)
    real = torch.as_tensor(meter.layout_of(x[0].numpy(), tracks).real_step_slots())
    fixed = out.clone()
    fixed[:, real] = conditioning.preserve_note_ends(x[:, real], known[:, real], out[:, real], tracks)
    return fixed


def sample_long_velocity(denoiser: torch.nn.Module, model: LoadedModel, x: torch.Tensor, known: torch.Tensor,
                         velocity: torch.Tensor, steps: int, generator: torch.Generator, window: int, hop: int,
                         plan: decoding.Plan, guidance, attributes: Attributes | None, progress: bool
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """A velocity model over a piece longer than its window (``x``/``known``/``velocity`` ``[B, N, K]``): the
    windows of :func:`schmubert.sampling.sample_long`, each keeping what is known and what earlier windows drew,
    tokens and velocity bins together. Returns ``(x, velocity)``."""
    x, known, velocity = x.clone(), known.clone(), velocity.clone()
    for start in tqdm(window_starts(x.shape[1], window, hop), desc="windows", disable=not progress, leave=False):
        span = slice(start, start + window)
        told = None if attributes is None else attributes.bars(start // STEPS_PER_BAR,
                                                                -(-(start + window) // STEPS_PER_BAR))
        filled, vel = sample(denoiser, model.diffusion, x[:, span], known[:, span], steps, generator, plan.sampler,
                             guidance=guidance, attributes=told, tracks=model.tracks, velocity=velocity[:, span])
        x[:, span], velocity[:, span] = filled.to(x.device), vel.to(velocity.device)
        known[:, span] = True
    return x, velocity


def write_sample(cfg: SampleConfig, model: LoadedModel, scen: Scenario, tokens: np.ndarray, index: int,
                 record: dict, attributes: Attributes | None = None, velocity: np.ndarray | None = None) -> None:
    """The MIDI (with ``velocity``'s bins where given), piano roll, WAV and JSON record of one sample."""
    paths = output_paths(cfg, index)
    if scen.song is not None and cfg.whole_song:
        data = song.song_bytes(scen.song.splice(tokens, model.tracks, velocity))
        write_atomic(paths["mid"], lambda tmp: tmp.write_bytes(data), cfg.overwrite)
        pm = load_midi(paths["mid"]) if cfg.wav else None
    else:
        pm = tokens_to_midi(tokens, model.tracks, velocity=velocity)
        write_atomic(paths["mid"], lambda tmp: pm.write(str(tmp)), cfg.overwrite)
    where = "" if scen.song is None else (f" (x axis: bars from song bar {scen.song.window[0]}; edited bars "
                                          f"{scen.song.edit[0]}:{scen.song.edit[1]} of the song)")
    save_pianoroll(tokens, model.tracks, paths["png"], ~scen.known, f"{cfg.name}_{index:03d}: {scen.kind}{where}",
                   cfg.overwrite)
    wav = write_wav(pm, paths["wav"], cfg.overwrite, quiet=index > 0) if cfg.wav else None
    files = {k: str(p) for k, p in paths.items() if k != "wav" or wav is not None}
    record = {**record, "index": index, "files": files}
    if cfg.note_density is not None:
        ids = track_ids(cfg.density_tracks, model, "--density-tracks")
        record["note_density"] = density_error(tokens, model.tracks, cfg.note_density, ids)
    if attributes is not None:
        got = estimate_key(torch.as_tensor(tokens)[None], model.tracks)
        record["key"] = {"told": key_name(int(attributes.key[index])), "estimated": key_name(int(got))}
        record["told"] = describe(attributes, index)
    text = json.dumps(record, indent=2, default=str)
    write_atomic(paths["json"], lambda tmp: tmp.write_text(text), cfg.overwrite)


def unchanged(model: LoadedModel, scen: Scenario, tokens: np.ndarray) -> song.Unchanged | None:
    """Why a sample's regenerated bars came back as the input had them (:func:`schmubert.song.unchanged_take`),
    or None when they differ."""
    if scen.song is not None:
        return scen.song.unchanged(tokens, model.tracks, model.uses_copy_prior)
    return song.unchanged_take(scen.x, tokens, ~scen.known, model.tracks, model.uses_copy_prior)


def vary(cfg: SampleConfig, model: LoadedModel, scen: Scenario, guidance, attributes: Attributes | None,
         samples: np.ndarray, plan: decoding.Plan, velocities: np.ndarray | None = None) -> dict[int, dict]:
    """``--variation``: the samples whose regenerated bars came back unchanged are drawn again, with the next seed
    and half the copy sharpness of ``plan`` each time, up to :data:`VARIATION_TRIES` times (``samples`` is updated
    in place). Returns, per redrawn sample, the seed and copy sharpness of its take and the tries it took."""
    redrawn: dict[int, dict] = {}
    for attempt in range(1, VARIATION_TRIES + 1):
        same = [i for i, tokens in enumerate(samples) if unchanged(model, scen, tokens) is not None]
        if not same:
            break
        again = dataclasses.replace(plan, copy_sharpness=plan.copy_sharpness / 2 ** attempt)
        seed = cfg.seed + attempt
        takes, take_velocity = generate_takes(
            dataclasses.replace(cfg, seed=seed, copy_sharpness=again.copy_sharpness), model, scen, guidance,
            torch.Generator().manual_seed(seed), attributes=attributes, plan=again)
        for i in same:
            samples[i] = takes[i]
            if velocities is not None:
                velocities[i] = take_velocity[i]
            redrawn[i] = {"seed": seed, "copy_sharpness": again.copy_sharpness if model.uses_copy_prior else None,
                          "tries": attempt}
    return redrawn


def report_take(cfg: SampleConfig, model: LoadedModel, scen: Scenario, tokens: np.ndarray, index: int,
                redrawn: dict | None) -> dict:
    """Say when sample ``index`` was drawn again (``--variation``) and warn when its regenerated bars are still
    the input's, why and what to do; returns what its JSON record adds (``variation``, ``unchanged``)."""
    same = unchanged(model, scen, tokens)
    the_song = scen.song.song if scen.song is not None else None
    out: dict = {}
    if redrawn is not None:
        sharpness = "" if redrawn["copy_sharpness"] is None else f" and copy sharpness {redrawn['copy_sharpness']:g}"
        result = "still unchanged" if same is not None else "it differs from the input now"
        print(f"variation: sample {index} came back unchanged; drawn again with seed {redrawn['seed']}{sharpness} "
              f"({redrawn['tries']} {'try' if redrawn['tries'] == 1 else 'tries'}): {result}")
        out["variation"] = redrawn
    if same is not None:
        message = same.cli_message(the_song)
        print(message if cfg.num_samples == 1 else message.replace("warning: ", f"warning: sample {index}: ", 1),
              file=sys.stderr)
        out["unchanged"] = same.why(the_song)
    return out


def run(cfg: SampleConfig) -> list[Path]:
    """Sample by ``cfg``; returns the MIDI files written; bad input raises a one-line ValueError."""
    if cfg.num_samples < 1 or cfg.batch_size < 1:
        raise ValueError("--num-samples and --batch-size must be at least 1")
    check_outputs(cfg)
    path = cfg.checkpoint if cfg.checkpoint is not None else default_checkpoint(cfg.runs, cfg.tracks)
    model = load_model(path, resolve_device(cfg.device), copy_prior=cfg.copy_prior)
    if cfg.tracks and track_set_name(model.tracks) != cfg.tracks:
        raise ValueError(f"--tracks {cfg.tracks}: {model.path} is a {track_set_name(model.tracks)} model; "
                         f"pass --checkpoint pretrained:{cfg.tracks} or a {cfg.tracks} checkpoint")
    if cfg.track or cfg.melody_track or cfg.bass_track or cfg.drum_track:
        role_choices(cfg, model)  # an unknown role or two choices for one is an error with or without --input
    guidance = make_guidance(cfg, model)
    scen = build_scenario(cfg, model, np.random.default_rng(cfg.seed))
    plan = decoding_plan(cfg, model, scen)
    cfg = dataclasses.replace(cfg, sampler=plan.sampler, outline=plan.outline)  # for the record
    attributes = make_attributes(cfg, model, scen, torch.Generator().manual_seed(cfg.seed), plan)
    generator = torch.Generator().manual_seed(cfg.seed)
    began = time.perf_counter()
    samples, velocities = generate_takes(cfg, model, scen, guidance, generator, attributes=attributes, plan=plan)
    redrawn = vary(cfg, model, scen, guidance, attributes, samples, plan, velocities) if cfg.variation else {}
    seconds = time.perf_counter() - began
    record = {"options": to_dict(cfg), "scenario": scen.kind, "sources": scen.sources, "seed": cfg.seed,
              "checkpoint": str(model.path), "checkpoint_sha256": model.sha256, "device": str(model.device),
              "steps": cfg.steps or model.diffusion.T,
              "bars": (scen.song.window[1] - scen.song.window[0] if scen.song is not None
                       else len(scen.x) // STEPS_PER_BAR),
              "regenerated_elements": int((~scen.known).sum()), "copy_prior": model.uses_copy_prior,
              "copy_sharpness": plan.copy_sharpness if model.uses_copy_prior else None,
              "decoding": plan.record(), "seconds": round(seconds, 3)}
    cfg.out.mkdir(parents=True, exist_ok=True)
    if scen.song is not None:
        record["song"] = scen.song.record()
        print(f"{cfg.input}: the model's tracks are {record['song']['tracks']}; window bars "
              f"{scen.song.window[0]}:{scen.song.window[1]}, edited bars {scen.song.edit[0]}:{scen.song.edit[1]}")
        for line in song.describe_choices(scen.song.song, scen.song.choices):
            print(f"chosen: {line}")
        for note in scen.song.notes:
            print(f"note: {note}")
    for i, tokens in enumerate(samples):
        said = report_take(cfg, model, scen, tokens, i, redrawn.get(i))
        write_sample(cfg, model, scen, tokens, i, {**record, **said}, attributes,
                     None if velocities is None else velocities[i])
    print(f"wrote {len(samples)} sample(s) ({scen.kind}, {record['bars']} bars) to {cfg.out} "
          f"in {seconds:.1f} s of sampling")
    return [output_paths(cfg, i)["mid"] for i in range(len(samples))]


def main(argv: list[str] | None = None) -> int:
    ns = parser().parse_args(argv)
    cfg = from_args(SampleConfig, ns, sampler=from_args(SamplerOptions, ns))
    try:
        run(cfg)
    except (ValueError, OSError) as err:  # CheckpointError is a ValueError
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
