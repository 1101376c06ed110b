"""Sequence replay as a ring buffer of per-step arrays, added to and sampled from inside jit.

Every env step is stored once: `data[key]` has shape `[E, C, ...]` for E env streams of C steps each (the total
capacity is E * C steps). A training sequence is a window of `length` consecutive steps of one stream, gathered by
index, so images are never held twice (no stored overlapping sequences and no separate next-observation). Windows
may cross episode boundaries; `is_first` marks where a new episode starts, as in DreamerV3.

Storage lives in device memory as ordinary jax arrays inside a `ReplayState` pytree: `add` writes one step for all
streams with a dynamic-update-slice (in place when the state is donated) and `sample` gathers a batch, both pure and
jittable, so the collection loop, the replay and the train step all run compiled. The state is checkpointed with
the rest of the training state. With a mesh, streams are sharded over the data axis and each device samples only
from its own streams (`sample_sharded`), so the buffer is never gathered across devices.

Sampling is stratified over streams: with k = gcd(batch, streams), batch element b draws from the b-th of k equal
groups of consecutive streams, and its stream and window come from its own key, `fold_in(key, b)`. So a batch is
the same whichever way streams and batch rows are split over devices (any D dividing both puts each group on the
device that holds its batch rows), and every stream is sampled equally often on average. Within its stream a
window is uniform over the windows that lie fully inside the written part, optionally mixed with a recency
selector (probability proportional to 1 / age, as the reference's `Recency`), a fraction `recency` of the batch.
"""

from __future__ import annotations

import dataclasses
import math

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


@flax.struct.dataclass
class ReplayState:
    data: dict[str, jax.Array]  # each [E, C, ...]
    position: jax.Array  # int32 []: the slot the next step is written to, in [0, C)
    filled: jax.Array  # int32 []: steps written per stream, at most C


@dataclasses.dataclass(frozen=True)
class Replay:
    """Configuration and pure functions of a replay buffer.

    Args:
      specs: per-step shapes and dtypes of what is stored, name -> ShapeDtypeStruct (without the stream axis).
      num_streams: E, the number of parallel env streams (one per env).
      capacity: total steps; each stream keeps capacity // E of them (FIFO).
      length: steps per sampled sequence (the train length plus the context steps).
      batch_size: sequences per sample.
      recency: fraction of each batch sampled with probability proportional to 1 / age instead of uniformly.
    """

    specs: dict[str, jax.ShapeDtypeStruct]
    num_streams: int
    capacity: int
    length: int
    batch_size: int
    recency: float = 0.0

    def __post_init__(self):
        if self.num_streams < 1:
            raise ValueError(f"replay needs at least one stream, got {self.num_streams}")
        if self.steps_per_stream < self.length:
            raise ValueError(f"replay capacity {self.capacity} over {self.num_streams} streams holds "
                             f"{self.steps_per_stream} steps per stream, fewer than the sequence length {self.length}")
        if not 0.0 <= self.recency <= 1.0:
            raise ValueError(f"replay recency fraction must be in [0, 1], got {self.recency}")

    @property
    def steps_per_stream(self) -> int:
        return self.capacity // self.num_streams

    def nbytes(self) -> int:
        """Bytes of storage the buffer allocates."""
        per_step = sum(math.prod(s.shape) * np.dtype(s.dtype).itemsize for s in self.specs.values())
        return per_step * self.num_streams * self.steps_per_stream

    def init(self, sharding: NamedSharding | None = None) -> ReplayState:
        """Zero storage. With `sharding` (a NamedSharding whose spec shards axis 0), streams are split over devices;
        the arrays are created directly in their shards, never materialized on one device."""

        def zeros():
            return {k: jnp.zeros((self.num_streams, self.steps_per_stream, *s.shape), s.dtype)
                    for k, s in self.specs.items()}

        def empty():
            return ReplayState(data=zeros(), position=jnp.zeros((), jnp.int32), filled=jnp.zeros((), jnp.int32))

        if sharding is None:
            return empty()
        # The counters too are laid out on the mesh (replicated): a compiled step returns them that way, and an
        # input that differed only in its sharding would make the step's first two calls compile twice.
        scalar = NamedSharding(sharding.mesh, P())
        shardings = ReplayState(data={k: sharding for k in self.specs}, position=scalar, filled=scalar)
        return jax.jit(empty, out_shardings=shardings)()

    def add(self, state: ReplayState, step: dict[str, jax.Array]) -> ReplayState:
        """Writes one step for every stream of `state`. step[k]: [E, ...] with the stored dtype (cast if needed).
        Inside `shard_map` the state and the step are one device's block of streams."""
        missing = set(self.specs) - set(step)
        if missing:
            raise KeyError(f"replay step lacks keys {sorted(missing)} (stores {sorted(self.specs)})")
        data = {}
        for k, spec in self.specs.items():
            value = jnp.asarray(step[k]).astype(spec.dtype)
            # The streams of this state: all of them, or one device's block inside `shard_map`.
            expected = (state.data[k].shape[0], *spec.shape)
            if value.shape != expected:
                raise ValueError(f"replay key '{k}' has shape {value.shape}, expected {expected}")
            data[k] = jax.lax.dynamic_update_index_in_dim(state.data[k], value, state.position, axis=1)
        return ReplayState(data=data, position=(state.position + 1) % self.steps_per_stream,
                           filled=jnp.minimum(state.filled + 1, self.steps_per_stream))

    def can_sample(self, state: ReplayState) -> jax.Array:
        return state.filled >= self.length

    def sample(self, state: ReplayState, key: jax.Array, batch_size: int | None = None
               ) -> tuple[dict[str, jax.Array], tuple[jax.Array, jax.Array]]:
        """A batch of windows: dict of [B, L, ...], and the (stream [B], slot [B, L]) indices they came from.

        Only call once `can_sample` holds; before that the windows would repeat the zero-initialized start.
        """
        batch_size = self.batch_size if batch_size is None else batch_size
        stream, slots = self.window_indices(state, key, jnp.arange(batch_size), batch_size)
        batch = {k: v[stream[:, None], slots] for k, v in state.data.items()}
        return batch, (stream, slots)

    def sample_sharded(self, state: ReplayState, key: jax.Array, mesh: Mesh, axis: str = "data"
                       ) -> tuple[dict[str, jax.Array], tuple[jax.Array, jax.Array]]:
        """The batch of `sample`, drawn by each of the D devices along `axis` for its own batch rows from its own
        streams (no window crosses devices). Returns the batch sharded along its batch axis; the stream indices
        are local to each device's block of streams.
        """
        devices = mesh.shape[axis]
        if self.batch_size % devices or self.num_streams % devices:
            raise ValueError(f"replay batch {self.batch_size} and streams {self.num_streams} must both divide by "
                             f"the {devices} devices of mesh axis '{axis}'")
        local_batch, local_streams = self.batch_size // devices, self.num_streams // devices

        def local(data, position, filled, key):
            device = jax.lax.axis_index(axis)
            rows = device * local_batch + jnp.arange(local_batch)
            local_state = ReplayState(data=data, position=position, filled=filled)
            stream, slots = self.window_indices(local_state, key, rows, self.batch_size)
            stream = stream - device * local_streams
            return {k: v[stream[:, None], slots] for k, v in data.items()}, stream, slots

        data_spec = {k: P(axis) for k in state.data}
        fn = jax.shard_map(local, mesh=mesh, in_specs=(data_spec, P(), P(), P()),
                           out_specs=(data_spec, P(axis), P(axis)), check_vma=False)
        batch, stream, slots = fn(state.data, state.position, state.filled, key)
        return batch, (stream, slots)

    def gather_sharded(self, state: ReplayState, stream: jax.Array, slots: jax.Array, mesh: Mesh,
                       axis: str = "data") -> dict[str, jax.Array]:
        """Windows at global indices (stream [V], slot [V, L]) from a replay sharded over `axis`, replicated on
        every device: each device reads the windows of its own streams and a sum over devices assembles them, so
        only the V windows cross devices (for a few report sequences, not for training batches)."""
        local_streams = self.num_streams // mesh.shape[axis]

        def local(data, stream, slots):
            device = jax.lax.axis_index(axis)
            mine = stream // local_streams == device
            row = jnp.where(mine, stream - device * local_streams, 0)
            out = {}
            for k, v in data.items():
                window = v[row[:, None], slots]
                summable = jnp.float32 if jnp.issubdtype(v.dtype, jnp.floating) else jnp.int32
                window = jnp.where(mine.reshape(mine.shape + (1,) * (window.ndim - 1)), window.astype(summable), 0)
                out[k] = jax.lax.psum(window, axis).astype(v.dtype)
            return out

        data_spec = {k: P(axis) for k in state.data}
        fn = jax.shard_map(local, mesh=mesh, in_specs=(data_spec, P(), P()), out_specs={k: P() for k in state.data},
                           check_vma=False)
        return fn(state.data, stream, slots)

    def update(self, state: ReplayState, indices: tuple[jax.Array, jax.Array],
               values: dict[str, jax.Array]) -> ReplayState:
        """Writes values[k] ([B, L, ...]) back at the sampled indices, e.g. the fresh latents of a train step."""
        stream, slots = indices
        data = dict(state.data)
        for k, v in values.items():
            data[k] = data[k].at[stream[:, None], slots].set(v.astype(data[k].dtype))
        return state.replace(data=data)

    # ------------------------------------------------------------------------------------------------------------

    def window_indices(self, state: ReplayState, key: jax.Array, rows: jax.Array, batch_size: int
                       ) -> tuple[jax.Array, jax.Array]:
        """Global (stream [R], slot [R, L]) of the batch rows `rows` [R] of a batch of `batch_size` (see the
        module docstring: row b draws from its group of streams with the key fold_in(key, b))."""
        groups = math.gcd(batch_size, self.num_streams)
        group_streams, rows_per_group = self.num_streams // groups, batch_size // groups

        def one(row):
            stream_key, uniform_key, recent_key, mix_key = jax.random.split(jax.random.fold_in(key, row), 4)
            stream = (row // rows_per_group) * group_streams + jax.random.randint(stream_key, (), 0, group_streams)
            # Windows are numbered by how many steps after the oldest stored step they start: 0 .. filled - length.
            num_windows = jnp.maximum(state.filled - self.length + 1, 1)
            start = jax.random.randint(uniform_key, (), 0, num_windows)
            if self.recency > 0.0:
                # age a in [1, n] with p(a) ~ 1/a: the inverse CDF of the log-uniform distribution, floored.
                u = jax.random.uniform(recent_key, ())
                age = jnp.floor(jnp.exp(u * jnp.log(num_windows.astype(jnp.float32) + 1.0))).astype(jnp.int32)
                recent = num_windows - jnp.clip(age, 1, num_windows)
                start = jnp.where(jax.random.uniform(mix_key, ()) < self.recency, recent, start)
            oldest = (state.position - state.filled) % self.steps_per_stream
            slots = (oldest + start + jnp.arange(self.length)) % self.steps_per_stream
            return stream.astype(jnp.int32), slots.astype(jnp.int32)

        return jax.vmap(one)(rows)
