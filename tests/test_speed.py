"""Fast CPU inference: ONNX export parity, ONNX vs PyTorch predictions, `dogbreed export`, the speed benchmark."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from typer.testing import CliRunner

from dogbreed.cli import app
from dogbreed.errors import ModelLoadError
from dogbreed.export import OnnxModel, max_abs_diff, parity_inputs, sidecar_path
from dogbreed.models import default_classifier
from dogbreed.predict import Predictor
from dogbreed.runtime import fold_batchnorm, optimize_for_cpu
from dogbreed.transforms import Preprocess, preprocess_image, to_tensor

ROOT = Path(__file__).resolve().parents[1]
REAL_DOGS = ROOT.parent / "shared" / "data" / "real" / "imagenet-val-dogs"


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One DOGBREED_CACHE for the module, so the Lite0 export (seconds) happens once and is reused."""
    d = tmp_path_factory.mktemp("dogbreed-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DOGBREED_CACHE", str(d))
        yield d


@pytest.fixture(scope="module")
def exported(cache: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """`dogbreed export default --out X.onnx`, run once: (path, CLI output)."""
    out = tmp_path_factory.mktemp("export") / "lite0.onnx"
    res = CliRunner().invoke(app, ["export", "default", "--format", "onnx", "--out", str(out)])
    assert res.exit_code == 0, res.output
    return out, res.output


def _photos() -> list[tuple[str, bytes]]:
    from skimage import data

    def jpeg(img: Image.Image) -> bytes:
        buf = io.BytesIO()
        img.convert("RGB").save(buf, "JPEG", quality=90)
        return buf.getvalue()

    photos = [(n, jpeg(Image.fromarray(getattr(data, n)()))) for n in ("chelsea", "coffee", "astronaut")]
    real = sorted(REAL_DOGS.glob("*/*.jpg"))[:2] if REAL_DOGS.is_dir() else []
    return photos + [(p.name, p.read_bytes()) for p in real]


def test_export_matches_pytorch_on_random_and_image_like_inputs(exported: tuple[Path, str]) -> None:
    path, _ = exported
    clf = default_classifier("efficientnet_lite0", adapted=True).eval()  # what `export default` writes
    cfg = clf.preprocess_cfg
    photos = torch.stack([to_tensor(preprocess_image(Image.open(io.BytesIO(b)).convert("RGB"), cfg), cfg.mean,
                                    cfg.std) for _, b in _photos()])
    x = torch.cat([parity_inputs(cfg.size, seed=1), photos])
    diffs = max_abs_diff(clf, OnnxModel(path), x)
    assert set(diffs) == {"breed_logits", "imagenet_logits", "features"}
    assert max(diffs.values()) < 1e-4, diffs


def test_export_cli_writes_sidecar_and_reports_parity(exported: tuple[Path, str]) -> None:
    path, output = exported
    m = re.search(r"max abs diff ([0-9.e+-]+)", output)
    assert m and float(m.group(1)) < 1e-4, output
    side = json.loads(sidecar_path(path).read_text())
    assert side["backbone"] == "efficientnet_lite0"
    assert len(side["classes"]) == 120 and side["preprocess"]["size"] == 224
    assert side["parity"]["max_abs_diff"]["breed_logits"] < 1e-4
    assert side["outputs"] == ["breed_logits", "imagenet_logits", "features"]


def test_onnx_file_and_pytorch_predictors_agree(exported: tuple[Path, str]) -> None:
    path, _ = exported
    photos = _photos()
    names = [n for n, _ in photos]
    torch_preds = Predictor(runtime="torch").predict([b for _, b in photos], names)
    onnx_pred = Predictor(model=str(path))
    assert isinstance(onnx_pred.members[0].model, OnnxModel)
    onnx_preds = onnx_pred.predict([b for _, b in photos], names)
    for t, o in zip(torch_preds, onnx_preds, strict=True):
        assert [b.name for b in t.breeds] == [b.name for b in o.breeds], t.path
        assert np.allclose([b.probability for b in t.breeds], [b.probability for b in o.breeds], atol=1e-3)
        assert t.verdict == o.verdict and abs(t.dog_probability - o.dog_probability) < 1e-3


def test_export_cli_round_trip_predict_json(exported: tuple[Path, str], tmp_path: Path) -> None:
    path, _ = exported
    name, jpeg = _photos()[0]
    photo = tmp_path / f"{name}.jpg"
    photo.write_bytes(jpeg)
    res = CliRunner().invoke(app, ["predict", "--model", str(path), str(photo), "--format", "json"])
    assert res.exit_code == 0, res.output
    got = json.loads(res.output[res.output.index("["):])
    want = Predictor().predict([str(photo)])[0]
    assert got[0]["path"] == str(photo) and len(got[0]["breeds"]) == 5
    assert got[0]["breeds"][0]["name"] == want.breeds[0].name


def test_onnx_file_without_sidecar_is_refused(exported: tuple[Path, str], tmp_path: Path) -> None:
    lone = tmp_path / "lone.onnx"
    lone.write_bytes(exported[0].read_bytes())
    with pytest.raises(ModelLoadError, match="sidecar"):
        Predictor(model=str(lone))


def test_runtime_auto_uses_onnx_runtime_on_cpu(cache: Path) -> None:
    pred = Predictor(runtime="auto")
    assert isinstance(pred.members[0].model, OnnxModel)
    assert list((cache / "onnx").glob("*.onnx")), "the export is cached under $DOGBREED_CACHE/onnx"
    with pytest.raises(ValueError, match="runtime"):
        Predictor(runtime="tensorflow")


def test_optimize_for_cpu_keeps_outputs() -> None:
    ref = default_classifier("efficientnet_lite0").eval()
    fast = optimize_for_cpu(default_classifier("efficientnet_lite0"))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules()), "BatchNorm folded away"
    x = parity_inputs(224, n_random=1)
    with torch.inference_mode():
        a, b = ref(x), fast(x.contiguous(memory_format=torch.channels_last))
    assert max(float((u - v).abs().max()) for u, v in zip(a, b, strict=True)) < 1e-4


def test_fold_batchnorm_refuses_a_bn_that_runs_before_its_conv() -> None:
    class BnFirst(nn.Module):  # registration order says conv -> bn, forward does bn -> conv
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 3, padding=1)
            self.bn = nn.BatchNorm2d(4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(self.bn(x))

    m = BnFirst().eval()
    with torch.no_grad():
        m.bn.running_mean.uniform_(-1, 1)
        m.bn.running_var.uniform_(0.5, 2)
    x = torch.randn(2, 4, 8, 8)
    before = m(x).detach()
    assert fold_batchnorm(m, check=x) == 0
    assert isinstance(m.bn, nn.BatchNorm2d)
    assert torch.equal(m(x).detach(), before)


def test_fast_resize_and_to_tensor_match_the_reference() -> None:
    from skimage import data

    cfg = Preprocess(size=224, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3))
    for arr in (data.chelsea(), data.coffee(), data.astronaut()):
        img = Image.fromarray(arr)
        w, h = img.size
        s = (cfg.size / cfg.crop_pct) / min(w, h)
        nw, nh = max(224, round(w * s)), max(224, round(h * s))
        left, top = (nw - 224) // 2, (nh - 224) // 2
        ref = img.resize((nw, nh), Image.Resampling.BICUBIC).crop((left, top, left + 224, top + 224))
        got = preprocess_image(img, cfg)
        assert got.size == (224, 224)
        assert np.abs(np.asarray(got, np.int16) - np.asarray(ref, np.int16)).max() <= 1
        t = to_tensor(got, cfg.mean, cfg.std)
        want = (np.asarray(got, np.float32) / 255 - np.array(cfg.mean, np.float32)) / np.array(cfg.std, np.float32)
        assert t.shape == (3, 224, 224) and t.is_contiguous()
        assert np.abs(t.numpy() - want.transpose(2, 0, 1)).max() < 1e-5


def test_speed_benchmark_quick_mode_writes_expected_json(cache: Path, tmp_path: Path) -> None:
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
