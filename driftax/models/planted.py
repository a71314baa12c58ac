r"""Planted-direction problems: single-index models with a Hermite link and tensor PCA.

A unit direction :math:`\theta^\star\in S^{d-1}` is hidden in data; an estimator is judged by its
overlap :math:`|\langle\hat\theta, \theta^\star\rangle|`. These are the problems of Wei, Damian &
Lee (2026), "Improved high-dimensional estimation with Langevin dynamics and stochastic weight
averaging": the information exponent :math:`k^\star` of the link sets how many samples online SGD
needs (:math:`n \gtrsim d^{\max(1, k^\star - 1)}`), and the time average of Langevin iterates
reaches the smoothed rate :math:`d^{\max(1, k^\star/2)}`.

* **Single-index** (`single_index`): :math:`x_i\sim N(0, I_d)`,
  :math:`y_i = \mathrm{He}_k(\langle\theta^\star, x_i\rangle) + \sigma\varepsilon_i` with the
  probabilists' Hermite polynomial :math:`\mathrm{He}_k` (information exponent :math:`k`), and the
  correlation loss :math:`L_n(\theta) = -\frac1n\sum_i y_i\,\mathrm{He}_k(\langle\theta, x_i\rangle)`,
  whose population value on the sphere is :math:`-k!\,\langle\theta,\theta^\star\rangle^k`.
  Writing :math:`\mathrm{He}_k(z) = \sum_j c_j z^j`, the same loss is the polynomial
  :math:`L_n(\theta) = -\sum_j c_j\,\langle M_j, \theta^{\otimes j}\rangle` in the empirical moment
  tensors :math:`M_j = \frac1n\sum_i y_i\,x_i^{\otimes j}` (an identity for every θ, not only on the
  sphere). ``single_index(..., moments=True)`` precomputes them once (:math:`n d^k` work): a loss
  and gradient then cost :math:`O(d^k)` instead of :math:`O(nd)`, ten times less at :math:`k = 3`,
  :math:`n = 10 d^2`.
* **Tensor PCA** (`tensor_pca`): :math:`T = \lambda\,\theta^{\star\otimes k} + W/\sqrt d` with a
  symmetric Gaussian noise tensor :math:`W` and loss :math:`L(\theta) = -\langle T, \theta^{\otimes k}\rangle`.

A problem knows its data, loss, gradient and overlap, and gives a `Target` on the sphere
(``log p(θ) = -β L(θ)`` at inverse temperature ``β``); it knows no algorithm. Its estimators
from time averages are those of the paper: the normalised average
:math:`\bar\theta/\lVert\bar\theta\rVert` for odd :math:`k^\star`, and for even :math:`k^\star` (the
loss is even in θ, so the average of θ vanishes) the top eigenvector of the average of
:math:`\theta\theta^\top`.
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from driftax._checks import check_int, check_real
from driftax.models.base import Target

__all__ = ["hermite", "PlantedProblem", "single_index", "tensor_pca", "estimate_direction", "overlap"]


def hermite(k: int, z):
    """Probabilists' Hermite polynomial :math:`\\mathrm{He}_k(z)` by the three-term recurrence
    :math:`\\mathrm{He}_{j+1} = z\\,\\mathrm{He}_j - j\\,\\mathrm{He}_{j-1}` (``E[He_j He_k] = k! δ_jk``)."""
    prev, cur = jnp.ones_like(z), z
    if k == 0:
        return prev
    for j in range(1, k):
        prev, cur = cur, z * cur - j * prev
    return cur


def overlap(theta, theta_star):
    """:math:`|\\langle\\theta/\\lVert\\theta\\rVert, \\theta^\\star\\rangle|` (last axis)."""
    theta = jnp.asarray(theta)
    return jnp.abs(theta @ theta_star) / jnp.linalg.norm(theta, axis=-1)


def estimate_direction(mean_theta, mean_outer=None, k: int = 3):
    """The paper's estimator from time averages: odd ``k``, ``mean_theta / |mean_theta|``; even
    ``k``, the top eigenvector of ``mean_outer`` (the average of θθᵀ)."""
    if k % 2:
        return mean_theta / jnp.linalg.norm(mean_theta)
    if mean_outer is None:
        raise ValueError("an even k needs the average of theta theta^T (mean_outer)")
    _, vecs = jnp.linalg.eigh(mean_outer)
    return vecs[:, -1]


@dataclasses.dataclass(frozen=True, eq=False)
class PlantedProblem:
    """A planted direction in data: ``loss``, its gradient, the overlap, and a `Target` on the sphere.

    ``kind`` is ``"single_index"`` (``data = (x, y)``) or ``"tensor_pca"`` (``data = T``).
    """

    kind: str
    k: int
    data: tuple
    theta_star: jax.Array
    moments: tuple | None = None  # single-index only: (c_j M_j for j = 0..k), None where c_j = 0

    @property
    def dim(self) -> int:
        return int(self.theta_star.shape[0])

    def loss(self, theta):
        if self.kind == "single_index" and self.moments is not None:
            total = 0.0
            for m in self.moments:  # c_j <M_j, theta^{(x) j}>, contracted one index at a time
                if m is not None:
                    for _ in range(m.ndim):
                        m = m @ theta
                    total = total + m
            return -total
        if self.kind == "single_index":
            x, y = self.data
            return -jnp.mean(y * hermite(self.k, x @ theta))
        t = self.data[0]
        for _ in range(self.k):
            t = t @ theta
        return -t

    def grad(self, theta):
        return jax.grad(self.loss)(theta)

    def overlap(self, theta):
        return overlap(theta, self.theta_star)

    def target(self, temperature: float) -> Target:
        """``log p(θ) = -β L(θ)`` on the unit sphere (use with the ``"spherical"`` kernel); constrained
        sites ``theta`` and, for even ``k``, ``theta_outer`` (θθᵀ, whose average gives the estimator)."""
        beta = check_real("temperature", temperature, positive=True)
        d, k = self.dim, self.k

        def constrain(theta):
            out = {"theta": theta}
            if k % 2 == 0:
                out["theta_outer"] = jnp.outer(theta, theta)
            return out

        def init_fn(key):  # uniform on the sphere
            z = jax.random.normal(key, (d,))
            return z / jnp.linalg.norm(z)

        return Target(lambda th: -beta * self.loss(th), d, name=f"{self.kind}_k{k}_d{d}",
                      constrain=constrain, init_fn=init_fn,
                      dims={"theta": ("direction",), "theta_outer": ("direction", "direction_bis")})


def _direction(rng: np.random.Generator, d: int) -> np.ndarray:
    v = rng.normal(size=d)
    return v / np.linalg.norm(v)


def _hermite_moments(x: np.ndarray, y: np.ndarray, k: int, dtype) -> tuple:
    """``(c_j M_j)_{j=0..k}`` with ``He_k(z) = Σ_j c_j z^j`` and ``M_j = (1/n) Σ_i y_i x_i^{⊗j}``
    (in float64 for a float64 problem, else float32, whose rounding, ~1e-6 relative, is far below
    the sampling noise ~n^{-1/2} of the moments; accumulated in row blocks so no ``n × d^{j-1}``
    array is ever whole)."""
    work = np.float64 if jnp.dtype(dtype) == jnp.float64 else np.float32
    x, y = x.astype(work), y.astype(work)
    n, d = x.shape
    coef = np.polynomial.hermite_e.herme2poly([0.0] * k + [1.0])
    out = []
    for j, c in enumerate(coef):
        if c == 0:
            out.append(None)
            continue
        if j == 0:
            out.append(jnp.asarray(c * y.mean(dtype=np.float64), dtype))
            continue
        m = np.zeros((d, d ** (j - 1)), work)
        rows = max(1, int(2e7 // d ** (j - 1)))
        for s in range(0, n, rows):
            xs, ys = x[s:s + rows], y[s:s + rows]
            right = np.ones((len(xs), 1), work)
            for _ in range(j - 1):  # rows of x_i^{(x)(j-1)}, flattened
                right = (right[:, :, None] * xs[:, None, :]).reshape(len(xs), -1)
            m += (xs * ys[:, None]).T @ right
        out.append(jnp.asarray(c * m.reshape((d,) * j) / n, dtype))
    return tuple(out)


def single_index(d: int, n: int, k: int = 3, *, noise: float = 0.1, seed: int = 0, dtype=jnp.float32,
                 moments: bool = False) -> PlantedProblem:
    """``n`` samples ``y_i = He_k(<θ*, x_i>) + noise·ε_i``, ``x_i ~ N(0, I_d)``, θ* uniform on the sphere.

    ``moments=True`` evaluates the loss through the precomputed moment tensors (module docstring;
    ``d^k`` numbers, at most 5e7): the same function, cheaper per step when ``d^{k-1} < n``.
    """
    d = check_int("d", d, 2)
    n = check_int("n", n, 1)
    k = check_int("k", k, 1)
    noise = check_real("noise", noise, nonnegative=True)
    if not isinstance(moments, (bool, np.bool_)):
        raise TypeError(f"moments must be a bool, got {moments!r}")
    if moments and d ** k > 50_000_000:
        raise ValueError(f"moments: an order-{k} moment tensor in d={d} has {d ** k:,} entries; keep d**k <= 5e7")
    rng = np.random.default_rng(check_int("seed", seed, 0))
    theta_star = _direction(rng, d)
    x = rng.normal(size=(n, d))
    y = np.polynomial.hermite_e.hermeval(x @ theta_star, [0.0] * k + [1.0]) + noise * rng.normal(size=n)
    return PlantedProblem("single_index", k, (jnp.asarray(x, dtype), jnp.asarray(y, dtype)), jnp.asarray(theta_star, dtype),
                          _hermite_moments(x, y, k, dtype) if moments else None)


def tensor_pca(d: int, k: int = 3, *, snr: float = 1.0, seed: int = 0, dtype=jnp.float32) -> PlantedProblem:
    """``T = snr · θ*^{⊗k} + W/√d`` with ``W`` the symmetrisation of an i.i.d. ``N(0, 1)`` tensor."""
    d = check_int("d", d, 2)
    k = check_int("k", k, 1)
    snr = check_real("snr", snr, nonnegative=True)
    if d ** k > 50_000_000:
        raise ValueError(f"tensor_pca: a dense order-{k} tensor in d={d} has {d ** k:,} entries; keep d**k <= 5e7")
    rng = np.random.default_rng(check_int("seed", seed, 0))
    theta_star = _direction(rng, d)
    w = rng.normal(size=(d,) * k)
    perms = list(__import__("itertools").permutations(range(k)))
    w = sum(np.transpose(w, p) for p in perms) / len(perms)
    spike = theta_star
    for _ in range(k - 1):
        spike = np.multiply.outer(spike, theta_star)
    t = snr * spike + w / math.sqrt(d)
    return PlantedProblem("tensor_pca", k, (jnp.asarray(t, dtype),), jnp.asarray(theta_star, dtype))
