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


def _within_mc_error(draws, mean, var, ess):
    """|mean error| <= 4 se with se = sd/sqrt(ESS), and |variance error| <= 4 se with the se of a
    variance from ESS draws, var sqrt((kurtosis - 1)/ESS) (2/ESS for a Gaussian; the banana's x_2
    is heavy-tailed, so each marginal's sample kurtosis is used). 4 se: a false alarm per check
    has probability 6e-5."""
    m = draws.mean(0)
    assert np.all(np.abs(m - mean) <= 4 * np.sqrt(var / ess)), (m, mean, ess)
    kurt = np.mean((draws - m) ** 4, 0) / draws.var(0) ** 2  # sample kurtosis: Var(s^2) = var^2 (k - 1)/n
    assert np.all(np.abs(draws.var(0) - var) <= 4 * var * np.sqrt((kurt - 1) / ess)), (draws.var(0), var, ess)


@pytest.mark.slow
def test_nuts_keeps_a_correlated_gaussian_with_a_dense_metric():
    target, cov = _gaussian()
    idata = dx.infer.sample(target, "nuts", num_chains=4, num_warmup=500, num_samples=500, seed=0,
                            mass_matrix="dense", progress=False)
    x = idata.posterior["x"].values.reshape(-1, 5)
    ess = az.ess(idata)["x"].values
    _within_mc_error(x, np.zeros(5), np.diag(cov), ess)
    # ArviZ reads the stats by their names; every transition's leapfrog steps are counted
    stats = idata.sample_stats
    assert {"lp", "acceptance_rate", "diverging", "step_size", "n_steps", "tree_depth", "energy"} <= set(stats.data_vars)
    assert int(stats.diverging.sum()) == 0
    assert idata.attrs["num_grad_evals_sampling"] == float(stats.n_steps.sum())
    assert idata.attrs["num_grad_evals_warmup"] >= 500 * 4  # at least one leapfrog step per warm-up step
    az.bfmi(idata)  # energy is where plot_energy / bfmi look for it


@pytest.mark.slow
def test_nuts_samples_the_banana():
    """Haario's banana (b = 0.1, sigma = 10): curved, Var(x_2) = 1 + 2 b^2 sigma^4 = 201."""
    target = dx.models.gallery.banana()
    idata = dx.infer.sample(target, "nuts", num_chains=4, num_warmup=1000, num_samples=1000, seed=0, progress=False)
    x = idata.posterior["x"].values.reshape(-1, 2)
    ess = az.ess(idata)["x"].values
    _within_mc_error(x, target.mean, np.diag(target.cov), ess)


def test_gradient_evaluations_of_langevin_kernels_are_their_steps():
    target, _ = _gaussian(3)
    idata = dx.infer.sample(target, "mala", num_chains=3, num_warmup=40, num_samples=20, thinning=2, seed=0,
                            progress=False)
    assert idata.attrs["num_grad_evals_warmup"] == 3 * 40
    assert idata.attrs["num_grad_evals_sampling"] == 3 * 20 * 2
