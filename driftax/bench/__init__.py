"""Sampler benchmarking: the metrics every engine's output is scored by, in one place.

`score` takes draws (an ArviZ InferenceData or a dict of ``(chain, draw, ...)`` arrays, optionally
weighted) and reference draws, and returns the suite's metrics. Nothing below the CLI imports this
package; it may use `driftax.infer`, `driftax.transport` and `driftax.models`.
"""
from driftax.bench.score import score

__all__ = ["score"]
