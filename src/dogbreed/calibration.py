"""Breed-probability calibration: temperature scaling, NLL/ECE, breed-stratified folds, the uncertain-breed threshold.

Everything here works on breed logits that are already computed (one (N, C) tensor per member model and view), so
the bench and scripts/fit_default_heads.py can fit and cross-fit from cached features without running a backbone.
The combination rule is the one `Predictor.combine_breeds` uses (mean of temperature-scaled log-probabilities), so a
temperature fitted here means the same thing at prediction time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

# Temperature search: a log-spaced coarse grid over [0.25, 4] (steps of ~5%), then a fine one (~0.25%) around the
# best coarse point. A 1-D problem, so a grid is exact enough and, unlike a gradient fit, cannot wander off on a fold
# with a few confidently wrong photos.
TEMPERATURE_RANGE = (0.25, 4.0)
_COARSE, _FINE = 57, 41
ECE_BINS = 15


def head_logits(features: np.ndarray | torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                views: Sequence[int] | None = None) -> list[torch.Tensor]:
    """Breed logits of a linear head over cached (N, V, D) features, one (N, C) tensor per view index.

    Lets the bench score a changed head from the plain classifier's cached features: re-extracting with the changed
    head would miss the cache, whose key covers every weight.
    """
    f = torch.as_tensor(features).float()
    w, b = weight.detach().float(), bias.detach().float()
    return [f[:, v] @ w.T + b for v in (range(f.shape[1]) if views is None else views)]


def combine(parts: Sequence[torch.Tensor], temperature: float = 1.0) -> torch.Tensor:
    """Equal-weight mean over members/views of log_softmax(logits / T), renormalised: (N, C) log-probabilities."""
    logp = sum(F.log_softmax(p.float() / temperature, -1) for p in parts) / len(parts)
    return logp.log_softmax(-1)  # type: ignore[union-attr]


def nll(logp: torch.Tensor, y: np.ndarray | torch.Tensor) -> float:
    """Mean negative log-likelihood of the true breed."""
    return float(F.nll_loss(logp.float(), torch.as_tensor(y, dtype=torch.long)))


def ece(logp: torch.Tensor, y: np.ndarray | torch.Tensor, bins: int = ECE_BINS) -> float:
    """Expected calibration error of the top-1 probability: equal-width bins, weighted by photo count."""
    p = logp.float().exp()
    conf, pred = p.max(-1)
    correct = (pred == torch.as_tensor(y, dtype=torch.long)).float()
    edges = torch.linspace(0, 1, bins + 1)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            total += float(m.float().mean() * (conf[m].mean() - correct[m].mean()).abs())
    return total


def fit_temperature(parts: Sequence[torch.Tensor], y: np.ndarray | torch.Tensor) -> float:
    """The temperature minimising NLL of `combine(parts, T)` on these labels (coarse-to-fine log grid)."""
    lo, hi = np.log(TEMPERATURE_RANGE[0]), np.log(TEMPERATURE_RANGE[1])
    coarse = np.linspace(lo, hi, _COARSE)
    best = coarse[int(np.argmin([nll(combine(parts, float(np.exp(t))), y) for t in coarse]))]
    step = coarse[1] - coarse[0]
    fine = np.linspace(max(lo, best - step), min(hi, best + step), _FINE)
    return float(np.exp(fine[int(np.argmin([nll(combine(parts, float(np.exp(t))), y) for t in fine]))]))


def breed_stratified_folds(y: np.ndarray, k: int = 5, seed: int = 0) -> np.ndarray:
    """Fold id (0..k-1) per photo; each breed's photos are shuffled and dealt round-robin, so every fold holds
    about 1/k of every breed."""
    rng = np.random.default_rng(seed)
    fold = np.zeros(len(y), dtype=int)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        fold[idx] = np.arange(len(idx)) % k
    return fold


def threshold_for_accuracy(conf: np.ndarray, correct: np.ndarray, target: float = 0.9, min_kept: int = 20) -> float:
    """Smallest top-1 probability t such that photos with conf >= t are at least ``target`` accurate.

    Photos below t are the ones answered "uncertain_breed". Only thresholds that keep ``min_kept`` photos count, so
    a handful of very confident photos cannot set it; when no threshold reaches the target, the one with the best
    accuracy among those is returned.
    """
    order = np.argsort(-conf)
    c_sorted, hit = conf[order], correct[order].astype(float)
    acc = np.cumsum(hit) / np.arange(1, len(hit) + 1)  # accuracy of the top-n most confident photos
    # A threshold at c_sorted[n-1] keeps the n most confident (ties kept together: use the last index of a tie).
    last_of_tie = np.r_[c_sorted[1:] != c_sorted[:-1], True]
    ok = [n for n in range(min_kept, len(hit) + 1) if last_of_tie[n - 1] and acc[n - 1] >= target]
    if ok:
        return float(c_sorted[max(ok) - 1])
    valid = [n for n in range(min_kept, len(hit) + 1) if last_of_tie[n - 1]]
    best = max(valid, key=lambda n: acc[n - 1]) if valid else len(hit)
    return float(c_sorted[best - 1])


@dataclass
class CrossFit:
    """Out-of-fold results of fitting the temperature and the uncertain threshold on the other folds."""

    n: int
    folds: int
    temperatures: list[float]  # one per fold (fitted on the other folds)
    thresholds: list[float]
    nll_before: float
    nll_after: float
    ece_before: float
    ece_after: float
    top1: float
    flagged: float  # share of photos answered "uncertain_breed"
    acc_confident: float | None
    acc_uncertain: float | None
    n_confident: int
    n_uncertain: int


@dataclass
class OutOfFold:
    """Per-photo results of the cross-fit: each photo calibrated by the temperature and threshold of the folds
    that did not hold it, i.e. what the shipped decision does to a photo it was not fitted on."""

    logp: torch.Tensor  # (N, C) temperature-scaled log-probabilities
    flagged: np.ndarray  # calibrated top-1 below its fold's threshold: answered "uncertain_breed"
    fold: np.ndarray
    temperatures: list[float]
    thresholds: list[float]


def out_of_fold(parts: Sequence[torch.Tensor], y: np.ndarray, k: int = 5, target: float = 0.9,
                seed: int = 0) -> OutOfFold:
    """k breed-stratified folds: temperature and threshold fitted on k-1, applied to the held-out fold."""
    fold = breed_stratified_folds(y, k, seed)
    after = torch.empty(len(y), parts[0].shape[1])
    temps, ths = [], []
    flagged = np.zeros(len(y), dtype=bool)
    for f in range(k):
        tr, te = fold != f, fold == f
        t = fit_temperature([p[tr] for p in parts], y[tr])
        lp_tr = combine([p[tr] for p in parts], t)
        conf_tr, pred_tr = lp_tr.exp().max(-1)
        th = threshold_for_accuracy(conf_tr.numpy(), pred_tr.numpy() == y[tr], target)
        lp_te = combine([p[te] for p in parts], t)
        after[torch.as_tensor(te)] = lp_te
        flagged[te] = lp_te.exp().max(-1).values.numpy() < th
        temps.append(t)
        ths.append(th)
    return OutOfFold(after, flagged, fold, temps, ths)


def decision_figures(logp: torch.Tensor, y: np.ndarray, flagged: np.ndarray) -> dict[str, float | int | None]:
    """What the uncertain-breed answer does on these photos: share flagged, accuracy of each side."""
    hit = logp.argmax(-1).numpy() == y
    return {"flagged": float(flagged.mean()),
            "acc_confident": float(hit[~flagged].mean()) if (~flagged).any() else None,  # JSON has no NaN
            "acc_uncertain": float(hit[flagged].mean()) if flagged.any() else None,
            "n_confident": int((~flagged).sum()), "n_uncertain": int(flagged.sum())}


def cross_fit(parts: Sequence[torch.Tensor], y: np.ndarray, k: int = 5, target: float = 0.9,
              seed: int = 0) -> CrossFit:
    """`out_of_fold`'s summary: NLL and ECE before and after the temperature, and the uncertain-breed split."""
    before = combine(parts, 1.0)
    oof = out_of_fold(parts, y, k, target, seed)
    return CrossFit(n=len(y), folds=k, temperatures=oof.temperatures, thresholds=oof.thresholds,
                    nll_before=nll(before, y), nll_after=nll(oof.logp, y), ece_before=ece(before, y),
                    ece_after=ece(oof.logp, y), top1=float((oof.logp.argmax(-1).numpy() == y).mean()),
                    **decision_figures(oof.logp, y, oof.flagged))


__all__ = ["CrossFit", "OutOfFold", "breed_stratified_folds", "combine", "cross_fit", "decision_figures", "ece",
           "fit_temperature", "head_logits", "nll", "out_of_fold", "threshold_for_accuracy"]
