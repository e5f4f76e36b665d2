"""Rendering: Brax envs to a self-contained HTML replay, maze envs to a PNG; a clear error for any other suffix."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

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


@pytest.mark.slow  # the reacher_rollout fixture compiles MJX's reacher (~20 s)
def test_brax_env_html_replay(reacher_rollout, tmp_path):
    env, _, states = reacher_rollout
    states = jax.device_get(states)  # numpy: slicing device arrays leaf by leaf is slow
    one_env = jax.tree.map(lambda x: x[:, 0], states.pipeline_state)  # (T, ...) of the first env
    path = render(env, one_env, tmp_path / "out" / "reacher.html")
    data = _replay(path)
    assert len(data["pos"]) == len(data["rot"]) == 8  # every step of the episode is in the replay
    np.testing.assert_allclose(data["pos"][3], one_env.x.pos[3], atol=1e-5)  # the bodies' world poses
    np.testing.assert_allclose(data["rot"][3], one_env.x.rot[3], atol=1e-5)
    kinds = [g["type"] for g in data["geoms"]]
    assert kinds.count("Capsule") == 7 and kinds.count("Sphere") == 2 and kinds.count("Plane") == 1
    assert {g["link"] for g in data["geoms"]} == {-1, 0, 1, 2}  # world, the two arm links and the target
    assert data["title"] == "reacher" and data["dt"] == pytest.approx(env.dt)
    # a list of env States renders the same way, with the goal taken from info["goal"]
    listed = [jax.tree.map(lambda x, t=t: x[t, 0], states) for t in range(3)]
    data = _replay(render(env, listed, tmp_path / "listed.html"))
    assert len(data["pos"]) == 3
    np.testing.assert_allclose(data["goal"], states.info["goal"][2, 0], atol=1e-5)


@pytest.mark.slow  # the reacher_rollout fixture compiles MJX's reacher (~20 s)
def test_html_replay_needs_no_network(reacher_rollout, tmp_path):
    """Everything the page runs is inside it: no script, style, font or image is fetched from anywhere."""
    env, _, states = reacher_rollout
    one_env = jax.tree.map(lambda x: np.asarray(x)[:, 0], states.pipeline_state)
    text = render(env, one_env, tmp_path / "reacher.html").read_text()
    assert re.search(r"https?:|//cdn|unpkg|jsdelivr", text, re.IGNORECASE) is None
    assert re.search(r"<script[^>]*\bsrc\s*=|<link\b|<img\b|@import|url\(", text, re.IGNORECASE) is None
    assert re.search(r"\bimport\s*[({'\"]|\bfetch\s*\(|XMLHttpRequest", text) is None
    assert text.count("<script") == 2  # the replay data and the viewer, both inline


@pytest.mark.slow  # the reacher_rollout fixture compiles MJX's reacher (~20 s)
def test_batched_states_are_refused(reacher_rollout, tmp_path):
    env, _, states = reacher_rollout
    with pytest.raises(DeepcrlError, match=r"batch axis .* pass one env's episode"):
        render(env, [jax.tree.map(lambda x: np.asarray(x)[0], states.pipeline_state)], tmp_path / "all.html")
    assert not (tmp_path / "all.html").exists()


@pytest.mark.slow
def test_html_replay_draws_frames_in_an_offline_browser(reacher_rollout, tmp_path, missing_prerequisite):
    """Debian's chromium, headless, with no network: the screenshot shows the arena and the arm, not a blank page."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        missing_prerequisite("chromium is not installed (`apt-get install -y chromium`)")
    env, _, states = reacher_rollout
    one_env = jax.tree.map(lambda x: np.asarray(x)[:, 0], states.pipeline_state)
    page = render(env, one_env, tmp_path / "reacher.html")
    shot = tmp_path / "shot.png"
    offline = ["--proxy-server=127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND"]
    command = [browser, "--headless", "--no-sandbox", "--disable-gpu", *offline, f"--screenshot={shot}",
               "--window-size=800,600", page.as_uri()]
    if shutil.which("unshare") and subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0:
        command = ["unshare", "-n", *command]  # a network namespace with no network at all, where allowed
    subprocess.run(command, capture_output=True, timeout=120, check=True)
    image = np.asarray(Image.open(shot).convert("RGB"), np.float64)
    assert image.shape == (600, 800, 3)
    assert image.var(axis=(0, 1)).mean() > 100  # a blank page has variance 0
    background = np.array([70, 80, 92])  # the viewer's #46505c
    assert np.mean(np.abs(image - background).max(axis=-1) > 8) > 0.2  # the floor and the bodies fill the view
    brown = np.array([0.4, 0.33, 0.26]) * 255 * 0.9  # the reacher's links and arena, as the viewer shades them
    assert np.mean(np.abs(image - brown).max(axis=-1) < 12) > 0.005


def _replay(path) -> dict:
    """The replay data the page embeds (a JSON script element)."""
    text = path.read_text()
    assert text.lower().startswith("<!doctype html>")
    found = re.search(r'<script id="replay-data" type="application/json">(.*?)</script>', text, re.DOTALL)
    return json.loads(found.group(1))


def test_unsupported_suffix_is_one_clear_error(point_maze, tmp_path):
    assert supported_suffixes(point_maze) == (".png",)
    with pytest.raises(DeepcrlError, match=r"cannot render point_maze to 'out.html': use a file ending in \.png"):
        render(point_maze, jnp.zeros((3, 2)), tmp_path / "out.html")
    reacher = envs.make("reacher")
    assert supported_suffixes(reacher) == (".mp4", ".gif", ".html")
    with pytest.raises(DeepcrlError, match=r"use a file ending in \.mp4, \.gif or \.html"):
        render(reacher, [], tmp_path / "out.avi")
    assert supported_suffixes(envs.make("ant_u_maze")) == (".mp4", ".gif", ".html", ".png")
    with pytest.raises(DeepcrlError, match="empty trajectory"):
        render(point_maze, [], tmp_path / "empty.png")
    assert not list(tmp_path.iterdir())  # nothing half-written
