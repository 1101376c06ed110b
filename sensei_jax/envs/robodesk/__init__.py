"""Robodesk on MJX-Warp: `Robodesk` (the env), `TASKS` (every task name), `State`."""

from sensei_jax.envs.robodesk.assets import AssetsError
from sensei_jax.envs.robodesk.config import RobodeskConfig
from sensei_jax.envs.robodesk.env import BudgetOverflowError, Robodesk, State
from sensei_jax.envs.robodesk.model import CAMERAS
from sensei_jax.envs.robodesk.tasks import CORE_TASKS, EXTRA_TASKS, INTERACTIONS, SENSEI_TASKS, TASKS

__all__ = ["AssetsError", "BudgetOverflowError", "CAMERAS", "CORE_TASKS", "EXTRA_TASKS", "INTERACTIONS",
           "Robodesk", "RobodeskConfig", "SENSEI_TASKS", "State", "TASKS"]
