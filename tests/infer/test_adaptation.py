"""Warm-up (infer/adaptation.py) against outside truths: Stan's window rule written out from Stan's
source, NumPy's covariance of the pooled draws, Stan's shrinkage formula, and the acceptance rate
that dual averaging is told to reach."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import driftax as dx
from driftax.infer import adaptation


def stan_windows(num_warmup, init_buffer=75, term_buffer=50, base_window=25):
    """Stan's ``windowed_adaptation`` (stan/mcmc/windowed_adaptation.hpp), re-stated step by step:
    the first slow window ends at ``init_buffer + base_window - 1``; each next one doubles, and is
    stretched to the start of the terminal buffer when the one after it would not fit."""
    stage = np.full(num_warmup, adaptation.FAST)
    end = np.zeros(num_warmup, bool)
    size, start = base_window, init_buffer
    last = init_buffer + base_window - 1
    while True:
        stage[start:last + 1] = adaptation.SLOW
        end[last] = True
        if last == num_warmup - term_buffer - 1:
            return stage, end
        start, size = last + 1, 2 * size
        last = start + size - 1
        if last + 2 * size >= num_warmup - term_buffer:
            last = num_warmup - term_buffer - 1


@pytest.mark.parametrize("num_warmup", [150, 200, 201, 300, 500, 999, 1000, 1234, 1500, 2000, 5000])
def test_schedule_is_stans(num_warmup):
    stage, end = adaptation.schedule(num_warmup, num_warmup + 40)
    ref_stage, ref_end = stan_windows(num_warmup)
    np.testing.assert_array_equal(stage[:num_warmup], ref_stage)
    np.testing.assert_array_equal(end[:num_warmup], ref_end)
    # padding past the warm-up is OFF and closes nothing
    assert np.all(stage[num_warmup:] == adaptation.OFF) and not end[num_warmup:].any()


@pytest.mark.parametrize("num_warmup", [151, 175, 199])
def test_schedule_merges_stans_stub_window(num_warmup):
    """Between 150 and 200 steps Stan's second slow window has num_warmup - 175 steps (1 to 24);
    the schedule (BlackJAX's) folds it into the first instead of closing a window on a single step."""
    stage, end = adaptation.schedule(num_warmup, num_warmup)
    ref_stage, ref_end = stan_windows(num_warmup)
    np.testing.assert_array_equal(stage, ref_stage)  # same slow steps
    assert np.nonzero(ref_end)[0].tolist() == [99, num_warmup - 51]
    assert np.nonzero(end)[0].tolist() == [num_warmup - 51]


@pytest.mark.parametrize("num_warmup", [1, 10, 149])
def test_short_warmups_adapt_the_step_size_only(num_warmup):
    stage, end = adaptation.schedule(num_warmup, num_warmup + 5)
    assert np.all(stage[:num_warmup] == adaptation.FAST) and not end.any()


def _one_window(dense, draws, dim):
    """Feed ``draws`` (steps, chains, dim) through one slow window; return the closing metric."""
    with jax.enable_x64(True):
        init, update, final = adaptation.window_adaptation(0.8, dim, "dense" if dense else "diag",
                                                           dtype=jnp.float64)
        state = init(0.1, jnp.eye(dim) if dense else jnp.ones(dim))
        n, chains = draws.shape[:2]
        ends = jnp.arange(n) == n - 1

        def body(state, x):
            return update(state, adaptation.SLOW, x[1], x[0], jnp.full(chains, 0.8)), None

        state, _ = jax.lax.scan(body, state, (jnp.asarray(draws), ends))
        return np.asarray(final(state)[1])


def stan_shrunk(cov, n, dense):
    """Stan's regularisation of a window's estimate (stan/mcmc/{diag,dense}_e_adaptation.hpp):
    var = n/(n+5) var + 1e-3 * 5/(n+5), on the diagonal only for the dense metric."""
    reg = 1e-3 * 5.0 / (n + 5.0)
    return cov * n / (n + 5.0) + (reg * np.eye(cov.shape[0]) if dense else reg)


@pytest.mark.parametrize("dense", [False, True])
def test_pooled_metric_is_shrunk_covariance_of_all_chains(dense):
    """The metric after a window is Stan's shrinkage of np.cov of every chain's draws pooled (not a
    per-chain or averaged-per-chain estimate: chains with different centres widen it). Float64; the
    only error is the rounding of Chan's pairwise update, ~1e-15 relative."""
    rng = np.random.default_rng(0)
    dim, steps, chains = 3, 40, 6
    centres = rng.normal(scale=3.0, size=(chains, dim))  # chains apart: the between-chain spread counts
    a = rng.normal(size=(dim, dim))
    draws = centres + rng.normal(size=(steps, chains, dim)) @ a.T
    pooled = draws.reshape(-1, dim)
    n = pooled.shape[0]  # 240 >= 10 dim: a full dense estimate
    ref = stan_shrunk(np.cov(pooled.T) if dense else pooled.var(0, ddof=1), n, dense)
    np.testing.assert_allclose(_one_window(dense, draws, dim), ref, rtol=1e-12, atol=1e-14)


def test_dense_falls_back_to_diagonal_below_ten_draws_per_dimension():
    rng = np.random.default_rng(1)
    dim = 4
    for steps, chains in ((9, 4), (10, 4)):  # 36 < 40 pooled draws, then 40 = 10 dim
        draws = rng.normal(size=(steps, chains, dim)) @ np.array(
            [[1, 0.9, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0.5], [0, 0, 0, 1.0]]).T
        pooled = draws.reshape(-1, dim)
        cov = np.cov(pooled.T)
        if steps * chains < 10 * dim:
            cov = np.diag(np.diag(cov))
        np.testing.assert_allclose(_one_window(True, draws, dim), stan_shrunk(cov, steps * chains, True),
                                   rtol=1e-12, atol=1e-14)


def test_fixed_step_size_is_kept():
    target = dx.models.Target(lambda x: -0.5 * jnp.sum(x**2 * jnp.arange(1.0, 5.0)), 4)
    idata = dx.infer.sample(target, "mala", num_chains=4, num_samples=20, num_warmup=200, step_size=0.0375,
                            adapt_step_size=False, seed=0, progress=False)
    assert idata.attrs["step_size"] == pytest.approx(0.0375, rel=1e-7)  # float32 round trip
    np.testing.assert_allclose(idata.sample_stats["step_size"].values, 0.0375, rtol=1e-7)


def _targets():
    scales = jnp.geomspace(0.1, 10.0, 10)
    t = jnp.asarray(4.0)
    return {
        "isotropic": lambda x: -0.5 * jnp.sum(x**2),
        # condition number 1e4 in the raw coordinates: only the adapted diagonal metric makes it mixable
        "scaled": lambda x: -0.5 * jnp.sum((x / scales) ** 2),
        # heavy tails: a product of Student-t(4) marginals
        "student": lambda x: -0.5 * (t + 1) * jnp.sum(jnp.log1p(x**2 / t)),
    }


# Largest |mean miss| + 4 sd of the realised acceptance over seeds 0-9 (8 chains x 500 draws after
# 1000 warm-up steps, both aims): isotropic 0.017 + 4 x 0.013 = 0.069, scaled 0.019 + 4 x 0.016 =
# 0.082, Student-t 0.000 + 4 x 0.033 = 0.131. The spread is that of the final step size (the
# dual-averaging average of the closing window), skewed upwards as in Stan since the average trails
# the iterates; heavy tails add the spread of where the chains sit.
WINDOW = {"isotropic": 0.085, "scaled": 0.085, "student": 0.14}


@pytest.mark.parametrize("name", sorted(_targets()))
@pytest.mark.parametrize("aim", [0.574, 0.8])
def test_adapted_acceptance_lands_on_the_target(name, aim):
    """After warm-up the realised acceptance sits at the rate aimed at, within the window measured
    over seeds (above). On the Gaussian targets the windows (+-0.085) keep 0.574 and 0.8 (0.226
    apart) told apart; on the Student-t the spread is too large for that at this run length."""
    target = dx.models.Target(_targets()[name], 10)
    idata = dx.infer.sample(target, "mala", num_chains=8, num_samples=500, num_warmup=1000, seed=2,
                            target_acceptance=aim, progress=False)
    acc = float(idata.sample_stats.acceptance_rate.mean())
    assert abs(acc - aim) < WINDOW[name], acc
