"""The update: compiled train steps over replay, and the open-loop report on replayed windows.

A train step samples a batch of windows, each device from its own replay streams (`Replay.sample_sharded`), runs
`agent.train` with the agent state replicated (XLA adds the gradient all-reduce) and, with `train.replay_context`
1, writes the fresh posteriors back into replay as the context of later windows.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec as P

from sensei_jax.dreamer.agent import Agent
from sensei_jax.dreamer.mesh import replay_specs, shardings
from sensei_jax.dreamer.replay import Replay, ReplayState
from sensei_jax.dreamer.train_config import TrainConfig

LATENT_KEYS = ("deter", "stoch")


def windows_to_batch(windows: Mapping[str, jax.Array], context: int) -> dict[str, Any]:
    """The agent's batch from replayed windows [B, context + T, ...]: the last T steps, and with `context` 1 the
    stored latent and action of the first step as 'context' (the carry the window starts from)."""
    batch = {k: v[:, context:] for k, v in windows.items() if k not in LATENT_KEYS}
    if context:
        batch["context"] = {"deter": windows["deter"][:, 0], "stoch": windows["stoch"][:, 0],
                            "action": windows["action"][:, 0]}
    return batch


class Update:
    """Trains the agent on replay: `train_step` (one update) and `report` (prediction videos), both compiled with
    the replay sharded over `data` and everything else replicated."""

    def __init__(self, cfg: TrainConfig, agent: Agent, replay: Replay, mesh: Mesh):
        self.cfg, self.agent, self.replay, self.mesh = cfg, agent, replay, mesh
        whole, stored = shardings(mesh, P()), shardings(mesh, replay_specs(replay))
        self._train = jax.jit(self._train_step, donate_argnums=(0, 1), in_shardings=(whole, stored, whole, whole),
                              out_shardings=(whole, stored, whole))
        self._report = jax.jit(self._report_videos, in_shardings=(whole, stored, whole), out_shardings=whole)

    def train_step(self, agent_state: Any, replay_state: ReplayState, key: jax.Array,
                   step: int) -> tuple[Any, ReplayState, dict[str, jax.Array]]:
        """One compiled update: windows sampled with `key` (a raw PRNG key [2]) folded with `step`, one
        `agent.train`, the fresh latents written back. `agent_state` and `replay_state` are donated. Returns
        (agent_state, replay_state, metrics on the devices)."""
        return self._train(agent_state, replay_state, key, np.int32(step))

    def lower_train_step(self, agent_state: Any, replay_state: ReplayState) -> jax.stages.Lowered:
        """`train_step`'s program lowered for the shapes, dtypes and shardings of `agent_state` and `replay_state`
        (arrays or `jax.ShapeDtypeStruct`s, e.g. `Trainer.abstract_state()`), without running it: `.compile()` it
        to check that a configuration compiles and read its `memory_analysis()`."""
        return self._train.lower(agent_state, replay_state, jax.ShapeDtypeStruct((2,), jnp.uint32),
                                 jax.ShapeDtypeStruct((), jnp.int32))

    def report(self, agent_state: Any, replay_state: ReplayState, key: jax.Array) -> dict[str, jax.Array]:
        """`agent.report`'s videos on `train.video_sequences` replayed windows drawn with the raw key `key`."""
        return self._report(agent_state, replay_state, key)

    def _train_step(self, agent_state, replay_state, key, step):
        context = self.cfg.replay_context
        k_sample, k_train = jax.random.split(jax.random.fold_in(key, step))
        windows, (stream, slots) = self.replay.sample_sharded(replay_state, k_sample, self.mesh)
        batch = windows_to_batch(windows, context)
        if not context:  # every window starts from the initial state: no latent to read or write back
            agent_state, metrics = self.agent.train(agent_state, batch, k_train)
            return agent_state, replay_state, metrics
        agent_state, metrics, latents = self.agent.train(agent_state, batch, k_train, return_latents=True)
        # The fresh posteriors become the context of later windows (the reference's replay.update).
        latents = {"deter": latents["deter"], "stoch": latents["stoch"]}
        replay_state = self._write_latents(replay_state, stream, slots[:, context:], latents)
        return agent_state, replay_state, metrics

    def _report_videos(self, agent_state, replay_state, key):
        k_sample, k_report = jax.random.split(key)
        count = self.cfg.video_sequences
        stream, slots = self.replay.window_indices(replay_state, k_sample, jnp.arange(count), count)
        windows = self.replay.gather_sharded(replay_state, stream, slots, self.mesh)
        return self.agent.report(agent_state, windows_to_batch(windows, self.cfg.replay_context), k_report)

    def _write_latents(self, replay_state, stream, slots, latents):
        """Writes latents back into each device's own streams (indices from `sample_sharded` are shard-local)."""

        def local(data, stream, slots, values):
            data = dict(data)
            for k, v in values.items():
                data[k] = data[k].at[stream[:, None], slots].set(v.astype(data[k].dtype))
            return data

        keys = tuple(latents)
        fn = jax.shard_map(local, mesh=self.mesh,
                           in_specs=({k: P("data") for k in keys}, P("data"), P("data"), {k: P("data") for k in keys}),
                           out_specs={k: P("data") for k in keys}, check_vma=False)
        written = fn({k: replay_state.data[k] for k in keys}, stream, slots, latents)
        return replay_state.replace(data={**replay_state.data, **written})
