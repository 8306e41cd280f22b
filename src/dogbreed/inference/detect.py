"""Find the animals in a photo: YOLOX-Nano (COCO) boxes that the dog-or-not head then judges one crop at a time.

The packaged graph (``data/yolox_nano/``, Apache-2.0, see its PROVENANCE.md) is the upstream file byte for byte:
a fixed 1x3x416x416 input. To run it at another size, `sized_graph` rewrites its input shape once (the Focus
slices, the scale-2 Resizes and the ``[1, 85, -1]`` output Reshapes all follow the input) and caches the result
under the cache dir, so the shipped file keeps its upstream sha256 and a process pays the rewrite once per shape.

The input need not be square: most photos are 4:3 or 3:2, and a square canvas spends a quarter or more of the
network on padding. A (long, short) size runs landscape photos on a long x short canvas and portrait photos on
the transposed one (a second session, opened on the first portrait photo); the network is fully convolutional,
so only the grid the decode walks changes.

Sessions come from `onnxrun.OnnxModel` (fp32 on ONNX Runtime, bf16 on OpenVINO where the CPU computes bf16
natively), one per precision and size per process (`default_finder`). Nothing here imports torch.
"""

from __future__ import annotations

import functools
import hashlib
import threading
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image

from ..fileio import atomic_write
from ..onnxrun import SESSION_PRECISIONS, OnnxModel
from ..paths import cache_dir

GRAPH_FILE = "yolox_nano.onnx"
GRAPH_SHA256 = "695e750a5d5754bb5a8d5325643b59282191a7e7a564e435a415fd3c578eab14"
NATIVE_SIZE = 416  # the size the graph was exported (and trained) at
STRIDES = (8, 16, 32)
PAD_VALUE = 114.0  # YOLOX's letterbox fill
# Chosen in bench/dogs_in_scene.py on the tune half of the composites (see its README table); the reasons are there.
INPUT_SIZE: tuple[int, int] = (288, 224)  # (long side, short side) of the canvas
SCORE_THRESHOLD = 0.05
NMS_IOU = 0.45
MAX_CANDIDATES = 5
# The COCO classes that real dog photos get called when they are not called "dog" (bench/dogs_in_scene.py
# --classes counts them on the tune half). A candidate is judged by the dog-or-not head, so a miscalled dog is
# kept and a real cat is still refused there.
CANDIDATE_CLASSES = ("dog", "cat", "bear", "sheep", "horse", "cow", "teddy bear")


@dataclass(frozen=True)
class Detection:
    """One animal candidate."""

    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in the given image's pixels, clipped to it
    score: float  # objectness x class score
    label: str  # COCO class name: "dog", "cat", "bear", ...


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
    with atomic_write(out, durable=False) as tmp:
        onnx.save(model, str(tmp))
    return out


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


def canvas_for(image_size: Shape, size: int | Shape) -> Shape:
    """The canvas (width, height) a photo runs on: square for an int size; for (long, short), landscape photos
    (and square ones) on long x short, portrait photos on short x long."""
    if isinstance(size, int):
        return size, size
    long, short = size
    return (long, short) if image_size[0] >= image_size[1] else (short, long)


def letterbox(image: Image.Image, shape: Shape) -> tuple[np.ndarray, float]:
    """RGB photo -> the graph's input (1, 3, H, W) float32 BGR 0-255, and the resize ratio.

    As YOLOX trains: the photo resized to fit with its aspect kept, at the top-left of a canvas of 114.
    """
    w, h = image.size
    cw, ch = shape
    ratio = min(cw / w, ch / h)
    nw, nh = min(cw, max(1, round(w * ratio))), min(ch, max(1, round(h * ratio)))
    # reducing_gap: a box-filter reduce first, so a large photo does not pay a full-size bilinear pass.
    small = np.asarray(image.resize((nw, nh), Image.Resampling.BILINEAR, reducing_gap=3.0), dtype=np.float32)
    x = np.full((1, 3, ch, cw), PAD_VALUE, dtype=np.float32)
    x[0, :, :nh, :nw] = small[:, :, ::-1].transpose(2, 0, 1)  # RGB -> BGR, HWC -> CHW
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
                 max_candidates: int = MAX_CANDIDATES, threads: int | None = None):
        if precision not in SESSION_PRECISIONS:
            raise ValueError(f"precision must be one of {SESSION_PRECISIONS}, not {precision!r}")
        names = coco_classes()
        unknown = [c for c in classes if c not in names]
        if unknown:
            raise ValueError(f"not COCO classes: {unknown}")
        self.precision, self.size, self.threads = precision, size, threads
        self.score_threshold, self.max_candidates = score_threshold, max_candidates
        self.classes = tuple(classes)
        self._class_ids = np.array([names.index(c) for c in classes], dtype=np.int64)
        self._models: dict[Shape, OnnxModel] = {}
        self._lock = threading.Lock()
        self.model(canvas_for((2, 1), size))  # open the landscape session now: a bad setting fails here

    def model(self, shape: Shape) -> OnnxModel:
        with self._lock:  # two threads asking for the portrait session at once open it once
            if shape not in self._models:
                self._models[shape] = OnnxModel(sized_graph(shape), threads=self.threads, precision=self.precision)
            return self._models[shape]

    def raw(self, image: Image.Image) -> tuple[np.ndarray, float, Shape]:
        """The graph's raw (cells, 85) output for a photo, the letterbox ratio and the canvas it ran on."""
        shape = canvas_for(image.size, self.size)
        x, ratio = letterbox(image, shape)
        return self.model(shape).run_numpy(x)[0][0], ratio, shape

    def find(self, image: Image.Image) -> list[Detection]:
        """Candidates in an upright RGB photo, boxes in its pixels."""
        raw, ratio, shape = self.raw(image)
        return self.candidates(raw, ratio, shape, image.size)

    def candidates(self, raw: np.ndarray, ratio: float, shape: Shape, image_size: Shape) -> list[Detection]:
        """Decode, threshold, class-agnostic NMS, boxes back in the photo's pixels, ordered and capped."""
        boxes, scores, ids = decode(raw, shape, self._class_ids, self.score_threshold)
        if not len(scores):
            return []
        keep = nms(boxes, scores)
        w, h = image_size
        boxes = np.clip(boxes[keep] / ratio, 0, [w, h, w, h])
        scores, ids = scores[keep], ids[keep]
        area = np.prod(boxes[:, 2:] - boxes[:, :2], 1)
        order = [i for i in np.argsort(-(area * scores), kind="stable") if area[i] > 0][:self.max_candidates]
        names = coco_classes()
        return [Detection((float(boxes[i, 0]), float(boxes[i, 1]), float(boxes[i, 2]), float(boxes[i, 3])),
                          float(scores[i]), names[ids[i]]) for i in order]


@functools.cache
def default_finder(precision: str = "fp32") -> DogFinder:
    """The process's finder for a precision, opened once (the session takes ~0.1 s to open)."""
    return DogFinder(precision)


def graph_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
