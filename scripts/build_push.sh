#!/usr/bin/env bash
# Build the imgclf images and push them to Amazon ECR (or build them locally only): train (Dockerfile.train),
# serve (Dockerfile.serve, torch + CUDA) and serve-cpu (Dockerfile.serve-cpu, ONNX Runtime without torch, pushed
# to the serve repository as cpu-TAG).
#
#   scripts/build_push.sh --local                       build all three: imgclf-train:latest imgclf-serve:latest
#                                                       imgclf-serve:cpu-latest
#   scripts/build_push.sh --region us-east-1 --tag v1   build, create ECR repos if missing, log in, tag, push
#                                                       (imgclf-train:v1, imgclf-serve:v1, imgclf-serve:cpu-v1)
#
# Options:
#   --local               only build and tag locally (no AWS); with --local-tag TAG (default: latest)
#   --region REGION       AWS region (default: $AWS_REGION, $AWS_DEFAULT_REGION, then `aws configure get region`)
#   --account ID          AWS account (default: `aws sts get-caller-identity`)
#   --train-repo NAME     ECR repository of the train image (default: imgclf-train)
#   --serve-repo NAME     ECR repository of the serve image (default: imgclf-serve)
#   --tag TAG             tag to push (repeatable; default: the package version and the git short SHA)
#   --latest              also push the tag `latest`
#   --platform PLATFORM   build for PLATFORM (SageMaker runs linux/amd64; on Apple silicon pass linux/amd64,
#                         otherwise the job fails with "exec format error")
#   --base-image IMAGE    base image of the images (default: $BASE_IMAGE, else the Dockerfiles' CUDA image);
#                         also the CPU image's, unless it is an nvidia/cuda image
#   --cpu-base-image IMAGE  base image of serve-cpu (default: $CPU_BASE_IMAGE, else as above, else
#                         Dockerfile.serve-cpu's debian:bookworm-slim)
#   --pretrained-weights PATH|URL   bake pretrained weights into the train image (docker/weights/README.md)
#   --pretrained-weights-sha256 HEX  their expected sha256 (or its first 8+ hex digits); the build fails on a
#                         mismatch. Optional only for files named as torchvision names them (resnet18-f37072fd.pth)
#   --no-build            push the existing local images imgclf-train:<local tag> / imgclf-serve:<local tag>
#   --registry HOST[:PORT]  push to this registry instead of <account>.dkr.ecr.<region>.amazonaws.com
#   --no-login            skip `docker login` (registry already logged in, or one without auth)
#   --only ROLES          build/push only these, comma-separated: train, serve, serve-cpu
#   -h, --help            this text
# Env: DOCKER (docker client; default: one with BuildKit), AWS (aws CLI, default: aws),
#      AWS_ENDPOINT_URL (awscli endpoint override, e.g. a moto server), BUILD_CACHE_KEEP (default 10GB: build
#      cache kept after a build, the rest pruned). A wheelhouse/ filled by docker/wheelhouse.sh is used
#      automatically (offline builds).
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "build_push.sh: error: $*" >&2; exit 1; }
usage() { sed -n '2,/^[^#]/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'; }  # the header comment, however long

LOCAL=0 BUILD=1 LOGIN=1 LATEST=0
REGION="" ACCOUNT="" REGISTRY="" PLATFORM="" WEIGHTS="" WEIGHTS_SHA256="" ONLY=""
LOCAL_TAG=latest
TRAIN_REPO=imgclf-train SERVE_REPO=imgclf-serve
BASE=${BASE_IMAGE:-}
CPU_BASE=${CPU_BASE_IMAGE:-}
TAGS=()
need_value() { [ $# -ge 2 ] && [ -n "$2" ] || die "$1 needs a value (see --help)"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --local) LOCAL=1; shift ;;
    --local-tag) need_value "$@"; LOCAL_TAG=$2; shift 2 ;;
    --region) need_value "$@"; REGION=$2; shift 2 ;;
    --account) need_value "$@"; ACCOUNT=$2; shift 2 ;;
    --train-repo) need_value "$@"; TRAIN_REPO=$2; shift 2 ;;
    --serve-repo) need_value "$@"; SERVE_REPO=$2; shift 2 ;;
    --tag) need_value "$@"; TAGS+=("$2"); shift 2 ;;
    --latest) LATEST=1; shift ;;
    --platform) need_value "$@"; PLATFORM=$2; shift 2 ;;
    --base-image) need_value "$@"; BASE=$2; shift 2 ;;
    --cpu-base-image) need_value "$@"; CPU_BASE=$2; shift 2 ;;
    --pretrained-weights) need_value "$@"; WEIGHTS=$2; shift 2 ;;
    --pretrained-weights-sha256) need_value "$@"; WEIGHTS_SHA256=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --registry) need_value "$@"; REGISTRY=$2; shift 2 ;;
    --no-login) LOGIN=0; shift ;;
    --only) need_value "$@"; ONLY=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
done
ROLES=(train serve serve-cpu)
if [ -n "$ONLY" ]; then
  IFS=, read -r -a ROLES <<<"$ONLY"
  for role in "${ROLES[@]}"; do
    case "$role" in train|serve|serve-cpu) ;; *) die "--only takes train, serve and/or serve-cpu (got '$role')" ;; esac
  done
fi
# The CPU image on --base-image too (the offline test base), but never on a CUDA base: that is what it leaves out.
if [ -z "$CPU_BASE" ] && [ -n "$BASE" ] && [[ "$BASE" != nvidia/cuda* ]]; then CPU_BASE=$BASE; fi

# A docker client that can build with BuildKit (the Dockerfiles use RUN --mount): a client with buildx (Docker >=
# 23), else Debian's 20.10 client (/usr/bin/docker) whose BuildKit is built in.
if [ -z "${DOCKER:-}" ]; then
  if command -v docker >/dev/null && docker buildx version >/dev/null 2>&1; then DOCKER=docker
  elif [ -x /usr/bin/docker ]; then DOCKER=/usr/bin/docker
  else DOCKER=docker; fi
fi
command -v "$DOCKER" >/dev/null || die "docker not found: install Docker (scripts/docker_setup.sh on Debian/Ubuntu)"
$DOCKER info >/dev/null 2>&1 || die "the Docker daemon does not answer ('$DOCKER info' failed): start dockerd or check permissions"
export DOCKER_BUILDKIT=1

VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -n 1)
REVISION=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if ! git diff --quiet HEAD -- src docker Dockerfile.train Dockerfile.serve Dockerfile.serve-cpu pyproject.toml 2>/dev/null; then
  REVISION="$REVISION-dirty"
fi
# serve-cpu is a flavour of the serve image: same repository, its tags prefixed cpu-.
repo_of() { case "$1" in serve-cpu) echo serve ;; *) echo "$1" ;; esac; }
tag_prefix() { case "$1" in serve-cpu) echo cpu- ;; *) echo "" ;; esac; }
local_image() { echo "imgclf-$(repo_of "$1"):$(tag_prefix "$1")$LOCAL_TAG"; }

build() {
  local role=$1 args=()
  args+=(--build-arg "VERSION=$VERSION" --build-arg "REVISION=$REVISION")
  local base=$BASE
  [ "$role" = serve-cpu ] && base=$CPU_BASE
  [ -n "$base" ] && args+=(--build-arg "BASE_IMAGE=$base")
  [ -n "$PLATFORM" ] && args+=(--platform "$PLATFORM")
  if [ "$role" = train ] && [ -n "$WEIGHTS" ]; then args+=(--build-arg "PRETRAINED_WEIGHTS=$WEIGHTS"); fi
  if [ "$role" = train ] && [ -n "$WEIGHTS_SHA256" ]; then
    args+=(--build-arg "PRETRAINED_WEIGHTS_SHA256=$WEIGHTS_SHA256")
  fi
  mkdir -p wheelhouse  # the Dockerfiles bind-mount it; empty means "install from the index"
  echo "build_push.sh: building $(local_image "$role") (base: ${base:-the Dockerfile default})" >&2
  local start=$SECONDS
  $DOCKER build -f "Dockerfile.$role" -t "$(local_image "$role")" "${args[@]}" . >&2
  echo "build_push.sh: built $(local_image "$role") in $((SECONDS - start)) s" >&2
}

# Bounded disk, also after a failed build: the previous builds of these tags (now dangling) go, and the build
# cache (each cold build of the pair leaves ~25-40 GB: venv layers, the wheelhouse context) is trimmed.
trim_disk() {
  for role in "${ROLES[@]}"; do
    $DOCKER image prune -f --filter "label=org.opencontainers.image.title=imgclf-$role" >/dev/null || true
  done
  $DOCKER builder prune -f --keep-storage "${BUILD_CACHE_KEEP:-10GB}" >/dev/null || true
}
if [ "$BUILD" = 1 ]; then
  trap trim_disk EXIT
  for role in "${ROLES[@]}"; do build "$role"; done
else
  for role in "${ROLES[@]}"; do
    $DOCKER image inspect "$(local_image "$role")" >/dev/null 2>&1 ||
      die "--no-build: local image $(local_image "$role") does not exist (build it with --local first)"
  done
fi

if [ "$LOCAL" = 1 ]; then
  for role in "${ROLES[@]}"; do echo "$(local_image "$role")"; done
  exit 0
fi

# ---- push ----
AWS=${AWS:-aws}
command -v "$AWS" >/dev/null || die "aws CLI not found: pip install awscli (or AWS CLI v2), then 'aws configure'"
aws_() { "$AWS" ${AWS_ENDPOINT_URL:+--endpoint-url "$AWS_ENDPOINT_URL"} "$@"; }
REGION=${REGION:-${AWS_REGION:-${AWS_DEFAULT_REGION:-$("$AWS" configure get region 2>/dev/null || true)}}}
[ -n "$REGION" ] || die "no AWS region: pass --region or set AWS_REGION"
if [ -z "$ACCOUNT" ]; then
  ACCOUNT=$(aws_ sts get-caller-identity --region "$REGION" --query Account --output text 2>/dev/null) ||
    die "aws sts get-caller-identity failed: no AWS credentials? Run 'aws configure' (or pass --account)"
fi
REGISTRY=${REGISTRY:-$ACCOUNT.dkr.ecr.$REGION.amazonaws.com}
[ ${#TAGS[@]} -gt 0 ] || TAGS=("$VERSION" "${REVISION%-dirty}")
[ "$LATEST" = 1 ] && TAGS+=(latest)

repo_name() { if [ "$(repo_of "$1")" = serve ]; then echo "$SERVE_REPO"; else echo "$TRAIN_REPO"; fi; }
for role in "${ROLES[@]}"; do
  repo=$(repo_name "$role")
  if ! aws_ ecr describe-repositories --region "$REGION" --repository-names "$repo" >/dev/null 2>&1; then
    echo "build_push.sh: creating ECR repository $repo" >&2
    aws_ ecr create-repository --region "$REGION" --repository-name "$repo" \
      --image-scanning-configuration scanOnPush=true >/dev/null || die "could not create ECR repository $repo"
  fi
done

if [ "$LOGIN" = 1 ]; then
  aws_ ecr get-login-password --region "$REGION" |
    $DOCKER login --username AWS --password-stdin "$REGISTRY" >/dev/null ||
    die "docker login to $REGISTRY failed (aws ecr get-login-password: check credentials and region)"
fi

URIS=()
for role in "${ROLES[@]}"; do
  repo=$(repo_name "$role")
  for tag in "${TAGS[@]}"; do
    uri="$REGISTRY/$repo:$(tag_prefix "$role")$tag"
    $DOCKER tag "$(local_image "$role")" "$uri"
    $DOCKER push "$uri" >&2 || die "docker push $uri failed"
    URIS+=("$uri")
  done
done
echo "build_push.sh: pushed; image URIs for SageMaker (image_uri=...):" >&2
printf '%s\n' "${URIS[@]}"
