#!/bin/sh
# The images' ENTRYPOINT (exec form, under tini, which reaps zombies and forwards SIGTERM): SageMaker starts
# `IMAGE train` or `IMAGE serve`; SDK v3 starts the train image with no argument. Each branch `exec`s, so the
# trainer or server is the process tini signals (docker stop / SageMaker stop -> SIGTERM -> graceful exit).
# Anything else runs as a command (`docker run IMAGE pip check`, `docker run IMAGE imgclf --help`).
set -eu
role=${IMGCLF_IMAGE_ROLE:-train}
[ $# -gt 0 ] || set -- "$role"
case "$1" in
  train | serve)
    if [ "$1" != "$role" ]; then
      echo "imgclf: this is the $role image; '$1' runs in the imgclf $1 image (Dockerfile.$1)." >&2
      exit 2
    fi
    ;;
esac
case "$1" in
  # sagemaker-training's trainer with SAGEMAKER_TRAINING_MODULE=imgclf.training.contract:main; outside SageMaker
  # it first writes the config files SageMaker would have written (imgclf.training.contract.container_main).
  train) shift; exec python -m imgclf.training.contract "$@" ;;
  serve) shift; exec imgclf serve "$@" ;;
  # The pipeline's evaluation step (a SageMaker Processing job in the train image): imgclf.processing_contract.
  evaluate) shift; exec imgclf evaluate "$@" ;;
  *) exec "$@" ;;
esac
