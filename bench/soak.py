"""Soak test: mixed traffic for a long time against a real `dogbreed serve` on loopback; does memory level off?

    python bench/soak.py                          # 20 minutes, 8 clients, photos from imagenet-val-dogs
    python bench/soak.py --minutes 2 --clients 4  # a short look

Starts its own server (load.py's `start_server`, on a free 127.0.0.1 port; --url for one already running on
loopback). Each client sends, at random: `POST /v1/predict` (70%), `POST /v1/explain` (10%), `POST /v1/feedback`
(10%) and an odd file (10%: CMYK, 16-bit, palette, RGBA, multi-frame TIFF and GIF, 1x1, 20000x3, grey+alpha, HTML
named .jpg, a truncated JPEG, an empty file) to `/v1/predict`. An odd file's answer is checked against what it should
get (200, or the 400/415 a broken file should get): those 4xx are counted apart from real errors (any other
status, a wrong answer, a connection failure). The server's RSS is sampled every --sample-s seconds.

Bounded: at most --minutes (60) and --max-requests; it stops by itself. Writes bench/results/soak.json and a plot of
RSS over time (bench/results/soak.png); "flat" is judged on the last 15 minutes (or the last three quarters of a
shorter run): the spread (max - min) / min of the RSS samples there.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load import DEFAULT_PHOTOS, LOOPBACK, ROOT, load_photos, rss_mb, start_server  # noqa: E402

MAX_MINUTES, MAX_CLIENTS = 60, 32
MIX = {"predict": 70, "explain": 10, "feedback": 10, "odd": 10}
BREEDS = ["Samoyed", "beagle", "Golden retriever", "Shih-Tzu", "pug"]


def _img(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def odd_files(photo: bytes) -> list[tuple[str, bytes, set[int]]]:
    """Twelve odd files of issue 16's corpus, each with the statuses it may get: the images are answered, the
    broken files get a 4xx naming them."""
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8))
    frames = [Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)) for _ in range(3)]
    deep = Image.fromarray(rng.integers(0, 65535, (90, 120), dtype=np.uint16))  # mode I;16
    return [
        ("cmyk.jpg", _img(rgb.convert("CMYK"), "JPEG"), {200}),
        ("deep16.png", _img(deep, "PNG"), {200}),
        ("palette.png", _img(rgb.convert("P"), "PNG"), {200}),
        ("alpha.png", _img(rgb.convert("RGBA"), "PNG"), {200}),
        ("grey_alpha.png", _img(rgb.convert("LA"), "PNG"), {200}),
        ("frames.tif", _img(frames[0], "TIFF", save_all=True, append_images=frames[1:]), {200}),
        ("frames.gif", _img(frames[0], "GIF", save_all=True, append_images=frames[1:]), {200}),
        ("one_pixel.png", _img(Image.new("RGB", (1, 1), (90, 60, 30)), "PNG"), {200}),
        ("sliver.png", _img(Image.new("RGB", (20000, 3), (200, 180, 150)), "PNG"), {200}),
        ("page.jpg", b"<!doctype html><html><body>not a photo</body></html>", {415}),
        ("truncated.jpg", photo[: len(photo) // 2], {400}),
        ("empty.jpg", b"", {400}),
    ]


class Tally:
    """Requests by kind: answered as expected, expected 4xx (odd files), and errors by kind."""

    def __init__(self) -> None:
        self.ok: dict[str, int] = dict.fromkeys(MIX, 0)
        self.expected_4xx: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self.latency: dict[str, list[float]] = {k: [] for k in MIX}
        self.examples: dict[str, str] = {}

    def error(self, key: str, detail: str) -> None:
        self.errors[key] = self.errors.get(key, 0) + 1
        self.examples.setdefault(key, detail[:300])

    @property
    def total(self) -> int:
        return sum(self.ok.values()) + sum(self.expected_4xx.values()) + sum(self.errors.values())


async def one_request(c: httpx.AsyncClient, url: str, kind: str, rng: random.Random,
                      photos: list[tuple[str, bytes]], odd: list[tuple[str, bytes, set[int]]], t: Tally) -> None:
    name, data = photos[rng.randrange(len(photos))]
    want: set[int] = {200}
    if kind == "predict":
        req = c.post(url + "/v1/predict", files={"file": (name, data, "image/jpeg")})
    elif kind == "explain":
        req = c.post(url + "/v1/explain", files={"file": (name, data, "image/jpeg")})
    elif kind == "feedback":
        req = c.post(url + "/v1/feedback", files={"file": (name, data, "image/jpeg")},
                     data={"breed": rng.choice(BREEDS), "predicted": "soak"})
    else:
        name, data, want = odd[rng.randrange(len(odd))]
        req = c.post(url + "/v1/predict", files={"file": (name, data, "application/octet-stream")})
    t0 = time.perf_counter()
    try:
        r = await req
    except httpx.HTTPError as e:
        t.error(f"{kind}: {type(e).__name__}", str(e))
        return
    if r.status_code not in want:
        t.error(f"{kind}: HTTP {r.status_code}", f"{name}: {r.text}")
        return
    if r.status_code != 200:  # an odd file's expected 4xx: it must name the file
        if name not in r.json().get("detail", ""):
            t.error(f"{kind}: 4xx without the file name", r.text)
            return
        t.expected_4xx[name] = t.expected_4xx.get(name, 0) + 1
        return
    if not _answer_ok(kind, r):
        t.error(f"{kind}: wrong answer", r.text[:300])
        return
    t.ok[kind] += 1
    t.latency[kind].append(time.perf_counter() - t0)


def _answer_ok(kind: str, r: httpx.Response) -> bool:
    if kind == "explain":
        return r.headers.get("content-type") == "image/png" and r.content[:8] == b"\x89PNG\r\n\x1a\n"
    body = r.json()
    if kind == "feedback":
        return isinstance(body.get("id"), int) and body.get("breed", {}).get("name")
    preds = body.get("predictions") or []
    return len(preds) == 1 and ("error" in preds[0] or preds[0].get("verdict") in ("dog", "no_dog",
                                                                                   "uncertain_breed"))


async def client(c: httpx.AsyncClient, url: str, seed: int, stop_at: float, max_requests: int, t: Tally,
                 photos: list[tuple[str, bytes]], odd: list[tuple[str, bytes, set[int]]],
                 mix: dict[str, float]) -> None:
    rng = random.Random(seed)
    kinds, weights = list(mix), list(mix.values())
    loop = asyncio.get_running_loop()
    while loop.time() < stop_at and t.total < max_requests:
        await one_request(c, url, rng.choices(kinds, weights)[0], rng, photos, odd, t)


async def sampler(pid: int | None, every: float, t0: float, samples: list[dict], stop: asyncio.Event) -> None:
    while not stop.is_set():
        samples.append({"t_s": round(time.perf_counter() - t0, 1), "rss_mb": round(rss_mb(pid), 1) if pid else None,
                        "load_1m": round(os.getloadavg()[0], 2)})
        try:
            await asyncio.wait_for(stop.wait(), every)
        except asyncio.TimeoutError:
            pass


async def soak(url: str, pid: int | None, args: argparse.Namespace, photos: list[tuple[str, bytes]]) -> dict:
    t, samples, stop = Tally(), [], asyncio.Event()
    odd = odd_files(photos[0][1])
    limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)
    async with httpx.AsyncClient(timeout=300, limits=limits) as c:
        loop = asyncio.get_running_loop()
        stop_at = loop.time() + args.minutes * 60
        t0 = time.perf_counter()
        watch = asyncio.create_task(sampler(pid, args.sample_s, t0, samples, stop))
        await asyncio.gather(*(client(c, url, i, stop_at, args.max_requests, t, photos, odd, args.weights)
                               for i in range(args.clients)))
        stop.set()
        await watch
        samples.append({"t_s": round(time.perf_counter() - t0, 1), "rss_mb": round(rss_mb(pid), 1) if pid else None,
                        "load_1m": round(os.getloadavg()[0], 2)})
        wall = time.perf_counter() - t0
    lat = {k: {q: round(float(np.percentile(np.array(v) * 1000, p)), 1) for q, p in (("p50", 50), ("p95", 95))}
           for k, v in t.latency.items() if v}
    return {"wall_s": round(wall, 1), "requests": t.total, "ok_by_kind": t.ok,
            "expected_4xx_by_file": t.expected_4xx, "errors": sum(t.errors.values()), "errors_by_kind": t.errors,
            "error_examples": t.examples, "latency_ms": lat, "samples": samples}


def rss_summary(samples: list[dict], window_s: float) -> dict:
    """RSS at the start and end, and over the last ``window_s`` seconds: the raw range of the samples, per-minute
    minimum (the floor, between heat-maps), median and maximum, and the least-squares trend.

    'Flat' is judged on the floor and the trend: a heat-map in flight holds a few hundred MB for its seconds and
    gives them back, so the raw samples swing with how many were running when sampled; a leak lifts the floor.
    """
    pts = [(s["t_s"], s["rss_mb"]) for s in samples if s["rss_mb"] is not None]
    if len(pts) < 2:
        return {}
    end = pts[-1][0]
    window_s = min(window_s, 0.75 * end)
    last = [(ts, r) for ts, r in pts if ts >= end - window_s]
    lo, hi = min(r for _, r in last), max(r for _, r in last)
    buckets: dict[int, list[float]] = {}
    for ts, r in last:
        buckets.setdefault(int((ts - (end - window_s)) // 60), []).append(r)
    full = max(len(v) for v in buckets.values())
    minutes = [v for _, v in sorted(buckets.items()) if len(v) >= full / 2]  # not the last few seconds' bucket
    floor, medians, tops = ([f(v) for v in minutes] for f in (min, lambda v: float(np.median(v)), max))
    t, r = np.array([p[0] for p in last]), np.array([p[1] for p in last])
    slope = float(np.polyfit(t, r, 1)[0]) if len(last) > 2 else 0.0
    floor_spread = (max(floor) - min(floor)) / min(floor)
    drift = abs(slope * window_s) / float(np.mean(r))
    return {"first_mb": pts[0][1], "max_mb": max(r for _, r in pts), "last_mb": pts[-1][1],
            "window_s": round(window_s), "window_min_mb": lo, "window_max_mb": hi,
            "window_raw_spread": round((hi - lo) / lo, 4), "window_minute_min_mb": [round(m) for m in floor],
            "window_minute_median_mb": [round(m) for m in medians], "window_minute_max_mb": [round(m) for m in tops],
            "window_floor_spread": round(floor_spread, 4), "window_median_spread": round(
                (max(medians) - min(medians)) / min(medians), 4),
            "window_trend_mb_per_10min": round(slope * 600, 1), "window_trend_share": round(drift, 4),
            "flat_within_10pct": floor_spread <= 0.10 and drift <= 0.10}


def plot(samples: list[dict], summary: dict, out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ts = [s["t_s"] / 60 for s in samples if s["rss_mb"] is not None]
    rss = [s["rss_mb"] for s in samples if s["rss_mb"] is not None]
    fig, ax = plt.subplots(figsize=(8, 3.6))
    ax.plot(ts, rss, lw=1.2, label="server RSS")
    if summary:
        start = ts[-1] - summary["window_s"] / 60
        floor = summary["window_minute_min_mb"]
        ax.axvspan(start, ts[-1], color="0.9", label=f"last {summary['window_s'] / 60:.0f} min: floor (per-minute "
                   f"min) {min(floor)}-{max(floor)} MB ({summary['window_floor_spread']:.1%}), samples "
                   f"{summary['window_min_mb']:.0f}-{summary['window_max_mb']:.0f}, trend "
                   f"{summary['window_trend_mb_per_10min']:+.0f} MB/10 min")
    ax.set_xlabel("minutes")
    ax.set_ylabel("MB")
    ax.set_ylim(bottom=0)
    ax.set_title(title, fontsize=9)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=20)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--max-requests", type=int, default=500_000)
    ap.add_argument("--sample-s", type=float, default=5.0, help="Seconds between RSS samples.")
    ap.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS)
    ap.add_argument("--n-photos", type=int, default=64)
    ap.add_argument("--url", default=None, help="An already running server on loopback (default: start one).")
    ap.add_argument("--serve-args", default="--feedback-per-day 1000000",
                    help="`dogbreed serve` flags for the server it starts (the default lifts the daily feedback "
                         "quota, which 20 minutes of traffic would use up).")
    ap.add_argument("--mix", default=",".join(f"{k}={v}" for k, v in MIX.items()),
                    help="Weights of the request kinds, e.g. explain=1 for explain only.")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "soak.json")
    ap.add_argument("--summarize", type=Path, default=None, help="Judge the samples of a written result again "
                    "(rewrites its rss entry and plot); runs nothing.")
    args = ap.parse_args()
    try:
        weights = {k: float(v) for k, v in (kv.split("=") for kv in args.mix.split(","))}
    except ValueError:
        raise SystemExit("--mix must look like predict=70,explain=10,feedback=10,odd=10") from None
    if not set(weights) <= set(MIX) or sum(weights.values()) <= 0:
        raise SystemExit(f"--mix kinds are {sorted(MIX)}")
    args.weights = {k: weights.get(k, 0.0) for k in MIX}
    if not (0 < args.minutes <= MAX_MINUTES and 1 <= args.clients <= MAX_CLIENTS and args.max_requests > 0):
        raise SystemExit(f"--minutes must be in (0, {MAX_MINUTES}], --clients 1..{MAX_CLIENTS}")
    if args.url and urlparse(args.url).hostname not in LOOPBACK:
        raise SystemExit("--url must be a loopback address (127.0.0.1, localhost or ::1)")
    return args


def main() -> None:
    args = parse_args()
    if args.summarize:  # the same samples judged again (e.g. after a change to `rss_summary`), nothing re-run
        result = json.loads(args.summarize.read_text())
        result["rss"] = {**rss_summary(result["samples"], 15 * 60),
                         "peak_process_lifetime_mb": result["rss"].get("peak_process_lifetime_mb")}
        report(result, args.summarize)
        return
    photos = load_photos(args.photos.resolve(), args.n_photos, seed=0)
    tmp = Path(tempfile.mkdtemp(prefix="dogbreed-soak-"))
    proc, url = (None, args.url) if args.url else start_server(args.serve_args.split(), tmp / "server.log")
    pid = proc.pid if proc else None
    try:
        health = httpx.get(url + "/healthz", timeout=10).json()
        res = asyncio.run(soak(url, pid, args, photos))
        peak = rss_mb(pid, "VmHWM") if pid else None
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
    result = {"minutes": args.minutes, "clients": args.clients, "mix_weights": args.weights, "photos": len(photos),
              "photo_source": os.path.relpath(args.photos, ROOT), "serve_args": args.serve_args,
              "server": {k: health.get(k) for k in ("model", "quality", "runtime")}, **res,
              "rss": {**rss_summary(res["samples"], 15 * 60), "peak_process_lifetime_mb": peak and round(peak, 1)},
              "machine": {"cpus": os.cpu_count(), "load_1m_mean": round(float(np.mean(
                  [s["load_1m"] for s in res["samples"]])), 2)}}
    report(result, args.out)


def report(result: dict, out: Path) -> None:
    """Write the JSON and the plot beside it, and print the summary."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    png = out.with_suffix(".png")
    summary = {k: v for k, v in result["rss"].items() if k != "peak_process_lifetime_mb"}
    plot(result["samples"], summary, png, f"dogbreed serve, {result['clients']} clients, mixed traffic, "
         f"{result['wall_s'] / 60:.0f} min ({result['requests']} requests, {result['errors']} errors)")
    print(f"{result['wall_s']:.0f} s, {result['requests']} requests: ok {result['ok_by_kind']}, expected 4xx "
          f"{sum(result['expected_4xx_by_file'].values())}, errors {result['errors']} {result['errors_by_kind'] or ''}")
    if summary:
        print(f"RSS first {summary['first_mb']:.0f} MB, max {summary['max_mb']:.0f}, last {summary['last_mb']:.0f}; "
              f"last {summary['window_s'] / 60:.0f} min: samples {summary['window_min_mb']:.0f}-"
              f"{summary['window_max_mb']:.0f} MB, per-minute minimum {min(summary['window_minute_min_mb'])}-"
              f"{max(summary['window_minute_min_mb'])} (spread {summary['window_floor_spread']:.1%}), trend "
              f"{summary['window_trend_mb_per_10min']} MB/10 min; flat within 10%: {summary['flat_within_10pct']}")
    print(f"mean load average {result['machine']['load_1m_mean']} on {result['machine']['cpus']} CPUs; wrote {out}, "
          f"{png}")


if __name__ == "__main__":
    main()
