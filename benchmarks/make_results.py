"""benchmarks/RESULTS.md from the JSON the benchmarks wrote (benchmarks/results/*.json). No measuring here.

python benchmarks/make_results.py [--results benchmarks/results] [--out benchmarks/RESULTS.md]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

TARGETS = {
    "train": "imgclf ≥ 5× faster than seed-style per epoch from epoch 2, validation accuracy not lower (−0.05 noise)",
    "serve_latency": "imgclf serve p50 ≤ 1.15× the in-process floor",
    "serve_throughput": "imgclf serve ≥ 1.5× the seed-style server's throughput at 8 clients",
}


def _f(v, digits=2) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _env_lines(env: dict) -> list[str]:
    return [
        f"- Date: {env.get('date_utc')}; host `{env.get('host')}`, {env.get('platform')}",
        f"- CPUs: {env.get('cpus')}; device: {env.get('device_name', env.get('device', 'cpu'))}; "
        f"load average at start: {', '.join(f'{x:.1f}' for x in env.get('load_average_at_start', []))}",
        f"- Python {env.get('python')}, torch {env.get('torch')}, torchvision {env.get('torchvision')}",
    ]


def train_section(doc: dict, title: str) -> list[str]:
    s, med, ratios = doc["settings"], doc["median"], doc["ratios"]
    out = [f"## {title}", "", *_env_lines(doc["environment"])]
    out += [
        f"- Data: {s['subset']} ({s['images']['train']} train / {s['images']['valid']} valid), "
        f"{s['image_size']} px; {s['epochs']} epochs, batch {s['batch_size']}, lr {s['lr']}, seed {s['seed']}; "
        f"backbone weights: `{s.get('weights', 'random')}`; AMP: {s.get('amp', False)}; "
        f"{s['rounds']} interleaved round(s), medians shown",
        "",
        "| mode | s/epoch (epoch 1) | s/epoch (from epoch 2) | train img/s (from epoch 2) | total s | "
        "final valid accuracy |",
        "|---|---|---|---|---|---|",
    ]
    for mode, m in med.items():
        e1 = s["images"]["train"] / m["images_per_second_epoch_1"]
        out.append(
            f"| {mode} | {_f(e1)} | {_f(m['seconds_per_epoch_from_2'])} | {_f(m['images_per_second_from_2'], 1)} | "
            f"{_f(m['total_seconds'], 1)} | {_f(m['final_valid_accuracy'], 4)} |"
        )
    out += ["", "| ratio | value |", "|---|---|"]
    out += [f"| {k} | {_f(v, 3)} |" for k, v in ratios.items()]
    out.append("")
    return out


def serve_section(doc: dict) -> list[str]:
    ratios, s = doc["ratios"], doc["settings"]
    out = ["## Serving (ResNet-18, one 224 px JPEG)", "", *_env_lines(doc["environment"])]
    out += [
        f"- {s['requests']} sequential requests per server on one keep-alive connection; throughput: closed loop, "
        f"{s['load_seconds']} s per level; {s['rounds']} round(s); JPEG {s['jpeg_bytes']} bytes; "
        "ratios use the median floor p50",
        "",
        "| | p50 ms | p95 ms | p99 ms | cold start: /ping 200 s | cold start: first correct answer s | "
        "workers | RSS per worker MB | front-end RSS MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for i, fl in enumerate(doc["floor"]):
        when = "after the servers" if i == len(doc["floor"]) - 1 and i > 0 else f"round {i + 1}"
        threads = fl.get("torch_threads", "default")
        out.append(
            f"| (a) in-process floor ({when}, {threads} torch thread(s)) | {_f(fl['p50_ms'], 1)} | "
            f"{_f(fl['p95_ms'], 1)} | {_f(fl['p99_ms'], 1)} | – | – | – | – | – |"
        )
    labels = {
        "imgclf": "(b) imgclf serve",
        "seed": "(c) seed-style (toolkit + MMS)",
        "imgclf_batch": "imgclf serve, batch 8",
    }
    for kind, runs in doc["servers"].items():
        if not runs:
            continue
        r = runs[-1]
        lat, cold, rss = r["latency"], r["cold_start_s"], r["rss_after_load"]
        workers_mb = ", ".join(f"{x:.0f}" for x in rss["workers_mb"])
        frontend_mb = ", ".join(f"{x:.0f}" for x in rss["frontend_mb"])
        out.append(
            f"| {labels.get(kind, kind)} | {_f(lat['p50_ms'], 1)} | {_f(lat['p95_ms'], 1)} | {_f(lat['p99_ms'], 1)} | "
            f"{_f(cold['ping_200'])} | {_f(cold['first_correct_prediction'])} | {r['workers']} | "
            f"{workers_mb} | {frontend_mb} |"
        )
    levels = s["concurrency"]
    out += ["", "Throughput (requests/s, zero errors required; non-200 + connection errors in brackets):", ""]
    out += ["| server | " + " | ".join(f"{c} clients" for c in levels) + " |", "|---|" + "---|" * len(levels)]
    for kind, runs in doc["servers"].items():
        if not runs:
            continue
        cells = []
        for c in levels:
            d = runs[-1]["throughput"][str(c)]
            bad = d["requests"] - d["ok"]
            cells.append(f"{d['throughput_rps']:.1f} (p99 {d['p99_ms']:.0f} ms){f' [{bad}]' if bad else ''}")
        out.append(f"| {labels.get(kind, kind)} | " + " | ".join(cells) + " |")
    out += ["", "| ratio | value |", "|---|---|"]
    out += [f"| {k} | {_f(v, 3)} |" for k, v in ratios.items()]
    out.append("")
    return out


def tune_section(doc: dict) -> list[str]:
    s = doc["settings"]
    out = ["## Tuning: N seed-style training runs vs `imgclf tune` with N trials", "", *_env_lines(doc["environment"])]
    out += [
        f"- {s['trials']} trials each, {s['space']}; {s['epochs']} epochs, batch {s['batch_size']}, "
        f"{s['image_size']} px, {s['images']['train']} train / {s['images']['valid']} valid images, "
        f"backbone weights `{s['weights']}`, seed {s['seed']}",
        "",
        "| side | wall s | seconds per trial | best valid accuracy | trials (lr → valid accuracy) |",
        "|---|---|---|---|---|",
    ]
    for side in ("seed_style", "imgclf_tune"):
        d = doc[side]
        seconds = [t["seconds"] for t in d["trials"] if t.get("seconds") is not None]
        trials = ", ".join(
            f"{t['lr']:.3g} → {_f(t['valid_accuracy'], 3)}" + (" (pruned)" if t.get("state") == "PRUNED" else "")
            for t in d["trials"]
        )
        out.append(
            f"| {side} | {_f(d['wall_seconds'], 1)} | {_f(sum(seconds) / max(len(seconds), 1), 1)} | "
            f"{_f(doc['best_valid_accuracy'][side], 4)} | {trials} |"
        )
    out += ["", "| ratio | value |", "|---|---|"]
    out += [f"| {k} | {_f(v, 3)} |" for k, v in doc["ratios"].items()]
    out.append("")
    return out


def explain_section(doc: dict) -> list[str]:
    out = [
        "## Explanations: explained (Grad-CAM) vs plain requests",
        "",
        f"- `benchmarks/explain_bench.py`: one random JPEG per request through the serving handler in-process, plain "
        f"and explained alternating, {doc['repeats']} of each, {doc['threads']} torch threads; the first explained "
        "request (which finds the target layer) apart; untrained weights (the cost does not depend on them)",
        "",
        "| arch | px | target layer | plain p50 ms | explained p50 ms | explained / plain | first explained ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in doc["cases"]:
        out.append(
            f"| {c['arch']} | {c['image_size']} | `{c['layer']}` | {_f(c['plain_ms_p50'], 1)} | "
            f"{_f(c['explained_ms_p50'], 1)} | {_f(c['ratio'])}× | {_f(c['first_explained_ms'], 1)} |"
        )
    out.append("")
    return out


ENGINE_LABELS = {"eager": "eager (torch)", "onnx": "onnx (ONNX Runtime fp32)", "int8": "int8 (QDQ static)"}


def engines_section(doc: dict) -> list[str]:
    """engine_serve_bench.py --targets: floors, every engine under `imgclf serve`, the seed-style server."""
    t = doc["targets"]
    floors = t["floors_p50_ms"]
    out = [
        "## Inference engines against issue 13's targets (`engine_serve_bench.py --targets`)",
        "",
        f"- {doc.get('date_utc', 'date not recorded')}; {doc.get('cpus')} CPUs, load average at start "
        f"{', '.join(f'{x:.1f}' for x in doc.get('load_average', [])) or 'not recorded'}; ResNet-18 224 px, one "
        "256 px JPEG; one server at a time; medians of the floors measured before and after the servers",
        "- In-process p50 ms (faster of 1 thread and all CPUs): "
        + ", ".join(f"{k} {_f(v, 1)}" for k, v in floors.items())
        + " (eager = serve_bench.py's floor: decode + torchvision transform + forward; `*_forward`: the forward "
        "alone on the preprocessed tensor)",
        "",
        "| server | p50 ms | p95 ms | req/s 1 client | req/s 8 clients | errors | p50 / eager floor | "
        "agreement with eager | accuracy | artifact MB | start: /ping 200 s | start: first correct answer s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for kind, r in t["servers"].items():
        label = ENGINE_LABELS.get(kind, "seed-style (toolkit + MMS, eager)" if kind == "seed" else kind)
        agreement = "–" if r.get("agreement") is None else f"{r['agreement'] * 100:.1f} %"
        out.append(
            f"| {label} | {_f(r['p50_ms'], 1)} | {_f(r['p95_ms'], 1)} | {_f(r['rps_1'], 1)} | {_f(r['rps_8'], 1)} | "
            f"{r['errors']} | {_f(r.get('p50_over_eager_floor'))} | {agreement} | {_f(r.get('accuracy'), 3)} | "
            f"{_f(r.get('size_mb'), 1)} | {_f(r['ping_200_s'], 1)} | {_f(r['first_correct_s'], 1)} |"
        )
    for kind, why in (t.get("rejected") or {}).items():
        out.append(f"| {ENGINE_LABELS.get(kind, kind)} | rejected: {why} | | | | | | | | | | |")
    out += ["", "| ratio | value |", "|---|---|"]
    out += [f"| {k} | {_f(v, 3)} |" for k, v in t["ratios"].items()]
    out.append("")
    return out


def draft_section(doc: dict) -> list[str]:
    """draft_bench.py: JPEG draft mode's cost and its difference from torchvision's eval transform."""
    out = [
        "## JPEG draft mode (`IMGCLF_JPEG_DRAFT`, `draft_bench.py`)",
        "",
        f"- {doc.get('cpus')} CPUs, load average {', '.join(f'{x:.1f}' for x in doc.get('load_average', []))}; "
        "decode + resize + normalise (the server's path), draft off and on alternating call by call; ResNet "
        "settings (resize 256, crop 224)",
        "",
        "| JPEG | off p50 ms | on p50 ms | speed-up |",
        "|---|---|---|---|",
    ]
    for name, c in doc["cost"].items():
        out.append(f"| {name} | {_f(c['off_p50_ms'])} | {_f(c['on_p50_ms'])} | {_f(c['speedup'])}× |")
    out += [
        "",
        "Draft on vs torchvision's eval transform of the full decode, in 8-bit pixel levels:",
        "",
        "| JPEG | decoded at | resize | max | p99 | mean |",
        "|---|---|---|---|---|---|",
    ]
    for d in doc["difference"]:
        out.append(
            f"| {d['input']} | {d['decoded']} | {d['resize']} | {_f(d['max_levels'], 1)} | "
            f"{_f(d['p99_levels'], 1)} | {_f(d['mean_levels'], 3)} |"
        )
    if doc.get("agreement"):
        a = doc["agreement"]
        out += [
            "",
            f"Top-1 agreement, draft on vs off, {a['images']} validation digits upscaled to 2048x1536 "
            f"({a.get('model', 'the --model-dir model')}): "
            f"{a['top1_agreement'] * 100:.1f} % (accuracy off {a['accuracy_off']:.3f}, on {a['accuracy_on']:.3f}).",
        ]
    out.append("")
    return out


def engine_verdicts(doc: dict) -> list[str]:
    """Issue 13's latency and throughput targets from engine_serve_bench.py --targets."""
    t, out = doc["targets"], []
    for kind, r in t["servers"].items():
        if kind in ("seed", "eager") or r.get("p50_over_eager_floor") is None:
            continue
        v, agreement = r["p50_over_eager_floor"], r.get("agreement") or 0
        met = "yes" if v <= 0.8 and agreement >= 0.995 else "no"
        if met == "yes" and (r.get("accuracy") or 0) < 0.2:  # a model at chance agrees with anything
            met = f"yes for speed; agreement not evidence (accuracy {r['accuracy']:.2f}: an untrained model)"
        out.append(
            f"| served {kind} p50 ≤ 0.8× the in-process eager floor at ≥ 99.5 % agreement | {v:.2f}×, "
            f"{agreement * 100:.1f} % | {met} |"
        )
    for name, v in t["ratios"].items():
        if name.startswith("best_rps8_over_seed_rps8"):
            errors = sum(t["errors"].values())
            out.append(
                f"| best served engine ≥ 1.5× the seed-style req/s at 8 clients, zero errors "
                f"({name.split('(')[-1].rstrip(')')}) | {v:.2f}×, {errors} errors | "
                f"{'yes' if v >= 1.5 and errors == 0 else 'no'} |"
            )
    return out


def verdicts(train: dict | None, serve: dict | None, engine_targets: dict | None = None) -> list[str]:
    out = ["## Targets", ""]
    for name, doc in (("training", train), ("serving", serve)):
        env = (doc or {}).get("environment", {})
        load, cpus = env.get("load_average_at_start", [0])[0], env.get("cpus") or 1
        if load > 2 * cpus:
            out.append(
                f"**Warning:** the {name} run started at load average {load:.1f} on {cpus} CPUs (other jobs): "
                "its ratios are indicative only; rerun on a quiet machine."
            )
            out.append("")
    out += ["| target | measured | met |", "|---|---|---|"]
    if train:
        r = train["ratios"]
        for mode in ("imgclf", "imgclf_augment"):
            sp, acc = r.get(f"{mode}_speedup_from_epoch_2"), r.get(f"{mode}_accuracy_delta")
            if sp is None:
                continue
            out.append(
                f"| {TARGETS['train']} ({mode}) | {sp:.2f}×, accuracy Δ {acc:+.3f} | "
                f"{'yes' if sp >= 5 and acc >= -0.05 else 'no'} |"
            )
    if serve:
        r = serve["ratios"]
        if "imgclf_p50_over_floor" in r:
            v = r["imgclf_p50_over_floor"]
            out.append(f"| {TARGETS['serve_latency']} | {v:.2f}× | {'yes' if v <= 1.15 else 'no'} |")
        for kind in ("imgclf", "imgclf_batch"):
            v = r.get(f"{kind}_over_seed_throughput_8")
            if v is not None:
                out.append(f"| {TARGETS['serve_throughput']} ({kind}) | {v:.2f}× | {'yes' if v >= 1.5 else 'no'} |")
    if engine_targets:
        out += engine_verdicts(engine_targets)
    out.append("")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    here = Path(__file__).resolve().parent
    parser.add_argument("--results", type=Path, default=here / "results")
    parser.add_argument("--out", type=Path, default=here / "RESULTS.md")
    args = parser.parse_args(argv)

    def load(name: str) -> dict | None:
        p = args.results / name
        return json.loads(p.read_text()) if p.exists() else None

    train, serve, gpu, tune = load("train.json"), load("serve.json"), load("train-gpu.json"), load("tune.json")
    explained = load("explain.json")
    engine_targets, draft = load("engine_targets.json"), load("draft.json")
    lines = [
        "# imgclf benchmark results",
        "",
        "Generated by `benchmarks/make_results.py` from `benchmarks/results/*.json`; reproduce everything with "
        "`bash benchmarks/run.sh`. Every figure that matters is a ratio of two things measured in the same run on "
        "the same machine, interleaved; absolute numbers on these shared 2-core machines are noisy.",
        "",
    ]
    lines += verdicts(train, serve, engine_targets)
    if train:
        lines += train_section(train, "Training: seed-style loop vs imgclf (defaults) vs imgclf with augmentation")
    if tune:
        lines += tune_section(tune)
    if gpu:
        lines += train_section(gpu, f"Training on GPU ({gpu['environment'].get('device_name')})")
    if serve:
        lines += serve_section(serve)
    if engine_targets:
        lines += engines_section(engine_targets)
    if draft:
        lines += draft_section(draft)
    if explained:
        lines += explain_section(explained)
    notes = here / "NOTES.md"
    if notes.exists():
        lines += [notes.read_text().rstrip(), ""]
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
