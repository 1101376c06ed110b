"""Motif's image reward model in flax.nnx, and `RewardModel`: its trained parameters as a jittable reward function.

The network (Motif's image encoder as SENSEI trained it) maps one RGB frame to one scalar:

    uint8 [B, H, W, 3] --/255--> conv 8x8/4 -> ELU -> conv 4x4/2 -> ELU -> conv 3x3/2 -> ELU -> maxpool 2x2
      -> flatten -> linear hidden/2 -> ReLU -> linear hidden -> ReLU -> linear 1  --> float32 [B]

At 224x224 the spatial size goes 224 -> 55 -> 26 -> 12 -> 6 (2304 features, as in SENSEI); at 64x64 it goes
64 -> 15 -> 6 -> 2 -> 1. Weights are orthogonal (gain 1), biases zero, as Motif initialises them.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sensei_jax.reward.config import KERNELS, POOL, STRIDES, feature_grid


@dataclasses.dataclass(frozen=True)
class RewardModelConfig:
    """Architecture only (what a checkpoint needs to be rebuilt); training settings live in RewardConfig."""

    image_size: int = 64
    channels: tuple[int, int, int] = (16, 32, 64)
    hidden: int = 512

    def __post_init__(self):
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        if len(self.channels) != 3:
            raise ValueError(f"channels must list 3 conv widths, got {self.channels}")
        if self.feature_grid() < 1:
            raise ValueError(f"image_size {self.image_size} is too small for the conv stack (8/4, 4/2, 3/2, pool 2): "
                             "it needs at least 52 pixels")

    @classmethod
    def from_config(cls, cfg: Any) -> "RewardModelConfig":
        """From a RewardConfig (or anything with image_size, channels and hidden)."""
        return cls(image_size=int(cfg.image_size), channels=tuple(cfg.channels), hidden=int(cfg.hidden))

    def feature_grid(self) -> int:
        """Side of the feature map after the conv stack and the max-pool."""
        return feature_grid(self.image_size)

    @property
    def num_features(self) -> int:
        return self.feature_grid() ** 2 * self.channels[-1]

    def to_dict(self) -> dict:
        return {"image_size": self.image_size, "channels": list(self.channels), "hidden": self.hidden}


def resize(images: jax.Array, size: int) -> jax.Array:
    """[B, H, W, 3] (any real dtype) -> float32 [B, size, size, 3]. Antialiased bilinear; identity at equal size."""
    images = images.astype(jnp.float32)
    if images.shape[1:3] == (size, size):
        return images
    return jax.image.resize(images, (images.shape[0], size, size, images.shape[3]), method="linear", antialias=True)


@functools.partial(jax.jit, static_argnums=1)
def resize_uint8(images: jax.Array, size: int) -> jax.Array:
    """uint8 [B, H, W, 3] -> uint8 [B, size, size, 3] with `resize`, rounded (for caching resized datasets)."""
    return jnp.clip(jnp.round(resize(images, size)), 0, 255).astype(jnp.uint8)


class MotifCNN(nnx.Module):
    """uint8 [B, H, W, 3] -> float32 [B]. Images of another size than `cfg.image_size` are resized first."""

    def __init__(self, cfg: RewardModelConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        init = dict(kernel_init=nnx.initializers.orthogonal(), bias_init=nnx.initializers.zeros_init(), rngs=rngs)
        widths = (3, *cfg.channels)
        self.conv1 = nnx.Conv(widths[0], widths[1], (KERNELS[0],) * 2, strides=STRIDES[0], padding="VALID", **init)
        self.conv2 = nnx.Conv(widths[1], widths[2], (KERNELS[1],) * 2, strides=STRIDES[1], padding="VALID", **init)
        self.conv3 = nnx.Conv(widths[2], widths[3], (KERNELS[2],) * 2, strides=STRIDES[2], padding="VALID", **init)
        self.fc1 = nnx.Linear(cfg.num_features, cfg.hidden // 2, **init)
        self.fc2 = nnx.Linear(cfg.hidden // 2, cfg.hidden, **init)
        self.head = nnx.Linear(cfg.hidden, 1, **init)

    def __call__(self, images: jax.Array) -> jax.Array:
        x = resize(images, self.cfg.image_size) / 255.0
        x = jax.nn.elu(self.conv1(x))
        x = jax.nn.elu(self.conv2(x))
        x = jax.nn.elu(self.conv3(x))
        x = nnx.max_pool(x, (POOL, POOL), strides=(POOL, POOL), padding="VALID")
        x = x.reshape(x.shape[0], -1)
        x = jax.nn.relu(self.fc1(x))
        x = jax.nn.relu(self.fc2(x))
        return self.head(x)[:, 0]


@functools.lru_cache(maxsize=None)
def graphdef(cfg: RewardModelConfig) -> nnx.GraphDef:
    """The (hashable, parameter-free) structure of a MotifCNN; cached so every RewardModel of a config shares it."""
    return nnx.split(nnx.eval_shape(lambda: MotifCNN(cfg, rngs=nnx.Rngs(0))))[0]


def abstract_params(cfg: RewardModelConfig) -> dict:
    """The parameter tree as jax.ShapeDtypeStruct leaves (for restoring checkpoints without initialising)."""
    return jax.eval_shape(lambda: nnx.to_pure_dict(nnx.split(MotifCNN(cfg, rngs=nnx.Rngs(0)))[1]))


def init_params(cfg: RewardModelConfig, seed: int) -> dict:
    """Fresh parameters as a plain nested dict of float32 arrays (what checkpoints store): orthogonal kernels
    (gain 1) and zero biases, like MotifCNN's own initialisers, but drawn with numpy from `seed` because compiling
    XLA's QR for every layer shape costs seconds on a CPU."""
    rng = np.random.default_rng(seed)

    def init(path, leaf):
        if path[-1].key == "bias":
            return jnp.zeros(leaf.shape, leaf.dtype)
        return jnp.asarray(orthogonal(rng, leaf.shape), leaf.dtype)

    return jax.tree_util.tree_map_with_path(init, abstract_params(cfg))


def orthogonal(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """A random orthogonal matrix [prod(shape[:-1]), shape[-1]] reshaped to `shape` (the last axis is the output
    axis, as in flax's orthogonal initializer)."""
    rows, cols = int(np.prod(shape[:-1])), int(shape[-1])
    matrix = rng.standard_normal((max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(matrix)
    q = q * np.sign(np.diag(r))  # unique (Haar-distributed) choice of signs
    if rows < cols:
        q = q.T
    return q.reshape(shape).astype(np.float32)


def apply(cfg: RewardModelConfig, params: dict, images: jax.Array) -> jax.Array:
    """Pure forward pass: images [B, H, W, 3] (uint8, or float in [0, 255]) -> rewards float32 [B]."""
    return nnx.merge(graphdef(cfg), params)(images)


@jax.tree_util.register_pytree_node_class
class RewardModel:
    """A trained reward model: architecture, parameters and the reward statistics of its training images.

    It is a pytree (leaves: parameters, mean, std; static: the architecture), so it can be closed over by a jitted
    function (the parameters become constants) or passed in as an argument (they stay inputs):

        reward_model = RewardModel.load(run_dir / "distill")

        @jax.jit
        def step(state, reward_model, batch):          # reward_model passed as a pytree argument
            semantic = reward_model.reward(batch["image"])   # uint8 [B, T, 64, 64, 3] -> float32 [B, T]
            ...

    `reward` takes any leading batch dimensions and any image size (resized inside to `config.image_size`).
    """

    def __init__(self, config: RewardModelConfig, params: dict, mean: Any = None, std: Any = None,
                 stats: dict | None = None):
        self.config = config
        self.params = params
        self.mean = mean
        self.std = std
        self.stats = stats or {}  # full statistics (quantiles, count); host-side only, not part of the pytree

    def tree_flatten(self):
        return (self.params, self.mean, self.std), (self.config,)

    @classmethod
    def tree_unflatten(cls, aux, children):
        params, mean, std = children
        return cls(aux[0], params, mean, std)

    def reward(self, images: jax.Array, normalize: bool = False) -> jax.Array:
        """images uint8 [..., H, W, 3] -> float32 [...]; with `normalize`, (r - mean) / std of the training images.

        Jittable; call it inside your compiled step.
        """
        images = jnp.asarray(images)
        if images.dtype != jnp.uint8:
            raise TypeError(f"reward() expects uint8 images [..., H, W, 3], got dtype {images.dtype}")
        if images.ndim < 3 or images.shape[-1] != 3:
            raise ValueError(f"reward() expects images [..., H, W, 3], got shape {images.shape}")
        if normalize and (self.mean is None or self.std is None):
            raise ValueError("reward(normalize=True) needs reward statistics, and this model has none "
                             "(reward_stats.json missing or written for another checkpoint)")
        lead = images.shape[:-3]
        flat = images.reshape(-1, *images.shape[-3:])
        rewards = apply(self.config, self.params, flat)
        if normalize:
            rewards = (rewards - jnp.float32(self.mean)) / jnp.float32(self.std)
        return rewards.reshape(lead)

    __call__ = reward

    @classmethod
    def load(cls, directory: str | Path, step: int | None = None) -> "RewardModel":
        """The model in `directory`, a distill folder as `sensei_jax.reward.train.train` writes it (its module
        docstring lists the files): the best checkpoint by validation accuracy, or checkpoint `step`, with the
        reward statistics recorded for that checkpoint."""
        # Imported here so that computing rewards with a model in hand never imports orbax.
        from sensei_jax import files
        from sensei_jax.checkpoint import Checkpointer

        directory = Path(directory)
        model_cfg = check_folder(directory)
        best_dir = directory / BEST_CHECKPOINTS
        checkpoints = Checkpointer(best_dir, max_to_keep=1, best_metric="val_score")
        try:
            step = checkpoints.best_step if step is None else step
            if step is None:
                raise FileNotFoundError(f"no reward-model checkpoint in {best_dir}")
            params = checkpoints.restore(step, like={"params": abstract_params(model_cfg)})["params"]
        finally:
            checkpoints.close()
        stats_path = directory / "reward_stats.json"
        stats = files.read_json(stats_path) if stats_path.is_file() else {}
        if stats and stats.get("epoch") != step:
            stats = {}  # statistics belong to another checkpoint
        params = jax.tree.map(jnp.asarray, params)
        if not stats:
            return cls(model_cfg, params)
        return cls(model_cfg, params, mean=jnp.float32(stats["mean"]), std=jnp.float32(max(stats["std"], 1e-8)),
                   stats=stats)

    def __repr__(self) -> str:
        count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(self.params))
        return f"RewardModel({self.config}, parameters={count}, stats={'yes' if self.mean is not None else 'no'})"


BEST_CHECKPOINTS = "checkpoints/best"  # in a distill folder, beside model.json


def check_folder(directory: str | Path) -> RewardModelConfig:
    """The network config of the distill folder `directory`, checked without loading any weights: model.json is
    there and valid, and checkpoints/best holds a checkpoint. Raises FileNotFoundError or ValueError naming the
    file and what it should hold."""
    from sensei_jax import files

    directory = Path(directory)
    meta_path = directory / "model.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{directory} is not a reward-model folder: {meta_path} is missing")
    record = files.read_json(meta_path)
    try:
        model_cfg = RewardModelConfig(**record["model"])
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{meta_path} has an invalid 'model' entry: {error}") from error
    best_dir = directory / BEST_CHECKPOINTS
    if not best_dir.is_dir() or not any(best_dir.iterdir()):
        raise FileNotFoundError(f"no reward-model checkpoint in {best_dir} (has distill finished an epoch?)")
    return model_cfg
