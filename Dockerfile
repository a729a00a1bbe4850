# syntax=docker/dockerfile:1
# clustviz service image. CPU torch by default; for CUDA:
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 -t clustviz:cuda .
FROM python:3.11-slim-bookworm

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# Extras to install, e.g. "ray" for the scale-out profile.
ARG EXTRAS=""

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MPLBACKEND=Agg \
    CLUSTVIZ_HOST=0.0.0.0 \
    CLUSTVIZ_PORT=8000 \
    CLUSTVIZ_DATA_DIR=/data \
    CLUSTVIZ_STATE_DIR=/state

# g++ builds annoy (a trimap dependency) where no wheel exists; curl serves the healthcheck.
RUN apt-get update \
    && apt-get install -y --no-install-recommends g++ curl \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
# Dependencies first (cached layer): torch from the chosen index, in the same resolution as
# trimap, which depends on torch.
COPY pyproject.toml README.md ./
COPY clustviz/__init__.py clustviz/__init__.py
COPY service/__init__.py service/__init__.py
RUN pip install --extra-index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}" ".${EXTRAS:+[$EXTRAS]}" \
    && pip uninstall -y clustviz

COPY clustviz clustviz
COPY service service
RUN pip install --no-deps .
COPY data/demo /data

RUN useradd --create-home --uid 1000 clustviz \
    && mkdir -p /state && chown clustviz /state
USER clustviz
VOLUME ["/state"]
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD curl -fsS "http://127.0.0.1:${CLUSTVIZ_PORT}/health" || exit 1
CMD ["python", "-m", "service"]
