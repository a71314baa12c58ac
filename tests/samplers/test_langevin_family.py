"""ULA, SGLD and spherical Langevin against closed forms: ULA's biased Gaussian stationary law (a
discrete Lyapunov equation solved by scipy), the full gradient as the epoch average of minibatch
gradients, SGLD with the full batch as ULA, the von Mises-Fisher mean on the sphere (Bessel ratio)
under identity, diagonal and dense metrics."""
import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg
import scipy.special

import driftax as dx
from driftax.models import DataLikelihood
from driftax.samplers import langevin


def _gaussian_problem(dim=3, seed=0):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    cov = q @ np.diag(np.linspace(1.0, 4.0, dim)) @ q.T
    return rng.normal(size=dim), cov


def _run_kernel(step_fn, init_fn, density, x0, step_size, imm, num_steps, key, noise_size):
    """Chains by vmap, steps by scan, noise from jax.random: returns positions (steps, chains, dim)."""
    states = jax.vmap(lambda x: init_fn(x, density))(x0)

    def body(states, k):
        z = jax.random.normal(k, (x0.shape[0], noise_size), x0.dtype)
        states, info = jax.vmap(lambda s, e: step_fn(s, e, density, step_size, imm))(states, z)
        return states, states.position
    _, xs = jax.lax.scan(body, states, jax.random.split(key, num_steps))
    return np.asarray(xs, np.float64)


@pytest.mark.parametrize("kind", ["identity", "dense"])
def test_ula_stationary_law_is_the_biased_gaussian(kind):
    """For N(mu, S) ULA is x' - mu = B (x - mu) + sqrt(2h) A^{1/2} xi with B = I - h A S^-1, so its
    stationary covariance C solves C = B C B^T + 2h A (scipy's discrete Lyapunov solver). With
    h = 0.5 and A = I, C = S (I - h/2 S^-1)^-1 is 33% above S along the unit eigenvalue: the test
    tells the biased law from the target. Error: 64 chains x 3000 steps after 500 steps of burn-in
    from the exact stationary mean; AR(1) rates |rho| <= 0.875 give ESS >= 64 x 3000 x 0.067 = 12.8k
    for every coordinate, so the MC sd of a covariance entry is <= sqrt((C_ii C_jj + C_ij^2)/12.8k);
    4.5 such sds over 6 entries; means within 4.5 sqrt(C_ii / 12.8k)."""
    mu, cov = _gaussian_problem()
    dim, h = 3, 0.5
    a = np.eye(dim) if kind == "identity" else np.diag([1.0, 0.5, 0.8]) + 0.1
    prec = np.linalg.inv(cov)
    b = np.eye(dim) - h * a @ prec
    c = scipy.linalg.solve_discrete_lyapunov(b, 2 * h * a)
    if kind == "identity":
        np.testing.assert_allclose(c, cov @ np.linalg.inv(np.eye(dim) - 0.5 * h * prec), rtol=1e-10)
    with jax.enable_x64(True):
        logp = lambda x: -0.5 * (x - mu) @ prec @ (x - mu)
        x0 = jnp.asarray(np.tile(mu, (64, 1)))
        xs = _run_kernel(langevin.ula_step, langevin.init, logp, x0, h, None if kind == "identity" else jnp.asarray(a),
                         3500, jax.random.key(1), dim)[500:]
    rho = np.abs(np.linalg.eigvals(b)).max()
    ess = xs.shape[0] * xs.shape[1] * (1 - rho) / (1 + rho)
    flat = xs.reshape(-1, dim)
    sd = np.sqrt(np.diag(c))
    assert np.all(np.abs(flat.mean(0) - mu) <= 4.5 * sd / np.sqrt(ess))
    emp = np.cov(flat.T)
    mc_sd = np.sqrt((np.outer(sd**2, sd**2) + c**2) / ess)
    assert np.all(np.abs(emp - c) <= 4.5 * mc_sd)
    # and the same test rejects the target's covariance: the biased law is what ULA samples
    assert not np.all(np.abs(emp - cov) <= 4.5 * mc_sd)


def test_averaged_ula_beats_single_draws_by_the_predicted_factor():
    """N(0, I_8) target, h = 0.2: each coordinate is a stationary AR(1) with rho = 1 - h and
    variance c = 1 / (1 - h/2). Started at stationarity (exact draws of the biased law), the error
    variance of the average of T iterates is c/T^2 [T + 2 sum_{k<T} (T - k) rho^k]; of a single
    draw, c. Estimated from 256 chains x 8 coordinates (2048 averages): relative sd sqrt(2/2048)
    = 3.1%, so the measured ratio single/average lies within 4.5 x 3.1% = 14% of the prediction
    (which is about 9 x T/100 here, ~90 at T = 1000)."""
    dim, h, T, chains = 8, 0.2, 1000, 256
    c, rho = 1 / (1 - h / 2), 1 - h
    k = np.arange(1, T)
    var_avg = c / T**2 * (T + 2 * np.sum((T - k) * rho**k))
    target = dx.models.Target(lambda x: -0.5 * jnp.sum(x**2), dim)
    init = np.random.default_rng(0).normal(size=(chains, dim)) * np.sqrt(c)
    idata = dx.infer.sample(target, "ula", num_chains=chains, num_samples=T, num_warmup=0, step_size=h,
                            mass_matrix=None, init=init, seed=0, average="polyak", progress=False)
    averages = idata.averages["x"].values.astype(np.float64)  # (chains, dim), carried in the loop
    single = idata.posterior["x"].values[:, -1].astype(np.float64)
    mse_avg, mse_single = np.mean(averages**2), np.mean(single**2)
    assert abs(mse_avg / var_avg - 1) < 0.14
    assert abs(mse_single / c - 1) < 0.14
    predicted = c / var_avg
    assert abs((mse_single / mse_avg) / predicted - 1) < 0.3  # ratio of two estimates: errors add


def _data_problem(n=24, dim=3, seed=0):
    """A small Bayesian logistic regression in float64: per-datum log-likelihood + Gaussian prior."""
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=(n, dim)))
    y = jnp.asarray((rng.uniform(size=n) < 0.5).astype(float))

    def loglik(beta, d):
        xi, yi = d
        eta = xi @ beta
        return yi * jax.nn.log_sigmoid(eta) + (1 - yi) * jax.nn.log_sigmoid(-eta)

    def full(beta):  # written out independently of DataLikelihood
        eta = x @ beta
        return jnp.sum(y * jax.nn.log_sigmoid(eta) + (1 - y) * jax.nn.log_sigmoid(-eta)) - 0.5 * beta @ beta

    return DataLikelihood(loglik, (x, y), lambda beta: -0.5 * beta @ beta), full


def test_minibatch_gradients_average_to_the_full_gradient_over_an_epoch():
    """Any permutation split into N/B minibatches: the mean of the N/B estimates prior + (N/B) sum
    is the full gradient exactly (float64 rounding ~1e-15 relative)."""
    with jax.enable_x64(True):
        lik, full = _data_problem()
        mb = langevin.check_minibatch(lik, 6)
        beta = jnp.array([0.3, -0.7, 1.1])
        perm = jax.random.permutation(jax.random.key(0), lik.size)
        estimate = jax.jit(lambda idx: langevin.minibatch_logdensity(mb, beta, idx))
        ests = [estimate(perm[i:i + 6]) for i in range(0, lik.size, 6)]
        np.testing.assert_allclose(np.mean([e[1] for e in ests], 0), jax.grad(full)(beta), rtol=1e-12)
        np.testing.assert_allclose(np.mean([e[0] for e in ests]), full(beta), rtol=1e-12)


def test_sgld_uses_every_datum_once_per_epoch_on_welling_teh_steps():
    """N = 25, B = 6: four minibatches an epoch from one permutation (the 25th item skipped), a new
    permutation each epoch; the step size follows h_t = h_0 (1 + t/b)^-gamma (b = 10, gamma = 0.6)
    exactly (float64)."""
    with jax.enable_x64(True):
        lik, _ = _data_problem(n=25)
        mb = langevin.check_minibatch(lik, 6, decay_steps=10.0, decay_power=0.6)
        state = langevin.sgld_init(jnp.zeros(3), mb)
        step = jax.jit(lambda s, z: langevin.sgld_step(s, z, mb, 0.1))
        used = []
        for t, k in enumerate(jax.random.split(jax.random.key(3), 8)):
            state, info = step(state, jax.random.normal(k, (5,)))
            used.append(np.asarray(state.permutation[int(state.cursor) - 6:int(state.cursor)]))
            np.testing.assert_allclose(float(info.step_size), 0.1 * (1 + t / 10) ** -0.6, rtol=1e-12)
        for epoch in (used[:4], used[4:]):
            idx = np.concatenate(epoch)
            assert len(np.unique(idx)) == 24  # without replacement within the epoch
        assert not np.array_equal(np.concatenate(used[:4]), np.concatenate(used[4:]))  # a new order each epoch


def test_sgld_with_the_full_batch_is_ula_step_for_step():
    """B = N: every minibatch is the whole data (in a permuted order), so SGLD's gradient is the
    full gradient and its chain is ULA's on the same noise; float64 summation order only (1e-12)."""
    with jax.enable_x64(True):
        lik, full = _data_problem()
        mb = langevin.check_minibatch(lik, lik.size)
        s_sgld, s_ula = langevin.sgld_init(jnp.zeros(3), mb), langevin.init(jnp.zeros(3), full)
        sgld_step = jax.jit(lambda s, z: langevin.sgld_step(s, z, mb, 0.05))
        ula_step = jax.jit(lambda s, z: langevin.ula_step(s, z, full, 0.05))
        for k in jax.random.split(jax.random.key(0), 30):
            z = jax.random.normal(k, (5,))
            s_sgld, _ = sgld_step(s_sgld, z)
            s_ula, _ = ula_step(s_ula, z[:3])
            np.testing.assert_allclose(s_sgld.position, s_ula.position, rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(s_sgld.logdensity, s_ula.logdensity, rtol=1e-12)


def _von_mises_fisher_runs(metrics, kappa, mu, h, chains, steps, burn, seed):
    """Per-chain averages of theta (after ``burn`` steps) and the largest |norm - 1| of any iterate,
    for spherical Langevin on f = kappa mu^T theta under each dense metric of ``metrics`` (m, d, d),
    all in one compiled program."""
    d = mu.shape[0]
    logp = lambda th: kappa * th @ mu

    def one(imm, key):
        k0, k1 = jax.random.split(key)
        states = jax.vmap(lambda x: langevin.spherical_init(x, logp))(jax.random.normal(k0, (chains, d)))

        def body(carry, k):
            states, total, worst, t = carry
            z = jax.random.normal(k, (chains, d))
            states, _ = jax.vmap(lambda s, e: langevin.spherical_step(s, e, logp, h, imm))(states, z)
            x = states.position
            worst = jnp.maximum(worst, jnp.abs(jnp.linalg.norm(x, axis=-1) - 1).max())
            return (states, total + x * (t >= burn), worst, t + 1), None
        init = (states, jnp.zeros((chains, d)), jnp.zeros(()), 0)
        (_, total, worst, _), _ = jax.lax.scan(body, init, jax.random.split(k1, burn + steps))
        return total / steps, worst
    keys = jax.random.split(jax.random.key(seed), metrics.shape[0])
    averages, worst = jax.jit(jax.vmap(one))(metrics, keys)  # one program, vmapped over the metrics
    return [(np.asarray(a, np.float64), float(w)) for a, w in zip(averages, worst)]


def test_spherical_langevin_keeps_unit_norm_and_samples_von_mises_fisher_under_any_metric():
    """f(theta) = kappa mu^T theta on S^4: the von Mises-Fisher law, E[theta] = A_5(kappa) mu with the
    Bessel ratio A_d = I_{d/2} / I_{d/2-1} (scipy; checked against the closed form of S^2's
    coth(k) - 1/k). Metrics M = I, diag(0.25, 0.5, 1, 2, 4) and that spectrum rotated, all through
    the dense code path in one program (the identity and diagonal paths are that same step with
    (M^{1/2}, M) applied differently: the next test ties them to it). The scheme with the divergence
    term -d P M theta is tested against every coordinate of E[theta]; without that term the chain
    samples another law (measured: errors 0.15-0.18 at this step size, 38-49 sds).
    Tolerance per coordinate: 4.5 MC sds (128 independent chains, so the sd of their 4,000-step
    averages over sqrt(128) is the MC sd, measured in the test) plus the O(h) bias b h. b from a
    512-chain, 80-time-unit study at h = 0.02, 0.01, 0.005 (all metrics, seed 11): worst coordinate
    bias 0.0121 / 0.0068 / 0.0042 (diagonal), 0.0232 / 0.0116 / 0.0063 (dense), 0.0084 / 0.0042 /
    0.0027 (identity), i.e. b <= 1.2; b = 1.5 allowed. Seeds 0-4 of this test: worst |error| /
    tolerance 0.16-0.47 over the three metrics."""
    d, kappa, h = 5, 4.0, 0.005
    rng = np.random.default_rng(7)
    mu = rng.normal(size=d)
    mu /= np.linalg.norm(mu)
    spectrum = np.array([0.25, 0.5, 1.0, 2.0, 4.0])
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    metrics = jnp.asarray(np.stack([np.eye(d), np.diag(spectrum), q @ np.diag(spectrum) @ q.T]), jnp.float32)
    np.testing.assert_allclose(scipy.special.iv(1.5, kappa) / scipy.special.iv(0.5, kappa),
                               1 / np.tanh(kappa) - 1 / kappa, rtol=1e-12)
    exact = scipy.special.iv(d / 2, kappa) / scipy.special.iv(d / 2 - 1, kappa) * mu
    runs = _von_mises_fisher_runs(metrics, kappa, jnp.asarray(mu, jnp.float32), h, 128, 4000, 1000, seed=0)
    for averages, worst_norm in runs:
        assert worst_norm < 4 * d * np.finfo(np.float32).eps  # one normalisation a step, no drift off the sphere
        se = averages.std(0, ddof=1) / np.sqrt(averages.shape[0])
        assert np.all(np.abs(averages.mean(0) - exact) <= 4.5 * se + 1.5 * h)


def test_spherical_metric_c_times_identity_is_the_identity_step_at_c_h():
    """M = c I: the drift c P grad f - d c P theta is c P grad f (P theta = 0) and the noise
    sqrt(2h) sqrt(c) P xi is sqrt(2 c h) P xi, so the step is the identity kernel's at step size c h,
    as a diagonal or a dense metric; equal up to float32 rounding of unit vectors (1e-6). A general
    diagonal metric equals the dense step with that diagonal, on the same noise (1e-6)."""
    d, c, h = 5, 2.5, 0.01
    logp = lambda th: 3.0 * th[0] - th[1] ** 2
    state = langevin.spherical_init(jnp.arange(1.0, 6.0), logp)
    noise = jax.random.normal(jax.random.key(2), (d,))

    diag = jnp.array([0.25, 0.5, 1.0, 2.0, 4.0])

    @jax.jit  # one program for the five steps
    def steps(state, noise):
        ref = langevin.spherical_step(state, noise, logp, c * h)[0]
        at_c = [langevin.spherical_step(state, noise, logp, h, imm) for imm in (jnp.full(d, c), c * jnp.eye(d))]
        return ref, at_c, [langevin.spherical_step(state, noise, logp, h, imm)[0] for imm in (diag, jnp.diag(diag))]
    ref, at_c, (as_vector, as_matrix) = steps(state, noise)
    for new, info in at_c:
        np.testing.assert_allclose(new.position, ref.position, atol=1e-6)
        assert not bool(info.diverging)
    assert not np.allclose(ref.position, state.position)
    np.testing.assert_allclose(as_vector.position, as_matrix.position, atol=1e-6)
    assert not np.allclose(as_vector.position, ref.position, atol=1e-3)  # a non-uniform metric moves elsewhere
    with pytest.raises(ValueError, match="finite and positive"):
        langevin.spherical(logp, 0.01, jnp.array([1.0, -1.0, 1.0, 1.0, 1.0]))


# --- bad input ------------------------------------------------------------------------------
def test_bad_batch_sizes_and_schedules():
    lik, _ = _data_problem()
    for b in (0, 25):
        with pytest.raises(ValueError, match=r"batch_size must lie in \[1, 24\]"):
            langevin.check_minibatch(lik, b)
    with pytest.raises(TypeError, match="batch_size must be an integer"):
        langevin.check_minibatch(lik, 2.5)
    with pytest.raises(ValueError, match="decay_power"):
        langevin.check_minibatch(lik, 4, decay_power=0.3)
    with pytest.raises(ValueError, match="step_size"):
        langevin.sgld(lik, 0.0, 4)
    with pytest.raises(ValueError, match="step_size"):
        langevin.ula(lambda x: -x @ x, -1.0)


def test_sample_rejects_what_a_method_cannot_do():
    target = dx.models.Target(lambda x: -0.5 * jnp.sum(x**2), 3)
    with pytest.raises(ValueError, match="needs a target with a data_likelihood"):
        dx.infer.sample(target, "sgld", progress=False)
    with pytest.raises(ValueError, match="average='weighted'"):
        dx.infer.sample(target, "ula", average="weighted", progress=False)
    with pytest.raises(ValueError, match="average must be one of"):
        dx.infer.sample(target, "ula", average="median", progress=False)
    lr = dx.models.gallery.get("logistic_regression")
    with pytest.raises(ValueError, match="batch_size must lie in"):
        dx.infer.sample(lr, dx.infer.methods.sgld(10_000), progress=False)
    for name, t in (("sgld", lr), ("spherical", target)):
        with pytest.raises(ValueError, match="target_acceptance does not apply"):
            dx.infer.sample(t, name, target_acceptance=0.5, progress=False)


def test_ula_reports_the_acceptance_mala_would_have_had():
    """ULA's move is MALA's proposal on the same normals, and its acceptance_rate is MALA's min(1, α);
    the warm-up (MALA's, on the same noise) then tunes ULA's step size to a target acceptance.
    Dual averaging ends at its averaged iterate, on the cautious side of the target: over seeds
    0-7 the mean would-be acceptance of the draws was 0.835-0.857 for a target of 0.8 (MALA's own
    0.796-0.836); a band of 0.1 holds that spread, and a warm-up tuned on ULA's own moves, which
    failed at seeds 4 and 5 (step size -> 1e-34 after the chain ran away), falls far outside it."""
    mean, cov = _gaussian_problem()
    prec = jnp.asarray(np.linalg.inv(cov), jnp.float32)
    density = lambda x: -0.5 * (x - mean) @ prec @ (x - mean)
    imm = jnp.asarray([0.5, 1.0, 2.0], jnp.float32)
    state = langevin.init(jnp.zeros(3), density)
    z = jax.random.normal(jax.random.key(3), (8, 4))
    both = jax.jit(jax.vmap(lambda zi: (langevin.ula_step(state, zi[:3], density, 0.7, imm),
                                        langevin.step(state, zi, density, 0.7, imm))))  # 8 noise vectors, one program
    (u, info_u), (_, info_m) = both(z)
    np.testing.assert_allclose(info_u.acceptance_rate, info_m.acceptance_rate, rtol=1e-5, atol=1e-7)
    for position in np.asarray(u.position):
        assert not np.allclose(position, state.position)  # ULA always moves
    target = dx.models.Target(density, 3)
    idata = dx.infer.sample(target, "ula", target_acceptance=0.8, num_chains=4, num_warmup=500,
                            num_samples=500, seed=0, progress=False)
    assert abs(float(idata.sample_stats.acceptance_rate.mean()) - 0.8) < 0.1


def test_non_finite_gradients_are_flagged_and_kept_out_of_the_averages():
    """log p is NaN beyond x_0 > 1: ULA steps there are not taken, are flagged, and the in-loop
    averages equal those of the (finite) stored draws."""
    target = dx.models.Target(lambda x: jnp.where(x[0] > 1.0, jnp.nan, -0.5 * x @ x), 2)
    idata = dx.infer.sample(target, "ula", num_chains=4, num_samples=500, num_warmup=0, step_size=0.5,
                            mass_matrix=None, init=np.zeros(2), seed=0, average="polyak", progress=False)
    x = idata.posterior["x"].values
    assert int(idata.sample_stats.diverging.sum()) > 0 and np.all(np.isfinite(x)) and x[..., 0].max() <= 1
    avg = idata.averages["x"].values
    assert np.all(np.isfinite(avg))
    np.testing.assert_allclose(avg, x.mean(1), atol=1e-5)  # float32 running mean of 500 values


def test_swag_buffers_are_the_deviations_of_the_stored_iterates():
    """SWAG through infer.sample (thinning 1, every 2nd step from step 100 counted, rank 5): the flat
    moments equal those of the counted stored draws, the ring buffer holds the last 5 counted
    iterates minus the running mean after each (recomputed from the draws in float64), and
    swag_covariance is Maddox et al.'s 1/2 diag + 1/2 D D^T/(K-1). Float32 running means: 1e-5."""
    from driftax.samplers import averaging

    target = dx.models.Target(lambda x: -0.5 * jnp.sum(x**2 * jnp.arange(1.0, 4.0)), 3)
    idata = dx.infer.sample(target, "ula", num_chains=2, num_samples=300, num_warmup=0, step_size=0.1,
                            mass_matrix=None, seed=0, progress=False,
                            average=averaging.Schedule(start=100, every=2, rank=5))
    x = idata.posterior["x"].values.astype(np.float64)
    av = idata.averages
    counted_x = x[:, 100::2]
    np.testing.assert_allclose(av["swag_mean"].values, counted_x.mean(1), atol=1e-5)
    np.testing.assert_allclose(av["swag_var"].values, counted_x.var(1), atol=1e-4)
    assert list(av["swag_counted"].values) == [100, 100]
    running = np.cumsum(counted_x, 1) / np.arange(1, 101)[None, :, None]
    last = (counted_x - running)[:, -5:]  # counted steps 95..99 sit in slots 0..4 of the ring
    np.testing.assert_allclose(av["swag_deviations"].values, last, atol=1e-5)
    cov = averaging.swag_covariance(100.0, counted_x[0].var(0) * 100, av["swag_deviations"].values[0], 100)
    np.testing.assert_allclose(cov, 0.5 * np.diag(counted_x[0].var(0)) + 0.5 * last[0].T @ last[0] / 4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("mass_matrix", ["diag", "dense"])
def test_spherical_langevin_through_infer_sample_adapts_a_metric(mass_matrix):
    """`infer.sample(..., "spherical", mass_matrix=...)`: the warm-up estimates the covariance of the
    draws on the sphere, the kernel takes it as M, and the draws keep the von Mises-Fisher law of the
    test above (E[theta] = A_d(kappa) mu, d = 5, kappa = 4). The step is in the metric's units:
    h = 0.1 with M ~ Cov(theta), whose largest eigenvalue here is the tangential variance A_d(kappa)/kappa
    = 0.14 (closed form, below), so h lambda_max ~ 0.014. Tolerance per coordinate: 4.5 MC sds from
    ArviZ's ESS (16 chains x 2,000 draws, ESS ~1,000) plus the O(h) bias 0.3 h lambda_max (0.3 per unit
    of h lambda_max: the kernel study in the test above, 0.023 at h lambda_max = 0.08). Measured over
    seeds 0-1 for each metric: |z| <= 1.12. With no metric at the same h the bias is 0.029 (7 MC sds):
    the metric is what keeps this step accurate."""
    d, kappa, h = 5, 4.0, 0.1
    rng = np.random.default_rng(7)
    mu = rng.normal(size=d)
    mu /= np.linalg.norm(mu)
    a = scipy.special.iv(d / 2, kappa) / scipy.special.iv(d / 2 - 1, kappa)
    lam_max = a / kappa  # E[theta theta'] = (a / kappa) I + (1 - d a / kappa) mu mu' for the vMF law
    mu_j = jnp.asarray(mu, jnp.float32)
    target = dx.models.Target(lambda th: kappa * mu_j @ th, d, name="von Mises-Fisher")
    idata = dx.infer.sample(target, "spherical", num_chains=16, num_samples=2000, num_warmup=1000, seed=0,
                            step_size=h, mass_matrix=mass_matrix, progress=False)
    assert idata.attrs["mass_matrix"] == mass_matrix
    x = idata.posterior["x"].values.reshape(-1, d).astype(np.float64)
    assert np.abs(np.linalg.norm(x, axis=1) - 1).max() < 4 * d * np.finfo(np.float32).eps
    se = x.std(0) / np.sqrt(az.ess(idata)["x"].values)
    assert np.all(np.abs(x.mean(0) - a * mu) <= 4.5 * se + 0.3 * h * lam_max), (x.mean(0) - a * mu) / se
