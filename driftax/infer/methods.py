"""The one registry of sampling methods: name -> how to init, step and adapt.

`driftax.infer.sample`, the CLI and the benchmarks all read this table, so a new kernel is
added here once. A method's ``step(state, noise, logdensity_fn, step_size, inverse_mass_matrix, *params)``
is its kernel with the randomness passed in (``noise_size(dim)`` standard normals), so the
sampling loop can draw noise for all chains in bulk (``params``: what a method's own warm-up tunes
besides the step size and metric, ChEES's trajectory length, MCLMC's L). ``bind(target)`` gives what the kernel
evaluates (the log-density for most; SGLD's minibatch form of the target's data likelihood).
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable

import jax.numpy as jnp

from driftax.samplers import averaging, hmc, langevin, mclmc
from driftax.samplers.rng import key_noise_size

__all__ = ["Method", "register", "get", "available", "sgld", "with_average"]


def _logdensity(target):
    return target.logdensity_fn


def _cholesky_pair(inverse_mass_matrix):
    """``(M^{-1}, chol(M^{-1}))``: what the Hamiltonian and Langevin kernels take for a dense metric."""
    return inverse_mass_matrix, jnp.linalg.cholesky(inverse_mass_matrix)


def _one_gradient(info, density):
    """Gradient evaluations of one step of a Langevin kernel: one ``value_and_grad``."""
    return 1.0


@dataclasses.dataclass(frozen=True)
class Method:
    """How the sampling loop drives one kernel.

    Attributes
    ----------
    name
        Registry name ("mala", ...).
    init
        ``(position, logdensity_fn) -> state``.
    step
        ``(state, noise, logdensity_fn, step_size, inverse_mass_matrix) -> (state, info)``; the
        info has ``acceptance_rate``, ``is_accepted`` and ``diverging``; the state ``position``
        and ``logdensity``.
    noise_size
        ``dim -> number of standard normals one step consumes``.
    build_kernel
        BlackJAX-style ``() -> kernel(key, state, logdensity_fn, step_size, ...)``.
    default_step_size
        Initial step size before adaptation.
    target_acceptance
        Acceptance rate the dual-averaging warm-up aims at by default (``None``: the step size is
        not adapted unless the caller asks for a ``target_acceptance``).
    reports_acceptance
        Whether the info's ``acceptance_rate`` is a Metropolis acceptance probability (MALA's, or
        the one MALA would have had for ULA's move) that a warm-up can aim at. SGLD's minibatch
        density and spherical Langevin report none: asking them for a target acceptance is an error.
    bind
        ``target -> density``, the object ``init`` and ``step`` evaluate (default: the target's
        ``logdensity_fn``). Raises a clear error for a target the method cannot use.
    takes_metric
        Whether the kernel takes an inverse mass matrix (spherical Langevin does not).
    start_sampling
        Optional ``state -> state`` applied to every chain when sampling starts (averaged
        kernels zero their moments there).
    stats
        Extra ``sample_stats`` the info carries under ArviZ's names (``n_steps``, ``tree_depth``,
        ``energy``), recorded at the last step of each kept draw.
    grad_evals
        ``(info, density) -> gradient evaluations`` of one step (1 for Langevin kernels, the
        leapfrog steps for NUTS, B/N for an SGLD minibatch); the loop totals them in the attrs.
    warmup_step
        Optional step used during warm-up instead of ``step`` (same signature and noise size).
        ULA warms up with MALA's accept/reject, so the chain cannot run away while the step size
        and metric are still being found; sampling then drops the correction.
    adapt
        Optional warm-up of the method's own, replacing the loop's windowed adaptation:
        ``(density, positions, key, num_warmup, step_size, mass_matrix, target_acceptance) ->
        hmc.Adapted`` (states, step size, diagonal metric or None, further kernel ``params``,
        gradient evaluations, divergences). ChEES tunes its trajectory length across chains,
        MCLMC its L from an autocorrelation time: neither fits a per-step update of one step size.
        The loop jits it once over all chains, sharded over devices.
    mass_matrices
        The ``mass_matrix`` settings the method accepts (besides ``None``).
    default_mass_matrix
        What ``mass_matrix="auto"`` means for it: ``"diag"``, or ``None`` where a metric changes the
        meaning of a step size the caller fixes (spherical Langevin, which has no acceptance rate
        to tune its step by).
    dense_metric
        ``inverse_mass_matrix -> what step takes`` for a dense metric, computed once per block of
        steps: ``(M^{-1}, its Cholesky factor)`` by default; MCLMC's isokinetic integrator takes
        BlackJAX's ``LowRankInverseMassMatrix`` (`samplers.mclmc.low_rank_metric`).
    takes_step_size
        Whether ``step_size=`` means anything to it (MCLMC's tuner starts from its own, sqrt(d)/4).
    param_names
        Names of the ``params`` its own warm-up tunes; their values go to the InferenceData's
        attrs as ``adapted_{name}``.
    """

    name: str
    init: Callable
    step: Callable
    noise_size: Callable[[int], int]
    build_kernel: Callable
    default_step_size: float = 0.1
    target_acceptance: float | None = None
    reports_acceptance: bool = True
    bind: Callable = _logdensity
    takes_metric: bool = True
    start_sampling: Callable | None = None
    stats: tuple[str, ...] = ()
    grad_evals: Callable = _one_gradient
    warmup_step: Callable | None = None
    adapt: Callable | None = None
    mass_matrices: tuple[str, ...] = ("diag", "dense")
    default_mass_matrix: str | None = "diag"
    dense_metric: Callable = _cholesky_pair
    takes_step_size: bool = True
    param_names: tuple[str, ...] = ()


_REGISTRY: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add (or replace) a method under ``method.name``."""
    _REGISTRY[method.name] = method
    return method


def get(name) -> Method:
    """The registered method called ``name`` (a `Method` passes through)."""
    if isinstance(name, Method):
        return name
    if not isinstance(name, str):
        raise TypeError(f"method must be a method name (str) or a Method, got {type(name).__name__}")
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; available: {', '.join(available())}") from None


def available() -> list[str]:
    return sorted(_REGISTRY)


# MALA's optimal acceptance rate is 0.574 as dim -> oo (Roberts & Rosenthal, 1998).
register(Method(
    name="mala",
    init=langevin.init,
    step=langevin.step,
    noise_size=langevin.noise_size,
    build_kernel=langevin.build_kernel,
    default_step_size=0.1,
    target_acceptance=0.574,
))


# ULA: no Metropolis step while sampling (bias O(h)); the warm-up runs MALA on the same noise
# (dim + 1 normals, the last MALA's uniform) so a step size found by target_acceptance= is one
# where the chain stays put rather than one chosen after it ran away. Default: the user's step.
register(Method(
    name="ula",
    init=langevin.init,
    step=langevin.ula_step,
    noise_size=langevin.noise_size,
    build_kernel=langevin.ula_build_kernel,
    default_step_size=0.01,
    warmup_step=langevin.step,
))


def sgld(batch_size: int | None = None, *, decay_steps: float = 1.0, decay_power: float = 0.0) -> Method:
    """SGLD with minibatches of ``batch_size`` (default: a tenth of the data, rounded up) of the
    target's `data_likelihood`, and the schedule ``h_t = h_0 (1 + t/decay_steps)^(-decay_power)``.

    ``infer.sample(target, methods.sgld(64, decay_steps=1000, decay_power=0.55), average="weighted")``
    averages iterates weighted by their step sizes, as Welling & Teh do.
    """
    def bind(target):
        lik = getattr(target, "data_likelihood", None)
        if lik is None:
            raise ValueError(f"method 'sgld' needs a target with a data_likelihood (prior + sum over data); "
                             f"{target.name!r} has none")
        b = math.ceil(lik.size / 10) if batch_size is None else batch_size
        return langevin.check_minibatch(lik, b, decay_steps, decay_power)

    return Method(name="sgld", init=langevin.sgld_init, step=langevin.sgld_step,
                  noise_size=langevin.sgld_noise_size, build_kernel=langevin.sgld_build_kernel,
                  default_step_size=1e-3, bind=bind, reports_acceptance=False,
                  grad_evals=lambda info, mb: mb.batch_size / mb.likelihood.size)


register(sgld())

# NUTS: BlackJAX's kernel; Stan's target acceptance 0.8 and maximum tree depth 10. The dual
# averaging starts from log(10 h0) (Hoffman & Gelman's mu), so h0 = 0.5 searches around 5 first.
register(Method(
    name="nuts",
    init=hmc.nuts_init,
    step=hmc.nuts_step,
    noise_size=key_noise_size,
    build_kernel=hmc.nuts_build_kernel,
    default_step_size=0.5,
    target_acceptance=0.8,
    stats=("n_steps", "tree_depth", "energy"),
    grad_evals=lambda info, density: info.n_steps,
))

# ChEES-HMC: jittered HMC whose trajectory length and step size are tuned across all chains by
# BlackJAX's chees_adaptation; 0.651 is the optimal acceptance of HMC (Beskos et al., 2013) the
# paper aims at. The metric, when asked for, is BlackJAX's pooled diagonal estimate.
register(Method(
    name="hmc_chees",
    init=hmc.chees_init,
    step=hmc.chees_step,
    noise_size=key_noise_size,
    build_kernel=hmc.chees_build_kernel,
    default_step_size=0.1,
    target_acceptance=0.651,
    stats=("n_steps", "energy"),
    grad_evals=lambda info, density: info.n_steps,
    adapt=hmc.chees_warmup,
    mass_matrices=("diag",),
    param_names=("num_leapfrog_steps",),
))


def _needs_two_dims(target):
    if target.dim < 2:
        raise ValueError(f"method 'mclmc' needs a target of dimension >= 2 (its direction lives on the "
                         f"unit sphere of R^d); {target.name!r} has dimension {target.dim}")
    return target.logdensity_fn


# MCLMC: no Metropolis step; BlackJAX's tuner sets h (energy error 5e-4 per dimension) and L.
register(Method(
    name="mclmc",
    init=mclmc.init,
    step=mclmc.step,
    noise_size=key_noise_size,
    build_kernel=mclmc.build_kernel,
    default_step_size=1.0,
    reports_acceptance=False,
    bind=_needs_two_dims,
    stats=("energy_error",),
    grad_evals=lambda info, density: mclmc.GRADS_PER_STEP,
    adapt=mclmc.warmup,
    mass_matrices=("diag", "dense"),
    dense_metric=mclmc.low_rank_metric,
    takes_step_size=False,
    param_names=("L",),
))

# Spherical Langevin on S^{d-1}: the target's log-density is read on the unit sphere. A metric
# (the warm-up's estimate of the covariance of theta, when asked for) enters through P M P and the
# divergence term -d P M theta (samplers.langevin); the step size is then in the metric's units.
register(Method(
    name="spherical",
    init=langevin.spherical_init,
    step=langevin.spherical_step,
    noise_size=langevin.spherical_noise_size,
    build_kernel=langevin.spherical_build_kernel,
    default_step_size=0.01,
    reports_acceptance=False,
    default_mass_matrix=None,
))


@functools.lru_cache(maxsize=16)  # one wrapped method per (method, transform, schedule): the loop's compile cache hits
def with_average(method: Method, transform: Callable, schedule) -> Method:
    """``method`` whose state also carries running averages of ``transform(position)``
    (`driftax.samplers.averaging.wrap`); the moments restart when sampling starts."""
    init, step, reset = averaging.wrap(method.init, method.step, transform, schedule)
    inner_warmup = method.warmup_step or method.step

    def warmup_step(state, noise, density, step_size, imm, *params):  # warm-up iterates are never averaged
        inner, info = inner_warmup(state.inner, noise, density, step_size, imm, *params)
        return state._replace(inner=inner), info

    return dataclasses.replace(method, init=init, step=step, start_sampling=reset, warmup_step=warmup_step)
