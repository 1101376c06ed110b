"""docs/bad_input.md's table, row by row: each bad input stops the command line before any work, with the message
the table gives, so the page and the behaviour cannot drift apart. Rows run the CLI's `main` in-process, in a fresh
folder (the default run.root lands there); `warning:` rows run the preflight the pipeline runs."""

from __future__ import annotations

import errno
import json
import re
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest

from sensei_jax import config as config_lib
from sensei_jax import files
from sensei_jax.pipeline import envs, preflight
from sensei_jax.reward.dataset import PairDataset
from sensei_jax.run import main

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "bad_input.md"
ROW = re.compile(r"^\| `(?P<input>.+)` \| `(?P<message>.+)` \|$")
ANY = "…"  # in a message: a number that depends on the machine or the checkpoint


def table_rows() -> list[tuple[str, str]]:
    """(input, message) of every row of the doc's table."""
    rows = [(m["input"], m["message"]) for m in map(ROW.match, DOC.read_text().splitlines()) if m]
    assert len(rows) >= 15, f"{DOC} lost its table"
    return rows


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    from sensei_jax.vlm.tiny import write_tiny_checkpoint

    return write_tiny_checkpoint(tmp_path_factory.mktemp("vlm") / "ok")


def make_inputs(folder: Path, checkpoint: Path) -> dict[str, str]:
    """The `{name}` inputs of the table, made in `folder`: each a real file or folder with the one defect its row
    names."""
    (folder / "file").write_text("a plain file\n")
    (folder / "empty").mkdir()
    (folder / "garbage").write_bytes(b"\x80\x81\xfe not text")
    defects = {
        "vlm_no_tokenizer": lambda d: (d / "tokenizer.json").unlink(),
        "vlm_cut": lambda d: _cut_in_half(d / "model.safetensors"),
        "vlm_mistral": lambda d: _set_model_type(d / "config.json", "mistral"),
    }
    for name, spoil in defects.items():
        spoil(Path(shutil.copytree(checkpoint, folder / name)))
    dataset = PairDataset.create(folder / "pairs", num_pairs=4, image_shape=(8, 8, 3))
    dataset.flush(4)
    (folder / "pairs" / "preference" / "preferences_garbage.npy").write_text("0 1 0 1\n")
    (folder / "exploration" / "checkpoints").mkdir(parents=True)
    files.write_json(folder / "exploration" / "spec.json", {"behaviour": "sensei", "tasks": ["open_drawer"]})
    names = ["file", "empty", "garbage", *defects, "pairs", "exploration"]
    return {"tmp": str(folder), **{name: str(folder / name) for name in names}}


def _cut_in_half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _set_model_type(path: Path, model_type: str) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), "model_type": model_type}))


def fill(text: str, inputs: dict[str, str]) -> str:
    for name, value in inputs.items():
        text = text.replace("{" + name + "}", value)
    return text


def expected_pattern(message: str) -> re.Pattern:
    return re.compile("".join(r"[0-9.]+" if part == ANY else re.escape(part) for part in re.split(f"({ANY})",
                                                                                                   message)))


def run_error_row(argv: list[str], capsys) -> str:
    """The last line the CLI writes on stderr for `argv`, checking it exits with status 2."""
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse-level errors exit through parser.exit
        code = exit_.code
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2, f"exit status {code} for {argv}; stderr: {lines[-3:]}"
    return lines[-1]


def run_warning_row(argv: list[str]) -> str:
    warnings: list[str] = []
    preflight.check(config_lib.load(None, argv), warn=warnings.append)
    assert len(warnings) == 1, warnings
    return warnings[0]


@pytest.mark.parametrize("row", table_rows(), ids=lambda row: row[0])
def test_bad_input_gives_the_documented_message(row, tiny_checkpoint, tmp_path, monkeypatch, capsys):
    command, message = row
    inputs = make_inputs(tmp_path, tiny_checkpoint)
    monkeypatch.chdir(tmp_path)
    argv = [fill(token, inputs) for token in shlex.split(command)]
    argv = [str(ROOT / token) if token.startswith("configs/") else token for token in argv]
    envs_before = len(envs._ENVS)
    got = run_warning_row(argv) if message.startswith("warning:") else run_error_row(argv, capsys)
    assert expected_pattern(fill(message, inputs)).fullmatch(got), f"\n  got:      {got}\n  expected: {message}"
    assert not (tmp_path / "runs").exists(), "a bad input left a run folder behind"
    assert len(envs._ENVS) == envs_before, "the env was built before the bad input was found"


def test_the_run_folder_check_leaves_nothing_behind(tmp_path):
    cfg = config_lib.load(None, ["--run.root", str(tmp_path / "a" / "b")])
    preflight.check(cfg, ("collect",), warn=lambda m: None)
    assert list(tmp_path.iterdir()) == []


def test_a_read_only_file_system_is_named():
    error = OSError(errno.EROFS, "Read-only file system", "/mnt/ro/runs")
    assert files.os_error_cause(error, creating=True) == "read-only file system (/mnt/ro/runs)"


def test_the_disk_estimate_follows_the_configured_sizes():
    cfg = config_lib.load(ROOT / "configs" / "robodesk_sensei.yaml")
    sizes = preflight.dataset_bytes(cfg)
    assert sizes["collect"] == 800_000 * 4 * 64 * 64 * 3  # 3.2M transitions of 64x64 frames
    assert sizes["pairs"] == 200_000 * 2 * 2 * 224 * 224 * 3  # both frames of both views at 224
    assert sizes["explore"] == 2 * 250_000 * 64 * 64 * 3  # SENSEI's and the baseline's replay
    assert preflight.dataset_bytes(cfg, ("annotate",)) == {}


def test_the_pipeline_checks_only_the_stages_it_will_run(tmp_path):
    from sensei_jax.pipeline import runner

    cfg = config_lib.load(None, ["--run.root", str(tmp_path), "--annotate.annotator", "llava"])
    assert runner.stages_to_run(cfg, stop_after="collect") == ("collect",)
    preflight.check(cfg, runner.stages_to_run(cfg, stop_after="collect"), warn=lambda m: None)  # no VLM needed yet
    with pytest.raises(config_lib.ConfigError, match="--vlm.path DIR"):
        preflight.check(cfg, runner.stages_to_run(cfg), warn=lambda m: None)


def test_a_valid_checkpoint_passes(tiny_checkpoint):
    from sensei_jax.vlm.checkpoint import check_folder

    assert check_folder(tiny_checkpoint).text.vocab_size > 0


def test_an_object_array_is_named_as_such(tmp_path):
    dataset = PairDataset.create(tmp_path / "pairs", num_pairs=2, image_shape=(8, 8, 3))
    np.save(tmp_path / "pairs" / "preference" / "preferences_objects.npy", np.array([{}, {}], dtype=object),
            allow_pickle=True)
    with pytest.raises(ValueError, match=r"preferences_objects.npy holds Python objects .*expected int8 labels"):
        dataset.load_preferences("objects")


def test_the_explorer_refuses_a_head_its_env_has_no_success_flag_for():
    from sensei_jax.dreamer.config import DreamerConfig
    from sensei_jax.envs.toy import PointReach
    from sensei_jax.explore.config import ExploreConfig
    from sensei_jax.explore.explorer import Explorer

    with pytest.raises(ValueError, match=r"explore.task_heads: \['open_drawr'\] are not success flags of this env; "
                                         r"it has \['reach'\]"):
        Explorer(ExploreConfig(behaviour="p2x", task_heads=("reach", "open_drawr")), DreamerConfig(), PointReach(), 2)
