"""Response models of the HTTP API, so /openapi.json describes every answer a client can get.

Predictions are returned as `Prediction.to_dict()`; these models document them (extra fields are allowed, so a
field added to `Prediction` appears in answers without breaking clients generated from the schema).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class ErrorDetail(BaseModel):
    """Every 4xx/5xx answer: one readable sentence."""

    detail: str


class BreedScoreOut(BaseModel):
    model_config = ConfigDict(extra="allow")

    wnid: str | None = Field(description="WordNet id; null for a breed added with add-breed.")
    name: str
    probability: float = Field(ge=0, le=1)


class LookAlikePhoto(BaseModel):
    id: int = Field(description="Gallery photo id; its thumbnail is GET /v1/gallery/{id}.jpg.")
    path: str = Field(description="Path of the photo inside the gallery's data folder.")
    similarity: float = Field(description="Cosine similarity of pooled features, -1..1, higher is closer.")


class LookAlikes(BaseModel):
    wnid: str | None
    name: str
    photos: list[LookAlikePhoto] = Field(description="Nearest gallery photos of this breed, best first; empty when "
                                         "the gallery has none.")


class DogOut(BaseModel):
    model_config = ConfigDict(extra="allow")

    box: list[int] = Field(min_length=4, max_length=4, description="x0, y0, x1, y1 in the photo's own pixels "
                           "(after its EXIF rotation).")
    dog_probability: float = Field(ge=0, le=1, description="This crop's calibrated probability of a dog.")
    verdict: Literal["dog", "uncertain_breed"] = Field(description="uncertain_breed: mixed or uncertain breed.")
    breeds: list[BreedScoreOut] = Field(description="top_k breeds of this dog, most likely first.")
    several_breeds_likely: bool
    look_alikes: list[LookAlikes] | None = Field(None, description="Only with --gallery: this dog's look-alikes.")


class PredictionOut(BaseModel):
    model_config = ConfigDict(extra="allow")

    path: str = Field(description="The uploaded file's name.")
    verdict: Literal["dog", "no_dog", "uncertain_breed"]
    dog_probability: float = Field(ge=0, le=1)
    breeds: list[BreedScoreOut] = Field(description="top_k breeds, most likely first.")
    several_breeds_likely: bool
    look_alikes: list[LookAlikes] | None = Field(None, description="Only when the server runs with --gallery: for "
                                                 "each of the top 3 breeds listed (at most top_k), its nearest "
                                                 "gallery photos.")
    size: list[int] | None = Field(None, min_length=2, max_length=2, description="The photo's width and height in "
                                   "its own pixels, after its EXIF rotation: the space `box` is in.")
    dogs: list[DogOut] | None = Field(None, description="Every dog found in the photo, most prominent first (empty "
                                      "when none; absent with --whole-photo). verdict, dog_probability and breeds "
                                      "above describe the first.")


class PhotoErrorOut(BaseModel):
    path: str = Field(description="The uploaded file's name.")
    verdict: Literal["error"]
    error: str = Field(description="Why this photo was not answered, in one sentence.")


class PredictResponse(BaseModel):
    predictions: list[PredictionOut | PhotoErrorOut] = Field(description="One per uploaded file, in upload order "
                                                             "(an error entry only with errors=inline).")


class BreedOut(BaseModel):
    id: int
    wnid: str | None
    name: str


class BreedsResponse(BaseModel):
    breeds: list[BreedOut]


class HealthResponse(BaseModel):
    model_config = ConfigDict(extra="allow")

    status: Literal["ok"]
    model: str
    quality: str
    runtime: str
    breeds: int
    limits: dict[str, int] = Field(description="Every per-request budget (see `dogbreed serve --help`).")
    queue: dict[str, int] = Field(description="Photos admitted now, and requests refused with 503 so far.")


class FeedbackBreed(BaseModel):
    wnid: str | None
    name: str


class FeedbackResponse(BaseModel):
    id: int
    sha256: str
    predicted: str
    breed: FeedbackBreed
    created_at: str
    box: list[int] | None = Field(None, description="The dog the feedback is about (x0, y0, x1, y1 in the photo's "
                                  "pixels), or null for the photo as a whole.")


_TEXT = {
    400: "No file, or a corrupt, truncated or empty image",
    403: "Sent by a page of another site (Sec-Fetch-Site, or the Origin header against the host)",
    404: "No such item",
    408: "The request body stopped arriving before it was whole (--body-timeout); send it again",
    413: "A file, a photo's pixels, the request's total pixels, the number of files or the body is over its limit",
    415: "Not an image, or not a multipart/form-data request",
    422: "A parameter out of range, or an unknown breed",
    429: "The daily feedback quota is used up (Retry-After says when it resets)",
    500: "Internal error (details only in the server log)",
    503: "The server is busy (Retry-After says when to retry)",
    507: "Feedback storage is full, or cannot be written",
}
_RETRY = {"Retry-After": {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}}


def breed_schema(values: list[str]) -> dict[str, Any]:
    """A breed field's schema: format `breed` (a name or wnid from GET /v1/breeds, any spelling of a name) with a few
    of them as examples."""
    wnids = [v for v in values if re.fullmatch(r"n\d{8}", v)]
    names = [v for v in values if v not in wnids]
    return {"format": "breed", "examples": (["Samoyed"] if "Samoyed" in names else names[:1]) + wnids[:1]}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for the given error statuses, all with the `{"detail": "..."}` body."""
    out: dict[int | str, dict[str, Any]] = {}
    for c in codes:
        out[c] = {"model": ErrorDetail, "description": _TEXT[c]}
        if c in (429, 503):
            out[c]["headers"] = _RETRY
    return out
