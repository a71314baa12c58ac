"""Gallery targets against ground truths computed outside the code under test.

- Normalisation: scipy quadrature (Simpson on a fine 2-d grid, or dblquad) of exp(logdensity_fn)
  must equal exp(log_Z); the wells' log_Z also against the published values.
- Exact samplers: sample moments against the stated mean/cov within Monte-Carlo error. For a
  mean, the error of the average of n i.i.d. draws has sd sqrt(Var/n); for a covariance entry
  the error of the empirical covariance has sd sd((x_i-m_i)(x_j-m_j))/sqrt(n) (estimated from the
  draws, valid when fourth moments exist). We allow 5.5 of those sds: the chance that one
  Gaussian error exceeds it is 4e-8, so even over the ~2,000 entries checked below a false alarm
  has probability < 1e-4 (and the seeds are fixed, so the test is deterministic anyway).
"""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

from driftax.models import Target, gallery

N_MC = 60_000
Z_SE = 5.5


def _grid_log_z(target, x0, x1):
    """log ∫∫ exp(logdensity_fn) by Simpson's rule on the grid x0 × x1 (scipy)."""
    g0, g1 = np.meshgrid(x0, x1, indexing="ij")
    pts = jnp.asarray(np.stack([g0.ravel(), g1.ravel()], axis=1), dtype=jnp.float32)
    lp = np.asarray(jax.jit(jax.vmap(target.logdensity_fn))(pts), dtype=np.float64).reshape(g0.shape)
    top = lp.max()
    inner = integrate.simpson(np.exp(lp - top), x=x1, axis=1)
    return top + math.log(integrate.simpson(inner, x=x0)), lp


def _check_moments(target, n=N_MC, seed=0, check_cov=True):
    x = np.asarray(target.sample(jax.random.key(seed), n), dtype=np.float64)
    assert x.shape == (n, target.dim)
    assert np.all(np.isfinite(x))
    mean, cov = np.asarray(target.mean, np.float64), np.asarray(target.cov, np.float64)
    se_mean = np.sqrt(np.diag(cov) / n)
    assert np.all(np.abs(x.mean(0) - mean) <= Z_SE * se_mean), (x.mean(0), mean)
    if check_cov:
        c = x - mean
        emp = c.T @ c / n
        prods_sd = np.sqrt(np.maximum((c ** 2).T @ (c ** 2) / n - emp ** 2, 0.0))
        se_cov = prods_sd / math.sqrt(n)
        bad = np.abs(emp - cov) > Z_SE * se_cov + 1e-6
        assert not bad.any(), (emp[bad], cov[bad])
    return x


# --------------------------------------------------------------------------- normalisation
def test_gaussian_matches_scipy_and_normalises():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((3, 3))
    cov = a @ a.T + 0.5 * np.eye(3)
    mean = np.array([1.0, -2.0, 0.5])
    t = gallery.gaussian(mean, cov)
    xs = rng.standard_normal((10, 3)) * 2 + mean
    ref = stats.multivariate_normal(mean, cov).logpdf(xs)
    np.testing.assert_allclose(jax.vmap(t.logdensity_fn)(jnp.asarray(xs, jnp.float32)), ref, rtol=1e-5, atol=1e-4)
    t2 = gallery.gaussian(mean[:2], cov[:2, :2])
    sd = np.sqrt(np.diag(cov))
    log_z, _ = _grid_log_z(t2, np.linspace(mean[0] - 9 * sd[0], mean[0] + 9 * sd[0], 801),
                           np.linspace(mean[1] - 9 * sd[1], mean[1] + 9 * sd[1], 801))
    assert abs(log_z - t2.log_Z) < 1e-4


def test_banana_normalises_and_closed_form_variance():
    b, sigma = 0.3, 2.0
    t = gallery.banana(2, b=b, sigma=sigma)
    x0 = np.linspace(-8 * sigma, 8 * sigma, 1601)
    x1 = np.linspace(-b * (64 * sigma ** 2) - 8, b * sigma ** 2 + 8, 2401)
    log_z, lp = _grid_log_z(t, x0, x1)
    assert abs(log_z - 0.0) < 1e-4
    # second moment of x_2 by quadrature vs 1 + 2 b² σ⁴
    w = np.exp(lp)
    ex2 = integrate.simpson(integrate.simpson(w * x1[None, :] ** 2, x=x1, axis=1), x=x0)
    assert abs(ex2 - (1 + 2 * b * b * sigma ** 4)) < 1e-3 * ex2
    np.testing.assert_allclose(np.diag(t.cov), [sigma ** 2, 1 + 2 * b * b * sigma ** 4])


def test_funnel_normalises_dblquad():
    t = gallery.neals_funnel(2, scale=3.0)
    f = jax.jit(t.logdensity_fn)

    def dens(x1, x0):
        return math.exp(float(f(jnp.array([x0, x1], jnp.float32))))

    val, _ = integrate.dblquad(dens, -27, 27, lambda v: -10 * math.exp(v / 2), lambda v: 10 * math.exp(v / 2),
                               epsabs=1e-7, epsrel=1e-6)
    assert abs(math.log(val) - t.log_Z) < 1e-4


@pytest.mark.parametrize("builder,lim,num", [
    (lambda: gallery.gmm9(), 9.0, 1201),
    (lambda: gallery.mog40(), 47.0, 1601),
    (lambda: gallery.double_well(2, 2, delta=4.0), 4.0, 1201),
    (lambda: gallery.double_well(2, 1, delta=2.5), 7.0, 1201),
    (lambda: gallery.many_well(2), 7.0, 1201),
])
def test_2d_targets_normalise_to_log_z(builder, lim, num):
    t = builder()
    grid = np.linspace(-lim, lim, num)
    log_z, _ = _grid_log_z(t, grid, grid)
    assert abs(log_z - t.log_Z) < 2e-4, (t.name, log_z, t.log_Z)


def test_wells_log_z_against_published_values():
    # Richter & Berner (2024) / notes: DW(5,5,4) -0.541056, DW(50,5,2) 42.817243; FAB many-well 164.6957
    assert abs(gallery.double_well(5, 5, 4.0).log_Z - (-0.541056)) < 1e-5
    assert abs(gallery.double_well(50, 5, 2.0).log_Z - 42.817243) < 1e-5
    assert abs(gallery.many_well(32).log_Z - 164.6957) < 1e-4
    # and by scipy.quad of the 1-d factor, written here from the formula
    q = integrate.quad(lambda s: math.exp(-s ** 4 + 6 * s ** 2 + 0.5 * s), -6, 6, points=[-1.7, 1.7])[0]
    assert abs(gallery.many_well(8).log_Z - 4 * (math.log(q) + 0.5 * math.log(2 * math.pi))) < 1e-8


def test_wells_variance_by_quad():
    for delta in (4.0, 1.0):
        f = lambda s: math.exp(-(s * s - delta) ** 2)
        z = integrate.quad(f, -6, 6, points=[-math.sqrt(delta), math.sqrt(delta)])[0]
        m2 = integrate.quad(lambda s: s * s * f(s), -6, 6, points=[-math.sqrt(delta), math.sqrt(delta)])[0] / z
        t = gallery.double_well(3, 2, delta)
        np.testing.assert_allclose(np.diag(t.cov), [m2, m2, 1.0], rtol=1e-6)


# --------------------------------------------------------------------------- exact samplers
@pytest.mark.parametrize("builder", [
    lambda: gallery.ill_conditioned_gaussian(6, 1e3, seed=2),
    lambda: gallery.correlated_gaussian(5, rho=0.8),
    lambda: gallery.correlated_gaussian(8, seed=4),
    lambda: gallery.banana(3, b=0.1, sigma=3.0),
    lambda: gallery.neals_funnel(4, scale=1.0),
    lambda: gallery.gmm9(),
    lambda: gallery.mog40(),
    lambda: gallery.double_well(5, 3, delta=3.0),
    lambda: gallery.many_well(32),
], ids=["illcond", "equicorr", "randcorr", "banana", "funnel", "gmm9", "mog40", "dw", "manywell"])
def test_exact_sampler_moments(builder):
    _check_moments(builder())


def test_funnel_default_structure():
    # scale 3: x_i² has infinite-ish kurtosis for a covariance check; test the conditional law instead
    t = gallery.neals_funnel(10, 3.0)
    x = np.asarray(t.sample(jax.random.key(5), 50_000), np.float64)
    assert abs(x[:, 0].mean()) < Z_SE * 3 / math.sqrt(len(x))
    assert stats.kstest(x[:, 0] / 3.0, "norm").pvalue > 1e-3
    z = x[:, 1:] / np.exp(x[:, :1] / 2)
    assert stats.kstest(z.ravel()[:50_000], "norm").pvalue > 1e-3
    np.testing.assert_allclose(np.diag(t.cov)[1:], math.exp(4.5))


def test_well_sampler_marginal_ks_against_quad_cdf():
    """The inverse-CDF sampler against a CDF computed by scipy.quad from the formula."""
    for t, logf, lo in [
        (gallery.double_well(2, 2, 4.0), lambda s: -(s * s - 4.0) ** 2, -4.0),
        (gallery.many_well(2), lambda s: -s ** 4 + 6 * s ** 2 + 0.5 * s, -5.0),
    ]:
        f = lambda s: math.exp(logf(s))
        z = integrate.quad(f, lo, -lo, limit=200)[0]
        grid = np.linspace(lo, -lo, 801)
        cdf_grid = np.array([integrate.quad(f, lo, g, limit=200)[0] for g in grid]) / z
        x = np.asarray(t.sample(jax.random.key(7), 20_000))[:, 0]
        res = stats.kstest(x, lambda v: np.interp(v, grid, cdf_grid))
        assert res.pvalue > 1e-3, (t.name, res)


# --------------------------------------------------------------------------- logistic regression
def test_logistic_regression_against_handwritten():
    t = gallery.logistic_regression("breast_cancer", prior_scale=2.0)
    assert t.dim == 31 and t.mean is None
    import csv
    from pathlib import Path

    path = Path(gallery.__file__).parent / "data" / "breast_cancer.csv"
    rows = list(csv.reader(open(path)))
    arr = np.array(rows[1:], dtype=float)
    assert arr.shape == (569, 31)
    X, y = arr[:, :30], arr[:, 30]
    Xs = (X - X.mean(0)) / X.std(0)
    design = np.hstack([np.ones((569, 1)), Xs])
    rng = np.random.default_rng(0)
    for _ in range(3):
        beta = rng.standard_normal(31) * 0.3
        eta = design @ beta
        ref = (np.sum(stats.bernoulli.logpmf(y, 1 / (1 + np.exp(-eta))))
               + np.sum(stats.norm.logpdf(beta, 0, 2.0)))
        np.testing.assert_allclose(t.logdensity_fn(jnp.asarray(beta, jnp.float32)), ref, rtol=1e-5)
    out = t.constrain(jnp.zeros(31))
    assert out["intercept"].shape == () and out["beta"].shape == (30,)
    t2 = gallery.logistic_regression((X[:50, :3], y[:50]))
    assert t2.dim == 4


# --------------------------------------------------------------------------- API
@pytest.mark.parametrize("name", ["gaussian", "ill_conditioned_gaussian", "correlated_gaussian", "banana",
                                  "funnel", "gmm9", "mog40", "double_well", "many_well", "logistic_regression"])
def test_registry_targets_are_jax_functions(name):
    t = gallery.get(name)
    assert isinstance(t, Target)
    xs = t.initial_positions(jax.random.key(0), 4)
    assert xs.shape == (4, t.dim) and xs.dtype == jnp.float32
    lp, g = jax.vmap(jax.value_and_grad(t.logdensity_fn))(xs)
    np.testing.assert_allclose(jax.jit(t.logdensity_fn)(xs[0]), lp[0], rtol=1e-5, atol=1e-5)
    assert lp.dtype == jnp.float32 and g.dtype == jnp.float32
    assert np.all(np.isfinite(lp)) and np.all(np.isfinite(g))
    if t.sample is not None:
        assert t.sample(jax.random.key(1), 3).dtype == jnp.float32


def test_ill_conditioned_condition_number():
    t = gallery.ill_conditioned_gaussian(8, 1e4, seed=1)
    assert np.linalg.cond(np.asarray(t.cov, np.float64)) == pytest.approx(1e4, rel=1e-2)


@pytest.mark.parametrize("call,exc,match", [
    (lambda: gallery.gaussian([0.0, 0.0], [[1.0, 2.0], [2.0, 1.0]]), ValueError, "positive definite"),
    (lambda: gallery.gaussian([0.0, 0.0], [[1.0, 0.5], [0.0, 1.0]]), ValueError, "symmetric"),
    (lambda: gallery.gaussian([0.0, 0.0], np.eye(3)), ValueError, "cov"),
    (lambda: gallery.gaussian([[0.0]], np.eye(1)), ValueError, "mean"),
    (lambda: gallery.gaussian([np.nan], np.eye(1)), ValueError, "finite"),
    (lambda: gallery.ill_conditioned_gaussian(3, 0.5), ValueError, "condition_number"),
    (lambda: gallery.correlated_gaussian(3, rho=-0.9), ValueError, "rho"),
    (lambda: gallery.correlated_gaussian(3, rho=0.5, seed=1), ValueError, "rho or seed"),
    (lambda: gallery.banana(1), ValueError, "dim"),
    (lambda: gallery.banana(2, sigma=-1.0), ValueError, "sigma"),
    (lambda: gallery.neals_funnel(2.5), TypeError, "dim"),
    (lambda: gallery.neals_funnel(3, scale=0.0), ValueError, "scale"),
    (lambda: gallery.gmm9(variance=-1), ValueError, "variance"),
    (lambda: gallery.mog40(seed=-1), ValueError, "seed"),
    (lambda: gallery.double_well(3, 4), ValueError, "m must be"),
    (lambda: gallery.many_well(5), ValueError, "even"),
    (lambda: gallery.logistic_regression("nope"), ValueError, "dataset"),
    (lambda: gallery.logistic_regression(prior_scale=0), ValueError, "prior_scale"),
    (lambda: gallery.logistic_regression((np.ones((3, 2)), np.array([0, 1, 2]))), ValueError, "0 and 1"),
    (lambda: gallery.get("nope"), ValueError, "unknown target"),
    (lambda: gallery.banana().sample(jax.random.key(0), 0), ValueError, "n must be"),
])
def test_input_validation(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
