# o4o-pulse worker image: `docker build -t o4o-pulse .`, then `docker run o4o-pulse` runs `pulse worker`.
# Any other command of the CLI runs the same way: `docker run o4o-pulse simulate --scenario steady`.
ARG PYTHON_IMAGE=python:3.11-slim

# --- build: a virtualenv with the project and its pinned dependencies (as `make install`, minus dev) ---
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Dependencies first, from the same pins as the developer venv (constraints.txt), so code edits
# do not invalidate the dependency layer.
COPY pyproject.toml constraints.txt README.md ./
RUN python -m venv /opt/pulse \
    && /opt/pulse/bin/pip install --upgrade pip \
    && /opt/pulse/bin/python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && /opt/pulse/bin/pip install -c constraints.txt -r /tmp/requirements.txt
COPY pipeline ./pipeline
COPY agents ./agents
COPY schemas ./schemas
RUN /opt/pulse/bin/pip install --no-deps -c constraints.txt . \
    && /opt/pulse/bin/pulse --help >/dev/null

# --- runtime: the virtualenv only, run by an unprivileged user ---
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="o4o-pulse" \
      org.opencontainers.image.description="Kafka events -> windowed metrics -> alerts -> notifications"
# A fixed numeric UID/GID, so Kubernetes can check runAsNonRoot and fsGroup can match it.
RUN groupadd --system --gid 10001 pulse \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/pulse --no-create-home \
       --shell /usr/sbin/nologin pulse \
    && mkdir -p /var/lib/pulse \
    && chown 10001:10001 /var/lib/pulse
COPY --from=build /opt/pulse /opt/pulse
# PULSE_WEB_HOST: the worker binds loopback by default; a container must listen on every interface.
ENV PATH=/opt/pulse/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PULSE_WEB_HOST=0.0.0.0 \
    PULSE_WEB_PORT=6066 \
    PULSE_DATA_DIR=/var/lib/pulse
WORKDIR /var/lib/pulse
USER 10001:10001
VOLUME ["/var/lib/pulse"]
EXPOSE 6066
# GET /health answers 200 once the worker has joined its group and recovered its state, 503 before
# (urlopen raises on 503); python:slim has no curl, so urllib does the request.
HEALTHCHECK --interval=15s --timeout=5s --start-period=90s --retries=4 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PULSE_WEB_PORT', '6066'), timeout=4)"]
ENTRYPOINT ["pulse"]
CMD ["worker"]
