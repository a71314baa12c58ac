"""Entropic optimal-transport problems: input validation, precision policy, the ``OTResult`` pytree.

The problem solved by every solver of :mod:`driftax.transport` is (Cuturi 2013; Peyré & Cuturi 2019)::

    min_{P >= 0, P 1 = a, P^T 1 = b}  <C, P> + eps * sum_ij P_ij log P_ij                       (primal)

    max_{f, g}  D(f, g) = <a, f> + <b, g> - eps * sum_ij exp((f_i + g_j - C_ij) / eps) + eps * sum(a)   (dual)

with the optimal plan ``P_ij = exp((f_i + g_j - C_ij) / eps)``. At the optimum the primal and dual values are
equal; ``OTResult.reg_cost`` reports ``D(f, g)`` (a lower bound at every iterate). Up to the constant
``eps * sum(a)``, the primal is the objective of POT (``ot.sinkhorn``: ``<C, P> + reg * sum P log P``), so plans
and regularised costs are directly comparable with POT.

Zero weights are allowed: the corresponding potentials are ``-inf`` and the plan rows/columns are exactly 0.

Precision. The rest of driftax runs in float32; the OT solvers need float64 to reach marginal errors below about
1e-6 and at small ``eps``. The public solvers therefore take ``dtype`` (default ``None``): with concrete
(non-traced) inputs and ``dtype=None`` they compute in float64 inside :func:`jax.enable_x64` *without* touching
the global ``jax_enable_x64`` flag; under a caller's ``jit``/``vmap`` the inputs are tracers whose dtype is
fixed by the caller, so enable x64 yourself (``with jax.enable_x64(True): ...``) to get float64 there.
"""
from __future__ import annotations

import contextlib
import warnings
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from driftax import _checks, _sharding

__all__ = ["OTResult", "marginal_error", "NORMS"]

NORMS = ("l1", "l2", "linf")


class OTResult(NamedTuple):
    """Result of an entropic OT solve (a pytree: ``jit``/``vmap`` return it batched).

    Attributes:
      f, g: dual potentials, shapes ``(n,)`` and ``(m,)``; ``P_ij = exp((f_i + g_j - C_ij) / eps)``.
        Defined up to ``(f + t, g - t)``; ``-inf`` where the weight is zero.
      cost: the cost matrix ``C`` (kept so that :meth:`plan` can be formed on request).
      a, b: marginals; epsilon: the regularisation.
      transport_cost: ``<C, P>`` for the returned plan (the "Sinkhorn distance" of Cuturi 2013).
      reg_cost: dual value ``D(f, g)``, equal at optimum to ``<C, P> + eps * sum P log P``.
      marginal_error: ``|P 1 - a| + |P^T 1 - b|`` in the chosen norm, recomputed for ``(f, g)`` after the solve
        (Sinkhorn computes it from its last kernel and scalings, the same plan up to rounding).
      iterations: total iterations (Sinkhorn sweeps + Newton steps for SNS).
      converged: ``marginal_error <= tol`` and every output finite. Never true for a NaN result.
      errors: marginal error after each iteration, ``-1`` where none was recorded (past the last iteration;
        Sinkhorn with ``history_every=k`` keeps every k-th; SNS records its Newton steps only, from index
        ``warm_start``, all stages one after another).
      newton_iterations, cg_iterations: Newton steps and total conjugate-gradient iterations (0 for Sinkhorn).
      density: mean fraction of the entries of ``P`` kept in the sparsified Hessian (0 for Sinkhorn).
    """

    f: jax.Array
    g: jax.Array
    cost: jax.Array
    a: jax.Array
    b: jax.Array
    epsilon: jax.Array
    transport_cost: jax.Array
    reg_cost: jax.Array
    marginal_error: jax.Array
    iterations: jax.Array
    converged: jax.Array
    errors: jax.Array
    newton_iterations: jax.Array
    cg_iterations: jax.Array
    density: jax.Array

    def _ctx(self):
        # a float64 result keeps float64 in its helpers even where the global x64 flag is off
        f64 = getattr(self.f, "dtype", None) == jnp.dtype(jnp.float64)
        return jax.enable_x64(True) if f64 and not jax.config.jax_enable_x64 else contextlib.nullcontext()

    def plan(self) -> jax.Array:
        """The transport plan ``P_ij = exp((f_i + g_j - C_ij) / eps)`` (materialised, ``(n, m)``)."""
        with self._ctx():
            return _plan(self.f, self.g, self.cost, self.epsilon)

    def marginals(self) -> tuple[jax.Array, jax.Array]:
        """``(P 1, P^T 1)``."""
        with self._ctx():
            p = self.plan()
            return p.sum(axis=-1), p.sum(axis=-2)

    def apply(self, v: jax.Array, axis: int = 1) -> jax.Array:
        """``P v`` (``axis=1``) or ``P^T v`` (``axis=0``), e.g. barycentric maps ``P y / a``."""
        with self._ctx():
            p = self.plan()
            v = jnp.asarray(v, p.dtype)
            return p @ v if axis == 1 else jnp.swapaxes(p, -1, -2) @ v


# --------------------------------------------------------------------------- numerics shared by the solvers

def _plan(f, g, cost, eps):
    return jnp.exp((f[..., :, None] + g[..., None, :] - cost) / eps[..., None, None])


def _safe_dot(w, x):
    """``<w, x>`` with ``0 * (-inf) = 0`` (zero weights have -inf potentials)."""
    return jnp.sum(jnp.where(w > 0, w * x, 0.0))


def _norm(x, norm):
    """``|x|`` in ``norm``: a name of :data:`NORMS`, or its index (:func:`norm_code`), which may be traced: the
    compiled solvers take the index, so that one program serves every norm (the three reductions of an ``n``-vector
    cost nothing next to a sweep's ``n x m`` passes)."""
    if isinstance(norm, str):
        if norm == "l1":
            return jnp.sum(jnp.abs(x))
        if norm == "l2":
            return jnp.sqrt(jnp.sum(x * x))
        return jnp.max(jnp.abs(x))
    ax = jnp.abs(x)
    return jnp.stack([jnp.sum(ax), jnp.sqrt(jnp.sum(x * x)), jnp.max(ax)])[norm]


def norm_code(norm: str) -> np.ndarray:
    """The index of ``norm`` in :data:`NORMS`, as the compiled solvers take it (a traced argument)."""
    return np.int32(NORMS.index(norm))


def _finalize(a, b, cost, eps, f, g, tol, norm):
    """One pass over the plan: exact marginal error, transport cost, dual value, convergence flag."""
    p = _plan(f, g, cost, eps)
    r = p.sum(axis=1)
    c = p.sum(axis=0)
    err = _norm(r - a, norm) + _norm(c - b, norm)
    transport = jnp.sum(jnp.where(p > 0, p * cost, 0.0))
    mass = jnp.sum(a)
    dual = _safe_dot(a, f) + _safe_dot(b, g) - eps * (jnp.sum(r) - mass)
    finite = (jnp.isfinite(err) & jnp.isfinite(transport) & jnp.isfinite(dual)
              & jnp.all(jnp.where(a > 0, jnp.isfinite(f), True))
              & jnp.all(jnp.where(b > 0, jnp.isfinite(g), True)))
    converged = finite & (err <= tol)
    return err, transport, dual, converged


def marginal_error(f, g, a, b, cost, epsilon, norm: str = "l1") -> jax.Array:
    """``|P 1 - a| + |P^T 1 - b|`` for the plan of the potentials ``(f, g)`` (norm ``l1``, ``l2`` or ``linf``).

    Computed in the precision policy of the solvers (module doc): with concrete inputs in float64 inside
    :func:`jax.enable_x64`, whatever the global flag, so it equals a solver's reported ``marginal_error``;
    under a caller's ``jit``/``vmap`` in the dtype of the traced inputs.
    """
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    ctx, dt = precision_context(None, f, g, a, b, cost, epsilon)
    with ctx:
        f, g, a, b, cost = (jnp.asarray(x, dtype=dt) for x in (f, g, a, b, cost))
        eps = jnp.asarray(epsilon, dtype=dt)
        p = _plan(f, g, cost, eps)
        return _norm(p.sum(axis=1) - a, norm) + _norm(p.sum(axis=0) - b, norm)


# --------------------------------------------------------------------------- validation at the boundary

def _is_tracer(x) -> bool:
    return isinstance(x, jax.core.Tracer)


def _any_tracer(*xs) -> bool:
    return any(_is_tracer(x) for x in xs)


def _check_numeric(x, name: str):
    if x is None:
        return
    if isinstance(x, (str, bytes)) or (hasattr(x, "dtype") and not (
            jnp.issubdtype(x.dtype, jnp.floating) or jnp.issubdtype(x.dtype, jnp.integer)
            or jnp.issubdtype(x.dtype, jnp.bool_))):
        raise TypeError(f"{name} must be a real numeric array, got {type(x).__name__}"
                        + (f" of dtype {x.dtype}" if hasattr(x, "dtype") else ""))
    if not hasattr(x, "dtype"):
        try:
            arr = np.asarray(x)
        except Exception as e:  # pragma: no cover - exotic inputs
            raise TypeError(f"{name} must be a real numeric array, got {type(x).__name__}") from e
        if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
            raise TypeError(f"{name} must be a real numeric array, got {type(x).__name__} of dtype {arr.dtype}")


def precision_context(dtype, *arrays):
    """Context in which a public solver computes: float64 by default for concrete inputs (see module doc)."""
    if dtype is None:
        if _any_tracer(*arrays):
            return contextlib.nullcontext(), None
        return jax.enable_x64(True), jnp.float64
    dt = jnp.dtype(dtype)
    if dt not in (jnp.dtype(jnp.float32), jnp.dtype(jnp.float64)):
        raise TypeError(f"dtype must be float32, float64 or None, got {dtype!r}")
    if dt == jnp.dtype(jnp.float64):
        return jax.enable_x64(True), jnp.float64
    return contextlib.nullcontext(), jnp.float32


def _positive_scalar(x, name: str, dtype):
    _check_numeric(x, name)
    if _is_tracer(x):
        arr = jnp.asarray(x, dtype=dtype)
        if arr.ndim != 0:
            raise ValueError(f"{name} must be a scalar, got shape {arr.shape}")
        return arr
    arr = np.asarray(x)
    if arr.ndim != 0:
        raise ValueError(f"{name} must be a scalar, got shape {arr.shape}")
    v = float(arr)
    if not np.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {v}")
    return np.asarray(v, dtype=np.dtype(dtype))  # (a NumPy scalar: a compiled call takes it without a dispatch)


def validate_problem(a, b, cost, epsilon, tol, norm: str, dtype):
    """Check and cast ``(a, b, cost, epsilon, tol)``; raises ``ValueError``/``TypeError`` naming the argument.

    Shape checks always run; value checks (signs, masses, finiteness, positivity) run on concrete inputs only
    (under ``jit``/``vmap`` the values are unknown at trace time).
    """
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    for x, name in ((cost, "cost"), (a, "a"), (b, "b")):
        _check_numeric(x, name)
    if cost is None:
        raise TypeError("cost must be a 2-D array, got None")
    if dtype is None:
        dtype = jnp.result_type(*(x for x in (a, b, cost) if x is not None), float)
    cost_arr = jnp.asarray(cost, dtype=dtype)
    if cost_arr.ndim != 2:
        raise ValueError(f"cost must be a 2-D (n, m) matrix, got shape {cost_arr.shape}")
    n, m = cost_arr.shape
    if n == 0 or m == 0:
        raise ValueError(f"cost must be non-empty, got shape {cost_arr.shape}")
    if _any_tracer(a, b, cost_arr):
        a_arr = jnp.full((n,), 1.0 / n, dtype=dtype) if a is None else jnp.asarray(a, dtype=dtype)
        b_arr = jnp.full((m,), 1.0 / m, dtype=dtype) if b is None else jnp.asarray(b, dtype=dtype)
    else:
        # concrete weights stay NumPy arrays: a compiled call takes them in its fast path, where every small
        # jnp operation is a dispatch of its own (a sizeable share of a solve that takes a few milliseconds)
        np_dt = np.dtype(dtype)
        a_arr = np.full((n,), 1.0 / n, dtype=np_dt) if a is None else np.asarray(a, dtype=np_dt)
        b_arr = np.full((m,), 1.0 / m, dtype=np_dt) if b is None else np.asarray(b, dtype=np_dt)
    if a_arr.shape != (n,):
        raise ValueError(f"a must have shape ({n},) to match cost of shape {cost_arr.shape}, got {a_arr.shape}")
    if b_arr.shape != (m,):
        raise ValueError(f"b must have shape ({m},) to match cost of shape {cost_arr.shape}, got {b_arr.shape}")
    eps = _positive_scalar(epsilon, "epsilon", dtype)
    tol_arr = _positive_scalar(tol, "tol", dtype)

    # the cast arrays, not the inputs: concrete inputs closed over by a caller's jit are staged as tracers
    if not _any_tracer(a_arr, b_arr, cost_arr):
        c_np = np.asarray(cost_arr)
        # a sum is finite when every entry is (NaN and inf propagate; it overflows only for entries near the
        # largest float, and then the exact count below finds nothing): one read of the matrix without a boolean
        # temporary, the entry count only on failure. In the matrix's own dtype: a float64 accumulator converts
        # every float32 entry (0.08 against 0.04 ms at 500 x 500, a few per cent of a solve there)
        if not np.isfinite(np.sum(c_np)):
            bad = int(np.size(c_np) - np.count_nonzero(np.isfinite(c_np)))
            if bad:
                raise ValueError(f"cost must be finite, got {bad} non-finite entries (NaN or inf)")
        for arr, name in ((a_arr, "a"), (b_arr, "b")):
            x = np.asarray(arr)
            if not np.all(np.isfinite(x)):
                raise ValueError(f"{name} must be finite, got {int(np.sum(~np.isfinite(x)))} non-finite entries")
            if np.any(x < 0):
                raise ValueError(f"{name} must be non-negative, got minimum {x.min():.3e} "
                                 f"({int(np.sum(x < 0))} negative entries)")
            if x.sum() <= 0:
                raise ValueError(f"{name} must have positive total mass, got {x.sum():.3e}")
        sa, sb = float(np.sum(np.asarray(a_arr, np.float64))), float(np.sum(np.asarray(b_arr, np.float64)))
        gap = abs(sa - sb)
        # rounding slack only, independent of tol: 1e-9 relative, or a few hundred ulp of the coarsest dtype
        # among the inputs and the computation (float32 weights cast to float64 keep their float32 rounding)
        ulp = max([float(jnp.finfo(dtype).eps)] + [float(jnp.finfo(x.dtype).eps) for x in (a, b)
                                                   if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating)])
        slack = max(1e-9, 200 * ulp) * max(sa, sb)
        if gap > slack:
            raise ValueError(
                f"a and b must have the same total mass (balanced OT): a sums to {sa:.12g} and b to {sb:.12g}, "
                f"they differ by {gap:.3e} (relative {gap / max(sa, sb):.3e}); normalise them, e.g. a / a.sum()")
    return a_arr, b_arr, cost_arr, eps, tol_arr


def check_int(x, name: str, minimum: int = 0) -> int:
    """An integer argument ``>= minimum`` (the project's one check, :func:`driftax._checks.check_int`)."""
    return _checks.check_int(name, x, minimum)


def validate_batch(a, b, cost, epsilon, tol, norm: str, dtype):
    """:func:`validate_problem` for a batch: ``cost (B, n, m)``, ``a (B, n)`` / ``b (B, m)`` or ``None``,
    ``epsilon`` a scalar or ``(B,)``. Every problem gets the single-problem checks (errors name the problem).
    Returns stacked ``(a, b, cost, eps (B,), tol)``."""
    if _any_tracer(a, b, cost, epsilon):
        raise TypeError("batch solvers take concrete arrays; under jit/vmap use jax.vmap of the single solver")
    _check_numeric(cost, "cost")
    c = np.asarray(cost)
    if c.ndim != 3:
        raise ValueError(f"cost must be a (B, n, m) stack of cost matrices, got shape {c.shape}")
    B = c.shape[0]
    if B == 0:
        raise ValueError("cost must hold at least one problem, got B = 0")
    eps = np.asarray(epsilon)
    if eps.ndim not in (0, 1) or (eps.ndim == 1 and eps.shape != (B,)):
        raise ValueError(f"epsilon must be a scalar or of shape ({B},), got shape {eps.shape}")
    for x, name in ((a, "a"), (b, "b")):
        if x is not None and (np.ndim(x) < 1 or np.shape(x)[0] != B):
            raise ValueError(f"{name} must have a leading batch axis of {B} problems, got shape {np.shape(x)}")
    out = []
    for i in range(B):
        try:
            out.append(validate_problem(None if a is None else a[i], None if b is None else b[i], c[i],
                                        eps if eps.ndim == 0 else eps[i], tol, norm, dtype))
        except (ValueError, TypeError) as e:
            raise type(e)(f"problem {i}: {e}") from None
    a_, b_, c_, e_, _ = (jnp.stack(x) for x in zip(*out))
    return a_, b_, c_, e_, out[0][4]


def shard_batch(arrays, shard: bool):
    """Place the leading (problem) axis of ``arrays`` over all devices with :func:`driftax._sharding.batch_mesh`.
    Returns ``(arrays, mesh)``; with one device or ``shard=False`` the arrays unchanged and ``mesh=None``."""
    if not shard or jax.device_count() == 1:
        return arrays, None
    from jax.sharding import PartitionSpec as P

    mesh = _sharding.batch_mesh(arrays[0].shape[0], what="num_problems")
    return tuple(_sharding.place(np.asarray(x), mesh, P("batch", *([None] * (x.ndim - 1)))) for x in arrays), mesh


# How many problems a batch solver vmaps together, per platform, as the bytes their cost matrices may take. On CPU
# one at a time: a vmapped chunk runs its loops until its slowest problem is done (Sinkhorn's sweep counts on 64
# point clouds of n = 200 at eps = 1e-3 range from 2,593 to 71,789), and XLA:CPU gains nothing from the batch axis
# (a matrix-vector product is memory-bound and already threaded). Measured in CPU seconds per problem on the
# 2-core benchmark machine (64 problems, n = 200, float64, tol 1e-8): Sinkhorn eps 1e-2 3.9 ms one at a time,
# 6.1 ms in chunks of 4 (6.0 ms for a loop of single `sinkhorn` calls); eps 1e-3 56 ms against 250 ms (55 ms).
# Accelerators need the batch axis for parallelism: chunks of up to 256 MiB of cost matrices (not measured here).
_CHUNK_BYTES = {"cpu": 0}
_CHUNK_BYTES_DEFAULT = 256 << 20


def chunk_size(num_problems: int, problem_bytes: int, platform: str | None = None) -> int:
    """Problems vmapped together by :func:`map_problems` on ``platform`` (default: JAX's default backend)."""
    budget = _CHUNK_BYTES.get(platform or jax.default_backend(), _CHUNK_BYTES_DEFAULT)
    return int(min(num_problems, max(1, budget // max(problem_bytes, 1))))


def map_problems(fn, arrays, mesh=None):
    """``fn`` applied to every problem of the leading axis of ``arrays`` (a tuple; ``arrays[2]`` the costs), inside
    ``jit``: ``lax.map`` over chunks of :func:`chunk_size` problems that are ``vmap``-ed together (on CPU one problem
    at a time, so that each costs what a single solve costs); with a ``mesh`` (from :func:`shard_batch`) under
    ``shard_map``, each device mapping its own problems. A chunk's loops run until its slowest problem is done."""
    def local(*xs):
        cost = xs[2]
        chunk = chunk_size(cost.shape[0], int(np.prod(cost.shape[1:])) * cost.dtype.itemsize)
        if chunk >= cost.shape[0]:
            return jax.vmap(fn)(*xs)
        if chunk == 1:  # (no vmap at all: a batched predicate would turn every lax.cond into a select)
            return jax.lax.map(lambda t: fn(*t), xs)
        return jax.lax.map(lambda t: fn(*t), xs, batch_size=chunk)

    if mesh is None:
        return local(*arrays)
    from jax.sharding import PartitionSpec as P

    # (check_vma=False: the solvers' while-loop carries start from replicated constants and become per-device)
    return jax.shard_map(local, mesh=mesh, in_specs=tuple(P("batch") for _ in arrays), out_specs=P("batch"),
                         check_vma=False)(*arrays)


def check_init(init, n: int, m: int, dtype, a=None, b=None):
    """Warm start ``(f0, g0)``: finite where the weight is positive (``a``/``b``; everywhere when not given).

    Where a weight is zero the potential may be ``-inf`` (as solvers return it), so that ``init=(r.f, r.g)``
    restarts from a previous result; ``NaN`` and ``+inf`` are rejected everywhere.
    """
    if init is None:
        return np.zeros((n,), np.dtype(dtype)), np.zeros((m,), np.dtype(dtype))
    if not (isinstance(init, (tuple, list)) and len(init) == 2):
        raise TypeError("init must be a pair (f, g) of potentials or None")
    f0 = jnp.asarray(init[0], dtype=dtype)
    g0 = jnp.asarray(init[1], dtype=dtype)
    if f0.shape != (n,) or g0.shape != (m,):
        raise ValueError(f"init potentials must have shapes ({n},) and ({m},), got {f0.shape} and {g0.shape}")
    if not _any_tracer(*init):
        for x, w, name, wname in ((f0, a, "f", "a"), (g0, b, "g", "b")):
            x = np.asarray(x)
            pos = np.ones(x.shape, bool) if w is None or _is_tracer(w) else np.asarray(w) > 0
            bad = (pos & ~np.isfinite(x)) | np.isnan(x) | (x == np.inf)
            if np.any(bad):
                raise ValueError(f"init potentials must be finite where the weights are positive (-inf is allowed "
                                 f"where {wname} = 0): init {name} has {int(bad.sum())} bad entries")
    return f0, g0


def warn_if_float32(dtype, tol):
    if jnp.dtype(dtype) == jnp.dtype(jnp.float32) and not _is_tracer(tol) and float(tol) < 1e-6:
        warnings.warn(
            f"solving in float32 with tol={float(tol):.1e}: float32 marginals stall around 1e-7; enable float64 "
            "(dtype=None with concrete inputs, or `with jax.enable_x64(True):` under jit/vmap)",
            RuntimeWarning, stacklevel=3)


# --------------------------------------------------------------------------- padding of small problems

# Small problems are padded with zero-weight points to a few bucket sizes, so that calls on different small sizes
# share compiled programs: compiling a solver takes seconds of CPU, a solve at n <= 128 a few milliseconds, so a
# caller solving problems of several small sizes (sample-quality metrics over draw counts, test suites) pays the
# compile once per bucket instead of once per size. Zero weights are exact in every solver: their potentials are
# -inf from the start, their plan rows/columns exactly 0, and the other entries see only exact zeros from them
# (exp(-inf) = 0), so the padded problem has the same solution and the same iterates up to the summation order.
PAD_MAX = 128  # sides above this are never padded (there the solve, not the compile, dominates)
PAD_MIN = 16


def padded_size(n: int) -> int:
    """The side a problem of side ``n`` is solved at: the next power of two (at least 16) up to ``PAD_MAX``."""
    if n > PAD_MAX:
        return n
    return max(PAD_MIN, 1 << (n - 1).bit_length())


def pad_problem(a, b, cost, f0, g0, shape):
    """``(a, b, cost, f0, g0)`` padded along their last axes to ``shape = (N, M)`` (a batch keeps its leading
    axis): zero weights and costs, ``-inf`` potentials on the padding. NumPy inputs stay NumPy (no dispatch)."""
    n, m = cost.shape[-2:]
    N, M = shape
    if (N, M) == (n, m):
        return a, b, cost, f0, g0
    xp = np if not _any_tracer(a, b, cost, f0, g0) and all(isinstance(x, np.ndarray) for x in (a, b)) else jnp

    def pad(x, widths, value=0.0):
        x = xp.asarray(x)
        return xp.pad(x, [(0, 0)] * (x.ndim - len(widths)) + list(widths), constant_values=value)

    return (pad(a, [(0, N - n)]), pad(b, [(0, M - m)]), pad(cost, [(0, N - n), (0, M - m)]),
            pad(f0, [(0, N - n)], -np.inf), pad(g0, [(0, M - m)], -np.inf))
