"""Bradley-Terry distillation of pairwise preferences into the Motif reward model.

For a pair (o1, o2) with label y (0 first preferred, 1 second, 2 tie -> 0.5; 3 unknown pairs are dropped), the
loss is Motif's soft-label cross-entropy over the two rewards:

    logp = log_softmax([R(o1), R(o2)]);   loss = -[(1 - y) logp_1 + y logp_2]   (mean over the batch)

Accuracy counts non-tie pairs whose preferred image gets the higher reward. The split is seeded over all pairs
(95/5 by default), the optimiser is Adam with L2 weight decay added to the gradient (as torch.optim.Adam does), and
after each epoch the model is validated; the checkpoint with the best validation accuracy (ties broken by lower
validation loss) is kept. Every epoch also writes a resume checkpoint, so a restarted run continues after the last
finished epoch with the same per-epoch shuffles. The output folder holds:

    model.json                 architecture, label set, dataset and training settings
    checkpoints/best/<epoch>   orbax: {"params"} of the best epoch by validation accuracy
    checkpoints/latest/<epoch> orbax: params, optimiser state, epoch and step (for resuming)
    reward_stats.json          reward mean, std, min, max and quantiles over training images (best params)
    metrics.jsonl + events.*   TensorBoard scalars (train/loss every `log_every` steps, val/* every epoch)
    curve.csv                  one row per epoch: train and validation loss and accuracy
    summary.json               what was trained and how well

`RewardModel.load(out_dir)` reads it back.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import io
import math
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from sensei_jax import files
from sensei_jax.checkpoint import Checkpointer
from sensei_jax.distributed import barrier, is_main_process, replicated, rows_array, to_host
from sensei_jax.hardware import describe as describe_hardware
from sensei_jax.metrics import MetricsWriter
from sensei_jax.progress import bar
from sensei_jax.reward.config import RewardConfig
from sensei_jax.reward.dataset import PairDataset, iterate_batches, split_indices
from sensei_jax.reward.labels import LABEL_NAMES, Label
from sensei_jax.reward.model import RewardModelConfig, apply, init_params, resize_uint8

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
CURVE_COLUMNS = ("epoch", "step", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "pairs_per_s")


# -----------------------------------------------------------------------------------------------------------------
# Loss and compiled steps.


def preference_loss(rewards: jax.Array, labels: jax.Array, weight: jax.Array) -> dict[str, jax.Array]:
    """Bradley-Terry soft-label cross-entropy, summed (the caller divides).

    rewards float32 [B, 2]; labels int [B] in {0, 1, 2, 3}; weight bool [B] (padding False). Unknown labels get
    weight 0. Returns sums over the batch: loss, count (weighted pairs), correct and decided (non-tie pairs).
    """
    weight = weight & (labels != Label.UNKNOWN)
    second = jnp.where(labels == Label.SECOND, 1.0, jnp.where(labels == Label.TIE, 0.5, 0.0))
    logp = jax.nn.log_softmax(rewards, axis=-1)
    nll = -((1.0 - second) * logp[:, 0] + second * logp[:, 1])
    decided = weight & ((labels == Label.FIRST) | (labels == Label.SECOND))
    correct = decided & ((rewards[:, 1] > rewards[:, 0]) == (labels == Label.SECOND))
    return {"loss": jnp.sum(jnp.where(weight, nll, 0.0)), "count": jnp.sum(weight),
            "correct": jnp.sum(correct), "decided": jnp.sum(decided)}


def pair_rewards(model_cfg: RewardModelConfig, params: dict, images: jax.Array) -> jax.Array:
    """images uint8 [B, 2, H, W, 3] -> rewards float32 [B, 2]."""
    batch = images.shape[0]
    return apply(model_cfg, params, images.reshape(batch * 2, *images.shape[2:])).reshape(batch, 2)


def make_optimizer(learning_rate: float, weight_decay: float) -> optax.GradientTransformation:
    # Coupled L2 (added to the gradient before Adam's scaling), matching torch.optim.Adam(weight_decay=...).
    return optax.chain(optax.add_decayed_weights(weight_decay), optax.adam(learning_rate))


@functools.lru_cache(maxsize=8)
def make_steps(model_cfg: RewardModelConfig, learning_rate: float, weight_decay: float,
               mesh: Mesh | None = None) -> tuple[optax.GradientTransformation, Callable, Callable]:
    """(optimizer, train_step, eval_step), the steps jit-compiled once per batch shape. Cached, so a resumed or
    repeated training in the same process reuses the compiled steps.

    With a `mesh` (a `data` axis over the devices) the batch (images, labels, mask) is split over `data`, params,
    optimiser state and the loss sums are replicated: each device differentiates its rows and XLA all-reduces the
    gradient sums, so a step equals the one-device step up to float32 summation order."""
    optimizer = make_optimizer(learning_rate, weight_decay)

    def loss_fn(params, images, labels, mask):
        sums = preference_loss(pair_rewards(model_cfg, params, images), labels, mask)
        return sums["loss"] / jnp.maximum(sums["count"], 1), sums

    def train_step(params, opt_state, images, labels, mask):
        (_, sums), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, images, labels, mask)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, sums

    def eval_step(params, images, labels, mask):
        return loss_fn(params, images, labels, mask)[1]

    if mesh is None:
        return optimizer, jax.jit(train_step, donate_argnums=(0, 1)), jax.jit(eval_step)
    whole, rows = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    train_step = jax.jit(train_step, donate_argnums=(0, 1), in_shardings=(whole, whole, rows, rows, rows),
                         out_shardings=whole)
    eval_step = jax.jit(eval_step, in_shardings=(whole, rows, rows, rows), out_shardings=whole)
    return optimizer, train_step, eval_step


def data_mesh(devices: list | None = None, batch_size: int | None = None) -> Mesh:
    """A one-axis mesh `data` over `devices` (default: every device of every host). `batch_size` (the
    `reward.batch_size` setting) must split evenly over it."""
    devices = list(jax.devices() if devices is None else devices)
    if batch_size is not None and batch_size % len(devices):
        raise ValueError(f"reward.batch_size={batch_size} must be a multiple of the {len(devices)} devices it is "
                         f"split over")
    return Mesh(np.array(devices, dtype=object), ("data",))


def _on_mesh(mesh: Mesh, batch) -> tuple[jax.Array, jax.Array, jax.Array]:
    """A host `PairBatch` (the same on every host) as global arrays split over `data`."""
    return tuple(rows_array(mesh, a.shape, a.__getitem__) for a in (batch.images, batch.labels, batch.mask))


def _replicate(mesh: Mesh, tree):
    """Every leaf of `tree` (host or device arrays, the same on every host) replicated on the mesh."""
    return jax.tree.map(lambda x: replicated(mesh, x), tree)


# -----------------------------------------------------------------------------------------------------------------
# Training.


class _Totals:
    """Running sums of preference_loss outputs. Device values are fetched only when read, so the host never waits
    for a train step to finish before dispatching the next one."""

    def __init__(self):
        self._pending: list[dict] = []
        self.sums = {"loss": 0.0, "count": 0.0, "correct": 0.0, "decided": 0.0}

    def add(self, sums: dict) -> None:
        self._pending.append(sums)

    def _fetch(self) -> dict[str, float]:
        for item in jax.device_get(self._pending):
            for key, value in item.items():
                self.sums[key] += float(value)
        self._pending = []
        return self.sums

    @property
    def loss(self) -> float:
        sums = self._fetch()
        return sums["loss"] / sums["count"] if sums["count"] else math.nan

    @property
    def accuracy(self) -> float:
        sums = self._fetch()
        return sums["correct"] / sums["decided"] if sums["decided"] else math.nan


def _selection_score(accuracy: float, loss: float) -> float:
    """Orders epochs by validation accuracy, then by lower loss (below accuracy's resolution of 1 / pairs)."""
    accuracy = 0.0 if math.isnan(accuracy) else accuracy
    loss = 1e6 if math.isnan(loss) else loss
    return accuracy + 1e-7 * (1.0 - math.tanh(loss))


def evaluate(eval_step: Callable, params: dict, images: np.ndarray, indices: np.ndarray, labels: np.ndarray,
             batch_size: int, prefetch: int = 2, mesh: Mesh | None = None) -> _Totals:
    """Sums of the loss and accuracy over the pairs `indices` of images uint8 [N, 2, h, w, 3] (each batch split
    over the `data` axis of `mesh` when given, as `make_steps` compiled `eval_step` for it)."""
    totals = _Totals()
    for batch in iterate_batches(images, indices, labels, batch_size, prefetch=prefetch):
        arrays = (batch.images, batch.labels, batch.mask) if mesh is None else _on_mesh(mesh, batch)
        totals.add(eval_step(params, *arrays))
    return totals


_score = jax.jit(apply, static_argnums=0)


def reward_statistics(model_cfg: RewardModelConfig, params: dict, images: np.ndarray, indices: np.ndarray,
                      max_images: int, seed: int, batch_size: int = 128, progress: bool = True,
                      mesh: Mesh | None = None) -> dict[str, Any]:
    """Reward mean, std, min, max and quantiles over both frames of the pairs `indices` of images uint8
    [N, 2, h, w, 3] (a seeded subsample of at most `max_images` frames). Normalised quantiles are of
    (r - mean) / std, as Motif stores them. With a `mesh` (params replicated on it) the frames of each batch are
    split over its `data` axis; the batch is rounded up to a multiple of it."""
    if mesh is not None:
        batch_size = mesh.shape["data"] * -(-batch_size // mesh.shape["data"])
    frames_of = np.stack(np.meshgrid(indices, [0, 1], indexing="ij"), -1).reshape(-1, 2)  # (pair, slot) rows
    if len(frames_of) > max_images:
        chosen = np.random.default_rng(seed).choice(len(frames_of), max_images, replace=False)
        frames_of = frames_of[np.sort(chosen)]
    rewards = []
    progress_bar = bar(len(frames_of), desc="reward stats", unit="img", disable=not progress)
    for start in range(0, len(frames_of), batch_size):
        rows = frames_of[start:start + batch_size]
        valid = len(rows)
        if valid < batch_size:  # pad to one compiled shape
            rows = np.concatenate([rows, np.resize(rows, (batch_size - valid, 2))])
        pairs, slots = rows[:, 0], rows[:, 1]
        order = np.argsort(pairs, kind="stable")  # sequential reads from the memory map
        frames = np.empty((len(rows), *images.shape[2:]), np.uint8)
        frames[order] = images[pairs[order], slots[order]]
        frames = frames if mesh is None else rows_array(mesh, frames.shape, frames.__getitem__)
        rewards.append(to_host(_score(model_cfg, params, frames))[:valid])
        progress_bar.update(valid)
    progress_bar.close()
    rewards = np.concatenate(rewards).astype(np.float64)
    mean, std = float(rewards.mean()), float(rewards.std())
    std_safe = std if std > 1e-8 else 1.0
    return {"count": int(len(rewards)), "mean": mean, "std": std, "min": float(rewards.min()),
            "max": float(rewards.max()),
            "quantiles": {f"{q:g}": float(v) for q, v in zip(QUANTILES, np.quantile(rewards, QUANTILES))},
            "normalized_quantiles": {f"{q:g}": float(v)
                                     for q, v in zip(QUANTILES, np.quantile((rewards - mean) / std_safe, QUANTILES))}}


def model_resolution_images(dataset: PairDataset, size: int, cache_dir: Path, chunk: int = 64,
                            progress: bool = True) -> np.ndarray:
    """The dataset's images at the model's input resolution: uint8 [N, 2, size, size, 3], memory-mapped.

    Images already at `size` are the dataset's own memory map. Otherwise they are resized once, with the model's own
    `resize`, into `cache_dir/images_<size>.npy` (reused by later runs and resumes), so each epoch reads 64x64
    frames instead of resizing 224x224 ones in every train step.
    """
    if dataset.image_shape[:2] == (size, size):
        return dataset.images
    path, record_path = cache_dir / f"images_{size}.npy", cache_dir / f"images_{size}.json"
    record = {"source": str(dataset.directory.resolve()), "num_pairs": len(dataset),
              "source_shape": list(dataset.image_shape), "size": size,
              "source_mtime_ns": (dataset.directory / "images.npy").stat().st_mtime_ns}
    if not is_main_process():  # process 0 writes the cache (on the shared run folder); the others read it once written
        barrier(f"resize cache {path}")
        return np.lib.format.open_memmap(path, mode="r")
    if record_path.is_file() and path.is_file() and files.read_json(record_path) == record:
        barrier(f"resize cache {path}")
        return np.lib.format.open_memmap(path, mode="r")
    record_path.unlink(missing_ok=True)
    cache_dir.mkdir(parents=True, exist_ok=True)
    cache = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(len(dataset), 2, size, size, 3))
    height, width = dataset.image_shape[:2]
    progress_bar = bar(len(dataset), desc=f"resize to {size}px", unit="pair", disable=not progress)
    for start in range(0, len(dataset), chunk):
        pairs = np.asarray(dataset.images[start:start + chunk])
        valid = len(pairs)
        if valid < chunk:  # one compiled shape
            pairs = np.concatenate([pairs, np.zeros((chunk - valid, *pairs.shape[1:]), np.uint8)])
        small = resize_uint8(pairs.reshape(chunk * 2, height, width, 3), size)
        cache[start:start + valid] = np.asarray(small).reshape(chunk, 2, size, size, 3)[:valid]
        progress_bar.update(valid)
    progress_bar.close()
    cache.flush()
    files.write_json(record_path, record)
    barrier(f"resize cache {path}")
    return np.lib.format.open_memmap(path, mode="r")


def _write_curve(path: Path, rows: list[dict]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CURVE_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    files.write_text(path, buffer.getvalue())


def _read_curve(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [{key: float(value) if key not in ("epoch", "step") else int(value) for key, value in row.items()}
            for row in csv.DictReader(path.read_text().splitlines())]


def train(dataset: PairDataset, preferences: str, cfg: RewardConfig, out_dir: str | Path,
          progress: bool = True, devices: list | None = None) -> dict[str, Any]:
    """Trains (or resumes training of) the reward model on labels `preferences` of `dataset`; returns the summary.

    Data parallel over `devices` (default: every device of every host; `reward.batch_size` must be a multiple of
    their number): every process runs this with the same arguments, each batch is split over the devices, and only
    process 0 writes the JSON, CSV and metrics files (orbax coordinates the checkpoints' writers itself).
    Resuming needs the same architecture, label set and dataset size as recorded in `out_dir/model.json`.
    A finished run (all `cfg.epochs` done, statistics written) returns its saved summary without training.
    """
    out_dir = Path(out_dir)
    dataset.require_complete()
    mesh = data_mesh(devices, cfg.batch_size)
    writes = is_main_process()
    progress = progress and writes  # one progress bar, process 0's
    labels = dataset.load_preferences(preferences)
    model_cfg = RewardModelConfig.from_config(cfg)
    record = {"model": model_cfg.to_dict(), "preferences": preferences, "dataset": str(dataset.directory),
              "num_pairs": len(dataset), "image_shape": list(dataset.image_shape),
              "train_config": dataclasses.asdict(cfg)}
    _check_resumable(out_dir, record)
    if writes:
        files.write_json(out_dir / "model.json", record)
    summary_path = out_dir / "summary.json"

    train_idx, val_idx = split_indices(len(dataset), cfg.val_fraction, cfg.seed)
    known = labels != Label.UNKNOWN
    train_labeled, val_labeled = train_idx[known[train_idx]], val_idx[known[val_idx]]
    if len(train_labeled) == 0 or len(val_labeled) == 0:
        raise ValueError(f"labels '{preferences}' in {dataset.directory} leave {len(train_labeled)} training and "
                         f"{len(val_labeled)} validation pairs after dropping unknowns (label 3); need both > 0")

    optimizer, train_step, eval_step = make_steps(model_cfg, cfg.learning_rate, cfg.weight_decay, mesh)
    params = init_params(model_cfg, cfg.seed)
    opt_state = jax.jit(optimizer.init)(params)  # one compile instead of one per parameter shape
    latest = Checkpointer(out_dir / "checkpoints" / "latest", max_to_keep=1)
    best = Checkpointer(out_dir / "checkpoints" / "best", max_to_keep=1, best_metric="val_score")
    state = {"params": params, "opt_state": opt_state, "epoch": np.int64(0), "step": np.int64(0)}
    if latest.latest_step is not None:
        state = latest.restore(like=state)
    start_epoch, step = int(state["epoch"]), int(state["step"])
    # Fresh or restored, the state is replicated on the mesh alike, so a resumed run hits the compiled train step of
    # the same process instead of compiling it again.
    params, opt_state = _replicate(mesh, (state["params"], state["opt_state"]))
    curve = [row for row in _read_curve(out_dir / "curve.csv") if row["epoch"] <= start_epoch]

    steps_per_epoch = math.ceil(len(train_labeled) / cfg.batch_size)
    counts = np.bincount(labels, minlength=len(Label))
    if start_epoch >= cfg.epochs and summary_path.is_file() and (out_dir / "reward_stats.json").is_file():
        latest.close()
        best.close()
        return files.read_json(summary_path)
    if start_epoch:
        print(f"[distill] resuming after epoch {start_epoch} of {cfg.epochs} from {latest.directory}")

    started = time.time()
    images = model_resolution_images(dataset, model_cfg.image_size, out_dir / "cache", progress=progress)
    writer = MetricsWriter(out_dir) if writes else None
    progress_bar = bar(total=cfg.epochs * steps_per_epoch, desc="distill", unit="step", initial=start_epoch *
                       steps_per_epoch, disable=not progress)
    try:
        for epoch in range(start_epoch + 1, cfg.epochs + 1):
            epoch_start = time.time()
            totals, window = _Totals(), _Totals()
            shuffle = np.random.default_rng([cfg.seed, epoch])
            for batch in iterate_batches(images, train_labeled, labels, cfg.batch_size, rng=shuffle,
                                         prefetch=cfg.prefetch):
                params, opt_state, sums = train_step(params, opt_state, *_on_mesh(mesh, batch))
                step += 1
                totals.add(sums)
                window.add(sums)
                progress_bar.update(1)
                if step % cfg.log_every == 0 and writer is not None:
                    writer.scalars(step, {"train/loss": window.loss, "train/accuracy": window.accuracy})
                    progress_bar.set_postfix(epoch=epoch, loss=f"{window.loss:.4f}")
                    window = _Totals()
            jax.block_until_ready(params)  # dispatch is asynchronous: time the finished epoch
            epoch_time = time.time() - epoch_start
            val = evaluate(eval_step, params, images, val_labeled, labels, cfg.batch_size, cfg.prefetch, mesh)
            row = {"epoch": epoch, "step": step, "train_loss": totals.loss, "train_accuracy": totals.accuracy,
                   "val_loss": val.loss, "val_accuracy": val.accuracy,
                   "pairs_per_s": len(train_labeled) / max(epoch_time, 1e-9)}
            if writer is not None:
                writer.scalars(step, {"epoch": epoch, "val/loss": val.loss, "val/accuracy": val.accuracy,
                                      "train/epoch_loss": totals.loss, "train/epoch_accuracy": totals.accuracy,
                                      "train/pairs_per_s": row["pairs_per_s"]})
                writer.flush()
            score = _selection_score(val.accuracy, val.loss)
            best.save(epoch, {"params": params}, metrics={"val_score": score, "val_accuracy": row["val_accuracy"],
                                                           "val_loss": row["val_loss"]})
            latest.save(epoch, {"params": params, "opt_state": opt_state, "epoch": np.int64(epoch),
                                "step": np.int64(step)})
            curve.append(row)
            if writes:
                _write_curve(out_dir / "curve.csv", curve)
            progress_bar.write(f"[distill] epoch {epoch}/{cfg.epochs}: train loss {totals.loss:.4f} "
                               f"acc {totals.accuracy:.3f} | val loss {val.loss:.4f} acc {val.accuracy:.3f} "
                               f"| {row['pairs_per_s']:.0f} pairs/s")
    finally:
        progress_bar.close()
        if writer is not None:
            writer.close()

    best_epoch = best.best_step
    best_params = _replicate(mesh, best.restore(best_epoch, like={"params": params})["params"])
    latest.close()
    best.close()
    stats = reward_statistics(model_cfg, best_params, images, train_idx, cfg.stats_max_images, cfg.seed,
                              progress=progress, mesh=mesh)
    if writes:
        files.write_json(out_dir / "reward_stats.json", {"epoch": best_epoch, **stats})
    best_row = next(row for row in curve if row["epoch"] == best_epoch)
    summary = {
        "preferences": preferences, "best_val_accuracy": best_row["val_accuracy"],
        "best_val_loss": best_row["val_loss"], "best_epoch": best_epoch, "train_pairs": int(len(train_labeled)),
        "val_pairs": int(len(val_labeled)), "epochs": cfg.epochs, "steps": step,
        "val_decided_pairs": int(np.isin(labels[val_labeled], (Label.FIRST, Label.SECOND)).sum()),
        "dropped_unknown": int((~known).sum()), "dataset": str(dataset.directory), "num_pairs": len(dataset),
        "label_counts": {name: int(c) for name, c in zip(LABEL_NAMES, counts)},
        "final": curve[-1], "reward_stats": stats, "model": model_cfg.to_dict(),
        "train_seconds_this_session": time.time() - started, "hardware": describe_hardware(),
        "devices": len(mesh.devices.flat),
    }
    if writes:
        files.write_json(summary_path, summary)
    return summary


def _check_resumable(out_dir: Path, record: dict) -> None:
    path = out_dir / "model.json"
    if not path.is_file() or not (out_dir / "checkpoints" / "latest").is_dir():
        return
    previous = files.read_json(path)
    for key in ("model", "preferences", "num_pairs", "image_shape"):
        if previous.get(key) != record[key]:
            raise ValueError(f"{path} records {key}={previous.get(key)!r} but this run has {record[key]!r}; "
                             f"cannot resume — use a fresh output folder (or delete {out_dir})")
    for key in ("seed", "val_fraction", "batch_size"):
        if previous.get("train_config", {}).get(key) != record["train_config"][key]:
            raise ValueError(f"{path} records reward.{key}={previous['train_config'].get(key)!r} but this run has "
                             f"{record['train_config'][key]!r}; cannot resume — use a fresh output folder")
