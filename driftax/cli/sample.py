"""``driftax sample``: draws from a gallery or posteriordb target, summary, comparison, netCDF."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def add_parser(subparsers) -> None:
    from driftax.infer import methods

    p = subparsers.add_parser(
        "sample", help="sample a gallery or posteriordb target and save the draws (netCDF)",
        description="Sample a named target; print the ArviZ summary and, where the target has ground "
                    "truth or reference draws, the error of means and sds in units of the reference sd.")
    p.add_argument("--target", required=True, help="gallery or posteriordb name (e.g. banana, eight_schools)")
    p.add_argument("--method", default="nuts", choices=methods.available(),
                   help="sampling kernel (default nuts); one of: " + ", ".join(methods.available()))
    p.add_argument("--init", choices=["pathfinder"],
                   help="start each chain where its Pathfinder run ends (targets far from the model's starts)")
    p.add_argument("--chains", type=int, default=4)
    p.add_argument("--draws", type=int, default=1000)
    p.add_argument("--warmup", type=int, default=1000)
    p.add_argument("--thinning", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mass-matrix", default="auto", choices=["auto", "diag", "dense", "none"])
    p.add_argument("--target-acceptance", type=float,
                   help="acceptance rate the warm-up aims at (default: the method's, 0.8 for nuts)")
    p.add_argument("--step-size", type=float, help="initial (or, for ula/sgld/spherical, fixed) step size")
    p.add_argument("--average", choices=["polyak", "tail", "swa", "weighted"],
                   help="carry running averages of every site through sampling (printed, and saved in "
                        "the 'averages' group)")
    p.add_argument("--x64", action="store_true",
                   help="sample in float64 (automatic for targets that need it, e.g. gp_pois_regr)")
    p.add_argument("--out", type=Path, help="write the InferenceData to this netCDF file")
    p.add_argument("--plots", type=Path, metavar="DIR", help="write trace, rank and (NUTS) energy plots here")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def reference_for(name: str, target, seed: int = 0, n: int = 20_000):
    """Reference draws for a named target: posteriordb's, or exact draws of a gallery target."""
    from driftax.models import posteriordb

    try:
        return posteriordb.load_reference(name)
    except (ValueError, FileNotFoundError):
        pass
    if target.sample is not None:
        import jax

        x = np.asarray(target.sample(jax.random.key(seed + 10_000), n))
        return {k: np.asarray(v)[None] for k, v in jax.vmap(target.constrain)(x).items()}
    return None


def write_plots(idata, folder: Path) -> list[Path]:
    """Trace and rank plots of every site, and the energy plot where the kernel reports energy."""
    import arviz as az
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    plots = [("trace", az.plot_trace), ("rank", az.plot_rank)]
    if "energy" in idata.sample_stats:
        plots.append(("energy", az.plot_energy))
    paths = []
    for name, plot in plots:
        ax = plot(idata)
        fig = np.ravel(ax)[0].get_figure()
        fig.savefig(folder / f"{name}.png", dpi=80)
        plt.close(fig)
        paths.append(folder / f"{name}.png")
    return paths


NEEDS_X64 = ("gp_pois_regr",)  # float32 Cholesky of its GP kernel fails: over a thousand divergences


def run(args: argparse.Namespace) -> int:
    import jax

    if args.x64 or args.target.startswith(NEEDS_X64):
        jax.config.update("jax_enable_x64", True)  # before any array exists

    import driftax as dx
    from driftax.models import gallery

    target = gallery.get(args.target)
    idata = dx.infer.sample(
        target, args.method, num_chains=args.chains, num_samples=args.draws, num_warmup=args.warmup,
        thinning=args.thinning, seed=args.seed, progress=not args.no_progress,
        mass_matrix=None if args.mass_matrix == "none" else args.mass_matrix,
        step_size=args.step_size, average=args.average, init=args.init,
        target_acceptance=args.target_acceptance)
    print(dx.infer.diagnostics.summary(idata).to_string())
    a = idata.attrs
    print(f"\ndivergences: {int(idata.sample_stats.diverging.sum())} while sampling, "
          f"{a.get('num_warmup_divergences', 'not reported')} in warm-up; gradient evaluations: {a['num_grad_evals_warmup']:,.0f} "
          f"warm-up + {a['num_grad_evals_sampling']:,.0f} sampling (all chains)")
    print(dx.infer.diagnostics.verdict(idata))
    if args.plots:
        for path in write_plots(idata, args.plots):
            print(f"wrote {path}")
    if args.average:
        print(f"\n{args.average} averages over every sampling step, pooled over chains (mean, sd):")
        for name, (mean, var) in dx.infer.diagnostics.pooled_averages(idata).items():
            for i, (m, v) in enumerate(zip(np.ravel(mean), np.ravel(var))):
                label = name if np.size(mean) == 1 else f"{name}[{i}]"
                print(f"{label:<22}{m:>12.4f}{np.sqrt(v):>12.4f}")
    ref = reference_for(args.target, target, args.seed)
    if ref is not None:
        print("\nerror against the reference (units of reference sd):")
        print(dx.infer.diagnostics.format_comparison(dx.infer.compare_to_reference(idata, ref)))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        idata.to_netcdf(str(args.out))
        print(f"\nwrote {args.out}")
    return 0
