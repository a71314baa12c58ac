"""The `Target`: what every driftax engine samples from.

A target is a log-density ``log p(x)`` (up to a constant) over a flat, unconstrained vector
``x ∈ R^dim``, plus what the diagnostics need to speak the model's language: ``constrain(x)``
maps a flat vector back to the model's named, constrained sites (deterministic sites included),
so draws reach ArviZ as ``{name: array}`` with the model's shapes.

Ground truth, where known, is optional and lives on the target: ``mean`` and ``cov`` of ``x``
(in the unconstrained space), ``log_Z`` (the log normalising constant of ``exp(logdensity_fn)``)
and ``sample(key, n)`` for exact draws of ``x``. Engines never read these; tests and benchmarks do.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

__all__ = ["Target", "DataLikelihood", "as_target"]


def _identity_constrain(x):
    return {"x": x}


@dataclasses.dataclass(frozen=True, eq=False)
class DataLikelihood:
    r"""A log-density in data-indexed form, for minibatch gradients (SGLD):

    .. math:: \log p(x) = \log p_0(x) + \sum_{i=1}^{N} \ell(x; d_i) \quad (+\ \text{const}).

    Parameters
    ----------
    loglik_fn
        ``(x, datum) -> ℓ(x; d_i)``, the log-likelihood of one datum (a slice of ``data``).
    data
        An array or pytree of arrays sharing a leading axis of length ``N``.
    logprior_fn
        ``x -> log p_0(x)`` (all terms that do not depend on the data).
    batch_logdensity
        Optional ``(x, indices) -> log p_0(x) + (N/B) Σ_{i ∈ indices} ℓ(x; d_i)``, ``B`` the
        number of indices, where the model evaluates a minibatch in one pass (a NumPyro model
        whose data plate subsamples); default: from ``loglik_fn``.
    """

    loglik_fn: Callable
    data: object
    logprior_fn: Callable
    batch_logdensity: Callable | None = None

    def __post_init__(self):
        if not callable(self.loglik_fn) or not callable(self.logprior_fn):
            raise TypeError("loglik_fn and logprior_fn must be callable")
        leaves = jax.tree.leaves(self.data)
        if not leaves:
            raise ValueError("data must hold at least one array")
        sizes = {int(np.shape(leaf)[0]) if np.ndim(leaf) else -1 for leaf in leaves}
        if len(sizes) != 1 or -1 in sizes or 0 in sizes:
            raise ValueError(f"data arrays must share a non-empty leading axis, got leading sizes {sorted(sizes)}")

    @property
    def size(self) -> int:
        """``N``, the number of data."""
        return int(np.shape(jax.tree.leaves(self.data)[0])[0])

    def minibatch(self, x, indices):
        """``log p_0(x) + (N/B) Σ_{i ∈ indices} ℓ(x; d_i)``: unbiased for ``log p(x)`` when the
        indices are a uniform draw without replacement."""
        if self.batch_logdensity is not None:
            return self.batch_logdensity(x, indices)
        batch = jax.tree.map(lambda a: jnp.take(a, indices, axis=0), self.data)
        ll = jnp.sum(jax.vmap(lambda d: self.loglik_fn(x, d))(batch))
        return self.logprior_fn(x) + (self.size / indices.shape[0]) * ll

    def logdensity(self, x):
        """The full log-density ``log p_0(x) + Σ_i ℓ(x; d_i)``."""
        if self.batch_logdensity is not None:
            return self.batch_logdensity(x, jnp.arange(self.size))
        return self.logprior_fn(x) + jnp.sum(jax.vmap(lambda d: self.loglik_fn(x, d))(self.data))


@dataclasses.dataclass(frozen=True, eq=False)
class Target:
    """A log-density over ``R^dim`` with optional ground truth.

    Parameters
    ----------
    logdensity_fn
        ``x -> log p(x)`` for a flat vector ``x`` of shape ``(dim,)``; jit- and grad-able. The
        normalising constant need not be known.
    dim
        Dimension of the flat unconstrained space.
    name
        Short name used in tables and file names.
    constrain
        ``x -> {site: array}``: the model's constrained, named values (deterministic sites
        included). Defaults to ``{"x": x}``.
    dims
        Optional ArviZ dimension names per constrained site, e.g. ``{"theta": ("school",)}``
        (`from_numpyro` takes them from plates).
    init_fn
        ``key -> x0``: a starting point for one chain, drawn at random so chains start apart.
        Defaults to ``N(0, I)``.
    mean, cov, log_Z, sample
        Optional ground truth in the unconstrained space: ``E[x]``, ``Cov[x]``,
        ``log ∫ exp(logdensity_fn)``, and ``sample(key, n) -> (n, dim)`` exact draws.
    data_likelihood
        Optional `DataLikelihood`: the same log-density as a prior plus a sum over data, for
        minibatch-gradient kernels (``"sgld"``). It must equal ``logdensity_fn`` up to a constant.
    """

    logdensity_fn: Callable[[Array], Array]
    dim: int
    name: str = "target"
    constrain: Callable[[Array], Mapping[str, Array]] = _identity_constrain
    init_fn: Callable[[Array], Array] | None = None
    dims: Mapping[str, tuple[str, ...]] | None = None
    mean: Array | None = None
    cov: Array | None = None
    log_Z: float | None = None
    sample: Callable[[Array, int], Array] | None = None
    data_likelihood: DataLikelihood | None = None

    def __post_init__(self):
        if not callable(self.logdensity_fn):
            raise TypeError(f"logdensity_fn must be callable, got {type(self.logdensity_fn).__name__}")
        if isinstance(self.dim, bool) or not isinstance(self.dim, (int, np.integer)) or self.dim < 1:
            raise ValueError(f"dim must be a positive integer, got {self.dim!r}")
        object.__setattr__(self, "dim", int(self.dim))
        if not callable(self.constrain):
            raise TypeError("constrain must be callable: flat vector -> dict of named arrays")
        if self.data_likelihood is not None and not isinstance(self.data_likelihood, DataLikelihood):
            raise TypeError(f"data_likelihood must be a driftax.models.DataLikelihood, got "
                            f"{type(self.data_likelihood).__name__}")
        if self.mean is not None:
            mean = jnp.asarray(self.mean)
            if mean.shape != (self.dim,):
                raise ValueError(f"mean must have shape ({self.dim},), got {mean.shape}")
            object.__setattr__(self, "mean", mean)
        if self.cov is not None:
            cov = jnp.asarray(self.cov)
            if cov.shape != (self.dim, self.dim):
                raise ValueError(f"cov must have shape ({self.dim}, {self.dim}), got {cov.shape}")
            object.__setattr__(self, "cov", cov)

    # --- what ArviZ needs -------------------------------------------------------------------
    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Shapes of the constrained sites, without evaluating the model (``jax.eval_shape``)."""
        out = jax.eval_shape(self.constrain, jax.ShapeDtypeStruct((self.dim,), jnp.float32))
        return {k: tuple(v.shape) for k, v in out.items()}

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.shapes)

    # --- starting points --------------------------------------------------------------------
    def initial_positions(self, key: Array, num_chains: int) -> Array:
        """``(num_chains, dim)`` starting points, one independent draw of ``init_fn`` per chain."""
        keys = jax.random.split(key, num_chains)
        if self.init_fn is not None:
            return self._batched_init(keys)
        return jax.random.normal(key, (num_chains, self.dim))

    @functools.cached_property
    def _batched_init(self) -> Callable[[Array], Array]:
        """``init_fn`` over a batch of keys, jitted once per target: eager ``vmap`` of a model's init
        is slow, and a fresh ``jit`` at every call traced and compiled it again each time (a second
        `infer.sample` on the same NumPyro model paid that again: 0.3 s of its 0.5 s on eight_schools)."""
        return jax.jit(jax.vmap(self.init_fn))

    def __repr__(self) -> str:
        truth = [k for k in ("mean", "cov", "log_Z", "sample") if getattr(self, k) is not None]
        return f"Target(name={self.name!r}, dim={self.dim}, ground_truth={truth})"


def as_target(obj, dim: int | None = None) -> Target:
    """Accept a `Target`, or a plain log-density function with ``dim``."""
    if isinstance(obj, Target):
        return obj
    if callable(obj):
        if dim is None:
            raise ValueError("dim is required when passing a plain log-density function")
        return Target(obj, dim)
    raise TypeError(f"expected a driftax Target or a log-density function, got {type(obj).__name__}")
