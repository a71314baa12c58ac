"""driftax's NUTS against NumPyro's (vectorised chains) and BlackJAX's (window adaptation + vmap).

On the posteriordb posteriors driftax has NumPyro models for, the three samplers run the same
chains, warm-up and draws from the same log-density (the model's, in NumPyro's unconstrained
space), in one process. Timed apart: the first call of each sampler (compilation included), then
``--repeats`` identical calls, taken in turn across the samplers, whose fastest wall time is the
sampling cost. Reported per target and sampler:
min bulk ESS (ArviZ) over the constrained parameters, per second of the fastest timed call and per
gradient evaluation (leapfrog steps of warm-up and sampling, all chains), the worst |mean error|
against posteriordb's reference draws in reference sd, and the worst R-hat. The headline ratios
are medians over targets of driftax's ESS per second over each peer's.

The same run also times driftax's ChEES-HMC and MCLMC against BlackJAX's own (``chees_adaptation``
then ``dynamic_hmc`` under vmap; ``mclmc_find_L_and_step_size`` per chain then its kernel), same
chains, warm-up and draws: driftax runs BlackJAX's kernels and warm-ups in its own loop, so these
ratios measure the loop (``--methods nuts`` skips them).

    python benchmarks/bench_nuts.py [--quick] [--json PATH] [--methods nuts,chees,mclmc]
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import arviz as az
import blackjax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from blackjax.adaptation.mclmc_adaptation import mclmc_find_L_and_step_size

import driftax as dx
from driftax.bench import suite
from driftax.models import posteriordb


def _constrained(target, xs):
    """(chain, draw, dim) unconstrained -> {site: (chain, draw, ...)} constrained."""
    return {k: np.asarray(v) for k, v in jax.vmap(jax.vmap(target.constrain))(jnp.asarray(xs)).items()}


def _score(target, draws: dict, reference: dict, grads: float, seconds: float):
    idata = az.from_dict(posterior={k: v for k, v in draws.items() if k in reference})
    s = az.summary(idata, kind="diagnostics")
    ess = float(s.ess_bulk.min())
    err = 0.0
    for k, r in reference.items():
        if k in draws:
            x = draws[k].reshape((-1,) + r.shape[2:])
            rr = r.reshape((-1,) + r.shape[2:])
            err = max(err, float(np.max(np.abs(x.mean(0) - rr.mean(0)) / rr.std(0))))
    return {"ess_per_second": ess / seconds, "ess_per_grad": ess / grads, "mean_err": err,
            "rhat_max": float(s.r_hat.max()), "min_ess": ess, "seconds": seconds}


def run_driftax(target, chains, warmup, draws, seed, method="nuts"):
    """driftax's method from the suite's starting points, the ones the NumPyro and BlackJAX runs take."""
    idata = dx.infer.sample(target, method, num_chains=chains, num_warmup=warmup, num_samples=draws,
                            seed=seed, init=suite._starts(target, chains, seed), progress=False)
    post = {k: idata.posterior[k].values for k in idata.posterior.data_vars}
    return post, idata.attrs["num_grad_evals_warmup"] + idata.attrs["num_grad_evals_sampling"]


def run_blackjax_chees(target, chains, warmup, draws, seed):
    """BlackJAX's ChEES warm-up over all chains (Adam 0.025, as driftax), then dynamic_hmc under vmap."""
    key = ("blackjax_chees", target.name)
    if key not in _COMPILED:
        @jax.jit
        def run(k, x0):
            k_warm, k_draw = jax.random.split(k)
            warm = blackjax.chees_adaptation(target.logdensity_fn, chains, mass_matrix_estimation="diagonal")
            (states, params), info = warm.run(k_warm, x0, 0.1, optax.adam(0.025), warmup)
            kernel = blackjax.dynamic_hmc(target.logdensity_fn, **params)

            def body(s, kk):
                s, i = jax.vmap(kernel.step)(jax.random.split(kk, chains), s)
                return s, (s.position, i.num_integration_steps.sum())
            _, (xs, n) = jax.lax.scan(body, states, jax.random.split(k_draw, draws))
            return jnp.swapaxes(xs, 0, 1), n.sum() + info.info.num_integration_steps.sum()
        _COMPILED[key] = run
    x0 = target.initial_positions(jax.random.key(seed + 1), chains)
    xs, n = _COMPILED[key](jax.random.key(seed), x0)
    return _constrained(target, xs), float(n)


def run_blackjax_mclmc(target, chains, warmup, draws, seed):
    """BlackJAX's MCLMC tuner on each chain (its default stage fractions of the sampling length,
    diagonal preconditioning), then its kernel under vmap; each chain keeps its own h and L."""
    key = ("blackjax_mclmc", target.name)
    if key not in _COMPILED:
        kernel = blackjax.mcmc.mclmc.build_kernel()

        @jax.jit
        def run(keys, x0):
            def one(k, x):
                k_init, k_tune, k_draw = jax.random.split(k, 3)
                state = blackjax.mcmc.mclmc.init(x, target.logdensity_fn, k_init)
                # tuning steps: 0.1 + 0.1 (+1/30) + 0.1 of num_steps; num_steps chosen so they total `warmup`
                state, p, n_tune = mclmc_find_L_and_step_size(kernel, round(warmup / (0.3 + 1 / 30)), state, k_tune,
                                                              logdensity_fn=target.logdensity_fn)

                def body(s, kk):
                    s, _ = kernel(kk, s, target.logdensity_fn, p.inverse_mass_matrix, p.L, p.step_size)
                    return s, s.position
                _, xs = jax.lax.scan(body, state, jax.random.split(k_draw, draws))
                return xs, 2.0 * (n_tune + draws)  # McLachlan: two gradients a step
            return jax.vmap(one)(keys, x0)
        _COMPILED[key] = run
    x0 = target.initial_positions(jax.random.key(seed + 1), chains)
    xs, n = _COMPILED[key](jax.random.split(jax.random.key(seed), chains), x0)
    return _constrained(target, xs), float(np.asarray(n).sum())


_COMPILED: dict = {}  # one sampler object / jitted program per (peer, target): the timed call reuses it


def run_numpyro(target, chains, warmup, draws, seed):
    """NumPyro's vectorised NUTS, as the sampler suite runs it (its warm-up gradients counted exactly)."""
    run = suite.run_numpyro_nuts(target, chains, warmup, draws, seed)
    return run.draws, run.grad_evals


def run_blackjax(target, chains, warmup, draws, seed):
    """BlackJAX's window adaptation + NUTS under vmap, as the sampler suite runs it."""
    run = suite.run_blackjax_nuts(target, chains, warmup, draws, seed)
    return run.draws, run.grad_evals


PEERS = {"driftax": run_driftax, "numpyro": run_numpyro, "blackjax": run_blackjax}
EXTRA = {  # method family -> {row label: runner}; the first runner is driftax's
    "chees": {"driftax_chees": lambda *a: run_driftax(*a, method="hmc_chees"), "blackjax_chees": run_blackjax_chees},
    "mclmc": {"driftax_mclmc": lambda *a: run_driftax(*a, method="mclmc"), "blackjax_mclmc": run_blackjax_mclmc},
}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="three posteriors, 4 chains x 500 + 500")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out"))
    ap.add_argument("--repeats", type=int, default=3, help="timed calls per sampler (the fastest is kept)")
    ap.add_argument("--methods", default="nuts,chees,mclmc", help="families to run: nuts (the headline), chees, mclmc")
    args = ap.parse_args(argv)
    # NumPyro re-jits its loop on every MCMC.run: without a persistent cache its timed calls
    # would compile again, where driftax's and BlackJAX's reuse their programs in memory
    suite.enable_compile_cache()
    families = args.methods.split(",")
    runners = dict(PEERS) if "nuts" in families else {}
    for fam in families:
        runners.update(EXTRA.get(fam, {}))
    chains, warmup, draws = (4, 500, 500) if args.quick else (8, 1000, 1000)
    names = ["eight_schools", "arK", "garch11"] + ([] if args.quick else ["gp_pois_regr"])
    if "gp_pois_regr" in names:
        jax.config.update("jax_enable_x64", True)
    rows = []
    for name in names:
        target, reference = posteriordb.load(name)
        first, seconds, out = {}, {}, {}
        for method, fn in runners.items():
            t0 = time.perf_counter()
            fn(target, chains, warmup, draws, args.seed)  # compilation (and a first run)
            first[method] = time.perf_counter() - t0
        # The timed calls: `--repeats` rounds over the samplers in turn, each sampler's fastest call
        # kept (the same seed gives the same draws every time). A shared machine slows a call, it
        # never speeds one up, so the minimum is the least disturbed measure, and taking the
        # rounds in turn exposes every sampler to the same background load.
        for _ in range(args.repeats):
            for method, fn in runners.items():
                t0 = time.perf_counter()
                out[method] = fn(target, chains, warmup, draws, args.seed)
                seconds[method] = min(seconds.get(method, np.inf), time.perf_counter() - t0)
        for method in runners:
            post, grads = out[method]
            row = {"target": name, "method": method, **_score(target, post, reference, grads, seconds[method]),
                   "compile_seconds": max(first[method] - seconds[method], 0.0)}
            rows.append(row)
            print(f"{name:14s} {method:9s} ESS/s {row['ess_per_second']:8.1f}  ESS/grad {row['ess_per_grad']:.4f}  "
                  f"mean_err {row['mean_err']:.3f}  R-hat {row['rhat_max']:.3f}  {seconds[method]:.2f} s "
                  f"(+{row['compile_seconds']:.1f} s compile)", flush=True)

    def median_ratio(peer, ours="driftax"):
        r = [next(x["ess_per_second"] for x in rows if x["target"] == t and x["method"] == ours)
             / next(x["ess_per_second"] for x in rows if x["target"] == t and x["method"] == peer) for t in names]
        return float(np.median(r))
    result = {"rows": rows}
    if "nuts" in families:
        result.update(median_ratio_vs_numpyro=median_ratio("numpyro"), median_ratio_vs_blackjax=median_ratio("blackjax"))
        print(f"\nmedian ESS/s ratio, driftax / numpyro: {result['median_ratio_vs_numpyro']:.2f}; "
              f"driftax / blackjax: {result['median_ratio_vs_blackjax']:.2f} (target >= 1 each)")
    for fam in ("chees", "mclmc"):
        if fam in families:
            result[f"median_ratio_{fam}_vs_blackjax"] = r = median_ratio(f"blackjax_{fam}", f"driftax_{fam}")
            print(f"median ESS/s ratio, driftax {fam} / blackjax {fam}: {r:.2f}")
    print(f"machine: {platform.machine()}, {jax.device_count()} {jax.default_backend()} device(s)")
    args.out.mkdir(parents=True, exist_ok=True)
    _plot(rows, names, list(runners), args.out)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))


def _plot(rows, names, methods, out: Path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3.5))
    width = 0.8 / len(methods)
    for i, method in enumerate(methods):
        vals = [next(r["ess_per_second"] for r in rows if r["target"] == t and r["method"] == method) for t in names]
        ax.bar(np.arange(len(names)) + i * width, vals, width, label=method)
    ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2)
    ax.set_xticklabels(names)
    ax.set_ylabel("min bulk ESS / s")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "bench_nuts.png", dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
