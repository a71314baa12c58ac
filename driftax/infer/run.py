"""`sample`: many chains of a kernel from the registry, compiled in chunks, sharded over devices.

The loop (DESIGN.md, "The sampling loop"): a Python loop over chunks calls one compiled program
that runs ``chunk`` steps of every chain (``vmap`` over the chains of a device, ``lax.scan`` over
steps, ``shard_map`` over a 1-D mesh of all devices). Between chunks the kept draws are copied
into preallocated host arrays and the progress bar advances, so the bar never enters compiled
code and device memory never holds more than one chunk of draws. Each device carries its own
generator state and draws the noise of its chains in blocks of steps (`driftax.samplers.rng`);
the draws are reproducible from the seed for a given number of devices, chains, dimension and
thinning (these set the block layout). ``chunk_size`` and ``progress`` do not change which noise
drives which step (padding steps of the last warm-up chunk draw none), so they change the draws
only through floating-point rounding where XLA compiles the chunk programs differently.

Several hosts join through ``jax.distributed.initialize`` before calling `sample`; every
process then calls `sample` with the same arguments, each runs the chains of its devices, and
the draws are all-gathered so every process returns the full InferenceData.
"""
from __future__ import annotations

import functools
import time
import weakref
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, PartitionSpec as P

from driftax._checks import check_int, check_real, key_from_seed
from driftax._sharding import batch_mesh, place, replicate, to_host
from driftax.infer import adaptation, diagnostics, initialise, methods
from driftax.models.base import Target
from driftax.samplers import averaging, rng as fast_rng

__all__ = ["sample"]

_AXIS = "chain"
_NOISE_BYTES = 4 << 20
_ADAPT_STREAM = 2**31 - 1  # fold_in index of a method's own warm-up key (devices' streams are 0, 1, ...)
_MIN_OWN_WARMUP = 10


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


# --- the driver ---------------------------------------------------------------------------------
def sample(
    target: Target,
    method="nuts",
    *,
    num_chains: int = 4,
    num_samples: int = 1000,
    num_warmup: int = 1000,
    thinning: int = 1,
    seed=0,
    init=None,
    progress: bool = True,
    step_size: float | None = None,
    adapt_step_size: bool = True,
    mass_matrix: str | None = "auto",
    target_acceptance: float | None = None,
    chunk_size: int | None = None,
    unroll: int = 1,
    average=None,
):
    """Draw ``num_samples`` per chain from ``target`` with a registered kernel; return ArviZ data.

    Warm-up (``num_warmup`` steps) adapts one step size shared by all chains by dual averaging
    towards ``target_acceptance`` and, with ``mass_matrix="diag"`` or ``"dense"``, the inverse
    mass matrix from the pooled variance of all chains in Stan's doubling windows
    (`driftax.infer.adaptation`). Sampling then runs ``num_samples * thinning`` steps and keeps
    every ``thinning``-th state.

    Parameters
    ----------
    target
        A `driftax.models.Target` (from `from_numpyro`, the gallery, or built by hand).
    method
        A name in `driftax.infer.methods.available()` or a `methods.Method`. The default,
        ``"nuts"``, proved the most reliable of the registry on the posteriordb posteriors: with 4
        chains x 1,000 warm-up + 1,000 draws and default settings (float64), NUTS reached
        eight_schools, arK, garch11 and gp_pois_regr within 0.04 reference sd in mean and 5 % in
        sd, R-hat <= 1.01, bulk ESS >= 1,248, where MALA ended 0.09-0.59 sd off in mean with R-hat
        1.02-3.3 and bulk ESS 4-263 (benchmarks/RESULTS.md). NUTS spends 7-127 gradients a draw to
        MALA's one, and still gives more effective draws per gradient on all four. ``"mala"`` is
        the cheapest per step on smooth, well-scaled targets; ``"ula"``, ``"sgld"`` and
        ``"spherical"`` serve averaged estimators (``average=``). ``"hmc_chees"`` (jittered HMC
        whose trajectory length is tuned across chains) and ``"mclmc"`` (microcanonical Langevin,
        unadjusted: a small bias set by its step size) bring their own warm-up
        (`driftax.samplers.hmc.chees_warmup`, `driftax.samplers.mclmc.warmup`) in place of the
        windowed one below; they are built for many chains at once.
    num_chains, num_samples, num_warmup, thinning
        Chains (``>= 1``), kept draws per chain (``>= 1``), warm-up steps (``>= 0``), steps per
        kept draw (``>= 1``).
    seed
        Integer seed or ``jax.random`` key: same seed, same devices, same draws.
    init
        Starting points ``(num_chains, dim)`` or ``(dim,)`` in the unconstrained space; default:
        one draw of the target's ``init_fn`` per chain. ``"pathfinder"``: from each of those
        draws, Pathfinder (`driftax.infer.initialise`) carries the chain into the typical set
        and the best chain's Gaussian approximation gives the warm-up its first metric, which
        is what a posterior far from the starts, or far narrower or more correlated than the
        identity metric, needs (a regression with coefficient sds of 1e-3, or on an uncentred
        covariate); it costs one L-BFGS run per chain (at most 100 iterations). Methods with
        their own warm-up (``"hmc_chees"``, ``"mclmc"``) take the starting points only.
    progress
        Show a progress bar (updated between compiled chunks).
    step_size
        Initial (or, with ``adapt_step_size=False``, fixed) step size; default: the method's.
    mass_matrix
        ``"diag"``, ``"dense"`` or ``None`` (identity, not adapted); ``"auto"``: the method's
        ``default_mass_matrix``, ``"diag"`` but for ``"spherical"``, whose fixed step size a metric
        would rescale: ask for one explicitly, and give the step in its units (the covariance of
        the draws on the sphere).
        ``"hmc_chees"`` estimates a diagonal one only; ``"mclmc"`` a diagonal or a dense one
        (`driftax.samplers.mclmc.warmup`).
    target_acceptance
        Acceptance rate aimed at in warm-up; default: the method's (0.574 for MALA; none for ULA,
        whose step size is then the one given, but ULA reports the acceptance MALA would have had,
        so ``target_acceptance=`` tunes it too). An error for methods without one (SGLD, spherical).
    chunk_size
        Steps (warm-up) or draws (sampling) per compiled call, rounded up to a whole number of
        noise blocks (up to 32 steps); default: about 1/10 of the warm-up and 1/20 of the draws.
    average
        Carry running averages of the constrained sites through the sampling phase, inside the
        compiled loop and over every step (not only the kept draws): ``"polyak"`` (every step
        after warm-up), ``"tail"`` (the last half), ``"swa"`` (every 10th step of the last half),
        ``"weighted"`` (every step weighted by its step size: SGLD with a decreasing schedule),
        ``"swag"`` (the SWA schedule plus SWAG's last 20 deviations of the flat position:
        ``swag_mean``, ``swag_var``, ``swag_deviations``, ``swag_counted``; covariance by
        `driftax.samplers.averaging.swag_covariance`), or a `driftax.samplers.averaging.Schedule`. They come back in the ``averages`` group: per
        chain, ``{site}`` (the mean), ``{site}_var`` (the weighted variance) and ``weight``; pool
        them over chains with `driftax.infer.diagnostics.pooled_averages`.
    unroll
        ``lax.scan`` unroll factor of the inner loop (a speed knob). The same noise drives the same
        steps, but XLA may fuse unrolled steps differently, so draws can differ by rounding
        (measured: about 1e-6 in float32), and where a rounding difference flips an
        accept/reject decision the two chains part ways from there on.

    Returns
    -------
    arviz.InferenceData
        ``posterior``: every constrained site of the target (deterministic sites included) with
        dims ``(chain, draw, ...)``; ``sample_stats``: ``lp``, ``acceptance_rate``, ``diverging``,
        ``step_size`` (and for NUTS ``n_steps``, ``tree_depth``, ``energy``; for ChEES ``n_steps``,
        ``energy``; for MCLMC ``energy_error``, and an ``acceptance_rate`` of NaN, as it has no
        Metropolis step: ArviZ's names, so ``az.summary`` and ``az.plot_energy`` work); attrs:
        method, warm-up, final step size, devices, sampling time, ``num_grad_evals_warmup`` /
        ``num_grad_evals_sampling`` (the gradient evaluations of all chains; an SGLD minibatch
        counts B/N), ``num_warmup_divergences`` (where the warm-up reports them: MCLMC's tuner
        does not), and the parameters a method's own warm-up tuned (``adapted_num_leapfrog_steps``
        for ChEES, ``adapted_L`` for MCLMC).
    """
    opts = _validate(target, method, num_chains=num_chains, num_samples=num_samples, num_warmup=num_warmup,
                     thinning=thinning, seed=seed, step_size=step_size, adapt_step_size=adapt_step_size,
                     mass_matrix=mass_matrix, target_acceptance=target_acceptance, chunk_size=chunk_size,
                     unroll=unroll, average=average)
    key_init, key_rng = jax.random.split(opts.key)
    positions, first_metric = _initial_positions(target, init, num_chains, key_init, opts.dtype, opts.mass_matrix)
    mesh = batch_mesh(num_chains, _AXIS)
    layout = _layout(opts, mesh.devices.size, target.dim)
    progs = _programs(target, opts.method, mesh, opts.mass_matrix, opts.adapt_step_size and num_warmup > 0,
                      float(opts.target_acceptance or 0.5), num_warmup > 0, layout.w_chunk, layout.d_chunk,
                      thinning, opts.unroll, layout.block, layout.draws_per_block, jnp.dtype(opts.dtype))
    states, rng_state = _start(progs, positions, key_rng, mesh)

    bar = _progress(num_warmup + num_samples * thinning, progress and jax.process_index() == 0)
    t0 = time.perf_counter()
    if opts.method.adapt is not None:
        states, step, imm, params, warmup_divergences, warmup_grads = _own_warm_up(
            progs, states, jax.random.fold_in(key_rng, _ADAPT_STREAM), opts, bar)
    else:
        states, rng_state, step, imm, warmup_divergences, warmup_grads = _warm_up(
            progs, states, rng_state, opts, layout, target.dim, mesh, bar, first_metric)
        params = ()
    states, posterior, stats, sampling_grads = _draw(progs, states, rng_state, step, imm, params, target, opts,
                                                     layout, bar)
    bar.close()
    elapsed = time.perf_counter() - t0

    attrs = {
        "inference_library": "driftax",
        "method": opts.method.name,
        "target": target.name,
        "num_warmup": num_warmup,
        "thinning": thinning,
        "step_size": float(step),
        "mass_matrix": str(opts.mass_matrix),
        "num_devices": int(mesh.devices.size),
        "num_grad_evals_warmup": float(warmup_grads),
        "num_grad_evals_sampling": float(sampling_grads),
        "sampling_time": float(elapsed),
    }
    if warmup_divergences is not None:  # MCLMC's tuner does not report its divergences
        attrs["num_warmup_divergences"] = int(warmup_divergences)
    attrs.update({f"adapted_{name}": float(v) for name, v in zip(opts.method.param_names, params)})
    idata = diagnostics.to_inference_data(posterior, stats, attrs=attrs, dims=target.dims)
    if average is not None:
        _add_averages(idata, states, target)
    return idata


# --- validation ---------------------------------------------------------------------------------
class _Options(NamedTuple):
    """`sample`'s arguments after the boundary checks, with the method's defaults filled in."""

    method: methods.Method
    num_chains: int
    num_samples: int
    num_warmup: int
    thinning: int
    step_size: float
    adapt_step_size: bool
    mass_matrix: str | None
    target_acceptance: float | None
    chunk_size: int | None
    unroll: int
    key: jax.Array
    dtype: object


def _validate(target, method, *, num_chains, num_samples, num_warmup, thinning, seed, step_size,
              adapt_step_size, mass_matrix, target_acceptance, chunk_size, unroll, average) -> _Options:
    if not isinstance(target, Target):
        raise TypeError(
            f"target must be a driftax.models.Target, got {type(target).__name__}; wrap a log-density "
            "with driftax.models.Target(logdensity_fn, dim)")
    method = methods.get(method)
    num_chains = check_int("num_chains", num_chains, 1)
    num_samples = check_int("num_samples", num_samples, 1)
    num_warmup = check_int("num_warmup", num_warmup, 0)
    thinning = check_int("thinning", thinning, 1)
    unroll = check_int("unroll", unroll, 1)
    given_step_size = step_size is not None
    if step_size is None:
        step_size = method.default_step_size
    step_size = check_real("step_size", step_size, positive=True)
    if mass_matrix not in ("auto", "diag", "dense", None):
        raise ValueError(f"mass_matrix must be 'auto', 'diag', 'dense' or None, got {mass_matrix!r}")
    if mass_matrix == "auto":
        mass_matrix = method.default_mass_matrix if method.takes_metric else None
    if mass_matrix is not None and not method.takes_metric:
        raise ValueError(f"method {method.name!r} takes no mass matrix; pass mass_matrix=None")
    if mass_matrix is not None and mass_matrix not in method.mass_matrices:
        raise ValueError(f"method {method.name!r} adapts no {mass_matrix!r} mass matrix; pass mass_matrix="
                         f"{' or '.join(repr(m) for m in method.mass_matrices)} or None")
    density = method.bind(target)  # errors for a target the method cannot use (SGLD without data)
    _check_differentiable(target, method)
    if method.adapt is not None:
        _check_own_warm_up(method, num_warmup, adapt_step_size, average, given_step_size)
    if target_acceptance is not None and not method.reports_acceptance:
        raise ValueError(f"target_acceptance does not apply to method {method.name!r}: it has no Metropolis "
                         "acceptance to tune the step size by; pass step_size= instead")
    if target_acceptance is None:
        target_acceptance = method.target_acceptance
    if target_acceptance is None:
        adapt_step_size = False  # no acceptance to aim at: the step size is the caller's
    else:
        try:
            target_acceptance = float(target_acceptance)
        except (TypeError, ValueError):
            raise TypeError(f"target_acceptance must be a number in (0, 1), got {target_acceptance!r}") from None
        if not 0 < target_acceptance < 1:
            raise ValueError(f"target_acceptance must lie in (0, 1), got {target_acceptance!r}")
    if chunk_size is not None:
        chunk_size = check_int("chunk_size", chunk_size, 1)
    if not isinstance(adapt_step_size, (bool, np.bool_)):
        raise TypeError(f"adapt_step_size must be True or False, got {adapt_step_size!r}")
    key = key_from_seed(seed)
    dtype = jnp.result_type(float)  # float64 when the caller has enabled jax_enable_x64
    if average is not None:
        schedule = averaging.schedule_from(average, num_samples * thinning)
        if schedule.weighted and not _reports_step_size(method, density, target.dim, dtype):
            raise ValueError(f"average='weighted' weights iterates by their step size, which method "
                             f"{method.name!r} keeps fixed; use average='polyak'")
        method = methods.with_average(method, target.constrain, schedule)
    return _Options(method, num_chains, num_samples, num_warmup, thinning, step_size, bool(adapt_step_size),
                    mass_matrix, target_acceptance, chunk_size, unroll, key, dtype)


# Targets whose gradient traced (per float dtype): the trace costs as much as a short run's whole
# sampling on a small model (0.06 s of 0.26 s, eight_schools, 4 x (500 + 500)), so it is done once.
_DIFFERENTIABLE: "weakref.WeakKeyDictionary[Target, set]" = weakref.WeakKeyDictionary()


def _check_differentiable(target: Target, method: methods.Method) -> None:
    """Every registered kernel follows the gradient: trace ``value_and_grad`` of the log-density
    once, abstractly, so a density JAX cannot differentiate (NumPy code, a callback without a JVP,
    an integer result) fails here, by name, rather than deep inside the compiled loop."""
    x = jax.ShapeDtypeStruct((target.dim,), jnp.result_type(float))
    if x.dtype in _DIFFERENTIABLE.get(target, ()):
        return
    try:
        jax.eval_shape(jax.value_and_grad(target.logdensity_fn), x)
        _DIFFERENTIABLE.setdefault(target, set()).add(x.dtype)
    except Exception as err:  # noqa: BLE001 - any failure to trace the gradient is the same input error
        msg = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise ValueError(
            f"method {method.name!r} needs the gradient of the log-density of {target.name!r}, and JAX cannot "
            f"differentiate it ({type(err).__name__}: {msg[:300]}); write the log-density with jax.numpy "
            "operations of a real-valued, differentiable function of a float vector") from err


def _check_own_warm_up(method: methods.Method, num_warmup: int, adapt_step_size, average, given_step_size) -> None:
    """Options a method with its own warm-up (ChEES, MCLMC) cannot honour are errors, not ignored."""
    if num_warmup < _MIN_OWN_WARMUP:
        raise ValueError(f"method {method.name!r} tunes its kernel in its own warm-up: num_warmup must be at least "
                         f"{_MIN_OWN_WARMUP} (hundreds are usual), got {num_warmup}")
    if not adapt_step_size:
        raise ValueError(f"adapt_step_size=False does not apply to method {method.name!r}: its warm-up always tunes "
                         "the step size with the rest of its kernel")
    if average is not None:
        raise ValueError(f"average= does not apply to method {method.name!r}; averages serve the Langevin kernels "
                         "('ula', 'sgld', 'spherical', 'mala', 'nuts')")
    if given_step_size and not method.takes_step_size:
        raise ValueError(f"step_size= does not apply to method {method.name!r}: its warm-up starts from a step "
                         "size of its own")


def _initial_positions(target: Target, init, num_chains: int, key, dtype, mass_matrix):
    """``(positions, first inverse mass matrix or None)`` from ``init`` (module docstring of `sample`)."""
    if isinstance(init, str):
        if init != "pathfinder":
            raise ValueError(f"init must be None, 'pathfinder' or an array of starting points, got {init!r}")
        k_start, k_path = jax.random.split(key)
        starts = _initial_positions(target, None, num_chains, k_start, dtype, mass_matrix)[0]
        x, imm, _ = initialise.pathfinder_starts(target.logdensity_fn, starts, k_path, mass_matrix)
        return np.asarray(x, dtype), None if imm is None else np.asarray(imm, dtype)
    if init is None:
        x = np.asarray(target.initial_positions(key, num_chains), dtype)
        if x.shape != (num_chains, target.dim):
            raise ValueError(f"target.init_fn must return a vector of shape ({target.dim},); "
                             f"initial_positions gave {x.shape} for {num_chains} chains")
    else:
        x = np.asarray(init, dtype)
        if x.shape == (target.dim,):
            x = np.broadcast_to(x, (num_chains, target.dim)).copy()
        if x.shape != (num_chains, target.dim):
            raise ValueError(
                f"init must have shape (num_chains, dim) = ({num_chains}, {target.dim}) or "
                f"(dim,) = ({target.dim},), got {x.shape}"
            )
    if not np.all(np.isfinite(x)):
        bad = np.unique(np.nonzero(~np.isfinite(x))[0]).tolist()
        raise ValueError(f"init has non-finite values (chains {bad})")
    return x, None


# --- layout of steps into noise blocks and compiled chunks ----------------------------------------
class _Layout(NamedTuple):
    block: int  # steps per noise draw
    draws_per_block: int
    w_chunk: int  # warm-up steps per compiled call
    n_w_chunks: int
    stage: np.ndarray  # (n_w_chunks * w_chunk // block, block): adaptation stage of every warm-up step
    window_end: np.ndarray
    d_chunk: int  # kept draws per compiled call
    n_d_chunks: int


def _layout(opts: _Options, n_dev: int, dim: int) -> _Layout:
    """Steps per noise block: up to 32, with at most _NOISE_BYTES of noise per device; chunks are
    whole blocks, about 1/10 of the warm-up and 1/20 of the draws unless ``chunk_size`` is given."""
    chains_local = opts.num_chains // n_dev
    row_bytes = jnp.dtype(opts.dtype).itemsize * chains_local * opts.method.noise_size(dim)
    block = int(max(1, min(32, _NOISE_BYTES // row_bytes)))
    draws_per_block = max(1, block // opts.thinning)
    w_chunk = _round_up(opts.chunk_size or max(1, min(512, -(-opts.num_warmup // 10))), block)
    n_w_chunks = -(-opts.num_warmup // w_chunk) if opts.num_warmup else 0
    stage, window_end = adaptation.schedule(opts.num_warmup, n_w_chunks * w_chunk)
    d_chunk = _round_up(opts.chunk_size or max(1, min(512, -(-opts.num_samples // 20))), draws_per_block)
    return _Layout(block, draws_per_block, w_chunk, n_w_chunks, stage.reshape(-1, block),
                   window_end.reshape(-1, block), d_chunk, -(-opts.num_samples // d_chunk))


# --- the phases -------------------------------------------------------------------------------------
def _start(progs: "_Programs", positions: np.ndarray, key_rng, mesh: Mesh):
    """Initial chain states on the mesh and one generator state per device. A start where the
    density or its gradient is not finite is an input error."""
    states = progs.init(place(positions, mesh, P(_AXIS)))
    lp0, grad_ok = to_host((states.logdensity, progs.grad_finite(states)))
    bad = np.nonzero(~(np.isfinite(lp0) & grad_ok))[0]
    if bad.size:
        raise ValueError(
            f"init: the log-density or its gradient is not finite at the start of chains {bad.tolist()} "
            f"(log-density {lp0[bad[:5]].tolist()}); pass finite starting points with init=")
    rng_states = np.stack([np.asarray(fast_rng.state_from_key(jax.random.fold_in(key_rng, d)))
                           for d in range(mesh.devices.size)])
    return states, place(rng_states, mesh, P(_AXIS))


def _warm_up(progs: "_Programs", states, rng_state, opts: _Options, layout: _Layout, dim: int, mesh: Mesh, bar,
             first_metric=None):
    """Run the warm-up chunks; return the states, the generator, the adapted step size and inverse
    mass matrix, the number of divergent warm-up steps and the gradient evaluations (all chains)."""
    if opts.mass_matrix is None:
        first_metric = None
    elif first_metric is None:  # identity until the first slow window closes
        first_metric = jnp.eye(dim, dtype=opts.dtype) if opts.mass_matrix == "dense" else jnp.ones(dim, opts.dtype)
    ad_state = progs.ad_init(opts.step_size, None if first_metric is None else jnp.asarray(first_metric, opts.dtype))
    # Replicated on the mesh as the warm-up program returns it: a state of another sharding would
    # make the second chunk's call compile the whole warm-up program again (it did, doubling the
    # compile time of every warmed-up run).
    ad_state = replicate(ad_state, mesh)
    divergences, grad_evals = 0, 0.0
    per_chunk = layout.w_chunk // layout.block

    def report(c, step_size, acc, n_div, n_grad):
        nonlocal divergences, grad_evals
        divergences += int(np.asarray(n_div).sum())
        grad_evals += float(np.asarray(n_grad, np.float64).sum())
        bar.update(min(layout.w_chunk, opts.num_warmup - c * layout.w_chunk))
        bar.set_postfix(phase="warmup", step_size=f"{float(step_size):.3g}",
                        accept=f"{float(np.nanmean(np.asarray(acc))):.2f}", refresh=False)

    pending = None
    for c in range(layout.n_w_chunks):
        sl = slice(c * per_chunk, (c + 1) * per_chunk)
        states, rng_state, ad_state, acc, n_div, n_grad = progs.warmup(
            states, rng_state, ad_state, jnp.asarray(layout.stage[sl]), jnp.asarray(layout.window_end[sl]))
        # Report the previous chunk only now: reading its results waits for it, and with this
        # chunk already queued the device never idles on the host (the loop's fixed cost per
        # chunk, not the steps, decides a short run on a small model).
        if pending is not None:
            report(*pending)
        pending = (c, ad_state.step_size, acc, n_div, n_grad)
    if pending is not None:
        report(*pending)
    step, imm = progs.ad_final(ad_state)
    if progs.start_sampling is not None:
        states = progs.start_sampling(states)
    return states, rng_state, jnp.asarray(step, opts.dtype), imm, divergences, grad_evals


def _own_warm_up(progs: "_Programs", states, key, opts: _Options, bar):
    """A method's own warm-up (`methods.Method.adapt`), one compiled program over all chains;
    returns what `_warm_up` does, plus the kernel parameters it tuned."""
    bar.set_postfix(phase=f"warmup ({opts.method.name}'s own)", refresh=True)
    adapted = progs.adapt(states.position, key, jnp.asarray(opts.step_size, opts.dtype), opts.num_warmup)
    step, grads = float(adapted.step_size), float(adapted.grad_evals)
    if not (np.isfinite(step) and step > 0) or not all(np.isfinite(float(p)) for p in adapted.params):
        raise FloatingPointError(
            f"method {opts.method.name!r}: its warm-up ended with a step size of {step} and parameters "
            f"{[float(p) for p in adapted.params]}; the target's log-density or gradient is likely not finite "
            "where the chains went (try init=, or more num_warmup)")
    bar.update(opts.num_warmup)
    divergences = None if adapted.divergences is None else int(adapted.divergences)
    return (adapted.states, jnp.asarray(step, opts.dtype), adapted.inverse_mass_matrix, adapted.params,
            divergences, grads)


def _draw(progs: "_Programs", states, rng_state, step, imm, params, target: Target, opts: _Options,
          layout: _Layout, bar):
    """Run the sampling chunks, copying each chunk's draws into preallocated host arrays; return
    the final states, the draws, the sample stats and the gradient evaluations (all chains)."""
    n, s = opts.num_chains, opts.num_samples
    out_shapes = jax.eval_shape(target.constrain, jax.ShapeDtypeStruct((target.dim,), opts.dtype))
    posterior = {k: np.empty((n, s) + v.shape, v.dtype) for k, v in out_shapes.items()}
    stats = {}  # allocated from the first chunk's names and dtypes
    n_divergent, grad_evals = 0, 0.0

    def collect(c, draws, chunk_stats):
        nonlocal n_divergent, grad_evals
        draws, chunk_stats = to_host((draws, chunk_stats))
        lo, hi = c * layout.d_chunk, min((c + 1) * layout.d_chunk, s)
        for name, arr in draws.items():
            posterior[name][:, lo:hi] = np.moveaxis(arr[: hi - lo], 0, 1)
        grad_evals += float(chunk_stats.pop("_grad_evals")[: hi - lo].astype(np.float64).sum())
        for name, arr in chunk_stats.items():
            stats.setdefault(name, np.empty((n, s), arr.dtype))[:, lo:hi] = arr[: hi - lo].T
        n_divergent += int(chunk_stats["diverging"][: hi - lo].sum())
        bar.update((hi - lo) * opts.thinning)
        accept = stats["acceptance_rate"][:, :hi]
        bar.set_postfix(phase="sampling", divergent=n_divergent, refresh=False,
                        **({} if np.isnan(accept).all() else {"accept": f"{np.nanmean(accept):.2f}"}))

    pending = None  # a chunk's draws are copied out while the next chunk runs (as in `_warm_up`)
    for c in range(layout.n_d_chunks):
        states, rng_state, draws, chunk_stats = progs.sample(states, rng_state, step, imm, params)
        if pending is not None:
            collect(*pending)
        pending = (c, draws, chunk_stats)
    collect(*pending)
    if "step_size" not in stats:
        stats["step_size"] = np.full((n, s), float(step), np.float32)
    return states, posterior, stats, grad_evals


def _add_averages(idata, states, target: Target) -> None:
    """The in-loop averages (and SWAG's buffers) into the ``averages`` group."""
    moments = to_host(states.moments)
    extra = None
    if states.deviations is not None:  # SWAG: flat-position moments and the last deviations
        flat, dev, counted = to_host((states.flat, states.deviations, states.counted))
        extra = {"swag_mean": (("chain", "position"), flat.mean),
                 "swag_var": (("chain", "position"), flat.m2 / np.maximum(flat.weight, 1e-300)[:, None]),
                 "swag_deviations": (("chain", "swag_rank", "position"), dev),
                 "swag_counted": (("chain",), counted)}
    diagnostics.add_averages(idata, moments.weight, moments.mean, moments.m2, dims=target.dims, extra=extra)


def _reports_step_size(method: methods.Method, density, dim: int, dtype) -> bool:
    """Whether the kernel's info carries the step size it used (traced once, abstractly). Methods
    with their own warm-up keep the step size it found."""
    if method.adapt is not None:
        return False
    x = jax.ShapeDtypeStruct((dim,), dtype)
    state = jax.eval_shape(lambda p: method.init(p, density), x)
    noise = jax.ShapeDtypeStruct((method.noise_size(dim),), dtype)
    _, info = jax.eval_shape(lambda s, z: method.step(s, z, density, 0.1, None), state, noise)
    return "step_size" in getattr(info, "_fields", ())


class _Programs(NamedTuple):
    init: Callable
    grad_finite: Callable
    ad_init: Callable
    ad_final: Callable
    warmup: Callable
    sample: Callable
    start_sampling: Callable | None
    reports_step_size: bool
    adapt: Callable | None


@functools.lru_cache(maxsize=8)  # holds targets (and their data) alive: keep it small
def _programs(target: Target, method: methods.Method, mesh: Mesh, mass_matrix, adapt_step_size: bool,
              target_acceptance: float, warmup: bool, w_chunk: int, d_chunk: int, thinning: int,
              unroll: int, block: int, draws_per_block: int, dtype) -> _Programs:
    """The compiled chunk programs, cached so repeated calls on one target compile once.

    Noise is drawn ``block`` steps at a time (``draws_per_block * thinning`` when sampling): one
    generator call has a fixed cost that dwarfs a step of a small model (measured 0.8x BlackJAX's
    speed with a call per step, 1.9x with a call per 32 steps, 100-d Gaussian, 64 chains).
    """
    dim = target.dim
    chain_spec, rep = P(_AXIS), P()
    logdensity_fn, step, n_noise = method.bind(target), method.step, method.noise_size(dim)
    warmup_step = method.warmup_step or step

    def grads(info):
        """Gradient evaluations of one step, per chain (float32: SGLD's are fractions)."""
        g = method.grad_evals(info, logdensity_fn)
        return jnp.broadcast_to(jnp.asarray(g, jnp.float32), info.diverging.shape)
    reports_step_size = _reports_step_size(method, logdensity_fn, dim, dtype)
    ad_init, ad_update, ad_final = adaptation.window_adaptation(
        target_acceptance, dim, mass_matrix if warmup else None, adapt_step_size, axis_name=_AXIS, dtype=dtype)

    def metric(imm):
        # a dense metric is factorised once per block of steps, not at every step
        return method.dense_metric(imm) if mass_matrix == "dense" else imm

    def shard(f, in_specs, out_specs):
        return jax.jit(jax.shard_map(f, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False))

    def steps(chain_states, noise, step_size, imm, params):
        """Run ``len(noise)`` steps of every local chain; return the final states and the infos."""
        def body(states, z):
            return jax.vmap(lambda s, e: step(s, e, logdensity_fn, step_size, imm, *params))(states, z)
        return lax.scan(body, chain_states, noise, unroll=unroll)

    def warmup_chunk(chain_states, rs, ad, stages, ends):
        # stages, ends: (w_chunk // block, block); noise is drawn once per block of steps
        def one(carry, x):
            chain_states, ad, m = carry
            z, stg, end = x
            new, info = jax.vmap(lambda s, e: warmup_step(s, e, logdensity_fn, ad.step_size, m))(chain_states, z)
            active = stg != adaptation.OFF
            new = jax.tree.map(lambda a, b: jnp.where(active, a, b), new, chain_states)
            ad = ad_update(ad, stg, end, new.position, info.acceptance_rate)
            # a window closing inside the block changes the metric from the next step on
            m = lax.cond(end, lambda: metric(ad.inverse_mass_matrix), lambda: m) if mass_matrix == "dense" \
                else ad.inverse_mass_matrix
            n_div = lax.psum(jnp.sum(info.diverging & active, dtype=jnp.int32), _AXIS)
            n_grad = lax.psum(jnp.where(active, jnp.sum(grads(info)), 0.0), _AXIS)
            acc = lax.pmean(jnp.mean(info.acceptance_rate).astype(dtype), _AXIS)
            return (new, ad, m), (jnp.where(active, acc, jnp.nan), n_div, n_grad)

        def run_block(carry, x):
            chain_states, rs, ad = carry
            rs, noise = fast_rng.normal(rs[0], (block, chain_states.logdensity.shape[0], n_noise), dtype)
            m = metric(ad.inverse_mass_matrix) if ad.inverse_mass_matrix is not None else None
            (chain_states, ad, _), out = lax.scan(one, (chain_states, ad, m), (noise,) + x, unroll=unroll)
            return (chain_states, rs[None], ad), out

        def block_fn(carry, x):
            # A block wholly past the warm-up (padding of the last chunk) is skipped without drawing
            # its noise, so the stream the sampling phase starts from depends on num_warmup only,
            # never on chunk_size. (The predicate is replicated: every device takes the same branch.)
            idle = (carry, (jnp.full((block,), jnp.nan, dtype), jnp.zeros((block,), jnp.int32),
                            jnp.zeros((block,), jnp.float32)))
            return lax.cond(jnp.any(x[0] != adaptation.OFF), run_block, lambda c, _: idle, carry, x)

        (chain_states, rs, ad), (acc, n_div, n_grad) = lax.scan(block_fn, (chain_states, rs, ad), (stages, ends))
        return chain_states, rs, ad, acc, n_div, n_grad

    # Steps per noise call while sampling: a block of draws_per_block draws when thinning <= block,
    # otherwise sub-blocks of the largest divisor of thinning not above block (memory stays bounded).
    sub = thinning if thinning <= block else max(k for k in range(1, block + 1) if thinning % k == 0)

    def sample_chunk(chain_states, rs, step_size, imm, params):
        m = None if imm is None else metric(imm)
        n_local = chain_states.logdensity.shape[0]

        def finish(chain_states, info):
            stats = {
                "lp": chain_states.logdensity,
                "acceptance_rate": info.acceptance_rate.mean(0),
                "diverging": info.diverging.any(0),
            }
            if reports_step_size:  # a decreasing schedule: the step size of the last step of the draw
                stats["step_size"] = info.step_size[-1].astype(jnp.float32)
            for name in method.stats:  # NUTS's n_steps, tree_depth, energy: the draw's own transition
                stats[name] = getattr(info, name)[-1]
            stats["_grad_evals"] = jax.vmap(grads, in_axes=0)(info).sum(0)  # over the thinning steps
            return jax.vmap(target.constrain)(chain_states.position), stats

        def draw(chain_states, noise):
            chain_states, info = steps(chain_states, noise, step_size, m, params)
            return chain_states, finish(chain_states, info)

        def block_fn(carry, _):
            chain_states, rs = carry
            if sub == thinning:
                rs, noise = fast_rng.normal(rs[0], (draws_per_block, thinning, n_local, n_noise), dtype)
                chain_states, out = lax.scan(draw, chain_states, noise)
                return (chain_states, rs[None]), out

            def sub_block(c, _):  # long thinning: noise for `sub` steps at a time
                s, r = c
                r, noise = fast_rng.normal(r, (sub, n_local, n_noise), dtype)
                s, info = steps(s, noise, step_size, m, params)
                return (s, r), info
            (chain_states, r), info = lax.scan(sub_block, (chain_states, rs[0]), None, length=thinning // sub)
            info = jax.tree.map(lambda a: a.reshape((thinning,) + a.shape[2:]), info)
            out = jax.tree.map(lambda a: a[None], finish(chain_states, info))
            return (chain_states, r[None]), out

        (chain_states, rs), (draws, stats) = lax.scan(
            block_fn, (chain_states, rs), None, length=d_chunk // draws_per_block)
        merge = lambda a: a.reshape((d_chunk,) + a.shape[2:])
        return chain_states, rs, jax.tree.map(merge, draws), jax.tree.map(merge, stats)

    draw_spec = P(None, _AXIS)
    return _Programs(
        init=shard(jax.vmap(lambda x: method.init(x, logdensity_fn)), (chain_spec,), chain_spec),
        grad_finite=jax.jit(jax.vmap(lambda s: jnp.all(jnp.isfinite(s.logdensity_grad)))),
        ad_init=ad_init,
        ad_final=jax.jit(ad_final),
        warmup=shard(warmup_chunk, (chain_spec, chain_spec, rep, rep, rep), (chain_spec,) * 2 + (rep,) * 4),
        sample=shard(sample_chunk, (chain_spec, chain_spec, rep, rep, rep),
                     (chain_spec, chain_spec, draw_spec, draw_spec)),
        start_sampling=None if method.start_sampling is None else shard(
            jax.vmap(method.start_sampling), (chain_spec,), chain_spec),
        reports_step_size=reports_step_size,
        adapt=None if method.adapt is None else _own_warm_up_program(
            method, logdensity_fn, mesh, mass_matrix, target_acceptance),
    )


def _own_warm_up_program(method: methods.Method, logdensity_fn, mesh: Mesh, mass_matrix, target_acceptance: float):
    """``(positions, key, step_size, num_warmup) -> hmc.Adapted``, jitted once per warm-up length.
    The chains stay sharded over the mesh (the method's cross-chain means become all-reduces) and
    the states come back laid out as the sampling program takes them."""
    chains = jax.sharding.NamedSharding(mesh, P(_AXIS))

    @functools.partial(jax.jit, static_argnums=3)
    def run(positions, key, step_size, num_warmup):
        positions = lax.with_sharding_constraint(positions, chains)
        adapted = method.adapt(logdensity_fn, positions, key, num_warmup, step_size, mass_matrix, target_acceptance)
        return adapted._replace(states=lax.with_sharding_constraint(adapted.states, chains))
    return run


def _progress(total: int, show: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not show, unit="step", dynamic_ncols=True, leave=True)
