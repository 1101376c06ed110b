"""`annotate-eval`: annotators scored against the toy domain's pair ground truth on both orders of each pair. The
oracle is right and order-consistent on its own domain's pairs, the random annotator is at chance, an annotator
that always answers "first" shows full position bias and no order agreement, a human CSV can be the truth, the
tiny random LLaVA and Qwen3-VL run through the command, the report shows the table, and a bad pair folder or a
pair set without ground truth is named."""

import numpy as np
import pytest

from sensei_jax import config as config_lib
from sensei_jax import files
from sensei_jax.annotators.base import Annotator, check_pairs
from sensei_jax.annotators.config import AnnotateConfig
from sensei_jax.pipeline import annotate_eval
from sensei_jax.reward.dataset import DatasetError, PairDataset
from sensei_jax.reward.labels import Label
from sensei_jax.run import main

TOY_CONFIG = str(config_lib.CONFIG_DIR / "toy.yaml")
F, S, T, U = Label.FIRST, Label.SECOND, Label.TIE, Label.UNKNOWN


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    """The toy pipeline up to its pairs: 384 pairs (192 contrastive) of 16 px frames with ground truth."""
    root = tmp_path_factory.mktemp("runs")
    assert main(["--config", TOY_CONFIG, "--run.root", str(root), "--stop-after", "pairs"]) == 0
    return root, root / "toy"


def _cli(root, *argv):
    return main(["annotate-eval", "--config", TOY_CONFIG, "--run.root", str(root), *argv])


class AlwaysFirst(Annotator):
    """Answers "first" whatever it is shown: all position bias, no judgement."""

    name = "always-first"

    def annotate(self, images, states=None):
        images = check_pairs(images)
        return np.ones(len(images), np.float32), np.full(len(images), Label.FIRST, np.int8)


def test_the_metrics_on_hand_counted_answers():
    # Pairs: stored-order answer, swapped-order answer (about the swapped pair), truth of the stored order.
    forward = np.array([F, S, T, U, F], np.int8)
    backward = np.array([S, S, T, F, F], np.int8)
    truth = np.array([F, F, T, S, S], np.int8)
    got = annotate_eval.score(forward, backward, truth)
    # Decided truths: pairs 0, 1, 3, 4 -> 8 answers; right: pair 0 both (F; S), pair 1 the swapped one (S), pair 3
    # the swapped one (F), pair 4 the swapped one (F) -> 5 of 8. Decided among them: 7 (pair 3's U is not).
    assert got["accuracy"] == pytest.approx(5 / 8) and got["accuracy_decided"] == pytest.approx(5 / 7)
    assert got["tie_rate"] == pytest.approx(2 / 10) and got["unknown_rate"] == pytest.approx(1 / 10)
    assert got["first_position_rate"] == pytest.approx(4 / 7)  # F answers among the 7 decided ones
    # Known in both orders: pairs 0, 1, 2, 4; consistent: 0 (F vs swap S), 2 (tie, tie) -> 2 of 4.
    assert got["order_agreement"] == pytest.approx(0.5) and got["order_pairs_compared"] == 4
    assert got["truth_decided_pairs"] == 4


def test_oracle_is_right_and_random_at_chance_on_the_toy_pairs(toy_run, capsys):
    root, run_dir = toy_run
    assert _cli(root, "--annotator", "oracle", "--annotator", "random") == 0
    out = capsys.readouterr().out
    assert "| oracle | 384 | all | 1.000 | 1.000 |" in out and "| random | 384 | all |" in out
    summary = files.read_json(run_dir / "annotate_eval" / "summary.json")
    oracle, chance = summary["annotators"]["oracle"], summary["annotators"]["random"]
    assert oracle["accuracy"] == 1.0 and oracle["order_agreement"] == 1.0
    assert oracle["first_position_rate"] == 0.5 and oracle["truth_decided_pairs"] == 381
    # Groups the toy pairs carry: their kind, and the corner flag of either frame (from the run's collect/).
    assert set(summary["groups"]) == {"kind:contrastive", "kind:uniform", "interaction:corner"}
    assert oracle["groups"]["kind:contrastive"]["pairs"] == 192
    assert oracle["groups"]["kind:contrastive"]["tie_rate"] == 0.0  # a contrastive pair is never a tie
    assert oracle["groups"]["interaction:corner"]["accuracy"] == 1.0
    # 768 random answers: chance within 4 standard deviations. The random annotator reads the pixels, so order
    # agreement near 0.5 also shows that the images were swapped (unswapped, it would give the same answer twice
    # and agree never).
    for key in ("accuracy", "first_position_rate", "order_agreement"):
        assert 0.42 < chance[key] < 0.58, (key, chance[key])
    assert chance["tie_rate"] == 0.0 and chance["pairs_per_second"] > 0

    from sensei_jax.pipeline import report

    cfg = config_lib.load(TOY_CONFIG, overrides={"run": {"root": str(root)}})
    report.run_stage(cfg, run_dir)
    text = (run_dir / "report.md").read_text()
    assert "## Which annotator labels better" in text and "| oracle | 384 | all | 1.000 |" in text


def test_an_annotator_that_always_answers_first_shows_its_position_bias(toy_run):
    _, run_dir = toy_run
    dataset = PairDataset.open(run_dir / "pairs")
    truth = dataset.load_preferences("ground_truth")
    got = annotate_eval.evaluate(AlwaysFirst(), dataset, truth, {}, chunk=100)
    assert got["first_position_rate"] == 1.0 and got["order_agreement"] == 0.0
    assert got["accuracy"] == 0.5  # each decided pair: right in one order, wrong in the other
    assert got["tie_rate"] == 0.0 and got["groups"] == {}


def test_a_human_csv_is_the_truth(toy_run, tmp_path):
    root, run_dir = toy_run
    dataset = PairDataset.open(run_dir / "pairs")
    truth = dataset.load_preferences("ground_truth")
    names = {F: "first", S: "second", T: "tie"}
    rows = [f"{i},{names[int(truth[i])]}" for i in range(0, len(truth), 3)]
    rows[0] = rows[0].split(",")[0] + ",FIRST" if truth[0] == F else rows[0]  # labels are read in any case
    csv = tmp_path / "human.csv"
    csv.write_text("pair_index,label\n" + "\n".join(rows) + "\n")
    out = tmp_path / "eval"
    assert _cli(root, "--annotator", "oracle", "--truth", str(csv), "--out", str(out)) == 0
    summary = files.read_json(out / "summary.json")
    listed = truth[::3]
    assert summary["annotators"]["oracle"]["truth_decided_pairs"] == int((listed < T).sum())
    assert summary["annotators"]["oracle"]["accuracy"] == 1.0
    assert summary["truth_counts"]["unknown"] == len(truth) - len(listed)

    csv.write_text("pair_index,label\n0,first\n1,maybe\n")
    with pytest.raises(DatasetError, match=r"human.csv line 3: label 'maybe' is not one of first\|second\|tie"):
        annotate_eval.load_truth(dataset, str(csv))
    csv.write_text("pair_index,label\n999,first\n")
    with pytest.raises(DatasetError, match=r"line 2: pair_index '999' is not an integer in \[0, 384\)"):
        annotate_eval.load_truth(dataset, str(csv))


@pytest.mark.parametrize("family", ["llava", "qwen3_vl"])
def test_a_tiny_vlm_runs_through_the_command(family, toy_run, tmp_path, capsys):
    if family == "llava":
        from sensei_jax.vlm.tiny import write_tiny_checkpoint
    else:
        from sensei_jax.vlm.qwen3_vl.tiny import write_tiny_checkpoint
    checkpoint = write_tiny_checkpoint(tmp_path / "vlm", [AnnotateConfig().question], seed=3, std=0.1)
    root, _ = toy_run
    out = tmp_path / "eval"
    assert _cli(root, "--annotator", "llava", "--vlm.path", str(checkpoint), "--vlm.dtype", "float32",
                "--annotate.min_answer_mass", "0", "--annotate.both_orders", "false", "--annotate.batch_size", "4",
                "--max-pairs", "8", "--out", str(out)) == 0
    printed = capsys.readouterr().out
    assert f"| {family} | 8 | all |" in printed and "order agreement" in printed
    result = files.read_json(out / "summary.json")["annotators"][family]
    assert result["pairs"] == 8 and result["settings"]["family"] == family and result["pairs_per_second"] > 0
    truth = PairDataset.open(toy_run[1] / "pairs").load_preferences("ground_truth")[:8]
    assert result["truth_decided_pairs"] == int((truth < T).sum()) and result["accuracy"] is not None
    assert 0.0 <= result["tie_rate"] + result["unknown_rate"] <= 1.0


def test_a_bad_pair_folder_or_missing_ground_truth_is_named(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    assert _cli(tmp_path, "--pairs", str(missing)) == 2
    assert f"error: --pairs {missing}: no such folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert _cli(tmp_path, "--pairs", str(tmp_path / "empty")) == 2
    assert f"{tmp_path / 'empty' / 'meta.json'} is missing" in capsys.readouterr().err
    dataset = PairDataset.create(tmp_path / "pairs", num_pairs=4, image_shape=(8, 8, 3))
    dataset.flush(4)
    dataset.save_preferences("oracle", np.zeros(4, np.int8))
    assert _cli(tmp_path, "--pairs", str(dataset.directory)) == 2
    err = capsys.readouterr().err
    assert (f"error: --truth ground_truth: {dataset.directory} has no label set 'ground_truth'" in err
            and "preferences_ground_truth.npy; label sets there: oracle" in err)
    assert not (tmp_path / "toy").exists() and not (tmp_path / "pairs" / "annotate_eval").exists()
