# syntax=docker/dockerfile:1
#
# emailplan container image: one image for every process (operator, worker, api,
# db upgrade); the Helm chart picks the subcommand through the container args.
#
#   docker build -t emailplan:0.1.0 .
#   docker run --rm emailplan:0.1.0 --help
#
# PYTHON_IMAGE may be any image with Python 3.11+, pip and venv (hack/node builds one
# from Debian packages with mmdebstrap: --build-arg PYTHON_IMAGE=localhost/emailplan-base:...).
# PIP_INDEX_URL points the builder's pip at another package index (a mirror or proxy);
# PIP_CERT at a CA bundle mounted into the build (a TLS-inspecting proxy), e.g.
#   buildah bud -v /etc/ssl/certs:/run/host-ca:ro --build-arg PIP_CERT=/run/host-ca/ca-certificates.crt .
#
# Stage 1 builds a wheel (and the wheels of all dependencies) with the build tools;
# stage 2 installs only those wheels into a virtualenv, without a compiler, without
# pip caches and without the source tree.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
ARG PIP_INDEX_URL=https://pypi.org/simple
ARG PIP_CERT
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# Dependency metadata first so the wheel cache layer survives source-only changes.
COPY pyproject.toml README.md constraints.txt ./
COPY emailplan ./emailplan
COPY operator ./operator
COPY sender ./sender
# constraints.txt: the dependency versions the tests passed with, not the index's newest.
RUN pip wheel --wheel-dir /wheels -c constraints.txt .

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="emailplan" \
      org.opencontainers.image.description="Kubernetes operator that runs bulk email campaigns through AWS SES" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.1.0"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONFAULTHANDLER=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/emailplan \
    PATH=/opt/emailplan/bin:$PATH
# Install from the builder's wheels only (no index): the image gets exactly what was built.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    python -m venv /opt/emailplan \
    && /opt/emailplan/bin/pip install --no-index --find-links=/wheels emailplan \
    && /opt/emailplan/bin/pip uninstall --yes pip setuptools wheel \
    && groupadd --system --gid 10001 emailplan \
    && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
       --shell /usr/sbin/nologin emailplan
# Numeric UID so Kubernetes can verify runAsNonRoot without resolving names.
USER 10001:10001
WORKDIR /tmp
# api 8080 (HTTP API), operator 8080 (kopf liveness), 9102 (Prometheus metrics of worker/operator)
EXPOSE 8080 9102
ENTRYPOINT ["emailplan"]
CMD ["--help"]
