"""`Domain`: everything the pipeline asks of one environment family, in one object.

A domain answers, for a run config `cfg` (read by attribute; nothing here imports the config loader):
  which config section holds its env (`section`), how to build the env (`build_env`) and how many worlds it runs
  (`num_envs`); which tasks its env reports success for (`success_names`); what a collected step stores
  (`record`, `chunk_keys`, `collection_meta`) and how to draw random actions for it (`random_actions`); the
  interest heuristic that plans annotation pairs and gives their ground truth (`interest_keys`, `frame_labels`,
  `compare`); its oracle (`oracle_scores`, `oracle_fingerprint`); the resolution of the view the reward model
  scores (`reward_view_size`) and of the frames it stores (`frame_size`); how its report groups interaction flags
  (`figure_objects`, `exploration_text`, `episode_measure`); and what the config must agree on (`check`).

Two capabilities decide how a stage treats a domain, never its name: `restorable` (the env restores a stored
simulator state, so the pairs stage re-renders frames at the annotator's resolution and the collection resumes
from a saved carry; otherwise frames are copied as collected and a resumed collection starts fresh episodes) and
`uses_warp` (the env steps MJX-Warp, so the device check asks for a CUDA device where Warp needs one).

Implementations live in `sensei_jax/domains/<name>.py`, each exporting `DOMAIN`; `sensei_jax.domains.DOMAINS` maps
`run.domain` to them. Methods import jax and the env when called, so naming a domain stays cheap.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, Mapping

import numpy as np


class Domain(abc.ABC):
    """The defaults that hold for most domains; subclasses set the class attributes and implement the abstract
    methods (a domain missing one cannot be instantiated). `StoredStateDomain` is the base of domains whose stored
    states score frames directly."""

    name: str = ""
    label: str = ""  # how messages and the report name it
    section: str = ""  # the config section of its env
    restorable: bool = False
    uses_warp: bool = False
    env_tools: bool = False  # the `env info` / `env rollout` tools show this domain's env (`pipeline/env_tools.py`)
    chunk_keys: tuple[str, ...] = ("image", "state", "interaction", "success", "reward", "done", "episode_step")
    interest_keys: tuple[str, ...] = ("state",)  # what `frame_labels` reads from a collection
    # Bars of the report's interaction figure: (name, flags summed). None: one bar per flag the runs report.
    figure_objects: tuple[tuple[str, tuple[str, ...]], ...] | None = None
    episode_measure: bool = False  # the report also counts finished episodes in which each flag held
    exploration_text: str = "Steps in which each flag held, summed over the run."
    counted: str = "steps with the flag set"  # what an interaction count counts, in the run's summary

    # --- the env

    def env_config(self, cfg: Any) -> Any:
        return getattr(cfg, self.section)

    def describe(self, cfg: Any, markdown: bool = False) -> str:
        """The domain as messages name it, e.g. 'MiniHack keyroom' (`markdown`: names in code spans)."""
        return self.label

    def num_envs(self, cfg: Any) -> int:
        return int(self.env_config(cfg).num_envs)

    def env_key(self, cfg: Any, reward_view: bool, overrides: Mapping[str, Any]) -> Any:
        """What decides the built env: equal keys share one env within a process (`pipeline.envs.make_env`)."""
        return [self.name, dataclasses.asdict(self.env_config(cfg)), cfg.run.seed, reward_view, dict(overrides)]

    @abc.abstractmethod
    def build_env(self, cfg: Any, reward_view: bool = False, **overrides):
        """The env of this domain for run config `cfg` (`overrides`: keyword arguments of its constructor)."""

    @abc.abstractmethod
    def success_names(self, cfg: Any) -> tuple[str, ...]:
        """The tasks whose success the env reports, read from the domain's task tables without building it."""

    def agent_image_size(self, cfg: Any) -> int:
        return int(self.env_config(cfg).image_size)

    def frame_size(self, cfg: Any) -> int:
        """Side of the frames a collection stores (what a non-restorable domain's pairs show)."""
        return self.reward_view_size(cfg) or self.agent_image_size(cfg)

    def reward_view_size(self, cfg: Any) -> int | None:
        """Side of the reward view (`reward_image`) the reward model scores in this domain's env, or None: the
        model scores obs['image'], resized inside the model to reward.image_size."""
        return None

    def check(self, cfg: Any) -> str | None:
        """What the config's sections disagree on for this domain, naming the keys; None when they agree."""
        size, trained = self.reward_view_size(cfg), cfg.reward.image_size
        if size is not None and size != trained:
            return (f"reward.image_size ({trained}) must be {size} with run.domain {self.name}: the reward model "
                    f"scores the env's {size}x{size} reward view")
        return None

    # --- collection

    @abc.abstractmethod
    def record(self, env, states) -> dict:
        """What one collected step stores, arrays [B, ...] under `chunk_keys` (traced inside the collection)."""

    def collection_meta(self, cfg: Any, env) -> dict[str, Any]:
        """The domain's part of the collection's meta.json (flag and task names, frame size, camera)."""
        import jax

        probe = jax.eval_shape(lambda k: env.reset_batch(k, 1), jax.random.key(0))
        return {"domain": self.name, "num_envs": self.num_envs(cfg),
                "interaction_names": sorted(probe.info.get("interaction_flags", {})),
                "success_names": sorted(probe.info.get("success", {})), "image_size": self.frame_size(cfg),
                "camera": "frame"}

    def random_actions(self, key, num_envs: int, action_size: int):
        """The random collection policy's actions of one step, f32 [num_envs, action_size]: uniform in [-1, 1]."""
        import jax

        return jax.random.uniform(key, (num_envs, action_size), minval=-1.0, maxval=1.0)

    # --- interest: pair planning, ground truth and the oracle

    @abc.abstractmethod
    def frame_labels(self, features: Mapping[str, np.ndarray], cfg: Any) -> dict[str, np.ndarray]:
        """The heuristic's classes of collected frames: `score` [N], `good` [N] (worth pairing against `bad`),
        `bad` [N], from the collection's `interest_keys`."""

    @abc.abstractmethod
    def compare(self, score_first: np.ndarray, score_second: np.ndarray, cfg: Any) -> tuple[np.ndarray, np.ndarray]:
        """Scores of both frames of N pairs -> (prob_first float32 [N], label int8 [N]): the ground truth."""

    @abc.abstractmethod
    def oracle_scores(self, cfg: Any, env=None):
        """The oracle's scorer: stored states [M, S] of pair frames -> heuristic scores [M]
        (`annotators.oracle.ScoreOracle` compares them with `compare`). `env`: the run's env, where the domain needs
        one to read its states."""

    def oracle_fingerprint(self, cfg: Any) -> dict[str, Any]:
        """What decides the oracle's labels (the annotate stage redoes them when it changes)."""
        return {"domain": self.name, "env": dataclasses.asdict(self.env_config(cfg))}


class StoredStateDomain(Domain):
    """A domain whose stored states are the heuristic's features themselves (MiniHack's task features, the toy's
    position): the oracle scores them with `frame_scores`, no env needed."""

    @abc.abstractmethod
    def frame_scores(self, states: np.ndarray, cfg: Any) -> np.ndarray:
        """The heuristic score float32 [M] of frames from their stored states [M, S]."""

    def oracle_scores(self, cfg: Any, env=None):
        return lambda states: self.frame_scores(np.asarray(states, np.float32), cfg)
