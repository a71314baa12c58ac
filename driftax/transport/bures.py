"""Bures-Wasserstein geometry of Gaussians: W2, optimal maps, geodesics, exponential/log maps, entropic OT.

For ``N(m1, S1)`` and ``N(m2, S2)`` (Dowson & Landau 1982; Olkin & Pukelsheim 1982; Takatsu 2011;
Bhatia, Jain & Lim 2019)::

    W2^2 = |m1 - m2|^2 + B^2(S1, S2),   B^2(S1, S2) = tr S1 + tr S2 - 2 tr (S1^{1/2} S2 S1^{1/2})^{1/2}

The optimal map is ``x -> m2 + T (x - m1)`` with ``T = S1^{-1/2} (S1^{1/2} S2 S1^{1/2})^{1/2} S1^{-1/2}``, the
McCann geodesic is ``S_t = ((1-t) I + t T) S1 ((1-t) I + t T)``, ``m_t = (1-t) m1 + t m2``, and the exponential
map at ``(m, S)`` of the tangent vector ``(v, V)`` (``V`` symmetric) is ``(m + v, (I + V) S (I + V))``
(valid while ``I + V`` is positive definite); the log map is ``(m2 - m1, T - I)``.

Precision of ``B^2`` (and so of :func:`w2`). The trace formula above subtracts quantities of size ``tr S`` to
get ``B^2``, which may be many orders smaller: between equal or nearby Gaussians it loses everything
(its error is about ``d eps tr S``, so ``W2`` is off by ``sqrt(d eps tr S)``). :func:`bures_squared` uses
instead the *cost of the optimal map*: ``B^2 = E|T X - X|^2 = ||(T - I) S1^{1/2}||_F^2`` for
``X ~ N(0, S1)``, a sum of squares in which ``T - I`` is computed from the difference ``Delta = S2 - S1``
alone. With ``S1 = V diag(s) V^T`` and ``Dt = V^T Delta V``, write ``C = diag(s)^{1/2} (diag(s) + Dt)
diag(s)^{1/2} = U diag(p^2) U^T`` (this is ``S1^{1/2} S2 S1^{1/2}`` in ``S1``'s eigenbasis, so ``p`` are the
eigenvalues of its square root). ``E = C^{1/2} - diag(s)`` solves the Sylvester equation
``C^{1/2} E + E diag(s) = C - diag(s)^2 = diag(s)^{1/2} Dt diag(s)^{1/2}`` and ``T - I = S1^{-1/2} E S1^{-1/2}``
(in that basis), which gives the *map form*::

    B^2 = sum_ij ( [U^T diag(s)^{1/2} Dt]_ij / (p_i + s_j) )^2

It is exactly 0 for equal covariances and accurate relative to ``B^2`` itself however close the Gaussians
are. Rounding analysis (``eps`` the dtype's machine epsilon; ``S1`` here the *base*, whichever of the two
covariances has the smaller condition number ``kappa_b``, since ``B`` is symmetric; ``s_min`` its smallest
eigenvalue, ``l = lambda_max(S1) + lambda_max(S2)``): the eigendecomposition of the base is backward stable,
i.e. exact for ``S1 + F`` and ``S2 + F`` with ``|F| <= c d eps |S1|``, which moves ``B^2`` by a relative
``O(d eps kappa_b)``; ``C`` is formed and diagonalised with an absolute error ``O(d eps l^2)`` (``|C| <= l^2``),
so ``p_i`` is off by ``O(d eps l^2 / p_i)`` and each denominator ``p_i + s_j >= s_min`` by a relative
``O(d eps l^2 / (p_min s_min))`` (about ``4 kappa_b^2`` for nearby Gaussians). Documented bound (map form)::

    |B^2_computed - B^2| <= 8 d eps K B^2,   K = kappa_b + l^2 / (p_min s_min)

(the constant 8 is a choice for the unspecified constants of the analysis: over about 1,200 random pairs with
``d`` up to 8, ``kappa`` up to 1e5, from equal to far apart, against a 60-digit reference, the largest error
was 1/19 of the bound, in float64 and float32). The map form needs positive-definite covariances; when one is
singular, or the bound above exceeds the one of the trace formula, ``B^2`` comes from the trace formula (same
decompositions), whose bound is::

    |B^2_computed - B^2| <= 8 d eps (tr S1 + tr S2) + 2 sum_i min(dc / (2 p_i), sqrt(dc)),  dc = 8 d eps l^2

(the second term: a square root of an eigenvalue ``p_i^2`` known to ``dc`` absolutely). The result is within
the smaller of the two bounds. For ``W2^2 = |m1 - m2|^2 + B^2`` (a sum of two non-negative terms, no
cancellation) add ``2 d eps |m1 - m2|^2``; ``W2`` is then within ``min(delta / (2 W2), sqrt(delta))`` of the
truth, ``delta`` the bound on ``W2^2``, plus ``eps W2``. Cost: three ``d x d`` symmetric eigendecompositions,
``O(d^3)``.

Entropic OT between Gaussians has a closed form (Janati, Muzellec, Peyré & Cuturi, NeurIPS 2020, Thm. 1;
Mallasto, Gerolin & Minh 2021). For ``OT_eps = min_P E|x - y|^2 + eps KL(P | N1 x N2)`` and
``sigma^2 = eps / 2``::

    OT_eps = |m1 - m2|^2 + tr S1 + tr S2 - tr D + d sigma^2 (1 - log(2 sigma^2)) + sigma^2 log det(D + sigma^2 I)
    D = (4 S1^{1/2} S2 S1^{1/2} + sigma^4 I)^{1/2}

It tends to ``W2^2`` as ``eps -> 0``. All functions are jit/vmap-able and work in the inputs' precision
(matrix square roots by symmetric eigendecomposition, round-off negative eigenvalues clipped at 0).
Concrete (non-traced) covariances are checked at the boundary: finite, symmetric and positive semi-definite
up to round-off (``ValueError`` naming the argument otherwise); under ``jit``/``vmap`` values are unknown at
trace time and only shapes are checked.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["sqrtm", "inv_sqrtm", "w2", "w2_squared", "bures_squared", "transport_map", "geodesic",
           "exp_map", "log_map", "entropic_ot"]

# Round-off allowance of the boundary checks, in units of d * eps * max|S|: a covariance assembled in
# floating point (X X^T, np.cov, a sum of outer products) is symmetric and PSD up to O(d eps |S|) per entry.
_PSD_SLACK = 100.0


def _is_tracer(x) -> bool:
    return isinstance(x, jax.core.Tracer)


def _check_cov(s, name: str, definite: bool = False):
    """Values check of a concrete covariance: finite, symmetric, PSD (PD if ``definite``) up to round-off."""
    if _is_tracer(s):
        return
    a = np.asarray(s, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"covariance {name} must be a square matrix, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"covariance {name} must be finite, got {int(np.sum(~np.isfinite(a)))} non-finite entries")
    d = a.shape[0]
    if d == 0:
        return
    eps = float(jnp.finfo(jnp.asarray(s).dtype if jnp.issubdtype(jnp.asarray(s).dtype, jnp.floating)
                          else jnp.float32).eps)
    scale = float(np.abs(a).max())
    slack = _PSD_SLACK * d * eps * scale
    asym = float(np.abs(a - a.T).max())
    if asym > slack:
        raise ValueError(f"covariance {name} must be symmetric, got max |{name} - {name}^T| = {asym:.3e}")
    lmin = float(np.linalg.eigvalsh(0.5 * (a + a.T))[0])
    if definite and not lmin > 0:
        raise ValueError(f"covariance {name} must be positive definite, got minimum eigenvalue {lmin:.3e}")
    if lmin < -slack:
        raise ValueError(f"covariance {name} must be positive semi-definite, got minimum eigenvalue {lmin:.3e}")


def _check(m, s, name):
    m = jnp.asarray(m)
    s = jnp.asarray(s)
    if m.ndim != 1:
        raise ValueError(f"mean m{name} must be a vector, got shape {m.shape}")
    if s.shape != (m.shape[0], m.shape[0]):
        raise ValueError(f"covariance s{name} must have shape ({m.shape[0]}, {m.shape[0]}), got {s.shape}")
    if not _is_tracer(m) and not np.all(np.isfinite(np.asarray(m, dtype=np.float64))):
        raise ValueError(f"mean m{name} must be finite")
    _check_cov(s, f"s{name}")
    dt = jnp.result_type(m, s, float)
    return m.astype(dt), s.astype(dt)


def _check_matrix(s, name, definite=False):
    s = jnp.asarray(s)
    if s.ndim != 2 or s.shape[0] != s.shape[1]:
        raise ValueError(f"covariance {name} must be a square matrix, got shape {s.shape}")
    _check_cov(s, name, definite)
    return s.astype(jnp.result_type(s, float))


def _sym(s):
    return 0.5 * (s + jnp.swapaxes(s, -1, -2))


@jax.jit
def _sqrtm(s):
    w, v = jnp.linalg.eigh(_sym(s))
    return _sym((v * jnp.sqrt(jnp.clip(w, 0.0))) @ v.T)


@jax.jit
def _inv_sqrtm(s):
    w, v = jnp.linalg.eigh(_sym(s))
    return _sym((v / jnp.sqrt(w)) @ v.T)


def sqrtm(s: jax.Array) -> jax.Array:
    """Symmetric PSD square root ``S^{1/2}`` by eigendecomposition (round-off negative eigenvalues clipped at 0).

    Error: the eigendecomposition is exact for ``S + F`` with ``|F| = O(d eps |S|)``, and the square root is
    Hölder-1/2 at 0, so eigenvalues near 0 come out within ``sqrt(c d eps |S|)``; the rest within
    ``O(d eps |S| / sqrt(lambda))``. ``s`` must be symmetric positive semi-definite (checked when concrete).
    """
    return _sqrtm(_check_matrix(s, "s"))


def inv_sqrtm(s: jax.Array) -> jax.Array:
    """``S^{-1/2}`` for a symmetric positive-definite ``S`` (checked when concrete); relative error
    ``O(d kappa eps)`` for condition number ``kappa``."""
    return _inv_sqrtm(_check_matrix(s, "s", definite=True))


@jax.jit
def _bures_squared(s1, s2):
    """Map form of ``B^2`` with the trace formula as fallback (see the module docstring for both bounds)."""
    d = s1.shape[-1]
    eps = jnp.finfo(s1.dtype).eps
    w1, v1 = jnp.linalg.eigh(_sym(s1))
    w2_, v2 = jnp.linalg.eigh(_sym(s2))

    def cond(w):
        return jnp.where(w[0] > 0, w[-1] / jnp.where(w[0] > 0, w[0], 1.0), jnp.inf)

    k1, k2 = cond(w1), cond(w2_)
    swap = k2 < k1                               # base = the better-conditioned covariance (B is symmetric)
    s, v = jnp.where(swap, w2_, w1), jnp.where(swap, v2, v1)
    delta = jnp.where(swap, s1 - s2, s2 - s1)    # the difference, formed from the inputs themselves
    kappa = jnp.minimum(k1, k2)
    dt = _sym(v.T @ delta @ v)
    rs = jnp.sqrt(jnp.clip(s, 0.0))
    c_mat = jnp.diag(s * s) + rs[:, None] * dt * rs[None, :]
    c, u = jnp.linalg.eigh(_sym(c_mat))
    c = jnp.clip(c, 0.0)
    p = jnp.sqrt(c)
    # map form: sum of squares of (T - I) S^{1/2} in the base's eigenbasis
    valid = jnp.isfinite(kappa) & (s[0] > 0)
    den = jnp.where(valid, p[:, None] + s[None, :], 1.0)
    b2_map = jnp.sum(((u.T @ (rs[:, None] * dt)) / den) ** 2)
    # trace form (same decompositions) and the two error bounds of the module docstring
    b2_trace = jnp.maximum(jnp.trace(s1) + jnp.trace(s2) - 2.0 * jnp.sum(p), 0.0)
    lsum2 = (jnp.maximum(w1[-1], 0.0) + jnp.maximum(w2_[-1], 0.0)) ** 2   # scale of C and of its rounding
    dc = 8.0 * d * eps * lsum2
    holder = jnp.where(p > 0, jnp.minimum(dc / (2.0 * jnp.where(p > 0, p, 1.0)), jnp.sqrt(dc)), jnp.sqrt(dc))
    bound_trace = 8.0 * d * eps * (jnp.trace(s1) + jnp.trace(s2)) + 2.0 * jnp.sum(holder)
    valid = valid & (p[0] > 0)
    big_k = kappa + lsum2 / jnp.where(valid, p[0] * s[0], 1.0)
    bound_map = jnp.where(valid, 8.0 * d * eps * big_k * b2_map, jnp.inf)
    use_map = valid & jnp.isfinite(b2_map) & (bound_map <= bound_trace)
    return jnp.where(use_map, b2_map, b2_trace)


def bures_squared(s1, s2) -> jax.Array:
    """``B^2(S1, S2) = tr S1 + tr S2 - 2 tr (S1^{1/2} S2 S1^{1/2})^{1/2}``, computed in the map form
    ``||(T - I) S1^{1/2}||_F^2``: relative error ``<= 8 d eps K`` with ``K = kappa_b + l^2 / (p_min s_min)``
    (module docstring for the derivation and the trace-formula fallback on singular inputs)."""
    s1 = _check_matrix(s1, "s1")
    s2 = _check_matrix(s2, "s2")
    if s1.shape != s2.shape:
        raise ValueError(f"dimensions differ: {s1.shape[0]} and {s2.shape[0]}")
    dt = jnp.result_type(s1, s2)
    return _bures_squared(s1.astype(dt), s2.astype(dt))


def w2_squared(m1, s1, m2, s2) -> jax.Array:
    """Squared 2-Wasserstein distance ``|m1 - m2|^2 + B^2(S1, S2)`` between ``N(m1, S1)`` and ``N(m2, S2)``.

    Error bound: ``8 d eps K B^2 + 2 d eps |m1 - m2|^2`` with ``K`` of the module docstring (about
    ``kappa^2`` for nearby Gaussians), so nearby Gaussians get a small relative error, equal ones exactly 0.
    """
    m1, s1 = _check(m1, s1, "1")
    m2, s2 = _check(m2, s2, "2")
    if m1.shape != m2.shape:
        raise ValueError(f"dimensions differ: {m1.shape[0]} and {m2.shape[0]}")
    dt = jnp.result_type(m1, m2)
    m1, s1, m2, s2 = (x.astype(dt) for x in (m1, s1, m2, s2))
    return jnp.sum((m1 - m2) ** 2) + _bures_squared(s1, s2)


def w2(m1, s1, m2, s2) -> jax.Array:
    """2-Wasserstein distance between ``N(m1, S1)`` and ``N(m2, S2)`` (the Bures-Wasserstein formula).

    With ``delta`` the bound of :func:`w2_squared`, the result is within ``min(delta / (2 W2), sqrt(delta))
    + eps W2`` of the truth: relative error ``O(d eps K)`` even for nearly equal Gaussians.
    """
    return jnp.sqrt(w2_squared(m1, s1, m2, s2))


def _transport_map(s1, s2):
    r1 = _sqrtm(s1)
    ir1 = _inv_sqrtm(s1)
    return _sym(ir1 @ _sqrtm(r1 @ s2 @ r1) @ ir1)


def transport_map(s1, s2) -> jax.Array:
    """Matrix ``T`` of the optimal map ``x -> m2 + T (x - m1)`` from ``N(., S1)`` to ``N(., S2)`` (S1 > 0)."""
    s1 = _check_matrix(s1, "s1", definite=True)
    s2 = _check_matrix(s2, "s2")
    if s1.shape != s2.shape:
        raise ValueError(f"dimensions differ: {s1.shape[0]} and {s2.shape[0]}")
    dt = jnp.result_type(s1, s2)
    return _transport_map(s1.astype(dt), s2.astype(dt))


def geodesic(m1, s1, m2, s2, t) -> tuple[jax.Array, jax.Array]:
    """Point at time ``t`` in [0, 1] on the W2 (McCann) geodesic from ``N(m1, S1)`` to ``N(m2, S2)``."""
    m1, s1 = _check(m1, s1, "1")
    m2, s2 = _check(m2, s2, "2")
    _check_cov(s1, "s1", definite=True)
    d = m1.shape[0]
    tmat = (1.0 - t) * jnp.eye(d, dtype=s1.dtype) + t * _transport_map(s1, s2)
    return (1.0 - t) * m1 + t * m2, _sym(tmat @ s1 @ tmat)


def exp_map(m, s, v, vmat) -> tuple[jax.Array, jax.Array]:
    """Bures-Wasserstein exponential map at ``(m, S)`` of the tangent vector ``(v, V)``: ``(m + v, (I+V) S (I+V))``."""
    m, s = _check(m, s, "")
    d = m.shape[0]
    e = jnp.eye(d, dtype=s.dtype) + _sym(jnp.asarray(vmat, s.dtype))
    return m + jnp.asarray(v, s.dtype), _sym(e @ s @ e)


def log_map(m1, s1, m2, s2) -> tuple[jax.Array, jax.Array]:
    """Inverse of :func:`exp_map`: the tangent vector ``(m2 - m1, T - I)`` at ``(m1, S1)`` pointing to ``(m2, S2)``."""
    m1, s1 = _check(m1, s1, "1")
    m2, s2 = _check(m2, s2, "2")
    _check_cov(s1, "s1", definite=True)
    return m2 - m1, _transport_map(s1, s2) - jnp.eye(m1.shape[0], dtype=s1.dtype)


def entropic_ot(m1, s1, m2, s2, epsilon) -> jax.Array:
    """Closed-form entropic OT ``min E|x-y|^2 + eps KL(P | N(m1,S1) x N(m2,S2))`` (Janati et al. 2020, Thm. 1)."""
    m1, s1 = _check(m1, s1, "1")
    m2, s2 = _check(m2, s2, "2")
    if m1.shape != m2.shape:
        raise ValueError(f"dimensions differ: {m1.shape[0]} and {m2.shape[0]}")
    if not isinstance(epsilon, jax.core.Tracer) and not float(epsilon) > 0:
        raise ValueError(f"epsilon must be positive, got {epsilon}")
    d = m1.shape[0]
    sig2 = 0.5 * jnp.asarray(epsilon, s1.dtype)
    eye = jnp.eye(d, dtype=s1.dtype)
    r1 = _sqrtm(s1)
    dmat = _sqrtm(4.0 * (r1 @ s2 @ r1) + sig2**2 * eye)
    _, logdet = jnp.linalg.slogdet(dmat + sig2 * eye)
    return (jnp.sum((m1 - m2) ** 2) + jnp.trace(s1) + jnp.trace(s2) - jnp.trace(dmat)
            + d * sig2 * (1.0 - jnp.log(2.0 * sig2)) + sig2 * logdet)
