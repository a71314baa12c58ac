r"""State-space models (hidden Markov models with continuous states) and their exact references.

A `StateSpaceModel` describes

.. math::
    x_0 \sim \eta_\theta, \qquad x_t \mid x_{t-1} \sim q_\theta(t;\, x_{t-1}, \cdot), \qquad
    y_t \mid x_t \sim g_\theta(t;\, x_t, \cdot), \qquad t = 0, \dots, T-1,

with one observation per state (``ys[t]`` observes ``xs[t]``, ``x_0`` included). Parameters ``θ``
are a dict of arrays (a pytree) with a support per entry (``"real"``, ``"positive"``,
``"interval"`` = (-1, 1), ``"cov"`` = symmetric positive definite) so learning can move in an
unconstrained space (`StateSpaceModel.unconstrain` / `constrain`). Log-densities are written for
one particle and are differentiable in ``θ`` (scores by ``jax.grad`` for Fisher's identity); the
samplers take a batch of particles. ``transition_log_bound(θ, t)`` is an upper bound of
``log q_θ(t; x, x')`` over ``x, x'``, for accept-reject backward draws (Douc et al. 2011).

Models: `linear_gaussian` (multivariate; with the Kalman filter, the Rauch-Tung-Striebel smoother,
the exact log-likelihood and exact smoothing paths, all in float64 NumPy: they are the references
the particle methods are tested against), `stochastic_volatility` and `nonlinear_growth`
(Kitagawa 1996; Gordon, Salmond, Smith 1993).

Missing observations: a row of ``ys`` with any NaN is treated as unobserved (``g ≡ 1``) only for a
model built with ``allow_missing=True``; otherwise `check_observations` rejects NaN.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from driftax._checks import check_int

__all__ = ["StateSpaceModel", "linear_gaussian", "stochastic_volatility", "nonlinear_growth",
           "KalmanFilterResult", "KalmanSmootherResult", "kalman_filter", "kalman_smoother",
           "kalman_loglik", "kalman_sample_paths", "CONSTRAINTS"]

CONSTRAINTS = ("real", "positive", "interval", "cov")
_LOG2PI = math.log(2.0 * math.pi)


# --- parameter supports ---------------------------------------------------------------------
def _to_unconstrained(kind: str, v):
    if kind == "real":
        return v
    if kind == "positive":
        return jnp.log(v)
    if kind == "interval":
        return jnp.arctanh(v)
    # cov: lower Cholesky factor with log-diagonal (the strict upper triangle is unused, kept at 0)
    L = jnp.linalg.cholesky(v)
    d = v.shape[-1]
    return jnp.tril(L, -1) + jnp.diag(jnp.log(jnp.diag(L))) * jnp.eye(d)


def _to_constrained(kind: str, u):
    if kind == "real":
        return u
    if kind == "positive":
        return jnp.exp(u)
    if kind == "interval":
        return jnp.tanh(u)
    L = jnp.tril(u, -1) + jnp.diag(jnp.exp(jnp.diag(u)))
    return L @ L.T


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


@dataclasses.dataclass(frozen=True, eq=False)
class StateSpaceModel:
    """A state-space model: samplers and log-densities, parameters ``θ`` and their supports.

    Callables (``θ`` a dict like ``theta``; ``t`` the time index of the *new* state; ``x`` one
    state of shape ``(state_dim,)``, ``xs`` a batch ``(n, state_dim)``):

    - ``init_sample(key, θ, n) -> (n, d)``; ``init_logpdf(θ, x) -> ()``
    - ``transition_sample(key, θ, t, xs) -> (n, d)`` draws ``x_t`` given ``x_{t-1}``;
      ``transition_logpdf(θ, t, x_prev, x) -> ()``
    - ``obs_sample(key, θ, t, xs) -> (n, p)``; ``obs_logpdf(θ, t, x, y) -> ()``
    - ``transition_log_bound(θ, t) -> ()`` (optional): ``sup log q_θ(t; ·, ·)``.

    Build one with `linear_gaussian`, `stochastic_volatility`, `nonlinear_growth`, or directly.
    """

    name: str
    state_dim: int
    obs_dim: int
    theta: Mapping[str, jax.Array]
    constraints: Mapping[str, str]
    init_sample: Callable
    init_logpdf: Callable
    transition_sample: Callable
    transition_logpdf: Callable
    obs_sample: Callable
    obs_logpdf: Callable
    transition_log_bound: Callable | None = None
    allow_missing: bool = False
    exact: str | None = None  # "kalman" where `kalman_*` give the exact smoothing law

    def __post_init__(self):
        check_int("state_dim", self.state_dim, 1)
        check_int("obs_dim", self.obs_dim, 1)
        if set(self.theta) != set(self.constraints):
            raise ValueError(f"constraints must name every parameter: theta has {sorted(self.theta)}, "
                             f"constraints {sorted(self.constraints)}")
        bad = {k: v for k, v in self.constraints.items() if v not in CONSTRAINTS}
        if bad:
            raise ValueError(f"unknown constraints {bad}; choose from {CONSTRAINTS}")
        object.__setattr__(self, "theta", self.check_theta(self.theta))

    # -- parameters --------------------------------------------------------------------------
    def check_theta(self, theta) -> dict:
        """``theta`` as a dict of float arrays with the model's names, shapes and supports.

        Raises ``TypeError`` (not a mapping, unknown or missing names) or ``ValueError`` (wrong shape,
        non-finite, outside the support) naming the parameter. Traced values pass unchecked.
        """
        if not isinstance(theta, Mapping):
            raise TypeError(f"theta must be a dict of arrays, got {type(theta).__name__}")
        ref = getattr(self, "theta", None)
        names = set(self.constraints)
        if set(theta) != names:
            raise TypeError(f"theta must have exactly the parameters {sorted(names)}, got {sorted(theta)}")
        out = {}
        for k in sorted(names):
            v = theta[k]
            if not _is_concrete(v):
                out[k] = v
                continue
            a = np.asarray(v, dtype=np.float64)
            if ref is not None and a.shape != np.shape(ref[k]):
                raise ValueError(f"theta[{k!r}] must have shape {np.shape(ref[k])}, got {a.shape}")
            if not np.all(np.isfinite(a)):
                raise ValueError(f"theta[{k!r}] must be finite, got {a}")
            kind = self.constraints[k]
            if kind == "positive" and not np.all(a > 0):
                raise ValueError(f"theta[{k!r}] must be positive, got {a}")
            if kind == "interval" and not np.all(np.abs(a) < 1):
                raise ValueError(f"theta[{k!r}] must lie in (-1, 1), got {a}")
            if kind == "cov":
                if a.ndim != 2 or a.shape[0] != a.shape[1] or not np.allclose(a, a.T, rtol=1e-6, atol=1e-12):
                    raise ValueError(f"theta[{k!r}] must be a symmetric square matrix, got shape {a.shape}")
                if np.linalg.eigvalsh(a).min() <= 0:
                    raise ValueError(f"theta[{k!r}] must be positive definite")
            out[k] = jnp.asarray(a, dtype=jnp.result_type(float))
        return out

    def with_theta(self, theta) -> "StateSpaceModel":
        """The same model with parameters ``theta`` (checked); entries not given keep their values."""
        if not isinstance(theta, Mapping):
            raise TypeError(f"theta must be a dict of arrays, got {type(theta).__name__}")
        unknown = set(theta) - set(self.theta)
        if unknown:
            raise TypeError(f"unknown parameters {sorted(unknown)}; the model has {sorted(self.theta)}")
        return dataclasses.replace(self, theta=self.check_theta({**self.theta, **theta}))

    def unconstrain(self, theta) -> dict:
        """``θ`` in the unconstrained space (log for positive, atanh for (-1, 1), log-Cholesky for covariances)."""
        return {k: _to_unconstrained(self.constraints[k], jnp.asarray(v)) for k, v in theta.items()}

    def constrain(self, u) -> dict:
        """Inverse of `unconstrain`."""
        return {k: _to_constrained(self.constraints[k], jnp.asarray(v)) for k, v in u.items()}

    # -- observations ------------------------------------------------------------------------
    def check_observations(self, ys, name: str = "ys") -> np.ndarray:
        """``ys`` as a float array ``(T, obs_dim)`` (a 1-D array is ``(T,)`` with ``obs_dim = 1``).

        NaN marks a missing row only when the model allows it; infinities are always rejected.
        """
        try:
            a = np.asarray(ys, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise TypeError(f"{name} must be a numeric array, got {type(ys).__name__}") from e
        if a.ndim == 1 and self.obs_dim == 1:
            a = a[:, None]
        if a.ndim != 2 or a.shape[1] != self.obs_dim:
            raise ValueError(f"{name} must have shape (T, {self.obs_dim}) for model {self.name!r}, got {a.shape}")
        if a.shape[0] < 2:
            raise ValueError(f"{name} must have at least 2 time steps, got {a.shape[0]}")
        if np.any(np.isinf(a)):
            raise ValueError(f"{name} has infinite entries")
        if np.any(np.isnan(a)) and not self.allow_missing:
            raise ValueError(f"{name} has {int(np.isnan(a).any(1).sum())} rows with NaN and model {self.name!r} "
                             "does not treat NaN as missing (build it with allow_missing=True)")
        if np.all(np.isnan(a)):
            raise ValueError(f"{name} has no observed row")
        return a

    def log_g(self, theta, t, x, y):
        """``log g_θ(t; x, y)``, 0 for a missing row (NaN) when the model allows missing data.

        NaN is replaced before evaluating so gradients stay finite.
        """
        if not self.allow_missing:
            return self.obs_logpdf(theta, t, x, y)
        miss = jnp.any(jnp.isnan(y))
        val = self.obs_logpdf(theta, t, x, jnp.where(jnp.isnan(y), 0.0, y))
        return jnp.where(miss, 0.0, val)

    def simulate(self, seed, num_steps: int, theta=None):
        """``(xs (T, d), ys (T, p))`` drawn from the model (``seed`` an int or a ``jax.random`` key)."""
        num_steps = check_int("num_steps", num_steps, 2)
        theta = self.theta if theta is None else self.check_theta(theta)
        key = jax.random.key(seed) if isinstance(seed, (int, np.integer)) else seed
        xs, ys = _simulator(self, num_steps)(key, theta)
        return np.asarray(xs), np.asarray(ys)


@functools.lru_cache(maxsize=64)
def _simulator(model: StateSpaceModel, num_steps: int):
    """`StateSpaceModel.simulate` as one compiled program per ``(model, T)``, cached: run eagerly, its
    operations each compiled apart (about 1.2 s of CPU per new length, 0.2 s jitted)."""

    def run(key, theta):
        k0, kx, ky = jax.random.split(key, 3)
        x0 = model.init_sample(k0, theta, 1)

        def step(x, inp):
            k, t = inp
            x = model.transition_sample(k, theta, t, x)
            return x, x[0]

        _, rest = jax.lax.scan(step, x0, (jax.random.split(kx, num_steps - 1), jnp.arange(1, num_steps)))
        xs = jnp.concatenate([x0, rest], 0)
        ys = jax.vmap(lambda k, t, x: model.obs_sample(k, theta, t, x[None])[0])(
            jax.random.split(ky, num_steps), jnp.arange(num_steps), xs)
        return xs, ys

    return jax.jit(run)


# --- Gaussian helpers -------------------------------------------------------------------------
_UNROLL_MAX = 8


def _matvec(M, v):
    # ``M @ v`` as ``Σ_j M[:, j] v_j`` unrolled over the (static, small) columns: elementwise ops only,
    # which XLA fuses across the 10^4-10^6 particle pairs of a backward step (on CPU about 2x faster
    # than a batched matrix-vector product at d = 3). Not ``jnp.sum(M * v[None, :], axis=1)``: under
    # vmap over a gathered batch, XLA CPU (jax 0.10) miscompiled that reduction for d = 3 at some batch
    # sizes (wrong log-densities beyond row ~11,000 of 18,000 pairs), which biased PaRIS in 3-d; the
    # regression test is tests/models/test_ssm.py::test_batched_log_densities_are_right_at_scale.
    if M.shape[1] > _UNROLL_MAX:
        return M @ v
    out = M[:, 0] * v[0]
    for j in range(1, M.shape[1]):
        out = out + M[:, j] * v[j]
    return out


def _mvn_logpdf(x, mean, cov):
    # L^{-1} from the covariance alone: under vmap over particles it is computed once per call, and
    # the per-particle work is one small matrix-vector product (a batched triangular solve of tiny
    # systems is several times slower on CPU).
    d = x.shape[-1]
    L = jnp.linalg.cholesky(cov)
    Linv = jax.scipy.linalg.solve_triangular(L, jnp.eye(d, dtype=L.dtype), lower=True)
    half_logdet = jnp.sum(jnp.log(jnp.diag(L)))
    # materialise the factor once: without the barrier XLA fuses the (expanded) triangular solve into
    # every element of a particle-pair reduction and recomputes it there (measured 60x slower)
    Linv, half_logdet = jax.lax.optimization_barrier((Linv, half_logdet))
    z = _matvec(Linv, x - mean)
    return -0.5 * jnp.sum(z * z) - half_logdet - 0.5 * d * _LOG2PI


def _mvn_sample(key, mean, cov, n):
    L = jnp.linalg.cholesky(cov)
    z = jax.random.normal(key, (n, cov.shape[0]), dtype=jnp.result_type(float))
    return mean + z @ L.T


# --- linear Gaussian --------------------------------------------------------------------------
def linear_gaussian(A, C, Q, R, m0=None, P0=None, *, allow_missing: bool = False,
                    name: str = "linear_gaussian") -> StateSpaceModel:
    r"""The linear-Gaussian model ``x_0 ~ N(m0, P0)``, ``x_t = A x_{t-1} + N(0, Q)``, ``y_t = C x_t + N(0, R)``.

    Parameters ``A (d, d)``, ``C (p, d)`` real; ``Q (d, d)``, ``R (p, p)``, ``P0 (d, d)`` covariances;
    ``m0 (d,)`` real (default 0; ``P0`` defaults to ``Q``). The transition density is bounded by
    ``(2π)^{-d/2} det(Q)^{-1/2}``. `kalman_smoother` gives its exact smoothing law.
    """
    A = np.atleast_2d(np.asarray(A, dtype=np.float64))
    d = A.shape[0]
    C = np.atleast_2d(np.asarray(C, dtype=np.float64))
    Q, R = np.atleast_2d(np.asarray(Q, np.float64)), np.atleast_2d(np.asarray(R, np.float64))
    m0 = np.zeros(d) if m0 is None else np.atleast_1d(np.asarray(m0, np.float64))
    P0 = Q if P0 is None else np.atleast_2d(np.asarray(P0, np.float64))
    if A.shape != (d, d):
        raise ValueError(f"A must be square, got {A.shape}")
    if C.ndim != 2 or C.shape[1] != d:
        raise ValueError(f"C must have shape (p, {d}), got {C.shape}")
    p = C.shape[0]
    for nm, v, s in (("Q", Q, (d, d)), ("R", R, (p, p)), ("P0", P0, (d, d)), ("m0", m0, (d,))):
        if v.shape != s:
            raise ValueError(f"{nm} must have shape {s}, got {v.shape}")
    theta = {"A": A, "C": C, "Q": Q, "R": R, "m0": m0, "P0": P0}
    constraints = {"A": "real", "C": "real", "Q": "cov", "R": "cov", "m0": "real", "P0": "cov"}

    def init_sample(key, th, n):
        return _mvn_sample(key, th["m0"], th["P0"], n)

    def init_logpdf(th, x):
        return _mvn_logpdf(x, th["m0"], th["P0"])

    def transition_sample(key, th, t, xs):
        return _mvn_sample(key, 0.0, th["Q"], xs.shape[0]) + xs @ th["A"].T

    def transition_logpdf(th, t, x_prev, x):
        return _mvn_logpdf(x, _matvec(th["A"], x_prev), th["Q"])

    def obs_sample(key, th, t, xs):
        return _mvn_sample(key, 0.0, th["R"], xs.shape[0]) + xs @ th["C"].T

    def obs_logpdf(th, t, x, y):
        return _mvn_logpdf(y, _matvec(th["C"], x), th["R"])

    def log_bound(th, t):
        return -0.5 * jnp.linalg.slogdet(th["Q"])[1] - 0.5 * d * _LOG2PI

    return StateSpaceModel(name, d, p, theta, constraints, init_sample, init_logpdf, transition_sample,
                           transition_logpdf, obs_sample, obs_logpdf, log_bound, allow_missing, "kalman")


# --- stochastic volatility --------------------------------------------------------------------
def stochastic_volatility(mu: float = -1.0, phi: float = 0.9, sigma: float = 0.3, *,
                          allow_missing: bool = False) -> StateSpaceModel:
    r"""Stochastic volatility: ``x_0 ~ N(μ, σ²/(1-φ²))``, ``x_t = μ + φ (x_{t-1} - μ) + σ ε_t``,
    ``y_t ~ N(0, exp(x_t))`` (Kim, Shephard, Chib 1998). ``μ`` real, ``φ ∈ (-1, 1)``, ``σ > 0``.
    """
    theta = {"mu": float(mu), "phi": float(phi), "sigma": float(sigma)}
    constraints = {"mu": "real", "phi": "interval", "sigma": "positive"}

    def sd0(th):
        return th["sigma"] / jnp.sqrt(1.0 - th["phi"] ** 2)

    def init_sample(key, th, n):
        return th["mu"] + sd0(th) * jax.random.normal(key, (n, 1), dtype=jnp.result_type(float))

    def init_logpdf(th, x):
        z = (x[0] - th["mu"]) / sd0(th)
        return -0.5 * z * z - jnp.log(sd0(th)) - 0.5 * _LOG2PI

    def transition_sample(key, th, t, xs):
        return th["mu"] + th["phi"] * (xs - th["mu"]) + th["sigma"] * jax.random.normal(key, xs.shape, xs.dtype)

    def transition_logpdf(th, t, x_prev, x):
        z = (x[0] - th["mu"] - th["phi"] * (x_prev[0] - th["mu"])) / th["sigma"]
        return -0.5 * z * z - jnp.log(th["sigma"]) - 0.5 * _LOG2PI

    def obs_sample(key, th, t, xs):
        return jnp.exp(0.5 * xs) * jax.random.normal(key, xs.shape, xs.dtype)

    def obs_logpdf(th, t, x, y):
        return -0.5 * y[0] ** 2 * jnp.exp(-x[0]) - 0.5 * x[0] - 0.5 * _LOG2PI

    def log_bound(th, t):
        return -jnp.log(th["sigma"]) - 0.5 * _LOG2PI

    return StateSpaceModel("stochastic_volatility", 1, 1, theta, constraints, init_sample, init_logpdf,
                           transition_sample, transition_logpdf, obs_sample, obs_logpdf, log_bound,
                           allow_missing)


# --- nonlinear growth model -------------------------------------------------------------------
def nonlinear_growth(sigma_v: float = math.sqrt(10.0), sigma_w: float = 1.0, sigma_0: float = math.sqrt(5.0), *,
                     allow_missing: bool = False) -> StateSpaceModel:
    r"""The nonlinear growth model (Kitagawa 1996; Gordon, Salmond, Smith 1993):

    ``x_0 ~ N(0, σ_0²)``, ``x_t = x_{t-1}/2 + 25 x_{t-1}/(1 + x_{t-1}²) + 8 cos(1.2 t) + σ_v ε_t``,
    ``y_t = x_t²/20 + σ_w ν_t``. Bimodal filtering laws (the sign of ``x`` is weakly identified).
    """
    theta = {"sigma_v": float(sigma_v), "sigma_w": float(sigma_w), "sigma_0": float(sigma_0)}
    constraints = {"sigma_v": "positive", "sigma_w": "positive", "sigma_0": "positive"}

    def drift(t, x):
        return 0.5 * x + 25.0 * x / (1.0 + x * x) + 8.0 * jnp.cos(1.2 * t)

    def normal_lp(z, s):
        return -0.5 * (z / s) ** 2 - jnp.log(s) - 0.5 * _LOG2PI

    def init_sample(key, th, n):
        return th["sigma_0"] * jax.random.normal(key, (n, 1), dtype=jnp.result_type(float))

    def init_logpdf(th, x):
        return normal_lp(x[0], th["sigma_0"])

    def transition_sample(key, th, t, xs):
        return drift(t, xs) + th["sigma_v"] * jax.random.normal(key, xs.shape, xs.dtype)

    def transition_logpdf(th, t, x_prev, x):
        return normal_lp(x[0] - drift(t, x_prev[0]), th["sigma_v"])

    def obs_sample(key, th, t, xs):
        return xs ** 2 / 20.0 + th["sigma_w"] * jax.random.normal(key, xs.shape, xs.dtype)

    def obs_logpdf(th, t, x, y):
        return normal_lp(y[0] - x[0] ** 2 / 20.0, th["sigma_w"])

    def log_bound(th, t):
        return -jnp.log(th["sigma_v"]) - 0.5 * _LOG2PI

    return StateSpaceModel("nonlinear_growth", 1, 1, theta, constraints, init_sample, init_logpdf,
                           transition_sample, transition_logpdf, obs_sample, obs_logpdf, log_bound,
                           allow_missing)


# --- Kalman references (float64 NumPy) ---------------------------------------------------------
class KalmanFilterResult(NamedTuple):
    """Filtering ``N(means[t], covs[t])`` = law of ``x_t | y_{0:t}``; predictive ``x_t | y_{0:t-1}``."""

    means: np.ndarray
    covs: np.ndarray
    pred_means: np.ndarray
    pred_covs: np.ndarray
    loglik: float


class KalmanSmootherResult(NamedTuple):
    """Smoothing ``N(means[t], covs[t])`` = law of ``x_t | y_{0:T-1}``; ``cross_covs[t] = Cov(x_t, x_{t+1} | y)``."""

    means: np.ndarray
    covs: np.ndarray
    cross_covs: np.ndarray
    gains: np.ndarray
    loglik: float
    filter: KalmanFilterResult

    def sum_means(self) -> np.ndarray:
        """``Σ_t E[x_t | y]`` (shape ``(d,)``)."""
        return self.means.sum(0)

    def sum_cross_moments(self) -> np.ndarray:
        """``Σ_{t<T-1} E[x_t x_{t+1}ᵀ | y]`` (shape ``(d, d)``)."""
        return (self.cross_covs + np.einsum("ti,tj->tij", self.means[:-1], self.means[1:])).sum(0)


def _lg_params(model_or_theta):
    if isinstance(model_or_theta, StateSpaceModel):
        if model_or_theta.exact != "kalman":
            raise TypeError(f"the Kalman recursions need a linear-Gaussian model, got {model_or_theta.name!r}")
        th = model_or_theta.theta
    elif isinstance(model_or_theta, Mapping):
        th = model_or_theta
    else:
        raise TypeError("expected a linear_gaussian model or its theta dict")
    return {k: np.atleast_1d(np.asarray(th[k], np.float64)) for k in ("A", "C", "Q", "R", "m0", "P0")}


def kalman_filter(model, ys) -> KalmanFilterResult:
    """The Kalman filter and the exact log-likelihood ``log p(y_{0:T-1})`` in float64.

    ``model`` is a `linear_gaussian` model or its ``theta``; rows of ``ys`` with NaN are skipped
    (unobserved). Covariances are updated in Joseph form and symmetrised.
    """
    th = _lg_params(model)
    A, C, Q, R = (np.atleast_2d(th[k]) for k in "ACQR")
    ys = np.asarray(ys, np.float64)
    ys = ys[:, None] if ys.ndim == 1 else ys
    T, d = ys.shape[0], A.shape[0]
    ms, Ps, mp, Pp = (np.empty((T, d)), np.empty((T, d, d)), np.empty((T, d)), np.empty((T, d, d)))
    m, P = th["m0"], np.atleast_2d(th["P0"])
    ll = 0.0
    I = np.eye(d)
    for t in range(T):
        if t > 0:
            m, P = A @ m, A @ P @ A.T + Q
        mp[t], Pp[t] = m, P
        y = ys[t]
        if not np.any(np.isnan(y)):
            S = C @ P @ C.T + R
            cS = np.linalg.cholesky(S)
            r = y - C @ m
            z = np.linalg.solve(cS, r)
            ll += -0.5 * z @ z - np.log(np.diag(cS)).sum() - 0.5 * len(y) * _LOG2PI
            K = np.linalg.solve(S, C @ P).T
            m = m + K @ r
            IKC = I - K @ C
            P = IKC @ P @ IKC.T + K @ R @ K.T
            P = 0.5 * (P + P.T)
        ms[t], Ps[t] = m, P
    return KalmanFilterResult(ms, Ps, mp, Pp, float(ll))


def kalman_loglik(model, ys) -> float:
    """The exact log-likelihood of a linear-Gaussian model (float64)."""
    return kalman_filter(model, ys).loglik


def kalman_smoother(model, ys) -> KalmanSmootherResult:
    r"""The Rauch-Tung-Striebel smoother: ``E[x_t | y]``, ``Cov(x_t | y)``, ``Cov(x_t, x_{t+1} | y)``.

    ``J_t = P_t A^T (P^-_{t+1})^{-1}``, ``m^s_t = m_t + J_t (m^s_{t+1} - A m_t)``,
    ``P^s_t = P_t + J_t (P^s_{t+1} - P^-_{t+1}) J_t^T``, ``Cov(x_t, x_{t+1} | y) = J_t P^s_{t+1}``
    (Rauch, Tung, Striebel 1965; Särkkä 2013, Thm 8.2).
    """
    f = kalman_filter(model, ys)
    A = np.atleast_2d(_lg_params(model)["A"])
    T, d = f.means.shape
    ms, Ps = f.means.copy(), f.covs.copy()
    cross, gains = np.zeros((T - 1, d, d)), np.zeros((T - 1, d, d))
    for t in range(T - 2, -1, -1):
        J = np.linalg.solve(f.pred_covs[t + 1], A @ f.covs[t]).T
        ms[t] = f.means[t] + J @ (ms[t + 1] - f.pred_means[t + 1])
        Ps[t] = f.covs[t] + J @ (Ps[t + 1] - f.pred_covs[t + 1]) @ J.T
        Ps[t] = 0.5 * (Ps[t] + Ps[t].T)
        cross[t] = J @ Ps[t + 1]
        gains[t] = J
    return KalmanSmootherResult(ms, Ps, cross, gains, f.loglik, f)


def kalman_sample_paths(model, ys, num_paths: int, seed: int = 0) -> np.ndarray:
    r"""Exact draws ``(num_paths, T, d)`` of ``x_{0:T-1} | y`` by forward filtering, backward sampling in
    closed form: ``x_{T-1} ~ N(m_{T-1}, P_{T-1})``,
    ``x_t | x_{t+1} ~ N(m_t + J_t (x_{t+1} - m^-_{t+1}), P_t - J_t P^-_{t+1} J_t^T)`` (Frühwirth-Schnatter 1994).
    """
    num_paths = check_int("num_paths", num_paths, 1)
    rng = np.random.default_rng(seed)
    f = kalman_filter(model, ys)
    A = np.atleast_2d(_lg_params(model)["A"])
    T, d = f.means.shape
    out = np.empty((num_paths, T, d))
    L = np.linalg.cholesky(f.covs[-1])
    out[:, -1] = f.means[-1] + rng.standard_normal((num_paths, d)) @ L.T
    for t in range(T - 2, -1, -1):
        J = np.linalg.solve(f.pred_covs[t + 1], A @ f.covs[t]).T
        cov = f.covs[t] - J @ f.pred_covs[t + 1] @ J.T
        cov = 0.5 * (cov + cov.T) + 1e-14 * np.eye(d)
        mean = f.means[t] + (out[:, t + 1] - f.pred_means[t + 1]) @ J.T
        out[:, t] = mean + rng.standard_normal((num_paths, d)) @ np.linalg.cholesky(cov).T
    return out
