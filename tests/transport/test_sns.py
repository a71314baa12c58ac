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


def test_sns_iteration_advantage_at_small_epsilon():
    # the paper's claim in miniature: Sinkhorn's sweeps grow like 1/eps, SNS stays at tens of iterations
    a, b, C = point_clouds(200, 200, seed=23)
    rs = tr.sinkhorn(a, b, C, 1e-3, tol=1e-8)
    rn = tr.sns(a, b, C, 1e-3, tol=1e-8)
    assert bool(rs.converged) and bool(rn.converged)
    assert int(rs.iterations) > 1000
    assert int(rs.iterations) >= 30 * int(rn.iterations)


def test_sns_history_and_counts():
    a, b, C, eps = PROBLEMS["points_sqeuclidean"]
    res = tr.sns(a, b, C, eps, tol=1e-10, warm_start=20)
    hist = np.asarray(res.errors)
    nt = int(res.newton_iterations)
    newton_hist = hist[20:20 + nt]
    assert np.all(newton_hist >= 0) and newton_hist[-1] <= 1e-10
    assert np.all(hist[20 + nt:] == -1)
    # the final Newton steps converge fast (quadratic-like): the last step gains at least 10x
    assert newton_hist[-1] <= 0.1 * newton_hist[-2]


def test_sns_fixed_density_vmap_equals_single_solves(x64):
    rng = np.random.default_rng(24)
    B, n = 8, 40
    x = rng.random((B, n, 2))
    y = rng.random((B, n, 2))
    C = jnp.asarray(((x[:, :, None] - y[:, None]) ** 2).sum(-1))
    a = jnp.full((B, n), 1.0 / n)
    eps = jnp.asarray(np.linspace(2e-3, 2e-2, B))
    solve = lambda a, b, C, e: tr.sns(a, b, C, e, tol=1e-10, density=0.5)  # noqa: E731
    batched = jax.jit(jax.vmap(solve))(a, a, C, eps)
    for i in range(B):
        single = solve(a[i], a[i], C[i], eps[i])
        assert bool(batched.converged[i]) and bool(single.converged)
        np.testing.assert_allclose(batched.reg_cost[i], single.reg_cost, rtol=1e-10)
        np.testing.assert_allclose(plan_np(jax.tree.map(lambda t: t[i], batched)), plan_np(single),
                                   atol=1e-9 / n)


def test_sns_density_sweep_all_converge():
    a, b, C, eps = PROBLEMS["points_sqeuclidean"]
    ref = tr.sns(a, b, C, eps, tol=1e-10)
    for d in (0.1, 1.0):
        r = tr.sns(a, b, C, eps, tol=1e-10, density=d)
        assert bool(r.converged), d
        assert abs(float(r.reg_cost) - float(ref.reg_cost)) <= 1e-9 * abs(float(ref.reg_cost))


def test_sns_fallback_path_converges():
    # max_backtracks=1 forces frequent Sinkhorn fallbacks; the method must still converge
    a, b, C, eps = PROBLEMS["points_sqeuclidean"]
    r = tr.sns(a, b, C, eps, tol=1e-9, max_backtracks=1, density=0.05)
    assert bool(r.converged)


def test_scaling_form_warm_start_equals_log_domain_sweeps(x64):
    # the stabilised scaling sweeps used by SNS produce the log-domain Sinkhorn iterates (Schmitzer 2019)
    from driftax.transport.sinkhorn import sinkhorn_loop
    from driftax.transport.sns import _scaling_sweeps

    for (a, b, C, eps) in (PROBLEMS["random_assignment"], PROBLEMS["points_weighted_rect"]):
        a, b, C, eps = jnp.asarray(a), jnp.asarray(b), jnp.asarray(C), jnp.asarray(eps)
        z = (jnp.zeros_like(a), jnp.zeros_like(b))
        f1, g1 = jax.jit(lambda: _scaling_sweeps(a, b, C, eps, *z, 25))()
        f2, g2, _, it, _ = sinkhorn_loop(a, b, C, eps, *z, jnp.asarray(1e-300), max_iter=25, norm="l1")
        assert int(it) == 25
        np.testing.assert_allclose(f1, f2, rtol=0, atol=1e-10 * float(jnp.abs(f2).max()))
        np.testing.assert_allclose(g1, g2, rtol=0, atol=1e-10 * float(jnp.abs(g2).max()))
    # a wide dynamic range (kernel entries exp(-100/0.05) underflow to 0) and very uneven weights: still the same
    C = jnp.asarray([[0.0, 50.0, 100.0], [50.0, 0.0, 50.0], [100.0, 50.0, 0.0]])
    a = jnp.asarray([0.98, 0.01, 0.01])
    b = jnp.asarray([0.01, 0.01, 0.98])
    eps = jnp.asarray(0.05)
    z = (jnp.zeros(3), jnp.zeros(3))
    f1, g1 = _scaling_sweeps(a, b, C, eps, *z, 10)
    f2, g2, _, _, _ = sinkhorn_loop(a, b, C, eps, *z, jnp.asarray(1e-300), max_iter=10, norm="l1")
    assert np.all(np.isfinite(np.asarray(f1))) and np.all(np.isfinite(np.asarray(g1)))
    np.testing.assert_allclose(f1 + g1.mean(), f2 + g2.mean(), rtol=1e-9)
