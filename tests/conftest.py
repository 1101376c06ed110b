"""Test-wide settings: JAX on the CPU, and the persistent compilation cache (`sensei_jax.compile_cache`, the one
the command line uses: `~/.cache/sensei_jax/xla`, moved by SENSEI_JAX_CACHE) so reruns skip XLA compiles."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

from sensei_jax import compile_cache  # noqa: E402

compile_cache.enable()


def pytest_xdist_auto_num_workers(config):
    """`-n auto`: one worker per usable core, at most 4 (a worker holds JAX and its compiled programs, several GB)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, 4))
