"""Optimizers of DreamerV3 in optax.

- `adam`: the 2023 reference and SENSEI: global-norm clipping, then Adam (world model lr 1e-4, eps 1e-8, clip
  1000; actor and critics lr 3e-5, eps 1e-5, clip 100).
- `laprop`: the 2024 reference: per-tensor adaptive gradient clipping, then RMS normalization (LaProp order:
  normalize first, then momentum), both bias-corrected, then the learning rate (optionally warmed up).

Both run their elementwise part on the parameters flattened into one vector (`flat`).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from sensei_jax.dreamer.config import DreamerConfig


def adaptive_grad_clip(clip: float, pmin: float) -> optax.GradientTransformation:
    """Per-tensor AGC: g * 1 / max(1, |g| / (clip * max(pmin, |p|))). Needs params in `update`."""

    def init(params):
        del params
        return optax.EmptyState()

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("adaptive_grad_clip needs the params passed to update()")

        def one(g, p):
            limit = clip * jnp.maximum(pmin, jnp.linalg.norm(p.reshape(-1).astype(jnp.float32)))
            norm = jnp.linalg.norm(g.reshape(-1).astype(jnp.float32))
            return g / jnp.maximum(1.0, norm / limit).astype(g.dtype)

        return jax.tree.map(one, updates, params), state

    return optax.GradientTransformation(init, update)


class LaPropState(NamedTuple):
    count: jax.Array
    nu: optax.Updates
    mu: optax.Updates


def scale_by_laprop(beta1: float, beta2: float, eps: float) -> optax.GradientTransformation:
    """u = bias-corrected momentum of g / (sqrt(bias-corrected EMA of g^2) + eps)."""

    def init(params):
        zeros = jax.tree.map(jnp.zeros_like, params)
        return LaPropState(jnp.zeros((), jnp.int32), zeros, jax.tree.map(jnp.zeros_like, params))

    def update(updates, state, params=None):
        del params
        count = state.count + 1
        nu = jax.tree.map(lambda v, g: beta2 * v + (1 - beta2) * g * g, state.nu, updates)
        nu_hat_scale = 1 / (1 - beta2 ** count.astype(jnp.float32))
        normed = jax.tree.map(lambda g, v: g / (jnp.sqrt(v * nu_hat_scale) + eps), updates, nu)
        mu = jax.tree.map(lambda m, n: beta1 * m + (1 - beta1) * n, state.mu, normed)
        mu_hat_scale = 1 / (1 - beta1 ** count.astype(jnp.float32))
        out = jax.tree.map(lambda m: m * mu_hat_scale, mu)
        return out, LaPropState(count, nu, mu)

    return optax.GradientTransformation(init, update)


def flat(inner: optax.GradientTransformation) -> optax.GradientTransformation:
    """Runs an elementwise optimizer on all parameters concatenated into one float32 vector.

    Per-leaf updates of ~100 parameter arrays made the compiled train step several thousand ops long (slow XLA
    compiles, many small kernels); on one vector the update is a handful of fused ops. The optimizer state holds
    [P] vectors instead of a tree.
    """

    def init(params):
        return inner.init(ravel_pytree(params)[0])

    def update(updates, state, params=None):
        flat_updates, unravel = ravel_pytree(updates)
        flat_params = None if params is None else ravel_pytree(params)[0]
        out, state = inner.update(flat_updates, state, flat_params)
        return unravel(out), state

    return optax.GradientTransformation(init, update)


def _learning_rate(lr: float, warmup: int):
    if warmup > 0:
        return optax.linear_schedule(0.0, lr, warmup)
    return lr


def make_optimizer(cfg: DreamerConfig, group: Literal["model", "actor", "critic"]) -> optax.GradientTransformation:
    """The optimizer of one parameter group, as configured."""
    lr = {"model": cfg.model_lr, "actor": cfg.actor_lr, "critic": cfg.critic_lr}[group]
    if cfg.optimizer == "adam":
        eps = cfg.model_eps if group == "model" else cfg.ac_eps
        clip = cfg.model_clip if group == "model" else cfg.ac_clip
        return flat(optax.chain(
            optax.clip_by_global_norm(clip),
            optax.scale_by_adam(eps=eps),
            optax.scale_by_learning_rate(_learning_rate(lr, cfg.warmup)),
        ))
    if cfg.optimizer == "laprop":
        return optax.chain(
            adaptive_grad_clip(cfg.agc, cfg.agc_pmin),  # per tensor, so on the tree
            flat(optax.chain(
                scale_by_laprop(cfg.laprop_beta1, cfg.laprop_beta2, cfg.laprop_eps),
                optax.scale_by_learning_rate(_learning_rate(lr, cfg.warmup)),
            )),
        )
    raise ValueError(f"dreamer.optimizer must be 'adam' or 'laprop', got {cfg.optimizer!r}")
