"""fileio.atomic_write: the target is replaced whole or not at all, and no temporary file is left behind."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dogbreed.fileio import atomic_write, atomic_write_bytes, atomic_write_text


def test_atomic_write_replaces_the_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "a.txt"
    atomic_write_text(target, "one")
    atomic_write_bytes(target, b"two")
    assert target.read_text() == "two"
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.txt"]


def test_atomic_write_keeps_the_old_file_when_the_writer_fails(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="boom"), atomic_write(target) as tmp:
        tmp.write_text("half of the new")
        raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_temp_names_are_unique_and_keep_the_suffix(tmp_path: Path) -> None:
    target = tmp_path / "f.npz"
    with atomic_write(target) as t1, atomic_write(target, durable=False) as t2:
        assert t1 != t2 and t1.suffix == t2.suffix == ".npz"
        np.savez(t1, x=np.arange(3))  # numpy appends .npz unless the name ends with it
        np.savez(t2, x=np.arange(4))
    assert np.load(target)["x"].tolist() == [0, 1, 2]  # the outer block finished last
    assert [p.name for p in tmp_path.iterdir()] == ["f.npz"]


def test_atomic_write_gives_the_mode_open_would_and_keeps_an_existing_files_mode(tmp_path: Path) -> None:
    import os
    import stat

    from dogbreed import fileio

    new = fileio.atomic_write_text(tmp_path / "new.csv", "a\n")
    assert stat.S_IMODE(new.stat().st_mode) == 0o666 & ~fileio._UMASK
    old = tmp_path / "old.csv"
    old.write_text("x\n")
    os.chmod(old, 0o640)
    fileio.atomic_write_text(old, "y\n")
    assert stat.S_IMODE(old.stat().st_mode) == 0o640 and old.read_text() == "y\n"
