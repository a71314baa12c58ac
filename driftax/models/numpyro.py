"""Any NumPyro model as a driftax `Target`.

The target lives in NumPyro's unconstrained space: for latent sites ``z = T(u)`` with ``T`` the
bijection from ``R^k`` onto each site's support (``biject_to(support)``), the flat log-density is

    log p(u | data) = log p(T(u), data) + log |det J_T(u)|,

the vector ``u`` being the concatenation of every site's unconstrained value (``ravel_pytree``).
``constrain(u)`` returns the constrained latent values and every ``numpyro.deterministic`` site.

A model that subsamples its data through a plate, NumPyro's idiom for minibatches,

    with numpyro.plate("N", len(y), subsample_size=100) as idx:
        numpyro.sample("obs", dist.Bernoulli(logits=X[idx] @ beta), obs=y[idx])

gives a target on all the data (the plate's indices fixed to ``0..N-1``) and a
`DataLikelihood` for SGLD: a minibatch of indices ``I`` is substituted for the plate's, and
NumPyro's plate scales the observed sites inside it by ``N/|I|``, the unbiased estimate
``log p_0(x) + (N/B) Σ_{i∈I} ℓ(x; d_i)`` in one pass of the model.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
from numpyro import handlers
from numpyro.infer.initialization import init_to_median
from numpyro.infer.util import constrain_fn, initialize_model, potential_energy

from driftax.models.base import DataLikelihood, Target

__all__ = ["from_numpyro"]


def _check_model(model, args, kwargs, init_strategy) -> dict:
    """Reject what a continuous sampler cannot handle, naming the site; return the model trace."""
    if not callable(model):
        raise TypeError(f"model must be a NumPyro model (a callable), got {type(model).__name__}")
    # Values from the init strategy, not the prior: improper priors (ImproperUniform) cannot sample.
    seeded = handlers.substitute(handlers.seed(model, jax.random.key(0)), substitute_fn=init_strategy)
    trace = handlers.trace(seeded).get_trace(*args, **kwargs)
    latent = [s for s in trace.values() if s["type"] == "sample" and not s["is_observed"]]
    if not latent:
        raise ValueError("model has no latent sample sites: there is nothing to sample")
    discrete = [s["name"] for s in latent if s["fn"].support.is_discrete]
    if discrete:
        raise ValueError(
            f"model has discrete latent site(s) {discrete}: driftax samples continuous unconstrained "
            "spaces; sum them out in the model (e.g. a mixture distribution) or observe them"
        )
    return trace


def _subsampled_plates(trace) -> dict[str, int]:
    """``{plate name: full size}`` of the plates that subsample (``subsample_size < size``)."""
    return {name: int(site["args"][0]) for name, site in trace.items()
            if site["type"] == "plate" and site["args"][1] is not None and site["args"][1] < site["args"][0]}


def _data_likelihood(model, args, kwargs, trace, plate: str, size: int, unravel) -> DataLikelihood | None:
    """The minibatch form of a model whose data live in the subsampled ``plate`` (module docstring);
    ``None`` when a latent site lies inside the plate (local latents are not data)."""
    in_plate = lambda site: any(f.name == plate for f in site.get("cond_indep_stack", ()))
    if any(site["type"] == "sample" and not site["is_observed"] and in_plate(site) for site in trace.values()):
        return None

    def batch_logdensity(x, indices):
        sub = handlers.substitute(model, data={plate: indices})
        return -potential_energy(sub, args, kwargs, unravel(x))

    full = handlers.substitute(model, data={plate: jnp.arange(size)})
    prior_model = handlers.block(full, hide_fn=lambda msg: msg["type"] == "sample" and msg.get("is_observed")
                                 and in_plate(msg))

    def logprior_fn(x):
        return -potential_energy(prior_model, args, kwargs, unravel(x))

    def loglik_fn(x, i):  # one datum: a batch of one is log p_0 + N ℓ_i
        return (batch_logdensity(x, jnp.reshape(i, (1,))) - logprior_fn(x)) / size

    return DataLikelihood(loglik_fn, jnp.arange(size), logprior_fn, batch_logdensity)


def _plate_dims(trace) -> dict[str, tuple[str, ...]]:
    """ArviZ dims from plates: an axis of a latent or deterministic site inside ``plate("J", 8)``
    is named ``J``; other axes get ArviZ's ``<site>_dim_<i>``."""
    dims = {}
    for name, site in trace.items():
        if not ((site["type"] == "sample" and not site["is_observed"]) or site["type"] == "deterministic"):
            continue
        shape = jnp.shape(site["value"])
        # plate dims count from the right of the batch shape, i.e. left of the event dims
        event_dim = site["fn"].event_dim if site["type"] == "sample" else 0
        axes = [f"{name}_dim_{i}" for i in range(len(shape))]
        for frame in site.get("cond_indep_stack", ()):
            axis = len(shape) - event_dim + frame.dim if frame.dim is not None else -1
            if 0 <= axis < len(shape) and shape[axis] == frame.size:
                axes[axis] = frame.name
        if shape and any(not a.startswith(f"{name}_dim_") for a in axes):
            dims[name] = tuple(axes)
    return dims


def from_numpyro(
    model: Callable,
    *args,
    init_strategy=init_to_median,
    name: str | None = None,
    **kwargs,
) -> Target:
    """Build a `Target` from a NumPyro model and its arguments.

    Parameters
    ----------
    model
        A NumPyro model: a plain function containing ``numpyro.sample`` statements.
    *args, **kwargs
        Arguments the model is called with (data, sizes...).
    init_strategy
        NumPyro initialisation strategy used for chain starting points (each chain draws its own
        with a different key). Default ``init_to_median``: the centred parameterisations of
        hierarchical models are hopeless from ``init_to_uniform``'s wide starts.
    name
        Target name; defaults to the model function's name.

    Returns
    -------
    Target
        ``logdensity_fn`` over the flat unconstrained vector, log-Jacobian included;
        ``constrain`` returns the latent and deterministic sites by name. A model with one
        subsampled data plate also gives a ``data_likelihood`` (module docstring), so
        ``infer.sample(target, "sgld")`` runs on it.
    """
    trace = _check_model(model, args, kwargs, init_strategy)
    subsampled = _subsampled_plates(trace)
    user_model = model
    if subsampled:  # the target is the posterior given all the data
        model = handlers.substitute(model, data={n: jnp.arange(size) for n, size in subsampled.items()})
        trace = _check_model(model, args, kwargs, init_strategy)
    info = initialize_model(
        jax.random.key(0), model, model_args=args, model_kwargs=kwargs,
        init_strategy=init_strategy, dynamic_args=False,
    )
    z0 = info.param_info.z
    flat0, unravel = ravel_pytree(z0)
    potential_fn = info.potential_fn

    def logdensity_fn(x):
        return -potential_fn(unravel(x))

    def constrain(x):
        # Replays the model, so supports that depend on other sites (b in (0, 1 - a)) use the
        # values of this draw rather than those of the initial point.
        return constrain_fn(model, args, kwargs, unravel(x), return_deterministic=True)

    def init_fn(key):
        z = initialize_model(
            key, model, model_args=args, model_kwargs=kwargs,
            init_strategy=init_strategy, dynamic_args=False,
        ).param_info.z
        return ravel_pytree(z)[0]

    data_likelihood = None
    if len(subsampled) == 1:
        (plate, size), = subsampled.items()
        data_likelihood = _data_likelihood(user_model, args, kwargs, trace, plate, size, unravel)

    return Target(
        logdensity_fn=logdensity_fn,
        dim=int(flat0.shape[0]),
        name=name or getattr(model, "__name__", "numpyro_model"),
        constrain=constrain,
        init_fn=init_fn,
        dims=_plate_dims(trace),
        data_likelihood=data_likelihood,
    )
