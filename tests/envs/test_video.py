"""Video of a body: MuJoCo's offscreen renderer draws reacher and ant with the goal marked; mp4 and gif on disk.

The frames come from hand-set joint positions (the renderer only reads ``q``), so no MJX step is compiled.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from deepcrl import envs
from deepcrl.envs.render import render, supported_suffixes
from deepcrl.envs.video import render_frames, write_video
from deepcrl.errors import DeepcrlError


def _goal_pixels(frame: np.ndarray) -> np.ndarray:
    """Mask of the goal marker's colour (a strong red: R well above G and B)."""
    r, g, b = (frame[..., i].astype(int) for i in range(3))
    return (r > 120) & (r - g > 70) & (r - b > 70)


def _states(env, qs):
    return [SimpleNamespace(q=np.asarray(q, np.float64)) for q in qs]


@pytest.fixture(scope="module")
def reacher():
    return envs.make("reacher")


@pytest.fixture(scope="module")
def ant():
    return envs.make("ant")


def _reacher_qs(env, goal):
    q0 = np.asarray(env.sys.init_q, np.float64).copy()
    q0[2:] = goal  # the model's own target ball, where reset puts it
    q1 = q0.copy()
    q1[:2] = (1.2, -0.8)  # both joints turned
    return [q0, q1]


def test_reacher_frames_change_and_show_the_goal_where_it_projects(reacher):
    goal = np.array([0.12, 0.0])  # right of centre; the top-down camera has +x to the right
    states = _states(reacher, _reacher_qs(reacher, goal))
    frames = render_frames(reacher, states, goal, 64, 64)
    assert frames.shape == (2, 64, 64, 3) and frames.dtype == np.uint8
    assert np.abs(frames[0].astype(int) - frames[1].astype(int)).sum() > 0  # the arm moved
    bare = render_frames(reacher, states, goal, 64, 64, draw_goal=False)
    marked = _goal_pixels(frames[0])
    assert marked.sum() >= 4 and _goal_pixels(bare[0]).sum() < marked.sum() // 4
    cols = np.nonzero(marked)[1]
    assert cols.mean() > 40  # the goal is drawn right of the image's centre, where (0.12, 0) projects


def test_ant_frames_change_and_show_the_goal(ant):
    goal = np.array([3.0, 0.0])
    q0 = np.asarray(ant.sys.init_q, np.float64).copy()
    q1 = q0.copy()
    q1[7:] = 0.5  # every leg joint bent
    q1[:2] = (1.0, 0.5)  # and the torso moved towards the goal
    states = _states(ant, [q0, q1])
    frames = render_frames(ant, states, goal, 64, 64)
    bare = render_frames(ant, states, goal, 64, 64, draw_goal=False)
    assert frames.shape == (2, 64, 64, 3)
    assert np.abs(frames[0].astype(int) - frames[1].astype(int)).sum() > 0
    assert _goal_pixels(frames[0]).sum() >= 4 and _goal_pixels(bare[0]).sum() == 0
    assert np.nonzero(_goal_pixels(frames[0]))[1].mean() > 32  # the goal lies to the body's right (+x)


def test_mp4_and_gif_files_read_back_with_their_frames(reacher, tmp_path):
    imageio = pytest.importorskip("imageio.v2")
    pytest.importorskip("imageio_ffmpeg")
    goal = np.array([0.0, 0.1])
    qs = _reacher_qs(reacher, goal)
    qs = [qs[0] + np.r_[0.3 * i, 0.0, 0.0, 0.0] for i in range(5)]
    frames = render_frames(reacher, _states(reacher, qs), goal, 64, 48)
    mp4 = write_video(frames, tmp_path / "episode.mp4", fps=50)
    back = np.stack(imageio.mimread(mp4, format="FFMPEG"))
    assert back.shape == (5, 48, 64, 3)
    assert np.abs(back.astype(int) - frames.astype(int)).mean() < 12  # lossy, but the same pictures
    gif = write_video(frames, tmp_path / "episode.gif", fps=50)
    from PIL import Image, ImageSequence

    with Image.open(gif) as im:
        assert im.size == (64, 48) and len(list(ImageSequence.Iterator(im))) == 5


def test_render_writes_video_for_bodies_and_refuses_a_bad_suffix(reacher, tmp_path):
    assert {".mp4", ".gif", ".html"} <= set(supported_suffixes(reacher))
    assert ".mp4" not in supported_suffixes(envs.make("point_maze"))
    goal = np.array([0.1, 0.1])
    path = render(reacher, _states(reacher, _reacher_qs(reacher, goal)), tmp_path / "a.gif", goal=goal, size=(32, 32))
    assert path.stat().st_size > 0
    with pytest.raises(DeepcrlError, match=r"\.mp4"):
        render(reacher, _states(reacher, _reacher_qs(reacher, goal)), tmp_path / "a.avi", goal=goal)


def test_batched_states_are_refused_in_one_sentence(reacher):
    with pytest.raises(DeepcrlError, match="batch axis"):
        render_frames(reacher, [SimpleNamespace(q=np.zeros((2, 4)))], None, 32, 32)
