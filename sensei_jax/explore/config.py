"""Configuration of SENSEI exploration (the `explore` section of a run config).

Kept free of JAX imports so that reading a config stays fast. Defaults are SENSEI's Robodesk settings
(`robodesk_sensei` in the reference): Plan2Explore ensemble of 8 MLPs of 3x640, semantic reward clipped to +-200,
go/explore switch at the 0.75 quantile of the semantic reward, weights go {semantic 1, disagreement 0} and explore
{semantic 0.1, disagreement 1}.

What the agent optimizes is data: `weights` maps each mode (`go`, `explore`) to weights of reward sources
registered in `sensei_jax.explore.sources`; `behaviour` labels the run (its folder, its summary) and, without
`weights`, names one of the `PRESETS`: `sensei` (both modes, the switch between them), `p2x` (disagreement only,
every state explores), `motif` (the semantic reward only, every state goes). The data and update schedule (batch, train ratio, replay, prefill, intervals) is
not here: an exploration runs the DreamerV3 loop on the `train` section's schedule, as the `train` command does
(`sensei_jax.dreamer.train_config`).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Literal

from sensei_jax.explore import sources as source_registry
from sensei_jax.sections import MERGE

MODES = ("go", "explore")  # go: the state is not yet interesting; explore: it is (the switch, explore.threshold)
# behaviour -> weights: what each built-in behaviour optimizes (SENSEI's Robodesk weights for `sensei`).
PRESETS: dict[str, dict[str, dict[str, float]]] = {
    "sensei": {"go": {"semantic": 1.0, "disagreement": 0.0}, "explore": {"semantic": 0.1, "disagreement": 1.0}},
    "p2x": {"explore": {"disagreement": 1.0}},
    "motif": {"go": {"semantic": 1.0}},
}
_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclasses.dataclass
class ExploreConfig:
    # The run's label, its folder under explore/. Without `weights`, a preset: sensei (semantic + disagreement with
    # the go/explore switch), p2x (disagreement only) or motif (semantic only).
    behaviour: str = "sensei"
    # mode -> {reward source: weight}, over sources registered in sensei_jax.explore.sources (built in: semantic,
    # disagreement); None: PRESETS[behaviour]. With both modes, both list the same sources, `semantic` among them
    # (the switch compares its reward); with one mode every imagined state is in it. A config layer's table is
    # merged into the one below it key by key (`--explore.weights.go.disagreement 0.05` changes one weight).
    weights: dict[str, dict[str, float]] | None = dataclasses.field(default=None, metadata={MERGE: True})
    steps: int = 250_000  # policy steps of exploration (SENSEI's runs: 250K, i.e. 500K env steps at repeat 2)
    reward_model: str | None = None  # directory of the distilled reward model; the pipeline uses <run>/distill
    semantic_clip: float = 200.0  # the raw reward-model output is clipped to [-clip, clip], as SENSEI does
    semantic_head_scale: float = 1.0  # loss scale of the semantic head (trained on stop-gradient features)
    # Sparse success heads learned during exploration, for downstream transfer. SENSEI's 12 `rew_*` heads replace
    # push_red, push_blue and lift_flat_block by upright_block_off_table, flat_block_in_bin, flat_block_in_shelf
    # (set in configs/robodesk_sensei.yaml).
    task_heads: tuple[str, ...] = ("open_drawer", "open_drawer_medium", "open_drawer_easy", "open_slide",
                                   "open_slide_easy", "push_red", "push_green", "push_blue", "lift_upright_block",
                                   "lift_ball", "lift_flat_block", "stack")
    task_head_scale: float = 1.0  # loss scale of the sparse task-success heads (stop-gradient features)

    # Plan2Explore disagreement ensemble (SENSEI: 8 MLPs of 3x640, Adam lr 1e-4, eps 1e-5, clip 100).
    ensemble_size: int = 8
    ensemble_units: int = 640
    ensemble_layers: int = 3
    ensemble_lr: float = 1e-4
    ensemble_eps: float = 1e-5
    ensemble_clip: float = 100.0
    # Which transition's disagreement rewards arriving in imagined state s_{t+1}. `incoming`: the one that led there,
    # std at (s_t, a_t). `outgoing` (the reference's `Disag`, whose per-state std is taken `[1:]`): the one the
    # policy takes next, std at (s_{t+1}, a_{t+1}).
    disagreement_alignment: Literal["incoming", "outgoing"] = "incoming"

    # The go/explore switch. `paper`: per imagined state, the semantic reward against the EMA of its k-th quantile.
    # `code`: the reference code's form, the semantic lambda-return against max(1, EMA(P_k) - EMA(P_low)).
    threshold: Literal["paper", "code"] = "paper"
    # Which semantic reward the `paper` form compares, for the weights of imagined step t (the action taken in
    # state s_t). `state`: the reward of s_t itself, so a state is "interesting" when it is, and the step that
    # enters an interesting state is still a go step, credited by the semantic critic. `next`: r_{t+1}, the reward
    # of the state the step leads into; the step into an interesting state is then weighted as exploration (0.1
    # semantic), and a go-mode agent climbs to the threshold but is not paid for crossing it
    # (docs/exploration.md measures the difference).
    mode_reward: Literal["state", "next"] = "state"
    quantile: float = 0.75  # k; SENSEI uses 0.75 for Robodesk
    low_quantile: float = 0.05  # only used by the `code` form
    threshold_decay: float = 0.99  # EMA decay of the quantile estimates
    code_min_threshold: float = 1.0  # the `code` form's floor, max(1, ...)
    # The actor's advantage is sum_k w_k * adv_k / denominator. The reference divides by a fixed 1.1 (the sum of
    # its configured scales); None uses the sum of the explore mode's weights (of the one mode's, with one).
    advantage_denominator: float | None = None

    # Downstream transfer (task policy trained in imagination on a task head of an exploration checkpoint).
    transfer_steps: int = 10_000
    transfer_eval_episodes: int = 10

    def __post_init__(self):
        if not 0.0 < self.quantile < 1.0:
            raise ValueError(f"explore.quantile must be in (0, 1), got {self.quantile}")
        if not 0.0 <= self.low_quantile < self.quantile:
            raise ValueError(f"explore.low_quantile must be in [0, quantile), got {self.low_quantile}")
        if not 0.0 <= self.threshold_decay < 1.0:
            raise ValueError(f"explore.threshold_decay must be in [0, 1), got {self.threshold_decay}")
        if self.ensemble_size < 2:
            raise ValueError(f"explore.ensemble_size must be >= 2 to measure disagreement, got {self.ensemble_size}")
        if self.semantic_clip <= 0:
            raise ValueError(f"explore.semantic_clip must be positive, got {self.semantic_clip}")
        if self.steps < 0:
            raise ValueError(f"explore.steps must be >= 0, got {self.steps}")
        if self.mode_reward not in ("state", "next"):
            raise ValueError(f"explore.mode_reward must be 'state' or 'next', got {self.mode_reward!r}")
        if self.advantage_denominator is not None and self.advantage_denominator <= 0:
            raise ValueError(f"explore.advantage_denominator must be positive, got {self.advantage_denominator}")
        if not isinstance(self.behaviour, str) or not _LABEL.fullmatch(self.behaviour):
            raise ValueError(f"explore.behaviour {self.behaviour!r} names the run's folder: letters, digits, '_', "
                             "'.' and '-' only")
        if self.weights is None and self.behaviour not in PRESETS:
            raise ValueError(f"explore.behaviour {self.behaviour!r} names no weight preset ({', '.join(PRESETS)}); "
                             "give explore.weights to label a table of your own")
        check_weights(self.resolved_weights, self.advantage_denominator)
        preset = PRESETS.get(self.behaviour)
        if self.weights is not None and preset is not None and _shape(self.weights) != _shape(preset):
            raise ValueError(f"explore.behaviour {self.behaviour!r} is a preset of {_describe(preset)}, but "
                             f"explore.weights weights {_describe(self.weights)}: set explore.weights to null for "
                             "the preset, or label the table with another behaviour")

    @property
    def resolved_weights(self) -> dict[str, dict[str, float]]:
        """mode -> {source: weight}: `weights`, or the preset of `behaviour`."""
        return PRESETS[self.behaviour] if self.weights is None else self.weights

    @property
    def modes(self) -> tuple[str, ...]:
        """The modes the table weights, in the order go, explore."""
        return tuple(mode for mode in MODES if mode in self.resolved_weights)

    @property
    def sources(self) -> tuple[str, ...]:
        """The reward sources this exploration optimizes, each with its own critic, in registration order."""
        return source_registry.in_order({k for table in self.resolved_weights.values() for k in table})

    @property
    def needs_reward_model(self) -> bool:
        """Whether a source reads replay keys that the distilled reward model writes (the semantic reward)."""
        return any(source_registry.get(name).reward_model for name in self.sources)

    def with_preset(self, behaviour: str) -> "ExploreConfig":
        """This config with preset `behaviour`'s weights instead of its own (the baseline stage's p2x)."""
        return dataclasses.replace(self, behaviour=behaviour, weights=None)


def upgrade_section(data: dict[str, Any]) -> dict[str, Any]:
    """An `explore` section as an older spec.json stored it, with the (semantic, disagreement) pairs `go_weights`
    and `explore_weights` turned into `weights` (None where the behaviour is a preset of another shape, as p2x and
    motif were), so that an exploration written before the move still transfers."""
    if "go_weights" not in data and "explore_weights" not in data:
        return data
    data = dict(data)
    pairs = {mode: data.pop(f"{mode}_weights", None) for mode in MODES}
    table = {mode: dict(zip(("semantic", "disagreement"), map(float, pair))) for mode, pair in pairs.items()
             if pair is not None}
    preset = PRESETS.get(data.get("behaviour", "sensei"))
    data["weights"] = None if preset is not None and _shape(preset) != _shape(table) else table
    return data


def _shape(weights: dict) -> dict[str, set[str]]:
    return {mode: set(table) for mode, table in weights.items()}


def _describe(weights: dict) -> str:
    return "; ".join(f"{mode}: {', '.join(sorted(table))}" for mode, table in weights.items())


def check_weights(weights: Any, denominator: float | None = None) -> None:
    """Raises ValueError, naming the key, where a weight table is not one the switch can apply."""
    if not isinstance(weights, dict) or not weights or not set(weights) <= set(MODES):
        raise ValueError(f"explore.weights maps 'go' and/or 'explore' to {{source: weight}}, got {weights!r}")
    registered = source_registry.names()
    for mode, table in weights.items():
        if not isinstance(table, dict) or not table:
            raise ValueError(f"explore.weights.{mode} names no reward source (registered: {', '.join(registered)})")
        for name, weight in table.items():
            if name not in registered:
                raise ValueError(f"explore.weights.{mode}.{name}: no reward source {name!r} is registered "
                                 f"(registered: {', '.join(registered)})")
            if not isinstance(weight, (int, float)) or isinstance(weight, bool) or weight < 0:
                raise ValueError(f"explore.weights.{mode}.{name} must be a number >= 0, got {weight!r}")
    if len(weights) == 2:
        if set(weights["go"]) != set(weights["explore"]):
            raise ValueError(f"explore.weights.go and explore.weights.explore must list the same sources, got "
                             f"{sorted(weights['go'])} and {sorted(weights['explore'])}")
        if "semantic" not in weights["go"]:
            raise ValueError("with both modes, 'semantic' must be one of the sources of explore.weights: the switch "
                             "compares each imagined state's semantic reward with its threshold")
    last = weights["explore"] if "explore" in weights else weights["go"]
    if denominator is None and not sum(last.values()) > 0:
        mode = "explore" if "explore" in weights else "go"
        raise ValueError(f"explore.weights.{mode}'s weights sum to no positive number ({sum(last.values())}): the "
                         "actor's advantage is divided by that sum (or set explore.advantage_denominator)")
