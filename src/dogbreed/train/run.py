"""`train`: a preset config and a dataset in, a run directory out (or an interrupted run continued)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from .. import evaluate as ev
from ..data import Sample, leave_out_unreadable
from ..errors import ConfigError
from ..models import count_parameters, save_model_dir
from ..runtime import resolve_device
from . import distributed
from .config import TrainConfig, from_dict, resume_overrides
from .inputs import (
    Split,
    check_split,
    class_names_of,
    labels_of,
    log,
    new_split,
    recorded_left_out,
    recorded_split,
    run_classes,
    save_split,
)
from .loop import State, fit, seed_all
from .reports import write_eval, write_run_report
from .rundir import (
    cleanup_on_failure,
    has_checkpoint,
    load_checkpoint,
    load_weights,
    new_run_dir,
    read_config,
    write_config,
    write_json,
)
from .strategies import strategy_for


def refuse_changes_on_resume(given: list[str], run_dir: str | Path) -> None:
    """A resumed run trains on its recorded preset, split and folder: a new one (``given``, the flags that asked) is
    refused, not ignored with exit 0 and the user believing it trained on the new data."""
    if given:
        raise ConfigError(f"{' and '.join(given)} cannot change a resumed run: it carries on with the preset, data "
                          f"split and folder recorded in {run_dir}; start a new run instead")


def train(config: TrainConfig | dict[str, Any] | None, data: str | None = None, out: str | Path = "runs",
          resume: str | Path | None = None, device: str = "cpu") -> Path:
    """Train a preset config (see `load_preset`) on a dataset; returns the run directory.

    ``resume``: a run directory; training continues after its last checkpoint with the recorded config and split.
    ``config`` is then a dict of changes: max_epochs, patience and num_workers can change, anything else is refused.
    Bad settings and unusable data are refused before a run directory exists; a run that fails later is removed, or
    kept and marked failed when it has a checkpoint to resume from.
    """
    if resume is not None:  # every process checks, before the group forms: none waits for a refused one
        refuse_changes_on_resume([flag for flag, on in (("--out", str(out) != "runs"),
                                                        ("--data", data and (Path(resume) / "split.csv").is_file()))
                                  if on], resume)
    d, device = distributed.init(resolve_device(device))
    try:
        if d.enabled and not d.is_main:
            run_dir = _follow_main(d, device, resume, time.time())
        else:
            run_dir = _train_main(config, data, out, resume, device, time.time())
            distributed.from_main(str(run_dir), d)
        # Every process is done with the group before any tears it down: a rank that destroys it while a peer's
        # last collective is still in flight can abort in gloo ("terminate called without an active exception").
        distributed.barrier(d)
        return run_dir
    finally:
        distributed.shutdown(d)


def _train_main(config: TrainConfig | dict[str, Any] | None, data: str | None, out: str | Path,
                resume: str | Path | None, device: str, t_start: float) -> Path:
    """`train` in one process, or as rank 0 of a torchrun launch (the only one that writes the run directory)."""
    d = distributed.from_env()
    left: dict[str, str] = {}  # what the dataset's reading left out, recorded with the split
    if resume is not None:
        run_dir = Path(resume)
        if config is not None and not isinstance(config, dict):
            raise ConfigError("resume takes a dict of changes (max_epochs, patience, num_workers), not a new config")
        cfg = resume_overrides(read_config(run_dir), config or {})
        manifest = (run_dir / "split.csv").is_file()
        splits = recorded_split(run_dir) if manifest else new_split(cfg, str(data or cfg.data), left)
        created = False
    else:
        if config is None or data is None:
            raise ConfigError("train needs a config and data (or resume=RUN_DIR)")
        cfg = config if isinstance(config, TrainConfig) else from_dict(config)
        splits = new_split(cfg, str(data), left)  # checked before anything is written
        cfg = cfg.replace(data=str(Path(data).resolve()))
        run_dir = new_run_dir(out, cfg)
        manifest, created = False, True
    with cleanup_on_failure(run_dir, created):
        if not manifest:
            save_split(splits, run_dir, left)
        cfg = cfg.replace(classes=class_names_of(cfg, splits))
        write_config(run_dir, cfg)
        # Under torchrun the other processes wait here for the run directory, then read config and split from it.
        distributed.from_main(str(run_dir), d)
        _train_run(cfg, run_dir, splits, device, resume is not None, t_start)
    return run_dir


def _follow_main(d: distributed.Dist, device: str, resume: str | Path | None, t_start: float) -> Path:
    """Ranks 1..N-1 of a torchrun launch: the same run as rank 0, read from the directory rank 0 prepared."""
    run_dir = Path(distributed.from_main(None, d))
    cfg = read_config(run_dir)
    _train_run(cfg, run_dir, recorded_split(run_dir), device, resume is not None, t_start)
    return Path(distributed.from_main(None, d))


def _train_run(cfg: TrainConfig, run_dir: Path, splits: dict[str, list[Sample]], device: str, resuming: bool,
               t_start: float) -> None:
    class_names = list(cfg.classes or [])
    classes = run_classes(class_names)
    strategy = strategy_for(cfg)
    seed_all(cfg.seed)  # model initialisation
    state, checkpoint = State(), None
    if resuming and has_checkpoint(run_dir):
        checkpoint = load_checkpoint(run_dir / "ckpt", "last")
        state = State.from_checkpoint(checkpoint[2])
        if state.stopped_early and cfg.max_epochs > state.epoch:
            log(f"{run_dir}: stopped early at epoch {state.epoch}; nothing to resume")
        else:
            log(f"resuming {run_dir} after epoch {state.epoch}")
    # Photos that cannot be read are left out of every split, named in the log and the summary: the loader stood
    # the next photo in for one, under the bad one's label, so a from-scratch CNN's val (its best epoch) and test
    # figures scored an HTML page named .jpg as another breed's photo. A new split left them out before splitting
    # (`new_split`, recorded in left_out.json); a resumed run keeps its split.csv as saved, which in a run made
    # before that still holds them, so they are left out of it here, on every rank alike.
    unreadable: dict[str, str] = recorded_left_out(run_dir)
    if resuming:
        for k in list(splits):
            splits[k], bad = leave_out_unreadable(splits[k])
            unreadable.update(bad)
    if unreadable:
        first = next(iter(unreadable.items()))
        log(f"{len(unreadable)} unreadable photo{'s' * (len(unreadable) > 1)} left out ({first[0]}: {first[1]}"
            f"{'; all in summary.json' if len(unreadable) > 1 else ''})")
        check_split(splits, f"{run_dir.name}, once the unreadable photos are left out")
    parts = {k: Split(list(v), labels_of(v, class_names)) for k, v in splits.items()}
    clf = strategy.build(cfg, classes)
    strategy.set_trainable(clf, cfg)
    n_total, n_train = count_parameters(clf), count_parameters(clf, trainable_only=True)
    n_total -= count_parameters(clf.backbone.imagenet_head) if clf.backbone.imagenet_head is not None else 0
    log(f"{cfg.preset} ({cfg.kind}): {n_total:,} parameters, {n_train:,} trainable; "
        f"{len(parts['train'].samples)} train / {len(parts['val'].samples)} val / "
        f"{len(parts['test'].samples) if 'test' in parts else 0} test photos, {len(classes)} classes; device {device}")
    plan = strategy.plan(cfg, clf, parts, class_names, device)
    state = fit(cfg, strategy, plan, run_dir, device, state, checkpoint)
    if not distributed.from_env().is_main:
        return  # the model, plots, evaluation and report are rank 0's

    # The best epoch's weights become the run's model.
    plan.net.load_state_dict(load_weights(run_dir / "ckpt", "best"))
    clf = clf.cpu().eval()
    save_model_dir(clf, run_dir / "model", save_backbone=strategy.save_backbone(cfg),
                   extra={"preset": cfg.preset, "kind": cfg.kind, "run": run_dir.name, "best": state.best})
    ev.plot_learning_curves(state.history, run_dir / "plots", title=cfg.preset)
    test_metrics = None
    if parts.get("test") is not None and len(parts["test"].samples):
        probs = plan.test_probs(parts["test"])
        test_metrics = write_eval(run_dir / "eval-test", probs, parts["test"], class_names, cfg, "test")
    summary = {
        "preset": cfg.preset, "kind": cfg.kind, "params": n_total, "trainable_params": n_train,
        "best_epoch": state.best.get("epoch"), "best_val_acc": state.best.get("val_acc"),
        "test_top1": test_metrics["top1"] if test_metrics else None,
        "test_top5": test_metrics["top5"] if test_metrics else None,
        "epochs": state.epoch, "stopped_early": state.stopped_early, "train_seconds": round(state.elapsed_s, 1),
        "wall_seconds_this_call": round(time.time() - t_start, 1), "device": device,
        "photos": {k: len(v.samples) for k, v in parts.items()}, "classes": len(classes),
        "photos_skipped_unreadable": unreadable,
    }
    write_json(run_dir / "summary.json", summary)
    write_run_report(run_dir, cfg, summary)
    log(f"run saved to {run_dir} (best val acc {summary['best_val_acc']:.1%} at epoch {summary['best_epoch']}"
        + (f", test top-1 {summary['test_top1']:.1%})" if test_metrics else ")"))


