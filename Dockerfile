# lsr: CPU image with the core install (no Java, no Pyserini).
FROM python:3.11-slim
ENV PIP_NO_CACHE_DIR=1 NUMBA_CACHE_DIR=/tmp/numba-cache PYTHONUNBUFFERED=1
WORKDIR /app
COPY constraints.txt pyproject.toml README.md ./
COPY lsr ./lsr
COPY service ./service
# Point this at PyTorch's CPU wheel index to keep CUDA libraries out of the image.
ARG PIP_EXTRA_INDEX_URL=""
RUN PIP_EXTRA_INDEX_URL="$PIP_EXTRA_INDEX_URL" pip install -c constraints.txt .
ENTRYPOINT ["lsr"]
CMD ["--help"]
