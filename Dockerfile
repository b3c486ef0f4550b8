# xrouter: the mitmproxy addon serving the OpenAI-compatible API on port 3000.
# Built by docker-compose.yml, which adds Redis and mounts upstreams.json and .env.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# Dependencies first, so editing the code does not reinstall them.
COPY pyproject.toml README.md LICENSE ./
COPY xrouter_core ./xrouter_core
COPY addons ./addons
# The `otel` extra: OpenTelemetry traces when OTEL_EXPORTER_OTLP_ENDPOINT is set (imported
# only then), so the same image serves a Kubernetes deployment with a collector.
RUN pip install ".[otel]" && useradd --create-home --uid 10001 xrouter

USER xrouter
# The configuration comes from files mounted into /config (written by configure.py);
# variables given to the container win over both.
ENV HOST=0.0.0.0 \
    PORT=3000 \
    UPSTREAMS_FILE=/config/upstreams.json \
    XROUTER_ENV_FILE=/config/.env
EXPOSE 3000

HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('PORT', '3000'), timeout=4)"]

# The production command: the same addon on the lean core (README: "Production"); it
# stops cleanly on SIGTERM, writing the last usage counts. Add "--workers", "2" for two cores.
CMD ["xrouter"]
