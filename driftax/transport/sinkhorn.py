"""Sinkhorn with optional epsilon scaling, and Sinkhorn distances/divergences between samples.

The iterates are those of log-domain Sinkhorn (Peyre & Cuturi 2019, Sec. 4.4), with ``LSE`` the log-sum-exp::

    f_i <- eps log a_i - eps LSE_j((g_j - C_ij) / eps)
    g_j <- eps log b_j - eps LSE_i((f_i - C_ij) / eps)

computed in stabilised scaling form (Schmitzer 2019, "Stabilized sparse scaling algorithms for entropy
regularized transport problems", SIAM J. Sci. Comput. 41(3)): the potentials are absorbed into a kernel
``K = exp((f + g - C) / eps)`` formed once per block, and a sweep is ``u <- a / (K v)``, ``v <- b / (K^T u)``
(two mat-vecs, as in a kernel Sinkhorn, instead of two passes of exponentials); ``K`` is re-formed when a scaling
leaves ``[exp(-tau), exp(tau)]``, and a sweep that ``K`` cannot do (it underflowed at small ``eps``) is done in the
log domain. :func:`sweeps` is the one sweep implementation, also used by :func:`driftax.transport.sns`.

After each ``g`` update the column marginal is exact, and the row marginal ``r_i = u_i (K v)_i`` comes for free
from the next ``u`` update, so the stopping rule ``|P 1 - a| + |P^T 1 - b| <= tol`` is checked on every sweep
at no extra cost. When it passes, the full error (both marginals) is recomputed once, from the last kernel and
scalings (``P = diag(u) K diag(v)``: one mat-vec and one multiply-reduce pass, no exponential) where the sweeps
stopped in scaling form, from the plan ``exp((f + g - C)/eps)`` otherwise, and the sweeps resume if rounding in
the column marginal keeps it above ``tol``; the error reported in :class:`OTResult` is that of the final
potentials. With ``epsilon_scaling=q`` the regularisation
follows ``eps_t = max(eps, eps_0 q^t)`` with ``eps_0 = max |C|`` (Kosowsky & Yuille 1994; Schmitzer 2019); the
sweeps before ``eps`` is reached run in the log domain (the kernel changes at every one of them).

Everything is ``lax.while_loop`` (blocks of sweeps nested in the recheck loop); :func:`sinkhorn` is ``jit``-able
and ``vmap``-able over a batch of problems (``jax.vmap(lambda a, b, C: sinkhorn(a, b, C, eps))``, or
:func:`sinkhorn_batch`, sharded over devices).
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from driftax.transport import costs as _costs
from driftax.transport.problem import (
    OTResult,
    _finalize,
    _norm,
    _safe_dot,
    check_init,
    norm_code,
    check_int,
    pad_problem,
    padded_size,
    precision_context,
    validate_problem,
    warn_if_float32,
)

__all__ = ["sinkhorn", "sinkhorn_batch", "sinkhorn_distance", "sinkhorn_divergence", "solve_sinkhorn", "sweeps",
           "fixed_sweeps", "fixed_log_sweeps", "maybe"]


def _log(w):
    return jnp.where(w > 0, jnp.log(jnp.where(w > 0, w, 1.0)), -jnp.inf)


def _lse_rows(g, cost, eps):
    """``LSE_j((g_j - C_ij) / eps)`` for every row ``i``."""
    return logsumexp((g[None, :] - cost) / eps, axis=1)


def _lse_cols(f, cost, eps):
    return logsumexp((f[:, None] - cost) / eps, axis=0)


def _row_error(f, lse_r, a, eps, norm):
    return _norm(jnp.exp(f / eps + lse_r) - a, norm)


def maybe(pred, fn, default):
    """``fn()`` if ``pred`` else ``default`` (same pytree structure), evaluating ``fn`` only when needed.

    A ``lax.cond`` with a batched predicate becomes a ``select`` under ``vmap``, which evaluates both branches
    for every problem: an expensive rarely-taken branch (an exponential pass, a block of log-domain sweeps) would
    then be paid at every call. A ``while_loop`` of at most one trip keeps its predicate: under ``vmap`` the body
    runs only when some problem of the batch needs it (and the others keep ``default``).
    """
    def body(carry):
        return jnp.zeros_like(carry[0]), fn()

    return jax.lax.while_loop(lambda c: c[0], body, (jnp.asarray(pred), default))[1]


def _range(dtype) -> float:
    """Largest ``|log u|``, ``|log v|`` of a scaling before it is absorbed into the potentials: 100 in float64,
    23 in float32. Kernel entries that underflowed when ``K`` was formed (below ``exp(-L)``, ``L`` = 708 in
    float64, 87 in float32) stay below ``exp(-L + 2 tau) <= exp(-40)`` of the marginals at any scaled point."""
    return float(min(100.0, (-np.log(np.finfo(dtype).tiny) - 40.0) / 2.0))


class SweepState(NamedTuple):
    """State of the Sinkhorn sweeps: potentials, the row error ``|P 1 - a|`` at them (``inf`` when unknown), the
    sweep count and the error history."""

    f: jax.Array
    g: jax.Array
    err: jax.Array
    it: jax.Array
    hist: jax.Array


def sweep_state(a, b, cost, eps, f, g, *, hist_len: int, norm: str, full_error: bool = True) -> SweepState:
    """Initial :class:`SweepState` at ``(f, g)``. ``full_error``: both marginal errors (two log-sum-exp passes),
    so that a converged warm start stops at once; otherwise the error is ``inf`` (at least one sweep)."""
    if full_error:
        err = (_row_error(f, _lse_rows(g, cost, eps), a, eps, norm)
               + _norm(jnp.exp(g / eps + _lse_cols(f, cost, eps)) - b, norm))
    else:
        err = jnp.asarray(jnp.inf, cost.dtype)
    return SweepState(f, g, err, jnp.asarray(0, jnp.int32), jnp.full((hist_len,), -1.0, cost.dtype))


def sweeps(a, b, cost, eps, state: SweepState, tol, max_it, *, norm: str, history_every: int = 1,
           with_final: bool = False):
    """Sinkhorn sweeps from ``state`` until the row error is ``<= tol`` or ``max_it`` sweeps in all: the one sweep
    implementation of :mod:`driftax.transport` (used by :func:`sinkhorn` and by the warm start and fallback of
    :func:`driftax.transport.sns`).

    The iterates are those of log-domain Sinkhorn (``f <- eps log a - eps LSE_j((g_j - C_ij)/eps)``, then the
    same for ``g``), computed in stabilised scaling form (Schmitzer 2019, "Stabilized sparse scaling algorithms
    for entropy regularized transport problems", Alg. 2-3). A *block* starts with a log-domain ``f`` update whose
    exponential pass also gives the kernel with the potentials absorbed: with ``M_ij = (g_j - C_ij)/eps``,
    ``m_i = max_j M_ij``, ``E_ij = exp(M_ij - m_i)`` and ``s_i = sum_j E_ij``, the update is
    ``f_i = eps (log a_i - m_i - log s_i)`` and ``K_ij = exp((f_i + g_j - C_ij)/eps) = E_ij a_i / s_i`` (kept as
    ``diag(a / s) E``). Then it
    sweeps in scaling form with two mat-vecs each, ``u <- a / (K v)``, ``v <- b / (K^T u)``, the potentials being
    ``f + eps log u``, ``g + eps log v``. The block ends, and the next one re-absorbs, when a scaling leaves
    ``[exp(-tau), exp(tau)]`` (:func:`_range`) or a sum ``K v``, ``K^T u`` is not a positive finite number where the
    weight is positive (the kernel underflowed there). When even the first ``g`` update of a block cannot be done
    from ``K`` (a column of ``K`` underflowed, as at small ``eps`` far from the optimum), that sweep is completed in
    the log domain. Sweeps that would fail are never applied, so the iterates equal log-domain Sinkhorn's up to
    rounding and to kernel entries below ``exp(-40)`` of the marginals: one exponential pass per block instead of
    two per sweep. ``hist[it // history_every]`` receives the row error of sweep ``it``.

    ``with_final=True`` returns ``(state, (final, have))`` instead of ``state``: when the last block ended in
    scaling form on a stop (row error ``<= tol`` or ``max_it`` sweeps), ``final`` is
    :func:`driftax.transport.problem._finalize`'s ``(err, transport, dual, converged)`` at the returned potentials,
    computed from that block's kernel and scalings (:func:`_kernel_final`: mat-vecs, no exponential pass) and
    ``have`` is true; otherwise ``have`` is false and the caller makes the check from the plan.
    """
    loga, logb = _log(a), _log(b)
    dtype = cost.dtype
    hi = jnp.asarray(np.exp(_range(dtype)), dtype)
    lo = 1.0 / hi
    apos, bpos = a > 0, b > 0
    hist_len = state.hist.shape[0]

    def record(hist, it, err, ok=True):
        # a sweep that is not applied records nothing (its index is dropped): no select over the whole history
        return hist.at[jnp.where(ok, it // history_every, hist_len)].set(err, mode="drop")

    def block_cond(s):
        return (s.it < max_it) & (s.err > tol)  # False for NaN: stops, then reported as not converged

    def block_body(s):
        # first half of sweep s.it in the log domain; the same exponential pass gives the absorbed kernel
        mm = (s.g[None, :] - cost) / eps
        mx = jnp.max(mm, axis=1)
        mx = jnp.where(jnp.isfinite(mx), mx, 0.0)
        e = jnp.exp(mm - mx[:, None])
        rs = jnp.sum(e, axis=1)
        f = eps * (loga - mx - jnp.log(rs))
        # K = diag(w) E with w = a / s, kept factored (K v = w (E v), K^T u = E^T (w u)): forming K would be one
        # more write and read of an n x m array per block, the same products up to rounding
        w = jnp.where(apos, a / jnp.where(rs > 0, rs, 1.0), 0.0)
        col = w @ e
        v = jnp.where(bpos, b / jnp.where(col > 0, col, 1.0), 0.0)
        # (a NaN or inf entry of K makes its column sum fail this test, or K v below)
        fast = jnp.all(jnp.where(bpos, (col > 0) & (v >= lo) & (v <= hi), True))
        kv = w * (e @ v)
        fast = fast & jnp.all(jnp.where(apos, (kv > 0) & jnp.isfinite(kv), True))

        def log_half():
            # the second half of the sweep in the log domain, and its row error (one more pass, rare)
            g = eps * (logb - _lse_cols(f, cost, eps))
            return g, _row_error(f, _lse_rows(g, cost, eps), a, eps, norm)

        g_slow, err_slow = maybe(~fast, log_half, (s.g, s.err))
        err = jnp.where(fast, _norm(kv - a, norm), err_slow)
        hist = record(s.hist, s.it, err)
        it = s.it + 1

        # scaling-form sweeps on this kernel: u <- a / (K v), v <- b / (K^T u); kv = K v
        def cond(c):
            _, _, _, err, it, _, ok = c
            return ok & (it < max_it) & (err > tol)

        def body(c):
            u, v, kv, err, it, hist, _ = c
            u2 = jnp.where(apos, a / jnp.where(kv > 0, kv, 1.0), 0.0)
            ktu = (w * u2) @ e
            v2 = jnp.where(bpos, b / jnp.where(ktu > 0, ktu, 1.0), 0.0)
            kv2 = w * (e @ v2)
            ok = (jnp.all(jnp.where(apos, (u2 >= lo) & (u2 <= hi) & (kv2 > 0) & jnp.isfinite(kv2), True))
                  & jnp.all(jnp.where(bpos, (ktu > 0) & (v2 >= lo) & (v2 <= hi), True)))
            e2 = _norm(u2 * kv2 - a, norm)
            # a failing sweep is not applied: the next block redoes it from freshly absorbed potentials
            hist = record(hist, it, e2, ok)
            return (jnp.where(ok, u2, u), jnp.where(ok, v2, v), jnp.where(ok, kv2, kv), jnp.where(ok, e2, err),
                    it + ok.astype(it.dtype), hist, ok)

        u0 = jnp.where(apos, 1.0, 0.0).astype(dtype)
        u, v, kv, err, it, hist, _ = jax.lax.while_loop(cond, body, (u0, v, kv, err, it, hist, fast))
        f_fast = jnp.where(apos, f + eps * jnp.log(jnp.where(apos, u, 1.0)), -jnp.inf)
        g_fast = jnp.where(bpos, s.g + eps * jnp.log(jnp.where(bpos, v, 1.0)), -jnp.inf)
        out = SweepState(jnp.where(fast, f_fast, f), jnp.where(fast, g_fast, g_slow), err, it, hist)
        if not with_final:
            return out
        # the final check from this block's kernel when the sweeps stop here in scaling form (u, v, kv are those
        # of the last applied sweep, hence of f_fast, g_fast); a block that ends on absorption pays nothing
        have = fast & ((err <= tol) | (it >= max_it))
        fin = maybe(have, lambda: _kernel_final(a, b, cost, eps, e, w, u, v, kv, f_fast, g_fast, tol, norm),
                    _no_final(dtype))
        return out, (fin, have)

    if not with_final:
        return jax.lax.while_loop(block_cond, block_body, state)
    init = (state, (_no_final(dtype), jnp.asarray(False)))
    return jax.lax.while_loop(lambda c: block_cond(c[0]), lambda c: block_body(c[0]), init)


def _no_final(dtype):
    nan = jnp.asarray(jnp.nan, dtype)
    return jnp.asarray(jnp.inf, dtype), nan, nan, jnp.asarray(False)


def _kernel_final(a, b, cost, eps, e, w, u, v, kv, f, g, tol, norm):
    """:func:`driftax.transport.problem._finalize` at the potentials ``f = f_K + eps log u``,
    ``g = g_K + eps log v`` of a scaling-form block, whose plan is ``P = diag(u) K diag(v)`` with the kernel
    ``K = diag(w) E`` already formed (Schmitzer 2019, Sec. 3): ``P 1 = u * (K v)`` (``kv = K v``, kept by the
    sweeps), ``P^T 1 = v * (E^T (w u))`` and ``<C, P> = sum_ij E_ij (w_i u_i v_j) C_ij`` are one mat-vec and one
    multiply-reduce pass, against the fresh exponential pass over ``exp((f + g - C)/eps)`` of ``_finalize``. The
    two plans agree entry by entry up to rounding (entries of ``E`` that underflowed when it was formed are below
    ``exp(-40)`` of the marginals, :func:`_range`); the scalings are multiplied first, so that no product
    underflows before ``E`` scales it back."""
    wu = w * u
    r = u * kv
    c = v * (wu @ e)
    p = e * (wu[:, None] * v[None, :])
    transport = jnp.sum(jnp.where(p > 0, p * cost, 0.0))
    err = _norm(r - a, norm) + _norm(c - b, norm)
    dual = _safe_dot(a, f) + _safe_dot(b, g) - eps * (jnp.sum(r) - jnp.sum(a))
    finite = (jnp.isfinite(err) & jnp.isfinite(transport) & jnp.isfinite(dual)
              & jnp.all(jnp.where(a > 0, jnp.isfinite(f), True))
              & jnp.all(jnp.where(b > 0, jnp.isfinite(g), True)))
    return err, transport, dual, finite & (err <= tol)


def fixed_sweeps(a, b, cost, eps, f, g, count):
    """``count`` Sinkhorn sweeps from ``(f, g)`` by :func:`sweeps` (fewer only if the marginals become exact; none
    for ``count <= 0``). Returns ``(f, g)``. Used by :func:`driftax.transport.sns` for its warm start and its
    fallback sweeps. ``count`` may be traced: one compiled program serves every count (a static count compiled
    the sweeps again for each value)."""
    st = sweep_state(a, b, cost, eps, f, g, hist_len=1, norm="l1", full_error=False)
    # (the one-entry history is discarded: every sweep after the first writes past its end and is dropped)
    st = sweeps(a, b, cost, eps, st, jnp.zeros((), cost.dtype), count, norm="l1", history_every=1)
    return st.f, st.g


def fixed_log_sweeps(a, b, cost, eps, f, g, count):
    """``count`` log-domain Sinkhorn sweeps from ``(f, g)`` by :func:`log_sweeps` (the same iterates as
    :func:`fixed_sweeps`, two log-sum-exp passes per sweep). Returns ``(f, g)``. Used for the fallback sweeps of
    :func:`driftax.transport.sns`'s Newton stage: they are rare (never taken in the default stalling mode), and the
    one loop of the log domain compiles in a third of the time of the stabilised sweeps' nested loops, which
    :func:`driftax.transport.sns.newton_stage` would otherwise carry a second copy of (about 1 s of its 3 s
    compile on CPU). ``count`` may be traced."""
    st = sweep_state(a, b, cost, eps, f, g, hist_len=1, norm="l1", full_error=False)
    st = log_sweeps(a, b, cost, eps, st, jnp.zeros((), cost.dtype), count, norm="l1", history_every=1)
    return st.f, st.g


def log_sweeps(a, b, cost, eps, state: SweepState, tol, max_it, *, norm: str, eps_schedule=None,
               history_every: int = 1, until_eps: bool = False) -> SweepState:
    """Reference log-domain Sinkhorn (two log-sum-exp passes per sweep: the algorithm before the scaling form),
    also used while an epsilon schedule decreases ``eps``: sweeps from ``state`` until the row error is ``<= tol``
    or ``max_it`` sweeps in all. With ``eps_schedule`` (``eps_t`` of sweep ``t``) the row error counts as ``inf``
    while ``eps_t > eps`` and those sweeps record ``-1`` in the history. ``until_eps``: stop as soon as the
    schedule reaches ``eps`` (or on the row error)."""
    loga, logb = _log(a), _log(b)
    sched = (lambda t: eps) if eps_schedule is None else eps_schedule

    def cond(st):
        go = (st[4] < max_it) & (st[3] > tol)  # False for NaN err: stops, then reported as not converged
        return go & (sched(st[4]) != eps) if until_eps else go

    def body(st):
        f, g, lse_r, _, it, hist = st
        e = sched(it)
        f = e * (loga - lse_r)
        g = e * (logb - _lse_cols(f, cost, e))
        e_next = sched(it + 1)
        lse_r = _lse_rows(g, cost, e_next)
        err = _row_error(f, lse_r, a, e_next, norm)
        err = jnp.where(e == eps, err, jnp.inf)  # not converged while epsilon is still being decreased
        hist = hist.at[it // history_every].set(jnp.where(e == eps, err, -1.0), mode="drop")
        return f, g, lse_r, err, it + 1, hist

    st = (state.f, state.g, _lse_rows(state.g, cost, sched(state.it)), state.err, state.it, state.hist)
    f, g, _, err, it, hist = jax.lax.while_loop(cond, body, st)
    return SweepState(f, g, err, it, hist)


def sinkhorn_loop(a, b, cost, eps, f, g, tol, *, max_iter: int, norm: str, eps_schedule=None,
                  history_every: int = 1, log_domain: bool = False, warm: bool = True):
    """Run Sinkhorn from ``(f, g)`` until the marginal error is ``<= tol`` or ``max_iter`` sweeps.

    Returns ``(f, g, final, iterations, history)`` with ``final = (err, transport, dual, converged)`` of
    :func:`driftax.transport.problem._finalize` at the returned ``(f, g)`` (``err`` the full error
    ``|P 1 - a| + |P^T 1 - b|``, from the plan), and ``history[t]`` the row error after sweep
    ``(t + 1) * history_every`` or the last sweep before it (``-1`` beyond; length
    ``ceil(max_iter / history_every)``). ``eps_schedule(t)`` gives the epsilon of sweep ``t`` (defaults to ``eps``;
    those sweeps run in the log domain, the rest by :func:`sweeps`, or all in the log domain with ``log_domain``).
    ``warm=False`` (a start from zero potentials) skips the initial error (two passes).

    The sweeps stop on the row error (the column marginal is exact after a ``g`` update, up to rounding); the
    full check is then made, and the sweeps resume while it fails (up to ``max_iter``), so that a stop before
    ``max_iter`` means the final check passes. The last check is the final one: from the last block's kernel and
    scalings where the sweeps stopped in scaling form (:func:`_kernel_final`), else one pass over the plan.
    """
    dtype = cost.dtype
    hist_len = -(-max(max_iter, 1) // history_every)
    sched = (lambda t: eps) if eps_schedule is None else eps_schedule
    e0 = sched(0)
    state = sweep_state(a, b, cost, e0, f, g, hist_len=hist_len, norm=norm, full_error=False)
    if warm is not False:
        # the initial error (two passes) only for a warm start; ``warm`` may be traced (one program for both)
        state = state._replace(err=maybe(warm, lambda: sweep_state(a, b, cost, e0, f, g, hist_len=1, norm=norm).err,
                                         state.err))
    state = state._replace(err=jnp.where(e0 == eps, state.err, jnp.inf))
    if eps_schedule is not None and not log_domain:
        # the schedule's sweeps in the log domain (the kernel changes with eps at every sweep); they end once eps
        # is reached (the row error is inf before), the rest runs in scaling form
        state = log_sweeps(a, b, cost, eps, state, tol, max_iter, norm=norm, eps_schedule=eps_schedule,
                           history_every=history_every, until_eps=True)

    def inner(state):
        if log_domain:
            return log_sweeps(a, b, cost, eps, state, tol, max_iter, norm=norm, eps_schedule=eps_schedule,
                              history_every=history_every), (_no_final(dtype), jnp.asarray(False))
        return sweeps(a, b, cost, eps, state, tol, max_iter, norm=norm, history_every=history_every,
                      with_final=True)

    def outer_cond(outer):
        state, final = outer
        return (state.it < max_iter) & (final[0] > tol)  # False for NaN: stops, reported as not converged

    def outer_body(outer):
        state, _ = outer
        state, (kfinal, have) = inner(state)
        # the check from the last block's kernel (no exponential pass) where the sweeps stopped in scaling form;
        # from the plan otherwise (log-domain completion, no sweep, the log-domain reference)
        final = maybe(~have, lambda: _finalize(a, b, cost, eps, state.f, state.g, tol, norm), kfinal)
        # resume only if the full check fails while the row error passed (inf forces at least one sweep)
        return state._replace(err=jnp.where(final[0] > tol, jnp.asarray(jnp.inf, dtype), state.err)), final

    nan = jnp.asarray(jnp.nan, dtype)
    init = (state, (jnp.asarray(jnp.inf, dtype), nan, nan, jnp.asarray(False)))
    state, final = jax.lax.while_loop(outer_cond, outer_body, init)
    return state.f, state.g, final, state.it, state.hist


@functools.partial(jax.jit, static_argnames=("max_iter", "scaling", "history_every"))
def solve_sinkhorn(a, b, cost, eps, f0, g0, tol, scale_factor, *, max_iter: int, norm, scaling: bool,
                   history_every: int = 1, warm=True):
    """Jitted core of :func:`sinkhorn` (no validation). All array arguments may be batched with ``vmap``.
    ``norm`` is :func:`driftax.transport.problem.norm_code` of the norm's name (traced: one program for all).
    ``warm=False`` when ``(f0, g0)`` are zeros (skips the initial error check: two passes); it is a traced
    argument, so cold and warm starts share one compiled program. The result's ``cost``
    is ``None``: the caller attaches its own array (an input returned by a compiled program is copied, 32 MB at
    n = 2000 in float64, several exponential passes' worth of time)."""
    if scaling:
        eps_start = jnp.maximum(jnp.max(jnp.abs(cost)), eps)

        def schedule(t):
            return jnp.maximum(eps, eps_start * scale_factor ** jnp.asarray(t, cost.dtype))
    else:
        schedule = None
    f, g, final, it, hist = sinkhorn_loop(a, b, cost, eps, f0, g0, tol, max_iter=max_iter, norm=norm,
                                          eps_schedule=schedule, history_every=history_every, warm=warm)
    err, transport, dual, converged = final
    zero = jnp.asarray(0, jnp.int32)
    return OTResult(f=f, g=g, cost=None, a=a, b=b, epsilon=eps, transport_cost=transport, reg_cost=dual,
                    marginal_error=err, iterations=it, converged=converged, errors=hist,
                    newton_iterations=zero, cg_iterations=zero, density=jnp.zeros((), cost.dtype))


def sinkhorn(a, b, cost, epsilon, *, tol: float = 1e-8, max_iter: int = 100_000, init=None,
             epsilon_scaling: float | None = None, history_every: int = 1, norm: str = "l1",
             dtype=None, **unknown) -> OTResult:
    """Entropic optimal transport by Sinkhorn, in stabilised scaling form (log-domain where the kernel underflows).

    Solves ``min_P <C, P> + eps sum P log P`` s.t. ``P 1 = a``, ``P^T 1 = b`` through its dual (see
    :mod:`driftax.transport.problem`) with alternating exact maximisation in ``f`` and ``g``::

        f_i <- eps log a_i - eps LSE_j((g_j - C_ij)/eps),   g_j <- eps log b_j - eps LSE_i((f_i - C_ij)/eps)

    These log-domain iterates are computed by :func:`sweeps` as ``u <- a / (K v)``, ``v <- b / (K^T u)`` on a kernel
    ``K = exp((f + g - C)/eps)`` that absorbs the potentials when the scalings grow and is re-formed where it
    underflows (Schmitzer 2019): two mat-vecs per sweep, like a kernel Sinkhorn (POT's ``ot.sinkhorn``), and as
    safe as the log domain at small ``eps``. The number of sweeps grows like ``1/eps`` (about ``2.2 / eps`` on
    unit-square point clouds); :func:`driftax.transport.sns` (Tang et al., ICLR 2024) is the fast solver at
    small ``eps``. Both solvers share the keywords ``tol``, ``max_iter``, ``norm``, ``init``, ``dtype``,
    ``history_every``; an unknown keyword raises ``TypeError`` listing them.

    A problem with at most 128 points on a side is solved padded with zero-weight points to the next power of two
    (at least 16) on that side, and the result cut back to ``(n, m)``: calls on different small sizes share one
    compiled program per bucket (compiling takes seconds, such a solve milliseconds), and zero weights are exact
    (:func:`driftax.transport.problem.pad_problem`).

    Args:
      a, b: non-negative weights of shapes ``(n,)``, ``(m,)`` with equal sums (``None``: uniform).
      cost: ``(n, m)`` finite cost matrix (see :mod:`driftax.transport.costs`).
      epsilon: regularisation ``eps > 0`` (absolute, in the units of ``cost``).
      tol: stop when ``|P 1 - a| + |P^T 1 - b| <= tol`` (norm ``norm``: ``"l1"``, ``"l2"`` or ``"linf"``).
      max_iter: maximum number of sweeps (one sweep updates ``f`` then ``g``).
      init: optional warm start ``(f0, g0)``.
      epsilon_scaling: ``None`` or a factor ``q`` in ``(0, 1)``: ``eps_t = max(eps, max|C| q^t)``.
      history_every: keep the error of every ``history_every``-th sweep in ``OTResult.errors`` (length
        ``ceil(max_iter / history_every)``, one float per entry and problem, which adds up under ``vmap``).
      dtype: ``None`` (float64 for concrete inputs, the inputs' dtype under tracing), ``float32`` or ``float64``.

    Returns:
      :class:`OTResult` with ``converged=False`` (never NaN-and-converged) when ``tol`` is not reached.
    """
    if unknown:
        name = next(iter(unknown))
        hint = " (an SNS setting: use driftax.transport.sns)" if name in ("max_newton", "options") else ""
        raise TypeError(f"sinkhorn() got an unexpected keyword argument {name!r}{hint}; accepted keywords: tol, "
                        "max_iter, norm, init, dtype, history_every, epsilon_scaling")
    max_iter = check_int(max_iter, "max_iter", 1)
    history_every = check_int(history_every, "history_every", 1)
    scaling = _check_scaling(epsilon_scaling) is not None
    ctx, dt = precision_context(dtype, a, b, cost, epsilon)
    with ctx:
        a_, b_, c_, eps, tol_ = validate_problem(a, b, cost, epsilon, tol, norm, dt)
        warn_if_float32(c_.dtype, tol)
        n, m = c_.shape
        f0, g0 = check_init(init, n, m, c_.dtype, a_, b_)
        qf = np.asarray(epsilon_scaling if scaling else 1.0, np.dtype(c_.dtype))
        # small problems are solved padded with zero weights (one compiled program per size bucket, see problem.py)
        ap, bp, cp, fp, gp = pad_problem(a_, b_, c_, f0, g0, (padded_size(n), padded_size(m)))
        res = solve_sinkhorn(ap, bp, cp, eps, fp, gp, tol_, qf, max_iter=max_iter, norm=norm_code(norm),
                             scaling=scaling, history_every=history_every, warm=np.bool_(init is not None))
        return unpad(res, n, m)._replace(cost=c_)


def sinkhorn_batch(a, b, cost, epsilon, *, tol: float = 1e-8, max_iter: int = 100_000, norm: str = "l1",
                   dtype=None, history_every: int = 100, epsilon_scaling: float | None = None,
                   shard: bool = True) -> OTResult:
    """Many Sinkhorn problems at once: one compiled ``vmap`` over the problem axis, sharded over all devices
    (:func:`driftax._sharding.batch_mesh`; ``shard=False`` keeps one device).

    ``cost`` is ``(B, n, m)``, ``a`` ``(B, n)`` and ``b`` ``(B, m)`` (``None``: uniform), ``epsilon`` a scalar or
    ``(B,)``; the rest as in :func:`sinkhorn` (``history_every`` defaults to 100 here: the history is
    ``B * max_iter / history_every`` floats). Returns an :class:`OTResult` with a leading batch axis. The problems
    are solved inside one compiled program (:func:`driftax.transport.problem.map_problems`: ``shard_map`` over
    devices, then on CPU a ``lax.map`` of single solves, so that each problem costs what a single solve costs
    without its per-call overhead; on accelerators ``vmap`` over chunks of problems, where a chunk sweeps until its
    slowest problem has converged and the sweeps' rare branches, absorption and log-domain completion, run only
    when a problem needs them, :func:`maybe`).
    """
    from driftax.transport.problem import shard_batch, validate_batch

    max_iter = check_int(max_iter, "max_iter", 1)
    history_every = check_int(history_every, "history_every", 1)
    q = _check_scaling(epsilon_scaling)
    ctx, dt = precision_context(dtype, a, b, cost, epsilon)
    with ctx:
        a_, b_, c_, eps, tol_ = validate_batch(a, b, cost, epsilon, tol, norm, dt)
        warn_if_float32(c_.dtype, tol)
        B, n, m = c_.shape
        # padded as single problems are (the same programs' iterates; see problem.pad_problem)
        ap, bp, cp, fp, gp = pad_problem(a_, b_, c_, jnp.zeros_like(a_), jnp.zeros_like(b_),
                                         (padded_size(n), padded_size(m)))
        (ap, bp, cp, eps, fp, gp), mesh = shard_batch((ap, bp, cp, eps, fp, gp), shard)
        qf = jnp.asarray(1.0 if q is None else q, c_.dtype)
        res = _solve_batch(ap, bp, cp, eps, fp, gp, tol_, qf, max_iter=max_iter, norm=norm_code(norm),
                           scaling=q is not None,
                           history_every=history_every, mesh=mesh)
        return unpad(res, n, m)._replace(cost=c_)


def unpad(res: OTResult, n: int, m: int) -> OTResult:
    """``res`` of a problem padded by :func:`driftax.transport.problem.pad_problem`, cut back to ``(n, m)`` (a batch
    keeps its leading axis)."""
    if res.f.shape[-1] == n and res.g.shape[-1] == m:
        return res
    return _cut(res, n=n, m=m)


@functools.partial(jax.jit, static_argnames=("n", "m"))
def _cut(res, *, n, m):
    return res._replace(f=res.f[..., :n], g=res.g[..., :m], a=res.a[..., :n], b=res.b[..., :m])


@functools.partial(jax.jit, static_argnames=("max_iter", "scaling", "history_every", "mesh"))
def _solve_batch(a, b, cost, eps, f0, g0, tol, q, *, mesh, **kw):
    from driftax.transport.problem import map_problems

    def one(a, b, c, e, f0, g0):
        return solve_sinkhorn(a, b, c, e, f0, g0, tol, q, warm=False, **kw)

    return map_problems(one, (a, b, cost, eps, f0, g0), mesh)


def _check_scaling(epsilon_scaling):
    if epsilon_scaling is None:
        return None
    q = float(epsilon_scaling)
    if not 0.0 < q < 1.0:
        raise ValueError(f"epsilon_scaling must be None or a factor in (0, 1), got {epsilon_scaling}")
    return q


# --------------------------------------------------------------------------- distances between samples

def _weights(w, n, name):
    if w is None:
        return None
    w = jnp.asarray(w)
    if w.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {w.shape}")
    return w / jnp.sum(w)


def _ot(x, y, wx, wy, cost, epsilon, solver, kw):
    c = _costs.pairwise(x, y, cost)
    return solver(wx, wy, c, epsilon, **kw), c


def sinkhorn_distance(x, y, epsilon: float | None = None, *, a=None, b=None, cost: str = "sqeuclidean",
                      debiased: bool = False, method: str = "sinkhorn", tol: float = 1e-6,
                      max_iter: int | None = None, dtype=None, **kwargs):
    """Entropic OT distance between two samples ``x (n, d)`` and ``y (m, d)`` (a sample-quality metric).

    * ``debiased=False``: the Sinkhorn distance of Cuturi (2013), ``<C, P_eps>`` with ``P_eps`` the entropic
      plan; tends to the OT cost (``W_2^2`` for ``cost="sqeuclidean"``) as ``eps -> 0``.
    * ``debiased=True``: the Sinkhorn divergence (Genevay et al. 2018; Feydy et al. 2019)
      ``S_eps(a, b) = OT_eps(a, b) - OT_eps(a, a)/2 - OT_eps(b, b)/2`` with ``OT_eps`` the regularised cost
      (dual value); ``S_eps >= 0``, ``S_eps(a, a) = 0``, and it metrises weak convergence.

    ``epsilon=None`` uses ``0.05 * mean(C)``. ``a``/``b`` are optional sample weights (normalised here).
    ``method`` is ``"sinkhorn"`` or ``"sns"``; ``max_iter`` and extra keyword arguments (``norm``, ``options``...)
    go to the solver (``max_iter=None``: the solver's default, so that the distance shares the solver's compiled
    programs). Returns a scalar.
    Raises ``ValueError`` if a solve does not converge (a distance is never silently wrong); under
    ``jit``/``vmap`` (traced inputs, no exception possible) an unconverged solve gives ``NaN`` instead.
    """
    from driftax.transport.sns import sns  # local import: sns imports this module

    solvers = {"sinkhorn": sinkhorn, "sns": sns}
    if method not in solvers:
        raise ValueError(f"method must be 'sinkhorn' or 'sns', got {method!r}")
    solver = solvers[method]
    ctx, dt = precision_context(dtype, x, y)
    with ctx:
        x = jnp.asarray(x, dt)
        y = jnp.asarray(y, dt)
        if x.ndim == 1:
            x = x[:, None]
        if y.ndim == 1:
            y = y[:, None]
        wx = _weights(a, x.shape[0], "a")
        wy = _weights(b, y.shape[0], "b")
        cxy = _costs.pairwise(x, y, cost)
        if epsilon is None:
            epsilon = 0.05 * float(jnp.mean(cxy)) if not isinstance(cxy, jax.core.Tracer) else 0.05 * jnp.mean(cxy)
        kw = dict(tol=tol, dtype=dtype, **kwargs)
        if max_iter is not None:
            kw["max_iter"] = max_iter
        res = solver(wx, wy, cxy, epsilon, **kw)
        _check_converged(res, "x, y")
        if not debiased:
            return _nan_unless_converged(res.transport_cost, res)
        rxx, _ = _ot(x, x, wx, wx, cost, epsilon, solver, kw)
        ryy, _ = _ot(y, y, wy, wy, cost, epsilon, solver, kw)
        _check_converged(rxx, "x, x")
        _check_converged(ryy, "y, y")
        return _nan_unless_converged(_debias(res, rxx, ryy), res, rxx, ryy)


def _nan_unless_converged(value, *results):
    """Traced results cannot raise: the value becomes NaN where a solve did not converge."""
    if not any(isinstance(r.converged, jax.core.Tracer) for r in results):
        return value
    ok = functools.reduce(jnp.logical_and, [r.converged for r in results])
    return jnp.where(ok, value, jnp.asarray(jnp.nan, value.dtype))


def _debias(rxy, rxx, ryy):
    # The KL(P | a b^T) and sum P log P regularisations differ by eps(<a, log a> + <b, log b>), which cancels
    # in the debiased combination, so the dual values of this package can be used directly.
    return rxy.reg_cost - 0.5 * rxx.reg_cost - 0.5 * ryy.reg_cost


def _check_converged(res, what):
    if isinstance(res.converged, jax.core.Tracer):
        return
    if not bool(res.converged):
        raise ValueError(f"OT solve for ({what}) did not converge: marginal error {float(res.marginal_error):.3e} "
                         f"after {int(res.iterations)} iterations; increase epsilon, max_iter or tol")


def sinkhorn_divergence(x, y, epsilon: float | None = None, **kwargs):
    """Debiased Sinkhorn divergence ``S_eps`` between samples; see :func:`sinkhorn_distance`."""
    return sinkhorn_distance(x, y, epsilon, debiased=True, **kwargs)
