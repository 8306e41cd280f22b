"""Extract and cache backbone outputs (plain + flipped view) for every photo in ../shared/data/real.

Benchmarks and fitting scripts then read features from the cache in seconds. Run: python scripts/warm_feature_cache.py
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from dogbreed.features import extract
from dogbreed.models import default_classifier

REAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real"

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--backbones", nargs="+",
                    default=["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"])
    ap.add_argument("--data", default=str(REAL))
    args = ap.parse_args()
    files = sorted(str(p) for p in Path(args.data).rglob("*.jpg"))
    for name in args.backbones:
        t = time.time()
        clf = default_classifier(name)
        ex = extract(files, clf, views=("plain", "flip"), progress=True)
        print(f"{name}: {int(ex.ok.sum())}/{len(files)} images in {time.time() - t:.0f}s")
