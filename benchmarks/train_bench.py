"""Training speed, side by side in one run: the seeds' loop vs imgclf (defaults) vs imgclf with augmentation.

All three train the same data (the embedded digits at 224 px, a per-class subset so a run fits a few minutes on
2 cores), the same epochs, batch size, learning rate and seed, from the same generated backbone weights file
(pretrained ImageNet weights cannot be downloaded here; see `make_weights`: the backbone's speed does not
depend on its weights).

    seed_style     the seeds' train_model.py/hpo.py loop, re-created below: ImageFolder + default DataLoader
                   (0 workers), frozen ResNet-18 whose backbone runs every epoch, new fc head, Adam on fc, fp32,
                   NCHW, model.train() during training (BatchNorm statistics drift, as in the seeds), a full
                   validation pass every epoch.
    imgclf         imgclf.training.fit with its defaults: frozen backbone, augment "auto" (off when frozen), so
                   the backbone runs once and epochs train the head on cached features; channels_last,
                   DataLoader workers from the CPU count, AMP on CUDA.
    imgclf_augment the same with --augment: the backbone runs every epoch (the cost the seeds always paid).

Epoch time is wall time from the start of the run (model build and data scan included in epoch 1) to the end
of that epoch's validation. Modes run interleaved (round-robin, --rounds times) and per-mode medians are
reported, so ratios are taken under the same machine load.

    python benchmarks/train_bench.py --out benchmarks/results/train.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torchvision
from torch import nn
from torchvision import datasets
from torchvision import transforms as T

from imgclf.hyperparameters import Hyperparameters
from imgclf.sample_data import write_sample_data
from imgclf.training import RunConfig, fit

MODES = ("seed_style", "imgclf", "imgclf_augment")


def progress(msg: str) -> None:
    print(f"[train_bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---- data and weights -------------------------------------------------------------------------------------


def make_subset(root: Path, train_per_class: int, valid_per_class: int) -> dict[str, int]:
    """root/full = the whole sample; root/{train,valid} = the first N images of each class (sorted names)."""
    full = root / "full"
    write_sample_data(full)
    counts = {}
    for split, n in (("train", train_per_class), ("valid", valid_per_class)):
        total = 0
        for cls in sorted(p.name for p in (full / split).iterdir()):
            files = sorted((full / split / cls).iterdir())
            files = files if n <= 0 else files[:n]
            (root / split / cls).mkdir(parents=True)
            for f in files:
                shutil.copy(f, root / split / cls / f.name)
            total += len(files)
        counts[split] = total
    return counts


def make_weights(path: Path, data: Path, seed: int, kind: str, image_size: int) -> None:
    """The one backbone weights file every mode starts from (a stand-in for the ImageNet file, same shapes).

    kind "random": random init with BatchNorm statistics calibrated on random-normal inputs (features carry
    little class information: accuracies stay near chance, speed is the same).
    kind "digits" (default): a ResNet-18 trained from random init for 2 epochs on the full digits train split at
    the benchmark's image size, so the frozen features are informative there and "equal accuracy" is a
    meaningful check. The valid split is never seen. Costs ~2.5 min once (224 px, 2 quiet CPU cores).
    """
    torch.manual_seed(seed)
    if kind == "random":
        model = torchvision.models.resnet18(weights=None)
        model.train()
        with torch.no_grad():
            for _ in range(4):
                model(torch.randn(16, 3, 224, 224))
        torch.save(model.state_dict(), path)
        return
    hp = Hyperparameters.from_mapping(
        {
            "pretrained-weights": "none",
            "train-backbone": "true",
            "augment": "false",
            "image-size": str(image_size),
            "epochs": "2",
            "batch-size": "32",
            "lr": "0.003",
            "seed": str(seed),
        }
    )
    out = path.parent / "pretrain-model"
    fit(hp, RunConfig(train_dir=data / "full" / "train", model_dir=out))
    state = torch.load(out / "model.pt", map_location="cpu", weights_only=True)
    torch.save({k: v for k, v in state.items() if not k.startswith("fc.")}, path)


def backbone_weights(args, data: Path) -> Path:
    """The stand-in backbone file for these settings, generated once into --weights-cache (git-ignored)."""
    weights = args.weights_cache / f"resnet18-{args.weights}{args.image_size}-seed{args.seed}.pth"
    if weights.exists():
        progress(f"reusing backbone weights {weights}")
        return weights
    progress(f"generating backbone weights {weights} ({args.weights})")
    args.weights_cache.mkdir(parents=True, exist_ok=True)
    tmp = data.parent / weights.name
    make_weights(tmp, data, args.seed, args.weights, args.image_size)
    shutil.move(tmp, weights)
    return weights


# ---- the seed-style loop ----------------------------------------------------------------------------------


def seed_style(args, data: Path, weights: Path, epoch_done) -> dict:
    """The seeds' train_model.py, compact: frozen pretrained ResNet-18, new fc, Adam, validation every epoch."""
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    normalize = T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    train_tf = T.Compose([T.Resize((224, 224)), T.RandomHorizontalFlip(), T.ToTensor(), normalize])
    test_tf = T.Compose([T.Resize((224, 224)), T.ToTensor(), normalize])
    train_data = datasets.ImageFolder(str(data / "train"), transform=train_tf)
    valid_data = datasets.ImageFolder(str(data / "valid"), transform=test_tf)
    train_loader = torch.utils.data.DataLoader(train_data, batch_size=args.batch_size, shuffle=True)
    valid_loader = torch.utils.data.DataLoader(valid_data, batch_size=args.batch_size)

    model = torchvision.models.resnet18(weights=None)  # seeds: models.resnet18(pretrained=True)
    # The file holds the backbone only (the seeds' ImageNet file also had a 1000-class fc they replaced next).
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True), strict=False)
    for param in model.parameters():
        param.requires_grad = False
    model.fc = nn.Sequential(nn.Linear(model.fc.in_features, len(train_data.classes)))
    model = model.to(device)
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(model.fc.parameters(), lr=args.lr)

    history = []
    for epoch in range(1, args.epochs + 1):
        model.train()
        running, seen = 0.0, 0
        for step, (inputs, labels) in enumerate(train_loader):
            inputs, labels = inputs.to(device), labels.to(device)
            optimizer.zero_grad()
            loss = criterion(model(inputs), labels)
            loss.backward()
            optimizer.step()
            running += loss.item() * inputs.size(0)
            seen += inputs.size(0)
            if step % 5 == 0:
                progress(f"seed_style epoch {epoch} step {step + 1}/{len(train_loader)}")
        model.eval()
        val_loss, correct = 0.0, 0
        with torch.no_grad():
            for inputs, labels in valid_loader:
                inputs, labels = inputs.to(device), labels.to(device)
                outputs = model(inputs)
                val_loss += criterion(outputs, labels).item() * inputs.size(0)
                correct += (outputs.argmax(1) == labels).sum().item()
        line = {
            "epoch": epoch,
            "train_loss": running / seen,
            "valid_loss": val_loss / len(valid_data),
            "valid_accuracy": correct / len(valid_data),
        }
        history.append(line)
        epoch_done(epoch, line)
    return {"history": history}


# ---- imgclf -----------------------------------------------------------------------------------------------


def imgclf_run(args, data: Path, weights: Path, augment: bool, epoch_done, work: Path) -> dict:
    given = {
        "pretrained-weights": str(weights),
        "image-size": str(args.image_size),
        "epochs": str(args.epochs),
        "batch-size": str(args.batch_size),
        "lr": str(args.lr),
        "seed": str(args.seed),
        "patience": "0",
        "amp": "true" if args.amp else "false",
    }
    if augment:  # otherwise the default ("auto": off with the frozen backbone)
        given["augment"] = "true"
    hp = Hyperparameters.from_mapping(given)
    cfg = RunConfig(train_dir=data / "train", valid_dir=data / "valid", model_dir=work / "model")
    result = fit(hp, cfg, on_epoch=epoch_done)
    return {"history": result["history"]}


# ---- driver -----------------------------------------------------------------------------------------------


def run_mode(mode: str, args, data: Path, weights: Path, work: Path, counts: dict) -> dict:
    start = time.perf_counter()
    ends: list[float] = []

    def epoch_done(epoch: int, line: dict) -> None:
        ends.append(time.perf_counter())
        progress(
            f"{mode} epoch {epoch}: {ends[-1] - start:.1f}s since start, valid_accuracy {line['valid_accuracy']:.4f}"
        )

    if mode == "seed_style":
        out = seed_style(args, data, weights, epoch_done)
    else:
        out = imgclf_run(args, data, weights, mode == "imgclf_augment", epoch_done, work / mode)
    seconds = [b - a for a, b in zip([start, *ends[:-1]], ends, strict=True)]
    later = seconds[1:] or seconds
    return {
        "epoch_seconds": seconds,
        "total_seconds": ends[-1] - start,
        "seconds_per_epoch_from_2": statistics.mean(later),
        "images_per_second_from_2": counts["train"] / statistics.mean(later),
        "images_per_second_epoch_1": counts["train"] / seconds[0],
        "final_valid_accuracy": out["history"][-1]["valid_accuracy"],
        "final_valid_loss": out["history"][-1]["valid_loss"],
        "history": out["history"],
    }


def summarise(runs: dict[str, list[dict]]) -> dict:
    med = {
        m: {k: statistics.median(r[k] for r in rs) for k in rs[0] if k not in ("history", "epoch_seconds")}
        for m, rs in runs.items()
    }
    ratios = {}
    base = med.get("seed_style")
    if base:
        for m in med:
            if m == "seed_style":
                continue
            ratios[f"{m}_speedup_from_epoch_2"] = base["seconds_per_epoch_from_2"] / med[m]["seconds_per_epoch_from_2"]
            ratios[f"{m}_speedup_total"] = base["total_seconds"] / med[m]["total_seconds"]
            ratios[f"{m}_accuracy_delta"] = med[m]["final_valid_accuracy"] - base["final_valid_accuracy"]
    return {"median": med, "ratios": ratios}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(args) -> dict:
    dev = args.device
    name = torch.cuda.get_device_name(0) if dev.startswith("cuda") else cpu_name()
    return {
        "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "host": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": dev,
        "device_name": name,
        "load_average_at_start": os.getloadavg(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/train.json"))
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.003, help="the seeds' tuned best")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--train-per-class", type=int, default=30, help="0 = the whole train split (1,259 images)")
    parser.add_argument("--valid-per-class", type=int, default=10, help="0 = the whole valid split (269 images)")
    parser.add_argument("--rounds", type=int, default=1, help="round-robin repetitions of all modes")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--amp", action="store_true", help="imgclf modes with AMP (CUDA only; default fp32)")
    parser.add_argument("--weights", choices=("digits", "random"), default="digits", help=make_weights.__doc__)
    parser.add_argument(
        "--weights-cache",
        type=Path,
        default=Path(__file__).resolve().parent / ".cache",
        help="where the generated weights file is kept between runs (git-ignored)",
    )
    parser.add_argument("--label", default="", help="free text stored in the JSON (e.g. the GPU run's purpose)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the cleanup below on kill
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if args.device.startswith("cuda") and "seed_style" in modes:
        pass  # seed-style loop honours --device too (the seeds ran on ml.g4dn: same code, .to(device))

    work = Path(tempfile.mkdtemp(prefix="imgclf-train-bench-"))
    try:
        progress(f"writing data subset and weights under {work}")
        counts = make_subset(work / "data", args.train_per_class, args.valid_per_class)
        weights = backbone_weights(args, work / "data")
        env = environment(args)
        progress(f"data {counts}, modes {modes}, rounds {args.rounds}, device {env['device_name']}")
        runs: dict[str, list[dict]] = {m: [] for m in modes}
        for r in range(args.rounds):
            for mode in modes:
                progress(f"round {r + 1}/{args.rounds}: {mode}")
                runs[mode].append(run_mode(mode, args, work / "data", weights, work / f"r{r}", counts))
        result = {
            "benchmark": "train",
            "environment": env,
            "settings": {
                "epochs": args.epochs,
                "batch_size": args.batch_size,
                "lr": args.lr,
                "seed": args.seed,
                "image_size": args.image_size,
                "images": counts,
                "rounds": args.rounds,
                "amp": args.amp,
                "label": args.label,
                "weights": args.weights,
                "subset": f"first {args.train_per_class or 'all'} train / {args.valid_per_class or 'all'} valid "
                "images per class of the embedded digits sample",
            },
            "runs": runs,
            **summarise(runs),
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
        progress(f"wrote {args.out}")
        for key, value in result["ratios"].items():
            print(f"{key}: {value:.3f}")
        for mode, m in result["median"].items():
            print(
                f"{mode}: {m['seconds_per_epoch_from_2']:.2f} s/epoch (from 2), "
                f"{m['images_per_second_from_2']:.1f} img/s, total {m['total_seconds']:.1f} s, "
                f"valid_accuracy {m['final_valid_accuracy']:.4f}"
            )
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
