"""The seed study's experiment on the real 120 breeds: `dogbreed train` on stanford-dogs' official split.

    python bench/train_transfer.py      # frozen Lite0 and Lite2 (features from the on-disk cache)
    python bench/train_transfer.py --presets baseline:max_epochs=3 combined:max_epochs=3 transfer_lite0 \
        transfer_lite2 finetune_lite0:max_epochs=1      # what README's table ran

Data: ../shared/data/real/stanford-dogs with its official lists: test = the 2,400 official test photos shipped (20 per
breed), val carved per breed from the 12,000 official train photos, train = the rest. Stanford photos are ImageNet
*training* photos (the backbones were pretrained on them), so the Stanford test figure flatters every pretrained
model. The honest figures are the same model on ../shared/data/real/web-dogs and imagenet-val-dogs, which no backbone
trained on. Each run goes through `dogbreed.train.train`, exactly what `dogbreed train --preset NAME` does.
`NAME:key=value,key=value` overrides a preset (e.g. fewer epochs to fit 2 CPU cores). Writes
bench/results/train_transfer.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

from dogbreed import train
from dogbreed.evaluate import format_table
from dogbreed.fileio import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT / ".." / "shared" / "data" / "real"
REFERENCE = {"model": "frozen ResNet-50 (reference to beat)", "test_top1": 0.722}


def peak_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux: the peak of this process so far (cumulative, not per run).
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_one(preset: str, data: Path, honest: list[Path], out: Path, device: str, overrides: list[str]) -> dict:
    name, _, own = preset.partition(":")
    cfg = train.load_preset(name, overrides + [kv for kv in own.split(",") if kv])
    t0 = time.time()
    run = train.train(cfg, str(data), out=out, device=device)
    return row_for(run, preset, honest, device, time.time() - t0)


def row_for(run: Path, preset: str, honest: list[Path], device: str, wall: float | None) -> dict:
    """A table row for a finished run: its own test figures, then the same model on each honest folder."""
    cfg = json.loads((run / "config.json").read_text())
    summary = json.loads((run / "summary.json").read_text())
    test = json.loads((run / "eval-test" / "report.json").read_text())
    row = {
        "preset": preset, "backbone": cfg.get("backbone"), "run_dir": str(run),
        "photos": summary["photos"], "classes": summary["classes"],
        "epochs": summary["epochs"], "best_epoch": summary["best_epoch"], "best_val_top1": summary["best_val_acc"],
        "test_top1": test["top1"], "test_top5": test["top5"], "test_macro_f1": test["macro_f1"], "test_n": test["n"],
        "train_wall_s": round(wall if wall is not None else summary.get("wall_seconds_this_call", 0), 1),
        "peak_rss_mb_so_far": round(peak_rss_mb(), 0),
    }
    for h in honest:
        rep = json.loads((train.evaluate_run(run, data=str(h), device=device) / "report.json").read_text())
        row[h.name] = {"top1": rep["top1"], "top5": rep["top5"], "macro_recall": rep["macro_recall"], "n": rep["n"],
                       "breeds": rep["classes_present"]}
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(REAL / "stanford-dogs"))
    ap.add_argument("--honest", nargs="+", default=[str(REAL / "web-dogs"), str(REAL / "imagenet-val-dogs")])
    ap.add_argument("--presets", nargs="+", default=["transfer_lite0", "transfer_lite2"],
                    help="preset names, each optionally with :key=value,key=value overrides")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="key=value for every preset")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--collect", nargs="+", default=None, help="finished run dirs to tabulate instead of training")
    ap.add_argument("--runs", default=None, help="keep run directories here (default: a temp folder)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "train_transfer.json"))
    args = ap.parse_args()
    # --collect: rows from finished run dirs (e.g. runs trained one at a time), without training again.
    rows = [row_for(Path(r), Path(r).name.rsplit("-", 2)[0], [Path(h) for h in args.honest], args.device, None)
            for r in args.collect or []]
    presets = [] if args.collect else args.presets
    runs = Path(args.runs) if args.runs else Path(tempfile.mkdtemp(prefix="dogbreed-bench-"))
    for p in presets:
        print(f"== {p}", file=sys.stderr)
        rows.append(run_one(p, Path(args.data), [Path(h) for h in args.honest], runs, args.device, args.overrides))
    result = {
        "what": "dogbreed train on stanford-dogs, official lists (test = official test photos, val carved from train)",
        "caveat": "stanford-dogs photos are ImageNet-train photos the backbones were pretrained on, so its test "
                  "accuracy is flattering; web-dogs and imagenet-val-dogs are photos no backbone trained on",
        "reference": REFERENCE | {"note": "reported elsewhere on different data; not measured here"},
        "machine": {"cpu_count": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
                    "device": args.device, "threads": torch.get_num_threads()},
        "runs": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(result, indent=2))
    honest_names = [Path(h).name for h in args.honest]
    table = [{"preset": r["preset"], "train/val/test photos": "/".join(str(r["photos"][k])
                                                                      for k in ("train", "val", "test")),
              "test top1": r["test_top1"], "test top5": r["test_top5"], "best val top1": r["best_val_top1"],
              **{f"{h} top1 ({r[h]['n']})": r[h]["top1"] for h in honest_names},
              **{f"{h} breed-balanced top1": r[h]["macro_recall"] for h in honest_names},
              "epochs": r["epochs"], "train wall s": r["train_wall_s"], "peak MB": r["peak_rss_mb_so_far"]}
             for r in rows]
    print(format_table(table, list(table[0])))
    print(f"\nreference to beat: {REFERENCE['model']} {REFERENCE['test_top1']:.1%} test top-1 (other data)")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
