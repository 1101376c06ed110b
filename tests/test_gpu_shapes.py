"""The compile-only check of the gpu profile's programs (benchmarks/gpu_shapes.py): real shapes compile on the CPU
with memory figures, and a program that does not fit or does not compile fails the check.

The real-shape run is a reduced set at the gpu profile's shapes (the SENSEI train step of configs/robodesk_sensei.yaml,
LLaVA-1.5-7B-shaped scoring at 336 px, the 4,096-world Robodesk step with images; the full set, 2-3 min, is in
docs/performance.md): nothing is allocated at model size, only compiled.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from jax_env import subprocess_env

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
MEMORY_FIELDS = ("argument", "output", "alias", "temp", "generated_code", "total")


def _run(script: str, *args: str, timeout: int = 400) -> tuple[int, dict, str]:
    run = subprocess.run([sys.executable, str(BENCHMARKS / script), *args], cwd=ROOT, env=subprocess_env(),
                         capture_output=True, text=True, timeout=timeout)
    try:
        report = json.loads(run.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"{script} {' '.join(args)} printed no JSON (exit {run.returncode}):\n{run.stderr[-3000:]}")
    return run.returncode, report, run.stderr


def test_gpu_shapes_compile_with_memory_figures():
    code, report, stderr = _run("gpu_shapes.py", "--only", "llava_7b_336,env_4096_images,sensei_train")
    assert code == 0, stderr[-3000:]
    assert report["benchmark"] == "gpu_shapes" and report["hardware"]["jax_backend"] == "cpu"
    rows = {r["program"]: r for r in report["results"]}
    assert set(rows) == {"llava_7b_336", "env_4096_images", "sensei_train"}
    for name, row in rows.items():
        assert "error" not in row, (name, row["error"])
        memory = row["memory_gib"]
        assert set(MEMORY_FIELDS) <= set(memory)
        assert memory["argument"] > 0 and memory["output"] > 0 and memory["total"] > 0, (name, memory)
        assert memory["total"] == pytest.approx(memory["argument"] + memory["output"] - memory["alias"]
                                                + memory["temp"] + memory["generated_code"])
        assert row["compile_s"] > 0 and row["fits"] is True
        assert row["needed_gib"] == pytest.approx(memory["total"] * (1 + report["headroom"]))
    # The real shapes: LLaVA-1.5-7B's weights (7.06B parameters, 13.1 GiB of bf16) are the program's arguments.
    llava = rows["llava_7b_336"]
    assert llava["shapes"]["image_size"] == 336 and llava["shapes"]["pairs_per_call"] == 8
    assert llava["dtype"] == "bfloat16" and 7.0e9 < llava["shapes"]["parameters"] < 7.1e9
    assert llava["exact_gib"]["weights"] == pytest.approx(13.1, abs=0.1)
    assert llava["memory_gib"]["argument"] >= llava["exact_gib"]["weights"]
    env = rows["env_4096_images"]
    assert env["shapes"]["num_envs"] == 4096 and env["shapes"]["image_size"] == 64
    # The step returns the state, with 4,096 64x64 RGB images in it.
    assert env["memory_gib"]["output"] * 2**30 > 4096 * 64 * 64 * 3
    # SENSEI's train step at the paper's settings, with its 1M-step replay of 64x64 images (11.8 GiB) on the device;
    # agent state and replay are donated, so its outputs reuse them.
    train = rows["sensei_train"]
    assert train["shapes"]["batch"] == [16, 64] and train["shapes"]["preset"] == "medium"
    assert train["shapes"]["ensemble"] == [8, 3, 640] and train["shapes"]["task_heads"] == 12
    assert train["exact_gib"]["replay"] > 1e6 * 64 * 64 * 3 / 2**30
    assert train["memory_gib"]["alias"] == pytest.approx(train["exact_gib"]["state_total"], rel=0.01)
    assert report["verdict"] == {"ok": True, "compiled": 3, "failed": [], "too_big": [],
                                 "largest_gib": pytest.approx(llava["memory_gib"]["total"])}


def test_suite_compile_only_fails_when_nothing_fits():
    # Through the suite: a limit no program fits makes the verdict false and the exit status 1.
    code, report, stderr = _run("suite.py", "--profile", "smoke", "--compile-only", "--only", "vlm",
                                "--limit-gib", "0.001")
    assert code == 1, stderr[-3000:]
    assert report["benchmark"] == "gpu_shapes" and report["profile"] == "smoke"
    (row,) = report["results"]
    assert row["program"] == "llava_tiny" and "error" not in row
    assert row["memory_gib"]["total"] > 0.001 and row["fits"] is False
    assert report["verdict"]["ok"] is False and report["verdict"]["too_big"] == ["llava_tiny"]


def test_a_program_that_does_not_compile_fails_the_check(monkeypatch):
    if str(BENCHMARKS) not in sys.path:
        monkeypatch.syspath_prepend(str(BENCHMARKS))
    import gpu_shapes

    def broken():
        raise ValueError("shapes (3, 4) and (5, 6) do not match")

    monkeypatch.setitem(gpu_shapes.PROGRAMS, "broken", ("vlm", "a program that does not lower", broken))
    report = gpu_shapes.check(["broken"])
    (row,) = report["results"]
    assert row["fits"] is False and "shapes (3, 4) and (5, 6)" in row["error"]
    assert report["verdict"]["ok"] is False and report["verdict"]["failed"] == ["broken"]
    assert gpu_shapes.exit_code(report) == 1
