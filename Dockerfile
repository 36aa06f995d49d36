# The separation service on a CUDA runtime. Dependencies come from the same published wheel bundles the boot
# chain installs on bare machines (one pinned set for both), models are baked in (BAKE_MODELS=1) or fetched at
# start by the same scripts. Build:
#   docker build --build-arg BASE_URL=https://files.example.com/spark/v1 --build-arg APP_VERSION=v1.0.0 \
#                [--build-arg BAKE_MODELS=1] -t spark-separation:v1.0.0 .
# Run: docker run --gpus all -p 8185:8185 -e SPARK_API_TOKEN=... spark-separation:v1.0.0   (see docs/deploy.md)
FROM nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04

ARG APP_VERSION=dev
ARG BASE_URL=""
ARG BAKE_MODELS=0
ARG SPARK_UID=10001

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# Ubuntu's python3 is 3.10, a supported version. Distribution packages are not version-pinned: the archive drops
# old versions on security updates, which would break the build; the base tag and the wheel bundles are pinned.
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3 python3-venv ca-certificates curl unzip tini \
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
    TORCH_HOME=/home/spark/.cache/torch \
    HOST=0.0.0.0 \
    PORT=8185 \
    PYTHONUNBUFFERED=1

COPY --chown=${SPARK_UID}:${SPARK_UID} . /opt/spark/app
# numeric, so a runtime that checks "non-root" without /etc/passwd (Kubernetes runAsNonRoot) can tell
USER ${SPARK_UID}:${SPARK_UID}
WORKDIR /opt/spark/app

# The app is baked: entrypoint.sh uses it as long as APP_VERSION matches this VERSION file.
RUN echo "${APP_VERSION}" > /opt/spark/app/VERSION \
    && if [ -z "${BASE_URL}" ]; then echo "build with --build-arg BASE_URL=<where the artifacts are>" >&2; exit 1; fi \
    && if [ "${BAKE_MODELS}" = 1 ]; then skip=0; else skip=1; fi \
    && SKIP_MODELS="${skip}" PYTHON_INSTALL=none bash /opt/spark/app/scripts/demucsServe.sh \
    && rm -rf /var/cache/spark/downloads

EXPOSE 8185
HEALTHCHECK --interval=30s --timeout=5s --start-period=20m --retries=3 \
    CMD ["/bin/sh", "-c", "curl -fsS \"http://127.0.0.1:${PORT}/health\" || exit 1"]

# Our own ENTRYPOINT replaces the base image's (nvidia_entrypoint.sh) and resets its CMD; tini reaps and forwards
# signals to the server, which entrypoint.sh execs in the foreground.
ENTRYPOINT ["/usr/bin/tini", "--", "/opt/spark/app/scripts/entrypoint.sh"]
CMD []
