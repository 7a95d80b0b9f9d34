# syntax=docker/dockerfile:1
# cartpulse: one binary (`cartpulse`) plus the admin console assets in static/.
#
#   docker build -t cartpulse .
#   docker run -p 8080:8080 -e CARTPULSE_DATABASE_URL=postgres://… cartpulse
#
# Stages: chef (cargo-chef installed) → planner (dependency recipe) → builder
# (dependencies cached in their own layer, then the release binary) → console
# (npm build of console/ when it exists) → healthcheck (a static busybox for
# the HEALTHCHECK probe) → built (the files the runtime takes from the stages
# above, in /out) → runtime (slim Debian, non-root).
#
# RUNTIME_INPUTS names the stage the runtime takes its files from: `built`
# (the default; everything from source, as the release pipeline builds it) or
# `prebuilt`, which takes them from the build context instead:
# prebuilt/cartpulse, prebuilt/busybox (static), prebuilt/ca-certificates.crt
# and the committed static/. scripts/image-smoke.sh builds that way, with
# buildah and no registry, around a binary built on the host.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm
ARG RUNTIME_INPUTS=built

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS chef
RUN cargo install cargo-chef --locked --version 0.1.78
WORKDIR /src

# The recipe lists only the workspace's manifests and lock file, so the
# dependency layer below is rebuilt only when those change.
FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --locked --recipe-path recipe.json --bin cartpulse
# Only what the binary is built from, so console or docs edits keep this layer.
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY actors actors
COPY entities entities
COPY migration migration
RUN cargo build --release --locked --bin cartpulse \
    && install -D -m 0755 target/release/cartpulse /out/cartpulse

# The admin console is optional: when console/package.json exists it is built
# with `npm ci && npm run build`, which writes to ../static (i.e. /app/static).
# The `.dockerignore` source in each COPY is always there, so the COPY works
# with or without console/ and static/ in the build context.
FROM node:20-bookworm-slim AS console
WORKDIR /app
COPY .dockerignore console/package*.json console/
RUN if [ -f console/package.json ]; then npm ci --prefix console --no-audit --no-fund; fi
COPY .dockerignore consol[e] console/
COPY .dockerignore stati[c] static/
RUN if [ -f console/package.json ]; then npm run --prefix console build; fi \
    && rm -f static/.dockerignore

# A statically linked busybox: its `wget` is the HEALTHCHECK probe, so the
# runtime image needs neither curl nor apt.
FROM busybox:1.37.0-musl AS healthcheck

# What the runtime stage copies, gathered in /out. CA roots for TLS to
# Postgres, Redis and S3 come from the builder (copied: no apt layer to pin).
FROM scratch AS built
COPY --from=builder /etc/ssl/certs/ca-certificates.crt /out/ca-certificates.crt
COPY --from=healthcheck /bin/busybox /out/busybox
COPY --from=builder /out/cartpulse /out/cartpulse
COPY --from=console /app/static /out/static

# The same files from the build context (see RUNTIME_INPUTS above).
FROM scratch AS prebuilt
COPY prebuilt/ca-certificates.crt prebuilt/busybox prebuilt/cartpulse /out/
COPY static /out/static

FROM ${RUNTIME_INPUTS} AS inputs

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
RUN groupadd --system --gid 10001 cartpulse \
    && useradd --system --uid 10001 --gid cartpulse --home-dir /app --shell /usr/sbin/nologin cartpulse \
    && install -d -o cartpulse -g cartpulse -m 0750 /app/data
COPY --from=inputs /out/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=inputs --chmod=0755 /out/busybox /usr/local/bin/busybox
COPY --from=inputs --chmod=0755 /out/cartpulse /usr/local/bin/cartpulse
COPY --from=inputs --chown=root:root /out/static /app/static
WORKDIR /app

# Configuration is CARTPULSE_* environment (nested keys with `__`, e.g.
# CARTPULSE_INGEST__MAX_BODY_BYTES); see docs/configuration.md. The
# database and Redis URLs are secrets: pass them at run time (ECS injects them
# from Secrets Manager), never bake them into the image.
# The database default is an embedded SQLite file in /app/data, the one
# directory the runtime user may write (for `docker run` on one host; ECS sets
# Postgres through a secret and runs with a read-only root filesystem).
ENV CARTPULSE_LISTEN=0.0.0.0:8080 \
    CARTPULSE_DATABASE_URL=sqlite:///app/data/cartpulse.db?mode=rwc \
    CARTPULSE_LOG__FORMAT=json \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt

USER 10001:10001
EXPOSE 8080
# Probes the port of CARTPULSE_LISTEN; /readyz answers 200 only while the
# database answers.
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["/bin/sh", "-c", "exec /usr/local/bin/busybox wget -q -T 2 -O /dev/null \"http://127.0.0.1:${CARTPULSE_LISTEN##*:}/readyz\""]
ENTRYPOINT ["/usr/local/bin/cartpulse"]
CMD ["serve"]
