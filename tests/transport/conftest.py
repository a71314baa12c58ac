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


def marginal_error_rounding_bound(res, a, b, cost):
    """Bound on how far two float64 evaluations of the marginal error of the same potentials ``(f, g)`` may
    differ (separately compiled programs, numpy), in any of the norms l1, l2, linf.

    Both evaluate ``err = N(r - a) + N(c - b)`` with ``r = P 1``, ``c = P^T 1``, ``P_ij = exp(x_ij)``,
    ``x_ij = (f_i + g_j - C_ij) / eps``; with ``u = 2^-53``:

    * each ``P_ij``: ``exp`` within 2 ulp, and its argument, however a compiler fuses or reassociates
      ``f_i + g_j - C_ij``, within ``3 u s_ij`` of the exact one, ``s_ij = (|f_i| + |g_j| + |C_ij|) / eps``; two
      programs differ by at most ``d_ij = P_ij (4 u + 6 u s_ij)``;
    * any summation order of ``r_i`` is within ``(m - 1) u sum_j P_ij`` of the exact sum (Higham 2002, Thm 4.3),
      so two orders differ by ``2 (m - 1) u r_i``; the same for ``c_j`` with ``n - 1``;
    * ``|N(x) - N(y)| <= |x - y|_1`` for the three norms; the norm itself is a sum of at most ``n + m`` terms
      (``2 (n + m) u err``; the square root of l2 adds ``u err``).

    Total: ``2 sum_ij d_ij + 2 u ((m - 1) sum r + (n - 1) sum c) + 2 (n + m + 1) u err``.
    """
    P = plan_np(res)
    n, m = P.shape
    u = np.finfo(np.float64).eps / 2
    f, g = np.asarray(res.f, np.float64), np.asarray(res.g, np.float64)
    s = (np.abs(f)[:, None] + np.abs(g)[None, :] + np.abs(np.asarray(cost, np.float64))) / float(res.epsilon)
    s = np.where(P > 0, s, 0.0)  # -inf potentials (zero weights) give exact zeros
    return float(2 * np.sum(P * (4 * u + 6 * u * s)) + 2 * u * ((m - 1) + (n - 1)) * P.sum()
                 + 2 * (n + m + 1) * u * float(res.marginal_error))


def marginal_error_np(res, a, b, norm="l1"):
    """The marginal error of ``res``'s potentials, recomputed in numpy float64 (independent of the solver)."""
    P = plan_np(res)
    r, c = P.sum(1) - a, P.sum(0) - b
    fn = {"l1": lambda v: np.abs(v).sum(), "l2": lambda v: np.sqrt((v * v).sum()),
          "linf": lambda v: np.abs(v).max()}[norm]
    return float(fn(r) + fn(c))
