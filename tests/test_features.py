"""The feature extractor's small view: a photo shrunk as a far-off dog's crop shows it, the same every time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fixtures import smooth_photo

from dogbreed import features


def test_shrink_draws_the_shorter_side_from_the_seed_and_never_enlarges() -> None:
    from PIL import Image

    img = Image.new("RGB", (300, 200))
    lo, hi = features.SMALL_SIDES
    sides = {min(features.shrink(img, seed).size) for seed in range(0, 1000, 7)}
    assert min(sides) >= lo and max(sides) < hi and len(sides) > 20
    assert features.shrink(img, 17).size == features.shrink(img, 17).size
    assert features.shrink(img, 17).size[0] / features.shrink(img, 17).size[1] == pytest.approx(1.5, abs=0.02)
    tiny = Image.new("RGB", (60, 50))
    assert features.shrink(tiny, 3) is tiny


def test_small_view_is_its_own_cached_view(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dogbreed.models import default_classifier

    monkeypatch.setenv("DOGBREED_CACHE", str(tmp_path / "cache"))
    lite0 = default_classifier("efficientnet_lite0")
    files = [str(smooth_photo(tmp_path / f"{i}.jpg", i, (400, 300))) for i in range(2)] + [str(tmp_path / "gone.jpg")]
    got = features.extract(files, lite0, views=("plain", "small"), runtime="torch", num_workers=0)
    assert list(got.ok) == [True, True, False] and got.features.shape == (3, 2, 1280)
    assert not np.allclose(got.features[:2, 0], got.features[:2, 1], atol=1e-3)  # the small view is another input
    plain = features.extract(files[:2], lite0, views=("plain",), runtime="torch", num_workers=0, use_cache=False)
    np.testing.assert_allclose(plain.features[:, 0], got.features[:2, 0], atol=1e-5)
    again = features.extract(files[:2], lite0, views=("small",), runtime="torch", num_workers=0, use_cache=False)
    np.testing.assert_allclose(again.features[:, 0], got.features[:2, 1], atol=1e-5)
    with pytest.raises(ValueError, match="unknown view.*'smal'.*views are"):
        features.extract(files, lite0, views=("smal",))
    with pytest.raises(ValueError, match="not with boxes"):
        features.extract(files[:1], lite0, views=("small",), boxes=[(0, 0, 10, 10)])
