"""Where caches live, and the weights fingerprint that keys cached exports and features."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn


def cache_dir() -> Path:
    """``$DOGBREED_CACHE``, default ``~/.cache/dogbreed`` (read on each call so tests can point it elsewhere). Set
    but empty or blank is unset: ``Path("")`` is the working folder, which filled with the cache's folders."""
    return Path(os.environ.get("DOGBREED_CACHE", "").strip() or Path.home() / ".cache" / "dogbreed")


def model_fingerprint(model: nn.Module) -> str:
    """A short hash of a model's parameter names, shapes and leading bytes: distinct models get distinct caches.

    Only the first 4 KiB of each tensor is hashed, which tells apart any two models trained or adapted separately
    while keeping the hash cheap for large backbones.
    """
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().float().numpy().tobytes()[:4096])
        h.update(str(tuple(v.shape)).encode())
    return h.hexdigest()[:16]
