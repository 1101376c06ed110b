"""A pool of worker processes that step MiniHack worlds on the host: `WorkerPool`, `WorkerCrashed`.

NetHack is a C program with global state, stepped by `nle` one game per instance; it cannot run inside an XLA
program. The pool keeps the worlds in worker processes (one per core by default), each owning the worlds
`world % workers == index`, and steps them in a tight loop while the parent only packs arrays:

    pool = WorkerPool("keyroom", num_worlds=8)
    first = pool.reset(np.arange(8), seeds)        # {name: [8, ...]}
    out = pool.step(np.arange(8), actions)         # actions int [8] index tasks.TASKS[task].actions
    pool.close()

Why it is cheap per step:
  - one message per worker per call, holding all its worlds (a few int64s: command, count, worlds, values), and one
    empty reply; nothing is pickled;
  - results never cross a pipe: every worker writes its worlds' rows straight into one shared-memory block laid out
    as {field: [num_worlds, ...]}, and the parent gathers the requested rows from it (one copy per field);
  - the crop is drawn from a table of MiniHack's tiles (`tasks.TileRenderer`), and the agent's image is that
    drawing resized by an integer index gather into the shared row (`_resize_index`, no interpolation); a world's
    pixels are redrawn only when its glyph crop changed, which about half of all steps do not.
The parent returns fresh arrays from the gather rather than views of a reused buffer: JAX's `io_callback` copies
the result after the callback has returned, and an eager caller keeps it, so a later call must not overwrite it.

Auto-reset: a world whose episode ends (a terminal NetHack state, or `episode_length` steps) returns done=True and
that step's reward, is_terminal, interaction and success flags, but the image, reward_image, inventory, features
and episode_step (0) of the first observation of its next episode. That episode's NetHack seeds come from the
world's own generator (`numpy.random.default_rng(seed)` of its last `reset`), so a run is a function of the seeds.

Worlds are global indices in [0, num_worlds); a world comes to life in its worker on its first `reset`, so any
subset can be reset or stepped (each device of a sharded program steps its own block). A worker that dies or stops
answering raises `WorkerCrashed`; the pool is unusable after it (worlds live only in the workers).

Workers are started with the 'spawn' method: forking a process that runs JAX (threads, device handles) is unsafe.
They import numpy, nle and minihack only. NetHack's per-game scratch folders go under one temporary folder of the
pool, removed on `close` even when a worker was killed.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import multiprocessing
import os
import shutil
import signal
import tempfile
import threading
import time
import traceback
from multiprocessing import connection as mp_connection
from multiprocessing import shared_memory
from typing import Any

import numpy as np

from sensei_jax.envs.minihack import tasks
from sensei_jax.envs.minihack.config import TILE_PIXELS

__all__ = ["INSTALL_HINT", "MiniHackUnavailable", "WorkerCrashed", "WorkerPool", "output_fields"]

INSTALL_HINT = "install them with `pip install nle minihack` (or `bash scripts/setup.sh`)"

_RESET, _STEP, _CLOSE = 0, 1, 2
_OK, _ERROR = b"", b"E"
_ALIGN = 64  # bytes; every field of the shared block starts on a cache line
STARTUP_TIMEOUT_S = 120.0  # the least time a worker gets to start, whatever the pool's hang timeout


class WorkerCrashed(RuntimeError):
    """A worker process died or stopped answering; its worlds are lost."""


class MiniHackUnavailable(ImportError):
    """nle or minihack is not installed (or does not import); the message says how to install them."""


@dataclasses.dataclass(frozen=True)
class _Field:
    name: str
    shape: tuple[int, ...]  # of one world
    dtype: np.dtype
    offset: int  # bytes into the shared block


def output_fields(task: str, image_size: int, crop: int) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """{name: (shape of one world, dtype)} of what `reset` and `step` return for `task`."""
    spec = tasks.TASKS[task]
    native = crop * TILE_PIXELS
    return {
        "image": ((image_size, image_size, 3), np.dtype(np.uint8)),
        "reward_image": ((native, native, 3), np.dtype(np.uint8)),
        "inventory": ((1,), np.dtype(np.float32)),
        "reward": ((), np.dtype(np.float32)),
        "done": ((), np.dtype(bool)),
        "is_terminal": ((), np.dtype(bool)),
        "episode_step": ((), np.dtype(np.int32)),
        "interaction_flags": ((len(spec.interactions),), np.dtype(bool)),
        "success": ((len(spec.successes),), np.dtype(bool)),
        "features": ((len(spec.features),), np.dtype(np.float32)),
    }


def _layout(task: str, image_size: int, crop: int, num_worlds: int) -> tuple[list[_Field], int]:
    fields, offset = [], 0
    for name, (shape, dtype) in output_fields(task, image_size, crop).items():
        fields.append(_Field(name, shape, dtype, offset))
        size = num_worlds * int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        offset += -(-size // _ALIGN) * _ALIGN
    return fields, max(offset, _ALIGN)


def _views(buffer: memoryview, fields: list[_Field], num_worlds: int) -> dict[str, np.ndarray]:
    return {f.name: np.ndarray((num_worlds, *f.shape), f.dtype, buffer, f.offset) for f in fields}


def _resize_index(native: int, size: int) -> np.ndarray:
    """int64 [size * size]: for each pixel of a size x size image, the flat index of its nearest pixel in the
    native x native crop (source row floor((i + 0.5) * native / size)), the pixels PIL's NEAREST resize picks (the
    authors' ResizeImage wrapper). 80 -> 64 keeps 4 of every 5 rows and columns, so a 16 px tile becomes 12 or
    13 px; 80 -> 80 is the identity."""
    src = np.minimum(((np.arange(size) + 0.5) * native / size).astype(np.int64), native - 1)
    return (src[:, None] * native + src[None, :]).reshape(-1)


# ----------------------------------------------------------------------------------------------------------------
# The worker process


class _World:
    """One game of a worker: the NetHack env, its seed generator and its step counter."""

    def __init__(self, env: Any):
        self.env = env
        self.rng: np.random.Generator | None = None
        self.step = 0
        self.drawn: bytes | None = None  # the glyph crop whose pixels this world's shared rows hold

    def new_episode(self, spec: tasks.Task) -> dict[str, np.ndarray]:
        core, disp = (int(s) for s in self.rng.integers(1, 2**62, size=2))
        self.step = 0
        return tasks.start_episode(self.env, spec, core, disp)


class _Worker:
    def __init__(self, task: str, crop: int, image_size: int, episode_length: int, num_worlds: int,
                 shm_name: str):
        self.spec = tasks.TASKS[task]
        self.crop, self.episode_length = crop, episode_length
        self.renderer = tasks.TileRenderer()
        self.shm = shared_memory.SharedMemory(name=shm_name)
        fields, _ = _layout(task, image_size, crop, num_worlds)
        self.out = _views(self.shm.buf, fields, num_worlds)
        self.index = _resize_index(crop * TILE_PIXELS, image_size)
        self.worlds: dict[int, _World] = {}

    def close(self) -> None:
        for world in self.worlds.values():
            world.env.close()
        self.worlds.clear()
        self.out = {}  # drop the views before the block they look into
        self.shm.close()

    def _write_observation(self, w: int, world: _World, obs: dict[str, np.ndarray], frame_features: np.ndarray,
                           episode_step: int) -> None:
        out = self.out
        crop = obs["glyphs_crop"]
        drawn = crop.tobytes()
        # The pixels are a function of the glyph crop alone, and about half of all steps leave it as it was (a
        # bump into a wall, a step across an empty floor): then the world's rows already hold them.
        if drawn != world.drawn:
            native = self.renderer.render(crop, out["reward_image"][w])
            np.take(native.reshape(-1, 3), self.index, axis=0, out=out["image"][w].reshape(-1, 3))
            world.drawn = drawn
        out["inventory"][w, 0] = frame_features[tasks.HAS_KEY]
        out["features"][w] = frame_features
        out["episode_step"][w] = episode_step

    def reset(self, worlds: np.ndarray, seeds: np.ndarray) -> None:
        out, spec = self.out, self.spec
        for w, seed in zip(worlds.tolist(), seeds.tolist()):
            world = self.worlds.get(w)
            if world is None:
                world = self.worlds[w] = _World(tasks.make_env(spec, self.crop))
            world.rng = np.random.default_rng(seed)
            obs = world.new_episode(spec)
            frame = tasks.features(spec, obs)
            out["reward"][w] = 0.0
            out["done"][w] = False
            out["is_terminal"][w] = False
            out["interaction_flags"][w] = tasks.interaction_flags(spec, frame)
            out["success"][w] = False
            self._write_observation(w, world, obs, frame, 0)

    def step(self, worlds: np.ndarray, actions: np.ndarray) -> None:
        out, spec, limit = self.out, self.spec, self.episode_length
        for w, action in zip(worlds.tolist(), actions.tolist()):
            world = self.worlds.get(w)
            if world is None:
                raise ValueError(f"world {w} was stepped before its first reset")
            if not 0 <= action < len(spec.actions):
                raise ValueError(f"world {w}: action {action} is not in [0, {len(spec.actions)})")
            obs, reward, status = tasks.step_env(world.env, action)
            world.step += 1
            terminal = status >= 1  # NetHack's DEATH (1) or TASK_SUCCESSFUL (2); the time limit is ours
            ended = terminal or world.step >= limit
            frame = tasks.features(spec, obs)
            out["reward"][w] = min(max(reward, 0.0), 1.0)  # the authors' clip to [0, 1]
            out["done"][w] = ended
            out["is_terminal"][w] = terminal
            # Flags of the step's own outcome; the observation of the next episode's start when it ended.
            out["interaction_flags"][w] = tasks.interaction_flags(spec, frame)
            out["success"][w] = tasks.success_flags(spec, status)
            if ended:
                obs = world.new_episode(spec)
                frame = tasks.features(spec, obs)
            self._write_observation(w, world, obs, frame, world.step)


def _worker_main(conn: mp_connection.Connection, task: str, crop: int, image_size: int, episode_length: int,
                 num_worlds: int, shm_name: str, scratch: str) -> None:
    """Entry point of a worker: import nle and minihack, say so, then serve commands until told to close."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the parent, which closes the pool
    tempfile.tempdir = scratch  # NetHack's per-game folders go where the parent can remove them
    try:
        tasks.import_minihack()
        worker = _Worker(task, crop, image_size, episode_length, num_worlds, shm_name)
    except BaseException:  # noqa: BLE001 - reported to the parent, which raises it
        conn.send_bytes(_ERROR + traceback.format_exc().encode())
        return
    conn.send_bytes(_OK)
    try:
        while True:
            try:
                message = np.frombuffer(conn.recv_bytes(), np.int64)
            except EOFError:  # the parent is gone
                return
            command, count = int(message[0]), int(message[1])
            if command == _CLOSE:
                return
            worlds, values = message[2:2 + count], message[2 + count:2 + 2 * count]
            try:
                (worker.reset if command == _RESET else worker.step)(worlds, values)
            except Exception:  # noqa: BLE001 - a bad world or action: the parent raises it, the worker lives on
                conn.send_bytes(_ERROR + traceback.format_exc().encode())
            else:
                conn.send_bytes(_OK)
    finally:
        worker.close()


# ----------------------------------------------------------------------------------------------------------------
# The parent side


class WorkerPool:
    """Worker processes stepping `num_worlds` MiniHack worlds of `task` (see the module docstring).

    Args:
      task: a name of `tasks.TASKS`.
      num_worlds: worlds are the indices [0, num_worlds).
      image_size: side of the agent's image (`image`), the crop resized by nearest pixel.
      crop: tiles of the egocentric crop; `reward_image` is its native render, crop * 16 px.
      episode_length: steps per episode; 0 takes the task's own.
      workers: processes; 0 takes one per usable CPU core. Never more than num_worlds.
      timeout: seconds to wait for a worker's answer before it counts as hung.
    """

    def __init__(self, task: str, num_worlds: int, *, image_size: int = 64, crop: int = 5, episode_length: int = 0,
                 workers: int = 0, timeout: float = 120.0):
        if task not in tasks.TASKS:
            raise ValueError(f"minihack.task: unknown task {task!r}; known: {', '.join(tasks.TASKS)}")
        if num_worlds < 1:
            raise ValueError(f"WorkerPool: num_worlds must be >= 1, got {num_worlds}")
        missing = [name for name in ("nle", "minihack") if importlib.util.find_spec(name) is None]
        if missing:
            raise MiniHackUnavailable(f"MiniHack needs the packages {' and '.join(missing)}, which are not installed; "
                              f"{INSTALL_HINT}")
        self.task, self.num_worlds, self.timeout = task, int(num_worlds), float(timeout)
        self.episode_length = int(episode_length) or tasks.TASKS[task].episode_length
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        self.num_workers = max(1, min(int(workers) or cores, self.num_worlds))
        fields, size = _layout(task, image_size, crop, self.num_worlds)
        self._lock = threading.Lock()  # io_callbacks of several devices may call in from several threads
        self._broken: WorkerCrashed | None = None
        self._closed = False
        self._procs: list[multiprocessing.process.BaseProcess] = []
        self._conns: list[mp_connection.Connection] = []
        self._scratch = tempfile.mkdtemp(prefix="sensei-minihack-")
        self._shm = shared_memory.SharedMemory(create=True, size=size)
        self._out = _views(self._shm.buf, fields, self.num_worlds)
        self._seen = np.zeros(self.num_worlds, bool)  # worlds reset at least once (for the crash message)
        context = multiprocessing.get_context("spawn")
        try:
            for index in range(self.num_workers):
                parent, child = context.Pipe()
                proc = context.Process(target=_worker_main, name=f"minihack-worker-{index}", daemon=True,
                                       args=(child, task, crop, image_size, self.episode_length, self.num_worlds,
                                             self._shm.name, self._scratch))
                proc.start()
                child.close()
                self._procs.append(proc)
                self._conns.append(parent)
            self._wait(range(self.num_workers), "start", startup=True)
        except BaseException:
            self.close()
            raise

    @property
    def pids(self) -> list[int]:
        return [proc.pid for proc in self._procs]

    @property
    def crashed(self) -> WorkerCrashed | None:
        """The error of the worker that crashed, or None while all are well."""
        return self._broken

    def worker_of(self, worlds: np.ndarray) -> np.ndarray:
        """int [n]: the worker that owns each world."""
        return np.asarray(worlds) % self.num_workers

    def reset(self, worlds: np.ndarray, seeds: np.ndarray) -> dict[str, np.ndarray]:
        """Start a new episode in each of `worlds` int [n], world i's game seeded from seeds[i] (int, >= 0) alone.
        Returns {name: [n, ...]} (see `output_fields`); reward 0, done False."""
        worlds = self._check_worlds(worlds)
        seeds = np.asarray(seeds, np.int64).reshape(-1)
        if seeds.shape != worlds.shape:
            raise ValueError(f"WorkerPool.reset: {worlds.size} worlds but {seeds.size} seeds")
        if np.any(seeds < 0):
            raise ValueError(f"WorkerPool.reset: seeds must be >= 0, got {seeds[seeds < 0][:4].tolist()}")
        return self._call(_RESET, worlds, seeds)

    def step(self, worlds: np.ndarray, actions: np.ndarray) -> dict[str, np.ndarray]:
        """One step of each of `worlds` int [n] under `actions` int [n] (indices into the task's action list).
        Returns {name: [n, ...]}; finished worlds come back already reset (see the module docstring)."""
        worlds = self._check_worlds(worlds)
        actions = np.asarray(actions, np.int64).reshape(-1)
        if actions.shape != worlds.shape:
            raise ValueError(f"WorkerPool.step: {worlds.size} worlds but {actions.size} actions")
        # Checked here, before any world moves, so that a bad call leaves every world as it was.
        count = len(tasks.TASKS[self.task].actions)
        bad = (actions < 0) | (actions >= count)
        if bad.any():
            raise ValueError(f"WorkerPool.step: actions {actions[bad][:4].tolist()} are not in [0, {count}) "
                             f"(the {self.task} actions)")
        fresh = ~self._seen[worlds]
        if fresh.any():
            raise ValueError(f"WorkerPool.step: worlds {worlds[fresh][:8].tolist()} were never reset")
        return self._call(_STEP, worlds, actions)

    def close(self) -> None:
        """Stop the workers (politely, then by force) and free the shared block and NetHack's scratch folders."""
        if self._closed:
            return
        self._closed = True
        for conn in self._conns:
            try:
                conn.send_bytes(np.array([_CLOSE, 0], np.int64).tobytes())
            except (OSError, ValueError):
                pass
        for proc in self._procs:
            if self._broken is not None and proc.is_alive():
                proc.kill()  # after a crash or a hang the others may be mid-call: no point waiting for them
            proc.join(timeout=5.0)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5.0)
        for conn in self._conns:
            conn.close()
        self._out = {}
        self._shm.close()
        self._shm.unlink()
        shutil.rmtree(self._scratch, ignore_errors=True)

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            try:
                self.close()
            except Exception:  # noqa: BLE001 - at interpreter exit parts of the runtime may already be gone
                pass

    # ------------------------------------------------------------------------------------------------------------

    def _check_worlds(self, worlds: np.ndarray) -> np.ndarray:
        worlds = np.asarray(worlds, np.int64).reshape(-1)
        if worlds.size and (worlds.min() < 0 or worlds.max() >= self.num_worlds):
            raise ValueError(f"WorkerPool: worlds must be in [0, {self.num_worlds}), got {worlds.tolist()}")
        if np.unique(worlds).size != worlds.size:
            raise ValueError(f"WorkerPool: a world appears twice in {worlds.tolist()}")
        return worlds

    def _call(self, command: int, worlds: np.ndarray, values: np.ndarray) -> dict[str, np.ndarray]:
        with self._lock:
            if self._closed:
                raise RuntimeError("WorkerPool: the pool is closed")
            if self._broken is not None:
                raise self._broken
            owner = worlds % self.num_workers
            busy = []
            for index in np.unique(owner).tolist():
                mine = owner == index
                count = int(mine.sum())
                message = np.empty(2 + 2 * count, np.int64)
                message[0], message[1] = command, count
                message[2:2 + count], message[2 + count:] = worlds[mine], values[mine]
                try:
                    self._conns[index].send_bytes(message.tobytes())
                except OSError:
                    self._crashed(index, "its pipe is closed")
                busy.append(index)
            self._wait(busy, "reset" if command == _RESET else "step")
            if command == _RESET:
                self._seen[worlds] = True
            return {name: array[worlds] for name, array in self._out.items()}

    def _wait(self, busy: Any, what: str, startup: bool = False) -> None:
        """Wait for one reply of each worker in `busy`; a death, a hang or a reported error raises.

        A plain blocking read per worker, in turn: the parent holds no copy of a worker's end of its pipe, so a
        worker's death ends the pipe (EOFError) and needs no separate watch; `poll` bounds the wait for a hang.
        """
        # Starting is a fresh interpreter importing NLE and building a level: seconds on a loaded machine, which the
        # hang timeout of a reset or a step (as short as a test makes it) must not cut short.
        timeout = max(self.timeout, STARTUP_TIMEOUT_S) if startup else self.timeout
        deadline = time.monotonic() + timeout
        errors = []
        for index in busy:
            conn = self._conns[index]
            try:
                if not conn.poll(max(deadline - time.monotonic(), 0.0)):
                    self._crashed(index, f"did not answer a {what} within {timeout:g} s (hung)", dead=False)
                reply = conn.recv_bytes()
            except (EOFError, OSError):
                self._crashed(index, f"died during a {what}" if what != "start" else "died while starting")
            if reply.startswith(_ERROR):
                errors.append((index, reply[1:].decode(errors="replace")))
        if errors:
            index, text = errors[0]
            if startup:
                if "ModuleNotFoundError" in text or "ImportError" in text:
                    raise MiniHackUnavailable(f"MiniHack worker {index} could not import nle/minihack; {INSTALL_HINT}.\n"
                                      f"{text}")
                raise RuntimeError(f"MiniHack worker {index} failed to start:\n{text}")
            raise RuntimeError(f"MiniHack worker {index} failed during a {what}:\n{text}")

    def _crashed(self, index: int, why: str, dead: bool = True) -> None:
        proc = self._procs[index]
        proc.join(timeout=1.0 if dead else 0.0)  # a dead worker's exit code arrives a moment after its pipe ends
        code = proc.exitcode
        held = np.flatnonzero(self._seen & (np.arange(self.num_worlds) % self.num_workers == index)).tolist()
        code_text = "still running" if code is None else f"exit code {code}" + (
            f" (signal {signal.Signals(-code).name})" if code < 0 and -code in signal.valid_signals() else "")
        self._broken = WorkerCrashed(
            f"MiniHack worker {index} (pid {proc.pid}, {code_text}) {why}; it held worlds {held}. Its worlds are "
            "lost, so the run stops here; started again, the run resumes from its last checkpoint.")
        raise self._broken
