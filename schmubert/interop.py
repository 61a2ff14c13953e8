"""Magenta interop: ``NoteSequence`` in and out, through note_seq's own converters.

Needs the optional extra: ``pip install "schmubert[magenta]"`` (note-seq pulls librosa, numba and pandas, so the
core install leaves it out; note_seq is imported only when a function here is called).

Two paths:

- **songs** (:func:`song_to_note_sequence`, :func:`note_sequence_to_midi`): every note of every instrument with its
  pitch, velocity, program, drum flag and times, chords included, plus tempos, time and key signatures, pitch bends
  and control changes, exactly as ``note_seq.midi_io`` converts them.
- **token grids** (:func:`tokens_to_note_sequence`, :func:`note_sequence_to_tokens`): an integer grid ``(steps, K)``
  through the codec of :mod:`schmubert.tokens` (``tokens_to_midi`` / ``midi_to_tokens``), so the grid comes back
  identical for a canonical grid (any grid ``midi_to_tokens`` made).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pretty_midi

from schmubert.tokens import DECODE_QPM, midi_to_tokens, tokens_to_midi

if TYPE_CHECKING:
    from note_seq.protobuf.music_pb2 import NoteSequence

INSTALL_HINT = 'schmubert.interop needs note-seq (Magenta): pip install "schmubert[magenta]"'


def _note_seq():
    """The ``note_seq`` module, imported on first use; a clear ``ImportError`` when the extra is not installed."""
    try:
        with warnings.catch_warnings():  # note_seq's pydub warns about audio tools unused here
            warnings.filterwarnings("ignore", message="Couldn't find ffmpeg", category=RuntimeWarning)
            warnings.filterwarnings("ignore", message="'audioop' is deprecated", category=DeprecationWarning)
            import note_seq
    except ImportError as err:
        raise ImportError(f"{INSTALL_HINT} ({err})") from err
    return note_seq


def song_to_note_sequence(midi: str | Path | pretty_midi.PrettyMIDI) -> NoteSequence:
    """A MIDI file (path) or ``PrettyMIDI`` -> ``NoteSequence`` with every note (times in seconds).

    Raises ``ValueError`` naming the file if note_seq cannot read it.
    """
    note_seq = _note_seq()
    if isinstance(midi, pretty_midi.PrettyMIDI):
        return note_seq.midi_to_note_sequence(midi)
    try:
        return note_seq.midi_file_to_note_sequence(str(midi))
    except note_seq.MIDIConversionError as err:
        raise ValueError(f"{midi}: unreadable MIDI ({err})") from err


def note_sequence_to_midi(sequence: NoteSequence) -> pretty_midi.PrettyMIDI:
    """A ``NoteSequence`` -> ``PrettyMIDI`` (one instrument per instrument/program/drum of the sequence, its
    resolution, tempo map and signatures); ``.write(path)`` saves it."""
    return _note_seq().note_sequence_to_pretty_midi(sequence)


def tokens_to_note_sequence(tokens: np.ndarray, tracks: str | Sequence[str] | None = None, qpm: float = DECODE_QPM,
                            programs: dict[str, int] | None = None) -> NoteSequence:
    """A token grid ``(steps, K)`` -> ``NoteSequence``, decoded by :func:`schmubert.tokens.tokens_to_midi`.

    ``tracks`` defaults from K (1 = melody, 3 = trio); one instrument per track, named after it. Mask tokens
    decode as silence; ``qpm`` and ``programs`` as in ``tokens_to_midi``.
    """
    return song_to_note_sequence(tokens_to_midi(tokens, tracks, qpm=qpm, programs=programs))


def note_sequence_to_tokens(sequence: NoteSequence, tracks: str | Sequence[str] = "trio",
                            steps: int | None = None) -> np.ndarray:
    """A ``NoteSequence`` -> token grid ``(steps, K)`` (int64), encoded by :func:`schmubert.tokens.midi_to_tokens`.

    Roles follow that codec: the first instrument of each role by program (melody 0-31, bass 32-39, drums), notes
    on the sequence's own tempo map. ``steps`` defaults to its length in whole bars, at least 1024.
    """
    return midi_to_tokens(note_sequence_to_midi(sequence), tracks, steps=steps)
