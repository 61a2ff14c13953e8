"""The preprocessing options: one typed field per rule of spec section 2, with the spec's default.

The dataclass is also the command line (``python -m preprocessing --help``).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from schmubert.config import arg, to_dict
from schmubert.tokens import get_tracks, is_legacy


def parse_programs(text: str) -> frozenset[int]:
    """``"0-31"`` or ``"0-7,16-23,40"`` -> the set of General MIDI programs; a clear error otherwise."""
    out: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        lo, _, hi = part.partition("-")
        try:
            first, last = int(lo), int(hi or lo)
        except ValueError:
            raise ValueError(f"program range {text!r}: {part!r} is not N or N-M") from None
        if not 0 <= first <= last <= 127:
            raise ValueError(f"program range {text!r}: {part!r} must lie within 0-127, low to high")
        out.update(range(first, last + 1))
    return frozenset(out)


@dataclass
class PreprocessConfig:
    tracks: str = arg("trio", "trio: every (melody, bass, drums) combination of instruments; melody: every "
                              "melody instrument alone; pop909 (melody, bridge:4, piano:6), band, or a spec such as "
                              "'melody,bass,drums,piano:6': instruments by name, else by General MIDI family, "
                              "polyphonic ones as stacked voices (schmubert.polyphony), windows every --hop-bars")
    input: Path = arg(Path("."), "a folder searched recursively for .mid/.midi, or a .tar.gz (e.g. the Lakh "
                                 "lmd_full.tar.gz) read as a stream without unpacking")
    output: Path = arg(Path("data/processed"), "output folder: train.npy, valid.npy (uint16, (N, steps, K)) "
                                               "and meta.json")
    bars: int = arg(64, "bars per window (16 steps per bar)")
    hop_bars: int = arg(8, "bars between the starts of consecutive windows inside one span")
    melody_programs: str = arg("0-31", "General MIDI programs that count as melody instruments (N-M,...)")
    bass_programs: str = arg("32-39", "General MIDI programs that count as bass instruments (N-M,...)")
    activity_bars: int = arg(2, "trio: an instrument is active in bars within this many bars of a bar where "
                                "it sounds; a window needs all three active in every bar")
    gap_bars: int = arg(1, "melody: a rest of this many full bars or more ends a melody; windows lie inside "
                           "one melody")
    max_file_bars: int = arg(4096, "skip a file longer than this many bars (\"too long\"): a corrupt file with a "
                                   "stray event far out would otherwise exhaust a worker's memory")
    split_on_tempo: bool = arg(True, "split files at tempo changes (each part quantized against its own "
                                     "start)")
    split_on_time_signature: bool = arg(True, "split files at time-signature changes; only 4/4-like "
                                              "(16 steps per bar) parts are kept")
    meter: bool = arg(True, "voice sets (pop909, specs): bars by the file's time signatures (schmubert.meter: "
                            "signatures of bars shorter than 2 quarters, like POP909's 1/4, or lasting less than a "
                            "bar are ignored; 2/4 throughout is read in 4/4); a bar shorter than 16 steps is padded "
                            "with PAD, a longer one takes two slots. --no-meter: 16 steps per bar from the first "
                            "tick, as before. The trio and melody are split at signature changes instead (above)")
    valid_fraction: float = arg(0.05, "fraction of source files (not windows) put in valid, chosen by the "
                                      "file's sha256")
    seed: int | None = arg(None, "perturb the file-hash split (none: the split depends only on file content)")
    dedup: bool = arg(True, "remove exact duplicate windows (first occurrence in file-hash order kept)")
    workers: int = arg(2, "worker processes parsing files (0: in this process)")
    limit: int | None = arg(None, "process at most this many input files (none: all)")
    batch_files: int = arg(512, "files per work batch; each finished batch is cached so an interrupted run "
                                "resumes where it stopped")
    overwrite: bool = arg(False, "replace an existing output folder")
    progress: bool = arg(True, "show a progress bar")

    def __post_init__(self) -> None:
        self.input, self.output = Path(self.input), Path(self.output)
        checks = {
            "bars": self.bars >= 1, "hop_bars": self.hop_bars >= 1, "activity_bars": self.activity_bars >= 0,
            "gap_bars": self.gap_bars >= 1,
            "max_file_bars": self.max_file_bars >= self.bars, "valid_fraction": 0.0 <= self.valid_fraction < 1.0,
            "workers": self.workers >= 0, "batch_files": self.batch_files >= 1,
            "limit": self.limit is None or self.limit >= 0,
        }
        get_tracks(self.tracks)  # an unknown set or a malformed spec is an error naming it
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid preprocessing option(s) {bad}: {self.extraction_options()}")
        self.melody_set = parse_programs(self.melody_programs)
        self.bass_set = parse_programs(self.bass_programs)

    def extraction_options(self) -> dict:
        """The options that decide which windows a file yields (the per-file cache is keyed by these)."""
        keys = ("tracks", "bars", "hop_bars", "melody_programs", "bass_programs", "activity_bars", "gap_bars",
                "max_file_bars", "split_on_tempo", "split_on_time_signature")
        voice_set = () if is_legacy(self.tracks) else ("meter",)  # the trio's and melody's options as before
        return {k: getattr(self, k) for k in keys + voice_set}

    def to_json(self) -> dict:
        out = json.loads(json.dumps(to_dict(self), default=str))
        if is_legacy(self.tracks):  # the trio's and melody's meta.json as before: they do not read meters
            out.pop("meter")
        return out


FIELDS = [f.name for f in dataclasses.fields(PreprocessConfig)]
