# Builds the processor and a small runtime image (Debian slim, non-root).
#   docker build -t feedback-webhooks:local .
# Build stage: the same native toolchain as .ci/run (bindgen for RocksDB, cmake and the
# curl/SASL/OpenSSL headers for the bundled librdkafka).
FROM rust:1-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      libclang-dev cmake pkg-config libcurl4-openssl-dev libsasl2-dev libssl-dev zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --locked --release --bin feedback-webhooks \
 && cp target/release/feedback-webhooks /feedback-webhooks

# Runtime stage: only the shared libraries the binary links against, and CA roots for
# Kafka over TLS (webhook TLS uses the roots built into the binary).
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      ca-certificates libcurl4 libsasl2-2 libssl3 zlib1g \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/feedback-webhooks --create-home app
COPY --from=build /feedback-webhooks /usr/local/bin/feedback-webhooks
USER 10001
WORKDIR /var/lib/feedback-webhooks
# The operator port: /metrics, /healthz, /readyz.
EXPOSE 9464
ENV FW_HTTP__LISTEN=0.0.0.0:9464 \
    FW_STORE__PATH=/var/lib/feedback-webhooks/config-cache \
    FW_LOG__FORMAT=json
ENTRYPOINT ["feedback-webhooks"]
CMD ["run"]
