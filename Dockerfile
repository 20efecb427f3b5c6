# fwd2loki as a container image: one static binary and a CA bundle in an
# otherwise empty image.
#
#   docker build -t fwd2loki:0.1.0 .
#
# The first stage needs the rust image from a registry. Without one, build the
# binary on the host and use Dockerfile.local (same image, see its header).

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# crt-static links glibc into the binary, so the final image needs no libc.
# Naming the target keeps build scripts and proc macros dynamic, as they must
# be; it is the builder's own, so this file builds amd64 and arm64 images alike.
RUN target="$(rustc -vV | sed -n 's/^host: //p')" \
 && RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release --locked --target "$target" \
 && cp "target/$target/release/fwd2loki" /fwd2loki

FROM scratch
# fwd2loki will not start without a CA store (its HTTP client loads the system
# roots up front), and https Loki URLs need it anyway.
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /fwd2loki /fwd2loki
# The runtime lines below are repeated in Dockerfile.local; keep them equal
# (tests/it/nomad.rs checks).
# nobody: fwd2loki needs no privilege, its ports are above 1024.
USER 65534:65534
# Forward protocol, and the HTTP server of /health, /ready and /metrics.
EXPOSE 24224 24231
# scratch has no shell or curl: the binary checks itself.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["/fwd2loki", "health", "--url", "http://127.0.0.1:24231/health"]
ENTRYPOINT ["/fwd2loki"]
