"""The annotator contract and what every annotator shares: input checks and turning P(first) into a label.

An annotator takes N image pairs (and the simulator states behind them, for annotators that read state) and
returns, per pair, P(the first image is more interesting) and a preference `Label`.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from sensei_jax.reward.labels import Label


class Annotator(Protocol):
    name: str

    def annotate(self, images: np.ndarray, states: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """images uint8 [N, 2, H, W, 3], states float32 [N, 2, S] or None -> (prob_first float32 [N],
        label int8 [N] of `Label` values)."""


def check_pairs(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 5 or images.shape[1] != 2 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"image pairs must be uint8 [N, 2, H, W, 3], got {images.dtype} {images.shape}")
    return images


def label_from_prob(prob_first: np.ndarray, tie_margin: float, unknown: np.ndarray | None = None) -> np.ndarray:
    """P(first) [N] -> label int8 [N]: FIRST above 0.5 + tie_margin, SECOND below 0.5 - tie_margin, TIE between;
    UNKNOWN where `unknown` (bool [N]) is set."""
    label = np.where(prob_first > 0.5 + tie_margin, Label.FIRST,
                     np.where(prob_first < 0.5 - tie_margin, Label.SECOND, Label.TIE))
    if unknown is not None:
        label = np.where(unknown, Label.UNKNOWN, label)
    return label.astype(np.int8)
