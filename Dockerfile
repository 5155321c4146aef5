# syntax=docker/dockerfile:1
# nodelens image: build with the project's own setup, ship only the binary.
#
#   docker build -t nodelens .
#
# Builder: Debian bookworm with Rust; `cargo xtask setup` installs nightly + rust-src,
# LLVM and bpf-linker exactly as on a developer machine.
FROM rust:1.95-bookworm AS builder
WORKDIR /src
COPY . .
RUN cargo xtask setup \
 && cargo build --release --package nodelens \
 && cp target/release/nodelens /nodelens

# Runtime: distroless with glibc (the binary is dynamically linked to libc for now).
FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="nodelens" \
      org.opencontainers.image.description="eBPF node agent for Kubernetes: run-queue, disk and memory latency per node and per pod" \
      org.opencontainers.image.licenses="MIT OR Apache-2.0"
COPY --from=builder /nodelens /usr/bin/nodelens
# Loading eBPF needs CAP_BPF and CAP_PERFMON, granted by the DaemonSet's securityContext.
USER 0
EXPOSE 9560
ENTRYPOINT ["/usr/bin/nodelens"]
