"""Config sections as data: a dataclass built from plain mappings with type checks, merged, and written back.

The ground floor of the config: the machinery every section's owner may use (`from_dict` to read a section that a
checkpoint or a summary stored) without reaching up to `sensei_jax.config`, the loader that composes all sections
into the run config. Unknown keys and values of the wrong type are `ConfigError`s that name the dotted key; keys
that were removed say what replaced them (`REMOVED_KEYS`).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, get_args, get_origin, get_type_hints


class ConfigError(ValueError):
    """A config file, key or value is invalid; the message names which."""


_JOB_FLAGS = ("a job of several processes is set on the command line, before the command: --coordinator HOST:PORT "
              "--num-processes N --process-id I, or --distributed auto (or the SENSEI_COORDINATOR, "
              "SENSEI_NUM_PROCESSES, SENSEI_PROCESS_ID, SENSEI_DISTRIBUTED variables)")
# Keys that once existed: a config still using one gets an error that says what replaced it.
# The exploration's data and update schedule moved to the `train` section, the one schedule that both `train` and
# `explore` read: old key -> its new home.
_SCHEDULE_MOVES = {
    "explore.batch_size": "train.batch_size",
    "explore.batch_length": "train.batch_length",
    "explore.train_ratio": "train.train_ratio",
    "explore.replay_capacity": "train.replay_capacity",
    "explore.prefill": "train.train_start and train.random_steps (set both to the old value)",
    "explore.collect_chunk": "train.collect_steps",
    "explore.log_every": "train.log_every",
    "explore.checkpoint_every": "train.save_every",
}
REMOVED_KEYS = {
    "train.distributed": _JOB_FLAGS,
    "train.coordinator_address": _JOB_FLAGS,
    "train.num_processes": _JOB_FLAGS,
    "train.process_id": _JOB_FLAGS,
    **{old: f"it moved to {new}, the schedule of both train and explore" for old, new in _SCHEDULE_MOVES.items()},
    **{f"explore.{mode}_weights": f"it moved to explore.weights.{mode}, a table of named reward sources (the old "
       f"[semantic, disagreement] pair [a, b] is {{semantic: a, disagreement: b}})" for mode in ("go", "explore")},
}


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Checks `value` against the annotation `tp` and returns it converted (lists to tuples, ints to floats)."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping of {tp.__name__} fields, got {value!r}")
        return from_dict(tp, value, prefix=key)
    if origin in (typing.Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(f"config key '{key}' has value {value!r}, which is none of {_type_name(tp)}")
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(f"config key '{key}' must be one of {list(get_args(tp))}, got {value!r}")
        return value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}' must be a list, got {value!r}")
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"config key '{key}' must have {len(args)} entries, got {len(value)}: {value!r}")
            items = [_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args))]
        else:
            item_tp = args[0] if args else Any
            items = [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping, got {value!r}")
        key_tp, value_tp = get_args(tp) or (Any, Any)
        return {_coerce(k, key_tp, key): _coerce(v, value_tp, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{key}' must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{key}' must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):
            # YAML 1.1 reads "1e-5" (no dot) as a string; accept any literal Python parses as a float.
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{key}' must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key '{key}' must be a string, got {value!r}")
        return value
    raise ConfigError(f"config key '{key}' has an annotation this loader does not handle: {_type_name(tp)}")


# Field metadata of a mapping key whose layers merge entry by entry (explore.weights); other mappings are replaced.
MERGE = "merge_entries"


def from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Builds dataclass `cls` from `data`, starting from its defaults. Unknown keys raise, naming the dotted key."""
    return merge(cls(), data, prefix=prefix)


def merge(cfg: Any, data: dict[str, Any], prefix: str = "") -> Any:
    """Returns a copy of dataclass `cfg` with the (possibly nested) values of `data` applied on top."""
    hints = get_type_hints(type(cfg))
    fields = {f.name for f in dataclasses.fields(cfg) if f.init}
    merged = {f.name for f in dataclasses.fields(cfg) if f.metadata.get(MERGE)}
    updates = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else str(name)
        if name not in fields and key in REMOVED_KEYS:
            raise ConfigError(f"config key '{key}' was removed: {REMOVED_KEYS[key]}")
        if name not in fields:
            raise ConfigError(f"unknown config key '{key}' (known keys here: {', '.join(sorted(fields))})")
        current = getattr(cfg, name)
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            updates[name] = merge(current, value, prefix=key)
        elif name in merged and isinstance(current, dict) and isinstance(value, dict):
            updates[name] = _coerce(_merge_mappings(current, value), hints[name], key)
        else:
            updates[name] = _coerce(value, hints[name], key)
    try:
        return dataclasses.replace(cfg, **updates)
    except (TypeError, ValueError) as error:
        if isinstance(error, ConfigError):
            raise
        raise ConfigError(f"invalid config section '{prefix or type(cfg).__name__}': {error}") from error


def _merge_mappings(below: dict, above: dict) -> dict:
    """`above`'s entries over `below`'s, nested mappings merged the same way."""
    merged = dict(below)
    for name, value in above.items():
        merged[name] = (_merge_mappings(merged[name], value) if isinstance(merged.get(name), dict)
                        and isinstance(value, dict) else value)
    return merged


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict (tuples as lists) suitable for YAML and JSON."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(cfg)
