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
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # read by TensorFlow at import; harmless otherwise
    saved = {name: logging.getLogger(name).level for name in NOISY_LOGGERS}
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(level)
    absl_logging = _absl_logging()
    absl_saved = absl_logging.get_verbosity() if absl_logging else None
    if absl_logging:
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
        if absl_logging:
            absl_logging.set_verbosity(absl_saved)


def _absl_logging():
    try:
        from absl import logging as absl_logging
    except ImportError:  # absl comes with jax; keep the import optional anyway
        return None
    return absl_logging
