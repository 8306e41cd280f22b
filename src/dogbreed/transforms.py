"""Image decode, preprocessing, augmentation and normalisation with Pillow + numpy (no torchvision).

No torch at import: prediction on ONNX Runtime runs on numpy arrays and never loads torch (~1.5 s of every
`dogbreed predict` start and exit on the 2-core machine); `to_tensor` wraps `to_array` for torch callers.
"""

from __future__ import annotations

import io
import math
import random
import re
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageEnhance, ImageFile, ImageOps, UnidentifiedImageError

from .errors import (
    EmptyImage,
    ImageDecodeError,
    ImageNotFound,
    ImageTooLarge,
    UnreadableImage,
    UnsupportedImage,
    too_many_pixels,
)
from .fileio import path_problem

if TYPE_CHECKING:
    import torch

# Pillow's guard against decompression bombs stays on; we only make the limit explicit and configurable.
DEFAULT_MAX_PIXELS = 89_478_485
# What Pillow opens a JPEG as: a phone photo holding a second picture (Ultra HDR's gain map) is an MPO, the same
# decoder and the same draft (reduced) decode.
JPEG_FORMATS = ("JPEG", "MPO")
Image.MAX_IMAGE_PIXELS = DEFAULT_MAX_PIXELS
ImageFile.LOAD_TRUNCATED_IMAGES = False

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# EfficientNet-Lite was trained on (x - 127) / 128 of 0..255 pixels; using ImageNet mean/std instead costs
# ~10 points of top-1 on real dog photos (measured: 66.5% vs 76.0% on imagenet-val-dogs, 275 photos).
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3

RESIZE_MODES = ("center_crop", "squash", "pad", "shorter")
FULL_SIZE = "dogbreed_full_size"  # key in a decoded image's info: its size and the photo's own, upright


def mark_full_size(img: Image.Image, full: tuple[int, int]) -> Image.Image:
    """Remember that ``img`` (a reduced decode) shows a photo of ``full`` pixels; kept with this size only, since
    Pillow copies ``info`` into every image derived from it (a resize, a crop) whose pixels mean something else."""
    img.info[FULL_SIZE] = (*img.size, int(full[0]), int(full[1]))
    return img


def full_size(img: Image.Image) -> tuple[int, int]:
    """The upright size of the photo ``img`` was decoded from (a JPEG draft or a reduction may have shrunk it);
    its own size when it was not decoded here or was changed since."""
    mark = img.info.get(FULL_SIZE)
    return (mark[2], mark[3]) if mark and tuple(mark[:2]) == img.size else img.size


def _path_error(problem: str) -> ImageDecodeError:
    """The typed error for a path that cannot be read (see `fileio.path_problem`)."""
    if problem.startswith(("file not found", "broken symbolic link", "no path given")):
        return ImageNotFound(problem)
    if problem.startswith("empty file") or problem.endswith("is a directory"):
        return EmptyImage(problem)
    return UnreadableImage(problem)


def _too_large(e: Exception, max_pixels: int | None) -> ImageTooLarge:
    """Pillow's bomb error (over twice its limit, before our own check can run) in our words, naming the limit
    that applies: it said "could be decompression bomb DOS attack" and named a limit the caller never set."""
    m = re.search(r"\((\d+) pixels\)", str(e))
    limit = max_pixels or Image.MAX_IMAGE_PIXELS
    if m and int(m.group(1)) <= limit:  # a limit set above Pillow's own: Pillow's is the one refusing it
        return ImageTooLarge(too_many_pixels(int(m.group(1)), 2 * Image.MAX_IMAGE_PIXELS, whose="the decoder's"))
    return ImageTooLarge(too_many_pixels(int(m.group(1)) if m else None, limit))


def load_image(
    src: str | Path | bytes | Image.Image,
    *,
    draft_size: int | None = None,
    max_pixels: int | None = None,
) -> Image.Image:
    """Decode to an upright RGB image: EXIF orientation applied, grey/CMYK/palette/alpha converted.

    ``draft_size`` lets the JPEG decoder downscale by 1/2, 1/4 or 1/8 while keeping the shorter side at least
    that large, which makes decoding big photos several times cheaper.
    """
    if isinstance(src, Image.Image):
        img = src
    else:
        try:
            # Pillow warns on stderr of a photo over its bomb limit but under twice it: the pixel check below
            # refuses such a photo with a sentence of its own.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                if isinstance(src, (bytes, bytearray, memoryview)):
                    if len(src) == 0:
                        raise EmptyImage("empty file (0 bytes)")
                    img = Image.open(io.BytesIO(bytes(src)))
                else:
                    problem = path_problem(src)
                    if problem:
                        raise _path_error(problem)
                    img = Image.open(Path(src))
        except ImageDecodeError:
            raise
        except FileNotFoundError as e:
            raise ImageNotFound(f"file not found: {src}") from e
        except Image.DecompressionBombError as e:
            raise _too_large(e, max_pixels) from e
        except UnidentifiedImageError as e:
            kind = _signature(src)
            if kind:  # it starts as a photo of a kind we read, and its header is damaged: corrupt, not "not an image"
                raise UnreadableImage(f"corrupt or truncated image (it starts as a {kind} but its header cannot be "
                                      "read)") from e
            raise UnsupportedImage(f"not a readable image ({_reason(e)})") from e
        except Exception as e:  # Pillow also raises OSError, SyntaxError... on a damaged header
            raise UnreadableImage(f"corrupt or truncated image: {_reason(e)}") from e
    limit = max_pixels or Image.MAX_IMAGE_PIXELS
    # An image decoded here before (and perhaps reduced since) keeps the size of the photo it came from: boxes are
    # in that photo's pixels, whatever size it is handled at.
    full = full_size(img) if isinstance(src, Image.Image) else img.size
    try:
        if draft_size and img.format in JPEG_FORMATS:
            w, h = img.size
            scale = draft_size / min(w, h)
            if scale < 1:
                img.draft("RGB", (math.ceil(w * scale), math.ceil(h * scale)))
        # The limit is on the pixels this decode holds: a JPEG drafted above decodes at its reduced size, so a
        # 108-megapixel phone photo (12000x9000) needs 7 megapixels here and is read, where it was refused. A
        # progressive JPEG is the exception: the decoder holds every coefficient of its full size, whatever the draft.
        progressive = progressive_jpeg(img)
        w, h = full if progressive else img.size
        if limit and w * h > limit:
            drafted = img.size if img.size != tuple(full) and not progressive else None
            raise ImageTooLarge(too_many_pixels(w * h, limit, full, decoded=drafted)
                                + (" (a progressive JPEG is held at its full size while it decodes)"
                                   if progressive else ""))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img.load()
        ImageOps.exif_transpose(img, in_place=True)  # no full-size copy (a 49 MP photo's would be 196 MB)
        out = to_rgb(img)
        # Rotated a quarter turn by its EXIF orientation: width and height swap (read off the result, which costs
        # nothing, rather than parsing the EXIF block a second time).
        swapped = (out.size[0] > out.size[1]) != (full[0] > full[1]) and full[0] != full[1]
        # The photo's own size, upright, before any draft reduction: boxes are reported in these pixels.
        mark_full_size(out, (full[1], full[0]) if swapped else full)
        return out
    except ImageDecodeError:
        raise
    except Exception as e:
        if isinstance(e, Image.DecompressionBombError):  # raised by the decoder after draft() too
            raise _too_large(e, max_pixels) from e
        raise UnreadableImage(f"corrupt or truncated image: {_reason(e)}") from e


# The first bytes of the formats Pillow reads here, for telling a damaged photo from something else.
_SIGNATURES = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF87a", "GIF"), (b"GIF89a", "GIF"),
               (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"))


def _signature(src: str | Path | bytes | bytearray | memoryview) -> str | None:
    """The image format ``src`` starts as, from its first bytes, or None."""
    try:
        if isinstance(src, (bytes, bytearray, memoryview)):
            head = bytes(src[:12])
        else:
            with open(src, "rb") as f:
                head = f.read(12)
    except OSError:
        return None
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    return next((kind for magic, kind in _SIGNATURES if head.startswith(magic)), None)


def _reason(e: BaseException) -> str:
    """Pillow's own words for a failure, for a person to read (its class name only when it gave none), without the
    in-memory file it read from ("cannot identify image file <_io.BytesIO object at 0x7f...>")."""
    return re.sub(r"\s*<[\w.]+ object at 0x[0-9a-fA-F]+>", "", str(e)).strip() or type(e).__name__


def progressive_jpeg(img: Image.Image) -> bool:
    """A progressive JPEG: libjpeg buffers the coefficients of its full size to decode it, even at a draft scale
    (one of 178 megapixels in 2 MB took a server from 557 MB to 1.58 GB), so its pixels count at full size."""
    return img.format in JPEG_FORMATS and bool(img.info.get("progressive") or img.info.get("progression"))


def draft_for_pixels(size: tuple[int, int], max_pixels: int) -> int:
    """The shorter side at which a photo of ``size`` holds ``max_pixels``: a JPEG draft decoded at it (the DCT scale
    keeps at least that side) still fills an overlay of ``max_pixels``."""
    short, long = sorted(size)
    return math.ceil((max_pixels * short / long) ** 0.5)


def reduce_to_pixels(img: Image.Image, max_pixels: int) -> Image.Image:
    """Reduce by the smallest whole factor that brings the photo to at most ``max_pixels`` (box filter)."""
    w, h = img.size
    factor = math.ceil(math.sqrt(w * h / max_pixels)) if w * h > max_pixels else 1
    return mark_full_size(img.reduce(factor), full_size(img)) if factor >= 2 else img


def to_rgb(img: Image.Image) -> Image.Image:
    """Any mode to RGB; transparent pixels become white rather than black (what a viewer shows)."""
    if img.mode == "RGB":
        return img
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode == "La":  # premultiplied alpha: Pillow converts it to LA only
        img = img.convert("LA")
    if img.mode in ("RGBA", "RGBa", "LA", "PA"):
        rgba = img.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float32)
        arr = 255.0 * (arr - arr.min()) / max(float(arr.max() - arr.min()), 1.0)
        img = Image.fromarray(arr.astype(np.uint8), "L")
    return img.convert("RGB")


@dataclass
class Preprocess:
    """Deterministic preprocessing, as data so it can be saved with a model and hashed for caches."""

    size: int = 224
    resize: str = "center_crop"  # center_crop | squash | pad | shorter
    crop_pct: float = 0.875  # center_crop: resize shorter side to size/crop_pct, then crop
    interpolation: str = "bicubic"
    autocontrast: bool = False
    equalize: bool = False
    box_crop: bool = False
    box_margin: float = 0.1
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    @property
    def draft_size(self) -> int:
        """Shorter side a JPEG may be decoded at (draft mode) without changing what the model sees."""
        return int(self.size / self.crop_pct) + 1

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocess:
        d = dict(d)
        for k in ("mean", "std"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


_INTERP = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}


def interp(name: str) -> Image.Resampling:
    try:
        return _INTERP[name]
    except KeyError:
        raise ValueError(f"unknown interpolation {name!r}; choose from {sorted(_INTERP)}") from None


def histogram_ops(img: Image.Image, autocontrast: bool = False, equalize: bool = False) -> Image.Image:
    if autocontrast:
        img = ImageOps.autocontrast(img, cutoff=1)
    if equalize:
        img = ImageOps.equalize(img)
    return img


def crop_box(
    img: Image.Image, box: tuple[float, float, float, float] | None, margin: float = 0.1
) -> Image.Image:
    """Crop to (xmin, ymin, xmax, ymax) grown by ``margin`` of its size on each side, clipped to the image."""
    if box is None:
        return img
    x0, y0, x1, y1 = box
    mw, mh = (x1 - x0) * margin, (y1 - y0) * margin
    w, h = img.size
    x0, y0 = max(0, int(round(x0 - mw))), max(0, int(round(y0 - mh)))
    x1, y1 = min(w, int(round(x1 + mw))), min(h, int(round(y1 + mh)))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return img
    return img.crop((x0, y0, x1, y1))


def resize(
    img: Image.Image, size: int, mode: str = "center_crop", crop_pct: float = 0.875, interpolation: str = "bicubic"
) -> Image.Image:
    """Resize to ``size`` x ``size`` (or shorter side = size for mode 'shorter')."""
    rs = interp(interpolation)
    w, h = img.size
    if mode == "squash":
        return img.resize((size, size), rs)
    if mode == "pad":
        s = size / max(w, h)
        nw, nh = max(1, round(w * s)), max(1, round(h * s))
        canvas = Image.new("RGB", (size, size), (124, 116, 104))
        canvas.paste(img.resize((nw, nh), rs), ((size - nw) // 2, (size - nh) // 2))
        return canvas
    if mode == "shorter":
        s = size / min(w, h)
        return img.resize((max(1, round(w * s)), max(1, round(h * s))), rs)
    if mode == "center_crop":
        short = size / crop_pct
        s = short / min(w, h)
        nw, nh = max(size, round(w * s)), max(size, round(h * s))
        left, top = (nw - size) // 2, (nh - size) // 2
        # Resample only the crop: the source box with the same per-axis scale (w/nw, h/nh) gives the same sampling
        # grid as resize-then-crop (pixels equal up to +-1 rounding) at about half the cost for a 500x375 photo.
        fx, fy = w / nw, h / nh
        return img.resize((size, size), rs, box=(left * fx, top * fy, (left + size) * fx, (top + size) * fy))
    raise ValueError(f"unknown resize mode {mode!r}; choose from {RESIZE_MODES}")


def to_array(img: Image.Image, mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """uint8 HWC image -> normalised float32 CHW array (contiguous)."""
    arr = np.asarray(img)
    if arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == len(mean):
        # One fused pass per channel straight into CHW, (x/255 - mean)/std as x*a + b: ~4x faster than
        # normalising in HWC and then copying to CHW (same values to ~1e-7).
        a = 1.0 / (255.0 * np.asarray(std, dtype=np.float32))
        b = -np.asarray(mean, dtype=np.float32) / np.asarray(std, dtype=np.float32)
        out = np.empty((arr.shape[2], arr.shape[0], arr.shape[1]), dtype=np.float32)
        for c in range(arr.shape[2]):
            np.multiply(arr[:, :, c], a[c], out=out[c], dtype=np.float32)
            out[c] += b[c]
        return out
    arr = np.asarray(img, dtype=np.float32) * (1.0 / 255.0)
    arr = (arr - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def to_tensor(img: Image.Image, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 HWC image -> normalised float32 CHW tensor (contiguous), sharing `to_array`'s memory."""
    import torch

    return torch.from_numpy(to_array(img, mean, std))


def preprocess_image(
    img: Image.Image, cfg: Preprocess, box: tuple[float, float, float, float] | None = None
) -> Image.Image:
    """Everything up to (not including) normalisation; the result is what a cache may store."""
    if cfg.box_crop and box is not None:
        img = crop_box(img, box, cfg.box_margin)
    img = histogram_ops(img, cfg.autocontrast, cfg.equalize)
    return resize(img, cfg.size, cfg.resize, cfg.crop_pct, cfg.interpolation)


def preprocess(
    src: str | Path | bytes | Image.Image, cfg: Preprocess, box: tuple[float, float, float, float] | None = None
) -> torch.Tensor:
    """File/bytes/image -> normalised CHW float tensor."""
    # Draft decoding shrinks big JPEGs by 1/2..1/8, which would misplace a box given in original pixels.
    use_box = cfg.box_crop and box is not None
    img = load_image(src, draft_size=None if use_box else cfg.draft_size)
    return to_tensor(preprocess_image(img, cfg, box), cfg.mean, cfg.std)


# ---------------------------------------------------------------------------------------------------------------
# Augmentation: random, so a new view every epoch.


@dataclass
class Augment:
    rotation: float = 15.0  # degrees, uniform in [-r, r]
    translate: float = 0.1  # fraction of width/height
    hflip: float = 0.5
    vflip: float = 0.0
    rrc_scale: tuple[float, float] = (0.5, 1.0)  # random-resized-crop area range; (1, 1) disables it
    rrc_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    color_jitter: float = 0.3  # brightness/contrast/saturation strength

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Augment:
        d = dict(d or {})
        for k in ("rrc_scale", "rrc_ratio"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def random_resized_crop(
    img: Image.Image, size: int, scale: tuple[float, float], ratio: tuple[float, float], rng: random.Random,
    interpolation: str = "bicubic",
) -> Image.Image:
    w, h = img.size
    area = w * h
    for _ in range(10):
        target = area * rng.uniform(*scale)
        log_r = (math.log(ratio[0]), math.log(ratio[1]))
        ar = math.exp(rng.uniform(*log_r))
        cw, ch = int(round(math.sqrt(target * ar))), int(round(math.sqrt(target / ar)))
        if 0 < cw <= w and 0 < ch <= h:
            x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
            return img.resize((size, size), interp(interpolation), box=(x, y, x + cw, y + ch))
    return resize(img, size, "center_crop", 1.0, interpolation)


def augment_image(img: Image.Image, size: int, aug: Augment, rng: random.Random | None = None,
                  interpolation: str = "bicubic") -> Image.Image:
    """One random training view of ``img`` at ``size`` x ``size``."""
    rng = rng or random.Random()
    if aug.rrc_scale[0] < 1.0:
        img = random_resized_crop(img, size, aug.rrc_scale, aug.rrc_ratio, rng, interpolation)
    else:
        img = resize(img, size, "center_crop", 1.0, interpolation)
    if aug.rotation or aug.translate:
        angle = rng.uniform(-aug.rotation, aug.rotation) if aug.rotation else 0.0
        tx = rng.uniform(-aug.translate, aug.translate) * size if aug.translate else 0.0
        ty = rng.uniform(-aug.translate, aug.translate) * size if aug.translate else 0.0
        img = img.rotate(angle, resample=Image.Resampling.BILINEAR, translate=(tx, ty), fillcolor=(124, 116, 104))
    if rng.random() < aug.hflip:
        img = ImageOps.mirror(img)
    if rng.random() < aug.vflip:
        img = ImageOps.flip(img)
    if aug.color_jitter:
        j = aug.color_jitter
        for enh in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
            img = enh(img).enhance(rng.uniform(1 - j, 1 + j))
    return img
