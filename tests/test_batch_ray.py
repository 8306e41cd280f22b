"""The Ray Data engine: the default CLI path on a local Ray gives the local engine's rows; planning and the stall
detector are checked without starting Ray."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from fixtures import noise_image, write_jpeg

ray = pytest.importorskip("ray")
pq = pytest.importorskip("pyarrow.parquet")


def _same_rows(got: list[dict], want: list[dict]) -> None:
    assert len(got) == len(want)
    by_path = {r["path"]: r for r in got}
    assert len(by_path) == len(got)  # no path twice
    for w in want:
        g = by_path[w["path"]]
        assert {k: v for k, v in g.items() if not k.startswith(("probability", "dog_prob"))} == \
               {k: v for k, v in w.items() if not k.startswith(("probability", "dog_prob"))}
        for k in w:
            if k.startswith(("probability", "dog_prob")) and w[k] is not None:
                assert g[k] == pytest.approx(w[k], abs=1e-5)


@pytest.mark.slow
def test_default_cli_ray_run_finishes_with_the_local_rows(tmp_path: Path, chelsea_jpeg: bytes) -> None:
    """`dogbreed predict DIR --engine ray --out x.parquet`, no other flag: it hung with one actor per CPU (issue
    23). 140 photos make three blocks, so the default plan (one actor per CPU: two here) runs several actors."""
    from dogbreed.batch import run_batch
    from dogbreed.predict import Predictor

    d = tmp_path / "photos"
    for i in range(138):
        write_jpeg(d / f"n{i:03d}.jpg", noise_image(64, 48, seed=i))
    (d / "cat.jpg").write_bytes(chelsea_jpeg)
    (d / "broken.jpg").write_bytes(b"not a jpeg")
    local = run_batch(Predictor(), [d], tmp_path / "local.parquet", workers=0)
    out = tmp_path / "ray.parquet"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in [str(Path(__file__).parents[1] / "src"),
                                                                   os.environ.get("PYTHONPATH", "")] if p)}
    cmd = [sys.executable, "-m", "dogbreed.cli", "predict", str(d), "--engine", "ray", "--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=420, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "140 inputs, 0 already done, 140 written (1 errors)" in r.stderr
    assert "ray: 140 rows in" in r.stderr  # the progress lines
    assert "Traceback" not in r.stderr
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert again.returncode == 0 and "140 already done, 0 written" in again.stderr  # a rerun skips what is done
    assert (local.total, local.errors) == (140, 1)
    _same_rows(pq.read_table(out).to_pylist(), pq.read_table(tmp_path / "local.parquet").to_pylist())


@pytest.mark.parametrize(("res", "actors", "cpus", "gpu", "want"), [
    ({"CPU": 2.0}, None, None, False, (2, 1.0)),
    ({"CPU": 1.0}, None, None, False, (1, 1.0)),
    ({"CPU": 64.0}, None, 4, False, (16, 4.0)),
    ({"CPU": 2.0}, 4, 0.5, False, (4, 0.5)),
    ({"CPU": 16.0, "GPU": 2.0}, None, None, True, (2, 1.0)),
])
def test_plan_actors_fits_the_cluster(monkeypatch: pytest.MonkeyPatch, res, actors, cpus, gpu, want) -> None:
    from dogbreed import batch_ray_watch as w

    monkeypatch.setattr(w.ray, "cluster_resources", lambda: res)
    assert w.plan_actors(actors, cpus, gpu) == want


@pytest.mark.parametrize(("res", "actors", "cpus", "gpu", "says"), [
    ({"CPU": 2.0}, 3, None, False, "--ray-actors 3 with 1 CPUs each needs 3 CPUs"),
    ({"CPU": 2.0}, None, 4, False, "one actor needs 4 CPUs and this Ray cluster has 2"),
    ({"CPU": 8.0}, None, None, True, "needs a GPU, and this Ray cluster has none"),
])
def test_plan_actors_refuses_what_cannot_be_scheduled(monkeypatch: pytest.MonkeyPatch, res, actors, cpus, gpu,
                                                       says) -> None:
    from dogbreed import batch_ray_watch as w

    monkeypatch.setattr(w.ray, "cluster_resources", lambda: res)
    with pytest.raises(w.RayScheduleError, match=says):
        w.plan_actors(actors, cpus, gpu)


def test_a_stalled_run_stops_with_what_ray_had_free(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from dogbreed import batch_ray_watch as w

    release = threading.Event()

    class Stuck:  # a dataset whose rows never come (as with the repartition deadlock)
        def iter_batches(self, *a, **k):  # noqa: ANN202
            release.wait(30)
            return iter(())

    monkeypatch.setattr(w, "POLL_S", 0.05)
    monkeypatch.setattr(w.ray, "available_resources", lambda: {"CPU": 0.0})
    monkeypatch.setattr(w.ray, "cluster_resources", lambda: {"CPU": 2.0})
    lines: list[str] = []
    try:
        with pytest.raises(w.RayScheduleError, match=r"no progress for 0 s \(0/10 rows written; free on the "
                                                     r"cluster: 0 CPU of 2 CPU\)"):
            w.watch_write(Stuck(), lambda rows: len(rows), 10, stall_s=0.3, say=lines.append)
    finally:
        release.set()


def test_split_blocks_keeps_order_and_every_path() -> None:
    from dogbreed.batch_ray_watch import split_blocks

    paths = [f"p{i}" for i in range(10)]
    blocks = split_blocks(paths, 3)
    assert [len(b) for b in blocks] == [4, 4, 2]
    assert [p for b in blocks for p in b.column("path").to_pylist()] == paths
