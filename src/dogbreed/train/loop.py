"""The epoch loop: optimizer, schedule and AMP from the config, early stopping, a checkpoint every epoch.

Reproducibility: every epoch reseeds torch/numpy/random and the loader from (seed, epoch), so a run resumed from
its last checkpoint replays exactly what an uninterrupted run would have done (on the same device/threads).
"""

from __future__ import annotations

import math
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..accel import is_cuda, to_device
from ..errors import ConfigError
from . import distributed
from .config import TrainConfig
from .inputs import log, predict_logits
from .rundir import save_checkpoint, write_metrics
from .strategies import Plan, Strategy, epoch_seed


@dataclass
class State:
    epoch: int = 0
    best: dict[str, Any] = field(default_factory=dict)
    bad_epochs: int = 0
    stopped_early: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)
    elapsed_s: float = 0.0

    @classmethod
    def from_checkpoint(cls, info: dict[str, Any]) -> State:
        return cls(info["epoch"], info["best"], info["bad_epochs"], info["stopped_early"], info["history"],
                   info.get("elapsed_s", 0.0))


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def build_optimizer(cfg: TrainConfig, net: nn.Module, head: nn.Module, backbone_lr: float) -> torch.optim.Optimizer:
    head_ids = {id(p) for p in head.parameters()}
    head_params = [p for p in net.parameters() if p.requires_grad and id(p) in head_ids]
    other = [p for p in net.parameters() if p.requires_grad and id(p) not in head_ids]
    groups = [{"params": head_params, "lr": cfg.lr}] + ([{"params": other, "lr": backbone_lr}] if other else [])
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    opt = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
    return opt(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_lambda(cfg: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    """Multiplier per optimizer step: linear warm-up, then constant or cosine decay to 0 at max_epochs."""
    warm = int(round(cfg.schedule.warmup_epochs * steps_per_epoch))
    total = max(1, cfg.max_epochs * steps_per_epoch)
    cosine = cfg.schedule.type == "cosine"

    def f(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        if cosine:
            t = min(1.0, (step - warm) / max(1, total - warm))
            return 0.5 * (1 + math.cos(math.pi * t))
        return 1.0

    return f


def amp_settings(amp: str, device: str) -> tuple[bool, torch.dtype | None]:
    if amp == "none":
        return False, None
    if amp == "auto":
        return (True, torch.float16) if device.startswith("cuda") else (False, None)
    if amp == "bf16":
        return True, torch.bfloat16
    if not device.startswith("cuda"):  # fp16
        raise ConfigError("setting 'amp': fp16 needs CUDA; on CPU use amp=bf16 or none")
    return True, torch.float16


def loss_acc(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    if len(labels) == 0:
        return float("nan"), float("nan")
    t = torch.from_numpy(logits)
    y = torch.from_numpy(labels)
    return float(F.cross_entropy(t, y)), float((t.argmax(1) == y).float().mean())


def improved(row: dict[str, Any], best: dict[str, Any], monitor: str) -> bool:
    if not best:
        return True
    if monitor == "val_loss":
        return row["val_loss"] < best["val_loss"]
    # val_acc; ties (common on small val sets) go to the lower loss
    return row["val_acc"] > best["val_acc"] or (
        row["val_acc"] == best["val_acc"] and row["val_loss"] < best["val_loss"])


class _Trainer:
    """One run's optimizer, schedule, scaler and loss, and the work of one epoch."""

    def __init__(self, cfg: TrainConfig, strategy: Strategy, plan: Plan, device: str) -> None:
        self.cfg, self.plan, self.device = cfg, plan, device
        self.dist = distributed.from_env()
        if is_cuda(device):
            plan.net.to(memory_format=torch.channels_last)  # cuDNN's NHWC kernels, with to_device's NHWC input
        # Under torchrun: DDP around the net for the training forward/backward; plan.net stays the plain module
        # (the same parameters) for the optimizer, validation and checkpoints.
        self.train_net = distributed.wrap(plan.net, self.dist, device)
        self.opt = build_optimizer(cfg, plan.net, plan.head, strategy.backbone_lr(cfg))
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lr_lambda(cfg, plan.n_train_batches))
        self.use_amp, self.amp_dtype = amp_settings(cfg.amp, device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp and self.amp_dtype == torch.float16)
        self.crit = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)

    def restore(self, checkpoint: tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]) -> None:
        weights, opt_state, info = checkpoint
        self.plan.net.load_state_dict(weights)
        self.opt.load_state_dict(opt_state)
        self.sched.load_state_dict(info["scheduler"])
        if info.get("scaler"):
            self.scaler.load_state_dict(info["scaler"])

    def train_epoch(self, epoch: int) -> tuple[float, float]:
        """One pass over the training batches; returns (mean loss, accuracy)."""
        net, device = self.train_net, self.device
        net.train()
        if self.plan.freeze_bn_of is not None:
            self.plan.freeze_bn_of.eval()  # pretrained BatchNorm statistics stay as learned on ImageNet
        tot_loss, tot_ok, tot_n = 0.0, 0, 0
        bar = tqdm(self.plan.train_batches(epoch), total=self.plan.n_train_batches,
                   desc=f"epoch {epoch}/{self.cfg.max_epochs}", unit="batch", leave=False, file=sys.stderr,
                   disable=None if self.dist.is_main else True)
        for x, y in bar:
            # Pinned batches (on CUDA) copy without blocking; channels-last to match the weights there.
            x = to_device(x, device) if is_cuda(device) and x.dim() == 4 else x.to(device, non_blocking=True)
            y = torch.as_tensor(y).to(device, non_blocking=True)
            with torch.autocast(device_type="cuda" if device.startswith("cuda") else "cpu", dtype=self.amp_dtype,
                                enabled=self.use_amp):
                logits = net(x)
                loss = self.crit(logits.float(), y)
            self.opt.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.opt)
            self.scaler.update()
            self.sched.step()
            n = len(y)
            tot_loss += float(loss.detach()) * n
            tot_ok += int((logits.argmax(1) == y).sum())
            tot_n += n
            bar.set_postfix(loss=f"{tot_loss / tot_n:.3f}", acc=f"{tot_ok / tot_n:.1%}")
        bar.close()
        tot_loss, tot_ok, tot_n = distributed.sum_all([tot_loss, tot_ok, tot_n], self.dist, device)
        return tot_loss / max(tot_n, 1), tot_ok / max(tot_n, 1)

    def checkpoint_info(self, state: State) -> dict[str, Any]:
        seed = self.cfg.seed
        return {"epoch": state.epoch, "best": state.best, "bad_epochs": state.bad_epochs,
                "stopped_early": state.stopped_early, "history": state.history, "elapsed_s": state.elapsed_s,
                "rng": {"seed": seed, "next_epoch_seed": epoch_seed(seed, state.epoch + 1)},
                "scheduler": self.sched.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None}


def fit(cfg: TrainConfig, strategy: Strategy, plan: Plan, run_dir: Path, device: str, state: State,
        checkpoint: tuple | None) -> State:
    """Train from ``state`` (epoch 0, or the one ``checkpoint`` recorded) to max_epochs or early stopping."""
    trainer = _Trainer(cfg, strategy, plan, device)
    if checkpoint is not None:
        trainer.restore(checkpoint)
    for epoch in range(state.epoch + 1, cfg.max_epochs + 1):
        if state.stopped_early:
            break
        t0 = time.time()
        seed_all(epoch_seed(cfg.seed, epoch))
        train_loss, train_acc = trainer.train_epoch(epoch)
        val_loss, val_acc = loss_acc(*predict_logits(plan.net, plan.val_batches(), device))
        row = {"epoch": epoch, "train_loss": round(train_loss, 5), "train_acc": round(train_acc, 5),
               "val_loss": round(val_loss, 5), "val_acc": round(val_acc, 5), "lr": trainer.opt.param_groups[0]["lr"],
               "seconds": round(time.time() - t0, 2)}
        row = distributed.from_main(row, trainer.dist)  # one early-stopping decision for every process
        state.history.append(row)
        state.epoch = epoch
        state.elapsed_s += time.time() - t0
        if improved(row, state.best, cfg.monitor):
            state.best, state.bad_epochs = dict(row), 0
        else:
            state.bad_epochs += 1
        state.stopped_early = state.bad_epochs >= cfg.patience
        if not trainer.dist.is_main:
            continue  # rank 0 alone writes checkpoints, metrics and the log
        info = trainer.checkpoint_info(state)
        if state.best["epoch"] == epoch:
            save_checkpoint(run_dir / "ckpt", "best", plan.net, trainer.opt, info)
        save_checkpoint(run_dir / "ckpt", "last", plan.net, trainer.opt, info)  # written last: the resume point
        write_metrics(run_dir, state.history)
        log(f"epoch {epoch}/{cfg.max_epochs}: train loss {row['train_loss']:.4f} acc {row['train_acc']:.1%} | "
            f"val loss {row['val_loss']:.4f} acc {row['val_acc']:.1%} | {row['seconds']:.1f}s"
            + (" *" if state.best["epoch"] == epoch else ""))
        if state.stopped_early:
            log(f"early stopping: no {cfg.monitor} improvement for {cfg.patience} epochs "
                f"(best epoch {state.best['epoch']})")
    return state
