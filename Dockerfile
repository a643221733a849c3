# dylora-moe training image for Vertex AI (or any container runtime with NVIDIA GPUs).
# Build and push (Artifact Registry; see README "Cloud training"):
#   gcloud artifacts repositories create dylora --repository-format=docker --location=us-central1
#   gcloud auth configure-docker us-central1-docker.pkg.dev
#   docker build -t us-central1-docker.pkg.dev/PROJECT/dylora/dylora-moe:0.1.0 .
#   docker push us-central1-docker.pkg.dev/PROJECT/dylora/dylora-moe:0.1.0
# transformers 5 disables torch < 2.6, so the CUDA base must ship torch >= 2.6 (pip then keeps it).
# Override with --build-arg BASE_IMAGE=… for another CUDA/torch combination.
ARG BASE_IMAGE=pytorch/pytorch:2.7.1-cuda12.8-cudnn9-runtime
FROM ${BASE_IMAGE}

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TOKENIZERS_PARALLELISM=false

# bubblewrap: the namespace layer of the eval sandbox (docs/eval.md); without it evaluation warns and falls back
RUN apt-get update && apt-get install -y --no-install-recommends bubblewrap && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/dylora-moe
COPY pyproject.toml README.md ./
COPY src ./src
# The base image's CUDA torch satisfies pyproject's torch range, so pip keeps it and adds only the rest.
RUN pip install ".[all]"

# Exec form: the entrypoint is PID 1 and exec()s the trainer (or torchrun), so SIGTERM reaches it directly.
ENTRYPOINT ["python", "-m", "dylora_moe.cloud.entrypoint"]
