"""Serving unit fixtures: a real artifact (random weights, 10 classes, 32 px) and a handler initialised on it."""

from __future__ import annotations

import pytest
from support.handler_calls import CLASSES, mms_context

from imgclf.artifact import ModelMeta, save_artifact
from imgclf.model import build_model
from imgclf.serving.environment import HandlerSettings
from imgclf.serving.handler import ImageClassifierHandler


@pytest.fixture(scope="session")
def artifact_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("artifact")
    save_artifact(build_model("resnet18", 10), ModelMeta.for_training("resnet18", 10, 32), CLASSES, out)
    return out


@pytest.fixture(scope="session")
def handler(artifact_dir):
    h = ImageClassifierHandler(HandlerSettings())
    h.initialize(mms_context(artifact_dir, [{}]))
    return h
