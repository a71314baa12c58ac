r"""Langevin kernels in BlackJAX form: MALA, ULA, SGLD and spherical Langevin.

Every kernel is "noise + deterministic update": ``step(state, noise, density, step_size,
inverse_mass_matrix)`` with ``noise_size(dim)`` standard normals, so `driftax.infer.sample`
draws the noise of all chains in bulk; ``build_kernel()`` wraps it into BlackJAX's
``kernel(key, state, ...)``. Non-finite proposals are never taken: the chain stays and the step
is flagged ``diverging``.

MALA
----

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

ULA
---
The same Euler step without the Metropolis correction (Roberts & Tweedie 1996; Durmus &
Moulines 2017): it samples a biased law whose bias is O(h). For a Gaussian target
:math:`N(\mu, \Sigma)` and :math:`A = I` the chain is the AR(1) recursion
:math:`x' - \mu = (I - h\Sigma^{-1})(x - \mu) + \sqrt{2h}\,\xi`, whose stationary law is
:math:`N(\mu, \Sigma (I - \tfrac h2 \Sigma^{-1})^{-1})`: the mean is exact, the covariance is
inflated. With time averages of the iterates as estimators (Polyak-Ruppert,
`driftax.samplers.averaging`), ULA estimates posterior means at the cost of one gradient a step.

SGLD
----
Stochastic-gradient Langevin dynamics (Welling & Teh 2011, "Bayesian learning via stochastic
gradient Langevin dynamics"): the gradient of
:math:`\log p(x) = \log p_0(x) + \sum_{i=1}^N \ell(x; d_i)` is replaced by the unbiased minibatch
estimate :math:`\nabla\log p_0(x) + \tfrac NB \sum_{i\in I}\nabla\ell(x; d_i)`, minibatches
:math:`I` of size :math:`B` taken without replacement from a fresh permutation each epoch (the
last ``N mod B`` items of a permutation are skipped; each step's estimate is unbiased over the
permutation). The permutation's key comes from the step's own noise, so SGLD runs in the loop of
`infer.sample` like the other kernels. An optional decreasing schedule
:math:`h_t = h_0 (1 + t/b)^{-\gamma}`, :math:`\gamma\in(0.5, 1]`, gives Welling & Teh's
conditions :math:`\sum h_t = \infty, \sum h_t^2 < \infty`; the step size used is reported in
the info so averages can weight iterates by it.

Spherical Langevin
------------------
Langevin dynamics on the unit sphere :math:`S^{d-1}` for a density :math:`\propto e^{f(\theta)}`
against the uniform measure: with the tangent projector :math:`P_\theta = I - \theta\theta^\top`,

.. math:: d\theta = \big[P_\theta\nabla f(\theta) - (d-1)\,\theta\big]dt + \sqrt2\,P_\theta\,dW

(the :math:`-(d-1)\theta` drift, :math:`-\tfrac{d-1}2\theta` for unit noise, keeps the
diffusion on the sphere). One step moves in the tangent space and retracts by normalising,
:math:`\theta' = y/\lVert y\rVert`, :math:`y = \theta + hP_\theta\nabla f + \sqrt{2h}\,P_\theta\xi`:
since :math:`\lVert y\rVert^{-1} = 1 - h\lVert P_\theta\xi\rVert^2 + O(h^{3/2})` and
:math:`E\lVert P_\theta\xi\rVert^2 = d-1`, the normalisation is what realises the radial
drift, to the order of the scheme. This is the dynamics of Wei, Damian & Lee (2026), "Improved
high-dimensional estimation with Langevin dynamics and stochastic weight averaging", whose
estimator is the time average of the iterates (`driftax.infer.recover_direction`).

**With a preconditioner.** For a constant symmetric positive-definite metric :math:`M` (the
``inverse_mass_matrix``: a vector for a diagonal one, or a matrix) the diffusion matrix becomes
:math:`A(\theta) = P_\theta M P_\theta`, tangent at every point (:math:`A\theta = 0`). The
diffusion :math:`L\varphi = e^{-f}\,\mathrm{div}_S\!\big(e^f A\,\nabla_S\varphi\big)`, with
:math:`\nabla_S = P_\theta\nabla` and :math:`\mathrm{div}_S V = \mathrm{tr}(P_\theta DV)` the
surface divergence, is symmetric in :math:`L^2(e^f\sigma)` (integrate by parts on the closed
sphere), so :math:`e^f` times the surface measure :math:`\sigma` is invariant. Expanding it with
the ambient formula :math:`P(x) = I - xx^\top`, :math:`\partial_j P_{ia} = -(\delta_{ij}x_a + x_i\delta_{aj})`,
:math:`P\theta = 0` and :math:`\mathrm{tr}P = d-1` on the sphere:

.. math:: L\varphi = A : \nabla^2\varphi + b\cdot\nabla\varphi, \qquad
          b = A\nabla f + \mathrm{div}_S A, \qquad
          (\mathrm{div}_S A)_i = \textstyle\sum_{jk} P_{jk}\,\partial_k A_{ij}
          = -d\,(P_\theta M\theta)_i - \mathrm{tr}(P_\theta M)\,\theta_i,

that is, the Itô diffusion

.. math:: d\theta = \big[P M P\,\nabla f - d\,P M\theta - \mathrm{tr}(PM)\,\theta\big]dt
          + \sqrt2\,P M^{1/2} dW.

Its normal drift :math:`-\mathrm{tr}(PM)\theta = -\mathrm{tr}(A)\theta` is exactly what keeps
:math:`\lVert\theta\rVert = 1` (Itô: :math:`d\lVert\theta\rVert^2 = 2\theta^\top b\,dt + 2\,\mathrm{tr}A\,dt`),
and the normalisation realises it again: :math:`E\lVert P M^{1/2}\xi\rVert^2 = \mathrm{tr}(PMP)`. So
the step is :math:`y = \theta + h\,(PMP\nabla f - d\,PM\theta) + \sqrt{2h}\,P M^{1/2}\xi`,
:math:`\theta' = y/\lVert y\rVert`. The tangent term :math:`-d\,PM\theta` is the part of the
divergence a naive "precondition the drift and the noise" scheme misses; without it the chain
drifts towards the small-:math:`M` directions and samples the wrong law (the test of a von
Mises-Fisher target sees it). For :math:`M = I` it vanishes (:math:`P\theta = 0`) and the step is
the one above; for :math:`M = cI` it is the identity step with step size :math:`ch`. (Checked
independently of this code by quadrature on :math:`S^2`: :math:`E_\pi[L\varphi] = 0` to 1e-13 for a
dense :math:`M` and polynomial :math:`\varphi`, against 5.7 without the :math:`-d\,PM\theta` term.)
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from blackjax.base import SamplingAlgorithm
from jax import lax
from jax.flatten_util import ravel_pytree
from jax.scipy.special import log_ndtr

from driftax.samplers.rng import key_from_normals

Array = jax.Array

__all__ = ["MALAState", "MALAInfo", "init", "step", "noise_size", "build_kernel", "mala",
           "ula_step", "ula_noise_size", "ula_build_kernel", "ula",
           "Minibatch", "SGLDState", "SGLDInfo", "sgld_init", "sgld_step", "sgld_noise_size",
           "sgld_build_kernel", "sgld", "minibatch_logdensity",
           "spherical_init", "spherical_step", "spherical_noise_size", "spherical_build_kernel", "spherical"]


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


def _key_driven(step_fn, size_fn):
    """BlackJAX's ``build_kernel()`` for a noise-driven step: the kernel draws the step's normals from its key."""
    def build_kernel():
        def kernel(rng_key, state, density, step_size, inverse_mass_matrix=None):
            x, _ = ravel_pytree(state.position)
            noise = jax.random.normal(rng_key, (size_fn(x.shape[0]),), x.dtype)
            return step_fn(state, noise, density, step_size, inverse_mass_matrix)
        return kernel
    return build_kernel


def _algorithm(init_fn, kernel, density, step_size, inverse_mass_matrix) -> SamplingAlgorithm:
    """A BlackJAX ``SamplingAlgorithm`` from ``init`` and a key-driven kernel, after the boundary checks."""
    _check_step_size(step_size)
    _check_inverse_mass_matrix(inverse_mass_matrix)

    def init_(position, rng_key=None):
        del rng_key  # BlackJAX's loops may pass one
        return init_fn(position, density)

    def step_(rng_key, state):
        return kernel(rng_key, state, density, step_size, inverse_mass_matrix)

    return SamplingAlgorithm(init_, step_)


build_kernel = _key_driven(step, noise_size)
build_kernel.__doc__ = """Build the MALA transition ``kernel(key, state, logdensity_fn, step_size, inverse_mass_matrix=None)``."""


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
    return _algorithm(init, build_kernel(), logdensity_fn, step_size, inverse_mass_matrix)


# --------------------------------------------------------------------------------------------
# ULA
# --------------------------------------------------------------------------------------------
def _finite_move(state: MALAState, x_new, logp_new, g_new, unravel):
    """Take a move only where the log-density, gradient and position are finite."""
    x, _ = ravel_pytree(state.position)
    g, _ = ravel_pytree(state.logdensity_grad)
    finite = jnp.isfinite(logp_new) & jnp.all(jnp.isfinite(g_new)) & jnp.all(jnp.isfinite(x_new))
    new_state = MALAState(
        unravel(jnp.where(finite, x_new, x)),
        jnp.where(finite, logp_new, state.logdensity),
        unravel(jnp.where(finite, g_new, g)),
    )
    return new_state, MALAInfo(finite.astype(x.dtype), finite, ~finite)


def ula_step(state: MALAState, noise: Array, logdensity_fn: Callable, step_size,
             inverse_mass_matrix=None) -> tuple[MALAState, MALAInfo]:
    """One unadjusted Langevin step ``x' = x + h A ∇log p(x) + √(2h) A^{1/2} ξ`` driven by ``dim`` normals.

    The move is always taken (unless not finite: then the chain stays and the step is flagged
    ``diverging``). The info's ``acceptance_rate`` is the probability ``min(1, α)`` with which MALA
    would have accepted the same move (module docstring): it costs two dot products, measures the
    local discretisation error. (``infer.sample(..., "ula", target_acceptance=...)`` tunes ULA's
    step size in a warm-up that runs MALA on the same noise: tuned on ULA's own moves, a chain that
    runs away during the search never comes back.)
    """
    x, unravel = ravel_pytree(state.position)
    g, _ = ravel_pytree(state.logdensity_grad)
    sqrt_a, apply_a = _sqrt_and_apply(inverse_mass_matrix)
    h = jnp.asarray(step_size, x.dtype)
    eta = sqrt_a(noise[: x.shape[0]].astype(x.dtype))
    x_new = x + h * apply_a(g) + jnp.sqrt(2 * h) * eta
    logp_new, g_new_tree = jax.value_and_grad(logdensity_fn)(unravel(x_new))
    g_new = ravel_pytree(g_new_tree)[0]
    new_state, info = _finite_move(state, x_new, logp_new, g_new, unravel)
    s = g + g_new
    log_alpha = logp_new - state.logdensity - 0.25 * h * jnp.dot(s, apply_a(s)) - jnp.sqrt(0.5 * h) * jnp.dot(s, eta)
    would_accept = jnp.where(info.is_accepted & jnp.isfinite(log_alpha), jnp.exp(jnp.minimum(log_alpha, 0.0)), 0.0)
    return new_state, info._replace(acceptance_rate=would_accept.astype(x.dtype))


def ula_noise_size(dim: int) -> int:
    return dim


ula_build_kernel = _key_driven(ula_step, ula_noise_size)


def ula(logdensity_fn: Callable, step_size: float, inverse_mass_matrix=None) -> SamplingAlgorithm:
    """ULA as a BlackJAX ``SamplingAlgorithm`` (same arguments as `mala`)."""
    return _algorithm(init, ula_build_kernel(), logdensity_fn, step_size, inverse_mass_matrix)


# --------------------------------------------------------------------------------------------
# SGLD
# --------------------------------------------------------------------------------------------
class Minibatch(NamedTuple):
    """What SGLD evaluates: a data-indexed log-density, a batch size and a step-size schedule.

    ``decay_steps = b`` and ``decay_power = γ`` give ``h_t = h_0 (1 + t/b)^{-γ}``; ``γ = 0`` keeps
    the step size fixed.
    """

    likelihood: object  # driftax.models.DataLikelihood
    batch_size: int
    decay_steps: float = 1.0
    decay_power: float = 0.0


class SGLDState(NamedTuple):
    """Position, the minibatch estimate of log p and its gradient there, and the epoch's order."""

    position: Array
    logdensity: Array
    logdensity_grad: Array
    permutation: Array  # (N,) int32: this epoch's order of the data
    cursor: Array  # next unused index into ``permutation``
    count: Array  # steps taken (drives the step-size schedule)


class SGLDInfo(NamedTuple):
    acceptance_rate: Array
    is_accepted: Array
    diverging: Array
    step_size: Array  # h_t actually used


def minibatch_logdensity(mb: Minibatch, x, indices):
    """``(log p̂, ∇log p̂)`` at ``x`` from the data at ``indices``: prior + (N/B) Σ_{i∈I} ℓ(x; d_i)."""
    return jax.value_and_grad(mb.likelihood.minibatch)(x, indices)


def sgld_init(position, mb: Minibatch) -> SGLDState:
    """State at ``position`` with the exact (full-data) log-density and gradient; the first step
    starts a fresh epoch (the cursor is at the end)."""
    n = mb.likelihood.size
    logp, grad = jax.value_and_grad(mb.likelihood.logdensity)(position)
    return SGLDState(position, logp, grad, jnp.arange(n, dtype=jnp.int32), jnp.asarray(n, jnp.int32),
                     jnp.zeros((), jnp.int32))


def sgld_step(state: SGLDState, noise: Array, mb: Minibatch, step_size,
              inverse_mass_matrix=None) -> tuple[SGLDState, SGLDInfo]:
    """One SGLD step ``x' = x + h_t A ĝ(x) + √(2h_t) A^{1/2} ξ`` with ``ĝ`` the stored minibatch
    gradient at ``x``; then the next minibatch's estimate at ``x'``. Consumes ``dim + 2`` normals
    (the last two seed the next epoch's permutation when one is needed)."""
    x, g = state.position, state.logdensity_grad
    dim = x.shape[0]
    n, b = mb.likelihood.size, mb.batch_size
    sqrt_a, apply_a = _sqrt_and_apply(inverse_mass_matrix)
    h = (jnp.asarray(step_size, x.dtype)
         * (1.0 + state.count.astype(x.dtype) / mb.decay_steps) ** (-mb.decay_power))
    x_new = x + h * apply_a(g) + jnp.sqrt(2 * h) * sqrt_a(noise[:dim].astype(x.dtype))

    fresh = state.cursor + b > n  # too few unused items left: a new epoch
    perm = lax.cond(fresh, lambda: jax.random.permutation(key_from_normals(noise[dim:dim + 2]), n).astype(jnp.int32),
                    lambda: state.permutation)
    cursor = jnp.where(fresh, 0, state.cursor)
    indices = lax.dynamic_slice(perm, (cursor,), (b,))
    logp_new, g_new = minibatch_logdensity(mb, x_new, indices)

    finite = jnp.isfinite(logp_new) & jnp.all(jnp.isfinite(g_new)) & jnp.all(jnp.isfinite(x_new))
    new = SGLDState(jnp.where(finite, x_new, x), jnp.where(finite, logp_new, state.logdensity),
                    jnp.where(finite, g_new, g), perm, cursor + b, state.count + 1)
    return new, SGLDInfo(finite.astype(x.dtype), finite, ~finite, h)


def sgld_noise_size(dim: int) -> int:
    return dim + 2


sgld_build_kernel = _key_driven(sgld_step, sgld_noise_size)


def check_minibatch(likelihood, batch_size, decay_steps=1.0, decay_power=0.0) -> Minibatch:
    """Validated `Minibatch`: ``1 <= batch_size <= N``, ``decay_steps > 0``, ``γ = 0`` or ``0.5 < γ <= 1``."""
    if likelihood is None or not all(hasattr(likelihood, a) for a in ("loglik_fn", "data", "logprior_fn")):
        raise TypeError("SGLD needs a data-indexed log-density (driftax.models.DataLikelihood): give the "
                        "Target a data_likelihood")
    n = likelihood.size
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
        raise TypeError(f"batch_size must be an integer, got {batch_size!r}")
    if not 1 <= batch_size <= n:
        raise ValueError(f"batch_size must lie in [1, {n}] (the number of data), got {batch_size}")
    decay_steps, decay_power = float(decay_steps), float(decay_power)
    if not (np.isfinite(decay_steps) and decay_steps > 0):
        raise ValueError(f"decay_steps must be positive, got {decay_steps}")
    if not (decay_power == 0.0 or 0.5 < decay_power <= 1.0):
        raise ValueError(f"decay_power must be 0 (fixed step) or in (0.5, 1] (Welling & Teh), got {decay_power}")
    return Minibatch(likelihood, int(batch_size), decay_steps, decay_power)


def sgld(likelihood, step_size: float, batch_size: int, inverse_mass_matrix=None, *,
         decay_steps: float = 1.0, decay_power: float = 0.0) -> SamplingAlgorithm:
    """SGLD as a BlackJAX ``SamplingAlgorithm`` over a `driftax.models.DataLikelihood`."""
    mb = check_minibatch(likelihood, batch_size, decay_steps, decay_power)
    return _algorithm(sgld_init, sgld_build_kernel(), mb, step_size, inverse_mass_matrix)


# --------------------------------------------------------------------------------------------
# spherical Langevin
# --------------------------------------------------------------------------------------------
def spherical_init(position, logdensity_fn: Callable) -> MALAState:
    """State at ``position / |position|`` (the start is put on the sphere)."""
    position = position / jnp.linalg.norm(position)
    return init(position, logdensity_fn)


def spherical_step(state: MALAState, noise: Array, logdensity_fn: Callable, step_size,
                   inverse_mass_matrix=None) -> tuple[MALAState, MALAInfo]:
    """``θ' = y/|y|``, ``y = θ + h (PMP∇f(θ) - d PMθ) + √(2h) P M^{1/2} ξ`` with ``P = I - θθᵀ`` and
    ``M`` the ``inverse_mass_matrix`` (module docstring: the ``-d PMθ`` term is the divergence of
    ``PMP`` on the sphere). ``None`` is ``M = I``: ``y = θ + h P∇f(θ) + √(2h) P ξ``."""
    theta, g = state.position, state.logdensity_grad
    dim = theta.shape[0]
    h = jnp.asarray(step_size, theta.dtype)
    tangent = lambda v: v - theta * jnp.dot(theta, v)
    xi = noise[:dim].astype(theta.dtype)
    if inverse_mass_matrix is None:
        y = theta + h * tangent(g) + jnp.sqrt(2 * h) * tangent(xi)
    else:
        sqrt_m, apply_m = _sqrt_and_apply(inverse_mass_matrix)
        drift = tangent(apply_m(tangent(g))) - dim * tangent(apply_m(theta))
        y = theta + h * drift + jnp.sqrt(2 * h) * tangent(sqrt_m(xi))
    theta_new = y / jnp.linalg.norm(y)
    logp_new, g_new = jax.value_and_grad(logdensity_fn)(theta_new)
    return _finite_move(state, theta_new, logp_new, g_new, lambda v: v)


def spherical_noise_size(dim: int) -> int:
    return dim


spherical_build_kernel = _key_driven(spherical_step, spherical_noise_size)


def spherical(logdensity_fn: Callable, step_size: float, inverse_mass_matrix=None) -> SamplingAlgorithm:
    """Spherical Langevin as a BlackJAX ``SamplingAlgorithm``, optionally with a constant metric
    ``inverse_mass_matrix`` (``None``, a positive vector or an SPD matrix; module docstring)."""
    if not callable(logdensity_fn):
        raise TypeError("logdensity_fn must be callable")
    return _algorithm(spherical_init, spherical_build_kernel(), logdensity_fn, step_size, inverse_mass_matrix)


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
