"""The Ray Data engine on a local Ray instance: same rows as the single-process run."""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures import noise_image, write_jpeg

pytest.importorskip("ray")
pq = pytest.importorskip("pyarrow.parquet")


@pytest.mark.slow
def test_ray_rows_equal_single_process_rows(tmp_path: Path, chelsea_jpeg: bytes) -> None:
    import ray

    from dogbreed.batch import run_batch
    from dogbreed.batch_ray import run_ray
    from dogbreed.predict import Predictor

    d = tmp_path / "photos"
    for i in range(4):
        write_jpeg(d / f"n{i}.jpg", noise_image(120, 90, seed=i))
    (d / "cat.jpg").write_bytes(chelsea_jpeg)
    (d / "broken.jpg").write_bytes(b"not a jpeg")
    local = run_batch(Predictor(top_k=3), [d], tmp_path / "local.parquet", workers=0)
    # One small local Ray (2 CPUs, one actor) for the whole test: starting Ray is the slow part.
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        s = run_ray([d], tmp_path / "ray.parquet", {"model": "default", "top_k": 3}, actors=1, batch_size=4)
        again = run_ray([d], tmp_path / "ray.parquet", {"model": "default", "top_k": 3}, actors=1)
    finally:
        ray.shutdown()
    assert (s.total, s.written, s.errors) == (6, 6, 1) == (local.total, local.written, local.errors)
    assert again.skipped == 6 and again.written == 0  # a rerun skips what is done
    want = pq.read_table(tmp_path / "local.parquet").to_pylist()
    got = pq.read_table(tmp_path / "ray.parquet").to_pylist()
    assert len(got) == len(want) == 6
    by_path = {r["path"]: r for r in got}
    for w in want:
        g = by_path[w["path"]]
        assert {k: v for k, v in g.items() if not k.startswith(("probability", "dog_prob"))} == \
               {k: v for k, v in w.items() if not k.startswith(("probability", "dog_prob"))}
        for k in w:
            if k.startswith(("probability", "dog_prob")) and w[k] is not None:
                assert g[k] == pytest.approx(w[k], abs=1e-5)
