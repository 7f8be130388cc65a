# FLARE21 abdominal-organ segmentation: the submission image.
#
#   docker build -t team:latest .
#   docker container run --gpus="device=0" --name team --rm \
#     -v $PWD/inputs/:/workspace/inputs/ -v $PWD/outputs/:/workspace/outputs/ \
#     team:latest /bin/bash -c "sh predict.sh"
#
# See docs/container.md for the base-image choice, running as non-root and the image size.

# A slim Debian bookworm image with CPython 3.11, pinned by tag and digest. torch's PyPI
# wheel brings its own CUDA runtime libraries (the nvidia-* wheels), so no CUDA base image
# is needed: `--gpus` injects only the driver. Any image with python3 (3.11) and its venv
# module works here, e.g. a local Debian bookworm root file system.
ARG BASE_IMAGE=python:3.11.13-slim-bookworm@sha256:86adf8dbadc3d6e82ee5dd2c74bec2e1c2467cdad47886280501df722372d2e1
FROM ${BASE_IMAGE}

# The CUDA line: 13 (the default: torch 2.13.0 with CUDA 13.0, NVIDIA driver >= 580) or 12
# (torch 2.10.0 with CUDA 12.8, driver >= 525; 570 serves all of CUDA 12.8). Each line's torch and
# CUDA libraries are pinned in requirements-cuda<line>.txt; docs/container.md has the details.
ARG CUDA=13

# Unset by default: a plain `docker build` installs from the package index. An offline build
# passes PIP_NO_INDEX=1 and PIP_FIND_LINKS=/a/wheelhouse (pip reads both from the environment).
ARG PIP_NO_INDEX
ARG PIP_FIND_LINKS
# Unset by default. A build behind a TLS-inspecting proxy passes the path of a CA bundle mounted
# into the build (pip reads PIP_CERT from the environment); see docs/container.md.
ARG PIP_CERT

# Run time writes nothing outside the output folder and /tmp, as root or as any --user:
# every cache and home directory points into /tmp, and no .pyc is written (they are
# compiled at build time below). Nothing here picks a GPU: the organisers do.
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    LANG=C.UTF-8 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    MPLCONFIGDIR=/tmp/matplotlib \
    TORCH_HOME=/tmp/torch \
    TORCHINDUCTOR_CACHE_DIR=/tmp/torchinductor \
    TRITON_CACHE_DIR=/tmp/triton \
    CUDA_CACHE_PATH=/tmp/nv/ComputeCache \
    nnUNet_raw_data_base=/tmp/nnunet/raw \
    nnUNet_preprocessed=/tmp/nnunet/preprocessed \
    RESULTS_FOLDER=/tmp/nnunet/results \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

# Dependencies first, in their own layer: a change to the code or the weights reuses it.
# torch goes in alone first, at the CUDA line's exact pin, so that no other package can make
# the resolver pick a different torch build; then requirements.txt without its torch line, under
# the same constraints. pip compiles every installed module; the standard library is compiled
# too, so that start-up reads .pyc files only.
COPY requirements.txt /opt/requirements.txt
COPY requirements-cuda12.txt requirements-cuda13.txt /opt/
RUN set -eu; \
    [ -n "${PIP_NO_INDEX:-}" ] || unset PIP_NO_INDEX; \
    [ -n "${PIP_FIND_LINKS:-}" ] || unset PIP_FIND_LINKS; \
    [ -n "${PIP_CERT:-}" ] || unset PIP_CERT; \
    constraints="/opt/requirements-cuda${CUDA}.txt"; \
    [ -f "$constraints" ] || { echo "CUDA=${CUDA}: no $constraints (use 13 or 12)" >&2; exit 1; }; \
    python3 -m venv /opt/venv; \
    grep -E '^torch==' "$constraints" > /tmp/torch-requirement.txt; \
    grep -vE '^torch==' /opt/requirements.txt > /tmp/other-requirements.txt; \
    pip install --no-cache-dir -c "$constraints" -r /tmp/torch-requirement.txt; \
    pip install --no-cache-dir -c "$constraints" -r /tmp/other-requirements.txt; \
    pip check; \
    python3 -m compileall -qq "$(python3 -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')" || true; \
    mkdir -p /workspace/inputs /workspace/outputs; \
    chmod 1777 /workspace/outputs; \
    rm -rf /tmp/* /root/.cache

# The organisers run `sh predict.sh` here, with inputs/ and outputs/ mounted.
WORKDIR /workspace

# Weights change less often than the code, so they come first.
COPY weights/ /workspace/weights/
COPY predict.sh /workspace/predict.sh
COPY app/ /workspace/app/
RUN python3 -m compileall -q /workspace/app

CMD ["sh", "predict.sh"]
