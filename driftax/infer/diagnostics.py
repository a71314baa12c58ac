"""Draws to ArviZ, and comparisons with reference draws.

ArviZ does the diagnostics (``summary``, ``ess``, ``rhat``, ``plot_trace``); driftax only hands it
well-formed data. The one place that knows ArviZ's version is `_from_dict`: ArviZ 0.23 builds
``InferenceData`` with ``from_dict(posterior=..., sample_stats=...)``, ArviZ 1.x a ``DataTree``
with ``from_dict({"posterior": ..., "sample_stats": ...})``.
"""
from __future__ import annotations

from typing import Mapping

import warnings

import numpy as np

with warnings.catch_warnings():  # ArviZ 0.23 announces its 1.0 refactor on import
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az

__all__ = ["to_inference_data", "verdict", "summary", "ess", "rhat", "compare_to_reference", "posterior_dict",
           "add_averages", "pooled_averages", "ARVIZ_1"]

ARVIZ_1 = int(az.__version__.split(".")[0]) >= 1


def _from_dict(groups: dict, attrs: dict | None, dims: dict | None = None):
    """Build ArviZ data from ``{group: {name: array}}`` with either ArviZ API."""
    groups = {k: v for k, v in groups.items() if v}
    if ARVIZ_1:  # pragma: no cover - exercised where Python >= 3.12 installs ArviZ 1.x
        data = az.from_dict(groups, dims=dims)
        if attrs:
            for name in groups:
                data[name].attrs.update(attrs)
        return data
    data = az.from_dict(**groups, attrs=attrs or {}, dims=dims)
    for name in groups:  # also on each group, where ArviZ 1.x keeps them
        getattr(data, name).attrs.update(attrs or {})
    return data


def _check_draws(name: str, arr) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim < 2:
        raise ValueError(f"{name} must have shape (chain, draw, ...), got {arr.shape}")
    return arr


def to_inference_data(posterior: Mapping[str, np.ndarray], sample_stats: Mapping[str, np.ndarray] | None = None,
                      *, attrs: dict | None = None, dims: Mapping[str, tuple[str, ...]] | None = None):
    """ArviZ data from ``{name: (chain, draw, ...)}`` arrays of draws and of per-draw statistics.

    ``dims`` names the axes after ``(chain, draw)`` per variable, e.g. ``{"theta": ["school"]}``.

    ``sample_stats`` uses ArviZ's names (``lp``, ``acceptance_rate``, ``diverging``,
    ``step_size``) so ``az.summary`` and ``az.plot_trace`` pick them up.
    """
    if not isinstance(posterior, Mapping) or not posterior:
        raise TypeError("posterior must be a non-empty dict {name: array of shape (chain, draw, ...)}")
    post = {k: _check_draws(f"posterior[{k!r}]", v) for k, v in posterior.items()}
    shapes = {v.shape[:2] for v in post.values()}
    if len(shapes) != 1:
        raise ValueError(f"all posterior arrays need the same (chain, draw) shape, got {sorted(shapes)}")
    stats = {k: _check_draws(f"sample_stats[{k!r}]", v) for k, v in (sample_stats or {}).items()}
    dims = {k: list(v) for k, v in (dims or {}).items() if k in post}
    return _from_dict({"posterior": post, "sample_stats": stats}, attrs, dims or None)


def add_averages(data, weight, mean: Mapping, m2: Mapping, dims: Mapping | None = None, extra: Mapping | None = None):
    """Add the ``averages`` group: per chain, ``{site}`` (weighted mean), ``{site}_var`` (weighted
    variance ``M/W``) and ``weight`` (``W``), with the posterior's site dimension names; ``extra``
    adds ``{name: (dims, array)}`` as they are (SWAG's deviations)."""
    import xarray as xr

    weight = np.asarray(weight, np.float64)
    safe = np.where(weight > 0, weight, np.nan)
    post = data["posterior"] if ARVIZ_1 else data.posterior
    variables = {"weight": (("chain",), weight)}
    for name, mu in mean.items():
        mu = np.asarray(mu)
        site_dims = tuple(post[name].dims[2:]) if name in post else tuple(
            (dims or {}).get(name) or (f"{name}_dim_{i}" for i in range(mu.ndim - 1)))
        var = np.asarray(m2[name], np.float64) / safe.reshape((-1,) + (1,) * (mu.ndim - 1))
        variables[name] = (("chain",) + site_dims, mu)
        variables[f"{name}_var"] = (("chain",) + site_dims, var)
    variables.update(extra or {})
    ds = xr.Dataset(variables, coords={"chain": np.arange(weight.shape[0])})
    if ARVIZ_1:  # pragma: no cover
        data["averages"] = ds
    else:
        data.add_groups({"averages": ds})
    return data


def pooled_averages(data) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{site: (mean, variance)}`` of the ``averages`` group pooled over chains (and so over
    devices and hosts) by Chan et al.'s rule: the average over every counted iterate of every chain."""
    from driftax.samplers.averaging import pool

    group = data["averages"] if ARVIZ_1 else data.averages
    w = np.asarray(group["weight"].values, np.float64)
    out = {}
    for name in group.data_vars:
        if name == "weight" or name.endswith("_var") or name.startswith("swag_"):
            continue
        mean = np.asarray(group[name].values, np.float64)
        m2 = np.asarray(group[f"{name}_var"].values, np.float64) * w.reshape((-1,) + (1,) * (mean.ndim - 1))
        total, mu, m = pool(w, mean, np.nan_to_num(m2))
        out[name] = (mu, m / total if total > 0 else np.full_like(mu, np.nan))
    return out


def posterior_dict(data) -> dict[str, np.ndarray]:
    """``{name: (chain, draw, ...)}`` arrays from InferenceData/DataTree (or a dict, returned as is)."""
    if hasattr(data, "posterior") or (ARVIZ_1 and "posterior" in getattr(data, "children", {})):
        post = data["posterior"] if ARVIZ_1 else data.posterior
        return {k: np.asarray(post[k].values) for k in post.data_vars}
    if isinstance(data, Mapping):
        return {k: np.asarray(v) for k, v in data.items()}
    raise TypeError(f"expected InferenceData or a dict of (chain, draw, ...) arrays, got {type(data).__name__}")


def summary(data, **kwargs):
    """``arviz.summary`` as it is."""
    return az.summary(data, **kwargs)


def ess(data, **kwargs):
    """``arviz.ess`` as it is (bulk ESS by default)."""
    return az.ess(data, **kwargs)


def rhat(data, **kwargs):
    """``arviz.rhat`` as it is (rank-normalised split R-hat)."""
    return az.rhat(data, **kwargs)


def compare_to_reference(data, reference, var_names=None) -> dict[str, dict[str, np.ndarray]]:
    """Per parameter, the error of the posterior mean and sd in units of the reference sd.

    ``mean_error = (mean - mean_ref) / sd_ref`` and ``sd_error = (sd - sd_ref) / sd_ref``, element by
    element for array-valued sites. ``reference`` is InferenceData or ``{name: (chain, draw, ...)}``
    (e.g. posteriordb reference draws); only names present in both are compared, or ``var_names``.
    A mean error of ``z`` reference sds is ``z·√ESS`` Monte Carlo standard errors of the estimate.
    """
    draws, ref = posterior_dict(data), posterior_dict(reference)
    names = list(var_names) if var_names is not None else [k for k in draws if k in ref]
    if not names:
        raise ValueError(f"no parameter in common between the draws {sorted(draws)} and the reference {sorted(ref)}")
    out = {}
    for name in names:
        if name not in draws or name not in ref:
            raise ValueError(f"{name!r} missing from {'draws' if name not in draws else 'reference'}")
        x = draws[name].reshape((-1,) + draws[name].shape[2:]).astype(np.float64)
        r = ref[name].reshape((-1,) + ref[name].shape[2:]).astype(np.float64)
        if x.shape[1:] != r.shape[1:]:
            raise ValueError(f"{name!r}: draws have shape {x.shape[1:]}, reference {r.shape[1:]}")
        sd_ref = r.std(0, ddof=1)
        out[name] = {"mean_error": (x.mean(0) - r.mean(0)) / sd_ref,
                     "sd_error": (x.std(0, ddof=1) - sd_ref) / sd_ref}
    return out


def format_comparison(comparison: dict) -> str:
    """A small table of `compare_to_reference` results: one line per scalar parameter."""
    lines = [f"{'parameter':<22}{'mean err (sd)':>15}{'sd err (rel)':>14}"]
    for name, errs in comparison.items():
        m, s = np.atleast_1d(errs["mean_error"]), np.atleast_1d(errs["sd_error"])
        for i, (mi, si) in enumerate(zip(m.ravel(), s.ravel())):
            label = name if m.size == 1 else f"{name}[{i}]"
            lines.append(f"{label:<22}{mi:>15.3f}{si:>14.3f}")
    return "\n".join(lines)


def verdict(data, *, rhat_max: float = 1.01, ess_min: float = 400.0) -> str:
    """One line a person reads: ``"ok: ..."`` or what is wrong, in words, with what to try.

    The thresholds are Vehtari et al.'s (2021, "Rank-normalization, folding, and localization: an
    improved R-hat"): rank-normalised split R-hat at most 1.01 and bulk ESS at least 400 (100 per
    chain for 4 chains) before trusting means and intervals; any divergence of a Hamiltonian or
    Metropolis-adjusted kernel means part of the posterior was not explored.
    """
    s = az.summary(data, kind="diagnostics")
    problems = []
    worst_rhat = float(s["r_hat"].max())
    if not np.isfinite(worst_rhat) or worst_rhat > rhat_max:
        name = s["r_hat"].idxmax() if np.isfinite(worst_rhat) else "some sites"
        problems.append(f"chains disagree (R-hat {worst_rhat:.3f} > {rhat_max} at {name}): run longer warm-up "
                        "and more draws, or start from init='pathfinder'")
    low_ess = float(s["ess_bulk"].min())
    if not np.isfinite(low_ess) or low_ess < ess_min:
        problems.append(f"too few effective draws (bulk ESS {low_ess:.0f} < {ess_min:.0f} at "
                        f"{s['ess_bulk'].idxmin()}): draw more, or use method='nuts' or a dense mass matrix")
    stats = getattr(data, "sample_stats", None)
    n_div = int(stats["diverging"].sum()) if stats is not None and "diverging" in stats else 0
    if n_div:
        problems.append(f"{n_div} divergent transition{'s' if n_div > 1 else ''}: the sampler missed a region of high curvature; raise "
                        "target_acceptance (e.g. 0.95) or reparameterise (non-centred hierarchies)")
    if not problems:
        return f"ok: R-hat <= {worst_rhat:.3f}, bulk ESS >= {low_ess:.0f}, no divergences"
    return "check: " + "; ".join(problems)
