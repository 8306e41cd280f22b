"""Keeping an accelerator fed: where a batch goes, in what precision, and how the input pipeline is set up.

One place for the CUDA-only choices (pinned host memory, non-blocking copies, bf16 autocast, channels-last,
big batches) so prediction, feature extraction and training make them alike. Every function also runs on CPU —
CPU autocast supports bf16 too — so the tests exercise the same code paths without a GPU. torch is imported
inside the functions that touch it: the CPU prediction path on ONNX Runtime reads the constants and never loads it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

PRECISIONS = ("auto", "fp32", "bf16")
# bf16 keeps 8 bits of mantissa, so probabilities move a little. Stated tolerance (checked by
# tests/test_batch.py::test_bf16_autocast_within_tolerance on real photos through the CPU autocast path):
# max |p_bf16 - p_fp32| over every breed probability and the dog probability, and top-1 agreement.
BF16_TOLERANCE = {"max_abs_probability": 0.05, "top1_agreement": 0.95}
# Batch sizes that keep a GPU busy (the H100 probe: 256-512 with 14 decode workers); a CPU gains
# nothing past ~16-32 and pays in latency and memory.
CUDA_BATCH_SIZE = 256


def is_cuda(device: str) -> bool:
    return str(device).startswith("cuda")


def resolve_precision(precision: str, device: str) -> str:
    """"auto" -> bf16 autocast on CUDA (tensor cores, half the activation traffic), fp32 elsewhere."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    if precision == "auto":
        return "bf16" if is_cuda(device) else "fp32"
    return precision


def default_workers(device: str) -> int:
    """Decode/preprocess worker processes: on CUDA every core but one (the one feeding the GPU); on CPU none:
    a background thread decodes while the network runs (`batch.prefetched`), cheaper than a process there."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if is_cuda(device):
        return max(1, cores - 1)
    return 0


def loader_kwargs(device: str, workers: int) -> dict[str, Any]:
    """DataLoader settings for batches bound for ``device``: pinned pages so the host-to-device copy can run
    asynchronously (non_blocking) and overlap the previous batch's kernels; a couple of batches prefetched per
    worker so the accelerator never waits on decoding."""
    import torch

    kw: dict[str, Any] = {"num_workers": workers, "pin_memory": is_cuda(device) and torch.cuda.is_available()}
    if workers > 0:
        kw["prefetch_factor"] = 4 if is_cuda(device) else 2
        kw["persistent_workers"] = False
    return kw


def to_device(x: torch.Tensor, device: str) -> torch.Tensor:
    """Copy a (pinned) batch to ``device`` without blocking the host, in channels-last layout (cuDNN's and
    oneDNN's fast convolution layout)."""
    import torch

    return x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)


def autocast(device: str, precision: str) -> Any:
    """bf16 autocast context when asked for (CPU autocast too, which is how the tests check the tolerance)."""
    import torch

    enabled = resolve_precision(precision, device) == "bf16"
    return torch.autocast(device_type="cuda" if is_cuda(device) else "cpu", dtype=torch.bfloat16, enabled=enabled)


def run_module(model: nn.Module, x: torch.Tensor, device: str, precision: str = "auto") -> tuple[torch.Tensor, ...]:
    """Forward a batch through a torch module on ``device``; outputs come back as fp32 CPU tensors."""
    import torch

    with torch.inference_mode(), autocast(device, precision):
        out = model(to_device(x, device))
    out = out if isinstance(out, (tuple, list)) else (out,)
    return tuple(t.float().cpu() for t in out)
