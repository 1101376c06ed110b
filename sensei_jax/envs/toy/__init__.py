"""The toy point-mass envs (`PointReach`, `CornerReach`) and the `toy` config section (`ToyConfig`).

The names are imported on first use, so that reading the `toy` section does not start jax.
"""

from sensei_jax.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "CornerReach": "sensei_jax.envs.toy.env",
    "PointReach": "sensei_jax.envs.toy.env",
    "ToyConfig": "sensei_jax.envs.toy.config",
    "ToyState": "sensei_jax.envs.toy.env",
})
