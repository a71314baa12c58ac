"""Bures-Wasserstein geometry of Gaussians: W2, optimal maps, geodesics, exponential/log maps, entropic OT.

For ``N(m1, S1)`` and ``N(m2, S2)`` (Dowson & Landau 1982; Olkin & Pukelsheim 1982; Takatsu 2011;
Bhatia, Jain & Lim 2019)::

    W2^2 = |m1 - m2|^2 + B^2(S1, S2),   B^2(S1, S2) = tr S1 + tr S2 - 2 tr (S1^{1/2} S2 S1^{1/2})^{1/2}

The optimal map is ``x -> m2 + T (x - m1)`` with ``T = S1^{-1/2} (S1^{1/2} S2 S1^{1/2})^{1/2} S1^{-1/2}``, the
McCann geodesic is ``S_t = ((1-t) I + t T) S1 ((1-t) I + t T)``, ``m_t = (1-t) m1 + t m2``, and the exponential
map at ``(m, S)`` of the tangent vector ``(v, V)`` (``V`` symmetric) is ``(m + v, (I + V) S (I + V))``
(valid while ``I + V`` is positive definite); the log map is ``(m2 - m1, T - I)``.

Entropic OT between Gaussians has a closed form (Janati, Muzellec, Peyré & Cuturi, NeurIPS 2020, Thm. 1;
Mallasto, Gerolin & Minh 2021). For ``OT_eps = min_P E|x - y|^2 + eps KL(P | N1 x N2)`` and
``sigma^2 = eps / 2``::

    OT_eps = |m1 - m2|^2 + tr S1 + tr S2 - tr D + d sigma^2 (1 - log(2 sigma^2)) + sigma^2 log det(D + sigma^2 I)
    D = (4 S1^{1/2} S2 S1^{1/2} + sigma^4 I)^{1/2}

It tends to ``W2^2`` as ``eps -> 0``. All functions are jit/vmap-able and work in the inputs' precision
(matrix square roots by symmetric eigendecomposition, eigenvalues clipped at 0).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["sqrtm", "inv_sqrtm", "w2", "w2_squared", "bures_squared", "transport_map", "geodesic",
           "exp_map", "log_map", "entropic_ot"]


def _check(m, s, name):
    m = jnp.asarray(m)
    s = jnp.asarray(s)
    if m.ndim != 1:
        raise ValueError(f"mean {name} must be a vector, got shape {m.shape}")
    if s.shape != (m.shape[0], m.shape[0]):
        raise ValueError(f"covariance {name} must have shape ({m.shape[0]}, {m.shape[0]}), got {s.shape}")
    dt = jnp.result_type(m, s, float)
    return m.astype(dt), s.astype(dt)


def _sym(s):
    return 0.5 * (s + jnp.swapaxes(s, -1, -2))


def sqrtm(s: jax.Array) -> jax.Array:
    """Symmetric PSD square root ``S^{1/2}`` by eigendecomposition (negative round-off eigenvalues clipped)."""
    w, v = jnp.linalg.eigh(_sym(s))
    return _sym((v * jnp.sqrt(jnp.clip(w, 0.0))) @ v.T)


def inv_sqrtm(s: jax.Array) -> jax.Array:
    """``S^{-1/2}`` for a symmetric positive-definite ``S``."""
    w, v = jnp.linalg.eigh(_sym(s))
    return _sym((v / jnp.sqrt(w)) @ v.T)


def bures_squared(s1, s2) -> jax.Array:
    """``B^2(S1, S2) = tr S1 + tr S2 - 2 tr (S1^{1/2} S2 S1^{1/2})^{1/2}`` (clipped at 0)."""
    r1 = sqrtm(s1)
    cross = sqrtm(r1 @ s2 @ r1)
    return jnp.maximum(jnp.trace(s1) + jnp.trace(s2) - 2.0 * jnp.trace(cross), 0.0)


def w2_squared(m1, s1, m2, s2) -> jax.Array:
    """Squared 2-Wasserstein distance between ``N(m1, S1)`` and ``N(m2, S2)``."""
    m1, s1 = _check(m1, s1, "1")
    m2, s2 = _check(m2, s2, "2")
    if m1.shape != m2.shape:
        raise ValueError(f"dimensions differ: {m1.shape[0]} and {m2.shape[0]}")
    return jnp.sum((m1 - m2) ** 2) + bures_squared(s1, s2)


def w2(m1, s1, m2, s2) -> jax.Array:
    """2-Wasserstein distance between ``N(m1, S1)`` and ``N(m2, S2)`` (the Bures-Wasserstein formula)."""
    return jnp.sqrt(w2_squared(m1, s1, m2, s2))


def transport_map(s1, s2) -> jax.Array:
    """Matrix ``T`` of the optimal map ``x -> m2 + T (x - m1)`` from ``N(., S1)`` to ``N(., S2)`` (S1 > 0)."""
    r1 = sqrtm(s1)
    ir1 = inv_sqrtm(s1)
    return _sym(ir1 @ sqrtm(r1 @ s2 @ r1) @ ir1)


def geodesic(m1, s1, m2, s2, t) -> tuple[jax.Array, jax.Array]:
    """Point at time ``t`` in [0, 1] on the W2 (McCann) geodesic from ``N(m1, S1)`` to ``N(m2, S2)``."""
    m1, s1 = _check(m1, s1, "1")
    m2, s2 = _check(m2, s2, "2")
    d = m1.shape[0]
    tmat = (1.0 - t) * jnp.eye(d, dtype=s1.dtype) + t * transport_map(s1, s2)
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
    return m2 - m1, transport_map(s1, s2) - jnp.eye(m1.shape[0], dtype=s1.dtype)


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
    r1 = sqrtm(s1)
    dmat = sqrtm(4.0 * (r1 @ s2 @ r1) + sig2**2 * eye)
    _, logdet = jnp.linalg.slogdet(dmat + sig2 * eye)
    return (jnp.sum((m1 - m2) ** 2) + jnp.trace(s1) + jnp.trace(s2) - jnp.trace(dmat)
            + d * sig2 * (1.0 - jnp.log(2.0 * sig2)) + sig2 * logdet)
