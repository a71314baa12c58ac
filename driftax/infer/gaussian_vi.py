"""Gaussian variational inference in the Bures-Wasserstein space: FB-GVI, its stochastic form, BW-SGD,
batch-and-match.

All methods minimise ``KL(q | pi)`` over Gaussians ``q = N(m, S)`` for a target ``pi ∝ exp(-V)``,
``V = -target.logdensity_fn`` (in the target's unconstrained space). ``KL(q | pi) = E_q[V] - H(q) + log Z``:
a smooth potential energy plus the negative entropy, a composite objective on the Bures-Wasserstein space
of Gaussians (the space of Gaussians with the 2-Wasserstein metric, see :mod:`driftax.transport.bures`).

**FB-GVI** (Diao, Balasubramanian, Chewi & Salim, "Forward-backward Gaussian variational inference via JKO
in the Bures-Wasserstein space", ICML 2023, Algorithm 1), step size ``h``:

1. forward (a Bures-Wasserstein gradient step on the energy ``E_q[V]``)::

       m+ = m - h E_q[grad V],   M = I - h E_q[hess V],   S_half = M S M

2. backward (the JKO / proximal step of the negative entropy, in closed form, Diao et al. Lemma 1)::

       S+ = 1/2 (S_half + 2 h I + [S_half (S_half + 4 h I)]^{1/2})

   i.e. each eigenvalue ``s`` of ``S_half`` becomes ``(s + 2h + sqrt(s (s + 4h))) / 2 >= h``, so ``S+`` is
   positive definite for every ``h > 0`` and every (even indefinite) Hessian, without any clipping. It is the
   minimiser of ``-log det S' / 2 + W2^2(N(0, S'), N(0, S_half)) / (2h)`` over Gaussians (tested against
   numerical optimisation). Here ``S_half = (M C)(M C)^T`` is formed as a Gram matrix of the current
   square-root factor ``C`` (``S = C C^T``), so it is positive semi-definite whatever the sign of ``M``'s
   eigenvalues, and its symmetric eigendecomposition ``V diag(s) V^T`` gives the new factor
   ``V diag(sqrt(phi(s)))``, with ``s_i = |(M C)^T v_i|^2 >= 0`` (no clipping anywhere). The eigen route
   replaced an SVD of ``M C`` that was ~100x slower per step on CPU (LAPACK gesdd against syevd, d = 50) at
   the same accuracy; a Cholesky route cannot give the matrix square root the JKO step needs.

Expectations: ``method="fb"`` (deterministic FB-GVI) uses the degree-3 spherical cubature rule (the ``2d``
points ``m ± sqrt(d) C e_i``, equal weights; Arasaratnam & Haykin 2009; ``C`` the
principal-axes factor ``U diag(sqrt(lambda))`` of ``S``, kept as the state, so the point set depends on
``(m, S)`` only), exact for polynomial integrands of
degree <= 3: on a Gaussian target ``E[grad V]``, ``E[hess V]`` and ``E[V]`` are exact and FB-GVI converges to
the target itself (linearly, ``W2`` contracting by ``(1 - alpha h)`` per step for an alpha-strongly
log-concave target and ``h <= 1/beta``, Diao et al. Thm. 1). ``method="stochastic_fb"`` replaces them by
``num_samples`` draws ``X ~ q`` per step (Diao et al. Algorithm 2); its last iterate has a noise floor,
removed by ``average="tail"`` (the arithmetic average of ``(m, S)`` over the second half of the iterates).

Hessian: ``hessian="autodiff"`` evaluates ``hess V`` by forward-over-reverse autodiff (counted as ``d``
gradient evaluations); ``hessian="stein"`` uses the gradient-only Stein identity: for ``X = m + C u``,
``u ~ N(0, I)``, ``E[hess V(X)] = C^{-T} E[u grad V(X)^T]`` (Gaussian integration by parts), symmetrised; the
cubature rule keeps it exact on Gaussian targets (on others the cubature Stein form is only an approximation:
on eight schools it did not settle where the autodiff form converged). As a Monte Carlo estimate its noise
grows with ``d`` (``C^{-T} u u^T C^T A`` on a Gaussian target), so the stochastic Stein form wants a batch
(``antithetic`` pairs) and steps far below ``1/beta``.

Step size: for ``h <= 1/beta`` FB-GVI converges to the minimiser; for ``1/beta < h < 2/beta`` the iterates stay
bounded and positive definite but settle at a biased point (on a Gaussian target, the directions of
curvature ``a > 1/h`` end with a variance other than ``1/a``; measured and tested), and for ``h > 2/beta`` the
explicit mean step diverges as gradient descent would. ``step_rule="curvature"`` takes
``h_k = min(h, 1 / lambda_max(A_k))``, ``A_k`` the step's own estimate of ``E_q[hess V]``: on a Gaussian target
(autodiff Hessian, or the cubature rule) it is the theory's ``h = 1/beta`` without knowing ``beta``; where the
curvature falls away from the start (logistic regression: 1890 at 0, 85 near the posterior) the step grows
with the iterates instead of staying at the global bound. It is a rule beyond Diao et al.'s theorem (a
constant ``h <= 1/beta``): no rate is claimed for it. With the stochastic Stein estimate (eigenvalues of either
sign, noise ``~ sqrt(d / N) beta``) it diverged on both benchmark problems (measured): use the autodiff Hessian.

Why FB-GVI from ``N(0, I)`` trailed Adam-based VI on a logistic regression (``benchmarks/bench_gvi.py``,
breast-cancer data, d = 31, W2 to a long NUTS run, medians of 5 seeds; the KL-optimal Gaussian q* is itself 0.18
from NUTS): the step size rule, not the Hessian's noise nor the closed-form proximal step (exact). Its mean step is
unpreconditioned gradient descent on ``E_q[V]``, so a constant ``h <= 1/beta`` with ``beta`` = 1890 (the curvature
at 0, a global bound, 22x the curvature near the posterior) needs ~``kappa`` steps of ``d + 1`` gradients per
e-fold: W2 1.53 after 10,000 gradients. A constant step tuned past the theory (30/beta) first throws the mean out
(W2 20-45 over the first 40 steps, measured), reaching 0.237 at 10,000 (median of 3 seeds; 0.36 for seed 0 alone)
and 1.58 at 2,000. The curvature rule starts at 1/beta and grows to ~1/80 by itself: W2 0.77 (one draw) and 1.01
(antithetic pair) at 2,000, 0.240 (0.228-0.251) at 10,000 (pair, last iterate). There the last iterate is at its
noise floor (0.229-0.230 at 40,000, 2 seeds), while the tail average over the second half still holds the transient
(0.261): ``tail_fraction=0.25`` (the last quarter) gives 0.222 (5 seeds; 0.227, range 0.222-0.232, over the
benchmark's 3), against 0.222 (0.211-0.229) for BlackJAX's full-rank VI at its best Adam rate: level within the seed
spread, not ahead. What remains is the cost of the Hessian: ``d`` gradients per draw, 156 steps against Adam's
10,000. ``init="laplace"`` removes the transient (its L-BFGS search counted): 0.191 at 10,000.

For the stochastic form with the autodiff Hessian, an antithetic pair of draws (``num_samples=2,
antithetic=True``) makes the gradient average exact for a quadratic ``V``: on a Gaussian target the
iteration is then deterministic and converges linearly instead of stalling at a noise floor.

**BW-SGD** (Lambert, Chewi, Bach, Bonnabel & Rigollet, "Variational inference via Wasserstein gradient
flows", NeurIPS 2022): the same mean step, and ``S+ = M S M`` with ``M = I - h (E[hess V] - S^{-1})``: the
explicit Bures-Wasserstein gradient step on the whole KL (``"bw_gd"`` with cubature expectations,
``"bw_sgd"`` with ``num_samples`` draws per step). It needs ``h`` small (``M`` may lose definiteness
and the iterates diverge for large ``h``, where FB-GVI does not).

**Batch-and-match** (Cai, Modi, Pillaud-Vivien, Margossian, Gower, Blei & Saul, "Batch and match: black-box
variational inference with a score-based divergence", ICML 2024, Algorithm 1), gradient-only: with ``B``
draws ``z_b ~ q`` and scores ``g_b = grad log pi(z_b)``, means ``z̄, ḡ``, covariances ``C_z, C_g`` of the
batch and ``lambda`` the step size::

    U = lambda C_g + lambda / (1 + lambda) ḡ ḡ^T,   V = S + lambda C_z + lambda / (1 + lambda) (m - z̄)(m - z̄)^T
    S+ = solution of S+ U S+ + S+ = V = V^{1/2} f(V^{1/2} U V^{1/2}) V^{1/2},  f(mu) = 2 / (1 + sqrt(1 + 4 mu))
    m+ = m / (1 + lambda) + lambda / (1 + lambda) (S+ ḡ + z̄)

(the symmetric form of the paper's ``2 V (I + (I + 4 U V)^{1/2})^{-1}``; ``S+`` is positive definite).

Cost per step: the dense ``d x d`` linear algebra (one symmetric eigendecomposition for FB-GVI and BW-SGD, one more
eigenvalue problem under ``step_rule="curvature"``, three for batch-and-match: ``O(d^3)``) plus the gradients:
``2d`` (``fb``, Stein), ``2d (d + 1)`` (``fb``, autodiff), ``num_samples (d + 1)`` or ``num_samples`` (stochastic
forms), ``B`` (batch-and-match). Dimensions up to a few hundred run on a CPU; ``gaussian_vi(seed=[...])`` fits
several seeds in one compiled, ``vmap``-ed program.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import numbers
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from driftax._checks import check_int, check_real
from driftax.models.base import Target, as_target
from driftax.transport import bures

__all__ = ["gaussian_vi", "GaussianApprox", "jko_entropy_step", "build_step", "hessian_estimates", "VIState",
           "VIInfo", "METHODS"]

METHODS = ("fb", "stochastic_fb", "bw_gd", "bw_sgd", "batch_match")
_DETERMINISTIC = ("fb", "bw_gd")
_DEFAULT_SAMPLES = {"fb": None, "bw_gd": None, "stochastic_fb": 1, "bw_sgd": 1, "batch_match": 10}
_LOG_2PI = math.log(2.0 * math.pi)


# --------------------------------------------------------------------------- the closed-form JKO step
def jko_entropy_step(factor: jax.Array, h) -> jax.Array:
    """Backward step of FB-GVI: a square-root factor of ``S+ = 1/2 (S + 2hI + [S (S + 4hI)]^{1/2})``.

    ``factor`` is any ``C`` with ``S = C C^T``; the result ``C+`` satisfies ``C+ C+^T = S+``, the minimiser
    of ``-1/2 log det S' + W2^2(N(0, S'), N(0, S)) / (2h)`` (Diao et al. 2023, Lemma 1). ``C+ = V diag(sqrt(phi))``
    is the principal-axes factor of ``S+`` (its columns are the eigenvectors scaled by the square roots of
    the eigenvalues). ``V`` comes from the symmetric eigendecomposition of the Gram matrix ``C C^T``, and the
    eigenvalues as the Gram Rayleigh quotients ``s_i = |C^T v_i|^2``: non-negative by construction (no clamp),
    whatever the Hessian step did, and accurate to ``~eps |C| sqrt(s_i)`` like singular values, where eigh's own
    eigenvalues carry an absolute error ``~d eps |S|`` that ``phi(s) ~ h + sqrt(h s)`` would amplify to
    ``sqrt(h d eps |S|)`` near ``s = 0`` (a direction with ``h a = 1``, e.g. ``h = 1/beta``: KL 1e-15 instead
    of 1e-19 measured in float64). Then ``phi(s) = (s + 2h + sqrt(s (s + 4h))) / 2 >= h`` keeps ``S+ >= h I``.
    (An SVD of ``C`` gives the same accuracy, but LAPACK's gesdd was ~100x slower than syevd at d = 50 on the
    CPUs measured.)
    """
    v, s = _gram_eigh(factor)
    phi = 0.5 * (s + 2.0 * h + jnp.sqrt(s * (s + 4.0 * h)))
    return v * jnp.sqrt(phi)


def _gram_eigh(b):
    """Eigenvectors ``V`` of ``B B^T`` (symmetric eigh) and its eigenvalues as ``|B^T v_i|^2 >= 0``."""
    _, v = jnp.linalg.eigh(b @ b.T)
    return v, jnp.sum((b.T @ v) ** 2, axis=0)


@functools.partial(jax.jit, static_argnames=("logdensity_fn", "hessian"))
def hessian_estimates(logdensity_fn: Callable, mean, factor, u, hessian: str = "autodiff") -> jax.Array:
    """Per-point estimates of ``E_q[hess V]`` (``V = -log pi``) at ``x_k = mean + factor u_k``, shape ``(n, d, d)``.
    Compiled (once per log-density, Hessian kind and shapes).

    ``"autodiff"``: ``hess V(x_k)``. ``"stein"``: ``C^{-T} u_k grad V(x_k)^T`` (``C = factor``), unbiased for
    ``u_k ~ N(0, I)`` by Gaussian integration by parts, ``E[u grad V(m + C u)^T] = C^T E[hess V]``; not
    symmetric per point (the methods symmetrise the average).
    """
    x = mean + u @ factor.T
    if hessian == "autodiff":
        return -jax.vmap(jax.jacfwd(jax.grad(logdensity_fn)))(x)
    g = -jax.vmap(jax.grad(logdensity_fn))(x)
    c_inv_t = jnp.linalg.inv(factor).T
    return jnp.einsum("ij,kj,kl->kil", c_inv_t, u, g)


# --------------------------------------------------------------------------- state, info
class VIState(NamedTuple):
    """Iterate of a Bures-Wasserstein VI method (``cov = factor @ factor.T``) and the tail average.

    ``factor`` is always the principal-axes factor ``V diag(sqrt(lambda))`` of ``cov`` (orthogonal columns):
    the steps rely on it for ``C^{-T}`` and ``log det C`` in ``O(d^2)``, and the cubature points then depend on
    ``(m, S)`` only."""
    mean: jax.Array
    factor: jax.Array
    avg_mean: jax.Array
    avg_cov: jax.Array
    avg_count: jax.Array
    finite: jax.Array        # False once a step produced a non-finite iterate (the state is then frozen)
    step: jax.Array


class VIInfo(NamedTuple):
    """Per-step diagnostics: ELBO estimate ``E_q[log pi] + H(q)`` (= log Z - KL(q | pi)), the norm of the
    Bures-Wasserstein gradient of the KL estimated at the step's points, whether the step was finite, and the
    step size it took (``step_size``, or the curvature rule's ``h_k``)."""
    elbo: jax.Array
    grad_norm: jax.Array
    finite: jax.Array
    step_size: jax.Array


def _cubature(d, dtype):
    """The ``2d`` points ``± sqrt(d) e_i`` of the degree-3 spherical cubature rule for ``N(0, I_d)``."""
    e = jnp.sqrt(jnp.asarray(d, dtype)) * jnp.eye(d, dtype=dtype)
    return jnp.concatenate([e, -e], axis=0)


def _principal_root(factor):
    """The principal-axes factor ``V diag(sqrt(w))`` of ``F F^T = V diag(w) V^T`` (unique up to column signs
    and order, to which the symmetric cubature point set is blind); ``w`` as Gram Rayleigh quotients (see
    :func:`jko_entropy_step`). A singular ``F`` gives a zero column, caught downstream as a non-finite
    inverse."""
    v, w = _gram_eigh(factor)
    return v * jnp.sqrt(w)


# Every factor a method carries is a principal-axes factor C = V diag(sqrt(lambda)) (orthogonal columns), so
# S = C C^T has eigenvalues lambda = the squared column norms, C^{-T} = V diag(lambda^{-1/2}) = C diag(1/lambda)
# and log det C = 1/2 sum log lambda: O(d^2) instead of an LU factorisation per step.
def _axes_eigs(factor):
    return jnp.sum(factor * factor, axis=0)


def _inv_t(factor):
    """``C^{-T}`` of a principal-axes factor (orthogonal columns)."""
    return factor / _axes_eigs(factor)


def _entropy(factor):
    d = factor.shape[0]
    return 0.5 * d * (1.0 + _LOG_2PI) + 0.5 * jnp.sum(jnp.log(_axes_eigs(factor)))


def _stein_hessian(factor, u, grad_v):
    """Symmetrised Stein estimate ``C^{-T} mean_k(u_k grad V(x_k)^T)`` of ``E_q[hess V]`` (principal-axes ``C``)."""
    e_hess = _inv_t(factor) @ (u.T @ grad_v / u.shape[0])
    return 0.5 * (e_hess + e_hess.T)


def _moments(logdensity_fn, u, mean, factor, hessian):
    """``E[V]``, ``E[grad V]`` and the symmetrised ``E[hess V]`` (autodiff or Stein) over the points
    ``m + C u_k`` (the cubature rule or Monte Carlo draws), equal weights."""
    x = mean + u @ factor.T
    if hessian == "autodiff":
        def grad_aux(y):
            v, g = jax.value_and_grad(logdensity_fn)(y)
            return g, (v, g)
        # forward-over-reverse Hessian; the value and gradient come out of the same pass as auxiliary outputs
        hess, (logp, score) = jax.vmap(jax.jacfwd(grad_aux, has_aux=True))(x)
        e_hess = -jnp.mean(hess, axis=0)
        e_hess = 0.5 * (e_hess + e_hess.T)
    else:
        logp, score = jax.vmap(jax.value_and_grad(logdensity_fn))(x)
        e_hess = _stein_hessian(factor, u, -score)
    return -jnp.mean(logp), -jnp.mean(score, axis=0), e_hess


def _bw_grad_norm(e_grad, e_hess, factor):
    """L2(q) norm of the Bures-Wasserstein gradient ``x -> E grad V + (E hess V - S^{-1})(x - m)`` of the KL:
    ``|E grad V|^2 + tr((A - S^{-1}) S (A - S^{-1})) = |E grad V|^2 + |A C - C^{-T}|_F^2`` (``S = C C^T``)."""
    r = e_hess @ factor - _inv_t(factor)
    return jnp.sqrt(jnp.sum(e_grad**2) + jnp.sum(r * r))


def build_step(logdensity_fn: Callable, dim: int, method: str, step_size, *, num_samples: int | None = None,
               hessian: str = "autodiff", average_start: int | None = None, antithetic: bool = False,
               step_rule: str = "constant", dtype=jnp.float32):
    """The pure step ``(key, VIState) -> (VIState, VIInfo)`` of a method (see the module docstring).

    ``average_start``: the step from which ``(m, S)`` enter the tail average (``None``: no averaging).
    ``antithetic``: the ``num_samples`` (even) draws come in pairs ``u, -u``.
    ``step_rule``: ``"constant"`` (``h = step_size``) or ``"curvature"`` (FB-GVI only:
    ``h_k = min(step_size, 1 / lambda_max(A_k))`` with ``A_k`` the step's own estimate of ``E_q[hess V]``).
    Jit/vmap-able; a step whose new iterate is not finite (or whose mean or covariance factor exceeds
    ``1/eps`` in magnitude) leaves the state as it was and clears ``state.finite`` (so divergence is
    reported, never propagated as NaN).
    """
    d = dim
    eye = jnp.eye(d, dtype=dtype)
    h = jnp.asarray(step_size, dtype)
    score_and_value = jax.value_and_grad(logdensity_fn)

    def normals(key):
        if method in _DETERMINISTIC:
            return _cubature(d, dtype)
        if antithetic:
            z = jax.random.normal(key, (num_samples // 2, d), dtype)
            return jnp.concatenate([z, -z], axis=0)
        return jax.random.normal(key, (num_samples, d), dtype)

    def moments(u, mean, factor):
        return _moments(logdensity_fn, u, mean, factor, hessian)

    def fb_update(key, state):
        u = normals(key)
        e_v, e_grad, e_hess = moments(u, state.mean, state.factor)
        elbo = -e_v + _entropy(state.factor)
        hk = h
        if step_rule == "curvature":
            # h <= 1/beta with beta the largest curvature this step sees (module docstring, "Step size"); a
            # non-positive lambda_max (no curvature seen) leaves the cap h
            top = jnp.linalg.eigvalsh(e_hess)[-1]
            hk = jnp.where(top > 0, jnp.minimum(h, 1.0 / jnp.where(top > 0, top, 1.0)), h)
        mean = state.mean - hk * e_grad
        m_mat = eye - hk * e_hess
        factor = jko_entropy_step(m_mat @ state.factor, hk)
        return mean, factor, elbo, _bw_grad_norm(e_grad, e_hess, state.factor), hk

    def bw_update(key, state):
        u = normals(key)
        e_v, e_grad, e_hess = moments(u, state.mean, state.factor)
        elbo = -e_v + _entropy(state.factor)
        c_inv_t = _inv_t(state.factor)
        prec = c_inv_t @ c_inv_t.T
        mean = state.mean - h * e_grad
        m_mat = eye - h * (e_hess - 0.5 * (prec + prec.T))
        return mean, _principal_root(m_mat @ state.factor), elbo, _bw_grad_norm(e_grad, e_hess, state.factor), h

    def bam_update(key, state):
        lam = h
        u = normals(key)
        z = state.mean + u @ state.factor.T
        logp, g = jax.vmap(score_and_value)(z)
        elbo = jnp.mean(logp) + _entropy(state.factor)
        zbar, gbar = jnp.mean(z, 0), jnp.mean(g, 0)
        zc, gc = z - zbar, g - gbar
        b = z.shape[0]
        cz, cg = zc.T @ zc / b, gc.T @ gc / b
        r = lam / (1.0 + lam)
        u_mat = lam * cg + r * jnp.outer(gbar, gbar)
        dm = state.mean - zbar
        cov = state.factor @ state.factor.T
        v_mat = cov + lam * cz + r * jnp.outer(dm, dm)
        v_mat = 0.5 * (v_mat + v_mat.T)
        wv, qv = jnp.linalg.eigh(v_mat)
        v_half = (qv * jnp.sqrt(jnp.clip(wv, 0.0))) @ qv.T
        mu, qm = jnp.linalg.eigh(0.5 * (v_half @ u_mat @ v_half + (v_half @ u_mat @ v_half).T))
        f = 2.0 / (1.0 + jnp.sqrt(1.0 + 4.0 * jnp.clip(mu, 0.0)))
        factor = _principal_root(v_half @ (qm * jnp.sqrt(f)))
        new_cov = factor @ factor.T
        mean = state.mean / (1.0 + lam) + r * (new_cov @ gbar + zbar)
        # gradient norm from the batch: Stein estimate of E hess V (gradient-only, as the method)
        return mean, factor, elbo, _bw_grad_norm(-gbar, _stein_hessian(state.factor, u, -g), state.factor), lam

    update = {"fb": fb_update, "stochastic_fb": fb_update, "bw_gd": bw_update, "bw_sgd": bw_update,
              "batch_match": bam_update}[method]

    def step(key, state: VIState):
        mean, factor, elbo, gnorm, hk = update(key, state)
        # divergence: a non-finite iterate, or a covariance factor beyond 1/eps (all relative precision of
        # the iterate lost; continuing would only feed overflow to the SVD)
        big = 1.0 / jnp.finfo(dtype).eps
        ok = (state.finite & jnp.all(jnp.isfinite(mean)) & jnp.all(jnp.isfinite(factor))
              & (jnp.max(jnp.abs(factor)) <= big) & (jnp.max(jnp.abs(mean)) <= big))
        mean = jnp.where(ok, mean, state.mean)
        factor = jnp.where(ok, factor, state.factor)
        cov = factor @ factor.T
        if average_start is None:
            avg_mean, avg_cov, count = state.avg_mean, state.avg_cov, state.avg_count
        else:
            take = ok & (state.step >= average_start)
            count = state.avg_count + take.astype(state.avg_count.dtype)
            w = jnp.where(take, 1.0 / jnp.maximum(count, 1).astype(dtype), 0.0)
            avg_mean = state.avg_mean + w * (mean - state.avg_mean)
            avg_cov = state.avg_cov + w * (cov - state.avg_cov)
        new = VIState(mean, factor, avg_mean, avg_cov, count, ok, state.step + 1)
        return new, VIInfo(elbo, gnorm, ok, jnp.asarray(hk, dtype))

    return step


def _grad_evals_per_step(method, d, num_samples, hessian):
    points = 2 * d if method in _DETERMINISTIC else num_samples
    if method == "batch_match" or hessian == "stein":
        return points
    return points * (d + 1)


# --------------------------------------------------------------------------- the result
@dataclasses.dataclass(frozen=True, eq=False)
class GaussianApprox:
    """A Gaussian approximation ``N(mean, cov)`` of a target, in the target's unconstrained space.

    ``chol`` is the lower Cholesky factor of ``cov``. ``history`` holds per-step arrays ``elbo`` (``E_q[log pi] +
    H(q)``, i.e. ``log Z - KL(q | pi)``), ``grad_norm`` (Bures-Wasserstein gradient norm of the KL, estimated at the
    step's points), ``step_size`` (the step size each step took) and ``grad_evals`` (cumulative gradient
    evaluations, an autodiff Hessian counting as ``d``). ``converged``: every step finite and the gradient norm at
    the returned approximation, by the cubature rule with the method's Hessian (Stein for batch-and-match; ``2d`` or
    ``2d (d + 1)`` extra gradients, not counted in ``grad_evals``), at most ``tol``: stationarity of the KL, exact
    on Gaussian targets (batch-and-match minimises a score-based divergence instead, so on other targets it may stop
    short of this criterion); ``None`` when the fit ran with ``tol=None``. ``diverged``: some step produced a
    non-finite iterate (the iterate before it is returned). ``init_grad_evals``: the gradient evaluations of
    ``init="laplace"`` (0 otherwise), included in ``grad_evals`` and ``history["grad_evals"]``. With
    ``average="tail"`` ``mean``/``cov`` are the tail average and ``last_mean``/``last_cov`` the last iterate.
    """

    mean: np.ndarray
    cov: np.ndarray
    chol: np.ndarray
    method: str
    converged: bool | None
    diverged: bool
    num_steps: int
    grad_evals: int
    final_grad_norm: float
    history: dict
    last_mean: np.ndarray
    last_cov: np.ndarray
    target: Target | None = dataclasses.field(default=None, repr=False)
    init_grad_evals: int = 0

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    def sample(self, key, n: int) -> jax.Array:
        """``(n, d)`` draws ``mean + chol z``, ``z = jax.random.normal(key, (n, d))``."""
        n = check_int("n", n, minimum=1)
        mean = jnp.asarray(self.mean)
        return _sample_gaussian(key, mean, jnp.asarray(self.chol, mean.dtype), n)

    def logpdf(self, x) -> jax.Array:
        """``log N(x; mean, cov)`` for ``x`` of shape ``(d,)`` or ``(n, d)``."""
        x = jnp.asarray(x)
        if x.shape[-1:] != (self.dim,):
            raise ValueError(f"x must have last dimension {self.dim}, got shape {x.shape}")
        dt = x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else None
        out = _gaussian_logpdf(x.reshape(-1, self.dim), jnp.asarray(self.mean, dt), jnp.asarray(self.chol, dt))
        return out.reshape(x.shape[:-1])

    def kl_to_gaussian(self, mean, cov) -> float:
        """``KL(N(self.mean, self.cov) | N(mean, cov))`` in float64, evaluated as
        ``1/2 [sum_i (a_i - 1 - log a_i) + |L^{-1} (m - mean)|^2]`` with ``a_i`` the eigenvalues of
        ``L^{-1} cov_self L^{-T}`` (``cov = L L^T``) and ``a - 1 - log a = x - log1p(x)`` (no cancellation
        of ``d`` against traces)."""
        mean, cov = _check_gaussian(mean, cov, self.dim, "mean", "cov")
        return _kl_gaussian(self.mean, self.cov, mean, cov)

    def w2_to(self, mean, cov) -> float:
        """2-Wasserstein distance to ``N(mean, cov)`` (:func:`driftax.transport.bures.w2`, float64)."""
        mean, cov = _check_gaussian(mean, cov, self.dim, "mean", "cov")
        with jax.enable_x64(True):
            return float(bures.w2(np.asarray(self.mean, np.float64), np.asarray(self.cov, np.float64), mean, cov))

    def to_inference_data(self, num_samples: int = 4000, seed: int = 0, num_chains: int = 1):
        """Draws of ``q`` as ArviZ data in the model's constrained space (``target.constrain``, so a NumPyro
        target gives its named sites), with ``sample_stats.lp`` the target log-density at the draws and
        ``log_weight = log pi - log q`` (unnormalised importance weights, e.g. for PSIS diagnostics). The
        draws are ``mean + chol z`` with ``z`` from ``numpy.random.default_rng(seed)`` (chains are consecutive
        blocks of ``num_samples``)."""
        from driftax.infer import diagnostics

        num_samples = check_int("num_samples", num_samples, minimum=1)
        num_chains = check_int("num_chains", num_chains, minimum=1)
        seed = check_int("seed", seed, minimum=0)
        target = self.target
        # draws and log q on the host (float64, NumPy): no device programs beyond the target's own
        n = num_samples * num_chains
        z = np.random.default_rng(seed).standard_normal((n, self.dim))
        x = self.mean + z @ self.chol.T
        logq = -0.5 * np.sum(z * z, axis=1) - np.sum(np.log(np.diag(self.chol))) - 0.5 * self.dim * _LOG_2PI
        if target is None:
            post, lp = {"x": x}, None
        else:
            post, lp = _constrain_program(target.constrain, target.logdensity_fn)(jnp.asarray(x))
        post = {k: np.asarray(v).reshape((num_chains, num_samples) + tuple(np.shape(v)[1:])) for k, v in post.items()}
        stats = {}
        if target is not None:
            lp = np.asarray(lp, np.float64)
            stats["lp"] = lp.reshape(num_chains, num_samples)
            stats["log_weight"] = (lp - logq).reshape(num_chains, num_samples)
        dims = dict(target.dims) if target is not None and target.dims else None
        return diagnostics.to_inference_data(post, stats, attrs={"method": f"gaussian_vi:{self.method}"}, dims=dims)


@functools.partial(jax.jit, static_argnums=3)
def _sample_gaussian(key, mean, chol, n):
    return mean + jax.random.normal(key, (n, mean.shape[0]), mean.dtype) @ chol.T


@jax.jit
def _gaussian_logpdf(x, mean, chol):
    z = jax.scipy.linalg.solve_triangular(chol, (x - mean).T, lower=True)
    return -0.5 * jnp.sum(z * z, axis=0) - jnp.sum(jnp.log(jnp.diag(chol))) - 0.5 * mean.shape[0] * _LOG_2PI


@functools.lru_cache(maxsize=16)
def _constrain_program(constrain, logdensity_fn):
    """One compiled program for the constrained draws and the target log-density at them."""
    return jax.jit(jax.vmap(lambda x: (constrain(x), logdensity_fn(x))))


def _kl_gaussian(m1, s1, m2, s2) -> float:
    """``KL(N(m1, s1) | N(m2, s2))`` in float64 (``s2`` positive definite), as
    ``1/2 [sum_i (a_i - 1 - log a_i) + |L^{-1} (m1 - m2)|^2]`` with ``a_i`` the eigenvalues of ``L^{-1} s1 L^{-T}``
    (``s2 = L L^T``) and ``a - 1 - log a = x - log1p(x)``: no cancellation of ``d`` against traces. ``inf`` when
    ``s1`` is singular or not finite (no density: the KL is infinite)."""
    m1, s1, m2, s2 = (np.asarray(a, np.float64) for a in (m1, s1, m2, s2))
    lc = np.linalg.cholesky(s2)
    if not np.all(np.isfinite(s1)) or not np.all(np.isfinite(m1)):
        return float("inf")
    try:
        np.linalg.cholesky(0.5 * (s1 + s1.T))
    except np.linalg.LinAlgError:
        return float("inf")
    y = np.linalg.solve(lc, np.linalg.solve(lc, s1).T)
    a = np.linalg.eigvalsh(0.5 * (y + y.T))
    if np.any(a <= 0):
        return float("inf")
    x = a - 1.0
    dm = np.linalg.solve(lc, m1 - m2)
    return float(0.5 * (np.sum(x - np.log1p(x)) + dm @ dm))


def _check_gaussian(mean, cov, d, mname, cname):
    mean = np.asarray(mean, np.float64)
    cov = np.asarray(cov, np.float64)
    if mean.shape != (d,):
        raise ValueError(f"{mname} must have shape ({d},), got {mean.shape}")
    if cov.shape != (d, d):
        raise ValueError(f"{cname} must have shape ({d}, {d}), got {cov.shape}")
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(cov))):
        raise ValueError(f"{mname} and {cname} must be finite")
    if not np.allclose(cov, cov.T, rtol=1e-6, atol=1e-12 * max(np.abs(cov).max(), 1e-300)):
        raise ValueError(f"{cname} must be symmetric")
    cov = 0.5 * (cov + cov.T)
    try:
        np.linalg.cholesky(cov)
    except np.linalg.LinAlgError:
        raise ValueError(f"{cname} must be positive definite (smallest eigenvalue "
                         f"{np.linalg.eigvalsh(cov)[0]:.3g})") from None
    return mean, cov


# --------------------------------------------------------------------------- initialisation
def _laplace(target: Target, dtype, max_iter: int = 500):
    """Laplace approximation: the mode by L-BFGS (optax, zoom line search) from 0, stopped when the gradient
    norm falls below ``sqrt(eps) (1 + |V(x)|)`` or after ``max_iter`` iterations, and the inverse Hessian of
    ``V`` there. Returns ``(mean, cov, grad_evals)``: every value-and-gradient evaluation of the search (one per
    line-search trial) plus ``d`` for the autodiff Hessian, so that a fit started here is counted honestly."""
    mean, hess, evals = _laplace_program(target.logdensity_fn, target.dim, jnp.dtype(dtype).name, max_iter)()
    x = np.asarray(mean, np.float64)
    hess = np.asarray(hess, np.float64)
    if not np.all(np.isfinite(hess)) or not np.all(np.isfinite(x)):
        raise ValueError("init='laplace': the mode search or the Hessian at the mode is not finite")
    hess = 0.5 * (hess + hess.T)
    w, v = np.linalg.eigh(hess)
    if w[0] <= 0:
        raise ValueError(f"init='laplace': the negative log-density is not convex at the mode found "
                         f"(smallest Hessian eigenvalue {w[0]:.3g}); pass init=(mean, cov)")
    return x, (v / w) @ v.T, int(evals) + target.dim


@functools.lru_cache(maxsize=16)
def _laplace_program(logdensity_fn, d, dtype_name, max_iter):
    import optax
    import optax.tree_utils as otu

    dtype = jnp.dtype(dtype_name)
    f = lambda x: -logdensity_fn(x)  # noqa: E731
    opt = optax.lbfgs()
    vg = optax.value_and_grad_from_state(f)
    tol = jnp.sqrt(jnp.finfo(dtype).eps)

    def cond(carry):
        x, st, k, evals = carry
        g = otu.tree_get(st, "grad")
        v = otu.tree_get(st, "value")
        small = jnp.linalg.norm(g) <= tol * (1.0 + jnp.abs(v))
        return (k < max_iter) & ~(small & (k > 0))

    def body(carry):
        x, st, k, evals = carry
        v, g = vg(x, state=st)
        upd, st = opt.update(g, st, x, value=v, grad=g, value_fn=f)
        # value_and_grad_from_state reuses the line search's last evaluation (fresh only at k = 0); each
        # line-search trial is one value-and-gradient evaluation
        evals = evals + (k == 0) + otu.tree_get(st, "num_linesearch_steps")
        return optax.apply_updates(x, upd), st, k + 1, evals

    def run():
        x0 = jnp.zeros(d, dtype)
        x, _, _, evals = lax.while_loop(cond, body, (x0, opt.init(x0), jnp.asarray(0), jnp.asarray(0)))
        return x, jax.hessian(f)(x), evals

    return jax.jit(run)


def _initial(target: Target, init, dtype):
    d = target.dim
    if init is None:
        return np.zeros(d), np.eye(d), 0
    if isinstance(init, str):
        if init != "laplace":
            raise ValueError(f"init must be None, 'laplace' or a pair (mean, cov), got {init!r}")
        return _laplace(target, dtype)
    if not isinstance(init, (tuple, list)) or len(init) != 2:
        raise TypeError(f"init must be None, 'laplace' or a pair (mean, cov), got {type(init).__name__}")
    return (*_check_gaussian(init[0], init[1], d, "init mean", "init cov"), 0)


def _start_values(logdensity_fn, mean, hessian_needed):
    """``(log pi, #non-finite gradient entries, #non-finite Hessian entries)`` at the initial mean, for the
    boundary check of :func:`gaussian_vi`. Evaluated inside the first compiled chunk (a ``lax.cond`` on the
    chunk index, so later chunks skip it) rather than as a program of its own: one compilation fewer per fit."""
    v, g = jax.value_and_grad(logdensity_fn)(mean)
    bad_h = (jnp.sum(~jnp.isfinite(jax.hessian(logdensity_fn)(mean))) if hessian_needed
             else jnp.zeros((), jnp.int32))
    return v.astype(mean.dtype), jnp.sum(~jnp.isfinite(g)).astype(jnp.int32), bad_h.astype(jnp.int32)


def _check_start(v, bad_g, bad_h):
    if not np.isfinite(float(v)):
        raise ValueError(f"the target log-density is not finite at the initial mean ({float(v)})")
    if bad_g:
        raise ValueError("the target gradient is not finite at the initial mean")
    if bad_h:
        raise ValueError(f"the target Hessian is not finite at the initial mean ({int(bad_h)} non-finite entries)")


# --------------------------------------------------------------------------- the driver
def _seeds(seed):
    if isinstance(seed, (bool, np.bool_)):
        raise TypeError("seed must be an integer or a sequence of integers, got bool")
    if isinstance(seed, numbers.Integral):
        return [check_int("seed", int(seed), minimum=0)], False
    if isinstance(seed, (list, tuple, np.ndarray)) and len(seed) > 0:
        return [check_int("seed", int(s) if isinstance(s, np.integer) else s, minimum=0) for s in seed], True
    raise TypeError(f"seed must be an integer or a non-empty sequence of integers, got {seed!r}")


def gaussian_vi(target, method: str = "fb", *, num_steps: int, step_size: float,
                num_samples: int | None = None, hessian: str = "autodiff", average: str | None = None,
                init=None, seed: int | Sequence[int] = 0, tol: float | None = 1e-3, progress: bool = False,
                chunk_size: int | None = None, antithetic: bool = False, step_rule: str = "constant",
                tail_fraction: float = 0.5):
    """Fit ``N(m, S)`` to ``target`` by a Bures-Wasserstein method; returns a :class:`GaussianApprox`
    (a list of them when ``seed`` is a sequence: one compiled program ``vmap``-ed over the seeds).

    Parameters
    ----------
    target
        A :class:`~driftax.models.Target` (or a log-density with ``dim`` through ``as_target``).
    method
        ``"fb"`` (deterministic FB-GVI, cubature expectations), ``"stochastic_fb"`` (FB-GVI with
        ``num_samples`` draws per step), ``"bw_gd"``/``"bw_sgd"`` (Lambert et al.'s Bures-Wasserstein
        gradient descent, cubature / ``num_samples`` draws per step), ``"batch_match"`` (batch-and-match with
        batch size ``num_samples``, default 10; ``step_size`` is its ``lambda``). See the module docstring for the updates and references.
    num_steps, step_size
        Iterations and the step size ``h`` (> 0; FB-GVI is stable for any ``h``, its theory asks
        ``h <= 1/beta`` for a ``beta``-smooth ``V``). With ``step_rule="curvature"`` it is the cap.
    step_rule
        ``"constant"`` (the paper's fixed ``h``) or ``"curvature"`` (``fb``/``stochastic_fb`` only): step ``k``
        takes ``h_k = min(step_size, 1 / lambda_max(A_k))``, ``A_k`` its own estimate of ``E_q[hess V]`` (no
        extra gradients; one ``d x d`` eigenvalue problem): the theory's ``h = 1/beta`` with ``beta`` the
        curvature where ``q`` is, not a global bound (module docstring, "Step size"). ``history["step_size"]``
        records ``h_k``.
    num_samples
        Draws per step of the stochastic methods (default 1; 10 for batch-and-match). Not used by ``"fb"``.
    hessian
        ``"autodiff"`` or ``"stein"`` (gradient-only) for ``fb``, ``stochastic_fb`` and ``bw_sgd``.
    average, tail_fraction
        ``None`` or ``"tail"``: return the average of ``(m, S)`` over the last ``tail_fraction`` of the
        iterates (``ceil(tail_fraction num_steps)`` of them; default 0.5, the second half). A shorter tail
        leaves out more of a transient that is still decaying at mid-run, at the price of averaging fewer
        (noisier) iterates.
    init
        ``None`` (``N(0, I)``), ``"laplace"`` (mode by L-BFGS from 0 and the inverse Hessian there; its
        gradient evaluations, the Hessian's counted as ``d``, are added to ``grad_evals`` and reported as
        ``init_grad_evals``) or ``(mean, cov)``.
    seed
        Integer seed, or a sequence of seeds (vmapped fits).
    tol
        Convergence threshold on the Bures-Wasserstein gradient norm at the result (see
        :class:`GaussianApprox`). ``None`` skips that final check (``converged`` is then ``None``): it costs
        ``2d`` gradients (``2d (d + 1)`` with the autodiff Hessian) and one more compilation, which a timed
        benchmark or a short fit may not want.
    antithetic
        Draw the ``num_samples`` (even) points of a stochastic step in pairs ``m ± C u``: the gradient average
        is then exact for a quadratic ``V`` and the Stein Hessian loses its first-order noise term
        ``C^{-T} u E[grad V]^T``; the remaining noise of the gradient-only Stein form still grows with ``d``
        (``C^{-T} u u^T C^T A`` on a Gaussian target), so it needs smaller steps than the autodiff form.
    progress, chunk_size
        A tqdm bar advanced between compiled chunks of at most ``chunk_size`` steps (default: the power of
        two at or above ``num_steps / 20``; the step count of a chunk is traced, so fits of other lengths and
        step sizes reuse the compiled program); the results do not depend on either (step ``t`` uses
        ``fold_in(key, t)``).

    Raises ``ValueError``/``TypeError`` naming the argument for bad input, and ``ValueError`` when the
    log-density, its gradient or its Hessian is not finite at the initial mean.
    """
    target = as_target(target)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    num_steps = check_int("num_steps", num_steps, minimum=1)
    h = check_real("step_size", step_size, positive=True)
    if hessian not in ("autodiff", "stein"):
        raise ValueError(f"hessian must be 'autodiff' or 'stein', got {hessian!r}")
    if average not in (None, "tail"):
        raise ValueError(f"average must be None or 'tail', got {average!r}")
    tail_fraction = check_real("tail_fraction", tail_fraction, positive=True)
    if tail_fraction > 1:
        raise ValueError(f"tail_fraction must be in (0, 1], got {tail_fraction}")
    if tail_fraction != 0.5 and average is None:
        raise ValueError("tail_fraction is used only with average='tail'")
    if num_samples is None:
        num_samples = _DEFAULT_SAMPLES[method]
    elif method in _DETERMINISTIC:
        raise ValueError(f"num_samples is not used by method={method!r} (cubature expectations); "
                         "use method='stochastic_fb' or 'bw_sgd' for sampled expectations")
    else:
        num_samples = check_int("num_samples", num_samples, minimum=1)
    if tol is not None:
        tol = check_real("tol", tol, nonnegative=True)
    if step_rule not in ("constant", "curvature"):
        raise ValueError(f"step_rule must be 'constant' or 'curvature', got {step_rule!r}")
    if step_rule == "curvature" and method not in ("fb", "stochastic_fb"):
        raise ValueError(f"step_rule='curvature' applies to method 'fb' or 'stochastic_fb', got {method!r}")
    if not isinstance(antithetic, bool):
        raise TypeError(f"antithetic must be a bool, got {type(antithetic).__name__}")
    if antithetic and (method in _DETERMINISTIC or num_samples % 2):
        raise ValueError(f"antithetic=True needs a stochastic method and an even num_samples, got method "
                         f"{method!r} and num_samples {num_samples}")
    seeds, batched = _seeds(seed)
    if chunk_size is None:
        # a power of two >= num_steps / 20: at most 20 chunks, and run lengths share compiled programs
        chunk_size = 1 << max(0, (-(-num_steps // 20) - 1).bit_length())
    chunk_size = check_int("chunk_size", chunk_size, minimum=1)
    dtype = jnp.result_type(float)
    d = target.dim

    mean0, cov0, init_evals = _initial(target, init, dtype)
    w0, v0 = np.linalg.eigh(cov0)
    factor0 = v0 * np.sqrt(w0)      # principal axes: the cubature points depend on (m, S) only
    average_start = num_steps - math.ceil(tail_fraction * num_steps) if average == "tail" else None
    chunk_fn = _chunk_program(target.logdensity_fn, d, method, num_samples, hessian, average_start is not None,
                              antithetic, step_rule, hessian == "autodiff" and method != "batch_match",
                              jnp.dtype(dtype).name)
    n = len(seeds)
    np_dtype = np.dtype(jnp.dtype(dtype).name)
    # initial state and keys built on the host: no eager device ops before the one compiled program
    state = VIState(np.broadcast_to(np.asarray(mean0, np_dtype), (n, d)),
                    np.broadcast_to(np.asarray(factor0, np_dtype), (n, d, d)),
                    np.zeros((n, d), np_dtype), np.zeros((n, d, d), np_dtype), np.zeros(n, np.int32),
                    np.ones(n, bool), np.zeros(n, np.int32))
    keys = np.asarray(_seed_keys(tuple(seeds)))
    h_arr = np.asarray(h, np_dtype)
    avg_start = np.asarray(num_steps if average_start is None else average_start, np.int32)
    infos = []
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=num_steps, unit="step", dynamic_ncols=True, desc=f"gaussian_vi[{method}]")
    done = 0
    while done < num_steps:
        # the chunk's step count is a traced loop bound (capacity chunk_size): one compiled program, no wasted steps
        length = min(chunk_size, num_steps - done)
        state, info, start = chunk_fn(keys, state, h_arr, np.asarray(length, np.int32), avg_start,
                                      np.asarray(done == 0), chunk_size)
        if done == 0:
            # the boundary check of the start (log-density, gradient, Hessian finite at the initial mean), raised
            # here after the first chunk: its steps from a non-finite start only froze the state
            _check_start(*(np.asarray(a)[0] for a in start))
        infos.append(jax.tree.map(lambda x: np.asarray(x)[:, :length], info))
        done += length
        if bar is not None:
            bar.update(length)
    if bar is not None:
        bar.close()
    info = jax.tree.map(lambda *xs: np.concatenate(xs, axis=1), *infos)

    per_step = _grad_evals_per_step(method, d, num_samples, hessian)
    out = []
    final_check = None
    if tol is not None:
        final_check = _final_check_program(target.logdensity_fn, "stein" if method == "batch_match" else hessian)
    for i in range(len(seeds)):
        st = jax.tree.map(lambda x: np.asarray(x[i]), state)
        last_mean = st.mean.astype(np.float64)
        last_cov = (st.factor @ st.factor.T).astype(np.float64)
        if average == "tail" and st.avg_count > 0:
            mean, cov = st.avg_mean.astype(np.float64), st.avg_cov.astype(np.float64)
        else:
            mean, cov = last_mean, last_cov
        cov = 0.5 * (cov + cov.T)
        try:
            chol = np.linalg.cholesky(cov)
        except np.linalg.LinAlgError:  # only reachable for a BW-SGD iterate that lost definiteness
            chol = np.full_like(cov, np.nan)
        finite = bool(st.finite)
        gnorm = float("nan")
        if final_check is not None and np.all(np.isfinite(chol)):
            w, v = np.linalg.eigh(cov)
            root = v * np.sqrt(np.clip(w, 0.0, None))
            gnorm = float(final_check(jnp.asarray(mean, dtype), jnp.asarray(root, dtype)))
        hist = {"elbo": info.elbo[i].astype(np.float64), "grad_norm": info.grad_norm[i].astype(np.float64),
                "step_size": info.step_size[i].astype(np.float64),
                "grad_evals": init_evals + per_step * np.arange(1, num_steps + 1)}
        out.append(GaussianApprox(
            mean=mean, cov=cov, chol=chol, method=method,
            converged=None if tol is None else bool(finite and gnorm <= tol),
            diverged=not finite, num_steps=num_steps, grad_evals=init_evals + per_step * num_steps,
            final_grad_norm=gnorm, history=hist, last_mean=last_mean, last_cov=last_cov, target=target,
            init_grad_evals=init_evals))
    return out if batched else out[0]


@functools.lru_cache(maxsize=8)
def _seed_keys(seeds):
    return jnp.stack([jax.random.key_data(jax.random.key(s)) for s in seeds])


@functools.lru_cache(maxsize=64)
def _chunk_program(logdensity_fn, d, method, num_samples, hessian, averaging, antithetic, step_rule,
                   hessian_needed, dtype_name):
    """The compiled chunk ``(keys, states, h, length, average_start, first, capacity) -> (states, infos, start)``,
    vmapped over seeds: ``length <= capacity`` steps (a traced loop bound), their diagnostics in buffers of the
    static ``capacity``, and, when ``first``, the start values of :func:`_start_values` at the incoming mean. The
    step size, the step count and the start of the average are traced, so one compiled program (per capacity)
    serves every step size and run length of a target and method: a step-size grid or a budget sweep compiles
    once."""
    dtype = jnp.dtype(dtype_name)

    def run_chunk(key_data, state, h, length, average_start, first, capacity):
        key = jax.random.wrap_key_data(key_data)
        step = build_step(logdensity_fn, d, method, h, num_samples=num_samples, hessian=hessian,
                          average_start=average_start if averaging else None, antithetic=antithetic,
                          step_rule=step_rule, dtype=dtype)

        def body(i, carry):
            s, buf = carry
            s, info = step(jax.random.fold_in(key, s.step), s)
            return s, jax.tree.map(lambda b, x: b.at[i].set(x), buf, info)
        buf = VIInfo(jnp.zeros(capacity, dtype), jnp.zeros(capacity, dtype), jnp.zeros(capacity, bool),
                     jnp.zeros(capacity, dtype))
        # `first` is not batched, so under vmap this stays a conditional: later chunks skip the Hessian
        start = lax.cond(first, lambda m: _start_values(logdensity_fn, m, hessian_needed),
                         lambda m: (jnp.zeros((), dtype), jnp.zeros((), jnp.int32), jnp.zeros((), jnp.int32)),
                         state.mean)
        state, buf = lax.fori_loop(0, length, body, (state, buf))
        return state, buf, start

    return jax.jit(jax.vmap(run_chunk, in_axes=(0, 0, None, None, None, None, None)), static_argnums=6)


@functools.lru_cache(maxsize=64)
def _final_check_program(logdensity_fn, hessian):
    return jax.jit(lambda m, c: _cubature_grad_norm(logdensity_fn, m, c, hessian))


def _cubature_grad_norm(logdensity_fn, mean, factor, hessian):
    """Bures-Wasserstein gradient norm of KL(q | pi) at q = N(mean, factor factor^T) (principal-axes factor),
    expectations by the cubature rule, Hessian by autodiff or Stein (exact for Gaussian targets either way; for
    other targets the deterministic FB-GVI's fixed point is where this vanishes with the same Hessian kind)."""
    _, e_grad, e_hess = _moments(logdensity_fn, _cubature(mean.shape[0], mean.dtype), mean, factor, hessian)
    return _bw_grad_norm(e_grad, e_hess, factor)
