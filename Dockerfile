# Build a wheel in one stage, install it in a slim runtime stage that runs as a non-root user.
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY exporter ./exporter
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
    && pip wheel --no-cache-dir --wheel-dir /wheels /wheels/bsg_exporter-*.whl

FROM python:3.11-slim-bookworm
RUN useradd --system --uid 10001 --home-dir /var/lib/bsg-exporter --create-home \
        --shell /usr/sbin/nologin bsg-exporter
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels /wheels/bsg_exporter-*.whl \
    && rm -rf /wheels
USER 10001
WORKDIR /var/lib/bsg-exporter
# The state file (state.path, relative to here by default): on a volume, a recreated container
# resumes where the last one stopped instead of starting cold.
VOLUME /var/lib/bsg-exporter
EXPOSE 9746
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9746/-/healthy', timeout=3)"]
ENTRYPOINT ["bsg-exporter"]
CMD ["--config.file=/etc/bsg-exporter/config.yaml"]
