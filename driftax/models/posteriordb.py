"""The thirteen posteriordb posteriors in ``shared/data/posteriordb`` as NumPyro models.

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
  constant ``log 2`` that Stan drops); likewise ``normal(0, s)`` on a positive parameter is
  ``HalfNormal(s)``, and brms's ``student_t_lpdf(sigma | 3, 0, 10) - student_t_lccdf(0 | 3, 0, 10)``
  is the half-Student-t `_HalfStudentT` exactly;
- Stan's constrained vector types map to NumPyro's constraints: ``simplex[K]`` to ``simplex``,
  ``ordered[K]`` to ``ordered_vector``, ``positive_ordered[K]`` to ``positive_ordered_vector``;
  such a parameter gets ``flat(support, (K,))`` and its sampling statements (``mu ~ normal(0, 2)``
  on an ``ordered[2]``) become a ``numpyro.factor``, which is what Stan does: it adds the normal
  terms to the log-density of a parameter whose support is the ordered cone. NumPyro's
  unconstraining bijections differ from Stan's (its stick-breaking, its ``positive_ordered``
  = ``exp`` of ``ordered``), which changes the unconstrained coordinates, never the posterior;
- likelihoods that Stan writes as ``target += ...`` of a non-data expression (a mixture's
  ``log_mix``, the HMM's forward algorithm) are ``numpyro.factor`` sites named after the data.

The data folder is never copied into the repository: `data_root` finds it (environment variable
``DRIFTAX_POSTERIORDB``, else ``shared/data/posteriordb`` in a parent of this file's folder) and
returns ``None`` when it is absent, so tests and benchmarks can skip. Every loader also takes the
folder as ``root``. Two layouts are read, detected from the folder's contents (`layout`): the
shared folder's flat one, and a local clone of the posterior database itself
(``git clone https://github.com/stan-dev/posteriordb``; pass its root or its
``posterior_database`` folder), where a posterior's record is ``posteriors/NAME.json``, its data
``data/data/DATA.json.zip`` and its reference draws ``reference_posteriors/draws/draws/REF.json.zip``,
``DATA`` and ``REF`` named by the record. `load` checks that the reference draws name sites of the
model, with the model's shapes.

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
from typing import NamedTuple

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
    "Layout",
    "layout",
    "load",
    "load_data",
    "load_reference",
    "eight_schools_noncentered",
    "arK",
    "garch11",
    "gp_pois_regr",
    "arma11",
    "blr",
    "diamonds",
    "hmm_example",
    "kidscore_interaction",
    "logearn_interaction",
    "logmesquite_logvash",
    "low_dim_gauss_mix",
    "nes",
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


class _HalfStudentT(dist.Distribution):
    """Student-t with location 0 folded onto (0, ∞): density ``2 t_df(x / scale) / scale``.

    This is Stan's ``real<lower=0> sigma; target += student_t_lpdf(sigma | df, 0, scale) -
    student_t_lccdf(0 | df, 0, scale)`` (by symmetry ``lccdf(0) = log 1/2``). NumPyro's
    ``TruncatedDistribution(StudentT(...), low=0)`` has the same density but samples through the
    Student-t inverse CDF, which needs TensorFlow Probability; a draw here is ``|t|``.
    """

    arg_constraints = {"df": constraints.positive, "scale": constraints.positive}
    support = constraints.positive
    reparametrized_params = ["scale"]

    def __init__(self, df, scale=1.0, *, validate_args=None):
        self._base = dist.StudentT(df, 0.0, scale)
        self.df, self.scale = self._base.df, self._base.scale
        super().__init__(batch_shape=self._base.batch_shape, validate_args=validate_args)

    def sample(self, key, sample_shape=()):
        return jnp.abs(self._base.sample(key, sample_shape))

    def log_prob(self, value):
        return self._base.log_prob(value) + jnp.log(2.0)


def flat(support, event_shape=()) -> _Flat:
    """Stan's implicit flat prior on ``support`` (a NumPyro constraint): log-density 0 there.

    ``event_shape`` is the parameter's shape: ``()`` for a scalar, ``(K,)`` for Stan's
    ``vector[K]`` (with ``constraints.real_vector``), ``simplex[K]``, ``ordered[K]`` or
    ``positive_ordered[K]`` (with the matching NumPyro constraint).
    """
    event_shape = tuple(int(n) for n in event_shape)
    if len(event_shape) < support.event_dim:
        raise ValueError(f"event_shape {event_shape} has fewer axes than the support's event_dim "
                         f"{support.event_dim}")
    return _Flat(support, (), event_shape)


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


def _as_float(x):
    """Data as a float array of the current default precision (Stan's ``real``/``vector``)."""
    return jnp.asarray(x, dtype=jnp.result_type(float))


def arma11(T, y):
    """ARMA(1,1) (posteriordb ``arma11.stan``).

    ``mu ~ N(0, 10)``, ``phi ~ N(0, 2)``, ``theta ~ N(0, 2)``, ``sigma ~ HalfCauchy(2.5)``;
    the errors are computed recursively with ``err_0 = 0`` and ``y_0 = mu`` (Stan's
    ``nu[1] = mu + phi * mu``): ``err_1 = y_1 - (mu + phi mu)``,
    ``err_t = y_t - (mu + phi y_{t-1} + theta err_{t-1})``, and ``err_t ~ N(0, sigma)``. The map
    ``y -> err`` is triangular with unit diagonal, so this is the likelihood of ``y``.
    Box & Jenkins, Time Series Analysis (1970).
    """
    if int(T) < 1:  # Stan: int<lower=1> T
        raise ValueError(f"T must be at least 1, got {T}")
    y = _as_float(y)
    if y.shape != (int(T),):
        raise ValueError(f"y must have shape (T,) = ({int(T)},), got {y.shape}")
    mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
    phi = numpyro.sample("phi", dist.Normal(0.0, 2.0))
    theta = numpyro.sample("theta", dist.Normal(0.0, 2.0))
    sigma = numpyro.sample("sigma", dist.HalfCauchy(2.5))

    def step(err_prev, y_pair):
        y_prev, y_t = y_pair
        err = y_t - (mu + phi * y_prev + theta * err_prev)
        return err, err

    # t = 1 is the same step with y_0 = mu and err_0 = 0
    y_prev = jnp.concatenate([jnp.reshape(mu, (1,)).astype(y.dtype), y[:-1]])
    _, err = jax.lax.scan(step, jnp.zeros((), y.dtype), (y_prev, y))
    numpyro.sample("err", dist.Normal(0.0, sigma).expand([int(T)]).to_event(1), obs=err)


def kidscore_interaction(N, kid_score, mom_iq, mom_hs):
    """Kid IQ on mother's IQ and high school with their interaction (posteriordb
    ``kidscore_interaction.stan``; Gelman & Hill, Data Analysis Using Regression and
    Multilevel/Hierarchical Models, 2007, section 3.3).

    ``beta`` (4) flat on R^4 (no prior statement), ``sigma ~ HalfCauchy(2.5)``;
    ``kid_score ~ N(beta_1 + beta_2 mom_hs + beta_3 mom_iq + beta_4 mom_hs mom_iq, sigma)``.
    The observed site is ``kid_score``.
    """
    kid_score, mom_iq, mom_hs = _as_float(kid_score), _as_float(mom_iq), _as_float(mom_hs)
    inter = mom_hs * mom_iq  # transformed data
    X = jnp.stack([jnp.ones_like(mom_hs), mom_hs, mom_iq, inter], axis=1)
    beta = numpyro.sample("beta", flat(constraints.real_vector, (4,)))
    sigma = numpyro.sample("sigma", dist.HalfCauchy(2.5))
    numpyro.sample("kid_score", dist.Normal(X @ beta, sigma).to_event(1), obs=kid_score)


def logearn_interaction(N, earn, height, male):
    """Log earnings on height and sex with their interaction (posteriordb
    ``logearn_interaction.stan``; Gelman & Hill 2007, section 4.2).

    Flat priors: ``beta`` (4) on R^4 and ``sigma`` on (0, ∞) (no prior statements);
    ``log(earn) ~ N(beta_1 + beta_2 height + beta_3 male + beta_4 height male, sigma)``.
    The observed site is ``log_earn`` (Stan's transformed data).
    """
    earn, height, male = _as_float(earn), _as_float(height), _as_float(male)
    log_earn = jnp.log(earn)  # transformed data; earn > 0 in the posteriordb data
    X = jnp.stack([jnp.ones_like(height), height, male, height * male], axis=1)
    beta = numpyro.sample("beta", flat(constraints.real_vector, (4,)))
    sigma = numpyro.sample("sigma", flat(constraints.positive))
    numpyro.sample("log_earn", dist.Normal(X @ beta, sigma).to_event(1), obs=log_earn)


def logmesquite_logvash(N, weight, diam1, diam2, canopy_height, total_height, group):
    """Log-log regression of mesquite bush weight (posteriordb ``logmesquite_logvash.stan``;
    Gelman & Hill 2007, section 4.6).

    Flat priors: ``beta`` (6) on R^6 and ``sigma`` on (0, ∞); with the transformed data
    ``log_canopy_volume = log(diam1 diam2 canopy_height)``, ``log_canopy_area = log(diam1 diam2)``,
    ``log_canopy_shape = log(diam1 / diam2)``, ``log_total_height = log(total_height)``,
    ``log(weight) ~ N(beta_1 + beta_2 log_canopy_volume + beta_3 log_canopy_area
    + beta_4 log_canopy_shape + beta_5 log_total_height + beta_6 group, sigma)``.
    The observed site is ``log_weight``.
    """
    weight, diam1, diam2 = _as_float(weight), _as_float(diam1), _as_float(diam2)
    canopy_height, total_height, group = _as_float(canopy_height), _as_float(total_height), _as_float(group)
    log_weight = jnp.log(weight)
    X = jnp.stack([
        jnp.ones_like(weight),
        jnp.log(diam1 * diam2 * canopy_height),
        jnp.log(diam1 * diam2),
        jnp.log(diam1 / diam2),
        jnp.log(total_height),
        group,
    ], axis=1)
    beta = numpyro.sample("beta", flat(constraints.real_vector, (6,)))
    sigma = numpyro.sample("sigma", flat(constraints.positive))
    numpyro.sample("log_weight", dist.Normal(X @ beta, sigma).to_event(1), obs=log_weight)


def nes(N, partyid7, real_ideo, race_adj, educ1, gender, income, age_discrete):
    """Party identification in the 1996 National Election Study (posteriordb ``nes.stan``;
    Gelman & Hill 2007, chapter 4 exercises).

    Flat priors: ``beta`` (9) on R^9 and ``sigma`` on (0, ∞); age enters as the indicators
    ``age30_44 = [age_discrete == 2]``, ``age45_64 = [age_discrete == 3]``,
    ``age65up = [age_discrete == 4]`` (transformed data); ``partyid7 ~ N(beta_1 + beta_2 real_ideo
    + beta_3 race_adj + beta_4 age30_44 + beta_5 age45_64 + beta_6 age65up + beta_7 educ1
    + beta_8 gender + beta_9 income, sigma)``.
    """
    partyid7 = _as_float(partyid7)
    age = jnp.asarray(age_discrete)
    cols = [jnp.ones_like(partyid7), _as_float(real_ideo), _as_float(race_adj),
            (age == 2).astype(partyid7.dtype), (age == 3).astype(partyid7.dtype),
            (age == 4).astype(partyid7.dtype), _as_float(educ1), _as_float(gender), _as_float(income)]
    X = jnp.stack(cols, axis=1)
    beta = numpyro.sample("beta", flat(constraints.real_vector, (9,)))
    sigma = numpyro.sample("sigma", flat(constraints.positive))
    numpyro.sample("partyid7", dist.Normal(X @ beta, sigma).to_event(1), obs=partyid7)


def blr(N, D, X, y):
    """Bayesian linear regression (posteriordb ``blr.stan``, data ``sblrc``).

    ``beta_d ~ N(0, 10)``, ``sigma ~ HalfNormal(10)`` (Stan: ``real<lower=0> sigma`` with
    ``target += normal_lpdf(sigma | 0, 10)``, the half-normal up to the constant ``log 2``),
    ``y ~ N(X beta, sigma)``.
    """
    X, y = _as_float(X), _as_float(y)
    if X.shape != (int(N), int(D)):
        raise ValueError(f"X must have shape (N, D) = ({int(N)}, {int(D)}), got {X.shape}")
    beta = numpyro.sample("beta", dist.Normal(0.0, 10.0).expand([int(D)]).to_event(1))
    sigma = numpyro.sample("sigma", dist.HalfNormal(10.0))
    numpyro.sample("y", dist.Normal(X @ beta, sigma).to_event(1), obs=y)


def diamonds(N, Y, K, X, prior_only):
    """Diamond prices, a brms linear regression (posteriordb ``diamonds.stan``, brms 2.10.0).

    Transformed data as brms writes them: ``Xc`` is ``X`` without its first (intercept) column,
    each column centred on its mean. ``b`` (K-1 = 24) ``~ N(0, 1)``,
    ``Intercept ~ StudentT(3, 8, 10)``, ``sigma`` half-Student-t: Stan's ``real<lower=0> sigma``
    with ``target += student_t_lpdf(sigma | 3, 0, 10) - student_t_lccdf(0 | 3, 0, 10)``, the
    half-Student-t ``2 t_3(sigma / 10) / 10`` exactly (``- lccdf(0) = log 2``; `_HalfStudentT`);
    ``Y ~ N(Intercept + Xc b, sigma)`` unless ``prior_only``. Stan's generated quantity
    ``b_Intercept = Intercept - means_X · b`` is not part of the density and is left out (the
    reference draws do not hold it either). The 24 predictors are strongly correlated (polynomial
    terms): a hard geometry for NUTS.
    """
    X, Y = _as_float(X), _as_float(Y)
    if X.shape != (int(N), int(K)):
        raise ValueError(f"X must have shape (N, K) = ({int(N)}, {int(K)}), got {X.shape}")
    Xc = X[:, 1:] - jnp.mean(X[:, 1:], axis=0)
    b = numpyro.sample("b", dist.Normal(0.0, 1.0).expand([int(K) - 1]).to_event(1))
    intercept = numpyro.sample("Intercept", dist.StudentT(3.0, 8.0, 10.0))
    sigma = numpyro.sample("sigma", _HalfStudentT(3.0, 10.0))
    if not prior_only:
        numpyro.sample("Y", dist.Normal(intercept + Xc @ b, sigma).to_event(1), obs=Y)


def low_dim_gauss_mix(N, y):
    """Two-component normal mixture with ordered means (posteriordb ``low_dim_gauss_mix.stan``).

    ``mu`` is ``ordered[2]`` with ``mu ~ N(0, 2)`` (Stan's sampling statement on an ordered
    vector: flat on the ordered cone plus the normal terms; no normalisation over the cone, which
    is a constant), ``sigma_k ~ HalfNormal(2)`` (``array[2] real<lower=0>`` with ``normal(0, 2)``),
    ``theta ~ Beta(5, 5)``; ``y_n ~ theta N(mu_1, sigma_1) + (1 - theta) N(mu_2, sigma_2)``
    (Stan's ``log_mix``), a ``factor`` named ``y``.
    """
    y = _as_float(y)
    mu = numpyro.sample("mu", flat(constraints.ordered_vector, (2,)))
    numpyro.factor("mu_prior", jnp.sum(dist.Normal(0.0, 2.0).log_prob(mu)))
    sigma = numpyro.sample("sigma", dist.HalfNormal(2.0).expand([2]).to_event(1))
    theta = numpyro.sample("theta", dist.Beta(5.0, 5.0))
    comp = dist.Normal(mu, sigma).log_prob(y[:, None])  # (N, 2)
    log_w = jnp.stack([jnp.log(theta), jnp.log1p(-theta)])
    numpyro.factor("y", jnp.sum(jax.nn.logsumexp(comp + log_w, axis=1)))


def hmm_example(N, K, y):
    """Two-state hidden Markov model with unit-variance normal emissions (posteriordb
    ``hmm_example.stan``), the states summed out by the forward algorithm in log space.

    ``theta1``, ``theta2`` are ``simplex[2]`` with flat priors (uniform on the simplex): the rows
    of the transition matrix ``theta[j, k] = P(z_t = k | z_{t-1} = j)`` (a deterministic site, Stan's
    transformed parameter); ``mu`` is ``positive_ordered[2]`` with ``mu_1 ~ N(3, 1)``,
    ``mu_2 ~ N(10, 1)``; ``y_t | z_t = k ~ N(mu_k, 1)``. As in Stan, the first state has no initial
    distribution term (``gamma_1(k) = log N(y_1 | mu_k, 1)``), then
    ``gamma_t(k) = logsumexp_j(gamma_{t-1}(j) + log theta[j, k]) + log N(y_t | mu_k, 1)`` and the
    log-likelihood is ``logsumexp_k gamma_N(k)`` (a ``factor`` named ``y``). The Stan program
    hard-codes ``K = 2`` (``mu[1]``, ``mu[2]``, ``theta[1]``, ``theta[2]``): other ``K`` raise.
    Stan's generated quantities (the Viterbi path ``z_star``, ``log_p_z_star``) are not part of
    the density and are left out.
    """
    if int(K) != 2:
        raise ValueError(f"K must be 2 (the Stan program hard-codes two states), got {K}")
    if int(N) < 1:  # Stan's gamma[N] needs one observation at least
        raise ValueError(f"N must be at least 1, got {N}")
    y = _as_float(y)
    if y.shape != (int(N),):
        raise ValueError(f"y must have shape (N,) = ({int(N)},), got {y.shape}")
    theta1 = numpyro.sample("theta1", flat(constraints.simplex, (2,)))
    theta2 = numpyro.sample("theta2", flat(constraints.simplex, (2,)))
    mu = numpyro.sample("mu", flat(constraints.positive_ordered_vector, (2,)))
    theta = numpyro.deterministic("theta", jnp.stack([theta1, theta2]))
    numpyro.factor("mu_prior", dist.Normal(jnp.array([3.0, 10.0], y.dtype), 1.0).log_prob(mu).sum())
    log_theta = jnp.log(theta)
    emit = dist.Normal(mu, 1.0).log_prob(y[:, None])  # (N, K): log N(y_t | mu_k, 1)

    def forward(gamma_prev, emit_t):
        gamma = jax.nn.logsumexp(gamma_prev[:, None] + log_theta, axis=0) + emit_t
        return gamma, None

    gamma_n, _ = jax.lax.scan(forward, emit[0], emit[1:])
    numpyro.factor("y", jax.nn.logsumexp(gamma_n))


# name -> (model, data file, the model's arguments in order)
POSTERIORS = {
    "eight_schools-eight_schools_noncentered": (
        eight_schools_noncentered, "data_eight_schools.json.zip", ("J", "y", "sigma")),
    "arK-arK": (arK, "data_arK.json.zip", ("K", "T", "y")),
    "garch-garch11": (garch11, "data_garch.json.zip", ("T", "y", "sigma1")),
    "gp_pois_regr-gp_pois_regr": (gp_pois_regr, "data_gp_pois_regr.json.zip", ("N", "x", "k")),
    "arma-arma11": (arma11, "data_arma.json.zip", ("T", "y")),
    "diamonds-diamonds": (diamonds, "data_diamonds.json.zip", ("N", "Y", "K", "X", "prior_only")),
    "earnings-logearn_interaction": (
        logearn_interaction, "data_earnings.json.zip", ("N", "earn", "height", "male")),
    "hmm_example-hmm_example": (hmm_example, "data_hmm_example.json.zip", ("N", "K", "y")),
    "kidiq-kidscore_interaction": (
        kidscore_interaction, "data_kidiq.json.zip", ("N", "kid_score", "mom_iq", "mom_hs")),
    "low_dim_gauss_mix-low_dim_gauss_mix": (low_dim_gauss_mix, "data_low_dim_gauss_mix.json.zip", ("N", "y")),
    "mesquite-logmesquite_logvash": (
        logmesquite_logvash, "data_mesquite.json.zip",
        ("N", "weight", "diam1", "diam2", "canopy_height", "total_height", "group")),
    "nes1996-nes": (
        nes, "data_nes1996.json.zip",
        ("N", "partyid7", "real_ideo", "race_adj", "educ1", "gender", "income", "age_discrete")),
    "sblrc-blr": (blr, "data_sblrc.json.zip", ("N", "D", "X", "y")),
}
_ALIASES = {
    "eight_schools": "eight_schools-eight_schools_noncentered",
    "eight_schools_noncentered": "eight_schools-eight_schools_noncentered",
    "arK": "arK-arK",
    "garch11": "garch-garch11",
    "garch": "garch-garch11",
    "gp_pois_regr": "gp_pois_regr-gp_pois_regr",
    "arma11": "arma-arma11",
    "arma": "arma-arma11",
    "diamonds": "diamonds-diamonds",
    "logearn_interaction": "earnings-logearn_interaction",
    "hmm_example": "hmm_example-hmm_example",
    "kidscore_interaction": "kidiq-kidscore_interaction",
    "low_dim_gauss_mix": "low_dim_gauss_mix-low_dim_gauss_mix",
    "logmesquite_logvash": "mesquite-logmesquite_logvash",
    "nes": "nes1996-nes",
    "blr": "sblrc-blr",
}


# --------------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------------
def data_root() -> Path | None:
    """The posteriordb folder, or ``None`` when it is absent.

    ``$DRIFTAX_POSTERIORDB`` if set (``None`` if it is not a folder); otherwise the first
    ``shared/data/posteriordb`` found in a parent of this file's folder (for a checkout at
    ``<work>/main`` that is ``<work>/shared/data/posteriordb``, i.e. ``../shared`` beside the repo).
    The folder may be in either layout (`Layout`): the shared folder's flat one, or a clone of
    the posterior database (its root, or its ``posterior_database`` folder).
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


def _looked_in(root) -> str:
    """Where a lookup went when there is no folder to look in, in words (for error messages)."""
    if root is not None:
        return f"folder {str(Path(root))!r}"
    env = os.environ.get(ENV_VAR)
    if env:
        return f"${ENV_VAR} = {env!r}, which is not a folder"
    return (f"no posteriordb folder: ${ENV_VAR} is unset and no shared/data/posteriordb lies in a "
            f"parent of {str(Path(__file__).resolve().parent)!r}")


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
    path = Path(root).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"root {str(path)!r} is not a folder")
    return path


class Layout(NamedTuple):
    """Where a posteriordb folder keeps posterior ``NAME``'s files.

    ``kind="flat"`` (``shared/data/posteriordb``): ``NAME.posterior.json`` (the posterior's record),
    ``NAME.json.zip`` (reference draws), ``data_DATA.json.zip``, ``stan/MODEL.stan``, all in
    ``folder``.

    ``kind="clone"`` (a clone of github.com/stan-dev/posteriordb; ``folder`` is its
    ``posterior_database``): ``posteriors/NAME.json`` (the record), ``data/data/DATA.json.zip``
    with ``DATA`` the record's ``data_name``, and
    ``reference_posteriors/draws/draws/REF.json.zip`` with ``REF`` the record's
    ``reference_posterior_name`` (``gold_standard_name`` in the database's early records), which
    is ``null`` for posteriors without reference draws. Where a ``.json.zip`` is absent, its
    unzipped ``.json`` is read.
    """

    kind: str
    folder: Path

    def names(self) -> list[str]:
        """The posteriors present: those with a record, sorted."""
        if self.kind == "flat":
            return sorted(f.name[: -len(".posterior.json")] for f in self.folder.glob("*.posterior.json"))
        return sorted(f.name[: -len(".json")] for f in (self.folder / "posteriors").glob("*.json"))

    def describe(self) -> str:
        what = "posteriordb clone" if self.kind == "clone" else "folder"
        return f"{what} {str(self.folder)!r}"

    def _missing(self, name: str, path: Path) -> FileNotFoundError:
        return FileNotFoundError(
            f"posterior {name!r}: {path.relative_to(self.folder)} is not in {self.describe()}; posteriors "
            f"found there: {', '.join(self.names()) or 'none'}")

    def record(self, name: str) -> dict:
        """The posterior's record (the clone's is required; the flat folder's is optional: ``{}``)."""
        path = self.folder / (f"{name}.posterior.json" if self.kind == "flat" else f"posteriors/{name}.json")
        if not path.is_file():
            if self.kind == "flat":
                return {}
            raise self._missing(name, path)
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)

    def data_file(self, name: str) -> Path:
        if self.kind == "flat":
            path = self.folder / POSTERIORS[name][1]
        else:
            # the record names the data set; POSTERIORS' flat file name is data_DATA.json.zip
            default = POSTERIORS[name][1][len("data_"): -len(".json.zip")] if name in POSTERIORS else name
            path = self.folder / "data" / "data" / f"{self.record(name).get('data_name') or default}.json.zip"
        return self._existing(name, path)

    def draws_file(self, name: str) -> Path:
        if self.kind == "flat":
            return self._existing(name, self.folder / f"{name}.json.zip")
        record = self.record(name)
        key = next((k for k in ("reference_posterior_name", "gold_standard_name") if k in record), None)
        if key is not None and record[key] is None:
            raise ValueError(f"posterior {name!r} has no reference draws in {self.describe()}: its record "
                             f"posteriors/{name}.json has {key}: null")
        ref = record[key] if key is not None else name
        return self._existing(name, self.folder / "reference_posteriors" / "draws" / "draws" / f"{ref}.json.zip")

    def _existing(self, name: str, path: Path) -> Path:
        if path.is_file():
            return path
        unzipped = path.with_suffix("")  # NAME.json.zip -> NAME.json
        if unzipped.is_file():
            return unzipped
        raise self._missing(name, path)


def layout(root=None) -> Layout:
    """The `Layout` of a posteriordb folder (default `data_root()`), detected from its contents.

    A folder holding ``posterior_database/posteriors`` is the root of a clone; one holding
    ``posteriors/`` is a clone's ``posterior_database``; one holding ``*.posterior.json`` records
    is the flat layout. Anything else is a ``ValueError`` naming the folder and both layouts;
    a missing folder is a ``FileNotFoundError``.
    """
    folder = _root(root)
    if (folder / "posterior_database" / "posteriors").is_dir():
        return Layout("clone", folder / "posterior_database")
    if (folder / "posteriors").is_dir():
        return Layout("clone", folder)
    if next(folder.glob("*.posterior.json"), None) is not None:
        return Layout("flat", folder)
    raise ValueError(
        f"folder {str(folder)!r} is in neither posteriordb layout: it has no NAME.posterior.json records "
        "(the flat layout of shared/data/posteriordb) and no posteriors/ folder (a clone of "
        "github.com/stan-dev/posteriordb: posterior_database/posteriors/NAME.json, "
        "posterior_database/reference_posteriors/draws/draws/NAME.json.zip, posterior_database/data/data/DATA.json.zip; "
        "pass the clone's root or its posterior_database folder)")


def _canonical(name: str, root=None) -> str:
    """The full posteriordb name of ``name`` (a full name or a short form); an unknown name raises
    ``ValueError`` listing the posteriors found in the folder looked in and those transcribed."""
    if not isinstance(name, str):
        raise TypeError(f"name must be a string, got {type(name).__name__}")
    if name in POSTERIORS:
        return name
    if name in _ALIASES:
        return _ALIASES[name]
    try:
        found_in = layout(root)
        found, where = found_in.names(), found_in.describe()
    except FileNotFoundError:  # no folder: the name is still unknown, and the message says why
        found, where = [], _looked_in(root)
    transcribed = ", ".join(sorted(POSTERIORS))
    if name in found:
        raise ValueError(
            f"posterior {name!r} is in {where} but has no NumPyro transcription in "
            f"driftax.models.posteriordb; transcribed: {transcribed}")
    raise ValueError(
        f"unknown posterior name {name!r}; found in {where}: {', '.join(found) or 'none'}; "
        f"transcribed: {transcribed} (short forms: {', '.join(sorted(_ALIASES))})")


def _read_zipped_json(path: Path):
    if path.suffix == ".json":
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    with zipfile.ZipFile(path) as zf:
        members = [m for m in zf.namelist() if m.endswith(".json")]
        if len(members) != 1:
            raise ValueError(f"{path}: expected one JSON file inside, found {zf.namelist()}")
        with zf.open(members[0]) as fh:
            return json.load(fh)


def load_data(name: str, root=None) -> dict:
    """The data dict of posterior ``name`` (as in the posteriordb JSON: numbers and lists)."""
    name = _canonical(name, root)
    return _read_zipped_json(layout(root).data_file(name))


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
    name = _canonical(name, root)
    return _merge_draws(_read_zipped_json(layout(root).draws_file(name)))


def _check_reference(name: str, target: Target, reference: dict, where: str) -> None:
    """Every reference parameter must be a site of the model, with the site's shape."""
    sites = target.shapes
    if not reference:
        raise ValueError(f"reference draws of {name!r} in {where} hold no parameters")
    unknown = sorted(k for k in reference if k not in sites)
    if unknown:
        raise ValueError(
            f"reference draws of {name!r} in {where} name {unknown}, which are not sites of the model "
            f"{POSTERIORS[name][0].__name__}; its sites: {sorted(sites)}")
    wrong = [f"{k}: reference {reference[k].shape[2:]}, model {sites[k]}"
             for k in sorted(reference) if tuple(reference[k].shape[2:]) != tuple(sites[k])]
    if wrong:
        raise ValueError(f"reference draws of {name!r} in {where} do not have the model's shapes: "
                         + "; ".join(wrong))


def load(name: str, root=None) -> tuple[Target, dict[str, np.ndarray]]:
    """``(target, reference)`` for a posteriordb posterior.

    Parameters
    ----------
    name
        A key of `POSTERIORS` (``"eight_schools-eight_schools_noncentered"``, ``"arK-arK"``,
        ``"garch-garch11"``, ``"gp_pois_regr-gp_pois_regr"``, ``"arma-arma11"``,
        ``"diamonds-diamonds"``, ``"earnings-logearn_interaction"``, ``"hmm_example-hmm_example"``,
        ``"kidiq-kidscore_interaction"``, ``"low_dim_gauss_mix-low_dim_gauss_mix"``,
        ``"mesquite-logmesquite_logvash"``, ``"nes1996-nes"``, ``"sblrc-blr"``) or the Stan model
        name alone (``"eight_schools"``, ``"arK"``, ``"garch11"``, ``"arma11"``, ``"blr"``, ...).
        An unknown name raises ``ValueError`` listing the posteriors found in the folder looked in.
    root
        The posteriordb folder, flat or a clone of the database (`layout`); default `data_root()`.
        ``FileNotFoundError`` when absent, or when the posterior's files are not in it (the
        message lists the posteriors that are); ``ValueError`` when it is in neither layout, or
        when its reference draws name parameters that are not sites of the model or have other
        shapes (the message names them).

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
    name = _canonical(name, root)
    model, _, arg_names = POSTERIORS[name]
    found_in = layout(root)
    data = _read_zipped_json(found_in.data_file(name))
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
    reference = _merge_draws(_read_zipped_json(found_in.draws_file(name)))
    _check_reference(name, target, reference, found_in.describe())
    return target, reference
