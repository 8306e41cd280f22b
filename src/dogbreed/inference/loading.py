"""Loading: a set of `PredictOptions` -> the members, classes, decision and dog stages a `Predictor` runs.

The model spec goes through the one resolver (`resolve.resolve_model`); each member gets a runner
(`runners.create_runner`); the dog detector (shipped, fitted by the user, or none) brings its threshold for this
member/view combination and, for `fast`, its cascade.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..breeds import Breed
from ..dogness import DogDetector, default_detector
from ..errors import ModelLoadError
from ..resolve import BEST_BACKBONES, QUALITIES, ResolvedModel, model_outline, resolve_model, shipped_decision
from ..runtime import OnceEach, resolve_device
from ..specs import get_spec
from ..transforms import Preprocess
from .options import PredictOptions
from .runners import Runner, create_runner, packaged_runner, remember_export, session_precision, uses_onnx
from .scoring import BreedCascade, CascadeStage, Decision, Member

CPU_BATCH_SIZE = 16
# Shorter side JPEGs are decoded at with the stage: a 12 MP photo at 2016x1512, so a dog a twentieth of its width
# keeps ~100 px for its crop and the closer looks. At 448 (1008x756) the test half's 4032x3024 photos of bench/
# dogs_in_scene.py (100 a kind, large-far / large-small: a dog 4-8% / 8-15% of the width) had their dog named 31 /
# 70 times against 51 / 78 at 896, for about 35% more time a large photo; JPEGs with a shorter side under 896
# decode as before.
FIND_DRAFT = 896


@dataclass
class LoadedModel:
    """What one set of options loads to; `Predictor` runs it."""

    members: list[Member]
    classes: list[Breed]
    decision: Decision
    device: str
    batch_size: int
    tta_flip: bool
    resolved: ResolvedModel
    detector: DogDetector | None = None
    cascade: CascadeStage | None = None
    breed_cascade: BreedCascade | None = None
    finder: Any | None = None  # `detect.DogFinder`: the detection stage, when it runs

    @property
    def draft_size(self) -> int:
        """Shorter side JPEGs may be decoded at: enough for the largest member's input (and the cascade's), and
        with the detection stage enough that a small dog's crop still has pixels to show."""
        sizes = [m.preprocess.draft_size for m in self.members]
        if self.cascade is not None:  # the cascade's member reads the same decoded photo at its own, larger size
            sizes += [get_spec(b).preprocess().draft_size for b in self.cascade.cascade.extra_backbones()]
        if self.breed_cascade is not None:
            sizes += [get_spec(b).preprocess().draft_size for b in self.breed_cascade.backbones]
        if self.finder is not None:
            sizes.append(FIND_DRAFT)
        return max(sizes)

    @property
    def member_backbones(self) -> list[str]:
        """The model's own members' backbones (not a `dog_only` one's)."""
        return [m.backbone for m in self.members if not m.dog_only]


def load_model(opts: PredictOptions) -> LoadedModel:
    """Resolve, place and attach everything ``opts`` asks for; a model that cannot load raises `ModelLoadError`."""
    if opts.quality not in QUALITIES:
        raise ValueError("quality must be 'fast' or 'best'")
    device = resolve_device(opts.device)
    onnx = uses_onnx(opts.runtime, device)
    prec = session_precision(opts.precision, device, onnx)
    # On ONNX Runtime the packaged models start from their cached export, without building the PyTorch model.
    resolved = resolve_model(opts.model, quality=opts.quality, cached_onnx=onnx,
                             precision=prec if prec in ("fp32", "bf16") else "fp32")
    runtime = "onnx" if resolved.kind == "onnx" else opts.runtime  # the graph is all there is
    members = []
    for c in resolved.classifiers:
        runner = create_runner(c, runtime, device, opts.precision)
        if resolved.kind in ("default", "imagenet"):
            remember_export(c, runner, resolved.kind == "default")
        members.append(Member(runner, c.preprocess_cfg, c.backbone_name))
    if opts.batch_size is None:
        from ..accel import CUDA_BATCH_SIZE, is_cuda

        batch_size = CUDA_BATCH_SIZE if is_cuda(device) else CPU_BATCH_SIZE
    else:
        batch_size = opts.batch_size
    # "best" runs three backbones where the model has them; a single head can only add the flip view.
    m = LoadedModel(members, list(resolved.classifiers[0].classes), Decision.from_dict(resolved.decision), device,
                    batch_size, opts.tta_flip or opts.quality == "best", resolved)
    # The cascades' stronger members, loaded on the first photo that needs one, once for both (and for every lane).
    load = OnceEach(lambda bb: packaged_runner(bb, True, runtime, device, opts.precision))
    _attach_dog_detector(m, opts, load)
    if (opts.breed_cascade and resolved.kind == "default" and opts.quality == "fast" and not m.tta_flip
            and m.member_backbones == [BEST_BACKBONES[0]]):
        best = shipped_decision("best")  # read only where the cascade can run: not for best, imagenet or a model dir
        if "temperature" in best:
            m.breed_cascade = BreedCascade(BEST_BACKBONES, float(best["temperature"]), load)
    if opts.find_dogs and m.detector is not None:  # without a dog detector nothing could refuse a false crop
        # (`finds_dogs` decides the same from the model's config alone)
        from .detect import default_finder

        m.finder = default_finder(prec if prec in ("fp32", "bf16") and onnx else "fp32")
    if opts.dog_threshold is not None:
        m.decision.dog_threshold = opts.dog_threshold
    return m


def dog_reading(opts: PredictOptions, backbones: list[str], fine_tuned: bool) -> tuple[DogDetector | None, bool]:
    """The dog detector these options load for a model of these member backbones (read from its file once), and
    whether it reads packaged Lite0 beside the model (a `dog_only` member) instead of the model's own members. Its
    heads read the ImageNet head of an unchanged pretrained backbone, so it reads none of a model without one (a
    from-scratch CNN, which answered every photo as a dog) or with a fine-tuned backbone (whose ImageNet head reads
    features it was not trained on): its Lite0 head then reads packaged Lite0, where it has one."""
    det = chosen_detector(opts)
    if det is not None and not fine_tuned and any(b in det.heads for b in backbones):
        return det, False
    if _judge_reads(det):
        return det, True
    if opts.dog_detector not in ("default", "none"):
        why = "a fine-tuned backbone" if fine_tuned else f"no head for {backbones}"
        raise ModelLoadError(f"dog detector {opts.dog_detector} cannot read this model ({why}) and has no "
                             f"{DOG_JUDGE} head to read dog or not beside it")
    return None, False


def dog_detector_for(opts: PredictOptions, backbones: list[str], fine_tuned: bool) -> DogDetector | None:
    """The dog detector that reads these member backbones themselves, or None (`dog_reading`)."""
    det, judged = dog_reading(opts, backbones, fine_tuned)
    return None if judged else det


def chosen_detector(opts: PredictOptions) -> DogDetector | None:
    """The dog detector ``opts`` names: the shipped one, a user's fitted one (`fit-dog-detector`), or none."""
    if opts.dog_detector == "none":
        return None
    return default_detector() if opts.dog_detector == "default" else DogDetector.load(opts.dog_detector)


# The packaged backbone that reads dog or not for a model whose own members cannot (`judge_needed`).
DOG_JUDGE = BEST_BACKBONES[0]


def _judge_reads(det: DogDetector | None) -> bool:
    """Whether ``det`` can read packaged Lite0 for a model whose own members give it nothing."""
    return det is not None and DOG_JUDGE in det.heads


def judge_needed(opts: PredictOptions, backbones: list[str], fine_tuned: bool) -> bool:
    """Whether the chosen dog detector (shipped or the user's) reads an unchanged packaged Lite0 run beside the
    model (`dog_reading`)."""
    return dog_reading(opts, backbones, fine_tuned)[1]


def finds_dogs(opts: PredictOptions) -> bool:
    """Whether `load_model(opts)` runs the detection stage, decided from the model's config alone (the Ray driver
    asks, to give its output the columns the actors' rows will have)."""
    if not opts.find_dogs:
        return False
    return dog_reading(opts, *model_outline(opts.model, opts.quality))[0] is not None


def _attach_dog_detector(m: LoadedModel, opts: PredictOptions, load: Callable[[str], tuple[Runner, Preprocess]],
                         ) -> None:
    """The dog detector and its threshold for this member/view combination, and the cascade where it applies.

    Its heads read the ImageNet head of an unchanged pretrained backbone: a model without one (a from-scratch CNN,
    a fine-tuned backbone) gets a `dog_only` packaged Lite0 member that reads it (`judge_needed`).
    """
    det, judged = dog_reading(opts, m.member_backbones, m.resolved.backbone_in_weights)
    if det is None:
        return
    readers = m.member_backbones
    if judged:
        m.members.append(Member(*load(DOG_JUDGE), DOG_JUDGE, dog_only=True))
        readers = [DOG_JUDGE]
    m.detector = det
    views = ("plain", "flip") if m.tta_flip else ("plain",)
    m.decision.dog_threshold = det.threshold(readers, views, opts.dog_target_recall)
    c = det.cascade
    if (opts.dog_cascade and c is not None and readers == [c.first] and not m.tta_flip
            and opts.dog_target_recall is None):
        m.cascade = CascadeStage(det, load)
        m.decision.dog_threshold = c.threshold
