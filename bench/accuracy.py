"""Breed accuracy on photos no backbone has trained on (imagenet-val-dogs), for backbones, modes and head variants.

Everything chosen here (member set, averaging, adapt's l2/rows, add-breed's win rate) is chosen on stanford-subset
(ImageNet *training* photos) and only then scored on imagenet-val-dogs, which nothing is fitted on.
Features come from the on-disk cache (scripts/warm_feature_cache.py); images/s is measured end to end through
`Predictor` on a subset. Run: python bench/accuracy.py [--no-speed]  ->  bench/results/accuracy.json + Markdown.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dogbreed.adapt import AdaptConfig, AddBreedConfig, adapt_features, add_breed_features, drop_class
from dogbreed.breeds import stanford_breeds
from dogbreed.features import extract
from dogbreed.models import default_classifier
from dogbreed.predict import BEST_BACKBONES, Predictor

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT / ".." / "shared" / "data" / "real"
VAL, STAN = "imagenet-val-dogs", "stanford-subset/Images"
BACKBONES = list(BEST_BACKBONES)
SHORT = {b: b.replace("efficientnet_", "") for b in BACKBONES}


def wilson(k: float, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (max(0.0, c - h), min(1.0, c + h))


def paired_bootstrap(a: np.ndarray, b: np.ndarray, n: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% interval of mean(a) - mean(b) over photos resampled together (a, b: per-photo 0/1 hits)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), (n, len(a)))
    d = a[idx].mean(1) - b[idx].mean(1)
    return float(np.percentile(d, 2.5)), float(np.percentile(d, 97.5))


def files(sub: str) -> tuple[list[str], np.ndarray]:
    w2i = {b.wnid: i for i, b in enumerate(stanford_breeds())}
    fs = sorted(str(p) for p in (REAL / sub).rglob("*.jpg"))
    return fs, np.array([w2i[Path(f).parent.name.split("-")[0]] for f in fs])


def stratified_holdout(y: np.ndarray, frac: float = 0.2, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    te = np.zeros(len(y), bool)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        te[idx[:max(1, round(frac * len(idx)))]] = True
    return te


def scores(logits: torch.Tensor, y: np.ndarray, names: list[str] | None = None) -> dict[str, Any]:
    """logits (N, C) -> top-1/top-5 with Wilson intervals and per-breed recall."""
    top = logits.topk(5, -1).indices.numpy()
    hit1 = top[:, 0] == y
    hit5 = (top == y[:, None]).any(1)
    out: dict[str, Any] = {"n": len(y), "top1": float(hit1.mean()), "top1_ci": wilson(hit1.sum(), len(y)),
                           "top5": float(hit5.mean()), "hits": hit1}
    if names is not None:
        out["per_breed_recall"] = {names[c]: float(hit1[y == c].mean()) for c in np.unique(y)}
    return out


def logp(lg: np.ndarray | torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(lg).float().log_softmax(-1)


def head_logits(clf: Any, feats: np.ndarray, views: tuple[int, ...]) -> torch.Tensor:
    """Mean over views of the head's log-probabilities (same rule as Predictor.combine_breeds)."""
    w, b = clf.breed_head.weight.detach(), clf.breed_head.bias.detach()
    f = torch.as_tensor(feats)
    return torch.stack([logp(f[:, v] @ w.T + b) for v in views]).mean(0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--no-speed", action="store_true")
    ap.add_argument("--speed-n", type=int, default=64)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "accuracy.json"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    names = [b.name for b in stanford_breeds()]
    fv, yv = files(VAL)
    fs, ys = files(STAN)
    clfs = {b: default_classifier(b) for b in BACKBONES}
    ex = {(b, s): extract(f, clfs[b], views=("plain", "flip"))
          for b in BACKBONES for s, f in (("val", fv), ("stan", fs))}
    for k, e in ex.items():
        assert e.ok.all(), f"unreadable photos in {k}"
    res: dict[str, Any] = {"photos": {"imagenet-val-dogs": len(fv), "stanford-subset": len(fs)}, "rows": []}
    rows = res["rows"]

    def add(group: str, name: str, lg_val: torch.Tensor, lg_stan: torch.Tensor | None = None, **kw: Any) -> dict:
        s = scores(lg_val, yv, names)
        row = {"group": group, "name": name, **{k: v for k, v in s.items() if k != "hits"}, **kw}
        if lg_stan is not None:
            row["stanford_top1"] = float((lg_stan.argmax(1).numpy() == ys).mean())
        row["_hits"] = s["hits"]
        rows.append(row)
        return row

    # 1. Zero training: every member set x views x averaging rule. The choice for `best` uses the stanford column.
    def combo(split: str, members: tuple[str, ...], views: tuple[int, ...], how: str) -> torch.Tensor:
        parts = []
        for b in members:
            for v in views:
                lg = torch.as_tensor(ex[(b, split)].breed_logits[:, v])
                parts.append(lg if how == "logit" else logp(lg) if how == "logp" else lg.softmax(-1))
        return sum(parts) / len(parts)

    for k in (1, 2, 3):
        for members in itertools.combinations(BACKBONES, k):
            for views in ((0,), (0, 1)):
                for how in (("logit",) if k == 1 else ("logit", "logp", "prob")):
                    nm = "+".join(SHORT[b] for b in members) + (" +flip" if len(views) == 2 else "") + \
                        ("" if k == 1 else f" ({how})")
                    add("zero-training", nm, combo("val", members, views, how), combo("stan", members, views, how))
    # Ties go to log-prob averaging, the rule Predictor.combine_breeds uses.
    stan_rank = sorted((r for r in rows if r["group"] == "zero-training"),
                       key=lambda r: (-r["stanford_top1"], "(logp)" not in r["name"]))
    res["best_choice_on_stanford"] = stan_rank[0]["name"]

    # 2. Head variants, fitted on stanford-subset only (all 2,410 photos, plain+flip views); scored on val.
    base = {b: clfs[b] for b in BACKBONES}
    heads: dict[str, dict[str, Any]] = {}
    for b in BACKBONES:
        fst = ex[(b, "stan")].features
        t = time.time()
        heads[b] = {"imagenet": base[b],
                    "adapted": adapt_features(fst, ys, base[b], AdaptConfig()),
                    "zero-init": adapt_features(fst, ys, base[b], AdaptConfig(rows="seen"), init="zero")}
        fit_s = time.time() - t
        for hv, clf in heads[b].items():
            for views in ((0,), (0, 1)):
                add("head", f"{SHORT[b]} {hv}" + (" +flip" if len(views) == 2 else ""),
                    head_logits(clf, ex[(b, "val")].features, views), fit_s=round(fit_s, 1) if hv != "imagenet" else 0)
    # Context for the from-zero head: it can only ever name the 22 photographed breeds, and imagenet-val-dogs holds
    # only those, so compare it with the ImageNet head restricted to the same 22 classes.
    seen22 = torch.zeros(len(names), dtype=torch.bool)
    seen22[np.unique(ys)] = True
    for b in BACKBONES:
        lg = head_logits(base[b], ex[(b, "val")].features, (0, 1)).masked_fill(~seen22, -1e9)
        add("head", f"{SHORT[b]} imagenet restricted to the 22 fitted breeds +flip", lg)
    for hv in ("imagenet", "adapted"):
        lg = torch.stack([head_logits(heads[b][hv], ex[(b, "val")].features, (0, 1)) for b in BACKBONES]).mean(0)
        add("head", f"lite0+lite1+lite2 {hv} +flip", lg)
    # Paired differences (same photos): adapted vs ImageNet head, and vs from-zero.
    by = {r["name"]: r for r in rows}
    res["paired"] = {}
    for a, b in (("lite0 adapted +flip", "lite0 imagenet +flip"), ("lite0 adapted +flip", "lite0 zero-init +flip"),
                 ("lite0+lite1+lite2 adapted +flip", "lite0+lite1+lite2 imagenet +flip")):
        ha, hb = by[a]["_hits"].astype(float), by[b]["_hits"].astype(float)
        res["paired"][f"{a} - {b}"] = {"diff": float((ha - hb).mean()), "ci95": paired_bootstrap(ha, hb)}

    # 3. Breeds the head was not adapted to: fit on the 11 stanford breeds that are NOT in imagenet-val-dogs, score
    # on imagenet-val-dogs (all its breeds are then unadapted).
    val_breeds = set(yv.tolist())
    other = ~np.isin(ys, list(val_breeds))
    for b in BACKBONES:
        clf = adapt_features(ex[(b, "stan")].features[other], ys[other], base[b], AdaptConfig())
        r = add("unadapted-breeds", f"{SHORT[b]} adapted on 11 other breeds +flip",
                head_logits(clf, ex[(b, "val")].features, (0, 1)))
        ref = by[f"{SHORT[b]} imagenet +flip"]
        r["vs_imagenet_head"] = {"diff": r["top1"] - ref["top1"],
                                 "ci95": paired_bootstrap(r["_hits"].astype(float), ref["_hits"].astype(float))}

    # 4. New breeds: each of the 11 val breeds in turn is dropped from the head and re-added from k stanford photos.
    # Recall is measured on its 25 imagenet-val-dogs photos; "others" on the other 250 val photos, against the
    # 119-class head before adding (so it isolates what the new class steals). Flattering: the backbone learnt
    # these breeds from ImageNet.
    nb: dict[str, Any] = {}
    b0 = "efficientnet_lite0"
    fstan, fval = ex[(b0, "stan")].features, ex[(b0, "val")].features
    for k in (5, 10, 20, 50):
        rec, d_others, n_others = [], [], 0
        for c in sorted(val_breeds):
            wn = stanford_breeds()[c].wnid
            small = drop_class(base[b0], wn)
            idx = np.flatnonzero(ys == c)
            np.random.default_rng(c).shuffle(idx)
            grown = add_breed_features(small, "New breed", fstan[idx[:k]], AddBreedConfig())
            pg = head_logits(grown, fval, (0,)).argmax(1).numpy()
            ps = head_logits(small, fval, (0,)).argmax(1).numpy()
            m = {bb.wnid: i for i, bb in enumerate(small.classes)}
            own = yv == c
            rec.append(float((pg[own] == len(small.classes)).mean()))
            yo = np.array([m[stanford_breeds()[t].wnid] for t in yv[~own]])
            d_others.append(float((pg[~own] == yo).mean() - (ps[~own] == yo).mean()))
            n_others += int((~own).sum())
        hits = round(np.mean(rec) * 25 * len(rec))
        nb[str(k)] = {"recall": float(np.mean(rec)), "recall_ci": wilson(hits, 25 * len(rec)),
                      "recall_min_breed": float(np.min(rec)), "others_change_pts": 100 * float(np.mean(d_others)),
                      "others_worst_pts": 100 * float(np.min(d_others)), "breeds": len(rec),
                      "val_photos_new": 25 * len(rec), "val_photos_others_per_breed": n_others // len(rec)}
    res["new_breed"] = nb

    # 5. Speed, end to end (decode -> preprocess -> model(s) -> Prediction) through Predictor.
    if not args.no_speed:
        sub = fv[:: max(1, len(fv) // args.speed_n)][: args.speed_n]
        res["speed"] = []
        for runtime in ("onnx", "torch"):
            for quality in ("fast", "best"):
                p = Predictor(quality=quality, runtime=runtime, batch_size=16)
                p.predict(sub[:4])  # warm-up (ONNX export is cached on disk, sessions built here)
                t = time.perf_counter()
                preds = p.predict(sub)
                dt = time.perf_counter() - t
                acc = float(np.mean([pr.breeds[0].wnid == Path(f).parent.name.split("-")[0]
                                     for pr, f in zip(preds, sub, strict=True)]))
                res["speed"].append({"runtime": runtime, "quality": quality, "photos": len(sub),
                                     "seconds": round(dt, 2), "images_per_s": round(len(sub) / dt, 1),
                                     "top1_on_subset": acc, "threads": torch.get_num_threads(),
                                     "cpus": os.cpu_count()})
    for r in rows:
        r.pop("_hits")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1, default=float))
    print(markdown(res))


def markdown(res: dict[str, Any]) -> str:
    n = res["photos"]["imagenet-val-dogs"]
    out = [f"## Breed accuracy on imagenet-val-dogs ({n} photos, 11 breeds; nothing fitted or chosen on them)", "",
           "| group | variant | top-1 | 95% CI (Wilson) | top-5 | stanford top-1 (selection) |",
           "|---|---|---|---|---|---|"]
    for r in res["rows"]:
        lo, hi = r["top1_ci"]
        st = f"{r['stanford_top1']:.1%}" if "stanford_top1" in r else ""
        extra = ""
        if "vs_imagenet_head" in r:
            v = r["vs_imagenet_head"]
            lo_d, hi_d = 100 * v["ci95"][0], 100 * v["ci95"][1]
            extra = f" (vs ImageNet head {100 * v['diff']:+.1f} pts, CI {lo_d:+.1f}..{hi_d:+.1f})"
        out.append(f"| {r['group']} | {r['name']}{extra} | {r['top1']:.1%} | {lo:.1%}-{hi:.1%} | {r['top5']:.1%} "
                   f"| {st} |")
    out += ["", f"`best` chosen on stanford-subset: **{res['best_choice_on_stanford']}**", "",
            "Paired differences (same photos, bootstrap 95% CI):"]
    for k, v in res["paired"].items():
        out.append(f"- {k}: {100 * v['diff']:+.1f} pts ({100 * v['ci95'][0]:+.1f} .. {100 * v['ci95'][1]:+.1f})")
    out += ["", "### New breed (each of 11 val breeds dropped and re-added from k stanford photos; Lite0; flattering: "
            "the backbone learnt them from ImageNet)", "",
            "| photos | recall on its val photos | 95% CI | worst breed | others, change (pts) | worst breed (pts) |",
            "|---|---|---|---|---|---|"]
    for k, v in res["new_breed"].items():
        out.append(f"| {k} | {v['recall']:.1%} | {v['recall_ci'][0]:.1%}-{v['recall_ci'][1]:.1%} | "
                   f"{v['recall_min_breed']:.0%} | {v['others_change_pts']:+.2f} | {v['others_worst_pts']:+.2f} |")
    if "speed" in res:
        out += ["", "### End to end through Predictor", "", "| runtime | quality | photos | s | images/s |",
                "|---|---|---|---|---|"]
        for s in res["speed"]:
            out.append(f"| {s['runtime']} | {s['quality']} | {s['photos']} | {s['seconds']} | {s['images_per_s']} |")
    return "\n".join(out)


if __name__ == "__main__":
    main()
