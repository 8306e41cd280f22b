"""One place that turns a model spec into loaded classifiers: every front end and job resolves ``--model`` here.

Specs: ``"default"`` (the packaged backbones with the adapted breed heads and the decision settings fitted for them),
``"imagenet"`` (the plain ImageNet head restricted to the 120 breeds, uncalibrated), a model dir, a run dir (its
``model/``), or an ``.onnx`` file written by ``dogbreed export``. Any failure to load is a `ModelLoadError` that
names the file and says what is wrong.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ModelLoadError
from .fileio import read_json
from .onnxrun import OnnxClassifier, cached_default_model
from .specs import DEFAULT_BACKBONE, SHIPPED_HEADS

if TYPE_CHECKING:
    from .models import Classifier

PACKAGED = ("default", "imagenet")
# `quality="best"`: all three packaged backbones at their own resolutions, equal weights, plain + flip views,
# mean of log-probabilities. Chosen on stanford-subset (2,410 photos: 83.2% vs 79.5% for Lite0 alone; every
# subset of members and logit/log-prob/prob averaging measured in bench/accuracy.py), not on imagenet-val-dogs.
BEST_BACKBONES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
QUALITIES = ("fast", "best")


@dataclass
class ResolvedModel:
    """What a spec loads to: one classifier per ensemble member, and the settings that travel with the model."""

    spec: str
    kind: str  # "default" | "imagenet" | "model_dir" | "onnx"
    classifiers: list[Classifier | OnnxClassifier]
    decision: dict[str, Any] = field(default_factory=dict)  # `predict.Decision` fields stored with the model
    config: dict[str, Any] = field(default_factory=dict)  # model.json or the .onnx sidecar; {} when packaged
    path: Path | None = None  # the model dir (a run dir's model/) or the .onnx file
    # A fine-tuned backbone: the shipped dog detector and galleries, which read the pretrained one, do not apply.
    backbone_in_weights: bool = False

    @property
    def classifier(self) -> Classifier | OnnxClassifier:
        """The single classifier of a one-member model (everything but ``default``/``imagenet`` at quality best)."""
        if len(self.classifiers) != 1:
            raise ModelLoadError(f"model {self.spec!r} is an ensemble of {len(self.classifiers)} classifiers here; "
                                 "use quality 'fast' for one")
        return self.classifiers[0]


def shipped_decision(quality: str) -> dict[str, Any]:
    """Decision settings (temperature, uncertain_threshold) fitted for the shipped heads in this quality mode."""
    js = resources.files("dogbreed").joinpath("data", f"{SHIPPED_HEADS}.json")
    if not js.is_file():
        raise FileNotFoundError(f"package data {SHIPPED_HEADS}.json missing; run scripts/fit_default_heads.py "
                                "--part heads")
    return dict(json.loads(js.read_text()).get("decision", {}).get(quality, {}))


def packaged_backbones(quality: str, backbone: str | None = None) -> list[str]:
    """The packaged backbones a quality mode runs (one named ``backbone`` instead, when given)."""
    return [backbone] if backbone else ([DEFAULT_BACKBONE] if quality == "fast" else list(BEST_BACKBONES))


def _packaged(spec: str, quality: str, backbone: str | None, cached_onnx: bool = False,
              precision: str = "fp32") -> ResolvedModel:
    adapted = spec == "default"
    names = packaged_backbones(quality, backbone)
    try:
        cached = [cached_default_model(n, adapted, precision=precision) for n in names] if cached_onnx else []
        if cached and all(c is not None for c in cached):
            clfs: list[Classifier | OnnxClassifier] = cached  # type: ignore[assignment]
        else:
            from .models import default_classifier  # torch: only when no cached export will do

            clfs = [default_classifier(n, adapted=adapted) for n in names]
    except (ValueError, KeyError, FileNotFoundError, RuntimeError) as e:
        raise ModelLoadError(f"model {spec!r} with backbone {', '.join(names)}: {e}") from e
    # The shipped temperature and threshold were fitted per quality mode for exactly these backbones.
    fitted = backbone is None or (quality == "fast" and backbone == DEFAULT_BACKBONE)
    decision = shipped_decision(quality) if adapted and fitted else {}
    return ResolvedModel(spec, spec, clfs, decision)


def model_outline(spec: str | Path, quality: str = "fast") -> tuple[list[str], bool]:
    """A model's member backbones and whether it fine-tuned its backbone, read from its config alone (nothing is
    loaded): what a driver must know before its workers load the model (e.g. which columns their rows carry)."""
    text = str(spec)
    if text in PACKAGED:
        return packaged_backbones(quality), False
    if text.lower().endswith(".onnx"):
        from .onnxrun import sidecar_path

        cfg = read_json(sidecar_path(text), "ONNX sidecar")
    else:
        from .models import MODEL_CONFIG, model_dir_of

        model_dir = model_dir_of(text)
        if model_dir is None:
            raise ModelLoadError(f"model {text!r}: not 'default' or 'imagenet', a model dir, run dir or .onnx file")
        cfg = read_json(model_dir / MODEL_CONFIG, "model config")
    return [str(cfg.get("backbone", "onnx"))], bool(cfg.get("backbone_in_weights"))


def resolve_model(spec: str | Path, *, quality: str = "fast", backbone: str | None = None,
                  cached_onnx: bool = False, precision: str = "fp32") -> ResolvedModel:
    """Load what ``spec`` names (see the module docstring).

    ``quality`` ("fast" or "best") picks one packaged backbone or the three-backbone ensemble for ``default`` and
    ``imagenet``; ``backbone`` asks for one packaged backbone by name instead. Both are ignored for files.
    ``cached_onnx``: for a packaged model, return ONNX Runtime sessions of its cached export when every member has
    one (`onnxrun.cached_default_model`) instead of building the PyTorch models: a faster start for callers that
    would run ONNX Runtime anyway. ``precision``: of those sessions and of an ``.onnx`` file's ("fp32" on ONNX
    Runtime, "bf16" on OpenVINO; `onnxrun.OnnxModel`).
    """
    if quality not in QUALITIES:
        raise ModelLoadError(f"quality must be 'fast' or 'best', not {quality!r}")
    text = str(spec)
    if text in PACKAGED:
        return _packaged(text, quality, backbone, cached_onnx, precision)
    if text.lower().endswith(".onnx"):
        onnx = OnnxClassifier(text, precision=precision)  # raises ModelLoadError itself
        return ResolvedModel(text, "onnx", [onnx], dict(onnx.decision), dict(onnx.config), Path(text),
                             bool(onnx.config.get("backbone_in_weights")))
    from .models import load_model_dir, model_dir_of

    model_dir = model_dir_of(text)
    if model_dir is None:
        path = Path(text)
        why = ("that folder has no model.json (nor model/model.json)" if path.is_dir()
               else "no such file or folder" if not path.exists() else "not a model dir, run dir or .onnx file")
        raise ModelLoadError(f"model {text!r}: not 'default' or 'imagenet', and {why}")
    clf, cfg = load_model_dir(model_dir)
    return ResolvedModel(text, "model_dir", [clf], dict(cfg.get("decision") or {}), cfg, model_dir,
                         bool(cfg.get("backbone_in_weights")))
