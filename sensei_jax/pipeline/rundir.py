"""The run folder: resolved config, `status.json` of finished stages, skip / resume / force.

A run is one folder, `<run.root>/<run.name>/`. It holds the resolved `config.yaml`, one sub-folder per stage and
`status.json`, which records each finished stage with its summary and timing. A stage is "done" only once its
`run_stage` returned and its entry was written (atomically), so a process killed anywhere leaves the stage not done;
rerunning it calls the stage again, and the stage resumes from whatever complete pieces (chunks, epochs,
checkpoints) it finds in its own folder. `--force STAGE` forgets that stage and every later one and deletes their
outputs before running them again.

If the config changed since a stage finished, in a key that stage (or an earlier one) depends on, running the
stage again would mix results of two configs; that is an error naming the keys, unless the user forces a rerun.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from sensei_jax import config as config_lib
from sensei_jax import distributed
from sensei_jax import files
from sensei_jax.pipeline import stages

STAGES: tuple[str, ...] = stages.PIPELINE  # collect ... report, in run order (the registry in stages.py)
# Keys that never change results: where the run lives, and the hardware check (a run may move between machines).
IGNORED_KEYS = ("run.name", "run.root", "run.device")


class StageError(RuntimeError):
    """A stage cannot run: its input is missing, incomplete or corrupt (the message names the file)."""


def stage_index(name: str) -> int:
    return stages.pipeline_index(name)


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: tree}


def changed_keys(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Dotted keys whose values differ between two config dicts (ignoring where the run lives)."""
    a, b = _flatten(old), _flatten(new)
    # Keys absent from the old config were added to the code since (with defaults); they do not count as changes.
    return sorted(k for k in a if a[k] != b.get(k, "<missing>") and k not in IGNORED_KEYS)


def first_affected_stage(keys: list[str]) -> str | None:
    """The earliest stage that reads any of `keys`."""
    indices = [stage_index(stages.section_stage(k.split(".", 1)[0])) for k in keys]
    return STAGES[min(indices)] if indices else None


class RunDir:
    """One run folder. `stage_dir(name)` is where stage `name` writes; `status.json` says which stages are done.

    In a job of several processes the folder must be on a filesystem they all see: process 0 alone creates,
    writes and deletes here, and the others wait at a barrier until it has (they read the same files)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    # --- files -------------------------------------------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def status_path(self) -> Path:
        return self.path / "status.json"

    def stage_dir(self, name: str) -> Path:
        stage_index(name)
        return self.path / stages.get(name).output_folder

    def read_status(self) -> dict[str, Any]:
        if not self.status_path.exists():
            return {"stages": {}}
        try:
            status = files.read_json(self.status_path)
        except ValueError as error:
            raise StageError(f"{self.status_path} is corrupt ({error}); delete it to recompute which stages are "
                             "done (finished stages resume from their files)") from error
        if not isinstance(status, dict) or not isinstance(status.get("stages"), dict):
            raise StageError(f"{self.status_path} does not hold a {{'stages': {{...}}}} mapping")
        return status

    def _write_status(self, status: dict[str, Any]) -> None:
        distributed.on_main_process(f"status {self.status_path}", lambda: files.write_json(self.status_path, status))

    def done(self, name: str) -> bool:
        return self.read_status()["stages"].get(name, {}).get("state") == "done"

    def summary(self, name: str) -> dict[str, Any] | None:
        entry = self.read_status()["stages"].get(name)
        return entry.get("summary") if entry and entry.get("state") == "done" else None

    # --- set-up ------------------------------------------------------------------------------------------------

    def prepare(self, cfg: config_lib.Config, force: list[str] | tuple[str, ...] = ()) -> None:
        """Creates the folder, applies `force`, checks the config against finished stages and saves config.yaml.

        Raises `config_lib.ConfigError` when the config changed in a key a finished stage depends on and no
        forced stage covers it.
        """
        distributed.on_main_process(f"mkdir {self.path}", lambda: make_writable_folder(self.path, cfg.run.root))
        new = config_lib.to_dict(cfg)
        forced_from = min((stage_index(s) for s in force), default=None)
        if forced_from is not None:
            self.forget(STAGES[forced_from:])
        if self.config_path.exists():
            old = config_lib.read_yaml(self.config_path)
            keys = changed_keys(old, new)
            affected = first_affected_stage(keys)
            if affected is not None:
                # Only a finished affected stage is a conflict. An unfinished one runs with the new config: its
                # partial outputs (made with the old one) are discarded, and later stages go when it runs.
                status = self.read_status()["stages"]
                stale = [affected] if affected in status else []
                if not stale and self.has_outputs(affected):
                    print(f"[{affected}] the config changed ({', '.join(keys[:4])}): discarding its partial outputs")
                    self.forget([affected])
                if stale:
                    shown = ", ".join(f"{k} ({_flatten(old).get(k, '<missing>')!r} -> {_flatten(new).get(k)!r})"
                                      for k in keys[:6])
                    raise config_lib.ConfigError(
                        f"the config of run {self.path} changed since stage '{stale[0]}' ran: {shown}. Pass "
                        f"--force {affected} to redo '{affected}' and the stages after it with the new config, or "
                        f"start a new run with --run.name NAME")
        distributed.on_main_process(f"config {self.config_path}", lambda: self._save_config(cfg))

    def _save_config(self, cfg: config_lib.Config) -> None:
        config_lib.save(cfg, self.config_path.with_suffix(".yaml.tmp"))
        self.config_path.with_suffix(".yaml.tmp").replace(self.config_path)

    def forget(self, stages: tuple[str, ...] | list[str]) -> None:
        """Marks `stages` as not done (status first, so a crash in between never leaves stale 'done' entries),
        then deletes their outputs."""
        status = self.read_status()
        for name in stages:
            status["stages"].pop(name, None)
        self._write_status(status)
        distributed.on_main_process(f"forget {self.path} {' '.join(stages)}", lambda: self._delete_outputs(stages))

    def _delete_outputs(self, stages: tuple[str, ...] | list[str]) -> None:
        for name in stages:
            for path in self.outputs(name):
                if path.is_dir():
                    shutil.rmtree(path)
                elif path.exists():
                    path.unlink()

    def has_outputs(self, name: str) -> bool:
        """Whether stage `name` left anything on disk (finished or not)."""
        return any(p.is_file() or (p.is_dir() and any(p.iterdir())) for p in self.outputs(name))

    def outputs(self, name: str) -> list[Path]:
        """Everything stage `name` writes: its folder, and for `report` the files at the top of the run folder."""
        paths = [self.stage_dir(name)]
        if name == "report":
            paths += [self.path / "report.md", *sorted(self.path.glob("*.png"))]
        return paths

    # --- running -----------------------------------------------------------------------------------------------

    def require_done(self, name: str, needed_by: str) -> None:
        """Raises a StageError when stage `name` (an input of `needed_by`) has not finished in this run."""
        if not self.done(name):
            raise StageError(f"stage '{needed_by}' needs the output of stage '{name}', which has not finished in "
                             f"{self.path} (see {self.status_path}); run `python -m sensei_jax.run {name}` first, or "
                             "run the whole pipeline with no command")

    def run(self, name: str, fn: Callable[[], dict[str, Any] | None], force: bool = False,
            log: Callable[[str], None] = print) -> dict[str, Any]:
        """Runs stage `name` (`fn()` returns its JSON-able summary) unless it is done; records it as done."""
        if force:
            self.forget(STAGES[stage_index(name):])
        status = self.read_status()
        entry = status["stages"].get(name)
        if entry and entry.get("state") == "done":
            log(f"[{name}] done already ({entry.get('seconds', 0):.0f} s); skipping (use --force {name} to redo it)")
            return entry.get("summary") or {}
        later = [s for s in STAGES[stage_index(name) + 1:] if s in status["stages"] or self.has_outputs(s)]
        if later:  # they were computed from this stage's old (or missing) output
            log(f"[{name}] forgetting the later stages {', '.join(later)}, which depend on it")
            self.forget(later)
        resumed = self.stage_dir(name).exists() and any(self.stage_dir(name).iterdir())
        log(f"[{name}] {'resuming' if resumed else 'running'} -> {self.stage_dir(name)}")
        distributed.on_main_process(f"mkdir {self.stage_dir(name)}",
                                    lambda: self.stage_dir(name).mkdir(parents=True, exist_ok=True))
        start = time.time()
        summary = fn() or {}
        seconds = time.time() - start
        status = self.read_status()
        status["stages"][name] = {"state": "done", "seconds": round(seconds, 2), "finished": time.time(),
                                  "summary": summary}
        self._write_status(status)
        log(f"[{name}] done in {seconds:.1f} s")
        return summary


def make_writable_folder(path: Path, root: str) -> None:
    """Creates run folder `path` (under `run.root` `root`); a ConfigError naming run.root and the cause otherwise."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise run_root_error(root, path, error) from error


def check_run_root(cfg: config_lib.Config) -> None:
    """Proves, leaving nothing behind, that the run folder can be created and written: makes and removes a folder in
    the nearest part of its path that exists. A ConfigError naming run.root and the cause (a read-only file
    system, a file in the way, no permission, /proc or /sys) otherwise."""
    path = cfg.run_dir
    existing = files.existing_ancestor(path)
    try:
        if not existing.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(path))
        os.rmdir(tempfile.mkdtemp(prefix=".write_test.", dir=existing))
    except OSError as error:
        # The probe's random name says nothing: blame the folder it was made in (or the file in the way).
        raise run_root_error(cfg.run.root, path, error, path if error.errno == errno.ENOTDIR else existing) from error


def run_root_error(root: str, path: Path, error: OSError, where: Path | None = None) -> config_lib.ConfigError:
    """The one-line error of run folder `path` under `run.root` `root` that `error` (at `where`) kept from being
    created."""
    cause = files.os_error_cause(error, creating=True, path=where)
    return config_lib.ConfigError(f"run.root {root}: cannot create the run folder {path}: {cause}; set --run.root "
                                  "to a folder this user can write")


def open_run(cfg: config_lib.Config, force: list[str] | tuple[str, ...] = ()) -> RunDir:
    """The run folder of `cfg` (`<run.root>/<run.name>`), prepared: config saved, forced stages forgotten."""
    run = RunDir(cfg.run_dir)
    run.prepare(cfg, force)
    return run


def run_single_stage(name: str, cfg: config_lib.Config, run_stage: Callable[[config_lib.Config, Path], dict],
                     force: bool = False) -> dict[str, Any]:
    """What a stage's command does: prepare the run folder and run this one stage (skipping it when done, redoing
    it and forgetting the later ones with `force`)."""
    run = open_run(cfg, [name] if force else [])
    return run.run(name, lambda: run_stage(cfg, run.path))
