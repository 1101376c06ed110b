"""JAX's persistent compilation cache, shared by the command line, the benchmarks' callers and the tests.

XLA compiles each distinct program once per process; on a CPU the agent's train step, the env's collection step
and the reward model's steps take seconds to minutes each. With the cache on disk a later process (the next stage
command, a rerun, a resumed job) loads them instead. The folder is `$SENSEI_JAX_CACHE`, else
`$XDG_CACHE_HOME/sensei_jax/xla` (`~/.cache/sensei_jax/xla`); `SENSEI_JAX_CACHE=off` turns the cache off.
Programs that compile in under `min_compile_secs` are not written (they are cheaper to compile than to load).

The command line also compiles CPU programs with XLA's legacy CPU fusion emitters (`cpu_flags`): XLA's CPU backend
compiles each fusion of a program as a kernel of its own, and the legacy emitters produce them much faster than
the newer MLIR-based ones, with machine code that runs about as fast (the DreamerV3 train step of
`benchmarks/dreamer_vs_reference.py --smoke`: 7.6 ms against 7.3 ms). On a 2-core EPYC with empty caches the
quickstart's pipeline took 338 s instead of 411 s, with the same interactions; GPU and TPU programs are not affected.
"""

from __future__ import annotations

import os
from pathlib import Path

OFF = ("off", "none", "0", "false", "")
CPU_EMITTERS_FLAG = "--xla_cpu_use_fusion_emitters"


def directory() -> Path | None:
    """The cache folder the environment asks for, or None when it is turned off."""
    value = os.environ.get("SENSEI_JAX_CACHE")
    if value is not None:
        return None if value.strip().lower() in OFF else Path(value).expanduser()
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "sensei_jax" / "xla"


def enable(min_compile_secs: float = 1.0) -> Path | None:
    """Points JAX's persistent compilation cache at `directory()`; returns the folder (None: left off)."""
    import jax

    folder = directory()
    if folder is None:
        return None
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_secs))
    return folder


def cpu_flags(xla_flags: str) -> str:
    """`xla_flags` (the value of XLA_FLAGS) with XLA's legacy CPU fusion emitters, unless it chooses the emitters
    itself. XLA reads XLA_FLAGS once, when its first backend starts: set it before anything runs on a device."""
    if CPU_EMITTERS_FLAG in xla_flags:
        return xla_flags
    return f"{xla_flags} {CPU_EMITTERS_FLAG}=false".strip()
