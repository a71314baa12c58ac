r"""PaRIS (Olsson & Westerborn 2017) and PaRIS particle Gibbs (Cardoso, Janati El Idrissi, Le Corff,
Moulines, Olsson 2023).

Additive functionals ``h(x_{0:T-1}) = h_0(x_0) + Σ_{t≥1} h_t(x_{t-1}, x_t)`` with values in ``R^p``
(`AdditiveFunctional`; ``state_sum`` = ``Σ x_t``, ``cross_moment`` = ``Σ x_{t-1} x_tᵀ``, or a score).

**PaRIS.** Along a bootstrap filter ``(ξ_t^i, ω_t^i)`` (`driftax.samplers.smc`), every particle carries
``τ_t^i ≈ E[h(x_{0:t}) | x_t = ξ_t^i, y_{0:t}]``: ``τ_0^i = h_0(ξ_0^i)`` and, after propagating to ``t``,
for each ``i`` draw ``K`` backward indices ``J^{i,k}`` with ``P(J = l) ∝ ω_{t-1}^l q_t(ξ_{t-1}^l, ξ_t^i)``
and set

.. math::
    τ_t^i = \frac1K \sum_{k=1}^K \big[τ_{t-1}^{J^{i,k}} + h_t(ξ_{t-1}^{J^{i,k}}, ξ_t^i)\big],
    \qquad \hat\Pi = \sum_i ω_{T-1}^i τ_{T-1}^i / \sum_i ω_{T-1}^i .

``K ≥ 2`` keeps the variance linear in ``T`` (Olsson & Westerborn 2017, Thm 9); the cost is ``O(N K)``
per step with accept-reject backward draws (`driftax.samplers.smc.backward_indices`). The estimate is a
self-normalised importance sampling estimate with ``O(T/N)`` bias.

**PaRIS particle Gibbs (PPG).** One kernel step takes a reference path ``ζ_{0:T-1}``, runs PaRIS on
conditional SMC (``ζ_t`` frozen in slot 0 at every ``t``, weighted, resampled-from and backward-drawn
like any particle), returns ``\hat\Pi`` and a new reference by backward sampling through the cloud:
``I_{T-1} ~ ω_{T-1}`` and ``I_{t-1} = J_t^{I_t, 1}`` (the first PaRIS backward draw of particle ``I_t``
is a draw of the backward kernel, independent of everything used later along the path). The roll-out
runs ``k`` steps and averages ``\hat\Pi`` over the steps after the burn-in ``k_0``. If ``ζ`` follows the
smoothing law, each step's ``\hat\Pi`` is unbiased (the kernel leaves the smoothing law invariant and the
conditional estimate is unbiased under it; Cardoso et al. 2023, Prop. 1); the bias of the roll-out
comes only from the burn-in and decays geometrically in ``k_0``.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from driftax.samplers import smc

__all__ = ["AdditiveFunctional", "state_sum", "cross_moment", "concat", "ParisOutput", "paris",
           "PPGStepInfo", "ppg_step", "PPGOutput", "ppg", "initial_reference"]


class AdditiveFunctional(NamedTuple):
    """``h = init(x_0, y_0) + Σ_{t≥1} step(t, x_{t-1}, x_t, y_t)``, each of shape ``(dim,)``."""

    init: Callable
    step: Callable
    dim: int
    name: str = "h"


def state_sum(state_dim: int) -> AdditiveFunctional:
    """``Σ_{t=0}^{T-1} x_t`` (shape ``(d,)``)."""
    return AdditiveFunctional(lambda x, y: x, lambda t, xp, x, y: x, state_dim, "state_sum")


def cross_moment(state_dim: int) -> AdditiveFunctional:
    """``Σ_{t=0}^{T-2} x_t x_{t+1}ᵀ`` flattened row-major (shape ``(d²,)``)."""
    return AdditiveFunctional(lambda x, y: jnp.zeros((state_dim * state_dim,), x.dtype),
                              lambda t, xp, x, y: jnp.outer(xp, x).ravel(), state_dim * state_dim,
                              "cross_moment")


def concat(*fs: AdditiveFunctional) -> AdditiveFunctional:
    """The functionals stacked into one vector (one PaRIS pass estimates all)."""
    return AdditiveFunctional(lambda x, y: jnp.concatenate([f.init(x, y) for f in fs]),
                              lambda t, xp, x, y: jnp.concatenate([f.step(t, xp, x, y) for f in fs]),
                              sum(f.dim for f in fs), "+".join(f.name for f in fs))


class ParisOutput(NamedTuple):
    """``estimate (p,)``; the final statistics ``tau (N, p)`` and ``log_weights (N,)``; the filter's
    log-likelihood estimate; the history ``particles (T, N, d)`` and first backward index
    ``backward (T, N)`` (``None`` unless stored); exact fall-backs of the backward draws; ``finite``."""

    estimate: jax.Array
    tau: jax.Array
    log_weights: jax.Array
    loglik: jax.Array
    particles: jax.Array | None
    backward: jax.Array | None
    fallbacks: jax.Array
    finite: jax.Array


def paris(key, model, theta, ys, functional: AdditiveFunctional, num_particles: int, *, K: int = 2,
          scheme: str = "systematic", ess_threshold: float = 1.0, backward: str = "hybrid",
          max_trials: int = 8, reference=None, frozen=True, store: bool = False) -> ParisOutput:
    """PaRIS along a bootstrap filter, or along conditional SMC when ``reference (T, d)`` is given.

    ``frozen`` (a bool, possibly traced; only with ``reference``) False runs the sweep unconditionally
    (multinomial resampling, the reference ignored): see `driftax.samplers.smc.filter_step`.

    Pure and jit-able (``model``, ``functional``, the sizes and the method names static). Inputs are
    validated by `driftax.infer.smoothing`.
    """
    ys = jnp.asarray(ys)
    return _paris(jax.random.split(key, 2 * ys.shape[0] - 1), model, theta, ys, functional, num_particles, K=K,
                  scheme=scheme, ess_threshold=ess_threshold, backward=backward, max_trials=max_trials,
                  reference=reference, frozen=frozen, store=store)


def _paris(keys, model, theta, ys, functional, num_particles, *, K, scheme, ess_threshold, backward, max_trials,
           reference, frozen, store) -> ParisOutput:
    """`paris` from ``2T - 1`` pre-split keys (the initial draw's, then two per step): one split for the sweep
    rather than one per step (each random-number call site inlines a Threefry block into the program)."""
    T, N = ys.shape[0], num_particles
    k0 = keys[0]
    ref0 = None if reference is None else reference[0]
    x0, lw0, ll0 = smc.filter_init(k0, model, theta, ys[0], N, ref0, frozen)
    tau0 = jax.vmap(lambda x: functional.init(x, ys[0]))(x0)

    M = N * K
    n_back = smc.backward_uniforms(backward, model, max_trials, M)

    def body(carry, inp):
        x, lw, tau, ll, nfb = carry
        k, t, y, r = inp
        # all of the step's uniforms (resampling, accept-reject proposals and tests, exact fall-backs) in one
        # random-number call, the keys pre-split outside the loop: each call site inlines a Threefry block
        # into the compiled step; there were nine (over half of its fused kernels), now two (this one and
        # the model's transition draw)
        u = jax.random.uniform(k[0], (N + n_back,), lw.dtype)
        out = smc.filter_step_from_uniforms(u[:N], k[1], model, theta, t, x, lw, y, scheme=scheme,
                                            ess_threshold=ess_threshold,
                                            reference=None if reference is None else r, frozen=frozen)
        x_rep = jnp.repeat(out.x, K, axis=0)
        J, n = smc.backward_indices_from_uniforms(u[N:], model, theta, t, x, lw, x_rep, method=backward,
                                                  max_trials=max_trials)
        h = jax.vmap(lambda xp, xn: functional.step(t, xp, xn, y))(x[J], x_rep)
        tau_new = (tau[J] + h).reshape(N, K, -1).mean(1)
        J = J.reshape(N, K)
        hist = (out.x, J[:, 0]) if store else None
        return (out.x, out.log_weights, tau_new, ll + out.loglik_increment, nfb + n), hist

    refs = reference[1:] if reference is not None else jnp.zeros((T - 1,))
    (x, lw, tau, ll, nfb), hist = lax.scan(
        body, (x0, lw0, tau0, ll0, jnp.int32(0)),
        (keys[1:].reshape(T - 1, 2), jnp.arange(1, T), ys[1:], refs))
    W = jax.nn.softmax(lw)
    est = W @ tau
    particles = back = None
    if store:
        particles = jnp.concatenate([x0[None], hist[0]])
        back = jnp.concatenate([jnp.arange(N)[None], hist[1]])
    finite = jnp.all(jnp.isfinite(est)) & jnp.isfinite(ll) & jnp.all(jnp.isfinite(x))
    return ParisOutput(est, tau, lw, ll, particles, back, nfb, finite)


class PPGStepInfo(NamedTuple):
    estimate: jax.Array
    loglik: jax.Array
    fallbacks: jax.Array
    finite: jax.Array


def _path_from(key, out: ParisOutput):
    last = smc.resample(key, out.log_weights, 1, "multinomial")
    idx = smc.trace_paths(out.backward, last)
    return smc.gather_paths(out.particles, idx)[0]


def ppg_step(key, model, theta, ys, reference, functional: AdditiveFunctional, num_particles: int, *,
             K: int = 2, backward: str = "hybrid", max_trials: int = 8, frozen=True):
    """One PPG kernel step: ``(new reference (T, d), PPGStepInfo)`` (module docstring).

    With ``frozen`` False (a bool, possibly traced) the sweep ignores ``reference``: PaRIS on an
    unconditional filter (multinomial resampling), its estimate a plain PaRIS estimate and the returned
    path one backward-sampled path through that filter, which is how a PPG chain starts without a
    reference inside the same compiled sweep (`ppg`, `driftax.infer.learning`).
    """
    ys = jnp.asarray(ys)
    keys = jax.random.split(key, 2 * ys.shape[0])  # the sweep's 2T - 1 keys and the path's
    out = _paris(keys[:-1], model, theta, ys, functional, num_particles, K=K, scheme="systematic", ess_threshold=1.0,
                 backward=backward, max_trials=max_trials, reference=reference, frozen=frozen, store=True)
    return _path_from(keys[-1], out), PPGStepInfo(out.estimate, out.loglik, out.fallbacks, out.finite)


def initial_reference(key, model, theta, ys, num_particles: int, *, backward: str = "hybrid",
                      max_trials: int = 8):
    """A first reference: one backward-sampled path through a bootstrap filter of ``num_particles``
    (systematic resampling). `ppg` does not call it: its first, unconditional sweep gives the same kind
    of path without compiling a second filter."""
    k_f, k_b = jax.random.split(key)
    out = smc.bootstrap_filter(k_f, model, theta, ys, num_particles)
    idx, _ = smc.backward_paths(k_b, model, theta, out, 1, method=backward, max_trials=max_trials)
    return smc.gather_paths(out.particles, idx)[0]


class PPGOutput(NamedTuple):
    """``estimate`` = mean of ``estimates[burn_in:]``; per-iteration ``estimates (k, p)`` and
    ``references (k, T, d)`` (the path after each step); exact fall-backs; ``finite``."""

    estimate: jax.Array
    estimates: jax.Array
    references: jax.Array
    fallbacks: jax.Array
    finite: jax.Array


def ppg(key, model, theta, ys, functional: AdditiveFunctional, num_particles: int, num_iterations: int,
        burn_in: int, *, K: int = 2, reference=None, backward: str = "hybrid", max_trials: int = 8) -> PPGOutput:
    """The PPG roll-out: ``num_iterations`` kernel steps from ``reference``, averaging the estimates of
    steps ``burn_in+1 .. num_iterations``.

    Without ``reference`` the chain starts from one backward-sampled path through an unconditional
    filter of ``num_particles`` (multinomial resampling): a first sweep of the same compiled kernel with
    the freezing switched off (`ppg_step` with ``frozen=False``), whose estimate is discarded. One
    sweep body serves all ``num_iterations + 1`` sweeps, so the program compiles one filter, not two.
    """
    keys = jax.random.split(key, num_iterations + 1)
    start = reference is None
    if start:
        ys_ = jnp.asarray(ys)
        reference = jnp.zeros((ys_.shape[0], model.state_dim), ys_.dtype)  # ignored by the first sweep
        frozen = jnp.arange(num_iterations + 1) > 0
    else:
        keys = keys[1:]
        frozen = jnp.ones((num_iterations,), bool)

    def body(ref, inp):
        k, fz = inp
        new, info = ppg_step(k, model, theta, ys, ref, functional, num_particles, K=K, backward=backward,
                             max_trials=max_trials, frozen=fz if start else True)
        return new, (new, info)

    _, (refs, info) = lax.scan(body, reference, (keys, frozen))
    fallbacks, finite = jnp.sum(info.fallbacks), jnp.all(info.finite)  # every sweep, the first included
    estimates = info.estimate
    if start:  # the unconditional first sweep only supplies the starting path
        refs, estimates = refs[1:], estimates[1:]
    est = jnp.mean(estimates[burn_in:], axis=0)
    return PPGOutput(est, estimates, refs, fallbacks, finite)
