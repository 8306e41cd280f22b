"""The detection stage against the whole photo, out of fold: what the in-sample figures of dogs_in_scene.py cannot say.

The shipped breed heads are fitted on web-dogs and imagenet-val-dogs themselves (scripts/fit_default_heads.py), so
on those photos the whole-photo answer is in-sample, while a crop of the same photo is much less so: the
comparison flatters the whole photo. Here every photo is also scored by the head of the fold that never saw it
(the head recipe's own 5 breed-stratified folds and `adapt.fit_blend`, for `fast`'s one member, Lite0 plain),
whole photo alone and with the stage, through `Predictor`'s own path (members, dog-or-not head, cascade,
`inference.dogs`); only the breed head's rows change. Photos: all 733 uncut web-dogs + imagenet-val-dogs photos,
and one-dog composites of both halves (bench/dogs_in_scene.py, ``--limit`` each; a composite takes the fold of the
photo pasted into it). Features of the fitting photos come from the feature cache (scripts/warm_feature_cache.py;
cold, Lite0 over 15,000 photos takes about 6 minutes on 2 cores).

Run: python bench/stage_out_of_fold.py [--limit 150] [--out bench/results/stage_out_of_fold.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from dogbreed.dogness import log_softmax
from dogbreed.fileio import atomic_write_text
from dogbreed.inference import scoring
from dogbreed.inference.decode import Prepared, photo_rows
from dogbreed.inference.dogs import answer_photos
from dogbreed.inference.scoring import Prediction
from dogbreed.predict import BEST_BACKBONES, Predictor
from dogbreed.runtime import cpu_name

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "bench"))
import dogs_in_scene as scenes  # noqa: E402
from fit_default_heads import VIEWS, stanford_and_natural  # noqa: E402

KINDS = ("single-medium", "single-large")


def fold_heads(real: Path) -> tuple[list[tuple[np.ndarray, np.ndarray]], dict[str, int]]:
    """The 5 fold heads of `fast`'s member (each fitted without one fold of the natural photos) and each natural
    photo's fold, keyed by its resolved path."""
    import torch  # noqa: F401 - the fits need it; the scoring below does not

    from dogbreed.adapt import BlendConfig, fit_blend
    from dogbreed.calibration import breed_stratified_folds
    from dogbreed.features import extract
    from dogbreed.models import default_classifier

    (fs, ys), (fn, yn, _) = stanford_and_natural(real)
    base = default_classifier(BEST_BACKBONES[0])
    xs, xn = (extract(f, base, views=VIEWS, progress=True) for f in (fs, fn))
    w0, b0 = base.breed_head.weight.detach(), base.breed_head.bias.detach()
    cfg = BlendConfig()
    start = fit_blend((xs.features, ys), (xn.features[:0], yn[:0]), w0, b0, cfg)
    fold = breed_stratified_folds(yn, cfg.folds, cfg.seed)
    heads = []
    for f in range(cfg.folds):
        tr = fold != f
        w, b = fit_blend((xs.features, ys), (xn.features[tr], yn[tr]), w0, b0, cfg, start=start)
        heads.append((w.numpy(), b.numpy()))
    return heads, {str(Path(p).resolve()): int(k) for p, k in zip(fn, fold, strict=True)}


class OutOfFold(Predictor):
    """`fast` with each photo's breed head replaced by the fold head that never saw it: a photo's name is its fold."""

    heads: list[tuple[np.ndarray, np.ndarray]] = []

    def predict_prepared(self, b: Prepared) -> list[Prediction]:
        outputs = scoring.run_members(self.members, b.tensors, self.tta_flip)
        assert len(outputs) == 1 and outputs[0].member.backbone == BEST_BACKBONES[0], "fast: one member, plain"
        n_rows = len(outputs[0].out.breed_logits)
        dog = scoring.dog_probability(outputs, self.detector, n_rows)
        if self.loaded.cascade is not None:
            dog = self.loaded.cascade(dog, outputs, lambda r: self._image(b, r))
        feats = np.asarray(outputs[0].out.features, np.float32)
        starts = photo_rows(b) + [n_rows]
        logits = np.empty((n_rows, len(self.classes)), np.float32)
        for i, name in enumerate(b.ok_paths):
            w, bias = self.heads[int(name)]
            logits[starts[i]:starts[i + 1]] = feats[starts[i]:starts[i + 1]] @ w.T + bias
        logp = log_softmax(logits / np.float32(self.decision.temperature))
        names = list(b.ok_paths)
        if b.regions is None:
            return scoring.decide(logp, dog, names, self.classes, self.decision, self.top_k)
        return answer_photos(logp, dog, b.regions, names, self.classes, self.decision, self.top_k)


def tally(preds: list[Prediction], truth: list[str]) -> dict[str, Any]:
    """Top-1 as dogs_in_scene.py counts it (a dog answer with the right breed first), plain and breed-balanced."""
    per: dict[str, list[bool]] = defaultdict(list)
    for p, w in zip(preds, truth, strict=True):
        per[w].append(p.verdict != "no_dog" and bool(p.breeds) and p.breeds[0].wnid == w)
    hits = sum(sum(v) for v in per.values())
    return {"photos": len(truth), "top1": hits, "top1_pct": round(100 * hits / len(truth), 1),
            "breed_balanced_pct": round(100 * float(np.mean([np.mean(v) for v in per.values()])), 1)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=scenes.REAL)
    ap.add_argument("--limit", type=int, default=150, help="composites per kind and half")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "stage_out_of_fold.json")
    a = ap.parse_args(argv)
    heads, fold = fold_heads(a.data)
    OutOfFold.heads = heads
    photos: dict[str, list[scenes.Scene]] = defaultdict(list)
    for half in ("tune", "test"):
        for s in scenes.scenes_for(a.data, half, 320, None, ["uncut"]):
            photos["uncut"].append(s)
        for s in scenes.scenes_for(a.data, half, 320, a.limit, list(KINDS)):
            photos[s.kind].append(s)
    runs = {"in_sample": Predictor, "out_of_fold": OutOfFold}
    result: dict[str, Any] = {"cpu": cpu_name(), "limit": a.limit, "kinds": {}}
    for kind, ss in photos.items():
        truth = [s.wnids[0] for s in ss]
        names = [str(fold[str(Path(s.sources[0]).resolve())]) for s in ss]
        row: dict[str, Any] = {}
        for heads_name, cls in runs.items():
            for mode, find in (("whole_photo", False), ("stage", True)):
                p = cls(find_dogs=find)
                preds = [x for i in range(0, len(ss), 16)
                         for x in p.predict_images([s.image for s in ss[i:i + 16]], names[i:i + 16])]
                row[f"{heads_name}/{mode}"] = tally(preds, truth)
        result["kinds"][kind] = row
        print(f"| {kind} | " + " | ".join(f"{k}: {v['top1']}/{v['photos']} ({v['top1_pct']}%), "
                                           f"bal {v['breed_balanced_pct']}%" for k, v in row.items()) + " |",
              flush=True)
    atomic_write_text(a.out, json.dumps(result, indent=1) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
