r"""`smooth`: smoothed expectations of additive functionals of a state-space model, with Monte Carlo errors.

``smooth(ssm, ys, functional, method=...)`` runs ``num_replicates`` independent estimators in one
compiled program (``vmap`` over replicates, ``shard_map`` over the 1-D device mesh of
`driftax._sharding.batch_mesh`, as `driftax.infer.sample` shards chains) and reports their mean and
its Monte Carlo standard error ``sd / √R`` across replicates (the replicates are i.i.d., so this is the
error of the mean; the bias of the estimator, e.g. PaRIS's ``O(T/N)``, is not in it).

Methods (`driftax.samplers.paris`, `driftax.samplers.smc`):

- ``"paris"``: PaRIS along a bootstrap filter (Olsson & Westerborn 2017);
- ``"ppg"``: the PaRIS particle Gibbs roll-out, ``num_iterations`` steps, average after ``burn_in``
  (Cardoso et al. 2023);
- ``"ffbs"``: forward filtering, backward sampling of ``num_paths`` paths (Godsill et al. 2004),
  the functional averaged over the paths.

Smoothed paths come back as ArviZ draws (`SmoothingResult.to_inference_data`): variable ``x`` with
dims ``(chain, draw, time, state)``; chains are replicates, draws are PPG references after burn-in,
FFBS paths, or (PaRIS) paths traced through the first PaRIS backward draws from endpoints drawn by
weight (marginally smoothing draws, but dependent: they coalesce).
"""
from __future__ import annotations

import dataclasses
import functools
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from driftax._checks import check_int, check_real
from driftax._sharding import batch_mesh, place, to_host
from driftax.models.ssm import StateSpaceModel
from driftax.samplers import paris as _paris
from driftax.samplers import smc

__all__ = ["smooth", "SmoothingResult", "FUNCTIONALS", "METHODS", "builtin_functional"]

METHODS = ("ppg", "paris", "ffbs")
FUNCTIONALS = ("state_sum", "cross_moment", "moments")
_AXIS = "replicate"


@functools.lru_cache(maxsize=32)
def builtin_functional(name: str, state_dim: int) -> _paris.AdditiveFunctional:
    """``"state_sum"`` (``Σ x_t``), ``"cross_moment"`` (``Σ x_t x_{t+1}ᵀ``, flattened) or ``"moments"``
    (both, concatenated); cached so repeated calls reuse the compiled program."""
    if name == "state_sum":
        return _paris.state_sum(state_dim)
    if name == "cross_moment":
        return _paris.cross_moment(state_dim)
    if name == "moments":
        return _paris.concat(_paris.state_sum(state_dim), _paris.cross_moment(state_dim))
    raise ValueError(f"functional must be an AdditiveFunctional or one of {FUNCTIONALS}, got {name!r}")


@dataclasses.dataclass(frozen=True)
class SmoothingResult:
    """Estimate ``(p,)`` of ``E[h(x_{0:T-1}) | y]`` with its Monte Carlo standard error across the
    ``(R, p)`` replicate estimates; smoothed ``paths (R, M, T, d)``; filter log-likelihood estimates
    ``loglik (R,)`` (PaRIS, FFBS; NaN for PPG); exact fall-backs of the backward draws; ``finite``
    (False if any replicate went non-finite); ``per_iteration (R, k, p)`` for PPG."""

    estimate: np.ndarray
    mc_error: np.ndarray
    replicates: np.ndarray
    paths: np.ndarray
    loglik: np.ndarray
    fallbacks: int
    finite: bool
    method: str
    functional: str
    num_particles: int
    per_iteration: np.ndarray | None
    seconds: float
    num_devices: int

    def to_inference_data(self):
        """The smoothed paths as ArviZ data: ``x`` with dims ``(chain, draw, time, state)``."""
        from driftax.infer.diagnostics import to_inference_data

        return to_inference_data({"x": self.paths}, dims={"x": ("time", "state")},
                                 attrs={"method": self.method, "functional": self.functional,
                                        "num_particles": self.num_particles})


def _key_data(seed, n):
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an integer, got {type(seed).__name__}")
    if not 0 <= int(seed) < 2**32:
        raise ValueError(f"seed must be in [0, 2**32), got {seed}")
    return np.asarray(jax.random.key_data(jax.random.split(jax.random.key(int(seed)), n)))


def check_inputs(ssm, ys, theta):
    """``(ys as float array (T, p), theta)`` after the boundary checks shared by smooth and learn."""
    if not isinstance(ssm, StateSpaceModel):
        raise TypeError(f"ssm must be a StateSpaceModel, got {type(ssm).__name__}")
    ys = ssm.check_observations(ys)
    theta = ssm.theta if theta is None else ssm.with_theta(theta).theta
    return ys, theta


@functools.lru_cache(maxsize=16)
def _program(ssm, functional, method, N, K, iters, burn_in, num_paths, backward, max_trials, scheme,
             ess_threshold, has_ref, mesh):
    def one(key, theta, ys, ref):
        key = jax.random.wrap_key_data(key)
        if method == "paris":
            k_run, k_path = jax.random.split(key)
            out = _paris.paris(k_run, ssm, theta, ys, functional, N, K=K, scheme=scheme,
                               ess_threshold=ess_threshold, backward=backward, max_trials=max_trials, store=True)
            last = smc.resample(k_path, out.log_weights, num_paths, "multinomial")
            paths = smc.gather_paths(out.particles, smc.trace_paths(out.backward, last))
            return out.estimate, paths, out.loglik, out.fallbacks, out.finite, jnp.zeros((0, functional.dim))
        if method == "ffbs":
            k_f, k_b = jax.random.split(key)
            out = smc.bootstrap_filter(k_f, ssm, theta, ys, N, scheme=scheme, ess_threshold=ess_threshold)
            idx, nfb = smc.backward_paths(k_b, ssm, theta, out, num_paths, method=backward, max_trials=max_trials)
            paths = smc.gather_paths(out.particles, idx)

            def h(path):
                h0 = functional.init(path[0], ys[0])
                hs = jax.vmap(functional.step)(jnp.arange(1, ys.shape[0]), path[:-1], path[1:], ys[1:])
                return h0 + hs.sum(0)

            est = jnp.mean(jax.vmap(h)(paths), 0)
            finite = out.finite & jnp.all(jnp.isfinite(est))
            return est, paths, out.loglik, nfb, finite, jnp.zeros((0, functional.dim))
        out = _paris.ppg(key, ssm, theta, ys, functional, N, iters, burn_in, K=K,
                         reference=ref if has_ref else None, backward=backward, max_trials=max_trials)
        return (out.estimate, out.references[burn_in:], jnp.array(jnp.nan, out.estimate.dtype), out.fallbacks,
                out.finite, out.estimates)

    def local(keys, theta, ys, refs):
        return jax.vmap(one, in_axes=(0, None, None, 0))(keys, theta, ys, refs)

    if mesh.size == 1:  # nothing to shard: shard_map's partitioning passes cost about 1 s of compilation
        return jax.jit(local)
    spec = P(_AXIS)
    return jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(spec, P(), P(), spec), out_specs=spec,
                                 check_vma=False))


def smooth(ssm: StateSpaceModel, ys, functional="moments", method: str = "ppg", num_particles: int = 128, *,
           K: int = 2, num_iterations: int = 10, burn_in: int = 2, num_replicates: int = 8,
           num_paths: int | None = None, backward: str = "hybrid", max_trials: int = 8,
           scheme: str = "systematic", ess_threshold: float = 1.0, theta=None, reference=None,
           seed: int = 0) -> SmoothingResult:
    """Estimate ``E[h(x_{0:T-1}) | y_{0:T-1}]`` for an additive functional ``h`` (module docstring).

    Parameters
    ----------
    ssm, ys
        The model and observations ``(T, obs_dim)`` (``(T,)`` for scalar observations).
    functional
        An `driftax.samplers.paris.AdditiveFunctional` or ``"state_sum"``, ``"cross_moment"``, ``"moments"``.
    method
        ``"ppg"``, ``"paris"`` or ``"ffbs"``.
    num_particles, K
        Particles per filter; backward draws per particle for PaRIS and PPG (``K ≥ 2``).
    num_iterations, burn_in
        PPG roll-out length ``k`` and burn-in ``k0 < k``.
    num_replicates
        Independent estimators run as one batch (sharded over devices); the Monte Carlo error is their
        standard error.
    num_paths
        Smoothed paths kept per replicate (FFBS: paths drawn, default ``N``; PaRIS: traced, default 16).
    backward, max_trials
        ``"hybrid"`` (accept-reject with at most ``max_trials`` proposals, exact fall-back) or ``"exact"``.
    scheme, ess_threshold
        Resampling of the (unconditional) filter: ``multinomial``, ``systematic``, ``stratified``,
        ``residual``; resample when ESS < ``ess_threshold · N`` (1 = every step).
    theta
        Parameters (default: the model's); checked against their supports.
    reference
        PPG only: initial reference paths ``(num_replicates, T, state_dim)`` (default: per replicate, one
        backward path through an unconditional filter of ``num_particles``, the roll-out's first sweep
        with the freezing off, so the roll-out propagates ``num_particles · (num_iterations + 1)`` particles).
    seed
        Integer seed; same seed, same result for a given device count.
    """
    ys, theta = check_inputs(ssm, ys, theta)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if isinstance(functional, str):
        functional = builtin_functional(functional, ssm.state_dim)
    elif not isinstance(functional, _paris.AdditiveFunctional):
        raise TypeError(f"functional must be an AdditiveFunctional or one of {FUNCTIONALS}, "
                        f"got {type(functional).__name__}")
    N = check_int("num_particles", num_particles, 2)
    K = check_int("K", K, 2)
    R = check_int("num_replicates", num_replicates, 1)
    iters = check_int("num_iterations", num_iterations, 1)
    burn_in = check_int("burn_in", burn_in, 0)
    if method == "ppg" and burn_in >= iters:
        raise ValueError(f"burn_in must be < num_iterations, got burn_in={burn_in}, num_iterations={iters}")
    if backward not in smc.BACKWARD:
        raise ValueError(f"backward must be one of {smc.BACKWARD}, got {backward!r}")
    max_trials = check_int("max_trials", max_trials, 1)
    if scheme not in smc.RESAMPLING:
        raise ValueError(f"scheme must be one of {smc.RESAMPLING}, got {scheme!r}")
    ess_threshold = check_real("ess_threshold", ess_threshold, positive=True)
    if ess_threshold > 1:
        raise ValueError(f"ess_threshold must be in (0, 1], got {ess_threshold}")
    num_paths = (N if method == "ffbs" else 16) if num_paths is None else check_int("num_paths", num_paths, 1)
    T, d = ys.shape[0], ssm.state_dim
    dtype = jnp.result_type(float)
    has_ref = reference is not None
    if has_ref:
        if method != "ppg":
            raise ValueError("reference is only used by method='ppg'")
        reference = np.asarray(reference, np.float64)
        if reference.shape != (R, T, d):
            raise ValueError(f"reference must have shape (num_replicates, T, state_dim) = {(R, T, d)}, "
                             f"got {reference.shape}")
        if not np.all(np.isfinite(reference)):
            raise ValueError("reference has non-finite entries")
    refs = reference if has_ref else np.zeros((R, 1, 1))
    mesh = batch_mesh(R, _AXIS, what="num_replicates")
    prog = _program(ssm, functional, method, N, K, iters, burn_in, num_paths, backward, max_trials, scheme,
                    ess_threshold, has_ref, mesh)
    t0 = time.perf_counter()
    out = prog(place(_key_data(seed, R), mesh, P(_AXIS)), jax.tree.map(lambda v: jnp.asarray(v, dtype), theta),
               jnp.asarray(ys, dtype), place(refs.astype(dtype), mesh, P(_AXIS)))
    est, paths, ll, nfb, finite, per_it = to_host(out)
    secs = time.perf_counter() - t0
    est = est.astype(np.float64)
    mc = est.std(0, ddof=1) / np.sqrt(R) if R > 1 else np.full(est.shape[1:], np.nan)
    return SmoothingResult(est.mean(0), mc, est, paths, ll, int(nfb.sum()), bool(finite.all()), method,
                           functional.name, N, per_it if method == "ppg" else None, secs, int(mesh.size))
