"""The `doctor` command: what this machine gives a run, and whether that is a GPU run.

    python -m sensei_jax.run doctor           # human-readable
    python -m sensei_jax.run doctor --json    # one JSON object: the facts (hardware.machine_facts) and the verdict

Prints JAX's backend and devices (kind, count, process index and count), Warp's devices and CUDA (the toolkit it
is built with, the driver it found and the one it needs), the MJX implementation the env uses and where it runs,
the versions of the packages that must fit together, host and per-device memory, and the XLA memory settings
(Warp allocates beside XLA's pool, so a preallocating XLA leaves Warp little of the GPU), and the configured VLM
checkpoint (`vlm.path`): its model family (`vlm.family` or its config.json's model_type, through the family
registry `sensei_jax.vlm.family`) and whether its folder holds every file loading needs. It ends with one verdict
line. The facts come from `sensei_jax.hardware`; the reasons a GPU is missing from `pipeline/device.py`, the same
ones the `run.device` check gives.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from sensei_jax import hardware
from sensei_jax.config import Config
from sensei_jax.pipeline import device

# XLA_PYTHON_CLIENT_MEM_FRACTION when unset: the share of each GPU XLA preallocates at start.
XLA_DEFAULT_MEM_FRACTION = 0.75


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def verdict(facts: dict[str, Any]) -> dict[str, Any]:
    """`{"gpu_ready": bool, "line": str, "problems": [str]}` from `hardware.machine_facts()`."""
    jax_problem = device.jax_gpu_problem(facts["jax"], facts["versions"], facts["memory_settings"]["JAX_PLATFORMS"])
    warp_problem = device.warp_cuda_problem(facts["warp"])
    problems = [p for p in (jax_problem, warp_problem) if p]
    backend = facts["jax"]["backend"]
    if not problems:
        line = (f"GPU ready: JAX on {facts['jax']['device_count']} x {facts['jax']['device_kind']}, "
                f"MJX-Warp on CUDA {facts['warp']['cuda_toolkit']}")
    elif backend == "tpu":
        line = ("TPU: annotate, distill and `train` on the toy env run here; the MJX-Warp env does not (it needs a "
                "CUDA GPU or the CPU)")
    elif backend == "gpu":
        line = (f"GPU stack broken: {warp_problem}; the env stages stop (reinstall with "
                f"`{device.GPU_INSTALL}`)")
    elif jax_problem and warp_problem:
        line = f"CPU only: JAX has no GPU and Warp no CUDA device (install with `{device.GPU_INSTALL}` on a GPU machine)"
    elif jax_problem:
        line = f"CPU only: JAX has no GPU (install with `{device.GPU_INSTALL}`)"
    else:
        line = f"CPU only: {warp_problem}"
    return {"gpu_ready": not problems, "line": line, "problems": problems}


def vlm_facts(cfg: Config) -> dict[str, Any]:
    """The configured VLM checkpoint: `{"path", "family", "model", "problem"}`, read through the family registry
    from config.json and file headers only (nothing is loaded); `problem` is None when the folder is complete."""
    from sensei_jax.vlm import checkpoint, family

    path = cfg.vlm.path
    facts: dict[str, Any] = {"path": path, "family": cfg.vlm.family, "model": None, "problem": None,
                             "families": list(family.names())}
    if not path:
        return facts
    try:
        kind = family.resolve(path, cfg.vlm.family)
        facts.update(family=kind.name, model=kind.title)
        checkpoint.check_folder(path, cfg.vlm.family)
    except (OSError, ValueError) as error:
        facts["problem"] = str(error)
    return facts


def _vlm_line(vlm: dict[str, Any]) -> str:
    if not vlm["path"]:
        return f"vlm       no checkpoint set (vlm.path); families: {', '.join(vlm['families'])}"
    if vlm["problem"]:
        return f"vlm       {vlm['path']}: {vlm['problem']}"
    return f"vlm       {vlm['path']}: {vlm['model']} (family {vlm['family']}), every file loading needs is there"


def _bytes(n: int | None) -> str:
    return "?" if n is None else f"{n / 2**30:.1f} GiB"


def render(facts: dict[str, Any], result: dict[str, Any]) -> str:
    """The human-readable report of `facts` with `result` (`verdict(facts)`) last."""
    jax_part, warp_part, mjx = facts["jax"], facts["warp"], facts["mjx"]
    lines = [f"machine   {facts['platform']}, Python {facts['python']}, {facts['cpu']} "
             f"({facts['cpu_cores_visible']} cores visible)",
             f"host mem  {_bytes(facts['host_memory']['total'])} total, "
             f"{_bytes(facts['host_memory']['available'])} available",
             f"jax       backend {jax_part['backend']} ({jax_part['platform_version']}), {jax_part['device_count']} x "
             f"{jax_part['device_kind']} ({jax_part['local_device_count']} local), process "
             f"{jax_part['process_index']} of {jax_part['process_count']}"]
    lines += [f"          jax said: {message}" for message in jax_part["messages"]]
    for name, stats in jax_part["memory"].items():
        lines.append(f"          {name}: " + ("no memory stats on this backend" if stats is None else
                                              f"{_bytes(stats.get('bytes_limit'))} limit, "
                                              f"{_bytes(stats.get('bytes_in_use'))} in use"))
    if warp_part["installed"]:
        lines.append(f"warp      {warp_part['version']}, built with CUDA {warp_part['cuda_toolkit']}, driver "
                     f"{warp_part['cuda_driver'] or 'not found'} (needs {warp_part['cuda_driver_needed']}), "
                     f"{warp_part['cuda_device_count']} CUDA device(s)")
        for dev in warp_part["devices"]:
            extra = f", {dev['arch']}, {_bytes(dev['total_memory'])}" if "arch" in dev else ""
            lines.append(f"          {dev['alias']}: {dev['name']}{extra}")
        lines += [f"          warp said: {message}" for message in warp_part["messages"]]
    else:
        lines.append(f"warp      not installed ({warp_part['error']})")
    lines.append(f"mjx       impl {mjx['impl']}, runs on {mjx['device'] or 'nothing here (see the verdict)'}")
    settings = facts["memory_settings"]
    lines.append("env       " + ", ".join(f"{k}={'(unset)' if v is None else v}" for k, v in settings.items()))
    if jax_part["backend"] == "gpu" and settings["XLA_PYTHON_CLIENT_PREALLOCATE"] != "false":
        fraction = settings["XLA_PYTHON_CLIENT_MEM_FRACTION"] or XLA_DEFAULT_MEM_FRACTION
        lines.append(f"          XLA preallocates {fraction} of each GPU; Warp allocates outside that pool: lower "
                     "XLA_PYTHON_CLIENT_MEM_FRACTION if Warp runs out of memory")
    lines.append("versions  " + ", ".join(f"{k} {v or '(missing)'}" for k, v in facts["versions"].items()))
    if "vlm" in facts:
        lines.append(_vlm_line(facts["vlm"]))
    lines.append(result["line"])
    return "\n".join(lines)


def main(args: argparse.Namespace, cfg: Config) -> int:
    facts = hardware.machine_facts() | {"vlm": vlm_facts(cfg)}
    result = verdict(facts)
    print(json.dumps(facts | {"verdict": result}) if args.json else render(facts, result))
    return 0
