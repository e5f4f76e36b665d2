"""Losses of contrastive RL: InfoNCE critic, max-entropy actor, automatic temperature.

All functions are pure and take representations / log-probs, not modules, so the training step decides what
is differentiated (critic params for `critic_loss`, actor params for `actor_loss`, ``log_alpha`` for
`alpha_loss`).

Target entropy: the reference tunes alpha towards an entropy of ``-0.5 * action_size``
(`default_target_entropy`); `alpha_loss` takes the target as an argument so the caller may choose another.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import optax

from deepcrl.teacher.networks import pairwise_energy

_LOG2 = math.log(2.0)
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def critic_loss(phi: jax.Array, psi: jax.Array, logsumexp_coef: float = 0.1) -> tuple[jax.Array, dict]:
    """InfoNCE over the B x B logits -||phi_i - psi_j||, positives on the diagonal, + a logsumexp penalty.

    loss = mean_i[-logits_ii + logsumexp_j logits_ij] + coef * mean_i[(logsumexp_j logits_ij)^2].
    The penalty pins the row normalisers near 0, so the energies stay on a usable scale.

    Args:
        phi: state-action representations [B, R] (row i's positive goal is psi's row i).
        psi: goal representations [B, R].
        logsumexp_coef: weight of the logsumexp^2 penalty (0.1 in the reference).
    Returns:
        (scalar loss, metrics): ``infonce``, ``logsumexp`` (mean row normaliser), ``accuracy`` (fraction of rows
        whose largest logit is the diagonal), ``logits_pos`` / ``logits_neg`` (mean diagonal / off-diagonal).
    """
    logits = pairwise_energy(phi, psi)
    b = logits.shape[0]
    labels = jnp.arange(b)
    infonce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    lse = jax.nn.logsumexp(logits, axis=1)
    loss = jnp.mean(infonce) + logsumexp_coef * jnp.mean(jnp.square(lse))
    diag = jnp.eye(b, dtype=bool)
    metrics = {
        "infonce": jnp.mean(infonce),
        "logsumexp": jnp.mean(lse),
        "accuracy": jnp.mean(jnp.argmax(logits, axis=1) == labels),
        "logits_pos": jnp.mean(jnp.diagonal(logits)),
        "logits_neg": jnp.sum(jnp.where(diag, 0.0, logits)) / max(b * (b - 1), 1),
    }
    return loss, metrics


def tanh_gaussian_log_prob(pre_tanh: jax.Array, mean: jax.Array, log_std: jax.Array) -> jax.Array:
    """log pi(tanh(u)) of a tanh-squashed diagonal Gaussian, summed over the action axis. Returns: [B]."""
    z = (pre_tanh - mean) * jnp.exp(-log_std)
    gaussian = -0.5 * jnp.square(z) - log_std - _HALF_LOG_2PI
    # log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)): exact, and finite where tanh(u) rounds to +-1.
    log_det = 2.0 * (_LOG2 - pre_tanh - jax.nn.softplus(-2.0 * pre_tanh))
    return jnp.sum(gaussian - log_det, axis=-1)


def sample_tanh_gaussian(mean: jax.Array, log_std: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Reparameterised sample of tanh(N(mean, exp(log_std)^2)) and its log-probability.

    Args:
        mean, log_std: the actor's outputs [B, act].
        key: PRNG key.
    Returns:
        (action [B, act] in (-1, 1), log_prob [B]); gradients flow to mean and log_std.
    """
    u = mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape, mean.dtype)
    return jnp.tanh(u), tanh_gaussian_log_prob(u, mean, log_std)


def actor_loss(alpha: jax.Array | float, log_prob: jax.Array, energy: jax.Array) -> jax.Array:
    """mean(alpha * log pi(a|s,g) - f(s, a, g)) with a ~ pi on hindsight goals.

    ``alpha`` is treated as a constant here (its own loss is `alpha_loss`).

    Args:
        alpha: temperature exp(log_alpha), scalar.
        log_prob: [B] log-probabilities of the sampled actions.
        energy: [B] critic values f(s, a, g) of the same actions.
    """
    return jnp.mean(jax.lax.stop_gradient(alpha) * log_prob - energy)


def alpha_loss(log_alpha: jax.Array, log_prob: jax.Array, target_entropy: float) -> jax.Array:
    """SAC temperature loss mean(exp(log_alpha) * (-log_prob - target_entropy)), log_prob held constant.

    Its gradient lowers alpha when the policy's entropy (-log_prob) is above the target and raises it below.

    Args:
        log_alpha: the learned log-temperature, scalar.
        log_prob: [B] log-probabilities of actions sampled from the current policy.
        target_entropy: usually `default_target_entropy(action_size)`.
    """
    return jnp.mean(jnp.exp(log_alpha) * jax.lax.stop_gradient(-log_prob - target_entropy))


def default_target_entropy(action_size: int) -> float:
    """The reference's target entropy, -0.5 * |A|."""
    return -0.5 * float(action_size)
