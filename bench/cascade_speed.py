"""End-to-end time of `fast` over a folder of mixed photos, with and without the dog cascade.

The folder: N dogs, N cats and N other things drawn (seed 0) from ../shared/data/real (MANIFEST.tsv), predicted
through `Predictor.predict` (decode, preprocess, forward, decision) in batches of 16, warm (both predictors
loaded and run once first, so the cascade's Lite2 is loaded), alternating the two for --repeats rounds; the median
round is reported. Writes bench/results/cascade_speed.json.

Run: python bench/cascade_speed.py [--n 100] [--repeats 3]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from dogbreed.predict import Predictor

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT / ".." / "shared" / "data" / "real"


def mixed_folder(real: Path, n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    rows = list(csv.DictReader(open(real / "MANIFEST.tsv"), delimiter="\t"))
    kind = ["cat" if r["path"].startswith("not-dogs/cat/") else "other" if r["path"].startswith("not-dogs/")
            else "dog" for r in rows]
    rng = np.random.default_rng(seed)
    files, kinds = [], []
    for k in ("dog", "cat", "other"):
        idx = [i for i, x in enumerate(kind) if x == k]
        for i in rng.choice(idx, min(n, len(idx)), replace=False):
            files.append(str(real / rows[i]["path"]))
            kinds.append(k)
    order = rng.permutation(len(files))
    return [files[i] for i in order], [kinds[i] for i in order]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(REAL))
    ap.add_argument("--n", type=int, default=100, help="photos of each kind (dog, cat, other)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--detector", default="default", help="dog detector with a cascade (default: the shipped one)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "cascade_speed.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    files, kinds = mixed_folder(Path(args.data), args.n)
    preds = {"without cascade (before)": Predictor(dog_cascade=False, dog_detector=args.detector),
             "with cascade": Predictor(dog_detector=args.detector)}
    assert preds["with cascade"].dog_cascade, f"dog detector {args.detector} has no cascade"
    answers = {name: p.predict(files) for name, p in preds.items()}  # warm-up, and the answers compared below
    times: dict[str, list[float]] = {name: [] for name in preds}
    for _ in range(args.repeats):
        for name, p in preds.items():
            t = time.perf_counter()
            p.predict(files)
            times[name].append(time.perf_counter() - t)
    c = preds["with cascade"]
    # Which photos took the slow path: those whose first-stage (cascade off) probability lies in the band.
    lo, hi = c.detector.cascade.band
    first = np.array([a.dog_probability for a in answers["without cascade (before)"]])
    band = (first >= lo) & (first <= hi)
    kinds_a = np.array(kinds)
    med = {name: float(np.median(ts)) for name, ts in times.items()}
    res = {"photos": len(files), "per_kind": args.n, "repeats": args.repeats, "threads": args.threads,
           "cpu": platform.processor() or platform.machine(), "load_average_at_end": os.getloadavg()[0],
           "slow_path_share": {"all": float(band.mean()),
                               **{k: float(band[kinds_a == k].mean()) for k in ("dog", "cat", "other")}},
           "seconds_median": med, "ms_per_photo": {k: 1000 * v / len(files) for k, v in med.items()},
           "all_rounds_s": times, "ratio": med["with cascade"] / med["without cascade (before)"],
           "extra_ms_per_slow_photo": 1000 * (med["with cascade"] - med["without cascade (before)"])
           / max(1, int(band.sum())),
           "verdicts_changed": int(sum(a.verdict != b.verdict for a, b in
                                       zip(*answers.values(), strict=True)))}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
