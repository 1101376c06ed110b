"""The privileged-state oracles: label a pair by a heuristic on the states behind its images, never the pixels.

Robodesk (`OracleAnnotator`): each state is restored in the Robodesk environment, its features are read from
`env.scene()` and the State's interaction flags (`interest.state_features`), and the two frames' heuristic scores
are compared (`interest.compare`): the same heuristic, score and tie margin that give the pair sampler's ground
truth. Domains whose worlds cannot be restored (`ScoreOracle`): the pairs carry the states stored at each step
(MiniHack: the features the env computed from inventory, screen and messages; the toy: the position), and the
domain's heuristic scores those (`sensei_jax.domains`).
"""

from __future__ import annotations

import numpy as np

from sensei_jax.envs.robodesk import interest
from sensei_jax.envs.robodesk.config import InterestConfig


class ScoreOracle:
    """A domain's heuristic on the states stored with each frame (`sensei_jax.domains`): MiniHack's task features
    (key in the inventory beats none, and so on), the toy's position. `scores(states [M, S]) -> [M]` and
    `compare(score_first, score_second) -> (prob_first, label)` are the same functions that give the pair
    sampler's ground truth."""

    name = "oracle"

    def __init__(self, score, compare, domain: str):
        self.scores, self.compare, self.domain = score, compare, domain

    def annotate(self, images, states=None):
        frames = pair_frames(states, f"the {self.domain} oracle needs the stored states of the pairs")
        score = np.asarray(self.scores(frames)).reshape(-1, 2)
        return self.compare(score[:, 0], score[:, 1])


class OracleAnnotator(ScoreOracle):
    """Robodesk's oracle: SENSEI's heuristic on the simulator states behind each image, restored in `env` (a
    Robodesk; build it with render_images=False, the oracle needs no pixels)."""

    def __init__(self, cfg: InterestConfig, env, batch: int = 64):
        self.decode = interest.make_state_decoder(env, batch)  # states [M, S] -> the heuristic's features
        super().__init__(lambda states: interest.interest(self.decode(states), cfg)["score"],
                         lambda a, b: interest.compare(a, b, cfg), "Robodesk")
        self.cfg = cfg


def pair_frames(states, missing: str) -> np.ndarray:
    """The pairs' states [N, 2, S] checked and flattened to one row per frame [2N, S] (pair i: rows 2i, 2i+1);
    `missing` is the error's message when there are none."""
    if states is None:
        raise ValueError(f"{missing} (states [N, 2, S])")
    states = np.asarray(states, np.float32)
    if states.ndim != 3 or states.shape[1] != 2:
        raise ValueError(f"states must be [N, 2, S], got {states.shape}")
    return states.reshape(-1, states.shape[-1])
