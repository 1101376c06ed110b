"""The `run.device` check: every command (but `config` and `doctor`) stops at start, before anything compiles, when
the machine cannot give the run what it asks for.

- `gpu`: JAX must have a GPU backend and Warp a CUDA device; otherwise one error names both ways out (the CUDA
  install, or `--run.device cpu`). The paper configs ask for it, so a CPU-only install never runs them unnoticed.
- `cpu`: JAX is put on the CPU (before its backends start), so MJX runs Warp's CPU kernels even where a GPU is.
- `tpu`: JAX must run on a TPU. Annotation, distillation and the agent's train step run there.
- `auto`: JAX's default backend.

Whatever was asked, a command that steps or renders the MJX-Warp env (`Stage.uses_env`) stops on a backend Warp
cannot serve: a TPU, or a GPU while Warp sees no CUDA device (a mixed stack, or a driver too old for Warp's CUDA).

Querying JAX's devices starts its backends: the CLI calls `check` after `jax.distributed.initialize`.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable

from sensei_jax import domains, hardware
from sensei_jax.config import Config, ConfigError
from sensei_jax.pipeline import stages

GPU_INSTALL = "bash scripts/setup.sh gpu"
TPU_INSTALL = "bash scripts/setup.sh tpu"
# The NVIDIA driver branch for CUDA 13, which both warp-lang 1.18's wheel and jax's cuda13 plugin are built with.
NVIDIA_DRIVER = "R580"


def jax_gpu_problem(jax_facts: dict[str, Any], versions: dict[str, str | None],
                    platforms: str | None = None) -> str | None:
    """Why JAX has no GPU backend (None: it has one), from `hardware.jax_facts()`, `hardware.package_versions()`
    and the JAX_PLATFORMS setting `platforms`."""
    if jax_facts["backend"] == "gpu":
        return None
    where = f"it runs on {jax_facts['backend']}"
    if platforms and not {"cuda", "gpu"} & set(platforms.split(",")):
        return f"JAX has no GPU backend ({where}: JAX_PLATFORMS={platforms} leaves the GPU out)"
    plugins = [f"{name} {version}" for name, version in versions.items() if name.startswith("jax-cuda")]
    if not plugins:
        return f"JAX has no GPU backend ({where}; no CUDA plugin of jax is installed)"
    said = f"; JAX said: {jax_facts['messages'][-1]}" if jax_facts.get("messages") else ""
    return (f"JAX has no GPU backend ({where}) although its CUDA plugin is installed ({', '.join(plugins)}): no GPU "
            f"visible, or no NVIDIA driver {NVIDIA_DRIVER} or newer{said}")


def warp_cuda_problem(warp_facts: dict[str, Any]) -> str | None:
    """Why Warp has no CUDA device (None: it has one), from `hardware.warp_facts()`."""
    if warp_facts["cuda_device_count"]:
        return None
    if not warp_facts["installed"]:
        return f"Warp is not installed ({warp_facts['error']})"
    built = f"Warp {warp_facts['version']} is built with CUDA {warp_facts['cuda_toolkit']}"
    driver, needed = warp_facts["cuda_driver"], warp_facts["cuda_driver_needed"]
    if driver is None:
        return f"Warp has no CUDA device (no NVIDIA CUDA driver found; {built})"
    if needed is not None and tuple(map(int, driver.split("."))) < tuple(map(int, needed.split("."))):
        return (f"Warp has no CUDA device (the CUDA driver is {driver}; {built} and needs {needed}, "
                f"an NVIDIA driver {NVIDIA_DRIVER} or newer)")
    return f"Warp has no CUDA device (CUDA driver {driver} found, but no GPU visible: check CUDA_VISIBLE_DEVICES)"


def _force_cpu() -> None:
    import jax
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        if jax.default_backend() != "cpu":
            raise ConfigError(f"run.device is 'cpu' but JAX already runs on {jax.default_backend()} in this process; "
                              "set JAX_PLATFORMS=cpu before starting it")
        return
    jax.config.update("jax_platforms", "cpu")


def problem(requested: str, command: str, uses_env: bool, jax_facts: dict[str, Any],
            versions: dict[str, str | None], warp_facts: Callable[[], dict[str, Any]],
            platforms: str | None = None, warp_needed: bool = True) -> str | None:
    """What stops `command` (its name for messages, e.g. "command 'collect'") from running as run.device
    `requested` asks (not `cpu`, which `check` handles), or None. `uses_env`: it steps or renders the MJX-Warp env.
    `warp_facts` gives `hardware.warp_facts()`; it is called only where Warp matters (importing Warp takes a second).
    `warp_needed` False (a MiniHack run: NetHack steps on the host) asks nothing of Warp.
    """
    backend = jax_facts["backend"]
    if requested == "gpu":
        missing = [p for p in (jax_gpu_problem(jax_facts, versions, platforms),
                               warp_cuda_problem(warp_facts()) if warp_needed else None) if p]
        if missing:
            return (f"run.device is 'gpu' but {'; and '.join(missing)}. Install the CUDA build with `{GPU_INSTALL}` "
                    f"(NVIDIA driver {NVIDIA_DRIVER} or newer), or pass --run.device cpu to run on the CPU "
                    "deliberately")
    elif requested == "tpu" and backend != "tpu":
        return (f"run.device is 'tpu' but JAX has no TPU backend (it runs on {backend}). On a Cloud TPU VM install "
                f"jax's TPU build with `{TPU_INSTALL}`, or pass --run.device auto")
    if not uses_env:
        return None
    if backend == "tpu":
        return (f"{command} steps the MJX-Warp Robodesk env, which runs on a CUDA GPU or the CPU, not on a TPU "
                f"(run.device is {requested!r}, JAX runs on tpu). Run it on a GPU machine, or here with "
                "--run.device cpu; annotate and distill run on the TPU with an existing run folder")
    if backend == "gpu" and requested == "auto":
        warp_problem = warp_cuda_problem(warp_facts())
        if warp_problem:
            return (f"{command} steps the MJX-Warp env and JAX runs on the GPU, but {warp_problem} (run.device is "
                    f"'auto'). Reinstall with `{GPU_INSTALL}` so that JAX and Warp share one CUDA, or pass "
                    "--run.device cpu to run on the CPU deliberately")
    return None


def check(cfg: Config, command: str | None) -> None:
    """Raises ConfigError, naming `run.device`, what is missing and the ways out, when command `command` (None: the
    whole pipeline) cannot run as `cfg.run.device` asks on this machine. With `cpu`, puts JAX on the CPU. Commands
    with `checks_device=False` in the stage registry (`config`, `doctor`) pass untouched."""
    if command is not None and not stages.STAGES[command].checks_device:
        return
    if cfg.run.device == "cpu":
        _force_cpu()
        return
    warp = domains.of(cfg).uses_warp
    uses_env = stages.STAGES[command].uses_env(cfg) if command is not None else warp
    jax_facts = hardware.jax_facts()
    found = problem(cfg.run.device, f"command '{command}'" if command is not None else "the pipeline", uses_env,
                    jax_facts, hardware.package_versions(), hardware.warp_facts, os.environ.get("JAX_PLATFORMS"),
                    warp_needed=warp)
    if found:
        raise ConfigError(found)
    for message in jax_facts["messages"]:  # e.g. a CUDA plugin that failed to load: the run goes on without it
        print(f"warning: JAX runs on {jax_facts['backend']}; while starting it said: {message}", file=sys.stderr)
