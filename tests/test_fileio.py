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


def test_a_pair_of_files_is_replaced_both_or_neither(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by QA: a model's weights were renamed into place and its model.json then could not be (an immutable
    file), so the model that had worked no longer loaded. Now the weights are put back when the second file fails."""
    import os

    from dogbreed.errors import WriteError
    from dogbreed.fileio import atomic_write_pair

    w, j = tmp_path / "model.safetensors", tmp_path / "model.json"
    atomic_write_pair((w, b"weights 1"), (j, b"json 1"))
    assert (w.read_bytes(), j.read_bytes()) == (b"weights 1", b"json 1")
    real = os.replace

    def refuse_json(src: str | os.PathLike, dst: str | os.PathLike) -> None:
        assert w.exists()  # at every moment there are weights to load, old or new
        if Path(dst) == j:
            raise PermissionError(1, "Operation not permitted", str(dst))
        real(src, dst)

    monkeypatch.setattr(os, "replace", refuse_json)
    with pytest.raises(WriteError, match="cannot write .*model.json: operation not permitted"):
        atomic_write_pair((w, b"weights 2"), (j, b"json 2"))
    monkeypatch.setattr(os, "replace", real)
    assert (w.read_bytes(), j.read_bytes()) == (b"weights 1", b"json 1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json", "model.safetensors"]  # no temporary left
    atomic_write_pair((w, b"weights 3"), (j, b"json 3"))
    assert (w.read_bytes(), j.read_bytes()) == (b"weights 3", b"json 3")


def test_a_detector_stem_keeps_a_dot_in_its_name_and_refuses_a_folder(tmp_path: Path) -> None:
    """`--out det_v1.5` wrote det_v1.json (".5" taken for a suffix) over another detector; `--out dir/` wrote
    dir.json beside the folder."""
    from dogbreed.dogness import DogDetector, default_detector
    from dogbreed.errors import ModelLoadError

    det = default_detector()
    assert det is not None
    assert det.save(tmp_path / "det_v1.5") == tmp_path / "det_v1.5.json"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["det_v1.5.json", "det_v1.5.safetensors"]
    assert DogDetector.load(tmp_path / "det_v1.5.json").thresholds == det.thresholds
    with pytest.raises(ModelLoadError, match="is a folder"):
        det.save(tmp_path)
