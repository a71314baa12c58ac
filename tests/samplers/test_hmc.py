"""NUTS through infer.sample: BlackJAX's own kernel step for step, a Gaussian and a banana kept
invariant (closed-form moments, Monte Carlo error from ArviZ's ESS), ArviZ's stat names and the
gradient count."""
import arviz as az
import blackjax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import driftax as dx
from driftax.samplers import hmc
from driftax.samplers.rng import key_from_normals


def _gaussian(dim=5, seed=0):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    cov = q @ np.diag(np.linspace(1.0, 9.0, dim)) @ q.T
    prec = jnp.asarray(np.linalg.inv(cov), jnp.float32)
    return dx.models.Target(lambda x: -0.5 * x @ prec @ x, dim, name="gauss"), cov


@pytest.mark.parametrize("metric", ["none", "diag", "dense"])
def test_nuts_step_is_blackjax_nuts_on_the_key_made_from_its_noise(metric):
    target, cov = _gaussian(3)
    imm = {"none": None, "diag": jnp.asarray([1.0, 2.0, 0.5]), "dense": jnp.asarray(cov, jnp.float32)}[metric]
    loop_imm = (imm, jnp.linalg.cholesky(imm)) if metric == "dense" else imm  # the loop's dense form
    bj = blackjax.nuts(target.logdensity_fn, 0.4, jnp.ones(3) if imm is None else imm)
    noise = jax.random.normal(jax.random.key(1), (20, 2))

    def ours(s, z):
        s, info = hmc.nuts_step(s, z, target.logdensity_fn, 0.4, loop_imm)
        return s, (s.position, info.n_steps)

    def theirs(s, z):
        s, info = bj.step(key_from_normals(z), s)
        return s, (s.position, info.num_integration_steps)
    s0 = hmc.nuts_init(jnp.asarray([1.0, -1.0, 0.5]), target.logdensity_fn)
    _, (x_ours, n_ours) = jax.lax.scan(ours, s0, noise)
    _, (x_bj, n_bj) = jax.lax.scan(theirs, s0, noise)
    np.testing.assert_array_equal(n_ours, n_bj)
    np.testing.assert_allclose(x_ours, x_bj, rtol=1e-6, atol=1e-6)  # one program each: rounding only


def _within_mc_error(x, mean, var, var_of_square):
    """Draws ``x`` (chain, draw, dim) against closed-form moments, each within 4 Monte Carlo sds:
    the mean's sd is sqrt(var / ESS(x)); the variance's, by the delta method,
    sqrt(Var((x - mu)^2) / ESS((x - mu)^2)) with ESS from ArviZ on the squares themselves (the
    banana's x_2 has heavy tails: its squares mix far slower than it does). 4 sds: a false alarm
    per check has probability 6e-5."""
    mean, var, var_of_square = (np.asarray(a, np.float64) for a in (mean, var, var_of_square))
    for j in range(x.shape[-1]):
        xj = x[..., j].astype(np.float64)
        sq = (xj - mean[j]) ** 2
        ess, ess_sq = float(az.ess(xj)), float(az.ess(sq))
        assert abs(xj.mean() - mean[j]) <= 4 * np.sqrt(var[j] / ess), (j, xj.mean(), mean[j], ess)
        assert abs(sq.mean() - var[j]) <= 4 * np.sqrt(var_of_square[j] / ess_sq), (j, sq.mean(), var[j], ess_sq)


@pytest.mark.slow
def test_nuts_keeps_a_correlated_gaussian_with_a_dense_metric():
    target, cov = _gaussian()
    idata = dx.infer.sample(target, "nuts", num_chains=4, num_warmup=500, num_samples=500, seed=0,
                            mass_matrix="dense", progress=False)
    var = np.diag(cov)
    _within_mc_error(idata.posterior["x"].values, np.zeros(5), var, 2 * var**2)  # Gaussian: Var(z^2) = 2 var^2
    # ArviZ reads the stats by their names; every transition's leapfrog steps are counted
    stats = idata.sample_stats
    assert {"lp", "acceptance_rate", "diverging", "step_size", "n_steps", "tree_depth", "energy"} <= set(stats.data_vars)
    assert int(stats.diverging.sum()) == 0
    assert idata.attrs["num_grad_evals_sampling"] == float(stats.n_steps.sum())
    assert idata.attrs["num_grad_evals_warmup"] >= 500 * 4  # at least one leapfrog step per warm-up step
    az.bfmi(idata)  # energy is where plot_energy / bfmi look for it


def _quantiles_within_mc_error(x, exact, probs=(0.1, 0.5, 0.9)):
    """For each coordinate and each exact quantile q_p (from 400k exact draws), the fraction of draws
    below q_p is p within 4 Monte Carlo sds, sqrt(p(1-p)/ESS) with ArviZ's ESS of the indicator.
    Quantiles, not variances: the banana's x_2 is heavy-tailed, and a variance estimate from a few
    thousand correlated draws has no dependable error bar (seed 4 put it 5 'sds' off)."""
    for j in range(x.shape[-1]):
        for p in probs:
            below = (x[..., j] <= np.quantile(exact[:, j], p)).astype(np.float64)
            ess = float(az.ess(below))
            assert abs(below.mean() - p) <= 4 * np.sqrt(p * (1 - p) / ess), (j, p, below.mean(), ess)


@pytest.mark.slow
def test_nuts_samples_the_banana():
    """Haario's moderately twisted banana, narrowed (b = 0.03, sigma = 5, as MALA's test): means
    (closed form, 0) and quantiles (exact draws) within Monte Carlo error. (On the strongly twisted
    b = 0.1, sigma = 10 a 1,000-step warm-up left NUTS with bulk ESS 22 at seed 1: its tails need a
    smaller step than its bulk.)"""
    target = dx.models.gallery.banana(b=0.03, sigma=5.0)
    idata = dx.infer.sample(target, "nuts", num_chains=4, num_warmup=1000, num_samples=1000, seed=0, progress=False)
    x = idata.posterior["x"].values.astype(np.float64)
    for j in range(2):
        ess = float(az.ess(x[..., j]))
        assert abs(x[..., j].mean()) <= 4 * np.sqrt(target.cov[j, j] / ess)
    _quantiles_within_mc_error(x, np.asarray(target.sample(jax.random.key(7), 400_000), np.float64))


def test_gradient_evaluations_of_langevin_kernels_are_their_steps():
    target, _ = _gaussian(3)
    idata = dx.infer.sample(target, "mala", num_chains=3, num_warmup=40, num_samples=20, thinning=2, seed=0,
                            progress=False)
    assert idata.attrs["num_grad_evals_warmup"] == 3 * 40
    assert idata.attrs["num_grad_evals_sampling"] == 3 * 20 * 2
