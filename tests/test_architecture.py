"""The package's shape: no import circles, libraries never import stages, a config reads without jax, the public
names import from package level, and the envs satisfy the env contract.

The import graph is read from the source with `ast` (imports at module level and inside functions alike), so these
checks import nothing; the jax-free checks run in fresh interpreters, and only the public-name and env-contract
checks load the modules they name.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import os
import pkgutil
import subprocess
import sys
import textwrap
import typing
from pathlib import Path

import jax
import pytest

from sensei_jax.envs.protocol import Env, EnvState, RestorableEnv
from sensei_jax.pipeline import stages as stage_registry

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "sensei_jax"
LIBRARIES = ("envs", "vlm", "reward", "dreamer", "explore", "annotators")
# Every command's module (the stage registry) and the runner: what benchmarks must not import.
STAGE_MODULES = tuple(sorted({stage.module for stage in stage_registry.REGISTRY} | {stage_registry.RUNNER_MODULE}))


# -----------------------------------------------------------------------------------------------------------------
# The import graph


def _module_files() -> dict[str, Path]:
    """Dotted name -> file of every module under sensei_jax/ (a package by its __init__.py)."""
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


MODULES = _module_files()


def imported_modules(path: Path, name: str | None = None) -> list[tuple[str, int]]:
    """(module, line) for every import in the file, wherever it stands. `from x import y` names x.y when that is a
    module under sensei_jax/, else x; relative imports are resolved against `name`, the file's dotted name."""
    package = ""
    if name is not None:
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            for alias in node.names:
                submodule = f"{module}.{alias.name}"
                found.append((submodule if submodule in MODULES else module, node.lineno))
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the sensei_jax modules it imports (itself excluded)."""
    return {name: {target for target, _ in imported_modules(path, name) if target in MODULES and target != name}
            for name, path in MODULES.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Import circles [a, b, ..., a]: for each module not yet in a reported circle, the shortest one through it."""
    cycles: list[list[str]] = []
    seen: set[str] = set()
    for start in sorted(graph):
        if start in seen:
            continue
        parent: dict[str, str] = {}
        frontier = [start]
        while frontier and start not in parent:
            following = []
            for module in frontier:
                for target in sorted(graph[module]):
                    if target not in parent:
                        parent[target] = module
                        following.append(target)
            frontier = following
        if start in parent:
            cycle = [start]
            while cycle[-1] != start or len(cycle) == 1:
                cycle.append(parent[cycle[-1]])
            cycles.append(cycle[::-1])
            seen.update(cycle)
    return cycles


def test_the_graph_sees_function_level_and_relative_imports(tmp_path):
    source = tmp_path / "sample.py"
    source.write_text(textwrap.dedent("""
        import sensei_jax.reward.model
        from sensei_jax.vlm import params
        from sensei_jax.vlm.model import LlavaModel

        def load():
            from . import train
            from .dataset import PairDataset
    """))
    found = {module for module, _ in imported_modules(source, "sensei_jax.reward.sample")}
    assert found == {"sensei_jax.reward.model", "sensei_jax.vlm.params", "sensei_jax.vlm.model",
                     "sensei_jax.reward.train", "sensei_jax.reward.dataset"}
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}) == [["a", "b", "c", "a"],
                                                                                        ["e", "e"]]
    assert find_cycles({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


def test_no_import_cycles():
    cycles = find_cycles(import_graph())
    assert not cycles, "import circles:\n  " + "\n  ".join(" -> ".join(cycle) for cycle in cycles)


# -----------------------------------------------------------------------------------------------------------------
# Layering: stages call libraries, libraries never call stages


def _offending_imports(files: list[Path], forbidden) -> list[str]:
    problems = set()
    for path in files:
        relative = path.relative_to(ROOT)
        name = ".".join(relative.with_suffix("").parts).removesuffix(".__init__")
        for module, line in imported_modules(path, name):
            if forbidden(module):
                problems.add(f"{relative}:{line} imports {module}")
    return sorted(problems)


def _within(module: str, *prefixes: str) -> bool:
    return any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes)


def test_libraries_never_import_the_pipeline_or_the_cli():
    files = [path for library in LIBRARIES for path in sorted((PACKAGE / library).rglob("*.py"))]
    problems = _offending_imports(files, lambda m: _within(m, "sensei_jax.pipeline", "sensei_jax.run"))
    assert not problems, "libraries import stages or the CLI:\n  " + "\n  ".join(problems)


def test_the_pipeline_never_imports_the_cli():
    files = sorted((PACKAGE / "pipeline").rglob("*.py"))
    problems = _offending_imports(files, lambda m: _within(m, "sensei_jax.run"))
    assert not problems, "the pipeline imports the CLI module:\n  " + "\n  ".join(problems)


def test_benchmarks_import_libraries_not_stages():
    problems = _offending_imports(sorted((ROOT / "benchmarks").glob("*.py")),
                                  lambda m: _within(m, *STAGE_MODULES, "sensei_jax.run"))
    assert not problems, "benchmarks import stage modules:\n  " + "\n  ".join(problems)


def test_domains_sit_between_the_envs_and_the_stages():
    """A domain module reads envs (and the preference labels); the annotators, the pipeline and the CLI ask the
    domain, never the other way round, and nothing in it loads the config loader or a model."""
    upward = ("sensei_jax.pipeline", "sensei_jax.run", "sensei_jax.config", "sensei_jax.annotators",
              "sensei_jax.vlm", "sensei_jax.dreamer", "sensei_jax.explore")
    problems = _offending_imports(sorted((PACKAGE / "domains").rglob("*.py")), lambda m: _within(m, *upward))
    assert not problems, "domains import a higher floor:\n  " + "\n  ".join(problems)
    envs = _offending_imports(sorted((PACKAGE / "envs").rglob("*.py")), lambda m: _within(m, "sensei_jax.domains"))
    assert not envs, "envs import the domain registry:\n  " + "\n  ".join(envs)


def test_the_config_loader_sits_on_top():
    """`sensei_jax.config` composes every section, so only the stages and the CLI import it; a library reads a
    stored section with `sensei_jax.sections`."""
    files = [path for path in sorted(PACKAGE.rglob("*.py"))
             if not _within(".".join(path.relative_to(ROOT).with_suffix("").parts), "sensei_jax.pipeline",
                            "sensei_jax.run", "sensei_jax.config")]
    problems = _offending_imports(files, lambda m: m == "sensei_jax.config")
    assert not problems, "modules below the loader import it:\n  " + "\n  ".join(problems)


def test_annotators_depend_on_the_vlm_one_way():
    problems = _offending_imports(sorted((PACKAGE / "vlm").rglob("*.py")),
                                  lambda m: _within(m, "sensei_jax.annotators"))
    assert not problems, "the vlm package imports annotators:\n  " + "\n  ".join(problems)


def domain_name_branches(path: Path, names, root: Path = ROOT) -> list[str]:
    """`file:line` of every comparison with a domain's name as a string literal (`x == "minihack"`,
    `domain in ("robodesk", ...)`) and every call of the old `is_minihack` helper in the file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            literals = [c.value for o in operands for c in ([o] if isinstance(o, ast.Constant) else
                                                            getattr(o, "elts", [])) if isinstance(c, ast.Constant)]
            if any(value in names for value in literals):
                found.append(f"{path.relative_to(root)}:{node.lineno}")
        elif isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) == "is_minihack":
            found.append(f"{path.relative_to(root)}:{node.lineno}")
    return found


def test_no_branch_on_a_domain_name_outside_the_registry(tmp_path):
    from sensei_jax.domains import DOMAINS

    sample = tmp_path / "sample.py"
    sample.write_text("if cfg.run.domain == 'minihack':\n    pass\nok = kind in ('toy', 'other')\nis_minihack(cfg)\n"
                      "fine = cfg.train.env == 'point_reach'\n")
    assert domain_name_branches(sample, DOMAINS, tmp_path) == ["sample.py:1", "sample.py:3", "sample.py:4"]
    files = [path for path in sorted(PACKAGE.rglob("*.py")) if not _within(
        ".".join(path.relative_to(ROOT).with_suffix("").parts), "sensei_jax.domains")]
    files += sorted((ROOT / "benchmarks").glob("*.py"))
    problems = [hit for path in files for hit in domain_name_branches(path, DOMAINS)]
    assert not problems, "branches on a domain's name (ask `sensei_jax.domains` instead):\n  " + "\n  ".join(problems)


# -----------------------------------------------------------------------------------------------------------------
# What stays free of jax, and the public names


def _run_without_jax(code: str, what: str) -> subprocess.CompletedProcess:
    """Runs `code` in a fresh interpreter that imports this checkout's sensei_jax, then fails if jax got imported,
    naming the sensei_jax lines on the stack when it was."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    program = "\n".join([_WHO_IMPORTS_JAX, textwrap.dedent(code), f"assert_no_jax({what!r})", "print('no jax')"])
    return subprocess.run([sys.executable, "-c", program], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


# Records, for the failure message, which sensei_jax files were on the stack when jax was first imported.
_WHO_IMPORTS_JAX = """
import sys, traceback

class _Witness:
    culprit = None

    def find_spec(self, name, path=None, target=None):
        if name == "jax" and _Witness.culprit is None:
            _Witness.culprit = [f"{frame.filename}:{frame.lineno}" for frame in traceback.extract_stack()
                                if "sensei_jax" in frame.filename]
        return None

sys.meta_path.insert(0, _Witness())

def assert_no_jax(what):
    if "jax" in sys.modules:
        raise SystemExit(f"{what} imported jax, via " + " <- ".join(reversed(_Witness.culprit or ["?"])))
"""


@pytest.mark.parametrize("code", [
    "import sensei_jax.config; sensei_jax.config.load(None, [])",
    "import sensei_jax.dreamer",
    "import sensei_jax.envs, sensei_jax.envs.robodesk, sensei_jax.reward, sensei_jax.vlm",
    "from sensei_jax.envs import Env, EnvState, RestorableEnv",
])
def test_does_not_import_jax(code):
    result = _run_without_jax(code, code)
    assert result.returncode == 0 and result.stdout.strip() == "no jax", result.stdout + result.stderr


PUBLIC = {
    "sensei_jax.vlm": {"LlavaModel": "sensei_jax.vlm.model", "LlavaConfig": "sensei_jax.vlm.llava_config",
                       "LlavaProcessor": "sensei_jax.vlm.processor"},
    "sensei_jax.reward": {"RewardModel": "sensei_jax.reward.model", "PairDataset": "sensei_jax.reward.dataset",
                          "RewardConfig": "sensei_jax.reward.config"},
    "sensei_jax.dreamer": {"Agent": "sensei_jax.dreamer.agent", "Trainer": "sensei_jax.dreamer.loop",
                           "DreamerConfig": "sensei_jax.dreamer.config",
                           "TrainConfig": "sensei_jax.dreamer.train_config"},
    "sensei_jax.envs": {"Env": "sensei_jax.envs.protocol", "RestorableEnv": "sensei_jax.envs.protocol",
                        "Robodesk": "sensei_jax.envs.robodesk.env", "PointReach": "sensei_jax.envs.toy.env"},
    "sensei_jax.envs.robodesk": {"Robodesk": "sensei_jax.envs.robodesk.env", "TASKS": "sensei_jax.envs.robodesk.tasks",
                                 "RobodeskConfig": "sensei_jax.envs.robodesk.config"},
}


@pytest.mark.parametrize("package", sorted(PUBLIC))
def test_public_names_import_from_the_package(package):
    module = importlib.import_module(package)
    for name, home in PUBLIC[package].items():
        namespace: dict = {}
        exec(f"from {package} import {name}", namespace)
        assert namespace[name] is getattr(importlib.import_module(home), name), f"{package}.{name}"
    # Every listed name resolves, and none hides a submodule of the same name (`from package import x` would
    # then give the object instead of the module).
    submodules = {info.name for info in pkgutil.iter_modules(module.__path__)}
    for name in module.__all__:
        assert getattr(module, name) is not None, f"{package}.{name}"
        assert name not in submodules, f"{package}.{name} shadows the submodule {package}.{name}"
    assert set(PUBLIC[package]) <= set(dir(module))
    with pytest.raises(AttributeError, match="no_such_name"):
        getattr(module, "no_such_name")


# -----------------------------------------------------------------------------------------------------------------
# The env contract


def _protocol_members(protocol: type) -> dict[str, typing.Any]:
    """Member name -> its definition (a function, a property, or the annotation of a data attribute)."""
    members = {}
    for klass in reversed(protocol.__mro__):
        if klass in (object, typing.Protocol, typing.Generic) or not getattr(klass, "_is_protocol", False):
            continue
        members.update(getattr(klass, "__annotations__", {}))
        members.update({k: v for k, v in vars(klass).items() if not k.startswith("_")})
    return members


def contract_violations(cls: type, protocol: type) -> list[str]:
    """What `cls` lacks of `protocol`: missing members, and methods that cannot be called the way the protocol
    declares them (every declared parameter passed positionally, nothing else required)."""
    problems = []
    for name, declared in _protocol_members(protocol).items():
        if not hasattr(cls, name):
            problems.append(f"{cls.__name__} has no {name}")
            continue
        if not inspect.isfunction(declared):
            continue
        provided = getattr(cls, name)
        if not callable(provided):
            problems.append(f"{cls.__name__}.{name} is not a method")
            continue
        wanted = list(inspect.signature(declared).parameters)[1:]
        try:
            inspect.signature(provided).bind(None, *wanted)
        except TypeError as error:
            problems.append(f"{cls.__name__}.{name}{inspect.signature(provided)} cannot be called as "
                            f"{name}({', '.join(wanted)}): {error}")
    return problems


def test_protocols_list_what_the_trainer_and_collection_use():
    assert set(_protocol_members(Env)) == {"action_size", "observation_spec", "reset_batch", "step"}
    assert set(_protocol_members(RestorableEnv)) - set(_protocol_members(Env)) == {"physics_state", "restore",
                                                                                    "render", "scene"}
    assert set(_protocol_members(EnvState)) == {"obs", "reward", "done", "info"}


def test_robodesk_satisfies_the_restorable_env_contract():
    from sensei_jax.envs.robodesk.env import Robodesk, State

    assert contract_violations(Robodesk, RestorableEnv) == []
    fields = {field.name for field in State.__dataclass_fields__.values()}
    assert {"obs", "reward", "done", "info"} <= fields


def test_the_toy_env_satisfies_the_env_contract():
    from sensei_jax.envs.toy import PointReach

    env = PointReach()
    assert contract_violations(PointReach, Env) == []
    assert isinstance(env, Env) and not isinstance(env, RestorableEnv)
    assert isinstance(jax.eval_shape(lambda key: env.reset_batch(key, 3), jax.random.key(0)), EnvState)


def test_contract_violations_names_what_is_missing():
    class Incomplete:
        action_size = 2

        def observation_spec(self):
            return {}

        def reset_batch(self, key):
            return None

    problems = contract_violations(Incomplete, Env)
    assert any("has no step" in p for p in problems), problems
    assert any("reset_batch" in p and "cannot be called" in p for p in problems), problems
    assert not isinstance(Incomplete(), Env)
