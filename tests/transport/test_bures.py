import jax
import jax.numpy as jnp
import numpy as np
import ot
import pytest
import scipy.linalg
import scipy.optimize

from driftax import transport as tr
from driftax.transport import bures


def _gaussians(d, seed):
    rng = np.random.default_rng(seed)
    X, Y = rng.normal(size=(d, d)), rng.normal(size=(d, d))
    return rng.normal(size=d), X @ X.T / d + 0.3 * np.eye(d), rng.normal(size=d), Y @ Y.T / d + 0.3 * np.eye(d)


@pytest.mark.parametrize("d", [1, 3, 6])
def test_w2_matches_pot_and_scipy_sqrtm(x64, d):
    m1, S1, m2, S2 = _gaussians(d, d)
    ref_pot = ot.gaussian.bures_wasserstein_distance(m1, m2, S1, S2)
    r1 = scipy.linalg.sqrtm(S1).real
    ref_scipy = np.sqrt(np.sum((m1 - m2) ** 2) + np.trace(S1 + S2 - 2 * scipy.linalg.sqrtm(r1 @ S2 @ r1).real))
    assert float(bures.w2(m1, S1, m2, S2)) == pytest.approx(float(ref_pot), rel=1e-10)
    assert float(bures.w2(m1, S1, m2, S2)) == pytest.approx(ref_scipy, rel=1e-10)
    assert float(bures.w2(m1, S1, m1, S1)) == pytest.approx(0.0, abs=1e-7)


def test_w2_one_dimensional_samples(x64):
    # in 1-D the empirical W2 between sorted samples converges at rate n^{-1/2}; W2^2 = (m1-m2)^2 + (s1-s2)^2.
    # With n = 200_000 quantile-coupled draws the Monte Carlo sd of the estimate of W2^2 is ~ 4e-3 (CLT on
    # mean((x_(i) - y_(i))^2), variance ~ 2 (s1 - s2)^4 / n + ...); we allow 5e-3 relative.
    rng = np.random.default_rng(0)
    m1, s1, m2, s2 = 0.3, 1.2, -0.5, 0.7
    x = np.sort(m1 + s1 * rng.normal(size=200_000))
    y = np.sort(m2 + s2 * rng.normal(size=200_000))
    emp = np.mean((x - y) ** 2)
    exact = float(bures.w2_squared(np.array([m1]), np.array([[s1**2]]), np.array([m2]), np.array([[s2**2]])))
    assert exact == pytest.approx((m1 - m2) ** 2 + (s1 - s2) ** 2, rel=1e-12)
    assert emp == pytest.approx(exact, rel=5e-3)


def test_w2_is_the_cost_of_the_bures_map_on_samples(x64):
    # W2^2 = E|X - T(X)|^2 with T the optimal affine map, and T pushes N(m1,S1) to N(m2,S2): Monte Carlo
    # with 400_000 draws has relative sd ~ sqrt(Var|X-TX|^2 / n) / W2^2 ~ 3e-3 here; tolerance 1.5e-2 (~5 sd).
    m1, S1, m2, S2 = _gaussians(3, 7)
    T = np.asarray(bures.transport_map(S1, S2))
    rng = np.random.default_rng(1)
    X = rng.multivariate_normal(m1, S1, size=400_000)
    Y = m2 + (X - m1) @ T.T
    mc = np.mean(np.sum((X - Y) ** 2, axis=1))
    assert mc == pytest.approx(float(bures.w2_squared(m1, S1, m2, S2)), rel=1.5e-2)
    np.testing.assert_allclose(np.cov(Y.T), S2, atol=0.03 * np.abs(S2).max())


def test_geodesic_constant_speed_and_exp_log(x64):
    m1, S1, m2, S2 = _gaussians(3, 3)
    w = float(bures.w2(m1, S1, m2, S2))
    ma, Sa = bures.geodesic(m1, S1, m2, S2, 0.25)
    mb, Sb = bures.geodesic(m1, S1, m2, S2, 0.75)
    assert float(bures.w2(ma, Sa, mb, Sb)) == pytest.approx(0.5 * w, rel=1e-8)
    m0, S0 = bures.geodesic(m1, S1, m2, S2, 0.0)
    m_1, S_1 = bures.geodesic(m1, S1, m2, S2, 1.0)
    np.testing.assert_allclose(S0, S1, atol=1e-10)
    np.testing.assert_allclose(S_1, S2, atol=1e-10)
    v, V = bures.log_map(m1, S1, m2, S2)
    me, Se = bures.exp_map(m1, S1, v, V)
    np.testing.assert_allclose(me, m2, atol=1e-12)
    np.testing.assert_allclose(Se, S2, atol=1e-10)


def _entropic_by_optimisation(m1, S1, m2, S2, eps):
    # independent route: minimise E|x-y|^2 + eps KL over Gaussian couplings with cross-covariance K;
    # KL(pi | mu x nu) = -1/2 log det(I - S2^{-1} K^T S1^{-1} K)
    d = len(m1)

    def obj(k):
        K = k.reshape(d, d)
        M = np.eye(d) - np.linalg.solve(S2, K.T @ np.linalg.solve(S1, K))
        s, ld = np.linalg.slogdet(M)
        return 1e10 if s <= 0 else np.sum((m1 - m2) ** 2) + np.trace(S1 + S2 - 2 * K) - 0.5 * eps * ld

    res = scipy.optimize.minimize(obj, np.zeros(d * d), method="Nelder-Mead",
                                  options=dict(xatol=1e-12, fatol=1e-14, maxiter=40_000))
    return res.fun


@pytest.mark.parametrize("eps", [0.1, 1.0])
def test_entropic_closed_form_matches_optimisation(x64, eps):
    m1, S1, m2, S2 = _gaussians(2, 11)
    assert float(bures.entropic_ot(m1, S1, m2, S2, eps)) == pytest.approx(
        _entropic_by_optimisation(m1, S1, m2, S2, eps), rel=1e-7)


def test_entropic_tends_to_w2(x64):
    m1, S1, m2, S2 = _gaussians(3, 5)
    w2 = float(bures.w2_squared(m1, S1, m2, S2))
    gaps = [float(bures.entropic_ot(m1, S1, m2, S2, e)) - w2 for e in (1e-2, 1e-4, 1e-6)]
    assert abs(gaps[2]) < abs(gaps[1]) < abs(gaps[0])
    assert abs(gaps[2]) < 1e-4


def test_entropic_closed_form_vs_sinkhorn_on_samples():
    # Sample estimate: OT_eps between empirical measures of n draws (KL relative to the product of the
    # empirical marginals: reg_cost + eps log(n m) for uniform weights). Its fluctuation is O(n^{-1/2})
    # (Mena & Weed 2019; del Barrio et al. 2023, CLT for entropic OT). Measured here for this pair (value 5.64):
    # sd over 16 seeds 0.13 at n = 800, so ~0.095 at n = 1500 and ~0.047 for the mean of 4 replicates; the
    # tolerance 0.2 is ~4 sd. The O(1/n) bias (mean over 16 seeds at n = 800 was within 1.2 SE) is far below it.
    m1, S1, m2, S2 = _gaussians(2, 11)
    eps = 1.0
    exact = float(bures.entropic_ot(m1, S1, m2, S2, eps))
    ests = []
    n = 1500
    for seed in range(4):
        rng = np.random.default_rng(100 + seed)
        x = rng.multivariate_normal(m1, S1, size=n)
        y = rng.multivariate_normal(m2, S2, size=n)
        C = ((x[:, None] - y[None]) ** 2).sum(-1)
        res = tr.sinkhorn(None, None, C, eps, tol=1e-9)
        assert bool(res.converged)
        ests.append(float(res.reg_cost) + eps * np.log(n * n))
    assert np.mean(ests) == pytest.approx(exact, abs=0.2)


def test_bad_shapes():
    with pytest.raises(ValueError, match="covariance 1 must have shape"):
        bures.w2(np.zeros(2), np.eye(3), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="dimensions differ"):
        bures.w2(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match="epsilon must be positive"):
        bures.entropic_ot(np.zeros(2), np.eye(2), np.zeros(2), np.eye(2), 0.0)


def test_vmap_w2(x64):
    m = jnp.zeros((4, 2))
    S = jnp.stack([jnp.eye(2) * (i + 1.0) for i in range(4)])
    out = jax.vmap(bures.w2_squared)(m, S, m, jnp.stack([jnp.eye(2)] * 4))
    np.testing.assert_allclose(out, [2 * (np.sqrt(i + 1.0) - 1) ** 2 for i in range(4)], rtol=1e-10)
