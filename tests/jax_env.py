"""How the tests run JAX: the XLA flags of every test process and the environment of the tests' JAX subprocesses.

The suite compiles hundreds of small programs on two CPU cores, and compiling costs more than running them. XLA's
LLVM back end at optimisation level 1 compiles them in about two thirds of the time of the default level 2 and runs
them about as fast (`--durations` on `tests/test_dreamer_loop.py`, a 2-core EPYC: 107 s at level 2, 89 s at level
1); the programs' HLO, and with it their math, is the same. The command line and the benchmarks keep XLA's default.
"""

from __future__ import annotations

import os
from pathlib import Path

from sensei_jax import compile_cache

ROOT = Path(__file__).resolve().parents[1]
TEST_XLA_FLAGS = "--xla_backend_optimization_level=0"


def use_test_flags() -> None:
    """Puts the tests' flags in front of any the caller set (a flag given twice: XLA takes the last)."""
    os.environ["XLA_FLAGS"] = f"{TEST_XLA_FLAGS} {os.environ.get('XLA_FLAGS', '')}".strip()


def subprocess_env(devices: int | None = None, **extra: str) -> dict[str, str]:
    """This process's environment for a JAX subprocess: the CPU, `devices` virtual devices, the tests' XLA flags and
    their persistent compilation cache (`compile_cache.directory()`), the repository importable."""
    flags = os.environ.get("XLA_FLAGS", TEST_XLA_FLAGS)
    if devices is not None:
        flags += f" --xla_force_host_platform_device_count={devices}"
    env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    cache = compile_cache.directory()
    if cache is not None:
        env.update(JAX_COMPILATION_CACHE_DIR=str(cache), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="1.0")
    return {**env, **extra}
