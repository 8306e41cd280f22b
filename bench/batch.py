"""Batch prediction at scale: peak memory on a big manifest, resume after an interruption, end-to-end speed.

    python bench/batch.py                       # 50,000-row manifest, interrupted once, resumed; ~6-8 min quiet
    python bench/batch.py --rows 2000           # a quick look
    python bench/batch.py --speed-only          # just `dogbreed predict FOLDER --format json` timings

1. Memory: a CSV manifest of ``--rows`` rows that repeats the real photos in ../shared/data/real (not-dogs/other,
   not-dogs/cat, imagenet-val-dogs; no photo is copied) goes through
   ``dogbreed predict MANIFEST --out results.parquet`` in a subprocess. /proc is sampled every 0.25 s for the
   resident memory of the whole process tree (the main process and its decode workers), so the JSON holds the
   peak and RSS against rows done: a flat line is what bounded memory looks like.
2. Resume: the first run gets SIGINT after ``--interrupt-after`` seconds; the rerun of the same command must skip
   exactly the rows already on disk and finish the rest (rows checked: count, order, no duplicates).
3. Speed: ``dogbreed predict FOLDER --format json`` over not-dogs/other (940 everyday things), then with
   not-dogs/cat (1,429), wall time with process start and exit included (what a user waits) and the run's CPU
   time: the default, ``--precision fp32`` and fp32 with one DataLoader worker process (``--workers 1``).
The load average before and after each run is recorded: the machine is shared, timings are noisy.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT / ".." / "shared" / "data" / "real"
SOURCES = ("not-dogs/other", "not-dogs/cat", "imagenet-val-dogs")
SPEED_FOLDERS = ("not-dogs/other", "not-dogs/cat")
VARIANTS = {"default": [], "fp32": ["--precision", "fp32"],
            "fp32, one batch at a time": ["--precision", "fp32", "--lanes", "1"],
            "fp32, 1 worker process": ["--precision", "fp32", "--workers", "1"]}


def dogbreed_cmd() -> list[str]:
    return [sys.executable, "-m", "dogbreed.cli"]


def photos() -> list[str]:
    sys.path.insert(0, str(ROOT / "src"))
    from dogbreed.predict import expand_inputs

    return expand_inputs([(REAL / s).resolve() for s in SOURCES])


def write_manifest(path: Path, rows: int) -> int:
    ph = photos()
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "copy"])
        for i in range(rows):
            w.writerow([ph[i % len(ph)], i // len(ph)])
    return len(ph)


def tree_memory_kb(pid: int) -> tuple[int, int]:
    """(main process RSS, PSS summed over the process tree) in KiB, from /proc. PSS splits pages shared between the
    main process and its forked decode workers, so the sum is the tree's real footprint; summed RSS would count the
    shared torch/ONNX pages once per process."""
    main_rss, pss, todo = 0, 0, [pid]
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    pss += int(line.split()[1])
                if p == pid and line.startswith("Rss:"):
                    main_rss = int(line.split()[1])
            for t in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (t / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError, PermissionError, ValueError):
            continue
    return main_rss, pss


def rows_done(out: Path) -> int:
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(f).metadata.num_rows for f in sorted(out.glob("part-*.parquet")))


def run_sampled(cmd: list[str], out: Path, interrupt_after: float | None, log: Path,
                on_sample: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Run ``cmd``, sampling memory and rows on disk; SIGINT after ``interrupt_after`` seconds if given.

    stderr (the progress bar) goes to ``log``, never to a pipe nobody reads while the run lasts: a full pipe
    would block the run."""
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    samples: list[tuple[float, int, int, int]] = []  # (seconds, main RSS KiB, tree PSS KiB, rows on disk)
    last_rows_check = last_report = 0.0
    n_rows = 0
    with open(log, "w") as err:
        # SIGINT back to its default first: a shell starts background jobs with it ignored, and a Python started
        # that way never turns it into KeyboardInterrupt, so the interruption would not happen.
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        while proc.poll() is None:
            now = time.perf_counter() - t0
            if now - last_rows_check > 2.0 and out.exists():
                n_rows, last_rows_check = rows_done(out), now
            samples.append((round(now, 2), *tree_memory_kb(proc.pid), n_rows))
            if interrupt_after is not None and now > interrupt_after:
                proc.send_signal(signal.SIGINT)
                interrupt_after = None
            if on_sample is not None and now - last_report > 30:
                on_sample(_summary(cmd, proc.returncode, now, samples, load0, log))
                last_report = now
            time.sleep(0.25)
    return _summary(cmd, proc.returncode, time.perf_counter() - t0, samples, load0, log)


def _summary(cmd: list[str], rc: int | None, wall: float, samples: list, load0: tuple, log: Path) -> dict[str, Any]:
    lines = log.read_text(errors="replace").replace("\r", "\n").splitlines() if log.exists() else []
    return {"cmd": cmd[3:], "returncode": rc, "wall_s": round(wall, 2),
            "peak_main_rss_mb": round(max((s[1] for s in samples), default=0) / 1024, 1),
            "peak_tree_pss_mb": round(max((s[2] for s in samples), default=0) / 1024, 1),
            "samples": samples[:: max(1, len(samples) // 200)], "load_before": load0, "load_after": os.getloadavg(),
            "stderr_tail": [ln for ln in lines if ln.strip()][-1:]}


def bench_memory(rows: int, interrupt_after: float, time_limit: float | None, workdir: Path,
                 save: Callable[[dict[str, Any]], None], extra: list[str]) -> dict[str, Any]:
    """First run interrupted, then the same command resumed (stopped at ``time_limit`` seconds if given)."""
    import pyarrow.parquet as pq

    manifest, out = workdir / "manifest.csv", workdir / "results.parquet"
    n_photos = write_manifest(manifest, rows)
    cmd = dogbreed_cmd() + ["predict", str(manifest), "--out", str(out), *extra]
    res: dict[str, Any] = {"rows": rows, "distinct_photos": n_photos, "sources": list(SOURCES), "flags": extra}
    res["first_run"] = run_sampled(cmd, out, interrupt_after, workdir / "first.log")
    res["rows_after_interrupt"] = rows_done(out)

    def partial(run: dict[str, Any]) -> None:
        save({**res, "resumed_run": run, "finished": False})

    res["resumed_run"] = run_sampled(cmd, out, time_limit, workdir / "resumed.log", partial)
    table = pq.read_table(out, columns=["path", "error"])
    paths = table.column("path").to_pylist()
    with open(manifest, newline="") as f:
        want = [r["path"] for r in itertools.islice(csv.DictReader(f), len(paths))]
    res.update({"resumed_summary": res["resumed_run"]["stderr_tail"], "rows_in_output": len(paths),
                "finished": len(paths) == rows,
                # the rows written are the first len(paths) manifest rows, in order, each once
                "output_is_manifest_prefix": paths == want,
                "error_rows": sum(e is not None for e in table.column("error").to_pylist())})
    return res


def bench_speed(repeats: int, variants: list[str]) -> dict[str, Any]:
    """Wall time of `dogbreed predict FOLDER... --format json` (process start and exit included) over everyday things
    alone (the issue's target set is 1,197 such photos) and with the cats: the default (bf16 on OpenVINO where the
    CPU has native bf16, a decode thread), fp32 on ONNX Runtime (in lanes, one batch per core), fp32 one batch at a
    time on both cores (``--lanes 1``: a decode thread ahead of the network), and fp32 with one DataLoader worker
    process."""
    sys.path.insert(0, str(ROOT / "src"))
    from dogbreed.predict import expand_inputs

    out: dict[str, Any] = {}
    for sets in (SPEED_FOLDERS[:1], SPEED_FOLDERS):
        folders = [str((REAL / f).resolve()) for f in sets]
        n = len(expand_inputs(folders))
        runs = []
        for _ in range(repeats):
            for name in variants:
                extra = VARIANTS[name]
                cmd = dogbreed_cmd() + ["predict", *folders, "--format", "json", *extra]
                load0, cpu0 = os.getloadavg(), _children_cpu()
                t0 = time.perf_counter()
                subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
                wall = time.perf_counter() - t0
                runs.append({"variant": name, "wall_s": round(wall, 2), "cpu_s": round(_children_cpu() - cpu0, 2),
                             "images_per_s": round(n / wall, 1), "load_before": load0,
                             "load_after": os.getloadavg()})
                print(" + ".join(sets), n, runs[-1], flush=True)
        out[" + ".join(sets)] = {"photos": n, "runs": runs}
    return out


def _children_cpu() -> float:
    """User + system CPU seconds of all finished children so far."""
    t = os.times()
    return t.children_user + t.children_system


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=50_000)
    ap.add_argument("--interrupt-after", type=float, default=60.0, help="seconds before the first run's SIGINT")
    ap.add_argument("--time-limit", type=float, default=None,
                    help="stop the resumed run (SIGINT) after this many seconds; the JSON says how far it got")
    ap.add_argument("--speed-only", action="store_true")
    ap.add_argument("--memory-only", action="store_true")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--memory-flags", default="", help="more `dogbreed predict` flags for the memory runs, one "
                    "string (e.g. --memory-flags='--lanes 1')")
    ap.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS),
                    help="which speed runs, alternating in this order each repeat")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "batch.json"))
    args = ap.parse_args()
    # Parts run separately (--speed-only / --memory-only) update their own key of one JSON file.
    result: dict[str, Any] = json.loads(Path(args.out).read_text()) if Path(args.out).exists() else {}
    result.update({"cpu_count": os.cpu_count(), "python": sys.version.split()[0]})
    if not args.memory_only:
        result["speed"] = bench_speed(args.repeats, args.variants)
    if not args.speed_only:
        def save(memory: dict[str, Any]) -> None:  # partial figures survive a run stopped from outside
            Path(args.out).write_text(json.dumps({**result, "memory": memory}, indent=1) + "\n")

        with tempfile.TemporaryDirectory() as tmp:
            result["memory"] = bench_memory(args.rows, args.interrupt_after, args.time_limit, Path(tmp), save,
                                            shlex.split(args.memory_flags))
        m = result["memory"]
        print(f"{m['rows']}-row manifest ({m['distinct_photos']} distinct photos): peak main RSS / tree PSS "
              f"{m['first_run']['peak_main_rss_mb']} / {m['first_run']['peak_tree_pss_mb']} MB, resumed run "
              f"{m['resumed_run']['peak_main_rss_mb']} / {m['resumed_run']['peak_tree_pss_mb']} MB; "
              f"{m['rows_after_interrupt']} rows before the interrupt, resumed: {m['resumed_summary']}; "
              f"{m['rows_in_output']} rows out, a prefix of the manifest in order: {m['output_is_manifest_prefix']}")
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
