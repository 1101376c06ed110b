"""The pair dataset: image pairs, the simulator states behind them and preference labels, streamed from disk.

One folder holds one dataset, shared by the `pairs` stage (which writes it), the annotators (which label it) and
reward distillation (which trains on it):

    meta.json                               format, version, num_pairs, image_shape, state_size, num_written
    images.npy                              uint8   [N, 2, H, W, 3]  (a .npy file, opened as a memory map)
    states.npy                              float32 [N, 2, S]        (simulator states of both frames)
    preference/preferences_<name>.npy       int8    [N]  0 first, 1 second, 2 tie, 3 unknown (Motif's convention)
    preference/prob_first_<name>.npy        float32 [N]  optional: P(first is preferred) from the annotator
    arrays/<name>.npy                       optional extra per-pair arrays [N, ...] (e.g. source frame indices)

Images are plain `.npy` files opened with `numpy.lib.format.open_memmap`, so 100K+ pairs at 224x224 (about 30 GB)
never need to fit in memory: slicing `ds.images[i:j]` reads only those pairs. Labels are written atomically
(temporary file + rename), so a crash while annotating never leaves a torn label file behind.

    ds = PairDataset.create(path, num_pairs=N, image_shape=(224, 224, 3), state_size=S)
    ds.images[i:j] = frames        # uint8 [j-i, 2, 224, 224, 3]
    ds.states[i:j] = states        # float32 [j-i, 2, S]
    ds.flush()                     # or ds.flush(num_written=j) to record partial progress
    ds = PairDataset.open(path)
    ds.save_preferences("oracle", labels, prob_first)
    labels = ds.load_preferences("oracle")   # int8 [N]
"""

from __future__ import annotations

import queue
import re
import threading
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np

from sensei_jax import files
from sensei_jax.reward.labels import LABEL_NAMES, Label

FORMAT = "sensei_jax.pair_dataset"
VERSION = 1

GROUND_TRUTH = "ground_truth"
# What a preference file holds, as its error messages say.
LABELS_EXPECTED = "int8 labels [N] (0 first, 1 second, 2 tie, 3 unknown)"

_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


class DatasetError(ValueError):
    """A dataset folder or one of its files is missing, corrupt or inconsistent; the message names the file."""


def _check_name(name: str, what: str) -> str:
    if not isinstance(name, str) or not _NAME_PATTERN.match(name):
        raise ValueError(f"{what} name must be letters, digits, '_', '-' or '.', got {name!r}")
    return name


def _open_npy(path: Path, mode: str) -> np.memmap:
    if not path.is_file():
        raise DatasetError(f"missing dataset file {path}")
    _check_npy_magic(path, "a numpy array")
    try:
        return np.lib.format.open_memmap(path, mode=mode)
    except (ValueError, OSError, EOFError) as error:
        raise DatasetError(f"cannot read {path} as a .npy array (corrupt or truncated?): {error}") from error


class PairDataset:
    """Image pairs on disk. `images` uint8 [N, 2, H, W, 3] and `states` float32 [N, 2, S] are memory maps."""

    def __init__(self, directory: Path, meta: dict, images: np.memmap, states: np.memmap, writable: bool):
        self.directory = directory
        self.meta = meta
        self.images = images
        self.states = states
        self.writable = writable

    # -------------------------------------------------------------------------------------------------------------
    # Creating and opening.

    @classmethod
    def create(cls, directory: str | Path, num_pairs: int, image_shape: tuple[int, int, int] = (64, 64, 3),
               state_size: int = 0, overwrite: bool = False) -> "PairDataset":
        """Preallocates the on-disk arrays (sparse files, so nothing is written until the pairs are).

        Raises FileExistsError if `directory` already holds a dataset, unless `overwrite`; overwriting removes the
        old arrays and every preference file.
        """
        directory = Path(directory)
        num_pairs = int(num_pairs)
        image_shape = tuple(int(d) for d in image_shape)
        if num_pairs < 1:
            raise ValueError(f"num_pairs must be at least 1, got {num_pairs}")
        if len(image_shape) != 3 or image_shape[2] != 3 or min(image_shape) < 1:
            raise ValueError(f"image_shape must be (H, W, 3), got {image_shape}")
        if int(state_size) < 0:
            raise ValueError(f"state_size must be >= 0, got {state_size}")
        if (directory / "meta.json").exists():
            if not overwrite:
                raise FileExistsError(f"{directory} already holds a pair dataset (pass overwrite=True to replace it)")
            for old in [*directory.glob("preference/*.npy"), *directory.glob("arrays/*.npy")]:
                old.unlink()
        (directory / "preference").mkdir(parents=True, exist_ok=True)
        (directory / "meta.json").unlink(missing_ok=True)  # the dataset is invalid until the arrays exist
        images = np.lib.format.open_memmap(directory / "images.npy", mode="w+", dtype=np.uint8,
                                           shape=(num_pairs, 2, *image_shape))
        states = np.lib.format.open_memmap(directory / "states.npy", mode="w+", dtype=np.float32,
                                           shape=(num_pairs, 2, int(state_size)))
        meta = {"format": FORMAT, "version": VERSION, "num_pairs": num_pairs, "image_shape": list(image_shape),
                "state_size": int(state_size), "num_written": 0}
        files.write_json(directory / "meta.json", meta)
        return cls(directory, meta, images, states, writable=True)

    @classmethod
    def open(cls, directory: str | Path, writable: bool = False) -> "PairDataset":
        """Opens and validates a dataset. `writable=True` maps the arrays read-write (to resume writing them)."""
        directory = Path(directory)
        meta_path = directory / "meta.json"
        if not meta_path.is_file():
            raise DatasetError(f"{directory} is not a pair dataset: {meta_path} is missing")
        try:
            meta = files.read_json(meta_path)
        except ValueError as error:
            raise DatasetError(str(error)) from error
        for key in ("format", "num_pairs", "image_shape", "state_size"):
            if not isinstance(meta, dict) or key not in meta:
                raise DatasetError(f"{meta_path} lacks the key '{key}'")
        if meta["format"] != FORMAT:
            raise DatasetError(f"{meta_path} has format {meta['format']!r}, expected {FORMAT!r}")
        if meta.get("version", VERSION) > VERSION:
            raise DatasetError(f"{meta_path} has version {meta['version']}, newer than this code reads ({VERSION})")
        num_pairs = int(meta["num_pairs"])
        mode = "r+" if writable else "r"
        images = _open_npy(directory / "images.npy", mode)
        states = _open_npy(directory / "states.npy", mode)
        expected_images = (num_pairs, 2, *[int(d) for d in meta["image_shape"]])
        if images.dtype != np.uint8 or images.shape != expected_images:
            raise DatasetError(f"{directory / 'images.npy'} holds {images.dtype} {images.shape}, but {meta_path} "
                               f"says uint8 {expected_images}")
        expected_states = (num_pairs, 2, int(meta["state_size"]))
        if states.dtype != np.float32 or states.shape != expected_states:
            raise DatasetError(f"{directory / 'states.npy'} holds {states.dtype} {states.shape}, but {meta_path} "
                               f"says float32 {expected_states}")
        meta.setdefault("num_written", num_pairs)
        return cls(directory, meta, images, states, writable=writable)

    # -------------------------------------------------------------------------------------------------------------
    # Properties.

    def __len__(self) -> int:
        return int(self.meta["num_pairs"])

    def __repr__(self) -> str:
        return (f"PairDataset({str(self.directory)!r}, pairs={len(self)}, image_shape={self.image_shape}, "
                f"state_size={self.state_size}, preferences={self.preference_names()})")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(int(d) for d in self.meta["image_shape"])

    @property
    def state_size(self) -> int:
        return int(self.meta["state_size"])

    @property
    def num_written(self) -> int:
        """How many leading pairs the writer has recorded as written (== len(self) once complete)."""
        return int(self.meta["num_written"])

    @property
    def complete(self) -> bool:
        return self.num_written >= len(self)

    def flush(self, num_written: int | None = None) -> None:
        """Writes the arrays to disk and records progress: `num_written` pairs (default all) are valid."""
        if not self.writable:
            raise PermissionError(f"{self.directory} was opened read-only; use PairDataset.open(..., writable=True)")
        self.images.flush()
        self.states.flush()
        num_written = len(self) if num_written is None else int(num_written)
        if not 0 <= num_written <= len(self):
            raise ValueError(f"num_written must be in [0, {len(self)}], got {num_written}")
        self.meta["num_written"] = num_written
        files.write_json(self.directory / "meta.json", self.meta)

    def require_complete(self) -> None:
        if not self.complete:
            raise DatasetError(f"{self.directory / 'meta.json'} records only {self.num_written} of {len(self)} pairs "
                               "as written; finish the pairs stage first")

    # -------------------------------------------------------------------------------------------------------------
    # Preferences.

    def _preference_path(self, name: str) -> Path:
        return self.directory / "preference" / f"preferences_{name}.npy"

    def _prob_first_path(self, name: str) -> Path:
        return self.directory / "preference" / f"prob_first_{name}.npy"

    def preference_names(self) -> list[str]:
        """Names of the saved label sets, sorted."""
        return sorted(p.name[len("preferences_"):-len(".npy")]
                      for p in (self.directory / "preference").glob("preferences_*.npy"))

    def save_preferences(self, name: str, labels: np.ndarray, prob_first: np.ndarray | None = None) -> Path:
        """Saves labels int8 [N] in {0 first, 1 second, 2 tie, 3 unknown} and optionally prob_first float32 [N].

        Both files are written atomically; prob_first first, so a label file on disk always has its matching
        probabilities (a stale prob_first file of the same name is removed when none is given).
        """
        _check_name(name, "preference")
        labels = validate_labels(np.asarray(labels), len(self), source=f"labels for '{name}'")
        if prob_first is not None:
            prob_first = np.asarray(prob_first)
            if prob_first.shape != (len(self),):
                raise ValueError(f"prob_first for '{name}' must have shape ({len(self)},), got {prob_first.shape}")
            prob_first = prob_first.astype(np.float32)
            finite = np.isfinite(prob_first)
            if np.any((prob_first[finite] < 0) | (prob_first[finite] > 1)):
                raise ValueError(f"prob_first for '{name}' must lie in [0, 1] (NaN allowed for unknown)")
            files.write_npy(self._prob_first_path(name), prob_first)
        else:
            self._prob_first_path(name).unlink(missing_ok=True)
        return files.write_npy(self._preference_path(name), labels)

    def load_preferences(self, name: str) -> np.ndarray:
        """Labels int8 [N]. Raises DatasetError naming the file if it is corrupt, of the wrong length or values."""
        _check_name(name, "preference")
        path = self._preference_path(name)
        if not path.is_file():
            raise FileNotFoundError(f"no preference labels named '{name}' in {self.directory} (expected {path}; "
                                    f"available: {self.preference_names() or 'none'})")
        labels = _load_npy(path, LABELS_EXPECTED)
        try:
            return validate_labels(labels, len(self), source=str(path))
        except ValueError as error:
            raise DatasetError(str(error)) from error

    def load_prob_first(self, name: str) -> np.ndarray | None:
        """prob_first float32 [N] saved with labels `name`, or None if there is none."""
        _check_name(name, "preference")
        path = self._prob_first_path(name)
        if not path.is_file():
            return None
        prob = _load_npy(path, "float32 P(first) [N]")
        if prob.shape != (len(self),):
            raise DatasetError(f"{path} has shape {prob.shape}, but the dataset has {len(self)} pairs")
        return prob.astype(np.float32)

    def label_counts(self, name: str) -> dict[str, int]:
        counts = np.bincount(self.load_preferences(name), minlength=len(Label))
        return {label: int(count) for label, count in zip(LABEL_NAMES, counts)}

    # -------------------------------------------------------------------------------------------------------------
    # Extra per-pair arrays (e.g. which collected frames a pair came from).

    def save_array(self, name: str, array: np.ndarray) -> Path:
        """Saves an extra array [N, ...] atomically under arrays/<name>.npy."""
        _check_name(name, "array")
        array = np.asarray(array)
        if array.ndim == 0 or array.shape[0] != len(self):
            raise ValueError(f"array '{name}' must have {len(self)} rows, got shape {array.shape}")
        return files.write_npy(self.directory / "arrays" / f"{name}.npy", array)

    def load_array(self, name: str) -> np.ndarray:
        _check_name(name, "array")
        path = self.directory / "arrays" / f"{name}.npy"
        if not path.is_file():
            raise FileNotFoundError(f"no array named '{name}' in {self.directory} (expected {path})")
        array = _load_npy(path)
        if array.ndim == 0 or array.shape[0] != len(self):
            raise DatasetError(f"{path} has shape {array.shape}, but the dataset has {len(self)} pairs")
        return array


NPY_MAGIC = b"\x93NUMPY"  # the first bytes of every file numpy.save writes


def _check_npy_magic(path: Path, expected: str) -> None:
    """Raises DatasetError unless `path` starts like a .npy file (np.load calls anything else pickled data)."""
    with path.open("rb") as f:
        head = f.read(len(NPY_MAGIC))
    if head != NPY_MAGIC:
        raise DatasetError(f"{path} is not a .npy file (it does not start with numpy's magic bytes \\x93NUMPY): "
                           f"expected {expected} written by numpy.save")


def _load_npy(path: Path, expected: str = "a numpy array") -> np.ndarray:
    """The array in .npy file `path`; DatasetError naming the file and `expected` (what it should hold) if it is
    not one, holds Python objects, or is cut short."""
    _check_npy_magic(path, expected)
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as error:
        if "allow_pickle" in str(error):  # numpy refuses an object array without allow_pickle
            raise DatasetError(f"{path} holds Python objects (an object array): expected {expected}") from error
        raise DatasetError(f"cannot read {path} as a .npy array (corrupt or truncated?): {error}") from error
    except (OSError, EOFError) as error:
        raise DatasetError(f"cannot read {path} as a .npy array (corrupt or truncated?): {error}") from error


def validate_labels(labels: np.ndarray, num_pairs: int, source: str) -> np.ndarray:
    """Checks labels [num_pairs] hold only {0, 1, 2, 3} (floats allowed if integral, as Motif's files are) -> int8."""
    labels = np.asarray(labels)
    if labels.shape != (num_pairs,):
        raise ValueError(f"{source}: expected {num_pairs} labels (shape ({num_pairs},)), got shape {labels.shape}")
    if not (np.issubdtype(labels.dtype, np.integer) or np.issubdtype(labels.dtype, np.floating)):
        raise ValueError(f"{source}: labels must be integers in {{0, 1, 2, 3}}, got dtype {labels.dtype}")
    bad = ~np.isin(labels, tuple(Label))
    if np.any(bad):
        values = np.unique(labels[bad])[:5].tolist()
        raise ValueError(f"{source}: labels must be in {{0 first, 1 second, 2 tie, 3 unknown}}, found {values} "
                         f"at {int(bad.sum())} positions (first at index {int(np.argmax(bad))})")
    return labels.astype(np.int8)


# -----------------------------------------------------------------------------------------------------------------
# Batches for training: shuffled index batches read from the memory map, in a background thread.


class PairBatch(NamedTuple):
    """images uint8 [B, 2, h, w, 3]; labels int8 [B]; mask bool [B] (False marks padding); indices int64 [B]."""

    images: np.ndarray
    labels: np.ndarray
    mask: np.ndarray
    indices: np.ndarray


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 [..., H, W, 3] -> uint8 [..., size, size, 3], resized exactly as the reward model resizes its inputs
    (antialiased bilinear, `sensei_jax.reward.model.resize`), then rounded."""
    from sensei_jax.reward.model import resize_uint8

    height, width = images.shape[-3:-1]
    if (height, width) == (size, size):
        return images
    lead = images.shape[:-3]
    flat = np.asarray(resize_uint8(np.ascontiguousarray(images).reshape(-1, height, width, 3), size))
    return flat.reshape(*lead, size, size, 3)


def iterate_batches(source: PairDataset | np.ndarray, indices: np.ndarray, labels: np.ndarray, batch_size: int,
                    rng: np.random.Generator | None = None, image_size: int | None = None, pad: bool = True,
                    prefetch: int = 2) -> Iterator[PairBatch]:
    """Yields batches of the pairs `indices` (shuffled with `rng` if given), read from the dataset's memory map.

    `source` is a PairDataset or an images array [N, 2, H, W, 3] (e.g. a memory-mapped copy resized to the model's
    resolution); labels int8 [N] over the whole dataset. Every batch has exactly `batch_size` rows when `pad` (the
    last one is padded by repeating pairs, with mask False), so a compiled step sees one shape. Within a batch the
    reads are in ascending index order (sequential disk access); the batch itself is shuffled by the epoch
    permutation. With `image_size` the images are resized to [image_size, image_size] as the reward model would
    resize them. Reading runs `prefetch` batches ahead in a background thread so disk I/O overlaps the train step.
    """
    images_source = source.images if isinstance(source, PairDataset) else source
    indices = np.asarray(indices, dtype=np.int64)
    if rng is not None:
        indices = rng.permutation(indices)
    starts = range(0, len(indices), batch_size)

    def load(start: int) -> PairBatch:
        chosen = np.sort(indices[start:start + batch_size])
        valid = len(chosen)
        if pad and valid < batch_size:
            chosen = np.concatenate([chosen, np.resize(chosen, batch_size - valid)])
        images = images_source[chosen]
        if image_size is not None:
            images = resize_images(images, image_size)
        mask = np.arange(len(chosen)) < valid
        return PairBatch(np.ascontiguousarray(images), labels[chosen].astype(np.int8), mask, chosen)

    if prefetch <= 0:
        for start in starts:
            yield load(start)
        return

    buffer: queue.Queue = queue.Queue(maxsize=prefetch)
    stop = threading.Event()
    done = object()

    def worker() -> None:
        try:
            for start in starts:
                if stop.is_set():
                    return
                buffer.put(load(start))
            buffer.put(done)
        except BaseException as error:  # re-raised in the consumer
            buffer.put(error)

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    try:
        while True:
            item = buffer.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a worker waiting on a full queue
            try:
                buffer.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.05)


def split_indices(num_pairs: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded train/validation split over all pair indices: (train int64 [N - V], val int64 [V]), both sorted.

    Splitting all pairs (not only the labelled ones) keeps the same validation pairs for every label set.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    order = np.random.default_rng(seed).permutation(num_pairs)
    num_val = int(np.ceil(val_fraction * num_pairs)) if val_fraction > 0 else 0
    num_val = min(num_val, num_pairs - 1)
    return np.sort(order[num_val:]), np.sort(order[:num_val])

