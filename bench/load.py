"""Load test: N clients for T seconds against a real `dogbreed serve` on loopback.

    python bench/load.py                      # 32 clients, 60 s, photos from ../shared/data/real/imagenet-val-dogs
    python bench/load.py --clients 8 --seconds 20 --photos my_photos/

Starts its own server (default flags unless --serve-args) on a free 127.0.0.1 port, or uses --url (loopback only).
Each client sends one photo per `POST /v1/predict` on a keep-alive connection, as fast as answers come back.
Prints throughput, latency p50/p95/p99, errors by kind, the server's RSS before, peak and after, and the machine's
load average (other work on the machine slows the figures down); writes JSON to bench/results/load.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PHOTOS = ROOT / ".." / "shared" / "data" / "real" / "imagenet-val-dogs"
MAX_SECONDS, MAX_CLIENTS = 900, 256  # bounds: this is a benchmark, not a soak test
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def rss_mb(pid: int, key: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def load_photos(folder: Path, n: int, seed: int) -> list[tuple[str, bytes]]:
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    if not files:
        raise SystemExit(f"no photos under {folder}")
    random.Random(seed).shuffle(files)
    return [(p.name, p.read_bytes()) for p in files[:n]]


def start_server(serve_args: list[str], log: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "dogbreed.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
           "--feedback-db", str(log.parent / "fb.sqlite3"), *serve_args]
    proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited:\n{log.read_text()[-2000:]}")
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit("server did not start in 300 s")


async def client(c: httpx.AsyncClient, url: str, photos: list[tuple[str, bytes]], stop_at: float, seed: int,
                 latencies: list[float], errors: dict[str, int]) -> None:
    rng = random.Random(seed)
    loop = asyncio.get_running_loop()
    while loop.time() < stop_at:
        name, data = photos[rng.randrange(len(photos))]
        t0 = time.perf_counter()
        try:
            r = await c.post(url + "/v1/predict", files={"file": (name, data, "image/jpeg")})
            ok = r.status_code == 200 and len(r.json()["predictions"]) == 1
            if not ok:
                errors[f"HTTP {r.status_code}"] = errors.get(f"HTTP {r.status_code}", 0) + 1
                continue
        except (httpx.HTTPError, ValueError, KeyError) as e:
            errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
            continue
        latencies.append(time.perf_counter() - t0)


async def run_load(url: str, photos: list[tuple[str, bytes]], clients: int, seconds: float,
                   pid: int | None) -> dict:
    latencies: list[float] = []
    errors: dict[str, int] = {}
    rss_samples: list[float] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=120, limits=limits) as c:
        loop = asyncio.get_running_loop()
        stop_at = loop.time() + seconds
        t0 = time.perf_counter()
        tasks = [asyncio.create_task(client(c, url, photos, stop_at, i, latencies, errors)) for i in range(clients)]
        while not all(t.done() for t in tasks):
            if pid is not None:
                rss_samples.append(rss_mb(pid))
            await asyncio.sleep(1.0)
        await asyncio.gather(*tasks)
        wall = time.perf_counter() - t0
    lat = np.array(latencies) * 1000
    return {
        "requests_ok": len(latencies), "errors": sum(errors.values()), "errors_by_kind": errors,
        "wall_s": round(wall, 1), "throughput_rps": round(len(latencies) / wall, 1),
        "latency_ms": {q: round(float(np.percentile(lat, p)), 1) if len(lat) else None
                       for q, p in (("p50", 50), ("p95", 95), ("p99", 99))},
        "rss_max_sampled_mb": round(max(rss_samples), 1) if rss_samples else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS, help="Folder of photos to send (recursive).")
    ap.add_argument("--n-photos", type=int, default=64, help="Distinct photos held in memory and sent at random.")
    ap.add_argument("--url", default=None, help="An already running server on loopback (default: start one).")
    ap.add_argument("--serve-args", default="", help="Extra `dogbreed serve` flags for the server it starts.")
    ap.add_argument("--warmup", type=int, default=8, help="Requests sent before measuring.")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "load.json")
    args = ap.parse_args()
    if not (1 <= args.clients <= MAX_CLIENTS and 0 < args.seconds <= MAX_SECONDS):
        raise SystemExit(f"--clients must be 1..{MAX_CLIENTS} and --seconds 1..{MAX_SECONDS}")
    if args.url and urlparse(args.url).hostname not in LOOPBACK:
        raise SystemExit("--url must be a loopback address (127.0.0.1, localhost or ::1)")

    photos = load_photos(args.photos.resolve(), args.n_photos, seed=0)
    tmp = Path(tempfile.mkdtemp(prefix="dogbreed-load-"))
    proc, url = (None, args.url) if args.url else start_server(args.serve_args.split(), tmp / "server.log")
    pid = proc.pid if proc else None
    try:
        for name, data in photos[: args.warmup]:
            httpx.post(url + "/v1/predict", files={"file": (name, data)}, timeout=120).raise_for_status()
        health = httpx.get(url + "/healthz", timeout=10).json()
        load_before = os.getloadavg()
        rss_before = rss_mb(pid) if pid else None
        res = asyncio.run(run_load(url, photos, args.clients, args.seconds, pid))
        rss_after = rss_mb(pid) if pid else None
        peak = rss_mb(pid, "VmHWM") if pid else None
        load_after = os.getloadavg()
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
    result = {
        "clients": args.clients, "seconds": args.seconds, "photos": len(photos),
        "photo_source": os.path.relpath(args.photos, ROOT),
        "server": {k: health.get(k) for k in ("model", "quality", "runtime")},
        "limits": health.get("limits"), **res,
        "rss_mb": {"before": rss_before and round(rss_before, 1), "after": rss_after and round(rss_after, 1),
                   "peak_process_lifetime": peak and round(peak, 1)},
        "machine": {"cpus": os.cpu_count(), "loadavg_1m_before": round(load_before[0], 2),
                    "loadavg_1m_after": round(load_after[0], 2)},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    lat = res["latency_ms"]
    print(f"{args.clients} clients x {res['wall_s']} s, {len(photos)} photos from {args.photos.name}: "
          f"{res['requests_ok']} ok, {res['errors']} errors {res['errors_by_kind'] or ''}")
    print(f"throughput {res['throughput_rps']} req/s; latency p50 {lat['p50']} ms, p95 {lat['p95']} ms, "
          f"p99 {lat['p99']} ms")
    if pid:
        print(f"server RSS before {rss_before:.0f} MB, max sampled {res['rss_max_sampled_mb']} MB, after "
              f"{rss_after:.0f} MB, peak (VmHWM, incl. start-up) {peak:.0f} MB")
    print(f"load average (1 min) {load_before[0]:.2f} before, {load_after[0]:.2f} after, on {os.cpu_count()} CPUs")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
