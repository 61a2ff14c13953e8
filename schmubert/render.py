"""Rendering samples: piano-roll PNGs (matplotlib, Agg) and WAV audio (FluidSynth via pretty_midi), written
atomically.

Colours follow the original editor: melody red, bass blue, drums black (one row per drum class); the voices
of a polyphonic instrument share its colour (piano green, bridge orange, others from a palette). The
regenerated region is shaded.
"""

from __future__ import annotations

import wave
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pretty_midi  # noqa: E402
from matplotlib.collections import PolyCollection  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from schmubert.files import write_atomic  # noqa: E402
from schmubert.tokens import DRUM_CLASS_NAMES, STEPS_PER_BAR, Track, tokens_to_notes  # noqa: E402

TRACK_COLOURS = {"melody": "tab:red", "bass": "tab:blue", "drums": "black", "piano": "tab:green",
                 "bridge": "tab:orange"}
#: Colours of other instruments, in the order they appear in a track set.
OTHER_COLOURS = ("tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "tab:gray")


def instrument_colours(tracks: Sequence[Track]) -> dict[str, str]:
    """One colour per instrument of a set (the voices of a polyphonic one share it)."""
    others = iter(OTHER_COLOURS * len(tracks))
    return {t.instrument: TRACK_COLOURS.get(t.instrument) or next(others) for t in tracks}
SAMPLE_RATE = 44100


def note_boxes(notes: np.ndarray) -> np.ndarray:
    """Notes ``(N, 3)`` (start, end, pitch) -> rectangles ``(N, 4, 2)`` for one PolyCollection (fast)."""
    start, end, pitch = (notes[:, i].astype(float) for i in range(3))
    xs = np.stack([start, end, end, start], axis=1)
    ys = np.stack([pitch - 0.4, pitch - 0.4, pitch + 0.4, pitch + 0.4], axis=1)
    return np.stack([xs, ys], axis=-1)


def _spans(flags: np.ndarray) -> list[tuple[int, int]]:
    """Runs of True in a 1-D bool array as (start, end) steps."""
    padded = np.concatenate([[False], flags, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def pianoroll(tokens: np.ndarray, tracks: Sequence[Track], shaded: np.ndarray | None = None,
              title: str | None = None) -> Figure:
    """A piano-roll figure of a grid ``(L, K)``; ``shaded`` ``(L, K)`` (``~known``) marks generated parts."""
    tokens = np.asarray(tokens)
    L = tokens.shape[0]
    shaded = np.zeros(tokens.shape, dtype=bool) if shaded is None else np.asarray(shaded, dtype=bool)
    melodic = [k for k, t in enumerate(tracks) if not t.is_drum]
    drums = [k for k, t in enumerate(tracks) if t.is_drum]
    heights = ([3] if melodic else []) + [1] * len(drums)
    fig, axes = plt.subplots(len(heights), 1, figsize=(max(8, L / 64), 2 + 2 * len(heights)), sharex=True,
                             squeeze=False, gridspec_kw={"height_ratios": heights})
    axes = list(axes[:, 0])
    notes = tokens_to_notes(tokens, tracks)
    if melodic:
        ax = axes.pop(0)
        colours = instrument_colours(tracks)
        for k in melodic:
            colour = colours[tracks[k].instrument]
            ax.add_collection(PolyCollection(note_boxes(notes[k]), facecolors=colour, linewidths=0))
            if tracks[k].voice == 0:
                ax.plot([], [], color=colour, lw=4, label=tracks[k].instrument)
        _shade(ax, shaded[:, melodic].any(1))
        pitches = np.concatenate([notes[k][:, 2] for k in melodic])
        ax.set_ylim(*((pitches.min() - 2, pitches.max() + 2) if len(pitches) else (40, 90)))
        ax.set_ylabel("pitch")
        ax.legend(loc="upper right", fontsize="small")
    for k in drums:
        ax = axes.pop(0)
        column = tokens[:, k:k + 1]  # (L, 1); mask tokens draw nothing
        bits = (column >> np.arange(len(DRUM_CLASS_NAMES))) & 1 & (column < tracks[k].num_classes)
        steps, classes = np.nonzero(bits)  # one marker per hit: step, drum class row
        ax.scatter(steps + 0.5, classes, marker="s", s=6, color=TRACK_COLOURS["drums"])
        ax.set_yticks(range(len(DRUM_CLASS_NAMES)), DRUM_CLASS_NAMES, fontsize="x-small")
        ax.set_ylim(-0.5, len(DRUM_CLASS_NAMES) - 0.5)
        _shade(ax, shaded[:, k])
    fig.axes[-1].set_xlim(0, L)
    ticks = list(range(0, L + 1, STEPS_PER_BAR * max(1, L // STEPS_PER_BAR // 16)))
    fig.axes[-1].set_xticks(ticks, [str(t // STEPS_PER_BAR) for t in ticks])
    fig.axes[-1].set_xlabel("bar")
    for ax in fig.axes:  # bar lines: one collection (a minor tick per bar cost most of the drawing time)
        ax.vlines(range(0, L + 1, STEPS_PER_BAR), 0, 1, transform=ax.get_xaxis_transform(), colors="0.7",
                  lw=0.3, alpha=0.5, zorder=0.5)
    if title:
        fig.suptitle(title, fontsize="small")
    fig.tight_layout()
    return fig


def _shade(ax, flags: np.ndarray) -> None:
    for i, (start, end) in enumerate(_spans(flags)):
        ax.axvspan(start, end, color="gold", alpha=0.2, lw=0, label="regenerated" if i == 0 else None)


def save_pianoroll(tokens: np.ndarray, tracks: Sequence[Track], path: str | Path,
                   shaded: np.ndarray | None = None, title: str | None = None, overwrite: bool = False
                   ) -> Path:
    """Write :func:`pianoroll` as a PNG, atomically."""
    fig = pianoroll(tokens, tracks, shaded, title)
    try:
        return write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"), overwrite)
    finally:
        plt.close(fig)


def fluidsynth_available() -> str | None:
    """None when WAV rendering works, else the one-line reason why not."""
    try:
        import fluidsynth  # noqa: F401
    except Exception as err:  # ImportError, or OSError when the shared library is missing
        return f"FluidSynth unavailable ({type(err).__name__}: {err}); `make install` adds it"
    return None


def write_wav(pm: pretty_midi.PrettyMIDI, path: str | Path, overwrite: bool = False, quiet: bool = False
              ) -> Path | None:
    """Render ``pm`` with pretty_midi's bundled soundfont to 16-bit WAV; without FluidSynth print a notice and
    return None."""
    reason = fluidsynth_available()
    if reason is not None:
        if not quiet:
            print(f"note: skipping WAV: {reason}")
        return None
    audio = pm.fluidsynth(fs=SAMPLE_RATE)
    peak = np.abs(audio).max() if audio.size else 0.0  # a piece without notes renders to no samples
    pcm = (np.clip(audio / max(1e-9, peak), -1, 1) * 32767 * 0.9).astype(np.int16)

    def write(tmp: Path) -> None:
        with wave.open(str(tmp), "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(SAMPLE_RATE)
            wav.writeframes(pcm.tobytes())

    return write_atomic(path, write, overwrite)
