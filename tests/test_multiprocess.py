"""The CLI as a job of two processes on localhost (`jax.distributed` on the CPU, gloo collectives, 2 virtual
devices each, so the Trainer's mesh has 4 devices over 2 processes).

- `doctor` started with the job flags (process 0) and the SENSEI_* variables (process 1) reports a job of 2
  processes and 4 devices: the job was joined before anything used a device (JAX refuses to join after).
- Bad job values stop with one error line naming the flag, before anything starts.
- The tiny DreamerV3 config trains as one job that writes one set of outputs (process 0's), and a job killed with
  SIGKILL after a checkpoint resumes and ends with the same metrics as a run that was never interrupted.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from jax_env import subprocess_env

ROOT = Path(__file__).resolve().parent.parent
STEPS = 256  # 4 updates after train_start: each costs about a second of cross-process all-reduces over TCP (gloo)
KILL_AFTER = 128  # the checkpoint after which the job is killed (saved every 128 steps)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _env(**extra: str) -> dict[str, str]:
    # No SENSEI_* job variables of this process (its cache folder stays: the CLI reads SENSEI_JAX_CACHE).
    env = {k: v for k, v in subprocess_env(2).items() if not k.startswith("SENSEI_") or k == "SENSEI_JAX_CACHE"}
    return {**env, **extra}


def _job(command: list[str], port: int | None = None) -> list[subprocess.Popen]:
    """Both processes of a job running `command` (after the job flags); process 1 gets its part by variables."""
    port = port or _free_port()
    flags = ["--coordinator", f"localhost:{port}", "--num-processes", "2", "--process-id", "0"]
    variables = {"SENSEI_COORDINATOR": f"localhost:{port}", "SENSEI_NUM_PROCESSES": "2", "SENSEI_PROCESS_ID": "1"}
    start = [sys.executable, "-m", "sensei_jax.run"]
    return [subprocess.Popen(start + flags + command, cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True),
            subprocess.Popen(start + command, cwd=ROOT, env=_env(**variables), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)]


def _wait(processes: list[subprocess.Popen], timeout: float = 300) -> list[str]:
    outputs = []
    for process in processes:
        try:
            outputs.append(process.communicate(timeout=timeout)[0])
        except subprocess.TimeoutExpired:
            for p in processes:
                p.kill()
            raise
    for process, output in zip(processes, outputs):
        assert process.returncode == 0, output[-4000:]
    return outputs


def _train_command(root: Path) -> list[str]:
    return ["train", "--config", "configs/dreamer_tiny_cpu.yaml", "--steps", str(STEPS), "--run.root", str(root),
            "--train.save_every", "128", "--train.train_start", "128", "--train.train_ratio", "4",
            "--train.progress", "false"]


def test_doctor_sees_the_job_of_two_processes():
    outputs = _wait(_job(["doctor"]), timeout=120)
    for index, output in enumerate(outputs):
        assert f"{index} of 2" in output, output


def test_a_single_process_command_is_refused_by_a_job_of_two(tmp_path):
    processes = _job(["collect", "--config", "configs/default.yaml", "--run.root", str(tmp_path)])
    for process in processes:
        output = process.communicate(timeout=120)[0]
        assert process.returncode == 2 and "'collect' runs in one process" in output, output[-2000:]
    assert not (tmp_path / "default" / "collect").exists()


@pytest.mark.parametrize("flags,named", [
    (["--coordinator", "localhost:1234", "--num-processes", "2"], "missing: --process-id"),
    (["--coordinator", "localhost:1234", "--num-processes", "2", "--process-id", "2"], "--process-id must be in"),
    (["--coordinator", "nohost", "--num-processes", "2", "--process-id", "0"], "HOST:PORT"),
    (["--distributed", "auto", "--process-id", "0"], "drop --process-id"),
])
def test_bad_job_values_are_one_error_line(flags, named):
    done = subprocess.run([sys.executable, "-m", "sensei_jax.run", *flags, "config"], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and named in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_removed_train_distributed_key_names_the_flags(tmp_path):
    done = subprocess.run([sys.executable, "-m", "sensei_jax.run", "config", "--train.distributed", "true"],
                          cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "train.distributed" in done.stderr and "--coordinator" in done.stderr


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    root = tmp_path_factory.mktemp("straight")
    _wait(_job(_train_command(root)))
    return root / "dreamer_tiny_cpu" / "train"


def _rows(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_a_job_writes_one_set_of_outputs(straight):
    summary = json.loads((straight / "summary.json").read_text())
    assert summary["env_steps"] == STEPS and summary["train_steps"] > 0
    steps = [row["step"] for row in _rows(straight)]
    assert steps == sorted(set(steps)) and steps[-1] == STEPS  # one writer: no row twice
    assert len(list(straight.glob("events.out.tfevents.*"))) == 1
    assert sorted(p.name for p in (straight / "checkpoints").iterdir()) == ["128", "256"]


def test_killed_job_resumes_to_the_uninterrupted_result(straight, tmp_path):
    checkpoints = tmp_path / "dreamer_tiny_cpu" / "train" / "checkpoints"
    job = _job(_train_command(tmp_path))
    deadline = time.time() + 300
    while not (checkpoints / str(KILL_AFTER)).is_dir():
        assert time.time() < deadline and all(p.poll() is None for p in job), "no checkpoint before the deadline"
        time.sleep(0.05)
    for process in job:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert str(STEPS) not in [p.name for p in checkpoints.iterdir()], "the job finished before it was killed"

    _wait(_job(_train_command(tmp_path)))
    resumed = tmp_path / "dreamer_tiny_cpu" / "train"
    summary = json.loads((resumed / "summary.json").read_text())
    assert summary["resumed_from"] >= KILL_AFTER and summary["env_steps"] == STEPS
    uninterrupted = json.loads((straight / "summary.json").read_text())
    assert summary["train_steps"] == uninterrupted["train_steps"]
    # The losses of the last updates, bit for bit: the same env steps and updates, by the same keys.
    losses = {k: v for k, v in uninterrupted["train_metrics"].items() if k.startswith("loss/")}
    assert losses and {k: summary["train_metrics"][k] for k in losses} == losses
