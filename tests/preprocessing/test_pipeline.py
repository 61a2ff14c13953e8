"""The batch run and CLI: real corpora, bad inputs, the file split, dedup, resume, archives, atomic output."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest

from preprocessing import PreprocessConfig, load_meta, load_split, run
from preprocessing.__main__ import main
from preprocessing.pipeline import split_files, valid_score
from schmubert.polyphony import midi_to_grid
from schmubert.tokens import midi_to_tokens, tokens_to_midi

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"


def cfg(tmp_path, input, **kw):
    return PreprocessConfig(**{"input": input, "output": tmp_path / "out", "workers": 0, "progress": False,
                               **kw})


def test_cli_multitrack_trio_windows(tmp_path, capsys):
    out = tmp_path / "trio"
    assert main(["--tracks", "trio", "--input", str(CORPUS / "multitrack-songs"), "--output", str(out),
                 "--workers", "2", "--no-progress", "--valid-fraction", "0.3"]) == 0
    meta = load_meta(out)
    train, valid = load_split(out, "train"), load_split(out, "valid")
    assert train.dtype == np.uint16 and train.shape[1:] == (1024, 3) and len(train) + len(valid) > 0
    c = meta["counts"]
    assert c["files_seen"] == 12 == c["files_used"] + sum(c["skipped"].values())
    assert (train[..., :2] < 90).all() and (train[..., 2] < 512).all()
    assert "skipped:" in capsys.readouterr().out
    files = {f["sha256"]: f["split"] for f in meta["files"]}
    for split in ("train", "valid"):  # every row's source file lies on that split's side only
        assert {meta["files"][row[0]]["split"] for row in meta["sources"][split]} <= {split}
    assert set(files.values()) == {"train", "valid"}
    # refuses to overwrite a finished output, and says so in one line
    assert main(["--input", str(CORPUS / "multitrack-songs"), "--output", str(out), "--no-progress"]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_pop909_finds_melodies_and_no_trio(tmp_path):
    src = tmp_path / "pop909"
    src.mkdir()
    for f in sorted((CORPUS / "pop909").glob("*.mid"))[:100]:
        shutil.copy(f, src / f.name)
    melody = run(PreprocessConfig(tracks="melody", input=src, output=tmp_path / "m", workers=2,
                                  progress=False))
    assert melody["counts"]["windows_found"] > 0 and melody["steps"] == 1024
    trio = run(PreprocessConfig(tracks="trio", input=src, output=tmp_path / "t", workers=0, progress=False))
    assert trio["counts"]["windows_found"] == 0 and trio["counts"]["skipped"]["no bass instrument"] > 0
    assert np.load(tmp_path / "t" / "train.npy").shape == (0, 1024, 3)


def test_pop909_voice_set_windows_hold_its_chords(tmp_path):
    src = tmp_path / "pop909"
    src.mkdir()
    for f in sorted((CORPUS / "pop909").glob("*.mid"))[:12]:
        shutil.copy(f, src / f.name)
    meta = run(cfg(tmp_path, src, tracks="pop909", valid_fraction=0.2))
    train = load_split(tmp_path / "out", "train")
    assert train.shape[1:] == (1024, 11) and meta["track_names"][:2] == ["melody", "bridge.0"]
    voices = meta["counts"]["voices"]
    assert set(voices) == {"melody", "bridge", "piano"}
    assert all(v["notes"] > 1000 and v["kept"] >= 0.99 for v in voices.values())
    assert sum(meta["counts"]["skipped"].values()) + meta["counts"]["files_used"] == 12
    piano = train[..., 5:]
    assert ((piano > 1) & (piano < 90)).sum(-1).max() >= 3  # chords: several piano voices start at one step
    assert (train < 90).all()
    # a window is the song's grid from its start bar on, as the codec reads the file
    row = meta["sources"]["train"][0]
    song = midi_to_tokens(src / meta["files"][row[0]]["name"], "pop909")
    start = row[2] * 16
    np.testing.assert_array_equal(train[0], song[start:start + 1024])
    # velocity bins beside the tokens: one at every onset, none elsewhere, as the codec gives them
    assert meta["velocity"] is True
    velocity = np.load(tmp_path / "out" / "train_velocity.npy", mmap_mode="r")
    assert velocity.shape == train.shape and velocity.dtype == np.uint8
    onset = (train > 1) & (train < 90)
    assert (velocity[onset] >= 1).all() and (velocity[~onset] == 0).all()
    encoded = midi_to_grid(src / meta["files"][row[0]]["name"], "pop909")
    np.testing.assert_array_equal(velocity[0], encoded.velocity[start:start + 1024])


def test_bad_inputs_are_all_accounted_for(tmp_path):
    meta = run(cfg(tmp_path, CORPUS / "bad-input"))
    c = meta["counts"]
    assert c["files_seen"] == 8 and c["files_used"] == 0
    assert c["skipped"] == {"unreadable": 4, "no melody instrument": 1, "no bass instrument": 1,
                            "no 4/4 segment": 1, "no notes": 1}
    assert all(detail for detail in meta["skip_details"].values())


def test_demo_trio_windows_equal_the_codec(tmp_path):
    demo = Path(__file__).resolve().parents[2] / "data" / "demo" / "lakh-trio"
    meta = run(cfg(tmp_path, demo, valid_fraction=0.1))
    rows = np.concatenate([load_split(tmp_path / "out", s) for s in ("train", "valid")])
    assert len(rows) == 40 and meta["counts"]["valid"] > 0
    sources = [r for s in ("train", "valid") for r in meta["sources"][s]]
    assert {r[2] for r in sources} == {0, 1}  # start bars: one file only becomes active from bar 1
    for source, row in zip(sources, rows, strict=True):
        start = source[2] * 16
        whole = midi_to_tokens(demo / meta["files"][source[0]]["name"], "trio", steps=start + 1024)
        np.testing.assert_array_equal(row, whole[start:])


def test_duplicates_removed_and_tar_stream_input(tmp_path):
    src = sorted((CORPUS / "lakh-melody-64bar").glob("*.mid"))[:6]
    archive = tmp_path / "in.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for i, f in enumerate(src + src[:2]):  # two exact duplicate files
            tar.add(f, arcname=f"a/{i}.mid")
        data = b"not midi"
        info = tarfile.TarInfo("a/readme.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    meta = run(cfg(tmp_path, archive, tracks="melody"))
    c = meta["counts"]
    assert c["files_seen"] == 8 and c["skipped"].get("duplicate file") == 2
    # a file whose window equals another file's window is removed too
    folder = tmp_path / "f"
    folder.mkdir()
    shutil.copy(src[0], folder / "x.mid")
    (folder / "y.mid").write_bytes(src[0].read_bytes() + b"")  # same bytes: duplicate file
    (folder / "sub").mkdir()
    rewritten = tokens_to_midi(midi_to_tokens(src[0], "melody"), "melody")  # other bytes, same notes
    rewritten.write(str(folder / "sub" / "z.MIDI"))
    meta = run(cfg(tmp_path, folder, tracks="melody", output=tmp_path / "o2"))
    c = meta["counts"]
    assert (c["files_seen"], c["files_used"], c["skipped"]) == (3, 2, {"duplicate file": 1})
    assert c["duplicates_removed"] == 1 and c["train"] + c["valid"] == 1


def test_split_is_by_file_hash_and_seed_perturbs_it():
    hashes = [f"{i:064x}" for i in range(0, 2**20, 997)]
    scores = [valid_score(h, None) for h in hashes]
    assert scores == [valid_score(h, None) for h in hashes] and all(0 <= s < 1 for s in scores)
    assert scores != [valid_score(h, 1) for h in hashes]

    class F:
        def __init__(self, sha):
            self.sha256 = sha

    split = split_files([F("f" * 64), F("e" * 64)], PreprocessConfig(valid_fraction=0.01))
    assert sorted(split.values()) == ["train", "valid"]  # never an empty valid side when asked for one
    none = split_files([F("f" * 64), F("e" * 64)], PreprocessConfig(valid_fraction=0.0))
    assert set(none.values()) == {"train"}


def test_resume_reuses_cached_batches_and_output_is_atomic(tmp_path, monkeypatch):
    src = tmp_path / "in"
    src.mkdir()
    for f in sorted((CORPUS / "lakh-melody-64bar").glob("*.mid"))[:6]:
        shutil.copy(f, src / f.name)
    config = cfg(tmp_path, src, tracks="melody", batch_files=2)
    import preprocessing.pipeline as pipeline
    calls = []
    real = pipeline.process_file

    def flaky(name, data, c, sha=None):
        calls.append(name)
        if len(calls) == 5:
            raise KeyboardInterrupt  # an interruption in the third batch
        return real(name, data, c, sha)

    monkeypatch.setattr(pipeline, "process_file", flaky)
    with pytest.raises(KeyboardInterrupt):
        run(config)
    assert not (tmp_path / "out").exists()  # nothing that looks complete
    assert len(list((tmp_path / "out.work").glob("batch-*.json"))) == 2
    calls.clear()
    meta = run(config)
    assert len(calls) == 2 and meta["counts"]["files_seen"] == 6  # only the unfinished batch is redone
    assert not (tmp_path / "out.work").exists()
    json.loads((tmp_path / "out" / "meta.json").read_text())


def test_load_meta_rejects_incomplete_or_mismatched(tmp_path):
    with pytest.raises(ValueError, match="meta.json: missing"):
        load_meta(tmp_path)
    (tmp_path / "meta.json").write_text(json.dumps({"tracks": "trio"}))
    with pytest.raises(ValueError, match="missing field"):
        load_meta(tmp_path)


def test_invalid_options_fail_clearly(tmp_path):
    with pytest.raises(ValueError, match="bars"):
        PreprocessConfig(bars=0)
    with pytest.raises(ValueError, match="program range"):
        PreprocessConfig(melody_programs="0-200")
    assert main(["--input", str(tmp_path / "nope"), "--output", str(tmp_path / "o"), "--no-progress"]) == 2


def test_overwrite_never_replaces_a_folder_that_is_not_a_finished_output(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(sorted((CORPUS / "lakh-melody-64bar").glob("*.mid"))[0], src / "a.mid")
    user = tmp_path / "user"  # a folder of the user's own files, with the input inside it
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    shutil.copytree(src, user / "raw")
    with pytest.raises(FileExistsError, match="not a preprocessing output"):
        run(cfg(tmp_path, user / "raw", tracks="melody", output=user, overwrite=True))
    assert (user / "notes.txt").read_text() == "mine" and (user / "raw" / "a.mid").is_file()
    plain = tmp_path / "file.txt"
    plain.write_text("mine")
    with pytest.raises(FileExistsError):
        run(cfg(tmp_path, src, tracks="melody", output=plain, overwrite=True))
    assert plain.read_text() == "mine"
    # a finished output is still replaced
    run(cfg(tmp_path, src, tracks="melody"))
    meta = run(cfg(tmp_path, src, tracks="melody", overwrite=True))
    assert meta["counts"]["files_seen"] == 1 and (tmp_path / "out" / "meta.json").is_file()


def test_several_empty_files_each_count_as_unreadable_not_as_duplicates(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.mid", "b.mid", "c.mid"):
        (folder / name).write_bytes(b"")
    (folder / "d.mid").write_bytes((CORPUS / "lakh-trio-64bar" / sorted(
        p.name for p in (CORPUS / "lakh-trio-64bar").glob("*.mid"))[0]).read_bytes())
    (folder / "e.mid").write_bytes((folder / "d.mid").read_bytes())
    c = run(cfg(tmp_path, folder))["counts"]
    assert c["files_seen"] == 5
    assert c["skipped"]["unreadable"] == 3 and c["skipped"]["duplicate file"] == 1
