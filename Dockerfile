# syntax=docker/dockerfile:1
# Shipyard's image: `docker build -t shipyard .` in a clone's root (deploy/compose.yaml builds
# it). The entrypoint is the `shipyard` CLI, so `docker run shipyard serve …` runs a command;
# the Dask commands of the same installation are `--entrypoint dask` (`dask scheduler`,
# `dask worker`), which deploy/compose.yaml uses for the cluster that trains ensembles.

# Build stage: the package and every dependency as wheels (hatchling builds the package;
# the dependencies come from the index as the wheels they are published as).
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# Runtime stage: the wheels installed without an index or a compiler, run as a user that
# owns nothing but its home.
FROM python:3.11-slim-bookworm
RUN groupadd --system --gid 10001 shipyard \
    && useradd --system --uid 10001 --gid shipyard --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin shipyard \
    && mkdir /data \
    && chown shipyard:shipyard /data
# Bind-mounted from the build stage for this step only: no layer keeps the wheel files.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links /wheels /wheels/shipyard_ml-*.whl
# A named volume mounted on /data starts as this folder, owned by the user, so every
# container of a deployment that mounts it shares one home (artifacts, keys, data).
ENV SHIPYARD_HOME=/data \
    PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /data
EXPOSE 8000
# `shipyard serve`'s readiness; the image has no curl, and Python is there anyway. Other
# commands (stream, monitor, dask) have no port 8000: their compose services set their own.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/v2/health/ready', timeout=4)"]
ENTRYPOINT ["shipyard"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
