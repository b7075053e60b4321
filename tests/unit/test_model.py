import time

import pytest
import torch

from imgclf import model as m
from imgclf.errors import UserError

pytestmark = pytest.mark.unit


def test_pretrained_weights_from_a_local_file_load_the_backbone(tmp_path):
    source = m.build_model("resnet18", 1000)  # a stand-in for ImageNet weights, 1000-class head
    torch.save({"state_dict": source.state_dict()}, tmp_path / "w.pth")
    net = m.build_model("resnet18", 7, str(tmp_path / "w.pth"))
    assert torch.equal(net.conv1.weight, source.conv1.weight)
    assert net.fc.out_features == 7


def test_weights_for_another_architecture_are_refused(tmp_path):
    torch.save(m.build_model("resnet34", 10).state_dict(), tmp_path / "w.pth")
    with pytest.raises(UserError, match="do not fit resnet18"):
        m.build_model("resnet18", 10, str(tmp_path / "w.pth"))


def test_missing_or_garbage_weights_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        m.build_model("resnet18", 2, str(tmp_path / "nope.pth"))
    (tmp_path / "junk.pth").write_text("junk")
    with pytest.raises(UserError, match="not a readable PyTorch state_dict"):
        m.build_model("resnet18", 2, str(tmp_path / "junk.pth"))


def test_imagenet_download_failure_is_a_clear_error_not_a_hang(tmp_path, monkeypatch):
    # Nothing can be downloaded here; a proxy on a closed loopback port makes the failure immediate.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    start = time.monotonic()
    with pytest.raises(UserError, match="Could not get ImageNet weights for resnet18.*pretrained-weights"):
        m.build_model("resnet18", 2, "imagenet")
    assert time.monotonic() - start < m.DOWNLOAD_TIMEOUT_S


def test_headless_returns_backbone_features_and_restores_the_head():
    net = m.build_model("resnet18", 3).eval()
    with m.headless(net) as backbone:
        assert backbone(torch.randn(1, 3, 32, 32)).shape == (1, 512)
    assert net(torch.randn(1, 3, 32, 32)).shape == (1, 3)


def test_unknown_architecture_lists_the_valid_ones():
    with pytest.raises(UserError, match="resnet18, resnet34, resnet50"):
        m.build_model("alexnet2", 2)
