"""The four posteriordb posteriors in ``shared/data/posteriordb`` as NumPyro models.

posteriordb (github stan-dev/posteriordb, BSD-3-Clause) pairs Stan programs and data with
reference draws (10 chains x 1,000 draws from long Stan runs). Each model below transcribes its
Stan program: latent site names equal the Stan parameter names, Stan's transformed parameters are
``numpyro.deterministic`` sites, and Stan's implicit flat priors are reproduced exactly:

- a bounded parameter with no sampling statement is flat on its interval: ``Uniform(a, b)`` where the
  bounds are constants (its log-density is a constant), and ``ImproperUniform`` with the interval
  support where a bound depends on another parameter (``beta1`` in GARCH(1,1)), because
  ``Uniform(0, 1 - alpha1)`` would add ``-log(1 - alpha1)`` and change the posterior;
- an unbounded or half-bounded parameter with no sampling statement is ``ImproperUniform`` on
  ``real`` or ``positive``;
- ``real<lower=0> tau; tau ~ cauchy(0, 5)`` is ``HalfCauchy(5)`` (the same density up to the
  constant ``log 2`` that Stan drops).

The data folder is never copied into the repository: `data_root` finds it (environment variable
``DRIFTAX_POSTERIORDB``, else ``shared/data/posteriordb`` in a parent of this file's folder) and
returns ``None`` when it is absent, so tests and benchmarks can skip.

``gp_pois_regr`` needs float64: its kernel matrix is numerically singular in float32 (jitter
1e-10 is below float32 resolution; NUTS in float32 diverges over a thousand times). This loader
cannot switch precision for you, because ``jax_enable_x64`` is process-wide and must be set before
any array is created: call ``jax.config.update("jax_enable_x64", True)`` first. `load` warns when
it is off.
"""
from __future__ import annotations

import json
import os
import re
import warnings
import zipfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.distributions import constraints
from numpyro.distributions.transforms import biject_to

from driftax.models.base import Target
from driftax.models.numpyro import from_numpyro

__all__ = [
    "POSTERIORS",
    "flat",
    "data_root",
    "load",
    "load_data",
    "load_reference",
    "eight_schools_noncentered",
    "arK",
    "garch11",
    "gp_pois_regr",
]

ENV_VAR = "DRIFTAX_POSTERIORDB"


class _Flat(dist.ImproperUniform):
    """Stan's implicit flat prior: ``ImproperUniform(support)`` (log-density 0 on the support).

    Only ``sample`` differs from NumPyro's class, which raises ``NotImplementedError``: a draw is
    ``biject_to(support)(u)``, ``u ~ U(-2, 2)`` in the unconstrained space (NumPyro's
    ``init_to_uniform`` rule), so that running the model forward (seeded traces, initialisation
    strategies such as ``init_to_median``) works. It plays no part in the density. The support is
    kept unwrapped so that NumPyro's dynamic-support detection sees interval bounds.
    """

    def __init__(self, support, batch_shape=(), event_shape=(), *, validate_args=None):
        super().__init__(support, batch_shape, event_shape, validate_args=validate_args)
        if len(event_shape) == support.event_dim:
            # keep the bare constraint (NumPyro wraps it in ``independent(support, 0)``), so that
            # NumPyro sees a bound that depends on another parameter (``interval(0, 1 - alpha1)``)
            # as a dynamic support and constrains with the current bound, not the initial one
            self.support = support

    def sample(self, key, sample_shape=()):
        transform = biject_to(self.support)
        shape = tuple(sample_shape) + self.batch_shape + self.event_shape
        u = jax.random.uniform(key, transform.inverse_shape(shape), minval=-2.0, maxval=2.0)
        return transform(u)


def flat(support) -> _Flat:
    """A scalar flat prior on ``support`` (a NumPyro constraint)."""
    return _Flat(support, (), ())


# --------------------------------------------------------------------------------------------
# models (transcriptions of the posteriordb Stan programs)
# --------------------------------------------------------------------------------------------
def eight_schools_noncentered(J, y, sigma):
    """Eight schools, non-centred (posteriordb ``eight_schools_noncentered.stan``).

    ``theta_trans_j ~ N(0, 1)``, ``mu ~ N(0, 5)``, ``tau ~ HalfCauchy(5)``,
    ``theta = mu + tau * theta_trans`` (deterministic), ``y_j ~ N(theta_j, sigma_j)``.
    Rubin (1981); Gelman et al., Bayesian Data Analysis, section 5.5.
    """
    y = jnp.asarray(y, dtype=jnp.result_type(float))
    sigma = jnp.asarray(sigma, dtype=y.dtype)
    theta_trans = numpyro.sample("theta_trans", dist.Normal(0.0, 1.0).expand([J]).to_event(1))
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    theta = numpyro.deterministic("theta", theta_trans * tau + mu)
    numpyro.sample("y", dist.Normal(theta, sigma).to_event(1), obs=y)


def arK(K, T, y):
    """AR(K) regression (posteriordb ``arK.stan``).

    ``alpha ~ N(0, 10)``, ``beta_k ~ N(0, 10)``, ``sigma ~ HalfCauchy(2.5)``,
    ``y_t ~ N(alpha + Σ_k beta_k y_{t-k}, sigma)`` for ``t = K+1..T``.
    """
    y = jnp.asarray(y, dtype=jnp.result_type(float))
    alpha = numpyro.sample("alpha", dist.Normal(0.0, 10.0))
    beta = numpyro.sample("beta", dist.Normal(0.0, 10.0).expand([K]).to_event(1))
    sigma = numpyro.sample("sigma", dist.HalfCauchy(2.5))
    # lags[t - K, k - 1] = y[t - k] (0-based t = K..T-1): a (T-K, K) design, no Python loop at run time
    idx = np.arange(K, T)[:, None] - np.arange(1, K + 1)[None, :]
    mu = alpha + y[idx] @ beta
    numpyro.sample("y", dist.Normal(mu, sigma).to_event(1), obs=y[K:])


def garch11(T, y, sigma1):
    """GARCH(1,1) (posteriordb ``garch11.stan``), flat priors on the bounded parameters.

    ``mu`` flat on R, ``alpha0`` flat on (0, ∞), ``alpha1`` flat on (0, 1), ``beta1`` flat on
    (0, 1 - alpha1); ``sigma_1`` given, ``sigma_t² = alpha0 + alpha1 (y_{t-1} - mu)² + beta1
    sigma_{t-1}²``, ``y_t ~ N(mu, sigma_t)`` for ``t = 1..T``. Bollerslev (1986).
    """
    y = jnp.asarray(y, dtype=jnp.result_type(float))
    mu = numpyro.sample("mu", flat(constraints.real))
    alpha0 = numpyro.sample("alpha0", flat(constraints.positive))
    alpha1 = numpyro.sample("alpha1", dist.Uniform(0.0, 1.0))
    beta1 = numpyro.sample("beta1", flat(constraints.interval(0.0, 1.0 - alpha1)))

    def step(sig2_prev, y_prev):
        sig2 = alpha0 + alpha1 * (y_prev - mu) ** 2 + beta1 * sig2_prev
        return sig2, sig2

    s1 = jnp.asarray(sigma1, dtype=y.dtype)
    _, sig2 = jax.lax.scan(step, s1 ** 2, y[:-1])
    sigma = jnp.concatenate([s1[None], jnp.sqrt(sig2)])
    numpyro.sample("y", dist.Normal(mu, sigma).to_event(1), obs=y)


def gp_pois_regr(N, x, k):
    """Latent Gaussian-process Poisson regression (posteriordb ``gp_pois_regr.stan``).

    ``rho ~ Gamma(25, 4)`` (shape, rate), ``alpha ~ HalfNormal(2)``, ``f_tilde ~ N(0, I)``,
    ``f = L f_tilde`` (deterministic) with ``L Lᵀ = alpha² exp(-(x_i - x_j)² / (2 rho²)) + 1e-10 I``,
    ``k_i ~ Poisson(exp f_i)``. Needs float64 (see the module docstring).
    """
    x = jnp.asarray(x, dtype=jnp.result_type(float))
    rho = numpyro.sample("rho", dist.Gamma(25.0, 4.0))
    alpha = numpyro.sample("alpha", dist.HalfNormal(2.0))
    f_tilde = numpyro.sample("f_tilde", dist.Normal(0.0, 1.0).expand([N]).to_event(1))
    d2 = (x[:, None] - x[None, :]) ** 2
    cov = alpha ** 2 * jnp.exp(-0.5 * d2 / rho ** 2) + 1e-10 * jnp.eye(N, dtype=x.dtype)
    f = numpyro.deterministic("f", jnp.linalg.cholesky(cov) @ f_tilde)
    # validate_args=False: in float32 the Cholesky can give NaN, which must reach the sampler as a
    # NaN log-density (a rejected step), not a ValueError while tracing the model
    rate = jnp.exp(f)
    numpyro.sample("k", dist.Poisson(rate, validate_args=False).to_event(1), obs=jnp.asarray(k))


# name -> (model, data file, the model's arguments in order)
POSTERIORS = {
    "eight_schools-eight_schools_noncentered": (
        eight_schools_noncentered, "data_eight_schools.json.zip", ("J", "y", "sigma")),
    "arK-arK": (arK, "data_arK.json.zip", ("K", "T", "y")),
    "garch-garch11": (garch11, "data_garch.json.zip", ("T", "y", "sigma1")),
    "gp_pois_regr-gp_pois_regr": (gp_pois_regr, "data_gp_pois_regr.json.zip", ("N", "x", "k")),
}
_ALIASES = {
    "eight_schools": "eight_schools-eight_schools_noncentered",
    "eight_schools_noncentered": "eight_schools-eight_schools_noncentered",
    "arK": "arK-arK",
    "garch11": "garch-garch11",
    "garch": "garch-garch11",
    "gp_pois_regr": "gp_pois_regr-gp_pois_regr",
}


# --------------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------------
def data_root() -> Path | None:
    """The posteriordb folder, or ``None`` when it is absent.

    ``$DRIFTAX_POSTERIORDB`` if set (``None`` if it is not a folder); otherwise the first
    ``shared/data/posteriordb`` found in a parent of this file's folder (for a checkout at
    ``<work>/main`` that is ``<work>/shared/data/posteriordb``, i.e. ``../shared`` beside the repo).
    """
    env = os.environ.get(ENV_VAR)
    if env:
        path = Path(env).expanduser()
        return path.resolve() if path.is_dir() else None
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "shared" / "data" / "posteriordb"
        if candidate.is_dir():
            return candidate
    return None


def _canonical(name: str) -> str:
    if not isinstance(name, str):
        raise TypeError(f"name must be a string, got {type(name).__name__}")
    if name in POSTERIORS:
        return name
    if name in _ALIASES:
        return _ALIASES[name]
    known = sorted(POSTERIORS) + sorted(_ALIASES)
    raise ValueError(f"unknown posterior name {name!r}; known: {', '.join(known)}")


def _root(root) -> Path:
    if root is None:
        found = data_root()
        if found is None:
            raise FileNotFoundError(
                "posteriordb folder not found: set DRIFTAX_POSTERIORDB or place shared/data/posteriordb "
                "beside the repository"
            )
        return found
    if not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"root must be a path or None, got {type(root).__name__}")
    path = Path(root)
    if not path.is_dir():
        raise FileNotFoundError(f"root {str(path)!r} is not a folder")
    return path


def _read_zipped_json(path: Path):
    if not path.is_file():
        raise FileNotFoundError(f"posteriordb file missing: {path}")
    with zipfile.ZipFile(path) as zf:
        members = [m for m in zf.namelist() if m.endswith(".json")]
        if len(members) != 1:
            raise ValueError(f"{path}: expected one JSON file inside, found {zf.namelist()}")
        with zf.open(members[0]) as fh:
            return json.load(fh)


def load_data(name: str, root=None) -> dict:
    """The data dict of posterior ``name`` (as in the posteriordb JSON: numbers and lists)."""
    name = _canonical(name)
    return _read_zipped_json(_root(root) / POSTERIORS[name][1])


_INDEXED = re.compile(r"^(?P<base>[^\[\]]+)\[(?P<idx>[0-9,\s]+)\]$")


def _merge_draws(chains: list[dict]) -> dict[str, np.ndarray]:
    """``[{"theta[1]": draws, ...} per chain]`` -> ``{"theta": (chain, draw, 8)}`` (1-based Stan
    indices, any number of them: ``x[i,j]`` goes to ``x[..., i-1, j-1]``)."""
    num_chains = len(chains)
    num_draws = len(next(iter(chains[0].values())))
    groups: dict[str, dict[tuple[int, ...], str]] = {}
    for key in chains[0]:
        match = _INDEXED.match(key)
        if match:
            idx = tuple(int(i) - 1 for i in match["idx"].split(","))
            groups.setdefault(match["base"], {})[idx] = key
        else:
            groups.setdefault(key, {})[()] = key
    out = {}
    for base, entries in groups.items():
        ndims = {len(i) for i in entries}
        if len(ndims) != 1:
            raise ValueError(f"reference parameter {base!r} mixes index depths: {sorted(entries)}")
        shape = tuple(np.max(np.array(list(entries)), axis=0) + 1) if ndims != {0} else ()
        arr = np.full((num_chains, num_draws) + shape, np.nan)
        for idx, key in entries.items():
            arr[(slice(None), slice(None)) + idx] = np.array([c[key] for c in chains], dtype=np.float64)
        if np.isnan(arr).any():
            raise ValueError(f"reference parameter {base!r} has missing entries")
        out[base] = arr
    return out


def load_reference(name: str, root=None) -> dict[str, np.ndarray]:
    """Reference draws ``{param: (chain, draw, *shape)}`` (float64), Stan names, indices merged."""
    name = _canonical(name)
    return _merge_draws(_read_zipped_json(_root(root) / f"{name}.json.zip"))


def load(name: str, root=None) -> tuple[Target, dict[str, np.ndarray]]:
    """``(target, reference)`` for a posteriordb posterior.

    Parameters
    ----------
    name
        ``"eight_schools-eight_schools_noncentered"``, ``"arK-arK"``, ``"garch-garch11"`` or
        ``"gp_pois_regr-gp_pois_regr"`` (short forms ``"eight_schools"``, ``"arK"``,
        ``"garch11"``, ``"gp_pois_regr"`` also work).
    root
        The posteriordb folder; default `data_root()`. ``FileNotFoundError`` when absent.

    Returns
    -------
    target
        ``from_numpyro(model, *data)``: the log-density in NumPyro's unconstrained space, named
        after the posterior; ``constrain`` returns the Stan parameters and transformed parameters.
    reference
        ``{param: np.ndarray (chain, draw, *shape)}`` from the posteriordb reference draws, with
        Stan's ``theta[1]..theta[8]`` merged into ``theta`` of shape ``(8,)``.

    ``gp_pois_regr`` needs ``jax_enable_x64``, which this function cannot switch on for you
    (a process-wide setting): it warns when it is off.
    """
    name = _canonical(name)
    model, _, arg_names = POSTERIORS[name]
    data = load_data(name, root)
    missing = [a for a in arg_names if a not in data]
    if missing:
        raise ValueError(f"data for {name!r} lacks {missing}")
    if name.startswith("gp_pois_regr") and not jax.config.jax_enable_x64:
        warnings.warn(
            "gp_pois_regr needs float64: call jax.config.update('jax_enable_x64', True) before "
            "building it (in float32 its kernel Cholesky is inaccurate and samplers diverge)",
            stacklevel=2,
        )
    args = [np.asarray(data[a]) if isinstance(data[a], list) else data[a] for a in arg_names]
    target = from_numpyro(model, *args, name=name)
    return target, load_reference(name, root)
