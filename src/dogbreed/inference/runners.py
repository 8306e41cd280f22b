"""Runners: one model on one runtime, image batch -> `ModelOutputs` of numpy arrays.

`create_runner` is the one place that chooses ONNX Runtime / OpenVINO (a cached export) or PyTorch (CPU or CUDA),
for prediction, feature extraction and the dog cascade alike. On CPU with ONNX Runtime nothing here imports torch:
a packaged default model starts from its cached export without being built (`onnxrun.cached_default_model`).
"""

from __future__ import annotations

import importlib.util
import warnings
from typing import Any, NamedTuple

import numpy as np

from ..accel import PRECISIONS
from ..onnxrun import OnnxModel, cached_default_model, native_bf16, record_default_model
from ..transforms import Preprocess

RUNTIMES = ("torch", "onnx", "auto")


class ModelOutputs(NamedTuple):
    """What every classifier returns for an image batch (the ONNX graph's three outputs, in this order)."""

    breed_logits: np.ndarray  # (N, classes)
    imagenet_logits: np.ndarray  # (N, 1000), or (N, 0) when the backbone has no ImageNet head
    features: np.ndarray  # (N, D) pooled backbone features


def uses_onnx(runtime: str, device: str) -> bool:
    """Members run on ONNX Runtime: asked for, or "auto" on CPU where it is several times faster than eager
    PyTorch (bench/speed.py)."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be torch, onnx or auto, not {runtime!r}")
    return runtime == "onnx" or (runtime == "auto" and device == "cpu"
                                 and importlib.util.find_spec("onnxruntime") is not None)


def session_precision(precision: str, device: str, onnx: bool) -> str:
    """"auto": on CPU with ONNX models, bf16 on OpenVINO where the CPU computes bf16 natively, else fp32 on ONNX
    Runtime; on the torch runtime the autocast setting as given (`accel.autocast` resolves "auto")."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    if precision == "auto":
        return "bf16" if device == "cpu" and onnx and native_bf16() else ("fp32" if onnx else "auto")
    if precision == "bf16" and onnx and not native_bf16():
        raise ValueError("precision bf16 on ONNX models runs on OpenVINO and needs a CPU that computes bf16 "
                         "natively (AVX512-BF16 or AMX); this one does not: use precision fp32 or auto")
    return precision


# Rows one forward runs at most on CPU. A batch is its photos and their crops, and a photo of a pack brings up to
# `detect.MAX_DOGS` crops: 16 photos of 24 dogs each (400 rows) in one forward took `dogbreed predict` to 9.5 GB
# (activations, and OpenVINO's request buffers kept at the largest shape, grow with the rows). Rows do not depend
# on each other, so the chunks give the same answers; 16 everyday photos and their crops (0.4 a photo) are one
# chunk, 16 dog photos (about 2 crops each) two.
# On a GPU the batch is 256 photos, so its bound is larger: 256 photos and a crop or so each are one chunk.
MAX_ROWS_CPU = 32
MAX_ROWS_GPU = 512


class Runner:
    """Callable: image batch (numpy, or a torch tensor from a DataLoader worker) -> `ModelOutputs` (numpy)."""

    def __init__(self, model: Any, device: str = "cpu", precision: str = "fp32"):
        self.model, self.device, self.precision = model, device, precision

    @property
    def session(self) -> OnnxModel | None:
        return self.model if isinstance(self.model, OnnxModel) else None

    def __call__(self, x: Any) -> ModelOutputs:
        step = MAX_ROWS_CPU if self.device == "cpu" else MAX_ROWS_GPU
        if len(x) <= step:
            return self._run(x)
        parts = [self._run(x[i:i + step]) for i in range(0, len(x), step)]
        return ModelOutputs(*(np.concatenate(a) for a in zip(*parts, strict=True)))

    def _run(self, x: Any) -> ModelOutputs:
        if isinstance(self.model, OnnxModel):
            return ModelOutputs(*self.model(x))
        import torch

        from ..accel import run_module

        out = run_module(self.model, torch.as_tensor(x), self.device, self.precision)
        return ModelOutputs(*(o.numpy() for o in out))


def create_runner(model: Any, runtime: str = "auto", device: str = "cpu", precision: str = "auto", *,
                  size: int | None = None, fold_batchnorm: bool = True) -> Runner:
    """Place ``model`` (a `models.Classifier`, or an `OnnxModel` session, which stays one) on a runtime.

    ONNX: exported once per distinct model and cached (`export.onnx_session_for`); with ``runtime="auto"`` an
    export that fails (e.g. a read-only cache dir) falls back to PyTorch with a warning, so a prediction still
    answers, slower. PyTorch on CPU: BatchNorm folded into the convs and channels-last weights unless
    ``fold_batchnorm`` is False (feature extraction keeps the module as trained); on CUDA channels-last.
    """
    onnx = uses_onnx(runtime, device)
    prec = session_precision(precision, device, onnx)
    if isinstance(model, OnnxModel):
        return Runner(model, device, prec)
    if onnx:
        from ..export import onnx_session_for

        try:
            return Runner(onnx_session_for(model, size, precision=prec), device, prec)
        except Exception as e:  # noqa: BLE001 - "auto" still answers, just slower
            if runtime != "auto":
                raise
            warnings.warn(f"ONNX Runtime unavailable ({e}); using PyTorch", RuntimeWarning, stacklevel=2)
            prec = session_precision(precision, device, False)
    import torch

    from ..runtime import optimize_for_cpu

    model = model.to(device).eval()
    if fold_batchnorm:
        if device == "cpu":
            model = optimize_for_cpu(model)  # BatchNorm folded into convs + channels-last weights
        else:
            model = model.to(memory_format=torch.channels_last)  # cuDNN's fast NHWC kernels (bf16 tensor cores)
    return Runner(model, device, prec)


def packaged_runner(backbone: str, adapted: bool, runtime: str = "auto", device: str = "cpu",
                    precision: str = "auto") -> tuple[Runner, Preprocess]:
    """A packaged default classifier (adapted heads or the plain ImageNet head) ready to run: its cached export
    when there is one, else built (torch), placed, and its export remembered for the next process."""
    onnx = uses_onnx(runtime, device)
    if onnx:
        cached = cached_default_model(backbone, adapted=adapted, precision=session_precision(precision, device, True))
        if cached is not None:
            return create_runner(cached, runtime, device, precision), cached.preprocess_cfg
    from ..models import default_classifier

    clf = default_classifier(backbone, adapted=adapted)
    runner = create_runner(clf, runtime, device, precision)
    remember_export(clf, runner, adapted)
    return runner, clf.preprocess_cfg


def remember_export(clf: Any, runner: Runner, adapted: bool) -> None:
    """A packaged classifier just built and exported: record its export, so the next process skips the build."""
    if not isinstance(clf, OnnxModel) and runner.session is not None:
        record_default_model(clf, runner.session, adapted)
