"""`Predictor`: photo -> `Prediction` (dog or not, top-k breeds), for the default model and trained runs.

Batches and scores are numpy arrays. On ONNX Runtime (the CPU default) nothing here imports torch, which keeps
~1.5 s of start-up and exit off every `dogbreed predict`; torch is loaded only to build a model that has no cached
export yet, or to run one on the torch runtime (CUDA included).
"""

from __future__ import annotations

import dataclasses
import glob
import importlib.util
import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import numpy as np

from .accel import PRECISIONS
from .breeds import DOG_INDICES, Breed
from .dogness import DogDetector, default_detector, log_softmax
from .errors import ImageDecodeError, ModelLoadError
from .onnxrun import OnnxModel, cached_default_model, native_bf16, record_default_model
from .resolve import BEST_BACKBONES, QUALITIES, ResolvedModel, resolve_model
from .runtime import resolve_device
from .specs import get_spec
from .transforms import Preprocess, load_image, preprocess_image, to_array

if TYPE_CHECKING:
    from .models import Classifier

__all__ = ["BEST_BACKBONES", "Decision", "Member", "MemberOutput", "ModelOutputs", "PredictOptions", "Prediction",
           "Predictor", "expand_inputs", "predict"]

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


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

    def to_dict(self) -> dict[str, Any]:
        if self.error is not None:
            return {"path": self.path, "error": self.error}
        d = asdict(self)
        d.pop("error")
        for k in ("explanation", "look_alikes"):
            if d[k] is None:
                d.pop(k)
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


def dog_mass(imagenet_logits: np.ndarray) -> np.ndarray:
    """Probability the ImageNet head gives to any dog class (120 breeds + dalmatian)."""
    p = np.exp(log_softmax(np.asarray(imagenet_logits, dtype=np.float32)))
    return p[:, list(DOG_INDICES)].sum(-1)


def expand_inputs(inputs: Iterable[str | Path]) -> list[str]:
    """Files, folders (recursive, images only, sorted) and globs -> paths, in the order given.

    A path that cannot be read (missing, too long, a link loop or a dangling link, a FIFO, no permission) is kept,
    so that it is reported as an error in its place; so is an image-named entry of a folder that is not a regular
    file. Nothing here raises for a bad path.
    """
    out: list[str] = []
    for item in inputs:
        s = str(item)
        p = Path(s)
        if _is_dir(p):
            out += sorted(str(f) for f in p.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS and not _is_dir(f))
        elif not os.path.lexists(s) and any(c in s for c in "*?["):
            # A pattern that matches nothing stays, so it is reported ("file not found") rather than dropped.
            out += sorted(f for f in glob.glob(s, recursive=True) if not os.path.isdir(f)) or [s]
        else:
            out.append(s)
    return out


def _is_dir(p: Path) -> bool:
    try:
        return p.is_dir()
    except OSError:  # e.g. "File name too long": not a folder; reading it reports why
        return False


class ModelOutputs(NamedTuple):
    """What every classifier returns for an image batch (the ONNX graph's three outputs, in this order)."""

    breed_logits: np.ndarray  # (N, classes)
    imagenet_logits: np.ndarray  # (N, 1000), or (N, 0) when the backbone has no ImageNet head
    features: np.ndarray  # (N, D) pooled backbone features


class PredictionModel(Protocol):
    """A member's runnable model: an eager `Classifier` or an `OnnxModel` session, image batch -> three outputs
    (numpy arrays from a session, CPU tensors from a module; `Predictor._run` makes both numpy)."""

    def __call__(self, x: Any) -> tuple[Any, ...]: ...


@dataclass
class Member:
    """One model of the ensemble, with the preprocessing its input needs and the backbone that names it."""

    model: PredictionModel
    preprocess: Preprocess
    backbone: str
    weight: float = 1.0


class MemberOutput(NamedTuple):
    member: Member
    view: str  # "plain" or "flip"
    out: ModelOutputs


@dataclass
class PredictOptions:
    """Every option a user can give a prediction, shared by `dogbreed predict`, `dogbreed serve` and `predict()`:
    a new option added here (and read in `Predictor`, which inherits these fields) reaches every front end."""

    model: str = "default"  # see `resolve.resolve_model`
    quality: str = "fast"  # fast (one model) | best (ensemble + flip TTA)
    runtime: str = "auto"  # torch | onnx | auto
    device: str = "cpu"
    top_k: int = 5
    batch_size: int = 16
    # Dog detector: "default" (shipped with the package), a path written by `dogbreed fit-dog-detector`, or
    # "none" for the plain ImageNet dog mass. dog_target_recall picks its threshold (None: the one stored).
    dog_detector: str = "default"
    dog_target_recall: float | None = None
    dog_threshold: float | None = None  # overrides the model's (and the detector's) dog/no-dog threshold
    # The detector's cascade (a stronger member only for photos with an uncertain first dog score), used when the
    # detector has one, the predictor runs its first backbone alone on the plain view, and no other recall target
    # is asked for. False: the first member alone (faster, rejects fewer cats).
    dog_cascade: bool = True
    # Look-alike photos: a gallery file written by `dogbreed gallery build` (or a loaded `gallery.Gallery`); None
    # (the default) loads nothing and changes nothing.
    gallery: Any = None
    # "auto": on CPU with ONNX models, bf16 on OpenVINO where the CPU computes bf16 natively (~1.7x faster, within
    # onnxrun.BF16_TOLERANCE of fp32), else fp32 on ONNX Runtime; on the torch runtime, bf16 autocast on CUDA
    # (within accel.BF16_TOLERANCE), fp32 elsewhere. "fp32" / "bf16" ask for one.
    precision: str = "auto"

    def predictor(self, **overrides: Any) -> Predictor:
        fields = PredictOptions.__dataclass_fields__
        return Predictor(**{**{f: getattr(self, f) for f in fields}, **overrides})


@dataclass
class Predictor(PredictOptions):
    """Loads a model once and predicts photos in batches. Its options are the fields of `PredictOptions`.

    ``model``: "default" (the ImageNet head's 120 breed rows refitted on stanford-dogs and natural photos, as
    shipped with the package), "imagenet" (the plain ImageNet head), a run directory written by ``dogbreed train`` /
    ``dogbreed adapt``, or an ``.onnx`` file written by ``dogbreed export``.
    """

    # Filled in by loading.
    decision: Decision = field(default_factory=Decision)
    tta_flip: bool = False
    members: list[Member] = field(default_factory=list, repr=False)
    classes: list[Breed] = field(default_factory=list, repr=False)
    detector: DogDetector | None = field(default=None, repr=False)
    resolved: ResolvedModel | None = field(default=None, repr=False)
    _cascade_models: dict[str, tuple[Any, Preprocess]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.quality not in QUALITIES:
            raise ValueError("quality must be 'fast' or 'best'")
        self.device = resolve_device(self.device)
        if not self.members:
            self._load()
        if self.dog_threshold is not None:
            self.decision.dog_threshold = self.dog_threshold
        if self.gallery is not None:
            self._load_gallery()

    @property
    def member_backbones(self) -> list[str]:
        return [m.backbone for m in self.members]

    @property
    def fine_tuned(self) -> bool:
        """The backbone's weights were changed by training: parts fitted on the pretrained one do not apply."""
        return self.resolved is not None and self.resolved.backbone_in_weights

    # -- loading ------------------------------------------------------------------------------------------
    def _load(self) -> None:
        # "default": the heads fitted by scripts/fit_default_heads.py that ship with the package, with their
        # fitted temperature and uncertain threshold; "imagenet": the plain zero-training ImageNet head, kept one
        # flag away for comparison (its probabilities are not calibrated); else a model dir,
        # run dir or exported .onnx file.
        # On ONNX Runtime the packaged models start from their cached export, without building the PyTorch model.
        self.resolved = resolved = resolve_model(self.model, quality=self.quality, cached_onnx=self._on_onnx(),
                                                 precision=self._session_precision())
        # "best" runs three backbones where the model has them; a single head can only add the flip view
        # (+0.2-0.8 pt on stanford-subset, see bench/accuracy.py).
        self.tta_flip = self.tta_flip or self.quality == "best"
        self.decision = Decision.from_dict({**vars(self.decision), **resolved.decision})
        if resolved.kind == "onnx":
            self.runtime = "onnx"  # the graph is all there is
        self.classes = list(resolved.classifiers[0].classes)
        self.members = [Member(self._place(c), c.preprocess_cfg, c.backbone_name) for c in resolved.classifiers]
        if resolved.kind in ("default", "imagenet"):
            for c, m in zip(resolved.classifiers, self.members, strict=True):
                if not isinstance(c, OnnxModel) and isinstance(m.model, OnnxModel):  # built and exported this time
                    record_default_model(c, m.model, resolved.kind == "default")
        self._load_dog_detector()

    def _load_dog_detector(self) -> None:
        """Attach the dog detector and take its threshold for this member/view combination.

        Its heads read the ImageNet head of an unchanged pretrained backbone, so a fine-tuned backbone keeps the
        plain dog mass.
        """
        cascade_wanted, self.dog_cascade = self.dog_cascade, False  # on only once a detector with a cascade fits
        if self.dog_detector == "none" or (self.fine_tuned and self.dog_detector == "default"):
            self.detector = None
            return
        self.detector = default_detector() if self.dog_detector == "default" else DogDetector.load(self.dog_detector)
        if self.detector is None or not any(b in self.detector.heads for b in self.member_backbones):
            if self.dog_detector != "default":
                raise ModelLoadError(f"dog detector {self.dog_detector} has no head for {self.member_backbones}")
            self.detector = None
            return
        views = ("plain", "flip") if self.tta_flip else ("plain",)
        self.decision.dog_threshold = self.detector.threshold(self.member_backbones, views, self.dog_target_recall)
        c = self.detector.cascade
        self._cascade_models = {}
        if (cascade_wanted and c is not None and self.member_backbones == [c.first] and not self.tta_flip
                and self.dog_target_recall is None):
            self.dog_cascade = True
            self.decision.dog_threshold = c.threshold

    def _load_gallery(self) -> None:
        from .gallery import Gallery

        if not isinstance(self.gallery, Gallery):
            self.gallery = Gallery.load(self.gallery)
        if self.gallery.backbone not in self.member_backbones:
            raise ValueError(f"gallery was built with {self.gallery.backbone}; this model runs "
                             f"{self.member_backbones}")
        if self.fine_tuned:
            raise ValueError("gallery features come from the pretrained backbone; this model fine-tuned it")

    def _on_onnx(self) -> bool:
        """Members run on ONNX Runtime: asked for, or "auto" on CPU where it is several times faster than eager
        PyTorch (bench/speed.py)."""
        if self.runtime not in ("torch", "onnx", "auto"):
            raise ValueError(f"runtime must be torch, onnx or auto, not {self.runtime!r}")
        return self.runtime == "onnx" or (self.runtime == "auto" and self.device == "cpu" and _onnxruntime_available())

    def _session_precision(self) -> str:
        """Precision of the ONNX sessions (`onnxrun.OnnxModel`): see `PredictOptions.precision`."""
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, not {self.precision!r}")
        if self.precision == "auto":
            return "bf16" if self.device == "cpu" and self._on_onnx() and native_bf16() else "fp32"
        if self.precision == "bf16" and self._on_onnx() and not native_bf16():
            raise ValueError("precision bf16 on ONNX models runs on OpenVINO and needs a CPU that computes bf16 "
                             "natively (AVX512-BF16 or AMX); this one does not: use precision fp32 or auto")
        return self.precision

    def _place(self, clf: Classifier | OnnxModel) -> PredictionModel:
        if isinstance(clf, OnnxModel):  # already a session (an exported .onnx model or a cached default export)
            return clf
        import torch

        from .runtime import optimize_for_cpu

        if self._on_onnx():
            from .export import onnx_session_for

            try:
                return onnx_session_for(clf, precision=self._session_precision())
            except Exception as e:  # e.g. a read-only cache dir: "auto" still answers, just slower
                if self.runtime != "auto":
                    raise
                warnings.warn(f"ONNX Runtime unavailable ({e}); using PyTorch", RuntimeWarning, stacklevel=2)
        clf = clf.to(self.device).eval()
        if self.device == "cpu":
            clf = optimize_for_cpu(clf)  # BatchNorm folded into convs + channels-last weights
        else:
            clf = clf.to(memory_format=torch.channels_last)  # cuDNN's fast NHWC kernels (bf16 tensor cores)
        return clf

    # -- scoring ------------------------------------------------------------------------------------------
    def scores(self, images: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
        """Decoded RGB images -> (breed log-probabilities (N, C), dog probability (N,)).

        Every member model sees every view; `combine_breeds` and `dog_probability` turn the raw outputs into the
        two scores, so ensembling/TTA and the dog detector can change independently.
        """
        outputs = self.outputs(images)
        return self.combine_breeds(outputs), self.dog_probability(outputs, len(images))

    def outputs(self, images: Sequence[Any]) -> list[MemberOutput]:
        """(member, view, (breed logits, ImageNet logits, pooled features)) for every member and view."""
        return self.outputs_from_tensors(self.prepare(images))

    def prepare(self, images: Sequence[Any]) -> list[np.ndarray]:
        """Decoded RGB images -> one normalised (N, 3, H, W) float32 batch per member (what decode workers
        compute)."""
        return [np.stack([to_array(preprocess_image(im, m.preprocess), m.preprocess.mean, m.preprocess.std)
                          for im in images]) for m in self.members]

    def outputs_from_tensors(self, xs: Sequence[Any]) -> list[MemberOutput]:
        """`prepare`'s batches (numpy arrays, or torch tensors from DataLoader workers) -> `outputs`: the network
        half, which callers that decode elsewhere use directly."""
        outputs: list[MemberOutput] = []
        for m, x in zip(self.members, xs, strict=True):
            views = {"plain": x, "flip": _flip(x)} if self.tta_flip else {"plain": x}
            for view, v in views.items():
                outputs.append(MemberOutput(m, view, self._run(m.model, v)))
        return outputs

    def combine_breeds(self, outputs: Sequence[MemberOutput]) -> np.ndarray:
        """Weighted mean of temperature-scaled log-probabilities over members and views.

        Log-probabilities rather than raw logits so members with differently scaled heads (an adapted head next to
        an ImageNet one) count alike; on stanford-subset the two tie and beat averaging probabilities by 0.1 pt.
        """
        total = sum(o.member.weight for o in outputs)
        t = np.float32(self.decision.temperature)
        logp = sum(np.float32(o.member.weight / total) * log_softmax(np.asarray(o.out.breed_logits, np.float32) / t)
                   for o in outputs)
        return log_softmax(logp)

    def dog_probability(self, outputs: Sequence[MemberOutput], n: int) -> np.ndarray:
        """Calibrated dog detector over members and views when loaded; else mean ImageNet dog mass (ones when no
        member has an ImageNet head)."""
        with_imagenet = [o for o in outputs if o.out.imagenet_logits.shape[-1]]
        if self.detector is not None:
            named = [(o.member.backbone, o.out.imagenet_logits, o.out.features) for o in with_imagenet]
            if any(b in self.detector.heads for b, _, _ in named):
                return self.detector.combine(named)
        dogs = [dog_mass(o.out.imagenet_logits) for o in with_imagenet]
        return np.stack(dogs).mean(0) if dogs else np.ones(n, dtype=np.float32)

    def _run(self, model: PredictionModel, x: Any) -> ModelOutputs:
        if isinstance(model, OnnxModel):
            return ModelOutputs(*model(x))
        import torch

        from .accel import run_module

        out = run_module(model, torch.as_tensor(x), self.device, self.precision)  # type: ignore[arg-type]
        return ModelOutputs(*(o.numpy() for o in out))

    # -- public -------------------------------------------------------------------------------------------
    def decide(self, logp: np.ndarray, dog: np.ndarray, paths: Sequence[str | None]) -> list[Prediction]:
        out = []
        k = min(self.top_k, len(self.classes))
        probs = np.exp(logp)
        top_i = np.argsort(-probs, axis=-1, kind="stable")[:, :k]
        top_p = np.take_along_axis(probs, top_i, -1)
        for row in range(len(paths)):
            breeds = [BreedScore(self.classes[i].wnid, self.classes[i].name, round(float(p), 6))
                      for p, i in zip(top_p[row].tolist(), top_i[row].tolist(), strict=True)]
            d = float(dog[row])
            if d < self.decision.dog_threshold:
                verdict = "no_dog"
            elif breeds[0].probability < self.decision.uncertain_threshold:
                verdict = "uncertain_breed"
            else:
                verdict = "dog"
            several = (verdict != "no_dog" and len(breeds) > 1
                       and breeds[1].probability >= self.decision.several_breeds_threshold)
            out.append(Prediction(paths[row], verdict, round(d, 6), breeds, several))
        return out

    def predict_images(self, images: Sequence[Any], paths: Sequence[str | None] | None = None) -> list[Prediction]:
        """Already-decoded RGB PIL images -> predictions."""
        paths = list(paths) if paths is not None else [None] * len(images)
        if not images:
            return []
        return self.predict_tensors(self.prepare(images), paths, images)

    def _cascade(self, dog: np.ndarray, outputs: Sequence[MemberOutput], paths: Sequence[str | None],
                 images: Sequence[Any] | None) -> np.ndarray:
        """Replace the dog probability of in-band photos by the cascade's second stage (its own preprocessing)."""
        c = self.detector.cascade
        band = np.flatnonzero((dog >= c.band[0]) & (dog <= c.band[1])).tolist()
        ims: dict[int, Any] = {}
        for r in band:
            if images is not None:
                ims[r] = images[r]
                continue
            try:  # decode again only what the band needs; a photo that fails now keeps its first score
                ims[r] = load_image(str(paths[r]), draft_size=self.draft_size)
            except (ImageDecodeError, OSError, TypeError):
                continue
        rows = list(ims)
        if not rows:
            return dog
        have: dict[tuple[str, str], np.ndarray] = {
            (c.first, "plain"): next(o.out.imagenet_logits for o in outputs if o.view == "plain")[rows]}
        for bb in c.extra_backbones():
            model, pre = self._cascade_member(bb)
            x = np.stack([to_array(preprocess_image(ims[r], pre), pre.mean, pre.std) for r in rows])
            for view in {v for b, v in c.second if b == bb}:
                have[(bb, view)] = self._run(model, _flip(x) if view == "flip" else x).imagenet_logits
        dog = dog.copy()
        dog[rows] = self.detector.combine([(b, have[(b, v)], None) for b, v in c.second]).astype(dog.dtype)
        return dog

    def _cascade_member(self, backbone: str) -> tuple[Any, Preprocess]:
        """The cascade's extra backbone (plain ImageNet head), loaded on first use so clear photos never pay."""
        if backbone not in self._cascade_models:
            cached = (cached_default_model(backbone, adapted=False, precision=self._session_precision())
                      if self._on_onnx() else None)
            if cached is not None:
                self._cascade_models[backbone] = (cached, cached.preprocess_cfg)
            else:
                from .models import default_classifier

                clf = default_classifier(backbone)
                model = self._place(clf)
                if isinstance(model, OnnxModel):
                    record_default_model(clf, model, adapted=False)
                self._cascade_models[backbone] = (model, clf.preprocess_cfg)
        return self._cascade_models[backbone]

    def predict_tensors(self, xs: Sequence[Any], paths: Sequence[str | None],
                        images: Sequence[Any] | None = None) -> list[Prediction]:
        """`prepare`'s batches (made by `batch.prepare_batch` in a decode thread or worker) -> predictions.

        ``images``: the decoded photos, when at hand, for the dog cascade's second member; otherwise the few photos
        it needs are decoded again from ``paths``.
        """
        outputs = self.outputs_from_tensors(xs)
        dog = self.dog_probability(outputs, len(paths))
        if self.dog_cascade:
            dog = self._cascade(dog, outputs, paths, images)
        preds = self.decide(self.combine_breeds(outputs), dog, paths)
        if self.gallery is not None:
            from .gallery import attach_look_alikes

            feats = next(o.out.features for o in outputs
                         if o.member.backbone == self.gallery.backbone and o.view == "plain")
            attach_look_alikes(preds, feats, self.gallery)
        return preds

    @property
    def draft_size(self) -> int:
        """Shorter side JPEGs may be decoded at: enough for the largest member's input."""
        sizes = [m.preprocess.draft_size for m in self.members]
        if self.dog_cascade:  # the cascade's member reads the same decoded photo at its own, larger size
            sizes += [get_spec(b).preprocess().draft_size for b in self.detector.cascade.extra_backbones()]
        return max(sizes)

    def iter_predict(self, sources: Sequence[str | Path | bytes], names: Sequence[str | None] | None = None,
                     ) -> Iterator[Prediction]:
        """Predict files or bytes in batches, yielding one result per source in order; bad ones carry ``error``."""
        names = list(names) if names is not None else [s if isinstance(s, str) else
                                                        (str(s) if isinstance(s, Path) else None) for s in sources]
        draft = self.draft_size
        for start in range(0, len(sources), self.batch_size):
            chunk = sources[start:start + self.batch_size]
            chunk_names = names[start:start + self.batch_size]
            images, ok_names, results = [], [], {}
            for j, src in enumerate(chunk):
                try:
                    images.append(load_image(src, draft_size=draft))
                    ok_names.append(j)
                except ImageDecodeError as e:
                    results[j] = Prediction(chunk_names[j], "error", 0.0, [], error=str(e))
            for j, pred in zip(ok_names, self.predict_images(images, [chunk_names[j] for j in ok_names]),
                               strict=True):
                results[j] = pred
            for j in range(len(chunk)):
                yield results[j]

    def predict(self, sources: Sequence[str | Path | bytes], names: Sequence[str | None] | None = None,
                ) -> list[Prediction]:
        return list(self.iter_predict(sources, names))


def _flip(x: Any) -> Any:
    """Mirror a batch left-right: numpy (contiguous, so torch and ONNX Runtime take it as is) or torch."""
    return np.ascontiguousarray(x[..., ::-1]) if isinstance(x, np.ndarray) else x.flip(-1)


def _onnxruntime_available() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


_PREDICTORS: dict[tuple, Predictor] = {}


def get_predictor(options: PredictOptions | None = None, **kwargs: Any) -> Predictor:
    """A cached `Predictor` per set of options (top_k aside), so repeated library calls don't reload weights."""
    opts = dataclasses.replace(options or PredictOptions(), **kwargs)
    key = tuple(sorted((k, repr(v)) for k, v in vars(opts).items() if k != "top_k"))
    if key not in _PREDICTORS:
        _PREDICTORS[key] = opts.predictor()
    return _PREDICTORS[key]


def predict(images: str | Path | bytes | Sequence[str | Path | bytes], top_k: int = 5, model: str = "default",
            quality: str = "fast", **kwargs: Any) -> list[dict[str, Any]]:
    """Library entry point: paths/folders/globs/bytes -> list of plain-dict predictions, in input order.

    ``kwargs`` are the other `PredictOptions` fields (runtime, device, dog_detector, ...).
    """
    if isinstance(images, (str, Path, bytes)):
        images = [images]
    sources: list[str | Path | bytes] = []
    for item in images:
        sources += [item] if isinstance(item, bytes) else expand_inputs([item])
    pred = get_predictor(PredictOptions(model=model, quality=quality, top_k=top_k, **kwargs))
    pred.top_k = top_k
    return [p.to_dict() for p in pred.predict(sources)]
