"""Per-block norms: the stream norms equal a block-by-block loop, gradient norms equal hand values."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from deepcrl.teacher.diagnostics import block_grad_norms, logged_blocks, stream_norms, tower_norms
from deepcrl.teacher.networks import ResidualTower


def test_logged_blocks_keep_the_first_and_last():
    assert logged_blocks(4).tolist() == [0, 1, 2, 3]
    idx = logged_blocks(256)
    assert len(idx) == 16 and idx[0] == 0 and idx[-1] == 255 and np.all(np.diff(idx) > 0)


def test_stream_norms_equal_a_block_by_block_loop():
    tower = ResidualTower(3, 8, 12, rngs=nnx.Rngs(params=0))
    x = jax.random.normal(jax.random.PRNGKey(1), (5, 3))
    h = tower.input(x)
    expected = [jnp.mean(jnp.linalg.norm(h, axis=-1))]
    graphdef, stacked = nnx.split(tower.blocks)
    for i in range(3):
        h = nnx.merge(graphdef, jax.tree.map(lambda p, i=i: p[i], stacked))(h)
        expected.append(jnp.mean(jnp.linalg.norm(h, axis=-1)))
    np.testing.assert_allclose(stream_norms(tower, x), np.array(expected), rtol=1e-5)
    np.testing.assert_allclose(expected[-1], jnp.mean(jnp.linalg.norm(tower(x), axis=-1)), rtol=1e-5)


def test_block_grad_norms_by_hand():
    grads = {"a": jnp.ones((3, 2, 2)), "b": {"c": 2 * jnp.ones((3, 4))}}
    np.testing.assert_allclose(block_grad_norms(grads), [np.sqrt(4 + 16)] * 3, rtol=1e-6)


def test_tower_norms_are_subsampled_for_deep_towers():
    tower = ResidualTower(2, 4, 80, rngs=nnx.Rngs(params=0))  # 20 blocks, 16 logged
    grads = nnx.state(tower.blocks, nnx.Param)
    out = tower_norms(tower, jnp.ones((2, 2)), grads)
    assert out["stream"].shape == (17,) and out["grad"].shape == (16,)
    assert np.all(np.isfinite(out["stream"])) and float(out["grad"][0]) == pytest.approx(
        float(block_grad_norms(grads)[0]))


def test_norms_take_the_gradients_that_the_update_applies():
    from deepcrl.teacher import losses
    from deepcrl.teacher.diagnostics import norms
    from deepcrl.teacher.networks import actor_from_config, critic_from_config
    from deepcrl.teacher.update import Hyper, Nets, init_learner

    sizes = {"obs_size": 2, "goal_size": 2, "action_size": 2, "width": 8}
    nets, actor_p, critic_p = Nets.split(actor_from_config({**sizes, "depth": 8}, 0),
                                         critic_from_config({**sizes, "depth": 12, "repr_size": 4}, 1))
    learner = init_learner(actor_p, critic_p, 3e-4)
    hyper = Hyper(target_entropy=-1.0, logsumexp_coef=0.1, actor_random_goal_frac=0.0)
    k = jax.random.split(jax.random.PRNGKey(0), 3)
    batch = (jax.random.normal(k[0], (16, 2)), jnp.tanh(jax.random.normal(k[1], (16, 2))),
             jax.random.normal(k[2], (16, 2)))
    # jitted, as the iteration calls it (and about twice as fast as op by op)
    out = jax.jit(lambda learner, batch, key: norms(nets, hyper, learner, batch, key))(learner, batch,
                                                                                      jax.random.PRNGKey(3))
    assert {k: v.shape for k, v in out.items()} == {
        "actor_stream": (3,), "actor_grad": (2,), "critic_sa_stream": (4,), "critic_sa_grad": (3,),
        "critic_g_stream": (4,), "critic_g_grad": (3,)}

    def critic_loss(params):
        net = nets.critic(params)
        return losses.critic_loss(net.phi(batch[0], batch[1]), net.psi(batch[2]), 0.1)[0]

    grads = jax.grad(critic_loss)(critic_p)
    np.testing.assert_allclose(out["critic_g_grad"], block_grad_norms(grads["g_tower"]["blocks"]), rtol=1e-5)
    critic = nets.critic(critic_p)
    np.testing.assert_allclose(out["critic_sa_stream"], stream_norms(critic.sa_tower, jnp.concatenate(batch[:2], -1)),
                               rtol=1e-5)


def test_training_logs_the_norms_every_iteration(tiny_teacher_run):
    import json

    _, run = tiny_teacher_run
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for r in rows:  # depth 4: one block, so the stream after the input layer and after the block
        n = r["norms"]
        assert set(n) == {f"{t}_{k}" for t in ("actor", "critic_sa", "critic_g") for k in ("stream", "grad")}
        assert len(n["critic_sa_stream"]) == 2 and len(n["actor_grad"]) == 1
        assert all(np.isfinite(v) and v > 0 for vals in n.values() for v in vals)
    assert rows[0]["norms"] != rows[-1]["norms"]
