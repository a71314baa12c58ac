"""Optimal transport: ground costs, log-domain Sinkhorn, Sinkhorn-Newton-Sparse, Bures-Wasserstein geometry.

Layout (geometry / problem / solvers apart, in the style of OTT-JAX):

* :mod:`~driftax.transport.costs`: cost matrices between point clouds and on grids;
* :mod:`~driftax.transport.problem`: validation, precision policy and the :class:`OTResult` pytree;
* :mod:`~driftax.transport.sinkhorn`: :func:`sinkhorn` (scaling-form sweeps with absorption, log-domain where
  the kernel underflows), :func:`sinkhorn_batch`, :func:`sinkhorn_distance`, :func:`sinkhorn_divergence`;
* :mod:`~driftax.transport.sns`: :func:`sns`, :func:`sns_batch`, :class:`SNSOptions` (Tang et al., "Accelerating
  Sinkhorn Algorithm with Sparse Newton Iterations", ICLR 2024);

Both solvers share one vocabulary: ``tol``, ``max_iter``, ``norm``, ``init``, ``dtype``, ``history_every``; SNS's
expert settings live in :class:`SNSOptions`.
* :mod:`~driftax.transport.bures`: W2 and entropic OT between Gaussians, geodesics, exponential map.
"""
from driftax.transport import bures, costs
from driftax.transport.problem import OTResult, marginal_error
from driftax.transport.sinkhorn import sinkhorn, sinkhorn_batch, sinkhorn_distance, sinkhorn_divergence
from driftax.transport.sns import SNSOptions, sns, sns_batch

__all__ = [
    "OTResult",
    "SNSOptions",
    "bures",
    "costs",
    "marginal_error",
    "sinkhorn",
    "sinkhorn_batch",
    "sinkhorn_distance",
    "sinkhorn_divergence",
    "sns",
    "sns_batch",
]
