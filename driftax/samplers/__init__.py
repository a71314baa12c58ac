"""Markov kernels in BlackJAX form: ``init(position, ...) -> State``, ``kernel(key, state, ...) -> (State, Info)``."""
from driftax.samplers import langevin
from driftax.samplers.langevin import MALAInfo, MALAState, mala

__all__ = ["langevin", "mala", "MALAState", "MALAInfo"]
