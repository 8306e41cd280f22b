"""Models: the breed classifier (backbone + head), its on-disk format, and the from-scratch CNN presets."""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load, save
from torch import nn

from .backbones import Backbone, BackboneSpec, create_backbone, get_spec
from .breeds import Breed, stanford_breeds
from .errors import ModelLoadError, WriteError
from .fileio import atomic_write_pair, out_folder, read_json, read_safetensors, say_once, writing
from .specs import DEFAULT_BACKBONE, REGISTRY, SHIPPED_HEADS
from .transforms import _INTERP, RESIZE_MODES, Preprocess

MODEL_CONFIG = "model.json"
MODEL_WEIGHTS = "model.safetensors"


class Classifier(nn.Module):
    """Backbone + breed head, plus the backbone's ImageNet head for the dog score.

    ``forward`` returns ``(breed_logits, imagenet_logits, features)``. imagenet_logits is an empty (B, 0)
    tensor when the backbone has no ImageNet head, so the graph stays exportable to ONNX.
    """

    def __init__(self, backbone: Backbone, breed_head: nn.Module, classes: Sequence[Breed],
                 preprocess: Preprocess):
        super().__init__()
        self.backbone = backbone
        self.breed_head = breed_head
        self.classes = list(classes)
        self.preprocess_cfg = preprocess

    @property
    def backbone_name(self) -> str:
        return self.backbone.spec.name

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        f = self.backbone(x)
        imnet = self.backbone.imagenet_head(f) if self.backbone.imagenet_head is not None else f[:, :0]
        return self.breed_head(f), imnet, f


def imagenet_breed_head(backbone: Backbone, classes: Sequence[Breed]) -> nn.Linear:
    """A head made of the ImageNet head's rows for the breeds: zero training, all breeds covered."""
    fc = backbone.imagenet_head
    if fc is None:
        raise ValueError(f"{backbone.spec.name} has no ImageNet head; train a model first (dogbreed train)")
    idx = torch.tensor([b.imagenet_index for b in classes])
    head = nn.Linear(fc.in_features, len(classes))
    with torch.no_grad():
        head.weight.copy_(fc.weight[idx])
        head.bias.copy_(fc.bias[idx])
    return head


def default_classifier(backbone: str = DEFAULT_BACKBONE, adapted: bool = False) -> Classifier:
    """A packaged ImageNet backbone with its head restricted to the 120 breeds.

    ``adapted=True`` swaps in the heads fitted on stanford-dogs and natural photos that ship with the package (see
    `shipped_heads`); that is what `Predictor(model="default")` runs. The plain head stays the default here because
    the feature cache is keyed by the weights: extraction, the dog detector and `adapt` all read the plain
    classifier's features, which the adapted rows do not change.
    """
    bb = create_backbone(backbone, pretrained=True)
    classes = stanford_breeds()
    head = imagenet_breed_head(bb, classes)
    if adapted:
        apply_shipped_rows(head, backbone)
    return Classifier(bb, head, classes, get_spec(backbone).preprocess())


# ---------------------------------------------------------------------------------------------------------------
# Adapted breed heads shipped as package data (data/breed_heads.{safetensors,json}, written by
# scripts/fit_default_heads.py --part heads): per backbone only the rows that moved away from the ImageNet head
# (`<backbone>.rows` int64, `<backbone>.weight`, `<backbone>.bias`), plus provenance and the decision settings
# (temperature, uncertain threshold) per quality mode in the JSON.

def shipped_heads() -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(JSON metadata, tensors) of the adapted heads in the package; raises FileNotFoundError when absent."""

    root = resources.files("dogbreed").joinpath("data")
    js, st = root.joinpath(f"{SHIPPED_HEADS}.json"), root.joinpath(f"{SHIPPED_HEADS}.safetensors")
    if not (js.is_file() and st.is_file()):
        raise FileNotFoundError(f"package data {SHIPPED_HEADS}.json/.safetensors missing; "
                                "run scripts/fit_default_heads.py --part heads")
    return json.loads(js.read_text()), load(st.read_bytes())


def apply_shipped_rows(head: nn.Linear, backbone: str) -> nn.Linear:
    """Overwrite, in place, the rows of an ImageNet breed head that the shipped adaptation changed."""
    _, tensors = shipped_heads()
    if f"{backbone}.rows" not in tensors:
        raise ValueError(f"no adapted breed head ships for {backbone}; use the ImageNet head (model='imagenet')")
    rows = tensors[f"{backbone}.rows"].long()
    with torch.no_grad():
        head.weight[rows] = tensors[f"{backbone}.weight"].to(head.weight.dtype)
        head.bias[rows] = tensors[f"{backbone}.bias"].to(head.bias.dtype)
    return head


# ---------------------------------------------------------------------------------------------------------------
# On-disk model format: a folder with model.json (backbone, preprocessing, classes, decision, extra) and
# model.safetensors (breed head; backbone weights only when they were changed by fine-tuning).


def model_dir_of(path: str | Path) -> Path | None:
    """The model dir ``path`` names: itself when it holds model.json, a run dir's ``model/``, else None.

    The one place that tells a run dir from a model dir.
    """
    p = Path(path)
    if (p / MODEL_CONFIG).is_file():
        return p
    if (p / "model" / MODEL_CONFIG).is_file():
        return p / "model"
    return None


def model_out(path: str | Path, overwrite: bool = False) -> Path:
    """Check, before a command's slow work, that ``path`` can take a model dir (`fileio.out_folder`) and holds no
    model already, unless ``overwrite``: `add-breed --out my_model` replaced a model the user had spent an
    adapt run on, without a word."""
    out = out_folder(path)
    if not overwrite and any((out / name).exists() for name in (MODEL_CONFIG, MODEL_WEIGHTS)):
        raise WriteError(str(out), "it already holds a model",
                         hint="give another folder, or --overwrite (overwrite=True) to replace that model")
    return out


def save_model_dir(clf: Classifier, path: str | Path, *, decision: dict[str, Any] | None = None,
                   save_backbone: bool = False, extra: dict[str, Any] | None = None) -> Path:
    """Write a classifier so `Predictor(model=path)` and `dogbreed predict --model path` can load it."""
    out = Path(path)
    with writing(out):  # /sys/x, a read-only disk: one sentence, not PermissionError's traceback
        out.mkdir(parents=True, exist_ok=True)
    tensors = {f"breed_head.{k}": v.detach().cpu().contiguous() for k, v in clf.breed_head.state_dict().items()}
    arch = getattr(clf.backbone, "arch", None)  # set on from-scratch CNNs, which have no packaged weights
    save_backbone = save_backbone or arch is not None
    if save_backbone:
        tensors.update({f"backbone.{k}": v.detach().cpu().contiguous()
                        for k, v in clf.backbone.state_dict().items()})
    head_cfg = getattr(clf.breed_head, "config", None) or {"type": "linear"}
    cfg = {
        "format": MODEL_FORMAT,
        "backbone": clf.backbone.spec.name,
        "backbone_in_weights": save_backbone,
        "head": head_cfg,
        "preprocess": clf.preprocess_cfg.to_dict(),
        "classes": [{"wnid": b.wnid, "name": b.name, "imagenet_index": b.imagenet_index} for b in clf.classes],
        "decision": decision or {},
        "extra": extra or {},
    }
    if arch is not None:
        cfg["cnn"] = arch
    atomic_write_pair((out / MODEL_WEIGHTS, save(tensors)), (out / MODEL_CONFIG, json.dumps(cfg, indent=2).encode()))
    return out


HEAD_TYPES = ("linear", "dropout_linear")


def build_head(cfg: dict[str, Any], in_features: int, num_classes: int) -> nn.Module:
    """Breed heads as data: 'linear' (GAP features -> logits) or 'dropout_linear' (dropout, then linear)."""
    kind = cfg.get("type", "linear")
    if kind == "linear":
        head: nn.Module = nn.Linear(in_features, num_classes)
    elif kind == "dropout_linear":
        head = nn.Sequential(nn.Dropout(cfg.get("dropout", 0.2)), nn.Linear(in_features, num_classes))
    else:
        raise ValueError(f"unknown head type {kind!r}")
    head.config = dict(cfg)  # type: ignore[attr-defined]
    return head


# model.json is checked where it is read, before any weights load: a wrong type or value used to pass the loader and
# fail later as a traceback (size "224"), a NaN (temperature 0), nonsense answers (temperature -1) or an error row
# for every photo (resize "centre_crop").

MODEL_FORMAT = "dogbreed-model/1"
MODEL_FORMATS = (MODEL_FORMAT,)  # every model.json format this version reads; a newer one is refused, not guessed
# What `save_model_dir` writes. Anything of the user's own belongs under "extra", so a key outside these was
# not written by dogbreed: a typo of one of them is refused (it would drop that setting without a word), any other
# is said once and ignored.
MODEL_KEYS = ("format", "backbone", "backbone_in_weights", "head", "preprocess", "classes", "decision", "extra", "cnn")
REQUIRED_KEYS = ("backbone", "preprocess", "classes")
# `inference.scoring.Decision`'s fields (not imported: scoring brings the runners in); a test keeps them the same.
DECISION_KEYS = ("dog_threshold", "uncertain_threshold", "several_breeds_threshold", "temperature")
MAX_INPUT_SIZE = 4096  # beyond it one photo's input alone is hundreds of MB; no model of this package comes near


def _closest(word: object, choices: Iterable[str], cutoff: float = 0.6) -> str | None:
    options = {c.lower(): c for c in choices}
    close = difflib.get_close_matches(str(word).lower(), list(options), n=1, cutoff=cutoff)
    return options[close[0]] if close else None


def did_you_mean(word: object, choices: Iterable[str], cutoff: float = 0.6) -> str:
    """" (did you mean 'x'?)" for the choice closest to ``word`` (case-insensitively), or "" when none is close."""
    close = _closest(word, choices, cutoff)
    return f" (did you mean {close!r}?)" if close else ""


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _bad(path: Path, key: str, want: str, value: object, hint: str = "") -> ModelLoadError:
    return ModelLoadError(f"{path}: {key} must be {want}, not {_shown(value)}{hint}")


def _check_choice(path: Path, key: str, value: object, choices: Iterable[str]) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise _bad(path, key, f"one of {', '.join(map(repr, choices))}", value, did_you_mean(value, choices))


def _check_keys(path: Path, section: str, given: dict[str, Any], known: Iterable[str]) -> None:
    known = tuple(known)
    for k in given:
        if k not in known:
            raise ModelLoadError(f"{path}: {section} has an unknown key {k!r}{did_you_mean(k, known)}; known: "
                                 f"{', '.join(known)}")


def _check_preprocess(path: Path, pre: object) -> None:
    if not isinstance(pre, dict):
        raise _bad(path, "preprocess", "an object of preprocessing settings", pre)
    fields = Preprocess.__dataclass_fields__
    _check_keys(path, "preprocess", pre, fields)
    for k, v in pre.items():
        key = f"preprocess.{k}"
        if k == "size":
            if not (isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_INPUT_SIZE):
                raise _bad(path, key, f"a whole number of pixels from 1 to {MAX_INPUT_SIZE}", v)
        elif k == "resize":
            _check_choice(path, key, v, RESIZE_MODES)
        elif k == "interpolation":
            _check_choice(path, key, v, _INTERP)
        elif k == "crop_pct":
            if not (_is_number(v) and 0 < v <= 1):
                raise _bad(path, key, "a number above 0 and at most 1", v)
        elif k == "box_margin":
            if not (_is_number(v) and v >= 0):
                raise _bad(path, key, "a number of 0 or more", v)
        elif k in ("mean", "std"):
            ok = isinstance(v, (list, tuple)) and len(v) == 3 and all(_is_number(x) for x in v)
            if not ok or (k == "std" and min(v) <= 0):
                raise _bad(path, key, "3 numbers, one per colour channel" + (", each above 0" if k == "std" else ""),
                           v)
        elif fields[k].type in (bool, "bool") and not isinstance(v, bool):
            raise _bad(path, key, "true or false", v)


def _check_classes(path: Path, classes: object) -> None:
    if not (isinstance(classes, list) and classes):
        raise _bad(path, "classes", "a non-empty list of breeds, each an object with a name", classes)
    for i, c in enumerate(classes):
        key = f"classes[{i}]"
        if not isinstance(c, dict):
            raise _bad(path, key, "an object with a name", c)
        if not (isinstance(c.get("name"), str) and c["name"].strip()):
            raise _bad(path, f"{key}.name", "a breed name", c.get("name"))
        if c.get("wnid") is not None and not isinstance(c["wnid"], str):
            raise _bad(path, f"{key}.wnid", "a WordNet id such as 'n02085620', or null", c["wnid"])
        index = c.get("imagenet_index")
        if index is not None and not (isinstance(index, int) and not isinstance(index, bool) and index >= 0):
            raise _bad(path, f"{key}.imagenet_index", "a row of the ImageNet head (0 or more), or null", index)


def _check_decision(path: Path, decision: object) -> None:
    if decision is None:
        return
    if not isinstance(decision, dict):
        raise _bad(path, "decision", "an object of decision settings", decision)
    _check_keys(path, "decision", decision, DECISION_KEYS)
    for k, v in decision.items():
        if k == "temperature":
            if not (_is_number(v) and v > 0):
                raise _bad(path, "decision.temperature", "a number above 0", v)
        elif not (_is_number(v) and 0 <= v <= 1):
            raise _bad(path, f"decision.{k}", "a probability from 0 to 1", v)


def check_model_config(cfg: dict[str, Any], path: str | Path, *, complete: bool = True) -> dict[str, Any]:
    """Check a model.json (``path`` names it in the message) and return it; every problem is a `ModelLoadError` of
    one sentence naming the file and the key.

    ``complete``: also require what loading a model needs (`REQUIRED_KEYS`); `resolve.model_outline`, which reads
    the backbone alone, checks only the keys that are there. A model.json without "format" is read as
    `MODEL_FORMAT`, the only one there has been. The head and CNN architecture, which only loading reads, are
    checked by `load_model_dir`.
    """
    path = Path(path)
    fmt = cfg.get("format", MODEL_FORMAT)
    if fmt not in MODEL_FORMATS:
        raise ModelLoadError(f"{path}: format {_shown(fmt)} is not one this dogbreed reads "
                             f"({', '.join(map(repr, MODEL_FORMATS))}); a newer dogbreed may have written it")
    unknown = [k for k in cfg if k not in MODEL_KEYS]
    for k in unknown:
        if hint := did_you_mean(k, MODEL_KEYS, cutoff=0.8):
            raise ModelLoadError(f"{path}: unknown key {k!r}{hint}; known: {', '.join(MODEL_KEYS)}")
    if unknown:
        say_once(f"{path}: ignoring the unknown key{'s' * (len(unknown) > 1)} {', '.join(map(repr, unknown))} "
                 '(entries of your own belong under "extra")', key=f"model.json keys {path} {unknown}")
    if complete and (missing := [k for k in REQUIRED_KEYS if k not in cfg]):
        raise ModelLoadError(f"{path}: not a model config (missing {', '.join(missing)}); "
                             "write model dirs with dogbreed train, adapt or add-breed")
    if "backbone" in cfg:
        bb = cfg["backbone"]
        known = (*REGISTRY, CNN_BACKBONE)
        if not isinstance(bb, str) or not (bb in known or bb.startswith("timm:")):
            raise _bad(path, "backbone", f"one of {', '.join(map(repr, known))} or 'timm:<model>'", bb,
                       did_you_mean(bb, known))
    if "backbone_in_weights" in cfg and not isinstance(cfg["backbone_in_weights"], bool):
        raise _bad(path, "backbone_in_weights", "true or false", cfg["backbone_in_weights"])
    if "preprocess" in cfg:
        _check_preprocess(path, cfg["preprocess"])
    if "classes" in cfg:
        _check_classes(path, cfg["classes"])
    if "decision" in cfg:
        _check_decision(path, cfg["decision"])
    if "extra" in cfg and not isinstance(cfg["extra"], dict):
        raise _bad(path, "extra", "an object", cfg["extra"])
    return cfg


def read_model_config(path: str | Path, *, complete: bool = True) -> dict[str, Any]:
    """A model dir's model.json, read and checked (`check_model_config`)."""
    return check_model_config(read_json(path, "model config"), path, complete=complete)


def _read_model_json(path: Path) -> dict[str, Any]:
    """model.json read and checked (`check_model_config`), with the parts only loading reads: the head and a CNN's
    architecture."""
    cfg = read_model_config(path)
    head = cfg.get("head", {"type": "linear"})
    if not isinstance(head, dict):
        raise _bad(path, "head", 'an object such as {"type": "linear"}', head)
    _check_choice(path, "head.type", head.get("type", "linear"), HEAD_TYPES)
    drop = head.get("dropout", 0.0)
    if not (_is_number(drop) and 0 <= drop <= 1):  # train's head.dropout takes 0..1 inclusive
        raise _bad(path, "head.dropout", "a number from 0 to 1", drop)
    if cfg["backbone"] == CNN_BACKBONE:
        try:
            cnn_arch(cfg.get("cnn"))
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            # TypeError and the like: "blocks": 5 and other shapes cnn_arch does not expect
            raise ModelLoadError(f"{path}: cnn is not a CNN architecture ({type(e).__name__}: "
                                 f"{str(e).splitlines()[0][:200]})") from None
    return cfg


def load_model_dir(path: str | Path) -> tuple[Classifier, dict[str, Any]]:
    """Load a saved classifier (a model dir, or a run dir's ``model/``); returns it with its config.

    Raises `ModelLoadError` naming the file when anything is missing, truncated or inconsistent.
    """
    p = model_dir_of(path)
    if p is None:
        raise ModelLoadError(f"{path}: no {MODEL_CONFIG} there (nor in model/); not a model or run dir")
    cfg = _read_model_json(p / MODEL_CONFIG)
    tensors = read_safetensors(p / MODEL_WEIGHTS)
    try:
        if cfg["backbone"] == CNN_BACKBONE:
            pre = cfg["preprocess"]
            bb = build_cnn_backbone(cfg.get("cnn"), pre["size"], pre["mean"], pre["std"])
        else:
            bb = create_backbone(cfg["backbone"], pretrained=not cfg.get("backbone_in_weights", False))
        if cfg.get("backbone_in_weights"):
            bb.load_state_dict({k[len("backbone."):]: v for k, v in tensors.items() if k.startswith("backbone.")})
        classes = [Breed(c.get("wnid"), c["name"], c.get("imagenet_index")) for c in cfg["classes"]]
        head = build_head(cfg.get("head", {"type": "linear"}), bb.spec.feature_dim, len(classes))
        head.load_state_dict({k[len("breed_head."):]: v for k, v in tensors.items() if k.startswith("breed_head.")})
        clf = Classifier(bb, head, classes, Preprocess.from_dict(cfg["preprocess"]))
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        # RuntimeError: load_state_dict on missing/mis-shaped tensors; KeyError/TypeError: a damaged model.json.
        raise ModelLoadError(f"{p}: model.json and model.safetensors do not make a model "
                             f"({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    return clf.eval(), cfg


# ---------------------------------------------------------------------------------------------------------------
# From-scratch CNN presets, built from a config dict (one builder, no subclass per preset). The CNN is a
# `Backbone` (conv blocks -> flatten or GAP -> hidden dense layers) whose features feed an ordinary breed head, so
# `Classifier`, the model-dir format, ONNX export and `Predictor` treat it like any pretrained backbone.

CNN_BACKBONE = "cnn"
CNN_DEFAULTS: dict[str, Any] = {
    "blocks": [{"filters": 32, "kernel": 3, "pool": 2, "pool_stride": 2}],
    "activation": "relu",  # relu | tanh | elu | gelu
    "batchnorm": False,  # BatchNorm before the activation, in conv blocks and hidden dense layers
    "conv_dropout": 0.0,  # after each conv block's pooling
    "dense": [128],  # hidden dense widths; the breed head (dense num_classes) comes after them
    "dense_dropout": 0.0,  # after each hidden dense layer
    "gap": False,  # global average pooling instead of flatten
}
_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU, "gelu": nn.GELU}
CNN_BLOCK: dict[str, Any] = {"filters": 32, "kernel": 3, "pool": 2, "pool_stride": None}  # None: the pool's size


def _did_you_mean(unknown: set[str], known: dict[str, Any]) -> str:
    close = [c for u in sorted(unknown) if (c := _closest(u, known))]
    return f" (did you mean {', '.join(map(repr, close))}?)" if close else ""


def cnn_arch(cfg: dict[str, Any] | None) -> dict[str, Any]:
    """The full architecture dict: defaults filled in, block entries completed (saved with the model)."""
    arch = {**CNN_DEFAULTS, **(cfg or {})}
    unknown = set(arch) - set(CNN_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown CNN settings {sorted(unknown)}{_did_you_mean(unknown, CNN_DEFAULTS)}; known: "
                         f"{sorted(CNN_DEFAULTS)}")
    blocks = []
    for i, b in enumerate(arch["blocks"]):
        if not isinstance(b, dict):
            raise ValueError(f"blocks[{i}] must be a mapping like {CNN_BLOCK}, not {b!r}")
        # a misspelt key ("kernl: 5") trained the default silently and was recorded as asked
        if unknown := set(b) - set(CNN_BLOCK):
            raise ValueError(f"unknown block settings {sorted(unknown)} in blocks[{i}]"
                             f"{_did_you_mean(unknown, CNN_BLOCK)}; known: {sorted(CNN_BLOCK)}")
        b = {**CNN_BLOCK, **b}
        b["pool_stride"] = b.get("pool_stride") or b["pool"]
        blocks.append(b)
    arch["blocks"] = blocks
    arch["dense"] = list(arch["dense"] or [])
    if arch["activation"] not in _ACTIVATIONS:
        raise ValueError(f"unknown activation {arch['activation']!r}; choose from {sorted(_ACTIVATIONS)}")
    return arch


def build_cnn_backbone(cfg: dict[str, Any] | None, input_size: int = 128,
                       mean: Sequence[float] = (0.485, 0.456, 0.406),
                       std: Sequence[float] = (0.229, 0.224, 0.225)) -> Backbone:
    """Conv ('same' padding) [+BN] + activation + max-pool ('valid') per block, then flatten/GAP + dense layers."""
    arch = cnn_arch(cfg)
    act = _ACTIVATIONS[arch["activation"]]
    layers: list[nn.Module] = []
    ch, side = 3, input_size
    for b in arch["blocks"]:
        layers.append(nn.Conv2d(ch, b["filters"], b["kernel"], padding="same"))
        if arch["batchnorm"]:
            layers.append(nn.BatchNorm2d(b["filters"]))
        layers += [act(), nn.MaxPool2d(b["pool"], b["pool_stride"])]
        if arch["conv_dropout"]:
            layers.append(nn.Dropout(arch["conv_dropout"]))
        ch, side = b["filters"], (side - b["pool"]) // b["pool_stride"] + 1
        if side < 1:
            raise ValueError(f"input {input_size}px is too small for these conv/pool blocks")
    if arch["gap"]:
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        width = ch
    else:
        layers.append(nn.Flatten())
        width = ch * side * side
    for d in arch["dense"]:
        layers.append(nn.Linear(width, d))
        if arch["batchnorm"]:
            layers.append(nn.BatchNorm1d(d))
        layers.append(act())
        if arch["dense_dropout"]:
            layers.append(nn.Dropout(arch["dense_dropout"]))
        width = d
    body = nn.Sequential(*layers)
    spec = BackboneSpec(CNN_BACKBONE, input_size, width, tuple(mean), tuple(std),  # type: ignore[arg-type]
                        "trained from scratch (dogbreed train)", crop_pct=1.0, interpolation="bilinear")
    bb = Backbone(spec, body, type(body).forward, None)
    bb.arch = arch  # type: ignore[attr-defined]
    return bb


def build_cnn_classifier(cfg: dict[str, Any] | None, classes: Sequence[Breed], input_size: int = 128,
                         preprocess: Preprocess | None = None) -> Classifier:
    """A from-scratch CNN classifier; preprocessing squashes the whole photo to input_size (no crop)."""
    pre = preprocess or Preprocess(size=input_size, resize="squash", crop_pct=1.0, interpolation="bilinear")
    bb = build_cnn_backbone(cfg, input_size, pre.mean, pre.std)
    return Classifier(bb, build_head({"type": "linear"}, bb.spec.feature_dim, len(classes)), classes, pre)


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Learnable parameters (BatchNorm running statistics are buffers, so they are not counted)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
