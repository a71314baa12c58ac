"""Benchmark of the state-space engine: PaRIS, PPG and FFBS against the Kalman smoother, throughput against
the `particles` library, and parameter learning on stochastic volatility.

    python benchmarks/bench_ppg.py --quick --json out.json --out benchmarks/out

(a) Bias and RMSE of Σ_t x_t (and of Σ_t x_t x_{t+1}) against the particle budget on a 1-d linear-Gaussian
    model, T ∈ {100, 1000}, over independent replicates, truth from the RTS smoother. The budget counts
    every particle propagation: PaRIS and FFBS N, PPG n·(k + 1) (its initial filter plus k CSMC sweeps).
    --quick: T = 100 at budgets 64 (PaRIS, FFBS, PPG (k, k0) = (3, 1) and (7, 3)) and 256 (PaRIS, PPG (3, 1))
    with 200 replicates (the bias standard error is printed with every bias), T = 1000 at budget 256 (PaRIS,
    PPG (7, 3)) with 16; one timed throughput run after the compiling one, the NumPy peers' per-step rates
    on T = 3 (PaRIS) and T = 50 (FFBS-reject).
(b) Throughput in particle-steps per second (forward filter included; compile time reported apart) at
    N = T = 1000: driftax's bootstrap filter vs `particles`' filter; driftax PaRIS (K = 2) vs `particles`'
    PaRIS collector and vs `particles`' accept-reject FFBS with 2N backward draws (`backward_sampling_reject`).
    `particles` is imported from the environment or from --particles-path. Its PaRIS collector (0.3 and 0.4)
    fails under NumPy 2 at ``As[m] = a`` because ``MultinomialQueue.dequeue(1)`` returns a length-1 array;
    the benchmark swaps in a queue whose ``dequeue(1)`` returns the scalar (no other change).
(d) --bias-curves (not part of --quick): where PPG's bias reduction at equal budget shows. T = 100, 400
    replicates: PaRIS's bias against N, and PPG's bias at each iteration (n = 16, 32; k = 6 from its
    unconditional start), for Σx, Σxx' and the centred second moments Σ(x_t - m_t)², Σ(x_t - m_t)(x_{t+1} -
    m_{t+1}) (m the smoother means; truths Σ v_t and Σ c_t). A roll-out (n, k, k0) at budget n(k + 1) is the
    mean of iterations k0+1..k of the same chains, set against PaRIS at N = n(k + 1).
(c) Parameter learning on stochastic volatility with PPG score ascent: the trace and final values against the
    maximum-likelihood estimate from a grid (point-mass) filter, whose log-likelihood is exact up to the
    quadrature error of a 1-d grid, maximised with scipy (Nelder-Mead): an independent reference.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


# SV learning: Robbins-Monro γ_ℓ = LEARN_STEP ℓ^-LEARN_DECAY on the per-observation score (see learn).
# The SV likelihood is flat along a φ-σ ridge (the stationary variance σ²/(1-φ²) is well identified, the split
# is not): on the T = 300 series the earlier setting (γ_0 = 0.5, 200 steps, Σγ ≈ 10) stopped at φ 0.64, σ 0.50,
# 1.3 nats below the grid MLE (φ 0.83, σ 0.28); γ_0 = 3 reached 0.31 nats below in 300 steps, γ_0 = 10 0.02.
LEARN_STEPS_QUICK, LEARN_PARTICLES, LEARN_STEP, LEARN_DECAY = 300, 32, 10.0, 0.6
# accept-reject proposals per backward draw in the bias study (a): the law is exact for any cap (exact
# fall-back), and 8 trials (as in the throughput runs) cost about a quarter of the default 32's proposal work
BIAS_TRIALS = 8


def _bias_study(quick: bool, seed: int):
    """Bias and RMSE of Σ x_t and Σ x_t x_{t+1} against the Kalman smoother at equal particle budgets."""
    from driftax.infer.smoothing import smooth
    from driftax.models import ssm

    m = ssm.linear_gaussian(0.9, 1.0, 0.5, 1.0, P0=1.0)
    ppg_cfgs = ((3, 1), (7, 3)) if quick else ((3, 1), (7, 3), (15, 5))  # (k, k0)
    rows = []
    for T in (100, 1000):
        # --quick: two budgets at T = 100 with 200 replicates, one at T = 1000 with 16
        if quick:
            budgets, R = ((64, 256), 200) if T == 100 else ((256,), 16)
        else:
            budgets, R = ((32, 64, 128, 256, 512), 400) if T == 100 else ((256, 1024), 64)
        ys = m.simulate(seed + T, T)[1]
        ks = ssm.kalman_smoother(m, ys)
        truth = np.r_[ks.sum_means(), ks.sum_cross_moments().ravel()]
        for B in budgets:
            runs = [("paris", dict(num_particles=B))]
            if not quick or (T == 100 and B == budgets[0]):  # --quick: FFBS at the smallest budget only
                runs.append(("ffbs", dict(num_particles=B)))
            for k, k0 in ppg_cfgs:
                n = B // (k + 1)  # the initial filter and k CSMC sweeps of n particles
                # --quick: (k, k0) = (7, 3) at T = 1000 and at the smallest budget only (each row compiles a program)
                if n >= 4 and not (quick and k == 7 and T == 100 and B != budgets[0]) \
                        and not (quick and T == 1000 and k != 7):
                    runs.append(("ppg", dict(num_particles=n, num_iterations=k, burn_in=k0)))
            for method, kw in runs:
                t0 = time.perf_counter()
                r = smooth(m, ys, "moments", method, num_replicates=R, seed=seed, max_trials=BIAS_TRIALS, **kw)
                err = r.replicates - truth
                rows.append({"method": method, "N": B, "T": T, "bias": float(err[:, 0].mean()),
                             "rmse": float(np.sqrt((err[:, 0] ** 2).mean())), "bias_se": float(r.mc_error[0]),
                             "bias_cross": float(err[:, 1].mean()), "rmse_cross": float(np.sqrt((err[:, 1] ** 2).mean())),
                             "bias_cross_se": float(r.mc_error[1]), "k": kw.get("num_iterations"),
                             "k0": kw.get("burn_in"), "n": kw["num_particles"], "replicates": R,
                             "seconds": time.perf_counter() - t0})
                print(f"  T={T:5d} budget={B:5d} {method:5s} n={kw['num_particles']:5d} "
                      f"k={kw.get('num_iterations', '-')!s:>3} k0={kw.get('burn_in', '-')!s:>2} R={R}  "
                      f"bias Σx {rows[-1]['bias']:+8.3f} ± {rows[-1]['bias_se']:.3f}  rmse {rows[-1]['rmse']:7.3f}  "
                      f"bias Σxx' {rows[-1]['bias_cross']:+8.3f} ± {rows[-1]['bias_cross_se']:.3f}  "
                      f"rmse {rows[-1]['rmse_cross']:7.3f}", flush=True)
    return rows


def _bias_curves(seed: int, R: int = 400):
    """PaRIS bias against N and PPG bias per iteration (module docstring, (d)); rows for the JSON."""
    import jax.numpy as jnp

    from driftax.infer.smoothing import smooth
    from driftax.models import ssm
    from driftax.samplers.paris import AdditiveFunctional

    m = ssm.linear_gaussian(0.9, 1.0, 0.5, 1.0, P0=1.0)
    T = 100
    ys = m.simulate(seed, T)[1]
    ks = ssm.kalman_smoother(m, ys)
    mu = jnp.asarray(ks.means[:, 0], jnp.float32)
    truth = np.r_[ks.sum_means(), ks.sum_cross_moments().ravel(), ks.covs[:, 0, 0].sum(), ks.cross_covs[:, 0, 0].sum()]
    names = ["Σx", "Σxx'", "Σ(x-m)²", "Σ(x-m)(x'-m')"]
    f = AdditiveFunctional(
        lambda x, y: jnp.stack([x[0], 0.0 * x[0], (x[0] - mu[0]) ** 2, 0.0 * x[0]]),
        lambda t, xp, x, y: jnp.stack([x[0], xp[0] * x[0], (x[0] - mu[t]) ** 2, (xp[0] - mu[t - 1]) * (x[0] - mu[t])]),
        4, "moments+centred")
    out = {"T": T, "replicates": R, "functionals": names, "paris": [], "ppg": []}
    for N in (32, 48, 64, 96, 128):
        e = smooth(m, ys, f, "paris", N, num_replicates=R, seed=seed + 1).replicates - truth
        out["paris"].append({"N": N, "bias": e.mean(0).tolist(), "se": (e.std(0, ddof=1) / np.sqrt(R)).tolist()})
        print(f"  PaRIS N={N:4d} bias " + "  ".join(f"{nm} {b:+.3f}±{s_:.3f}" for nm, b, s_ in
                                              zip(names, out["paris"][-1]["bias"], out["paris"][-1]["se"])), flush=True)
    for n in (16, 32):
        e = smooth(m, ys, f, "ppg", n, num_iterations=6, burn_in=0, num_replicates=R, seed=seed + 2).per_iteration - truth
        row = {"n": n, "bias": e.mean(0).tolist(), "se": (e.std(0, ddof=1) / np.sqrt(R)).tolist(), "budget_rows": []}
        for k in range(1, 7):
            for k0 in range(0, k):
                avg = e[:, k0:k].mean(1)
                row["budget_rows"].append({"k": k, "k0": k0, "budget": n * (k + 1), "bias": avg.mean(0).tolist(),
                                           "se": (avg.std(0, ddof=1) / np.sqrt(R)).tolist()})
        out["ppg"].append(row)
        for j, nm in enumerate(names):
            print(f"  PPG n={n} {nm:14s} bias by iteration " + " ".join(f"{b:+.2f}" for b in e[:, :, j].mean(0))
                  + f"  (se ≈ {np.mean(row['se'], 0)[j]:.2f})", flush=True)
    print("  equal budget (bias ± se; PaRIS at N = budget):")
    paris = {r["N"]: r for r in out["paris"]}
    for row in out["ppg"]:
        for b in row["budget_rows"]:
            if b["budget"] in paris and b["k0"] >= 1:
                p = paris[b["budget"]]
                print(f"    B={b['budget']:4d} ppg(n={row['n']}, k={b['k']}, k0={b['k0']}): " + "  ".join(
                    f"{nm} {g:+.2f}±{gs:.2f} vs {pb:+.2f}±{ps:.2f}" for nm, g, gs, pb, ps in
                    zip(names, b["bias"], b["se"], p["bias"], p["se"])), flush=True)
    return out


def _plot_bias_curves(res, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = res["functionals"]
    fig, axes = plt.subplots(2, len(names), figsize=(4.2 * len(names), 7), squeeze=False)
    for j, nm in enumerate(names):
        ax = axes[0, j]
        for row in res["ppg"]:
            it = np.arange(1, len(row["bias"]) + 1)
            ax.errorbar(it, [b[j] for b in row["bias"]], [2 * s_[j] for s_ in row["se"]], marker="o", capsize=3,
                        label=f"PPG n={row['n']}")
        ax.axhline(0, color="k", lw=0.5)
        ax.set_title(f"{nm}: PPG bias by iteration (±2 se)")
        ax.set_xlabel("iteration (after the unconditional start)")
        ax.legend(fontsize=7)
        ax = axes[1, j]
        ax.errorbar([r["N"] for r in res["paris"]], [r["bias"][j] for r in res["paris"]],
                    [2 * r["se"][j] for r in res["paris"]], marker="s", color="k", capsize=3, label="PaRIS, N = budget")
        for row in res["ppg"]:
            for k0 in (1, 2):
                pts = sorted((b["budget"], b["bias"][j], b["se"][j]) for b in row["budget_rows"] if b["k0"] == k0)
                if pts:
                    ax.errorbar([p[0] for p in pts], [p[1] for p in pts], [2 * p[2] for p in pts], marker="o",
                                capsize=2, label=f"PPG n={row['n']}, k0={k0}, k = B/n - 1", alpha=0.8)
        ax.axhline(0, color="k", lw=0.5)
        ax.set_xscale("log", base=2)
        ax.set_title(f"{nm}: bias at equal budget (±2 se)")
        ax.set_xlabel("particle budget (all propagations)")
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"  plot: {path}")


def _timed(fn, repeats=2):
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return first - best, best  # compile (approx.), run


def _particles_peer(path):
    if path:
        sys.path.insert(0, str(path))
    try:
        import particles  # noqa: F401
        from particles import collectors
        from particles import resampling as rs
    except Exception as e:  # pragma: no cover - peer missing
        print(f"  particles unavailable ({type(e).__name__}: {e}); peer ratios skipped")
        return None

    class ScalarQueue(rs.MultinomialQueue):
        """NumPy-2 fix for the PaRIS collector: ``dequeue(1)`` gives a scalar index, as the collector expects."""

        def dequeue(self, k):
            out = super().dequeue(k)
            return out[0] if k == 1 else out

    collectors.rs = type("rs_fixed", (), {"MultinomialQueue": ScalarQueue,
                                          "exp_and_normalise": staticmethod(rs.exp_and_normalise),
                                          "multinomial_once": staticmethod(rs.multinomial_once)})
    return particles


def _throughput(quick: bool, seed: int, particles_path):
    import jax
    import jax.numpy as jnp

    from driftax.models import ssm
    from driftax.samplers import paris, smc

    N = T = 1000
    m = ssm.linear_gaussian(0.9, 1.0, 0.5, 1.0, P0=1.0)
    ys = m.simulate(seed, T)[1]
    ys_j = jnp.asarray(ys, jnp.float32)
    f = paris.state_sum(1)
    filt = jax.jit(lambda k: smc.bootstrap_filter(k, m, m.theta, ys_j, N).loglik)
    par = jax.jit(lambda k: paris.paris(k, m, m.theta, ys_j, f, N, K=2, max_trials=8).estimate)
    key = jax.random.key(seed)
    reps = 1 if quick else 2  # timed runs after the compiling one
    c_f, t_f = _timed(lambda: filt(key).block_until_ready(), reps)
    c_p, t_p = _timed(lambda: par(key).block_until_ready(), reps)
    res = {"driftax_filter": N * T / t_f, "driftax_filter_compile_s": c_f,
           "driftax_paris": N * T / t_p, "driftax_paris_compile_s": c_p}
    print(f"  driftax filter   {res['driftax_filter']:12.0f} particle-steps/s (compile {c_f:.1f} s)")
    print(f"  driftax PaRIS K=2 {res['driftax_paris']:11.0f} particle-steps/s (compile {c_p:.1f} s)")
    pk = _particles_peer(particles_path)
    if pk is None:
        return res, {}
    from particles import collectors, distributions as dists, state_space_models as ssms

    class LG(ssms.StateSpaceModel):
        default_params = {"a": 0.9, "sq": 0.5, "sr": 1.0}

        def PX0(self):
            return dists.Normal(loc=0.0, scale=float(np.sqrt(self.sq)))

        def PX(self, t, xp):
            return dists.Normal(loc=self.a * xp, scale=float(np.sqrt(self.sq)))

        def PY(self, t, xp, x):
            return dists.Normal(loc=x, scale=float(np.sqrt(self.sr)))

        def upper_bound_log_pt(self, t):
            return -0.5 * np.log(2 * np.pi * self.sq)

    data = [np.array([v]) for v in ys[:, 0]]
    np.random.seed(seed)

    def run_filter(n_t, **kw):
        fk = ssms.Bootstrap(ssm=LG(), data=data[:n_t])
        fk.add_func = lambda t, xp, x: x
        pf = pk.SMC(fk=fk, N=N, resampling="systematic", **kw)
        pf.run()
        return pf

    # per-step costs of the NumPy peers do not depend on T (no compilation): --quick times them on shorter
    # series at the same N (the PaRIS collector is pure Python per particle, ~6 s per step at N = 1000)
    T_filter, T_paris, T_reject = (T, 3, 50) if quick else (T, 20, T)
    t0 = time.perf_counter()
    run_filter(T_filter)
    pf_filter = N * T_filter / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    run_filter(T_paris, collect=[collectors.Paris(Nparis=2)])
    pf_paris = N * T_paris / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    pf = run_filter(T_reject, store_history=True)
    pf.hist.backward_sampling_reject(2 * N)
    pf_reject = N * T_reject / (time.perf_counter() - t0)
    res.update({"particles_filter": pf_filter, "particles_paris": pf_paris, "particles_ffbs_reject": pf_reject,
                "particles_paris_T": T_paris, "particles_ffbs_reject_T": T_reject})
    print(f"  particles filter  {pf_filter:12.0f} particle-steps/s")
    print(f"  particles PaRIS   {pf_paris:12.0f} particle-steps/s (T = {T_paris}, NumPy-2 queue fix)")
    print(f"  particles FFBS-reject 2N {pf_reject:8.0f} particle-steps/s (filter + backward, T = {T_reject})")
    ratios = {"filter_vs_particles_filter": res["driftax_filter"] / pf_filter,
              "paris_vs_particles_paris": res["driftax_paris"] / pf_paris,
              "paris_vs_particles_ffbs_reject": res["driftax_paris"] / pf_reject}
    return res, ratios


def sv_grid_loglik(ys, mu, phi, sigma, grid=None):
    """Log-likelihood of the stochastic-volatility model by a point-mass filter on a fixed grid (float64):
    ``p_t(x_j) ∝ g(x_j, y_t) Σ_i p_{t-1}(x_i) q(x_i, x_j) Δx``. 301 points on [-8, 4] (Δx = 0.04 against
    σ ≈ 0.3) agree with 1,401 points on [-12, 8] to 1e-11 nats on the benchmark's series."""
    from scipy.special import logsumexp

    x = np.linspace(-8.0, 4.0, 301) if grid is None else grid
    ldx = np.log(x[1] - x[0])
    c = 0.5 * np.log(2 * np.pi)
    sd0 = sigma / np.sqrt(1 - phi ** 2)
    la = -0.5 * ((x - mu) / sd0) ** 2 - np.log(sd0) - c + ldx
    kern = np.exp(-0.5 * ((x[None, :] - mu - phi * (x[:, None] - mu)) / sigma) ** 2 - np.log(sigma) - c + ldx)
    ll, p = 0.0, None
    for t, y in enumerate(np.asarray(ys, np.float64)[:, 0]):
        lg = -0.5 * y * y * np.exp(-x) - 0.5 * x - c
        la = (la if t == 0 else np.log(np.maximum(p @ kern, 1e-300))) + lg
        z = logsumexp(la)
        ll += z
        p = np.exp(la - z)
    return float(ll)


def sv_grid_mle(ys, start):
    """The maximum-likelihood estimate of (μ, φ, σ) from `sv_grid_loglik`, Nelder-Mead in (μ, atanh φ, log σ)."""
    from scipy import optimize

    def nll(v):
        return -sv_grid_loglik(ys, v[0], np.tanh(v[1]), np.exp(v[2]))

    v0 = [start["mu"], np.arctanh(start["phi"]), np.log(start["sigma"])]
    r = optimize.minimize(nll, v0, method="Nelder-Mead", options=dict(xatol=1e-4, fatol=1e-5, maxiter=3000))
    return {"mu": float(r.x[0]), "phi": float(np.tanh(r.x[1])), "sigma": float(np.exp(r.x[2]))}, float(-r.fun)


def _learning(quick: bool, seed: int):
    from driftax.infer.learning import learn
    from driftax.models import ssm

    m = ssm.stochastic_volatility(mu=-1.0, phi=0.9, sigma=0.3)
    T = 300 if quick else 1000
    ys = m.simulate(seed, T)[1]
    start = {"mu": -0.3, "phi": 0.6, "sigma": 0.6}
    steps = LEARN_STEPS_QUICK if quick else 2000
    fit = learn(m, ys, start, "ppg", num_steps=steps, num_particles=LEARN_PARTICLES, step_size=LEARN_STEP,
                decay=LEARN_DECAY, seed=seed, progress=False)
    t0 = time.perf_counter()
    mle, ll_mle = sv_grid_mle(ys, {k: float(v) for k, v in m.theta.items()})
    ll_fit = sv_grid_loglik(ys, *(float(fit.theta[k]) for k in ("mu", "phi", "sigma")))
    ll_start = sv_grid_loglik(ys, *(start[k] for k in ("mu", "phi", "sigma")))
    out = {"T": T, "steps": steps, "num_particles": LEARN_PARTICLES, "step_size": LEARN_STEP, "decay": LEARN_DECAY,
           "final": {k: float(v) for k, v in fit.theta.items()}, "reference": mle, "reference_kind": "grid MLE",
           "loglik_final": ll_fit, "loglik_mle": ll_mle, "loglik_start": ll_start, "converged_flag": fit.converged,
           "seconds": fit.seconds, "reference_seconds": time.perf_counter() - t0,
           "true": {k: float(v) for k, v in m.theta.items()}}
    for k in ("mu", "phi", "sigma"):
        print(f"  {k:6s} learned {out['final'][k]:+.4f}  grid MLE {mle[k]:+.4f}  (simulated with {out['true'][k]:+.4f})")
    print(f"  log-likelihood (grid): start {ll_start:.2f}, learned {ll_fit:.2f}, MLE {ll_mle:.2f}; "
          f"{steps} steps in {fit.seconds:.1f} s")
    return out, fit


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="small budgets and replicate counts (module docstring), a short learning run")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
    p.add_argument("--particles-path", type=Path, default=None, help="folder holding the particles package")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip", nargs="*", default=(), choices=("bias", "throughput", "learning"))
    p.add_argument("--bias-curves", action="store_true",
                   help="(d) only: PaRIS bias against N and PPG bias per iteration, 400 replicates (minutes)")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    import jax

    print(f"devices: {jax.devices()}")
    result = {}
    if args.bias_curves:
        print("(d) PaRIS bias against N, PPG bias per iteration (1-d LGSSM, T = 100, 400 replicates)")
        result["bias_curves"] = _bias_curves(args.seed)
        _plot_bias_curves(result["bias_curves"], args.out / "ppg_bias_curves.png")
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(result, indent=1))
        return 0
    if "throughput" not in args.skip:
        print("(b) throughput, N = T = 1000")
        raw, ratios = _throughput(args.quick, args.seed, args.particles_path)
        result["throughput"] = ratios
        result["throughput_raw"] = raw
        for k, v in ratios.items():
            print(f"  {k:34s} {v:8.2f}x")
    if "bias" not in args.skip:
        print("(a) bias and RMSE against the particle budget (1-d LGSSM)")
        rows = _bias_study(args.quick, args.seed)
        result["bias"] = rows
        _plot_bias(rows, args.out / "ppg_bias.png")
    if "learning" not in args.skip:
        print("(c) learning on stochastic volatility (PPG score ascent)")
        out, fit = _learning(args.quick, args.seed)
        result["learning"] = out
        _plot_trace(fit, out, args.out / "ppg_learning.png")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    return 0


def _plot_bias(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    Ts = sorted({r["T"] for r in rows})
    fig, axes = plt.subplots(3, len(Ts), figsize=(5 * len(Ts), 10), squeeze=False)
    for j, T in enumerate(Ts):
        sub = [r for r in rows if r["T"] == T]
        labels = sorted({(r["method"], r["k"], r["k0"]) for r in sub}, key=str)
        for lab in labels:
            rr = sorted([r for r in sub if (r["method"], r["k"], r["k0"]) == lab], key=lambda r: r["N"])
            name = lab[0] if lab[1] is None else f"ppg k={lab[1]} k0={lab[2]}"
            axes[0, j].errorbar([r["N"] for r in rr], [r["bias"] for r in rr], [2 * r["bias_se"] for r in rr],
                                marker="o", label=name, capsize=3)
            axes[1, j].errorbar([r["N"] for r in rr], [r["bias_cross"] for r in rr],
                                [2 * r["bias_cross_se"] for r in rr], marker="o", label=name, capsize=3)
            axes[2, j].plot([r["N"] for r in rr], [r["rmse"] for r in rr], marker="o", label=name)
        axes[1, j].axhline(0, color="k", lw=0.5)
        for i, what in enumerate(("bias of Σ x_t (±2 se)", "bias of Σ x_t x_{t+1} (±2 se)", "RMSE of Σ x_t")):
            axes[i, j].set_xscale("log", base=2)
            axes[i, j].set_title(f"T = {T}: {what}")
            axes[i, j].set_xlabel("particle budget (all propagations)")
        axes[0, j].axhline(0, color="k", lw=0.5)
        axes[0, j].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"  plot: {path}")


def _plot_trace(fit, out, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3))
    for ax, k in zip(axes, ("mu", "phi", "sigma")):
        ax.plot(np.asarray(fit.trace[k]), lw=0.8)
        ax.axhline(out["reference"][k], color="r", ls="--", label="grid MLE")
        ax.set_title(k)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"  plot: {path}")


if __name__ == "__main__":
    sys.exit(main())
