"""serve/limits.py on its own: header-only sizes, pixel budgets, the admission counter, photo reduction."""

from __future__ import annotations

import io

import pytest
from fastapi import HTTPException
from PIL import Image

from dogbreed.serve.limits import (
    Admission,
    Limits,
    check_pixels,
    decoded_size,
    shrink_for_model,
)
from dogbreed.transforms import reduce_to_pixels


def _encode(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def test_decoded_size_reads_headers_and_the_jpeg_draft_scale() -> None:
    jpeg = _encode(Image.new("RGB", (4000, 3000), (10, 20, 30)), "JPEG")
    assert decoded_size(jpeg, None) == (4000, 3000)
    # shorter side 3000 for a 257-pixel need: the decoder's 1/8 scale, what load_image will actually decode
    assert decoded_size(jpeg, 257) == (500, 375)
    assert decoded_size(io.BytesIO(jpeg), 257) == (500, 375)  # a spooled upload works the same
    png = _encode(Image.new("RGB", (4000, 3000)), "PNG")
    assert decoded_size(png, 257) == (4000, 3000)  # no draft for PNG: it decodes at full size
    assert decoded_size(b"not an image", 257) is None  # left for the decoder to explain
    progressive = io.BytesIO()
    Image.new("RGB", (4000, 3000), (10, 20, 30)).save(progressive, "JPEG", progressive=True)
    assert decoded_size(progressive.getvalue(), 257) == (4000, 3000)  # held whole while it decodes: counted whole


def test_check_pixels_per_photo_and_per_request() -> None:
    limits = Limits(max_pixels=1000, max_request_pixels=1500)
    check_pixels([("a.png", (30, 30)), ("b.png", (20, 20)), ("c.png", None)], limits)  # 1300: fine
    with pytest.raises(HTTPException) as e:
        check_pixels([("big.png", (40, 30))], limits)
    assert e.value.status_code == 413
    assert e.value.detail == "big.png: image too large: 40x30 is 1,200 pixels; the limit is 1,000"
    with pytest.raises(HTTPException) as e:
        check_pixels([("a.png", (30, 30)), ("b.png", (30, 30))], limits)
    assert e.value.status_code == 413 and "request too large: its 2 photos" in e.value.detail


def test_admission_refuses_with_retry_after_and_counts() -> None:
    a = Admission(max_queue=4)
    a.enter(3)
    with pytest.raises(HTTPException) as e:
        a.enter(2)
    assert e.value.status_code == 503 and e.value.headers == {"Retry-After": "2"}
    assert "3 photos queued, at most 4" in e.value.detail
    a.enter(1)
    a.leave(4)
    assert (a.in_flight, a.refused) == (0, 1)


def test_photos_are_reduced_by_whole_factors_only_when_far_too_big() -> None:
    # factor 5000 // 257 = 19, sizes rounded up: the shorter side stays >= 257
    assert shrink_for_model(Image.new("RGB", (7000, 5000)), 257).size == (369, 264)
    small = Image.new("RGB", (500, 400))
    assert shrink_for_model(small, 257) is small  # under twice the need: untouched, so the model sees the same
    assert reduce_to_pixels(Image.new("RGB", (7000, 7000)), 4_000_000).size == (1750, 1750)
    assert reduce_to_pixels(small, 4_000_000) is small


def test_limits_must_be_positive_whole_numbers() -> None:
    with pytest.raises(ValueError, match="max_queue"):
        Limits(max_queue=0)
    assert Limits().max_body_bytes < 30 * 1024 * 1024  # issue 16: a chunked body is cut before 30 MB


def test_a_body_that_stops_arriving_gets_a_408_and_the_connection_closes() -> None:
    """A client that sent its headers and part of a body, then nothing, held its connection for ever."""
    import asyncio
    import time

    from dogbreed.serve.limits import GuardMiddleware

    async def reads_the_body(scope: dict, receive, send) -> None:  # noqa: ANN001 - an ASGI app
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def run(pieces: list[dict]) -> tuple[list[dict], float]:
        async def receive() -> dict:
            if pieces:
                return pieces.pop(0)
            await asyncio.Event().wait()  # the client stalls
            return {}

        sent: list[dict] = []

        async def send(message: dict) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/v1/predict", "headers": []}
        t = time.monotonic()
        await GuardMiddleware(reads_the_body, max_body_bytes=1000, body_idle_s=1)(scope, receive, send)
        return sent, time.monotonic() - t

    sent, took = asyncio.run(run([{"type": "http.request", "body": b"--x\r\n", "more_body": True}]))
    assert sent[0]["status"] == 408 and (b"connection", b"close") in sent[0]["headers"] and took < 5
    assert b"stopped arriving for 1 s" in sent[1]["body"]
    sent, _ = asyncio.run(run([{"type": "http.request", "body": b"abc", "more_body": False}]))  # a whole body
    assert sent[0]["status"] == 200
    assert Limits().body_idle_s == 30
