# The batcher worker image: the package and its dependencies, no secrets.
# Keys and URLs come from the environment at run time (docker-compose.yml passes them through).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    BATCHER_HOME=/data

WORKDIR /app
COPY pyproject.toml README.md ./
COPY jobs ./jobs
COPY workers ./workers
COPY batcher ./batcher
RUN pip install ".[flower]" && useradd --create-home --uid 10001 batcher && mkdir -p /data && chown batcher /data

USER batcher
VOLUME ["/data"]
CMD ["batcher", "worker", "--processes", "2"]
