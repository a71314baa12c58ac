import jax
import jax.numpy as jnp
import numpy as np
import pytest

from driftax import transport as tr
from tests.transport.conftest import point_clouds

a, b, C = point_clouds(10, 8, seed=0)
SOLVERS = [tr.sinkhorn, tr.sns]


@pytest.mark.parametrize("solver", SOLVERS)
def test_negative_weights(solver):
    bad = a.copy()
    bad[2] = -0.1
    with pytest.raises(ValueError, match=r"^a must be non-negative"):
        solver(bad, b, C, 0.1)
    with pytest.raises(ValueError, match=r"^b must be non-negative"):
        solver(a, -b, C, 0.1)


@pytest.mark.parametrize("solver", SOLVERS)
def test_masses_differ_says_by_how_much(solver):
    with pytest.raises(ValueError, match=r"a and b must have the same total mass.*differ by 1\.000e-01"):
        solver(a, b * 1.1, C, 0.1)


@pytest.mark.parametrize("solver", SOLVERS)
def test_shapes(solver):
    with pytest.raises(ValueError, match=r"a must have shape \(10,\)"):
        solver(a[:9], b, C, 0.1)
    with pytest.raises(ValueError, match=r"b must have shape \(8,\)"):
        solver(a, np.full(9, 1 / 9), C, 0.1)
    with pytest.raises(ValueError, match="cost must be a 2-D"):
        solver(a, b, C.ravel(), 0.1)


@pytest.mark.parametrize("solver", SOLVERS)
def test_non_finite_cost(solver):
    bad = C.copy()
    bad[0, 0] = np.inf
    bad[1, 1] = np.nan
    with pytest.raises(ValueError, match="cost must be finite, got 2 non-finite"):
        solver(a, b, bad, 0.1)


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("eps", [0.0, -1.0, np.inf, np.nan])
def test_bad_epsilon(solver, eps):
    with pytest.raises(ValueError, match="epsilon must be a positive finite number"):
        solver(a, b, C, eps)


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("tol", [0.0, -1e-8])
def test_bad_tol(solver, tol):
    with pytest.raises(ValueError, match="tol must be a positive finite number"):
        solver(a, b, C, 0.1, tol=tol)


def test_types_and_options():
    with pytest.raises(TypeError, match="cost must be a real numeric array"):
        tr.sinkhorn(a, b, "cost", 0.1)
    with pytest.raises(TypeError, match="a must be a real numeric array"):
        tr.sinkhorn(a.astype(complex), b, C, 0.1)
    with pytest.raises(TypeError, match="epsilon must be a real numeric"):
        tr.sinkhorn(a, b, C, "0.1")
    with pytest.raises(ValueError, match="norm must be one of"):
        tr.sinkhorn(a, b, C, 0.1, norm="l3")
    with pytest.raises(TypeError, match="max_iter must be an int"):
        tr.sinkhorn(a, b, C, 0.1, max_iter=1.5)
    with pytest.raises(ValueError, match="epsilon_scaling"):
        tr.sinkhorn(a, b, C, 0.1, epsilon_scaling=1.5)
    with pytest.raises(ValueError, match="density must be None or a fraction"):
        tr.SNSOptions(density=2.0)
    with pytest.raises(ValueError, match="init potentials must have shapes"):
        tr.sinkhorn(a, b, C, 0.1, init=(np.zeros(3), np.zeros(8)))
    with pytest.raises(TypeError, match="dtype must be"):
        tr.sinkhorn(a, b, C, 0.1, dtype=np.int32)


def test_none_weights_are_uniform():
    r1 = tr.sinkhorn(None, None, C, 0.1, tol=1e-10)
    r2 = tr.sinkhorn(a, b, C, 0.1, tol=1e-10)
    assert float(r1.reg_cost) == pytest.approx(float(r2.reg_cost), rel=1e-12)


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("tol", [1.0, 1e-8])
def test_mass_slack_does_not_scale_with_tol(solver, tol):
    # a 0.1% mismatch is an input error whatever the stopping tolerance (tol=1.0 used to accept 50%)
    with pytest.raises(ValueError, match=r"a and b must have the same total mass.*differ by 1\.000e-03"):
        solver(a, b * 1.001, C, 0.1, tol=tol)
    with pytest.raises(ValueError, match=r"a and b must have the same total mass.*differ by 4\.000e-01"):
        solver(a, b * 1.4, C, 0.1, tol=tol)
    # rounding-level differences are accepted
    res = solver(a, b * (1 + 1e-12), C, 0.1, tol=tol)
    assert np.isfinite(float(res.transport_cost))


@pytest.mark.parametrize("solver", SOLVERS)
def test_warm_start_from_result_with_zero_weights(solver):
    a0, b0 = a.copy(), b.copy()
    a0[[1, 4]] = 0.0
    b0[3] = 0.0
    a0, b0 = a0 / a0.sum(), b0 / b0.sum()
    r = solver(a0, b0, C, 0.05, tol=1e-10)
    assert bool(r.converged)
    assert np.isneginf(np.asarray(r.f)[[1, 4]]).all() and np.isneginf(np.asarray(r.g)[3])
    if solver is tr.sns:
        # SNS's plan is Sinkhorn's (whose zero-weight plan equals that of the compressed problem:
        # test_sinkhorn.py::test_zero_weights_match_compressed_problem); both at L1 marginal error <= 1e-10, and
        # the plan moves by that error times the conditioning of the linearised marginal map (measured 1.1 here:
        # |P - P_ref|_1 = 1.4e-10 at errors 4.2e-11 and 9.3e-11), at most 2.2e-10 for any two stops <= 1e-10
        ref = tr.sinkhorn(a0, b0, C, 0.05, tol=1e-10)
        assert np.abs(np.asarray(r.plan()) - np.asarray(ref.plan())).sum() <= 1e-9
    r2 = solver(a0, b0, C, 0.05, tol=1e-10, init=(r.f, r.g))
    assert bool(r2.converged) and float(r2.marginal_error) <= 1e-10
    np.testing.assert_allclose(float(r2.transport_cost), float(r.transport_cost), rtol=1e-9)
    P = np.asarray(r2.plan())
    assert (P[[1, 4]] == 0).all() and (P[:, 3] == 0).all()
    # -inf only where the weight is zero; NaN never
    f_bad = np.array(r.f)
    f_bad[0] = -np.inf
    with pytest.raises(ValueError, match=r"init potentials must be finite where the weights are positive.*init f"):
        solver(a0, b0, C, 0.05, init=(f_bad, r.g))
    g_bad = np.array(r.g)
    g_bad[3] = np.nan
    with pytest.raises(ValueError, match=r"init g has 1 bad"):
        solver(a0, b0, C, 0.05, init=(r.f, g_bad))


@pytest.mark.parametrize("solver", ["sinkhorn", "sns"])
def test_closed_over_inputs_with_traced_epsilon_under_jit(x64, solver):
    # concrete a, b, C captured by a caller's jit are staged as tracers once cast: validation must not try to
    # read their values (it raised TracerArrayConversionError), and the result equals the eager solve
    a_, b_, C_ = point_clouds(30, 30, seed=1)
    solve = getattr(tr, solver)
    jitted = jax.jit(lambda e: solve(a_, b_, C_, e, tol=1e-9))(jnp.asarray(0.05))
    # the eager truth for both solvers: Sinkhorn (one compiled program for the two cases)
    eager = tr.sinkhorn(a_, b_, C_, 0.05, tol=1e-9)
    assert bool(jitted.converged) and bool(eager.converged)
    # both at L1 marginal error <= tol: each dual value D is concave with gradient (a - P1, b - P^T1), so
    # 0 <= D* - D <= tol * |z - z*|_inf, and the potentials (after the free shift) differ by at most their
    # oscillation, max C (c-transform, uniform weights): |D1 - D2| <= 2 tol max C (~3e-9 against |D| ~ 0.2)
    assert abs(float(jitted.reg_cost) - float(eager.reg_cost)) <= 2 * 1e-9 * C_.max()


def test_small_problems_are_padded_with_exact_zero_weights():
    # sides up to 128 are solved at the next power of two (>= 16), so that nearby small sizes share one compiled
    # program; larger sides as they are (there the solve, not the compile, dominates)
    from driftax.transport.problem import pad_problem, padded_size

    assert [padded_size(n) for n in (1, 10, 16, 17, 45, 64, 65, 120, 128, 129, 500)] == \
        [16, 16, 16, 32, 64, 64, 128, 128, 128, 129, 500]
    ap, bp, cp, fp, gp = pad_problem(a, b, C, np.zeros(10), np.zeros(8), (16, 16))
    assert ap.shape == (16,) and bp.shape == (16,) and cp.shape == (16, 16)
    # the padding is zero weight, zero cost and a -inf potential (exp(-inf) = 0: it adds exact zeros to every sum)
    np.testing.assert_array_equal(ap[:10], a)
    assert np.all(ap[10:] == 0) and np.all(bp[8:] == 0) and np.all(cp[10:] == 0) and np.all(cp[:, 8:] == 0)
    assert np.all(np.isneginf(fp[10:])) and np.all(np.isneginf(gp[8:])) and np.all(fp[:10] == 0)
    # the result comes back at the problem's own size, its plan exactly zero nowhere it should not be
    r = tr.sinkhorn(a, b, C, 0.1, tol=1e-10)  # (the program of test_none_weights_are_uniform)
    assert r.f.shape == (10,) and r.g.shape == (8,) and r.a.shape == (10,) and np.all(np.isfinite(np.asarray(r.f)))
