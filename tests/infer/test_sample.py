"""infer.sample: recovery of known moments, the posteriordb reference, reproducibility, bad input."""
from typing import NamedTuple

import arviz as az
import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import driftax as dx
from driftax.samplers.langevin import MALAInfo

matplotlib.use("Agg")


def correlated_gaussian(dim=20, seed=0):
    """N(m, S) with S = Q diag(lambda) Q^T, lambda in [0.25, 4] (condition number 16), correlated axes."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    cov = q @ np.diag(np.geomspace(0.25, 4.0, dim)) @ q.T
    mean = rng.normal(size=dim)
    prec = jnp.asarray(np.linalg.inv(cov), jnp.float32)
    m = jnp.asarray(mean, jnp.float32)
    return dx.models.Target(lambda x: -0.5 * (x - m) @ prec @ (x - m), dim, name="gauss20", mean=mean, cov=cov)


@pytest.fixture(scope="module")
def gauss_run():
    target = correlated_gaussian()
    idata = dx.infer.sample(target, "mala", num_chains=8, num_samples=4000, num_warmup=1500, seed=3, progress=False)
    return target, idata


def test_recovers_mean_and_covariance_within_monte_carlo_error(gauss_run):
    """Tolerances from ArviZ's ESS of our draws: the MC sd of a mean is sd/sqrt(ESS) and of a covariance
    entry sqrt((S_ii S_jj + S_ij^2) / ESS) (Gaussian fourth moments; using the smallest ESS of the means
    is conservative, as squares of an AR-type chain decorrelate faster than the chain). 4.7 MC sds over
    20 means and 210 covariance entries: P(false failure) < 230 x 2.6e-6 = 6e-4 (Bonferroni)."""
    target, idata = gauss_run
    x = idata.posterior["x"].values.reshape(-1, target.dim).astype(np.float64)
    mean, cov = np.asarray(target.mean), np.asarray(target.cov)
    ess = az.ess(idata)["x"].values
    assert ess.min() > 500  # 32k draws of MALA, diagonal metric, condition number 16: ~800-1600 seen
    sd = np.sqrt(np.diag(cov))
    assert np.all(np.abs(x.mean(0) - mean) <= 4.7 * sd / np.sqrt(ess))
    cov_mc_sd = np.sqrt((np.outer(sd**2, sd**2) + cov**2) / ess.min())
    assert np.all(np.abs(np.cov(x.T) - cov) <= 4.7 * cov_mc_sd)


def test_inference_data_layout_and_stats(gauss_run):
    target, idata = gauss_run
    assert idata.posterior["x"].dims == ("chain", "draw", "x_dim_0")
    assert idata.posterior["x"].shape == (8, 4000, 20)
    for name in ("lp", "acceptance_rate", "diverging", "step_size"):
        assert idata.sample_stats[name].shape == (8, 4000)
    # Dual averaging aims at MALA's 0.574. Its final step size is the weighted average of log step sizes
    # over Stan's 50-step closing window, which trails the iterates, so realised acceptance sits at or a
    # little above the target (as in Stan). Its spread is that of the final step size: this very run
    # over seeds 0-23 gave mean 0.590, sd 0.029, range 0.528-0.632. Mean +- 4 sd = (0.47, 0.71) fails
    # a correct sampler with probability ~1e-4, and still rejects the unadapted default step (0.1
    # here), which accepts 0.89.
    assert 0.47 < float(idata.sample_stats.acceptance_rate.mean()) < 0.71
    assert not bool(idata.sample_stats.diverging.any())
    summary = az.summary(idata)
    # ~100 effective draws per chain: split R-hat - 1 is ~1/(2 n_eff per half-chain) = 0.01 give or take
    # as much; 1.05 is what a chain stuck away from the others would exceed.
    assert summary.shape[0] == 20 and summary["r_hat"].max() < 1.05
    az.plot_trace(idata, var_names=["x"], coords={"x_dim_0": [0, 1]})
    matplotlib.pyplot.close("all")


def test_same_seed_same_draws_and_other_seed_differs():
    target = correlated_gaussian(dim=5)
    run = lambda seed: dx.infer.sample(target, "mala", num_chains=2, num_samples=50, num_warmup=50, seed=seed,
                                       progress=False).posterior["x"].values
    a, b, c = run(7), run(7), run(8)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


class _CounterState(NamedTuple):
    position: jax.Array
    logdensity: jax.Array
    logdensity_grad: jax.Array


def _counter_method():
    """A 'kernel' that adds 1 to the position at every step: draws count the steps taken."""
    def init(x, logdensity_fn):
        return _CounterState(x, jnp.zeros((), x.dtype), jnp.zeros_like(x))

    def step(state, noise, logdensity_fn, step_size, imm):
        one = jnp.ones((), state.position.dtype)
        info = MALAInfo(one, jnp.array(True), jnp.array(False))
        return state._replace(position=state.position + 1), info

    return dx.infer.methods.Method("counter", init, step, lambda d: d + 1, None, 0.1, None)


@pytest.mark.parametrize("num_warmup", [0, 1, 19, 33])
@pytest.mark.parametrize("num_samples, thinning, chunk_size", [
    (1, 1, None), (37, 3, None), (37, 1, 7), (5, 40, None), (100, 3, 64), (5, 37, 1)])
def test_every_draw_is_the_right_step(num_warmup, num_samples, thinning, chunk_size):
    """Chunk rounding, the last partial chunk, warm-up padding and thinning (incl. thinning > 32,
    where noise comes in sub-blocks) must keep exactly draw i = state after num_warmup + thinning (i+1) steps."""
    target = dx.models.Target(lambda x: -0.5 * x @ x, 2)
    idata = dx.infer.sample(target, _counter_method(), num_chains=2, num_samples=num_samples,
                            num_warmup=num_warmup, thinning=thinning, chunk_size=chunk_size,
                            init=np.zeros(2), progress=False, mass_matrix=None)
    expected = num_warmup + thinning * (np.arange(num_samples) + 1)
    np.testing.assert_array_equal(idata.posterior["x"].values[..., 0], np.broadcast_to(expected, (2, num_samples)))


def test_lp_is_the_log_density_at_the_kept_draws(gauss_run):
    """sample_stats.lp must be log p of the draw it sits beside (not of the proposal, not one step off).
    The kernel computed it in float32 inside the loop; recomputing it in float64 leaves the float32
    rounding of the quadratic form: |lp| <= ~40 here, 20 terms, so ~1e-5 absolute (rtol 1e-5 on
    lp's scale plus 1e-4)."""
    target, idata = gauss_run
    x = idata.posterior["x"].values[:, ::97].astype(np.float64)
    lp = idata.sample_stats["lp"].values[:, ::97]
    prec = np.linalg.inv(np.asarray(target.cov))
    d = x - np.asarray(target.mean)
    ref = -0.5 * np.einsum("cdi,ij,cdj->cd", d, prec, d)
    np.testing.assert_allclose(lp, ref, rtol=1e-5, atol=1e-4)


def _mala_draws(**kwargs):
    target = dx.models.Target(lambda x: -0.5 * jnp.sum(x**2 * jnp.arange(1.0, 4.0)), 3)
    return dx.infer.sample(target, "mala", num_chains=4, num_samples=200, seed=5, progress=False, **kwargs).posterior["x"].values


@pytest.mark.parametrize("num_warmup", [100, 300])
def test_chunk_size_does_not_change_the_draws(num_warmup):
    """The docstring's promise, with a kernel that uses its noise (MALA): padding steps of the last
    warm-up chunk draw no noise, so every chunk size gives the same chains. Before the fix chunk
    sizes 96, 200 (num_warmup=100) and 1000 (300) shifted the stream: differences of 7-8.
    Same noise for the same step leaves only rounding where XLA compiles the chunk programs
    differently: float32 ulps (1e-7 relative) per step, contracted by this stable Gaussian chain,
    well under 1e-4 over 500 steps unless one accept/reject decision flips (probability ~1e-7 a step)."""
    ref = _mala_draws(num_warmup=num_warmup)
    for chunk_size in (96, 1000):  # each size compiles its own programs: the two that broke the promise
        np.testing.assert_allclose(_mala_draws(num_warmup=num_warmup, chunk_size=chunk_size), ref, atol=1e-4)


def test_unroll_changes_rounding_only():
    """unroll re-fuses the steps (measured max difference ~3e-6 here); the chains stay the same chains."""
    np.testing.assert_allclose(_mala_draws(num_warmup=300, unroll=4), _mala_draws(num_warmup=300), atol=1e-4)


@pytest.mark.parametrize("num_warmup", [10, 19, 20, 50, 100, 149, 150, 300])
def test_short_warmups_leave_a_sensible_step_size(num_warmup):
    """A warm-up of 10 steps or more must leave MALA in its efficient range on an isotropic 10-d
    Gaussian; 8 chains x 500 draws measure acceptance to +-0.02. Before the fix, 20-149 steps ended
    with acceptance 0.05-0.5 (a closing window too short for dual averaging). (One or two steps of
    dual averaging cannot tune anything; they leave a small step.)"""
    target = dx.models.Target(lambda x: -0.5 * x @ x, 10)
    idata = dx.infer.sample(target, "mala", num_chains=8, num_samples=500, num_warmup=num_warmup, seed=1, progress=False)
    acc = float(idata.sample_stats.acceptance_rate.mean())
    lo = 0.35 if num_warmup < 20 else 0.45  # a handful of dual-averaging steps cannot do better
    assert lo < acc < 0.9, acc


def test_dense_metric_recovers_a_correlated_gaussian():
    """Dense pooled metric on the 20-d correlated Gaussian: same MC-error bounds as the diagonal test."""
    target = correlated_gaussian()
    idata = dx.infer.sample(target, "mala", num_chains=8, num_samples=1500, num_warmup=1500, seed=4,
                            mass_matrix="dense", progress=False)
    x = idata.posterior["x"].values.reshape(-1, target.dim).astype(np.float64)
    ess = az.ess(idata)["x"].values
    sd = np.sqrt(np.diag(np.asarray(target.cov)))
    assert ess.min() > 1000  # the dense metric whitens the target: far above the diagonal's ~800 / 32k draws
    assert np.all(np.abs(x.mean(0) - np.asarray(target.mean)) <= 4.7 * sd / np.sqrt(ess))


def test_legacy_keys_and_seed_range():
    target = correlated_gaussian(dim=2)
    a = dx.infer.sample(target, "mala", num_chains=2, num_samples=5, num_warmup=0, seed=jax.random.PRNGKey(3), progress=False)
    b = dx.infer.sample(target, "mala", num_chains=2, num_samples=5, num_warmup=0, seed=jax.random.key(3), progress=False)
    np.testing.assert_array_equal(a.posterior["x"].values, b.posterior["x"].values)
    with pytest.raises(ValueError, match="seed must be an integer in"):
        dx.infer.sample(target, seed=2**70, progress=False)


def _eight_schools():
    posteriordb = pytest.importorskip("driftax.models.posteriordb")
    if posteriordb.data_root() is None:
        pytest.skip("posteriordb reference folder not found")
    return posteriordb.load("eight_schools-eight_schools_noncentered")


def test_eight_schools_matches_posteriordb_reference():
    """Every parameter's posterior mean within 0.1 reference sd of the Stan reference draws (10 x 1000).
    The error is MC error of ours (bulk ESS of tau is > 2000 here, so sd < 0.022) plus the reference's
    (10k near-independent draws: sd ~0.01): 0.1 is over 4 combined sds. NUTS reaches 0.015."""
    target, reference = _eight_schools()
    idata = dx.infer.sample(target, "mala", num_chains=8, num_samples=5000, num_warmup=2000, seed=0, progress=False)
    assert float(az.ess(idata, var_names=["tau"])["tau"]) > 2000  # the premise of the tolerance below
    cmp = dx.infer.compare_to_reference(idata, reference)
    assert set(cmp) >= {"mu", "tau", "theta"}
    worst = max(float(np.abs(v["mean_error"]).max()) for v in cmp.values())
    assert worst < 0.1, dx.infer.diagnostics.format_comparison(cmp)
    worst_sd = max(float(np.abs(v["sd_error"]).max()) for v in cmp.values())
    assert worst_sd < 0.1, dx.infer.diagnostics.format_comparison(cmp)


# --- bad input ------------------------------------------------------------------------------------
@pytest.fixture
def small():
    return correlated_gaussian(dim=4)


def test_init_of_wrong_dimension(small):
    with pytest.raises(ValueError, match=r"init must have shape \(num_chains, dim\) = \(2, 4\)"):
        dx.infer.sample(small, num_chains=2, init=np.zeros(3), progress=False)


def test_non_finite_init(small):
    bad = np.zeros((2, 4))
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"init has non-finite values \(chains \[1\]\)"):
        dx.infer.sample(small, num_chains=2, init=bad, progress=False)


def test_init_where_density_is_not_finite():
    target = dx.models.Target(lambda x: jnp.where(x[0] > 0, -jnp.inf, -0.5 * x @ x), 2)
    with pytest.raises(ValueError, match=r"init: the log-density .* chains \[1\]"):
        dx.infer.sample(target, "mala", num_chains=2, init=np.array([[-1.0, 0], [1.0, 0]]), progress=False)


@pytest.mark.parametrize("kwargs, match", [
    ({"num_chains": 0}, "num_chains must be >= 1"),
    ({"num_samples": 0}, "num_samples must be >= 1"),
    ({"num_warmup": -1}, "num_warmup must be >= 0"),
    ({"thinning": 0}, "thinning must be >= 1"),
    ({"step_size": -0.1}, "step_size must be positive"),
    ({"step_size": float("nan")}, "step_size must be positive"),
    ({"mass_matrix": "full"}, "mass_matrix must be"),
    ({"target_acceptance": 1.5}, "target_acceptance must lie in"),
    ({"method": "hmc"}, "unknown method 'hmc'"),
])
def test_bad_arguments_name_themselves(small, kwargs, match):
    with pytest.raises(ValueError, match=match):
        dx.infer.sample(small, progress=False, **kwargs)


def test_bad_types(small):
    with pytest.raises(TypeError, match="num_chains must be an integer"):
        dx.infer.sample(small, num_chains=2.5, progress=False)
    with pytest.raises(TypeError, match="target must be a driftax.models.Target"):
        dx.infer.sample(lambda x: -x @ x, progress=False)
    with pytest.raises(TypeError, match="seed must be"):
        dx.infer.sample(small, seed="zero", progress=False)
    with pytest.raises(TypeError, match="target_acceptance must be a number"):
        dx.infer.sample(small, target_acceptance="high", progress=False)
    with pytest.raises(TypeError, match="adapt_step_size must be True or False"):
        dx.infer.sample(small, adapt_step_size="no", progress=False)
    with pytest.raises(TypeError, match="step_size must be a positive number"):
        dx.infer.sample(small, step_size=True, progress=False)


def test_init_fn_of_wrong_shape_is_named():
    target = dx.models.Target(lambda x: -0.5 * x @ x, 4, init_fn=lambda key: jnp.zeros(3))
    with pytest.raises(ValueError, match="target.init_fn must return a vector of shape \\(4,\\)"):
        dx.infer.sample(target, progress=False)


def test_nan_region_counted_as_divergent_never_in_draws():
    """log-density NaN beyond x_0 > 1.5 (a model bug): those proposals are rejected and flagged."""
    target = dx.models.Target(lambda x: jnp.where(x[0] > 1.5, jnp.nan, -0.5 * x @ x), 2)
    idata = dx.infer.sample(target, "mala", num_chains=4, num_samples=1000, num_warmup=200, seed=0, progress=False,
                            init=np.zeros(2))
    x = idata.posterior["x"].values
    assert np.all(np.isfinite(x)) and x[..., 0].max() <= 1.5
    assert int(idata.sample_stats.diverging.sum()) > 0
    assert np.all(np.isfinite(idata.sample_stats.lp.values))


def test_discrete_latent_site_is_rejected():
    def model():
        z = numpyro.sample("z", dist.Bernoulli(0.3))
        numpyro.sample("x", dist.Normal(z, 1.0), obs=0.5)

    with pytest.raises(ValueError, match=r"discrete latent site\(s\) \['z'\]"):
        dx.models.from_numpyro(model)
