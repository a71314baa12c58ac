"""Particle filters: resampling, the likelihood estimate, backward sampling, conditional SMC.

Truths: the weights themselves (resampling counts), the Kalman filter's exact likelihood and backward
probabilities computed in float64 NumPy. Conditional SMC's invariance of the Kalman smoothing law is
tested in tests/samplers/test_paris.py on the stationarity test's compiled run.
Each tolerance is a number of Monte Carlo standard errors; the seeds were varied over 5 values
(0-4) before committing, all passing.
"""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from driftax.models import ssm
from driftax.samplers import smc

MODEL = ssm.linear_gaussian(0.9, 1.0, 0.5, 1.0, P0=1.0)
SEED = 0
RESAMPLE_W = np.array([0.05, 0.3, 0.01, 0.24, 0.4, 0.0])


@pytest.fixture(scope="module")
def resampled():
    """20,000 resamplings of 6 indices from RESAMPLE_W by every scheme, in one compiled program (one XLA
    compilation of the four costs about half of four compilations)."""
    lw = jnp.log(jnp.asarray(RESAMPLE_W, jnp.float32))
    keys = jax.random.split(jax.random.key(SEED), 20_000)
    run = jax.jit(lambda: {sc: jax.vmap(lambda k: smc.resample(k, lw, 6, sc))(keys) for sc in smc.RESAMPLING})
    return {k: np.asarray(v) for k, v in run().items()}


@pytest.mark.parametrize("scheme", smc.RESAMPLING)
def test_resampling_is_unbiased(scheme, resampled):
    w = RESAMPLE_W
    N, R = 6, 20_000
    idx = resampled[scheme]
    counts = np.stack([(idx == i).sum(1) for i in range(N)], 1)
    assert counts.shape == (R, N) and np.all(counts.sum(1) == N)
    assert np.all(counts[:, 5] == 0)  # a zero weight is never drawn
    # E[count_i] = N w_i; the mean over R draws has sd <= sqrt(N w (1-w) / R) (multinomial is the
    # largest variance of the four): 5 sd per cell
    sd = np.sqrt(N * w * (1 - w) / R)
    assert np.all(np.abs(counts.mean(0) - N * w) <= 5 * sd + 1e-12)
    if scheme in ("systematic", "stratified", "residual"):
        assert np.all(counts >= np.floor(N * w) - (scheme == "stratified") * 1)
    if scheme == "systematic":  # the defining property: every count is floor or ceil of N w
        assert np.all(counts <= np.ceil(N * w))
    if scheme == "residual":
        assert np.all(counts >= np.floor(N * w))


@pytest.fixture(scope="module")
def short_data():
    _, ys = MODEL.simulate(SEED + 1, 20)
    return ys


CONFIGS = (("systematic", 1.0), ("multinomial", 0.5), ("residual", 1.0))


@functools.lru_cache(maxsize=None)
def filters(R=2000, N=16):
    """R bootstrap filters of N particles for each (scheme, ESS threshold) of CONFIGS on data given as an
    argument: one compiled program for the three (one XLA compilation of the three filters costs about half
    of three compilations), shared by the likelihood and non-finite-flag tests."""
    keys = jax.random.split(jax.random.key(SEED), R)
    return jax.jit(lambda ys: [jax.vmap(lambda k: smc.bootstrap_filter(k, MODEL, MODEL.theta, ys, N, scheme=sc,
                                                                       ess_threshold=thr))(keys)
                               for sc, thr in CONFIGS])


@pytest.fixture(scope="module")
def likelihood_runs(short_data):
    return dict(zip(CONFIGS, filters()(jnp.asarray(short_data, jnp.float32))))


@pytest.mark.parametrize("scheme,threshold", CONFIGS)
def test_likelihood_estimate_is_unbiased(short_data, likelihood_runs, scheme, threshold):
    ys = short_data
    exact = ssm.kalman_loglik(MODEL, ys)
    R = 2000
    out = likelihood_runs[(scheme, threshold)]
    assert bool(out.finite.all())
    ratio = np.exp(np.asarray(out.loglik, np.float64) - exact)
    # E[Z_hat / Z] = 1 (Del Moral 2004); the mean of R i.i.d. ratios has sd = sd(ratio) / sqrt(R): 5 sd
    assert abs(ratio.mean() - 1) < 5 * ratio.std() / math.sqrt(R)
    if threshold < 1:  # adaptive: some steps do not resample
        assert 0 < np.asarray(out.resampled).mean() < 1
    else:
        assert np.asarray(out.resampled)[:, 1:].all()


BACKWARD_CASES = (("hybrid", 2), ("hybrid", 8), ("exact", 1))
X_PREV = np.array([[-1.0], [0.2], [0.5], [1.5], [3.0]])
W_PREV = np.array([0.1, 0.3, 0.2, 0.25, 0.15])
PTS, REPS = np.array([-0.5, 0.8, 2.5]), 4000


@pytest.fixture(scope="module")
def backward_draws():
    """``REPS`` backward draws for each of 3 points by each (method, max_trials) of BACKWARD_CASES, in one
    compiled program (one XLA compilation of the three costs about half of three)."""
    lw = jnp.log(jnp.asarray(W_PREV, jnp.float32))
    x_next = jnp.repeat(jnp.asarray(PTS, jnp.float32)[:, None], REPS, axis=0)
    run = jax.jit(lambda k: [smc.backward_indices(k, MODEL, MODEL.theta, 1, jnp.asarray(X_PREV, jnp.float32), lw,
                                                  x_next, method=m, max_trials=mt) for m, mt in BACKWARD_CASES])
    return dict(zip(BACKWARD_CASES, run(jax.random.key(SEED))))


@pytest.mark.parametrize("method,max_trials", BACKWARD_CASES)
def test_backward_draws_follow_the_backward_kernel(method, max_trials, backward_draws):
    x_prev, w, pts, reps = X_PREV, W_PREV, PTS, REPS
    J, nfb = backward_draws[(method, max_trials)]
    J = np.asarray(J).reshape(3, reps)
    # exact backward probabilities p(l | x') ∝ w_l N(x'; 0.9 x_l, 0.5) in float64
    logq = stats.norm(0.9 * np.asarray(x_prev)[:, 0][None, :], math.sqrt(0.5)).logpdf(pts[:, None])
    p = w[None] * np.exp(logq)
    p /= p.sum(1, keepdims=True)
    counts = np.stack([(J == l).sum(1) for l in range(5)], 1)
    # each count is Binomial(reps, p): exact binomial quantiles (a normal band fails for the rare cells,
    # p ~ 1e-6 here), 1e-6 per side and cell, 15 cells: P(false alarm) < 3e-5
    assert np.all(counts >= stats.binom.ppf(1e-6, reps, p)) and np.all(counts <= stats.binom.ppf(1 - 1e-6, reps, p))
    assert np.all(np.abs(counts / reps - p) <= 5 * np.sqrt(p * (1 - p) / reps) + 1.5 / reps)
    if method == "hybrid" and max_trials == 2:
        assert int(nfb) > 0  # the exact fall-back ran (and the law above includes it)


def test_backward_draws_follow_the_backward_kernel_3d():
    """3-d model, 2 accept-reject trials then the exact fall-back, 9,000 rows (18,000 proposal pairs in one
    block): the size at which a miscompiled log-density once made the accept-reject draws wrong (index 4 drawn
    with frequency 0.07 against 0.006). Exact binomial quantiles as above."""
    A3 = np.array([[0.8, 0.1, 0.0], [-0.1, 0.7, 0.2], [0.0, 0.1, 0.6]])
    Q3 = np.diag([0.5, 0.4, 0.3])
    m3 = ssm.linear_gaussian(A3, np.eye(3)[:2], Q3, np.eye(2), P0=np.eye(3))
    rng = np.random.default_rng(0)
    x_prev = rng.normal(size=(6, 3)).astype(np.float32)
    w = rng.dirichlet(np.ones(6))
    pts = (x_prev[:3] @ A3.T + 0.3 * rng.normal(size=(3, 3))).astype(np.float32)
    reps = 3000
    x_next = jnp.repeat(jnp.asarray(pts), reps, axis=0)
    lw = jnp.log(jnp.asarray(w, jnp.float32))
    J, nfb = jax.jit(lambda k: smc.backward_indices(k, m3, m3.theta, 1, jnp.asarray(x_prev), lw, x_next,
                                                    method="hybrid", max_trials=2))(jax.random.key(SEED))
    J = np.asarray(J).reshape(3, reps)
    logq = np.array([[stats.multivariate_normal(A3 @ x_prev[l], Q3).logpdf(pts[i]) for l in range(6)]
                     for i in range(3)])
    p = w[None] * np.exp(logq - logq.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    counts = np.stack([(J == l).sum(1) for l in range(6)], 1)
    # 18 cells, 1e-6 per side and cell: P(false alarm) < 4e-5
    assert np.all(counts >= stats.binom.ppf(1e-6, reps, p)) and np.all(counts <= stats.binom.ppf(1 - 1e-6, reps, p))
    assert int(nfb) > 0


def test_filter_flags_non_finite_runs():
    # the likelihood test's program (T = 20, 2,000 filters of 16 particles per configuration), other data
    ys = np.zeros((20, 1), np.float32)
    ys[4] = 1e30  # (y - x)^2 overflows float32: every weight at t = 4 is 0, the estimate -inf
    run = filters()
    assert not any(np.any(np.asarray(out.finite)) for out in run(jnp.asarray(ys)))
    assert all(np.all(np.asarray(out.finite)) for out in run(jnp.zeros((20, 1), jnp.float32)))  # finite data
