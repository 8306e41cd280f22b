"""bench/speed.py: the quick mode runs and writes the JSON the README's speed table is built from."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_speed_benchmark_quick_mode_writes_expected_json(tmp_path: Path) -> None:
    out = tmp_path / "speed.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "speed.py"), "--quick", "--out", str(out)],
                          capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(out.read_text())
    assert {"machine", "peak", "flops_per_image", "latency", "throughput", "summary", "config"} <= set(res)
    assert res["peak"]["limit_gflops"] > 0
    # Lite0 is ~0.8 GFLOPs per 224px image (2 x ~390M MACs); a hook miscount would be far off.
    assert 0.6e9 < res["flops_per_image"]["efficientnet_lite0"]["224"] < 1.0e9
    lat = {r["runtime"]: r for r in res["latency"]}
    assert set(lat) == {"torch", "onnx"}
    assert all(r["p50_ms"] > 0 and r["p95_ms"] >= r["p50_ms"] for r in lat.values())
    assert {"decode", "resize", "to_tensor", "forward", "rest"} == set(lat["onnx"]["stages_ms"])
    modes = {(r["runtime"], r["mode"]) for r in res["throughput"]}
    assert modes == {(rt, m) for rt in ("torch", "onnx") for m in ("forward", "pipeline")}
    assert all(r["images_per_s"] > 0 and r["pct_of_limit"] > 0 for r in res["throughput"])
    assert res["summary"]["efficientnet_lite0"]["faster_latency"] in ("torch", "onnx")
