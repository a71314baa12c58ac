"""Argument checks shared by every public entry point (scalars, seeds): errors name the argument."""
from __future__ import annotations

import math
import numbers

import numpy as np


def check_int(name: str, value, minimum: int | None = None) -> int:
    """An integer (not a bool), optionally ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _is_real_scalar(value) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return False
    if isinstance(value, numbers.Real):
        return True
    try:
        arr = np.asarray(value)
    except Exception:
        return False
    return arr.ndim == 0 and (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating))


def check_real(name: str, value, *, positive: bool = False, nonnegative: bool = False) -> float:
    """A finite real scalar (a Python or NumPy number, or a 0-d numeric array), optionally > 0 or >= 0."""
    if not _is_real_scalar(value):
        kind = "a positive number" if positive else "a real number"
        raise TypeError(f"{name} must be {kind}, got {type(value).__name__} {value!r}")
    v = float(value)
    if positive and not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be positive and finite, got {value!r}")
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    if nonnegative and v < 0:
        raise ValueError(f"{name} must be >= 0, got {v}")
    return v


def key_from_seed(seed, name: str = "seed"):
    """A typed ``jax.random`` key from an integer seed in ``[0, 2**32)``, a typed key, or a legacy
    ``uint32[2]`` key (``jax.random.PRNGKey``): one rule for every engine's ``seed=``."""
    import jax
    import jax.numpy as jnp

    if isinstance(seed, (int, np.integer)) and not isinstance(seed, (bool, np.bool_)):
        if not 0 <= int(seed) < 2**32:
            raise ValueError(f"{name} must be an integer in [0, 2**32), got {seed}")
        return jax.random.key(int(seed))
    if isinstance(seed, jax.Array) and jnp.issubdtype(seed.dtype, jax.dtypes.prng_key) and seed.shape == ():
        return seed
    if isinstance(seed, (jax.Array, np.ndarray)) and seed.dtype == np.uint32 and seed.shape == (2,):
        return jax.random.wrap_key_data(jnp.asarray(seed))
    raise TypeError(f"{name} must be an integer or a single jax.random key, got {type(seed).__name__}")
