"""The sagemaker-inference handler service MMS loads (`default_service_handler=imgclf.serving.handler_service`).

MMS needs exactly one class in this module. It wraps `ImageClassifierHandler` instead of the toolkit's
Transformer because the Transformer answers the requests of a batch one at a time (no shared forward pass) and
sets error status only on request 0.

Health: the model is loaded here, eagerly, in `initialize`, which MMS runs before it marks the worker READY;
MMS's /ping is healthy only while a READY worker exists, so /ping turns 200 only once a loaded worker can answer.
A model that fails to load must not leave a READY worker: MMS's loader swallows exceptions from `initialize`
(the worker would report READY with no model), so the worker process exits instead and the front-end retries it.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback

from sagemaker_inference.default_handler_service import DefaultHandlerService

from imgclf.serving.environment import HandlerSettings
from imgclf.serving.handler import ImageClassifierHandler

log = logging.getLogger(__name__)


class HandlerService(DefaultHandlerService):
    """MMS entry: initialize(context) once per worker (loads the model), handle(data, context) per batch."""

    def __init__(self) -> None:
        # The toolkit's constructor only stores a Transformer; ours is the TorchServe-style handler.
        self._service = ImageClassifierHandler(HandlerSettings.from_env())

    def initialize(self, context) -> None:
        try:
            self._service.initialize(context)
        except BaseException:  # noqa: BLE001 - a worker without a model must never report READY
            model_dir = context.system_properties.get("model_dir")
            print(f"imgclf: could not load the model from {model_dir}:\n{traceback.format_exc()}", file=sys.stderr)
            sys.stderr.flush()
            os._exit(1)

    def handle(self, data, context):
        return self._service.handle(data, context)
