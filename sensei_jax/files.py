"""Files written so that a crash never leaves a half-written one behind: write to a temporary name, then rename."""

from __future__ import annotations

import errno
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


def os_error_cause(error: OSError, creating: bool = False, path: str | Path | None = None) -> str:
    """What went wrong in a failed file operation, in words, naming the path that caused it (for a message that
    already says which config key or file the operation served): `path`, else the error's own. `creating`: the
    operation made a file or folder, so a missing path means the file system refused to make it (as /proc does)."""
    path = error.filename if path is None else str(path)
    if error.errno == errno.ENOTDIR and path is not None:
        return f"{blocking_file(Path(path))} is a file, not a folder"
    if error.errno == errno.ENOENT and creating and path is not None and Path(path).parent.is_dir():
        return f"{existing_ancestor(Path(path))} accepts no new files or folders"
    cause = {errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
             errno.EPERM: "permission denied", errno.ENOSPC: "no space left on the device"}.get(error.errno)
    cause = cause or (error.strerror or str(error)).lower()
    return f"{cause} ({path})" if path is not None else cause


def existing_ancestor(path: Path) -> Path:
    """The nearest of `path` and its parents that exists."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def blocking_file(path: Path) -> Path:
    """The first of `path`'s parents that is a file (what makes creating `path` fail), else `path` itself."""
    for parent in reversed(Path(path).absolute().parents):
        if parent.exists() and not parent.is_dir():
            return parent
    return Path(path)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
