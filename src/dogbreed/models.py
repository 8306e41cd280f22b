"""Models: the breed classifier (backbone + head), its on-disk format, and the from-scratch CNN presets."""

from __future__ import annotations

import json
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load, save
from torch import nn

from .backbones import Backbone, BackboneSpec, create_backbone, get_spec
from .breeds import Breed, stanford_breeds
from .errors import ModelLoadError, WriteError
from .fileio import atomic_write_pair, out_folder, read_json, read_safetensors, writing
from .specs import DEFAULT_BACKBONE, SHIPPED_HEADS
from .transforms import Preprocess

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
        "format": "dogbreed-model/1",
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


def build_head(cfg: dict[str, Any], in_features: int, num_classes: int) -> nn.Module:
    """Breed heads as data: 'linear' (GAP features -> logits) or 'mlp' with dropout."""
    kind = cfg.get("type", "linear")
    if kind == "linear":
        head: nn.Module = nn.Linear(in_features, num_classes)
    elif kind == "dropout_linear":
        head = nn.Sequential(nn.Dropout(cfg.get("dropout", 0.2)), nn.Linear(in_features, num_classes))
    else:
        raise ValueError(f"unknown head type {kind!r}")
    head.config = dict(cfg)  # type: ignore[attr-defined]
    return head


def _read_model_json(path: Path) -> dict[str, Any]:
    cfg = read_json(path, "model config")
    missing = [k for k in ("backbone", "preprocess", "classes") if k not in cfg]
    if missing:
        raise ModelLoadError(f"{path}: not a model config (missing {', '.join(missing)}); "
                             "write model dirs with dogbreed train, adapt or add-breed")
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
    import difflib

    close = [c for u in sorted(unknown) for c in difflib.get_close_matches(str(u), list(known), n=1, cutoff=0.6)]
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
