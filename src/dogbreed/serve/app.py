"""The FastAPI app: one `Service` and a router per concern (predict, explain, feedback, pages), all offline.

Every error is ``{"detail": "one sentence"}``; error types map to status codes in the routes and in
`_validation_status`; a 5xx never shows a traceback (`limits.GuardMiddleware`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..predict import PredictOptions, Predictor
from . import routes_explain, routes_feedback, routes_predict
from .feedback import FeedbackStore
from .limits import BODY_TAIL, INTERNAL_ERROR, GuardMiddleware, Limits, ends_unclosed, form_parser_error
from .routes_pages import add_pages, offline_docs_dir
from .schemas import ErrorDetail
from .service import NO_FILE, MicroBatcher, Service

__all__ = ["INTERNAL_ERROR", "ErrorDetail", "Limits", "MicroBatcher", "create_app"]


def _validation_status(request: Request, exc: RequestValidationError) -> tuple[int, str]:
    """A missing file is 400 (415 when the body is not a form at all); anything else is 422, in one sentence."""
    errs = exc.errors()
    ctype = request.headers.get("content-type", "")
    if any(_file_given_as_text(e) for e in errs):  # a form field 'file' that holds text, not an uploaded file
        if ctype.startswith("application/x-www-form-urlencoded"):
            return 415, ("unsupported content type 'application/x-www-form-urlencoded': send the photo as "
                         "multipart/form-data field 'file'")
        return 400, "field 'file' holds text, not a file: send the photo itself as the multipart field 'file'"
    if any(e.get("type") == "missing" and tuple(e.get("loc", ()))[-1:] == ("file",) for e in errs):
        if ctype and not ctype.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
            return 415, (f"unsupported content type {ctype.split(';')[0]!r}: send the photo as multipart/form-data "
                         "field 'file'")
        tail = getattr(request.state, BODY_TAIL, None)
        if ctype.lower().startswith("multipart/form-data") and ends_unclosed(ctype, tail):
            return 400, ("cannot read the multipart body: it ends before its closing boundary (was the upload cut "
                         "off?); send the photo again as field 'file'")
        return 400, NO_FILE
    parts = []
    for err in errs:
        loc = ".".join(str(x) for x in err.get("loc", ()) if x not in ("body", "query"))
        parts.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
    return 422, "; ".join(parts) or "invalid request"


def _file_given_as_text(err: dict) -> bool:
    loc = [x for x in err.get("loc", ()) if not isinstance(x, int)]
    return loc[-1:] == ["file"] and "UploadFile" in str(err.get("msg", ""))


def create_app(
    options: PredictOptions | None = None,
    *,
    feedback_db: str | Path | None = None,
    max_bytes: int | None = None,
    max_pixels: int | None = None,
    max_files: int | None = None,
    limits: Limits | None = None,
    max_batch: int = 16,
    max_wait_ms: float = 5.0,
    predictor: Predictor | None = None,
    gallery: str | Path | None = None,
) -> FastAPI:
    """Build the app for ``options`` (every prediction option; `PredictOptions()` by default); the model is loaded
    here, once. ``predictor`` lets a caller pass one already loaded (its models
    are shared, not copied). ``gallery``: a file from `dogbreed gallery build`; answers then carry look-alikes.
    ``limits`` holds every budget; ``max_bytes``/``max_pixels``/``max_files`` override its per-file bytes, per-photo
    pixels and files per request."""
    limits = limits or Limits()
    overrides = {"max_file_bytes": max_bytes, "max_pixels": max_pixels, "max_files": max_files}
    limits = dataclasses.replace(limits, **{k: v for k, v in overrides.items() if v is not None})
    options = options or PredictOptions()
    if gallery is not None:
        options = dataclasses.replace(options, gallery=gallery)
    if predictor is None:
        # The batch carries the most breeds any request may ask for; each response is cut to its own top_k.
        predictor = Predictor(options, top_k=10**6)
    elif isinstance(predictor, Predictor):
        # A copy sharing the loaded models, so the caller's own top_k is left alone.
        predictor = predictor.with_options(top_k=max(predictor.top_k, len(predictor.classes)),
                                           gallery=gallery if gallery is not None else predictor.options.gallery)
    svc = Service(predictor, limits,
                  FeedbackStore(feedback_db, max_bytes=limits.feedback_max_bytes, per_day=limits.feedback_per_day),
                  {"model": options.model, "quality": options.quality, "runtime": options.runtime},
                  MicroBatcher(predictor, max_batch=max_batch, max_wait_s=max_wait_ms / 1000))
    docs_dir = offline_docs_dir()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await svc.batcher.stop()

    app = FastAPI(
        lifespan=lifespan,
        title="dogbreed",
        version=_version(),
        description="Tell a dog's breed from a photo. `POST /v1/predict` with one or more photos as multipart "
                    "field `file`. Every error is `{\"detail\": \"one sentence\"}`; the limits are in `/healthz`.",
        docs_url=None if docs_dir else "/docs",
        redoc_url=None,
    )
    app.state.predictor = predictor
    app.state.batcher = svc.batcher
    app.state.feedback = svc.store
    app.state.service = svc
    # Outermost of our layers: counts the body as it arrives and turns escaped errors into one logged 500.
    app.add_middleware(GuardMiddleware, max_body_bytes=limits.max_body_bytes, body_idle_s=limits.body_idle_s)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        mapped = form_parser_error(exc.detail, limits) if exc.status_code == 400 else None
        if mapped is None:
            return await http_exception_handler(request, exc)
        return JSONResponse({"detail": mapped[1]}, status_code=mapped[0])

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's default is a list of error objects; one readable sentence keeps {"detail": "..."} uniform.
        status, detail = _validation_status(request, exc)
        return JSONResponse({"detail": detail}, status_code=status)

    app.include_router(routes_predict.router(limits, len(svc.classes)))
    app.include_router(routes_explain.router(svc.breed_values))
    app.include_router(routes_feedback.router(svc.breed_values))
    add_pages(app, docs_dir)
    return app


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("dogbreed")
    except Exception:  # noqa: BLE001 - running from a source tree without metadata
        return "0"
