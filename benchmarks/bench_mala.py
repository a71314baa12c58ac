"""driftax MALA against blackjax.mala, same run, same target, same step size.

Target: a 100-d Gaussian N(0, S) with S = Q diag(geomspace(1, 10)) Q^T, log-density -x^T S^-1 x / 2
(one matrix-vector product forward, one backward). 64 chains, fixed step size, no adaptation.

Measured, compile time excluded (each timed call is preceded by a warm-up call of the same shape),
best of ``--repeats``:
  * driftax_steps_per_s   `driftax.infer.sample` end to end: draws copied to host memory.
  * blackjax_steps_per_s  BlackJAX's loop as its docs write it: ``lax.scan`` over ``vmap(step)``
                          with per-chain keys, positions stacked and copied to host memory.
  * kernel-only figures for both (no draws kept) and a floor: the same scan with only the
    gradient evaluations (two matrix-vector products per chain-step).

    python benchmarks/bench_mala.py [--quick] [--json PATH]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time

import blackjax
import jax
import jax.numpy as jnp
import numpy as np

import driftax as dx
from driftax.samplers import langevin

DIM, CHAINS, STEP_SIZE = 100, 64, 0.05


def make_target():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(DIM, DIM)))
    cov = q @ np.diag(np.geomspace(1.0, 10.0, DIM)) @ q.T
    prec = jnp.asarray(np.linalg.inv(cov), jnp.float32)
    return dx.models.Target(lambda x: -0.5 * x @ (prec @ x), DIM, name="gaussian_100d", cov=cov)


def best_rate(fn, steps, repeats):
    """Chain-steps per second of ``fn()`` (blocks on its result), best of ``repeats`` after a warm-up call."""
    jax.block_until_ready(fn())
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - t0)
    return CHAINS * steps / best


def blackjax_loop(logdensity_fn, steps, keep_draws):
    alg = blackjax.mala(logdensity_fn, STEP_SIZE)

    @jax.jit
    def run(key, x0):
        state = jax.vmap(alg.init)(x0)

        def body(state, k):
            state, info = jax.vmap(alg.step)(jax.random.split(k, CHAINS), state)
            return state, (state.position if keep_draws else info.acceptance_rate.mean())

        return jax.lax.scan(body, state, jax.random.split(key, steps))

    return run


def driftax_kernel_loop(logdensity_fn, steps):
    kernel = langevin.build_kernel()

    @jax.jit
    def run(key, x0):
        state = jax.vmap(lambda x: langevin.init(x, logdensity_fn))(x0)

        def body(state, k):
            state, info = jax.vmap(lambda kk, s: kernel(kk, s, logdensity_fn, STEP_SIZE))(
                jax.random.split(k, CHAINS), state)
            return state, info.acceptance_rate.mean()

        return jax.lax.scan(body, state, jax.random.split(key, steps))

    return run


def gradient_floor(logdensity_fn, steps):
    grad = jax.vmap(jax.grad(logdensity_fn))

    @jax.jit
    def run(x0):
        return jax.lax.scan(lambda x, _: (x + 1e-3 * grad(x), None), x0, None, length=steps)[0]

    return run


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2,000 steps, 3 repeats (under 2 minutes)")
    parser.add_argument("--json", type=str, help="write the figures to this JSON file")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args(argv)
    steps = args.steps or (2000 if args.quick else 10_000)
    repeats = args.repeats or (3 if args.quick else 5)

    target = make_target()
    x0 = jax.random.normal(jax.random.key(1), (CHAINS, DIM))
    key = jax.random.key(2)

    def to_host(run):
        return lambda: np.asarray(run(key, x0)[1])

    def driftax_sample(unroll):
        return lambda: dx.infer.sample(
            target, "mala", num_chains=CHAINS, num_samples=steps, num_warmup=0, step_size=STEP_SIZE,
            adapt_step_size=False, mass_matrix=None, init=np.asarray(x0), progress=False, seed=0,
            chunk_size=min(steps, 1000), unroll=unroll).posterior["x"].values

    rows = {
        "driftax_steps_per_s": best_rate(driftax_sample(1), steps, repeats),
        "driftax_unroll4_steps_per_s": best_rate(driftax_sample(4), steps, repeats),
        "blackjax_steps_per_s": best_rate(to_host(blackjax_loop(target.logdensity_fn, steps, True)), steps, repeats),
        "driftax_kernel_steps_per_s": best_rate(to_host(driftax_kernel_loop(target.logdensity_fn, steps)), steps, repeats),
        "blackjax_kernel_steps_per_s": best_rate(to_host(blackjax_loop(target.logdensity_fn, steps, False)), steps, repeats),
        "gradient_floor_steps_per_s": best_rate(lambda: gradient_floor(target.logdensity_fn, steps)(x0), steps, repeats),
    }
    # the headline is driftax's default configuration (unroll=1); unroll=4 is reported beside it
    result = {
        "driftax_steps_per_s": rows["driftax_steps_per_s"],
        "blackjax_steps_per_s": rows["blackjax_steps_per_s"],
        "ratio": rows["driftax_steps_per_s"] / rows["blackjax_steps_per_s"],
        "details": rows,
        "kernel_ratio": rows["driftax_kernel_steps_per_s"] / rows["blackjax_kernel_steps_per_s"],
        "problem": {"dim": DIM, "chains": CHAINS, "step_size": STEP_SIZE, "steps": steps, "repeats": repeats},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "jax": jax.__version__,
                    "blackjax": blackjax.__version__, "device": str(jax.devices()[0])},
    }

    print(f"MALA, {DIM}-d Gaussian, {CHAINS} chains, step size {STEP_SIZE}, {steps} steps, best of {repeats}")
    print(f"{'loop':<46}{'chain-steps/s':>16}{'vs blackjax':>13}")
    ref = rows["blackjax_steps_per_s"]
    labels = {
        "driftax_steps_per_s": "driftax infer.sample (draws to host)",
        "driftax_unroll4_steps_per_s": "driftax infer.sample, unroll=4",
        "blackjax_steps_per_s": "blackjax scan+vmap (draws to host)",
        "driftax_kernel_steps_per_s": "driftax kernel in blackjax's loop (no draws)",
        "blackjax_kernel_steps_per_s": "blackjax kernel (no draws)",
        "gradient_floor_steps_per_s": "floor: gradients only",
    }
    for k, label in labels.items():
        print(f"{label:<46}{rows[k]:>16,.0f}{rows[k] / ref:>12.2f}x")
    print(f"\nratio driftax / blackjax = {result['ratio']:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
