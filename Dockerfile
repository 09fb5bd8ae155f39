# lsr: the HTTP service (`lsr serve`) on CPU, in two stages. The builder installs lsr and its
# extras into /opt/venv; the runtime stage copies only that venv onto a slim Python, runs as the
# non-root user `lsr` and serves the collections in the /data volume on port 8000.
#   docker build -t lsr .                                               # service + encoders
#   docker build -t lsr --build-arg LSR_EXTRAS=service,encoders,dense .  # + dense/hybrid search
#   docker run -p 127.0.0.1:8000:8000 -v lsr-data:/data lsr
#   docker run --rm -v lsr-data:/data lsr lsr collection info /data/NAME   # any lsr command
# torch comes from PyTorch's CPU wheel index (TORCH_INDEX_URL), at the version constraints.txt
# pins (pyproject pins it too): PyPI's wheel would pull several GB of CUDA libraries.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
ARG LSR_EXTRAS=service,encoders
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_CONSTRAINT=/src/constraints.txt
WORKDIR /src
COPY constraints.txt ./
# torch in a layer of its own (before the sources), and only for extras that need it.
RUN python3 -m venv /opt/venv \
 && case ",$LSR_EXTRAS," in \
      *,encoders,*|*,dense,*|*,train,*|*,dev,*) \
        /opt/venv/bin/pip install --index-url "$TORCH_INDEX_URL" torch ;; \
    esac
COPY pyproject.toml README.md ./
COPY lsr ./lsr
COPY service ./service
RUN /opt/venv/bin/pip install ".[$LSR_EXTRAS]" \
 && /opt/venv/bin/python -c "import lsr, service.app"

FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 lsr \
 && useradd --system --uid 10001 --gid lsr --create-home --home-dir /home/lsr lsr \
 && mkdir -p /data /home/lsr/.cache/numba \
 && chown -R lsr:lsr /data /home/lsr
COPY --from=builder /opt/venv /opt/venv
# NUMBA_CACHE_DIR: the site-packages of the venv are root's, the JIT cache needs a writable place.
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 \
    NUMBA_CACHE_DIR=/home/lsr/.cache/numba LSR_DATA_DIR=/data
VOLUME /data
WORKDIR /home/lsr
USER lsr
EXPOSE 8000
# No curl in the slim image: python's urllib asks /readyz (every collection open).
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=4)"]
CMD ["lsr", "serve", "--host", "0.0.0.0", "--port", "8000"]
