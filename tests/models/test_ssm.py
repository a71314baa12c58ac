"""State-space models and their exact references.

Ground truth for the Kalman recursions: the model's joint Gaussian law of (x_{0:T-1}, y_{0:T-1}) written
out as one dense covariance matrix and conditioned with plain linear algebra (no recursion shared
with the code under test). Model densities are checked against scipy.stats.
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from driftax.models import ssm

A3 = np.array([[0.8, 0.1, 0.0], [-0.1, 0.7, 0.2], [0.0, 0.1, 0.6]])
C3 = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, -0.3]])
Q3 = np.array([[0.5, 0.1, 0.0], [0.1, 0.4, 0.05], [0.0, 0.05, 0.3]])
R3 = np.array([[0.6, 0.1], [0.1, 0.8]])
M03 = np.array([0.5, -0.2, 0.1])
P03 = np.diag([1.0, 0.5, 0.8])
# the model stores θ in the default float32: the dense reference uses the same rounded numbers
A3, C3, Q3, R3, M03, P03 = (np.asarray(np.float32(v), np.float64) for v in (A3, C3, Q3, R3, M03, P03))


def model3(**kw):
    return ssm.linear_gaussian(A3, C3, Q3, R3, M03, P03, **kw)


def dense_joint(T):
    """Mean and covariance of (x_0..x_{T-1}, y_0..y_{T-1}) stacked, from the state recursion unrolled."""
    d, p = 3, 2
    # x_t = A^t x_0 + sum_{s<=t} A^{t-s} w_s: Cov(x_t, x_u) = A^t P0 A^u^T + sum_{s=1}^{min} A^{t-s} Q A^{u-s}^T
    mats = [np.linalg.matrix_power(A3, k) for k in range(T)]
    Sx = np.zeros((T * d, T * d))
    for t in range(T):
        for u in range(T):
            c = mats[t] @ P03 @ mats[u].T
            for s in range(1, min(t, u) + 1):
                c += mats[t - s] @ Q3 @ mats[u - s].T
            Sx[t * d:(t + 1) * d, u * d:(u + 1) * d] = c
    mx = np.concatenate([mats[t] @ M03 for t in range(T)])
    Cbig = np.kron(np.eye(T), C3)
    Sy = Cbig @ Sx @ Cbig.T + np.kron(np.eye(T), R3)
    Sxy = Sx @ Cbig.T
    return mx, Sx, Cbig @ mx, Sy, Sxy, d, p


def condition(ys, keep):
    T = ys.shape[0]
    mx, Sx, my, Sy, Sxy, d, p = dense_joint(T)
    rows = np.concatenate([np.arange(t * p, (t + 1) * p) for t in range(T) if keep[t]])
    yv = ys.reshape(-1)[rows]
    Syy, Sxr = Sy[np.ix_(rows, rows)], Sxy[:, rows]
    mean = mx + Sxr @ np.linalg.solve(Syy, yv - my[rows])
    cov = Sx - Sxr @ np.linalg.solve(Syy, Sxr.T)
    ll = stats.multivariate_normal(my[rows], Syy).logpdf(yv)
    return mean.reshape(T, d), cov, ll


@pytest.fixture(scope="module")
def data3():
    _, ys = model3().simulate(3, 6)
    return ys


def test_kalman_matches_dense_gaussian_conditioning(data3):
    ys = data3
    T, d = ys.shape[0], 3
    mean, cov, ll = condition(ys, np.ones(T, bool))
    ks = ssm.kalman_smoother(model3(), ys)
    # float64 on both sides; the dense solve of a 12x12 system loses ~1e-12 relative
    np.testing.assert_allclose(ks.loglik, ll, rtol=1e-9)
    np.testing.assert_allclose(ks.means, mean, atol=1e-9)
    for t in range(T):
        np.testing.assert_allclose(ks.covs[t], cov[t * d:(t + 1) * d, t * d:(t + 1) * d], atol=1e-9)
    for t in range(T - 1):
        np.testing.assert_allclose(ks.cross_covs[t], cov[t * d:(t + 1) * d, (t + 1) * d:(t + 2) * d], atol=1e-9)
    # the summaries used as truths elsewhere
    cross = sum(cov[t * d:(t + 1) * d, (t + 1) * d:(t + 2) * d] + np.outer(mean[t], mean[t + 1]) for t in range(T - 1))
    np.testing.assert_allclose(ks.sum_cross_moments(), cross, atol=1e-9)
    np.testing.assert_allclose(ks.sum_means(), mean.sum(0), atol=1e-9)
    # the filter's last step is the smoother's last step
    np.testing.assert_allclose(ks.filter.means[-1], mean[-1], atol=1e-9)


def test_kalman_missing_rows_are_dropped_from_the_conditioning(data3):
    ys = data3.copy()
    ys[2] = np.nan
    keep = ~np.isnan(ys).any(1)
    mean, _, ll = condition(np.nan_to_num(ys), keep)
    ks = ssm.kalman_smoother(model3(allow_missing=True), ys)
    np.testing.assert_allclose(ks.loglik, ll, rtol=1e-9)
    np.testing.assert_allclose(ks.means, mean, atol=1e-9)
    # the particle-side observation density ignores the missing row
    m = model3(allow_missing=True)
    assert float(m.log_g(m.theta, 2, jnp.zeros(3), jnp.asarray(ys[2]))) == 0.0
    g = jax.grad(lambda th: m.log_g(th, 2, jnp.zeros(3), jnp.asarray(ys[2], jnp.float32)))(m.theta)
    assert all(np.all(np.isfinite(v)) for v in jax.tree.leaves(g))


def test_exact_paths_follow_the_smoothing_law(data3):
    ys = data3
    T, d = ys.shape[0], 3
    mean, cov, _ = condition(ys, np.ones(T, bool))
    n = 20_000
    paths = ssm.kalman_sample_paths(model3(), ys, n, seed=1).reshape(n, T * d)
    sd = np.sqrt(np.diag(cov))
    # sample mean error sd = sd / sqrt(n); 5 sd over 18 coordinates: P(false alarm) < 1e-5
    assert np.all(np.abs(paths.mean(0) - mean.ravel()) < 5 * sd / math.sqrt(n))
    # sample covariance entry error sd <= sqrt((S_ii S_jj + S_ij^2) / n) (Gaussian fourth moments)
    emp = np.cov(paths.T)
    bound = np.sqrt((np.outer(sd ** 2, sd ** 2) + cov ** 2) / n)
    assert np.all(np.abs(emp - cov) < 5 * bound)


def test_model_densities_match_scipy():
    x, xp, y = np.array([0.3]), np.array([-0.4]), np.array([0.7])
    sv = ssm.stochastic_volatility(mu=-0.5, phi=0.8, sigma=0.4)
    th = sv.theta
    assert np.isclose(sv.init_logpdf(th, x), stats.norm(-0.5, 0.4 / math.sqrt(1 - 0.64)).logpdf(0.3), atol=1e-5)
    assert np.isclose(sv.transition_logpdf(th, 1, xp, x), stats.norm(-0.5 + 0.8 * 0.1, 0.4).logpdf(0.3), atol=1e-5)
    assert np.isclose(sv.obs_logpdf(th, 1, x, y), stats.norm(0, math.exp(0.15)).logpdf(0.7), atol=1e-5)
    assert float(sv.transition_log_bound(th, 1)) >= float(sv.transition_logpdf(th, 1, xp, xp * 0.8 - 0.1))
    ng = ssm.nonlinear_growth()
    th = ng.theta
    drift = -0.2 + 25 * -0.4 / 1.16 + 8 * math.cos(1.2 * 3)
    assert np.isclose(ng.transition_logpdf(th, 3, xp, x), stats.norm(drift, math.sqrt(10)).logpdf(0.3), atol=1e-5)
    assert np.isclose(ng.obs_logpdf(th, 3, x, y), stats.norm(0.09 / 20, 1.0).logpdf(0.7), atol=1e-5)
    lg = model3()
    xa, xb, yb = np.array([0.1, -0.2, 0.3]), np.array([0.5, 0.4, -0.6]), np.array([0.2, -0.1])
    assert np.isclose(lg.transition_logpdf(lg.theta, 1, xa, xb),
                      stats.multivariate_normal(A3 @ xa, Q3).logpdf(xb), atol=1e-4)
    assert np.isclose(lg.obs_logpdf(lg.theta, 1, xb, yb), stats.multivariate_normal(C3 @ xb, R3).logpdf(yb), atol=1e-4)
    assert np.isclose(lg.init_logpdf(lg.theta, xa), stats.multivariate_normal(M03, P03).logpdf(xa), atol=1e-4)
    # the accept-reject bound is the density's maximum (at x_t = A x_{t-1})
    assert np.isclose(lg.transition_log_bound(lg.theta, 1), lg.transition_logpdf(lg.theta, 1, xa, A3 @ xa), atol=1e-4)


def test_simulate_shapes_and_moments():
    m = ssm.linear_gaussian(0.5, 1.0, 1.0, 0.25, P0=4.0 / 3.0)  # stationary: var = 1 / (1 - 0.25)
    xs, ys = m.simulate(0, 4000)
    assert xs.shape == (4000, 1) and ys.shape == (4000, 1)
    # AR(1) with phi=0.5: var of the sample variance ~ 2 s^4 (1+phi^2)/(1-phi^2) / n; 5 sd
    v = 4.0 / 3.0
    assert abs(xs.var() - v) < 5 * math.sqrt(2 * v * v * (1.25 / 0.75) / 4000)
    assert abs(np.var(ys - xs) - 0.25) < 5 * math.sqrt(2 * 0.25 ** 2 / 4000)
    a, b = m.simulate(7, 10)
    c, d = m.simulate(7, 10)
    np.testing.assert_array_equal(a, c)  # same seed, same draws


def test_parameter_transforms_round_trip():
    m = model3()
    u = m.unconstrain(m.theta)
    back = m.constrain(u)
    for k in m.theta:
        np.testing.assert_allclose(back[k], m.theta[k], rtol=1e-5, atol=1e-6)
    sv = ssm.stochastic_volatility()
    back = sv.constrain(sv.unconstrain(sv.theta))
    for k in sv.theta:
        np.testing.assert_allclose(back[k], sv.theta[k], rtol=1e-5)


def test_bad_parameters_and_observations_are_rejected():
    with pytest.raises(ValueError, match="phi"):
        ssm.stochastic_volatility(phi=1.2)
    with pytest.raises(ValueError, match="sigma"):
        ssm.stochastic_volatility(sigma=-1.0)
    with pytest.raises(ValueError, match="Q"):
        ssm.linear_gaussian(0.5, 1.0, -1.0, 1.0, P0=1.0)
    with pytest.raises(ValueError, match="positive definite"):
        model3().with_theta({"Q": -np.eye(3)})
    with pytest.raises(ValueError, match="shape"):
        model3().with_theta({"A": np.eye(2)})
    with pytest.raises(TypeError, match="unknown"):
        model3().with_theta({"B": np.eye(3)})
    with pytest.raises(ValueError, match="C"):
        ssm.linear_gaussian(np.eye(3), np.ones((2, 2)), np.eye(3), np.eye(2))
    m = model3()
    with pytest.raises(ValueError, match=r"ys must have shape \(T, 2\)"):
        m.check_observations(np.zeros((10, 3)))
    ys = np.zeros((10, 2))
    ys[3, 1] = np.nan
    with pytest.raises(ValueError, match="allow_missing"):
        m.check_observations(ys)
    assert np.isnan(model3(allow_missing=True).check_observations(ys)).sum() == 1
    with pytest.raises(ValueError, match="infinite"):
        m.check_observations(np.full((10, 2), np.inf))
    with pytest.raises(ValueError, match="at least 2"):
        m.check_observations(np.zeros((1, 2)))
    with pytest.raises(TypeError, match="num_steps"):
        m.simulate(0, 3.5)


def test_batched_log_densities_are_right_at_scale():
    """The transition density of the 3-d model over 18,000 gathered particle pairs inside one jit (the size of the
    accept-reject block of a backward step), against scipy. Regression: the former
    ``jnp.sum(M * v[None, :], axis=1)`` product was miscompiled by XLA CPU at this size (errors up to 13 nats
    beyond row ~11,000), which biased 3-d PaRIS. float32 rounding of |log q| < 60: error < 1e-4."""
    m = model3()
    rng = np.random.default_rng(0)
    x_prev = rng.normal(size=(50, 3)).astype(np.float32)
    n = 18_000
    idx = jax.random.randint(jax.random.key(3), (n,), 0, 50)
    x_next = jnp.asarray(rng.normal(size=(n, 3)), jnp.float32)
    lq = jax.jit(lambda i, xn: jax.vmap(lambda a, b: m.transition_logpdf(m.theta, 1, a, b))(jnp.asarray(x_prev)[i],
                                                                                           xn))(idx, x_next)
    idx, lq, xn = np.asarray(idx), np.asarray(lq, np.float64), np.asarray(x_next, np.float64)
    mean = x_prev.astype(np.float64)[idx] @ A3.T
    ref = stats.multivariate_normal(np.zeros(3), Q3).logpdf(xn - mean)
    np.testing.assert_allclose(lq, ref, atol=1e-4)
