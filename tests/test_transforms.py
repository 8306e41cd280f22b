"""transforms.py: the fast resize and tensor conversion match a plain reference implementation."""

from __future__ import annotations

import numpy as np
from PIL import Image

from dogbreed.transforms import Preprocess, preprocess_image, to_tensor


def test_fast_resize_and_to_tensor_match_the_reference() -> None:
    from skimage import data

    cfg = Preprocess(size=224, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    for arr in (data.chelsea(), data.coffee(), data.astronaut()):
        img = Image.fromarray(arr)
        w, h = img.size
        s = (cfg.size / cfg.crop_pct) / min(w, h)
        nw, nh = max(224, round(w * s)), max(224, round(h * s))
        left, top = (nw - 224) // 2, (nh - 224) // 2
        ref = img.resize((nw, nh), Image.Resampling.BICUBIC).crop((left, top, left + 224, top + 224))
        got = preprocess_image(img, cfg)
        assert got.size == (224, 224)
        assert np.abs(np.asarray(got, np.int16) - np.asarray(ref, np.int16)).max() <= 1
        t = to_tensor(got, cfg.mean, cfg.std)
        want = (np.asarray(got, np.float32) / 255 - np.array(cfg.mean, np.float32)) / np.array(cfg.std, np.float32)
        assert t.shape == (3, 224, 224) and t.is_contiguous()
        assert np.abs(t.numpy() - want.transpose(2, 0, 1)).max() < 1e-5


def test_a_photo_over_the_bomb_limit_is_refused_without_pillows_warning() -> None:
    import struct
    import warnings
    import zlib

    import pytest

    from dogbreed.errors import ImageTooLarge
    from dogbreed.transforms import load_image

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    # a header claiming 12000x9000 (108 MP: over Pillow's 89 MP limit, under twice it, where Pillow only warns)
    header = chunk(b"IHDR", struct.pack(">IIBBBBB", 12000, 9000, 8, 2, 0, 0, 0))
    png = b"\x89PNG\r\n\x1a\n" + header + chunk(b"IEND", b"")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        with pytest.raises(ImageTooLarge, match="12000x9000"):
            load_image(png)


def test_a_jpeg_over_the_limit_that_its_draft_brings_under_it_is_read_at_that_size() -> None:
    """The pixel limit guards what a decode holds. A 108-megapixel phone JPEG, decoded at its draft size for the
    model (7 megapixels), was refused all the same; decoded whole, as a heat-map's photo is, it still is. Here at
    a 1-megapixel limit: a 2400x1800 JPEG drafted for a 224 px input decodes at 300x225."""
    import io

    import pytest

    from dogbreed.errors import ImageTooLarge
    from dogbreed.transforms import full_size, load_image

    buf = io.BytesIO()
    Image.new("RGB", (2400, 1800), (120, 80, 40)).save(buf, "JPEG")
    img = load_image(buf.getvalue(), draft_size=224, max_pixels=1_000_000)
    assert img.size == (300, 225) and full_size(img) == (2400, 1800)
    with pytest.raises(ImageTooLarge, match="2400x1800 is 4,320,000 pixels; the limit is 1,000,000"):
        load_image(buf.getvalue(), max_pixels=1_000_000)
    png = io.BytesIO()
    Image.new("RGB", (2400, 1800)).save(png, "PNG")  # no draft for a PNG: its whole size is decoded
    with pytest.raises(ImageTooLarge, match="2400x1800"):
        load_image(png.getvalue(), draft_size=224, max_pixels=1_000_000)
    # Found by QA: a progressive JPEG is held at its full size while it decodes, draft or not (178 megapixels in
    # 2 MB took a server to 1.58 GB), so its full size counts
    prog = io.BytesIO()
    Image.new("RGB", (2400, 1800), (120, 80, 40)).save(prog, "JPEG", progressive=True)
    with pytest.raises(ImageTooLarge, match=r"2400x1800 is 4,320,000 pixels; the limit is 1,000,000 \(a progressive"):
        load_image(prog.getvalue(), draft_size=224, max_pixels=1_000_000)
    assert load_image(prog.getvalue(), draft_size=224, max_pixels=5_000_000).size == (300, 225)  # still drafted


def test_a_photo_whose_header_is_damaged_is_corrupt_not_not_an_image(tmp_path) -> None:  # noqa: ANN001
    """A JPEG with a damaged header was "not a readable image", a 415 on the service, where README's table puts
    corrupt photos at 400; what starts as no image format at all still is "not a readable image"."""
    import io

    import pytest

    from dogbreed.errors import UnreadableImage, UnsupportedImage
    from dogbreed.transforms import load_image

    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 200, 30)).save(buf, "JPEG")
    damaged = bytearray(buf.getvalue())
    damaged[20:200] = bytes(x ^ 0x5A for x in damaged[20:200])  # its markers scrambled, the JPEG start kept
    path = tmp_path / "damaged.jpg"
    path.write_bytes(bytes(damaged))
    for src in (bytes(damaged), path):
        with pytest.raises(UnreadableImage, match=r"corrupt or truncated image \(it starts as a JPEG"):
            load_image(src)
    with pytest.raises(UnsupportedImage, match="not a readable image"):
        load_image(b"<html>not a photo</html>")


def test_a_phone_jpeg_holding_a_second_picture_is_read_at_its_draft_too() -> None:
    """Pillow opens a JPEG with a second picture in it (Ultra HDR's gain map) as an MPO: the draft decode, and with
    it the pixel limit on what is decoded, must take it as the JPEG it is."""
    import io

    from dogbreed.transforms import full_size, load_image

    buf = io.BytesIO()
    first, second = Image.new("RGB", (2400, 1800), (120, 80, 40)), Image.new("RGB", (2400, 1800), (1, 2, 3))
    first.save(buf, "MPO", save_all=True, append_images=[second])
    assert Image.open(io.BytesIO(buf.getvalue())).format == "MPO"
    img = load_image(buf.getvalue(), draft_size=224, max_pixels=1_000_000)
    assert img.size == (300, 225) and full_size(img) == (2400, 1800)


def test_a_photo_over_pillows_own_limit_names_the_limit_that_refused_it(monkeypatch) -> None:  # noqa: ANN001
    """Over twice Pillow's limit Pillow refuses a photo before any check of ours: named against a limit set higher
    (serve --max-megapixels 300) the sentence was false ("210000000 pixels exceeds 300000000")."""
    import struct
    import zlib

    import pytest

    from dogbreed.errors import ImageTooLarge
    from dogbreed.transforms import load_image

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 15000, 14000, 8, 2, 0, 0, 0))
           + chunk(b"IEND", b""))
    with pytest.raises(ImageTooLarge, match="^image too large: 210,000,000 pixels; the limit is 50,000,000$"):
        load_image(png, max_pixels=50_000_000)
    with pytest.raises(ImageTooLarge, match=f"the decoder's limit is {2 * Image.MAX_IMAGE_PIXELS:,}$"):
        load_image(png, max_pixels=300_000_000)


def test_a_jpeg_over_the_limit_at_its_draft_says_the_size_it_decodes_at() -> None:
    """The limit is on the drafted decode, and the sentence said the full size's pixels against it."""
    import io

    import pytest

    from dogbreed.errors import ImageTooLarge
    from dogbreed.transforms import load_image

    b = io.BytesIO()
    Image.new("RGB", (400, 300), (90, 20, 200)).save(b, "JPEG")
    with pytest.raises(ImageTooLarge, match=r"^image too large: 400x300 decodes at 200x150, 30,000 pixels; the "
                                            r"limit is 1,000$"):
        load_image(b.getvalue(), draft_size=100, max_pixels=1000)
