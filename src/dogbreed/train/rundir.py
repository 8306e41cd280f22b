"""The run directory: its layout, config.json, checkpoints and metrics files, and cleaning up after a failure.

Checkpoints are safetensors for tensors and JSON for the rest; each file is replaced atomically and the JSON is
written last, so its presence means the checkpoint is complete.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save
from torch import nn

from ..errors import ConfigError
from ..fileio import atomic_write_bytes, atomic_write_text
from ..runtime import ctrl_c_held
from .config import TrainConfig, from_dict

CONFIG = "config.json"
FAILED = "FAILED.txt"  # present while a run's last attempt failed after writing checkpoints it can resume from
METRIC_COLUMNS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"]


def new_run_dir(out: str | Path, cfg: TrainConfig) -> Path:
    base = Path(out) / (cfg.run_name or f"{cfg.preset}-{time.strftime('%Y%m%d-%H%M%S')}")
    run, i = base, 1
    while run.exists():
        i += 1
        run = base.with_name(f"{base.name}-{i}")
    run.mkdir(parents=True)
    return run


def write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=2, default=_json_default).encode())


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, torch.Tensor):
        return o.item() if o.numel() == 1 else o.tolist()
    if isinstance(o, (tuple, set)):
        return list(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_config(run_dir: Path, cfg: TrainConfig) -> None:
    write_json(run_dir / CONFIG, cfg.to_dict())


def read_config(run_dir: Path) -> TrainConfig:
    f = Path(run_dir) / CONFIG
    if not f.is_file():
        raise ConfigError(f"{run_dir}: not a run directory (no {CONFIG}; write one with dogbreed train)")
    try:
        return from_dict(json.loads(f.read_text()))
    except json.JSONDecodeError as e:
        raise ConfigError(f"{f}: not valid JSON ({e})") from None
    except ConfigError as e:
        raise ConfigError(f"{f}: not a run config this version can read ({e})") from None


def has_checkpoint(run_dir: Path, tag: str = "last") -> bool:
    return (run_dir / "ckpt" / f"{tag}.json").is_file()


@contextlib.contextmanager
def cleanup_on_failure(run_dir: Path, created: bool) -> Iterator[None]:
    """A failed run loses nothing worth keeping and leaves nothing misleading behind.

    A run that wrote a checkpoint is kept for ``--resume`` and marked failed (FAILED.txt says why); a new run with no
    checkpoint yet is removed. The marker goes once an attempt completes.
    """
    try:
        yield
    except BaseException as e:
        if has_checkpoint(run_dir):
            # a Ctrl-C has no message of its own: the marker said "KeyboardInterrupt: " and the terminal nothing
            why = "interrupted (Ctrl-C)" if isinstance(e, KeyboardInterrupt) else f"{type(e).__name__}: {e}"
            # On a full disk the marker may not fit either; the error that stopped the run is the one to tell.
            with contextlib.suppress(OSError):
                atomic_write_text(run_dir / FAILED, f"{why}\nresume with: dogbreed train --resume {run_dir}\n")
            if isinstance(e, KeyboardInterrupt):
                from .inputs import log

                log(f"{run_dir}: {why}; resume with: dogbreed train --resume {run_dir}")
        elif created:
            shutil.rmtree(run_dir, ignore_errors=True)
            if isinstance(e, KeyboardInterrupt):  # it had ended in silence, exit 130, the run folder gone
                from .inputs import log

                log(f"interrupted (Ctrl-C) before the first checkpoint: nothing to resume, {run_dir} removed")
        raise
    (run_dir / FAILED).unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------------------------
# Checkpoints


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
    """The three files of a checkpoint, each replaced atomically, with a Ctrl-C held until all three are written:
    one between them left epoch N's weights beside epoch N-1's optimizer and record, and a resume then trained
    epoch N again on weights that had had it. All three carry one token, which `load_checkpoint` compares (for a
    process killed outright between them)."""
    weights = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    opt_tensors, opt_meta = _optimizer_tensors(opt)
    token = {"checkpoint": uuid.uuid4().hex}
    with ctrl_c_held():
        atomic_write_bytes(ckpt_dir / f"{tag}.safetensors", save(weights, metadata=token))
        atomic_write_bytes(ckpt_dir / f"{tag}.optim.safetensors", save(opt_tensors, metadata=token))
        write_json(ckpt_dir / f"{tag}.json", {**info, "optimizer": opt_meta, **token})


def load_checkpoint(ckpt_dir: Path, tag: str) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    info = json.loads((ckpt_dir / f"{tag}.json").read_text())
    files = [ckpt_dir / f"{tag}.safetensors", ckpt_dir / f"{tag}.optim.safetensors"]
    if "checkpoint" in info:  # checkpoints written before the token have none to compare
        for f in files:
            with safe_open(str(f), "pt") as st:
                if (st.metadata() or {}).get("checkpoint") != info["checkpoint"]:
                    raise ConfigError(f"checkpoint {ckpt_dir / tag} is torn: {f.name} is not from the save that "
                                      f"wrote {tag}.json (the process was stopped between its files), so resuming "
                                      "would mix two epochs; train again without --resume")
    weights = load_file(str(files[0]))
    opt_state = _optimizer_state(load_file(str(files[1])), info["optimizer"])
    return weights, opt_state, info


def load_weights(ckpt_dir: Path, tag: str) -> dict[str, torch.Tensor]:
    return load_file(str(ckpt_dir / f"{tag}.safetensors"))


def write_metrics(run_dir: Path, history: list[dict[str, Any]]) -> None:
    write_json(run_dir / "metrics.json", history)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=METRIC_COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(history)
    atomic_write_bytes(run_dir / "metrics.csv", buf.getvalue().encode())
