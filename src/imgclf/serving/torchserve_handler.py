"""The same handler as a TorchServe handler file (`torch-model-archiver --handler .../torchserve_handler.py`).

TorchServe instantiates the one class defined in the handler module, calls `initialize(context)` with the
extracted .mar directory as `system_properties["model_dir"]` (so the .mar carries model.pt, index_to_name.json and
imgclf.json as extra files), then `handle(data, context)` per batch: exactly the MMS contract.
"""

from __future__ import annotations

from imgclf.serving.environment import HandlerSettings
from imgclf.serving.handler import ImageClassifierHandler


class ImgclfTorchServeHandler(ImageClassifierHandler):
    """ImageClassifierHandler, defined here so TorchServe finds exactly one class in this module; TorchServe
    constructs it without arguments, so the settings are read here."""

    def __init__(self) -> None:
        super().__init__(HandlerSettings.from_env())
