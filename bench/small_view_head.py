"""Would a breed head fitted on small views of its photos name small dogs' crops better? Out of fold, no.

`fast`'s Lite0 head is fitted as shipped (scripts/fit_default_heads.py's recipe: all of stanford-dogs plus the
natural photos, plain + flipped view, `adapt.fold_blends`' 5 breed-stratified folds) and again with each photo's
small view as a third row (`features.SMALL_VIEW`: the photo shrunk to a shorter side of 80-180 px, then enlarged
back by the usual preprocessing, as a crop of a dog pasted 150-260 px wide is). Both score the same photos through
`Predictor`'s path with the detection stage, each row by the fold head that never saw its dog
(bench/stage_out_of_fold.py's `OutOfFold`), the breed cascade off (it would need the other backbones refitted too):
the 733 uncut web-dogs + imagenet-val-dogs photos and ``--limit`` composites of each kind and half.

Run: python bench/small_view_head.py [--limit 100] [--out bench/results/small_view_head.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from dogbreed.fileio import atomic_write_text
from dogbreed.predict import BEST_BACKBONES
from dogbreed.runtime import cpu_name

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "bench"))
import dogs_in_scene as scenes  # noqa: E402
import stage_out_of_fold as oof  # noqa: E402
from fit_default_heads import VIEWS, stanford_and_natural  # noqa: E402

LITE0 = BEST_BACKBONES[0]


def lite0_fold_heads(real: Path, small: bool) -> tuple[list[tuple[np.ndarray, np.ndarray]], dict[str, int]]:
    """Lite0's 5 fold heads, fitted with or without the small view, and each natural photo's fold."""
    from dogbreed.adapt import BlendConfig, fold_blends
    from dogbreed.features import SMALL_VIEW, extract
    from dogbreed.models import default_classifier

    (fs, ys), (fn, yn, _) = stanford_and_natural(real)
    views = (*VIEWS, SMALL_VIEW) if small else VIEWS
    base = default_classifier(LITE0)
    xs, xn = (extract(f, base, views=views, progress=True).features for f in (fs, fn))
    w0, b0 = base.breed_head.weight.detach(), base.breed_head.bias.detach()
    _, fold, fitted = fold_blends((xs, ys), (xn, yn), w0, b0, BlendConfig())
    return [(w.numpy(), b.numpy()) for w, b in fitted], {str(Path(p).resolve()): int(k) for p, k in zip(fn, fold,
                                                                                                      strict=True)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=scenes.REAL)
    ap.add_argument("--limit", type=int, default=100, help="composites per kind and half")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "small_view_head.json")
    a = ap.parse_args(argv)
    photos = oof.photos_by_kind(a.data, a.limit)
    result: dict[str, Any] = {"cpu": cpu_name(), "limit": a.limit, "breed_cascade": False, "kinds": defaultdict(dict)}
    for name, small in (("shipped_views", False), ("with_small_view", True)):
        heads, fold = lite0_fold_heads(a.data, small)
        oof.OutOfFold.heads = {LITE0: heads}
        for kind, ss in photos.items():
            oof.OutOfFold.pasted = oof.pasted_folds(ss, fold)
            result["kinds"][kind][name] = oof.tally(oof.OutOfFold(find_dogs=True, breed_cascade=False), ss)
            print(oof.line(kind, {name: result["kinds"][kind][name]}), flush=True)
    atomic_write_text(a.out, json.dumps(result, indent=1) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
