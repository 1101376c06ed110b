"""Test-wide settings: JAX on the CPU, and the persistent compilation cache (`sensei_jax.compile_cache`, the one
the command line uses: `~/.cache/sensei_jax/xla`, moved by SENSEI_JAX_CACHE) so reruns skip XLA compiles."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

from sensei_jax import compile_cache  # noqa: E402

compile_cache.enable()
