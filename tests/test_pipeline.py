"""The whole pipeline on a micro config: every artifact, resumption after a kill, and clear errors on bad inputs.

One module-scoped run does all the expensive work (env and agent compiles); it is interrupted twice on purpose
(after the first collect chunk and after the first annotate partition) and restarted, as a user would after a
crash. The other tests reuse its run folder.
"""

import json
import shutil

import numpy as np
import pytest

from sensei_jax import config as config_lib
from sensei_jax import files
from sensei_jax.pipeline import collect, collection, pairs, rundir, runner
from sensei_jax.pipeline import annotate as annotate_stage
from sensei_jax.reward.dataset import PairDataset

MICRO = {
    "env": {"num_envs": 2, "episode_length": 16},  # 8 policy steps per episode at action repeat 2
    "collect": {"steps": 8, "chunk_steps": 4},
    "pairs": {"contrastive": 24, "uniform": 8, "render_batch": 8},
    "annotate": {"annotator": "oracle", "partition_size": 16},
    "reward": {"epochs": 2, "hidden": 16, "channels": [4, 8, 8], "batch_size": 8, "val_fraction": 0.25},
    "dreamer": {"preset": "tiny"},
    "explore": {"steps": 32, "ensemble_size": 2, "ensemble_units": 16, "ensemble_layers": 1},
    "train": {"train_start": 0, "random_steps": 0, "batch_size": 2, "batch_length": 8, "train_ratio": 16.0,
              "collect_steps": 8, "log_every": 16, "save_every": 16, "replay_capacity": 256},
    "report": {"strip_frames": 4, "strip_episodes": 2, "dpi": 40},
}


class Interrupted(Exception):
    """Stands for the process being killed."""


def micro_config(root, name="micro"):
    return config_lib.load(overrides={**MICRO, "run": {"root": str(root), "name": name}})


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    cfg = micro_config(root)
    mp = pytest.MonkeyPatch()

    # Kill 1: right after the first collect chunk (and its carry) reached the disk.
    real_save_carry = collect.save_carry

    def save_then_die(path, *args):
        real_save_carry(path, *args)
        if path.name == "carry_00000.npz":
            raise Interrupted(path)

    mp.setattr(collect, "save_carry", save_then_die)
    with pytest.raises(Interrupted):
        runner.run_pipeline(cfg, log=lambda m: None)
    mp.undo()
    run = rundir.RunDir(cfg.run_dir)
    assert not run.done("collect") and (run.stage_dir("collect") / "chunk_00000.npz").exists()
    assert not (run.stage_dir("collect") / "chunk_00001.npz").exists()

    # Kill 2: after the first annotate partition.
    real_write_npz = annotate_stage.files.write_npz

    def write_then_die(path, **arrays):
        real_write_npz(path, **arrays)
        if path.name == "part_00000.npz":
            raise Interrupted(path)

    mp.setattr(annotate_stage.files, "write_npz", write_then_die)
    with pytest.raises(Interrupted):
        runner.run_pipeline(cfg, log=lambda m: None)
    mp.undo()
    assert run.done("collect") and run.done("pairs") and not run.done("annotate")

    summaries = runner.run_pipeline(cfg, log=lambda m: None)
    return cfg, run, summaries


def test_every_stage_is_done_and_every_artifact_exists(finished_run):
    cfg, run, summaries = finished_run
    status = json.loads(run.status_path.read_text())["stages"]
    assert [s for s in rundir.STAGES if status.get(s, {}).get("state") == "done"] == list(rundir.STAGES)
    assert config_lib.to_dict(config_lib.load(run.config_path)) == config_lib.to_dict(cfg)
    for name in ("collect/meta.json", "pairs/meta.json", "pairs/images.npy", "pairs/plan.npz",
                 "pairs/preference/preferences_ground_truth.npy", "pairs/preference/preferences_oracle.npy",
                 "annotate/summary.json", "distill/metrics.jsonl", "evaluate/summary.json", "report.md",
                 "preferences.png", "reward_model.png", "interactions.png", "frames.png", "learning_curves.png",
                 "exploration_diagnostics.png"):
        assert (run.path / name).is_file(), name
    report = (run.path / "report.md").read_text()
    for figure in ("preferences.png", "reward_model.png", "interactions.png", "frames.png",
                   "exploration_diagnostics.png"):
        assert f"]({figure})" in report
    # The diagnostics table shows SENSEI's semantic-head fit and switch metrics from its metrics.jsonl.
    assert "| fit/semantic/corr |" in report and "| weighting/sensei/threshold |" in report
    evaluation = files.read_json(run.path / "evaluate" / "summary.json")
    assert {"sensei", "p2x", "random (collect)"} <= set(evaluation["runs"])
    assert evaluation["runs"]["sensei"]["steps"] == evaluation["runs"]["p2x"]["steps"] >= cfg.explore.steps
    # Collection: 8 steps x 2 worlds, all frames stored; pairs re-rendered from states equal the stored frames
    # (same camera and size here).
    data = collection.load_collection(run.stage_dir("collect"), ("image",))
    assert data["image"].shape == (16, 64, 64, 3)
    dataset = PairDataset.open(run.path / "pairs")
    source = dataset.load_array("source_index")
    np.testing.assert_array_equal(np.asarray(dataset.images[:]), data["image"][source])
    assert summaries["annotate"]["ground_truth"]["agreement"] >= 0.9  # the oracle agrees with the heuristic


def test_a_finished_run_is_skipped_and_the_resumed_collection_equals_an_uninterrupted_one(finished_run, tmp_path):
    cfg, run, _ = finished_run
    before = run.status_path.read_text()
    messages = []
    runner.run_pipeline(cfg, log=messages.append)
    assert run.status_path.read_text() == before
    assert sum("skipping" in m for m in messages) == len(rundir.STAGES)

    fresh = micro_config(tmp_path, "fresh")
    fresh_run = rundir.open_run(fresh)
    fresh_run.run("collect", lambda: collect.run_stage(fresh, fresh_run.path), log=lambda m: None)
    keys = ("image", "state", "interaction", "reward")
    a = collection.load_collection(run.stage_dir("collect"), keys)
    b = collection.load_collection(fresh_run.stage_dir("collect"), keys)
    for key in keys:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_corrupt_or_incomplete_inputs_name_the_file(finished_run, tmp_path):
    cfg, run, _ = finished_run
    copy = tmp_path / "copy"
    shutil.copytree(run.path, copy, symlinks=True)

    chunk = copy / "collect" / "chunk_00001.npz"
    chunk.write_bytes(chunk.read_bytes()[:100])  # truncated
    with pytest.raises(rundir.StageError, match="chunk_00001.npz"):
        pairs.run_stage(cfg, copy)
    chunk.unlink()
    with pytest.raises(rundir.StageError, match="chunk_00001.npz"):
        pairs.run_stage(cfg, copy)

    meta = files.read_json(copy / "pairs" / "meta.json")
    files.write_json(copy / "pairs" / "meta.json", {**meta, "num_written": 3})  # an unfinished pairs stage
    with pytest.raises(rundir.StageError, match="meta.json"):
        annotate_stage.run_stage(cfg, copy)
    (copy / "pairs" / "images.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(rundir.StageError, match="images.npy"):
        runner.run_pipeline(config_lib.load(overrides={**MICRO, "run": {"root": str(tmp_path), "name": "copy"}}),
                            force=["distill"], log=lambda m: None)
