"""Look-alike photos: a reference gallery of labelled photos (pooled backbone features, labels, small thumbnails),
searched by cosine similarity for the photos of the top breeds nearest to a query photo.

Loaded only when a gallery is asked for (`predict --gallery`, `serve --gallery`). A gallery is one safetensors file
(tensors, plus its breed table and relative paths as JSON text in the safetensors metadata); nothing is unpickled.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .breeds import BreedIndex
from .models import DEFAULT_BACKBONE

FORMAT = "dogbreed-gallery/1"
THUMB_PX = 96  # longest side of a stored thumbnail: enough for a row of example photos on the page


@dataclass
class Gallery:
    features: torch.Tensor  # (N, D) float32, L2-normalised, plain view
    labels: torch.Tensor  # (N,) int64 index into ``breeds``
    breeds: list[dict[str, str | None]]  # [{"wnid", "name"}]
    paths: list[str]  # relative to ``root``
    thumbs: bytes  # JPEG bytes of every thumbnail, back to back
    offsets: torch.Tensor  # (N + 1,) int64 into ``thumbs``
    backbone: str = DEFAULT_BACKBONE
    root: str = ""

    def __len__(self) -> int:
        return len(self.paths)

    def thumbnail(self, i: int) -> bytes:
        if not 0 <= i < len(self):
            raise IndexError(f"gallery photo {i} out of range 0..{len(self) - 1}")
        return self.thumbs[int(self.offsets[i]):int(self.offsets[i + 1])]

    def breed_index(self, wnid: str | None, name: str) -> int | None:
        """The gallery's label for a predicted breed: by wnid, else by name (breeds added with no wnid)."""
        return BreedIndex(self.breeds).find(None if wnid else name, wnid)

    def nearest(self, query: torch.Tensor, breeds: Sequence[tuple[str | None, str]], k: int = 3,
                ) -> list[dict[str, Any]]:
        """For each (wnid, name) breed: its ``k`` gallery photos most similar to ``query`` (D,), best first.

        Breeds the gallery has no photos of are listed with no photos, so the caller can say so.
        """
        q = torch.nn.functional.normalize(query.float().reshape(-1), dim=0)
        sims = self.features @ q
        out = []
        for wnid, name in breeds:
            j = self.breed_index(wnid, name)
            photos = []
            if j is not None:
                idx = torch.nonzero(self.labels == j).flatten()
                if len(idx):
                    s, order = sims[idx].topk(min(k, len(idx)))
                    photos = [{"id": int(idx[o]), "path": self.paths[int(idx[o])], "similarity": round(float(v), 4)}
                              for v, o in zip(s.tolist(), order.tolist(), strict=True)]
            out.append({"wnid": wnid, "name": name, "photos": photos})
        return out

    def nearest_any(self, query: torch.Tensor, k: int = 1) -> list[int]:
        """Indices of the ``k`` gallery photos most similar to ``query``, whatever their breed."""
        q = torch.nn.functional.normalize(query.float().reshape(-1), dim=0)
        return (self.features @ q).topk(min(k, len(self))).indices.tolist()

    # -- storage ------------------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        from safetensors.torch import save

        from .fileio import atomic_write_bytes

        meta = {"format": FORMAT, "backbone": self.backbone, "root": self.root,
                "breeds": json.dumps(self.breeds), "paths": json.dumps(self.paths)}
        # float16 on disk halves the file (14,400 Lite0 features: 37 MB instead of 74); cosine ranks barely move.
        tensors = {"features": self.features.half().contiguous(), "labels": self.labels.contiguous(),
                   "offsets": self.offsets.contiguous(),
                   "thumbs": torch.frombuffer(bytearray(self.thumbs), dtype=torch.uint8) if self.thumbs
                   else torch.zeros(0, dtype=torch.uint8)}
        return atomic_write_bytes(gallery_file(path), save(tensors, metadata=meta))

    @classmethod
    def load(cls, path: str | Path) -> Gallery:
        from safetensors import safe_open

        p = gallery_file(path)
        if not p.is_file():
            raise FileNotFoundError(f"gallery {path}: no such file (build one with `dogbreed gallery build`)")
        try:
            with safe_open(str(p), framework="pt") as f:
                meta = f.metadata() or {}
                if meta.get("format") != FORMAT:
                    raise ValueError(f"gallery {p}: not a dogbreed gallery (format {meta.get('format')!r})")
                t = {k: f.get_tensor(k) for k in f.keys()}
        except ValueError:
            raise
        except Exception as e:  # a truncated or foreign file: say so plainly
            raise ValueError(f"gallery {p}: unreadable ({e})") from e
        feats = torch.nn.functional.normalize(t["features"].float(), dim=1)  # unit length again after float16
        return cls(feats, t["labels"].long(), json.loads(meta["breeds"]), json.loads(meta["paths"]),
                   t["thumbs"].numpy().tobytes(), t["offsets"].long(), meta.get("backbone", DEFAULT_BACKBONE),
                   meta.get("root", ""))


def gallery_file(path: str | Path) -> Path:
    """The gallery file: the path as given when it is one (whatever its name), else with .safetensors added."""
    p = Path(path)
    return p if p.suffix == ".safetensors" or p.is_file() else p.with_name(p.name + ".safetensors")


def thumbnail_jpeg(path: str, px: int = THUMB_PX) -> bytes:
    from PIL import Image

    from .inference.decode import decode

    img = decode(path, draft_size=px)
    img.thumbnail((px, px), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=80, optimize=True)
    return buf.getvalue()


def build_gallery(data: str | Path, *, backbone: str = DEFAULT_BACKBONE, thumb_px: int = THUMB_PX,
                  use_cache: bool = True, progress: bool = False) -> tuple[Gallery, int]:
    """Index a labelled photo folder (any layout `dogbreed data` reads) -> (gallery, photos skipped as unreadable).

    Features come from the feature cache (`features.extract`, plain view of the plain-head classifier: the same
    cache entries the benchmarks and fitting scripts use), so a warm cache builds a gallery without a forward pass.
    """
    from .data import load_dataset
    from .features import extract
    from .models import default_classifier

    index = load_dataset(data)
    if not index.samples:
        raise ValueError(f"{data}: no labelled photos found")
    samples = index.samples
    ex = extract([s.path for s in samples], default_classifier(backbone), views=("plain",), use_cache=use_cache,
                 progress=progress)
    keep = [i for i in range(len(samples)) if ex.ok[i]]
    if not keep:
        raise ValueError(f"{data}: none of the {len(samples)} photos could be read")
    breeds: list[dict[str, str | None]] = []
    key_to_label: dict[tuple[str | None, str], int] = {}
    labels, paths, blobs = [], [], []
    root = Path(index.root)
    for i in keep:
        s = samples[i]
        key = (s.wnid, s.breed)
        if key not in key_to_label:
            key_to_label[key] = len(breeds)
            breeds.append({"wnid": s.wnid, "name": s.breed})
        labels.append(key_to_label[key])
        paths.append(os.path.relpath(s.path, root))
        blobs.append(thumbnail_jpeg(s.path, thumb_px))
    feats = torch.nn.functional.normalize(torch.as_tensor(ex.features[keep, 0]), dim=1)
    offsets = torch.as_tensor(np.concatenate([[0], np.cumsum([len(b) for b in blobs])]), dtype=torch.int64)
    g = Gallery(feats, torch.as_tensor(labels, dtype=torch.int64), breeds, paths, b"".join(blobs), offsets,
                backbone, str(root))
    return g, len(samples) - len(keep)


def attach_look_alikes(predictions: list, features: np.ndarray | torch.Tensor, gallery: Gallery, breeds: int = 3,
                       k: int = 3) -> None:
    """Fill ``look_alikes`` of each prediction (in place) with the k nearest gallery photos of its top breeds.

    ``features`` holds one (D,) plain-view feature row of the gallery's backbone per prediction.
    """
    for p, f in zip(predictions, torch.as_tensor(features), strict=True):
        p.look_alikes = gallery.nearest(f, [(b.wnid, b.name) for b in p.breeds[:breeds]], k)
