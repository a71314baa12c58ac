r"""The sampler-benchmarking suite: targets with ground truth × methods, every run scored by `score`.

A *target* is a log-density with reference draws: the gallery's targets that carry exact draws
(``gaussian``, ``banana``, ``funnel``, ``gmm9``, ...: 10,000 exact draws, seeded) and the thirteen
posteriordb posteriors (`driftax.models.posteriordb.load`: posteriordb's reference draws, 10 long
Stan chains x 1,000). A *method* is a registry kernel run by `driftax.infer.sample` (``nuts``,
``hmc_chees``, ``mclmc``, ``mala``, ... — every name of `driftax.infer.methods.available`), one of
the NUTS peers run on the same log-density in the same process (``numpyro_nuts``: NumPyro's NUTS
with vectorised chains; ``blackjax_nuts``: BlackJAX's window adaptation and NUTS under ``vmap``),
or a user's engine passed as a callable (VI approximations, learned samplers: anything that yields
draws or weighted draws, see `Run`).

Each (target, method) pair is run twice with the same arguments: the first call compiles (and runs),
the second, identical call reuses the compiled programs and its wall time is the sampling cost
(``seconds``); ``compile_seconds`` is the first call's time minus the second's. The draws are
scored once, by `driftax.bench.score` (worst |mean error| and relative sd error in reference sd,
ArviZ bulk/tail ESS and R-hat, ESS per gradient evaluation and per second, divergences, PSIS
:math:`\hat k` for weighted draws, the Sinkhorn divergence to the reference by SNS). A row *passes*
when ``mean_err <= 0.1``, ``sd_err <= 0.1`` and ``rhat_max <= 1.01`` (issue 12's acceptance for the
default method on posteriordb; Vehtari et al. 2021 recommend R-hat < 1.01).

`run_suite` returns the rows; `markdown_table`, `write_json` and `plot` render them (a Markdown
table; ``{"rows": [...]}``; ESS per gradient by method and target, error against gradient
evaluations, a pass/fail heat map). ``driftax bench samplers`` and ``benchmarks/bench_samplers.py``
drive it.
"""
from __future__ import annotations

import json
import math
import time
import warnings
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from driftax.bench.score import score

__all__ = [
    "Run",
    "GALLERY_TARGETS",
    "POSTERIORDB_TARGETS",
    "PEERS",
    "DEFAULT_METHODS",
    "ROW_KEYS",
    "known_targets",
    "known_methods",
    "check_names",
    "enable_compile_cache",
    "load_target",
    "check_reference",
    "run_method",
    "run_suite",
    "markdown_table",
    "write_json",
    "plot",
]

# gallery targets with exact draws (their ``sample``), built with their default arguments
GALLERY_TARGETS = ("gaussian", "ill_conditioned_gaussian", "correlated_gaussian", "banana", "funnel", "gmm9",
                   "mog40", "double_well", "many_well")
# the thirteen posteriordb posteriors by their Stan model names (the gallery's names)
POSTERIORDB_TARGETS = {
    "eight_schools": "eight_schools-eight_schools_noncentered",
    "arK": "arK-arK",
    "garch11": "garch-garch11",
    "gp_pois_regr": "gp_pois_regr-gp_pois_regr",
    "arma11": "arma-arma11",
    "blr": "sblrc-blr",
    "diamonds": "diamonds-diamonds",
    "hmm_example": "hmm_example-hmm_example",
    "kidscore_interaction": "kidiq-kidscore_interaction",
    "logearn_interaction": "earnings-logearn_interaction",
    "logmesquite_logvash": "mesquite-logmesquite_logvash",
    "low_dim_gauss_mix": "low_dim_gauss_mix-low_dim_gauss_mix",
    "nes": "nes1996-nes",
}
DEFAULT_METHODS = ("nuts", "hmc_chees", "mclmc", "mala", "numpyro_nuts", "blackjax_nuts")
ROW_KEYS = ("target", "method", "mean_err", "sd_err", "ess_bulk_min", "ess_per_grad", "ess_per_second", "rhat_max",
            "divergences", "ot_distance", "grad_evals", "seconds")
# the acceptance thresholds a row passes by (module docstring)
MEAN_TOL, SD_TOL, RHAT_TOL = 0.1, 0.1, 1.01
REFERENCE_DRAWS = 10_000  # exact draws of a gallery target: 10 "chains" x 1,000, as posteriordb's


class Run(NamedTuple):
    """What a method returns for one target.

    ``draws``: ``{site: (chain, draw, ...)}`` constrained values (extra sites are ignored), an
    ``arviz.InferenceData``, or a ``(chain, draw, dim)`` array in the target's unconstrained space
    (mapped through ``target.constrain``); ``grad_evals``: gradient evaluations of warm-up and
    sampling, all chains; ``log_weights``: ``(chain, draw)`` importance log-weights or ``None``;
    ``divergences``: divergent transitions of the kept draws, or ``None`` when not reported.
    """

    draws: object
    grad_evals: float | None
    log_weights: object = None
    divergences: int | None = None


# --------------------------------------------------------------------------------------------
# names
# --------------------------------------------------------------------------------------------
def known_targets() -> list[str]:
    return list(GALLERY_TARGETS) + list(POSTERIORDB_TARGETS)


def known_methods() -> list[str]:
    from driftax.infer import methods

    return list(methods.available()) + list(PEERS)


def check_names(kind: str, names, known: list[str]) -> list:
    """``names`` (a list, or one comma-separated string) checked against ``known``: ``ValueError``
    naming the unknown ones and listing the known ones. Besides names, a method may be a ``(label,
    fn)`` pair and a target a ``(label, target, reference)`` triple (`run_suite`)."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    names = list(names)
    if not names:
        raise ValueError(f"{kind}s: give at least one; known: {', '.join(known)}")
    unknown = [n for n in names if isinstance(n, str) and n not in known]
    if unknown:
        raise ValueError(f"unknown {kind} name(s) {unknown}; known: {', '.join(known)}")
    size = 2 if kind == "method" else 3
    what = "(label, callable) pair" if kind == "method" else "(label, Target, reference dict) triple"
    for n in names:
        if not isinstance(n, str) and not (isinstance(n, tuple) and len(n) == size and isinstance(n[0], str)
                                           and (callable(n[1]) if kind == "method" else isinstance(n[2], dict))):
            raise TypeError(f"a {kind} must be a name or a {what}, got {n!r}")
    return names


def enable_compile_cache(path=None) -> str:
    """Switch on JAX's persistent compilation cache (a fresh temporary folder unless ``path``), unless
    one is set already; return its folder. Call it before anything compiles.

    Why: NumPyro's ``MCMC.run`` jits a fresh closure of its loop on every call (``progress_bar=False``),
    so its second, timed call would compile again (measured: 4.7 s CPU of a 10-d Gaussian's 200 steps
    are compilation); with the cache the second call finds the program it compiled the first time, as
    driftax's and BlackJAX's calls do in memory. The first call of each pair still compiles afresh."""
    import tempfile

    import jax

    current = jax.config.jax_compilation_cache_dir
    if current:
        return current
    folder = str(path) if path is not None else tempfile.mkdtemp(prefix="driftax-bench-cache-")
    jax.config.update("jax_compilation_cache_dir", folder)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    return folder


# --------------------------------------------------------------------------------------------
# targets
# --------------------------------------------------------------------------------------------
def load_target(name: str, *, root=None, seed: int = 0):
    """``(target, reference)`` for a suite target name (`known_targets`).

    Gallery targets: ``reference = {"x": (10, 1000, dim)}`` exact draws from ``target.sample``
    (seeded by ``seed``). posteriordb: `driftax.models.posteriordb.load` (``root``: its folder).
    """
    check_names("target", [name], known_targets())
    if name in POSTERIORDB_TARGETS:
        from driftax.models import posteriordb

        return posteriordb.load(POSTERIORDB_TARGETS[name], root=root)
    import jax

    from driftax.models import gallery

    target = gallery.get(name)
    if target.sample is None or target.names != ("x",):  # pragma: no cover - guards GALLERY_TARGETS
        raise ValueError(f"gallery target {name!r} has no exact draws of its site 'x'")
    x = np.asarray(target.sample(jax.random.key(seed), REFERENCE_DRAWS), np.float64)
    return target, {"x": x.reshape(10, REFERENCE_DRAWS // 10, target.dim)}


def check_reference(target, reference: dict) -> None:
    """``ValueError`` unless every reference site is a site of ``target`` with the same shape.

    Raised before any sampling, naming the mismatched sites and the model's sites."""
    if not isinstance(reference, dict) or not reference:
        raise TypeError("reference must be a non-empty dict of (chain, draw, ...) arrays, got "
                        f"{type(reference).__name__}")
    shapes = target.shapes
    missing = sorted(k for k in reference if k not in shapes)
    if missing:
        raise ValueError(f"reference site(s) {missing} are not sites of the model {target.name!r}; "
                         f"its sites: {sorted(shapes)}")
    bad = {k: (tuple(np.shape(v))[2:], shapes[k]) for k, v in reference.items()
           if tuple(np.shape(v))[2:] != tuple(shapes[k])}
    if bad:
        raise ValueError("reference and model differ in the shape of site(s) "
                         + ", ".join(f"{k!r}: {a} vs the model's {b}" for k, (a, b) in bad.items()))


# --------------------------------------------------------------------------------------------
# methods
# --------------------------------------------------------------------------------------------
def _driftax(method: str) -> Callable:
    def run(target, chains, warmup, draws, seed):
        from driftax.infer.run import sample

        idata = sample(target, method, num_chains=chains, num_warmup=warmup, num_samples=draws, seed=seed,
                       init=_starts(target, chains, seed), progress=False)
        grads = idata.attrs["num_grad_evals_warmup"] + idata.attrs["num_grad_evals_sampling"]
        return Run(idata, grads)
    return run


# one sampler object / jitted program per (peer, target, sizes): the timed second call reuses it. Keyed on
# the target object itself (kept alive here), so a new target of the same name never reuses a stale program.
_COMPILED: dict = {}


def _starts(target, chains: int, seed: int):
    """The chains' starting points, one draw of ``target.init_fn`` each: the same for every method of a
    run (and computed once, so the timed second call does not compile the draw again)."""
    import jax

    key = ("starts", id(target), chains, seed)
    if key not in _COMPILED:
        _COMPILED[key] = (target, np.asarray(target.initial_positions(jax.random.key(seed + 1), chains)))
    return _COMPILED[key][1]


def _constrained(target, xs) -> dict:
    """``(chain, draw, dim)`` unconstrained -> ``{site: (chain, draw, ...)}`` constrained."""
    import jax
    import jax.numpy as jnp

    return {k: np.asarray(v) for k, v in jax.jit(jax.vmap(jax.vmap(target.constrain)))(jnp.asarray(xs)).items()}


def run_numpyro_nuts(target, chains, warmup, draws, seed) -> Run:
    """NumPyro's NUTS on ``-target.logdensity_fn`` with vectorised chains (its default adaptation: step
    size and diagonal mass matrix in Stan's windows, per chain). Warm-up and sampling are run as
    ``MCMC.warmup`` then ``MCMC.run``, so that the leapfrog steps of both are counted exactly."""
    import jax
    from numpyro.infer import MCMC, NUTS

    key = ("numpyro_nuts", id(target), chains, warmup, draws)
    if key not in _COMPILED:
        mcmc = MCMC(NUTS(potential_fn=lambda x: -target.logdensity_fn(x)), num_warmup=warmup, num_samples=draws,
                    num_chains=chains, chain_method="vectorized", progress_bar=False)
        _COMPILED[key] = (target, mcmc)
    mcmc = _COMPILED[key][1]
    x0 = _starts(target, chains, seed)
    k_warm, k_draw = jax.random.split(jax.random.key(seed))
    mcmc.warmup(k_warm, init_params=x0, extra_fields=("num_steps",), collect_warmup=True)
    warm_steps = float(np.asarray(mcmc.get_extra_fields()["num_steps"]).sum())
    mcmc.run(k_draw, extra_fields=("num_steps", "diverging"))
    fields = mcmc.get_extra_fields()
    xs = mcmc.get_samples(group_by_chain=True)
    mcmc.post_warmup_state = None  # the next call warms up afresh
    return Run(_constrained(target, xs), warm_steps + float(np.asarray(fields["num_steps"]).sum()),
               divergences=int(np.asarray(fields["diverging"]).sum()))


def run_blackjax_nuts(target, chains, warmup, draws, seed) -> Run:
    """BlackJAX's ``window_adaptation`` (Stan's windows, diagonal metric) and ``nuts`` for each chain,
    under ``vmap``, one jitted program."""
    import blackjax
    import jax

    key = ("blackjax_nuts", id(target), chains, warmup, draws)
    if key not in _COMPILED:
        @jax.jit
        def program(keys, x0):
            def one(k, x):
                k_warm, k_draw = jax.random.split(k)
                warm = blackjax.window_adaptation(blackjax.nuts, target.logdensity_fn)
                (state, params), warm_info = warm.run(k_warm, x, num_steps=warmup)
                kernel = blackjax.nuts(target.logdensity_fn, **params)

                def body(s, kk):
                    s, info = kernel.step(kk, s)
                    return s, (s.position, info.num_integration_steps, info.is_divergent)
                _, (xs, n, div) = jax.lax.scan(body, state, jax.random.split(k_draw, draws))
                return xs, n.sum() + warm_info.info.num_integration_steps.sum(), div.sum()
            return jax.vmap(one)(keys, x0)
        _COMPILED[key] = (target, program)
    x0 = _starts(target, chains, seed)
    xs, n, div = _COMPILED[key][1](jax.random.split(jax.random.key(seed), chains), x0)
    return Run(_constrained(target, xs), float(np.asarray(n).sum()), divergences=int(np.asarray(div).sum()))


PEERS: dict[str, Callable] = {"numpyro_nuts": run_numpyro_nuts, "blackjax_nuts": run_blackjax_nuts}


def _runner(method) -> tuple[str, Callable]:
    if isinstance(method, tuple):
        return method
    if method in PEERS:
        return method, PEERS[method]
    return method, _driftax(method)


def _as_sites(target, draws):
    """A run's draws as something `score` reads: flat unconstrained arrays are constrained first."""
    import arviz as az

    if isinstance(draws, (dict, az.InferenceData)):
        return draws
    x = np.asarray(draws)
    if x.ndim != 3 or not np.issubdtype(x.dtype, np.number):
        raise ValueError(f"draws must be a dict of sites, an InferenceData or a (chain, draw, dim) array, "
                         f"got shape {x.shape}")
    if x.shape[-1] != target.dim:
        raise ValueError(f"draws have {x.shape[-1]} parameters per draw, the target {target.name!r} has "
                         f"{target.dim} (unconstrained)")
    return _constrained(target, x)


def run_method(target, reference: dict, method, *, chains: int = 4, warmup: int = 1000, draws: int = 1000,
               seed: int = 0, ot_points: int | None = 500, target_label: str | None = None,
               repeats: int = 1) -> dict:
    """One suite row: ``method`` (a `known_methods` name or a ``(label, fn)`` pair, ``fn(target,
    chains, warmup, draws, seed) -> Run``) on ``target``, run once to compile and then ``repeats``
    timed times (the fastest call is the row's ``seconds``: background load only ever slows a call),
    scored against ``reference`` by `score`. The row has `ROW_KEYS` and ``compile_seconds``,
    ``ess_tail_min``, ``khat``, ``passed``."""
    from driftax._checks import check_int

    chains, warmup = check_int("chains", chains, minimum=1), check_int("warmup", warmup, minimum=0)
    draws, seed = check_int("draws", draws, minimum=2), check_int("seed", seed, minimum=0)
    repeats = check_int("repeats", repeats, minimum=1)
    label, fn = _runner(method)
    check_reference(target, reference)
    t0 = time.perf_counter()
    fn(target, chains, warmup, draws, seed)  # compilation (and a first run)
    first = time.perf_counter() - t0
    seconds = math.inf
    for _ in range(repeats):  # the same seed: the same draws every time
        t0 = time.perf_counter()
        out = fn(target, chains, warmup, draws, seed)
        seconds = min(seconds, time.perf_counter() - t0)
    if not isinstance(out, Run):
        raise TypeError(f"method {label!r} must return a driftax.bench.suite.Run, got {type(out).__name__}")
    sites = _as_sites(target, out.draws)
    m = score(sites, reference, grad_evals=out.grad_evals, seconds=seconds, log_weights=out.log_weights,
              ot_points=ot_points, seed=seed)
    if out.divergences is not None:
        m["divergences"] = int(out.divergences)
    row = {"target": target_label or target.name, "method": label, **{k: m[k] for k in ROW_KEYS[2:]},
           "ess_tail_min": m["ess_tail_min"], "khat": m["khat"], "compile_seconds": max(first - seconds, 0.0)}
    row["passed"] = bool(m["mean_err"] <= MEAN_TOL and m["sd_err"] <= SD_TOL
                         and (m["rhat_max"] is None or m["rhat_max"] <= RHAT_TOL))
    return row


def run_suite(targets, methods=DEFAULT_METHODS, *, chains: int = 4, warmup: int = 1000, draws: int = 1000,
              seed: int = 0, ot_points: int | None = 500, root=None, on_row: Callable | None = None,
              on_error: str = "raise", repeats: int = 1) -> dict:
    """Every method on every target; returns ``{"rows": [...], "skipped": [...]}``.

    ``targets``, ``methods``: lists (or comma-separated strings) of names; an unknown name raises
    ``ValueError`` listing the known ones before anything runs. ``methods`` may also hold ``(label,
    fn)`` pairs (`run_method`), ``targets`` ``(label, target, reference)`` triples (a user's model
    and reference draws: `check_reference` checks the reference's sites against the model's).
    ``gp_pois_regr`` is skipped, with the reason, unless
    ``jax_enable_x64`` is on (its kernel Cholesky fails in float32: `driftax.models.posteriordb`).
    ``on_row(row)`` is called after each row (a benchmark writes its partial results there).
    ``repeats``: timed calls per row, the fastest kept (`run_method`).
    ``on_error="record"``: a method that raises ``ValueError``/``RuntimeError`` on a target (a start
    where the density is not finite, say) is recorded in ``skipped`` with its error and the suite goes
    on (a long benchmark run); ``"raise"`` (default) lets it propagate.
    """
    if on_error not in ("raise", "record"):
        raise ValueError(f"on_error must be 'raise' or 'record', got {on_error!r}")
    import jax

    targets = check_names("target", targets, known_targets())
    methods = check_names("method", methods, known_methods())
    rows, skipped = [], []
    for name in targets:
        if isinstance(name, tuple):
            name, target, reference = name
        elif name == "gp_pois_regr" and not jax.config.jax_enable_x64:
            skipped.append({"target": name, "method": "*", "reason": "needs jax_enable_x64 (float32 kernel "
                            "Cholesky inaccurate, NUTS diverges); rerun with --x64"})
            continue
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                target, reference = load_target(name, root=root, seed=seed)
        check_reference(target, reference)
        for method in methods:
            label = _runner(method)[0]
            try:
                row = run_method(target, reference, method, chains=chains, warmup=warmup, draws=draws, seed=seed,
                                 ot_points=ot_points, target_label=name, repeats=repeats)
            except (ValueError, FloatingPointError, RuntimeError) as err:
                if on_error == "raise":
                    raise
                skipped.append({"target": name, "method": label, "reason": f"{type(err).__name__}: {err}"})
                continue
            rows.append(row)
            if on_row is not None:
                on_row(row)
    return {"rows": rows, "skipped": skipped}


# --------------------------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------------------------
def _fmt(v, spec: str) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return format(v, spec)


def markdown_table(rows: list[dict]) -> str:
    """The rows as a Markdown table (one line per target x method)."""
    head = ("| target | method | mean err (sd) | sd err | min bulk ESS | ESS / grad | ESS / s | R-hat | div | "
            "OT | grads | s (+ compile) | pass |")
    lines = [head, "| --- | --- |" + " ---: |" * 10 + " :---: |"]
    for r in rows:
        lines.append(
            f"| {r['target']} | {r['method']} | {_fmt(r['mean_err'], '.3f')} | {_fmt(r['sd_err'], '.3f')} | "
            f"{_fmt(r['ess_bulk_min'], '.0f')} | {_fmt(r['ess_per_grad'], '.2e')} | "
            f"{_fmt(r['ess_per_second'], '.1f')} | "
            f"{_fmt(r['rhat_max'], '.3f')} | {_fmt(r['divergences'], 'd')} | {_fmt(r['ot_distance'], '.3f')} | "
            f"{_fmt(r['grad_evals'], '.3g')} | {_fmt(r['seconds'], '.1f')} "
            f"(+{_fmt(r.get('compile_seconds'), '.0f')}) | "
            f"{'yes' if r.get('passed') else 'no'} |")
    return "\n".join(lines)


def json_safe(x):
    """``x`` as plain JSON values: dicts, lists and tuples recursed into, numpy scalars and arrays
    made Python numbers and lists, and every non-finite float ``None`` (JSON has no NaN or inf; a
    ``null`` is written). The one converter of the suite and the benchmark scripts."""
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    if isinstance(x, np.ndarray):
        return json_safe(x.tolist())
    if isinstance(x, (np.floating, float)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def write_json(result: dict, path) -> Path:
    """``{"rows": [...], ...}`` to ``path`` (non-finite numbers as ``null``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = json_safe(result)
    path.write_text(json.dumps(out, indent=1))
    return path


def plot(rows: list[dict], out) -> list[Path]:
    """Three PNGs in ``out``: ``suite_ess_per_grad.png`` (ESS per gradient by method and target, bars,
    log scale), ``suite_error_vs_grads.png`` (worst mean error against gradient evaluations, log-log),
    ``suite_pass_fail.png`` (targets x methods, green pass / red fail / grey not run, mean error written
    in each cell)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    targets = list(dict.fromkeys(r["target"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    cell = {(r["target"], r["method"]): r for r in rows}
    paths = []

    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(targets) + 2), 3.8))
    width = 0.8 / max(len(methods), 1)
    for i, m in enumerate(methods):
        vals = [(cell[(t, m)]["ess_per_grad"] or np.nan) if (t, m) in cell else np.nan for t in targets]
        ax.bar(np.arange(len(targets)) + i * width, vals, width, label=m)
    ax.set_xticks(np.arange(len(targets)) + 0.4 - width / 2)
    ax.set_xticklabels(targets, rotation=35, ha="right", fontsize=7)
    ax.set_ylabel("min bulk ESS / gradient")
    ax.set_yscale("log")
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    paths.append(out / "suite_ess_per_grad.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    markers = "osD^v<>phx*"
    for i, m in enumerate(methods):
        rs = [r for r in rows if r["method"] == m and r["grad_evals"]]
        ax.scatter([r["grad_evals"] for r in rs], [max(r["mean_err"], 1e-4) for r in rs], marker=markers[i % 11],
                   label=m, alpha=0.8)
    ax.axhline(MEAN_TOL, color="grey", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("gradient evaluations (warm-up + sampling, all chains)")
    ax.set_ylabel("worst |mean error| (reference sd)")
    ax.legend(fontsize=6)
    fig.tight_layout()
    paths.append(out / "suite_error_vs_grads.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    grid = np.full((len(targets), len(methods)), np.nan)
    for (t, m), r in cell.items():
        grid[targets.index(t), methods.index(m)] = 1.0 if r["passed"] else 0.0
    fig, ax = plt.subplots(figsize=(1.0 * len(methods) + 2.5, 0.35 * len(targets) + 1.5))
    cmap = matplotlib.colors.ListedColormap(["#d9534f", "#5cb85c"])
    cmap.set_bad("#cccccc")
    ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=0, vmax=1, aspect="auto")
    for (t, m), r in cell.items():
        ax.text(methods.index(m), targets.index(t), f"{r['mean_err']:.2f}", ha="center", va="center", fontsize=6)
    ax.set_xticks(range(len(methods)))
    ax.set_xticklabels(methods, rotation=35, ha="right", fontsize=7)
    ax.set_yticks(range(len(targets)))
    ax.set_yticklabels(targets, fontsize=7)
    ax.set_title(f"pass: mean err <= {MEAN_TOL}, sd err <= {SD_TOL}, R-hat <= {RHAT_TOL}", fontsize=8)
    fig.tight_layout()
    paths.append(out / "suite_pass_fail.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    return paths
