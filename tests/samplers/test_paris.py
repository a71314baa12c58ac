"""PaRIS, FFBS and PaRIS particle Gibbs against the Kalman smoother (T = 100, 1-d and 3-d models).

Truth: Σ_t E[x_t | y] and Σ_t E[x_t x_{t+1}ᵀ | y] from the Rauch-Tung-Striebel smoother (itself tested
against dense Gaussian conditioning in tests/models/test_ssm.py). Tolerances are in units of the Monte
Carlo standard error ``se = sd / √R`` of R independent replicates. The biases of PaRIS and FFBS are
O(T/N); in 1-d at the N used here they were measured (200 replicates, this data set) below 1.5 se, so a
5 se bound leaves 3.5 se for noise: with se itself estimated from R - 1 degrees of freedom, a false
alarm per component has probability below 3e-3 (t distribution). Seeds 0-4 all pass.
The bias-reduction test (PPG against PaRIS at equal particle budget) uses the smoother's variances as its
truth, on a longer series and a smaller budget where PaRIS's bias is many standard errors.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from driftax.cli.smooth import build_model
from driftax.infer.smoothing import builtin_functional, smooth
from driftax.models import ssm
from driftax.samplers.paris import AdditiveFunctional, paris, ppg

SEED = 0
# linear_gaussian(0.9, 1.0, 0.5, 1.0, P0=1.0, allow_missing=True) as the CLI builds it: the same object as in
# tests/infer/test_smoothing.py (whose missing-data, sharding and CLI runs need allow_missing), so runs of the
# same sizes there reuse these compiled programs; on data without NaN it is the plain model
M1 = build_model("lgssm", allow_missing=True)
A3 = np.array([[0.8, 0.1, 0.0], [-0.1, 0.7, 0.2], [0.0, 0.1, 0.6]])
C3 = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, -0.3]])
M3 = ssm.linear_gaussian(A3, C3, np.diag([0.5, 0.4, 0.3]), np.diag([0.6, 0.8]), np.array([0.5, -0.2, 0.1]),
                         np.eye(3))


def truth(model, ys):
    ks = ssm.kalman_smoother(model, ys)
    return np.r_[ks.sum_means(), ks.sum_cross_moments().ravel()]


@pytest.fixture(scope="module")
def data1():
    return M1.simulate(0, 100)[1]


@pytest.fixture(scope="module")
def data3():
    return M3.simulate(1, 100)[1]


CASES = {"paris": dict(num_particles=256), "ffbs": dict(num_particles=128),
         "ppg": dict(num_particles=64, num_iterations=5, burn_in=1)}


@pytest.mark.slow
@pytest.mark.parametrize("method", ["paris", "ffbs", "ppg"])
def test_estimates_match_the_kalman_smoother_1d(data1, method):
    r = smooth(M1, data1, "moments", method, num_replicates=16, seed=SEED, **CASES[method])
    assert r.finite and r.estimate.shape == (2,)
    assert np.all(np.abs(r.estimate - truth(M1, data1)) <= 5 * r.mc_error)


def estimates_3d(ys, seed):
    """16 replicates each of PaRIS (N = 256) and PPG (n = 64, k = 5, k0 = 1) of the "moments" functional on
    the 3-d model: ``{method: (estimates (16, 12), finite (16,))}``. One jitted program for both (one XLA
    compilation of the two costs about half of two; the 3-d log-densities make these the largest programs
    here), a ``vmap`` of each sampler without stored history."""
    f = builtin_functional("moments", 3)
    th = {k: jnp.asarray(v, jnp.float32) for k, v in M3.theta.items()}
    y = jnp.asarray(ys, jnp.float32)
    run = jax.jit(lambda kp, kg: (
        jax.vmap(lambda k: paris(k, M3, th, y, f, CASES["paris"]["num_particles"]))(kp),
        jax.vmap(lambda k: ppg(k, M3, th, y, f, *(CASES["ppg"][a] for a in ("num_particles", "num_iterations",
                                                                             "burn_in"))))(kg)))
    p, g = run(jax.random.split(jax.random.key(seed), 16), jax.random.split(jax.random.key(seed + 1), 16))
    return {m: (np.asarray(o.estimate, np.float64), np.asarray(o.finite)) for m, o in (("paris", p), ("ppg", g))}


@pytest.fixture(scope="module")
def runs3(data3):
    return estimates_3d(data3, SEED)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["paris", "ppg"])
def test_estimates_match_the_kalman_smoother_3d(data3, runs3, method):
    """PaRIS at N = 256 on this 3-d model has an O(T/N) bias measured (256 replicates, after the fix below) at
    most -1.2 ± 0.3 on the cross-moment components (-3.2 ± 0.5 at N = 64: N·bias -296 ± 82 against -205 ± 35,
    consistent with c/N), under one standard error of 16 replicates (about 1.3), so the 5-se band holds.
    An earlier failure here (6 se) was not that bias but a miscompiled log-density (see
    tests/models/test_ssm.py::test_batched_log_densities_are_right_at_scale). Seeds 0-4 of `estimates_3d`:
    worst |z| over the 12 components 1.52-2.49 (PaRIS), 1.06-2.12 (PPG)."""
    est, finite = runs3[method]
    assert finite.all() and est.shape == (16, 12)
    se = est.std(0, ddof=1) / np.sqrt(16)
    assert np.all(np.abs(est.mean(0) - truth(M3, data3)) <= 5 * se)


R_EXACT, N_EXACT = 400, 16


@pytest.fixture(scope="module")
def exact_start(data1):
    """One PPG kernel step with N = 16 from each of 400 exact smoothing paths (one compiled program, shared by
    the stationarity and invariance tests): the exact paths, the run and the Kalman smoother."""
    refs = ssm.kalman_sample_paths(M1, data1, R_EXACT, seed=SEED + 10)
    r = smooth(M1, data1, "moments", "ppg", N_EXACT, num_iterations=1, burn_in=0, num_replicates=R_EXACT,
               reference=refs, seed=SEED)
    return refs, r, ssm.kalman_smoother(M1, data1)


@pytest.mark.slow
def test_ppg_from_an_exact_path_is_unbiased_at_its_first_iteration(data1, exact_start):
    """Stationarity: ζ ~ smoothing law ⇒ E[Π̂_1] = truth, with only N = 16 particles for T = 100, where plain
    PaRIS is visibly biased (measured on this data: -15.3 ± 0.9 on the cross moment, 400 replicates).
    The contrast runs the same compiled program from references off the smoothing law (the exact paths
    shifted by 0.5, under one smoothing sd): its first iteration is biased and the test sees it, so the
    property under test is the reference's law, not something every run has."""
    refs, r, _ = exact_start
    exact = truth(M1, data1)

    def summary(run):
        est = run.per_iteration[:, 0]
        return est.mean(0) - exact, est.std(0, ddof=1) / np.sqrt(R_EXACT)

    bias, se = summary(r)
    # 4.5 se over 2 components (R = 400: se is well estimated), P(false alarm) < 1e-4; seeds 0-4: |z| <= 2.4
    assert np.all(np.abs(bias) <= 4.5 * se)
    bias, se = summary(smooth(M1, data1, "moments", "ppg", N_EXACT, num_iterations=1, burn_in=0,
                              num_replicates=R_EXACT, reference=refs + 0.5, seed=SEED + 1))
    # shifted start: Σx off by z 37.6-46.5 over seeds 0-4; required here > 5 se
    assert bias[0] > 5 * se[0]


@pytest.mark.slow
def test_conditional_smc_leaves_the_smoothing_law_invariant(exact_start):
    """Exact Kalman paths in, one conditional-SMC sweep with PaRIS and a backward-sampled new path out (N = 16,
    T = 100, 400 replicates): the new paths still follow the Kalman smoothing law, time by time (means,
    variances, lag-one covariances) and in the whole-path sums the functionals use. The truth is the RTS
    smoother (tested against dense Gaussian conditioning in tests/models/test_ssm.py)."""
    refs, r, ks = exact_start
    R = R_EXACT
    new = np.asarray(r.paths[:, 0, :, 0], np.float64)
    old = np.asarray(np.float32(refs[:, :, 0]), np.float64)  # the reference as the float32 run received it
    # the kernel moves: the new path leaves the reference at most times (a kernel that returned its input
    # would pass every law check below); measured 0.869-0.873 of the states over seeds 0-4
    assert np.mean(new != old) > 0.5
    mean, var = ks.means[:, 0], ks.covs[:, 0, 0]
    # 100 time points, three statistics each, 5 sd per check: P(false alarm) < 300 x 5.7e-7 (normal tails;
    # the sample variance's sd is var sqrt(2 / (R - 1)) for Gaussian draws, lag-one covariance's is at most
    # sqrt((v_t v_{t+1} + c_t^2) / R)). Seeds 0-4: worst |z| 3.08 (means), 3.48 (variances), 3.19 (covariances),
    # 1.88 (the two sums)
    assert np.all(np.abs(new.mean(0) - mean) < 5 * np.sqrt(var / R))
    assert np.all(np.abs(new.var(0, ddof=1) - var) < 5 * var * np.sqrt(2 / (R - 1)))
    c = ks.cross_covs[:, 0, 0]
    cov = np.array([np.cov(new[:, t], new[:, t + 1])[0, 1] for t in range(new.shape[1] - 1)])
    assert np.all(np.abs(cov - c) < 5 * np.sqrt((var[:-1] * var[1:] + c ** 2) / R))
    # whole-path sums: Σ x_t and Σ (x_t - m_t)^2 against Σ m_t and Σ v_t, se from the replicates (R = 400)
    for stat, target in ((new.sum(1), mean.sum()), (((new - mean) ** 2).sum(1), var.sum())):
        assert abs(stat.mean() - target) < 5 * stat.std(ddof=1) / np.sqrt(R)


def centred_square(means) -> AdditiveFunctional:
    """``Σ_t (x_t - m_t)²`` for fixed ``m`` (the Kalman smoother's means): its smoothed expectation is
    ``Σ_t v_t``, the sum of the smoothing variances. Centring removes the ``2 m_t x_t`` terms whose noise
    would otherwise swamp the bias (measured on Σx and Σxx', below)."""
    m = jnp.asarray(means, jnp.float32)
    return AdditiveFunctional(lambda x, y: (x - m[0]) ** 2, lambda t, xp, x, y: (x - m[t]) ** 2, 1, "centred_square")


# equal particle budget B = n (k + 1): PPG's n particles propagated in its unconditional first sweep and its k
# conditional sweeps, against PaRIS with B particles (the issue counts every particle propagation)
T_BIAS, R_BIAS, N_PPG, K_PPG = 250, 400, 12, 2


@pytest.mark.slow
def test_ppg_is_less_biased_than_paris_at_equal_particle_budget():
    """Bias reduction (Cardoso et al. 2023): 400 replicates of PaRIS with B = 36 particles and of PPG with
    n = 12 particles, k = 2 sweeps after its unconditional start and burn-in k0 = 1 (budget 12 x 3 = 36), on
    h = Σ_t (x_t - m_t)² over T = 250 steps; truth Σ_t v_t from the RTS smoother.

    Why this regime: PaRIS's bias is O(T/N) and its sd O(√(T/N)), so over R replicates bias / se grows as
    √(T R / N): a small budget and a long series make the bias many standard errors at a test's cost. PPG's
    bias decays geometrically in its sweeps; it wins at equal budget on a functional it forgets quickly.
    Measured at T = 100 with 400 replicates (budgets 16-128, n in {4, 8, 16}, k <= 7): on Σx PaRIS's bias
    is not resolved next to PPG's, and on Σxx' (dominated by Σ m_t x_t) PPG needs 3-4 sweeps to forget its
    start, so at equal budget the two do not separate (|Δ| <= 3 se). On the centred square n = 4 forgets
    too slowly; n = 8 (T = 300) separates at about the same cost but keeps 0.55-0.67 of PaRIS's bias, n = 12
    keeps 0.06-0.42 of it.

    Seeds 0-6 (`bias_at_equal_budget(seed)`): PaRIS's bias +2.15 to +2.54 at z 13.0-15.5; PPG's +0.45 to
    +0.85 (0.18-0.35 of PaRIS's); the drop |b_PaRIS| - |b_PPG| 4.8-6.8 standard errors of the difference
    (mean 5.6). Bounds: PaRIS's z >= 8 (the z of a mean of 400 is ~N(z, 1): 5 sd below the smallest seen),
    and the drop >= 2.5 standard errors of the difference of the two independent means: one-sided, equal
    biases would pass with probability 6e-3, and at the mean drop seen a run fails with probability 1e-3.
    """
    b_p, se_p, b_g, se_g = bias_at_equal_budget(SEED)
    assert b_p >= 8 * se_p  # PaRIS's O(T/B) bias is there and the test sees it
    assert abs(b_p) - abs(b_g) >= 2.5 * np.hypot(se_p, se_g)  # PPG's is smaller, by a detected margin


def bias_at_equal_budget(seed):
    """``(bias, se)`` of PaRIS (B particles) and of PPG (n, k, k0 = k - 1) over R_BIAS replicates: a ``vmap`` of
    each sampler's estimate, both in one jitted program (no stored history or paths, so smaller than
    `smooth`'s programs; one XLA compilation of the two costs less than two). PPG's backward draws are exact
    (O(n) each): at n = 12 that is cheaper to compile and run than the accept-reject block, and the backward
    kernel's law is the same."""
    ys = M1.simulate(0, T_BIAS)[1]
    ks = ssm.kalman_smoother(M1, ys)
    f = centred_square(ks.means[:, 0])
    truth = ks.covs[:, 0, 0].sum()
    th = {k: jnp.asarray(v, jnp.float32) for k, v in M1.theta.items()}
    y = jnp.asarray(ys, jnp.float32)
    B = N_PPG * (K_PPG + 1)
    run = jax.jit(lambda kp, kg: (
        jax.vmap(lambda k: paris(k, M1, th, y, f, B).estimate[0])(kp),
        jax.vmap(lambda k: ppg(k, M1, th, y, f, N_PPG, K_PPG, K_PPG - 1, backward="exact").estimate[0])(kg)))
    p, g = (np.asarray(v, np.float64) - truth for v in run(jax.random.split(jax.random.key(seed), R_BIAS),
                                                           jax.random.split(jax.random.key(seed + 7919), R_BIAS)))
    return p.mean(), p.std(ddof=1) / np.sqrt(R_BIAS), g.mean(), g.std(ddof=1) / np.sqrt(R_BIAS)
