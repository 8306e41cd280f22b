"""FastAPI app: the prediction API, heat-maps, the breed list, feedback, and the static page, all offline.

Every upload goes through the same budgets (serve/limits.py) in the same order: body bytes while it arrives, then
files per request and bytes per file, then pixels from the headers, then a place in the queue, and only then
decoding, at most ``decode_workers`` photos at full size at a time.
"""

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image
from starlette.concurrency import run_in_threadpool

from ..errors import EmptyImage, ImageDecodeError, ImageTooLarge, UnsupportedImage
from ..predict import Prediction, PredictOptions, Predictor
from ..transforms import load_image, reduce_to_pixels
from .feedback import FeedbackQuotaExceeded, FeedbackStorageError, FeedbackStore, find_breed
from .limits import (
    EXPLAIN_MAX_PIXELS,
    INTERNAL_ERROR,
    Admission,
    DecodeSlots,
    GuardMiddleware,
    Limits,
    check_pixels,
    decoded_size,
    fmt_bytes,
    shrink_for_model,
)
from .schemas import BreedsResponse, ErrorDetail, FeedbackResponse, HealthResponse, PredictResponse, errors

__all__ = ["INTERNAL_ERROR", "ErrorDetail", "Limits", "MicroBatcher", "create_app"]

log = logging.getLogger("dogbreed.serve")

STATIC_DIR = Path(__file__).parent / "static"
READABLE_FORMATS = "JPEG, PNG, WebP, GIF, BMP or TIFF"
NO_FILE = "no file uploaded: send the photo as multipart/form-data field 'file'"
# An upload must hold at least one byte (an empty one is refused with 400); the schema says so.
NON_EMPTY_FILE = {"type": "string", "format": "binary", "minLength": 1}


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
    if isinstance(e, EmptyImage) or str(e).startswith("corrupt or truncated"):
        return HTTPException(400, f"{filename}: {e}")  # the decoder's sentence already says what is wrong
    return HTTPException(400, f"{filename}: corrupt or truncated image ({e})")


def _offline_docs_dir() -> Path | None:
    """Swagger UI files shipped by the `fastapi-offline` package, so /docs needs no CDN."""
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or not spec.origin:
        return None
    d = Path(spec.origin).parent / "static"
    return d if (d / "swagger-ui-bundle.js").exists() else None


def _validation_status(request: Request, exc: RequestValidationError) -> tuple[int, str]:
    """A missing file is 400 (415 when the body is not a form at all); anything else is 422, in one sentence."""
    errs = exc.errors()
    if any(e.get("type") == "missing" and tuple(e.get("loc", ()))[-1:] == ("file",) for e in errs):
        ctype = request.headers.get("content-type", "")
        if ctype and not ctype.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
            return 415, (f"unsupported content type {ctype.split(';')[0]!r}: send the photo as multipart/form-data "
                         "field 'file'")
        return 400, NO_FILE
    parts = []
    for err in errs:
        loc = ".".join(str(x) for x in err.get("loc", ()) if x not in ("body", "query"))
        parts.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
    return 422, "; ".join(parts) or "invalid request"


@dataclass
class Service:
    """What the routes share: the model, the batcher, the budgets and the feedback store."""

    predictor: Predictor
    limits: Limits
    store: FeedbackStore
    labels: dict[str, str]  # model, quality, runtime as given, for /healthz
    batcher: MicroBatcher
    admission: Admission = field(init=False)
    slots: DecodeSlots = field(init=False)
    classes: list = field(init=False)
    breed_values: list[str] = field(init=False)
    explain_lock: threading.Lock = field(default_factory=threading.Lock)
    explainers: list[Any] = field(default_factory=list)  # built on the first heat-map request

    def __post_init__(self) -> None:
        self.admission = Admission(self.limits.max_queue)
        self.slots = DecodeSlots(self.limits.decode_workers)
        self.classes = list(self.predictor.classes)
        # What the schema lists for a breed field; the routes also accept other spellings of a name.
        self.breed_values = sorted({b.name for b in self.classes} | {b.wnid for b in self.classes if b.wnid})

    def check_uploads(self, files: list[UploadFile]) -> list[tuple[str, UploadFile]]:
        """Count and size checks that need no reading: 400 without a file, 413 over a budget."""
        files = [f for f in files if f is not None]
        if not files:
            raise HTTPException(400, NO_FILE)
        if len(files) > self.limits.max_files:
            raise HTTPException(413, f"too many files ({len(files)}); at most {self.limits.max_files} per request")
        out = []
        for i, f in enumerate(files):
            name = f.filename or f"file {i + 1}"
            if f.size is not None and f.size > self.limits.max_file_bytes:
                raise HTTPException(413, f"{name}: file is {fmt_bytes(f.size)}; the limit is "
                                         f"{fmt_bytes(self.limits.max_file_bytes)}")
            out.append((name, f))
        return out

    def read(self, f: UploadFile, name: str) -> bytes:
        """The upload's bytes (call it in a worker thread: the spooled file may be on disk)."""
        f.file.seek(0)
        limit = self.limits.max_file_bytes
        data = f.file.read(limit + 1)
        if len(data) > limit:
            raise HTTPException(413, f"{name}: file is larger than the limit of {fmt_bytes(limit)}")
        return data

    async def check_pixels(self, uploads: list[tuple[str, UploadFile]], draft: bool = True) -> None:
        """413 from the headers alone, before anything is decoded."""
        size = self.predictor.draft_size if draft else None

        def sizes() -> list:
            out = []
            for name, f in uploads:
                f.file.seek(0)
                out.append((name, decoded_size(f.file, size)))
            return out

        check_pixels(await run_in_threadpool(sizes), self.limits)

    async def decode(self, name: str, f: UploadFile) -> Image.Image:
        """Decode in a slot (at most ``decode_workers`` full-size photos at once) and keep a reduced copy."""
        draft = self.predictor.draft_size

        def work() -> Image.Image:
            try:
                img = load_image(self.read(f, name), draft_size=draft, max_pixels=self.limits.max_pixels)
            except ImageDecodeError as e:
                raise _decode_error(e, name) from e
            return shrink_for_model(img, draft)

        async with self.slots.get():
            return await run_in_threadpool(work)

    async def predict(self, uploads: list[tuple[str, UploadFile]]) -> list[Prediction]:
        """Budgets, then a place in the queue (503 when full), then decoding and the batched forward pass."""
        await self.check_pixels(uploads)
        self.admission.enter(len(uploads))
        try:
            images = [await self.decode(name, f) for name, f in uploads]
            try:
                return await self.batcher.predict(images)
            except Exception:
                log.exception("prediction failed")
                raise HTTPException(500, INTERNAL_ERROR) from None
        finally:
            self.admission.leave(len(uploads))


def create_app(
    model: str = "default",
    quality: str = "fast",
    runtime: str = "auto",
    max_bytes: int | None = None,
    max_pixels: int | None = None,
    feedback_db: str | Path | None = None,
    *,
    max_files: int | None = None,
    limits: Limits | None = None,
    max_batch: int = 16,
    max_wait_ms: float = 5.0,
    predictor: Predictor | None = None,
    gallery: str | Path | None = None,
    options: PredictOptions | None = None,
) -> FastAPI:
    """Build the app; the model is loaded here, once. ``predictor`` lets a caller pass one already loaded (its models
    are shared, not copied). ``gallery``: a file from `dogbreed gallery build`; answers then carry look-alikes.
    ``limits`` holds every budget; ``max_bytes``/``max_pixels``/``max_files`` override its per-file bytes, per-photo
    pixels and files per request."""
    limits = limits or Limits()
    overrides = {"max_file_bytes": max_bytes, "max_pixels": max_pixels, "max_files": max_files}
    limits = dataclasses.replace(limits, **{k: v for k, v in overrides.items() if v is not None})
    # ``options`` (what `dogbreed serve` passes) carries every prediction option; the loose arguments remain for
    # callers that only pick a model.
    options = options or PredictOptions(model=model, quality=quality, runtime=runtime, gallery=gallery)
    if predictor is None:
        # The batch carries the most breeds any request may ask for; each response is cut to its own top_k.
        predictor = options.predictor(top_k=10**6)
    elif dataclasses.is_dataclass(predictor):
        # A copy sharing the loaded models, so the caller's own top_k is left alone.
        predictor = dataclasses.replace(predictor, top_k=max(predictor.top_k, len(predictor.classes)),
                                        gallery=gallery if gallery is not None else predictor.gallery)
    svc = Service(predictor, limits,
                  FeedbackStore(feedback_db, max_bytes=limits.feedback_max_bytes, per_day=limits.feedback_per_day),
                  {"model": options.model, "quality": options.quality, "runtime": options.runtime},
                  MicroBatcher(predictor, max_batch=max_batch, max_wait_s=max_wait_ms / 1000))
    docs_dir = _offline_docs_dir()

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
    app.add_middleware(GuardMiddleware, max_body_bytes=limits.max_body_bytes)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's default is a list of error objects; one readable sentence keeps {"detail": "..."} uniform.
        status, detail = _validation_status(request, exc)
        return JSONResponse({"detail": detail}, status_code=status)

    _add_predict_routes(app, svc)
    _add_explain_routes(app, svc)
    _add_feedback_route(app, svc)
    _add_page_routes(app, docs_dir)
    return app


def _add_predict_routes(app: FastAPI, svc: Service) -> None:
    limits, n_classes = svc.limits, len(svc.classes)

    @app.post("/v1/predict", summary="Predict the breed of the dog in each photo", response_model=None,
              responses={200: {"model": PredictResponse}, **errors(400, 413, 415, 422, 500, 503)})
    async def predict(
        file: list[UploadFile] = File(..., description=f"One to {limits.max_files} photos (repeat the field); each "
                                      f"at most {fmt_bytes(limits.max_file_bytes)} and "
                                      f"{limits.max_pixels / 1e6:.0f} megapixels.",
                                      json_schema_extra={"minItems": 1, "maxItems": limits.max_files,
                                                         "items": NON_EMPTY_FILE}),
        top_k: int = Query(5, ge=1, le=n_classes, description="How many breeds to return per photo."),
    ) -> dict[str, list[dict[str, Any]]]:
        uploads = svc.check_uploads(file)
        preds = await svc.predict(uploads)
        out = []
        for (name, _), p in zip(uploads, preds, strict=True):
            d = p.to_dict()
            d["path"] = name
            d["breeds"] = d["breeds"][:top_k]
            out.append(d)
        return {"predictions": out}

    @app.get("/v1/breeds", summary="The breeds the model knows", response_model=BreedsResponse)
    async def breeds() -> dict[str, Any]:
        return {"breeds": [{"id": i, "wnid": b.wnid, "name": b.name} for i, b in enumerate(svc.classes)]}

    @app.get("/healthz", summary="Liveness, model summary and every limit", response_model=None,
             responses={200: {"model": HealthResponse}})
    async def healthz() -> dict[str, Any]:
        g = svc.predictor.gallery
        return {"status": "ok", **svc.labels, "breeds": n_classes, "limits": limits.to_dict(),
                "queue": {"in_flight": svc.admission.in_flight, "refused": svc.admission.refused},
                "gallery_photos": len(g) if g is not None else 0,
                # the older flat keys, kept for clients that read them
                "max_bytes": limits.max_file_bytes, "max_pixels": limits.max_pixels, "max_files": limits.max_files}

    @app.get("/v1/gallery/{photo_id}.jpg", summary="Thumbnail of a gallery photo named in look_alikes",
             response_class=Response, responses={200: {"content": {"image/jpeg": {}}}, **errors(404, 422)})
    async def gallery_photo(photo_id: int) -> Response:
        g = svc.predictor.gallery
        if g is None or not 0 <= photo_id < len(g):
            raise HTTPException(404, "no such gallery photo" if g is not None else "no gallery loaded "
                                     "(start the server with --gallery)")
        return Response(g.thumbnail(photo_id), media_type="image/jpeg",
                        headers={"Cache-Control": "public, max-age=86400"})


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
            img = reduce_to_pixels(load_image(data, max_pixels=svc.limits.max_pixels), EXPLAIN_MAX_PIXELS)
        except ImageDecodeError as e:
            raise _decode_error(e, name) from e
        heat, c = ex.heatmap(img, c)
        return Explanation(ex.classes[c], c, heat, overlay(img, heat)).png(), ex.classes[c].name


def _add_explain_routes(app: FastAPI, svc: Service) -> None:
    @app.post("/v1/explain", summary="Heat-map of where the model looked, as a PNG overlay the photo's size "
              f"(reduced to at most {EXPLAIN_MAX_PIXELS / 1e6:.0f} megapixels)",
              response_class=Response, responses={200: {"content": {"image/png": {}},
                                                         "description": "The photo with the heat-map blended in; "
                                                         "header X-Dogbreed-Breed names the breed explained"},
                                                   **errors(400, 413, 415, 422, 500, 503)})
    async def explain(
        file: UploadFile = File(..., description="The photo.", json_schema_extra=NON_EMPTY_FILE),
        breed: str | None = Query(None, max_length=200, json_schema_extra={"enum": svc.breed_values},
                                  description="Breed to explain (name or wnid, as in GET /v1/breeds; any spelling "
                                  "of the name is accepted); default: the top breed."),
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


def _add_feedback_route(app: FastAPI, svc: Service) -> None:
    @app.post("/v1/feedback", summary="Confirm or correct a prediction (stores the photo for retraining)",
              response_model=FeedbackResponse, responses=errors(400, 413, 415, 422, 429, 500, 503, 507))
    async def feedback(
        file: UploadFile = File(..., description="The photo the prediction was for.",
                                json_schema_extra=NON_EMPTY_FILE),
        breed: str = Form(..., min_length=1, max_length=200, json_schema_extra={"enum": svc.breed_values},
                          description="The right breed: its name or wnid, as in GET /v1/breeds (any spelling of "
                                      "the name is accepted)."),
        predicted: str = Form("", max_length=200, description="What the model said (top breed or verdict)."),
    ) -> dict[str, Any]:
        ((name, f),) = svc.check_uploads([file])
        right = find_breed(svc.classes, breed)
        if right is None:
            raise HTTPException(422, f"unknown breed {breed!r}; see GET /v1/breeds")
        await svc.check_pixels([(name, f)])
        await svc.decode(name, f)  # only readable photos go into the dataset
        data = await run_in_threadpool(svc.read, f, name)
        sha = hashlib.sha256(data).hexdigest()
        try:
            rec = await run_in_threadpool(svc.store.add, data, _format_of(data), sha, predicted.strip(), right)
        except FeedbackQuotaExceeded as e:
            if e.daily:
                raise HTTPException(429, str(e), headers={"Retry-After": str(e.retry_after_s)}) from None
            raise HTTPException(507, str(e)) from None
        except FeedbackStorageError as e:
            log.error("feedback not stored: %s", e)  # once, here; the client gets a sentence without paths
            if e.full:
                raise HTTPException(507, "feedback storage is full (no space left on the server's disk); nothing "
                                    "was saved") from None
            raise HTTPException(503, "feedback cannot be stored right now; nothing was saved",
                                headers={"Retry-After": "60"}) from None
        return {"id": rec.id, "sha256": sha, "predicted": rec.predicted, "breed": {"wnid": right.wnid,
                "name": right.name}, "created_at": rec.created_at}


def _add_page_routes(app: FastAPI, docs_dir: Path | None) -> None:
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
