"""Distillation losses: action matching, representation matching and actor-feature matching.

All take teacher quantities as plain arrays (computed once when the data is labelled) and treat them as
constants, so a loss never differentiates through the deep teacher.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from deepcrl.teacher.networks import pairwise_energy


def action_mse(student_mean: jax.Array, teacher_mean: jax.Array) -> jax.Array:
    """Mean squared error between the squashed actions tanh(mean) of student and teacher.

    Matching in the squashed space weighs errors as the robot feels them: a pre-tanh error far in the
    saturated tail changes no action and costs nothing.

    Args:
        student_mean, teacher_mean: pre-tanh means [B, act].
    Returns:
        Scalar: mean over batch and action entries.
    """
    teacher = jax.lax.stop_gradient(jnp.tanh(teacher_mean))
    return jnp.mean(jnp.square(jnp.tanh(student_mean) - teacher))


def pre_tanh_mse(student_mean: jax.Array, teacher_mean: jax.Array, clip: float = 3.0) -> jax.Array:
    """Mean squared error between the pre-tanh means, each clipped to [-clip, clip] first.

    Unlike `action_mse`, the gradient does not vanish as the student's action nears +-1, so a student whose
    action is saturated on the wrong side still learns; clipping at 3 (tanh(3) = 0.995) keeps a teacher's far
    saturated tail from dominating: beyond it every pre-tanh value is nearly the same action.

    Args:
        student_mean, teacher_mean: pre-tanh means [B, act].
    Returns:
        Scalar: mean over batch and action entries.
    """
    teacher = jax.lax.stop_gradient(jnp.clip(teacher_mean, -clip, clip))
    return jnp.mean(jnp.square(student_mean - teacher))


def gaussian_kl(student_mean: jax.Array, student_log_std: jax.Array, teacher_mean: jax.Array,
                teacher_log_std: jax.Array) -> jax.Array:
    """KL(teacher || student) of the diagonal pre-tanh Gaussians, summed over actions, mean over the batch.

    tanh is a bijection, so this equals the KL between the two squashed (tanh-Gaussian) policies.
    The forward direction (teacher first) is the policy-distillation choice: the student must cover every
    action the teacher puts mass on.

    Args:
        student_mean, student_log_std, teacher_mean, teacher_log_std: [B, act].
    Returns:
        Scalar KL in nats.
    """
    mt, lt = jax.lax.stop_gradient(teacher_mean), jax.lax.stop_gradient(teacher_log_std)
    var_ratio = jnp.exp(2.0 * (lt - student_log_std))
    mean_term = jnp.square(mt - student_mean) * jnp.exp(-2.0 * student_log_std)
    kl = student_log_std - lt + 0.5 * (var_ratio + mean_term - 1.0)
    return jnp.mean(jnp.sum(kl, axis=-1))


def repr_mse(student: jax.Array, teacher: jax.Array) -> jax.Array:
    """Mean squared error to the teacher's representation vectors ([B, R] each)."""
    return jnp.mean(jnp.square(student - jax.lax.stop_gradient(teacher)))


def energy_ranking_nce(student_phi: jax.Array, student_psi: jax.Array, teacher_phi: jax.Array,
                       teacher_psi: jax.Array, temperature: float = 1.0) -> jax.Array:
    """InfoNCE-style distillation of the critic's goal ordering.

    For each state-action i, the teacher's energies over the batch's goals, softmax(E_t[i, :] / T), are the
    target distribution and the student's log-softmax(E_s[i, :] / T) is scored against it (cross-entropy).
    With a one-hot target this is the CRL InfoNCE loss itself; with the teacher's soft target it asks the
    student to rank goals as the teacher does, without matching the teacher's coordinates. The teacher's
    entropy is subtracted, so the value is the KL (0 when the orderings agree exactly).

    Args:
        student_phi, student_psi, teacher_phi, teacher_psi: [B, R_s] and [B, R_t] representation batches.
        temperature: softmax temperature T.
    Returns:
        Scalar: mean over rows of KL(softmax(E_t/T) || softmax(E_s/T)).
    """
    target_logits = jax.lax.stop_gradient(pairwise_energy(teacher_phi, teacher_psi)) / temperature
    log_target = jax.nn.log_softmax(target_logits, axis=-1)
    log_student = jax.nn.log_softmax(pairwise_energy(student_phi, student_psi) / temperature, axis=-1)
    return jnp.mean(jnp.sum(jnp.exp(log_target) * (log_target - log_student), axis=-1))


def feature_match(projected_student: jax.Array, teacher_features: jax.Array) -> jax.Array:
    """MSE between a learned projection of the student's hidden features and the teacher's ([B, F_t]).

    The teacher's features are normalised per row (zero mean, unit variance, as a LayerNorm would) so the
    loss scale does not depend on the teacher's width or depth.
    """
    t = jax.lax.stop_gradient(teacher_features)
    t = (t - t.mean(-1, keepdims=True)) / (t.std(-1, keepdims=True) + 1e-6)
    return jnp.mean(jnp.square(projected_student - t))
