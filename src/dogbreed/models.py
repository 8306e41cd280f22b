"""Models: the breed classifier (backbone + head), its on-disk format, and the from-scratch CNN presets."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .backbones import Backbone, create_backbone, get_spec
from .breeds import Breed, stanford_breeds
from .transforms import Preprocess

DEFAULT_BACKBONE = "efficientnet_lite0"
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


def default_classifier(backbone: str = DEFAULT_BACKBONE) -> Classifier:
    """Zero-training classifier: a packaged ImageNet backbone with its head restricted to the 120 breeds."""
    bb = create_backbone(backbone, pretrained=True)
    classes = stanford_breeds()
    return Classifier(bb, imagenet_breed_head(bb, classes), classes, get_spec(backbone).preprocess())


# ---------------------------------------------------------------------------------------------------------------
# On-disk model format: a folder with model.json (backbone, preprocessing, classes, decision, extra) and
# model.safetensors (breed head; backbone weights only when they were changed by fine-tuning).


def is_model_dir(path: str | Path) -> bool:
    p = Path(path)
    return (p / MODEL_CONFIG).is_file() or (p / "model" / MODEL_CONFIG).is_file()


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def save_model_dir(clf: Classifier, path: str | Path, *, decision: dict[str, Any] | None = None,
                   save_backbone: bool = False, extra: dict[str, Any] | None = None) -> Path:
    """Write a classifier so `Predictor(model=path)` and `dogbreed predict --model path` can load it."""
    from safetensors.torch import save

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {f"breed_head.{k}": v.detach().cpu().contiguous() for k, v in clf.breed_head.state_dict().items()}
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
    _atomic_write_bytes(out / MODEL_WEIGHTS, save(tensors))
    _atomic_write_bytes(out / MODEL_CONFIG, json.dumps(cfg, indent=2).encode())
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


def load_model_dir(path: str | Path) -> tuple[Classifier, dict[str, Any]]:
    """Load a saved classifier; returns it with its config (decision thresholds under 'decision')."""
    from safetensors.torch import load_file

    p = Path(path)
    if not (p / MODEL_CONFIG).is_file() and (p / "model" / MODEL_CONFIG).is_file():
        p = p / "model"
    cfg = json.loads((p / MODEL_CONFIG).read_text())
    tensors = load_file(str(p / MODEL_WEIGHTS))
    bb = create_backbone(cfg["backbone"], pretrained=not cfg.get("backbone_in_weights", False))
    if cfg.get("backbone_in_weights"):
        bb.load_state_dict({k[len("backbone."):]: v for k, v in tensors.items() if k.startswith("backbone.")})
    classes = [Breed(c.get("wnid"), c["name"], c.get("imagenet_index")) for c in cfg["classes"]]
    head = build_head(cfg.get("head", {"type": "linear"}), bb.spec.feature_dim, len(classes))
    head.load_state_dict({k[len("breed_head."):]: v for k, v in tensors.items() if k.startswith("breed_head.")})
    clf = Classifier(bb, head, classes, Preprocess.from_dict(cfg["preprocess"]))
    return clf.eval(), cfg
