"""``python -m preprocessing``: see ``--help``."""

from __future__ import annotations

import argparse
import sys

from preprocessing.config import PreprocessConfig
from preprocessing.pipeline import run, summary_table
from schmubert.config import add_arguments, from_args

DESCRIPTION = """Cut raw MIDI into fixed-length token windows for training (spec section 2).

Each file is split at tempo and time-signature changes; 4/4 parts (16 steps per bar) are quantized to 16th
notes. Melody instruments (programs 0-31), bass (32-39) and drums (drum channel) are monophonized (highest
pitch wins at equal onsets) or reduced to drum-class onsets. Trio: every (melody, bass, drums) combination,
windows where all three are active; melody: every melody instrument, windows inside one melody (no rest of a
full bar). Windows start every --hop-bars bars, exact duplicates are removed, and train/valid are split by
source file (its sha256), never by window. Files that yield nothing are counted under a reason."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m preprocessing", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    add_arguments(parser, PreprocessConfig)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = from_args(PreprocessConfig, args)
        meta = run(cfg)
    except (ValueError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(summary_table(meta))
    print(f"wrote {cfg.output}/train.npy, valid.npy, meta.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
