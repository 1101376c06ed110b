"""MiniHack end to end: configs/minihack_micro.yaml (minihack_default.yaml at micro size) on KeyRoom (every stage,
real NetHack worlds in worker processes), and a crashed worker process: a clear error, then the exploration resumes
from its last checkpoint with fresh episodes. benchmarks/sensei_effect.py's smoke mode runs the same config file,
so the two share their compiled programs through the persistent compilation cache.

One module-scoped run does the expensive work; the crash test explores on its own in a folder of its own.
"""

import os
import signal
import time

import numpy as np
import pytest

from sensei_jax import config as config_lib
from sensei_jax import files
from sensei_jax.pipeline import collection, rundir, runner
from sensei_jax.reward.dataset import GROUND_TRUTH, PairDataset

MICRO_CONFIG = config_lib.CONFIG_DIR / "minihack_micro.yaml"


def micro_config(root, name="minihack_micro", **sections):
    """configs/minihack_micro.yaml in a run folder of its own, with `sections`' keys changed."""
    return config_lib.load(MICRO_CONFIG, overrides={**sections, "run": {"root": str(root), "name": name}})


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    cfg = micro_config(tmp_path_factory.mktemp("runs"))
    summaries = runner.run_pipeline(cfg, log=lambda m: None)
    return cfg, rundir.RunDir(cfg.run_dir), summaries


def test_every_stage_runs_on_minihack(finished_run):
    cfg, run, summaries = finished_run
    for stage in ("collect", "pairs", "annotate", "distill", "explore", "baseline", "evaluate", "report"):
        assert run.done(stage), stage
    meta = collection.read_meta(run.stage_dir("collect"))
    assert meta["domain"] == "minihack" and meta["num_envs"] == 2
    assert set(meta["interaction_names"]) >= {"key_picked_up", "door_open"}
    frames = collection.load_collection(run.stage_dir("collect"), ("image", "state", "episode_step"))
    assert frames["image"].shape == (48 * 2, 80, 80, 3) and frames["image"].dtype == np.uint8
    assert frames["image"].std() > 0  # real NetHack tiles, not a blank frame
    # Episodes of 24 steps restart: the step counter goes back.
    assert frames["episode_step"].max() <= 24 and (np.diff(frames["episode_step"].reshape(-1, 2)[:, 0]) < 0).any()

    dataset = PairDataset.open(run.stage_dir("pairs"))
    assert len(dataset) == 48 and dataset.image_shape == (80, 80, 3)
    # The pairs hold the collected frames themselves, and the oracle's features as their states.
    source = dataset.load_array("source_index")
    assert np.array_equal(dataset.images[:, 0], frames["image"][source[:, 0]])
    assert np.array_equal(dataset.states[:, 1], frames["state"][source[:, 1]])
    # The oracle labels from the same features as the ground truth: full agreement.
    labels = dataset.load_preferences("oracle")
    assert np.array_equal(labels, dataset.load_preferences(GROUND_TRUTH))

    explore = files.read_json(run.stage_dir("explore") / "sensei" / "summary.json")
    baseline = files.read_json(run.stage_dir("explore") / "p2x" / "summary.json")
    for summary in (explore, baseline):
        assert summary["steps"] == 64 and summary["train_steps"] > 0
        assert set(summary["episodes_with"]) == set(meta["interaction_names"])
        assert summary["episodes"] >= 2  # 24-step episodes within 32 steps per world
    spec = files.read_json(run.stage_dir("explore") / "sensei" / "spec.json")
    assert spec["semantic"] and spec["image_key"] == "reward_image"

    evaluation = files.read_json(run.stage_dir("evaluate") / "summary.json")
    assert {"sensei", "p2x", "random (collect)"} <= set(evaluation["runs"])
    assert evaluation["runs"]["random (collect)"]["episodes"] >= 2
    report = (cfg.run_dir / "report.md").read_text()
    assert "MiniHack `keyroom`" in report and "key picked up" in report
    assert (cfg.run_dir / "interactions.png").is_file()


def test_a_crashed_worker_stops_with_a_clear_error_and_the_run_resumes(tmp_path):
    from sensei_jax.envs.minihack import WorkerCrashed
    from sensei_jax.pipeline import explore as explore_stage

    from sensei_jax.envs.minihack import MiniHack
    from sensei_jax.explore.explorer import Explorer

    keychest = {"task": "keychest"}  # the other task: its exploration, end to end
    cfg = micro_config(tmp_path, name="crash", explore={"behaviour": "p2x", "weights": None}, minihack=keychest)
    out = tmp_path / "crash_explore"
    env = MiniHack.from_config(cfg.minihack, seed=cfg.run.seed)  # its own workers, not the run's shared env
    try:
        first = explore_stage.explore(cfg, out, None, env=env, log=lambda m: None)  # checkpoints at 32 and 64
    except BaseException:
        env.close()
        raise
    assert first["steps"] == 64

    longer = micro_config(tmp_path, name="crash", explore={"behaviour": "p2x", "weights": None, "steps": 128},
                          minihack=keychest)
    pid = env.pool.pids[0]
    os.kill(pid, signal.SIGKILL)
    deadline = time.time() + 10
    while os.path.exists(f"/proc/{pid}") and open(f"/proc/{pid}/stat").read().split()[2] != "Z" \
            and time.time() < deadline:
        time.sleep(0.05)
    try:
        with pytest.raises(WorkerCrashed, match=r"worker 0 .*pid"):
            explore_stage.explore(longer, out, None, env=env, log=lambda m: None)
    finally:
        env.close()

    # Started again (here: a fresh env, as a new process would build), it resumes from the checkpoint at step 64,
    # with fresh episodes: NetHack worlds are not in the checkpoint.
    messages = []
    fresh = MiniHack.from_config(cfg.minihack, seed=cfg.run.seed)
    explorer = Explorer(longer.explore, longer.dreamer, fresh, 2, seed=longer.run.seed, train=longer.train)
    try:
        resumed = explorer.run(out, log=messages.append)
    finally:
        fresh.close()
    assert any("resuming at step 64" in m for m in messages)
    assert resumed["steps"] == 128
    is_first = np.asarray(explorer.state["replay"].data["is_first"])  # [worlds, slots]: 32 steps per world each
    assert is_first[:, 32].all() and not is_first[:, 33].any()


def test_keychest_collects_pairs_and_labels(tmp_path):
    cfg = micro_config(tmp_path, name="keychest", minihack={"task": "keychest"})
    runner.run_pipeline(cfg, stop_after="annotate", log=lambda m: None)
    meta = collection.read_meta(cfg.run_dir / "collect")
    assert meta["task"] == "keychest" and "chest_open" in meta["interaction_names"]
    assert meta["success_names"] == ["keychest"]
    dataset = PairDataset.open(cfg.run_dir / "pairs")
    assert len(dataset) == 48 and dataset.images[:].std() > 0
    assert np.array_equal(dataset.load_preferences("oracle"), dataset.load_preferences(GROUND_TRUTH))


def test_minihack_configs_resolve():
    for name in ("minihack_default", "minihack_keyroom_sensei", "minihack_keyroom_p2x", "minihack_keychest_sensei",
                 "minihack_keychest_p2x"):
        cfg = config_lib.load(config_lib.CONFIG_DIR / f"{name}.yaml")
        assert cfg.run.domain == "minihack" and cfg.reward.image_size == cfg.minihack.reward_image_size
    keychest = config_lib.load(config_lib.CONFIG_DIR / "minihack_keychest_sensei.yaml")
    assert keychest.minihack.task == "keychest" and keychest.explore.weights["go"] == {"semantic": 1.0, "disagreement": 0.05}
    with pytest.raises(config_lib.ConfigError, match="reward.image_size"):
        config_lib.load(config_lib.CONFIG_DIR / "minihack_default.yaml", overrides=["--reward.image_size", "64"])
    with pytest.raises(config_lib.ConfigError, match="minihack.task"):
        config_lib.load(config_lib.CONFIG_DIR / "minihack_default.yaml", overrides=["--minihack.task", "maze"])


def test_collected_flags_are_stored_in_the_order_meta_json_names_them():
    """Inside a traced step the env's info dict keeps the env's key order; meta.json (from a pytree round trip)
    names the flags sorted. Each stored column must be the flag of its name."""
    import jax.numpy as jnp

    from sensei_jax.envs.minihack import FEATURES, INTERACTIONS, MiniHackState
    from sensei_jax.domains.minihack import DOMAIN

    names = INTERACTIONS["keyroom"]
    assert list(names) != sorted(names)  # otherwise this test guards nothing
    state = MiniHackState(
        obs={"reward_image": jnp.zeros((1, 80, 80, 3), jnp.uint8)}, reward=jnp.zeros(1), done=jnp.zeros(1, bool),
        info={"interaction_flags": {name: jnp.array([name == "door_open"]) for name in names},
              "success": {"keyroom": jnp.zeros(1, bool)}, "features": jnp.zeros((1, len(FEATURES))),
              "episode_step": jnp.zeros(1, jnp.int32), "is_terminal": jnp.zeros(1, bool)},
        world=jnp.zeros(1, jnp.int32))
    stored = np.asarray(DOMAIN.record(None, state)["interaction"][0])
    assert stored.tolist() == [name == "door_open" for name in sorted(names)]


def test_llava_labels_minihack_pairs_with_the_minihack_prompt(finished_run, tmp_path):
    """The annotate command with the MiniHack paper config's prompt, on the micro run's 80x80 pairs (a random tiny
    LLaVA checkpoint stands in for the 7B weights)."""
    from sensei_jax.annotators import make_annotator
    from sensei_jax.run import main
    from sensei_jax.vlm.tiny import write_tiny_checkpoint

    config = config_lib.CONFIG_DIR / "minihack_keyroom_sensei.yaml"
    paper = config_lib.load(config)
    assert "dungeon" in paper.annotate.question and "robot" not in paper.annotate.question
    checkpoint = write_tiny_checkpoint(tmp_path / "llava", [paper.annotate.question], seed=3)
    flags = ["--run.device", "auto", "--vlm.path", str(checkpoint), "--vlm.dtype", "float32",
             "--annotate.batch_size", "8", "--annotate.min_answer_mass", "0", "--annotate.partition_size", "16"]
    annotator = make_annotator(config_lib.load(config, flags))
    assert paper.annotate.question in annotator.scorer.prompt
    _, run, _ = finished_run
    rc = main(["annotate", "--config", str(config), "--dataset", str(run.stage_dir("pairs")),
               "--out", str(tmp_path / "annotate"), *flags])
    assert rc == 0
    assert PairDataset.open(run.stage_dir("pairs")).load_preferences("llava").shape == (48,)
    summary = files.read_json(tmp_path / "annotate" / "summary.json")
    assert summary["annotator"] == "llava" and summary["pairs"] == 48 and summary["pairs_per_second"] > 0


def test_an_interrupted_minihack_collection_keeps_its_chunks_and_resumes(tmp_path):
    from sensei_jax.pipeline import collect

    # 20-step episodes: an uninterrupted collection would be mid-episode at the second chunk's first step.
    cfg = micro_config(tmp_path, name="collect_resume", minihack={"episode_length": 20})
    real_write_chunk = collect.write_chunk

    class Interrupted(Exception):
        pass

    def write_then_die(directory, index, data, keys):
        real_write_chunk(directory, index, data, keys)
        raise Interrupted(index)

    mp = pytest.MonkeyPatch()
    mp.setattr(collect, "write_chunk", write_then_die)
    with pytest.raises(Interrupted):
        runner.run_pipeline(cfg, stop_after="collect", log=lambda m: None)
    mp.undo()
    first = collection.load_chunk(cfg.run_dir / "collect", 0, ("image",))["image"]
    runner.run_pipeline(cfg, stop_after="collect", log=lambda m: None)
    meta = collection.read_meta(cfg.run_dir / "collect")
    assert meta["num_chunks"] == 2
    # The finished chunk is kept as it was; the resumed one starts fresh episodes (NetHack worlds are not saved).
    assert np.array_equal(collection.load_chunk(cfg.run_dir / "collect", 0, ("image",))["image"], first)
    steps = collection.load_chunk(cfg.run_dir / "collect", 1, ("episode_step",))["episode_step"]
    assert (steps[0] == 1).all()

