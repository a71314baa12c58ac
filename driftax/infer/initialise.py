r"""Starting points in the typical set: Pathfinder from every chain's start, before the warm-up.

Chains drawn from a model's initial law can start thousands of posterior sds away (a regression
coefficient with sd 1e-3 started at O(1)) or along a ridge whose directions differ in scale by
1e3 (an uncentred covariate): a warm-up that must first find both the posterior and its scale
with an identity metric spends its whole budget on a step size fit for the approach, not for the
posterior. Pathfinder (Zhang, Carpenter, Gelman & Vehtari, 2022, "Pathfinder: parallel
quasi-Newton variational inference", JMLR 23) runs L-BFGS on :math:`-\log p` and, at each iterate
:math:`x_k` of its path, the Gaussian :math:`N(x_k + \Sigma_k \nabla\log p(x_k), \Sigma_k)` with
:math:`\Sigma_k` the L-BFGS inverse-Hessian estimate; it keeps the iterate whose Gaussian has the
largest ELBO. Here each chain runs its own Pathfinder (BlackJAX's, ``blackjax.vi.pathfinder``) from
its own start, and starts sampling at one draw of its Gaussian: the chains stay over-dispersed
around the posterior, as R-hat needs. The Gaussian with the best ELBO over chains also gives the
warm-up its first metric (its covariance, or that covariance's diagonal), so the first step-size
search is made at the posterior's scale.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from blackjax.optimizers.lbfgs import lbfgs_inverse_hessian_formula_1
from blackjax.vi import pathfinder as bj_pathfinder

__all__ = ["pathfinder_starts"]


def pathfinder_starts(logdensity_fn, starts: np.ndarray, key, mass_matrix: str | None, *, maxiter: int = 100):
    """``(positions, inverse_mass_matrix, elbo)`` from one Pathfinder per row of ``starts``.

    ``positions``: one draw of each chain's Pathfinder Gaussian (a chain whose Pathfinder fails,
    non-finite ELBO or draw, starts from the best chain's Gaussian instead); the inverse mass
    matrix: the best Gaussian's covariance (``"dense"``), its diagonal (``"diag"``) or ``None``.
    Raises ``ValueError`` when no chain's Pathfinder gives a finite approximation.
    """
    starts = jnp.asarray(starts)
    n = starts.shape[0]
    k_fit, k_draw, k_spare = jax.random.split(key, 3)

    @jax.jit
    def run(keys_fit, keys_draw, x0):
        def one(kf, kd, x):
            state, _ = bj_pathfinder.approximate(kf, logdensity_fn, x, num_samples=50, maxiter=maxiter)
            draw, _ = bj_pathfinder.sample(kd, state)
            cov = lbfgs_inverse_hessian_formula_1(state.alpha, state.beta, state.gamma)
            return draw, state.elbo, cov
        return jax.vmap(one)(keys_fit, keys_draw, x0)

    draws, elbo, covs = run(jax.random.split(k_fit, n), jax.random.split(k_draw, n), starts)
    draws, elbo, covs = np.asarray(draws), np.asarray(elbo), np.asarray(covs)
    ok = np.isfinite(elbo) & np.all(np.isfinite(draws), axis=1) & np.all(np.isfinite(covs), axis=(1, 2))
    sym = 0.5 * (covs[ok] + np.swapaxes(covs[ok], 1, 2))  # eigvalsh only of finite estimates
    ok[ok] = np.all(np.linalg.eigvalsh(sym) > 0, axis=1)
    if not ok.any():
        raise ValueError("init='pathfinder': Pathfinder found no finite Gaussian approximation from any chain's "
                         "start; pass starting points with init=")
    best = int(np.argmax(np.where(ok, elbo, -np.inf)))
    if not ok.all():
        # Failed chains start around the best chain's draw, spread by the best Gaussian's covariance
        # (so twice its spread about its mean: over-dispersed, as R-hat wants of starts).
        chol = np.linalg.cholesky(covs[best])
        z = np.asarray(jax.random.normal(k_spare, (int((~ok).sum()), draws.shape[1])), draws.dtype)
        draws[~ok] = draws[best] + z @ chol.T
    cov = 0.5 * (covs[best] + covs[best].T)
    imm = None if mass_matrix is None else (cov if mass_matrix == "dense" else np.diag(cov).copy())
    return draws, imm, elbo
