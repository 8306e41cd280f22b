"""ONNX export of a classifier (cached by a weights fingerprint), its parity check against PyTorch, and
standalone ``.onnx`` + sidecar files for ``dogbreed export``. The sessions that run the graphs are `onnxrun`'s."""

from __future__ import annotations

import contextlib
import hashlib
import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import WriteError
from .fileio import atomic_write, atomic_write_pair, say_once
from .onnxrun import EXPORT_VERSION, OUTPUT_NAMES, SIDECAR_FORMAT, OnnxModel, sidecar_path
from .paths import cache_dir, model_fingerprint
from .runtime import eval_mode

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


def onnx_session_for(model: nn.Module, size: int | None = None, threads: int | None = None,
                     precision: str = "fp32") -> OnnxModel:
    """Export once per distinct model (cached by a weights fingerprint) and open an ONNX Runtime session."""
    size = size or model.preprocess_cfg.size  # type: ignore[union-attr]
    path = cache_dir() / "onnx" / f"{model_fingerprint(model)}-{size}-v{EXPORT_VERSION}.onnx"
    if not path.exists():
        export_onnx(model, path, size)
        return OnnxModel(path, threads=threads, precision=precision)
    try:
        return OnnxModel(path, threads=threads, precision=precision)
    except ValueError:  # a setting this machine cannot run (bf16 without native bf16): not the file's fault
        raise
    except Exception as e:  # noqa: BLE001 - ONNX Runtime and OpenVINO raise their own types for a damaged graph
        return _reexport(model, path, size, e, threads, precision)


def _reexport(model: nn.Module, path: Path, size: int, e: Exception, threads: int | None,
              precision: str) -> OnnxModel:
    """A cached export that does not load (truncated by a kill or a full disk, overwritten) is exported again,
    once, and the run says so; the atomic write (a unique temporary name, then a rename) lets two processes that
    both found it damaged export at once: each rename puts a whole file in place, and the bytes are the same."""
    first = (str(e).strip().splitlines() or [type(e).__name__])[-1][:160]
    say_once(f"the cached ONNX export {path} could not be loaded ({first}); exported it again", key=str(path))
    export_onnx(model, path, size)
    return OnnxModel(path, threads=threads, precision=precision)


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
    return _compare(model, session, x)[0]


def _compare(model: nn.Module, session: OnnxModel, x: torch.Tensor) -> tuple[dict[str, float], dict[str, float]]:
    """Per output: max |torch - onnx| on ``x``, and the output's scale, max(1, max |torch|)."""
    with torch.no_grad():
        ref = model(x)
    ref = ref if isinstance(ref, (tuple, list)) else (ref,)
    got = session(x)
    diffs, scales = {}, {}
    for name, r, g in zip(session.output_names, ref, got, strict=True):
        diffs[name] = float((r.float() - torch.from_numpy(g).float()).abs().max()) if r.numel() else 0.0
        scales[name] = max(1.0, float(r.float().abs().max())) if r.numel() else 1.0
    return diffs, scales


def export_classifier(clf: nn.Module, out: str | Path, *, decision: dict[str, Any] | None = None,
                      extra: dict[str, Any] | None = None, check: torch.Tensor | None = None,
                      tolerance: float = PARITY_TOLERANCE) -> dict[str, Any]:
    """Write ``out`` (.onnx) and its JSON sidecar for a `models.Classifier`; verify outputs against PyTorch.

    Raises ``ValueError`` (and leaves no files) when any output differs by ``tolerance`` or more of its scale (its
    largest value, at least 1): a from-scratch CNN trained a few epochs has features in the tens, where fp32's
    rounding alone came to 1.8e-4 against logits agreeing to 2e-5, and no such run could be exported. Returns the
    sidecar dict, whose ``parity`` entry holds the measured per-output max abs diff and scale.
    """
    out = Path(out)
    pre = clf.preprocess_cfg  # type: ignore[attr-defined]
    # Exported and checked under a name of its own, then put in place together with its sidecar: the .onnx had been
    # renamed over an older export before its check and sidecar were written, so a Ctrl-C (or a failed check) in
    # between left the new graph beside the old sidecar, read with the other model's breeds.
    trial = out.with_name(f".{out.name}.exporting.onnx")
    try:
        try:
            export_onnx(clf, trial, pre.size)
        except WriteError as e:  # named as the output the user gave, not the trial file
            raise WriteError(str(out), e.reason, e.errno, e.hint) from None
        session = OnnxModel(trial)
        x = check if check is not None else parity_inputs(pre.size)
        diffs, scales = _compare(clf, session, x)
        worst = max((diffs[k] / scales[k] for k in diffs), default=0.0)
        if not worst < tolerance:
            raise ValueError(f"exported ONNX differs from PyTorch: max abs diff {worst:.3g} of an output's scale >= "
                             f"{tolerance:g} (diffs {diffs}, scales {scales})")
        graph = trial.read_bytes()
    finally:
        trial.unlink(missing_ok=True)
    backbone = clf.backbone  # type: ignore[attr-defined]
    cfg = {
        "format": SIDECAR_FORMAT,
        "onnx": out.name,
        "sha256": hashlib.sha256(graph).hexdigest(),
        "backbone": backbone.spec.name,
        "backbone_in_weights": bool((extra or {}).get("backbone_in_weights", False)),
        "input": {"name": session.input_name, "shape": ["batch", 3, pre.size, pre.size], "layout": "NCHW"},
        "outputs": session.output_names,
        "preprocess": pre.to_dict(),
        "classes": [{"wnid": b.wnid, "name": b.name, "imagenet_index": b.imagenet_index}
                    for b in clf.classes],  # type: ignore[attr-defined]
        "decision": decision or {},
        "parity": {"max_abs_diff": diffs, "scale": scales, "inputs": int(x.shape[0]), "tolerance": tolerance},
        "extra": {k: v for k, v in (extra or {}).items() if k != "backbone_in_weights"},
    }
    atomic_write_pair((out, graph), (sidecar_path(out), json.dumps(cfg, indent=2).encode()))
    return cfg
