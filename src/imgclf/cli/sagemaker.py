"""`imgclf sagemaker ACTION`: SageMaker jobs, tuning, endpoints, batch transform, pipelines for our images.

Argument parsing and the glue that calls imgclf.sagemaker (target, jobs, sdk_v2, sdk_v3); errors are UserError
(exit 2, from imgclf.cli.main). `--local` runs the same objects in SageMaker local mode (Docker, file:// data).
"""

from __future__ import annotations

import argparse
import json

from imgclf import hyperparameters as hp_spec
from imgclf.cli import sagemaker_endpoints, sagemaker_pipeline
from imgclf.errors import UserError
from imgclf.metrics import OBJECTIVES
from imgclf.sagemaker import jobs, sdk_v2, sdk_v3
from imgclf.sagemaker.jobs import DEFAULT_SERVE_IMAGE, DEFAULT_TRAIN_IMAGE, JPEG, channels
from imgclf.sagemaker.target import (
    BUCKET_ENV,
    DEFAULT_PREFIX,
    ROLE_ENV,
    Target,
    file_uri,
    is_remote,
    prepare_local_env,
    resolve_target,
    sdk_major,
)


def _common(parser: argparse.ArgumentParser, *, training: bool) -> None:
    where = parser.add_argument_group("where it runs")
    where.add_argument(
        "--local", action="store_true", help="SageMaker local mode: Docker on this machine, file:// data."
    )
    where.add_argument("--role", help=f"IAM execution role ARN (default: ${ROLE_ENV}).")
    where.add_argument("--bucket", help=f"S3 bucket for data and outputs (default: ${BUCKET_ENV}).")
    where.add_argument("--region", help="AWS region (default: AWS_DEFAULT_REGION / your AWS config).")
    where.add_argument("--prefix", default=DEFAULT_PREFIX, help="S3 key prefix (default: %(default)s).")
    where.add_argument(
        "--workdir",
        default="sagemaker-local",
        help="Local mode: folder for file:// outputs (default: %(default)s).",
    )
    where.add_argument(
        "--image-uri",
        help=f"Image to run (default in local mode: {DEFAULT_TRAIN_IMAGE if training else DEFAULT_SERVE_IMAGE}).",
    )
    where.add_argument("--instance-type", help="Default: ml.m5.xlarge (train) / ml.m5.large (serve); local: 'local'.")
    where.add_argument("--instance-count", type=int, default=1)


def _training_args(parser: argparse.ArgumentParser) -> None:
    data = parser.add_argument_group("data")
    data.add_argument("--data", help="Folder or s3:// prefix with train/ (valid/, test/) inside.")
    data.add_argument("--train", help="Train channel (folder or s3:// URI); overrides DATA/train.")
    data.add_argument("--valid", help="Valid channel.")
    data.add_argument("--test", help="Test channel.")
    job = parser.add_argument_group("job")
    job.add_argument("--spot", action="store_true", help="Managed spot training (resumes from checkpoints).")
    job.add_argument(
        "--checkpoint-s3-uri",
        help="Checkpoint sync URI (default with --spot: train, s3://BUCKET/PREFIX/checkpoints/JOB_NAME, the job's "
        "own; tune, none, so trials running side by side never share one).",
    )
    job.add_argument("--max-run", type=int, default=3600, help="Seconds before SageMaker stops the job.")
    job.add_argument("--max-wait", type=int, help="Spot: seconds to wait for capacity + run (default 2 x max-run).")
    job.add_argument(
        "--no-debugger", dest="debugger", action="store_false", help="No Debugger hook, rules or profiler."
    )
    job.add_argument("--no-wait", dest="wait", action="store_false", help="Start the job and return.")
    hp_spec.add_arguments(parser)


def _input_args(parser: argparse.ArgumentParser) -> None:
    data = parser.add_argument_group("input mode and hosts (README: Input modes and several hosts)")
    data.add_argument(
        "--input-mode",
        default="File",
        choices=jobs.INPUT_MODES,
        help="File: copy channels to the instance before training (default); FastFile: stream files from S3 as "
        "they are read (datasets larger than the disk); Pipe: refused, no channel format reads from a pipe.",
    )
    data.add_argument(
        "--distribution",
        default="replicated",
        choices=tuple(jobs.DISTRIBUTIONS),
        help="replicated: every host gets the whole train channel and the trainer splits it by rank (default); "
        "sharded: SageMaker gives each host 1/N of the train objects (ShardedByS3Key; needs a valid channel).",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    train = sub.add_parser("train", help="Training job (Estimator; ModelTrainer with SDK v3).")
    _common(train, training=True)
    _training_args(train)
    _input_args(train)

    tune = sub.add_parser("tune", help="Hyperparameter tuning job over the spec's ranges.")
    _common(tune, training=True)
    _training_args(tune)
    tune.add_argument("--objective", default="valid_accuracy", choices=sorted(OBJECTIVES))
    tune.add_argument("--max-jobs", type=int, default=4)
    tune.add_argument("--max-parallel-jobs", type=int, default=2)
    tune.add_argument("--strategy", default="Bayesian", choices=("Bayesian", "Random", "Hyperband", "Grid"))
    tune.add_argument(
        "--print-only",
        action="store_true",
        help="Print the CreateHyperParameterTuningJob request the SDK would send, and stop.",
    )

    dep = sub.add_parser(
        "deploy", help="Endpoint from a model.tar.gz: real-time, autoscaled, serverless or asynchronous."
    )
    _common(dep, training=False)
    what = dep.add_mutually_exclusive_group(required=True)
    what.add_argument("--model-data", help="model.tar.gz: s3:// URI (local mode: a file path).")
    what.add_argument("--model-package", help="An approved model package ARN (from `imgclf sagemaker pipeline`).")
    dep.add_argument("--endpoint-name", help="Default: generated.")
    dep.add_argument("--predict", nargs="*", default=[], metavar="JPEG", help="Images to classify once it is up.")
    dep.add_argument("--delete", action="store_true", help="Delete the endpoint at the end (always in local mode).")
    sagemaker_endpoints.add_deploy_arguments(dep)  # autoscaling, serverless, async, data capture, dashboard

    sagemaker_endpoints.add_autoscale_parser(sub)

    tr = sub.add_parser("transform", help="Batch transform over a folder / S3 prefix of images.")
    _common(tr, training=False)
    tr.add_argument("--model-data", required=True, help="model.tar.gz: s3:// URI (local mode: a file path).")
    tr.add_argument("--input", required=True, help="Folder (local mode) or s3:// prefix of images.")
    tr.add_argument("--output", help="Where <image>.out JSON files go (default: under the bucket / workdir).")
    tr.add_argument("--content-type", default=JPEG, help="Content type of the input files (default: %(default)s).")
    tr.add_argument("--no-wait", dest="wait", action="store_false")

    # Pipelines and the Model Registry: imgclf.cli.sagemaker_pipeline.
    sagemaker_pipeline.add_parsers(sub, _common, _training_args)


def _channels(args: argparse.Namespace) -> dict[str, str]:
    return channels(args.data, args.train, args.valid, args.test)


def _estimator(args: argparse.Namespace, target: Target, sess, job_name: str | None = None):
    """The training-job options `imgclf sagemaker train` and `tune` share."""
    return sdk_v2.build_estimator(
        target,
        image_uri=args.image_uri,
        hyperparameters=hp_spec.given_arguments(args),
        instance_type=args.instance_type,
        instance_count=args.instance_count,
        spot=args.spot,
        max_run=args.max_run,
        max_wait=args.max_wait,
        checkpoint_s3_uri=args.checkpoint_s3_uri,
        debugger=args.debugger,
        sagemaker_session=sess,
        job_name=job_name,
    )


def _run_train(args: argparse.Namespace, target: Target) -> int:
    if sdk_major() >= 3:
        trainer = sdk_v3.build_model_trainer(
            target,
            data=_channels(args),
            image_uri=args.image_uri,
            hyperparameters=hp_spec.given_arguments(args),
            instance_type=args.instance_type,
            instance_count=args.instance_count,
            max_run=args.max_run,
            input_mode=args.input_mode,
            distribution=args.distribution,
        )
        trainer.train(wait=args.wait)
        return 0
    sess = sdk_v2.session(target)
    job_name = jobs.unique_job_name()  # also the default checkpoint prefix of a --spot job
    est = _estimator(args, target, sess, job_name=job_name)
    inputs = sdk_v2.channel_inputs(
        _channels(args), target, sess, input_mode=args.input_mode, distribution=args.distribution
    )
    est.fit(inputs, job_name=job_name, wait=args.wait)
    if args.wait:
        print(f"model: {est.model_data}", flush=True)
    else:
        print(f"training job: {est.latest_training_job.name}", flush=True)
    return 0


def _run_tune(args: argparse.Namespace, target: Target) -> int:
    sdk_v2.require_v2("imgclf sagemaker tune")
    sess = sdk_v2.session(target)
    tuner = sdk_v2.build_tuner(
        _estimator(args, target, sess),
        objective_metric=args.objective,
        max_jobs=args.max_jobs,
        max_parallel_jobs=args.max_parallel_jobs,
        strategy=args.strategy,
    )
    if args.print_only:
        inputs = {k: v if is_remote(v) else file_uri(v) for k, v in _channels(args).items()}
        print(json.dumps(sdk_v2.tuner_request(tuner, inputs), indent=1, default=str))
        return 0
    tuner.fit(sdk_v2.channel_inputs(_channels(args), target, sess), wait=args.wait)
    print(f"tuning job: {tuner.latest_tuning_job.name}", flush=True)
    if args.wait:
        print(f"best training job: {tuner.best_training_job()}", flush=True)
    return 0


def _run_transform(args: argparse.Namespace, target: Target) -> int:
    model = sdk_v2.build_model(target, args.model_data, image_uri=args.image_uri)
    instance_type = args.instance_type or ("local" if target.local else "ml.m5.large")
    if target.local:
        data = args.input if args.input.startswith("file://") else file_uri(args.input)
        output = file_uri(args.output) if args.output else target.output_path("transform")
    else:
        if not is_remote(args.input):
            raise UserError(f"--input must be an s3:// prefix on SageMaker, got {args.input!r}.")
        data, output = args.input, args.output or target.output_path("transform")
    transformer = sdk_v2.build_transformer(
        model, instance_type=instance_type, output_path=output, instance_count=args.instance_count
    )
    sdk_v2.run_transform(transformer, data, local=target.local, content_type=args.content_type, wait=args.wait)
    print(f"outputs: {output}", flush=True)
    return 0


ACTIONS = {
    "train": _run_train,
    "tune": _run_tune,
    "deploy": sagemaker_endpoints.run_deploy,
    "transform": _run_transform,
    "pipeline": sagemaker_pipeline.run_pipeline,
}


def run(args: argparse.Namespace) -> int:
    if args.action == "approve":  # needs only a region and credentials, no role or bucket
        return sagemaker_pipeline.run_approve(args)
    if args.action == "autoscale":  # the same: the endpoint exists already
        return sagemaker_endpoints.run_autoscale(args)
    if args.action == "tune" and args.local and not args.print_only:
        raise UserError(
            "SageMaker local mode cannot run tuning jobs. Search the same space on this machine with "
            "`imgclf tune`, or print the tuner's request with `imgclf sagemaker tune --local --print-only`."
        )
    target = resolve_target(
        local=args.local,
        role=args.role,
        bucket=args.bucket,
        region=args.region,
        prefix=args.prefix,
        workdir=args.workdir,
        action=f"imgclf sagemaker {args.action}",
    )
    if args.action != "deploy":  # deploy works without the SDK on SageMaker (boto3) and checks for itself
        sdk_major()  # a clear error before anything else when the SDK is missing
    if target.local:
        prepare_local_env(target.workdir)
    return ACTIONS[args.action](args, target)
