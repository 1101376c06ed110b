"""What the machine has, as JSON-able dicts: `describe()` for a benchmark or a training summary, and the facts the
`doctor` command prints and the `run.device` guard checks (JAX's backend and devices, Warp's CUDA, versions, memory).

Each fact gatherer imports only what it reports on, and initialises JAX's backends or Warp's runtime when called:
call them after `jax.distributed.initialize` where a run uses it.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import os
import platform
import re
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

# The packages whose versions must fit together (pyproject.toml pins or bounds each of them).
PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "chex", "mujoco", "mujoco-mjx", "warp-lang")
# JAX's accelerator plugins: jax-cuda13-plugin and its jax-cuda13-pjrt, jax-rocm7-plugin, libtpu.
JAX_PLUGIN = re.compile(r"^(jax[-_](cuda|rocm)\d+[-_](plugin|pjrt)|libtpu)$")
# The MJX implementation the Robodesk env passes to `mjx.put_model` (envs/robodesk/env.py). MJX runs it on the
# first CUDA device JAX has, else on the CPU: Warp kernels run on a CUDA GPU or the CPU, never on a TPU.
MJX_IMPL = "warp"
# Where JAX logs what goes wrong while it finds its plugins and starts its backends.
JAX_BACKEND_LOGGER = "jax._src.xla_bridge"
# Environment variables that decide where JAX runs and how much accelerator memory XLA takes for itself.
MEMORY_SETTINGS = ("XLA_PYTHON_CLIENT_PREALLOCATE", "XLA_PYTHON_CLIENT_MEM_FRACTION", "XLA_PYTHON_CLIENT_ALLOCATOR",
                   "JAX_PLATFORMS", "CUDA_VISIBLE_DEVICES", "XLA_FLAGS")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe() -> dict[str, Any]:
    """Platform, CPU model and visible cores, load average (other processes competing), JAX version and devices."""
    import jax

    devices = jax.devices()
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_cores_visible": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "jax": jax.__version__,
        "jax_backend": jax.default_backend(),
        "device_kind": devices[0].device_kind,
        "jax_devices": [str(d) for d in devices],
    }


def package_versions() -> dict[str, str | None]:
    """Installed version of every package in PACKAGES (None where missing), then of each JAX plugin found."""
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    plugins = {}
    for dist in importlib.metadata.distributions():
        name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        if JAX_PLUGIN.match(name):
            plugins[name] = dist.version
    return versions | dict(sorted(plugins.items()))


def jax_facts() -> dict[str, Any]:
    """JAX's default backend and its devices, this process's place among the processes, and per-device memory.

    `devices`: one dict per global device (id, platform, kind, process index); `memory`: `memory_stats()` of each
    local device where the backend keeps them (bytes_limit, bytes_in_use, peak_bytes_in_use), else None (the CPU).
    `messages`: what JAX logged while starting its backends here (a CUDA plugin that failed to load, a GPU seen
    without a CUDA jaxlib), kept out of the terminal; empty where the backends had started before.
    """
    import jax

    messages: list[str] = []
    with _logged(JAX_BACKEND_LOGGER, messages):
        devices = jax.devices()
    memory = {}
    for device in jax.local_devices():
        stats = device.memory_stats()
        memory[str(device)] = None if stats is None else {
            key: int(stats[key]) for key in ("bytes_limit", "bytes_in_use", "peak_bytes_in_use") if key in stats}
    return {
        "backend": jax.default_backend(),
        "platform_version": devices[0].client.platform_version,
        "device_kind": devices[0].device_kind,
        "device_count": len(devices),
        "local_device_count": jax.local_device_count(),
        "process_index": jax.process_index(),
        "process_count": jax.process_count(),
        "devices": [{"id": d.id, "platform": d.platform, "kind": d.device_kind, "process_index": d.process_index}
                    for d in devices],
        "memory": memory,
        "messages": messages,
    }


class _Collect(logging.Handler):
    """Appends each record's message (and its exception's, if any) to a list."""

    def __init__(self, lines: list[str]):
        super().__init__(logging.WARNING)
        self.lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        error = record.exc_info[1] if record.exc_info else None
        self.lines.append(record.getMessage() + (f": {error}" if error is not None else ""))


@contextlib.contextmanager
def _logged(name: str, lines: list[str]) -> Iterator[None]:
    """Collects the warnings and errors of logger `name` inside the block into `lines`, not the terminal."""
    logger, handler = logging.getLogger(name), _Collect(lines)
    propagate, logger.propagate = logger.propagate, False
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


@contextlib.contextmanager
def _native_stderr(lines: list[str]) -> Iterator[None]:
    """Collects what native code writes to file descriptor 2 inside the block into `lines` instead of the
    terminal (Warp's runtime reports a missing CUDA driver there, past Python's sys.stderr)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            lines.extend(line.strip() for line in capture.read().decode(errors="replace").splitlines()
                         if line.strip())


def warp_facts() -> dict[str, Any]:
    """Warp's version, the CUDA toolkit it was built with, the CUDA driver it found (None: none), the driver version
    it needs, and its devices (alias, name, total memory in bytes for CUDA devices). `messages` holds what Warp's
    runtime printed while starting (a missing driver, a driver too old), which would otherwise go to the terminal.
    Warp's own start-up banner is not printed."""
    try:
        import warp as wp
    except ImportError as error:
        return {"installed": False, "error": str(error), "cuda_device_count": 0}
    messages: list[str] = []
    level = wp.config.log_level
    wp.config.log_level = wp.LOG_WARNING  # no banner; warnings still come
    try:
        with _native_stderr(messages):
            wp.init()
    finally:
        wp.config.log_level = level
    runtime = wp._src.context.runtime  # the minimum driver version has no public accessor
    version = lambda v: None if v is None else ".".join(map(str, v))  # noqa: E731
    devices = []
    for device in wp.get_devices():
        entry = {"alias": device.alias, "name": device.name}
        if device.is_cuda:
            entry |= {"arch": f"sm_{device.arch}", "total_memory": int(device.total_memory)}
        devices.append(entry)
    return {
        "installed": True,
        "version": wp.__version__,
        "cuda_toolkit": version(wp.get_cuda_toolkit_version()),
        "cuda_driver": version(wp.get_cuda_driver_version()),
        "cuda_driver_needed": version(getattr(runtime, "min_driver_version", None)),
        "cuda_device_count": wp.get_cuda_device_count(),
        "devices": devices,
        "messages": messages,
    }


def mjx_facts(jax_backend: str, warp_cuda_devices: int) -> dict[str, Any]:
    """The MJX implementation the env uses and the JAX platform MJX runs it on, given JAX's default backend and
    Warp's CUDA device count: `device` is None where the env cannot run (a TPU; a GPU that Warp cannot reach)."""
    device = {"cpu": "cpu", "gpu": "gpu" if warp_cuda_devices else None}.get(jax_backend)
    return {"impl": MJX_IMPL, "device": device}


def host_memory() -> dict[str, int | None]:
    """Total and available host memory in bytes, from /proc/meminfo (None where it cannot be read)."""
    values: dict[str, int | None] = {"total": None, "available": None}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            name, _, rest = line.partition(":")
            if name in ("MemTotal", "MemAvailable"):
                values["total" if name == "MemTotal" else "available"] = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return values


def memory_settings() -> dict[str, str | None]:
    """The environment variables of MEMORY_SETTINGS as set in this process (None: unset, XLA's default)."""
    return {name: os.environ.get(name) for name in MEMORY_SETTINGS}


def machine_facts() -> dict[str, Any]:
    """Everything the `doctor` command reports, as one JSON-able dict."""
    jax_part, warp_part = jax_facts(), warp_facts()
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "cpu_cores_visible": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "host_memory": host_memory(),
        "jax": jax_part,
        "warp": warp_part,
        "mjx": mjx_facts(jax_part["backend"], warp_part["cuda_device_count"]),
        "memory_settings": memory_settings(),
        "versions": package_versions(),
    }
