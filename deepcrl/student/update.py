"""The student's objective and its Adam steps: what one gradient step of distillation does.

`Student` holds everything that trains (the actor and, with --represent, shallow encoders and a feature
projection); `make_loss` builds ``loss(params, batch) -> (total, metrics)`` from the config; `adam_steps`
runs a `lax.scan` of Adam steps on minibatches drawn uniformly from the filled part of the label buffer. The
teacher's quantities are labels in the buffer: a gradient step never runs the deep teacher.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from deepcrl.student import losses
from deepcrl.student.networks import actor_from_config, critic_from_config


class Student(nnx.Module):
    """Everything the student trains: the actor, and with --represent the encoders and feature projection."""

    def __init__(self, actor_cfg: dict, critic_cfg: dict | None, teacher_width: int | None, seed: int):
        self.actor = actor_from_config(actor_cfg, seed=seed)
        self.critic = critic_from_config(critic_cfg, seed=seed + 1) if critic_cfg is not None else None
        self.projection = (nnx.Linear(self.actor.torso.out_size, teacher_width, rngs=nnx.Rngs(seed + 2))
                           if teacher_width else None)


def make_loss(cfg, graphdef) -> Callable:
    """``loss(params, batch) -> (total, metrics)`` for the configured objectives (a `DistillConfig`'s
    ``loss``, ``represent`` and coefficients). ``action_mse`` (squashed actions) is always reported."""

    def loss_fn(params, batch):
        model = nnx.merge(graphdef, params)
        x = jnp.concatenate([batch["obs"], batch["goal"]], axis=-1)
        h = model.actor.features(x)
        mean, log_std = model.actor.heads(h)
        metrics = {"action_mse": losses.action_mse(mean, batch["t_mean"])}
        if cfg.loss == "kl":
            total = metrics["action_kl"] = losses.gaussian_kl(mean, log_std, batch["t_mean"], batch["t_log_std"])
        elif cfg.loss == "mean":
            total = metrics["mean_mse"] = losses.pre_tanh_mse(mean, batch["t_mean"])
        else:
            total = metrics["action_mse"]
        if model.critic is not None:
            t_act = jnp.tanh(batch["t_mean"])
            phi, psi = model.critic.phi(batch["obs"], t_act), model.critic.psi(batch["goal"])
            metrics["repr_mse"] = losses.repr_mse(phi, batch["t_phi"]) + losses.repr_mse(psi, batch["t_psi"])
            metrics["energy_nce"] = losses.energy_ranking_nce(phi, psi, batch["t_phi"], batch["t_psi"])
            total = total + cfg.repr_coef * metrics["repr_mse"] + cfg.nce_coef * metrics["energy_nce"]
        if model.projection is not None:
            metrics["feature_mse"] = losses.feature_match(model.projection(h), batch["t_feat"])
            total = total + cfg.feature_coef * metrics["feature_mse"]
        metrics["loss"] = total
        return total, metrics

    return loss_fn


def adam_steps(loss_fn: Callable, optimizer: optax.GradientTransformation, batch_size: int, params, opt_state,
               buffer: dict, size: jax.Array, key: jax.Array, steps: int):
    """``steps`` Adam steps (a `lax.scan`) on minibatches drawn uniformly from ``buffer[:size]``.

    Returns:
        ``(params, opt_state, metrics)`` with each metric's mean over the steps.
    """

    def body(carry, key):
        params, opt_state = carry
        idx = jax.random.randint(key, (batch_size,), 0, size)
        batch = jax.tree.map(lambda a: a[idx], buffer)
        (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), metrics

    (params, opt_state), metrics = jax.lax.scan(body, (params, opt_state), jax.random.split(key, steps))
    return params, opt_state, jax.tree.map(jnp.mean, metrics)
