import importlib

import jax
import jax.numpy as jnp
import numpy as np
import ot
import pytest

from driftax import transport as tr
from tests.transport.conftest import plan_np, point_clouds


def _random_assignment(n, seed):
    rng = np.random.default_rng(seed)
    return np.full(n, 1.0 / n), np.full(n, 1.0 / n), rng.random((n, n))


PROBLEMS = {
    # name: (a, b, C, eps)
    "points_sqeuclidean": point_clouds(120, 120, seed=20) + (2e-3,),
    "points_weighted_rect": point_clouds(120, 90, seed=21, weights=True) + (5e-3,),
    "random_assignment": _random_assignment(120, 22) + (1 / 200,),
}


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_sns_agrees_with_sinkhorn(name):
    a, b, C, eps = PROBLEMS[name]
    rs = tr.sinkhorn(a, b, C, eps, tol=1e-10)
    rn = tr.sns(a, b, C, eps, tol=1e-10)
    assert bool(rs.converged) and bool(rn.converged)
    assert float(rn.marginal_error) <= 1e-10
    # same optimum: dual values to 1e-8 relative, plans to the marginal tolerance
    assert abs(float(rn.reg_cost) - float(rs.reg_cost)) <= 1e-8 * abs(float(rs.reg_cost))
    assert np.abs(plan_np(rn) - plan_np(rs)).sum() <= 1e-7
    # the point of SNS: far fewer iterations
    assert int(rn.iterations) * 10 < int(rs.iterations)
    if name == "points_sqeuclidean":
        # the paper's claim in miniature: Sinkhorn's sweeps grow like 1/eps (2,679 here), SNS stays at tens of
        # iterations (31 measured)
        assert int(rs.iterations) > 1000
        assert int(rs.iterations) >= 30 * int(rn.iterations)
    assert int(rn.newton_iterations) >= 1 and int(rn.cg_iterations) >= int(rn.newton_iterations)
    assert 0 < float(rn.density) <= 1


def test_sns_matches_pot_sinkhorn_log():
    a, b, C = point_clouds(60, 45, weights=True, seed=1)
    eps = 0.01
    P_pot = ot.bregman.sinkhorn_log(a, b, C, eps, numItermax=200_000, stopThr=1e-15)
    res = tr.sns(a, b, C, eps, tol=1e-13)
    assert bool(res.converged)
    P = plan_np(res)
    assert np.max(np.abs(P - P_pot)) <= 1e-8 * np.max(P_pot)
    ref = float(np.sum(C * P_pot) + eps * np.sum(P_pot * np.log(P_pot)))
    assert abs(float(res.reg_cost) - ref) <= 1e-8 * abs(ref)


def test_sns_history_and_counts():
    a, b, C, eps = PROBLEMS["points_sqeuclidean"]
    res = tr.sns(a, b, C, eps, tol=1e-10, options=tr.SNSOptions(warm_start=20))
    hist = np.asarray(res.errors)
    nt = int(res.newton_iterations)
    newton_hist = hist[20:20 + nt]
    assert np.all(newton_hist >= 0) and newton_hist[-1] <= 1e-10
    assert np.all(hist[20 + nt:] == -1)
    # the final Newton steps converge fast (quadratic-like): the last step gains at least 10x
    assert newton_hist[-1] <= 0.1 * newton_hist[-2]


def test_sns_density_sweep_all_converge():
    a, b, C, eps = PROBLEMS["points_sqeuclidean"]
    ref = tr.sns(a, b, C, eps, tol=1e-10)
    # a 13% pattern (k = 16, twice the automatic budget: the compiled stage of the weighted problem in
    # test_sns_agrees_with_sinkhorn, stage settings other than k being traced arguments)
    r = tr.sns(a, b, C, eps, tol=1e-10, options=tr.SNSOptions(density=0.13))
    assert bool(r.converged)
    assert abs(float(r.reg_cost) - float(ref.reg_cost)) <= 1e-9 * abs(float(ref.reg_cost))
    # the dense Hessian (the exact Newton step, S = P: the singular Schur system, consistent since sum a = sum b),
    # on test_validation.py's 10 x 8 problem (its compiled stage: every padded column kept) against Sinkhorn
    a, b, C = point_clouds(10, 8, seed=0)
    ref = tr.sinkhorn(a, b, C, 0.01, tol=1e-10)
    r = tr.sns(a, b, C, 0.01, tol=1e-10, options=tr.SNSOptions(density=1.0))
    assert bool(r.converged) and bool(ref.converged) and float(r.density) == 1.0
    # both at L1 marginal error <= 1e-10: 0 <= D* - D <= tol |z - z*|_inf <= tol max C for each (concave dual with
    # gradient (a - P1, b - P^T1); the potentials differ by at most their oscillation, max C, uniform weights)
    assert abs(float(r.reg_cost) - float(ref.reg_cost)) <= 2 * 1e-10 * C.max()


def test_sns_fallback_path_converges():
    # max_backtracks=1 with a 6.5% pattern (k = 8: the automatic budget's compiled stage) makes line searches fail
    # (20 of 36 Newton steps); without continuation (which would end a stalled stage instead) each failure takes
    # fallback_sweeps Sinkhorn sweeps, and the method must still converge
    a, b, C, eps = PROBLEMS["points_sqeuclidean"]
    r = tr.sns(a, b, C, eps, tol=1e-9, options=tr.SNSOptions(max_backtracks=1, density=0.065, continuation=False,
                                                             warm_start=5, fallback_sweeps=7))
    assert bool(r.converged) and float(r.marginal_error) <= 1e-9
    # the fallback ran: iterations = warm start + Newton steps + a positive multiple of fallback_sweeps
    sweeps = int(r.iterations) - 5 - int(r.newton_iterations)
    assert sweeps > 0 and sweeps % 7 == 0
    # and the plan is the entropic optimum: POT's log-domain Sinkhorn, solved far below our tolerance
    P_pot = ot.bregman.sinkhorn_log(a, b, C, eps, numItermax=100_000, stopThr=1e-13)
    # both at marginal error <= 1e-9; the plan moves by that error times the conditioning of the linearised
    # marginal map, measured 7.7 here (|P - P_pot|_1 = 7.2e-9 at an error of 9.4e-10 with a 5% pattern; 6.3e-9 at
    # 8.6e-10 with this one; POT at 1e-12): at most 7.7e-9 for any stop <= 1e-9
    assert np.abs(plan_np(r) - P_pot).sum() <= 1e-8


@jax.jit
def _log_fixed(a, b, C, eps, f, g, count):
    from driftax.transport.sinkhorn import fixed_log_sweeps

    return fixed_log_sweeps(a, b, C, eps, f, g, count)


def _padded(a, b, C):
    """The problem padded as the solvers pad it (zero weights, -inf potentials), with zero initial potentials."""
    from driftax.transport.problem import pad_problem, padded_size

    n, m = C.shape
    return pad_problem(np.asarray(a, float), np.asarray(b, float), np.asarray(C, float), np.zeros(n), np.zeros(m),
                       (padded_size(n), padded_size(m)))


def test_scaling_form_warm_start_equals_log_domain_sweeps(x64):
    # the stabilised scaling sweeps of SNS's warm start (its compiled program, on the problem padded as sns pads
    # it) produce the log-domain Sinkhorn iterates (the log-domain reference: two log-sum-exp passes per sweep)
    sns_mod = importlib.import_module("driftax.transport.sns")

    # (test_sinkhorn.py checks the same sweeps through sinkhorn's loop at three epsilons, zero weights included)
    a, b, C, eps = PROBLEMS["points_weighted_rect"]
    eps = np.float64(eps)  # (typed as sns passes it: a weakly typed Python float would compile another program)
    n, m = C.shape
    args = _padded(a, b, C)
    f1, g1 = sns_mod._warm(*args[:3], eps, *args[3:], np.int32(25))
    f2, g2 = _log_fixed(*args[:3], eps, *args[3:], np.int32(25))
    # the padding stays -inf (exact zero weights); 1e-12 relative on the rest (issue 14): both compute the same
    # iterates, the difference is rounding, ~1e-15
    assert np.all(np.isneginf(np.asarray(f1)[n:])) and np.all(np.isneginf(np.asarray(g1)[m:]))
    f1, g1, f2, g2 = (np.asarray(x)[:k] for x, k in ((f1, n), (g1, m), (f2, n), (g2, m)))
    np.testing.assert_allclose(f1, f2, rtol=0, atol=1e-12 * np.abs(f2).max())
    np.testing.assert_allclose(g1, g2, rtol=0, atol=1e-12 * np.abs(g2).max())
    # a wide dynamic range (kernel entries exp(-100/0.05) underflow to 0) and very uneven weights: still the same
    C = np.asarray([[0.0, 50.0, 100.0], [50.0, 0.0, 50.0], [100.0, 50.0, 0.0]])
    a = np.asarray([0.98, 0.01, 0.01])
    b = np.asarray([0.01, 0.01, 0.98])
    args = _padded(a, b, C)
    f1, g1 = (np.asarray(x)[:3] for x in sns_mod._warm(*args[:3], np.float64(0.05), *args[3:], np.int32(10)))
    f2, g2 = (np.asarray(x)[:3] for x in _log_fixed(*args[:3], np.float64(0.05), *args[3:], np.int32(10)))
    assert np.all(np.isfinite(f1)) and np.all(np.isfinite(g1))
    np.testing.assert_allclose(f1 + g1.mean(), f2 + g2.mean(), rtol=1e-12)


@jax.jit
def _marginals_both_ways(kern, a, b, C, eps, f, g):
    sns_mod = importlib.import_module("driftax.transport.sns")
    return sns_mod._state_k(kern, a, b, eps, f, g, "l1"), sns_mod._state(a, b, C, eps, f, g, "l1")


def test_absorbed_kernel_marginals_equal_the_dense_pass(x64):
    # line-search trials evaluate the plan as diag(u) K diag(v) with K formed at reference potentials; it must
    # give the dense pass's marginals and dual wherever it is used, and refuse points beyond the trust region
    sns_mod = importlib.import_module("driftax.transport.sns")  # the module (the package exports the function)
    a, b, C, eps = PROBLEMS["points_weighted_rect"]
    eps = np.float64(eps)
    # (padded as sns pads it: the kernel and the dense pass see the zero-weight padding too)
    a, b, C, f0, g0 = _padded(a, b, C)
    f0, g0 = sns_mod._warm(a, b, C, eps, f0, g0, np.int32(10))
    kern = jax.jit(sns_mod._absorb)(a, b, C, eps, f0, g0)
    rng = np.random.default_rng(5)
    for scale in (0.0, 1.0, 50.0):  # moves of up to 50 eps per potential
        f = f0 + scale * eps * rng.uniform(-1, 1, a.shape)
        g = g0 + scale * eps * rng.uniform(-1, 1, b.shape)
        fast, dense = _marginals_both_ways(kern, a, b, C, eps, f, g)
        for x, y in zip(fast, dense):
            np.testing.assert_allclose(x, y, rtol=1e-11, atol=1e-14)
    far, _ = _marginals_both_ways(kern, a, b, C, eps, f0 + 400 * eps, g0)
    assert float(far[2]) == -np.inf


def _l1_grid_problem(size=8, seed=3):
    # two blurred-blob histograms on a size x size grid with the L1 ground cost (non-unique OT), eps = 1/1200
    # of the cost scale: the regime where a Newton stage started at eps stalls (Tang et al. 2024, MNIST-L1)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(float)

    def blob():
        img = np.zeros((size, size))
        for _ in range(3):
            q = rng.uniform(2, size - 2, 2)
            img += np.exp(-((xx - q[0]) ** 2 + (yy - q[1]) ** 2) / 2.0)
        img = img / img.max() + 1e-4
        return (img / img.sum()).ravel()

    C = np.asarray(tr.costs.grid_cost((size, size), "l1", dtype=jnp.float64))
    return blob(), blob(), C, 1 / 1200


def test_sns_l1_grid_restarts_through_continuation():
    # (the 8x8 grid of the batch test in test_vocabulary_batch.py and of test_cli_ot.py's histogram example: one
    # set of compiled programs; on 8x8, as on 14x14 and the benchmark's 28x28 images, Newton at eps stalls)
    a, b, C, eps = _l1_grid_problem(size=8)
    rs = tr.sinkhorn(a, b, C, eps, tol=1e-9)
    direct = tr.sns(a, b, C, eps, tol=1e-9, options=tr.SNSOptions(continuation=False))
    auto = tr.sns(a, b, C, eps, tol=1e-9)
    fixed = tr.sns(a, b, C, eps, tol=1e-9, options=tr.SNSOptions(continuation=(8, 4, 2)))
    assert bool(rs.converged)
    # without continuation the Newton stage does not get there in its 200 steps, fallback sweeps included (the
    # failure being fixed: measured error 2.6e-3 after 1,465 iterations; Sinkhorn needs 6,510 sweeps)
    assert not bool(direct.converged) and int(direct.newton_iterations) == 200
    for res in (auto, fixed):
        assert bool(res.converged)
        assert abs(float(res.reg_cost) - float(rs.reg_cost)) <= 1e-8 * abs(float(rs.reg_cost))
        assert np.abs(plan_np(res) - plan_np(rs)).sum() <= 1e-8
        assert int(res.iterations) * 10 < int(rs.iterations)
    # the restart is counted: the automatic run costs at least the fixed schedule's Newton steps
    assert int(auto.newton_iterations) >= int(fixed.newton_iterations)
    hist = np.asarray(auto.errors)
    assert np.all(hist[:5] == -1) and np.all(hist[5:5 + int(auto.newton_iterations)] >= 0)


def test_sns_under_vmap_equals_single_solves(x64):
    # jax.vmap of the single-problem sns (one compiled program for the batch: fixed density, no continuation, so
    # the stage is the traced one whose failed line searches take fallback sweeps; continuation stages are the same
    # compiled stage with other traced counts, and run batched in sns_batch's test) against each problem solved
    # alone by Sinkhorn (with seed 25 one instance is so ill-conditioned that the Sinkhorn reference, POT's too, stalls at 1e-6)
    rng = np.random.default_rng(26)
    B, n = 4, 30
    x, y = rng.random((B, n, 2)), rng.random((B, n, 2))
    C = ((x[:, :, None] - y[:, None]) ** 2).sum(-1)
    # a fifth problem with a NaN cost (under jit validation cannot see it): never converged, and the others unharmed
    C = jnp.asarray(np.concatenate([C, C[:1]]).copy())
    C = C.at[B, 3, 4].set(jnp.nan)
    a = jnp.full((B + 1, n), 1.0 / n)
    eps = jnp.asarray(np.append(np.linspace(5e-3, 1e-2, B), 0.1))
    opts = tr.SNSOptions(density=0.5, continuation=False)
    solve = lambda a, b, C, e: tr.sns(a, b, C, e, tol=1e-10, options=opts)  # noqa: E731
    batched = jax.jit(jax.vmap(solve))(a, a, C, eps)
    assert batched.f.shape == (B + 1, n)
    assert not bool(batched.converged[B])
    for i in range(B):
        ref = tr.sinkhorn(a[i], a[i], C[i], eps[i], tol=1e-10, max_iter=100_000)
        bi = jax.tree.map(lambda t: t[i], batched)
        assert bool(bi.converged) and bool(ref.converged)
        assert float(bi.marginal_error) <= 1e-10
        # both at marginal error <= 1e-10: dual values to 1e-9 relative (issue 14), plans to 1e-9 in L1 (the plan
        # moves by the marginal error times the conditioning of the linearised marginal map, below 10 here)
        np.testing.assert_allclose(bi.reg_cost, ref.reg_cost, rtol=1e-9)
        assert np.abs(plan_np(bi) - plan_np(ref)).sum() <= 1e-9


@pytest.mark.parametrize("bad, err", [((2, 4), ValueError), ((4, 4), ValueError), ((0.5,), ValueError),
                                      ((4, float("nan")), ValueError), ("8,4", TypeError), (3, TypeError),
                                      (True, TypeError)])
def test_sns_rejects_bad_continuation(bad, err):
    a, b, C, eps = PROBLEMS["points_sqeuclidean"]
    with pytest.raises(err, match="continuation"):
        tr.SNSOptions(continuation=bad)


@pytest.mark.parametrize("kw", [dict(patience=-1), dict(stage_tol=0.0), dict(stage_tol=float("inf")),
                                dict(mass_tol=1.0), dict(density=True), dict(density=1.5)])
def test_sns_rejects_bad_stage_options(kw):
    a, b, C, eps = PROBLEMS["points_sqeuclidean"]
    with pytest.raises((ValueError, TypeError), match=next(iter(kw))):
        tr.SNSOptions(**kw)
    # the old spelling reaches the same check (after its FutureWarning)
    with pytest.warns(FutureWarning), pytest.raises((ValueError, TypeError), match=next(iter(kw))):
        tr.sns(a, b, C, eps, **kw)


def test_sns_never_takes_a_non_ascent_step():
    # costs >= 4 at eps = 5e-3 with no warm start: every kernel entry (< exp(-800)) underflows at the zero
    # potentials and the Newton direction is zero; such a step must not be "accepted" (the stage falls back to
    # Sinkhorn sweeps, refreshes its pattern once the plan has mass, and converges to Sinkhorn's solution; the
    # offset does not change the optimal plan)
    a, b, C = point_clouds(40, 40, seed=31)
    C = C + 4.0
    eps = 5e-3
    rs = tr.sinkhorn(a, b, C, eps, tol=1e-9)
    rn = tr.sns(a, b, C, eps, tol=1e-9, options=tr.SNSOptions(warm_start=0, continuation=False))
    assert bool(rs.converged) and bool(rn.converged)
    assert int(rn.iterations) > int(rn.newton_iterations)  # fallback sweeps were taken
    assert abs(float(rn.reg_cost) - float(rs.reg_cost)) <= 1e-8 * abs(float(rs.reg_cost))
