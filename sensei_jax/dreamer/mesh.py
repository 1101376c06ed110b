"""The loop's 1-D `data` mesh and the shardings of its state on it: worlds and replay streams split over devices,
everything else replicated."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from sensei_jax.dreamer.replay import Replay, ReplayState
from sensei_jax.dreamer.train_config import TrainConfig


def make_mesh(cfg: TrainConfig) -> Mesh:
    """The 1-D `data` mesh of a run: the first `cfg.devices` devices of every process (0: all), which must divide
    the worlds and the batch evenly. A job of several processes always spans all of its devices."""
    devices = jax.devices()
    if cfg.devices:
        if cfg.devices > len(devices):
            raise ValueError(f"train.devices is {cfg.devices}, but only {len(devices)} devices exist")
        if jax.process_count() > 1 and cfg.devices != len(devices):
            raise ValueError(f"train.devices is {cfg.devices}, but a job of {jax.process_count()} processes spans "
                             f"all of its {len(devices)} devices (set train.devices to 0)")
        devices = devices[: cfg.devices]
    if cfg.num_envs % len(devices) or cfg.batch_size % len(devices):
        raise ValueError(f"train.num_envs ({cfg.num_envs}, worlds over all processes) and train.batch_size "
                         f"({cfg.batch_size}) must divide by the number of devices ({len(devices)}), which each step "
                         "an equal block of worlds and sample an equal share of the batch")
    return Mesh(np.asarray(devices), ("data",))


def shardings(mesh: Mesh, specs: Any) -> Any:
    """NamedShardings on `mesh` for a pytree of PartitionSpecs (or a prefix of one)."""
    return jax.tree.map(lambda spec: NamedSharding(mesh, spec), specs, is_leaf=lambda x: isinstance(x, P))


def replay_specs(replay: Replay) -> ReplayState:
    """The replay state's layout: every stored array split by stream over `data`, the counters replicated."""
    return ReplayState(data={k: P("data") for k in replay.specs}, position=P(), filled=P())
