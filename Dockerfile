# Build stage: compile the kanpa binary.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p kanpa-server \
    && cp target/release/kanpa /usr/local/bin/kanpa

# Runtime stage: a small Debian with only the binary and CA certificates.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates tzdata \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/kanpa --create-home kanpa \
    && mkdir -p /var/lib/kanpa/data \
    && chown -R kanpa:kanpa /var/lib/kanpa
COPY --from=build /usr/local/bin/kanpa /usr/local/bin/kanpa
USER kanpa
WORKDIR /var/lib/kanpa
ENV KANPA_ENV=production \
    KANPA__SERVER__BIND=0.0.0.0:8080
VOLUME ["/var/lib/kanpa/data"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["kanpa", "healthcheck"]
ENTRYPOINT ["kanpa"]
CMD ["serve"]
