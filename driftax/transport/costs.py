"""Ground costs: cost matrices between point clouds and on regular grids (histograms, images).

This module is the *geometry* layer of :mod:`driftax.transport`: it only builds cost matrices ``C`` with
``C[i, j] = c(x_i, y_j)``; problems (marginals + cost + epsilon) and solvers live elsewhere.

Costs provided (``p`` is the exponent, ``|.|_q`` the ground norm):

* ``sqeuclidean``: ``c(x, y) = |x - y|_2^2`` (computed as ``|x|^2 + |y|^2 - 2 <x, y>`` then clipped at 0,
  which is the usual fast form; exact zeros on the diagonal are restored when ``x is y``);
* ``euclidean``: ``c(x, y) = |x - y|_2``;
* ``l1`` / ``cityblock``: ``c(x, y) = |x - y|_1``;
* ``pnorm``: ``c(x, y) = |x - y|_q^p`` (general p-costs, e.g. ``p = 1, q = 2`` is the Euclidean cost).

Every function takes an optional ``dtype`` (for example ``jnp.float64``; a float64 request is honoured even
where the global ``jax_enable_x64`` flag is off: the function then computes inside :func:`jax.enable_x64`, like
the solvers, and returns a float64 array) and an
optional ``rescale`` (``None``, ``"max"``, ``"mean"``, ``"median"`` or a positive number) that divides the
matrix by that statistic, so that an absolute ``epsilon`` means the same on every problem.
"""
from __future__ import annotations

import contextlib
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "sqeuclidean",
    "euclidean",
    "l1",
    "pnorm",
    "pairwise",
    "grid_points",
    "grid_cost",
    "rescale_cost",
    "COSTS",
]


def _honour_dtype(fn):
    """Run ``fn`` inside :func:`jax.enable_x64` when its ``dtype`` keyword asks for float64 and x64 is off."""

    @functools.wraps(fn)
    def wrapper(*args, dtype=None, **kwargs):
        f64 = dtype is not None and jnp.dtype(dtype) == jnp.dtype(jnp.float64)
        ctx = jax.enable_x64(True) if f64 and not jax.config.jax_enable_x64 else contextlib.nullcontext()
        with ctx:
            return fn(*args, dtype=dtype, **kwargs)

    return wrapper


def _as_points(x: Any, name: str, dtype) -> jax.Array:
    x = jnp.asarray(x, dtype=dtype)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"{name} must be an array of points of shape (n, d) or (n,), got shape {x.shape}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    return x


def _check_dims(x: jax.Array, y: jax.Array) -> None:
    if x.shape[1] != y.shape[1]:
        raise ValueError(
            f"x and y must have the same dimension, got x with d={x.shape[1]} and y with d={y.shape[1]}"
        )


def rescale_cost(cost: jax.Array, rescale: str | float | None) -> jax.Array:
    """Divide ``cost`` by ``max``, ``mean`` or ``median`` of its entries, or by a given positive number."""
    if rescale is None:
        return cost
    if isinstance(rescale, str):
        if rescale == "max":
            s = jnp.max(cost)
        elif rescale == "mean":
            s = jnp.mean(cost)
        elif rescale == "median":
            s = jnp.median(cost)
        else:
            raise ValueError(f"rescale must be None, 'max', 'mean', 'median' or a positive number, got {rescale!r}")
        return cost / jnp.where(s > 0, s, 1.0)
    rescale = float(rescale)
    if not np.isfinite(rescale) or rescale <= 0:
        raise ValueError(f"rescale must be a positive finite number, got {rescale}")
    return cost / rescale


@_honour_dtype
def sqeuclidean(x, y=None, *, rescale=None, dtype=None) -> jax.Array:
    """Squared Euclidean cost ``C[i, j] = |x_i - y_j|_2^2`` between point clouds ``x (n, d)``, ``y (m, d)``.

    Computed as ``|x_i|^2 + |y_j|^2 - 2 <x_i, y_j>`` (one matrix product), clipped at zero, after moving both
    clouds by their common mean (the cost is translation invariant; far from the origin the expanded form would
    otherwise lose ``|x|^2 * machine eps`` to cancellation). ``y=None`` means ``y = x`` (then the diagonal is
    exactly zero).
    """
    same = y is None
    x = _as_points(x, "x", dtype)
    y = x if same else _as_points(y, "y", dtype)
    _check_dims(x, y)
    centre = jnp.mean(jnp.concatenate([x, y]) if not same else x, axis=0)
    x = x - centre
    y = x if same else y - centre
    xx = jnp.sum(x * x, axis=1)
    yy = jnp.sum(y * y, axis=1)
    c = xx[:, None] + yy[None, :] - 2.0 * jnp.matmul(x, y.T, precision=jax.lax.Precision.HIGHEST)
    c = jnp.maximum(c, 0.0)
    if same:
        c = c * (1.0 - jnp.eye(x.shape[0], dtype=c.dtype))
    return rescale_cost(c, rescale)


@_honour_dtype
def pnorm(x, y=None, *, p: float = 2.0, q: float = 2.0, rescale=None, dtype=None) -> jax.Array:
    """General p-cost ``C[i, j] = |x_i - y_j|_q^p`` (``q`` may be ``inf``).

    Materialises the ``(n, m, d)`` differences, so it is meant for moderate ``d``; ``sqeuclidean`` is the
    fast path for ``p = q = 2``.
    """
    if p <= 0 or q <= 0:
        raise ValueError(f"p and q must be positive, got p={p}, q={q}")
    x = _as_points(x, "x", dtype)
    y = x if y is None else _as_points(y, "y", dtype)
    _check_dims(x, y)
    diff = jnp.abs(x[:, None, :] - y[None, :, :])
    if np.isinf(q):
        norm = jnp.max(diff, axis=-1)
    elif q == 1:
        norm = jnp.sum(diff, axis=-1)
    elif q == 2:
        norm = jnp.sqrt(jnp.sum(diff * diff, axis=-1))
    else:
        norm = jnp.sum(diff**q, axis=-1) ** (1.0 / q)
    c = norm if p == 1 else norm**p
    return rescale_cost(c, rescale)


@_honour_dtype
def euclidean(x, y=None, *, rescale=None, dtype=None) -> jax.Array:
    """Euclidean cost ``C[i, j] = |x_i - y_j|_2``."""
    return pnorm(x, y, p=1.0, q=2.0, rescale=rescale, dtype=dtype)


@_honour_dtype
def l1(x, y=None, *, rescale=None, dtype=None) -> jax.Array:
    """L1 (cityblock) cost ``C[i, j] = |x_i - y_j|_1``."""
    return pnorm(x, y, p=1.0, q=1.0, rescale=rescale, dtype=dtype)


COSTS = {
    "sqeuclidean": sqeuclidean,
    "euclidean": euclidean,
    "l2": euclidean,
    "l1": l1,
    "cityblock": l1,
}


@_honour_dtype
def pairwise(x, y=None, cost: str = "sqeuclidean", *, p: float | None = None, rescale=None, dtype=None):
    """Cost matrix by name: ``"sqeuclidean"``, ``"euclidean"``/``"l2"``, ``"l1"``/``"cityblock"``, or ``"pnorm"``.

    For ``"pnorm"``, ``p`` is the exponent on the Euclidean norm (``|x - y|_2^p``).
    """
    if cost == "pnorm":
        return pnorm(x, y, p=2.0 if p is None else p, q=2.0, rescale=rescale, dtype=dtype)
    if cost not in COSTS:
        raise ValueError(f"cost must be one of {sorted(COSTS) + ['pnorm']}, got {cost!r}")
    return COSTS[cost](x, y, rescale=rescale, dtype=dtype)


@_honour_dtype
def grid_points(shape: tuple[int, ...], *, normalize: bool = True, dtype=None) -> jax.Array:
    """Coordinates of the cells of a regular grid of ``shape`` (row-major, matching ``image.ravel()``).

    With ``normalize=True`` the coordinates lie in ``[0, 1]`` along each axis (``index / (size - 1)``),
    otherwise they are integer pixel indices.
    """
    shape = tuple(int(s) for s in shape)
    if not shape or any(s < 1 for s in shape):
        raise ValueError(f"shape must be a non-empty tuple of positive sizes, got {shape}")
    axes = []
    for s in shape:
        t = np.arange(s, dtype=np.float64)
        if normalize and s > 1:
            t = t / (s - 1)
        axes.append(t)
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, len(shape))
    return jnp.asarray(grid, dtype=dtype)


@_honour_dtype
def grid_cost(shape: tuple[int, ...], cost: str = "sqeuclidean", *, p: float | None = None,
              normalize: bool = True, rescale=None, dtype=None) -> jax.Array:
    """Ground cost between the cells of a grid (e.g. ``(28, 28)`` images flattened row-major).

    ``cost`` is any name accepted by :func:`pairwise` (``"sqeuclidean"`` for the L2^2 ground cost,
    ``"l1"`` for the Manhattan ground cost used in image OT).
    """
    pts = grid_points(shape, normalize=normalize, dtype=dtype)
    return pairwise(pts, pts, cost, p=p, rescale=rescale, dtype=dtype)
