"""Where the prediction time goes: each exported graph's share, inside the pipeline, per photo.

    python bench/model_time.py [FOLDER] [--lanes N] [--out bench/results/model_time.json]

Runs `Predictor.iter_predict` (the default options: detection stage, lanes) over the photos of FOLDER (default
../shared/data/real/not-dogs/other, the everyday photos), once to warm up on the first 32 and once timed, with a
timer around every session run (`onnxrun.OnnxModel.run_numpy`). Prints images/s in-process (no process start) and,
per graph and input size: runs, rows, ms per photo and ms per row. With lanes, runs of two lanes overlap, so the
per-photo figures add up to more than the wall time: a run's ms per row against the same graph run alone (printed
beside it, 30 runs of its first batch) is what sharing the cores costs it.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

import dogbreed.onnxrun as onnxrun
from dogbreed.fileio import atomic_write_text
from dogbreed.predict import Predictor
from dogbreed.runtime import cpu_name

ROOT = Path(__file__).resolve().parents[1]
EVERYDAY = ROOT / ".." / "shared" / "data" / "real" / "not-dogs" / "other"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", type=Path, nargs="?", default=EVERYDAY)
    ap.add_argument("--lanes", type=int, default=None, help="default: one per physical core")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "model_time.json")
    a = ap.parse_args()
    files = sorted(str(p) for p in a.folder.rglob("*") if p.is_file())
    runs: dict[tuple[str, tuple[int, ...]], list[float]] = defaultdict(lambda: [0.0, 0, 0])
    first: dict[tuple[str, tuple[int, ...]], tuple[Any, np.ndarray]] = {}
    lock = threading.Lock()
    plain = onnxrun.OnnxModel.run_numpy

    def timed(self: onnxrun.OnnxModel, x: np.ndarray) -> list[np.ndarray]:
        t = time.perf_counter()
        out = plain(self, x)
        dt = time.perf_counter() - t
        key = (self.path.name, tuple(x.shape[2:]))
        with lock:
            r = runs[key]
            r[0] += dt
            r[1] += 1
            r[2] += len(x)
            if key not in first:  # copied once: a copy every run would slow the run being timed
                first[key] = (self, np.array(x))
        return out

    onnxrun.OnnxModel.run_numpy = timed  # type: ignore[method-assign]
    p = Predictor(lanes=a.lanes)
    list(p.iter_predict(files[:32]))
    runs.clear()
    t = time.perf_counter()
    preds = list(p.iter_predict(files))
    wall = time.perf_counter() - t
    onnxrun.OnnxModel.run_numpy = plain  # type: ignore[method-assign]
    n = len(files)
    res: dict[str, Any] = {"cpu": cpu_name(), "folder": str(a.folder), "photos": n, "errors": sum(
        q.error is not None for q in preds), "lanes": p.lanes_for(0, a.lanes),
        "precision": p.members[0].runner.precision, "wall_s": round(wall, 2),
        "images_per_s_in_process": round(n / wall, 1), "graphs": []}
    print(f"{n} photos in {wall:.2f} s: {n / wall:.1f} images/s in-process, {res['lanes']} lane(s), "
          f"{res['precision']}")
    for (name, size), (secs, calls, rows) in sorted(runs.items(), key=lambda kv: -kv[1][0]):
        model, x = first[(name, size)]
        plain(model, x)
        t = time.perf_counter()
        for _ in range(30):
            plain(model, x)
        alone = (time.perf_counter() - t) / 30 / len(x)
        row = {"graph": name, "input": list(size), "runs": calls, "rows": rows,
               "ms_per_photo": round(1000 * secs / n, 2), "ms_per_row": round(1000 * secs / rows, 2),
               "ms_per_row_alone": round(1000 * alone, 2)}
        res["graphs"].append(row)
        print(f"{name[:40]:40s} {'x'.join(map(str, size)):>8s}  {calls:5d} runs {rows:5d} rows  "
              f"{row['ms_per_photo']:6.2f} ms/photo  {row['ms_per_row']:6.2f} ms/row  "
              f"(alone {row['ms_per_row_alone']:.2f})")
    atomic_write_text(a.out, json.dumps(res, indent=1) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
