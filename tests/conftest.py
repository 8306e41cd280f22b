from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real"


def pytest_configure(config: pytest.Config) -> None:
    # Tests run offline; keep torch from oversubscribing the 2 CI cores when several tests spawn workers.
    os.environ.setdefault("OMP_NUM_THREADS", "2")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test that takes the `real_data` fixture reads ../shared/data/real: it is marked `real` whether or not its
    author wrote the marker, so `-m "not real"` leaves out exactly those."""
    for item in items:
        if "real_data" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.real)


@pytest.fixture(scope="session", autouse=True)
def _temporary_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every test gets a temporary $DOGBREED_CACHE instead of the user's ~/.cache/dogbreed.

    One per session, so expensive entries (ONNX exports of the packaged backbones, extracted features) are made
    once and shared by every test; a test that needs an empty cache sets its own with monkeypatch.
    """
    d = tmp_path_factory.mktemp("dogbreed-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DOGBREED_CACHE", str(d))
        yield d


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The shared real photos; tests that need them skip only when the folder is absent."""
    if not REAL.is_dir():
        pytest.skip("../shared/data/real not present")
    return REAL.resolve()


def jpeg_bytes(img: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


@pytest.fixture(scope="session")
def chelsea_jpeg() -> bytes:
    from skimage import data as skdata

    return jpeg_bytes(Image.fromarray(skdata.chelsea()))


@pytest.fixture(scope="session")
def grey_jpeg() -> bytes:
    return jpeg_bytes(Image.fromarray(np.full((300, 400, 3), 128, np.uint8)))


@pytest.fixture(scope="session")
def default_predictor():
    from dogbreed.predict import Predictor

    return Predictor()
