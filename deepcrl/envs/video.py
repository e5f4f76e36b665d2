"""Video of a body: an episode of an MJX env drawn by MuJoCo's own renderer, written as ``.mp4`` or ``.gif``.

Each frame copies one MJX state (``q``, ``qd``) into a CPU `mujoco.MjData`, runs `mujoco.mj_kinematics`, and
draws it with `mujoco.Renderer` offscreen. The goal is a marker added to the scene after `update_scene` (a red
disc of the success radius on the ground with a thin pole above it, so it is seen from any camera). The camera
looks from above at the middle of the body and the goal (reacher: its whole arena), so both stay in frame;
in the ant mazes it looks down steeply enough that the walls show.

Offscreen rendering needs an OpenGL context without a display: EGL (Debian/Ubuntu ``libegl1 libegl-mesa0
libgl1-mesa-dri``) or, failing that, OSMesa (``libosmesa6``). ``MUJOCO_GL`` is set before MuJoCo's GL module is
first loaded: EGL if its library is found, else OSMesa; a value the user already set is kept. mp4 is written
through imageio + imageio-ffmpeg (which ships its own ffmpeg binary), gif through Pillow.
"""

from __future__ import annotations

import ctypes.util
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from deepcrl.errors import DeepcrlError

VIDEO_SUFFIXES = (".mp4", ".gif")
_GOAL_RGBA = np.array([1.0, 0.1, 0.1, 0.8], np.float32)  # the marker's colour (tests look for it)


def gl_backend() -> str:
    """Choose (and set) ``MUJOCO_GL`` for offscreen rendering: the user's choice, else egl, else osmesa.

    Raises:
        DeepcrlError: neither EGL nor OSMesa is installed.
    """
    chosen = os.environ.get("MUJOCO_GL", "").lower()
    # deepcrl/__init__ sets egl when there is no display; keep any other choice the user made
    if chosen and not (chosen == "egl" and not ctypes.util.find_library("EGL")):
        return chosen
    for backend, lib in (("egl", "EGL"), ("osmesa", "OSMesa")):
        if ctypes.util.find_library(lib):
            os.environ["MUJOCO_GL"] = backend
            os.environ["PYOPENGL_PLATFORM"] = backend
            return backend
    raise DeepcrlError("rendering video needs an offscreen OpenGL library and neither EGL nor OSMesa is installed: "
                       "`apt-get install libegl1 libegl-mesa0 libgl1-mesa-dri` (or `libosmesa6`), or write .html.")


def _use_offscreen_context(backend: str) -> None:
    """Make `mujoco.Renderer` open a `backend` context even if MuJoCo's GL module loaded before ``MUJOCO_GL``
    was set (it reads the variable once, on import, and picks GLFW, which needs a display)."""
    if backend not in ("egl", "osmesa"):
        return
    import importlib

    from mujoco.rendering.classic import gl_context

    current = getattr(gl_context, "GLContext", None)
    if current is None or f"mujoco.{backend}" not in getattr(current, "__module__", ""):
        gl_context.GLContext = importlib.import_module(f"mujoco.{backend}").GLContext


class BodyRenderer:
    """Draws states of a Brax/MJX env with `mujoco.Renderer`.

    Args:
        env: a deepcrl MJX env (its ``sys.mj_model`` is drawn).
        width, height: frame size in pixels (rounded up to even numbers, which H.264 needs).
    """

    def __init__(self, env, width: int = 480, height: int = 360):
        _use_offscreen_context(gl_backend())
        import mujoco

        self._mujoco = mujoco
        self.env = env
        self.model = env.sys.mj_model
        self.width, self.height = int(width) + int(width) % 2, int(height) + int(height) % 2
        # the offscreen buffer must be at least the frame size (the shipped models keep MuJoCo's 640x480)
        self.model.vis.global_.offwidth = max(int(self.model.vis.global_.offwidth), self.width)
        self.model.vis.global_.offheight = max(int(self.model.vis.global_.offheight), self.height)
        self.data = mujoco.MjData(self.model)
        try:
            self.renderer = mujoco.Renderer(self.model, self.height, self.width)
        except Exception as err:  # no GL context: say what to install
            raise DeepcrlError(f"MuJoCo could not open an offscreen OpenGL context (MUJOCO_GL="
                               f"{os.environ.get('MUJOCO_GL')}): {err}. Install EGL "
                               "(`apt-get install libegl1 libegl-mesa0 libgl1-mesa-dri`) or OSMesa (`libosmesa6`).") from err
        self.camera = mujoco.MjvCamera()
        self.camera.type = mujoco.mjtCamera.mjCAMERA_FREE
        spec = getattr(env, "goal_spec", None)
        self.goal_radius = float(getattr(spec, "success_radius", 0.05))
        self.is_reacher = type(env).__name__ == "Reacher"
        self.is_maze = hasattr(env, "maze")

    def close(self) -> None:
        self.renderer.close()

    def frame(self, q: np.ndarray, goal: np.ndarray | None, span: float | None = None,
              draw_goal: bool = True) -> np.ndarray:
        """One ``(height, width, 3)`` uint8 frame of the body at joint positions `q` with the goal marked.

        `span` is the distance the camera must cover (default: this frame's body-to-goal distance).
        """
        mujoco = self._mujoco
        self.data.qpos[:] = np.asarray(q, np.float64)
        mujoco.mj_kinematics(self.model, self.data)
        goal = None if goal is None else np.asarray(goal, np.float64).ravel()
        self._aim(goal, span)
        self.renderer.update_scene(self.data, camera=self.camera)
        if goal is not None and draw_goal:
            self._add_goal(goal)
        return self.renderer.render().copy()

    def _aim(self, goal: np.ndarray | None, span: float | None) -> None:
        cam = self.camera
        if self.is_reacher:  # the whole arena, from above
            cam.lookat[:] = (0.0, 0.0, 0.0)
            cam.distance, cam.elevation, cam.azimuth = 0.75, -90.0, 90.0
            return
        torso = np.array(self.data.xpos[1], np.float64)
        target = torso if goal is None else np.array([goal[0], goal[1], 0.0])
        cam.lookat[:] = (torso + target) / 2
        cam.lookat[2] = 0.3
        reach = span if span is not None else float(np.linalg.norm(target[:2] - torso[:2]))
        cam.distance = max(4.0, 1.3 * reach + 2.5)
        cam.elevation = -65.0 if self.is_maze else -40.0
        cam.azimuth = 90.0

    def _add_goal(self, goal: np.ndarray) -> None:
        mujoco, scene = self._mujoco, self.renderer.scene
        xy = goal[:2]
        z = 0.012 if self.is_reacher else 0.02
        pole = 0.05 if self.is_reacher else 1.0
        markers = [  # (type, size, pos)
            (mujoco.mjtGeom.mjGEOM_CYLINDER, [self.goal_radius, self.goal_radius, 0.002 if self.is_reacher else 0.01],
             [xy[0], xy[1], z]),
            (mujoco.mjtGeom.mjGEOM_CYLINDER, [0.004 if self.is_reacher else 0.04] * 2 + [pole / 2],
             [xy[0], xy[1], z + pole / 2]),
        ]
        for kind, size, pos in markers:
            if scene.ngeom >= scene.maxgeom:
                return
            mujoco.mjv_initGeom(scene.geoms[scene.ngeom], kind, np.asarray(size, np.float64),
                                np.asarray(pos, np.float64), np.eye(3).ravel(), _GOAL_RGBA)
            scene.geoms[scene.ngeom].emission = 0.6  # lit from within: the same red on a dark or a bright floor
            scene.ngeom += 1


def has_body(env) -> bool:
    """Whether `env` is drawn by MuJoCo (an MJX env with an ``mj_model``)."""
    return getattr(getattr(env, "sys", None), "mj_model", None) is not None


def render_frames(env, pipeline_states: Sequence[Any], goal: Any, width: int = 480, height: int = 360,
                  draw_goal: bool = True) -> np.ndarray:
    """``(T, height, width, 3)`` uint8 frames of an episode (one per state; the goal marked on each)."""
    qs = [np.asarray(ps.q, np.float64) for ps in pipeline_states]
    if qs and qs[0].ndim != 1:
        raise DeepcrlError(f"cannot render states with a batch axis (q has shape {qs[0].shape}): pass one "
                           "env's episode.")
    goal = None if goal is None else np.asarray(goal, np.float64).ravel()
    span = None
    if goal is not None and qs and not type(env).__name__ == "Reacher":  # one camera distance for the episode
        span = max(float(np.linalg.norm(goal[:2] - q[:2])) for q in qs)
    renderer = BodyRenderer(env, width, height)
    try:
        return np.stack([renderer.frame(q, goal, span, draw_goal) for q in qs])
    finally:
        renderer.close()


def write_video(frames: np.ndarray, path: str | Path, fps: float) -> Path:
    """Write uint8 ``(T, H, W, 3)`` frames to ``.mp4`` (imageio-ffmpeg, H.264) or ``.gif`` (Pillow)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".gif":
        from PIL import Image

        images = [Image.fromarray(f) for f in frames]
        # gif frame times are in 10 ms units; 20 ms is the shortest most viewers honour
        duration = max(20, int(round(1000 / fps / 10)) * 10)
        images[0].save(path, save_all=True, append_images=images[1:], duration=duration, loop=0)
        return path
    if suffix != ".mp4":
        raise DeepcrlError(f"cannot write video to {path.name!r}: use a file ending in .mp4 or .gif.")
    try:
        import imageio.v2 as imageio
        import imageio_ffmpeg  # noqa: F401  (ships the ffmpeg binary imageio's FFMPEG plugin runs)
    except ImportError as err:
        raise DeepcrlError(f"writing .mp4 needs imageio and imageio-ffmpeg ({err.name} is missing): "
                           "`pip install 'deepcrl[render]'`, or write .gif.") from err
    imageio.mimwrite(path, list(frames), format="FFMPEG", fps=float(fps), codec="libx264", quality=7,
                     macro_block_size=2, ffmpeg_log_level="error")
    return path
