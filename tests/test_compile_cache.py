"""The persistent compilation cache: where it lives, how it is turned off, and that the command line turns it on;
the command line's CPU compiler flags."""

import subprocess
import sys
from pathlib import Path

import jax
import pytest
from jax_env import subprocess_env

from sensei_jax import compile_cache, run


@pytest.fixture
def restore_cache_config():
    before = (jax.config.jax_compilation_cache_dir, jax.config.jax_persistent_cache_min_compile_time_secs)
    yield
    jax.config.update("jax_compilation_cache_dir", before[0])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", before[1])


def test_directory_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("SENSEI_JAX_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert compile_cache.directory() == tmp_path / "sensei_jax" / "xla"
    monkeypatch.setenv("SENSEI_JAX_CACHE", str(tmp_path / "elsewhere"))
    assert compile_cache.directory() == tmp_path / "elsewhere"
    for off in ("off", "OFF", "0", ""):
        monkeypatch.setenv("SENSEI_JAX_CACHE", off)
        assert compile_cache.directory() is None


def test_the_command_line_turns_the_cache_on(monkeypatch, tmp_path, capsys, restore_cache_config):
    monkeypatch.setenv("SENSEI_JAX_CACHE", str(tmp_path / "xla"))
    jax.config.update("jax_compilation_cache_dir", None)
    assert run.main(["config"]) == 0
    capsys.readouterr()
    assert Path(jax.config.jax_compilation_cache_dir) == tmp_path / "xla"
    assert jax.config.jax_persistent_cache_min_compile_time_secs == 1.0


def test_cpu_flags_add_the_legacy_fusion_emitters_unless_chosen():
    assert compile_cache.cpu_flags("") == "--xla_cpu_use_fusion_emitters=false"
    assert compile_cache.cpu_flags("--xla_dump_to=/tmp/d") == "--xla_dump_to=/tmp/d --xla_cpu_use_fusion_emitters=false"
    chosen = "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=true"
    assert compile_cache.cpu_flags(chosen) == chosen  # the user's choice stands


def test_the_command_line_compiles_with_the_legacy_cpu_fusion_emitters(tmp_path):
    """A command started without XLA_FLAGS runs with the emitter flag (doctor reports the variable it sees)."""
    env = {k: v for k, v in subprocess_env().items() if k != "XLA_FLAGS"}
    done = subprocess.run([sys.executable, "-m", "sensei_jax.run", "doctor"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "XLA_FLAGS" in done.stdout and "--xla_cpu_use_fusion_emitters=false" in done.stdout, done.stdout
