import dataclasses

import pytest
import yaml

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


# ----------------------------------------------------------------------------------------------------------------
# Composition with `base:`.


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def flat_values(data, prefix=""):
    """Dotted keys of the leaves of a nested mapping (lists are leaves) and their values."""
    out = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        out.update(flat_values(value, key) if isinstance(value, dict) and value else {key: value})
    return out


def test_bases_chain_relative_to_the_file_naming_them(tmp_path):
    write(tmp_path / "common" / "grand.yaml", "run: {seed: 1}\nenv: {image_size: 32}\nexplore: {steps: 10}\n")
    write(tmp_path / "common" / "parent.yaml", "base: grand.yaml\nrun: {seed: 2}\nexplore: {ensemble_size: 3}\n")
    child = write(tmp_path / "runs" / "child.yaml", "base: ../common/parent.yaml\nrun: {name: child}\n")
    cfg = config_lib.load(child)
    assert (cfg.run.name, cfg.run.seed, cfg.env.image_size) == ("child", 2, 32)
    assert (cfg.explore.steps, cfg.explore.ensemble_size) == (10, 3)
    # A section merges key by key: keys no file names keep the defaults.
    defaults = config_lib.Config()
    assert cfg.explore.quantile == defaults.explore.quantile and cfg.env.task == defaults.env.task


def test_list_of_bases_applies_in_order(tmp_path):
    write(tmp_path / "a.yaml", "run: {seed: 1}\nexplore: {steps: 10}\n")
    write(tmp_path / "b.yaml", "env: {image_size: 32}\nexplore: {steps: 20}\n")
    cfg = config_lib.load(write(tmp_path / "ab.yaml", "base: [a.yaml, b.yaml]\n"))
    assert (cfg.run.seed, cfg.env.image_size, cfg.explore.steps) == (1, 32, 20)
    assert config_lib.load(write(tmp_path / "ba.yaml", "base: [b.yaml, a.yaml]\n")).explore.steps == 10


def test_own_keys_override_bases_and_overrides_override_both(tmp_path):
    write(tmp_path / "base.yaml", "run: {seed: 1, name: base}\ndreamer: {grad_heads: [decoder, reward, cont]}\n"
                                  "env: {cameras: {top: 64}}\n")
    child = write(tmp_path / "child.yaml", "base: base.yaml\nrun: {seed: 2}\ndreamer: {grad_heads: [cont]}\n"
                                           "env: {cameras: {right: 32}}\n")
    cfg = config_lib.load(child)
    assert (cfg.run.seed, cfg.run.name) == (2, "base")
    # Lists and mappings that are not sections are replaced whole, not merged.
    assert cfg.dreamer.grad_heads == ("cont",) and cfg.env.cameras == {"right": 32}
    assert config_lib.load(child, ["--run.seed", "3"]).run.seed == 3


def test_cycle_of_bases_is_named(tmp_path):
    write(tmp_path / "a.yaml", "base: b.yaml\n")
    write(tmp_path / "b.yaml", "base: a.yaml\n")
    with pytest.raises(config_lib.ConfigError, match=r"cycle: \S*a\.yaml -> \S*b\.yaml -> \S*a\.yaml"):
        config_lib.load(tmp_path / "a.yaml")
    with pytest.raises(config_lib.ConfigError, match="cycle"):
        config_lib.load(write(tmp_path / "self.yaml", "base: self.yaml\n"))


def test_shared_base_is_not_a_cycle(tmp_path):
    write(tmp_path / "root.yaml", "explore: {steps: 10}\n")
    write(tmp_path / "left.yaml", "base: root.yaml\nrun: {seed: 1}\n")
    write(tmp_path / "right.yaml", "base: root.yaml\nenv: {image_size: 32}\n")
    cfg = config_lib.load(write(tmp_path / "both.yaml", "base: [left.yaml, right.yaml]\n"))
    assert (cfg.explore.steps, cfg.run.seed, cfg.env.image_size) == (10, 1, 32)


def test_missing_or_malformed_base_is_named(tmp_path):
    child = write(tmp_path / "child.yaml", "base: nowhere/parent.yaml\n")
    with pytest.raises(config_lib.ConfigError) as error:
        config_lib.load(child)
    assert "child.yaml" in str(error.value) and str(tmp_path / "nowhere" / "parent.yaml") in str(error.value)
    with pytest.raises(config_lib.ConfigError, match=r"bad\.yaml: 'base' must be"):
        config_lib.load(write(tmp_path / "bad.yaml", "base: {file: parent.yaml}\n"))


def test_unknown_key_in_a_base_names_the_base_file(tmp_path):
    write(tmp_path / "parent.yaml", "explore: {stepz: 10}\n")
    child = write(tmp_path / "child.yaml", "base: parent.yaml\n")
    with pytest.raises(config_lib.ConfigError, match=r"parent\.yaml \(base of \S*child\.yaml\): .*explore\.stepz"):
        config_lib.load(child)


def test_saved_config_is_flat_and_reloads_equal(tmp_path):
    write(tmp_path / "parent.yaml", "explore: {steps: 10}\n")
    cfg = config_lib.load(write(tmp_path / "child.yaml", "base: parent.yaml\nrun: {seed: 5}\n"))
    config_lib.save(cfg, tmp_path / "run" / "config.yaml")
    saved = config_lib.read_yaml(tmp_path / "run" / "config.yaml")
    assert config_lib.BASE_KEY not in saved
    assert config_lib.load(tmp_path / "run" / "config.yaml") == cfg


@pytest.mark.parametrize("path", sorted(config_lib.CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_config_file_loads(path):
    assert isinstance(config_lib.load(path), config_lib.Config)


def test_siblings_differ_from_their_bases_in_exactly_the_keys_they_state(tmp_path):
    composed = [p for p in sorted(config_lib.CONFIG_DIR.glob("*.yaml"))
                if config_lib.BASE_KEY in config_lib.read_yaml(p)]
    assert {"robodesk_p2x.yaml", "robodesk_motif.yaml", "robodesk_sensei_tiny.yaml", "robodesk_p2x_tiny.yaml",
            "robodesk_motif_tiny.yaml"} <= {p.name for p in composed}
    for path in composed:
        own = config_lib.read_yaml(path)
        bases = own.pop(config_lib.BASE_KEY)
        bases = [bases] if isinstance(bases, str) else bases
        only_bases = write(tmp_path / f"bases_of_{path.name}",
                           yaml.safe_dump({config_lib.BASE_KEY: [str(path.parent / b) for b in bases]}))
        before = flat_values(config_lib.to_dict(config_lib.load(only_bases)))
        after = flat_values(config_lib.to_dict(config_lib.load(path)))
        changed = {key for key in before.keys() | after.keys() if before.get(key) != after.get(key)}
        stated = set(flat_values(own))
        # A stated mapping key (explore.weights: null over a table) changes the keys under it.
        covers = lambda s, c: c == s or c.startswith(s + ".")  # noqa: E731
        assert all(any(covers(s, c) for s in stated) for c in changed) and all(
            any(covers(s, c) for c in changed) for s in stated), \
            f"{path.name}: states {sorted(stated)}, changes {sorted(changed)}"


def test_removed_keys_say_what_replaced_them():
    for key in ("distributed", "coordinator_address", "num_processes", "process_id"):
        with pytest.raises(config_lib.ConfigError, match=rf"train\.{key}' was removed: .*--coordinator HOST:PORT"):
            config_lib.load(None, {"train": {key: None}})
