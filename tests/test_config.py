import dataclasses

import pytest

from sensei_jax import config as config_lib
from sensei_jax.run import split_overrides


def test_default_config_loads_and_round_trips(tmp_path):
    cfg = config_lib.load()
    assert cfg.run.name == "default"
    config_lib.save(cfg, tmp_path / "config.yaml")
    again = config_lib.load(tmp_path / "config.yaml")
    assert config_lib.to_dict(again) == config_lib.to_dict(cfg)


def test_overrides_apply_with_types():
    cfg = config_lib.load(overrides=["--run.seed", "7", "--env.task=open_slide", "--env.image_size", "224"])
    assert cfg.run.seed == 7 and cfg.env.task == "open_slide" and cfg.env.image_size == 224


def test_unknown_key_is_named():
    with pytest.raises(config_lib.ConfigError, match="env.taks"):
        config_lib.load(overrides=["--env.taks", "open_slide"])


def test_wrong_type_is_named():
    with pytest.raises(config_lib.ConfigError, match="run.seed"):
        config_lib.load(overrides=["--run.seed", "three"])


def test_bad_yaml_file_is_named(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("run: [unclosed\n")
    with pytest.raises(config_lib.ConfigError, match="bad.yaml"):
        config_lib.load(path)
    with pytest.raises(config_lib.ConfigError, match="not found"):
        config_lib.load(tmp_path / "missing.yaml")


def test_nested_types():
    @dataclasses.dataclass
    class Inner:
        sizes: tuple[int, ...] = (1, 2)
        mode: str | None = None

    @dataclasses.dataclass
    class Outer:
        inner: Inner = dataclasses.field(default_factory=Inner)
        rate: float = 1.0

    out = config_lib.merge(Outer(), {"inner": {"sizes": [3, 4, 5]}, "rate": 2})
    assert out.inner.sizes == (3, 4, 5) and isinstance(out.rate, float)
    with pytest.raises(config_lib.ConfigError, match=r"inner.sizes\[1\]"):
        config_lib.merge(Outer(), {"inner": {"sizes": [3, "x"]}})


def test_split_overrides_keeps_command_flags():
    rest, overrides = split_overrides(["env", "rollout", "--steps", "5", "--env.task", "stack", "--run.seed=1"])
    assert rest == ["env", "rollout", "--steps", "5"]
    assert overrides == ["--env.task", "stack", "--run.seed=1"]


def test_float_override_accepts_exponent_without_dot():
    @dataclasses.dataclass
    class Section:
        rate: float = 0.1

    assert config_lib.merge(Section(), {"rate": "1e-5"}).rate == 1e-5
    with pytest.raises(config_lib.ConfigError, match="rate"):
        config_lib.merge(Section(), {"rate": "fast"})
