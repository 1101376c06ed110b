"""Host numpy arrays <-> global jax arrays over a mesh with a `data` axis, on one host or many.

Every host runs the same program on the same host data (the same batch of pairs, the same shuffled indices); a
global array is built from it so that each host materialises only the rows of its own devices, and results come
back whole on every host. Files are written by process 0 alone (`is_writer`).
"""

from __future__ import annotations

from typing import Callable

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def is_writer() -> bool:
    """True in the one process that writes files (process 0)."""
    return jax.process_index() == 0


def rows_array(mesh: Mesh, shape: tuple[int, ...], rows: Callable[[slice], np.ndarray]) -> jax.Array:
    """A global array of `shape`, split by rows over `data` (replicated over the mesh's other axes), whose row
    block `s` is `rows(s)` (a host numpy array). Each host computes only its own devices' row blocks, once each."""
    data = mesh.shape["data"]
    if shape[0] % data:
        raise ValueError(f"{shape[0]} rows cannot be split evenly over the data axis of size {data}")
    computed: dict[tuple, np.ndarray] = {}

    def block(index):
        key = index[0].indices(shape[0])
        if key not in computed:
            computed[key] = np.ascontiguousarray(rows(index[0]))
        return computed[key]

    return jax.make_array_from_callback(shape, NamedSharding(mesh, P("data")), block)


def replicated(mesh: Mesh, array) -> jax.Array:
    """A host array (the same on every host) replicated on every device of `mesh`."""
    array = np.asarray(array)
    return jax.make_array_from_callback(array.shape, NamedSharding(mesh, P()), lambda index: array[index])


def to_host(array: jax.Array) -> np.ndarray:
    """A global array as one numpy array on every host (`process_allgather` when other hosts hold some rows)."""
    if array.is_fully_addressable:
        return np.asarray(array)
    return np.asarray(multihost_utils.process_allgather(array, tiled=True))


def barrier(name: str) -> None:
    """Waits until every process reaches the barrier `name` (nothing to wait for with one process)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def from_writer(array: np.ndarray) -> np.ndarray:
    """Process 0's value of a host array, on every process (e.g. which files process 0 found on disk)."""
    if jax.process_count() == 1:
        return np.asarray(array)
    return np.asarray(multihost_utils.broadcast_one_to_all(np.asarray(array)))
