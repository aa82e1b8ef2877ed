# Herald in a container: a multi-stage build of the release binary (rustls,
# so no OpenSSL; glibc only), run as an unprivileged user on the embedded
# SQLite database in a volume.
#
#   docker build -t herald .
#   docker run -p 8080:8080 -v herald-data:/var/lib/herald \
#       -e HERALD_ADMIN_TOKEN=… herald
#
# For PostgreSQL add -e HERALD_DATABASE_URL=postgres://… (the volume is then
# only the data directory's lock and nothing else).

# The toolchain CI tests with.
FROM rust:1.95-bookworm AS build
WORKDIR /src
# The commit `herald --version` reports (there is no .git in the context).
ARG HERALD_GIT_COMMIT=unknown
ENV HERALD_GIT_COMMIT=${HERALD_GIT_COMMIT}
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p herald \
    && cp target/release/herald /usr/local/bin/herald

FROM debian:bookworm-slim
# CA certificates: deliveries verify receivers' TLS certificates.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 herald \
    && useradd --system --uid 10001 --gid herald --home-dir /var/lib/herald \
        --shell /usr/sbin/nologin herald \
    && mkdir -p /var/lib/herald \
    && chown herald:herald /var/lib/herald
COPY --from=build /usr/local/bin/herald /usr/local/bin/herald
USER herald:herald
ENV HERALD_LISTEN=0.0.0.0:8080 \
    HERALD_DATA_DIR=/var/lib/herald \
    HERALD_LOG_FORMAT=json
VOLUME ["/var/lib/herald"]
EXPOSE 8080
# `herald health` asks the server's health route (database included); no
# curl needed in the image.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["herald", "health", "--server", "http://127.0.0.1:8080", "--timeout", "4"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["herald"]
CMD ["serve"]
