r"""`score`: draws against reference draws, by the metrics of the sampler-benchmarking suite.

For every scalar parameter :math:`j` of the reference (its sites flattened in order), with reference
mean :math:`\mu_j` and sd :math:`\sigma_j`:

* ``mean_err`` :math:`= \max_j |\hat\mu_j - \mu_j| / \sigma_j` and ``sd_err``
  :math:`= \max_j |\hat\sigma_j / \sigma_j - 1|` (weighted moments for weighted draws);
* ``ess_bulk_min``, ``ess_tail_min``, ``rhat_max``: ArviZ's rank-normalised bulk and tail ESS and
  R-hat (Vehtari et al., 2021), minimum / maximum over parameters; for weighted draws the importance
  ESS :math:`1/\sum_i w_i^2` (normalised weights) and no R-hat;
* ``ess_per_grad`` and ``ess_per_second``: ``ess_bulk_min`` over the gradient evaluations and seconds
  given by the caller (``None`` when not given);
* ``divergences``: ``sample_stats.diverging`` summed, when the draws are an InferenceData that has it;
* ``khat``: the Pareto-smoothed importance-sampling shape :math:`\hat k` of the log-weights (ArviZ's
  ``psislw``; Vehtari et al., 2024): above 0.7 the weighted estimates are unreliable;
* ``ot_distance``: the debiased Sinkhorn divergence :math:`S_\varepsilon` (Feydy et al., 2019) between
  the draws and the reference, both standardised by the reference's mean and sd, solved by
  Sinkhorn-Newton-Sparse (`driftax.transport.sinkhorn_divergence`), on at most ``ot_points`` of each
  (drawn without replacement, reproducibly from ``seed``), :math:`\varepsilon` = 0.05 x the mean cost.
  Zero for identical sets; it grows with any difference in law, not only in the first two moments.
  ``None`` (with a warning) when a solve does not converge (draws far from the reference: a funnel's neck).
"""
from __future__ import annotations

import math
import warnings

import arviz as az
import numpy as np

__all__ = ["score"]


def _sites(data, what: str) -> dict:
    """``{name: (chain, draw, ...)}`` from an InferenceData's posterior, a Dataset or a dict."""
    if isinstance(data, az.InferenceData):
        if "posterior" not in data.groups():
            raise ValueError(f"{what}: the InferenceData has no posterior group")
        data = data.posterior
    if hasattr(data, "data_vars"):
        return {k: np.asarray(data[k].values) for k in data.data_vars}
    if isinstance(data, dict):
        out = {}
        for k, v in data.items():
            a = np.asarray(v)
            if a.ndim < 2 or not np.issubdtype(a.dtype, np.number):
                raise ValueError(f"{what}[{k!r}] must be a numeric array of shape (chain, draw, ...), got shape {a.shape}")
            out[k] = a
        return out
    raise TypeError(f"{what} must be an arviz.InferenceData or a dict of (chain, draw, ...) arrays, "
                    f"got {type(data).__name__}")


def _flat(sites: dict, names, what: str) -> np.ndarray:
    cols = [sites[k].reshape(sites[k].shape[:2] + (-1,)).astype(np.float64) for k in names]
    chains = {c.shape[:2] for c in cols}
    if len(chains) != 1:
        raise ValueError(f"{what}: the sites have different (chain, draw) shapes {sorted(chains)}")
    return np.concatenate(cols, axis=-1)


def score(draws, reference, *, grad_evals: float | None = None, seconds: float | None = None,
          log_weights=None, ot_points: int = 500, seed: int = 0) -> dict:
    """The suite's metrics of ``draws`` against ``reference`` (module docstring).

    Parameters
    ----------
    draws
        ``arviz.InferenceData`` (its posterior) or ``{site: (chain, draw, ...)}``: every site of the
        reference must be there with the same event shape; other sites are ignored.
    reference
        Reference draws in the same forms (posteriordb's, long NUTS runs, exact draws).
    grad_evals, seconds
        The cost of ``draws``, for the per-gradient and per-second ESS.
    log_weights
        ``(chain, draw)`` log importance weights (a learned sampler's, say); ``None`` for MCMC draws.
    ot_points
        Draws of each set the Sinkhorn divergence is computed on (``>= 2``); ``None`` skips it (it
        compiles three OT solves per shape).

    Returns
    -------
    dict
        ``mean_err``, ``sd_err``, ``ess_bulk_min``, ``ess_tail_min``, ``rhat_max``, ``ess_per_grad``,
        ``ess_per_second``, ``divergences``, ``khat``, ``ot_distance``, ``grad_evals``, ``seconds``
        (``None`` where a metric does not apply).
    """
    from driftax.transport import sinkhorn_divergence

    ours, ref = _sites(draws, "draws"), _sites(reference, "reference")
    missing = [k for k in ref if k not in ours]
    if missing:
        raise ValueError(f"draws lack the reference's site(s) {missing}; draws have {sorted(ours)}")
    bad = {k: (ours[k].shape[2:], ref[k].shape[2:]) for k in ref if ours[k].shape[2:] != ref[k].shape[2:]}
    if bad:
        raise ValueError("draws and reference differ in the shape of site(s) "
                         + ", ".join(f"{k!r}: {a} vs {b}" for k, (a, b) in bad.items()))
    for name, v in (("grad_evals", grad_evals), ("seconds", seconds)):
        if v is not None and not (isinstance(v, (int, float, np.number)) and math.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be a positive number or None, got {v!r}")
    if ot_points is not None and (isinstance(ot_points, bool) or not isinstance(ot_points, (int, np.integer))
                                  or ot_points < 2):
        raise ValueError(f"ot_points must be an integer >= 2 or None, got {ot_points!r}")
    names = list(ref)
    x, r = _flat(ours, names, "draws"), _flat(ref, names, "reference")
    r_flat = r.reshape(-1, r.shape[-1])
    mu, sd = r_flat.mean(0), r_flat.std(0)
    if np.any(sd <= 0) or not np.all(np.isfinite(sd)):
        raise ValueError("reference: a parameter has zero or non-finite sd; it cannot standardise errors")
    x_flat = x.reshape(-1, x.shape[-1])
    if not np.all(np.isfinite(x_flat)):
        raise ValueError("draws contain non-finite values")

    out = {"grad_evals": grad_evals, "seconds": seconds, "khat": None, "divergences": None}
    if log_weights is None:
        w = None
        m, s = x_flat.mean(0), x_flat.std(0)
        dataset = {"p": x}
        ess_bulk = float(np.min(az.ess(dataset, method="bulk")["p"].values))
        ess_tail = float(np.min(az.ess(dataset, method="tail")["p"].values))
        rhat = float(np.max(az.rhat(dataset)["p"].values))
    else:
        lw = np.asarray(log_weights, np.float64)
        if lw.shape != x.shape[:2]:
            raise ValueError(f"log_weights must have the draws' (chain, draw) shape {x.shape[:2]}, got {lw.shape}")
        lw = lw.reshape(-1)
        if not np.all(np.isfinite(lw)):
            raise ValueError("log_weights contain non-finite values")
        w = np.exp(lw - lw.max())
        w /= w.sum()
        m = w @ x_flat
        s = np.sqrt(w @ (x_flat - m) ** 2)
        ess_bulk = ess_tail = float(1.0 / np.sum(w**2))
        rhat = None
        _, khat = az.psislw(lw.copy())
        out["khat"] = float(khat)
    if isinstance(draws, az.InferenceData) and "sample_stats" in draws.groups() \
            and "diverging" in draws.sample_stats:
        out["divergences"] = int(np.asarray(draws.sample_stats.diverging.values).sum())

    ot = None
    if ot_points is not None:
        rng = np.random.default_rng(seed)
        ix = rng.choice(len(x_flat), min(ot_points, len(x_flat)), replace=False)
        iy = rng.choice(len(r_flat), min(ot_points, len(r_flat)), replace=False)
        a = None if w is None else w[ix] / w[ix].sum()
        try:
            ot = float(sinkhorn_divergence((x_flat[ix] - mu) / sd, (r_flat[iy] - mu) / sd, a=a, method="sns",
                                           dtype=np.float64))
        except ValueError as err:  # an unconverged solve: no distance rather than a wrong one, and the
            if "did not converge" not in str(err):  # other metrics of the run are kept
                raise
            warnings.warn(f"ot_distance: {err}; reported as None", RuntimeWarning, stacklevel=2)
    out.update(
        mean_err=float(np.max(np.abs(m - mu) / sd)),
        sd_err=float(np.max(np.abs(s / sd - 1.0))),
        ess_bulk_min=ess_bulk, ess_tail_min=ess_tail, rhat_max=rhat,
        ess_per_grad=None if grad_evals is None else ess_bulk / grad_evals,
        ess_per_second=None if seconds is None else ess_bulk / seconds,
        ot_distance=ot,
    )
    return out
