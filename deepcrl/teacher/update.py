"""The teacher's one SGD update: critic (InfoNCE), actor (through the critic) and alpha, each with its own Adam.

`update` is a pure function of a named `Learner` state and a batch; training runs it ``sgd_steps`` times per
iteration (`deepcrl.teacher.iteration`) and the depth benchmark (`deepcrl.bench.teacher`) times this very
function, so what is benchmarked is what trains.

The learning rate is a hyper-parameter held in each optimiser's state (`optax.inject_hyperparams`): it is a
traced value, so a run resumed with another ``--learning-rate`` does not compile again.

    >>> nets, actor_p, critic_p = Nets.split(actor, critic)  # doctest: +SKIP
    >>> learner = init_learner(actor_p, critic_p, learning_rate=3e-4)  # doctest: +SKIP
    >>> learner, metrics = update(nets, hyper, learner, (s, a, g), key)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from deepcrl.teacher import losses


class Learner(NamedTuple):
    """Parameters and optimiser states of actor, critic and the entropy temperature."""

    actor: nnx.State
    critic: nnx.State
    log_alpha: jax.Array
    actor_opt: optax.OptState
    critic_opt: optax.OptState
    alpha_opt: optax.OptState

    def with_learning_rate(self, learning_rate) -> "Learner":
        """The same learner with the three optimisers' learning rate set to `learning_rate` (may be traced)."""
        lr = jnp.asarray(learning_rate, jnp.float32)

        def set_lr(opt):
            return opt._replace(hyperparams={**opt.hyperparams, "learning_rate": lr})

        return self._replace(actor_opt=set_lr(self.actor_opt), critic_opt=set_lr(self.critic_opt),
                             alpha_opt=set_lr(self.alpha_opt))


@dataclasses.dataclass(frozen=True)
class Nets:
    """The static side of actor and critic (graph definitions and non-parameter state) to merge params into."""

    actor_def: nnx.GraphDef
    critic_def: nnx.GraphDef
    actor_rest: nnx.State
    critic_rest: nnx.State

    @staticmethod
    def split(actor: nnx.Module, critic: nnx.Module) -> tuple["Nets", nnx.State, nnx.State]:
        """(nets, actor params, critic params) of two built modules."""
        actor_def, actor_p, actor_rest = nnx.split(actor, nnx.Param, ...)
        critic_def, critic_p, critic_rest = nnx.split(critic, nnx.Param, ...)
        return Nets(actor_def, critic_def, actor_rest, critic_rest), actor_p, critic_p

    def actor(self, params: nnx.State):
        return nnx.merge(self.actor_def, params, self.actor_rest)

    def critic(self, params: nnx.State):
        return nnx.merge(self.critic_def, params, self.critic_rest)


@dataclasses.dataclass(frozen=True)
class Hyper:
    """The update's fixed hyper-parameters (the learning rate lives in the optimiser states instead)."""

    target_entropy: float
    """Target of the policy's entropy (automatic alpha tuning)."""
    logsumexp_coef: float = 0.1
    """Weight of the logsumexp^2 regulariser of the InfoNCE critic loss."""
    actor_random_goal_frac: float = 0.0
    """Fraction of the actor's batch trained on another row's goal (a random buffer state)."""


def optimizer(learning_rate: float) -> optax.GradientTransformation:
    """Adam whose learning rate is a hyper-parameter in its state (Adam's other constants stay fixed)."""
    return optax.inject_hyperparams(optax.adam, static_args=("b1", "b2", "eps", "eps_root", "mu_dtype",
                                                             "nesterov"))(learning_rate=learning_rate)


def init_learner(actor: nnx.State, critic: nnx.State, learning_rate: float) -> Learner:
    """A fresh learner: alpha = 1 and three new Adam states."""
    opt = optimizer(learning_rate)
    log_alpha = jnp.zeros((), jnp.float32)
    return Learner(actor=actor, critic=critic, log_alpha=log_alpha, actor_opt=opt.init(actor),
                   critic_opt=opt.init(critic), alpha_opt=opt.init(log_alpha))


def _adam_step(grads, opt_state, params):
    # The learning rate is read from `opt_state`, so the value passed to `optimizer` here is never used.
    updates, opt_state = optimizer(0.0).update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state


class Grads(NamedTuple):
    """Gradients of one update's three losses."""

    critic: nnx.State
    actor: nnx.State
    log_alpha: jax.Array


def gradients(nets: Nets, hyper: Hyper, learner: Learner, batch: tuple[jax.Array, jax.Array, jax.Array],
              key: jax.Array) -> tuple[Grads, dict[str, jax.Array]]:
    """The gradients of the critic, actor and alpha losses on a batch (what `update` applies) and the metrics.

    Args: as `update`. Returns: (`Grads`, scalar metrics).
    """
    s, a, g = batch
    _, k_actor = jax.random.split(key)
    k_goal = jax.random.fold_in(key, 1)

    def critic_loss_fn(params):
        net = nets.critic(params)
        return losses.critic_loss(net.phi(s, a), net.psi(g), hyper.logsumexp_coef)

    (c_loss, c_metrics), c_grads = jax.value_and_grad(critic_loss_fn, has_aux=True)(learner.critic)
    alpha = jnp.exp(learner.log_alpha)

    # Another row's goal is a random buffer state: pairs that no single trajectory joined.
    mixed = jax.random.uniform(k_goal, (s.shape[0], 1)) < hyper.actor_random_goal_frac
    g_actor = jnp.where(mixed, jnp.roll(g, 1, axis=0), g)

    def actor_loss_fn(params):
        mean, log_std = nets.actor(params)(jnp.concatenate([s, g_actor], axis=-1))
        action, log_prob = losses.sample_tanh_gaussian(mean, log_std, k_actor)
        energy = nets.critic(learner.critic).energy(s, action, g_actor)
        return losses.actor_loss(alpha, log_prob, energy), (log_prob, energy)

    (a_loss, (log_prob, energy)), a_grads = jax.value_and_grad(actor_loss_fn, has_aux=True)(learner.actor)
    al_loss, al_grad = jax.value_and_grad(losses.alpha_loss)(learner.log_alpha, log_prob, hyper.target_entropy)
    metrics = {"critic_loss": c_loss, "actor_loss": a_loss, "alpha_loss": al_loss, "alpha": alpha,
               "entropy": -jnp.mean(log_prob), "energy": jnp.mean(energy),
               "critic_accuracy": c_metrics["accuracy"], "logsumexp": c_metrics["logsumexp"]}
    return Grads(critic=c_grads, actor=a_grads, log_alpha=al_grad), metrics


def update(nets: Nets, hyper: Hyper, learner: Learner, batch: tuple[jax.Array, jax.Array, jax.Array],
           key: jax.Array) -> tuple[Learner, dict[str, jax.Array]]:
    """One critic, actor and alpha update on a batch of (state, action, hindsight goal).

    Args:
        nets: graph definitions of actor and critic.
        hyper: fixed hyper-parameters.
        learner: parameters and optimiser states.
        batch: ``(s [B, obs], a [B, act], g [B, goal])``; row i's goal is reached from row i's state.
        key: PRNG key of this step (training passes the same key it samples the batch with).
    Returns:
        The updated learner and scalar metrics (losses, alpha, entropy, energy, critic accuracy, logsumexp).
    """
    grads, metrics = gradients(nets, hyper, learner, batch, key)
    critic, critic_opt = _adam_step(grads.critic, learner.critic_opt, learner.critic)
    actor, actor_opt = _adam_step(grads.actor, learner.actor_opt, learner.actor)
    log_alpha, alpha_opt = _adam_step(grads.log_alpha, learner.alpha_opt, learner.log_alpha)
    new = Learner(actor=actor, critic=critic, log_alpha=log_alpha, actor_opt=actor_opt, critic_opt=critic_opt,
                  alpha_opt=alpha_opt)
    return new, metrics
