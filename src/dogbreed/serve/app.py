"""FastAPI app: the prediction API, the breed list, feedback, and the static page, all offline."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import importlib.util
import logging
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from ..errors import EmptyImage, ImageDecodeError, ImageTooLarge, UnsupportedImage
from ..predict import Prediction, Predictor
from ..transforms import load_image
from .feedback import FeedbackStore, find_breed

log = logging.getLogger("dogbreed.serve")

STATIC_DIR = Path(__file__).parent / "static"
DEFAULT_MAX_BYTES = 20 * 1024 * 1024  # a 50 MP phone JPEG is ~15 MB
DEFAULT_MAX_PIXELS = 50_000_000
DEFAULT_MAX_FILES = 32
READABLE_FORMATS = "JPEG, PNG, WebP, GIF, BMP or TIFF"
INTERNAL_ERROR = "internal error while processing the request; the details are in the server log"


class ErrorDetail(BaseModel):
    """Every 4xx/5xx answer: one readable sentence."""

    detail: str


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    text = {400: "No file, or a corrupt/empty image", 413: "File, photo or request too large",
            415: "Not an image, or not a multipart/form-data request", 422: "Invalid parameter",
            500: "Internal error (details only in the server log)"}
    return {c: {"model": ErrorDetail, "description": text[c]} for c in codes}


class MicroBatcher:
    """Gathers images from requests that arrive together into one `predict_images` call.

    One worker task per event loop takes the first waiting image, collects more for up to ``max_wait_s`` (or until
    ``max_batch``), runs the batch in a single worker thread (so torch's own threads are not oversubscribed by
    several batches at once) and hands each request its results. While a batch runs, new requests queue up and form
    the next batch, so under load batches fill up without any extra waiting.
    """

    def __init__(self, predictor: Predictor, max_batch: int = 16, max_wait_s: float = 0.005) -> None:
        self.predictor = predictor
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dogbreed-infer")
        self._queues: dict[asyncio.AbstractEventLoop, asyncio.Queue] = {}
        self._tasks: dict[asyncio.AbstractEventLoop, asyncio.Task] = {}
        self._lock = threading.Lock()
        self.batches_run = 0
        self.largest_batch = 0

    def _queue(self) -> asyncio.Queue:
        # Bound lazily to the running loop: a test client may run the app on a different loop than uvicorn would.
        loop = asyncio.get_running_loop()
        with self._lock:
            q = self._queues.get(loop)
            if q is None:
                q = self._queues[loop] = asyncio.Queue()
                self._tasks[loop] = loop.create_task(self._worker(q))
            return q

    async def predict(self, images: list[Image.Image]) -> list[Prediction]:
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in images]
        q = self._queue()
        for im, fut in zip(images, futures, strict=True):
            q.put_nowait((im, fut))
        return list(await asyncio.gather(*futures))

    async def _worker(self, q: asyncio.Queue) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await q.get()]
            deadline = loop.time() + self.max_wait_s
            while len(batch) < self.max_batch:
                try:
                    batch.append(q.get_nowait())
                    continue
                except asyncio.QueueEmpty:
                    pass
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(q.get(), remaining))
                except asyncio.TimeoutError:  # not the builtin before Python 3.11
                    break
            batch = [(im, fut) for im, fut in batch if not fut.done()]  # drop requests whose client went away
            if not batch:
                continue
            self.batches_run += 1
            self.largest_batch = max(self.largest_batch, len(batch))
            try:
                preds = await loop.run_in_executor(self._executor, self.predictor.predict_images,
                                                   [im for im, _ in batch], None)
            except Exception as e:  # noqa: BLE001 - handed to every waiting request, which logs it once
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            for (_, fut), pred in zip(batch, preds, strict=True):
                if not fut.done():
                    fut.set_result(pred)

    async def stop(self) -> None:
        """Stop this loop's worker (at app shutdown); a later request starts a new one."""
        loop = asyncio.get_running_loop()
        with self._lock:
            task = self._tasks.pop(loop, None)
            self._queues.pop(loop, None)
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass


def _decode_error(e: ImageDecodeError, filename: str) -> HTTPException:
    """Map a decode failure, by its type, to the status a client can act on."""
    if isinstance(e, ImageTooLarge):
        return HTTPException(413, f"{filename}: {e}")
    if isinstance(e, UnsupportedImage):
        return HTTPException(415, f"{filename}: not an image, or a format that cannot be read "
                                  f"(send {READABLE_FORMATS})")
    if isinstance(e, EmptyImage):
        return HTTPException(400, f"{filename}: {e}")
    return HTTPException(400, f"{filename}: corrupt or truncated image ({e})")


def _fmt_bytes(n: int) -> str:
    return f"{n / 1024 / 1024:.1f} MB" if n >= 1024 * 1024 else f"{n / 1024:.0f} KB"


def _offline_docs_dir() -> Path | None:
    """Swagger UI files shipped by the `fastapi-offline` package, so /docs needs no CDN."""
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or not spec.origin:
        return None
    d = Path(spec.origin).parent / "static"
    return d if (d / "swagger-ui-bundle.js").exists() else None


def create_app(
    model: str = "default",
    quality: str = "fast",
    runtime: str = "auto",
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    feedback_db: str | Path | None = None,
    *,
    max_files: int = DEFAULT_MAX_FILES,
    max_batch: int = 16,
    max_wait_ms: float = 5.0,
    predictor: Predictor | None = None,
    gallery: str | Path | None = None,
) -> FastAPI:
    """Build the app; the model is loaded here, once. ``predictor`` lets a caller pass one already loaded (its models
    are shared, not copied). ``gallery``: a file from `dogbreed gallery build`; answers then carry look-alikes."""
    if predictor is None:
        # The batch carries the most breeds any request may ask for; each response is cut to its own top_k.
        predictor = Predictor(model=model, quality=quality, runtime=runtime, top_k=10**6, gallery=gallery)
    elif dataclasses.is_dataclass(predictor):
        # A copy sharing the loaded models, so the caller's own top_k is left alone.
        predictor = dataclasses.replace(predictor, top_k=max(predictor.top_k, len(predictor.classes)),
                                        gallery=gallery if gallery is not None else predictor.gallery)
    classes = list(predictor.classes)
    n_classes = len(classes)
    batcher = MicroBatcher(predictor, max_batch=max_batch, max_wait_s=max_wait_ms / 1000)
    draft = predictor.draft_size
    store = FeedbackStore(feedback_db)
    docs_dir = _offline_docs_dir()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await batcher.stop()

    app = FastAPI(
        lifespan=lifespan,
        title="dogbreed",
        version=_version(),
        description="Tell a dog's breed from a photo. `POST /v1/predict` with one or more photos as multipart "
                    "field `file`.",
        docs_url=None if docs_dir else "/docs",
        redoc_url=None,
    )
    app.state.predictor = predictor
    app.state.batcher = batcher
    app.state.feedback = store

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's default is a list of error objects; one readable sentence keeps {"detail": "..."} uniform.
        parts = []
        for err in exc.errors():
            loc = ".".join(str(x) for x in err.get("loc", ()) if x not in ("body", "query"))
            parts.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
        return JSONResponse({"detail": "; ".join(parts) or "invalid request"}, status_code=422)

    @app.exception_handler(Exception)
    async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": INTERNAL_ERROR}, status_code=500)

    async def _read_uploads(request: Request, files: list[UploadFile] | None) -> list[tuple[str, bytes]]:
        files = [f for f in (files or []) if f is not None]
        if not files:
            ctype = request.headers.get("content-type", "")
            # A form without the file is a missing field (400); any other body is the wrong kind of request (415).
            if ctype and not ctype.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
                raise HTTPException(415, f"unsupported content type {ctype.split(';')[0]!r}: send the photo as "
                                         "multipart/form-data field 'file'")
            raise HTTPException(400, "no file uploaded: send the photo as multipart/form-data field 'file'")
        if len(files) > max_files:
            raise HTTPException(413, f"too many files ({len(files)}); at most {max_files} per request")
        out = []
        for i, f in enumerate(files):
            name = f.filename or f"file {i + 1}"
            if f.size is not None and f.size > max_bytes:
                raise HTTPException(413, f"{name}: file is {_fmt_bytes(f.size)}; the limit is {_fmt_bytes(max_bytes)}")
            data = await f.read(max_bytes + 1)
            if len(data) > max_bytes:
                raise HTTPException(413, f"{name}: file is larger than the limit of {_fmt_bytes(max_bytes)}")
            out.append((name, data))
        return out

    def _decode(name: str, data: bytes) -> Image.Image:
        try:
            return load_image(data, draft_size=draft, max_pixels=max_pixels)
        except ImageDecodeError as e:
            raise _decode_error(e, name) from e

    @app.middleware("http")
    async def _limit_body(request: Request, call_next: Any) -> Any:
        # Refuse an oversized upload from its Content-Length before the multipart parser spools it to disk.
        length = request.headers.get("content-length")
        if request.method == "POST" and length and length.isdigit() and int(length) > max_bytes * max_files + 65536:
            return JSONResponse({"detail": f"request body too large ({_fmt_bytes(int(length))})"}, status_code=413)
        return await call_next(request)

    # No response_model for predictions: they are `Prediction.to_dict()` as is, so a field added there shows here too.
    @app.post("/v1/predict", summary="Predict the breed of the dog in each photo",
              responses=_errors(400, 413, 415, 422, 500))
    async def predict(
        request: Request,
        file: list[UploadFile] | None = File(None, description="One or more photos (repeat the field)."),
        top_k: int = Query(5, ge=1, le=n_classes, description="How many breeds to return per photo."),
    ) -> dict[str, list[dict[str, Any]]]:
        uploads = await _read_uploads(request, file)
        images = []
        for name, data in uploads:
            images.append(await run_in_threadpool(_decode, name, data))
        try:
            preds = await batcher.predict(images)
        except Exception:
            log.exception("prediction failed")
            raise HTTPException(500, INTERNAL_ERROR) from None
        out = []
        for (name, _), p in zip(uploads, preds, strict=True):
            d = p.to_dict()
            d["path"] = name
            d["breeds"] = d["breeds"][:top_k]
            out.append(d)
        return {"predictions": out}

    explain_lock = threading.Lock()
    explainers: list[Any] = []  # built on the first heat-map request: plain prediction never loads explain.py

    def _explain(data: bytes, name: str, breed: str | None, top: tuple[str | None, str]) -> tuple[bytes, str]:
        from ..explain import Explainer, torch_classifier

        with explain_lock:  # one heat-map at a time: a backward pass is heavy, and torch uses every core already
            if not explainers:
                explainers.append(Explainer(torch_classifier(predictor.model)))
            ex = explainers[0]
            try:
                c = ex.class_index(breed) if breed else ex.class_index(top[0] or top[1])
            except ValueError as e:
                raise HTTPException(422, f"{e}; see GET /v1/breeds") from None
            try:  # full size (no JPEG draft): the overlay has the photo's own size
                img = load_image(data, max_pixels=max_pixels)
            except ImageDecodeError as e:
                raise _decode_error(e, name) from e
            heat, c = ex.heatmap(img, c)
            from ..explain import Explanation, overlay

            return Explanation(ex.classes[c], c, heat, overlay(img, heat)).png(), ex.classes[c].name

    @app.post("/v1/explain", summary="Heat-map of where the model looked, as a PNG overlay the photo's size",
              response_class=Response, responses={200: {"content": {"image/png": {}},
                                                         "description": "The photo with the heat-map blended in; "
                                                         "header X-Dogbreed-Breed names the breed explained"},
                                                   **_errors(400, 413, 415, 422, 500)})
    async def explain(
        request: Request,
        file: UploadFile | None = File(None, description="The photo."),
        breed: str | None = Query(None, max_length=200, description="Breed to explain (name or wnid); default: "
                                  "the top breed."),
    ) -> Response:
        ((name, data),) = await _read_uploads(request, [file] if file else None)
        top = ("", "")
        if not breed:
            (pred,) = await batcher.predict([await run_in_threadpool(_decode, name, data)])
            top = (pred.breeds[0].wnid, pred.breeds[0].name)
        png, explained = await run_in_threadpool(_explain, data, name, breed, top)
        return Response(png, media_type="image/png", headers={"X-Dogbreed-Breed": explained,
                                                              "Cache-Control": "no-store"})

    @app.get("/v1/gallery/{photo_id}.jpg", summary="Thumbnail of a gallery photo named in look_alikes",
             response_class=Response, responses={200: {"content": {"image/jpeg": {}}}, 404: {"model": ErrorDetail}})
    async def gallery_photo(photo_id: int) -> Response:
        g = predictor.gallery
        if g is None or not 0 <= photo_id < len(g):
            raise HTTPException(404, "no such gallery photo" if g is not None else "no gallery loaded "
                                     "(start the server with --gallery)")
        return Response(g.thumbnail(photo_id), media_type="image/jpeg",
                        headers={"Cache-Control": "public, max-age=86400"})

    @app.get("/v1/breeds", summary="The breeds the model knows")
    async def breeds() -> dict[str, Any]:
        return {"breeds": [{"id": i, "wnid": b.wnid, "name": b.name} for i, b in enumerate(classes)]}

    @app.get("/healthz", summary="Liveness and model summary")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "model": model, "quality": quality, "runtime": runtime, "breeds": n_classes,
                "max_bytes": max_bytes, "max_pixels": max_pixels, "max_files": max_files,
                "gallery_photos": len(predictor.gallery) if predictor.gallery is not None else 0}

    @app.post("/v1/feedback", summary="Confirm or correct a prediction (stores the photo for retraining)",
              responses=_errors(400, 413, 415, 422, 500))
    async def feedback(
        request: Request,
        file: UploadFile | None = File(None, description="The photo the prediction was for."),
        breed: str = Form(..., max_length=200, description="The right breed: name or wnid."),
        predicted: str = Form("", max_length=200, description="What the model said (top breed or verdict)."),
    ) -> dict[str, Any]:
        ((name, data),) = await _read_uploads(request, [file] if file else None)
        await run_in_threadpool(_decode, name, data)  # only readable photos go into the dataset
        right = find_breed(classes, breed)
        if right is None:
            raise HTTPException(422, f"unknown breed {breed!r}; see GET /v1/breeds")
        sha = hashlib.sha256(data).hexdigest()
        rec = await run_in_threadpool(store.add, data, _format_of(data), sha, predicted.strip(), right)
        return {"id": rec.id, "sha256": sha, "predicted": rec.predicted, "breed": {"wnid": right.wnid,
                "name": right.name}, "created_at": rec.created_at}

    if docs_dir is not None:
        app.mount("/docs-static", StaticFiles(directory=docs_dir), name="docs-static")

        @app.get("/docs", include_in_schema=False)
        async def docs() -> HTMLResponse:
            return get_swagger_ui_html(openapi_url=app.openapi_url or "/openapi.json",
                                       title="dogbreed API", swagger_js_url="/docs-static/swagger-ui-bundle.js",
                                       swagger_css_url="/docs-static/swagger-ui.css",
                                       swagger_favicon_url="/static/favicon.svg")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> FileResponse:
        return FileResponse(STATIC_DIR / "favicon.svg", media_type="image/svg+xml")

    return app


def _format_of(data: bytes) -> str | None:
    import io

    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.format
    except Exception:  # noqa: BLE001 - only used to pick a file extension
        return None


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("dogbreed")
    except Exception:  # noqa: BLE001 - running from a source tree without metadata
        return "0"
