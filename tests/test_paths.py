"""paths.py: the cache dir follows $DOGBREED_CACHE (tests get a temporary one); fingerprints tell models apart."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import torch
from torch import nn

from dogbreed.paths import cache_dir, model_fingerprint


def test_tests_never_use_the_users_cache() -> None:
    d = cache_dir()
    assert d != Path.home() / ".cache" / "dogbreed"
    assert Path(os.path.realpath(d)).is_relative_to(os.path.realpath(tempfile.gettempdir()))


def test_cache_dir_is_read_on_each_call(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOGBREED_CACHE", str(tmp_path))
    assert cache_dir() == tmp_path
    monkeypatch.delenv("DOGBREED_CACHE")
    assert cache_dir() == Path.home() / ".cache" / "dogbreed"
    monkeypatch.setenv("DOGBREED_CACHE", " ")  # set but blank: the default, not the working folder
    assert cache_dir() == Path.home() / ".cache" / "dogbreed"


def test_fingerprint_follows_the_weights() -> None:
    torch.manual_seed(0)
    a, b = nn.Linear(4, 3), nn.Linear(4, 3)
    assert model_fingerprint(a) == model_fingerprint(a) and model_fingerprint(a) != model_fingerprint(b)
    b.load_state_dict(a.state_dict())
    assert model_fingerprint(a) == model_fingerprint(b)
