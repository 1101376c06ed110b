"""What every benchmark script shares: the report envelope (name, hardware, mode), the `--smoke` flag, timing.

The scripts live beside this module and import it by name (`python benchmarks/X.py` puts benchmarks/ first on the
path; `suite.py` imports the scripts the same way).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any, Callable

from sensei_jax.hardware import describe as describe_hardware

SMOKE_HELP = "tiny sizes and a few steps (seconds, for CI): checks that the script runs, not how fast"


def add_smoke(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP)


def report(benchmark: str, results: Any, smoke: bool = False, **extra: Any) -> dict[str, Any]:
    """The one JSON object a script prints: its name, the hardware it ran on, smoke or not, its results."""
    return {"benchmark": benchmark, "hardware": describe_hardware(), "smoke": smoke, "results": results, **extra}


def emit(obj: dict[str, Any]) -> None:
    print(json.dumps(obj, indent=2))


def seconds(fn: Callable[[], Any]) -> float:
    """Wall seconds of one call of `fn` (which must block until its device work is done)."""
    begin = time.perf_counter()
    fn()
    return time.perf_counter() - begin


def time_train_steps(trainer: Any, state: dict[str, Any], steps: int) -> tuple[float, float]:
    """(compile seconds, seconds per step) of `trainer.train_step` on the run state `state` (updated in place): one
    first call that compiles, then `steps` timed calls."""
    import jax

    key = jax.random.PRNGKey(1)

    def train(i):
        state["agent"], state["replay"], metrics = trainer.train_step(state["agent"], state["replay"], key, i)
        return metrics

    compile_s = seconds(lambda: jax.block_until_ready(train(0)))
    begin = time.perf_counter()
    for i in range(steps):
        metrics = train(i + 1)
    jax.block_until_ready(metrics)
    return compile_s, (time.perf_counter() - begin) / steps
