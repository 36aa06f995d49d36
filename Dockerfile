# The separation service on CUDA 13.0 + cuDNN 9, the one CUDA line of requirements-gpu.txt (torch 2.13.0 and
# onnxruntime-gpu 1.31.1 are CUDA 13 builds): hosts need an NVIDIA driver >= 580. Dependencies come from the same
# published wheel bundles the boot chain installs on bare machines (one pinned set for both), models are baked in
# (BAKE_MODELS=1) or fetched at start by the same scripts. Build:
#   docker build --build-arg BASE_URL=https://files.example.com/spark/v1 --build-arg APP_VERSION=v1.0.0 \
#                [--build-arg BAKE_MODELS=1] -t spark-separation:v1.0.0 .
# Run: docker run --gpus all -p 8185:8185 -e SPARK_API_TOKEN=... spark-separation:v1.0.0   (see docs/deploy.md)
# tests/test_gpu_stack.py keeps this base, the pins, the templates and the docs on the same CUDA line and Python.
FROM nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04

ARG APP_VERSION=dev
ARG BASE_URL=""
ARG BAKE_MODELS=0
ARG SPARK_UID=10001

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# Ubuntu 24.04's python3 is 3.12, a supported version. Distribution packages are not version-pinned: the archive
# drops old versions on security updates, which would break the build; the base tag and the wheel bundles are
# pinned. util-linux has setpriv (the privilege drop of docker-entrypoint.sh).
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3 python3-venv ca-certificates curl unzip tini util-linux \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --gid "${SPARK_UID}" spark \
    && useradd --create-home --uid "${SPARK_UID}" --gid "${SPARK_UID}" --shell /usr/sbin/nologin spark \
    && mkdir -p /opt/spark /models-cache /workspace/spark /var/log/spark /var/lib/spark /var/cache/spark \
    && chown -R spark:spark /opt/spark /models-cache /workspace/spark /var/log/spark /var/lib/spark /var/cache/spark

ENV APP_VERSION=${APP_VERSION} \
    BASE_URL=${BASE_URL} \
    APP_DIR=/opt/spark/app \
    VENV_DIR=/opt/spark/venv \
    MODELS_DIR=/models-cache \
    SPARK_DATA_DIR=/workspace/spark \
    LOG_FILE=/var/log/spark/boot.log \
    SPARK_UID=${SPARK_UID} \
    SPARK_HOME=/home/spark \
    TORCH_HOME=/home/spark/.cache/torch \
    HOST=0.0.0.0 \
    PORT=8185 \
    PYTHONUNBUFFERED=1

# Metadata before the big layer, so nothing after it copies the installed tree again.
EXPOSE 8185
HEALTHCHECK --interval=30s --timeout=5s --start-period=20m --retries=3 \
    CMD ["/bin/sh", "-c", "curl -fsS \"http://127.0.0.1:${PORT}/health\" || exit 1"]
# Our own ENTRYPOINT replaces the base image's (nvidia_entrypoint.sh) and resets its CMD; tini reaps and forwards
# signals. docker-entrypoint.sh starts as root only to create and own the service's dirs on root-owned volumes
# (RunPod), then runs entrypoint.sh as uid SPARK_UID, which execs the server in the foreground. uvicorn ends a
# graceful SIGTERM shutdown by re-raising the signal (status 143): `-e 143` makes `docker stop` a clean exit 0.
ENTRYPOINT ["/usr/bin/tini", "-e", "143", "--", "/opt/spark/app/scripts/docker-entrypoint.sh"]
CMD []

COPY --chown=${SPARK_UID}:${SPARK_UID} . /opt/spark/app
# The build itself runs as the service user (numeric: no name lookup needed).
USER ${SPARK_UID}:${SPARK_UID}
WORKDIR /opt/spark/app

# The app is baked: entrypoint.sh uses it as long as APP_VERSION matches this VERSION file.
RUN echo "${APP_VERSION}" > /opt/spark/app/VERSION \
    && if [ -z "${BASE_URL}" ]; then echo "build with --build-arg BASE_URL=<where the artifacts are>" >&2; exit 1; fi \
    && if [ "${BAKE_MODELS}" = 1 ]; then skip=0; else skip=1; fi \
    && SKIP_MODELS="${skip}" PYTHON_INSTALL=none bash /opt/spark/app/scripts/demucsServe.sh \
    && rm -rf /var/cache/spark/downloads

# Start as root for the volume fix-up above; docker-entrypoint.sh drops to SPARK_UID before anything else runs.
# hadolint ignore=DL3002
USER 0:0
