"""The sampler-benchmarking suite's full run: targets with ground truth x methods (`driftax.bench.suite`).

Every method runs on every target with the same arguments once to compile, then ``--repeats`` timed
times (the fastest call kept); the draws are scored by `driftax.bench.score` against the reference
(posteriordb's draws, or exact draws of gallery targets). Methods run in the outer loop, so the
default method (``nuts``) covers every target first; the JSON is rewritten after every row, so an
interrupted run keeps its rows (``--resume`` runs only the pairs it lacks). Prints a Markdown table
and, for posteriordb, the acceptance summary: does ``nuts`` reach every posterior within 0.1
reference sd in mean, 10 % in sd, R-hat <= 1.01; driftax NUTS's ESS per second over each NUTS
peer's (median over targets); where ChEES-HMC and MCLMC beat NUTS per gradient.

    python benchmarks/bench_samplers.py [--quick] [--json PATH] [--out DIR] [--targets a,b] [--methods m,n]
        [--chains 4 --warmup 1000 --draws 1000] [--repeats 3] [--resume] [--by-target] [--x64]

Full: the twelve float32 posteriordb posteriors (``gp_pois_regr`` with ``--x64``) and five gallery targets,
4 chains x 1,000 warm-up + 1,000 draws. ``--quick``: one posterior (arK) and one gallery target (banana), 4 chains x
300 + 300 (under 10 minutes on 2 cores).
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np

FULL_TARGETS = ("eight_schools", "arK", "garch11", "arma11", "blr", "kidscore_interaction", "logearn_interaction",
                "logmesquite_logvash", "low_dim_gauss_mix", "nes", "hmm_example", "diamonds", "gp_pois_regr",
                "gaussian", "ill_conditioned_gaussian", "banana", "funnel", "double_well")
QUICK_TARGETS = ("arK", "banana")  # compilation dominates: 2 targets x 6 methods, ~12 compiles


def summary(rows: list[dict]) -> str:
    """The acceptance summary over the posteriordb rows (see the module docstring)."""
    from driftax.bench.suite import POSTERIORDB_TARGETS

    lines = []
    pdb = [r for r in rows if r["target"] in POSTERIORDB_TARGETS]
    nuts = {r["target"]: r for r in pdb if r["method"] == "nuts"}
    if nuts:
        failed = [f"{t} (mean {r['mean_err']:.3f}, sd {r['sd_err']:.3f}, R-hat {r['rhat_max']:.3f})"
                  for t, r in nuts.items() if not r["passed"]]
        lines.append(f"nuts reaches {len(nuts) - len(failed)} of {len(nuts)} posteriordb posteriors run "
                     f"(mean err <= 0.1 sd, sd err <= 10 %, R-hat <= 1.01)"
                     + (f"; not: {'; '.join(failed)}" if failed else ""))
    for peer in ("numpyro_nuts", "blackjax_nuts"):
        other = {r["target"]: r for r in pdb if r["method"] == peer}
        common = [t for t in nuts if t in other and other[t]["ess_per_second"]]
        if common:
            ratios = [nuts[t]["ess_per_second"] / other[t]["ess_per_second"] for t in common]
            lines.append(f"median ESS/s, nuts / {peer}: {np.median(ratios):.2f} over {len(common)} posteriors "
                         f"(range {min(ratios):.2f}-{max(ratios):.2f})")
    for m in ("hmc_chees", "mclmc"):
        other = {r["target"]: r for r in rows if r["method"] == m}
        base = {r["target"]: r for r in rows if r["method"] == "nuts"}
        common = [t for t in base if t in other]
        if common:
            wins = [f"{t} ({other[t]['ess_per_grad']:.3g} vs {base[t]['ess_per_grad']:.3g}"
                    f"{'' if other[t]['passed'] else ', fails accuracy'})"
                    for t in common if other[t]["ess_per_grad"] > base[t]["ess_per_grad"]]
            lines.append(f"{m} beats nuts per gradient on {len(wins)} of {len(common)}: {', '.join(wins) or 'none'}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="arK and banana, 4 chains x 300 + 300")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out"))
    ap.add_argument("--targets", default=None, help="comma-separated suite target names (default: by --quick)")
    ap.add_argument("--methods", default=None, help="comma-separated method names (default: the suite's six)")
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--draws", type=int, default=None)
    ap.add_argument("--ot-points", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3, help="timed calls per row, the fastest kept (load only slows)")
    ap.add_argument("--resume", action="store_true",
                    help="keep the rows already in --json and run only the (target, method) pairs missing there")
    ap.add_argument("--by-target", action="store_true",
                    help="run every method on one target before the next (fair ESS/s under a varying load)")
    ap.add_argument("--x64", action="store_true", help="float64 (runs gp_pois_regr; every target in float64)")
    args = ap.parse_args(argv)
    import jax

    if args.x64:
        jax.config.update("jax_enable_x64", True)
    from driftax.bench import suite

    suite.enable_compile_cache()
    targets = args.targets or ",".join(QUICK_TARGETS if args.quick else FULL_TARGETS)
    methods = args.methods or ",".join(suite.DEFAULT_METHODS)
    warmup = args.warmup if args.warmup is not None else (300 if args.quick else 1000)
    draws = args.draws if args.draws is not None else (300 if args.quick else 1000)
    result = {"rows": [], "skipped": [], "settings": {
        "chains": args.chains, "warmup": warmup, "draws": draws, "seed": args.seed, "x64": bool(args.x64),
        "machine": f"{platform.machine()}, {jax.device_count()} {jax.default_backend()} device(s)"}}

    done = set()
    if args.resume:
        if not (args.json and args.json.exists()):
            ap.error("--resume needs --json PATH of an earlier run")
        import json
        earlier = json.loads(args.json.read_text())
        result["rows"], result["skipped"] = earlier.get("rows", []), earlier.get("skipped", [])
        done = {(r["target"], r["method"]) for r in result["rows"]}
        print(f"resuming: {len(done)} rows kept from {args.json}", flush=True)

    def on_row(row):
        result["rows"].append(row)
        print(f"{row['target']:22s} {row['method']:13s} mean {row['mean_err']:.3f} sd {row['sd_err']:.3f} "
              f"R-hat {row['rhat_max']:.3f} ESS/grad {row['ess_per_grad']:.2e} ESS/s {row['ess_per_second']:8.1f} "
              f"{row['seconds']:.1f} s (+{row['compile_seconds']:.0f}) {'pass' if row['passed'] else 'FAIL'}",
              flush=True)
        if args.json:
            suite.write_json(result, args.json)

    t0 = time.perf_counter()
    methods = suite.check_names("method", methods, suite.known_methods())
    targets = suite.check_names("target", targets, suite.known_targets())
    # Methods outer (default): the default method covers every target before the others start.
    # --by-target: every method on one target back to back, so the samplers whose ESS per second
    # is compared ran under the same background load.
    batches = ([(t, [m for m in methods if (t, m) not in done]) for t in targets] if args.by_target
               else [(m, [t for t in targets if (t, m) not in done]) for m in methods])
    for first, rest in batches:
        if not rest:
            continue
        ts, ms = ([first], rest) if args.by_target else (rest, [first])
        out = suite.run_suite(ts, ms, chains=args.chains, warmup=warmup, draws=draws, seed=args.seed,
                              ot_points=args.ot_points, on_row=on_row, on_error="record", repeats=args.repeats)
        for s in out["skipped"]:
            if s not in result["skipped"]:
                result["skipped"].append(s)
                print(f"skipped {s['target']} / {s['method']}: {s['reason']}", flush=True)
    result["wall_seconds"] = time.perf_counter() - t0
    print()
    print(suite.markdown_table(result["rows"]))
    print()
    text = summary(result["rows"])
    result["summary"] = text
    print(text)
    print(f"machine: {result['settings']['machine']}; wall {result['wall_seconds']:.0f} s")
    if result["rows"]:
        suite.plot(result["rows"], args.out)
    if args.json:
        suite.write_json(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
