"""Schemathesis hooks for tests/test_openapi.py: an upload the schema calls `format: binary` is a photo here.

The schema cannot say "these bytes decode as an image"; it documents 415 for bytes that do not. So that schema-valid
(positive) cases are real requests, generated files are small images in every format the service reads. Negative
cases still get whatever schemathesis makes of the other constraints (missing fields, empty files, wrong types).
"""

from __future__ import annotations

import io

import schemathesis
from hypothesis import strategies as st
from PIL import Image


def _image(args: tuple[int, int, tuple[int, int, int], str]) -> bytes:
    w, h, colour, fmt = args
    buf = io.BytesIO()
    Image.new("RGB", (w, h), colour).save(buf, format=fmt)
    return buf.getvalue()


_colour = st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255))
schemathesis.openapi.format(
    "binary",
    st.tuples(st.integers(1, 96), st.integers(1, 96), _colour, st.sampled_from(["PNG", "JPEG", "GIF", "WEBP", "BMP"]))
    .map(_image),
)
