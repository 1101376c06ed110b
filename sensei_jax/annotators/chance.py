"""The random annotator: a baseline whose labels carry no information about the images."""

from __future__ import annotations

import zlib

import numpy as np

from sensei_jax.annotators.base import check_pairs, label_from_prob
from sensei_jax.annotators.config import AnnotateConfig


class RandomAnnotator:
    """P(first) uniform in [0, 1]; the same pair (by content) always gets the same answer."""

    name = "random"

    def __init__(self, cfg: AnnotateConfig):
        self.cfg = cfg

    def annotate(self, images, states=None):
        images = check_pairs(images)
        prob = np.array([np.random.default_rng([self.cfg.seed, zlib.crc32(pair.tobytes())]).random()
                         for pair in images], np.float32)
        return prob, label_from_prob(prob, 0.0)
