"""Posterior means from averaged Langevin iterates: error against gradient evaluations, driftax vs BlackJAX.

For each target, every method starts its chains from the same points and runs the same number of
warm-up and sampling steps; the estimate after t sampling steps is the running mean of the
iterates (the Polyak-Ruppert average, pooled over chains), and its error is the worst coordinate's
|mean - reference mean| / reference sd over the model's constrained parameters. Gradient
evaluations count warm-up and sampling, per chain; a minibatch gradient counts B/N of a full one.

  * ``ula_avg``      driftax ULA, step size tuned by ``target_acceptance=0.9`` in a MALA warm-up
                     (the would-be acceptance), dense metric from the same warm-up, average="polyak".
  * ``mala``         driftax MALA (defaults: acceptance 0.574, diagonal metric), chain average.
  * ``mala_dense``   driftax MALA with the dense metric ULA uses: what the metric alone buys.
  * ``sgld_avg``     driftax SGLD, minibatches of N/10 without replacement per epoch, a tenth of the
                     step size ULA's warm-up found (its W full gradients counted), then its own
                     warm-up (W minibatch gradients: the diagonal metric), average="polyak".
  * ``blackjax_mala``  blackjax.mala, step size by BlackJAX's dual averaging (target 0.574) in the
                     same warm-up, no preconditioner (blackjax.mala takes none), chain average.
  * ``blackjax_sgld``  blackjax.sgld with the step size of ``sgld_avg`` (counted alike), minibatches of
                     the same size without replacement per epoch, no preconditioner, average after
                     the same burn-in.

The headline, ``grad_ratio_vs_blackjax_mala``, is on logistic regression: the gradient evaluations
BlackJAX MALA's chain average needs to reach a worst-coordinate error of ``--tol`` (default 0.1
reference sd) and stay below it, divided by those of the better of ``ula_avg`` and ``sgld_avg``;
with ``--seeds S`` (starts and keys 0..S-1, the same for every method) each count is the median
over seeds, and the ratio is that of the medians.
References: posteriordb's reference draws; for logistic regression a long BlackJAX NUTS run
(window adaptation, 4 chains), cached in the output folder.

    python benchmarks/langevin_posterior.py --quick --json out.json
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import blackjax
import jax
import jax.numpy as jnp
import numpy as np

import driftax as dx
from driftax.models import posteriordb

CHAINS = 16
ULA_ACCEPTANCE = 0.9  # would-be MALA acceptance ULA's step is tuned to (0.574-0.95 tried: 0.9 best)
ULA_METRIC = "dense"  # logistic regression's coefficients are strongly correlated: a diagonal metric
# left ULA at 12,976 gradients to 0.1 sd, a dense one 1,738 (seed 0); SGLD keeps its diagonal one
# (a dense metric from its own minibatch warm-up ended at 0.25 sd)
SGLD_FRACTION = 10  # batch = ceil(N / 10)
SGLD_STEP = 0.1  # SGLD's step, as a fraction of ULA's (1.0 diverged to 1e18; 0.1-0.01 tried: 0.1 best)


# --- references ---------------------------------------------------------------------------------
def _flatten(sites: dict, shapes: dict) -> np.ndarray:
    """``{site: (..., *shape)}`` -> ``(..., p)``, sites in the order of ``shapes`` ({site: event shape})."""
    cols = []
    for name, shape in shapes.items():
        a = np.asarray(sites[name], np.float64)
        cols.append(a.reshape(a.shape[: a.ndim - len(shape)] + (-1,)))
    return np.concatenate(cols, axis=-1)


def constrained_names(target, reference_keys=None) -> dict:
    """``{site: event shape}`` of the target's constrained sites (those in the reference, if given)."""
    shapes = jax.eval_shape(target.constrain, jax.ShapeDtypeStruct((target.dim,), jnp.float32))
    return {k: v.shape for k, v in shapes.items() if reference_keys is None or k in reference_keys}


def nuts_reference(target, names, out: Path, num_draws: int, seed: int = 1):
    cache = out / f"reference_{target.name}_{num_draws}.npz"
    if cache.exists():
        z = np.load(cache)
        return z["mean"], z["sd"]
    key = jax.random.key(seed)
    x0 = target.initial_positions(jax.random.fold_in(key, 1), CHAINS)

    def one_chain(k, x):
        warm = blackjax.window_adaptation(blackjax.nuts, target.logdensity_fn, is_mass_matrix_diagonal=False)
        (state, params), _ = warm.run(jax.random.fold_in(k, 0), x, num_steps=1000)
        kernel = blackjax.nuts(target.logdensity_fn, **params)

        def body(s, kk):
            s, _ = kernel.step(kk, s)
            return s, s.position
        _, xs = jax.lax.scan(body, state, jax.random.split(jax.random.fold_in(k, 1), num_draws))
        return xs
    xs = jax.jit(jax.vmap(one_chain))(jax.random.split(key, CHAINS), x0)
    flat = _flatten(jax.vmap(jax.vmap(target.constrain))(xs), names)
    mean, sd = flat.reshape(-1, flat.shape[-1]).mean(0), flat.reshape(-1, flat.shape[-1]).std(0)
    np.savez(cache, mean=mean, sd=sd)
    return mean, sd


def posteriordb_reference(reference: dict, names):
    flat = _flatten(reference, names)
    flat = flat.reshape(-1, flat.shape[-1])
    return flat.mean(0), flat.std(0)


# --- error curves -------------------------------------------------------------------------------
def error_curve(draws: np.ndarray, mean: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """Worst-coordinate error of the pooled running mean after each step: draws (chain, step, p)."""
    running = np.cumsum(draws, axis=1) / np.arange(1, draws.shape[1] + 1)[None, :, None]
    return np.max(np.abs(running.mean(0) - mean) / sd, axis=-1)


def grads_to_tol(err: np.ndarray, grads: np.ndarray, tol: float) -> float:
    """Gradient evaluations after which the error stays below ``tol`` (inf if it never settles)."""
    above = np.nonzero(err > tol)[0]
    if above.size == 0:
        return float(grads[0])
    last = above[-1] + 1
    return float(grads[last]) if last < err.size else math.inf


# --- methods ------------------------------------------------------------------------------------
def run_driftax(target, method, x0, warmup, steps, names, seed, **kw):
    t0 = time.perf_counter()
    idata = dx.infer.sample(target, method, num_chains=CHAINS, num_warmup=warmup, num_samples=steps,
                            init=x0, seed=seed, progress=False, average="polyak", **kw)
    flat = _flatten({n: idata.posterior[n].values for n in names}, names)
    avg = _flatten({n: idata.averages[n].values for n in names}, names)
    # the in-loop average is the running mean of every sampling step (thinning 1): check it
    np.testing.assert_allclose(avg, flat.mean(1), rtol=1e-3, atol=1e-3 * np.abs(flat).max())
    return flat, idata, time.perf_counter() - t0


def run_blackjax_mala(target, x0, warmup, steps, names, seed):
    logdensity = target.logdensity_fn
    da_init, da_update, da_final = blackjax.adaptation.step_size.dual_averaging_adaptation(0.574)

    def one_chain(key, x):
        state = blackjax.mala.init(x, logdensity)

        def warm(carry, k):
            state, da = carry
            h = jnp.exp(da.log_step_size)
            state, info = blackjax.mala.build_kernel()(k, state, logdensity, h)
            return (state, da_update(da, info.acceptance_rate)), None
        k_w, k_s = jax.random.split(key)
        (state, da), _ = jax.lax.scan(warm, (state, da_init(0.1)), jax.random.split(k_w, warmup))
        h = da_final(da)
        kernel = blackjax.mala(logdensity, h)

        def body(s, k):
            s, _ = kernel.step(k, s)
            return s, s.position
        _, xs = jax.lax.scan(body, state, jax.random.split(k_s, steps))
        return xs, h
    t0 = time.perf_counter()
    xs, h = jax.jit(jax.vmap(one_chain))(jax.random.split(jax.random.key(seed), CHAINS), jnp.asarray(x0))
    flat = _flatten(jax.vmap(jax.vmap(target.constrain))(xs), names)
    return flat, float(np.median(h)), time.perf_counter() - t0


def run_blackjax_sgld(target, x0, warmup, steps, names, seed, step_size, batch):
    lik = target.data_likelihood
    n = lik.size
    grad_fn = blackjax.sgmcmc.gradients.grad_estimator(lik.logprior_fn, lik.loglik_fn, n)
    sgld = blackjax.sgld(grad_fn)

    def one_chain(key, x):
        def body(carry, k):
            x, perm, cursor = carry
            k_perm, k_step = jax.random.split(k)
            fresh = cursor + batch > n
            perm = jnp.where(fresh, jax.random.permutation(k_perm, n), perm)
            cursor = jnp.where(fresh, 0, cursor)
            idx = jax.lax.dynamic_slice(perm, (cursor,), (batch,))
            minibatch = jax.tree.map(lambda a: a[idx], lik.data)
            x = sgld.step(k_step, x, minibatch, step_size)
            return (x, perm, cursor + batch), x
        _, xs = jax.lax.scan(body, (x, jnp.arange(n), jnp.asarray(n)), jax.random.split(key, warmup + steps))
        return xs[warmup:]
    t0 = time.perf_counter()
    xs = jax.jit(jax.vmap(one_chain))(jax.random.split(jax.random.key(seed), CHAINS), jnp.asarray(x0))
    flat = _flatten(jax.vmap(jax.vmap(target.constrain))(xs), names)
    return flat, time.perf_counter() - t0


# --- one target ---------------------------------------------------------------------------------
def bench_target(name, target, mean, sd, names, warmup, steps, tol, seed, out: Path):
    x0 = np.asarray(target.initial_positions(jax.random.key(seed), CHAINS), np.float32)
    results = {}
    flat, idata_mala, sec = run_driftax(target, "mala", x0, warmup, steps, names, seed)
    results["mala"] = (flat, 1.0, 1.0, sec)
    flat, _, sec = run_driftax(target, "mala", x0, warmup, steps, names, seed, mass_matrix=ULA_METRIC)
    results["mala_dense"] = (flat, 1.0, 1.0, sec)
    flat, idata_ula, sec = run_driftax(target, "ula", x0, warmup, steps, names, seed,
                                       target_acceptance=ULA_ACCEPTANCE, mass_matrix=ULA_METRIC)
    results["ula_avg"] = (flat, 1.0, 1.0, sec)
    flat, h_bj, sec = run_blackjax_mala(target, x0, warmup, steps, names, seed)
    results["blackjax_mala"] = (flat, 1.0, 1.0, sec)
    lik = target.data_likelihood
    h_sgld = None
    if lik is not None:
        batch = math.ceil(lik.size / SGLD_FRACTION)
        frac = batch / lik.size
        h_sgld = SGLD_STEP * float(idata_ula.attrs["step_size"])
        # SGLD's step size is the one ULA's warm-up found (W full gradients, counted), then its own
        # warm-up (the diagonal metric from its iterates) costs W minibatch gradients.
        flat, _, sec = run_driftax(target, dx.infer.methods.sgld(batch), x0, warmup, steps, names, seed,
                                   step_size=h_sgld)
        results["sgld_avg"] = (flat, 1.0 + frac, frac, sec)
        flat, sec = run_blackjax_sgld(target, x0, warmup, steps, names, seed, h_sgld, batch)
        results["blackjax_sgld"] = (flat, 1.0 + frac, frac, sec)

    rows, curves = [], {}
    for method, (flat, w_cost, s_cost, sec) in results.items():
        err = error_curve(flat, mean, sd)
        grads = warmup * w_cost + s_cost * np.arange(1, steps + 1)
        curves[method] = (grads, err)
        rows.append({"target": name, "method": method, "seed": seed, "final_err": float(err[-1]),
                     "grads_to_tol": grads_to_tol(err, grads, tol),
                     "grads_to_2tol": grads_to_tol(err, grads, 2 * tol), "seconds": round(sec, 2)})
    best_langevin = min(r["grads_to_tol"] for r in rows if r["method"] in ("ula_avg", "sgld_avg"))
    bj = next(r["grads_to_tol"] for r in rows if r["method"] == "blackjax_mala")
    ratio = bj / best_langevin if math.isfinite(best_langevin) else (math.nan if not math.isfinite(bj) else 0.0)
    for r in rows:
        r["grad_ratio_vs_blackjax_mala"] = ratio
    _plot(name, curves, tol, out, seed)
    return rows, ratio, {"blackjax_mala_step": h_bj, "ula_step": float(idata_ula.attrs["step_size"]),
                         "mala_step": float(idata_mala.attrs["step_size"]), "sgld_step": h_sgld}


def _medians(rows):
    """Per method, medians over seeds of the final error and the gradient counts; and the headline
    ratio: BlackJAX MALA's median count to tol over the better median of ula_avg / sgld_avg."""
    med = {}
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        med[method] = {k: float(np.median([r[k] for r in mine])) for k in ("final_err", "grads_to_tol", "grads_to_2tol")}
        med[method]["seeds"] = len(mine)
    best = min(med[m]["grads_to_tol"] for m in ("ula_avg", "sgld_avg") if m in med)
    bj = med["blackjax_mala"]["grads_to_tol"]
    ratio = bj / best if math.isfinite(best) else (math.nan if not math.isfinite(bj) else 0.0)
    return med, ratio


def _plot(name, curves, tol, out: Path, seed=0):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for method, (grads, err) in curves.items():
        ax.loglog(grads, err, label=method)
    ax.axhline(tol, color="k", lw=0.8, ls="--")
    ax.set_xlabel("gradient evaluations per chain (warm-up included)")
    ax.set_ylabel("worst |mean error| / reference sd")
    ax.set_title(name)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / f"langevin_posterior_{name}_seed{seed}.png", dpi=100)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="shorter runs and reference")
    ap.add_argument("--json", type=Path, help="write {'rows': [...], 'grad_ratio_vs_blackjax_mala': x} here")
    ap.add_argument("--tol", type=float, default=0.1, help="mean error (reference sd) to reach")
    ap.add_argument("--seed", type=int, default=0, help="first seed (starts and keys)")
    ap.add_argument("--seeds", type=int, default=1, help="number of seeds; counts are medians over them")
    ap.add_argument("--steps", type=int, help="sampling steps on logistic regression (half on posteriordb)")
    ap.add_argument("--targets", nargs="+", help="run only these targets (logistic_regression, eight_schools, arK, garch11)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out"))
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    warmup, steps, ref_draws = (1000, 20_000, 5000) if args.quick else (1000, 100_000, 20_000)
    if args.steps:
        steps = args.steps
    pdb_steps = steps // 2

    jobs = [("logistic_regression", None)] + [(p, p) for p in ("eight_schools", "arK", "garch11")]
    if args.targets:
        jobs = [j for j in jobs if j[0] in args.targets]
    per_seed, notes, medians = [], {}, {}
    for name, pdb in jobs:
        t0 = time.perf_counter()
        if pdb is None:
            target = dx.models.gallery.get("logistic_regression")
            names = constrained_names(target)
            mean, sd = nuts_reference(target, names, args.out, ref_draws)
        else:
            target, reference = posteriordb.load(pdb)
            names = constrained_names(target, reference)
            mean, sd = posteriordb_reference(reference, names)
        for seed in range(args.seed, args.seed + args.seeds):
            r, _, steps_used = bench_target(name, target, mean, sd, names, warmup, steps if pdb is None else pdb_steps,
                                            args.tol, seed, args.out)
            per_seed += r
            notes[f"{name}/{seed}"] = steps_used
            print(f"{name} seed {seed}: {time.perf_counter() - t0:.0f} s, step sizes {steps_used}", flush=True)
            for r in per_seed[-len(r):]:
                print(f"  {r['method']:15s} final err {r['final_err']:.3f}  grads to tol {r['grads_to_tol']:.0f}  "
                      f"to 2 tol {r['grads_to_2tol']:.0f}", flush=True)
        medians[name] = _medians([r for r in per_seed if r["target"] == name])
    print("gp_pois_regr: skipped (needs float64; the peers here run float32)")

    print(f"\n{'target':22s} {'method':15s} {'seed':>4s} {'final err':>10s} {'grads to tol':>13s} {'to 2 tol':>9s} {'s':>6s}")
    for r in per_seed:
        print(f"{r['target']:22s} {r['method']:15s} {r['seed']:4d} {r['final_err']:10.3f} {r['grads_to_tol']:13.0f} "
              f"{r['grads_to_2tol']:9.0f} {r['seconds']:6.1f}")
    print(f"\nmedians over {args.seeds} seed(s):")
    rows = []
    for name, (med, ratio) in medians.items():
        for method, m in med.items():
            rows.append({"target": name, "method": method, **m, "grad_ratio_vs_blackjax_mala": ratio})
            print(f"{name:22s} {method:15s} final err {m['final_err']:.3f}  grads to tol {m['grads_to_tol']:8.0f}  "
                  f"to 2 tol {m['grads_to_2tol']:8.0f}")
        print(f"{name:22s} grad ratio vs BlackJAX MALA (best of ula_avg / sgld_avg, medians): {ratio:.2f}")
    headline = medians["logistic_regression"][1] if "logistic_regression" in medians else math.nan
    print(f"\ngrad_ratio_vs_blackjax_mala (logistic regression, tol {args.tol}): {headline:.2f} "
          f"(target >= 2: {'met' if headline >= 2 else 'NOT met'})")
    print(f"machine: {platform.machine()}, {jax.device_count()} {jax.default_backend()} device(s)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"rows": rows, "grad_ratio_vs_blackjax_mala": headline, "tol": args.tol,
                                         "seeds": args.seeds, "per_seed": per_seed, "step_sizes": notes},
                                        indent=1, default=float))


if __name__ == "__main__":
    main()
