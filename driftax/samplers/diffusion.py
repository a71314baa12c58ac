"""Learned diffusion samplers: PIS, DIS and DDS with reverse-KL and log-variance losses.

Richter & Berner, "Improved sampling via learned diffusions", ICLR 2024 (arXiv 2307.01198); the
methods it unifies: PIS (Zhang & Chen, ICLR 2022), DIS (Berner, Richter & Ullrich, TMLR 2024) and
DDS (Vargas, Grathwohl & Doucet, ICLR 2023). Reference code: juliusberner/sde_sampler (PyTorch).

Target ``p = ρ / Z`` with ``ρ = exp(logdensity_fn)``. A *generative* SDE on ``s ∈ [0, T]``

    dX_s = (μ(X_s, s) + σ(s) u(X_s, s)) ds + σ(s) dW_s,      X_0 ~ p_prior,

is trained so that its law at ``T`` is ``p``: its path measure ``P^u`` is matched to the time reversal
``Q`` of a fixed *inference* SDE started from ``p`` (the inference control ``v`` is zero for all three
methods). Simulated with a (possibly detached or perturbed) control ``w``, the log Radon-Nikodym
derivative of one path is (Richter & Berner, Prop. 2.3 with ``v = 0``)

    rnd = ∫ u·(w - u/2) ds + ∫ u·dW  -  ∫ ∇·μ ds  +  log p_prior(X_0) - log ρ(X_T)        (DIS)
    rnd = ∫ u·(w - u/2) ds + ∫ u·dW  +  log p_ref(X_T) - log ρ(X_T)                       (PIS, DDS)

(running cost, cross term, Itô term, divergence, boundary terms), where ``p_ref`` is the law at ``T``
of the uncontrolled process (PIS, DDS: its time reversal is the inference process itself), so that
``log (dP^u/dQ) = rnd + log Z`` and ``E_{P^u}[exp(-rnd)] = Z``. Estimators (`log_weights` = ``-rnd``):
``log Ẑ = logsumexp(-rnd) - log N``, ``ELBO = mean(-rnd) ≤ log Z``, ESS ``(Σw)² / (N Σw²)``.

Time stepping. Every step is ``X_{k+1} = a_k X_k + b_k w_k + s_k ε_k`` with ``ε_k ~ N(0, I)``:

* PIS: Euler-Maruyama of the Brownian reference (``a = 1``, ``b = σΔs``, ``s = σ√Δs``; exact for it).
* DDS: the exponential integrator of the Ornstein-Uhlenbeck reference as in Vargas et al.'s and the
  official code, on their cosine time grid: steps ``Δs_k ∝ cos⁴(π/2 (k/K + o)/(1 + o))`` summing to
  ``T`` (large steps at the noise end, small ones at the target), noise fraction ``α_k = Δs_k`` and
  ``a = √(1-α)``, ``b = σ₀²α``, ``s = σ₀√α``: the uncontrolled chain keeps ``N(0, σ₀² I)`` exactly.
* DIS (VP noising SDE ``dY = -½β Y dt + √β dB``, generative drift ``μ = +½β x``): ``integrator="euler"``
  is the paper's Euler-Maruyama step (``a = 1 + ½βΔs``, ``b = σΔs``, ``s = σ√Δs`` with ``σ = √β`` at
  the step's left end); ``"exponential"`` (default) takes, like DDS, the variance of the exact noising
  kernel over the step, ``s² = 1 - e^{-I_k}`` with ``I_k = ∫β`` over the step, ``a = e^{I_k/2}`` (exact
  flow of ``μ``), ``σ_k = √(I_k/Δs)`` and ``b = 2 sinh(I_k/2)/σ_k`` (so the interpolation control at
  initialisation, ``u = -σ_k x``, gives exactly the reversed noising kernel ``N(e^{-I/2} x, 1 - e^{-I})``
  of ``N(0, I)``). With a prior ``N(0, c² I)`` (``prior_scale = c``) the noising SDE is
  ``dY = -½β Y dt + c√β dB`` (the official VP's ``scale_diff_coeff``), whose stationary law is that prior:
  ``σ``, ``b``, ``s`` and the noising kernel's sd scale by ``c``, ``a`` and ``h`` do not (the control at
  initialisation, ``u = -σ_k x / c²``, again gives the reversed noising kernel): it is the ``c = 1``
  sampler in the coordinates ``x / c``. The price: at the data end the interpolation control steps
  ``X`` by ``c² · 2 sinh(I_k/2) · ∇log ρ``, an explicit score step ``c²`` times the ``c = 1`` one, stable
  only where the target's curvature is below ``2 / (c² I_k)``; a prior wider than the target's narrowest
  direction makes the sampler stiffer (Neal's funnel, d = 10, c = 3: the last step is unstable wherever
  ``x_0 < -4``, 9 % of the mass, against ``x_0 < -6.2``, 2 %, at c = 1; measured, 30 % of the paths
  non-finite after 400 training steps). Why: no control can change a step's variance, and the log-ratio of two Gaussian
  kernels whose variances differ by the factor ``r`` has variance ``½(1 - r)²`` per coordinate. Euler's
  variance ``β(left)Δs`` misses the noising kernel's ``1 - e^{-I}`` by ``r`` = 0.67-0.95 on the 50-step
  grid (β runs 10 → 0.1 on ``[0, 1]``), which puts a floor of ``0.23 d`` under ``Var(rnd)`` even at the
  optimal control (ESS ≤ 0.63 on a 2-d target, ≤ 0.10 in 10-d); with the matched variance the floor
  vanishes for ``N(0, I)`` and is second order in ``I_k`` otherwise. Both converge to the same SDE.

With ``h_k = b_k² / s_k²`` the Girsanov sums are ``Σ_k [u·(w - u/2) h_k + u·√h_k ε_k]``: this is
*exactly* the log-ratio of the Gaussian transition kernels with and without control. PIS and DDS
telescope the uncontrolled kernels into the reference boundary term (their uncontrolled chains have
exact Gaussian laws). For DIS the divergence term ``-∫∇·μ ds`` is taken in its discrete form
``Σ_k log F⁰_k(X_{k+1}|X_k) - log B_k(X_k|X_{k+1})`` with ``F⁰`` the uncontrolled kernel and ``B`` the
exact VP noising kernel (it tends to ``-½ d ∫β ds`` as the steps shrink). Hence for all three methods
the path weights are those of an importance sampler on the discrete path space: ``E[exp(-rnd)] = Z``
for *every* number of steps, and discretisation only costs variance (ESS), never bias of ``Ẑ``.

Losses (Richter & Berner, Sec. 3):

* reverse KL ``E_{P^u}[rnd]`` with ``w = u`` and back-propagation through the whole solver; the Itô
  term has mean zero for every control and is left out of the loss (it only adds variance), as in the
  official code;
* log-variance ``Var_{P^w}[rnd]`` with ``w = stop_gradient(u)`` (no back-propagation through the
  solver, ``log Z`` cancels, zero-variance gradient at the optimum), optionally off-policy:
  ``w = sg(u) + η ξ / √h`` (``ξ ~ N(0, I)``), i.e. the paths carry ``√(1 + η²)`` times the noise.
  At ``η = 0`` its gradient is twice the KL gradient in expectation.

Paths whose state or log-weight becomes non-finite (e.g. ``log ρ = -inf`` or NaN) are *dropped*: they
are frozen at zero, counted (``alive``) and excluded from the losses; their importance weight is 0.

Controls: the "Fourier MLP" of PIS/DIS (`FourierMLP`, last layer initialised at zero, so an untrained
sampler is the uncontrolled process) plus the score-informed parameterisations of the official code:
``"grad"`` (PIS-grad, DDS-grad) ``u = clip(NN(s, x)) + c(s)·clip(∇log ρ(x))`` and ``"interp"`` (DIS)
``u = clip(NN(s, x)) + σ(s) c(s)·clip[(1 - s/T) ∇log p_prior(x) + (s/T) ∇log ρ(x)]`` with a learnt
scalar time-only network ``c(s)`` (initialised at 0.01 for "grad", 1 for "interp"); ``"plain"``
(``*_no_score``) uses the network alone and never differentiates ``ρ``. Clipping is elementwise, at
``nn_clip`` / ``grad_clip`` (final value 250; the official runs start at 10 and raise it 5x after 200
and again after 400 of 60,000 steps, which `driftax.infer.train_bridge` applies at the same fractions
of its run through ``clip_scale``).
"""
from __future__ import annotations

import dataclasses
import json
import math
from typing import Callable, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from driftax._checks import check_int, check_real

__all__ = [
    "BridgeConfig",
    "make_config",
    "pis",
    "dis",
    "dds",
    "Coefficients",
    "coefficients",
    "dds_time_grid",
    "reference_variance",
    "FourierMLP",
    "TimeMLP",
    "BridgeControl",
    "init_control",
    "control_fn",
    "Noise",
    "draw_noise",
    "Paths",
    "simulate",
    "kl_loss",
    "log_variance_loss",
    "estimates",
    "check_gradients",
    "METHODS",
    "PARAMETERISATIONS",
]

Array = jax.Array
METHODS = ("pis", "dis", "dds")
PARAMETERISATIONS = ("plain", "grad", "interp")
_LOG_2PI = math.log(2.0 * math.pi)


# ------------------------------------------------------------------------------------------------
# configurations
# ------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class BridgeConfig:
    """A PIS, DIS or DDS sampler: SDE, time grid, prior and control architecture (hashable, static).

    Fields: ``method`` ("pis", "dis", "dds"), ``dim``, ``horizon`` T, ``num_time_steps`` K,
    ``sigma`` (PIS diffusion), ``beta_min``/``beta_max`` (DIS linear β of the VP noising SDE),
    ``prior_scale`` (DIS, DDS: prior ``N(0, prior_scale² I)``, also the stationary law of their
    noising processes; PIS starts at δ_0), ``cosine_offset``
    (DDS: offset ``o`` of the cosine time grid), ``alpha_max`` (DDS: largest per-step noise fraction),
    ``integrator`` (DIS: "exponential" or "euler"; PIS "euler", DDS "exponential"),
    ``parameterisation`` ("plain", "grad", "interp"), ``grad_clip`` (elementwise clip of the score term:
    ∇log ρ, or DIS's interpolated score), ``nn_clip`` (clip of the network output), ``width``,
    ``num_layers`` (hidden blocks), ``max_freq``.
    """

    method: str
    dim: int
    horizon: float
    num_time_steps: int
    sigma: float = 0.0
    beta_min: float = 0.0
    beta_max: float = 0.0
    prior_scale: float = 1.0
    cosine_offset: float = 0.008
    alpha_max: float = 0.999
    integrator: str = "euler"
    parameterisation: str = "plain"
    grad_clip: float = 250.0
    nn_clip: float = 250.0
    width: int = 64
    num_layers: int = 2
    max_freq: float = 100.0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


# Official defaults (Richter & Berner's sde_sampler configs conf/solver/{pis,dis,dds}.yaml, conf/sde/,
# conf/model/; notes/bridges.md). Clips: 10 at the start of training, x5 after 200 and 400 steps (the
# configs' MultiStepParams, at steps 200 and 400 of 60,000); the fields hold the final value 250,
# `train_bridge` applies the warm-up.
_DEFAULTS = {
    "pis": dict(horizon=5.0, num_time_steps=200, sigma=math.sqrt(0.2), prior_scale=0.0, parameterisation="grad",
                integrator="euler"),
    "dis": dict(horizon=1.0, num_time_steps=200, beta_min=0.1, beta_max=10.0, prior_scale=1.0,
                parameterisation="interp", integrator="exponential"),
    "dds": dict(horizon=12.8, num_time_steps=256, prior_scale=1.0, parameterisation="grad",
                integrator="exponential"),
}
_INTEGRATORS = {"pis": ("euler",), "dis": ("exponential", "euler"), "dds": ("exponential",)}


def make_config(method: str, dim: int, **overrides) -> BridgeConfig:
    """`BridgeConfig` of ``method`` with the official defaults, updated by ``overrides``.

    PIS: δ_0 prior, Brownian reference ``σ = √0.2``, ``T = 5``, PIS-grad control. DIS: ``N(0, I)`` prior,
    VP noising (stationary law: the prior, also for ``prior_scale`` ≠ 1) with ``β`` linear from 0.1 (data) to 10 (noise), ``T = 1``, interpolation control, the
    variance-matched exponential step (module docstring; ``integrator="euler"`` for the paper's Euler
    step). DDS: ``N(0, I)`` prior, Ornstein-Uhlenbeck with the exponential integrator on the cosine time
    grid, ``T = 12.8`` with 256 steps (mean ``Δs = 0.05``), DDS-grad control. ``None`` values in
    ``overrides`` are ignored.
    Raises ValueError/TypeError naming the argument.
    """
    if not isinstance(method, str) or method.lower() not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    method = method.lower()
    dim = check_int("dim", dim, minimum=1)
    fields = {f.name for f in dataclasses.fields(BridgeConfig)} - {"method", "dim"}
    unknown = set(overrides) - fields
    if unknown:
        raise TypeError(f"unknown bridge option(s) {sorted(unknown)}; known: {sorted(fields)}")
    kw = dict(_DEFAULTS[method])
    kw.update({k: v for k, v in overrides.items() if v is not None})
    if kw.get("parameterisation") == "no_score":
        kw["parameterisation"] = "plain"
    for name in ("num_time_steps", "width", "num_layers"):
        kw[name] = check_int(name, kw[name], minimum=1) if name in kw else None
    kw = {k: v for k, v in kw.items() if v is not None}
    for name in ("horizon", "grad_clip", "nn_clip", "max_freq"):
        if name in kw:
            kw[name] = check_real(name, kw[name], positive=True)
    p = kw.get("parameterisation", "plain")
    if p not in PARAMETERISATIONS:
        raise ValueError(f"parameterisation must be one of {PARAMETERISATIONS} (or 'no_score'), got {p!r}")
    if p == "interp" and method != "dis":
        raise ValueError("parameterisation 'interp' interpolates the prior and target scores along the "
                         "VP noising path: it exists for method 'dis' only")
    if kw.get("integrator") not in _INTEGRATORS[method]:
        raise ValueError(f"integrator of {method!r} must be one of {_INTEGRATORS[method]}, "
                         f"got {kw.get('integrator')!r}")
    if method == "pis":
        kw["sigma"] = check_real("sigma", kw["sigma"], positive=True)
        kw["prior_scale"] = 0.0
    if method == "dis":
        kw["beta_min"] = check_real("beta_min", kw["beta_min"], positive=True)
        kw["beta_max"] = check_real("beta_max", kw["beta_max"], positive=True)
    if method in ("dis", "dds"):
        kw["prior_scale"] = check_real("prior_scale", kw["prior_scale"], positive=True)
    if method == "dds":
        kw["cosine_offset"] = check_real("cosine_offset", kw.get("cosine_offset", 0.008), positive=True)
        am = check_real("alpha_max", kw.get("alpha_max", 0.999), positive=True)
        if am >= 1.0:
            raise ValueError(f"alpha_max must lie in (0, 1), got {am}")
        kw["alpha_max"] = am
    return BridgeConfig(method=method, dim=dim, **kw)


def pis(dim: int, **overrides) -> BridgeConfig:
    """Path integral sampler (Zhang & Chen 2022) with the official defaults; see `make_config`."""
    return make_config("pis", dim, **overrides)


def dis(dim: int, **overrides) -> BridgeConfig:
    """Time-reversed diffusion sampler (Berner, Richter & Ullrich) with the official defaults."""
    return make_config("dis", dim, **overrides)


def dds(dim: int, **overrides) -> BridgeConfig:
    """Denoising diffusion sampler (Vargas, Grathwohl & Doucet 2023) with the official defaults."""
    return make_config("dds", dim, **overrides)


# ------------------------------------------------------------------------------------------------
# time stepping coefficients (computed once in float64 from the static configuration)
# ------------------------------------------------------------------------------------------------
class Coefficients(NamedTuple):
    """Per-step coefficients of ``X_{k+1} = a X_k + b w + s ε`` on the generative grid ``s_k``.

    ``time`` (K,) left end points; ``a``, ``b``, ``s``; ``h = b²/s²`` (the Girsanov time increment);
    ``diffusion`` σ(s_k) (the interpolation control's factor); ``back_a``, ``back_s`` (DIS): the exact
    VP noising transition ``X_k | X_{k+1} ~ N(back_a X_{k+1}, back_s² I)`` of the inference process.
    """

    time: np.ndarray
    a: np.ndarray
    b: np.ndarray
    s: np.ndarray
    h: np.ndarray
    diffusion: np.ndarray
    back_a: np.ndarray
    back_s: np.ndarray


def dds_time_grid(cfg: BridgeConfig) -> np.ndarray:
    """DDS's cosine time grid (Vargas et al. 2023; official ``get_timesteps(rescale_t="cosine")``).

    Step sizes ``Δs_k ∝ cos⁴(φ_k)``, ``φ_k = π/2 (k/K + o)/(1 + o)`` for ``k = 0..K``, normalised to sum
    to ``T``; the official grid has ``K + 1`` such steps of which the last has length ``cos⁴(π/2) ≈ 0``
    (a no-op), so the ``K`` steps returned here are the official grid without it. Returns the
    ``K + 1`` grid points ``0 = s_0 < ... < s_K ≈ T`` (float64).
    """
    K, o, T = cfg.num_time_steps, cfg.cosine_offset, cfg.horizon
    phase = 0.5 * np.pi * (np.linspace(0.0, 1.0, K + 1) + o) / (1 + o)
    w = np.cos(phase) ** 4
    dts = T * w / w.sum()
    return np.concatenate([[0.0], np.cumsum(dts[:K])])


def coefficients(cfg: BridgeConfig) -> Coefficients:
    """The step coefficients of ``cfg`` (float64 NumPy; see the module docstring)."""
    K, T = cfg.num_time_steps, cfg.horizon
    dt = T / K
    time = np.arange(K) * dt
    ones = np.ones(K)
    if cfg.method == "pis":
        sig = cfg.sigma * ones
        a, b, s = ones, sig * dt, sig * math.sqrt(dt)
        back_a, back_s = ones, np.zeros(K)
    elif cfg.method == "dis":
        # Noising (inference) SDE dY = -½β(t) Y dt + c √β(t) dB on t ∈ [0, T], c = prior_scale (the official
        # VP's ``scale_diff_coeff``): its stationary law is the prior N(0, c² I), so the noised target ends
        # near the prior for every c (with c = 1 and a prior N(0, c² I) it ends near N(0, I) instead, and
        # Var(rnd) cannot vanish: the sampler diverged on the funnel at c = 3). Generative time s = T - t,
        # uncontrolled generative drift μ(x, s) = +½ β(T - s) x, so ∇·μ = ½ d β(T - s). Exact noising
        # transition from t = T - s_{k+1} to T - s_k: mean factor exp(-½I), variance c²(1 - e^{-I}).
        # Everything is the c = 1 sampler in the coordinates x / c: σ, b, s and back_s scale by c, a and h not.
        c = cfg.prior_scale
        t_hi, t_lo = T - time, T - time - dt
        int_beta = lambda t: cfg.beta_min * t + 0.5 * (cfg.beta_max - cfg.beta_min) * t * t / T  # noqa: E731
        inc = int_beta(t_hi) - int_beta(t_lo)
        back_a = np.exp(-0.5 * inc)
        back_s = c * np.sqrt(-np.expm1(-inc))
        if cfg.integrator == "euler":
            beta = cfg.beta_min + (T - time) / T * (cfg.beta_max - cfg.beta_min)  # β at the left end
            sig = c * np.sqrt(beta)
            a, b, s = 1.0 + 0.5 * beta * dt, sig * dt, sig * math.sqrt(dt)
        else:
            # variance-matched exponential step: s = back_s, a = e^{I/2}, b·σ_k / c² = e^{I/2} - e^{-I/2}
            # (the interpolation control at initialisation, u = σ_k·(-x / c²), then gives the reversed
            # noising kernel N(e^{-I/2} x, c²(1 - e^{-I})) exactly)
            sig = c * np.sqrt(inc / dt)
            a, s = np.exp(0.5 * inc), back_s
            b = c * c * 2.0 * np.sinh(0.5 * inc) / sig
    else:
        # Official DDS step (sde_sampler ExponentialIntegratorSDELoss, alpha = 1, sigma = σ₀) on the cosine
        # grid: noise fraction α_k = Δs_k, X_{k+1} = √(1-α) X_k + σ₀²α u + σ₀√α ε; the uncontrolled
        # chain is reversible with respect to N(0, σ₀²), its time reversal is the noising chain.
        grid = dds_time_grid(cfg)
        time = grid[:-1]
        alpha = np.clip(np.diff(grid), 1e-12, cfg.alpha_max)
        a = np.sqrt(1.0 - alpha)
        s = cfg.prior_scale * np.sqrt(alpha)
        b = cfg.prior_scale ** 2 * alpha
        sig = s / np.sqrt(np.diff(grid).clip(1e-12))
        back_a, back_s = ones, np.zeros(K)
    h = (b / s) ** 2
    return Coefficients(time, a, b, s, h, sig, back_a, back_s)


def reference_variance(cfg: BridgeConfig) -> float:
    """Variance of the uncontrolled chain at ``T`` per coordinate (PIS: σ²T; DDS: σ₀²)."""
    if cfg.method == "pis":
        return cfg.sigma ** 2 * cfg.horizon
    if cfg.method == "dds":
        return cfg.prior_scale ** 2
    raise ValueError("DIS has no reference boundary term (its boundary is the prior at s = 0)")


# ------------------------------------------------------------------------------------------------
# networks
# ------------------------------------------------------------------------------------------------
def _zero_linear(lin: eqx.nn.Linear, bias: float = 0.0) -> eqx.nn.Linear:
    lin = eqx.tree_at(lambda m: m.weight, lin, jnp.zeros_like(lin.weight))
    return eqx.tree_at(lambda m: m.bias, lin, jnp.full_like(lin.bias, bias))


class _TimeEmbedding(eqx.Module):
    """``t → Linear(GELU(Linear([sin(ct + φ), cos(ct + φ)])))`` with ``c = linspace(0.1, max_freq, w)``."""

    coef: Array
    phase: Array
    lin1: eqx.nn.Linear
    lin2: eqx.nn.Linear

    def __init__(self, width: int, max_freq: float, *, key):
        k1, k2, k3 = jax.random.split(key, 3)
        self.coef = jnp.linspace(0.1, max_freq, width)
        self.phase = jax.random.normal(k1, (width,))  # official: randn
        self.lin1 = eqx.nn.Linear(2 * width, width, key=k2)
        self.lin2 = eqx.nn.Linear(width, width, key=k3)

    def __call__(self, t):
        arg = lax.stop_gradient(self.coef) * t + self.phase  # fixed frequencies, learnt phases
        feat = jnp.concatenate([jnp.sin(arg), jnp.cos(arg)])
        return self.lin2(jax.nn.gelu(self.lin1(feat)))


class FourierMLP(eqx.Module):
    """The PIS/DIS "Fourier MLP" control network ``NN(t, x) ∈ R^d``.

    ``x → Linear(d, w)``; ``t →`` Fourier features → two linear layers; the two are summed, then
    ``num_layers`` blocks ``GELU + Linear(w, w)`` and ``GELU + Linear(w, d)`` whose weights and bias
    start at zero (Zhang & Chen 2022; Berner, Richter & Ullrich), so the untrained control is 0.
    """

    x_embed: eqx.nn.Linear
    t_embed: _TimeEmbedding
    hidden: tuple
    out: eqx.nn.Linear

    def __init__(self, dim: int, width: int = 64, num_layers: int = 2, max_freq: float = 100.0, *, key):
        keys = jax.random.split(key, num_layers + 3)
        self.x_embed = eqx.nn.Linear(dim, width, key=keys[0])
        self.t_embed = _TimeEmbedding(width, max_freq, key=keys[1])
        self.hidden = tuple(eqx.nn.Linear(width, width, key=k) for k in keys[2:-1])
        self.out = _zero_linear(eqx.nn.Linear(width, dim, key=keys[-1]))

    def __call__(self, t, x):
        h = self.x_embed(x) + self.t_embed(t)
        for layer in self.hidden:
            h = layer(jax.nn.gelu(h))
        return self.out(jax.nn.gelu(h))


class TimeMLP(eqx.Module):
    """The scalar time-only network ``c(t)`` that scales the score term (official ``TimeEmbed`` with
    ``dim_out = 1``, four layers): Fourier features ``[sin(ct + φ), cos(ct + φ)]`` → three
    ``Linear + GELU`` layers → ``Linear(w, 1)`` with zero weights and a constant bias ``init`` (0.01 for
    PIS/DDS-grad: start near the reference; 1 for DIS: start at the exact interpolation of the prior and
    target scores)."""

    coef: Array
    phase: Array
    hidden: tuple
    out: eqx.nn.Linear

    def __init__(self, width: int = 64, max_freq: float = 100.0, init: float = 0.0, *, key):
        keys = jax.random.split(key, 5)
        self.coef = jnp.linspace(0.1, max_freq, width)
        self.phase = jax.random.normal(keys[0], (width,))
        self.hidden = (eqx.nn.Linear(2 * width, width, key=keys[1]), eqx.nn.Linear(width, width, key=keys[2]),
                       eqx.nn.Linear(width, width, key=keys[3]))
        self.out = _zero_linear(eqx.nn.Linear(width, 1, key=keys[4]), init)

    def __call__(self, t):
        arg = lax.stop_gradient(self.coef) * t + self.phase
        h = jnp.concatenate([jnp.sin(arg), jnp.cos(arg)])
        for layer in self.hidden:
            h = jax.nn.gelu(layer(h))
        return self.out(h)


class BridgeControl(eqx.Module):
    """The learnt control: ``net(t, x)`` and, for score-informed parameterisations, ``scale(t)``."""

    net: FourierMLP
    scale: TimeMLP | None


def init_control(cfg: BridgeConfig, key) -> BridgeControl:
    """An untrained control for ``cfg`` (zero network output; see `TimeMLP` for the score factor).

    The weights depend on the architecture only (``dim``, ``width``, ``num_layers``, ``max_freq`` and
    whether/how the score term is scaled), not on the SDE or its time grid: one compiled initialiser
    serves every configuration that shares the network."""
    if not isinstance(cfg, BridgeConfig):
        raise TypeError(f"cfg must be a BridgeConfig, got {type(cfg).__name__}")
    scale_init = None if cfg.parameterisation == "plain" else (1.0 if cfg.parameterisation == "interp" else 0.01)
    return _init_control((cfg.dim, cfg.width, cfg.num_layers, float(cfg.max_freq), scale_init), key)


def _build_control(arch, key) -> BridgeControl:
    dim, width, num_layers, max_freq, scale_init = arch
    k1, k2 = jax.random.split(key)
    net = FourierMLP(dim, width, num_layers, max_freq, key=k1)
    scale = None if scale_init is None else TimeMLP(width, max_freq, scale_init, key=k2)
    return BridgeControl(net, scale)


def _linears(model) -> list:
    is_linear = lambda m: isinstance(m, eqx.nn.Linear)  # noqa: E731
    return [m for m in jax.tree.leaves(model, is_leaf=is_linear) if is_linear(m)]


@eqx.filter_jit
def _init_control(arch: tuple, key) -> BridgeControl:
    """The initial weights of ``arch`` = (dim, width, num_layers, max_freq, scale_init or None) from one
    uniform and one normal draw. Same laws as the layer constructors (PyTorch's and equinox's default
    ``nn.Linear`` initialisation: weight and bias ~ U(±1/√fan_in); Fourier phases ~ N(0, 1), official
    ``randn``; fixed frequencies ``linspace(0.1, max_freq, width)``; output layers at zero, the score
    factor's bias at ``scale_init``), but each ``jax.random`` call of the constructors adds its own
    threefry to the compiled program (about 2.5 s of XLA compilation per architecture on a CPU); one
    draw per law compiles in a fraction of that."""
    dim, width, num_layers, max_freq, scale_init = arch
    skeleton = eqx.filter_eval_shape(_build_control, arch, key)  # shapes only: no random numbers drawn
    k_uniform, k_normal = jax.random.split(key)
    layers = _linears(skeleton)
    sizes = [math.prod(lin.weight.shape) + math.prod(lin.bias.shape) for lin in layers]
    unif = jax.random.uniform(k_uniform, (sum(sizes),), jnp.float32, -1.0, 1.0)
    filled, offset = [], 0
    for lin, size in zip(layers, sizes):
        lim = 1.0 / math.sqrt(lin.in_features)
        nw = math.prod(lin.weight.shape)
        w = lim * unif[offset:offset + nw].reshape(lin.weight.shape)
        b = lim * unif[offset + nw:offset + size].reshape(lin.bias.shape)
        filled.append(eqx.tree_at(lambda m: (m.weight, m.bias), lin, (w, b)))
        offset += size
    model = eqx.tree_at(_linears, skeleton, filled)
    coef = jnp.linspace(0.1, max_freq, width, dtype=jnp.float32)
    phases = jax.random.normal(k_normal, (2, width), jnp.float32)
    out = model.net.out
    model = eqx.tree_at(lambda m: (m.net.t_embed.coef, m.net.t_embed.phase, m.net.out.weight, m.net.out.bias),
                        model, (coef, phases[0], jnp.zeros(out.weight.shape, jnp.float32),
                                jnp.zeros(out.bias.shape, jnp.float32)))
    if scale_init is not None:
        out = model.scale.out
        model = eqx.tree_at(lambda m: (m.scale.coef, m.scale.phase, m.scale.out.weight, m.scale.out.bias),
                            model, (coef, phases[1], jnp.zeros(out.weight.shape, jnp.float32),
                                    jnp.full(out.bias.shape, scale_init, jnp.float32)))
    return model


def control_fn(model: BridgeControl, cfg: BridgeConfig, logdensity_fn, clip_scale=1.0) -> Callable:
    """``u(t, x, diffusion) -> (d,)``: the control of ``cfg``'s parameterisation for one state.

    ``clip_scale`` multiplies both clips (training warm-up of the official configs: 1/25, 1/5, 1)."""
    score = jax.grad(logdensity_fn) if cfg.parameterisation != "plain" else None
    prior_var = cfg.prior_scale ** 2
    nn_clip, grad_clip = cfg.nn_clip * clip_scale, cfg.grad_clip * clip_scale

    def u(t, x, diffusion):
        out = jnp.clip(model.net(t, x), -nn_clip, nn_clip)
        if cfg.parameterisation == "plain":
            return out
        g = score(x)
        g = jnp.where(jnp.isfinite(g), g, 0.0)
        if cfg.parameterisation == "grad":
            return out + model.scale(t) * jnp.clip(g, -grad_clip, grad_clip)
        lam = t / cfg.horizon  # DIS: s = 0 is the noise end (prior score), s = T the target score
        lerp = jnp.clip((1.0 - lam) * (-x / prior_var) + lam * g, -grad_clip, grad_clip)
        return out + diffusion * model.scale(t) * lerp

    return u


def check_gradients(cfg: BridgeConfig, logdensity_fn) -> None:
    """Raise ValueError if the parameterisation needs ``∇log ρ`` and ``logdensity_fn`` has none."""
    if cfg.parameterisation == "plain":
        return
    try:
        jax.eval_shape(jax.grad(logdensity_fn), jax.ShapeDtypeStruct((cfg.dim,), jnp.float32))
    except Exception as err:  # pure callbacks without a JVP rule, integer outputs, ...
        raise ValueError(
            f"parameterisation {cfg.parameterisation!r} of {cfg.method!r} needs the gradient of the target's "
            f"log-density, which JAX cannot compute ({type(err).__name__}: {str(err)[:200]}); use "
            "parameterisation='plain' (the *_no_score variant) with the log-variance loss") from None


# ------------------------------------------------------------------------------------------------
# simulation
# ------------------------------------------------------------------------------------------------
class Noise(NamedTuple):
    """Fixed randomness of a batch: ``x0`` (N, d) prior draws, ``eps`` (K, N, d) step noise,
    ``xi`` (K, N, d) off-policy exploration noise (``None`` when not drawn)."""

    x0: Array
    eps: Array
    xi: Array | None


def draw_noise(key, cfg: BridgeConfig, batch: int, dtype=jnp.float32, *, exploration: bool = True) -> Noise:
    """All standard normals of one batch of paths (prior draws are unscaled here).

    ``exploration=False`` leaves out the off-policy noise ``xi`` (on-policy sampling and training):
    ``x0`` and ``eps`` are the same either way (their keys do not depend on it)."""
    k0, k1, k2 = jax.random.split(key, 3)
    K, d = cfg.num_time_steps, cfg.dim
    xi = jax.random.normal(k2, (K, batch, d), dtype) if exploration else None
    return Noise(jax.random.normal(k0, (batch, d), dtype), jax.random.normal(k1, (K, batch, d), dtype), xi)


class Paths(NamedTuple):
    """One batch of simulated paths.

    ``x`` (N, d) terminal states ``X_T``; ``cost`` ``Σ ½|u|² h``; ``cross`` ``Σ u·(w - u) h``; ``ito``
    ``Σ u·√h ε``; ``divergence`` (DIS: ``Σ log F⁰_k(X_{k+1}|X_k) - log B_k(X_k|X_{k+1})``, the discrete
    form of ``-∫∇·μ ds``; 0 otherwise); ``boundary`` (prior/reference and target terms); ``rnd`` the sum
    (0 where dropped); ``alive`` False for dropped (non-finite) paths.
    """

    x: Array
    cost: Array
    cross: Array
    ito: Array
    divergence: Array
    boundary: Array
    rnd: Array
    alive: Array


def _log_normal(x, var):
    return -0.5 * jnp.sum(x * x, axis=-1) / var - 0.5 * x.shape[-1] * (_LOG_2PI + jnp.log(var))


def simulate(control, cfg: BridgeConfig, logdensity_fn, noise: Noise, *, detach: bool = False,
             exploration: float = 0.0, sharding=None, clip_scale=1.0) -> Paths:
    """Simulate ``N`` paths and accumulate their log Radon-Nikodym derivative (module docstring).

    ``control`` is a `BridgeControl` (wrapped by `control_fn`) or any ``u(t, x, diffusion) -> (d,)``;
    ``detach`` simulates with ``w = stop_gradient(u)`` (log-variance loss), ``exploration`` ``η ≥ 0``
    adds the off-policy noise ``η ξ / √h`` to ``w``. ``sharding`` (a ``NamedSharding`` of the batch axis)
    keeps the states sharded over devices (data parallelism; XLA adds the reductions). ``clip_scale``
    (a number or a traced scalar) multiplies the control's clips. Paths that turn non-finite are frozen
    at 0 and flagged in ``alive``.
    """
    if not isinstance(cfg, BridgeConfig):
        raise TypeError(f"cfg must be a BridgeConfig, got {type(cfg).__name__}")
    co = coefficients(cfg)
    steps = tuple(np.asarray(v, np.float32) for v in (co.time, co.a, co.b, co.s, co.h, co.diffusion, co.back_a,
                                                       co.back_s))
    return _simulate(control, _traced_config(cfg), logdensity_fn, noise, steps, detach=detach,
                     exploration=float(exploration), sharding=sharding, clip_scale=clip_scale)


def _traced_config(cfg: BridgeConfig) -> BridgeConfig:
    """``cfg`` without the fields that only shape the step coefficients (time grid, β schedule, integrator):
    the coefficients enter the compiled program as arrays, so configurations that differ only there (DIS
    with either integrator or another β, DDS's grid) share one program per number of steps."""
    return dataclasses.replace(cfg, num_time_steps=1, integrator="", beta_min=0.0, beta_max=0.0,
                               cosine_offset=0.0, alpha_max=0.0)


@eqx.filter_jit
def _simulate(control, cfg: BridgeConfig, logdensity_fn, noise: Noise, steps, *, detach: bool, exploration: float,
              sharding, clip_scale) -> Paths:
    u_fn = control_fn(control, cfg, logdensity_fn, clip_scale) if isinstance(control, BridgeControl) else control
    dt = jnp.float32
    xs = tuple(jnp.asarray(v, dt) for v in steps)
    sqrt_h = jnp.sqrt(xs[4])
    is_dis = cfg.method == "dis"
    x0n, eps, xi = noise
    if exploration > 0 and xi is None:
        raise ValueError("exploration > 0 needs the off-policy noise: draw_noise(..., exploration=True)")
    if exploration == 0:
        xi = None  # not scanned over: it would only be carried through the loop
    constrain = (lambda v: lax.with_sharding_constraint(v, sharding)) if sharding is not None else (lambda v: v)
    x0 = constrain(cfg.prior_scale * x0n)
    N = x0.shape[0]
    vu = jax.vmap(u_fn, in_axes=(None, 0, None))

    def step(carry, inp):
        x, alive, cost, cross, ito, div = carry
        t, a, b, s, h, sig, ba, bs, sh, e, z = inp if exploration > 0 else (*inp, None)
        u = vu(t, x, sig)
        w = lax.stop_gradient(u) if detach else u
        if exploration > 0:
            w = w + exploration * z / sh
        x_new = a * x + b * w + s * e
        c_k = 0.5 * jnp.sum(u * u, -1) * h
        x_k = jnp.sum(u * (w - u), -1) * h
        i_k = jnp.sum(u * e, -1) * sh
        if is_dis:
            # log F⁰(X_{k+1} | X_k) - log B(X_k | X_{k+1}); the normalising constants cancel up to
            # d log(bs / s). Exact discrete counterpart of -∫∇·μ ds: E[exp(-rnd)] = Z for every K.
            fwd = x_new - a * x
            bwd = x - ba * x_new
            d_k = (-0.5 * jnp.sum(fwd * fwd, -1) / s ** 2 + 0.5 * jnp.sum(bwd * bwd, -1) / bs ** 2
                   + x.shape[-1] * jnp.log(bs / s))
        else:
            d_k = jnp.zeros_like(c_k)
        ok = alive & jnp.all(jnp.isfinite(x_new), -1) & jnp.isfinite(c_k + x_k + i_k + d_k)
        keep = lambda v: jnp.where(ok, v, 0.0)  # noqa: E731
        x_new = constrain(jnp.where(ok[:, None], x_new, 0.0))
        return (x_new, ok, cost + keep(c_k), cross + keep(x_k), ito + keep(i_k), div + keep(d_k)), None

    zeros = jnp.zeros((N,), dt)
    init = (x0, jnp.ones((N,), bool), zeros, zeros, zeros, zeros)
    scanned = (*xs, sqrt_h, eps) + ((xi,) if exploration > 0 else ())
    (x, alive, cost, cross, ito, div), _ = lax.scan(step, init, scanned)

    # target term: evaluate log ρ where it is finite only, so no NaN reaches a gradient (double where)
    lp_raw = jax.vmap(logdensity_fn)(lax.stop_gradient(x))
    ok_lp = alive & jnp.isfinite(lp_raw)
    x_eval = jnp.where(ok_lp[:, None], x, lax.stop_gradient(jnp.where(ok_lp[:, None], x, 0.0)))
    lp = jnp.where(ok_lp, jax.vmap(logdensity_fn)(x_eval), 0.0)
    if cfg.method == "dis":
        start = _log_normal(x0, cfg.prior_scale ** 2)
    else:
        start = _log_normal(x, reference_variance(cfg))
    boundary = jnp.where(ok_lp, start - lp, 0.0)
    alive = ok_lp
    div = jnp.where(alive, div, 0.0)
    rnd = jnp.where(alive, cost + cross + ito + div + boundary, 0.0)
    return Paths(x, cost, cross, ito, div, boundary, rnd, alive)


# ------------------------------------------------------------------------------------------------
# losses and estimators
# ------------------------------------------------------------------------------------------------
def kl_loss(control, cfg: BridgeConfig, logdensity_fn, noise: Noise, *, sharding=None, clip_scale=1.0):
    """Reverse KL ``E_{P^u}[Σ ½|u|² h + boundary]`` (= KL(P^u | Q) - log Z) by back-propagation through
    the solver; mean over the alive paths. Returns ``(loss, paths)``."""
    p = simulate(control, cfg, logdensity_fn, noise, detach=False, sharding=sharding, clip_scale=clip_scale)
    n = jnp.maximum(jnp.sum(p.alive), 1)
    loss = jnp.sum(jnp.where(p.alive, p.cost + p.divergence + p.boundary, 0.0)) / n
    return loss, p


def log_variance_loss(control, cfg: BridgeConfig, logdensity_fn, noise: Noise, *, exploration: float = 0.0,
                      sharding=None, clip_scale=1.0):
    """Log-variance loss: the unbiased batch variance of ``rnd`` over alive paths simulated with
    ``w = stop_gradient(u)`` (plus exploration noise). Needs ``N ≥ 2``. Returns ``(loss, paths)``."""
    if noise.x0.shape[0] < 2:
        raise ValueError(f"the log-variance loss needs a batch of at least 2 paths, got {noise.x0.shape[0]}")
    exploration = check_real("exploration", exploration, nonnegative=True)
    p = simulate(control, cfg, logdensity_fn, noise, detach=True, exploration=exploration, sharding=sharding,
                 clip_scale=clip_scale)
    n = jnp.sum(p.alive)
    mean = jnp.sum(p.rnd) / jnp.maximum(n, 1)  # rnd is 0 on dropped paths
    var = jnp.sum(jnp.where(p.alive, (p.rnd - mean) ** 2, 0.0)) / jnp.maximum(n - 1, 1)
    return var, p


class Estimates(NamedTuple):
    """``log_Z`` (importance, ``logsumexp(-rnd) - log N``), ``elbo`` (mean ``-rnd`` over alive paths),
    ``ess`` (normalised, ``(Σw)² / (N Σw²)``), ``num_dropped``."""

    log_Z: Array
    elbo: Array
    ess: Array
    num_dropped: Array


@jax.jit  # one small program per batch size instead of a dozen eagerly dispatched ones
def estimates(paths: Paths) -> Estimates:
    """Estimators from on-policy paths (dropped paths have weight 0 and count in ``N``)."""
    logw = jnp.where(paths.alive, -paths.rnd, -jnp.inf)
    N = logw.shape[0]
    lse = jax.scipy.special.logsumexp(logw)
    log_Z = lse - jnp.log(N)
    n = jnp.maximum(jnp.sum(paths.alive), 1)
    elbo = jnp.sum(jnp.where(paths.alive, -paths.rnd, 0.0)) / n
    ess = jnp.exp(2.0 * lse - jax.scipy.special.logsumexp(2.0 * logw)) / N
    return Estimates(log_Z, elbo, ess, N - jnp.sum(paths.alive))
