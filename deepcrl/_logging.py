"""Quiet the chatty libraries (absl, orbax, jax) so users see deepcrl's own output."""

import logging
import os
import warnings


def quiet() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    for name in ("absl", "orbax", "jax._src.xla_bridge", "jax2onnx", "etils"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:  # absl comes with jax; keep the import optional anyway
        pass
    warnings.filterwarnings("ignore", module="orbax")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
