"""Stage `collect`: exploration rollouts with the vectorized env, stored as frames and simulator states.

MiniHack (`run.domain: minihack`) stores the native 80x80 crop and the oracle's features of every step instead
(NetHack cannot restore a world: the pairs stage copies frames instead of re-rendering them); its `random` policy
draws uniform discrete actions, and a resumed collection keeps its finished chunks and goes on from fresh
episodes. The rest of this docstring describes Robodesk.

SENSEI drew its annotation pairs from the replay of Plan2Explore runs (3.2M transitions). Two policies:
  `collect.policy: random` (default) a smooth random walk in action space, which already reaches the objects on a
      desk this small;
  `collect.policy: p2x` a Plan2Explore agent (DreamerV3 with the disagreement reward only, as SENSEI used), built
      as the `explore` stage builds its p2x agent (sections `dreamer` and `explore`, behaviour forced to p2x, no
      task heads) and run by the DreamerV3 loop (`Trainer`), which trains it while it collects; the loop's
      `record_fn` hands back exactly `step_record` of the state each action led to.
Every step of every world is stored either way, so that the pair sampler can re-render any frame later.

Writes `run_dir/collect/` in the format of `collection.py` (chunk_*.npz of frames, states, flags and heuristic
inputs; carry_*.npz for the random walk; meta.json), and for p2x also `agent/`: the loop's checkpoints/ (agent,
replay, envs, counters; one, saved after every chunk), metrics.jsonl and TensorBoard events.

A chunk is the unit of resumption. random: the stage restarts after the last complete chunk, from the saved carry,
and the per-step random keys depend only on (seed, chunk, step), so a resumed collection equals an uninterrupted
one. One chunk is one compiled `lax.scan` whose records reach the host once, at its end; the worlds are split over
the local devices (`shard_map` over a `data` axis, `env.num_envs` a multiple of the device count), and each
device draws its worlds' rows of the same per-step random targets, so the walk does not depend on the device
count. The carry holds the sharded env state, so a collection resumes on the device count it started with.
p2x: one compiled collection call of the loop is one chunk (`collect_steps = collect.chunk_steps`) and the
loop checkpoints after each, so a killed run resumes from the checkpoint of the last chunk whose training finished
(agent, replay, envs and keys, so it repeats the same steps). A chunk already on disk is never rewritten: if the
process died between writing a chunk and checkpointing after it, that chunk is collected again by the resumed
agent and the file on disk is kept (the loop repeats steps exactly, so both are the same). Without a checkpoint
the agent starts afresh (e.g. after deleting agent/), still keeping the chunks found; use `--force collect` to
redo a collection from scratch.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from sensei_jax import files, progress
from sensei_jax.config import Config
from sensei_jax.envs.protocol import RestorableEnv, host_errors
from sensei_jax.domains import Domain
from sensei_jax.envs.robodesk import device_blocks
from sensei_jax.pipeline import rundir
from sensei_jax.pipeline.collection import (carry_path, chunk_path, complete_chunks, interaction_totals, load_carry,
                                            load_chunk, save_carry, write_chunk)
from sensei_jax.pipeline.envs import compiled_once, domain, make_env, num_envs as world_count


# ----------------------------------------------------------------------------------------------------------------
# What is stored per step.


def record_fn(cfg: Config):
    """(what one step stores, its keys): the run's domain's `record` and `chunk_keys`."""
    found = domain(cfg)
    return found.record, found.chunk_keys


# ----------------------------------------------------------------------------------------------------------------
# The random-walk policy, one compiled chunk over the worlds of all local devices.


def local_mesh(num_envs: int) -> Mesh:
    """A 1-D `data` mesh over this process's devices, over which `num_envs` worlds are split evenly."""
    devices = jax.local_devices()
    if num_envs % len(devices):
        raise ValueError(f"env.num_envs={num_envs} cannot be split evenly over the {len(devices)} local devices "
                         f"({devices[0].platform}); choose a multiple of {len(devices)}")
    return Mesh(np.array(devices), ("data",))


def build_reset(env: RestorableEnv, num_envs: int, mesh: Mesh):
    """key -> the `num_envs` worlds of `env.reset_batch(key, num_envs)`, each device resetting its own block."""
    local_envs = num_envs // mesh.shape["data"]
    reset = jax.shard_map(lambda key: env.reset_batch(key, local_envs), mesh=mesh, in_specs=P(), out_specs=P("data"))
    return jax.jit(reset)


def build_chunk(env: RestorableEnv, record, action_smoothing: float, chunk_steps: int, mesh: Mesh):
    """`chunk_steps` policy steps of all worlds in one compiled scan:
    (states [B], actions f32 [B, A], chunk_key) -> (states, actions, records [T, B, ...]).

    Step t's random targets are uniform(fold_in(chunk_key, t), [B, A]) for the whole batch; each device computes
    them and keeps its worlds' rows (B x A floats, negligible next to a physics step), so the values do not
    depend on how the worlds are split."""

    def local_chunk(states, actions, chunk_key):
        local_envs = actions.shape[0]
        first_world = device_blocks.block_index() * local_envs
        all_envs = local_envs * device_blocks.block_count()

        def step(carry, t):
            states, actions = carry
            target = jax.random.uniform(jax.random.fold_in(chunk_key, t), (all_envs, actions.shape[1]),
                                        minval=-1.0, maxval=1.0)
            target = jax.lax.dynamic_slice_in_dim(target, first_world, local_envs)
            actions = (1.0 - action_smoothing) * actions + action_smoothing * target
            states = env.step(states, actions)
            return (states, actions), record(env, states)

        (states, actions), records = jax.lax.scan(step, (states, actions), jnp.arange(chunk_steps))
        return states, actions, records

    chunk = jax.shard_map(local_chunk, mesh=mesh, in_specs=(P("data"), P("data"), P()),
                          out_specs=(P("data"), P("data"), P(None, "data")))
    return jax.jit(chunk)


def build_episodic_chunk(env, found: Domain, chunk_steps: int):
    """The random policy of a domain whose worlds cannot be restored: `chunk_steps` steps of the domain's random
    actions (`Domain.random_actions`: MiniHack's uniform discrete actions, the toy's uniform [-1, 1]) in one
    compiled scan. A finished world restarts on the next step, by the env itself (`auto_reset`, MiniHack's NetHack
    worlds stepping in worker processes through a host callback) or here. (states, chunk_key) -> (states,
    records [T, B, ...])."""
    auto_reset = getattr(env, "auto_reset", False)
    restart = getattr(env, "select_worlds", None) or (lambda mask, fresh, current: jax.tree.map(
        lambda f, c: jnp.where(mask.reshape(mask.shape + (1,) * (c.ndim - 1)), f, c), fresh, current))

    def chunk(states, chunk_key):
        def step(states, t):
            key = jax.random.fold_in(chunk_key, t)
            num = states.reward.shape[0]
            if not auto_reset:
                fresh = env.reset_worlds(jax.random.split(jax.random.fold_in(key, 1), num))
                states = restart(states.done, fresh, states)
            states = env.step(states, found.random_actions(key, num, env.action_size))
            return states, found.record(env, states)

        return jax.lax.scan(step, states, jnp.arange(chunk_steps))

    return jax.jit(chunk)


def collect_episodic(cfg: Config, env, out: Path) -> dict[str, Any]:
    """The random policy of a domain whose worlds cannot be restored, chunk by chunk (`build_episodic_chunk`): a
    resumed collection keeps the finished chunks and goes on from fresh episodes (seeded by the chunk it resumes
    at). Returns meta.json."""
    found = domain(cfg)
    num_envs, chunk_steps = found.num_envs(cfg), cfg.collect.chunk_steps
    num_chunks = -(-cfg.collect.steps // chunk_steps)
    seed_key = jax.random.fold_in(jax.random.key(cfg.run.seed), 1)  # stream 1: collection
    done_chunks = 0
    while chunk_path(out, done_chunks).exists():
        done_chunks += 1
    with host_errors(env):
        states = env.reset_batch(jax.random.fold_in(seed_key, 10_000 + done_chunks), num_envs)
    chunk_fn = compiled_once(env, f"episodic_chunk/{chunk_steps}",
                             lambda: build_episodic_chunk(env, found, chunk_steps))
    bar = progress.bar(num_chunks * chunk_steps * num_envs, desc="collect", unit="env step",
                       initial=done_chunks * chunk_steps * num_envs)
    seconds, stepped, record_shapes = 0.0, 0, None
    for chunk in range(done_chunks, num_chunks):
        start = time.time()
        with host_errors(env):  # a crashed worker raises its own error, not the runtime's
            states, records = chunk_fn(states, jax.random.fold_in(seed_key, chunk + 1))
            chunk_data = {k: np.asarray(v) for k, v in jax.device_get(records).items()}
        if chunk > done_chunks:  # the first chunk of a process compiles
            seconds += time.time() - start
            stepped += chunk_steps * num_envs
        record_shapes = {k: list(v.shape) for k, v in chunk_data.items()}
        write_chunk(out, chunk, chunk_data, found.chunk_keys)
        bar.update(chunk_steps * num_envs)
        bar.set_postfix(chunk=f"{chunk + 1}/{num_chunks}")
    bar.close()
    meta = _meta(cfg, out, num_chunks, record_shapes, env)
    if stepped:
        meta["env_steps_per_second"] = stepped / max(seconds, 1e-9)
    return meta


def run_stage(cfg: Config, run_dir: Path) -> dict[str, Any]:
    out = Path(run_dir) / "collect"
    out.mkdir(parents=True, exist_ok=True)
    env = make_env(cfg)
    if cfg.collect.policy == "p2x":
        meta = collect_p2x(cfg, env, out)
    elif domain(cfg).restorable:
        meta = collect_random(cfg, env, out)
    else:
        meta = collect_episodic(cfg, env, out)
    files.write_json(out / "meta.json", meta)
    transitions = meta["num_chunks"] * meta["chunk_steps"] * meta["num_envs"]
    interactions = interaction_totals(out)
    rate = meta.get("env_steps_per_second")
    summary = {"transitions": transitions, "env_steps_per_second": None if rate is None else round(rate, 1),
               "interactions": interactions}
    if "train_steps" in meta:
        summary["train_steps"] = meta["train_steps"]
    return summary


def _meta(cfg: Config, out: Path, num_chunks: int, record_shapes: dict | None, env=None) -> dict[str, Any]:
    found = domain(cfg)
    meta = {"num_chunks": num_chunks, "chunk_steps": cfg.collect.chunk_steps, "policy": cfg.collect.policy,
            **found.collection_meta(cfg, env)}
    if record_shapes is None:
        record_shapes = {k: list(v.shape) for k, v in load_chunk(out, 0, found.chunk_keys).items()}
    meta["chunk_shapes"] = record_shapes
    return meta


def collect_random(cfg: Config, env: RestorableEnv, out: Path) -> dict[str, Any]:
    """The smooth random walk, resumed exactly from the carry of the last complete chunk. Returns meta.json."""
    num_envs = cfg.env.num_envs
    chunk_steps = cfg.collect.chunk_steps
    num_chunks = -(-cfg.collect.steps // chunk_steps)
    seed_key = jax.random.fold_in(jax.random.key(cfg.run.seed), 1)  # stream 1: collection
    mesh = local_mesh(num_envs)
    devices = mesh.shape["data"]

    worlds, replicated = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
    reset = compiled_once(env, f"reset/{num_envs}/{devices}", lambda: build_reset(env, num_envs, mesh))
    states = reset(jax.device_put(jax.random.fold_in(seed_key, 0), replicated))
    actions = jax.device_put(jnp.zeros((num_envs, env.action_size), jnp.float32), worlds)
    done_chunks = complete_chunks(out)
    if done_chunks:
        restored, actions = load_carry(carry_path(out, done_chunks - 1), states)
        states = jax.tree.map(lambda x, like: jax.device_put(x, like.sharding), restored, states)
        actions = jax.device_put(actions, worlds)
    smoothing = cfg.collect.action_smoothing
    chunk_fn = compiled_once(env, f"chunk/{smoothing}/{chunk_steps}/{num_envs}/{devices}",
                             lambda: build_chunk(env, domain(cfg).record, smoothing, chunk_steps, mesh)
                             .lower(states, actions, jax.device_put(seed_key, replicated)).compile())

    total = num_chunks * chunk_steps * num_envs
    bar = progress.bar(total, desc="collect", unit="env step", initial=done_chunks * chunk_steps * num_envs)
    seconds, stepped = 0.0, 0  # compiled above, so every chunk counts towards the rate
    record_shapes = None
    for chunk in range(done_chunks, num_chunks):
        start = time.time()
        chunk_key = jax.device_put(jax.random.fold_in(seed_key, chunk + 1), replicated)
        states, actions, records = chunk_fn(states, actions, chunk_key)
        chunk_data = {k: np.asarray(v) for k, v in jax.device_get(records).items()}
        seconds += time.time() - start
        stepped += chunk_steps * num_envs
        record_shapes = {k: list(chunk_data[k].shape) for k in domain(cfg).chunk_keys}
        write_chunk(out, chunk, chunk_data, domain(cfg).chunk_keys)
        save_carry(carry_path(out, chunk), states, actions)
        bar.update(chunk_steps * num_envs)
        bar.set_postfix(chunk=f"{chunk + 1}/{num_chunks}")
    bar.close()

    meta = _meta(cfg, out, num_chunks, record_shapes, env)
    if stepped:
        meta["env_steps_per_second"] = stepped / max(seconds, 1e-9)
    return meta


def collect_p2x(cfg: Config, env: RestorableEnv, out: Path) -> dict[str, Any]:
    """Plan2Explore (disagreement only) collecting and training at once, on the DreamerV3 loop; one loop collection
    call per chunk, a checkpoint after each (see the module docstring). Returns meta.json."""
    from sensei_jax.explore.explorer import Explorer
    from sensei_jax.metrics import MetricsWriter

    num_envs, chunk_steps = world_count(cfg), cfg.collect.chunk_steps
    num_chunks = -(-cfg.collect.steps // chunk_steps)
    record_step, keys = record_fn(cfg)
    per_chunk = chunk_steps * num_envs  # env steps of all worlds in one chunk (the loop counts these)
    total = num_chunks * per_chunk
    settings = dataclasses.replace(cfg.explore.with_preset("p2x"), steps=total, task_heads=())
    # The train section's schedule, with one loop collection call per chunk and a checkpoint after each.
    schedule = dataclasses.replace(cfg.train, collect_steps=chunk_steps, save_every=per_chunk)
    explorer = Explorer(settings, cfg.dreamer, env, num_envs, reward_model=None, seed=cfg.run.seed, tasks=(),
                        train=schedule)
    agent_dir = out / "agent"

    def record(step, next_env, hook_args):  # the state the action led to, before any reset: as the random walk
        return record_step(env, next_env)

    trainer = explorer.make_trainer(agent_dir, record_fn=record)
    record_shapes: dict[str, list[int]] | None = None
    timing = {"start": None, "stepped": 0}

    def on_collect(outputs: dict[str, Any], first_step: int) -> None:
        nonlocal record_shapes
        if first_step % per_chunk:
            raise rundir.StageError(f"the collection agent in {agent_dir} resumed at env step {first_step}, not at "
                                    f"a chunk boundary ({per_chunk} env steps): rerun with --force collect")
        chunk = first_step // per_chunk
        records = outputs["records"]
        chunk_data = {k: np.asarray(records[k]) for k in keys}
        record_shapes = {k: list(v.shape) for k, v in chunk_data.items()}
        if not chunk_path(out, chunk).exists():  # a finished chunk is never rewritten
            write_chunk(out, chunk, chunk_data, keys)
        if timing["start"] is None:
            timing["start"] = time.time()  # measured from the second chunk on (the first one compiles)
        else:
            timing["stepped"] += per_chunk

    writer = MetricsWriter(agent_dir)
    try:
        result = trainer.run(total, writer, on_collect=on_collect)
    finally:
        writer.close()
    meta = _meta(cfg, out, num_chunks, record_shapes, env)
    if timing["stepped"]:
        meta["env_steps_per_second"] = timing["stepped"] / max(time.time() - timing["start"], 1e-9)
    meta["train_steps"] = int(result["train_steps"])
    meta["train_metrics"] = {k: float(v) for k, v in result["train_metrics"].items() if k.startswith("loss/")}
    meta["agent"] = {"behaviour": "p2x", "checkpoint": str(agent_dir / "checkpoints")}
    return meta


# ----------------------------------------------------------------------------------------------------------------
# CLI.


def rate_text(summary: dict[str, Any]) -> str:
    """The collection's rate for messages; none is measured where every chunk stepped while compiling (a collection
    of one chunk that was not compiled ahead)."""
    rate = summary.get("env_steps_per_second")
    return "rate not measured: its only chunk compiled" if rate is None else f"{rate} env steps/s"


def main(args: argparse.Namespace, cfg: Config) -> int:
    summary = rundir.run_single_stage("collect", cfg, run_stage, force=args.force)
    print(f"collected {summary['transitions']} transitions ({rate_text(summary)}) in "
          f"{cfg.run_dir / 'collect'}; interactions {summary['interactions']}")
    return 0
