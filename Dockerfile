# syntax=docker/dockerfile:1
# nodelens image: the builder runs the project's own setup (nightly + rust-src, LLVM,
# bpf-linker) and builds a static binary; the runtime image holds nothing else.
#
#   docker build -t nodelens .
#   docker buildx build --platform linux/amd64,linux/arm64 -t <registry>/nodelens:<tag> --push .
#
# The builder runs on the build machine's own platform, which must be amd64, and
# cross-compiles for the target one (cargo xtask static), exactly as the kernel matrix
# builds the arm64 binary it boots under qemu; no emulated build.
FROM --platform=$BUILDPLATFORM rust:1.95-bookworm AS builder
ARG TARGETARCH
WORKDIR /src
COPY . .
RUN cargo xtask static --arch "${TARGETARCH:-amd64}" --out /nodelens

# A static binary needs no libc, shell or CA bundle: nothing but the binary ships.
FROM scratch
LABEL org.opencontainers.image.title="nodelens" \
      org.opencontainers.image.description="eBPF node agent for Kubernetes: run-queue, disk and memory latency per node and per pod" \
      org.opencontainers.image.source="https://github.com/nodelens/nodelens" \
      org.opencontainers.image.licenses="MIT OR Apache-2.0" \
      org.opencontainers.image.version="0.1.0"
COPY --from=builder /nodelens /nodelens
EXPOSE 9560
# Runs as root with only CAP_BPF and CAP_PERFMON (see manifests/daemonset.yaml).
ENTRYPOINT ["/nodelens"]
