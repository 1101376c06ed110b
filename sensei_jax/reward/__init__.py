"""The Motif reward model distilled from pairwise preferences.

Modules: `dataset` (`PairDataset`, the on-disk pair format, training batches), `model` (`RewardModel` and its
network), `train` (Bradley-Terry distillation: `train.train`), `config` (the `reward` config section). The names
below are imported on first use, so reading the config section stays free of jax.
"""

from sensei_jax.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "DatasetError": "sensei_jax.reward.dataset",
    "PairDataset": "sensei_jax.reward.dataset",
    "RewardConfig": "sensei_jax.reward.config",
    "RewardModel": "sensei_jax.reward.model",
    "RewardModelConfig": "sensei_jax.reward.model",
})
