"""DreamerV3 in flax.nnx: the agent (`Agent`), its configs and the training loop (`Trainer`).

The names below are imported on first use, so reading the `dreamer` and `train` config sections stays free of jax.
"""

from sensei_jax.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "Agent": "sensei_jax.dreamer.agent",
    "DreamerConfig": "sensei_jax.dreamer.config",
    "NonFiniteLossError": "sensei_jax.dreamer.loop",
    "Replay": "sensei_jax.dreamer.replay",
    "TrainConfig": "sensei_jax.dreamer.train_config",
    "Trainer": "sensei_jax.dreamer.loop",
    "obs_space": "sensei_jax.dreamer.loop",
})
