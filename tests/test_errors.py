"""Decode failures are typed, so front ends map the type (never the wording) to a status code."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from dogbreed.errors import (
    DogbreedError,
    EmptyImage,
    ImageDecodeError,
    ImageNotFound,
    ImageTooLarge,
    UnreadableImage,
    UnsupportedImage,
)
from dogbreed.transforms import load_image


def _jpeg(size: tuple[int, int] = (64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (120, 80, 40)).save(buf, format="JPEG")
    return buf.getvalue()


@pytest.mark.parametrize(("src", "kind"), [
    (b"", EmptyImage),
    (b"this is text, not a photo", UnsupportedImage),
    (_jpeg()[:200], UnreadableImage),
])
def test_bad_bytes_raise_typed_errors(src: bytes, kind: type[Exception]) -> None:
    with pytest.raises(kind) as info:
        load_image(src)
    assert isinstance(info.value, ImageDecodeError) and isinstance(info.value, DogbreedError)
    assert isinstance(info.value, ValueError)  # callers that caught ValueError before keep working
    assert str(info.value)


def test_too_many_pixels_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ImageTooLarge, match="64x48 is 3,072 pixels; the limit is 100"):
        load_image(_jpeg(), max_pixels=100)
    with pytest.raises(ImageNotFound, match="file not found"):
        load_image(tmp_path / "nope.jpg")
    with pytest.raises(EmptyImage, match="is a directory"):
        load_image(tmp_path)
