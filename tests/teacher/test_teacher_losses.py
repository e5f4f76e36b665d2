"""CRL losses against values worked out by hand on tiny inputs."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deepcrl.teacher import losses as L


def test_critic_loss_by_hand_2x2():
    # Distances: |phi0-psi0| = 0, |phi0-psi1| = 4, |phi1-psi0| = 3, |phi1-psi1| = 5 (3-4-5 triangle),
    # so logits = [[0, -4], [-3, -5]] and row 1's largest logit is off the diagonal.
    phi = jnp.array([[0.0, 0.0], [3.0, 0.0]])
    psi = jnp.array([[0.0, 0.0], [0.0, 4.0]])
    lse0 = math.log(1.0 + math.exp(-4.0))
    lse1 = math.log(math.exp(-3.0) + math.exp(-5.0))
    infonce = ((0.0 + lse0) + (5.0 + lse1)) / 2
    expected = infonce + 0.1 * (lse0**2 + lse1**2) / 2

    loss, m = jax.jit(L.critic_loss)(phi, psi)
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    assert float(m["infonce"]) == pytest.approx(infonce, rel=1e-6)
    assert float(m["logsumexp"]) == pytest.approx((lse0 + lse1) / 2, rel=1e-6)
    assert float(m["accuracy"]) == 0.5
    assert float(m["logits_pos"]) == pytest.approx(-2.5)
    assert float(m["logits_neg"]) == pytest.approx(-3.5)
    assert float(L.critic_loss(phi, psi, logsumexp_coef=0.0)[0]) == pytest.approx(infonce, rel=1e-6)


def test_critic_loss_3x3_matches_numpy_and_has_finite_gradients():
    rng = np.random.default_rng(0)
    phi, psi = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    logits = -np.linalg.norm(phi[:, None] - psi[None], axis=-1)
    lse = np.log(np.exp(logits).sum(1))
    expected = np.mean(lse - np.diag(logits)) + 0.1 * np.mean(lse**2)
    loss, _ = jax.jit(L.critic_loss)(jnp.asarray(phi, jnp.float32), jnp.asarray(psi, jnp.float32))
    assert float(loss) == pytest.approx(expected, rel=1e-5)

    # phi == psi puts zero distances on the diagonal: the gradient must stay finite there.
    same = jnp.asarray(phi, jnp.float32)
    grad = jax.jit(jax.grad(lambda p: L.critic_loss(p, same)[0]))(same)
    assert np.all(np.isfinite(grad))


def _np_tanh_gaussian_log_prob(u, mean, log_std):
    std = np.exp(log_std)
    normal = -0.5 * ((u - mean) / std) ** 2 - np.log(std) - 0.5 * np.log(2 * np.pi)
    return np.sum(normal - np.log(1.0 - np.tanh(u) ** 2), axis=-1)


def test_sample_tanh_gaussian_matches_numpy_formula():
    mean = jnp.array([[0.3, -1.2, 0.0], [1.5, 0.2, -0.4]])
    log_std = jnp.array([[-0.5, 0.1, -2.0], [0.7, -1.0, -5.0]])
    key = jax.random.key(42)
    action, log_prob = L.sample_tanh_gaussian(mean, log_std, key)
    u = np.asarray(mean, np.float64) + np.exp(np.asarray(log_std, np.float64)) * np.asarray(
        jax.random.normal(key, mean.shape))
    np.testing.assert_allclose(action, np.tanh(u), atol=1e-6)
    np.testing.assert_allclose(log_prob, _np_tanh_gaussian_log_prob(u, np.asarray(mean), np.asarray(log_std)),
                               rtol=1e-4, atol=1e-4)
    assert log_prob.shape == (2,)


def test_tanh_gaussian_density_integrates_to_one_and_stays_finite_when_saturated():
    # p(a) on (-1, 1) for a 1-D tanh-Gaussian, integrated by the trapezoid rule in u = atanh(a).
    u = jnp.linspace(-12.0, 12.0, 20001)[:, None]
    mean, log_std = jnp.full_like(u, 0.8), jnp.full_like(u, 0.3)
    log_p = L.tanh_gaussian_log_prob(u, mean, log_std)
    density_in_a = np.exp(np.asarray(log_p, np.float64))
    da_du = 1.0 - np.tanh(np.asarray(u[:, 0], np.float64)) ** 2
    assert np.trapezoid(density_in_a * da_du, np.asarray(u[:, 0])) == pytest.approx(1.0, abs=1e-3)

    far = L.tanh_gaussian_log_prob(jnp.array([[20.0]]), jnp.array([[20.0]]), jnp.array([[0.0]]))
    # tanh(20) rounds to 1 in float32, yet -log(1 - tanh^2) = 2 * (20 - log 2) + O(e^-40) exactly.
    assert float(far[0]) == pytest.approx(-0.5 * math.log(2 * math.pi) + 2 * (20 - math.log(2)), rel=1e-5)


def test_actor_loss_by_hand_and_alpha_is_constant():
    log_prob = jnp.array([1.0, -2.0, 3.0])
    energy = jnp.array([-1.0, -2.0, 0.5])
    # mean(0.5 * [1, -2, 3] - [-1, -2, 0.5]) = mean([1.5, 1.0, 1.0])
    assert float(L.actor_loss(0.5, log_prob, energy)) == pytest.approx(3.5 / 3)
    d_alpha, d_log_prob, d_energy = jax.grad(L.actor_loss, argnums=(0, 1, 2))(jnp.float32(0.5), log_prob, energy)
    assert float(d_alpha) == 0.0
    np.testing.assert_allclose(d_log_prob, [0.5 / 3] * 3)
    np.testing.assert_allclose(d_energy, [-1 / 3] * 3)


def test_alpha_loss_by_hand_and_its_gradient_sign():
    log_alpha = jnp.float32(math.log(2.0))
    log_prob = jnp.array([-1.0, 0.5])
    # alpha = 2, -log_prob - target = [1 + 1, -0.5 + 1] = [2, 0.5] -> mean(2 * [2, 0.5]) = 2.5
    assert float(L.alpha_loss(log_alpha, log_prob, -1.0)) == pytest.approx(2.5, rel=1e-6)
    d_log_alpha, d_log_prob = jax.grad(L.alpha_loss, argnums=(0, 1))(log_alpha, log_prob, -1.0)
    assert float(d_log_alpha) == pytest.approx(2.5, rel=1e-6) and not np.any(d_log_prob)
    # Entropy (mean -log_prob = 4) below a target of 6: descending the gradient must raise alpha.
    low_entropy = jnp.array([-4.0, -4.0])
    assert float(jax.grad(L.alpha_loss)(log_alpha, low_entropy, 6.0)) < 0
    assert L.default_target_entropy(4) == -2.0
