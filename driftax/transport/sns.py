"""Sinkhorn-Newton-Sparse (SNS): Sinkhorn warm start, then Newton steps with a sparsified Hessian.

Reference: X. Tang, M. Shavlovsky, H. Rahmanian, E. Tardini, K. K. Thekumparampil, T. Xiao, L. Ying,
"Accelerating Sinkhorn Algorithm with Sparse Newton Iterations", ICLR 2024 (arXiv:2401.12253).

The dual (see :mod:`driftax.transport.problem`) is maximised over ``z = (f, g)``::

    D(f, g) = <a, f> + <b, g> - eps sum_ij P_ij + eps sum(a),     P_ij = exp((f_i + g_j - C_ij) / eps)
    grad D  = (a - P 1, b - P^T 1)
    -hess D = (1/eps) [[diag(P 1), P], [P^T, diag(P^T 1)]]        (PSD, null vector (1, -1))

1. *Warm start*: ``warm_start`` Sinkhorn sweeps, in stabilised scaling form (the log-domain iterates; the
   sweeps of :func:`driftax.transport.sinkhorn`, :func:`driftax.transport.sinkhorn.sweeps`).
2. *Newton stage* (Algorithm 1 of the paper): the off-diagonal block ``P`` is replaced by a sparse ``S`` keeping
   the ``k`` largest entries of each row (the diagonal blocks keep the exact marginals ``r = P 1``,
   ``c = P^T 1``, so ``H_S = [[diag r, S], [S^T, diag c]]`` is diagonally dominant and positive semi-definite).
   The direction solves ``H_S d = eps grad D``. Eliminating ``d_f = (eps grad_f - S d_g) / r`` leaves the Schur
   complement system ``(diag c - S^T diag(1/r) S) d_g = eps grad_g - S^T (eps grad_f / r)``, solved matrix-free by
   Jacobi-preconditioned conjugate gradient (the system is consistent when ``sum a = sum b``, also in the
   singular case ``S = P``). A backtracking (Armijo) line search on ``D`` follows; when no step length improves
   ``D`` (or, at round-off level near the optimum, the marginal error), ``fallback_sweeps`` Sinkhorn sweeps are
   taken instead (in the log domain, :func:`driftax.transport.sinkhorn.fixed_log_sweeps`), which keeps the method
   globally convergent.
3. *Continuation* (ours; Kosowsky & Yuille 1994, Schmitzer 2019 for Sinkhorn): where the Newton stage at ``eps``
   stalls (a line search finds no ascent, or the error stops improving) - typical of ground costs whose OT is
   not unique, such as L1 on a grid, for which the paper lengthens the warm start to 700 sweeps - it is
   restarted from the initial potentials through Newton stages at ``8, 4, 2`` times ``eps``, each solved to a
   loose tolerance and warm-starting the next. On the benchmark's 28x28 L1 images this takes 82 iterations in
   all where Sinkhorn takes 8,638.

Cost per Newton step. Marginals at the line-search trials come from an *absorbed kernel*
``K = exp((f0 + g0 - C) / eps)`` as ``u * (K v)`` and ``v * (K^T u)`` (two mat-vecs instead of an exponential
pass; ``K`` is re-formed when the potentials drift, and trials beyond a trust region are rejected).
The kept entries come from ``lax.top_k`` on float32 row-normalised entries (XLA:CPU has a fast float32 top-k;
float64 top-k sorts and is ~30x slower); their values are exact in the working precision. ``S v`` is a gather
and row sum, ``S^T u`` a scatter-add. ``top_k`` is still the most expensive operation, so the pattern is
refreshed only where it has lost mass: when the kept entries drop more than ``refresh`` times the mass they
dropped when chosen, the rows that lost the most are re-selected, at most two blocks of ``n / 8`` rows per step.
With ``density=None`` the budget is chosen per stage from its starting plan: the smallest power-of-two ``k``
whose top-``k`` entries keep at least ``1 - mass_tol`` of the plan's mass (the prototype behind this module
stalled with 5 entries per row keeping 98% of the mass and matched the dense Newton step with 20).
"""
from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from driftax.transport.problem import (
    OTResult,
    _finalize,
    _norm,
    _safe_dot,
    check_init,
    check_int,
    pad_problem,
    padded_size,
    precision_context,
    map_problems,
    norm_code,
    shard_batch,
    validate_batch,
    validate_problem,
    warn_if_float32,
)
from driftax.transport.sinkhorn import fixed_log_sweeps, fixed_sweeps, maybe, unpad

__all__ = ["sns", "sns_batch", "SNSOptions", "newton_stage", "choose_budget"]


# --------------------------------------------------------------------------- dense passes

def _dual_and_error(a, b, eps, f, g, r, c, norm):
    """Dual value ``D(f, g)`` and marginal error, given the plan's marginals ``r = P 1``, ``c = P^T 1``."""
    dual = _safe_dot(a, f) + _safe_dot(b, g) - eps * (jnp.sum(r) - jnp.sum(a))
    return dual, _norm(r - a, norm) + _norm(c - b, norm)


def _state(a, b, cost, eps, f, g, norm):
    """One pass over the plan: marginals, dual value and marginal error at ``(f, g)``."""
    p = jnp.exp((f[:, None] + g[None, :] - cost) / eps)
    r = p.sum(axis=1)
    c = p.sum(axis=0)
    return (r, c) + _dual_and_error(a, b, eps, f, g, r, c, norm)


def _top_logits(f, g, cost, eps, k: int):
    """Column indices of the ``k`` largest entries of each row of ``P`` (float32 top-k on the logits)."""
    logits32 = ((f[:, None] + g[None, :] - cost) / eps).astype(jnp.float32)
    _, idx = jax.lax.top_k(logits32, k)
    return idx


def _entries(f, g, cost, eps, idx):
    rows = jnp.arange(cost.shape[0])[:, None]
    return jnp.exp((f[:, None] + g[idx] - cost[rows, idx]) / eps)


# --------------------------------------------------------------------------- sparse algebra and CG

def _spmv(vals, idx, v):
    """``S v`` with ``S`` given row-wise by ``(vals, idx)`` of shape ``(n, k)``."""
    return jnp.sum(vals * v[idx], axis=1)


def _spmv_t(vals, idx, u, m):
    """``S^T u``."""
    return jnp.zeros((m,), vals.dtype).at[idx].add(vals * u[:, None])


def _pcg(matvec, rhs, precond, rtol, max_iter):
    """Preconditioned CG for a symmetric PSD system; stops at ``|res| <= rtol |rhs|``. Returns ``(x, iters)``."""
    bnorm = jnp.sqrt(jnp.sum(rhs * rhs))
    x0 = jnp.zeros_like(rhs)
    z0 = precond * rhs
    rz0 = jnp.sum(rhs * z0)

    def cond(s):
        _, r, _, _, it, ok = s
        return ok & (it < max_iter) & (jnp.sqrt(jnp.sum(r * r)) > rtol * bnorm)

    def body(s):
        x, r, p, rz, it, _ = s
        ap = matvec(p)
        pap = jnp.sum(p * ap)
        ok = (pap > 0) & jnp.isfinite(pap)
        alpha = jnp.where(ok, rz / jnp.where(ok, pap, 1.0), 0.0)
        x = x + alpha * p
        r = r - alpha * ap
        z = precond * r
        rz_new = jnp.sum(r * z)
        beta = jnp.where(rz > 0, rz_new / jnp.where(rz > 0, rz, 1.0), 0.0)
        p = z + beta * p
        return x, r, p, rz_new, it + 1, ok

    state = (x0, rhs, z0, rz0, jnp.asarray(0, jnp.int32), jnp.asarray(True))
    x, _, _, _, it, _ = jax.lax.while_loop(cond, body, state)
    return x, it


def _newton_direction(a, b, r, c, vals, idx, eps, cg_tol, max_cg):
    """Solve ``[[diag r, S], [S^T, diag c]] (df, dg) = eps (a - r, b - c)`` via the Schur complement in ``dg``."""
    m = c.shape[0]
    u = eps * (a - r)
    w = eps * (b - c)
    rinv = jnp.where(r > 0, 1.0 / jnp.where(r > 0, r, 1.0), 0.0)

    def schur(v):
        return c * v - _spmv_t(vals, idx, _spmv(vals, idx, v) * rinv, m)

    diag = c - _spmv_t(vals * vals, idx, rinv, m)
    diag = jnp.where(diag > 1e-3 * c, diag, c)  # guard against cancellation: still a valid SPD preconditioner
    precond = jnp.where(diag > 0, 1.0 / jnp.where(diag > 0, diag, 1.0), 0.0)
    rhs = w - _spmv_t(vals, idx, u * rinv, m)
    rhs = jnp.where(c > 0, rhs, 0.0)
    dg, it = _pcg(schur, rhs, precond, cg_tol, max_cg)
    dg = jnp.where(c > 0, dg, 0.0)
    df = (u - _spmv(vals, idx, dg)) * rinv
    return df, dg, it


# --------------------------------------------------------------------------- plan evaluation by an absorbed kernel

# The Newton stage evaluates the plan's marginals at every line-search trial. Instead of an exponential pass over
# the whole matrix, it keeps K = exp((f0 + g0 - C) / eps) from reference potentials and evaluates
# r = u * (K v), c = v * (K^T u) with u = exp((f - f0) / eps), v = exp((g - g0) / eps): two mat-vecs. Entries of
# K that underflowed were below the smallest normal number, exp(-L) (L = 708 in float64, 87 in float32), at the
# reference and stay below exp(-L + 2 * trial) <= exp(-40) at any evaluated point, negligible against the
# marginals; the kernel is re-formed ("absorbed") when the potentials have moved by more than trial / 3 eps, and
# a trial point further than trial * eps gets dual -inf, so the line search shortens the step (trust region).
_REFRESH_BLOCKS = 2  # blocks of n/8 rows re-selected per Newton step at most


def _trust(dtype) -> float:
    """Trust radius in units of eps: 300 in float64, 23 in float32 (see above)."""
    return float(min(300.0, (-np.log(np.finfo(dtype).tiny) - 40.0) / 2.0))


class _Kernel(NamedTuple):
    k: jax.Array   # exp((f0 + g0 - C) / eps), zero in rows/columns of zero weight
    f0: jax.Array
    g0: jax.Array


def _absorb(a, b, cost, eps, f, g):
    return _Kernel(jnp.exp((f[:, None] + g[None, :] - cost) / eps), jnp.where(a > 0, f, 0.0), jnp.where(b > 0, g, 0.0))


def _scalings(kern, a, b, eps, f, g):
    """``u, v`` with ``P(f, g) = diag(u) K diag(v)``, and the largest potential move in units of ``eps``."""
    du = jnp.where(a > 0, (f - kern.f0) / eps, 0.0)
    dv = jnp.where(b > 0, (g - kern.g0) / eps, 0.0)
    dev = jnp.maximum(jnp.max(jnp.abs(du)), jnp.max(jnp.abs(dv)))
    return jnp.exp(du), jnp.exp(dv), dev


def _state_k(kern, a, b, eps, f, g, norm):
    """:func:`_state` through the absorbed kernel (two mat-vecs). A point further than ``_trust * eps`` from the
    kernel's reference gets ``dual = -inf`` (a trust region: the line search then shortens the step)."""
    u, v, dev = _scalings(kern, a, b, eps, f, g)
    r = u * (kern.k @ v)
    c = v * (u @ kern.k)
    dual, err = _dual_and_error(a, b, eps, f, g, r, c, norm)
    return r, c, jnp.where(dev <= _trust(kern.k.dtype), dual, -jnp.inf), err


def _select(kern, u, v, r, rows, k: int):
    """Columns of the ``k`` largest entries of the given rows of ``P = diag(u) K diag(v)``: ``lax.top_k`` on the
    row-normalised entries in float32 (XLA:CPU's float32 top-k is fast; float64 sorts). Cost ~ len(rows)."""
    rr = r[rows]
    key = (u[rows, None] * kern.k[rows] * v[None, :]) / jnp.where(rr > 0, rr, 1.0)[:, None]
    return jax.lax.top_k(key.astype(jnp.float32), k)[1]


def _values(kern, u, v, idx, rows=None):
    """The kept entries ``P_{i, idx_is}`` of the given rows (all by default), exact in the working precision."""
    rows = jnp.arange(idx.shape[0]) if rows is None else rows
    return u[rows, None] * kern.k[rows[:, None], idx] * v[idx]


# --------------------------------------------------------------------------- Newton stage

class _Stage(NamedTuple):
    f: jax.Array
    g: jax.Array
    newton: jax.Array      # Newton steps taken
    sweeps: jax.Array      # fallback Sinkhorn sweeps taken
    cg: jax.Array          # CG iterations
    errors: jax.Array      # marginal error after each Newton step, -1 past the last
    stalled: jax.Array     # stopped by a failed line search, a non-finite error or no 10% gain in `patience` steps
    err: jax.Array         # marginal error at (f, g)


@functools.partial(jax.jit, static_argnames=("k", "max_newton"))
def newton_stage(a, b, cost, eps, f, g, tol, cg_tol, refresh, max_cg=500, max_backtracks=30, fallback_sweeps=20,
                 patience=0, *, k: int, max_newton: int, norm) -> _Stage:
    """Newton steps with a row-wise top-``k`` sparsified Hessian from ``(f, g)`` until the marginal error is
    ``<= tol`` (jitted, no validation; every array argument may be batched with ``vmap``). With ``patience > 0`` it
    also stops, flagged ``stalled``, when the error has not dropped below 0.9 times its best value for
    ``patience`` steps or a line search fails (instead of taking Sinkhorn sweeps).

    Only what fixes a shape is static (``k``, ``max_newton``: the history); ``norm`` is
    :func:`driftax.transport.problem.norm_code` of the norm's name (traced, as the counts); the counts
    ``max_cg``, ``max_backtracks``, ``fallback_sweeps`` and ``patience`` are traced, so that stages that differ only
    in them (the stalling first stage and the continuation's stages, or another ``SNSOptions``) share one compiled
    program (each static value compiled the whole stage again, seconds of CPU)."""
    n, m = cost.shape
    dtype = cost.dtype
    max_cg, max_backtracks, fallback_sweeps, patience = (
        jnp.asarray(x, jnp.int32) for x in (max_cg, max_backtracks, fallback_sweeps, patience))
    stall_mode = patience > 0
    c1 = 1e-4
    noise = 64 * jnp.finfo(dtype).eps
    tiny = 100 * float(jnp.finfo(dtype).eps)  # slack in the mass comparisons
    # the pattern is refreshed a block of rows at a time (those that lost the most mass): top-k costs ~ rows
    block = -(-n // 8)
    kern = _absorb(a, b, cost, eps, f, g)
    r, c, dual, err = _state_k(kern, a, b, eps, f, g, norm)
    u, v, _ = _scalings(kern, a, b, eps, f, g)
    idx = _select(kern, u, v, r, jnp.arange(n), k)
    vals = _values(kern, u, v, idx)
    # mass the pattern drops when chosen (0 for a plan that underflowed entirely: refreshed once mass appears)
    total = jnp.sum(r)
    ref = jnp.where(total > 0, jnp.maximum(1.0 - jnp.sum(vals) / jnp.where(total > 0, total, 1.0), 0.0), 0.0)
    hist = jnp.full((max_newton,), -1.0, dtype)
    zero = jnp.asarray(0, jnp.int32)

    def refresh_rows(kern, u, v, r, idx):
        """When the pattern drops more than ``refresh`` times the mass it dropped when first chosen, re-select
        the rows that lost the most, a block at a time, until it drops no more than then or ``_REFRESH_BLOCKS``
        blocks are done (a bounded cost per step: ``lax.top_k`` is the most expensive operation here)."""
        vals = _values(kern, u, v, idx)
        lost = jnp.maximum(r - vals.sum(axis=1), 0.0)
        total = jnp.sum(r)
        stale = jnp.sum(lost) > (refresh * ref + tiny) * total

        def cond(s):
            lost, j = s[2], s[3]
            return stale & (jnp.sum(lost) > (ref + tiny) * total) & (j < _REFRESH_BLOCKS)

        def body(s):
            idx, vals, lost, j = s
            rows = jax.lax.top_k(lost, block)[1]
            new = _select(kern, u, v, r, rows, k)
            nv = _values(kern, u, v, new, rows)
            idx = idx.at[rows].set(new)
            vals = vals.at[rows].set(nv)
            lost = lost.at[rows].set(jnp.maximum(r[rows] - nv.sum(axis=1), 0.0))
            return idx, vals, lost, j + 1

        idx, vals, _, _ = jax.lax.while_loop(cond, body, (idx, vals, lost, zero))
        return idx, vals

    def cond(s):
        err, it, since = s[5], s[9], s[13]
        return (err > tol) & (it < max_newton) & jnp.isfinite(err) & (~stall_mode | (since < patience))

    def body(s):
        f, g, r, c, dual, err, kern, idx, best, it, sweeps, cg_total, hist, since = s
        u, v, dev = _scalings(kern, a, b, eps, f, g)
        # (maybe, not lax.cond: under vmap a cond runs both branches, an exponential pass per step and problem)
        kern = maybe(dev > _trust(dtype) / 3, lambda: _absorb(a, b, cost, eps, f, g), kern)
        u, v, _ = _scalings(kern, a, b, eps, f, g)
        idx, vals = refresh_rows(kern, u, v, r, idx)
        df, dg, cg_it = _newton_direction(a, b, r, c, vals, idx, eps, cg_tol, max_cg)
        slope = jnp.sum((a - r) * df) + jnp.sum((b - c) * dg)  # <grad D, d> > 0: an ascent direction
        scale = noise * (jnp.abs(_safe_dot(a, f)) + jnp.abs(_safe_dot(b, g)) + eps * jnp.sum(a))

        # backtracking line search on the dual
        def ls_cond(t_state):
            return (~t_state[2]) & (t_state[1] < max_backtracks)

        def ls_body(t_state):
            t, j = t_state[:2]
            ft = f + t * df
            gt = g + t * dg
            rt, ct, dt, et = _state_k(kern, a, b, eps, ft, gt, norm)
            ok = jnp.isfinite(dt) & jnp.isfinite(et)
            armijo = (slope > 0) & (dt >= dual + c1 * t * slope)  # never a zero or non-ascent step
            roundoff = (et < err) & (dt >= dual - scale)
            acc = ok & (armijo | roundoff)
            return (jnp.where(acc, t, 0.5 * t), j + 1, acc, ft, gt, rt, ct, dt, et)

        t_state = (jnp.asarray(1.0, dtype), zero, jnp.asarray(False), f, g, r, c, dual, err)
        t_state = jax.lax.while_loop(ls_cond, ls_body, t_state)

        def do_sweeps():
            f2, g2 = fixed_log_sweeps(a, b, cost, eps, f, g, fallback_sweeps)  # (log domain: see there)
            return (f2, g2) + _state(a, b, cost, eps, f2, g2, norm), fallback_sweeps

        accepted = t_state[2]
        # a failed line search: with patience > 0 it ends the stage as stalled, the state unchanged (the caller
        # restarts through a continuation); otherwise fallback sweeps are taken (under vmap: only when some problem
        # needs them, see `maybe`)
        kept = jax.tree.map(lambda x, y: jnp.where(accepted, x, y), t_state[3:], (f, g, r, c, dual, err))
        (f, g, r, c, dual, err), extra = maybe(~accepted & ~stall_mode, do_sweeps, (kept, zero))
        failed = ~accepted & stall_mode
        improved = err < 0.9 * best
        hist = hist.at[it].set(err)
        since = jnp.where(failed, patience, jnp.where(improved, 0, since + 1))
        return (f, g, r, c, dual, err, kern, idx, jnp.where(improved, err, best), it + 1, sweeps + extra,
                cg_total + cg_it, hist, since)

    state = (f, g, r, c, dual, err, kern, idx, err, zero, zero, zero, hist, zero)
    if max_newton > 0:
        state = jax.lax.while_loop(cond, body, state)
    f, g, err, it, sweeps, cg_total, hist, since = (state[i] for i in (0, 1, 5, 9, 10, 11, 12, 13))
    stalled = stall_mode & ((since >= patience) | ~jnp.isfinite(err)) & ~(err <= tol)
    return _Stage(f, g, it, sweeps, cg_total, hist, stalled, err)


# --------------------------------------------------------------------------- budget choice

@functools.partial(jax.jit, static_argnames=("k_max",))
def _kept_mass_curve(f, g, cost, eps, sel, k_max):
    """Fraction of the plan's mass kept by the row-wise top-``k`` entries, ``k = 1..k_max``, estimated on the rows
    ``sel`` (:func:`_sample_rows`: the budget is a statistic; no need to sort every row)."""
    fs, cs = f[sel], cost[sel]
    idx = _top_logits(fs, g, cs, eps, k_max)
    vals = _entries(fs, g, cs, eps, idx)  # sorted in decreasing order along each row
    total = jnp.exp((fs[:, None] + g[None, :] - cs) / eps).sum()
    return jnp.cumsum(jnp.sum(vals, axis=0)) / total


def _sample_rows(N: int, n: int, rows: int) -> np.ndarray:
    """``min(rows, n)`` evenly spaced rows among the first ``n`` (the problem's own rows), followed, in a problem
    padded to ``N`` rows, by padded rows (zero mass: they change no sum) up to ``min(rows, N)`` entries, so that
    every size of a padding bucket shares one compiled mass curve."""
    sel = np.linspace(0, n - 1, min(rows, n)).astype(np.int32)
    return np.concatenate([sel, np.full(min(rows, N) - sel.size, N - 1, np.int32)])


def _budget_from_curve(curve, mass_tol, k_min, k_max):
    if not np.all(np.isfinite(curve)):  # the sampled rows of the plan underflowed: no information
        return min(64, k_max)
    k = min(k_min, k_max)
    while k < k_max and curve[k - 1] < 1.0 - mass_tol:
        k = min(2 * k, k_max)
    return int(k)


def _width(k: int, m: int, M: int) -> int:
    """Entries kept per row for a budget of ``k`` on a problem with ``m`` columns padded to ``M``: ``k``, or all ``M``
    columns once ``k`` covers the ``m`` real ones (the padded columns hold exact zeros, so the Newton step is the
    same), so that every dense budget of a padding bucket shares one compiled stage (``k = m`` compiled one per
    size)."""
    return M if k >= m else k


def choose_budget(f, g, cost, eps, mass_tol: float = 1e-3, k_min: int = 8, k_max: int = 256,
                  rows: int = 64, n: int | None = None, m: int | None = None) -> int:
    """Smallest power-of-two ``k`` in ``[k_min, k_max]`` whose row-wise top-``k`` entries keep ``>= 1 - mass_tol``
    of the mass of ``P = exp((f + g - C) / eps)`` (measured on ``rows`` rows; ``k_max`` if none does). ``n, m``:
    the problem's own size when ``cost`` is padded (:func:`driftax.transport.problem.pad_problem`)."""
    N, M = cost.shape
    n, m = N if n is None else n, M if m is None else m
    # (top-k over the padded width: the padded columns hold no mass, so the curve is the unpadded one up to k = m)
    curve = np.asarray(_kept_mass_curve(f, g, cost, eps, _sample_rows(N, n, rows), min(k_max, M)))
    return _budget_from_curve(curve, mass_tol, k_min, min(k_max, m))


# --------------------------------------------------------------------------- driver

_AUTO_SCHEDULE = (8.0, 4.0, 2.0)


def _schedule(continuation):
    """``(factors, auto)``: the continuation factors run before the target ``eps`` and whether a stalled Newton
    stage may be restarted with :data:`_AUTO_SCHEDULE`."""
    if continuation is None:
        return (), True
    if continuation is False:
        return (), False
    try:
        if isinstance(continuation, (str, bytes)):
            raise TypeError
        factors = tuple(float(x) for x in continuation)
    except (TypeError, ValueError):
        raise TypeError("continuation must be None, False or a sequence of factors > 1, got "
                        f"{continuation!r}") from None
    if not all(math.isfinite(x) and x > 1 for x in factors) or any(x <= y for x, y in zip(factors, factors[1:])):
        raise ValueError(f"continuation must be strictly decreasing factors > 1 (stages at factor * epsilon "
                         f"before epsilon itself), got {continuation!r}")
    return factors, False


@dataclasses.dataclass(frozen=True)
class SNSOptions:
    """Expert settings of :func:`sns` and :func:`sns_batch`, with their defaults (validated on construction, so
    that a bad value is reported where it is made). ``sns(a, b, cost, eps)`` needs none of them.

    Attributes:
      warm_start: Sinkhorn sweeps before the Newton stage (5). The paper uses 20 (700 for the L1 ground cost); on
        every benchmark problem here 5 gave fewer total iterations at the same wall time.
      continuation: ``None`` (default): Newton at ``epsilon`` directly, and if it stalls (a line search finds
        no ascent, the error is not finite, or it has not dropped below 0.9 times its best for ``patience``
        steps; typical of costs whose OT is not unique, such as L1 on a grid) a restart from the initial
        potentials through a warm start and stages at ``8, 4, 2`` times ``epsilon``; the better of the two attempts
        is returned (concrete inputs only; under ``jit``/``vmap`` no restart; :func:`sns_batch` restarts the
        stalled problems of a batch). ``False``: never. A strictly decreasing sequence of factors ``> 1``: always
        run Newton stages at ``factor * epsilon`` first, the warm start at the first of them.
      density: fraction of each row of ``P`` kept in the sparse Hessian (``k = ceil(density * m)``). ``None``:
        chosen at the start of each stage as the smallest power of two keeping ``1 - mass_tol`` of the mass, at
        most ``k_max`` (needs concrete inputs; under ``jit``/``vmap`` ``None`` means ``density = min(1, 64 / m)``).
      mass_tol (1e-3), k_max (256): the automatic budget keeps ``1 - mass_tol`` of the plan's mass
        (``0 < mass_tol < 1``) with at most ``k_max`` entries per row.
      cg_tol (1e-2), max_cg (500): relative residual and iteration cap of the preconditioned CG.
      max_backtracks (30): step halvings before falling back to ``fallback_sweeps`` (20) Sinkhorn sweeps.
      refresh (2.0): re-select a row's kept entries when the pattern drops more than ``refresh`` times the mass it
        dropped when chosen.
      patience (20): Newton steps without a 10% gain that count as a stall (``0``: no stall detection, so no
        automatic continuation either).
      stage_tol (1e-2): marginal error, relative to the mass, to which each continuation stage before the last is
        solved.
    """

    warm_start: int = 5
    continuation: Any = None
    density: float | None = None
    mass_tol: float = 1e-3
    k_max: int = 256
    cg_tol: float = 1e-2
    max_cg: int = 500
    max_backtracks: int = 30
    fallback_sweeps: int = 20
    refresh: float = 2.0
    patience: int = 20
    stage_tol: float = 1e-2

    def __post_init__(self):
        for name, minimum in (("warm_start", 0), ("k_max", 1), ("max_cg", 1), ("max_backtracks", 1),
                              ("fallback_sweeps", 1), ("patience", 0)):
            check_int(getattr(self, name), name, minimum)
        for name in ("cg_tol", "mass_tol", "refresh", "stage_tol"):
            val = getattr(self, name)
            if isinstance(val, bool) or not (isinstance(val, numbers.Real) and math.isfinite(val) and val > 0):
                raise ValueError(f"{name} must be a positive number, got {val!r}")
        if self.mass_tol >= 1:
            raise ValueError(f"mass_tol must be below 1 (the fraction of the mass the sparse Hessian may drop), "
                             f"got {self.mass_tol!r}")
        d = self.density
        if d is not None and (isinstance(d, bool) or not (isinstance(d, numbers.Real) and 0 < d <= 1)):
            raise ValueError(f"density must be None or a fraction in (0, 1], got {d!r}")
        _schedule(self.continuation)  # validates
        if isinstance(self.continuation, list):
            object.__setattr__(self, "continuation", tuple(self.continuation))  # hashable


_OPTION_NAMES = tuple(f.name for f in dataclasses.fields(SNSOptions))
_COMMON = ("tol", "max_iter", "norm", "init", "dtype", "history_every", "options")


def resolve_options(options, legacy: dict, max_iter, fn: str = "sns"):
    """``(SNSOptions, max_iter)`` from ``options`` and keywords of the old signature.

    Old keywords keep working with a ``FutureWarning`` naming the new spelling: ``max_newton`` is ``max_iter``,
    the expert knobs (``warm_start=...``) go into ``options=SNSOptions(...)``. Anything else is a ``TypeError``
    that lists the accepted keywords."""
    if options is None:
        options = SNSOptions()
    elif not isinstance(options, SNSOptions):
        raise TypeError(f"options must be an SNSOptions or None, got {type(options).__name__}")
    legacy = dict(legacy)
    if "max_newton" in legacy:
        if max_iter is not None:
            raise TypeError(f"{fn}() got both max_iter and its old name max_newton; pass max_iter only")
        warnings.warn(f"{fn}(max_newton=...) is now {fn}(max_iter=...) (Newton steps per stage, as before)",
                      FutureWarning, stacklevel=3)
        max_iter = legacy.pop("max_newton")
    unknown = [k for k in legacy if k not in _OPTION_NAMES]
    if unknown:
        raise TypeError(f"{fn}() got an unexpected keyword argument {unknown[0]!r}; accepted keywords: "
                        f"{', '.join(_COMMON)}; expert settings go in options=SNSOptions(...): "
                        f"{', '.join(_OPTION_NAMES)}")
    if legacy:
        warnings.warn(f"{fn}({', '.join(f'{k}=...' for k in legacy)}) is now {fn}(options=SNSOptions("
                      f"{', '.join(f'{k}=...' for k in legacy)}))", FutureWarning, stacklevel=3)
        options = dataclasses.replace(options, **legacy)
    max_iter = 200 if max_iter is None else check_int(max_iter, "max_iter", 0)
    return options, max_iter


def sns(a, b, cost, epsilon, *, tol: float = 1e-10, max_iter: int | None = None, norm: str = "l1", init=None,
        dtype=None, history_every: int = 1, options: SNSOptions | None = None, **legacy) -> OTResult:
    """Entropic optimal transport by Sinkhorn-Newton-Sparse (Tang et al., ICLR 2024).

    Same problem and :class:`OTResult` as :func:`driftax.transport.sinkhorn`; see the module docstring for the
    algorithm (Sinkhorn warm start, Newton steps on the dual with a row-wise top-``k`` sparsified Hessian,
    Schur-complement PCG, Armijo line search, Sinkhorn fallback, epsilon continuation when Newton stalls).
    Converges in tens of iterations where Sinkhorn needs thousands (small ``eps``).
    Small problems (at most 128 points on a side) are solved padded with zero weights, as in
    :func:`driftax.transport.sinkhorn`; the budget ``k`` is chosen on the problem's own rows and columns.

    Args:
      a, b, cost, epsilon, tol, norm, init, dtype, history_every: as in :func:`driftax.transport.sinkhorn`
        (``history_every=k`` keeps every k-th entry of ``errors``).
      max_iter: maximum Newton steps per stage (default 200; the old name ``max_newton`` still works, with a
        ``FutureWarning``).
      options: :class:`SNSOptions` (warm start, continuation, sparsity budget, CG, line search; documented
        defaults). The old keywords (``warm_start=5``...) still work, with a ``FutureWarning``.

    Returns:
      :class:`OTResult` with ``newton_iterations``, ``cg_iterations`` and ``density`` (of the final stage) filled
      in; ``iterations`` counts warm-start sweeps, every Newton step (of every stage, also of a stalled attempt)
      and fallback sweeps; ``errors`` holds the marginal error after each Newton step, packed from index
      ``warm_start`` (sweeps are counted in ``iterations`` but not recorded there; with ``history_every=k`` entry
      ``t`` is the last recorded among entries ``t k .. t k + k - 1``).
    """
    opts, max_iter = resolve_options(options, legacy, max_iter)
    history_every = check_int(history_every, "history_every", 1)
    factors, auto = _schedule(opts.continuation)
    warm_start = opts.warm_start
    ctx, dt = precision_context(dtype, a, b, cost, epsilon)
    with ctx:
        a_, b_, c_, eps, tol_ = validate_problem(a, b, cost, epsilon, tol, norm, dt)
        warn_if_float32(c_.dtype, tol)
        n, m = c_.shape
        f0, g0 = check_init(init, n, m, c_.dtype, a_, b_)
        concrete = not any(isinstance(x, jax.core.Tracer) for x in (a_, b_, c_, eps))
        c_o = c_
        # small problems are solved padded with zero weights (one compiled program per size bucket, see problem.py)
        a_, b_, c_, f0, g0 = pad_problem(a_, b_, c_, f0, g0, (padded_size(n), padded_size(m)))
        stage_kw = _stage_kwargs(opts, max_iter, norm)
        scalars = (jnp.asarray(opts.cg_tol, c_.dtype), jnp.asarray(opts.refresh, c_.dtype))
        stage_tol_ = jnp.asarray(opts.stage_tol, c_.dtype) * jnp.sum(a_)

        def budget(f, g, e):
            if opts.density is not None:
                k = max(1, min(m, math.ceil(opts.density * m)))
            elif concrete:
                k = choose_budget(f, g, c_, e, opts.mass_tol, k_max=opts.k_max, n=n, m=m)
            else:
                k = min(m, 64)
            return _width(k, m, c_.shape[1])

        def run_stages(f, g, factors, patience):
            out = []
            for factor in factors + (None,):
                e = eps if factor is None else eps * factor
                k = budget(f, g, e)
                st = newton_stage(a_, b_, c_, e, f, g, tol_ if factor is None else stage_tol_, *scalars, k=k,
                                  patience=np.int32(patience if factor is None else 0), **stage_kw)
                out.append((st, k))
                f, g = st.f, st.g
            return out

        fw, gw = _warm(a_, b_, c_, eps * factors[0] if factors else eps, f0, g0, np.int32(warm_start))
        stages = run_stages(fw, gw, factors, opts.patience if (auto and concrete) else 0)
        sweeps = warm_start
        final = len(stages) - 1
        if auto and concrete and bool(stages[-1][0].stalled):
            # start again from the initial potentials, through the continuation (all counted), and keep the
            # attempt that ended closer (the stalled one is stage 0; a non-finite error counts as infinite)
            fw, gw = _warm(a_, b_, c_, eps * _AUTO_SCHEDULE[0], f0, g0, np.int32(warm_start))
            stages += run_stages(fw, gw, _AUTO_SCHEDULE, 0)
            sweeps += warm_start
            first, last = (float(stages[i][0].err) for i in (0, -1))
            last = last if math.isfinite(last) else math.inf
            final = 0 if math.isfinite(first) and first < last else len(stages) - 1
        res = _assemble(a_, b_, c_, eps, tol_, np.int32(sweeps), tuple(st for st, _ in stages),
                        np.asarray(min(stages[final][1], m) / m, np.dtype(c_.dtype)), np.int32(final),
                        norm=norm_code(norm), warm_start=warm_start, max_newton=max_iter, history_every=history_every)
        return unpad(res, n, m)._replace(cost=c_o)


def sns_batch(a, b, cost, epsilon, *, tol: float = 1e-10, max_iter: int | None = None, norm: str = "l1",
              dtype=None, history_every: int = 1, options: SNSOptions | None = None, shard: bool = True) -> OTResult:
    """Many SNS problems at once: one compiled program per stage for the whole batch (``vmap``), its problem
    axis sharded over all devices (:func:`driftax._sharding.batch_mesh`; ``shard=False`` keeps one device).

    ``cost`` is ``(B, n, m)``, ``a`` ``(B, n)`` and ``b`` ``(B, m)`` (``None``: uniform), ``epsilon`` a scalar or
    ``(B,)``; the other arguments as in :func:`sns`, and the same result for each problem (an :class:`OTResult`
    with a leading batch axis). What :func:`sns` decides per problem in Python is decided per batch here: the
    sparsity budget ``k`` (``density=None``) is the largest of the problems' budgets, and the problems whose
    Newton stage stalls are restarted through the epsilon continuation together (in the batch's own programs, the
    other problems taking no step).

    Cost per problem. Each stage is one compiled program for the batch (:func:`driftax.transport.problem.map_problems`:
    ``shard_map`` over devices, then on CPU a ``lax.map`` of single problems, so that a problem costs what its single
    solve costs, without the per-call overhead of budget choice and dispatch, and with the batch's largest budget
    ``k``). On accelerators problems are ``vmap``-ed in chunks: every branch that only some problems take (kernel
    re-absorption, fallback sweeps) runs only when one of them needs it (:func:`driftax.transport.sinkhorn.maybe`;
    a ``lax.cond`` would run it for all at every step), but a chunk's loops run until its slowest problem is done,
    so a chunk costs about its largest Newton-step count (and, per step, its largest CG and line-search counts)
    times its size, against the sum of the counts for single solves. On CPU a vmapped chunk of 4 cost 1.5x a
    single solve per problem (64 point clouds, n = 200) and one problem at a time 0.7-0.8x.
    """
    opts, max_iter = resolve_options(options, {}, max_iter, "sns_batch")
    history_every = check_int(history_every, "history_every", 1)
    factors, auto = _schedule(opts.continuation)
    warm_start = opts.warm_start
    ctx, dt = precision_context(dtype, a, b, cost, epsilon)
    with ctx:
        a_, b_, c_, eps, tol_ = validate_batch(a, b, cost, epsilon, tol, norm, dt)
        warn_if_float32(c_.dtype, tol)
        B, n, m = c_.shape
        c_o = c_
        # padded as single problems are (see problem.pad_problem)
        a_, b_, c_, f0, g0 = pad_problem(a_, b_, c_, jnp.zeros_like(a_), jnp.zeros_like(b_),
                                         (padded_size(n), padded_size(m)))
        (a_, b_, c_, eps, f0, g0), mesh = shard_batch((a_, b_, c_, eps, f0, g0), shard)
        stage_kw = _stage_kwargs(opts, max_iter, norm)
        counts = tuple(stage_kw.pop(k) for k in ("max_cg", "max_backtracks", "fallback_sweeps"))
        scalars = (jnp.asarray(opts.cg_tol, c_.dtype), jnp.asarray(opts.refresh, c_.dtype))
        stage_tol_ = jnp.asarray(opts.stage_tol, c_.dtype) * jnp.sum(a_, axis=1)
        tol_b = jnp.broadcast_to(tol_, (B,))

        M = c_.shape[2]

        def budget(f, g, c, e, active):
            if opts.density is not None:
                k = max(1, min(m, math.ceil(opts.density * m)))
            else:
                k = max(k for k, on in zip(_budget_batch(f, g, c, e, opts.mass_tol, opts.k_max, n, m), active) if on)
            return _width(k, m, M)

        def run_stages(f, g, factors, patience, active):
            # (inactive problems get an infinite tolerance: their stages take no step)
            off = jnp.asarray(~active)
            out = []
            for factor in factors + (None,):
                e = eps if factor is None else eps * factor
                k = budget(f, g, c_, e, active)
                t = jnp.where(off, jnp.inf, tol_b if factor is None else stage_tol_)
                pat = np.int32(patience if factor is None else 0)
                st = _newton_batch(a_, b_, c_, e, f, g, t, *scalars, *counts, pat, k=k, mesh=mesh, **stage_kw)
                out.append((st, k))
                f, g = st.f, st.g
            return out

        everyone = np.ones(B, bool)
        e_start = eps * factors[0] if factors else eps
        fw, gw = _warm_batch(a_, b_, c_, e_start, f0, g0, np.full(B, warm_start, np.int32), mesh=mesh)
        stages = run_stages(fw, gw, factors, opts.patience if auto else 0, everyone)
        sweeps = np.full(B, warm_start, np.int32)
        final = np.full(B, len(stages) - 1, np.int32)
        k_used = np.full(B, stages[-1][1])
        stalled = np.asarray(stages[-1][0].stalled) if auto else np.zeros(B, bool)
        if stalled.any():
            # as sns: the stalled problems start again from their initial potentials through the continuation
            # (counted), and keep the attempt that ended closer (a non-finite error counts as infinite). The restart
            # runs on the whole batch, the others taking no warm-start sweep and no step, so that it reuses the
            # batch's compiled programs (a sub-batch of another size compiled every stage again) and its devices
            fw, gw = _warm_batch(a_, b_, c_, eps * _AUTO_SCHEDULE[0], f0, g0,
                                 np.where(stalled, warm_start, 0).astype(np.int32), mesh=mesh)
            more = run_stages(fw, gw, _AUTO_SCHEDULE, 0, stalled)
            first, last = np.asarray(stages[0][0].err), np.asarray(more[-1][0].err)
            last = np.where(np.isfinite(last), last, np.inf)
            keep_first = np.isfinite(first) & (first < last)
            sweeps = np.where(stalled, 2 * warm_start, warm_start).astype(np.int32)
            final = np.where(stalled & ~keep_first, len(stages) + len(more) - 1, 0).astype(np.int32)
            k_used = np.where(stalled & ~keep_first, more[-1][1], stages[0][1])
            stages += more
        res = _assemble_batch(a_, b_, c_, eps, tol_b, sweeps, tuple(st for st, _ in stages),
                              (np.minimum(k_used, m) / m).astype(np.dtype(c_.dtype)), final, norm=norm_code(norm),
                              warm_start=warm_start, max_newton=max_iter, history_every=history_every)
        return unpad(res, n, m)._replace(cost=c_o)


@functools.partial(jax.jit, static_argnames=("mesh",))
def _warm_batch(a, b, cost, eps, f0, g0, warm_start, *, mesh):
    # (warm_start: sweeps per problem, (B,))
    return map_problems(fixed_sweeps, (a, b, cost, eps, f0, g0, warm_start), mesh)


@functools.partial(jax.jit, static_argnames=("k", "max_newton", "mesh"))
def _newton_batch(a, b, cost, eps, f, g, tol, cg_tol, refresh, max_cg, max_backtracks, fallback_sweeps, patience, *,
                  mesh, **kw) -> _Stage:
    # (the counts traced, as in newton_stage: one program per shape and budget k)
    counts = (max_cg, max_backtracks, fallback_sweeps, patience)
    return map_problems(lambda a, b, c, e, f, g, t: newton_stage(a, b, c, e, f, g, t, cg_tol, refresh, *counts, **kw),
                        (a, b, cost, eps, f, g, tol), mesh)


@functools.partial(jax.jit, static_argnames=("warm_start", "max_newton", "history_every"))
def _assemble_batch(a, b, cost, eps, tol, sweeps, stages, density, final, **kw) -> OTResult:
    # (sweeps, density and the reported stage `final` per problem)
    return jax.vmap(lambda *x: _assemble(*x, **kw))(a, b, cost, eps, tol, sweeps, stages, density, final)


@functools.partial(jax.jit, static_argnames=("k_max",))
def _mass_curves(f, g, cost, eps, sel, *, k_max):
    return jax.vmap(lambda f, g, c, e: _kept_mass_curve(f, g, c, e, sel, k_max))(f, g, cost, eps)


def _budget_batch(f, g, cost, eps, mass_tol, k_max, n, m, k_min: int = 8, rows: int = 64):
    """Per-problem :func:`choose_budget` of a batch (one vmapped mass curve); ``n, m`` as there."""
    B, N, M = cost.shape
    curves = np.asarray(_mass_curves(f, g, cost, eps, _sample_rows(N, n, rows), k_max=min(k_max, M)))
    return [_budget_from_curve(curve, mass_tol, k_min, min(k_max, m)) for curve in curves]


def _stage_kwargs(opts: SNSOptions, max_iter: int, norm: str) -> dict:
    # the counts as NumPy int32 scalars: traced arguments of the compiled stage (see newton_stage)
    return dict(max_newton=max_iter, max_cg=np.int32(opts.max_cg), max_backtracks=np.int32(opts.max_backtracks),
                fallback_sweeps=np.int32(opts.fallback_sweeps), norm=norm_code(norm))


@jax.jit
def _warm(a, b, cost, eps, f0, g0, warm_start):
    # (warm_start traced: one program for every warm-start length)
    return fixed_sweeps(a, b, cost, eps, f0, g0, warm_start)


@functools.partial(jax.jit, static_argnames=("warm_start", "max_newton", "history_every"))
def _assemble(a, b, cost, eps, tol, sweeps, stages, density, final, *, norm, warm_start, max_newton,
              history_every=1) -> OTResult:
    """One :class:`OTResult` from the warm start and the Newton stages: counts summed, Newton errors packed after
    the warm-start entries (``-1``), the potentials of stage ``final`` (traced: the two outcomes of a restart share
    one program)."""
    hist = jnp.full((warm_start + len(stages) * max_newton,), -1.0, cost.dtype)
    offset = jnp.asarray(warm_start, jnp.int32)
    newton = cg = jnp.asarray(0, jnp.int32)
    steps = jnp.arange(max_newton)
    for st in stages:
        pos = jnp.where(steps < st.newton, offset + steps, hist.shape[0])
        hist = hist.at[pos].set(st.errors, mode="drop")
        offset = offset + st.newton
        newton, sweeps, cg = newton + st.newton, sweeps + st.sweeps, cg + st.cg
    if history_every > 1:
        # entry t: the last recorded error among entries t k .. t k + k - 1 (-1 if none), as in sinkhorn
        k = history_every
        pad = -hist.shape[0] % k
        blocks = jnp.concatenate([hist, jnp.full((pad,), -1.0, hist.dtype)]).reshape(-1, k)
        last = jnp.max(jnp.where(blocks >= 0, jnp.arange(k), -1), axis=1)
        hist = jnp.where(last >= 0, jnp.take_along_axis(blocks, jnp.maximum(last, 0)[:, None], axis=1)[:, 0], -1.0)
    f = jnp.stack([st.f for st in stages])[final]
    g = jnp.stack([st.g for st in stages])[final]
    err, transport, dual, converged = _finalize(a, b, cost, eps, f, g, tol, norm)
    # cost=None: the caller attaches its own array (a returned input would be copied; see solve_sinkhorn)
    return OTResult(f=f, g=g, cost=None, a=a, b=b, epsilon=eps, transport_cost=transport, reg_cost=dual,
                    marginal_error=err, iterations=newton + sweeps, converged=converged, errors=hist,
                    newton_iterations=newton, cg_iterations=cg, density=density)
