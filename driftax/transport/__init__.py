"""Optimal transport: ground costs, log-domain Sinkhorn, Sinkhorn-Newton-Sparse, Bures-Wasserstein geometry.

Layout (geometry / problem / solvers apart, in the style of OTT-JAX):

* :mod:`~driftax.transport.costs`: cost matrices between point clouds and on grids;
* :mod:`~driftax.transport.problem`: validation, precision policy and the :class:`OTResult` pytree;
* :mod:`~driftax.transport.sinkhorn`: :func:`sinkhorn`, :func:`sinkhorn_distance`, :func:`sinkhorn_divergence`;
* :mod:`~driftax.transport.sns`: :func:`sns` (Tang et al., "Accelerating Sinkhorn Algorithm with Sparse Newton
  Iterations", ICLR 2024);
* :mod:`~driftax.transport.bures`: W2 and entropic OT between Gaussians, geodesics, exponential map.
"""
from driftax.transport import bures, costs
from driftax.transport.problem import OTResult, marginal_error
from driftax.transport.sinkhorn import sinkhorn, sinkhorn_distance, sinkhorn_divergence
from driftax.transport.sns import sns

__all__ = [
    "OTResult",
    "bures",
    "costs",
    "marginal_error",
    "sinkhorn",
    "sinkhorn_distance",
    "sinkhorn_divergence",
    "sns",
]
