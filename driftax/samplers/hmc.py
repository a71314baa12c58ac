r"""BlackJAX's NUTS as a noise-driven step, so it runs in `driftax.infer.sample`'s loop.

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
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from blackjax.mcmc import hmc as bj_hmc
from blackjax.mcmc import nuts as bj_nuts
from jax.flatten_util import ravel_pytree

from driftax.samplers.rng import key_from_normals

Array = jax.Array

__all__ = ["NUTSInfo", "nuts_init", "nuts_step", "nuts_noise_size", "MAX_NUM_DOUBLINGS"]

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
    """One NUTS transition whose key is made from ``noise[:2]`` (`nuts_noise_size` normals)."""
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


def nuts_noise_size(dim: int) -> int:
    """Standard normals one `nuts_step` consumes (they become its key), whatever the dimension."""
    del dim
    return 2


def nuts_build_kernel():
    """BlackJAX's own NUTS kernel ``kernel(key, state, logdensity_fn, step_size, inverse_mass_matrix)``."""
    return _KERNEL
