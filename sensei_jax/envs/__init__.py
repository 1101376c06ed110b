"""Environments: the env contract (`Env`, `RestorableEnv`, `EnvState` in `protocol`), Robodesk on MJX-Warp
(`robodesk`), MiniHack on host worker processes (`minihack`) and the toy `PointReach` (`toy`).

The names are imported on first use: the contract needs no jax, the envs do.
"""

from sensei_jax.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "Env": "sensei_jax.envs.protocol",
    "EnvState": "sensei_jax.envs.protocol",
    "MiniHack": "sensei_jax.envs.minihack.env",
    "MiniHackConfig": "sensei_jax.envs.minihack.config",
    "PointReach": "sensei_jax.envs.toy.env",
    "RestorableEnv": "sensei_jax.envs.protocol",
    "Robodesk": "sensei_jax.envs.robodesk.env",
    "RobodeskConfig": "sensei_jax.envs.robodesk.config",
})
