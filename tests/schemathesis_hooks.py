"""Schemathesis hooks for tests/test_openapi.py: an upload the schema calls `format: binary` is a photo here.

The schema cannot say "these bytes decode as an image"; it documents 415 for bytes that do not. So that schema-valid
(positive) cases are real requests, generated files are small images in every format the service reads. Negative
cases still get whatever schemathesis makes of the other constraints (missing fields, empty files, wrong types).
The same holds for a feedback's dog box (format `dog-box`), which must lie inside the photo sent with it.
"""

from __future__ import annotations

import io

import schemathesis
from hypothesis import strategies as st
from PIL import Image

from dogbreed.breeds import stanford_breeds


def _image(args: tuple[int, int, tuple[int, int, int], str]) -> bytes:
    w, h, colour, fmt = args
    buf = io.BytesIO()
    Image.new("RGB", (w, h), colour).save(buf, format=fmt)
    return buf.getvalue()


_colour = st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255))
schemathesis.openapi.format(
    "binary",
    st.tuples(st.integers(16, 96), st.integers(16, 96), _colour, st.sampled_from(["PNG", "JPEG", "GIF", "WEBP", "BMP"]))
    .map(_image),
)
# A breed field takes a name or wnid from GET /v1/breeds in any spelling, which the schema cannot list without making
# generated clients refuse the other spellings: it says format `breed` with examples. Schema-valid cases name one.
_BREEDS = sorted({b.name for b in stanford_breeds()} | {b.wnid for b in stanford_breeds()})
schemathesis.openapi.format("breed", st.sampled_from(_BREEDS + ["pug", "  golden   RETRIEVER ", "Border_collie"]))
# A dog's box in a feedback request: its "x0,y0,x1,y1" must lie inside the photo and be 8 px a side
# (`feedback.MIN_BOX_SIDE`), which the schema cannot say (it gives the pattern only); every generated photo is at
# least 16x16, so schema-valid cases name a 16 px corner or none.
schemathesis.openapi.format("dog-box", st.sampled_from(["", "0,0,16,16", " 0, 0, 16, 16 "]))


@schemathesis.hook("map_query").apply_to(path="/v1/explain")
def _no_dog_number_for_a_photo_without_dogs(ctx: schemathesis.HookContext, query: dict | None) -> dict | None:
    """A dog's number is valid only for a photo with that many dogs, and the generated photos (one colour) hold
    none: a schema-valid `dog` is dropped; the invalid ones (0, text) stay and must be refused."""
    if query and isinstance(query.get("dog"), int) and not isinstance(query["dog"], bool) and query["dog"] >= 1:
        query = {k: v for k, v in query.items() if k != "dog"}
    return query
