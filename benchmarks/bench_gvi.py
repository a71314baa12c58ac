"""Gaussian VI: driftax's Bures-Wasserstein methods against NumPyro and BlackJAX, same run, same targets.

Problems (float64):
  (a) ``gaussian50``: the gallery's ``ill_conditioned_gaussian(50, 100)``, pi = N(0, S), eigenvalues of S from
      1 down to 1/100 (Hessian of -log pi from alpha = 1 to beta = 100). Metric: KL(q | pi) in closed form after
      500, 2,000 and 10,000 gradient evaluations (each budget is its own run; best step size / learning rate
      per method and budget from a small grid).
  (b) ``logreg``: Bayesian logistic regression on the shipped breast-cancer data (d = 31), against a long NUTS
      run (NumPyro, 4 chains): W2 (Bures) between q and N(mean_ref, cov_ref), mean error |m - m_ref| and
      relative covariance error |S - S_ref|_F / |S_ref|_F, against gradient evaluations and wall time.
  (c) stability: on a 10-d Gaussian with the same spectrum range (beta = 100), KL after a fixed number of
      steps for step sizes h = c / beta, c from 0.5 to 2.5, for the deterministic FB-GVI and BW gradient descent
      (cubature, Stein Hessian: exact here) and their stochastic forms (one draw, autodiff Hessian).

Methods: ``fb_last``/``fb_avg`` (stochastic FB-GVI, one draw per step, autodiff Hessian, last iterate / tail
average), ``fb_stein_last``/``fb_stein_avg`` (the gradient-only Stein Hessian, which needs a batch: 5 antithetic
pairs per step, and small steps, its noise growing with d), ``bw_sgd`` (Lambert
et al., one draw per step, autodiff Hessian), ``batch_match`` (Cai et al., B = 10), ``numpyro_mvn``
(AutoMultivariateNormal + SVI, Trace_ELBO with one particle, Adam), ``blackjax_fullrank``
(``blackjax.vi.fullrank_vi``, one sample per step, Adam).

Counting (honest): ``grad_evals`` counts gradient evaluations of log pi; an autodiff Hessian counts as d of
them, so one stochastic FB-GVI step with the autodiff Hessian costs d + 1. ``seconds``: wall time of a warm call
(compilation excluded: each timed call is preceded by an identical one).

    python benchmarks/bench_gvi.py [--quick] [--json PATH] [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from driftax.infer.gaussian_vi import gaussian_vi  # noqa: E402
from driftax.models import gallery  # noqa: E402
from driftax.transport import bures  # noqa: E402

BUDGETS = (500, 2000, 10_000)


def kl_gauss(m, s, mu, sigma):
    """KL(N(m, s) | N(mu, sigma)) in float64 without cancelling traces (x - log1p(x) per eigenvalue)."""
    lc = np.linalg.cholesky(sigma)
    y = np.linalg.solve(lc, np.linalg.solve(lc, s).T)
    a = np.linalg.eigvalsh(0.5 * (y + y.T))
    if np.any(a <= 0) or not np.all(np.isfinite(a)):
        return float("inf")
    dm = np.linalg.solve(lc, m - mu)
    return float(0.5 * (np.sum((a - 1) - np.log1p(a - 1)) + dm @ dm))


def timed(fn):
    fn()  # compile
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


# --------------------------------------------------------------------------- driftax
def driftax_fit(target, method, budget, h, hessian="autodiff", num_samples=None):
    d = target.dim
    stein = method == "stochastic_fb" and hessian == "stein"
    per = {"stochastic_fb": 10 if stein else 1 + d, "bw_sgd": 1 + d, "batch_match": num_samples or 10}[method]
    steps = max(budget // per, 2)
    kw = dict(num_steps=steps, step_size=h, seed=0)
    if method == "stochastic_fb":
        kw.update(average="tail", hessian=hessian)
        if stein:  # the gradient-only form needs a batch: 5 antithetic pairs per step
            kw.update(num_samples=10, antithetic=True)
    if method == "batch_match":
        kw.update(num_samples=num_samples or 10)
    q, secs = timed(lambda: gaussian_vi(target, method, **kw))
    return q, secs, q.grad_evals


# --------------------------------------------------------------------------- peers
def numpyro_fit(logdensity, d, budget, lr):
    import numpyro
    import numpyro.distributions as dist
    from numpyro.infer import SVI, Trace_ELBO
    from numpyro.infer.autoguide import AutoMultivariateNormal
    from numpyro.infer.initialization import init_to_value
    import optax

    def model():
        x = numpyro.sample("x", dist.ImproperUniform(dist.constraints.real_vector, (), (d,)))
        numpyro.factor("lp", logdensity(x))

    guide = AutoMultivariateNormal(model, init_loc_fn=init_to_value(values={"x": jnp.zeros(d)}), init_scale=1.0)
    svi = SVI(model, guide, optax.adam(lr), Trace_ELBO(num_particles=1))

    def run():
        res = svi.run(jax.random.key(0), budget, progress_bar=False)
        post = guide.get_posterior(res.params)
        return np.asarray(post.loc), np.asarray(post.covariance_matrix)

    (m, s), secs = timed(run)
    return m, s, secs, budget


def blackjax_fit(logdensity, d, budget, lr):
    import blackjax
    import optax
    from blackjax.vi import fullrank_vi

    alg = blackjax.fullrank_vi(logdensity, optax.adam(lr), num_samples=1)

    @jax.jit
    def run(key):
        state = alg.init(jnp.zeros(d))

        def body(s, k):
            s, _ = alg.step(k, s)
            return s, None
        state, _ = jax.lax.scan(body, state, jax.random.split(key, budget))
        return state.mu, fullrank_vi._unflatten_cholesky(state.chol_params, d)

    (m, L), secs = timed(lambda: jax.block_until_ready(run(jax.random.key(0))))
    L = np.asarray(L)
    return np.asarray(m), L @ L.T, secs, budget


# --------------------------------------------------------------------------- problems
# step sizes of the Bures-Wasserstein methods in units of 1/beta (beta: largest Hessian eigenvalue of -log pi)
GRIDS_FULL = {
    "fb": [0.2, 0.5, 1.0], "fb_stein": [0.002, 0.005, 0.01], "bw_sgd": [0.1, 0.2, 0.5],
    "batch_match": [1.0, 10.0, 100.0], "numpyro_mvn": [1e-3, 3e-3, 1e-2, 3e-2], "blackjax_fullrank": [1e-3, 3e-3, 1e-2, 3e-2],
}
GRIDS_QUICK = {
    "fb": [1.0], "fb_stein": [0.005], "bw_sgd": [0.2], "batch_match": [10.0],
    "numpyro_mvn": [1e-3, 1e-2], "blackjax_fullrank": [1e-3, 3e-3],
}


def fits(target, budget, grids, metric, beta):
    """Best (by ``metric``) of each method's grid at this budget: yields (label, metric dict, grad_evals, secs)."""
    ld, d = target.logdensity_fn, target.dim
    out = []
    for key, grid in grids.items():
        best = {}
        for c in grid:
            h = c / beta if key in ("fb", "fb_stein", "bw_sgd") else c
            if key in ("fb", "fb_stein"):
                q, secs, ge = driftax_fit(target, "stochastic_fb", budget, h, "autodiff" if key == "fb" else "stein")
                cands = {f"{key}_last": (q.last_mean, q.last_cov), f"{key}_avg": (q.mean, q.cov)}
            elif key in ("bw_sgd", "batch_match"):
                q, secs, ge = driftax_fit(target, key, budget, h)
                cands = {key: (q.mean, q.cov)}
            elif key == "numpyro_mvn":
                m, s, secs, ge = numpyro_fit(ld, d, budget, h)
                cands = {key: (m, s)}
            else:
                m, s, secs, ge = blackjax_fit(ld, d, budget, h)
                cands = {key: (m, s)}
            for label, (m, s) in cands.items():
                val = metric(np.asarray(m, np.float64), np.asarray(s, np.float64))
                score = val[next(iter(val))]
                if not np.isfinite(score):
                    score = np.inf
                if label not in best or score < best[label][0]:
                    best[label] = (score, val, ge, secs, h)
        for label, (_, val, ge, secs, h) in best.items():
            out.append((label, val, ge, secs, h))
    return out


def nuts_reference(target, num_samples, out: Path):
    path = out / f"logreg_nuts_{num_samples}.npz"
    if path.exists():
        z = np.load(path)
        return z["mean"], z["cov"]
    from numpyro.infer import MCMC, NUTS

    mcmc = MCMC(NUTS(potential_fn=lambda x: -target.logdensity_fn(x)), num_warmup=1000, num_samples=num_samples,
                num_chains=4, chain_method="vectorized", progress_bar=False)
    mcmc.run(jax.random.key(1), init_params=jnp.zeros((4, target.dim)))
    x = np.asarray(mcmc.get_samples(), np.float64)
    mean, cov = x.mean(0), np.cov(x.T)
    np.savez(path, mean=mean, cov=cov)
    return mean, cov


def stability(quick):
    """(c) on a 10-d Gaussian with the same spectrum range (Hessian eigenvalues 1 ... 100, beta = 100)."""
    g = gallery.ill_conditioned_gaussian(10, 100.0, seed=1)
    mu, sigma = np.asarray(g.mean, np.float64), np.asarray(g.cov, np.float64)
    prec = np.linalg.inv(sigma)
    prec = 0.5 * (prec + prec.T)
    target = dx_target(lambda x: -0.5 * (x - mu) @ (prec @ (x - mu)), 10, "gaussian10")
    beta = float(np.linalg.eigvalsh(prec)[-1])
    rows = []
    cs = [0.5, 1.0, 1.5, 2.5] if quick else [0.5, 0.9, 1.0, 1.1, 1.5, 1.9, 2.5]
    steps = 600 if quick else 2000
    for c in cs:
        h = c / beta
        for label, method, kw in (("fb", "fb", dict(hessian="stein")), ("bw_gd", "bw_gd", dict(hessian="stein")),
                                  ("fb_avg", "stochastic_fb", dict(average="tail")),
                                  ("bw_sgd", "bw_sgd", dict())):
            q = gaussian_vi(target, method, num_steps=steps, step_size=h, seed=0, **kw)
            finite = bool(np.all(np.isfinite(q.cov)))
            kl = kl_gauss(q.mean, q.cov, mu, sigma) if finite else float("inf")
            rows.append({"method": label, "step_size": h, "c": c, "kl": kl, "diverged": bool(q.diverged),
                         "min_eig_over_h": float(np.linalg.eigvalsh(q.cov)[0] / h) if finite else None})
    return rows, beta


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one step size per method, shorter NUTS and stability runs")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out"))
    ap.add_argument("--only", default="gaussian50,logreg,stability",
                    help="comma-separated parts to run (default all): gaussian50, logreg, stability")
    args = ap.parse_args(argv)
    parts = set(args.only.split(","))
    if not parts <= {"gaussian50", "logreg", "stability"}:
        ap.error(f"--only takes gaussian50, logreg, stability, got {args.only!r}")
    args.out.mkdir(parents=True, exist_ok=True)
    grids = GRIDS_QUICK if args.quick else GRIDS_FULL
    t_start = time.perf_counter()
    rows = []

    # (a) gaussian50
    g = gallery.ill_conditioned_gaussian(50, 100.0, seed=0)
    mu, sigma = np.asarray(g.mean, np.float64), np.asarray(g.cov, np.float64)
    prec = np.linalg.inv(sigma)
    prec = 0.5 * (prec + prec.T)
    gauss = dx_target(lambda x: -0.5 * (x - mu) @ (prec @ (x - mu)), 50, "gaussian50")
    kl = lambda m, s: {"kl": kl_gauss(m, s, mu, sigma)}  # noqa: E731
    for budget in (BUDGETS if "gaussian50" in parts else ()):
        for label, val, ge, secs, h in fits(gauss, budget, grids, kl, 100.0):
            rows.append({"problem": "gaussian50", "method": label, "budget": budget, "grad_evals": int(ge),
                         "kl": val["kl"], "seconds": secs, "step_size": h})
            print(f"gaussian50 {label:>18} budget {budget:>6} evals {ge:>6} KL {val['kl']:10.3e} "
                  f"{secs:7.2f}s (h/lr {h:g})", flush=True)

    # (c) stability
    stab, largest = [], {}
    if "stability" in parts:
        stab, beta10 = stability(args.quick)
        print("\nstability on a 10-d Gaussian (beta = %.1f): KL after a fixed number of steps, h = c / beta" % beta10)
        methods = ["fb", "bw_gd", "fb_avg", "bw_sgd"]
        print(f"{'c':>5} " + " ".join(f"{m:>12}" for m in methods))
        for c in sorted({r["c"] for r in stab}):
            vals = {r["method"]: r for r in stab if r["c"] == c}
            print(f"{c:>5} " + " ".join(f"{vals[m]['kl']:12.3e}" + ("*" if vals[m]["diverged"] else " ")
                                       for m in methods))
        for m in methods:
            ok = [r["c"] for r in stab if r["method"] == m and np.isfinite(r["kl"]) and r["kl"] <= 1e-3]
            largest[m] = max(ok) if ok else None
        print("largest c with KL <= 1e-3:", largest, "(* = a step diverged)")

    # (b) logistic regression vs NUTS
    lr = gallery.logistic_regression("breast_cancer")
    if "logreg" in parts:
        m_ref, s_ref = nuts_reference(lr, 2000 if args.quick else 10_000, args.out)
        # -hess log pi = X^T diag(sigma'(X b)) X + I / s^2 <= X^T X / 4 + I / s^2 = -hess log pi(0): the global
        # smoothness constant beta is the top Hessian eigenvalue at b = 0
        beta_lr = float(np.linalg.eigvalsh(-np.asarray(jax.hessian(lr.logdensity_fn)(jnp.zeros(lr.dim))))[-1])
        print(f"logreg: d = {lr.dim}, beta (largest Hessian eigenvalue at 0, a global bound) = {beta_lr:.1f}")

    def lr_metric(m, s):
        if not (np.all(np.isfinite(m)) and np.all(np.isfinite(s))):
            return {"w2": float("inf"), "mean_err": float("inf"), "cov_err": float("inf")}
        s = 0.5 * (s + s.T)
        try:
            w2 = float(bures.w2(m, s, m_ref, s_ref))
        except ValueError:
            w2 = float("inf")
        return {"w2": w2, "mean_err": float(np.linalg.norm(m - m_ref)),
                "cov_err": float(np.linalg.norm(s - s_ref) / np.linalg.norm(s_ref))}

    for budget in (BUDGETS if "logreg" in parts else ()):
        for label, val, ge, secs, h in fits(lr, budget, grids, lr_metric, beta_lr):
            rows.append({"problem": "logreg", "method": label, "budget": budget, "grad_evals": int(ge), **val,
                         "seconds": secs, "step_size": h})
            print(f"logreg     {label:>18} budget {budget:>6} evals {ge:>6} W2 {val['w2']:10.3e} mean err "
                  f"{val['mean_err']:9.2e} cov err {val['cov_err']:9.2e} {secs:7.2f}s (h/lr {h:g})", flush=True)

    print_tables(rows)
    plots(rows, stab, args.out)
    total = time.perf_counter() - t_start
    print(f"\ntotal {total:.0f} s")
    if args.json:
        doc = {"rows": [{k: r[k] for k in ("problem", "method", "grad_evals", "kl", "w2", "seconds", "mean_err",
                                          "cov_err", "step_size") if k in r} for r in rows],
               "stability": stab, "largest_converging_c": largest, "quick": args.quick,
               "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs", "seconds": total}
        args.json.write_text(json.dumps(doc, indent=1))


def dx_target(fn, d, name):
    from driftax.models.base import Target
    return Target(fn, d, name=name)


def print_tables(rows):
    for prob, key in (("gaussian50", "kl"), ("logreg", "w2")):
        labels = sorted({r["method"] for r in rows if r["problem"] == prob})
        print(f"\n{prob}: {key} at {', '.join(str(b) for b in BUDGETS)} gradient evaluations")
        for lab in labels:
            vals = [next((r for r in rows if r["problem"] == prob and r["method"] == lab and r["budget"] == b), None)
                    for b in BUDGETS]
            print(f"{lab:>18} " + " ".join(f"{v[key]:11.3e}" if v else " " * 11 for v in vals))


def plots(rows, stab, out: Path):
    if not rows and not stab:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    for ax, (prob, key, xkey) in zip(axes, (("gaussian50", "kl", "grad_evals"), ("logreg", "w2", "grad_evals"),
                                            ("logreg", "w2", "seconds"))):
        for lab in sorted({r["method"] for r in rows if r["problem"] == prob}):
            rr = sorted((r for r in rows if r["problem"] == prob and r["method"] == lab), key=lambda r: r["budget"])
            ax.loglog([r[xkey] for r in rr], [max(r[key], 1e-17) for r in rr], "o-", label=lab)
        ax.set_xlabel(xkey.replace("_", " "))
        ax.set_ylabel(key)
        ax.set_title(prob)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "gvi_convergence.png", dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4))
    for m in sorted({r["method"] for r in stab}):
        rr = [r for r in stab if r["method"] == m]
        ax.semilogy([r["c"] for r in rr], [min(max(r["kl"], 1e-17), 1e6) for r in rr], "o-", label=m)
    ax.set_xlabel("step size x beta")
    ax.set_ylabel("KL after the run (capped at 1e6)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "gvi_stability.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
