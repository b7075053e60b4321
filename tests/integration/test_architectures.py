"""Any torchvision classifier by name: the head replaced per family, the weights' own preprocessing recorded, a
non-ResNet trained end to end whose artifact loads with `load_artifact` and predicts what training measured."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
import torchvision
from torchvision.transforms import InterpolationMode

from imgclf import model as m
from imgclf.artifact import META_FILE, ModelMeta, load_artifact, save_artifact
from imgclf.errors import UserError
from imgclf.hyperparameters import ARCHITECTURES, Hyperparameters
from imgclf.images import eval_transform, open_rgb
from imgclf.training import RunConfig, fit

pytestmark = pytest.mark.integration


def test_arch_choices_are_every_torchvision_classification_model():
    assert sorted(ARCHITECTURES) == sorted(torchvision.models.list_models(module=torchvision.models))
    assert ARCHITECTURES[:3] == ("resnet18", "resnet34", "resnet50")


@pytest.mark.parametrize(
    "arch, head, features",
    [
        ("efficientnet_b0", "classifier.1", 1280),
        ("mobilenet_v3_small", "classifier.3", 1024),
        ("convnext_tiny", "classifier.2", 768),
        ("resnet50", "fc", 2048),
        ("squeezenet1_1", "classifier.1", 512),  # a 1x1 Conv2d head, not a Linear
        ("googlenet", "fc", 1024),  # built without auxiliary heads: training returns plain logits
    ],
)
def test_the_head_is_replaced_for_each_family(arch, head, features):
    meta = ModelMeta.for_training(arch, 3, 64)
    net = m.build_model(arch, 3, model_kwargs=dict(meta.model_kwargs))
    assert m.head_path(net) == head
    net.train()
    out = net(torch.randn(2, 3, 64, 64))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 3)
    with torch.no_grad(), m.headless(net.eval()) as backbone:
        assert backbone(torch.randn(2, 3, 64, 64)).flatten(1).shape == (2, features)


def test_pretrained_imagenet_meta_records_the_weights_own_preprocessing():
    meta = ModelMeta.for_training("efficientnet_b4", 2, 380, "imagenet")  # metadata only: nothing downloaded
    assert (meta.image_size, meta.resize_size, meta.interpolation) == (380, 384, "bicubic")
    assert meta.weights == "EfficientNet_B4_Weights.IMAGENET1K_V1"
    assert meta.mean == (0.485, 0.456, 0.406) and meta.std == (0.229, 0.224, 0.225)
    transform = eval_transform(meta)
    assert transform.transforms[0].interpolation == InterpolationMode.BICUBIC
    assert ModelMeta.for_training("resnet50", 2, 224, "imagenet").resize_size == 232  # IMAGENET1K_V2's recipe
    assert ModelMeta.for_training("resnet18", 2, 224).resize_size == 256  # no weights: as before


def test_local_weights_file_loads_a_non_resnet_backbone_and_the_artifact_round_trips(tmp_path):
    source = torchvision.models.get_model("googlenet", weights=None, aux_logits=True, init_weights=False)
    torch.save(source.state_dict(), tmp_path / "googlenet.pth")  # torchvision layout, auxiliary heads included
    meta = ModelMeta.for_training("googlenet", 4, 64, str(tmp_path / "googlenet.pth"))
    assert dict(meta.model_kwargs)["transform_input"] is True  # what torchvision's googlenet weights expect
    net = m.build_model("googlenet", 4, str(tmp_path / "googlenet.pth"), model_kwargs=dict(meta.model_kwargs))
    assert torch.equal(net.conv1.conv.weight, source.conv1.conv.weight)
    save_artifact(net, meta, ["a", "b", "c", "d"], tmp_path / "model")
    loaded = load_artifact(tmp_path / "model")
    assert loaded.meta == meta and loaded.meta.input_shape == (3, 64, 64)
    x = torch.randn(2, 3, 64, 64)
    assert torch.allclose(loaded.model(x), net.eval()(x), atol=1e-5)


def test_older_artifacts_without_the_new_fields_still_load(tmp_path):
    net = m.build_model("resnet18", 2).eval()
    save_artifact(net, ModelMeta.for_training("resnet18", 2, 32), ["x", "y"], tmp_path)
    raw = json.loads((tmp_path / META_FILE).read_text())
    for new_field in ("interpolation", "model_kwargs", "weights"):
        del raw[new_field]
    (tmp_path / META_FILE).write_text(json.dumps(raw))
    loaded = load_artifact(tmp_path)
    assert loaded.meta.interpolation == "bilinear" and loaded.meta.model_kwargs == ()


def test_unknown_arch_and_an_image_size_the_arch_cannot_take_are_clear_errors(sample_data, tmp_path):
    with pytest.raises(UserError, match=r"Unknown arch 'mobilenet_v4'.*mobilenet_v3_\{large,small\}"):
        m.build_model("mobilenet_v4", 2)
    with pytest.raises(UserError, match="Did you mean efficientnet_b4"):
        Hyperparameters.from_mapping({"arch": "efficientnet-b4"})
    hp = Hyperparameters.from_mapping({"arch": "inception_v3", "image-size": "32", "pretrained-weights": "none"})
    cfg = RunConfig(train_dir=sample_data / "valid", model_dir=tmp_path / "m")
    with pytest.raises(UserError, match="inception_v3 cannot take image-size 32"):
        fit(hp, cfg)


def test_shufflenet_trains_and_its_artifact_predicts_what_training_measured(sample_data, tmp_path):
    # Fine-tuned from random init (the only option offline). Not mobilenet_v3 here: its BatchNorm momentum of 0.01
    # leaves the running statistics near their init after a few dozen steps, so a run this short evaluates at
    # chance (with ImageNet weights the statistics come from the weights). Its head is checked above.
    hp = Hyperparameters.from_mapping(
        {
            "arch": "shufflenet_v2_x0_5",
            "pretrained-weights": "none",
            "train-backbone": "true",
            "augment": "false",
            "image-size": "32",
            "epochs": "3",
            "lr": "0.003",
            "batch-size": "16",
            "sample": "400",
        }
    )
    cfg = RunConfig(train_dir=sample_data / "train", test_dir=sample_data / "test", model_dir=tmp_path / "model")
    result = fit(hp, cfg)
    assert result["test_accuracy"] > 0.3  # 10 classes, 3 short epochs from random init
    artifact = load_artifact(tmp_path / "model")
    assert artifact.meta.arch == "shufflenet_v2_x0_5" and m.head_path(artifact.model) == "fc"
    # Serving's path: eval_transform(meta) on the image file, the loaded model, index_to_name.
    transform = eval_transform(artifact.meta)
    images = sorted((sample_data / "test").rglob("*.png"))
    batch = torch.stack([transform(open_rgb(str(p))) for p in images])
    with torch.no_grad():
        predicted = artifact.model(batch).argmax(1).tolist()
    correct = sum(artifact.index_to_name[i] == p.parent.name for i, p in zip(predicted, images, strict=True))
    assert correct / len(images) == pytest.approx(result["test_accuracy"], abs=1e-6)
    # Seed 004's request: the client preprocesses and posts an (N, 3, H, W) float32 .npy; serving's decoder
    # hands back arrays of the artifact's input shape, which give the same answers.
    from imgclf.serving import decoders
    from imgclf.serving.limits import RequestLimits

    buf = io.BytesIO()
    np.save(buf, batch[:16].numpy().astype(np.float32))
    arrays = decoders.decode(buf.getvalue(), "application/x-npy", RequestLimits())
    assert all(a.shape == artifact.meta.input_shape for a in arrays)
    with torch.no_grad():
        from_npy = artifact.model(torch.from_numpy(np.stack(arrays))).argmax(1).tolist()
    assert from_npy == predicted[:16]
