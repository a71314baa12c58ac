r"""Langevin kernels in BlackJAX form: the Metropolis-adjusted Langevin algorithm (MALA).

MALA (Roberts & Tweedie, 1996, "Exponential convergence of Langevin distributions and their
discrete approximations") proposes from one Euler step of the preconditioned Langevin diffusion

.. math::  x' = x + h A \nabla\log p(x) + \sqrt{2h}\, A^{1/2}\xi, \qquad \xi\sim N(0, I),

with step size :math:`h` and inverse mass matrix :math:`A` (identity, diagonal or dense), and
accepts with probability :math:`\min(1, \alpha)`,
:math:`\log\alpha = \log p(x') - \log p(x) + \log q(x\mid x') - \log q(x'\mid x)`. Writing
:math:`s = \nabla\log p(x) + \nabla\log p(x')` and :math:`\eta = A^{1/2}\xi`, the Gaussian
transition densities cancel to

.. math::  \log\alpha = \log p(x') - \log p(x) - \tfrac{h}{4}\, s^\top A s - \sqrt{h/2}\; s^\top\eta,

so no inverse of :math:`A` is ever formed. The state carries the log-density and its gradient,
so each step costs one ``value_and_grad``. A step consumes ``dim + 1`` standard normals; the
last becomes the acceptance uniform through :math:`\Phi` (:math:`\log u = \log\Phi(z)` is exactly
``log U(0,1)``), so the whole step is a deterministic map of one noise vector.

A proposal whose log-density or gradient is not finite is rejected and flagged ``diverging``:
a NaN can never enter the chain.

The kernel is interchangeable with BlackJAX's: ``init(position, logdensity_fn)`` and
``kernel(key, state, logdensity_fn, step_size)`` have BlackJAX's signatures, positions may be any
pytree, and ``mala(logdensity_fn, step_size)`` returns a ``blackjax.base.SamplingAlgorithm``.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from blackjax.base import SamplingAlgorithm
from jax.flatten_util import ravel_pytree
from jax.scipy.special import log_ndtr

Array = jax.Array

__all__ = ["MALAState", "MALAInfo", "init", "step", "noise_size", "build_kernel", "mala"]


class MALAState(NamedTuple):
    """Position with its log-density and gradient (so a step costs one gradient)."""

    position: Array
    logdensity: Array
    logdensity_grad: Array


class MALAInfo(NamedTuple):
    """What diagnostics need about one transition."""

    acceptance_rate: Array  # min(1, alpha); 0 for a diverging proposal
    is_accepted: Array
    diverging: Array  # the proposal's log-density or gradient was not finite


def init(position, logdensity_fn: Callable) -> MALAState:
    """State at ``position``: evaluates the log-density and its gradient once."""
    logdensity, grad = jax.value_and_grad(logdensity_fn)(position)
    return MALAState(position, logdensity, grad)


def _sqrt_and_apply(inverse_mass_matrix):
    """``(v -> A^{1/2} v, v -> A v)`` for A = None (identity), a vector (diagonal), a matrix, or a
    pair ``(A, cholesky(A))`` with the factor computed once by the caller (loops over many steps)."""
    if inverse_mass_matrix is None:
        return (lambda v: v), (lambda v: v)
    if isinstance(inverse_mass_matrix, tuple):
        imm, chol = inverse_mass_matrix
        return (lambda v: chol @ v), (lambda v: imm @ v)
    imm = jnp.asarray(inverse_mass_matrix)
    if imm.ndim == 1:
        sqrt = jnp.sqrt(imm)
        return (lambda v: sqrt * v), (lambda v: imm * v)
    return _sqrt_and_apply((imm, jnp.linalg.cholesky(imm)))


def step(
    state: MALAState,
    noise: Array,
    logdensity_fn: Callable,
    step_size,
    inverse_mass_matrix=None,
) -> tuple[MALAState, MALAInfo]:
    """One MALA transition driven by ``noise``: ``dim + 1`` i.i.d. standard normals.

    The kernel is this deterministic map after drawing the noise; loops that draw noise in bulk
    (``driftax.infer.sample``) call it directly.
    """
    x, unravel = ravel_pytree(state.position)
    g, _ = ravel_pytree(state.logdensity_grad)
    dim = x.shape[0]
    sqrt_a, apply_a = _sqrt_and_apply(inverse_mass_matrix)
    h = jnp.asarray(step_size, x.dtype)

    eta = sqrt_a(noise[:dim].astype(x.dtype))
    x_new = x + h * apply_a(g) + jnp.sqrt(2 * h) * eta
    logp_new, g_new_tree = jax.value_and_grad(logdensity_fn)(unravel(x_new))
    g_new, _ = ravel_pytree(g_new_tree)

    s = g + g_new
    log_alpha = (
        logp_new - state.logdensity
        - 0.25 * h * jnp.dot(s, apply_a(s))
        - jnp.sqrt(0.5 * h) * jnp.dot(s, eta)
    )
    finite = jnp.isfinite(logp_new) & jnp.all(jnp.isfinite(g_new)) & jnp.isfinite(log_alpha)
    log_alpha = jnp.where(finite, log_alpha, -jnp.inf)
    accept = log_ndtr(noise[dim]) < log_alpha

    new_state = MALAState(
        unravel(jnp.where(accept, x_new, x)),
        jnp.where(accept, logp_new, state.logdensity),
        unravel(jnp.where(accept, g_new, g)),
    )
    return new_state, MALAInfo(jnp.exp(jnp.minimum(log_alpha, 0.0)), accept, ~finite)


def noise_size(dim: int) -> int:
    """Standard normals consumed by one `step` in dimension ``dim``."""
    return dim + 1


def build_kernel():
    """Build the MALA transition ``kernel(key, state, logdensity_fn, step_size, inverse_mass_matrix=None)``."""

    def kernel(rng_key, state: MALAState, logdensity_fn: Callable, step_size, inverse_mass_matrix=None):
        x, _ = ravel_pytree(state.position)
        noise = jax.random.normal(rng_key, (noise_size(x.shape[0]),), x.dtype)
        return step(state, noise, logdensity_fn, step_size, inverse_mass_matrix)

    return kernel


def mala(logdensity_fn: Callable, step_size: float, inverse_mass_matrix=None) -> SamplingAlgorithm:
    """MALA as a BlackJAX ``SamplingAlgorithm``: ``init(position)`` and ``step(key, state)``.

    Parameters
    ----------
    logdensity_fn
        Log-density of the target (up to a constant) of a position pytree.
    step_size
        Step size ``h > 0`` of the Langevin discretisation.
    inverse_mass_matrix
        Preconditioner ``A``: ``None`` (identity), a vector (diagonal) or a positive-definite matrix.
    """
    if not callable(logdensity_fn):
        raise TypeError("logdensity_fn must be callable")
    _check_step_size(step_size)
    _check_inverse_mass_matrix(inverse_mass_matrix)
    kernel = build_kernel()

    def init_fn(position, rng_key=None):
        del rng_key  # BlackJAX's loops may pass one
        return init(position, logdensity_fn)

    def step_fn(rng_key, state):
        return kernel(rng_key, state, logdensity_fn, step_size, inverse_mass_matrix)

    return SamplingAlgorithm(init_fn, step_fn)


def _is_traced(x) -> bool:
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(x))


def _check_step_size(step_size) -> None:
    """Reject a non-positive or non-finite concrete step size (traced values pass through)."""
    if _is_traced(step_size):
        return
    value = np.asarray(step_size)
    if isinstance(step_size, bool) or value.ndim != 0 or not np.issubdtype(value.dtype, np.number) \
            or not np.isfinite(value) or float(value) <= 0:
        raise ValueError(f"step_size must be a positive finite scalar, got {step_size!r}")


def _check_inverse_mass_matrix(imm) -> None:
    """A concrete preconditioner must be a positive vector or a symmetric positive-definite matrix."""
    if imm is None or _is_traced(imm):
        return
    a = np.asarray(imm[0] if isinstance(imm, tuple) else imm, dtype=float)
    if a.ndim == 1:
        if not (np.all(np.isfinite(a)) and np.all(a > 0)):
            raise ValueError("inverse_mass_matrix (diagonal) must be finite and positive")
    elif a.ndim == 2 and a.shape[0] == a.shape[1]:
        if not (np.all(np.isfinite(a)) and np.allclose(a, a.T)) or np.linalg.eigvalsh(a).min() <= 0:
            raise ValueError("inverse_mass_matrix must be symmetric positive definite")
    else:
        raise ValueError(f"inverse_mass_matrix must be a vector (dim,) or a matrix (dim, dim), got shape {a.shape}")


mala.init = init
mala.build_kernel = build_kernel
