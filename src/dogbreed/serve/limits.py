"""Per-request budgets of the service: body bytes (counted as they arrive), files, decoded pixels, queued work.

Each budget is refused with its own status *before* the expensive step it protects: an oversized body before it is
spooled anywhere, too many pixels before any decoding, a full queue before any decoding or inference. A request that
gets through holds at most one decoded photo at full size at a time; after decoding it keeps a copy reduced to what
the model needs, so its memory does not grow with the pixels it sent.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import math
import re
from dataclasses import asdict, dataclass
from typing import Any, BinaryIO

from fastapi import HTTPException
from PIL import Image

from ..errors import too_many_pixels
from ..transforms import JPEG_FORMATS, full_size, mark_full_size, progressive_jpeg

log = logging.getLogger("dogbreed.serve")

MB = 1024 * 1024
UPLOAD_METHODS = ("POST", "PUT", "PATCH")
# The heat-map overlay is drawn at the photo's size, in float arrays several times the photo: a 49-megapixel PNG took
# the server to 7.25 GB (measured). Bigger photos are reduced to this many pixels first (2048x1536 is 3.1 MP).
EXPLAIN_MAX_PIXELS = 4_000_000
INTERNAL_ERROR = "internal error while processing the request; the details are in the server log"


@dataclass(frozen=True)
class Limits:
    """Every budget of the service; each one is a `dogbreed serve` flag and shown by /healthz."""

    max_file_bytes: int = 20 * MB  # one photo (a 50 MP phone JPEG is ~15 MB)
    # The whole body, files and form fields together, counted while it arrives (chunked bodies too). Under 30 MB,
    # so that no request makes the multipart parser spool more than that to a temporary file.
    max_body_bytes: int = 25 * MB
    max_files: int = 32  # photos per request
    max_pixels: int = 50_000_000  # one photo, as its header says
    # All photos of a request, counted as they will be decoded (JPEGs at their reduced draft size), before decoding.
    max_request_pixels: int = 200_000_000
    # Photos admitted (decoding, waiting or in inference) at once; beyond that a request gets 503 + Retry-After.
    max_queue: int = 128
    decode_workers: int = 2  # photos decoded at full size at once, across all requests
    feedback_max_bytes: int = 1024 * MB  # all stored feedback photos together
    feedback_per_day: int = 1000  # feedback photos accepted per UTC day
    # Seconds a request body may stall between two of its pieces before it gets a 408 and the connection closes:
    # a client that sent its headers and then nothing held a connection for ever (900 such were all open after
    # 60 s), each one a slot a real upload may need.
    body_idle_s: int = 30

    def __post_init__(self) -> None:
        for k, v in asdict(self).items():
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"limit {k} must be a positive whole number, got {v!r}")

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def fmt_bytes(n: int, beside: int | None = None) -> str:
    """``n`` bytes for a sentence; in bytes when one decimal would print it the same as ``beside`` (a 21,000,000-
    byte file was "20.0 MB; the limit is 20.0 MB")."""
    short = f"{n / MB:.1f} MB" if n >= MB else f"{n / 1024:.0f} KB"
    if beside is not None and beside != n and short == fmt_bytes(beside):
        return f"{n:,} bytes"
    return short


class BodyRefused(HTTPException):
    """A body refused while it arrives: over the byte limit (413) or stalled (408)."""

    def __init__(self, detail: str, status: int = 413) -> None:
        # Closing the connection stops the server from reading (and discarding) the rest of the body.
        super().__init__(status, detail, headers={"Connection": "close"})


BODY_TAIL = "dogbreed_body_tail"  # in the request's state: `ends_unclosed`
TAIL_BYTES = 256  # a boundary is at most 70 characters (RFC 2046), with its dashes and line ends


def ends_unclosed(content_type: str, tail: bytes | None) -> bool:
    """Whether a multipart body whose last bytes are ``tail`` ends before its closing boundary (cut off)."""
    m = re.search(r'boundary="?([^";]+)"?', content_type, re.IGNORECASE)
    return bool(m and tail is not None and b"--" + m.group(1).strip().encode("latin-1", "replace") + b"--" not in tail)


class GuardMiddleware:
    """Pure ASGI middleware: counts body bytes as they arrive and stops reading at the limit (413); turns any
    exception that escapes the app into one logged traceback and a bare 500, never a traceback to the client.

    Counting in ``receive`` rather than trusting Content-Length is what makes chunked uploads count too; the
    multipart parser reads through this ``receive``, so it never sees (or spools) more than the limit.
    """

    def __init__(self, app: Any, max_body_bytes: int, body_idle_s: float = 30) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_idle_s = body_idle_s

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes
        started = False

        async def send_tracked(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        if scope["method"] in UPLOAD_METHODS:
            length = dict(scope.get("headers") or []).get(b"content-length", b"")
            if length.isdigit() and int(length) > limit:
                await _send_json(send, 413, f"request body too large ({fmt_bytes(int(length), limit)}); the limit "
                                            f"is {fmt_bytes(limit, int(length))}")
                return
            received = 0
            # The body's last bytes, for the answer to a form without its file: a multipart body cut off before
            # its closing boundary parses as a form with no file, and "no file uploaded" blamed the sender's form.
            state = scope.setdefault("state", {})
            state[BODY_TAIL] = b""

            async def receive_counted() -> dict:
                nonlocal received
                try:
                    message = await asyncio.wait_for(receive(), self.body_idle_s)
                except asyncio.TimeoutError:  # not the builtin TimeoutError before Python 3.11
                    raise BodyRefused(f"the request body stopped arriving for {self.body_idle_s:g} s; send it "
                                       "again", 408) from None
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    state[BODY_TAIL] = (state[BODY_TAIL] + message.get("body", b""))[-TAIL_BYTES:]
                    if received > limit:
                        # FastAPI re-raises an HTTPException from reading the body, so the app answers 413.
                        raise BodyRefused(f"request body larger than the limit of {fmt_bytes(limit)}")
                return message
        else:
            receive_counted = receive
        try:
            await self.app(scope, receive_counted, send_tracked)
        except BodyRefused as e:
            if not started:
                await _send_json(send, e.status_code, str(e.detail))
        except Exception:
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if not started:
                await _send_json(send, 500, INTERNAL_ERROR)


# Starlette's multipart parser refuses some bodies itself, in its words and always as a 400 ("Part exceeded maximum
# size of 1024KB.", "Too many files. Maximum number of files is 1000."): what each means here, with its status.
_FORM_PARSER = (
    (r"(?:Part|Field) exceeded maximum size of (\d+)KB\.", 413,
     "a form field is over {0} KB; the fields besides `file` are short text (a breed, a box)"),
    (r"Too many files\. Maximum number of files is (\d+)\.", 413,
     "too many files (over {0}); at most {max_files} per request"),
    (r"Too many fields\. Maximum number of fields is (\d+)\.", 413, "too many form fields (over {0})"),
    (r"Invalid multipart data\.", 400,
     "the multipart body cannot be read: it is malformed, or a part's headers are too long (a file name of "
     "thousands of characters)"),
    (r"Missing boundary in multipart\.", 400, "the multipart body has no boundary in its Content-Type header"),
)


def form_parser_error(detail: Any, limits: Limits) -> tuple[int, str] | None:
    """(status, sentence) for a refusal of Starlette's multipart parser, or None for any other detail."""
    if not isinstance(detail, str):
        return None
    for pattern, status, text in _FORM_PARSER:
        if m := re.fullmatch(pattern, detail):
            return status, text.format(*m.groups(), max_files=limits.max_files)
    return None


async def _send_json(send: Any, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
           (b"connection", b"close")]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class Admission:
    """A counter of photos admitted into decoding and inference; a request that does not fit gets 503 at once.

    Refusing early is what keeps a burst of heavy requests from piling up decoded photos in memory.
    """

    def __init__(self, max_queue: int, retry_after_s: int = 2) -> None:
        self.max_queue = max_queue
        self.retry_after_s = retry_after_s
        self.in_flight = 0
        self.refused = 0

    def enter(self, n: int) -> None:
        if n > self.max_queue:  # never fits, however long a client honouring Retry-After waits
            self.refused += 1
            raise HTTPException(413, f"this request's {n} photos are more than the server ever queues at once "
                                     f"({self.max_queue}); send at most {self.max_queue} per request")
        if self.in_flight + n > self.max_queue:
            self.refused += 1
            raise HTTPException(503, f"the server is busy ({self.in_flight} photos queued, at most {self.max_queue});"
                                     f" retry in {self.retry_after_s} s",
                                headers={"Retry-After": str(self.retry_after_s)})
        self.in_flight += n

    def leave(self, n: int) -> None:
        self.in_flight -= n


def decoded_size(src: bytes | BinaryIO, draft_size: int | None) -> tuple[int, int] | None:
    """Width and height the decoder will produce, read from the header only (JPEGs at their draft scale, but a
    progressive one at its full size: `transforms.progressive_jpeg`).

    None when the header cannot be read; decoding then reports what is wrong.
    """
    try:
        with Image.open(io.BytesIO(src) if isinstance(src, bytes) else src) as im:
            w, h = im.size
            if draft_size and im.format in JPEG_FORMATS and min(w, h) > draft_size and not progressive_jpeg(im):
                # draft() only picks the DCT scale and updates .size; nothing is decoded here.
                scale = draft_size / min(w, h)
                im.draft("RGB", (math.ceil(w * scale), math.ceil(h * scale)))
                w, h = im.size
            return w, h
    except Exception:  # noqa: BLE001 - any unreadable header is reported by the decoder with its reason
        return None


def check_pixels(sizes: list[tuple[str, tuple[int, int] | None]], limits: Limits) -> None:
    """413 before decoding when one photo or the request as a whole has too many pixels."""
    total = 0
    for name, size in sizes:
        if size is None:
            continue
        w, h = size
        if w * h > limits.max_pixels:
            raise HTTPException(413, f"{name}: {too_many_pixels(w * h, limits.max_pixels, (w, h))}")
        total += w * h
    if total > limits.max_request_pixels:
        raise HTTPException(413, f"request too large: its {len(sizes)} photos decode to {total / 1e6:.0f} megapixels;"
                                 f" the limit is {limits.max_request_pixels / 1e6:.0f} per request "
                                 "(send fewer or smaller photos)")


def shrink_for_model(img: Image.Image, short_side: int) -> Image.Image:
    """Reduce a decoded photo by a whole factor (box filter) while its shorter side stays >= ``short_side``.

    The model resizes to about ``short_side`` anyway; a 7000x7000 PNG kept at full size would hold 147 MB until its
    batch runs. What the model sees changes by less than the JPEG draft decode already allows.
    """
    factor = min(img.size) // max(short_side, 1)
    return mark_full_size(img.reduce(factor), full_size(img)) if factor >= 2 else img


def return_freed_memory_to_the_os() -> bool:
    """Make glibc give big freed blocks back to the OS at once (a fixed mmap threshold of 4 MB).

    By default glibc raises its mmap threshold after the first big free, so the next decoded photos (Pillow allocates
    them in 16 MB blocks) come from per-thread heaps that keep their pages: measured, RSS stayed at 836 MB after
    eight 49-megapixel PNGs, against 436 MB with this. Process-wide, so `serve.run` calls it, not `create_app`.
    Returns False where there is no glibc (the service works the same, only keeps more memory).
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(-3, 4 * MB))  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        return False


class DecodeSlots:
    """At most ``n`` photos decoded at full size at once, across all requests (one asyncio loop)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self._sem: dict[asyncio.AbstractEventLoop, asyncio.Semaphore] = {}

    def get(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        sem = self._sem.get(loop)
        if sem is None:
            sem = self._sem[loop] = asyncio.Semaphore(self.n)
        return sem
