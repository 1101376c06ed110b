"""A vision-language model over a device mesh: a `data` axis for image pairs and prompts, a `model` axis for the
parameters. Any registered family (`vlm/family.py`): the layout goes by parameter names, and the sizes it splits
come from the family's config (`model_parallel_sizes`).

Tensor parallelism follows the Megatron layout. Layers that open a block (q/k/v, gate/up, CLIP fc1, the projector's
linear_1, Qwen3-VL's vision and merger linear_fc1, the head) are split by output features, so each device holds
whole attention heads and a slice of the MLP; the layers that close it (o, down, CLIP out_proj and fc2, linear_2,
linear_fc2) are split by input features, and XLA adds one all-reduce per block. The token table is split by
vocabulary rows. Norms, the patch embedding, the class and position embeddings and Qwen3-VL's fused vision qkv
and its output projection are small and replicated. Batches are split by rows over `data`; with several hosts the mesh
spans all of them, each host feeds and reads only its own rows' devices, and the model axis stays inside a host.
"""

from __future__ import annotations

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

AXES = ("data", "model")
# Parameter names (the module holding a kernel and bias) split by output features / by input features.
COLUMN_PARALLEL = frozenset({"q_proj", "k_proj", "v_proj", "gate_proj", "up_proj", "fc1", "linear_1", "linear_fc1",
                             "lm_head"})
ROW_PARALLEL = frozenset({"o_proj", "down_proj", "out_proj", "fc2", "linear_2", "linear_fc2"})


def make_mesh(model_parallel: int, devices: list | None = None, key: str = "annotate.model_parallel") -> Mesh:
    """Mesh (data = devices / model_parallel, model = model_parallel) over `devices` (default: all, every host).

    Consecutive devices form one model group, so with several hosts a group must fit in one host's devices.
    `key` names the setting in errors."""
    devices = list(jax.devices() if devices is None else devices)
    if not isinstance(model_parallel, int) or model_parallel < 1 or len(devices) % model_parallel:
        raise ValueError(f"{key}={model_parallel!r} must be a positive divisor of the device count {len(devices)}")
    grid = np.array(devices, dtype=object).reshape(-1, model_parallel)
    if any(len({device.process_index for device in group}) > 1 for group in grid):
        raise ValueError(f"{key}={model_parallel} must divide the {jax.local_device_count()} devices of each host "
                         f"(a model group never spans hosts)")
    return Mesh(grid, AXES)


def check_model_parallel(cfg, model_parallel: int, key: str = "annotate.model_parallel") -> None:
    """Raises ValueError naming `key` unless `model_parallel` divides every size the model axis splits (a family
    config's `model_parallel_sizes()`)."""
    bad = [f"{name} {size}" for name, size in cfg.model_parallel_sizes().items() if size % model_parallel]
    if bad:
        raise ValueError(f"{key}={model_parallel} must divide the sizes the model axis splits; it does not divide "
                         + ", ".join(bad))


def parameter_spec(path: tuple, ndim: int) -> P:
    """PartitionSpec of one parameter from its nnx path (e.g. (..., 'self_attn', 'q_proj', 'kernel'))."""
    names = [str(p) for p in path]
    leaf, owner = names[-1], names[-2] if len(names) > 1 else ""
    if owner in COLUMN_PARALLEL:
        return P(None, "model") if leaf == "kernel" else P("model")
    if owner in ROW_PARALLEL:
        return P("model", None) if leaf == "kernel" else P()
    if owner == "embed_tokens" and leaf == "embedding":
        return P("model", None)  # [vocab, hidden]
    return P(*([None] * ndim))


def parameter_shardings(model_or_state, mesh: Mesh) -> dict[tuple, NamedSharding]:
    """nnx path -> NamedSharding for every parameter of a (possibly abstract) model of any family."""
    state = model_or_state if isinstance(model_or_state, nnx.State) else nnx.state(model_or_state, nnx.Param)
    return {path: NamedSharding(mesh, parameter_spec(path, len(leaf.shape)))
            for path, leaf in nnx.to_flat_state(state)}


def bytes_per_device(model, model_parallel: int) -> int:
    """Parameter bytes one device holds of `model` (of any family, abstract from `nnx.eval_shape` or real)
    with the model axis of size `model_parallel`; shapes only, nothing allocated."""
    check_model_parallel(model.config, model_parallel, key="model_parallel")
    total = 0
    for path, leaf in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        size = int(np.prod(leaf.shape)) * np.dtype(leaf.dtype).itemsize
        total += size // model_parallel if "model" in parameter_spec(path, len(leaf.shape)) else size
    return total
