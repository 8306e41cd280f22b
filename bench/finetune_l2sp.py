"""Fine-tuning that keeps what ImageNet taught, in the variant 2 CPU cores allow: Lite0's last layer, with L2-SP.

    python bench/finetune_l2sp.py [--epochs 2] [--lr 1e-4] [--sp 0.01]
    python bench/finetune_l2sp.py --natural        # fine-tune on Stanford + the natural photos, fold by fold

What is trained: Lite0's final 1x1 convolution (`_conv_head`, 320 -> 1280 channels, 410k weights) and its batch-norm
affine, together with a 120-way head started at the ImageNet head's breed rows. Everything below stays frozen, so
the inputs of that convolution (the last MBConv block's 320x7x7 output) are computed once per photo and cached
(about 30 KB each, float16). The loss is cross-entropy on all of stanford-dogs (14,400 photos) plus L2-SP: sp/2 *
||theta - theta_pretrained||^2 on the convolution and BN affine, and the head's own pull toward the ImageNet rows
(adapt.BlendConfig's l2). Augmentation: a random horizontal flip of the cached 7x7 map (a cheap stand-in for
flipping the photo; not exact, the convolutions are not mirror-symmetric). Batch norm keeps its pretrained running
statistics (eval mode): a few epochs on Stanford photos should not move them.

By default the natural photos (web-dogs, imagenet-val-dogs) are never seen by that fine-tuning. Then the shipped
recipe runs on the fine-tuned backbone's pooled features exactly as on the default's: `adapt.cross_fit_blend`
(Stanford + natural photos, 5 breed-stratified folds), so every natural photo is scored out of fold. With
``--natural`` the fine-tuning also learns from the natural photos, each counting `BlendConfig.natural_weight`
Stanford photos as in the head recipe; then it runs once per fold of those same 5 folds, on Stanford plus the
natural photos outside the fold, and that fold's photos are scored by the head recipe fitted on that fold's
fine-tuned features (`fold_fit`): no natural photo is scored by a layer or a head that saw it. The fine-tuned
features have two views like the default's (plain and flip), the flip taken on the cached map. The comparison with
the shipped default `fast` is paired over the same 733 photos: the difference in plain and breed-balanced top-1,
with a 95% bootstrap interval over breeds. Writes bench/results/finetune_l2sp.json (finetune_l2sp_natural.json
with --natural).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from dogbreed.adapt import BlendConfig, cross_fit_blend
from dogbreed.calibration import combine
from dogbreed.card import summary
from dogbreed.features import _Images, extract
from dogbreed.fileio import atomic_write_text
from dogbreed.models import default_classifier
from dogbreed.paths import cache_dir

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from fit_default_heads import NATURAL, VIEWS, stanford_and_natural  # noqa: E402

REAL = ROOT / ".." / "shared" / "data" / "real"
BACKBONE = "efficientnet_lite0"
BOOT = 2000


def trunk_outputs(body: torch.nn.Module, files: list[str], cfg: Any, tag: str) -> np.ndarray:
    """The last MBConv block's output (N, 320, 7, 7) as float16, cached by file list: computed once, it is what
    the trainable layer reads every epoch."""
    key = hashlib.sha1(json.dumps([tag, files]).encode()).hexdigest()[:16]
    path = cache_dir() / "trunk" / f"{tag}-{key}.npy"
    if path.is_file():
        return np.load(path, mmap_mode="r")
    out = None
    loader = DataLoader(_Images(files, cfg, None), batch_size=64, num_workers=0)
    body.eval()
    with torch.inference_mode():
        for x, idx, err in loader:
            if any(err):
                raise SystemExit(f"unreadable photos: {[e for e in err if e][:3]}")
            h = body._swish(body._bn0(body._conv_stem(x)))
            for block in body._blocks:
                h = block(h, drop_connect_rate=0.0)
            if out is None:
                out = np.zeros((len(files), *h.shape[1:]), np.float16)
            out[idx.numpy()] = h.numpy().astype(np.float16)
            print(f"trunk {tag}: {int(idx[-1]) + 1}/{len(files)}", file=sys.stderr, flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, out)
    return out


class Top(torch.nn.Module):
    """conv_head + bn1 + swish + mean pool (Lite0's last layer), then the breed head."""

    def __init__(self, body: torch.nn.Module, w0: torch.Tensor, b0: torch.Tensor):
        super().__init__()
        self.conv, self.bn, self.act = body._conv_head, body._bn1, body._swish
        self.head = torch.nn.Linear(w0.shape[1], w0.shape[0])
        with torch.no_grad():
            self.head.weight.copy_(w0)
            self.head.bias.copy_(b0)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x))).mean((2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pooled(x))


def finetune(top: Top, x: np.ndarray, y: np.ndarray, args: argparse.Namespace, w0: torch.Tensor,
             b0: torch.Tensor, weight: np.ndarray | None = None) -> list[dict[str, float]]:
    """A few epochs of Adam at a low rate; L2-SP on the backbone layer, the head's pull toward the ImageNet rows.
    ``weight`` (one per photo) makes the cross-entropy a weighted mean, as `adapt.fit_blend` weighs photos."""
    wt = torch.ones(len(y)) if weight is None else torch.as_tensor(weight, dtype=torch.float32)
    sp0 = {n: p.detach().clone() for n, p in top.named_parameters() if not n.startswith("head.")}
    params = [p for n, p in top.named_parameters() if n.startswith("head.")]
    opt = torch.optim.Adam([{"params": [p for n, p in top.named_parameters() if not n.startswith("head.")],
                             "lr": args.lr}, {"params": params, "lr": args.head_lr}])
    top.train()
    top.bn.eval()  # keep the pretrained running statistics
    g = torch.Generator().manual_seed(0)
    l2 = BlendConfig().l2
    log = []
    for epoch in range(1, args.epochs + 1):
        t0, total, seen = time.time(), 0.0, 0
        for idx in torch.randperm(len(y), generator=g).split(args.batch):
            xb = torch.from_numpy(np.asarray(x[idx.numpy()], np.float32))
            flip = torch.rand(len(idx), generator=g) < 0.5
            xb[flip] = xb[flip].flip(-1)
            wb = wt[idx]
            ce = (F.cross_entropy(top(xb), torch.from_numpy(y[idx.numpy()]), reduction="none") * wb).sum() / wb.sum()
            pull = sum(((p - sp0[n]) ** 2).sum() for n, p in top.named_parameters() if n in sp0)
            pull_head = ((top.head.weight - w0) ** 2).sum() + ((top.head.bias - b0) ** 2).sum()
            loss = ce + args.sp / 2 * pull + l2 / 2 * pull_head  # fit_head's objective: mean CE + l2/2 ||dW||^2
            opt.zero_grad()
            loss.backward()
            opt.step()
            total, seen = total + ce.item() * len(idx), seen + len(idx)
        log.append({"epoch": epoch, "train_ce": total / seen, "seconds": round(time.time() - t0, 1)})
        print(f"epoch {epoch}: train ce {total / seen:.4f} ({time.time() - t0:.0f}s)", file=sys.stderr, flush=True)
    top.eval()
    return log


def pooled_features(top: Top, trunk: np.ndarray) -> np.ndarray:
    """(N, 2, 1280) pooled features of the fine-tuned layer, plain and flipped map (the default's two views), the
    layout cross_fit_blend reads; scoring reads the plain view."""
    with torch.inference_mode():
        parts = []
        for i in range(0, len(trunk), 256):
            x = torch.from_numpy(np.asarray(trunk[i:i + 256], np.float32))
            parts.append(torch.stack([top.pooled(x), top.pooled(x.flip(-1))], 1))
    return torch.cat(parts).numpy()


def fold_fit(body: torch.nn.Module, ts: np.ndarray, ys: np.ndarray, tn: np.ndarray, yn: np.ndarray,
             args: argparse.Namespace, w0: torch.Tensor, b0: torch.Tensor,
             cfgb: BlendConfig) -> tuple[np.ndarray, list[list[dict[str, float]]]]:
    """Out-of-fold logits (N_natural, 2, C) with the natural photos in the fine-tuning: per fold, the layer is
    fine-tuned on Stanford + the other folds' natural photos (weighted as the head recipe weighs them), then the
    head recipe (`adapt.fit_blend`, warm-started from its Stanford-only fit as `cross_fit_blend` does) is fitted on
    that layer's features of the same photos, and scores the fold."""
    import copy

    from dogbreed.adapt import fit_blend
    from dogbreed.calibration import breed_stratified_folds

    fold = breed_stratified_folds(yn, cfgb.folds, cfgb.seed)  # the folds cross_fit_blend deals
    oof = np.zeros((len(yn), 2, w0.shape[0]), dtype=np.float32)
    logs = []
    for f in range(cfgb.folds):
        tr = fold != f
        top = Top(copy.deepcopy(body), w0, b0)
        x = np.concatenate([ts, tn[tr]])
        weight = np.r_[np.ones(len(ys)), np.full(int(tr.sum()), cfgb.natural_weight)]
        logs.append(finetune(top, x, np.r_[ys, yn[tr]], args, w0, b0, weight))
        xs, xn = pooled_features(top, ts), pooled_features(top, tn)
        start = fit_blend((xs, ys), (xn[:0], yn[:0]), w0, b0, cfgb)
        w, b = fit_blend((xs, ys), (xn[tr], yn[tr]), w0, b0, cfgb, start=start)
        oof[~tr] = (torch.as_tensor(xn[~tr]).float() @ w.T + b).numpy()
        print(f"fold {f + 1}/{cfgb.folds} scored ({int((~tr).sum())} photos)", file=sys.stderr, flush=True)
    return oof, logs


def paired_difference(a: np.ndarray, b: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """b - a in plain and breed-balanced top-1 over the same photos, 95% bootstrap over breeds (paired: a resampled
    breed brings both models' answers on its photos)."""
    breeds = np.unique(y)
    per_a = np.array([a[y == c].mean() for c in breeds])
    per_b = np.array([b[y == c].mean() for c in breeds])
    ka, kb = np.array([a[y == c].sum() for c in breeds]), np.array([b[y == c].sum() for c in breeds])
    n = np.array([(y == c).sum() for c in breeds])
    idx = np.random.default_rng(0).integers(0, len(breeds), (BOOT, len(breeds)))
    bal = (per_b[idx] - per_a[idx]).mean(1)
    plain = (kb[idx].sum(1) - ka[idx].sum(1)) / n[idx].sum(1)
    return {"top1_diff": float(b.mean() - a.mean()), "top1_diff_ci": np.percentile(plain, [2.5, 97.5]).tolist(),
            "balanced_diff": float(per_b.mean() - per_a.mean()),
            "balanced_diff_ci": np.percentile(bal, [2.5, 97.5]).tolist()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(REAL))
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--lr", type=float, default=1e-4, help="the backbone layer's learning rate (Adam)")
    ap.add_argument("--head-lr", type=float, default=1e-4)
    ap.add_argument("--sp", type=float, default=0.01, help="L2-SP strength on the backbone layer")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--stanford-per-breed", type=int, default=None,
                    help="fit on N Stanford photos per breed (seeded sample) instead of all 120; the default recipe "
                         "it is compared with is then refitted on the same photos, so the pair stays fair")
    ap.add_argument("--natural", action="store_true",
                    help="fine-tune on the natural photos too, once per fold (scored out of fold)")
    ap.add_argument("--out", default=None,
                    help="default bench/results/finetune_l2sp.json (finetune_l2sp_natural.json with --natural)")
    args = ap.parse_args()
    args.out = args.out or str(ROOT / "bench" / "results" /
                               ("finetune_l2sp_natural.json" if args.natural else "finetune_l2sp.json"))
    torch.set_num_threads(2)
    (fs, ys), (fn, yn, source) = stanford_and_natural(Path(args.data))
    if args.stanford_per_breed:  # a cheaper run: the trunk pass over every photo is most of the cost
        rng = np.random.default_rng(0)
        keep = np.sort(np.concatenate([rng.permutation(np.flatnonzero(ys == c))[:args.stanford_per_breed]
                                       for c in np.unique(ys)]))
        fs, ys = [fs[i] for i in keep], ys[keep]
    clf = default_classifier(BACKBONE)
    body, cfg = clf.backbone.body, clf.preprocess_cfg
    w0, b0 = clf.breed_head.weight.detach().clone(), clf.breed_head.bias.detach().clone()
    ts, tn = trunk_outputs(body, fs, cfg, "stanford"), trunk_outputs(body, fn, cfg, "natural")
    cfgb = BlendConfig()
    if args.natural:
        oof_ft, log = fold_fit(body, np.asarray(ts), ys, np.asarray(tn), yn, args, w0, b0, cfgb)
    else:
        top = Top(body, w0, b0)
        log = finetune(top, ts, ys, args, w0, b0)
        xs, xn = pooled_features(top, ts), pooled_features(top, tn)
        _, oof_ft = cross_fit_blend((xs, ys), (xn, yn), w0, b0, cfgb)
    # The shipped default `fast`, out of fold as bench/accuracy.py scores it: its cached features (plain + flip for
    # fitting, plain scored), the same recipe and folds.
    base = default_classifier(BACKBONE)
    es, en = (extract(f, base, views=VIEWS).features for f in (fs, fn))
    _, oof_def = cross_fit_blend((es, ys), (en, yn), w0, b0, cfgb)
    res: dict[str, Any] = {"what": __doc__.split("\n\n")[0], "stanford_photos": len(ys), "natural_photos": len(yn),
                           "settings": vars(args) | {"l2_head": cfgb.l2},
                           "epochs": log, "sets": {}}
    src = np.asarray(source)
    for name in (*NATURAL, "all"):
        m = np.ones(len(yn), bool) if name == "all" else src == name
        lp_d, lp_f = (combine([torch.as_tensor(o[m, 0])]) for o in (oof_def, oof_ft))
        hit_d, hit_f = (lp.argmax(-1).numpy() == yn[m] for lp in (lp_d, lp_f))
        res["sets"][name] = {"default": {k: v for k, v in summary(lp_d, yn[m]).items() if k != "ece"},
                             "finetuned": {k: v for k, v in summary(lp_f, yn[m]).items() if k != "ece"},
                             "paired": paired_difference(hit_d, hit_f, yn[m])}
    atomic_write_text(Path(args.out), json.dumps(res, indent=1))
    for name, r in res["sets"].items():
        p = r["paired"]
        print(f"{name} ({r['default']['photos']} photos, {r['default']['breeds']} breeds): default "
              f"{r['default']['top1']:.1%} / {r['default']['macro_top1']:.1%} -> fine-tuned "
              f"{r['finetuned']['top1']:.1%} / {r['finetuned']['macro_top1']:.1%}; breed-balanced diff "
              f"{p['balanced_diff'] * 100:+.1f} pts ({p['balanced_diff_ci'][0] * 100:+.1f} to "
              f"{p['balanced_diff_ci'][1] * 100:+.1f})")


if __name__ == "__main__":
    main()
