"""Orbax checkpoints of pytrees (params, optimizer state, counters, RNG keys), with resume and best-by-metric."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp


class Checkpointer:
    """Numbered checkpoints under `directory`. Keeps the newest `max_to_keep`, or with `best_metric` the best ones.

    Saves are synchronous and atomic (orbax writes to a temporary folder and renames), so a killed process leaves
    the previous checkpoint intact. In a job of several processes every process calls `save` and `restore`
    (orbax coordinates them; each writes and reads the blocks of its own devices) on a folder they all see.
    """

    def __init__(self, directory: str | Path, max_to_keep: int | None = 2, best_metric: str | None = None,
                 best_mode: str = "max"):
        self.directory = Path(directory).resolve()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            best_fn=(lambda metrics: float(metrics[best_metric])) if best_metric else None,
            best_mode=best_mode,
            enable_async_checkpointing=False,
            create=True,
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def save(self, step: int, tree: Any, metrics: dict[str, float] | None = None) -> None:
        self._manager.save(int(step), args=ocp.args.StandardSave(tree), metrics=metrics, force=True)
        self._manager.wait_until_finished()

    @property
    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    @property
    def best_step(self) -> int | None:
        return self._manager.best_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def restore(self, step: int | None = None, like: Any = None) -> Any:
        """Restores `step` (default the latest). `like` is a pytree of the same structure giving shapes/dtypes:
        a jax array's leaf is read straight into that array's sharding (each process reads its own devices'
        blocks, nothing is assembled on one device); a numpy leaf comes back as numpy."""
        step = self.latest_step if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        if like is None:
            return self._manager.restore(step)
        abstract = jax.tree.map(_abstract, like)
        return self._manager.restore(step, args=ocp.args.StandardRestore(abstract))

    def close(self) -> None:
        self._manager.close()


def _abstract(x: Any) -> Any:
    if isinstance(x, jax.Array):
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
    if isinstance(x, np.generic):
        return np.asarray(x)
    return x
