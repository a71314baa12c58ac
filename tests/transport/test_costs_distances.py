import jax.numpy as jnp
import numpy as np
import ot
import pytest
from scipy.spatial.distance import cdist

from driftax import transport as tr
from driftax.transport import costs


@pytest.fixture
def pts():
    rng = np.random.default_rng(0)
    return rng.normal(size=(30, 3)), rng.normal(size=(20, 3))


@pytest.mark.parametrize("name,metric,power", [("sqeuclidean", "sqeuclidean", 1), ("euclidean", "euclidean", 1),
                                               ("l1", "cityblock", 1)])
def test_costs_match_scipy(x64, pts, name, metric, power):
    x, y = pts
    np.testing.assert_allclose(costs.pairwise(x, y, name), cdist(x, y, metric), rtol=1e-10, atol=1e-12)


def test_pnorm_and_rescale(x64, pts):
    x, y = pts
    np.testing.assert_allclose(costs.pnorm(x, y, p=3.0, q=2.0), cdist(x, y) ** 3, rtol=1e-10)
    np.testing.assert_allclose(costs.pnorm(x, y, p=1.0, q=np.inf), cdist(x, y, "chebyshev"), rtol=1e-10)
    c = costs.sqeuclidean(x, y, rescale="max")
    assert float(c.max()) == pytest.approx(1.0)
    assert float(costs.sqeuclidean(x, y, rescale=2.0).max()) == pytest.approx(cdist(x, y, "sqeuclidean").max() / 2)
    with pytest.raises(ValueError, match="rescale"):
        costs.sqeuclidean(x, y, rescale="bogus")
    with pytest.raises(ValueError, match="same dimension"):
        costs.sqeuclidean(x, y[:, :2])
    assert float(np.abs(np.diag(np.asarray(costs.sqeuclidean(x)))).max()) == 0.0


def test_grid_cost(x64):
    c = costs.grid_cost((3, 4), "l1", normalize=False)
    pts = np.array([(i, j) for i in range(3) for j in range(4)], float)
    np.testing.assert_allclose(c, cdist(pts, pts, "cityblock"))
    c2 = costs.grid_cost((28, 28), "sqeuclidean")
    assert c2.shape == (784, 784) and float(c2.max()) == pytest.approx(2.0)


def test_sinkhorn_distance_tends_to_emd2():
    # Cuturi's Sinkhorn distance <C, P_eps> is within eps*log(n) of the exact OT cost (uniform weights). 50
    # points: the compiled solver of the divergence test below (method="sns" is exercised there)
    rng = np.random.default_rng(1)
    x, y = rng.random((50, 2)), rng.random((50, 2)) + 0.2
    exact = ot.emd2(np.full(50, 1 / 50), np.full(50, 1 / 50), cdist(x, y, "sqeuclidean"))
    d = float(tr.sinkhorn_distance(x, y, epsilon=2e-3, tol=1e-9))
    assert 0 <= d - exact <= 2e-3 * np.log(50)


def test_sinkhorn_divergence_properties():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(50, 2))
    kw = dict(epsilon=0.5, tol=1e-9)
    assert abs(float(tr.sinkhorn_divergence(x, x, **kw))) <= 1e-8
    near = float(tr.sinkhorn_divergence(x, x + 0.1, **kw))
    far = float(tr.sinkhorn_divergence(x, x + 1.0, **kw))
    # a translation by t adds |t|^2 to OT_eps(a, T_t a) (the cross term is separable and cancels in mean), and
    # OT_eps(b, b) = OT_eps(a, a): the debiased divergence is exactly |t|^2 (here t = (s, s), |t|^2 = 2 s^2)
    assert near == pytest.approx(2 * 0.1**2, rel=1e-5)
    assert far == pytest.approx(2 * 1.0**2, rel=1e-6)
    d_sns = float(tr.sinkhorn_divergence(x, x + 1.0, method="sns", **kw))
    assert d_sns == pytest.approx(far, rel=1e-7)


def test_sinkhorn_distance_errors():
    x = np.zeros((5, 2))
    with pytest.raises(ValueError, match="method"):
        tr.sinkhorn_distance(x, x, 0.1, method="nope")
    # 100,000 sweeps (sinkhorn's default cap) are far too few at eps = 1e-5 (Sinkhorn needs about 2.2 / eps);
    # 50 points and the default cap: the compiled solver of the tests above
    with pytest.raises(ValueError, match="did not converge"):
        tr.sinkhorn_distance(np.random.default_rng(0).random((50, 2)), np.random.default_rng(1).random((50, 2)),
                             1e-5)


@pytest.mark.parametrize("name", ["sqeuclidean", "euclidean", "l1"])
def test_float64_request_honoured_without_x64(pts, name):
    import jax
    import jax.numpy as jnp

    assert not jax.config.jax_enable_x64  # the global flag stays off: the request alone must give float64
    x, y = pts
    c = getattr(costs, name)(x, y, dtype=jnp.float64)
    assert c.dtype == jnp.float64
    metric = {"sqeuclidean": "sqeuclidean", "euclidean": "euclidean", "l1": "cityblock"}[name]
    np.testing.assert_allclose(np.asarray(c), cdist(x, y, metric), rtol=1e-12, atol=1e-13)
    assert costs.pairwise(x, y, name, dtype=jnp.float64, rescale="max").dtype == jnp.float64
    g = costs.grid_cost((3, 4), name, dtype=jnp.float64)
    assert g.dtype == jnp.float64 and costs.grid_points((3, 4), dtype=jnp.float64).dtype == jnp.float64
    assert costs.sqeuclidean(x, y).dtype == jnp.float32  # no request: the global policy


@pytest.mark.parametrize("debiased", [False, True])
def test_distance_under_jit_is_nan_when_unconverged(debiased):
    import jax

    # 60 and 50 points (the padded size 64 and the 500-sweep cap of test_sinkhorn.py::test_small_epsilon_is_finite:
    # its compiled solver for the eager calls)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(60, 3)), rng.normal(size=(50, 3))
    with jax.enable_x64(True):
        # one compiled program (epsilon traced) for the unconverged and the converged solve: 500 sweeps are far
        # too few at eps = 1e-3 for costs up to ~40, and enough at eps = 3 (12, 15 and 31 sweeps for the x-y, x-x
        # and y-y problems)
        fn = jax.jit(lambda x, y, e: tr.sinkhorn_distance(x, y, e, max_iter=500, tol=1e-8, debiased=debiased))
        assert np.isnan(float(fn(x, y, 1e-3)))
        with pytest.raises(ValueError, match="did not converge"):
            tr.sinkhorn_distance(x, y, 1e-3, max_iter=500, tol=1e-8, debiased=debiased)
        # converged under jit: the value, equal to the eager one
        ok = fn(x, y, 3.0)
        ref = tr.sinkhorn_distance(x, y, 3.0, max_iter=500, tol=1e-8, debiased=debiased)
        assert np.isfinite(float(ok)) and float(ok) == pytest.approx(float(ref), rel=1e-9)


def test_sqeuclidean_keeps_precision_far_from_the_origin():
    # |x|^2 + |y|^2 - 2<x, y> cancels catastrophically for clouds at distance 1e5 from the origin (|x|^2 ~ 1e10,
    # float64 round-off ~ 1e-6 against costs of order 1); the cost must not depend on where the clouds sit
    rng = np.random.default_rng(9)
    x, y = rng.random((40, 3)) + 1e5, rng.random((30, 3)) + 1e5
    # reference: differences first (exact for nearby floats, Sterbenz), then squares
    np.testing.assert_allclose(np.asarray(costs.sqeuclidean(x, y, dtype=jnp.float64)),
                               ((x[:, None] - y[None]) ** 2).sum(-1), rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.asarray(costs.sqeuclidean(x, dtype=jnp.float64)),
                               ((x[:, None] - x[None]) ** 2).sum(-1), rtol=0, atol=1e-12)


def _pot_plan(a, b, C, eps):
    return ot.bregman.sinkhorn_log(a, b, C, eps, numItermax=100_000, stopThr=1e-14)


def _weighted_clouds():
    rng = np.random.default_rng(12)
    x, y = rng.random((40, 2)), rng.random((30, 2)) + 0.3
    wa, wb = rng.random(40) + 0.1, rng.random(30) + 0.1  # unnormalised: the functions normalise them
    return x, y, wa, wb


def test_weighted_sinkhorn_distance_matches_pot():
    x, y, wa, wb = _weighted_clouds()
    a, b = wa / wa.sum(), wb / wb.sum()
    C = cdist(x, y, "sqeuclidean")
    eps, tol = 0.05, 1e-10
    ref = float(np.sum(C * _pot_plan(a, b, C, eps)))
    d = float(tr.sinkhorn_distance(x, y, eps, a=wa, b=wb, tol=tol))
    # |<C, P> - <C, P*>| <= max C |P - P*|_1, and |P - P*|_1 <= kappa * tol with kappa the conditioning of the
    # linearised marginal map (measured 2.1 here: 1.95e-10 at an error of 9.4e-11); 5x kappa
    assert abs(d - ref) <= C.max() * 5 * tol
    # the weights matter (uniform weights give another value, by far more than the tolerance)
    assert abs(float(tr.sinkhorn_distance(x, y, eps, tol=tol)) - d) > 1e3 * C.max() * 5 * tol
    with pytest.raises(ValueError, match=r"a must have shape \(40,\)"):
        tr.sinkhorn_distance(x, y, eps, a=wa[:-1])


def test_weighted_sinkhorn_divergence_matches_pot():
    x, y, wa, wb = _weighted_clouds()
    a, b = wa / wa.sum(), wb / wb.sum()
    eps, tol = 0.05, 1e-10

    def reg(a, b, C):  # POT's primal objective <C, P> + eps sum P log P at its plan
        P = _pot_plan(a, b, C, eps)
        return float(np.sum(C * P) + eps * np.sum(P * np.log(P)))

    pairs = [(a, b, cdist(x, y, "sqeuclidean")), (a, a, cdist(x, x, "sqeuclidean")),
             (b, b, cdist(y, y, "sqeuclidean"))]
    ref = reg(*pairs[0]) - 0.5 * reg(*pairs[1]) - 0.5 * reg(*pairs[2])
    s = float(tr.sinkhorn_divergence(x, y, eps, a=wa, b=wb, tol=tol))
    # each dual value D is concave with gradient (a - P1, b - P^T1): 0 <= D* - D <= tol * |z - z*|_inf, and the
    # potentials (after the free shift) differ by at most their oscillation, max C + eps log(max w / min w)
    # (c-transform); weights 1 + 1/2 + 1/2
    osc = max(C.max() + eps * np.log(w.max() / w.min()) for w, _, C in pairs)
    assert abs(s - ref) <= 2 * tol * 2 * osc
    assert s > 0.05  # clouds shifted by 0.3: far from zero (and the bound above is ~1e-9)


def test_epsilon_none_is_five_percent_of_the_mean_cost():
    rng = np.random.default_rng(13)
    x, y = rng.random((40, 2)), rng.random((30, 2))
    C = cdist(x, y, "sqeuclidean")
    eps = 0.05 * C.mean()  # the documented default
    tol = 1e-10
    ref = float(np.sum(C * _pot_plan(np.full(40, 1 / 40), np.full(30, 1 / 30), C, eps)))
    d = float(tr.sinkhorn_distance(x, y, tol=tol))
    # as in the weighted test: max C * 5 * kappa-bounded plan error
    assert abs(d - ref) <= C.max() * 5 * tol
    # another epsilon gives another value (by far more than the tolerance)
    assert abs(float(tr.sinkhorn_distance(x, y, 2 * eps, tol=tol)) - d) > 1e3 * C.max() * 5 * tol


@pytest.mark.parametrize("rescale", ["mean", "median"])
@pytest.mark.parametrize("name,metric", [("sqeuclidean", "sqeuclidean"), ("euclidean", "euclidean"),
                                         ("l1", "cityblock")])
def test_rescale_mean_and_median(x64, pts, rescale, name, metric):
    x, y = pts
    ref = cdist(x, y, metric)
    ref = ref / {"mean": np.mean, "median": np.median}[rescale](ref)
    # float64 costs to ~1e-15 relative (scipy and driftax compute differently), the statistic likewise
    np.testing.assert_allclose(costs.pairwise(x, y, name, rescale=rescale), ref, rtol=1e-10, atol=1e-12)
    g = np.asarray(costs.grid_cost((3, 4), name, normalize=False, rescale=rescale))
    pts_g = np.array([(i, j) for i in range(3) for j in range(4)], float)
    gref = cdist(pts_g, pts_g, metric)
    np.testing.assert_allclose(g, gref / {"mean": np.mean, "median": np.median}[rescale](gref), rtol=1e-12)
