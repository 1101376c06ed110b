"""Output distributions and transforms of DreamerV3, as plain functions and light objects over jax arrays.

All math runs in float32, whatever the compute dtype of the networks that produced the inputs.
- symlog / symexp squash targets of unknown scale.
- `TwoHot`: a categorical over bins equally spaced in symlog space (255 in [-20, 20]); the target is spread over
  its two neighbouring bins, the prediction is symexp of the expected bin.
- `LatentCategorical`: the RSSM's groups of categoricals with a uniform mix and straight-through one-hot samples.
- `BoundedNormal`: continuous actions, a Normal with a tanh-squashed mean and a std in [min, max].
- `ActionCategorical`: discrete actions as one-hot vectors, with a uniform mix.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

sg = jax.lax.stop_gradient


def symlog(x: jax.Array) -> jax.Array:
    return jnp.sign(x) * jnp.log1p(jnp.abs(x))


def symexp(x: jax.Array) -> jax.Array:
    return jnp.sign(x) * jnp.expm1(jnp.abs(x))


def twohot_bins(num_bins: int = 255, extent: float = 20.0) -> jax.Array:
    """Bin centres in symlog space, [num_bins] float32, symmetric around 0."""
    return jnp.linspace(-extent, extent, num_bins, dtype=jnp.float32)


def twohot_encode(x: jax.Array, bins: jax.Array) -> jax.Array:
    """Two-hot encoding of symlog(x): [...] -> [..., K] weights on the two bins around it (clipped at the ends)."""
    y = symlog(x.astype(jnp.float32))
    num = bins.shape[0]
    below = jnp.clip(jnp.sum((bins <= y[..., None]).astype(jnp.int32), -1) - 1, 0, num - 1)
    above = jnp.clip(num - jnp.sum((bins > y[..., None]).astype(jnp.int32), -1), 0, num - 1)
    equal = below == above
    dist_below = jnp.where(equal, 1.0, jnp.abs(bins[below] - y))
    dist_above = jnp.where(equal, 1.0, jnp.abs(bins[above] - y))
    total = dist_below + dist_above
    weight_below = dist_above / total
    weight_above = dist_below / total
    return (
        jax.nn.one_hot(below, num, dtype=jnp.float32) * weight_below[..., None]
        + jax.nn.one_hot(above, num, dtype=jnp.float32) * weight_above[..., None]
    )


class TwoHot:
    """Categorical over symlog-spaced bins. logits [..., K]; `mean()` and `log_prob(x)` are [...] in raw space."""

    def __init__(self, logits: jax.Array, bins: jax.Array):
        self.logits = logits.astype(jnp.float32)
        self.bins = bins

    def mean(self) -> jax.Array:
        probs = jax.nn.softmax(self.logits, -1)
        # Summing the two halves separately keeps the prediction exactly 0 for a uniform distribution.
        half = self.bins.shape[0] // 2
        lower = jnp.sum(probs[..., :half] * self.bins[:half], -1)
        upper = jnp.sum(probs[..., half:] * self.bins[half:], -1)
        return symexp(lower + upper)

    def log_prob(self, x: jax.Array) -> jax.Array:
        target = sg(twohot_encode(x, self.bins))
        return jnp.sum(target * jax.nn.log_softmax(self.logits, -1), -1)


class Bernoulli:
    """logits [...]; `mean()` is P(1)."""

    def __init__(self, logits: jax.Array):
        self.logits = logits.astype(jnp.float32)

    def mean(self) -> jax.Array:
        return jax.nn.sigmoid(self.logits)

    def log_prob(self, x: jax.Array) -> jax.Array:
        x = x.astype(jnp.float32)
        return x * jax.nn.log_sigmoid(self.logits) + (1 - x) * jax.nn.log_sigmoid(-self.logits)


def unimix_logits(logits: jax.Array, unimix: float) -> jax.Array:
    """Log-probabilities of (1 - unimix) * softmax(logits) + unimix / K, over the last axis."""
    logits = logits.astype(jnp.float32)
    if unimix <= 0:
        return jax.nn.log_softmax(logits, -1)
    probs = jax.nn.softmax(logits, -1)
    probs = (1 - unimix) * probs + unimix / logits.shape[-1]
    return jnp.log(probs)


class LatentCategorical:
    """Independent categoricals: logits [..., S, K] (already unimixed log-probabilities are fine too)."""

    def __init__(self, logits: jax.Array, unimix: float = 0.0):
        self.logp = unimix_logits(logits, unimix)

    def sample(self, key: jax.Array) -> jax.Array:
        """One-hot [..., S, K] float32 with straight-through gradients to the probabilities."""
        index = jax.random.categorical(key, self.logp, -1)
        onehot = jax.nn.one_hot(index, self.logp.shape[-1], dtype=jnp.float32)
        probs = jnp.exp(self.logp)
        return onehot + probs - sg(probs)

    def mode(self) -> jax.Array:
        onehot = jax.nn.one_hot(jnp.argmax(self.logp, -1), self.logp.shape[-1], dtype=jnp.float32)
        probs = jnp.exp(self.logp)
        return onehot + probs - sg(probs)

    def entropy(self) -> jax.Array:
        return -jnp.sum(jnp.exp(self.logp) * self.logp, (-2, -1))

    def kl(self, other: LatentCategorical) -> jax.Array:
        """KL(self || other) summed over the groups and classes: [...]."""
        return jnp.sum(jnp.exp(self.logp) * (self.logp - other.logp), (-2, -1))


class BoundedNormal:
    """Continuous actions: mean = tanh(raw mean), std = (max - min) * sigmoid(raw std + 2) + min. [..., A]."""

    def __init__(self, raw_mean: jax.Array, raw_std: jax.Array, min_std: float, max_std: float):
        self.loc = jnp.tanh(raw_mean.astype(jnp.float32))
        self.scale = (max_std - min_std) * jax.nn.sigmoid(raw_std.astype(jnp.float32) + 2.0) + min_std

    def sample(self, key: jax.Array) -> jax.Array:
        return self.loc + self.scale * jax.random.normal(key, self.loc.shape, jnp.float32)

    def mode(self) -> jax.Array:
        return self.loc

    def log_prob(self, x: jax.Array) -> jax.Array:
        z = (x - self.loc) / self.scale
        return jnp.sum(-0.5 * z**2 - jnp.log(self.scale) - 0.5 * jnp.log(2 * jnp.pi), -1)

    def entropy(self) -> jax.Array:
        return jnp.sum(0.5 + 0.5 * jnp.log(2 * jnp.pi) + jnp.log(self.scale), -1)


class ActionCategorical:
    """Discrete actions as one-hot vectors: logits [..., A]; samples and modes are one-hot float32 [..., A]."""

    def __init__(self, logits: jax.Array, unimix: float):
        self.logp = unimix_logits(logits, unimix)

    def sample(self, key: jax.Array) -> jax.Array:
        index = jax.random.categorical(key, self.logp, -1)
        return jax.nn.one_hot(index, self.logp.shape[-1], dtype=jnp.float32)

    def mode(self) -> jax.Array:
        return jax.nn.one_hot(jnp.argmax(self.logp, -1), self.logp.shape[-1], dtype=jnp.float32)

    def log_prob(self, onehot: jax.Array) -> jax.Array:
        return jnp.sum(onehot * self.logp, -1)

    def entropy(self) -> jax.Array:
        return -jnp.sum(jnp.exp(self.logp) * self.logp, -1)
