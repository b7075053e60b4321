"""scripts/docker_orphans.py on a data root laid out like a stopped dockerd's overlay2 store."""

import hashlib
import importlib.util
import json

import pytest
from support import REPO

pytestmark = pytest.mark.unit

spec = importlib.util.spec_from_file_location("docker_orphans", REPO / "scripts" / "docker_orphans.py")
docker_orphans = importlib.util.module_from_spec(spec)
spec.loader.exec_module(docker_orphans)


def diff_id(name: str) -> str:
    return "sha256:" + hashlib.sha256(name.encode()).hexdigest()


class DataRoot:
    def __init__(self, root):
        self.root = root
        self.layerdb = root / "image/overlay2/layerdb/sha256"
        self.overlay = root / "overlay2"
        for d in (self.layerdb, self.overlay / "l", root / "image/overlay2/imagedb/content/sha256", root / "buildkit"):
            d.mkdir(parents=True, exist_ok=True)
        (root / "buildkit/snapshots.db").write_bytes(b"\x00bolt\x00")

    def layers(self, names: list[str]) -> list[str]:
        """Registers a chain of layers (one overlay2 directory each); returns the cache ids, bottom first."""
        caches, parent = [], ""
        for chain, name in zip(docker_orphans.chain_ids([diff_id(n) for n in names]), names, strict=True):
            entry = self.layerdb / chain.removeprefix("sha256:")
            entry.mkdir(exist_ok=True)
            (entry / "cache-id").write_text(f"dir-{name}")
            if parent:
                (entry / "parent").write_text(parent)
            (self.overlay / f"dir-{name}" / "diff").mkdir(parents=True, exist_ok=True)
            (self.overlay / f"dir-{name}" / "diff" / "file").write_bytes(b"x" * 1000)
            link = self.overlay / "l" / f"L{name}"
            if not link.is_symlink():
                link.symlink_to(f"../dir-{name}/diff")
            caches.append(f"dir-{name}")
            parent = chain
        return caches

    def image(self, names: list[str]) -> None:
        config = json.dumps({"rootfs": {"type": "layers", "diff_ids": [diff_id(n) for n in names]}})
        (self.root / "image/overlay2/imagedb/content/sha256" / hashlib.sha256(config.encode()).hexdigest()).write_text(
            config
        )


def test_only_layers_nothing_refers_to_are_removed(tmp_path):
    root = DataRoot(tmp_path)
    root.layers(["base", "python", "venv", "train-app"])
    root.layers(["base", "python", "venv", "serve-java"])
    root.image(["base", "python", "venv", "train-app"])
    root.image(["base", "python", "venv", "serve-java"])
    # what a killed build left: a builder stage on top of the base that no image or cache names any more
    root.layers(["base", "builder-apt", "builder-venv"])
    # a cache record BuildKit still holds, and its parent
    kept_by_buildkit = root.layers(["base", "cached-apt", "cached-venv"])
    (tmp_path / "buildkit/cache.db").write_bytes(b"\x01" + kept_by_buildkit[-1].encode() + b"\x02")
    # a container's read-write layer and init layer on the train image
    mount = tmp_path / "image/overlay2/layerdb/mounts/c0ffee"
    mount.mkdir(parents=True)
    (mount / "parent").write_text(docker_orphans.chain_ids([diff_id(n) for n in ["base", "python"]])[-1])
    (mount / "mount-id").write_text("rw-c0ffee")
    (mount / "init-id").write_text("rw-c0ffee-init")
    for d in ("rw-c0ffee", "rw-c0ffee-init"):
        (tmp_path / "overlay2" / d).mkdir()
    # a directory no layer record names at all
    (tmp_path / "overlay2" / "stray").mkdir()

    assert docker_orphans.main(["--data-root", str(tmp_path), "--remove"]) == 0

    left = {d.name for d in (tmp_path / "overlay2").iterdir()}
    assert left == {
        "l",
        "dir-base",
        "dir-python",
        "dir-venv",
        "dir-train-app",
        "dir-serve-java",
        "dir-cached-apt",
        "dir-cached-venv",
        "rw-c0ffee",
        "rw-c0ffee-init",
    }
    assert sorted(p.name for p in (tmp_path / "overlay2/l").iterdir()) == sorted(
        f"L{n}" for n in ["base", "python", "venv", "train-app", "serve-java", "cached-apt", "cached-venv"]
    )
    assert len(list(root.layerdb.iterdir())) == 7  # 9 registered, the two builder layers gone


def test_an_unreadable_image_config_means_nothing_is_judged(tmp_path):
    root = DataRoot(tmp_path)
    root.layers(["base", "orphan"])
    (tmp_path / "image/overlay2/imagedb/content/sha256/bad").write_text("{not json")
    assert docker_orphans.find_orphans(tmp_path) == ([], [])


def test_a_data_root_without_overlay2_is_left_alone(tmp_path, capsys):
    assert docker_orphans.main(["--data-root", str(tmp_path / "none"), "--remove"]) == 0
    assert "0 unreferenced layers" in capsys.readouterr().out
