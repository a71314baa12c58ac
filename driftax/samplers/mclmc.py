r"""BlackJAX's microcanonical Langevin Monte Carlo (MCLMC) as a noise-driven step, with its tuner.

MCLMC (Robnik, De Luca, Silverstein & Seljak, 2023, "Microcanonical Hamiltonian Monte Carlo",
JMLR 24; Robnik & Seljak, 2024, "Fluctuation without dissipation: microcanonical Langevin Monte
Carlo") moves a particle at fixed speed, :math:`\|u\| = 1`, under the isokinetic dynamics

.. math:: \dot x = u, \qquad \dot u = (I - u u^\top)\,\nabla \log p(x) / (d - 1),

whose marginal stationary law in :math:`x` is :math:`p` itself, with a partial refresh of the
direction after each step, :math:`u \leftarrow (c\,u + \sqrt{1-c^2}\,z/\sqrt d)` normalised,
:math:`c = e^{-h/L}`. It has no Metropolis step: its bias is set by the step size through the
energy error, which the tuner holds at a variance of :math:`5\cdot 10^{-4}` per dimension. The
integrator is the two-stage minimal-norm (McLachlan) scheme: two gradients a step.

`warmup` is BlackJAX's three-stage tuner (``mclmc_find_L_and_step_size``) run on every
chain, stage 1 from the chain's start and stages 2-3 from where stage 1 ended, each on the density
seen from its own origin (float32 variances without cancellation): (1) the step size from the
energy error with :math:`L = \sqrt d`; (2) the posterior's
variances, giving :math:`L = \sqrt{\sum_i \sigma_i^2}` or, with a diagonal metric, the metric
itself and :math:`L = \sqrt d`; (3) :math:`L = 0.4\,h\,\tau`, :math:`\tau` the integrated
autocorrelation time from the ESS of a short run. The chains' tuned h, L and metric are then
pooled by their median, so all chains sample with the same kernel.

A dense metric :math:`M^{-1} = \Sigma` (``mass_matrix="dense"``) is estimated between stages 2
and 3 in two rounds, each a run of every chain under the current metric whose draws are pooled
over chains into :math:`\hat\Sigma` (within-chain scatter plus the spread of the chain means),
shrunk as Stan shrinks, :math:`\frac{n}{n+5}\hat\Sigma + \frac{5}{n+5}10^{-3}\operatorname{diag}
\hat\Sigma`, and followed by a re-tune of h in the new metric. One round under a diagonal metric
finds the directions of a ridge but, moving along it slowly, underestimates its length; the
second, in the first round's metric, moves freely and gets it right (as Stan's doubling windows
do). The isokinetic integrator needs a square root :math:`F` with :math:`F F^\top = \Sigma`
applied to the unit velocity: `low_rank_metric` writes :math:`\Sigma = D R D`
(:math:`D` the sds, :math:`R = U \Lambda U^\top` the correlation) as BlackJAX's
``LowRankInverseMassMatrix`` of full rank, whose factor is :math:`D U \Lambda^{1/2} U^\top`.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from blackjax.adaptation.mclmc_adaptation import mclmc_find_L_and_step_size
from blackjax.mcmc import mclmc as bj_mclmc
from blackjax.mcmc.metrics import LowRankInverseMassMatrix

from driftax.samplers.hmc import Adapted
from driftax.samplers.rng import key_from_normals

Array = jax.Array

__all__ = ["MCLMCInfo", "init", "step", "warmup", "build_kernel", "low_rank_metric", "GRADS_PER_STEP"]

GRADS_PER_STEP = 2  # McLachlan's scheme: two position updates, each followed by a gradient
DIVERGENCE_THRESHOLD = 1000.0  # |energy error| beyond which a step is flagged, as HMC's divergences

_KERNEL = bj_mclmc.build_kernel()


class MCLMCInfo(NamedTuple):
    """One MCLMC step, in ArviZ's ``sample_stats`` names. No Metropolis step: no acceptance."""

    acceptance_rate: Array  # NaN: MCLMC accepts every move
    is_accepted: Array
    diverging: Array  # a non-finite step (BlackJAX reverts it and redraws the direction) or |dE| > 1000
    energy_error: Array  # the step's energy change, whose variance per dimension the tuner aims at


def init(position, logdensity_fn: Callable):
    """State at ``position`` with a fixed unit direction (`warmup` draws each chain's own)."""
    return bj_mclmc.init(position, logdensity_fn, jax.random.key(0))


def step(state, noise: Array, logdensity_fn: Callable, step_size, inverse_mass_matrix, L):
    """One MCLMC step of size ``step_size`` with momentum decoherence length ``L``; its key is
    made from ``noise[:2]``."""
    key = key_from_normals(noise[:2])
    imm = 1.0 if inverse_mass_matrix is None else inverse_mass_matrix
    new, info = _KERNEL(key, state, logdensity_fn, imm, L, step_size)
    dE = info.energy_change
    return new, MCLMCInfo(acceptance_rate=jnp.full((), jnp.nan, dE.dtype), is_accepted=jnp.ones((), bool),
                          diverging=~info.nonans | (jnp.abs(dE) > DIVERGENCE_THRESHOLD), energy_error=dE)


def build_kernel():
    """BlackJAX's own kernel ``kernel(key, state, logdensity_fn, inverse_mass_matrix, L, step_size)``."""
    return _KERNEL


def low_rank_metric(inverse_mass_matrix: Array) -> LowRankInverseMassMatrix:
    r"""A dense metric :math:`\Sigma` as BlackJAX's full-rank ``LowRankInverseMassMatrix``:
    :math:`\Sigma = D (I + U(\Lambda - I)U^\top) D = D U \Lambda U^\top D` with :math:`D` the sds
    and :math:`U\Lambda U^\top` the correlation's eigendecomposition, which gives the isokinetic
    integrator its square root :math:`D U \Lambda^{1/2} U^\top` at :math:`O(d^2)` a step. Factorised
    on the correlation, not on :math:`\Sigma`, so that scales far apart (1e-3 beside 1e2) do not
    cost the eigenvalues their relative precision."""
    sigma = jnp.sqrt(jnp.diagonal(inverse_mass_matrix))
    lam, U = jnp.linalg.eigh(inverse_mass_matrix / jnp.outer(sigma, sigma))
    # the correlation of a shrunk covariance is positive definite; the floor guards rounding only
    return LowRankInverseMassMatrix(sigma=sigma, U=U, lam=jnp.maximum(lam, jnp.finfo(lam.dtype).eps))


def _with_metric(metric):
    """BlackJAX's kernel with the metric fixed: its tuner passes a diagonal placeholder."""
    def kernel(rng_key, state, logdensity_fn, inverse_mass_matrix, L, step_size):
        return _KERNEL(rng_key, state, logdensity_fn, metric, L, step_size)
    return kernel


def _pooled_covariance(means: Array, scatters: Array, n: int) -> Array:
    """The covariance of all chains' draws (``means``: ``(C, d)``, ``scatters``: the within-chain
    covariances ``(C, d, d)``, ``n`` draws each), shrunk towards 1e-3 of its diagonal with Stan's
    weights n/(n+5), 5/(n+5) (n all the draws). Chains that went non-finite are left out."""
    ok = jnp.all(jnp.isfinite(means), 1) & jnp.all(jnp.isfinite(scatters), (1, 2))
    w = ok / jnp.maximum(jnp.sum(ok), 1)
    means, scatters = jnp.where(ok[:, None], means, 0.0), jnp.where(ok[:, None, None], scatters, 0.0)
    grand = jnp.einsum("c,cd->d", w, means)
    dev = means - grand
    cov = jnp.einsum("c,cde->de", w, scatters) + jnp.einsum("c,cd,ce->de", w, dev, dev)
    total = n * jnp.sum(ok)
    return total / (total + 5.0) * cov + 5.0 / (total + 5.0) * 1e-3 * jnp.diag(jnp.diagonal(cov))


def _draw_moments(state, key, logdensity_fn, metric, L, step_size, n: int):
    """``n`` steps of one chain; its final state, the mean of its positions and their covariance
    (accumulated from the chain's start, so float32 sums do not cancel)."""
    origin = state.position

    def body(carry, k):
        state, s1, s2 = carry
        state, _ = _KERNEL(k, state, logdensity_fn, metric, L, step_size)
        y = state.position - origin
        return (state, s1 + y, s2 + jnp.outer(y, y)), None
    dim = origin.shape[0]
    zero = jnp.zeros((), origin.dtype)
    (state, s1, s2), _ = lax.scan(body, (state, jnp.zeros(dim) + zero, jnp.zeros((dim, dim)) + zero),
                                  jax.random.split(key, n))
    mean = s1 / n
    return state, origin + mean, s2 / n - jnp.outer(mean, mean)


def warmup(logdensity_fn: Callable, positions: Array, key, num_warmup: int, step_size,
           mass_matrix: str | None, target_acceptance=None) -> Adapted:
    r"""BlackJAX's MCLMC tuner on every chain (``positions``: ``(num_chains, dim)``), ``num_warmup``
    steps in all: the three stages get a third each; with ``mass_matrix="diag"``, stage 1 0.25,
    stage 2 0.25 + BlackJAX's re-tune of h under the new metric (0.08), a re-tune from the rescaled
    h (0.12; see the comment in the code), stage 3 0.3; with ``"dense"``, stages 1 and 2 and the
    re-tunes as for ``"diag"`` in 0.15 + 0.15 + 0.05 + 0.05, two rounds of a pooled covariance
    (0.15 each) each followed by a re-tune of h (0.05), and stage 3 in 0.2.

    ``step_size`` is unused: stage 1 starts from BlackJAX's :math:`h = \sqrt d / 4`. The pooled
    kernel takes the median over chains of h, L and the diagonal metric: a chain the tuner left
    frozen (h orders of magnitude too small) does not set every chain's step.
    """
    del step_size, target_acceptance
    num_chains, dim = positions.shape
    dense = mass_matrix == "dense"
    diag = mass_matrix == "diag" or dense
    # stage lengths as fractions of num_warmup (static): with a diagonal metric, stage 2 is followed
    # by BlackJAX's own re-tune of h (a third of stage 2) and by ours from the rescaled h
    f1, f2, f_retune, f3 = ((0.15, 0.15, 0.05, 0.2) if dense else (0.25, 0.25, 0.12, 0.30) if diag
                            else (1 / 3, 1 / 3, 0.0, 1 / 3))
    f_draws, f_h = 0.15, 0.05  # a dense round: pooled draws, then the re-tune of h
    k_init, k_tune, k_dense = jax.random.split(key, 3)

    def tune(state, k, params, kernel=_KERNEL, **fracs):
        """BlackJAX's tuner on the density seen from where the chain is (y = x - origin). Stage 2
        estimates the variances as E[y^2] - E[y]^2 in the working precision: from an origin in the
        typical set E[y] is O(sd), where from the raw x (a coefficient of 1.5 with sd 1e-3, say)
        float32 cancellation returns zero or negative variances and h collapses to 0."""
        origin = state.position
        shifted = lambda y: logdensity_fn(y + origin)
        state = state._replace(position=jnp.zeros_like(origin))
        fracs = {"frac_tune1": 0.0, "frac_tune2": 0.0, "frac_tune3": 0.0, **fracs}
        state, params, _ = mclmc_find_L_and_step_size(
            kernel, num_warmup, state, k, logdensity_fn=shifted, params=params,
            diagonal_preconditioning=diag and kernel is _KERNEL, **fracs)
        return state._replace(position=state.position + origin), params

    def stages_1_2(x, k_mom, k, stage_3: bool):
        k1, k2, k3 = jax.random.split(k, 3)
        state = bj_mclmc.init(x, logdensity_fn, k_mom)
        state, params = tune(state, k1, None, frac_tune1=f1)  # stage 1: h at L = sqrt(d)
        if not diag:
            return tune(state, k2, params, frac_tune2=f2, frac_tune3=f3)  # stages 2 and 3
        state, p2 = tune(state, k2, params, frac_tune2=f2)  # stage 2: the metric, then a re-tune of h
        # BlackJAX's re-tune starts from stage 1's h, fit to the narrowest raw scale; in the new
        # metric's units that h is h / sigma_min, and its 1e-8 floor on the energy ratio leaves a
        # start 100x too small unfinished (measured: h 0.02-0.09 where 1 is right). Restart the
        # search there, then stage 3.
        h = jnp.maximum(p2.step_size, params.step_size / jnp.sqrt(jnp.min(p2.inverse_mass_matrix)))
        return tune(state, k3, p2._replace(step_size=h), frac_tune1=f_retune, frac_tune3=f3 if stage_3 else 0.0)
    states, params = jax.vmap(stages_1_2, (0, 0, 0, None))(
        positions, jax.random.split(k_init, num_chains), jax.random.split(k_tune, num_chains), not dense)
    imm = jnp.median(params.inverse_mass_matrix, axis=0).astype(positions.dtype) if diag else None
    n_draws = round(num_warmup * f_draws)
    if dense:
        def dense_round(carry, k_round):
            """Pooled draws under the current metric, the new metric, and h re-tuned in it."""
            states, params, imm = carry
            k_draws, k_h = jax.random.split(k_round)
            metric = low_rank_metric(imm)
            states, means, scatters = jax.vmap(
                lambda s, k, L, h: _draw_moments(s, k, logdensity_fn, metric, L, h, n_draws))(
                states, jax.random.split(k_draws, num_chains), params.L, params.step_size)
            imm = _pooled_covariance(means, scatters, n_draws).astype(imm.dtype)
            # h and L restart from BlackJAX's defaults for a whitened target: sqrt(d)/4 and sqrt(d)
            start = params._replace(L=jnp.full_like(params.L, jnp.sqrt(dim)),
                                    step_size=jnp.full_like(params.step_size, jnp.sqrt(dim) / 4))
            states, params = jax.vmap(lambda s, k, p: tune(s, k, p, _with_metric(low_rank_metric(imm)),
                                                           frac_tune1=f_h))(
                states, jax.random.split(k_h, num_chains), start)
            return (states, params, imm), None
        # two rounds, one program: the first starts from the pooled diagonal metric
        k_rounds, k_L = jax.random.split(k_dense)
        (states, params, imm), _ = lax.scan(dense_round, (states, params, jnp.diag(imm)),
                                            jax.random.split(k_rounds, 2))
        states, params = jax.vmap(lambda s, k, p: tune(s, k, p, _with_metric(low_rank_metric(imm)),
                                                       frac_tune3=f3))(
            states, jax.random.split(k_L, num_chains), params)
    # the integrator steps the tuner spends, from its own stage lengths (static Python ints)
    n1, n2, nr, n3 = (round(num_warmup * f) for f in (f1, f2, f_retune, f3))
    n_steps = n1 + n2 + (round(n2 / 3) + nr if diag else 0) + (n3 if n3 >= 2 else 0)
    n_steps += 2 * (n_draws + round(num_warmup * f_h)) if dense else 0
    dtype = positions.dtype
    return Adapted(states=states, step_size=jnp.median(params.step_size).astype(dtype), inverse_mass_matrix=imm,
                   params=(jnp.median(params.L).astype(dtype),),
                   grad_evals=jnp.asarray(float(GRADS_PER_STEP * n_steps * num_chains), jnp.float32),
                   divergences=None)
