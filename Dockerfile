# One image for every hub process: the API (default), workers, beat and
# one-shot commands (`hub db upgrade`, `hub keys create NAME`).
#   docker build -t notification-hub .
#   docker run --rm -p 8000:8000 -e HUB_BROKER_URL=... -e HUB_DATABASE_URL=... notification-hub
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HUB_VAR_DIR=/var/lib/hub

RUN groupadd --system --gid 10001 hub \
    && useradd --system --uid 10001 --gid hub --home-dir /var/lib/hub --no-create-home \
        --shell /usr/sbin/nologin hub

# Only what the wheel is built from, so a local .venv/, build/ or var/ never
# reaches the image.
WORKDIR /tmp/hub-src
COPY pyproject.toml settings.toml README.md ./
COPY hub/ hub/
COPY channels/ channels/
COPY templates/ templates/
RUN pip install --no-cache-dir '.[postgres]' \
    && cd / && rm -rf /tmp/hub-src

# The var dir (beat schedule, .eml outbox when no SMTP host is set) is the
# working directory, owned by the hub user before it becomes a volume. With no
# ./settings.toml here the hub reads the settings.toml bundled in the package;
# mount your own and point HUB_SETTINGS at it, or override keys with HUB_* env vars.
RUN mkdir -p /var/lib/hub && chown hub:hub /var/lib/hub
WORKDIR /var/lib/hub
VOLUME ["/var/lib/hub"]

USER 10001:10001

EXPOSE 8000
CMD ["hub", "api", "--host", "0.0.0.0", "--port", "8000"]
