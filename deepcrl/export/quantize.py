"""int8 quantisation with ONNX Runtime's tools.

Dynamic (the default) stores int8 weights and quantises activations per call; static calibrates the
activation ranges on rollout states, which are the inputs the deployed policy really sees. Only weights that
are graph initialisers are quantised: the stacked block weights of a scanned teacher are sliced inside the
ONNX `Loop` each step, so they stay float32 (its input and head layers are quantised).
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from deepcrl import contract


@contextlib.contextmanager
def _root_log_level(level: int) -> Iterator[None]:
    """The quantiser logs its "run pre-processing" advice on the root logger: quiet it for this call only."""
    root = logging.getLogger()
    before = root.level
    root.setLevel(level)
    try:
        yield
    finally:
        root.setLevel(before)


def quantize_int8(model, mode: str = "dynamic", calibration: tuple[np.ndarray, np.ndarray] | None = None):
    """An int8 copy of a float32 policy `onnx.ModelProto`.

    Args:
        model: the float32 model (inputs observation, goal).
        mode: "dynamic" or "static" (QDQ, per-channel weights, MinMax ranges over `calibration`).
        calibration: (observations, goals) rows for static calibration.
    """
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic,
                                          quantize_static)

    with tempfile.TemporaryDirectory() as tmp, _root_log_level(logging.ERROR):
        src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        onnx.save(model, src)
        if mode == "dynamic":
            quantize_dynamic(src, dst, weight_type=QuantType.QInt8, per_channel=True)
        elif mode == "static":
            if calibration is None:
                raise ValueError("static quantisation needs calibration states")
            obs, goal = calibration

            class Reader(CalibrationDataReader):
                def __init__(self):
                    self._rows = iter(range(0, len(obs), 32))

                def get_next(self):
                    i = next(self._rows, None)
                    return None if i is None else {contract.OBSERVATION: obs[i:i + 32],
                                                     contract.GOAL: goal[i:i + 32]}

            quantize_static(src, dst, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
        else:
            raise ValueError(f"unknown int8 mode {mode!r}")
        return onnx.load(dst)
