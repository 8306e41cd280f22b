"""Fit the dog detector shipped in the package (src/dogbreed/data/dog_detector.{json,safetensors}).

Fitted on every photo in ../shared/data/real (dogs: stanford-subset, imagenet-val-dogs, dogs-any; not dogs:
not-dogs/cat and not-dogs/other); only the small head's weights and thresholds are written, never the photos.
Cross-source figures for this recipe come from bench/dog_or_not.py. Backbone outputs come from the feature cache
(scripts/warm_feature_cache.py). Run: python scripts/fit_default_heads.py [--backbones ...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dogbreed.dogness import DEFAULT_NAME, fit_dog_detector

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT / ".." / "shared" / "data" / "real"

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(REAL))
    ap.add_argument("--backbones", nargs="+",
                    default=["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"])
    ap.add_argument("--target-recall", type=float, default=0.99)
    ap.add_argument("--out", default=str(ROOT / "src" / "dogbreed" / "data" / DEFAULT_NAME))
    args = ap.parse_args()
    real = Path(args.data).resolve()
    dogs = sorted(str(p) for d in ("stanford-subset", "imagenet-val-dogs", "dogs-any")
                  for p in (real / d).rglob("*.jpg"))
    not_dogs = sorted(str(p) for p in (real / "not-dogs").rglob("*.jpg"))
    det = fit_dog_detector(dogs, not_dogs, backbones=args.backbones, target_recall=args.target_recall, progress=True)
    det.meta["fitted_on"] = "../shared/data/real (all sources), scripts/fit_default_heads.py"
    path = det.save(args.out)
    print(f"wrote {path} ({len(dogs)} dogs, {len(not_dogs)} not dogs)")
    print(json.dumps({k: round(v, 4) for k, v in det.thresholds.items()}, indent=1))
