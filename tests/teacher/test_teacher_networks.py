"""Teacher networks: scanned tower == an independent unrolled reference, options, init, config errors, export."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from deepcrl.errors import DeepcrlError
from deepcrl.teacher import networks as N

CFG = {"obs_size": 5, "goal_size": 3, "action_size": 2, "depth": 12, "width": 16}  # 3 stacked blocks


def _params(module) -> dict:
    return jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(module, nnx.Param)))


def _batch(n: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    f = lambda k: rng.normal(size=(n, k)).astype(np.float32)  # noqa: E731
    return f(CFG["obs_size"]), f(CFG["goal_size"]), np.tanh(f(CFG["action_size"]))


# ---- an independent numpy reference: a plain Python loop over the blocks, float64 ---------------------------

def _np_layer(p: dict, x: np.ndarray) -> np.ndarray:
    h = x @ p["dense"]["kernel"].astype(np.float64) + p["dense"]["bias"]
    mu, var = h.mean(-1, keepdims=True), h.var(-1, keepdims=True)
    h = (h - mu) / np.sqrt(var + 1e-6) * p["norm"]["scale"] + p["norm"]["bias"]
    return h / (1.0 + np.exp(-h))  # swish


def _np_tower(p: dict, x: np.ndarray) -> np.ndarray:
    h = _np_layer(p["input"], x.astype(np.float64))
    layers = p["blocks"]["layers"]
    for b in range(layers[0]["dense"]["kernel"].shape[0]):
        r = h
        for i in range(4):
            r = _np_layer(jax.tree.map(lambda a, b=b: a[b], layers[i]), r)
        h = h + r
    return h


def _np_dense(p: dict, x: np.ndarray) -> np.ndarray:
    return x @ p["kernel"].astype(np.float64) + p["bias"]


@pytest.fixture(scope="module")
def actor():
    return N.actor_from_config(CFG, seed=3)


@pytest.fixture(scope="module")
def critic():
    return N.critic_from_config(CFG, seed=4)


def test_scanned_actor_equals_unrolled_reference(actor):
    obs, goal, _ = _batch()
    p = _params(actor)
    h = _np_tower(p["tower"], np.concatenate([obs, goal], -1))
    mean_ref = _np_dense(p["mean"], h)
    log_std_ref = -5.0 + 3.5 * (np.tanh(_np_dense(p["log_std"], h)) + 1.0)

    mean, log_std = jax.jit(lambda x: actor(x))(np.concatenate([obs, goal], -1))
    np.testing.assert_allclose(mean, mean_ref, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(log_std, log_std_ref, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(actor.act(obs, goal), np.tanh(mean_ref), atol=1e-5)


def test_scanned_critic_equals_unrolled_reference_and_module_unroll(critic):
    obs, goal, act = _batch()
    p = _params(critic)
    phi_ref = _np_dense(p["sa_head"], _np_tower(p["sa_tower"], np.concatenate([obs, act], -1)))
    psi_ref = _np_dense(p["g_head"], _np_tower(p["g_tower"], goal))
    np.testing.assert_allclose(critic.phi(obs, act), phi_ref, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(critic.psi(goal), psi_ref, atol=1e-5, rtol=1e-5)

    # scan=False (the benchmark's unrolled variant) runs the same weights through a Python loop.
    unrolled = N.critic_from_config({**CFG, "scan": False}, seed=4)
    np.testing.assert_allclose(unrolled.phi(obs, act), phi_ref, atol=1e-5, rtol=1e-5)


def test_shapes_ranges_and_energies(actor, critic):
    obs, goal, act = _batch(n=4)
    mean, log_std = actor(np.concatenate([obs, goal], -1) * 1e3)  # huge inputs push log_std to its bounds
    assert mean.shape == log_std.shape == (4, 2) and mean.dtype == jnp.float32
    assert float(log_std.min()) >= -5.0 and float(log_std.max()) <= 2.0
    a = actor.act(obs * 1e3, goal)
    assert a.shape == (4, 2) and float(jnp.abs(a).max()) <= 1.0

    phi, psi = critic.phi(obs, act), critic.psi(goal)
    assert phi.shape == psi.shape == (4, 64)
    dist = np.linalg.norm(np.asarray(phi)[:, None, :] - np.asarray(psi)[None, :, :], axis=-1)
    np.testing.assert_allclose(critic.pairwise(phi, psi), -dist, rtol=1e-5)
    np.testing.assert_allclose(critic.energy(obs, act, goal), -np.diag(dist), rtol=1e-5)


def test_energy_gradient_is_finite_at_zero_distance():
    x = jnp.array([[1.0, 2.0], [0.0, 3.0]])
    g = jax.grad(lambda phi: N.l2_energy(phi, x).sum())(x)
    assert np.all(np.isfinite(g)) and np.all(g == 0.0)
    np.testing.assert_allclose(N.l2_energy(jnp.array([[3.0, 4.0]]), jnp.zeros((1, 2))), [-5.0])


def test_blocks_are_stacked_and_independently_initialised(actor):
    layers = _params(actor)["tower"]["blocks"]["layers"]
    assert sorted(layers) == [0, 1, 2, 3]
    kernel = layers[0]["dense"]["kernel"]
    assert kernel.shape == (3, 16, 16)
    assert not np.allclose(kernel[0], kernel[1]) and not np.allclose(kernel[1], kernel[2])


def test_lecun_uniform_kernels_and_zero_biases():
    cfg = {**CFG, "width": 256, "depth": 8}
    p = _params(N.critic_from_config(cfg, seed=0))
    kernel = p["sa_tower"]["blocks"]["layers"][1]["dense"]["kernel"]  # [2, 256, 256], fan_in 256
    bound = np.sqrt(3.0 / 256)
    assert np.abs(kernel).max() <= bound and np.abs(kernel).max() > 0.99 * bound
    assert abs(kernel.var() / (1.0 / 256) - 1.0) < 0.03 and abs(kernel.mean()) < 1e-3
    first = p["sa_tower"]["input"]["dense"]["kernel"]  # fan_in = obs + action = 7
    assert np.abs(first).max() <= np.sqrt(3.0 / 7) and first.std() > 0.5 * np.sqrt(1.0 / 7)
    for path, leaf in jax.tree_util.tree_leaves_with_path(p):
        name = jax.tree_util.keystr(path)
        if name.endswith("['bias']"):
            assert not leaf.any(), name
        if name.endswith("['scale']"):
            assert np.all(leaf == 1.0), name


def _loss_and_grads(module, obs, goal):
    def loss(m):
        mean, log_std = m(jnp.concatenate([obs, goal], -1))
        return jnp.sum(jnp.sin(mean) * log_std)

    value, grads = nnx.jit(nnx.value_and_grad(loss))(module)
    return value, _params(grads)


def test_remat_gives_same_output_and_gradients():
    obs, goal, _ = _batch()
    v0, g0 = _loss_and_grads(N.actor_from_config(CFG, seed=1), obs, goal)
    v1, g1 = _loss_and_grads(N.actor_from_config({**CFG, "remat": True}, seed=1), obs, goal)
    np.testing.assert_allclose(v1, v0, rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-5), g1, g0)
    assert np.abs(g0["tower"]["blocks"]["layers"][2]["dense"]["kernel"]).sum() > 0  # gradients reach blocks


def test_bfloat16_computes_in_bf16_with_float32_params_and_stays_close():
    obs, goal, act = _batch()
    x = np.concatenate([obs, goal], -1)
    f32 = N.actor_from_config(CFG, seed=2)
    bf16 = N.actor_from_config({**CFG, "dtype": "bfloat16"}, seed=2)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(_params(bf16)))
    assert bf16.tower(x).dtype == jnp.bfloat16
    mean, log_std = bf16(x)
    assert mean.dtype == log_std.dtype == jnp.float32
    np.testing.assert_allclose(mean, f32(x)[0], atol=0.05)
    np.testing.assert_allclose(bf16.act(obs, goal), f32.act(obs, goal), atol=0.05)
    critic = N.critic_from_config({**CFG, "dtype": "bfloat16", "remat": True}, seed=2)
    assert np.all(np.isfinite(critic.energy(obs, act, goal)))


def test_maximum_depth_runs():
    actor = N.actor_from_config({**CFG, "depth": 1024, "width": 8})
    assert actor.tower.blocks.layers[0].dense.kernel.shape == (256, 8, 8)
    obs, goal, _ = _batch(n=2)
    assert np.all(np.isfinite(actor.act(obs, goal)))


@pytest.mark.parametrize("bad, match", [
    ({"depth": 6}, "multiple of 4 from 4 to 1024, got 6"),
    ({"depth": 0}, "positive integer"),
    ({"depth": 1028}, "multiple of 4 from 4 to 1024, got 1028"),
    ({"depth": 8.0}, "'depth' must be a positive integer"),
    ({"width": True}, "'width' must be a positive integer"),
    ({"dtype": "float16"}, "dtype must be one of float32, bfloat16"),
    ({"remat": "yes"}, "'remat' must be true or false"),
    ({"detph": 8}, "unknown keys detph"),
])
def test_bad_configs_raise_one_sentence(bad, match):
    with pytest.raises(DeepcrlError, match=match):
        N.actor_from_config({**CFG, **bad})


def test_missing_key_and_wrong_input_size_raise():
    with pytest.raises(DeepcrlError, match="critic config is missing goal_size"):
        N.critic_from_config({k: v for k, v in CFG.items() if k != "goal_size"})
    assert N.critic_from_config(CFG).repr_size == 64
    actor = N.actor_from_config({**CFG, "depth": 4})
    with pytest.raises(DeepcrlError, match=r"observation must have shape \[batch, 5\], got \(2, 4\)"):
        actor.act(np.zeros((2, 4), np.float32), np.zeros((2, 3), np.float32))


def test_networks_run_under_vmap_and_bench_rejects_bad_depth_before_compiling():
    actor = N.actor_from_config({**CFG, "depth": 4})
    obs, goal, _ = _batch(n=3)
    np.testing.assert_allclose(jax.vmap(actor.act)(obs, goal), actor.act(obs, goal), atol=1e-6)

    from deepcrl.bench.config import BenchTeacherConfig
    from deepcrl.cli.bench import run_teacher

    with pytest.raises(DeepcrlError, match="multiple of 4 from 4 to 1024, got 6"):
        run_teacher(BenchTeacherConfig(depths=(4, 6)))


def test_actor_exports_to_onnx_with_parity():
    pytest.importorskip("jax2onnx")
    import onnxruntime as ort
    from jax2onnx import to_onnx

    obs, goal, _ = _batch(n=9, seed=7)
    for remat in (False, True):  # a teacher trained with remat exports as is (jax.checkpoint is traced through)
        actor = N.actor_from_config({**CFG, "depth": 8, "width": 32, "remat": remat}, seed=5)
        model = to_onnx(lambda observation, goal: actor.act(observation, goal),
                        [("B", CFG["obs_size"]), ("B", CFG["goal_size"])], return_mode="proto")
        assert "Loop" in {node.op_type for node in model.graph.node}  # the scanned blocks, not copies
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        names = [i.name for i in sess.get_inputs()]
        out = sess.run(None, {names[0]: obs, names[1]: goal})[0]
        np.testing.assert_allclose(out, actor.act(obs, goal), atol=1e-5)
