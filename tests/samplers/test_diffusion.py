"""samplers.diffusion: exact properties of the PIS / DIS / DDS path-space estimators.

Truths that do not come from the code under test: Gaussian closed forms (normalising constants, KL
divergences, the Föllmer drift of PIS, the VP-noised score of DIS), a naive float64 NumPy loop written
from the paper's formulas, and the score-function identity ∇LV = 2 ∇KL at w = u (Richter & Berner 2024,
Sec. 3; Nüsken & Richter 2021) checked by Monte Carlo.
"""
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from driftax.samplers import diffusion as D

LOG2PI = math.log(2 * math.pi)


def _gauss_lp(m, v, const, x):
    return -0.5 * jnp.sum((x - m) ** 2 / v) + const


def gauss_logdensity(mean, var, const=0.0):
    """log N(x; mean, diag var) + const up to -½ log|2π var|, as a pytree (`jax.tree_util.Partial`): its
    arrays are arguments of the compiled programs, not constants, so Gaussian targets of one dimension
    share the programs of one configuration (each new closure compiled its own)."""
    m, v = np.broadcast_arrays(np.asarray(mean, np.float32), np.asarray(var, np.float32))
    return jax.tree_util.Partial(_gauss_lp, jnp.asarray(m), jnp.asarray(v), jnp.float32(const))


def on_policy_noise(seed, cfg, n):
    """The noise of ``n`` paths without the off-policy draws (unused at η = 0: one random program less)."""
    return D.draw_noise(jax.random.key(seed), cfg, n, exploration=False)


# ------------------------------------------------------------------------------------------------
# configuration and input checks
# ------------------------------------------------------------------------------------------------
def test_official_defaults_and_bad_configuration():
    c = D.pis(3)
    assert (c.horizon, c.num_time_steps, c.parameterisation) == (5.0, 200, "grad")
    assert math.isclose(c.sigma ** 2, 0.2, rel_tol=1e-12)
    c = D.dis(3)
    assert (c.horizon, c.beta_min, c.beta_max, c.parameterisation) == (1.0, 0.1, 10.0, "interp")
    assert c.integrator == "exponential" and D.dis(3, integrator="euler").integrator == "euler"
    c = D.dds(3)
    assert math.isclose(c.horizon / c.num_time_steps, 0.05)  # official: T = 12.8, mean step 0.05
    with pytest.raises(ValueError, match="integrator"):
        D.dds(2, integrator="euler")
    assert D.dds(3, parameterisation="no_score").parameterisation == "plain"
    with pytest.raises(ValueError, match="method"):
        D.make_config("sde", 2)
    with pytest.raises(ValueError, match="num_time_steps"):
        D.pis(2, num_time_steps=0)
    with pytest.raises(TypeError, match="num_time_steps"):
        D.pis(2, num_time_steps=2.5)
    with pytest.raises(ValueError, match="interp"):
        D.pis(2, parameterisation="interp")
    with pytest.raises(TypeError, match="unknown"):
        D.pis(2, sigmaa=1.0)
    with pytest.raises(ValueError, match="dim"):
        D.dis(0)


def test_target_without_gradient_gives_a_clear_error():
    def no_grad(x):  # a callback JAX cannot differentiate
        return jax.pure_callback(lambda v: np.float32(-0.5 * np.sum(v ** 2)),
                                 jax.ShapeDtypeStruct((), jnp.float32), x)

    with pytest.raises(ValueError, match="gradient"):
        D.check_gradients(D.dis(2), no_grad)
    D.check_gradients(D.dis(2, parameterisation="plain"), no_grad)  # *_no_score: fine


def test_batch_of_one_rejected_by_log_variance_loss():
    cfg = D.dis(2, num_time_steps=3, width=8, num_layers=1, parameterisation="plain")
    model = D.init_control(cfg, jax.random.key(0))
    one_path = D.Noise(jnp.zeros((1, 2)), jnp.zeros((3, 1, 2)), None)
    with pytest.raises(ValueError, match="at least 2"):
        D.log_variance_loss(model, cfg, gauss_logdensity(0.0, 1.0), one_path)


# ------------------------------------------------------------------------------------------------
# the uncontrolled processes against closed forms
# ------------------------------------------------------------------------------------------------
_ZERO_N, _ZERO_K = 4000, 10  # one shape for the zero-control tests of PIS and DDS: one program per method


def _zero_control_paths(method, lp, noise_seed):
    cfg = D.make_config(method, 2, num_time_steps=_ZERO_K, parameterisation="plain", width=8, num_layers=1)
    model = D.init_control(cfg, jax.random.key(0))
    return cfg, D.simulate(model, cfg, lp, on_policy_noise(noise_seed, cfg, _ZERO_N))


@pytest.mark.parametrize("method", ["pis", "dds"])
def test_zero_control_on_reference_law_gives_constant_weights_and_exact_log_z(method):
    """Target ρ = e^c N(0, v_ref): the reference chains (Brownian for PIS, the exponential-integrator OU
    chain for DDS) have exactly this law at T, so -rnd = log ρ - log p_ref = c + ... is constant and
    log Ẑ = log Z = c + d/2 log(2π v_ref) for any number of steps. Tolerance: float32 rounding of
    |x|²/v over d = 2 coordinates of size ≲ 5 (≈ 1e-5 relative to terms of size ~10)."""
    v = (0.2 * 5.0) if method == "pis" else 1.0
    c = 1.7
    _, paths = _zero_control_paths(method, gauss_logdensity(np.zeros(2), v, c), 1)
    est = D.estimates(paths)
    log_z = c + math.log(2 * math.pi * v)
    assert float(np.std(np.asarray(paths.rnd, np.float64))) < 1e-4
    assert abs(float(est.log_Z) - log_z) < 1e-4 and abs(float(est.elbo) - log_z) < 1e-4
    assert abs(float(est.ess) - 1.0) < 1e-5


_ELBO_M, _ELBO_V = np.array([1.0, -0.5]), np.array([0.5, 2.0])
_ELBO_LP = gauss_logdensity(_ELBO_M, _ELBO_V)


def _kl_gauss(m0, v0, m1, v1):
    """KL(N(m0, v0) | N(m1, v1)) for diagonal Gaussians."""
    return 0.5 * np.sum(v0 / v1 + (m1 - m0) ** 2 / v1 - 1.0 + np.log(v1 / v0))


@pytest.mark.parametrize("method", ["pis", "dds"])
def test_zero_control_elbo_is_minus_kl_of_the_reference(method):
    """Zero control: E[-rnd] = E_{p_ref}[log ρ - log p_ref] = log Z - KL(p_ref | p) (closed form for a
    diagonal Gaussian p). Tolerance: 5 standard errors of the batch mean of -rnd (sd/√N measured)."""
    d, n = 2, _ZERO_N
    m, v = _ELBO_M, _ELBO_V
    logz = 0.5 * np.sum(np.log(2 * np.pi * v))  # ρ = unnormalised N(m, diag v)
    cfg, paths = _zero_control_paths(method, _ELBO_LP, 2)
    vref = D.reference_variance(cfg)
    elbo = float(D.estimates(paths).elbo)
    truth = logz - _kl_gauss(np.zeros(d), np.full(d, vref), m, v)
    se = float(np.std(np.asarray(paths.rnd, np.float64))) / math.sqrt(n)
    assert abs(elbo - truth) < 5 * se


def _dis_kernels(K, integrator, T=1.0, bmin=0.1, bmax=10.0):
    """DIS step coefficients from the definitions, in float64: the exact VP noising kernel backwards over
    each step (mean factor e^{-I/2}, variance 1 - e^{-I}, I = ∫β over the step) and the generative step:
    Euler of dX = ½β(T-s) X ds + √β dW (β at the left end), or the variance-matched exponential step
    (variance 1 - e^{-I}, mean factor e^{I/2}, control gain 2 sinh(I/2)/√(I/Δs))."""
    dt = T / K
    s_left = np.arange(K) * dt
    B = lambda t: bmin * t + 0.5 * (bmax - bmin) * t ** 2 / T  # noqa: E731  ∫_0^t β
    inc = B(T - s_left) - B(T - s_left - dt)
    out = dict(dt=dt, ba=np.exp(-0.5 * inc), bs=np.sqrt(1 - np.exp(-inc)))
    if integrator == "euler":
        beta = bmin + (T - s_left) / T * (bmax - bmin)
        out.update(a=1 + 0.5 * beta * dt, s=np.sqrt(beta * dt), b=np.sqrt(beta) * dt)
    else:
        out.update(a=np.exp(0.5 * inc), s=np.sqrt(1 - np.exp(-inc)), b=2 * np.sinh(0.5 * inc) / np.sqrt(inc / dt))
    return out


@pytest.mark.parametrize("integrator", ["exponential", "euler"])
def test_dis_zero_control_elbo_against_gaussian_recursion(integrator):
    """DIS, zero control: X_0 ~ N(0, I), X_{k+1} = a_k X_k + s_k ε, so per coordinate
    Var X_k follows v ← a² v + s² (float64 recursion, independent of the code). Per coordinate and step
    the divergence term log F⁰ - log B has mean -½ + ½[(1 - a·ba)² v_k + ba² s²]/bs² + log(bs/s), so
    E[-rnd] = d/2 (1 + log 2π) - E Σ div + E log ρ(X_K) with ρ = N(m, diag v_t) unnormalised.
    Tolerance: 5 standard errors of the batch mean of -rnd."""
    d, n, K = 2, 4000, 20
    cfg = D.dis(d, num_time_steps=K, parameterisation="plain", width=8, num_layers=1, integrator=integrator)
    c = _dis_kernels(K, integrator)
    var, e_div = 1.0, 0.0
    for a, s, ba, bs in zip(c["a"], c["s"], c["ba"], c["bs"]):
        e_div += -0.5 + 0.5 * ((1 - a * ba) ** 2 * var + ba ** 2 * s ** 2) / bs ** 2 + math.log(bs / s)
        var = a ** 2 * var + s ** 2
    m, v = _ELBO_M, _ELBO_V
    e_logrho = -0.5 * np.sum((var + m ** 2) / v)
    truth = 0.5 * d * (1 + LOG2PI) - d * e_div + e_logrho
    model = D.init_control(cfg, jax.random.key(0))
    paths = D.simulate(model, cfg, _ELBO_LP, on_policy_noise(3, cfg, n))
    se = float(np.std(np.asarray(paths.rnd, np.float64))) / math.sqrt(n)
    assert abs(float(D.estimates(paths).elbo) - truth) < 5 * se


# ------------------------------------------------------------------------------------------------
# known optimal controls
# ------------------------------------------------------------------------------------------------
def follmer_control(m, v, sigma, T):
    """PIS's optimal control for p = N(m, diag v) (Föllmer drift / Schrödinger bridge from δ_0):
    u* = σ ∇log h(x, t), h(x, t) = E[p(Y)/p_ref(Y)], Y ~ N(x, τ I), τ = σ²(T - t), p_ref = N(0, σ²T I):
    a Gaussian integral with precision A = 1/v - 1/(σ²T) + 1/τ and linear term m/v + x/τ, so
    ∇log h = (A⁻¹(m/v + x/τ) - x)/τ."""
    m, v = jnp.asarray(m, jnp.float32), jnp.asarray(v, jnp.float32)

    def u(t, x, diffusion):
        tau = sigma ** 2 * (T - t)
        A = 1.0 / v - 1.0 / (sigma ** 2 * T) + 1.0 / tau
        return sigma * ((m / v + x / tau) / A - x) / tau

    return u


def _follmer_lv(m, v, K, n, noise_key, net):
    """PIS with u = u* + NN on p = N(m, diag v): Var(rnd) (the LV loss), ‖∇ LV‖ with respect to the
    network's weights, |log Ẑ - log Z|, and Var(rnd) of the zero control on the same noise."""
    cfg = D.pis(len(m), num_time_steps=K, parameterisation="plain")
    u_opt = follmer_control(m, v, cfg.sigma, cfg.horizon)
    lp = gauss_logdensity(m, v)
    noise = D.draw_noise(noise_key, cfg, n, exploration=False)

    @eqx.filter_jit  # one compiled program per K (eagerly, the loss and its gradient dispatch dozens)
    def stats(mlp):
        lv = lambda q: D.log_variance_loss(lambda t, x, s: u_opt(t, x, s) + q(t, x), cfg, lp, noise)  # noqa: E731
        (loss, paths), g = eqx.filter_value_and_grad(lv, has_aux=True)(mlp)
        gnorm = jnp.sqrt(sum(jnp.sum(x ** 2) for x in jax.tree.leaves(g)))
        zero = D.simulate(lambda t, x, s: jnp.zeros_like(x), cfg, lp, noise)
        return loss, gnorm, D.estimates(paths).log_Z, jnp.var(zero.rnd)

    loss, gnorm, log_z, zero_var = stats(net)
    return float(loss), float(gnorm), abs(float(log_z) - 0.5 * np.sum(np.log(2 * np.pi * v))), float(zero_var)


def test_pis_follmer_drift_zero_log_variance_and_exact_log_z():
    """With the closed-form optimal control the path RND is constant in continuous time, so Var(rnd), the
    gradient of the LV loss with respect to a zero-initialised network added to the control
    (u = u* + NN, NN = 0 at its initial weights) and |log Ẑ - log Z| must shrink as the number of Euler
    steps grows. Var(rnd) is O(Δt): from K = 10 to 160 (16x) it must fall by at least 2.5² = 6.25x, the
    rate of 2.5x per 4x steps (measured 3.9-4.8x per 4x, 16-19x per 16x over noise keys 7..12 and
    network keys 5..10); the gradient norm (≤ 2 sd(rnd) sd(∂rnd), Cauchy-Schwarz; a noisy Monte Carlo
    estimate) by at least 1.5x (measured 2.1-13x); log Ẑ comes within 0.02 of log Z at K = 160 (measured
    ≤ 0.005); already at K = 10 Var(rnd) is < 1 % of the zero control's (measured 0.31-0.36 %)."""
    m, v = np.array([1.5, -1.0]), np.array([0.3, 0.8])
    net = D.init_control(D.pis(2, parameterisation="plain", width=16, num_layers=1), jax.random.key(5)).net
    coarse = _follmer_lv(m, v, 10, 1000, jax.random.key(7), net)
    fine = _follmer_lv(m, v, 160, 1000, jax.random.key(7), net)
    assert fine[0] < coarse[0] / 2.5 ** 2
    assert fine[1] < coarse[1] / 1.5
    assert fine[2] < 0.02
    # against the untrained (zero-control) sampler the optimum is orders of magnitude better
    assert coarse[0] < 0.01 * coarse[3]


def test_dis_optimal_control_for_gaussian_target():
    """DIS with the exact VP score of p = N(m, diag v): p_t = N(√ᾱ_t m, ᾱ_t v + 1 - ᾱ_t),
    ᾱ_t = exp(-∫_0^t β), u*(x, s) = √β(T-s) ∇log p_{T-s}(x). The discrete weights are unbiased for Z at
    every K: |log Ẑ - log Z| < 5 MC sds (sd of log Ẑ ≈ √((1/ESS - 1)/N), the delta method). Even in
    continuous time rnd is not constant: the generative process starts from the prior N(0, I), not from
    p_T, so Var(rnd) → V_∞ = Var_{N(0,I)}[log p_T(X) - log N(X; 0, I)] (closed form below, 0.0080).
    The excess Var(rnd) - V_∞ is the discretisation error, O(Δs): it must fall ≥ 2.5x from K = 25 to
    100 and ≥ 2x from 100 to 400 (measured 3.7-4.3x and 3.2-5.1x over noise keys 11..16)."""
    d, n = 2, 4000
    m, v = np.array([1.0, -0.5]), np.array([0.5, 1.5])
    logz = 0.5 * np.sum(np.log(2 * np.pi * v))
    lp = gauss_logdensity(m, v)
    mj, vj = jnp.asarray(m, jnp.float32), jnp.asarray(v, jnp.float32)

    def u_opt(s, x, diffusion):
        t = 1.0 - s
        int_beta = 0.1 * t + 0.5 * (10.0 - 0.1) * t ** 2
        ab = jnp.exp(-int_beta)
        return diffusion * (-(x - jnp.sqrt(ab) * mj) / (ab * vj + 1.0 - ab))

    # per coordinate log N(x; μ, V) - log N(x; 0, 1) = x²(1 - 1/V)/2 + xμ/V + c, x ~ N(0, 1)
    ab_T = math.exp(-(0.1 + 0.5 * 9.9))
    mu_T, var_T = math.sqrt(ab_T) * m, ab_T * v + 1 - ab_T
    v_inf = float(np.sum(2 * (0.5 * (1 - 1 / var_T)) ** 2 + (mu_T / var_T) ** 2))
    excess = []
    for K in (25, 100, 400):
        cfg = D.dis(d, num_time_steps=K, parameterisation="plain")
        paths = D.simulate(u_opt, cfg, lp, on_policy_noise(11, cfg, n))
        est = D.estimates(paths)
        sd = math.sqrt((1 / float(est.ess) - 1) / n)
        assert abs(float(est.log_Z) - logz) < 5 * sd + 1e-4
        excess.append(float(np.var(np.asarray(paths.rnd, np.float64))) - v_inf)
    assert excess[1] < excess[0] / 2.5 and excess[2] < excess[1] / 2


def test_dis_interpolation_control_is_exact_for_the_prior_law():
    """DIS's "interp" control at initialisation (NN = 0, c(s) = 1) is u = -σ x / c², the time reversal of
    the VP noising SDE dY = -½β Y dt + c√β dB for p = N(0, c² I), its stationary law (prior sd c = 2 here:
    the noising process must end at the prior, which a prior sd other than 1 once broke). With the
    variance-matched exponential step it reproduces the reversed noising kernel N(e^{-I/2} x, c²(1 - e^{-I}))
    exactly (reversibility of the stationary Ornstein-Uhlenbeck chain), so rnd is the same constant on
    every path for every K: sd(rnd) < 1e-3 (float32 rounding of K·d terms of size ≲ 10 is ~1e-5),
    log Ẑ = log Z = 0 within 1e-4 and ESS = 1. Euler's step variance c²β(left)Δs differs from the kernel's
    c²(1 - e^{-I}), which no control can repair: there Var(rnd) only falls as O(Δs) (≥ 2.5x from 25 to 100
    steps; measured 3.1-3.6x over noise keys 1..6 at c = 1, and the law of rnd does not depend on c: the
    sampler is the c = 1 one in the coordinates x / c) and is > 0.3 at 100 steps (the variance-ratio floor
    ½(1 - r)² summed over steps and coordinates alone is 0.43 for d = 3)."""
    d, c = 3, 2.0
    lp = gauss_logdensity(np.zeros(d), c * c, -0.5 * d * (LOG2PI + math.log(c * c)))
    euler = []
    for K, integrator in ((25, "exponential"), (25, "euler"), (100, "euler")):  # exact at any K: one suffices
        cfg = D.dis(d, num_time_steps=K, width=8, num_layers=1, integrator=integrator, prior_scale=c)
        model = D.init_control(cfg, jax.random.key(0))
        p = D.simulate(model, cfg, lp, on_policy_noise(1, cfg, 1000))
        if integrator == "exponential":
            est = D.estimates(p)
            assert float(np.std(np.asarray(p.rnd, np.float64))) < 1e-3
            assert abs(float(est.log_Z)) < 1e-4 and float(est.ess) > 1 - 1e-5
        else:
            euler.append(float(np.var(np.asarray(p.rnd, np.float64))))
    assert euler[1] < euler[0] / 2.5 and euler[1] > 0.3


# ------------------------------------------------------------------------------------------------
# losses against a naive float64 re-implementation
# ------------------------------------------------------------------------------------------------
def _naive_rnd(method, W, c, x0n, eps, xi, lp_np, K, detach_explore, integrator=None):
    """The paper's formulas in a plain float64 loop (no shared code): u(t, x) = tanh(W x + c t)."""
    d = x0n.shape[1]
    if method == "pis":
        T, sig = 5.0, math.sqrt(0.2)
        dt = T / K
        times = np.arange(K) * dt
        x = np.zeros_like(x0n)
        a = np.ones(K); b = sig * dt * np.ones(K); s = sig * math.sqrt(dt) * np.ones(K)
    elif method == "dis":
        T = 1.0
        dt = T / K
        times = np.arange(K) * dt
        x = x0n.copy()
        kern = _dis_kernels(K, integrator)
        a, b, s = kern["a"], kern["b"], kern["s"]
    else:  # DDS: Vargas et al.'s cosine grid (steps ∝ cos⁴, summing to T) and exponential integrator
        T = 12.8
        phase = 0.5 * np.pi * (np.linspace(0, 1, K + 1) + 0.008) / 1.008
        steps = T * np.cos(phase) ** 4 / np.sum(np.cos(phase) ** 4)
        alpha = np.minimum(steps[:K], 0.999)
        times = np.concatenate([[0.0], np.cumsum(steps[:K - 1])])
        x = x0n.copy()
        a = np.sqrt(1 - alpha); s = np.sqrt(alpha); b = alpha
    x_start = x.copy()
    cost = np.zeros(len(x)); cross = np.zeros(len(x)); ito = np.zeros(len(x)); div = np.zeros(len(x))
    for k in range(K):
        t = times[k]
        u = np.tanh(x @ W.T + c * t)
        h = (b[k] / s[k]) ** 2
        w = u + (detach_explore * xi[k] / math.sqrt(h))
        cost += 0.5 * np.sum(u * u, 1) * h
        cross += np.sum(u * (w - u), 1) * h
        ito += np.sum(u * eps[k], 1) * math.sqrt(h)
        x_new = a[k] * x + b[k] * w + s[k] * eps[k]
        if method == "dis":  # log N(x_new; a x, s²) - log N(x; ba x_new, bs²)
            ba, bs = kern["ba"][k], kern["bs"][k]
            div += (-0.5 * np.sum((x_new - a[k] * x) ** 2, 1) / s[k] ** 2 - d * math.log(s[k])
                    + 0.5 * np.sum((x - ba * x_new) ** 2, 1) / bs ** 2 + d * math.log(bs))
        x = x_new
    lr = np.array([lp_np(xi_) for xi_ in x])
    if method == "dis":
        bnd = (-0.5 * np.sum(x_start ** 2, 1) - 0.5 * d * LOG2PI) + div - lr
    else:
        vref = 1.0 if method == "dds" else 1.0  # σ²T = 0.2·5 for PIS, σ₀² = 1 for DDS
        bnd = -0.5 * np.sum(x ** 2, 1) / vref - 0.5 * d * LOG2PI - lr
    return cost, cross, ito, bnd


# module-level control and target: the DIS cases with either integrator share one compiled program
_NAIVE_RNG = np.random.default_rng(0)
_NAIVE_W, _NAIVE_C = _NAIVE_RNG.normal(size=(2, 2)) * 0.7, _NAIVE_RNG.normal(size=2)
_NAIVE_M, _NAIVE_V = np.array([0.5, -1.0]), np.array([0.7, 1.3])
_NAIVE_LP = gauss_logdensity(_NAIVE_M, _NAIVE_V)


def _naive_u(t, x, s):
    return jnp.tanh(jnp.asarray(_NAIVE_W, jnp.float32) @ x + jnp.asarray(_NAIVE_C, jnp.float32) * t)


@pytest.mark.parametrize("method,integrator", [("pis", "euler"), ("dis", "exponential"), ("dis", "euler"),
                                               ("dds", "exponential")])
def test_losses_match_naive_float64_loop_on_fixed_noise(method, integrator):
    """KL loss = mean(cost + boundary), LV loss = unbiased variance of rnd (with exploration η = 0.5
    on the LV paths): float32 against float64 to 1e-4 relative plus 1e-4 absolute (K = 12 steps of
    O(1) terms; float32 rounding is ~1e-6 per operation)."""
    d, n, K = 2, 64, 12
    W, c, m, v = _NAIVE_W, _NAIVE_C, _NAIVE_M, _NAIVE_V
    lp_np = lambda x: -0.5 * np.sum((x - m) ** 2 / v)  # noqa: E731
    cfg = D.make_config(method, d, num_time_steps=K, parameterisation="plain", integrator=integrator)
    noise = D.draw_noise(jax.random.key(4), cfg, n)
    x0n, eps, xi = (np.asarray(a, np.float64) for a in noise)
    for eta, loss_fn in ((0.0, D.kl_loss), (0.5, D.log_variance_loss)):
        kw = {"exploration": eta} if eta else {}
        val, _ = loss_fn(_naive_u, cfg, _NAIVE_LP, noise, **kw)
        cost, cross, ito, bnd = _naive_rnd(method, W, c, x0n, eps, xi, lp_np, K, eta, integrator)
        truth = np.mean(cost + bnd) if eta == 0 else np.var(cost + cross + ito + bnd, ddof=1)
        assert abs(float(val) - truth) < 1e-4 * abs(truth) + 1e-4, (method, eta, float(val), truth)


# ------------------------------------------------------------------------------------------------
# LV gradient = 2 x KL gradient at w = u, in expectation
# ------------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("method", ["dis"])  # DIS: the Girsanov sums and the path-dependent divergence term
def test_log_variance_gradient_is_twice_kl_gradient_in_expectation(method):
    """At w = u (no off-policy noise) E[∇ Var(rnd)] = 2 E[rnd ∫∇u·dW] = 2 ∇KL (score-function identity,
    Richter & Berner Sec. 3.2; it holds exactly for the discrete Girsanov sums used here). Both gradients
    (LV: detached paths; KL: back-propagation through the solver) are averaged over B = 12 batches and
    compared on the 6 coordinates with the largest KL gradient: |mean diff| < 4.5 standard errors of
    the per-batch differences (6 two-sided tests; P(false failure) < 1e-4)."""
    d, K, n, B = 2, 10, 1024, 12
    cfg = D.make_config(method, d, num_time_steps=K, parameterisation="plain", width=16, num_layers=1)
    model = D.init_control(cfg, jax.random.key(0))
    model = eqx.tree_at(lambda q: q.net.out.weight, model,
                        0.2 * jax.random.normal(jax.random.key(1), model.net.out.weight.shape))
    lp = gauss_logdensity(np.array([1.0, -1.0]), np.array([0.5, 0.5]))
    params, static = eqx.partition(model, eqx.is_inexact_array)

    def flat_grad(loss_fn, noise):
        g = jax.grad(lambda p: loss_fn(eqx.combine(p, static), cfg, lp, noise)[0])(params)
        return jnp.concatenate([jnp.ravel(x) for x in jax.tree.leaves(g)])

    both = jax.jit(lambda nz: (flat_grad(D.log_variance_loss, nz), flat_grad(D.kl_loss, nz)))  # one program
    diffs, kls = [], []
    for b in range(B):
        g1, g2 = both(on_policy_noise(100 + b, cfg, n))
        g1, g2 = np.asarray(g1), 2 * np.asarray(g2)
        diffs.append(g1 - g2)
        kls.append(g2)
    diffs, kls = np.array(diffs), np.array(kls)
    top = np.argsort(-np.abs(kls.mean(0)))[:6]
    z = diffs[:, top].mean(0) / (diffs[:, top].std(0, ddof=1) / math.sqrt(B))
    assert np.all(np.abs(z) < 4.5), z
    # the comparison has power: the KL gradient on these coordinates is far from zero
    zk = kls[:, top].mean(0) / (kls[:, top].std(0, ddof=1) / math.sqrt(B))
    assert np.all(np.abs(zk) > 4.5), zk


# ------------------------------------------------------------------------------------------------
# non-finite paths
# ------------------------------------------------------------------------------------------------
def test_non_finite_target_drops_and_counts_paths_and_keeps_gradients_finite():
    """ρ = -inf on the half-plane x_0 < 0: those paths are dropped (weight 0, counted), the losses and
    their gradients stay finite, and log Ẑ estimates the mass of the truncated Gaussian: log Z = log(½·2π)
    for ρ = N(0, I) restricted to x_0 > 0 (PIS zero control, reference N(0, I): weights are exactly
    1 on alive paths, so Ẑ = fraction alive · 2π; tolerance 5 binomial sds)."""
    d, n = 2, 2000
    cfg = D.pis(d, num_time_steps=5, width=8, num_layers=1)
    lp = lambda x: jnp.where(x[0] > 0, -0.5 * jnp.sum(x * x), -jnp.inf)  # noqa: E731
    model = D.init_control(cfg, jax.random.key(0))
    # PIS-grad with a zero score factor: the control is 0 but ∇log ρ is still evaluated (and differentiated)
    model = eqx.tree_at(lambda q: q.scale.out.bias, model, jnp.zeros_like(model.scale.out.bias))
    noise = on_policy_noise(1, cfg, n)

    @eqx.filter_jit  # both losses and gradients in one program
    def both(mdl):
        return [eqx.filter_value_and_grad(lambda q: loss_fn(q, cfg, lp, noise), has_aux=True)(mdl)
                for loss_fn in (D.kl_loss, D.log_variance_loss)]

    for (val, paths), g in both(model):
        assert np.isfinite(float(val))
        assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(g))
    est = D.estimates(paths)  # of the LV (detached) paths: the same law
    frac = 1 - int(est.num_dropped) / n
    assert abs(frac - 0.5) < 5 * math.sqrt(0.25 / n)
    assert abs(float(est.log_Z) - math.log(frac * 2 * math.pi)) < 1e-4
