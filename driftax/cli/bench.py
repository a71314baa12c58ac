"""``driftax bench``: run the benchmark scripts of a checkout (``benchmarks/``) in quick mode;
``driftax bench samplers``: the sampler-benchmarking suite (`driftax.bench.suite`).

    driftax bench [--full] [--dir benchmarks] [--out benchmarks/out]
    driftax bench samplers --targets eight_schools,arK --methods nuts,numpyro_nuts [--quick] [--json PATH] [--out DIR]
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

QUICK_SUITE = ("arK", "banana")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("bench", help="run benchmarks/ (driftax against its peers) from a checkout, or "
                              "'bench samplers': the sampler-benchmarking suite",
                              description=__doc__)
    p.add_argument("--full", action="store_true", help="full sizes instead of --quick")
    p.add_argument("--dir", type=Path, default=Path("benchmarks"), help="the benchmarks folder")
    p.add_argument("--out", type=Path, default=Path("benchmarks/out"), help="where each writes NAME.json")
    p.set_defaults(func=run)
    sub = p.add_subparsers(dest="bench_command", metavar="SUITE")
    s = sub.add_parser("samplers", help="targets with ground truth x methods, scored by driftax.bench.score")
    s.add_argument("--targets", default=None,
                   help=f"comma-separated target names (default: {','.join(QUICK_SUITE)}); gallery targets "
                   "with exact draws and the 13 posteriordb posteriors")
    s.add_argument("--methods", default=None, help="comma-separated method names (default: nuts, hmc_chees, "
                   "mclmc, mala, numpyro_nuts, blackjax_nuts); any driftax registry name or a NUTS peer")
    s.add_argument("--quick", action="store_true", help="4 chains x 300 warm-up + 300 draws (default 1,000 + 1,000)")
    s.add_argument("--chains", type=int, default=4)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--ot-points", type=int, default=500, help="draws the Sinkhorn divergence uses (0: skip it)")
    s.add_argument("--json", type=Path, default=None, help='write {"rows": [...]} here')
    s.add_argument("--out", type=Path, default=None, help="write the Markdown table and three PNGs here")
    s.set_defaults(func=run_samplers)


def run(args) -> int:
    scripts = sorted(p for p in args.dir.glob("*.py") if not p.name.startswith("_"))
    if not scripts:
        raise FileNotFoundError(f"no benchmark scripts (*.py) in {args.dir.resolve()}; run from a driftax checkout")
    args.out.mkdir(parents=True, exist_ok=True)
    status = 0
    for script in scripts:
        print(f"== {script.name}", flush=True)
        cmd = [sys.executable, str(script), "--json", str(args.out / f"{script.stem}.json")]
        cmd += [] if args.full else ["--quick"]
        status |= subprocess.call(cmd)
    return status


def run_samplers(args) -> int:
    from driftax._checks import check_int
    from driftax.bench import suite

    check_int("--chains", args.chains, minimum=1)
    check_int("--ot-points", args.ot_points, minimum=0)
    # names first: a typo fails before anything compiles
    targets = suite.check_names("target", args.targets or ",".join(QUICK_SUITE), suite.known_targets())
    methods = suite.check_names("method", args.methods or ",".join(suite.DEFAULT_METHODS), suite.known_methods())
    suite.enable_compile_cache()
    n = 300 if args.quick else 1000
    result = suite.run_suite(targets, methods, chains=args.chains, warmup=n, draws=n, seed=args.seed,
                             ot_points=args.ot_points or None, on_error="record")
    table = suite.markdown_table(result["rows"])
    print(table)
    for s in result["skipped"]:
        print(f"skipped {s['target']} / {s['method']}: {s['reason']}")
    if args.json is not None:
        suite.write_json(result, args.json)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "suite.md").write_text(table + "\n")
        if result["rows"]:
            suite.plot(result["rows"], args.out)
    return 0 if result["rows"] else 1
