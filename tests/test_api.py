"""HTTP API (`dogbreed.serve`) with the real packaged model, through FastAPI's TestClient."""

from __future__ import annotations

import asyncio
import hashlib
import io
import sqlite3
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from dogbreed.serve.app import INTERNAL_ERROR, MicroBatcher, create_app
from dogbreed.serve.limits import Limits

SAMOYED = "imagenet-val-dogs/n02111889-Samoyed/ILSVRC2012_val_00003808.jpg"
PREDICTION_KEYS = {"path", "verdict", "dog_probability", "breeds", "several_breeds_likely", "dogs", "size"}


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def noise_png(seed: int, size: tuple[int, int] = (96, 80)) -> bytes:
    rng = np.random.default_rng(seed)
    return png_bytes(Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)))


def png_claiming_size(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims a huge size: what a decompression bomb looks like before decoding."""
    data = bytearray(png_bytes(Image.new("RGB", (1, 1))))
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


@pytest.fixture(scope="module")
def feedback_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("feedback") / "feedback.sqlite3"


@pytest.fixture(scope="module")
def client(default_predictor, feedback_db: Path):
    # One app (and one loaded model) for the whole module keeps these tests fast.
    app = create_app(predictor=default_predictor, feedback_db=feedback_db)
    with TestClient(app) as c:
        yield c


@pytest.fixture(scope="module")
def small_client(default_predictor, tmp_path_factory: pytest.TempPathFactory):
    """Same model, tiny limits, to exercise the 413 paths without huge uploads."""
    app = create_app(predictor=default_predictor, max_bytes=60_000, max_pixels=100_000, max_files=2,
                     limits=Limits(max_body_bytes=150_000, max_request_pixels=150_000),
                     feedback_db=tmp_path_factory.mktemp("fb2") / "fb.sqlite3")
    with TestClient(app) as c:
        yield c


def post_files(client: TestClient, *files: tuple[str, bytes, str], **params) -> object:
    return client.post("/v1/predict", params=params, files=[("file", f) for f in files])


def check_prediction_shape(p: dict, top_k: int = 5) -> None:
    assert set(p) == PREDICTION_KEYS
    assert len(p["size"]) == 2 and all(v > 0 for v in p["size"])  # the space the boxes are in
    assert all(d["box"][2] <= p["size"][0] and d["box"][3] <= p["size"][1] for d in p["dogs"])
    assert p["verdict"] in ("dog", "no_dog", "uncertain_breed")
    assert 0.0 <= p["dog_probability"] <= 1.0
    assert len(p["breeds"]) == top_k
    for b in p["breeds"]:
        assert set(b) == {"wnid", "name", "probability"}
    probs = [b["probability"] for b in p["breeds"]]
    assert probs == sorted(probs, reverse=True)
    for d in p["dogs"]:  # every dog found: its box in the photo's pixels and its own top_k breeds
        assert set(d) == {"box", "dog_probability", "verdict", "breeds", "several_breeds_likely"}
        assert len(d["box"]) == 4 and d["box"][0] < d["box"][2] and d["box"][1] < d["box"][3]
        assert len(d["breeds"]) == top_k and d["verdict"] in ("dog", "uncertain_breed")
    assert (p["verdict"] == "no_dog") == (p["dogs"] == [])


# -- predictions -----------------------------------------------------------------------------------------------

@pytest.mark.real
def test_real_dog_photo_gets_its_breed(client: TestClient, real_data: Path, default_predictor) -> None:
    path = real_data / SAMOYED
    if not path.exists():
        pytest.skip(f"{SAMOYED} not in the shared real data")
    r = post_files(client, ("rex.jpg", path.read_bytes(), "image/jpeg"))
    assert r.status_code == 200, r.text
    (p,) = r.json()["predictions"]
    check_prediction_shape(p)
    assert p["path"] == "rex.jpg"
    assert p["verdict"] == "dog"
    # 0.998 with the shipped adapted head and its temperature (0.977 with the plain ImageNet head, model="imagenet").
    assert p["breeds"][0] == {"wnid": "n02111889", "name": "Samoyed", "probability": pytest.approx(0.998, abs=0.02)}
    assert len(p["dogs"]) == 1 and p["dogs"][0]["breeds"][0]["name"] == "Samoyed"
    # The API and the library agree on the same photo (same decode, same model).
    lib = default_predictor.predict([str(path)])[0].to_dict()
    assert p["dog_probability"] == pytest.approx(lib["dog_probability"], abs=1e-4)
    assert [b["wnid"] for b in p["breeds"]] == [b["wnid"] for b in lib["breeds"]]


def test_chelsea_the_cat_is_no_dog(client: TestClient, chelsea_jpeg: bytes) -> None:
    r = post_files(client, ("chelsea.jpg", chelsea_jpeg, "image/jpeg"))
    assert r.status_code == 200, r.text
    (p,) = r.json()["predictions"]
    check_prediction_shape(p)
    assert p["verdict"] == "no_dog"
    assert p["dog_probability"] < 0.2
    assert p["several_breeds_likely"] is False


def test_top_k_is_honoured_and_validated(client: TestClient, chelsea_jpeg: bytes) -> None:
    r = post_files(client, ("c.jpg", chelsea_jpeg, "image/jpeg"), top_k=3)
    assert r.status_code == 200
    check_prediction_shape(r.json()["predictions"][0], top_k=3)
    r = post_files(client, ("c.jpg", chelsea_jpeg, "image/jpeg"), top_k=120)
    assert len(r.json()["predictions"][0]["breeds"]) == 120
    for bad in (0, 121, "many"):
        r = post_files(client, ("c.jpg", chelsea_jpeg, "image/jpeg"), top_k=bad)
        assert r.status_code == 422
        assert isinstance(r.json()["detail"], str) and "top_k" in r.json()["detail"]


def test_several_files_keep_their_order(client: TestClient, chelsea_jpeg: bytes) -> None:
    files = [("a-noise.png", noise_png(1), "image/png"), ("b-chelsea.jpg", chelsea_jpeg, "image/jpeg"),
             ("c-noise.png", noise_png(2), "image/png"), ("d-grey.png", png_bytes(Image.new("L", (50, 70), 90)),
                                                          "image/png")]
    singles = [post_files(client, f).json()["predictions"][0] for f in files]
    r = post_files(client, *files)
    assert r.status_code == 200
    preds = r.json()["predictions"]
    assert [p["path"] for p in preds] == [f[0] for f in files]
    for batched, single in zip(preds, singles, strict=True):
        assert batched["dog_probability"] == pytest.approx(single["dog_probability"], abs=1e-4)
        assert batched["breeds"][0]["wnid"] == single["breeds"][0]["wnid"]
    assert preds[1]["verdict"] == "no_dog"  # chelsea, in second place


def test_concurrent_requests_each_get_their_own_answer(client: TestClient, chelsea_jpeg: bytes) -> None:
    images = [noise_png(10 + i) for i in range(7)] + [chelsea_jpeg]
    expected = [post_files(client, (f"{i}.img", b, "image/*")).json()["predictions"][0] for i, b in enumerate(images)]

    def one(i: int) -> tuple[int, dict]:
        r = post_files(client, (f"{i}.img", images[i], "image/*"))
        assert r.status_code == 200
        return i, r.json()["predictions"][0]

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(one, range(8)))
    for i, p in results:
        assert p["path"] == f"{i}.img"
        assert p["dog_probability"] == pytest.approx(expected[i]["dog_probability"], abs=1e-4)
        assert [b["wnid"] for b in p["breeds"]] == [b["wnid"] for b in expected[i]["breeds"]]


def test_micro_batcher_gathers_simultaneous_requests() -> None:
    """Requests that arrive together share one model call, and each gets its own result back in order."""
    calls: list[int] = []

    def predict_images(images, paths=None):
        calls.append(len(images))
        return [f"result-{im}" for im in images]

    batcher = MicroBatcher(SimpleNamespace(predict_images=predict_images), max_batch=16, max_wait_s=0.05)

    async def main() -> list:
        out = await asyncio.gather(*(batcher.predict([i]) for i in range(10)), batcher.predict([10, 11]))
        await batcher.stop()
        return out

    out = asyncio.run(main())
    assert calls == [12]
    assert out[:10] == [[f"result-{i}"] for i in range(10)]
    assert out[10] == ["result-10", "result-11"]


def test_micro_batcher_respects_batch_size() -> None:
    calls: list[int] = []
    batcher = MicroBatcher(SimpleNamespace(predict_images=lambda ims, paths=None: calls.append(len(ims)) or ims),
                           max_batch=4, max_wait_s=0.01)

    async def main() -> list:
        out = await asyncio.gather(*(batcher.predict([i]) for i in range(10)))
        await batcher.stop()
        return out

    assert asyncio.run(main()) == [[i] for i in range(10)]
    assert calls == [4, 4, 2]


# -- errors ----------------------------------------------------------------------------------------------------

def truncated_jpeg(chelsea_jpeg: bytes) -> bytes:
    return chelsea_jpeg[: len(chelsea_jpeg) // 2]


@pytest.mark.parametrize(
    ("kind", "status", "message"),
    [
        ("text", 415, "not an image"),
        ("svg", 415, "not an image"),
        ("truncated", 400, "corrupt or truncated"),
        ("empty", 400, "empty file"),
        ("bomb", 413, "too large"),
    ],
)
def test_bad_files_get_clear_4xx(client: TestClient, chelsea_jpeg: bytes, kind: str, status: int,
                                 message: str) -> None:
    body = {
        "text": b"hello, I am a text file\n",
        "svg": b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>',
        "truncated": truncated_jpeg(chelsea_jpeg),
        "empty": b"",
        "bomb": png_claiming_size(30_000, 30_000),  # 900 MP: Pillow's bomb guard must refuse it
    }[kind]
    r = post_files(client, (f"upload.{kind}", body, "application/octet-stream"))
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, str)
    assert message in detail
    assert f"upload.{kind}" in detail  # says which file
    assert "Error" not in detail  # Pillow's words, not its exception class


def test_one_bad_file_among_good_ones_names_it(client: TestClient, chelsea_jpeg: bytes) -> None:
    r = post_files(client, ("good.jpg", chelsea_jpeg, "image/jpeg"), ("notes.txt", b"not a photo", "text/plain"))
    assert r.status_code == 415
    assert r.json()["detail"].startswith("notes.txt:")


def test_no_file_is_400(client: TestClient) -> None:
    r = client.post("/v1/predict")
    assert r.status_code == 400
    assert "no file" in r.json()["detail"]
    r = client.post("/v1/predict", files={"photo": ("x.jpg", b"abc", "image/jpeg")})  # wrong field name
    assert r.status_code == 400
    assert "'file'" in r.json()["detail"]


def test_a_multipart_body_cut_off_before_its_closing_boundary_says_so(client: TestClient, chelsea_jpeg: bytes) -> None:
    """Found by QA: a body cut off mid-file, or without its closing boundary, was answered "no file uploaded"."""
    head = (b'--abc\r\nContent-Disposition: form-data; name="file"; filename="s.jpg"\r\n'
            b"Content-Type: image/jpeg\r\n\r\n")
    whole = head + chelsea_jpeg + b"\r\n--abc--\r\n"
    for route in ("/v1/predict", "/v1/explain"):
        for cut in (whole[:-9], whole[: len(whole) // 2]):
            r = client.post(route, content=cut, headers={"content-type": "multipart/form-data; boundary=abc"})
            assert r.status_code == 400 and "ends before its closing boundary" in r.json()["detail"], r.text
    form = {"content-type": "multipart/form-data; boundary=abc"}
    r = client.post("/v1/predict", content=b"--abc--\r\n", headers=form)
    assert r.status_code == 400 and r.json()["detail"].startswith("no file uploaded")  # a whole form without a file
    r = client.post("/v1/predict", content=whole, headers={"content-type": 'multipart/form-data; boundary="abc"'})
    assert r.status_code == 200, r.text


def test_a_query_parameter_sent_as_a_form_field_is_refused(client: TestClient, chelsea_jpeg: bytes) -> None:
    """Found by QA: explain drew the top breed, with a 200, for a form saying breed=Pug (feedback takes its breed
    as a form field, so the two are easily mixed up); predict's top_k in the form was ignored the same way."""
    files = {"file": ("a.jpg", chelsea_jpeg, "image/jpeg")}
    for route, field in (("/v1/explain", "breed"), ("/v1/explain", "dog"), ("/v1/predict", "top_k")):
        r = client.post(route, files=files, data={field: "2"})
        assert r.status_code == 400, r.text
        want = f"`{field}` is a query parameter of {route} ({route}?{field}=...), not a form field"
        assert r.json()["detail"] == want
    assert client.post("/v1/predict?top_k=2", files=files).status_code == 200


def test_a_form_field_sent_as_a_query_parameter_and_a_repeated_parameter_are_refused(
        client: TestClient, chelsea_jpeg: bytes) -> None:
    """Found by QA: `/v1/feedback?box=...` stored feedback on the whole photo (box null) with a 200, and
    `/v1/predict?top_k=1&top_k=3` answered with three breeds."""
    files = {"file": ("a.jpg", chelsea_jpeg, "image/jpeg")}
    for field in ("box", "breed", "predicted"):
        r = client.post(f"/v1/feedback?{field}=1,2,3,4", files=files, data={"breed": "Pug"})
        assert r.status_code == 400, r.text
        want = f"`{field}` is a form field of /v1/feedback (multipart/form-data, beside `file`), not a query parameter"
        assert r.json()["detail"] == want
    for route, query in (("/v1/predict", "top_k=1&top_k=3"), ("/v1/predict", "errors=inline&errors=fail"),
                         ("/v1/explain", "dog=1&dog=1")):
        r = client.post(f"{route}?{query}", files=files)
        key = query.split("=")[0]
        assert r.status_code == 400 and r.json()["detail"] == f"this request has 2 `{key}` parameters; send one"
    assert len(client.post("/v1/predict?top_k=3", files=files).json()["predictions"][0]["breeds"]) == 3


def test_feedback_from_another_sites_page_is_refused(default_predictor, tmp_path: Path, chelsea_jpeg: bytes) -> None:
    """Found by QA: a page on any site could POST feedback through a visitor's browser (a multipart POST is sent
    cross-origin without asking first), storing photos under any breed; the browser names that page's origin."""
    client = TestClient(create_app(predictor=default_predictor, feedback_db=tmp_path / "fb.sqlite3"))
    files = {"file": ("a.jpg", chelsea_jpeg, "image/jpeg")}
    for origin in ("http://127.0.0.2:9999", "null", "https://testserver.evil.example"):
        r = client.post("/v1/feedback", files=files, data={"breed": "Pug"}, headers={"origin": origin})
        assert r.status_code == 403 and "another site" in r.json()["detail"], (origin, r.text)
    r = client.post("/v1/feedback", files=files, data={"breed": "Pug"},
                    headers={"origin": "http://testserver", "sec-fetch-site": "cross-site"})
    assert r.status_code == 403
    for headers in ({"origin": "http://testserver"}, {},  # this server's own page, and a script without Origin
                    # behind a reverse proxy that rewrote Host: the browser's Sec-Fetch-Site, or X-Forwarded-Host
                    {"origin": "https://dogs.example.com", "sec-fetch-site": "same-origin"},
                    {"origin": "https://dogs.example.com", "x-forwarded-host": "dogs.example.com"},
                    {"origin": "http://testserver:80"}):
        assert client.post("/v1/feedback", files=files, data={"breed": "Pug"}, headers=headers).status_code == 200


def test_head_answers_where_get_does(client: TestClient) -> None:
    """Found by QA: uptime checks sending HEAD /healthz got 405 (only / took HEAD)."""
    for path in ("/", "/healthz", "/v1/breeds", "/favicon.ico"):
        r = client.head(path)
        assert r.status_code == 200 and r.content == b"", path
        assert r.headers["content-type"] == client.get(path).headers["content-type"]
    assert list(client.get("/openapi.json").json()["paths"]["/healthz"]) == ["get"]  # one operation a path


def test_not_multipart_is_415(client: TestClient, chelsea_jpeg: bytes) -> None:
    r = client.post("/v1/predict", content=chelsea_jpeg, headers={"content-type": "image/jpeg"})
    assert r.status_code == 415
    assert "multipart/form-data" in r.json()["detail"]
    r = client.post("/v1/predict", json={"file": "x"})
    assert r.status_code == 415
    for route in ("/v1/predict", "/v1/explain", "/v1/feedback"):  # a URL-encoded form: 'file' can only be text
        r = client.post(route, data={"file": "abc", "breed": "Pug"})
        assert r.status_code == 415 and "multipart/form-data" in r.json()["detail"], r.text


def test_a_file_field_holding_text_is_400(client: TestClient, chelsea_jpeg: bytes) -> None:
    r = client.post("/v1/predict", files={"other": ("x.jpg", chelsea_jpeg, "image/jpeg")}, data={"file": "hello"})
    assert r.status_code == 400 and "holds text, not a file" in r.json()["detail"]


def test_size_limits_are_413(small_client: TestClient, chelsea_jpeg: bytes) -> None:
    big = noise_png(3, size=(200, 200))  # ~120 KB of noise: over the 60 KB limit
    assert len(big) > 60_000
    r = post_files(small_client, ("big.png", big, "image/png"))
    assert r.status_code == 413
    assert "big.png" in r.json()["detail"] and "limit" in r.json()["detail"]

    wide = png_bytes(Image.new("RGB", (400, 400), (200, 120, 40)))  # small file, 160k pixels > 100k
    assert len(wide) < 60_000
    r = post_files(small_client, ("wide.png", wide, "image/png"))
    assert r.status_code == 413
    assert "too large" in r.json()["detail"] and "400x400" in r.json()["detail"]

    small = png_bytes(Image.new("RGB", (64, 64)))
    r = post_files(small_client, *[(f"{i}.png", small, "image/png") for i in range(3)])
    assert r.status_code == 413
    assert "too many files" in r.json()["detail"]

    r = small_client.post("/v1/predict", content=b"x" * 200_000,
                          headers={"content-type": "multipart/form-data; boundary=zzz"})
    assert r.status_code == 413  # refused from Content-Length, before parsing


def test_with_errors_inline_one_bad_photo_gets_its_own_entry_and_the_others_are_answered(
        small_client: TestClient, chelsea_jpeg: bytes) -> None:
    """By default one unreadable or too large photo fails the whole request (the documented contract, kept);
    with ?errors=inline it gets an error entry in its place and the other photos their answers."""
    wide = png_bytes(Image.new("RGB", (400, 400), (200, 120, 40)))  # 160k pixels: over this server's 100k
    small = png_bytes(Image.new("RGB", (64, 64)))
    a, bad, too_wide = ("a.png", small, "image/png"), ("bad.jpg", b"<html>not a photo</html>", "image/jpeg"), \
        ("wide.png", wide, "image/png")
    assert post_files(small_client, a, too_wide).status_code == 413
    alone = post_files(small_client, a).json()["predictions"][0]
    r = post_files(small_client, bad, a, errors="inline")
    assert r.status_code == 200, r.text
    got = r.json()["predictions"]
    assert [p["path"] for p in got] == ["bad.jpg", "a.png"] and got[1] == alone  # answered as it is alone
    assert got[0] == {"path": "bad.jpg", "verdict": "error", "error": got[0]["error"]}
    assert got[0]["error"].startswith("not an image")
    got = post_files(small_client, a, too_wide, errors="inline").json()["predictions"]
    assert got[0] == alone and got[1] == {"path": "wide.png", "verdict": "error",
                                          "error": "image too large: 400x400 is 160,000 pixels; the limit is 100,000"}
    # the request's own budgets still refuse it whole
    assert post_files(small_client, *[(f"{i}.png", small, "image/png") for i in range(3)],
                      errors="inline").status_code == 413
    assert small_client.get("/healthz").json()["queue"]["in_flight"] == 0


def test_with_errors_inline_a_file_over_the_byte_limit_gets_its_own_entry(default_predictor) -> None:
    """A file over --max-mb failed the whole request with ?errors=inline too, though its sentence names the file
    and the request's own body budget held."""
    small = png_bytes(Image.new("RGB", (64, 64)))
    big = png_bytes(Image.effect_noise((300, 300), 60).convert("RGB"))
    app = create_app(predictor=default_predictor, limits=Limits(max_file_bytes=len(big) - 1))
    with TestClient(app) as c:
        assert post_files(c, ("a.png", small, "image/png"), ("big.png", big, "image/png")).status_code == 413
        r = post_files(c, ("a.png", small, "image/png"), ("big.png", big, "image/png"), errors="inline")
        assert r.status_code == 200, r.text
        a, b = r.json()["predictions"]
        assert a["path"] == "a.png" and "error" not in a
        assert b == {"path": "big.png", "verdict": "error", "error": b["error"]} and b["error"].startswith("file is")
        assert c.get("/healthz").json()["queue"]["in_flight"] == 0


def test_a_request_that_can_never_fit_the_queue_is_413_not_503_forever(default_predictor) -> None:
    """With --max-queue under --max-files, three photos got "busy, retry in 2 s" on an idle server, every time."""
    app = create_app(predictor=default_predictor, max_files=3, limits=Limits(max_queue=2))
    small = png_bytes(Image.new("RGB", (64, 64)))
    with TestClient(app) as c:
        r = post_files(c, *[(f"{i}.png", small, "image/png") for i in range(3)])
        assert r.status_code == 413 and "Retry-After" not in r.headers
        assert "more than the server ever queues at once (2); send at most 2" in r.json()["detail"]
        assert post_files(c, *[(f"{i}.png", small, "image/png") for i in range(2)]).status_code == 200


def test_a_size_over_its_limit_never_reads_the_same_as_the_limit() -> None:
    from dogbreed.serve.limits import MB, fmt_bytes

    limit = 20 * MB
    assert (fmt_bytes(21_000_000, limit), fmt_bytes(limit, 21_000_000)) == ("21,000,000 bytes", "20,971,520 bytes")
    assert (fmt_bytes(30 * MB, limit), fmt_bytes(limit, 30 * MB)) == ("30.0 MB", "20.0 MB")


def test_a_photo_over_pillows_hard_limit_names_the_servers(small_client: TestClient) -> None:
    """A PNG header claiming 20000x20000 (over twice Pillow's own limit, so Pillow refuses it before any check of
    ours) got Pillow's "could be decompression bomb DOS attack" and its 178956970-pixel limit."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0))
           + chunk(b"IEND", b""))
    r = post_files(small_client, ("huge.png", png, "image/png"))
    assert r.status_code == 413
    assert r.json()["detail"] == "huge.png: image too large: 400,000,000 pixels; the limit is 100,000"


@pytest.mark.parametrize("route", ["/v1/explain", "/v1/feedback"])
def test_routes_about_one_photo_refuse_a_second(client: TestClient, chelsea_jpeg: bytes, route: str) -> None:
    """They took the last `file` field with a 200: feedback was stored on another photo than the first."""
    two = png_bytes(Image.new("RGB", (64, 64)))
    files = [("file", ("a.jpg", chelsea_jpeg, "image/jpeg")), ("file", ("b.png", two, "image/png"))]
    r = client.post(route, files=files, data={"breed": "Pug"} if route == "/v1/feedback" else None)
    assert r.status_code == 400 and "has 2 `file` fields; send one photo" in r.json()["detail"]
    # a URL-encoded form is no upload, however many file fields it names: 415, as README's table says
    r = client.post(route, content=b"file=a&file=b&breed=Pug",
                    headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415, r.text


def test_server_errors_do_not_leak_details(default_predictor, chelsea_jpeg: bytes,
                                           caplog: pytest.LogCaptureFixture) -> None:
    def boom(images, paths=None):
        raise RuntimeError("secret /internal/path exploded")

    fake = SimpleNamespace(classes=default_predictor.classes, top_k=5, predict_images=boom,
                           draft_size=default_predictor.draft_size)
    app = create_app(predictor=fake)
    with TestClient(app, raise_server_exceptions=False) as c:
        r = post_files(c, ("c.jpg", chelsea_jpeg, "image/jpeg"))
    assert r.status_code == 500
    assert r.json() == {"detail": INTERNAL_ERROR}
    assert "secret" not in r.text and "Traceback" not in r.text
    assert "secret /internal/path exploded" in caplog.text  # ...but the log has it


def test_pillow_bomb_guard_stays_on(client: TestClient) -> None:
    assert Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS > 0


# -- other endpoints -------------------------------------------------------------------------------------------

def test_breeds_lists_120_unique(client: TestClient, default_predictor) -> None:
    r = client.get("/v1/breeds")
    assert r.status_code == 200
    breeds = r.json()["breeds"]
    assert len(breeds) == 120
    assert [b["id"] for b in breeds] == list(range(120))
    assert len({b["wnid"] for b in breeds}) == 120
    assert len({b["name"] for b in breeds}) == 120
    assert breeds[0]["name"] == default_predictor.classes[0].name


def test_healthz(client: TestClient) -> None:
    r = client.get("/healthz")
    assert r.status_code == 200
    assert r.json()["status"] == "ok"
    assert r.json()["breeds"] == 120


def test_docs_work_offline(client: TestClient) -> None:
    r = client.get("/docs")
    assert r.status_code == 200
    assert "swagger-ui" in r.text
    assert "https://" not in r.text and "http://" not in r.text  # no CDN
    js = client.get("/docs-static/swagger-ui-bundle.js")
    assert js.status_code == 200 and len(js.content) > 100_000
    spec = client.get("/openapi.json").json()
    assert {"/v1/predict", "/v1/breeds", "/v1/feedback", "/healthz"} <= set(spec["paths"])


def test_page_is_served_and_self_contained(client: TestClient) -> None:
    r = client.get("/")
    assert r.status_code == 200
    assert 'aria-live="polite"' in r.text and '<label for="file"' in r.text
    head = client.head("/")  # was a 405: uptime checks ask with HEAD
    assert head.status_code == 200 and head.headers["content-type"].startswith("text/html") and not head.content
    for asset in ("/static/app.css", "/static/app.js", "/static/favicon.svg"):
        a = client.get(asset)
        assert a.status_code == 200
        # no external fetches: the only absolute URL allowed is the SVG namespace
        assert "https://" not in a.text.replace("http://www.w3.org/2000/svg", "")
        assert "http://" not in a.text.replace("http://www.w3.org/2000/svg", "")


# -- feedback --------------------------------------------------------------------------------------------------

def test_feedback_round_trip_and_export(client: TestClient, feedback_db: Path, tmp_path: Path,
                                        chelsea_jpeg: bytes) -> None:
    from typer.testing import CliRunner

    from dogbreed.cli import app as cli

    photo, other = noise_png(42), chelsea_jpeg
    r = client.post("/v1/feedback", files={"file": ("rex.png", photo, "image/png")},
                    data={"breed": "golden retriever", "predicted": "Labrador retriever"})
    assert r.status_code == 200, r.text
    assert r.json()["breed"] == {"wnid": "n02099601", "name": "Golden retriever"}
    assert r.json()["sha256"] == hashlib.sha256(photo).hexdigest()
    # the same photo corrected again: the latest answer wins in the export
    r = client.post("/v1/feedback", files={"file": ("rex.png", photo, "image/png")},
                    data={"breed": "n02111889", "predicted": "Golden retriever"})
    assert r.status_code == 200 and r.json()["breed"]["name"] == "Samoyed"
    r = client.post("/v1/feedback", files={"file": ("x.jpg", other, "image/jpeg")}, data={"breed": "Shih-Tzu"})
    assert r.status_code == 200

    bad = client.post("/v1/feedback", files={"file": ("x.jpg", other, "image/jpeg")}, data={"breed": "Wolfdog 9000"})
    assert bad.status_code == 422 and "unknown breed" in bad.json()["detail"]
    # an everyday name is taken; a name three breeds share says which three (nothing stored either way)
    bad = client.post("/v1/feedback", files={"file": ("x.jpg", other, "image/jpeg")}, data={"breed": "poodle"})
    assert bad.status_code == 422 and "Toy poodle, Miniature poodle or Standard poodle" in bad.json()["detail"]
    bad = client.post("/v1/feedback", files={"file": ("x.txt", b"text", "text/plain")}, data={"breed": "Samoyed"})
    assert bad.status_code == 415
    bad = client.post("/v1/feedback", data={"breed": "Samoyed"})
    assert bad.status_code == 400

    with sqlite3.connect(feedback_db) as con:
        rows = con.execute("SELECT sha256, predicted, breed_wnid, created_at FROM feedback ORDER BY id").fetchall()
    assert len(rows) == 3
    assert rows[0][1:3] == ("Labrador retriever", "n02099601") and rows[0][3].endswith("+00:00")
    assert (feedback_db.parent / "feedback-images" / f"{rows[0][0]}.png").read_bytes() == photo

    out = tmp_path / "dataset"
    res = CliRunner().invoke(cli, ["feedback", "export", "--out", str(out), "--feedback-db", str(feedback_db)])
    assert res.exit_code == 0, res.output
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == [f"n02086240-Shih-Tzu/{hashlib.sha256(other).hexdigest()}.jpg",
                     f"n02111889-Samoyed/{hashlib.sha256(photo).hexdigest()}.png"]
    assert (out / files[1]).read_bytes() == photo
    assert "2 photos in 2 breeds" in res.output
    # corrected again and exported over the same folder: the photo moves, its old breed's copy (and the breed, now
    # empty) goes; it stayed, and retraining saw one photo under two breeds
    r = client.post("/v1/feedback", files={"file": ("rex.png", photo, "image/png")}, data={"breed": "Pug"})
    assert r.status_code == 200
    res = CliRunner().invoke(cli, ["feedback", "export", "--out", str(out), "--feedback-db", str(feedback_db)])
    assert res.exit_code == 0, res.output
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [
        "n02086240-Shih-Tzu", files[0], "n02110958-pug", f"n02110958-pug/{hashlib.sha256(photo).hexdigest()}.png"]
    # a file that is no database: one sentence, no traceback
    (tmp_path / "not.sqlite").write_text("not a database")
    res = CliRunner().invoke(cli, ["feedback", "export", "--out", str(tmp_path / "o"), "--feedback-db",
                                   str(tmp_path / "not.sqlite")])
    assert res.exit_code == 2 and "cannot be read as a feedback database" in res.output, res.output


def test_feedback_on_one_dog_of_several_stores_its_box_and_exports_its_crop(default_predictor, tmp_path: Path) -> None:
    from dogbreed.inference.regions import window
    from dogbreed.serve.feedback import export_feedback

    db = tmp_path / "fb.sqlite3"
    photo = noise_png(7, (400, 300))
    with TestClient(create_app(predictor=default_predictor, feedback_db=db)) as c:
        def send(breed: str, box: str | None) -> object:
            data = {"breed": breed} | ({"box": box} if box is not None else {})
            return c.post("/v1/feedback", files={"file": ("two.png", photo, "image/png")}, data=data)

        a, b = send("Pug", "20,40,140,200"), send("Border collie", "250, 60, 390, 290")
        assert a.status_code == 200 and a.json()["box"] == [20, 40, 140, 200]
        assert b.status_code == 200 and b.json()["box"] == [250, 60, 390, 290]
        assert send("Samoyed", None).json()["box"] is None  # the photo as a whole, as before
        assert send("Pug", "20,40,140,200").status_code == 200  # the same dog again: the latest answer wins
        for bad, why in (("1,2,3", "four numbers"), ("0,0,500,100", "inside the 400x300 photo"),
                         ("50,50,10,80", "inside"), ("a,b,c,d", "four numbers"),
                         ("inf,0,10,10", "four numbers"), ("1e400,0,10,10", "four numbers"), ("nan,0,1,1", "four"),
                         # what the schema's pattern refuses, the server refuses too (1e2 was stored as 100)
                         ("+1,2,30,40", "four numbers"), ("\uff11,2,30,40", "four numbers"),
                         ("1_0,1,200,200", "four numbers"), ("1e2,1,200,200", "four numbers"),
                         # fractions of the photo were stored, and exported as a 1x1 photo of the breed
                         ("0,0,1,1", "1x1 pixels, too small for a dog"), ("1,2,3,4", "too small")):
            r = send("Pug", bad)
            assert r.status_code == 422 and why in r.json()["detail"] and "two.png" in r.json()["detail"], r.text
        # explain's query parameters too: ?breed=Pug&breed=Beagle drew the Beagle
        r = c.post("/v1/explain?breed=Pug&breed=Beagle", files={"file": ("two.png", photo, "image/png")})
        assert r.status_code == 400 and "this request has 2 `breed` parameters" in r.json()["detail"], r.text
        # two breeds or two boxes: FastAPI took the last one, with a 200
        for field, values in (("breed", ["Pug", "Samoyed"]), ("box", ["20,40,140,200", "250,60,390,290"])):
            data = {"breed": "Pug", field: values}
            r = c.post("/v1/feedback", files={"file": ("two.png", photo, "image/png")}, data=data)
            assert r.status_code == 400 and f"this request has 2 `{field}` fields" in r.json()["detail"], r.text
        rows = sqlite3.connect(db).execute("SELECT breed_name, box FROM feedback ORDER BY id").fetchall()
    assert rows == [("Pug", "20,40,140,200"), ("Border collie", "250,60,390,290"), ("Samoyed", None),
                    ("Pug", "20,40,140,200")]
    counts = export_feedback(db, tmp_path / "out")
    assert counts == {"n02106166-Border_collie": 1, "n02110958-pug": 1, "n02111889-Samoyed": 1}
    sha = hashlib.sha256(photo).hexdigest()
    crop = Image.open(tmp_path / "out" / "n02110958-pug" / f"{sha}-20_40_140_200.jpg")
    x0, y0, x1, y1 = window((20, 40, 140, 200))  # the square the predictor reads the dog from, clipped
    assert crop.size == (round(x1) - max(0, round(x0)), round(y1) - round(y0))
    assert (tmp_path / "out" / "n02111889-Samoyed" / f"{sha}.png").read_bytes() == photo


def test_a_feedback_database_from_before_boxes_is_upgraded(default_predictor, tmp_path: Path) -> None:
    db = tmp_path / "old.sqlite3"
    with sqlite3.connect(db) as con:  # the table as it was before sizes and boxes
        con.execute("CREATE TABLE feedback (id INTEGER PRIMARY KEY AUTOINCREMENT, sha256 TEXT NOT NULL, image_file "
                    "TEXT NOT NULL, predicted TEXT NOT NULL, breed_wnid TEXT, breed_name TEXT NOT NULL, breed_folder "
                    "TEXT NOT NULL, created_at TEXT NOT NULL)")
    with TestClient(create_app(predictor=default_predictor, feedback_db=db)) as c:
        r = c.post("/v1/feedback", files={"file": ("x.png", noise_png(3), "image/png")},
                   data={"breed": "Pug", "box": "0,0,50,40"})
        assert r.status_code == 200 and r.json()["box"] == [0, 0, 50, 40]


def test_feedback_export_with_nothing_fails_clearly(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from dogbreed.cli import app as cli

    res = CliRunner().invoke(cli, ["feedback", "export", "--out", str(tmp_path / "o"), "--feedback-db",
                                   str(tmp_path / "none.sqlite3")])
    assert res.exit_code == 1
    assert "no feedback" in res.output


def test_serve_command_is_registered() -> None:
    from typer.testing import CliRunner

    from dogbreed.cli import app as cli

    res = CliRunner().invoke(cli, ["serve", "--help"])
    assert res.exit_code == 0
    for opt in ("--model", "--quality", "--runtime", "--host", "--port", "--feedback-db"):
        assert opt in res.output


def test_explain_headers_carry_any_breed_name() -> None:
    from urllib.parse import unquote

    from dogbreed.serve.routes_explain import _header_text

    assert _header_text("Golden retriever; Shih-Tzu") == "Golden retriever; Shih-Tzu"  # the shipped names: as is
    for name in ("Löwchen", "Chien 100% français", "柴犬"):
        text = _header_text(name)
        text.encode("latin-1")  # a header can carry it
        assert unquote(text) == name


def test_an_old_feedback_database_exports_without_being_written(tmp_path: Path) -> None:
    from dogbreed.serve.feedback import export_feedback, images_dir_for

    db = tmp_path / "old.sqlite3"
    photo = noise_png(5)
    sha = hashlib.sha256(photo).hexdigest()
    with sqlite3.connect(db) as con:  # as written before sizes and boxes
        con.execute("CREATE TABLE feedback (id INTEGER PRIMARY KEY AUTOINCREMENT, sha256 TEXT NOT NULL, image_file "
                    "TEXT NOT NULL, predicted TEXT NOT NULL, breed_wnid TEXT, breed_name TEXT NOT NULL, breed_folder "
                    "TEXT NOT NULL, created_at TEXT NOT NULL)")
        con.execute("INSERT INTO feedback (sha256, image_file, predicted, breed_wnid, breed_name, breed_folder, "
                    "created_at) VALUES (?, ?, '', 'n02110958', 'Pug', 'n02110958-pug', '2026-01-01')",
                    (sha, f"{sha}.png"))
    images_dir_for(db).mkdir()
    (images_dir_for(db) / f"{sha}.png").write_bytes(photo)
    before = db.read_bytes()
    assert export_feedback(db, tmp_path / "out") == {"n02110958-pug": 1}
    assert (tmp_path / "out" / "n02110958-pug" / f"{sha}.png").read_bytes() == photo
    assert db.read_bytes() == before  # read only: no column added


def test_what_the_multipart_parser_refuses_is_said_in_our_words(client: TestClient) -> None:
    """Starlette's parser answered "Part exceeded maximum size of 1024KB." or "Invalid multipart data.", always
    as a 400 and naming nothing of ours."""
    png = png_bytes(Image.new("RGB", (8, 8)))
    r = client.post("/v1/feedback", files={"file": ("x.png", png, "image/png")}, data={"breed": "x" * 1_100_000})
    assert (r.status_code, r.json()["detail"]) == (413, "a form field is over 1024 KB; the fields besides `file` "
                                                        "are short text (a breed, a box)")
    r = client.post("/v1/predict", files=[("file", (f"{i}.png", b"x", "image/png")) for i in range(1001)])
    assert (r.status_code, r.json()["detail"]) == (413, f"too many files (over 1000); at most "
                                                        f"{Limits().max_files} per request")
    r = client.post("/v1/predict", files={"file": ("a" * 5000 + ".png", png, "image/png")})
    assert r.status_code == 400 and "a file name of thousands of characters" in r.json()["detail"]
    r = client.post("/v1/feedback", data={"breed": "x" * 1_100_000})  # URL-encoded: the parser's other words
    assert r.status_code == 413 and r.json()["detail"].startswith("a form field is over 1024 KB")
    r = client.post("/v1/predict", content=b"--x\r\n", headers={"content-type": "multipart/form-data"})
    assert r.status_code == 400 and r.json()["detail"].startswith("the multipart body has no boundary")
    assert client.post("/v1/predict", files={"file": ("a.png", png, "image/png")}).status_code == 200  # unchanged
