"""Per-dog answers: the rows of one photo (the whole photo, then each candidate's crop) -> a `Prediction` whose
``dogs`` lists every dog found, most prominent first, and whose own verdict and breeds describe the main dog.

The rule, chosen on the tune half of the composites in bench/dogs_in_scene.py (never on the photos it reports):
a candidate is a dog when its crop's dog probability reaches `CROP_THRESHOLD` (the dog-or-not head judges each
crop, so a dog the detector called a cat is kept and a cat is still refused); a crop needs more than the whole
photo's threshold because a photo offers several crops to be wrong on. A main dog whose box covers at
least `WHOLE_PHOTO_AREA` of the photo also keeps the whole photo as evidence (the mean of the two log-probability
rows): close up, the whole photo sees the same dog with more context, also when other dogs are listed; so does a
lone dog when the whole photo alone is sure of a breed (`WHOLE_PHOTO_SURE`). When no
crop is a dog but the whole photo is, the photo still answers "dog", with the most likely candidate's box (or the
whole photo) as the dog's.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..breeds import Breed
from ..dogness import log_softmax
from .regions import Region, box_area, box_overlap, inside, window
from .scoring import BreedScore, Decision, Prediction, decide

# The main dog at least this large also reads the whole photo. Averaging only a lone dog cost 2.1 points of top-1
# on the 733 uncut web-dogs + imagenet-val-dogs photos against the whole photo alone (92.4%); averaging the main
# dog whatever the count, 1.1 (91.3%). Chosen on those photos (in-sample for the shipped heads too): a
# measured step, not a tuned optimum.
WHOLE_PHOTO_AREA = 0.3
# A lone dog with a smaller box also reads the whole photo when that photo alone says "dog" and names a breed at
# least this sure: on the 733 uncut photos (in-sample for the heads) top-1 90.7% -> 91.5% against 92.5% for the
# whole photo alone, with 150-260 px composites (tune half, 120) 80.8% -> 80.0% named and two-dog photos unchanged
# (a second dog keeps the whole photo out: it shows both).
WHOLE_PHOTO_SURE = 0.5
# ... unless the two rows each give the other's top breed under this: then they show different dogs (a second dog
# the detector missed fills the whole photo), and the crop answers for its own box alone. A Border collie's box
# beside an unfound Samoyed puppy was captioned "Samoyed 73%" (its crop: Border collie 56%, Samoyed 0.8%; the
# whole photo: Border collie 0.03%). Of the 697 uncut photos that read the whole photo (in-sample heads), none
# comes near it: the least such pair of probabilities is 4.3% and 2.7%. A level, not a tuned optimum.
OTHER_DOG = 0.01
# Tune half (200 photos each): at the whole photo's 0.5, crops made 1.5% of cats and 2% of everyday photos "dog";
# at 0.95, 0.5% and 0.5%, while 87% of 150-260 px dogs (89% at 0.5) and 98% of larger ones are still found.
CROP_THRESHOLD = 0.95
# A crop of a box under SMALL_BOX pixels (its longer side, in the decoded photo) is a blur at the members' input
# size, and the head calls a golfer, a flag or a parachutist 20-40 px tall "dog" at 0.96-0.99: such a crop needs
# SMALL_CROP_THRESHOLD. On the 940 everyday photos, photos said "dog" 6 -> 3 (whole photo alone: 3); on the tune
# half's composites 8 of the 27 dog crops under 48 px fall below 0.99 (150-260 px composites: none of 5).
SMALL_BOX = 48
SMALL_CROP_THRESHOLD = 0.99
# A box the detector itself calls "dog" at DETECTOR_SURE or more is a dog from a crop probability of
# DETECTOR_SURE_CROP: two models agree. Tune half (bench/dog_rules.py), 360 one-dog photos a kind: said "dog"
# 337 -> 340 (150-260 px) and 299 -> 302 (100-150 px), everything else unchanged, cats (243) and everyday photos
# (467) too; most small dogs still missed (15 of the 20 150-260 px ones) have no candidate at all. At 0.2 / 0.5 a
# cat became a dog.
DETECTOR_SURE = 0.3
DETECTOR_SURE_CROP = 0.7
# A dog box this much inside a more prominent one, or overlapping it this much (IoU), is a part of that dog (a head,
# a body) and not a second dog: on the tune half these took "more than one dog" on single-dog composites from 20%
# to 14%, and exactly-two on two-dog photos from 53% to 56%.
CONTAINED = 0.5
OVERLAP = 0.2
# A further dog's crop (the square `regions.window` around its box) at least this much covered by a more
# prominent dog's box is that dog seen again: a fish, a saxophone or a paraglider beside a dog, whose crop shows
# half the dog, is called "dog" by the crop head. Tune half, 120 photos a kind, 512x384 detector: 150-260 px
# single dogs listed as more than one 12.5% -> 6.7% (most of the rest: source photos that do hold two dogs),
# two-dog photos listed as exactly two 67.5% -> 78.3%, with a box on both 79.2% -> 77.5%. Two dogs side by
# side, boxes touching, cover about a tenth of each other's crop. 0.15 since: retuned on the whole tune half with
# the rules below it (180 two-dog photos, 360 a kind of one-dog photo, 360 uncut): one-dog photos listing more than
# one dog 23 -> 11 (150-260 px) and 41 -> 29 (260-400 px), uncut 19 -> 13, two-dog photos listed as exactly two
# 141 either way, a box on each 151 -> 150 (at 0.1: 10, 22, 10, 143 and 147; 0.3 lost 11 pairs; bench/dog_rules.py).
SEEN_AGAIN = 0.15
# A candidate the detector kept only beside a sure dog (`Region.weak`: under the finder's threshold, down to
# `detect.SECOND_SCORE`) is that dog seen again already when the dog covers SEEN_AGAIN_WEAK of its crop: such weak
# boxes are more often a stretch of scene next to the dog than a second dog. Tune half: 260-400 px one-dog photos
# listing more than one dog 39 -> 32 of 360 (31 without the weak boxes), two-dog photos unchanged.
SEEN_AGAIN_WEAK = 0.1
# Two candidates the detector both scores SEEN_AGAIN_SURE or more are two animals, not one seen again (only the
# part rules, `CONTAINED` and `OVERLAP`, still apply): two real dogs touching or overlapping a little, one taller
# than the other, cover 16-25% of the smaller one's crop, and it was dropped although the detector found both at
# 0.77-0.93. A weak box beside a sure dog (a chain, a flamingo whose crop shows half the dog) is still hidden, or
# replaced by the dog (`SURER`). Chosen on the tune half (60 photos a kind, among 0.3 / 0.5 / 0.7: lower listed
# parts of one dog); test half, 100 a kind (bench/results/dogs_in_scene_seen_again_*.json): every count unchanged
# but photos listing more than one dog, uncut 1 -> 4 and 260-400 px 5 -> 6, each a real second dog of the photo.
SEEN_AGAIN_SURE = 0.7
NOT_TAKEN_FOR_A_DOG = ("cat", "teddy bear")
# A candidate box holding GROUP or more surer dog candidates (at least CONTAINED of each box inside it, each with a
# higher detector score, `_holds_surer`) is a box round a group, not a dog: listed first for its area, it hid the
# dogs inside it as its parts. Tune half, two-dog photos (180), the four most prominent candidates without this rule
# -> the surest five with it: a box on each 134 -> 143, exactly two 135 -> 139, both named 95 -> 102 (the
# prominent five without it: 136 / 134 / 96). Counting one surer candidate inside already (GROUP 1)
# gained 2 more pairs but shrank the box of some uncut dogs to a surer head inside the body (uncut photos, 180,
# whose main box covers half the photo: 114 -> 108; 113 at GROUP 2). Requiring further dogs to score 0.08-0.1 at
# the detector cut false extras but lost more real second dogs (exactly two 97 -> 93 of 120): not kept.
GROUP = 2
# A dog the detector is at least SURER times as sure of as every box that would hide it (as a part or as seen again)
# takes their place: a weak box over a stretch of scene and part of a dog comes first for its area, its crop is
# called "dog" for the dog it shows, and it hid the dog itself. Tune half, 180 two-dog photos: a box on each
# 146 -> 151, both named 103 -> 109; 360 uncut photos: top-1 336 either way, main boxes covering half the photo
# 213 -> 211 (x1: 206, more heads taking their body's place; x3, x5: no better on pairs).
SURER = 2.0
# Beside a dog already found (a crop at `CROP_THRESHOLD`), a further candidate the detector gives at least
# BESIDE_A_DOG_SCORE counts as a dog from a crop probability of BESIDE_A_DOG: a second dog's crop, cut close beside
# the first, often shows part of the first and scores 0.85-0.95, and CROP_THRESHOLD is there for photos with no dog
# at all (cats, everyday photos), which this never reaches. Dogs found this way come after the others, and only
# up to BESIDE_A_DOG_AREA times the largest dog's box (a stretch of scene beside a dog is often larger). Tune half
# (bench/dog_rules.py), with SEEN_AGAIN 0.15: 180 two-dog photos listed as exactly two 141 -> 147, a box on each
# 150 -> 157, both named 116 -> 121; one-dog 150-260 px photos listing more than one dog 11 -> 13 of 360; a detector
# score of 0.05 instead of 0.1 listed more extra dogs (uncut 16 of 360 against 14), 0.15 found fewer (145 pairs).
BESIDE_A_DOG = 0.85
BESIDE_A_DOG_SCORE = 0.1
BESIDE_A_DOG_AREA = 2.0


@dataclass
class Dog:
    """One dog in a photo: its box in the photo's pixels (x0, y0, x1, y1, after EXIF rotation) and its answer."""

    box: list[int]
    dog_probability: float
    verdict: str
    breeds: list[BreedScore]
    several_breeds_likely: bool = False
    explanation: str | None = None  # the heat-map of this dog, with --explain
    look_alikes: list[dict[str, Any]] | None = None  # with --gallery
    row: int = field(default=0, repr=False)  # its row among the photo's regions (0: the whole photo)

    def to_dict(self) -> dict[str, Any]:
        d = {"box": self.box, "dog_probability": self.dog_probability, "verdict": self.verdict,
             "breeds": [vars(b).copy() for b in self.breeds], "several_breeds_likely": self.several_breeds_likely}
        for k in ("explanation", "look_alikes"):
            if getattr(self, k) is not None:
                d[k] = getattr(self, k)
        return d


def answer_photos(logp: np.ndarray, dog: np.ndarray, regions: Sequence[list[Region]], paths: Sequence[str | None],
                  classes: Sequence[Breed], decision: Decision, top_k: int) -> list[Prediction]:
    """Rows of a batch (each photo's regions in order) -> one `Prediction` per photo, with its dogs."""
    out, start = [], 0
    for path, found in zip(paths, regions, strict=True):
        rows = slice(start, start + len(found))
        out.append(answer_photo(logp[rows], dog[rows], found, path, classes, decision, top_k))
        start += len(found)
    return out


def rows_read(logp: np.ndarray, dog: np.ndarray, regions: Sequence[Sequence[Region]],
              decision: Decision) -> list[int]:
    """The rows of a batch whose breeds an answer may read (`answer_photo`): each dog's crop, and the whole photo
    where it answers or may be averaged in; the breed cascade re-reads only these."""
    out = []
    for start, found, kept in _dogs_of_each_photo(dog, regions, decision):
        rows = slice(start, start + len(found))
        whole = not kept or _reads_whole_photo(logp[rows], dog[rows], found, kept, decision, other_dog=False)
        out += [start + i for i in ([0] if whole else []) + kept]
    return out


def dogs_read_again(dog: np.ndarray, regions: Sequence[Sequence[Region]], decision: Decision) -> list[int]:
    """The crop rows the breed cascade reads again whether Lite0 is sure of them or not: every dog of a photo that
    lists two or more, and a lone dog whose box covers less than `WHOLE_PHOTO_AREA` of its photo. Such a crop shows
    a dog cut from a scene, with the whole photo not (or not always) joining its answer, and Lite0 alone names it
    less often than a dog filling its photo; `best`'s ensemble mends more of these than it breaks. Out of fold
    (bench/stage_out_of_fold.py, both halves, bf16, 200 composites a kind), before -> several dogs -> lone small
    dogs too: two-dog photos with both breeds named 112 -> 118 -> 118 of 200; 260-400 px lone dogs named
    157 -> 157 -> 162; 150-260 px 152 throughout; uncut photos top-1 614 -> 614 -> 616 of 733 (breed-balanced 83.8%
    -> 84.0%). Nothing tuned: the rule and its area are the answer's own. Only photos with such dogs pay: none of
    the 940 everyday photos or 489 cats lists two dogs, and 3 and 2 of them say "dog" at all."""
    return [start + i for start, found, kept in _dogs_of_each_photo(dog, regions, decision)
            if len(kept) >= 2 or (kept and found[kept[0]].area < WHOLE_PHOTO_AREA) for i in kept]


def _dogs_of_each_photo(dog: np.ndarray, regions: Sequence[Sequence[Region]], decision: Decision,
                        ) -> Iterator[tuple[int, Sequence[Region], list[int]]]:
    """Per photo of a batch: its first row, its regions and the rows (within the photo) `answer_photo` lists as
    dogs."""
    start = 0
    for found in regions:
        yield start, found, _dogs_among(dog[start:start + len(found)], found, decision)
        start += len(found)


def _reads_whole_photo(logp: np.ndarray, dog: np.ndarray, regions: Sequence[Region], kept: Sequence[int],
                       decision: Decision, other_dog: bool = True) -> bool:
    """Whether the main dog also reads the whole photo: close up, or a lone dog the whole photo is sure of; and
    never when the whole photo shows another dog than the box (`OTHER_DOG`; ``other_dog`` False: whether it may,
    before the breed cascade re-reads the crop, which can move that test either way)."""
    whole, crop = logp[0], logp[kept[0]]
    if other_dog and crop[whole.argmax()] < np.log(OTHER_DOG) and whole[crop.argmax()] < np.log(OTHER_DOG):
        return False
    return regions[kept[0]].area >= WHOLE_PHOTO_AREA or (
        len(kept) == 1 and dog[0] >= decision.dog_threshold and np.exp(logp[0].max()) >= WHOLE_PHOTO_SURE)


def answer_photo(logp: np.ndarray, dog: np.ndarray, regions: Sequence[Region], path: str | None,
                 classes: Sequence[Breed], decision: Decision, top_k: int) -> Prediction:
    """One photo's rows (row 0 the whole photo, then one per candidate) -> its `Prediction` with ``dogs``."""
    kept = _dogs_among(dog, regions, decision)
    if not kept:
        (whole,) = decide(logp[:1], dog[:1], [path], classes, decision, top_k)
        if whole.verdict == "no_dog":
            whole.dogs = []
            return whole
        box = regions[int(np.argmax(dog[1:])) + 1].photo_box if len(regions) > 1 else regions[0].photo_box
        whole.dogs = [_dog(whole, box, 0)]
        return whole
    rows, dogp = logp[kept].copy(), dog[kept].copy()
    i = kept[0]
    if _reads_whole_photo(logp, dog, regions, kept, decision):  # the main dog, close up: the whole photo sees it too
        rows[0] = log_softmax((logp[0] + logp[i])[None] / 2)[0]
        dogp[0] = max(dog[0], dog[i])
    answers = decide(rows, dogp, [path] * len(kept), classes, decision, top_k)
    main = answers[0]
    main.dogs = [_dog(a, regions[i].photo_box, i) for a, i in zip(answers, kept, strict=True)]
    return main


def _dogs_among(dog: np.ndarray, regions: Sequence[Region], decision: Decision) -> list[int]:
    """Candidate rows whose crop is a dog, most prominent (area x dog probability) first, without the parts of a
    dog already kept (a head box inside the body's box) unless the part is far surer (`SURER`). A box the detector
    itself calls a dog needs a less sure crop (`DETECTOR_SURE`), and so does a candidate beside a dog already found
    (`BESIDE_A_DOG`), but never less than the photo's own threshold: a dog listed is a dog by its verdict too."""
    def surest(i: int) -> float:
        return _crop_threshold(regions[i], decision)

    rows = [i for i in range(1, len(regions)) if dog[i] >= surest(i)]
    rows = [i for i in rows if sum(_holds_surer(regions[i], regions[j]) for j in rows) < GROUP]
    kept: list[int] = []
    for i in sorted(rows, key=lambda i: -regions[i].area * float(dog[i])):
        hiders = _hiders(i, kept, regions)
        if not hiders:
            kept.append(i)
        elif all(regions[i].score > SURER * regions[j].score for j in hiders):
            kept = [j for j in kept if j not in hiders] + [i]
    kept.sort(key=lambda i: -regions[i].area * float(dog[i]))
    if kept:  # only adds dogs, after those found at the full threshold, whose answers stay as they were
        largest = max(regions[i].area for i in kept)
        beside = [i for i in range(1, len(regions)) if i not in rows and regions[i].score >= BESIDE_A_DOG_SCORE
                  and dog[i] >= max(decision.dog_threshold, min(surest(i), BESIDE_A_DOG))
                  and regions[i].area <= BESIDE_A_DOG_AREA * largest]
        for i in sorted(beside, key=lambda i: -regions[i].area * float(dog[i])):
            if not _hiders(i, kept, regions):
                kept.append(i)
    return kept


def _crop_floor(decision: Decision) -> float:
    """The dog probability a crop needs to be a dog: more than the whole photo's (`CROP_THRESHOLD`)."""
    return max(decision.dog_threshold, CROP_THRESHOLD)


def _crop_threshold(region: Region, decision: Decision) -> float:
    """The dog probability a candidate's crop needs: more for a tiny box, less for a box the detector calls a dog
    (down to the photo's own threshold, which a user may raise above `DETECTOR_SURE_CROP`)."""
    threshold = _crop_floor(decision)
    if _side(region) < SMALL_BOX:
        return max(threshold, SMALL_CROP_THRESHOLD)
    if region.label == "dog" and region.score >= DETECTOR_SURE:
        return max(decision.dog_threshold, min(threshold, DETECTOR_SURE_CROP))
    return threshold


def deferred_crops(regions: Sequence[Region]) -> list[int]:
    """Candidate rows whose crop the answer may not need: those the first (most prominent) candidate would hide as
    a part of it or as it seen again, in a photo where no candidate is surer than the first one (so no rule can
    drop it: `SURER`, `GROUP`) and where none of them could count towards another box's `GROUP`. Once the first
    candidate's crop turns out a dog that comes first (`crops_needed`), they cannot be dogs of the answer, whatever
    their crops would say: on ordinary dog photos this is about a third of all crops."""
    if len(regions) < 3:
        return []
    one = regions[1]
    if any(r.score > one.score for r in regions[2:]):
        return []
    return [i for i in range(2, len(regions)) if _hiders(i, [1], regions)
            and not any(_holds_surer(regions[o], regions[i]) for o in range(2, len(regions)) if o != i)]


def crops_needed(dog: np.ndarray, regions: Sequence[Region], deferred: Sequence[int], decision: Decision) -> list[int]:
    """Of a photo's `deferred_crops`, those still to run, given the dog probabilities of its other rows (the
    deferred rows' values are not read): none when the first candidate is a dog that ranks first whatever the
    deferred crops say (each at most as prominent as its whole box), else all of them."""
    if not deferred:
        return []
    one, later = regions[1], set(deferred)
    first = one.area * float(dog[1])
    ranks_first = all((regions[j].area if j in later else regions[j].area * float(dog[j])) < first
                      for j in range(2, len(regions)))
    is_dog = dog[1] >= _crop_threshold(one, decision)
    return [] if is_dog and ranks_first else list(deferred)


def _hiders(i: int, kept: Sequence[int], regions: Sequence[Region]) -> list[int]:
    """The kept dogs that candidate ``i`` is a part of (inside or overlapping it) or a view of (`SEEN_AGAIN`)."""
    a, win = regions[i].photo_box, window(regions[i].photo_box)
    seen = SEEN_AGAIN_WEAK if regions[i].weak else SEEN_AGAIN
    return [j for j in kept if inside(a, regions[j].photo_box) >= CONTAINED
            or _iou(a, regions[j].photo_box) >= OVERLAP
            or (_covers(regions[j].photo_box, win) >= seen and not _two_animals(regions[i], regions[j]))]


def _two_animals(a: Region, b: Region) -> bool:
    """Whether the detector is sure of both boxes as animals a dog is taken for (`SEEN_AGAIN_SURE`): a sure cat or
    teddy bear beside a dog, whose crop shows half the dog, is still that dog seen again, as the dog-or-not head
    is there to say of a cat alone."""
    return (min(a.score, b.score) >= SEEN_AGAIN_SURE
            and a.label not in NOT_TAKEN_FOR_A_DOG and b.label not in NOT_TAKEN_FOR_A_DOG)


def _holds_surer(outer: Region, inner: Region) -> bool:
    """Whether ``outer`` holds the surer candidate ``inner``: a crop is called "dog" when any dog shows in it, so a
    larger, weaker box drawn round several dogs is judged on them, not on its own (`GROUP`)."""
    return (inner.score > outer.score and inner.area < outer.area
            and inside(inner.photo_box, outer.photo_box) >= CONTAINED)


def _side(region: Region) -> float:
    """The longer side of a candidate's box in the decoded photo's pixels (what its crop is cut from)."""
    x0, y0, x1, y1 = region.box  # type: ignore[misc] - only candidates (rows 1..) are asked, and they have a box
    return max(x1 - x0, y1 - y0)


def _covers(box: Sequence[float], win: Sequence[float]) -> float:
    """The share of the window ``win`` that ``box`` covers."""
    return box_overlap(box, win) / box_area(win)


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    i = box_overlap(a, b)
    return i / max(1.0, box_area(a) + box_area(b) - i)


def _dog(p: Prediction, box: list[int], row: int) -> Dog:
    return Dog(box, p.dog_probability, p.verdict, p.breeds, p.several_breeds_likely, row=row)
