"""Scoring: the members' raw outputs -> breed log-probabilities, a dog probability, and the decision that makes a
`Prediction`.

Breeds are a weighted mean of temperature-scaled log-probabilities over members and views; the dog probability is
the calibrated dog detector over the same outputs (or the ImageNet head's dog mass without one), and `fast`'s
cascade looks again, with a stronger member, only at photos whose first dog probability is uncertain.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, NamedTuple

import numpy as np
from PIL import Image

from ..breeds import DOG_INDICES, Breed
from ..dogness import DogDetector, log_softmax
from ..fileio import say_once
from ..transforms import Preprocess
from .decode import to_input
from .runners import ModelOutputs, Runner


@dataclass
class BreedScore:
    wnid: str | None
    name: str
    probability: float


@dataclass
class Prediction:
    path: str | None
    verdict: str
    dog_probability: float
    breeds: list[BreedScore]
    several_breeds_likely: bool = False
    error: str | None = None
    # Optional, present only when asked for: the heat-map PNG written for this photo (`--explain`), and the
    # nearest gallery photos of the top breeds (`--gallery`).
    explanation: str | None = None
    look_alikes: list[dict[str, Any]] | None = None
    # Every dog found (`inference.dogs.Dog`), most prominent first, when the detection stage ran; the fields above
    # then describe the first.
    dogs: list[Any] | None = None

    @classmethod
    def failed(cls, path: str | None, error: str) -> Prediction:
        """The row of a photo that could not be read: verdict "error" and why."""
        return cls(path, "error", 0.0, [], error=error)

    def to_dict(self) -> dict[str, Any]:
        if self.error is not None:  # its verdict too, as CSV and Parquet rows carry it: readers may key on it
            return {"path": self.path, "verdict": "error", "error": self.error}
        d = asdict(replace(self, dogs=None))  # each dog converts itself once, below, without its private row
        d.pop("error")
        d.pop("dogs")
        for k in ("explanation", "look_alikes"):
            if d[k] is None:
                d.pop(k)
        if self.dogs is not None:
            d["dogs"] = [g.to_dict() for g in self.dogs]
        return d


@dataclass
class Decision:
    """Thresholds that turn scores into a verdict; stored with a model so every front end agrees."""

    dog_threshold: float = 0.5
    # model="default" takes temperature and uncertain_threshold per quality mode from package data
    # (data/breed_heads.json, fitted by scripts/fit_default_heads.py); a model dir from its model.json "decision".
    uncertain_threshold: float = 0.35  # calibrated top-1 below this -> "mixed or uncertain breed"
    several_breeds_threshold: float = 0.25  # a second breed at least this likely -> say so
    temperature: float = 1.0  # breed-logit temperature (calibration); 1.0 = as the head says

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Decision:
        d = d or {}
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


@dataclass
class Member:
    """One model of the ensemble, with the preprocessing its input needs and the backbone that names it.

    A ``dog_only`` member reads dog or not and no breed: an unchanged packaged backbone run beside a model whose own
    backbone cannot feed the dog detector (`loading.judge_needed`)."""

    runner: Runner
    preprocess: Preprocess
    backbone: str
    weight: float = 1.0
    dog_only: bool = False

    @property
    def model(self) -> Any:
        """The placed model itself: an `onnxrun.OnnxModel` session or a torch module."""
        return self.runner.model


class MemberOutput(NamedTuple):
    member: Member
    view: str  # "plain" or "flip"
    out: ModelOutputs


def flip(x: Any) -> Any:
    """Mirror a batch left-right: numpy (contiguous, so torch and ONNX Runtime take it as is) or torch."""
    return np.ascontiguousarray(x[..., ::-1]) if isinstance(x, np.ndarray) else x.flip(-1)


def run_members(members: Sequence[Member], xs: Sequence[Any], tta_flip: bool) -> list[MemberOutput]:
    """Every member on its own batch, plain view (and flipped with ``tta_flip``)."""
    outputs: list[MemberOutput] = []
    for m, x in zip(members, xs, strict=True):
        views = {"plain": x, "flip": flip(x)} if tta_flip else {"plain": x}
        for view, v in views.items():
            outputs.append(MemberOutput(m, view, m.runner(v)))
    return outputs


def run_members_on(members: Sequence[Member], xs: Sequence[Any], tta_flip: bool, rows: Sequence[int],
                   into: Sequence[MemberOutput] | None = None) -> list[MemberOutput]:
    """`run_members` on ``rows`` of the batch only, written into the full batch's outputs (``into``, or new ones
    whose other rows are zeros): rows never run are never read."""
    got = run_members(members, [x[list(rows)] for x in xs], tta_flip)
    n = len(xs[0])
    if into is None:
        into = [MemberOutput(o.member, o.view, ModelOutputs(*(np.zeros((n, *a.shape[1:]), a.dtype) for a in o.out)))
                for o in got]
    for full, part in zip(into, got, strict=True):
        for a, b in zip(full.out, part.out, strict=True):
            a[list(rows)] = b
    return list(into)


def copy_rows(outputs: Sequence[MemberOutput], rows: dict[int, int]) -> None:
    """Give each row of ``rows`` (row -> source row) its source's outputs, in place."""
    if rows:
        for o in outputs:
            for a in o.out:
                a[list(rows)] = a[list(rows.values())]


def combine_breeds(outputs: Sequence[MemberOutput], temperature: float) -> np.ndarray:
    """Weighted mean of temperature-scaled log-probabilities over members and views.

    Log-probabilities rather than raw logits so members with differently scaled heads (an adapted head next to an
    ImageNet one) count alike; on stanford-subset the two tie and beat averaging probabilities by 0.1 pt.
    """
    outputs = [o for o in outputs if not o.member.dog_only]
    total = sum(o.member.weight for o in outputs)
    t = np.float32(temperature)
    logp = sum(np.float32(o.member.weight / total) * log_softmax(np.asarray(o.out.breed_logits, np.float32) / t)
               for o in outputs)
    return log_softmax(logp)


def dog_mass(imagenet_logits: np.ndarray) -> np.ndarray:
    """Probability the ImageNet head gives to any dog class (120 breeds + dalmatian)."""
    p = np.exp(log_softmax(np.asarray(imagenet_logits, dtype=np.float32)))
    return p[:, list(DOG_INDICES)].sum(-1)


def dog_readers(outputs: Sequence[MemberOutput]) -> Sequence[MemberOutput]:
    """The outputs dog or not is read from: a ``dog_only`` member's where there is one, else every member's."""
    return [o for o in outputs if o.member.dog_only] or outputs


def dog_probability(outputs: Sequence[MemberOutput], detector: DogDetector | None, n: int) -> np.ndarray:
    """Calibrated dog detector over members and views when loaded; else mean ImageNet dog mass (ones when no
    member has an ImageNet head); a ``dog_only`` member, where there is one, alone."""
    with_imagenet = [o for o in dog_readers(outputs) if o.out.imagenet_logits.shape[-1]]
    if detector is not None:
        named = [(o.member.backbone, o.out.imagenet_logits, o.out.features) for o in with_imagenet]
        if any(b in detector.heads for b, _, _ in named):
            return detector.combine(named)
    dogs = [dog_mass(o.out.imagenet_logits) for o in with_imagenet]
    if not dogs and n:
        say_once("this model has no ImageNet head (a from-scratch CNN, or a backbone trained without it), so it "
                 "cannot tell a dog from anything else: every photo is answered as a dog, with a dog probability "
                 "of 1; only its breeds are its own", key="no-dog-check")
    return np.stack(dogs).mean(0) if dogs else np.ones(n, dtype=np.float32)


class CascadeStage:
    """`fast`'s second look: photos whose first dog probability lies in the cascade's band are scored again by its
    stronger member(s), loaded on first use so clear photos never pay."""

    def __init__(self, detector: DogDetector, load: Callable[[str], tuple[Runner, Preprocess]]):
        assert detector.cascade is not None
        self.detector, self.cascade, self._load = detector, detector.cascade, load
        self._members: dict[str, tuple[Runner, Preprocess]] = {}

    @property
    def loaded_backbones(self) -> list[str]:
        """The second-stage members loaded so far (none until a photo falls in the band)."""
        return list(self._members)

    def member(self, backbone: str) -> tuple[Runner, Preprocess]:
        if backbone not in self._members:
            self._members[backbone] = self._load(backbone)
        return self._members[backbone]

    def __call__(self, dog: np.ndarray, outputs: Sequence[MemberOutput],
                 image: Callable[[int], Image.Image | None]) -> np.ndarray:
        """``image(row)``: the decoded photo of that row (None when it cannot be had again: its first score
        stands)."""
        c = self.cascade
        band = np.flatnonzero((dog >= c.band[0]) & (dog <= c.band[1])).tolist()
        ims = {r: im for r in band if (im := image(r)) is not None}
        rows = list(ims)
        if not rows:
            return dog
        have: dict[tuple[str, str], np.ndarray] = {
            (c.first, "plain"): next(o.out.imagenet_logits for o in dog_readers(outputs) if o.view == "plain")[rows]}
        for bb in c.extra_backbones():
            runner, pre = self.member(bb)
            x = np.stack([to_input(ims[r], pre) for r in rows])
            for view in {v for b, v in c.second if b == bb}:
                have[(bb, view)] = runner(flip(x) if view == "flip" else x).imagenet_logits
        dog = dog.copy()
        dog[rows] = self.detector.combine([(b, have[(b, v)], None) for b, v in c.second]).astype(dog.dtype)
        return dog


class BreedCascade:
    """`fast`'s second look at breeds: a row that may be a dog (its dog probability at the threshold or above) and
    whose calibrated top breed stays under the uncertain threshold is read again by `best`'s ensemble, every
    backbone on the plain and the flipped view, loaded on first use so sure answers never pay.

    Out of fold on the 733 web-dogs + imagenet-val-dogs photos (`bench/accuracy.py`'s folds), 112 rows are unsure
    (the threshold `fast` already has, nothing tuned for this); re-read by `best` there, the top breed is right on
    620 of the 733 against 612 for `fast` alone in fp32 (17 answers mended, 9 broken; `best` everywhere: 621), 615
    against 614 in bf16, where rounding moves about as many of these close calls (bench/stage_out_of_fold.py)."""

    def __init__(self, backbones: Sequence[str], temperature: float,
                 load: Callable[[str], tuple[Runner, Preprocess]]):
        self.backbones, self.temperature, self._load = tuple(backbones), temperature, load

    def rows(self, logp: np.ndarray, dog: np.ndarray, decision: Decision,
             among: Sequence[int] | None = None) -> list[int]:
        """The rows to read again: may be a dog, unsure of its breed, and (``among``) read by an answer."""
        unsure = np.exp(logp.max(-1)) < decision.uncertain_threshold
        rows = np.flatnonzero(unsure & (dog >= decision.dog_threshold)).tolist()
        return rows if among is None else sorted(set(rows) & set(among))

    def outputs(self, rows: Sequence[int], first: Sequence[MemberOutput],
                image: Callable[[int], Image.Image | None]) -> tuple[list[int], list[MemberOutput]]:
        """The rows whose image can be had again, and every backbone's outputs on them, plain and flipped (the
        first member's plain view is the one already run, cut to these rows)."""
        ims = {r: im for r in rows if (im := image(r)) is not None}
        rows = list(ims)
        if not rows:
            return [], []
        out = []
        for bb in self.backbones:
            have = next((o for o in first if o.member.backbone == bb and o.view == "plain"), None)
            member = have.member if have is not None else Member(*self._load(bb), bb)
            x = np.stack([to_input(ims[r], member.preprocess) for r in rows])
            plain = ModelOutputs(*(np.asarray(a)[rows] for a in have.out)) if have is not None else member.runner(x)
            out += [MemberOutput(member, "plain", plain), MemberOutput(member, "flip", member.runner(flip(x)))]
        return rows, out


def decide(logp: np.ndarray, dog: np.ndarray, paths: Sequence[str | None], classes: Sequence[Breed],
           decision: Decision, top_k: int) -> list[Prediction]:
    """Scores -> one `Prediction` per row: the top-k breeds and a verdict (dog, no_dog or uncertain_breed)."""
    out = []
    k = min(top_k, len(classes))
    probs = np.exp(logp)
    # the second breed is read whatever k is: `several_breeds_likely` must not depend on how many breeds are listed
    # (with --top-k 1 the CLI said false where the API, which cuts its lists later, said true)
    top_i = np.argsort(-probs, axis=-1, kind="stable")[:, :max(k, 2)]
    top_p = np.take_along_axis(probs, top_i, -1)
    for row in range(len(paths)):
        ranked = [BreedScore(classes[i].wnid, classes[i].name, round(float(p), 6))
                  for p, i in zip(top_p[row].tolist(), top_i[row].tolist(), strict=True)]
        breeds = ranked[:k]
        d = float(dog[row])
        if d < decision.dog_threshold:
            verdict = "no_dog"
        elif breeds[0].probability < decision.uncertain_threshold:
            verdict = "uncertain_breed"
        else:
            verdict = "dog"
        several = (verdict != "no_dog" and len(ranked) > 1
                   and ranked[1].probability >= decision.several_breeds_threshold)
        out.append(Prediction(paths[row], verdict, round(d, 6), breeds, several))
    return out
