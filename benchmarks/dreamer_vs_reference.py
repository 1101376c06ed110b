"""The DreamerV3 train step side by side with the reference (danijar/dreamerv3) at its size1m shape.

    python benchmarks/dreamer_vs_reference.py --reference PATH --reference-python VENV/bin/python
    python benchmarks/dreamer_vs_reference.py --reference PATH --build-venv [--reference-venv DIR]   # build its venv
    python benchmarks/dreamer_vs_reference.py --smoke          # ours only, tiny, seconds (CI)

The reference is a checkout of danijar/dreamerv3 (commit e3f0224...) at PATH; it is never imported here: the script
copies it into a scratch folder, replaces the copy's Dummy env by an image-only one (64x64x3 uint8, one continuous
action of --action-size) and runs its own `dreamerv3/main.py` as a subprocess in its own Python (`--reference-python`,
or a venv at `--reference-venv`, built with its pinned CPU requirements when `--build-venv` is given). Its seconds
per train step come from `fps/train` in its metrics.jsonl (replayed steps per second, one value per log window of
`--reference-window` seconds), leaving out the first window (replay prefill and compilation); its parameter count and
FLOPs per train step are read from its log. Ours: the Agent's compiled train step (with replay context and latent
write-back, as the reference trains) on a batch of the same shape, random but valid, timed after a warm-up, half of
the steps before the reference runs and half after, so that a change of machine load shows in the spread.

Same shape: deter 512, hidden/units 64, 32 x 4 latents, 3 MLP layers, RMSNorm, LaProp + AGC, CNN depth 4 with
multipliers (2, 3, 4, 4) and kernel 5, batch 16 x 64. Prints one JSON object with the hardware, both configs, both
seconds per step (each window / step and the median), FLOPs, compile times, parameters and the ratio ours / theirs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import jax
import numpy as np

from sensei_jax.dreamer.agent import Agent, count_params
from sensei_jax.dreamer.config import DreamerConfig
from sensei_jax.hardware import describe as describe_hardware

REFERENCE_COMMIT = "e3f02248693a79dc8b0ebd62c93683888ddaccfe"
# The reference's requirements for the CPU (its own pins jax[cuda12]==0.4.33; the CUDA extras are not needed here).
REFERENCE_PIP = ["jax==0.4.33", "jaxlib==0.4.33", "numpy<2", "chex", "einops", "elements>=3.19.1", "granular>=0.20.3",
                 "jaxtyping", "ninjax>=3.5.1", "optax", "portal>=3.5.0", "scope>=0.4.4", "tqdm", "colored_traceback",
                 "av", "ipdb", "google-resumable-media>=2.7.2", "psutil", "ruamel.yaml"]

# Image-only Dummy env for the scratch copy of the reference: the same observations our side trains on.
DUMMY_ENV = '''"""Image-only Dummy env, written by sensei_jax benchmarks/dreamer_vs_reference.py into a scratch copy."""
import elements
import embodied
import numpy as np

ACTION_SIZE = {action_size}


class Dummy(embodied.Env):

  def __init__(self, task, size=(64, 64), length=100):
    del task
    self.size, self.length, self.count, self.done = size, length, 0, False

  @property
  def obs_space(self):
    return {{
        'image': elements.Space(np.uint8, self.size + (3,)),
        'reward': elements.Space(np.float32),
        'is_first': elements.Space(bool),
        'is_last': elements.Space(bool),
        'is_terminal': elements.Space(bool),
    }}

  @property
  def act_space(self):
    return {{'reset': elements.Space(bool), 'act_cont': elements.Space(np.float32, (ACTION_SIZE,))}}

  def step(self, action):
    if action.pop('reset') or self.done:
      self.count, self.done = 0, False
      return self._obs(0, is_first=True)
    self.count += 1
    self.done = self.count >= self.length
    return self._obs(1, is_last=self.done, is_terminal=self.done)

  def _obs(self, reward, is_first=False, is_last=False, is_terminal=False):
    return dict(image=np.full(self.size + (3,), 255, np.uint8), reward=np.float32(reward), is_first=is_first,
                is_last=is_last, is_terminal=is_terminal)
'''

SIZE1M = dict(deter=512, units=64, stoch=32, classes=4, layers=3, cnn_depth=4, cnn_mults=(2, 3, 4, 4), cnn_kernel=5)


# ---------------------------------------------------------------------------------------------------------------
# ours
def our_config(precision: str, smoke: bool) -> DreamerConfig:
    if smoke:
        return DreamerConfig.tiny(cnn_mults=(1, 2), cnn_kernel=5, optimizer="laprop", compute_dtype=precision)
    return DreamerConfig(preset="tiny", **SIZE1M, norm="rms", optimizer="laprop", compute_dtype=precision)


def random_batch(agent: Agent, batch: int, length: int, image: int, seed: int = 0) -> dict:
    """A valid train batch [B, T, ...] with replay context, as the loop's replay hands it to the agent."""
    rng = np.random.default_rng(seed)
    size = agent.size
    out = {"image": rng.integers(0, 256, (batch, length, image, image, 3), dtype=np.uint8),
           "action": rng.uniform(-1, 1, (batch, length, agent.action_size)).astype(np.float32),
           "reward": rng.normal(size=(batch, length)).astype(np.float32),
           "is_first": rng.random((batch, length)) < 0.01, "is_terminal": rng.random((batch, length)) < 0.01,
           "context": {"deter": rng.normal(size=(batch, size.deter)).astype(np.float32),
                       "stoch": rng.integers(0, size.classes, (batch, size.stoch)).astype(np.int32),
                       "action": rng.uniform(-1, 1, (batch, agent.action_size)).astype(np.float32)}}
    return out


class Ours:
    """Our Agent's train step, compiled once; `time(n)` times n steps after it."""

    def __init__(self, cfg: DreamerConfig, batch: int, length: int, image: int, action_size: int):
        self.agent = Agent(cfg, {"image": ((image, image, 3), np.uint8)}, action_size)
        self.state = self.agent.init(jax.random.key(0))
        self.batch = jax.device_put(random_batch(self.agent, batch, length, image))
        train = jax.jit(self.agent.train, static_argnames="return_latents", donate_argnums=0)
        start = time.perf_counter()
        self.step = train.lower(self.state, self.batch, jax.random.key(1), return_latents=True).compile()
        self.compile_s = time.perf_counter() - start
        self.flops = float((self.step.cost_analysis() or {}).get("flops", float("nan")))
        self.params = count_params(self.state["params"])
        self.times: list[float] = []
        self.state, metrics, _ = self.step(self.state, self.batch, jax.random.key(2))  # warm-up
        jax.block_until_ready(metrics)
        self.loss = float(metrics["loss/model"])

    def time(self, steps: int) -> None:
        for i in range(steps):
            start = time.perf_counter()
            self.state, metrics, latents = self.step(self.state, self.batch, jax.random.key(3 + len(self.times)))
            jax.block_until_ready((metrics, latents))
            self.times.append(time.perf_counter() - start)
        if not np.isfinite(float(metrics["loss/model"])):
            raise RuntimeError("our train step produced a non-finite world-model loss")


# ---------------------------------------------------------------------------------------------------------------
# the reference
def reference_python(args) -> str:
    if args.reference_python:
        if not Path(args.reference_python).exists():
            raise SystemExit(f"--reference-python {args.reference_python} does not exist")
        return args.reference_python
    venv = Path(args.reference_venv)
    python = venv / "bin" / "python"
    if python.exists():
        return str(python)
    if not args.build_venv:
        raise SystemExit(f"no reference venv at --reference-venv {venv}: pass --build-venv to build it there (pip, "
                         f"jax 0.4.33 on the CPU), or --reference-python PY")
    print(f"building the reference's venv in {venv} ...", file=sys.stderr)
    # The reference needs Python 3.11 (its jax 0.4.33 has no wheels for newer ones).
    subprocess.run([shutil.which("python3.11") or sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", *REFERENCE_PIP], check=True)
    return str(python)


def prepare_reference(source: Path, workdir: Path, action_size: int) -> Path:
    if not (source / "dreamerv3" / "main.py").exists() or not (source / "embodied" / "envs" / "dummy.py").exists():
        raise SystemExit(f"--reference {source} is not a danijar/dreamerv3 checkout (no dreamerv3/main.py or "
                         f"embodied/envs/dummy.py)")
    copy = workdir / "dreamerv3"
    if copy.exists():
        shutil.rmtree(copy)
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns(".git"))
    (copy / "embodied" / "envs" / "dummy.py").write_text(DUMMY_ENV.format(action_size=action_size))
    return copy


def run_reference(python: str, copy: Path, logdir: Path, args) -> dict:
    """Runs the reference for --reference-seconds and reads its windows; returns its figures."""
    cmd = [python, "dreamerv3/main.py", "--logdir", str(logdir), "--task", "dummy_cont",
           "--jax.platform", args.reference_platform,
           "--jax.prealloc", "False", "--batch_size", str(args.batch_size), "--batch_length", str(args.batch_length),
           "--run.train_ratio", "32", "--run.log_every", str(args.reference_window), "--logger.outputs", "jsonl",
           "--configs", "size1m", "--jax.compute_dtype", args.precision]
    lines: list[tuple[float, str]] = []
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=copy, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONPATH": str(copy)})

    def read():
        for line in proc.stdout:
            lines.append((time.perf_counter() - start, line.rstrip()))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    metrics_file = logdir / "metrics.jsonl"
    windows: list[float] = []
    while time.perf_counter() - start < args.reference_seconds and proc.poll() is None:
        time.sleep(2)
        windows = _windows(metrics_file, args.batch_size * args.batch_length)
        if len(windows) >= args.reference_windows + 1:
            break
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    reader.join(5)
    windows = _windows(metrics_file, args.batch_size * args.batch_length)
    text = "\n".join(line for _, line in lines)
    if len(windows) < 2:
        tail = "\n".join(line for _, line in lines[-30:])
        raise SystemExit(f"the reference logged {len(windows)} fps/train windows in {args.reference_seconds} s "
                         f"(need 2; raise --reference-seconds). Its last output:\n{tail}")
    params = re.search(r"Optimizer opt has ([\d,]+) params", text)
    flops = re.search(r"FLOPS:\s*([\d.e+-]+)", text)
    t0 = next((t for t, line in lines if "Compiling train" in line), None)
    t1 = next((t for t, line in lines if "Done compiling" in line), None)
    steady = windows[1:]
    return {"seconds_per_step": statistics.median(steady), "seconds_per_step_windows": steady,
            "first_window_s_per_step": windows[0], "window_s": args.reference_window,
            "params": int(params.group(1).replace(",", "")) if params else None,
            "flops_per_step": float(flops.group(1)) if flops else None,
            "flops_source": "its own log ('Train cost analysis: FLOPS', XLA cost analysis, 2 significant digits)",
            "compile_s": (t1 - t0) if t0 is not None and t1 is not None else None,
            "compile_note": "'Compiling train and report...' to 'Done compiling!' in its log (train + report)",
            "command": " ".join(cmd[1:])}


def _windows(path: Path, replayed_per_step: int) -> list[float]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line being written
        if row.get("fps/train"):
            out.append(replayed_per_step / float(row["fps/train"]))
    return out


# ---------------------------------------------------------------------------------------------------------------
def summary(times: list[float]) -> dict:
    return {"seconds_per_step": statistics.median(times), "min": min(times), "max": max(times),
            "steps": [round(t, 4) for t in times]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", type=Path, help="checkout of danijar/dreamerv3 (commit e3f0224...)")
    parser.add_argument("--reference-python", help="python of an environment with the reference's requirements")
    parser.add_argument("--reference-venv", default=str(Path(tempfile.gettempdir()) / "dreamerv3_reference_venv"),
                        help="venv to reuse (or build with --build-venv) when --reference-python is not given")
    parser.add_argument("--build-venv", action="store_true", help="build --reference-venv if it does not exist")
    parser.add_argument("--workdir", type=Path, help="scratch folder for the reference's copy and logs (default: temp)")
    parser.add_argument("--reference-seconds", type=float, default=600.0, help="at most this long for the reference")
    parser.add_argument("--reference-windows", type=int, default=6, help="log windows to average after the first")
    parser.add_argument("--reference-window", type=int, default=30, help="seconds per log window of the reference")
    parser.add_argument("--reference-platform", default="cpu", help="the reference's --jax.platform (cpu, cuda)")
    parser.add_argument("--steps", type=int, default=8, help="our timed train steps (half before, half after)")
    parser.add_argument("--precision", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--batch-length", type=int, default=64)
    parser.add_argument("--action-size", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="ours only, tiny model and batch (seconds)")
    args = parser.parse_args(argv)

    if args.smoke:
        cfg = our_config(args.precision, smoke=True)
        ours = Ours(cfg, 2, 8, 16, args.action_size)
        ours.time(max(1, min(args.steps, 2)))
        print(json.dumps({"benchmark": "dreamer_vs_reference", "smoke": True, "hardware": describe_hardware(),
                          "ours": {"config": _cfg_dict(cfg), "batch": [2, 8], "image": [16, 16, 3],
                                   "params": ours.params, "flops_per_step": ours.flops,
                                   "compile_s": ours.compile_s, **summary(ours.times)}}, indent=2))
        return
    if args.reference is None:
        parser.error("--reference PATH is required (or --smoke)")

    load_at_start = describe_hardware().get("load_average_1min")  # the machine may be shared: load before and after
    python = reference_python(args)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="dreamer_vs_reference_"))
    workdir.mkdir(parents=True, exist_ok=True)
    copy = prepare_reference(args.reference.resolve(), workdir, args.action_size)
    cfg = our_config(args.precision, smoke=False)
    ours = Ours(cfg, args.batch_size, args.batch_length, 64, args.action_size)
    ours.time(args.steps - args.steps // 2)
    logdir = workdir / f"run_{time.strftime('%Y%m%dT%H%M%S')}"
    theirs = run_reference(python, copy, logdir, args)
    ours.time(args.steps // 2)
    mine = summary(ours.times)
    result = {
        "benchmark": "dreamer_vs_reference", "smoke": False, "hardware": describe_hardware(),
        "load_average_1min_at_start": load_at_start, "precision": args.precision,
        "batch": [args.batch_size, args.batch_length], "observations": "image 64x64x3 uint8 only",
        "action": f"continuous, {args.action_size}-D",
        "ours": {"config": _cfg_dict(cfg), "params": ours.params, "flops_per_step": ours.flops,
                 "flops_source": "XLA cost analysis of the compiled train step", "compile_s": ours.compile_s,
                 "timing": "steps after a warm-up step; the first half before the reference ran, the rest after",
                 **mine},
        "reference": {"commit": REFERENCE_COMMIT, "path": str(args.reference),
                      "config": "size1m: rssm deter 512 hidden 64 classes 4 (stoch 32), depth 4 mults (2,3,4,4) "
                                "kernel 5, units 64, 3 layers, rms, LaProp + AGC; image-only Dummy env",
                      **theirs},
        "ratio": mine["seconds_per_step"] / theirs["seconds_per_step"],
        "ratio_note": "ours / reference, medians of seconds per train step in this one run",
    }
    print(json.dumps(result, indent=2))


def _cfg_dict(cfg: DreamerConfig) -> dict:
    size = cfg.size()
    return {"deter": size.deter, "units": size.units, "stoch": size.stoch, "classes": size.classes,
            "layers": size.layers, "cnn_depth": size.cnn_depth, "cnn_mults": list(cfg.cnn_mults),
            "cnn_kernel": cfg.cnn_kernel, "norm": cfg.norm, "optimizer": cfg.optimizer,
            "compute_dtype": cfg.compute_dtype}


if __name__ == "__main__":
    main()
