"""The ``schmubert`` command: ``schmubert SUBCOMMAND [options]``, each subcommand exactly its ``python -m`` form.

    schmubert preprocess ...   = python -m preprocessing ...
    schmubert train ...        = python -m schmubert.train ...
    schmubert sample ...       = python -m schmubert.sample ...
    schmubert evaluate ...     = python -m schmubert.evaluate ...
    schmubert editor ...       = python -m schmubert.editor ...
    schmubert demo ...         = python -m schmubert.demo ...

The modules are imported only when their subcommand runs, so ``schmubert --help`` is instant.
"""

from __future__ import annotations

import importlib
import sys
from typing import NamedTuple


class Command(NamedTuple):
    module: str  # the module whose main(argv) runs
    summary: str


COMMANDS: dict[str, Command] = {
    "preprocess": Command("preprocessing.__main__", "raw MIDI (folder or .tar.gz) -> token windows"),
    "train": Command("schmubert.train", "train a model (PyTorch Lightning)"),
    "sample": Command("schmubert.sample", "generate, infill, accompany, continue or interpolate music"),
    "evaluate": Command("schmubert.evaluate", "self-similarity, music statistics, held-out ELBO"),
    "editor": Command("schmubert.editor.server", "the browser piano-roll editor"),
    "demo": Command("schmubert.demo", "music from the shipped models, and a short fine-tuning run"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {cmd.summary}" for name, cmd in COMMANDS.items()]
    return ("usage: schmubert SUBCOMMAND [options]   (schmubert SUBCOMMAND --help for its options)\n\n"
            "subcommands:\n" + "\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"schmubert: unknown subcommand {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name].module)
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
