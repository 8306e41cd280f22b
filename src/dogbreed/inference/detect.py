"""Find the animals in a photo: YOLOX-Nano (COCO) boxes that the dog-or-not head then judges one crop at a time.

The packaged graph (``data/yolox_nano/``, Apache-2.0, see its PROVENANCE.md) is the upstream file byte for byte:
a fixed 1x3x416x416 input. To run it at another size, `sized_graph` rewrites its input shape once (the Focus
slices, the scale-2 Resizes and the ``[1, 85, -1]`` output Reshapes all follow the input) and caches the result
under the cache dir, so the shipped file keeps its upstream sha256 and a process pays the rewrite once per shape.

The input need not be square: most photos are 4:3 or 3:2, and a square canvas spends a quarter or more of the
network on padding. A (long, short) size runs landscape photos on a long x short canvas, portrait photos on the
transposed one and square photos on short x short, all at the same scale (each a session of its own, opened on
the first photo that needs it); the network is fully convolutional, so only the grid the decode walks changes.

Sessions come from `onnxrun.OnnxModel` (fp32 on ONNX Runtime, bf16 on OpenVINO where the CPU computes bf16
natively), one per precision and size per process (`default_finder`). Nothing here imports torch.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import WriteError
from ..fileio import atomic_write, say_once
from ..onnxrun import SESSION_PRECISIONS, OnnxModel
from ..paths import cache_dir
from ..runtime import OnceEach

GRAPH_FILE = "yolox_nano.onnx"
GRAPH_SHA256 = "695e750a5d5754bb5a8d5325643b59282191a7e7a564e435a415fd3c578eab14"
NATIVE_SIZE = 416  # the size the graph was exported (and trained) at
STRIDES = (8, 16, 32)
PAD_VALUE = 114.0  # YOLOX's letterbox fill
# Chosen with bench/dogs_in_scene.py on the tune half of its composites (its docstring has the tables). The
# detector's cost follows its canvas's pixels, and it is the stage's main cost. A first choice of 288x224 (0.42 of
# 416x416) found too few dogs 150-260 px wide. Tune half, 120 photos a kind, the whole predictor with the per-dog
# rules of `dogs` (`dogs_in_scene.py --predictor-only --halves tune --limit 120 --find-size S`): 150-260 px dogs
# said "dog" on 80.8% / 90.8% / 95.8% and two-dog photos were listed as exactly two on 55.0% / 63.3% / 76.7% at
# 288x224 / 416x320 / 512x384, each with its closer look, for about 16 / 22 / 25-29 ms a photo on everyday photos
# (3.6 ms without the stage; batches of 16, 2 cores, quiet). 640x416 found no more 150-260 px dogs.
INPUT_SIZE: tuple[int, int] = (512, 384)  # (long side, short side) of the canvas
# Square photos run on a square canvas at the same scale (`canvas_for`): on 512x384 a quarter of the network ran on
# padding, and square photos are common (556 of the 940 everyday photos here). Canvases for 3:2 and 16:9 photos
# (512x352, 512x288) were tried and dropped: each shape is one more session, about 25 MB and 0.3-0.4 s of a process
# (opening it and its first run, also from OpenVINO's blob cache), and on the 489 cat photos, of every aspect, the
# seven shapes (five more than before) made `dogbreed predict` slower (16.2 -> 17.9 s); the square one alone saves.
# Low on purpose: the dog-or-not head judges every candidate, so recall counts more than precision here; 0.1
# would cut false candidates on everyday photos from 0.33 to 0.20 a photo and lose 29% of the small dogs found.
SCORE_THRESHOLD = 0.05
NMS_IOU = 0.45
# Candidates a photo keeps: the surest MAX_CANDIDATES by score, then ranked by area x score. Cut by prominence
# instead, a box drawn around a whole scene or around both dogs (large, weak) pushed a surer second dog out of a
# two-dog photo; tune half, 120 two-dog photos: both dogs given a candidate 88 -> 93 of 120 at 4 candidates, 95 at
# 5 (crops beyond 5 added false dogs faster than true ones). Only 9 of the 940 everyday photos have more than 4.
# Each candidate costs one crop through the members (`regions.find_regions` takes them all).
MAX_CANDIDATES = 5
# A pack of dogs is not cut at MAX_CANDIDATES: every further box the detector calls "dog" at SECOND_DOG_FROM (0.3)
# or more is kept too, up to MAX_DOGS candidates in all. The cap was chosen on two-dog photos, whose sixth
# candidate is a stretch of scene, and listed five dogs of a photo of six or eight. A sure "dog" box is rare
# where there is no dog, so photos of one or two dogs and everyday photos keep their candidates; MAX_DOGS bounds
# the crops (one member forward each) a hostile photo of many dog-like shapes can ask for.
MAX_DOGS = 24
# In a photo of PACK_FROM or more sure dogs (a pack), a further box of any candidate class scoring PACK_SCORE or
# more is kept beyond the cap as well: in a pack YOLOX-Nano calls some dogs a cat, horse, cow or sheep, as it does
# lone dogs, and scores others under SECOND_DOG_FROM; the crop head judges each. 104 packs of six or eight dogs
# (bench/dogs_in_scene.py --kinds pack), pasted dogs with a candidate: 599 of 726 with sure "dog" boxes alone,
# 648 with any class from 0.3 in a photo of one, two or three sure dogs (648 / 648 / 647: two kept, "several").
# The level was chosen on the tune half's 51 packs, through the whole predictor: dogs with a box of their own
# 312 / 334 / 343 of 356 and false extra dogs 4 / 7 / 13 at 0.3 / 0.15 / 0.05; of every other photo of bench/'s
# kinds (5,126, both halves), 5 / 23 / 98 then keep a sixth candidate; at 0.15 one of the 23 lists a third box
# inside its pasted photo and one names another breed for its second dog, no other answer changes.
PACK_FROM = 2
PACK_SCORE = 0.15
# The COCO classes real dogs are called (on the tune half, after "dog" and "person": cat, cow, sheep, horse,
# teddy bear, bear; bird too, but adding bird, elephant, zebra and giraffe gained 2 points of small dogs for half
# again as many false candidates on everyday photos). A miscalled dog is kept; the dog-or-not head still refuses
# a real cat.
CANDIDATE_CLASSES = ("dog", "cat", "bear", "sheep", "horse", "cow", "teddy bear")
# The second, closer look: a small dog at the first pass's resolution often scores only a little above nothing.
# The best weak hint (score in [LOOK_FROM, score_threshold)) that no candidate covers gets a square window twice
# its size, cut from the photo and run again at LOOK_SIZE, where the dog is about twice as large. On the tune
# half it took 100-150 px dogs from 26% to 58% and 150-260 px ones from 69% to 83%; everyday photos take 0.18
# windows each, at about 0.21 of a 416x416 run per window (192 found within 2 points of 224 for 0.74 its cost).
LOOK_FROM = 0.005
LOOK_SIZE = 192
LOOK_SPAN = 2.0
LOOK_MIN_SIDE = 96  # photo pixels: a window never smaller (a tiny hint's window would hold no whole dog)
LOOK_MAX = 1  # windows per photo
LOOK_GAIN = 1.3  # tune half: windows on everyday photos 0.33 -> 0.18 a photo, small-dog recall kept
# The wider look: the closer look enlarges only small hints (a window twice a 150 px hint would not show it larger),
# yet a dog 150-260 px wide in a 640x480 photo, beside its owner or in a busy photo, can score only 0.01-0.05 at
# the first pass. When the first pass shrank the photo (so there are pixels it did not see), the best hint of
# WIDE_FROM or more that no candidate and no closer-look window covers gets a square window WIDE_SPAN times its
# longer side, run at WIDE_SIZE, if that shows it LOOK_GAIN times larger. A photo the first pass did not shrink
# (every everyday photo here is 500 px or smaller) pays nothing: a window there would only enlarge its pixels.
# Tune half (bench/dogs_in_scene.py's composites, rows recorded with and without it), 360 one-dog photos a bin:
# 150-260 px dogs said "dog" 340 -> 349, named 289 -> 297; 100-150 px 302 -> 309; 180 two-dog photos: a box on each
# 157 -> 159, both named 121 -> 123, exactly two 147 either way; everyday photos cover-cropped to 640x480 (467) say
# "dog" 3 either way, cats at 640x480 (243) 1. Of span 1.3 / 1.5 / 2 and size 256 / 288 / 320, all found 345-349
# of the 150-260 px dogs; 256 costs least (a 256x256 run is about a third of a 512x384 one); from 0.005 or 0.02
# instead of 0.01: 349 with more false dogs, or 344.
WIDE_FROM = 0.01
WIDE_SPAN = 1.5
WIDE_SIZE = 256
# A second dog: a photo that holds a sure dog (a "dog" box scoring SECOND_DOG_FROM or more) also keeps its weaker
# hints down to SECOND_SCORE, each at least SECOND_MIN_SIDE pixels on its longer side (a smaller crop is a blur the
# head is not trusted on, `dogs.SMALL_BOX`) and at most SECOND_MAX_AREA times the sure dog's box. People photograph
# dogs together, and beside a sure dog a second one often scores only 0.015-0.05; a photo without a sure dog
# (nearly every everyday photo) pays nothing. Weak boxes larger than the dog were nearly all stretches of scene
# beside it, whose square crop shows the dog (8 of the 9 such boxes listed on the tune half). Tune half, with
# `dogs.SEEN_AGAIN_WEAK`: 180 two-dog photos, a box on each 151 -> 155, both named 109 -> 112; one-dog photos
# listing more than one dog unchanged at 150-260 px (8 of 180), 31 -> 32 of 360 at 260-400 px (without the area
# cap: 39); 360 uncut photos 1.62 -> 1.90 candidates each (the crops a dog photo pays), everyday photos 0.41 -> 0.42.
SECOND_DOG_FROM = 0.3
SECOND_SCORE = 0.015
SECOND_MIN_SIDE = 48
SECOND_MAX_AREA = 1.5
# Large photos (a phone's 12 MP, decoded at `loading.FIND_DRAFT`): the first pass shrinks them to half their
# decoded size or less, so a dog a tenth of the photo's width is ~40 px on the canvas, and the one closer look
# cannot reach every such hint. A photo the first pass shrinks below LARGE_FROM is also run on LARGE_SIZE, twice
# the canvas each way (four times its cost); from that pass only boxes up to LARGE_MAX_SIDE of the photo's longer
# side are kept: on a canvas that large YOLOX-Nano splits a large animal into parts (a cat's head, its back) whose
# crops the head can call "dog", while the first pass sees such an animal whole. Every photo in bench/'s sets is
# 800 px or smaller (composites 640x480 and 800x500), so none of them runs it; measured on 4032x3024 JPEGs made
# from the tune half (bench/dogs_in_scene.py --kinds large-*), see README "Large photos".
LARGE_FROM = 0.6
LARGE_SIZE: tuple[int, int] = (1024, 768)
LARGE_MAX_SIDE = 0.25
# A photo the first pass shrinks (its scale on the canvas under MIRROR_BELOW) also runs mirrored on the same canvas,
# and both passes' boxes go on together (NMS keeps one box an animal). A dog 150-260 px wide in a 640x480 or 800x500
# photo, shrunk to 0.8 or 0.64, is near the smallest YOLOX-Nano finds well, and whether it clears the threshold is
# close to chance: the mirrored photo is a second try for one pass's cost. Out of fold, both halves, 200 composites
# a kind (bench/stage_out_of_fold.py, bf16): 150-260 px dogs said "dog" 188 -> 191, two-dog photos listed as exactly
# two 171 -> 175, a box on each 174 -> 180, both named 118 -> 124; uncut photos, cats and everyday photos, which the
# canvas holds, run as before (README "A photo the first pass shrinks is also searched mirrored"). On or off, not
# tuned; keeping only the mirrored boxes no first-pass candidate covers lost the two-dog gain.
MIRROR_BELOW = 1.0


@dataclass(frozen=True)
class Detection:
    """One animal candidate."""

    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in the given image's pixels, clipped to it
    score: float  # objectness x class score
    label: str  # COCO class name: "dog", "cat", "bear", ...
    weak: bool = False  # under the finder's threshold, kept only beside a sure dog (`SECOND_SCORE`)


@functools.cache
def coco_classes() -> tuple[str, ...]:
    text = resources.files("dogbreed").joinpath("data", "yolox_nano", "coco_classes.txt").read_text()
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def packaged_graph() -> Path:
    return Path(str(resources.files("dogbreed").joinpath("data", "yolox_nano", GRAPH_FILE)))


Shape = tuple[int, int]  # (width, height) of the graph's input canvas


def sized_graph(shape: Shape) -> Path:
    """The packaged graph with a 1x3xHxW input: the file itself at 416x416, else a rewrite cached on disk.

    Fixed sizes (not free dims) keep every shape static, which both runtimes optimise best; both sides must be
    multiples of 32 so the three grids are whole.
    """
    w, h = shape
    if w % 32 or h % 32 or min(w, h) < 64:
        raise ValueError(f"detector input sides must be multiples of 32 and at least 64, not {w}x{h}")
    src = packaged_graph()
    if (w, h) == (NATIVE_SIZE, NATIVE_SIZE):
        return src
    out = cache_dir() / "detect" / f"yolox_nano-{GRAPH_SHA256[:12]}-{w}x{h}.onnx"
    if out.is_file():
        return out
    import onnx  # lazy: only the first run at a new shape needs it (onnx never imports torch)

    model = onnx.load(str(src))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_value, dims[3].dim_value = h, w
    model.graph.output[0].type.tensor_type.shape.dim[1].dim_value = num_cells(shape)
    del model.graph.value_info[:]  # stale 416-based intermediate shapes; the runtimes infer them again
    try:
        with atomic_write(out, durable=False) as tmp:
            onnx.save(model, str(tmp))
    except OSError as e:
        # A cache that cannot be written does not stop the work: this process keeps its rewrite in a temporary
        # folder of its own, and the next one pays the rewrite again (a few ms a shape).
        why = str(e) if isinstance(e, WriteError) else f"cannot write {out}: {e.strerror or e}"
        say_once(f"{why}; the dog detector's resized graphs go to a temporary folder for this run", key="detect-cache")
        out = _scratch() / out.name
        onnx.save(model, str(out))
    return out


@functools.cache
def _scratch() -> Path:
    """A temporary folder for this process's resized graphs, removed when it exits."""
    import atexit
    import shutil
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="dogbreed-detect-"))
    atexit.register(shutil.rmtree, d, ignore_errors=True)
    return d


def num_cells(shape: Shape) -> int:
    return sum((shape[0] // s) * (shape[1] // s) for s in STRIDES)


@functools.cache
def grid(shape: Shape) -> tuple[np.ndarray, np.ndarray]:
    """Per output cell: its (x, y) grid position and its stride, in YOLOX's order (strides 8, 16, 32; x fastest)."""
    xy, stride = [], []
    for s in STRIDES:
        ys, xs = np.meshgrid(np.arange(shape[1] // s), np.arange(shape[0] // s), indexing="ij")
        xy.append(np.stack([xs.ravel(), ys.ravel()], 1))
        stride.append(np.full((xs.size, 1), s))
    return np.concatenate(xy).astype(np.float32), np.concatenate(stride).astype(np.float32)


def canvases(size: int | Shape) -> list[Shape]:
    """The landscape canvases (width, height) a photo may run on, the full one first: square for an int size; for
    (long, short), long x short, then short x short for square photos."""
    if isinstance(size, int):
        return [(size, size)]
    long, short = size
    return [(long, short)] + ([(short, short)] if short < long else [])


# A photo smaller than the full canvas at its scale runs at its own size (`DogFinder(enlarge=False)`, the default)
# on the smallest of these that holds it, instead of enlarged onto 512x384 / 384x384. Most everyday photos are
# ImageNet-sized (540 of the 940 here are 224x224, 282 have a 256 px shorter side), and enlarging them paid for
# pixels that hold nothing new: the detector cost 2x per photo on them (fp32, 2 threads: 224x224 ~8.5 ms against
# 384x384 ~15-19 ms). The closer looks still judge their gain against the full canvas's scale (`full_ratio`): judged
# against the own-size pass, windows opened on thumbnails that never had one, and 4 more of the 940 everyday photos
# said "dog" (tiny crops of a golf ball, a chain saw). Photos the full canvas shrinks (every composite, the latency
# photo, a phone's photo) run exactly as before. Measured: README "Small photos at their own size".
SMALL_CANVASES: tuple[Shape, ...] = ((384, 256), (224, 224))


def canvas_for(image_size: Shape, size: int | Shape, enlarge: bool = True) -> Shape:
    """The canvas (width, height) a photo runs on: the smallest of `canvases` that holds the photo at the scale
    the full canvas gives it (so every photo is searched at the same scale, without needless padding), for a
    portrait photo transposed. Without ``enlarge``, a photo that scale would enlarge runs at its own size instead,
    on the smallest of those and `SMALL_CANVASES` that holds it, filling it (a 220x165 photo runs at 1.02x)."""
    w, h = image_size
    portrait = h > w
    if portrait:
        w, h = h, w
    full, *others = canvases(size)
    ratio = full_ratio(image_size, size)
    if not enlarge and ratio > 1:
        ratio = 1.0
        others = [*others, *(c for c in SMALL_CANVASES if c[0] * c[1] < full[0] * full[1])]
    fits = [c for c in others if w * ratio <= c[0] + 1e-6 and h * ratio <= c[1] + 1e-6]
    cw, ch = min(fits, key=lambda c: c[0] * c[1]) if fits else full
    return (ch, cw) if portrait else (cw, ch)


def full_ratio(image_size: Shape, size: int | Shape) -> float:
    """The scale the full canvas gives a photo (what the looks judge their gain against)."""
    w, h = sorted(image_size, reverse=True)
    full = canvases(size)[0]
    return min(full[0] / w, full[1] / h)


def letterbox(image: Image.Image, shape: Shape) -> tuple[np.ndarray, float]:
    """RGB photo -> the graph's input (1, 3, H, W) float32 BGR 0-255, and the resize ratio.

    As YOLOX trains: the photo resized to fit with its aspect kept, at the top-left of a canvas of 114.
    """
    w, h = image.size
    cw, ch = shape
    ratio = min(cw / w, ch / h)
    nw, nh = min(cw, max(1, round(w * ratio))), min(ch, max(1, round(h * ratio)))
    # reducing_gap: a box-filter reduce first, so a large photo does not pay a full-size bilinear pass.
    small = np.asarray(image.resize((nw, nh), Image.Resampling.BILINEAR, reducing_gap=3.0))
    x = np.empty((1, 3, ch, cw), dtype=np.float32)
    x[0, :, nh:, :] = PAD_VALUE
    x[0, :, :nh, nw:] = PAD_VALUE
    for c in range(3):  # RGB -> BGR, HWC -> CHW and uint8 -> float32 in one copy a channel (0.3 ms less)
        x[0, c, :nh, :nw] = small[:, :, 2 - c]
    return x, ratio


def decode(raw: np.ndarray, shape: Shape, class_ids: np.ndarray, threshold: float) -> tuple[np.ndarray, ...]:
    """Raw (cells, 85) output -> boxes (n, 4) x0 y0 x1 y1 in canvas pixels, scores (n,), class ids (n,).

    Each cell keeps its best class among ``class_ids`` (class-agnostic: one animal, one label per cell).
    """
    xy, stride = grid(shape)
    cls = raw[:, 5:][:, class_ids] * raw[:, 4:5]
    best = cls.argmax(1)
    score = cls[np.arange(len(cls)), best]
    keep = score >= threshold
    r, stride, xy = raw[keep], stride[keep], xy[keep]
    centre = (r[:, :2] + xy) * stride
    half = np.exp(np.minimum(r[:, 2:4], 10.0)) * stride / 2  # the clamp only guards exp against overflow
    return np.concatenate([centre - half, centre + half], 1), score[keep], class_ids[best[keep]]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` (n, 4) with every box in ``b`` (m, 4) -> (n, m)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), 2)
    area_a = np.prod(a[:, 2:] - a[:, :2], 1)
    area_b = np.prod(b[:, 2:] - b[:, :2], 1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float = NMS_IOU) -> np.ndarray:
    """Greedy non-maximum suppression over all classes together -> indices kept, best score first."""
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        order = order[1:][box_iou(boxes[i:i + 1], boxes[order[1:]])[0] <= iou]
    return np.array(keep, dtype=np.int64)


class DogFinder:
    """Animal candidates in a photo, most prominent (area x score) first; sessions opened once and reused.

    ``size``: an int for a square canvas, or (long side, short side) for a landscape canvas that portrait photos
    run transposed.
    """

    def __init__(self, precision: str = "fp32", *, size: int | Shape = INPUT_SIZE,
                 score_threshold: float = SCORE_THRESHOLD, classes: tuple[str, ...] = CANDIDATE_CLASSES,
                 max_candidates: int = MAX_CANDIDATES, max_dogs: int = MAX_DOGS, looks: int = LOOK_MAX,
                 wide: bool = True, large: bool = True, enlarge: bool = False, mirror: bool = True,
                 threads: int | None = None):
        if precision not in SESSION_PRECISIONS:
            raise ValueError(f"precision must be one of {SESSION_PRECISIONS}, not {precision!r}")
        names = coco_classes()
        unknown = [c for c in classes if c not in names]
        if unknown:
            raise ValueError(f"not COCO classes: {unknown}")
        self.precision, self.size, self.threads = precision, size, threads
        self.score_threshold, self.max_candidates, self.looks, self.wide = score_threshold, max_candidates, looks, wide
        self.max_dogs = max_dogs
        self.large, self.enlarge, self.mirror = large, enlarge, mirror
        self.classes = tuple(classes)
        self._class_ids = np.array([names.index(c) for c in classes], dtype=np.int64)
        self._dog_id = names.index("dog") if "dog" in classes else -1
        # per canvas shape, opened on the first photo that needs it (two lanes asking at once open it once)
        self._models: OnceEach[Shape, OnnxModel] = OnceEach(functools.partial(_open_sized, threads, precision))
        self.model(canvases(size)[0])  # open the full landscape session now: a bad setting fails here

    def model(self, shape: Shape) -> OnnxModel:
        return self._models(shape)

    def raw(self, image: Image.Image) -> tuple[np.ndarray, float, Shape]:
        """The graph's raw (cells, 85) output for a photo, the letterbox ratio and the canvas it ran on."""
        return self._first_pass(image)[:3]

    def _first_pass(self, image: Image.Image) -> tuple[np.ndarray, float, Shape, np.ndarray]:
        """`raw`, and the letterboxed input it ran on (the mirrored pass reverses it rather than resize again)."""
        shape = canvas_for(image.size, self.size, self.enlarge)
        raw, ratio, x = self._run(image, shape)
        return raw, ratio, shape, x

    def _run(self, image: Image.Image, shape: Shape) -> tuple[np.ndarray, float, np.ndarray]:
        """One photo (or window) letterboxed onto a canvas and run: the raw (cells, 85) output, the ratio and the
        letterboxed input."""
        x, ratio = letterbox(image, shape)
        return self.model(shape).run_numpy(x)[0][0], ratio, x

    def find(self, image: Image.Image) -> list[Detection]:
        """Candidates in an upright RGB photo, boxes in its pixels (first pass, mirrored too if it shrank the photo,
        then the closer looks, the wider look, then the weaker hints beside a sure dog)."""
        raw, ratio, shape, x = self._first_pass(image)
        floor = min(SECOND_SCORE, self.score_threshold)  # the weakest box a later step reads: hints beside a dog,
        if self.looks:
            floor = min(floor, LOOK_FROM)  # or the closer look's
        if self.wide:
            floor = min(floor, WIDE_FROM)  # or the wider look's
        boxes, scores, ids = self._boxes(raw, ratio, shape, image.size, floor)
        if self.mirror and ratio < MIRROR_BELOW:
            boxes, scores, ids = self._add(self._mirrored(x, ratio, shape, image.size, floor), boxes, scores, ids)
        if not self.enlarge:  # looks judge their gain as if the photo had been enlarged (`SMALL_CANVASES`)
            ratio = max(ratio, full_ratio(image.size, self.size))
        if self.large and ratio < LARGE_FROM:
            boxes, scores, ids, ratio = self._large_pass(image, floor, boxes, scores, ids)
        strong = scores >= self.score_threshold
        looks = self.windows(boxes[strong], boxes[~strong], scores[~strong], image.size, ratio) if self.looks else []
        for window in looks:
            boxes, scores, ids = self._add(self._look(image, window), boxes, scores, ids)
        strong = scores >= self.score_threshold
        wide = self.wide_window(boxes[strong], boxes[~strong], scores[~strong], image.size, ratio, looks)
        if wide is not None:  # after the closer looks: a candidate one of them found may cover the hint
            boxes, scores, ids = self._add(self._look(image, wide, WIDE_SIZE), boxes, scores, ids)
            strong = scores >= self.score_threshold
        keep = strong.copy()
        sure = (ids == self._dog_id) & (scores >= SECOND_DOG_FROM)
        if sure.any():
            area = np.prod(boxes[:, 2:] - boxes[:, :2], 1)
            side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
            keep |= (scores >= SECOND_SCORE) & (side >= SECOND_MIN_SIDE) & (area <= SECOND_MAX_AREA * area[sure].max())
        return self._ranked(boxes[keep], scores[keep], ids[keep], ~strong[keep])

    def _mirrored(self, x: np.ndarray, ratio: float, shape: Shape, image_size: Shape,
                  floor: float) -> tuple[np.ndarray, ...]:
        """The first pass again on the photo mirrored left to right: its letterboxed input ``x`` with the photo's
        columns reversed and the padding left where it is (what mirroring the photo, then letterboxing it, gives),
        boxes mapped back into the photo's pixels."""
        nw = min(shape[0], max(1, round(image_size[0] * ratio)))  # the photo's width on the canvas (`letterbox`)
        m = x.copy()
        m[..., :nw] = x[..., nw - 1::-1]
        return self._boxes(self.model(shape).run_numpy(m)[0][0], ratio, shape, image_size, floor, mirrored=nw)

    def _large_pass(self, image: Image.Image, floor: float, boxes: np.ndarray, scores: np.ndarray,
                    ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """`LARGE_SIZE`'s boxes up to `LARGE_MAX_SIDE` of the photo added to the first pass's; the ratio the
        looks then judge their gain against is this pass's (the photo has been seen that large)."""
        shape = canvas_for(image.size, LARGE_SIZE)
        raw, ratio, _ = self._run(image, shape)
        b, s, i = self._boxes(raw, ratio, shape, image.size, floor)
        small = np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]) <= LARGE_MAX_SIDE * max(image.size)
        return *self._add((b[small], s[small], i[small]), boxes, scores, ids), ratio

    @staticmethod
    def _add(found: tuple[np.ndarray, ...], boxes: np.ndarray, scores: np.ndarray,
             ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        b, s, i = found
        return np.concatenate([boxes, b]), np.concatenate([scores, s]), np.concatenate([ids, i])

    def candidates(self, raw: np.ndarray, ratio: float, shape: Shape, image_size: Shape) -> list[Detection]:
        """The first pass alone: decode, threshold, class-agnostic NMS, boxes in the photo's pixels, ranked."""
        return self._ranked(*self._boxes(raw, ratio, shape, image_size, self.score_threshold))

    def _boxes(self, raw: np.ndarray, ratio: float, shape: Shape, image_size: Shape, threshold: float,
               mirrored: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Boxes of a raw output in the photo's pixels; ``mirrored``: the output is of the photo mirrored, that
        many canvas pixels wide."""
        boxes, scores, ids = decode(raw, shape, self._class_ids, threshold)
        if mirrored is not None:
            boxes[:, [0, 2]] = mirrored - boxes[:, [2, 0]]
        keep = nms(boxes, scores)
        w, h = image_size
        return np.clip(boxes[keep] / ratio, 0, [w, h, w, h]), scores[keep], ids[keep]

    def _ranked(self, boxes: np.ndarray, scores: np.ndarray, ids: np.ndarray,
                weak: np.ndarray | None = None) -> list[Detection]:
        """One box per animal (NMS again: a closer look may find what the first pass found): the surest
        ``max_candidates``, then further sure dogs, or in a pack any box from `PACK_SCORE`, up to ``max_dogs`` in
        all; most prominent (area x score) first; empty boxes (all outside the photo) dropped."""
        keep = nms(boxes, scores)
        boxes, scores, ids = boxes[keep], scores[keep], ids[keep]
        weak = weak[keep] if weak is not None else np.zeros(len(keep), bool)
        area = np.prod(boxes[:, 2:] - boxes[:, :2], 1)
        ranked = [i for i in np.argsort(-scores, kind="stable") if area[i] > 0]
        surest = ranked[:min(self.max_candidates, self.max_dogs)]
        pack = sum(ids[i] == self._dog_id and scores[i] >= SECOND_DOG_FROM for i in ranked) >= PACK_FROM
        surest += [i for i in ranked[self.max_candidates:]
                   if scores[i] >= (PACK_SCORE if pack else SECOND_DOG_FROM) and (pack or ids[i] == self._dog_id)
                   ][:max(0, self.max_dogs - len(surest))]
        order = sorted(surest, key=lambda i: -float(area[i] * scores[i]))
        names = coco_classes()
        return [Detection((float(boxes[i, 0]), float(boxes[i, 1]), float(boxes[i, 2]), float(boxes[i, 3])),
                          float(scores[i]), names[ids[i]], bool(weak[i])) for i in order]

    def windows(self, strong: np.ndarray, weak: np.ndarray, weak_scores: np.ndarray, image_size: Shape,
                ratio: float | None = None) -> list[tuple[int, int, int, int]]:
        """Square windows (x0, y0, x1, y1) around the best weak hints that no candidate already covers; with the
        first pass's ``ratio``, only windows that show the hint at least LOOK_GAIN times larger than it did."""
        out: list[tuple[int, int, int, int]] = []
        for i in np.argsort(-weak_scores, kind="stable"):
            if len(out) >= self.looks:
                break
            if not _covered(weak[i], strong):
                window = _window_around(weak[i], LOOK_SPAN, LOOK_SIZE, image_size, ratio)
                if window is not None:
                    out.append(window)
        return out

    def wide_window(self, strong: np.ndarray, weak: np.ndarray, weak_scores: np.ndarray, image_size: Shape,
                    ratio: float, looked: Sequence[tuple[int, int, int, int]] = ()) -> tuple[int, int, int, int] | None:
        """The wider look's square window (`WIDE_FROM`): around the best hint of a photo the first pass shrank
        (``ratio`` < 1) that no candidate covers and no window in ``looked`` holds, if it enlarges the hint."""
        if not self.wide or ratio >= 1:
            return None
        for i in np.argsort(-weak_scores, kind="stable"):
            if weak_scores[i] < WIDE_FROM:
                break
            x0, y0, x1, y1 = weak[i]
            if _covered(weak[i], strong) or any(x0 >= a and y0 >= b and x1 <= c and y1 <= d for a, b, c, d in looked):
                continue
            window = _window_around(weak[i], WIDE_SPAN, WIDE_SIZE, image_size, ratio)
            if window is not None:
                return window
        return None

    def _look(self, image: Image.Image, window: tuple[int, int, int, int],
              size: int = LOOK_SIZE) -> tuple[np.ndarray, ...]:
        """Candidates inside one window, run at ``size`` x ``size``, in the photo's pixels."""
        crop = image.crop(window)
        shape = (size, size)
        raw, ratio, _ = self._run(crop, shape)
        boxes, scores, ids = self._boxes(raw, ratio, shape, crop.size, self.score_threshold)
        return boxes + np.array(window[:2] * 2, dtype=np.float32), scores, ids


def _covered(box: np.ndarray, strong: np.ndarray) -> bool:
    """Whether a candidate already covers a hint (IoU over 0.3): a look there would find it again."""
    return bool(len(strong)) and box_iou(box[None], strong).max() > 0.3


def _window_around(box: np.ndarray, span: float, size: int, image_size: Shape,
                   ratio: float | None) -> tuple[int, int, int, int] | None:
    """The square window ``span`` times a hint's longer side (at least LOOK_MIN_SIDE, at most the photo), centred
    on it and pushed back inside the photo; None when, run at ``size``, it would not show the hint LOOK_GAIN times
    larger than the first pass (at ``ratio``) did."""
    w, h = image_size
    x0, y0, x1, y1 = box
    side = min(max(span * max(x1 - x0, y1 - y0), LOOK_MIN_SIDE), w, h)
    if ratio is not None and size / side < LOOK_GAIN * ratio:
        return None  # a large hint: the window would barely enlarge it
    left = min(max(0.0, (x0 + x1 - side) / 2), w - side)
    top = min(max(0.0, (y0 + y1 - side) / 2), h - side)
    return round(left), round(top), round(left + side), round(top + side)


def _open_sized(threads: int | None, precision: str, shape: Shape) -> OnnxModel:
    return OnnxModel(sized_graph(shape), threads=threads, precision=precision)


@functools.cache
def default_finder(precision: str = "fp32") -> DogFinder:
    """The process's finder for a precision, opened once (the session takes ~0.1 s to open)."""
    return DogFinder(precision)
