"""One strategy per preset kind: how its classifier is built, which weights train, what a batch is, what is saved.

``cnn`` trains a from-scratch network on photos; ``transfer`` trains a new head on a frozen pretrained backbone
(on cached features, or on augmented photos with ``end_to_end``); ``finetune`` also unfreezes the backbone's last
blocks, at their own learning rate.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..backbones import Backbone, create_backbone
from ..breeds import Breed, stanford_breeds
from ..models import Classifier, build_cnn_classifier, build_head, default_classifier, imagenet_breed_head
from ..transforms import Augment
from . import distributed
from .config import CnnConfig, FinetuneConfig, TrainConfig, TransferConfig
from .inputs import (
    Logits,
    Split,
    attach_features,
    feature_batches,
    head_probs,
    image_batches,
    image_probs,
)


def epoch_seed(seed: int, epoch: int) -> int:
    return int(seed) * 1_000_003 + int(epoch)


@dataclass
class Plan:
    """What the loop runs: ``net`` maps a batch to breed logits, ``head`` is its freshly initialised part."""

    net: nn.Module
    head: nn.Module
    train_batches: Callable[[int], Iterable[Any]]  # epoch -> batches
    val_batches: Callable[[], Iterable[Any]]
    n_train_batches: int
    freeze_bn_of: nn.Module | None  # pretrained BatchNorm statistics kept as learned on ImageNet
    test_probs: Callable[[Split], np.ndarray]


class Strategy:
    """The photos path, shared by every kind; subclasses change what differs."""

    def build(self, cfg: Any, classes: Sequence[Breed]) -> Classifier:
        raise NotImplementedError

    def set_trainable(self, clf: Classifier, cfg: Any) -> None:
        clf.requires_grad_(True)

    def backbone_lr(self, cfg: Any) -> float:
        return cfg.lr

    def save_backbone(self, cfg: Any) -> bool:
        return True

    def uses_cached_features(self, cfg: Any) -> bool:
        return False

    def freeze_bn_of(self, clf: Classifier) -> nn.Module | None:
        return None

    def plan(self, cfg: Any, clf: Classifier, parts: dict[str, Split], class_names: Sequence[str],
             device: str) -> Plan:
        bs, workers, pre = cfg.batch_size, cfg.num_workers, clf.preprocess_cfg
        augment = Augment.from_dict(cfg.augment) if cfg.augment else None

        def train_batches(epoch: int) -> Iterable[Any]:
            return image_batches(parts["train"], class_names, pre, augment, bs, True, epoch_seed(cfg.seed, epoch),
                                 workers, device)

        def val_batches() -> Iterable[Any]:
            return image_batches(parts["val"], class_names, pre, None, bs, False, 0, workers, device)

        def test_probs(split: Split) -> np.ndarray:
            return image_probs(clf, split.samples, class_names, device, workers)

        return Plan(Logits(clf).to(device), clf.breed_head, train_batches, val_batches,
                    math.ceil(len(parts["train"].samples) / bs), self.freeze_bn_of(clf), test_probs)

    def eval_probs(self, cfg: Any, clf: Classifier, part: Split, class_names: Sequence[str],
                   device: str) -> tuple[np.ndarray, Split]:
        """Probabilities of a trained run's model on ``part`` (for `dogbreed evaluate`)."""
        return image_probs(clf, part.samples, class_names, device, cfg.num_workers), part


class CnnStrategy(Strategy):
    def build(self, cfg: CnnConfig, classes: Sequence[Breed]) -> Classifier:
        return build_cnn_classifier(cfg.cnn, classes, int(cfg.image_size or 128))


def extractor_for(cfg: TransferConfig) -> Classifier:
    """The frozen pretrained classifier whose features the transfer head learns from.

    For packaged weights it is exactly `default_classifier(name)`, so features cached by other tools (bench,
    scripts/warm_feature_cache.py) are reused: the cache key includes the model's weights fingerprint.
    """
    name = cfg.backbone
    if cfg.backbone_weights is None and name.startswith("efficientnet_lite"):
        clf = default_classifier(name)
        if cfg.image_size:  # e.g. smaller photos for a quick run; the cache key follows the preprocessing
            clf.preprocess_cfg = clf.backbone.spec.preprocess(size=int(cfg.image_size))
        return clf
    torch.manual_seed(cfg.seed)  # a random-init backbone (no weights given) is at least repeatable
    bb = create_backbone(name, pretrained=True, weights=cfg.backbone_weights)
    if cfg.backbone_weights is None:
        print(f"warning: {name} has no packaged weights and no backbone_weights=PATH was given; "
              "its features are random", file=sys.stderr)
    classes = list(stanford_breeds())
    if bb.imagenet_head is not None:
        head: nn.Module = imagenet_breed_head(bb, classes)
    else:  # a fixed head keeps the fingerprint (and so the feature cache) stable between runs
        head = nn.Linear(bb.spec.feature_dim, len(classes))
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)
    return Classifier(bb, head, classes, bb.spec.preprocess(size=cfg.image_size))


class TransferStrategy(Strategy):
    def __init__(self) -> None:
        # The extractor of the last `build`: the feature cache is keyed by its weights and preprocessing.
        self.extractor: Classifier | None = None

    def build(self, cfg: TransferConfig, classes: Sequence[Breed]) -> Classifier:
        self.extractor = ext = extractor_for(cfg)
        head = build_head({"type": cfg.head.type, "dropout": cfg.head.dropout}, ext.backbone.spec.feature_dim,
                          len(classes))
        return Classifier(ext.backbone, head, classes, ext.preprocess_cfg)

    def set_trainable(self, clf: Classifier, cfg: TransferConfig) -> None:
        clf.backbone.requires_grad_(False)
        clf.breed_head.requires_grad_(True)
        if clf.backbone.imagenet_head is not None:
            clf.backbone.imagenet_head.requires_grad_(False)

    def save_backbone(self, cfg: TransferConfig) -> bool:
        return bool(cfg.backbone_weights)

    def uses_cached_features(self, cfg: TransferConfig) -> bool:
        return not cfg.end_to_end

    def freeze_bn_of(self, clf: Classifier) -> nn.Module | None:
        return clf.backbone

    def plan(self, cfg: TransferConfig, clf: Classifier, parts: dict[str, Split], class_names: Sequence[str],
             device: str) -> Plan:
        if not self.uses_cached_features(cfg):
            return super().plan(cfg, clf, parts, class_names, device)
        assert self.extractor is not None, "build() first"
        with distributed.main_first(distributed.from_env()):  # under torchrun rank 0 fills the feature cache
            attach_features(self.extractor, parts, cfg.feature_views, cfg.feature_runtime)
        views = list(range(len(cfg.feature_views)))
        bs = cfg.batch_size

        def train_batches(epoch: int) -> Iterable[Any]:
            return feature_batches(parts["train"], views, bs, True, epoch_seed(cfg.seed, epoch))

        def val_batches() -> Iterable[Any]:
            return feature_batches(parts["val"], [0], 256, False, 0)

        def test_probs(split: Split) -> np.ndarray:
            assert split.features is not None
            return head_probs(clf.breed_head, split.features)

        return Plan(clf.breed_head.to(device), clf.breed_head, train_batches, val_batches,
                    math.ceil(len(parts["train"].labels) * len(views) / bs), None, test_probs)

    def eval_probs(self, cfg: TransferConfig, clf: Classifier, part: Split, class_names: Sequence[str],
                   device: str) -> tuple[np.ndarray, Split]:
        if cfg.backbone_weights:
            return super().eval_probs(cfg, clf, part, class_names, device)
        # Frozen packaged backbone: reuse cached features instead of running it again.
        parts = {"test": part}
        attach_features(extractor_for(cfg), parts, ["plain"], cfg.feature_runtime)
        part = parts["test"]
        assert part.features is not None
        return head_probs(clf.breed_head, part.features), part


def backbone_units(bb: Backbone) -> list[nn.Module]:
    """The backbone as an ordered list of blocks, input to output, for 'unfreeze the last N blocks'."""
    net = bb.body
    if hasattr(net, "_blocks"):  # EfficientNet-Lite: MBConv blocks, then the 1x1 head conv + BN
        return [*net._blocks, nn.ModuleList([net._conv_head, net._bn1])]
    if hasattr(net, "layer4"):  # ResNet: bottleneck blocks
        return [blk for layer in (net.layer1, net.layer2, net.layer3, net.layer4) for blk in layer]
    return [net]


class FinetuneStrategy(TransferStrategy):
    def set_trainable(self, clf: Classifier, cfg: FinetuneConfig) -> None:
        super().set_trainable(clf, cfg)
        if cfg.unfreeze == "all":
            clf.backbone.requires_grad_(True)
        else:
            for unit in backbone_units(clf.backbone)[-cfg.unfreeze_blocks:]:
                unit.requires_grad_(True)
        if clf.backbone.imagenet_head is not None:
            clf.backbone.imagenet_head.requires_grad_(False)

    def backbone_lr(self, cfg: FinetuneConfig) -> float:
        # Unfrozen pretrained layers learn slower than the fresh head so fine-tuning does not wreck their features.
        return cfg.backbone_lr if cfg.backbone_lr is not None else cfg.lr

    def save_backbone(self, cfg: FinetuneConfig) -> bool:
        return True

    def uses_cached_features(self, cfg: FinetuneConfig) -> bool:
        return False

    def eval_probs(self, cfg: FinetuneConfig, clf: Classifier, part: Split, class_names: Sequence[str],
                   device: str) -> tuple[np.ndarray, Split]:
        return Strategy.eval_probs(self, cfg, clf, part, class_names, device)


def strategy_for(cfg: TrainConfig) -> Strategy:
    return {"cnn": CnnStrategy, "transfer": TransferStrategy, "finetune": FinetuneStrategy}[cfg.kind]()


def set_trainable(clf: Classifier, cfg: TrainConfig) -> None:
    strategy_for(cfg).set_trainable(clf, cfg)


def build_preset_model(cfg: TrainConfig, num_classes: int = 120) -> Classifier:
    """The classifier a config trains, without data (for parameter counts and shape checks)."""
    classes = list(stanford_breeds())[:num_classes] if num_classes <= 120 else \
        [Breed(None, f"class {i}") for i in range(num_classes)]
    return strategy_for(cfg).build(cfg, classes)
