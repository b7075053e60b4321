"""Issue 12: the artifact's files carry their sha256; a changed byte, a truncated file or hostile JSON is refused
by the loader and by `imgclf serve` before MMS starts, each naming the file."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from imgclf import artifact, checksums
from imgclf.artifact import ModelMeta, load_artifact, save_artifact
from imgclf.errors import UserError
from imgclf.model import build_model
from imgclf.serving.server import check_artifact

pytestmark = pytest.mark.unit


@pytest.fixture
def model_dir(tmp_path):
    out = tmp_path / "model"
    save_artifact(build_model("resnet18", 3), ModelMeta.for_training("resnet18", 3, 32), ["a", "b", "c"], out)
    return out


def test_the_artifact_records_the_sha256_of_its_files_and_loads(model_dir):
    recorded = json.loads((model_dir / "imgclf.json").read_text())[checksums.KEY]
    assert set(recorded) == {"model.pt", "index_to_name.json"}
    assert recorded["model.pt"] == checksums.sha256_file(model_dir / "model.pt")
    assert load_artifact(model_dir).index_to_name == {0: "a", 1: "b", 2: "c"}
    check_artifact(str(model_dir))


@pytest.mark.parametrize("name", ["model.pt", "index_to_name.json"])
def test_one_flipped_byte_is_refused_by_the_loader_and_by_serve_naming_the_file(model_dir, name):
    path = model_dir / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    for check in (lambda: load_artifact(model_dir), lambda: check_artifact(str(model_dir))):
        with pytest.raises(UserError, match=rf"{name} does not match the sha256"):
            check()


def test_a_truncated_model_is_refused(model_dir):
    path = model_dir / "model.pt"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(UserError, match="model.pt does not match"):
        check_artifact(str(model_dir))


@pytest.mark.parametrize(
    "change, message",
    [
        ({"num_classes": "3"}, "num_classes"),
        ({"num_classes": 10**9}, "num_classes"),
        ({"arch": ["resnet18"]}, "arch"),
        ({"std": [0, 1, 1]}, "std"),
        ({"mean": [1, 2]}, "mean"),
    ],
)
def test_imgclf_json_is_validated_before_any_weight_is_read(model_dir, change, message):
    meta_path = model_dir / "imgclf.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, **change}))
    for check in (lambda: artifact.load_meta(model_dir), lambda: check_artifact(str(model_dir))):
        with pytest.raises(UserError, match=message):
            check()


def test_serve_refuses_a_hand_edited_class_count_before_starting_a_worker(model_dir):
    # The checksums still match (imgclf.json records the others, not itself), so only validation catches it; before
    # MMS starts, not after the workers have crash-looped until SAGEMAKER_STARTUP_TIMEOUT.
    meta_path = model_dir / "imgclf.json"
    meta_path.write_text(json.dumps({**json.loads(meta_path.read_text()), "num_classes": 4}))
    with pytest.raises(UserError, match="index_to_name.json names 3 classes; the model's head has 4"):
        check_artifact(str(model_dir))


def test_index_to_name_must_match_the_head(model_dir):
    (model_dir / "index_to_name.json").write_text(json.dumps({"0": "a", "1": "b"}))
    with pytest.raises(UserError, match="names 2 classes; the model's head has 3"):
        artifact.load_index(model_dir, 3)
    (model_dir / "index_to_name.json").write_text(json.dumps({"0": "a", "x": "b", "2": "c"}))
    with pytest.raises(UserError, match="class index"):
        artifact.load_index(model_dir, 3)
    (model_dir / "index_to_name.json").write_text("[1, 2, 3]")
    with pytest.raises(UserError, match="must map class indices"):
        artifact.load_index(model_dir, 3)


def test_a_checksum_record_cannot_point_outside_the_model_directory(model_dir):
    with pytest.raises(UserError, match="not a file of the model directory"):
        checksums.verify(model_dir, {"../secret": "00"})


def test_serves_check_runs_without_torch(model_dir):
    # `imgclf serve`'s own process stays torch-free (seconds and ~300 MB less before MMS starts; the workers load it).
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['torchvision'] = None\n"
        "from imgclf.serving.server import check_artifact\n"
        f"check_artifact({str(model_dir)!r})\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
