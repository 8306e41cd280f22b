"""The reference study, every row, on the real 120 breeds: one command, resumable.

    python bench/seed_study.py                    # every preset at the study's settings (early stopping, up to 50)
    python bench/seed_study.py --max-epochs 1     # what fits 2 shared CPU cores in an evening: capped rows say so
    python bench/seed_study.py --report-only      # rewrite docs/seed_study.md from the run dirs, train nothing

Each row is `dogbreed.train.train` on ../shared/data/real/stanford-dogs with its official lists (test = the 2,400
official test photos, val = 1,320 carved per breed from the 12,000 official train photos, train = the other 10,680),
in its own run dir RUNS/<preset> (default runs/study/, git-ignored). A row whose run finished (early stopping, or
the epochs asked for) is skipped; an interrupted one is resumed from its last checkpoint (`train --resume`); a
later run with a larger --max-epochs carries capped rows on from where they stopped. After each row the same model
is scored on web-dogs and imagenet-val-dogs (photos no backbone trained on; bench/train_transfer.py's `row_for`),
and docs/seed_study.md, its plot and each row's learning curves (docs/seed_study/) are rewritten.

Settings: the from-scratch rows keep their presets (128x128, SGD lr 0.001 with no momentum, batch 32, early stopping
patience 5; `adam` and `combined` use Adam as the study did) plus the study's augmentation, STUDY_AUGMENT. The
transfer rows train a head on cached features (their presets, at the backbone's own input size); the fine-tune rows
are their presets (last 3 blocks unfrozen, augmentation). Nothing was chosen on any photo of this table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dogbreed import train
from dogbreed.fileio import atomic_write_text
from dogbreed.runtime import cpu_name

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from train_transfer import REAL, row_for  # noqa: E402

DOC = ROOT / "docs" / "seed_study.md"
ASSETS = ROOT / "docs" / "seed_study"
CHANCE = 1 / 120
# The study's augmentation: random rotation, horizontal/vertical shifts and mirroring (issue 2). The study's exact
# ranges are not recorded here; these are `transforms.Augment`'s defaults for those three, with its random-resized
# crop and colour jitter off, which the study did not use.
STUDY_AUGMENT = {"rotation": 15.0, "translate": 0.1, "hflip": 0.5, "vflip": 0.0, "rrc_scale": [1.0, 1.0],
                 "color_jitter": 0.0}
ROW_FILE = "study_row.json"


@dataclass(frozen=True)
class Row:
    preset: str
    study: str = "–"  # what the study reported for this row (val / test top-1), as the issue quotes it
    finding: str = ""  # the study's finding this row tests, if the issue names one


ROWS = [
    Row("baseline", "4% val"),
    Row("dropout", "– (finding only)", "dropout regularises"),
    Row("pool6", "– (finding only)", "6x6 pooling gains most"),
    Row("stride4"), Row("filters9"), Row("filters128"), Row("tanh"),
    Row("adam", "– (finding only)", "Adam fails to learn"),
    Row("dense256"), Row("blocks4"), Row("gap"),
    Row("batchnorm", "– (finding only)", "batch norm over-fits"),
    Row("combined", "7.4% val", "the combined model beats the baseline"),
    Row("transfer_lite0"), Row("transfer_lite2"),
    Row("transfer_resnet50", "78.4% val / 72.2% test"),
    Row("finetune_lite0"), Row("finetune_lite2"),
]
ITERATIONS = [r.preset for r in ROWS[1:12]]  # the study's one-change variations of the baseline
# Run order: the baseline, the cheap transfer row, then the rows whose findings the issue names and the cheapest
# from-scratch rows (an epoch of `blocks4` or `filters128` costs ~4x the baseline's on CPU), so a capped evening run
# on shared cores fills the most informative rows before it runs out of time.
ORDER = ["baseline", "transfer_lite0", "adam", "dropout", "pool6", "stride4", "gap", "batchnorm", "transfer_lite2",
         "combined", "tanh", "dense256", "filters9", "blocks4", "filters128", "transfer_resnet50", "finetune_lite0",
         "finetune_lite2"]


def config_for(preset: str, max_epochs: int | None, resnet50_weights: str | None) -> Any:
    cfg = train.load_preset(preset)
    changes: dict[str, Any] = {"run_name": preset}
    if cfg.kind == "cnn":
        changes["augment"] = STUDY_AUGMENT
    if preset == "transfer_resnet50":
        changes["backbone_weights"] = resnet50_weights
    if max_epochs and cfg.kind != "transfer":  # heads on cached features take seconds an epoch: never capped
        changes["max_epochs"] = min(cfg.max_epochs, max_epochs)
    return cfg.replace(**changes)


def target_epochs(run: Path, preset: str, max_epochs: int | None) -> int:
    cfg = train.load_preset(preset)
    return cfg.max_epochs if cfg.kind == "transfer" or not max_epochs else min(cfg.max_epochs, max_epochs)


def status(run: Path, want: int) -> str:
    """'done', 'resume', 'fresh' (nothing resumable: start over) for a row's run dir."""
    if not run.exists():
        return "fresh"
    if not (run / "ckpt" / "last.json").is_file():
        return "fresh"  # killed before its first checkpoint: nothing to keep
    last = json.loads((run / "ckpt" / "last.json").read_text())
    finished = (run / "summary.json").is_file() and not (run / "FAILED.txt").exists()
    epoch, stopped = last.get("epoch", 0), last.get("stopped_early", False)
    if finished and (stopped or epoch >= want):
        return "done"
    return "resume"


def run_row(row: Row, runs: Path, args: argparse.Namespace) -> str:
    run = runs / row.preset
    if row.preset == "transfer_resnet50" and not args.resnet50_weights:
        return "no weights"  # torchvision would download them; nothing may be downloaded here
    want = target_epochs(run, row.preset, args.max_epochs)
    st = status(run, want)
    if st == "done":
        return "done"
    print(f"== {row.preset}: {st} (to {want} epochs)", file=sys.stderr, flush=True)
    if st == "fresh":
        if run.exists():
            shutil.rmtree(run)
        train.train(config_for(row.preset, args.max_epochs, args.resnet50_weights), args.data, out=runs,
                    device=args.device)
    else:
        train.train({"max_epochs": want}, resume=run, device=args.device)
    (run / ROW_FILE).unlink(missing_ok=True)  # the model changed: score it again
    return "trained"


def study_row(run: Path, honest: list[Path], device: str) -> dict[str, Any] | None:
    """The row's figures (own test, then the honest sets), cached in the run dir until the model changes."""
    if not (run / "summary.json").is_file():
        return None
    cached = run / ROW_FILE
    if cached.is_file():
        return json.loads(cached.read_text())
    r = row_for(run, run.name, honest, device, None)
    summary = json.loads((run / "summary.json").read_text())
    cfg = json.loads((run / "config.json").read_text())
    r |= {"params": summary["params"], "trainable_params": summary["trainable_params"],
          "train_seconds": summary["train_seconds"], "stopped_early": summary["stopped_early"],
          "max_epochs": cfg["max_epochs"], "preset_max_epochs": train.load_preset(run.name).max_epochs,
          "image_size": json.loads((run / "model" / "model.json").read_text())["preprocess"]["size"],
          "history": json.loads((run / "metrics.json").read_text())}
    r.pop("peak_rss_mb_so_far", None)  # per process, not per row: meaningless in a table of resumed rows
    atomic_write_text(cached, json.dumps(r, indent=1))
    return r


def in_progress(run: Path) -> dict[str, Any] | None:
    """A row still training (or interrupted): its epochs so far, from metrics.json."""
    if (run / "summary.json").is_file() or not (run / "metrics.json").is_file():
        return None
    hist = json.loads((run / "metrics.json").read_text())
    return {"history": hist, "epochs": len(hist)} if hist else None


def hardware() -> str:
    return (f"{os.cpu_count()} CPU cores ({cpu_name()}), no GPU, torch {torch.__version__}, Python "
            f"{platform.python_version()}; the cores were shared with other work, so wall times are long and vary")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(REAL / "stanford-dogs"))
    ap.add_argument("--honest", nargs="+", default=[str(REAL / "web-dogs"), str(REAL / "imagenet-val-dogs")])
    ap.add_argument("--runs", default=str(ROOT / "runs" / "study"))
    ap.add_argument("--max-epochs", type=int, default=None,
                    help="cap every row trained on photos (cnn, finetune) at N epochs; rerun with a larger N (or "
                         "without) to carry them on")
    ap.add_argument("--rows", nargs="+", default=None, help="only these presets (default: all, in ORDER)")
    ap.add_argument("--until", default=None, help="HH:MM (local time): start no new row after this")
    ap.add_argument("--resnet50-weights", default=None, help="ImageNet ResNet-50 weights file for that row")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--report-only", action="store_true", help="write the doc from the run dirs, train nothing")
    ap.add_argument("--doc", default=str(DOC))
    args = ap.parse_args()
    from seed_study_report import write_report

    runs, honest = Path(args.runs), [Path(h) for h in args.honest]
    todo = [r for p in ORDER for r in ROWS if r.preset == p and (not args.rows or p in args.rows)]
    outcome: dict[str, str] = {}
    for row in ([] if args.report_only else todo):
        want = target_epochs(runs / row.preset, row.preset, args.max_epochs)
        if args.until and time.strftime("%H:%M") >= args.until and status(runs / row.preset, want) != "done":
            print(f"{args.until} reached: {row.preset} and later rows left for the next run", file=sys.stderr)
            break
        outcome[row.preset] = run_row(row, runs, args)
        study_row(runs / row.preset, honest, args.device)
        write_report(ROWS, runs, Path(args.doc), hardware(), outcome)
    for row in ROWS:  # --report-only, or rows trained by an earlier call
        study_row(runs / row.preset, honest, args.device)
    write_report(ROWS, runs, Path(args.doc), hardware(), outcome)
    print(f"wrote {args.doc}", file=sys.stderr)


__all__ = ["CHANCE", "ITERATIONS", "ROWS", "Row", "in_progress", "status", "study_row"]

if __name__ == "__main__":
    main()
