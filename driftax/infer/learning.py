r"""`learn`: maximum likelihood for state-space models by stochastic-approximation score ascent with PaRIS
particle Gibbs estimates of the score (Cardoso, Janati El Idrissi, Le Corff, Moulines, Olsson 2023, §4).

Fisher's identity writes the score as a smoothed additive functional,

.. math::
    \nabla_u \log p_{θ(u)}(y_{0:T-1}) = E_{θ(u)}\Big[\nabla_u \log\big(η_θ(x_0) g_θ(0; x_0, y_0)\big)
        + \sum_{t\ge1} \nabla_u \log\big(q_θ(t; x_{t-1}, x_t) g_θ(t; x_t, y_t)\big) \,\Big|\, y_{0:T-1}\Big],

with ``u`` the unconstrained parameters (`StateSpaceModel.unconstrain`; the maximiser does not depend on
the parametrisation) and the gradients by ``jax.grad`` of the model's log-densities. Each iteration ``ℓ``
runs one PPG kernel step at ``θ_ℓ`` from the reference path left by the previous iteration (Markovian
stochastic approximation: the reference is carried across parameter updates), giving ``Ĥ_ℓ`` (the first
iteration has no reference yet: it runs the same sweep with the freezing off, PaRIS on an unconditional
filter, whose backward path starts the chain), then

.. math::  u_{ℓ+1} = u_ℓ + γ_ℓ \, Ĥ_ℓ / T, \qquad γ_ℓ = γ_0\, ℓ^{-α}, \ α ∈ (1/2, 1]

(Robbins-Monro; the score is divided by ``T`` so ``γ_0`` does not depend on the series length), or an
optax optimiser fed ``-Ĥ_ℓ / T``. ``method="paris"`` uses a fresh plain PaRIS estimate each iteration
instead (biased by O(T/N)). The returned ``theta`` is the Polyak-Ruppert average of the iterates over
the last ``average_fraction`` of the run; the whole trace comes back as ArviZ data.
"""
from __future__ import annotations

import dataclasses
import functools
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.flatten_util import ravel_pytree

from driftax._checks import check_int, check_real
from driftax.infer.smoothing import check_inputs
from driftax.models.ssm import StateSpaceModel
from driftax.samplers import paris as _paris

__all__ = ["learn", "LearningResult", "score_functional", "markov_score_climbing", "MarkovGaussian"]


def score_functional(ssm: StateSpaceModel, theta_of, u) -> _paris.AdditiveFunctional:
    """The score additive functional at unconstrained parameters ``u`` (``theta_of(u)`` gives ``θ``)."""
    def lp0(v, x, y):
        th = theta_of(v)
        return ssm.init_logpdf(th, x) + ssm.log_g(th, 0, x, y)

    def lpt(v, t, xp, x, y):
        th = theta_of(v)
        return ssm.transition_logpdf(th, t, xp, x) + ssm.log_g(th, t, x, y)

    return _paris.AdditiveFunctional(lambda x, y: jax.grad(lp0)(u, x, y),
                                     lambda t, xp, x, y: jax.grad(lpt)(u, t, xp, x, y), u.shape[0], "score")


@dataclasses.dataclass(frozen=True)
class LearningResult:
    """``theta``: the Polyak-Ruppert average of the last iterates; ``theta_last``; ``trace``:
    ``{name: (num_steps, ...)}`` constrained iterates; ``scores (num_steps, P)`` the per-observation score
    estimates; ``finite`` (False if any iteration went non-finite: the run stops updating then);
    ``num_steps``; ``seconds``; ``converged``: the mean score estimate over the averaging window is within
    3 standard errors of 0 in every coordinate (the stationarity condition of the ascent; the standard
    error from the window's spread, which ignores the Markov correlation of the PPG estimates, so it is
    a screening test, not a proof)."""

    theta: dict
    theta_last: dict
    trace: dict
    scores: np.ndarray
    finite: bool
    num_steps: int
    method: str
    seconds: float
    converged: bool = False

    def to_inference_data(self):
        """The parameter trace as ArviZ data (one chain, one draw per iteration)."""
        from driftax.infer.diagnostics import to_inference_data

        return to_inference_data({k: v[None] for k, v in self.trace.items()},
                                 attrs={"method": self.method, "kind": "parameter trace"})


def learn(ssm: StateSpaceModel, ys, theta0=None, method: str = "ppg", *, params: Sequence[str] | None = None,
          num_steps: int = 500, num_particles: int = 64, K: int = 2, step_size: float = 0.5,
          decay: float = 0.6, optimizer=None, average_fraction: float = 0.5, backward: str = "hybrid",
          max_trials: int = 8, chunk_size: int = 50, progress: bool = True, seed: int = 0) -> LearningResult:
    """Maximum likelihood by score ascent with PPG (or PaRIS) score estimates (module docstring).

    Parameters
    ----------
    ssm, ys
        The model and observations; ``theta0`` the starting parameters (default: the model's), checked
        against their supports.
    params
        Names of the parameters to learn (default: all); the others stay at ``theta0``.
    num_steps, num_particles, K
        Iterations; particles per PaRIS/CSMC sweep (``≥ 2``); backward draws per particle (``≥ 2``).
    step_size, decay
        Robbins-Monro ``γ_ℓ = step_size · ℓ^{-decay}`` with ``decay ∈ (0.5, 1]``; ignored with ``optimizer``.
    optimizer
        An optax ``GradientTransformation`` minimising ``-score / T`` instead of Robbins-Monro.
    average_fraction
        The fraction of final iterates averaged into ``theta`` (``(0, 1]``).
    chunk_size, progress
        Iterations per compiled chunk; a tqdm bar advances between chunks.
    """
    ys, theta0 = check_inputs(ssm, ys, theta0)
    if method not in ("ppg", "paris"):
        raise ValueError(f"method must be 'ppg' or 'paris', got {method!r}")
    names = tuple(sorted(ssm.theta)) if params is None else tuple(params)
    if not names or any(n not in ssm.theta for n in names):
        raise ValueError(f"params must name parameters of the model {sorted(ssm.theta)}, got {params!r}")
    num_steps = check_int("num_steps", num_steps, 1)
    N = check_int("num_particles", num_particles, 2)
    K = check_int("K", K, 2)
    chunk_size = check_int("chunk_size", chunk_size, 1)
    step_size = check_real("step_size", step_size, positive=True)
    decay = check_real("decay", decay)
    if optimizer is None and not 0.5 < decay <= 1.0:
        raise ValueError(f"decay must be in (0.5, 1] (Robbins-Monro conditions), got {decay}")
    average_fraction = check_real("average_fraction", average_fraction, positive=True)
    if average_fraction > 1:
        raise ValueError(f"average_fraction must be in (0, 1], got {average_fraction}")
    if optimizer is not None and not (hasattr(optimizer, "init") and hasattr(optimizer, "update")):
        raise TypeError("optimizer must be an optax GradientTransformation")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) < 2**32:
        raise ValueError(f"seed must be an integer in [0, 2**32), got {seed!r}")

    dtype = jnp.result_type(float)
    theta0 = {k: jnp.asarray(v, dtype) for k, v in theta0.items()}
    fixed = {k: v for k, v in theta0.items() if k not in names}
    u0, unravel = ravel_pytree(ssm.unconstrain({k: theta0[k] for k in names}))
    T = ys.shape[0]
    ys_j = jnp.asarray(ys, dtype)
    opt_state0 = optimizer.init(u0) if optimizer is not None else jnp.zeros(())
    chunk = _chunk_program(ssm, method, names, N, K, backward, max_trials, optimizer)
    rm = jnp.asarray([step_size, decay], dtype)
    key = jax.random.key(int(seed))
    _, k_run = jax.random.split(key)
    # the starting path comes from the first iteration's unconditional sweep inside the compiled chunk
    # (one filter compiled, not a second one for an initial reference); PaRIS needs none
    ref0 = jnp.zeros((T, ssm.state_dim), dtype)
    carry = (u0, ref0, opt_state0, jnp.array(True))
    keys = jax.random.split(k_run, num_steps)
    us, ss = [], []
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    with tqdm(total=num_steps, disable=not progress, unit="step", dynamic_ncols=True) as bar:
        for start in range(0, num_steps, chunk_size):
            stop = min(start + chunk_size, num_steps)
            ells = jnp.arange(start + 1, stop + 1, dtype=dtype)
            # a shorter last chunk compiles once more (jit specialises on its length)
            c2, (u_c, s_c) = chunk(carry, keys[start:stop], ells, ys_j, fixed, rm)
            carry = c2
            us.append(np.asarray(u_c))
            ss.append(np.asarray(s_c))
            bar.update(stop - start)
    secs = time.perf_counter() - t0
    us, ss = np.concatenate(us), np.concatenate(ss)
    finite = bool(carry[3])
    to_theta = jax.jit(jax.vmap(lambda u: ssm.constrain(unravel(u))))
    trace = {k: np.asarray(v) for k, v in to_theta(jnp.asarray(us)).items()}
    n_avg = max(1, int(round(average_fraction * num_steps)))
    theta_avg = {**{k: np.asarray(v) for k, v in fixed.items()}, **{k: v[-n_avg:].mean(0) for k, v in trace.items()}}
    theta_last = {**{k: np.asarray(v) for k, v in fixed.items()}, **{k: v[-1] for k, v in trace.items()}}
    win = ss[-n_avg:]
    se = win.std(0) / np.sqrt(max(1, n_avg - 1))
    converged = bool(finite and n_avg > 1 and np.all(np.abs(win.mean(0)) <= 3 * se))
    return LearningResult(theta_avg, theta_last, trace, ss, finite, num_steps, method, secs, converged)


@functools.lru_cache(maxsize=16)
def _chunk_program(ssm, method, names, N, K, backward, max_trials, optimizer):
    """The jitted chunk of `learn` iterations for one static configuration, cached so that repeated calls
    (other data of the same length, other start values, step sizes or seeds) reuse the compiled program
    instead of compiling it again (about 6 s of CPU each). Data, fixed parameters and the Robbins-Monro
    constants ``(γ_0, α)`` are arguments; the unconstrained layout comes from the model's parameter shapes."""
    _, unravel = ravel_pytree(ssm.unconstrain({k: ssm.theta[k] for k in names}))

    def one(carry, inp, ys, fixed, rm):
        T = ys.shape[0]
        u, ref, opt_state, ok = carry
        key, ell = inp

        def theta_of(v):
            return {**fixed, **ssm.constrain(unravel(v))}

        f = score_functional(ssm, theta_of, u)
        if method == "ppg":  # iteration 1 starts the chain (no reference): its sweep runs unfrozen
            new_ref, info = _paris.ppg_step(key, ssm, theta_of(u), ys, ref, f, N, K=K, backward=backward,
                                            max_trials=max_trials, frozen=ell > 1.5)
            s, fin = info.estimate / T, info.finite
        else:
            out = _paris.paris(key, ssm, theta_of(u), ys, f, N, K=K, backward=backward, max_trials=max_trials)
            s, new_ref, fin = out.estimate / T, ref, out.finite
        fin = fin & jnp.all(jnp.isfinite(s))
        if optimizer is None:
            new_u, new_opt = u + rm[0] * ell ** (-rm[1]) * s, opt_state
        else:
            upd, new_opt = optimizer.update(-s, opt_state, u)
            new_u = u + upd
        keep = ok & fin  # a non-finite estimate freezes the run (reported through `finite`)
        sel = lambda a, b: jax.tree.map(lambda x, y: jnp.where(keep, x, y), a, b)
        u, ref, opt_state = sel(new_u, u), sel(new_ref, ref), sel(new_opt, opt_state)
        return (u, ref, opt_state, keep), (u, s)

    return jax.jit(lambda carry, keys, ells, ys, fixed, rm: lax.scan(
        lambda c, inp: one(c, inp, ys, fixed, rm), carry, (keys, ells)))


# --- Markov score climbing ---------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class MarkovGaussian:
    r"""The Markov Gaussian family ``q_λ(x_{0:T-1}) = Π_t N(x_t; a_t ⊙ x_{t-1} + b_t, diag(exp(2 ℓ_t)))``
    (``a_0 = 0``; coordinates independent given the past), with its marginal ``means``/``variances``
    ``m_t = a_t m_{t-1} + b_t``, ``v_t = a_t² v_{t-1} + exp(2 ℓ_t)``; ``trace`` holds the marginal means
    after every iteration ``(num_steps, T, d)``."""

    a: np.ndarray
    b: np.ndarray
    log_scale: np.ndarray
    means: np.ndarray
    variances: np.ndarray
    trace: np.ndarray
    finite: bool
    seconds: float


def _mg_logpdf(lam, x):
    a, b, ls = lam
    prev = jnp.concatenate([jnp.zeros_like(x[:1]), x[:-1]])
    mean = a.at[0].set(0.0) * prev + b
    return jnp.sum(-0.5 * ((x - mean) * jnp.exp(-ls)) ** 2 - ls)


def _mg_marginals(lam):
    a, b, ls = lam

    def body(c, inp):
        m, v = c
        at, bt, lt = inp
        m, v = at * m + bt, at * at * v + jnp.exp(2 * lt)
        return (m, v), (m, v)

    zero = jnp.zeros_like(b[0])
    _, (m, v) = lax.scan(body, (zero, zero), (a.at[0].set(0.0), b, ls))
    return m, v


def markov_score_climbing(ssm: StateSpaceModel, ys, *, theta=None, num_steps: int = 500, num_particles: int = 32,
                          K: int = 2, step_size: float = 0.05, average_fraction: float = 0.5,
                          backward: str = "hybrid", max_trials: int = 8, chunk_size: int = 100,
                          seed: int = 0) -> MarkovGaussian:
    r"""Markov score climbing (Naesseth, Lindsten, Blei 2020) for the Markov Gaussian family, driven by the
    PPG kernel: ``ζ_ℓ ~ P_PPG(ζ_{ℓ-1}, ·)`` (which leaves the smoothing law invariant), then
    ``λ ← λ + γ_ℓ ∇_λ log q_λ(ζ_ℓ)`` by Adam with learning rate ``step_size`` (``ζ_1`` comes from the
    kernel's sweep with the freezing off: a backward path through an unconditional filter). Its fixed point minimises
    the inclusive ``KL(p(x_{0:T-1} | y) ‖ q_λ)``; the result averages ``λ`` over the last ``average_fraction``
    of the iterations. For a 1-d linear-Gaussian model the smoothing law is in the family (it is a
    Gaussian Markov chain), so the marginals converge to the Kalman smoother's.
    """
    import optax

    ys, theta = check_inputs(ssm, ys, theta)
    num_steps = check_int("num_steps", num_steps, 1)
    N = check_int("num_particles", num_particles, 2)
    K = check_int("K", K, 2)
    chunk_size = check_int("chunk_size", chunk_size, 1)
    step_size = check_real("step_size", step_size, positive=True)
    average_fraction = check_real("average_fraction", average_fraction, positive=True)
    if average_fraction > 1:
        raise ValueError(f"average_fraction must be in (0, 1], got {average_fraction}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) < 2**32:
        raise ValueError(f"seed must be an integer in [0, 2**32), got {seed!r}")
    dtype = jnp.result_type(float)
    T, d = ys.shape[0], ssm.state_dim
    ys_j = jnp.asarray(ys, dtype)
    theta = {k: jnp.asarray(v, dtype) for k, v in theta.items()}
    opt = optax.adam(step_size)  # the state layout only; the learning rate is an argument of the chunk
    lam0 = (jnp.zeros((T, d), dtype), jnp.zeros((T, d), dtype), jnp.zeros((T, d), dtype))
    chunk = _msc_chunk_program(ssm, N, K, backward, max_trials)
    lr = jnp.asarray(step_size, dtype)
    _, k_run = jax.random.split(jax.random.key(int(seed)))
    ref0 = jnp.zeros((T, d), dtype)  # the first iteration's unconditional sweep gives the starting path
    carry = (lam0, ref0, opt.init(lam0), jnp.array(True))
    keys = jax.random.split(k_run, num_steps)
    steps = jnp.arange(num_steps)
    lams = []
    t0 = time.perf_counter()
    for start in range(0, num_steps, chunk_size):
        carry, lc = chunk(carry, keys[start:start + chunk_size], steps[start:start + chunk_size], ys_j, theta, lr)
        lams.append(jax.tree.map(np.asarray, lc))
    secs = time.perf_counter() - t0
    lams = tuple(np.concatenate([l[i] for l in lams]) for i in range(3))
    n_avg = max(1, int(round(average_fraction * num_steps)))
    lam = tuple(jnp.asarray(v[-n_avg:].mean(0)) for v in lams)
    m, v = _mg_marginals(lam)
    trace = np.asarray(_mg_trace(tuple(jnp.asarray(x) for x in lams)))
    return MarkovGaussian(*(np.asarray(x) for x in lam), np.asarray(m), np.asarray(v), trace, bool(carry[3]), secs)


_mg_trace = jax.jit(jax.vmap(lambda lam: _mg_marginals(lam)[0]))


@functools.lru_cache(maxsize=16)
def _msc_chunk_program(ssm, N, K, backward, max_trials):
    """The jitted chunk of `markov_score_climbing` iterations for one static configuration, cached like
    `learn`'s (`_chunk_program`): data, parameters and Adam's learning rate are arguments, so repeated
    calls (other data of the same length, other step sizes or seeds) reuse the compiled program instead of
    compiling it again. Adam's update is linear in its learning rate, so the rate can be traced."""
    import optax

    f = _paris.state_sum(ssm.state_dim)

    def one(carry, inp, ys, theta, lr):
        lam, ref, opt_state, ok = carry
        key, i = inp
        opt = optax.adam(lr)
        new_ref, info = _paris.ppg_step(key, ssm, theta, ys, ref, f, N, K=K, backward=backward,
                                        max_trials=max_trials, frozen=i > 0)
        g = jax.grad(_mg_logpdf)(lam, new_ref)
        upd, new_opt = opt.update(jax.tree.map(lambda v: -v, g), opt_state, lam)
        new_lam = optax.apply_updates(lam, upd)
        keep = ok & info.finite & jnp.all(jnp.isfinite(new_ref))
        sel = lambda x, y: jax.tree.map(lambda p, q: jnp.where(keep, p, q), x, y)
        lam, ref, opt_state = sel(new_lam, lam), sel(new_ref, ref), sel(new_opt, opt_state)
        return (lam, ref, opt_state, keep), lam

    return jax.jit(lambda c, ks, idx, ys, theta, lr: lax.scan(lambda cc, inp: one(cc, inp, ys, theta, lr), c,
                                                               (ks, idx)))
