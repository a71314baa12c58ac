"""Test-session set-up: one JAX compilation cache shared by the session's processes.

Many tests build equal programs from fresh closures (a new `Target` per test compiles the same
program again), and the xdist workers and the subprocesses of the sharding tests each compile
what the others already have. JAX's persistent cache, keyed by the compiled program itself,
compiles each once per session. It lives in the checkout's ``.pytest_cache`` (``make clean``
removes it), so a clean clone, as CI runs, starts empty. Environment variables carry it to the
subprocesses; ``jax.config`` to this process, in case JAX was imported before this file.
"""
import os
from pathlib import Path

_CACHE = Path(__file__).resolve().parent.parent / ".pytest_cache" / "jax-compilation-cache"
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(_CACHE))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.1")

import jax  # noqa: E402  (after the environment it reads)

jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update("jax_persistent_cache_min_compile_time_secs",
                  float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))
