"""Stage `pairs`: sample image pairs from the collection and re-render them for the annotator.

Frames are classed by SENSEI's heuristic (`sensei_jax.envs.robodesk.interest`, thresholds in the `interest`
section) on the features the collection stored: "very good" frames are interesting with the gripper very near a
target, "very bad" ones are not interesting with every target far away. A contrastive pair is one good and one bad
frame with the good one in a random slot; that slot is its ground-truth label. Uniform pairs are two random
frames, labelled by comparing their heuristic scores as the oracle annotator does (ties inside
`interest.tie_margin`). Tiny collections may hold no strictly good or bad frames; then the top and bottom
`pairs.fallback_quantile` of the score stand in, and the summary says so.

The chosen frames are restored from their simulator states and rendered again at the annotator's resolution and
camera (SENSEI: 224x224, "right"), then written into a `PairDataset` in `run_dir/pairs`, with the ground truth
under the name `ground_truth` and the source frame indices as the extra array `source_index` [N, 2].
With `pairs.second_camera` (SENSEI's GPT-4 set: "left") the same pairs are also rendered from that camera into
`run_dir/pairs/views/<camera>/`, a PairDataset of its own, for the annotate stage to label both views.
Resumable: the pair plan is fixed first (`plan.npz`), and rendering continues after the last flushed batch.
"""

from __future__ import annotations

import argparse
import zipfile
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from sensei_jax import files, progress
from sensei_jax.config import Config
from sensei_jax.pipeline import collection, rundir
from sensei_jax.pipeline.config import PairsConfig
from sensei_jax.pipeline.envs import compiled_once, domain, make_env
from sensei_jax.reward.dataset import GROUND_TRUTH, DatasetError, PairDataset

CONTRASTIVE, UNIFORM = 0, 1


def plan_pairs(labels: dict[str, np.ndarray], cfg: PairsConfig,
               compare: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]],
               key: np.random.Generator) -> dict[str, Any]:
    """Chooses pairs of frame indices from the heuristic's `labels` of the frames ('score', 'good', 'bad'; Robodesk:
    `interest.interest`); `compare(score_first, score_second) -> (prob_first, label)` labels the uniform pairs.
    Returns `index` int64 [N, 2], `ground_truth` int8 [N], `kind` int8 [N]."""
    score = labels["score"]
    num = len(score)
    good, bad = np.flatnonzero(labels["good"]), np.flatnonzero(labels["bad"])
    fallback = len(good) == 0 or len(bad) == 0
    if fallback:
        order = np.argsort(score, kind="stable")
        cut = max(1, int(cfg.fallback_quantile * num))
        bad, good = order[:cut], order[num - cut:]
    pieces_index, pieces_label, pieces_kind = [], [], []
    if cfg.contrastive:
        g = key.choice(good, cfg.contrastive)
        b = key.choice(bad, cfg.contrastive)
        slot = key.integers(0, 2, cfg.contrastive)  # where the interesting frame goes; it is also the label
        index = np.where(slot[:, None] == 0, np.stack([g, b], 1), np.stack([b, g], 1))
        pieces_index.append(index)
        pieces_label.append(slot.astype(np.int8))
        pieces_kind.append(np.full(cfg.contrastive, CONTRASTIVE, np.int8))
    if cfg.uniform:
        first = key.integers(0, num, cfg.uniform)
        second = (first + key.integers(1, max(num, 2), cfg.uniform)) % num  # never the same frame
        _, label = compare(score[first], score[second])
        pieces_index.append(np.stack([first, second], 1))
        pieces_label.append(label)
        pieces_kind.append(np.full(cfg.uniform, UNIFORM, np.int8))
    return {"index": np.concatenate(pieces_index).astype(np.int64),
            "ground_truth": np.concatenate(pieces_label), "kind": np.concatenate(pieces_kind),
            "fallback": fallback, "num_good": int(labels["good"].sum()), "num_bad": int(labels["bad"].sum())}


def render_settings(cfg: Config) -> tuple[int, str]:
    """(image size, camera) of the pair images: `pairs.*`, else the annotator's resolution, else the env's."""
    size = cfg.pairs.image_size
    if size is None:
        vlm = getattr(cfg, "vlm", None)
        size = getattr(vlm, "image_size", None) or cfg.env.image_size
    return int(size), cfg.pairs.camera or cfg.env.camera


def build_renderer(env, camera: str, size: int):
    """Compiled: physics states f32 [B, S] -> uint8 [B, size, size, 3] (B fixed per renderer: the batch ray
    tracer's context is built for a world count)."""
    return jax.jit(lambda physics: env.render(env.restore(physics), camera, size))


def run_copied(cfg: Config, run_dir: Path) -> dict[str, Any]:
    """The pairs of a domain whose worlds cannot be restored (MiniHack, the toy): frames drawn from the collection
    (SENSEI on MiniHack: uniformly random pairs, `pairs.uniform`; contrastive ones by the heuristic if
    `pairs.contrastive`), copied as they were stored: for MiniHack the native 80x80 crop (16 px per tile) that
    SENSEI's annotator saw. Nothing is re-rendered; the pairs' `states` are the stored states of both frames (the
    oracle's features). Ground truth: the domain's heuristic scores compared (`Domain.compare`)."""
    found = domain(cfg)
    out = run_dir / "pairs"
    source = run_dir / "collect"
    meta = collection.read_meta(source)
    if meta.get("domain", "robodesk") != found.name:
        raise rundir.StageError(f"{source} holds a {meta.get('domain', 'robodesk')} collection, but run.domain is "
                                f"{found.name}: rerun with --force collect")
    features = collection.load_collection(source, found.interest_keys)
    plan = _plan(cfg, out / "plan.npz", features)
    features = features["state"]
    index = plan["index"]
    if index.max() >= len(features):
        raise rundir.StageError(f"{out / 'plan.npz'} refers to frame {int(index.max())}, but {source} holds "
                                f"{len(features)}; rerun with --force pairs")
    size = int(meta["image_size"])
    dataset = copy_pairs(source, meta, out, index, features, size, cfg.pairs.render_batch)
    dataset.save_preferences(GROUND_TRUTH, plan["ground_truth"])
    dataset.save_array("source_index", index)
    dataset.save_array("kind", plan["kind"])
    counts = dataset.label_counts(GROUND_TRUTH)
    return {"pairs": len(index), "contrastive": int((plan["kind"] == CONTRASTIVE).sum()),
            "uniform": int((plan["kind"] == UNIFORM).sum()), "image_size": size, "camera": "crop",
            "second_camera": None, "fallback_quantile_used": bool(plan["fallback"]),
            "good_frames": int(plan["num_good"]), "bad_frames": int(plan["num_bad"]), "ground_truth": counts,
            "dataset": str(out)}


def copy_pairs(source: Path, meta: dict[str, Any], dataset_dir: Path, index: np.ndarray, features: np.ndarray,
               size: int, batch: int) -> PairDataset:
    """Copies the collected frames of the pairs `index` [N, 2] (flat collection indices, time-major) into the
    PairDataset at `dataset_dir`, reading one chunk file at a time, resuming after its last flushed batch."""
    num_pairs, shape = len(index), (size, size, 3)
    dataset = resumable_dataset(dataset_dir, num_pairs, shape, features.shape[-1])
    worlds, chunk_steps = meta["num_envs"], meta["chunk_steps"]
    frames_per_chunk = worlds * chunk_steps
    bar = progress.bar(num_pairs, desc="pairs (copy frames)", unit="pair", initial=dataset.num_written)
    cache: dict[int, np.ndarray] = {}
    for start in range(dataset.num_written, num_pairs, batch):
        stop = min(start + batch, num_pairs)
        flat = index[start:stop].reshape(-1)
        images = np.empty((len(flat), *shape), np.uint8)
        for chunk in np.unique(flat // frames_per_chunk):
            if chunk not in cache:
                cache.clear()  # one chunk in memory at a time, plus the batch
                cache[chunk] = collection.load_chunk(source, int(chunk), ("image",))["image"]  # [T, B, H, W, 3]
            picked = flat // frames_per_chunk == chunk
            local = flat[picked] % frames_per_chunk
            images[picked] = cache[chunk][local // worlds, local % worlds]
        dataset.images[start:stop] = images.reshape(stop - start, 2, *shape)
        dataset.states[start:stop] = features[index[start:stop]]
        dataset.flush(num_written=stop)
        bar.update(stop - start)
    bar.close()
    return dataset


def _plan(cfg: Config, plan_path: Path, features: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The pair plan at `plan_path`, or a new one drawn by the domain's heuristic (`Domain.frame_labels`,
    `Domain.compare`) from the collection's `features` and saved there."""
    if plan_path.is_file():
        return _read_plan(plan_path)
    found = domain(cfg)
    raw = plan_pairs(found.frame_labels(features, cfg), cfg.pairs, lambda a, b: found.compare(a, b, cfg),
                     np.random.default_rng([cfg.run.seed, 2]))
    plan = {k: np.asarray(v) for k, v in raw.items()}
    files.write_npz(plan_path, **plan)
    return plan


def _read_plan(plan_path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(plan_path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise rundir.StageError(f"{plan_path} is corrupt ({error}); rerun with --force pairs") from error


def run_stage(cfg: Config, run_dir: Path) -> dict[str, Any]:
    run_dir = Path(run_dir)
    out = run_dir / "pairs"
    out.mkdir(parents=True, exist_ok=True)
    if not domain(cfg).restorable:
        return run_copied(cfg, run_dir)
    source = run_dir / "collect"
    features = collection.load_collection(source, domain(cfg).interest_keys)
    size, camera = render_settings(cfg)
    plan_path = out / "plan.npz"
    plan = _plan(cfg, plan_path, features)
    index = plan["index"]
    num_pairs = len(index)
    states = features["state"]
    if index.max() >= len(states):
        raise rundir.StageError(f"{plan_path} refers to frame {int(index.max())}, but {source} holds {len(states)}; "
                                "rerun with --force pairs")

    # The PairDataset lives directly in run_dir/pairs (plan.npz beside it); a second view in pairs/views/<camera>.
    views = {camera: out}
    if cfg.pairs.second_camera:
        views[cfg.pairs.second_camera] = view_dir(run_dir, cfg.pairs.second_camera)
    if len(views) == 1 and cfg.pairs.second_camera:
        raise rundir.StageError(f"pairs.second_camera '{cfg.pairs.second_camera}' is the pairs' own camera; "
                                "name another one (e.g. left)")
    env = make_env(cfg, render_images=False)  # restore without rendering the agent's view
    for view_camera, dataset_dir in views.items():
        dataset = render_pairs(env, dataset_dir, states[index], view_camera, size, cfg.pairs.render_batch)
        dataset.save_preferences(GROUND_TRUTH, plan["ground_truth"])
        dataset.save_array("source_index", index)
        dataset.save_array("kind", plan["kind"])
    dataset = PairDataset.open(out)
    counts = dataset.label_counts(GROUND_TRUTH)
    return {"pairs": num_pairs, "contrastive": int((plan["kind"] == CONTRASTIVE).sum()),
            "uniform": int((plan["kind"] == UNIFORM).sum()), "image_size": size, "camera": camera,
            "second_camera": cfg.pairs.second_camera,
            "fallback_quantile_used": bool(plan["fallback"]), "good_frames": int(plan["num_good"]),
            "bad_frames": int(plan["num_bad"]), "ground_truth": counts, "dataset": str(out)}


def view_dir(run_dir: Path, camera: str) -> Path:
    """Where the pair dataset of the second view `camera` lives."""
    return Path(run_dir) / "pairs" / "views" / camera


def resumable_dataset(dataset_dir: Path, num_pairs: int, image_shape: tuple[int, int, int],
                      state_size: int) -> PairDataset:
    """The writable PairDataset at `dataset_dir` to continue after its last flushed batch, or a new one where none
    is there or it was written by another config (another size or resolution: started over)."""
    if (dataset_dir / "meta.json").is_file():
        try:
            dataset = PairDataset.open(dataset_dir, writable=True)
            if len(dataset) == num_pairs and dataset.image_shape == image_shape:
                return dataset
        except DatasetError:
            pass
    return PairDataset.create(dataset_dir, num_pairs, image_shape=image_shape, state_size=state_size, overwrite=True)


def render_pairs(env, dataset_dir: Path, pair_states: np.ndarray, camera: str, size: int,
                 batch: int) -> PairDataset:
    """Renders the frames of `pair_states` f32 [N, 2, S] into the PairDataset at `dataset_dir`, resuming after its
    last flushed batch (a dataset of another size or resolution is started over)."""
    num_pairs, expected_shape = len(pair_states), (size, size, 3)
    dataset = resumable_dataset(dataset_dir, num_pairs, expected_shape, pair_states.shape[-1])
    render = compiled_once(env, f"render/{camera}/{size}", lambda: build_renderer(env, camera, size))
    bar = progress.bar(num_pairs, desc=f"pairs (render {camera})", unit="pair", initial=dataset.num_written)
    for start in range(dataset.num_written, num_pairs, batch):
        stop = min(start + batch, num_pairs)
        flat = pair_states[start:stop].reshape(-1, pair_states.shape[-1])
        padded = np.concatenate([flat, np.repeat(flat[-1:], 2 * batch - len(flat), 0)]) if len(flat) < 2 * batch \
            else flat  # one compiled shape
        frames = np.asarray(render(jnp.asarray(padded)))[: len(flat)]
        dataset.images[start:stop] = frames.reshape(stop - start, 2, *expected_shape)
        dataset.states[start:stop] = pair_states[start:stop]
        dataset.flush(num_written=stop)
        bar.update(stop - start)
    bar.close()
    return dataset


def open_dataset(run_dir: Path, camera: str | None = None) -> PairDataset:
    """The run's pair dataset (or that of the second view `camera`), validated and complete (for annotate, distill
    and report)."""
    path = Path(run_dir) / "pairs" if camera is None else view_dir(run_dir, camera)
    try:
        dataset = PairDataset.open(path)
        dataset.require_complete()
    except DatasetError as error:
        raise rundir.StageError(str(error)) from error
    return dataset


def main(args: argparse.Namespace, cfg: Config) -> int:
    summary = rundir.run_single_stage("pairs", cfg, run_stage, force=args.force)
    print(f"{summary['pairs']} pairs at {summary['image_size']}px ({summary['camera']} camera) in "
          f"{summary['dataset']}; ground truth {summary['ground_truth']}")
    return 0
