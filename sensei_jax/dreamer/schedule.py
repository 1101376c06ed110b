"""The schedule of a run: how many updates are owed after so many env steps, which steps act at random, and
when the loop logs, records videos and saves. Pure arithmetic on counters, no jax."""

from __future__ import annotations

import dataclasses
import math

from sensei_jax.dreamer.train_config import TrainConfig


def next_multiple(env_steps: int, every: int) -> int:
    """The first multiple of `every` after `env_steps` (strictly)."""
    return (env_steps // every + 1) * every


@dataclasses.dataclass(frozen=True)
class Schedule:
    """train_start: env steps before the first update; updates_per_step: updates owed per env step after it
    (train_ratio / replayed steps per batch); random_steps: env steps of uniform random actions (prefill);
    log_every, save_every, video_every (0: no videos): intervals in env steps."""

    train_start: int
    updates_per_step: float
    random_steps: int
    log_every: int
    save_every: int
    video_every: int

    @classmethod
    def from_config(cls, cfg: TrainConfig) -> Schedule:
        """The `train` section's schedule; the first update waits for at least one window in every stream."""
        return cls(train_start=max(cfg.train_start, cfg.sequence_length * cfg.num_envs),
                   updates_per_step=cfg.train_ratio / (cfg.batch_size * cfg.batch_length),
                   random_steps=cfg.random_steps, log_every=cfg.log_every, save_every=cfg.save_every,
                   video_every=cfg.video_every)

    def updates_due(self, env_steps: int) -> int:
        """Train steps that should have run after `env_steps` env steps (the reference's Ratio)."""
        if env_steps < self.train_start:
            return 0
        return int(math.floor((env_steps - self.train_start) * self.updates_per_step)) + 1

    def is_random(self, env_steps: int) -> bool:
        """Whether the collection call that starts at `env_steps` takes uniform random actions."""
        return env_steps < self.random_steps

    def points(self, env_steps: int, total: int) -> Points:
        """The first log, save and video points after `env_steps`, in a run that ends at `total`."""
        video = next_multiple(env_steps, self.video_every) if self.video_every else None
        return Points(self, total, next_multiple(env_steps, self.log_every),
                      next_multiple(env_steps, self.save_every), video)


@dataclasses.dataclass
class Points:
    """The next env steps at which a run logs, saves and records a video (None: never). A log and a save are due
    at their point and at the run's end; a video only once an update has run. `done_*` moves a point past the
    current step."""

    schedule: Schedule
    total: int
    log: int
    save: int
    video: int | None

    def log_due(self, env_steps: int) -> bool:
        return env_steps >= self.log or env_steps >= self.total

    def save_due(self, env_steps: int) -> bool:
        return env_steps >= self.save or env_steps >= self.total

    def video_due(self, env_steps: int, train_steps: int) -> bool:
        return self.video is not None and env_steps >= self.video and train_steps > 0

    def done_log(self, env_steps: int) -> None:
        self.log = next_multiple(env_steps, self.schedule.log_every)

    def done_save(self, env_steps: int) -> None:
        self.save = next_multiple(env_steps, self.schedule.save_every)

    def done_video(self, env_steps: int) -> None:
        self.video = next_multiple(env_steps, self.schedule.video_every)
