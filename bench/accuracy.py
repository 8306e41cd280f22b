"""Breed accuracy on photos no backbone trained on: web-dogs and imagenet-val-dogs, plain and breed-balanced.

For `fast` (Lite0) and `best` (Lite0+Lite1+Lite2, plain+flip), with the plain ImageNet heads and with the shipped
default heads. The default heads are fitted on stanford-dogs *and* on these natural photos (adapt.fit_blend), so
their figures here are out of fold: each photo is scored by heads fitted without its fold (5 breed-stratified folds,
adapt.cross_fit_blend, the same function scripts/fit_default_heads.py ships). Also reported:
- breed groups (how many natural photos a breed had for fitting), so a method that treats breeds unequally shows it;
- the 21 breeds with no natural photo, on Stanford test photos (heads fitted on the Stanford *train* list only);
- `--grid`: the (l2, natural weight) grid the shipped setting was picked from, out of fold, for Lite0.
Intervals: 95% bootstrap over breeds. Features come from the cache (scripts/warm_feature_cache.py).
Run: python bench/accuracy.py [--grid]  ->  bench/results/accuracy.json + Markdown on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dogbreed.adapt import BlendConfig, cross_fit_blend, fit_blend
from dogbreed.breeds import stanford_breeds
from dogbreed.calibration import combine, decision_figures, ece, head_logits, out_of_fold
from dogbreed.card import Scored, summary, write_card
from dogbreed.data import load_dataset
from dogbreed.features import extract
from dogbreed.fileio import atomic_write_text
from dogbreed.models import default_classifier
from dogbreed.resolve import BEST_BACKBONES, shipped_decision

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from fit_default_heads import CONFIDENT_ACCURACY, NATURAL, VIEWS, stanford_and_natural  # noqa: E402

REAL = ROOT / ".." / "shared" / "data" / "real"
MODES = {"fast": (BEST_BACKBONES[:1], (0,)), "best": (tuple(BEST_BACKBONES), (0, 1))}
GRID = [(0.3, 3.0, "all"), (0.3, 10.0, "all"), (0.1, 10.0, "all"), (0.1, 30.0, "all"), (0.03, 10.0, "all"),
        (0.1, 10.0, "natural_breeds"), (0.1, 30.0, "natural_breeds"), (0.03, 10.0, "natural_breeds")]


def load(real: Path) -> dict[str, Any]:
    stan = load_dataset(real / "stanford-dogs")
    w2i = {b.wnid: i for i, b in enumerate(stanford_breeds())}
    s_files = [s.path for s in stan.samples]
    s_y = np.array([w2i[s.wnid] for s in stan.samples])
    s_train = np.array([s.official_split == "train" for s in stan.samples])
    _, (nat_files, nat_y, src) = stanford_and_natural(real)
    return {"s_files": s_files, "s_y": s_y, "s_train": s_train, "n_files": nat_files, "n_y": nat_y,
            "src": np.array(src)}


def features(files: list[str], backbone: str) -> np.ndarray:
    ex = extract(files, default_classifier(backbone), views=VIEWS, progress=True)
    if not ex.ok.all():
        raise SystemExit(f"{int((~ex.ok).sum())} unreadable photos")
    return ex.features


def figures(logp: torch.Tensor, d: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for name in NATURAL:
        m = d["src"] == name
        if m.any():
            s = summary(logp[torch.as_tensor(m)], d["n_y"][m])
            out[name] = {k: v for k, v in s.items() if k != "ece"}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(REAL))
    ap.add_argument("--grid", action="store_true", help="also the (l2, natural weight) grid for Lite0 (slow)")
    ap.add_argument("--out", default=None, help="default bench/results/accuracy.json")
    ap.add_argument("--fast-only", action="store_true",
                    help="Lite0 only: `fast` rows, breed groups, Stanford check, cards (no Lite1/Lite2 features); "
                         "writes accuracy_fast.json unless --out")
    ap.add_argument("--cards", default=str(ROOT / "docs" / "cards"),
                    help="write the out-of-fold model card of `fast` for each natural set here ('' to skip)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    d = load(Path(args.data))
    cfg = BlendConfig()
    plain, oof, heads, stan_only, xs, xn = {}, {}, {}, {}, {}, {}
    backbones = BEST_BACKBONES[:1] if args.fast_only else BEST_BACKBONES
    for b in backbones:
        xs[b], xn[b] = features(d["s_files"], b), features(d["n_files"], b)
        base = default_classifier(b)
        w0, b0 = base.breed_head.weight.detach(), base.breed_head.bias.detach()
        plain[b] = head_logits(xn[b], w0, b0)
        heads[b], oof_b = cross_fit_blend((xs[b], d["s_y"]), (xn[b], d["n_y"]), w0, b0, cfg)
        oof[b] = [torch.as_tensor(oof_b[:, v]) for v in range(len(VIEWS))]
        # Stanford only (what `dogbreed adapt --data stanford-dogs` does in spirit): no natural photo, no folds.
        w, bb = fit_blend((xs[b], d["s_y"]), (xn[b][:0], d["n_y"][:0]), w0, b0, cfg)
        stan_only[b] = head_logits(xn[b], w, bb)
        print(f"{b} done", file=sys.stderr)
    res: dict[str, Any] = {"config": asdict(cfg), "rows": []}
    for mode, (members, views) in MODES.items():
        if not set(members) <= set(backbones):
            continue
        for head, src in (("ImageNet head (--model imagenet)", plain),
                          ("Stanford-dogs only, no natural photos", stan_only),
                          ("default (shipped recipe, out of fold)", oof)):
            lp = combine([src[m][v] for m in members for v in views])
            res["rows"].append({"mode": mode, "head": head, **figures(lp, d)})
    if set(BEST_BACKBONES) <= set(backbones):
        res["rows"].append({"mode": "fast + breed cascade (shipped)", "head": "default (shipped recipe, out of fold)",
                            **figures(breed_cascade(oof), d)})
    res["groups"] = groups(d, plain, oof)
    res["stanford_unseen_breeds"] = stanford_check(d, xs, xn, cfg)
    if args.grid:
        res["grid"] = grid(d, xs, xn)
    if args.cards:
        res["cards_calibration_fast"] = cards(d, oof, Path(args.cards))
    out = args.out or str(ROOT / "bench" / "results" / ("accuracy_fast.json" if args.fast_only else "accuracy.json"))
    atomic_write_text(Path(out), json.dumps(res, indent=1))
    print(markdown(res))


def breed_cascade(oof: dict) -> torch.Tensor:
    """What the shipped `fast` answers (`inference.scoring.BreedCascade`): Lite0 plain, calibrated with `fast`'s
    temperature; a photo under its uncertain threshold takes `best`'s answer (every backbone, plain + flip, `best`'s
    temperature). Both settings are the shipped ones (fitted out of fold on these photos), nothing chosen here."""
    fast, best = shipped_decision("fast"), shipped_decision("best")
    lp = combine([oof[BEST_BACKBONES[0]][0]], fast["temperature"])
    unsure = lp.exp().max(-1).values < fast["uncertain_threshold"]
    again = combine([oof[b][v] for b in BEST_BACKBONES for v in MODES["best"][1]], best["temperature"])
    return torch.where(unsure[:, None], again, lp)


def cards(d: dict[str, Any], oof: dict, out: Path) -> dict[str, Any]:
    """`dogbreed card`'s files for the default `fast` recipe on each natural set, out of fold twice over, as the
    shipped model would answer photos it was not fitted on: heads fitted without the photo's fold (the shipped heads
    saw these photos, so a card of the shipped model on them would flatter it), then the temperature and
    uncertain-breed threshold of the 5-fold cross-fit that scripts/fit_default_heads.py reports (fitted without the
    photo's fold; the shipped ones are fitted on all 733). The README's calibration figures are these."""
    parts = [oof[BEST_BACKBONES[0]][0]]
    cal = out_of_fold(parts, d["n_y"], k=5, target=CONFIDENT_ACCURACY)
    pooled = {"photos": len(d["n_y"]), "ece_before": ece(combine(parts), d["n_y"]),
              "ece_after": ece(cal.logp, d["n_y"]), **decision_figures(cal.logp, d["n_y"], cal.flagged)}
    names = [b.name for b in stanford_breeds()]
    for name in NATURAL:
        m = d["src"] == name
        files = [os.path.relpath(f, ROOT) for f, k in zip(d["n_files"], m, strict=True) if k]
        scored = Scored(files, d["n_y"][m], cal.logp[torch.as_tensor(m)], [], [])
        decision = {"temperatures": cal.temperatures, "thresholds": cal.thresholds,
                    "ece_before_temperature": ece(combine(parts)[torch.as_tensor(m)], d["n_y"][m]),
                    **decision_figures(scored.logp, scored.labels, cal.flagged[m]),
                    "all_natural_photos": pooled}
        write_card(scored, names, out / name, title=f"Model card: default `fast` (Lite0) on {name}, out of fold",
                   about={"model": "default", "quality": "fast", "data": f"../shared/data/real/{name}",
                          "note": "out of fold: each photo is scored by heads fitted without its fold (5 "
                                  "breed-stratified folds; the shipped heads were fitted on all of these photos), "
                                  "then by the temperature and uncertain-breed threshold fitted without its fold "
                                  f"(over all {len(d['n_y'])} natural photos: ECE {pooled['ece_before']:.3f} -> "
                                  f"{pooled['ece_after']:.3f}, {pooled['flagged']:.1%} flagged)"},
                   decision=decision)
    return pooled


def groups(d: dict[str, Any], plain: dict, oof: dict) -> list[dict[str, Any]]:
    """`fast` per breed group, grouped by how many natural photos each breed had to fit on (all of them count:
    out of fold, a photo's own fold is left out)."""
    y = d["n_y"]
    count = np.bincount(y, minlength=120)
    rows = []
    for name, lo, hi in (("1-3 natural photos", 1, 3), ("4-9 natural photos", 4, 9), ("10+ natural photos", 10, 999)):
        m = (count[y] >= lo) & (count[y] <= hi)
        row = {"group": name, "breeds": int(len(np.unique(y[m]))), "photos": int(m.sum())}
        for head, src in (("imagenet", plain), ("default", oof)):
            s = summary(combine([src[BEST_BACKBONES[0]][0]])[torch.as_tensor(m)], y[m])
            row[head] = {"top1": s["top1"], "macro_top1": s["macro_top1"]}
        rows.append(row)
    return rows


def stanford_check(d: dict[str, Any], xs: dict, xn: dict, cfg: BlendConfig) -> dict[str, Any]:
    """Breeds with no natural photo are fitted on Stanford photos alone: do they lose? Heads fitted on the Stanford
    train list + all natural photos, scored on the Stanford test list (flattering in level, fair as a comparison)."""
    b = BEST_BACKBONES[0]
    base = default_classifier(b)
    w0, b0 = base.breed_head.weight.detach(), base.breed_head.bias.detach()
    tr, te = d["s_train"], ~d["s_train"]
    w, bb = fit_blend((xs[b][tr], d["s_y"][tr]), (xn[b], d["n_y"]), w0, b0, cfg)
    has_natural = np.isin(d["s_y"], np.unique(d["n_y"]))
    out = {}
    for name, m in (("breeds without natural photos", te & ~has_natural), ("breeds with natural photos",
                                                                             te & has_natural)):
        y = d["s_y"][m]
        row = {"photos": int(m.sum()), "breeds": int(len(np.unique(y)))}
        for head, (ww, bias) in (("imagenet", (w0, b0)), ("default", (w, bb))):
            s = summary(combine(head_logits(xs[b][m], ww, bias, (0,))), y)
            row[head] = {"top1": s["top1"], "macro_top1": s["macro_top1"], "macro_top1_ci": s["macro_top1_ci"]}
        out[name] = row
    return out


def grid(d: dict[str, Any], xs: dict, xn: dict) -> list[dict[str, Any]]:
    b = BEST_BACKBONES[0]
    base = default_classifier(b)
    w0, b0 = base.breed_head.weight.detach(), base.breed_head.bias.detach()
    rows = []
    for l2, nw, softmax in GRID:
        cfg = replace(BlendConfig(), l2=l2, natural_weight=nw, natural_softmax=softmax)
        _, oof_b = cross_fit_blend((xs[b], d["s_y"]), (xn[b], d["n_y"]), w0, b0, cfg)
        rows.append({"l2": l2, "natural_weight": nw, "natural_softmax": softmax,
                     **figures(combine([torch.as_tensor(oof_b[:, 0])]), d),
                     "stanford_unseen_breeds": stanford_check(d, xs, xn, cfg)})
        print(f"grid {l2} {nw} {softmax} done", file=sys.stderr)
    return rows


def _cell(s: dict[str, Any]) -> str:
    return (f"{s['top1']:.1%} | {s['macro_top1']:.1%} ({s['macro_top1_ci'][0]:.1%}–{s['macro_top1_ci'][1]:.1%}) | "
            f"{s['macro_top5']:.1%}")


def markdown(res: dict[str, Any]) -> str:
    n = res["rows"][0]
    head = " | ".join(f"{k} ({n[k]['photos']} photos, {n[k]['breeds']} breeds): top-1 | breed-balanced top-1 (95% CI) "
                      "| breed-balanced top-5" for k in NATURAL)
    out = [f"| mode | head | {head} |", "|---|---|" + "---|" * 3 * len(NATURAL)]
    for r in res["rows"]:
        out.append(f"| {r['mode']} | {r['head']} | " + " | ".join(_cell(r[k]) for k in NATURAL) + " |")
    out += ["", "`fast` by breed group (natural photos, out of fold): ImageNet head -> default", "",
            "| group | breeds | photos | top-1 | breed-balanced top-1 |", "|---|--:|--:|---|---|"]
    for g in res["groups"]:
        out.append(f"| {g['group']} | {g['breeds']} | {g['photos']} | {g['imagenet']['top1']:.1%} -> "
                   f"{g['default']['top1']:.1%} | {g['imagenet']['macro_top1']:.1%} -> "
                   f"{g['default']['macro_top1']:.1%} |")
    out += ["", "`fast` on Stanford test photos (heads fitted on the train list + natural photos): ImageNet head -> "
            "default", ""]
    for name, r in res["stanford_unseen_breeds"].items():
        out.append(f"- {name} ({r['breeds']} breeds, {r['photos']} photos): top-1 {r['imagenet']['top1']:.1%} -> "
                   f"{r['default']['top1']:.1%}")
    if "grid" in res:
        out += ["", "Grid (Lite0, out of fold): l2, natural weight, natural softmax -> web-dogs top-1 / "
                "breed-balanced, imagenet-val-dogs top-1; Stanford test top-1 of the breeds without natural photos", ""]
        out += [f"- l2={g['l2']}, weight={g['natural_weight']}, {g['natural_softmax']}: {g['web-dogs']['top1']:.1%} / "
                f"{g['web-dogs']['macro_top1']:.1%}, {g['imagenet-val-dogs']['top1']:.1%}; "
                f"{g['stanford_unseen_breeds']['breeds without natural photos']['default']['top1']:.1%}"
                for g in res["grid"]]
    return "\n".join(out)


if __name__ == "__main__":
    main()
