"""The environment contract: what the DreamerV3 Trainer, the collect stage and the oracle ask of an env.

Envs are functional and batched, in the style of MuJoCo Playground and Brax: `reset_batch` and `step` are pure
functions of their inputs, traced into the callers' compiled programs, and every leaf of a batched state has the
world axis first. `Env` is all the Trainer needs; `RestorableEnv` adds saving, restoring, re-rendering and
describing a world, which collection, pair sampling and the state oracle need. `Robodesk` satisfies both, the toy
`PointReach` and the host-stepped `MiniHack` satisfy `Env`.

Only types are imported, so reading the contract (or annotating with it) never imports jax; `host_errors`, the
one helper here, imports it when called.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Mapping, Protocol, runtime_checkable

if TYPE_CHECKING:
    import jax
    import numpy as np

    ObservationSpec = Mapping[str, "jax.ShapeDtypeStruct | tuple[tuple[int, ...], np.dtype]"]


@runtime_checkable
class EnvState(Protocol):
    """A batched env state: a pytree (e.g. a `flax.struct` dataclass) whose leaves have the world axis first.

    obs: {name: [N, ...]}, the observation of every world; the keys and per-world shapes are the env's
      `observation_spec()`. Images are uint8 [N, H, W, 3].
    reward: float32 [N], the reward received on arriving at this state.
    done: bool [N], the episode ended with this state (a time limit or a terminal state).
    info: {name: array or dict of arrays}, every leaf [N, ...]. Keys read when present: `is_terminal` bool [N]
      (`done` by a terminal state, not a time limit; absent means never), `interaction_flags` {name: bool [N]} and
      `success` {task: bool [N]} (logged by exploration, stored by collection), `episode_step` int32 [N].

    States may carry more (the physics data, PRNG keys); callers never look inside it.
    """

    obs: Mapping[str, Any]
    reward: Any
    done: Any
    info: Mapping[str, Any]


@runtime_checkable
class Env(Protocol):
    """A functional, batched environment: the part of the contract the DreamerV3 Trainer relies on.

    `reset_batch(key, num_envs)` starts `num_envs` worlds from one PRNG key (different worlds get different
    initial states); `step(state, actions)` advances all of them by one control step with float32 actions
    [N, action_size] in [-1, 1]. Both are traced inside the caller's `jax.jit`, so they must be pure and must not
    do per-step Python work. The env does not reset finished worlds unless it says so (`auto_reset` below): the
    caller resets them, which lets it see and store the final observation of an episode.

    Optional members, read with `getattr` and a default:
      auto_reset: bool (default False). True if `step` restarts finished worlds itself; `done` and `reward` then
        still belong to the step that ended an episode, while `obs` is already the first of the next one.
      select_worlds(mask bool [N], fresh, current) -> state: a per-world choice between two batched states, for
        states whose leaves are not all world-major (e.g. MJX-Warp buffers shared by all worlds); the Trainer's
        `select_worlds` (a `jnp.where` on world-major leaves) is used otherwise.
      reset_worlds(keys [N] PRNG keys) -> state: fresh worlds, world i from keys[i] alone. With it, the Trainer's
        worlds follow per-world random streams that do not depend on how worlds are split over devices; without
        it, each device resets its block of worlds with `reset_batch` from the key of the block's first world.
      host_stepped: bool (default False). True if the worlds live outside JAX (MiniHack's NetHack processes) and
        `step` reaches them through a host callback. Such an env must reset itself (`auto_reset`), its
        `reset_worlds(keys, worlds)` also takes the global world indices int32 [N] to restart, and its worlds
        cannot be checkpointed: a resumed run starts fresh episodes. When a host step fails, the env keeps its
        exception as `host_error`, which `host_errors(env)` below (used by the Trainer and the collect stage)
        raises in place of the runtime's callback error.
      discrete_actions: bool (default False). True if actions are one-hot float32 [N, action_size] (the env takes
        the argmax) for a discrete actor.

    Envs conventionally also offer a single-world `reset(key)`; nothing in the library requires it.
    """

    @property
    def action_size(self) -> int:
        """Length of the continuous action vector of one world."""

    def observation_spec(self) -> ObservationSpec:
        """{name: shape and dtype of one world's observation} as `jax.ShapeDtypeStruct` or (shape, dtype)."""

    def reset_batch(self, key: jax.Array, num_envs: int) -> EnvState:
        """`num_envs` fresh worlds from one PRNG key: a state with leaves [num_envs, ...]."""

    def step(self, state: EnvState, action: jax.Array) -> EnvState:
        """The batched state one control step later, under float32 actions [N, action_size]."""


@runtime_checkable
class RestorableEnv(Env, Protocol):
    """An `Env` whose worlds can be saved as flat vectors, restored, re-rendered and described.

    Collection stores `physics_state` next to every frame; pair sampling restores pairs of them to re-render at the
    annotator's resolution, and the state oracle restores them to read each world's `scene`. All four are pure and
    jittable; they take and return batched states (leaves [N, ...]).
    """

    def physics_state(self, state: EnvState) -> jax.Array:
        """float32 [N, S]: everything needed to restore each world and render it again."""

    def restore(self, physics_state: jax.Array) -> EnvState:
        """A state from `physics_state` float32 [N, S]; observations, flags and successes are recomputed."""

    def render(self, state: EnvState, camera: str | None = None, size: int | None = None) -> jax.Array:
        """uint8 [N, size, size, 3] from `camera` (the env's defaults when None)."""

    def scene(self, state: EnvState) -> Any:
        """What the env's task functions read about each world (for Robodesk a `tasks.Scene`, leaves [N, ...])."""


@contextlib.contextmanager
def host_errors(env: Env):
    """A failed host step (e.g. a crashed MiniHack worker) surfaces from a compiled call as the runtime's callback
    error; inside this context it is re-raised as the env's own exception (`env.host_error`), whose message says
    what happened. Other errors, and every error of an env that is not host-stepped, pass unchanged."""
    import jax

    try:
        yield
    except jax.errors.JaxRuntimeError as error:
        cause = getattr(env, "host_error", None) if getattr(env, "host_stepped", False) else None
        if cause is None:
            raise
        raise cause from error
