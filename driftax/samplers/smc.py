r"""Particle filters for `driftax.models.ssm.StateSpaceModel`: resampling, bootstrap and conditional SMC,
backward sampling.

Bootstrap particle filter (Gordon, Salmond, Smith 1993): at ``t = 0`` draw ``ξ_0^i ~ η``, weight
``ω_0^i = g_0(ξ_0^i)``; at ``t ≥ 1`` (if the effective sample size ``1/Σ W²`` of the normalised weights
``W`` is below ``ess_threshold · N``, or always for ``ess_threshold = 1``) draw ancestors
``A^i ~ W`` and reset the carried weights to 1, propagate ``ξ_t^i ~ q_t(ξ_{t-1}^{A^i}, ·)`` and
multiply the carried weight by ``g_t(ξ_t^i)``. The log-likelihood estimate
``log Ẑ = Σ_t log(Σ_i ω̄_{t-1}^i g_t(ξ_t^i) / Σ_i ω̄_{t-1}^i)`` (``ω̄`` the carried weights) is
unbiased for ``Z = p(y_{0:T-1})`` on the natural scale (Del Moral 2004, Thm 7.4.2).

Resampling schemes (Douc, Cappé, Moulines 2005): ``multinomial`` (i.i.d. inverse-CDF draws),
``stratified`` (one uniform per stratum ``[(i-1)/N, i/N)``), ``systematic`` (one uniform shifted by
``i/N``), ``residual`` (``⌊N W^i⌋`` copies, the rest multinomial on the residual weights). All four are
unbiased: ``E[#{j: A^j = i}] = N W^i``.

Conditional SMC (Andrieu, Doucet, Holenstein 2010): slot 0 holds a frozen reference path ``ζ`` at
every step (its ancestor is slot 0), is weighted like the others and is available as an ancestor;
the other slots resample multinomially every step, which makes the kernel leave the smoothing law
invariant.

Backward sampling (Godsill, Doucet, West 2004): given particles ``ξ_{t+1}^m`` draw
``J^m = l`` with probability ``∝ ω_t^l q_{t+1}(ξ_t^l, ξ_{t+1}^m)``. ``"exact"`` computes the full
``(M, N)`` weights and inverts each row's CDF. ``"hybrid"`` (Douc, Garivier, Moulines, Olsson 2011)
proposes ``l ~ ω_t`` and accepts with probability ``q/q̄`` (``q̄`` the model's bound), for at most
``max_trials`` proposals drawn at once (static shapes); the draws still unaccepted get the exact
draw, computed ``chunk`` rows at a time inside a ``while_loop`` so the cost stays ``O(chunk · N)`` per
pass. The result has exactly the backward law either way (a capped accept-reject mixed with exact
draws on failure is exact).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.scipy.special import logsumexp

__all__ = ["RESAMPLING", "BACKWARD", "resample", "ess", "FilterOutput", "bootstrap_filter",
           "conditional_smc", "backward_indices", "backward_paths", "trace_paths", "gather_paths", "log_g_batch",
           "filter_init", "filter_step", "StepOut", "resample_from_uniforms", "filter_step_from_uniforms",
           "backward_uniforms", "backward_indices_from_uniforms"]

RESAMPLING = ("multinomial", "systematic", "stratified", "residual")
BACKWARD = ("exact", "hybrid")


# --- weights and resampling ---------------------------------------------------------------------
def ess(log_weights):
    """Effective sample size ``(Σ ω)² / Σ ω²`` of unnormalised log-weights."""
    w = jnp.exp(log_weights - jnp.max(log_weights))
    return jnp.sum(w) ** 2 / jnp.sum(w * w)


def _cdf(log_weights):
    w = jnp.exp(log_weights - jnp.max(log_weights))
    c = jnp.cumsum(w)
    return c / c[-1]


def _invert(cdf, u):
    """Indices ``i`` with ``cdf[i-1] <= u < cdf[i]`` (clipped: float rounding can leave ``cdf[-1] < 1``)."""
    return jnp.clip(jnp.searchsorted(cdf, u, side="right"), 0, cdf.shape[0] - 1)


def _uniform_shape(scheme: str, num: int):
    """Shape of the uniforms `resample` draws for ``scheme`` (systematic: one shared uniform)."""
    return () if scheme == "systematic" else (num,)


def resample(key, log_weights, num: int | None = None, scheme: str = "systematic"):
    """``num`` ancestor indices (default ``N``) drawn from the normalised weights by ``scheme``.

    Every scheme is unbiased: ``E[#{j: A^j = i}] = num · W^i``.
    """
    if scheme not in RESAMPLING:
        raise ValueError(f"scheme must be one of {RESAMPLING}, got {scheme!r}")
    num = log_weights.shape[0] if num is None else num
    u = jax.random.uniform(key, _uniform_shape(scheme, num), log_weights.dtype)
    return resample_from_uniforms(u, log_weights, num, scheme)


def resample_from_uniforms(u, log_weights, num: int, scheme: str = "systematic"):
    """`resample` driven by given i.i.d. U[0, 1) draws ``u`` (``(num,)``; systematic uses ``u`` if scalar,
    else ``u[0]``), so a sweep can draw all of a step's uniforms in one random-number call."""
    n = log_weights.shape[0]
    cdf = _cdf(log_weights)
    dtype = cdf.dtype
    u = jnp.asarray(u, dtype)
    if scheme == "multinomial":
        return _invert(cdf, u)
    if scheme == "stratified":
        return _invert(cdf, (jnp.arange(num, dtype=dtype) + u) / num)
    if scheme == "systematic":
        u0 = u if u.ndim == 0 else u[0]
        return _invert(cdf, (jnp.arange(num, dtype=dtype) + u0) / num)
    if scheme == "residual":
        w = jnp.diff(cdf, prepend=jnp.zeros((1,), dtype))
        counts = jnp.floor(num * w).astype(jnp.int32)
        det = jnp.repeat(jnp.arange(n), counts, total_repeat_length=num)
        n_det = jnp.sum(counts)
        resid = jnp.maximum(num * w - counts, 0.0)
        # if every weight is an exact multiple of 1/num the residual is 0 and no slot needs it
        resid = jnp.where(jnp.sum(resid) > 0, resid, jnp.ones_like(resid))
        rand = _invert(jnp.cumsum(resid) / jnp.sum(resid), u)
        return jnp.where(jnp.arange(num) < n_det, det, rand)
    raise ValueError(f"scheme must be one of {RESAMPLING}, got {scheme!r}")


def log_g_batch(model, theta, t, xs, y):
    """``log g_θ(t; ξ^i, y)`` for every particle (0 on a missing row of a model that allows it)."""
    return jax.vmap(lambda x: model.log_g(theta, t, x, y))(xs)


# --- one step of the filter (shared by the bootstrap filter, conditional SMC and PaRIS) -----------
class StepOut(NamedTuple):
    x: jax.Array
    log_weights: jax.Array
    ancestors: jax.Array
    loglik_increment: jax.Array
    resampled: jax.Array


def filter_init(key, model, theta, y0, num_particles: int, reference0=None, frozen=True):
    """``(ξ_0, log ω_0, log Ẑ_0)``; slot 0 is ``reference0`` when given (and ``frozen``, see `filter_step`)."""
    x = model.init_sample(key, theta, num_particles)
    if reference0 is not None:
        x = x.at[0].set(reference0 if frozen is True else jnp.where(frozen, reference0, x[0]))
    lw = log_g_batch(model, theta, 0, x, y0)
    return x, lw, logsumexp(lw) - jnp.log(num_particles)


def filter_step(key, model, theta, t, x, log_weights, y, *, scheme="systematic", ess_threshold=1.0,
                reference=None, frozen=True) -> StepOut:
    """Resample (adaptively) and propagate from ``t-1`` to ``t``; ``reference`` freezes slot 0 (CSMC).

    ``frozen`` (a bool, possibly traced) switches the freezing off: with ``reference`` given and
    ``frozen`` False the step is an unconditional step with multinomial resampling, so one compiled
    sweep serves both the unconditional start of a PPG chain and its conditional sweeps.
    """
    k_res, k_mov = jax.random.split(key)
    sch = "multinomial" if reference is not None else scheme
    u = jax.random.uniform(k_res, _uniform_shape(sch, x.shape[0]), log_weights.dtype)
    return filter_step_from_uniforms(u, k_mov, model, theta, t, x, log_weights, y, scheme=scheme,
                                     ess_threshold=ess_threshold, reference=reference, frozen=frozen)


def filter_step_from_uniforms(u, key_move, model, theta, t, x, log_weights, y, *, scheme="systematic",
                              ess_threshold=1.0, reference=None, frozen=True) -> StepOut:
    """`filter_step` with the resampling driven by given uniforms ``u`` (`resample_from_uniforms`) and
    the propagation by ``key_move``."""
    n = x.shape[0]
    if reference is None and ess_threshold < 1.0:
        do = ess(log_weights) < ess_threshold * n
        anc = lax.cond(do, lambda: resample_from_uniforms(u, log_weights, n, scheme), lambda: jnp.arange(n))
        carried = jnp.where(do, jnp.zeros_like(log_weights), log_weights)
        log_norm = jnp.where(do, jnp.log(n).astype(log_weights.dtype), logsumexp(log_weights))
    else:  # resample every step; conditional: multinomial, slot 0 descends from slot 0
        do = jnp.array(True)
        if reference is None:
            anc = resample_from_uniforms(u, log_weights, n, scheme)
        else:
            anc = resample_from_uniforms(u, log_weights, n, "multinomial")
            anc = anc.at[0].set(0 if frozen is True else jnp.where(frozen, 0, anc[0]))
        # carried weights all 1: written as constants rather than logsumexp(zeros), which XLA would
        # constant-fold element by element at compile time (seconds for large replicate batches)
        carried, log_norm = 0.0, math.log(n)
    x_new = model.transition_sample(key_move, theta, t, x[anc])
    if reference is not None:
        x_new = x_new.at[0].set(reference if frozen is True else jnp.where(frozen, reference, x_new[0]))
    lw = carried + log_g_batch(model, theta, t, x_new, y)
    inc = logsumexp(lw) - log_norm
    return StepOut(x_new, lw, anc, inc, do)


class FilterOutput(NamedTuple):
    """The particle history: ``particles (T, N, d)``, unnormalised ``log_weights (T, N)`` of the weighted
    sample targeting ``x_t | y_{0:t}``, ``ancestors (T, N)`` (into ``t-1``; identity at ``t = 0``),
    the log-likelihood estimate, ESS before each resampling decision and whether it resampled.
    ``finite`` is False when a weight or the estimate went non-finite (all weights zero, NaN states).
    """

    particles: jax.Array
    log_weights: jax.Array
    ancestors: jax.Array
    loglik: jax.Array
    ess: jax.Array
    resampled: jax.Array
    finite: jax.Array


def _run_filter(key, model, theta, ys, num_particles, scheme, ess_threshold, reference):
    ys = jnp.asarray(ys)
    T = ys.shape[0]
    k0, ks = jax.random.split(key)
    x0, lw0, ll0 = filter_init(k0, model, theta, ys[0], num_particles,
                               None if reference is None else reference[0])

    sch = scheme if reference is None else "multinomial"

    def body(carry, inp):
        x, lw, ll = carry
        k, t, y, r = inp
        e = ess(lw)
        # keys pre-split outside the loop (a split inside would inline one more Threefry block)
        u = jax.random.uniform(k[0], _uniform_shape(sch, num_particles), lw.dtype)
        out = filter_step_from_uniforms(u, k[1], model, theta, t, x, lw, y, scheme=scheme,
                                        ess_threshold=ess_threshold, reference=r if reference is not None else None)
        return (out.x, out.log_weights, ll + out.loglik_increment), (out.x, out.log_weights, out.ancestors, e,
                                                                     out.resampled)

    refs = reference[1:] if reference is not None else jnp.zeros((T - 1,))
    (_, _, ll), (xs, lws, ancs, es, rs) = lax.scan(
        body, (x0, lw0, ll0), (jax.random.split(ks, (T - 1, 2)), jnp.arange(1, T), ys[1:], refs))
    n = num_particles
    xs = jnp.concatenate([x0[None], xs])
    lws = jnp.concatenate([lw0[None], lws])
    ancs = jnp.concatenate([jnp.arange(n)[None], ancs])
    es = jnp.concatenate([jnp.array([float(n)], es.dtype), es])
    rs = jnp.concatenate([jnp.array([False]), rs])
    finite = jnp.isfinite(ll) & jnp.all(jnp.isfinite(xs)) & jnp.all(jnp.any(jnp.isfinite(lws), axis=1))
    return FilterOutput(xs, lws, ancs, ll, es, rs, finite)


def bootstrap_filter(key, model, theta, ys, num_particles: int, *, scheme: str = "systematic",
                     ess_threshold: float = 1.0) -> FilterOutput:
    """The bootstrap particle filter (module docstring); ``ess_threshold = 1`` resamples every step.

    Pure and jit-able (``model``, ``num_particles``, ``scheme`` static); inputs are not validated here
    (`driftax.infer.smoothing` validates at the boundary).
    """
    if scheme not in RESAMPLING:
        raise ValueError(f"scheme must be one of {RESAMPLING}, got {scheme!r}")
    return _run_filter(key, model, theta, ys, num_particles, scheme, ess_threshold, None)


def conditional_smc(key, model, theta, ys, reference, num_particles: int) -> FilterOutput:
    """Conditional SMC with the reference path ``reference (T, d)`` frozen in slot 0 (module docstring)."""
    return _run_filter(key, model, theta, ys, num_particles, "multinomial", 1.0, reference)


# --- backward sampling --------------------------------------------------------------------------
def _pair_logq(model, theta, t, x_prev, x_next):
    """``log q_t(x_prev[i], x_next[i])`` for paired rows."""
    return jax.vmap(lambda a, b: model.transition_logpdf(theta, t, a, b))(x_prev, x_next)


def _exact_rows_from_uniforms(u, model, theta, t, x_prev, log_weights, x_next):
    """Exact backward indices for the rows of ``x_next``: the inverse CDF of ``ω^l q(ξ^l, x)`` per row at the
    uniforms ``u (rows, 1)``."""
    logq = jax.vmap(lambda b: jax.vmap(lambda a: model.transition_logpdf(theta, t, a, b))(x_prev))(x_next)
    logits = log_weights[None, :] + logq
    w = jnp.exp(logits - jnp.max(logits, axis=1, keepdims=True))
    c = jnp.cumsum(w, axis=1)
    return jnp.minimum(jnp.sum(c <= u * c[:, -1:], axis=1), x_prev.shape[0] - 1)


def backward_uniforms(method: str, model, max_trials: int, M: int) -> int:
    """How many uniforms `backward_indices_from_uniforms` takes for ``M`` rows."""
    if method == "exact" or model.transition_log_bound is None:
        return M
    return (2 * max_trials + 1) * M


def backward_indices(key, model, theta, t, x_prev, log_weights, x_next, *, method: str = "hybrid",
                     max_trials: int = 8, chunk: int | None = None):
    r"""Indices ``J (M,)`` with ``P(J^m = l) ∝ ω^l q_t(x_prev[l], x_next[m])``.

    ``t`` is the time of ``x_next``. ``method="exact"`` costs ``O(M N)``; ``"hybrid"`` (needs
    ``model.transition_log_bound``) draws ``max_trials`` proposals from ``ω`` for every row at once and
    accepts the first with ``log U < log q - log q̄``, then draws the unaccepted rows exactly, ``chunk``
    rows per pass (default 32). A row falls back with probability ``(1 - a)^max_trials`` at acceptance rate
    ``a``: with the default 8 trials, 5.5 % of the rows fell back on the 1-d linear-Gaussian test model
    (PaRIS, N = 24, T = 300) and 34 % on the 3-d one, where 32 trials still left 12 % (the acceptance varies
    across rows) at the same run time, so 8 stays (the law is exact for any cap). Returns
    ``(J, number of exact fall-backs)``.
    """
    M = x_next.shape[0]
    if method not in BACKWARD:
        raise ValueError(f"backward method must be one of {BACKWARD}, got {method!r}")
    dtype = log_weights.dtype
    if method == "exact" or model.transition_log_bound is None:
        u = jax.random.uniform(key, (M, 1), dtype)
        return backward_indices_from_uniforms(u.reshape(-1), model, theta, t, x_prev, log_weights, x_next,
                                              method=method, max_trials=max_trials, chunk=chunk)
    k_prop, k_acc, k_fb = jax.random.split(key, 3)
    u = jnp.concatenate([jax.random.uniform(k_prop, (max_trials * M,), dtype),
                         jax.random.uniform(k_acc, (max_trials * M,), dtype),
                         jax.random.uniform(k_fb, (M,), dtype)])
    return backward_indices_from_uniforms(u, model, theta, t, x_prev, log_weights, x_next, method=method,
                                          max_trials=max_trials, chunk=chunk)


def backward_indices_from_uniforms(u, model, theta, t, x_prev, log_weights, x_next, *, method: str = "hybrid",
                                   max_trials: int = 8, chunk: int | None = None):
    """`backward_indices` driven by ``backward_uniforms(...)`` given i.i.d. U[0, 1) draws ``u``: exact, one per
    row; hybrid, the proposals' and the acceptance tests' (``max_trials · M`` each) then one per row for its
    exact fall-back (used only if the row exhausts its trials). No random-number call inside: a sweep
    draws all of a step's uniforms at once."""
    M = x_next.shape[0]
    if method == "exact" or model.transition_log_bound is None:
        return _exact_rows_from_uniforms(u[:M, None], model, theta, t, x_prev, log_weights, x_next), jnp.int32(M)
    if method != "hybrid":
        raise ValueError(f"backward method must be one of {BACKWARD}, got {method!r}")
    cdf = _cdf(log_weights)
    u = jnp.asarray(u, cdf.dtype)
    cand = _invert(cdf, u[:max_trials * M].reshape(max_trials, M))
    logq = _pair_logq(model, theta, t, x_prev[cand.reshape(-1)], jnp.tile(x_next, (max_trials, 1)))
    bound = model.transition_log_bound(theta, t)
    log_u = jnp.log(u[max_trials * M:2 * max_trials * M].reshape(max_trials, M))
    u_fb = u[2 * max_trials * M:]
    acc = log_u < logq.reshape(max_trials, M) - bound
    first = jnp.argmax(acc, axis=0)
    J = jnp.take_along_axis(cand, first[None], axis=0)[0]
    pending = ~jnp.any(acc, axis=0)
    chunk = min(M, 32) if chunk is None else chunk

    def cond(s):
        return jnp.any(s[1])

    def body(s):
        J, pending = s
        (rows,) = jnp.nonzero(pending, size=chunk, fill_value=M)
        safe = jnp.minimum(rows, M - 1)
        draws = _exact_rows_from_uniforms(u_fb[safe, None], model, theta, t, x_prev, log_weights, x_next[safe])
        J = J.at[rows].set(draws, mode="drop")
        pending = pending.at[rows].set(False, mode="drop")
        return J, pending

    n_fb = jnp.sum(pending)
    J, _ = lax.while_loop(cond, body, (J, pending))
    return J, n_fb


def backward_paths(key, model, theta, out: FilterOutput, num_paths: int, *, method: str = "hybrid",
                   max_trials: int = 8):
    """Forward filtering, backward sampling: ``num_paths`` index paths ``(T, M)`` through ``out``'s cloud,
    each a draw from the particle approximation of the smoothing law, and the total exact fall-backs."""
    T = out.particles.shape[0]
    k_end, k_back = jax.random.split(key)
    last = resample(k_end, out.log_weights[-1], num_paths, "multinomial")

    n_u = backward_uniforms(method, model, max_trials, num_paths)

    def body(idx, inp):
        k, t = inp  # draw the index at t-1 given the particles at t
        u = jax.random.uniform(k, (n_u,), out.log_weights.dtype)  # one random-number call per step
        J, nfb = backward_indices_from_uniforms(u, model, theta, t, out.particles[t - 1], out.log_weights[t - 1],
                                                out.particles[t][idx], method=method, max_trials=max_trials)
        return J, (J, nfb)

    _, (idx, nfb) = lax.scan(body, last, (jax.random.split(k_back, T - 1), jnp.arange(T - 1, 0, -1)))
    return jnp.concatenate([idx[::-1], last[None]], 0), jnp.sum(nfb)


def trace_paths(back_index, last):
    """Paths ``(T, M)`` of indices from stored backward (or ancestor) indices ``back_index (T, N)``
    (``back_index[t][i]`` points into ``t-1``) ending at ``last (M,)``."""
    def body(idx, b):
        prev = b[idx]
        return prev, prev

    _, idx = lax.scan(body, last, back_index[1:][::-1])
    return jnp.concatenate([idx[::-1], last[None]], 0)


def gather_paths(particles, index_paths):
    """States ``(M, T, d)`` of index paths ``(T, M)`` through ``particles (T, N, d)``."""
    return jnp.swapaxes(jnp.take_along_axis(particles, index_paths[:, :, None], axis=1), 0, 1)
