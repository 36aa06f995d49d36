# The separation service on CUDA 13.0, the one CUDA line of requirements-gpu.txt (torch 2.13.0 and
# onnxruntime-gpu 1.31.1 are CUDA 13 builds): hosts need an NVIDIA driver >= 580. The base is CUDA's smallest
# flavour: the CUDA runtime, cuBLAS, cuDNN and the rest come from the nvidia-* wheels torch and onnxruntime-gpu
# install (a cudnn-runtime base would carry them twice), the driver from the host (the NVIDIA container runtime
# mounts it; the base's NVIDIA_REQUIRE_CUDA refuses an older driver). Dependencies come from the same published
# wheel bundles the boot chain installs on bare machines (one pinned set for both). Build:
#   docker build --build-arg BASE_URL=https://files.example.com/spark/v1 --build-arg MANIFEST_SHA256=<sha256> \
#                --build-arg APP_VERSION=v1.0.0 [--build-arg BAKE_MODELS=1] -t spark-separation:v1.0.0 .
# Run: docker run --gpus all -p 8185:8185 -v spark-models:/models-cache -v spark-data:/workspace \
#          -e SPARK_API_TOKEN=... spark-separation:v1.0.0          (hardening recipe: docs/deploy.md)
# Layers are ordered by how often they change: system packages, the wheels (rebuilt only when the requirements,
# the installer or the bundle change), the optional models, and the app code last, so a code change rebuilds
# and pushes megabytes. Anything that installs the app itself (pip install --no-deps -e .) belongs after the
# code COPY, never before the wheels.
# tests/test_gpu_stack.py keeps this base, the pins, the templates and the docs on the same CUDA line and Python.
FROM nvidia/cuda:13.0.2-base-ubuntu24.04

ARG SPARK_UID=10001

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# Ubuntu 24.04's python3 is 3.12, a supported version. Distribution packages are not version-pinned: the archive
# drops old versions on security updates, which would break the build; the base tag and the wheel bundles are
# pinned. util-linux has setpriv (the privilege drop of docker-entrypoint.sh) and findmnt.
# hadolint ignore=DL3008
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3 python3-venv ca-certificates curl unzip tini util-linux \
    && rm -rf /var/lib/apt/lists/*

# The service's dirs belong to uid 10001 and group 0, group-writable: docker run --user <any uid> starts in
# group 0 and can write them too.
RUN groupadd --gid "${SPARK_UID}" spark \
    && useradd --create-home --uid "${SPARK_UID}" --gid "${SPARK_UID}" --shell /usr/sbin/nologin spark \
    && dirs=(/opt/spark /models-cache /workspace/spark /var/cache/spark/downloads /home/spark) \
    && mkdir -p "${dirs[@]}" /home/spark/.cache/torch \
    && chown -R "${SPARK_UID}:0" "${dirs[@]}" \
    && chmod -R g=u "${dirs[@]}"

# Runtime settings only: no build argument (BASE_URL, MANIFEST_SHA256) stays in the image's environment.
# LOG_FILE is empty: the container's log is its stdout (docker logs), and the root filesystem may be read-only.
ENV APP_DIR=/opt/spark/app \
    VENV_DIR=/opt/spark/venv \
    MODELS_DIR=/models-cache \
    SPARK_DATA_DIR=/workspace/spark \
    LOG_FILE="" \
    SPARK_UID=${SPARK_UID} \
    SPARK_HOME=/home/spark \
    TORCH_HOME=/home/spark/.cache/torch \
    HOST=0.0.0.0 \
    PORT=8185 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

# ---- the wheels: their own layer, cached while the requirements, the installer and the bundle stay the same ----
# The build runs as the service user (numeric: no name lookup needed), group 0 like the dirs above.
USER ${SPARK_UID}:0
COPY --chown=${SPARK_UID}:0 requirements.txt requirements-common.txt requirements-gpu.txt scripts/lib.sh \
     scripts/demucsServe.sh /opt/spark/setup/
# BASE_URL and MANIFEST_SHA256 are build arguments only (MANIFEST_SHA256 pins the bundle and keys this layer's
# cache: a new bundle under the same BASE_URL needs a new value). The venv's marker (.spark-wheels) is the
# readiness fact that ships with the image.
ARG BASE_URL=""
ARG MANIFEST_SHA256=""
RUN if [ -z "${BASE_URL}" ]; then echo "build with --build-arg BASE_URL=<where the artifacts are>" >&2; exit 1; fi \
    && BASE_URL="${BASE_URL}" MANIFEST_SHA256="${MANIFEST_SHA256}" DOWNLOAD_DIR=/tmp/spark-build \
       SKIP_MODELS=1 PYTHON_INSTALL=none bash /opt/spark/setup/demucsServe.sh \
    && rm -rf /tmp/spark-build

# ---- the models, only with BAKE_MODELS=1 (a bigger image; without it they come from the volume or BASE_URL) ----
ARG BAKE_MODELS=0
RUN if [ "${BAKE_MODELS}" = 1 ]; then \
        BASE_URL="${BASE_URL}" MANIFEST_SHA256="${MANIFEST_SHA256}" DOWNLOAD_DIR=/tmp/spark-build \
        SKIP_WHEELS=1 bash /opt/spark/setup/demucsServe.sh && rm -rf /tmp/spark-build; \
    fi

# Metadata before the code, so a code change does not redo it.
EXPOSE 8185
# Healthy only when /ready is 200: the pack is loaded and, with SPARK_DEVICE=cuda, the GPU self-test passed.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20m --retries=3 \
    CMD ["/opt/spark/app/scripts/healthcheck.sh"]
# Our own ENTRYPOINT replaces the base image's (nvidia_entrypoint.sh) and resets its CMD; tini reaps and forwards
# signals. docker-entrypoint.sh starts as root only to create and own the service's dirs on root-owned volumes
# (RunPod), then runs entrypoint.sh as uid SPARK_UID, which execs the server in the foreground. uvicorn ends a
# graceful SIGTERM shutdown by re-raising the signal (status 143): `-e 143` makes `docker stop` a clean exit 0.
ENTRYPOINT ["/usr/bin/tini", "-e", "143", "--", "/opt/spark/app/scripts/docker-entrypoint.sh"]
CMD []

# ---- the app code: the last layers (megabytes) -------------------------------------------------------------
ARG APP_VERSION=dev
ENV APP_VERSION=${APP_VERSION}
COPY --chown=${SPARK_UID}:0 . /opt/spark/app
# The app is baked: entrypoint.sh uses it as long as APP_VERSION matches this VERSION file. Its bytecode is
# compiled here, since the app dir may be read-only at run time.
RUN echo "${APP_VERSION}" > /opt/spark/app/VERSION \
    && "${VENV_DIR}/bin/python" -m compileall -q /opt/spark/app >/dev/null

# Start as root for the volume fix-up above; docker-entrypoint.sh drops to SPARK_UID before anything else runs.
# hadolint ignore=DL3002
USER 0:0
