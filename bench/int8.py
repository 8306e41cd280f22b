"""int8 quantization: an experiment for bench/speed.py --int8, not a Predictor runtime, so it lives beside the bench.

Static QDQ int8 Lite0 kept top-1 on the 275 imagenet-val-dogs photos (76.0% fp32 -> 76.7% int8) but changed 4.4% of
top-1 answers, for 1.05-1.5x speed on a noisy 2-core machine; dynamic int8 was worse on both counts (81% agreement,
~10x slower: no int8 depthwise conv).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.calibrate import CalibrationDataReader


def quantize_int8(fp32_path: str | Path, out: str | Path, calibration: Sequence[np.ndarray]) -> Path:
    """Static QDQ int8 quantization (per-channel int8 weights, uint8 activations) calibrated on image batches."""
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
