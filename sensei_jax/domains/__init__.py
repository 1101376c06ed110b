"""The domain registry: `run.domain` -> the `Domain` object that tells the pipeline everything about that env.

Adding a domain: its env under `sensei_jax/envs/<name>/` (the env contract, `envs.protocol`, and a config
dataclass), a module `sensei_jax/domains/<name>.py` that exports `DOMAIN` (a `Domain` subclass, see `base`), one
line in `DOMAINS` below and one field in the run config (`sensei_jax.config.Config`) for its section. Nothing
else in the pipeline names a domain (docs/architecture.md).

Looking a name up imports only its domain module; the env (jax, MuJoCo, NetHack) is imported when built.
"""

from __future__ import annotations

import importlib

from sensei_jax.domains.base import Domain

DOMAINS = {
    "robodesk": "sensei_jax.domains.robodesk",
    "minihack": "sensei_jax.domains.minihack",
    "toy": "sensei_jax.domains.toy",
}


def get(name: str) -> Domain:
    """The domain registered as `name`; a ValueError naming the known ones otherwise."""
    if name not in DOMAINS:
        raise ValueError(f"run.domain: unknown domain {name!r}; known: {', '.join(DOMAINS)}")
    return importlib.import_module(DOMAINS[name]).DOMAIN


def of(cfg) -> Domain:
    """The domain of run config `cfg` (`cfg.run.domain`)."""
    return get(cfg.run.domain)


__all__ = ["DOMAINS", "Domain", "get", "of"]
