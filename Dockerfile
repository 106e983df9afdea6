# Ensemble Tap container image (docs/deploy.md).
#   docker build -t ensemble-tap .
#   docker run -p 8080:8080 -e TAP_PROVIDERS_STRIPE_SECRET=whsec_… ensemble-tap
# Stage 1 builds the wheel (its hot path compiled); stage 2 installs it on a slim runtime
# with no compilers.

ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim-bookworm AS build
# gcc: setup.py compiles the webhook hot path with mypyc (bench/README.md, #17).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY src ./src
# mypyc type-checks the hot modules against the dependencies they import: those and mypy
# are installed here, in the build stage only, and the wheel is built without isolation.
# The wheel: the same command tests/deploy/test_image.py runs to check it.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir "mypy>=1.11" "setuptools>=77" wheel . \
 && TAP_MYPYC=required pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /dist .

FROM python:${PYTHON_VERSION}-slim-bookworm
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="Ensemble Tap" \
      org.opencontainers.image.description="Verified SaaS webhooks and polled SaaS APIs as CloudEvents, published once to NATS JetStream" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/evalops/ensemble-tap"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN groupadd --system --gid 10001 tap \
 && useradd --system --uid 10001 --gid tap --home-dir /var/lib/ensemble-tap --shell /usr/sbin/nologin tap \
 && install -d -o tap -g tap -m 0750 /var/lib/ensemble-tap
COPY --from=build /dist/ /tmp/dist/
RUN pip install --no-cache-dir /tmp/dist/*.whl && rm -rf /tmp/dist
COPY deploy/container/config.yaml /etc/ensemble-tap/config.yaml
WORKDIR /var/lib/ensemble-tap
# data_dir: the embedded NATS store, the embedded ClickHouse, SQLite state and the spool.
VOLUME ["/var/lib/ensemble-tap"]
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["ensemble-tap"]
CMD ["serve", "--config", "/etc/ensemble-tap/config.yaml"]
