"""``driftax demo``: the main job on built-in defaults.

Samples eight schools (a NumPyro model) and two gallery targets with MALA, prints ArviZ's summary
and the error against ground truth (posteriordb's reference draws where the shared folder is
present, exact draws for the gallery), writes a trace plot and the netCDF file, then runs each
engine's own part (transport: SNS against Sinkhorn).
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

    _section("eight schools (non-centred NumPyro model), MALA, 8 chains x 5000 draws")
    target = dx.models.from_numpyro(posteriordb.eight_schools_noncentered, 8,
                                    np.array(EIGHT_SCHOOLS_Y), np.array(EIGHT_SCHOOLS_SIGMA),
                                    name="eight_schools")
    idata = dx.infer.sample(target, num_chains=8, num_samples=5000, num_warmup=2000, seed=seed,
                            progress=progress)
    print(az.summary(idata, var_names=["mu", "tau", "theta"]).to_string())
    print(f"step size {idata.attrs['step_size']:.3f}, acceptance "
          f"{float(idata.sample_stats.acceptance_rate.mean()):.3f}, divergences "
          f"{int(idata.sample_stats.diverging.sum())}, {idata.attrs['sampling_time']:.1f} s")
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

    target = gallery.get("correlated_gaussian", dim=10)
    _section(f"gallery: {target.name} (dim {target.dim}), MALA, 4 chains x 2000 draws")
    idata = dx.infer.sample(target, num_chains=4, num_samples=2000, num_warmup=1000, seed=seed,
                            progress=progress)
    print(az.summary(idata).to_string())
    print("\nagainst exact draws (units of sd):")
    print(dx.infer.diagnostics.format_comparison(
        dx.infer.compare_to_reference(idata, reference_for("correlated_gaussian", target, seed))))

    target = gallery.get("logistic_regression")
    _section(f"gallery: {target.name} (dim {target.dim}), MALA 8 x 2000 against NumPyro NUTS 2 x 2000")
    # collinear features (radius, perimeter, area): a dense metric, pooled over chains, is what mixes
    idata = dx.infer.sample(target, num_chains=8, num_samples=2000, num_warmup=1500, seed=seed,
                            mass_matrix="dense", progress=progress)
    t0 = time.perf_counter()
    ref = _nuts_reference(target, seed)
    print(f"MALA {idata.attrs['sampling_time']:.1f} s; NUTS {time.perf_counter() - t0:.1f} s")
    print(az.summary(idata, var_names=["intercept", "beta"], coords={"beta_dim_0": [0, 1, 2]}).to_string())
    cmp = dx.infer.compare_to_reference(idata, ref)
    worst = {k: float(np.abs(v["mean_error"]).max()) for k, v in cmp.items()}
    print("worst |mean error| against NUTS (units of NUTS sd): "
          + ", ".join(f"{k} {v:.3f}" for k, v in worst.items()))


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
