"""Heat-maps: which pixels drove a breed answer (Grad-CAM on the backbone's last feature map, in PyTorch).

Loaded only when a heat-map is asked for (`predict --explain`, `POST /v1/explain`), so plain prediction never
imports it. The model is always run in PyTorch here, also when predictions come from ONNX Runtime: ONNX gives no
gradients, and the PyTorch weights are the same ones that were exported.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from .breeds import Breed, BreedIndex
from .errors import ImageTooLarge, ModelLoadError
from .fileio import utf8_text
from .inference.decode import decode
from .models import Classifier
from .resolve import resolve_model
from .runtime import trim_heap
from .transforms import Preprocess, draft_for_pixels, full_size, preprocess_image, reduce_to_pixels, to_tensor

# Colour ramp for the overlay (dark blue -> cyan -> yellow -> red), interpolated in numpy so the heat-map needs
# no plotting library.
# An overlay is for looking at: a 49 MP photo's would be a ~100 MB PNG, so overlays are reduced to this many
# pixels (what the web API's /v1/explain answers with too).
OVERLAY_MAX_PIXELS = 4_000_000
# The network's input for a heat-map is the photo with its shorter side at the explainer's size, which for a long,
# thin photo is enormous: a 5000x10 photo became 224,000x448 (100 megapixels), and the backward pass took a
# `--explain` run to 24 GB and the kernel's OOM killer. At most this many times the size squared (a 4:1 photo, so
# every ordinary photo runs as before), the shorter side shrinking instead.
CAM_MAX_AREA = 4
# ... and the shorter side never below this: a 20000x3 photo's came to 5 px, under what the backbone's stride-32
# convolutions take ("kernel size can't be greater than actual input size"), which stopped a whole `--explain` run.
# Such a photo is squeezed lengthwise instead; its heat-map is stretched back to the photo's own size either way.
CAM_MIN_SIDE = 64
_RAMP = np.array([[0, 0, 130], [0, 90, 255], [0, 220, 220], [250, 230, 0], [255, 120, 0], [220, 0, 0]], np.float32)


def photo_for_overlay(src: Any, max_pixels: int | None, limit: int | None = None) -> Image.Image:
    """The photo a heat-map is drawn on: decoded whole, then reduced by a whole factor to at most ``max_pixels``.

    A JPEG over the decode limit (``limit``, default Pillow's: a 108-megapixel phone photo) is decoded at the JPEG
    draft scale that still holds that many pixels instead, then reduced by a whole factor as any photo is (so its
    overlay may come out smaller than ``max_pixels`` allows: 1500x1125 for 12000x9000 at 4 MP): whole, it is
    refused, and `predict --explain` gave such a photo an answer but no heat-map. Every photo under the limit is
    drawn as before."""
    try:
        img = decode(src, max_pixels=limit)
    except ImageTooLarge as too_large:
        if max_pixels is None or isinstance(src, Image.Image):
            raise
        raw = io.BytesIO(bytes(src)) if isinstance(src, (bytes, bytearray, memoryview)) else src
        try:
            with warnings.catch_warnings():  # Pillow's bomb warning: the photo is refused or reduced here
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(raw) as im:
                    size = im.size
        except Exception:  # noqa: BLE001 - over even Pillow's hard limit: the first refusal says why
            raise too_large from None
        # other formats have no draft and are refused again
        img = decode(src, draft_size=draft_for_pixels(size, max_pixels), max_pixels=limit)
    return reduce_to_pixels(img, max_pixels) if max_pixels is not None else img


@dataclass
class Explanation:
    """A heat-map for one breed: ``heat`` is (H, W) in [0, 1] at the photo's size; ``overlay`` is the photo with
    the heat-map blended in, same size."""

    breed: Breed
    class_index: int
    heat: np.ndarray
    overlay: Image.Image

    def png(self) -> bytes:
        return png_bytes(self.overlay)


def _number_font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    # Pillow's bitmap default is 11 px whatever the photo, unreadable on a phone's photo or a pack of eight
    # dogs; a sized default needs Pillow 10.1 and FreeType, else the bitmap one is still a number.
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


def _draw_number(draw: ImageDraw.ImageDraw, size: tuple[int, int], box: tuple[int, int, int, int], text: str,
                 font: Any) -> None:
    """A dog's number in white on a dark tag at its box's top left corner (moved inside the photo for a box at
    its right or bottom edge), so it reads on any photo."""
    x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
    pad = max(2, (y1 - y0) // 4)
    w, h = x1 - x0 + 2 * pad, y1 - y0 + 2 * pad
    tx = max(0, min(box[0], size[0] - w))
    ty = max(0, min(box[1], size[1] - h))
    draw.rectangle((tx, ty, tx + w - 1, ty + h - 1), fill=(0, 0, 0))
    draw.text((tx + pad - x0, ty + pad - y0), text, fill=(255, 255, 255), font=font)


def png_bytes(img: Image.Image, info: Any = None) -> bytes:
    """An overlay as PNG bytes (compression level 3: a 4 MP overlay is written in a fraction of a second), with the
    text chunk ``info`` (`overlay_info`) when given."""
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False, compress_level=3, pnginfo=info)
    return buf.getvalue()


def torch_classifier(model: str = "default") -> Classifier:
    """The PyTorch classifier behind a model spec ("default", "imagenet", a run or model directory).

    For `quality="best"` heat-maps come from the first member (Lite0): one map, the same breed as the ensemble's.
    """
    if str(model).lower().endswith(".onnx"):
        raise ModelLoadError("heat-maps need the PyTorch weights: pass the run or model directory the .onnx was "
                             "exported from, not the .onnx file")
    clf = resolve_model(model).classifiers[0]
    assert isinstance(clf, Classifier)
    return clf.eval()


class Explainer:
    """Grad-CAM for a `Classifier`: the breed logit's gradient, averaged over each channel of the backbone's last
    4-D feature map, weights that map's channels; ReLU keeps the evidence for the breed.

    The photo is resized by its shorter side and not cropped, so the map covers the whole photo (the prediction's
    center crop would leave the borders unexplained); EfficientNet's pooling accepts any aspect ratio. ``scale``
    runs it at that multiple of the model's input size for a finer map: on 11 imagenet-val-dogs photos pasted into
    a 640x480 grey canvas (dog box 12-18% of it), the heat mass inside the box was 0.60 on average at 1x, 0.80 at
    1.5x and 0.88 at 2x.
    """

    def __init__(self, classifier: Classifier, device: str = "cpu", scale: float = 2.0) -> None:
        self.clf = classifier.to(device).eval()
        self.device = device
        self.classes = list(classifier.classes)
        cfg: Preprocess = classifier.preprocess_cfg
        # Square inputs (from-scratch CNNs with a flatten layer) must stay square: squash instead.
        any_size = _pools_any_size(classifier)
        self.cfg = replace(cfg, resize="shorter" if any_size else "squash", box_crop=False,
                           size=round(cfg.size * scale) if any_size else cfg.size)
        self._target: tuple[torch.nn.Module, int] | None = None  # what Grad-CAM weights (`_target_module`)

    def class_index(self, breed: str | int | None, default: int | None = None) -> int | None:
        """A breed given as index, wnid or name -> class index; None -> ``default`` (the top breed)."""
        if breed is None or breed == "":
            return default
        if isinstance(breed, int):
            if not 0 <= breed < len(self.classes):
                raise ValueError(f"breed index {breed} out of range 0..{len(self.classes) - 1}")
            return breed
        index = BreedIndex(self.classes)
        i = index.find(str(breed))
        if i is None:
            raise ValueError(index.unknown(str(breed)))
        return i

    def heatmap(self, img: Image.Image, class_index: int | None = None) -> tuple[np.ndarray, int]:
        """(H, W) heat in [0, 1] at the photo's size, and the class it explains (the top breed when not given).

        The backward pass's memory is handed back to the OS afterwards (`runtime.trim_heap`): a server runs these
        on many threads, each with its own heap, and would otherwise keep each one's peak."""
        out = self._heatmap(img, class_index)
        trim_heap()
        return out

    def _heatmap(self, img: Image.Image, class_index: int | None) -> tuple[np.ndarray, int]:
        cfg, seen = self.cfg, img
        if cfg.resize == "shorter":
            short, long = sorted(img.size)
            most = CAM_MAX_AREA * cfg.size * cfg.size
            if cfg.size * cfg.size * long / short > most:
                side = round((most * short / long) ** 0.5)
                if side < CAM_MIN_SIDE:
                    side, long_side = CAM_MIN_SIDE, most // CAM_MIN_SIDE
                    seen = img.resize((long_side, side) if img.width >= img.height else (side, long_side))
                cfg = replace(cfg, size=side)
        x = to_tensor(preprocess_image(seen, cfg), cfg.mean, cfg.std)[None].to(self.device)
        fmap, logits = self._forward(x)
        c = int(logits[0].argmax()) if class_index is None else class_index
        (grad,) = torch.autograd.grad(logits[0, c], fmap)
        weights = grad.mean((2, 3), keepdim=True)
        cam = F.relu((weights * fmap).sum(1, keepdim=True)).detach()
        cam = F.interpolate(cam, size=(img.height, img.width), mode="bilinear", align_corners=False)[0, 0]
        peak = float(cam.max())
        heat = (cam / peak).cpu().numpy() if peak > 0 else np.zeros((img.height, img.width), np.float32)
        return heat.astype(np.float32), c

    def explain(self, src: Any, breed: str | int | None = None,
                max_pixels: int | None = OVERLAY_MAX_PIXELS) -> Explanation:
        """Photo (path, bytes or PIL image) -> heat-map and overlay for ``breed`` (default: the top breed), at
        most ``max_pixels`` large (reduced by a whole factor; None: the photo's own size)."""
        img = photo_for_overlay(src, max_pixels)
        heat, c = self.heatmap(img, self.class_index(breed))
        return Explanation(self.classes[c], c, heat, overlay(img, heat))

    def explain_dogs(self, src: Any, dogs: Sequence[Any], max_pixels: int | None = OVERLAY_MAX_PIXELS,
                     breed: str | int | None = None, numbers: Sequence[int] | None = None,
                     ) -> tuple[Image.Image, list[Breed]]:
        """One overlay for the dogs of a photo: each dog's heat-map, computed on its own box for its own top breed
        (or ``breed``), placed in its box, and the boxes outlined and numbered (``dogs``: `inference.dogs.Dog`s,
        boxes in the photo's pixels; ``numbers``: the number drawn on each, 1, 2, ... by default). Returns the
        overlay and the breed explained in each box."""
        img = photo_for_overlay(src, max_pixels)
        fw, fh = full_size(img)
        sx, sy = img.width / fw, img.height / fh
        heat = np.zeros((img.height, img.width), np.float32)
        boxes, explained = [], []
        asked = self.class_index(breed)  # an unknown breed fails before any heat-map
        for n, d in zip(numbers or range(1, len(dogs) + 1), dogs, strict=True):
            x0, y0, x1, y1 = (round(d.box[0] * sx), round(d.box[1] * sy), round(d.box[2] * sx), round(d.box[3] * sy))
            # a box reduced to under 2 px still gets a map: the smallest the backbone takes, inside the photo
            x0, y0 = min(max(0, x0), img.width - 2), min(max(0, y0), img.height - 2)
            x1, y1 = max(x1, x0 + 2), max(y1, y0 + 2)
            h, c = self.heatmap(img.crop((x0, y0, x1, y1)),
                                self.class_index(d.breeds[0].wnid or d.breeds[0].name) if asked is None else asked)
            heat[y0:y1, x0:x1] = np.maximum(heat[y0:y1, x0:x1], h)
            boxes.append(((x0, y0, x1, y1), n))
            explained.append(self.classes[c])
        out = overlay(img, heat)
        draw = ImageDraw.Draw(out)
        font = _number_font(max(12, max(img.size) // 45))
        for box, n in boxes:
            draw.rectangle(box, outline=(255, 255, 255), width=max(2, img.width // 300))
            _draw_number(draw, out.size, box, str(n), font)
        return out, explained

    def explain_answer(self, src: Any, answer: Any, breed: str | int | None = None, dog: int | None = None,
                       max_pixels: int | None = OVERLAY_MAX_PIXELS) -> tuple[Image.Image, list[Breed], list[int]]:
        """The overlay a photo's answer (a `Prediction`) calls for, as `predict --explain` and `POST /v1/explain`
        both draw it: dog number ``dog`` (1 = the main dog) explained in its own box; without ``dog`` and
        ``breed``, every dog in its own box when the photo lists several or its one dog covers less than
        `dogs.WHOLE_PHOTO_AREA` of it (a small dog's heat-map over the whole photo is the scene's, not the dog's);
        else the whole photo for ``breed`` or the answer's top breed. Returns the overlay, the breeds explained
        and the numbers of the dogs drawn in their boxes ([] for the whole photo)."""
        from .inference.dogs import WHOLE_PHOTO_AREA

        img = photo_for_overlay(src, max_pixels)  # once, for every branch below
        looked = getattr(answer, "dogs", None)  # None: no dogs looked for; [] looked for, none found
        dogs = list(looked or [])
        if dog is not None:
            if looked is None:  # not "has 0 dogs": the photo may well show one
                raise ValueError(f"dog {dog} asked for, but dogs are not looked for here (the whole photo is "
                                 "answered: --whole-photo, --dog-detector none, or a model without the dog stage); "
                                 "leave out dog")
            if not 1 <= dog <= len(dogs):
                have = f"{len(dogs)} dog" + ("" if len(dogs) == 1 else "s")
                raise ValueError(f"dog {dog} asked for, but the photo has {have}" +
                                 (f"; give 1..{len(dogs)}" if dogs else ""))
            out, explained = self.explain_dogs(img, [dogs[dog - 1]], None, breed, [dog])
            return out, explained, [dog]
        if breed is None and dogs and (len(dogs) > 1 or _box_share(dogs[0].box, img) < WHOLE_PHOTO_AREA):
            out, explained = self.explain_dogs(img, dogs, None)
            return out, explained, list(range(1, len(dogs) + 1))
        top = answer.breeds[0]
        e = self.explain(img, breed if breed is not None else top.wnid or top.name, None)
        return e.overlay, [e.breed], []

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Breed logits and the backbone's last 4-D activation, the autograd graph recorded from that activation
        on only: nothing below it is kept for a backward pass (at 2x input size the whole backbone's graph held
        hundreds of MB a heat-map), and Grad-CAM needs no gradient below the map it weights."""
        target, call = self._target_module(x)
        seen: list[torch.Tensor] = []
        calls = [0]

        def hook(_m: torch.nn.Module, _inp: Any, out: torch.Tensor) -> torch.Tensor | None:
            calls[0] += 1
            if calls[0] != call:  # one activation module may serve every block: only its last call is the map
                return None
            leaf = out.detach().requires_grad_(True)
            seen.append(leaf)
            torch.set_grad_enabled(True)  # the rest of the forward (head, pooling) records its graph
            return leaf

        handle = target.register_forward_hook(hook)
        try:
            with torch.no_grad():  # restores the grad mode the hook turned on
                logits = self.clf(x)[0]
        finally:
            handle.remove()
        return seen[-1], logits

    def _target_module(self, x: torch.Tensor) -> tuple[torch.nn.Module, int]:
        """The module whose 4-D output is the last one a forward computes, and which of its calls that is (1 for
        the first), found once by one pass without grad."""
        if self._target is None:
            seen: list[torch.nn.Module] = []

            def hook(m: torch.nn.Module, _inp: Any, out: Any) -> None:
                if isinstance(out, torch.Tensor) and out.dim() == 4:
                    seen.append(m)

            body = self.clf.backbone.body
            handles = [m.register_forward_hook(hook) for m in body.modules() if m is not body]
            try:
                with torch.no_grad():
                    self.clf(x)
            finally:
                for h in handles:
                    h.remove()
            if not seen:
                raise ValueError(f"{self.clf.backbone.spec.name}: no 4-D feature map found to explain")
            self._target = (seen[-1], sum(m is seen[-1] for m in seen))
        return self._target


def _box_share(box: Sequence[float], img: Image.Image) -> float:
    """The share of the photo ``img`` was decoded from that a box in that photo's pixels covers."""
    from .inference.regions import box_area

    fw, fh = full_size(img)
    return box_area(box) / max(1, fw * fh)


def _pools_any_size(clf: Classifier) -> bool:
    return clf.backbone.spec.name.startswith(("efficientnet", "resnet"))


def overlay(img: Image.Image, heat: np.ndarray, strength: float = 0.6) -> Image.Image:
    """Blend a colour-mapped heat-map into the photo; cold areas keep the photo as it is (same size as ``img``)."""
    h = np.clip(heat, 0, 1)
    pos = h * (len(_RAMP) - 1)
    lo = np.floor(pos).astype(int).clip(0, len(_RAMP) - 2)
    frac = (pos - lo)[..., None]
    colour = _RAMP[lo] * (1 - frac) + _RAMP[lo + 1] * frac
    alpha = (strength * (0.25 + 0.75 * h))[..., None]
    photo = np.asarray(img.convert("RGB"), dtype=np.float32)
    out = photo * (1 - alpha) + colour * alpha
    return Image.fromarray(out.round().clip(0, 255).astype(np.uint8))


def mass_inside(heat: np.ndarray, box: tuple[int, int, int, int]) -> float:
    """Share of the heat-map's total mass inside (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    total = float(heat.sum())
    return float(heat[y0:y1, x0:x1].sum()) / total if total > 0 else 0.0


def overlay_name(path: str, used: set[str], folder: str | Path | None = None) -> str:
    """<stem>.png for a photo, numbered (<stem>-2.png, ...) when an earlier photo in ``used`` took the name, or when
    ``folder`` holds a file of that name that is not this photo's heat-map (another photo's, from a run resumed
    after an earlier one: each overlay names its photo, `overlay_info`; or any other file)."""
    stem = Path(path).stem or "photo"
    name, n = f"{stem}.png", 1
    while name in used or (folder is not None and _written_for_another(Path(folder) / name, str(path))):
        n += 1
        name = f"{stem}-{n}.png"
    used.add(name)
    return name


def overlay_info(path: str) -> Any:
    """The PNG text chunk an overlay carries: the photo it was drawn for (what `overlay_name` reads back)."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_itxt(_SOURCE_KEY, utf8_text(str(path)))  # a name that is not UTF-8 had refused the heat-map
    return info


_SOURCE_KEY = "dogbreed:photo"


def _written_for_another(png: Path, path: str) -> bool:
    if not png.exists():
        return False
    try:
        with Image.open(png) as im:
            source = im.info.get(_SOURCE_KEY)  # read with the header (`im.text` would decode the whole image)
    except Exception:  # noqa: BLE001 - an unreadable file there is not ours to overwrite
        return True
    # A PNG without the chunk is no heat-map of ours: a user's picture, or the photo itself (`predict rex.png
    # --explain .` replaced rex.png with its heat-map), so it keeps its name and the heat-map takes the next one.
    return source != utf8_text(path)
