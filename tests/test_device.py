"""The GPU install, the `doctor` command and the `run.device` check (docs/scaling.md), on a CPU-only machine.

The check's decisions are tested on the facts `hardware` gathers (dicts as a GPU or TPU machine reports them); the
CLI is tested end to end on this machine, where JAX has no GPU (conftest.py sets JAX_PLATFORMS=cpu, which the
subprocesses inherit, so the results hold on a GPU machine too).
"""

import json
import os
import re
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from sensei_jax import config as config_lib
from sensei_jax import hardware, run
from sensei_jax.pipeline import device, stages

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
REQUIREMENT = re.compile(r"^(?P<name>[A-Za-z0-9_.-]+)(\[(?P<extras>[^\]]*)\])?(?P<spec>.*)$")


def requirements(names: list[str]) -> dict[str, tuple[str, str]]:
    """Package name -> (extras, version specifier) of pyproject requirement strings."""
    out = {}
    for text in names:
        match = REQUIREMENT.match(text.replace(" ", ""))
        out[match["name"]] = (match["extras"] or "", match["spec"])
    return out


def test_the_gpu_and_tpu_extras_pin_the_main_jax_bound_and_the_gpu_one_warps_cuda():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    main_spec = requirements(project["dependencies"])["jax"][1]
    assert main_spec, "pyproject.toml's jax requirement has no version bound"
    for extra, build in (("gpu", "cuda"), ("tpu", "tpu")):
        extras, spec = requirements(project["optional-dependencies"][extra])["jax"]
        assert spec == main_spec, f"the {extra} extra bounds jax by {spec!r}, the dependencies by {main_spec!r}"
        assert extras.startswith(build), extras
    # The gpu extra's CUDA major is the one the installed warp-lang wheel is built with: one CUDA in the process.
    extras, _ = requirements(project["optional-dependencies"]["gpu"])["jax"]
    warp = hardware.warp_facts()
    assert extras == f"cuda{warp['cuda_toolkit'].split('.')[0]}", (extras, warp["cuda_toolkit"])


def test_paper_configs_ask_for_a_gpu_and_the_cpu_sized_ones_do_not():
    for name in ("robodesk_sensei", "robodesk_p2x", "robodesk_motif", "robodesk_dreamer"):
        assert config_lib.load(CONFIGS / f"{name}.yaml").run.device == "gpu", name
    for name in ("robodesk_sensei_tiny", "robodesk_p2x_tiny", "robodesk_motif_tiny", "dreamer_tiny_cpu"):
        assert config_lib.load(CONFIGS / f"{name}.yaml").run.device == "auto", name
    assert config_lib.load().run.device == "auto"
    with pytest.raises(config_lib.ConfigError, match=r"'run\.device'.*'xpu'"):
        config_lib.load(None, ["--run.device", "xpu"])


def test_a_paper_run_stops_at_start_without_a_gpu(tmp_path):
    start = time.time()
    result = subprocess.run([sys.executable, "-m", "sensei_jax.run", "collect", "--config",
                             str(CONFIGS / "robodesk_sensei.yaml"), "--run.root", str(tmp_path)],
                            capture_output=True, text=True, cwd=ROOT, timeout=60,
                            env=os.environ | {"PYTHONPATH": str(ROOT)})
    seconds = time.time() - start
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: run.device is 'gpu' but JAX has no GPU backend"), lines
    assert "bash scripts/setup.sh gpu" in lines[0] and "--run.device cpu" in lines[0]
    assert "Traceback" not in result.stderr and not any(tmp_path.iterdir()), "it ran past the check"
    assert seconds < 60, f"the check took {seconds:.0f} s"


def test_run_device_cpu_passes_the_check_and_puts_jax_on_the_cpu(tmp_path, capsys):
    # In this process: the next check the stage makes (collect has not run) is what stops it, not run.device.
    assert run.main(["pairs", "--config", str(CONFIGS / "robodesk_sensei.yaml"), "--run.device", "cpu",
                     "--run.root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "collect" in err and "run.device" not in err, err
    # In a fresh interpreter with no JAX_PLATFORMS: the check itself selects the CPU before JAX starts.
    code = ("from sensei_jax import config; from sensei_jax.pipeline import device; import jax; "
            "device.check(config.load(None, ['--run.device', 'cpu']), 'annotate'); "
            "print(jax.config.jax_platforms, jax.default_backend())")
    env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"} | {"PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.stdout.split() == ["cpu", "cpu"], out.stderr


GPU_JAX = {"backend": "gpu"}
TPU_JAX = {"backend": "tpu"}
CPU_JAX = {"backend": "cpu"}
CUDA_WARP = {"installed": True, "version": "1.18.0", "cuda_toolkit": "13.4", "cuda_driver": "13.0",
             "cuda_driver_needed": "13.0", "cuda_device_count": 1}
NO_DRIVER_WARP = CUDA_WARP | {"cuda_driver": None, "cuda_device_count": 0}
OLD_DRIVER_WARP = CUDA_WARP | {"cuda_driver": "12.8", "cuda_device_count": 0}
CUDA_VERSIONS = {"jax": "0.10.2", "jax-cuda13-plugin": "0.10.2"}


def decide(requested, jax_facts, warp_facts, uses_env=True, versions=CUDA_VERSIONS, platforms=None):
    return device.problem(requested, "command 'collect'", uses_env, jax_facts, versions, lambda: warp_facts,
                          platforms)


def test_the_check_decides_from_what_jax_and_warp_report():
    assert decide("gpu", GPU_JAX, CUDA_WARP) is None
    assert decide("auto", CPU_JAX, NO_DRIVER_WARP) is None
    # run.device gpu: each missing half is named, with both ways out.
    message = decide("gpu", CPU_JAX, NO_DRIVER_WARP, versions={"jax": "0.10.2"})
    assert "no CUDA plugin of jax" in message and "no NVIDIA CUDA driver" in message and "--run.device cpu" in message
    message = decide("gpu", CPU_JAX, CUDA_WARP)
    assert "its CUDA plugin is installed (jax-cuda13-plugin 0.10.2)" in message and "Warp" not in message.split(". Install")[0]
    assert "JAX_PLATFORMS=cpu" in decide("gpu", CPU_JAX, CUDA_WARP, platforms="cpu")
    # A driver older than the CUDA Warp is built with; the same stack mismatch stops an env stage under `auto`.
    assert "12.8" in decide("gpu", GPU_JAX, OLD_DRIVER_WARP) and "needs 13.0" in decide("gpu", GPU_JAX, OLD_DRIVER_WARP)
    assert "JAX runs on the GPU, but Warp has no CUDA device" in decide("auto", GPU_JAX, OLD_DRIVER_WARP)
    assert decide("auto", GPU_JAX, OLD_DRIVER_WARP, uses_env=False) is None
    # TPU: allowed where no env is stepped, refused for the env stages whatever was asked.
    assert decide("tpu", TPU_JAX, NO_DRIVER_WARP, uses_env=False) is None
    assert decide("auto", TPU_JAX, NO_DRIVER_WARP, uses_env=False) is None
    for requested in ("tpu", "auto"):
        message = decide(requested, TPU_JAX, NO_DRIVER_WARP)
        assert "command 'collect' steps the MJX-Warp Robodesk env" in message and "not on a TPU" in message
    assert "JAX has no TPU backend (it runs on cpu)" in decide("tpu", CPU_JAX, NO_DRIVER_WARP, uses_env=False)


def test_the_registry_says_which_commands_step_the_env():
    cfg = config_lib.load()
    assert [name for name, stage in stages.STAGES.items() if stage.uses_env(cfg)] == [
        "collect", "pairs", "explore", "baseline", "train", "transfer", "env"]
    assert not stages.STAGES["train"].uses_env(config_lib.load(CONFIGS / "dreamer_tiny_cpu.yaml"))  # the toy env
    assert stages.STAGES["evaluate"].uses_env(config_lib.load(None, ["--evaluate.transfer", "true"]))
    assert [name for name, stage in stages.STAGES.items() if not stage.checks_device] == ["config", "doctor"]


def test_doctor_reports_the_machine_and_a_verdict(capsys):
    import jax

    # Exempt from the check: it runs under a config that asks for a GPU.
    assert run.main(["doctor", "--json", "--config", str(CONFIGS / "robodesk_sensei.yaml")]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["jax"]["backend"] == "cpu" and facts["jax"]["process_count"] == 1
    assert facts["jax"]["device_count"] == len(facts["jax"]["devices"]) == jax.device_count()
    assert facts["versions"]["jax"] == jax.__version__ and facts["versions"]["warp-lang"]
    assert facts["warp"]["cuda_toolkit"] and facts["mjx"] == {"impl": "warp", "device": "cpu"}
    assert facts["host_memory"]["total"] > 0 and "XLA_PYTHON_CLIENT_MEM_FRACTION" in facts["memory_settings"]
    assert facts["verdict"]["gpu_ready"] is False
    assert facts["verdict"]["line"].startswith("CPU only: JAX has no GPU")
    assert run.main(["doctor"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == facts["verdict"]["line"] and "bash scripts/setup.sh gpu" in lines[-1]
    assert any(line.startswith("jax       backend cpu") for line in lines)
    assert any(line.startswith("mjx       impl warp, runs on cpu") for line in lines)


def test_setup_rejects_an_unknown_mode_before_touching_anything():
    result = subprocess.run(["bash", str(ROOT / "scripts" / "setup.sh"), "cuda"], capture_output=True, text=True)
    assert result.returncode == 1 and "unknown mode 'cuda' (modes: test, gpu, tpu)" in result.stderr
