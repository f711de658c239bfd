# wrk (Debian's package) for `python -m loadtest.bench hits`: idle until the
# command runs `wrk ... -s /bench/report.lua` in it with docker exec.
ARG PYTHON_IMAGE=python:3.12-slim-bookworm
#checkov:skip=CKV_DOCKER_7: the base image is pinned by the PYTHON_IMAGE default above (checkov cannot resolve ARGs)
FROM ${PYTHON_IMAGE}
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk >/dev/null \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10003 --no-create-home --shell /usr/sbin/nologin wrk
COPY report.lua /bench/report.lua
USER wrk
HEALTHCHECK --interval=5s --timeout=2s CMD ["test", "-x", "/usr/bin/wrk"]
CMD ["sleep", "infinity"]
