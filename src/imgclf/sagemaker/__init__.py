"""The SageMaker SDK side of imgclf: jobs, tuners, endpoints and batch transform for our images.

Torch-free (it runs in the SDK venvs, which have no torch); the `sagemaker` package is imported lazily, inside the
builders, because it is not a dependency of imgclf. What lives where:

  target.py   where jobs run: `Target` / `resolve_target` (role, bucket, region, credentials checked before any
              call), file:// and s3:// URIs, which SDK major is installed, and local mode's configuration
              (`local_config`, `prepare_local_env`: the one place that writes os.environ, for the SDK to read)
  jobs.py     plain data every job needs, no SDK: hyperparameters as strings, the tuner objective, metric
              definitions, Debugger collections, channels, default images and content types
  sdk_v2.py   SDK v2 (`sagemaker<3`, the seeds' API): Session, Estimator, HyperparameterTuner (and the request it
              would send), Model, deploy, Transformer
  sdk_v3.py   SDK v3 (`sagemaker>=3`): ModelTrainer and `deploy_v3` (CreateModel / CreateEndpoint)

The command `imgclf sagemaker train|tune|deploy|transform` is `imgclf.cli.sagemaker`; `--local` runs the same
objects in SageMaker local mode (Docker, file:// data, no AWS account needed).
"""
