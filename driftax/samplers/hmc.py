r"""BlackJAX's NUTS and ChEES-HMC as noise-driven steps, so they run in `driftax.infer.sample`'s loop.

The No-U-Turn sampler (Hoffman & Gelman, 2014, "The No-U-Turn sampler: adaptively setting path
lengths in Hamiltonian Monte Carlo"; the multinomial variant of Betancourt, 2017, "A conceptual
introduction to Hamiltonian Monte Carlo") simulates the Hamiltonian
:math:`H(x, p) = -\log p(x) + \tfrac12 p^\top A p`, :math:`p \sim N(0, A^{-1})`, by leapfrog steps
of size :math:`h`, doubling the trajectory forwards or backwards at random until it turns back on
itself (:math:`(x^+ - x^-)^\top A p^\pm < 0`) or reaches :math:`2^{\text{max doublings}}` steps,
and draws the next state from the trajectory with probabilities :math:`\propto e^{-H}`, biased
towards the last doubling. The kernel is BlackJAX's (``blackjax.nuts.build_kernel``); this module
only feeds it its randomness from the loop's noise (two normals per step become its key,
`driftax.samplers.rng.key_from_normals`) and names its statistics as ArviZ does.

A trajectory whose energy error exceeds 1000 is divergent (BlackJAX's threshold, Stan's too): the
sampler keeps a state from before the divergence and the step is flagged ``diverging``; a NaN
energy counts as divergent, so no NaN enters the chain.

ChEES-HMC (Hoffman, Radul & Sountsov, 2021, "An adaptive-MCMC scheme for setting trajectory
lengths in Hamiltonian Monte Carlo", AISTATS) is HMC with a jittered trajectory: transition
:math:`t` runs :math:`\lceil u_t T / h \rceil` leapfrog steps, :math:`u_t` the Halton sequence
in (0, 1] (shared by all chains, so a vectorised step wastes no work on chains that stopped
early). In warm-up, many chains together tune :math:`h` by dual averaging of the harmonic-mean
acceptance towards 0.651 and :math:`T` by Adam on the ChEES criterion
:math:`\tfrac14 E[(\|x' - E x'\|^2 - \|x - E x\|^2)^2]`, the change in the estimator of the
expected square, whose gradient in :math:`T` is estimated across chains from each proposal
:math:`(x', p')` as :math:`u_t (\|x'-\bar x'\|^2 - \|x-\bar x\|^2)(x'-\bar x')^\top p'`,
weighted by acceptance. `chees_warmup` is BlackJAX's ``chees_adaptation``; the sampling step is
BlackJAX's ``dynamic_hmc`` kernel.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax
from blackjax.adaptation import chees_adaptation as bj_chees
from blackjax.adaptation.base import get_filter_adapt_info_fn
from blackjax.mcmc import dynamic_hmc as bj_dynamic_hmc
from blackjax.mcmc import hmc as bj_hmc
from blackjax.mcmc import nuts as bj_nuts
from jax.flatten_util import ravel_pytree

from driftax.samplers.rng import key_from_normals

Array = jax.Array

__all__ = ["NUTSInfo", "nuts_init", "nuts_step", "MAX_NUM_DOUBLINGS", "HMCInfo",
           "chees_init", "chees_step", "chees_warmup", "Adapted"]

MAX_NUM_DOUBLINGS = 10  # Stan's default maximum tree depth: at most 1023 leapfrog steps a transition

_KERNEL = bj_nuts.build_kernel()


class NUTSInfo(NamedTuple):
    """One NUTS transition, in ArviZ's ``sample_stats`` names."""

    acceptance_rate: Array  # mean Metropolis acceptance over the trajectory (what step-size adaptation aims)
    is_accepted: Array
    diverging: Array
    n_steps: Array  # leapfrog steps = gradient evaluations
    tree_depth: Array  # number of doublings
    energy: Array  # H at the new state


def nuts_init(position, logdensity_fn: Callable) -> bj_hmc.HMCState:
    """State at ``position``: the position, its log-density and gradient (BlackJAX's ``HMCState``)."""
    return bj_hmc.init(position, logdensity_fn)


def _blackjax_metric(inverse_mass_matrix, position):
    """The inverse mass matrix as BlackJAX takes it: identity for ``None``; the loop's dense form
    ``(A, chol A)`` gives ``A`` (BlackJAX factorises it itself)."""
    if inverse_mass_matrix is None:
        x, _ = ravel_pytree(position)
        return jnp.ones_like(x)
    if isinstance(inverse_mass_matrix, tuple):
        return inverse_mass_matrix[0]
    return inverse_mass_matrix


def nuts_step(state: bj_hmc.HMCState, noise: Array, logdensity_fn: Callable, step_size,
              inverse_mass_matrix=None, max_num_doublings: int = MAX_NUM_DOUBLINGS):
    """One NUTS transition whose key is made from ``noise[:2]`` (`driftax.samplers.rng.key_noise_size` normals)."""
    key = key_from_normals(noise[:2])
    imm = _blackjax_metric(inverse_mass_matrix, state.position)
    new, info = _KERNEL(key, state, logdensity_fn, step_size, imm, max_num_doublings)
    return new, NUTSInfo(
        acceptance_rate=info.acceptance_rate,
        is_accepted=jnp.ones((), bool),
        diverging=info.is_divergent,
        n_steps=info.num_integration_steps,
        tree_depth=info.num_trajectory_expansions,
        energy=info.energy,
    )


def nuts_build_kernel():
    """BlackJAX's own NUTS kernel ``kernel(key, state, logdensity_fn, step_size, inverse_mass_matrix)``."""
    return _KERNEL


# --- ChEES-HMC ------------------------------------------------------------------------------------
CHEES_LEARNING_RATE = 0.025  # Adam's learning rate on log T in Hoffman, Radul & Sountsov (2021)
_HALTON_BITS = 31  # i < 2**31 steps; the first bits give the same values as BlackJAX's warm-up's


class HMCInfo(NamedTuple):
    """One ChEES-HMC transition, in ArviZ's ``sample_stats`` names."""

    acceptance_rate: Array
    is_accepted: Array
    diverging: Array
    n_steps: Array  # leapfrog steps = gradient evaluations
    energy: Array


class Adapted(NamedTuple):
    """What a method's own warm-up hands the sampling loop (`driftax.infer.methods.Method.adapt`)."""

    states: object  # the chains' kernel states, leading axis the chain
    step_size: Array
    inverse_mass_matrix: Array | None  # diagonal, or None for the identity
    params: tuple  # further kernel parameters, passed to ``step`` after the metric
    grad_evals: Array  # gradient evaluations of the warm-up, all chains
    divergences: Array | None  # divergent warm-up transitions, all chains (None: not reported)


def _integration_steps(random_generator_arg, num_leapfrog_steps):
    """BlackJAX's ChEES rule: ceil(u_i * num_leapfrog_steps), u_i the (i+1)-th Halton number."""
    u = bj_dynamic_hmc.halton_sequence(jnp.asarray(random_generator_arg, jnp.int32), _HALTON_BITS)
    return jnp.asarray(jnp.ceil(u * num_leapfrog_steps), dtype=jnp.int32)


_CHEES_KERNEL = bj_dynamic_hmc.build_kernel(next_random_arg_fn=lambda i: i + 1,
                                            integration_steps_fn=_integration_steps)


def chees_init(position, logdensity_fn: Callable) -> bj_dynamic_hmc.DynamicHMCState:
    """State at ``position``, Halton counter 0 (BlackJAX's ``DynamicHMCState``)."""
    return bj_dynamic_hmc.init(position, logdensity_fn, jnp.zeros((), jnp.int32))


def chees_step(state, noise: Array, logdensity_fn: Callable, step_size, inverse_mass_matrix,
               num_leapfrog_steps):
    """One jittered-HMC transition of ``ceil(u T/h)`` leapfrog steps (``num_leapfrog_steps`` = T/h,
    from `chees_warmup`), its key made from ``noise[:2]``."""
    key = key_from_normals(noise[:2])
    imm = _blackjax_metric(inverse_mass_matrix, state.position)
    new, info = _CHEES_KERNEL(key, state, logdensity_fn, step_size, imm, (num_leapfrog_steps,))
    return new, HMCInfo(acceptance_rate=info.acceptance_rate, is_accepted=info.is_accepted,
                        diverging=info.is_divergent, n_steps=info.num_integration_steps, energy=info.energy)


def chees_build_kernel():
    """BlackJAX's dynamic-HMC kernel with ChEES's Halton jitter:
    ``kernel(key, state, logdensity_fn, step_size, inverse_mass_matrix, (num_leapfrog_steps,))``."""
    return _CHEES_KERNEL


def chees_warmup(logdensity_fn: Callable, positions: Array, key, num_warmup: int, step_size,
                 mass_matrix: str | None, target_acceptance: float, *, max_leapfrog_steps: int = 1000) -> Adapted:
    """BlackJAX's ChEES adaptation over all chains (``positions``: ``(num_chains, dim)``).

    Adam (learning rate 0.025, the paper's) tunes log T; dual averaging tunes h towards
    ``target_acceptance`` of the harmonic-mean acceptance; ``mass_matrix="diag"`` pools a
    diagonal metric over all chains in the second half (BlackJAX's ``mass_matrix_estimation``).
    The final h and T are the moving averages BlackJAX returns. Traceable: the sampling loop
    jits it with the chains sharded over devices, and the cross-chain means become all-reduces.
    """
    num_chains = positions.shape[0]
    warmup = bj_chees.chees_adaptation(
        logdensity_fn, num_chains, target_acceptance_rate=target_acceptance,
        max_leapfrog_steps=max_leapfrog_steps,
        mass_matrix_estimation="diagonal" if mass_matrix == "diag" else None,
        adaptation_info_fn=get_filter_adapt_info_fn(set(), {"num_integration_steps", "is_divergent"}))
    (last, params), info = warmup.run(key, positions, step_size, optax.adam(CHEES_LEARNING_RATE), num_warmup)
    dtype = positions.dtype
    # the warm-up's Halton counter is num_warmup: sampling continues the same quasi-random sequence
    states = last._replace(random_generator_arg=jnp.asarray(last.random_generator_arg, jnp.int32))
    imm = None if mass_matrix is None else jnp.asarray(params["inverse_mass_matrix"], dtype)
    return Adapted(states=states, step_size=jnp.asarray(params["step_size"], dtype), inverse_mass_matrix=imm,
                   params=(jnp.asarray(params["integration_steps_params"][0], dtype),),
                   grad_evals=jnp.sum(info.info.num_integration_steps.astype(jnp.float32)),
                   divergences=jnp.sum(info.info.is_divergent.astype(jnp.int32)))
