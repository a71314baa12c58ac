r"""Warm-up: step size by dual averaging and a mass matrix from windowed variances, pooled over chains.

Stan's schedule (Stan Reference Manual, "HMC algorithm parameters"; Hoffman & Gelman 2014, §3.2):
a fast window adapting only the step size, slow windows of doubling length that also estimate
the posterior (co)variance, and a closing fast window. The step size follows Nesterov dual
averaging towards a target acceptance rate :math:`\delta`,

.. math::  \log h_{t+1} = \mu - \frac{\sqrt t}{\gamma (t + t_0)} \sum_{i\le t} (\delta - \bar\alpha_i),

with BlackJAX's ``dual_averaging_adaptation`` doing the arithmetic. Unlike per-chain warm-up,
all chains share one step size and one inverse mass matrix: :math:`\bar\alpha_i` is the mean
acceptance over chains and the variance is estimated from every chain's positions (Chan et
al.'s pairwise update of Welford's algorithm), which with many chains gives a far better
estimate from the same number of steps. (The pooled variance includes the spread between chains:
chains still far apart, or in different modes, widen the metric, which slows but does not bias
sampling.) A dense estimate from fewer than 10 pooled draws per dimension is near-singular, so
its diagonal is kept instead. At the end of a slow window the estimate is shrunk
towards :math:`10^{-3} I` as Stan does: :math:`\hat\Sigma \cdot n/(n+5) + 10^{-3}\cdot 5/(n+5)`.

Cross-chain reductions use ``lax.psum`` over ``axis_name`` so the same code runs inside
``shard_map`` on any number of devices.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from blackjax.adaptation.staged_adaptation import build_schedule
from blackjax.adaptation.step_size import DualAveragingAdaptationState, dual_averaging_adaptation
from jax import lax

__all__ = ["AdaptationState", "window_adaptation", "schedule"]

FAST, SLOW, OFF = 0, 1, 2


class AdaptationState(NamedTuple):
    da: DualAveragingAdaptationState
    count: jax.Array  # draws pooled into the current slow window
    mean: jax.Array
    m2: jax.Array  # sum of squared deviations: (dim,) diagonal, (dim, dim) dense
    step_size: jax.Array
    inverse_mass_matrix: jax.Array | None


MIN_WINDOWED = 150  # Stan's 75 + 25 + 50: fewer steps adapt the step size only


def schedule(num_warmup: int, total: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-step ``(stage, window_end)`` for ``total >= num_warmup`` steps; steps past the warm-up are OFF.

    Warm-ups shorter than 150 steps adapt the step size only: Stan's windows would leave a closing
    fast window of a few steps, after which dual averaging restarts from ``10 h`` and its average
    ends several times too large (measured: acceptance 0.05 after a 20-step warm-up).
    """
    stage = np.full(total, OFF, np.int32)
    end = np.zeros(total, bool)
    if 0 < num_warmup < MIN_WINDOWED:
        stage[:num_warmup] = FAST
    elif num_warmup > 0:
        sched = np.asarray(build_schedule(num_warmup), dtype=np.int64).reshape(num_warmup, 2)
        stage[:num_warmup] = sched[:, 0]
        end[:num_warmup] = sched[:, 1].astype(bool)
    return stage, end


def window_adaptation(target_acceptance: float, dim: int, mass_matrix: str | None,
                      adapt_step_size: bool = True, axis_name: str | None = None, dtype=jnp.float32):
    """Return ``(init, update, final)`` for pooled window adaptation.

    ``update(state, stage, window_end, positions, acceptance)`` takes this shard's positions
    ``(chains_local, dim)`` and acceptance rates ``(chains_local,)``. Every floating state is kept
    in ``dtype`` (float64 under ``jax_enable_x64``).
    """
    _da_init, _da_update, _ = dual_averaging_adaptation(target_acceptance)

    def fix(da):
        # Fixed dtypes so the state is a valid scan carry: BlackJAX starts from Python scalars and
        # its update promotes with the integer step counter.
        return jax.tree.map(lambda v: jnp.asarray(v, jnp.int32 if isinstance(v, int) or jnp.issubdtype(
            jnp.result_type(v), jnp.integer) else dtype), da)

    def da_init(step_size):
        return fix(_da_init(jnp.asarray(step_size, dtype)))

    def da_update(da, acceptance):
        return fix(_da_update(da, acceptance))

    dense = mass_matrix == "dense"

    def psum(x):
        return lax.psum(x, axis_name) if axis_name is not None else x

    def num_chains(local):
        # static: chains per shard times shards, no collective in the loop
        return jnp.asarray(local * (lax.axis_size(axis_name) if axis_name is not None else 1), dtype)

    def averaged_step_size(state: AdaptationState):
        return jnp.exp(state.da.log_step_size_avg) if adapt_step_size else state.step_size

    def init(step_size, inverse_mass_matrix) -> AdaptationState:
        m2 = jnp.zeros((dim, dim) if dense else (dim,), dtype)
        return AdaptationState(da_init(step_size), jnp.zeros((), dtype), jnp.zeros(dim, dtype), m2,
                               jnp.asarray(step_size, dtype), inverse_mass_matrix)

    def welford(state: AdaptationState, x):
        x = x.astype(dtype)
        n_b = num_chains(x.shape[0])
        mean_b = psum(x.sum(0)) / n_b
        dx = x - mean_b
        m2_b = psum(dx.T @ dx) if dense else psum(jnp.sum(dx * dx, 0))
        n = state.count + n_b
        delta = mean_b - state.mean
        corr = (jnp.outer(delta, delta) if dense else delta * delta) * state.count * n_b / n
        return state._replace(count=n, mean=state.mean + delta * n_b / n, m2=state.m2 + m2_b + corr)

    def close_window(state: AdaptationState) -> AdaptationState:
        n = state.count
        cov = state.m2 / jnp.maximum(n - 1, 1)
        if dense:
            # fewer than 10 pooled draws per dimension give a near-singular estimate: keep its diagonal
            cov = jnp.where(n >= 10 * dim, cov, jnp.diag(jnp.diag(cov)))
        shrink = 1e-3 * 5 / (n + 5)
        imm = cov * n / (n + 5) + (shrink * jnp.eye(dim, dtype=dtype) if dense else shrink)
        # Stan restarts dual averaging from the window's averaged step size.
        step_size = averaged_step_size(state)
        return AdaptationState(da_init(step_size), jnp.zeros((), dtype), jnp.zeros_like(state.mean),
                               jnp.zeros_like(state.m2), step_size, imm)

    def update(state: AdaptationState, stage, window_end, positions, acceptance) -> AdaptationState:
        if adapt_step_size:
            mean_acc = psum(acceptance.astype(dtype).sum()) / num_chains(acceptance.shape[0])
            da = da_update(state.da, mean_acc)
            adapted = state._replace(da=da, step_size=jnp.exp(da.log_step_size))
            state = jax.tree.map(lambda a, b: jnp.where(stage == OFF, a, b), state, adapted)
        if mass_matrix is not None:
            state = lax.cond(stage == SLOW, welford, lambda s, _: s, state, positions)
            state = lax.cond(window_end, close_window, lambda s: s, state)
        return state

    def final(state: AdaptationState):
        return averaged_step_size(state), state.inverse_mass_matrix

    return init, update, final
