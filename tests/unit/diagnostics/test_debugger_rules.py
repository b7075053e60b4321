"""Debugger rules on real smdebug traces: tiny torch models trained under smdebug's own PyTorch hook.

Each pathological run must trigger its rule; a healthy run must trigger none while still having the tensors
every rule needs (status "ok", not "no data").
"""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn

from imgclf.diagnostics import debugger_rules as rules

pytestmark = pytest.mark.unit


def _data(n: int, seed: int, shift_labels: bool = False, noise: float = 1.5) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(4, 16, generator=torch.Generator().manual_seed(123)) * 2.5
    y = torch.randint(0, 4, (n,), generator=g)
    x = centers[y] + torch.randn(n, 16, generator=g) * noise
    return x, ((y + 1) % 4 if shift_labels else y)


def _mlp(depth: int, init_std: float | None) -> nn.Module:
    # Blocks named like torchvision's (`layer1.0.relu`) so smdebug names their inputs `<block>.relu_input_0`.
    layers, width = [], 16
    for i in range(depth):
        layers.append((f"block{i}", nn.Sequential(OrderedDict(fc=nn.Linear(width, 32), relu=nn.ReLU()))))
        width = 32
    layers.append(("head", nn.Linear(width, 4)))
    model = nn.Sequential(OrderedDict(layers))
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.Linear):
            if init_std is None:
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            else:
                nn.init.normal_(m.weight, std=init_std)
            nn.init.zeros_(m.bias)
    return model


def write_trace(
    out_dir,
    *,
    lr: float = 0.002,
    epochs: int = 4,
    steps_per_epoch: int = 10,
    depth: int = 2,
    init_std: float | None = None,
    shift_eval_labels: bool = False,
    train_interval: int = 5,
) -> str:
    """Train a small MLP with smdebug's hook (losses, gradients, relu inputs) and evaluate after every epoch."""
    from smdebug.pytorch import Hook, SaveConfig, SaveConfigMode, modes

    torch.manual_seed(0)
    model = _mlp(depth, init_std)
    loss_fn = nn.CrossEntropyLoss()
    hook = Hook(
        out_dir=str(out_dir),
        save_config=SaveConfig(
            mode_save_configs={
                modes.TRAIN: SaveConfigMode(save_interval=train_interval),
                modes.EVAL: SaveConfigMode(save_interval=1),
            }
        ),
        include_collections=["losses", "gradients", "relu_input"],
    )
    hook.get_collection("relu_input").include(".*relu_input")
    hook.register_module(model)
    hook.register_loss(loss_fn)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    x_valid, y_valid = _data(128, seed=2, shift_labels=shift_eval_labels)
    for epoch in range(epochs):
        x_train, y_train = _data(steps_per_epoch * 32, seed=100 + epoch)  # fresh samples: no memorising
        hook.set_mode(modes.TRAIN)
        model.train()
        for i in range(steps_per_epoch):
            xb, yb = x_train[i * 32 : (i + 1) * 32], y_train[i * 32 : (i + 1) * 32]
            opt.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
        hook.set_mode(modes.EVAL)
        model.eval()
        with torch.no_grad():
            for i in range(4):
                loss_fn(model(x_valid[i * 32 : (i + 1) * 32]), y_valid[i * 32 : (i + 1) * 32])
    hook.close()
    return str(out_dir)


def _by_name(path) -> dict[str, rules.RuleResult]:
    return {r.rule: r for r in rules.evaluate(path)}


SCENARIOS = {
    "healthy": {},
    "flat": {"lr": 0.0},
    "tiny_init": {"depth": 6, "init_std": 1e-3},
    "shifted_eval": {"shift_eval_labels": True},
    "long": {"epochs": 12, "lr": 0.05},
}


@pytest.fixture(scope="module")
def traces(tmp_path_factory) -> dict[str, str]:
    """One real hook-written trace per scenario, shared by the tests of this module."""
    root = tmp_path_factory.mktemp("traces")
    return {name: write_trace(root / name, **kw) for name, kw in SCENARIOS.items()}


def test_healthy_run_triggers_no_rule_and_every_rule_had_data(traces):
    for name, r in _by_name(traces["healthy"]).items():
        assert r.status == "ok", (name, r.as_dict())
        assert r.checks > 0, name


def test_flat_loss_triggers_loss_not_decreasing(traces):
    r = _by_name(traces["flat"])["LossNotDecreasing"]
    assert r.triggered and "did not decrease" in r.first.why
    assert r.first.mode == "EVAL"  # the rule prefers validation losses when they were saved


def test_tiny_initialisation_triggers_vanishing_gradient_and_poor_weight_initialization(traces):
    results = _by_name(traces["tiny_init"])
    assert results["VanishingGradient"].triggered
    assert "< threshold 1e-07" in results["VanishingGradient"].first.why
    pwi = results["PoorWeightInitialization"]
    assert pwi.triggered and pwi.first.mode == "TRAIN" and pwi.first.mode_step < 10


def test_validation_loss_far_above_training_loss_triggers_overfit(traces):
    r = _by_name(traces["shifted_eval"])["Overfit"]
    assert r.triggered and "(valid-train)/train" in r.first.why


def test_training_on_after_convergence_triggers_overtraining(traces):
    r = _by_name(traces["long"])["Overtraining"]
    assert r.triggered and "has not improved" in r.first.why


def test_rule_parameters_override_defaults(traces):
    (r,) = rules.evaluate(traces["shifted_eval"], ["overfit"], {"Overfit": {"ratio_threshold": 1e9}})
    assert r.parameters["ratio_threshold"] == 1e9 and r.parameters["patience"] == 1
    assert r.status == "ok"


def test_missing_gradients_are_reported_as_no_data_not_as_ok(tmp_path):
    from smdebug.pytorch import Hook, SaveConfig

    model, loss_fn = _mlp(1, None), nn.CrossEntropyLoss()
    hook = Hook(out_dir=str(tmp_path / "l"), save_config=SaveConfig(save_interval=1), include_collections=["losses"])
    hook.register_module(model)
    hook.register_loss(loss_fn)
    x, y = _data(64, 1)
    for _ in range(3):
        loss_fn(model(x), y).backward()
    hook.close()
    r = _by_name(str(tmp_path / "l"))["VanishingGradient"]
    assert r.status == "no data" and "gradients" in r.note
