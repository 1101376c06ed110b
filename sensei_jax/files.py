"""Files written so that a crash never leaves a half-written one behind: write to a temporary name, then rename."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


def _atomic(path: str | Path, write) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | Path, data: Any) -> Path:
    return _atomic(path, lambda f: f.write((json.dumps(data, indent=2, default=_json_default) + "\n").encode()))


def write_text(path: str | Path, text: str) -> Path:
    return _atomic(path, lambda f: f.write(text.encode()))


def write_npy(path: str | Path, array: np.ndarray) -> Path:
    return _atomic(path, lambda f: np.save(f, np.asarray(array), allow_pickle=False))


def write_npz(path: str | Path, **arrays: np.ndarray) -> Path:
    return _atomic(path, lambda f: np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()}))


def read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"expected a JSON file at {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from error


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
