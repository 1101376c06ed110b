"""Configuration of the DreamerV3 agent (the `dreamer` section of a run config).

Model sizes come from a named preset (`tiny` for CPU tests, `small`, and `medium` = SENSEI's Robodesk model) and
can be overridden key by key (`--dreamer.deter 512`); `DreamerConfig.size()` resolves the two. Every other
hyperparameter of the world model, the actor-critic and the optimizers lives here with the reference's value as its
default (SENSEI's 2023 DreamerV3 fork where it differs from the 2024 rewrite; see docs/dreamer.md and docs/fidelity.md).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

# deter, hidden units, stoch groups, classes per group, MLP layers, CNN depth. `medium`/`small` are the 2023
# DreamerV3 presets (SENSEI uses medium for Robodesk); `tiny` is ours, for CPU tests.
PRESETS: dict[str, dict[str, int]] = {
    "tiny": dict(deter=64, units=32, stoch=8, classes=4, layers=1, cnn_depth=4),
    "small": dict(deter=512, units=512, stoch=32, classes=32, layers=2, cnn_depth=32),
    "medium": dict(deter=1024, units=640, stoch=32, classes=32, layers=3, cnn_depth=48),
}


@dataclasses.dataclass(frozen=True)
class ModelSize:
    """Resolved network sizes (preset plus overrides)."""

    deter: int
    units: int
    stoch: int
    classes: int
    layers: int
    cnn_depth: int

    @property
    def stoch_size(self) -> int:
        return self.stoch * self.classes

    @property
    def feat_size(self) -> int:
        return self.deter + self.stoch * self.classes


@dataclasses.dataclass(frozen=True)
class DreamerConfig:
    # --- sizes: the preset, then per-key overrides (None keeps the preset's value)
    preset: Literal["tiny", "small", "medium"] = "tiny"
    deter: int | None = None
    units: int | None = None
    stoch: int | None = None
    classes: int | None = None
    layers: int | None = None
    cnn_depth: int | None = None
    blocks: int = 8  # groups of the block GRU; deter must be divisible by it
    norm: Literal["rms", "layer"] = "rms"  # RMSNorm (2024 reference) or LayerNorm (2023, SENSEI)
    compute_dtype: Literal["float32", "bfloat16"] = "float32"  # matmuls/convs; norms, losses and params stay f32
    cnn_kernel: int = 4  # encoder: stride-2 convs; decoder: x2 nearest upsampling followed by a conv
    cnn_minres: int = 4
    # Channels of the CNN stages as multiples of cnn_depth, first (highest resolution) stage first; one entry per
    # stride-2 stage (log2(image side / cnn_minres) of them). Empty: cnn_depth * (1, 2, 4, ...). The 2024
    # reference uses (2, 3, 4, 4) with kernel 5 (its size1m: cnn_depth 4, i.e. channels 8, 12, 16, 16).
    cnn_mults: tuple[int, ...] = ()

    # --- sequence model. `block` (2024 reference): three normed input projections and a block GRU of `blocks`
    # groups. `dense` (2023 reference, SENSEI's fork): one normed projection of [stoch, action], then a plain GRU
    # whose gates come from one `norm`-ed linear over [deter, input].
    rssm_core: Literal["block", "dense"] = "block"
    # State before the first step of an episode or of a window without replay context. `zeros` (2024); `learned`
    # (2023, SENSEI: `rssm.initial: learned`): deter = tanh(a learned vector, zero at init) and stoch = the mode of
    # the prior from that deter.
    initial_state: Literal["zeros", "learned"] = "zeros"
    prior_layers: int = 2  # hidden layers of the prior on deter (2024: 2; 2023 and SENSEI: 1)

    # --- observations: empty tuples mean every image ([H, W, C] uint8) and vector ([N]) key of the obs space
    encoder_keys: tuple[str, ...] = ()
    decoder_keys: tuple[str, ...] = ()

    # --- world model
    unimix: float = 0.01  # uniform mix into the latent categoricals
    free_nats: float = 1.0
    dyn_scale: float = 0.5  # SENSEI / DreamerV3 arXiv v1 (the 2024 rewrite uses 1.0)
    rep_scale: float = 0.1
    image_scale: float = 1.0
    vector_scale: float = 1.0
    reward_scale: float = 1.0
    cont_scale: float = 1.0
    grad_heads: tuple[str, ...] = ("decoder", "reward", "cont")  # SENSEI: ("decoder", "cont")
    twohot_bins: int = 255
    twohot_range: float = 20.0  # bins span [-r, r] in symlog space

    # --- actor-critic in imagination
    imag_horizon: int = 15
    discount_horizon: float = 333.0  # discount = 1 - 1 / discount_horizon
    return_lambda: float = 0.95
    retnorm_low: float = 5.0  # percentiles of the lambda-returns, tracked by an EMA
    retnorm_high: float = 95.0
    retnorm_rate: float = 0.01
    retnorm_limit: float = 1.0  # the return scale is max(limit, P95 - P5)
    actor_entropy: float = 3e-4
    actor_min_std: float = 0.1
    actor_max_std: float = 1.0
    actor_unimix: float = 0.01  # discrete actions
    critic_slow_rate: float = 0.02
    critic_slow_every: int = 1
    critic_slow_reg: float = 1.0  # cross-entropy toward the slow critic's prediction
    critic_slow_target: bool = False  # bootstrap returns from the slow critic instead of the online one
    # Gradient of the actor for continuous actions. `reinforce` (2024): log-prob times the advantage on fixed
    # imagined trajectories. `backprop` (2023, SENSEI: `actor_grad_cont: backprop`): minus the advantage,
    # differentiated through the reparameterized actions, the learned dynamics and the reward and value heads
    # (their parameters stay fixed). Discrete actions always use reinforce, as both references do.
    actor_grad_cont: Literal["reinforce", "backprop"] = "reinforce"
    # Per-step weight of the actor and critic losses over the H imagined steps. `cont` (2024): cumprod(cont).
    # `discounted` (2023, SENSEI): cumprod(discount * cont) / discount, i.e. 1 at the start, discount^t after t
    # steps (times the continuation).
    imag_weight: Literal["cont", "discounted"] = "cont"
    # Continuation of imagined states from the continue head: its probability (`mean`, 2024) or its mode, 0 or 1
    # (`mode`, 2023 and SENSEI). The start state's continuation is 1 - is_terminal either way.
    imag_cont: Literal["mean", "mode"] = "mean"
    # Reward sources of the actor-critic and their weights; `extr` is the reward head. Other names must be
    # registered with Agent(reward_sources=...).
    reward_scales: dict[str, float] = dataclasses.field(default_factory=lambda: {"extr": 1.0})

    # --- optimizers: one per group (world model, actor, critics)
    # `shared`: one optimizer over all critics, so global-norm clipping sees their joint gradient. `separate`
    # (SENSEI: each `VFunction` owns a `critic_opt`): one optimizer state per reward source's critic, each clipped
    # on its own gradient. With one critic, or while no clip is hit, the two give the same updates.
    critic_optimizers: Literal["shared", "separate"] = "shared"
    optimizer: Literal["adam", "laprop"] = "adam"
    model_lr: float = 1e-4
    actor_lr: float = 3e-5
    critic_lr: float = 3e-5
    model_eps: float = 1e-8
    ac_eps: float = 1e-5
    model_clip: float = 1000.0  # global-norm clipping (adam)
    ac_clip: float = 100.0
    laprop_eps: float = 1e-20
    laprop_beta1: float = 0.9
    laprop_beta2: float = 0.999
    agc: float = 0.3  # per-tensor adaptive gradient clipping (laprop)
    agc_pmin: float = 1e-3
    warmup: int = 0  # linear learning-rate warmup in updates (the 2024 reference uses 1000 with laprop)

    # --- reports
    report_context: int = 5  # observed steps before open-loop prediction in report videos

    def __post_init__(self):
        size = self.size()
        for name in ("deter", "units", "stoch", "classes", "layers", "cnn_depth"):
            if getattr(size, name) < 1:
                raise ValueError(f"dreamer.{name} must be positive, got {getattr(size, name)}")
        if self.rssm_core == "block" and size.deter % self.blocks:
            raise ValueError(f"dreamer.deter ({size.deter}) must be divisible by dreamer.blocks ({self.blocks})")
        if any(int(m) < 1 for m in self.cnn_mults):
            raise ValueError(f"dreamer.cnn_mults must be positive integers, got {list(self.cnn_mults)}")
        if self.cnn_kernel < 1:
            raise ValueError(f"dreamer.cnn_kernel must be positive, got {self.cnn_kernel}")
        if self.twohot_bins < 3:
            raise ValueError(f"dreamer.twohot_bins must be at least 3, got {self.twohot_bins}")
        if not 0 <= self.retnorm_low < self.retnorm_high <= 100:
            raise ValueError(
                f"dreamer.retnorm_low/high must satisfy 0 <= low < high <= 100, got {self.retnorm_low}, "
                f"{self.retnorm_high}"
            )
        if self.discount_horizon < 1:
            raise ValueError(f"dreamer.discount_horizon must be >= 1, got {self.discount_horizon}")
        if self.prior_layers < 1:
            raise ValueError(f"dreamer.prior_layers must be >= 1, got {self.prior_layers}")
        if self.imag_horizon < 1:
            raise ValueError(f"dreamer.imag_horizon must be >= 1, got {self.imag_horizon}")
        if not self.reward_scales:
            raise ValueError("dreamer.reward_scales must name at least one reward source")
        unknown = set(self.grad_heads) - {"decoder", "reward", "cont"}
        if unknown:
            raise ValueError(f"dreamer.grad_heads has unknown names {sorted(unknown)}; known: decoder, reward, cont")

    @classmethod
    def tiny(cls, **kwargs) -> DreamerConfig:
        return cls(preset="tiny", **kwargs)

    @classmethod
    def small(cls, **kwargs) -> DreamerConfig:
        return cls(preset="small", **kwargs)

    @classmethod
    def medium(cls, **kwargs) -> DreamerConfig:
        return cls(preset="medium", **kwargs)

    def size(self) -> ModelSize:
        base = PRESETS[self.preset]
        values = {k: (v if (v := getattr(self, k)) is not None else base[k]) for k in base}
        return ModelSize(**values)

    @property
    def discount(self) -> float:
        return 1.0 - 1.0 / self.discount_horizon
