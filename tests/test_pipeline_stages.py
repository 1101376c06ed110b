"""The stage registry is the one list of stages: the CLI, the runner and the run folder all read it."""

import dataclasses
import importlib

import pytest

from sensei_jax import run
from sensei_jax.config import Config
from sensei_jax.pipeline import rundir, stages


def test_every_config_section_is_first_read_by_exactly_one_pipeline_stage():
    sections = sorted(field.name for field in dataclasses.fields(Config))
    claimed = sorted(section for name in stages.PIPELINE for section in stages.STAGES[name].sections)
    assert claimed == sections, "each config section must be claimed by one stage (its changes invalidate it)"


def test_each_stage_module_has_its_entry_points():
    for stage in stages.REGISTRY:
        module = importlib.import_module(stage.module)
        assert callable(getattr(module, stage.command)), stage.name
        if stage.pipeline:
            assert callable(getattr(module, stage.entry)), stage.name
        if stage.arguments is not None:
            assert callable(getattr(module, stage.arguments)), stage.name


def test_cli_runner_and_run_folder_read_the_registry(tmp_path, capsys):
    assert list(run.COMMANDS) == [stage.name for stage in stages.REGISTRY]
    assert rundir.STAGES == stages.PIPELINE
    assert stages.PIPELINE[:5] == ("collect", "pairs", "annotate", "distill", "explore")
    assert rundir.RunDir(tmp_path).stage_dir("baseline") == tmp_path / "explore" / stages.BASELINE_BEHAVIOUR
    assert rundir.RunDir(tmp_path).stage_dir("pairs") == tmp_path / "pairs"
    assert rundir.first_affected_stage(["report.dpi", "interest.near_distance"]) == "pairs"
    assert rundir.first_affected_stage(["explore.steps"]) == "explore"
    assert stages.section_stage("a_section_nobody_reads") == "collect"
    with pytest.raises(SystemExit):
        run.main(["--help"])
    listed = capsys.readouterr().out
    assert all(name in listed for name in stages.STAGES)


def test_user_errors_of_any_command_are_one_line_on_stderr(tmp_path, capsys):
    # A stage whose input is missing: `pairs` before `collect` (no traceback, exit status 2).
    assert run.main(["pairs", "--run.root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "collect" in err and "Traceback" not in err
