"""Transfer-learning benchmark: frozen EfficientNet-Lite0/Lite2 + trained head on the shared Stanford subset.

    python bench/train_transfer.py            # frozen Lite0 and Lite2 (features from the on-disk cache)
    python bench/train_transfer.py --finetune # also fine-tune Lite0 end to end (slow: hours on 2 CPU cores)

Data: ../shared/data/real/stanford-subset (22 breeds, 2,410 photos), stratified 80/10/10 split, seed 0. Those
photos come from ImageNet *train*, which the backbones were pretrained on, so test accuracy there is flattering.
The honest figure is the same head on ../shared/data/real/imagenet-val-dogs (275 ImageNet *validation* photos,
11 of the 22 breeds), which no model here has seen. Each run goes through `dogbreed.train.train`, i.e. exactly
what `dogbreed train --preset transfer_lite0` does. Writes bench/results/train_transfer.json and prints a table.
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

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT / ".." / "shared" / "data" / "real"
REFERENCE = {"model": "frozen ResNet-50 (reference to beat)", "test_top1": 0.722}


def peak_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux: the peak of this process so far (cumulative, not per run).
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_one(preset: str, data: Path, honest: Path, out: Path, device: str, overrides: list[str]) -> dict:
    cfg = train.load_preset(preset, overrides)
    t0 = time.time()
    run = train.train(cfg, str(data), out=out, device=device)
    wall = time.time() - t0
    summary = json.loads((run / "summary.json").read_text())
    test = json.loads((run / "eval-test" / "report.json").read_text())
    t1 = time.time()
    honest_dir = train.evaluate_run(run, data=str(honest), device=device)
    honest_rep = json.loads((honest_dir / "report.json").read_text())
    return {
        "preset": preset, "backbone": getattr(cfg, "backbone", None), "run_dir": str(run),
        "photos": summary["photos"], "classes": summary["classes"],
        "epochs": summary["epochs"], "best_epoch": summary["best_epoch"], "best_val_top1": summary["best_val_acc"],
        "test_top1": test["top1"], "test_top5": test["top5"], "test_macro_f1": test["macro_f1"], "test_n": test["n"],
        "honest_top1": honest_rep["top1"], "honest_top5": honest_rep["top5"], "honest_n": honest_rep["n"],
        "honest_skipped_unknown_breed": honest_rep["info"].get("photos_skipped_unknown_breed"),
        "train_wall_s": round(wall, 1), "honest_eval_wall_s": round(time.time() - t1, 1),
        "peak_rss_mb_so_far": round(peak_rss_mb(), 0),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(REAL / "stanford-subset"))
    ap.add_argument("--honest", default=str(REAL / "imagenet-val-dogs"))
    ap.add_argument("--presets", nargs="+", default=["transfer_lite0", "transfer_lite2"])
    ap.add_argument("--finetune", action="store_true", help="also run finetune_lite0 (slow on CPU)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="key=value for every preset")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--runs", default=None, help="keep run directories here (default: a temp folder)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "train_transfer.json"))
    args = ap.parse_args()
    presets = args.presets + (["finetune_lite0"] if args.finetune else [])
    runs = Path(args.runs) if args.runs else Path(tempfile.mkdtemp(prefix="dogbreed-bench-"))
    rows = []
    for p in presets:
        print(f"== {p}", file=sys.stderr)
        rows.append(run_one(p, Path(args.data), Path(args.honest), runs, args.device, args.overrides))
    result = {
        "what": "transfer learning on the shared Stanford subset; test = stratified 10% of it",
        "caveat": "stanford-subset photos are ImageNet-train photos the backbones were pretrained on, so its test "
                  "accuracy is flattering; honest_* is imagenet-val-dogs (ImageNet validation, unseen)",
        "reference": REFERENCE | {"note": "reported elsewhere on different data; not measured here"},
        "machine": {"cpu_count": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
                    "device": args.device, "threads": torch.get_num_threads()},
        "runs": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    os.replace(tmp, out)
    table = [{"preset": r["preset"], "train/val/test photos": "/".join(str(r["photos"][k])
                                                                      for k in ("train", "val", "test")),
              "test top1": r["test_top1"], "test top5": r["test_top5"],
              "honest top1": r["honest_top1"], "honest top5": r["honest_top5"], "honest photos": r["honest_n"],
              "epochs": r["epochs"], "train wall s": r["train_wall_s"], "peak MB": r["peak_rss_mb_so_far"]}
             for r in rows]
    print(format_table(table, list(table[0])))
    print(f"\nreference to beat: {REFERENCE['model']} {REFERENCE['test_top1']:.1%} test top-1 (other data)")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
