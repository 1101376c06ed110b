"""Host-side bookkeeping of a run between two log rows: finished episodes, the log hook's sums, the train metrics
(checked finite), and the row they make."""

from __future__ import annotations

import time
from typing import Any, Mapping

import numpy as np

from sensei_jax.dreamer.agent import first_nonfinite_loss


class NonFiniteLossError(FloatingPointError):
    """A training loss became NaN or infinite; the message names it."""


class Tally:
    """Sums over one log interval, started at (env_steps, train_steps)."""

    def __init__(self, env_steps: int, train_steps: int):
        self._start(env_steps, train_steps, time.perf_counter())

    def _start(self, env_steps: int, train_steps: int, now: float) -> None:
        self.returns: list[float] = []
        self.lengths: list[float] = []
        self.episode_logs: dict[str, list[float]] = {}
        self.interval_logs: dict[str, float] = {}
        self.metric_sums: dict[str, float] = {}
        self.metric_count = 0
        self.last = {"env_steps": env_steps, "train_steps": train_steps, "time": now}

    def add_outputs(self, outputs: Mapping[str, Any]) -> None:
        """A collection call's host outputs: the episodes that finished in it and the log hook's sums."""
        finished = outputs["is_last"]
        self.returns += outputs["return"][finished].tolist()
        self.lengths += outputs["length"][finished].tolist()
        for k, v in outputs["episode_log"].items():
            self.episode_logs.setdefault(k, []).extend(v[finished].tolist())
        for k, v in outputs["log"].items():
            self.interval_logs[k] = self.interval_logs.get(k, 0.0) + float(v.sum())

    def add_metrics(self, fetched: list[Mapping[str, Any]], train_steps: int, env_steps: int,
                    last_save: int | None) -> None:
        """The host metrics of the train steps that just ran (ending at `train_steps`), summed for the row.
        Raises NonFiniteLossError, naming the loss, at the first step with a non-finite loss."""
        for i, metrics in enumerate(fetched):
            bad = first_nonfinite_loss(metrics)
            if bad is not None:
                step_no = train_steps - len(fetched) + i + 1
                raise NonFiniteLossError(nonfinite_message(root_loss(metrics, bad), metrics, step_no, env_steps,
                                                           last_save))
            for k, v in metrics.items():
                self.metric_sums[k] = self.metric_sums.get(k, 0.0) + float(v)
            self.metric_count += 1

    def row(self, env_steps: int, train_steps: int, replay_filled: float) -> dict[str, float]:
        """The log row of the interval that ends here (mean metrics, throughput, episodes, hook sums); starts the
        next interval."""
        now = time.perf_counter()
        row = {k: v / self.metric_count for k, v in self.metric_sums.items() if not k.startswith("finite/")}
        elapsed = max(now - self.last["time"], 1e-9)
        row["fps/env_steps_per_s"] = (env_steps - self.last["env_steps"]) / elapsed
        row["fps/train_steps_per_s"] = (train_steps - self.last["train_steps"]) / elapsed
        row["replay/filled"] = replay_filled
        row["train_steps"] = float(train_steps)
        if self.returns:
            row.update({"episode/return": float(np.mean(self.returns)), "episode/return_max": max(self.returns),
                        "episode/length": float(np.mean(self.lengths)), "episode/count": len(self.returns)})
        row.update({f"episode/{k}": float(np.mean(v)) for k, v in self.episode_logs.items() if v})
        row.update({f"env/{k}": v for k, v in self.interval_logs.items()})
        self._start(env_steps, train_steps, now)
        return row


def root_loss(metrics: Mapping[str, Any], fallback: str) -> str:
    """The non-finite loss most likely to be the cause: world-model terms before their total, and both before the
    actor-critic losses, which are computed from the already-updated world model."""
    bad = [k[len("loss/"):] for k, v in metrics.items()
           if k.startswith("loss/") and not np.isfinite(np.asarray(v)).all()]

    def rank(name: str) -> tuple[int, str]:
        behaviour = name == "actor" or name.startswith("critic")
        return (2 if behaviour else 1 if name == "model" else 0, name)

    return min(bad, key=rank) if bad else fallback


def nonfinite_message(name: str, metrics: Mapping[str, Any], train_step: int, env_steps: int,
                      last_save: int | None) -> str:
    """The NonFiniteLossError message: the loss, its value, where, the other non-finite losses, what is intact."""
    bad = sorted(k[len("loss/"):] for k, v in metrics.items()
                 if k.startswith("loss/") and not np.isfinite(np.asarray(v)).all())
    value = metrics.get(f"loss/{name}")
    where = f"the last checkpoint (env step {last_save}) is intact" if last_save is not None else "no checkpoint yet"
    return (f"training stopped: loss '{name}' is {value} (not finite) at train step {train_step}, env step "
            f"{env_steps}; non-finite losses: {', '.join(bad) or name}; {where}. Check the inputs (rewards, "
            f"observations) and lower the learning rates.")
