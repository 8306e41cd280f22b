"""Head adaptation and new breeds, fitted on cached backbone features (no backbone training).

- `adapt`: start from the ImageNet dog-class rows (all 120 breeds stay covered) and fit the head to a labelled
  folder with L2-regularised-toward-init logistic regression on pooled features (plain + flipped views).
- `add_breed`: grow a model by one class from a few photos: the new row starts as a prototype (mean normalised
  feature, scaled like the old rows), is refined on the new photos with the old rows frozen (so old-class logits
  never change), and its bias is calibrated so the new class wins on a set fraction of its own photos.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .breeds import Breed, BreedIndex, clean_name, lookup, normalize_key
from .data import breed_folders, load_dataset
from .errors import DataError
from .features import extract
from .inference.sources import walk_images
from .models import DEFAULT_BACKBONE, Classifier, model_out, save_model_dir
from .resolve import PACKAGED, resolve_model

MIN_NEW_BREED_PHOTOS = 3


class AdaptError(DataError):
    """Bad input for adapt/add-breed; the message says what to fix."""


@dataclass
class LabelledImage:
    path: str
    breed: Breed
    box: tuple[float, float, float, float] | None = None
    label: str | None = None  # its breed as the dataset wrote it (`data.Sample.label`: "Yorkie")


# ---------------------------------------------------------------------------------------------------------------
# Loading a labelled folder. data.py owns layouts; this is a small fallback for the two layouts adapt needs
# (Stanford `Images/<wnid>-<Breed>/` with optional `Annotation/`, and folder-per-breed).


def _folder_breed(folder: str) -> Breed:
    known = lookup(folder)
    return known if known is not None else Breed(None, clean_name(folder), None, folder)


def load_labelled(path: str | Path) -> list[LabelledImage]:
    """Stanford layout (`Images/` + optional `Annotation/` boxes) or one folder per breed -> labelled images.

    Uses `data.load_dataset` (every layout it knows, and its box parser).
    """
    root = Path(path)
    if not root.is_dir():
        raise AdaptError(f"{root}: not a folder")
    index = load_dataset(root)
    items = [LabelledImage(s.path, (lookup(s.wnid) if s.wnid else None) or _folder_breed(s.breed),
                           tuple(s.box) if s.box is not None else None,  # type: ignore[arg-type]
                           s.label)
             for s in index.samples]
    if not items:
        raise AdaptError(f"{root}: no images found (expected one sub-folder per breed, or Images/<breed>/)")
    return items


# ---------------------------------------------------------------------------------------------------------------
# Fitting


def fit_head(
    features: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    w0: torch.Tensor,
    b0: torch.Tensor,
    *,
    l2: float = 0.1,
    max_iter: int = 60,
    rows: Sequence[int] | None = None,
    weights: np.ndarray | torch.Tensor | None = None,
    start: tuple[torch.Tensor, torch.Tensor] | None = None,
    exclude: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Multinomial logistic regression on features, penalised by l2/2 * ||(W, b) - (W0, b0)||^2.

    Full-batch L-BFGS: the problem is convex and small (C x D), so it converges in tens of iterations with no
    learning rate to tune. ``rows`` (class indices; labels must be among them) restricts both the softmax and
    the update to those classes: the other rows stay exactly at W0/b0 and, because they are not in the softmax,
    the fit has no reason to push the photographed classes above breeds it never saw (measured on stanford-subset:
    fitting all 120 rows lost 4-12 points on breeds left out of the fit; the restricted fit lost 0.3).
    ``weights`` (one per row of ``features``) turn the mean loss into a weighted mean, so a few photos from the
    domain that matters can count as much as many from another; ``start`` (W, b) warm-starts the optimiser (the
    penalty still pulls toward W0/b0), which makes the per-fold refits of a cross-fit cheap. ``exclude`` (N, C bool)
    leaves classes out of one photo's softmax, so that photo neither pushes those rows down nor is pulled by them.
    """
    x = torch.as_tensor(features, dtype=torch.float32)
    y = torch.as_tensor(labels, dtype=torch.long)
    w0 = w0.detach().float()
    b0 = b0.detach().float()
    idx = torch.arange(w0.shape[0]) if rows is None else torch.as_tensor(list(rows), dtype=torch.long)
    remap = torch.full((w0.shape[0],), -1, dtype=torch.long)
    remap[idx] = torch.arange(len(idx))
    ys = remap[y]
    if (ys < 0).any():
        raise ValueError("every label must be one of the fitted rows")
    ws0, bs0 = w0[idx], b0[idx]
    dw = torch.zeros_like(ws0) if start is None else (start[0].detach().float()[idx] - ws0)
    db = torch.zeros_like(bs0) if start is None else (start[1].detach().float()[idx] - bs0)
    dw.requires_grad_(True)
    db.requires_grad_(True)
    wt = None if weights is None else torch.as_tensor(weights, dtype=torch.float32)
    if wt is not None:
        wt = wt / wt.sum()
    mask = None if exclude is None else torch.where(exclude[:, idx], -1e4, 0.0)
    opt = torch.optim.LBFGS([dw, db], lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        logits = x @ (ws0 + dw).T + bs0 + db
        if mask is not None:
            logits = logits + mask
        ce = (F.cross_entropy(logits, ys) if wt is None
              else (F.cross_entropy(logits, ys, reduction="none") * wt).sum())
        loss = ce + 0.5 * l2 * (dw.pow(2).sum() + db.pow(2).sum())
        loss.backward()
        return loss

    opt.step(closure)
    w, b = w0.clone(), b0.clone()
    with torch.no_grad():
        w[idx] = ws0 + dw
        b[idx] = bs0 + db
    return w, b


def prototype_row(features: np.ndarray | torch.Tensor, ref_weight: torch.Tensor) -> torch.Tensor:
    """Mean of L2-normalised features, rescaled to the median norm of the existing rows (weight imprinting)."""
    f = F.normalize(torch.as_tensor(features, dtype=torch.float32), dim=-1).mean(0)
    return F.normalize(f, dim=0) * ref_weight.detach().norm(dim=1).median()


def calibrate_bias(new_scores: torch.Tensor, best_old: torch.Tensor, win_rate: float) -> float:
    """Bias so the new class beats the best old class on ``win_rate`` of its own photos (and no more).

    Without photos of the old classes there is no direct way to see what the new class would steal; winning on
    only a fraction of its own (training) photos keeps the new logit just above the old ones where the photo is
    clearly the new breed and below them elsewhere.
    """
    gap = (best_old - new_scores).float()
    return float(torch.quantile(gap, win_rate)) + 1e-3


def _head_from(w: torch.Tensor, b: torch.Tensor, like: nn.Module) -> nn.Linear:
    head = nn.Linear(w.shape[1], w.shape[0])
    with torch.no_grad():
        head.weight.copy_(w)
        head.bias.copy_(b)
    head.config = dict(getattr(like, "config", None) or {"type": "linear"})  # type: ignore[attr-defined]
    return head


def _linear_of(clf: Classifier) -> nn.Linear:
    head = clf.breed_head
    if isinstance(head, nn.Linear):
        return head
    lins = [m for m in head.modules() if isinstance(m, nn.Linear)]
    if len(lins) != 1:
        raise AdaptError("only linear breed heads can be adapted or grown")
    return lins[0]


def load_base(model: str | Classifier = "default", backbone: str = DEFAULT_BACKBONE) -> tuple[Classifier, dict]:
    """A model spec (see `resolve.resolve_model`; ``backbone`` for "default"/"imagenet") or a Classifier ->
    (classifier, its config, whose "decision" and "extra" the adapted model keeps)."""
    if isinstance(model, Classifier):
        return model, {}
    if str(model).lower().endswith(".onnx"):
        raise AdaptError(f"{model}: adapting needs the PyTorch weights; give the run or model dir it came from")
    resolved = resolve_model(model, backbone=backbone if model in PACKAGED else None)
    clf = resolved.classifier
    assert isinstance(clf, Classifier)
    return clf, {**resolved.config, "decision": resolved.decision}


def _runtime_for(n_images: int) -> str:
    """ONNX Runtime pays off over many photos; for a handful, exporting the graph costs more than it saves."""
    return "onnx" if n_images >= 200 else "torch"


# ---------------------------------------------------------------------------------------------------------------
# adapt


@dataclass
class AdaptConfig:
    # l2 and rows chosen on stanford-subset alone (fit on 11 breeds, scored on held-out photos of those and on the
    # 11 left out), never on imagenet-val-dogs; see bench/accuracy.py.
    l2: float = 0.1
    max_iter: int = 60
    views: tuple[str, ...] = ("plain", "flip")
    rows: str = "seen"  # seen: only classes with photos move (and compete); all: every row, all 120 in the softmax
    box_crop: bool = True  # use boxes where the data has them

    def __post_init__(self) -> None:
        # a negative or NaN pull made every fitted weight NaN, saved and reported as a success
        if not (isinstance(self.l2, numbers.Real) and math.isfinite(self.l2) and self.l2 >= 0):
            raise AdaptError(f"l2 must be a number >= 0, not {self.l2!r}")
        if self.max_iter < 1:
            raise AdaptError(f"max_iter must be at least 1, not {self.max_iter!r}")


def adapt_features(
    feats: np.ndarray, labels: np.ndarray, base: Classifier, cfg: AdaptConfig | None = None,
    new_classes: Sequence[Breed] = (), init: str = "imagenet",
) -> Classifier:
    """Fit a head on (N, V, D) features with labels indexing ``base.classes + new_classes``.

    ``init="imagenet"`` starts from the base head (the point of adaptation); ``init="zero"`` is the from-scratch
    baseline the bench compares against.
    """
    cfg = cfg or AdaptConfig()
    lin = _linear_of(base)
    w0, b0 = lin.weight.detach().clone(), lin.bias.detach().clone()
    n_old = w0.shape[0]
    for j, _ in enumerate(new_classes):
        rows = feats[labels == n_old + j].reshape(-1, feats.shape[-1])
        w0 = torch.cat([w0, prototype_row(rows, lin.weight)[None]])
        b0 = torch.cat([b0, b0.median()[None]])
    if init == "zero":
        w0, b0 = torch.zeros_like(w0), torch.zeros_like(b0)
    y = np.repeat(labels, feats.shape[1])
    seen = sorted(set(int(i) for i in labels))
    w, b = fit_head(feats.reshape(-1, feats.shape[-1]), y, w0, b0, l2=cfg.l2, max_iter=cfg.max_iter,
                    rows=seen if cfg.rows == "seen" else None)
    return Classifier(base.backbone, _head_from(w, b, lin), list(base.classes) + list(new_classes),
                      base.preprocess_cfg)


@dataclass
class BlendConfig:
    """How the shipped default heads are fitted: every row of the ImageNet head, pulled toward it (``l2``), on
    Stanford Dogs (box-cropped ImageNet *training* photos, 120 per breed, every breed alike) plus natural photos
    (web and ImageNet-validation photos), each natural photo counting ``natural_weight`` Stanford photos.

    Stanford photos alone teach little that transfers: the backbone was trained on them, and their tight squashed
    crops are not what users send. The natural photos are few (1-25 per breed) but of the right kind; the pull
    toward the ImageNet rows keeps what ~1,300 photos per breed taught the ImageNet head. Chosen by 5 breed-stratified
    folds over the natural photos, out of fold (bench/accuracy.py and scripts/fit_default_heads.py print the grid).
    """

    l2: float = 0.03
    natural_weight: float = 10.0
    natural_softmax: str = "natural_breeds"  # natural_breeds | all (see fit_blend)
    max_iter: int = 100
    folds: int = 5
    seed: int = 0


def _rows(feats: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, V, D) features -> (N*V, D) rows with labels repeated per view."""
    return feats.reshape(-1, feats.shape[-1]), np.repeat(labels, feats.shape[1])


def fit_blend(
    stanford: tuple[np.ndarray, np.ndarray], natural: tuple[np.ndarray, np.ndarray],
    w0: torch.Tensor, b0: torch.Tensor, cfg: BlendConfig | None = None,
    start: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One head from (features (N, V, D), labels) of Stanford photos and of natural photos, weighted per `cfg`."""
    cfg = cfg or BlendConfig()
    xs, ys = _rows(*stanford)
    xn, yn = _rows(*natural)
    weights = np.r_[np.ones(len(ys)), np.full(len(yn), cfg.natural_weight)]
    exclude = None
    if cfg.natural_softmax == "natural_breeds" and len(yn):
        # A natural photo competes only among breeds that have natural photos: breeds with none would otherwise be
        # pushed down by every natural photo and lose to their look-alikes (measured on stanford-dogs' test list).
        exclude = torch.zeros(len(ys) + len(yn), len(w0), dtype=torch.bool)
        exclude[len(ys):] = ~torch.isin(torch.arange(len(w0)), torch.as_tensor(np.unique(yn)))
    return fit_head(np.concatenate([xs, xn]), np.r_[ys, yn], w0, b0, l2=cfg.l2, weights=weights, start=start,
                    max_iter=cfg.max_iter, exclude=exclude)


def fold_blends(
    stanford: tuple[np.ndarray, np.ndarray], natural: tuple[np.ndarray, np.ndarray],
    w0: torch.Tensor, b0: torch.Tensor, cfg: BlendConfig | None = None,
) -> tuple[tuple[torch.Tensor, torch.Tensor], np.ndarray, list[tuple[torch.Tensor, torch.Tensor]]]:
    """The Stanford-only fit, each natural photo's fold (breed-stratified), and per fold the head fitted without it
    (warm-started from the Stanford-only fit, which has seen no natural photo): what `cross_fit_blend` scores out of
    fold with, and what a bench scores other rows of the same photos with (bench/stage_out_of_fold.py)."""
    from .calibration import breed_stratified_folds

    cfg = cfg or BlendConfig()
    xn, yn = natural
    start = fit_blend(stanford, (xn[:0], yn[:0]), w0, b0, cfg)
    fold = breed_stratified_folds(yn, cfg.folds, cfg.seed)
    heads = [fit_blend(stanford, (xn[fold != f], yn[fold != f]), w0, b0, cfg, start=start) for f in range(cfg.folds)]
    return start, fold, heads


def cross_fit_blend(
    stanford: tuple[np.ndarray, np.ndarray], natural: tuple[np.ndarray, np.ndarray],
    w0: torch.Tensor, b0: torch.Tensor, cfg: BlendConfig | None = None,
) -> tuple[tuple[torch.Tensor, torch.Tensor], np.ndarray]:
    """The head fitted on everything, and out-of-fold logits (N_natural, V, C) for every natural photo.

    Each natural photo's logits come from a head fitted without its fold (breed-stratified), so figures, the
    temperature and the uncertain threshold read from them are honest about the photos they are measured on. Every
    fit warm-starts from the Stanford-only fit, which has seen no natural photo: starting a fold from the full fit
    would leak the held-out photos' labels through whatever the optimiser has not undone.
    """
    cfg = cfg or BlendConfig()
    xn, yn = natural
    start, fold, heads = fold_blends(stanford, natural, w0, b0, cfg)
    full = fit_blend(stanford, natural, w0, b0, cfg, start=start)
    oof = np.zeros((len(yn), xn.shape[1], w0.shape[0]), dtype=np.float32)
    for f, (w, b) in enumerate(heads):
        oof[fold == f] = (torch.as_tensor(xn[fold == f]).float() @ w.T + b).numpy()
    return full, oof


def adapt(
    data: str | Path | Sequence[LabelledImage],
    out: str | Path | None = None,
    *,
    backbone: str = DEFAULT_BACKBONE,
    model: str | Classifier = "default",
    cfg: AdaptConfig | None = None,
    progress: bool = False,
    overwrite: bool = False,
) -> tuple[Classifier, dict[str, Any]]:
    """Adapt a model's breed head to labelled photos; folders that are not one of the 120 breeds become new classes.

    Returns the classifier and a summary; writes a model dir to ``out`` when given (a model already there only
    with ``overwrite``).
    """
    cfg = cfg or AdaptConfig()
    if out is not None:
        model_out(out, overwrite)  # before the features: a path that cannot take the model fails now, in one sentence
    items = load_labelled(data) if isinstance(data, (str, Path)) else list(data)
    base, base_cfg = load_base(model, backbone)
    pre = base.preprocess_cfg
    boxes = None
    if cfg.box_crop and any(it.box is not None for it in items):
        # Boxes tighten the crop on the dog; predictions have no boxes, so the saved model simply ignores it then.
        pre = type(pre).from_dict({**pre.to_dict(), "box_crop": True})
        boxes = [it.box for it in items]
    index = BreedIndex(base.classes)
    new: list[Breed] = []
    labels = []
    for it in items:
        i = index.find_labelled(it.label, it.breed.name)
        if i is None:
            new.append(Breed(None, it.breed.name, None))
            i = index.add(new[-1])
        labels.append(i)
    ex = extract([it.path for it in items], base, pre, views=cfg.views, boxes=boxes, progress=progress,
                 runtime=_runtime_for(len(items)))
    if not ex.ok.any():
        raise AdaptError("none of the photos could be read")
    y = np.asarray(labels)[ex.ok]
    # a new breed's row starts from the mean of its photos' features: with none readable it was NaN, saved, and
    # every prediction of the model then crashed
    empty = [b.name for j, b in enumerate(new) if not (y == len(base.classes) + j).any()]
    if empty:
        raise AdaptError(f"no readable photo of the new breed{'s' * (len(empty) > 1)} {', '.join(map(repr, empty))}"
                         " (run `dogbreed data inspect` on the folder)")
    clf = adapt_features(ex.features[ex.ok], y, base, cfg, new)
    _check_finite(clf)
    clf.preprocess_cfg = base.preprocess_cfg  # prediction has no boxes; keep the base preprocessing
    counts: dict[str, int] = {}
    for lab in y:
        counts[clf.classes[int(lab)].name] = counts.get(clf.classes[int(lab)].name, 0) + 1
    summary = {"adapted_from": str(model) if not isinstance(model, Classifier) else "classifier",
               "adapt": {"l2": cfg.l2, "max_iter": cfg.max_iter, "views": list(cfg.views), "rows": cfg.rows,
                         "box_crop_used": boxes is not None, "photos": int(ex.ok.sum()),
                         "unreadable": int((~ex.ok).sum()), "photos_per_breed": counts,
                         "new_breeds": [b.name for b in new]}}
    extra = {**base_cfg.get("extra", {}), **summary}
    if out is not None:
        save_model_dir(clf, out, decision=base_cfg.get("decision"), extra=extra)
    return clf, summary


# ---------------------------------------------------------------------------------------------------------------
# add-breed


@dataclass
class AddBreedConfig:
    # Fraction of its own (training) views the new class must win; 0.95 chosen on stanford-subset (11 breeds each
    # dropped and re-added from 20 photos: held-out recall 81%, -0.5 pt on the others), never on imagenet-val-dogs.
    win_rate: float = 0.95
    refine_iter: int = 30
    refine_l2: float = 1.0  # strong pull to the prototype: a handful of photos must not make the row explode
    views: tuple[str, ...] = ("plain", "flip")


MAX_BREED_NAME = 100


def _check_new_name(name: str, classes: Sequence[Breed]) -> str:
    clean = clean_name(name)
    if not normalize_key(clean):
        raise AdaptError(f"breed name {name!r} is empty once cleaned")
    # a breed's name becomes a folder's in `feedback export` and a line of every front end's answer
    if len(clean) > MAX_BREED_NAME or any(c in clean for c in "/\\") or not clean.isprintable():
        raise AdaptError(f"breed name {name[:40]!r}{'...' if len(name) > 40 else ''}: at most {MAX_BREED_NAME} "
                         "printable characters, without / or \\")
    taken = BreedIndex(classes)
    known = lookup(clean)
    same = taken.find(clean)
    same = same if same is not None or known is None else taken.find(known.name)
    if same is not None:
        named = classes[same].name
        raise AdaptError(f"breed {clean!r} already exists in this model"
                         + (f" (as {named!r})" if normalize_key(named) != normalize_key(clean) else "")
                         + "; choose another name")
    return clean


def add_breed_features(base: Classifier, name: str, feats: np.ndarray, cfg: AddBreedConfig | None = None,
                       ) -> Classifier:
    """Grow ``base`` by one class from (N, V, D) features of its photos; old rows are not changed."""
    cfg = cfg or AddBreedConfig()
    clean = _check_new_name(name, base.classes)
    lin = _linear_of(base)
    w_old, b_old = lin.weight.detach(), lin.bias.detach()
    x = torch.as_tensor(feats.reshape(-1, feats.shape[-1]), dtype=torch.float32)
    w_new = prototype_row(x, w_old)
    old_logits = x @ w_old.T + b_old
    best_old = old_logits.max(1).values
    b_new = calibrate_bias(x @ w_new, best_old, cfg.win_rate)
    if cfg.refine_iter:
        # Refine only the new row: CE over [old logits, new logit] on the new photos, pulled to the prototype.
        # Old rows stay frozen, so any accuracy lost on old breeds comes from the new class winning, not drift.
        dw = torch.zeros_like(w_new, requires_grad=True)
        opt = torch.optim.LBFGS([dw], lr=1.0, max_iter=cfg.refine_iter, line_search_fn="strong_wolfe")
        target = torch.full((x.shape[0],), w_old.shape[0], dtype=torch.long)

        def closure() -> torch.Tensor:
            opt.zero_grad()
            logits = torch.cat([old_logits, (x @ (w_new + dw) + b_new)[:, None]], 1)
            loss = F.cross_entropy(logits, target) + 0.5 * cfg.refine_l2 * dw.pow(2).sum()
            loss.backward()
            return loss

        opt.step(closure)
        w_new = (w_new + dw).detach()
        b_new = calibrate_bias(x @ w_new, best_old, cfg.win_rate)
    w = torch.cat([w_old, w_new[None]])
    b = torch.cat([b_old, torch.tensor([b_new])])
    return Classifier(base.backbone, _head_from(w, b, lin), list(base.classes) + [Breed(None, clean, None)],
                      base.preprocess_cfg)


def _check_finite(clf: Classifier) -> None:
    """Refuse a fitted head that is not finite everywhere: saved, it gave NaN probabilities (invalid JSON) or a
    crash on every photo afterwards, while the fit had said it succeeded."""
    lin = _linear_of(clf)
    if not (torch.isfinite(lin.weight).all() and torch.isfinite(lin.bias).all()):
        raise AdaptError("the fitted head has non-finite weights (NaN or infinity); nothing was written")


def _image_files(folder: str | Path) -> list[str]:
    p = Path(folder)
    if not p.is_dir():
        raise AdaptError(f"{p}: not a folder")
    if len(named := breed_folders(p)) >= 2:  # a folder per breed would be learnt as one breed of all of them
        raise AdaptError(f"{p} holds folders of breeds ({', '.join(named[:4])}{', ...' if len(named) > 4 else ''}); "
                         "add-breed learns one new breed from a folder of its photos (to adapt the model to "
                         f"several breeds: dogbreed adapt {p})")
    return list(walk_images(p))


def add_breed(
    name: str,
    folder: str | Path,
    *,
    model: str | Classifier = "default",
    backbone: str = DEFAULT_BACKBONE,
    out: str | Path | None = None,
    cfg: AddBreedConfig | None = None,
    overwrite: bool = False,
) -> tuple[Classifier, dict[str, Any]]:
    """Add breed ``name`` learnt from the photos in ``folder``; writes a model dir to ``out`` when given (a model
    already there only with ``overwrite``)."""
    cfg = cfg or AddBreedConfig()
    if out is not None:
        model_out(out, overwrite)
    base, base_cfg = load_base(model, backbone)
    clean = _check_new_name(name, base.classes)  # fail before the (slower) feature extraction
    files = _image_files(folder)
    ex = extract(files, base, views=cfg.views, runtime=_runtime_for(len(files))) if files else None
    n_ok = int(ex.ok.sum()) if ex is not None else 0
    if n_ok < MIN_NEW_BREED_PHOTOS:
        raise AdaptError(f"{folder}: {n_ok} readable photo(s) of {clean!r}; at least {MIN_NEW_BREED_PHOTOS} needed")
    assert ex is not None
    clf = add_breed_features(base, clean, ex.features[ex.ok], cfg)
    _check_finite(clf)
    extra = dict(base_cfg.get("extra", {}))
    added = list(extra.get("added_breeds", []))
    added.append({"name": clean, "photos": n_ok, "unreadable": len(files) - n_ok, "win_rate": cfg.win_rate})
    extra["added_breeds"] = added
    summary = {"name": clean, "photos": n_ok, "unreadable": len(files) - n_ok, "classes": len(clf.classes)}
    if out is not None:
        save_model_dir(clf, out, decision=base_cfg.get("decision"), extra=extra)
    return clf, summary


def drop_class(clf: Classifier, wnid: str) -> Classifier:
    """A copy of ``clf`` without one class: the bench's way to pretend a known breed is new."""
    lin = _linear_of(clf)
    keep = [i for i, b in enumerate(clf.classes) if b.wnid != wnid]
    return Classifier(clf.backbone, _head_from(lin.weight.detach()[keep], lin.bias.detach()[keep], lin),
                      [clf.classes[i] for i in keep], clf.preprocess_cfg)


__all__ = ["AdaptConfig", "AdaptError", "AddBreedConfig", "BlendConfig", "LabelledImage", "adapt", "adapt_features",
           "add_breed", "add_breed_features", "cross_fit_blend", "drop_class", "fit_blend", "fit_head", "fold_blends",
           "load_labelled", "prototype_row"]
