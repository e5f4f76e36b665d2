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
