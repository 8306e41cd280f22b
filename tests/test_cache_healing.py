"""Damaged caches heal themselves (issue 23): a truncated ONNX export, OpenVINO blob or feature file costs one
rebuild and one line, and the next run uses the cache again; a cache that cannot be written is gone without."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fixtures import noise_image, write_jpeg

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _truncate(f: Path, size: int = 1024) -> None:
    with open(f, "r+b") as fh:
        fh.truncate(size)


@pytest.fixture
def warm_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _temporary_cache: Path,
               default_predictor) -> Path:  # noqa: ANN001 - the fixture only makes sure the export exists
    """A private copy of the session cache's ONNX exports (the default model's is there), as the only cache."""
    cache = tmp_path / "cache"
    shutil.copytree(_temporary_cache / "onnx", cache / "onnx")
    monkeypatch.setenv("DOGBREED_CACHE", str(cache))
    return cache


def _messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "dogbreed"]


def test_a_truncated_onnx_export_is_rebuilt_once(warm_cache: Path, caplog: pytest.LogCaptureFixture,
                                                 chelsea_jpeg: bytes) -> None:
    from dogbreed.onnxrun import CachedDefaultModel
    from dogbreed.predict import Predictor

    # fp32: ONNX Runtime reads the export itself (bf16 runs OpenVINO's compiled blob, healed by the test below).
    first = Predictor(precision="fp32")
    want = first.predict([chelsea_jpeg])[0].to_dict()
    # The exports this prediction reads (the session cache may hold others, e.g. the cascade's, left unread here).
    onnx = sorted({Path(first.members[0].model.path)} | {Path(r.session.path) for r, _ in
                                                         first.loaded.cascade._members.values() if r.session})
    assert onnx
    for f in onnx:
        _truncate(f)
    caplog.set_level(logging.WARNING, logger="dogbreed")
    p = Predictor(precision="fp32")
    got = p.predict([chelsea_jpeg])[0].to_dict()
    said = _messages(caplog)
    assert len(said) == 1 and "could not be loaded" in said[0] and "exported it again" in said[0], said
    assert got["verdict"] == want["verdict"] and got["breeds"][0]["wnid"] == want["breeds"][0]["wnid"]
    assert got["dog_probability"] == pytest.approx(want["dog_probability"], abs=1e-5)
    rebuilt = {f: f.stat().st_mtime_ns for f in onnx}
    assert all(f.stat().st_size > 100_000 for f in rebuilt)
    caplog.clear()
    again = Predictor(precision="fp32")  # the next run: from the cache, no PyTorch model built, nothing written
    assert isinstance(again.members[0].model, CachedDefaultModel)
    assert {f: f.stat().st_mtime_ns for f in onnx} == rebuilt
    assert _messages(caplog) == []


def test_a_truncated_openvino_blob_is_compiled_again_once(warm_cache: Path, monkeypatch: pytest.MonkeyPatch,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("openvino")
    from dogbreed import onnxrun

    monkeypatch.setattr(onnxrun, "native_bf16", lambda: True)  # OpenVINO's cache works the same without it
    onnx = sorted((warm_cache / "onnx").glob("*-224-*.onnx"))[0]

    def open_fresh() -> onnxrun.OnnxModel:  # as a new process would: no compiled model held in memory
        onnxrun._compiled_models.clear()
        onnxrun._openvino_core.cache_clear()
        return onnxrun.OnnxModel(onnx, precision="bf16")

    x = np.zeros((1, 3, 224, 224), np.float32)
    want = open_fresh().run_numpy(x)[0]
    (blob,) = (warm_cache / "openvino").glob("*.blob")
    _truncate(blob)
    caplog.set_level(logging.WARNING, logger="dogbreed")
    np.testing.assert_allclose(open_fresh().run_numpy(x)[0], want, atol=1e-4)
    said = _messages(caplog)
    assert len(said) == 1 and "compiled it again" in said[0], said
    assert blob.stat().st_size > 100_000
    stat = blob.stat().st_mtime_ns
    caplog.clear()
    open_fresh()
    assert blob.stat().st_mtime_ns == stat and _messages(caplog) == []
    onnxrun._compiled_models.clear()
    onnxrun._openvino_core.cache_clear()


@pytest.fixture(scope="module")
def lite0():  # noqa: ANN201
    from dogbreed.models import default_classifier

    return default_classifier("efficientnet_lite0")


def test_a_truncated_feature_file_is_recomputed_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lite0,
                                                     caplog: pytest.LogCaptureFixture) -> None:  # noqa: ANN001
    from dogbreed import features

    monkeypatch.setenv("DOGBREED_CACHE", str(tmp_path / "cache"))
    files = [str(write_jpeg(tmp_path / f"{i}.jpg", noise_image(80, 60, seed=i))) for i in range(3)]
    first = features.extract(files, lite0, runtime="torch", num_workers=0)
    entries = sorted((tmp_path / "cache" / "features").rglob("*.npz"))
    assert len(entries) == 3
    _truncate(entries[1])
    caplog.set_level(logging.WARNING, logger="dogbreed")
    second = features.extract(files, lite0, runtime="torch", num_workers=0)
    np.testing.assert_allclose(second.features, first.features, atol=1e-5)
    said = _messages(caplog)
    assert len(said) == 1 and "damaged entries" in said[0] and entries[1].name in said[0], said
    assert entries[1].stat().st_size > 1024

    def no_model(*a, **k):  # noqa: ANN002, ANN003, ANN202 - the third run must read everything from the cache
        raise AssertionError("the model ran: the cache was not used")

    monkeypatch.setattr(features, "create_runner", no_model)
    np.testing.assert_allclose(features.extract(files, lite0, runtime="torch", num_workers=0).features,
                               first.features, atol=1e-5)


def test_a_feature_cache_that_cannot_be_written_is_skipped_in_one_line(tmp_path: Path, lite0,  # noqa: ANN001
                                                                       monkeypatch: pytest.MonkeyPatch,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    from dogbreed import features

    monkeypatch.setenv("DOGBREED_CACHE", str(tmp_path / "cache"))
    files = [str(write_jpeg(tmp_path / f"{i}.jpg", noise_image(80, 60, seed=i))) for i in range(3)]
    calls = []

    def full(*a, **k) -> None:  # noqa: ANN002, ANN003
        calls.append(1)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(features.np, "savez", full)
    caplog.set_level(logging.WARNING, logger="dogbreed")
    got = features.extract(files, lite0, runtime="torch", num_workers=0)
    assert got.ok.all() and len(calls) == 1  # one failed write, then no more tries
    said = _messages(caplog)
    assert len(said) == 1 and "going on without it" in said[0] and "the disk is full" in said[0], said
    assert not list((tmp_path / "cache").rglob("*.npz")) and not list((tmp_path / "cache").rglob("*.tmp*"))


@pytest.mark.slow
def test_two_processes_rebuilding_at_once_leave_a_whole_export(warm_cache: Path, chelsea_jpeg: bytes) -> None:
    for f in (warm_cache / "onnx").glob("*.onnx"):
        _truncate(f)
    photo = warm_cache.parent / "cat.jpg"
    photo.write_bytes(chelsea_jpeg)
    code = ("import sys; from dogbreed.predict import Predictor; "  # fp32: ONNX Runtime reads the export itself
            "print(Predictor(precision='fp32').predict([sys.argv[1]])[0].breeds[0].wnid)")
    env = {**os.environ, "PYTHONPATH": SRC}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(photo)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    assert outs[0][0] == outs[1][0]
    # At least one rebuilds (the other may find the first's whole file already in place); neither falls back.
    assert any("exported it again" in o[1] for o in outs) and not any("using PyTorch" in o[1] for o in outs)
    third = subprocess.run([sys.executable, "-c", code, str(photo)], env=env, capture_output=True, text=True,
                           timeout=300)
    assert third.returncode == 0 and third.stdout == outs[0][0]
    assert "dogbreed:" not in third.stderr  # the cache loads: nothing rebuilt, nothing said
    assert not list((warm_cache / "onnx").glob(".*tmp*"))
