"""Whether deepcrl runs on a GPU: the one place that asks (`deepcrl train`'s defaults differ on a GPU).

`has_gpu` asks JAX (which starts its backend); `gpu_likely` guesses for a process about to be started (the
sweep plans its cells' defaults while keeping its own process off the GPU).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

CUDA_PLUGINS = ("jax_cuda12_plugin", "jax_cuda13_plugin")


def has_gpu(devices: Iterable[Any] | None = None) -> bool:
    """Whether any of `devices` (default: this process's local JAX devices) is a GPU."""
    if devices is None:
        import jax

        devices = jax.local_devices()
    return any(d.platform == "gpu" for d in devices)


def gpu_likely() -> bool:
    """Whether a JAX process started now will see a GPU, guessed without starting JAX's backend: a CUDA plugin
    is installed, an NVIDIA driver is present and JAX_PLATFORMS does not rule the GPU out."""
    if os.environ.get("JAX_PLATFORMS", "").strip().lower() in ("cpu", "tpu"):
        return False
    plugin = any(importlib.util.find_spec(name) for name in CUDA_PLUGINS)
    return plugin and Path("/dev/nvidiactl").exists()
