"""`train_bridge`: learned diffusion samplers (PIS, DIS, DDS) trained by reverse KL or log-variance.

Richter & Berner, "Improved sampling via learned diffusions" (ICLR 2024); the path-space estimators
and losses live in `driftax.samplers.diffusion`. This module is the driver a user calls:

    sampler = train_bridge(target, method="dis", loss="log_variance", num_steps=800, batch_size=256,
                           num_time_steps=100, seed=0)
    draws = sampler.sample(num_samples=10_000, seed=1)  # samples, log weights, log Ẑ, ELBO, ESS
    idata = sampler.to_inference_data(num_samples=4_000, seed=2)

Training (official recipe, scaled down by the caller on CPUs): Adam with learning rate decayed
exponentially to ``lr_final_fraction`` (2 %) of its start, gradients clipped at global norm 1, the
loss divided by the dimension, an exponential moving average (EMA) of the weights used for sampling,
and the control's clips warmed up as in the official configs (``clip_warmup``: 10 → 50 → 250 at steps
200 and 400 of 60,000, i.e. 1/25 and 1/5 of the final clip, here at the same fractions 1/300 and
1/150 of ``num_steps``: at CPU budgets of a few hundred steps absolute milestones would keep the whole
run at clip 10-50, which the official schedule never intended).
Steps run in compiled chunks (``lax.scan``); a tqdm bar between chunks shows the loss and the ESS of
the last training batch. The batch of paths is sharded over all devices on the 1-D mesh of
`driftax._sharding.batch_mesh` (the helper `infer.sample` uses): states and noise carry a
``NamedSharding`` of the batch axis, parameters are replicated, and XLA reduces the losses and
gradients across devices (data-parallel training; the random stream does not depend on the device
count, so 1 and 4 devices follow the same trajectory up to float rounding). An update whose gradient
is not finite is skipped and counted.

`bridge_metrics` gathers the sample-quality metrics of the issue in one place: |Δlog Z| where
``log Z`` is known, the normalised ESS, the Sinkhorn (entropic OT) distance to exact target draws,
the error of the marginal standard deviations and, for mixtures, mode coverage.
"""
from __future__ import annotations

import dataclasses
import io
import json
import math
import time
from pathlib import Path
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from driftax._checks import check_int, check_real, key_from_seed
from driftax._sharding import batch_mesh, replicate
from driftax.infer import diagnostics
from driftax.models.base import Target, as_target
from driftax.samplers import diffusion as dfn

__all__ = ["train_bridge", "TrainedBridge", "BridgeSamples", "load_bridge", "bridge_metrics", "LOSSES"]

LOSSES = {"log_variance": "log_variance", "lv": "log_variance", "kl": "kl", "reverse_kl": "kl"}
# Saved-file format. Version 2 = the layout since the DIS variance-matched step and the scalar score
# networks (configuration field ``integrator``; `TimeMLP` with one output). Version-1 files written after
# that change (their configuration has ``integrator``) have the same layout and still load; older ones do
# not (different score network, DIS Euler only, another DDS step) and get a ValueError naming the versions.
# Version 3 = since DIS's noising SDE is scaled to its prior (dY = -½βY dt + c√β dB, c = prior_scale):
# files of versions 1-2 load unchanged except DIS controls with prior_scale ≠ 1, trained for another SDE.
_FORMAT = "driftax-bridge-3"
_FORMAT_PREFIX = "driftax-bridge-"
# older format -> the config field that marks today's layout (None: every file of that format has it)
_COMPATIBLE = {"driftax-bridge-1": "integrator", "driftax-bridge-2": None}
_AXIS = "batch"


class BridgeSamples(NamedTuple):
    """Draws of a trained bridge: ``samples`` (n, d) = X_T, ``log_weights`` (n,) = -rnd (``-inf`` for
    dropped paths), ``log_Z`` (importance estimate), ``elbo`` (mean log weight of alive paths, a lower
    bound on log Z in expectation), ``ess`` (normalised, in (0, 1]), ``num_dropped``."""

    samples: np.ndarray
    log_weights: np.ndarray
    log_Z: float
    elbo: float
    ess: float
    num_dropped: int


def _estimates_np(logw: np.ndarray) -> tuple[float, float, float, int]:
    logw = np.asarray(logw, np.float64)
    alive = np.isfinite(logw)
    n = logw.shape[0]
    if not alive.any():
        return -math.inf, math.nan, 0.0, n
    top = logw[alive].max()
    w = np.exp(logw[alive] - top)
    log_z = top + math.log(w.sum()) - math.log(n)
    ess = float(w.sum() ** 2 / (n * np.sum(w * w)))
    return float(log_z), float(logw[alive].mean()), ess, int(n - alive.sum())


# ------------------------------------------------------------------------------------------------
# the trained sampler
# ------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, eq=False)
class TrainedBridge:
    """A trained PIS / DIS / DDS sampler and its training record.

    ``config`` (`driftax.samplers.diffusion.BridgeConfig`), ``control`` (the weights used for sampling:
    the EMA when ``ema_decay > 0``), ``target``, ``loss`` name, per-step ``loss_history``,
    ``ess_history`` and ``log_Z_history`` of the training batches (on-policy: NaN under off-policy
    exploration), ``num_steps``, ``seconds`` of training (compilation included), ``skipped_updates``
    (non-finite gradients) and ``converged`` (the last loss and the weights are finite).
    """

    config: dfn.BridgeConfig
    control: dfn.BridgeControl
    target: Target
    loss: str = "log_variance"
    loss_history: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))
    ess_history: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))
    log_Z_history: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))
    num_steps: int = 0
    seconds: float = 0.0
    skipped_updates: int = 0
    converged: bool = True

    def sample(self, num_samples: int = 10_000, seed=0, *, batch_size: int = 4096) -> BridgeSamples:
        """Simulate ``num_samples`` paths (in compiled batches of at most ``batch_size``) and return the
        terminal states with their importance weights, ``log Ẑ``, the ELBO and the normalised ESS."""
        num_samples = check_int("num_samples", num_samples, minimum=1)
        batch_size = check_int("batch_size", batch_size, minimum=1)
        key = key_from_seed(seed)
        chunk = min(num_samples, batch_size)
        mesh = batch_mesh(chunk, _AXIS, what="batch_size")
        sharding = NamedSharding(mesh, P(_AXIS, None))
        # replicated on the mesh, as training leaves it: trained and loaded controls share one program
        control = replicate(self.control, mesh)
        xs, lws = [], []
        done = 0
        while done < num_samples:
            key, sub = jax.random.split(key)
            noise = _sharded_noise(sub, self.config, chunk, mesh)
            paths = dfn.simulate(control, self.config, self.target.logdensity_fn, noise, sharding=sharding)
            take = min(chunk, num_samples - done)
            xs.append(np.asarray(paths.x)[:take])
            lw = np.where(np.asarray(paths.alive), -np.asarray(paths.rnd, np.float64), -np.inf)
            lws.append(lw[:take])
            done += take
        logw = np.concatenate(lws)
        log_z, elbo, ess, dropped = _estimates_np(logw)
        return BridgeSamples(np.concatenate(xs), logw, log_z, elbo, ess, dropped)

    def to_inference_data(self, num_samples: int = 4000, seed=0):
        """ArviZ data of ``num_samples`` draws (one chain, the model's named sites via
        ``target.constrain``) with ``log_weight`` in ``sample_stats`` and log Ẑ, ELBO, ESS in ``attrs``.
        The draws are the sampler's own (unweighted); reweight with ``log_weight`` for exact expectations."""
        out = self.sample(num_samples, seed)
        named = jax.vmap(self.target.constrain)(jnp.asarray(out.samples))
        post = {k: np.asarray(v)[None] for k, v in named.items()}
        attrs = {"method": self.config.method, "loss": self.loss, "log_Z": out.log_Z, "elbo": out.elbo,
                 "ess": out.ess, "num_dropped": out.num_dropped}
        return diagnostics.to_inference_data(post, {"log_weight": out.log_weights[None]}, attrs=attrs,
                                             dims=self.target.dims)

    # --- persistence -------------------------------------------------------------------------------
    def save(self, path) -> Path:
        """Write the control (equinox serialisation) after a one-line JSON header with the configuration."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        header = {"format": _FORMAT, "config": self.config.to_dict(), "loss": self.loss,
                  "target": self.target.name, "num_steps": self.num_steps}
        with open(path, "wb") as fh:
            fh.write((json.dumps(header, sort_keys=True) + "\n").encode())
            eqx.tree_serialise_leaves(fh, self.control)
        return path

    def load_control(self, path) -> "TrainedBridge":
        """This bridge with the control saved at ``path``; ValueError if it was saved by a bridge of
        another configuration (method, dimension, time grid, architecture...) or in an older,
        incompatible file format (see `load_bridge`)."""
        header, blob = _read(path)
        saved = _saved_config(path, header)
        if saved != self.config:
            diff = {k: (v, getattr(self.config, k)) for k, v in saved.to_dict().items()
                    if getattr(self.config, k) != v}
            raise ValueError(f"{path}: the saved control belongs to a bridge of another configuration; "
                             f"differences (saved, this): {diff}")
        return dataclasses.replace(self, control=_deserialise(path, blob, self.config))


def _read(path):
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"saved bridge not found: {path}")
    raw = path.read_bytes()
    line, _, blob = raw.partition(b"\n")
    try:
        header = json.loads(line.decode())
    except (UnicodeDecodeError, json.JSONDecodeError):
        header = None
    fmt = header.get("format") if isinstance(header, dict) else None
    if not isinstance(fmt, str) or not fmt.startswith(_FORMAT_PREFIX):
        raise ValueError(f"{path} is not a driftax bridge file (format {_FORMAT})")
    config = header.get("config")
    if fmt == _FORMAT:
        return header, blob
    if not (fmt in _COMPATIBLE and isinstance(config, dict)
            and (_COMPATIBLE[fmt] is None or _COMPATIBLE[fmt] in config)):
        raise ValueError(
            f"{path} was saved in bridge file format {fmt!r} by an older driftax whose control layout differs "
            f"(before the DIS variance-matched step and the scalar score networks); this version reads "
            f"{_FORMAT!r}. Retrain with driftax.infer.train_bridge (or `driftax bridge`) and save again.")
    if config.get("method") == "dis" and config.get("prior_scale", 1.0) != 1.0:
        raise ValueError(
            f"{path} holds a DIS control with prior_scale {config['prior_scale']} saved in format {fmt!r}, before "
            f"DIS's noising SDE was scaled to its prior (this version, {_FORMAT!r}, noises by dY = -½βY dt + "
            f"c√β dB with c = prior_scale, whose stationary law is the prior N(0, c² I)); the control was trained "
            f"for another SDE. Retrain with driftax.infer.train_bridge (or `driftax bridge`) and save again.")
    return header, blob


def _saved_config(path, header) -> dfn.BridgeConfig:
    try:
        return dfn.BridgeConfig(**header["config"])
    except (KeyError, TypeError) as err:
        raise ValueError(f"{path}: the bridge configuration in its header does not match this driftax version "
                         f"(format {header.get('format')!r}, this version writes {_FORMAT!r}): {err}") from None


def _deserialise(path, blob, cfg: dfn.BridgeConfig) -> dfn.BridgeControl:
    # shapes only: a process that loads without training never compiles the initialiser
    skeleton = eqx.filter_eval_shape(dfn.init_control, cfg, jax.random.key(0))
    try:
        return eqx.tree_deserialise_leaves(io.BytesIO(blob), skeleton)
    except Exception as err:  # truncated file, or weights of another layout under a matching header
        raise ValueError(f"{path}: the saved weights do not fit the control of its configuration "
                         f"({type(err).__name__}: {str(err)[:200]}); the file is damaged or was written by "
                         f"another driftax version (this one reads {_FORMAT!r})") from None


def load_bridge(path, target) -> TrainedBridge:
    """A `TrainedBridge` for ``target`` from a file written by `TrainedBridge.save` (no training record).

    ValueError if the saved dimension differs from the target's, if the file was written in an older,
    incompatible format (the message names the file's format version and this one's), or if its weights
    do not fit its configuration."""
    target = as_target(target)
    header, blob = _read(path)
    cfg = _saved_config(path, header)
    if cfg.dim != target.dim:
        raise ValueError(f"{path}: saved bridge has dimension {cfg.dim}, target {target.name!r} has {target.dim}")
    control = _deserialise(path, blob, cfg)
    return TrainedBridge(cfg, control, target, header.get("loss", "log_variance"), num_steps=header.get("num_steps", 0))


# ------------------------------------------------------------------------------------------------
# training
# ------------------------------------------------------------------------------------------------
def _sharded_noise(key, cfg, batch, mesh, exploration=False):
    noise = dfn.draw_noise(key, cfg, batch, exploration=exploration)
    row = NamedSharding(mesh, P(_AXIS, None))
    steps = NamedSharding(mesh, P(None, _AXIS, None))
    return dfn.Noise(jax.lax.with_sharding_constraint(noise.x0, row),
                     jax.lax.with_sharding_constraint(noise.eps, steps),
                     None if noise.xi is None else jax.lax.with_sharding_constraint(noise.xi, steps))


def _optimizer(learning_rate, lr_final_fraction, num_steps, clip_norm):
    """Adam, learning rate decayed exponentially to ``lr_final_fraction`` of itself, global-norm clipping."""
    schedule = optax.exponential_decay(learning_rate, transition_steps=num_steps, decay_rate=lr_final_fraction)
    return optax.chain(optax.clip_by_global_norm(clip_norm), optax.adam(schedule))


class _TrainSpec(NamedTuple):
    """Everything static about a training run (hashable: the compiled chunk is cached across calls with
    the same configuration, target function and hyper-parameters)."""

    cfg: dfn.BridgeConfig
    loss: str
    logdensity_fn: object
    hyper: tuple
    ema_decay: float
    exploration: float
    batch_size: int
    mesh: object
    clip_warmup: bool
    num_steps: int


def _clip_scale(step, warmup: bool, num_steps: int):
    """Official MultiStepParams of the clips, x5 at steps 200 and 400 of 60,000 (final value = the
    config's), with the milestones at the same fractions of ``num_steps``."""
    if not warmup:
        return jnp.float32(1.0)
    m1, m2 = round(num_steps * 200 / 60_000), round(num_steps * 400 / 60_000)
    return jnp.where(step < m1, 1.0 / 25.0, jnp.where(step < m2, 0.2, 1.0)).astype(jnp.float32)


@eqx.filter_jit
def _train_chunk(carry, keys, steps, static, spec: _TrainSpec):
    """``len(keys)`` training steps in one ``lax.scan``: loss, gradient, skip if non-finite, Adam, EMA."""
    cfg, loss, lp, exploration = spec.cfg, spec.loss, spec.logdensity_fn, spec.exploration
    opt = _optimizer(*spec.hyper)
    sharding = NamedSharding(spec.mesh, P(_AXIS, None))
    scale = float(cfg.dim)  # official: loss divided by the dimension

    def one_step(carry, inp):
        params, opt_state, ema = carry
        k, step = inp
        noise = _sharded_noise(k, cfg, spec.batch_size, spec.mesh, exploration > 0)
        clip_scale = _clip_scale(step, spec.clip_warmup, spec.num_steps)

        def objective(p):
            model = eqx.combine(p, static)
            if loss == "kl":
                val, paths = dfn.kl_loss(model, cfg, lp, noise, sharding=sharding, clip_scale=clip_scale)
            else:
                val, paths = dfn.log_variance_loss(model, cfg, lp, noise, exploration=exploration,
                                                   sharding=sharding, clip_scale=clip_scale)
            return val / scale, (val, paths)

        (_, (val, paths)), grads = jax.value_and_grad(objective, has_aux=True)(params)
        finite = jnp.all(jnp.array([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]))
        grads = jax.tree.map(lambda g: jnp.where(finite, g, 0.0), grads)
        updates, new_state = opt.update(grads, opt_state, params)
        new_params = optax.apply_updates(params, updates)
        new_params = jax.tree.map(lambda a, b: jnp.where(finite, a, b), new_params, params)
        new_state = jax.tree.map(lambda a, b: jnp.where(finite, a, b), new_state, opt_state)
        ema = jax.tree.map(lambda e, p: spec.ema_decay * e + (1.0 - spec.ema_decay) * p, ema, new_params)
        est = dfn.estimates(paths)
        on_policy = exploration == 0.0  # off-policy paths are not draws of the sampler
        nan = jnp.float32(jnp.nan)
        stats = (val, est.ess if on_policy else nan, est.log_Z if on_policy else nan, est.num_dropped, ~finite)
        return (new_params, new_state, ema), stats

    return jax.lax.scan(one_step, carry, (keys, steps))


def train_bridge(target, method: str = "dis", loss: str = "log_variance", *, num_steps: int = 1000,
                 batch_size: int = 256, num_time_steps: int | None = None, learning_rate: float = 5e-3,
                 lr_final_fraction: float = 0.02, clip_norm: float = 1.0, ema_decay: float = 0.99,
                 exploration: float = 0.0, clip_warmup: bool = True, seed=0, progress: bool = True,
                 chunk_size: int | None = None,
                 init: dfn.BridgeControl | None = None, dim: int | None = None,
                 **method_options) -> TrainedBridge:
    """Train a PIS / DIS / DDS sampler of ``target`` (Richter & Berner 2024).

    Parameters
    ----------
    target
        A `driftax.models.Target` (or a log-density function with ``dim``).
    method
        ``"pis"``, ``"dis"`` or ``"dds"`` (official defaults: `driftax.samplers.diffusion.make_config`).
    loss
        ``"log_variance"`` (``"lv"``) or ``"kl"`` (``"reverse_kl"``).
    num_steps, batch_size
        Gradient steps and paths per step (the LV loss needs ``batch_size >= 2``).
    num_time_steps
        Steps of the SDE solver (default: the method's official 200 / 200 / 256).
    learning_rate, lr_final_fraction, clip_norm, ema_decay
        Adam learning rate, decayed exponentially to ``lr_final_fraction`` of itself over ``num_steps``;
        global-norm gradient clipping; EMA decay of the weights (0: no EMA).
    exploration
        Off-policy noise η of the LV loss (``w = sg(u) + η ξ/√h``); ignored by ``kl``.
    clip_warmup
        Train with the control's clips at 1/25 of their final value for the first 1/300 of the steps and
        1/5 until 1/150 (the official schedule 10 → 50 → 250 at steps 200 and 400 of 60,000). The
        returned configuration carries the clips of the last training step.
    seed
        Integer seed or a jax.random key; same seed, same result on the same device count.
    init
        A `BridgeControl` to start from (e.g. `TrainedBridge.control`); default: untrained.
    **method_options
        Fields of `BridgeConfig`: ``parameterisation`` ("plain" = *_no_score), ``width``, ``num_layers``,
        ``sigma``, ``prior_scale``, ``beta_min``, ``beta_max``, ``grad_clip``, ...

    Raises ValueError/TypeError naming the argument for bad input, and ValueError if the
    parameterisation needs ``∇log ρ`` and the target has none.
    """
    target = as_target(target, dim)
    if not isinstance(loss, str) or loss.lower() not in LOSSES:
        raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {loss!r}")
    loss = LOSSES[loss.lower()]
    num_steps = check_int("num_steps", num_steps, minimum=1)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    if loss == "log_variance" and batch_size < 2:
        raise ValueError(f"batch_size must be >= 2 for the log-variance loss (a variance), got {batch_size}")
    if num_time_steps is not None:
        num_time_steps = check_int("num_time_steps", num_time_steps, minimum=1)
    learning_rate = check_real("learning_rate", learning_rate, positive=True)
    lr_final_fraction = check_real("lr_final_fraction", lr_final_fraction, positive=True)
    clip_norm = check_real("clip_norm", clip_norm, positive=True)
    ema_decay = check_real("ema_decay", ema_decay, nonnegative=True)
    if ema_decay >= 1:
        raise ValueError(f"ema_decay must lie in [0, 1), got {ema_decay}")
    exploration = check_real("exploration", exploration, nonnegative=True)
    if loss == "kl":
        exploration = 0.0
    if not isinstance(progress, bool):
        raise TypeError(f"progress must be a bool, got {type(progress).__name__}")
    if not isinstance(clip_warmup, bool):
        raise TypeError(f"clip_warmup must be a bool, got {type(clip_warmup).__name__}")
    chunk = check_int("chunk_size", chunk_size, minimum=1) if chunk_size is not None else max(1, min(50, num_steps))
    key = key_from_seed(seed)

    cfg = dfn.make_config(method, target.dim, num_time_steps=num_time_steps, **method_options)
    dfn.check_gradients(cfg, target.logdensity_fn)
    if loss == "kl" and cfg.parameterisation == "plain":
        try:  # back-propagation through the solver differentiates log ρ(X_T)
            jax.eval_shape(jax.grad(target.logdensity_fn), jax.ShapeDtypeStruct((cfg.dim,), jnp.float32))
        except Exception:
            raise ValueError("the KL loss back-propagates through log ρ(X_T): the target needs gradients; "
                             "use loss='log_variance'") from None
    key, k_init = jax.random.split(key)
    if init is None:
        control = dfn.init_control(cfg, k_init)
    else:
        if not isinstance(init, dfn.BridgeControl):
            raise TypeError(f"init must be a BridgeControl, got {type(init).__name__}")
        skeleton = eqx.filter_eval_shape(dfn.init_control, cfg, k_init)  # shapes only, nothing compiled
        if jax.tree.structure(skeleton) != jax.tree.structure(init) or any(
                a.shape != b.shape for a, b in zip(jax.tree.leaves(skeleton), jax.tree.leaves(init))):
            raise ValueError("init does not match the bridge configuration (dimension, width, layers, "
                             "parameterisation)")
        control = init

    mesh = batch_mesh(batch_size, _AXIS, what="batch_size")
    params, static = eqx.partition(control, eqx.is_inexact_array)
    hyper = (learning_rate, lr_final_fraction, num_steps, clip_norm)
    opt_state = _optimizer(*hyper).init(params)
    spec = _TrainSpec(cfg, loss, target.logdensity_fn, hyper, ema_decay, exploration, batch_size, mesh, clip_warmup,
                      num_steps)

    # replicated on the mesh from the start: the chunk returns its carry with this sharding, and an
    # unplaced first carry made the second chunk trace and compile the whole training program again
    carry = replicate((params, opt_state, params), mesh)
    hist = {k: [] for k in ("loss", "ess", "log_Z", "dropped", "skipped")}
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=num_steps, desc=f"{cfg.method}-{'lv' if loss == 'log_variance' else 'kl'}", leave=False)
    t0 = time.perf_counter()
    done = 0
    while done < num_steps:
        n = min(chunk, num_steps - done)
        key, sub = jax.random.split(key)
        carry, stats = _train_chunk(carry, jax.random.split(sub, n), jnp.arange(done, done + n), static, spec)
        stats = jax.device_get(stats)
        for name, v in zip(hist, stats):
            hist[name].append(np.asarray(v))
        done += n
        if bar is not None:
            bar.update(n)
            bar.set_postfix(loss=f"{float(stats[0][-1]):.4g}", ess=f"{float(stats[1][-1]):.3f}")
    jax.block_until_ready(carry)
    seconds = time.perf_counter() - t0
    if bar is not None:
        bar.close()
    params, _, ema = carry
    final = eqx.combine(ema if ema_decay > 0 else params, static)
    # sample with the clips the control was last trained under (shorter runs end before 250)
    last_scale = float(_clip_scale(num_steps - 1, clip_warmup, num_steps))
    if last_scale != 1.0:
        cfg = dataclasses.replace(cfg, nn_clip=cfg.nn_clip * last_scale, grad_clip=cfg.grad_clip * last_scale)
    hist = {k: np.concatenate(v) for k, v in hist.items()}
    weights_ok = all(bool(np.all(np.isfinite(np.asarray(x)))) for x in jax.tree.leaves(eqx.filter(final, eqx.is_array)))
    return TrainedBridge(
        config=cfg, control=final, target=target, loss=loss, loss_history=hist["loss"],
        ess_history=hist["ess"], log_Z_history=hist["log_Z"], num_steps=num_steps, seconds=seconds,
        skipped_updates=int(hist["skipped"].sum()),
        converged=bool(np.isfinite(hist["loss"][-1]) and weights_ok),
    )


# ------------------------------------------------------------------------------------------------
# metrics
# ------------------------------------------------------------------------------------------------
def bridge_metrics(draws: BridgeSamples, target: Target, *, modes=None, mode_share: float = 0.2,
                   num_reference: int = 2000, seed: int = 0, epsilon: float | None = None) -> dict:
    """Sample-quality metrics of one set of draws (notes/bridges.md, "Estimators and metrics").

    * ``dlogz``: |log Ẑ - log Z| (NaN if the target has no ``log_Z``);
    * ``ess``: normalised importance ESS;
    * ``sinkhorn``: entropic OT distance ``<C, P_ε>`` (squared Euclidean cost) between the first
      ``num_reference`` (unweighted) draws and as many exact target draws (`transport.sinkhorn_distance`;
      ``epsilon`` default: 5 % of the mean cost); NaN without ``target.sample``;
    * ``std_error``: max over coordinates of |sd(draws) / sd_true - 1| (``target.cov`` or exact draws);
    * ``modes``: with ``modes`` (M, d) centres, the number of centres whose nearest-centre cell holds at
      least ``mode_share / M`` of the draws (reverse ESS alone does not detect missing modes).
    """
    from driftax.transport import sinkhorn_distance

    if not isinstance(draws, BridgeSamples):
        raise TypeError(f"draws must be BridgeSamples (TrainedBridge.sample), got {type(draws).__name__}")
    target = as_target(target)
    num_reference = check_int("num_reference", num_reference, minimum=2)
    mode_share = check_real("mode_share", mode_share, positive=True)
    x = np.asarray(draws.samples, np.float64)
    x = x[np.all(np.isfinite(x), axis=1) & np.isfinite(draws.log_weights)]
    out = {"dlogz": abs(draws.log_Z - target.log_Z) if target.log_Z is not None else math.nan,
           "ess": draws.ess, "log_Z": draws.log_Z, "elbo": draws.elbo, "num_dropped": draws.num_dropped}
    ref = None
    if target.sample is not None:
        ref = np.asarray(target.sample(jax.random.key(seed), num_reference), np.float64)
        m = min(num_reference, x.shape[0])
        try:
            out["sinkhorn"] = float(sinkhorn_distance(x[:m], ref[:m], epsilon))
        except ValueError:  # unconverged: never a silently wrong number
            out["sinkhorn"] = math.nan
    else:
        out["sinkhorn"] = math.nan
    if target.cov is not None:
        sd_true = np.sqrt(np.diag(np.asarray(target.cov, np.float64)))
    elif ref is not None:
        sd_true = ref.std(0, ddof=1)
    else:
        sd_true = None
    out["std_error"] = float(np.max(np.abs(x.std(0, ddof=1) / sd_true - 1))) if sd_true is not None and len(x) > 1 \
        else math.nan
    if modes is not None:
        c = np.asarray(modes, np.float64)
        if c.ndim != 2 or c.shape[1] != x.shape[1]:
            raise ValueError(f"modes must have shape (M, {x.shape[1]}), got {c.shape}")
        nearest = np.argmin(((x[:, None, :] - c[None]) ** 2).sum(-1), axis=1)
        counts = np.bincount(nearest, minlength=c.shape[0])
        out["modes"] = int(np.sum(counts >= mode_share * len(x) / c.shape[0]))
        out["num_modes"] = int(c.shape[0])
    return out
