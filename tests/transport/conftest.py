import jax
import numpy as np
import pytest


@pytest.fixture
def x64():
    """float64 inside the test only (the library never flips the global flag)."""
    with jax.enable_x64(True):
        yield


def point_clouds(n, m, d=2, seed=0, weights=False):
    rng = np.random.default_rng(seed)
    x = rng.random((n, d))
    y = rng.random((m, d))
    cost = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    if weights:
        a = rng.random(n) + 0.1
        b = rng.random(m) + 0.1
        a, b = a / a.sum(), b / b.sum()
    else:
        a, b = np.full(n, 1.0 / n), np.full(m, 1.0 / m)
    return a, b, cost


def plan_np(res):
    """Plan recomputed in numpy float64 from the returned potentials (independent of the solver)."""
    f, g = np.asarray(res.f, np.float64), np.asarray(res.g, np.float64)
    c = np.asarray(res.cost, np.float64)
    return np.exp((f[:, None] + g[None, :] - c) / float(res.epsilon))
