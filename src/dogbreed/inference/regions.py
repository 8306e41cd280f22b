"""Regions: the parts of a photo the members look at: the whole photo, and a crop around each animal the detection
stage (`inference.detect`) finds, so a small dog or each of two dogs gets its own look.

A crop is the detector's box grown by `MARGIN` of its size on each side, then made square around its centre (the
members' centre crop would otherwise cut a tall dog's head or a long dog's tail), clipped to the photo.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
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
# A crop beside a dog shows part of that dog: its breed leaks into the crop's answer, and a stretch of scene with
# half a dog in it is called "dog". So in each crop, the box of every other candidate the detector calls "dog" at
# NEIGHBOUR_SURE or more (`dogs.DETECTOR_SURE`'s level) is painted over with the crop's mean colour, except where
# it overlaps the crop's own box; boxes that are this one's part or whole (half inside either way, `dogs.CONTAINED`)
# are left. Out of fold on the tune half (`bench/stage_out_of_fold.py --halves tune --limit 100`, fp32): two-dog
# photos listed as exactly two 81 -> 84 of 100 (false extra dogs 10 -> 6), both named 54 either way; 150-260 px
# dogs named 80 -> 81, 260-400 px 81 -> 82 of 100; uncut named 305 of 360 either way, listing more than one dog
# 17 -> 15. From 0.1 instead: the same but one 260-400 px dog more.
NEIGHBOUR_SURE = 0.3
PART = 0.5  # = dogs.CONTAINED, which imports this module


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
    costs one member forward; the finder's own caps (`detect.MAX_CANDIDATES`, `detect.MAX_DOGS`) bound them."""
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


def view(img: Image.Image, regions: Sequence[Region], i: int, margin: float = MARGIN) -> Image.Image:
    """What the members see for region ``i`` of a photo: its crop (`crop`, at ``margin``), with the other sure dogs
    painted out (`NEIGHBOUR_SURE`)."""
    r = regions[i]
    v = crop(img, r, margin)
    if r.box is None:
        return v
    others = [o.box for j, o in enumerate(regions) if j != i and o.box is not None and o.label == "dog"
              and o.score >= NEIGHBOUR_SURE and inside(o.box, r.box) < PART and inside(r.box, o.box) < PART]
    if not others:
        return v
    x0, y0, _, _ = window(r.box, margin)
    ox, oy = max(0, round(x0)), max(0, round(y0))  # where `crop_box` cut the crop from the photo
    px = np.array(v)
    painted = np.zeros(px.shape[:2], bool)
    for b in others:
        painted[_rows_cols(b, ox, oy)] = True
    painted[_rows_cols(r.box, ox, oy)] = False
    px[painted] = px.mean(axis=(0, 1))
    return Image.fromarray(px)


def _rows_cols(box: Sequence[float], ox: int, oy: int) -> tuple[slice, slice]:
    """A box in the photo's pixels as the rows and columns it covers in a crop cut at (ox, oy)."""
    return (slice(max(0, round(box[1]) - oy), max(0, round(box[3]) - oy)),
            slice(max(0, round(box[0]) - ox), max(0, round(box[2]) - ox)))


def box_overlap(a: Sequence[float], b: Sequence[float]) -> float:
    """The area two boxes (x0, y0, x1, y1) share."""
    w = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    return float(w * h)


def box_area(a: Sequence[float]) -> float:
    """A box's area, at least one pixel."""
    return float(max(1, (a[2] - a[0]) * (a[3] - a[1])))


def inside(a: Sequence[float], b: Sequence[float]) -> float:
    """The share of box ``a`` that lies inside box ``b``."""
    return box_overlap(a, b) / box_area(a)


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
