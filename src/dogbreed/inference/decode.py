"""Decode + preprocess: a path or bytes -> an upright RGB photo -> the normalised array a member takes.

One error policy for every caller (the CLI, batch runs, Ray, the service, features, cards, galleries): whatever
fails while a photo is decoded or prepared becomes an `ImageDecodeError` naming why, and a batch keeps that
photo's reason in its place instead of raising.
"""

from __future__ import annotations

import functools
import itertools
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from PIL import Image, ImageFile

from ..errors import EmptyImage, ImageDecodeError, UnreadableImage
from ..runtime import physical_cores
from ..transforms import Preprocess, full_size, load_image, mark_full_size, preprocess_image, to_array, to_rgb
from .regions import Region, find_regions, view

Source = str | Path | bytes
T = TypeVar("T")


def decode(src: Source | Image.Image, *, draft_size: int | None = None, max_pixels: int | None = None,
           ) -> Image.Image:
    """`transforms.load_image` under the one error policy: any failure is an `ImageDecodeError`."""
    try:
        return load_image(src, draft_size=draft_size, max_pixels=max_pixels)
    except ImageDecodeError:
        raise
    except Exception as e:  # noqa: BLE001 - one bad file must give a reason, whatever Pillow raised
        raise UnreadableImage(str(e) or type(e).__name__) from e


def decode_source(src: Source | Image.Image, draft_size: int | None) -> Image.Image:
    """One source as every stage reads it: a caller's image as it stands (`as_rgb`), anything else decoded."""
    return as_rgb(src) if isinstance(src, Image.Image) else decode(src, draft_size=draft_size)


def with_sources(b: Prepared, chunk: Sequence[Any]) -> Prepared:
    """``b`` with the sources of its readable photos (``chunk``: the sources it was prepared from, in order)."""
    if len(chunk) == len(b.errors):  # else the inputs changed under the walk: the paths it names stand
        b.sources = [s for s, e in zip(chunk, b.errors, strict=True) if e is None]
    return b


def as_photo(item: Any) -> Source | Image.Image:
    """One photo as a caller hands it to the library -> what `prepare_batch` reads: a path, bytes or a PIL image as
    it is; a bytearray or memoryview as bytes; a binary file object as its bytes; a uint8 array (HxW grey, HxWx3
    RGB, HxWx4 RGBA) as an image. Anything else is refused in one sentence (it is the caller's mistake, not a photo
    to report in its place)."""
    if isinstance(item, (str, Path, bytes, Image.Image)):
        return item
    if isinstance(item, os.PathLike):  # py.path, other path types: a path, whatever else they offer
        return Path(os.fspath(item))
    if isinstance(item, (bytearray, memoryview)):
        return bytes(item)
    if isinstance(item, np.ndarray):
        if item.dtype == np.uint8 and (item.ndim == 2 or (item.ndim == 3 and item.shape[2] in (3, 4))):
            if 0 in item.shape[:2]:  # the detector divided by its size: a ZeroDivisionError's traceback
                raise ValueError(f"a photo as an array needs pixels, not shape {tuple(item.shape)}")
            return Image.fromarray(np.ascontiguousarray(item))
        raise ValueError(f"a photo as an array must be uint8 of shape HxW, HxWx3 (RGB) or HxWx4 (RGBA), not "
                         f"{item.dtype} {tuple(item.shape)}")
    if callable(getattr(item, "read", None)):
        data = item.read()
        if isinstance(data, (bytes, bytearray, memoryview)):
            return bytes(data)
        raise TypeError("a file object of a photo must be opened in binary mode ('rb')")
    raise TypeError(f"cannot read a photo from {type(item).__name__}: give a path, bytes, a PIL image, a uint8 "
                    "array or a binary file object")


def one_or_many(items: Any) -> Iterable[Any]:
    """A single photo (a path, bytes, an image, an array, a file object) -> a list of it; several as they are (a
    string is one path, not a sequence of characters)."""
    single = (str, os.PathLike, bytes, bytearray, memoryview, Image.Image)
    if isinstance(items, np.ndarray):  # an image's pixels, or an array of paths (a DataFrame column's values)
        return [items] if items.dtype.kind in "uifb" else list(items)
    if isinstance(items, single) or callable(getattr(items, "read", None)) or not isinstance(items, Iterable):
        return [items]  # a number or None is one thing that is no photo: `as_photo` says so in one sentence
    return items


_LAZY_LOAD = tuple(threading.Lock() for _ in range(16))


def as_rgb(img: Image.Image) -> Image.Image:
    """A caller's decoded image in any mode (grey, palette, RGBA, CMYK, YCbCr, 16-bit) -> RGB, as a file of it would
    be decoded (`transforms.to_rgb`; no EXIF rotation: an image handed over is taken as it stands)."""
    if 0 in img.size:
        raise EmptyImage(f"an image of {img.size[0]}x{img.size[1]} pixels: nothing to look at")
    try:
        # A lazily opened image (``Image.open``) is read now, once: the detector and the whole photo's resize read
        # it on two threads at once, and Pillow's lazy load is not safe for that; nor is it for a caller's threads
        # sharing one list of such images ("I/O operation on closed file" rows), hence the lock.
        if isinstance(img, ImageFile.ImageFile):
            with _LAZY_LOAD[id(img) % len(_LAZY_LOAD)]:  # one image's loads in turn, other images' beside them
                img.load()
        return img if img.mode == "RGB" else mark_full_size(to_rgb(img), full_size(img))
    except Exception as e:  # noqa: BLE001 - a mode Pillow cannot convert, or a lazily opened file that fails now
        raise UnreadableImage(f"cannot read this {img.mode} image: {e}") from e


def to_input(img: Image.Image, cfg: Preprocess, box: tuple[float, float, float, float] | None = None) -> np.ndarray:
    """A decoded photo -> one member's normalised (3, H, W) float32 input."""
    try:
        return to_array(preprocess_image(img, cfg, box), cfg.mean, cfg.std)
    except ImageDecodeError:
        raise
    except Exception as e:  # noqa: BLE001 - e.g. a mode or size preprocessing cannot take
        raise UnreadableImage(str(e) or type(e).__name__) from e


def prepare(src: Source, cfg: Preprocess, box: tuple[float, float, float, float] | None = None) -> np.ndarray:
    """Path or bytes -> normalised input; JPEGs are decoded at draft size unless a box (in original pixels) is
    cropped, since a reduced decode would misplace it."""
    use_box = cfg.box_crop and box is not None
    return to_input(decode(src, draft_size=None if use_box else cfg.draft_size), cfg, box)


@dataclass
class Prepared:
    """One batch as the network needs it. Each readable photo has one or more regions (`inference.regions`: the
    whole photo, then a crop per animal the detection stage found), and each region is one row of the per-member
    (rows, 3, H, W) float32 arrays (torch tensors when they came from a DataLoader worker). Failed photos keep their
    reason, in order. The region images themselves are kept when asked for (stages that look at a row again, like
    the dog cascade)."""

    paths: list[str | None]
    errors: list[str | None]  # None where the photo decoded; the row's error message otherwise
    tensors: list[Any]
    images: list[Image.Image] | None = field(default=None, repr=False)  # one per row
    regions: list[list[Region]] | None = None  # per readable photo; None: the whole photo alone, one row each
    # Per readable photo, what a later stage decodes again when the images were not kept (worker processes keep
    # none): the caller's own source, not ``paths`` (a caller's names, or None for a photo in memory).
    sources: list[Any] | None = field(default=None, repr=False)

    @property
    def ok_paths(self) -> list[str | None]:
        return [p for p, e in zip(self.paths, self.errors, strict=True) if e is None]

    def pin_memory(self) -> Prepared:  # DataLoader(pin_memory=True) calls this on custom batch types
        return Prepared(self.paths, self.errors, [t.pin_memory() for t in self.tensors], self.images, self.regions)


Defer = Callable[[Sequence[Region]], Sequence[int]]  # a photo's regions -> the rows whose inputs can wait


def prepare_image(img: Image.Image, preprocess: Sequence[Preprocess], finder: Any | None = None,
                  defer: Defer | None = None, beside: bool = False,
                  ) -> tuple[list[Region], list[Image.Image], list[list[np.ndarray]]]:
    """A decoded photo -> its regions, each region's image, and per region one input per member. Rows ``defer``
    names (crops the answer will likely not read) get zeros, to be prepared only if they are needed after all
    (`prepare_rows`). ``beside``: prepare the whole photo's inputs on another thread while the detector runs."""
    # The whole photo's inputs do not depend on what the detector finds, so they can be resized beside its run (both
    # release the GIL): one photo's latency 1.1-1.5 ms less in each of six rounds (2-core EPYC, bf16, 200 calls of
    # each, interleaved call by call: 18.4 -> 17.2 up to 22.8 -> 21.4 ms p50), answers the same. Batches gain
    # nothing (lanes already keep both cores busy: 940 everyday photos 119/148/142 against 120/147/143 images/s).
    whole = (_beside(os.getpid()).submit(lambda: [to_input(img, cfg) for cfg in preprocess])
             if beside and finder is not None else None)
    regions = find_regions(img, finder)
    views = [view(img, regions, i) for i in range(len(regions))]
    later = set(defer(regions)) if defer is not None else set()
    rows = [whole.result() if whole is not None else [to_input(img, cfg) for cfg in preprocess]]
    return regions, views, rows + [[np.zeros((3, cfg.size, cfg.size), np.float32) if i in later
                                    else to_input(v, cfg) for cfg in preprocess]
                                   for i, v in enumerate(views) if i > 0]


@functools.cache
def _beside(pid: int) -> ThreadPoolExecutor:
    """One pool per process: a forked decode worker inherits the parent's pool without its threads."""
    return ThreadPoolExecutor(max_workers=physical_cores(), thread_name_prefix="dogbreed-whole-photo")


def prepare_rows(b: Prepared, rows: Sequence[int], images: Sequence[Image.Image | None],
                 preprocess: Sequence[Preprocess]) -> None:
    """Fill the inputs of deferred ``rows`` of ``b`` in place, from their region images (a None stays zeros)."""
    for r, im in zip(rows, images, strict=True):
        if im is None:
            continue
        for t, cfg in zip(b.tensors, preprocess, strict=True):
            x = to_input(im, cfg)
            t[r] = x if isinstance(t, np.ndarray) else t.new_tensor(x)  # a torch tensor from a worker process


def prepare_batch(sources: Sequence[Source | Image.Image], preprocess: Sequence[Preprocess], draft_size: int,
                  names: Sequence[str | None] | None = None, keep_images: bool = False,
                  finder: Any | None = None, defer: Defer | None = None) -> Prepared:
    """Decode + preprocess photos (or take decoded ones) for every member, with the detection stage's regions when
    a ``finder`` is given; a photo that fails gets its reason, never an exception."""
    per_member: list[list[np.ndarray]] = [[] for _ in preprocess]
    errors: list[str | None] = []
    images: list[Image.Image] = []
    regions: list[list[Region]] = []
    for src in sources:
        try:
            img = decode_source(src, draft_size)
            found, views, xs = prepare_image(img, preprocess, finder, defer, beside=len(sources) == 1)
        except ImageDecodeError as e:
            errors.append(str(e) or type(e).__name__)
            continue
        errors.append(None)
        regions.append(found)
        if keep_images:
            images += views
        for row in xs:
            for acc, x in zip(per_member, row, strict=True):
                acc.append(x)
    tensors = [np.stack(acc) if acc else np.empty((0, 3, cfg.size, cfg.size), np.float32)
               for acc, cfg in zip(per_member, preprocess, strict=True)]
    paths = list(names) if names is not None else [s if isinstance(s, str) else
                                                   (str(s) if isinstance(s, Path) else None) for s in sources]
    return Prepared(paths, errors, tensors, images if keep_images else None, regions if finder is not None else None)


def prepared_batches(sources: Iterable[Source], preprocess: Sequence[Preprocess], draft_size: int, batch_size: int,
                     names: Iterable[str | None] | None = None, keep_images: bool = False,
                     part: tuple[int, int] = (0, 1), finder: Any | None = None,
                     defer: Defer | None = None) -> Iterator[Prepared]:
    """`prepare_batch` over consecutive chunks of ``sources``; ``part`` = (w, W) keeps chunks w, w+W, ... (one
    decode worker's share)."""
    name_it = iter(names) if names is not None else None
    for i, chunk in enumerate(chunks(sources, batch_size)):
        chunk_names = list(itertools.islice(name_it, len(chunk))) if name_it is not None else None
        if i % part[1] == part[0]:
            yield prepare_batch(chunk, preprocess, draft_size, chunk_names, keep_images, finder, defer)


def chunks(it: Iterable[T], n: int) -> Iterator[list[T]]:
    """Consecutive lists of ``n`` items (the last one shorter), read lazily."""
    it = iter(it)
    while chunk := list(itertools.islice(it, n)):
        yield chunk


def row_source(b: Prepared, row: int) -> tuple[int, Region | None]:
    """Which readable photo (its index among them) and which of its regions a row of ``b`` holds."""
    if b.regions is None:
        return row, None
    for photo, found in enumerate(b.regions):
        if row < len(found):
            return photo, found[row]
        row -= len(found)
    raise IndexError("row out of range")


def photo_rows(b: Prepared) -> list[int]:
    """The first row (its whole-photo row) of each readable photo of ``b``."""
    if b.regions is None:
        return list(range(len(b.ok_paths)))
    starts, n = [], 0
    for found in b.regions:
        starts.append(n)
        n += len(found)
    return starts
