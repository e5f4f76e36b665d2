"""Distillation losses on tiny hand-made inputs, against values computed by hand."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from deepcrl.student import losses as L


def test_action_mse_is_measured_in_squashed_space():
    student = jnp.arctanh(jnp.array([[0.5, 0.0], [0.0, -0.5]]))
    teacher = jnp.zeros((2, 2))
    # squared errors 0.25, 0, 0, 0.25 -> mean 0.125
    assert float(L.action_mse(student, teacher)) == pytest.approx(0.125, abs=1e-6)
    # far in the saturated tail a large pre-tanh difference costs (almost) nothing
    assert float(L.action_mse(jnp.full((1, 2), 20.0), jnp.full((1, 2), 40.0))) < 1e-12


def test_gaussian_kl_matches_closed_form():
    zero = jnp.zeros((1, 1))
    assert float(L.gaussian_kl(zero, zero, zero, zero)) == pytest.approx(0.0, abs=1e-7)
    # teacher N(0, 1), student N(1, 1): KL = (0 - 1)^2 / 2 = 0.5
    assert float(L.gaussian_kl(jnp.ones((1, 1)), zero, zero, zero)) == pytest.approx(0.5, abs=1e-6)
    # teacher N(0, 1), student N(0, 2^2): log 2 + 1 / (2 * 4) - 1/2
    expected = math.log(2.0) + 1.0 / 8.0 - 0.5
    assert float(L.gaussian_kl(zero, jnp.full((1, 1), math.log(2.0)), zero, zero)) == pytest.approx(expected, abs=1e-6)
    # summed over action entries, averaged over the batch
    two = L.gaussian_kl(jnp.ones((3, 2)), jnp.zeros((3, 2)), jnp.zeros((3, 2)), jnp.zeros((3, 2)))
    assert float(two) == pytest.approx(1.0, abs=1e-6)


def test_gaussian_kl_is_forward_kl_teacher_first():
    # KL(teacher N(0, 1) || student N(0, 2^2)) differs from the reverse direction; the teacher is first
    s_log_std, t_log_std = jnp.full((1, 1), math.log(2.0)), jnp.zeros((1, 1))
    forward = float(L.gaussian_kl(jnp.zeros((1, 1)), s_log_std, jnp.zeros((1, 1)), t_log_std))
    reverse = math.log(0.5) + 4.0 / 2.0 - 0.5
    assert forward == pytest.approx(math.log(2.0) + 0.125 - 0.5, abs=1e-6)
    assert forward != pytest.approx(reverse, abs=0.1)  # 0.318 vs 0.807


def test_repr_mse_by_hand():
    phi = jnp.array([[0.0, 0.0], [3.0, 4.0]])
    psi = jnp.array([[0.0, 0.0], [0.0, 4.0]])
    assert float(L.repr_mse(phi, psi)) == pytest.approx(9.0 / 4.0, abs=1e-6)


def test_energy_ranking_nce_has_a_finite_gradient_at_distance_zero():
    phi = jnp.array([[0.0, 0.0], [3.0, 4.0]])  # row 0 sits exactly on goal 0
    psi = jnp.array([[0.0, 0.0], [0.0, 4.0]])
    grads = jax.grad(lambda p, q: L.energy_ranking_nce(p, q, phi + 1.0, psi), argnums=(0, 1))(phi, psi)
    assert all(np.all(np.isfinite(g)) for g in grads)


def test_energy_ranking_nce_by_hand():
    t_phi = t_psi = jnp.array([[0.0], [1.0]])  # teacher energies [[0, -1], [-1, 0]]
    s_phi = s_psi = jnp.zeros((2, 1))  # student energies all 0: uniform over goals
    p = math.e / (math.e + 1.0)  # softmax([0, -1])[0]
    expected = p * math.log(p / 0.5) + (1 - p) * math.log((1 - p) / 0.5)  # same for both rows
    got = float(L.energy_ranking_nce(s_phi, s_psi, t_phi, t_psi))
    assert got == pytest.approx(expected, abs=1e-6)
    # agreement costs nothing; the temperature sharpens the target
    assert float(L.energy_ranking_nce(t_phi, t_psi, t_phi, t_psi)) == pytest.approx(0.0, abs=1e-7)
    assert float(L.energy_ranking_nce(s_phi, s_psi, t_phi, t_psi, temperature=0.1)) > got


def test_energy_ranking_nce_needs_ordering_not_coordinates():
    rng = np.random.default_rng(0)
    t_phi, t_psi = rng.normal(size=(6, 4)), rng.normal(size=(6, 4))
    # a rotated and shifted copy has the same pairwise distances: same ordering, zero loss, yet large MSE
    q, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    s_phi, s_psi = t_phi @ q + 3.0, t_psi @ q + 3.0
    assert float(L.energy_ranking_nce(s_phi, s_psi, t_phi, t_psi)) == pytest.approx(0.0, abs=1e-5)
    assert float(L.repr_mse(s_phi, t_phi)) > 1.0


def test_losses_do_not_differentiate_through_the_teacher():
    t = jnp.array([[0.3, -0.2]])
    s = jnp.array([[0.1, 0.4]])
    assert np.all(jax.grad(lambda t: L.action_mse(s, t))(t) == 0)
    assert np.all(jax.grad(lambda t: L.repr_mse(s, t))(t) == 0)
    assert np.all(jax.grad(lambda t: L.energy_ranking_nce(s, s, t, t))(t) == 0)
    assert np.any(jax.grad(lambda s: L.action_mse(s, t))(s) != 0)


def test_feature_match_normalises_teacher_features():
    teacher = jnp.array([[1.0, 3.0], [10.0, 30.0]])  # both rows normalise to [-1, 1]
    student = jnp.array([[-1.0, 1.0], [0.0, 0.0]])
    # row 0 matches exactly, row 1 is off by 1 in each entry -> mean 0.5
    assert float(L.feature_match(student, teacher)) == pytest.approx(0.5, abs=1e-5)


def test_pre_tanh_mse_on_a_hand_built_case():
    student = jnp.array([[0.0, 1.0], [2.0, -5.0]])
    teacher = jnp.array([[1.0, 1.0], [10.0, -2.0]])  # 10 is clipped to 3 (tanh(3) = 0.995)
    want = ((0 - 1) ** 2 + 0 + (2 - 3) ** 2 + (-5 + 2) ** 2) / 4
    assert float(L.pre_tanh_mse(student, teacher)) == pytest.approx(want)
    # a student saturated on the wrong side still gets a gradient (the squashed-action MSE's nearly vanishes)
    far = jnp.array([[-6.0]])
    g_pre = jax.grad(lambda s: L.pre_tanh_mse(s, jnp.array([[1.0]])))(far)
    g_act = jax.grad(lambda s: L.action_mse(s, jnp.array([[1.0]])))(far)
    assert float(g_pre[0, 0]) < -1.0 and abs(float(g_act[0, 0])) < 1e-3
