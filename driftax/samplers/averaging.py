r"""Iterate averages carried inside a compiled sampling loop, without storing the draws.

For a chain :math:`x_1, x_2, \dots` and a function :math:`f` (the model's constrained sites), the
running weighted moments

.. math:: W_t = \sum_{s\le t} w_s,\qquad \bar f_t = \frac1{W_t}\sum_{s\le t} w_s f(x_s),\qquad
          M_t = \sum_{s\le t} w_s\,(f(x_s) - \bar f_t)^2

are updated in West's (1979) weighted form of Welford's algorithm,
:math:`\bar f_t = \bar f_{t-1} + \tfrac{w_t}{W_t}(f_t - \bar f_{t-1})`,
:math:`M_t = M_{t-1} + w_t (f_t - \bar f_{t-1})(f_t - \bar f_t)`, which never subtracts two large
sums (the naive :math:`\sum w f^2 - W\bar f^2` loses all digits when the spread is small
against the mean). Chains and devices are combined with Chan, Golub & LeVeque's (1979) pairwise
rule in `pool`.

Which iterates count is a `Schedule`: Polyak-Ruppert averaging (Polyak & Juditsky 1992) of every
iterate after a burn-in, tail averaging (the last half), and SWA-style averaging (Izmailov et al.
2018) of every ``every``-th iterate; with ``weighted=True`` each iterate is weighted by the step
size that produced it (SGLD with a decreasing schedule, Welling & Teh 2011).

SWAG (Maddox et al. 2019, "A simple baseline for Bayesian uncertainty in deep learning") adds,
with ``rank = K > 0``, the deviations :math:`D = [\theta_i - \bar\theta_i]` of the last
:math:`K` counted iterates of the flat position from the running mean at the time
(a ring buffer), and estimates the covariance as
:math:`\tfrac12\,\mathrm{diag}(\overline{\theta^2} - \bar\theta^2) + \tfrac1{2(K-1)} D D^\top`
(`swag_covariance`).

`wrap` turns any noise-driven kernel ``step(state, noise, density, step_size, imm)`` into one
whose state also carries these moments (`AveragedState`), so a loop that knows nothing about
averages runs it unchanged.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["Moments", "Schedule", "AveragedState", "moments_init", "moments_update", "pool", "wrap",
           "schedule_from", "swag_covariance"]


class Moments(NamedTuple):
    """Running weighted moments of a pytree: total weight, mean and sum of squared deviations."""

    weight: jax.Array
    mean: object
    m2: object


def moments_init(tree, dtype=None) -> Moments:
    zeros = jax.tree.map(lambda a: jnp.zeros(jnp.shape(a), dtype or jnp.result_type(a)), tree)
    return Moments(jnp.zeros((), dtype or jnp.result_type(float)), zeros, zeros)


def moments_update(m: Moments, tree, w) -> Moments:
    """Add ``tree`` with weight ``w >= 0`` (a zero weight leaves the moments unchanged)."""
    w = jnp.asarray(w, m.weight.dtype)
    total = m.weight + w
    frac = jnp.where(total > 0, w / jnp.where(total > 0, total, 1), 0)

    def mean_of(mu, x):
        return mu + frac.astype(mu.dtype) * (x.astype(mu.dtype) - mu)

    new_mean = jax.tree.map(mean_of, m.mean, tree)
    new_m2 = jax.tree.map(lambda s, mu0, mu1, x: s + w.astype(s.dtype) * (x.astype(s.dtype) - mu0) * (x.astype(s.dtype) - mu1),
                          m.m2, m.mean, new_mean, tree)
    return Moments(total, new_mean, new_m2)


def pool(weight, mean, m2):
    """Combine moments stacked along the first axis (chains, devices) into one: Chan et al.'s rule.

    NumPy in and out (the loop calls it on the host): with weights ``W_c`` (shape ``(C,)``) and
    ``mean_c``, ``M_c`` (shape ``(C, ...)``): ``W = Σ W_c``, ``mean = Σ W_c mean_c / W``,
    ``M = Σ M_c + Σ W_c (mean_c - mean)²``. Returns ``(W, mean, M)``.
    """
    weight = np.asarray(weight, np.float64)
    mean, m2 = np.asarray(mean, np.float64), np.asarray(m2, np.float64)
    w = weight.reshape(weight.shape + (1,) * (mean.ndim - 1))
    total = float(weight.sum())
    mu = (w * mean).sum(0) / (total if total > 0 else 1.0)
    return total, mu, m2.sum(0) + (w * (mean - mu) ** 2).sum(0)


class Schedule(NamedTuple):
    """Which iterates count: step ``t`` (0-based, from the start of sampling) has weight
    ``(start <= t < stop) * ((t - start) % every == 0)``, times the step size when ``weighted``.
    ``stop`` (default: no end) is set by the loop to the number of sampling steps, so steps a
    compiled chunk runs past the end never count."""

    start: int = 0
    every: int = 1
    weighted: bool = False
    stop: int | None = None
    rank: int = 0  # SWAG: keep the last `rank` deviations of the flat position (0: none)

    def weight(self, t, step_size=None):
        on = (t >= self.start) & ((t - self.start) % self.every == 0)
        if self.stop is not None:
            on = on & (t < self.stop)
        w = on.astype(jnp.result_type(float))
        return w * step_size if self.weighted else w


def schedule_from(average, num_steps: int) -> Schedule:
    """A `Schedule` from a name, for a run of ``num_steps`` sampling steps.

    ``"polyak"``: every step (the warm-up is the burn-in); ``"tail"``: the last half;
    ``"swa"``: every 10th step of the last half; ``"weighted"``: every step, weighted by its step
    size. A `Schedule` passes through (validated).
    """
    # "swag": the SWA schedule plus the last 20 deviations (Maddox et al.'s K = 20)
    named = {
        "polyak": Schedule(0, 1, False, num_steps),
        "tail": Schedule(num_steps // 2, 1, False, num_steps),
        "swa": Schedule(num_steps // 2, 10, False, num_steps),
        "weighted": Schedule(0, 1, True, num_steps),
        "swag": Schedule(num_steps // 2, 10, False, num_steps, 20),
    }
    if isinstance(average, str):
        if average not in named:
            raise ValueError(f"average must be one of {sorted(named)} or an averaging.Schedule, got {average!r}")
        return named[average]
    if isinstance(average, Schedule):
        start, every = average.start, average.every
        if isinstance(start, bool) or not isinstance(start, (int, np.integer)) or start < 0:
            raise ValueError(f"average: Schedule.start must be an integer >= 0, got {start!r}")
        if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
            raise ValueError(f"average: Schedule.every must be an integer >= 1, got {every!r}")
        stop = num_steps if average.stop is None else min(int(average.stop), num_steps)
        rank = average.rank
        if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or rank < 0 or rank == 1:
            raise ValueError(f"average: Schedule.rank must be 0 (no SWAG) or an integer >= 2, got {rank!r}")
        return Schedule(int(start), int(every), bool(average.weighted), stop, int(rank))
    raise TypeError(f"average must be a name or an averaging.Schedule, got {type(average).__name__}")


class AveragedState(NamedTuple):
    """A kernel's state with the running moments of ``transform(position)``, a step counter, and
    (SWAG) the moments of the flat position with a ring buffer of its last deviations."""

    inner: object
    moments: Moments
    step: jax.Array
    flat: Moments | None = None  # moments of the flat position (SWAG only)
    deviations: jax.Array | None = None  # (rank, dim): theta_i - running mean, last `rank` counted steps
    counted: jax.Array | None = None  # counted steps so far (the ring buffer's write position)

    # the loop reads these as it reads any kernel state
    @property
    def position(self):
        return self.inner.position

    @property
    def logdensity(self):
        return self.inner.logdensity

    @property
    def logdensity_grad(self):
        return self.inner.logdensity_grad


def wrap(init: Callable, step: Callable, transform: Callable, schedule: Schedule):
    """``(init, step, reset)`` of the kernel ``(init, step)`` carrying averages of ``transform(x)``.

    ``reset(state)`` zeroes the moments and the counter (the loop calls it when sampling starts,
    so warm-up iterates never count). A diverging step keeps the previous position, which then
    counts again, as a rejected proposal does in any MCMC average: no non-finite value can reach
    the moments.
    """

    rank = schedule.rank

    def init_(position, density):
        inner = init(position, density)
        zero = moments_init(transform(inner.position))
        if not rank:
            return AveragedState(inner, zero, jnp.zeros((), jnp.int32))
        x = inner.position
        return AveragedState(inner, zero, jnp.zeros((), jnp.int32), moments_init(x),
                             jnp.zeros((rank,) + x.shape, x.dtype), jnp.zeros((), jnp.int32))

    def step_(state: AveragedState, noise, density, step_size, imm):
        inner, info = step(state.inner, noise, density, step_size, imm)
        h = getattr(info, "step_size", None)
        w = schedule.weight(state.step, h)
        moments = moments_update(state.moments, transform(inner.position), w)
        if not rank:
            return AveragedState(inner, moments, state.step + 1), info
        flat = moments_update(state.flat, inner.position, w)
        counted = w > 0
        slot = state.counted % rank
        dev = jnp.where(counted, state.deviations.at[slot].set(inner.position - flat.mean), state.deviations)
        return AveragedState(inner, moments, state.step + 1, flat, dev,
                             state.counted + counted.astype(jnp.int32)), info

    def reset(state: AveragedState) -> AveragedState:
        zeros = lambda t: jax.tree.map(jnp.zeros_like, t)
        return AveragedState(state.inner, zeros(state.moments), jnp.zeros_like(state.step),
                             zeros(state.flat), zeros(state.deviations), zeros(state.counted))

    return init_, step_, reset


def swag_covariance(weight, m2, deviations, counted):
    """SWAG's covariance of the flat position for one chain (Maddox et al. 2019, eq. 1-3):
    ``½ diag(M/W) + ½ D Dᵀ / (K - 1)`` with the ``K = min(counted, rank)`` stored deviations ``D``.
    NumPy in and out."""
    deviations = np.asarray(deviations, np.float64)
    k = int(min(int(counted), deviations.shape[0]))
    if k < 2 or float(weight) <= 0:
        raise ValueError(f"SWAG needs at least 2 counted iterates, got {k}")
    d = deviations[:k]
    return 0.5 * np.diag(np.asarray(m2, np.float64) / float(weight)) + 0.5 * d.T @ d / (k - 1)
