"""The two MiniHack tasks of SENSEI: how each is built, its actions, and what is read from its observations.

Facts from the authors' code (SENSEI's MiniHack wrapper, in the LLaVA follow-up's repository):

keyroom: `MiniHack-KeyRoom-S15-v0` (a lit 15x15 room holding a 5x5 subroom behind a locked door, with the down
  staircase inside it and a skeleton key, "The Master Key of Thievery", somewhere in the big room). Rogue,
  autopickup on, 9 actions (N, E, S, W, NE, SE, SW, NW, APPLY; MiniHack turns APPLY next to a closed door with the
  key in the inventory into "unlock it and walk in"), 600 steps. Reward 1 on the down staircase (the task's
  success, terminal).
keychest: "KeyChestCorridor-S4": MiniGrid's KeyCorridorS4R3 layout turned into a NetHack level, regenerated every
  episode. Rogue, autopickup on, 5 actions (N, E, S, W, OPEN), 800 steps. Reward 1 when, after the key was picked
  up ("g - a key."), an OPEN towards the chest prints "Seems like something lootable over there." (the task's
  success, terminal). minigrid itself is not a dependency: `keycorridor_des` draws the same layout distribution
  with numpy (see its docstring for the rules) and writes the des-file exactly as the authors' generator did.

Both: the observation is the 5x5 egocentric tile crop (`glyphs_crop`) rendered at 16 px per tile (80x80) with the
authors' glyph remapping (the agent, a rogue, drawn as a tourist; the up staircase drawn as floor), and "key in
inventory" (skeleton key glyph 2102 among `inv_glyphs`). Rewards are clipped to [0, 1] as the authors' wrapper did
(which removes NetHack's -0.01 for actions that take no game time); a step is terminal when NetHack reports death
or the task's success, never at the time limit.

Per-step flags (`INTERACTIONS`), each True on every step its condition holds, as the authors' interaction tracker
counted them (per-episode sums of these are the MiniHack metrics):
  key_picked_up       the message of this step is the key's pickup line ("g - a key named The Master Key of
                      Thievery." on keyroom, "g - a key." on keychest; any inventory letter)
  has_key             the skeleton key is in the inventory
  near_locked_door    a closed door (2374/2375) is one of the 8 tiles around the agent (a locked door looks like
                      a closed one, so this also fires at closed unlocked doors, as in the authors' tracker)
  door_open           an open door (2372/2373) is in the 5x5 crop
  chest_open          keychest only: this step's message is "Seems like something lootable over there." (OPEN
                      towards the chest; the authors had no chest metric and counted the success reward instead)

On the step that ends a game (success or death) NLE quits the game before returning, which blanks the screen and
the message; `step_env` returns the view before the quit, so that step's flags are those of the real last frame.

The oracle's frame features (`FEATURES`, float32 [F], the same list for both tasks) and `interest_score` rank
frames by the authors' heuristic ground truth (`compare` turns two scores into a label); see `interest_score`.
Everything here is numpy on one world's raw observation; nle and minihack are imported only to build envs.

Where this differs from the authors' setup:
  - Versions: nle 1.3 and minihack 1.0 (gymnasium API) instead of nle 0.9 and minihack <= 0.1.6 (gym API). The
    glyph ids are the same (GLYPH_CMAP_OFF 2359, the rogue 337, checked against this NLE).
  - KeyChest's layout: MiniGrid's KeyCorridorS4R3 rules are re-implemented with numpy (`keycorridor_des`), so the
    layouts follow the same distribution but not gym-minigrid's random stream. The des-file is written as the
    authors' minihack 0.1.5 generator wrote it; minihack 1.0's `LevelGenerator.add_door` would also put a
    boulder on every door, so it is not used. The authors' CONTAINER line had no line break before the key's
    OBJECT line; here it has one (the same level).
  - minihack 1.0's `SequentialRewardManager.reset` keeps its event index; `start_episode` resets it, as the
    authors' code did.
  - Seeds: the authors never seeded NetHack (every level random); here every episode's NetHack seeds (and
    KeyChest's layout) come from the world's seed, the same distribution, reproducible.
  - The step limit is counted by the worker instead of NetHack's ABORTED status (the same lengths; neither is
    terminal).
  - KeyRoom uses the SENSEI config's 9 actions and 600 steps for every method. The authors' Plan2Explore KeyRoom
    config effectively ran with 5 actions (no diagonals) and 800 steps, because its overrides went to an env
    section its task suite did not read.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

import numpy as np

from sensei_jax.reward.labels import Label

__all__ = ["FEATURES", "INTERACTIONS", "OBSERVATION_KEYS", "SUCCESSES", "TASKS", "Task", "TileRenderer", "compare",
           "features", "import_minihack", "interaction_flags", "interest_score", "keycorridor_des", "make_env",
           "start_episode", "step_env", "success_flags"]

# Glyph ids of NetHack 3.6.6 as NLE numbers them (the same in NLE 0.9 and 1.x: GLYPH_CMAP_OFF = 2359).
KEY_GLYPH = 2102  # skeleton key (object 196)
CHEST_GLYPH = 2096
OPEN_DOOR_GLYPHS = (2372, 2373)  # S_vodoor, S_hodoor
CLOSED_DOOR_GLYPHS = (2374, 2375)  # S_vcdoor, S_hcdoor; locked doors look the same
STAIRS_DOWN_GLYPH = 2383  # S_dnstair
STAIRS_UP_GLYPH, FLOOR_GLYPH = 2382, 2378  # S_upstair, S_room
ROGUE_GLYPH, CAVEMAN_GLYPH, PRIESTESS_GLYPH, TOURIST_GLYPH = 337, 329, 335, 339
# The authors' renderer (remap_to_tourist, remap_staircase): {drawn glyph: glyph whose tile is drawn instead}.
GLYPH_REMAP = {ROGUE_GLYPH: TOURIST_GLYPH, CAVEMAN_GLYPH: TOURIST_GLYPH, PRIESTESS_GLYPH: TOURIST_GLYPH,
               STAIRS_UP_GLYPH: FLOOR_GLYPH}

KEYROOM_PICKUP = " - a key named The Master Key of Thievery."
KEYCHEST_PICKUP = " - a key."
LOOTABLE = "Seems like something lootable over there."
_LOOTABLE_BYTES = LOOTABLE.encode()

# What the workers ask NetHack for: the crop is rendered here (`TileRenderer`), not by MiniHack's per-tile loop.
OBSERVATION_KEYS = ("glyphs_crop", "inv_glyphs", "message")

INTERACTIONS = {
    "keyroom": ("key_picked_up", "has_key", "near_locked_door", "door_open"),
    "keychest": ("key_picked_up", "has_key", "near_locked_door", "door_open", "chest_open"),
}
SUCCESSES = {"keyroom": ("keyroom",), "keychest": ("keychest",)}
FEATURES = ("has_key", "key_visible", "open_door_visible", "closed_door_visible", "near_locked_door",
            "stairs_down_visible", "chest_visible", "key_picked_up", "chest_open")
_F = {name: i for i, name in enumerate(FEATURES)}
HAS_KEY = _F["has_key"]  # the index of the inventory bit among the features


@dataclasses.dataclass(frozen=True)
class Task:
    name: str
    episode_length: int  # steps (the authors' max_episode_steps)
    actions: tuple[str, ...]  # NLE enum member names, in the agent's action order
    pickup_message: str  # the key's pickup line after its inventory letter
    interactions: tuple[str, ...]
    successes: tuple[str, ...]
    features: tuple[str, ...] = FEATURES

    @property
    def pickup_bytes(self) -> bytes:
        return self.pickup_message.encode("latin-1")

    @functools.cached_property
    def interaction_index(self) -> np.ndarray:
        """int [K]: the feature behind each of `interactions`."""
        return np.array([_F[INTERACTION_FEATURE[name]] for name in self.interactions])


TASKS = {
    "keyroom": Task("keyroom", 600, ("N", "E", "S", "W", "NE", "SE", "SW", "NW", "APPLY"), KEYROOM_PICKUP,
                    INTERACTIONS["keyroom"], SUCCESSES["keyroom"]),
    "keychest": Task("keychest", 800, ("N", "E", "S", "W", "OPEN"), KEYCHEST_PICKUP, INTERACTIONS["keychest"],
                     SUCCESSES["keychest"]),
}


# ----------------------------------------------------------------------------------------------------------------
# Reading one observation (pure numpy)


_OPEN_DOORS, _CLOSED_DOORS = frozenset(OPEN_DOOR_GLYPHS), frozenset(CLOSED_DOOR_GLYPHS)


def features(task: Task, obs: dict[str, np.ndarray]) -> np.ndarray:
    """float32 [F] (`FEATURES`) of one raw observation (`glyphs_crop` int [c, c] with the agent at the centre,
    `inv_glyphs` int [55], `message` uint8 [256]).

    Plain Python sets on the 25 glyphs: a worker calls this after every NetHack step (about 120 us), and numpy's
    per-call overhead on arrays this small would add a fifth to it."""
    crop = np.asarray(obs["glyphs_crop"])
    seen = set(crop.ravel().tolist())
    c = crop.shape[0] // 2
    around = crop[c - 1:c + 2, c - 1:c + 2].ravel().tolist()
    del around[4]  # the agent's own tile is not a neighbour
    raw = np.asarray(obs["message"], np.uint8).tobytes()
    text = raw[:raw.find(b"\0")] if b"\0" in raw else raw
    return np.array([KEY_GLYPH in np.asarray(obs["inv_glyphs"]).tolist(), KEY_GLYPH in seen,
                     not _OPEN_DOORS.isdisjoint(seen), not _CLOSED_DOORS.isdisjoint(seen),
                     not _CLOSED_DOORS.isdisjoint(around), STAIRS_DOWN_GLYPH in seen, CHEST_GLYPH in seen,
                     text[1:] == task.pickup_bytes, text == _LOOTABLE_BYTES], np.float32)


# The feature behind each interaction flag.
INTERACTION_FEATURE = {"key_picked_up": "key_picked_up", "has_key": "has_key", "near_locked_door": "near_locked_door",
                       "door_open": "open_door_visible", "chest_open": "chest_open"}


def interaction_flags(task: Task, frame_features: np.ndarray) -> np.ndarray:
    """bool [..., K] (`task.interactions`) from features [..., F] (`features`); see the module docstring."""
    return np.asarray(frame_features)[..., task.interaction_index] > 0


def success_flags(task: Task, end_status: int) -> np.ndarray:
    """bool [J] (`task.successes`): NetHack's end status of the step is TASK_SUCCESSFUL (2)."""
    return np.full(len(task.successes), int(end_status) == 2, bool)


# ----------------------------------------------------------------------------------------------------------------
# The oracle's ranking


def interest_score(frame_features: np.ndarray, task: str = "keyroom") -> np.ndarray:
    """float32 [...] score of frames from their features [..., F]: the authors' heuristic ground truth as a number.

    keyroom reproduces the authors' rules (`minihack_utils.py`, mode "inventory"), which compare two frames in
    order: (1) the down staircase visible in only one wins; (2) an open door visible in only one wins, both: tie;
    (3) the key in the inventory of only one wins; both: a closed door visible in only one wins, else tie; (4) a key
    visible in only one wins, both: tie; (5) otherwise unknown. As bits, highest first:

        32 stairs + 16 open_door + (1 - open_door) (8 has_key + 4 has_key closed_door + 2 (1 - has_key) key_visible)
        + informative,   informative = open_door or has_key or key_visible

    The lowest bit never decides a comparison (equal higher bits imply equal `informative`); it tells `compare` a
    tie of two uninformative frames apart: such pairs fell through every rule, and get Label.UNKNOWN.

    keychest has no heuristic in the authors' code (its pairs were labelled by GPT-4). This one follows the task's
    chain in the same form: an OPEN at the chest (the lootable message) > the key in the inventory (with the chest
    in view above without) > a key in view, not held > the chest in view > nothing (uninformative):

        32 chest_open + 8 has_key + 4 (1 - has_key) key_visible + 2 chest_visible + informative,
        informative = any of those four
    """
    f = np.asarray(frame_features, np.float32) > 0
    get = lambda name: f[..., _F[name]].astype(np.float32)  # noqa: E731
    if task == "keyroom":
        stairs, door, key, closed, seen = (get("stairs_down_visible"), get("open_door_visible"), get("has_key"),
                                           get("closed_door_visible"), get("key_visible"))
        informative = np.maximum(np.maximum(door, key), seen)
        score = 32 * stairs + 16 * door + (1 - door) * (8 * key + 4 * key * closed + 2 * (1 - key) * seen)
    elif task == "keychest":
        opened, key, chest, seen = get("chest_open"), get("has_key"), get("chest_visible"), get("key_visible")
        informative = np.maximum.reduce([opened, key, chest, seen])
        score = 32 * opened + 8 * key + 4 * (1 - key) * seen + 2 * chest
    else:
        raise ValueError(f"minihack.task: unknown task {task!r}; known: {', '.join(TASKS)}")
    return (score + informative).astype(np.float32)


def frame_classes(frame_features: np.ndarray, task: str = "keyroom") -> dict[str, np.ndarray]:
    """The heuristic's classes of frames [N, F], as the pair sampler and the report use them: `score`
    (`interest_score`), `good` (some progress: above the lowest score among them), `bad` (the lowest)."""
    score = interest_score(frame_features, task)
    lowest = score.min() if len(score) else 0.0
    return {"score": score, "good": score > lowest, "bad": score <= lowest}


def compare(score_first: np.ndarray, score_second: np.ndarray, tie: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Scores [N] of both frames of N pairs (`interest_score`) -> (prob_first float32 [N], label int8 [N]).

    Label.FIRST / SECOND when the scores differ by at least `tie`, else TIE, or UNKNOWN when both frames are
    uninformative (even scores: no rule of the heuristic applies). prob_first is 1, 0 or 0.5.
    """
    first = np.asarray(score_first, np.float32)
    diff = first - np.asarray(score_second, np.float32)
    uninformative = np.round(first).astype(np.int64) % 2 == 0
    label = np.where(diff >= tie, Label.FIRST, np.where(diff <= -tie, Label.SECOND,
                                                        np.where(uninformative, Label.UNKNOWN, Label.TIE)))
    prob = np.where(label == Label.FIRST, 1.0, np.where(label == Label.SECOND, 0.0, 0.5))
    return prob.astype(np.float32), label.astype(np.int8)


# ----------------------------------------------------------------------------------------------------------------
# Rendering


class TileRenderer:
    """Draws a glyph crop [c, c] as uint8 [16 c, 16 c, 3] from MiniHack's 16 px tile set with `GLYPH_REMAP`.

    A glyph -> tile index (the remapping applied there) and a table of MiniHack's ~1,100 distinct tiles turn a crop
    into pixels with two gathers and one strided copy, instead of MiniHack's per-tile concatenation. Without the
    remap it draws exactly MiniHack's `pixel_crop`; glyph ids outside NetHack's range draw black.
    """

    def __init__(self, remap: dict[int, int] | None = None):
        import pickle

        import_minihack()
        import minihack.tiles
        from minihack.tiles import glyph2tile
        from nle.nethack import MAX_GLYPH

        with open(os.path.join(os.path.dirname(minihack.tiles.__file__), "tiles.pkl"), "rb") as f:
            tiles = pickle.load(f)
        black = len(tiles)
        self.table = np.zeros((black + 1, 16, 16, 3), np.uint8)  # the last tile stays black
        for index, tile in tiles.items():
            self.table[index] = tile
        tile_of = np.full(MAX_GLYPH + 1, black, np.int32)
        tile_of[:MAX_GLYPH] = [glyph2tile[glyph] for glyph in range(MAX_GLYPH)]
        for glyph, drawn in (GLYPH_REMAP if remap is None else remap).items():
            tile_of[glyph] = tile_of[drawn]
        self.tile_of = tile_of

    def render(self, glyphs_crop: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """uint8 [16 h, 16 w, 3] of `glyphs_crop` int [h, w], written into `out` when given."""
        h, w = glyphs_crop.shape
        if out is None:
            out = np.empty((16 * h, 16 * w, 3), np.uint8)
        tiles = self.tile_of[np.clip(glyphs_crop, 0, len(self.tile_of) - 1)]
        out.reshape(h, 16, w, 16, 3)[...] = self.table[tiles].transpose(0, 2, 1, 3, 4)
        return out


# ----------------------------------------------------------------------------------------------------------------
# Building and starting envs (imports nle and minihack)


def import_minihack() -> None:
    """Import nle and minihack, or raise an ImportError that says how to install them."""
    try:
        import warnings

        with warnings.catch_warnings():  # minihack 1.0 imports pkg_resources, which warns on import
            warnings.simplefilter("ignore")
            import minihack  # noqa: F401
            import nle  # noqa: F401
    except ImportError as e:
        raise ImportError(f"MiniHack needs the packages nle and minihack ({e}); install them with "
                          "`pip install nle minihack` (or `bash scripts/setup.sh`)") from e


def _nle_actions(task: Task) -> tuple[Any, ...]:
    from nle import nethack

    table = {**{d.name: d for d in nethack.CompassDirection}, "APPLY": nethack.Command.APPLY,
             "OPEN": nethack.Command.OPEN}
    return tuple(table[name] for name in task.actions)


def make_env(task: Task, crop: int) -> Any:
    """The unwrapped MiniHack env of `task` with a `crop` x `crop` egocentric crop. NetHack's own step limit is set
    out of reach: the worker counts steps (so the time limit is never mistaken for a terminal state)."""
    import_minihack()
    from minihack import MiniHackNavigation
    from minihack.envs.keyroom import MiniHackKeyRoom15x15
    from minihack.reward_manager import SequentialRewardManager

    common = dict(observation_keys=OBSERVATION_KEYS, obs_crop_h=crop, obs_crop_w=crop, autopickup=True,
                  actions=_nle_actions(task), max_episode_steps=2**62)
    if task.name == "keyroom":
        # The class of `MiniHack-KeyRoom-S15-v0`, built directly: gymnasium.make would keep max_episode_steps for
        # its own TimeLimit wrapper instead of passing it on, leaving NetHack's limit at the class's 400.
        env = MiniHackKeyRoom15x15(**common)
    else:
        manager = SequentialRewardManager()
        manager.add_message_event(["g - a key.", "h - a key."], reward=0)
        manager.add_message_event([LOOTABLE], reward=1)
        env = MiniHackNavigation(des_file=keycorridor_des(np.random.default_rng(0)), reward_manager=manager,
                                 **common)
    _keep_final_view(env)
    return env


def _keep_final_view(env: Any) -> None:
    """Make `env` keep a copy of the observation at which its game ended, in `env.final_observation`.

    When a game ends (the task's success, or death), NLE quits it inside `step` and hands back observation arrays
    that the quitting keystrokes have overwritten: an empty message and a crop of the blank end screen. The flags
    of that step (the chest's message, the open door, ...) must come from the view before the quit, which NLE
    passes to `_quit_game`; this wraps that method of the one instance to copy it first.
    """
    quit_game = env._quit_game

    def copy_then_quit(observation, done):
        env.final_observation = {k: np.array(v, copy=True) for k, v in env._get_observation(observation).items()}
        return quit_game(observation, done)

    env._quit_game = copy_then_quit
    env.final_observation = None


def step_env(env: Any, action: int) -> tuple[dict[str, np.ndarray], float, int]:
    """One step of an env from `make_env`: (the observation the step led to, the reward, NetHack's end status:
    0 running, 1 death, 2 the task's success). When the game ended, the observation is the view before NLE quit
    the game (see `_keep_final_view`)."""
    env.final_observation = None
    obs, reward, _, _, info = env.step(action)
    if env.final_observation is not None:
        obs, env.final_observation = env.final_observation, None
    return obs, reward, int(info["end_status"])


def start_episode(env: Any, task: Task, core: int, disp: int) -> dict[str, np.ndarray]:
    """Reset `env` into a new episode from NetHack seeds (core, disp), without NetHack's re-seeding, so the episode
    is a function of the seeds; keychest first draws a new layout from `core`. Returns the first observation."""
    if task.name == "keychest":
        env.update(keycorridor_des(np.random.default_rng(core)))
        env.reward_manager.current_event_idx = 0  # minihack 1.0's reset() leaves it; the authors reset it
    env.seed(core, disp, reseed=False)
    env.final_observation = None
    obs, _ = env.reset()
    return obs


def keycorridor_des(rng: np.random.Generator, room_size: int = 4, num_rows: int = 3) -> str:
    """A NetHack des-file of one MiniGrid KeyCorridor layout (S4R3 by default) drawn from `rng`.

    MiniGrid's rules: a grid of num_rows x 3 rooms of room_size tiles (walls shared); every room gets one random
    door position per shared wall; the middle column's walls between rooms are removed (a hallway); a locked door
    on the left wall of a random right-column room, the ball (here: the chest) in that room; the key in a random
    left-column room; the agent in the middle room; then random doors are added (never to the locked room) until
    every room is reachable from the agent's. Objects and the agent go on random empty tiles of their room's
    rectangle (a removed wall's tiles included).

    The authors' conversion to NetHack: walls '|', doors '+', everything else '.', the bottom wall row dropped; an
    up staircase (BRANCH) at the agent's tile; a chest (not trapped, holding a boulder; NetHack locks it at random)
    at the ball's tile; the skeleton key at the key's tile; every door 'closed' (MiniGrid's locked door too);
    WALLIFY. The layout follows MiniGrid's distribution, not its random stream (numpy draws here).
    """
    cols, step = 3, room_size - 1
    width, height = step * cols + 1, step * num_rows + 1
    grid = np.full((height, width), ".", dtype="<U1")
    for j in range(num_rows):  # room walls
        for i in range(cols):
            x, y = i * step, j * step
            grid[y, x:x + room_size] = grid[y + step, x:x + room_size] = "|"
            grid[y:y + room_size, x] = grid[y:y + room_size, x + step] = "|"
    # Door positions per room and side (0 right, 1 down, 2 left, 3 up), shared by the two rooms of a wall.
    door_pos: dict[tuple[int, int, int], tuple[int, int]] = {}
    for j in range(num_rows):
        for i in range(cols):
            x, y = i * step, j * step
            if i < cols - 1:
                door_pos[i, j, 0] = door_pos[i + 1, j, 2] = (x + step, int(rng.integers(y + 1, y + step)))
            if j < num_rows - 1:
                door_pos[i, j, 1] = door_pos[i, j + 1, 3] = (int(rng.integers(x + 1, x + step)), y + step)
    neighbour = {0: (1, 0), 1: (0, 1), 2: (-1, 0), 3: (0, -1)}
    connected: set[tuple[int, int, int]] = set()

    def join(i: int, j: int, k: int) -> None:
        di, dj = neighbour[k]
        connected.add((i, j, k))
        connected.add((i + di, j + dj, (k + 2) % 4))

    for j in range(1, num_rows):  # the hallway: the middle column's walls between rooms go
        x, y = step, j * step
        grid[y, x + 1:x + step] = "."
        join(1, j, 3)
    doors = []
    locked_row = int(rng.integers(0, num_rows))
    doors.append(door_pos[2, locked_row, 2])
    grid[doors[-1][1], doors[-1][0]] = "+"
    join(2, locked_row, 2)
    taken: set[tuple[int, int]] = set()

    def place(i: int, j: int) -> tuple[int, int]:
        x0, y0 = i * step, j * step
        while True:
            x, y = int(rng.integers(x0, x0 + room_size)), int(rng.integers(y0, y0 + room_size))
            if grid[y, x] == "." and (x, y) not in taken:
                taken.add((x, y))
                return x, y

    chest = place(2, locked_row)
    key = place(0, int(rng.integers(0, num_rows)))
    agent = place(1, num_rows // 2)

    def reachable() -> set[tuple[int, int]]:
        seen, stack = set(), [(1, num_rows // 2)]
        while stack:
            room = stack.pop()
            if room in seen:
                continue
            seen.add(room)
            for k, (di, dj) in neighbour.items():
                if (room[0], room[1], k) in connected:
                    stack.append((room[0] + di, room[1] + dj))
        return seen

    while len(reachable()) < cols * num_rows:
        i, j, k = int(rng.integers(0, cols)), int(rng.integers(0, num_rows)), int(rng.integers(0, 4))
        di, dj = neighbour[k]
        if not (0 <= i + di < cols and 0 <= j + dj < num_rows) or (i, j, k) in connected:
            continue
        if (i, j) == (2, locked_row) or (i + di, j + dj) == (2, locked_row):
            continue  # MiniGrid adds no door to the locked room
        doors.append(door_pos[i, j, k])
        grid[doors[-1][1], doors[-1][0]] = "+"
        join(i, j, k)

    rows = ["".join(row) for row in grid[:-1]]  # the authors' converter drops the bottom wall row
    ax, ay = agent
    lines = ['', 'MAZE: "mylevel", \' \'', "FLAGS:hardfloor", "INIT_MAP: solidfill,' '", "GEOMETRY:center,center",
             "MAP", *rows, "ENDMAP", f'REGION:(0,0,{width},{len(rows)}),lit,"ordinary"',
             f"BRANCH:({ax},{ay},{ax},{ay}),({abs(ax - 1)},{abs(ay - 1)},{abs(ax - 1)},{abs(ay - 1)})",
             f"CONTAINER:('(',\"chest\"),not_trapped,{chest}" + "{OBJECT:('`', \"boulder\")}",
             f"OBJECT:('(',\"skeleton key\"),{key}",
             *[f"DOOR:closed,{door}" for door in doors], "WALLIFY", ""]
    return "\n".join(lines)
