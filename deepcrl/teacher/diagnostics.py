"""Per-block norms of the residual towers: what grows (or dies) with depth before a run collapses.

Two small vectors per tower (actor, critic phi(s, a), critic psi(g)), logged every iteration by `norms` from
one extra batch at the end of the iteration (one forward and backward pass besides the iteration's
``sgd_steps``):

- the residual stream's size after the input layer and after each block (mean over the batch of ||h||_2): a
  stream that grows block after block is what makes the first critic losses and energies of very deep nets
  huge (at depth 256 width 32 the first critic loss is ~314);
- the gradient's L2 norm of each block's parameters: vanishing or exploding updates along the depth.

Depth 1024 has 256 blocks, so at most `MAX_LOGGED` evenly spaced blocks (the first and last always among
them) are kept; `logged_blocks` says which.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

MAX_LOGGED = 16


def logged_blocks(num_blocks: int, max_logged: int = MAX_LOGGED) -> np.ndarray:
    """Indices of the blocks that are logged: all of them up to `max_logged`, else evenly spaced ones."""
    if num_blocks <= max_logged:
        return np.arange(num_blocks)
    return np.unique(np.linspace(0, num_blocks - 1, max_logged).round().astype(int))


def stream_norms(tower, x: jax.Array) -> jax.Array:
    """Mean ||h||_2 of the residual stream after the input layer and after each block: [num_blocks + 1].

    Runs the tower's own layers (input layer, then each stacked block under `lax.scan`), so it measures
    exactly the stream its forward pass computes.
    """
    h = tower.input(x)
    graphdef, stacked = nnx.split(tower.blocks)

    def body(h, state):
        h = nnx.merge(graphdef, state)(h)
        return h, jnp.mean(jnp.linalg.norm(h.astype(jnp.float32), axis=-1))

    h0 = jnp.mean(jnp.linalg.norm(h.astype(jnp.float32), axis=-1))
    _, per_block = jax.lax.scan(body, h, stacked)
    return jnp.concatenate([h0[None], per_block])


def block_grad_norms(block_grads) -> jax.Array:
    """L2 norm of each block's gradient: [num_blocks]. Args: the gradient of a tower's stacked ``blocks``
    (every leaf has the block axis first)."""
    leaves = jax.tree.leaves(block_grads)
    sq = sum(jnp.sum(jnp.square(g.astype(jnp.float32)).reshape(g.shape[0], -1), axis=1) for g in leaves)
    return jnp.sqrt(sq)


def norms(nets, hyper, learner, batch: tuple[jax.Array, jax.Array, jax.Array], key: jax.Array) -> dict:
    """Per-block norms of the learner on a batch: ``{tower}_stream`` and ``{tower}_grad`` for tower in
    ``actor``, ``critic_sa`` (phi) and ``critic_g`` (psi); the gradients are those `update` would apply.

    Args: as `deepcrl.teacher.update.update`.
    """
    from deepcrl.teacher.update import gradients

    s, a, g = batch
    grads, _ = gradients(nets, hyper, learner, batch, key)
    actor, critic = nets.actor(learner.actor), nets.critic(learner.critic)
    out = {}
    for name, tower, x, tower_grads in (
            ("actor", actor.tower, jnp.concatenate([s, g], axis=-1), grads.actor["tower"]),
            ("critic_sa", critic.sa_tower, jnp.concatenate([s, a], axis=-1), grads.critic["sa_tower"]),
            ("critic_g", critic.g_tower, g, grads.critic["g_tower"])):
        for key_, value in tower_norms(tower, x, tower_grads["blocks"]).items():
            out[f"{name}_{key_}"] = value
    return out


def tower_norms(tower, x: jax.Array, block_grads) -> dict[str, jax.Array]:
    """``stream`` [len(logged) + 1] (input layer, then the logged blocks) and ``grad`` [len(logged)]."""
    idx = logged_blocks(tower.num_blocks)
    stream = stream_norms(tower, x)
    return {"stream": jnp.concatenate([stream[:1], stream[1:][idx]]), "grad": block_grad_norms(block_grads)[idx]}
