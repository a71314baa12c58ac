"""The device mesh every engine batches over: one 1-D mesh of all devices, one placement rule.

`infer.sample` shards chains over it; the transport solvers and the state-space engine shard their
batch axes (problems, particles systems) the same way. It lives here, beside `_checks`, because
`transport` and `models` stand alone and may not import `infer`.
"""
from __future__ import annotations

import math
import warnings

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = ["batch_mesh", "place", "replicate", "to_host"]


def batch_mesh(batch: int, axis: str = "batch", *, what: str = "num_chains") -> Mesh:
    """A 1-D mesh with the same number of devices from every process, dividing ``batch``.

    ``what`` names the argument in errors and warnings (``num_chains``, ``num_problems``...).
    """
    n_proc = jax.process_count()
    if batch % n_proc:
        raise ValueError(f"{what}={batch} must be a multiple of the number of processes ({n_proc}) "
                         "so that every host has work")
    per_process = [[d for d in jax.devices() if d.process_index == p] for p in range(n_proc)]
    n_local = math.gcd(batch // n_proc, min(len(d) for d in per_process))
    devices = [d for local in per_process for d in local[:n_local]]
    if len(devices) < jax.device_count():
        warnings.warn(
            f"{what}={batch} does not divide over {jax.device_count()} devices; using "
            f"{len(devices)}. Choose a multiple of the device count to use them all.", stacklevel=3)
    return Mesh(np.array(devices), (axis,))


def place(x, mesh: Mesh, spec) -> jax.Array:
    """A global array from a host array every process holds whole (one path for 1 or many hosts)."""
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, NamedSharding(mesh, spec), lambda idx: x[idx])


def replicate(tree, mesh: Mesh):
    """A pytree of arrays copied whole onto every device of ``mesh``: the layout a program compiled
    over the mesh gives its replicated outputs. A loop that feeds such an output back in must start
    from this layout too, or its second call compiles the whole program again."""
    return jax.tree.map(lambda a: place(a, mesh, PartitionSpec()), tree)


def to_host(tree):
    """NumPy copies of a pytree of (possibly multi-host) global arrays, gathered where needed."""
    def get(a):
        return np.asarray(a) if a.is_fully_addressable else np.asarray(
            multihost_utils.process_allgather(a, tiled=True))
    return jax.tree.map(get, tree)
