"""Fit what the package ships in src/dogbreed/data/: the dog detector and the adapted breed heads.

--part detector: dog_detector.{json,safetensors}, fitted on ../shared/data/real (dogs: the 2,400 photos of
  stanford-dogs' official test list (20 per breed, all 120), imagenet-val-dogs, dogs-any; not dogs: not-dogs/cat and
  not-dogs/other), with `fast`'s cascade (dogness.DEFAULT_CASCADE); only the small heads' weights and thresholds
  are written, never the photos. Cross-source figures for this recipe: bench/dog_or_not.py.
--part heads: breed_heads.{json,safetensors}. For each `best` backbone, the ImageNet head's breed rows adapted on ALL
  of stanford-subset (`adapt.adapt_features`, default AdaptConfig: only photographed breeds move, L2 pull toward the
  ImageNet rows); only the rows that changed are stored. Then, for the shipped heads, the breed temperature and the
  uncertain-breed threshold per quality mode, fitted on imagenet-val-dogs (the only honest breed set, so nothing else
  is fitted on it), with 5 breed-stratified folds reported out of fold before the final fit on all of it.
--part all (default): both.

Backbone outputs come from the feature cache (scripts/warm_feature_cache.py); nothing here re-runs a backbone when
the cache is warm. Run: python scripts/fit_default_heads.py [--part heads] [--backbones ...]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from dogbreed.adapt import AdaptConfig, adapt_features
from dogbreed.breeds import stanford_breeds
from dogbreed.calibration import combine, cross_fit, fit_temperature, head_logits, threshold_for_accuracy
from dogbreed.dogness import DEFAULT_NAME, fit_dog_detector
from dogbreed.features import extract
from dogbreed.models import SHIPPED_HEADS, default_classifier
from dogbreed.predict import BEST_BACKBONES

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT / ".." / "shared" / "data" / "real"
DATA = ROOT / "src" / "dogbreed" / "data"
# Rule for the uncertain-breed threshold: the lowest calibrated top-1 probability at which the photos answered with
# a breed are at least this accurate (on the photos it is fitted on). 90%: a confident answer is wrong 1 time in 10.
CONFIDENT_ACCURACY = 0.9
VIEWS = ("plain", "flip")
# Which member backbones and views each quality mode runs (must match Predictor: fast = Lite0 plain; best = all
# three with flip TTA).
MODES = {"fast": ((BEST_BACKBONES[0],), (0,)), "best": (tuple(BEST_BACKBONES), (0, 1))}


def labelled(folder: Path) -> tuple[list[str], np.ndarray]:
    w2i = {b.wnid: i for i, b in enumerate(stanford_breeds())}
    fs = sorted(str(p) for p in folder.rglob("*.jpg"))
    return fs, np.array([w2i[Path(f).parent.name.split("-")[0]] for f in fs])


def fit_detector(real: Path, backbones: list[str], target_recall: float, out: str) -> None:
    from dogbreed.data import _mat_file_list
    from dogbreed.dogness import DEFAULT_CASCADE

    # Stanford: the official test list only (2,400, every breed), so Stanford's 14,400 do not swamp the other dogs.
    stanford = [str(real / "stanford-dogs" / "Images" / f)
                for f in _mat_file_list(real / "stanford-dogs" / "lists" / "test_list.mat")]
    dogs = sorted(stanford + [str(p) for d in ("imagenet-val-dogs", "dogs-any") for p in (real / d).rglob("*.jpg")])
    not_dogs = sorted(str(p) for p in (real / "not-dogs").rglob("*.jpg"))
    det = fit_dog_detector(dogs, not_dogs, backbones=backbones, target_recall=target_recall, progress=True)
    if {DEFAULT_CASCADE.first, *DEFAULT_CASCADE.extra_backbones()} <= set(det.heads):
        det.cascade = DEFAULT_CASCADE
    det.meta["fitted_on"] = ("../shared/data/real: stanford-dogs test list, imagenet-val-dogs, dogs-any vs not-dogs; "
                             "scripts/fit_default_heads.py --part detector")
    path = det.save(out)
    print(f"wrote {path} ({len(dogs)} dogs, {len(not_dogs)} not dogs)")
    print(json.dumps({k: round(v, 4) for k, v in det.thresholds.items()}, indent=1))


def fit_heads(real: Path, backbones: list[str]) -> None:
    from safetensors.torch import save

    names = [b.name for b in stanford_breeds()]
    fs, ys = labelled(real / "stanford-subset")
    fv, yv = labelled(real / "imagenet-val-dogs")
    cfg = AdaptConfig()
    tensors: dict[str, torch.Tensor] = {}
    heads: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    per_backbone = {}
    for b in backbones:
        base = default_classifier(b)
        ex = extract(fs, base, views=VIEWS, progress=True)
        assert ex.ok.all(), "unreadable stanford-subset photos"
        clf = adapt_features(ex.features, ys, base, cfg)
        w, bias = clf.breed_head.weight.detach(), clf.breed_head.bias.detach()
        w0, b0 = base.breed_head.weight.detach(), base.breed_head.bias.detach()
        rows = torch.nonzero((w != w0).any(1) | (bias != b0)).flatten()
        tensors.update({f"{b}.rows": rows.to(torch.int64), f"{b}.weight": w[rows].contiguous(),
                        f"{b}.bias": bias[rows].contiguous()})
        heads[b] = (w, bias)
        per_backbone[b] = {"rows_changed": len(rows), "max_abs_weight_change": float((w - w0).abs().max())}
        print(f"{b}: {len(rows)} rows changed")
    # Calibration and threshold per quality mode, on imagenet-val-dogs with the shipped heads.
    decision, report = {}, {}
    val = {b: extract(fv, default_classifier(b), views=VIEWS).features for b in backbones}
    for mode, (members, views) in MODES.items():
        if not set(members) <= set(backbones):
            continue
        parts = [p for m in members for p in head_logits(val[m], *heads[m], views)]
        cf = cross_fit(parts, yv, k=5, target=CONFIDENT_ACCURACY)
        t = fit_temperature(parts, yv)
        lp = combine(parts, t)
        conf, pred = lp.exp().max(-1)
        th = threshold_for_accuracy(conf.numpy(), pred.numpy() == yv, CONFIDENT_ACCURACY)
        decision[mode] = {"temperature": round(t, 4), "uncertain_threshold": round(th, 4)}
        report[mode] = {"members": list(members), "views": [VIEWS[v] for v in views],
                        "out_of_fold": {k: v for k, v in asdict(cf).items()}}
        print(f"{mode}: T={t:.3f} threshold={th:.3f}; out of fold: {json.dumps(asdict(cf))}")
    counts = {names[c]: int((ys == c).sum()) for c in np.unique(ys)}
    meta = {
        "format": "dogbreed-breed-heads/1",
        "fitted_by": "scripts/fit_default_heads.py --part heads",
        "what": "rows of each backbone's ImageNet breed head that were adapted; all other rows are the ImageNet "
                "head's, unchanged",
        "adapted_on": {"data": "../shared/data/real/stanford-subset (Stanford Dogs Images/ layout)",
                       "note": "these are ImageNet *training* photos (the backbones saw them in pre-training); "
                               "no imagenet-val-dogs photo was used to fit the heads",
                       "photos": len(fs), "breeds": len(counts), "photos_per_breed": counts,
                       # Features come from the whole photo: stanford-subset ships no Annotation/ boxes.
                       "adapt_config": asdict(cfg), "box_crop_used": False},
        "backbones": per_backbone,
        "decision": decision,
        "calibration": {
            "data": "../shared/data/real/imagenet-val-dogs (ImageNet validation photos)", "photos": len(fv),
            "breeds": int(len(np.unique(yv))),
            "temperature": "fitted on all photos (minimum NLL, grid); figures below are 5 breed-stratified folds, "
                           "out of fold",
            "uncertain_threshold": f"lowest calibrated top-1 probability at which answered photos are >= "
                                   f"{CONFIDENT_ACCURACY:.0%} accurate (at least 20 photos kept); fitted on all "
                                   "photos, figures out of fold",
            "modes": report},
    }
    DATA.mkdir(parents=True, exist_ok=True)
    (DATA / f"{SHIPPED_HEADS}.safetensors").write_bytes(save(tensors))
    (DATA / f"{SHIPPED_HEADS}.json").write_text(json.dumps(meta, indent=1) + "\n")
    size = (DATA / f"{SHIPPED_HEADS}.safetensors").stat().st_size
    print(f"wrote {DATA / SHIPPED_HEADS}.{{json,safetensors}} ({size / 1024:.0f} KiB)")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--part", choices=("detector", "heads", "all"), default="all")
    ap.add_argument("--data", default=str(REAL))
    ap.add_argument("--backbones", nargs="+", default=list(BEST_BACKBONES))
    ap.add_argument("--target-recall", type=float, default=0.99, help="dog detector: share of dogs kept")
    ap.add_argument("--out", default=str(DATA / DEFAULT_NAME), help="dog detector: where to write it")
    args = ap.parse_args()
    torch.set_num_threads(2)
    real = Path(args.data).resolve()
    if args.part in ("detector", "all"):
        fit_detector(real, args.backbones, args.target_recall, args.out)
    if args.part in ("heads", "all"):
        fit_heads(real, args.backbones)
