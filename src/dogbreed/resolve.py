"""One place that turns a model spec into loaded classifiers: every front end and job resolves ``--model`` here.

Specs: ``"default"`` (the packaged backbones with the adapted breed heads and the decision settings fitted for them),
``"imagenet"`` (the plain ImageNet head restricted to the 120 breeds, uncalibrated), a model dir, a run dir (its
``model/``), or an ``.onnx`` file written by ``dogbreed export``. Any failure to load is a `ModelLoadError` that
names the file and says what is wrong: a damaged model.json names the key (`models.check_model_config`, before any
weights load). A spec naming nothing says what it may have meant: a name close to ``default`` or ``imagenet``
("defualt", "Default") gets "did you mean 'default'?", an empty one is refused (it had been read as the current
folder), and a folder with no model.json that holds exactly one model (an ``.onnx`` file, in it or in its
``model/``, or a model or run dir) names it; it is not taken for that model, so a spec means the same thing
whatever else lands in the folder later, and callers that treat an ``.onnx`` file apart still see the spec's text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ModelLoadError
from .fileio import read_json
from .onnxrun import OnnxClassifier, cached_default_model, sidecar_path
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


# ---------------------------------------------------------------------------------------------------------------
# Specs that name nothing: one sentence saying what was meant, where that can be told.

def _check_spec(text: str) -> None:
    # Path("") is the current folder: an empty --model (an unset shell variable) loaded whatever model sat there.
    if not text.strip():
        raise ModelLoadError(f"model {text!r}: an empty model name; give 'default', 'imagenet', a model dir, run dir "
                             "or .onnx file")


def _meant_inside(folder: Path) -> list[Path]:
    """What in ``folder`` a user may have meant: its .onnx files and its subfolders that are model or run dirs, and
    the .onnx files in its model/ (where a run dir keeps its model)."""
    from .models import model_dir_of

    found = []
    for where in (folder, folder / "model"):
        try:
            entries = sorted(where.iterdir()) if where.is_dir() else []
        except OSError:
            continue
        found += [p for p in entries if (p.suffix.lower() == ".onnx" and p.is_file())
                  or (where == folder and p.is_dir() and model_dir_of(p) is not None)]
    return found


def _not_a_model(text: str) -> ModelLoadError:
    """Why ``text`` names no model. A folder holding exactly one model (an .onnx file, a model dir) is not taken
    for it but named: "did you mean 'exp/model.onnx'?". Taking it would change what a spec means when a second
    model lands there, and callers that treat an .onnx file apart (adapt refuses one) decide on the spec's text."""
    path = Path(text)
    if not path.exists():
        from .models import did_you_mean

        hint = did_you_mean(text.strip(), PACKAGED, cutoff=0.75) if not any(c in text for c in "/\\.") else ""
        why = f"no such file or folder{hint}"
    elif path.is_dir():
        why = "that folder has no model.json (nor model/model.json)"
        inside = _meant_inside(path)
        if len(inside) == 1:
            why += f"; did you mean {str(inside[0])!r}?"
        elif inside:
            names = ", ".join(str(p.relative_to(path)) for p in inside[:4]) + (", ..." if len(inside) > 4 else "")
            why += f"; it holds {len(inside)} models ({names}): give one of them"
    else:
        why = "not a model dir, run dir or .onnx file"
    return ModelLoadError(f"model {text!r}: not 'default' or 'imagenet', and {why}")


def model_outline(spec: str | Path, quality: str = "fast") -> tuple[list[str], bool]:
    """A model's member backbones and whether it fine-tuned its backbone, read from its config alone (nothing is
    loaded): what a driver must know before its workers load the model (e.g. which columns their rows carry)."""
    cfg = _config_of(spec)
    if cfg is None:
        return packaged_backbones(quality), False
    return [str(cfg.get("backbone", "onnx"))], bool(cfg.get("backbone_in_weights"))


def model_breeds(spec: str | Path) -> int:
    """How many breeds a model knows, read from its config alone (the most breeds an answer lists)."""
    cfg = _config_of(spec)
    if cfg is None:
        from .breeds import stanford_breeds

        return len(stanford_breeds())
    return len(cfg.get("classes") or [])


def _config_of(spec: str | Path) -> dict[str, Any] | None:
    """A model dir's model.json or an .onnx file's sidecar, checked; None for the packaged models."""
    text = str(spec)
    _check_spec(text)
    if text in PACKAGED:
        return None
    if text.lower().endswith(".onnx"):
        return read_json(sidecar_path(text), "ONNX sidecar")
    from .models import MODEL_CONFIG, model_dir_of, read_model_config

    model_dir = model_dir_of(text)
    if model_dir is None:
        raise _not_a_model(text)
    return read_model_config(model_dir / MODEL_CONFIG, complete=False)


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
    _check_spec(text)
    if text in PACKAGED:
        return _packaged(text, quality, backbone, cached_onnx, precision)
    if text.lower().endswith(".onnx"):
        onnx = OnnxClassifier(text, precision=precision)  # raises ModelLoadError itself
        return ResolvedModel(text, "onnx", [onnx], dict(onnx.decision), dict(onnx.config), Path(text),
                             bool(onnx.config.get("backbone_in_weights")))
    from .models import load_model_dir, model_dir_of

    model_dir = model_dir_of(text)
    if model_dir is None:
        raise _not_a_model(text)
    clf, cfg = load_model_dir(model_dir)
    return ResolvedModel(text, "model_dir", [clf], dict(cfg.get("decision") or {}), cfg, model_dir,
                         bool(cfg.get("backbone_in_weights")))
