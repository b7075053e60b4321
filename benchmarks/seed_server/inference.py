"""The seeds' inference.py, as deployed with PyTorchModel(entry_point='inference.py'): the stand-in's user module.

model_fn / input_fn / predict_fn / output_fn in the seeds' shape: ResNet-18 with a Sequential(Linear) head
loaded from model.pth, PIL decode of an image/jpeg body, Resize((224, 224)) + normalise inside predict_fn,
the raw logits returned as a JSON list. (Some seeds also fetched a JSON body's "url" with requests.get;
that branch is left out: the benchmark only sends image/jpeg and must not make outbound requests.)
"""

import io
import json
import os

import torch
import torchvision
from PIL import Image
from torch import nn
from torchvision import transforms

JPEG_CONTENT_TYPE = "image/jpeg"
NUM_CLASSES = int(os.environ.get("SEED_NUM_CLASSES", "10"))


def net():
    model = torchvision.models.resnet18(weights=None)  # the seeds: models.resnet18(pretrained=True)
    for param in model.parameters():
        param.requires_grad = False
    model.fc = nn.Sequential(nn.Linear(model.fc.in_features, NUM_CLASSES))
    return model


def model_fn(model_dir):
    model = net()
    with open(os.path.join(model_dir, "model.pth"), "rb") as f:
        model.load_state_dict(torch.load(f, map_location="cpu"))
    model.eval()
    return model


def input_fn(request_body, content_type=JPEG_CONTENT_TYPE):
    if content_type == JPEG_CONTENT_TYPE:
        return Image.open(io.BytesIO(request_body))
    raise Exception(f"Requested unsupported ContentType in content_type: {content_type}")


def predict_fn(input_object, model):
    test_transform = transforms.Compose(
        [
            transforms.Resize((224, 224)),
            transforms.ToTensor(),
            transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
        ]
    )
    input_object = test_transform(input_object.convert("RGB"))
    with torch.no_grad():
        prediction = model(input_object.unsqueeze(0))
    return prediction


def output_fn(prediction, accept="application/json"):
    return json.dumps(prediction.tolist()), accept
