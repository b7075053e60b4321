"""The two Dockerfiles keep their shared block identical: that is what makes BuildKit build it once and the two
images share the venv layer (checked on real images in tests/container/test_image_hygiene.py)."""

import re

import pytest
from support import REPO

pytestmark = pytest.mark.unit


def shared_block(role: str) -> str:
    text = (REPO / f"Dockerfile.{role}").read_text()
    found = re.search(r"^# >>> shared.*?^# <<< shared$", text, flags=re.S | re.M)
    assert found, f"Dockerfile.{role} has no '# >>> shared' ... '# <<< shared' block"
    return found.group(0)


def base_image_default(role: str) -> str:
    return re.search(r"^ARG BASE_IMAGE=(\S+)$", (REPO / f"Dockerfile.{role}").read_text(), flags=re.M).group(1)


def test_train_and_serve_share_the_builder_and_the_venv_layer():
    assert shared_block("train") == shared_block("serve")
    assert base_image_default("train") == base_image_default("serve")
    block = shared_block("train")
    assert block.rstrip().splitlines()[-2] == "COPY --from=builder /opt/venv /opt/venv"
    assert "docker/requirements.txt" in block  # one requirements list, so one venv


def test_train_image_verifies_baked_weights_before_linking_them_into_the_cache():
    # Issue 12: the checksum build argument reaches the check (`imgclf.checksums bake`, tested in
    # tests/unit/test_pretrained_checksums.py), which runs on the baked files before anything uses them.
    text = (REPO / "Dockerfile.train").read_text()
    final = text[text.rindex("\nFROM ") :]
    copied = final.index("COPY --from=weights /opt/imgclf/weights /opt/imgclf/weights")
    declared = final.index("\nARG PRETRAINED_WEIGHTS_SHA256=\n")
    bake = final.index('python -m imgclf.checksums bake /opt/imgclf/weights "${PRETRAINED_WEIGHTS_SHA256}"')
    linked = final.index("/opt/imgclf/torch/hub/checkpoints/")
    assert copied < declared < bake < linked
    assert "! -name SHA256SUMS" in final[bake:]  # the record is not a weights file
    script = (REPO / "scripts/build_push.sh").read_text()
    assert '--pretrained-weights-sha256) need_value "$@"; WEIGHTS_SHA256=$2' in script
    assert '--build-arg "PRETRAINED_WEIGHTS_SHA256=$WEIGHTS_SHA256"' in script
