"""Training: presets as data, from-scratch CNNs, transfer learning on cached features, fine-tuning, resumable runs.

One file per job: `config` (typed presets), `inputs` (split, features, batches), `strategies` (one per preset
kind), `rundir` (run directory, checkpoints), `loop` (epochs), `reports` (run report, evaluate, compare), `run`
(`train` itself). A run is a directory::

    RUN_DIR/config.json            resolved config (preset + overrides), what `--resume` reads back
    RUN_DIR/split.csv              split manifest (train/val/test photos), so a resumed run sees the same split
    RUN_DIR/metrics.csv|json       one row per epoch
    RUN_DIR/ckpt/{last,best}.safetensors        trainable weights
    RUN_DIR/ckpt/{last,best}.optim.safetensors  optimizer state tensors
    RUN_DIR/ckpt/{last,best}.json  epoch, seeds, best metric, early-stopping counter, history, scheduler state
    RUN_DIR/model/                 the best model (`dogbreed predict --model RUN_DIR`)
    RUN_DIR/plots/                 learning curves;  RUN_DIR/eval-test/  metrics, report, confusion matrix
    RUN_DIR/summary.json, report.md
    RUN_DIR/FAILED.txt             only while the last attempt failed after a checkpoint (resume it)
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError, DataError
from ..models import Classifier
from .config import (
    KINDS,
    RESUME_OVERRIDABLE,
    CnnConfig,
    FinetuneConfig,
    TrainConfig,
    TransferConfig,
    from_dict,
    list_presets,
    load_preset,
    parse_overrides,
)
from .reports import COMPARE_COLUMNS, compare_runs, evaluate_run
from .run import refuse_changes_on_resume, train
from .strategies import build_preset_model as _build_model
from .strategies import extractor_for, set_trainable

__all__ = [
    "COMPARE_COLUMNS", "KINDS", "RESUME_OVERRIDABLE", "CnnConfig", "ConfigError", "DataError", "FinetuneConfig",
    "TrainConfig", "TransferConfig", "build_preset_model", "compare_runs", "evaluate_run", "extractor_for",
    "from_dict", "list_presets", "load_preset", "parse_overrides", "refuse_changes_on_resume", "set_trainable", "train",
]


def build_preset_model(name: str, overrides: dict[str, Any] | list[str] | None = None,
                       num_classes: int = 120) -> Classifier:
    """The classifier a preset trains, without data (for parameter counts and shape checks)."""
    return _build_model(load_preset(name, overrides), num_classes)
