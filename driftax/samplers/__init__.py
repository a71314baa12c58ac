"""Markov kernels in BlackJAX form: ``init(position, ...) -> State``, ``kernel(key, state, ...) -> (State, Info)``."""
from driftax.samplers import averaging, diffusion, hmc, langevin, mclmc, paris, smc
from driftax.samplers.langevin import MALAInfo, MALAState, mala, sgld, spherical, ula

__all__ = ["averaging", "diffusion", "hmc", "langevin", "mclmc", "paris", "smc", "mala", "ula", "sgld", "spherical", "MALAState", "MALAInfo"]
