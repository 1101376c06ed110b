"""Robodesk on MJX-Warp: `Robodesk` (the env), `TASKS` (every task name), `State`.

The names are imported on first use, so that reading the `env` config section (`RobodeskConfig`) does not start
jax, MuJoCo and Warp.
"""

from sensei_jax.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "AssetsError": "sensei_jax.envs.robodesk.assets",
    "BudgetOverflowError": "sensei_jax.envs.robodesk.env",
    "CAMERAS": "sensei_jax.envs.robodesk.model",
    "CORE_TASKS": "sensei_jax.envs.robodesk.config",
    "EXTRA_TASKS": "sensei_jax.envs.robodesk.config",
    "INTERACTIONS": "sensei_jax.envs.robodesk.tasks",
    "Robodesk": "sensei_jax.envs.robodesk.env",
    "RobodeskConfig": "sensei_jax.envs.robodesk.config",
    "SENSEI_TASKS": "sensei_jax.envs.robodesk.config",
    "State": "sensei_jax.envs.robodesk.env",
    "TASKS": "sensei_jax.envs.robodesk.config",
})
