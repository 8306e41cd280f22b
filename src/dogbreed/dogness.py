"""Dog or not: a small calibrated head on top of a backbone's ImageNet head (and optionally its pooled features).

The 1000-class ImageNet head already knows about everything that is not a dog; what it gets wrong is the border
cases real photos are full of (hairless cats read as Chihuahuas, dingoes read as wolves). The detector turns the
head's output into a few summary features (log dog odds, cat / big-cat / wolf-fox mass, entropy, energy, top-1
log-probability) and fits a logistic regression on real dog and not-dog photos. Prior knowledge is kept as sign
constraints: more cat or wolf/fox mass can never make a photo *more* of a dog, whatever the fitting photos say
(a fit on dingoes alone would otherwise learn "wolf-like means dog"). An optional, strongly regularised block on the
pooled features can be added (``feature_l2``); measured cross-source it did not pay (bench/dog_or_not.py), so the
shipped detector does not use it.

Calibration: Platt scaling fitted on out-of-fold scores; thresholds for a target dog recall are taken from the same
out-of-fold scores, for every combination of backbones and views a `Predictor` can run, and stored with the
weights (``<name>.safetensors`` + ``<name>.json``).

Scoring runs on numpy arrays (prediction on ONNX Runtime never loads torch); fitting uses torch's L-BFGS and imports
it inside the fitting functions.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from safetensors.numpy import load, save

from .breeds import BIG_CAT_INDICES, DOG_INDICES, DOMESTIC_CAT_INDICES, WOLF_FOX_INDICES
from .errors import ModelLoadError
from .fileio import atomic_write_pair, read_json, read_safetensors

if TYPE_CHECKING:
    import torch

FORMAT = "dogbreed-dog-detector/1"
DEFAULT_NAME = "dog_detector"
IMAGENET_FEATURES = ("log_dog_odds", "log_cat_mass", "log_big_cat_mass", "log_wolf_fox_mass", "log_dog_mass",
                     "entropy", "energy", "log_top1")
# +1: weight >= 0, -1: weight <= 0, 0: free. Dog evidence may only raise the score, cat/wolf evidence only lower it.
IMAGENET_SIGNS = (1, -1, -1, -1, 1, 0, 0, 0)
RECALL_GRID = (0.9, 0.95, 0.97, 0.98, 0.99, 0.995, 0.998, 0.999)
_NON_DOG = tuple(i for i in range(1000) if i not in set(DOG_INDICES))
_CLAMP = -30.0  # log-masses of exactly-zero probability would be -inf; the floor keeps features finite


# logsumexp / log_softmax / sigmoid in numpy here rather than scipy.special's: importing scipy.special takes 0.24 s,
# and a whole `dogbreed predict` starts in about 0.6 s.
def logsumexp(x: np.ndarray, axis: int = -1) -> np.ndarray:
    m = np.max(x, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    return np.log(np.sum(np.exp(x - m), axis=axis)) + np.squeeze(m, axis)


def log_softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return x - np.expand_dims(logsumexp(x, axis), axis)


def imagenet_features(imagenet_logits: np.ndarray) -> np.ndarray:
    """(..., 1000) ImageNet logits -> (..., 8) float32 summary features, in the order of ``IMAGENET_FEATURES``."""
    logits = np.asarray(imagenet_logits, dtype=np.float32)
    lp = log_softmax(logits)

    def log_mass(idx: Sequence[int]) -> np.ndarray:
        return logsumexp(lp[..., list(idx)])

    dog = log_mass(DOG_INDICES)
    entropy = -(np.exp(lp) * lp).sum(-1)
    feats = [dog - log_mass(_NON_DOG), log_mass(DOMESTIC_CAT_INDICES), log_mass(BIG_CAT_INDICES),
             log_mass(WOLF_FOX_INDICES), dog, entropy, logsumexp(logits), lp.max(-1)]
    return np.maximum(np.stack(feats, -1), _CLAMP).astype(np.float32)


def sigmoid(z: np.ndarray) -> np.ndarray:
    """Logistic function without overflow, keeping tiny probabilities (ranking photos far from any threshold)."""
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1 / (1 + e), e / (1 + e))


@dataclass
class DogHead:
    """Logistic head for one backbone; ``logit`` is already Platt-calibrated (scale and shift folded in)."""

    backbone: str
    mean: np.ndarray  # (8,) standardisation of the ImageNet summary features
    std: np.ndarray
    weight: np.ndarray  # (8,)
    bias: float
    feature_mean: np.ndarray | None = None  # (D,) optional pooled-feature block
    feature_std: np.ndarray | None = None
    feature_weight: np.ndarray | None = None

    def __post_init__(self) -> None:  # float32 numpy, whatever the fit handed over (torch tensors included)
        for k in ("mean", "std", "weight", "feature_mean", "feature_std", "feature_weight"):
            v = getattr(self, k)
            if v is not None:
                setattr(self, k, np.asarray(v.detach() if hasattr(v, "detach") else v, dtype=np.float32))
        self.bias = float(self.bias)

    def logit(self, imagenet_logits: np.ndarray, features: np.ndarray | None = None) -> np.ndarray:
        x = (imagenet_features(imagenet_logits) - self.mean) / self.std
        z = x @ self.weight + np.float32(self.bias)
        if self.feature_weight is not None:
            if features is None or features.shape[-1] != self.feature_weight.shape[0]:
                raise ValueError(f"dog head for {self.backbone} needs its {self.feature_weight.shape[0]}-d features")
            fz = (np.asarray(features, dtype=np.float32) - self.feature_mean) / self.feature_std
            z = z + fz @ self.feature_weight
        return z


def combo_key(backbones: Sequence[str], views: Sequence[str]) -> str:
    """Name of a member/view combination, e.g. 'efficientnet_lite0+efficientnet_lite2/plain+flip'."""
    return "+".join(sorted(set(backbones))) + "/" + "+".join(v for v in ("plain", "flip") if v in set(views))


@dataclass
class Cascade:
    """Fast detector first; a stronger member only for photos whose first dog probability is in ``band``.

    Outside the band the first probability stands (it is far from ``threshold`` on either side); inside it the
    photo's dog probability is the detector's mean calibrated logit over ``second`` ((backbone, view) pairs, which may
    reuse the first member's output), compared with ``threshold``. So one threshold decides every photo.
    """

    first: str
    band: tuple[float, float]
    second: list[tuple[str, str]]
    threshold: float = 0.5

    def to_dict(self) -> dict[str, Any]:
        return {"first": self.first, "band": list(self.band), "second": [list(p) for p in self.second],
                "threshold": self.threshold}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Cascade:
        lo, hi = (float(x) for x in d["band"])
        if not 0 <= lo <= float(d.get("threshold", 0.5)) <= hi <= 1:
            raise ValueError(f"dog cascade: band {d['band']} must hold its threshold {d.get('threshold')}")
        return cls(str(d["first"]), (lo, hi), [(str(b), str(v)) for b, v in d["second"]],
                   float(d.get("threshold", 0.5)))

    def extra_backbones(self) -> list[str]:
        return sorted({b for b, _ in self.second if b != self.first})


# The cascade `fast` ships: Lite0 plain first; Lite0 plain + Lite2 plain + Lite2 flip in the band. Chosen with
# bench/dog_or_not.py (both cross-source directions; see README "Dog or not" for the grid it was picked from).
DEFAULT_CASCADE = Cascade("efficientnet_lite0", (0.1, 0.97),
                          [("efficientnet_lite0", "plain"), ("efficientnet_lite2", "plain"),
                           ("efficientnet_lite2", "flip")], 0.5)


@dataclass
class DogDetector:
    """Per-backbone calibrated heads plus dog-recall thresholds for each backbone/view combination."""

    heads: dict[str, DogHead]
    target_recall: float = 0.99
    thresholds: dict[str, float] = field(default_factory=dict)  # combo_key -> threshold at target_recall
    recall_curve: dict[str, list[list[float]]] = field(default_factory=dict)  # combo_key -> [[recall, threshold]]
    meta: dict[str, Any] = field(default_factory=dict)
    cascade: Cascade | None = None  # used by a one-member plain-view Predictor whose backbone is cascade.first

    # -- scoring ---------------------------------------------------------------------------------------------
    def logit(self, imagenet_logits: np.ndarray, features: np.ndarray | None = None,
              backbone: str | None = None) -> np.ndarray:
        return self._head(backbone).logit(imagenet_logits, features)

    def probability(self, imagenet_logits: np.ndarray, features: np.ndarray | None = None,
                    backbone: str | None = None) -> np.ndarray:
        """Calibrated P(dog in photo) for one backbone's outputs; leading dims are kept."""
        return sigmoid(self.logit(imagenet_logits, features, backbone))

    def combine(self, outputs: Sequence[tuple[str, np.ndarray, np.ndarray | None]]) -> np.ndarray:
        """(backbone, imagenet_logits, features) per member and view -> P(dog): mean calibrated logit, sigmoid.

        Outputs from backbones without a head are skipped; raises if none has one.
        """
        zs = [self.logit(imnet, feats, bb) for bb, imnet, feats in outputs if bb in self.heads]
        if not zs:
            raise ValueError(f"dog detector has heads for {sorted(self.heads)}, none of the given backbones")
        return sigmoid(np.stack(zs).mean(0))

    def cascade_probability(self, outputs: dict[tuple[str, str], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """ImageNet logits for every (backbone, view) the cascade names -> (its dog probability, in-band mask).

        Computes the second stage for every photo (for benchmarks); `Predictor` runs it only inside the band.
        """
        c = self.cascade
        if c is None:
            raise ValueError("this dog detector has no cascade")
        p = self.probability(outputs[(c.first, "plain")], None, c.first)
        band = (p >= c.band[0]) & (p <= c.band[1])
        p2 = self.combine([(b, outputs[(b, v)], None) for b, v in c.second])
        return np.where(band, p2, p), band

    def _head(self, backbone: str | None) -> DogHead:
        if backbone is None:
            if len(self.heads) != 1:
                raise ValueError(f"name the backbone: the detector has heads for {sorted(self.heads)}")
            return next(iter(self.heads.values()))
        if backbone not in self.heads:
            raise KeyError(f"dog detector has no head for {backbone!r} (has {sorted(self.heads)})")
        return self.heads[backbone]

    # -- thresholds ------------------------------------------------------------------------------------------
    def threshold(self, backbones: Sequence[str], views: Sequence[str] = ("plain",),
                  target_recall: float | None = None) -> float:
        """Dog-probability threshold that kept ``target_recall`` of validation dogs for this combination.

        Falls back to the nearest stored combination (same backbones, other views; then the first head alone).
        """
        known = [b for b in backbones if b in self.heads] or [next(iter(self.heads))]
        keys = [combo_key(known, views), combo_key(known, ("plain",)), combo_key(known[:1], views),
                combo_key(known[:1], ("plain",))]
        key = next((k for k in keys if k in self.thresholds), None)
        if key is None:
            return 0.5
        if target_recall is None or abs(target_recall - self.target_recall) < 1e-9:
            return self.thresholds[key]
        curve = np.array(self.recall_curve.get(key, []), dtype=float)
        if not len(curve):
            return self.thresholds[key]
        # Thresholds fall as recall rises; interpolate in recall between the stored points.
        return float(np.interp(target_recall, curve[:, 0], curve[:, 1]))

    # -- storage ---------------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write ``<path>.safetensors`` and ``<path>.json`` (a suffix on ``path`` is dropped); returns the JSON."""
        base = detector_stem(path)
        base.parent.mkdir(parents=True, exist_ok=True)
        tensors: dict[str, np.ndarray] = {}
        heads_cfg = {}
        for name, h in self.heads.items():
            for k in ("mean", "std", "weight", "feature_mean", "feature_std", "feature_weight"):
                v = getattr(h, k)
                if v is not None:
                    tensors[f"{name}.{k}"] = np.ascontiguousarray(v, dtype=np.float32)
            heads_cfg[name] = {"bias": h.bias, "uses_features": h.feature_weight is not None}
        cfg = {"format": FORMAT, "imagenet_features": list(IMAGENET_FEATURES), "heads": heads_cfg,
               "target_recall": self.target_recall, "thresholds": self.thresholds,
               "recall_curve": self.recall_curve, "meta": self.meta,
               "cascade": self.cascade.to_dict() if self.cascade is not None else None}
        atomic_write_pair((_with(base, ".safetensors"), save(tensors)),
                          (_with(base, ".json"), json.dumps(cfg, indent=1).encode()))
        return _with(base, ".json")

    @classmethod
    def load(cls, path: str | Path) -> DogDetector:
        """Read a detector written by `save` (give the .json, the .safetensors or the common stem)."""
        js, st = detector_files(path)
        if not js.is_file() or not st.is_file():
            raise ModelLoadError(f"dog detector {path}: need both {js.name} and {st.name}")
        cfg, tensors = read_json(js, "dog detector config"), read_safetensors(st, as_numpy=True)
        try:
            return cls._from(cfg, tensors)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ModelLoadError(f"dog detector {js}: {e}") from None

    @classmethod
    def _from(cls, cfg: dict[str, Any], tensors: dict[str, np.ndarray]) -> DogDetector:
        if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
            found = cfg.get("format") if isinstance(cfg, dict) else None
            raise ModelLoadError(f"not a dog detector (format {found!r}, expected {FORMAT!r})")
        heads = {}
        for name, hc in cfg["heads"].items():
            def t(k: str, name: str = name) -> np.ndarray | None:
                return tensors.get(f"{name}.{k}")

            heads[name] = DogHead(name, t("mean"), t("std"), t("weight"), float(hc["bias"]),
                                  t("feature_mean"), t("feature_std"), t("feature_weight"))
        cascade = Cascade.from_dict(cfg["cascade"]) if cfg.get("cascade") else None
        if cascade is not None and not {b for b, _ in cascade.second} | {cascade.first} <= set(heads):
            raise ValueError(f"dog cascade names backbones without a head: {cascade.to_dict()}")
        return cls(heads, float(cfg.get("target_recall", 0.99)), dict(cfg.get("thresholds", {})),
                   dict(cfg.get("recall_curve", {})), dict(cfg.get("meta", {})), cascade)


def detector_stem(path: str | Path) -> Path:
    """The path a detector's two files share, without their suffixes."""
    p = Path(path)
    if str(path).endswith(("/", os.sep)) or p.is_dir():  # "out/" wrote ./out.json beside the folder
        raise ModelLoadError(f"{path} is a folder; give the detector's file name (e.g. {p / 'dog_detector.json'})")
    return p.with_suffix("") if p.suffix in (".json", ".safetensors") else p


def detector_files(path: str | Path) -> tuple[Path, Path]:
    """The two files a detector saved at ``path`` is: (.json, .safetensors)."""
    base = detector_stem(path)
    return _with(base, ".json"), _with(base, ".safetensors")


def _with(base: Path, suffix: str) -> Path:
    """``base`` + ``suffix``, appended: with_suffix took "det_v1.5" for "det_v1" with a suffix, and the detector
    written went over det_v1's."""
    return base.with_name(base.name + suffix)


def default_detector() -> DogDetector | None:
    """The detector shipped in the package (fitted by scripts/fit_default_heads.py), or None if absent."""
    root = resources.files("dogbreed").joinpath("data")
    js, st = root.joinpath(f"{DEFAULT_NAME}.json"), root.joinpath(f"{DEFAULT_NAME}.safetensors")
    if not (js.is_file() and st.is_file()):
        return None
    return DogDetector._from(json.loads(js.read_text()), load(st.read_bytes()))


# ---------------------------------------------------------------------------------------------------------------
# Fitting


def _fit_logistic(x: torch.Tensor, y: torch.Tensor, penalty: torch.Tensor, signs: torch.Tensor,
                  balanced: bool = True, iters: int = 300) -> tuple[torch.Tensor, float]:
    """L2-penalised logistic regression with sign constraints (w = ±softplus(u) where a sign is fixed)."""
    import torch
    import torch.nn.functional as F

    u = torch.zeros(x.shape[1], requires_grad=True)
    b = torch.zeros(1, requires_grad=True)

    def weights() -> torch.Tensor:
        return torch.where(signs == 0, u, signs * F.softplus(u))

    # Balanced classes: the fitting folders' dog/not-dog ratio says nothing about the photos users send.
    pos = y.mean().clamp(1e-6, 1 - 1e-6)
    sw = torch.where(y > 0, 0.5 / pos, 0.5 / (1 - pos)) if balanced else torch.ones_like(y)
    opt = torch.optim.LBFGS([u, b], max_iter=iters, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        w = weights()
        loss = F.binary_cross_entropy_with_logits(x @ w + b, y, weight=sw) + (penalty * w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return weights().detach(), float(b.detach())


def _fit_head(backbone: str, imnet: torch.Tensor, feats: torch.Tensor | None, y: torch.Tensor,
              feature_l2: float | None, imagenet_l2: float) -> DogHead:
    """Fit one uncalibrated head on (N, V, ...) outputs; every view is a training sample (flip augmentation)."""
    import torch

    h = torch.from_numpy(imagenet_features(imnet.numpy())).reshape(-1, len(IMAGENET_FEATURES))
    yy = y.repeat_interleave(imnet.shape[1])
    mean, std = h.mean(0), h.std(0).clamp(min=1e-4)
    x = (h - mean) / std
    pen = torch.full((x.shape[1],), imagenet_l2)
    signs = torch.tensor(IMAGENET_SIGNS, dtype=torch.float32)
    fm = fs = None
    if feature_l2 is not None and feats is not None:
        f = feats.float().reshape(-1, feats.shape[-1])
        fm, fs = f.mean(0), f.std(0).clamp(min=1e-3)
        # Scaled by 1/sqrt(D) so one L2 strength means the same for any feature width.
        fs = fs * np.sqrt(f.shape[1])
        x = torch.cat([x, (f - fm) / fs], 1)
        pen = torch.cat([pen, torch.full((f.shape[1],), feature_l2)])
        signs = torch.cat([signs, torch.zeros(f.shape[1])])
    w, b = _fit_logistic(x, yy, pen, signs)
    k = len(IMAGENET_FEATURES)
    return DogHead(backbone, mean, std, w[:k].clone(), b, fm, fs, w[k:].clone() if fm is not None else None)


def _platt(z: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Scale and shift of a logit so it is a calibrated probability on (out-of-fold) data; balanced classes."""
    import torch

    a, b = _fit_logistic(z[:, None], y, torch.zeros(1), torch.ones(1))
    return float(a[0]), b


def _folds(y: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Stratified fold index per photo."""
    rng = np.random.default_rng(seed)
    out = np.zeros(len(y), dtype=int)
    for cls in (0, 1):
        idx = np.where(y == cls)[0]
        rng.shuffle(idx)
        out[idx] = np.arange(len(idx)) % k
    return out


def fit_dog_detector_arrays(outputs: dict[str, tuple[np.ndarray | torch.Tensor, np.ndarray | torch.Tensor | None]],
                            is_dog: np.ndarray | Sequence[bool], *, views: Sequence[str] = ("plain", "flip"),
                            target_recall: float = 0.99, feature_l2: float | None = None,
                            imagenet_l2: float = 1e-4, folds: int = 5, meta: dict[str, Any] | None = None,
                            ) -> tuple[DogDetector, dict[str, np.ndarray]]:
    """Fit from already-extracted outputs: backbone -> (imagenet_logits (N, V, 1000), features (N, V, D) or None).

    Returns the detector and its out-of-fold calibrated logits per backbone, (N, V), for honest reporting.
    """
    import torch

    y_np = np.asarray(is_dog, dtype=bool)
    n_dog, n_not = int(y_np.sum()), int((~y_np).sum())
    if n_dog < 2 or n_not < 2:
        raise ValueError(f"need at least 2 dog and 2 not-dog photos to fit a dog detector; got {n_dog} dog and "
                         f"{n_not} not-dog photos")
    if not 0.5 <= target_recall < 1:
        raise ValueError("target recall must be in [0.5, 1)")
    y = torch.as_tensor(y_np, dtype=torch.float32)
    k = max(2, min(folds, n_dog, n_not))
    fold = _folds(y_np, k)
    heads: dict[str, DogHead] = {}
    oof: dict[str, np.ndarray] = {}
    for bb, (imnet, feats) in outputs.items():
        imnet_t = torch.as_tensor(np.asarray(imnet), dtype=torch.float32)
        feats_t = torch.as_tensor(np.asarray(feats), dtype=torch.float32) if feats is not None else None
        z = torch.zeros(imnet_t.shape[:2])
        for f in range(k):
            tr, te = torch.as_tensor(fold != f), torch.as_tensor(fold == f)
            h = _fit_head(bb, imnet_t[tr], feats_t[tr] if feats_t is not None else None, y[tr], feature_l2,
                          imagenet_l2)
            z[te] = torch.from_numpy(h.logit(imnet_t[te].numpy(), feats_t[te].numpy() if feats_t is not None else None))
        a, c = _platt(z.reshape(-1), y.repeat_interleave(z.shape[1]))
        head = _fit_head(bb, imnet_t, feats_t, y, feature_l2, imagenet_l2)
        # Fold Platt's scale/shift into the head so DogHead.logit is calibrated on its own.
        head.weight, head.bias = head.weight * a, head.bias * a + c
        if head.feature_weight is not None:
            head.feature_weight = head.feature_weight * a
        heads[bb] = head
        oof[bb] = (z * a + c).numpy()
    det = DogDetector(heads, target_recall, meta=dict(meta or {}))
    det.meta.update({"n_dog": n_dog, "n_not_dog": n_not, "folds": k, "feature_l2": feature_l2,
                     "views_fitted": list(views)})
    _set_thresholds(det, oof, y_np, views)
    return det, oof


def _set_thresholds(det: DogDetector, oof: dict[str, np.ndarray], y: np.ndarray, views: Sequence[str]) -> None:
    """Thresholds from out-of-fold probabilities of the dogs, for every subset of backbones and of views."""
    names = list(oof)
    view_sets = [["plain"]] + ([list(views)] if len(views) > 1 else [])
    for r in range(1, len(names) + 1):
        for subset in itertools.combinations(names, r):
            for vs in view_sets:
                vi = [list(views).index(v) for v in vs]
                z = np.mean([oof[b][:, vi].mean(1) for b in subset], 0)
                p_dog = sigmoid(z[y])
                key = combo_key(subset, vs)
                # 'lower' so that at least the target share of validation dogs is at or above the threshold.
                curve = [[r_, float(np.quantile(p_dog, 1 - r_, method="lower"))] for r_ in RECALL_GRID]
                det.recall_curve[key] = curve
                det.thresholds[key] = float(np.quantile(p_dog, 1 - det.target_recall, method="lower"))


def fit_dog_detector(dog_paths: Sequence[str | Path], not_dog_paths: Sequence[str | Path], *,
                     backbones: Sequence[str] = ("efficientnet_lite0",), views: Sequence[str] = ("plain", "flip"),
                     target_recall: float = 0.99, feature_l2: float | None = None, use_cache: bool = True,
                     progress: bool = False) -> DogDetector:
    """Fit a dog detector on photo files (dogs vs anything else) for each backbone; unreadable photos are skipped."""
    from .features import extract
    from .models import default_classifier

    dog_paths, not_dog_paths = [str(p) for p in dog_paths], [str(p) for p in not_dog_paths]
    if not dog_paths or not not_dog_paths:
        raise ValueError(f"need dog and not-dog photos; got {len(dog_paths)} dog and {len(not_dog_paths)} "
                         f"not-dog photos")
    files = dog_paths + not_dog_paths
    y = np.array([True] * len(dog_paths) + [False] * len(not_dog_paths))
    outputs: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
    ok = np.ones(len(files), dtype=bool)
    for bb in backbones:
        ex = extract(files, default_classifier(bb), views=tuple(views), use_cache=use_cache, progress=progress)
        if ex.imagenet_logits.shape[-1] == 0:
            raise ValueError(f"{bb} has no ImageNet head; the dog detector needs one")
        ok &= ex.ok
        outputs[bb] = (ex.imagenet_logits, ex.features if feature_l2 is not None else None)
    outputs = {bb: (imnet[ok], feats[ok] if feats is not None else None) for bb, (imnet, feats) in outputs.items()}
    det, _ = fit_dog_detector_arrays(outputs, y[ok], views=views, target_recall=target_recall, feature_l2=feature_l2,
                                     meta={"unreadable_skipped": int((~ok).sum())})
    return det
