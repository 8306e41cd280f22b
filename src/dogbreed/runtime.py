"""How this process runs models: thread count, device choice, and CPU inference preparation for eager PyTorch.

The ONNX runtime (export.py) and the torch runtime (predict.py, train/) read their settings from here, so both are
tuned in one place. torch is imported only by the functions that use it, so choosing a device or a thread
count for ONNX Runtime does not load it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Hashable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Generic, TypeVar

from .errors import ConfigError

if TYPE_CHECKING:
    import torch
    from torch import nn


@contextlib.contextmanager
def ctrl_c_held() -> Iterator[None]:
    """Inside the block a Ctrl-C is noted, not raised, and raised as the block is left: work that must finish as a
    whole (a stop being cleaned up, its threads told to stop and waited for; a checkpoint's files) is not cut short.
    Only the main thread gets Ctrl-C and may set its handler; and only Python's own handler is stood in for (a
    process that ignores SIGINT, as a background job does, or one with its own handler, a server's, keeps it);
    elsewhere the block runs as it is."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield
        return
    caught: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, _frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if caught:
            raise KeyboardInterrupt


def trim_heap() -> bool:
    """Give the free pages of every glibc heap back to the OS (``malloc_trim(0)``); False without glibc.

    For work that allocates hundreds of MB in pieces below the mmap threshold and is run on many threads, such as a
    Grad-CAM backward pass in the server's worker threads: freed, those pieces stay in the heap (arena) of the
    thread that ran it, one heap per thread up to 8 per core. Measured on 2 cores: 48 heat-maps on 16 threads took
    RSS from 281 MB to 3.86 GB; with this after each, 341 MB (MALLOC_ARENA_MAX=1 gave 743 MB). It takes a few ms.
    """
    import ctypes
    import ctypes.util

    try:
        return bool(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0))
    except (OSError, AttributeError):
        return False


K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class OnceEach(Generic[K, V]):
    """``make`` cached per key and called once for it, also when several threads ask for it first: sessions and
    models opened lazily by code that lanes (`inference.executors.lanes`) run on two threads at once (each such
    object costs tens of MB and up to a second to open, so opening one twice is waste, not just a race). Give it a
    ``make`` that does not hold its owner (a function of the key and plain values), so the owner is freed as soon as
    it is dropped, not at the next garbage collection."""

    def __init__(self, make: Callable[[K], V]):
        self.make = make
        self.made: dict[K, V] = {}
        self._lock = threading.Lock()

    def __call__(self, key: K) -> V:
        with self._lock:
            if key not in self.made:
                self.made[key] = self.make(key)
            return self.made[key]

    def clear(self) -> None:
        with self._lock:
            self.made.clear()

    def drop(self, stale: Callable[[K], bool]) -> None:
        """Forget the keys ``stale`` names, so what was made for them can be freed once its last user drops it."""
        with self._lock:
            for key in [k for k in self.made if stale(k)]:
                del self.made[key]


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; an explicit ``cuda`` without one is an error."""
    if device == "cpu":
        return device
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda asked for, but torch sees no CUDA device")
    return device


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


def cpu_name() -> str:
    """The CPU's model name and the instruction sets the bf16 runtime depends on, for benchmark records: the same
    2-core figures differ by 1.5-2x between a CPU with AMX and one with AVX512-BF16 only."""
    import platform

    model, flags = platform.processor() or "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    extra = [f for f in ("avx512_bf16", "amx_bf16") if f in flags]
    return f"{model} ({', '.join(extra)})" if extra else model


def fold_batchnorm(model: nn.Module, check: torch.Tensor | None = None, atol: float = 1e-3) -> int:
    """Fold eval-mode BatchNorm2d into the Conv2d registered just before it, in place; returns how many were folded.

    Registration order is only a hint that the BN follows the conv in ``forward`` (true for EfficientNet-Lite and
    ResNet, not guaranteed for arbitrary timm models), so with ``check`` the outputs before and after are compared
    and the original layers are put back if they differ by more than ``atol``.
    """
    from torch import nn

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
    with eval_mode(model):
        return _fold_pairs(model, pairs, check, atol)


def _fold_pairs(model: nn.Module, pairs: list[tuple[nn.Module, str, nn.Conv2d, nn.BatchNorm2d]],
                check: torch.Tensor | None, atol: float) -> int:
    import torch
    from torch import nn

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
    import torch

    with torch.no_grad():
        out = model(x)
    return [o.float() for o in (out if isinstance(out, (tuple, list)) else (out,))]


def optimize_for_cpu(model: nn.Module, size: int | None = None) -> nn.Module:
    """Eager-PyTorch CPU inference: BatchNorm folded into convs, weights channels-last, no autograd. In place.

    channels-last lets oneDNN run convolutions without layout reorders; folding removes one elementwise pass
    per conv. Both keep outputs within float rounding (checked on a random batch).
    """
    import torch

    model.eval().requires_grad_(False)
    size = size or getattr(getattr(model, "preprocess_cfg", None), "size", None)
    check = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0)) if size else None
    fold_batchnorm(model, check)
    return model.to(memory_format=torch.channels_last)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """eval() for the duration, then every module's own flag back: ``model.train(was_training)`` would switch
    all submodules, e.g. a pretrained backbone's BatchNorm inside a top-level module left in training mode."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, f in flags:
            m.training = f
