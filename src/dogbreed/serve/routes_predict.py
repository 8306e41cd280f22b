"""Routes: `POST /v1/predict`, `GET /v1/breeds`, `GET /healthz` and gallery thumbnails."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, File, HTTPException, Query, Request, UploadFile
from fastapi.responses import Response

from .limits import Limits, fmt_bytes
from .schemas import BreedsResponse, HealthResponse, PredictResponse, errors
from .service import NON_EMPTY_FILE, Service, query_only, service


def router(limits: Limits, n_classes: int) -> APIRouter:
    """The routes of this concern; ``limits`` and ``n_classes`` go into the request schema."""
    r = APIRouter()

    @r.post("/v1/predict", summary="Predict the breed of the dog in each photo", response_model=None,
            dependencies=[Depends(query_only("top_k", "errors"))],
              responses={200: {"model": PredictResponse}, **errors(400, 408, 413, 415, 422, 500, 503)})
    async def predict(
        request: Request,
        file: list[UploadFile] = File(..., description=f"One to {limits.max_files} photos (repeat the field); each "
                                      f"at most {fmt_bytes(limits.max_file_bytes)} and "
                                      f"{limits.max_pixels / 1e6:.0f} megapixels.",
                                      json_schema_extra={"minItems": 1, "maxItems": limits.max_files,
                                                         "items": NON_EMPTY_FILE}),
        top_k: int = Query(5, ge=1, le=n_classes, description="How many breeds to return per photo."),
        photo_errors: Literal["fail", "inline"] = Query(
            "fail", alias="errors", description="fail: a photo that cannot be read or is too large fails the whole "
            "request (400, 413 or 415). inline: it gets an entry of its own in its place, `{\"path\", \"verdict\": "
            "\"error\", \"error\"}`, and the other photos are answered; the request's own budgets (body, files, "
            "total pixels, queue) still refuse it whole."),
        svc: Service = Depends(service),
    ) -> dict[str, list[dict[str, Any]]]:
        inline = photo_errors == "inline"
        refused: dict[int, str] = {}
        uploads = svc.check_uploads(file, refused if inline else None)
        sizes: dict[int, tuple[int, int]] = {}
        preds = await svc.predict(uploads, inline_errors=inline, refused=refused, request=request, sizes=sizes)
        out = []
        for i, ((name, _), p) in enumerate(zip(uploads, preds, strict=True)):
            d = p.to_dict()
            d["path"] = name
            if p.error is not None:
                out.append(d)
                continue
            # the space the boxes are in: a page whose browser shows the photo another way up (Chromium does not
            # apply a WebP's EXIF rotation) can tell, instead of drawing the boxes off the dogs
            d["size"] = list(sizes[i])
            # the server predicts every breed; an answer lists top_k of them, and look-alikes of those only, as
            # the CLI and the library give them (it had given three breeds' look-alikes beside one listed breed)
            for a in (d, *(d.get("dogs") or [])):
                a["breeds"] = a["breeds"][:top_k]
                if a.get("look_alikes") is not None:
                    a["look_alikes"] = a["look_alikes"][:top_k]
            out.append(d)
        return {"predictions": out}

    @r.get("/v1/breeds", summary="The breeds the model knows", response_model=BreedsResponse)
    async def breeds(svc: Service = Depends(service)) -> dict[str, Any]:
        return {"breeds": [{"id": i, "wnid": b.wnid, "name": b.name} for i, b in enumerate(svc.classes)]}

    @r.get("/healthz", summary="Liveness, model summary and every limit", response_model=None,
           responses={200: {"model": HealthResponse}})
    async def healthz(svc: Service = Depends(service)) -> dict[str, Any]:
        g = svc.predictor.gallery
        return {"status": "ok", **svc.labels, "breeds": n_classes, "limits": svc.limits.to_dict(),
                "queue": {"in_flight": svc.admission.in_flight, "refused": svc.admission.refused},
                "gallery_photos": len(g) if g is not None else 0,
                # the older flat keys, kept for clients that read them
                "max_bytes": svc.limits.max_file_bytes, "max_pixels": svc.limits.max_pixels,
                "max_files": svc.limits.max_files}

    # HEAD for uptime checks and link checkers (405 before), kept out of the schema: one operation a path
    r.add_api_route("/healthz", healthz, methods=["HEAD"], include_in_schema=False)
    r.add_api_route("/v1/breeds", breeds, methods=["HEAD"], include_in_schema=False)

    @r.get("/v1/gallery/{photo_id}.jpg", summary="Thumbnail of a gallery photo named in look_alikes",
           response_class=Response, responses={200: {"content": {"image/jpeg": {}}}, **errors(404, 422)})
    async def gallery_photo(photo_id: int, svc: Service = Depends(service)) -> Response:
        g = svc.predictor.gallery
        if g is None or not 0 <= photo_id < len(g):
            raise HTTPException(404, "no such gallery photo" if g is not None else "no gallery loaded "
                                     "(start the server with --gallery)")
        return Response(g.thumbnail(photo_id), media_type="image/jpeg",
                        headers={"Cache-Control": "public, max-age=86400"})

    return r
