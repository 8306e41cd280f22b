"""The detection stage against the whole photo, out of fold: what the in-sample figures of dogs_in_scene.py cannot say.

The shipped breed heads are fitted on web-dogs and imagenet-val-dogs themselves (scripts/fit_default_heads.py), so
on those photos the whole-photo answer is in-sample, while a crop of the same photo is much less so: the
comparison flatters the whole photo. Here every photo is also scored by the head of the fold that never saw it
(the head recipe's own 5 breed-stratified folds and `adapt.fit_blend`, for every member a row runs: `fast`'s Lite0,
and the breed cascade's Lite0-2 on the rows it reads again; with and without that cascade), whole photo alone and
with the stage, through `Predictor`'s own path (members, dog-or-not head, cascade,
`inference.dogs`); only the breed head's rows change. Photos: all 733 uncut web-dogs + imagenet-val-dogs photos,
and composites of both halves (bench/dogs_in_scene.py, ``--limit`` each): a one-dog composite takes the fold of
the photo pasted into it; in a two-dog composite each crop takes the fold of the pasted photo its centre lies in
(the whole photo, which shows both, the first's; it enters a dog's answer only for a main dog covering 30% of the
photo, which 150-260 px dogs in 800x500 never do, or for a lone dog listed alone). Counted as dogs_in_scene.py
counts (`PredTally`). Features of the fitting photos come from the feature cache (scripts/warm_feature_cache.py;
cold, Lite0 over 15,000 photos takes about 6 minutes on 2 cores).

Run: python bench/stage_out_of_fold.py [--limit 150] [--out bench/results/stage_out_of_fold.json]
     [--halves tune] [--only out_of_fold/stage] [--crop-margin 0.3]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dogbreed.fileio import atomic_write_text
from dogbreed.inference.decode import Prepared
from dogbreed.inference.scoring import MemberOutput, combine_breeds
from dogbreed.predict import BEST_BACKBONES, Predictor
from dogbreed.runtime import cpu_name

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "bench"))
import dogs_in_scene as scenes  # noqa: E402
from fit_default_heads import VIEWS, stanford_and_natural  # noqa: E402

KINDS = ("single-medium", "single-large", "pair")


def fold_heads(real: Path) -> tuple[dict[str, list[tuple[np.ndarray, np.ndarray]]], dict[str, int]]:
    """Per backbone (`fast`'s Lite0 and the breed cascade's three), the 5 fold heads (each fitted without one fold of
    the natural photos, `adapt.fold_blends`) and each natural photo's fold, keyed by its resolved path (the folds
    follow the labels alone, so every backbone has the same)."""
    from dogbreed.adapt import BlendConfig, fold_blends
    from dogbreed.features import extract
    from dogbreed.models import default_classifier

    (fs, ys), (fn, yn, _) = stanford_and_natural(real)
    heads = {}
    for bb in BEST_BACKBONES:
        base = default_classifier(bb)
        xs, xn = (extract(f, base, views=VIEWS, progress=True) for f in (fs, fn))
        w0, b0 = base.breed_head.weight.detach(), base.breed_head.bias.detach()
        _, fold, fitted = fold_blends((xs.features, ys), (xn.features, yn), w0, b0, BlendConfig())
        heads[bb] = [(w.numpy(), b.numpy()) for w, b in fitted]
    return heads, {str(Path(p).resolve()): int(k) for p, k in zip(fn, fold, strict=True)}


class OutOfFold(Predictor):
    """`fast` with each row's breed head replaced by the fold head that never saw its dog, for every member the
    row runs (Lite0, and the breed cascade's). A photo's name is its index into ``pasted``: the (rectangle, fold)
    of each dog photo in it, the first for the whole photo."""

    heads: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    pasted: list[list[tuple[tuple[float, ...], int]]] = []

    def fold_of(self, photo: int, box: tuple[float, ...] | None) -> int:
        dogs = self.pasted[photo]
        if box is not None:
            for rect, f in dogs:
                if scenes.centre_inside(box, rect):
                    return f
        return dogs[0][1]

    def breed_log_probabilities(self, outputs: Sequence[MemberOutput], b: Prepared, rows: Sequence[int] | None = None,
                                temperature: float | None = None) -> np.ndarray:
        folds = []  # each batch row's fold
        for i, name in enumerate(b.ok_paths):
            for region in (b.regions[i] if b.regions is not None else [None]):
                folds.append(self.fold_of(int(name), region.box if region is not None else None))
        folds_of = np.asarray(folds)[list(rows) if rows is not None else slice(None)]
        refit = []
        for o in outputs:
            feats = np.asarray(o.out.features, np.float32)
            logits = np.empty((len(feats), len(self.classes)), np.float32)
            for k, f in enumerate(folds_of):
                w, bias = self.heads[o.member.backbone][f]
                logits[k] = feats[k] @ w.T + bias
            refit.append(o._replace(out=o.out._replace(breed_logits=logits)))
        return combine_breeds(refit, temperature or self.decision.temperature)


def line(kind: str, row: dict[str, dict[str, Any]]) -> str:
    """One Markdown row: per run, what names breeds (dog + right breed; breed-balanced top-1), or for pairs both."""
    def cell(t: dict[str, Any]) -> str:
        if "both_named" in t:
            return f"both named {t['both_named']}/{t['photos']} (box on each {t['boxes_on_both']})"
        return f"named {t['named']}/{t['photos']}, bal {100 * t['breed_balanced_top1']:.1f}%"
    return f"| {kind} | " + " | ".join(f"{k}: {cell(v)}" for k, v in row.items()) + " |"


def photos_by_kind(data: Path, limit: int, halves: Sequence[str] = ("tune", "test")) -> dict[str, list[scenes.Scene]]:
    """All uncut photos of these halves, and ``limit`` composites of each of `KINDS` per half."""
    photos: dict[str, list[scenes.Scene]] = defaultdict(list)
    for half in halves:
        for s in scenes.scenes_for(data, half, 320, None, ["uncut"]):
            photos["uncut"].append(s)
        for s in scenes.scenes_for(data, half, 320, limit, list(KINDS)):
            photos[s.kind].append(s)
    return photos


def pasted_folds(ss: Sequence[scenes.Scene], fold: dict[str, int]) -> list[list[tuple[tuple[float, ...], int]]]:
    """`OutOfFold.pasted` for these photos: each pasted dog photo's rectangle and fold."""
    return [[(tuple(rect), fold[str(Path(src).resolve())]) for rect, src in zip(s.boxes, s.sources, strict=True)]
            for s in ss]


def tally(p: Predictor, ss: Sequence[scenes.Scene]) -> dict[str, Any]:
    """``p`` over the photos (named by their index, as `OutOfFold` reads them), counted as dogs_in_scene.py counts."""
    names = [str(i) for i in range(len(ss))]
    t = scenes.PredTally()
    for i in range(0, len(ss), 16):
        for pred, s in zip(p.predict_images([s.image for s in ss[i:i + 16]], names[i:i + 16]), ss[i:i + 16],
                           strict=True):
            t.add(pred, s)
    return t.summary()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=scenes.REAL)
    ap.add_argument("--limit", type=int, default=150, help="composites per kind and half")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "stage_out_of_fold.json")
    ap.add_argument("--halves", nargs="+", default=["tune", "test"], choices=["tune", "test"])
    ap.add_argument("--only", nargs="+", default=None, metavar="RUN",
                    help="just these of the six runs, e.g. out_of_fold/stage")
    ap.add_argument("--crop-margin", type=float, default=None,
                    help="an experiment: the context a dog's crop shows (regions.MARGIN; the per-dog rules keep it)")
    a = ap.parse_args(argv)
    if a.crop_margin is not None:
        from dogbreed.inference import regions

        regions.view.__defaults__ = (a.crop_margin,)  # the view only; dogs.py's overlap rules read `window` as is
    heads, fold = fold_heads(a.data)
    OutOfFold.heads = heads
    photos = photos_by_kind(a.data, a.limit, a.halves)
    # (heads, breed cascade): the breed cascade off only out of fold, where its effect can be read
    runs = {"in_sample": (Predictor, True), "out_of_fold": (OutOfFold, True),
            "out_of_fold_no_breed_cascade": (OutOfFold, False)}
    result: dict[str, Any] = {"cpu": cpu_name(), "limit": a.limit, "halves": a.halves,
                              "crop_margin": a.crop_margin, "kinds": {}}
    for kind, ss in photos.items():
        OutOfFold.pasted = pasted_folds(ss, fold)
        row: dict[str, Any] = {}
        for heads_name, (cls, cascade) in runs.items():
            for mode, find in (("whole_photo", False), ("stage", True)):
                if a.only is None or f"{heads_name}/{mode}" in a.only:
                    row[f"{heads_name}/{mode}"] = tally(cls(find_dogs=find, breed_cascade=cascade), ss)
        result["kinds"][kind] = row
        print(line(kind, row), flush=True)
    atomic_write_text(a.out, json.dumps(result, indent=1) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
