"""The toy domain through the whole pipeline from the CLI (configs/toy.yaml): CornerReach worlds collected at
random, pairs planned by the corner heuristic, oracle labels, a reward model, SENSEI and the disagreement-only
baseline, evaluation and the report. The domain registry's fourth-domain path (its own module, one line in the
table) and the suite's fastest end-to-end run."""

import numpy as np
import pytest

from sensei_jax import config as config_lib
from sensei_jax import domains, files
from sensei_jax.pipeline import collection, rundir
from sensei_jax.reward.dataset import GROUND_TRUTH, PairDataset
from sensei_jax.run import main

TOY_CONFIG = config_lib.CONFIG_DIR / "toy.yaml"


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    assert main(["--config", str(TOY_CONFIG), "--run.root", str(root), "--explore.steps", "256"]) == 0
    cfg = config_lib.load(TOY_CONFIG, overrides={"run": {"root": str(root)}})
    return cfg, rundir.RunDir(cfg.run_dir)


def test_the_toy_runs_every_stage_from_the_cli(toy_run):
    cfg, run = toy_run
    for stage in ("collect", "pairs", "annotate", "distill", "explore", "baseline", "evaluate", "report"):
        assert run.done(stage), stage
    meta = collection.read_meta(run.stage_dir("collect"))
    assert meta["domain"] == "toy" and meta["interaction_names"] == ["corner"] and meta["image_size"] == 16
    frames = collection.load_collection(run.stage_dir("collect"), ("image", "state", "episode_step", "interaction"))
    assert frames["image"].shape == (128 * 4, 16, 16, 3) and frames["state"].shape == (128 * 4, 2)
    # The env never resets itself: the collection does, so the 32-step episodes restart.
    assert frames["episode_step"].max() <= 32 and (np.diff(frames["episode_step"].reshape(-1, 4)[:, 0]) < 0).any()
    # The stored flag is the corner region of the stored position.
    corner = (frames["state"] > cfg.toy.corner).all(-1)
    assert np.array_equal(frames["interaction"][:, 0], corner)

    dataset = PairDataset.open(run.stage_dir("pairs"))
    assert len(dataset) == 384 and dataset.image_shape == (16, 16, 3)
    source = dataset.load_array("source_index")
    assert np.array_equal(dataset.images[:, 0], frames["image"][source[:, 0]])
    # Contrastive pairs put a corner frame against one beyond the anti-diagonal.
    labels = dataset.load_preferences("oracle")
    assert np.array_equal(labels, dataset.load_preferences(GROUND_TRUTH))
    score = dataset.states[:].sum(-1)
    decided = labels < 2
    assert ((score[:, 0] > score[:, 1]) == (labels == 0))[decided].all()

    distill = files.read_json(run.stage_dir("distill") / "summary.json")
    assert distill["best_val_accuracy"] > 0.7
    for method in ("sensei", "p2x"):
        summary = files.read_json(run.stage_dir("explore") / method / "summary.json")
        assert summary["steps"] == 256 and summary["train_steps"] > 0 and "corner" in summary["interactions"]
    evaluation = files.read_json(run.stage_dir("evaluate") / "summary.json")
    assert {"sensei", "p2x", "random (collect)"} <= set(evaluation["runs"])
    report = (cfg.run_dir / "report.md").read_text()
    assert "Toy corner" in report and "| corner |" in report
    assert (cfg.run_dir / "interactions.png").is_file()


def test_a_domain_is_found_by_name_and_unknown_names_are_refused():
    assert domains.get("toy").section == "toy" and not domains.get("toy").restorable
    assert {"robodesk", "minihack", "toy"} <= set(domains.DOMAINS)

    class Half(domains.Domain):  # a domain that forgot what a collected step stores, and more
        def build_env(self, cfg, reward_view=False, **overrides):
            return None

    with pytest.raises(TypeError, match="abstract method"):
        Half()
    with pytest.raises(config_lib.ConfigError, match="run.domain: unknown domain 'maze'; known: robodesk"):
        config_lib.load(TOY_CONFIG, overrides=["--run.domain", "maze"])


def test_a_qwen3_vl_annotator_runs_the_toy_pipeline_to_exploration(tmp_path):
    """`vlm.family: qwen3_vl` end to end: a tiny random Qwen3-VL checkpoint labels the toy's pairs, the reward model
    distils its labels and SENSEI explores with that reward."""
    from sensei_jax.annotators.config import AnnotateConfig
    from sensei_jax.vlm.qwen3_vl.tiny import write_tiny_checkpoint

    checkpoint = write_tiny_checkpoint(tmp_path / "qwen3_vl", [AnnotateConfig().question], seed=3, std=0.1)
    assert main(["--config", str(TOY_CONFIG), "--run.root", str(tmp_path), "--run.name", "qwen", "--stop-after",
                 "explore", "--annotate.annotator", "llava", "--vlm.path", str(checkpoint), "--vlm.dtype", "float32",
                 "--annotate.min_answer_mass", "0.0", "--collect.steps", "64", "--pairs.contrastive", "16",
                 "--pairs.uniform", "16", "--explore.steps", "256"]) == 0
    run = rundir.RunDir(tmp_path / "qwen")
    annotate = files.read_json(run.stage_dir("annotate") / "summary.json")
    assert annotate["family"] == "qwen3_vl" and annotate["pairs"] == 32
    labels = PairDataset.open(run.stage_dir("pairs")).load_preferences("llava")
    assert labels.shape == (32,) and set(np.unique(labels)) <= {0, 1, 2, 3}
    assert run.done("distill") and files.read_json(run.stage_dir("distill") / "summary.json")["preferences"] == "llava"
    summary = files.read_json(run.stage_dir("explore") / "sensei" / "summary.json")
    assert summary["steps"] == 256 and summary["train_steps"] > 0 and "weight/semantic" in summary["final_metrics"]
