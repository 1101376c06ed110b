"""One JAX job over several processes: joining it, and moving arrays between hosts and global arrays.

A job of N processes (one per host, or several on one machine) runs the same program everywhere. The CLI joins
the job (`initialize`) before anything touches a device, because JAX fixes its device list the first time one is
used; from then on `jax.devices()` lists the devices of every process and one mesh spans them all.

Arrays that span processes are global arrays: each process materialises only the blocks of its own devices
(`rows_array`, `replicated`), and results come back whole on every process (`to_host`). Files are written by
process 0 alone (`is_main_process`); `barrier` makes the others wait until a file exists, and `from_main_process`
hands process 0's view of the disk to everyone.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable, Mapping

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

ENV_COORDINATOR = "SENSEI_COORDINATOR"
ENV_NUM_PROCESSES = "SENSEI_NUM_PROCESSES"
ENV_PROCESS_ID = "SENSEI_PROCESS_ID"
ENV_DISTRIBUTED = "SENSEI_DISTRIBUTED"


class DistributedError(ValueError):
    """The settings of a multi-process job are incomplete or inconsistent; the message names the flag or variable."""


@dataclasses.dataclass(frozen=True)
class JobSpec:
    """How to join a job: `auto` (JAX's cluster detection: SLURM, TPU pods, ...) or an explicit coordinator
    `host:port` with the process count and this process's id. The default (all None, auto False) is one process."""

    auto: bool = False
    coordinator: str | None = None
    num_processes: int | None = None
    process_id: int | None = None

    @property
    def enabled(self) -> bool:
        return self.auto or self.coordinator is not None


def job_spec(coordinator: str | None = None, num_processes: int | str | None = None,
             process_id: int | str | None = None, mode: str | None = None,
             environ: Mapping[str, str] | None = None) -> JobSpec:
    """The job described by CLI values, falling back to the SENSEI_* environment variables for the missing ones.

    mode: 'auto' for JAX's own cluster detection (no other value may be given), None or 'off' otherwise.
    Raises DistributedError naming the flag and variable when the pieces do not fit together.
    """
    environ = os.environ if environ is None else environ
    coordinator = coordinator if coordinator is not None else environ.get(ENV_COORDINATOR) or None
    num_processes = num_processes if num_processes is not None else environ.get(ENV_NUM_PROCESSES) or None
    process_id = process_id if process_id is not None else environ.get(ENV_PROCESS_ID) or None
    mode = mode if mode is not None else environ.get(ENV_DISTRIBUTED) or None
    if mode not in (None, "off", "auto"):
        raise DistributedError(f"--distributed / {ENV_DISTRIBUTED} must be 'auto' or 'off', got {mode!r}")
    explicit = {"--coordinator": coordinator, "--num-processes": num_processes, "--process-id": process_id}
    if mode == "auto":
        given = [flag for flag, value in explicit.items() if value is not None]
        if given:
            raise DistributedError(f"--distributed auto detects the cluster itself; drop {', '.join(given)} (or the "
                                   f"matching SENSEI_* variables), or give all three without --distributed auto")
        return JobSpec(auto=True)
    if all(value is None for value in explicit.values()):
        return JobSpec()
    missing = [flag for flag, value in explicit.items() if value is None]
    if missing:
        raise DistributedError(f"a multi-process job needs --coordinator HOST:PORT, --num-processes N and "
                               f"--process-id I (or {ENV_COORDINATOR}, {ENV_NUM_PROCESSES}, {ENV_PROCESS_ID}); "
                               f"missing: {', '.join(missing)}")
    host, _, port = str(coordinator).rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise DistributedError(f"--coordinator must be HOST:PORT (e.g. node0:1234), got {coordinator!r}")
    count = _integer(num_processes, "--num-processes", ENV_NUM_PROCESSES)
    index = _integer(process_id, "--process-id", ENV_PROCESS_ID)
    if count < 1:
        raise DistributedError(f"--num-processes must be at least 1, got {count}")
    if not 0 <= index < count:
        raise DistributedError(f"--process-id must be in [0, {count - 1}] for {count} processes, got {index}")
    return JobSpec(coordinator=str(coordinator), num_processes=count, process_id=index)


def initialize(spec: JobSpec) -> None:
    """Joins the job of `spec` (nothing to do for one process). Must run before any device is used.

    On CPU, cross-process collectives need an implementation: gloo is selected (harmless on GPU and TPU, whose
    collectives do not use it)."""
    if not spec.enabled or jax.distributed.is_initialized():
        return
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if spec.auto:
        jax.distributed.initialize()
    else:
        jax.distributed.initialize(spec.coordinator, num_processes=spec.num_processes, process_id=spec.process_id)


def _integer(value: int | str, flag: str, variable: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise DistributedError(f"{flag} / {variable} must be an integer, got {value!r}") from None


# ----------------------------------------------------------------------------------------------------------------
# Processes and global arrays.


def process_count() -> int:
    """The number of processes in this job (1 unless `initialize` joined a larger one)."""
    return jax.process_count()


def is_main_process() -> bool:
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


def to_host(array) -> np.ndarray:
    """A (global) array as one numpy array on every host: `process_allgather` when other hosts hold some of it,
    where `jax.device_get` would fail."""
    if not isinstance(array, jax.Array) or array.is_fully_addressable:
        return np.asarray(array)
    if array.is_fully_replicated:
        return np.asarray(array.addressable_data(0))
    return np.asarray(multihost_utils.process_allgather(array, tiled=True))


def tree_to_host(tree):
    """`to_host` on every leaf of a pytree."""
    return jax.tree.map(to_host, tree)


def barrier(name: str) -> None:
    """Waits until every process reaches the barrier `name` (nothing to wait for with one process)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def on_main_process(name: str, work: Callable[[], object]) -> None:
    """Runs `work` (a file write, a folder created or deleted) in process 0 alone, then waits at barrier `name`,
    so every process sees its effect from here on."""
    if is_main_process():
        work()
    barrier(name)


def from_main_process(array: np.ndarray) -> np.ndarray:
    """Process 0's value of a host array, on every process (e.g. which files process 0 found on disk)."""
    if jax.process_count() == 1:
        return np.asarray(array)
    return np.asarray(multihost_utils.broadcast_one_to_all(np.asarray(array)))
