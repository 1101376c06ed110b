"""Metrics to TensorBoard (tensorboardX) and to `metrics.jsonl`, one line per logging step."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np


class MetricsWriter:
    """Writes scalars (and optionally images/videos) under `logdir`. Appends, so a resumed run continues its file.

    In a job of several processes only process 0 writes (`active` defaults to that); the others' writers accept
    every call and write nothing, so callers need no process checks.
    """

    def __init__(self, logdir: str | Path, tensorboard: bool = True, active: bool | None = None):
        if active is None:
            from sensei_jax.distributed import is_main_process

            active = is_main_process()
        self.logdir = Path(logdir)
        self.active = active
        self._jsonl = None
        self._tb = None
        if not active:
            return
        self.logdir.mkdir(parents=True, exist_ok=True)
        self._jsonl = open(self.logdir / "metrics.jsonl", "a", buffering=1)
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(self.logdir), flush_secs=30)

    def scalars(self, step: int, values: Mapping[str, Any], prefix: str = "") -> None:
        if not self.active:
            return
        row: dict[str, Any] = {"step": int(step), "time": time.time()}
        for name, value in values.items():
            value = float(np.asarray(value))
            key = f"{prefix}/{name}" if prefix else name
            row[key] = value if math.isfinite(value) else None
            if self._tb is not None and math.isfinite(value):
                self._tb.add_scalar(key, value, int(step))
        self._jsonl.write(json.dumps(row) + "\n")

    def video(self, step: int, name: str, frames: np.ndarray, fps: int = 16) -> None:
        """frames: uint8 [T, H, W, 3] (or [N, T, H, W, 3] for a grid of N clips)."""
        if self._tb is None:
            return
        frames = np.asarray(frames)
        if frames.ndim == 4:
            frames = frames[None]
        # tensorboardX wants [N, T, C, H, W].
        self._tb.add_video(name, frames.transpose(0, 1, 4, 2, 3), int(step), fps=fps)

    def image(self, step: int, name: str, image: np.ndarray) -> None:
        """image: uint8 [H, W, 3]."""
        if self._tb is not None:
            self._tb.add_image(name, np.asarray(image), int(step), dataformats="HWC")

    def flush(self) -> None:
        if self._jsonl is None:
            return
        self._jsonl.flush()
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if self._jsonl is None:
            return
        self._jsonl.close()
        if self._tb is not None:
            self._tb.close()

    def __enter__(self) -> "MetricsWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Reads a metrics.jsonl; a torn last line (the process was killed mid-write) is ignored."""
    rows = []
    path = Path(path)
    if not path.is_file():
        return rows
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows
