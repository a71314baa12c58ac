"""Log-domain Sinkhorn with optional epsilon scaling, and Sinkhorn distances/divergences between samples.

Updates (Peyré & Cuturi 2019, Sec. 4.4; Schmitzer 2019), with ``LSE`` the log-sum-exp, never forming the
kernel ``exp(-C / eps)`` (which underflows at small ``eps``)::

    f_i <- eps log a_i - eps LSE_j((g_j - C_ij) / eps)
    g_j <- eps log b_j - eps LSE_i((f_i - C_ij) / eps)

After each ``g`` update the column marginal is exact, and the row marginal ``r_i = exp(f_i/eps + LSE_j(...))``
comes for free from the next ``f`` update, so the stopping rule ``|P 1 - a| + |P^T 1 - b| <= tol`` is checked
on every iteration at no extra cost. When it passes, the full error (both marginals, from the plan, as in the final
check) is recomputed once, and the sweeps resume if rounding in the column marginal keeps it above ``tol``; the
error reported in :class:`OTResult` is that of the final potentials. With ``epsilon_scaling=q`` the
regularisation follows ``eps_t = max(eps, eps_0 q^t)`` with ``eps_0 = max |C|`` (a warm start through a
decreasing epsilon schedule, Kosowsky & Yuille 1994; Schmitzer 2019).

Everything is ``lax.while_loop`` (the sweeps nested in the recheck loop); :func:`sinkhorn` is ``jit``-able and
``vmap``-able over a batch
of problems (``jax.vmap(lambda a, b, C: sinkhorn(a, b, C, eps))``).
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp

from driftax.transport import costs as _costs
from driftax.transport.problem import (
    OTResult,
    _finalize,
    _norm,
    _plan,
    check_init,
    check_int,
    precision_context,
    validate_problem,
    warn_if_float32,
)

__all__ = ["sinkhorn", "sinkhorn_distance", "sinkhorn_divergence", "solve_sinkhorn"]


def _log(w):
    return jnp.where(w > 0, jnp.log(jnp.where(w > 0, w, 1.0)), -jnp.inf)


def _lse_rows(g, cost, eps):
    """``LSE_j((g_j - C_ij) / eps)`` for every row ``i``."""
    return logsumexp((g[None, :] - cost) / eps, axis=1)


def _lse_cols(f, cost, eps):
    return logsumexp((f[:, None] - cost) / eps, axis=0)


def _row_error(f, lse_r, a, eps, norm):
    return _norm(jnp.exp(f / eps + lse_r) - a, norm)


def sinkhorn_loop(a, b, cost, eps, f, g, tol, *, max_iter: int, norm: str, eps_schedule=None,
                  history_every: int = 1):
    """Run log-domain Sinkhorn from ``(f, g)`` until the marginal error is ``<= tol`` or ``max_iter`` sweeps.

    Returns ``(f, g, err, iterations, history)``; ``err`` is the full error ``|P 1 - a| + |P^T 1 - b|`` of the
    returned ``(f, g)``, computed from the plan exactly as in the final convergence check, and ``history[t]`` the
    row error after sweep ``(t + 1) * history_every`` or the last sweep before it (``-1`` beyond; length
    ``ceil(max_iter / history_every)``). ``eps_schedule(t)`` gives the epsilon of sweep ``t`` (defaults to ``eps``).

    The sweeps stop on the row error (the column marginal is exact after a ``g`` update, up to rounding); the
    full error is then recomputed, and the sweeps resume while it is still above ``tol`` (up to ``max_iter``),
    so that a stop before ``max_iter`` means the final check passes.
    """
    loga, logb = _log(a), _log(b)
    sched = (lambda t: eps) if eps_schedule is None else eps_schedule
    dtype = cost.dtype

    # error of the initial point: both marginals (one extra pass, once)
    eps0 = sched(0)
    lse_r0 = _lse_rows(g, cost, eps0)
    err0 = jnp.where(
        eps0 == eps,
        _row_error(f, lse_r0, a, eps0, norm) + _norm(jnp.exp(g / eps0 + _lse_cols(f, cost, eps0)) - b, norm),
        jnp.inf,
    )
    hist0 = jnp.full((-(-max(max_iter, 1) // history_every),), -1.0, dtype)

    def cond(state):
        _, _, _, err, it, _ = state
        return (it < max_iter) & (err > tol)  # False for NaN err: stops, then reported as not converged

    def body(state):
        f, g, lse_r, _, it, hist = state
        e = sched(it)
        f = e * (loga - lse_r)
        g = e * (logb - _lse_cols(f, cost, e))
        e_next = sched(it + 1)
        lse_r = _lse_rows(g, cost, e_next)
        err = _row_error(f, lse_r, a, e_next, norm)
        err = jnp.where(e == eps, err, jnp.inf)  # not converged while epsilon is still being decreased
        hist = hist.at[it // history_every].set(jnp.where(e == eps, err, -1.0))
        return f, g, lse_r, err, it + 1, hist

    def full_error(f, g):
        p = _plan(f, g, cost, jnp.asarray(eps, dtype))
        return _norm(p.sum(axis=1) - a, norm) + _norm(p.sum(axis=0) - b, norm)

    def outer_cond(outer):
        inner, full = outer
        return (inner[4] < max_iter) & (full > tol)  # False for NaN: stops, reported as not converged

    def outer_body(outer):
        inner, _ = outer
        inner = jax.lax.while_loop(cond, body, inner)
        full = full_error(inner[0], inner[1])
        # resume only if the full check fails while the row error passed (inf forces at least one sweep)
        inner = inner[:3] + (jnp.where(full > tol, jnp.asarray(jnp.inf, dtype), inner[3]),) + inner[4:]
        return inner, full

    state = (f, g, lse_r0, err0, jnp.asarray(0, jnp.int32), hist0)
    (f, g, _, _, it, hist), err = jax.lax.while_loop(outer_cond, outer_body,
                                                     (state, jnp.asarray(jnp.inf, dtype)))
    return f, g, err, it, hist


@functools.partial(jax.jit, static_argnames=("max_iter", "norm", "scaling", "history_every"))
def solve_sinkhorn(a, b, cost, eps, f0, g0, tol, scale_factor, *, max_iter: int, norm: str, scaling: bool,
                   history_every: int = 1):
    """Jitted core of :func:`sinkhorn` (no validation). All array arguments may be batched with ``vmap``."""
    if scaling:
        eps_start = jnp.maximum(jnp.max(jnp.abs(cost)), eps)

        def schedule(t):
            return jnp.maximum(eps, eps_start * scale_factor ** jnp.asarray(t, cost.dtype))
    else:
        schedule = None
    f, g, _, it, hist = sinkhorn_loop(a, b, cost, eps, f0, g0, tol, max_iter=max_iter, norm=norm,
                                      eps_schedule=schedule, history_every=history_every)
    err, transport, dual, converged = _finalize(a, b, cost, eps, f, g, tol, norm)
    zero = jnp.asarray(0, jnp.int32)
    return OTResult(f=f, g=g, cost=cost, a=a, b=b, epsilon=eps, transport_cost=transport, reg_cost=dual,
                    marginal_error=err, iterations=it, converged=converged, errors=hist,
                    newton_iterations=zero, cg_iterations=zero, density=jnp.zeros((), cost.dtype))


def sinkhorn(a, b, cost, epsilon, *, tol: float = 1e-8, max_iter: int = 100_000, init=None,
             epsilon_scaling: float | None = None, history_every: int = 1, norm: str = "l1",
             dtype=None) -> OTResult:
    """Entropic optimal transport by log-domain Sinkhorn.

    Solves ``min_P <C, P> + eps sum P log P`` s.t. ``P 1 = a``, ``P^T 1 = b`` through its dual (see
    :mod:`driftax.transport.problem`) with alternating exact maximisation in ``f`` and ``g``::

        f_i <- eps log a_i - eps LSE_j((g_j - C_ij)/eps),   g_j <- eps log b_j - eps LSE_i((f_i - C_ij)/eps)

    The number of sweeps grows like ``1/eps`` (about ``2.2 / eps`` on unit-square point clouds);
    :func:`driftax.transport.sns` (Tang et al., ICLR 2024) is the fast solver at small ``eps``.

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
    max_iter = check_int(max_iter, "max_iter", 1)
    history_every = check_int(history_every, "history_every", 1)
    scaling = epsilon_scaling is not None
    if scaling:
        q = float(epsilon_scaling)
        if not 0.0 < q < 1.0:
            raise ValueError(f"epsilon_scaling must be None or a factor in (0, 1), got {epsilon_scaling}")
    ctx, dt = precision_context(dtype, a, b, cost, epsilon)
    with ctx:
        a_, b_, c_, eps, tol_ = validate_problem(a, b, cost, epsilon, tol, norm, dt)
        warn_if_float32(c_.dtype, tol)
        f0, g0 = check_init(init, c_.shape[0], c_.shape[1], c_.dtype, a_, b_)
        qf = jnp.asarray(epsilon_scaling if scaling else 1.0, c_.dtype)
        return solve_sinkhorn(a_, b_, c_, eps, f0, g0, tol_, qf, max_iter=max_iter, norm=norm, scaling=scaling,
                              history_every=history_every)


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
                      max_iter: int = 20_000, dtype=None, **kwargs):
    """Entropic OT distance between two samples ``x (n, d)`` and ``y (m, d)`` (a sample-quality metric).

    * ``debiased=False``: the Sinkhorn distance of Cuturi (2013), ``<C, P_eps>`` with ``P_eps`` the entropic
      plan; tends to the OT cost (``W_2^2`` for ``cost="sqeuclidean"``) as ``eps -> 0``.
    * ``debiased=True``: the Sinkhorn divergence (Genevay et al. 2018; Feydy et al. 2019)
      ``S_eps(a, b) = OT_eps(a, b) - OT_eps(a, a)/2 - OT_eps(b, b)/2`` with ``OT_eps`` the regularised cost
      (dual value); ``S_eps >= 0``, ``S_eps(a, a) = 0``, and it metrises weak convergence.

    ``epsilon=None`` uses ``0.05 * mean(C)``. ``a``/``b`` are optional sample weights (normalised here).
    ``method`` is ``"sinkhorn"`` or ``"sns"``; extra keyword arguments go to the solver. Returns a scalar.
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
        if method == "sinkhorn":
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
