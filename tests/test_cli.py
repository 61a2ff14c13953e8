import subprocess
import sys

import pytest

from schmubert.cli import COMMANDS, main

PROGS = {"preprocess": "python -m preprocessing", "train": "python -m schmubert.train",
         "sample": "python -m schmubert.sample", "evaluate": "python -m schmubert.evaluate",
         "editor": "python -m schmubert.editor", "demo": "python -m schmubert.demo"}


def test_help_lists_every_subcommand(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert list(COMMANDS) == list(PROGS) and all(f"  {name} " in out for name in PROGS)
    assert main([]) == 2 and main(["bogus"]) == 2
    assert "unknown subcommand 'bogus'" in capsys.readouterr().err


@pytest.mark.parametrize("name", list(PROGS))
def test_each_subcommand_is_its_python_m_form(name, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([name, "--help"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: {PROGS[name]}")


def test_arguments_reach_the_subcommand():
    r = subprocess.run([sys.executable, "-m", "schmubert.cli", "sample", "--checkpoint", "missing.ckpt"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "missing.ckpt: checkpoint not found" in r.stderr


def test_the_console_script_and_the_page_are_packaged():
    from pathlib import Path

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    root = Path(__file__).resolve().parents[1]
    project = tomllib.loads((root / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["schmubert"] == "schmubert.cli:main"
    assert "editor/static/*" in project["tool"]["setuptools"]["package-data"]["schmubert"]
    static = {p.name for p in (root / "schmubert" / "editor" / "static").iterdir()}
    assert {"index.html", "app.js", "roll.js", "synth.js", "editor.css"} <= static
