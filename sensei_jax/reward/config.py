"""Configuration of reward distillation (the `reward` section of a run config).

Defaults are the SENSEI GPT-4 run (Motif's image CNN, Adam lr 1e-5 with weight decay 1e-5, batch 32, 50 epochs,
95/5 split, seed 97) except the input resolution: 64x64, the agent's own image size (SENSEI used 224x224).
"""

from __future__ import annotations

import dataclasses


# The reward model's conv stack (kernel, stride per layer) and the max-pool after it (`reward.model`).
KERNELS = (8, 4, 3)
STRIDES = (4, 2, 2)
POOL = 2


def feature_grid(image_size: int) -> int:
    """Side of the feature map the conv stack and the max-pool leave of an image_size x image_size input."""
    size = image_size
    for kernel, stride in zip(KERNELS, STRIDES):
        size = (size - kernel) // stride + 1 if size >= kernel else 0
    return size // POOL


def min_image_size() -> int:
    """The smallest input side the conv stack turns into at least one feature (52)."""
    return next(size for size in range(1, 1024) if feature_grid(size) >= 1)


@dataclasses.dataclass
class RewardConfig:
    # Model (Motif's image CNN: conv 8/4, 4/2, 3/2 with ELU, 2x2 max-pool, MLP hidden/2 -> hidden -> 1).
    image_size: int = 64  # model input resolution; other image sizes are resized inside the model
    channels: tuple[int, int, int] = (16, 32, 64)  # widths of the three conv layers
    hidden: int = 512  # MLP width (SENSEI: 512 for the GPT-4/LLaVA models, 256 for the general one)
    # Data.
    preferences: str | None = None  # label set to train on; default: the annotator's name
    val_fraction: float = 0.05
    # Optimisation.
    epochs: int = 50
    batch_size: int = 32
    learning_rate: float = 1e-5
    weight_decay: float = 1e-5  # L2 added to the gradient before Adam, as torch.optim.Adam(weight_decay=...)
    seed: int = 97
    # Bookkeeping.
    log_every: int = 50  # train steps between TensorBoard scalars
    stats_max_images: int = 100_000  # training images scored for the reward statistics (mean, std, quantiles)
    prefetch: int = 2  # batches read ahead from disk in a background thread

    def __post_init__(self):
        if self.image_size < 1 or self.hidden < 2 or min(self.channels) < 1:
            raise ValueError(f"image_size, hidden and channels must be positive, got image_size={self.image_size}, "
                             f"hidden={self.hidden}, channels={self.channels}")
        if feature_grid(self.image_size) < 1:
            raise ValueError(f"reward.image_size {self.image_size} is too small for the reward model's conv stack "
                             f"(8/4, 4/2, 3/2, pool 2): it needs at least {min_image_size()} pixels (frames of "
                             "another size are resized inside the model)")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {self.epochs} and {self.batch_size}")
        if self.learning_rate <= 0 or self.weight_decay < 0:
            raise ValueError(f"learning_rate must be > 0 and weight_decay >= 0, got {self.learning_rate} and "
                             f"{self.weight_decay}")
