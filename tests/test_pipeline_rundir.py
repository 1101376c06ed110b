"""The run folder's bookkeeping: config saved, stages skipped when done, forced reruns, config changes, bad files."""

import json

import pytest

from sensei_jax import config as config_lib
from sensei_jax.pipeline import rundir


def _cfg(tmp_path, **overrides):
    data = {"run": {"root": str(tmp_path), "name": "r"}}
    for key, value in overrides.items():
        section, field = key.split("__")
        data.setdefault(section, {})[field] = value
    return config_lib.load(overrides=data)


def test_stage_runs_once_and_is_skipped_when_done(tmp_path):
    cfg = _cfg(tmp_path)
    run = rundir.open_run(cfg)
    assert config_lib.to_dict(config_lib.load(run.config_path)) == config_lib.to_dict(cfg)
    calls = []

    def stage():
        calls.append(1)
        (run.stage_dir("collect") / "out.txt").write_text("x")
        return {"value": 3}

    assert run.run("collect", stage, log=lambda m: None) == {"value": 3}
    assert run.run("collect", stage, log=lambda m: None) == {"value": 3}
    assert len(calls) == 1
    status = json.loads(run.status_path.read_text())
    assert status["stages"]["collect"]["state"] == "done"
    assert status["stages"]["collect"]["summary"] == {"value": 3}


def test_failed_stage_is_not_done_and_reruns(tmp_path):
    run = rundir.open_run(_cfg(tmp_path))

    def broken():
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        run.run("collect", broken, log=lambda m: None)
    assert not run.done("collect")
    assert run.run("collect", lambda: {"ok": True}, log=lambda m: None) == {"ok": True}
    assert run.done("collect")


def test_force_forgets_the_stage_and_every_later_one(tmp_path):
    cfg = _cfg(tmp_path)
    run = rundir.open_run(cfg)
    for name in ("collect", "pairs", "annotate"):
        run.run(name, lambda name=name: (run.stage_dir(name) / "f").write_text(name) and {}, log=lambda m: None)
    (run.path / "report.md").write_text("old")
    rundir.open_run(cfg, force=["pairs"])
    assert run.done("collect") and not run.done("pairs") and not run.done("annotate")
    assert (run.stage_dir("collect") / "f").exists()
    assert not run.stage_dir("pairs").exists() and not run.stage_dir("annotate").exists()
    assert not (run.path / "report.md").exists()


def test_changed_config_of_a_finished_stage_is_an_error_naming_the_key(tmp_path):
    run = rundir.open_run(_cfg(tmp_path))
    run.run("collect", lambda: {}, log=lambda m: None)
    changed = _cfg(tmp_path, env__task="open_slide")
    with pytest.raises(config_lib.ConfigError, match=r"env\.task.*--force collect"):
        rundir.open_run(changed)
    # Forcing the affected stage accepts the new config; a change that only later stages read needs nothing.
    rundir.open_run(changed, force=["collect"])
    assert not run.done("collect")
    run.run("collect", lambda: {}, log=lambda m: None)
    rundir.open_run(_cfg(tmp_path, env__task="open_slide", report__dpi=50))
    assert config_lib.read_yaml(run.config_path)["report"]["dpi"] == 50


def test_corrupt_status_names_the_file(tmp_path):
    run = rundir.open_run(_cfg(tmp_path))
    run.status_path.write_text("{not json")
    with pytest.raises(rundir.StageError, match="status.json"):
        run.done("collect")


def test_require_done_names_the_missing_stage(tmp_path):
    run = rundir.open_run(_cfg(tmp_path))
    with pytest.raises(rundir.StageError, match="'collect'"):
        run.require_done("collect", needed_by="pairs")


def test_llava_without_checkpoint_fails_before_any_work_saying_what_to_pass(tmp_path, capsys):
    from sensei_jax.pipeline import preflight
    from sensei_jax.run import main
    from sensei_jax.vlm.tiny import write_tiny_checkpoint

    cfg = _cfg(tmp_path, annotate__annotator="llava")
    with pytest.raises(config_lib.ConfigError, match="--vlm.path DIR"):
        preflight.check(cfg)
    code = main(["--run.root", str(tmp_path), "--annotate.annotator", "llava"])
    assert code == 2 and "--vlm.path" in capsys.readouterr().err
    assert not (tmp_path / "r").exists() and not (tmp_path / "default").exists()
    with pytest.raises(config_lib.ConfigError, match="not a directory"):
        preflight.check(_cfg(tmp_path, annotate__annotator="llava", vlm__path=str(tmp_path / "missing")))
    checkpoint = write_tiny_checkpoint(tmp_path / "vlm")
    with pytest.raises(config_lib.ConfigError, match="annotate.context_image"):
        preflight.check(_cfg(tmp_path, annotate__annotator="llava", vlm__path=str(checkpoint),
                             annotate__prompt="general", annotate__context_image=str(tmp_path / "missing.png")))


def test_partial_outputs_of_an_unfinished_stage_are_discarded_when_its_config_changes(tmp_path):
    run = rundir.open_run(_cfg(tmp_path))
    run.stage_dir("explore").mkdir(parents=True)
    (run.stage_dir("explore") / "checkpoint").write_text("made with the old config")
    rundir.open_run(_cfg(tmp_path, report__dpi=50))  # a later section: the partial explore stays
    assert (run.stage_dir("explore") / "checkpoint").exists()
    rundir.open_run(_cfg(tmp_path, explore__steps=8))
    assert not run.stage_dir("explore").exists()


def _recording_stages(monkeypatch) -> list[str]:
    """Replaces every stage by one that only records its name: the bookkeeping under test is the runner's loop."""
    from sensei_jax.pipeline import runner

    ran = []

    def stage(name):
        def run_stage(cfg, run_dir):
            ran.append(name)
            return {"stage": name}

        return run_stage

    monkeypatch.setattr(runner, "stage_function", stage)
    return ran


def test_stop_after_ends_the_pipeline_after_that_stage(tmp_path, monkeypatch, capsys):
    from sensei_jax.run import main

    ran = _recording_stages(monkeypatch)
    assert main(["--run.root", str(tmp_path), "--stop-after", "annotate"]) == 0
    assert ran == ["collect", "pairs", "annotate"]
    assert main(["--run.root", str(tmp_path), "--stop-after", "annotat"]) == 2
    assert "'annotat' is not a stage" in capsys.readouterr().err


def test_a_multi_process_job_refuses_single_process_stages_until_they_are_done(tmp_path, monkeypatch, capsys):
    from sensei_jax.pipeline import runner
    from sensei_jax.run import main

    ran = _recording_stages(monkeypatch)
    monkeypatch.setattr(runner, "_process_count", lambda: 2)
    # collect renders on one node: a 2-process job stops before it, naming it and what to run instead.
    assert main(["--run.root", str(tmp_path), "--stop-after", "annotate"]) == 2
    err = capsys.readouterr().err
    assert "'collect' runs in one process" in err and "python -m sensei_jax.run collect" in err
    assert ran == []
    # Once collect and pairs are done (by a one-process run), the multi-process job skips them and goes on.
    monkeypatch.setattr(runner, "_process_count", lambda: 1)
    assert main(["--run.root", str(tmp_path), "--stop-after", "pairs"]) == 0
    monkeypatch.setattr(runner, "_process_count", lambda: 2)
    assert main(["--run.root", str(tmp_path), "--stop-after", "distill"]) == 0
    assert ran == ["collect", "pairs", "annotate", "distill"]
