"""Qwen3-VL's multimodal rotary position ids (MRoPE), computed on the host from token ids and image grids.

Each token gets three positions (time, height, width). Text tokens count up on all three alike. An image's run of
`gh * gw` placeholder tokens (its merged grid, row-major) starts at the position p after the text before it:
time p for all, height p + row, width p + column; the text after it continues at p + max(gh, gw). This is
`Qwen3VLModel.get_rope_index` in transformers for still images (one temporal patch).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def merged_grid(height: int, width: int, patch_size: int, merge_size: int) -> tuple[int, int]:
    """Text-token grid of a preprocessed image of height x width pixels (multiples of patch * merge)."""
    return height // (patch_size * merge_size), width // (patch_size * merge_size)


def prompt_positions(input_ids: Sequence[int], grids: Sequence[tuple[int, int]], image_token_id: int) -> np.ndarray:
    """int32 [3, T] for one unpadded prompt whose image placeholder runs are the merged grids `grids`, in order."""
    ids = np.asarray(input_ids)
    is_image = ids == image_token_id
    positions = np.zeros((3, len(ids)), np.int32)
    start, index, current = 0, 0, 0
    while start < len(ids):
        if not is_image[start]:
            end = start + (np.argmax(is_image[start:]) if is_image[start:].any() else len(ids) - start)
            positions[:, start:end] = current + np.arange(end - start)
            current += end - start
            start = end
            continue
        if index >= len(grids):
            raise ValueError(f"the prompt holds more image placeholder runs than the {len(grids)} images given")
        rows, cols = grids[index]
        end = start + rows * cols
        if end > len(ids) or not is_image[start:end].all() or (end < len(ids) and is_image[end]):
            raise ValueError(f"image {index}: its placeholder run does not hold the {rows} x {cols} = "
                             f"{rows * cols} tokens of its grid")
        row, col = np.divmod(np.arange(rows * cols), cols)
        positions[0, start:end] = current
        positions[1, start:end] = current + row
        positions[2, start:end] = current + col
        current += max(rows, cols)
        start, index = end, index + 1
    if index != len(grids):
        raise ValueError(f"{len(grids)} images given but the prompt holds {index} image placeholder runs")
    return positions


def batch_positions(input_ids: np.ndarray, attention_mask: np.ndarray | None, grids: Sequence[tuple[int, int]],
                    image_token_id: int) -> np.ndarray:
    """int32 [3, B, T] for padded prompts (any side); `grids` hold every image of the batch in row-major order of
    appearance. Padding gets position 0, as in transformers."""
    input_ids = np.asarray(input_ids)
    mask = np.ones(input_ids.shape, bool) if attention_mask is None else np.asarray(attention_mask, bool)
    positions = np.zeros((3, *input_ids.shape), np.int32)
    used = 0
    for row, (ids, real) in enumerate(zip(input_ids, mask)):
        tokens = ids[real]
        runs = int(np.sum(np.diff(np.concatenate([[0], (tokens == image_token_id).astype(int)])) == 1))
        positions[:, row, real] = prompt_positions(tokens, grids[used:used + runs], image_token_id)
        used += runs
    if used != len(grids):
        raise ValueError(f"{len(grids)} images given but the prompts hold {used} image placeholder runs")
    return positions
