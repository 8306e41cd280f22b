"""Training configs: one typed dataclass per preset kind, defaults in one place, presets as YAML data.

A preset is YAML (optionally ``base: other``) merged with ``--set`` overrides, then checked against the dataclass of
its ``kind``: an unknown key is refused with a "did you mean", and every value is type- and range-checked, naming the
key. The resolved config is written to RUN_DIR/config.json as a plain dict (`TrainConfig.to_dict`).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml

from ..errors import ConfigError
from ..models import cnn_arch
from ..specs import REGISTRY as BACKBONES
from ..transforms import Augment

# Keys a resumed run may change; everything else must stay as recorded or the run would silently mix setups.
RESUME_OVERRIDABLE = ("max_epochs", "patience", "num_workers")


def _range(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False) -> dict[str, Any]:
    return {"lo": lo, "hi": hi, "lo_open": lo_open}


@dataclass
class SplitConfig:
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)  # train, val, test
    seed: int = 0
    use_official: bool = True  # keep a dataset's own train/test split where it has one (Stanford Dogs)


@dataclass
class ScheduleConfig:
    type: Literal["constant", "cosine"] = "constant"
    warmup_epochs: float = field(default=0.0, metadata=_range(0))


@dataclass
class HeadConfig:
    type: Literal["dropout_linear", "linear"] = "dropout_linear"
    dropout: float = field(default=0.2, metadata=_range(0, 1))


@dataclass
class TrainConfig:
    """Settings every kind shares. Subclasses add their own; ``kind`` picks the subclass and the strategy."""

    kind: ClassVar[str] = ""
    preset: str = ""
    description: str = ""
    image_size: int | None = field(default=None, metadata=_range(16, 2048))
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = field(default=0.001, metadata=_range(0, 10, lo_open=True))
    momentum: float = field(default=0.0, metadata=_range(0, 1))
    weight_decay: float = field(default=0.0, metadata=_range(0))
    batch_size: int = field(default=32, metadata=_range(1))
    max_epochs: int = field(default=50, metadata=_range(1))
    patience: int = field(default=5, metadata=_range(1))
    monitor: Literal["val_acc", "val_loss"] = "val_acc"
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    label_smoothing: float = field(default=0.0, metadata=_range(0, 1))
    amp: Literal["none", "auto", "bf16", "fp16"] = "none"
    augment: dict[str, Any] | None = None  # `transforms.Augment` fields; None: no augmentation
    split: SplitConfig = field(default_factory=SplitConfig)
    seed: int = 0
    num_workers: int = field(default=0, metadata=_range(0))
    run_name: str | None = None
    # Filled in by `train`, recorded in config.json: the data folder and the run's class names.
    data: str | None = None
    classes: list[str] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **dataclasses.asdict(self)}

    def replace(self, **changes: Any) -> TrainConfig:
        return from_dict({**self.to_dict(), **changes})


@dataclass
class CnnConfig(TrainConfig):
    """A from-scratch CNN (`models.build_cnn_classifier`); ``cnn`` is its architecture (`models.CNN_DEFAULTS`)."""

    kind: ClassVar[str] = "cnn"
    image_size: int | None = field(default=128, metadata=_range(16, 2048))
    cnn: dict[str, Any] = field(default_factory=dict)


@dataclass
class TransferConfig(TrainConfig):
    """A new head on a frozen pretrained backbone, trained on cached features unless ``end_to_end``."""

    kind: ClassVar[str] = "transfer"
    backbone: str = "efficientnet_lite0"
    backbone_weights: str | None = None  # a local weights file (ResNet-50); None: packaged weights
    head: HeadConfig = field(default_factory=HeadConfig)
    feature_views: list[Literal["plain", "flip"]] = field(default_factory=lambda: ["plain"])
    feature_runtime: Literal["onnx", "torch"] = "onnx"
    end_to_end: bool = False  # run the frozen backbone on augmented photos every epoch (slow on CPU)


@dataclass
class FinetuneConfig(TransferConfig):
    """Transfer plus the last blocks (or all) of the backbone unfrozen, at their own lower learning rate."""

    kind: ClassVar[str] = "finetune"
    end_to_end: bool = True
    unfreeze: Literal["last_n_blocks", "all"] = "last_n_blocks"
    unfreeze_blocks: int = field(default=3, metadata=_range(1))
    backbone_lr: float | None = field(default=None, metadata=_range(0, 10, lo_open=True))  # None: same as lr


CONFIGS: dict[str, type[TrainConfig]] = {c.kind: c for c in (CnnConfig, TransferConfig, FinetuneConfig)}
KINDS = tuple(CONFIGS)


# ---------------------------------------------------------------------------------------------------------------
# Checking values against the dataclass


def _unknown(key: str, known: Sequence[str], where: str) -> ConfigError:
    close = difflib.get_close_matches(key.rsplit(".", 1)[-1], list(known), n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(sorted(known))}"
    return ConfigError(f"unknown setting {key!r} for {where}{hint}")


def _bad(key: str, value: Any, expected: str) -> ConfigError:
    return ConfigError(f"setting {key!r}: expected {expected}, got {value!r}")


def _not_finite(key: str, value: Any) -> ConfigError:
    return ConfigError(f"setting {key!r} must be a finite number, got {value!r}")


def _check_range(key: str, value: float, meta: Any) -> None:
    if not math.isfinite(value):  # NaN compares false with every bound, so it would pass them all
        raise _not_finite(key, value)
    lo, hi = meta.get("lo"), meta.get("hi")
    if lo is not None and (value < lo or (meta.get("lo_open") and value == lo)):
        raise ConfigError(f"setting {key!r} must be {'>' if meta.get('lo_open') else '>='} {lo}, got {value!r}")
    if hi is not None and value > hi:
        raise ConfigError(f"setting {key!r} must be <= {hi}, got {value!r}")


_SCALARS: dict[type, tuple[type | tuple[type, ...], str]] = {
    bool: (bool, "true or false"), int: (int, "a whole number"), float: ((int, float), "a number"), str: (str, "text"),
}


def _number_text(key: str, value: str, tp: type) -> float | int | None:
    """A number written as text, or None. PyYAML (YAML 1.1) reads ``1e-3`` and ``3e-4``, having no dot, as strings."""
    try:
        number = float(value)
    except ValueError:
        return None
    if not math.isfinite(number):
        raise _not_finite(key, value)
    if tp is int:
        return int(number) if number.is_integer() else None
    return number


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """``value`` as type ``tp`` (a type hint), or a ConfigError naming ``key``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(key, value, inner[0]) if len(inner) == 1 else value
    if origin is Literal:
        if value not in args:
            raise _bad(key, value, "one of " + " | ".join(map(str, args)))
        return value
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise _bad(key, value, "a list")
        if origin is tuple and args and args[-1] is not Ellipsis and len(value) != len(args):
            raise _bad(key, value, f"a list of {len(args)} values")
        item = args[0] if args else Any
        out = [_coerce(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict or tp is Any:
        if origin is dict and not isinstance(value, dict):
            raise _bad(key, value, "a mapping")
        return value
    if tp in _SCALARS:
        accepts, expected = _SCALARS[tp]
        if tp in (int, float) and isinstance(value, str) and (number := _number_text(key, value, tp)) is not None:
            return number
        # bool is an int to Python, but `max_epochs: true` is a mistake, not 1.
        if isinstance(value, bool) is not (tp is bool) or not isinstance(value, accepts):
            raise _bad(key, value, expected)
        if tp is float and not math.isfinite(value):
            raise _not_finite(key, value)
        return float(value) if tp is float else value
    return value


def _build(cls: type, data: Any, prefix: str = "") -> Any:
    if not isinstance(data, dict):
        raise _bad(prefix or "config", data, "a mapping")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    where = f"{prefix!r}" if prefix else f"a {getattr(cls, 'kind', '') or cls.__name__} preset"
    values = {}
    for k, v in data.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if k not in fields:
            raise _unknown(key, list(fields), where)
        value = _coerce(key, v, hints[k])
        if isinstance(value, (int, float)) and not isinstance(value, bool) and fields[k].metadata:
            _check_range(key, value, fields[k].metadata)
        values[k] = value
    return cls(**values)


def _check_finite(key: str, value: Any) -> None:
    """NaN or inf anywhere in a free-form group (``cnn``, ``augment``), named by its dotted key."""
    if isinstance(value, float) and not math.isfinite(value):
        raise _not_finite(key, value)
    if isinstance(value, dict):
        for k, v in value.items():
            _check_finite(f"{key}.{k}", v)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_finite(f"{key}[{i}]", v)


def _check_backbone(name: str) -> None:
    """A backbone `backbones.create_backbone` can build; a typo had trained nothing and ended in a KeyError
    traceback once the data had been read."""
    if name in BACKBONES or (name.startswith("timm:") and name[len("timm:"):].strip()):
        return
    close = difflib.get_close_matches(name, list(BACKBONES), n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(BACKBONES)} or 'timm:<model>'"
    raise ConfigError(f"setting 'backbone': unknown backbone {name!r}; {hint}")


def _check_parts(cfg: TrainConfig) -> None:
    """Checks of nested settings whose schema lives elsewhere (the CNN architecture, augmentation, backbones)."""
    if isinstance(cfg, TransferConfig):  # finetune too; a cnn config has no backbone setting at all
        _check_backbone(cfg.backbone)
    if isinstance(cfg, CnnConfig):
        _check_finite("cnn", cfg.cnn)
        try:
            cnn_arch(cfg.cnn)
        except (ValueError, KeyError, TypeError) as e:
            raise ConfigError(f"setting 'cnn': {e}") from None
    if cfg.augment is not None:
        if not isinstance(cfg.augment, dict):
            raise _bad("augment", cfg.augment, "a mapping or null")
        known = [f.name for f in dataclasses.fields(Augment)]
        for k in cfg.augment:
            if k not in known:
                raise _unknown(f"augment.{k}", known, "'augment'")
        _check_finite("augment", cfg.augment)
    if not abs(sum(cfg.split.ratios) - 1) <= 1e-6 or not min(cfg.split.ratios) >= 0:  # NaN fails both, as it should
        raise ConfigError(f"setting 'split.ratios' must be 3 non-negative numbers summing to 1, "
                          f"got {list(cfg.split.ratios)}")


def from_dict(d: dict[str, Any]) -> TrainConfig:
    """A typed config from a resolved dict (a preset, or a run's config.json)."""
    d = dict(d)
    kind = d.pop("kind", None)
    if kind not in CONFIGS:
        raise ConfigError(f"preset {d.get('preset') or '?'!r}: kind must be one of {' | '.join(KINDS)}, "
                          f"got {kind!r}")
    cfg = _build(CONFIGS[kind], d)
    _check_parts(cfg)
    return cfg


# ---------------------------------------------------------------------------------------------------------------
# Presets


def list_presets() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("dogbreed").joinpath("presets").iterdir()
                  if p.name.endswith(".yaml"))


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def _read_preset(name: str, folder: Path | None = None,
                 chain: tuple[tuple[str, str], ...] = ()) -> dict[str, Any]:
    """A preset's settings with its ``base:`` chain merged in. ``folder``: that of the file naming ``name`` as its
    base, which a relative .yaml path is read from (it had been read from the current directory, so a preset and its
    base side by side worked only from their own folder); ``chain``: (name, file) of the presets that led here."""
    p: Path | None = None
    text = None
    if Path(name).suffix in (".yaml", ".yml"):
        p = Path(name) if folder is None or Path(name).is_absolute() else folder / name
        if not p.is_file() and folder is not None and Path(name).is_file():
            p = Path(name)  # from the current directory, as a base was read before: such presets keep working
        if p.is_file():
            text = p.read_text()
        elif folder is not None:
            raise ConfigError(f"unknown preset {name!r}, the base of {chain[-1][0]!r}: no such file {p} (nor "
                              f"{Path(name)} from the current folder)")
        else:
            p = None
    if text is None:  # a bare name is a packaged preset, wherever the preset naming it lives
        f = resources.files("dogbreed").joinpath("presets", f"{name}.yaml")
        if not f.is_file():
            known = list_presets()
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(known)} (or a .yaml path)"
            raise ConfigError(f"unknown preset {name!r}{hint}")
        text = f.read_text()
    here = str(p.resolve()) if p is not None else f"packaged:{name}"
    if here in (seen for _, seen in chain):  # it had recursed until Python's RecursionError
        names = [n for n, _ in chain] + [name]
        raise ConfigError(f"preset {names[0]!r} has a loop of bases: {' -> '.join(names)}")
    try:
        cfg = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"preset {name!r} is not valid YAML: {e}") from None
    if not isinstance(cfg, dict):
        raise ConfigError(f"preset {name!r} must be a YAML mapping of settings")
    base = cfg.pop("base", None)
    if not base:
        return cfg
    if not isinstance(base, str):
        raise ConfigError(f"preset {name!r}: base must be a preset name or a .yaml path, got {base!r}")
    return deep_merge(_read_preset(base, p.parent if p is not None else None, (*chain, (name, here))), cfg)


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """['lr=0.01', 'cnn.dropout=0.2', 'split.ratios=[0.7,0.15,0.15]'] -> nested dict; values are YAML."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw  # not YAML: kept as text, so the type check names the key
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {part!r} is not a group of settings")
        node[parts[-1]] = value
    return out


def load_preset(name: str, overrides: dict[str, Any] | Sequence[str] | None = None) -> TrainConfig:
    """The typed config of a preset (YAML with optional ``base:``), with overrides merged in and checked."""
    raw = _read_preset(name)
    if overrides:
        raw = deep_merge(raw, overrides if isinstance(overrides, dict) else parse_overrides(overrides))
    raw["preset"] = raw.get("preset") or Path(name).stem
    return from_dict(raw)


def resume_overrides(recorded: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
    """The recorded config with the overrides a resumed run can honour; any other change is refused."""
    current = recorded.to_dict()
    unknown = sorted(k for k in overrides if k not in current)
    if unknown:  # a typo ("max_epoch=3") read as a setting the run "used other values" for
        close = difflib.get_close_matches(unknown[0], list(RESUME_OVERRIDABLE) + list(current), n=1, cutoff=0.6)
        raise ConfigError(f"unknown setting {unknown[0]!r}" + (f"; did you mean {close[0]!r}?" if close else "")
                          + f" (a resumed run can change {list(RESUME_OVERRIDABLE)})")
    bad = sorted(k for k, v in overrides.items() if k not in RESUME_OVERRIDABLE and v != current.get(k))
    if bad:
        raise ConfigError(f"cannot change {bad} when resuming (the run so far used other values); "
                          f"only {list(RESUME_OVERRIDABLE)} can change")
    return from_dict({**current, **{k: v for k, v in overrides.items() if k in RESUME_OVERRIDABLE}})
