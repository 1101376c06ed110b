"""The block of worlds that one device steps when Robodesk is traced under `jax.shard_map`.

Under `shard_map` every device runs the same trace on its own block of worlds, and MJX-Warp sizes everything from
that block: the contact buffers of `make_data` (contacts_per_world x local worlds) and the render context (built
for a fixed world count). Three things follow, gathered here so that the env reads the same outside and inside a
`shard_map`:

- Values the env creates from constants (blank MJX data, zero rewards, scan carries) are invariant over the
  manual mesh axes, while everything computed from the worlds varies per device; `shard_map`'s type check
  (check_vma) rejects loops whose carries change that type. `vary` marks such values as per-device up front.
- A Warp render context holds device buffers (the BVH refitted before every render, the ray tracer's scratch),
  registered per Warp device. Every JAX GPU is its own Warp device, so one context registered on all local GPUs
  serves all of them; the virtual CPU devices (`--xla_force_host_platform_device_count`) all map to the one Warp
  CPU device and would share, and clobber, one context. `render_slots` says how many contexts the trace needs
  (one per device block on CPU, one otherwise) and `block_index` which one this device uses.
- `warp_devices` names the Warp devices a context is registered on.
"""

from __future__ import annotations

import math

import jax


def manual_axes() -> tuple[str, ...]:
    """The mesh axes over which the current trace is split by `shard_map` (empty outside it)."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return ()
    return tuple(name for name in mesh.axis_names if name in mesh.manual_axes)


def block_count() -> int:
    """How many device blocks the worlds are split into (1 outside `shard_map`)."""
    mesh = jax.sharding.get_abstract_mesh()
    return math.prod(mesh.shape[name] for name in manual_axes())


def block_index() -> jax.Array:
    """This device's position among `block_count()` blocks, row-major over the manual axes: int32 []."""
    mesh = jax.sharding.get_abstract_mesh()
    index = jax.numpy.int32(0)
    for name in manual_axes():
        index = index * mesh.shape[name] + jax.lax.axis_index(name)
    return index


def vary(tree):
    """`tree` with every leaf marked as varying over the manual axes (a no-op outside `shard_map`)."""
    axes = frozenset(manual_axes())
    if not axes:
        return tree

    def cast(x):
        missing = tuple(sorted(axes - jax.typeof(x).manual_axis_type.varying))
        return jax.lax.pcast(x, missing, to="varying") if missing else x

    return jax.tree.map(cast, tree)


def _platform() -> str:
    mesh = jax.sharding.get_abstract_mesh()
    device = None if mesh.empty else mesh.abstract_device
    platform = getattr(device, "platform", None)
    return platform if platform is not None else jax.default_backend()


def render_slots() -> int:
    """How many render contexts the current trace needs: one per device block where the blocks share a Warp
    device (CPU), one where each device is its own Warp device (GPU)."""
    return block_count() if _platform() == "cpu" else 1


def warp_devices() -> list[str] | None:
    """The Warp devices a render context is registered on: every local GPU when there are several (Warp looks the
    context up by the ordinal of the GPU it runs on), else None (Warp's default device)."""
    gpus = [d for d in jax.local_devices() if d.platform == "gpu"]
    if len(gpus) < 2:
        return None
    return [f"cuda:{d.local_hardware_id}" for d in gpus]
