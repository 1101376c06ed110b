"""The privileged-state oracles: label a pair by a heuristic on the states behind its images, never the pixels.

Robodesk (`OracleAnnotator`): each state is restored in the Robodesk environment, its features are read from
`env.scene()` and the State's interaction flags (`interest.state_features`), and the two frames' heuristic scores
are compared (`interest.compare`): the same heuristic, score and tie margin that give the pair sampler's ground
truth. MiniHack (`MiniHackOracle`): NetHack states cannot be restored, so the pairs carry the features the env
computed from inventory, screen and messages at each step, and the task's heuristic scores those
(`envs.minihack.tasks`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from sensei_jax.envs.robodesk import interest
from sensei_jax.envs.robodesk.config import InterestConfig


def make_state_decoder(env, batch: int = 64):
    """A function: simulator states float32 [M, S] -> `interest.state_features` as numpy arrays [M, ...], by
    restoring the states in `env` (a Robodesk; build it with render_images=False, the oracle needs no pixels).
    Compiled once for `batch` worlds; longer inputs run in chunks, the last one padded."""
    compiled = jax.jit(lambda physics: interest.state_features(env, env.restore(physics)))

    def decode(physics_states: np.ndarray) -> dict[str, np.ndarray]:
        physics_states = np.asarray(physics_states, np.float32)
        pieces = []
        for start in range(0, len(physics_states), batch):
            chunk = physics_states[start:start + batch]
            count = len(chunk)
            if count < batch:  # one compiled shape
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - count, 0)])
            out = jax.device_get(compiled(jnp.asarray(chunk)))
            pieces.append({k: v[:count] for k, v in out.items()})
        return {k: np.concatenate([p[k] for p in pieces]) for k in pieces[0]}

    return decode


class OracleAnnotator:
    """SENSEI's heuristic on the simulator states behind each image (restored in the environment)."""

    name = "oracle"

    def __init__(self, cfg: InterestConfig, env, batch: int = 64):
        self.cfg = cfg
        self.decode = make_state_decoder(env, batch)

    def scores(self, states: np.ndarray) -> np.ndarray:
        """states [M, S] -> heuristic score float32 [M]."""
        return interest.interest(self.decode(states), self.cfg)["score"]

    def annotate(self, images, states=None):
        frames = pair_frames(states, "the oracle annotator needs the simulator states of the pairs")
        score = self.scores(frames).reshape(-1, 2)
        return interest.compare(score[:, 0], score[:, 1], self.cfg)


class MiniHackOracle:
    """The MiniHack task heuristic (`envs.minihack.tasks.interest_score`) on the features stored with each frame:
    key in the inventory beats none, and so on."""

    name = "oracle"

    def __init__(self, task: str):
        from sensei_jax.envs.minihack import tasks

        self.task, self.tasks = task, tasks

    def annotate(self, images, states=None):
        frames = pair_frames(states, "the MiniHack oracle needs the stored features of the pairs")
        score = np.asarray(self.tasks.interest_score(frames, self.task)).reshape(-1, 2)
        return self.tasks.compare(score[:, 0], score[:, 1])


def pair_frames(states, missing: str) -> np.ndarray:
    """The pairs' states [N, 2, S] checked and flattened to one row per frame [2N, S] (pair i: rows 2i, 2i+1);
    `missing` is the error's message when there are none."""
    if states is None:
        raise ValueError(f"{missing} (states [N, 2, S])")
    states = np.asarray(states, np.float32)
    if states.ndim != 3 or states.shape[1] != 2:
        raise ValueError(f"states must be [N, 2, S], got {states.shape}")
    return states.reshape(-1, states.shape[-1])
