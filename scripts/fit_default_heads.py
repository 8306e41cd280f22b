"""Fit what the package ships in src/dogbreed/data/: the dog detector and the adapted breed heads.

--part detector: dog_detector.{json,safetensors}, fitted on ../shared/data/real (dogs: the 2,400 photos of
  stanford-dogs' official test list (20 per breed, all 120), imagenet-val-dogs, dogs-any; not dogs: not-dogs/cat and
  not-dogs/other), with `fast`'s cascade (dogness.DEFAULT_CASCADE); only the small heads' weights and thresholds
  are written, never the photos. Cross-source figures for this recipe: bench/dog_or_not.py.
--part heads: breed_heads.{json,safetensors}. For each `best` backbone, all 120 rows of the ImageNet head's breed rows
  fitted with an L2 pull toward them (`adapt.cross_fit_blend`, `adapt.BlendConfig`) on all of stanford-dogs (14,400
  photos, 120 per breed, every breed alike) plus the natural photos of web-dogs and imagenet-val-dogs (each counting
  as 10 Stanford photos). 5 breed-stratified folds over the natural photos give every one of them out-of-fold logits:
  the figures printed and stored are out of fold, and the breed temperature and uncertain-breed threshold per
  quality mode are fitted on those out-of-fold logits. About 1 minute from a warm feature cache; from scratch the
  backbones' features of ~15,000 photos (plain + flip) take most of the time.
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

from dogbreed.adapt import BlendConfig, cross_fit_blend
from dogbreed.breeds import stanford_breeds
from dogbreed.calibration import combine, cross_fit, fit_temperature, head_logits, threshold_for_accuracy
from dogbreed.dogness import DEFAULT_NAME, fit_dog_detector
from dogbreed.features import extract
from dogbreed.fileio import atomic_write_bytes, atomic_write_text
from dogbreed.models import SHIPPED_HEADS, default_classifier
from dogbreed.predict import BEST_BACKBONES

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT / ".." / "shared" / "data" / "real"
DATA = ROOT / "src" / "dogbreed" / "data"
# Rule for the uncertain-breed threshold: the lowest calibrated top-1 probability at which the photos answered with
# a breed are at least this accurate (on the photos it is fitted on). 90%: a confident answer is wrong 1 time in 10.
CONFIDENT_ACCURACY = 0.9
VIEWS = ("plain", "flip")
NATURAL = ("web-dogs", "imagenet-val-dogs")
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


def stanford_and_natural(real: Path) -> tuple[tuple[list[str], np.ndarray], tuple[list[str], np.ndarray, list[str]]]:
    """(Stanford files, labels): all of stanford-dogs (train and test lists, 120 per breed); (natural files, labels,
    source): web-dogs and imagenet-val-dogs, photos no backbone trained on."""
    stanford = labelled(real / "stanford-dogs" / "Images")
    natural: tuple[list[str], list[int], list[str]] = ([], [], [])
    for src in NATURAL:
        fs, ys = labelled(real / src)
        natural[0].extend(fs)
        natural[1].extend(ys.tolist())
        natural[2].extend([src] * len(fs))
    return stanford, (natural[0], np.asarray(natural[1]), natural[2])


def oof_figures(logp: torch.Tensor, y: np.ndarray, source: list[str]) -> dict[str, dict[str, float]]:
    """Out-of-fold top-1 per natural source: plain and breed-balanced, with photo and breed counts."""
    from dogbreed.card import summary

    out = {}
    src = np.asarray(source)
    for name in (*NATURAL, "all"):
        m = np.ones(len(y), bool) if name == "all" else src == name
        s = summary(logp[torch.as_tensor(m)], y[m])
        out[name] = {k: s[k] for k in ("photos", "breeds", "top1", "macro_top1", "top5", "macro_top5")}
    return out


def fit_heads(real: Path, backbones: list[str], cfg: BlendConfig) -> None:
    from safetensors.torch import save

    (fs, ys), (fn, yn, source) = stanford_and_natural(real)
    tensors: dict[str, torch.Tensor] = {}
    oof: dict[str, np.ndarray] = {}
    per_backbone = {}
    for b in backbones:
        base = default_classifier(b)
        xs, xn = (extract(f, base, views=VIEWS, progress=True) for f in (fs, fn))
        assert xs.ok.all() and xn.ok.all(), "unreadable photos in ../shared/data/real"
        w0, b0 = base.breed_head.weight.detach(), base.breed_head.bias.detach()
        (w, bias), oof[b] = cross_fit_blend((xs.features, ys), (xn.features, yn), w0, b0, cfg)
        tensors.update({f"{b}.rows": torch.arange(len(w0), dtype=torch.int64), f"{b}.weight": w.contiguous(),
                        f"{b}.bias": bias.contiguous()})
        plain = oof_figures(combine(head_logits(xn.features, w0, b0, (0,))), yn, source)
        adapted = oof_figures(combine([torch.as_tensor(oof[b][:, 0])]), yn, source)
        per_backbone[b] = {"max_abs_weight_change": float((w - w0).abs().max()),
                           "plain_imagenet_head": plain, "adapted_out_of_fold": adapted}
        print(f"{b}: natural photos, plain view, ImageNet head -> adapted (out of fold): "
              + "; ".join(f"{k} {plain[k]['top1']:.1%}/{plain[k]['macro_top1']:.1%} -> "
                          f"{adapted[k]['top1']:.1%}/{adapted[k]['macro_top1']:.1%}" for k in plain))
    # Temperature and uncertain threshold per quality mode, on the out-of-fold logits of the natural photos.
    decision, report = {}, {}
    for mode, (members, views) in MODES.items():
        if not set(members) <= set(backbones):
            continue
        parts = [torch.as_tensor(oof[m][:, v]) for m in members for v in views]
        cf = cross_fit(parts, yn, k=5, target=CONFIDENT_ACCURACY)
        t = fit_temperature(parts, yn)
        lp = combine(parts, t)
        conf, pred = lp.exp().max(-1)
        th = threshold_for_accuracy(conf.numpy(), pred.numpy() == yn, CONFIDENT_ACCURACY)
        decision[mode] = {"temperature": round(t, 4), "uncertain_threshold": round(th, 4)}
        report[mode] = {"members": list(members), "views": [VIEWS[v] for v in views],
                        "accuracy_out_of_fold": oof_figures(lp, yn, source),
                        "calibration_out_of_fold": asdict(cf)}
        print(f"{mode}: T={t:.3f} threshold={th:.3f}; out of fold: {json.dumps(asdict(cf))}")
    meta = {
        "format": "dogbreed-breed-heads/2",
        "fitted_by": "scripts/fit_default_heads.py --part heads",
        "what": "each backbone's 120-row breed head, started from the ImageNet head's breed rows and fitted with an "
                "L2 pull toward them (adapt.fit_blend)",
        "fitted_on": {
            "stanford": {"data": "../shared/data/real/stanford-dogs (train and test lists)", "photos": len(fs),
                         "breeds": int(len(np.unique(ys))),
                         "note": "ImageNet *training* photos, published box-cropped and squashed to 224x224"},
            "natural": {"data": [f"../shared/data/real/{s}" for s in NATURAL], "photos": len(fn),
                        "breeds": int(len(np.unique(yn))),
                        "note": "photos no backbone trained on; every figure on them here is out of fold "
                                f"({cfg.folds} breed-stratified folds)"},
            "config": asdict(cfg), "views": list(VIEWS)},
        "backbones": per_backbone,
        "decision": decision,
        "calibration": {
            "data": "out-of-fold breed logits of the natural photos",
            "temperature": "fitted on all of them (minimum NLL, grid); figures are a second 5-fold cross-fit",
            "uncertain_threshold": f"lowest calibrated top-1 probability at which answered photos are >= "
                                   f"{CONFIDENT_ACCURACY:.0%} accurate (at least 20 photos kept)",
            "modes": report},
    }
    DATA.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(DATA / f"{SHIPPED_HEADS}.safetensors", save(tensors))
    atomic_write_text(DATA / f"{SHIPPED_HEADS}.json", json.dumps(meta, indent=1) + "\n")
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
        fit_heads(real, args.backbones, BlendConfig())
