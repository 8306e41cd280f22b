from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "real"


def pytest_configure(config: pytest.Config) -> None:
    # Tests run offline; keep torch from oversubscribing the 2 CI cores when several tests spawn workers.
    os.environ.setdefault("OMP_NUM_THREADS", "2")


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
