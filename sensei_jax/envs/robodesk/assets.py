"""Robodesk's mesh and texture files: provisioned once from the `robodesk==1.0.0` source distribution.

The files are not part of this repository. On first use they are fetched with `pip download` (the package index is
the only network source the project relies on), the archive's sha256 is checked against the value recorded here,
and `robodesk/assets/{meshes,textures}` are unpacked into a cache directory. A local copy can be used instead by
pointing the config key `env.assets_dir` or the environment variable `SENSEI_ROBODESK_ASSETS` at a directory that
holds `meshes/` and `textures/` (for example an unpacked sdist's `robodesk/assets`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ENV_VAR = "SENSEI_ROBODESK_ASSETS"
CONFIG_KEY = "env.assets_dir"
SDIST_NAME = "robodesk-1.0.0.tar.gz"
SDIST_SHA256 = "5637e586404121b79a96b932773ace6178340f4f36e73d81461bde0f680db823"
_ASSET_PREFIX = "robodesk-1.0.0/robodesk/assets/"

# Every file the MJCF references; a directory missing any of them is rejected with the missing names.
REQUIRED_FILES = (
    "meshes/bin.stl", "meshes/button_holder.stl", "meshes/desk_main.stl", "meshes/desk_slide_wood.stl",
    "meshes/desk_slide_handle.stl", "meshes/desk_drawer_wood.stl", "meshes/desk_drawer_handle.stl",
    *(f"meshes/franka/visual_link{i}.stl" for i in range(8)),
    *(f"meshes/franka/collision_link{i}.stl" for i in range(8)),
    "meshes/franka/visual_hand.stl", "meshes/franka/collision_hand.stl", "meshes/franka/visual_finger.stl",
    "textures/white_marble_tile.png", "textures/metal.png", "textures/wood.png",
)


class AssetsError(RuntimeError):
    """The Robodesk assets could not be found or provisioned; the message says how to fix it."""


def default_cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "sensei_jax" / "robodesk"


def _missing(directory: Path) -> list[str]:
    return [name for name in REQUIRED_FILES if not (directory / name).is_file()]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _download_sdist(workdir: Path) -> Path:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--dest", str(workdir),
               "robodesk==1.0.0"]
    result = subprocess.run(command, capture_output=True, text=True)
    archive = workdir / SDIST_NAME
    if result.returncode != 0 or not archive.is_file():
        raise AssetsError(f"`{' '.join(command)}` failed (exit {result.returncode}): {result.stderr.strip()[-800:]}")
    return archive


def unpack_sdist(archive: Path, target: Path) -> Path:
    """Checks the sdist's sha256 and unpacks its `robodesk/assets` meshes and textures into `target`."""
    digest = _sha256(archive)
    if digest != SDIST_SHA256:
        raise AssetsError(f"{archive} has sha256 {digest}, expected {SDIST_SHA256} (robodesk==1.0.0 sdist)")
    staging = Path(tempfile.mkdtemp(prefix=".robodesk-", dir=target.parent))
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar.getmembers():
                if not member.isfile() or not member.name.startswith(_ASSET_PREFIX):
                    continue
                relative = member.name[len(_ASSET_PREFIX):]
                if not relative.startswith(("meshes/", "textures/")) or ".." in Path(relative).parts:
                    continue
                destination = staging / relative
                destination.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as src, open(destination, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        missing = _missing(staging)
        if missing:
            raise AssetsError(f"{archive} lacks the asset files {missing}")
        if target.exists() and not _missing(target):
            return target  # another process (a parallel test worker, a second job) provisioned it meanwhile
        if target.exists():
            shutil.rmtree(target)
        try:
            os.replace(staging, target)  # atomic: a half-unpacked cache is never visible
        except OSError:
            if _missing(target):  # not a concurrent provisioning that won the race
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def resolve_assets_dir(assets_dir: str | os.PathLike | None = None, download: bool = True) -> Path:
    """Returns a directory holding Robodesk's `meshes/` and `textures/`, provisioning it on first use.

    Order: the `assets_dir` argument (config `env.assets_dir`), then `$SENSEI_ROBODESK_ASSETS`, then the cache
    directory (filled from the robodesk==1.0.0 sdist via pip when empty and `download` is true).
    """
    for source, value in ((CONFIG_KEY, assets_dir), (ENV_VAR, os.environ.get(ENV_VAR))):
        if value:
            directory = Path(value).expanduser()
            missing = _missing(directory)
            if missing:
                raise AssetsError(f"{source}={directory} is not a Robodesk assets directory: missing {missing[:4]}"
                                  f"{' ...' if len(missing) > 4 else ''} (it must hold meshes/ and textures/ as in "
                                  f"the robodesk==1.0.0 sdist's robodesk/assets)")
            return directory
    cache = default_cache_dir()
    if not _missing(cache):
        return cache
    if not download:
        raise AssetsError(f"Robodesk assets not found in {cache}; set {CONFIG_KEY} or ${ENV_VAR} to a local copy")
    cache.parent.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(dir=cache.parent) as workdir:
            archive = _download_sdist(Path(workdir))
            return unpack_sdist(archive, cache)
    except (AssetsError, OSError, tarfile.TarError) as error:
        raise AssetsError(
            f"could not provision the Robodesk meshes and textures into {cache} from the robodesk==1.0.0 sdist "
            f"({error}). Point the config key {CONFIG_KEY} or the environment variable {ENV_VAR} at a directory "
            f"holding meshes/ and textures/ (e.g. an unpacked robodesk-1.0.0/robodesk/assets)") from error
