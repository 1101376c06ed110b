"""Package-level public names that import their module only when first used.

A package's `__init__.py` lists what users write (`from sensei_jax.reward import RewardModel`) without importing
jax when only a config is read:

    __getattr__, __dir__, __all__ = lazy_exports(__name__, {"RewardModel": "sensei_jax.reward.model", ...})
"""

from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]],
                                                                   list[str]]:
    """(`__getattr__`, `__dir__`, `__all__`) for `package`: `exports` maps a public name to the module defining it."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module), name)

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__, sorted(exports)
