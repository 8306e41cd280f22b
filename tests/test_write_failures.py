"""Outputs that cannot be written (issue 23): a full disk, a read-only file system, a permission taken away mid-run.

Each ends in one sentence naming the file and the cause and a non-zero exit, with no traceback, and what was
written before stays valid: `predict --out` resumes with no row lost or written twice. The CLI runs are real ones
(a subprocess, or `cli.main()` in process, which maps `WriteError` to its exit code as the installed command does).
A real tmpfs is mounted for `predict --out` where the tests run as root; elsewhere the failure is injected as the
OSError the write call raises.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fixtures import make_folder_tree, noise_image, write_jpeg

SRC = str(Path(__file__).resolve().parents[1] / "src")
NAMES = [f"a_photo_with_a_long_name_to_make_rows_longer_{i:03d}.jpg" for i in range(40)]


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("photos")
    for i, name in enumerate(NAMES):
        write_jpeg(d / name, noise_image(64, 48, seed=i))
    return d


def run_main(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str]:
    """`dogbreed ARGV` in this process through the installed entry point; (exit code, stderr)."""
    from dogbreed import cli

    monkeypatch.setattr(sys, "argv", ["dogbreed", *argv])
    with pytest.raises(SystemExit) as e:
        cli.main()
    return int(e.value.code or 0), capsys.readouterr().err


def one_sentence(err: str, *words: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.startswith(("cannot write", "train: cannot write"))]
    assert len(lines) == 1, err[-2000:]
    assert "Traceback" not in err and all(w in lines[0] for w in words), lines[0]


def fail_writes(monkeypatch: pytest.MonkeyPatch, match: Callable[[Path], bool], code: int = errno.ENOSPC) -> list:
    """``Path.write_bytes`` (what `fileio.atomic_write_bytes` calls) raises ``code`` for the files ``match`` picks."""
    real = Path.write_bytes
    hits: list[Path] = []

    def write_bytes(self: Path, data: bytes) -> int:
        if match(self):
            hits.append(self)
            raise OSError(code, os.strerror(code), str(self))
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", write_bytes)
    return hits


# ---------------------------------------------------------------------------------------------------------------
# predict --out on a real small file system


@contextlib.contextmanager
def tmpfs(where: Path, size: str = "64k") -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; the injected-error tests below cover the same paths")
    where.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True,
                       text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _fill(mnt: Path, leave: int) -> Path:
    st = os.statvfs(mnt)
    filler = mnt / "filler"
    filler.write_bytes(b"\0" * max(0, st.f_bavail * st.f_frsize - leave))
    return filler


def _rows(out: Path, fmt: str) -> list[str]:
    """Paths of the whole rows in ``out`` (a line torn by the full disk, with no newline yet, is not one)."""
    if fmt in ("csv", "jsonl"):
        text = out.read_text()
        lines = text[:text.rfind("\n") + 1].splitlines()
        if fmt == "csv":
            return [r["path"] for r in csv.DictReader(lines)]
        return [json.loads(line)["path"] for line in lines]
    import pyarrow.parquet as pq

    if not list(out.glob("part-*.parquet")):
        return []
    return [str(p) for p in pq.read_table(out, columns=["path"]).column(0).to_pylist()]


@pytest.mark.parametrize("fmt", ["csv", pytest.param("jsonl", marks=pytest.mark.slow),
                                 pytest.param("parquet", marks=pytest.mark.slow)])
def test_predict_out_on_a_full_then_read_only_disk_resumes_without_duplicates(tmp_path: Path, photos: Path,
                                                                              fmt: str) -> None:
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    env = {**os.environ, "PYTHONPATH": SRC}
    with tmpfs(tmp_path / "mnt") as mnt:
        out = mnt / f"results.{fmt}"
        cmd = [sys.executable, "-m", "dogbreed.cli", "predict", str(photos), "--out", str(out)]
        if fmt == "parquet":  # parts of 8 rows, so that some are whole before the disk fills
            cmd = [sys.executable, "-c", "import sys; import dogbreed.inference.sinks as b; b.PART_ROWS = 8; "
                   "from dogbreed.cli import main; sys.argv = ['dogbreed', *sys.argv[1:]]; main()", *cmd[3:]]

        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        ro = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
        subprocess.run(["mount", "-o", "remount,rw", str(mnt)], check=True)
        assert ro.returncode == 2
        one_sentence(ro.stderr, f"cannot write {out}", "the file system is read-only", "resumes after them")

        # a part of 8 rows is about 9 kB; the record of the run's options (`sinks.settings_path`) takes a page
        filler = _fill(mnt, leave=(30_000 if fmt == "parquet" else 6000) + 4096)
        full = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
        assert full.returncode == 2
        one_sentence(full.stderr, f"cannot write {out}", "the disk is full", "rows written before are kept")
        kept = _rows(out, fmt) if out.exists() and (fmt != "csv" or out.stat().st_size) else []
        assert 0 < len(kept) < 40 and kept == [str(photos / n) for n in NAMES[:len(kept)]]

        filler.unlink()
        again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
        assert again.returncode == 0, again.stderr[-2000:]
        done = int(again.stderr.split(" already done")[0].rsplit(", ", 1)[1])
        assert len(kept) - 16 <= done <= len(kept)  # at most the batch torn by the full disk is redone
        assert _rows(out, fmt) == [str(photos / n) for n in NAMES]  # every row once, in input order


def test_a_permission_taken_away_mid_run_keeps_the_parts_before(monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture, tmp_path: Path,
                                                                photos: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    from dogbreed.inference import sinks

    monkeypatch.setattr(sinks, "PART_ROWS", 8)
    real, calls = pq.write_table, []

    def write_table(table, where, **kw) -> None:  # noqa: ANN001 - the third part meets a folder made read-only
        calls.append(where)
        if len(calls) >= 3:  # and it stays so: the close after the failure cannot write the rest either
            raise PermissionError(errno.EACCES, "Permission denied", str(where))
        real(table, where, **kw)

    monkeypatch.setattr(pq, "write_table", write_table)
    out = tmp_path / "r.parquet"
    code, err = run_main(monkeypatch, capsys, "predict", str(photos), "--out", str(out))
    assert code == 2
    one_sentence(err, f"cannot write {out / 'part-000002.parquet'}: permission denied", "resumes after them")
    assert len(list(out.glob("part-*.parquet"))) == 2
    monkeypatch.setattr(pq, "write_table", real)
    code, err = run_main(monkeypatch, capsys, "predict", str(photos), "--out", str(out))
    assert code == 0 and "40 inputs, 16 already done, 24 written" in err
    assert [str(p) for p in pq.read_table(out).column("path").to_pylist()] == [str(photos / n) for n in NAMES]


# ---------------------------------------------------------------------------------------------------------------
# The other outputs, with the OSError injected at the write call


def test_gallery_build_on_a_full_disk(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
                                      tmp_path: Path) -> None:
    data = make_folder_tree(tmp_path / "data", per_breed=2)
    fail_writes(monkeypatch, lambda p: p.name.startswith(".g."))
    code, err = run_main(monkeypatch, capsys, "gallery", "build", "--data", str(data), "--out",
                         str(tmp_path / "g.safetensors"))
    assert code == 2
    one_sentence(err, f"cannot write {tmp_path / 'g.safetensors'}: the disk is full (no space left on device)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # nothing half-written left


def test_export_on_a_read_only_file_system(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
                                           tmp_path: Path) -> None:
    import torch

    def export(*a, **k) -> None:  # noqa: ANN002, ANN003 - torch writes the .onnx file itself
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(torch.onnx, "export", export)
    out = tmp_path / "m.onnx"
    code, err = run_main(monkeypatch, capsys, "export", "default", "--out", str(out))
    assert code == 2
    one_sentence(err, f"cannot write {out}: the file system is read-only")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("what", "match"), [
    ("a checkpoint", lambda p: p.parent.name == "ckpt" and p.name.startswith(".last.")),
    ("the report", lambda p: p.name.startswith(".report.")),
])
def test_train_on_a_full_disk_keeps_what_it_can_resume(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
                                                        tmp_path: Path, what: str, match) -> None:  # noqa: ANN001
    data = make_folder_tree(tmp_path / "data", per_breed=4)
    hits = fail_writes(monkeypatch, match, errno.EDQUOT)
    code, err = run_main(monkeypatch, capsys, "train", "--preset", "gap", "--data", str(data), "--out",
                         str(tmp_path / "runs"), "--epochs", "2", "--set", "image_size=32", "--set", "batch_size=4",
                         "--set", "num_workers=0")
    assert code == 2 and hits, err
    one_sentence(err, "train: cannot write", "the disk quota is exceeded")
    assert str(hits[0].parent) in err


def test_feedback_on_a_full_disk_is_507_and_read_only_is_503(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                               default_predictor, chelsea_jpeg: bytes) -> None:  # noqa: ANN001
    from fastapi.testclient import TestClient

    from dogbreed.serve.app import create_app

    db = tmp_path / "fb" / "feedback.sqlite3"
    with TestClient(create_app(predictor=default_predictor, feedback_db=db)) as client:
        def send() -> object:
            return client.post("/v1/feedback", files={"file": ("cat.jpg", chelsea_jpeg, "image/jpeg")},
                               data={"breed": "Samoyed"})

        for code, status, says in ((errno.ENOSPC, 507, "feedback storage is full"),
                                   (errno.EDQUOT, 507, "feedback storage is full"),
                                   (errno.EROFS, 503, "cannot be stored right now")):
            with monkeypatch.context() as m:
                fail_writes(m, lambda p: "feedback-images" in str(p), code)
                r = send()
            assert r.status_code == status and says in r.json()["detail"], r.text
            assert "nothing was saved" in r.json()["detail"]
        import sqlite3

        with sqlite3.connect(db) as con:
            assert con.execute("SELECT COUNT(*) FROM feedback").fetchone() == (0,)  # no row without its photo
        assert send().status_code == 200  # space again: it works


def test_an_onnx_cache_that_cannot_be_written_still_predicts(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                             chelsea_jpeg: bytes) -> None:
    import torch

    from dogbreed.predict import Predictor

    monkeypatch.setenv("DOGBREED_CACHE", str(tmp_path / "cache"))

    def export(model, args, f, **k) -> None:  # noqa: ANN001
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch.onnx, "export", export)
    with pytest.warns(RuntimeWarning, match=r"cannot write .*\.onnx: the disk is full.*using PyTorch"):
        p = Predictor()
    assert p.predict([chelsea_jpeg])[0].verdict == "no_dog"
    assert not [f for f in (tmp_path / "cache" / "onnx").rglob("*") if f.is_file()]  # no half-written export
    shutil.rmtree(tmp_path / "cache", ignore_errors=True)


class _FullDisk:
    """A stdout on a full disk (`> /dev/full`): every write fails as the kernel's would."""

    encoding = "utf-8"

    def write(self, text: str) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    def flush(self) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")


def test_predict_where_nothing_can_be_written_is_one_sentence(monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture, tmp_path: Path,
                                                              photos: Path) -> None:
    """`--out` under a file, `--explain` into a folder that cannot be made, and stdout on a full disk were
    tracebacks (FileExistsError, FileNotFoundError, OSError)."""
    (tmp_path / "a_file").write_text("x")
    one = str(photos / NAMES[0])
    code, err = run_main(monkeypatch, capsys, "predict", one, "--out", str(tmp_path / "a_file" / "rows.csv"))
    assert code == 2
    one_sentence(err, "a_file/rows.csv", "a file stands where its folder would be")
    code, err = run_main(monkeypatch, capsys, "predict", one, "--explain", str(tmp_path / "a_file" / "maps"))
    assert code == 2
    one_sentence(err, "a_file/maps", "not a folder")
    monkeypatch.setattr(sys, "stdout", _FullDisk())
    code, err = run_main(monkeypatch, capsys, "predict", one, "--format", "json")
    assert code == 2
    one_sentence(err, "cannot write stdout: the disk is full")


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs Linux's /dev/full")
@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_stdout_on_a_full_disk_through_the_installed_command(tmp_path: Path, photos: Path, fmt: str) -> None:
    """Buffered, as a shell's stdout is, a full disk failed only at the final flush: csv ended with Python's
    "Exception ignored ... [Errno 28]" and exit 120, json with our sentence and then the same, exit 120."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"} | {"PYTHONPATH": SRC}
    code = "import sys; from dogbreed.cli import run; sys.argv = ['dogbreed', *sys.argv[1:]]; run()"
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-c", code, "predict", str(photos / NAMES[0]), "--format", fmt],
                              stdout=full, stderr=subprocess.PIPE, text=True, env=env, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    one_sentence(done.stderr, "cannot write stdout: the disk is full")
    assert "Exception ignored" not in done.stderr


def test_a_cache_that_cannot_be_written_still_gives_the_detector_its_sizes(monkeypatch: pytest.MonkeyPatch,
                                                                          tmp_path: Path,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    import onnx

    from dogbreed.inference import detect

    blocker = tmp_path / "a-file"
    blocker.write_text("the cache folder would be under this file")
    monkeypatch.setenv("DOGBREED_CACHE", str(blocker / "cache"))
    got = detect.sized_graph((256, 192))
    assert got.is_file() and not str(got).startswith(str(blocker))
    dims = onnx.load(str(got)).graph.input[0].type.tensor_type.shape.dim
    assert (dims[2].dim_value, dims[3].dim_value) == (192, 256)
    assert "resized graphs go to a temporary folder" in caplog.text


def test_outputs_that_are_folders_or_under_a_file_are_one_sentence(monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture, tmp_path: Path,
                                                                   chelsea_jpeg: bytes) -> None:
    """Found by QA: `export --out dir.onnx --overwrite` onto a folder (EISDIR), and `feedback export --out` a file,
    ended in tracebacks with exit code 1."""
    import hashlib

    from dogbreed.breeds import lookup
    from dogbreed.serve.feedback import FeedbackStore

    (tmp_path / "dir.onnx").mkdir()
    code, err = run_main(monkeypatch, capsys, "export", "default", "--out", str(tmp_path / "dir.onnx"), "--overwrite")
    assert code == 2
    one_sentence(err, f"cannot write {tmp_path / 'dir.onnx'}: a folder stands where the file would be")
    db = tmp_path / "fb.sqlite3"
    FeedbackStore(db).add(chelsea_jpeg, "JPEG", hashlib.sha256(chelsea_jpeg).hexdigest(), "x", lookup("Pug"))
    (tmp_path / "afile").write_text("x")
    code, err = run_main(monkeypatch, capsys, "feedback", "export", "--out", str(tmp_path / "afile"),
                         "--feedback-db", str(db))
    assert code == 2
    one_sentence(err, f"cannot write {tmp_path / 'afile'}: a part of the path is not a folder")
