"""ONNX export of a classifier and the ONNX Runtime session that `Predictor` and feature extraction run."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

OUTPUT_NAMES = ["breed_logits", "imagenet_logits", "features"]


def export_onnx(model: nn.Module, path: str | Path, size: int, opset: int = 17) -> Path:
    """Export ``model`` (image batch -> tuple of outputs) with a dynamic batch axis; written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval().cpu()
    dummy = torch.zeros(1, 3, size, size)
    with torch.no_grad():
        n_out = len(model(dummy))
    names = OUTPUT_NAMES[:n_out] if n_out <= 3 else [f"out{i}" for i in range(n_out)]
    fd, tmp = tempfile.mkstemp(suffix=".onnx", dir=path.parent)
    os.close(fd)
    try:
        torch.onnx.export(
            model, (dummy,), tmp, input_names=["image"], output_names=names, opset_version=opset,
            dynamic_axes={"image": {0: "batch"}, **{n: {0: "batch"} for n in names}}, dynamo=False,
        )
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


class OnnxModel:
    """Callable like the torch module: image batch tensor -> tuple of torch tensors."""

    def __init__(self, path: str | Path, threads: int | None = None):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = threads
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        arr = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        return tuple(torch.from_numpy(o) for o in self.session.run(None, {self.input_name: arr}))


def _model_fingerprint(model: nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().float().numpy().tobytes()[:4096])
        h.update(str(tuple(v.shape)).encode())
    return h.hexdigest()[:16]


def cache_dir() -> Path:
    return Path(os.environ.get("DOGBREED_CACHE", Path.home() / ".cache" / "dogbreed"))


def onnx_session_for(model: nn.Module, size: int | None = None) -> OnnxModel:
    """Export once per distinct model (cached by a weights fingerprint) and open an ONNX Runtime session."""
    size = size or model.preprocess_cfg.size  # type: ignore[union-attr]
    path = cache_dir() / "onnx" / f"{_model_fingerprint(model)}-{size}.onnx"
    if not path.exists():
        export_onnx(model, path, size)
    return OnnxModel(path)


def describe(session: OnnxModel) -> dict[str, Any]:
    return {"path": str(session.path), "outputs": [o.name for o in session.session.get_outputs()]}
