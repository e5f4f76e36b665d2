"""deepcrl: deep contrastive RL teachers, distilled into shallow students, exported to ONNX and served."""

import os as _os

# MuJoCo picks its OpenGL backend once, when first imported (Brax imports it): without a display, offscreen EGL
# is what `deepcrl eval --render x.mp4` needs (deepcrl.envs.video falls back to OSMesa when EGL is missing).
if not _os.environ.get("DISPLAY") and not _os.environ.get("WAYLAND_DISPLAY"):
    _os.environ.setdefault("MUJOCO_GL", "egl")

from deepcrl.errors import DeepcrlError  # noqa: E402

__version__ = "0.1.0"

__all__ = ["DeepcrlError", "__version__"]
