"""Test-wide settings: JAX on the CPU, and a persistent compilation cache so reruns skip XLA compiles."""

import os
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

_cache = Path(os.environ.get("SENSEI_JAX_CACHE", Path.home() / ".cache" / "sensei_jax" / "xla"))
jax.config.update("jax_compilation_cache_dir", str(_cache))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
