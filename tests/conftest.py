"""Test-wide settings: JAX on the CPU with the tests' XLA flags (tests/jax_env.py), and the persistent compilation
cache (`sensei_jax.compile_cache`, the one the command line uses: `~/.cache/sensei_jax/xla`, moved by
SENSEI_JAX_CACHE) so reruns skip XLA compiles."""

import os

import jax_env

os.environ.setdefault("JAX_PLATFORMS", "cpu")
jax_env.use_test_flags()  # before JAX starts: XLA reads its flags once

from sensei_jax import compile_cache  # noqa: E402

compile_cache.enable()


def pytest_xdist_auto_num_workers(config):
    """`-n auto`: one worker per usable core, at most 4 (a worker holds JAX and its compiled programs, several GB)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, 4))


# Files that take minutes on a 2-core CPU (`--durations`): the workers start them before the short files, so no
# worker begins a long file when the others are nearly done. The first Robodesk file builds Warp's kernels into its
# cache; the second and third files need no Warp, so a second worker does not build the same kernels at the same
# time on a new machine. Other files follow in their usual order.
LONG_FILES = ("test_pipeline.py", "test_dreamer_multidevice.py", "test_multiprocess.py", "test_env_robodesk.py",
              "test_benchmarks_smoke.py", "test_pipeline_collect_p2x.py", "test_explore_resume_transfer.py",
              "test_env_robodesk_sharded.py", "test_dreamer_loop.py", "test_sensei_explore.py",
              "test_pipeline_resume.py", "test_pipeline_toy.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONG_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONG_FILES)))  # stable: a file's own order stays
