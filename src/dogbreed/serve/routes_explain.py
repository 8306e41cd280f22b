"""Route: `POST /v1/explain`, a Grad-CAM heat-map of where the model looked (torch, loaded on first use)."""

from __future__ import annotations

import string
from urllib.parse import quote

from fastapi import APIRouter, Depends, File, HTTPException, Query, UploadFile
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from ..errors import ImageDecodeError
from ..inference.scoring import Prediction
from .limits import EXPLAIN_MAX_PIXELS
from .schemas import breed_schema, errors
from .service import NON_EMPTY_FILE, Service, decode_error, one_of_each, query_only, service


def _explain_png(svc: Service, data: bytes, name: str, answer: Prediction, breed: str | None, dog: int | None,
                 ) -> tuple[bytes, list[str], list[int]]:
    from ..explain import Explainer, photo_for_overlay, png_bytes, torch_classifier

    with svc.explain_lock:  # one heat-map at a time: a backward pass is heavy, and torch uses every core already
        if not svc.explainers:
            svc.explainers.append(Explainer(torch_classifier(svc.predictor.model)))
        ex = svc.explainers[0]
        try:
            ex.class_index(breed)
        except ValueError as e:
            raise HTTPException(422, f"{e}; see GET /v1/breeds") from None
        try:  # the overlay has the photo's own size, up to EXPLAIN_MAX_PIXELS
            img = photo_for_overlay(data, EXPLAIN_MAX_PIXELS, limit=svc.limits.max_pixels)
        except ImageDecodeError as e:
            raise decode_error(e, name) from e
        try:
            out, breeds, dogs = ex.explain_answer(img, answer, breed or None, dog, max_pixels=None)
        except ValueError as e:  # a dog number the photo does not have
            raise HTTPException(422, f"{name}: {e}") from None
        return png_bytes(out), [b.name for b in breeds], dogs


def _header_text(text: str) -> str:
    """Percent-encoded (UTF-8) where needed: HTTP headers carry Latin-1 at most, and a breed a user added may be
    "Löwchen". Printable ASCII but "%" stays as it is, so the shipped breeds read plainly and any value decodes
    with `decodeURIComponent` / `urllib.parse.unquote`."""
    return quote(text, safe=string.punctuation.replace("%", "") + " ")


# The answer's headers, declared so that generated clients read them (they were described in prose only).
EXPLAIN_HEADERS = {
    "X-Dogbreed-Breed": {"description": "The breed explained; for several dogs each dog's, in order, joined by "
                         "'; ' (percent-encoded UTF-8 beyond printable ASCII).", "schema": {"type": "string"}},
    "X-Dogbreed-Dogs": {"description": "The numbers of the dogs explained in their own boxes, comma-separated "
                        "(as in the predict answer's `dogs`, 1 = the main dog); empty for the whole photo.",
                        "schema": {"type": "string", "pattern": r"^(\d+(,\d+)*)?$"}},
}


def router(breed_values: list[str]) -> APIRouter:
    """The route of this concern; ``breed_values`` go into the request schema."""
    r = APIRouter()

    @r.post("/v1/explain", dependencies=[Depends(one_of_each), Depends(query_only("breed", "dog"))],
            summary="Heat-map of where the model looked, as a PNG overlay the photo's size "
              f"(reduced to at most {EXPLAIN_MAX_PIXELS / 1e6:.0f} megapixels)",
              response_class=Response, responses={200: {"content": {"image/png": {}},
                                                         "description": "The photo with the heat-map blended in "
                                                         "(its headers name the breeds and dogs explained).",
                                                         "headers": EXPLAIN_HEADERS},
                                                   **errors(400, 408, 413, 415, 422, 500, 503)})
    async def explain(
        file: UploadFile = File(..., description="The photo.", json_schema_extra=NON_EMPTY_FILE),
        breed: str | None = Query(None, max_length=200, json_schema_extra=breed_schema(breed_values),
                                  description="Breed to explain (name or wnid, as in GET /v1/breeds; any spelling "
                                  "of the name is accepted); default: the top breed (of each dog)."),
        dog: int | None = Query(None, ge=1, le=1000,
                                description="Explain this dog only, in its own box: its number in the predict "
                                "answer's `dogs` (1 = the main dog). Default: several dogs, or one small dog, each in "
                                "its own box (for its own top breed, unless `breed` is given); else the whole photo."),
        svc: Service = Depends(service),
    ) -> Response:
        ((name, f),) = svc.check_uploads([file])
        await svc.check_pixels([(name, f)], overlay=EXPLAIN_MAX_PIXELS)  # the heat-map's decode, not the model's
        (pred,) = await svc.predict([(name, f)])  # the dogs and their boxes, and the top breed
        svc.admission.enter(1)  # the full-size decode and the backward pass hold memory: they take a place too
        try:
            async with svc.slots.get():
                data = await run_in_threadpool(svc.read, f, name)
                png, breeds, dogs = await run_in_threadpool(_explain_png, svc, data, name, pred, breed, dog)
        finally:
            svc.admission.leave(1)
        return Response(png, media_type="image/png", headers={
            "X-Dogbreed-Breed": _header_text("; ".join(breeds)), "X-Dogbreed-Dogs": ",".join(map(str, dogs)),
            "Cache-Control": "no-store"})

    return r
