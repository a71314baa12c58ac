"""Reference targets with ground truth.

Every builder returns a `driftax.models.Target` whose ``logdensity_fn`` is a pure JAX function of a
flat ``float32`` vector (jit-, vmap- and grad-able) and which carries, where it is known, the ground
truth: ``mean`` and ``cov`` of ``x``, ``log_Z = log ∫ exp(logdensity_fn(x)) dx`` and
``sample(key, n) -> (n, dim)`` exact draws. Ground truth that has no closed form (the double and
many wells) is computed once, in float64, by 1-d quadrature of the factors the density splits into.

=====================  =======  ==============================================================
name                   dim      ground truth
=====================  =======  ==============================================================
gaussian               any      mean, cov, log_Z = 0, exact draws
ill_conditioned_...    any      same (a rotated Gaussian with a set condition number)
correlated_gaussian    any      same (unit variances, equicorrelated or random correlation)
banana                 >= 2     mean, cov, log_Z = 0, exact draws (Haario et al. 1999)
funnel                 >= 2     mean, cov, log_Z = 0, exact draws (Neal 2003)
gmm9                   2        mean, cov, log_Z = 0, exact draws (PIS / DIS papers)
mog40                  any      mean, cov, log_Z = 0, exact draws (FAB paper)
double_well            any      mean, cov, log_Z (quadrature), exact draws (inverse CDF)
many_well              even     mean, cov, log_Z (quadrature), exact draws (inverse CDF)
logistic_regression    p + 1    none (compare with NUTS)
=====================  =======  ==============================================================

Use `get(name, **kwargs)` (or the `GALLERY` dict) to build one by name; the thirteen posteriordb
posteriors are reachable there too (``"eight_schools"``, ``"arK"``, ``"garch11"``,
``"gp_pois_regr"``, ``"arma11"``, ``"blr"``, ``"diamonds"``, ``"hmm_example"``,
``"kidscore_interaction"``, ``"logearn_interaction"``, ``"logmesquite_logvash"``,
``"low_dim_gauss_mix"``, ``"nes"``), read from the shared folder by `driftax.models.posteriordb`.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from driftax._checks import check_int, check_real
from driftax.models.base import DataLikelihood, Target

__all__ = [
    "gaussian",
    "ill_conditioned_gaussian",
    "correlated_gaussian",
    "banana",
    "neals_funnel",
    "gmm9",
    "mog40",
    "double_well",
    "many_well",
    "logistic_regression",
    "get",
    "GALLERY",
    "DATASETS",
]

_LOG_2PI = math.log(2.0 * math.pi)
_DATA_DIR = Path(__file__).resolve().parent / "data"


# --------------------------------------------------------------------------------------------
# input validation
# --------------------------------------------------------------------------------------------
def _seed_arg(seed) -> int:
    return check_int("seed", seed, minimum=0)


def _sampler(draw: Callable[[jax.Array, int], jax.Array], dim: int):
    """Wrap ``draw(key, n)`` with argument checks; the result is ``(n, dim)`` float32."""

    def sample(key, n):
        n = check_int("n", n, minimum=1)
        out = draw(key, n)
        assert out.shape == (n, dim)
        return out

    return sample


def _x_constrain(x):
    return {"x": x}


# --------------------------------------------------------------------------------------------
# Gaussians
# --------------------------------------------------------------------------------------------
def gaussian(mean, cov, *, name: str = "gaussian") -> Target:
    """Multivariate normal ``N(mean, cov)``, normalised.

    ``log p(x) = -½ (x-μ)ᵀ Σ⁻¹ (x-μ) - ½ log det(2π Σ)``, evaluated as ``-½ |W (x-μ)|² - ...``
    with ``W = L⁻¹`` the inverse Cholesky factor of ``Σ = L Lᵀ``, computed once in float64.
    Ground truth: ``mean = μ``, ``cov = Σ``, ``log_Z = 0``, exact draws ``μ + L ε``.

    Raises ``ValueError`` if ``cov`` is not a symmetric positive definite ``(d, d)`` matrix
    matching ``mean`` of shape ``(d,)``, or if anything is not finite.
    """
    mean_np = np.asarray(mean, dtype=np.float64)
    if mean_np.ndim != 1 or mean_np.shape[0] < 1:
        raise ValueError(f"mean must be a non-empty 1-d array, got shape {mean_np.shape}")
    d = mean_np.shape[0]
    cov_np = np.asarray(cov, dtype=np.float64)
    if cov_np.shape != (d, d):
        raise ValueError(f"cov must have shape ({d}, {d}) to match mean, got {cov_np.shape}")
    if not (np.all(np.isfinite(mean_np)) and np.all(np.isfinite(cov_np))):
        raise ValueError("mean and cov must be finite")
    scale = max(float(np.max(np.abs(cov_np))), np.finfo(np.float64).tiny)
    if not np.allclose(cov_np, cov_np.T, rtol=1e-6, atol=1e-9 * scale):
        raise ValueError("cov must be symmetric")
    cov_np = 0.5 * (cov_np + cov_np.T)
    try:
        chol = np.linalg.cholesky(cov_np)
    except np.linalg.LinAlgError:
        eig_min = float(np.linalg.eigvalsh(cov_np)[0])
        raise ValueError(
            f"cov must be positive definite (smallest eigenvalue {eig_min:.3g})"
        ) from None
    if np.any(np.diag(chol) <= 0):
        raise ValueError("cov must be positive definite")
    inv_chol = np.linalg.inv(chol)
    half_logdet = float(np.sum(np.log(np.diag(chol))))
    const = -half_logdet - 0.5 * d * _LOG_2PI

    mu = jnp.asarray(mean_np, dtype=jnp.float32)
    W = jnp.asarray(inv_chol, dtype=jnp.float32)
    L = jnp.asarray(chol, dtype=jnp.float32)

    def logdensity_fn(x):
        z = W @ (x - mu)
        return -0.5 * jnp.dot(z, z) + const

    def draw(key, n):
        eps = jax.random.normal(key, (n, d), dtype=jnp.float32)
        return mu + eps @ L.T

    def init_fn(key):  # centred on the mean, unit spread: a start that is neither exact nor lost
        return mu + jax.random.normal(key, (d,), dtype=jnp.float32)

    return Target(
        logdensity_fn=logdensity_fn, dim=d, name=name, constrain=_x_constrain, init_fn=init_fn,
        mean=mean_np, cov=cov_np, log_Z=0.0, sample=_sampler(draw, d),
    )


def _haar_orthogonal(rng: np.random.Generator, d: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def ill_conditioned_gaussian(
    dim: int = 10, condition_number: float = 1e3, seed: int = 0, *, rotate: bool = True
) -> Target:
    """Zero-mean Gaussian whose covariance has condition number ``condition_number``.

    ``Σ = Q diag(λ) Qᵀ`` with eigenvalues ``λ_i = κ^{-(i-1)/(d-1)}``, log-spaced from 1 down to
    ``1/κ`` (so the widest direction has unit variance), and ``Q`` a Haar-random rotation drawn from
    ``seed`` (the identity when ``rotate=False``: an axis-aligned ill-conditioned target).
    """
    dim = check_int("dim", dim)
    kappa = check_real("condition_number", condition_number, positive=True)
    if kappa < 1:
        raise ValueError(f"condition_number must be >= 1, got {kappa}")
    seed = _seed_arg(seed)
    if not isinstance(rotate, bool):
        raise TypeError(f"rotate must be a bool, got {type(rotate).__name__}")
    if dim == 1:
        eig = np.ones(1)
    else:
        eig = kappa ** (-np.arange(dim) / (dim - 1))
    q = _haar_orthogonal(np.random.default_rng(seed), dim) if rotate else np.eye(dim)
    cov = (q * eig) @ q.T
    return gaussian(np.zeros(dim), cov, name=f"ill_conditioned_gaussian_{dim}d")


def correlated_gaussian(dim: int = 10, rho: float | None = None, *, seed: int | None = None) -> Target:
    """Zero-mean Gaussian with unit variances and correlations.

    With ``rho``: equicorrelated, ``Σ = (1-ρ) I + ρ 11ᵀ``, valid for ``-1/(d-1) < ρ < 1``.
    Otherwise (``seed``, default 0): a random correlation matrix, the Wishart-type
    ``S = G Gᵀ / (2d) + 0.05 I`` with ``G`` a ``(d, 2d)`` standard normal matrix, rescaled to unit
    diagonal (condition numbers of a few tens). Pass one of ``rho`` and ``seed``, not both.
    """
    dim = check_int("dim", dim)
    if rho is not None and seed is not None:
        raise ValueError("pass either rho or seed to correlated_gaussian, not both")
    if rho is not None:
        rho = check_real("rho", rho)
        low = -1.0 / (dim - 1) if dim > 1 else -math.inf
        if not (low < rho < 1.0):
            raise ValueError(f"rho must lie in ({low:.4g}, 1) for dim={dim}, got {rho}")
        cov = (1.0 - rho) * np.eye(dim) + rho * np.ones((dim, dim))
        name = f"correlated_gaussian_{dim}d_rho{rho:g}"
    else:
        seed = _seed_arg(0 if seed is None else seed)
        rng = np.random.default_rng(seed)
        g = rng.standard_normal((dim, 2 * dim))
        s = g @ g.T / (2 * dim) + 0.05 * np.eye(dim)
        sd = np.sqrt(np.diag(s))
        cov = s / np.outer(sd, sd)
        name = f"correlated_gaussian_{dim}d"
    return gaussian(np.zeros(dim), cov, name=name)


# --------------------------------------------------------------------------------------------
# banana and funnel
# --------------------------------------------------------------------------------------------
def banana(dim: int = 2, b: float = 0.1, sigma: float = 10.0) -> Target:
    """Haario's twisted Gaussian ("banana"), normalised.

    Haario, Saksman & Tamminen (1999), "Adaptive proposal distribution for random walk Metropolis".
    ``x = φ_b⁻¹(z)`` with ``z ~ N(0, diag(σ², 1, ..., 1))`` and
    ``φ_b(x) = (x_1, x_2 + b (x_1² - σ²), x_3, ..., x_d)`` (unit Jacobian), so

        log p(x) = log N(x_1; 0, σ²) + log N(x_2 + b (x_1² - σ²); 0, 1) + Σ_{i>2} log N(x_i; 0, 1).

    Closed forms: ``E[x] = 0``; ``Cov[x] = diag(σ², 1 + 2 b² σ⁴, 1, ..., 1)`` (``Cov(x_1, x_2) =
    -b E[x_1³] = 0``, ``Var(x_2) = 1 + b² Var(x_1²)``); ``log_Z = 0``. Haario's "moderately" and
    "strongly" twisted settings are ``b = 0.03`` and ``b = 0.1`` with ``σ = 10``.
    """
    dim = check_int("dim", dim, minimum=2)
    b = check_real("b", b)
    sigma = check_real("sigma", sigma, positive=True)
    s2 = sigma * sigma
    const = -0.5 * dim * _LOG_2PI - math.log(sigma)

    def logdensity_fn(x):
        y2 = x[1] + b * (x[0] ** 2 - s2)
        return const - 0.5 * (x[0] ** 2 / s2 + y2 ** 2 + jnp.sum(x[2:] ** 2))

    def draw(key, n):
        z = jax.random.normal(key, (n, dim), dtype=jnp.float32)
        x1 = sigma * z[:, 0]
        x2 = z[:, 1] - b * (x1 ** 2 - s2)
        return jnp.concatenate([x1[:, None], x2[:, None], z[:, 2:]], axis=1)

    var = np.ones(dim)
    var[0], var[1] = s2, 1.0 + 2.0 * b * b * s2 * s2
    return Target(
        logdensity_fn=logdensity_fn, dim=dim, name=f"banana_{dim}d", constrain=_x_constrain,
        mean=np.zeros(dim), cov=np.diag(var), log_Z=0.0, sample=_sampler(draw, dim),
    )


def neals_funnel(dim: int = 10, scale: float = 3.0) -> Target:
    """Neal's funnel, normalised.

    Neal (2003), "Slice sampling", Annals of Statistics. ``x_1 ~ N(0, s²)`` and, given ``x_1``,
    ``x_i ~ N(0, e^{x_1})`` for ``i = 2..d``:

        log p(x) = log N(x_1; 0, s²) - ½ (d-1) (log 2π + x_1) - ½ e^{-x_1} Σ_{i≥2} x_i².

    Closed forms: ``E[x] = 0``; ``Cov[x] = diag(s², e^{s²/2}, ..., e^{s²/2})`` (log-normal mean;
    cross-covariances vanish by symmetry); ``log_Z = 0``. The default ``d = 10, s = 3`` is the
    funnel of the PIS/DIS benchmarks.
    """
    dim = check_int("dim", dim, minimum=2)
    scale = check_real("scale", scale, positive=True)
    const = -0.5 * _LOG_2PI - math.log(scale) - 0.5 * (dim - 1) * _LOG_2PI

    def logdensity_fn(x):
        v = x[0]
        return (const - 0.5 * v ** 2 / scale ** 2 - 0.5 * (dim - 1) * v
                - 0.5 * jnp.exp(-v) * jnp.sum(x[1:] ** 2))

    def draw(key, n):
        z = jax.random.normal(key, (n, dim), dtype=jnp.float32)
        v = scale * z[:, :1]
        return jnp.concatenate([v, jnp.exp(0.5 * v) * z[:, 1:]], axis=1)

    var = np.full(dim, math.exp(0.5 * scale * scale))
    var[0] = scale * scale
    return Target(
        logdensity_fn=logdensity_fn, dim=dim, name=f"funnel_{dim}d", constrain=_x_constrain,
        mean=np.zeros(dim), cov=np.diag(var), log_Z=0.0, sample=_sampler(draw, dim),
    )


# --------------------------------------------------------------------------------------------
# Gaussian mixtures
# --------------------------------------------------------------------------------------------
def _isotropic_mixture(means: np.ndarray, variance: float, name: str, init_box: float) -> Target:
    """Equal-weight mixture ``(1/K) Σ_k N(x; m_k, v I)``, normalised, with its ground truth."""
    k, d = means.shape
    m = jnp.asarray(means, dtype=jnp.float32)
    sd = math.sqrt(variance)
    const = -math.log(k) - 0.5 * d * (_LOG_2PI + math.log(variance))

    def logdensity_fn(x):
        sq = jnp.sum((x[None, :] - m) ** 2, axis=1)
        return jax.scipy.special.logsumexp(-0.5 * sq / variance) + const

    def draw(key, n):
        kc, kn = jax.random.split(key)
        comp = jax.random.randint(kc, (n,), 0, k)
        return m[comp] + sd * jax.random.normal(kn, (n, d), dtype=jnp.float32)

    def init_fn(key):  # over-dispersed: uniform on the box that holds every mode
        return jax.random.uniform(key, (d,), jnp.float32, -init_box, init_box)

    centred = means - means.mean(axis=0)
    cov = variance * np.eye(d) + centred.T @ centred / k
    return Target(
        logdensity_fn=logdensity_fn, dim=d, name=name, constrain=_x_constrain, init_fn=init_fn,
        mean=means.mean(axis=0), cov=cov, log_Z=0.0, sample=_sampler(draw, d),
    )


def gmm9(spacing: float = 5.0, variance: float = 0.3) -> Target:
    """GMM-9: nine equal-weight 2-d Gaussians on the grid ``{-s, 0, s}²``, variance ``v`` each.

    ``p(x) = (1/9) Σ_{a,b ∈ {-s,0,s}} N(x; (a, b), v I)`` (normalised). As in the PIS paper
    (Zhang & Chen, ICLR 2022) and DIS / log-variance paper (Berner, Richter & Ullrich; Richter &
    Berner, ICLR 2024): ``s = 5``, ``v = 0.3``. Ground truth: ``E[x] = 0``,
    ``Cov[x] = (v + 2s²/3) I``, ``log_Z = 0``. ``init_fn`` is uniform on ``[-1.5s, 1.5s]²``.
    """
    spacing = check_real("spacing", spacing, positive=True)
    variance = check_real("variance", variance, positive=True)
    grid = np.array([-spacing, 0.0, spacing])
    means = np.stack(np.meshgrid(grid, grid, indexing="ij"), axis=-1).reshape(9, 2)
    return _isotropic_mixture(means, variance, "gmm9", 1.5 * spacing)


def mog40(dim: int = 2, *, num_modes: int = 40, loc_scaling: float = 40.0,
          variance: float = 1.0, seed: int = 0) -> Target:
    """MoG-40: ``num_modes`` equal-weight Gaussians with means uniform in ``[-40, 40]^dim``.

    After Midgley et al. (ICLR 2023), "Flow annealed importance sampling bootstrap" (FAB):
    ``p(x) = (1/K) Σ_k N(x; m_k, v I)`` with ``m_k ~ U[-loc_scaling, loc_scaling]^dim`` drawn once
    from ``numpy.random.default_rng(seed)``. Differences from FAB's code, which we cannot
    reproduce without torch: FAB draws the means with ``torch.manual_seed(0)`` and uses component
    scale ``softplus(1) ≈ 1.31``; here the components have unit variance by default (``variance``).
    Ground truth: mean and covariance of the mixture, ``log_Z = 0``, exact draws. ``init_fn`` is
    uniform on the box, so chains start spread over the modes.
    """
    dim = check_int("dim", dim)
    num_modes = check_int("num_modes", num_modes)
    loc_scaling = check_real("loc_scaling", loc_scaling, positive=True)
    variance = check_real("variance", variance, positive=True)
    seed = _seed_arg(seed)
    rng = np.random.default_rng(seed)
    means = rng.uniform(-loc_scaling, loc_scaling, size=(num_modes, dim))
    return _isotropic_mixture(means, variance, f"mog{num_modes}", loc_scaling)


# --------------------------------------------------------------------------------------------
# wells: products of 1-d factors, ground truth by quadrature
# --------------------------------------------------------------------------------------------
class _Factor1D:
    """A 1-d unnormalised density ``exp(f(s))`` tabulated on a fine grid in float64.

    Gives ``log ∫ exp(f)``, the mean and the variance by the trapezoid rule (spectrally accurate
    for smooth, fast-decaying integrands), and inverse-CDF sampling by linear interpolation of the
    cumulative trapezoid (the grid step is ~1e-3, far below Monte-Carlo resolution).
    """

    def __init__(self, logf: Callable[[np.ndarray], np.ndarray], lo: float, hi: float,
                 num: int = 40_001):
        s = np.linspace(lo, hi, num)
        lf = logf(s)
        top = lf.max()
        w = np.exp(lf - top)
        h = s[1] - s[0]
        z = np.trapezoid(w, dx=h)
        self.log_Z = float(top + math.log(z))
        p = w / z
        self.mean = float(np.trapezoid(p * s, dx=h))
        self.var = float(np.trapezoid(p * (s - self.mean) ** 2, dx=h))
        cdf = np.concatenate([[0.0], np.cumsum(0.5 * (p[1:] + p[:-1]) * h)])
        cdf /= cdf[-1]
        cdf32 = cdf.astype(np.float32)
        keep = np.concatenate([[True], np.diff(cdf32) > 0])  # strictly increasing for interp
        self._cdf = jnp.asarray(cdf32[keep])
        self._grid = jnp.asarray(s[keep], dtype=jnp.float32)

    def icdf(self, u):
        return jnp.interp(u, self._cdf, self._grid)


def _quartic_range(delta: float, linear: float = 0.0, quad: float = 1.0) -> float:
    # exp(-(s² - δ)²) < e^{-80} once s² > δ + 9 (for any δ); widen for a linear tilt.
    return math.sqrt(max(delta, 0.0) + 9.0) + 1.0 + abs(linear) + abs(quad)


def double_well(dim: int = 5, m: int | None = None, delta: float = 4.0) -> Target:
    """Double well DW(d, m, δ) of the learned-diffusion sampler benchmarks.

    Richter & Berner (ICLR 2024), "Improved sampling via learned diffusions"; Berner, Richter &
    Ullrich, "An optimal control perspective on diffusion-based generative modeling" (DIS):

        log ρ(x) = -Σ_{i≤m} (x_i² - δ)² - ½ Σ_{i>m} x_i²      (unnormalised; 2^m modes).

    Ground truth (the density factorises): ``log_Z = m log ∫ exp(-(s²-δ)²) ds + (d-m)/2 log 2π``
    (e.g. -0.541056 for (5, 5, 4) and 42.817243 for (50, 5, 2)), ``E[x] = 0``, diagonal
    covariance (the 1-d factor's second moment on the first ``m`` axes, 1 elsewhere), all from
    float64 quadrature; exact draws by inverse CDF of the 1-d factor. ``m`` defaults to ``dim``.
    """
    dim = check_int("dim", dim)
    m = dim if m is None else check_int("m", m)
    if m > dim:
        raise ValueError(f"m must be <= dim={dim}, got m={m}")
    delta = check_real("delta", delta)
    r = _quartic_range(delta)
    factor = _Factor1D(lambda s: -(s * s - delta) ** 2, -r, r)
    log_Z = m * factor.log_Z + 0.5 * (dim - m) * _LOG_2PI

    def logdensity_fn(x):
        xw = x[:m]
        return -jnp.sum((xw ** 2 - delta) ** 2) - 0.5 * jnp.sum(x[m:] ** 2)

    def draw(key, n):
        ku, kz = jax.random.split(key)
        wells = factor.icdf(jax.random.uniform(ku, (n, m), jnp.float32))
        rest = jax.random.normal(kz, (n, dim - m), jnp.float32)
        return jnp.concatenate([wells, rest], axis=1)

    var = np.ones(dim)
    var[:m] = factor.var + factor.mean ** 2  # the factor is symmetric: mean 0 up to rounding
    return Target(
        logdensity_fn=logdensity_fn, dim=dim, name=f"double_well_{dim}d_{m}m_{delta:g}",
        constrain=_x_constrain, mean=np.zeros(dim), cov=np.diag(var), log_Z=log_Z,
        sample=_sampler(draw, dim),
    )


def many_well(dim: int = 32) -> Target:
    """Many-well of the FAB paper: a product of ``dim/2`` two-dimensional double wells.

    Midgley et al. (ICLR 2023), "Flow annealed importance sampling bootstrap" (after Noé et al.
    2019, Boltzmann generators). With ``x = (x_1, y_1, ..., x_{d/2}, y_{d/2})``,

        log ρ(x) = Σ_j [ -x_j⁴ + 6 x_j² + ½ x_j - ½ y_j² ]      (unnormalised; 2^{d/2} modes).

    Ground truth: ``log_Z = (d/2) [log ∫ exp(-s⁴ + 6s² + s/2) ds + ½ log 2π]`` (164.6957 for
    d = 32), the mean and the diagonal covariance from float64 quadrature of the 1-d factor, exact
    draws by its inverse CDF.
    """
    dim = check_int("dim", dim, minimum=2)
    if dim % 2:
        raise ValueError(f"dim must be even for many_well (pairs of coordinates), got {dim}")
    k = dim // 2
    r = _quartic_range(6.0, 0.5)
    factor = _Factor1D(lambda s: -s ** 4 + 6.0 * s ** 2 + 0.5 * s, -r, r)
    log_Z = k * (factor.log_Z + 0.5 * _LOG_2PI)

    def logdensity_fn(x):
        xy = x.reshape(k, 2)
        a, y = xy[:, 0], xy[:, 1]
        return jnp.sum(-a ** 4 + 6.0 * a ** 2 + 0.5 * a - 0.5 * y ** 2)

    def draw(key, n):
        ku, kz = jax.random.split(key)
        a = factor.icdf(jax.random.uniform(ku, (n, k), jnp.float32))
        y = jax.random.normal(kz, (n, k), jnp.float32)
        return jnp.stack([a, y], axis=-1).reshape(n, dim)

    mean = np.tile([factor.mean, 0.0], k)
    var = np.tile([factor.var, 1.0], k)
    return Target(
        logdensity_fn=logdensity_fn, dim=dim, name=f"many_well_{dim}d", constrain=_x_constrain,
        mean=mean, cov=np.diag(var), log_Z=log_Z, sample=_sampler(draw, dim),
    )


# --------------------------------------------------------------------------------------------
# Bayesian logistic regression
# --------------------------------------------------------------------------------------------
DATASETS = {
    # name: (file under driftax/models/data, description)
    "breast_cancer": (
        "breast_cancer.csv",
        "Breast Cancer Wisconsin (Diagnostic), 569 rows x 30 features, label 1 = benign "
        "(UCI, CC BY 4.0; the copy shipped with scikit-learn, BSD-3-Clause)",
    ),
}


def _load_dataset(name: str) -> tuple[np.ndarray, np.ndarray]:
    fname = DATASETS[name][0]
    with open(_DATA_DIR / fname, newline="") as fh:
        rows = list(csv.reader(fh))
    n, p = int(rows[0][0]), int(rows[0][1])
    arr = np.asarray(rows[1:], dtype=np.float64)
    if arr.shape != (n, p + 1):
        raise RuntimeError(f"{fname}: expected {n} rows x {p + 1} columns, got {arr.shape}")
    return arr[:, :p], arr[:, p]


def logistic_regression(dataset="breast_cancer", prior_scale: float = 1.0) -> Target:
    """Bayesian logistic regression with a Gaussian prior, on standardised features.

    Features are standardised (mean 0, sd 1 per column) and an intercept column of ones is
    prepended, giving the design ``X ∈ R^{n×(p+1)}``. With labels ``y_i ∈ {0, 1}``:

        log p(β | y) = Σ_i [y_i log σ(x_iᵀβ) + (1-y_i) log σ(-x_iᵀβ)]
                       - |β|² / (2 s²) - (p+1)/2 log(2π s²)       (+ const, unnormalised),

    ``s = prior_scale``. No closed-form ground truth (``mean`` is None): compare with NUTS.
    ``dataset`` is a name in `DATASETS` (``"breast_cancer"``, shipped in ``driftax/models/data``)
    or a pair ``(X, y)`` of arrays. ``constrain`` returns ``{"intercept": β_0, "beta": β_{1:}}``.
    """
    prior_scale = check_real("prior_scale", prior_scale, positive=True)
    if isinstance(dataset, str):
        if dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {sorted(DATASETS)} or a pair (X, y), got {dataset!r}")
        features, labels = _load_dataset(dataset)
        name = f"logistic_regression_{dataset}"
    elif isinstance(dataset, (tuple, list)) and len(dataset) == 2:
        features = np.asarray(dataset[0], dtype=np.float64)
        labels = np.asarray(dataset[1], dtype=np.float64)
        name = "logistic_regression"
    else:
        raise TypeError("dataset must be a dataset name or a pair (X, y) of arrays")
    if features.ndim != 2 or features.shape[0] < 1 or features.shape[1] < 1:
        raise ValueError(f"dataset X must be a non-empty 2-d array (n, p), got shape {features.shape}")
    if labels.shape != (features.shape[0],):
        raise ValueError(f"dataset y must have shape ({features.shape[0]},), got {labels.shape}")
    if not np.all(np.isfinite(features)):
        raise ValueError("dataset X must be finite")
    if not np.all((labels == 0) | (labels == 1)):
        raise ValueError("dataset y must contain only 0 and 1")
    sd = features.std(axis=0)
    sd[sd == 0] = 1.0
    xs = (features - features.mean(axis=0)) / sd
    design = np.concatenate([np.ones((xs.shape[0], 1)), xs], axis=1)
    dim = design.shape[1]
    X = jnp.asarray(design, dtype=jnp.float32)
    y = jnp.asarray(labels, dtype=jnp.float32)
    const = -0.5 * dim * (_LOG_2PI + 2.0 * math.log(prior_scale))

    def logdensity_fn(beta):
        eta = X @ beta
        loglik = jnp.sum(y * jax.nn.log_sigmoid(eta) + (1.0 - y) * jax.nn.log_sigmoid(-eta))
        return loglik - 0.5 * jnp.dot(beta, beta) / prior_scale ** 2 + const

    def constrain(beta):
        return {"intercept": beta[0], "beta": beta[1:]}

    def loglik_fn(beta, datum):  # one row: y log σ(xᵀβ) + (1-y) log σ(-xᵀβ)
        x_i, y_i = datum
        eta = x_i @ beta
        return y_i * jax.nn.log_sigmoid(eta) + (1.0 - y_i) * jax.nn.log_sigmoid(-eta)

    def logprior_fn(beta):
        return -0.5 * jnp.dot(beta, beta) / prior_scale ** 2 + const

    return Target(logdensity_fn=logdensity_fn, dim=dim, name=name, constrain=constrain,
                  data_likelihood=DataLikelihood(loglik_fn, (X, y), logprior_fn))


# --------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------
def _gaussian_entry(mean=None, cov=None, *, dim: int = 10) -> Target:
    """``gaussian`` by name: ``N(mean, cov)`` if given, else the standard normal in ``dim``."""
    if (mean is None) != (cov is None):
        raise ValueError("pass both mean and cov, or neither (standard normal of dimension dim)")
    if mean is None:
        dim = check_int("dim", dim)
        return gaussian(np.zeros(dim), np.eye(dim), name=f"gaussian_{dim}d")
    return gaussian(mean, cov)


def _posteriordb_entry(posterior: str) -> Callable[..., Target]:
    def build(root=None) -> Target:
        from driftax.models import posteriordb  # lazy: reads the shared folder

        return posteriordb.load(posterior, root=root)[0]

    build.__name__ = f"posteriordb_{posterior}"
    build.__doc__ = f"The posteriordb posterior {posterior!r} (see driftax.models.posteriordb.load)."
    return build


GALLERY: dict[str, Callable[..., Target]] = {
    "gaussian": _gaussian_entry,
    "ill_conditioned_gaussian": ill_conditioned_gaussian,
    "correlated_gaussian": correlated_gaussian,
    "banana": banana,
    "funnel": neals_funnel,
    "neals_funnel": neals_funnel,
    "gmm9": gmm9,
    "mog40": mog40,
    "double_well": double_well,
    "many_well": many_well,
    "logistic_regression": logistic_regression,
    "eight_schools": _posteriordb_entry("eight_schools-eight_schools_noncentered"),
    "eight_schools-eight_schools_noncentered": _posteriordb_entry("eight_schools-eight_schools_noncentered"),
    "arK": _posteriordb_entry("arK-arK"),
    "arK-arK": _posteriordb_entry("arK-arK"),
    "garch11": _posteriordb_entry("garch-garch11"),
    "garch-garch11": _posteriordb_entry("garch-garch11"),
    "gp_pois_regr": _posteriordb_entry("gp_pois_regr-gp_pois_regr"),
    "gp_pois_regr-gp_pois_regr": _posteriordb_entry("gp_pois_regr-gp_pois_regr"),
    "arma11": _posteriordb_entry("arma-arma11"),
    "arma-arma11": _posteriordb_entry("arma-arma11"),
    "blr": _posteriordb_entry("sblrc-blr"),
    "sblrc-blr": _posteriordb_entry("sblrc-blr"),
    "diamonds": _posteriordb_entry("diamonds-diamonds"),
    "diamonds-diamonds": _posteriordb_entry("diamonds-diamonds"),
    "hmm_example": _posteriordb_entry("hmm_example-hmm_example"),
    "hmm_example-hmm_example": _posteriordb_entry("hmm_example-hmm_example"),
    "kidscore_interaction": _posteriordb_entry("kidiq-kidscore_interaction"),
    "kidiq-kidscore_interaction": _posteriordb_entry("kidiq-kidscore_interaction"),
    "logearn_interaction": _posteriordb_entry("earnings-logearn_interaction"),
    "earnings-logearn_interaction": _posteriordb_entry("earnings-logearn_interaction"),
    "logmesquite_logvash": _posteriordb_entry("mesquite-logmesquite_logvash"),
    "mesquite-logmesquite_logvash": _posteriordb_entry("mesquite-logmesquite_logvash"),
    "low_dim_gauss_mix": _posteriordb_entry("low_dim_gauss_mix-low_dim_gauss_mix"),
    "low_dim_gauss_mix-low_dim_gauss_mix": _posteriordb_entry("low_dim_gauss_mix-low_dim_gauss_mix"),
    "nes": _posteriordb_entry("nes1996-nes"),
    "nes1996-nes": _posteriordb_entry("nes1996-nes"),
}


def get(name: str, **kwargs) -> Target:
    """Build the gallery target ``name`` with keyword arguments ``kwargs``.

    Names: the keys of `GALLERY` (gallery targets and the thirteen posteriordb posteriors). A
    posteriordb name raises ``FileNotFoundError`` when the shared data folder is absent.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a string, got {type(name).__name__}")
    if name not in GALLERY:
        raise ValueError(f"unknown target name {name!r}; known: {', '.join(sorted(GALLERY))}")
    return GALLERY[name](**kwargs)
