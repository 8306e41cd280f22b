"""The detection stage (dogbreed.inference.detect) and bench/dogs_in_scene.py's scoring of a predictor's dogs."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image, ImageOps

from dogbreed.inference import detect
from dogbreed.inference.detect import Detection, DogFinder, canvas_for, decode, default_finder, letterbox, nms
from dogbreed.onnxrun import native_bf16
from dogbreed.transforms import load_image

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (288, 224)
DOG, CAT, BEAR = 16, 15, 21


def _raw(shape: tuple[int, int], cells: dict[int, tuple[float, ...]]) -> np.ndarray:
    """A raw (cells, 85) output that is empty except for the given cells: (dx, dy, log w, log h, obj, cls, p)."""
    raw = np.zeros((detect.num_cells(shape), 85), np.float32)
    for i, (dx, dy, lw, lh, obj, cls, p) in cells.items():
        raw[i, :5] = dx, dy, lw, lh, obj
        raw[i, 5 + int(cls)] = p
    return raw


def _cell(shape: tuple[int, int], stride: int, gx: int, gy: int) -> int:
    """The output row of grid cell (gx, gy) at a stride: strides 8, 16, 32 in order, rows of width W/stride."""
    before = sum((shape[0] // s) * (shape[1] // s) for s in detect.STRIDES if s < stride)
    return before + gy * (shape[0] // stride) + gx


def test_decode_turns_a_known_cell_into_its_box() -> None:
    i = _cell(SHAPE, 16, 3, 2)
    raw = _raw(SHAPE, {i: (0.5, 0.5, math.log(4), math.log(2), 0.9, DOG, 0.8)})
    boxes, scores, ids = decode(raw, SHAPE, np.array([DOG, CAT]), 0.05)
    # centre ((0.5 + 3) * 16, (0.5 + 2) * 16) = (56, 40); size (4 * 16, 2 * 16) = (64, 32)
    np.testing.assert_allclose(boxes, [[24, 24, 88, 56]], atol=1e-4)
    np.testing.assert_allclose(scores, [0.72], atol=1e-6)
    assert ids.tolist() == [DOG]
    assert len(decode(raw, SHAPE, np.array([CAT]), 0.05)[1]) == 0  # a dog cell is no cat
    assert len(decode(raw, SHAPE, np.array([DOG]), 0.75)[1]) == 0  # objectness x class, not class alone


def test_grid_order_is_yolox_order() -> None:
    xy, stride = detect.grid(SHAPE)
    assert len(xy) == detect.num_cells(SHAPE) == 36 * 28 + 18 * 14 + 9 * 7
    i = _cell(SHAPE, 32, 8, 6)
    assert xy[i].tolist() == [8, 6] and stride[i, 0] == 32 and i == len(xy) - 1


def test_nms_is_class_agnostic_and_keeps_the_best() -> None:
    boxes = np.array([[0, 0, 100, 100], [5, 5, 100, 105], [200, 200, 260, 260], [0, 0, 100, 40]], np.float32)
    scores = np.array([0.5, 0.9, 0.3, 0.4], np.float32)
    assert nms(boxes, scores, 0.45).tolist() == [1, 3, 2]  # 0: IoU 0.86 with 1; 3: IoU 0.33 with 1, kept
    assert nms(boxes[:0], scores[:0]).tolist() == []


def test_candidates_one_box_per_animal_in_photo_pixels_most_prominent_first() -> None:
    finder = DogFinder(size=SHAPE)
    raw = _raw(SHAPE, {
        _cell(SHAPE, 16, 3, 2): (0.5, 0.5, math.log(4), math.log(2), 0.9, DOG, 0.8),  # a dog
        _cell(SHAPE, 16, 4, 2): (-0.5, 0.5, math.log(4), math.log(2), 0.9, BEAR, 0.6),  # the same animal, "bear"
        _cell(SHAPE, 8, 30, 20): (0.5, 0.5, math.log(4), math.log(4), 0.9, CAT, 0.9),  # a small cat
        _cell(SHAPE, 32, 8, 6): (0.5, 0.5, math.log(2), math.log(2), 0.9, CAT, 0.9),  # off the right edge
        _cell(SHAPE, 8, 1, 1): (0.5, 0.5, 0.0, 0.0, 0.9, 0, 0.99),  # a person: not an animal candidate
    })
    got = finder.candidates(raw, 0.5, SHAPE, (560, 440))
    assert [d.label for d in got] == ["dog", "cat", "cat"]  # area x score order; the bear box is suppressed
    assert got[0].box == pytest.approx((48, 48, 176, 112))  # canvas box / 0.5
    assert got[1].box[2:] == (560, 440)  # clipped to the photo
    assert got[2].box == pytest.approx((456, 296, 520, 360))  # centre (30.5, 20.5) * 8, half side 4 * 8 / 2; / 0.5
    assert got[0].score == pytest.approx(0.72)
    assert isinstance(got[0], Detection)  # the cap: test_the_cap_keeps_the_surest_candidates_...


def test_the_cap_keeps_the_surest_candidates_then_ranks_them_by_prominence() -> None:
    # A large, weak box (drawn round a stretch of scene) is the most prominent by area x score, but a photo keeps
    # its surest candidates: with room for two, the dog and the cat, not the weak box and the dog.
    raw = _raw(SHAPE, {
        _cell(SHAPE, 32, 4, 3): (0.5, 0.5, math.log(6), math.log(6), 0.9, BEAR, 0.1),  # 192 px, score 0.09
        _cell(SHAPE, 16, 3, 2): (0.5, 0.5, math.log(4), math.log(2), 0.9, DOG, 0.8),  # 64x32, score 0.72
        _cell(SHAPE, 8, 30, 20): (0.5, 0.5, math.log(4), math.log(4), 0.9, CAT, 0.9),  # 32x32, score 0.81
    })
    assert [d.label for d in DogFinder(size=SHAPE).candidates(raw, 1.0, SHAPE, SHAPE)] == ["bear", "dog", "cat"]
    got = DogFinder(size=SHAPE, max_candidates=2).candidates(raw, 1.0, SHAPE, SHAPE)
    assert [d.label for d in got] == ["dog", "cat"]  # the two surest, the larger (area x score) first


def test_a_pack_of_sure_dogs_is_not_cut_at_the_cap() -> None:
    # Eight dogs the detector is sure of are all candidates, and beside two or more sure dogs so is a box of another
    # class from PACK_SCORE (a dog of a pack called "cat"); beyond the cap a weaker box is still cut, a photo with
    # one sure dog keeps five, and MAX_DOGS bounds the whole.
    def raw_of(cells: list[tuple[int, int, int, float]]) -> np.ndarray:
        return _raw(SHAPE, {_cell(SHAPE, 16, gx, gy): (0.5, 0.5, 0.0, 0.0, 0.9, cls, p) for gx, gy, cls, p in cells})

    finder = DogFinder(size=SHAPE)
    dogs = [(2 * k, 1, DOG, 0.8) for k in range(8)]  # eight sure dogs (0.72), 16 px each, apart
    weak = [(2 * k, 6, DOG, 0.15) for k in range(2)] + [(4 + 2 * k, 6, CAT, 0.15) for k in range(2)]  # 0.135
    cats = [(2 * k, 9, CAT, 0.5) for k in range(3)]  # 0.45
    got = finder.candidates(raw_of(dogs + weak + cats), 1.0, SHAPE, SHAPE)
    assert finder.max_candidates == 5 and len(got) == 11  # the five surest (dogs 0.72), 3 more dogs, the 3 cats
    assert sorted(d.label for d in got) == ["cat"] * 3 + ["dog"] * 8
    assert all(d.score > 0.4 for d in got)  # no 0.135 box beyond the cap
    # six sure cats beside one sure dog: not a pack, so five candidates as before; beside two, all eight
    six = [(2 * k, 9, CAT, 0.5) for k in range(6)]
    assert len(finder.candidates(raw_of(dogs[:1] + six), 1.0, SHAPE, SHAPE)) == 5
    assert len(finder.candidates(raw_of(dogs[:2] + six), 1.0, SHAPE, SHAPE)) == 8
    assert len(DogFinder(size=SHAPE, max_dogs=6).candidates(raw_of(dogs + cats), 1.0, SHAPE, SHAPE)) == 6
    assert len(DogFinder(size=SHAPE, max_dogs=5).candidates(raw_of(dogs + cats), 1.0, SHAPE, SHAPE)) == 5
    assert len(DogFinder(size=SHAPE, max_dogs=3).candidates(raw_of(dogs + cats), 1.0, SHAPE, SHAPE)) == 3  # in all
    # at the cut, the surer extras are kept: the 0.72 dogs before the 0.45 cats
    kept = DogFinder(size=SHAPE, max_dogs=8).candidates(raw_of(cats + dogs), 1.0, SHAPE, SHAPE)
    assert [d.label for d in kept] == ["dog"] * 8
    # the levels themselves: beside one sure dog, a further "dog" box from SECOND_DOG_FROM (which makes a pack of
    # two); in a pack, a box of any class from PACK_SCORE
    cap = dogs[:1] + [(2 * k, 9, CAT, 0.5) for k in range(4)]  # the cap's five
    at, pack_at = detect.SECOND_DOG_FROM / 0.9, detect.PACK_SCORE / 0.9
    assert len(finder.candidates(raw_of(cap + [(2, 12, DOG, at * 0.99)]), 1.0, SHAPE, SHAPE)) == 5
    assert len(finder.candidates(raw_of(cap + [(2, 12, DOG, at * 1.001)]), 1.0, SHAPE, SHAPE)) == 6
    pack = dogs[:2] + [(2 * k, 9, CAT, 0.5) for k in range(3)]
    assert len(finder.candidates(raw_of(pack + [(2, 12, CAT, pack_at * 0.99)]), 1.0, SHAPE, SHAPE)) == 5
    assert len(finder.candidates(raw_of(pack + [(2, 12, CAT, pack_at * 1.001)]), 1.0, SHAPE, SHAPE)) == 6


@pytest.mark.parametrize(("dog_score", "want"), [(0.72, ["dog", "cat"]), (0.2, ["dog"])])
def test_beside_a_sure_dog_weaker_hints_are_candidates(monkeypatch: pytest.MonkeyPatch, dog_score: float,
                                                       want: list[str]) -> None:
    # A second dog beside a sure one often scores only 0.015-0.05: kept when the photo holds a sure dog and the
    # hint is large enough to crop but not much larger than the dog; a tiny one, a stretch of scene twice the dog's
    # size, or any of them in a photo without a sure dog, is not.
    raw = _raw(SHAPE, {
        _cell(SHAPE, 16, 3, 2): (0.5, 0.5, math.log(4), math.log(2), 0.9, DOG, dog_score / 0.9),  # 64x32
        _cell(SHAPE, 16, 12, 8): (0.5, 0.5, math.log(3), math.log(3), 0.2, CAT, 0.1),  # 48x48, score 0.02
        _cell(SHAPE, 8, 2, 20): (0.5, 0.5, math.log(2), math.log(2), 0.2, CAT, 0.1),  # 16x16, score 0.02
        _cell(SHAPE, 32, 6, 1): (0.5, 0.5, math.log(2), math.log(2), 0.2, BEAR, 0.1),  # 64x64, score 0.02
    })
    finder = DogFinder(size=SHAPE, looks=0)
    monkeypatch.setattr(finder, "_first_pass", lambda image: (raw, 1.0, SHAPE, None))
    got = finder.find(Image.new("RGB", SHAPE))
    assert [d.label for d in got] == want
    assert got[0].score == pytest.approx(dog_score)
    assert [d.weak for d in got] == [d.score < detect.SCORE_THRESHOLD for d in got]  # dogs.SEEN_AGAIN_WEAK reads it


def test_closer_look_windows_sit_on_uncovered_weak_hints_inside_the_photo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(detect, "LOOK_SPAN", 2.0)
    monkeypatch.setattr(detect, "LOOK_MIN_SIDE", 96)
    finder = DogFinder(size=SHAPE, looks=2)
    strong = np.array([[300, 300, 400, 400]], np.float32)
    weak = np.array([[100, 100, 160, 130], [310, 310, 390, 390], [620, 0, 640, 10]], np.float32)
    got = finder.windows(strong, weak, np.array([0.02, 0.04, 0.01]), (640, 480))
    # the second hint lies on a candidate already; the first gets twice its size around its centre, the third
    # the smallest window, pushed back inside the photo
    assert got == [(70, 55, 190, 175), (544, 0, 640, 96)]
    # with the first pass's ratio, a hint whose window would not show it LOOK_GAIN times larger is passed over
    monkeypatch.setattr(detect, "LOOK_GAIN", 1.3)
    big = np.array([[0, 0, 200, 150], [100, 100, 160, 130]], np.float32)
    assert finder.windows(strong[:0], big, np.array([0.04, 0.02]), (640, 480), ratio=0.45) == [(70, 55, 190, 175)]
    assert DogFinder(size=SHAPE, looks=0).windows(strong, weak, np.array([0.02, 0.04, 0.01]), (640, 480)) == []


def test_the_wider_look_sits_on_a_larger_hint_of_a_photo_the_first_pass_shrank() -> None:
    finder = DogFinder(size=SHAPE)
    strong = np.array([[300, 300, 400, 400]], np.float32)
    weak = np.array([[310, 310, 390, 390], [100, 100, 250, 200], [500, 50, 560, 100], [20, 300, 60, 330]], np.float32)
    scores = np.array([0.04, 0.03, 0.02, 0.008])
    # the best hint lies on a candidate; the next one (150 px) gets a window 1.5x its longer side around its centre
    side = detect.WIDE_SPAN * 150
    want = (round(175 - side / 2), round(150 - side / 2), round(175 + side / 2), round(150 + side / 2))
    assert finder.wide_window(strong, weak, scores, (640, 480), 0.8) == want
    # a hint a closer-look window already holds is passed over (a small one gets the smallest window), and a hint
    # under WIDE_FROM never gets one
    assert finder.wide_window(strong, weak, scores, (640, 480), 0.8, [(0, 0, 300, 260)]) == (482, 27, 578, 123)
    assert finder.wide_window(strong, weak, scores, (640, 480), 0.8, [(0, 0, 300, 260), (480, 30, 580, 130)]) is None
    # a photo the first pass did not shrink has no pixels the first pass missed: no wider look
    assert finder.wide_window(strong, weak, scores, (640, 480), 1.0) is None
    assert DogFinder(size=SHAPE, wide=False).wide_window(strong, weak, scores, (640, 480), 0.8) is None


def test_find_runs_the_wider_look_on_the_photo_and_keeps_what_it_finds(monkeypatch: pytest.MonkeyPatch) -> None:
    # First pass: one 0.02 hint 150 px wide in a 640x480 photo read at 0.45; the wider look finds a dog there.
    raw = _raw(SHAPE, {_cell(SHAPE, 16, 5, 5): (0.5, 0.5, math.log(150 * 0.45 / 16), math.log(100 * 0.45 / 16),
                                                0.2, DOG, 0.1)})
    finder = DogFinder(size=SHAPE, looks=0, large=False, mirror=False)  # at 0.45 the large-photo pass would run too
    monkeypatch.setattr(finder, "_first_pass", lambda image: (raw, 0.45, SHAPE, None))
    calls = []

    def look(image: Image.Image, window: tuple[int, int, int, int], size: int = 0) -> tuple[np.ndarray, ...]:
        calls.append((window, size))
        return np.array([[130, 140, 250, 210]], np.float32), np.array([0.6], np.float32), np.array([DOG])

    monkeypatch.setattr(finder, "_look", look)
    got = finder.find(Image.new("RGB", (640, 480)))
    assert [(w[2] - w[0], size) for w, size in calls] == [(round(detect.WIDE_SPAN * 150), detect.WIDE_SIZE)]
    assert [(d.label, d.box) for d in got] == [("dog", (130.0, 140.0, 250.0, 210.0))]


def test_a_large_photo_also_runs_on_the_large_canvas_and_keeps_its_small_boxes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A 2000x1500 photo: the first pass (SHAPE, ratio 0.144) finds nothing; on 1024x768 (ratio 0.512) a dog
    # 100x80 px and a cat's part 600x600 px (over LARGE_MAX_SIDE of the photo: the first pass's to see whole).
    photo = (2000, 1500)
    large = canvas_for(photo, detect.LARGE_SIZE)
    assert large == (1024, 768)
    r = 0.512
    big_raw = _raw(large, {
        _cell(large, 8, 20, 30): (0.5, 0.5, math.log(100 * r / 8), math.log(80 * r / 8), 0.9, DOG, 0.8),
        _cell(large, 32, 10, 10): (0.5, 0.5, math.log(600 * r / 32), math.log(600 * r / 32), 0.9, CAT, 0.7)})
    finder = DogFinder(size=SHAPE, looks=0, wide=False, mirror=False)
    monkeypatch.setattr(finder, "_first_pass", lambda image: (_raw(SHAPE, {}), 0.144, SHAPE, None))
    shapes = []

    def model(shape: tuple[int, int]) -> SimpleNamespace:
        shapes.append(shape)
        return SimpleNamespace(run_numpy=lambda x: [big_raw[None]])

    monkeypatch.setattr(finder, "model", model)
    got = finder.find(Image.new("RGB", photo))
    assert shapes == [large]
    assert [d.label for d in got] == ["dog"]
    cx, cy = (20 + 0.5) * 8 / r, (30 + 0.5) * 8 / r
    np.testing.assert_allclose(got[0].box, [cx - 50, cy - 40, cx + 50, cy + 40], atol=0.01)
    # a photo the first pass barely shrinks, or a finder without the pass, never runs it
    monkeypatch.setattr(finder, "_first_pass", lambda image: (_raw(SHAPE, {}), detect.LARGE_FROM, SHAPE, None))
    assert finder.find(Image.new("RGB", photo)) == [] and shapes == [large]
    finder.large = False
    monkeypatch.setattr(finder, "_first_pass", lambda image: (_raw(SHAPE, {}), 0.144, SHAPE, None))
    assert finder.find(Image.new("RGB", photo)) == [] and shapes == [large]


def test_a_photo_the_first_pass_shrinks_also_runs_mirrored_and_keeps_what_that_finds(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A 640x480 photo, red on its left half: the first pass (ratio 0.45) finds nothing; the mirrored pass, which
    # must be given the photo mirrored (red on the right), finds a dog near its left edge: near the right edge of
    # the photo itself. A photo the first pass does not shrink never runs it, nor a finder without it.
    finder = DogFinder(size=SHAPE, looks=0, wide=False, large=False)
    photo = Image.new("RGB", (640, 480), (0, 0, 255))
    photo.paste((255, 0, 0), (0, 0, 320, 480))
    x, ratio = letterbox(photo, SHAPE)
    assert ratio == pytest.approx(0.45)
    dog = _raw(SHAPE, {_cell(SHAPE, 16, 3, 2): (0.5, 0.5, math.log(4), math.log(2), 0.9, DOG, 0.8)})
    seen: list[np.ndarray] = []

    def model(shape: tuple[int, int]) -> SimpleNamespace:
        return SimpleNamespace(run_numpy=lambda m: seen.append(m) or [dog[None]])

    monkeypatch.setattr(finder, "model", model)
    monkeypatch.setattr(finder, "_first_pass", lambda image: (_raw(SHAPE, {}), ratio, SHAPE, x))
    got = finder.find(photo)
    assert len(seen) == 1
    np.testing.assert_array_equal(seen[0], letterbox(ImageOps.mirror(photo), SHAPE)[0])
    # canvas box (24, 24, 88, 56) in the mirrored photo, 288 canvas pixels wide: (200, 24, 264, 56), / 0.45
    assert [d.label for d in got] == ["dog"]
    np.testing.assert_allclose(got[0].box, [200 / 0.45, 24 / 0.45, 264 / 0.45, 56 / 0.45], atol=0.01)
    assert got[0].score == pytest.approx(0.72) and not got[0].weak
    monkeypatch.setattr(finder, "_first_pass", lambda image: (_raw(SHAPE, {}), 1.0, SHAPE, x))
    assert finder.find(photo) == [] and len(seen) == 1
    finder.mirror = False
    monkeypatch.setattr(finder, "_first_pass", lambda image: (_raw(SHAPE, {}), ratio, SHAPE, x))
    assert finder.find(photo) == [] and len(seen) == 1


def test_letterbox_keeps_aspect_at_top_left_in_bgr() -> None:
    img = Image.new("RGB", (640, 480), (255, 0, 10))
    x, ratio = letterbox(img, (288, 224))
    assert x.shape == (1, 3, 224, 288) and x.dtype == np.float32
    assert ratio == pytest.approx(0.45)  # min(288 / 640, 224 / 480)
    assert x[0, :, :216, :].reshape(3, -1).mean(1).tolist() == pytest.approx([10, 0, 255])  # B, G, R
    assert (x[0, :, 216:, :] == 114).all()  # padding below (480 * 0.45 = 216 rows of photo)
    assert canvas_for((480, 640), (288, 224)) == (224, 288) and canvas_for((640, 480), 320) == (320, 320)


@pytest.mark.parametrize(("photo", "canvas"), [((640, 480), (512, 384)), ((224, 224), (384, 384)),
                                               ((480, 640), (384, 512)), ((1920, 1080), (512, 384)),
                                               ((401, 400), (512, 384)), ((400, 401), (384, 512)),
                                               ((800, 500), (512, 384)), ((500, 10), (512, 384)),
                                               ((500, 375), (512, 384)), ((3000, 3000), (384, 384))])
def test_square_photos_run_on_a_square_canvas_at_the_same_scale(photo: tuple[int, int],
                                                                canvas: tuple[int, int]) -> None:
    """The padding a 512x384 canvas would add beside a square photo is not run: the photo gets the canvas that
    holds it at the full canvas's scale, so it is searched at the same scale as before."""
    got = canvas_for(photo, (512, 384))
    assert got == canvas
    _, ratio = letterbox(Image.new("RGB", photo), got)
    landscape = photo[0] >= photo[1]
    assert ratio == pytest.approx(min(512 / photo[0], 384 / photo[1]) if landscape
                                  else min(384 / photo[0], 512 / photo[1]))
    assert detect.canvases((512, 384)) == [(512, 384), (384, 384)]
    assert detect.canvases(416) == [(416, 416)]


@pytest.mark.parametrize(("photo", "canvas", "ratio"), [
    ((224, 224), (224, 224), 1.0), ((220, 165), (224, 224), 224 / 220), ((341, 256), (384, 256), 1.0),
    ((256, 341), (256, 384), 1.0), ((256, 256), (384, 256), 1.0), ((300, 300), (384, 384), 1.28),
    ((500, 375), (512, 384), 1.024), ((640, 480), (512, 384), 0.8), ((4032, 3024), (512, 384), 512 / 4032)])
def test_a_photo_the_full_canvas_would_enlarge_runs_at_its_own_size(photo: tuple[int, int], canvas: tuple[int, int],
                                                                     ratio: float) -> None:
    """`SMALL_CANVASES`: a thumbnail is not enlarged onto 384x384 (twice the detector's cost for no new pixels); a
    photo the full canvas shrinks, or one no small canvas holds, runs as `canvas_for` always ran it."""
    assert canvas_for(photo, (512, 384), enlarge=False) == canvas
    assert letterbox(Image.new("RGB", photo), canvas)[1] == pytest.approx(ratio)
    if min(512 / max(photo), 384 / min(photo)) <= 1:
        assert canvas_for(photo, (512, 384)) == canvas


def test_closer_looks_judge_a_small_photo_at_the_full_canvas_scale(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 224x224 photo runs on 224x224, but a 70 px hint there gets no closer look: on 384x384 (ratio 1.71) the
    first pass saw it larger than a 140 px window run at LOOK_SIZE would (judged against the own-size pass, such
    windows opened on thumbnails and 4 more of 940 everyday photos said "dog")."""
    photo = (224, 224)
    hint = _raw(photo, {_cell(photo, 8, 10, 10): (0.5, 0.5, math.log(70 / 8), math.log(70 / 8), 0.2, DOG, 0.1)})
    shapes: list[tuple[int, int]] = []

    def model(shape: tuple[int, int]) -> SimpleNamespace:
        shapes.append(shape)
        return SimpleNamespace(run_numpy=lambda x: [(hint if shape == photo else _raw(shape, {}))[None]])

    finder = DogFinder(size=(512, 384), wide=False)
    monkeypatch.setattr(finder, "model", model)
    assert finder.find(Image.new("RGB", photo)) == [] and shapes == [photo]
    # the gain test is what keeps the window closed: judged at the own-size ratio (1.0) it would open
    assert finder.windows(np.zeros((0, 4)), np.array([[105.0, 105, 175, 175]]), np.array([0.02]), (224, 224), 1.0)
    assert not finder.windows(np.zeros((0, 4)), np.array([[105.0, 105, 175, 175]]), np.array([0.02]), (224, 224),
                              detect.full_ratio((224, 224), (512, 384)))


def test_packaged_graph_is_the_upstream_file_and_rewrites_are_cached(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = detect.packaged_graph()
    assert hashlib.sha256(pkg.read_bytes()).hexdigest() == detect.GRAPH_SHA256
    assert (pkg.parent / "LICENSE").is_file() and (pkg.parent / "PROVENANCE.md").is_file()
    assert detect.GRAPH_SHA256 in (pkg.parent / "PROVENANCE.md").read_text()
    assert len(detect.coco_classes()) == 80 and detect.coco_classes()[DOG] == "dog"
    monkeypatch.setenv("DOGBREED_CACHE", str(tmp_path))
    assert detect.sized_graph((416, 416)) == pkg
    out = detect.sized_graph((256, 192))
    assert out.is_relative_to(tmp_path) and detect.sized_graph((256, 192)) == out
    with pytest.raises(ValueError, match="multiples of 32"):
        detect.sized_graph((300, 224))
    with pytest.raises(ValueError, match="COCO"):
        DogFinder(classes=("dog", "wolf"))
    with pytest.raises(ValueError, match="precision"):
        DogFinder(precision="int8")


def test_a_closer_look_finds_boxes_in_photo_pixels(monkeypatch: pytest.MonkeyPatch) -> None:
    """A window's candidates come back shifted by the window's corner; NMS merges them with the first pass's."""
    finder = DogFinder(size=SHAPE)
    window = (200, 100, 392, 292)
    look = _raw((detect.LOOK_SIZE, detect.LOOK_SIZE),
                {_cell((detect.LOOK_SIZE,) * 2, 16, 5, 5): (0.5, 0.5, math.log(4), math.log(4), 0.9, DOG, 0.9)})
    monkeypatch.setattr(finder, "model", lambda shape: SimpleNamespace(run_numpy=lambda x: [look[None]]))
    boxes, scores, ids = finder._look(Image.new("RGB", (640, 480)), window)
    side = 16 * 4 * 192 / detect.LOOK_SIZE  # the window is 192 px: the canvas is LOOK_SIZE px
    centre = 5.5 * 16 * 192 / detect.LOOK_SIZE
    np.testing.assert_allclose(boxes, [[200 + centre - side / 2, 100 + centre - side / 2,
                                        200 + centre + side / 2, 100 + centre + side / 2]], rtol=1e-5)
    assert scores.tolist() == pytest.approx([0.81]) and ids.tolist() == [DOG]


def test_blank_photos_get_no_candidates() -> None:
    finder = default_finder("fp32")
    assert default_finder("fp32") is finder  # one session per process
    for colour in ((114, 114, 114), (255, 255, 255), (0, 0, 0)):
        assert finder.find(Image.new("RGB", (640, 480), colour)) == []
    assert finder.find(Image.new("RGB", (300, 900), (128, 128, 128))) == []  # portrait: the transposed canvas
    for size in ((1, 1), (1, 5000), (5000, 1), (7, 3)):  # odd shapes a hostile upload can have: no error
        assert finder.find(Image.new("RGB", size, (128, 128, 128))) == []


def _pasted(real_data: Path, n: int = 4) -> list[tuple[Image.Image, tuple[int, int, int, int]]]:
    """Real dog photos pasted 300 px wide into a grey 640x480 canvas, with the pasted rectangle."""
    files = sorted((real_data / "imagenet-val-dogs").rglob("*.JPEG")) + \
        sorted((real_data / "imagenet-val-dogs").rglob("*.jpg"))
    out = []
    for f in files[::40][:n]:
        dog = load_image(f)
        w, h = 300, min(440, round(300 * dog.height / dog.width))
        canvas = Image.new("RGB", (640, 480), (90, 110, 90))
        canvas.paste(dog.resize((w, h)), (250, 20))
        out.append((canvas, (250, 20, 250 + w, 20 + h)))
    return out


def _on(box: tuple[float, ...], rect: tuple[int, ...]) -> bool:
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    area = (box[2] - box[0]) * (box[3] - box[1])
    return rect[0] <= cx <= rect[2] and rect[1] <= cy <= rect[3] and area >= 0.2 * (rect[2] - rect[0]) * (
        rect[3] - rect[1])


@pytest.mark.real
def test_the_mirrored_pass_puts_its_box_on_the_real_dog_too(real_data: Path) -> None:
    """Mapped back, the mirrored pass's dog box lies on the pasted dog, as the first pass's does (a wrong mapping
    would put it on the far side of the 640 px photo, where the 250 px offset leaves only grey)."""
    finder = default_finder("fp32")
    shape = canvas_for((640, 480), finder.size, finder.enlarge)
    on = 0
    for canvas, rect in _pasted(real_data):
        x, ratio = letterbox(canvas, shape)
        boxes, scores, ids = finder._mirrored(x, ratio, shape, canvas.size, detect.SCORE_THRESHOLD)
        dogs = boxes[ids == DOG]
        assert len(dogs), "the mirrored pass found no dog box"
        on += _on(tuple(dogs[np.argmax(scores[ids == DOG])]), rect)
    assert on >= 3


@pytest.mark.real
def test_real_dogs_get_a_box_on_the_dog(real_data: Path) -> None:
    finder = default_finder("fp32")
    photos = _pasted(real_data)
    assert len(photos) == 4
    hits = 0
    for canvas, rect in photos:
        got = finder.find(canvas)
        hits += bool(got) and _on(got[0].box, rect) and got[0].label in detect.CANDIDATE_CLASSES
    assert hits >= 3, hits


@pytest.mark.real
@pytest.mark.skipif(not native_bf16(), reason="no OpenVINO or no native bf16 on this CPU")
def test_bf16_finds_the_same_dogs(real_data: Path) -> None:
    fp32, bf16 = default_finder("fp32"), default_finder("bf16")
    for canvas, _ in _pasted(real_data):
        a, b = fp32.find(canvas), bf16.find(canvas)
        if a and a[0].score > 0.3:
            assert b and b[0].label == a[0].label
            assert max(abs(p - q) for p, q in zip(a[0].box, b[0].box, strict=True)) < 12


@pytest.mark.real
@pytest.mark.slow
def test_cli_default_finds_dogs_only_the_wider_look_sees(real_data: Path, tmp_path: Path) -> None:
    """As a user first runs it: `dogbreed predict` with its default flags on 640x480 photos (larger than the
    detector's canvas) of a dog 110-230 px wide in a busy scene. Four tune-half composites of bench/dogs_in_scene.py
    whose dog the first pass and the closer look miss (checked in bf16 and fp32), JPEGs as a user has them."""
    from typer.testing import CliRunner

    from dogbreed.cli import app
    from dogbreed.predict import Predictor

    bench = _bench()
    wanted = {("medium", 75), ("medium", 276), ("medium", 299), ("small", 180)}
    rects = {}
    for kind in ("medium", "small"):
        for i, scene in enumerate(bench.single_composites(real_data, "tune", kind)):  # type: ignore[attr-defined]
            if (kind, i) in wanted:
                path = tmp_path / f"{kind}_{i}.jpg"
                scene.image.save(path, quality=95)
                rects[path.name] = scene.boxes[0]
            if i >= max(j for k, j in wanted if k == kind):
                break
    assert len(rects) == len(wanted)
    res = CliRunner().invoke(app, ["predict", str(tmp_path), "--format", "json"])
    assert res.exit_code == 0, res.output
    for p in json.loads(res.stdout):
        rect = rects[Path(p["path"]).name]
        assert p["verdict"] != "no_dog" and p["dogs"], p
        box = p["dogs"][0]["box"]
        assert rect[0] <= (box[0] + box[2]) / 2 <= rect[2] and rect[1] <= (box[1] + box[3]) / 2 <= rect[3], (p, rect)
    # The same photos without the wider look (and without the mirrored first pass, which finds some of them too):
    # no dog, so it is those looks that find them.
    predictor = Predictor()
    predictor.loaded.finder.wide = predictor.loaded.finder.mirror = False
    try:
        assert [p.verdict for p in predictor.predict(sorted(tmp_path.glob("*.jpg")))] == ["no_dog"] * len(wanted)
    finally:
        predictor.loaded.finder.wide = predictor.loaded.finder.mirror = True  # the process's (`default_finder`)


@pytest.mark.real
@pytest.mark.slow
def test_cli_default_finds_far_dogs_in_a_phone_photo(real_data: Path, tmp_path: Path) -> None:
    """`dogbreed predict` with its default flags on 4032x3024 JPEGs (a phone's photo) of a dog 8-15% of the width:
    three tune-half composites of bench/dogs_in_scene.py whose dog only the large-photo pass finds (checked in fp32).
    Boxes come back in the photo's own pixels, decoded from the file as a user's is."""
    from typer.testing import CliRunner

    from dogbreed.cli import app
    from dogbreed.predict import Predictor

    wanted, rects = (7, 8, 10), {}
    for i, scene in enumerate(_bench().large_composites(real_data, "tune", "small")):  # type: ignore[attr-defined]
        if i in wanted:
            (tmp_path / f"large_{i}.jpg").write_bytes(scene.data)
            rects[f"large_{i}.jpg"] = scene.boxes[0]
        if i >= max(wanted):
            break
    res = CliRunner().invoke(app, ["predict", str(tmp_path), "--format", "json"])
    assert res.exit_code == 0, res.output

    def on_dog(box: list[float], rect: tuple[float, ...]) -> bool:
        return rect[0] <= (box[0] + box[2]) / 2 <= rect[2] and rect[1] <= (box[1] + box[3]) / 2 <= rect[3]

    for p in json.loads(res.stdout):
        rect = rects[Path(p["path"]).name]
        assert p["verdict"] != "no_dog" and p["dogs"] and on_dog(p["dogs"][0]["box"], rect), (p, rect)
    predictor = Predictor()
    predictor.loaded.finder.large = predictor.loaded.finder.mirror = False
    try:  # without the large pass (nor the mirrored first pass, which finds one of them) no box lands on these dogs
        for path in sorted(tmp_path.glob("*.jpg")):
            got = predictor.predict([path])[0]
            assert not any(on_dog(list(d.box), rects[path.name]) for d in got.dogs or []), got
    finally:
        predictor.loaded.finder.large = predictor.loaded.finder.mirror = True  # the process's (`default_finder`)


def test_detection_never_imports_torch() -> None:
    """The CPU prediction path must not pay torch's import (~1.5 s a process on 2 cores)."""
    code = ("import sys\n"
            "from PIL import Image\n"
            "from dogbreed.inference.detect import default_finder\n"
            "default_finder('fp32').find(Image.new('RGB', (640, 480), (40, 90, 160)))\n"
            "default_finder('fp32').find(Image.new('RGB', (480, 640), (40, 90, 160)))\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


# ---------------------------------------------------------------------------------------------------------------
# bench/dogs_in_scene.py: scoring a predictor whose predictions carry `dogs`, on a stub


def _bench() -> object:
    spec = importlib.util.spec_from_file_location("dogs_in_scene", ROOT / "bench" / "dogs_in_scene.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules["dogs_in_scene"] = mod  # dataclasses look their module up while the class is made
    spec.loader.exec_module(mod)
    return mod


def _dog(box: list[float], wnid: str, verdict: str = "dog") -> SimpleNamespace:
    return SimpleNamespace(box=box, dog_probability=0.9, verdict=verdict,
                           breeds=[SimpleNamespace(wnid=wnid, name=wnid, probability=0.8)])


class _Stub:
    """Answers from a table keyed by the image's top-left pixel: what a Predictor with `dogs` would return."""

    def __init__(self, answers: dict[int, SimpleNamespace]):
        self.answers = answers

    def predict_images(self, images: list[Image.Image]) -> list[SimpleNamespace]:
        return [self.answers[im.getpixel((0, 0))[0]] for im in images]


def test_score_predictor_counts_the_dogs_contract() -> None:
    b = _bench()
    im = {k: Image.new("RGB", (800, 500), (k, 0, 0)) for k in range(6)}
    A, B = "n02085620", "n02099601"
    scenes = [
        b.Scene("pair", im[0], [(0, 0, 200, 200), (400, 100, 600, 300)], [A, B]),  # both right
        b.Scene("pair", im[1], [(0, 0, 200, 200), (400, 100, 600, 300)], [A, B]),  # one box, one extra
        b.Scene("single-small", im[2], [(100, 100, 220, 200)], [A]),  # right, with a false extra dog
        b.Scene("single-small", im[3], [(100, 100, 220, 200)], [A]),  # "no dog"
        b.Scene("scene-cat", im[4]),
        b.Scene("uncut", im[5], [(0, 0, 800, 500)], [B]),
    ]
    main = SimpleNamespace
    stub = _Stub({
        0: main(verdict="dog", breeds=[SimpleNamespace(wnid=A)], dogs=[_dog([10, 10, 190, 190], A),
                                                                       _dog([420, 120, 580, 280], B)]),
        1: main(verdict="dog", breeds=[SimpleNamespace(wnid=A)], dogs=[_dog([10, 10, 190, 190], A),
                                                                       _dog([700, 400, 790, 490], B)]),
        2: main(verdict="dog", breeds=[SimpleNamespace(wnid=A)], dogs=[_dog([110, 110, 210, 190], A),
                                                                       _dog([500, 10, 700, 100], B)]),
        3: main(verdict="no_dog", breeds=[SimpleNamespace(wnid=B)], dogs=[]),
        4: main(verdict="no_dog", breeds=[SimpleNamespace(wnid=B)], dogs=[]),
        5: main(verdict="uncertain_breed", breeds=[SimpleNamespace(wnid=B)], dogs=[_dog([0, 0, 800, 500], B)]),
    })
    got = b.score_predictor(stub, scenes, batch=4)
    pair, small = got["pair"], got["single-small"]
    assert pair["photos"] == 2 and pair["exactly_two"] == 2 and pair["boxes_on_both"] == 1
    assert pair["both_named"] == 1 and pair["false_extra_dogs"] == 1 and pair["both_in_top2"] == 0
    assert small["says_dog"] == 1 and small["top1"] == 1 and small["more_than_one_dog"] == 1
    assert small["box_on_dog"] == 1 and small["false_extra_dogs"] == 1
    assert got["scene-cat"]["no_dog"] == 1 and got["uncut"]["top1"] == 1 and got["uncut"]["named"] == 1
    assert got["single-small"]["named"] == 1
    assert got["uncut"]["breed_balanced_top1"] == 1.0
    assert "| pair | 2 |" in b.markdown_predictor(got)
    both: dict = {}
    b.score_predictor(stub, scenes[:3], combined=both)
    b.score_predictor(stub, scenes[3:], combined=both)
    assert {k: t.summary() for k, t in both.items()} == got  # two halves add up to the whole


def test_halves_are_stable_and_split_the_files(tmp_path: Path) -> None:
    b = _bench()
    files = [tmp_path / "web-dogs" / f"n0208-x/{i}.jpg" for i in range(200)]
    halves = [b.half_of(f, tmp_path) for f in files]
    assert halves == [b.half_of(f, tmp_path) for f in files]
    assert 70 < halves.count("tune") < 130
    assert b.assign([[0, 0, 10, 10], [50, 50, 60, 60]], [(48, 48, 70, 70), (0, 0, 12, 12)], "centre") == [1, 0]


def test_pack_composites_and_their_tally(real_data: Path) -> None:
    """Six or eight dogs of different breeds, each inside its own cell of the grid; the tally counts dogs, not
    photos."""
    b = _bench()
    packs = list(b.pack_composites(real_data, "test", limit=2))
    assert [len(p.boxes) for p in packs] == [6, 8] and all(p.image.size == b.PACK_CANVAS for p in packs)
    (W, H), (cols, rows) = b.PACK_CANVAS, b.PACK_GRID
    for p in packs:
        assert len(set(p.wnids)) == len(p.wnids) == len(p.sources)
        cells = {(int(x0) // (W // cols), int(y0) // (H // rows)) for x0, y0, _, _ in p.boxes}
        assert len(cells) == len(p.boxes)  # one dog a cell
        assert all(x1 <= (int(x0) // (W // cols) + 1) * (W // cols) and 150 <= x1 - x0 < 260
                   for x0, _, x1, _ in p.boxes)
    pack = packs[0]
    dogs = [_dog([x0 + 5, y0 + 5, x1 - 5, y1 - 5], w) for (x0, y0, x1, y1), w
            in zip(pack.boxes, pack.wnids, strict=True)]
    dogs[1].breeds[0].wnid = "n00000000"  # one boxed dog misnamed
    answer = SimpleNamespace(verdict="dog", breeds=dogs[0].breeds, dogs=dogs[:5] + [_dog([0, 0, 5, 5], "x")])
    tally = b.PredTally()
    tally.add(answer, pack)
    got = tally.summary()
    assert (got["pack_dogs"], got["dogs_listed"], got["dogs_boxed"], got["dogs_named"]) == (6, 6, 5, 4)
    assert got["all_boxed"] == 0 and got["false_extra_dogs"] == 1


def test_cli_with_default_flags_lists_every_dog_of_a_pack(tmp_path: Path, real_data: Path) -> None:
    """`dogbreed predict PHOTOS --format json` as a user first runs it, on the bench's first eight test-half packs
    of six or eight real dogs: the dogs get boxes of their own, not the five the candidate cap once allowed.

    Which dog of a pack is found moves with the CPU's kernels (bf16 on a Zen 5 EPYC lost two of one pack's six that
    a Zen 4 found, and fp32 finds others), so the test counts over the packs, with room for that: here 50 of the 56
    dogs in bf16 (53 in fp32), three of the four packs of eight with all eight (all four in fp32); with the cap at
    five, no pack of eight could have more than five."""
    from typer.testing import CliRunner

    from dogbreed.cli import app

    b = _bench()
    packs = list(b.pack_composites(real_data, "test", limit=8))
    for i, pack in enumerate(packs):
        pack.image.save(tmp_path / f"pack{i}.jpg", quality=90)
    r = CliRunner().invoke(app, ["predict", *(str(tmp_path / f"pack{i}.jpg") for i in range(len(packs))),
                                 "--format", "json"])
    assert r.exit_code == 0, r.output
    boxed = []
    for row, pack in zip(json.loads(r.stdout), packs, strict=True):
        matched = b.assign([d["box"] for d in row["dogs"]], pack.boxes, "centre")
        boxed.append((len(pack.boxes), len({m for m in matched if m is not None})))
    assert sum(n for n, _ in boxed) == 56 and sum(got for _, got in boxed) >= 48, boxed  # 86%
    assert sum(got > detect.MAX_CANDIDATES for n, got in boxed if n == 8) >= 3, boxed
