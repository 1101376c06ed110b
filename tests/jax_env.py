"""How the tests run JAX: the XLA flags of every test process and the environment of the tests' JAX subprocesses.

The suite compiles hundreds of small programs on two CPU cores, and most of its time is compiling them, not running
them. The tests therefore compile at LLVM optimisation level 0 (XLA's default is 3) and with XLA's legacy CPU fusion
emitters instead of the newer MLIR-based ones (`--xla_cpu_use_fusion_emitters=false`). On a 2-core EPYC with an empty
XLA cache, benchmarks/dreamer_vs_reference.py --smoke compiles its train step in 12.2 s with XLA's defaults, 8.6 s at
level 0 and 3.8 s with both flags (and runs it in 7, 20 and 24 ms); the micro pipeline of tests/test_pipeline.py (warm
Warp kernels) takes 95 s at level 0 and 75 s with both. The programs' HLO is the same; only the machine code differs, so
results agree with the default flags' to float32 rounding, not bit for bit. What runs long at level 0 (1,280 updates of
tests/test_sensei_explore.py: 74 s against 47 s) or compares rounding across device layouts
(tests/test_reward_sharding.py's tolerances) runs in a subprocess with XLA's default flags
(`subprocess_env(optimized=True)`). The benchmarks keep XLA's defaults; the command line adds the emitter flag
(`sensei_jax.compile_cache.cpu_flags`).
"""

from __future__ import annotations

import os
from pathlib import Path

from sensei_jax import compile_cache

ROOT = Path(__file__).resolve().parents[1]
# The command line's CPU flags (the legacy fusion emitters) at LLVM level 0.
TEST_XLA_FLAGS = compile_cache.cpu_flags("--xla_backend_optimization_level=0")


def use_test_flags() -> None:
    """The tests' XLA flags for this process and its subprocesses, unless the caller set XLA_FLAGS."""
    os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS") or TEST_XLA_FLAGS


def subprocess_env(devices: int | None = None, optimized: bool = False, **extra: str) -> dict[str, str]:
    """This process's environment for a JAX subprocess: the CPU, `devices` virtual devices, the tests' XLA flags and
    their persistent compilation cache (`compile_cache.directory()`), the repository importable. `optimized`: XLA's
    default flags instead, for a subprocess that spends its time running programs, not compiling."""
    flags = os.environ.get("XLA_FLAGS", TEST_XLA_FLAGS)
    if optimized:
        flags = " ".join(flag for flag in flags.split() if flag not in TEST_XLA_FLAGS.split())
    if devices is not None:
        # Virtual devices are threads that meet in each collective; on a loaded 2-core machine one can miss XLA's
        # default 40 s rendezvous (seen once beside a parallel 7B compile), which aborts the process.
        flags += f" --xla_force_host_platform_device_count={devices} --xla_cpu_collective_timeout_seconds=600"
    env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    cache = compile_cache.directory()
    if cache is not None:
        env.update(JAX_COMPILATION_CACHE_DIR=str(cache), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="1.0")
    return {**env, **extra}
