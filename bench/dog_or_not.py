"""Dog or not, cross-source: fit the dog detector on one group of sources, test on the other, both directions.

Groups follow MANIFEST.tsv's ``source_repo`` so no test photo shares a source with a fitting photo:
  A = Kaggle dogs-vs-cats (dogs-any + kaggle-* cats) + Imagenette (9 object classes, English springer dogs)
  B = Cerberus (Bengal/Siamese/Sphynx cats, husky + toy poodle dogs) + the 90-class set (objects, animals, 9 breeds)
      + Imagewoof (the other dog breeds, incl. all imagenet-val-dogs but English springer) + web-dogs (Wikipedia)
Reads backbone outputs from the feature cache (scripts/warm_feature_cache.py fills it). Writes
bench/results/dog_or_not.json and prints a Markdown table.

Run: python bench/dog_or_not.py [--backbones efficientnet_lite0 efficientnet_lite1 efficientnet_lite2] [--boot 300]
(default: the backbones of `--quality best`, so the "best" row is what that mode runs)
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np
from scipy.stats import rankdata

from dogbreed.dogness import DEFAULT_CASCADE, fit_dog_detector_arrays
from dogbreed.features import extract
from dogbreed.models import default_classifier
from dogbreed.predict import BEST_BACKBONES, dog_mass

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT / ".." / "shared" / "data" / "real"
GROUP_A = ("chanakya2734/Image-classification-using-CNN", "thunderInfy/imagenette")
VIEWS = ("plain", "flip")


def load(real: Path) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rows = list(csv.DictReader(open(real / "MANIFEST.tsv"), delimiter="\t"))
    files = [str(real / r["path"]) for r in rows]
    kind = np.array(["cat" if r["path"].startswith("not-dogs/cat/") else
                     "other" if r["path"].startswith("not-dogs/") else "dog" for r in rows])
    group_a = np.array([r["source_repo"] in GROUP_A for r in rows])
    # Breed index for imagenet-val-dogs photos (honest breed accuracy), -1 elsewhere.
    val = np.array([r["path"].startswith("imagenet-val-dogs/") for r in rows])
    return files, kind, group_a, val, np.array([r["label"] for r in rows])


def auroc(s: np.ndarray, y: np.ndarray) -> float:
    r = rankdata(s)
    npos = y.sum()
    nneg = len(y) - npos
    return float((r[y].sum() - npos * (npos + 1) / 2) / (npos * nneg))


def ece(p: np.ndarray, y: np.ndarray, bins: int = 10) -> float:
    idx = np.minimum((p * bins).astype(int), bins - 1)
    return float(sum(abs(p[idx == b].mean() - y[idx == b].mean()) * (idx == b).mean()
                     for b in range(bins) if (idx == b).any()))


def metrics(s: np.ndarray, kind: np.ndarray) -> dict[str, float]:
    d, c, o = s[kind == "dog"], s[kind == "cat"], s[kind == "other"]
    t_dog = np.quantile(d, 0.01, method="lower")  # keeps >= 99% of dogs
    t_cat = np.quantile(c, 0.99, method="higher")  # rejects >= 99% of cats (strictly above)
    return {"auroc": auroc(s, kind == "dog"), "cats_rejected_at_99_dogs": float(np.mean(c < t_dog)),
            "others_rejected_at_99_dogs": float(np.mean(o < t_dog)),
            "dogs_kept_at_99_cats_rejected": float(np.mean(d > t_cat))}


def with_ci(s: np.ndarray, kind: np.ndarray, boot: int, rng: np.random.Generator) -> dict[str, list[float]]:
    """Point estimate and a stratified (per class) bootstrap 95% interval for each metric."""
    point = metrics(s, kind)
    idx = {k: np.where(kind == k)[0] for k in ("dog", "cat", "other")}
    reps = []
    for _ in range(boot):
        take = np.concatenate([rng.choice(v, len(v)) for v in idx.values()])
        reps.append(metrics(s[take], kind[take]))
    return {k: [point[k], float(np.quantile([r[k] for r in reps], 0.025)),
                float(np.quantile([r[k] for r in reps], 0.975))] for k in point}


def at_threshold(s: np.ndarray, kind: np.ndarray, t: float) -> dict[str, float]:
    return {"threshold": float(t), "dogs_kept": float(np.mean(s[kind == "dog"] >= t)),
            "cats_rejected": float(np.mean(s[kind == "cat"] < t)),
            "others_rejected": float(np.mean(s[kind == "other"] < t))}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(REAL))
    ap.add_argument("--backbones", nargs="+", default=list(BEST_BACKBONES))
    ap.add_argument("--boot", type=int, default=300)
    ap.add_argument("--target-recall", type=float, default=0.99)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "dog_or_not.json"))
    args = ap.parse_args()
    t0 = time.time()
    files, kind, group_a, val, label = load(Path(args.data))
    out: dict[str, dict] = {}
    for bb in args.backbones:
        ex = extract(files, default_classifier(bb), views=VIEWS)
        assert ex.ok.all(), "unreadable photos in the real set"
        out[bb] = {"imnet": ex.imagenet_logits, "feats": ex.features, "breed": ex.breed_logits}
    lite0 = args.backbones[0]
    classes = default_classifier(lite0).classes
    wnid_to_i = {b.wnid: i for i, b in enumerate(classes)}
    rng = np.random.default_rng(0)
    methods = {  # name -> (backbones, views, feature_l2); None backbones = plain dog mass
        f"dog mass ({lite0}, plain) - baseline": (None, ("plain",), None),
        f"detector ({lite0}, plain) - fast": ([lite0], ("plain",), None),
        f"detector + 1280-d features, L2 1e-3 ({lite0}, plain)": ([lite0], ("plain",), 1e-3),
    }
    if len(args.backbones) > 1:
        methods[f"detector ({'+'.join(args.backbones)}, plain+flip) - best"] = (args.backbones, VIEWS, None)
    cas = DEFAULT_CASCADE
    cas_bbs = [cas.first, *cas.extra_backbones()]
    if set(cas_bbs) <= set(args.backbones):
        second = "+".join(f"{b.removeprefix('efficientnet_')} {v}" for b, v in cas.second)
        methods[f"cascade: {cas.first.removeprefix('efficientnet_')} plain; in band {list(cas.band)}: {second} "
                f"- fast"] = ("cascade", VIEWS, None)
    results = []
    for fit_a in (True, False):
        fit, test = (group_a, ~group_a) if fit_a else (~group_a, group_a)
        direction = "fit A, test B" if fit_a else "fit B, test A"
        counts = {k: int(((kind == k) & test).sum()) for k in ("dog", "cat", "other")}
        for name, (bbs, views, fl2) in methods.items():
            vi = [VIEWS.index(v) for v in views]
            band = None
            if bbs == "cascade":
                det, _ = fit_dog_detector_arrays({b: (out[b]["imnet"][fit], None) for b in cas_bbs},
                                                 kind[fit] == "dog", target_recall=args.target_recall)
                det.cascade = cas
                s, band = det.cascade_probability({(b, v): out[b]["imnet"][:, VIEWS.index(v)]
                                                   for b in cas_bbs for v in VIEWS})
                t_fit = cas.threshold
            elif bbs is None:
                s = dog_mass(out[lite0]["imnet"][:, 0])
                t_fit = float(np.quantile(s[fit & (kind == "dog")], 1 - args.target_recall, method="lower"))
            else:
                det, _ = fit_dog_detector_arrays(
                    {b: (out[b]["imnet"][fit], out[b]["feats"][fit] if fl2 else None) for b in bbs},
                    kind[fit] == "dog", target_recall=args.target_recall, feature_l2=fl2)
                s = det.combine([(b, out[b]["imnet"][:, v], out[b]["feats"][:, v]) for b in bbs for v in vi])
                t_fit = det.threshold(bbs, views)
            st, kt = s[test], kind[test]
            row = {"direction": direction, "method": name, "test_counts": counts,
                   **with_ci(st, kt, args.boot, rng), "ece": ece(st, kt == "dog"),
                   "at_fitted_threshold": at_threshold(st, kt, t_fit)}
            if band is not None:  # share of test photos that ran the second member, overall and per kind
                row["slow_path_share"] = {"all": float(band[test].mean()),
                                          **{k: float(band[test & (kind == k)].mean()) for k in counts}}
                row["wrong_at_fitted_threshold"] = [
                    {"path": files[i].split("real/")[-1], "kind": str(kind[i]), "p": round(float(s[i]), 4)}
                    for i in np.where(test & ((s >= t_fit) != (kind == "dog")))[0]]
            # Breed accuracy (lite0 ImageNet breed rows) on honest imagenet-val dogs of the test group: all vs kept.
            vm = test & val
            if vm.any():
                pred = out[lite0]["breed"][vm, 0].argmax(-1)
                true = np.array([wnid_to_i.get(w, -1) for w in label[vm]])
                kept = s[vm] >= t_fit
                row["breed_top1_val_dogs"] = {"n": int(vm.sum()), "all": float(np.mean(pred == true)),
                                              "n_kept": int(kept.sum()),
                                              "kept": float(np.mean(pred[kept] == true[kept])) if kept.any() else None}
            results.append(row)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"target_recall": args.target_recall, "bootstrap": args.boot,
                                          "groups": {"A": list(GROUP_A), "B": "all other sources"},
                                          "results": results, "seconds": round(time.time() - t0, 1)}, indent=1))
    print_table(results)


def _ci(v: list[float]) -> str:
    return f"{v[0]:.1%} ({v[1]:.1%}-{v[2]:.1%})"


def print_table(results: list[dict]) -> None:
    print("| fit → test | method | test photos (dogs/cats/other) | AUROC | cats rejected @99% dogs kept | "
          "other rejected @99% dogs kept | dogs kept @99% cats rejected | ECE | at fitted threshold: dogs kept / "
          "cats rej. / other rej. |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        c, a = r["test_counts"], r["at_fitted_threshold"]
        au = r["auroc"]
        print(f"| {r['direction']} | {r['method']} | {c['dog']}/{c['cat']}/{c['other']} | "
              f"{au[0]:.4f} ({au[1]:.4f}-{au[2]:.4f}) | {_ci(r['cats_rejected_at_99_dogs'])} | "
              f"{_ci(r['others_rejected_at_99_dogs'])} | {_ci(r['dogs_kept_at_99_cats_rejected'])} | "
              f"{r['ece']:.3f} | {a['dogs_kept']:.1%} / {a['cats_rejected']:.1%} / {a['others_rejected']:.1%} |")
    for r in results:
        if "slow_path_share" in r:
            sh = r["slow_path_share"]
            print(f"\n{r['direction']}, cascade: second member ran on {sh['all']:.1%} of test photos (dogs "
                  f"{sh['dog']:.1%}, cats {sh['cat']:.1%}, other {sh['other']:.1%}); wrong at the fitted threshold: "
                  + ", ".join(f"{w['kind']} {w['path']} ({w['p']:.2f})" for w in r["wrong_at_fitted_threshold"]))
    for r in results:
        b = r.get("breed_top1_val_dogs")
        if b and "baseline" not in r["method"]:
            print(f"\nbreed top-1 ({r['direction']}, {r['method']}): all {b['n']} val dogs {b['all']:.1%}, "
                  f"the {b['n_kept']} kept {b['kept']:.1%}")


if __name__ == "__main__":
    main()
