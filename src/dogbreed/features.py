"""Backbone feature extraction with an on-disk cache keyed by model, preprocessing, view and file content."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from .accel import loader_kwargs
from .errors import ImageDecodeError, WriteError
from .fileio import atomic_write, say_once
from .inference.decode import decode, prepare, to_input
from .inference.runners import create_runner
from .paths import cache_dir, model_fingerprint
from .transforms import Preprocess

VIEWS = ("plain", "flip")
# "small": the photo as a dog far off in a scene shows it. Shrunk (bicubic, as bench/dogs_in_scene.py pastes a photo)
# until its shorter side is a number of pixels in SMALL_SIDES drawn from the file's content, so a photo always gets
# the same, then preprocessed as usual, which enlarges it back: blurred as a small dog's crop is. For fitting heads
# on what such crops show (bench/small_view_head.py measured one: no better, so the shipped heads do not use it).
SMALL_VIEW = "small"
SMALL_SIDES = (80, 180)


def shrink(img: Image.Image, seed: int, sides: tuple[int, int] = SMALL_SIDES) -> Image.Image:
    """``img`` shrunk so its shorter side is ``sides[0] + seed % (sides[1] - sides[0])`` px (never enlarged)."""
    side = sides[0] + seed % (sides[1] - sides[0])
    k = side / min(img.size)
    if k >= 1:
        return img
    return img.resize((max(1, round(img.width * k)), max(1, round(img.height * k))), Image.Resampling.BICUBIC)


@dataclass
class Extracted:
    """Per image and view: pooled features, ImageNet logits (empty if none) and breed logits.

    Arrays are (N, V, dim); ``ok[i]`` is False for an unreadable image, whose reason is in ``errors[i]``.
    """

    features: np.ndarray
    imagenet_logits: np.ndarray
    breed_logits: np.ndarray
    ok: np.ndarray
    errors: list[str | None]
    views: tuple[str, ...]


def file_digest(path: str | Path) -> str:
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


def cache_key(model: Any, cfg: Preprocess, view: str, box_aware: bool = False) -> str:
    blob = json.dumps({"model": model_fingerprint(model), "pre": cfg.to_dict(), "view": view, "box": box_aware},
                      sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:20]


class _Images(Dataset):
    """Each photo's input; with ``small_seeds`` (one per photo), (2, 3, H, W): the input and its small view."""

    def __init__(self, paths: Sequence[str], cfg: Preprocess, boxes: Sequence[Any] | None,
                 small_seeds: Sequence[int] | None = None):
        self.paths, self.cfg, self.boxes, self.small_seeds = list(paths), cfg, boxes, small_seeds

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, str]:
        box = self.boxes[i] if self.boxes is not None else None
        try:
            if self.small_seeds is None:
                return torch.from_numpy(prepare(self.paths[i], self.cfg, box)), i, ""
            img = decode(self.paths[i], draft_size=self.cfg.draft_size)
            x = np.stack([to_input(img, self.cfg), to_input(shrink(img, self.small_seeds[i]), self.cfg)])
            return torch.from_numpy(x), i, ""
        except ImageDecodeError as e:
            shape = (3, self.cfg.size, self.cfg.size) if self.small_seeds is None else (2, 3, self.cfg.size,
                                                                                          self.cfg.size)
            return torch.zeros(shape), i, str(e) or "unreadable"


def _from_cache(digests: list[str], keys: dict[str, str], results: dict[tuple[int, str], dict[str, np.ndarray]],
                ) -> list[int]:
    """Fill ``results`` from the cache; returns the indices of readable files with a view still missing."""
    todo = []
    for i, d in enumerate(digests):
        if not d:
            continue
        missing = False
        for v, key in keys.items():
            f = cache_dir() / "features" / key / f"{d}.npz"
            rec = load_entry(f) if f.exists() else None
            if rec is not None:
                results[(i, v)] = rec
            else:
                missing = True
        if missing:
            todo.append(i)
    return todo


ENTRY_KEYS = ("features", "imagenet_logits", "breed_logits")


def load_entry(f: Path) -> dict[str, np.ndarray] | None:
    """A cached entry, or None when it is damaged (truncated by a kill or a full disk, not an npz, missing an
    array): then it is removed, so that this run computes and stores it again, and the run says so once."""
    try:
        with np.load(f) as z:
            rec = {k: z[k] for k in z.files}
        if all(k in rec and rec[k].ndim == 1 for k in ENTRY_KEYS):
            return rec
        why = "arrays missing"
    except Exception as e:  # noqa: BLE001 - zipfile, pickle-refusal and EOF errors alike: the entry is rebuilt
        why = type(e).__name__
    with contextlib.suppress(OSError):
        f.unlink()
    say_once(f"feature cache: damaged entries (e.g. {f}: {why}) are recomputed and stored again", key="features-bad")
    return None


def store_entry(f: Path, rec: dict[str, np.ndarray]) -> bool:
    """Store one entry; False when the cache cannot be written (full, read-only), which the run survives: it says
    so once and goes on without caching."""
    try:
        with atomic_write(f, durable=False) as tmp:
            np.savez(tmp, **rec)
        return True
    except WriteError as e:
        say_once(f"feature cache not written, going on without it: {e}", key="features-write")
        return False


def _view_keys(model: Any, cfg: Preprocess, views: Sequence[str], precision: str, boxes: bool) -> dict[str, str]:
    """Each view's cache key; unknown views, and the small view with boxes, are refused."""
    unknown = set(views) - {*VIEWS, SMALL_VIEW}
    if unknown:
        raise ValueError(f"unknown view(s) {sorted(unknown)}; views are {[*VIEWS, SMALL_VIEW]}")
    if SMALL_VIEW in views and boxes:
        raise ValueError("the small view is of whole photos: not with boxes")
    # The small view's key names its sides, so other sides never reuse its entries.
    return {v: cache_key(model, cfg, (v if v != SMALL_VIEW else f"{v}{SMALL_SIDES[0]}-{SMALL_SIDES[1]}")
                         + ("" if precision == "fp32" else f"-{precision}"), boxes)
            for v in views}


def extract(
    paths: Sequence[str | Path],
    model: Any,
    cfg: Preprocess | None = None,
    *,
    views: Sequence[str] = ("plain",),
    boxes: Sequence[Any] | None = None,
    runtime: str = "onnx",
    batch_size: int = 32,
    num_workers: int = 1,
    use_cache: bool = True,
    progress: bool = False,
    device: str = "cpu",
    precision: str = "fp32",
) -> Extracted:
    """Run ``model`` (a `models.Classifier`) over image files, reusing cached results where they exist.

    The cache lives under ``$DOGBREED_CACHE`` (default ``~/.cache/dogbreed``)/features/<key>/<sha1>.npz; a change
    of weights, preprocessing or view changes the key, so stale features are never reused.

    ``runtime="torch"`` with ``device="cuda"``: batches are decoded in ``num_workers`` processes into pinned memory
    and copied without blocking (`accel`); ``precision="bf16"`` adds autocast (and its own cache key, since the
    features then differ from fp32 within `accel.BF16_TOLERANCE`).

    Views: ``"plain"``, ``"flip"`` (mirrored) and ``"small"`` (`shrink`; not with ``boxes``).
    """
    cfg = cfg or model.preprocess_cfg
    paths = [str(p) for p in paths]
    n, nv = len(paths), len(views)
    keys = _view_keys(model, cfg, views, precision, boxes is not None)
    small = SMALL_VIEW in views
    digests = [file_digest(p) if os.path.isfile(p) else "" for p in paths]
    results: dict[tuple[int, str], dict[str, np.ndarray]] = {}
    errors: list[str | None] = [None if d else f"file not found: {p}" for p, d in zip(paths, digests, strict=True)]
    todo = _from_cache(digests, keys, results) if use_cache else [i for i, d in enumerate(digests) if d]
    if todo:
        # The module as trained (no BatchNorm folding), so cached features do not depend on the runtime chosen.
        runner = create_runner(model, runtime, device, precision, size=cfg.size, fold_batchnorm=False)
        ds = _Images([paths[i] for i in todo], cfg, [boxes[i] for i in todo] if boxes is not None else None,
                     [int(digests[i][:8], 16) for i in todo] if small else None)
        dl = DataLoader(ds, batch_size=batch_size, shuffle=False, **loader_kwargs(device, num_workers))
        it: Any = dl
        if progress:
            it = tqdm(dl, total=len(dl), unit="batch", desc=f"features {len(todo)} imgs")
        for x, local_idx, errs in it:
            good = [j for j, e in enumerate(errs) if not e]
            for j, e in enumerate(errs):
                if e:
                    errors[todo[int(local_idx[j])]] = e
            if not good:
                continue
            xb, xsmall = (x[good], None) if not small else (x[good][:, 0].contiguous(), x[good][:, 1].contiguous())
            for v in views:
                xin = xsmall if v == SMALL_VIEW else xb.flip(-1) if v == "flip" else xb
                with torch.inference_mode():
                    breed, imnet, feats = runner(xin)
                for row, j in enumerate(good):
                    i = todo[int(local_idx[j])]
                    # numpy from an ONNX Runtime session, CPU tensors from a torch module
                    rec = {"features": np.asarray(feats[row], dtype=np.float32),
                           "imagenet_logits": np.asarray(imnet[row], dtype=np.float32),
                           "breed_logits": np.asarray(breed[row], dtype=np.float32)}
                    results[(i, v)] = rec
                    if use_cache:
                        use_cache = store_entry(cache_dir() / "features" / keys[v] / f"{digests[i]}.npz", rec)
    ok = np.array([all((i, v) in results for v in views) for i in range(n)], dtype=bool)
    sample = next(iter(results.values()), None)
    dims = {k: (sample[k].shape[0] if sample is not None else 0)
            for k in ("features", "imagenet_logits", "breed_logits")}
    arrays = {k: np.zeros((n, nv, dims[k]), dtype=np.float32) for k in dims}
    for (i, v), rec in results.items():
        for k in arrays:
            arrays[k][i, views.index(v)] = rec[k]
    return Extracted(arrays["features"], arrays["imagenet_logits"], arrays["breed_logits"], ok, errors,
                     tuple(views))
