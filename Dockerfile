# lsr: CPU image. The core install by default (index, vector I/O, inference-free search: no torch,
# no faiss, no Java); LSR_EXTRAS adds extras, e.g. --build-arg LSR_EXTRAS=encoders,dense.
FROM python:3.11-slim
ENV PIP_NO_CACHE_DIR=1 NUMBA_CACHE_DIR=/tmp/numba-cache PYTHONUNBUFFERED=1
WORKDIR /app
COPY constraints.txt pyproject.toml README.md ./
COPY lsr ./lsr
COPY service ./service
# Point this at PyTorch's CPU wheel index to keep CUDA libraries out of the image.
ARG PIP_EXTRA_INDEX_URL=""
ARG LSR_EXTRAS=""
RUN PIP_EXTRA_INDEX_URL="$PIP_EXTRA_INDEX_URL" pip install -c constraints.txt ".${LSR_EXTRAS:+[$LSR_EXTRAS]}"
ENTRYPOINT ["lsr"]
CMD ["--help"]
