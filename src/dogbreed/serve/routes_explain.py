"""Route: `POST /v1/explain`, a Grad-CAM heat-map of where the model looked (torch, loaded on first use)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, File, HTTPException, Query, UploadFile
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from ..errors import ImageDecodeError
from ..inference.decode import decode as decode_image
from ..transforms import reduce_to_pixels
from .limits import EXPLAIN_MAX_PIXELS
from .schemas import errors
from .service import NON_EMPTY_FILE, Service, decode_error, service


def _explain_png(svc: Service, data: bytes, name: str, breed: str | None, top: tuple[str | None, str],
                 ) -> tuple[bytes, str]:
    from ..explain import Explainer, Explanation, overlay, torch_classifier

    with svc.explain_lock:  # one heat-map at a time: a backward pass is heavy, and torch uses every core already
        if not svc.explainers:
            svc.explainers.append(Explainer(torch_classifier(svc.predictor.model)))
        ex = svc.explainers[0]
        try:
            c = ex.class_index(breed) if breed else ex.class_index(top[0] or top[1])
        except ValueError as e:
            raise HTTPException(422, f"{e}; see GET /v1/breeds") from None
        try:  # no JPEG draft: the overlay has the photo's own size, up to EXPLAIN_MAX_PIXELS
            img = reduce_to_pixels(decode_image(data, max_pixels=svc.limits.max_pixels), EXPLAIN_MAX_PIXELS)
        except ImageDecodeError as e:
            raise decode_error(e, name) from e
        heat, c = ex.heatmap(img, c)
        return Explanation(ex.classes[c], c, heat, overlay(img, heat)).png(), ex.classes[c].name


def router(breed_values: list[str]) -> APIRouter:
    """The route of this concern; ``breed_values`` go into the request schema."""
    r = APIRouter()

    @r.post("/v1/explain", summary="Heat-map of where the model looked, as a PNG overlay the photo's size "
              f"(reduced to at most {EXPLAIN_MAX_PIXELS / 1e6:.0f} megapixels)",
              response_class=Response, responses={200: {"content": {"image/png": {}},
                                                         "description": "The photo with the heat-map blended in; "
                                                         "header X-Dogbreed-Breed names the breed explained"},
                                                   **errors(400, 413, 415, 422, 500, 503)})
    async def explain(
        file: UploadFile = File(..., description="The photo.", json_schema_extra=NON_EMPTY_FILE),
        breed: str | None = Query(None, max_length=200, json_schema_extra={"enum": breed_values},
                                  description="Breed to explain (name or wnid, as in GET /v1/breeds; any spelling "
                                  "of the name is accepted); default: the top breed."),
        svc: Service = Depends(service),
    ) -> Response:
        ((name, f),) = svc.check_uploads([file])
        await svc.check_pixels([(name, f)], draft=False)  # the heat-map decodes the photo at full size
        top: tuple[str | None, str] = ("", "")
        if not breed:
            (pred,) = await svc.predict([(name, f)])
            top = (pred.breeds[0].wnid, pred.breeds[0].name)
        svc.admission.enter(1)  # the full-size decode and the backward pass hold memory: they take a place too
        try:
            async with svc.slots.get():
                data = await run_in_threadpool(svc.read, f, name)
                png, explained = await run_in_threadpool(_explain_png, svc, data, name, breed, top)
        finally:
            svc.admission.leave(1)
        return Response(png, media_type="image/png", headers={"X-Dogbreed-Breed": explained,
                                                              "Cache-Control": "no-store"})

    return r
