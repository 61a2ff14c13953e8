"""Benchmark: nothing lost, as a property over real songs. Random in-place edits through the sample CLI, each
checked tick for tick outside the edit by an independent reader (``song_diff``: mido, not symusic).

Every song of ``--songs`` (default: ``../shared/corpus/multitrack-songs``) and ``--pop909`` songs drawn from
``../shared/corpus/pop909`` get ``--edits`` random edits each. An edit is a scenario (an infill of 1-8 bars, of
every track or some; an accompaniment of some tracks over 4-16 bars; a continuation over 4-16 bars), bars drawn
anywhere in the song (bars the grid cannot hold are refused, as they should be), and per role an instrument:
the one chosen by the evidence, another of the right kind, or none; a quarter of the edits use
``pretrained:melody``, the rest ``pretrained:trio``. Each edit runs ``python -m schmubert.sample --input SONG``
(its ``main``, in this process) with ``--steps`` reverse steps, and ``song_diff.compare`` checks the file it
writes against the song outside the edited cells (the regenerated instruments, in the edited bars): tempo map,
time and key signatures, control changes, pitch bends, the file's length and every other note.

Printed: the counts table (edits written, refused with their reasons, crashes, lost notes, notes added outside
an edit, other differences by kind, no-ops warned and unwarned, asked instruments the CLI did not take). A no-op
is an edit whose cells hold the same notes as before (16ths of onset and end, and pitch; drums: onset and drum
class); the CLI must warn of each (``warning: ... came back unchanged``). Differences a plain symusic read and
write of the song already makes are counted beside them.

    python experiments/bench_song_edits.py                       # 12 multitrack songs + 100 of POP909, 8 steps
    python experiments/bench_song_edits.py --pop909 0 --edits 3 --steps 4
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import io
import json
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import symusic

sys.path.insert(0, str(Path(__file__).resolve().parent))
import song_diff  # noqa: E402

from schmubert import sample, song  # noqa: E402
from schmubert.tokens import DRUM_PITCH_TO_CLASS  # noqa: E402

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"
ROLES = {"trio": ("melody", "bass", "drums"), "melody": ("melody",)}
ROLE_OPTIONS = {"melody": "--melody-track", "bass": "--bass-track", "drums": "--drum-track"}
#: Kinds of difference outside the edits, as the table names them.
OTHER_KINDS = ("tempos", "signatures", "keys", "controls", "bends", "length", "resolution")


@dataclass(frozen=True)
class Edit:
    """One random edit of a song: what the sample CLI is asked."""

    song: Path
    model: str  # trio or melody
    scenario: str  # infill, accompaniment or continuation
    bars: tuple[int, int]  # song bars regenerated (end exclusive)
    tracks: tuple[str, ...]  # roles regenerated
    context: int = 0  # continuation: bars kept before ``bars[0]``
    choices: tuple[tuple[str, str], ...] = ()  # role -> instrument index or "none"; others by the evidence

    def argv(self, out: Path, steps: int, seed: int) -> list[str]:
        """The sample CLI's arguments for this edit."""
        a, b = self.bars
        args = ["--checkpoint", f"pretrained:{self.model}", "--input", str(self.song), "--steps", str(steps),
                "--seed", str(seed), "--out", str(out), "--no-wav", "--no-progress", "--overwrite"]
        every = self.tracks == ROLES[self.model]
        if self.scenario == "infill":
            args += ["--infill", f"{a}:{b}"] + ([] if every else ["--generate-tracks", ",".join(self.tracks)])
        elif self.scenario == "accompaniment":
            args += ["--generate-tracks", ",".join(self.tracks), "--start-bar", str(a), "--bars", str(b - a)]
        else:
            start = a - self.context
            args += ["--start-bar", str(start), "--bars", str(b - start), "--continue-bars", str(a)]
        for role, choice in self.choices:
            args += [ROLE_OPTIONS[role], choice]
        return args

    def describe(self) -> str:
        chosen = ", ".join(f"{r}={c}" for r, c in self.choices) or "evidence"
        return (f"{self.song.name}: {self.model} {self.scenario} bars {self.bars[0]}:{self.bars[1]} "
                f"({','.join(self.tracks)}; instruments: {chosen})")


@dataclass
class Outcome:
    """What became of one edit."""

    edit: Edit
    status: str  # written, refused or crashed
    reason: str = ""
    diff: song_diff.Diff | None = None
    baseline: song_diff.Diff | None = None  # a plain symusic read and write of the song
    warned: bool = False  # the CLI said the take came back unchanged
    shared_name: bool = False  # an edited instrument shares its name with another (told apart by its notes)
    ignored: tuple[str, ...] = ()  # roles whose asked instrument the CLI did not take


# --- drawing edits ----------------------------------------------------------------------------------------------


def draw_edit(path: Path, rng: np.random.Generator) -> Edit:
    """A random edit of the song at ``path`` (module docstring)."""
    model = "melody" if rng.random() < 0.25 else "trio"
    try:
        the_song = song.read_song(path)
    except ValueError:  # the CLI will refuse it and say why
        return Edit(path, model, "infill", (0, 4), ROLES[model])
    bars = len(the_song.bars)
    scenario = str(rng.choice(["infill", "infill", "accompaniment", "continuation"]))
    length = int(rng.integers(1, 9)) if scenario == "infill" else int(rng.integers(4, 17))
    first = int(rng.integers(0, max(1, bars - length)))
    span = (first, min(bars, first + length))
    roles = ROLES[model]
    if scenario == "continuation":
        context = int(rng.integers(1, 5))
        span = (min(first + context, span[1] - 1), span[1])
        return Edit(path, model, scenario, span, roles, span[0] - first, choices(the_song, roles, rng))
    tracks = roles if scenario == "infill" and rng.random() < 0.5 else some(roles, rng)
    return Edit(path, model, scenario, span, tracks, 0, choices(the_song, roles, rng))


def some(roles: tuple[str, ...], rng: np.random.Generator) -> tuple[str, ...]:
    """A non-empty random subset of ``roles``, in their order."""
    picked = rng.random(len(roles)) < 0.5
    picked[rng.integers(len(roles))] = True
    return tuple(r for r, p in zip(roles, picked, strict=True) if p)


def choices(the_song: song.Song, roles: tuple[str, ...], rng: np.random.Generator) -> tuple[tuple[str, str], ...]:
    """Per role, with probability 0.6 the evidence's choice (left out), 0.3 another instrument with notes of the
    right kind (drum channel for drums), 0.1 none."""
    out, taken = [], set()
    for role in roles:
        u = rng.random()
        if u < 0.6:
            continue
        if u >= 0.9:
            out.append((role, "none"))
            continue
        kind = [i for i, t in enumerate(the_song.score.tracks) if len(t.notes) and bool(t.is_drum) == (role == "drums")
                and i not in taken]
        if kind:
            index = int(rng.choice(kind))
            taken.add(index)
            out.append((role, str(index)))
    return tuple(out)


# --- running and checking ---------------------------------------------------------------------------------------


def run_edit(edit: Edit, steps: int, seed: int, baselines: dict[Path, song_diff.Diff]) -> Outcome:
    """Run the sample CLI on ``edit`` and check what it wrote (module docstring)."""
    with tempfile.TemporaryDirectory() as tmp:
        out, err = io.StringIO(), io.StringIO()
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = sample.main(edit.argv(Path(tmp), steps, seed))
        except Exception as exc:  # a crash, not a refusal: the CLI turns bad input into an error line
            return Outcome(edit, "crashed", f"{type(exc).__name__}: {exc}")
        if code != 0:
            line = next((x for x in err.getvalue().splitlines() if x.startswith("error: ")), err.getvalue())
            return Outcome(edit, "refused", reason(line, edit.song))
        written = Path(tmp) / "sample_000.mid"
        record = json.loads(written.with_suffix(".json").read_text())
        cells, shared = edit_cells(edit, record)
        before = song_diff.read(edit.song)
        diff = song_diff.compare(before, song_diff.read(written), cells, DRUM_PITCH_TO_CLASS)
        warned = "came back unchanged" in err.getvalue()
    return Outcome(edit, "written", diff=diff, baseline=baseline(edit.song, baselines), warned=warned,
                   shared_name=shared, ignored=ignored(edit, record))


def ignored(edit: Edit, record: dict) -> tuple[str, ...]:
    """The roles whose asked instrument (an index, or none) is not the one the CLI's record says it edited."""
    took = {role: c["index"] for role, c in record["song"]["choices"].items()}
    return tuple(role for role, asked in edit.choices if took.get(role) != (None if asked == "none" else int(asked)))


def edit_cells(edit: Edit, record: dict) -> tuple[list[song_diff.Cell], bool]:
    """The edited cells of a written edit: each regenerated role's instrument (as the CLI's record names it; a new
    instrument where none) over the ticks of the edited bars (the record's, on the song's grid); and whether an
    edited instrument shares its name and drum flag with another instrument of the song."""
    the_song = song.read_song(edit.song)
    e0, e1 = record["song"]["edited_bars"]
    run = the_song.run_of(e0)
    bar = 4 * the_song.resolution  # 16 sixteenths
    a, b = run.start_tick + (e0 - run.first) * bar, run.start_tick + (e1 - run.first) * bar
    b = min(b, the_song.end_tick)
    names = [(t.name.strip(), bool(t.is_drum)) for t in the_song.score.tracks]
    cells, shared = [], False
    for role in edit.tracks if edit.scenario != "continuation" else ROLES[edit.model]:
        index = record["song"]["choices"][role]["index"]
        if index is None:
            cells.append(song_diff.Cell(None, a, b))
            continue
        alike = names.count(names[index]) > 1  # its notes tell it from another instrument of its name
        notes = frozenset(map(tuple, the_song.notes_ticks[index].tolist())) if alike else None
        cells.append(song_diff.Cell(names[index], a, b, notes))
        shared |= alike
    return cells, shared


def baseline(path: Path, cache: dict[Path, song_diff.Diff]) -> song_diff.Diff:
    """What a plain symusic read and write of the song changes (nothing edited), once per song."""
    if path not in cache:
        with tempfile.TemporaryDirectory() as tmp:
            symusic.Score(str(path)).dump_midi(str(Path(tmp) / "plain.mid"))
            cache[path] = song_diff.compare(song_diff.read(path), song_diff.read(Path(tmp) / "plain.mid"), [])
    return cache[path]


def reason(line: str, path: Path) -> str:
    """A refusal's reason without the file's name and numbers, so that equal reasons count together."""
    text = line.removeprefix("error: ").replace(str(path), "SONG").replace(path.name, "SONG")
    return re.sub(r"\d+(\.\d+)?", "N", text)


# --- the table --------------------------------------------------------------------------------------------------


@dataclass
class Counts:
    """The counts of one set of songs."""

    songs: int = 0
    edits: int = 0
    written: int = 0
    refused: collections.Counter = field(default_factory=collections.Counter)
    crashed: list[str] = field(default_factory=list)
    lost: int = 0
    stray: int = 0
    late: int = 0
    other: collections.Counter = field(default_factory=collections.Counter)
    plain: collections.Counter = field(default_factory=collections.Counter)  # the same, from symusic alone
    no_ops: int = 0
    warned: int = 0
    warned_changed: int = 0  # warned, though the cells hold other notes
    shared: int = 0
    ignored: int = 0

    def add(self, o: Outcome) -> None:
        self.edits += 1
        if o.status == "refused":
            self.refused[o.reason] += 1
            return
        if o.status == "crashed":
            self.crashed.append(f"{o.edit.describe()}: {o.reason}")
            return
        self.written += 1
        d = o.diff
        self.lost, self.stray, self.late = self.lost + len(d.lost_notes), self.stray + len(d.stray_notes), \
            self.late + len(d.late_notes)
        self.other.update({k: v for k, v in d.other.items() if v})
        self.plain.update({k: v for k, v in o.baseline.other.items() if v})
        self.no_ops += d.same_inside
        self.warned += d.same_inside and o.warned
        self.warned_changed += o.warned and not d.same_inside
        self.shared += o.shared_name
        self.ignored += len(o.ignored)


def table(columns: dict[str, Counts]) -> str:
    """The counts as a markdown table, one column per set of songs, and the refusals by reason."""
    def row(name: str, f) -> str:
        return f"| {name} | " + " | ".join(str(f(c)) for c in columns.values()) + " |"

    def other(c: Counts) -> str:
        found = [f"{k} {c.other[k]}" + (f" ({c.plain[k]} plain)" if c.plain[k] else "") for k in OTHER_KINDS
                 if c.other[k]]
        return ", ".join(found) or "0"

    lines = ["| | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns),
             row("songs", lambda c: c.songs), row("edits", lambda c: c.edits),
             row("written", lambda c: c.written),
             row("refused", lambda c: sum(c.refused.values())), row("crashed", lambda c: len(c.crashed)),
             row("**lost notes**", lambda c: f"**{c.lost}**"), row("notes added outside an edit", lambda c: c.stray),
             row("new notes sounding past their edit", lambda c: c.late),
             row("other differences outside (from a plain read/write)", other),
             row("no-ops (warned / unwarned)", lambda c: f"{c.no_ops} ({c.warned} / {c.no_ops - c.warned})"),
             row("warned, but the edit holds other notes", lambda c: c.warned_changed),
             row("asked instruments not taken", lambda c: c.ignored),
             row("edits of an instrument whose name another shares", lambda c: c.shared)]
    refused = sum((c.refused for c in columns.values()), collections.Counter())
    lines += ["", "Refusals by reason (all songs):", ""]
    lines += [f"- {n} x {text}" for text, n in refused.most_common()] or ["- none"]
    crashed = [x for c in columns.values() for x in c.crashed]
    lines += ["", "Crashes:", ""] + ([f"- {x}" for x in crashed] or ["- none"])
    return "\n".join(lines)


# --- running it -------------------------------------------------------------------------------------------------


def song_sets(args: argparse.Namespace) -> dict[str, list[Path]]:
    """The songs of each column: every song of ``--songs`` and ``--pop909`` drawn from ``--pop909-dir``."""
    sets = {args.songs.name: sorted(args.songs.glob("*.mid"))[:args.limit or None]}
    if args.pop909:
        pop = sorted(args.pop909_dir.glob("*.mid"))
        drawn = np.random.default_rng(args.seed).choice(len(pop), min(args.pop909, len(pop)), replace=False)
        sets[f"pop909 ({len(drawn)} drawn)"] = [pop[i] for i in sorted(drawn)]
    return sets


def run(args: argparse.Namespace) -> dict[str, Counts]:
    """Every edit of every song set; prints one line per edit as it goes (``--verbose``)."""
    rng = np.random.default_rng(args.seed)
    columns, baselines, seed = {}, {}, 0
    for name, paths in song_sets(args).items():
        counts = columns[name] = Counts(songs=len(paths))
        for path in paths:
            for _ in range(args.edits):
                edit = draw_edit(path, rng)
                outcome = run_edit(edit, args.steps, seed, baselines)
                seed += 1
                counts.add(outcome)
                if args.verbose:
                    print(f"{outcome.status}: {edit.describe()}" + (f": {outcome.reason}" if outcome.reason else "")
                          + (f"; lost {len(outcome.diff.lost_notes)}, no-op {outcome.diff.same_inside}, warned "
                             f"{outcome.warned}" if outcome.diff else ""), flush=True)
    return columns


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python experiments/bench_song_edits.py", description=__doc__.splitlines()[0])
    p.add_argument("--songs", type=Path, default=CORPUS / "multitrack-songs", help="a folder of songs, every one "
                   "edited (default: the corpus' multitrack-songs)")
    p.add_argument("--limit", type=int, default=0, help="edit only the first N songs of --songs (0: all)")
    p.add_argument("--pop909", type=int, default=100, help="POP909 songs drawn (0: none)")
    p.add_argument("--pop909-dir", type=Path, default=CORPUS / "pop909", help="where POP909 lies")
    p.add_argument("--edits", type=int, default=1, help="random edits per song")
    p.add_argument("--steps", type=int, default=8, help="reverse steps per edit (the CLI's default is far more; "
                   "the property does not depend on them)")
    p.add_argument("--seed", type=int, default=0, help="seed of the drawn songs and edits")
    p.add_argument("--verbose", action=argparse.BooleanOptionalAction, default=True, help="a line per edit")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Counts]:
    args = parse_args(argv)
    began = time.perf_counter()
    columns = run(args)
    print(f"\n{sum(c.edits for c in columns.values())} edits at {args.steps} steps, seed {args.seed}, in "
          f"{time.perf_counter() - began:.0f} s\n")
    print(table(columns))
    return columns


if __name__ == "__main__":
    main()
