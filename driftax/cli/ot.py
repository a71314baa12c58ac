"""``driftax ot SOURCE TARGET``: entropic optimal transport between two point clouds or histograms.

    driftax ot x.npy y.npy --epsilon 1e-3 --method sns --plan plan.npy
    driftax ot img1.csv img2.csv --kind histogram --cost l1 --epsilon 1e-3

Files are ``.npy`` or ``.csv``. ``--kind auto`` (default): a 1-D array is a histogram on a regular 1-D grid,
a 2-D array is a point cloud (rows are points, uniform weights). ``--kind histogram``: 1-D or 2-D arrays are
histograms on a regular grid (an image), coordinates normalised to [0, 1]; both must have the same shape and
are normalised to unit mass. Prints the transport cost ``<C, P>``, the regularised cost, the L1 marginal error
(recomputed from the potentials), the iterations and the wall time; ``--plan`` saves the ``(n, m)`` plan.
Exit status 0 when converged, 1 when not (the result is still printed), 2 on bad input.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

_COSTS = ("sqeuclidean", "euclidean", "l1")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "ot", help="entropic optimal transport between two point clouds or histograms (.npy/.csv)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", type=Path, help="source point cloud (n, d) or histogram (.npy or .csv)")
    p.add_argument("target", type=Path, help="target point cloud (m, d) or histogram (.npy or .csv)")
    p.add_argument("--epsilon", type=float, default=1e-3, help="entropic regularisation (absolute, cost units)")
    p.add_argument("--method", choices=("sns", "sinkhorn"), default="sns")
    p.add_argument("--cost", choices=_COSTS, default="sqeuclidean", help="ground cost")
    p.add_argument("--rescale", choices=("none", "max", "mean", "median"), default="none",
                   help="divide the cost matrix by this statistic before solving")
    p.add_argument("--kind", choices=("auto", "points", "histogram"), default="auto")
    p.add_argument("--tol", type=float, default=1e-8, help="target L1 marginal error")
    p.add_argument("--max-iter", type=int, default=None,
                   help="maximum iterations: Sinkhorn sweeps, or Newton steps per stage for sns "
                   "(default: the solver's)")
    p.add_argument("--warm-start", type=int, default=None,
                   help="Sinkhorn sweeps before Newton (method sns; default: driftax.transport.sns's)")
    p.add_argument("--plan", type=Path, default=None, help="save the transport plan to this .npy file")
    p.set_defaults(func=run)


def _load(path: Path, name: str) -> np.ndarray:
    if not path.exists():
        raise FileNotFoundError(f"{name} file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        arr = np.load(path, allow_pickle=False)
    elif suffix in (".csv", ".txt"):
        try:
            arr = np.loadtxt(path, delimiter=",", ndmin=1)
        except ValueError as e:
            raise ValueError(f"{name} ({path}) is not a numeric CSV: {e}") from e
        if arr.ndim == 2 and arr.shape[0] == 1:
            arr = arr[0]
    else:
        raise ValueError(f"{name} must be a .npy or .csv file, got {path.name}")
    if not np.issubdtype(arr.dtype, np.number):
        raise TypeError(f"{name} ({path}) must hold numbers, got dtype {arr.dtype}")
    arr = np.asarray(arr, dtype=np.float64)
    if arr.size == 0:
        raise ValueError(f"{name} ({path}) is empty")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} ({path}) has {int(np.sum(~np.isfinite(arr)))} non-finite entries")
    return arr


def build_problem(src: np.ndarray, tgt: np.ndarray, kind: str, cost: str, rescale: str):
    """``(a, b, C, description)`` from two loaded arrays (see the module docstring for the rules)."""
    import jax
    import jax.numpy as jnp

    from driftax.transport import costs

    if kind == "auto":
        kind = "histogram" if src.ndim == 1 and tgt.ndim == 1 else "points"
    resc = None if rescale == "none" else rescale
    with jax.enable_x64(True):
        if kind == "points":
            x = src[:, None] if src.ndim == 1 else src
            y = tgt[:, None] if tgt.ndim == 1 else tgt
            if x.ndim != 2 or y.ndim != 2:
                raise ValueError(f"point clouds must be 1-D or 2-D arrays, got shapes {src.shape} and {tgt.shape}")
            if x.shape[1] != y.shape[1]:
                raise ValueError(f"SOURCE and TARGET points differ in dimension: {x.shape[1]} vs {y.shape[1]}")
            C = np.asarray(costs.pairwise(x, y, cost, rescale=resc, dtype=jnp.float64))
            a = np.full(x.shape[0], 1.0 / x.shape[0])
            b = np.full(y.shape[0], 1.0 / y.shape[0])
            desc = f"point clouds: {x.shape[0]} and {y.shape[0]} points in dimension {x.shape[1]}"
        else:
            if src.shape != tgt.shape:
                raise ValueError(f"histograms must be on the same grid: SOURCE has shape {src.shape}, "
                                 f"TARGET {tgt.shape}")
            for h, name in ((src, "SOURCE"), (tgt, "TARGET")):
                if np.any(h < 0):
                    raise ValueError(f"{name} histogram has negative entries (minimum {h.min():.3e})")
                if h.sum() <= 0:
                    raise ValueError(f"{name} histogram has zero total mass")
            a = src.ravel() / src.sum()
            b = tgt.ravel() / tgt.sum()
            C = np.asarray(costs.grid_cost(src.shape, cost, rescale=resc, dtype=jnp.float64))
            desc = f"histograms on a {'x'.join(map(str, src.shape))} grid (normalised to unit mass)"
    return a, b, C, desc


def solve(a, b, C, epsilon, method, tol, max_iter=None, warm_start=None):
    """Solve and time (the first call of a shape compiles; the time printed includes it)."""
    import jax

    from driftax import transport as tr

    t0 = time.perf_counter()
    kw = {} if max_iter is None else {"max_iter": max_iter}
    if method == "sns":
        if warm_start is not None:
            kw["options"] = tr.SNSOptions(warm_start=warm_start)
        res = tr.sns(a, b, C, epsilon, tol=tol, **kw)
    else:
        res = tr.sinkhorn(a, b, C, epsilon, tol=tol, **kw)
    jax.block_until_ready(res)
    return res, time.perf_counter() - t0


def run(args) -> int:
    if not args.epsilon > 0:
        raise ValueError(f"--epsilon must be positive, got {args.epsilon}")
    if not args.tol > 0:
        raise ValueError(f"--tol must be positive, got {args.tol}")
    src = _load(args.source, "SOURCE")
    tgt = _load(args.target, "TARGET")
    a, b, C, desc = build_problem(src, tgt, args.kind, args.cost, args.rescale)
    print(f"{desc}; cost {args.cost}{'' if args.rescale == 'none' else ' / ' + args.rescale}, "
          f"max {C.max():.4g}; epsilon {args.epsilon:g}; method {args.method}; tol {args.tol:g} (L1)")
    res, secs = solve(a, b, C, args.epsilon, args.method, args.tol, args.max_iter, args.warm_start)
    f, g = np.asarray(res.f), np.asarray(res.g)
    P = np.exp((f[:, None] + g[None, :] - C) / args.epsilon)
    err = np.abs(P.sum(1) - a).sum() + np.abs(P.sum(0) - b).sum()
    its = int(res.iterations)
    detail = ""
    if args.method == "sns":
        nt = int(res.newton_iterations)
        detail = (f" ({its - nt} Sinkhorn sweeps + {nt} Newton steps, {int(res.cg_iterations)} CG iterations, "
                  f"Hessian density {float(res.density):.3f})")
    print(f"transport cost <C,P>   {float(res.transport_cost):.10g}")
    print(f"regularised cost       {float(res.reg_cost):.10g}")
    print(f"marginal error (L1)    {err:.3e}")
    print(f"iterations             {its}{detail}")
    print(f"time                   {secs:.3f} s (includes compilation on the first solve of a shape)")
    print(f"converged              {bool(res.converged)}")
    if args.plan is not None:
        args.plan.parent.mkdir(parents=True, exist_ok=True)
        np.save(args.plan, P)
        print(f"plan saved to {args.plan} (shape {P.shape})")
    return 0 if bool(res.converged) else 1


# --------------------------------------------------------------------------- demo

def demo(outdir: Path, n: int = 300) -> str:
    """transport: Sinkhorn-Newton-Sparse against log-domain Sinkhorn.

    SNS and Sinkhorn on ``n`` uniform points per side; saves ``ot_plan.png``; returns a printable table."""
    import jax
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from driftax import transport as tr

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    x, y = rng.random((n, 2)), rng.random((n, 2))
    with jax.enable_x64(True):
        C = np.asarray(tr.costs.sqeuclidean(x, y))
    a = b = np.full(n, 1.0 / n)
    lines = [f"uniform point clouds in [0,1]^2, n = {n}, squared Euclidean cost, float64, target L1 marginal "
             "error 1e-8 (seconds exclude compilation)",
             f"{'epsilon':>8} {'solver':>9} {'iterations':>16} {'seconds':>8} {'marg. err':>10} {'<C,P>':>12}"]
    keep = {}
    for eps in (1e-2, 2e-3):
        for method in ("sinkhorn", "sns"):
            cap = None  # the solvers' defaults (Sinkhorn needs about 2.2 / eps sweeps here)
            if method == "sns" or eps == 1e-2:  # compile (Sinkhorn compiles once for both epsilons)
                solve(a, b, C, eps, method, 1e-8, max_iter=cap)
            res, secs = solve(a, b, C, eps, method, 1e-8, max_iter=cap)
            keep[(eps, method)] = res
            its = int(res.iterations)
            if method == "sns":
                nt = int(res.newton_iterations)
                it_s = f"{its} ({its - nt}+{nt})"
            else:
                it_s = str(its) + ("" if bool(res.converged) else " (capped)")
            lines.append(f"{eps:>8.0e} {method:>9} {it_s:>16} {secs:>8.3f} {float(res.marginal_error):>10.1e} "
                         f"{float(res.transport_cost):>12.6e}")
    lines.append(f"exact OT cost (network simplex, POT ot.emd2): {_emd2(a, b, C):.6e}")

    # picture of the SNS plan at eps = 2e-3: segments for the entries carrying most of the mass
    res = keep[(2e-3, "sns")]
    P = np.asarray(res.plan())
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    ii, jj = np.nonzero(P > 0.05 / n)
    w = P[ii, jj] * n
    for i, j, wt in zip(ii, jj, w):
        ax.plot([x[i, 0], y[j, 0]], [x[i, 1], y[j, 1]], color="0.3", lw=0.6, alpha=float(min(1.0, wt)))
    ax.scatter(x[:, 0], x[:, 1], s=6, c="tab:blue", label="source", zorder=3)
    ax.scatter(y[:, 0], y[:, 1], s=6, c="tab:red", label="target", zorder=3)
    ax.set_aspect("equal")
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title(f"SNS entropic plan, n={n}, eps=2e-3: {int(res.iterations)} iterations, "
                 f"marginal error {float(res.marginal_error):.1e}", fontsize=8)
    fig.tight_layout()
    png = outdir / "ot_plan.png"
    fig.savefig(png, dpi=110)
    plt.close(fig)
    lines.append(f"plan picture (segments i -> j where P_ij > 0.05/n): {png}")
    return "\n".join(lines)


def _emd2(a, b, C) -> float:
    try:
        import ot
    except ImportError:  # pragma: no cover
        return float("nan")
    return float(ot.emd2(a, b, C))
