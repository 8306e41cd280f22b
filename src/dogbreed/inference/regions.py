"""Regions: the parts of a photo the members look at: the whole photo, and a crop around each animal the detection
stage (`inference.detect`) finds, so a small dog or each of two dogs gets its own look.

A crop is the detector's box grown by `MARGIN` of its size on each side, then made square around its centre (the
members' centre crop would otherwise cut a tall dog's head or a long dog's tail), clipped to the photo.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image

from ..transforms import crop_box, full_size

MARGIN = 0.15  # of the box's size on each side (0.3 in all): the probe in the issue kept 30% of context
# A crop whose square covers this share of the photo shows the photo itself: its row is the whole photo's (no
# crop of its own is run). Tune half of bench/dogs_in_scene.py's composites, rows recorded once with every crop
# run and re-answered (`python bench/dog_rules.py`): at 0.9, 195 of the 697 crops of 360 uncut dog photos, 164 of
# the 343 of 243 cats and 39 of the 186 of 467 everyday photos were such crops, and not one count of any kind moved
# (uncut top-1, dogs listed, small and large composites, two-dog photos, cats and everyday photos said "dog"); at
# 0.8, 260 uncut crops, and two counts moved by one.
WHOLE_VIEW = 0.9


@dataclass(frozen=True)
class Region:
    """The whole photo (``box`` None) or one candidate animal: its box in the decoded image's pixels, the same box
    in the photo's own pixels, the share of the photo it covers, the detector's score and class, and whether the
    detector kept it only beside a sure dog (`detect.Detection.weak`)."""

    box: tuple[float, float, float, float] | None
    photo_box: list[int]
    area: float
    score: float = 1.0
    label: str = "photo"
    weak: bool = False


def find_regions(img: Image.Image, finder: Any | None) -> list[Region]:
    """The whole photo first, then every detection the finder keeps, in its order (most prominent first). Each
    costs one member forward; the finder's own cap (`detect.MAX_CANDIDATES`) bounds them."""
    out = [Region(None, photo_box(img, None), 1.0)]
    if finder is not None:
        for d in finder.find(img):
            box = tuple(float(v) for v in d.box)
            out.append(Region(box, photo_box(img, box), area_fraction(img, box),  # type: ignore[arg-type]
                              float(d.score), str(d.label), bool(d.weak)))
    return out


def crop(img: Image.Image, region: Region, margin: float = MARGIN) -> Image.Image:
    """The pixels a member sees for ``region``: the photo itself, or the square crop around its box."""
    if region.box is None:
        return img
    return crop_box(img, window(region.box, margin), margin=0.0)


def shows_whole_photo(region: Region, whole: Region, share: float = WHOLE_VIEW) -> bool:
    """Whether a candidate's square crop, clipped to the photo, covers ``share`` of ``whole`` (the photo's own
    region): its crop would show the photo again."""
    if region.box is None:
        return False
    w, h = whole.photo_box[2], whole.photo_box[3]
    x0, y0, x1, y1 = window(region.photo_box)
    return max(0, min(w, x1) - max(0, x0)) * max(0, min(h, y1) - max(0, y0)) >= share * w * h


def window(box: Sequence[float], margin: float = MARGIN) -> tuple[float, float, float, float]:
    """The square a crop cuts around ``box`` (before clipping to the photo): the box grown by ``margin`` of its
    size on each side, its longer side kept, centred on the box."""
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0) * (1 + 2 * margin)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2


def photo_box(img: Image.Image, box: tuple[float, float, float, float] | None) -> list[int]:
    """A box in ``img``'s pixels -> the same box in the photo's own pixels (after EXIF rotation, before any draft
    reduction), as integers; None -> the whole photo."""
    fw, fh = full_size(img)
    if box is None:
        return [0, 0, fw, fh]
    sx, sy = fw / img.size[0], fh / img.size[1]
    x0, y0, x1, y1 = box
    return [max(0, round(x0 * sx)), max(0, round(y0 * sy)), min(fw, round(x1 * sx)), min(fh, round(y1 * sy))]


def area_fraction(img: Image.Image, box: tuple[float, float, float, float]) -> float:
    """How much of the photo a box covers."""
    x0, y0, x1, y1 = box
    return max(0.0, x1 - x0) * max(0.0, y1 - y0) / float(img.size[0] * img.size[1])
