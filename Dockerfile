# One image, three services: the command chooses which one runs.
#   docker build -t followup .
#   docker run followup python -m services.tracker     (or services.scheduler, services.notifier)
#   docker run followup python -m followup_admin --help (the operator tool)
# Non-root (uid 10001), and fit for a read-only root filesystem (only /tmp is written).
# Linted by hadolint in tests/integration/ops/test_container.py.

FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/followup
WORKDIR /src
# Dependencies first: this layer is rebuilt only when pyproject.toml changes.
COPY pyproject.toml README.md ./
RUN mkdir -p schemas common services followup_admin \
    && /opt/followup/bin/pip install --no-cache-dir . \
    && /opt/followup/bin/pip uninstall --yes followup
COPY schemas ./schemas
COPY common ./common
COPY services ./services
COPY followup_admin ./followup_admin
RUN /opt/followup/bin/pip install --no-cache-dir --no-deps . \
    && /opt/followup/bin/python -m compileall -q /opt/followup/lib

FROM python:3.11-slim-bookworm
RUN groupadd --system --gid 10001 followup \
    && useradd --system --uid 10001 --gid followup --no-create-home \
       --shell /usr/sbin/nologin followup
COPY --from=build /opt/followup /opt/followup
ENV PATH=/opt/followup/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    FOLLOWUP_LOG_FORMAT=json
WORKDIR /tmp
USER 10001:10001
# tracker 8081 (+ MLLP 2575), scheduler 8082, notifier 8083: /metrics, /healthz, /readyz and APIs
EXPOSE 8081 8082 8083 2575
# SIGTERM stops consumers and commits handled offsets; the process is PID 1 and handles it.
STOPSIGNAL SIGTERM
CMD ["python", "-m", "services.tracker"]
