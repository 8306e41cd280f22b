"""Training: presets as data, from-scratch CNNs, transfer learning on cached features, fine-tuning, resumable runs.

A run is a directory::

    RUN_DIR/config.json            resolved config (preset + overrides), what `--resume` reads back
    RUN_DIR/split.csv              split manifest (train/val/test photos), so a resumed run sees the same split
    RUN_DIR/metrics.csv|json       one row per epoch
    RUN_DIR/ckpt/{last,best}.safetensors        trainable weights
    RUN_DIR/ckpt/{last,best}.optim.safetensors  optimizer state tensors
    RUN_DIR/ckpt/{last,best}.json  epoch, seeds, best metric, early-stopping counter, history, scheduler state
    RUN_DIR/model/                 the best model (`dogbreed predict --model RUN_DIR`)
    RUN_DIR/plots/                 learning curves;  RUN_DIR/eval-test/  metrics, report, confusion matrix
    RUN_DIR/summary.json, report.md

Reproducibility: every epoch reseeds torch/numpy/random and the loader from (seed, epoch), so a run resumed from
its last checkpoint replays exactly what an uninterrupted run would have done (on the same device/threads).
"""

from __future__ import annotations

import copy
import csv
import io
import json
import math
import random
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from . import evaluate as ev
from .backbones import Backbone, create_backbone, get_spec
from .breeds import Breed, clean_name, lookup, normalize_key, stanford_breeds
from .fileio import atomic_write_bytes, atomic_write_text
from .models import (
    Classifier,
    build_cnn_classifier,
    build_head,
    count_parameters,
    default_classifier,
    imagenet_breed_head,
    load_model_dir,
    save_model_dir,
)
from .runtime import resolve_device
from .transforms import Augment, Preprocess

KINDS = ("cnn", "transfer", "finetune")
# Keys a resumed run may change; everything else must stay as recorded or the run would silently mix setups.
RESUME_OVERRIDABLE = {"max_epochs", "patience", "num_workers"}


# ---------------------------------------------------------------------------------------------------------------
# Presets


def list_presets() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("dogbreed").joinpath("presets").iterdir()
                  if p.name.endswith(".yaml"))


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def _read_preset(name: str) -> dict[str, Any]:
    p = Path(name)
    if p.suffix in (".yaml", ".yml") and p.is_file():
        text = p.read_text()
    else:
        f = resources.files("dogbreed").joinpath("presets", f"{name}.yaml")
        if not f.is_file():
            raise KeyError(f"unknown preset {name!r}; known: {', '.join(list_presets())} (or a .yaml path)")
        text = f.read_text()
    cfg = yaml.safe_load(text) or {}
    base = cfg.pop("base", None)
    return _deep_merge(_read_preset(base), cfg) if base else cfg


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """['lr=0.01', 'cnn.dropout=0.2', 'split.ratios=[0.7,0.15,0.15]'] -> nested dict; values are YAML."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw.strip() else None
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def load_preset(name: str, overrides: dict[str, Any] | Sequence[str] | None = None) -> dict[str, Any]:
    """The resolved config of a preset (YAML with optional ``base:``), with overrides merged in."""
    cfg = _read_preset(name)
    if overrides:
        over = parse_overrides(overrides) if not isinstance(overrides, dict) else overrides
        cfg = _deep_merge(cfg, over)
    cfg["preset"] = cfg.get("preset") or Path(name).stem
    if cfg.get("kind") not in KINDS:
        raise ValueError(f"preset {name!r}: kind must be one of {KINDS}")
    return cfg


# ---------------------------------------------------------------------------------------------------------------
# Building models


def cnn_classifier_from_config(cfg: dict[str, Any], classes: Sequence[Breed]) -> Classifier:
    return build_cnn_classifier(cfg.get("cnn"), classes, int(cfg.get("image_size", 128)))


def extractor_for(cfg: dict[str, Any]) -> Classifier:
    """The frozen pretrained classifier whose features the transfer head learns from.

    For packaged weights it is exactly `default_classifier(name)`, so features cached by other tools (bench,
    scripts/warm_feature_cache.py) are reused: the cache key includes the model's weights fingerprint.
    """
    name = cfg["backbone"]
    weights = cfg.get("backbone_weights")
    if weights is None and name.startswith("efficientnet_lite"):
        clf = default_classifier(name)
        if cfg.get("image_size"):  # e.g. smaller photos for a quick run; the cache key follows the preprocessing
            clf.preprocess_cfg = clf.backbone.spec.preprocess(size=int(cfg["image_size"]))
        return clf
    torch.manual_seed(int(cfg.get("seed", 0)))  # a random-init backbone (no weights given) is at least repeatable
    bb = create_backbone(name, pretrained=True, weights=weights)
    if weights is None:
        print(f"warning: {name} has no packaged weights and no backbone_weights=PATH was given; "
              "its features are random", file=sys.stderr)
    classes = list(stanford_breeds())
    if bb.imagenet_head is not None:
        head: nn.Module = imagenet_breed_head(bb, classes)
    else:  # a fixed head keeps the fingerprint (and so the feature cache) stable between runs
        head = nn.Linear(bb.spec.feature_dim, len(classes))
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)
    return Classifier(bb, head, classes, bb.spec.preprocess(size=cfg.get("image_size")))


def _backbone_units(bb: Backbone) -> list[nn.Module]:
    """The backbone as an ordered list of blocks, input to output, for 'unfreeze the last N blocks'."""
    net = bb.body
    if hasattr(net, "_blocks"):  # EfficientNet-Lite: MBConv blocks, then the 1x1 head conv + BN
        return [*net._blocks, nn.ModuleList([net._conv_head, net._bn1])]
    if hasattr(net, "layer4"):  # ResNet: bottleneck blocks
        return [blk for layer in (net.layer1, net.layer2, net.layer3, net.layer4) for blk in layer]
    return [net]


def set_trainable(clf: Classifier, cfg: dict[str, Any]) -> None:
    kind = cfg["kind"]
    if kind == "cnn":
        clf.requires_grad_(True)
        return
    clf.backbone.requires_grad_(False)
    clf.breed_head.requires_grad_(True)
    if kind == "finetune":
        mode = cfg.get("unfreeze", "last_n_blocks")
        if mode == "all":
            clf.backbone.requires_grad_(True)
        elif mode == "last_n_blocks":
            for unit in _backbone_units(clf.backbone)[-int(cfg.get("unfreeze_blocks", 2)):]:
                unit.requires_grad_(True)
        else:
            raise ValueError(f"unfreeze must be 'last_n_blocks' or 'all', got {mode!r}")
    if clf.backbone.imagenet_head is not None:
        clf.backbone.imagenet_head.requires_grad_(False)


def build_optimizer(cfg: dict[str, Any], clf_or_head: nn.Module, head: nn.Module) -> torch.optim.Optimizer:
    lr = float(cfg.get("lr", 1e-3))
    wd = float(cfg.get("weight_decay", 0.0))
    head_ids = {id(p) for p in head.parameters()}
    head_params = [p for p in clf_or_head.parameters() if p.requires_grad and id(p) in head_ids]
    other = [p for p in clf_or_head.parameters() if p.requires_grad and id(p) not in head_ids]
    # Unfrozen pretrained layers learn slower than the fresh head so fine-tuning does not wreck their features.
    other_lr = float(cfg.get("backbone_lr", lr)) if cfg["kind"] == "finetune" else lr
    groups = [{"params": head_params, "lr": lr}] + ([{"params": other, "lr": other_lr}] if other else [])
    name = cfg.get("optimizer", "sgd").lower()
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=float(cfg.get("momentum", 0.0)), weight_decay=wd)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, weight_decay=wd)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, weight_decay=wd)
    raise ValueError(f"unknown optimizer {name!r}: sgd | adam | adamw")


def lr_lambda(cfg: dict[str, Any], steps_per_epoch: int) -> Callable[[int], float]:
    """Multiplier per optimizer step: linear warm-up, then constant or cosine decay to 0 at max_epochs."""
    sched = cfg.get("schedule") or {}
    kind = sched.get("type", "constant")
    warm = int(round(float(sched.get("warmup_epochs", 0)) * steps_per_epoch))
    total = max(1, int(cfg["max_epochs"]) * steps_per_epoch)

    def f(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        if kind == "cosine":
            t = min(1.0, (step - warm) / max(1, total - warm))
            return 0.5 * (1 + math.cos(math.pi * t))
        if kind == "constant":
            return 1.0
        raise ValueError(f"unknown schedule {kind!r}: constant | cosine")

    return f


def amp_settings(cfg: dict[str, Any], device: str) -> tuple[bool, torch.dtype | None]:
    amp = str(cfg.get("amp", "none")).lower()
    if amp in ("none", "false", "off"):
        return False, None
    if amp == "auto":
        return (True, torch.float16) if device.startswith("cuda") else (False, None)
    if amp == "bf16":
        return True, torch.bfloat16
    if amp == "fp16":
        if not device.startswith("cuda"):
            raise ValueError("amp=fp16 needs CUDA; on CPU use amp=bf16 or none")
        return True, torch.float16
    raise ValueError(f"unknown amp {amp!r}: none | auto | bf16 | fp16")


# ---------------------------------------------------------------------------------------------------------------
# Checkpoints: safetensors for tensors, JSON for the rest; each file replaced atomically and the JSON written
# last, so its presence means the checkpoint is complete.


def _atomic_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=2, default=_json_default).encode())


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, torch.Tensor):
        return o.item() if o.numel() == 1 else o.tolist()
    if isinstance(o, (tuple, set)):
        return list(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"{idx}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{idx}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optimizer_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, v in list(tensors.items()) + list(meta.get("scalars", {}).items()):
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = v
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(ckpt_dir: Path, tag: str, net: nn.Module, opt: torch.optim.Optimizer,
                    info: dict[str, Any]) -> None:
    from safetensors.torch import save

    weights = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    opt_tensors, opt_meta = _optimizer_tensors(opt)
    atomic_write_bytes(ckpt_dir / f"{tag}.safetensors", save(weights))
    atomic_write_bytes(ckpt_dir / f"{tag}.optim.safetensors", save(opt_tensors))
    _atomic_json(ckpt_dir / f"{tag}.json", {**info, "optimizer": opt_meta})


def load_checkpoint(ckpt_dir: Path, tag: str) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    from safetensors.torch import load_file

    info = json.loads((ckpt_dir / f"{tag}.json").read_text())
    weights = load_file(str(ckpt_dir / f"{tag}.safetensors"))
    opt_state = _optimizer_state(load_file(str(ckpt_dir / f"{tag}.optim.safetensors")), info["optimizer"])
    return weights, opt_state, info


# ---------------------------------------------------------------------------------------------------------------
# Data


def run_classes(class_names: Sequence[str]) -> list[Breed]:
    """Breeds for a run's class names: one of the 120 keeps its wnid/ImageNet index, any other gets wnid None."""
    out = []
    for name in class_names:
        b = lookup(str(name))
        out.append(Breed(b.wnid, b.name, b.imagenet_index) if b else Breed(None, clean_name(str(name)), None))
    return out


def _label_map(class_names: Sequence[str]) -> dict[str, int]:
    return {str(n): i for i, n in enumerate(class_names)}


def _labels(samples: Sequence[Any], class_names: Sequence[str]) -> np.ndarray:
    m = _label_map(class_names)
    return np.array([m[str(s.breed)] for s in samples], dtype=np.int64)


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _epoch_seed(seed: int, epoch: int) -> int:
    return int(seed) * 1_000_003 + int(epoch)


@dataclass
class _Split:
    samples: list[Any]
    labels: np.ndarray
    features: np.ndarray | None = None  # (N, V, D) for the cached-features path


@dataclass
class _State:
    epoch: int = 0
    best: dict[str, Any] = field(default_factory=dict)
    bad_epochs: int = 0
    stopped_early: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)
    elapsed_s: float = 0.0


def _log(msg: str) -> None:
    from tqdm import tqdm

    tqdm.write(msg, file=sys.stderr)


# ---------------------------------------------------------------------------------------------------------------
# The loop


class _Logits(nn.Module):
    """image batch -> breed logits only (the ImageNet head is not needed while training)."""

    def __init__(self, clf: Classifier):
        super().__init__()
        self.clf = clf

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.clf.breed_head(self.clf.backbone(x))


def _batches_from_features(split: _Split, views: Sequence[int], batch_size: int, shuffle: bool,
                           seed: int) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    x = torch.from_numpy(split.features[:, list(views)].reshape(-1, split.features.shape[-1]))
    y = torch.from_numpy(np.repeat(split.labels, len(views)))
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed)) if shuffle else torch.arange(len(y))
    for i in range(0, len(y), batch_size):
        idx = order[i:i + batch_size]
        yield x[idx], y[idx]


def _batches_from_images(split: _Split, class_names: Sequence[str], pre: Preprocess, augment: Augment | None,
                         batch_size: int, shuffle: bool, seed: int, num_workers: int) -> Iterable[Any]:
    from .data import make_loader

    return make_loader(split.samples, list(class_names), pre, augment=augment, batch_size=batch_size,
                       shuffle=shuffle, num_workers=num_workers, seed=seed)


@torch.inference_mode()
def _predict(net: nn.Module, batches: Iterable[Any], device: str) -> tuple[np.ndarray, np.ndarray]:
    net.eval()
    logits, labels = [], []
    for x, y in batches:
        logits.append(net(x.to(device)).float().cpu())
        labels.append(torch.as_tensor(y))
    if not logits:
        return np.zeros((0, 0), np.float32), np.zeros(0, np.int64)
    return torch.cat(logits).numpy(), torch.cat(labels).numpy()


def _loss_acc(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    if len(labels) == 0:
        return float("nan"), float("nan")
    t = torch.from_numpy(logits)
    y = torch.from_numpy(labels)
    return float(F.cross_entropy(t, y)), float((t.argmax(1) == y).float().mean())


def _improved(row: dict[str, Any], best: dict[str, Any], monitor: str) -> bool:
    if not best:
        return True
    if monitor == "val_loss":
        return row["val_loss"] < best["val_loss"]
    # val_acc; ties (common on small val sets) go to the lower loss
    return row["val_acc"] > best["val_acc"] or (
        row["val_acc"] == best["val_acc"] and row["val_loss"] < best["val_loss"])


def _write_metrics(run_dir: Path, history: list[dict[str, Any]]) -> None:
    _atomic_json(run_dir / "metrics.json", history)
    buf = io.StringIO()
    cols = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"]
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(history)
    atomic_write_bytes(run_dir / "metrics.csv", buf.getvalue().encode())


def _fit(cfg: dict[str, Any], run_dir: Path, net: nn.Module, head: nn.Module, train_batches: Callable[[int], Any],
         val_batches: Callable[[], Any], device: str, state: _State, resume_ckpt: tuple | None,
         freeze_bn_of: nn.Module | None, n_train_batches: int) -> _State:
    from tqdm import tqdm

    opt = build_optimizer(cfg, net, head)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(cfg, n_train_batches))
    use_amp, amp_dtype = amp_settings(cfg, device)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    crit = nn.CrossEntropyLoss(label_smoothing=float(cfg.get("label_smoothing", 0.0)))
    ckpt_dir = run_dir / "ckpt"
    if resume_ckpt is not None:
        weights, opt_state, info = resume_ckpt
        net.load_state_dict(weights)
        opt.load_state_dict(opt_state)
        sched.load_state_dict(info["scheduler"])
        if info.get("scaler"):
            scaler.load_state_dict(info["scaler"])
    max_epochs, patience = int(cfg["max_epochs"]), int(cfg.get("patience", 5))
    monitor = cfg.get("monitor", "val_acc")
    seed = int(cfg.get("seed", 0))
    for epoch in range(state.epoch + 1, max_epochs + 1):
        if state.stopped_early:
            break
        t0 = time.time()
        _seed_all(_epoch_seed(seed, epoch))
        net.train()
        if freeze_bn_of is not None:
            freeze_bn_of.eval()  # pretrained BatchNorm statistics stay as learned on ImageNet (small batches)
        tot_loss, tot_ok, tot_n = 0.0, 0, 0
        bar = tqdm(train_batches(epoch), total=n_train_batches, desc=f"epoch {epoch}/{max_epochs}", unit="batch",
                   leave=False, file=sys.stderr, disable=None)
        for x, y in bar:
            x, y = x.to(device, non_blocking=True), torch.as_tensor(y).to(device)
            with torch.autocast(device_type="cuda" if device.startswith("cuda") else "cpu", dtype=amp_dtype,
                                enabled=use_amp):
                logits = net(x)
                loss = crit(logits.float(), y)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
            n = len(y)
            tot_loss += float(loss.detach()) * n
            tot_ok += int((logits.argmax(1) == y).sum())
            tot_n += n
            bar.set_postfix(loss=f"{tot_loss / tot_n:.3f}", acc=f"{tot_ok / tot_n:.1%}")
        bar.close()
        vl, vy = _predict(net, val_batches(), device)
        val_loss, val_acc = _loss_acc(vl, vy)
        row = {"epoch": epoch, "train_loss": round(tot_loss / max(tot_n, 1), 5),
               "train_acc": round(tot_ok / max(tot_n, 1), 5), "val_loss": round(val_loss, 5),
               "val_acc": round(val_acc, 5), "lr": opt.param_groups[0]["lr"], "seconds": round(time.time() - t0, 2)}
        state.history.append(row)
        state.epoch = epoch
        state.elapsed_s += time.time() - t0
        if _improved(row, state.best, monitor):
            state.best, state.bad_epochs = dict(row), 0
        else:
            state.bad_epochs += 1
        state.stopped_early = state.bad_epochs >= patience
        info = {"epoch": epoch, "best": state.best, "bad_epochs": state.bad_epochs,
                "stopped_early": state.stopped_early, "history": state.history, "elapsed_s": state.elapsed_s,
                "rng": {"seed": seed, "next_epoch_seed": _epoch_seed(seed, epoch + 1)},
                "scheduler": sched.state_dict(), "scaler": scaler.state_dict() if scaler.is_enabled() else None}
        if state.best["epoch"] == epoch:
            save_checkpoint(ckpt_dir, "best", net, opt, info)
        save_checkpoint(ckpt_dir, "last", net, opt, info)  # written last: it is the resume point
        _write_metrics(run_dir, state.history)
        _log(f"epoch {epoch}/{max_epochs}: train loss {row['train_loss']:.4f} acc {row['train_acc']:.1%} | "
             f"val loss {row['val_loss']:.4f} acc {row['val_acc']:.1%} | {row['seconds']:.1f}s"
             + (" *" if state.best["epoch"] == epoch else ""))
        if state.stopped_early:
            _log(f"early stopping: no {monitor} improvement for {patience} epochs (best epoch {state.best['epoch']})")
    return state


# ---------------------------------------------------------------------------------------------------------------
# Public API


def _new_run_dir(out: str | Path, cfg: dict[str, Any]) -> Path:
    base = Path(out) / (cfg.get("run_name") or f"{cfg['preset']}-{time.strftime('%Y%m%d-%H%M%S')}")
    run, i = base, 1
    while run.exists():
        i += 1
        run = base.with_name(f"{base.name}-{i}")
    run.mkdir(parents=True)
    return run


def _prepare_data(cfg: dict[str, Any], data: str, run_dir: Path, resuming: bool) -> tuple[dict[str, list], list[str]]:
    from .data import load_dataset, load_manifest, make_split, save_manifest

    manifest = run_dir / "split.csv"
    if resuming and manifest.exists():
        splits = load_manifest(manifest)
    else:
        index = load_dataset(data)
        sp = cfg.get("split") or {}
        splits = make_split(index.samples, ratios=tuple(sp.get("ratios", (0.8, 0.1, 0.1))),
                            seed=int(sp.get("seed", 0)), use_official=bool(sp.get("use_official", True)))
        save_manifest(splits, manifest)
    class_names = cfg.get("classes") or sorted({str(s.breed) for part in splits.values() for s in part})
    if not splits.get("train") or not splits.get("val"):
        raise ValueError(f"{data}: the split has {len(splits.get('train', []))} training and "
                         f"{len(splits.get('val', []))} validation photos; both must be non-empty")
    return splits, list(class_names)


def train(config: dict[str, Any] | None, data: str | None = None, out: str | Path = "runs",
          resume: str | Path | None = None, device: str = "cpu") -> Path:
    """Train a preset config (see `load_preset`) on a dataset; returns the run directory.

    ``resume``: a run directory; training continues after its last checkpoint with the recorded config (only
    max_epochs, patience and num_workers may be changed through ``config``) and the recorded split.
    """
    device = resolve_device(device)
    t_start = time.time()
    if resume is not None:
        run_dir = Path(resume)
        cfg = json.loads((run_dir / "config.json").read_text())
        bad = {k for k in (config or {}) if k not in RESUME_OVERRIDABLE and (config or {})[k] != cfg.get(k)}
        if bad:
            raise ValueError(f"cannot change {sorted(bad)} when resuming; only {sorted(RESUME_OVERRIDABLE)}")
        cfg.update({k: v for k, v in (config or {}).items() if k in RESUME_OVERRIDABLE})
        data = data or cfg["data"]
    else:
        if config is None or data is None:
            raise ValueError("train needs a config and data (or resume=RUN_DIR)")
        cfg = copy.deepcopy(config)
        cfg["data"] = str(Path(data).resolve())
        run_dir = _new_run_dir(out, cfg)
    splits, class_names = _prepare_data(cfg, str(data), run_dir, resume is not None)
    cfg["classes"] = class_names
    _atomic_json(run_dir / "config.json", cfg)
    classes = run_classes(class_names)
    kind = cfg["kind"]
    seed = int(cfg.get("seed", 0))
    _seed_all(seed)  # model initialisation

    state = _State()
    resume_ckpt = None
    if resume is not None and (run_dir / "ckpt" / "last.json").exists():
        resume_ckpt = load_checkpoint(run_dir / "ckpt", "last")
        info = resume_ckpt[2]
        state = _State(info["epoch"], info["best"], info["bad_epochs"], info["stopped_early"], info["history"],
                       info.get("elapsed_s", 0.0))
        if state.stopped_early and int(cfg["max_epochs"]) > state.epoch:
            _log(f"{run_dir}: stopped early at epoch {state.epoch}; nothing to resume")
        else:
            _log(f"resuming {run_dir} after epoch {state.epoch}")

    parts = {k: _Split(list(v), _labels(v, class_names)) for k, v in splits.items()}
    bs = int(cfg.get("batch_size", 32))
    workers = int(cfg.get("num_workers", 0))
    augment = Augment.from_dict(cfg["augment"]) if cfg.get("augment") else None
    extractor: Classifier | None = None
    if kind == "cnn":
        clf = cnn_classifier_from_config(cfg, classes)
    else:
        extractor = extractor_for(cfg)
        head = build_head(cfg.get("head") or {"type": "dropout_linear", "dropout": 0.2},
                          extractor.backbone.spec.feature_dim, len(classes))
        clf = Classifier(extractor.backbone, head, classes, extractor.preprocess_cfg)
    set_trainable(clf, cfg)
    pre = clf.preprocess_cfg
    n_total, n_train = count_parameters(clf), count_parameters(clf, trainable_only=True)
    n_total -= count_parameters(clf.backbone.imagenet_head) if clf.backbone.imagenet_head is not None else 0
    _log(f"{cfg['preset']} ({kind}): {n_total:,} parameters, {n_train:,} trainable; "
         f"{len(parts['train'].samples)} train / {len(parts['val'].samples)} val / "
         f"{len(parts.get('test', _Split([], np.zeros(0))).samples)} test photos, {len(classes)} classes; "
         f"device {device}")

    cached = kind == "transfer" and not cfg.get("end_to_end", False)
    if cached:
        assert extractor is not None
        _attach_features(cfg, extractor, parts)
        views = list(range(len(cfg.get("feature_views") or ["plain"])))
        net: nn.Module = clf.breed_head.to(device)
        n_batches = math.ceil(len(parts["train"].labels) * len(views) / bs)

        def train_batches(epoch: int) -> Iterable[Any]:
            return _batches_from_features(parts["train"], views, bs, True, _epoch_seed(seed, epoch))

        def val_batches() -> Iterable[Any]:
            return _batches_from_features(parts["val"], [0], 256, False, 0)

        freeze = None
    else:
        net = _Logits(clf).to(device)
        n_batches = math.ceil(len(parts["train"].samples) / bs)

        def train_batches(epoch: int) -> Iterable[Any]:
            return _batches_from_images(parts["train"], class_names, pre, augment, bs, True,
                                        _epoch_seed(seed, epoch), workers)

        def val_batches() -> Iterable[Any]:
            return _batches_from_images(parts["val"], class_names, pre, None, bs, False, 0, workers)

        freeze = clf.backbone if kind != "cnn" else None
    state = _fit(cfg, run_dir, net, clf.breed_head, train_batches, val_batches, device, state, resume_ckpt, freeze,
                 n_batches)

    # The best epoch's weights become the run's model.
    from safetensors.torch import load_file

    net.load_state_dict(load_file(str(run_dir / "ckpt" / "best.safetensors")))
    clf = clf.cpu().eval()
    save_backbone = kind == "cnn" or kind == "finetune" or bool(cfg.get("backbone_weights"))
    save_model_dir(clf, run_dir / "model", save_backbone=save_backbone,
                   extra={"preset": cfg["preset"], "kind": kind, "run": run_dir.name, "best": state.best})
    ev.plot_learning_curves(state.history, run_dir / "plots", title=cfg["preset"])
    test_metrics = None
    if parts.get("test") is not None and len(parts["test"].samples):
        probs = (_head_probs(clf.breed_head, parts["test"].features) if cached
                 else _image_probs(clf, parts["test"].samples, class_names, device, workers))
        test_metrics = _write_eval(run_dir / "eval-test", probs, parts["test"], class_names, cfg, "test")
    summary = {
        "preset": cfg["preset"], "kind": kind, "params": n_total, "trainable_params": n_train,
        "best_epoch": state.best.get("epoch"), "best_val_acc": state.best.get("val_acc"),
        "test_top1": test_metrics["top1"] if test_metrics else None,
        "test_top5": test_metrics["top5"] if test_metrics else None,
        "epochs": state.epoch, "stopped_early": state.stopped_early, "train_seconds": round(state.elapsed_s, 1),
        "wall_seconds_this_call": round(time.time() - t_start, 1), "device": device,
        "photos": {k: len(v.samples) for k, v in parts.items()}, "classes": len(classes),
    }
    _atomic_json(run_dir / "summary.json", summary)
    _write_run_report(run_dir, cfg, summary)
    _log(f"run saved to {run_dir} (best val acc {summary['best_val_acc']:.1%} at epoch {summary['best_epoch']}"
         + (f", test top-1 {summary['test_top1']:.1%})" if test_metrics else ")"))
    return run_dir


def _attach_features(cfg: dict[str, Any], extractor: Classifier, parts: dict[str, _Split]) -> None:
    """Backbone features for every photo of every split, from the on-disk cache where possible."""
    from .features import extract

    views = tuple(cfg.get("feature_views") or ["plain"])
    order = [k for k in ("train", "val", "test") if k in parts]
    paths = [str(s.path) for k in order for s in parts[k].samples]
    ex = extract(paths, extractor, views=views, runtime=cfg.get("feature_runtime", "onnx"), progress=True)
    start = 0
    for k in order:
        n = len(parts[k].samples)
        ok = ex.ok[start:start + n]
        if not ok.all():
            _log(f"{k}: skipping {int((~ok).sum())} unreadable photos")
        sp = parts[k]
        parts[k] = _Split([s for s, g in zip(sp.samples, ok, strict=True) if g], sp.labels[ok],
                          ex.features[start:start + n][ok])
        start += n


def _head_probs(head: nn.Module, features: np.ndarray) -> np.ndarray:
    head.eval()
    with torch.inference_mode():
        return head(torch.from_numpy(features[:, 0])).float().softmax(-1).numpy()


def _image_probs(clf: Classifier, samples: Sequence[Any], class_names: Sequence[str], device: str,
                 workers: int = 0) -> np.ndarray:
    split = _Split(list(samples), np.zeros(len(samples), np.int64))
    logits, _ = _predict(_Logits(clf).to(device), _batches_from_images(split, class_names, clf.preprocess_cfg, None,
                                                                       32, False, 0, workers), device)
    clf.cpu()
    return torch.from_numpy(logits).softmax(-1).numpy()


def _write_eval(out_dir: Path, probs: np.ndarray, split: _Split, class_names: Sequence[str], cfg: dict[str, Any],
                split_name: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    names = [b.name for b in run_classes(class_names)]
    metrics = ev.compute_metrics(split.labels, probs, names, [str(s.path) for s in split.samples])
    info = {"preset": cfg.get("preset"), "split": split_name, "data": cfg.get("data"), **(extra or {})}
    ev.write_report(metrics, out_dir, title=f"{cfg.get('preset')} - {split_name}", info=info)
    return metrics


def _write_run_report(run_dir: Path, cfg: dict[str, Any], summary: dict[str, Any]) -> None:
    pct = ev.fmt_pct
    lines = [f"# Run {run_dir.name}", "", f"{cfg.get('description', '')}", "",
             f"- preset: `{cfg['preset']}` ({cfg['kind']}), data `{cfg.get('data')}`",
             f"- photos: {summary['photos']} in {summary['classes']} classes",
             f"- parameters: {summary['params']:,} ({summary['trainable_params']:,} trainable)",
             f"- epochs: {summary['epochs']} (best {summary['best_epoch']}; early stop: {summary['stopped_early']}),"
             f" {summary['train_seconds']:.0f}s on {summary['device']}",
             f"- best val top-1: {pct(summary['best_val_acc'])}; test top-1 {pct(summary['test_top1'])},"
             f" top-5 {pct(summary['test_top5'])}", "",
             "![loss](plots/loss.png) ![accuracy](plots/accuracy.png)", ""]
    if summary["test_top1"] is not None:
        lines.append("Test details: [eval-test/report.md](eval-test/report.md)")
    atomic_write_text(run_dir / "report.md", "\n".join(lines) + "\n")


def _match_classes(samples: Sequence[Any], class_names: Sequence[str]) -> tuple[list[Any], np.ndarray, int]:
    """Samples of another dataset whose breed is one of the run's classes (by wnid or normalised name)."""
    by_key = {normalize_key(clean_name(n)): i for i, n in enumerate(class_names)}
    by_wnid = {b.wnid: i for i, b in enumerate(run_classes(class_names)) if b.wnid}
    kept, labels = [], []
    for s in samples:
        i = by_wnid.get(getattr(s, "wnid", None)) if getattr(s, "wnid", None) else None
        if i is None:
            i = by_key.get(normalize_key(clean_name(str(s.breed))))
        if i is not None:
            kept.append(s)
            labels.append(i)
    return kept, np.array(labels, dtype=np.int64), len(samples) - len(kept)


def evaluate_run(run_dir: str | Path, split: str = "test", data: str | None = None, device: str = "cpu") -> Path:
    """Evaluate a run's best model on its recorded split, or on every photo of another dataset (``data``).

    Writes RUN_DIR/eval-<split>/ (or eval-<dataset folder name>/ for ``data``) and returns that folder.
    """
    from .data import load_dataset, load_manifest
    device = resolve_device(device)
    run = Path(run_dir)
    cfg = json.loads((run / "config.json").read_text())
    class_names = cfg["classes"]
    extra: dict[str, Any] = {}
    if data is not None:
        kept, labels, skipped = _match_classes(load_dataset(data).samples, class_names)
        part = _Split(kept, labels)
        out = run / f"eval-{Path(data).resolve().name}"
        extra = {"data": str(data), "photos_skipped_unknown_breed": skipped}
        split = Path(data).name
    else:
        samples = load_manifest(run / "split.csv")[split]
        part = _Split(list(samples), _labels(samples, class_names))
        out = run / f"eval-{split}"
    if not part.samples:
        raise ValueError(f"no photos to evaluate ({split})")
    clf, _ = load_model_dir(run)
    if cfg["kind"] == "transfer" and not cfg.get("backbone_weights"):
        # Frozen backbone: reuse cached features instead of running it again.
        parts = {"test": part}
        _attach_features({**cfg, "feature_views": ["plain"]}, extractor_for(cfg), parts)
        part = parts["test"]
        probs = _head_probs(clf.breed_head, part.features)
    else:
        probs = _image_probs(clf, part.samples, class_names, device, int(cfg.get("num_workers", 0)))
    _write_eval(out, probs, part, class_names, cfg, split, extra)
    return out


def compare_runs(run_dirs: Sequence[str | Path]) -> list[dict[str, Any]]:
    """One row per run: preset, params, best val acc, test acc, epochs, time."""
    rows = []
    for d in run_dirs:
        p = Path(d)
        try:
            s = json.loads((p / "summary.json").read_text())
        except FileNotFoundError:
            # An unfinished run: show what its metrics say so far.
            hist = json.loads((p / "metrics.json").read_text()) if (p / "metrics.json").exists() else []
            cfg = json.loads((p / "config.json").read_text()) if (p / "config.json").exists() else {}
            best = max(hist, key=lambda h: h["val_acc"], default={})
            s = {"preset": cfg.get("preset", "?"), "params": None, "best_val_acc": best.get("val_acc"),
                 "test_top1": None, "epochs": len(hist), "train_seconds": sum(h["seconds"] for h in hist)}
        rows.append({"run": p.name, "preset": s["preset"], "params": s.get("params"),
                     "best_val_acc": s.get("best_val_acc"), "test_acc": s.get("test_top1"),
                     "epochs": s.get("epochs"), "time_s": s.get("train_seconds")})
    return rows


COMPARE_COLUMNS = ["run", "preset", "params", "best_val_acc", "test_acc", "epochs", "time_s"]


def build_preset_model(name: str, overrides: dict[str, Any] | Sequence[str] | None = None,
                       num_classes: int = 120) -> Classifier:
    """The classifier a preset trains, without data (for parameter counts and shape checks)."""
    cfg = load_preset(name, overrides)
    classes = list(stanford_breeds())[:num_classes] if num_classes <= 120 else \
        [Breed(None, f"class {i}") for i in range(num_classes)]
    if cfg["kind"] == "cnn":
        return cnn_classifier_from_config(cfg, classes)
    bb = create_backbone(cfg["backbone"], pretrained=cfg["backbone"].startswith("efficientnet_lite"),
                         weights=cfg.get("backbone_weights"))
    head = build_head(cfg.get("head") or {"type": "linear"}, bb.spec.feature_dim, len(classes))
    return Classifier(bb, head, classes, get_spec(cfg["backbone"]).preprocess())
