# The workspace's service (`app`) and on-call inbox (`inbox`), for the compose stack.
# Build context: the repository root (compose/docker-compose.yml sets it); app.Dockerfile.dockerignore beside
# this file keeps target/ and .git out of the context. The cache mounts need BuildKit, which `docker compose`
# (v2) and Docker Engine 23+ use by default.

# Debian 12 in both stages, so the binaries link against the glibc they run with.
FROM rust:1.95.0-slim-bookworm AS builder
WORKDIR /src
# Only what the build reads: the workspace manifest, the lock file and the crates (all under app/).
COPY Cargo.toml Cargo.lock ./
COPY app ./app
# The registry and target/ live in cache mounts, so a rebuild after a source change recompiles only our crates;
# the binaries are copied out because a cache mount is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin app --bin inbox \
    && install -D -m 0755 -t /out target/release/app target/release/inbox

FROM debian:12.11-slim
# curl is the containers' healthcheck client. Versions are not pinned: the base image pins the Debian point
# release, and a pinned package version disappears from the archive with the next security update.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends curl \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 sre \
    && useradd --system --no-log-init --uid 10001 --gid sre --home-dir /nonexistent --shell /usr/sbin/nologin sre \
    && install -d -o sre -g sre -m 0750 /var/lib/inbox
COPY --from=builder /out/app /out/inbox /usr/local/bin/
# Numeric, so that a runtime can check it is not root without reading /etc/passwd.
USER 10001:10001
# API, admin (/metrics) and on-call inbox, as configured by compose/docker-compose.yml.
EXPOSE 8080 8081 8082
# The app drains in-flight requests on SIGTERM; the inbox service runs `inbox` instead.
CMD ["app"]
