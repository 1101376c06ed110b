"""Host-side episode bookkeeping of an exploration: interaction, success and return sums per episode and per run.

Counts are steps in which an object moved (the env's interaction flags), as SENSEI counts them, summed over every
env step of the run and per finished episode.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class InteractionLog:
    """Per-episode interaction, success and return sums over chunks of steps of E envs.

    Counts are steps in which an object moved (the env's flags; Robodesk: |joint velocity| > 0.02, linear velocity
    only for the free bodies), as SENSEI counts them, summed over every env step
    of the run (`totals`) and per finished episode (`episodes`).
    """

    def __init__(self, interactions: tuple[str, ...], tasks: tuple[str, ...], num_envs: int):
        self.interactions, self.tasks, self.num_envs = tuple(interactions), tuple(tasks), num_envs
        self.totals = np.zeros(len(interactions), np.int64)
        self.success_totals = np.zeros(len(tasks), np.int64)
        self.current = {"interactions": np.zeros((num_envs, len(interactions)), np.int64),
                        "success": np.zeros((num_envs, len(tasks)), np.int64),
                        "return": np.zeros(num_envs, np.float64), "semantic": np.zeros(num_envs, np.float64),
                        "length": np.zeros(num_envs, np.int64)}
        self.episodes: list[dict[str, Any]] = []

    def add(self, chunk: dict[str, np.ndarray], first_step: int) -> list[dict[str, Any]]:
        """chunk: 'interaction' [S, E, K] bool, 'success' [S, E, J] bool, 'reward', 'semantic' [S, E] f32, 'done'
        [S, E] bool, for the policy steps first_step .. first_step + S - 1 (per env). Returns the finished
        episodes."""
        finished = []
        cur = self.current
        for s in range(chunk["done"].shape[0]):
            flags = chunk["interaction"][s].astype(np.int64)
            success = chunk["success"][s].astype(np.int64)
            cur["interactions"] += flags
            cur["success"] += success
            cur["return"] += chunk["reward"][s]
            cur["semantic"] += chunk["semantic"][s]
            cur["length"] += 1
            self.totals += flags.sum(0)
            self.success_totals += success.sum(0)
            for env in np.flatnonzero(chunk["done"][s]):
                episode = {
                    "env": int(env), "step": int(first_step + s + 1), "length": int(cur["length"][env]),
                    "return": float(cur["return"][env]), "semantic_return": float(cur["semantic"][env]),
                    "interactions": dict(zip(self.interactions, map(int, cur["interactions"][env]))),
                    "success": dict(zip(self.tasks, map(int, cur["success"][env]))),
                }
                finished.append(episode)
                for value in cur.values():
                    value[env] = 0
        self.episodes.extend(finished)
        return finished

    def totals_dict(self) -> dict[str, dict[str, int]]:
        return {"interactions": dict(zip(self.interactions, map(int, self.totals))),
                "success": dict(zip(self.tasks, map(int, self.success_totals)))}

    def state_dict(self) -> dict[str, Any]:
        return {"totals": self.totals.tolist(), "success_totals": self.success_totals.tolist(),
                "current": {k: v.tolist() for k, v in self.current.items()}, "episodes": self.episodes}

    def reset_current(self) -> None:
        """Forgets the episodes in flight (their envs restarted)."""
        for value in self.current.values():
            value[:] = 0

    def load(self, state: dict[str, Any]) -> None:
        """Restores `state_dict()` (the checkpoint restores the envs too, so episodes in flight go on)."""
        self.totals = np.asarray(state["totals"], np.int64)
        self.success_totals = np.asarray(state["success_totals"], np.int64)
        for name, value in self.current.items():
            value[:] = np.asarray(state["current"][name], value.dtype)
        self.episodes = list(state["episodes"])

