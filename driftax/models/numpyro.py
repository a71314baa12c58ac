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

Building the target runs the model once, on the init strategy's values, to learn its sites,
their supports and the flat layout. That pass is traced (`jax.eval_shape`), never executed:
executed eagerly, every operation of the model compiles as its own small XLA program, 4.5-13 s
of CPU for a posteriordb posterior, against well under a second traced (`_first_pass`).
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from numpyro import handlers
from numpyro.infer.initialization import init_to_median
from numpyro.infer.util import constrain_fn, initialize_model, potential_energy

from driftax.models.base import DataLikelihood, Target

__all__ = ["from_numpyro"]


class _Site(NamedTuple):
    """What from_numpyro needs of a trace site, static: no array values, so it can leave the
    abstract first pass (`_first_pass`) without leaking a tracer."""

    type: str
    observed: bool
    discrete: bool
    event_dim: int
    shape: tuple[int, ...]
    frames: tuple  # NumPyro's CondIndepStackFrame(name, dim, size) of the enclosing plates
    args: tuple  # a plate's (size, subsample_size); () otherwise


def _light(trace) -> dict[str, _Site]:
    out = {}
    for name, site in trace.items():
        fn = site.get("fn")
        is_sample = site["type"] == "sample"
        out[name] = _Site(
            type=site["type"],
            observed=bool(site.get("is_observed", False)),
            discrete=bool(is_sample and fn.support.is_discrete),
            event_dim=int(fn.event_dim) if is_sample else 0,
            shape=tuple(jnp.shape(site["value"])) if site["type"] in ("sample", "deterministic") else (),
            frames=tuple(site.get("cond_indep_stack", ())),
            args=tuple(site["args"]) if site["type"] == "plate" else (),
        )
    return out


def _check_sites(sites: dict[str, _Site]) -> None:
    """Reject what a continuous sampler cannot handle, naming the site."""
    latent = [n for n, s in sites.items() if s.type == "sample" and not s.observed]
    if not latent:
        raise ValueError("model has no latent sample sites: there is nothing to sample")
    discrete = [n for n in latent if sites[n].discrete]
    if discrete:
        raise ValueError(
            f"model has discrete latent site(s) {discrete}: driftax samples continuous unconstrained "
            "spaces; sum them out in the model (e.g. a mixture distribution) or observe them"
        )


def _first_pass(model, args, kwargs, init_strategy, user_model=True):
    """The model's first pass, abstractly: ``({site: _Site}, potential_fn, z_shapes)``.

    It runs under `jax.eval_shape`, which traces the model (and NumPyro's `initialize_model`:
    the init strategy's draws, the potential and its gradient at them) without compiling or
    executing anything. Run eagerly, the same pass dispatches every operation of the model as its
    own small XLA program, which cost 4.5-13 s of CPU per posteriordb posterior; traced, it costs
    what tracing does. What leaves the trace is static: site metadata (`_Site`), the shapes of
    the unconstrained latent values (``z_shapes``, which fix the flat vector's layout), and
    `initialize_model`'s ``potential_fn``, which closes over the model and its arguments only, so
    it holds no tracer unless the model has ``param``/``mutable`` sites (NumPyro substitutes
    their values from the trace); for those it is ``None`` and `from_numpyro` initialises
    eagerly, as before. For ``user_model`` with a subsampled plate it stops after the checks:
    `from_numpyro` fixes the plate's indices and passes the result with ``user_model=False``.

    What eager construction checked and this does not: that the init strategy's point has a
    finite potential and gradient (NumPyro's "Cannot find valid initial parameters"). Under
    tracing that flag has no value; `driftax.infer.sample` checks the log-density and its
    gradient at every chain's start instead and names the chains where they are not finite.
    """
    box = {}

    def run(key):
        seeded = handlers.substitute(handlers.seed(model, key), substitute_fn=init_strategy)
        sites = _light(handlers.trace(seeded).get_trace(*args, **kwargs))
        _check_sites(sites)
        box["sites"] = sites
        if user_model and _subsampled_plates(sites):
            return None  # from_numpyro fixes the plate's indices first, then comes back
        if any(s.type in ("param", "mutable") for s in sites.values()):
            return None  # their values would leave the trace inside potential_fn: eager below
        info = initialize_model(key, model, model_args=args, model_kwargs=kwargs,
                                init_strategy=init_strategy, dynamic_args=False)
        box["potential_fn"] = info.potential_fn  # the rest of ModelInfo holds tracers: it stays behind
        return info.param_info.z

    z_shapes = jax.eval_shape(run, jax.random.key(0))
    return box["sites"], box.get("potential_fn"), z_shapes


def _subsampled_plates(sites: dict[str, _Site]) -> dict[str, int]:
    """``{plate name: full size}`` of the plates that subsample (``subsample_size < size``)."""
    return {name: int(s.args[0]) for name, s in sites.items()
            if s.type == "plate" and s.args[1] is not None and s.args[1] < s.args[0]}


def _data_likelihood(model, args, kwargs, sites, plate: str, size: int, unravel) -> DataLikelihood | None:
    """The minibatch form of a model whose data live in the subsampled ``plate`` (module docstring);
    ``None`` when a latent site lies inside the plate (local latents are not data)."""
    in_plate = lambda msg: any(f.name == plate for f in msg.get("cond_indep_stack", ()))  # a live site
    if any(s.type == "sample" and not s.observed and any(f.name == plate for f in s.frames)
           for s in sites.values()):
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


def _plate_dims(sites: dict[str, _Site]) -> dict[str, tuple[str, ...]]:
    """ArviZ dims from plates: an axis of a latent or deterministic site inside ``plate("J", 8)``
    is named ``J``; other axes get ArviZ's ``<site>_dim_<i>``."""
    dims = {}
    for name, site in sites.items():
        if not ((site.type == "sample" and not site.observed) or site.type == "deterministic"):
            continue
        shape = site.shape
        # plate dims count from the right of the batch shape, i.e. left of the event dims
        event_dim = site.event_dim
        axes = [f"{name}_dim_{i}" for i in range(len(shape))]
        for frame in site.frames:
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
    if not callable(model):
        raise TypeError(f"model must be a NumPyro model (a callable), got {type(model).__name__}")
    sites, potential_fn, z_shapes = _first_pass(model, args, kwargs, init_strategy)
    subsampled = _subsampled_plates(sites)
    user_model = model
    if subsampled:  # the target is the posterior given all the data
        model = handlers.substitute(model, data={n: jnp.arange(size) for n, size in subsampled.items()})
        sites, potential_fn, z_shapes = _first_pass(model, args, kwargs, init_strategy, user_model=False)
    if potential_fn is None:  # param/mutable sites: NumPyro fixes them at their traced values
        info = initialize_model(jax.random.key(0), model, model_args=args, model_kwargs=kwargs,
                                init_strategy=init_strategy, dynamic_args=False)
        potential_fn, z_shapes = info.potential_fn, info.param_info.z
    # the flat vector's layout: ravel_pytree of the unconstrained latent values (only their
    # shapes and dtypes matter, so zeros of the traced shapes give the same unravel)
    flat0, unravel = ravel_pytree(jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), z_shapes))

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
        data_likelihood = _data_likelihood(user_model, args, kwargs, sites, plate, size, unravel)

    return Target(
        logdensity_fn=logdensity_fn,
        dim=int(flat0.shape[0]),
        name=name or getattr(model, "__name__", "numpyro_model"),
        constrain=constrain,
        init_fn=init_fn,
        dims=_plate_dims(sites),
        data_likelihood=data_likelihood,
    )
