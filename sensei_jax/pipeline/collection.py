"""The collect stage's on-disk format: chunks of frames and simulator states, the carries that resume them, meta.json.

The counterpart of `reward/dataset.py` for the collection. `run_dir/collect/` holds (MiniHack: the first seven
keys, `image` the 80x80 crop the annotator sees, `state` the oracle's features, `interaction` and `success` named
in meta.json, no carries):

    chunk_00000.npz ...   one file per `collect.chunk_steps` policy steps of all worlds (written atomically):
        image        uint8   [T, B, H, W, 3]  the agent's observation
        state        float32 [T, B, S]        env.physics_state, enough to restore and re-render the frame
        interaction  bool    [T, B, 8]        per-object interaction flags (INTERACTION_NAMES order)
        success      bool    [T, B, K]        per-task success flags (success_names in meta.json)
        reward       float32 [T, B]
        done         bool    [T, B]
        episode_step int32   [T, B]
        distance     float32 [T, B, D]        gripper distance to each target (DISTANCE_NAMES order)
        drawer_qpos  float32 [T, B]
        stack_error  float32 [T, B]           distance of the upright block from "stacked on the flat block"
    carry_00000.npz ...   random walk: the env state and action after each chunk, so a killed run resumes exactly
    meta.json             sizes, names, num_chunks, steps/s

Readers (pairs, evaluate, report) get a `StageError` naming the file for anything missing, truncated or corrupt.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from sensei_jax import files
from sensei_jax.domains.robodesk import CHUNK_KEYS  # Robodesk's; each domain names its own (`Domain.chunk_keys`)
from sensei_jax.envs.robodesk import interest
from sensei_jax.envs.robodesk.tasks import INTERACTIONS
from sensei_jax.pipeline.rundir import StageError

INTERACTION_NAMES = INTERACTIONS  # drawer, slide, red/green/blue button, ball, upright block, flat block
DISTANCE_NAMES = interest.TARGETS  # the `distance` columns: the targets of SENSEI's interestingness heuristic


def chunk_path(directory: Path, index: int) -> Path:
    return directory / f"chunk_{index:05d}.npz"


def carry_path(directory: Path, index: int) -> Path:
    return directory / f"carry_{index:05d}.npz"


def _is_key(x) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def save_carry(path: Path, states, actions) -> None:
    """Every leaf of the env state (MJX data, solver warm start, auto-reset keys), so resuming is exact."""
    leaves = [jax.random.key_data(x) if _is_key(x) else x for x in jax.tree.leaves(states)]
    files.write_npz(path, actions=np.asarray(actions), **{f"leaf_{i:04d}": np.asarray(x) for i, x in enumerate(leaves)})


def load_carry(path: Path, like_states):
    """Restores the env states and actions saved by `_save_carry`, checked leaf by leaf against `like_states`."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise StageError(f"cannot read the collection carry {path} (corrupt?): {error}; delete it and the "
                                "chunk of the same number to redo that chunk") from error
    leaves, treedef = jax.tree.flatten(like_states)
    restored = []
    for i, like in enumerate(leaves):
        key = f"leaf_{i:04d}"
        value = arrays.get(key)
        expected = jax.random.key_data(like).shape if _is_key(like) else np.shape(like)
        if value is None or value.shape != expected:
            raise StageError(f"{path} does not match this env's state ({key}); it was written by another "
                                    "config or version: rerun with --force collect")
        restored.append(jax.random.wrap_key_data(jnp.asarray(value), impl=jax.random.key_impl(like))
                        if _is_key(like) else jnp.asarray(value, dtype=like.dtype))
    return jax.tree.unflatten(treedef, restored), jnp.asarray(arrays["actions"])


def complete_chunks(directory: Path) -> int:
    """How many leading chunks (and their carries) exist; both files are written atomically, chunk first."""
    count = 0
    while chunk_path(directory, count).exists() and carry_path(directory, count).exists():
        count += 1
    return count



def write_chunk(directory: Path, index: int, data: dict[str, np.ndarray],
                keys: tuple[str, ...] = CHUNK_KEYS) -> None:
    """Writes chunk `index` (arrays [T, B, ...] under `keys`, the domain's `chunk_keys`) atomically."""
    files.write_npz(chunk_path(directory, index), **{k: data[k] for k in keys})


def read_meta(directory: Path) -> dict[str, Any]:
    path = Path(directory) / "meta.json"
    if not path.is_file():
        raise StageError(f"the collection in {directory} is incomplete: {path} is missing (rerun the collect "
                                "stage; it resumes from its last chunk)")
    try:
        meta = files.read_json(path)
    except ValueError as error:
        raise StageError(f"{path} is corrupt: {error}") from error
    return meta


def load_chunk(directory: Path, index: int, keys: tuple[str, ...] = CHUNK_KEYS) -> dict[str, np.ndarray]:
    """Arrays of chunk `index` ([T, B, ...]); a missing key or unreadable file is a StageError naming the file."""
    path = chunk_path(Path(directory), index)
    if not path.is_file():
        raise StageError(f"collected chunk {path} is missing: rerun the collect stage")
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in keys if k not in data.files]
            if missing:
                raise StageError(f"collected chunk {path} lacks {missing}: rerun with --force collect")
            return {k: data[k] for k in keys}
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile) as error:
        raise StageError(f"collected chunk {path} is corrupt or truncated ({error}): delete it and rerun the "
                                "collect stage") from error


def load_collection(directory: Path, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """`keys` of all chunks, flattened time-major to [N = chunks * T * B, ...] plus `world` and `time` indices."""
    directory = Path(directory)
    meta = read_meta(directory)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    for index in range(meta["num_chunks"]):
        chunk = load_chunk(directory, index, keys)
        for k in keys:
            expected = meta["chunk_shapes"][k]
            if list(chunk[k].shape) != expected:
                raise StageError(f"{chunk_path(directory, index)}: '{k}' has shape {list(chunk[k].shape)}, "
                                        f"expected {expected} (truncated or from another config)")
            parts[k].append(chunk[k])
    out = {k: np.concatenate(v, axis=0) for k, v in parts.items()}  # [C*T, B, ...]
    steps, worlds = next(iter(out.values())).shape[:2]
    out = {k: v.reshape(steps * worlds, *v.shape[2:]) for k, v in out.items()}
    out["time"] = np.repeat(np.arange(steps), worlds)
    out["world"] = np.tile(np.arange(worlds), steps)
    return out


def interaction_totals(directory: Path) -> dict[str, int]:
    """Steps with each interaction flag set, summed over the collection (names from meta.json)."""
    names = read_meta(directory).get("interaction_names", INTERACTION_NAMES)
    flags = load_collection(directory, ("interaction",))["interaction"]
    return {name: int(flags[:, i].sum()) for i, name in enumerate(names)}


