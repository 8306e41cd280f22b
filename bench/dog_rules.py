"""How the per-dog rules and the wider look were chosen: record a predictor's rows once, re-answer them offline.

The rules of `dogbreed.inference.dogs` (which crops are dogs, which are a dog seen again, the main dog) only read each
photo's rows: the whole photo's and each candidate's breed log-probabilities and dog probability, and the
candidates themselves. So the shipped `fast` Predictor runs once over the composites of bench/dogs_in_scene.py (one
half), its rows are kept, and every rule setting re-answers the same rows in milliseconds, counted as that bench
counts (`PredTally`). The detector's own settings change the candidates, so each wider-look setting (`detect.WIDE_*`)
records the photos again (the rules' table is recorded without the wider look, as they were chosen before it).
Rows are recorded with every crop run. The same-view table (`regions.WHOLE_VIEW`: a crop whose square covers that
share of the photo takes the whole photo's row instead of running) re-answers the shipped detector's rows with
such crops' rows replaced by the whole photo's, as `Predictor` answers them, and counts the crops it would not run.

Photos: dogs_in_scene.py's one-dog composites (three bins), two-dog photos, uncut dog photos, cats and everyday
photos of the half; and, because the real photos here are all 500 px or smaller (the first pass never shrinks them,
so the wider look never runs on them), the half's cats and everyday photos cover-cropped to 640x480 with no dog
pasted, as a stand-in for large photos without a dog. Choose on the tune half, report on the test half.

Run: python bench/dog_rules.py [--half tune] [--limit N] [--no-wide] [--out bench/results/dog_rules.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import dogbreed.predict as predict_module
from dogbreed.fileio import atomic_write_text
from dogbreed.inference import detect, dogs
from dogbreed.inference.regions import shows_whole_photo
from dogbreed.predict import Predictor
from dogbreed.runtime import cpu_name

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import dogs_in_scene as scenes  # noqa: E402

KINDS = ("single-small", "single-medium", "single-large", "pair", "uncut", "scene-cat", "scene-other",
         "scene640-cat", "scene640-other")
COMPOSITES = ("single-small", "single-medium", "pair", "scene640-cat", "scene640-other")  # what the wider look moves
# The rule settings compared: each a dict of `dogs` constants (the shipped value for any constant not named).
RULES: dict[str, dict[str, float]] = {
    "SEEN_AGAIN 0.2, no BESIDE_A_DOG, no DETECTOR_SURE (17d2a41's rules)":
        {"SEEN_AGAIN": 0.2, "BESIDE_A_DOG": 1.0, "DETECTOR_SURE": 2.0},
    **{f"SEEN_AGAIN {v}, no BESIDE_A_DOG, no DETECTOR_SURE": {"SEEN_AGAIN": v, "BESIDE_A_DOG": 1.0,
                                                              "DETECTOR_SURE": 2.0} for v in (0.1, 0.15, 0.3)},
    **{f"BESIDE_A_DOG {b}, score {s}, area {a}, no DETECTOR_SURE": {
        "BESIDE_A_DOG": b, "BESIDE_A_DOG_SCORE": s, "BESIDE_A_DOG_AREA": a, "DETECTOR_SURE": 2.0}
       for b, s, a in ((0.9, 0.1, 2.0), (0.85, 0.1, 2.0), (0.8, 0.1, 2.0), (0.85, 0.05, 2.0), (0.85, 0.15, 2.0),
                       (0.85, 0.1, 1.5), (0.85, 0.1, 100.0))},
    **{f"DETECTOR_SURE {s}, crop {c}": {"DETECTOR_SURE": s, "DETECTOR_SURE_CROP": c}
       for s, c in ((0.2, 0.5), (0.2, 0.7), (0.3, 0.5), (0.3, 0.8), (0.5, 0.7))},
    "shipped": {},
}
SAME_VIEW = (None, 0.95, 0.9, 0.8, 0.7, 0.6)  # `regions.WHOLE_VIEW` settings compared (None: every crop run)
WIDE = {"off": None, **{f"span {s}, {z}x{z}, from {f}": (s, z, f) for s, z, f in (
    (1.5, 256, 0.01), (1.5, 288, 0.01), (1.5, 320, 0.01), (1.3, 288, 0.01), (2.0, 288, 0.01), (1.5, 288, 0.02),
    (1.5, 288, 0.005))}}


@dataclass
class Row:
    """One photo as the rules see it: its rows' breed log-probabilities and dog probabilities, its regions."""

    scene: scenes.Scene
    logp: np.ndarray
    dog: np.ndarray
    regions: list[Any]


def photos(real: Path, half: str, kinds: Sequence[str], draft: int, limit: int | None) -> Iterator[scenes.Scene]:
    for kind in kinds:
        if kind.startswith("scene640-"):
            sub = scenes.SCENE_SETS["scene-" + kind.split("-", 1)[1]]
            for p in scenes.spread(scenes.scene_files(real, sub, half), limit):
                yield scenes.Scene(kind, scenes._scene(p, scenes.SINGLE_CANVAS), sources=[str(p)])
        elif kind in scenes.SCENE_SETS:
            yield from scenes.real_photos(real, kind, half, draft, limit)
        else:
            yield from scenes.scenes_for(real, half, draft, limit, [kind])


def record(predictor: Predictor, shots: Iterator[scenes.Scene], batch: int = 16) -> list[Row]:
    """Run the predictor's own path and keep, per photo, the rows `dogs.answer_photos` was given: with every crop
    run (none deferred, none taken as the whole photo's), so any rule can be asked of any row."""
    seen: list[tuple[np.ndarray, np.ndarray, list[Any]]] = []
    original = predict_module.answer_photos

    def keep(logp: np.ndarray, dog: np.ndarray, regions: Sequence[list[Any]], *rest: Any) -> Any:
        start = 0
        for found in regions:
            seen.append((logp[start:start + len(found)].copy(), dog[start:start + len(found)].copy(), list(found)))
            start += len(found)
        return original(logp, dog, regions, *rest)

    out: list[Row] = []
    every = {"answer_photos": keep, "deferred_crops": lambda regions: [],
             "shows_whole_photo": lambda region, whole: False}
    with patched(predict_module, every):
        chunk: list[scenes.Scene] = []
        for shot in [*shots, None]:
            if shot is not None:
                chunk.append(shot)
            if chunk and (shot is None or len(chunk) == batch):
                first = len(seen)
                predictor.predict_images([s.image for s in chunk])
                out += [Row(s, *r) for s, r in zip(chunk, seen[first:], strict=True)]
                chunk = []
    return out


@contextlib.contextmanager
def patched(module: Any, values: dict[str, Any]) -> Iterator[None]:
    old = {k: getattr(module, k) for k in values}
    for k, v in values.items():
        setattr(module, k, v)
    try:
        yield
    finally:
        for k, v in old.items():
            setattr(module, k, v)


def answer(rows: Sequence[Row], predictor: Predictor, rules: dict[str, float]) -> dict[str, dict[str, Any]]:
    """Every row re-answered under ``rules`` (constants of `dogs`), tallied per kind of photo."""
    tallies: dict[str, scenes.PredTally] = defaultdict(scenes.PredTally)
    with patched(dogs, rules):
        for r in rows:
            p = dogs.answer_photo(r.logp, r.dog, r.regions, None, predictor.classes, predictor.decision,
                                  predictor.top_k)
            tallies[r.scene.kind].add(p, r.scene)
    return {k: t.summary() for k, t in tallies.items()}


def answer_same_view(rows: Sequence[Row], predictor: Predictor, share: float | None,
                     ) -> tuple[dict[str, dict[str, Any]], dict[str, list[int]]]:
    """Every row re-answered as the predictor answers when a crop whose square covers ``share`` of the photo takes
    the whole photo's row (`regions.shows_whole_photo`; None: never), and per kind (such crops, all crops)."""
    tallies: dict[str, scenes.PredTally] = defaultdict(scenes.PredTally)
    crops: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for r in rows:
        logp, dog = r.logp.copy(), r.dog.copy()
        same = [i for i, reg in enumerate(r.regions)
                if share is not None and shows_whole_photo(reg, r.regions[0], share)]
        logp[same], dog[same] = logp[0], dog[0]
        crops[r.scene.kind][0] += len(same)
        crops[r.scene.kind][1] += len(r.regions) - 1
        p = dogs.answer_photo(logp, dog, r.regions, None, predictor.classes, predictor.decision, predictor.top_k)
        tallies[r.scene.kind].add(p, r.scene)
    return {k: t.summary() for k, t in tallies.items()}, dict(crops)


def line(name: str, res: dict[str, dict[str, Any]]) -> str:
    def get(kind: str, key: str) -> str:
        r = res.get(kind)
        return "–" if r is None else f"{r[key]}/{r['photos']}"
    return (f"| {name} | {get('pair', 'exactly_two')} | {get('pair', 'boxes_on_both')} | {get('pair', 'both_named')} | "
            f"{get('single-medium', 'says_dog')} | {get('single-medium', 'named')} | "
            f"{get('single-medium', 'more_than_one_dog')} | {get('single-small', 'says_dog')} | "
            f"{get('single-large', 'more_than_one_dog')} | {get('uncut', 'top1')} | "
            f"{get('uncut', 'more_than_one_dog')} | "
            f"{get('scene-cat', 'says_dog')} | {get('scene-other', 'says_dog')} | {get('scene640-cat', 'says_dog')} | "
            f"{get('scene640-other', 'says_dog')} |")


HEADER = ("| setting | pairs: exactly two | a box on each | both named | 150–260 px: says dog | named | >1 dog | "
          "100–150 px: says dog | 260–400 px: >1 dog | uncut: top-1 | >1 dog | cats say dog | everyday say dog | "
          "cats 640x480 | everyday 640x480 |\n" + "|---" * 15 + "|")


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=scenes.REAL)
    ap.add_argument("--half", default="tune", choices=("tune", "test"))
    ap.add_argument("--limit", type=int, default=None, help="at most N photos a kind (a quick look)")
    ap.add_argument("--no-wide", action="store_true", help="only the rules, not the wider-look settings")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "dog_rules.json")
    a = ap.parse_args(argv)
    predictor = Predictor()
    finder = predictor.loaded.finder
    with patched(finder, {"wide": False}):  # the rules were chosen before the wider look, on these candidates
        rows = record(predictor, photos(a.data, a.half, KINDS, predictor.draft_size, a.limit))
    out: dict[str, Any] = {"cpu": cpu_name(), "half": a.half, "limit": a.limit, "rules": {}, "same_view": {},
                           "wide": {}}
    print(f"\n{a.half} half, the detector without the wider look; per-dog rules re-answered on the same rows\n{HEADER}")
    for name, rules in RULES.items():
        out["rules"][name] = {"constants": rules, "kinds": answer(rows, predictor, rules)}
        print(line(name, out["rules"][name]["kinds"]))
    print(f"\n{a.half} half, the shipped detector; a crop whose square covers this share of the photo takes the "
          f"whole photo's row "
          f"(crops not run: uncut / 260-400 px / 150-260 px / pairs / cats / everyday)\n{HEADER}")
    shipped = record(predictor, photos(a.data, a.half, KINDS, predictor.draft_size, a.limit))  # the wider look on
    for share in SAME_VIEW:
        res, crops = answer_same_view(shipped, predictor, share)
        saved = " / ".join("{}/{}".format(*crops.get(k, [0, 0])) for k in (
            "uncut", "single-large", "single-medium", "pair", "scene-cat", "scene-other"))
        out["same_view"][str(share)] = {"kinds": res, "crops_not_run": crops}
        print(line(f"share {share} ({saved})", res))
    if not a.no_wide:
        print(f"\n{a.half} half, the wider look's settings (shipped rules; composites recorded again each)\n{HEADER}")
        for name, setting in WIDE.items():
            values = {} if setting is None else dict(zip(("WIDE_SPAN", "WIDE_SIZE", "WIDE_FROM"), setting, strict=True))
            with patched(detect, values), patched(finder, {"wide": setting is not None}):
                again = record(predictor, photos(a.data, a.half, COMPOSITES, predictor.draft_size, a.limit))
            res = answer(again, predictor, {})
            windows = {k: round(float(np.mean([len(r.regions) - 1 for r in again if r.scene.kind == k])), 3)
                       for k in COMPOSITES}
            out["wide"][name] = {"setting": values, "kinds": res, "candidates_per_photo": windows}
            print(line(name, res))
    atomic_write_text(a.out, json.dumps(out, indent=1) + "\n")
    print(f"\nwrote {a.out}")


if __name__ == "__main__":
    main()
