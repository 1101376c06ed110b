"""Typed configuration: dataclass sections, YAML files and `--section.key value` overrides.

A config is a tree of dataclasses. Each library owns the dataclass of its own section (the environment's lives in
`envs/robodesk/config.py`, and so on); this module only composes them into `Config` and knows how to read, check,
override and write them. Unknown keys and values of the wrong type are errors that name the dotted key.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal

import yaml

from sensei_jax.annotators.config import AnnotateConfig
from sensei_jax.dreamer.config import DreamerConfig
from sensei_jax.explore.config import ExploreConfig
from sensei_jax.dreamer.train_config import TrainConfig
from sensei_jax.envs.minihack.config import MiniHackConfig
from sensei_jax.envs.robodesk.config import InterestConfig, RobodeskConfig
from sensei_jax.envs.toy.config import ToyConfig
from sensei_jax.pipeline.config import CollectConfig, EvaluateConfig, PairsConfig, ReportConfig
from sensei_jax.reward.config import RewardConfig
from sensei_jax.sections import REMOVED_KEYS, ConfigError, from_dict, merge, to_dict  # noqa: F401 (re-exported)
from sensei_jax.vlm.config import VlmConfig

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO_ROOT / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "default.yaml"


@dataclasses.dataclass
class RunConfig:
    """Where a run lives, how it is seeded and what hardware it asks for."""

    name: str = "default"
    root: str = "runs"  # run folders are <root>/<name>
    seed: int = 0
    # What every command checks before it starts (pipeline/device.py): `gpu` stops unless JAX has a GPU backend and
    # Warp a CUDA device; `cpu` runs JAX on the CPU even where a GPU is; `tpu` stops unless JAX runs on a TPU (the
    # MJX-Warp env never does); `auto` takes JAX's default backend.
    device: Literal["auto", "cpu", "gpu", "tpu"] = "auto"
    # The environment of the pipeline, a name of the domain registry (`sensei_jax.domains.DOMAINS`): `robodesk`
    # (MJX, section `env`), `minihack` (NetHack stepped by worker processes on the host, section `minihack`) or
    # `toy` (the CornerReach point mass, section `toy`: the whole pipeline in seconds on a CPU).
    domain: str = "robodesk"

    def __post_init__(self):
        from sensei_jax.domains import DOMAINS

        if self.domain not in DOMAINS:
            raise ValueError(f"run.domain: unknown domain {self.domain!r}; known: {', '.join(DOMAINS)}")


@dataclasses.dataclass
class Config:
    """The whole experiment. Sections are owned by the library they configure."""

    run: RunConfig = dataclasses.field(default_factory=RunConfig)
    env: RobodeskConfig = dataclasses.field(default_factory=RobodeskConfig)
    minihack: MiniHackConfig = dataclasses.field(default_factory=MiniHackConfig)
    toy: ToyConfig = dataclasses.field(default_factory=ToyConfig)
    dreamer: DreamerConfig = dataclasses.field(default_factory=DreamerConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    explore: ExploreConfig = dataclasses.field(default_factory=ExploreConfig)
    collect: CollectConfig = dataclasses.field(default_factory=CollectConfig)
    interest: InterestConfig = dataclasses.field(default_factory=InterestConfig)
    pairs: PairsConfig = dataclasses.field(default_factory=PairsConfig)
    evaluate: EvaluateConfig = dataclasses.field(default_factory=EvaluateConfig)
    report: ReportConfig = dataclasses.field(default_factory=ReportConfig)
    reward: RewardConfig = dataclasses.field(default_factory=RewardConfig)
    vlm: VlmConfig = dataclasses.field(default_factory=VlmConfig)
    annotate: AnnotateConfig = dataclasses.field(default_factory=AnnotateConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.run.root) / self.run.name


# The building blocks (ConfigError, from_dict, merge, to_dict) are `sensei_jax.sections`.

# ----------------------------------------------------------------------------------------------------------------
# Files and overrides.


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ConfigError(f"config file {path} is not valid YAML: {error}") from error
    except UnicodeDecodeError as error:
        raise ConfigError(f"config file {path} is not YAML text: it is not UTF-8 ({error.reason} at byte "
                          f"{error.start})") from error
    except OSError as error:
        from sensei_jax import files  # numpy: only on this path, so reading a config stays light

        raise ConfigError(f"config file {path} cannot be read: {files.os_error_cause(error)}") from error
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level, got {type(data).__name__}")
    return data


def parse_overrides(tokens: list[str]) -> dict[str, Any]:
    """`['--explore.steps', '1000', '--env.task=open_slide']` -> nested dict. Values are parsed as YAML scalars."""
    data: dict[str, Any] = {}
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("--") or len(token) == 2:
            raise ConfigError(f"expected a config override like --section.key VALUE, got {token!r}")
        if "=" in token:
            key, raw = token[2:].split("=", 1)
            i += 1
        else:
            if i + 1 >= len(tokens):
                raise ConfigError(f"config override {token} has no value")
            key, raw = token[2:], tokens[i + 1]
            i += 2
        if "." not in key:
            raise ConfigError(f"config override --{key} must name a section and a key, e.g. --run.seed 3")
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"config override --{key} conflicts with another override")
        node[parts[-1]] = value
    return data


BASE_KEY = "base"


@dataclasses.dataclass(frozen=True)
class Layer:
    """One config file's own keys (without `base:`), and the chain of files that led to it as a base."""

    path: Path
    data: dict[str, Any]
    named_by: tuple[Path, ...] = ()  # the top-level file first, the file naming `path` as its base last

    def describe(self) -> str:
        return str(self.path) if not self.named_by else f"{self.path} (base of {self.named_by[-1]})"


def layers(path: str | Path, named_by: tuple[Path, ...] = ()) -> list[Layer]:
    """The files config `path` is made of, in the order they apply: its bases (each with its own bases before it,
    a list of bases in the order written), then `path` itself. A base path is relative to the file naming it."""
    path = Path(path)
    chain = [*named_by, path]
    seen = [p.resolve() for p in named_by]
    if path.resolve() in seen:
        cycle = " -> ".join(str(p) for p in chain[seen.index(path.resolve()):])
        raise ConfigError(f"config files name each other as bases in a cycle: {cycle}")
    data = dict(read_yaml(path))
    bases = data.pop(BASE_KEY, [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) and b for b in bases):
        raise ConfigError(f"{path}: '{BASE_KEY}' must be a config file path or a list of them, got {bases!r}")
    out = []
    for base in bases:
        base_path = path.parent / base
        if not base_path.is_file():
            raise ConfigError(f"{path}: base config {base!r} not found (looked for {base_path})")
        out += layers(base_path, tuple(chain))
    return out + [Layer(path, data, tuple(named_by))]


def load(path: str | Path | None = None, overrides: list[str] | dict[str, Any] | None = None) -> Config:
    """The dataclass defaults, then the YAML file (the embedded default when `path` is None), then overrides.

    A file may build on others: `base: other.yaml` or `base: [a.yaml, b.yaml]`, paths relative to the file. Its
    bases apply first (each after its own bases, a list in the order written, so later ones override earlier
    ones), then the file's own keys. Sections merge key by key: a file's `explore: {steps: 10}` changes
    `explore.steps` only. Every other value is replaced whole, lists and mappings that are not sections (such as
    `env.cameras`) included. Each file is checked as it applies, so an error names the file (and the file that
    named it as a base) as well as the dotted key, and a base must be valid on top of the files before it. The
    result is one flat Config: `save` writes it without `base:`, and a saved config reloads to the same Config.
    Keys of different sections that must agree are checked last (`check_sections`).
    """
    path = DEFAULT_CONFIG if path is None else path
    cfg = Config()
    for layer in layers(path):
        try:
            cfg = merge(cfg, layer.data)
        except ConfigError as error:
            raise ConfigError(f"{layer.describe()}: {error}") from error
    if overrides:
        cfg = merge(cfg, parse_overrides(overrides) if isinstance(overrides, list) else overrides)
    try:
        return check_sections(cfg)
    except ConfigError as error:
        raise ConfigError(f"{path}{' with overrides' if overrides else ''}: {error}") from error


def check_sections(cfg: Config) -> Config:
    """Raises ConfigError, naming both keys, where two sections disagree (the run's domain says what must agree
    with its env's section); returns `cfg`."""
    from sensei_jax import domains

    problem = domains.of(cfg).check(cfg)
    if problem:
        raise ConfigError(problem)
    return cfg


def save(cfg: Any, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
