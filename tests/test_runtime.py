"""runtime.py: eager-PyTorch CPU preparation keeps outputs; BatchNorm folding refuses what it cannot prove; OnceEach
makes a lazily opened object once, whichever threads ask first."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from dogbreed.export import parity_inputs
from dogbreed.models import default_classifier
from dogbreed.runtime import OnceEach, fold_batchnorm, optimize_for_cpu


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


def test_cpu_name_names_the_model_and_the_bf16_instruction_sets(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import dogbreed.runtime as rt

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Example CPU 9000\nflags\t\t: fpu avx512f avx512_bf16 amx_tile\n")
    real_path = rt.Path
    monkeypatch.setattr(rt, "Path", lambda p: info if p == "/proc/cpuinfo" else real_path(p))
    assert rt.cpu_name() == "Example CPU 9000 (avx512_bf16)"
    info.write_text("model name\t: Plain CPU\nflags\t\t: fpu amx_bf16 avx512_bf16\n")
    assert rt.cpu_name() == "Plain CPU (avx512_bf16, amx_bf16)"
    info.unlink()
    assert rt.cpu_name()  # no /proc/cpuinfo: whatever the platform says, never an error


def test_once_each_makes_each_key_once_when_threads_ask_together() -> None:
    calls: list[str] = []
    start = threading.Barrier(4)

    def make(key: str) -> object:
        calls.append(key)
        time.sleep(0.05)  # slow, like opening a session: the other threads arrive while it is being made
        return object()

    once = OnceEach(make)
    got: list[tuple[str, object]] = []

    def ask(key: str) -> None:
        start.wait()
        got.append((key, once(key)))

    threads = [threading.Thread(target=ask, args=(k,)) for k in ("a", "a", "a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(calls) == ["a", "b"]
    assert len({id(obj) for key, obj in got if key == "a"}) == 1
    assert once("b") is dict(got)["b"]
