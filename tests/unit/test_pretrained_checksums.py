"""Issue 12: pretrained weights baked into the train image are verified at build time (`python -m imgclf.checksums
bake`, what Dockerfile.train runs) against PRETRAINED_WEIGHTS_SHA256 or torchvision's hash-prefixed file name,
and again before training loads them (weights-only), so a corrupt or swapped file is refused naming it."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from imgclf import checksums
from imgclf import model as m
from imgclf.errors import UserError

pytestmark = pytest.mark.unit


def weights_file(directory, name: str = "", arch: str = "resnet18"):
    """A real state_dict file; with no `name`, torchvision's style: <arch>-<first 8 hex of its sha256>.pth."""
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / "w.tmp"
    torch.save(m.build_model(arch, 1000).state_dict(), tmp)
    name = name or f"{arch}-{checksums.sha256_file(tmp)[:8]}.pth"
    return tmp.rename(directory / name)


def flip_a_byte(path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_bake_accepts_torchvision_named_weights_and_records_the_full_sha256(tmp_path):
    path = weights_file(tmp_path / "weights")
    (tmp_path / "weights" / "README.md").write_text("not weights")
    assert checksums.bake(tmp_path / "weights") == [f"{checksums.sha256_file(path)}  {path.name}"]
    assert (tmp_path / "weights" / checksums.SUMS).read_text().split() == [checksums.sha256_file(path), path.name]


def test_bake_refuses_a_file_that_does_not_match_its_torchvision_name(tmp_path):
    path = weights_file(tmp_path / "weights")
    flip_a_byte(path)
    expected = rf"{path.name} have sha256 [0-9a-f]{{64}}, but torchvision's file name expects"
    with pytest.raises(UserError, match=expected):
        checksums.bake(tmp_path / "weights")
    assert not (tmp_path / "weights" / checksums.SUMS).exists()


@pytest.mark.parametrize("digits", [8, 64])
def test_bake_checks_the_build_argument_full_or_prefix(tmp_path, digits):
    path = weights_file(tmp_path / "weights", name="my-backbone.pth")
    digest = checksums.sha256_file(path)
    assert checksums.bake(tmp_path / "weights", digest[:digits].upper()) == [f"{digest}  my-backbone.pth"]
    wrong = ("0" if digest[0] != "0" else "1") + digest[1:digits]
    with pytest.raises(UserError, match=f"PRETRAINED_WEIGHTS_SHA256 expects {wrong}"):
        checksums.bake(tmp_path / "weights", wrong)


def test_bake_needs_a_checksum_source_and_a_file_to_check(tmp_path):
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "README.md").write_text("the default: nothing baked")
    assert checksums.bake(weights) == []  # no weights, nothing to check
    with pytest.raises(UserError, match="SHA256 is set but no PRETRAINED_WEIGHTS file"):
        checksums.bake(weights, "f37072fd")
    weights_file(weights, name="backbone-20240101-final.pth")
    with pytest.raises(UserError, match="have no checksum to verify: pass --build-arg PRETRAINED_WEIGHTS_SHA256"):
        checksums.bake(weights)
    with pytest.raises(UserError, match="is not a sha256"):
        checksums.bake(weights, "not-hex")


def test_the_build_step_exits_non_zero_with_the_reason(tmp_path):
    path = weights_file(tmp_path / "weights", name="backbone.pth")
    run = [sys.executable, "-m", "imgclf.checksums", "bake", str(tmp_path / "weights")]
    wrong = subprocess.run([*run, "deadbeef"], capture_output=True, text=True)
    assert wrong.returncode == 1
    assert "backbone.pth have sha256" in wrong.stderr and "The image build stops here." in wrong.stderr
    right = subprocess.run([*run, checksums.sha256_file(path)], capture_output=True, text=True)
    assert right.returncode == 0, right.stderr
    assert "verified pretrained weights" in right.stdout


def test_training_refuses_baked_weights_changed_after_the_build(tmp_path):
    path = weights_file(tmp_path / "weights", name="backbone.pth")
    checksums.bake(tmp_path / "weights", checksums.sha256_file(path))
    assert m.build_model("resnet18", 3, str(path)).fc.out_features == 3
    flip_a_byte(path)
    with pytest.raises(UserError, match=r"backbone.pth have sha256 .*/SHA256SUMS \(recorded when the image was built"):
        m.build_model("resnet18", 3, str(path))


def test_a_user_file_name_is_not_read_as_a_checksum(tmp_path):
    path = weights_file(tmp_path, name="resnet18-20240101.pth")  # looks like torchvision's hash, is a date
    assert not checksums.verify_pretrained(path)
    assert m.build_model("resnet18", 2, str(path)).fc.out_features == 2


def test_imagenet_weights_from_the_cache_are_verified_then_loaded_weights_only(tmp_path, monkeypatch):
    # The train image links baked weights into TORCH_HOME's cache under torchvision's name; torch.hub would load a
    # cached file unchecked, so a corrupted one must be refused before it is unpickled.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")  # nothing is downloaded in this test
    url_name = m.torchvision.models.get_model_weights("resnet18").DEFAULT.url.rsplit("/", 1)[1]
    cached = tmp_path / "hub" / "checkpoints" / url_name
    baked = weights_file(tmp_path / "baked")
    checksums.bake(tmp_path / "baked")
    cached.parent.mkdir(parents=True)
    cached.symlink_to(baked)  # as Dockerfile.train links it; SHA256SUMS beside the target is found
    assert m.build_model("resnet18", 4, "imagenet").fc.out_features == 4
    flip_a_byte(baked)
    with pytest.raises(UserError, match=rf"{url_name} \(-> .*/{baked.name}\) have sha256"):
        m.build_model("resnet18", 4, "imagenet")

    cached.unlink()
    cached.write_bytes(b"\x80\x02 not the file torchvision published")  # a plain cached file: its name is checked
    with pytest.raises(UserError, match=f"{url_name} have sha256 .* torchvision's file name expects"):
        m.build_model("resnet18", 4, "imagenet")
