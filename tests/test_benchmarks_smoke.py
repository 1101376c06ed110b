"""Every benchmark script's smoke mode runs against today's code and reports sane figures.

Benchmarks are not run otherwise, so these tests are what keeps them from rotting. The scripts' smoke modes and the
suite's smoke profile run in one subprocess (the project's python, JAX on the CPU, the tests' persistent XLA cache):
one JAX start-up and one set of compilations for all of them, each script's `main(["--smoke"])` with its stdout
captured as it would be printed. One test function per script checks that script's JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sensei_jax import compile_cache

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
SCRIPTS = ("env_throughput", "env_reference_parity", "vlm_throughput", "reward_throughput", "train_throughput",
           "explore_throughput", "suite", "dreamer_vs_reference", "minihack_throughput", "sensei_effect")

# Runs each named script's main in this one process; writes <out>/<name>.json: its printed JSON, or the error.
_DRIVER = r"""
import contextlib, io, json, sys, time, traceback
from pathlib import Path
bench, out = sys.argv[1], Path(sys.argv[2])
sys.path.insert(0, bench)
for name in sys.argv[3:]:
    argv = ["--profile", "smoke"] if name == "suite" else ["--smoke"]
    printed, begin = io.StringIO(), time.perf_counter()
    try:
        with contextlib.redirect_stdout(printed):
            code = __import__(name).main(argv)
        if code:
            raise SystemExit(f"{name}.main returned {code}")
        result = {"report": json.loads(printed.getvalue())}
    except BaseException:
        result = {"error": traceback.format_exc(), "printed": printed.getvalue()[-3000:]}
    result["wall_s"] = time.perf_counter() - begin
    (out / f"{name}.json").write_text(json.dumps(result))
    print(f"{name}: {result['wall_s']:.1f} s{' (error)' if 'error' in result else ''}", file=sys.stderr, flush=True)
"""


def _env() -> dict[str, str]:
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    cache = compile_cache.directory()  # the tests' cache (tests/conftest.py), for the scripts that set none
    if cache is not None:
        env.update(JAX_COMPILATION_CACHE_DIR=str(cache), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="1.0")
    return env


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> dict[str, dict]:
    out = tmp_path_factory.mktemp("bench_smoke")
    run = subprocess.run([sys.executable, "-c", _DRIVER, str(BENCHMARKS), str(out), *SCRIPTS], cwd=ROOT,
                         env=_env(), capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    return {name: json.loads((out / f"{name}.json").read_text()) for name in SCRIPTS}


def _report(smoke: dict, name: str) -> dict:
    entry = smoke[name]
    assert "error" not in entry, f"{name} --smoke failed:\n{entry['error']}\n{entry.get('printed', '')}"
    report = entry["report"]
    assert report["smoke"] is True
    assert report["hardware"]["jax_backend"] == "cpu" and report["hardware"]["cpu_count"] >= 1
    return report


def _positive(row: dict, *keys: str) -> None:
    for key in keys:
        assert isinstance(row[key], (int, float)) and 0 < row[key] < float("inf"), (key, row[key])


def test_env_throughput_smoke(smoke):
    report = _report(smoke, "env_throughput")
    assert report["benchmark"] == "robodesk_env_throughput"
    rows = report["results"]
    assert [(r["num_envs"], r["images"]) for r in rows] == [(2, False), (2, True)]
    for row in rows:
        _positive(row, "env_steps_per_s")
        assert row["compile_s"] >= 0 and row["contact_overflow"] is False


def test_env_reference_parity_smoke(smoke):
    report = _report(smoke, "env_reference_parity")
    result = report["results"]
    assert result["steps"] == 2 and result["reference"].startswith("not run")
    _positive(result["end_effector_path_mm"], "ours")  # random actions move the arm
    # Without --smoke the reference python is required, with a message that says so.
    run = subprocess.run([sys.executable, str(BENCHMARKS / "env_reference_parity.py")], cwd=ROOT, env=_env(),
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "--reference-python PATH is required" in run.stderr


def test_vlm_throughput_smoke(smoke):
    report = _report(smoke, "vlm_throughput")
    (row,) = report["results"]
    assert row["model"] == "tiny" and row["image_size"] == 32 and row["timed"] is True
    assert row["image_tokens_per_image"] == (32 // 8) ** 2  # the tiny tower's 8-px patches
    _positive(row, "parameters", "flops_per_pair", "pairs_per_s", "seconds_per_call", "init_s")
    assert row["compile_s"] >= 0
    # The suite's 224 px LLaVA-1.5-7B is the 336 px config with a 16x16 patch grid instead of 24x24.
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from vlm_throughput import PRESETS, with_image_size
    finally:
        sys.path.remove(str(BENCHMARKS))
    base = PRESETS["7b"]()
    assert (base.vision.image_size, base.image_seq_length) == (336, 24 * 24)
    small = with_image_size(base, 224)
    assert small.image_seq_length == 16 * 16 and small.text == base.text and small.vision.patch_size == 14


def test_reward_throughput_smoke(smoke):
    report = _report(smoke, "reward_throughput")
    (row,) = report["results"]
    assert row["image_size"] == 64 and row["train_batch"] == 4
    _positive(row, "parameters", "train_pairs_per_s", "train_pairs_per_s_disk", "infer_images_per_s",
              "infer_images_per_s_resize_from_224")


def test_train_throughput_smoke(smoke):
    report = _report(smoke, "train_throughput")
    (row,) = report["results"]
    assert row["preset"] == "tiny" and row["batch"] == [2, 8] and row["precision"] == "float32"
    _positive(row, "params", "env_steps_per_s", "train_step_s", "train_steps_per_s", "projected_sensei_run_h")
    assert row["train_steps_per_s"] == pytest.approx(1 / row["train_step_s"])
    assert "reference_dreamerv3" in report["skipped"]


def test_explore_throughput_smoke(smoke):
    report = _report(smoke, "explore_throughput")
    (row,) = report["results"]
    assert row["behaviour"] == "sensei" and row["num_envs"] == 2 and row["train_from"] == "measured"
    _positive(row, "collect_steps_per_s", "train_step_s", "explore_steps_per_s", "updates_per_step")
    # The driver's rate: a collection plus the updates the train ratio owes, per policy step.
    expected = 1 / (1 / row["collect_steps_per_s"] + row["updates_per_step"] * row["train_step_s"])
    assert row["explore_steps_per_s"] == pytest.approx(expected)


def test_dreamer_vs_reference_smoke(smoke):
    # Ours only, at a tiny size with the reference's CNN options (multipliers, kernel 5): the compiled train step
    # runs and the JSON carries the figures the side-by-side run reports.
    report = _report(smoke, "dreamer_vs_reference")
    assert report["benchmark"] == "dreamer_vs_reference"
    ours = report["ours"]
    assert ours["config"]["cnn_mults"] == [1, 2] and ours["config"]["cnn_kernel"] == 5
    assert ours["batch"] == [2, 8] and len(ours["steps"]) == 2
    _positive(ours, "params", "flops_per_step", "compile_s", "seconds_per_step")
    assert ours["min"] <= ours["seconds_per_step"] <= ours["max"]
    # Without --smoke the reference's path is required, with a message that says so.
    run = subprocess.run([sys.executable, str(BENCHMARKS / "dreamer_vs_reference.py")], cwd=ROOT, env=_env(),
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "--reference PATH is required" in run.stderr


def test_minihack_throughput_smoke(smoke):
    report = _report(smoke, "minihack_throughput")
    assert report["benchmark"] == "minihack_throughput"
    result = report["results"]
    assert result["task"] == "keyroom" and result["num_envs"] == 2
    _positive(result, "plain_steps_per_s", "pool_steps_per_s", "env_steps_per_s")
    assert result["compile_s"] >= 0


def test_sensei_effect_smoke(smoke):
    report = _report(smoke, "sensei_effect")
    toy = report["results"]
    assert toy["domain"] == "toy" and sorted(toy["per_seed"]) == ["0", "1"]
    for seed in ("0", "1"):
        counts = toy["counts"][seed]
        assert set(counts) == {"sensei", "p2x", "random"}
        assert all(c["steps"] == 384 and 0 <= c["count"] <= 384 for c in counts.values())
        assert toy["per_seed"][seed]["sensei"]["corner"] == counts["sensei"]["count"] / 384
    versus = toy["versus"]["p2x"]["corner"]
    assert versus["seeds"] == 2 and 0.0 < versus["p_one_sided"] <= 1.0
    assert toy["sensei_beats_p2x"]["corner"] == versus["seeds_higher"]
    assert toy["reward_model"]["grid_spearman"] > 0.9
    # The pipeline path, on the config of tests/test_pipeline_minihack.py's run (both compile the same programs).
    pipeline = report["results"]["pipeline_smoke"]
    assert pipeline["domain"] == "minihack_micro" and pipeline["measure"].startswith("share of episodes")
    seed = pipeline["counts"]["0"]
    assert set(seed) == {"sensei", "p2x", "random"}
    assert seed["sensei"]["episodes"] >= 2 and "key_picked_up" in seed["sensei"]["episodes_with"]
    share = pipeline["per_seed"]["0"]["sensei"]["key_picked_up"]
    assert share == seed["sensei"]["episodes_with"]["key_picked_up"] / seed["sensei"]["episodes"]


def test_suite_smoke(smoke):
    report = _report(smoke, "suite")
    assert report["profile"] == "smoke" and report["only"] == ["env", "vlm", "reward", "train", "explore"]
    for name, entry in report["results"].items():
        assert "error" not in entry, (name, entry.get("error"))
        assert entry["results"] and entry["wall_s"] > 0 and entry["compile_s"] >= 0
    assert len(report["results"]["env"]["results"]) == 2
    assert report["budget"]["limit_s"] == 180 and report["budget"]["wall_s"] == pytest.approx(report["wall_s"])
    paper = report["projected_paper_run"]
    assert paper["updates"] == 125_000 and paper["num_envs"] == 2  # the smoke profile's only env count
    train = report["results"]["train"]["results"][0]
    explore = report["results"]["explore"]["results"][0]
    train_h = 125_000 * train["train_step_s"] / (2 * 8 / (16 * 64)) / 3600  # batch 2 x 8 scaled to 16 x 64
    collect_h = 250_000 / explore["collect_steps_per_s"] / 3600
    assert paper["train_h"]["float32"] == pytest.approx(train_h)
    assert paper["total_h"]["float32"] == pytest.approx(collect_h + train_h)
    sensei_h = collect_h + 125_000 * explore["train_step_s"] / (2 * 8 / (16 * 64)) / 3600
    assert paper["sensei_agent_h"] == pytest.approx(sensei_h)


def test_suite_arguments():
    """The gpu profile refuses a CPU-only machine (its sizes would take hours there); unknown names are named."""
    suite = str(BENCHMARKS / "suite.py")
    run = subprocess.run([sys.executable, suite, "--profile", "gpu"], cwd=ROOT, env=_env(), capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 2 and "no GPU" in run.stderr and "--allow-cpu" in run.stderr and not run.stdout
    run = subprocess.run([sys.executable, suite, "--profile", "cpu", "--only", "env,warp"], cwd=ROOT, env=_env(),
                         capture_output=True, text=True, timeout=120)
    assert run.returncode != 0 and "unknown benchmark(s) ['warp']" in run.stderr


def test_sensei_effect_statistics():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import sensei_effect
    finally:
        sys.path.remove(str(BENCHMARKS))
    # Exact sign-flip test: 4 positive differences, only the all-positive assignment is as large: p = 1/16.
    assert sensei_effect.paired_permutation_p([3.0, 1.0, 2.0, 5.0]) == pytest.approx(1 / 16)
    assert sensei_effect.paired_permutation_p([-1.0, -2.0]) == 1.0
    assert sensei_effect.paired_permutation_p([2.0, -1.0]) == pytest.approx(2 / 4)  # +2-1 and +2+1 are >= 0.5
    low, high = sensei_effect.bootstrap_interval([1.0, 2.0, 3.0, 4.0])
    assert 1.0 <= low < 2.5 < high <= 4.0
    per_seed = {0: {"sensei": {"f": 0.5}, "p2x": {"f": 0.1}, "random": {"f": 0.6}},
                1: {"sensei": {"f": 0.4}, "p2x": {"f": 0.45}, "random": {"f": 0.2}}}
    summary = sensei_effect.compare(per_seed)
    assert summary["sensei_beats_p2x"] == {"f": 1} and summary["sensei_beats_random"] == {"f": 1}
    assert summary["versus"]["p2x"]["f"]["differences"] == pytest.approx([0.4, -0.05])
    assert summary["methods"]["sensei"]["f"]["mean"] == pytest.approx(0.45)
