r"""`recover_direction`: spherical Langevin with iterate averaging on a planted problem.

Wei, Damian & Lee (2026), "Improved high-dimensional estimation with Langevin dynamics and
stochastic weight averaging": run Langevin dynamics on the sphere for the empirical loss
:math:`L_n` at inverse temperature :math:`\beta`,

.. math:: \theta_{t+1} = \frac{y}{\lVert y\rVert},\qquad
          y = \theta_t + h\,P_{\theta_t}\nabla(-\beta L_n)(\theta_t) + \sqrt{2h}\,P_{\theta_t}\xi_t,

and estimate :math:`\theta^\star` from the time average of the iterates after a burn-in (the
normalised mean for odd :math:`k^\star`, the top eigenvector of the mean of
:math:`\theta\theta^\top` for even :math:`k^\star`), not from the last iterate. The averaged
estimator reaches the sample complexity of landscape smoothing, :math:`n \asymp d^{k^\star/2}`,
while the last iterate keeps wandering at the temperature that makes this work.

This runs through `driftax.infer.sample` (kernel ``"spherical"`` of the registry, averages
carried in the compiled loop), so many starts run at once as chains, sharded over devices.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from driftax._checks import check_int, check_real
from driftax.infer.diagnostics import pooled_averages
from driftax.infer.run import sample
from driftax.models.planted import PlantedProblem, estimate_direction
from driftax.samplers.averaging import Schedule

__all__ = ["recover_direction", "default_temperature", "default_step_size", "DirectionResult"]


def default_temperature(k: int, d: int) -> float:
    r"""The inverse temperature :math:`\beta` used when none is given (an empirical rule).

    Measured with single-index models, :math:`\mathrm{He}_k` link, label noise 0.1: for odd
    :math:`k^\star` the working window is narrow and grows linearly in :math:`d` (about 2-2.5 at
    :math:`d = 25`, 6 at 50, 12 at 100 with :math:`n = 10d^2`; at :math:`\beta \ge 3.5`, :math:`d =
    25`, the chain is trapped near :math:`\theta^\star` and the last iterate is good too), hence
    :math:`\beta = d/10`. For even :math:`k^\star`, :math:`\beta = 0.6` worked at :math:`d = 25`,
    :math:`n = 40d^2`, scaled linearly: :math:`\beta = 0.024\,d`. With these defaults and
    `default_step_size` (``benchmarks/langevin_planted.py``, medians of 8 seeds, :math:`k^\star = 3`,
    :math:`n = 10d^2`) the averaged overlap was 0.96 at :math:`d = 25` (5,000 steps), 0.88 at 50
    (20,000) and 0.83 at 100 (60,000), the last iterate 0.25, 0.06 and 0.15: at the larger d the
    rule keeps the last iterate away but the average needs more steps (or a tuned β) to pass 0.9.
    """
    return d / 10.0 if k % 2 else 0.024 * d


def default_step_size(d: int) -> float:
    """``h = 1/(2d)`` for ``d <= 25``, ``0.15/d`` beyond (the prototype's ``c/d`` with ``c`` = 1 and
    0.3 in its ``√h`` noise convention, halved into this module's ``√(2h)`` one)."""
    return 0.5 / d if d <= 25 else 0.15 / d


class DirectionResult(NamedTuple):
    """Per chain (start): the averaged estimator, the last iterate, their overlaps with θ*, the
    time-averaged |overlap| of the iterates, and the overlap history at the kept steps."""

    estimate: np.ndarray  # (chains, d)
    last: np.ndarray  # (chains, d)
    overlap_avg: np.ndarray  # (chains,)
    overlap_last: np.ndarray  # (chains,)
    mean_abs_overlap: np.ndarray  # (chains,) time average of |<θ_t, θ*>| over the kept steps after burn-in
    steps: np.ndarray  # (T,) step index of each kept iterate
    overlap_iterates: np.ndarray  # (chains, T)
    overlap_running_avg: np.ndarray  # (chains, T) estimator from the kept iterates up to that step
    idata: object


def recover_direction(problem: PlantedProblem, *, num_steps: int = 5000, num_chains: int = 8,
                      temperature: float | None = None, step_size: float | None = None,
                      burn_in: float = 0.05, record_every: int = 10, init=None, seed=0,
                      progress: bool = False) -> DirectionResult:
    """Spherical Langevin on ``problem.target(temperature)`` from ``num_chains`` starts (uniform on
    the sphere, or ``init``), averaging every step after ``burn_in · num_steps``.

    ``record_every`` thins the stored iterates (the averages count every step). Defaults:
    `default_temperature`, `default_step_size`.
    """
    if not isinstance(problem, PlantedProblem):
        raise TypeError(f"problem must be a driftax.models.planted.PlantedProblem, got {type(problem).__name__}")
    num_steps = check_int("num_steps", num_steps, 1)
    record_every = check_int("record_every", record_every, 1)
    burn_in = check_real("burn_in", burn_in, nonnegative=True)
    if burn_in >= 1:
        raise ValueError(f"burn_in must be a fraction in [0, 1), got {burn_in}")
    d, k = problem.dim, problem.k
    beta = default_temperature(k, d) if temperature is None else check_real("temperature", temperature, positive=True)
    h = default_step_size(d) if step_size is None else check_real("step_size", step_size, positive=True)
    num_draws = max(1, num_steps // record_every)
    total = num_draws * record_every
    start = int(burn_in * total)
    idata = sample(problem.target(beta), "spherical", num_chains=num_chains, num_samples=num_draws,
                   num_warmup=0, thinning=record_every, step_size=h, mass_matrix=None, init=init,
                   seed=seed, progress=progress, average=Schedule(start=start))
    theta = np.asarray(idata.posterior["theta"].values, np.float64)  # (chains, T, d)
    star = np.asarray(problem.theta_star, np.float64)
    avg = idata.averages
    mean_theta = np.asarray(avg["theta"].values, np.float64)
    mean_outer = np.asarray(avg["theta_outer"].values, np.float64) if k % 2 == 0 else [None] * num_chains
    estimate = np.stack([np.asarray(estimate_direction(m, o, k)) for m, o in zip(mean_theta, mean_outer)])
    last = theta[:, -1]
    steps = (np.arange(num_draws) + 1) * record_every
    ov_it = np.abs(theta @ star)
    keep = steps > start
    # estimator history from the kept iterates after burn-in (the final value uses every step)
    counts = np.maximum(np.cumsum(keep), 1)
    if k % 2:
        run = np.cumsum(theta * keep[None, :, None], axis=1) / counts[None, :, None]
        ov_run = np.abs(run @ star) / np.maximum(np.linalg.norm(run, axis=-1), 1e-300)
    else:
        outer = np.einsum("ctd,cte->ctde", theta * keep[None, :, None], theta)
        run = np.cumsum(outer, axis=1) / counts[None, :, None, None]
        top = np.linalg.eigh(run)[1][..., -1]
        ov_run = np.abs(top @ star)
    ov_run[:, ~keep] = np.nan
    return DirectionResult(estimate, last, np.abs(estimate @ star), np.abs(last @ star),
                           ov_it[:, keep].mean(1) if keep.any() else ov_it.mean(1), steps, ov_it, ov_run, idata)
