# syntax=docker/dockerfile:1
# Turnout gateway image. Build: docker build -t turnout:0.1.0 .
# Run:   docker run -p 8080:8080 -v "$PWD/turnout.yaml:/etc/turnout/turnout.yaml:ro" turnout:0.1.0
# The config is read from /etc/turnout/turnout.yaml (the Helm chart mounts a ConfigMap there) and
# server.state_dir must be a writable volume; secrets come only from environment variables.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# Builder: resolve and install the wheel with its dependencies into a self-contained virtualenv.
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/turnout
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY policies ./policies
COPY collectors ./collectors
RUN /opt/turnout/bin/pip wheel --no-deps --wheel-dir /tmp/wheels . \
 && /opt/turnout/bin/pip install /tmp/wheels/*.whl \
 && /opt/turnout/bin/pip uninstall -y pip \
 && /opt/turnout/bin/python -m compileall -q /opt/turnout

# Runtime: the same Python, the virtualenv, an unprivileged user; no compilers, no package manager runs.
FROM ${PYTHON_IMAGE}
ENV PATH=/opt/turnout/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN groupadd --system --gid 10001 turnout \
 && useradd --system --uid 10001 --gid turnout --home-dir /var/lib/turnout --no-create-home \
      --shell /usr/sbin/nologin turnout \
 && mkdir -p /etc/turnout /var/lib/turnout \
 && chown turnout:turnout /var/lib/turnout
COPY --from=builder /opt/turnout /opt/turnout
WORKDIR /var/lib/turnout
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["turnout"]
CMD ["serve", "-c", "/etc/turnout/turnout.yaml"]
