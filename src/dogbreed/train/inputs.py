"""What a training run reads: the split, labels, cached backbone features, and batches of features or photos."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ..accel import is_cuda
from ..breeds import Breed, BreedIndex, clean_name, lookup
from ..data import (
    Sample,
    leave_out_unreadable,
    left_out_photos,
    load_dataset,
    load_manifest,
    make_loader,
    make_split,
    save_manifest,
)
from ..errors import DataError
from ..features import extract
from ..fileio import atomic_write_text
from ..models import Classifier
from ..transforms import Augment, Preprocess
from . import distributed
from .config import TrainConfig

MIN_BREEDS = 2  # one breed is not a classification problem: the model would answer it for every photo


@dataclass
class Split:
    samples: list[Any]
    labels: np.ndarray
    features: np.ndarray | None = None  # (N, V, D) for the cached-features path


def log(msg: str) -> None:
    if distributed.from_env().is_main:  # under torchrun one process speaks for the run
        tqdm.write(msg, file=sys.stderr)


def run_classes(class_names: Sequence[str]) -> list[Breed]:
    """Breeds for a run's class names: one of the 120 keeps its wnid/ImageNet index, any other gets wnid None."""
    out = []
    for name in class_names:
        b = lookup(str(name))
        out.append(Breed(b.wnid, b.name, b.imagenet_index) if b else Breed(None, clean_name(str(name)), None))
    return out


def labels_of(samples: Sequence[Any], class_names: Sequence[str]) -> np.ndarray:
    index = {str(n): i for i, n in enumerate(class_names)}
    return np.array([index[str(s.breed)] for s in samples], dtype=np.int64)


def new_split(cfg: TrainConfig, data: str, left_out: dict[str, str] | None = None) -> dict[str, list[Sample]]:
    """Split a dataset as the config says; refuses data a run cannot learn from, before anything is written.
    ``left_out`` gets the photos the dataset's reading left out, and why (empty, broken links, not regular files,
    listed but missing), and those that cannot be read (`leave_out_unreadable`); other files it skipped (notes,
    hidden files, annotations) are `data inspect`'s to list."""
    if not Path(data).exists():
        raise DataError(f"{data}: no such dataset folder")
    index = load_dataset(data)
    # Unreadable photos go before the split, as in `data split`: split first, a breed could lose its only val or
    # test photo to a corrupt file, and the same seed gave another split than `data split` did.
    samples, unreadable = leave_out_unreadable(index.samples)
    if left_out is not None:
        left_out.update(left_out_photos(index))
        left_out.update(unreadable)
    breeds = sorted({str(s.breed) for s in samples})
    if len(breeds) < MIN_BREEDS:
        found = f"1 ({breeds[0]})" if breeds else "none"
        raise DataError(f"{data}: training needs photos of at least {MIN_BREEDS} breeds; found {found}")
    sp = cfg.split
    splits = make_split(samples, ratios=sp.ratios, seed=sp.seed, use_official=sp.use_official)
    check_split(splits, data)
    return splits


def check_split(splits: dict[str, list[Sample]], where: str) -> None:
    """Refuse a split a run cannot train and pick its best epoch on."""
    if not splits.get("train") or not splits.get("val"):
        raise DataError(f"{where}: the split has {len(splits.get('train', []))} training and "
                        f"{len(splits.get('val', []))} validation photos; both must be non-empty")


LEFT_OUT = "left_out.json"  # beside split.csv: the photos `new_split` left out of the run's data, and why


def recorded_split(run_dir: Path) -> dict[str, list[Sample]]:
    return load_manifest(run_dir / "split.csv")


def save_split(splits: dict[str, list[Sample]], run_dir: Path, left_out: dict[str, str] | None = None) -> None:
    save_manifest(splits, run_dir / "split.csv")
    atomic_write_text(run_dir / LEFT_OUT, json.dumps(left_out or {}, indent=1) + "\n")


def recorded_left_out(run_dir: Path) -> dict[str, str]:
    """What `save_split` recorded as left out (nothing for runs made before the record existed)."""
    try:
        got = json.loads((run_dir / LEFT_OUT).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in got.items()} if isinstance(got, dict) else {}


def class_names_of(cfg: TrainConfig, splits: dict[str, list[Sample]]) -> list[str]:
    return list(cfg.classes or sorted({str(s.breed) for part in splits.values() for s in part}))


def match_classes(samples: Sequence[Any], class_names: Sequence[str]) -> tuple[list[Any], np.ndarray, int]:
    """Samples of another dataset whose breed is one of the run's classes (by wnid or normalised name)."""
    classes = BreedIndex(run_classes(class_names))
    kept, labels = [], []
    for s in samples:
        i = classes.find(str(s.breed), getattr(s, "wnid", None))
        if i is not None:
            kept.append(s)
            labels.append(i)
    return kept, np.array(labels, dtype=np.int64), len(samples) - len(kept)


def attach_features(extractor: Classifier, parts: dict[str, Split], views: Sequence[str], runtime: str) -> None:
    """Backbone features for every photo of every split, from the on-disk cache where possible."""
    order = [k for k in ("train", "val", "test") if k in parts]
    paths = [str(s.path) for k in order for s in parts[k].samples]
    ex = extract(paths, extractor, views=tuple(views), runtime=runtime, progress=True)
    start = 0
    for k in order:
        n = len(parts[k].samples)
        ok = ex.ok[start:start + n]
        if not ok.all():
            log(f"{k}: skipping {int((~ok).sum())} unreadable photos")
        sp = parts[k]
        parts[k] = Split([s for s, g in zip(sp.samples, ok, strict=True) if g], sp.labels[ok],
                         ex.features[start:start + n][ok])
        start += n


# ---------------------------------------------------------------------------------------------------------------
# Batches and inference


class Logits(nn.Module):
    """image batch -> breed logits only (the ImageNet head is not needed while training)."""

    def __init__(self, clf: Classifier):
        super().__init__()
        self.clf = clf

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.clf.breed_head(self.clf.backbone(x))


def feature_batches(split: Split, views: Sequence[int], batch_size: int, shuffle: bool,
                    seed: int) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    assert split.features is not None
    x = torch.from_numpy(split.features[:, list(views)].reshape(-1, split.features.shape[-1]))
    y = torch.from_numpy(np.repeat(split.labels, len(views)))
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed)) if shuffle else torch.arange(len(y))
    d = distributed.from_env() if shuffle else distributed.SINGLE
    for i in range(0, len(y), batch_size):
        idx = order[i:i + batch_size][d.rank::d.world]  # under torchrun: this process's share of the global batch
        yield x[idx], y[idx]


def image_batches(split: Split, class_names: Sequence[str], pre: Preprocess, augment: Augment | None,
                  batch_size: int, shuffle: bool, seed: int, num_workers: int, device: str = "cpu") -> Iterable[Any]:
    # Training batches are sharded under torchrun (batch_size is the global batch); evaluation runs whole.
    d = distributed.from_env() if shuffle else distributed.SINGLE
    return make_loader(split.samples, list(class_names), pre, augment=augment,
                       batch_size=distributed.per_rank_batch(batch_size, d), shuffle=shuffle,
                       num_workers=num_workers, seed=seed, rank=d.rank, world=d.world,
                       pin_memory=is_cuda(device) and torch.cuda.is_available())


@torch.inference_mode()
def predict_logits(net: nn.Module, batches: Iterable[Any], device: str) -> tuple[np.ndarray, np.ndarray]:
    net.eval()
    logits, labels = [], []
    for x, y in batches:
        logits.append(net(x.to(device)).float().cpu())
        labels.append(torch.as_tensor(y))
    if not logits:
        return np.zeros((0, 0), np.float32), np.zeros(0, np.int64)
    return torch.cat(logits).numpy(), torch.cat(labels).numpy()


def head_probs(head: nn.Module, features: np.ndarray) -> np.ndarray:
    head.eval()
    with torch.inference_mode():
        return head(torch.from_numpy(features[:, 0])).float().softmax(-1).numpy()


def image_probs(clf: Classifier, samples: Sequence[Any], class_names: Sequence[str], device: str,
                workers: int = 0) -> np.ndarray:
    split = Split(list(samples), np.zeros(len(samples), np.int64))
    batches = image_batches(split, class_names, clf.preprocess_cfg, None, 32, False, 0, workers)
    logits, _ = predict_logits(Logits(clf).to(device), batches, device)
    clf.cpu()
    return torch.from_numpy(logits).softmax(-1).numpy()
