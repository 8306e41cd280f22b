"""What the routes share: the model behind a micro-batcher, the request budgets and the feedback store (`Service`),
reached by every route through FastAPI's ``Depends(service)``.

Every upload goes through the same budgets (serve/limits.py) in the same order: body bytes while it arrives, then
files per request and bytes per file, then pixels from the headers, then a place in the queue, and only then
decoding, at most ``decode_workers`` photos at full size at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from fastapi import HTTPException, Request, UploadFile
from PIL import Image
from starlette.concurrency import run_in_threadpool

from ..errors import EmptyImage, ImageDecodeError, ImageTooLarge, UnsupportedImage
from ..inference.decode import decode as decode_image
from ..predict import Prediction, Predictor
from ..transforms import draft_for_pixels, full_size
from .feedback import FeedbackStore
from .limits import (
    INTERNAL_ERROR,
    Admission,
    DecodeSlots,
    Limits,
    check_pixels,
    decoded_size,
    fmt_bytes,
    shrink_for_model,
)

log = logging.getLogger("dogbreed.serve")

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


def decode_error(e: ImageDecodeError, filename: str) -> HTTPException:
    """Map a decode failure, by its type, to the status a client can act on."""
    if isinstance(e, ImageTooLarge):
        return HTTPException(413, f"{filename}: {e}")
    if isinstance(e, UnsupportedImage):
        return HTTPException(415, f"{filename}: not an image, or a format that cannot be read "
                                  f"(send {READABLE_FORMATS})")
    if isinstance(e, EmptyImage) or str(e).startswith("corrupt or truncated"):
        return HTTPException(400, f"{filename}: {e}")  # the decoder's sentence already says what is wrong
    return HTTPException(400, f"{filename}: corrupt or truncated image ({e})")


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
        # What the schema shows for a breed field: a few of the names and wnids GET /v1/breeds lists, as examples, not
        # an enum, since the routes take any spelling of a name ("pug", "Border_collie"), which an enum would make a
        # generated client refuse.
        self.breed_values = sorted({b.name for b in self.classes} | {b.wnid for b in self.classes if b.wnid})

    def check_uploads(self, files: list[UploadFile], refused: dict[int, str] | None = None,
                      ) -> list[tuple[str, UploadFile]]:
        """Count and size checks that need no reading: 400 without a file, 413 over a budget. ``refused``: a file
        over the per-file limit is recorded there (by its place, `_photo_refusal`) instead of failing the request
        (`?errors=inline`)."""
        files = [f for f in files if f is not None]
        if not files:
            raise HTTPException(400, NO_FILE)
        if len(files) > self.limits.max_files:
            raise HTTPException(413, f"too many files ({len(files)}); at most {self.limits.max_files} per request")
        out = []
        for i, f in enumerate(files):
            name = f.filename or f"file {i + 1}"
            if f.size is not None and f.size > self.limits.max_file_bytes:
                most = self.limits.max_file_bytes
                with _photo_refusal(refused, i, name):
                    raise HTTPException(413, f"{name}: file is {fmt_bytes(f.size, most)}; the limit is "
                                             f"{fmt_bytes(most, f.size)}")
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

    async def check_pixels(self, uploads: list[tuple[str, UploadFile]], overlay: int | None = None) -> None:
        """413 from the headers alone, before anything is decoded: each photo at the size the model's decode gives
        (a JPEG at its draft), or with ``overlay`` at the size a heat-map of at most that many pixels decodes
        (`explain.photo_for_overlay`: whole, or a JPEG over the limit at the draft that still fills the overlay)."""
        size = self.predictor.draft_size if overlay is None else None

        def sizes() -> list:
            out = []
            for name, f in uploads:
                f.file.seek(0)
                wh = decoded_size(f.file, size)
                if overlay is not None and wh is not None and wh[0] * wh[1] > self.limits.max_pixels:
                    f.file.seek(0)
                    wh = decoded_size(f.file, draft_for_pixels(wh, overlay))  # other formats keep their size
                out.append((name, wh))
            return out

        check_pixels(await run_in_threadpool(sizes), self.limits)

    async def decode(self, name: str, f: UploadFile) -> Image.Image:
        """Decode in a slot (at most ``decode_workers`` full-size photos at once) and keep a reduced copy."""
        draft = self.predictor.draft_size

        def work() -> Image.Image:
            try:
                img = decode_image(self.read(f, name), draft_size=draft, max_pixels=self.limits.max_pixels)
            except ImageDecodeError as e:
                raise decode_error(e, name) from e
            return shrink_for_model(img, draft)

        async with self.slots.get():
            return await run_in_threadpool(work)

    async def predict(self, uploads: list[tuple[str, UploadFile]], inline_errors: bool = False,
                      refused: dict[int, str] | None = None, request: Request | None = None,
                      sizes: dict[int, tuple[int, int]] | None = None) -> list[Prediction]:
        """Budgets, then a place in the queue (503 when full), then decoding and the batched forward pass; with the
        ``request``, a client that goes away gives its photos' queue places back (`unless_gone`).

        ``inline_errors``: a photo refused on its own (unreadable, not an image, too many pixels, too many bytes:
        ``refused``, from `check_uploads`) gets an error entry in its place instead of failing the request; the
        request's own budgets still refuse it whole. ``sizes``: filled with each decoded photo's own size, after
        its EXIF rotation (`transforms.full_size`), by its place."""
        refused = dict(refused or {})
        if inline_errors:
            for i, (name, f) in enumerate(uploads):
                if i in refused:
                    continue
                with _photo_refusal(refused, i, name):
                    await self.check_pixels([(name, f)])
        ok = [i for i in range(len(uploads)) if i not in refused]
        await self.check_pixels([uploads[i] for i in ok])  # the request as a whole (and, without inline, each one)
        self.admission.enter(len(ok))
        try:
            images = {}
            for i in ok:
                with _photo_refusal(refused if inline_errors else None, i, uploads[i][0]):
                    images[i] = await self.decode(*uploads[i])
                    if sizes is not None:
                        sizes[i] = full_size(images[i])
            try:
                preds = iter(await unless_gone(self.batcher.predict(list(images.values())), request)
                             if images else [])
            except HTTPException:
                raise
            except Exception:
                log.exception("prediction failed")
                raise HTTPException(500, INTERNAL_ERROR) from None
            return [Prediction.failed(name, refused[i]) if i in refused else next(preds)
                    for i, (name, _) in enumerate(uploads)]
        finally:
            self.admission.leave(len(ok))


# How often a request waiting for its batch asks whether its client is still there.
GONE_POLL_S = 0.2


async def unless_gone(work: Awaitable[Any], request: Request | None) -> Any:
    """``work``'s result, or, once ``request``'s client has disconnected, ``work`` cancelled and a 499. Uvicorn does
    not cancel a route whose client went away: four clients that gave up on 32 photos each kept all 128 queue
    places for the 8-10 s their photos took, and live users got 503 meanwhile. Cancelled, the request's photos
    still waiting in the batcher are dropped before they run (`MicroBatcher._worker`), and its places are given
    back at once."""
    task = asyncio.ensure_future(work)
    if request is None:
        return await task
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=GONE_POLL_S)
            if done:
                return task.result()
            if await request.is_disconnected():
                log.info("client went away; its photos were dropped from the queue")
                raise HTTPException(499, "the client closed the request before its answer was ready")
    finally:
        if not task.done():
            task.cancel()


@contextlib.contextmanager
def _photo_refusal(refused: dict[int, str] | None, i: int, name: str) -> Iterator[None]:
    """Record photo ``i``'s own 400, 413 or 415 in ``refused`` (its sentence without the file name, which its entry
    carries) instead of raising it; None: raise."""
    try:
        yield
    except HTTPException as e:
        if refused is None or e.status_code not in (400, 413, 415):
            raise
        detail = str(e.detail)
        refused[i] = detail.removeprefix(f"{name}: ")


def service(request: Request) -> Service:
    """The app's `Service`, for ``Depends``: one per app, built by `create_app`."""
    return request.app.state.service


ONE_PHOTO_FIELDS = ("breed", "box", "predicted")  # the form fields of /v1/explain and /v1/feedback besides `file`


def query_only(*names: str) -> Callable[[Request], Awaitable[None]]:
    """For ``Depends``: one of the route's query parameters given twice, or sent as a form field, is a 400 saying
    what to send; `/v1/explain` drew the top breed's heat-map, with a 200, for a request whose form said
    `breed=Pug`, and `/v1/predict?top_k=1&top_k=3` answered with the last one."""

    async def check(request: Request) -> None:
        for key in names:
            if (n := len(request.query_params.getlist(key))) > 1:
                raise HTTPException(400, f"this request has {n} `{key}` parameters; send one")
        if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
            return
        form = await request.form()  # parsed once: the route reads the same form
        for key in names:
            if key in form:
                raise HTTPException(400, f"`{key}` is a query parameter of {request.url.path} "
                                         f"({request.url.path}?{key}=...), not a form field")

    return check


def form_only(*names: str) -> Callable[[Request], Awaitable[None]]:
    """For ``Depends``: one of the route's form fields sent as a query parameter is a 400 saying where it goes;
    `/v1/feedback?box=...` stored feedback on the whole two-dog photo, box null, with a 200."""

    async def check(request: Request) -> None:
        for key in names:
            if key in request.query_params:
                raise HTTPException(400, f"`{key}` is a form field of {request.url.path} (multipart/form-data, "
                                         "beside `file`), not a query parameter")

    return check


async def same_origin(request: Request) -> None:
    """For ``Depends`` on the route that writes (feedback): a browser's request from another site's page is a 403.
    A multipart POST is a "simple" cross-origin request, sent without asking first, so any page a visitor of this
    server opened could store feedback, poisoning retraining data and using up the daily quota. Browsers say where
    a request comes from in `Sec-Fetch-Site` (which a reverse proxy leaves alone, where it rewrites `Host`); older
    ones only name the page's origin in `Origin`, checked against `X-Forwarded-Host` or `Host`. Clients that send
    neither (curl, scripts) are not browsers on someone else's page."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        if site.lower() in ("same-origin", "none"):
            return
        origin = request.headers.get("origin", site)
    else:
        origin = request.headers.get("origin")
        if origin is None:
            return
        hosts = {_host_port(h, origin) for h in (request.headers.get("x-forwarded-host", "").split(",")[0],
                                                 request.headers.get("host", "")) if h.strip()}
        if _host_port(origin.split("://", 1)[-1], origin) in hosts:
            return
    raise HTTPException(403, f"feedback from a page of another site ({origin}) is refused; send it from this "
                             "server's own page, or without an Origin header")


def _host_port(host: str, origin: str) -> str:
    """``host[:port]`` with the port the origin's scheme implies written out: `Host: example.com:443` is the
    page of `Origin: https://example.com`."""
    host = host.strip().rstrip("/").lower()
    if host.endswith("]") or ":" not in host.rsplit("]", 1)[-1]:
        host += ":443" if origin.lower().startswith("https:") else ":80"
    return host


async def one_of_each(request: Request) -> None:
    """For ``Depends`` on the routes about one photo: a second `file` field, or a second of any other field, is a
    400. FastAPI hands such a route the last one, so feedback was stored on (and a heat-map drawn for) another photo
    than the first, with a 200."""
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        return  # not an upload at all: the route's own 415 says so
    counts = Counter(k for k, _ in (await request.form()).multi_items())  # parsed already: not read again
    n = counts.pop("file", 0)
    if n > 1:
        raise HTTPException(400, f"this request has {n} `file` fields; send one photo (POST /v1/predict takes "
                                 "several)")
    # the same for the routes' other fields: FastAPI hands the route the last `breed` or `box`, so feedback with two
    # breeds was stored under the second one, with a 200 (fields no route reads are ignored, twice or not)
    for key, n in counts.items():
        if n > 1 and key in ONE_PHOTO_FIELDS:
            raise HTTPException(400, f"this request has {n} `{key}` fields; send one")
