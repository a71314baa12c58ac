import jax
import jax.numpy as jnp
import numpy as np
import ot
import pytest

from driftax import transport as tr
from tests.transport.conftest import marginal_error_np, marginal_error_rounding_bound, plan_np, point_clouds


def _pot_reg_cost(P, C, eps):
    # POT's objective <C, P> + reg * sum P log P
    return float(np.sum(C * P) + eps * np.sum(P * np.log(P)))


@pytest.mark.parametrize("eps", [0.05, 0.01])
def test_matches_pot_sinkhorn_log(eps):
    a, b, C = point_clouds(60, 45, weights=True, seed=1)
    P_pot, log = ot.bregman.sinkhorn_log(a, b, C, eps, numItermax=200_000, stopThr=1e-15, log=True)
    res = tr.sinkhorn(a, b, C, eps, tol=1e-13)
    assert bool(res.converged)
    P = plan_np(res)
    # plans: relative difference <= 1e-8 (both converged to ~1e-13 marginal error)
    assert np.max(np.abs(P - P_pot)) <= 1e-8 * np.max(P_pot)
    # regularised cost: our dual value equals POT's primal objective at the optimum
    ref = _pot_reg_cost(P_pot, C, eps)
    assert abs(float(res.reg_cost) - ref) <= 1e-8 * abs(ref)
    assert abs(float(res.transport_cost) - np.sum(C * P_pot)) <= 1e-8 * np.sum(C * P_pot)
    # potentials up to the constant (f + t, g - t): POT's log_u = f / eps + const
    df = np.asarray(res.f) - eps * log["log_u"]
    dg = np.asarray(res.g) - eps * log["log_v"]
    assert np.ptp(df) <= 1e-8 * np.ptp(np.asarray(res.f))
    assert abs(df.mean() + dg.mean()) <= 1e-8 * np.abs(np.asarray(res.f)).max()


def test_marginal_error_recomputed_independently():
    a, b, C = point_clouds(80, 80, seed=2)
    res = tr.sinkhorn(a, b, C, 0.01, tol=1e-9)
    P = plan_np(res)
    err = np.abs(P.sum(1) - a).sum() + np.abs(P.sum(0) - b).sum()
    assert bool(res.converged)
    assert err <= 1e-9
    assert abs(err - float(res.marginal_error)) <= 1e-12
    # the costs of the final check (made from the last kernel and scalings, not from the plan) against numpy's
    # from the plan of the returned potentials: within 1e-12 relative (exponent up to ~200 here, ~200 u ~ 4e-14 per
    # entry; measured 0 and 2e-17 absolute)
    np.testing.assert_allclose(float(res.transport_cost), np.sum(P * C), rtol=1e-12)
    dual = a @ np.asarray(res.f) + b @ np.asarray(res.g) - 0.01 * (P.sum() - 1.0)
    np.testing.assert_allclose(float(res.reg_cost), dual, rtol=1e-12)
    hist = np.asarray(res.errors)
    assert int(res.iterations) == int(np.sum(hist >= 0))
    assert hist[int(res.iterations) - 1] <= 1e-9
    # a strided history keeps every 7th entry (and the last sweep's error), same solve otherwise
    its = int(res.iterations)
    strided = tr.sinkhorn(a, b, C, 0.01, tol=1e-9, history_every=7)
    h7 = np.asarray(strided.errors)
    assert h7.shape == (-(-100_000 // 7),) and int(strided.iterations) == its
    np.testing.assert_array_equal(h7[:its // 7], hist[6:its - its % 7:7])
    assert h7[(its - 1) // 7] == hist[its - 1] and np.all(h7[(its - 1) // 7 + 1:] == -1)
    with pytest.raises(ValueError, match="history_every"):
        tr.sinkhorn(a, b, C, 0.01, history_every=0)


def test_transport_cost_tends_to_emd():
    # 0 <= <C, P_eps> - OT <= eps * log(n) for uniform weights (entropy bounds: -2 log n <= sum P log P <= -log n)
    a, b, C = point_clouds(50, 50, seed=3)
    exact = ot.emd2(a, b, C)
    gaps = []
    for eps in [1e-1, 1e-2, 2e-3]:
        res = tr.sinkhorn(a, b, C, eps, tol=1e-10)
        assert bool(res.converged)
        gap = float(res.transport_cost) - exact
        assert -1e-10 <= gap <= eps * np.log(50) + 1e-10
        gaps.append(gap)
    assert gaps[0] > gaps[1] > gaps[2]
    # (SNS at eps = 1e-4 max C against ot.emd2: test_small_epsilon_is_finite)


def test_epsilon_scaling_same_solution():
    a, b, C = point_clouds(60, 50, seed=4, weights=True)
    r1 = tr.sinkhorn(a, b, C, 5e-3, tol=1e-10)
    r2 = tr.sinkhorn(a, b, C, 5e-3, tol=1e-10, epsilon_scaling=0.9)
    assert bool(r1.converged) and bool(r2.converged)
    assert abs(float(r1.reg_cost) - float(r2.reg_cost)) <= 1e-9 * abs(float(r1.reg_cost))
    np.testing.assert_allclose(plan_np(r1), plan_np(r2), atol=1e-9 * plan_np(r1).max())


def test_warm_start_init():
    a, b, C = point_clouds(50, 50, seed=5)
    r1 = tr.sinkhorn(a, b, C, 5e-3, tol=1e-10)
    r2 = tr.sinkhorn(a, b, C, 5e-3, tol=1e-10, init=(r1.f, r1.g))
    assert int(r2.iterations) <= 1 and bool(r2.converged)


def test_zero_weights_match_compressed_problem():
    a, b, C = point_clouds(40, 30, seed=6, weights=True)
    a[[3, 10]] = 0.0
    b[[0]] = 0.0
    a, b = a / a.sum(), b / b.sum()
    res = tr.sinkhorn(a, b, C, 0.01, tol=1e-11)
    ka, kb = a > 0, b > 0
    ref = tr.sinkhorn(a[ka], b[kb], C[np.ix_(ka, kb)], 0.01, tol=1e-11)
    assert bool(res.converged) and np.isfinite(float(res.reg_cost))
    P = plan_np(res)
    assert np.all(P[~ka] == 0) and np.all(P[:, ~kb] == 0)
    np.testing.assert_allclose(P[np.ix_(ka, kb)], plan_np(ref), atol=1e-10 * P.max())
    assert abs(float(res.reg_cost) - float(ref.reg_cost)) <= 1e-9 * abs(float(ref.reg_cost))
    # (SNS with zero weights against this solver: test_validation.py::test_warm_start_from_result_with_zero_weights)


@pytest.fixture(scope="module")
def vmapped():
    """``jax.jit(jax.vmap(sinkhorn))`` over 8 weighted problems and a ninth with a NaN cost (one compiled program
    for test_vmap_over_batch_equals_single_solves and test_nan_is_never_converged)."""
    rng = np.random.default_rng(7)
    B, n = 8, 40
    x = rng.random((B, n, 2))
    y = rng.random((B, n, 2))
    C = ((x[:, :, None] - y[:, None]) ** 2).sum(-1)
    a = rng.dirichlet(np.ones(n) * 5, size=B)
    b = rng.dirichlet(np.ones(n) * 5, size=B)
    eps = np.linspace(0.005, 0.05, B)
    bad = C[0].copy()
    bad[3, 4] = np.nan  # validation runs on concrete inputs; under jit a NaN cost reaches the solver
    C, a, b, eps = np.concatenate([C, bad[None]]), np.vstack([a, a[:1]]), np.vstack([b, b[:1]]), np.append(eps, 0.1)
    with jax.enable_x64(True):
        batched = jax.jit(jax.vmap(lambda a, b, C, e: tr.sinkhorn(a, b, C, e, tol=1e-10)))(a, b, C, eps)
        jax.block_until_ready(batched)
    return a, b, C, eps, batched


def test_vmap_over_batch_equals_single_solves(vmapped):
    a, b, C, eps, batched = vmapped
    assert batched.f.shape == (9, 40)
    for i in range(8):
        single = tr.sinkhorn(a[i], b[i], C[i], eps[i], tol=1e-10)
        assert int(batched.iterations[i]) == int(single.iterations)
        np.testing.assert_allclose(batched.f[i], single.f, rtol=0, atol=1e-12)
        np.testing.assert_allclose(batched.reg_cost[i], single.reg_cost, rtol=1e-12)
        assert bool(batched.converged[i])


def test_small_epsilon_is_finite():
    # epsilon = 1e-4 relative to the cost scale: kernel exp(-C/eps) underflows everywhere, log domain does not
    a, b, C = point_clouds(60, 60, seed=8)
    eps = 1e-4 * C.max()
    res = tr.sinkhorn(a, b, C, eps, tol=1e-8, max_iter=500)
    for x in (res.f, res.g, res.reg_cost, res.transport_cost, res.marginal_error):
        assert np.all(np.isfinite(np.asarray(x)))
    assert not bool(res.converged)  # 500 sweeps are far too few at this epsilon: honestly reported
    r2 = tr.sns(a, b, C, eps, tol=1e-8)
    assert bool(r2.converged) and float(r2.marginal_error) <= 1e-8
    assert np.isfinite(float(r2.reg_cost))
    assert abs(float(r2.transport_cost) - ot.emd2(a, b, C)) <= eps * np.log(60)


def test_nan_is_never_converged(vmapped):
    # a NaN cost under jit (and vmap): stops, reported as not converged (the other problems of the batch are
    # unharmed: test_vmap_over_batch_equals_single_solves); SNS likewise in test_sns.py's vmap test
    batched = vmapped[-1]
    assert not bool(batched.converged[8])
    assert np.isnan(float(batched.marginal_error[8])) or float(batched.marginal_error[8]) > 1e-10


def test_float32_inputs_run_in_float64_by_default():
    a, b, C = point_clouds(30, 30, seed=10)
    res = tr.sinkhorn(a.astype(np.float32), b.astype(np.float32), C.astype(np.float32), 0.01, tol=1e-9)
    assert res.f.dtype == jnp.float64 and bool(res.converged)
    assert not jax.config.jax_enable_x64  # the global flag is untouched


def test_float32_mode_warns_and_works():
    a, b, C = point_clouds(30, 30, seed=10)
    with pytest.warns(RuntimeWarning, match="float32"):
        res = tr.sinkhorn(a, b, C, 0.05, tol=1e-8, max_iter=5000, dtype=jnp.float32)
    assert res.f.dtype == jnp.float32
    res = tr.sinkhorn(a, b, C, 0.05, tol=1e-5, max_iter=5000, dtype="float32")  # (34 sweeps; one compiled program)
    assert bool(res.converged)


def test_plan_and_apply():
    a, b, C = point_clouds(30, 20, seed=11)
    res = tr.sinkhorn(a, b, C, 0.02, tol=1e-10)
    P = np.asarray(res.plan())
    r, c = res.marginals()
    np.testing.assert_allclose(r, a, atol=1e-10)
    np.testing.assert_allclose(c, b, atol=1e-10)
    v = np.arange(20.0)
    np.testing.assert_allclose(res.apply(v), P @ v, rtol=1e-12)
    np.testing.assert_allclose(res.apply(np.arange(30.0), axis=0), P.T @ np.arange(30.0), rtol=1e-12)


def test_public_marginal_error_matches_solver_without_x64():
    assert not jax.config.jax_enable_x64
    # (the problem of the POT comparisons above and test_sns_matches_pot_sinkhorn_log: their compiled solvers)
    a, b, C = point_clouds(60, 45, weights=True, seed=1)
    eps = 1e-2
    for res in (tr.sinkhorn(a, b, C, eps, tol=1e-9), tr.sns(a, b, C, eps, tol=1e-9)):
        assert res.f.dtype == jnp.float64
        err = tr.marginal_error(res.f, res.g, a, b, C, eps)
        assert err.dtype == jnp.float64
        ref = float(res.marginal_error)
        # The two values come from separately compiled programs (the solver's final pass and this function), so
        # they agree up to rounding, not bit for bit: the summation's rounding bound (conftest, derivation there),
        # about 1e-13 here for errors of 1e-9 to 1e-11 (a float32 evaluation would differ by ~1e-7)
        bound = marginal_error_rounding_bound(res, a, b, C)
        assert bound < 1e-12
        assert abs(float(err) - ref) <= bound
        # and equal to the independent numpy float64 computation (within the same bound)
        assert abs(float(err) - marginal_error_np(res, a, b)) <= bound


@pytest.mark.parametrize("dtype,tol", [(jnp.float32, 1e-5), (jnp.float32, 3e-6), (jnp.float64, 1e-12)])
def test_stops_early_only_when_full_check_passes(dtype, tol):
    # the sweeps used to stop on the row error alone while the final check adds the column error (exact only
    # up to rounding): e.g. float32, tol 1e-5 stopped after 89 sweeps with a full error of 1.007e-5, unconverged
    import warnings

    # (the sweep caps of test_float32_mode_warns_and_works and of sinkhorn's default: their compiled programs)
    max_iter = 5000 if dtype == jnp.float32 else 100_000
    for seed in range(6):
        a, b, C = point_clouds(30, 20, weights=True, seed=seed)
        for eps in (0.1, 0.02):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # float32 with a small tol
                res = tr.sinkhorn(a, b, C, eps, tol=tol, max_iter=max_iter, dtype=dtype)
            assert int(res.iterations) < max_iter
            assert bool(res.converged), (seed, eps, int(res.iterations), float(res.marginal_error))
            assert float(res.marginal_error) <= tol
            P = plan_np(res)
            assert np.abs(P.sum(1) - a).sum() + np.abs(P.sum(0) - b).sum() <= 2 * tol


@pytest.mark.slow
def test_norms_l2_and_linf_against_pot():
    # norm="l2"/"linf": the reported error is that norm of the recomputed marginals, the stopping rule uses it, and
    # the plan is POT's log-domain optimum
    a, b, C = point_clouds(40, 30, weights=True, seed=12)
    eps, tol = 0.02, 1e-9
    P_pot = ot.bregman.sinkhorn_log(a, b, C, eps, numItermax=100_000, stopThr=1e-14)
    iters = {}
    # (SNS reports and stops on another norm in test_vocabulary_batch.py::test_shared_keywords_work_for_both_solvers;
    # the norms themselves are one shared function, problem._norm, exercised here in full)
    for norm in ("l1", "l2", "linf"):
        res = tr.sinkhorn(a, b, C, eps, tol=tol, norm=norm)
        assert bool(res.converged), norm
        err_np = marginal_error_np(res, a, b, norm)
        bound = marginal_error_rounding_bound(res, a, b, C)
        assert abs(float(res.marginal_error) - err_np) <= bound
        assert err_np <= tol + bound
        # the plan moves by the (l1) marginal error times the conditioning of the linearised marginal map,
        # measured 3.1 on this problem for every norm (and for SNS); 5x
        l1 = marginal_error_np(res, a, b, "l1")
        assert np.abs(plan_np(res) - P_pot).sum() <= 5 * l1 + 1e-13
        iters[norm] = int(res.iterations)
    # Sinkhorn's iterates do not depend on the norm, and |v|_inf <= |v|_2 <= |v|_1: it stops no later (measured
    # 360, 377, 412 sweeps)
    assert iters["linf"] <= iters["l2"] <= iters["l1"]
    assert iters["linf"] < iters["l1"]


@jax.jit
def _log_loop500(a, b, C, eps, f0, g0, tol):
    # the reference: today's log-domain Sinkhorn (two log-sum-exp passes per sweep) with sinkhorn's stopping rule
    # and cap (500: the compiled solver of test_small_epsilon_is_finite is the fast side)
    from driftax.transport.sinkhorn import sinkhorn_loop

    return sinkhorn_loop(a, b, C, eps, f0, g0, tol, max_iter=500, norm="l1", log_domain=True, warm=False)


@pytest.mark.parametrize("rel_eps", [5e-2, 1e-3, 1e-4])
def test_scaling_form_sweeps_equal_log_domain_sweeps(rel_eps):
    # issue 14: sinkhorn's scaling-form sweeps (absorption, log-domain completion where the kernel underflows)
    # give today's log-domain iterates to 1e-12 relative, also at eps = 1e-4 max C (exp(-C/eps) underflows almost
    # everywhere: entries down to exp(-10^4)) and with zero weights (-inf potentials)
    from driftax.transport.problem import pad_problem

    a, b, C = point_clouds(50, 40, weights=True, seed=14)
    a[[3, 7]] = 0.0
    b[5] = 0.0
    a, b = a / a.sum(), b / b.sum()
    eps = rel_eps * float(C.max())
    # (the reference on the problem padded as sinkhorn pads it, from sinkhorn's start: zero potentials, -inf on the
    # padding; more zero weights, the same iterates)
    padded = pad_problem(a, b, C, np.zeros(50), np.zeros(40), (64, 64))
    for tol in (1e-300, 1e-9):  # a fixed number of sweeps (500); then the same stopping sweep
        res = tr.sinkhorn(a, b, C, eps, tol=tol, max_iter=500)
        with jax.enable_x64(True):
            f2, g2, fin2, i2, h2 = _log_loop500(*padded[:3], np.float64(eps), *padded[3:], np.float64(tol))
        assert int(res.iterations) == int(i2)
        # the final check: sinkhorn makes it from its last kernel and scalings where the sweeps stopped in scaling
        # form (rel_eps 5e-2), from the plan after a log-domain completion (1e-3, 1e-4), the reference always from
        # the plan; the same values up to rounding: the marginal error within the rounding bound of two evaluations
        # (conftest), the costs to 1e-12 relative (the plan's exponent (f + g - C)/eps reaches ~1e4 at rel_eps 1e-4,
        # so a rounding of the potentials moves its entries by ~1e4 u ~ 1e-12; measured at most 1.1e-14)
        err2, tc2, dual2, conv2 = (np.asarray(x) for x in fin2)
        assert bool(res.converged) == bool(conv2)
        assert abs(float(res.marginal_error) - float(err2)) <= marginal_error_rounding_bound(res, a, b, C)
        np.testing.assert_allclose(float(res.transport_cost), float(tc2), rtol=1e-12)
        np.testing.assert_allclose(float(res.reg_cost), float(dual2), rtol=1e-12)
        for x, y in ((res.f, f2[:50]), (res.g, g2[:40])):
            x, y = np.asarray(x), np.asarray(y)
            fin = np.isfinite(y)
            assert np.array_equal(fin, np.isfinite(x)) and np.all(np.isneginf(x[~fin]))
            # rounding: ~1e-15 measured at every epsilon here
            np.testing.assert_allclose(x[fin], y[fin], rtol=0, atol=1e-12 * np.abs(y[fin]).max())
        # row errors: the same up to the rounding of sum_i |r_i - a_i| (n u max a ~ 3e-16 absolute)
        np.testing.assert_allclose(np.asarray(res.errors), np.asarray(h2), rtol=1e-9, atol=1e-15)
