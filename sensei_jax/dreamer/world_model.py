"""The DreamerV3 world model: encoder, RSSM, decoder, reward, continue and extra heads, and its loss.

Observation keys: images are [H, W, C] uint8 (a CNN each), vectors are [N] (concatenated into one MLP). Keys named
reward, is_first, is_last, is_terminal, or starting with `log_`, are never model inputs.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sensei_jax.dreamer.config import DreamerConfig
from sensei_jax.dreamer.distributions import sg, symlog
from sensei_jax.dreamer.heads import BinaryHead, HeadSpec, ScalarHead
from sensei_jax.dreamer.nets import ImageDecoder, ImageEncoder, VectorDecoder, VectorEncoder
from sensei_jax.dreamer.rssm import RSSM, Latent, feature

RESERVED_KEYS = ("reward", "is_first", "is_last", "is_terminal", "action", "context")

ObsSpace = Mapping[str, tuple[tuple[int, ...], Any]]


def split_obs_keys(obs_space: ObsSpace, selected: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """(image keys, vector keys) among `selected` (all usable keys when empty), sorted for a stable layout."""
    usable = {k: v for k, v in obs_space.items() if k not in RESERVED_KEYS and not k.startswith("log_")}
    for key in selected:
        if key not in usable:
            raise ValueError(f"dreamer observation key '{key}' is not in the observation space ({sorted(usable)})")
    names = sorted(selected) if selected else sorted(usable)
    images, vectors = [], []
    for key in names:
        shape, dtype = usable[key]
        if len(shape) == 3:
            if np.dtype(dtype) != np.uint8:
                raise ValueError(f"image observation '{key}' must be uint8 [H, W, C], got {np.dtype(dtype)}")
            images.append(key)
        elif len(shape) == 1:
            vectors.append(key)
        elif len(shape) != 0:
            raise ValueError(f"observation '{key}' has shape {shape}; only [H, W, C] images and [N] vectors work")
    return images, vectors


class WorldModel(nnx.Module):
    def __init__(self, cfg: DreamerConfig, obs_space: ObsSpace, action_size: int,
                 extra_heads: Mapping[str, HeadSpec] | None = None, *, rngs: nnx.Rngs):
        dtype = jnp.bfloat16 if cfg.compute_dtype == "bfloat16" else jnp.float32
        size = cfg.size()
        self.cfg = cfg
        self.obs_space = {k: (tuple(s), np.dtype(d).name) for k, (s, d) in obs_space.items()}
        self.enc_images, self.enc_vectors = split_obs_keys(obs_space, cfg.encoder_keys)
        self.dec_images, self.dec_vectors = split_obs_keys(obs_space, cfg.decoder_keys)
        if not (self.enc_images or self.enc_vectors):
            raise ValueError(f"no observation to encode in the observation space {sorted(obs_space)}")
        self.vector_sizes = {k: int(obs_space[k][0][0]) for k in set(self.enc_vectors) | set(self.dec_vectors)}

        self.image_encoders = nnx.Dict({
            k: ImageEncoder(tuple(obs_space[k][0]), size.cnn_depth, cfg.cnn_kernel, cfg.cnn_minres, cfg.norm,
                            mults=cfg.cnn_mults, dtype=dtype, rngs=rngs) for k in self.enc_images})
        embed = sum(e.out_size for e in self.image_encoders.values())
        width = sum(self.vector_sizes[k] for k in self.enc_vectors)
        self.vector_encoder = nnx.data(
            VectorEncoder(width, size.units, size.layers, cfg.norm, dtype=dtype, rngs=rngs) if width else None)
        if self.vector_encoder is not None:
            embed += self.vector_encoder.out_size
        self.embed_size = embed
        self.rssm = RSSM(cfg, action_size, embed, dtype=dtype, rngs=rngs)
        feat = size.feat_size
        self.image_decoders = nnx.Dict({
            k: ImageDecoder(feat, tuple(obs_space[k][0]), size.cnn_depth, cfg.cnn_kernel, cfg.cnn_minres, cfg.norm,
                            mults=cfg.cnn_mults, dtype=dtype, rngs=rngs) for k in self.dec_images})
        width = sum(self.vector_sizes[k] for k in self.dec_vectors)
        self.vector_decoder = nnx.data(
            VectorDecoder(feat, width, size.units, size.layers, cfg.norm, dtype=dtype, rngs=rngs) if width else None)
        self.reward = ScalarHead(cfg, feat, dtype=dtype, rngs=rngs)
        self.cont = BinaryHead(cfg, feat, dtype=dtype, rngs=rngs)
        self.extra_specs = dict(extra_heads or {})
        self.heads = nnx.Dict({k: spec.build(cfg, feat, dtype, rngs) for k, spec in self.extra_specs.items()})

    # ------------------------------------------------------------------------------------------------------------
    def encode(self, obs: Mapping[str, jax.Array]) -> jax.Array:
        """obs dict of [..., *shape] -> embedding [..., E]."""
        parts = [self.image_encoders[k](obs[k]).astype(jnp.float32) for k in self.enc_images]
        if self.vector_encoder is not None:
            vec = jnp.concatenate([obs[k].astype(jnp.float32) for k in self.enc_vectors], -1)
            parts.append(self.vector_encoder(vec).astype(jnp.float32))
        return jnp.concatenate(parts, -1)

    def decode(self, feat: jax.Array) -> dict[str, jax.Array]:
        """feat [..., F] -> predicted images [..., H, W, C] in [0, 1] and symlog vectors [..., N], per key."""
        out = {k: self.image_decoders[k](feat) for k in self.dec_images}
        if self.vector_decoder is not None:
            pred = self.vector_decoder(feat)
            start = 0
            for k in self.dec_vectors:
                out[k] = pred[..., start:start + self.vector_sizes[k]]
                start += self.vector_sizes[k]
        return out

    def loss(self, batch: Mapping[str, jax.Array], carry: Latent, prev_action: jax.Array,
             key: jax.Array) -> tuple[jax.Array, tuple[dict[str, jax.Array], dict[str, Any]]]:
        """World-model loss on a batch of sequences.

        batch: obs keys [B, T, ...], 'action' [B, T, A] (taken after each observation), 'reward' [B, T] (received
        on arriving at each step), 'is_first' / 'is_terminal' [B, T] bool. carry: the posterior latent before the
        first step; prev_action [B, A]: the action taken just before the first step.
        Returns (scalar loss, (per-loss [B, T] arrays, outs)) where outs holds the posterior 'deter' [B, T, D],
        'stoch' [B, T, S, K], 'feat' [B, T, F], the 'post'/'prior' logits, 'last' (latent after step T) and
        'head_fit' {extra head: (its stop-gradient mean [B, T], its target [B, T])}.
        """
        cfg = self.cfg
        embed = self.encode(batch)
        actions = batch["action"].astype(jnp.float32)
        prev_actions = jnp.concatenate([prev_action[:, None].astype(jnp.float32), actions[:, :-1]], 1)
        last, outs = self.rssm.observe(carry, prev_actions, embed, batch["is_first"], key)
        feat = feature(outs)
        outs = {**outs, "feat": feat, "last": last}
        losses, scales = {}, {}
        losses["kl_dyn"], losses["kl_rep"] = self.rssm.kl_losses(outs["post"], outs["prior"])
        scales["kl_dyn"], scales["kl_rep"] = cfg.dyn_scale, cfg.rep_scale
        dec_feat = feat if "decoder" in cfg.grad_heads else sg(feat)
        recon = self.decode(dec_feat)
        for k in self.dec_images:
            target = batch[k].astype(jnp.float32) / 255.0
            losses[k] = jnp.sum((recon[k] - target) ** 2, (-3, -2, -1))
            scales[k] = cfg.image_scale
        for k in self.dec_vectors:
            losses[k] = jnp.sum((recon[k] - symlog(batch[k].astype(jnp.float32))) ** 2, -1)
            scales[k] = cfg.vector_scale
        rew_feat = feat if "reward" in cfg.grad_heads else sg(feat)
        losses["reward"] = -self.reward(rew_feat).log_prob(batch["reward"].astype(jnp.float32))
        scales["reward"] = cfg.reward_scale
        cont_feat = feat if "cont" in cfg.grad_heads else sg(feat)
        cont_target = 1.0 - batch["is_terminal"].astype(jnp.float32)
        losses["cont"] = -self.cont(cont_feat).log_prob(cont_target)
        scales["cont"] = cfg.cont_scale
        fits = {}
        for name, spec in self.extra_specs.items():
            if name in losses:
                raise ValueError(f"extra head name '{name}' clashes with a world-model loss")
            target = spec.target_values(batch, outs).astype(jnp.float32)
            dist = self.heads[name](feat if spec.grad else sg(feat))
            losses[name] = -dist.log_prob(target)
            scales[name] = spec.scale
            fits[name] = (sg(dist.mean()).astype(jnp.float32), sg(target))
        outs["head_fit"] = fits
        assert set(losses) == set(scales), (sorted(losses), sorted(scales))
        total = sum(scales[k] * jnp.mean(v) for k, v in losses.items())
        return total, (losses, outs)
