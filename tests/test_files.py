import os
import stat

import pytest

from schmubert.files import atomic_path, write_atomic


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "x.mid") as tmp:
            tmp.write_text("half")
            raise RuntimeError
    assert list(tmp_path.iterdir()) == []


def test_write_atomic_refuses_to_overwrite_unless_asked(tmp_path):
    path = tmp_path / "a.txt"
    write_atomic(path, lambda tmp: tmp.write_text("one"))
    with pytest.raises(FileExistsError, match="--overwrite"):
        write_atomic(path, lambda tmp: tmp.write_text("two"))
    write_atomic(path, lambda tmp: tmp.write_text("two"), overwrite=True)
    assert path.read_text() == "two" and [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_write_atomic_gives_the_mode_of_a_plainly_written_file(tmp_path):
    from schmubert.files import FILE_MODE

    def private_writer(tmp):
        tmp.write_bytes(b"x")
        os.chmod(tmp, 0o600)  # as safetensors' writer does

    out = write_atomic(tmp_path / "w.bin", private_writer)
    plain = tmp_path / "plain.bin"
    plain.write_bytes(b"x")
    assert stat.S_IMODE(out.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode) == FILE_MODE
