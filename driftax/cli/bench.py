"""``driftax bench``: run the benchmark scripts of a checkout (``benchmarks/``) in quick mode."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("bench", help="run benchmarks/ (driftax against its peers) from a checkout")
    p.add_argument("--full", action="store_true", help="full sizes instead of --quick")
    p.add_argument("--dir", type=Path, default=Path("benchmarks"), help="the benchmarks folder")
    p.add_argument("--out", type=Path, default=Path("benchmarks/out"), help="where each writes NAME.json")
    p.set_defaults(func=run)


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
