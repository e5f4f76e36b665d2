"""Rendering: Brax envs to an HTML replay, maze envs to a PNG; a clear error for any other suffix."""

from __future__ import annotations

import base64
import json
import re
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deepcrl import envs
from deepcrl.envs.render import render, supported_suffixes
from deepcrl.errors import DeepcrlError


def test_point_maze_png_shows_walls_path_start_and_goal(point_maze, tmp_path):
    env = point_maze

    @jax.jit
    def rollout(key):
        state = env.reset(key)

        def body(s, k):
            s = env.step(s, jax.random.uniform(k, (2,), minval=-1, maxval=1))
            return s, s

        return jax.lax.scan(body, state, jax.random.split(key, 30))[1]

    states = rollout(jax.random.PRNGKey(0))  # one episode, stacked along time
    path = render(env, states, tmp_path / "episode.png")
    import matplotlib.image

    image = matplotlib.image.imread(path)[..., :3]
    assert image.shape[0] > 100 and image.shape[1] > 100

    def share(rgb):
        return np.mean(np.all(np.abs(image - np.array(rgb)) < 0.06, axis=-1))

    assert share([0.25, 0.25, 0.25]) > 0.1  # walls (dark grey) fill much of the U-maze
    assert share([0.172, 0.627, 0.172]) > 0  # the start marker (tab:green)
    assert share([0.839, 0.153, 0.157]) > 0  # the goal marker (tab:red)
    assert share([0.122, 0.467, 0.706]) > 0  # the path (tab:blue)

    # a (T, 2) array of positions with an explicit goal works too
    positions = np.asarray(states.pipeline_state)
    assert render(env, positions, tmp_path / "positions.png", goal=states.info["goal"][0]).stat().st_size > 1000


def test_brax_env_html_replay(reacher_rollout, tmp_path):
    env, _, states = reacher_rollout
    states = jax.device_get(states)  # numpy: slicing device arrays leaf by leaf is slow
    one_env = jax.tree.map(lambda x: x[:, 0], states.pipeline_state)  # (T, ...) of the first env
    path = render(env, one_env, tmp_path / "out" / "reacher.html")
    assert _replay_frames(path)["x"] == 8  # every step of the episode is in the replay
    # a list of env States renders the same way
    listed = [jax.tree.map(lambda x, t=t: x[t, 0], states) for t in range(3)]
    assert _replay_frames(render(env, listed, tmp_path / "listed.html"))["x"] == 3


def _replay_frames(path) -> dict:
    """Decode the system and states Brax's viewer page embeds (base64 of zlib of JSON)."""
    text = path.read_text()
    assert "<!doctype html>" in text.lower()
    payload = re.search(r'var system = "([A-Za-z0-9+/=]+)";', text).group(1)
    system = json.loads(zlib.decompress(base64.b64decode(payload)))
    geoms = [g["name"] for link in system["geoms"].values() for g in link]
    assert "Capsule" in geoms and "Sphere" in geoms  # the reacher's links and fingertip/target
    return {k: len(v) for k, v in system["states"].items()}


def test_unsupported_suffix_is_one_clear_error(point_maze, tmp_path):
    assert supported_suffixes(point_maze) == (".png",)
    with pytest.raises(DeepcrlError, match=r"cannot render point_maze to 'out.html': use a file ending in \.png"):
        render(point_maze, jnp.zeros((3, 2)), tmp_path / "out.html")
    reacher = envs.make("reacher")
    assert supported_suffixes(reacher) == (".html",)
    with pytest.raises(DeepcrlError, match=r"use a file ending in \.html"):
        render(reacher, [], tmp_path / "out.gif")
    assert supported_suffixes(envs.make("ant_u_maze")) == (".html", ".png")
    with pytest.raises(DeepcrlError, match="empty trajectory"):
        render(point_maze, [], tmp_path / "empty.png")
    assert not list(tmp_path.iterdir())  # nothing half-written
