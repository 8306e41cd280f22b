"""Reports on runs: the run's report.md, test/other-data evaluations (`dogbreed evaluate`) and `dogbreed compare`.

Nothing here imports the training loop: evaluating or comparing runs needs only a run's files and its model.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import evaluate as ev
from ..data import leave_out_unreadable, left_out_photos, load_dataset
from ..errors import DataError
from ..fileio import atomic_write_text
from ..models import Classifier
from ..resolve import resolve_model
from ..runtime import resolve_device
from .config import TrainConfig
from .inputs import Split, labels_of, log, match_classes, recorded_split, run_classes
from .rundir import read_config
from .strategies import strategy_for

COMPARE_COLUMNS = ["run", "preset", "params", "best_val_acc", "test_acc", "epochs", "time_s"]


def write_eval(out_dir: Path, probs: np.ndarray, split: Split, class_names: Sequence[str], cfg: TrainConfig,
               split_name: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    names = [b.name for b in run_classes(class_names)]
    metrics = ev.compute_metrics(split.labels, probs, names, [str(s.path) for s in split.samples])
    info = {"preset": cfg.preset, "split": split_name, "data": cfg.data, **(extra or {})}
    ev.write_report(metrics, out_dir, title=f"{cfg.preset} - {split_name}", info=info)
    return metrics


def write_run_report(run_dir: Path, cfg: TrainConfig, summary: dict[str, Any]) -> None:
    pct = ev.fmt_pct
    lines = [f"# Run {run_dir.name}", "", f"{cfg.description}", "",
             f"- preset: `{cfg.preset}` ({cfg.kind}), data `{cfg.data}`",
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


def evaluate_run(run_dir: str | Path, split: str = "test", data: str | None = None, device: str = "cpu") -> Path:
    """Evaluate a run's best model on its recorded split, or on every photo of another dataset (``data``).

    Writes RUN_DIR/eval-<split>/ (or eval-<dataset folder name>/ for ``data``, eval-data-<name>/ where that name is
    a split's) and returns that folder.
    """
    device = resolve_device(device)
    run = Path(run_dir)
    cfg = read_config(run)
    class_names = cfg.classes or []
    extra: dict[str, Any] = {}
    if data is None and split not in ("test", "val", "train"):
        raise DataError(f"--split must be test, val or train, not {split!r}")
    listed: dict[str, str] = {}  # what the dataset's reading left out (empty files, FIFOs, broken links)
    if data is not None:
        ds = load_dataset(data)
        every = ds.samples
        listed = left_out_photos(ds)
        kept, labels, skipped = match_classes(every, class_names)
        if every and not kept:
            raise DataError(f"none of the {len(every)} photos in {data} is of a breed this run knows "
                            f"({', '.join(map(str, class_names[:5]))}{', ...' if len(class_names) > 5 else ''})")
        part = Split(kept, labels)
        name = Path(data).resolve().name
        # a dataset folder named like a split gets a folder of its own: `--data elsewhere/test` had replaced the
        # run's held-out test report with one of other photos
        out = run / (f"eval-data-{name}" if name in ("test", "val", "train") else f"eval-{name}")
        extra = {"data": str(data), "photos_skipped_unknown_breed": skipped}
        split = Path(data).name
    else:
        samples = recorded_split(run).get(split, [])
        part = Split(list(samples), labels_of(samples, class_names))
        out = run / f"eval-{split}"
    # A photo that cannot be read is left out and named, not scored: the loader stands the next photo in for it
    # (right for training, where one bad file must not end a run), and an HTML page named .jpg was listed as a
    # misclassified photo, its breed's support one too many.
    bad = {**listed, **leave_out_unreadable(part.samples)[1]}
    if bad:
        keep = [i for i, s in enumerate(part.samples) if str(s.path) not in bad]
        part = Split([part.samples[i] for i in keep], np.asarray(part.labels)[keep])
        extra["photos_skipped_unreadable"] = bad
        first = next(iter(bad.items()))
        log(f"{len(bad)} unreadable photo{'s' * (len(bad) > 1)} left out ({first[0]}: {first[1]}"
            f"{'; all in report.md' if len(bad) > 1 else ''})")
    if not part.samples:
        raise DataError(f"no photos to evaluate ({split})")
    clf = resolve_model(str(run)).classifier
    assert isinstance(clf, Classifier)  # a run dir always holds a PyTorch model dir
    probs, part = strategy_for(cfg).eval_probs(cfg, clf, part, class_names, device)
    write_eval(out, probs, part, class_names, cfg, split, extra)
    return out


def compare_runs(run_dirs: Sequence[str | Path]) -> list[dict[str, Any]]:
    """One row per run: preset, params, best val acc, test acc, epochs, time."""
    rows = []
    for d in run_dirs:
        p = Path(d)
        if not (p / "config.json").is_file() and not (p / "summary.json").is_file():
            raise DataError(f"{p}: not a run directory (no config.json or summary.json; `dogbreed train` writes "
                            "them)")
        try:
            s = json.loads((p / "summary.json").read_text())
            if not isinstance(s, dict):
                raise ValueError("not a JSON object")
        except FileNotFoundError:
            # An unfinished run: show what its metrics say so far.
            try:
                hist = json.loads((p / "metrics.json").read_text()) if (p / "metrics.json").exists() else []
                cfg = json.loads((p / "config.json").read_text()) if (p / "config.json").exists() else {}
                best = max(hist, key=lambda h: h["val_acc"], default={})
                s = {"preset": cfg.get("preset", "?"), "params": None, "best_val_acc": best.get("val_acc"),
                     "test_top1": None, "epochs": len(hist), "train_seconds": sum(h["seconds"] for h in hist)}
            except (ValueError, KeyError, TypeError, AttributeError) as e:
                s = {"preset": f"? (damaged metrics.json or config.json: {type(e).__name__})"}
        except (ValueError, UnicodeDecodeError) as e:  # one damaged run is flagged in its row; the table stays
            s = {"preset": f"? (damaged summary.json: {e})"}
        rows.append({"run": p.name, "preset": s.get("preset", "?"), "params": s.get("params"),
                     "best_val_acc": s.get("best_val_acc"), "test_acc": s.get("test_top1"),
                     "epochs": s.get("epochs"), "time_s": s.get("train_seconds")})
    return rows
