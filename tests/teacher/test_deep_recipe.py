"""The deep recipe: with zero_init_residual a deep tower starts as a shallow one (issue 11).

Without it every residual block adds swish(LayerNorm(.)) to the stream, so the stream, the critic's energies and
the actor's head inputs grow with depth: a depth-64 actor starts with saturated tanh actions and log-stds at
their floor, and a depth-256 critic's first loss is in the thousands.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from deepcrl.teacher import losses, networks as N
from deepcrl.teacher.config import TrainConfig

SIZES = {"obs_size": 2, "goal_size": 2, "action_size": 2}
BATCH = 256


def _inputs(n: int, k: int, seed: int) -> jax.Array:
    return jax.random.uniform(jax.random.PRNGKey(seed), (BATCH, k), minval=-3.0, maxval=3.0)[:, :n]


def _stream_norms(tower: N.ResidualTower, x: jax.Array) -> list[float]:
    """Mean row norm of the residual stream after the input layer and after every block."""
    h = tower.input(x)
    graphdef, stacked = nnx.split(tower.blocks)
    norms = [float(jnp.linalg.norm(h, axis=-1).mean())]
    for i in range(tower.num_blocks):
        h = nnx.merge(graphdef, jax.tree.map(lambda p, i=i: p[i], stacked))(h)
        norms.append(float(jnp.linalg.norm(h, axis=-1).mean()))
    return norms


def _critic(depth: int, width: int, zero: bool) -> N.Critic:
    return N.critic_from_config({**SIZES, "depth": depth, "width": width, "zero_init_residual": zero}, seed=0)


def _first_critic_loss(critic: N.Critic) -> float:
    s, a, g = _inputs(2, 2, 0), jnp.tanh(_inputs(2, 2, 1)), _inputs(2, 2, 2)
    loss, _ = losses.critic_loss(critic.phi(s, a), critic.psi(g))
    return float(loss)


@pytest.mark.parametrize("depth", [16, 128])
def test_residual_stream_norm_at_init_does_not_grow_with_depth(depth):
    x = jnp.concatenate([_inputs(2, 2, 0), _inputs(2, 2, 1)], axis=-1)
    zero = _stream_norms(_critic(depth, 32, True).sa_tower, x)
    np.testing.assert_allclose(zero, zero[0], rtol=1e-6)  # every block adds exactly swish(0) = 0
    plain = _stream_norms(_critic(depth, 32, False).sa_tower, x)
    assert plain[-1] > 2.0 * plain[0]  # what the recipe removes: the stream grows block after block


def test_depth_256_first_critic_loss_is_near_log_batch():
    # InfoNCE of indistinguishable logits is log(B); the logsumexp^2 penalty adds little when energies are O(1).
    assert abs(_first_critic_loss(_critic(256, 32, True)) - math.log(BATCH)) < 1.0
    assert _first_critic_loss(_critic(256, 32, False)) > 100.0


def test_deep_actor_does_not_start_saturated():
    x = jnp.concatenate([_inputs(2, 2, 0), _inputs(2, 2, 2)], axis=-1)
    for zero, saturated in ((True, False), (False, True)):
        actor = N.actor_from_config({**SIZES, "depth": 64, "width": 128, "zero_init_residual": zero}, seed=0)
        mean, log_std = actor(x)
        frac = float(jnp.mean(jnp.abs(jnp.tanh(mean)) > 0.99)) + float(jnp.mean(log_std < -4.5))
        assert (frac > 0.2) is saturated, (zero, frac)


def test_zero_init_only_changes_the_last_layer_norm_scale_of_each_block():
    cfg = {**SIZES, "depth": 8, "width": 16}
    plain = nnx.to_pure_dict(nnx.state(N.critic_from_config(cfg, seed=5), nnx.Param))
    zero = nnx.to_pure_dict(nnx.state(N.critic_from_config({**cfg, "zero_init_residual": True}, seed=5), nnx.Param))
    flat_p, flat_z = dict(jax.tree_util.tree_leaves_with_path(plain)), dict(jax.tree_util.tree_leaves_with_path(zero))
    assert flat_p.keys() == flat_z.keys()  # same parameters: the exported graph is the same
    changed = sorted(jax.tree_util.keystr(k) for k in flat_p if not np.array_equal(flat_p[k], flat_z[k]))
    assert changed == [f"['{t}']['blocks']['layers'][3]['norm']['scale']" for t in ("g_tower", "sa_tower")]
    assert all(np.all(np.asarray(flat_z[k]) == 0) for k in flat_z if "[3]['norm']['scale']" in jax.tree_util.keystr(k))


def test_the_recipe_is_the_training_default_and_reaches_the_manifest():
    from deepcrl import envs
    from deepcrl.teacher.iteration import network_configs

    cfg = TrainConfig(env="point_maze").resolved(on_gpu=False)
    assert cfg.zero_init_residual is True
    actor_cfg, critic_cfg = network_configs(cfg, envs.make("point_maze"))
    assert actor_cfg["zero_init_residual"] is True and critic_cfg["zero_init_residual"] is True
    # Manifests written before the recipe have no key: they load with the reference's (plain) init.
    assert N.validate_config({**SIZES, "depth": 4, "width": 8})["zero_init_residual"] is False
    with pytest.raises(Exception, match="zero_init_residual"):
        N.validate_config({**SIZES, "depth": 4, "width": 8, "zero_init_residual": "yes"})
