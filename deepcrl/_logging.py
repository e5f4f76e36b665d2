"""Quiet the chatty libraries (absl, orbax, jax2onnx) while deepcrl's own verbs run, and only then.

`quiet()` is a context manager: the levels of the named loggers, absl's verbosity and the warning filters are
restored on exit, so a program that imports deepcrl as a library keeps its own logging and warnings.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator

NOISY_LOGGERS = ("absl", "orbax", "jax._src.xla_bridge", "jax2onnx", "etils", "onnxruntime")


@contextlib.contextmanager
def quiet(level: int = logging.ERROR) -> Iterator[None]:
    """Within the block, the noisy libraries log at `level` and above and their warnings are hidden."""
    tf_level = os.environ.get("TF_CPP_MIN_LOG_LEVEL")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # read by TensorFlow at import; harmless otherwise
    from absl import logging as absl_logging  # a dependency of optax, orbax and brax

    saved = {name: logging.getLogger(name).level for name in NOISY_LOGGERS}
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(level)
    absl_saved = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.ERROR)
    try:
        with warnings.catch_warnings():
            for module in ("orbax", "jax2onnx", "flax", "brax", "mujoco", "etils", "tyro"):
                warnings.filterwarnings("ignore", module=module)
            warnings.filterwarnings("ignore", category=DeprecationWarning, module="deepcrl")
            yield
    finally:
        for name, lvl in saved.items():
            logging.getLogger(name).setLevel(lvl)
        absl_logging.set_verbosity(absl_saved)
        if tf_level is None:
            os.environ.pop("TF_CPP_MIN_LOG_LEVEL", None)

