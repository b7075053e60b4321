"""Train, tune, deploy and batch-transform with the SageMaker Python SDK v2 through imgclf.sagemaker.

The same objects `imgclf sagemaker ...` builds (one hyperparameter spec, the trainer's metric regexes, the seeds'
Debugger rules + ProfilerReport), in Python. Run it with an SDK v2 venv (`bash scripts/sdk_venvs.sh`):

    # on this machine, SageMaker local mode (Docker, file:// data, no AWS account):
    .venv/bin/imgclf sample-data data
    .venv-sdk2/bin/python examples/sagemaker_job.py --local --data data
    # on SageMaker, with the images pushed by scripts/build_push.sh:
    .venv-sdk2/bin/python examples/sagemaker_job.py --role arn:aws:iam::123456789012:role/SageMakerRole \\
        --bucket my-bucket --region us-east-1 \\
        --train-image 123456789012.dkr.ecr.us-east-1.amazonaws.com/imgclf-train:v1 \\
        --serve-image 123456789012.dkr.ecr.us-east-1.amazonaws.com/imgclf-serve:v1 --tune
"""

from __future__ import annotations

import argparse
from pathlib import Path

from imgclf.sagemaker import sdk_v2
from imgclf.sagemaker.jobs import DEFAULT_SERVE_IMAGE, DEFAULT_TRAIN_IMAGE
from imgclf.sagemaker.target import file_uri, resolve_target

# Settings that train the embedded digits sample in seconds (no pretrained weights can be downloaded offline).
FAST = {
    "pretrained-weights": "none",
    "train-backbone": True,
    "augment": False,
    "image-size": 32,
    "epochs": 2,
    "batch-size": 32,
    "lr": 0.003,
}


def sample_jpegs(data: Path, out: Path, n: int = 5) -> list[Path]:
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for class_dir in sorted((data / "test").iterdir())[:n]:
        src = next(iter(sorted(class_dir.iterdir())))
        dst = out / f"{class_dir.name}.jpg"
        Image.open(src).convert("RGB").save(dst, format="JPEG")
        paths.append(dst)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--local", action="store_true")
    parser.add_argument("--role")
    parser.add_argument("--bucket")
    parser.add_argument("--region")
    parser.add_argument("--train-image", default=DEFAULT_TRAIN_IMAGE)
    parser.add_argument("--serve-image", default=DEFAULT_SERVE_IMAGE)
    parser.add_argument(
        "--data", default="data", help="Folder with train/ valid/ test/ (make one: `imgclf sample-data data`)."
    )
    parser.add_argument("--tune", action="store_true", help="Also run a tuning job (SageMaker only).")
    args = parser.parse_args()

    target = resolve_target(
        local=args.local, role=args.role, bucket=args.bucket, region=args.region, workdir="sagemaker-local"
    )
    data = Path(args.data)
    if not (data / "train").is_dir():
        # The SDK venv has no torch; the main venv writes the embedded digits sample.
        raise SystemExit(f"{data}/train not found: run `.venv/bin/imgclf sample-data {data}` first.")
    sess = sdk_v2.session(target)

    # 1. Training job (Estimator with hyperparameters as strings, metric definitions, Debugger rules, profiler).
    estimator = sdk_v2.build_estimator(target, image_uri=args.train_image, hyperparameters=FAST, sagemaker_session=sess)
    # file:// in local mode, uploaded to s3://BUCKET/imgclf/data/<channel>/ on SageMaker.
    inputs = sdk_v2.channel_inputs({name: str(data / name) for name in ("train", "valid", "test")}, target, sess)
    estimator.fit(inputs)
    print("model:", estimator.model_data)

    # 2. Tuning job over the spec's ranges (lr, batch-size, epochs), objective valid_accuracy (local mode cannot
    #    tune: run `imgclf tune` on this machine for the same space).
    if args.tune and not target.local:
        tuner = sdk_v2.build_tuner(estimator, objective_metric="valid_accuracy", max_jobs=4, max_parallel_jobs=2)
        tuner.fit(inputs)
        print("best training job:", tuner.best_training_job())

    # 3. Real-time endpoint: image/jpeg in, JSON top-k out.
    model = sdk_v2.build_model(target, estimator.model_data, image_uri=args.serve_image, sagemaker_session=sess)
    predictor = sdk_v2.deploy(model, instance_type="local" if target.local else "ml.m5.large")
    try:
        for jpeg in sample_jpegs(data, data / "jpegs"):
            print(jpeg.name, predictor.predict(jpeg.read_bytes())[:3])
    finally:
        predictor.delete_endpoint()

    # 4. Batch transform over a folder of JPEGs: one <file>.out JSON per image.
    if target.local:
        transform_in, transform_out = file_uri(data / "jpegs"), target.output_path("transform")
    else:
        transform_in = sess.upload_data(str(data / "jpegs"), bucket=target.bucket, key_prefix=f"{target.prefix}/batch")
        transform_out = target.output_path("transform")
    transformer = sdk_v2.build_transformer(
        model, instance_type="local" if target.local else "ml.m5.large", output_path=transform_out
    )
    sdk_v2.run_transform(transformer, transform_in, local=target.local)
    print("transform outputs:", transform_out)


if __name__ == "__main__":
    main()
