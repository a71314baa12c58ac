"""``driftax demo``: the main job on built-in defaults.

Samples eight schools (a NumPyro model) with NUTS, prints ArviZ's summary, the verdict and the
error against posteriordb's reference draws (where the shared folder is present), writes a trace
plot and the netCDF file; puts NUTS beside MALA on arK, and ULA's in-loop average beside NumPyro's
NUTS on a logistic regression; then runs each engine's own part (transport: SNS against Sinkhorn).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

# Rubin (1981), Table 2: estimated coaching effects and their standard errors in eight schools.
EIGHT_SCHOOLS_Y = (28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0)
EIGHT_SCHOOLS_SIGMA = (15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("demo", help="the main job: sample eight schools and gallery targets, "
                                           "compare with ground truth, run each engine's demo")
    p.add_argument("--out", type=Path, default=Path("driftax-demo"), help="output folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def _section(title: str) -> None:
    print(f"\n{'=' * 78}\n{title}\n{'=' * 78}", flush=True)


def _sampling(out: Path, seed: int, progress: bool) -> None:
    import arviz as az
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import driftax as dx
    from driftax.cli.sample import reference_for
    from driftax.models import gallery, posteriordb

    _section("eight schools (non-centred NumPyro model), NUTS (the default), 4 chains x 1000 draws")
    target = dx.models.from_numpyro(posteriordb.eight_schools_noncentered, 8,
                                    np.array(EIGHT_SCHOOLS_Y), np.array(EIGHT_SCHOOLS_SIGMA),
                                    name="eight_schools")
    idata = dx.infer.sample(target, num_chains=4, num_samples=1000, num_warmup=1000, seed=seed, progress=progress)
    print(az.summary(idata, var_names=["mu", "tau", "theta"]).to_string())
    print(f"step size {idata.attrs['step_size']:.3f}, acceptance "
          f"{float(idata.sample_stats.acceptance_rate.mean()):.3f}, divergences "
          f"{int(idata.sample_stats.diverging.sum())}, {idata.attrs['sampling_time']:.1f} s")
    print(dx.infer.diagnostics.verdict(idata))
    ref = reference_for("eight_schools", target)
    if ref is not None:
        print("\nagainst posteriordb's Stan reference draws (units of reference sd):")
        print(dx.infer.diagnostics.format_comparison(dx.infer.compare_to_reference(idata, ref)))
    else:
        print("\n(posteriordb folder not found: no reference comparison)")
    idata.to_netcdf(str(out / "eight_schools.nc"))
    az.plot_trace(idata, var_names=["mu", "tau"])
    plt.tight_layout()
    plt.savefig(out / "eight_schools_trace.png", dpi=90)
    plt.close("all")
    print(f"\nwrote {out / 'eight_schools.nc'} and {out / 'eight_schools_trace.png'}")

    try:
        target, ref = posteriordb.load("arK")
    except FileNotFoundError:
        target = None
    if target is not None:
        _section("arK (posteriordb, AR(5)): NUTS beside MALA, 4 chains x 1000 warm-up + 1000 draws each")
        print(f"{'method':<6}{'worst |mean err|':>18}{'R-hat':>8}{'min ESS':>9}{'gradients':>11}{'ESS/grad':>10}{'s':>6}")
        for method in ("mala", "nuts"):
            t0 = time.perf_counter()
            idata = dx.infer.sample(target, method, num_chains=4, num_samples=1000, num_warmup=1000, seed=seed,
                                    progress=False)
            cmp = dx.infer.compare_to_reference(idata, ref)
            worst = max(float(np.abs(v["mean_error"]).max()) for v in cmp.values())
            diag = az.summary(idata, kind="diagnostics")
            grads = idata.attrs["num_grad_evals_warmup"] + idata.attrs["num_grad_evals_sampling"]
            print(f"{method:<6}{worst:>18.3f}{diag.r_hat.max():>8.2f}{diag.ess_bulk.min():>9.0f}{grads:>11,.0f}"
                  f"{diag.ess_bulk.min() / grads:>10.4f}{time.perf_counter() - t0:>6.1f}")
            print(f"      {dx.infer.diagnostics.verdict(idata)}")

    target = gallery.get("logistic_regression")
    _section(f"gallery: {target.name} (dim {target.dim}): ULA's in-loop Polyak average against NumPyro NUTS")
    # ULA's step where MALA would accept 90 % of its moves, a diagonal metric: its O(h) bias stays
    # near the Monte Carlo error (with a dense metric's larger steps it did not: 0.46 sd)
    averaged = dx.infer.sample(target, "ula", num_chains=8, num_samples=2000, num_warmup=1500, seed=seed,
                               target_acceptance=0.9, average="polyak", progress=progress)
    t0 = time.perf_counter()
    ref = _nuts_reference(target, seed)
    print(f"ULA {averaged.attrs['sampling_time']:.1f} s (no draws needed: the average is carried in the loop); "
          f"NumPyro NUTS {time.perf_counter() - t0:.1f} s")
    pooled = dx.infer.diagnostics.pooled_averages(averaged)
    print(f"{'site':<10}{'ULA average':>12}{'NUTS mean':>11}{'error (NUTS sd)':>17}")
    for k in ("intercept", "beta"):
        m, r = np.ravel(pooled[k][0]), ref[k].reshape(-1, *np.shape(pooled[k][0]))
        err = (m - np.ravel(r.mean(0))) / np.ravel(r.std(0))
        for i in range(min(3, m.size)):
            label = k if m.size == 1 else f"{k}[{i}]"
            print(f"{label:<10}{m[i]:>12.3f}{np.ravel(r.mean(0))[i]:>11.3f}{err[i]:>17.3f}")
    worst = max(float(np.max(np.abs(pooled[k][0] - ref[k].mean((0, 1))) / ref[k].std((0, 1)))) for k in ref)
    print(f"worst |error| over all {target.dim} coefficients: {worst:.3f} NUTS sd")


def _nuts_reference(target, seed: int, num_chains: int = 2, num_samples: int = 2000):
    """Draws of NumPyro's NUTS on the same flat log-density: an independent sampler as reference."""
    import jax
    import jax.numpy as jnp
    from numpyro.infer import MCMC, NUTS

    mcmc = MCMC(NUTS(potential_fn=lambda x: -target.logdensity_fn(x)), num_warmup=500,
                num_samples=num_samples, num_chains=num_chains, chain_method="sequential",
                progress_bar=False)
    mcmc.run(jax.random.key(seed + 1), init_params=jnp.zeros((num_chains, target.dim)))
    x = mcmc.get_samples(group_by_chain=True)
    flat = jax.vmap(jax.vmap(target.constrain))(x)
    return {k: np.asarray(v) for k, v in flat.items()}


def run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    _sampling(out, args.seed, not args.no_progress)

    from driftax.cli import commands

    for module in commands():  # each engine's own part, from its command module's demo(out)
        if module.__name__ != __name__ and hasattr(module, "demo"):
            title = (module.demo.__doc__ or module.__name__).strip().splitlines()[0]
            _section(title)
            print(module.demo(out))
    print(f"\ndemo finished in {time.perf_counter() - t0:.0f} s; outputs in {out.resolve()}")
    return 0
