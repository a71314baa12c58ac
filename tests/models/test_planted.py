"""Planted problems against closed forms: NumPy's Hermite polynomials, the population correlation
loss -k! <theta, theta*>^k, the analytic gradient, tensor symmetry; bad input."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from driftax.models import planted


@pytest.mark.parametrize("k", range(6))
def test_hermite_matches_numpy(k):
    z = np.linspace(-3, 3, 13)
    ref = np.polynomial.hermite_e.hermeval(z, [0.0] * k + [1.0])
    with jax.enable_x64(True):
        np.testing.assert_allclose(planted.hermite(k, jnp.asarray(z)), ref, rtol=1e-12, atol=1e-12)


def test_empirical_loss_estimates_the_population_loss():
    """E[y He_k(<theta, x>)] = k! <theta, theta*>^k (Hermite orthogonality; the label noise is
    independent). The empirical mean of n = 200k terms has MC sd = sd(terms)/sqrt(n), measured on
    the sample itself; 4.5 of those."""
    k, d, n = 3, 5, 200_000
    with jax.enable_x64(True):
        p = planted.single_index(d, n, k, seed=0, dtype=jnp.float64)
        theta = 0.6 * p.theta_star + 0.8 * jnp.asarray(np.linalg.qr(np.stack([np.asarray(p.theta_star), np.eye(d)[0]], 1))[0][:, 1])
        theta = theta / jnp.linalg.norm(theta)
        m = float(theta @ p.theta_star)
        x, y = p.data
        terms = np.asarray(y * planted.hermite(k, x @ theta))
        assert abs(-float(p.loss(theta)) - math.factorial(k) * m**k) <= 4.5 * terms.std() / np.sqrt(n)
        # gradient: -(1/n) sum y He_k'(z) x with He_k' = k He_{k-1}
        z = x @ theta
        g_ref = -np.mean(np.asarray(y * k * planted.hermite(k - 1, z))[:, None] * np.asarray(x), 0)
        np.testing.assert_allclose(p.grad(theta), g_ref, rtol=1e-10, atol=1e-12)


def test_moment_form_is_the_same_loss():
    """He_k(z) = sum_j c_j z^j makes -(1/n) sum_i y_i He_k(<theta, x_i>) = -sum_j c_j <M_j, theta^(x)j>
    with M_j = (1/n) sum_i y_i x_i^(x)j, at every theta (off the sphere too): the moment form must
    equal the data form and its gradient, k = 3 (odd terms) and 4 (even terms and a constant),
    in float64 to summation rounding: ~n d^k terms of size up to ~1e2 at 1e-16 each, about 1e-13
    relative; 1e-10 allowed (a wrong coefficient or index is an O(1) difference)."""
    with jax.enable_x64(True):
        pairs = [(planted.single_index(4, 50, k, seed=k, dtype=jnp.float64),
                  planted.single_index(4, 50, k, seed=k, dtype=jnp.float64, moments=True)) for k in (3, 4)]
        theta = jnp.asarray(np.random.default_rng(0).normal(size=4))
        both = jax.jit(lambda th: [(jax.value_and_grad(a.loss)(th), jax.value_and_grad(b.loss)(th)) for a, b in pairs])
        for (la, ga), (lb, gb) in both(theta):
            np.testing.assert_allclose(float(lb), float(la), rtol=1e-10)
            np.testing.assert_allclose(gb, ga, rtol=1e-10, atol=1e-10)
    with pytest.raises(TypeError, match="moments must be a bool"):
        planted.single_index(4, 50, 3, moments="yes")


def test_tensor_pca_is_symmetric_and_spiked():
    with jax.enable_x64(True):
        p = planted.tensor_pca(6, 3, snr=2.0, seed=1, dtype=jnp.float64)
        t = np.asarray(p.data[0])
        for perm in ((1, 0, 2), (2, 1, 0), (0, 2, 1)):
            np.testing.assert_allclose(t, np.transpose(t, perm), atol=1e-14)
        star = np.asarray(p.theta_star)
        noise = (t - 2.0 * np.einsum("i,j,k->ijk", star, star, star)) * np.sqrt(6)
        # the loss at theta* is -snr - <W, theta*^3>/sqrt(d)
        np.testing.assert_allclose(float(p.loss(p.theta_star)),
                                   -2.0 - np.einsum("ijk,i,j,k->", noise, star, star, star) / np.sqrt(6), rtol=1e-12)


def test_estimators():
    v = jnp.array([0.0, 3.0, 4.0])
    np.testing.assert_allclose(planted.estimate_direction(v, k=3), v / 5.0, rtol=1e-6)
    outer = 0.7 * jnp.outer(jnp.array([0.6, 0.8, 0.0]), jnp.array([0.6, 0.8, 0.0])) + 0.1 * jnp.eye(3)
    est = planted.estimate_direction(jnp.zeros(3), outer, k=4)
    assert abs(abs(float(est @ jnp.array([0.6, 0.8, 0.0]))) - 1) < 1e-6
    with pytest.raises(ValueError, match="even k"):
        planted.estimate_direction(v, None, k=4)


@pytest.mark.parametrize("kwargs, match", [({"d": 1}, "d must be >= 2"), ({"k": 0}, "k must be >= 1"),
                                           ({"n": 0}, "n must be >= 1"), ({"noise": -1.0}, "noise must be >= 0")])
def test_bad_input(kwargs, match):
    args = {"d": 5, "n": 10, "k": 3, **kwargs}
    with pytest.raises(ValueError, match=match):
        planted.single_index(args.pop("d"), args.pop("n"), args.pop("k"), **args)
    if "d" in kwargs or "k" in kwargs:
        with pytest.raises(ValueError, match=match):
            planted.tensor_pca(kwargs.get("d", 5), kwargs.get("k", 3))
