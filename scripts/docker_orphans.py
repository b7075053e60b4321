#!/usr/bin/env python3
"""Find (and with --remove, delete) image layers that nothing refers to any more in a stopped Docker's overlay2 store.

A Docker daemon killed in the middle of a BuildKit build (a CI job's time limit, a machine's session ending) leaves
the layers that build had committed in the layer store with no image, container or build-cache record pointing at
them. `docker image prune`, `docker builder prune` and `docker system prune` cannot see them; each imgclf build
leaves about 6 GB that way, and a reused machine then runs out of disk ("no space left on device" mid-build).

A layer is kept when any of these refers to it: an image's rootfs chain (every prefix of it), a container's mount
(its parent chain, mount and init directories), or BuildKit's metadata (its chain ID or cache directory named in
buildkit/*.db). Everything else under layerdb/sha256 and overlay2/ goes. Only run it while dockerd is stopped:
a running daemon holds its layer store in memory (scripts/docker_setup.sh calls it just before starting one).

    python3 scripts/docker_orphans.py [--data-root /var/lib/docker] [--remove]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path


def chain_ids(diff_ids: list[str]) -> list[str]:
    """The layer store's chain IDs of an image's rootfs: chain(n) = sha256(chain(n-1) + " " + diff(n))."""
    chains: list[str] = []
    for diff_id in diff_ids:
        if not chains:
            chains.append(diff_id)
        else:
            chains.append("sha256:" + hashlib.sha256(f"{chains[-1]} {diff_id}".encode()).hexdigest())
    return chains


def _read(path: Path) -> str:
    return path.read_text().strip() if path.is_file() else ""


def _with_parents(chain_id: str, layerdb: Path, kept: set[str]) -> None:
    while chain_id and chain_id not in kept:
        kept.add(chain_id)
        chain_id = _read(layerdb / chain_id.removeprefix("sha256:") / "parent")


def find_orphans(data_root: Path) -> tuple[list[Path], list[Path]]:
    """(orphan layerdb entries, orphan overlay2 directories) under a stopped daemon's data root."""
    store = data_root / "image" / "overlay2"
    layerdb, overlay = store / "layerdb" / "sha256", data_root / "overlay2"
    if not layerdb.is_dir() or not overlay.is_dir():
        return [], []

    kept_chains: set[str] = set()
    for config in (store / "imagedb" / "content" / "sha256").glob("*"):
        try:
            diff_ids = json.loads(config.read_text()).get("rootfs", {}).get("diff_ids") or []
        except (OSError, ValueError):
            return [], []  # an image config we cannot read: refuse to judge anything
        for chain in chain_ids(diff_ids):
            _with_parents(chain, layerdb, kept_chains)

    kept_dirs: set[str] = set()  # overlay2 directory names
    for mount in (store / "layerdb" / "mounts").glob("*"):
        _with_parents(_read(mount / "parent"), layerdb, kept_chains)
        kept_dirs.update({_read(mount / "mount-id"), _read(mount / "init-id")})

    # BuildKit records layers by chain ID or cache directory in its bolt files; a plain byte search is enough to
    # err on the side of keeping.
    buildkit_bytes = b"".join(p.read_bytes() for p in (data_root / "buildkit").glob("*.db"))

    for entry in layerdb.iterdir():
        cache_id = _read(entry / "cache-id")
        if entry.name.encode() in buildkit_bytes or (cache_id and cache_id.encode() in buildkit_bytes):
            _with_parents(f"sha256:{entry.name}", layerdb, kept_chains)

    orphan_layers = [e for e in layerdb.iterdir() if f"sha256:{e.name}" not in kept_chains]
    kept_dirs.update(_read(layerdb / c.removeprefix("sha256:") / "cache-id") for c in kept_chains)
    orphan_dirs = [
        d
        for d in overlay.iterdir()
        if d.name != "l"
        and d.name.removesuffix("-init") not in kept_dirs
        and d.name.removesuffix("-init").encode() not in buildkit_bytes
    ]
    return orphan_layers, orphan_dirs


def _size(path: Path) -> int:
    return sum(p.lstat().st_size for p in path.rglob("*") if not p.is_symlink() and p.is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, default=Path("/var/lib/docker"))
    parser.add_argument("--remove", action="store_true", help="delete them (dockerd must be stopped)")
    args = parser.parse_args(argv)

    layers, dirs = find_orphans(args.data_root)
    size = sum(_size(d) for d in dirs)
    verb = "removing" if args.remove else "found"
    print(f"docker_orphans: {verb} {len(layers)} unreferenced layers, {len(dirs)} directories, {size / 1e9:.1f} GB")
    if args.remove:
        for path in [*layers, *dirs]:
            shutil.rmtree(path, ignore_errors=True)
        links = args.data_root / "overlay2" / "l"
        for link in links.glob("*") if links.is_dir() else []:
            if link.is_symlink() and not link.exists():
                link.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
