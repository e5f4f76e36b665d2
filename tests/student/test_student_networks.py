"""Student networks: shapes, bounds, parameter/FLOP counts, artifact round trip and ONNX export."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deepcrl.student import networks as N

SIZES = {"obs_size": 2, "goal_size": 2, "action_size": 2}


def _inputs(n=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 2)).astype(np.float32) * 3, rng.normal(size=(n, 2)).astype(np.float32) * 3


def test_actor_shapes_bounds_and_counts():
    actor = N.actor_from_config({**SIZES, "hidden": [32, 16]})
    obs, goal = _inputs()
    action = actor.act(obs, goal)
    assert action.shape == (5, 2)
    assert np.all(np.abs(action) <= 1.0)
    mean, log_std = actor(jnp.concatenate([obs, goal], -1))
    assert mean.shape == (5, 2) and log_std is None
    # (4*32 + 32) + (32*16 + 16) + (16*2 + 2)
    assert N.param_count(actor) == 160 + 528 + 34
    assert N.matmul_flops(actor) == 2 * (4 * 32 + 32 * 16 + 16 * 2)


def test_default_hidden_and_options():
    actor = N.actor_from_config({**SIZES, "layer_norm": True, "gaussian": True}, seed=3)
    assert actor.torso.out_size == 256 and actor.torso.num_layers == 2
    _, log_std = actor(jnp.full((3, 4), 1e3))
    assert log_std.shape == (3, 2)
    from deepcrl.teacher.networks import LOG_STD_MAX, LOG_STD_MIN  # one definition for teacher and student

    assert np.all(log_std >= LOG_STD_MIN) and np.all(log_std <= LOG_STD_MAX)


def test_seed_changes_parameters():
    a = N.actor_from_config({**SIZES, "hidden": [8]}, seed=0)
    b = N.actor_from_config({**SIZES, "hidden": [8]}, seed=1)
    obs, goal = _inputs()
    assert not np.allclose(a.act(obs, goal), b.act(obs, goal))


def test_critic_energy_is_negative_distance():
    critic = N.critic_from_config({**SIZES, "hidden": [16], "repr_size": 8})
    obs, goal = _inputs()
    action = np.zeros((5, 2), np.float32)
    phi, psi = critic.phi(obs, action), critic.psi(goal)
    assert phi.shape == psi.shape == (5, 8)
    np.testing.assert_allclose(critic.energy(obs, action, goal), -np.linalg.norm(phi - psi, axis=-1), rtol=1e-5)


def test_critic_energy_gradient_is_finite_at_distance_zero():
    from flax import nnx

    critic = N.critic_from_config({**SIZES, "hidden": [16], "repr_size": 8})
    for layer in (critic.sa_head, critic.g_head):  # zero heads: phi = psi = 0, distance 0 for every row
        layer.kernel.value = jnp.zeros_like(layer.kernel.value)
    obs, goal = _inputs()
    action = np.zeros((5, 2), np.float32)
    graphdef, params = nnx.split(critic)

    def energy(p):
        return nnx.merge(graphdef, p).energy(obs, action, goal).sum()

    assert np.all(np.asarray(critic.energy(obs, action, goal)) == 0.0)
    grads = jax.grad(energy)(params)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


def test_student_artifact_round_trip(tmp_path):
    from deepcrl.policy import init_artifact, load_policy

    manifest = init_artifact(tmp_path / "s", "student", "point_maze", {"hidden": [16, 16], "layer_norm": True},
                             seed=4)
    policy = load_policy(tmp_path / "s", kind="student")
    fresh = N.actor_from_config(manifest.network["actor"], seed=4)
    obs, goal = _inputs()
    np.testing.assert_allclose(policy(obs, goal), fresh.act(obs, goal), atol=1e-6)


@pytest.mark.slow  # importing jax2onnx alone takes ~10 s; the export stage tests a student's export by default
def test_actor_exports_to_onnx_with_parity():
    pytest.importorskip("jax2onnx")
    import onnxruntime as ort
    from jax2onnx import to_onnx

    actor = N.actor_from_config({**SIZES, "hidden": [32, 32], "layer_norm": True}, seed=2)
    model = to_onnx(lambda observation, goal: actor.act(observation, goal), [("B", 2), ("B", 2)],
                    return_mode="proto")
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    obs, goal = _inputs(n=7)
    names = [i.name for i in sess.get_inputs()]
    out = sess.run(None, {names[0]: obs, names[1]: goal})[0]
    np.testing.assert_allclose(out, actor.act(obs, goal), atol=1e-5)
    assert not any("Loop" == node.op_type for node in model.graph.node)  # a flat graph: nothing to unroll


def _normalising_config():
    # inputs on scales from 1e-2 to 1e1, as reacher's fingertip offsets and joint velocities are
    return {**SIZES, "hidden": [16, 16], "input_mean": [0.1, -2.0, 0.0, 5.0], "input_std": [0.01, 10.0, 1.0, 0.5]}


def test_input_standardisation_is_applied_and_survives_the_artifact(tmp_path):
    from deepcrl.policy import init_artifact, load_policy

    cfg = _normalising_config()
    actor = N.actor_from_config(cfg, seed=3)
    plain = N.actor_from_config({k: v for k, v in cfg.items() if not k.startswith("input_")}, seed=3)
    x = np.array([[0.11, 8.0, 1.0, 4.5]], np.float32)
    standard = (x - np.array(cfg["input_mean"])) / np.array(cfg["input_std"])
    np.testing.assert_allclose(actor(jnp.asarray(x))[0], plain(jnp.asarray(standard, jnp.float32))[0], atol=1e-5)
    manifest = init_artifact(tmp_path / "s", "student", "point_maze", {k: v for k, v in cfg.items() if k not in SIZES},
                             seed=3)
    assert manifest.network["actor"]["input_std"] == cfg["input_std"]
    obs, goal = _inputs()
    np.testing.assert_allclose(load_policy(tmp_path / "s", kind="student")(obs, goal),
                               N.actor_from_config(manifest.network["actor"], seed=3).act(obs, goal), atol=1e-6)
    with pytest.raises(ValueError, match="4 entries"):
        N.actor_from_config({**cfg, "input_std": [1.0]})


@pytest.mark.slow  # jax2onnx import
def test_input_standardisation_is_inside_the_onnx_graph():
    pytest.importorskip("jax2onnx")
    import onnxruntime as ort
    from jax2onnx import to_onnx

    actor = N.actor_from_config(_normalising_config(), seed=5)
    model = to_onnx(lambda observation, goal: actor.act(observation, goal), [("B", 2), ("B", 2)],
                    return_mode="proto")
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    obs, goal = _inputs(n=9)
    names = [i.name for i in sess.get_inputs()]
    np.testing.assert_allclose(sess.run(None, {names[0]: obs, names[1]: goal})[0], actor.act(obs, goal), atol=1e-5)
