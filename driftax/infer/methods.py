"""The one registry of sampling methods: name -> how to init, step and adapt.

`driftax.infer.sample`, the CLI and the benchmarks all read this table, so a new kernel is
added here once. A method's ``step(state, noise, logdensity_fn, step_size, inverse_mass_matrix)``
is its kernel with the randomness passed in (``noise_size(dim)`` standard normals), so the
sampling loop can draw noise for all chains in bulk.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

from driftax.samplers import langevin

__all__ = ["Method", "register", "get", "available"]


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
        Acceptance rate the dual-averaging warm-up aims at (``None``: no Metropolis step, the step
        size is not adapted by acceptance).
    """

    name: str
    init: Callable
    step: Callable
    noise_size: Callable[[int], int]
    build_kernel: Callable
    default_step_size: float = 0.1
    target_acceptance: float | None = None


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
