"""ONNX export of a classifier and the ONNX Runtime session that `Predictor` and feature extraction run.

Also the CPU-inference helpers the torch runtime uses (BatchNorm folding, thread count), so that both runtimes are
tuned in one place.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .fileio import atomic_write_text

OUTPUT_NAMES = ["breed_logits", "imagenet_logits", "features"]
SIDECAR_FORMAT = "dogbreed-onnx/1"
# Part of the cache file name: bump it when the exported graph changes, so stale cached exports are not reused.
EXPORT_VERSION = 2
PARITY_TOLERANCE = 1e-4


# ---------------------------------------------------------------------------------------------------------------
# Threads


def physical_cores() -> int:
    """Physical cores this process may run on (SMT siblings counted once): the right thread count for conv/GEMM
    kernels, which gain nothing from a second hyper-thread on the same core's FMA units."""
    try:
        cpus = os.sched_getaffinity(0)
    except AttributeError:  # not Linux
        return max(1, (os.cpu_count() or 2) // 2)
    cores = set()
    for c in cpus:
        f = Path(f"/sys/devices/system/cpu/cpu{c}/topology/thread_siblings_list")
        try:
            cores.add(f.read_text().strip())
        except OSError:
            cores.add(str(c))
    return max(1, len(cores))


# ---------------------------------------------------------------------------------------------------------------
# Torch-side inference preparation


def fold_batchnorm(model: nn.Module, check: torch.Tensor | None = None, atol: float = 1e-3) -> int:
    """Fold eval-mode BatchNorm2d into the Conv2d registered just before it, in place; returns how many were folded.

    Registration order is only a hint that the BN follows the conv in ``forward`` (true for EfficientNet-Lite and
    ResNet, not guaranteed for arbitrary timm models), so with ``check`` the outputs before and after are compared
    and the original layers are put back if they differ by more than ``atol``.
    """
    pairs: list[tuple[nn.Module, str, nn.Conv2d, nn.BatchNorm2d]] = []
    for parent in model.modules():
        prev: nn.Module | None = None
        for name, child in parent.named_children():
            if (isinstance(child, nn.BatchNorm2d) and isinstance(prev, nn.Conv2d) and child.track_running_stats
                    and prev.out_channels == child.num_features):
                pairs.append((parent, name, prev, child))
            prev = child
    if not pairs:
        return 0
    with _eval_mode(model):
        return _fold_pairs(model, pairs, check, atol)


def _fold_pairs(model: nn.Module, pairs: list[tuple[nn.Module, str, nn.Conv2d, nn.BatchNorm2d]],
                check: torch.Tensor | None, atol: float) -> int:
    before = _outputs(model, check) if check is not None else None
    saved = []
    with torch.no_grad():
        for parent, name, conv, bn in pairs:
            saved.append((parent, name, conv, bn, conv.weight, conv.bias))
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            w = conv.weight * scale.reshape(-1, 1, 1, 1)
            b = (conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)) - bn.running_mean
            conv.weight = nn.Parameter(w.contiguous(memory_format=torch.preserve_format), requires_grad=False)
            conv.bias = nn.Parameter(b * scale + bn.bias, requires_grad=False)
            setattr(parent, name, nn.Identity())
    if before is not None:
        after = _outputs(model, check)
        if any(a.shape != b.shape or (a - b).abs().max().item() > atol for a, b in zip(before, after, strict=True)):
            for parent, name, conv, bn, w, b in saved:  # put the original layers back
                conv.weight, conv.bias = w, b
                setattr(parent, name, bn)
            return 0
    return len(pairs)


def _outputs(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        out = model(x)
    return [o.float() for o in (out if isinstance(out, (tuple, list)) else (out,))]


def optimize_for_cpu(model: nn.Module, size: int | None = None) -> nn.Module:
    """Eager-PyTorch CPU inference: BatchNorm folded into convs, weights channels-last, no autograd. In place.

    channels-last lets oneDNN run convolutions without layout reorders; folding removes one elementwise pass
    per conv. Both keep outputs within float rounding (checked on a random batch).
    """
    model.eval().requires_grad_(False)
    size = size or getattr(getattr(model, "preprocess_cfg", None), "size", None)
    check = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0)) if size else None
    fold_batchnorm(model, check)
    return model.to(memory_format=torch.channels_last)


# ---------------------------------------------------------------------------------------------------------------
# Export


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """eval() for the duration, then every module's own flag back: ``model.train(was_training)`` would switch
    all submodules, e.g. a pretrained backbone's BatchNorm inside a top-level module left in training mode."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, f in flags:
            m.training = f


@contextlib.contextmanager
def _no_grad_params(model: nn.Module) -> Iterator[None]:
    """Tracing with parameters that require grad fails on inference tensors (weights touched under
    ``torch.inference_mode``, e.g. by ``.to(channels_last)``); the export needs no autograd anyway."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        with torch.no_grad():
            yield
    finally:
        for p, f in flags:
            if f and not p.is_inference():  # an inference tensor cannot require grad outside inference mode
                p.requires_grad_(True)


def export_onnx(model: nn.Module, path: str | Path, size: int, opset: int = 17) -> Path:
    """Export ``model`` (image batch -> tuple of outputs) with a dynamic batch axis; written atomically.

    Quiet (the tracer's warnings are about patterns this model does not rely on) and deterministic: the same
    weights give the same bytes, so the file can be hashed and cached.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    device = next(iter(model.parameters()), torch.zeros(())).device
    dummy = torch.zeros(1, 3, size, size, device=device)
    fd, tmp = tempfile.mkstemp(suffix=".onnx", dir=path.parent)
    os.close(fd)
    try:
        with _eval_mode(model), _no_grad_params(model), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = model(dummy)
            n_out = len(out) if isinstance(out, (tuple, list)) else 1
            names = OUTPUT_NAMES[:n_out] if n_out <= 3 else [f"out{i}" for i in range(n_out)]
            torch.onnx.export(
                model, (dummy,), tmp, input_names=["image"], output_names=names, opset_version=opset,
                dynamic_axes={"image": {0: "batch"}, **{n: {0: "batch"} for n in names}}, dynamo=False,
                do_constant_folding=True,  # folds eval BatchNorm into the convs
            )
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


class OnnxModel:
    """Callable like the torch module: image batch tensor -> tuple of torch tensors.

    Session options: every graph optimisation (constant folding, Conv+BN/activation fusion and the NCHWc
    layout that runs MLAS's blocked AVX-512/AVX2 conv kernels), intra-op threads = physical cores, one
    inter-op thread since the graph is a single chain, no spinning.
    """

    def __init__(self, path: str | Path, threads: int | None = None):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.intra_op_num_threads = threads or physical_cores()
        opts.inter_op_num_threads = 1
        # No busy-waiting between runs: in the single-photo path the pool's spinning thread fights the main
        # thread's JPEG decode for a core (measured p50 11-14 ms without spinning vs 17-19 ms with, 2 cores).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.log_severity_level = 3  # errors only; warnings about unused initializers are noise here
        self.path = Path(path)
        self.threads = opts.intra_op_num_threads
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run_numpy(self, x: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(x, dtype=np.float32)})

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # .contiguous() turns a channels-last batch back into the NCHW layout the graph expects (no-op otherwise).
        arr = x.detach().cpu().contiguous().numpy()
        return tuple(torch.from_numpy(o) for o in self.run_numpy(arr))


def _model_fingerprint(model: nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().float().numpy().tobytes()[:4096])
        h.update(str(tuple(v.shape)).encode())
    return h.hexdigest()[:16]


def cache_dir() -> Path:
    return Path(os.environ.get("DOGBREED_CACHE", Path.home() / ".cache" / "dogbreed"))


def onnx_session_for(model: nn.Module, size: int | None = None, threads: int | None = None) -> OnnxModel:
    """Export once per distinct model (cached by a weights fingerprint) and open an ONNX Runtime session."""
    size = size or model.preprocess_cfg.size  # type: ignore[union-attr]
    path = cache_dir() / "onnx" / f"{_model_fingerprint(model)}-{size}-v{EXPORT_VERSION}.onnx"
    if not path.exists():
        export_onnx(model, path, size)
    return OnnxModel(path, threads=threads)


def describe(session: OnnxModel) -> dict[str, Any]:
    return {"path": str(session.path), "outputs": list(session.output_names), "threads": session.threads}


# ---------------------------------------------------------------------------------------------------------------
# Parity check and standalone .onnx models (graph + JSON sidecar) for `dogbreed export` / `predict --model x.onnx`


def parity_inputs(size: int, n_random: int = 2, seed: int = 0) -> torch.Tensor:
    """Inputs for the export check: N(0,1) noise, plus smooth image-like batches in the normalised range."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(n_random, 3, size, size, generator=g)
    # Real photos are mostly low-frequency: a coarse random image upsampled, scaled to about [-1, 1].
    coarse = torch.rand(2, 3, 8, 8, generator=g) * 2 - 1
    smooth = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    return torch.cat([noise, smooth])


def max_abs_diff(model: nn.Module, session: OnnxModel, x: torch.Tensor) -> dict[str, float]:
    """Per output: max |torch - onnx| on ``x``."""
    with torch.no_grad():
        ref = model(x)
    ref = ref if isinstance(ref, (tuple, list)) else (ref,)
    got = session(x)
    return {name: float((r.float() - g.float()).abs().max()) if r.numel() else 0.0
            for name, r, g in zip(session.output_names, ref, got, strict=True)}


def sidecar_path(onnx_path: str | Path) -> Path:
    """``model.onnx`` -> ``model.onnx.json`` next to it (not ``model.json``, a run folder's own config)."""
    p = Path(onnx_path)
    return p.with_name(p.name + ".json")


def export_classifier(clf: nn.Module, out: str | Path, *, decision: dict[str, Any] | None = None,
                      extra: dict[str, Any] | None = None, check: torch.Tensor | None = None,
                      tolerance: float = PARITY_TOLERANCE) -> dict[str, Any]:
    """Write ``out`` (.onnx) and its JSON sidecar for a `models.Classifier`; verify outputs against PyTorch.

    Raises ``ValueError`` (and leaves no files) when any output differs by ``tolerance`` or more. Returns the
    sidecar dict, whose ``parity`` entry holds the measured per-output max abs diff.
    """
    out = Path(out)
    pre = clf.preprocess_cfg  # type: ignore[attr-defined]
    export_onnx(clf, out, pre.size)
    session = OnnxModel(out)
    x = check if check is not None else parity_inputs(pre.size)
    diffs = max_abs_diff(clf, session, x)
    worst = max(diffs.values(), default=0.0)
    if not worst < tolerance:
        out.unlink(missing_ok=True)
        raise ValueError(f"exported ONNX differs from PyTorch: max abs diff {worst:.3g} >= {tolerance:g} ({diffs})")
    backbone = clf.backbone  # type: ignore[attr-defined]
    cfg = {
        "format": SIDECAR_FORMAT,
        "onnx": out.name,
        "sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
        "backbone": backbone.spec.name,
        "backbone_in_weights": bool((extra or {}).get("backbone_in_weights", False)),
        "input": {"name": session.input_name, "shape": ["batch", 3, pre.size, pre.size], "layout": "NCHW"},
        "outputs": session.output_names,
        "preprocess": pre.to_dict(),
        "classes": [{"wnid": b.wnid, "name": b.name, "imagenet_index": b.imagenet_index}
                    for b in clf.classes],  # type: ignore[attr-defined]
        "decision": decision or {},
        "parity": {"max_abs_diff": diffs, "inputs": int(x.shape[0]), "tolerance": tolerance},
        "extra": {k: v for k, v in (extra or {}).items() if k != "backbone_in_weights"},
    }
    atomic_write_text(sidecar_path(out), json.dumps(cfg, indent=2))
    return cfg


class _SpecName:
    def __init__(self, name: str):
        self.spec = type("Spec", (), {"name": name})()


class OnnxClassifier(OnnxModel):
    """An exported classifier: the session plus what `Predictor` reads off a `Classifier` (classes, preprocessing,
    backbone name) and the sidecar's decision thresholds."""

    def __init__(self, path: str | Path, threads: int | None = None):
        from .breeds import Breed
        from .transforms import Preprocess

        side = sidecar_path(path)
        if not side.is_file():
            raise FileNotFoundError(f"{path}: no sidecar {side.name} next to it (write both with dogbreed export)")
        self.config: dict[str, Any] = json.loads(side.read_text())
        if self.config.get("format") != SIDECAR_FORMAT:
            raise ValueError(f"{side}: not a dogbreed ONNX sidecar (format {self.config.get('format')!r})")
        super().__init__(path, threads)
        self.classes = [Breed(c.get("wnid"), c["name"], c.get("imagenet_index")) for c in self.config["classes"]]
        self.preprocess_cfg = Preprocess.from_dict(self.config["preprocess"])
        self.backbone = _SpecName(self.config.get("backbone", "onnx"))
        self.decision: dict[str, Any] = dict(self.config.get("decision") or {})


def load_onnx_classifier(path: str | Path, threads: int | None = None) -> OnnxClassifier:
    return OnnxClassifier(path, threads)


# ---------------------------------------------------------------------------------------------------------------
# int8: an experiment (bench/speed.py --int8), not a Predictor runtime. Static QDQ int8 Lite0 kept top-1 on the 275
# imagenet-val-dogs photos (76.0% fp32 -> 76.7% int8) but changed 4.4% of top-1 answers, for 1.05-1.5x speed on a
# noisy 2-core machine; dynamic int8 was worse on both counts (81% agreement, ~10x slower: no int8 depthwise conv).


def quantize_int8(fp32_path: str | Path, out: str | Path, calibration: Sequence[np.ndarray]) -> Path:
    """Static QDQ int8 quantization (per-channel int8 weights, uint8 activations) calibrated on image batches."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import CalibrationDataReader

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)

    class _Reader(CalibrationDataReader):
        def __init__(self, batches: Sequence[np.ndarray]):
            self._it = iter([{"image": b.astype(np.float32)} for b in batches])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_static(str(fp32_path), str(out), _Reader(calibration), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return out
