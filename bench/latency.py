"""In-process latency: one 500x375 JPEG, from bytes to answer, warm (the project's fixed meaning of latency).

    python bench/latency.py [--calls 60] [--photo PATH] [--every-crop]

Runs `Predictor.predict([jpeg_bytes])` for the default options and for `find_dogs=False` (the whole photo only),
alternating call by call so both see the same machine load; prints p50/p90 per setting and writes
bench/results/latency.json. ``--every-crop`` adds the default options with every candidate's crop run (none
deferred, `dogs.deferred_crops`; none taken as the whole photo's, `regions.WHOLE_VIEW`): how it ran before those.
The photo: a real dog photo (../shared/data/real/imagenet-val-dogs) resized to 500x375 and re-encoded as a JPEG
(quality 90) in memory; nothing is written into the project but the JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

from PIL import Image

import dogbreed.predict as predict_module
from dogbreed.fileio import atomic_write_text
from dogbreed.predict import Predictor
from dogbreed.runtime import cpu_name

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT / ".." / "shared" / "data" / "real" / "imagenet-val-dogs" / "n02111889-Samoyed" / \
    "ILSVRC2012_val_00003808.jpg"


def jpeg_500x375(path: Path) -> bytes:
    buf = io.BytesIO()
    Image.open(path).convert("RGB").resize((500, 375), Image.Resampling.BICUBIC).save(buf, "JPEG", quality=90)
    return buf.getvalue()


@contextlib.contextmanager
def every_crop(on: bool) -> Iterator[None]:
    """While on, the predictor runs every candidate's crop (none deferred, none taken as the whole photo's)."""
    saved = predict_module.deferred_crops, predict_module.shows_whole_photo
    if on:
        predict_module.deferred_crops = lambda regions: []  # type: ignore[assignment]
        predict_module.shows_whole_photo = lambda region, whole: False  # type: ignore[assignment]
    try:
        yield
    finally:
        predict_module.deferred_crops, predict_module.shows_whole_photo = saved


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=60)
    ap.add_argument("--photo", type=Path, default=PHOTO)
    ap.add_argument("--every-crop", action="store_true", help="also time the default with every crop run")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "latency.json")
    a = ap.parse_args()
    data = jpeg_500x375(a.photo)
    preds = {"default (detection stage)": Predictor(), "--whole-photo": Predictor(find_dogs=False)}
    if a.every_crop:
        preds["default, every crop run"] = Predictor()
    times: dict[str, list[float]] = {k: [] for k in preds}
    for _ in range(3):  # warm: sessions open, the cascade's member loaded if the photo needs it
        for name, p in preds.items():
            with every_crop(name.endswith("every crop run")):
                p.predict([data])
    for _ in range(a.calls):
        for name, p in preds.items():
            with every_crop(name.endswith("every crop run")):
                t = time.perf_counter()
                p.predict([data])
                times[name].append((time.perf_counter() - t) * 1000)
    res = {"photo": str(a.photo.name), "size": "500x375", "calls": a.calls, "cpu": cpu_name(),
           "loadavg": os.getloadavg(), "precision": preds["--whole-photo"].members[0].runner.precision, "ms": {}}
    for name, ts in times.items():
        q = statistics.quantiles(ts, n=10)
        res["ms"][name] = {"p50": round(statistics.median(ts), 2), "p90": round(q[8], 2)}
        print(f"{name:28s} p50 {statistics.median(ts):6.1f} ms   p90 {q[8]:6.1f} ms   ({a.calls} calls)")
    print(f"load average {res['loadavg']}")
    atomic_write_text(a.out, json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
