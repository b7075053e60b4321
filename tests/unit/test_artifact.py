import os

import pytest
import torch

from imgclf import artifact
from imgclf.model import build_model

pytestmark = pytest.mark.unit


def test_artifact_round_trip_reproduces_the_outputs(tmp_path):
    net = build_model("resnet18", 4).eval()
    meta = artifact.ModelMeta.for_training("resnet18", 4, 64)
    artifact.save_artifact(net, meta, ["a", "b", "c", "d"], tmp_path)
    loaded = artifact.load_artifact(tmp_path)
    x = torch.randn(2, 3, 64, 64)
    assert torch.allclose(loaded.model(x), net(x), atol=1e-5)
    assert loaded.meta == meta and loaded.index_to_name == {0: "a", 1: "b", 2: "c", 3: "d"}
    assert sorted(os.listdir(tmp_path)) == ["imgclf.json", "index_to_name.json", "model.pt"]
