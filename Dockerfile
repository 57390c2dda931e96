# gatehouse's container image. Not built in gatehouse's own CI (no Docker engine there); the
# tests check this file's instructions instead.
#
#   docker build -t registry.example.com/gatehouse:0.1.0 .
#
# glibc, dynamically linked, onto distroless/cc: the Debian 12 builder and runtime share one
# glibc (2.36). A static musl build would need no libc in the image, but musl's allocator is
# slow under the many small allocations of concurrent requests; distroless/cc costs ~20 MB.
# Pin both images by digest (image@sha256:...) for reproducible builds.

# The crate's rust-version (Cargo.toml); tests/deploy.rs keeps them equal.
ARG RUST_VERSION=1.91

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
# --locked: exactly the tested dependency versions. The cache mounts keep the registry and
# target directory between builds (BuildKit).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin gatehouse \
    && cp target/release/gatehouse /gatehouse

# No shell, no package manager; nonroot is uid/gid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /gatehouse /gatehouse
# Numeric, so the kubelet can verify runAsNonRoot without reading /etc/passwd.
USER 65532:65532
# Webhooks (HTTPS), and the plain-HTTP ops listener for probes (ops.listen, off unless set).
EXPOSE 8443 9090
ENTRYPOINT ["/gatehouse", "serve"]
