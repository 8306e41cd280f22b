"""CPU inference speed: single-photo latency, batch throughput, and how close both come to the machine's limit.

    python bench/speed.py            # full run, ~2-3 min on a quiet 2-core machine; bench/results/speed.json
    python bench/speed.py --quick    # smoke run for CI: Lite0 only, tiny batches, seconds of timing

Per backbone (EfficientNet-Lite0/1/2) and runtime (eager PyTorch as `Predictor` runs it: BatchNorm folded,
channels-last, inference mode; ONNX Runtime with every graph optimisation):
  1. single-photo latency, end to end: one 500x375 JPEG as bytes -> `Predictor.predict([jpeg])` (decode, preprocess,
     forward, decision), warm, p50/p95; plus where the time goes (decode / resize / to_tensor / forward / rest);
  2. batch-32 throughput at 224 px and at the backbone's own size, forward only and with the data pipeline
     (`features.extract` over JPEG files: DataLoader worker decoding + preprocessing, no cache);
  3. the achievable limit: a large fp32 matmul's GFLOP/s with the same threads (torch and numpy), the backbone's FLOPs
     per image (2 x MACs of every Conv2d/Linear, counted with forward hooks), so every throughput is also a % of it;
  4. peak RSS per measurement (Linux: VmHWM, reset before each one; elsewhere the process maximum).
Timings on a shared machine are noisy: the JSON records the load average before and after.
"""

# ruff: noqa: E402
from __future__ import annotations

import os

# Must be set before torch loads libgomp. With the default active wait, eager PyTorch's OpenMP threads spin at every
# op boundary; when the cores are shared with other processes a descheduled thread turns a 20-30 ms Lite0 forward
# into 1.3 s (measured here, sporadically). Passive waiting costs little on a quiet machine. Set
# OMP_WAIT_POLICY=ACTIVE in the environment to measure the other way; the JSON records which was used.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import glob
import io
import json
import platform
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dogbreed.backbones import get_spec
from dogbreed.export import onnx_session_for
from dogbreed.models import default_classifier, save_model_dir
from dogbreed.predict import Predictor
from dogbreed.runtime import cpu_name, optimize_for_cpu, physical_cores
from dogbreed.transforms import load_image, preprocess_image, to_tensor

ROOT = Path(__file__).resolve().parents[1]
REAL_PHOTOS = ROOT.parent / "shared" / "data" / "real" / "imagenet-val-dogs"
BACKBONES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
RUNTIMES = ("torch", "onnx")


# ---------------------------------------------------------------------------------------------------------------
# Measuring helpers


def reset_peak_rss() -> None:
    """Linux >= 4.0: writing 5 to clear_refs resets VmHWM, so each measurement gets its own peak."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 / (1024 if sys.platform == "darwin" else 1)  # macOS reports bytes


def timings(fn: Callable[[], Any], n: int, warmup: int = 1) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def matmul_gflops(n: int, reps: int) -> dict[str, float]:
    """Best-of-reps fp32 GEMM rate: the practical compute ceiling of this CPU with these threads."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    t_torch = min(timings(lambda: a @ b, reps))
    an, bn = a.numpy(), b.numpy()
    t_np = min(timings(lambda: an @ bn, reps))
    flops = 2.0 * n**3
    return {"n": n, "torch_gflops": flops / t_torch / 1e9, "numpy_gflops": flops / t_np / 1e9,
            "limit_gflops": flops / min(t_torch, t_np) / 1e9}


def count_flops(model: nn.Module, size: int) -> int:
    """FLOPs per image = 2 x MACs of every Conv2d (grouped/depthwise aware) and Linear, from forward hooks."""
    macs = [0]

    def conv_hook(m: nn.Conv2d, _inp: Any, out: torch.Tensor) -> None:
        kh, kw = m.kernel_size
        macs[0] += out.numel() * (m.in_channels // m.groups) * kh * kw

    def linear_hook(m: nn.Linear, _inp: Any, out: torch.Tensor) -> None:
        macs[0] += out.numel() * m.in_features

    hooks = [m.register_forward_hook(conv_hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    hooks += [m.register_forward_hook(linear_hook) for m in model.modules() if isinstance(m, nn.Linear)]
    try:
        with torch.inference_mode():
            model(torch.zeros(1, 3, size, size))
    finally:
        for h in hooks:
            h.remove()
    return 2 * macs[0]


def sample_jpeg(w: int = 500, h: int = 375) -> bytes:
    """A real photo (scikit-image's astronaut, or a shared dog photo) as a 500x375 quality-90 JPEG."""
    from PIL import Image

    try:
        from skimage import data

        img = Image.fromarray(data.astronaut())
    except ImportError:
        files = sorted(glob.glob(str(REAL_PHOTOS / "*" / "*.jpg")))
        img = Image.open(files[0]).convert("RGB") if files else Image.new("RGB", (w, h), (120, 90, 60))
    buf = io.BytesIO()
    img.resize((w, h)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def pipeline_files(n: int, workdir: Path) -> list[str]:
    """Real dog photos when the shared set is there (ImageNet val: ~500x375 JPEGs), else generated JPEGs."""
    files = sorted(glob.glob(str(REAL_PHOTOS / "*" / "*.jpg")))
    if len(files) >= n:
        return files[:n]
    jpeg = sample_jpeg()
    out = []
    for i in range(n):
        p = workdir / f"photo{i}.jpg"
        p.write_bytes(jpeg)
        out.append(str(p))
    return out


# ---------------------------------------------------------------------------------------------------------------
# The measurements


def runner_for(clf: nn.Module, runtime: str, size: int) -> Callable[[torch.Tensor], Any]:
    if runtime == "onnx":
        return onnx_session_for(clf, size)
    return clf  # already optimize_for_cpu'd


def forward_throughput(runs: dict[str, Callable[[torch.Tensor], Any]], size: int, batch: int,
                       iters: int) -> dict[str, float]:
    """Median images/s of one random batch per runtime, runtimes alternating batch by batch."""
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    xs = {rt: x.contiguous(memory_format=torch.channels_last) if rt == "torch" else x for rt in runs}
    t: dict[str, list[float]] = {rt: [] for rt in runs}
    with torch.inference_mode():
        for rt, run in runs.items():
            run(xs[rt])  # warm-up: oneDNN primitive creation / ORT first-run allocations
        for _ in range(iters):
            for rt, run in runs.items():
                t[rt] += timings(lambda r=run, v=xs[rt]: r(v), 1, warmup=0)
    return {rt: batch / statistics.median(v) for rt, v in t.items()}


def pipeline_throughput(run: Callable[[torch.Tensor], Any], cfg: Any, files: list[str], batch: int,
                        workers: int, channels_last: bool) -> float:
    """Steady-state images/s of JPEG files -> DataLoader workers (decode with JPEG draft, resize, normalise) ->
    forward, as `features.extract` runs it; the first batch (worker start-up) is not timed."""
    from torch.utils.data import DataLoader

    from dogbreed.features import _Images

    dl = DataLoader(_Images(files, cfg, None), batch_size=batch, num_workers=workers, shuffle=False,
                    prefetch_factor=4 if workers else None)
    it = iter(dl)
    n = 0
    with torch.inference_mode():
        x, _, _ = next(it)
        run(x.contiguous(memory_format=torch.channels_last) if channels_last else x)
        t = time.perf_counter()
        for x, _, _ in it:
            run(x.contiguous(memory_format=torch.channels_last) if channels_last else x)
            n += len(x)
    return n / (time.perf_counter() - t) if n else 0.0


def stage_profile(pred: Predictor, jpeg: bytes, n: int) -> dict[str, float]:
    """Median ms of each step of the single-photo path, timed separately."""
    m = pred.members[0]
    cfg = m.preprocess
    draft = int(cfg.size / cfg.crop_pct) + 1
    img = load_image(jpeg, draft_size=draft)
    small = preprocess_image(img, cfg)
    x = to_tensor(small, cfg.mean, cfg.std)[None]
    med = {}
    med["decode"] = statistics.median(timings(lambda: load_image(jpeg, draft_size=draft), n))
    med["resize"] = statistics.median(timings(lambda: preprocess_image(img, cfg), n))
    med["to_tensor"] = statistics.median(timings(lambda: to_tensor(small, cfg.mean, cfg.std), n))
    with torch.inference_mode():
        med["forward"] = statistics.median(timings(lambda: m.runner(x), n))
    total = statistics.median(timings(lambda: pred.predict([jpeg]), n))
    med["rest"] = max(0.0, total - sum(med.values()))  # stacking, softmax, dog score, top-k, Prediction objects
    return {k: round(v * 1e3, 3) for k, v in med.items()}


def int8_check(threads: int, batch: int = 32) -> dict[str, Any]:
    """Opt-in experiment: static int8 (QDQ, per-channel) Lite0 vs fp32 ONNX. Calibrated on 64 stanford-dogs
    photos, judged by top-1 agreement with fp32 on the 275 imagenet-val-dogs photos, speed interleaved."""
    import contextlib
    import random

    from int8 import quantize_int8  # bench/int8.py, beside this script

    from dogbreed.export import OnnxModel
    from dogbreed.transforms import preprocess

    real = REAL_PHOTOS.parent
    evals = sorted(glob.glob(str(REAL_PHOTOS / "*" / "*.jpg")))
    calib = sorted(glob.glob(str(real / "stanford-dogs" / "Images" / "**" / "*.jpg"), recursive=True))
    if not evals or not calib:
        return {"skipped": f"needs {REAL_PHOTOS} and stanford-dogs"}
    random.Random(0).shuffle(calib)
    clf = default_classifier("efficientnet_lite0")
    cfg = clf.preprocess_cfg
    fp32 = onnx_session_for(clf, threads=threads)
    x_cal = torch.stack([preprocess(f, cfg) for f in calib[:64]]).numpy()
    x_eval = torch.stack([preprocess(f, cfg) for f in evals]).numpy()
    import logging

    logging.disable(logging.WARNING)  # the quantizer's "consider pre-processing" advice, printed per call
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        q = OnnxModel(quantize_int8(fp32.path, Path(tmp) / "int8.onnx",
                                    [x_cal[i:i + 16] for i in range(0, len(x_cal), 16)]), threads=threads)
    logging.disable(logging.NOTSET)
    logits = {}
    for label, m in (("fp32", fp32), ("int8", q)):
        logits[label] = np.concatenate([m.run_numpy(x_eval[i:i + batch])[0] for i in range(0, len(x_eval), batch)])
    agree = float((logits["fp32"].argmax(1) == logits["int8"].argmax(1)).mean())
    wnids = [b.wnid for b in clf.classes]
    truth = np.array([wnids.index(Path(f).parent.name.split("-")[0]) for f in evals])
    top1 = {k: round(float((v.argmax(1) == truth).mean()), 4) for k, v in logits.items()}
    xb = x_eval[:batch]
    t: dict[str, list[float]] = {"fp32": [], "int8": []}
    for _ in range(3):
        for label, m in (("fp32", fp32), ("int8", q)):
            t[label] += timings(lambda m=m: m.run_numpy(xb), 1, warmup=1)
    return {"photos": len(evals), "top1_agreement_with_fp32": round(agree, 4), "top1_accuracy": top1,
            "images_per_s": {k: round(batch / statistics.median(v), 1) for k, v in t.items()}}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="CI smoke run: Lite0, tiny batches, a few iterations")
    ap.add_argument("--backbones", nargs="*", default=None)
    ap.add_argument("--runtimes", nargs="*", default=list(RUNTIMES), choices=list(RUNTIMES))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "speed.json"))
    ap.add_argument("--threads", type=int, default=None, help="default: physical cores")
    ap.add_argument("--workers", type=int, default=1, help="DataLoader decode workers in the pipeline figure")
    ap.add_argument("--int8", action="store_true", help="also try static int8 ONNX Lite0 (accuracy + speed)")
    args = ap.parse_args(argv)

    q = args.quick
    backbones = args.backbones or (["efficientnet_lite0"] if q else list(BACKBONES))
    threads = args.threads or physical_cores()
    torch.set_num_threads(threads)
    batch = 2 if q else 32
    fwd_iters = 1 if q else 3
    lat_n = 3 if q else 20
    n_pipeline = 4 if q else 128  # 4 batches of 32, the first untimed
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    started = time.perf_counter()

    import onnxruntime

    machine = {
        "platform": platform.platform(), "processor": cpu_name(), "logical_cpus": os.cpu_count(),
        "physical_cores": physical_cores(), "threads": threads, "python": platform.python_version(),
        "torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "numpy": np.__version__,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
    }
    print(f"machine: {machine['processor']}, {machine['physical_cores']} cores, {threads} threads; "
          f"load average {load_before}", flush=True)
    peak = matmul_gflops(256 if q else 2048, 2 if q else 5)
    limit = peak["limit_gflops"]  # measured again at the end; the higher (less disturbed) figure is the limit
    print(f"fp32 matmul n={peak['n']}: torch {peak['torch_gflops']:.1f} GFLOP/s, numpy {peak['numpy_gflops']:.1f} "
          f"GFLOP/s -> limit {limit:.1f}", flush=True)

    jpeg = sample_jpeg()
    latency: list[dict[str, Any]] = []
    throughput: list[dict[str, Any]] = []
    flops: dict[str, dict[int, int]] = {}
    with tempfile.TemporaryDirectory(prefix="dogbreed-speed-") as tmp:
        files = pipeline_files(n_pipeline, Path(tmp))
        for name in backbones:
            own = get_spec(name).input_size
            sizes = [own] if q else sorted({224, own})
            clf = default_classifier(name).eval()
            flops[name] = {s: count_flops(clf, s) for s in sizes}
            model_dir = save_model_dir(clf, Path(tmp) / name)
            # The runtimes are timed alternately (A B A B ...) so that load from other processes on a shared
            # machine hits both alike and the comparison stays fair even when the absolute figures move.
            # 1. single photo, end to end, through the same Predictor the CLI and API use
            preds = {rt: Predictor(model=str(model_dir), runtime=rt) for rt in args.runtimes}
            lat: dict[str, list[float]] = {rt: [] for rt in args.runtimes}
            for pred in preds.values():
                timings(lambda p=pred: p.predict([jpeg]), 0, warmup=3)
            for _ in range(lat_n):
                for rt, pred in preds.items():
                    lat[rt] += timings(lambda p=pred: p.predict([jpeg]), 1, warmup=0)
            for rt, pred in preds.items():
                reset_peak_rss()
                row = {"backbone": name, "runtime": rt, "size": own, "n": lat_n,
                       "p50_ms": round(pct(lat[rt], 50) * 1e3, 2), "p95_ms": round(pct(lat[rt], 95) * 1e3, 2),
                       "stages_ms": stage_profile(pred, jpeg, max(3, lat_n // 2)), "peak_rss_mb": round(peak_rss_mb())}
                latency.append(row)
                print(f"latency {name} {rt}: p50 {row['p50_ms']} ms, p95 {row['p95_ms']} ms {row['stages_ms']}",
                      flush=True)
            del preds
            # 2. batch throughput, forward only (alternating) and with the data pipeline (one runtime at a time)
            models = {rt: optimize_for_cpu(default_classifier(name)) if rt == "torch" else clf for rt in args.runtimes}
            for s in sizes:
                runs = {rt: runner_for(models[rt], rt, s) for rt in args.runtimes}
                ips = forward_throughput(runs, s, batch, fwd_iters)
                for rt in args.runtimes:
                    throughput.append(_tp_row(name, rt, s, batch, "forward", ips[rt], flops[name][s], limit))
                cfg = get_spec(name).preprocess(size=s)
                for rt in args.runtimes:
                    reset_peak_rss()
                    pipe = pipeline_throughput(runs[rt], cfg, files, batch, args.workers, channels_last=rt == "torch")
                    throughput.append(_tp_row(name, rt, s, batch, "pipeline", pipe, flops[name][s], limit))
                for r in throughput[-2 * len(args.runtimes):]:
                    print(f"throughput {name} {r['runtime']} {s}px {r['mode']}: {r['images_per_s']:.1f} img/s "
                          f"({r['pct_of_limit']:.0f}% of limit)", flush=True)
    end_peak = matmul_gflops(256 if q else 2048, 2 if q else 5)
    if end_peak["limit_gflops"] > limit:
        peak, limit = end_peak, end_peak["limit_gflops"]
        for r in throughput:
            r["pct_of_limit"] = round(100 * r["gflops"] / limit, 1)
    peak["measured_at"] = "end" if peak is end_peak else "start"
    int8 = int8_check(threads) if args.int8 else None
    if int8:
        print(f"int8 (static QDQ) Lite0: {int8}", flush=True)
    summary = _summary(latency, throughput)
    result = {
        "quick": q, "machine": machine, "load_average_before": load_before,
        "load_average_after": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "seconds": round(time.perf_counter() - started, 1), "peak": peak,
        "flops_per_image": {k: {str(s): v for s, v in d.items()} for k, d in flops.items()},
        "config": {"batch": batch, "forward_iters": fwd_iters, "latency_n": lat_n, "pipeline_images": n_pipeline,
                   "pipeline_workers": args.workers, "jpeg": "500x375 q90"},
        "latency": latency, "throughput": throughput, "summary": summary,
    }
    if int8 is not None:
        result["int8_experiment"] = int8
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print_table(result)
    print(f"wrote {out} ({result['seconds']} s)")
    return result


def _tp_row(name: str, rt: str, size: int, batch: int, mode: str, ips: float, flops: int, limit: float) -> dict:
    gflops = ips * flops / 1e9
    return {"backbone": name, "runtime": rt, "size": size, "batch": batch, "mode": mode,
            "images_per_s": round(ips, 2), "gflops": round(gflops, 2), "pct_of_limit": round(100 * gflops / limit, 1),
            "peak_rss_mb": round(peak_rss_mb())}


def _summary(latency: list[dict], throughput: list[dict]) -> dict[str, Any]:
    """Faster runtime per backbone, by single-photo p50 and by forward throughput at the backbone's own size."""
    out: dict[str, Any] = {}
    for name in dict.fromkeys(r["backbone"] for r in latency):
        lat = {r["runtime"]: r["p50_ms"] for r in latency if r["backbone"] == name}
        own = max((r["size"] for r in throughput if r["backbone"] == name), default=0)
        fwd = {r["runtime"]: r["images_per_s"] for r in throughput
               if r["backbone"] == name and r["mode"] == "forward" and r["size"] == own}
        out[name] = {"faster_latency": min(lat, key=lat.get) if lat else None,
                     "faster_throughput": max(fwd, key=fwd.get) if fwd else None,
                     "latency_p50_ms": lat, "forward_images_per_s": fwd}
    return out


def print_table(result: dict[str, Any]) -> None:
    lat = {(r["backbone"], r["runtime"]): r for r in result["latency"]}
    print(f"\n{result['machine']['processor']} | {result['machine']['threads']} threads | limit "
          f"{result['peak']['limit_gflops']:.1f} GFLOP/s (fp32 matmul) | load {result['load_average_before']}")
    head = (f"{'backbone':<19}{'runtime':<8}{'size':>5}{'p50 ms':>8}{'p95 ms':>8}{'fwd img/s':>11}{'% lim':>7}"
            f"{'pipe img/s':>11}{'% lim':>7}{'RSS MB':>8}")
    print(head)
    print("-" * len(head))
    rows: dict[tuple, dict] = {}
    for r in result["throughput"]:
        rows.setdefault((r["backbone"], r["runtime"], r["size"]), {})[r["mode"]] = r
    for (name, rt, size), modes in rows.items():
        lr = lat.get((name, rt)) if size == get_spec(name).input_size else None
        f, p = modes.get("forward", {}), modes.get("pipeline", {})
        p50 = f"{lr['p50_ms']:.1f}" if lr else ""
        p95 = f"{lr['p95_ms']:.1f}" if lr else ""
        rss = max(f.get("peak_rss_mb", 0), p.get("peak_rss_mb", 0), lr["peak_rss_mb"] if lr else 0)
        print(f"{name:<19}{rt:<8}{size:>5}{p50:>8}{p95:>8}{f.get('images_per_s', 0):>11.1f}"
              f"{f.get('pct_of_limit', 0):>7.1f}{p.get('images_per_s', 0):>11.1f}{p.get('pct_of_limit', 0):>7.1f}"
              f"{rss:>8}")
    for name, s in result["summary"].items():
        print(f"{name}: faster single photo = {s['faster_latency']}, faster batch = {s['faster_throughput']}")


if __name__ == "__main__":
    main()
