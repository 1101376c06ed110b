"""MiniHack (KeyRoom, KeyChest) on host worker processes: `MiniHack` (the env), `MiniHackConfig` (the `minihack`
config section), `WorkerPool` / `WorkerCrashed` (the processes), and the task facts in `tasks`.

The names are imported on first use, so that reading the config section imports neither jax nor nle.
"""

from sensei_jax.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "FEATURES": "sensei_jax.envs.minihack.tasks",
    "INTERACTIONS": "sensei_jax.envs.minihack.tasks",
    "MINIHACK_TASKS": "sensei_jax.envs.minihack.config",
    "MiniHack": "sensei_jax.envs.minihack.env",
    "MiniHackConfig": "sensei_jax.envs.minihack.config",
    "MiniHackState": "sensei_jax.envs.minihack.env",
    "SUCCESSES": "sensei_jax.envs.minihack.tasks",
    "TASKS": "sensei_jax.envs.minihack.tasks",
    "WorkerCrashed": "sensei_jax.envs.minihack.pool",
    "WorkerPool": "sensei_jax.envs.minihack.pool",
    "compare": "sensei_jax.envs.minihack.tasks",
    "interest_score": "sensei_jax.envs.minihack.tasks",
})
