"""``driftax smooth``: PaRIS / PaRIS particle Gibbs / FFBS smoothing of a state-space model.

    driftax smooth --model lgssm --T 200 --method ppg --particles 64
    driftax smooth --model sv --data returns.csv --method paris --particles 256 --out paths.nc
    driftax smooth --model lgssm --data ys.npy --learn A,Q,R --steps 300

Built-in models: ``lgssm`` (x_t = 0.9 x_{t-1} + N(0, 0.5), y_t = x_t + N(0, 1)), ``lgssm3`` (3-d state,
2-d observations), ``sv`` (stochastic volatility, mu=-1, phi=0.9, sigma=0.3), ``growth`` (the nonlinear
growth model). Without ``--data`` the observations are simulated (``--T`` steps, ``--seed``). A data file is
``.npy`` or ``.csv`` with one row per time step; NaN rows are missing observations only with
``--allow-missing``. Prints the smoothed sums Σ_t E[x_t | y] with Monte Carlo errors (and the Kalman values
for the linear-Gaussian models); ``--out`` saves the smoothed paths as ArviZ netCDF (dims time, state);
``--learn NAMES`` runs PPG score ascent on those parameters instead. Exit status 0, or 2 on bad input.
"""
from __future__ import annotations

import argparse
import functools
import time
from pathlib import Path

import numpy as np

MODELS = ("lgssm", "lgssm3", "sv", "growth")


@functools.lru_cache(maxsize=None)
def build_model(name: str, allow_missing: bool = False):
    """The built-in model ``name``; one object per ``(name, allow_missing)`` (models are immutable), so
    repeated runs in one process reuse the programs `driftax.infer.smoothing.smooth` compiled for it."""
    from driftax.models import ssm

    if name == "lgssm":
        return ssm.linear_gaussian(0.9, 1.0, 0.5, 1.0, P0=1.0, allow_missing=allow_missing)
    if name == "lgssm3":
        A = np.array([[0.8, 0.1, 0.0], [-0.1, 0.7, 0.2], [0.0, 0.1, 0.6]])
        C = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, -0.3]])
        return ssm.linear_gaussian(A, C, np.diag([0.5, 0.4, 0.3]), np.diag([0.6, 0.8]), P0=np.eye(3),
                                   allow_missing=allow_missing)
    if name == "sv":
        return ssm.stochastic_volatility(allow_missing=allow_missing)
    if name == "growth":
        return ssm.nonlinear_growth(allow_missing=allow_missing)
    raise ValueError(f"--model must be one of {MODELS}, got {name!r}")


def load_observations(path: Path) -> np.ndarray:
    if not path.exists():
        raise FileNotFoundError(f"data file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        arr = np.load(path, allow_pickle=False)
    elif suffix in (".csv", ".txt"):
        try:
            arr = np.genfromtxt(path, delimiter=",", ndmin=1, missing_values=("", "nan", "NaN", "NA"),
                                filling_values=np.nan)
        except ValueError as e:
            raise ValueError(f"data file {path} is not a numeric CSV: {e}") from e
    else:
        raise ValueError(f"data must be a .npy or .csv file, got {path.name}")
    if not np.issubdtype(np.asarray(arr).dtype, np.number):
        raise TypeError(f"data file {path} must hold numbers, got dtype {arr.dtype}")
    return np.asarray(arr, np.float64)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("smooth", help="PaRIS / PPG / FFBS smoothing and PPG parameter learning",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=MODELS, default="lgssm")
    p.add_argument("--data", type=Path, default=None, help="observations (.npy or .csv), one row per time step")
    p.add_argument("--T", type=int, default=100, help="time steps to simulate when no --data is given")
    p.add_argument("--allow-missing", action="store_true", help="treat NaN rows of the data as missing")
    p.add_argument("--method", choices=("ppg", "paris", "ffbs"), default="ppg")
    p.add_argument("--particles", type=int, default=64)
    p.add_argument("--K", type=int, default=2, help="backward draws per particle (PaRIS, PPG)")
    p.add_argument("--iterations", type=int, default=10, help="PPG iterations k")
    p.add_argument("--burn-in", type=int, default=2, help="PPG burn-in k0")
    p.add_argument("--replicates", type=int, default=8, help="independent replicates (Monte Carlo error)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="save the smoothed paths as ArviZ netCDF")
    p.add_argument("--learn", default=None, help="comma-separated parameters to learn by PPG score ascent")
    p.add_argument("--steps", type=int, default=300, help="learning iterations")
    p.set_defaults(func=run)


def run(args) -> int:
    from driftax.infer.smoothing import smooth
    from driftax.models import ssm as ssm_mod

    model = build_model(args.model, args.allow_missing)
    if args.data is not None:
        ys = model.check_observations(load_observations(args.data), name=f"data ({args.data})")
        src = f"{args.data} ({ys.shape[0]} steps)"
    else:
        if args.T < 2:
            raise ValueError(f"--T must be >= 2, got {args.T}")
        ys = model.simulate(args.seed, args.T)[1]
        src = f"simulated, T = {args.T}, seed {args.seed}"
    print(f"model {model.name} (state dim {model.state_dim}, obs dim {model.obs_dim}); data {src}")
    if args.learn:
        return _learn(model, ys, args)
    t0 = time.perf_counter()
    r = smooth(model, ys, "moments", args.method, args.particles, K=args.K, num_iterations=args.iterations,
               burn_in=args.burn_in, num_replicates=args.replicates, seed=args.seed)
    secs = time.perf_counter() - t0
    exact = None
    d = model.state_dim
    if model.exact == "kalman":
        ks = ssm_mod.kalman_smoother(model, ys)
        exact = np.r_[ks.sum_means(), ks.sum_cross_moments().ravel()]
    print(f"method {args.method}, N = {args.particles}, {args.replicates} replicates on {r.num_devices} device(s); "
          f"{secs:.2f} s including compilation")
    labels = [f"x_t[{i}]" for i in range(d)] + [f"x_t[{i}] x_t+1[{j}]" for i in range(d) for j in range(d)]
    for i, lab in enumerate(labels):
        line = f"  sum_t E[{lab} | y] = {r.estimate[i]:.4f} ± {r.mc_error[i]:.4f} (MC se)"
        if exact is not None:
            line += f"   Kalman {exact[i]:.4f}"
        print(line)
    print(f"  backward draws by exact fall-back: {r.fallbacks}; finite: {r.finite}")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        r.to_inference_data().to_netcdf(str(args.out))
        print(f"  paths saved to {args.out} (x: chain, draw, time, state)")
    return 0 if r.finite else 1


def _learn(model, ys, args) -> int:
    from driftax.infer.learning import learn

    names = tuple(n.strip() for n in args.learn.split(",") if n.strip())
    fit = learn(model, ys, None, "ppg", params=names, num_steps=args.steps, num_particles=args.particles,
                K=args.K, seed=args.seed, progress=True)
    print(f"PPG score ascent, {args.steps} steps, N = {args.particles}: {fit.seconds:.1f} s")
    for k in names:
        print(f"  {k} = {np.array2string(np.asarray(fit.theta[k]), precision=4)}")
    return 0 if fit.finite else 1


def demo(out: Path) -> str:
    """State-space smoothing and learning (PaRIS particle Gibbs) on a linear-Gaussian model"""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy import optimize

    from driftax.infer.learning import learn
    from driftax.infer.smoothing import smooth
    from driftax.models import ssm

    model = build_model("lgssm")
    xs, ys = model.simulate(0, 100)
    ks = ssm.kalman_smoother(model, ys)
    t0 = time.perf_counter()
    r = smooth(model, ys, "moments", "ppg", 32, num_iterations=4, burn_in=1, num_replicates=4, seed=0)
    t_s = time.perf_counter() - t0
    truth = np.r_[ks.sum_means(), ks.sum_cross_moments().ravel()]
    lines = [f"PPG smoothing, T = 100, N = 32, k = 4, k0 = 1, 4 replicates ({t_s:.1f} s):",
             f"  sum E[x_t]         {r.estimate[0]:9.3f} ± {r.mc_error[0]:.3f}   Kalman {truth[0]:9.3f}",
             f"  sum E[x_t x_t+1]   {r.estimate[1]:9.3f} ± {r.mc_error[1]:.3f}   Kalman {truth[1]:9.3f}"]

    def nll(a):
        return -ssm.kalman_loglik(model.with_theta({"A": np.array([[a]])}), ys)

    mle = optimize.minimize_scalar(nll, bounds=(-0.99, 0.99), method="bounded").x
    t0 = time.perf_counter()
    fit = learn(model, ys, {"A": np.array([[0.3]])}, "ppg", params=("A",), num_steps=60, num_particles=16,
                step_size=1.0, chunk_size=60, seed=0, progress=False)
    t_l = time.perf_counter() - t0
    lines.append(f"PPG score ascent on A from 0.3, 60 steps, N = 16 ({t_l:.1f} s): "
                 f"A = {float(fit.theta['A'][0, 0]):.4f}, Kalman MLE {mle:.4f}")
    paths = r.paths.reshape(-1, 100)
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.2))
    t = np.arange(100)
    axes[0].fill_between(t, ks.means[:, 0] - 2 * np.sqrt(ks.covs[:, 0, 0]), ks.means[:, 0] + 2 * np.sqrt(ks.covs[:, 0, 0]),
                         color="C0", alpha=0.25, label="Kalman smoother ±2 sd")
    axes[0].plot(t, paths.mean(0), "C1", lw=1, label="PPG reference paths: mean")
    axes[0].plot(t, xs[:, 0], "k.", ms=2, label="true state")
    axes[0].legend(fontsize=7)
    axes[0].set_title("smoothing")
    axes[1].plot(fit.trace["A"][:, 0, 0], lw=1, label="PPG score ascent")
    axes[1].axhline(mle, color="r", ls="--", label="Kalman MLE")
    axes[1].legend(fontsize=7)
    axes[1].set_title("learning A")
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "smooth.png", dpi=100)
    plt.close(fig)
    lines.append(f"plot: {out / 'smooth.png'}")
    return "\n".join(lines)
