"""The deep recipe (issue 11): each residual block's last LayerNorm starts at scale 1 / (number of blocks).

With the reference's init every residual block adds swish(LayerNorm(.)) at full scale, so the stream, the
critic's energies and the actor's head inputs grow with depth: a depth-64 actor starts with saturated tanh
actions and log-stds at their floor, and a depth-256 critic's first loss is in the thousands. "scaled" keeps
the stream bounded at any depth and is exactly the reference at depth 4 (one block).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from deepcrl.errors import DeepcrlError
from deepcrl.teacher import losses, networks as N
from deepcrl.teacher.config import TrainConfig
from deepcrl.teacher.diagnostics import stream_norms

SIZES = {"obs_size": 2, "goal_size": 2, "action_size": 2}
BATCH = 256


def _inputs(k: int, seed: int) -> jax.Array:
    return jax.random.uniform(jax.random.PRNGKey(seed), (BATCH, k), minval=-3.0, maxval=3.0)


def _stream_norms(tower: N.ResidualTower, x: jax.Array) -> list[float]:
    """Mean row norm of the residual stream after the input layer and after every block (the training logs'
    `deepcrl.teacher.diagnostics.stream_norms`)."""
    return [float(v) for v in stream_norms(tower, x)]


def _critic(depth: int, width: int, init: str) -> N.Critic:
    return N.critic_from_config({**SIZES, "depth": depth, "width": width, "residual_init": init}, seed=0)


def _first_critic_loss(critic: N.Critic) -> float:
    s, a, g = _inputs(2, 0), jnp.tanh(_inputs(2, 1)), _inputs(2, 2)
    loss, _ = losses.critic_loss(critic.phi(s, a), critic.psi(g))
    return float(loss)


@pytest.mark.parametrize("depth", [16, 128])
def test_residual_stream_norm_at_init_does_not_grow_with_depth(depth):
    x = jnp.concatenate([_inputs(2, 0), _inputs(2, 1)], axis=-1)
    scaled = _stream_norms(_critic(depth, 32, "scaled").sa_tower, x)
    assert max(scaled) < 1.25 * scaled[0], scaled
    zero = _stream_norms(_critic(depth, 32, "zero").sa_tower, x)
    np.testing.assert_allclose(zero, zero[0], rtol=1e-6)  # every block adds exactly swish(0) = 0
    plain = _stream_norms(_critic(depth, 32, "reference").sa_tower, x)
    assert plain[-1] > 2.0 * plain[0]  # what the recipe removes: the stream grows block after block


def test_depth_256_first_critic_loss_is_near_log_batch():
    # InfoNCE of indistinguishable logits is log(B); the logsumexp^2 penalty adds little when energies are O(1).
    for init in ("scaled", "zero"):
        assert abs(_first_critic_loss(_critic(256, 32, init)) - math.log(BATCH)) < 1.0, init
    assert _first_critic_loss(_critic(256, 32, "reference")) > 100.0


def test_deep_actor_does_not_start_saturated():
    x = jnp.concatenate([_inputs(2, 0), _inputs(2, 2)], axis=-1)
    for init, saturated in (("scaled", False), ("zero", False), ("reference", True)):
        actor = N.actor_from_config({**SIZES, "depth": 64, "width": 128, "residual_init": init}, seed=0)
        mean, log_std = actor(x)
        frac = float(jnp.mean(jnp.abs(jnp.tanh(mean)) > 0.99)) + float(jnp.mean(log_std < -4.5))
        assert (frac > 0.2) is saturated, (init, frac)


def _flat(cfg: dict) -> dict:
    params = nnx.to_pure_dict(nnx.state(N.critic_from_config(cfg, seed=5), nnx.Param))
    return {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_leaves_with_path(params)}


def test_only_the_last_layer_norm_scale_of_each_block_changes():
    cfg = {**SIZES, "depth": 16, "width": 16}
    plain, scaled = _flat(cfg), _flat({**cfg, "residual_init": "scaled"})
    assert plain.keys() == scaled.keys()  # same parameters: the exported graph is the same
    changed = sorted(k for k in plain if not np.array_equal(plain[k], scaled[k]))
    assert changed == [f"['{t}']['blocks']['layers'][3]['norm']['scale']" for t in ("g_tower", "sa_tower")]
    assert all(np.all(scaled[k] == np.float32(0.25)) for k in changed)  # 4 blocks -> 1/4
    # One block: the recipe is the reference, bit for bit (depth-4 results do not move).
    cfg4 = {**SIZES, "depth": 4, "width": 16}
    one, ref = _flat({**cfg4, "residual_init": "scaled"}), _flat(cfg4)
    assert all(np.array_equal(one[k], ref[k]) for k in ref)


def test_the_recipe_is_the_training_default_and_reaches_the_manifest():
    from deepcrl import envs
    from deepcrl.teacher.iteration import network_configs

    cfg = TrainConfig(env="point_maze", depth=64).resolved(on_gpu=False)
    assert cfg.residual_init == "scaled"
    actor_cfg, critic_cfg = network_configs(cfg, envs.make("point_maze"))
    assert actor_cfg["residual_init"] == critic_cfg["residual_init"] == "scaled"
    # Manifests written before the recipe have no key: they describe the reference's init.
    assert N.validate_config({**SIZES, "depth": 4, "width": 8})["residual_init"] == "reference"
    with pytest.raises(DeepcrlError, match="residual_init"):
        N.validate_config({**SIZES, "depth": 4, "width": 8, "residual_init": "ones"})
