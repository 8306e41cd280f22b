"""Per-dog answers (`inference.dogs`) and their rows (`inference.sinks`): which crops are dogs, the main dog, the
photo's own answer, and one row per dog that resumes like one row per photo. No model: scores are given."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dogbreed.breeds import stanford_breeds
from dogbreed.errors import BatchError
from dogbreed.inference import sinks
from dogbreed.inference.detect import SCORE_THRESHOLD
from dogbreed.inference.dogs import answer_photo, crops_needed, deferred_crops, dogs_read_again, rows_read
from dogbreed.inference.regions import MARGIN, Region, crop, view, window
from dogbreed.inference.scoring import Decision, Prediction

CLASSES = list(stanford_breeds())


def _logp(top: int, p: float = 0.9) -> np.ndarray:
    probs = np.full(len(CLASSES), (1 - p) / (len(CLASSES) - 1), np.float32)
    probs[top] = p
    return np.log(probs)


def _two(top: int, p: float, other: int, q: float) -> np.ndarray:
    """Log-probabilities naming ``top`` at ``p`` and ``other`` at ``q``, the rest alike."""
    probs = np.full(len(CLASSES), (1 - p - q) / (len(CLASSES) - 2), np.float32)
    probs[top], probs[other] = p, q
    return np.log(probs)


def _region(box: tuple[int, int, int, int] | None, size: tuple[int, int] = (640, 480), score: float = 0.5,
            label: str = "dog") -> Region:
    if box is None:
        return Region(None, [0, 0, *size], 1.0)
    area = (box[2] - box[0]) * (box[3] - box[1]) / (size[0] * size[1])
    return Region(tuple(map(float, box)), list(box), area, score, label, weak=score < SCORE_THRESHOLD)


def _answer(dog: list[float], logps: list[np.ndarray], boxes: list[tuple[int, int, int, int] | None],
            scores: list[float] | None = None, label: str = "dog") -> Prediction:
    """One photo's answer; every candidate's detector class is ``label``."""
    scores = scores or [0.5] * len(boxes)
    regions = [_region(b, score=s, label=label) for b, s in zip(boxes, scores, strict=True)]
    return answer_photo(np.stack(logps), np.array(dog, np.float32), regions, "x.jpg", CLASSES,
                        Decision(dog_threshold=0.5, uncertain_threshold=0.3), top_k=3)


def test_two_dogs_each_get_their_own_breed_most_prominent_first() -> None:
    p = _answer([0.2, 0.97, 0.99], [_logp(0), _logp(5), _logp(9)],
                [None, (10, 10, 110, 110), (300, 100, 500, 300)])
    assert [d.box for d in p.dogs] == [[300, 100, 500, 300], [10, 10, 110, 110]]  # the larger dog first
    assert [d.breeds[0].name for d in p.dogs] == [CLASSES[9].name, CLASSES[5].name]
    assert p.verdict == "dog" and p.breeds[0].name == CLASSES[9].name  # the photo's answer is the main dog's
    assert p.to_dict()["dogs"][1]["box"] == [10, 10, 110, 110]


def test_a_small_dog_the_whole_photo_misses_is_found() -> None:
    p = _answer([0.05, 0.97], [_logp(3), _logp(7)], [None, (400, 300, 520, 400)])
    assert p.verdict == "dog" and p.dog_probability == pytest.approx(0.97)
    assert len(p.dogs) == 1 and p.breeds[0].name == CLASSES[7].name  # a small crop alone: not the background's


def test_a_large_lone_dog_also_reads_the_whole_photo() -> None:
    p = _answer([0.99, 0.97], [_two(1, 0.8, 2, 0.15), _two(2, 0.6, 1, 0.3)], [None, (0, 0, 600, 450)])
    names = [b.name for b in p.breeds[:2]]
    assert names == [CLASSES[1].name, CLASSES[2].name]  # the mean of both rows: 0.8 and 0.3 beat 0.15 and 0.6
    assert p.dog_probability == pytest.approx(0.99)


def test_a_large_dog_keeps_its_own_breed_when_the_whole_photo_shows_another_dog() -> None:
    """A Border collie's box (a third of the photo) beside a Samoyed puppy the detector missed was captioned
    "Samoyed 73%": the whole photo, all Samoyed, outvoted the crop. When each row gives the other's top breed under
    `OTHER_DOG`, they show different dogs and the crop answers alone; a nearer miss still reads both."""
    from dogbreed.inference.dogs import OTHER_DOG

    box = (0, 0, 400, 250)  # 32.6% of 640x480: the whole photo is read
    whole, collie, samoyed = _two(106, 0.99, 81, 0.0003), _two(81, 0.56, 106, 0.008), 106
    p = _answer([0.99, 0.99], [whole, collie], [None, box])
    assert p.breeds[0].name == CLASSES[81].name and p.dogs[0].breeds[0].probability == pytest.approx(0.56, abs=1e-3)
    near = _two(81, 0.56, samoyed, 2 * OTHER_DOG)  # the crop gives the whole photo's breed a little more
    assert _answer([0.99, 0.99], [whole, near], [None, box]).breeds[0].name == CLASSES[samoyed].name
    # The breed cascade re-reads the rows an answer may read, before that test is made on its new scores: the whole
    # photo stays among them, so an answer that does average it in reads a row read as the crop was.
    regions = [_region(None), _region(box)]
    d = Decision(dog_threshold=0.5, uncertain_threshold=0.3)
    assert rows_read(np.stack([whole, collie]), np.array([0.99, 0.99], np.float32), [regions], d) == [0, 1]


def test_no_dog_and_a_refused_cat() -> None:
    p = _answer([0.1, 0.2], [_logp(0), _logp(0)], [None, (100, 100, 300, 300)])
    assert p.verdict == "no_dog" and p.dogs == [] and p.to_dict()["dogs"] == []
    # A crop needs more than the whole photo's threshold: a photo offers several crops to be wrong on.
    assert _answer([0.1, 0.9], [_logp(0), _logp(0)], [None, (100, 100, 300, 300)], label="cat").verdict == "no_dog"


@pytest.mark.parametrize(("label", "score", "crop_dog", "is_dog"), [
    ("dog", 0.5, 0.8, True),  # the detector and the crop head agree
    ("dog", 0.5, 0.6, False),  # under DETECTOR_SURE_CROP
    ("dog", 0.2, 0.8, False),  # the detector unsure: the crop needs CROP_THRESHOLD
    ("cat", 0.5, 0.8, False),  # a cat the detector is sure of
    ("cat", 0.5, 0.97, True),  # a dog the detector called a cat
])
def test_a_box_the_detector_calls_a_dog_needs_a_less_sure_crop(label: str, score: float, crop_dog: float,
                                                                is_dog: bool) -> None:
    p = _answer([0.1, crop_dog], [_logp(0), _logp(4)], [None, (100, 100, 300, 300)], [1.0, score], label)
    assert (p.verdict != "no_dog") is is_dog and len(p.dogs) == int(is_dog)


@pytest.mark.parametrize(("threshold", "crop_dog", "listed"), [
    (0.5, 0.75, 1),  # the default: a crop the detector calls a dog is one from DETECTOR_SURE_CROP
    (0.8, 0.75, 0),  # a raised threshold holds for such crops too
    (0.8, 0.85, 1),
])
def test_a_raised_dog_threshold_lists_no_dog_under_it(threshold: float, crop_dog: float, listed: int) -> None:
    regions = [_region(None), _region((100, 100, 300, 300), score=0.6)]
    p = answer_photo(np.stack([_logp(0), _logp(4)]), np.array([0.1, crop_dog], np.float32), regions, "x.jpg",
                     CLASSES, Decision(dog_threshold=threshold, uncertain_threshold=0.3), top_k=3)
    assert len(p.dogs) == listed and (p.verdict != "no_dog") is bool(listed)
    assert all(d.verdict != "no_dog" for d in p.dogs)


@pytest.mark.parametrize(("threshold", "listed"), [(0.5, 2), (0.9, 1)])
def test_a_raised_dog_threshold_holds_beside_a_dog_too(threshold: float, listed: int) -> None:
    regions = [_region(None), _region((60, 140, 220, 300), score=0.6, label="cat"),
               _region((360, 120, 520, 280), score=0.3, label="cat")]
    p = answer_photo(np.stack([_logp(0), _logp(6), _logp(8)]), np.array([0.3, 0.99, 0.88], np.float32), regions,
                     "x.jpg", CLASSES, Decision(dog_threshold=threshold, uncertain_threshold=0.3), top_k=3)
    assert len(p.dogs) == listed and all(d.verdict != "no_dog" for d in p.dogs)


def test_whole_photo_dog_without_a_dog_crop_keeps_the_best_candidate_box() -> None:
    p = _answer([0.9, 0.3, 0.45], [_logp(4), _logp(0), _logp(0)], [None, (0, 0, 50, 50), (100, 100, 400, 400)])
    assert p.verdict == "dog" and [d.box for d in p.dogs] == [[100, 100, 400, 400]]
    assert p.breeds[0].name == CLASSES[4].name


def test_a_head_inside_its_body_is_not_a_second_dog() -> None:
    p = _answer([0.3, 0.99, 0.97], [_logp(0), _logp(6), _logp(6)], [None, (100, 100, 400, 400), (120, 110, 200, 190)])
    assert len(p.dogs) == 1


def test_a_thing_whose_crop_shows_a_dog_beside_it_is_not_a_second_dog() -> None:
    # A fish beside the dog: the boxes barely overlap, but the fish's square crop is a third the dog, so the crop
    # head calls it "dog".
    p = _answer([0.3, 0.99, 0.99], [_logp(0), _logp(6), _logp(6)], [None, (200, 100, 400, 400), (360, 250, 520, 330)])
    assert [d.box for d in p.dogs] == [[200, 100, 400, 400]]
    # Further out, the dog is a sixth of the fish's crop (16%): still the dog seen again.
    p = _answer([0.3, 0.99, 0.99], [_logp(0), _logp(6), _logp(6)], [None, (200, 100, 400, 400), (390, 250, 550, 330)])
    assert [d.box for d in p.dogs] == [[200, 100, 400, 400]]
    # Two dogs side by side, boxes touching, each crop showing a little of the other: both stay.
    p = _answer([0.3, 0.99, 0.99], [_logp(0), _logp(6), _logp(8)], [None, (100, 100, 300, 300), (300, 100, 500, 300)])
    assert len(p.dogs) == 2 and {d.breeds[0].name for d in p.dogs} == {CLASSES[6].name, CLASSES[8].name}


@pytest.mark.parametrize(("scores", "listed"), [((0.93, 0.77), 2), ((0.93, 0.5), 1), ((0.5, 0.93), 1)])
def test_two_dogs_touching_one_taller_are_two_when_the_detector_is_sure_of_both(scores: tuple[float, float],
                                                                                listed: int) -> None:
    """A golden retriever beside a shorter springer, touching: the golden's box covers 24% of the springer's square
    crop, so the springer was taken for the golden seen again and dropped, although the detector found both at
    0.93 and 0.77. Two boxes the detector is sure of are two animals; a box it doubts is still the dog seen again
    (a thing beside the dog, whose crop shows half of it), whichever of the two it is."""
    p = _answer([0.3, 0.99, 0.99], [_logp(0), _logp(6), _logp(8)], [None, (100, 50, 300, 450), (300, 250, 420, 450)],
                [1.0, *scores])
    assert len(p.dogs) == listed and p.dogs[0].box == [100, 50, 300, 450]
    # a sure cat beside the dog, its crop showing half the dog, is still that dog seen again
    regions = [_region(None), _region((100, 50, 300, 450), score=scores[0]),
               _region((300, 250, 420, 450), score=scores[1], label="cat")]
    cat = answer_photo(np.stack([_logp(0), _logp(6), _logp(6)]), np.array([0.3, 0.99, 0.99], np.float32), regions,
                       "x.jpg", CLASSES, Decision(dog_threshold=0.5, uncertain_threshold=0.3), top_k=3)
    assert len(cat.dogs) == 1
    if listed == 2:
        assert [d.breeds[0].name for d in p.dogs] == [CLASSES[6].name, CLASSES[8].name]


@pytest.mark.parametrize(("score", "listed"), [(0.3, 2), (0.03, 1)])
def test_a_weak_box_beside_a_dog_needs_a_crop_freer_of_it(score: float, listed: int) -> None:
    # The dog covers 12% of the tall box's square crop: a candidate the detector is sure of is a second dog, one it
    # kept only beside the sure dog (under its own threshold) is a stretch of scene that shows the dog.
    p = _answer([0.3, 0.99, 0.99], [_logp(0), _logp(6), _logp(8)], [None, (100, 100, 300, 300), (340, 60, 460, 340)],
                [1.0, 0.6, score])
    assert len(p.dogs) == listed and p.dogs[0].box == [100, 100, 300, 300]


def test_a_weak_box_round_both_dogs_does_not_hide_them() -> None:
    # The detector's weak box round two dogs is the largest, and its crop shows dogs: it is a group, not a dog.
    boxes = [None, (40, 40, 600, 440), (60, 100, 300, 400), (340, 80, 580, 420)]
    p = _answer([0.6, 0.99, 0.99, 0.98], [_logp(0), _logp(2), _logp(6), _logp(8)], boxes, [1.0, 0.1, 0.6, 0.7])
    assert [d.box for d in p.dogs] == [[340, 80, 580, 420], [60, 100, 300, 400]]
    assert [d.breeds[0].name for d in p.dogs] == [CLASSES[8].name, CLASSES[6].name]
    # One surer box inside a larger one is a head inside its body: the body stays the dog, the head no second dog.
    p = _answer([0.6, 0.99, 0.99], [_logp(0), _logp(6), _logp(6)], [None, (100, 100, 400, 400), (120, 110, 200, 190)],
                [1.0, 0.4, 0.8])
    assert [d.box for d in p.dogs] == [[100, 100, 400, 400]]


def test_a_weak_box_over_part_of_a_far_surer_dog_gives_way_to_it() -> None:
    # A weak box over a stretch of scene and the top of a dog is listed first for its area (its crop shows the dog)
    # and would hide the dog itself as "seen again"; the dog, 8x as sure at the detector, takes its place.
    boxes = [None, (65, 287, 273, 409), (116, 382, 218, 478), (459, 108, 568, 220)]
    p = _answer([0.6, 0.99, 0.99, 0.99], [_logp(0), _logp(2), _logp(6), _logp(8)], boxes, [1.0, 0.08, 0.63, 0.5])
    assert sorted(d.box for d in p.dogs) == [[116, 382, 218, 478], [459, 108, 568, 220]]
    # As sure as the box, the dog is still its part: a head in its body does not take the body's place.
    p = _answer([0.6, 0.99, 0.99, 0.99], [_logp(0), _logp(2), _logp(6), _logp(8)], boxes, [1.0, 0.4, 0.63, 0.5])
    assert sorted(d.box for d in p.dogs) == [[65, 287, 273, 409], [459, 108, 568, 220]]


@pytest.mark.parametrize(("crop_dog", "score", "box", "listed"), [
    (0.9, 0.3, (360, 120, 520, 280), 2),  # a second dog whose crop is less sure: listed, after the sure one
    (0.8, 0.3, (360, 120, 520, 280), 1),  # under BESIDE_A_DOG
    (0.9, 0.05, (360, 120, 520, 280), 1),  # the detector barely sees it
    (0.9, 0.3, (300, 0, 640, 480), 1),  # a stretch of scene far larger than the dog
])
def test_beside_a_sure_dog_a_second_dog_needs_a_less_sure_crop(crop_dog: float, score: float,
                                                               box: tuple[int, int, int, int], listed: int) -> None:
    boxes = [None, (60, 140, 220, 300), box]
    p = _answer([0.3, 0.99, crop_dog], [_logp(0), _logp(6), _logp(8)], boxes, [1.0, 0.6, score], "cat")
    assert [d.box for d in p.dogs][:1] == [[60, 140, 220, 300]] and len(p.dogs) == listed
    assert p.breeds[0].name == CLASSES[6].name
    # Without the sure dog, the same crop is no dog: photos with no dog never reach the lower threshold.
    alone = _answer([0.3, crop_dog], [_logp(0), _logp(8)], [None, box], [1.0, score], "cat")
    assert alone.verdict == "no_dog" and alone.dogs == []


@pytest.mark.parametrize(("whole_sure", "want"), [(0.8, 1), (0.4, 2)])
def test_a_lone_small_dog_reads_the_whole_photo_when_it_is_sure(whole_sure: float, want: int) -> None:
    p = _answer([0.9, 0.97], [_two(1, whole_sure, 2, 0.1), _two(2, 0.6, 1, 0.3)], [None, (100, 100, 300, 250)])
    assert p.breeds[0].name == CLASSES[want].name  # sure: the mean of both rows; else the crop alone


@pytest.mark.parametrize(("box", "crop_dog", "is_dog"), [((300, 200, 330, 230), 0.97, False),
                                                        ((300, 200, 330, 230), 0.995, True),
                                                        ((300, 200, 400, 300), 0.97, True)])
def test_a_tiny_crop_needs_more_to_be_a_dog(box: tuple[int, int, int, int], crop_dog: float, is_dog: bool) -> None:
    # A 30 px golfer or flag, blown up to the members' input, looks like anything: it needs a surer crop.
    p = _answer([0.02, crop_dog], [_logp(0), _logp(3)], [None, box])
    assert (p.verdict != "no_dog") is is_dog and len(p.dogs) == int(is_dog)


def _pred(path: str, n_dogs: int) -> Prediction:
    p = _answer([0.2] + [0.99] * n_dogs, [_logp(0)] + [_logp(i + 1) for i in range(n_dogs)],
                [None] + [(10 + 100 * i, 10, 90 + 100 * i, 90) for i in range(n_dogs)])
    p.path = path
    return p


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_per_dog_rows_resume_by_photo(tmp_path: Path, suffix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
        monkeypatch.setattr(sinks, "PART_ROWS", 2)  # parts end between photos, never inside one
    out = tmp_path / f"r{suffix}"
    preds = [_pred("a.jpg", 3), _pred("b.jpg", 0), _pred("c.jpg", 2)]
    w = sinks.RowWriter(out, 3, per_dog=True)
    w.write(preds[:2])
    w.close()
    w = sinks.RowWriter(out, 3, per_dog=True)
    assert w.done == 2 and list(w.done_paths()) == ["a.jpg", "b.jpg"]
    w.check_resumable(["a.jpg", "b.jpg", "c.jpg"], 3)
    w.write(preds[2:])
    w.close()
    rows = (list(csv.DictReader(out.open())) if suffix == ".csv" else
            __import__("pyarrow.parquet").parquet.read_table(out).to_pylist())
    assert [(r["path"], str(r["dog"] or "")) for r in rows] == [
        ("a.jpg", "1"), ("a.jpg", "2"), ("a.jpg", "3"), ("b.jpg", ""), ("c.jpg", "1"), ("c.jpg", "2")]
    assert {str(r["dogs"]) for r in rows if r["path"] == "a.jpg"} == {"3"}


def test_per_dog_csv_cut_mid_photo_is_redone(tmp_path: Path) -> None:
    out = tmp_path / "r.csv"
    w = sinks.RowWriter(out, 3, per_dog=True)
    w.write([_pred("a.jpg", 1), _pred("b.jpg", 3)])
    w.close()
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:-1]))  # b.jpg lost its last dog: an interrupted write
    w = sinks.RowWriter(out, 3, per_dog=True)
    assert w.done == 1 and list(w.done_paths()) == ["a.jpg"]
    w.close()
    assert [r["path"] for r in csv.DictReader(out.open())] == ["a.jpg"]


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
@pytest.mark.parametrize("first_per_dog", [False, True])
def test_a_resume_that_switches_per_dog_is_refused(tmp_path: Path, suffix: str, first_per_dog: bool) -> None:
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    out = tmp_path / f"r{suffix}"
    w = sinks.RowWriter(out, 3, dogs=True, per_dog=first_per_dog)
    w.write([_pred("a.jpg", 2), _pred("b.jpg", 1)])
    w.close()
    with pytest.raises(BatchError, match="with --per-dog" if first_per_dog else "one row per photo"):
        sinks.RowWriter(out, 3, dogs=True, per_dog=not first_per_dog)
    w = sinks.RowWriter(out, 3, dogs=True, per_dog=first_per_dog)  # the same way: resumes
    assert w.done == 2
    w.close()


def test_a_file_whose_only_photo_of_several_dogs_is_the_last_resumes_either_way(tmp_path: Path) -> None:
    out = tmp_path / "r.csv"
    w = sinks.RowWriter(out, 3, dogs=True)
    w.write([_pred("a.jpg", 1), _pred("b.jpg", 2)])
    w.close()
    w = sinks.RowWriter(out, 3, dogs=True, per_dog=True)  # b.jpg's one row reads as a photo cut short: redone
    assert w.done == 1
    w.write([_pred("b.jpg", 2)])
    w.close()
    assert [(r["path"], r["dog"]) for r in csv.DictReader(out.open())] == [("a.jpg", "1"), ("b.jpg", "1"),
                                                                          ("b.jpg", "2")]


@pytest.mark.parametrize(("top_k", "dogs", "why"), [(1, True, "--top-k 3"), (3, False, "dogs of each photo")])
def test_a_jsonl_resume_asked_another_way_is_refused(tmp_path: Path, top_k: int, dogs: bool, why: str) -> None:
    out = tmp_path / "r.jsonl"
    w = sinks.RowWriter(out, 3, dogs=True)
    w.write([Prediction("x.jpg", "error", 0.0, [], error="empty file"), _pred("a.jpg", 2)])
    w.close()
    with pytest.raises(BatchError, match=why):
        sinks.RowWriter(out, top_k, dogs=dogs)
    assert sinks.RowWriter(out, 3, dogs=True).done == 2
    out.write_text('{"path": "a.jpg"}\nnot json\n')
    with pytest.raises(BatchError, match="line 2 is not JSON"):
        sinks.RowWriter(out, 3, dogs=True)


def test_a_column_mismatch_says_what_differs(tmp_path: Path) -> None:
    out = tmp_path / "r.csv"
    w = sinks.RowWriter(out, 120)
    w.write([_pred("a.jpg", 1)])
    w.close()
    with pytest.raises(BatchError) as e:
        sinks.RowWriter(out, 3)
    msg = str(e.value)
    assert "365 columns, this run writes 14" in msg and "and 347 more" in msg and len(msg) < 400


def test_rows_read_are_each_dogs_crop_and_the_whole_photo_only_where_an_answer_reads_it() -> None:
    decision = Decision(dog_threshold=0.5, uncertain_threshold=0.3)
    photos = [  # (dog probabilities, row-0 surety, boxes)
        ([0.2, 0.97, 0.99, 0.6], 0.9, [None, (10, 10, 110, 110), (300, 100, 500, 300), (500, 0, 600, 60)]),
        ([0.99, 0.97], 0.6, [None, (0, 0, 600, 450)]),  # close up: the whole photo is averaged in
        ([0.9, 0.3], 0.9, [None, (400, 300, 520, 400)]),  # no crop is a dog: the whole photo answers
    ]
    regions = [[_region(b) for b in boxes] for _, _, boxes in photos]
    dog = np.array([d for ds, _, _ in photos for d in ds], np.float32)
    logp = np.stack([_logp(0, p if i == 0 else 0.9) for _, p, boxes in photos for i in range(len(boxes))])
    # photo 1: its two dog crops (rows 1, 2), not the weak third candidate (3) nor the whole photo of two dogs (0);
    # photo 2: the close-up dog's crop (5) and the whole photo (4); photo 3: the whole photo alone (6).
    assert sorted(rows_read(logp, dog, regions, decision)) == [1, 2, 4, 5, 6]


def _random_photo(rng: np.random.Generator) -> tuple[list[Region], np.ndarray, np.ndarray]:
    """A photo with 2-6 candidates, most of them piled on one dog (heads, bodies, scenery around it) so that many
    are deferred, with random detector scores, labels, weak flags and crop dog probabilities."""
    cx, cy, half = rng.uniform(150, 490), rng.uniform(120, 360), rng.uniform(40, 140)
    regions = [_region(None)]
    for _ in range(rng.integers(2, 7)):
        jitter, grow = rng.uniform(-0.6, 0.6, 2) * half, rng.uniform(0.4, 1.3, 2) * half
        x0, y0 = cx + jitter[0] - grow[0], cy + jitter[1] - grow[1]
        box = tuple(int(np.clip(v, 0, m)) for v, m in zip((x0, y0, x0 + 2 * grow[0], y0 + 2 * grow[1]),
                                                            (640, 480, 640, 480), strict=True))
        if box[2] - box[0] < 8 or box[3] - box[1] < 8:
            continue
        regions.append(_region(box, score=float(rng.choice([0.02, 0.08, 0.2, 0.4, 0.7])),  # type: ignore[arg-type]
                               label=str(rng.choice(["dog", "cat", "bear"]))))
    regions[1:] = sorted(regions[1:], key=lambda r: -r.area * r.score)  # the finder's order
    dog = rng.choice([0.01, 0.5, 0.8, 0.9, 0.96, 0.99, 1.0], len(regions)).astype(np.float32)
    logp = np.stack([_logp(int(rng.integers(len(CLASSES))), float(rng.uniform(0.2, 0.99))) for _ in regions])
    return regions, dog, logp


def test_a_deferred_crop_left_unrun_never_changes_the_answer() -> None:
    """`deferred_crops` + `crops_needed`: the crops the predictor skips (their dog probability 0, their breeds
    anything) give the very answer running every crop gives, on random photos; and skipping does happen."""
    rng = np.random.default_rng(0)
    decision = Decision(dog_threshold=0.5, uncertain_threshold=0.3)
    skipped = photos = 0
    for _ in range(3000):
        regions, dog, logp = _random_photo(rng)
        deferred = deferred_crops(regions)
        skip = sorted(set(deferred) - set(crops_needed(dog, regions, deferred, decision)))
        if not skip:
            continue
        photos, skipped = photos + 1, skipped + len(skip)
        full = answer_photo(logp, dog, regions, "x.jpg", CLASSES, decision, top_k=3)
        dog2, logp2 = dog.copy(), logp.copy()
        dog2[skip], logp2[skip] = 0.0, _logp(0)
        assert answer_photo(logp2, dog2, regions, "x.jpg", CLASSES, decision, top_k=3).to_dict() == full.to_dict()
        assert rows_read(logp2, dog2, [regions], decision) == rows_read(logp, dog, [regions], decision)
    assert photos > 300 and skipped > photos


def test_crops_are_deferred_only_behind_the_surest_candidate_and_run_when_it_is_no_dog() -> None:
    body, head = (100, 100, 400, 400), (150, 120, 260, 230)
    regions = [_region(None), _region(body, score=0.6), _region(head, score=0.3)]
    assert deferred_crops(regions) == [2]  # the head is a part of the body
    decision = Decision(dog_threshold=0.5, uncertain_threshold=0.3)
    assert crops_needed(np.array([0.9, 0.99, 0.0]), regions, [2], decision) == []
    assert crops_needed(np.array([0.9, 0.4, 0.0]), regions, [2], decision) == [2]  # the body is no dog: run it
    surer_head = [_region(None), _region(body, score=0.3), _region(head, score=0.6)]
    assert deferred_crops(surer_head) == []  # a surer part may take the body's place (`SURER`)
    apart = [_region(None), _region(body, score=0.6), _region((450, 100, 600, 250), score=0.3)]
    assert deferred_crops(apart) == []  # a dog beside it: always looked at
    # A weaker box holding the head could count it towards a group (`GROUP`) once it is a dog: looked at too.
    group = [_region(None), _region(body, score=0.6), _region((120, 90, 460, 420), score=0.1),
             _region(head, score=0.3)]
    assert deferred_crops(group) == [2]  # the weak box itself may wait (the body hides it), not the head


@pytest.mark.parametrize(("score", "label", "hidden"), [(0.6, "dog", True), (0.2, "dog", False), (0.6, "cat", False)])
def test_a_crop_does_not_show_the_sure_dog_beside_it(score: float, label: str, hidden: bool) -> None:
    img = Image.new("RGB", (400, 200), (90, 90, 90))
    img.paste((0, 200, 0), (60, 50, 200, 150))  # this dog
    img.paste((0, 0, 255), (205, 40, 380, 160))  # the one beside it, partly inside this crop's square
    regions = [_region(None, (400, 200)), _region((60, 50, 200, 150), (400, 200), 0.8),
               _region((205, 40, 380, 160), (400, 200), score, label)]
    plain = np.asarray(crop(img, regions[1]))
    seen = np.asarray(view(img, regions, 1))
    blue = (seen == (0, 0, 255)).all(-1)
    assert (plain == (0, 0, 255)).all(-1).any()  # the square does reach the other dog
    assert not blue.any() if hidden else (seen == plain).all()
    assert ((seen == (0, 200, 0)).all(-1) == (plain == (0, 200, 0)).all(-1)).all()  # its own dog is untouched
    assert view(img, regions, 0) is img


def test_a_crop_keeps_a_sure_box_that_it_is_part_of() -> None:
    img = Image.new("RGB", (400, 200), (90, 90, 90))
    img.paste((0, 200, 0), (60, 30, 260, 170))  # the body, a sure dog
    img.paste((0, 0, 255), (100, 40, 140, 80))  # its head, a candidate of its own
    regions = [_region(None, (400, 200)), _region((60, 30, 260, 170), (400, 200), 0.9),
               _region((100, 40, 140, 80), (400, 200), 0.4)]
    assert (np.asarray(view(img, regions, 2)) == np.asarray(crop(img, regions[2]))).all()
    assert (np.asarray(view(img, regions, 1)) == np.asarray(crop(img, regions[1]))).all()


@pytest.mark.parametrize("margin", [MARGIN, 0.04])
def test_a_crop_at_the_photo_edge_keeps_what_its_own_box_shares_with_the_painted_dog(margin: float) -> None:
    """At any margin (`bench/stage_out_of_fold.py --crop-margin` sweeps it), the painting lands where that crop
    shows the dog beside it."""
    img = Image.new("RGB", (400, 200), (90, 90, 90))
    img.paste((0, 200, 0), (0, 50, 140, 150))  # this dog, at the left edge: its square is clipped there
    img.paste((0, 0, 255), (130, 40, 300, 160))  # a sure dog beside it, overlapping its box by 10 px
    regions = [_region(None, (400, 200)), _region((0, 50, 140, 150), (400, 200), 0.8),
               _region((130, 40, 300, 160), (400, 200), 0.9)]
    plain, seen = np.asarray(crop(img, regions[1], margin)), np.asarray(view(img, regions, 1, margin))
    assert plain.shape == seen.shape
    x0, y0 = (max(0, round(c)) for c in window(regions[1].box, margin)[:2])  # the crop's corner in the photo
    own = (slice(50 - y0, 150 - y0), slice(0 - x0, 140 - x0))
    assert (seen[own] == plain[own]).all()  # the 10 px the boxes share stay blue
    assert (plain[own] == (0, 0, 255)).all(-1).any()
    outside = np.ones(seen.shape[:2], bool)
    outside[own] = False
    assert (plain[outside] == (0, 0, 255)).all(-1).any() and not (seen[outside] == (0, 0, 255)).all(-1).any()


def test_every_dog_of_several_and_a_small_lone_dog_are_read_again_and_a_large_lone_dog_is_not() -> None:
    """`dogs_read_again`: in batch rows, the crops of photos listing two or more dogs, and a lone dog's crop when its
    box covers less than `WHOLE_PHOTO_AREA` of the photo; a lone dog filling its photo, a crop that is not a dog and
    the whole photo's row are not among them."""
    two = [_region(None), _region((10, 10, 210, 210)), _region((400, 100, 600, 300)), _region((250, 300, 300, 350))]
    large = [_region(None), _region((40, 20, 600, 460))]  # 80% of the photo: the whole photo joins its answer
    small = [_region(None), _region((100, 100, 300, 300))]  # 13%
    dog = np.array([0.3, 0.99, 0.98, 0.1, 0.9, 0.99, 0.2, 0.99], np.float32)  # rows 0-3, 4-5, 6-7
    decision = Decision(dog_threshold=0.5, uncertain_threshold=0.3)
    assert dogs_read_again(dog, [two, large, small], decision) == [1, 2, 7]
    assert dogs_read_again(dog[[4, 5, 0, 1, 2, 3]], [large, two], decision) == [3, 4]
    assert dogs_read_again(dog[[0, 1, 3]], [[two[0], two[1], two[3]]], decision) == [1]  # one dog left, 13%
    assert dogs_read_again(dog[[6, 3]], [small], decision) == []  # its crop is no dog
